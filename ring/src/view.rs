//! The two rings of a membership in flux, and what follows from them: where a
//! write goes, which ranges two replicas compare, which ranges a join or a
//! leave moves. All of it follows the rings' zone-aware placement
//! ([`Ring::walk`]), so members in several zones change like any others.
//!
//! Nodes (anti-entropy, hinted handoff, handover) and gateways (routing) must
//! agree on all of it, so it is computed once, here, from plain member lists:
//! whoever owns membership (gossip, a test, a tool) translates its members into
//! [`ViewMember`]s and asks. [`plan`] answers the same questions before a
//! change, for an operator deciding whether to make it.
//!
//! `current` is the ring reads use: every member that has not left, leaving
//! ones included (they still hold their data), joining ones excluded (they do
//! not have theirs yet). `future` is the ring once every pending change is
//! done: joining members in, leaving members out. A write goes to the replicas
//! of both and needs W acknowledgements in each, so whichever ring a later read
//! uses, it meets the write; when nothing is in flux the two are the same ring.
//!
//! ```
//! use shoal_ring::view::{RingView, ViewMember};
//! use shoal_ring::RingConfig;
//!
//! let members = [
//!     ViewMember::new("a", 1),
//!     ViewMember::new("b", 1),
//!     ViewMember::new("c", 1).joining(),
//! ];
//! let view = RingView::new(&members, RingConfig::default())?;
//! // Two members and N = 3: both replicate every key, and while c joins each
//! // write also goes to c, which needs one more acknowledgement.
//! let (mut current, pending) = view.write_replicas(b"user:42", 3);
//! current.sort();
//! assert_eq!((current, pending), (vec!["a", "b"], vec!["c"]));
//! # Ok::<(), shoal_ring::RingError>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod plan;

use crate::{diff, key_position, Member, RangeChange, Ring, RingConfig, RingError, TokenRange};

/// High bit of a storage member's gossiped weight: set while the member is
/// joining (receiving the ranges it gains), cleared once it has them. Gossip
/// treats the weight as opaque, so the flag travels with no new record field;
/// ring weights stay far below it ([`crate::MAX_WEIGHT`]).
pub const JOINING_FLAG: u32 = 1 << 31;

/// A gossiped weight split into the ring weight and whether the member is
/// still joining.
pub fn split_weight(gossiped: u32) -> (u32, bool) {
    (gossiped & !JOINING_FLAG, gossiped & JOINING_FLAG != 0)
}

/// Members as a ring sees them (id, ring weight, zone), sorted by id.
pub type MemberList = Vec<Member>;

/// A storage member that has not left, with where it stands in a change.
///
/// Both flags may be set (a joining member asked to leave): it is then on
/// neither ring.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewMember {
    /// Stable, unique id.
    pub id: String,
    /// Ring weight (without [`JOINING_FLAG`]).
    pub weight: u32,
    /// Failure domain; see [`Member::zone`].
    pub zone: String,
    /// Still receiving its ranges: on the future ring only.
    pub joining: bool,
    /// Handing its ranges over: on the current ring only.
    pub leaving: bool,
}

impl ViewMember {
    /// A member on both rings, in [`crate::DEFAULT_ZONE`].
    pub fn new(id: impl Into<String>, weight: u32) -> Self {
        Self {
            id: id.into(),
            weight,
            zone: crate::DEFAULT_ZONE.to_string(),
            joining: false,
            leaving: false,
        }
    }

    /// The same member, in `zone`.
    pub fn in_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }

    /// The member as a ring takes it.
    pub fn ring_member(&self) -> Member {
        Member::new(self.id.clone(), self.weight).in_zone(self.zone.clone())
    }

    /// The same member, joining.
    pub fn joining(mut self) -> Self {
        self.joining = true;
        self
    }

    /// The same member, leaving.
    pub fn leaving(mut self) -> Self {
        self.leaving = true;
        self
    }
}

