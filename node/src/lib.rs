//! `shoal-node`: the Shoal replica service, and the pieces every Shoal process
//! shares.
//!
//! A node stores its share of the keys in the `shoal-storage` LSM engine as
//! `shoal-vclock` sibling sets, gossips membership with `shoal-gossip`, keeps
//! hints for owners that are down and hands them off when they return, and
//! serves all of it over the tarpc [`rpc::Replica`] service. Gateways call that
//! service (through [`pool::Pool`]) and serve it too, for gossip.
//!
//! Everything that touches the outside world goes through [`env::Env`]
//! (sockets and the wall clock), given at construction, so that a
//! deterministic simulation can run this code unchanged.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_node::{config::Config, env::Env, node};
//!
//! let mut config = Config::default();
//! config.member.id = "node-1".into();
//! config.member.listen = "127.0.0.1:0".into();
//! config.member.data_dir = "/tmp/shoal-node-1".into();
//! let handle = node::start(config, Env::real()).await?;
//! println!("serving on {}", handle.addr());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`config`]: the TOML + `SHOAL_*` configuration shared with the gateway;
//! - [`env`]: the socket and clock seams;
//! - [`rpc`]: the service definition and its wire types;
//! - [`serve`], [`pool`]: the server accept loop and pooled clients;
//! - [`membership`]: runs the gossip state machine over the service;
//! - [`member`], [`advertise`]: what nodes and gateways share to be members
//!   (bind, gossip, pool), and whether members can be dialed where they say
//!   they are;
//! - [`store`]: key layout, per-key locking, hints, node metadata, the
//!   Merkle tree over the data;
//! - [`anti_entropy`]: Merkle exchanges between replicas, paced, periodic or
//!   on demand (the `repair` RPC);
//! - `handoff`: hinted handoff, delivering held hints to their owners;
//! - [`handover`]: range streaming when a node joins or is decommissioned;
//! - `scan`: the one paged-scan loop the three above share;
//! - [`node`]: start-up, the service implementation, shutdown (it builds
//!   anti-entropy, handoff and handover, none of which imports it);
//! - [`logging`]: log setup and signals for the binaries.
//!
//! Durability: a write is acknowledged only after the engine accepted it under
//! the configured `storage.sync` (default `always`: fsynced, group-committed).

pub mod advertise;
mod answer_watch;
pub mod anti_entropy;
pub mod buckets;
pub mod config;
pub mod env;
mod expiry;
mod forward;
mod handoff;
pub mod handover;
pub mod keys;
pub mod logging;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod observe;
pub mod pool;
pub mod props_sync;
pub mod rpc;
mod scan;
pub mod secure;
pub mod serve;
pub mod store;
mod tombstones;

pub use config::Config;
