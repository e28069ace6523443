//! `plan add` and `plan decommission`: what a join or a decommission would
//! move, from the ring the running cluster has now; nothing is changed.
//!
//! The members (id, weight, status, joining) come from the gateway's
//! `/v1/cluster`; what moves is `shoal_ring::view::plan`'s, on the rings
//! every node builds (`RingConfig::default()`): the ranges whose replicas
//! change, the ones a join streams to the joiner and a decommission streams
//! away from the leaver. A new node's tokens follow from its id and weight
//! alone, so planning it under the id `cluster add` will give it (or
//! `--id`) places it where its join will. No node reports a key count
//! (neither `/v1/cluster/stats` nor the `status` RPC carries one), so what
//! moves is given as a share of the key space and of all stored copies, and
//! in bytes estimated from each node's stored bytes (`/metrics`:
//! `shoal_storage_sstable_bytes` + `shoal_storage_memtable_bytes`; these
//! count superseded versions and tombstones too).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;

use shoal_ring::view::plan::Plan;
use shoal_ring::{Member, RingConfig, DEFAULT_ZONE};

use super::state::{Dirs, State};
use super::PlanTarget;
use crate::http::Response;

/// A storage member on the ring, as `/v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: String,
    /// Its RPC address (`host:port`).
    addr: String,
    weight: u32,
    /// `None` when the gateway reports no zone for it.
    zone: Option<String>,
    status: String,
    joining: bool,
}

impl Seen {
    fn member(&self) -> Member {
        Member::new(self.id.clone(), self.weight)
            .in_zone(self.zone.as_deref().unwrap_or(DEFAULT_ZONE))
    }
}

/// The cluster as `/v1/cluster` describes it.
#[derive(Debug)]
struct Snapshot {
    n: usize,
    /// Storage members that have not left, sorted by id.
    storage: Vec<Seen>,
    /// Every storage member id the gateway knows, left ones too.
    storage_ids: BTreeSet<String>,
}

fn parse_cluster(v: &serde_json::Value) -> Result<Snapshot, String> {
    let n = v
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or("/v1/cluster has no replication factor `n`")?;
    let members = v
        .get("members")
        .and_then(serde_json::Value::as_array)
        .ok_or("/v1/cluster has no `members`")?;
    let text = |m: &serde_json::Value, k: &str| {
        m.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut storage = Vec::new();
    let mut storage_ids = BTreeSet::new();
    for m in members {
        let id = text(m, "id");
        if text(m, "role") != "storage" {
            continue;
        }
        storage_ids.insert(id.clone());
        if text(m, "status") == "left" {
            continue;
        }
        let weight = m
            .get("weight")
            .and_then(serde_json::Value::as_u64)
            .and_then(|w| u32::try_from(w).ok())
            .ok_or_else(|| format!("/v1/cluster: member {id:?} has no weight"))?;
        storage.push(Seen {
            addr: text(m, "addr"),
            weight,
            zone: m
                .get("zone")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            status: text(m, "status"),
            joining: m.get("joining").and_then(serde_json::Value::as_bool) == Some(true),
            id,
        });
    }
    storage.sort_by(|a, b| a.id.cmp(&b.id));
    if storage.is_empty() {
        return Err("the gateway sees no storage node on the ring".into());
    }
    Ok(Snapshot {
        n,
        storage,
        storage_ids,
    })
}

/// The ring a plan starts from: every storage member once the joins and
/// leaves under way are done (joining members in, leaving ones out), the
/// ring the cluster is heading to.
fn base(snapshot: &Snapshot) -> Vec<Member> {
    snapshot
        .storage
        .iter()
        .filter(|m| m.status != "leaving")
        .map(Seen::member)
        .collect()
}

/// The ring computation is `shoal_ring`'s: the nodes' handover builds the
/// same rings, and a test checks its estimates against real joins.
fn plan(before: &[Member], after: &[Member], n: usize) -> Result<Plan, String> {
    Plan::new(before, after, n, RingConfig::default()).map_err(|e| e.to_string())
}

/// The id `cluster add` would give the next node: the most common
/// `<prefix><number>` pattern among `ids` (`node-` locally, `shoal-node-`
/// in a StatefulSet), one past its highest number.
fn next_id<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut by_prefix: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for id in ids {
        let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits == id.len() {
            continue;
        }
        let (prefix, number) = id.split_at(id.len() - digits);
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        let entry = by_prefix.entry(prefix).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(number);
    }
    let best = by_prefix
        .iter()
        .max_by_key(|(prefix, (count, _))| (*count, std::cmp::Reverse(*prefix)));
    match best {
        Some((prefix, (_, max))) => format!("{prefix}{}", max + 1),
        None => "node-1".into(),
    }
}

