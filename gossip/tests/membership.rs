//! The state machine tested on what it emits: messages, events, refusals.

use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use shoal_gossip::{
    Ack, Ack2, Body, Config, Detector, Digest, Event, GossipError, Lifecycle, LocalMember,
    MemberId, Membership, Message, Record, Role, Status, Syn, PROTOCOL_VERSION,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn addr(id: &str) -> String {
    format!("{id}:7001")
}

fn member(id: &str, seeds: &[&str]) -> Membership {
    let local = LocalMember {
        id: id.into(),
        address: addr(id),
        role: Role::Storage,
        weight: 1,
        zone: "default".into(),
        incarnation: 1,
    };
    let seeds = seeds.iter().map(|s| addr(s)).collect();
    Membership::new(
        Config::default(),
        local,
        seeds,
        StdRng::seed_from_u64(7),
        Duration::ZERO,
    )
    .expect("valid config")
}

fn record(id: &str, incarnation: u64, meta_version: u64, heartbeat: u64) -> Record {
    Record {
        id: id.into(),
        address: addr(id),
        role: Role::Storage,
        weight: 1,
        zone: "default".into(),
        lifecycle: Lifecycle::Active,
        incarnation,
        meta_version,
        heartbeat,
    }
}

fn msg(from: &str, body: Body) -> Message {
    Message {
        version: PROTOCOL_VERSION,
        from: from.into(),
        body,
    }
}

fn ack2(records: Vec<Record>) -> Message {
    msg("x", Body::Ack2(Ack2 { records }))
}

/// Hands `records` to `m` the way a peer does: its digest first, then an Ack2
/// with the records `m` asked for in its Ack. (An Ack2 nobody asked for is
/// refused, so the tests cannot simply push one.)
fn deliver(m: &mut Membership, records: Vec<Record>, now: Duration) -> Result<(), GossipError> {
    let mut entries: Vec<Digest> = records
        .iter()
        .map(|r| digest(r.id.as_str(), r.incarnation, r.meta_version, r.heartbeat))
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    let syn = msg(
        "x",
        Body::Syn(Syn {
            digest: entries,
            complete: false,
        }),
    );
    let replies = m.receive("x", syn, now)?;
    let requests = match replies.first().map(|o| &o.message.body) {
        Some(Body::Ack(ack)) => ack.requests.clone(),
        _ => Vec::new(),
    };
    let wanted: Vec<Record> = records
        .into_iter()
        .filter(|r| requests.contains(&r.id))
        .collect();
    if !wanted.is_empty() {
        m.receive("x", ack2(wanted), now)?;
    }
    Ok(())
}

fn digest(id: &str, incarnation: u64, meta_version: u64, heartbeat: u64) -> Digest {
    Digest {
        id: id.into(),
        incarnation,
        meta_version,
        heartbeat,
    }
}

#[test]
fn first_tick_goes_to_the_seeds_with_the_local_digest() {
    let mut a = member("a", &["s1", "s2", "a"]);
    let out = a.tick(secs(1));
    let mut to: Vec<_> = out.iter().map(|o| o.to.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        vec![addr("s1"), addr("s2")],
        "own address is not a seed"
    );
    let expected = msg(
        "a",
        Body::Syn(Syn {
            digest: vec![digest("a", 1, 0, 1)],
            complete: true,
        }),
    );
    assert!(out.iter().all(|o| o.message == expected));
}

#[test]
fn alone_without_seeds_sends_nothing() {
    let mut a = member("a", &[]);
    assert!(a.tick(secs(1)).is_empty());
}

#[test]
fn syn_from_a_stranger_is_answered_with_a_request_and_what_it_lacks() {
    let mut s = member("s", &[]);
    s.tick(secs(1));
    deliver(&mut s, vec![record("z", 1, 0, 4)], secs(1)).expect("valid");
    let syn = msg(
        "b",
        Body::Syn(Syn {
            digest: vec![digest("b", 1, 0, 3)],
            complete: true,
        }),
    );
    let out = s.receive(&addr("b"), syn, secs(1)).expect("valid");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, addr("b"));
    let mut s_record = record("s", 1, 0, 1);
    s_record.address = addr("s");
    assert_eq!(
        out[0].message.body,
        Body::Ack(Ack {
            records: vec![s_record, record("z", 1, 0, 4)],
            heartbeats: vec![],
            requests: vec!["b".into()],
            echo: None,
        })
    );
}

