//! Which token ranges change replicas between two rings.
//!
//! Nodes use this on a membership change to know what to stream where: a joining
//! member must receive the ranges it gains, and a leaving one must hand over the
//! ranges it loses, before the new ring serves reads.

use std::collections::BTreeSet;

use crate::{ranges_between, Ring, TokenRange};

/// One range whose replica set differs between the old and the new ring.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeChange {
    /// The range; ranges of one diff are disjoint.
    pub range: TokenRange,
    /// Replicas under the old ring, in preference order.
    pub old_replicas: Vec<String>,
    /// Replicas under the new ring, in preference order.
    pub new_replicas: Vec<String>,
    /// Members that replicate the range under the new ring but not the old
    /// (they must receive its data), sorted.
    pub gained: Vec<String>,
    /// Members that replicated the range under the old ring but not the new
    /// (they may drop it once the new owners have it), sorted.
    pub lost: Vec<String>,
}

/// The ranges whose set of `n` replicas differs between `old` and `new`,
/// in ring order, adjacent ranges with the same change merged.
///
/// A reordering of the same replicas is not a change: no data has to move.
pub fn diff(old: &Ring, new: &Ring, n: usize) -> Vec<RangeChange> {
    // Replica sets are constant between consecutive token positions of either
    // ring, so the union of both rings' positions cuts the ring into pieces on
    // which both sides are constant.
    let mut positions: Vec<u64> = old
        .tokens
        .iter()
        .chain(new.tokens.iter())
        .map(|t| t.position)
        .collect();
    positions.sort_unstable();
    positions.dedup();

    let mut changes: Vec<RangeChange> = Vec::new();
    for range in ranges_between(&positions) {
        let before = old.replicas_of(&range, n);
        let after = new.replicas_of(&range, n);
        let before_set: BTreeSet<&str> = before.iter().copied().collect();
        let after_set: BTreeSet<&str> = after.iter().copied().collect();
        if before_set == after_set {
            continue;
        }
        let change = RangeChange {
            range,
            old_replicas: before.iter().map(|s| s.to_string()).collect(),
            new_replicas: after.iter().map(|s| s.to_string()).collect(),
            gained: after_set
                .difference(&before_set)
                .map(|s| s.to_string())
                .collect(),
            lost: before_set
                .difference(&after_set)
                .map(|s| s.to_string())
                .collect(),
        };
        match changes.last_mut() {
            Some(last)
                if last.range.end == change.range.start
                    && last.old_replicas == change.old_replicas
                    && last.new_replicas == change.new_replicas =>
            {
                last.range.end = change.range.end;
            }
            _ => changes.push(change),
        }
    }
    // The first and last pieces may be one range across the wrap point.
    if changes.len() > 1 {
        let first = &changes[0];
        let last = &changes[changes.len() - 1];
        if last.range.end == first.range.start
            && last.old_replicas == first.old_replicas
            && last.new_replicas == first.new_replicas
        {
            let last = changes.pop().expect("len > 1");
            changes[0].range.start = last.range.start;
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Member, RingConfig};

    fn ring(ids: &[&str]) -> Ring {
        Ring::new(
            ids.iter().map(|id| Member::new(*id, 1)),
            RingConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn same_ring_has_no_changes() {
        let r = ring(&["a", "b", "c"]);
        assert!(diff(&r, &r, 3).is_empty());
    }

    #[test]
    fn join_only_gains_for_the_new_member() {
        let old = ring(&["a", "b", "c", "d"]);
        let new = ring(&["a", "b", "c", "d", "e"]);
        let changes = diff(&old, &new, 3);
        assert!(!changes.is_empty());
        for c in &changes {
            assert_eq!(c.gained, vec!["e".to_string()]);
            assert_eq!(c.lost.len(), 1);
        }
    }

    #[test]
    fn leave_only_loses_the_leaving_member() {
        let old = ring(&["a", "b", "c", "d", "e"]);
        let new = ring(&["a", "b", "c", "e"]);
        for c in diff(&old, &new, 3) {
            assert_eq!(c.lost, vec!["d".to_string()]);
            assert_eq!(c.gained.len(), 1);
        }
    }

    #[test]
    fn growing_past_n_members_with_few_members() {
        // With 2 members and n = 3 everyone has everything; the third member
        // gains everything and nobody loses anything.
        let old = ring(&["a", "b"]);
        let new = ring(&["a", "b", "c"]);
        let changes = diff(&old, &new, 3);
        let covered: f64 = changes.iter().map(|c| c.range.fraction()).sum();
        assert!((covered - 1.0).abs() < 1e-9, "covered {covered}");
        for c in &changes {
            assert_eq!(c.gained, vec!["c".to_string()]);
            assert!(c.lost.is_empty());
        }
    }
}