/// The current and future ring of a member set; see the module docs.
///
/// Cloning is cheap (the rings are shared), so a router can hand one to every
/// request.
#[derive(Clone, Debug, Default)]
pub struct RingView {
    current: Option<Arc<Ring>>,
    /// `None` when it equals `current` (or would be empty).
    future: Option<Arc<Ring>>,
}

impl RingView {
    /// The member lists of both rings, `(current, future)`: a cache key, since
    /// the rings are pure functions of them.
    pub fn member_lists<'a>(
        members: impl IntoIterator<Item = &'a ViewMember>,
    ) -> (MemberList, MemberList) {
        let mut current = Vec::new();
        let mut future = Vec::new();
        for m in members {
            if !m.joining {
                current.push(m.ring_member());
            }
            if !m.leaving {
                future.push(m.ring_member());
            }
        }
        current.sort();
        future.sort();
        (current, future)
    }

    /// Both rings of `members`; fails if either cannot be built (see
    /// [`Ring::new`]). An empty member list gives no ring, not an error: a
    /// cluster that has not met its first storage member routes nowhere.
    pub fn new(members: &[ViewMember], config: RingConfig) -> Result<Self, RingError> {
        match Self::partial(members, config) {
            (view, None) => Ok(view),
            (_, Some(error)) => Err(error),
        }
    }

    /// Like [`RingView::new`], but a ring that cannot be built is left out
    /// and its error returned beside the rest: a running node keeps serving
    /// with the ring it has and reports why the other is missing.
    pub fn partial(members: &[ViewMember], config: RingConfig) -> (Self, Option<RingError>) {
        let (current, future) = Self::member_lists(members);
        let mut error = None;
        let mut build = |list: &[Member]| -> Option<Arc<Ring>> {
            if list.is_empty() {
                return None;
            }
            match Ring::new(list.iter().cloned(), config) {
                Ok(ring) => Some(Arc::new(ring)),
                Err(e) => {
                    error.get_or_insert(e);
                    None
                }
            }
        };
        let current_ring = build(&current);
        let future_ring = if future == current {
            None
        } else {
            build(&future)
        };
        (
            Self {
                current: current_ring,
                future: future_ring,
            },
            error,
        )
    }

    /// The ring reads use (`None` while no member is on it).
    pub fn current(&self) -> Option<&Ring> {
        self.current.as_deref()
    }

    /// The ring writes also go to while members join or leave; `None` when
    /// nothing is in flux.
    pub fn future(&self) -> Option<&Ring> {
        self.future.as_deref()
    }

    /// Whether a join or leave is under way (the two rings differ).
    pub fn in_flux(&self) -> bool {
        self.future.is_some()
    }

    /// Where a write of `key` goes; see [`RingView::write_replicas_at`].
    pub fn write_replicas(&self, key: &[u8], n: usize) -> (Vec<&str>, Vec<&str>) {
        self.write_replicas_at(key_position(key), n)
    }

    /// The write targets at `position`: the current ring's `n` replicas in
    /// preference order, and the future ring's replicas that are not among
    /// them (`pending`, in the future ring's order).
    ///
    /// A write needs `W + pending.len()` acknowledgements among both: with
    /// both replica sets of size `n`, that many answers include W from each
    /// set, so a read on either ring meets the write.
    pub fn write_replicas_at(&self, position: u64, n: usize) -> (Vec<&str>, Vec<&str>) {
        let current: Vec<&str> = self
            .current()
            .map(|ring| ring.preference_list_at(position, n))
            .unwrap_or_default();
        let pending = self
            .future()
            .map(|ring| {
                ring.walk(position)
                    .take(n)
                    .filter(|m| !current.contains(m))
                    .collect()
            })
            .unwrap_or_default();
        (current, pending)
    }

    /// For every peer that replicates a range with `me` under the current
    /// ring (joining members are not replicas yet), those shared ranges
    /// merged into maximal runs, in ring order; a run may wrap past
    /// `u64::MAX`, and a peer sharing everything gets one whole-ring run.
    ///
    /// Merged, because anti-entropy compares one Merkle range hash per run:
    /// three members with N = 3 then agree in a single round trip.
    pub fn shared_ranges(&self, me: &str, n: usize) -> BTreeMap<String, Vec<TokenRange>> {
        let mut shared: BTreeMap<String, Vec<TokenRange>> = BTreeMap::new();
        let Some(ring) = self.current() else {
            return shared;
        };
        for range in ring.ranges() {
            let replicas = ring.replicas_of(&range, n);
            if !replicas.contains(&me) {
                continue;
            }
            for peer in replicas.into_iter().filter(|p| *p != me) {
                let runs = shared.entry(peer.to_string()).or_default();
                match runs.last_mut() {
                    Some(last) if last.end == range.start => last.end = range.end,
                    _ => runs.push(range),
                }
            }
        }
        for runs in shared.values_mut() {
            // The last run may continue into the first across the top of the ring.
            if runs.len() > 1 && runs[runs.len() - 1].end == runs[0].start {
                if let Some(last) = runs.pop() {
                    runs[0].start = last.start;
                }
            }
        }
        shared
    }
}

