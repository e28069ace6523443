//! The oracle: a model-based test that no acknowledged write is ever lost,
//! and that pruning only ever adds siblings.
//!
//! Several simulated clients and replicas run random interleavings from a
//! seeded generator. A client reads a context from any replica, then writes
//! through any replica (which coordinates with its own actor id), possibly
//! much later and possibly more than once with the same stale context.
//! Replicas sync one-way at random moments, round-trip their state through the
//! binary encoding (as the node's storage does), skew their clocks and bump
//! their actor's epoch (`node-1#7`, as a node does after losing data), so one
//! key sees many actors. After a full sync every replica must hold the same
//! state, and for every acknowledged write:
//!
//! - it is still a sibling, or
//! - some acknowledged write's context had seen it (it was superseded);
//! - and "seen by a later write" also implies "gone": the context supersedes
//!   exactly what it covers, no less and no more.
//!
//! # Pruning
//!
//! Pruning makes a state forget history, so "superseded implies gone" no
//! longer holds, and the claim to prove is sharper than "nothing is lost": a
//! pruned replica holds every version the same replica would hold without
//! pruning, plus only false siblings (versions the unpruned replica has seen
//! superseded). The oracle runs the same history twice in lockstep, once in
//! an exact world that never prunes and once in a world that prunes to a
//! small bound (2..=4 entries) after every update and every merge, as the
//! node does, and at random moments. After every step, on the replica the
//! step touched:
//!
//! - the pruned replica's siblings include the exact replica's (no version
//!   dropped),
//! - each extra sibling is a write the exact replica has seen and dropped
//!   (a false sibling, never an unknown value),
//! - the pruned replica has seen no write the exact one has not (pruning
//!   only forgets),
//!
//! Writes are matched across the worlds by the id their value carries, since
//! the counter floor makes the pruned world mint different counters. Every
//! dot must name one write (no coordinator reuses a dot), and every prune
//! leaves the clock within the bound unless live siblings need more entries.
//! At the end the
//! pruned world converges under pairwise anti-entropy that keeps pruning
//! after every merge, and its siblings are the exact world's plus superseded
//! versions only.
//!
//! A failure prints the seed; rerun one with `SHOAL_ORACLE_SEED=<seed>`.

use std::collections::{BTreeSet, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_vclock::{Content, Context, Dot, SiblingSet};

/// Where the pruned world prunes.
#[derive(Clone, Copy, Debug)]
struct Pruning {
    /// Right after every update, on the coordinator.
    on_update: bool,
    /// Right after every merge, on the receiving replica.
    on_merge: bool,
    /// Deliberately broken pruning for the oracle's own test: the counter
    /// floor is dropped after every prune, so coordinators may mint a dot
    /// again.
    forget_floor: bool,
}

/// What a run may do.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Run a second, pruning world in lockstep with the exact one.
    prune: Option<Pruning>,
    /// Every replica coordinates as the same actor id: dots are no longer
    /// unique. Used only to show the oracle catches the resulting lost
    /// updates.
    shared_actor: bool,
}

/// The history of a run, recorded only when a failing seed is replayed
/// (formatting every step of every run would dominate the test's time).
struct Log {
    lines: Option<Vec<String>>,
}

impl Log {
    fn off() -> Self {
        Log { lines: None }
    }

    fn on() -> Self {
        Log {
            lines: Some(Vec::new()),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            lines.push(line());
        }
    }
}

struct Client {
    /// The context token as the client holds it: opaque bytes.
    token: Vec<u8>,
    seen: BTreeSet<u64>,
}