#[test]
fn ack_requests_are_answered_with_records_and_heartbeats_merged() {
    let mut a = member("a", &["s"]);
    deliver(&mut a, vec![record("c", 1, 0, 2)], secs(1)).expect("valid");
    let ack = msg(
        "s",
        Body::Ack(Ack {
            records: vec![],
            heartbeats: vec![digest("c", 1, 0, 9)],
            requests: vec!["a".into(), "unknown".into()],
            echo: None,
        }),
    );
    let out = a.receive(&addr("s"), ack, secs(2)).expect("valid");
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].message.body,
        Body::Ack2(Ack2 {
            records: vec![record("a", 1, 0, 0)]
        })
    );
    assert_eq!(a.member("c").map(|m| m.heartbeat), Some(9));
}

#[test]
fn newest_incarnation_then_highest_heartbeat_wins() {
    let mut a = member("a", &[]);
    for (r, expect) in [
        (record("b", 1, 0, 5), (1, 5)),
        (record("b", 1, 0, 3), (1, 5)),  // older heartbeat: ignored
        (record("b", 2, 0, 1), (2, 1)),  // restart: replaces at once
        (record("b", 1, 0, 99), (2, 1)), // old process: ignored
        (record("b", 2, 0, 2), (2, 2)),
    ] {
        deliver(&mut a, vec![r], secs(1)).expect("valid");
        let m = a.member("b").expect("known");
        assert_eq!((m.incarnation, m.heartbeat), expect);
    }
    assert_eq!(
        a.drain_events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Joined(_)))
            .collect::<Vec<_>>(),
        vec![Event::Restarted {
            id: "b".into(),
            incarnation: 2
        }]
    );
}

#[test]
fn event_sequence_for_one_member_life() {
    let mut a = member("a", &[]);
    deliver(&mut a, vec![record("b", 1, 0, 1)], secs(0)).expect("valid");
    a.tick(secs(6));
    assert_eq!(a.status("b"), Some(Status::Suspect));
    a.tick(secs(11));
    assert_eq!(a.status("b"), Some(Status::Down));
    deliver(&mut a, vec![record("b", 1, 0, 2)], secs(12)).expect("valid");
    assert_eq!(a.status("b"), Some(Status::Alive));
    let mut heavier = record("b", 1, 3, 3);
    heavier.weight = 2;
    deliver(&mut a, vec![heavier.clone()], secs(13)).expect("valid");
    let mut leaving = heavier.clone();
    leaving.lifecycle = Lifecycle::Leaving;
    leaving.meta_version = 4;
    leaving.heartbeat = 4;
    deliver(&mut a, vec![leaving.clone()], secs(14)).expect("valid");
    assert_eq!(a.status("b"), Some(Status::Leaving));
    let mut left = leaving;
    left.lifecycle = Lifecycle::Left;
    left.meta_version = 5;
    left.heartbeat = 5;
    deliver(&mut a, vec![left], secs(15)).expect("valid");
    assert_eq!(a.status("b"), Some(Status::Left));
    a.tick(secs(15 + 3_600));
    assert_eq!(a.member("b"), None);

    let events = a.drain_events();
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Joined(_) => "joined",
            Event::Up { .. } => "up",
            Event::Down { .. } => "down",
            Event::Leaving { .. } => "leaving",
            Event::Left { .. } => "left",
            Event::Changed { .. } => "changed",
            Event::Restarted { .. } => "restarted",
            Event::Forgotten { .. } => "forgotten",
            Event::Refused { .. } => "refused",
        })
        .collect();
    assert_eq!(
        names,
        [
            "joined",
            "down",
            "up",
            "changed",
            "leaving",
            "left",
            "forgotten"
        ]
    );
    // Forgotten means quarantined: the same version cannot come back.
    deliver(&mut a, vec![heavier], secs(3_700)).expect("valid");
    assert_eq!(a.member("b"), None);
    // A real restart can.
    deliver(&mut a, vec![record("b", 2, 0, 1)], secs(3_700)).expect("valid");
    assert_eq!(a.status("b"), Some(Status::Alive));
}

#[test]
fn a_newer_record_of_ourselves_is_refuted() {
    let mut a = member("a", &[]);
    let mut forged = record("a", 1, 40, 40);
    forged.lifecycle = Lifecycle::Left;
    deliver(&mut a, vec![forged], secs(1)).expect("valid");
    let local = a.local();
    assert_eq!(local.status, Status::Alive);
    assert_eq!((local.incarnation, local.heartbeat), (1, 41));
    deliver(&mut a, vec![record("a", 5, 0, 2)], secs(1)).expect("valid");
    assert_eq!(
        a.local().incarnation,
        5,
        "caller must persist the raised incarnation"
    );
}

