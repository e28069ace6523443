//! `bench --instructions`: instructions per operation, counted by callgrind.
//!
//! This VM has no hardware counters (`perf stat -e instructions` is not
//! supported), and CPU time per operation moves 10-20% between runs of one
//! build on the shared machine, so CPU time cannot tell two builds apart by
//! less than that. The instructions the servers execute for a fixed workload
//! hardly move with the machine's load, so they can. Every Shoal process runs
//! under `valgrind --tool=callgrind`; the bench zeroes its counters
//! (`callgrind_control`) just before each timed phase and dumps them just
//! after it, and then counts an idle window, whose rate it subtracts.
//! Instrumentation stays on from the start: switching it on later makes
//! valgrind translate every hot path again during the first counted seconds,
//! and requests time out meanwhile.
//!
//! The cluster runs with anti-entropy off (`SHOAL_ANTI_ENTROPY__ENABLED`):
//! an exchange hashes what the writes left dirty in the Merkle tree, and
//! whether one falls inside a window is chance; left on, it would also count
//! per operation in proportion to how slowly a build runs. So the figure
//! leaves out that deferred hashing.
//!
//! What the figure is not: valgrind runs one thread of a process at a time,
//! about 50x slower, so batching (group commit, socket writes) differs from a
//! native run. Compare builds with each other in this mode, never with native
//! CPU time, and keep the workload flags the same.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::servers;

/// Bound on one `callgrind_control` call (it talks to the process through
/// valgrind's gdbserver, which can wait for the process's next system call).
const CONTROL_DEADLINE: Duration = Duration::from_secs(60);
/// After a phase: time for the work its last answers started (the third
/// replica's write, read repair) to finish inside the counted window.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
/// The idle window counted after the phases.
pub(crate) const IDLE: Duration = Duration::from_secs(5);

/// Instructions per process over one counted window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    /// (process id such as `node-1` or `gateway-1`, instructions).
    pub(crate) per_process: Vec<(String, u64)>,
    /// Wall time the window was open (zeroed to dumped).
    pub(crate) wall: Duration,
}

impl Counts {
    fn total(&self) -> u64 {
        self.per_process.iter().map(|(_, n)| n).sum()
    }
}

/// Both tools must be there before anything starts.
pub(crate) fn require() -> Result<(), String> {
    for tool in ["valgrind", "callgrind_control"] {
        servers::require(tool, "valgrind").map_err(|e| e.replace("--compare", "--instructions"))?;
    }
    Ok(())
}

/// Where the processes write their dumps (emptied first).
pub(crate) fn out_dir() -> Result<PathBuf, String> {
    let dir = servers::bench_dir().join("callgrind");
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// A window being counted.
pub(crate) struct Window {
    opened: Instant,
}

/// Zeroes every process's counters.
pub(crate) async fn open(pids: &[u32]) -> Result<Window, String> {
    control(pids, "--zero").await?;
    Ok(Window {
        opened: Instant::now(),
    })
}

/// Dumps, and reads each process's count since [`open`].
pub(crate) async fn close(window: Window, dir: &Path, pids: &[u32]) -> Result<Counts, String> {
    control(pids, "--dump").await?;
    let wall = window.opened.elapsed();
    let mut per_process = Vec::new();
    for &pid in pids {
        per_process.push(latest_dump(dir, pid)?);
    }
    Ok(Counts { per_process, wall })
}

/// Runs `callgrind_control ARG PID` for every pid, each bounded.
async fn control(pids: &[u32], arg: &'static str) -> Result<(), String> {
    let pids = pids.to_vec();
    tokio::task::spawn_blocking(move || pids.iter().try_for_each(|&pid| control_one(pid, arg)))
        .await
        .map_err(|e| format!("callgrind_control task failed: {e}"))?
}

fn control_one(pid: u32, arg: &str) -> Result<(), String> {
    let mut child = Command::new("callgrind_control")
        .arg(arg)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run callgrind_control: {e}"))?;
    let until = Instant::now() + CONTROL_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "callgrind_control {arg} {pid} did not answer within {} s",
                    CONTROL_DEADLINE.as_secs()
                ));
            }
            Err(e) => return Err(format!("callgrind_control {arg} {pid}: {e}")),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {arg} {pid} failed ({status}); is process {pid} running under callgrind?"
        ))
    }
}

