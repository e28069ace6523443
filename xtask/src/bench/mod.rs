//! `cargo xtask bench`: an HTTP load generator against a Shoal cluster, and with
//! `--compare` the same workload against Redis and etcd in the same run.
//!
//! Layout: `proto` (RESP parsing and Shoal's error bodies, pure; HTTP/1.1 is
//! [`crate::http`], shared with `cargo xtask cluster`), `hist` (latency
//! histogram, pure), `load` (closed-loop clients, progress line, idle latency),
//! `servers` (starting and stopping the systems under test). This file parses
//! the arguments, runs the phases and prints the report.

mod callgrind;
mod hist;
mod listing;
mod load;
mod proto;
mod resp;
mod servers;

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use hist::Histogram;
use load::{Client, Keys, LoadTarget, Mix, Stats};

/// Set by Ctrl-C or SIGTERM: phases end early and everything started is stopped.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Set in the environment of the release build the bench re-runs itself as.
const RELEASE_ENV: &str = "XTASK_BENCH_RELEASE";

/// Arguments of `cargo xtask bench`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent clients, each with its own keep-alive connection (closed loop).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Distinct keys, written once before the timed phases (at least --clients).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of reads in one mixed phase (0..=1). Without it: a write-only
    /// phase, then a read-only phase.
    #[arg(long)]
    read_ratio: Option<f64>,
    /// Replicas per key of the cluster the bench starts (default 3).
    #[arg(long)]
    n: Option<usize>,
    /// Write quorum (default 2; with --url, sent as `?w=` on every PUT).
    #[arg(long)]
    w: Option<usize>,
    /// Read quorum (default 2; with --url, sent as `?r=` on every GET).
    #[arg(long)]
    r: Option<usize>,
    /// Storage nodes of the cluster the bench starts.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// A running gateway (`http://127.0.0.1:8080`) instead of a cluster of the bench's own.
    #[arg(long)]
    url: Option<String>,
    /// Also run the workload against Redis (appendfsync always, and no
    /// persistence) and a 3-member etcd cluster, started by the bench; print one
    /// table with the ratios.
    #[arg(long)]
    compare: bool,
    /// Sequential PUTs and GETs (and loopback echoes) for the idle-latency
    /// figures before the load; 0 skips them.
    #[arg(long, default_value_t = 1000)]
    idle_samples: usize,
    /// Worker threads of the load generator (it shares the cores with the servers).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Do not build the release binaries first (use those already built).
    #[arg(long)]
    no_build: bool,
    /// With --url: the client token to send (`Authorization: Bearer`). The
    /// bench's own cluster always gets a token of its own.
    #[arg(long)]
    token: Option<String>,
    /// Instead of the workload: write --keys keys to one bucket and 10 to
    /// another, then time listing each (keys/s, server CPU per key and per
    /// listing).
    #[arg(long)]
    listing: bool,
    /// Instead of the workload: `redis-benchmark -t set,get` against Shoal
    /// over RESP and against Redis (always and no persistence), with and
    /// without `-P 16`, and the servers' CPU per operation.
    #[arg(long)]
    resp: bool,
    /// With --resp: requests per redis-benchmark test (`-n`).
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Run the cluster's processes under callgrind and print the instructions
    /// they execute per operation (needs valgrind; about 50x slower, so use a
    /// small --keys and no idle samples). Stable across runs where CPU time
    /// is not; compare builds with each other in this mode only.
    #[arg(long)]
    instructions: bool,
}

/// Where the Shoal workload goes.
#[derive(Debug, PartialEq)]
enum ShoalAt {
    /// A cluster the bench starts: nodes, (N, W, R).
    Own(u16, (usize, usize, usize)),
    /// A running gateway, and the query strings of PUTs (`?w=`) and GETs (`?r=`).
    Url(SocketAddr, String, String),
}