#[test]
fn local_changes_bump_the_meta_version() {
    let mut a = member("a", &["s"]);
    a.set_weight(3);
    a.start_leaving();
    let out = a.tick(secs(1));
    match &out[0].message.body {
        Body::Syn(syn) => assert_eq!(syn.digest, vec![digest("a", 1, 2, 3)]),
        other => panic!("expected a syn, got {other:?}"),
    }
    assert_eq!(a.local().status, Status::Leaving);
    a.leave();
    a.start_leaving();
    assert_eq!(a.local().status, Status::Left, "leaving is final");
    assert_eq!(
        a.set_address(String::new()),
        Err(GossipError::BadFieldLength {
            field: "address",
            len: 0,
            max: 256
        })
    );
}

#[test]
fn bad_messages_are_refused_with_typed_errors() {
    let mut a = member("a", &[]);
    let cases: Vec<(Message, GossipError)> = vec![
        (
            Message {
                version: 9,
                ..ack2(vec![])
            },
            GossipError::UnsupportedVersion {
                got: 9,
                supported: PROTOCOL_VERSION,
            },
        ),
        (
            msg(
                "b",
                Body::Syn(Syn {
                    digest: vec![digest("c", 1, 0, 1), digest("b", 1, 0, 1)],
                    complete: true,
                }),
            ),
            GossipError::UnsortedDigest {
                id: "b".into(),
                previous: "c".into(),
            },
        ),
        (
            ack2(vec![record("b", 1, 5, 4)]),
            GossipError::InconsistentEntry {
                id: "b".into(),
                meta_version: 5,
                heartbeat: 4,
            },
        ),
        (
            ack2(vec![record(&"x".repeat(200), 1, 0, 1)]),
            GossipError::BadFieldLength {
                field: "id",
                len: 200,
                max: 128,
            },
        ),
        (
            ack2(vec![Record {
                zone: String::new(),
                ..record("b", 1, 0, 1)
            }]),
            GossipError::BadFieldLength {
                field: "zone",
                len: 0,
                max: 64,
            },
        ),
        (
            ack2(vec![Record {
                zone: "z".repeat(65),
                ..record("b", 1, 0, 1)
            }]),
            GossipError::BadFieldLength {
                field: "zone",
                len: 65,
                max: 64,
            },
        ),
        (
            msg(
                "b",
                Body::Ack(Ack {
                    records: vec![],
                    heartbeats: vec![],
                    requests: vec![MemberId::from("r"); 10_000],
                    echo: None,
                }),
            ),
            GossipError::TooManyEntries {
                count: 10_000,
                max: 64_000 / 9,
            },
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(a.receive("x", message, secs(1)), Err(expected));
    }
    assert_eq!(a.members().len(), 1, "refused messages change nothing");
}

#[test]
fn invalid_configs_are_refused() {
    let local = LocalMember {
        id: "a".into(),
        address: addr("a"),
        role: Role::Gateway,
        weight: 1,
        zone: "default".into(),
        incarnation: 1,
    };
    let cases = [
        (
            Config {
                fanout: 0,
                ..Config::default()
            },
            "fanout",
        ),
        (
            Config {
                max_message_bytes: 100,
                ..Config::default()
            },
            "max_message_bytes",
        ),
        (
            Config {
                detector: Detector::Timeout {
                    suspect_after: secs(5),
                    down_after: secs(1),
                },
                ..Config::default()
            },
            "detector.suspect_after",
        ),
        (
            Config {
                detector: Detector::PhiAccrual {
                    suspect_phi: 1.0,
                    down_phi: f64::NAN,
                    window: 10,
                },
                ..Config::default()
            },
            "detector.down_phi",
        ),
    ];
    for (config, field) in cases {
        let err = Membership::new(
            config,
            local.clone(),
            vec![],
            StdRng::seed_from_u64(1),
            secs(0),
        )
        .expect_err("invalid");
        assert!(
            matches!(err, GossipError::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    }
}

#[test]
fn a_zone_travels_with_the_record_and_must_fit() {
    let zoned = |zone: &str| LocalMember {
        id: "a".into(),
        address: addr("a"),
        role: Role::Storage,
        weight: 1,
        zone: zone.into(),
        incarnation: 1,
    };
    let new = |local| {
        Membership::new(
            Config::default(),
            local,
            vec![],
            StdRng::seed_from_u64(1),
            secs(0),
        )
    };
    for (zone, len) in [("", 0), (&*"z".repeat(65), 65)] {
        assert_eq!(
            new(zoned(zone)).err(),
            Some(GossipError::BadFieldLength {
                field: "zone",
                len,
                max: 64
            })
        );
    }
    let a = new(zoned("eu-west-1a")).expect("valid");
    assert_eq!(a.local().zone, "eu-west-1a");
    // b hears of a through a's record, zone included.
    let mut b = member("b", &[]);
    let record = Record {
        zone: "eu-west-1a".into(),
        ..record("a", 1, 0, 1)
    };
    deliver(&mut b, vec![record], secs(1)).expect("merges");
    assert_eq!(b.member("a").map(|i| i.zone), Some("eu-west-1a".into()));
}

#[test]
fn statuses_and_roles_use_lower_case_names_for_the_http_api() {
    for (status, name) in [
        (Status::Alive, "\"alive\""),
        (Status::Suspect, "\"suspect\""),
        (Status::Down, "\"down\""),
        (Status::Leaving, "\"leaving\""),
        (Status::Left, "\"left\""),
    ] {
        assert_eq!(serde_json::to_string(&status).expect("encodes"), name);
    }
    let info = member("a", &[]).local();
    let json = serde_json::to_string(&info).expect("encodes");
    assert_eq!(
        json,
        r#"{"id":"a","address":"a:7001","role":"storage","status":"alive","weight":1,"zone":"default","heartbeat":0,"incarnation":1}"#
    );
}

fn arb_record() -> impl Strategy<Value = Record> {
    (0..4usize, 1..3u64, 0..6u64, 0..6u64, 1..4u32, 0..3u8).prop_map(
        |(id, inc, meta, extra, weight, lc)| {
            let lifecycle =
                [Lifecycle::Active, Lifecycle::Leaving, Lifecycle::Left][usize::from(lc)];
            Record {
                weight,
                lifecycle,
                ..record(&format!("m{id}"), inc, meta, meta + extra)
            }
        },
    )
}

/// The view a set of records leaves, per member: the winning version.
fn view(records: &[Record]) -> Vec<(String, u64, u64)> {
    let mut a = member("a", &[]);
    for r in records {
        deliver(&mut a, vec![r.clone()], secs(1)).expect("valid");
    }
    a.members()
        .into_iter()
        .map(|m| (m.id.to_string(), m.incarnation, m.heartbeat))
        .collect()
}

proptest! {
    /// Merge laws: the view after receiving records is independent of their
    /// order (commutative, associative) and of duplicates (idempotent).
    #[test]
    fn merge_is_order_and_duplicate_insensitive(records in proptest::collection::vec(arb_record(), 0..12), seed in any::<u64>()) {
        let mut shuffled = records.clone();
        use rand::seq::SliceRandom;
        shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
        let mut doubled = records.clone();
        doubled.extend(records.iter().cloned());
        prop_assert_eq!(view(&records), view(&shuffled));
        prop_assert_eq!(view(&records), view(&doubled));
    }

    /// `Message::encoded_len` is exactly bincode's size, so the cap holds.
    #[test]
    fn size_estimate_matches_bincode(records in proptest::collection::vec(arb_record(), 0..8), complete in any::<bool>()) {
        let digests: Vec<Digest> = records.iter().map(|r| digest(r.id.as_str(), r.incarnation, r.meta_version, r.heartbeat)).collect();
        for body in [
            Body::Syn(Syn { digest: digests.clone(), complete }),
            Body::Ack(Ack { records: records.clone(), heartbeats: digests.clone(), requests: records.iter().map(|r| r.id.clone()).collect(), echo: digests.first().cloned() }),
            Body::Ack2(Ack2 { records: records.clone() }),
        ] {
            let m = msg("sender", body);
            let bytes = bincode::serialize(&m).expect("encodes");
            prop_assert_eq!(bytes.len(), m.encoded_len());
            let back: Message = bincode::deserialize(&bytes).expect("decodes");
            prop_assert_eq!(back, m);
        }
    }

    /// Arbitrary bytes never panic the decoder-plus-receiver path.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = bincode::deserialize::<Message>(&bytes) {
            let mut a = member("a", &[]);
            let _ = a.receive("x", m, secs(1));
        }
    }
}

#[test]
fn health_reads_phi_and_silence_and_grows_while_a_member_is_silent() {
    let mut m = member("a", &[]);
    deliver(&mut m, vec![record("b", 1, 0, 1)], secs(0)).expect("accepted");
    assert_eq!(m.health("a"), None, "a member does not watch itself");
    assert_eq!(m.health("nobody"), None);
    m.tick(secs(1));
    let early = m.health("b").expect("b is known");
    m.tick(secs(20));
    let late = m.health("b").expect("b is known");
    assert!(late.silence > early.silence, "{early:?} then {late:?}");
    assert!(late.phi > early.phi, "{early:?} then {late:?}");
    assert!(late.phi.is_finite());
}

/// What a reader of one member sees: every member's record fields and status.
fn observed(m: &Membership) -> Vec<String> {
    m.members().iter().map(|i| format!("{i:?}")).collect()
}

#[derive(Debug, Clone)]
enum ChangeOp {
    /// Member `i` ticks after `ms` milliseconds.
    Tick(usize, u64),
    /// The oldest queued message is delivered (or dropped).
    Deliver(bool),
    /// Member `i` drains its events and is read: neither may move the counter
    /// or the view.
    Read(usize),
    Reweigh(usize, u32),
    Leave(usize),
}

fn arb_change_op() -> impl Strategy<Value = ChangeOp> {
    prop_oneof![
        (0..3usize, 0..3_000u64).prop_map(|(i, ms)| ChangeOp::Tick(i, ms)),
        any::<bool>().prop_map(ChangeOp::Deliver),
        (0..3usize).prop_map(ChangeOp::Read),
        (0..3usize, 1..4u32).prop_map(|(i, w)| ChangeOp::Reweigh(i, w)),
        (0..3usize).prop_map(ChangeOp::Leave),
    ]
}

proptest! {
    /// `changes()` is a safe cache key: whenever it stands still across an
    /// operation, so does everything the readers return. (A gateway keeps its
    /// ring and liveness snapshot until the counter moves.)
    #[test]
    fn readers_never_change_while_the_change_counter_stands_still(
        ops in proptest::collection::vec(arb_change_op(), 1..120),
    ) {
        let ids = ["a", "b", "c"];
        let mut ms: Vec<Membership> = ids.iter().map(|id| member(id, &["a"])).collect();
        let mut now = Duration::ZERO;
        let mut queue: std::collections::VecDeque<(usize, String, Message)> = Default::default();
        for op in ops {
            let before: Vec<(u64, Vec<String>)> = ms.iter().map(|m| (m.changes(), observed(m))).collect();
            match op {
                ChangeOp::Tick(i, dt) => {
                    now += Duration::from_millis(dt);
                    for out in ms[i].tick(now) {
                        if let Some(to) = ids.iter().position(|id| addr(id) == out.to) {
                            queue.push_back((to, addr(ids[i]), out.message));
                        }
                    }
                }
                ChangeOp::Deliver(keep) => {
                    if let Some((to, from, message)) = queue.pop_front() {
                        if keep {
                            let replies = ms[to].receive(&from, message, now).unwrap_or_default();
                            for out in replies {
                                if let Some(back) = ids.iter().position(|id| addr(id) == out.to) {
                                    queue.push_back((back, addr(ids[to]), out.message));
                                }
                            }
                        }
                    }
                }
                ChangeOp::Read(i) => {
                    let _ = ms[i].drain_events();
                    let _ = (ms[i].ring_members(), ms[i].live_storage_members(), ms[i].local());
                }
                ChangeOp::Reweigh(i, w) => ms[i].set_weight(w),
                ChangeOp::Leave(i) => ms[i].leave(),
            }
            for (m, (changes, view)) in ms.iter().zip(before) {
                if m.changes() == changes {
                    prop_assert_eq!(observed(m), view);
                }
            }
        }
    }
}

#[test]
fn the_change_counter_moves_on_every_call_that_can_change_the_view() {
    let mut a = member("a", &["b"]);
    let mut b = member("b", &[]);
    let c0 = a.changes();
    let out = a.tick(secs(1));
    assert_ne!(a.changes(), c0, "a tick advances the detector's clock");
    let c1 = b.changes();
    b.receive(&addr("a"), out[0].message.clone(), secs(1))
        .expect("valid syn");
    assert_ne!(b.changes(), c1, "a merge");
    let c2 = a.changes();
    a.set_weight(3);
    assert_ne!(a.changes(), c2, "a weight change");
    let c3 = a.changes();
    let _ = (a.drain_events(), a.members(), a.status("b"));
    assert_eq!(a.changes(), c3, "reads leave it alone");
    let refused = a.receive(
        "x",
        Message {
            version: 99,
            ..ack2(vec![])
        },
        secs(2),
    );
    assert!(refused.is_err());
    assert_eq!(a.changes(), c3, "a refused message changes nothing");
}