// ---------------------------------------------------------------- talking to the cluster

/// `host:port` of the gateway: `--url`, else this cluster's (target/cluster/).
fn gateway_addr(dirs: &Dirs, target: &PlanTarget) -> Result<(String, Option<State>), String> {
    match &target.url {
        Some(url) => Ok((parse_url(url)?, None)),
        None => {
            let state = State::load_required(dirs)?;
            let http = state
                .gateway
                .http
                .clone()
                .ok_or("the cluster state has no gateway address; pass --url")?;
            Ok((http, Some(state)))
        }
    }
}

fn parse_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return Err(format!("--url {url:?}: only http:// is supported"));
    }
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.is_empty() || hostport.contains('/') || !hostport.contains(':') {
        return Err(format!(
            "--url {url:?}: give the gateway's host:port (or http://host:port), without a path"
        ));
    }
    Ok(hostport.to_string())
}

/// One `Connection: close` GET, with a bearer token when given.
fn get(addr: &str, path: &str, token: Option<&str>) -> Result<Response, String> {
    super::view::http_get_as(addr, path, token)
}

fn get_json(addr: &str, path: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    let resp = get(addr, path, token)?;
    match resp.status {
        200 => serde_json::from_slice(&resp.body).map_err(|e| format!("{path}: {e}")),
        401 | 403 => Err(format!(
            "{path} answered {}: pass --token with a token that has the `read` permission",
            resp.status
        )),
        s => Err(format!("{path} answered {s}")),
    }
}

/// Each storage node's stored bytes, for the nodes whose `/metrics` answered.
fn volumes(
    gateway: &str,
    token: Option<&str>,
    storage: &[Seen],
) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    let stats = match get_json(gateway, "/v1/cluster/stats", token) {
        Ok(v) => v,
        Err(e) => {
            missing.push(format!("all ({e})"));
            return (found, missing);
        }
    };
    let metrics_addr: BTreeMap<String, String> = stats
        .get("members")
        .and_then(serde_json::Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    Some((
                        m.get("id")?.as_str()?.to_string(),
                        m.get("metrics_addr")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for m in storage {
        let Some(addr) = metrics_addr.get(&m.id) else {
            missing.push(format!("{} (no metrics address)", m.id));
            continue;
        };
        let addr = reachable(addr, &m.addr);
        match get(&addr, "/metrics", None)
            .and_then(|r| {
                if r.status == 200 {
                    Ok(r.body)
                } else {
                    Err(format!("/metrics answered {}", r.status))
                }
            })
            .and_then(|body| stored_bytes(&String::from_utf8_lossy(&body)))
        {
            Ok(bytes) => {
                found.insert(m.id.clone(), bytes);
            }
            Err(e) => missing.push(format!("{} ({e})", m.id)),
        }
    }
    (found, missing)
}

/// A metrics address that binds every interface (`0.0.0.0:9100`) is
/// reached at the host of the member's RPC address.
fn reachable(metrics: &str, rpc: &str) -> String {
    let Some((host, port)) = metrics.rsplit_once(':') else {
        return metrics.to_string();
    };
    let unspecified = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    match rpc.rsplit_once(':') {
        Some((rpc_host, _)) if unspecified => format!("{rpc_host}:{port}"),
        _ => metrics.to_string(),
    }
}

/// `shoal_storage_sstable_bytes` + `shoal_storage_memtable_bytes` from a
/// node's Prometheus text.
fn stored_bytes(text: &str) -> Result<u64, String> {
    let value = |name: &str| -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (series, value) = l.split_once(' ')?;
            (series == name).then(|| value.trim().parse::<f64>().ok())?
        })
    };
    match (
        value("shoal_storage_sstable_bytes"),
        value("shoal_storage_memtable_bytes"),
    ) {
        (Some(tables), Some(memtable)) => Ok((tables + memtable).max(0.0) as u64),
        _ => Err("no shoal_storage_sstable_bytes / shoal_storage_memtable_bytes".into()),
    }
}

