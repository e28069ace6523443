//! How a key's concurrent versions are resolved: kept as siblings (the
//! default, causal), or down to one winner (last writer wins).
//!
//! Last-writer-wins is a register: a state holds at most one sibling, the
//! greatest by `(write_time, dot, content)` of every sibling either side
//! holds, and the clocks are joined. Taking the greatest of a union is
//! commutative, associative and idempotent whatever the histories, so
//! replicas that meet in any order (hints, read repair, anti-entropy) end on
//! the same winner. Causal coverage is deliberately not consulted: pruning
//! concurrent siblings away while the clock remembers them would make `sync`
//! drop both sides of a later merge. A coordinator that writes under this
//! policy gives the new version a `write_time` above every version it holds
//! ([`SiblingSet::update_newest`]), so a write supersedes what its replica
//! has even when clocks are skewed.

use serde::{Deserialize, Serialize};

use crate::siblings::{Sibling, SiblingSet};
use crate::{Content, Dot, Error};

/// A bucket's conflict policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Keep every concurrent version (Dynamo's siblings); [`SiblingSet::sync`].
    #[default]
    Siblings,
    /// Keep only the newest; [`SiblingSet::sync_newest`].
    Lww,
}

impl Policy {
    /// The merge of two replicas' states under this policy.
    pub fn sync(self, a: &SiblingSet, b: &SiblingSet) -> SiblingSet {
        match self {
            Policy::Siblings => a.sync(b),
            Policy::Lww => a.sync_newest(b),
        }
    }

    /// A coordinator's write under this policy: [`SiblingSet::update`] with
    /// the client's context, or [`SiblingSet::update_newest`].
    pub fn update(
        self,
        set: &mut SiblingSet,
        context: &crate::Context,
        actor: &str,
        content: Content,
        now: u64,
    ) -> Result<Dot, Error> {
        match self {
            Policy::Siblings => set.update(context, actor, content, now),
            Policy::Lww => set.update_newest(actor, content, now),
        }
    }
}

/// The order last-writer-wins picks by: newest write time, then the dot,
/// then the content (equal only for the very same version).
fn rank(s: &Sibling) -> (u64, &Dot, &Content) {
    (s.write_time, &s.dot, &s.content)
}

impl SiblingSet {
    /// The sibling last-writer-wins keeps: the greatest by write time, then
    /// dot, then content.
    pub fn newest(&self) -> Option<&Sibling> {
        self.values().iter().max_by(|a, b| rank(a).cmp(&rank(b)))
    }

    /// This state with every value emptied (content types too): the same
    /// clock, dots and write times, so merging skeletons decides which
    /// versions survive and whether any is live exactly as merging the
    /// states would, at the cost of the causal information alone. Listing
    /// keys moves skeletons, not values.
    pub fn skeleton(&self) -> SiblingSet {
        let mut out = self.clone();
        out.empty_values();
        out
    }

    /// The last-writer-wins merge: the clocks joined and only the newest
    /// sibling of either side kept.
    pub fn sync_newest(&self, other: &SiblingSet) -> SiblingSet {
        let winner = match (self.newest(), other.newest()) {
            (Some(a), Some(b)) => Some(if rank(a) >= rank(b) { a } else { b }),
            (a, b) => a.or(b),
        }
        .cloned();
        self.joined_with(other, winner)
    }

