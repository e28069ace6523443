//! What a join or a leave would move, computed before anything changes.
//!
//! An operator asks this of the running ring (`cargo xtask cluster plan`)
//! and a test asks it before it performs the change, so both must compute
//! exactly what the nodes will: the ranges are [`diff`] of the ring before
//! and the ring after, the same rings a joining node's
//! [`gained_ranges`](super::gained_ranges) and a leaving node's
//! [`lost_ranges`](super::lost_ranges) build. Tokens are a pure function of
//! a member's id, weight and [`RingConfig`], so a plan that names the
//! joiner's id and weight places it where its join will; there is no
//! randomness to agree on.
//!
//! No member knows how many keys it stores (an LSM engine would have to
//! count them), so what moves is a share of the key space. Key positions are
//! SHA-256 hashes, uniform on the ring whatever the keys, so of `k` keys the
//! number in the moving share `p` is binomial: [`Plan::keys_moved`] is its
//! mean `k p`, and [`Plan::keys_moved_spread`] its standard deviation.
//!
//! ```
//! use shoal_ring::view::plan::Plan;
//! use shoal_ring::{Member, RingConfig};
//!
//! let three: Vec<Member> = (1..=3).map(|i| Member::new(format!("node-{i}"), 1)).collect();
//! let plan = Plan::join(&three, &Member::new("node-4", 1), 3, RingConfig::default())?;
//! // With N = 3, a fourth node replicates about 3/4 of the keys, all of
//! // which it receives.
//! assert!((0.6..0.9).contains(&plan.key_space));
//! assert!(plan.changes.iter().all(|c| c.gained == ["node-4"]));
//! let moved = plan.keys_moved(10_000);
//! assert!((moved - 10_000.0 * plan.key_space).abs() < 1e-6);
//! # Ok::<(), shoal_ring::RingError>(())
//! ```

use std::collections::BTreeMap;

use crate::{diff, Member, RangeChange, Ring, RingConfig, RingError};

/// What a membership change moves, from the ring before to the ring after.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Ranges whose set of `n` replicas changes, in ring order (adjacent
    /// ranges with the same change merged): what a join streams to the
    /// joiner and a leave streams away from the leaver.
    pub changes: Vec<RangeChange>,
    /// Each member's share of all stored copies on the ring before (sums
    /// to 1).
    pub before: BTreeMap<String, f64>,
    /// The same on the ring after.
    pub after: BTreeMap<String, f64>,
    /// Copies of each key before: `min(n, members)`.
    pub copies_before: usize,
    /// Copies of each key after.
    pub copies_after: usize,
    /// Fraction of the key space whose replicas change.
    pub key_space: f64,
    /// New copies the change makes, per member receiving them, as a
    /// fraction of all copies stored before.
    pub received: BTreeMap<String, f64>,
}

impl Plan {
    /// The plan from the ring of `before` to the ring of `after`.
    pub fn new(
        before: &[Member],
        after: &[Member],
        n: usize,
        config: RingConfig,
    ) -> Result<Plan, RingError> {
        let old = Ring::new(before.iter().cloned(), config)?;
        let new = Ring::new(after.iter().cloned(), config)?;
        let changes = diff(&old, &new, n);
        let copies_before = n.min(before.len()).max(1);
        let share = |ring: &Ring| -> BTreeMap<String, f64> {
            ring.ownership(n)
                .into_iter()
                .map(|(id, o)| (id, o.replicated))
                .collect()
        };
        let mut received: BTreeMap<String, f64> = BTreeMap::new();
        for c in &changes {
            for id in &c.gained {
                *received.entry(id.clone()).or_default() +=
                    c.range.fraction() / copies_before as f64;
            }
        }
        Ok(Plan {
            key_space: changes.iter().map(|c| c.range.fraction()).sum(),
            before: share(&old),
            after: share(&new),
            copies_before,
            copies_after: n.min(after.len()).max(1),
            received,
            changes,
        })
    }

    /// `joiner` joining a ring of `current` members (an entry of the same
    /// id in `current` is replaced, as a node rejoining with another weight
    /// or zone would).
    pub fn join(
        current: &[Member],
        joiner: &Member,
        n: usize,
        config: RingConfig,
    ) -> Result<Plan, RingError> {
        let after: Vec<Member> = current
            .iter()
            .filter(|m| m.id != joiner.id)
            .cloned()
            .chain(std::iter::once(joiner.clone()))
            .collect();
        Plan::new(current, &after, n, config)
    }

    /// Member `leaver` leaving a ring of `current` members. Leaving the
    /// last member is an error (no ring after); a stranger changes nothing.
    pub fn leave(
        current: &[Member],
        leaver: &str,
        n: usize,
        config: RingConfig,
    ) -> Result<Plan, RingError> {
        let after: Vec<Member> = current.iter().filter(|m| m.id != leaver).cloned().collect();
        Plan::new(current, &after, n, config)
    }

    /// New copies made, as a fraction of all copies stored before.
    pub fn copies_moved(&self) -> f64 {
        self.received.values().sum()
    }

    /// Of `keys` keys stored, how many are expected to move: those whose
    /// replicas change, each streamed once per member that gains it. A
    /// join's or a leave's handover report counts keys so (once per range
    /// page, whichever members receive it), and with one gaining member per
    /// range, as a single join or leave has once the ring has N members,
    /// that is also the number of copies sent.
    pub fn keys_moved(&self, keys: u64) -> f64 {
        keys as f64 * self.key_space
    }

    /// The standard deviation of the keys that move, around
    /// [`Plan::keys_moved`]: each key lands in the moving share
    /// independently with probability `key_space`, so the count is
    /// binomial, `sqrt(k p (1 - p))`. A measured count within a few of
    /// these of the estimate agrees with it.
    pub fn keys_moved_spread(&self, keys: u64) -> f64 {
        let p = self.key_space.clamp(0.0, 1.0);
        (keys as f64 * p * (1.0 - p)).sqrt()
    }

    /// Of `keys` keys stored, the copies expected to be sent: every key
    /// copy that some member gains.
    pub fn copies_sent(&self, keys: u64) -> f64 {
        keys as f64 * self.copies_before as f64 * self.copies_moved()
    }

    /// The change whose range holds ring position `position`, if the
    /// position's replicas change.
    pub fn change_at(&self, position: u64) -> Option<&RangeChange> {
        self.changes.iter().find(|c| c.range.contains(position))
    }
}

#[cfg(test)]
mod tests;
