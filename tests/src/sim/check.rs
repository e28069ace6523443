//! After the faults are healed: wait (bounded) for one gossip view and for
//! every key's replicas to agree, then check the oracle on the final reads.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use super::workload::{self, decode_register, decode_set, Outcome, SharedHistory};

/// One member's membership view, as last published by its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Simulated milliseconds when it was published.
    pub at_ms: u64,
    /// `(member id, status)`, sorted by id.
    pub members: Vec<(String, String)>,
}

/// Views by member id, published by each host every [`VIEW_PERIOD`].
pub type Views = Rc<RefCell<BTreeMap<String, View>>>;

/// Each running node's store, published by its host at start (replaced on
/// restart), so that the checker can read the Merkle trees the node's
/// anti-entropy maintains.
pub type Stores = Rc<RefCell<BTreeMap<String, std::sync::Arc<shoal_node::store::Store>>>>;

/// How often hosts publish their membership view.
pub const VIEW_PERIOD: Duration = Duration::from_millis(100);

/// Bound on each convergence phase, in simulated time.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(90);

/// What the checker measured.
#[derive(Debug, Clone, Default)]
pub struct Converged {
    /// Simulated ms from the heal until joins and decommissions finished.
    pub membership_ms: Option<u64>,
    /// Simulated ms from the heal until every member saw all members alive.
    pub gossip_ms: Option<u64>,
    /// Simulated ms from the heal until every key's owners held the same
    /// siblings and no hints were left.
    pub data_ms: Option<u64>,
    /// Simulated ms from the heal until, for every ring range, the Merkle
    /// hashes of that range on its N owners were equal.
    pub merkle_ms: Option<u64>,
    /// Ring ranges compared.
    pub merkle_ranges: u64,
    /// Acknowledged set elements and register writes checked at the end.
    pub acked_checked: u64,
    /// Acknowledged writes missing at the end (must be 0).
    pub lost: u64,
    /// Tombstoned keys the nodes' GC purged, and keys whose expired values
    /// compaction shrank, summed over the nodes running at the end.
    pub purged: (u64, u64),
}

/// The checker's inputs.
#[derive(Debug, Clone)]
pub struct CheckPlan {
    /// Every member id (nodes and gateways).
    pub members: Vec<String>,
    /// Gateway HTTP addresses.
    pub gateways: Vec<String>,
    /// Simulated ms of the heal.
    pub healed_at_ms: u64,
    /// The storage node ids (the ring's members).
    pub nodes: Vec<String>,
    /// Replicas per key.
    pub n: usize,
}

