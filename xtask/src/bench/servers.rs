//! The systems under test, started and stopped by the bench: a Shoal cluster of
//! its own (through `crate::cluster`, in `target/bench/cluster/`, with a
//! cluster secret of its own there, so a cluster the user runs in
//! `target/cluster/` is left alone), Redis and a 3-member etcd
//! cluster. Each is a guard whose `Drop` stops what it started, so an error or
//! an interrupt part-way never leaves processes behind.

use std::fs::{self, File};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{interrupted, proto};
use crate::{cluster, http};

/// How long Redis and etcd get to answer after their start.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Bound on one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a process gets after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// `target/bench/` (or under `$CARGO_TARGET_DIR`).
pub(crate) fn bench_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |t| root.join(t))
        .join("bench")
}

/// The path of `binary` on `$PATH`, or an error naming the Debian package.
pub(crate) fn require(binary: &str, package: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "`{binary}` is not installed; --compare needs the Debian package `{package}` \
                 (apt-get install -y {package})"
            )
        })
}

/// A free port on 127.0.0.1 (the kernel's pick; released at once, so a small
/// race with other processes remains, caught by the readiness check).
pub(crate) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind a port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind a port: {e}"))
}

fn fresh_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("cannot delete {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
        let _ = f.read_to_string(&mut text);
    }
    text.lines().map(|l| format!("    | {l}\n")).collect()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// One GET on a fresh connection, bounded by `PROBE_TIMEOUT`.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Result<http::Response, String> {
    http_get_with(addr, path, &[]).await
}

/// [`http_get`] with extra request headers.
pub(crate) async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response, String> {
    let get = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(&http::request("GET", path, "bench", headers, b""))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        loop {
            if let Some((r, _)) = http::parse_response(&buf)? {
                return Ok(r);
            }
            if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, get)
        .await
        .map_err(|_| format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))?
}

/// Processes the bench started (Redis or etcd members), stopped on drop.
pub(crate) struct Service {
    name: String,
    children: Vec<(Child, PathBuf)>,
}