/// One step of a history, drawn before it is applied so both worlds take
/// exactly the same steps.
#[derive(Clone, Debug)]
enum Op {
    Read {
        client: usize,
        replica: usize,
    },
    Write {
        client: usize,
        replica: usize,
        blind: bool,
        tombstone: bool,
        /// The acknowledgement carries the new state back (Riak's
        /// return_body), which the client uses next time.
        return_body: bool,
        now: u64,
    },
    Sync {
        from: usize,
        to: usize,
    },
    Reload {
        replica: usize,
    },
    Prune {
        replica: usize,
        max: usize,
    },
    /// The replica's actor id gets a new epoch.
    Epoch {
        replica: usize,
    },
}

/// One copy of the system: replicas, clients and what was acknowledged.
struct World {
    replicas: Vec<SiblingSet>,
    clients: Vec<Client>,
    /// Write id → the dot its coordinator minted.
    dots: Vec<Dot>,
    /// Write id → what the client had seen when it wrote.
    seen: Vec<BTreeSet<u64>>,
    /// Dot → write id, for every write (tombstones carry no id of their own).
    ids: HashMap<Dot, u64>,
    /// Dots minted more than once (reported at the end, after the loss
    /// checks, so the oracle's own test sees the loss they cause).
    reused: Vec<Dot>,
    /// `Some(bound)` in the pruning world.
    prune: Option<(Pruning, usize)>,
}

impl World {
    fn new(n_replicas: usize, n_clients: usize, prune: Option<(Pruning, usize)>) -> Self {
        World {
            replicas: vec![SiblingSet::new(); n_replicas],
            clients: (0..n_clients)
                .map(|_| Client {
                    token: Context::empty().encode(),
                    seen: BTreeSet::new(),
                })
                .collect(),
            dots: Vec::new(),
            seen: Vec::new(),
            ids: HashMap::new(),
            reused: Vec::new(),
            prune,
        }
    }

    /// The write ids of `s`'s siblings, checking each sibling is the write
    /// it claims to be (value and dot as acknowledged).
    fn visible(&self, s: &SiblingSet) -> Result<BTreeSet<u64>, String> {
        s.values()
            .iter()
            .map(|sib| {
                let id = match sib.value() {
                    Some(v) => v.try_into().map(u64::from_le_bytes).map_err(|_| {
                        format!("sibling {} holds a value no client wrote", sib.dot)
                    })?,
                    None => *self
                        .ids
                        .get(&sib.dot)
                        .ok_or_else(|| format!("tombstone {} was never written", sib.dot))?,
                };
                match self.dots.get(id as usize) {
                    Some(d) if *d == sib.dot => Ok(id),
                    _ => Err(format!(
                        "sibling {} is not the dot write #{id} got",
                        sib.dot
                    )),
                }
            })
            .collect()
    }

    /// The write ids `s`'s clock has seen.
    fn covered(&self, s: &SiblingSet) -> BTreeSet<u64> {
        (0..self.dots.len() as u64)
            .filter(|&id| {
                let d = &self.dots[id as usize];
                s.clock().get(&d.actor) >= d.counter
            })
            .collect()
    }

