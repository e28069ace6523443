//! A buggy or lying member must not be able to forge or flood another member's
//! record: unrequested Ack2s, implausible versions, absurd weights and floods of
//! fake members are refused (and reported once), while honest gossip, restarts
//! and departures still get through.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use shoal_gossip::{
    Ack, Ack2, Body, Config, Digest, Event, Lifecycle, LocalMember, Membership, Message, Record,
    Refusal, Role, Status, Syn, PROTOCOL_VERSION,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn addr(id: &str) -> String {
    format!("{id}:7001")
}

fn member_with(id: &str, config: Config) -> Membership {
    let local = LocalMember {
        id: id.into(),
        address: addr(id),
        role: Role::Storage,
        weight: 1,
        zone: "default".into(),
        incarnation: 1,
    };
    Membership::new(config, local, vec![], StdRng::seed_from_u64(7), secs(0)).expect("valid")
}

fn member(id: &str) -> Membership {
    member_with(id, Config::default())
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

fn digest_of(r: &Record) -> Digest {
    Digest {
        id: r.id.clone(),
        incarnation: r.incarnation,
        meta_version: r.meta_version,
        heartbeat: r.heartbeat,
    }
}

fn syn(from: &str, records: &[Record]) -> Message {
    let mut digest: Vec<Digest> = records.iter().map(digest_of).collect();
    digest.sort_by(|a, b| a.id.cmp(&b.id));
    msg(
        from,
        Body::Syn(Syn {
            digest,
            complete: false,
        }),
    )
}

/// What `m` asks `from` for after hearing its digest of `records`.
fn requests_after_syn(
    m: &mut Membership,
    from: &str,
    records: &[Record],
    now: Duration,
) -> Vec<String> {
    let out = m
        .receive(&addr(from), syn(from, records), now)
        .expect("valid");
    match out.first().map(|o| &o.message.body) {
        Some(Body::Ack(ack)) => ack.requests.iter().map(|id| id.to_string()).collect(),
        None => Vec::new(),
        Some(other) => panic!("expected an ack, got {other:?}"),
    }
}

/// The honest path: `from` opens an exchange with its digest of `records`, and
/// answers what `m` requests with those records.
fn deliver(m: &mut Membership, from: &str, records: &[Record], now: Duration) {
    let requests = requests_after_syn(m, from, records, now);
    let wanted: Vec<Record> = records
        .iter()
        .filter(|r| requests.iter().any(|id| id == r.id.as_str()))
        .cloned()
        .collect();
    if !wanted.is_empty() {
        m.receive(
            &addr(from),
            msg(from, Body::Ack2(Ack2 { records: wanted })),
            now,
        )
        .expect("valid");
    }
}

fn ack2(from: &str, records: Vec<Record>) -> Message {
    msg(from, Body::Ack2(Ack2 { records }))
}

fn ack(from: &str, records: Vec<Record>, heartbeats: Vec<Digest>) -> Message {
    msg(
        from,
        Body::Ack(Ack {
            records,
            heartbeats,
            requests: vec![],
            echo: None,
        }),
    )
}

fn refusals_of(events: &[Event]) -> Vec<(String, String, Refusal)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { from, id, reason } => {
                Some((from.to_string(), id.to_string(), *reason))
            }
            _ => None,
        })
        .collect()
}

fn eviction_record() -> Record {
    Record {
        lifecycle: Lifecycle::Left,
        ..record("node-2", u64::MAX, u64::MAX, u64::MAX)
    }
}

/// node-1 knows node-2 (heartbeat 5) from an honest exchange at t=1.
fn knows_node_2() -> Membership {
    let mut m = member("node-1");
    deliver(&mut m, "node-2", &[record("node-2", 1, 0, 5)], secs(1));
    assert_eq!(m.status("node-2"), Some(Status::Alive));
    m.drain_events();
    m
}

