//! The cluster secret of the members a test process starts.
//!
//! Every member refuses to start without one, and every RPC connection
//! proves it; one per process (random, in memory) keeps tests from sharing
//! a secret with anything outside them.

use std::sync::OnceLock;
use std::time::Duration;

use shoal_node::config::{Config, SecretText};
use shoal_node::env::Net;
use shoal_node::pool::Pool;
use shoal_node::secure::Transport;

/// This process's cluster secret, as hex.
pub fn secret() -> SecretText {
    static SECRET: OnceLock<SecretText> = OnceLock::new();
    SECRET.get_or_init(SecretText::random).clone()
}

/// The secret as the `[security]` section of a member's TOML config.
pub fn toml_section() -> String {
    format!("[security]\ncluster_secret = {:?}\n", secret().0)
}

/// The transport a member with [`secret`] uses.
pub fn transport() -> Transport {
    let mut c = Config::default();
    c.security.cluster_secret = Some(secret());
    c.transport().expect("a random secret is valid")
}

/// A client pool over `net` that proves [`secret`].
pub fn pool(
    net: std::sync::Arc<dyn Net>,
    connect_timeout: Duration,
    max_frame_bytes: usize,
) -> Pool {
    Pool::new(net, transport(), connect_timeout, max_frame_bytes)
}

/// [`pool`] over real sockets, with the 2 s connect bound in-process tests
/// use.
pub fn real_pool(max_frame_bytes: usize) -> Pool {
    pool(
        shoal_node::env::Env::real().net,
        Duration::from_secs(2),
        max_frame_bytes,
    )
}
