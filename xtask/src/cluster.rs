//! `cargo xtask cluster`: a local Shoal cluster (nodes plus one gateway) in the
//! background, for trying things by hand, tests and benchmarks.
//!
//! Everything lives under `target/cluster/`: one TOML config per process, one log
//! per process, node data under `node-i/data`, and `state.json` with the pids and
//! addresses. Processes run in their own process group, so they outlive `xtask`
//! and a Ctrl-C in the terminal that started them; `down` stops them.
//!
//! `SHOAL_*` variables given to `up` reach every process (they inherit the
//! environment) and are recorded in the state file, so `start` and `add` give
//! them to the processes they start later too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::{cargo, run_cmd};

/// How long `up` waits for the gateway to report every node alive.
const UP_DEADLINE: Duration = Duration::from_secs(60);
/// How long `start` and `add` wait for the new process to be alive.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long `stop` and `down` wait after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// First port tried for the gateway's gossip listener; nodes take the next ones.
const BASE_PORT: u16 = 7100;
/// Log lines shown when a process dies during start-up.
const TAIL_LINES: usize = 30;
const GATEWAY_ID: &str = "gateway-1";

/// Arguments of `cargo xtask cluster`.
#[derive(Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCmd,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Build the release binaries, start the nodes and a gateway in the background,
    /// wait until the gateway sees every node alive, print the endpoints.
    Up(UpArgs),
    /// Members, liveness, ring ownership and pids, as a table.
    Status,
    /// Stop one process gracefully (SIGTERM), waiting for it to exit.
    Stop(NodeArg),
    /// Kill one process (SIGKILL), as a crash would.
    Kill(NodeArg),
    /// Start a stopped or killed process again, with the same config and data dir.
    Start(NodeArg),
    /// Start one more node; it joins through the seeds, receives the ranges
    /// it gains from their current replicas, and only then serves reads.
    Add,
    /// Stream NODE's ranges to their new owners, then stop it (it leaves the ring).
    Decommission(NodeArg),
    /// Run anti-entropy for NODE's ranges now and print what moved.
    Repair(NodeArg),
    /// Stop everything (SIGTERM, then SIGKILL after a bounded wait).
    Down(DownArgs),
}

#[derive(Args)]
struct UpArgs {
    /// Number of storage nodes (`node-1`..`node-K`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// The gateway's HTTP port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    gateway_port: u16,
    /// Replicas per key.
    #[arg(long, default_value_t = 3)]
    n: usize,
    /// Write quorum.
    #[arg(long, default_value_t = 2)]
    w: usize,
    /// Read quorum.
    #[arg(long, default_value_t = 2)]
    r: usize,
    /// Do not run `cargo build --release` first (use the binaries already built).
    #[arg(long)]
    no_build: bool,
}

#[derive(Args)]
struct NodeArg {
    /// `node-2` (or just `2`), or `gateway`.
    node: String,
}

#[derive(Args)]
struct DownArgs {
    /// Also delete `target/cluster/` (configs, logs and all data).
    #[arg(long)]
    wipe: bool,
}

pub(crate) fn run(args: &ClusterArgs) -> Result<(), String> {
    let dirs = Dirs::new();
    match &args.command {
        ClusterCmd::Up(a) => up(&dirs, a),
        ClusterCmd::Status => status(&dirs),
        ClusterCmd::Stop(a) => stop(&dirs, &a.node),
        ClusterCmd::Kill(a) => kill(&dirs, &a.node),
        ClusterCmd::Start(a) => start(&dirs, &a.node),
        ClusterCmd::Add => add(&dirs),
        ClusterCmd::Decommission(a) => decommission(&dirs, &a.node),
        ClusterCmd::Repair(a) => repair(&dirs, &a.node),
        ClusterCmd::Down(a) => down(&dirs, a.wipe),
    }
}

// ---------------------------------------------------------------- paths, state