#[test]
fn an_unrequested_ack2_eviction_record_leaves_node_2_alive() {
    let mut m = knows_node_2();
    let out = m
        .receive(
            &addr("node-3"),
            ack2("node-3", vec![eviction_record()]),
            secs(2),
        )
        .expect("well-formed messages are refused without an error");
    assert!(out.is_empty());
    let seen = m.member("node-2").expect("still known");
    assert_eq!(seen.status, Status::Alive);
    assert_eq!((seen.incarnation, seen.heartbeat), (1, 5));
    assert_eq!(m.refusals(), 1);
    assert_eq!(
        refusals_of(&m.drain_events()),
        vec![("node-3".into(), "node-2".into(), Refusal::Unrequested)]
    );
    // node-2's own gossip still gets through.
    deliver(&mut m, "node-2", &[record("node-2", 1, 0, 7)], secs(3));
    assert_eq!(m.member("node-2").map(|i| i.heartbeat), Some(7));
    assert!(m.ring_members().iter().any(|i| i.id.as_str() == "node-2"));
}

#[test]
fn the_eviction_record_is_not_requested_and_refused_even_when_requested() {
    let mut m = knows_node_2();
    // A digest advertising it does not make node-1 ask for it...
    let requests = requests_after_syn(&mut m, "node-3", &[eviction_record()], secs(2));
    assert!(requests.is_empty(), "{requests:?}");
    // ...nor does a digest making node-1 ask for another member.
    let requests = requests_after_syn(
        &mut m,
        "node-3",
        &[eviction_record(), record("node-4", 1, 0, 1)],
        secs(2),
    );
    assert_eq!(requests, vec!["node-4".to_string()]);
    m.receive(
        &addr("node-3"),
        ack2("node-3", vec![eviction_record(), record("node-4", 1, 0, 1)]),
        secs(2),
    )
    .expect("valid");
    // Pushed in an Ack (which needs no request), it is refused on its version.
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![eviction_record()], vec![]),
        secs(2),
    )
    .expect("valid");
    let seen = m.member("node-2").expect("still known");
    assert_eq!(seen.status, Status::Alive);
    assert_eq!((seen.incarnation, seen.heartbeat), (1, 5));
    assert_eq!(m.status("node-4"), Some(Status::Alive));
    let reasons: Vec<Refusal> = refusals_of(&m.drain_events())
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert!(reasons.contains(&Refusal::Unrequested), "{reasons:?}");
    assert!(reasons.contains(&Refusal::IncarnationJump), "{reasons:?}");
    // A real restart still replaces the entry, and leaving still spreads.
    deliver(&mut m, "node-2", &[record("node-2", 2, 0, 1)], secs(4));
    assert_eq!(m.member("node-2").map(|i| i.incarnation), Some(2));
    let left = Record {
        lifecycle: Lifecycle::Left,
        ..record("node-2", 2, 2, 2)
    };
    deliver(&mut m, "node-5", &[left], secs(5));
    assert_eq!(m.status("node-2"), Some(Status::Left));
}

#[test]
fn an_unknown_member_with_an_absurd_version_is_refused() {
    let mut m = member("node-1");
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![eviction_record()], vec![]),
        secs(1),
    )
    .expect("valid");
    assert_eq!(m.member("node-2"), None);
    // Then node-2 itself is heard of normally.
    deliver(&mut m, "node-2", &[record("node-2", 1, 0, 3)], secs(2));
    assert_eq!(m.status("node-2"), Some(Status::Alive));
}