/// The ring ranges whose owners' Merkle hashes differ (empty: converged),
/// and how many ranges were compared.
fn merkle_disagreements(plan: &CheckPlan, stores: &Stores) -> (Vec<String>, u64) {
    let ring = match shoal_ring::Ring::new(
        plan.nodes
            .iter()
            .map(|n| shoal_ring::Member::new(n.as_str(), 1)),
        shoal_ring::RingConfig::default(),
    ) {
        Ok(r) => r,
        Err(e) => return (vec![format!("no ring: {e}")], 0),
    };
    let stores = stores.borrow();
    let mut differ = Vec::new();
    let ranges = ring.ranges();
    for range in &ranges {
        let merkle = shoal_merkle::TokenRange {
            start: range.start,
            end: range.end,
        };
        let mut hashes = BTreeSet::new();
        for owner in ring.replicas_of(range, plan.n) {
            let hash = stores
                .get(owner)
                .map(|s| s.with_tree(|t| t.range_hash(merkle).map(|h| format!("{h:?}"))));
            hashes.insert(match hash {
                Some(Ok(h)) => h,
                Some(Err(e)) => format!("error {e}"),
                None => "no store".into(),
            });
        }
        if hashes.len() > 1 {
            differ.push(format!("[{:x}, {:x})", range.start, range.end));
        }
    }
    (differ, ranges.len() as u64)
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

fn gossip_converged(plan: &CheckPlan, views: &Views) -> bool {
    let expected: Vec<(String, String)> = {
        let mut ids = plan.members.clone();
        ids.sort();
        ids.into_iter()
            .map(|id| (id, "Alive".to_string()))
            .collect()
    };
    let views = views.borrow();
    plan.members.iter().all(|m| {
        views
            .get(m)
            .is_some_and(|v| v.at_ms > plan.healed_at_ms && v.members == expected)
    })
}

/// Whether the owners of `key` agree and no hint for it is left (`Err` says
/// why not); reads through `gateway`'s debug view, which never repairs.
async fn replicas_agree(gateway: &str, key: &str) -> Result<(), String> {
    let Ok(answer) =
        workload::request(gateway, "GET", &workload::path_of(key, "debug"), &[], b"").await
    else {
        return Err("debug view unreachable".into());
    };
    let json = answer.json().unwrap_or_default();
    let Some(replicas) = json["replicas"].as_array() else {
        return Err(format!("debug view answered {}", answer.status));
    };
    let mut seen: Option<BTreeSet<String>> = None;
    for r in replicas {
        // A fallback keeps the copy it coordinated as a stand-in in its own
        // data (the dot's history); reads never ask it while the owners are
        // up, so it is not a replica that must converge.
        if r["role"] == "fallback" {
            continue;
        }
        // A hint left over, or an owner that cannot answer, is not converged.
        if r["reachable"] != true || r["role"] != "owner" {
            return Err(json.to_string());
        }
        let siblings: BTreeSet<String> = r["siblings"]
            .as_array()
            .map(|a| a.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        match &seen {
            None => seen = Some(siblings),
            Some(first) if *first != siblings => return Err(json.to_string()),
            Some(_) => {}
        }
    }
    if replicas.is_empty() {
        return Err("no replicas".into());
    }
    Ok(())
}

/// A final read with r = N, retried like a client would on a 503: a gateway
/// keeps a node it recently failed to reach suspect for a moment (up to the
/// gossip failure timeout), and an r = N read fails at once while one is.
/// The error is the violation to report.
async fn final_read(gateway: &str, key: &str) -> Result<workload::ReadResult, String> {
    let mut last = String::new();
    for _ in 0..FINAL_READ_ATTEMPTS {
        match workload::read_or_why(gateway, key, Some(3)).await {
            Ok(read) => return Ok(read),
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "final read of {key} via {gateway} failed at {} ms: {last}",
        now_ms()
    ))
}

/// Every key `GET /v1/buckets/{bucket}/keys` lists through `gateway`, page
/// by page (a failed page is retried like a final read).
async fn list_bucket(gateway: &str, bucket: &str) -> Result<BTreeSet<String>, String> {
    let mut listed = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let path = match &cursor {
            None => format!("/v1/buckets/{bucket}/keys?limit=7"),
            Some(c) => format!("/v1/buckets/{bucket}/keys?limit=7&cursor={c}"),
        };
        let mut answer = None;
        for _ in 0..FINAL_READ_ATTEMPTS {
            match workload::request(gateway, "GET", &path, &[], b"").await {
                Ok(r) if r.status == 200 => {
                    answer = r.json();
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let Some(body) = answer else {
            return Err(format!(
                "listing {bucket} via {gateway} failed at {} ms",
                now_ms()
            ));
        };
        for k in body["keys"].as_array().into_iter().flatten() {
            listed.insert(k.as_str().unwrap_or_default().to_string());
        }
        match body["cursor"].as_str() {
            None => return Ok(listed),
            Some(c) => cursor = Some(c.to_string()),
        }
    }
    Err(format!("listing {bucket} did not end within 1,000 pages"))
}

/// Attempts per final read.
const FINAL_READ_ATTEMPTS: u32 = 8;

/// The checker client: convergence, then the oracle. Violations go into the
/// history; measurements into `out`.
pub async fn checker(
    mut plan: CheckPlan,
    views: Views,
    stores: Stores,
    changes: super::Changes,
    history: SharedHistory,
    out: Rc<RefCell<Converged>>,
) -> turmoil::Result {
    // 0. Membership changes finish: a join streams its ranges, a
    //    decommission hands its ranges over (retried by its admin client).
    let start = now_ms();
    loop {
        let (pending, left) = {
            let c = changes.borrow();
            let pending: Vec<String> = c.joining.iter().chain(c.leaving.iter()).cloned().collect();
            (pending, c.left.clone())
        };
        if pending.is_empty() {
            plan.members.retain(|m| !left.contains(m));
            plan.nodes.retain(|m| !left.contains(m));
            break;
        }
        if now_ms() - start > CONVERGE_BOUND.as_millis() as u64 {
            history.borrow_mut().violations.push(format!(
                "membership changes {pending:?} did not finish within {CONVERGE_BOUND:?} of the heal"
            ));
            return Ok(());
        }
        tokio::time::sleep(VIEW_PERIOD).await;
    }
    out.borrow_mut().membership_ms = Some(now_ms() - plan.healed_at_ms);
    let start = now_ms();
    // 1. One gossip view.
    while !gossip_converged(&plan, &views) {
        if now_ms() - start > CONVERGE_BOUND.as_millis() as u64 {
            let v = views.borrow().clone();
            history.borrow_mut().violations.push(format!(
                "gossip did not converge within {CONVERGE_BOUND:?} of the heal: {v:?}"
            ));
            return Ok(());
        }
        tokio::time::sleep(VIEW_PERIOD).await;
    }
    out.borrow_mut().gossip_ms = Some(now_ms() - plan.healed_at_ms);

    // 2. Replicas agree: reads with r = N repair what is stale (read repair),
    //    hinted handoff empties the hint space; anti-entropy is not in this
    //    build, so reads are what repairs a replica that missed a write.
    let keys: Vec<String> = {
        let h = history.borrow();
        h.elements
            .keys()
            .chain(h.registers.keys())
            .chain(h.lww.keys())
            .chain(h.doomed.keys())
            .cloned()
            .collect()
    };
    let gateway = plan.gateways[0].clone();
    let start = now_ms();
    loop {
        let mut pending = Vec::new();
        let mut why = String::new();
        for key in &keys {
            if let Err(e) = replicas_agree(&gateway, key).await {
                pending.push(key.clone());
                why = e;
            }
        }
        if pending.is_empty() {
            break;
        }
        if now_ms() - start > CONVERGE_BOUND.as_millis() as u64 {
            history.borrow_mut().violations.push(format!(
                "replicas of {pending:?} did not agree within {CONVERGE_BOUND:?} of gossip \
                 convergence (read repair with r=3 and hinted handoff); the last: {why}"
            ));
            return Ok(());
        }
        for key in &pending {
            let _ = workload::read(&gateway, key, Some(3)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out.borrow_mut().data_ms = Some(now_ms() - plan.healed_at_ms);

    // 3. Merkle roots: for every ring range, its owners' trees agree (the
    //    trees anti-entropy compares, maintained on every write path).
    let start = now_ms();
    loop {
        let (differ, compared) = merkle_disagreements(&plan, &stores);
        if differ.is_empty() {
            let mut o = out.borrow_mut();
            o.merkle_ms = Some(now_ms() - plan.healed_at_ms);
            o.merkle_ranges = compared;
            break;
        }
        if now_ms() - start > CONVERGE_BOUND.as_millis() as u64 {
            history.borrow_mut().violations.push(format!(
                "Merkle hashes of {} of {compared} ranges still differ between owners \
                 {CONVERGE_BOUND:?} after the replicas agreed key by key: {:?}",
                differ.len(),
                &differ[..differ.len().min(5)]
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. The oracle, on a read of every key from every gateway.
    let (elements, registers, lww, lww_ready, doomed) = {
        let h = history.borrow();
        (
            h.elements.clone(),
            h.registers.clone(),
            h.lww.clone(),
            h.lww_ready,
            h.doomed.clone(),
        )
    };
    let mut checked = 0;
    let mut lost = 0;
    let mut violations = Vec::new();
    for gateway in &plan.gateways {
        for (key, written) in &elements {
            let read = match final_read(gateway, key).await {
                Ok(read) => read,
                Err(why) => {
                    violations.push(why);
                    continue;
                }
            };
            let present: BTreeSet<String> =
                read.values.iter().flat_map(|v| decode_set(v)).collect();
            for (element, outcome) in written {
                if *outcome == Outcome::Ok {
                    checked += 1;
                    if !present.contains(element) {
                        lost += 1;
                        violations.push(format!(
                            "LOST: acknowledged element {element} missing from {key} via {gateway}"
                        ));
                    }
                }
            }
            for element in &present {
                match written.get(element) {
                    Some(Outcome::Ok | Outcome::Unknown) => {}
                    Some(Outcome::Failed) => violations.push(format!(
                        "element {element} of {key} present, but its write definitely failed"
                    )),
                    None => violations.push(format!(
                        "element {element} of {key} present, but no client ever wrote it"
                    )),
                }
            }
        }
        for (key, written) in &registers {
            let read = match final_read(gateway, key).await {
                Ok(read) => read,
                Err(why) => {
                    violations.push(why);
                    continue;
                }
            };
            let Some(seqs) = decode_register(&read.values) else {
                violations.push(format!(
                    "{key} holds a value no client wrote: {:?}",
                    read.values
                ));
                continue;
            };
            let last_acked = written
                .iter()
                .filter(|(_, o)| **o == Outcome::Ok)
                .map(|(s, _)| *s)
                .max();
            if let Some(acked) = last_acked {
                checked += 1;
                // Only an acknowledged write's successor (which saw it through
                // the writer's context) may replace it.
                if seqs.iter().max().is_none_or(|m| *m < acked) {
                    lost += 1;
                    violations.push(format!(
                        "LOST: {key} reads {seqs:?} via {gateway}, but {acked} was acknowledged"
                    ));
                }
            }
            for s in &seqs {
                match written.get(s) {
                    Some(Outcome::Ok | Outcome::Unknown) => {}
                    other => violations.push(format!(
                        "{key} holds {s}, whose write was {other:?} (never written or failed)"
                    )),
                }
            }
        }
    }
    // The lww keys: one value, one a client wrote, present once any write
    // was acknowledged.
    for gateway in plan.gateways.iter().filter(|_| lww_ready) {
        for (key, written) in &lww {
            let read = match final_read(gateway, key).await {
                Ok(read) => read,
                Err(why) => {
                    violations.push(why);
                    continue;
                }
            };
            if read.values.len() > 1 {
                violations.push(format!(
                    "{key} (lww) reads {} values via {gateway}",
                    read.values.len()
                ));
            }
            if written.values().any(|o| *o == Outcome::Ok) {
                checked += 1;
                if read.values.is_empty() {
                    lost += 1;
                    violations.push(format!(
                        "LOST: {key} (lww) reads nothing via {gateway}, but writes were acknowledged"
                    ));
                }
            }
            for v in &read.values {
                match written.get(String::from_utf8_lossy(v).as_ref()) {
                    Some(Outcome::Ok | Outcome::Unknown) => {}
                    other => violations.push(format!(
                        "{key} (lww) holds {:?}, whose write was {other:?}",
                        String::from_utf8_lossy(v)
                    )),
                }
            }
        }
    }
    // The doomed keys: deleted means absent for ever unless written again,
    // expired means absent, and an acknowledged write stands until
    // something after it may have replaced it.
    for gateway in &plan.gateways {
        for (key, ops) in &doomed {
            let read = match final_read(gateway, key).await {
                Ok(read) => read,
                Err(why) => {
                    violations.push(why);
                    continue;
                }
            };
            let now = now_ms();
            let last_ok_delete = ops
                .iter()
                .filter(|o| o.kind == workload::DoomKind::Delete && o.outcome == Outcome::Ok)
                .map(|o| o.seq)
                .max();
            let mut seqs = Vec::new();
            for v in &read.values {
                let Some((seq, _)) = workload::decode_doomed(v) else {
                    violations.push(format!("{key} holds a value no client wrote: {v:?}"));
                    continue;
                };
                seqs.push(seq);
                let Some(op) = ops.iter().find(|o| o.seq == seq) else {
                    violations.push(format!("{key} holds #{seq}, which was never written"));
                    continue;
                };
                match op.outcome {
                    Outcome::Failed => violations.push(format!(
                        "{key} holds #{seq}, whose write definitely failed"
                    )),
                    // The delete's context covered it (contexts chain
                    // through acknowledged ops).
                    Outcome::Ok if last_ok_delete.is_some_and(|d| d > seq) => {
                        violations.push(format!(
                            "RESURRECTED: {key} holds #{seq} via {gateway}, deleted by #{} (acknowledged)",
                            last_ok_delete.unwrap_or_default()
                        ))
                    }
                    _ => {}
                }
                if op.kind == workload::DoomKind::Expiring
                    && now >= op.end_ms + workload::DOOM_TTL_S * 1000
                {
                    violations.push(format!(
                        "EXPIRED: {key} holds #{seq} via {gateway}, {} ms after its TTL ran out",
                        now - op.end_ms - workload::DOOM_TTL_S * 1000
                    ));
                }
            }
            // The last acknowledged op, if a plain write with nothing after it
            // that may have applied, must still be there (or a later write).
            if let Some(last) = ops.iter().rposition(|o| o.outcome == Outcome::Ok) {
                let op = &ops[last];
                let later_maybe = ops[last + 1..]
                    .iter()
                    .any(|o| o.outcome == Outcome::Unknown);
                if op.kind == workload::DoomKind::Write && !later_maybe {
                    checked += 1;
                    if !seqs.iter().any(|s| *s >= op.seq) {
                        lost += 1;
                        violations.push(format!(
                            "LOST: {key} reads {seqs:?} via {gateway}, but #{} was acknowledged last",
                            op.seq
                        ));
                    }
                }
            }
        }
    }
    // 5. Listing: every key with an acknowledged write is listed in its
    //    bucket (no client deletes), from the first gateway.
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let acked = |o: &Outcome| *o == Outcome::Ok;
    for (key, w) in &elements {
        if w.values().any(acked) {
            expected.entry("default").or_default().insert(key.clone());
        }
    }
    for (key, w) in &registers {
        if w.values().any(acked) {
            expected.entry("default").or_default().insert(key.clone());
        }
    }
    for (key, w) in &lww {
        if w.values().any(acked) {
            let k = key.trim_start_matches("lww/").to_string();
            expected.entry(workload::LWW_BUCKET).or_default().insert(k);
        }
    }
    for (bucket, keys) in &expected {
        match list_bucket(&plan.gateways[0], bucket).await {
            Ok(listed) => {
                for k in keys.difference(&listed) {
                    violations.push(format!("{k} of bucket {bucket} is not listed"));
                }
            }
            Err(why) => violations.push(why),
        }
    }
    let mut h = history.borrow_mut();
    h.log(format!(
        "final check: {checked} acknowledged writes checked, {lost} lost"
    ));
    h.violations.extend(violations);
    let purged = stores.borrow().values().fold((0, 0), |(t, e), s| {
        let c = s.counters();
        (
            t + c
                .tombstones_purged
                .load(std::sync::atomic::Ordering::Relaxed),
            e + c.expired_purged.load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    let mut o = out.borrow_mut();
    o.acked_checked = checked;
    o.lost = lost;
    o.purged = purged;
    Ok(())
}