/// Validated arguments.
#[derive(Debug)]
struct Plan {
    duration: Duration,
    clients: usize,
    keys: usize,
    value_size: usize,
    /// (label, read ratio) per timed phase.
    phases: Vec<(&'static str, f64)>,
    shoal: ShoalAt,
    compare: bool,
    idle_samples: usize,
    threads: usize,
    no_build: bool,
    token: Option<String>,
    listing: bool,
    resp: bool,
    requests: usize,
    instructions: bool,
}

fn plan(a: &BenchArgs) -> Result<Plan, String> {
    if a.duration == 0 || a.duration > 3600 {
        return Err(format!(
            "--duration must be 1..=3600 s (got {})",
            a.duration
        ));
    }
    if a.clients == 0 || a.clients > 10_000 {
        return Err(format!("--clients must be 1..=10000 (got {})", a.clients));
    }
    if a.keys < a.clients || a.keys > 10_000_000 {
        return Err(format!(
            "--keys must be at least --clients ({}) and at most 10000000 (got {}): every client writes keys of its own",
            a.clients, a.keys
        ));
    }
    if a.value_size == 0 || a.value_size > 1_000_000 {
        return Err(format!(
            "--value-size must be 1..=1000000 bytes (got {}; etcd caps requests at 1.5 MiB)",
            a.value_size
        ));
    }
    if a.resp && (a.requests == 0 || a.requests > 100_000_000) {
        return Err(format!(
            "--requests must be 1..=100000000 (got {})",
            a.requests
        ));
    }
    if a.instructions && (a.url.is_some() || a.compare || a.listing || a.resp) {
        return Err(
            "--instructions counts a cluster the bench starts: it cannot go with --url, --compare, --listing or --resp".into(),
        );
    }
    if a.threads == 0 || a.threads > 64 {
        return Err(format!("--threads must be 1..=64 (got {})", a.threads));
    }
    let phases = match a.read_ratio {
        None => vec![("writes", 0.0), ("reads", 1.0)],
        Some(f) if (0.0..=1.0).contains(&f) => vec![("mixed", f)],
        Some(f) => return Err(format!("--read-ratio must be within 0..=1 (got {f})")),
    };
    let shoal = match &a.url {
        Some(url) => {
            if a.n.is_some() {
                return Err("--n sets up the cluster the bench starts; with --url the running cluster's N holds".into());
            }
            let mut query = [String::new(), String::new()];
            for (slot, name, v) in [(0, "w", a.w), (1, "r", a.r)] {
                match v {
                    Some(0) => return Err(format!("--{name} must be at least 1")),
                    Some(v) => query[slot] = format!("?{name}={v}"),
                    None => {}
                }
            }
            let [put_query, get_query] = query;
            ShoalAt::Url(parse_url(url)?, put_query, get_query)
        }
        None => {
            let (n, w, r) = (a.n.unwrap_or(3), a.w.unwrap_or(2), a.r.unwrap_or(2));
            if n == 0 || w == 0 || r == 0 || w > n || r > n {
                return Err(format!(
                    "need 1 <= W <= N and 1 <= R <= N (got N={n} W={w} R={r})"
                ));
            }
            if a.nodes == 0 || a.nodes > 64 || usize::from(a.nodes) < n {
                return Err(format!(
                    "--nodes must be 1..=64 and at least N={n} (got {})",
                    a.nodes
                ));
            }
            ShoalAt::Own(a.nodes, (n, w, r))
        }
    };
    Ok(Plan {
        duration: Duration::from_secs(a.duration),
        clients: a.clients,
        keys: a.keys,
        value_size: a.value_size,
        phases,
        shoal,
        compare: a.compare,
        idle_samples: a.idle_samples.min(1_000_000),
        threads: a.threads,
        no_build: a.no_build,
        token: a.token.clone(),
        listing: a.listing,
        resp: a.resp,
        requests: a.requests,
        instructions: a.instructions,
    })
}

/// `http://host:port[/]` or `host:port`; HTTPS and paths are refused.
fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return Err(format!("--url {url:?}: only http:// is supported"));
    }
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') {
        return Err(format!(
            "--url {url:?}: give the gateway's base URL, without a path"
        ));
    }
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: no address"))
}

pub(crate) fn run(args: &BenchArgs) -> Result<(), String> {
    let plan = plan(args)?;
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_ENV).is_none() {
        return rerun_in_release();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let out = rt.block_on(async {
        watch_signals()?;
        bench(&plan).await
    });
    // Client tasks are bounded by their request timeout; don't wait longer.
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

/// `cargo xtask` builds in debug; a debug load generator would measure itself.
/// So the bench runs again as a release build with the same arguments.
fn rerun_in_release() -> Result<(), String> {
    eprintln!("xtask bench: re-running as a release build (the load generator must not be the bottleneck)");
    let mut cmd = crate::cargo();
    cmd.args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env(RELEASE_ENV, "1");
    // The child handles Ctrl-C (it shares our terminal's process group) and stops
    // what it started; we must outlive it rather than die first.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let _int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let _term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        // Blocking here is fine: nothing else runs on this runtime, and the
        // signal handlers stay installed while we wait.
        crate::run_cmd(&mut cmd).map_err(|e| format!("the release bench failed: {e}"))
    })
}

