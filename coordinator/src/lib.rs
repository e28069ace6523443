//! `shoal-coordinator`: the decisions of a Dynamo-style request, without
//! sockets or clocks.
//!
//! A client read or write is a state machine here ([`WriteOp`], [`ReadOp`]):
//! it is built from the ring view and the caller's liveness and latency
//! estimates ([`Health`]), and hands back actions ([`WriteAction`],
//! [`ReadAction`]: coordinate, replicate, read, repair, arm a timer, answer
//! the client) on `start` and on every reply. The caller performs them (RPCs,
//! timers) and reports back; it makes no decision of its own, so every rule
//! (sloppy quorum, coordinator retries, W + pending during ring changes, R
//! replicas first with speculation, read repair) is tested here on the
//! actions alone. Underneath are the building blocks: [`plan`] (targets and
//! hints), [`Tally`] (W/R counting) and [`reconcile`] (merging answers).
//!
//! ```
//! use std::time::Duration;
//! use shoal_coordinator::{Health, WriteAction, WriteOp};
//! use shoal_ring::view::{RingView, ViewMember};
//! use shoal_ring::RingConfig;
//!
//! struct AllUp;
//! impl Health for AllUp {
//!     fn is_live(&self, _: &str) -> bool { true }
//!     fn latency_us(&self, _: &str) -> f64 { 0.0 }
//! }
//!
//! let members = ["a", "b", "c", "d"].map(|id| ViewMember::new(id, 1));
//! let view = RingView::new(&members, RingConfig::default()).unwrap();
//! let position = shoal_ring::key_position(b"user:42");
//!
//! // N = 3, W = 2: the first owner coordinates (mints the version)...
//! let mut op = WriteOp::new(&view, position, 3, 2, &AllUp);
//! let second = Duration::from_secs(1);
//! let WriteAction::Coordinate { target, .. } = op.start(second).remove(0) else { panic!() };
//! // ...then the version goes to the two other owners,
//! let sends = op.coordinated(&target.node, Ok(()), second);
//! assert_eq!(sends.len(), 2);
//! let WriteAction::Replicate { target: other } = &sends[0] else { panic!() };
//! // and one more acknowledgement answers the client.
//! assert_eq!(op.replicated(&other.node, Ok(())), [WriteAction::Verdict(Ok(()))]);
//! ```
//!
//! Layout: [`write`] and [`read`] (the state machines), [`replicas`] (which
//! members, from the ring view), [`plan`](mod@plan) (targets and hints),
//! [`tally`] (W/R counting), [`reconcile`](mod@reconcile) (merge and read
//! repair).

pub mod plan;
pub mod read;
pub mod reconcile;
pub mod replicas;
pub mod tally;
pub mod write;

pub use plan::{plan, Plan, Target};
pub use read::{Fanout, ReadAction, ReadOp};
pub use reconcile::{reconcile, reconcile_with, Reconciled};
pub use replicas::Health;
pub use tally::{Progress, QuorumFailure, Tally};
pub use write::{Forwarding, WriteAction, WriteOp, MAX_COORDINATOR_ATTEMPTS};
