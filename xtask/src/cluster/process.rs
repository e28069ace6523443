//! The cluster's processes as the OS sees them: liveness through `/proc`,
//! signals, detached start-up with the output appended to a log.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::state::{Dirs, Proc};

/// How long `stop`, `down` and `decommission` wait for a process to exit.
pub(super) const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Log lines shown when a process dies during start-up.
const TAIL_LINES: usize = 30;

/// Whether `p`'s recorded pid is a live process running `p`'s config (a pid
/// reused by something else, or a zombie, counts as dead).
pub(super) fn alive(p: &Proc) -> bool {
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

pub(super) fn signal(pid: u32, sig: &str) -> Result<(), String> {
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

pub(super) fn wait_dead(p: &Proc, deadline: Duration) -> bool {
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
/// appended to its log; inside its network namespace if it has one. Returns the child and the log offset where this run begins.
pub(super) fn spawn(
    dirs: &Dirs,
    p: &Proc,
    env: &BTreeMap<String, String>,
) -> Result<(Child, u64), String> {
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
    let mut cmd = match &p.netns {
        Some(ns) => {
            super::netns::require_root(&format!("starting {} in namespace {ns}", p.id))?;
            super::netns::command_in(ns, &binary)
        }
        None => match &dirs.callgrind {
            // `bench --instructions`: counted from the start (the bench
            // zeroes the counters before each window it reads). Anti-entropy
            // is off: its rounds (hashing what the writes left dirty) land in
            // a window or not by chance, and would count per operation in
            // proportion to how slowly a build runs under valgrind.
            Some(out) => {
                let mut cmd = Command::new("valgrind");
                cmd.env("SHOAL_ANTI_ENTROPY__ENABLED", "false");
                cmd.arg("--tool=callgrind")
                    .arg(format!(
                        "--callgrind-out-file={}/callgrind.{}.%p",
                        out.display(),
                        p.id
                    ))
                    .arg(&binary);
                cmd
            }
            None => Command::new(&binary),
        },
    };
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
pub(super) fn log_since(log: &Path, offset: u64) -> String {
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

pub(super) fn died_message(
    dirs: &Dirs,
    p: &Proc,
    status: std::process::ExitStatus,
    offset: u64,
) -> String {
    format!(
        "{} exited during start-up ({status}); last lines of {}:\n{}",
        p.id,
        dirs.show(&p.log),
        tail(&p.log, offset)
    )
}

pub(super) fn pid_text(p: &Proc) -> String {
    p.pid.map_or_else(|| "-".into(), |pid| pid.to_string())
}