#[test]
fn an_ack2_is_accepted_only_for_requested_records_from_the_asked_peer_in_time() {
    let mut m = member("node-1");
    let requests = requests_after_syn(&mut m, "node-2", &[record("node-2", 1, 0, 1)], secs(1));
    assert_eq!(requests, vec!["node-2".to_string()]);
    // Another member cannot answer for node-2's exchange.
    m.receive(
        &addr("node-3"),
        ack2("node-3", vec![record("node-2", 1, 0, 1)]),
        secs(1),
    )
    .expect("valid");
    assert_eq!(m.member("node-2"), None);
    // node-2 answers with what was asked and something that was not.
    m.receive(
        &addr("node-2"),
        ack2(
            "node-2",
            vec![record("node-2", 1, 0, 1), record("node-9", 1, 0, 1)],
        ),
        secs(1),
    )
    .expect("valid");
    assert_eq!(m.status("node-2"), Some(Status::Alive));
    assert_eq!(m.member("node-9"), None);
    // A repeated answer (delayed Syns are answered twice) is still requested.
    m.receive(
        &addr("node-2"),
        ack2("node-2", vec![record("node-2", 1, 0, 2)]),
        secs(1),
    )
    .expect("valid");
    assert_eq!(m.member("node-2").map(|i| i.heartbeat), Some(2));
    // An answer after the pending exchange expired is refused.
    let requests = requests_after_syn(&mut m, "node-4", &[record("node-4", 1, 0, 1)], secs(2));
    assert_eq!(requests, vec!["node-4".to_string()]);
    let late = secs(2) + Config::default().pending_ack_ttl;
    m.receive(
        &addr("node-4"),
        ack2("node-4", vec![record("node-4", 1, 0, 1)]),
        late,
    )
    .expect("valid");
    assert_eq!(m.member("node-4"), None);
    assert_eq!(m.refusals(), 3);
}

#[test]
fn pending_exchanges_are_capped() {
    let config = Config {
        max_pending_acks: 4,
        ..Config::default()
    };
    let mut m = member_with("node-1", config);
    for i in 0..6 {
        let id = format!("peer-{i}");
        let requests = requests_after_syn(&mut m, &id, &[record(&id, 1, 0, 1)], secs(1));
        assert_eq!(requests, vec![id.clone()]);
    }
    for i in 0..6 {
        let id = format!("peer-{i}");
        m.receive(&addr(&id), ack2(&id, vec![record(&id, 1, 0, 1)]), secs(1))
            .expect("valid");
    }
    // The oldest two exchanges were dropped to make room.
    assert_eq!(m.member("peer-0"), None);
    assert_eq!(m.member("peer-1"), None);
    for i in 2..6 {
        assert_eq!(m.status(&format!("peer-{i}")), Some(Status::Alive));
    }
}

#[test]
fn storage_weights_outside_one_to_max_weight_are_refused() {
    let mut m = member("node-1");
    let weighed = |id: &str, weight: u32| Record {
        weight,
        ..record(id, 1, 0, 1)
    };
    deliver(
        &mut m,
        "node-3",
        &[
            weighed("zero", 0),
            weighed("heavy", 1_000),
            weighed("fine", 7),
        ],
        secs(1),
    );
    assert_eq!(m.member("zero"), None);
    assert_eq!(m.member("heavy"), None);
    assert_eq!(m.member("fine").map(|i| i.weight), Some(7));
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![weighed("heavy", 1_000)], vec![]),
        secs(1),
    )
    .expect("valid");
    assert_eq!(m.member("heavy"), None);
    // A known member cannot be reweighed to an absurd weight either.
    let mut heavier = weighed("fine", 5_000);
    heavier.meta_version = 2;
    heavier.heartbeat = 2;
    deliver(&mut m, "node-3", &[heavier], secs(2));
    assert_eq!(m.member("fine").map(|i| i.weight), Some(7));
    assert_eq!(m.refusals(), 4);
    assert_eq!(
        refusals_of(&m.drain_events()),
        vec![("node-3".into(), "zero".into(), Refusal::Weight)],
        "reported once per sender and reason"
    );
    assert!(m
        .ring_members()
        .iter()
        .all(|i| i.weight == 1 || i.weight == 7));
}

#[test]
fn flag_bits_are_ignored_by_the_weight_check_and_gateways_may_weigh_nothing() {
    const JOINING_FLAG: u32 = 1 << 31;
    let flagged = Record {
        weight: 3 | JOINING_FLAG,
        ..record("joiner", 1, 0, 1)
    };
    let flagged_zero = Record {
        weight: JOINING_FLAG,
        ..record("empty", 1, 0, 1)
    };
    let gateway = Record {
        role: Role::Gateway,
        weight: 0,
        ..record("gw", 1, 0, 1)
    };
    let gateway_one = Record {
        role: Role::Gateway,
        weight: 1,
        ..record("gw1", 1, 0, 1)
    };
    let all = [flagged, flagged_zero, gateway, gateway_one];

    let mut plain = member("node-1");
    deliver(&mut plain, "node-3", &all, secs(1));
    assert_eq!(plain.member("joiner"), None, "no flags configured");

    let mut m = member_with(
        "node-1",
        Config {
            weight_flags: JOINING_FLAG,
            ..Config::default()
        },
    );
    deliver(&mut m, "node-3", &all, secs(1));
    assert_eq!(m.member("joiner").map(|i| i.weight), Some(3 | JOINING_FLAG));
    assert_eq!(m.member("empty"), None, "flags do not make a weight");
    assert_eq!(m.status("gw"), Some(Status::Alive));
    assert_eq!(m.status("gw1"), Some(Status::Alive));
}

