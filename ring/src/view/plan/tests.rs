//! The plan's tests: shares, movement and estimates on rings built in
//! memory, checked against the handover's own range lists and against keys
//! placed on the ring.

use super::*;
use crate::key_position;
use crate::view::{gained_ranges, lost_ranges};

fn members(k: usize) -> Vec<Member> {
    (1..=k)
        .map(|i| Member::new(format!("node-{i}"), 1))
        .collect()
}

fn sum(shares: &BTreeMap<String, f64>) -> f64 {
    shares.values().sum()
}

fn config() -> RingConfig {
    RingConfig::default()
}

#[test]
fn shares_before_and_after_sum_to_one() {
    for k in [1, 2, 3, 5, 8] {
        let before = members(k);
        let p = Plan::join(&before, &Member::new("node-new", 2), 3, config()).unwrap();
        assert!((sum(&p.before) - 1.0).abs() < 1e-9, "k={k}");
        assert!((sum(&p.after) - 1.0).abs() < 1e-9, "k={k}");
        assert_eq!(p.after.len(), k + 1);
        if k > 1 {
            let p = Plan::leave(&before, "node-1", 3, config()).unwrap();
            assert!((sum(&p.before) - 1.0).abs() < 1e-9, "k={k}");
            assert!((sum(&p.after) - 1.0).abs() < 1e-9, "k={k}");
            assert!(!p.after.contains_key("node-1"));
        }
    }
}

#[test]
fn a_join_moves_about_one_in_k_plus_one_of_the_copies_all_to_the_joiner() {
    for k in [3usize, 4, 6, 9] {
        let before = members(k);
        let joiner = Member::new("node-new", 1);
        let p = Plan::join(&before, &joiner, 3, config()).unwrap();
        let ideal = 1.0 / (k as f64 + 1.0);
        let moved = p.copies_moved();
        assert!(
            (moved - ideal).abs() < 0.25 * ideal,
            "k={k}: moved {moved}, ideal {ideal}"
        );
        // Every new copy goes to the joiner, and it ends with exactly
        // what it received: its whole share.
        assert_eq!(p.received.keys().collect::<Vec<_>>(), ["node-new"]);
        assert!((p.after["node-new"] - moved).abs() < 1e-9);
        for c in &p.changes {
            assert_eq!(c.gained, ["node-new"]);
            assert_eq!(c.lost.len(), 1, "{c:?}");
        }
        // The ranges the joiner's handover streams: the same list.
        let gained = gained_ranges(&before, &joiner, 3, config()).unwrap();
        assert_eq!(gained, p.changes);
    }
}

#[test]
fn a_decommission_moves_exactly_the_leaving_nodes_ranges() {
    let before = members(5);
    let p = Plan::leave(&before, "node-2", 3, config()).unwrap();
    let old = Ring::new(before.clone(), config()).unwrap();
    // The ranges it replicated, merged where adjacent...
    let mut held = 0.0;
    for range in old.ranges() {
        if old.replicas_of(&range, 3).contains(&"node-2") {
            held += range.fraction();
        }
    }
    // ...are the ranges that change, each losing node-2 alone to one
    // new replica.
    assert!(
        (p.key_space - held).abs() < 1e-9,
        "{} vs {held}",
        p.key_space
    );
    for c in &p.changes {
        assert_eq!(c.lost, ["node-2"]);
        assert_eq!(c.gained.len(), 1);
        assert!(c.old_replicas.contains(&"node-2".to_string()));
    }
    // What is copied is the leaver's whole share, and nobody else loses.
    assert!((p.copies_moved() - p.before["node-2"]).abs() < 1e-9);
    for (id, after) in &p.after {
        assert!(*after >= p.before[id] - 1e-9, "{id} lost share");
    }
    let lost = lost_ranges(&before, "node-2", 3, config()).unwrap();
    assert_eq!(lost, p.changes);
}

#[test]
fn below_n_a_decommission_copies_nothing_and_a_join_copies_everything() {
    let three = members(3);
    let p = Plan::leave(&three, "node-3", 3, config()).unwrap();
    assert!((p.key_space - 1.0).abs() < 1e-9);
    assert_eq!(p.copies_moved(), 0.0);
    assert_eq!((p.copies_before, p.copies_after), (3, 2));
    let p = Plan::join(&members(2), &Member::new("node-3", 1), 3, config()).unwrap();
    assert!(
        (p.copies_moved() - 0.5).abs() < 1e-9,
        "{}",
        p.copies_moved()
    );
}

