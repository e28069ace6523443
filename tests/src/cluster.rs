//! An in-process cluster: storage nodes and one gateway, real servers on
//! 127.0.0.1 port 0, each reaching the network through its own
//! [`FaultNet`](crate::faultnet::FaultNet) on a shared [`Faults`]
//! switchboard, data in a temporary directory.
//!
//! In-process is the right choice where a process boundary does not change
//! what is tested (partitions, delays, handoff, disk errors): it starts in
//! milliseconds, and the test can look inside nodes (hint counts). Crashes
//! need real processes; see [`crate::procs`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_gateway::{Gateway, GatewayHandle};
use shoal_gossip::{Role, Status};
use shoal_node::config::{Config, SyncMode};
use shoal_node::env::Env;
use shoal_node::node::{self, NodeHandle};
use shoal_node::pool::Pool;

use crate::faultnet::Faults;
use crate::http::{encode_key, Client, Reply};
use crate::wait;

/// Shape of the cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Storage nodes.
    pub nodes: usize,
    /// Replication factor.
    pub n: usize,
    /// Default write quorum.
    pub w: usize,
    /// Default read quorum.
    pub r: usize,
    /// Commit-log durability.
    pub sync: SyncMode,
    /// Sloppy quorum with hints.
    pub handoff: bool,
    /// Merkle anti-entropy.
    pub anti_entropy: bool,
    /// Gateway's per-request budget.
    pub request_timeout_ms: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            nodes: 4,
            n: 3,
            w: 2,
            r: 2,
            // The in-process tests never crash a process, so fsync buys
            // nothing there and costs the 2-core CI machine a lot.
            sync: SyncMode::Never,
            handoff: true,
            anti_entropy: true,
            request_timeout_ms: 2_000,
        }
    }
}

/// A running in-process cluster; shut it down with [`Cluster::shutdown`]
/// (dropping it aborts the tasks with the runtime).
pub struct Cluster {
    /// The fault switchboard every member's sockets go through.
    pub faults: Arc<Faults>,
    configs: Vec<Config>,
    nodes: Vec<Option<NodeHandle>>,
    gateway: Option<GatewayHandle>,
    spec: Spec,
    /// Last, so the handles drop before the directory is removed.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// The id of node `i` (0-based): `node-1`, `node-2`, ...
pub fn node_id(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// The id of the gateway.
pub const GATEWAY: &str = "gw-1";

impl Cluster {
    /// Starts `spec.nodes` nodes and a gateway and waits until the gateway
    /// sees every node alive.
    pub async fn start(spec: Spec) -> Cluster {
        Self::start_with(spec, |_, _| {}).await
    }

    /// Like [`Cluster::start`], letting `customize` change each node's
    /// config (by index) first, e.g. to put one data directory on a small
    /// mount.
    pub async fn start_with(spec: Spec, customize: impl Fn(usize, &mut Config)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let faults = Faults::new();
        let mut configs = Vec::new();
        for i in 0..spec.nodes {
            let mut c = base_config(&spec, &node_id(i));
            c.member.data_dir = dir.path().join(node_id(i));
            customize(i, &mut c);
            configs.push(c);
        }
        let mut cluster = Cluster {
            faults,
            dir,
            configs,
            nodes: (0..spec.nodes).map(|_| None).collect(),
            gateway: None,
            spec: spec.clone(),
        };
        for i in 0..spec.nodes {
            cluster.restart(i).await;
        }
        let mut gw = base_config(&spec, GATEWAY);
        gw.member.seeds = cluster.seeds();
        gw.http.listen = "127.0.0.1:0".into();
        let gateway = Gateway::start(gw, cluster.faults.env(GATEWAY))
            .await
            .expect("gateway starts");
        cluster.gateway = Some(gateway);
        cluster
            .wait_alive(spec.nodes, Duration::from_secs(20))
            .await
            .expect("the gateway sees every node alive within 20 s");
        cluster
    }

    /// The shape it was started with.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The gateway's HTTP address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.as_ref().expect("gateway running").http_addr()
    }

    /// A keep-alive client of the gateway.
    pub fn client(&self) -> Client {
        Client::new(self.gateway_addr(), Duration::from_secs(5))
    }

    /// Node `i`, if running.
    pub fn node(&self, i: usize) -> Option<&NodeHandle> {
        self.nodes[i].as_ref()
    }

    /// The config node `i` (re)starts with.
    pub fn config_mut(&mut self, i: usize) -> &mut Config {
        &mut self.configs[i]
    }

    /// The temporary directory holding the data directories.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn seeds(&self) -> Vec<String> {
        let mut seeds: Vec<String> = self
            .nodes
            .iter()
            .flatten()
            .map(|n| n.advertise().to_string())
            .collect();
        if let Some(g) = &self.gateway {
            seeds.push(g.rpc_addr().to_string());
        }
        seeds
    }