fn watch_signals() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        INTERRUPTED.store(true, Ordering::Relaxed);
        load::end_progress();
        eprintln!("xtask bench: interrupted; stopping what the bench started");
    });
    Ok(())
}

fn check_interrupted() -> Result<(), String> {
    if interrupted() {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// One system's results: per phase, its label and stats.
struct Outcome {
    system: String,
    phases: Vec<(&'static str, Stats)>,
}

async fn bench(plan: &Plan) -> Result<(), String> {
    // Fail before starting anything when a reference system is missing.
    if plan.compare {
        servers::require("redis-server", "redis-server")?;
        servers::require("etcd", "etcd-server")?;
    }
    print_machine(plan);
    if plan.listing {
        return listing::run(plan).await;
    }
    if plan.resp {
        return resp::run(plan).await;
    }
    let callgrind_dir = if plan.instructions {
        callgrind::require()?;
        Some(callgrind::out_dir()?)
    } else {
        None
    };
    let keys = Arc::new(Keys::new("bench-", plan.keys, plan.value_size));
    let mut outcomes = Vec::new();

    // Shoal first: its idle latency is measured on a cluster nothing else loads.
    {
        let (guard, target, label, pids) = match &plan.shoal {
            ShoalAt::Own(nodes, nwr) => {
                let (guard, addr, bearer) =
                    servers::shoal(*nodes, *nwr, plan.no_build, callgrind_dir.clone()).await?;
                let label = format!(
                    "shoal ({nodes} nodes, N={} W={} R={}, sync=always)",
                    nwr.0, nwr.1, nwr.2
                );
                let target = LoadTarget::Shoal {
                    addr,
                    put_query: String::new(),
                    get_query: String::new(),
                    auth: Some(bearer),
                    base: "/v1/kv/".into(),
                };
                let pids = guard.pids();
                (Some(guard), target, label, pids)
            }
            ShoalAt::Url(addr, put_query, get_query) => {
                check_gateway(*addr).await?;
                let target = LoadTarget::Shoal {
                    addr: *addr,
                    put_query: put_query.clone(),
                    get_query: get_query.clone(),
                    auth: plan.token.as_ref().map(|t| format!("Bearer {t}")),
                    base: "/v1/kv/".into(),
                };
                // Not ours: its processes may be anywhere, so no CPU accounting.
                (
                    None,
                    target,
                    format!("shoal at http://{addr} (PUT{put_query}, GET{get_query})"),
                    Vec::new(),
                )
            }
        };
        check_interrupted()?;
        if plan.idle_samples > 0 && callgrind_dir.is_none() {
            idle(target.clone(), plan.idle_samples).await?;
        }
        let cg = callgrind_dir.as_deref();
        let outcome = workload(plan, &label, target, &pids, &keys, cg).await?;
        if let Some(dir) = cg {
            let window = callgrind::open(&pids).await?;
            tokio::time::sleep(callgrind::IDLE).await;
            let idle = callgrind::close(window, dir, &pids).await?;
            let phases: Vec<_> = outcome
                .phases
                .iter()
                .filter_map(|(l, s)| {
                    let ops = s.put.count() + s.get.count();
                    s.instructions.as_ref().map(|c| (*l, ops, c))
                })
                .collect();
            print!("{}", callgrind::report(&phases, &idle));
        }
        outcomes.push(outcome);
        drop(guard);
    }
    if plan.compare {
        for durable in [true, false] {
            check_interrupted()?;
            let (svc, addr) = servers::redis(durable).await?;
            let label = if durable {
                "redis (appendfsync always)"
            } else {
                "redis (no persistence)"
            };
            let pids = svc.pids();
            outcomes
                .push(workload(plan, label, LoadTarget::Redis { addr }, &pids, &keys, None).await?);
            drop(svc);
        }
        check_interrupted()?;
        let (svc, addrs) = servers::etcd().await?;
        let pids = svc.pids();
        let target = LoadTarget::Etcd { addrs };
        outcomes.push(workload(plan, "etcd (3 members)", target, &pids, &keys, None).await?);
        drop(svc);
    }
    print!("{}", report(plan, &outcomes));
    let errors: u64 = outcomes
        .iter()
        .flat_map(|o| &o.phases)
        .map(|(_, s)| s.error_count())
        .sum();
    if errors > 0 {
        println!("\n{errors} operations failed (see the errors by kind above)");
    }
    Ok(())
}

/// A `--url` gateway must answer `/health` with 200 before anything is timed.
async fn check_gateway(addr: SocketAddr) -> Result<(), String> {
    let health = servers::http_get(addr, "/health")
        .await
        .map_err(|e| format!("cannot reach the gateway at http://{addr}: {e}"))?;
    if health.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "the gateway at http://{addr} is not healthy: /health answered {}: {}",
            health.status,
            String::from_utf8_lossy(&health.body).trim()
        ))
    }
}