#[test]
fn a_zone_of_its_own_makes_the_joiner_a_replica_of_every_key() {
    // Two zones of three, N = 3: a third zone's first member holds one
    // copy of every key.
    let before: Vec<Member> = (1..=6)
        .map(|i| Member::new(format!("node-{i}"), 1).in_zone(["a", "b"][i % 2]))
        .collect();
    let p = Plan::join(&before, &Member::new("node-7", 1).in_zone("c"), 3, config()).unwrap();
    assert!(
        (p.after["node-7"] - 1.0 / 3.0).abs() < 1e-9,
        "{:?}",
        p.after
    );
    assert!((p.key_space - 1.0).abs() < 1e-9);
}

#[test]
fn edge_cases_table() {
    // (name, plan, expected key space, expected number of changes or None)
    let abc = members(3);
    let cases: Vec<(&str, Result<Plan, RingError>, Option<f64>)> = vec![
        // The same member at the same weight: nothing moves.
        (
            "rejoin unchanged",
            Plan::join(&abc, &Member::new("node-1", 1), 3, config()),
            Some(0.0),
        ),
        // A stranger leaving: nothing moves.
        (
            "stranger leaves",
            Plan::leave(&abc, "node-9", 3, config()),
            Some(0.0),
        ),
        // One replica per key: a join moves only what the joiner owns.
        (
            "n = 1",
            Plan::join(&abc, &Member::new("node-4", 1), 1, config()),
            None,
        ),
        // No ring after, no ring with a bad weight.
        (
            "last leaves",
            Plan::leave(&members(1), "node-1", 3, config()),
            None,
        ),
        (
            "weight 0",
            Plan::join(&abc, &Member::new("node-4", 0), 3, config()),
            None,
        ),
    ];
    for (name, plan, key_space) in cases {
        match (name, plan) {
            ("last leaves", p) => assert_eq!(p.unwrap_err(), RingError::Empty, "{name}"),
            ("weight 0", p) => assert!(matches!(p, Err(RingError::BadWeight { .. })), "{name}"),
            ("n = 1", p) => {
                let p = p.unwrap();
                assert!((p.key_space - p.after["node-4"]).abs() < 1e-9, "{name}");
                assert_eq!(p.copies_before, 1);
            }
            (_, p) => {
                let p = p.unwrap();
                assert_eq!(Some(p.key_space), key_space, "{name}");
                assert!(p.changes.is_empty(), "{name}");
                assert_eq!(p.keys_moved(1_000), 0.0);
                assert_eq!(p.keys_moved_spread(1_000), 0.0);
            }
        }
    }
}

#[test]
fn keys_on_the_ring_move_as_estimated() {
    // Keys placed on the ring land in the changing ranges as often as the
    // estimate says, within the binomial spread, and each such key is
    // exactly one whose replica set differs between the two rings.
    let before = members(3);
    let joiner = Member::new("node-4", 1);
    let p = Plan::join(&before, &joiner, 3, config()).unwrap();
    let old = Ring::new(before.clone(), config()).unwrap();
    let new = Ring::new(
        before.iter().cloned().chain(std::iter::once(joiner)),
        config(),
    )
    .unwrap();
    let keys = 20_000u64;
    let mut moved = 0u64;
    for i in 0..keys {
        let key = format!("key-{i}");
        let position = key_position(key.as_bytes());
        let mut a = old.preference_list_at(position, 3);
        let mut b = new.preference_list_at(position, 3);
        a.sort_unstable();
        b.sort_unstable();
        let change = p.change_at(position);
        assert_eq!(change.is_some(), a != b, "{key} at {position:#x}");
        if let Some(c) = change {
            let b: Vec<String> = b.into_iter().map(str::to_string).collect();
            let mut planned = c.new_replicas.clone();
            planned.sort_unstable();
            assert_eq!(planned, b, "{key}");
            moved += 1;
        }
    }
    let (estimate, spread) = (p.keys_moved(keys), p.keys_moved_spread(keys));
    assert!(spread > 10.0, "{spread}");
    assert!(
        (moved as f64 - estimate).abs() < 5.0 * spread,
        "{moved} keys moved, estimated {estimate:.0} +- {spread:.0}"
    );
    // One gaining member per range: the copies sent are the keys moved.
    assert!((p.copies_sent(keys) - estimate).abs() < 1e-6 * estimate);
}
