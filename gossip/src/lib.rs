//! `shoal-gossip`: who is in a Shoal cluster and who is up, agreed by gossip.
//!
//! Every member (storage node or gateway) runs one [`Membership`]: its own entry
//! (id, address, role, weight, zone, lifecycle, heartbeat, incarnation) plus what it has
//! heard about everyone else. Each round the caller calls [`Membership::tick`],
//! which bumps the local heartbeat, runs the failure detector and returns digests
//! to send to a few random peers; whatever arrives goes to
//! [`Membership::receive`], which merges it (newest incarnation, then highest
//! heartbeat wins) and returns the replies. The exchange is Cassandra's
//! three-way scuttlebutt (digest, then deltas), so a round moves heartbeats but
//! repeats addresses and weights only when they changed, and every message stays
//! under `Config::max_message_bytes`.
//!
//! The crate does no I/O: the caller owns sockets, serialization (messages are
//! serde) and the clock (`now` is a [`Duration`](std::time::Duration) since any
//! origin), and injects the random generator, so a simulation replays a seed.
//!
//! ```
//! use std::time::Duration;
//! use rand::{rngs::StdRng, SeedableRng};
//! use shoal_gossip::{Config, LocalMember, Membership, Role, Status};
//!
//! let member = |id: &str, addr: &str| LocalMember {
//!     id: id.into(), address: addr.into(), role: Role::Storage, weight: 1,
//!     zone: "default".into(), incarnation: 1,
//! };
//! let seeds = vec!["10.0.0.1:7001".to_string()];
//! let mut a = Membership::new(Config::default(), member("node-1", "10.0.0.1:7001"),
//!     seeds.clone(), StdRng::seed_from_u64(1), Duration::ZERO)?;
//! let mut b = Membership::new(Config::default(), member("node-2", "10.0.0.2:7001"),
//!     seeds, StdRng::seed_from_u64(2), Duration::ZERO)?;
//!
//! // One round: b knows only the seed, so it sends its digest there. The
//! // "network" here hands each message straight to its recipient.
//! let now = Duration::from_secs(1);
//! let mut in_flight: Vec<(String, String, _)> = b.tick(now).into_iter()
//!     .map(|out| ("10.0.0.2:7001".to_string(), out.to, out.message)).collect();
//! for _hop in 0..3 {  // Syn, Ack, Ack2
//!     let mut next = Vec::new();
//!     for (from, to, message) in in_flight {
//!         let node = if to == "10.0.0.1:7001" { &mut a } else { &mut b };
//!         for reply in node.receive(&from, message, now)? {
//!             next.push((to.clone(), reply.to, reply.message));
//!         }
//!     }
//!     in_flight = next;
//! }
//! assert_eq!(a.status("node-2"), Some(Status::Alive));
//! assert_eq!(b.status("node-1"), Some(Status::Alive));
//! assert_eq!(a.live_storage_members().len(), 2);
//!
//! // Ten silent seconds later, b's detector declares a down.
//! b.tick(Duration::from_secs(12));
//! assert_eq!(b.status("node-1"), Some(Status::Down));
//! # Ok::<(), shoal_gossip::GossipError>(())
//! ```
//!
//! A member restarted with a higher incarnation replaces its old entry at once.
//! If a member ever hears a record of itself newer than its own (it restarted
//! without raising its incarnation), it jumps past that version; read the
//! possibly raised incarnation back from [`Membership::local`] and persist it.
//!
//! Only a member writes its own record, but gossip passes every record through
//! third parties, so a buggy or lying peer could forge one. Records it could not
//! have come by honestly are refused, counted ([`Membership::refusals`]) and
//! reported once per sender and reason ([`Event::Refused`]): an Ack2 that answers
//! no Ack of ours, an incarnation or heartbeat further ahead than its owner could
//! be, a weight outside `1..=Config::max_weight`, and new members past
//! `Config::max_members` (at most `Config::max_new_members_per_message` are taken
//! per message). A bounded forgery of the local member is refuted as before.
//!
//! Modules:
//! - [`membership`]: the state machine ([`Membership`], [`Outgoing`]).
//! - [`message`]: the wire messages, their version and size bound.
//! - [`member`]: ids, roles, statuses, [`MemberInfo`].
//! - [`config`]: [`Config`] and the failure [`Detector`] choice.
//! - [`event`]: [`Event`]s reported to the caller.
//! - [`error`]: the error type, [`GossipError`].

pub mod config;
mod detector;
pub mod error;
pub mod event;
pub mod member;
pub mod membership;
pub mod message;

pub use config::{Config, Detector};
pub use error::GossipError;
pub use event::{Event, Refusal};
pub use member::{
    Lifecycle, LocalMember, MemberId, MemberInfo, Role, Status, MAX_ADDRESS_LEN, MAX_ID_LEN,
    MAX_ZONE_LEN,
};
pub use membership::{Health, Membership, Outgoing};
pub use message::{Ack, Ack2, Body, Digest, Message, Record, Syn, PROTOCOL_VERSION};