#[test]
fn seven_thousand_fake_members_in_one_message_admit_at_most_the_caps() {
    let fakes: Vec<Record> = (0..7_000)
        .map(|i| record(&format!("f{i}"), 1, 0, 1))
        .collect();
    let config = Config::default();
    let mut m = member("node-1");
    m.receive(
        &addr("node-3"),
        ack("node-3", fakes.clone(), vec![]),
        secs(1),
    )
    .expect("valid");
    let admitted = m.members().len() - 1;
    assert!(
        admitted >= 1 && admitted <= config.max_new_members_per_message,
        "{admitted}"
    );
    // Repeated, they stop at the member cap.
    for round in 0..40 {
        m.receive(
            &addr("node-3"),
            ack("node-3", fakes.clone(), vec![]),
            secs(2 + round),
        )
        .expect("valid");
    }
    assert_eq!(m.members().len(), config.max_members);
    assert!(m.refusals() > 0);
    let refused = refusals_of(&m.drain_events());
    assert_eq!(
        refused.iter().map(|r| r.2).collect::<Vec<_>>(),
        vec![Refusal::TooManyMembers],
        "one report, not one per record"
    );
    // A digest of fakes does not make it ask for more than the per-message bound.
    let mut fresh = member("node-1");
    let requests = requests_after_syn(&mut fresh, "node-3", &fakes[..2_000], secs(1));
    assert!(requests.len() <= config.max_new_members_per_message);
}

#[test]
fn heartbeats_may_not_run_ahead_of_the_clock() {
    let mut m = knows_node_2();
    // One second after hearing heartbeat 5, heartbeat 50,000 is impossible.
    m.receive(
        &addr("node-3"),
        ack(
            "node-3",
            vec![],
            vec![digest_of(&record("node-2", 1, 0, 50_000))],
        ),
        secs(2),
    )
    .expect("valid");
    assert_eq!(m.member("node-2").map(|i| i.heartbeat), Some(5));
    let requests = requests_after_syn(&mut m, "node-3", &[record("node-2", 1, 0, 50_000)], secs(2));
    assert!(requests.is_empty());
    assert_eq!(m.member("node-2").map(|i| i.heartbeat), Some(5));
    // As a full record with new metadata, too.
    let mut left = record("node-2", 1, 50_000, 50_000);
    left.lifecycle = Lifecycle::Left;
    m.receive(&addr("node-3"), ack("node-3", vec![left], vec![]), secs(2))
        .expect("valid");
    assert_eq!(m.status("node-2"), Some(Status::Alive));
    // A plausible catch-up is fine, and so is a long silence's worth.
    deliver(&mut m, "node-2", &[record("node-2", 1, 0, 12)], secs(3));
    assert_eq!(m.member("node-2").map(|i| i.heartbeat), Some(12));
    deliver(
        &mut m,
        "node-2",
        &[record("node-2", 1, 0, 20_012)],
        secs(20_003),
    );
    assert_eq!(m.member("node-2").map(|i| i.heartbeat), Some(20_012));
    let reasons: Vec<Refusal> = refusals_of(&m.drain_events())
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(reasons, vec![Refusal::HeartbeatJump]);
}

