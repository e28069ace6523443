use super::*;
use crate::clock::tests::vc;
use proptest::prelude::*;

fn val(s: &str) -> Content {
    Content::value(s.as_bytes().to_vec(), "text/plain")
}

fn values(s: &SiblingSet) -> Vec<String> {
    s.values()
        .iter()
        .map(|x| match x.value() {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => "<tombstone>".into(),
        })
        .collect()
}

#[test]
fn blind_writes_become_siblings() {
    let mut s = SiblingSet::new();
    assert!(s.is_empty());
    assert_eq!(
        s.update(&Context::empty(), "n1", val("a"), 10),
        Ok(Dot::new("n1", 1))
    );
    assert_eq!(
        s.update(&Context::empty(), "n1", val("b"), 11),
        Ok(Dot::new("n1", 2))
    );
    assert_eq!(values(&s), ["a", "b"]);
    assert_eq!(s.clock(), &vc("n1:2").tap_ts("n1", 11));
}

trait TapTs {
    fn tap_ts(self, actor: &str, ts: u64) -> Self;
}

impl TapTs for VectorClock {
    fn tap_ts(self, actor: &str, ts: u64) -> Self {
        let entries = self
            .entries()
            .iter()
            .cloned()
            .map(|mut e| {
                if e.actor == actor {
                    e.timestamp = ts;
                }
                e
            })
            .collect();
        VectorClock::from_entries(entries).unwrap()
    }
}

#[test]
fn context_supersedes_exactly_what_it_saw() {
    let mut s = SiblingSet::new();
    s.update(&Context::empty(), "n1", val("a"), 1).unwrap();
    let seen_a = s.context();
    s.update(&Context::empty(), "n2", val("b"), 2).unwrap();
    // Written with a context that saw only "a": "b" stays.
    s.update(&seen_a, "n1", val("c"), 3).unwrap();
    assert_eq!(values(&s), ["c", "b"]);
    let all = s.context();
    s.update(&all, "n2", val("d"), 4).unwrap();
    assert_eq!(values(&s), ["d"]);
    assert_eq!(s.values()[0].dot, Dot::new("n2", 2));
}

#[test]
fn a_context_from_another_replica_supersedes_there_too() {
    // Client reads "a" on r2, writes through r1 which has not seen "a" yet.
    let mut r1 = SiblingSet::new();
    let mut r2 = SiblingSet::new();
    r2.update(&Context::empty(), "n2", val("a"), 1).unwrap();
    r1.update(&r2.context(), "n1", val("b"), 2).unwrap();
    assert_eq!(values(&r1), ["b"]);
    assert_eq!(values(&r1.sync(&r2)), ["b"]);
    assert_eq!(values(&r2.sync(&r1)), ["b"]);
}

#[test]
fn tombstones_are_versions() {
    let mut s = SiblingSet::new();
    s.update(&Context::empty(), "n1", val("a"), 5).unwrap();
    assert!(!s.is_tombstone_only());
    s.update(&s.context(), "n1", Content::Tombstone, 9).unwrap();
    assert!(s.is_tombstone_only());
    assert_eq!(s.latest_write_time(), Some(9));
    // A concurrent blind write resurrects the key alongside the tombstone.
    let mut t = s.clone();
    t.update(&Context::empty(), "n2", val("b"), 7).unwrap();
    assert!(!t.is_tombstone_only());
    assert_eq!(values(&t), ["<tombstone>", "b"]);
    assert_eq!(t.latest_write_time(), Some(9));
    assert!(!SiblingSet::new().is_tombstone_only());
    assert_eq!(SiblingSet::new().latest_write_time(), None);
}