// ---------------------------------------------------------------- the commands

pub(super) fn add(
    dirs: &Dirs,
    target: &PlanTarget,
    id: Option<&str>,
    zone: Option<&str>,
    weight: u32,
) -> Result<(), String> {
    let (gateway, state) = gateway_addr(dirs, target)?;
    let token = target.token.as_deref();
    let snapshot = parse_cluster(&get_json(&gateway, "/v1/cluster", token)?)?;
    let id = match id {
        Some(id) => id.to_string(),
        // As `cluster add` names it: past every node the state file and the
        // gateway know.
        None => {
            let mut ids: Vec<&str> = snapshot.storage_ids.iter().map(String::as_str).collect();
            if let Some(s) = &state {
                ids.extend(s.nodes.iter().map(|p| p.id.as_str()));
            }
            next_id(ids)
        }
    };
    if snapshot.storage.iter().any(|m| m.id == id) {
        return Err(format!(
            "{id} is already a storage member; pick another --id"
        ));
    }
    let before = base(&snapshot);
    // Without --zone, the zone `cluster add` would give it (`up --zones`
    // rotates them by node number); else the default zone.
    let zone = zone.or_else(|| state.as_ref().and_then(|s| s.zone_of(&id)));
    let mut joiner = Member::new(id.clone(), weight);
    if let Some(z) = zone {
        joiner = joiner.in_zone(z);
    }
    let mut after = before.clone();
    after.push(joiner.clone());
    let plan = plan(&before, &after, snapshot.n)?;
    let (volumes, missing) = volumes(&gateway, token, &snapshot.storage);
    let mut notes = base_notes(&snapshot);
    notes.extend(zone_notes(&snapshot, &before, &joiner, &plan));
    if weight > 100 {
        notes.push(format!(
            "weight {weight} is above gossip.max_weight's default (100): members refuse it \
             unless every member's gossip.max_weight allows it"
        ));
    }
    let title = format!(
        "plan: add {id} (weight {weight}, zone {}) to {} storage nodes, N={}",
        joiner.zone,
        before.len(),
        snapshot.n
    );
    print(&render(
        &title, &gateway, &snapshot, &plan, &volumes, &missing, &notes,
    ));
    Ok(())
}

