//! The oracle: a model-based test that no acknowledged write is ever lost.
//!
//! Several simulated clients and replicas run random interleavings from a
//! seeded generator. A client reads a context from any replica, then writes
//! through any replica (which coordinates with its own actor id), possibly
//! much later and possibly more than once with the same stale context.
//! Replicas sync one-way at random moments, round-trip their state through the
//! binary encoding (as the node's storage does), skew their clocks and, in
//! some runs, prune. After a full sync every replica must hold the same state,
//! and for every acknowledged write:
//!
//! - it is still a sibling, or
//! - some acknowledged write's context had seen it (it was superseded);
//! - and without pruning, "seen by a later write" also implies "gone": the
//!   context supersedes exactly what it covers, no less and no more.
//!
//! A failure prints the seed; rerun one with `SHOAL_ORACLE_SEED=<seed>`.

use std::collections::{BTreeSet, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_vclock::{Content, Context, Dot, SiblingSet};

/// What a run may do.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Replicas prune their clocks to a small bound now and then.
    prune: bool,
    /// Every replica coordinates as the same actor id: dots are no longer
    /// unique. Used only to show the oracle catches the resulting lost
    /// updates.
    shared_actor: bool,
}

/// Bookkeeping for one acknowledged write.
struct Ack {
    dot: Dot,
    tombstone: bool,
    /// Writes whose context this write carried had seen (visible siblings at
    /// the read, or in the write's acknowledgement).
    seen: BTreeSet<u64>,
}

struct Client {
    /// The context token as the client holds it: opaque bytes.
    token: Vec<u8>,
    seen: BTreeSet<u64>,
}

/// Identifies the siblings of `s` as write ids: values carry their id,
/// tombstones are recognised by dot.
fn visible(s: &SiblingSet, tomb_ids: &HashMap<Dot, u64>) -> Result<BTreeSet<u64>, String> {
    s.values()
        .iter()
        .map(|sib| match sib.value() {
            Some(v) => v
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| format!("sibling {} holds a value no client wrote", sib.dot)),
            None => tomb_ids
                .get(&sib.dot)
                .copied()
                .ok_or_else(|| format!("tombstone {} was never written", sib.dot)),
        })
        .collect()
}

