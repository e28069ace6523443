//! Property tests of the ring (issue 2): preference-list shape, order
//! independence, minimal movement on join and leave, and `diff` against a
//! brute-force comparison of preference lists.

use std::collections::BTreeSet;

use proptest::prelude::*;
use shoal_ring::{diff, key_position, Member, Ring, RingConfig};

/// Few tokens keep the brute-force checks fast while still exercising ties on
/// the grid and wrap-around.
const CONFIG: RingConfig = RingConfig {
    vnodes_per_weight: 8,
};

fn members() -> impl Strategy<Value = Vec<Member>> {
    proptest::collection::btree_map("[a-z]{1,6}", 1u32..4, 1..9)
        .prop_map(|m| m.into_iter().map(|(id, w)| Member::new(id, w)).collect())
}

fn ring(members: &[Member]) -> Ring {
    Ring::new(members.iter().cloned(), CONFIG).expect("valid members")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn preference_lists_have_min_n_members_distinct(
        members in members(), n in 0usize..6, keys in proptest::collection::vec(any::<Vec<u8>>(), 1..20)
    ) {
        let r = ring(&members);
        for key in &keys {
            let list = r.preference_list(key, n);
            prop_assert_eq!(list.len(), n.min(members.len()));
            let distinct: BTreeSet<&str> = list.iter().copied().collect();
            prop_assert_eq!(distinct.len(), list.len());
            // The full walk visits every member exactly once, preference list first.
            let walk: Vec<&str> = r.walk(key_position(key)).collect();
            prop_assert_eq!(walk.len(), members.len());
            prop_assert_eq!(&walk[..list.len()], &list[..]);
        }
    }

    #[test]
    fn ring_is_independent_of_member_order(
        members in members(), seed in any::<u64>(), keys in proptest::collection::vec(any::<u64>(), 1..50)
    ) {
        let mut shuffled = members.clone();
        // A deterministic shuffle from the seed.
        let len = shuffled.len();
        for i in 0..len {
            let j = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) % len as u64) as usize;
            shuffled.swap(i, j);
        }
        let a = ring(&members);
        let b = ring(&shuffled);
        prop_assert_eq!(a.ranges(), b.ranges());
        for p in keys {
            prop_assert_eq!(a.preference_list_at(p, 3), b.preference_list_at(p, 3));
        }
    }

    #[test]
    fn join_moves_ranges_only_to_the_joiner(members in members(), n in 1usize..5) {
        let joiner = Member::new("joiner-X", 1);
        let old = ring(&members);
        let mut with = members.clone();
        with.push(joiner.clone());
        let new = ring(&with);
        for change in diff(&old, &new, n) {
            prop_assert_eq!(&change.gained, &vec![joiner.id.clone()]);
            prop_assert!(change.lost.len() <= 1);
        }
        // And the reverse is a leave that moves only the leaver's ranges.
        for change in diff(&new, &old, n) {
            prop_assert_eq!(&change.lost, &vec![joiner.id.clone()]);
        }
    }

    #[test]
    fn diff_agrees_with_brute_force(
        before in members(), after in members(), n in 1usize..4,
        keys in proptest::collection::vec(any::<u64>(), 200)
    ) {
        let old = ring(&before);
        let new = ring(&after);
        let changes = diff(&old, &new, n);
        // Ranges are disjoint.
        let covered: f64 = changes.iter().map(|c| c.range.fraction()).sum();
        prop_assert!(covered <= 1.0 + 1e-9);
        // Random positions plus every token boundary and its predecessor.
        let mut positions = keys;
        for r in old.ranges().iter().chain(new.ranges().iter()) {
            positions.push(r.start);
            positions.push(r.start.wrapping_sub(1));
        }
        for p in positions {
            let o: BTreeSet<&str> = old.preference_list_at(p, n).into_iter().collect();
            let w: BTreeSet<&str> = new.preference_list_at(p, n).into_iter().collect();
            let reported = changes.iter().find(|c| c.range.contains(p));
            match reported {
                None => prop_assert_eq!(o, w, "position {} changed but is not reported", p),
                Some(c) => {
                    prop_assert_ne!(&o, &w, "position {} reported but unchanged", p);
                    let gained: Vec<&str> = w.difference(&o).copied().collect();
                    let lost: Vec<&str> = o.difference(&w).copied().collect();
                    prop_assert_eq!(gained, c.gained.iter().map(String::as_str).collect::<Vec<_>>());
                    prop_assert_eq!(lost, c.lost.iter().map(String::as_str).collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn ownership_sums_to_one(members in members(), n in 1usize..5) {
        let r = ring(&members);
        let own = r.ownership(n);
        let primary: f64 = own.values().map(|o| o.primary).sum();
        let replicated: f64 = own.values().map(|o| o.replicated).sum();
        prop_assert!((primary - 1.0).abs() < 1e-9, "primary {}", primary);
        prop_assert!((replicated - 1.0).abs() < 1e-9, "replicated {}", replicated);
    }
}
