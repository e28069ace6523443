//! `shoal-coordinator`: the quorum logic of a Dynamo-style store, without sockets.
//!
//! A gateway (or any other caller) uses it in three steps: [`plan`] which
//! replicas a request goes to (owners from the ring, fallbacks with hints for
//! owners that are down); count the answers in a [`Tally`] until W or R is
//! reached or can no longer be; and, for reads, [`reconcile`] the answers into
//! one sibling set plus the list of stale replicas to repair. The caller owns
//! the network and the deadline; this crate only decides.
//!
//! ```
//! use shoal_coordinator::{plan, reconcile, Progress, Tally};
//! use shoal_ring::{Member, Ring, RingConfig};
//! use shoal_vclock::{Content, Context, SiblingSet};
//!
//! let ring = Ring::new(
//!     ["a", "b", "c", "d"].map(|id| Member::new(id, 1)),
//!     RingConfig::default(),
//! ).unwrap();
//! let position = shoal_ring::key_position(b"user:42");
//! let owners = ring.preference_list_at(position, 3);
//! let down = owners[1].to_string();
//!
//! // One owner is down: a fallback takes its place with a hint.
//! let p = plan(ring.walk(position), 3, |m| m != down, true);
//! assert_eq!(p.targets.len(), 3);
//! assert_eq!(p.fallbacks().next().unwrap().hint_for.as_deref(), Some(down.as_str()));
//!
//! // W = 2: the first two acknowledgements decide.
//! let mut tally = Tally::new(2, p.targets.len());
//! assert_eq!(tally.succeed(&p.targets[0].node, ()), Progress::Pending);
//! assert_eq!(tally.succeed(&p.targets[1].node, ()), Progress::Reached);
//!
//! // A read: one replica is behind, so it is scheduled for read repair.
//! let mut v1 = SiblingSet::new();
//! v1.update(&Context::empty(), "a", Content::value(b"one".to_vec(), "text/plain"), 0).unwrap();
//! let mut v2 = v1.clone();
//! v2.update(&v1.context(), "a", Content::value(b"two".to_vec(), "text/plain"), 1).unwrap();
//! let answers = [("a".to_string(), Some(v2.clone())), ("b".to_string(), Some(v1))].into();
//! let r = reconcile(&answers);
//! assert_eq!(r.merged, Some(v2));
//! assert_eq!(r.stale, vec!["b".to_string()]);
//! ```
//!
//! Layout: [`plan`](mod@plan) (targets and hints), [`tally`] (W/R counting),
//! [`reconcile`](mod@reconcile) (merge and read repair).

pub mod plan;
pub mod reconcile;
pub mod tally;

pub use plan::{plan, Plan, Target};
pub use reconcile::{reconcile, Reconciled};
pub use tally::{Progress, QuorumFailure, Tally};
