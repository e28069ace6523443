//! A cluster of real `shoal-node` and `shoal-gateway` processes on
//! 127.0.0.1, for faults that need a process boundary: SIGKILL at any
//! moment, restart on the same data directory.
//!
//! The binaries are found next to the test executable (`target/<profile>/`),
//! where `cargo nextest run --workspace` or `cargo build --bins` puts them.
//! Each child sits behind a [`Proc`] guard that SIGKILLs and reaps it on
//! drop, so a failing test leaves nothing running. Nodes listen on free
//! ports picked up front so that a restarted node comes back at the address
//! its peers and the seeds already know.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::Client;
use crate::wait;

/// Bound on a child printing its "listening" line.
const START: Duration = Duration::from_secs(20);

/// The path of a workspace binary built for the same profile as this test.
/// Panics with what to run when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable under target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: these tests run the real binaries; build them first with \
         `cargo build -p shoal-node -p shoal-gateway --bins` (same profile as the tests) \
         or run `cargo nextest run --workspace`",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read it,
/// release it). Another process could take it in between; on this machine
/// the ephemeral range is large and tests are few, and a clash shows up as a
/// clear start-up failure, not a wrong result.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A child process that is SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The line it printed when it started listening.
    pub banner: String,
}

impl Proc {
    /// Starts `binary --config config`, appending stderr to `log`, and waits
    /// (bounded) for its first stdout line.
    pub fn spawn(binary: &Path, config: &Path, log: &Path) -> Result<Proc, String> {
        Self::spawn_in(None, binary, config, log)
    }

    /// [`Proc::spawn`], inside network namespace `netns` when given (`ip
    /// netns exec NS BINARY ...`: `ip` execs the binary, so the child's pid
    /// is the binary's and a kill reaches it).
    pub fn spawn_in(
        netns: Option<&str>,
        binary: &Path,
        config: &Path,
        log: &Path,
    ) -> Result<Proc, String> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(stderr);
        // The binaries read every `SHOAL_*` variable as a config override
        // and reject unknown keys, so the test's own knobs (`SHOAL_LONG`,
        // `SHOAL_TEST_SEED`) must not leak into them; the config file says
        // everything the child needs.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SHOAL_") {
                command.env_remove(&key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let mut proc = Proc {
            child,
            banner: String::new(),
        };
        match rx.recv_timeout(START) {
            Ok(line) if !line.is_empty() => {
                proc.banner = line;
                Ok(proc)
            }
            _ => {
                let status = proc.child.try_wait().ok().flatten();
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
                Err(format!(
                    "{} did not start within {START:?} (exit: {status:?}); stderr tail:\n{tail}",
                    binary.display()
                ))
            }
        }
    }

    /// The last whitespace-separated word of the banner (the address).
    pub fn banner_addr(&self) -> String {
        self.banner
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim_start_matches("http://")
            .to_string()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Waits until the gateway at `gateway` reports exactly `count` storage
/// nodes alive in `/v1/cluster`.
pub async fn wait_storage_alive(
    gateway: SocketAddr,
    count: usize,
    bound: Duration,
) -> Option<Duration> {
    wait::within(bound, || async move {
        let mut c = Client::new(gateway, Duration::from_secs(2));
        let Ok(r) = c.request("GET", "/v1/cluster", &[], b"").await else {
            return false;
        };
        let alive = r
            .json()
            .and_then(|j| j["members"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|m| m["role"] == "storage" && m["status"] == "alive")
            .count();
        alive == count
    })
    .await
}

/// Shape of a process cluster.
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
    /// `storage.sync`: `always`, `periodic` or `never`.
    pub sync: &'static str,
}

/// One node's fixed identity.
#[derive(Debug)]
pub(crate) struct NodeSlot {
    pub(crate) id: String,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) proc: Option<Proc>,
}

/// Writes the config of every node (node `i` on `addrs[i]`, in zone
/// `zones[i % len]` when zones are given) and of the gateway (gossip on
/// `gateway_listen`, HTTP on an ephemeral loopback port), and returns the
/// nodes' slots and the gateway's config. The loopback cluster and the
/// namespace one ([`crate::netns::NetCluster`]) both write theirs here, so
/// their settings cannot drift apart.
pub(crate) fn write_configs(
    dir: &Path,
    spec: &Spec,
    addrs: &[String],
    zones: &[String],
    gateway_listen: &str,
) -> (Vec<NodeSlot>, PathBuf) {
    let seeds = addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let common = format!(
        "[replication]\nn = {}\nw = {}\nr = {}\n\
         [gossip]\ninterval_ms = 100\nfailure_timeout_ms = 1000\n\
         [handoff]\nretry_interval_ms = 200\n\
         [storage]\nsync = \"{}\"\nmemtable_bytes = 1048576\n\
         [log]\nfilter = \"warn\"\n{}",
        spec.n,
        spec.w,
        spec.r,
        spec.sync,
        crate::secret::toml_section()
    );
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = format!("node-{}", i + 1);
        let zone = if zones.is_empty() {
            String::new()
        } else {
            format!("zone = {:?}\n", zones[i % zones.len()])
        };
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "[member]\nid = \"{id}\"\nlisten = \"{addr}\"\nseeds = [{seeds}]\n{zone}data_dir = {:?}\n{common}",
                dir.join(&id)
            ),
        )
        .expect("write node config");
        let log = dir.join(format!("{id}.log"));
        nodes.push(NodeSlot {
            id,
            config,
            log,
            proc: None,
        });
    }
    let gateway = dir.join("gateway.toml");
    std::fs::write(
        &gateway,
        format!(
            "[member]\nid = \"gw-1\"\nlisten = \"{gateway_listen}\"\nseeds = [{seeds}]\n\
             [http]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = 2000\n{common}"
        ),
    )
    .expect("write gateway config");
    (nodes, gateway)
}

