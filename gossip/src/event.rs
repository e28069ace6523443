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
    /// A member's address, role or weight changed; `before` and `after` let the
    /// caller see which.
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
}