/// The ranges `me` gains when it joins a ring of `current` members (with
/// its weight and zone): exactly the [`diff`] entries that list it as gained.
/// `me` may already be in `current` (its entry is replaced).
pub fn gained_ranges(
    current: &[Member],
    me: &Member,
    n: usize,
    config: RingConfig,
) -> Result<Vec<RangeChange>, RingError> {
    let old = Ring::new(current.iter().cloned(), config)?;
    let new = Ring::new(
        current
            .iter()
            .filter(|m| m.id != me.id)
            .cloned()
            .chain(std::iter::once(me.clone())),
        config,
    )?;
    Ok(diff(&old, &new, n)
        .into_iter()
        .filter(|c| c.gained.contains(&me.id))
        .collect())
}

/// The ranges `me` loses when it leaves a ring of `current` members, with
/// the members that gain each; none when nobody would be left to take them.
pub fn lost_ranges(
    current: &[Member],
    me: &str,
    n: usize,
    config: RingConfig,
) -> Result<Vec<RangeChange>, RingError> {
    let old = Ring::new(current.iter().cloned(), config)?;
    let rest: Vec<Member> = current.iter().filter(|m| m.id != me).cloned().collect();
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let new = Ring::new(rest, config)?;
    Ok(diff(&old, &new, n)
        .into_iter()
        .filter(|c| c.lost.iter().any(|l| l == me))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[ViewMember]) -> RingView {
        RingView::new(members, RingConfig::default()).unwrap()
    }

    fn list(ids: &[(&str, u32)]) -> MemberList {
        ids.iter().map(|(id, w)| Member::new(*id, *w)).collect()
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_unstable();
        v
    }

    #[test]
    fn weights_split_off_the_joining_flag() {
        for (gossiped, expected) in [
            (0, (0, false)),
            (3, (3, false)),
            (3 | JOINING_FLAG, (3, true)),
            (JOINING_FLAG, (0, true)),
            (crate::MAX_WEIGHT | JOINING_FLAG, (crate::MAX_WEIGHT, true)),
        ] {
            assert_eq!(split_weight(gossiped), expected, "{gossiped:#x}");
        }
    }

    #[test]
    fn member_lists_by_state() {
        // (members, current, future)
        let cases: Vec<(Vec<ViewMember>, MemberList, MemberList)> = vec![
            (vec![], list(&[]), list(&[])),
            (
                vec![ViewMember::new("b", 2), ViewMember::new("a", 1)],
                list(&[("a", 1), ("b", 2)]),
                list(&[("a", 1), ("b", 2)]),
            ),
            (
                vec![ViewMember::new("a", 1), ViewMember::new("c", 1).joining()],
                list(&[("a", 1)]),
                list(&[("a", 1), ("c", 1)]),
            ),
            (
                vec![ViewMember::new("a", 1), ViewMember::new("b", 3).leaving()],
                list(&[("a", 1), ("b", 3)]),
                list(&[("a", 1)]),
            ),
            (
                vec![
                    ViewMember::new("a", 1),
                    ViewMember::new("z", 1).joining().leaving(),
                ],
                list(&[("a", 1)]),
                list(&[("a", 1)]),
            ),
        ];
        for (members, current, future) in cases {
            assert_eq!(
                RingView::member_lists(&members),
                (current, future),
                "{members:?}"
            );
        }
    }

    #[test]
    fn which_rings_exist() {
        // (members, has current, has future)
        for (members, current, future) in [
            (vec![], false, false),
            (vec![ViewMember::new("a", 1)], true, false),
            (vec![ViewMember::new("a", 1).joining()], false, true),
            (
                vec![ViewMember::new("a", 1), ViewMember::new("b", 1).joining()],
                true,
                true,
            ),
            (
                vec![ViewMember::new("a", 1), ViewMember::new("b", 1).leaving()],
                true,
                true,
            ),
            // The last member leaving: nothing to write to but the current ring.
            (vec![ViewMember::new("a", 1).leaving()], true, false),
        ] {
            let v = view(&members);
            assert_eq!(v.current().is_some(), current, "{members:?}");
            assert_eq!(v.future().is_some(), future, "{members:?}");
            assert_eq!(v.in_flux(), future, "{members:?}");
        }
    }

    #[test]
    fn an_unbuildable_ring_is_an_error_or_left_out() {
        let members = [ViewMember::new("a", 1), ViewMember::new("b", 0).joining()];
        let bad = RingError::BadWeight {
            id: "b".into(),
            weight: 0,
            max: crate::MAX_WEIGHT,
        };
        assert_eq!(
            RingView::new(&members, RingConfig::default()).unwrap_err(),
            bad
        );
        let (v, error) = RingView::partial(&members, RingConfig::default());
        assert_eq!(error, Some(bad));
        assert_eq!(v.current().map(|r| r.members().len()), Some(1));
        assert!(v.future().is_none());
    }

    #[test]
    fn write_replicas_table() {
        let a = || ViewMember::new("a", 1);
        let b = || ViewMember::new("b", 1);
        let c = || ViewMember::new("c", 1);
        // (members, n, sorted current, sorted pending). With n at least the
        // member count every member replicates every key, so the sets do not
        // depend on hashing.
        type Case = (Vec<ViewMember>, usize, Vec<&'static str>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (vec![], 3, vec![], vec![]),
            (vec![a()], 3, vec!["a"], vec![]),
            (vec![a(), b(), c()], 3, vec!["a", "b", "c"], vec![]),
            (vec![a(), b(), c().joining()], 3, vec!["a", "b"], vec!["c"]),
            (vec![a(), b().leaving()], 3, vec!["a", "b"], vec![]),
            (vec![a().joining()], 3, vec![], vec!["a"]),
            (
                vec![a(), b().joining(), c().joining()],
                3,
                vec!["a"],
                vec!["b", "c"],
            ),
            (vec![a(), b(), c()], 0, vec![], vec![]),
            (vec![a(), b(), c().joining()], 0, vec![], vec![]),
        ];
        for (members, n, current, pending) in cases {
            let v = view(&members);
            for key in [&b""[..], b"user:42", &[0xff; 16]] {
                let (cur, pen) = v.write_replicas(key, n);
                assert_eq!(sorted(cur), current, "{members:?} n={n} key={key:?}");
                assert_eq!(sorted(pen), pending, "{members:?} n={n} key={key:?}");
            }
        }
    }

    #[test]
    fn write_replicas_pinned() {
        // Exact answers on a real ring: these follow from token hashing, which
        // every node and gateway must share, so a change here is a
        // compatibility break, not a refactoring.
        let members = [
            ViewMember::new("node-1", 1),
            ViewMember::new("node-2", 1),
            ViewMember::new("node-3", 1),
            ViewMember::new("node-4", 1).joining(),
            ViewMember::new("node-5", 1),
        ];
        let v = view(&members);
        let current = v.current().unwrap();
        let future = v.future().unwrap();
        for position in [0u64, 1 << 62, 1 << 63, u64::MAX] {
            let (cur, pen) = v.write_replicas_at(position, 3);
            assert_eq!(cur, current.preference_list_at(position, 3));
            let expected: Vec<&str> = future
                .preference_list_at(position, 3)
                .into_iter()
                .filter(|m| !cur.contains(m))
                .collect();
            assert_eq!(pen, expected);
        }
        assert_eq!(
            v.write_replicas(b"user:42", 3),
            (vec!["node-5", "node-2", "node-3"], vec![])
        );
        assert_eq!(
            v.write_replicas(b"apple", 3),
            (vec!["node-5", "node-3", "node-2"], vec!["node-4"])
        );
        assert_eq!(
            v.write_replicas(b"melon", 3),
            (vec!["node-5", "node-1", "node-2"], vec!["node-4"])
        );
    }

    #[test]
    fn a_join_and_a_leave_across_zones_keep_every_zone() {
        // Three zones of two members, N = 3: every key has one replica per
        // zone. A member joining zone a takes over zone a's replica of the
        // keys it gains, and nothing else moves; a member of zone b leaving
        // hands its keys to the other member of zone b.
        let zone = |i: usize| ["a", "b", "c"][(i - 1) % 3];
        let mut members: Vec<ViewMember> = (1..=6)
            .map(|i| ViewMember::new(format!("node-{i}"), 1).in_zone(zone(i)))
            .collect();
        members.push(ViewMember::new("node-7", 1).in_zone("a").joining());
        members[1] = members[1].clone().leaving(); // node-2, zone b
        let v = view(&members);
        let (current, future) = (v.current().unwrap(), v.future().unwrap());
        let zones_of = |ring: &Ring, list: &[&str]| -> Vec<String> {
            let mut z: Vec<String> = list
                .iter()
                .map(|m| ring.zone_of(m).unwrap().to_string())
                .collect();
            z.sort();
            z
        };
        let mut pending_seen = 0;
        for range in future.ranges() {
            let (cur, pending) = v.write_replicas_at(range.start, 3);
            assert_eq!(zones_of(current, &cur), ["a", "b", "c"]);
            let next = future.replicas_of(&range, 3);
            assert_eq!(zones_of(future, &next), ["a", "b", "c"]);
            for p in &pending {
                assert!(*p == "node-7" || *p == "node-5", "{p} gains {range:?}");
            }
            pending_seen += pending.len();
        }
        assert!(pending_seen > 0);
        let config = RingConfig::default();
        let (now, _) = RingView::member_lists(&members);
        let joiner = ViewMember::new("node-7", 1).in_zone("a").ring_member();
        for c in gained_ranges(&now, &joiner, 3, config).unwrap() {
            assert_eq!(c.gained, ["node-7"]);
            assert!(c.lost == ["node-1"] || c.lost == ["node-4"], "{c:?}");
        }
        for c in lost_ranges(&now, "node-2", 3, config).unwrap() {
            assert_eq!(
                (&c.lost[..], &c.gained[..]),
                (&["node-2".to_string()][..], &["node-5".to_string()][..])
            );
        }
    }

    #[test]
    fn shared_ranges_table() {
        let whole = |runs: &Vec<TokenRange>| runs.len() == 1 && runs[0].start == runs[0].end;
        let abc = [
            ViewMember::new("a", 1),
            ViewMember::new("b", 1),
            ViewMember::new("c", 1),
        ];
        let v = view(&abc);
        // Everyone replicates everything: one whole-ring run per peer.
        let shared = v.shared_ranges("a", 3);
        assert_eq!(shared.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert!(shared.values().all(whole), "{shared:?}");
        // One replica per key: nothing is shared.
        assert!(v.shared_ranges("a", 1).is_empty());
        // Not a member, or not yet a replica: nothing either.
        assert!(v.shared_ranges("z", 3).is_empty());
        let joining = view(&[ViewMember::new("a", 1), ViewMember::new("b", 1).joining()]);
        assert!(joining.shared_ranges("b", 3).is_empty());
        assert!(joining.shared_ranges("a", 3).is_empty());
        // A leaving member still replicates.
        let leaving = view(&[ViewMember::new("a", 1), ViewMember::new("b", 1).leaving()]);
        let shared = leaving.shared_ranges("a", 3);
        assert_eq!(shared.keys().collect::<Vec<_>>(), ["b"]);
        assert!(whole(&shared["b"]));
        assert!(RingView::default().shared_ranges("a", 3).is_empty());
    }

    #[test]
    fn shared_ranges_of_four_members_pinned() {
        // With 4 members and N = 3 a pair shares most of the ring but not all:
        // the runs must be exactly the ranges where both are replicas.
        let members: Vec<ViewMember> = (1..=4)
            .map(|i| ViewMember::new(format!("node-{i}"), 1))
            .collect();
        let v = view(&members);
        let ring = v.current().unwrap();
        let shared = v.shared_ranges("node-1", 3);
        assert_eq!(
            shared.keys().collect::<Vec<_>>(),
            ["node-2", "node-3", "node-4"]
        );
        for (peer, runs) in &shared {
            let covered: f64 = runs.iter().map(TokenRange::fraction).sum();
            let expected: f64 = ring
                .ranges()
                .iter()
                .filter(|r| {
                    let replicas = ring.replicas_of(r, 3);
                    replicas.contains(&"node-1") && replicas.contains(&peer.as_str())
                })
                .map(TokenRange::fraction)
                .sum();
            assert!((covered - expected).abs() < 1e-12, "{peer}");
            assert!((0.3..0.9).contains(&covered), "{peer}: {covered}");
            for pair in runs.windows(2) {
                assert_ne!(pair[0].end, pair[1].start, "{peer}: runs not merged");
            }
        }
    }

    #[test]
    fn gained_and_lost_ranges() {
        let config = RingConfig::default();
        let abc = list(&[("a", 1), ("b", 1), ("c", 1)]);
        // Three members and N = 3: a fourth gains about 3/4 of the ring.
        let gained = gained_ranges(&abc, &Member::new("d", 1), 3, config).unwrap();
        let share: f64 = gained.iter().map(|c| c.range.fraction()).sum();
        assert!((0.6..0.9).contains(&share), "{share}");
        assert!(gained.iter().all(|c| c.gained == ["d"]));
        // Joining a ring it is already on at the same weight moves nothing.
        assert!(gained_ranges(&abc, &Member::new("a", 1), 3, config)
            .unwrap()
            .is_empty());
        // With N above the member count the newcomer gains everything.
        let gained = gained_ranges(&list(&[("a", 1)]), &Member::new("b", 1), 3, config).unwrap();
        let share: f64 = gained.iter().map(|c| c.range.fraction()).sum();
        assert!((share - 1.0).abs() < 1e-9, "{share}");

        let abcd = list(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let lost = lost_ranges(&abcd, "d", 3, config).unwrap();
        let lost_share: f64 = lost.iter().map(|c| c.range.fraction()).sum();
        assert!((0.6..0.9).contains(&lost_share), "{lost_share}");
        assert!(lost.iter().all(|c| c.lost == ["d"] && c.gained.len() == 1));
        // The last member has nobody to hand to; a stranger loses nothing.
        assert!(lost_ranges(&list(&[("a", 1)]), "a", 3, config)
            .unwrap()
            .is_empty());
        assert!(lost_ranges(&abc, "z", 3, config).unwrap().is_empty());
        assert_eq!(
            gained_ranges(&abc, &Member::new("d", 0), 3, config).unwrap_err(),
            RingError::BadWeight {
                id: "d".into(),
                weight: 0,
                max: crate::MAX_WEIGHT
            }
        );
    }
}