/// Starts the gateway from `config` (its log in `dir`) and waits until it
/// sees `nodes` storage nodes alive; returns it and its HTTP address. Shared
/// by the loopback cluster and the namespace one.
pub(crate) async fn start_gateway(
    bin: &Path,
    config: &Path,
    dir: &Path,
    nodes: usize,
) -> (Proc, SocketAddr) {
    let gateway = Proc::spawn(bin, config, &dir.join("gateway.log"))
        .unwrap_or_else(|e| panic!("gateway: {e}"));
    let http: SocketAddr = gateway
        .banner_addr()
        .parse()
        .unwrap_or_else(|_| panic!("gateway address in {:?}", gateway.banner));
    let took = wait_storage_alive(http, nodes, Duration::from_secs(30)).await;
    assert!(
        took.is_some(),
        "the gateway did not see all {nodes} nodes alive within 30 s"
    );
    (gateway, http)
}

/// Real processes: `spec.nodes` nodes and one gateway.
#[derive(Debug)]
pub struct ProcCluster {
    node_bin: PathBuf,
    nodes: Vec<NodeSlot>,
    gateway: Option<Proc>,
    gateway_http: SocketAddr,
    /// Last, so that fields drop in order: the processes are killed before
    /// their data directories are removed.
    dir: tempfile::TempDir,
}

impl ProcCluster {
    /// Writes the configs, starts every node and the gateway, and waits
    /// until the gateway sees every node alive.
    pub async fn start(spec: &Spec) -> ProcCluster {
        let node_bin = binary("shoal-node");
        let gateway_bin = binary("shoal-gateway");
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<String> = (0..spec.nodes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let gateway_listen = format!("127.0.0.1:{}", free_port());
        let (nodes, gw_config) = write_configs(dir.path(), spec, &addrs, &[], &gateway_listen);
        let mut cluster = ProcCluster {
            node_bin,
            nodes,
            gateway: None,
            gateway_http: "127.0.0.1:1".parse().expect("addr"),
            dir,
        };
        for i in 0..spec.nodes {
            cluster.start_node(i);
        }
        let (gateway, http) =
            start_gateway(&gateway_bin, &gw_config, cluster.dir.path(), spec.nodes).await;
        cluster.gateway_http = http;
        cluster.gateway = Some(gateway);
        cluster
    }

    /// The gateway's HTTP address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_http
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].proc.is_some()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// Starts node `i` on its config and data directory. Panics with its
    /// stderr tail if it does not come up.
    pub fn start_node(&mut self, i: usize) {
        let slot = &mut self.nodes[i];
        assert!(slot.proc.is_none(), "{} already runs", slot.id);
        let proc = Proc::spawn(&self.node_bin, &slot.config, &slot.log)
            .unwrap_or_else(|e| panic!("{}: {e}", slot.id));
        slot.proc = Some(proc);
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].proc.take() {
            p.kill();
        }
    }

    /// Waits until the gateway reports exactly `count` storage nodes alive.
    pub async fn wait_alive(&self, count: usize, bound: Duration) -> Option<Duration> {
        wait_storage_alive(self.gateway_http, count, bound).await
    }

    /// The last lines of node `i`'s stderr log, for failure messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }
}
