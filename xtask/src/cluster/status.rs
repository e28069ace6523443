//! `status`: the state file and the gateway's view, side by side in one table.

use std::fmt::Write as _;
use std::io::Write as _;

use super::process::{alive, pid_text};
use super::state::{Dirs, State};
use super::view::{cluster_view, http_get, node_rows};

pub(super) fn status(dirs: &Dirs) -> Result<(), String> {
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
        "gateway http://{http}: {gateway_state}; N={} W={} R={}{}",
        state.n,
        state.w,
        state.r,
        state.netns.as_ref().map_or_else(String::new, |n| format!(
            "; nodes in network namespaces on bridge {}",
            n.bridge
        ))
    );
    if let Err(e) = &view {
        let _ = writeln!(out, "(no membership view: {e})");
    }
    let nodes = if view.is_ok() {
        node_rows(&http).unwrap_or_default()
    } else {
        Default::default()
    };
    out.push('\n');
    let mut rows = vec![[
        "NODE".to_string(),
        "ADDRESS".into(),
        "STATUS".into(),
        "OWNERSHIP".into(),
        "HINTS".into(),
        "LAST AE".into(),
        "METRICS".into(),
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
        let row = nodes.get(&p.id).cloned().unwrap_or_default();
        let hints = row.hints.map_or_else(|| "-".into(), |h| h.to_string());
        let last_ae = row
            .last_exchange_s
            .map_or_else(|| "-".into(), |s| format!("{s:.0}s ago"));
        let metrics = match (&p.http, row.metrics.or_else(|| p.metrics.clone())) {
            (Some(h), _) => format!("http://{h}/metrics"),
            (None, Some(m)) => format!("http://{m}/metrics"),
            (None, None) => "-".into(),
        };
        let status = match row.progress {
            Some(work) => format!("{status} ({work})"),
            None => status,
        };
        let status = match p.netns.as_deref().map(super::netns::partitioned) {
            Some(Some(true)) => format!("{status}, partitioned (link down)"),
            Some(None) => format!("{status}, no namespace"),
            _ => status,
        };
        rows.push([
            p.id.clone(),
            address,
            status,
            share,
            hints,
            last_ae,
            metrics,
            pid,
        ]);
    }
    // Members the gateway knows that this state file does not (started elsewhere).
    if let Ok(v) = &view {
        for (id, (addr, _, status)) in &v.members {
            if state.procs().all(|p| &p.id != id) {
                let share = v
                    .ownership
                    .get(id)
                    .map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0));
                rows.push([
                    id.clone(),
                    addr.clone(),
                    status.clone(),
                    share,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
    }
    let mut widths = [0usize; 8];
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