impl Service {
    /// The processes' ids, for CPU accounting.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _)| c.id()).collect()
    }

    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            children: Vec::new(),
        }
    }

    /// Starts `cmd` in its own process group (so a Ctrl-C reaches the bench,
    /// which stops it in order), output to `log`.
    fn spawn(&mut self, mut cmd: Command, log: PathBuf) -> Result<(), String> {
        let out =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.name))?;
        self.children.push((child, log));
        Ok(())
    }

    /// An error when a process already exited, with its log's tail.
    fn check_running(&mut self) -> Result<(), String> {
        for (child, log) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited during start-up ({status}); end of {}:\n{}",
                    self.name,
                    log.display(),
                    tail(log)
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for (child, _) in &self.children {
            signal(child.id(), "TERM");
        }
        let until = Instant::now() + STOP_DEADLINE;
        for (child, _) in &mut self.children {
            while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "{} (pid {}) ignored SIGTERM; killing it",
                    self.name,
                    child.id()
                );
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Polls `probe` every 100 ms until it succeeds, the service dies, the
/// deadline passes or the bench is interrupted.
async fn wait_ready<F, Fut>(svc: &mut Service, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let until = Instant::now() + READY_DEADLINE;
    loop {
        svc.check_running()?;
        let last = match tokio::time::timeout(Duration::from_secs(2), probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "no answer within 2 s".into(),
        };
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() >= until {
            return Err(format!(
                "{} not ready within {} s: {last}",
                svc.name,
                READY_DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis with persistence `appendfsync always` (`durable`) or none at all.
pub(crate) async fn redis(durable: bool) -> Result<(Service, SocketAddr), String> {
    let binary = require("redis-server", "redis-server")?;
    let name = if durable { "redis-always" } else { "redis" };
    let dir = bench_dir().join(name);
    fresh_dir(&dir)?;
    let port = free_port()?;
    let mut cmd = Command::new(binary);
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
    ])
    .args(["--daemonize", "no", "--dir"])
    .arg(&dir);
    if durable {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    let mut svc = Service::new(name);
    svc.spawn(cmd, dir.join("redis.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(&mut svc, || async move {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(&proto::command(&[b"PING"]))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        match proto::parse_reply(&buf[..n])? {
            Some((proto::Reply::Simple(p), _)) if p == "PONG" => Ok(()),
            other => Err(format!("PING answered {other:?}")),
        }
    })
    .await?;
    Ok((svc, addr))
}

/// Three etcd members on loopback, each with its own data dir (WAL fsync on,
/// etcd's only mode); returns their client addresses.
pub(crate) async fn etcd() -> Result<(Service, Vec<SocketAddr>), String> {
    let binary = require("etcd", "etcd-server")?;
    let dir = bench_dir().join("etcd");
    fresh_dir(&dir)?;
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
    let client = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let initial: Vec<String> = (0..3).map(|i| format!("m{i}={}", peer(i))).collect();
    let mut svc = Service::new("etcd");
    for i in 0..3 {
        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--name=m{i}"))
            .arg(format!(
                "--data-dir={}",
                dir.join(format!("m{i}")).display()
            ))
            .arg(format!("--listen-client-urls={}", client(i)))
            .arg(format!("--advertise-client-urls={}", client(i)))
            .arg(format!("--listen-peer-urls={}", peer(i)))
            .arg(format!("--initial-advertise-peer-urls={}", peer(i)))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .args([
                "--initial-cluster-state=new",
                "--initial-cluster-token=shoal-bench",
                "--logger=zap",
                "--log-level=warn",
            ]);
        svc.spawn(cmd, dir.join(format!("m{i}.log")))?;
    }
    let addrs: Vec<SocketAddr> = ports[..3]
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    for &addr in &addrs {
        wait_ready(&mut svc, || async move {
            let r = http_get(addr, "/health").await?;
            let body = String::from_utf8_lossy(&r.body);
            if r.status == 200 && body.contains("true") {
                Ok(())
            } else {
                Err(format!("/health answered {}: {body}", r.status))
            }
        })
        .await?;
    }
    Ok((svc, addrs))
}

/// A Shoal cluster the bench started; `cargo xtask cluster down --wipe` semantics on drop.
pub(crate) struct ShoalCluster {
    dir: PathBuf,
}

impl ShoalCluster {
    /// The gateway's Redis protocol address, from the cluster's `state.json`.
    pub(crate) fn resp_addr(&self) -> Option<SocketAddr> {
        let text = fs::read_to_string(self.dir.join("state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("gateway")?.get("resp")?.as_str()?.parse().ok()
    }

    /// The nodes' and the gateway's pids, from the cluster's `state.json`.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let Ok(text) = fs::read_to_string(self.dir.join("state.json")) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        let pid = |p: &serde_json::Value| {
            p.get("pid")
                .and_then(serde_json::Value::as_u64)
                .and_then(|x| u32::try_from(x).ok())
        };
        let nodes = v.get("nodes").and_then(serde_json::Value::as_array);
        nodes
            .into_iter()
            .flatten()
            .chain(v.get("gateway"))
            .filter_map(pid)
            .collect()
    }
}

/// Linux's `USER_HZ`: the unit of `/proc/<pid>/stat` CPU times (100 on every
/// architecture Shoal runs on; fixed by the kernel ABI, not `CONFIG_HZ`).
const USER_HZ: u64 = 100;

/// CPU time (user + system, all threads) `pids` have used so far; processes
/// that are gone count as zero.
pub(crate) fn cpu_time(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|t| stat_ticks(&t))
        .sum();
    Duration::from_millis(ticks * (1000 / USER_HZ))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line; the command
/// name in parentheses may itself hold spaces and parentheses.
fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Drop for ShoalCluster {
    fn drop(&mut self) {
        if let Err(e) = cluster::down_at(&self.dir) {
            eprintln!("stopping the bench's Shoal cluster failed: {e}");
        }
    }
}

/// Starts `nodes` nodes and a gateway (N/W/R as given, `sync = "always"` as
/// `cluster up` writes it), building the release binaries unless `no_build`.
pub(crate) async fn shoal(
    nodes: u16,
    nwr: (usize, usize, usize),
    no_build: bool,
    callgrind: Option<PathBuf>,
) -> Result<(ShoalCluster, SocketAddr, String), String> {
    let dir = bench_dir().join("cluster");
    // A cluster left by an earlier bench that was killed is stopped first.
    cluster::down_at(&dir)?;
    let port = free_port()?;
    let guard = ShoalCluster { dir: dir.clone() };
    // `up` is blocking (bounded by its own deadline); the guard is created
    // first so that whatever it started is stopped even when it fails.
    let http = tokio::task::spawn_blocking(move || {
        cluster::up_at(&dir, nodes, port, nwr, no_build, callgrind.as_deref())
    })
    .await
    .map_err(|e| format!("cluster start-up task failed: {e}"))??;
    let addr = http
        .parse()
        .map_err(|e| format!("gateway address {http:?}: {e}"))?;
    // Clients authenticate as they would in production: with a token in the
    // file, the gateway checks one on every request (no anonymous access).
    let token = cluster::add_token_at(&guard.dir, "bench", "read,write")?;
    let bearer = format!("Bearer {token}");
    wait_for_token(addr, &bearer).await?;
    Ok((guard, addr, bearer))
}

/// Waits until the gateway has reloaded its tokens file (it does within a
/// second or two): a request without the token is refused, one with it
/// accepted.
async fn wait_for_token(addr: SocketAddr, bearer: &str) -> Result<(), String> {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = http_get(addr, "/v1/cluster").await.map(|r| r.status == 401);
        let accepted = http_get_with(addr, "/v1/cluster", &[("Authorization", bearer)])
            .await
            .map(|r| r.status == 200);
        if refused == Ok(true) && accepted == Ok(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            return Err(format!(
                "the gateway did not take the bench's token within 10 s \
                 (anonymous refused: {refused:?}, token accepted: {accepted:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime() {
        let line = "4242 (tokio rt (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 9 0 100 1000 100";
        assert_eq!(stat_ticks(line), Some(175));
        assert_eq!(stat_ticks("4242 (x) S 1"), None);
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        // Coarse (10 ms ticks): only check that it parses and is sane.
        assert!(cpu_time(&[me]) < Duration::from_secs(3600));
        assert_eq!(cpu_time(&[u32::MAX]), Duration::ZERO);
    }
}