#[test]
fn prune_keeps_entries_that_back_siblings_and_raises_the_floor() {
    let mut s = SiblingSet::new();
    for (i, a) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
        let ctx = s.context();
        s.update(&ctx, a, val(a), i as u64).unwrap();
    }
    // Only n4's write survives; n1..n3 are pure history.
    assert_eq!(values(&s), ["n4"]);
    assert_eq!(s.prune(2), 2);
    assert_eq!(s.clock().len(), 2);
    assert!(s.clock().entry("n1").is_none() && s.clock().entry("n2").is_none());
    assert_eq!(s.counter_floor(), 1);
    assert_eq!(s.prune(0), 1);
    assert_eq!(s.clock().len(), 1, "n4 backs a sibling");
    // n1 coordinates again from the pruned state: its dot is above the floor,
    // so replicas that still remember n1:1 keep the new write.
    let stale = {
        let mut t = SiblingSet::new();
        t.update(&Context::empty(), "n1", val("old"), 0).unwrap();
        t.update(&t.context(), "n2", val("x"), 1).unwrap();
        t
    };
    let dot = s.update(&s.context(), "n1", val("new"), 10).unwrap();
    assert_eq!(dot, Dot::new("n1", 2));
    assert!(values(&s.sync(&stale)).contains(&"new".to_owned()));
}

#[test]
fn update_refuses_to_overflow() {
    let mut s = SiblingSet::new();
    let forged = Context::from_parts(vec![("n1".into(), u64::MAX)], 0);
    let before = s.clone();
    assert_eq!(
        s.update(&forged, "n1", val("a"), 1),
        Err(Error::CounterOverflow {
            actor: "n1".into(),
            counter: u64::MAX
        })
    );
    assert_eq!(s, before);
}

#[test]
fn encoding_round_trips_and_digest_tracks_state() {
    let mut s = SiblingSet::new();
    assert_eq!(SiblingSet::decode(&s.encode()), Ok(s.clone()));
    s.update(&Context::empty(), "node-2", val("a"), 1_700_000_000_000)
        .unwrap();
    s.update(
        &Context::empty(),
        "node-1",
        Content::Tombstone,
        1_700_000_000_001,
    )
    .unwrap();
    s.update(
        &Context::empty(),
        "node-2",
        Content::value(vec![0u8, 255], "application/octet-stream"),
        3,
    )
    .unwrap();
    let bytes = s.encode();
    assert_eq!(bytes[0], 0x31);
    assert_eq!(SiblingSet::decode(&bytes), Ok(s.clone()));
    for cut in 0..bytes.len() {
        assert!(SiblingSet::decode(&bytes[..cut]).is_err(), "prefix {cut}");
    }
    let d = s.digest();
    let mut t = s.clone();
    t.update(&Context::empty(), "node-3", val("b"), 4).unwrap();
    assert_ne!(t.digest(), d);
    // Same siblings, different causal history.
    let mut h = SiblingSet::new();
    h.update(&Context::empty(), "node-2", val("old"), 1)
        .unwrap();
    h.update(&h.context(), "node-1", val("new"), 2).unwrap();
    let mut u = h.clone();
    assert_eq!(u.prune(0), 1);
    assert_eq!(u.values(), h.values());
    assert_ne!(
        u.digest(),
        h.digest(),
        "causal info alone changes the digest"
    );
    let bin = bincode::serialize(&s).unwrap();
    assert_eq!(bincode::deserialize::<SiblingSet>(&bin).unwrap(), s);
}

#[test]
fn expiring_values_round_trip_and_older_sets_still_decode() {
    let mut s = SiblingSet::new();
    s.update(
        &Context::empty(),
        "node-1",
        Content::expiring(b"v".to_vec(), "text/plain", 1_700_000_005_000),
        1_700_000_000_000,
    )
    .unwrap();
    let bytes = s.encode();
    assert_eq!(SiblingSet::decode(&bytes), Ok(s.clone()));
    for cut in 0..bytes.len() {
        assert!(SiblingSet::decode(&bytes[..cut]).is_err(), "prefix {cut}");
    }
    assert!(!SiblingSet::new().is_dead(u64::MAX), "nothing is not dead");
    assert!(!s.is_dead(1_700_000_004_999));
    assert!(s.is_dead(1_700_000_005_000));
    let v = &s.values()[0];
    assert!(v.is_live(1_700_000_004_999));
    assert!(
        !v.is_live(1_700_000_005_000),
        "expired at the instant itself"
    );
    // The expiry is part of the version: the same value without it differs.
    let mut plain = SiblingSet::new();
    plain
        .update(
            &Context::empty(),
            "node-1",
            Content::value(b"v".to_vec(), "text/plain"),
            1_700_000_000_000,
        )
        .unwrap();
    assert_ne!(plain.digest(), s.digest());
    // A set encoded before TTLs existed (kind 0x01): clock {a:1}, value "v".
    let old = [0x31, 0, 1, 1, b'a', 1, 7, 1, 0, 1, 9, 1, 1, b't', 1, b'v'];
    let decoded = SiblingSet::decode(&old).unwrap();
    assert_eq!(decoded.values()[0].value(), Some(&b"v"[..]));
    assert_eq!(decoded.values()[0].content.expires_at(), None);
    assert_eq!(decoded.encode(), old, "old sets re-encode byte for byte");
}