#[test]
fn incarnations_may_jump_only_within_the_bound_and_rise_once_per_interval() {
    let jump = Config::default().max_incarnation_jump;
    let mut m = knows_node_2();
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![record("node-2", 1 + jump + 1, 0, 1)], vec![]),
        secs(2),
    )
    .expect("valid");
    assert_eq!(m.member("node-2").map(|i| i.incarnation), Some(1));
    // An honest restart (counter + 1) is a rise.
    deliver(&mut m, "node-2", &[record("node-2", 2, 0, 1)], secs(3));
    assert_eq!(m.member("node-2").map(|i| i.incarnation), Some(2));
    // A second rise within the same interval waits (crash loops are honest, so it
    // is not a refusal); a second later it is taken.
    deliver(&mut m, "node-2", &[record("node-2", 3, 0, 1)], secs(3));
    assert_eq!(m.member("node-2").map(|i| i.incarnation), Some(2));
    deliver(&mut m, "node-2", &[record("node-2", 3, 0, 1)], secs(4));
    assert_eq!(m.member("node-2").map(|i| i.incarnation), Some(3));
    let reasons: Vec<Refusal> = refusals_of(&m.drain_events())
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(reasons, vec![Refusal::IncarnationJump]);
}

#[test]
fn wall_clock_incarnations_of_gateways_are_accepted() {
    // Gateways mint wall-clock milliseconds at start.
    let started_ms = 1_760_000_000_000;
    let gateway = |incarnation| Record {
        role: Role::Gateway,
        ..record("gw", incarnation, 0, 1)
    };
    let mut m = member("node-1");
    deliver(&mut m, "gw", &[gateway(started_ms)], secs(1));
    assert_eq!(m.member("gw").map(|i| i.incarnation), Some(started_ms));
    // Restarted after 90 days up.
    let later = started_ms + 90 * 24 * 3_600 * 1_000;
    deliver(&mut m, "gw", &[gateway(later)], secs(10));
    assert_eq!(m.member("gw").map(|i| i.incarnation), Some(later));
    // Wall-clock seconds as well, after a counter.
    deliver(&mut m, "node-2", &[record("node-2", 3, 0, 1)], secs(10));
    deliver(
        &mut m,
        "node-2",
        &[record("node-2", 1_760_000_000, 0, 1)],
        secs(20),
    );
    assert_eq!(
        m.member("node-2").map(|i| i.incarnation),
        Some(1_760_000_000)
    );
    assert_eq!(m.refusals(), 0);
}

#[test]
fn a_forged_but_bounded_newer_record_of_ourselves_is_refuted() {
    let mut m = member("node-1");
    m.tick(secs(1));
    let own = m.local();
    // Same incarnation, a heartbeat far ahead, marked left.
    let forged = Record {
        lifecycle: Lifecycle::Left,
        ..record("node-1", own.incarnation, 900, 900)
    };
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![forged.clone()], vec![]),
        secs(1),
    )
    .expect("valid");
    let after = m.local();
    assert_eq!(after.status, Status::Alive);
    assert!((after.incarnation, after.heartbeat) > (forged.incarnation, forged.heartbeat));
    // An observer that believed the forgery takes the refutation.
    let mut observer = member("node-9");
    deliver(
        &mut observer,
        "node-3",
        &[Record {
            address: addr("node-1"),
            ..forged
        }],
        secs(1),
    );
    assert_eq!(observer.status("node-1"), Some(Status::Left));
    let local_record = Record {
        address: addr("node-1"),
        incarnation: after.incarnation,
        meta_version: after.heartbeat,
        heartbeat: after.heartbeat,
        ..record("node-1", 0, 0, 0)
    };
    deliver(&mut observer, "node-1", &[local_record], secs(3));
    assert_eq!(observer.status("node-1"), Some(Status::Alive));
    // A newer incarnation within the bound: jumped past as well.
    let forged = record("node-1", after.incarnation + 10, 0, 3);
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![forged], vec![]),
        secs(3),
    )
    .expect("valid");
    assert!(m.local().incarnation >= after.incarnation + 10);
    // The absurd one cannot be outranked, so it is refused, not refuted.
    let before = m.local();
    let mut absurd = eviction_record();
    absurd.id = "node-1".into();
    m.receive(
        &addr("node-3"),
        ack("node-3", vec![absurd], vec![]),
        secs(4),
    )
    .expect("valid");
    assert_eq!(m.local(), before);
    assert_eq!(m.refusals(), 1);
}