    fn prune_at(&mut self, r: usize, max: usize) -> Result<(), String> {
        self.replicas[r].prune(max);
        let s = &self.replicas[r];
        let backing: BTreeSet<&str> = s.values().iter().map(|v| v.dot.actor.as_str()).collect();
        if s.clock().len() > max.max(backing.len()) {
            return Err(format!(
                "r{r}'s pruned clock has {} entries, above the bound {max} and the {} actors \
                 its siblings need",
                s.clock().len(),
                backing.len()
            ));
        }
        if self.prune.is_some_and(|(p, _)| p.forget_floor) {
            // The broken variant: re-encode with a floor of 0.
            let bytes = self.replicas[r].encode();
            let mut rest = &bytes[1..];
            while rest[0] & 0x80 != 0 {
                rest = &rest[1..];
            }
            let mut forged = vec![bytes[0], 0];
            forged.extend_from_slice(&rest[1..]);
            self.replicas[r] = SiblingSet::decode(&forged).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Applies `op`; returns the replica whose state changed, if any.
    fn apply(
        &mut self,
        op: &Op,
        actors: &[String],
        log: &mut Log,
    ) -> Result<Option<usize>, String> {
        let tag = if self.prune.is_some() {
            "pruned"
        } else {
            "exact"
        };
        match *op {
            Op::Read { client, replica } => {
                self.clients[client].token = self.replicas[replica].context().encode();
                self.clients[client].seen = self.visible(&self.replicas[replica])?;
                log.note(|| {
                    format!(
                        "[{tag}] client {client} reads r{replica}: {:?}",
                        self.clients[client].seen
                    )
                });
                Ok(None)
            }
            Op::Write {
                client,
                replica: r,
                blind,
                tombstone,
                return_body,
                now,
            } => {
                let ctx = if blind {
                    Context::empty()
                } else {
                    Context::decode(&self.clients[client].token).map_err(|e| e.to_string())?
                };
                let seen = if blind {
                    BTreeSet::new()
                } else {
                    self.clients[client].seen.clone()
                };
                for &id in &seen {
                    if !ctx.covers(&self.dots[id as usize]) {
                        return Err(format!(
                            "[{tag}] a context does not cover write #{id} its reader saw"
                        ));
                    }
                }
                let id = self.dots.len() as u64;
                let content = if tombstone {
                    Content::Tombstone
                } else {
                    Content::value(id.to_le_bytes().to_vec(), "application/octet-stream")
                };
                let dot = self.replicas[r]
                    .update(&ctx, &actors[r], content, now)
                    .map_err(|e| e.to_string())?;
                log.note(|| format!(
                    "[{tag}] client {client} writes #{id} via r{r} as {dot} (seen {seen:?}, tomb {tombstone})"
                ));
                if self.ids.insert(dot.clone(), id).is_some() {
                    self.reused.push(dot.clone());
                }
                self.dots.push(dot);
                self.seen.push(seen);
                if let Some((p, max)) = self.prune {
                    if p.on_update {
                        self.prune_at(r, max)?;
                    }
                }
                if return_body {
                    self.clients[client].token = self.replicas[r].context().encode();
                    self.clients[client].seen = self.visible(&self.replicas[r])?;
                }
                Ok(Some(r))
            }
            Op::Sync { from, to } => {
                let incoming = self.replicas[from].clone();
                self.replicas[to].merge(&incoming);
                if let Some((p, max)) = self.prune {
                    if p.on_merge {
                        self.prune_at(to, max)?;
                    }
                }
                log.note(|| format!("[{tag}] sync r{from} -> r{to}"));
                Ok(Some(to))
            }
            Op::Reload { replica } => {
                self.replicas[replica] = SiblingSet::decode(&self.replicas[replica].encode())
                    .map_err(|e| e.to_string())?;
                Ok(Some(replica))
            }
            Op::Prune { replica, max } => {
                if self.prune.is_some() {
                    let before = self.replicas[replica].clock().len();
                    self.prune_at(replica, max)?;
                    let after = self.replicas[replica].clock().len();
                    log.note(|| {
                        format!("[{tag}] prune r{replica} to {max}: {before} -> {after} entries")
                    });
                    return Ok(Some(replica));
                }
                Ok(None)
            }
            Op::Epoch { .. } => Ok(None),
        }
    }

    /// Every replica merges every other (and, when pruning, prunes after
    /// each merge) until all hold the same state.
    fn full_sync(&mut self, log: &mut Log) -> Result<SiblingSet, String> {
        const ROUNDS: usize = 8;
        let n = self.replicas.len();
        for round in 0..ROUNDS {
            for from in 0..n {
                for to in 0..n {
                    if from != to {
                        let incoming = self.replicas[from].clone();
                        self.replicas[to].merge(&incoming);
                        if let Some((p, max)) = self.prune {
                            if p.on_merge {
                                self.prune_at(to, max)?;
                            }
                        }
                    }
                }
            }
            let first = &self.replicas[0];
            if self
                .replicas
                .iter()
                .all(|r| r == first && r.digest() == first.digest())
            {
                log.note(|| format!("full sync converged after {} round(s)", round + 1));
                return Ok(first.clone());
            }
        }
        Err(format!(
            "replicas did not converge within {ROUNDS} rounds of full sync"
        ))
    }

    /// The writes some acknowledged write's reader had seen.
    fn superseded(&self) -> BTreeSet<u64> {
        self.seen.iter().flatten().copied().collect()
    }

    /// The no-loss checks on the converged state `all`.
    fn check_final(&self, all: &SiblingSet, exact: bool) -> Result<BTreeSet<u64>, String> {
        let present = self.visible(all)?;
        let superseded = self.superseded();
        for (id, dot) in self.dots.iter().enumerate() {
            let id = id as u64;
            if !present.contains(&id) && !superseded.contains(&id) {
                return Err(format!(
                    "lost update: write #{id} ({dot}) was acknowledged, never seen by a later \
                     write, and is gone after a full sync"
                ));
            }
        }
        if exact {
            // Siblings are exactly the writes no other write saw: no
            // explosion, and a context supersedes all it covers.
            let expect: BTreeSet<u64> = (0..self.dots.len() as u64)
                .filter(|i| !superseded.contains(i))
                .collect();
            if present != expect {
                return Err(format!("siblings {present:?}, expected {expect:?}"));
            }
        }
        if let Some(dot) = self.reused.first() {
            return Err(format!("dot {dot} was minted for two different writes"));
        }
        Ok(present)
    }
}

/// The differential check on replica `r` after a step: the pruned world
/// holds the exact world's versions plus false siblings, and has seen no
/// more than it.
fn check_pruned_against_exact(exact: &World, pruned: &World, r: usize) -> Result<(), String> {
    let (e, p) = (&exact.replicas[r], &pruned.replicas[r]);
    let (ids_e, ids_p) = (exact.visible(e)?, pruned.visible(p)?);
    if let Some(id) = ids_e.difference(&ids_p).next() {
        return Err(format!(
            "pruning dropped a version: r{r} holds write #{id} without pruning, not with it \
             (exact {ids_e:?}, pruned {ids_p:?})"
        ));
    }
    let (cov_e, cov_p) = (exact.covered(e), pruned.covered(p));
    for id in ids_p.difference(&ids_e) {
        if !cov_e.contains(id) {
            return Err(format!(
                "r{r} holds write #{id} only when pruning, yet without pruning it was never \
                 seen there: not a false sibling"
            ));
        }
    }
    if let Some(id) = cov_p.difference(&cov_e).next() {
        return Err(format!("pruning made r{r} claim to have seen write #{id}"));
    }
    Ok(())
}

/// What a passing run exercised, so the tests can show the histories reach
/// the cases the claims are about.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Distinct actors in the converged exact clock.
    actors: usize,
    /// Entries of the converged pruned clock.
    pruned_clock: usize,
    /// Siblings of the converged pruned state that the exact one lacks.
    false_siblings: usize,
}

fn run(seed: u64, cfg: Config, log: &mut Log) -> Result<Stats, String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n_replicas = rng.gen_range(2..=5usize);
    let n_clients = rng.gen_range(1..=4usize);
    let steps = rng.gen_range(10..200usize);
    let bound = rng.gen_range(2..=4usize);
    // Half the runs rotate coordinators round robin, as a load balancer
    // spreading one key's writes does.
    let round_robin = rng.gen_bool(0.5);
    let mut epochs = vec![1u32; n_replicas];
    let actor = |i: usize, epoch: u32| {
        if cfg.shared_actor {
            "node-0".to_owned()
        } else {
            format!("node-{i}#{epoch}")
        }
    };
    let mut actors: Vec<String> = (0..n_replicas).map(|i| actor(i, 1)).collect();
    let skew: Vec<i64> = (0..n_replicas)
        .map(|_| rng.gen_range(-5_000..5_000))
        .collect();
    let mut exact = World::new(n_replicas, n_clients, None);
    let mut pruned = cfg
        .prune
        .map(|p| World::new(n_replicas, n_clients, Some((p, bound))));
    let mut tick: u64 = 1_700_000_000_000;
    let mut writes = 0usize;