    /// A last-writer-wins write: supersedes every sibling this state holds,
    /// with a write time of at least `now` and above each of theirs, so it
    /// wins on this replica even against a version from a clock ahead of
    /// ours.
    pub fn update_newest(&mut self, actor: &str, content: Content, now: u64) -> Result<Dot, Error> {
        let after = self.newest().map_or(0, |s| s.write_time.saturating_add(1));
        let context = self.context();
        self.update(&context, actor, content, now.max(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;
    use proptest::prelude::*;

    fn val(s: &str) -> Content {
        Content::value(s.as_bytes().to_vec(), "text/plain")
    }

    fn one(actor: &str, v: &str, t: u64) -> SiblingSet {
        let mut s = SiblingSet::new();
        s.update(&Context::empty(), actor, val(v), t).unwrap();
        s
    }

    #[test]
    fn newest_write_time_wins_then_the_dot() {
        let a = one("a", "old", 10);
        let b = one("b", "new", 20);
        assert_eq!(a.sync_newest(&b).values()[0].value(), Some(&b"new"[..]));
        assert_eq!(b.sync_newest(&a), a.sync_newest(&b));
        // Equal times: the greater dot ("b:1" > "a:1") wins on both sides.
        let c = one("b", "tie-b", 10);
        let ac = a.sync_newest(&c);
        assert_eq!(ac.len(), 1);
        assert_eq!(ac.values()[0].value(), Some(&b"tie-b"[..]));
        assert_eq!(c.sync_newest(&a), ac);
    }

    #[test]
    fn a_write_beats_a_version_from_a_clock_ahead() {
        let mut s = one("b", "from-the-future", 5_000);
        let dot = s.update_newest("a", val("now"), 1_000).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.values()[0].dot, dot);
        assert_eq!(s.values()[0].write_time, 5_001);
        // And it stays the winner against the replica that still has the
        // old one.
        let other = one("b", "from-the-future", 5_000);
        assert_eq!(s.sync_newest(&other).values()[0].value(), Some(&b"now"[..]));
    }

    #[test]
    fn skeletons_merge_to_the_skeleton_of_the_merge() {
        let a = one("a", "x", 10);
        let mut b = a.clone();
        b.update(&a.context(), "b", Content::Tombstone, 20).unwrap();
        let c = one("c", "y", 5);
        for (x, y) in [(&a, &b), (&b, &c), (&a, &c)] {
            let merged = x.sync(y);
            let skel = x.skeleton().sync(&y.skeleton());
            assert_eq!(skel, merged.skeleton());
            assert_eq!(skel.is_tombstone_only(), merged.is_tombstone_only());
        }
        assert_eq!(a.skeleton().values()[0].value(), Some(&b""[..]));
    }

    #[test]
    fn siblings_written_before_a_switch_to_lww_resolve_to_one() {
        let a = one("a", "x", 10);
        let b = one("b", "y", 30);
        let both = a.sync(&b);
        assert_eq!(both.len(), 2);
        assert_eq!(Policy::Lww.sync(&both, &SiblingSet::new()).len(), 1);
    }

    /// A random history of last-writer-wins writes and merges over three
    /// replicas, with write times that may go backwards (skewed clocks).
    fn arb_states() -> impl Strategy<Value = [SiblingSet; 3]> {
        let op = prop_oneof![
            (0..3usize, 0..50u64, any::<bool>()).prop_map(|(at, t, tomb)| (0, at, t, tomb)),
            (0..3usize, 0..3usize).prop_map(|(from, to)| (1, from, to as u64, false)),
        ];
        proptest::collection::vec(op, 0..24).prop_map(|ops| {
            let mut r: [SiblingSet; 3] = Default::default();
            for (i, (kind, a, b, tomb)) in ops.into_iter().enumerate() {
                if kind == 0 {
                    let content = if tomb {
                        Content::Tombstone
                    } else {
                        val(&i.to_string())
                    };
                    r[a].update_newest(["a", "b", "c"][a], content, b).unwrap();
                } else {
                    let from = r[a].clone();
                    r[b as usize] = r[b as usize].sync_newest(&from);
                }
            }
            r
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn sync_newest_is_a_semilattice(s in arb_states()) {
            let [a, b, c] = s;
            prop_assert_eq!(a.sync_newest(&b), b.sync_newest(&a));
            prop_assert_eq!(a.sync_newest(&b).sync_newest(&c), a.sync_newest(&b.sync_newest(&c)));
            prop_assert_eq!(a.sync_newest(&a), a.clone());
        }

        #[test]
        fn the_winner_is_the_greatest_of_every_version_held(s in arb_states()) {
            let [a, b, c] = s;
            let all = a.sync_newest(&b).sync_newest(&c);
            prop_assert!(all.len() <= 1);
            let best = [&a, &b, &c]
                .iter()
                .filter_map(|s| s.newest())
                .max_by(|x, y| rank(x).cmp(&rank(y)))
                .cloned();
            prop_assert_eq!(all.newest().cloned(), best);
        }

        /// A bucket switched back to siblings merges last-writer-wins
        /// states with `sync`: that must never drop both sides.
        #[test]
        fn causal_sync_of_lww_states_keeps_a_version(s in arb_states()) {
            let [a, b, _] = s;
            if !a.is_empty() && !b.is_empty() {
                prop_assert!(!a.sync(&b).is_empty());
            }
        }
    }
}
