//! Live progress of a join, decommission or repair, read from the gateway's
//! `/v1/cluster/stats` (each node reports the long work it runs).
//!
//! On a terminal one line is redrawn in place; otherwise (CI logs, pipes) a
//! plain line is printed each time a range finishes, so a log shows every
//! step without carriage-return noise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::view::http_get;

/// What a node reports of its long work.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Work {
    pub(super) kind: String,
    pub(super) ranges_done: u64,
    pub(super) ranges_total: u64,
    pub(super) keys: u64,
    pub(super) bytes: u64,
    pub(super) elapsed_ms: u64,
}

/// The work `id` reports in a stats body, if any.
pub(super) fn work_of(stats: &serde_json::Value, id: &str) -> Option<Work> {
    let m = stats
        .get("members")?
        .as_array()?
        .iter()
        .find(|m| m.get("id").and_then(serde_json::Value::as_str) == Some(id))?;
    let p = m.get("node")?.get("progress")?;
    let field = |k: &str| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Some(Work {
        kind: p.get("kind")?.as_str()?.to_string(),
        ranges_done: field("ranges_done"),
        ranges_total: field("ranges_total"),
        keys: field("keys"),
        bytes: field("bytes"),
        elapsed_ms: field("elapsed_ms"),
    })
}

/// One line: ranges, keys, bytes, rate and the time left at that rate.
pub(super) fn line(id: &str, w: &Work) -> String {
    let secs = (w.elapsed_ms as f64 / 1000.0).max(0.001);
    let rate = w.bytes as f64 / secs;
    let left = if w.ranges_done > 0 && w.ranges_total > w.ranges_done {
        let per_range = secs / w.ranges_done as f64;
        format!(
            ", ~{:.0} s left",
            per_range * (w.ranges_total - w.ranges_done) as f64
        )
    } else {
        String::new()
    };
    format!(
        "{id}: {} {}/{} ranges, {} keys, {:.1} MB moved, {:.1} MB/s{left}",
        w.kind,
        w.ranges_done,
        w.ranges_total,
        w.keys,
        w.bytes as f64 / 1e6,
        rate / 1e6,
    )
}

/// Shows `id`'s progress while `running()` is true, polling every 500 ms.
pub(super) fn watch(http: &str, id: &str, mut running: impl FnMut() -> bool) {
    let terminal = std::io::stdout().is_terminal();
    let mut last: Option<Work> = None;
    let mut drawn = false;
    while running() {
        let work = http_get(http, "/v1/cluster/stats")
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| work_of(&v, id));
        if let Some(w) = work {
            let mut out = std::io::stdout();
            if terminal {
                let _ = write!(out, "\r\x1b[2K{}", line(id, &w));
                drawn = true;
            } else if last.as_ref().map(|l| l.ranges_done) != Some(w.ranges_done) {
                let _ = writeln!(out, "{}", line(id, &w));
            }
            let _ = out.flush();
            last = Some(w);
        }
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until && running() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if drawn {
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_nodes_work_and_prints_rate_and_time_left() {
        let stats = serde_json::json!({"members": [
            {"id": "node-2", "node": {"progress": {"kind": "decommission", "ranges_done": 2,
             "ranges_total": 8, "keys": 1000, "bytes": 4_000_000, "elapsed_ms": 2000}}},
            {"id": "node-3", "node": {"progress": null}}
        ]});
        let w = work_of(&stats, "node-2").unwrap();
        assert_eq!(
            line("node-2", &w),
            "node-2: decommission 2/8 ranges, 1000 keys, 4.0 MB moved, 2.0 MB/s, ~6 s left"
        );
        assert_eq!(work_of(&stats, "node-3"), None);
        assert_eq!(work_of(&stats, "node-9"), None);
    }
}