    for _ in 0..steps {
        tick += rng.gen_range(0..50);
        let op = match rng.gen_range(0..100) {
            0..=29 => Op::Read {
                client: rng.gen_range(0..n_clients),
                replica: rng.gen_range(0..n_replicas),
            },
            30..=64 => {
                let client = rng.gen_range(0..n_clients);
                let mut replica = rng.gen_range(0..n_replicas);
                if round_robin {
                    replica = writes % n_replicas;
                }
                writes += 1;
                Op::Write {
                    client,
                    replica,
                    blind: rng.gen_bool(0.1),
                    tombstone: !cfg.shared_actor && rng.gen_bool(0.15),
                    return_body: rng.gen_bool(0.3),
                    now: tick.saturating_add_signed(skew[replica]),
                }
            }
            65..=84 => Op::Sync {
                from: rng.gen_range(0..n_replicas),
                to: rng.gen_range(0..n_replicas),
            },
            85..=89 => Op::Reload {
                replica: rng.gen_range(0..n_replicas),
            },
            90..=94 => Op::Prune {
                replica: rng.gen_range(0..n_replicas),
                max: rng.gen_range(0..=bound),
            },
            _ => Op::Epoch {
                replica: rng.gen_range(0..n_replicas),
            },
        };
        if let Op::Epoch { replica } = op {
            epochs[replica] += 1;
            actors[replica] = actor(replica, epochs[replica]);
            log.note(|| format!("r{replica} is now {}", actors[replica]));
        }
        let touched = exact.apply(&op, &actors, log)?;
        if let Some(p) = pruned.as_mut() {
            let touched_p = p.apply(&op, &actors, log)?;
            for r in touched.into_iter().chain(touched_p) {
                check_pruned_against_exact(&exact, p, r)?;
            }
        }
    }