fn run(seed: u64, cfg: Config, log: &mut Vec<String>) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n_replicas = rng.gen_range(2..=4usize);
    let n_clients = rng.gen_range(1..=4usize);
    let steps = rng.gen_range(10..100usize);
    let actors: Vec<String> = (0..n_replicas)
        .map(|i| {
            if cfg.shared_actor {
                "node-0".to_owned()
            } else {
                format!("node-{i}")
            }
        })
        .collect();
    let skew: Vec<i64> = (0..n_replicas)
        .map(|_| rng.gen_range(-5_000..5_000))
        .collect();
    let mut replicas = vec![SiblingSet::new(); n_replicas];
    let mut clients: Vec<Client> = (0..n_clients)
        .map(|_| Client {
            token: Context::empty().encode(),
            seen: BTreeSet::new(),
        })
        .collect();
    let mut acks: Vec<Ack> = Vec::new();
    let mut tomb_ids: HashMap<Dot, u64> = HashMap::new();
    let mut tick: u64 = 1_700_000_000_000;

    for _ in 0..steps {
        tick += rng.gen_range(0..50);
        match rng.gen_range(0..100) {
            // Read: the client takes the replica's context and siblings.
            0..=29 => {
                let (c, r) = (rng.gen_range(0..n_clients), rng.gen_range(0..n_replicas));
                clients[c].token = replicas[r].context().encode();
                clients[c].seen = visible(&replicas[r], &tomb_ids)?;
                log.push(format!("client {c} reads r{r}: {:?}", clients[c].seen));
            }
            // Write through a replica, which coordinates it.
            30..=64 => {
                let (c, r) = (rng.gen_range(0..n_clients), rng.gen_range(0..n_replicas));
                let blind = rng.gen_bool(0.1);
                let ctx = if blind {
                    Context::empty()
                } else {
                    Context::decode(&clients[c].token).map_err(|e| e.to_string())?
                };
                let id = acks.len() as u64;
                let tombstone = !cfg.shared_actor && rng.gen_bool(0.15);
                let content = if tombstone {
                    Content::Tombstone
                } else {
                    Content::value(id.to_le_bytes().to_vec(), "application/octet-stream")
                };
                let now = tick.saturating_add_signed(skew[r]);
                let dot = replicas[r]
                    .update(&ctx, &actors[r], content, now)
                    .map_err(|e| e.to_string())?;
                if tombstone {
                    tomb_ids.insert(dot.clone(), id);
                }
                let seen = if blind {
                    BTreeSet::new()
                } else {
                    clients[c].seen.clone()
                };
                log.push(format!(
                    "client {c} writes #{id} via r{r} as {dot} (seen {seen:?}, tomb {tombstone})"
                ));
                acks.push(Ack {
                    dot,
                    tombstone,
                    seen,
                });
                // Sometimes the acknowledgement carries the new state back
                // (Riak's return_body), which the client uses next time.
                if rng.gen_bool(0.3) {
                    clients[c].token = replicas[r].context().encode();
                    clients[c].seen = visible(&replicas[r], &tomb_ids)?;
                }
            }
            // One-way sync (replication, read repair, handoff, anti-entropy).
            65..=89 => {
                let (from, to) = (rng.gen_range(0..n_replicas), rng.gen_range(0..n_replicas));
                let incoming = replicas[from].clone();
                replicas[to].merge(&incoming);
                log.push(format!("sync r{from} -> r{to}"));
            }
            // The node stores and reloads the encoded state.
            90..=94 => {
                let r = rng.gen_range(0..n_replicas);
                replicas[r] =
                    SiblingSet::decode(&replicas[r].encode()).map_err(|e| e.to_string())?;
            }
            _ => {
                if cfg.prune {
                    let (r, max) = (rng.gen_range(0..n_replicas), rng.gen_range(0..3));
                    let n = replicas[r].prune(max);
                    log.push(format!("prune r{r} to {max}: dropped {n}"));
                }
            }
        }
    }

    // Full sync: everyone merges everyone, then everyone takes the result.
    let mut all = SiblingSet::new();
    for r in &replicas {
        all.merge(r);
    }
    for r in &mut replicas {
        r.merge(&all);
    }
    for (i, r) in replicas.iter().enumerate() {
        if r != &all || r.digest() != all.digest() {
            return Err(format!("replica {i} did not converge after a full sync"));
        }
    }

    let present: BTreeSet<u64> = visible(&all, &tomb_ids)?;
    let superseded: BTreeSet<u64> = acks.iter().flat_map(|a| a.seen.iter().copied()).collect();
    for (id, ack) in acks.iter().enumerate() {
        let id = id as u64;
        let sib = all.values().iter().find(|s| s.dot == ack.dot);
        let here = present.contains(&id) && sib.is_some_and(|s| s.is_tombstone() == ack.tombstone);
        if !here && !superseded.contains(&id) {
            return Err(format!(
                "lost update: write #{id} ({}) was acknowledged, never seen by a later write, \
                 and is gone after a full sync",
                ack.dot
            ));
        }
        if here && superseded.contains(&id) && !cfg.prune {
            return Err(format!(
                "write #{id} ({}) was superseded by a write that had seen it, \
                 yet is still a sibling",
                ack.dot
            ));
        }
    }
    // Siblings are exactly the writes no other write saw (no explosion).
    if !cfg.prune {
        let expect: BTreeSet<u64> = (0..acks.len() as u64)
            .filter(|i| !superseded.contains(i))
            .collect();
        if present != expect {
            return Err(format!("siblings {present:?}, expected {expect:?}"));
        }
    }
    Ok(())
}

fn base_seed() -> Option<u64> {
    std::env::var("SHOAL_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
}

fn check_many(cases: u64, salt: u64, cfg: Config) {
    let seeds: Vec<u64> = match base_seed() {
        Some(s) => vec![s],
        None => (0..cases)
            .map(|i| salt.wrapping_mul(1_000_003).wrapping_add(i))
            .collect(),
    };
    for seed in seeds {
        let mut log = Vec::new();
        if let Err(e) = run(seed, cfg, &mut log) {
            panic!(
                "oracle failed with seed {seed} ({cfg:?}): {e}\n\
                 rerun with SHOAL_ORACLE_SEED={seed}\nhistory:\n  {}",
                log.join("\n  ")
            );
        }
    }
}

#[test]
fn no_acknowledged_write_is_lost() {
    check_many(
        10_000,
        1,
        Config {
            prune: false,
            shared_actor: false,
        },
    );
}

#[test]
fn no_acknowledged_write_is_lost_with_pruning() {
    check_many(
        5_000,
        2,
        Config {
            prune: true,
            shared_actor: false,
        },
    );
}

/// The oracle has teeth: replicas sharing one actor id mint the same dots for
/// different writes (what a stateless gateway minting counters would do), and
/// the oracle must catch the lost updates that follow.
#[test]
fn the_oracle_catches_reused_dots() {
    let cfg = Config {
        prune: false,
        shared_actor: true,
    };
    let failures = (0..500u64)
        .filter(|&seed| run(seed, cfg, &mut Vec::new()).is_err())
        .count();
    assert!(failures > 0, "no run with shared actor ids lost an update");
}
