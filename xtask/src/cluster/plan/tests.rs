//! The planner's tests: reading the cluster's answer, naming the next node
//! and rendering, on rings built in memory (no cluster runs). What moves is
//! `shoal_ring::view::plan`'s, tested there.

use super::*;

fn members(k: usize) -> Vec<Member> {
    (1..=k)
        .map(|i| Member::new(format!("node-{i}"), 1))
        .collect()
}

#[test]
fn the_cluster_answer_gives_the_storage_ring() {
    let v = serde_json::json!({"n": 3, "r": 2, "w": 2, "members": [
            {"id": "gateway-1", "addr": "127.0.0.1:7100", "role": "gateway", "status": "alive", "weight": 1, "joining": false},
            {"id": "node-1", "addr": "127.0.0.1:7101", "role": "storage", "status": "alive", "weight": 1, "joining": false},
            {"id": "node-2", "addr": "127.0.0.1:7102", "role": "storage", "status": "down", "weight": 2, "joining": false},
            {"id": "node-3", "addr": "127.0.0.1:7103", "role": "storage", "status": "left", "weight": 1, "joining": false},
            {"id": "node-4", "addr": "127.0.0.1:7104", "role": "storage", "status": "alive", "weight": 1, "joining": true},
            {"id": "node-5", "addr": "127.0.0.1:7105", "role": "storage", "status": "leaving", "weight": 1, "joining": false, "zone": "b"}
        ], "ownership": {}});
    let s = parse_cluster(&v).unwrap();
    assert_eq!(s.n, 3);
    let ids: Vec<&str> = s.storage.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["node-1", "node-2", "node-4", "node-5"]);
    assert_eq!(s.storage[3].zone.as_deref(), Some("b"));
    // Down members stay on the ring; the joining one is in, the leaving one out.
    let ring: Vec<(String, u32)> = base(&s).into_iter().map(|m| (m.id, m.weight)).collect();
    assert_eq!(
        ring,
        [
            ("node-1".into(), 1),
            ("node-2".into(), 2),
            ("node-4".into(), 1)
        ]
    );
    // The join under way and the down node.
    assert_eq!(notes_of(&s), 2);
    assert_eq!(next_id(s.storage_ids.iter().map(String::as_str)), "node-6");
}

fn notes_of(s: &Snapshot) -> usize {
    base_notes(s).len()
}

#[test]
fn the_next_id_follows_the_ids_in_use() {
    assert_eq!(next_id(["node-1", "node-2", "node-3"]), "node-4");
    assert_eq!(
        next_id(["shoal-node-0", "shoal-node-1", "shoal-gateway-7c9d"]),
        "shoal-node-2"
    );
    assert_eq!(next_id(["node-1", "node-10", "node-2"]), "node-11");
    assert_eq!(next_id(["alpha", "beta"]), "node-1");
}

#[test]
fn metrics_text_and_addresses() {
    let text = "# HELP shoal_storage_sstable_bytes Bytes of live sstables\n\
                    # TYPE shoal_storage_sstable_bytes gauge\n\
                    shoal_storage_sstable_bytes 1000\n\
                    shoal_storage_sstables 2\n\
                    shoal_storage_memtable_bytes 24.0\n";
    assert_eq!(stored_bytes(text), Ok(1024));
    assert!(stored_bytes("shoal_storage_sstables 2\n").is_err());
    assert_eq!(
        reachable("0.0.0.0:9100", "shoal-node-0.x:7000"),
        "shoal-node-0.x:9100"
    );
    assert_eq!(reachable("[::]:9100", "10.0.0.1:7000"), "10.0.0.1:9100");
    assert_eq!(
        reachable("127.0.0.1:9101", "127.0.0.1:7101"),
        "127.0.0.1:9101"
    );
    assert_eq!(
        parse_url("http://10.0.0.1:8080/"),
        Ok("10.0.0.1:8080".into())
    );
    assert_eq!(parse_url("gw.svc:8080"), Ok("gw.svc:8080".into()));
    assert!(parse_url("https://gw:8080").is_err());
    assert!(parse_url("http://gw:8080/v1").is_err());
}

#[test]
fn the_rendered_plan_names_every_range_and_node_and_the_estimate() {
    let before = members(3);
    let mut after = before.clone();
    after.push(Member::new("node-4", 1));
    let p = plan(&before, &after, 3).unwrap();
    let snapshot = Snapshot {
        n: 3,
        storage: before
            .iter()
            .map(|m| Seen {
                id: m.id.clone(),
                addr: String::new(),
                weight: 1,
                zone: None,
                status: "alive".into(),
                joining: false,
            })
            .collect(),
        storage_ids: BTreeSet::new(),
    };
    let volumes = BTreeMap::from([("node-1".to_string(), 3_000_000u64)]);
    let text = render(
        "plan: add node-4",
        "127.0.0.1:8080",
        &snapshot,
        &p,
        &volumes,
        &["node-2 (refused)".to_string()],
        &[],
    );
    // One line per range, plus the header.
    let range_lines = text.lines().filter(|l| l.starts_with("[0x")).count();
    assert_eq!(range_lines, p.changes.len());
    assert!(text.contains("node-4  (new)"), "{text}");
    // node-1 holds a third of 9 MB: the total is scaled up from it.
    assert!(text.contains("of 9.0 MB stored"), "{text}");
    assert!(
        text.contains("no stored bytes from: node-2 (refused)"),
        "{text}"
    );
}