fn print_machine(plan: &Plan) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "machine: {cores} cores, {cpu}; load average {}",
        load.join(" ")
    );
    let phases: Vec<String> = plan
        .phases
        .iter()
        .map(|(l, f)| format!("{l} (read ratio {f})"))
        .collect();
    println!(
        "workload: {} closed-loop clients, {} keys, {}-byte values, {} s per phase: {}; load generator: {} thread(s)",
        plan.clients,
        plan.keys,
        plan.value_size,
        plan.duration.as_secs(),
        phases.join(", "),
        plan.threads
    );
}

async fn idle(target: LoadTarget, samples: usize) -> Result<(), String> {
    eprintln!("idle latency: {samples} loopback echoes, then {samples} sequential PUTs and GETs");
    let rtt = load::loopback_rtt(samples).await?;
    let (puts, gets) = load::idle_latency(target, samples).await;
    println!("\nidle latency (one client, sequential requests, nothing else running):");
    println!("  {:<28} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    let row = |name: &str, h: &Histogram| {
        println!(
            "  {name:<28} {:>9} {:>9}",
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99))
        );
    };
    row("TCP loopback echo RTT", &rtt);
    row("PUT through the gateway", &puts.put);
    row("GET through the gateway", &gets.get);
    for (what, s) in [("PUT", &puts), ("GET", &gets)] {
        for (kind, n) in &s.errors {
            println!("  idle {what} errors: {n} x {kind}");
        }
    }
    println!();
    Ok(())
}

async fn workload(
    plan: &Plan,
    system: &str,
    target: LoadTarget,
    pids: &[u32],
    keys: &Arc<Keys>,
    callgrind_dir: Option<&std::path::Path>,
) -> Result<Outcome, String> {
    eprintln!("== {system}");
    let mut clients: Vec<Client> = (0..plan.clients)
        .map(|id| Client::new(id, plan.clients, target.clone(), keys.clone()))
        .collect();
    load::connect_all(&mut clients).await?;
    let (mut clients, pre) = load::preload(clients).await;
    eprintln!(
        "  preloaded {} keys in {:.1} s ({} errors)",
        plan.keys,
        pre.elapsed.as_secs_f64(),
        pre.error_count()
    );
    for (kind, n) in &pre.errors {
        eprintln!("    preload error: {n} x {kind}");
    }
    let mut phases = Vec::new();
    for &(label, read_ratio) in &plan.phases {
        check_interrupted()?;
        let me = [std::process::id()];
        let window = match callgrind_dir {
            Some(_) => Some(callgrind::open(pids).await?),
            None => None,
        };
        let (server0, client0) = (servers::cpu_time(pids), servers::cpu_time(&me));
        let (c, mut stats) = load::phase(
            clients,
            Mix { read_ratio },
            plan.duration,
            &format!("{system} {label}"),
        )
        .await;
        load::end_progress();
        if !pids.is_empty() {
            stats.server_cpu = servers::cpu_time(pids).saturating_sub(server0);
        }
        stats.client_cpu = servers::cpu_time(&me).saturating_sub(client0);
        if let (Some(window), Some(dir)) = (window, callgrind_dir) {
            tokio::time::sleep(callgrind::SETTLE).await;
            stats.instructions = Some(callgrind::close(window, dir, pids).await?);
        }
        clients = c;
        eprint!("{}", phase_summary(label, &stats));
        phases.push((label, stats));
    }
    check_interrupted()?;
    Ok(Outcome {
        system: system.into(),
        phases,
    })
}

