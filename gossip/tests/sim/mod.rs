//! Deterministic in-memory network for `Membership`: n members, message loss and
//! delay, partitions, crash and restart, driven round by round (one round = one
//! `Config::interval`) from a seed. Shared by the tests and the `convergence`
//! example (included with `#[path]`), so not every helper is used by both.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_gossip::{Config, Event, LocalMember, Membership, Message, Role, Status};

/// The seed to run with: `GOSSIP_SEED` if set, else `default`; printed so that a
/// failing run can be pinned.
pub fn seed_from_env(default: u64) -> u64 {
    let seed = std::env::var("GOSSIP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("simulation seed {seed} (rerun with GOSSIP_SEED={seed})");
    seed
}

/// Network and cluster shape.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Initial members.
    pub n: usize,
    /// How many of the first members serve as seeds.
    pub seeds: usize,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Messages are delayed by 0 to `max_delay` rounds.
    pub max_delay: u64,
    /// Gossip settings of every member.
    pub gossip: Config,
    /// Whether to bincode-encode every message to count bytes (slow).
    pub measure_bytes: bool,
}

impl SimConfig {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            seeds: 3.min(n),
            loss: 0.0,
            max_delay: 0,
            gossip: Config::default(),
            measure_bytes: false,
        }
    }
}

pub struct SimNode {
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
    /// `None` while crashed.
    pub gossip: Option<Membership>,
    /// Set once the member called `leave` and stopped.
    pub departed: bool,
}

struct Envelope {
    from: usize,
    to: usize,
    message: Message,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub largest_message: u64,
    /// Down events about a member that was in fact running and reachable.
    pub false_downs: u64,
    /// `Event::Refused` reports; honest members never cause one.
    pub refusals: u64,
}

pub struct Sim {
    pub seed: u64,
    pub round: u64,
    pub nodes: Vec<SimNode>,
    pub stats: Stats,
    cfg: SimConfig,
    by_addr: HashMap<String, usize>,
    seed_addrs: Vec<String>,
    net: StdRng,
    queue: BTreeMap<u64, Vec<Envelope>>,
    /// Partition group per node; messages between groups are dropped.
    group: Vec<u32>,
    /// Every event each node reported, by node index.
    pub events: Vec<Vec<Event>>,
    keep_events: bool,
}

impl Sim {
    pub fn new(cfg: SimConfig, seed: u64) -> Self {
        let mut sim = Sim {
            seed,
            round: 0,
            nodes: Vec::new(),
            stats: Stats::default(),
            seed_addrs: (0..cfg.seeds).map(addr).collect(),
            cfg: cfg.clone(),
            by_addr: HashMap::new(),
            net: StdRng::seed_from_u64(seed),
            queue: BTreeMap::new(),
            group: Vec::new(),
            events: Vec::new(),
            keep_events: true,
        };
        for _ in 0..cfg.n {
            sim.add_node();
        }
        sim
    }

    /// Turns bincode size accounting on or off.
    pub fn measure_bytes(&mut self, on: bool) {
        self.cfg.measure_bytes = on;
    }

    /// Stops recording events (large runs); false downs are still counted.
    pub fn discard_events(&mut self) {
        self.keep_events = false;
    }

    pub fn now(&self) -> Duration {
        self.cfg.gossip.interval * u32::try_from(self.round).expect("round fits u32")
    }

    fn start(&mut self, i: usize) {
        let node = &self.nodes[i];
        let local = LocalMember {
            id: node.id.as_str().into(),
            address: node.addr.clone(),
            role: Role::Storage,
            weight: 1,
            zone: "default".into(),
            incarnation: node.incarnation,
        };
        let rng = StdRng::seed_from_u64(
            self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.incarnation,
        );
        let m = Membership::new(
            self.cfg.gossip.clone(),
            local,
            self.seed_addrs.clone(),
            rng,
            self.now(),
        )
        .expect("valid member");
        self.nodes[i].gossip = Some(m);
    }