struct Dirs {
    /// The workspace root (cargo runs from here).
    root: PathBuf,
    /// `target/` (or `$CARGO_TARGET_DIR`).
    target: PathBuf,
    /// `target/cluster/`.
    cluster: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(|| root.join("target"), |t| root.join(t));
        let cluster = target.join("cluster");
        Self {
            root,
            target,
            cluster,
        }
    }

    fn state_file(&self) -> PathBuf {
        self.cluster.join("state.json")
    }

    fn binary(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    /// `path` relative to the workspace root when it is inside it (for messages).
    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// What `target/cluster/state.json` records.
#[derive(Serialize, Deserialize)]
struct State {
    n: usize,
    w: usize,
    r: usize,
    /// `SHOAL_*` variables `up` was given, re-applied by `start` and `add`.
    env: BTreeMap<String, String>,
    gateway: Proc,
    nodes: Vec<Proc>,
}

/// One process of the cluster.
#[derive(Serialize, Deserialize, Clone)]
struct Proc {
    id: String,
    /// Binary name: `shoal-node` or `shoal-gateway`.
    binary: String,
    /// tarpc (gossip and replica RPC) address.
    listen: String,
    /// The gateway's HTTP address.
    http: Option<String>,
    config: PathBuf,
    log: PathBuf,
    data_dir: Option<PathBuf>,
    /// Last pid started; may be dead (see [`alive`]).
    pid: Option<u32>,
}

impl State {
    fn load(dirs: &Dirs) -> Result<Option<Self>, String> {
        let path = dirs.state_file();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                format!(
                    "{} is damaged ({e}); `cargo xtask cluster down --wipe` starts over",
                    dirs.show(&path)
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", dirs.show(&path))),
        }
    }

    fn load_required(dirs: &Dirs) -> Result<Self, String> {
        Self::load(dirs)?.ok_or_else(|| {
            "no cluster here (no target/cluster/state.json); start one with `cargo xtask cluster up`"
                .to_string()
        })
    }

    fn save(&self, dirs: &Dirs) -> Result<(), String> {
        let path = dirs.state_file();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        fs::write(&tmp, text + "\n")
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", dirs.show(&path)))
    }

    fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.nodes.iter().chain(std::iter::once(&self.gateway))
    }

    /// Finds `node-2`, `2` or `gateway`.
    fn find_mut(&mut self, name: &str) -> Result<&mut Proc, String> {
        if name == "gateway" || name == self.gateway.id {
            return Ok(&mut self.gateway);
        }
        let wanted = if name.chars().all(|c| c.is_ascii_digit()) {
            format!("node-{name}")
        } else {
            name.to_string()
        };
        let known: Vec<String> = self.procs().map(|p| p.id.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|p| p.id == wanted)
            .ok_or_else(|| {
                format!(
                    "no member {name:?} in this cluster (have: {})",
                    known.join(", ")
                )
            })
    }
}

// ---------------------------------------------------------------- processes