#[test]
fn decode_checks_invariants() {
    // Clock {a:1}, one sibling at a:2 (not covered).
    let bad = [0x31, 0, 1, 1, b'a', 1, 0, 1, 0, 2, 0, 0];
    assert!(matches!(
        SiblingSet::decode(&bad),
        Err(Error::Malformed {
            reason: "sibling dot is not covered by the clock",
            ..
        })
    ));
    // Sibling names actor index 1 of a one-entry clock.
    let bad = [0x31, 0, 1, 1, b'a', 1, 0, 1, 1, 1, 0, 0];
    assert!(matches!(
        SiblingSet::decode(&bad),
        Err(Error::Malformed { .. })
    ));
    // Two siblings with the same dot.
    let bad = [0x31, 0, 1, 1, b'a', 2, 0, 2, 0, 1, 0, 0, 0, 1, 0, 0];
    assert!(matches!(
        SiblingSet::decode(&bad),
        Err(Error::Malformed { .. })
    ));
    // Unknown kind byte.
    let bad = [0x31, 0, 1, 1, b'a', 1, 0, 1, 0, 1, 0, 7];
    assert!(matches!(
        SiblingSet::decode(&bad),
        Err(Error::Malformed { .. })
    ));
    // The TTL format byte on a set with no TTL'd sibling (an empty one: a
    // mutated byte found by `decoding_mutated_sets_never_panics` in CI), and
    // the plain one on a set holding a value with a TTL (kind 2): `encode`
    // writes neither, so decoding them would break "equal states, equal
    // bytes".
    for bad in [
        &[0x32, 0, 0, 0][..],
        &[0x32, 0, 1, 1, b'a', 1, 7, 1, 0, 1, 9, 1, 1, b't', 1, b'v'][..],
        &[
            0x31, 0, 1, 1, b'a', 1, 7, 1, 0, 1, 9, 2, 1, b't', 1, b'v', 5,
        ][..],
    ] {
        assert!(
            matches!(
                SiblingSet::decode(bad),
                Err(Error::Malformed {
                    reason: "format byte does not match the siblings' kinds",
                    ..
                })
            ),
            "{bad:?}: {:?}",
            SiblingSet::decode(bad)
        );
    }
    // The same value with the right byte decodes and re-encodes alike.
    let good = [
        0x32, 0, 1, 1, b'a', 1, 7, 1, 0, 1, 9, 2, 1, b't', 1, b'v', 5,
    ];
    assert_eq!(SiblingSet::decode(&good).unwrap().encode(), good);
    // The good version of the above.
    let good = [0x31, 0, 1, 1, b'a', 1, 0, 1, 0, 1, 0, 0];
    assert!(SiblingSet::decode(&good).unwrap().is_tombstone_only());
}

#[test]
fn causal_view_is_readable() {
    let mut s = SiblingSet::new();
    s.update(&Context::empty(), "node-1", val("hello"), 5)
        .unwrap();
    s.update(&Context::empty(), "node-2", Content::Tombstone, 6)
        .unwrap();
    let v = s.causal_view();
    assert_eq!(v.clock.get("node-1"), Some(&1));
    assert_eq!(v.siblings[0].dot, Dot::new("node-1", 1));
    assert_eq!(v.siblings[0].size, 5);
    assert_eq!(v.siblings[0].content_type.as_deref(), Some("text/plain"));
    assert!(v.siblings[1].tombstone);
    assert_eq!(v.siblings[1].dot.to_string(), "node-2:1");
}

