//! `shoal-tests`: cross-crate integration and fault tests for Shoal.
//!
//! The fault-injection suite (issue #11) drives real servers on 127.0.0.1 and
//! judges the outcome with a Jepsen-style oracle: every write a client saw
//! acknowledged must be readable at the end, as the value or a sibling,
//! unless a write whose context had seen it superseded it; a write that
//! timed out is unknown, never counted as lost or as present. The scenarios
//! live in `tests/tests/` (one file per fault); this library is what they
//! share. Every scenario prints its seed (`SHOAL_TEST_SEED` replays it) and
//! runs for seconds, or for minutes under `SHOAL_LONG=1`.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use shoal_tests::{cluster, oracle::History, workload};
//!
//! let c = cluster::Cluster::start(cluster::Spec::default()).await;
//! let history = Arc::new(History::new());
//! workload::run(&workload::Spec::default(), c.gateway_addr(), history.clone(), 42).await;
//! c.faults.isolate("node-2"); // the switchboard every member's sockets go through
//! c.faults.heal();
//! let verdict = workload::verify(c.gateway_addr(), &history, 3, std::time::Duration::from_secs(30)).await;
//! verdict.assert_holds(42);
//! c.shutdown().await;
//! # }
//! ```
//!
//! Layout:
//! - [`http`]: the one HTTP/1.1 client (hyper, over real TCP or turmoil),
//!   which knows whether a failed request left the process (failed versus
//!   unknown), and a raw-bytes sender for malformed requests;
//! - [`wait`]: the one bounded wait for a condition;
//! - [`config`]: the one builder of fast in-process member configs;
//! - [`oracle`]: the history and the check;
//! - [`workload`]: concurrent clients (blind writes to unique keys,
//!   read-modify-writes of shared keys) and the final read-back;
//! - [`faultnet`]: a `shoal_node::env::Net` that partitions, delays and
//!   resets links between hosts on the test's command;
//! - [`cluster`]: in-process nodes and gateway on port 0, each behind its own
//!   fault-injecting `Net`;
//! - [`procs`]: real `shoal-node`/`shoal-gateway` processes with kill-on-drop
//!   guards;
//! - [`netns`]: the same, each node in a network namespace of its own on a
//!   bridge the test makes (and removes), for faults on real interfaces;
//! - [`run`]: seeds, the long form, percentiles;
//! - [`secret`]: the cluster secret every member a test starts shares, and
//!   an RPC pool that proves it.

pub mod cluster;
pub mod config;
pub mod faultnet;
pub mod forge;
pub mod http;
pub mod netns;
pub mod oracle;
pub mod procs;
pub mod run;
pub mod secret;
pub mod sim;
pub mod tokens;
pub mod wait;
pub mod workload;

/// The wire key of `key` in the default bucket: what the replica RPCs
/// carry for `/v1/kv/{key}` (see `shoal_node::keys`), for tests that talk
/// to nodes directly.
pub fn wire(key: impl AsRef<[u8]>) -> Vec<u8> {
    shoal_node::keys::wire(shoal_node::keys::DEFAULT_BUCKET, key.as_ref())
}