fn ms(nanos: u64) -> String {
    #[allow(
        clippy::cast_precision_loss,
        reason = "latencies are far below 2^53 ns"
    )]
    let v = nanos as f64 / 1e6;
    format!("{v:.3}")
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "op counts are far below 2^53")]
    let c = count as f64;
    c / elapsed.as_secs_f64().max(1e-9)
}

fn phase_summary(label: &str, s: &Stats) -> String {
    let mut out = String::new();
    for (op, h) in [("writes", &s.put), ("reads", &s.get)] {
        if h.count() > 0 {
            let _ = writeln!(
                out,
                "  {label}: {op} {:.0}/s  mean {} ms  p50 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({} ops)",
                rate(h.count(), s.elapsed),
                ms(h.mean()),
                ms(h.quantile(0.5)),
                ms(h.quantile(0.99)),
                ms(h.quantile(0.999)),
                ms(h.quantile(1.0)),
                h.count()
            );
        }
    }
    let ops = s.put.count() + s.get.count();
    if ops > 0 {
        let per_op = |d: Duration| {
            #[allow(clippy::cast_precision_loss, reason = "op counts are far below 2^53")]
            let us = d.as_secs_f64() * 1e6 / ops as f64;
            format!("{us:.0} us")
        };
        let server = if s.server_cpu.is_zero() {
            "not measured".into()
        } else {
            per_op(s.server_cpu)
        };
        let _ = writeln!(
            out,
            "  {label}: CPU per operation: servers {server}, load generator {}",
            per_op(s.client_cpu)
        );
    }
    if s.siblings > 0 {
        let _ = writeln!(
            out,
            "  {label}: {} reads answered 300 (siblings)",
            s.siblings
        );
    }
    for (kind, n) in &s.errors {
        let _ = writeln!(out, "  {label}: error {n} x {kind}");
    }
    out
}

/// Throughput and latency of one operation over a system's phases: the phase
/// that ran it (the write phase for writes, the read phase for reads; the mixed
/// phase for both).
fn op_row(o: &Outcome, write: bool) -> Option<(f64, &Histogram)> {
    o.phases.iter().find_map(|(_, s)| {
        let h = if write { &s.put } else { &s.get };
        (h.count() > 0).then(|| (rate(h.count(), s.elapsed), h))
    })
}

fn report(plan: &Plan, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} clients, {}-byte values, {} keys, {} s per phase",
        plan.clients,
        plan.value_size,
        plan.keys,
        plan.duration.as_secs()
    );
    let _ = writeln!(
        out,
        "| system | writes/s | write p50 / p99 / p99.9 ms | reads/s | read p50 / p99 / p99.9 ms | errors | server CPU us per write / read |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---|---:|---|");
    for o in outcomes {
        let cell = |write: bool| match op_row(o, write) {
            Some((r, h)) => (
                format!("{r:.0}"),
                format!(
                    "{} / {} / {}",
                    ms(h.quantile(0.5)),
                    ms(h.quantile(0.99)),
                    ms(h.quantile(0.999))
                ),
            ),
            None => ("-".into(), "-".into()),
        };
        let (wr, wl) = cell(true);
        let (rr, rl) = cell(false);
        let errors: u64 = o.phases.iter().map(|(_, s)| s.error_count()).sum();
        let cpu = |write: bool| {
            o.phases
                .iter()
                .find(|(_, s)| if write { s.put.count() } else { s.get.count() } > 0)
                .filter(|(_, s)| !s.server_cpu.is_zero())
                .map_or_else(
                    || "-".to_string(),
                    |(_, s)| {
                        #[allow(
                            clippy::cast_precision_loss,
                            reason = "op counts are far below 2^53"
                        )]
                        let ops = (s.put.count() + s.get.count()) as f64;
                        format!("{:.0}", s.server_cpu.as_secs_f64() * 1e6 / ops)
                    },
                )
        };
        let _ = writeln!(
            out,
            "| {} | {wr} | {wl} | {rr} | {rl} | {errors} | {} / {} |",
            o.system,
            cpu(true),
            cpu(false)
        );
    }
    if let Some((shoal, others)) = outcomes.split_first() {
        if !others.is_empty() {
            let _ = writeln!(
                out,
                "\nShoal relative to each (throughput ratio; >1 means Shoal is faster):"
            );
            for o in others {
                let ratio = |write: bool| match (op_row(shoal, write), op_row(o, write)) {
                    (Some((a, _)), Some((b, _))) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "  vs {:<28} writes {:>7}   reads {:>7}",
                    o.system,
                    ratio(true),
                    ratio(false)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
