//! What the caller is told about membership changes.

use crate::member::{MemberId, MemberInfo};

/// A change in the local view, reported through
/// [`Membership::drain_events`](crate::Membership::drain_events) in the order it
/// was observed. The node reacts to these (ring rebuild, hint delivery); the
/// events are facts about this member's view, not cluster-wide agreements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member was heard of for the first time (or again after it left or was
    /// forgotten).
    Joined(MemberInfo),
    /// A member that was down is heartbeating again.
    Up {
        /// Who.
        id: MemberId,
    },
    /// A member's heartbeat stayed silent past the detection period.
    Down {
        /// Who.
        id: MemberId,
    },
    /// A member announced a decommission.
    Leaving {
        /// Who.
        id: MemberId,
    },
    /// A member announced that it left.
    Left {
        /// Who.
        id: MemberId,
    },
    /// A member's address, role, weight or zone changed; `before` and `after`
    /// let the caller see which.
    Changed {
        /// Previous view.
        before: MemberInfo,
        /// New view.
        after: MemberInfo,
    },
    /// A member restarted (higher incarnation); its old entry was replaced.
    Restarted {
        /// Who.
        id: MemberId,
        /// The new incarnation.
        incarnation: u64,
    },
    /// A member that left, or stayed down past `forget_down_after`, was removed
    /// from the list.
    Forgotten {
        /// Who.
        id: MemberId,
    },
    /// Gossip from `from` about `id` was refused. Reported the first time
    /// `from` is refused for `reason` (keyed on the sender, so a flood of
    /// invented ids costs one report, not one per id); every refusal is
    /// counted in [`Membership::refusals`](crate::Membership::refusals). Honest
    /// members never cause one: log it, the sender is buggy or lying.
    Refused {
        /// The member that sent it (its claimed id).
        from: MemberId,
        /// The member the refused record or digest entry describes (the first
        /// one, for a report that stands for many).
        id: MemberId,
        /// Why.
        reason: Refusal,
    },
}

/// Why gossip about a member was refused; see [`Event::Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// A record in an Ack2 that answers no Ack of ours (none pending from that
    /// peer, expired, or not for a member we asked for).
    Unrequested,
    /// An incarnation above the known one by more than
    /// `Config::max_incarnation_jump`.
    IncarnationJump,
    /// A heartbeat ahead of what the member could have reached since we last
    /// heard from it (`Config::heartbeat_slack`, `Config::max_heartbeat_jump`).
    HeartbeatJump,
    /// A weight outside `1..=Config::max_weight` (flag bits aside).
    Weight,
    /// A new member while `Config::max_members` are known.
    TooManyMembers,
}