    let all = exact.full_sync(log)?;
    let present_e = exact.check_final(&all, true)?;
    let mut stats = Stats {
        actors: all.clock().len(),
        ..Stats::default()
    };
    if let Some(p) = pruned.as_mut() {
        let all_p = p.full_sync(log)?;
        let present_p = p.check_final(&all_p, false)?;
        if let Some(id) = present_e.difference(&present_p).next() {
            return Err(format!(
                "pruning dropped a version: write #{id} survives a full sync without pruning, not with it"
            ));
        }
        let superseded = exact.superseded();
        if let Some(id) = present_p
            .difference(&present_e)
            .find(|id| !superseded.contains(id))
        {
            return Err(format!(
                "with pruning, write #{id} is a sibling that no write superseded without pruning"
            ));
        }
        // Readers of a pruned world may see false siblings, but what they
        // supersede that way was superseded anyway.
        if p.superseded() != superseded {
            return Err(format!(
                "pruning changed which writes were superseded: {:?} vs {superseded:?}",
                p.superseded()
            ));
        }
        log.note(|| {
            format!(
                "final: exact {present_e:?}, pruned {present_p:?} (clock {} vs {} entries)",
                all.clock().len(),
                all_p.clock().len()
            )
        });
        stats.pruned_clock = all_p.clock().len();
        stats.false_siblings = present_p.len() - present_e.len();
    }
    Ok(stats)
}

