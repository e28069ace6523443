//! The planner's tests: shares, movement and rendering, on rings built
//! in memory (no cluster runs).

use super::*;

fn members(k: usize) -> Vec<Member> {
    (1..=k)
        .map(|i| Member::new(format!("node-{i}"), 1))
        .collect()
}

fn sum(shares: &BTreeMap<String, f64>) -> f64 {
    shares.values().sum()
}

#[test]
fn shares_before_and_after_sum_to_one() {
    for k in [1, 2, 3, 5, 8] {
        let before = members(k);
        let mut after = before.clone();
        after.push(Member::new("node-new", 2));
        let p = plan(&before, &after, 3).unwrap();
        assert!((sum(&p.before) - 1.0).abs() < 1e-9, "k={k}");
        assert!((sum(&p.after) - 1.0).abs() < 1e-9, "k={k}");
        assert_eq!(p.after.len(), k + 1);
        if k > 1 {
            let p = plan(&before, &before[1..], 3).unwrap();
            assert!((sum(&p.before) - 1.0).abs() < 1e-9, "k={k}");
            assert!((sum(&p.after) - 1.0).abs() < 1e-9, "k={k}");
            assert!(!p.after.contains_key("node-1"));
        }
    }
}

#[test]
fn a_join_moves_about_one_in_k_plus_one_of_the_copies_all_to_the_joiner() {
    for k in [3usize, 4, 6, 9] {
        let before = members(k);
        let joiner = Member::new("node-new", 1);
        let mut after = before.clone();
        after.push(joiner.clone());
        let p = plan(&before, &after, 3).unwrap();
        let ideal = 1.0 / (k as f64 + 1.0);
        let moved = p.copies_moved();
        assert!(
            (moved - ideal).abs() < 0.25 * ideal,
            "k={k}: moved {moved}, ideal {ideal}"
        );
        // Every new copy goes to the joiner, and it ends with exactly
        // what it received: its whole share.
        assert_eq!(p.received.keys().collect::<Vec<_>>(), ["node-new"]);
        assert!((p.after["node-new"] - moved).abs() < 1e-9);
        for c in &p.changes {
            assert_eq!(c.gained, ["node-new"]);
            assert_eq!(c.lost.len(), 1, "{c:?}");
        }
        // The ranges the joiner's handover streams: the same list.
        let gained =
            shoal_ring::view::gained_ranges(&before, &joiner, 3, RingConfig::default()).unwrap();
        assert_eq!(gained, p.changes);
    }
}

#[test]
fn a_decommission_moves_exactly_the_leaving_nodes_ranges() {
    let before = members(5);
    let after: Vec<Member> = before
        .iter()
        .filter(|m| m.id != "node-2")
        .cloned()
        .collect();
    let p = plan(&before, &after, 3).unwrap();
    let old = Ring::new(before.clone(), RingConfig::default()).unwrap();
    // The ranges it replicated, merged where adjacent...
    let mut held = 0.0;
    for range in old.ranges() {
        if old.replicas_of(&range, 3).contains(&"node-2") {
            held += range.fraction();
        }
    }
    // ...are the ranges that change, each losing node-2 alone to one
    // new replica.
    assert!(
        (p.key_space - held).abs() < 1e-9,
        "{} vs {held}",
        p.key_space
    );
    for c in &p.changes {
        assert_eq!(c.lost, ["node-2"]);
        assert_eq!(c.gained.len(), 1);
        assert!(c.old_replicas.contains(&"node-2".to_string()));
    }
    // What is copied is the leaver's whole share, and nobody else loses.
    assert!((p.copies_moved() - p.before["node-2"]).abs() < 1e-9);
    for (id, after) in &p.after {
        assert!(*after >= p.before[id] - 1e-9, "{id} lost share");
    }
    let lost = shoal_ring::view::lost_ranges(&before, "node-2", 3, RingConfig::default()).unwrap();
    assert_eq!(lost, p.changes);
}

#[test]
fn below_n_a_decommission_copies_nothing_and_a_join_copies_everything() {
    let three = members(3);
    let p = plan(&three, &three[..2], 3).unwrap();
    assert!((p.key_space - 1.0).abs() < 1e-9);
    assert_eq!(p.copies_moved(), 0.0);
    assert_eq!((p.copies_before, p.copies_after), (3, 2));
    let mut four = members(2);
    four.push(Member::new("node-3", 1));
    let p = plan(&members(2), &four, 3).unwrap();
    assert!(
        (p.copies_moved() - 0.5).abs() < 1e-9,
        "{}",
        p.copies_moved()
    );
}

#[test]
fn a_zone_of_its_own_makes_the_joiner_a_replica_of_every_key() {
    // Two zones of three, N = 3: a third zone's first member holds one
    // copy of every key.
    let before: Vec<Member> = (1..=6)
        .map(|i| Member::new(format!("node-{i}"), 1).in_zone(["a", "b"][i % 2]))
        .collect();
    let mut after = before.clone();
    after.push(Member::new("node-7", 1).in_zone("c"));
    let p = plan(&before, &after, 3).unwrap();
    assert!(
        (p.after["node-7"] - 1.0 / 3.0).abs() < 1e-9,
        "{:?}",
        p.after
    );
    assert!((p.key_space - 1.0).abs() < 1e-9);
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
