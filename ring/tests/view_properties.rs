//! Property tests of `shoal_ring::view` (issue 17): write targets against both
//! rings' preference lists and the quorum argument, shared ranges against a
//! brute-force check of every range, and join/leave symmetry; each also with
//! members in up to three zones (issue 25), so all of it holds of zone-aware
//! placement.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shoal_ring::view::{gained_ranges, lost_ranges, RingView, ViewMember};
use shoal_ring::{grid_floor, Member, RingConfig};

/// Few tokens keep the brute-force checks fast while still exercising ties on
/// the grid and wrap-around.
const CONFIG: RingConfig = RingConfig {
    vnodes_per_weight: 8,
};

/// Up to 8 members, each serving, joining, leaving, or both.
fn members() -> impl Strategy<Value = Vec<ViewMember>> {
    proptest::collection::btree_map("[a-f]{1,3}", (1u32..4, 0u8..4), 0..9).prop_map(|m| {
        m.into_iter()
            .map(|(id, (w, state))| {
                let mut member = ViewMember::new(id, w);
                member.joining = state & 1 != 0;
                member.leaving = state & 2 != 0;
                member
            })
            .collect()
    })
}

/// [`members`], each also in one of up to three zones. (A strategy of its
/// own, so that the saved regression seed still replays the same case of
/// `members`.)
fn zoned_members() -> impl Strategy<Value = Vec<ViewMember>> {
    (members(), proptest::collection::vec(0u8..3, 8)).prop_map(|(members, zones)| {
        members
            .into_iter()
            .zip(zones)
            .map(|(m, z)| m.in_zone(format!("z{z}")))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rings_hold_the_right_members(members in members()) {
        let view = RingView::new(&members, CONFIG).unwrap();
        let ids = |ring: Option<&shoal_ring::Ring>| -> BTreeSet<String> {
            ring.map(|r| r.members().iter().map(|m| m.id.clone()).collect()).unwrap_or_default()
        };
        let not_joining: BTreeSet<String> =
            members.iter().filter(|m| !m.joining).map(|m| m.id.clone()).collect();
        let not_leaving: BTreeSet<String> =
            members.iter().filter(|m| !m.leaving).map(|m| m.id.clone()).collect();
        prop_assert_eq!(ids(view.current()), not_joining.clone());
        if view.in_flux() {
            prop_assert_eq!(ids(view.future()), not_leaving);
        } else {
            // The same ring, or nobody would be left on the future one.
            prop_assert!(not_leaving == not_joining || not_leaving.is_empty());
        }
    }

    #[test]
    fn writes_reach_both_rings_and_quorums_intersect(
        members in members(), n in 0usize..5, positions in proptest::collection::vec(any::<u64>(), 1..30)
    ) {
        check_writes(&members, n, positions)?;
    }

    #[test]
    fn writes_reach_both_rings_across_zones(
        members in zoned_members(), n in 0usize..5, positions in proptest::collection::vec(any::<u64>(), 1..30)
    ) {
        check_writes(&members, n, positions)?;
    }

    #[test]
    fn shared_ranges_are_exactly_the_co_replicated_ranges(
        members in members(), n in 1usize..5, pick in any::<prop::sample::Index>()
    ) {
        check_shared(&members, n, pick)?;
    }

    #[test]
    fn shared_ranges_across_zones_are_exactly_the_co_replicated_ranges(
        members in zoned_members(), n in 1usize..5, pick in any::<prop::sample::Index>()
    ) {
        check_shared(&members, n, pick)?;
    }

    #[test]
    fn join_and_leave_move_the_same_ranges(
        members in proptest::collection::btree_map("[a-f]{1,3}", (1u32..4, 0u8..3), 1..7),
        weight in 1u32..4, zone in 0u8..4, n in 1usize..4
    ) {
        // Zones z0..z2 among the members; the newcomer may open a fourth.
        let current: Vec<Member> = members
            .into_iter()
            .filter(|(id, _)| id != "new")
            .map(|(id, (w, z))| Member::new(id, w).in_zone(format!("z{z}")))
            .collect();
        let me = Member::new("new", weight).in_zone(format!("z{zone}"));
        let gained = gained_ranges(&current, &me, n, CONFIG).unwrap();
        for c in &gained {
            prop_assert!(c.new_replicas.iter().any(|r| r == "new"));
            prop_assert!(!c.old_replicas.iter().any(|r| r == "new"));
            prop_assert_eq!(&c.gained, &vec!["new".to_string()]);
        }
        let mut after = current.clone();
        after.push(me);
        after.sort();
        let lost = lost_ranges(&after, "new", n, CONFIG).unwrap();
        let ranges = |changes: &[shoal_ring::RangeChange]| -> Vec<shoal_ring::TokenRange> {
            changes.iter().map(|c| c.range).collect()
        };
        prop_assert_eq!(ranges(&gained), ranges(&lost));
        for c in &lost {
            prop_assert_eq!(&c.lost, &vec!["new".to_string()]);
        }
    }
}

fn check_writes(
    members: &[ViewMember],
    n: usize,
    positions: Vec<u64>,
) -> Result<(), TestCaseError> {
    let view = RingView::new(members, CONFIG).unwrap();
    for p in positions {
        let (current, pending) = view.write_replicas_at(p, n);
        let expected_current = view
            .current()
            .map(|r| r.preference_list_at(p, n))
            .unwrap_or_default();
        prop_assert_eq!(&current, &expected_current);
        let future = match view.future() {
            Some(f) => f.preference_list_at(p, n),
            None => {
                prop_assert!(pending.is_empty());
                current.clone()
            }
        };
        // Pending: the future replicas that are not current ones, in order.
        let expected_pending: Vec<&str> = future
            .iter()
            .copied()
            .filter(|m| !current.contains(m))
            .collect();
        prop_assert_eq!(&pending, &expected_pending);
        prop_assert!(pending.len() <= n);
        // W + pending answers among the union include W from each set:
        // at most `pending` of the union lie outside the current set, and
        // when both sets are full, as many lie outside the future one.
        if view.future().is_some() && current.len() == n && future.len() == n {
            let outside_future = current.iter().filter(|m| !future.contains(m)).count();
            prop_assert_eq!(outside_future, pending.len());
        }
    }
    Ok(())
}

fn check_shared(
    members: &[ViewMember],
    n: usize,
    pick: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let view = RingView::new(members, CONFIG).unwrap();
    let Some(ring) = view.current() else {
        prop_assert!(view.shared_ranges("a", n).is_empty());
        return Ok(());
    };
    let me = ring.members()[pick.index(ring.members().len())].id.clone();
    let shared = view.shared_ranges(&me, n);
    prop_assert!(!shared.contains_key(&me));
    for runs in shared.values() {
        let mut total = 0.0;
        for (i, run) in runs.iter().enumerate() {
            prop_assert_eq!(grid_floor(run.start), run.start);
            prop_assert_eq!(grid_floor(run.end), run.end);
            total += run.fraction();
            // Maximal: no run ends where another begins.
            for (j, other) in runs.iter().enumerate() {
                prop_assert!(i == j || run.end != other.start, "{:?}", runs);
            }
        }
        prop_assert!(total <= 1.0 + 1e-9);
    }
    // Runs are unions of ring ranges, so testing each range's first
    // position tests every position.
    for range in ring.ranges() {
        let replicas = ring.replicas_of(&range, n);
        for peer in ring
            .members()
            .iter()
            .map(|m| m.id.as_str())
            .filter(|p| *p != me)
        {
            let both = replicas.contains(&me.as_str()) && replicas.contains(&peer);
            let runs = shared.get(peer).map(Vec::as_slice).unwrap_or_default();
            let covering = runs.iter().filter(|r| r.contains(range.start)).count();
            prop_assert_eq!(covering, usize::from(both), "{} at {:?}", peer, range);
        }
    }
    Ok(())
}
