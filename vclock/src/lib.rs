//! `shoal-vclock`: vector clocks, and the per-key sibling sets (dotted version
//! vectors) that let Shoal accept every write and never lose an acknowledged
//! one.
//!
//! Every replica keeps one [`SiblingSet`] per key. A client read returns the
//! siblings ([`SiblingSet::values`]) and an opaque causal [`Context`]
//! ([`SiblingSet::context`], bytes via [`Context::encode`]). The client's next
//! write carries that context back; the replica that coordinates the write
//! calls [`SiblingSet::update`] with its own node id, which replaces exactly
//! the siblings the client had seen and keeps every concurrent one. Replicas
//! reconcile with [`SiblingSet::sync`] (replication, read repair, hinted
//! handoff, anti-entropy), which is commutative, associative and idempotent,
//! so they converge whatever order states arrive in. Nothing here does I/O or
//! reads a clock: the caller passes `now` (ms since the Unix epoch).
//!
//! ```
//! use shoal_vclock::{Content, Context, SiblingSet};
//!
//! // Two clients write the same key through two replicas, neither having
//! // read first: both writes are kept, as siblings.
//! let mut r1 = SiblingSet::new();
//! let mut r2 = SiblingSet::new();
//! r1.update(&Context::empty(), "node-1", Content::value("red", "text/plain"), 1_000)?;
//! r2.update(&Context::empty(), "node-2", Content::value("blue", "text/plain"), 1_001)?;
//! let merged = r1.sync(&r2);
//! assert_eq!(merged.len(), 2);
//!
//! // A client reads both, resolves them, and writes back with the context
//! // (which travels as bytes, e.g. base64 in an HTTP header).
//! let token = merged.context().encode();
//! let context = Context::decode(&token)?;
//! let mut r3 = merged.clone();
//! r3.update(&context, "node-3", Content::value("purple", "text/plain"), 1_002)?;
//! assert_eq!(r3.len(), 1);
//!
//! // Syncing with the stale replicas does not bring the old values back.
//! let everywhere = r3.sync(&r1).sync(&r2);
//! assert_eq!(everywhere.values()[0].value(), Some(&b"purple"[..]));
//! assert_eq!(everywhere.digest(), r3.digest());
//! # Ok::<(), shoal_vclock::Error>(())
//! ```
//!
//! # Layout
//!
//! - `clock`: [`VectorClock`], `[actor, counter, timestamp]` entries with
//!   increment, compare ([`Causality`]), merge, descends and prune.
//! - `context`: [`Context`], the causal token clients hand back.
//! - `siblings`: [`SiblingSet`], the per-key dotted version vector set, with
//!   its laws, pruning, digest and binary encoding.
//! - `codec`: the varint framing the binary encodings share.
//! - `error`: [`Error`], this crate's one error type.
//!
//! `examples/siblings.rs` replays the sibling explosion of pre-2.0 Riak
//! against this crate, and `examples/clock_size.rs` measures how big a key's
//! clock and context grow with and without [`SiblingSet::prune`];
//! `tests/oracle.rs` is the model-based test that checks no acknowledged
//! write is ever lost and that pruning only ever adds false siblings;
//! `tests/purge_floor.rs` checks that a write after a tombstone purge,
//! minted above [`SiblingSet::minting_above`]'s floor, survives every stale
//! copy of the purged state (and is swallowed without the floor);
//! `benches/hostile_context.rs` keeps a write with a 60,000-actor context
//! linear.

mod clock;
mod codec;
mod context;
mod error;
mod policy;
mod siblings;

pub use clock::{Causality, ClockEntry, VectorClock};
pub use context::Context;
pub use error::Error;
pub use policy::Policy;
pub use siblings::{CausalView, Content, Dot, Sibling, SiblingSet, SiblingView};