    /// Gracefully stops node `i` (flushes and closes its store).
    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    /// Starts node `i` again on its data directory (a new port; gossip
    /// spreads the new address). Panics if it does not start.
    pub async fn restart(&mut self, i: usize) {
        self.try_restart(i).await.expect("node starts");
    }

    /// Starts node `i`, returning the start-up error as text.
    pub async fn try_restart(&mut self, i: usize) -> Result<(), String> {
        assert!(self.nodes[i].is_none(), "node {i} is already running");
        let mut c = self.configs[i].clone();
        c.member.seeds = self.seeds();
        let n = node::start(c, self.faults.env(&node_id(i)))
            .await
            .map_err(|e| e.to_string())?;
        self.nodes[i] = Some(n);
        Ok(())
    }

    /// Starts one more node (the next id), configured by `customize` (e.g.
    /// `member.join = true` to stream its ranges before serving); returns its
    /// index.
    pub async fn add_node(&mut self, customize: impl Fn(&mut Config)) -> usize {
        let i = self.nodes.len();
        let mut c = base_config(&self.spec, &node_id(i));
        c.member.data_dir = self.dir.path().join(node_id(i));
        customize(&mut c);
        self.configs.push(c);
        self.nodes.push(None);
        self.restart(i).await;
        i
    }

    /// Decommissions node `i`: it streams its ranges to their new owners,
    /// announces that it left and asks to stop; the node is then shut down.
    /// Returns the node's report of what moved.
    pub async fn decommission(
        &mut self,
        i: usize,
        bound: Duration,
    ) -> Result<shoal_node::rpc::HandoverReport, String> {
        let node = self.nodes[i].as_ref().ok_or("node not running")?;
        let pool: Pool = crate::secret::pool(Env::real().net, Duration::from_secs(2), 16 << 20);
        let report = pool
            .call(node.advertise(), bound, |c, ctx| async move {
                c.decommission(ctx, false).await
            })
            .await
            .map_err(|e| format!("decommission call: {e}"))?
            .map_err(|e| format!("decommission refused: {e}"))?;
        tokio::time::timeout(bound, node.stop_requested())
            .await
            .map_err(|_| "the node did not ask to stop after its decommission".to_string())?;
        self.stop(i).await;
        Ok(report)
    }

    /// Starts one more gateway `id` on this cluster's nodes (real sockets,
    /// outside the fault switchboard), with `customize` applied to its
    /// config, and waits until it sees every running node alive.
    pub async fn start_gateway(
        &self,
        id: &str,
        customize: impl FnOnce(&mut Config),
    ) -> GatewayHandle {
        let mut g = base_config(&self.spec, id);
        g.member.seeds = self.seeds();
        g.http.listen = "127.0.0.1:0".into();
        customize(&mut g);
        let gw = Gateway::start(g, Env::real())
            .await
            .expect("gateway starts");
        let running = self.nodes.iter().flatten().count();
        wait::until(
            Duration::from_secs(20),
            "the new gateway sees every running node alive",
            || async {
                gw.members()
                    .iter()
                    .filter(|m| m.role == Role::Storage && m.status == Status::Alive)
                    .count()
                    >= running
            },
        )
        .await;
        gw
    }

    /// Waits until the gateway sees exactly `count` storage nodes alive.
    pub async fn wait_alive(&self, count: usize, bound: Duration) -> Option<Duration> {
        let gw = self.gateway.as_ref().expect("gateway running");
        wait::within(bound, || async {
            gw.members()
                .iter()
                .filter(|m| m.role == Role::Storage && m.status == Status::Alive)
                .count()
                == count
        })
        .await
    }

    /// Waits until the gateway sees node `i` as not alive (down or
    /// suspected past use).
    pub async fn wait_not_alive(&self, i: usize, bound: Duration) -> Option<Duration> {
        let gw = self.gateway.as_ref().expect("gateway running");
        let id = node_id(i);
        wait::within(bound, || async {
            gw.members()
                .iter()
                .any(|m| m.id.to_string() == id && m.status == Status::Down)
        })
        .await
    }

    /// Hints held by the running nodes together.
    pub fn hints(&self) -> u64 {
        self.nodes.iter().flatten().map(|n| n.hint_count()).sum()
    }