fn base_seed() -> Option<u64> {
    std::env::var("SHOAL_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// Runs `cases` seeds (or the one in `SHOAL_ORACLE_SEED`), panicking with
/// the replayed history of the first failure.
fn check_many(cases: u64, salt: u64, cfg: Config) -> Vec<Stats> {
    let seeds: Vec<u64> = match base_seed() {
        Some(s) => vec![s],
        None => (0..cases)
            .map(|i| salt.wrapping_mul(1_000_003).wrapping_add(i))
            .collect(),
    };
    let mut all = Vec::with_capacity(seeds.len());
    for seed in seeds {
        match run(seed, cfg, &mut Log::off()) {
            Ok(stats) => all.push(stats),
            Err(e) => {
                let mut log = Log::on();
                let replayed = run(seed, cfg, &mut log);
                let log = log.lines.unwrap_or_default();
                panic!(
                    "oracle failed with seed {seed} ({cfg:?}): {e}\n\
                     rerun with SHOAL_ORACLE_SEED={seed}\nreplay: {replayed:?}\nhistory:\n  {}",
                    log.join("\n  ")
                );
            }
        }
    }
    all
}

/// A pruning test proves little unless its histories had many actors, were
/// really cut down to the bound and did bring superseded versions back.
fn assert_pruning_was_exercised(stats: &[Stats], bounded: bool) {
    if base_seed().is_some() {
        return;
    }
    let many = stats.iter().filter(|s| s.actors >= 10).count();
    let cut = stats
        .iter()
        .filter(|s| s.actors >= 10 && s.pruned_clock <= 6)
        .count();
    let resurrected = stats.iter().filter(|s| s.false_siblings > 0).count();
    let n = stats.len();
    eprintln!("{n} runs: {many} with 10+ actors, {cut} of them pruned to 6 or fewer, {resurrected} with false siblings");
    assert!(
        many * 4 >= n,
        "only {many} of {n} runs had 10 or more actors"
    );
    assert!(
        !bounded || cut * 2 >= many,
        "only {cut} of {many} runs with many actors were pruned down"
    );
    assert!(
        resurrected * 50 >= n,
        "only {resurrected} of {n} runs produced a false sibling"
    );
}

#[test]
fn no_acknowledged_write_is_lost() {
    check_many(
        10_000,
        1,
        Config {
            prune: None,
            shared_actor: false,
        },
    );
}

#[test]
fn pruning_after_every_update_and_merge_only_adds_false_siblings() {
    let stats = check_many(
        2_500,
        2,
        Config {
            prune: Some(Pruning {
                on_update: true,
                on_merge: true,
                forget_floor: false,
            }),
            shared_actor: false,
        },
    );
    assert_pruning_was_exercised(&stats, true);
}

#[test]
fn occasional_pruning_only_adds_false_siblings() {
    let stats = check_many(
        1_000,
        3,
        Config {
            prune: Some(Pruning {
                on_update: false,
                on_merge: false,
                forget_floor: false,
            }),
            shared_actor: false,
        },
    );
    assert_pruning_was_exercised(&stats, false);
}

/// The oracle has teeth: replicas sharing one actor id mint the same dots for
/// different writes (what a stateless gateway minting counters would do), and
/// the oracle must catch the lost updates that follow.
#[test]
fn the_oracle_catches_reused_dots() {
    let cfg = Config {
        prune: None,
        shared_actor: true,
    };
    let lost = (0..500u64)
        .filter(|&seed| {
            run(seed, cfg, &mut Log::off()).is_err_and(|e| e.starts_with("lost update"))
        })
        .count();
    assert!(lost > 0, "no run with shared actor ids lost an update");
}

/// And the pruning checks have teeth: a prune that forgets its counter floor
/// lets a coordinator whose own entry was pruned mint a dot again.
#[test]
fn the_oracle_catches_a_prune_without_floor() {
    let cfg = Config {
        prune: Some(Pruning {
            on_update: true,
            on_merge: true,
            forget_floor: true,
        }),
        shared_actor: false,
    };
    let caught = (0..500u64)
        .filter(|&seed| run(seed, cfg, &mut Log::off()).is_err())
        .count();
    assert!(caught > 0, "no run with a floorless prune was caught");
}
