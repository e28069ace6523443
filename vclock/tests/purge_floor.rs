//! A replica that purges a dead key (tombstone GC) forgets which counters it
//! minted for it. Another copy of the key it did not know of (a stray, or a
//! replica still catching up) keeps the old clock. If the purging replica
//! minted from counter 1 again, that old clock would cover the new write's
//! dot, and the stale copy would drop the write as one it had already seen.
//! `SiblingSet::minting_above` with the highest counter the replica minted
//! for the key (what the node stores as its mint floor) prevents this. The
//! property: after any history, a purge and a blind write at the purging
//! replica, every stale copy that syncs with the new state keeps the write.
//! The same property without the floor must fail, so the test can catch the
//! bug it guards.

use proptest::prelude::*;
use shoal_vclock::{Content, Context, SiblingSet};

const ACTORS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Step {
    /// Replica `at` coordinates a write (or a delete) with the context of
    /// replica `read_from`'s state (a client that read there), or blind.
    Write {
        at: usize,
        read_from: Option<usize>,
        delete: bool,
    },
    /// Replica `to` merges replica `from`'s state.
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, proptest::option::of(0..3usize), any::<bool>()).prop_map(
            |(at, read_from, delete)| Step::Write {
                at,
                read_from,
                delete
            }
        ),
        (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Runs `steps`, then makes the key dead everywhere: a full sync, a delete
/// at replica 0 with everything in its context, a full sync again.
fn dead_everywhere(steps: &[Step]) -> Vec<SiblingSet> {
    let mut replicas = vec![SiblingSet::new(); 3];
    let mut now = 1_000;
    for s in steps {
        now += 1;
        match *s {
            Step::Write {
                at,
                read_from,
                delete,
            } => {
                let context = match read_from {
                    Some(r) => replicas[r].context(),
                    None => Context::empty(),
                };
                let content = if delete {
                    Content::Tombstone
                } else {
                    Content::value(format!("v{now}"), "text/plain")
                };
                replicas[at]
                    .update(&context, ACTORS[at], content, now)
                    .expect("counters stay small");
            }
            Step::Sync { from, to } => {
                let merged = replicas[to].sync(&replicas[from]);
                replicas[to] = merged;
            }
        }
    }
    let all = replicas[0].sync(&replicas[1]).sync(&replicas[2]);
    let mut dead = all.clone();
    dead.update(&all.context(), ACTORS[0], Content::Tombstone, now + 1)
        .expect("counters stay small");
    assert!(dead.is_tombstone_only());
    vec![dead.clone(), dead.clone(), dead]
}

/// Replica 0 purges, then takes a blind write; returns whether every stale
/// copy keeps that write once it syncs with replica 0's new state.
fn write_after_purge_survives(replicas: &[SiblingSet], with_floor: bool) -> bool {
    let dead = &replicas[0];
    let floor = dead.clock().get(ACTORS[0]).max(dead.counter_floor());
    let mut fresh = if with_floor {
        SiblingSet::minting_above(floor)
    } else {
        SiblingSet::new()
    };
    fresh
        .update(
            &Context::empty(),
            ACTORS[0],
            Content::value("after the purge", "text/plain"),
            10_000,
        )
        .expect("counters stay small");
    replicas[1..].iter().all(|stale| {
        let merged = stale.sync(&fresh);
        merged
            .values()
            .iter()
            .any(|s| s.value() == Some(&b"after the purge"[..]))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_write_after_a_purge_is_never_swallowed_by_an_old_clock(
        steps in proptest::collection::vec(step(), 0..40)
    ) {
        let replicas = dead_everywhere(&steps);
        prop_assert!(write_after_purge_survives(&replicas, true));
    }
}

/// Without the floor a history as short as "write, delete" at replica 0
/// loses the write: the stale clock says `a:2`, the fresh state mints `a:1`,
/// which that clock covers although no stale sibling holds it.
#[test]
fn without_the_floor_the_write_is_swallowed() {
    let write = Step::Write {
        at: 0,
        read_from: None,
        delete: false,
    };
    let replicas = dead_everywhere(&[write]);
    assert!(!write_after_purge_survives(&replicas, false));
    assert!(write_after_purge_survives(&replicas, true));
}