    /// `GET /v1/debug/replicas/{key}`: what each replica stores, read
    /// without repairing.
    pub async fn replicas(&self, key: &str) -> Option<serde_json::Value> {
        let mut c = self.client();
        let r: Reply = c
            .request(
                "GET",
                &format!("/v1/debug/replicas/{}", encode_key(key.as_bytes())),
                &[],
                b"",
            )
            .await
            .ok()?;
        if r.status == 200 {
            r.json()
        } else {
            None
        }
    }

    /// Stops the gateway and every node, bounded.
    pub async fn shutdown(mut self) {
        let bound = Duration::from_secs(15);
        if let Some(g) = self.gateway.take() {
            let _ = tokio::time::timeout(bound, g.shutdown()).await;
        }
        for n in self.nodes.iter_mut() {
            if let Some(n) = n.take() {
                let _ = tokio::time::timeout(bound, n.shutdown()).await;
            }
        }
    }
}

/// A config for member `id` of this cluster: [`crate::config::Fast`] with
/// handoff and anti-entropy fast enough that faults are repaired within the
/// seconds a test runs.
fn base_config(spec: &Spec, id: &str) -> Config {
    crate::config::Fast::member(id)
        .handoff_retry_ms(100)
        .sync(spec.sync)
        .edit(|c| {
            c.replication.n = spec.n;
            c.replication.w = spec.w;
            c.replication.r = spec.r;
            c.handoff.enabled = spec.handoff;
            c.anti_entropy.enabled = spec.anti_entropy;
            c.anti_entropy.interval_ms = 1_000;
            // 2^16 leaves (2.5 MiB per node) instead of the default 40 MiB: a
            // few thousand test keys need no finer tree, and the 2-core CI
            // machine rebuilds every tree at each start.
            c.anti_entropy.leaf_bits = 16;
            c.storage.memtable_bytes = 1 << 20;
            c.http.request_timeout_ms = spec.request_timeout_ms;
            c.log.filter = "warn".into();
        })
        .build()
}

/// What one node holds for a key, per `/v1/debug/replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The node id; a hint holder reads `"<node> (hint for <owner>)"`.
    pub node: String,
    /// Whether the node is one of the key's N owners.
    pub owner: bool,
    /// The values it stores (tombstones left out).
    pub values: Vec<Vec<u8>>,
}

/// What each replica of a `/v1/debug/replicas` answer holds.
pub fn replica_values(body: &serde_json::Value) -> Vec<Holding> {
    body["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let role = r["role"].as_str().unwrap_or("");
                    let node = r["node"].as_str().unwrap_or("").to_string();
                    let name = if role == "hint" {
                        format!(
                            "{node} (hint for {})",
                            r["hint_for"].as_str().unwrap_or("?")
                        )
                    } else {
                        node
                    };
                    let values = r["siblings"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(|s| s["value"].as_str())
                                .filter_map(crate::http::decode_value)
                                .collect()
                        })
                        .unwrap_or_default();
                    Holding {
                        node: name,
                        owner: role == "owner",
                        values,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bound on [`start_nodes`]'s wait for every node to see every other.
pub const NODES_ALIVE: Duration = Duration::from_secs(30);

/// Whether every node sees `count` members, all alive.
pub fn all_alive(nodes: &[NodeHandle], count: usize) -> bool {
    nodes.iter().all(|n| {
        let m = n.members();
        m.len() == count && m.iter().all(|i| i.status == Status::Alive)
    })
}

/// Starts bare nodes on real sockets, with no gateway and no fault
/// injection: `node-1..=node-count`, all seeded through the first,
/// configured by `config(id, seeds)`; waits (up to [`NODES_ALIVE`]) until
/// every one sees every other alive.
pub async fn start_nodes(
    count: usize,
    config: impl Fn(&str, &[String]) -> Config,
) -> Vec<NodeHandle> {
    let first = node::start(config("node-1", &[]), Env::real())
        .await
        .expect("node-1 starts");
    let seeds = vec![first.advertise().to_string()];
    let mut nodes = vec![first];
    for i in 2..=count {
        let n = node::start(config(&format!("node-{i}"), &seeds), Env::real())
            .await
            .unwrap_or_else(|e| panic!("node-{i} starts: {e}"));
        nodes.push(n);
    }
    wait::until(
        NODES_ALIVE,
        "every node to see every other alive",
        || async { all_alive(&nodes, count) },
    )
    .await;
    nodes
}