    /// Adds and starts a member; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            id: format!("node-{i}"),
            addr: addr(i),
            incarnation: 1,
            gossip: None,
            departed: false,
        });
        self.by_addr.insert(addr(i), i);
        self.group.push(0);
        self.events.push(Vec::new());
        self.start(i);
        i
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].gossip = None;
    }

    pub fn restart(&mut self, i: usize) {
        self.nodes[i].incarnation += 1;
        self.start(i);
    }

    /// Splits members into groups (`groups[i]` for member i); 0 everywhere heals.
    pub fn partition(&mut self, groups: Vec<u32>) {
        assert_eq!(groups.len(), self.nodes.len());
        self.group = groups;
    }

    pub fn heal(&mut self) {
        self.group = vec![0; self.nodes.len()];
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].gossip.is_some() && !self.nodes[i].departed
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    pub fn member(&self, i: usize) -> &Membership {
        self.nodes[i].gossip.as_ref().expect("member is running")
    }

    pub fn member_mut(&mut self, i: usize) -> &mut Membership {
        self.nodes[i].gossip.as_mut().expect("member is running")
    }

    fn send(&mut self, from: usize, to: &str, message: Message, now_batch: &mut Vec<Envelope>) {
        let Some(&to) = self.by_addr.get(to) else {
            return;
        };
        self.stats.messages += 1;
        if self.cfg.measure_bytes {
            let size = bincode::serialized_size(&message).expect("serializable");
            assert!(
                size as usize <= self.cfg.gossip.max_message_bytes,
                "message of {size} bytes over the cap (seed {})",
                self.seed
            );
            assert_eq!(
                size as usize,
                message.encoded_len(),
                "size estimate is exact"
            );
            self.stats.bytes += size;
            self.stats.largest_message = self.stats.largest_message.max(size);
        }
        if self.cfg.loss > 0.0 && self.net.gen_bool(self.cfg.loss) {
            return;
        }
        let delay = if self.cfg.max_delay == 0 {
            0
        } else {
            self.net.gen_range(0..=self.cfg.max_delay)
        };
        let envelope = Envelope { from, to, message };
        if delay == 0 {
            now_batch.push(envelope);
        } else {
            self.queue
                .entry(self.round + delay)
                .or_default()
                .push(envelope);
        }
    }

    /// One round: every running member ticks, then messages due this round
    /// (and the replies they cause without delay) are delivered.
    pub fn step(&mut self) {
        self.round += 1;
        let now = self.now();
        let mut batch = self.queue.remove(&self.round).unwrap_or_default();
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                continue;
            }
            let out = self.member_mut(i).tick(now);
            for o in out {
                self.send(i, &o.to, o.message, &mut batch);
            }
        }
        // Syn, Ack, Ack2: three hops at most; more would be a bug.
        for _hop in 0..4 {
            if batch.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for Envelope { from, to, message } in std::mem::take(&mut batch) {
                if self.group[from] != self.group[to] || self.nodes[to].gossip.is_none() {
                    continue;
                }
                let from_addr = self.nodes[from].addr.clone();
                let seed = self.seed;
                let replies = self.nodes[to]
                    .gossip
                    .as_mut()
                    .expect("checked above")
                    .receive(&from_addr, message, now)
                    .unwrap_or_else(|e| panic!("valid message refused: {e} (seed {seed})"));
                for r in replies {
                    self.send(to, &r.to, r.message, &mut next);
                }
            }
            batch = next;
        }
        assert!(
            batch.is_empty(),
            "exchange longer than three hops (seed {})",
            self.seed
        );
        self.collect_events();
    }

    fn collect_events(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(g) = self.nodes[i].gossip.as_mut() else {
                continue;
            };
            let events = g.drain_events();
            for e in &events {
                if matches!(e, Event::Refused { .. }) {
                    self.stats.refusals += 1;
                }
                if let Event::Down { id } = e {
                    let j = index_of(id.as_str());
                    if self.is_running(j) && self.group[i] == self.group[j] {
                        self.stats.false_downs += 1;
                    }
                }
            }
            if self.keep_events {
                self.events[i].extend(events);
            }
        }
    }

    /// Runs until `done` holds (checked after each round) or `max` rounds pass;
    /// returns the rounds taken.
    pub fn run_until(&mut self, max: u64, mut done: impl FnMut(&Sim) -> bool) -> Option<u64> {
        for taken in 1..=max {
            self.step();
            if done(self) {
                return Some(taken);
            }
        }
        None
    }

    pub fn run(&mut self, rounds: u64) {
        for _ in 0..rounds {
            self.step();
        }
    }

    /// Every running member sees exactly the running members as up, with their
    /// current incarnations, and nobody else as up.
    pub fn converged(&self) -> bool {
        let truth: BTreeSet<(String, u64)> = self
            .running()
            .into_iter()
            .map(|i| (self.nodes[i].id.clone(), self.nodes[i].incarnation))
            .collect();
        self.running().into_iter().all(|i| {
            let seen: BTreeSet<(String, u64)> = self
                .member(i)
                .members()
                .into_iter()
                .filter(|m| m.status.is_up())
                .map(|m| (m.id.to_string(), m.incarnation))
                .collect();
            seen == truth
        })
    }

    /// Every running member other than `j` has heard of `j`.
    pub fn all_know(&self, j: usize) -> bool {
        let id = &self.nodes[j].id;
        self.running()
            .into_iter()
            .all(|i| self.member(i).member(id).is_some())
    }

    /// Every running member sees `j` with `status`.
    pub fn all_see(&self, j: usize, status: Status) -> bool {
        let id = &self.nodes[j].id;
        self.running()
            .into_iter()
            .filter(|&i| i != j)
            .all(|i| self.member(i).status(id) == Some(status))
    }

    /// No running member has `j` in its list any more.
    pub fn all_forgot(&self, j: usize) -> bool {
        let id = &self.nodes[j].id;
        self.running()
            .into_iter()
            .filter(|&i| i != j)
            .all(|i| self.member(i).member(id).is_none())
    }
}

pub fn addr(i: usize) -> String {
    format!("10.0.{}.{}:7001", i / 250, i % 250 + 1)
}

pub fn index_of(id: &str) -> usize {
    id.strip_prefix("node-")
        .and_then(|n| n.parse().ok())
        .expect("simulated ids are node-<index>")
}
