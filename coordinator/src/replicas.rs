//! Which members a request goes to, from the ring view and the caller's
//! liveness and latency estimates.
//!
//! [`plan`](crate::plan()) is the walk-to-targets rule; this module feeds it
//! the right walk: for a write while members join or leave, the current
//! owners, then the future ring's replicas that are not current ones
//! (`pending`), then the rest of the walk as fallbacks.

use std::collections::VecDeque;

use shoal_ring::view::RingView;

use crate::plan::{plan, Plan, Target};

/// What the engine needs to know about members, from the caller's gossip
/// view and RPC history. The engine never measures anything itself.
pub trait Health {
    /// Whether requests may go to `node` now.
    fn is_live(&self, node: &str) -> bool;
    /// Smoothed round-trip latency to `node` in microseconds; 0 when never
    /// measured (so an unmeasured node is not avoided).
    fn latency_us(&self, node: &str) -> f64;
}

/// A replica is treated as slow when its latency exceeds twice the fastest
/// candidate's plus this margin: below it, ring order (and with it a stable
/// coordinator and read set per key) wins over noise in the estimates.
pub const SLOW_MARGIN_US: f64 = 2_000.0;

/// Whether `latency` is much slower than `best` (see [`SLOW_MARGIN_US`]).
pub(crate) fn much_slower(latency: f64, best: f64) -> bool {
    latency > 2.0 * best + SLOW_MARGIN_US
}

/// The targets of a write at `position` and the live members after them on
/// the walk (spares that replace targets failing mid-request), plus how many
/// acknowledgements the write needs beyond W.
///
/// While members join or leave, the key's replicas under the future ring that
/// are not replicas under the current one (`pending`) are added after the
/// current owners and the write needs `W + pending` acknowledgements: with
/// both replica sets of size N, that many answers among their union include
/// at least W from each set, so a read on either ring meets the write.
pub fn write_plan(
    view: &RingView,
    position: u64,
    n: usize,
    health: &impl Health,
) -> (Plan, VecDeque<String>, usize) {
    if view.current().is_none() {
        return (empty_plan(), VecDeque::new(), 0);
    }
    let (_, pending) = view.write_replicas_at(position, n);
    let (p, spares) = plan_with(view, position, n, &pending, health);
    let extra = pending.len();
    (p, spares, extra)
}

/// The targets of a read at `position` (current ring only: the future ring's
/// new replicas may not hold the key yet).
pub fn read_plan(view: &RingView, position: u64, n: usize, health: &impl Health) -> Plan {
    if view.current().is_none() {
        return empty_plan();
    }
    plan_with(view, position, n, &[], health).0
}

fn empty_plan() -> Plan {
    Plan {
        targets: Vec::new(),
        owners: Vec::new(),
        uncovered: Vec::new(),
    }
}

fn plan_with(
    view: &RingView,
    position: u64,
    n: usize,
    pending: &[&str],
    health: &impl Health,
) -> (Plan, VecDeque<String>) {
    let Some(ring) = view.current() else {
        return (empty_plan(), VecDeque::new());
    };
    let mut walk: Vec<&str> = ring.walk(position).collect();
    if !pending.is_empty() {
        let owners = walk.iter().copied().take(n);
        let rest = walk
            .iter()
            .copied()
            .skip(n)
            .filter(|m| !pending.contains(m));
        walk = owners.chain(pending.iter().copied()).chain(rest).collect();
    }
    let p = plan(
        walk.iter().copied(),
        n + pending.len(),
        |m| health.is_live(m),
        true,
    );
    let spares = walk
        .iter()
        .filter(|m| {
            health.is_live(m)
                && !p.owners.iter().any(|o| o == *m)
                && !p.targets.iter().any(|t| t.node == **m)
        })
        .map(|m| m.to_string())
        .collect();
    (p, spares)
}

