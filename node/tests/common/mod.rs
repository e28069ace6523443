//! Set-up shared by the node integration tests: a node configuration for
//! 127.0.0.1 with fast gossip, a bounded condition wait, and a cluster of
//! nodes that all see each other alive.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_node::config::{Config, SecretText, SyncMode};
use shoal_node::env::Env;
use shoal_node::node::{self, NodeHandle};
use shoal_node::pool::Pool;

/// Bound on every wait for a condition.
pub const WAIT: Duration = Duration::from_secs(30);

/// The cluster secret every member of this test process shares.
pub fn secret() -> SecretText {
    static SECRET: std::sync::OnceLock<SecretText> = std::sync::OnceLock::new();
    SECRET.get_or_init(SecretText::random).clone()
}

/// A node on 127.0.0.1 (port 0) under `dir`, seeded by `seeds`, with gossip
/// and handoff fast enough for tests and `sync = always`.
pub fn base_config(id: &str, dir: &Path, seeds: &[String]) -> Config {
    let mut c = Config::default();
    c.member.id = id.into();
    c.member.listen = "127.0.0.1:0".into();
    c.member.seeds = seeds.to_vec();
    c.member.data_dir = dir.join(id);
    c.security.cluster_secret = Some(secret());
    c.gossip.interval_ms = 50;
    c.gossip.failure_timeout_ms = 600;
    c.handoff.retry_interval_ms = 50;
    c.storage.sync = SyncMode::Always;
    c.storage.memtable_bytes = 1 << 20;
    c
}

/// Polls `cond` until it holds; fails the test after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every node sees `count` members, all alive.
pub fn all_alive(nodes: &[NodeHandle], count: usize) -> bool {
    nodes.iter().all(|n| {
        let m = n.members();
        m.len() == count && m.iter().all(|i| i.status == shoal_gossip::Status::Alive)
    })
}

/// Starts `node-1..=node-count`, all seeded through the first, configured by
/// `config(id, seeds)`, and waits until every one sees every other alive.
pub async fn start_cluster(
    count: usize,
    config: impl Fn(&str, &[String]) -> Config,
) -> Vec<NodeHandle> {
    let first = node::start(config("node-1", &[]), Env::real())
        .await
        .unwrap();
    let seeds = vec![first.advertise().to_string()];
    let mut nodes = vec![first];
    for i in 2..=count {
        let n = node::start(config(&format!("node-{i}"), &seeds), Env::real())
            .await
            .unwrap();
        nodes.push(n);
    }
    wait_until("every node to see every other alive", || {
        all_alive(&nodes, count)
    })
    .await;
    nodes
}

/// A client pool on real sockets.
pub fn pool(max_frame_bytes: usize) -> Pool {
    let mut c = Config::default();
    c.security.cluster_secret = Some(secret());
    let transport = c.transport().expect("the test secret is valid");
    Pool::new(
        Env::real().net,
        transport,
        Duration::from_secs(2),
        max_frame_bytes,
    )
}