/// The newest dump of `pid` (`callgrind.<id>.<pid>.<n>`): its process id and
/// its `totals:` line.
fn latest_dump(dir: &Path, pid: u32) -> Result<(String, u64), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let suffix = format!(".{pid}.");
    let mut best: Option<(u64, String, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("callgrind.") else {
            continue;
        };
        let Some(at) = rest.find(&suffix) else {
            continue;
        };
        let Ok(n) = rest[at + suffix.len()..].parse::<u64>() else {
            continue;
        };
        if best.as_ref().is_none_or(|(m, _, _)| n > *m) {
            best = Some((n, rest[..at].to_string(), entry.path()));
        }
    }
    let (_, id, path) =
        best.ok_or_else(|| format!("no callgrind dump of process {pid} in {}", dir.display()))?;
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((
        id,
        totals(&text).ok_or_else(|| format!("{}: no totals line", path.display()))?,
    ))
}

/// The event count of a callgrind dump (Ir, the only event collected).
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The table printed after the report: per phase, instructions per operation
/// by process and in total, net of the idle rate (gossip and timers, steady
/// with anti-entropy off) over the phase's wall time, and raw. Net matters
/// when comparing builds: a build that runs slower under valgrind spends
/// more of the idle rate per operation.
pub(crate) fn report(phases: &[(&str, u64, &Counts)], idle: &Counts) -> String {
    let mut out = String::new();
    let secs = |c: &Counts| c.wall.as_secs_f64().max(1e-9);
    let rate_of = |id: &str| {
        idle.per_process
            .iter()
            .find(|(i, _)| i == id)
            .map_or(0.0, |(_, n)| *n as f64 / secs(idle))
    };
    let _ = writeln!(
        out,
        "\ninstructions per operation (callgrind, anti-entropy off; compare builds with each other only):"
    );
    let _ = writeln!(
        out,
        "  idle: {:.1} M instructions/s over {:.1} s, all processes (gossip, timers)",
        idle.total() as f64 / secs(idle) / 1e6,
        secs(idle)
    );
    for &(label, ops, counts) in phases {
        if ops == 0 {
            continue;
        }
        let ops_f = ops as f64;
        let raw = counts.total() as f64;
        let background = idle.total() as f64 / secs(idle) * secs(counts);
        let _ = writeln!(
            out,
            "  {label}: {ops} ops in {:.1} s: {:.0} k per op net of idle ({:.0} k raw, {:.0} k of it idle rate)",
            secs(counts),
            (raw - background) / ops_f / 1e3,
            raw / ops_f / 1e3,
            background / ops_f / 1e3,
        );
        for (id, n) in &counts.per_process {
            let net = *n as f64 - rate_of(id) * secs(counts);
            let _ = writeln!(
                out,
                "    {id:<12} {:>9.0} k per op net ({:.0} k raw)",
                net / ops_f / 1e3,
                *n as f64 / ops_f / 1e3
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_is_read_from_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 0\nfn=(1) main\n3 4\ntotals: 77574728\n";
        assert_eq!(totals(dump), Some(77_574_728));
        assert_eq!(totals("events: Ir\n"), None);
    }

    #[test]
    fn the_newest_dump_of_a_pid_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for (name, n) in [
            ("callgrind.node-1.42.1", 5),
            ("callgrind.node-1.42.2", 7),
            ("callgrind.gateway-1.420.3", 9),
            ("callgrind.node-1.42", 1),
        ] {
            fs::write(dir.path().join(name), format!("totals: {n}\n")).unwrap();
        }
        assert_eq!(latest_dump(dir.path(), 42).unwrap(), ("node-1".into(), 7));
        assert_eq!(
            latest_dump(dir.path(), 420).unwrap(),
            ("gateway-1".into(), 9)
        );
        assert!(latest_dump(dir.path(), 7).is_err());
    }

    #[test]
    fn the_idle_rate_is_subtracted_per_process() {
        let idle = Counts {
            per_process: vec![("node-1".into(), 3_000_000)],
            wall: Duration::from_secs(2),
        };
        let phase = Counts {
            per_process: vec![
                ("node-1".into(), 12_000_000),
                ("gateway-1".into(), 8_000_000),
            ],
            wall: Duration::from_secs(2),
        };
        let text = report(&[("writes", 100, &phase), ("reads", 0, &phase)], &idle);
        // (20 M - 1.5 M/s x 2 s) / 100 ops = 170 k; node-1: (12 M - 3 M) / 100.
        assert!(
            text.contains("writes: 100 ops in 2.0 s: 170 k per op net of idle (200 k raw, 30 k of it idle rate)"),
            "{text}"
        );
        assert!(
            text.contains("node-1              90 k per op net (120 k raw)"),
            "{text}"
        );
        assert!(
            text.contains("gateway-1           80 k per op net (80 k raw)"),
            "{text}"
        );
        assert!(!text.contains("reads:"), "{text}");
        assert!(text.contains("idle: 1.5 M instructions/s"), "{text}");
    }
}