/// Whether `p`'s recorded pid is a live process running `p`'s config (a pid
/// reused by something else, or a zombie, counts as dead).
fn alive(p: &Proc) -> bool {
    let Some(pid) = p.pid else { return false };
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains(&p.binary) && cmdline.contains(&*p.config.to_string_lossy())
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let out = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .output()
        .map_err(|e| format!("cannot run `kill`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill -{sig} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn wait_dead(p: &Proc, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if !alive(p) {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    !alive(p)
}

/// Starts `p` detached: own process group, stdin closed, stdout and stderr
/// appended to its log. Returns the child and the log offset where this run begins.
fn spawn(dirs: &Dirs, p: &Proc, env: &BTreeMap<String, String>) -> Result<(Child, u64), String> {
    let binary = dirs.binary(&p.binary);
    if !binary.exists() {
        return Err(format!(
            "{} is not built; run `cargo xtask cluster up` (it builds) or `cargo build --release -p {}`",
            dirs.show(&binary),
            p.binary
        ));
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .map_err(|e| format!("cannot open {}: {e}", dirs.show(&p.log)))?;
    let offset = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(log, "=== xtask: starting {} (unix time {now}) ===", p.id)
        .map_err(|e| format!("cannot write {}: {e}", dirs.show(&p.log)))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", dirs.show(&p.log)))?;
    let mut cmd = Command::new(&binary);
    cmd.arg("--config")
        .arg(&p.config)
        .current_dir(&dirs.root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0);
    // Log files, not terminals: no colour codes in them.
    if std::env::var_os("NO_COLOR").is_none() {
        cmd.env("NO_COLOR", "1");
    }
    // Variables recorded by `up`, unless this shell sets them itself.
    for (k, v) in env {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", dirs.show(&binary)))?;
    Ok((child, offset))
}

/// What `log` holds from `offset` on.
fn log_since(log: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last lines of `log` from `offset` on.
fn tail(log: &Path, offset: u64) -> String {
    let text = log_since(log, offset);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

fn died_message(dirs: &Dirs, p: &Proc, status: std::process::ExitStatus, offset: u64) -> String {
    format!(
        "{} exited during start-up ({status}); last lines of {}:\n{}",
        p.id,
        dirs.show(&p.log),
        tail(&p.log, offset)
    )
}

// ---------------------------------------------------------------- ports, configs

fn port_free(addr: &str) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// `127.0.0.1:preferred` when free and not already `taken`, else a port the
/// kernel picks.
fn pick_port(preferred: u16, taken: &[String]) -> Result<String, String> {
    let addr = format!("127.0.0.1:{preferred}");
    if !taken.contains(&addr) && port_free(&addr) {
        return Ok(addr);
    }
    for _ in 0..16 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind a port: {e}"))?;
        let a = l
            .local_addr()
            .map_err(|e| format!("cannot bind a port: {e}"))?
            .to_string();
        if !taken.contains(&a) {
            return Ok(a);
        }
    }
    Err("cannot find a free port".into())
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

fn seeds_toml(seeds: &[String]) -> String {
    let items: Vec<String> = seeds.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

fn node_config(p: &Proc, seeds: &[String], s: &State) -> String {
    let data = p.data_dir.as_deref().unwrap_or(Path::new("data"));
    format!(
        "# Written by `cargo xtask cluster`; SHOAL_* environment variables override any key.\n\
         [member]\nid = {}\nlisten = {}\nadvertise = {}\nseeds = {}\nweight = 1\ndata_dir = {}\n\n\
         [replication]\nn = {}\nw = {}\nr = {}\n\n\
         [storage]\nsync = \"always\"\n\n\
         [log]\nfilter = \"info\"\n",
        toml_str(&p.id),
        toml_str(&p.listen),
        toml_str(&p.listen),
        seeds_toml(seeds),
        toml_str(&data.to_string_lossy()),
        s.n,
        s.w,
        s.r,
    )
}

fn gateway_config(p: &Proc, seeds: &[String], s: &State) -> String {
    let data = p.data_dir.as_deref().unwrap_or(Path::new("data"));
    format!(
        "# Written by `cargo xtask cluster`; SHOAL_* environment variables override any key.\n\
         [member]\nid = {}\nlisten = {}\nadvertise = {}\nseeds = {}\ndata_dir = {}\n\n\
         [replication]\nn = {}\nw = {}\nr = {}\n\n\
         [http]\nlisten = {}\n\n\
         [log]\nfilter = \"info\"\n",
        toml_str(&p.id),
        toml_str(&p.listen),
        toml_str(&p.listen),
        seeds_toml(seeds),
        toml_str(&data.to_string_lossy()),
        s.n,
        s.w,
        s.r,
        toml_str(p.http.as_deref().unwrap_or("127.0.0.1:8080")),
    )
}

fn node_proc(dirs: &Dirs, i: usize, listen: String) -> Proc {
    let id = format!("node-{i}");
    Proc {
        config: dirs.cluster.join(format!("{id}.toml")),
        log: dirs.cluster.join(format!("{id}.log")),
        data_dir: Some(dirs.cluster.join(&id).join("data")),
        binary: "shoal-node".into(),
        http: None,
        pid: None,
        listen,
        id,
    }
}

fn write_config(dirs: &Dirs, p: &Proc, text: &str) -> Result<(), String> {
    if let Some(d) = &p.data_dir {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", dirs.show(d)))?;
    }
    fs::write(&p.config, text).map_err(|e| format!("cannot write {}: {e}", dirs.show(&p.config)))
}

fn shoal_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("SHOAL_"))
        .collect()
}

// ---------------------------------------------------------------- HTTP

struct Response {
    status: u16,
    body: String,
}

/// A minimal HTTP/1.1 GET with `Connection: close` (enough for the gateway's
/// JSON endpoints; keeps xtask free of an HTTP client's dependency tree).
fn http_get(addr: &str, path: &str) -> Result<Response, String> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("{addr}{path}: malformed HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// What the gateway's `/v1/cluster` says, reduced to what xtask shows.
struct ClusterView {
    /// id -> (addr, role, status)
    members: BTreeMap<String, (String, String, String)>,
    ownership: BTreeMap<String, f64>,
    /// Members still receiving their ranges (no share of reads yet).
    joining: std::collections::BTreeSet<String>,
}

fn cluster_view(http: &str) -> Result<ClusterView, String> {
    let resp = http_get(http, "/v1/cluster")?;
    if resp.status != 200 {
        return Err(format!("/v1/cluster answered {}", resp.status));
    }
    let v: serde_json::Value =
        serde_json::from_str(&resp.body).map_err(|e| format!("/v1/cluster: {e}"))?;
    let text = |m: &serde_json::Value, k: &str| {
        m.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let members = v
        .get("members")
        .and_then(serde_json::Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        text(m, "id"),
                        (text(m, "addr"), text(m, "role"), text(m, "status")),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ownership = v
        .get("ownership")
        .and_then(serde_json::Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, s)| Some((k.clone(), s.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let joining = v
        .get("members")
        .and_then(serde_json::Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter(|m| m.get("joining").and_then(serde_json::Value::as_bool) == Some(true))
                .map(|m| text(m, "id"))
                .collect()
        })
        .unwrap_or_default();
    Ok(ClusterView {
        members,
        ownership,
        joining,
    })
}

fn member_alive(view: &ClusterView, id: &str) -> bool {
    view.members
        .get(id)
        .is_some_and(|(_, _, status)| status == "alive")
}

// ---------------------------------------------------------------- up

fn up(dirs: &Dirs, a: &UpArgs) -> Result<(), String> {
    if a.n == 0 || a.w == 0 || a.r == 0 || a.w > a.n || a.r > a.n {
        return Err(format!(
            "need 1 <= W <= N and 1 <= R <= N (got N={} W={} R={})",
            a.n, a.w, a.r
        ));
    }
    if let Some(state) = State::load(dirs)? {
        let live: Vec<&str> = state
            .procs()
            .filter(|p| alive(p))
            .map(|p| p.id.as_str())
            .collect();
        if !live.is_empty() {
            println!(
                "a cluster is already running ({} of {} processes alive: {}); nothing changed.\n\
                 gateway: http://{}\n\
                 `cargo xtask cluster status` shows it, `cargo xtask cluster down` stops it.",
                live.len(),
                state.nodes.len() + 1,
                live.join(", "),
                state.gateway.http.as_deref().unwrap_or("?"),
            );
            return Ok(());
        }
    }
    let http = format!("127.0.0.1:{}", a.gateway_port);
    if !port_free(&http) {
        return Err(format!(
            "gateway port {} is already taken (127.0.0.1:{}); free it or pass --gateway-port",
            a.gateway_port, a.gateway_port
        ));
    }
    if !a.no_build {
        let mut build = cargo();
        build.current_dir(&dirs.root).args([
            "build",
            "--release",
            "-p",
            "shoal-node",
            "-p",
            "shoal-gateway",
        ]);
        run_cmd(&mut build).map_err(|e| format!("building the release binaries failed: {e}"))?;
    }
    for binary in ["shoal-node", "shoal-gateway"] {
        let path = dirs.binary(binary);
        if !path.exists() {
            return Err(format!(
                "{} is not built (`cargo build --release -p {binary}`, or drop --no-build)",
                dirs.show(&path)
            ));
        }
    }
    fs::create_dir_all(&dirs.cluster)
        .map_err(|e| format!("cannot create {}: {e}", dirs.show(&dirs.cluster)))?;

    // Ports: the gateway's gossip port first, then one per node.
    let mut taken = vec![http.clone()];
    let gossip = pick_port(BASE_PORT, &taken)?;
    taken.push(gossip.clone());
    let mut nodes = Vec::new();
    for i in 1..=usize::from(a.nodes) {
        let preferred = BASE_PORT.saturating_add(u16::try_from(i).unwrap_or(0));
        let listen = pick_port(preferred, &taken)?;
        taken.push(listen.clone());
        nodes.push(node_proc(dirs, i, listen));
    }
    let gateway = Proc {
        id: GATEWAY_ID.into(),
        binary: "shoal-gateway".into(),
        listen: gossip,
        http: Some(http.clone()),
        config: dirs.cluster.join("gateway.toml"),
        log: dirs.cluster.join("gateway.log"),
        data_dir: Some(dirs.cluster.join("gateway")),
        pid: None,
    };
    let mut state = State {
        n: a.n,
        w: a.w,
        r: a.r,
        env: shoal_env(),
        gateway,
        nodes,
    };
    let seeds: Vec<String> = state.nodes.iter().map(|p| p.listen.clone()).collect();
    for p in &state.nodes {
        write_config(dirs, p, &node_config(p, &seeds, &state))?;
    }
    write_config(
        dirs,
        &state.gateway,
        &gateway_config(&state.gateway, &seeds, &state),
    )?;

    // Start everything, recording each pid as soon as it exists so a failure
    // part-way leaves a state that `down` can clean up.
    let mut children: Vec<(usize, Child, u64)> = Vec::new();
    let count = state.nodes.len();
    for i in 0..=count {
        let p = if i < count {
            &mut state.nodes[i]
        } else {
            &mut state.gateway
        };
        let (child, offset) = match spawn(dirs, p, &state.env) {
            Ok(c) => c,
            Err(e) => {
                state.save(dirs)?;
                teardown(dirs, &mut state, children);
                return Err(e);
            }
        };
        p.pid = Some(child.id());
        children.push((i, child, offset));
    }
    state.save(dirs)?;
    eprintln!(
        "started {} nodes and the gateway; waiting (up to {} s) for http://{http}/health and every node alive",
        count,
        UP_DEADLINE.as_secs()
    );

    let until = Instant::now() + UP_DEADLINE;
    let mut last: String;
    loop {
        for (i, child, offset) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                let p = if *i < count {
                    state.nodes[*i].clone()
                } else {
                    state.gateway.clone()
                };
                let msg = died_message(dirs, &p, status, *offset);
                teardown(dirs, &mut state, children);
                return Err(msg);
            }
        }
        match ready(&http, &state) {
            Ok(()) => break,
            Err(e) => last = e,
        }
        if Instant::now() >= until {
            teardown(dirs, &mut state, children);
            return Err(format!(
                "the cluster was not ready within {} s: {last}; logs in {}",
                UP_DEADLINE.as_secs(),
                dirs.show(&dirs.cluster)
            ));
        }
        sleep(Duration::from_millis(250));
    }
    // The children outlive us (own process group); dropping a Child neither
    // kills nor waits for it.
    drop(children);
    print_summary(dirs, &state);
    Ok(())
}

/// `Ok` once `/health` is 200 and `/v1/cluster` lists every node alive.
fn ready(http: &str, state: &State) -> Result<(), String> {
    let health = http_get(http, "/health")?;
    if health.status != 200 {
        return Err(format!(
            "/health answered {}: {}",
            health.status,
            health.body.trim()
        ));
    }
    let view = cluster_view(http)?;
    let missing: Vec<&str> = state
        .nodes
        .iter()
        .filter(|p| !member_alive(&view, &p.id))
        .map(|p| p.id.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not yet alive in /v1/cluster: {}",
            missing.join(", ")
        ))
    }
}

/// Stops what a failed `up` started, keeping the logs.
fn teardown(dirs: &Dirs, state: &mut State, children: Vec<(usize, Child, u64)>) {
    for (_, mut child, _) in children {
        let _ = signal(child.id(), "TERM");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    for p in state
        .nodes
        .iter_mut()
        .chain(std::iter::once(&mut state.gateway))
    {
        p.pid = None;
    }
    let _ = state.save(dirs);
    eprintln!(
        "stopped the processes this `up` started; configs and logs stay in {}",
        dirs.show(&dirs.cluster)
    );
}

fn print_summary(dirs: &Dirs, state: &State) {
    let http = state.gateway.http.as_deref().unwrap_or("?");
    println!(
        "Shoal cluster up: {} nodes, N={} W={} R={}",
        state.nodes.len(),
        state.n,
        state.w,
        state.r
    );
    if !state.env.is_empty() {
        let vars: Vec<String> = state.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("environment given to every process: {}", vars.join(" "));
    }
    println!();
    println!(
        "  gateway   http://{http}   (gossip {}, pid {})",
        state.gateway.listen,
        pid_text(&state.gateway)
    );
    for p in &state.nodes {
        println!("  {:<9} {:<22} pid {}", p.id, p.listen, pid_text(p));
    }
    println!();
    println!(
        "configs, logs ({{node-i,gateway}}.log) and data: {}/",
        dirs.show(&dirs.cluster)
    );
    println!("try:   curl -i -X PUT --data-binary hello http://{http}/v1/kv/greeting");
    println!("       curl -i http://{http}/v1/kv/greeting");
    println!("then:  cargo xtask cluster status | kill node-2 | start node-2 | down");
}

fn pid_text(p: &Proc) -> String {
    p.pid.map_or_else(|| "-".into(), |pid| pid.to_string())
}

// ---------------------------------------------------------------- status

fn status(dirs: &Dirs) -> Result<(), String> {
    let state = State::load_required(dirs)?;
    let http = state.gateway.http.clone().unwrap_or_default();
    let view = if alive(&state.gateway) {
        cluster_view(&http)
    } else {
        Err("the gateway is not running".into())
    };
    let gateway_state = if alive(&state.gateway) {
        match http_get(&http, "/health") {
            Ok(r) if r.status == 200 => "ok".to_string(),
            Ok(r) => format!("unhealthy ({})", r.status),
            Err(e) => format!("unreachable ({e})"),
        }
    } else {
        "not running".into()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gateway http://{http}: {gateway_state}; N={} W={} R={}",
        state.n, state.w, state.r
    );
    if let Err(e) = &view {
        let _ = writeln!(out, "(no membership view: {e})");
    }
    out.push('\n');
    let mut rows = vec![[
        "NODE".to_string(),
        "ADDRESS".into(),
        "STATUS".into(),
        "OWNERSHIP".into(),
        "PID".into(),
    ]];
    for p in state.procs() {
        let status = if !alive(p) {
            match view.as_ref().ok().and_then(|v| v.members.get(&p.id)) {
                Some(m) => format!("not running (gateway: {})", m.2),
                None => "not running".to_string(),
            }
        } else {
            match &view {
                Ok(v) => v
                    .members
                    .get(&p.id)
                    .map_or_else(|| "running, not a member yet".into(), |m| m.2.clone()),
                Err(_) => "running".into(),
            }
        };
        let joining = view.as_ref().is_ok_and(|v| v.joining.contains(&p.id));
        let share = view
            .as_ref()
            .ok()
            .and_then(|v| v.ownership.get(&p.id))
            .map_or_else(
                || {
                    if joining {
                        "joining".into()
                    } else {
                        "-".into()
                    }
                },
                |s| format!("{:.1}%", s * 100.0),
            );
        let address = p
            .http
            .as_ref()
            .map_or_else(|| p.listen.clone(), |h| format!("{} (http {h})", p.listen));
        let pid = if alive(p) { pid_text(p) } else { "-".into() };
        rows.push([p.id.clone(), address, status, share, pid]);
    }
    // Members the gateway knows that this state file does not (started elsewhere).
    if let Ok(v) = &view {
        for (id, (addr, _, status)) in &v.members {
            if state.procs().all(|p| &p.id != id) {
                let share = v
                    .ownership
                    .get(id)
                    .map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0));
                rows.push([id.clone(), addr.clone(), status.clone(), share, "-".into()]);
            }
        }
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    // Not println!: `status | head` must not panic on a closed pipe.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

// ---------------------------------------------------------------- stop, kill, start, add, down

fn stop(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?;
    if !alive(p) {
        println!("{} is not running", p.id);
        return Ok(());
    }
    let pid = p.pid.unwrap_or_default();
    signal(pid, "TERM")?;
    if !wait_dead(p, STOP_DEADLINE) {
        return Err(format!(
            "{} (pid {pid}) is still running {} s after SIGTERM; `cargo xtask cluster kill {}` ends it",
            p.id,
            STOP_DEADLINE.as_secs(),
            p.id
        ));
    }
    println!("{} stopped (SIGTERM, pid {pid})", p.id);
    p.pid = None;
    state.save(dirs)
}

fn kill(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?;
    if !alive(p) {
        println!("{} is not running", p.id);
        return Ok(());
    }
    let pid = p.pid.unwrap_or_default();
    signal(pid, "KILL")?;
    if !wait_dead(p, Duration::from_secs(5)) {
        return Err(format!("{} (pid {pid}) survived SIGKILL", p.id));
    }
    println!("{} killed (SIGKILL, pid {pid})", p.id);
    p.pid = None;
    state.save(dirs)
}

fn start(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let env = state.env.clone();
    let p = state.find_mut(name)?;
    if alive(p) {
        println!("{} is already running (pid {})", p.id, pid_text(p));
        return Ok(());
    }
    let proc_copy = p.clone();
    let (child, offset) = spawn(dirs, &proc_copy, &env)?;
    p.pid = Some(child.id());
    let id = p.id.clone();
    state.save(dirs)?;
    wait_started(dirs, &state, &id, child, offset)
}

/// Waits until `id` is alive in the gateway's view (or, for the gateway itself
/// or with no gateway running, until its process has stayed up for a while).
fn wait_started(
    dirs: &Dirs,
    state: &State,
    id: &str,
    mut child: Child,
    offset: u64,
) -> Result<(), String> {
    let p = state
        .procs()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| format!("{id} vanished from the state"))?;
    let http = state.gateway.http.clone().unwrap_or_default();
    let is_gateway = p.id == state.gateway.id;
    let gateway_up = !is_gateway && alive(&state.gateway);
    let until = Instant::now() + START_DEADLINE;
    let settle = Instant::now() + Duration::from_secs(2);
    let mut last = String::from("no answer yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(died_message(dirs, &p, status, offset));
        }
        let listening = is_gateway || log_since(&p.log, offset).contains(" listening on ");
        let ok = if !listening {
            last = "no \"listening on\" line in its log yet".into();
            false
        } else if is_gateway {
            match http_get(&http, "/health") {
                Ok(r) if r.status == 200 => true,
                Ok(r) => {
                    last = format!("/health answered {}", r.status);
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        } else if gateway_up {
            match cluster_view(&http) {
                Ok(v) if member_alive(&v, id) => true,
                Ok(_) => {
                    last = format!("{id} not yet alive in /v1/cluster");
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        } else {
            Instant::now() >= settle
        };
        if ok {
            println!(
                "{id} started (pid {}, {}); log: {}",
                child.id(),
                p.listen,
                dirs.show(&p.log)
            );
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "{id} (pid {}) is running but not ready after {} s: {last}; log: {}",
                child.id(),
                START_DEADLINE.as_secs(),
                dirs.show(&p.log)
            ));
        }
        sleep(Duration::from_millis(250));
    }
}

fn add(dirs: &Dirs) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let i = state
        .nodes
        .iter()
        .filter_map(|p| p.id.strip_prefix("node-")?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let taken: Vec<String> = state
        .procs()
        .flat_map(|p| std::iter::once(p.listen.clone()).chain(p.http.clone()))
        .collect();
    let preferred = BASE_PORT.saturating_add(u16::try_from(i).unwrap_or(0));
    let listen = pick_port(preferred, &taken)?;
    let p = node_proc(dirs, i, listen);
    // Same seeds as everyone else: the original nodes.
    let seeds: Vec<String> = state.nodes.iter().map(|n| n.listen.clone()).collect();
    // `join = true`: stream the gained ranges before serving reads for them.
    let config =
        node_config(&p, &seeds, &state).replacen("[member]\n", "[member]\njoin = true\n", 1);
    write_config(dirs, &p, &config)?;
    let (child, offset) = spawn(dirs, &p, &state.env)?;
    let id = p.id.clone();
    state.nodes.push(Proc {
        pid: Some(child.id()),
        ..p
    });
    state.save(dirs)?;
    wait_started(dirs, &state, &id, child, offset)?;
    wait_joined(&state, &id)
}

/// How long `add` waits for a new node to receive its ranges.
const JOIN_DEADLINE: Duration = Duration::from_secs(600);

/// Waits until the gateway shows `id` as no longer joining.
fn wait_joined(state: &State, id: &str) -> Result<(), String> {
    let Some(http) = state.gateway.http.clone().filter(|_| alive(&state.gateway)) else {
        println!("{id} is joining; no gateway runs to watch it finish (see its log)");
        return Ok(());
    };
    let until = Instant::now() + JOIN_DEADLINE;
    let started = Instant::now();
    loop {
        let joining = http_get(&http, "/v1/cluster").ok().and_then(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            v.get("members")?
                .as_array()?
                .iter()
                .find(|m| m.get("id").and_then(serde_json::Value::as_str) == Some(id))?
                .get("joining")?
                .as_bool()
        });
        if joining == Some(false) {
            println!(
                "{id} joined: it received its ranges in {:.1} s and now serves reads",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "{id} is still joining after {} s; its log says why",
                JOIN_DEADLINE.as_secs()
            ));
        }
        sleep(Duration::from_millis(250));
    }
}

/// Runs `shoal-admin COMMAND ADDR` for a running node and passes its output on.
fn admin(dirs: &Dirs, command: &str, p: &Proc) -> Result<(), String> {
    let binary = dirs.binary("shoal-admin");
    if !binary.exists() {
        return Err(format!(
            "{} is not built; `cargo build --release -p shoal-node` builds it",
            dirs.show(&binary)
        ));
    }
    let status = Command::new(&binary)
        .args([command, p.listen.as_str()])
        .status()
        .map_err(|e| format!("cannot run {}: {e}", dirs.show(&binary)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command} of {} failed ({status})", p.id))
    }
}

fn repair(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?.clone();
    if p.binary != "shoal-node" {
        return Err(format!("{} is not a storage node", p.id));
    }
    if !alive(&p) {
        return Err(format!("{} is not running", p.id));
    }
    admin(dirs, "repair", &p)
}

fn decommission(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?.clone();
    if p.binary != "shoal-node" {
        return Err(format!("{} is not a storage node", p.id));
    }
    if !alive(&p) {
        return Err(format!("{} is not running", p.id));
    }
    admin(dirs, "decommission", &p)?;
    if !wait_dead(&p, STOP_DEADLINE) {
        return Err(format!(
            "{} handed its ranges over but is still running {} s later",
            p.id,
            STOP_DEADLINE.as_secs()
        ));
    }
    println!("{} left the ring and stopped", p.id);
    state.find_mut(name)?.pid = None;
    state.save(dirs)
}

fn down(dirs: &Dirs, wipe: bool) -> Result<(), String> {
    if let Some(mut state) = State::load(dirs)? {
        let live: Vec<Proc> = state.procs().filter(|p| alive(p)).cloned().collect();
        for p in &live {
            if let Some(pid) = p.pid {
                let _ = signal(pid, "TERM");
            }
        }
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until && live.iter().any(alive) {
            sleep(Duration::from_millis(100));
        }
        for p in live.iter().filter(|p| alive(p)) {
            if let Some(pid) = p.pid {
                eprintln!(
                    "{} (pid {pid}) still running {} s after SIGTERM; sending SIGKILL",
                    p.id,
                    STOP_DEADLINE.as_secs()
                );
                let _ = signal(pid, "KILL");
            }
        }
        for p in &live {
            if !wait_dead(p, Duration::from_secs(5)) {
                return Err(format!("{} (pid {:?}) would not die", p.id, p.pid));
            }
        }
        for p in state
            .nodes
            .iter_mut()
            .chain(std::iter::once(&mut state.gateway))
        {
            p.pid = None;
        }
        if !wipe {
            state.save(dirs)?;
        }
        println!("stopped {} processes", live.len());
    } else {
        println!("no cluster is running");
    }
    if wipe && dirs.cluster.exists() {
        fs::remove_dir_all(&dirs.cluster)
            .map_err(|e| format!("cannot delete {}: {e}", dirs.show(&dirs.cluster)))?;
        println!("deleted {}", dirs.show(&dirs.cluster));
    }
    Ok(())
}

// ---------------------------------------------------------------- for `cargo xtask bench`

/// `up` in `dir` instead of `target/cluster/`, so a benchmark never touches the
/// cluster a user runs; returns the gateway's HTTP address.
pub(crate) fn up_at(
    dir: &Path,
    nodes: u16,
    gateway_port: u16,
    (n, w, r): (usize, usize, usize),
    no_build: bool,
) -> Result<String, String> {
    let dirs = Dirs {
        cluster: dir.to_path_buf(),
        ..Dirs::new()
    };
    let args = UpArgs {
        nodes,
        gateway_port,
        n,
        w,
        r,
        no_build,
    };
    up(&dirs, &args)?;
    State::load_required(&dirs)?
        .gateway
        .http
        .ok_or_else(|| "the cluster state has no gateway address".into())
}

/// `down --wipe` for a cluster [`up_at`] started.
pub(crate) fn down_at(dir: &Path) -> Result<(), String> {
    let dirs = Dirs {
        cluster: dir.to_path_buf(),
        ..Dirs::new()
    };
    down(&dirs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn configs_use_only_schema_keys_and_quote_strings() {
        let dirs = Dirs::new();
        let p = node_proc(&dirs, 2, "127.0.0.1:7102".into());
        let state = State {
            n: 3,
            w: 2,
            r: 2,
            env: BTreeMap::new(),
            gateway: p.clone(),
            nodes: vec![p.clone()],
        };
        let text = node_config(
            &p,
            &["127.0.0.1:7101".into(), "127.0.0.1:7102".into()],
            &state,
        );
        assert!(text.contains("id = \"node-2\""));
        assert!(text.contains("seeds = [\"127.0.0.1:7101\", \"127.0.0.1:7102\"]"));
        assert!(text.contains("[replication]\nn = 3\nw = 2\nr = 2"));
    }
}
