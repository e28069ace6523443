//! Real `shoal-node` processes, each in a network namespace of its own on a
//! bridge this test makes, so that faults are done to real interfaces: a
//! link taken down, packets dropped by iptables inside one namespace. The
//! gateway runs in the test's (root) namespace on the bridge's address, its
//! HTTP on 127.0.0.1.
//!
//! Every name carries a random tag (bridge `sht<tag>`, namespaces
//! `sht<tag>-n<i>`, veth ends `sht<tag>v<i>`) and every run takes a /24 in
//! 10.200.0.0-10.249.255.0 that no interface of the machine holds, so runs in
//! parallel never meet. [`Net`] removes everything it made when dropped,
//! also on a panic; [`NetCluster`] kills its processes before that.
//!
//! Needs root and a kernel that allows `ip netns add`; [`Net::create`] says
//! why not otherwise, and the tests print it and pass as skipped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rand::Rng;

use crate::procs::{binary, start_gateway, wait_storage_alive, write_configs, NodeSlot, Proc};

/// Runs `ip ARGS` (or another command), returning its stdout or an error
/// naming it with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("0")
}

/// A bridge with `count` namespaces on it, one veth pair each.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    /// The first three octets of the /24.
    subnet: String,
    /// Per node: namespace and root-side veth.
    nodes: Vec<(String, String)>,
}

