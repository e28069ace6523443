//! The ring's one error type.

/// Why a member set cannot form a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// No members: there is nowhere to place a key.
    #[error("the ring has no members: at least one storage member is needed to place keys")]
    Empty,
    /// A member id was empty; ids seed token positions and name replicas.
    #[error("a member has an empty id; ids must be non-empty")]
    EmptyId,
    /// The same id twice would give one physical node two sets of tokens.
    #[error("member {id:?} appears twice; member ids must be unique")]
    DuplicateMember {
        /// The repeated id.
        id: String,
    },
    /// A weight outside `1..=max`.
    #[error("member {id:?} has weight {weight}; weights must be in 1..={max}")]
    BadWeight {
        /// The member.
        id: String,
        /// Its rejected weight.
        weight: u32,
        /// The largest accepted weight.
        max: u32,
    },
    /// `vnodes_per_weight = 0` would give members no tokens.
    #[error("vnodes_per_weight is 0; every member needs at least one token")]
    ZeroVnodes,
}