pub(super) fn decommission(dirs: &Dirs, target: &PlanTarget, node: &str) -> Result<(), String> {
    let (gateway, _) = gateway_addr(dirs, target)?;
    let token = target.token.as_deref();
    let snapshot = parse_cluster(&get_json(&gateway, "/v1/cluster", token)?)?;
    let wanted = if node.chars().all(|c| c.is_ascii_digit()) {
        format!("node-{node}")
    } else {
        node.to_string()
    };
    let before = base(&snapshot);
    let Some(leaving) = snapshot.storage.iter().find(|m| m.id == wanted) else {
        let known: Vec<&str> = snapshot.storage.iter().map(|m| m.id.as_str()).collect();
        return Err(format!(
            "no storage member {node:?} on the ring (have: {})",
            known.join(", ")
        ));
    };
    if leaving.status == "leaving" {
        return Err(format!("{wanted} is already leaving"));
    }
    let after: Vec<Member> = before.iter().filter(|m| m.id != wanted).cloned().collect();
    if after.is_empty() {
        return Err(format!(
            "{wanted} is the only storage node: nobody would hold its data"
        ));
    }
    let plan = plan(&before, &after, snapshot.n)?;
    let (volumes, missing) = volumes(&gateway, token, &snapshot.storage);
    let mut notes = base_notes(&snapshot);
    if after.len() < snapshot.n {
        notes.push(format!(
            "only {} storage nodes would remain for N={}: each key keeps {} copies, and \
             `cluster decommission` refuses this without --force",
            after.len(),
            snapshot.n,
            after.len()
        ));
    }
    let title = format!(
        "plan: decommission {wanted} from {} storage nodes, N={}",
        before.len(),
        snapshot.n
    );
    print(&render(
        &title, &gateway, &snapshot, &plan, &volumes, &missing, &notes,
    ));
    Ok(())
}

/// What `--zone` does to a join: said when the new node's zone is new to
/// the ring, or when the gateway reports no zones at all.
fn zone_notes(snapshot: &Snapshot, before: &[Member], joiner: &Member, plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    if snapshot.storage.iter().all(|m| m.zone.is_none()) && joiner.zone != DEFAULT_ZONE {
        notes.push(format!(
            "the gateway reports no zones (a gateway from before zones): every current node \
             is taken to be in zone {DEFAULT_ZONE:?}"
        ));
    }
    if before.iter().all(|m| m.zone != joiner.zone) {
        let zones: BTreeSet<&str> = before.iter().map(|m| m.zone.as_str()).collect();
        if zones.len() < snapshot.n {
            notes.push(format!(
                "zone {:?} is new, and the ring has {} zone(s) for N={}: {}, alone in it, \
                 holds a copy of every key ({} of all copies after)",
                joiner.zone,
                zones.len(),
                snapshot.n,
                joiner.id,
                percent(plan.after.get(&joiner.id).copied().unwrap_or(0.0))
            ));
        }
    }
    notes
}

fn base_notes(snapshot: &Snapshot) -> Vec<String> {
    let mut notes = Vec::new();
    let flux: Vec<String> = snapshot
        .storage
        .iter()
        .filter(|m| m.joining || m.status == "leaving")
        .map(|m| format!("{} {}", m.id, if m.joining { "joining" } else { "leaving" }))
        .collect();
    if !flux.is_empty() {
        notes.push(format!(
            "a change is under way ({}): planned from the ring once it is done",
            flux.join(", ")
        ));
    }
    let down: Vec<&str> = snapshot
        .storage
        .iter()
        .filter(|m| m.status == "down" || m.status == "suspect")
        .map(|m| m.id.as_str())
        .collect();
    if !down.is_empty() {
        notes.push(format!(
            "not alive now: {} (still on the ring, so planned as members; a decommission \
             streams from the leaving node itself, a join from any live replica)",
            down.join(", ")
        ));
    }
    notes
}