// ---- properties -----------------------------------------------------------

/// One step of a random history over three replicas.
#[derive(Clone, Debug)]
enum Op {
    /// Replica `at` coordinates a write with the context read from `from`
    /// (or an empty one).
    Update {
        at: usize,
        from: Option<usize>,
        tomb: bool,
    },
    /// Replica `to` merges replica `from`'s state.
    Sync { from: usize, to: usize },
    /// Replica `at` prunes its clock to `max` entries.
    Prune { at: usize, max: usize },
    /// Replica `at` purges values expired by `before`.
    Purge { at: usize, before: u64 },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, proptest::option::of(0..3usize), any::<bool>())
            .prop_map(|(at, from, tomb)| Op::Update { at, from, tomb }),
        3 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (0..3usize, 0..3usize).prop_map(|(at, max)| Op::Prune { at, max }),
        1 => (0..3usize, 0..30u64).prop_map(|(at, before)| Op::Purge { at, before }),
    ]
}

/// Three replica states after a random history: realistic states, with the
/// invariants only real histories produce.
fn arb_states() -> impl Strategy<Value = [SiblingSet; 3]> {
    proptest::collection::vec(arb_op(), 0..24).prop_map(|ops| {
        let mut r: [SiblingSet; 3] = Default::default();
        for (t, op) in ops.into_iter().enumerate() {
            let t = t as u64;
            match op {
                Op::Update { at, from, tomb } => {
                    let ctx = from.map_or_else(Context::empty, |f| r[f].context());
                    let content = if tomb {
                        Content::Tombstone
                    } else if t.is_multiple_of(3) {
                        // Expiring values travel like any other.
                        Content::expiring(t.to_le_bytes().to_vec(), "x", t + 5)
                    } else {
                        Content::value(t.to_le_bytes().to_vec(), "x")
                    };
                    r[at].update(&ctx, ["a", "b", "c"][at], content, t).unwrap();
                }
                Op::Sync { from, to } => {
                    let f = r[from].clone();
                    r[to].merge(&f);
                }
                Op::Prune { at, max } => {
                    r[at].prune(max);
                }
                Op::Purge { at, before } => {
                    let digest = SiblingSet::stored_digest(&r[at].encode());
                    r[at].purge_expired(before);
                    assert_eq!(
                        SiblingSet::stored_digest(&r[at].encode()),
                        digest,
                        "a purge changed what anti-entropy compares"
                    );
                }
            }
        }
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sync_is_commutative(s in arb_states()) {
        let [a, b, _] = s;
        prop_assert_eq!(a.sync(&b), b.sync(&a));
    }

    #[test]
    fn sync_is_associative(s in arb_states()) {
        let [a, b, c] = s;
        prop_assert_eq!(a.sync(&b).sync(&c), a.sync(&b.sync(&c)));
    }

    #[test]
    fn sync_is_idempotent(s in arb_states()) {
        let [a, b, _] = s;
        prop_assert_eq!(a.sync(&a), a.clone());
        let ab = a.sync(&b);
        prop_assert_eq!(ab.sync(&b), ab.clone());
    }

    #[test]
    fn digest_is_independent_of_merge_order(s in arb_states()) {
        let [a, b, c] = s;
        prop_assert_eq!(a.sync(&b).sync(&c).digest(), c.sync(&a).sync(&b).digest());
    }

    #[test]
    fn a_purge_reads_alike_and_wins_wherever_it_meets_the_value(
        s in arb_states(), at in 0..3usize, before in 0..30u64,
    ) {
        let [a, b, c] = s;
        let whole = a.sync(&b).sync(&c);
        let mut purged = whole.clone();
        purged.purge_expired(before);
        // Nothing a reader at `before` or later sees has changed.
        for now in [before, before + 1, 1_000] {
            let live = |x: &SiblingSet| -> Vec<Vec<u8>> {
                x.values().iter().filter(|v| v.is_live(now)).filter_map(|v| v.value().map(<[u8]>::to_vec)).collect()
            };
            prop_assert_eq!(live(&whole), live(&purged));
        }
        prop_assert_eq!(
            SiblingSet::stored_digest(&whole.encode()),
            SiblingSet::stored_digest(&purged.encode())
        );
        // Merging the purged state with any unpurged one, in either order,
        // gives the purged state's siblings: the purge is never undone.
        let other = [&a, &b, &c][at];
        prop_assert_eq!(purged.sync(other), other.sync(&purged));
        let met = purged.sync(other);
        prop_assert_eq!(met.values(), purged.values());
        // And the purged state survives a round trip.
        prop_assert_eq!(SiblingSet::decode(&purged.encode()).unwrap(), purged);
    }

    #[test]
    fn update_with_full_context_leaves_one(s in arb_states(), at in 0..3usize) {
        let mut x = s[at].clone();
        let dot = x.update(&x.context(), "z", Content::Tombstone, 99).unwrap();
        prop_assert_eq!(x.len(), 1);
        prop_assert_eq!(&x.values()[0].dot, &dot);
    }

    #[test]
    fn update_with_empty_context_adds_one(s in arb_states(), at in 0..3usize) {
        let before = s[at].clone();
        let mut x = before.clone();
        x.update(&Context::empty(), ["a", "b", "c"][at], Content::Tombstone, 99).unwrap();
        prop_assert_eq!(x.len(), before.len() + 1);
        for sib in before.values() {
            prop_assert!(x.values().contains(sib));
        }
    }

    #[test]
    fn prune_forgets_only_history(s in arb_states(), at in 0..3usize, max in 0..4usize) {
        let before = s[at].clone();
        let mut x = before.clone();
        let dropped = x.prune(max);
        let backing: std::collections::BTreeSet<&str> =
            before.values().iter().map(|v| v.dot.actor.as_str()).collect();
        // Siblings untouched, every one still backed by its entry.
        prop_assert_eq!(x.values(), before.values());
        for v in x.values() {
            prop_assert!(x.clock().get(&v.dot.actor) >= v.dot.counter);
        }
        // Bounded unless the siblings themselves need more entries.
        prop_assert_eq!(x.clock().len(), before.clock().len().min(max.max(backing.len())));
        prop_assert_eq!(x.clock().len() + dropped, before.clock().len());
        // Only forgets, and the floor covers every forgotten counter.
        prop_assert!(before.clock().descends(x.clock()));
        for e in before.clock().entries() {
            if x.clock().entry(&e.actor).is_none() {
                prop_assert!(x.counter_floor() >= e.counter);
                prop_assert!(!backing.contains(e.actor.as_str()));
            }
        }
        // The oldest go first: nothing kept for its age is older than a victim.
        for gone in before.clock().entries().iter().filter(|e| x.clock().entry(&e.actor).is_none()) {
            for kept in x.clock().entries().iter().filter(|e| !backing.contains(e.actor.as_str())) {
                prop_assert!((gone.timestamp, &gone.actor) < (kept.timestamp, &kept.actor));
            }
        }
    }

    #[test]
    fn encoding_round_trips(s in arb_states()) {
        for x in s {
            let bytes = x.encode();
            prop_assert_eq!(SiblingSet::decode(&bytes), Ok(x.clone()));
            let ctx = x.context();
            prop_assert_eq!(Context::decode(&ctx.encode()), Ok(ctx));
        }
    }

    #[test]
    fn decoding_mutated_sets_never_panics(
        s in arb_states(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = s[0].encode();
        for (i, b) in flips {
            let i = i % bytes.len();
            bytes[i] = b;
        }
        if let Ok(x) = SiblingSet::decode(&bytes) {
            prop_assert_eq!(x.encode(), bytes);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        if let Ok(x) = SiblingSet::decode(&bytes) {
            prop_assert_eq!(x.encode(), bytes);
        }
    }
}