/// Moves the fastest owner to the front of `targets` when the first one has
/// become much slower than it.
///
/// The coordinator is on every write's critical path (the others can only be
/// sent its version), so one slow replica would otherwise set the latency of
/// every key it is the first owner of. Any owner may coordinate: the dots it
/// mints are its own.
pub(crate) fn prefer_fast_coordinator(targets: &mut VecDeque<Target>, health: &impl Health) {
    let owners = targets.iter().take_while(|t| t.hint_for.is_none()).count();
    if owners < 2 {
        return;
    }
    let latency = |t: &Target| health.latency_us(&t.node);
    let first = latency(&targets[0]);
    let (best, best_us) = (1..owners)
        .map(|i| (i, latency(&targets[i])))
        .fold((0, first), |a, b| if b.1 < a.1 { b } else { a });
    if best != 0 && much_slower(first, best_us) {
        if let Some(t) = targets.remove(best) {
            targets.push_front(t);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use shoal_ring::view::ViewMember;
    use shoal_ring::RingConfig;

    use super::*;

    /// Liveness and latency by table: members listed in `down` are down,
    /// `latency` gives microseconds (absent = 0).
    #[derive(Default)]
    pub(crate) struct Table {
        pub down: Vec<String>,
        pub latency: BTreeMap<String, f64>,
    }

    impl Table {
        pub fn down(ids: &str) -> Self {
            Self {
                down: ids.split_whitespace().map(str::to_string).collect(),
                latency: BTreeMap::new(),
            }
        }
        pub fn slow(mut self, id: &str, us: f64) -> Self {
            self.latency.insert(id.to_string(), us);
            self
        }
    }

    impl Health for Table {
        fn is_live(&self, node: &str) -> bool {
            !self.down.iter().any(|d| d == node)
        }
        fn latency_us(&self, node: &str) -> f64 {
            self.latency.get(node).copied().unwrap_or(0.0)
        }
    }

    pub(crate) fn view(members: &[ViewMember]) -> RingView {
        RingView::new(members, RingConfig::default()).expect("valid ring")
    }

    pub(crate) fn five() -> RingView {
        view(&["a", "b", "c", "d", "e"].map(|id| ViewMember::new(id, 1)))
    }

    /// The walk of the test key 42 on [`five`], so tests can name members
    /// by rank whatever the hash places first.
    pub(crate) fn walk() -> Vec<String> {
        five()
            .current()
            .unwrap()
            .walk(42)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn no_ring_plans_nothing() {
        let (p, spares, extra) = write_plan(&RingView::default(), 7, 3, &Table::default());
        assert!(p.targets.is_empty() && spares.is_empty() && extra == 0);
        assert!(read_plan(&RingView::default(), 7, 3, &Table::default())
            .targets
            .is_empty());
    }

    #[test]
    fn write_plan_has_owners_then_live_spares() {
        let v = five();
        let walk: Vec<String> = v.current().unwrap().walk(42).map(str::to_string).collect();
        let health = Table::down(&walk[1]);
        let (p, spares, extra) = write_plan(&v, 42, 3, &health);
        assert_eq!(extra, 0);
        let nodes: Vec<&str> = p.targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(nodes, [&walk[0], &walk[2], &walk[3]]);
        assert_eq!(p.targets[2].hint_for.as_deref(), Some(walk[1].as_str()));
        assert_eq!(spares, [walk[4].clone()]);
    }

    #[test]
    fn joining_member_is_pending_and_needs_one_more_ack() {
        let mut members: Vec<ViewMember> =
            ["a", "b", "c"].map(|id| ViewMember::new(id, 1)).to_vec();
        members.push(ViewMember::new("d", 1).joining());
        let v = view(&members);
        // Some key has d among its future replicas.
        let position = (0..u64::MAX / 7)
            .step_by(1 << 40)
            .find(|p| !v.write_replicas_at(*p, 3).1.is_empty())
            .expect("d owns something in the future ring");
        let (p, _, extra) = write_plan(&v, position, 3, &Table::default());
        assert_eq!(extra, 1);
        assert_eq!(p.targets.len(), 4);
        assert_eq!(p.targets[3].node, "d");
        // Reads stay on the current ring.
        assert_eq!(
            read_plan(&v, position, 3, &Table::default()).targets.len(),
            3
        );
    }

    #[test]
    fn slow_first_owner_gives_way() {
        let t = |n: &str| Target {
            node: n.into(),
            hint_for: None,
        };
        let mut q: VecDeque<Target> = [t("a"), t("b"), t("c")].into();
        prefer_fast_coordinator(&mut q, &Table::default().slow("a", 1_500.0));
        assert_eq!(q[0].node, "a", "within the margin the ring order stays");
        prefer_fast_coordinator(
            &mut q,
            &Table::default().slow("a", 9_000.0).slow("b", 800.0),
        );
        assert_eq!(q[0].node, "c", "the fastest owner coordinates");
    }
}