fn print(text: &str) {
    // Not println!: `plan ... | head` must not panic on a closed pipe.
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn percent(f: f64) -> String {
    format!("{:.2}%", f * 100.0)
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// The plan as printed: the ranges, each node's share before and after,
/// and what moves.
fn render(
    title: &str,
    gateway: &str,
    snapshot: &Snapshot,
    plan: &Plan,
    volumes: &BTreeMap<String, u64>,
    missing: &[String],
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{title}; from the ring of http://{gateway}. Nothing is changed.\n"
    );
    let mut rows = vec![vec![
        "RANGE".to_string(),
        "KEY SPACE".into(),
        "REPLICAS BEFORE -> AFTER".into(),
        "GAINED".into(),
        "LOST".into(),
    ]];
    for c in &plan.changes {
        rows.push(vec![
            format!("[{:#018x}, {:#018x})", c.range.start, c.range.end),
            percent(c.range.fraction()),
            format!(
                "{} -> {}",
                c.old_replicas.join(","),
                c.new_replicas.join(",")
            ),
            c.gained.join(","),
            c.lost.join(","),
        ]);
    }
    out.push_str(&table(&rows));
    let _ = writeln!(
        out,
        "{} ranges change replicas: {} of the key space.\n",
        plan.changes.len(),
        percent(plan.key_space)
    );

    // Stored bytes per unit of share, from the nodes that reported theirs:
    // the whole cluster's stored copies, scaled up for the silent ones.
    let known_share: f64 = volumes.keys().filter_map(|id| plan.before.get(id)).sum();
    let total =
        (known_share > 0.0).then(|| volumes.values().map(|b| *b as f64).sum::<f64>() / known_share);
    let status: BTreeMap<&str, &str> = snapshot
        .storage
        .iter()
        .map(|m| (m.id.as_str(), m.status.as_str()))
        .collect();
    let ids: BTreeSet<&String> = plan.before.keys().chain(plan.after.keys()).collect();
    let scale = plan.copies_after as f64 / plan.copies_before as f64;
    let mut rows = vec![vec![
        "NODE".to_string(),
        "STATUS".into(),
        "SHARE BEFORE".into(),
        "SHARE AFTER".into(),
        "CHANGE".into(),
        "RECEIVES".into(),
        "DATA BEFORE".into(),
        "DATA AFTER (EST.)".into(),
    ]];
    for id in ids {
        let before = plan.before.get(id).copied();
        let after = plan.after.get(id).copied();
        let received = plan.received.get(id).copied().unwrap_or(0.0);
        rows.push(vec![
            id.clone(),
            status
                .get(id.as_str())
                .copied()
                .unwrap_or("(new)")
                .to_string(),
            before.map_or_else(|| "-".into(), percent),
            after.map_or_else(|| "-".into(), percent),
            format!(
                "{:+.2}%",
                (after.unwrap_or(0.0) - before.unwrap_or(0.0)) * 100.0
            ),
            match total {
                Some(t) if received > 0.0 => {
                    format!("{} ({})", percent(received), bytes(received * t))
                }
                _ => percent(received),
            },
            volumes
                .get(id)
                .map_or_else(|| "-".into(), |b| bytes(*b as f64)),
            match (total, after) {
                (Some(t), Some(a)) => bytes(a * t * scale),
                (Some(_), None) => bytes(0.0),
                _ => "-".into(),
            },
        ]);
    }
    out.push_str(&table(&rows));
    let _ = writeln!(
        out,
        "\nSHARE: of all stored copies (N={n}: {before} copies of each key before, {after} after). \
         RECEIVES: the new copies a node is sent, as a share of all copies stored before.",
        n = snapshot.n,
        before = plan.copies_before,
        after = plan.copies_after,
    );
    let moved = plan.copies_moved();
    let _ = write!(
        out,
        "moves: {} of the keys get a new replica; {} of all stored copies are copied",
        percent(plan.key_space),
        percent(moved)
    );
    match total {
        Some(t) => {
            let _ = writeln!(out, ", about {} of {} stored.", bytes(moved * t), bytes(t));
        }
        None => out.push_str(".\n"),
    }
    let _ = writeln!(
        out,
        "keys: no node reports a key count, so keys are estimated as shares of the key space; \
         bytes from the nodes' stored bytes (shoal_storage_sstable_bytes + \
         shoal_storage_memtable_bytes, superseded versions and tombstones included)."
    );
    if !missing.is_empty() {
        let _ = writeln!(
            out,
            "no stored bytes from: {}{}",
            missing.join(", "),
            if total.is_some() {
                " (the total is scaled up from the others' shares)"
            } else {
                ""
            }
        );
    }
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests;
