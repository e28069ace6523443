//! `/metrics` on the gateway and on a node, scraped and parsed as
//! Prometheus does: a PUT moves `shoal_gateway_requests_total`, a stopped
//! node moves `shoal_gossip_member_up`, and a write while an owner is down
//! moves `shoal_sloppy_writes_total` and a node's `shoal_hints_pending`.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use shoal_tests::cluster::{node_id, Cluster, Spec};
use shoal_tests::http::fetch;
use shoal_tests::wait;

async fn scrape(addr: SocketAddr) -> Scrape {
    let reply = fetch(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        reply.status,
        200,
        "GET /metrics on {addr}: {}",
        reply.text()
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    promtool_check(&text);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines).unwrap_or_else(|e| panic!("unparsable /metrics on {addr}: {e}\n{text}"))
}

/// `promtool check metrics` (Prometheus' own linter: names, units, types,
/// help) on a scrape; `.ci/run` installs it. Without it, says so and checks
/// only what the parser checks.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not found: skipping `promtool check metrics` (.ci/run installs it)");
        return;
    };
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of `name` with every label in `labels` (summed over the
/// series that match; histograms count their observations).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in &scrape.samples {
        if s.metric != name || !labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
            continue;
        }
        let v = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => continue,
        };
        *found.get_or_insert(0.0) += v;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_node_metrics_move_with_what_happens() {
    let mut cluster = Cluster::start_with(
        Spec {
            // Four, so that a down owner has a fallback to hint on.
            nodes: 4,
            anti_entropy: false,
            ..Spec::default()
        },
        |_, config| config.metrics.listen = "127.0.0.1:0".into(),
    )
    .await;
    let gateway = cluster.gateway_addr();
    let node_metrics: Vec<SocketAddr> = (0..4)
        .map(|i| {
            cluster
                .node(i)
                .and_then(|n| n.metrics_addr())
                .expect("a node with metrics.listen serves /metrics")
        })
        .collect();

    // Every series the API names, on the endpoint that names it.
    let g = scrape(gateway).await;
    for name in [
        "shoal_overloaded_total",
        "shoal_read_repairs_total",
        "shoal_sloppy_writes_total",
        "shoal_read_siblings_count",
        "shoal_gossip_member_up",
        "shoal_gossip_phi",
        "shoal_rpc_handshake_failures_total",
    ] {
        assert!(value(&g, name, &[]).is_some(), "gateway lacks {name}");
    }
    let n = scrape(node_metrics[0]).await;
    for name in [
        "shoal_hints_delivered_total",
        "shoal_anti_entropy_keys_repaired_total",
        "shoal_storage_fsync_duration_seconds_count",
        "shoal_storage_sstables",
        "shoal_storage_memtable_bytes",
        "shoal_storage_compaction_backlog",
        "shoal_gossip_member_up",
        "shoal_rpc_connections_open",
    ] {
        assert!(value(&n, name, &[]).is_some(), "node lacks {name}");
    }
    // The node serves /metrics only.
    let other = fetch(node_metrics[0], "GET", "/v1/kv/k", &[], b"").await;
    assert_eq!(other.status, 404);

    // A PUT moves the gateway's request counter and its latency histogram.
    let put = |k: &'static str| async move {
        fetch(gateway, "PUT", &format!("/v1/kv/{k}"), &[], b"v").await
    };
    let before = value(
        &g,
        "shoal_gateway_requests_total",
        &[("op", "put"), ("code", "204")],
    )
    .unwrap_or(0.0);
    assert_eq!(put("metrics-a").await.status, 204);
    let g = scrape(gateway).await;
    let after = value(
        &g,
        "shoal_gateway_requests_total",
        &[("op", "put"), ("code", "204")],
    );
    assert_eq!(after, Some(before + 1.0), "PUT not counted");
    assert!(value(
        &g,
        "shoal_gateway_request_duration_seconds_count",
        &[("op", "put")]
    )
    .is_some_and(|c| c >= 1.0));
    // ...and the RPCs it made are timed on the nodes.
    let mut coordinated = 0.0;
    for addr in &node_metrics {
        let s = scrape(*addr).await;
        coordinated += value(
            &s,
            "shoal_node_rpc_duration_seconds_count",
            &[("rpc", "coordinate_forward")],
        )
        .unwrap_or(0.0);
    }
    assert!(coordinated >= 1.0, "no node timed the write's RPC");

    // A stopped node turns 0 in shoal_gossip_member_up.
    let down = node_id(3);
    let up = |s: &Scrape| value(s, "shoal_gossip_member_up", &[("member", down.as_str())]);
    assert_eq!(up(&scrape(gateway).await), Some(1.0));
    cluster.stop(3).await;
    wait::until(
        Duration::from_secs(15),
        "the gateway's member_up to fall",
        || async { up(&scrape(gateway).await) == Some(0.0) },
    )
    .await;
    wait::until(
        Duration::from_secs(15),
        "node-1's member_up to fall",
        || async { up(&scrape(node_metrics[0]).await) == Some(0.0) },
    )
    .await;

    // Writes while it is down: sloppy, and hinted on a fallback.
    let sloppy_before = value(&scrape(gateway).await, "shoal_sloppy_writes_total", &[]).unwrap();
    for i in 0..20 {
        let key = format!("/v1/kv/sloppy-{i}");
        assert_eq!(fetch(gateway, "PUT", &key, &[], b"v").await.status, 204);
    }
    let sloppy_after = value(&scrape(gateway).await, "shoal_sloppy_writes_total", &[]).unwrap();
    assert!(
        sloppy_after >= sloppy_before + 1.0,
        "no write counted as sloppy: {sloppy_before} -> {sloppy_after}"
    );
    let mut pending = 0.0;
    for addr in &node_metrics[..3] {
        pending += value(
            &scrape(*addr).await,
            "shoal_hints_pending",
            &[("owner", down.as_str())],
        )
        .unwrap_or(0.0);
    }
    assert!(pending >= 1.0, "no node shows hints pending for {down}");

    // The dashboard's JSON sees the same.
    let stats = fetch(gateway, "GET", "/v1/cluster/stats", &[], b"").await;
    assert_eq!(stats.status, 200);
    let body = stats.json().expect("stats JSON");
    let members = body["members"].as_array().expect("members");
    let node = |id: &str| members.iter().find(|m| m["id"] == id).cloned().unwrap();
    assert_eq!(node(&down)["status"], "down");
    assert!(node(&node_id(0))["metrics_addr"].is_string());
    assert!(body["hints_pending_by_owner"][down.as_str()].as_u64() >= Some(1));
    assert!(!body["ring"]["arcs"].as_array().unwrap().is_empty());
    cluster.shutdown().await;
}