impl Net {
    /// Makes the bridge (at `<subnet>.254`) and `count` namespaces (node `i`
    /// at `<subnet>.<i + 1>`). `Err` says why this machine cannot (not
    /// root, `ip netns add` refused): the caller skips. Panics on any later
    /// failure.
    pub fn create(count: usize) -> Result<Net, String> {
        if !is_root() {
            return Err("not root (network namespaces need CAP_SYS_ADMIN)".into());
        }
        if count == 0 || count > 200 {
            return Err(format!("{count} nodes: between 1 and 200"));
        }
        let mut rng = rand::thread_rng();
        let tag = format!("{:06x}", rng.gen::<u32>() & 0x00ff_ffff);
        let mut subnet = None;
        for _ in 0..16 {
            let s = format!("10.{}.{}", rng.gen_range(200..250), rng.gen_range(0..=255));
            let used = ip(&["-o", "addr", "show", "to", &format!("{s}.0/24")])?;
            if used.trim().is_empty() {
                subnet = Some(s);
                break;
            }
        }
        let subnet = subnet.ok_or("no free /24 in 10.200.0.0/13")?;
        let mut net = Net {
            bridge: format!("sht{tag}"),
            subnet,
            nodes: Vec::new(),
        };
        // From here on, Drop removes whatever was made. Namespaces first:
        // a kernel or sandbox without them is a reason to skip; anything
        // failing after that is a failure.
        for i in 0..count {
            let ns = format!("sht{tag}-n{}", i + 1);
            ip(&["netns", "add", &ns]).map_err(|e| format!("cannot make a namespace: {e}"))?;
            net.nodes.push((ns, format!("sht{tag}v{}", i + 1)));
        }
        let must = |args: &[&str]| {
            ip(args).unwrap_or_else(|e| panic!("{e}"));
        };
        must(&["link", "add", &net.bridge, "type", "bridge"]);
        must(&["link", "set", &net.bridge, "up"]);
        must(&[
            "addr",
            "add",
            &format!("{}/24", net.host()),
            "dev",
            &net.bridge,
        ]);
        for (i, (ns, veth)) in net.nodes.iter().enumerate() {
            must(&[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            must(&["link", "set", veth, "master", &net.bridge, "up"]);
            let addr = format!("{}/24", net.node_host(i));
            must(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            must(&["-n", ns, "link", "set", "eth0", "up"]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Ok(net)
    }

    /// The bridge's address in the root namespace.
    pub fn host(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// Node `i`'s address (in its namespace).
    pub fn node_host(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i].0
    }

    /// Takes node `i`'s link down (`false`) or up (`true`), as pulling and
    /// plugging its cable would.
    pub fn set_link(&self, i: usize, up: bool) {
        let veth = &self.nodes[i].1;
        ip(&["link", "set", veth, if up { "up" } else { "down" }])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `iptables ARGS` inside node `i`'s namespace.
    pub fn iptables(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", self.ns(i), "iptables"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `Ok` when iptables runs inside the namespaces; else why not.
    pub fn iptables_usable(&self) -> Result<(), String> {
        self.iptables(0, &["-S", "INPUT"]).map(drop)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace takes its veth end and so the pair with it;
        // the root-side delete is for a pair whose namespace is still held
        // by a process that has not exited yet.
        for (ns, veth) in &self.nodes {
            let _ = ip(&["netns", "del", ns]);
            let _ = ip(&["link", "del", veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Shape of a [`NetCluster`].
#[derive(Debug, Clone)]
pub struct NetSpec {
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
    /// `member.zone` of node `i` is `zones[i % len]`; empty: the default zone.
    pub zones: Vec<String>,
}

/// Nodes in namespaces on a [`Net`], one gateway in the root namespace.
#[derive(Debug)]
pub struct NetCluster {
    node_bin: PathBuf,
    // Fields drop in order: processes first, then the network, then the
    // data directories.
    nodes: Vec<NodeSlot>,
    gateway: Option<Proc>,
    gateway_http: SocketAddr,
    net: Net,
    dir: tempfile::TempDir,
}

/// RPC port of every node (each has its namespace to itself).
const NODE_PORT: u16 = 7000;

impl NetCluster {
    /// Makes the network, starts every node in its namespace and the
    /// gateway, and waits until the gateway sees every node alive. `Err`
    /// (only) when the network cannot be made here: skip. Panics when a
    /// process does not start.
    pub async fn start(spec: &NetSpec) -> Result<NetCluster, String> {
        let net = Net::create(spec.nodes)?;
        let node_bin = binary("shoal-node");
        let gateway_bin = binary("shoal-gateway");
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<String> = (0..spec.nodes)
            .map(|i| format!("{}:{NODE_PORT}", net.node_host(i)))
            .collect();
        // A port free on the bridge's address a moment ago.
        let gossip = TcpListener::bind(format!("{}:0", net.host()))
            .and_then(|l| l.local_addr())
            .expect("a free port on the bridge");
        let procs_spec = crate::procs::Spec {
            nodes: spec.nodes,
            n: spec.n,
            w: spec.w,
            r: spec.r,
            sync: spec.sync,
        };
        let (nodes, gw_config) = write_configs(
            dir.path(),
            &procs_spec,
            &addrs,
            &spec.zones,
            &gossip.to_string(),
        );
        let mut cluster = NetCluster {
            node_bin,
            nodes,
            gateway: None,
            gateway_http: "127.0.0.1:1".parse().expect("addr"),
            net,
            dir,
        };
        for i in 0..spec.nodes {
            cluster.start_node(i);
        }
        let (gateway, http) =
            start_gateway(&gateway_bin, &gw_config, cluster.dir.path(), spec.nodes).await;
        cluster.gateway_http = http;
        cluster.gateway = Some(gateway);
        Ok(cluster)
    }

    /// The network the nodes are on.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The gateway's HTTP address (127.0.0.1).
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

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// Starts node `i` in its namespace, on its config and data directory.
    /// Panics with its stderr tail if it does not come up.
    pub fn start_node(&mut self, i: usize) {
        let ns = self.net.ns(i).to_string();
        let slot = &mut self.nodes[i];
        assert!(slot.proc.is_none(), "{} already runs", slot.id);
        let proc = Proc::spawn_in(Some(&ns), &self.node_bin, &slot.config, &slot.log)
            .unwrap_or_else(|e| panic!("{} in {ns}: {e}", slot.id));
        slot.proc = Some(proc);
    }

    /// SIGKILLs node `i` (and reaps it).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].proc.take() {
            p.kill();
        }
    }

    /// Waits until the gateway reports exactly `count` storage nodes alive.
    pub async fn wait_alive(&self, count: usize, bound: Duration) -> Option<Duration> {
        wait_storage_alive(self.gateway_http, count, bound).await
    }
}
