//! Hints, apart from the store's own data: they live in their own key space
//! under quotas and a receipt-time TTL, and these tests pin what a node
//! standing in for an owner keeps, refuses and finds.

use super::*;

#[test]
fn hints_per_owner_takes_a_bounded_slice_of_every_owner() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut set = SiblingSet::new();
    set.update(&Context::empty(), "w#1", value("v"), 1).unwrap();
    for owner in ["a", "b", "c"] {
        for i in 0..5 {
            s.put_hint(owner, format!("k{i}").as_bytes(), &set).unwrap();
        }
    }
    s.put_hint("\u{ff}", b"k", &set).unwrap();
    let got = s.hints_per_owner(2).unwrap();
    let owners: Vec<&str> = got.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, ["a", "a", "b", "b", "c", "c", "\u{ff}"]);
    assert_eq!(s.hints_per_owner(10).unwrap().len(), 16);
    assert_eq!(prefix_successor(&[1, 255]), Some(vec![2]));
    assert_eq!(prefix_successor(&[255, 255]), None);
}

#[test]
fn standing_in_keeps_a_hint_and_never_reuses_a_dot() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let first = s
        .coordinate(b"k", &Context::empty(), value("a"), 1, Some("owner-1"))
        .unwrap();
    let held = s.hints_for_key(b"k").unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, "owner-1");
    assert_eq!(held[0].1, first, "the hint carries the minted version");
    // The hint is delivered and deleted; a second blind write for the same
    // owner must still mint a fresh dot, or the owner would see two values
    // under one dot and keep only one of them.
    s.drop_hint("owner-1", b"k").unwrap();
    let second = s
        .coordinate(b"k", &Context::empty(), value("b"), 2, Some("owner-1"))
        .unwrap();
    let hint = s.hints_for_key(b"k").unwrap().remove(0).1;
    let dot_of = |v: &[u8]| {
        hint.values()
            .iter()
            .find(|s| s.value() == Some(v))
            .map(|s| s.dot.clone())
    };
    let (a, b) = (dot_of(b"a").unwrap(), dot_of(b"b").unwrap());
    assert_ne!(a, b, "one dot minted for two values");
    assert_eq!(second.values().len(), 2, "a blind write keeps the other");
}

#[test]
fn hints_are_kept_apart_and_deleted_only_if_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut v1 = SiblingSet::new();
    v1.update(&Context::empty(), "node-2#1", value("x"), 1)
        .unwrap();
    s.put_hint("node-3", b"key", &v1).unwrap();
    assert_eq!(s.read(b"key").unwrap(), None, "a hint is not local data");
    assert_eq!(s.hint_count().unwrap(), 1);
    let hints = s.hints(10).unwrap();
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].owner, "node-3");
    assert_eq!(hints[0].key, b"key");

    let mut v2 = v1.clone();
    v2.update(&v1.context(), "node-2#1", value("y"), 2).unwrap();
    s.put_hint("node-3", b"key", &v2).unwrap();
    assert!(!s.delete_hint_if_unchanged("node-3", b"key", &v1).unwrap());
    assert!(s.delete_hint_if_unchanged("node-3", b"key", &v2).unwrap());
    assert_eq!(s.hint_count().unwrap(), 0);
    assert_eq!(s.hints_for_key(b"key").unwrap(), vec![]);
}

#[test]
fn hint_keys_round_trip() {
    let k = hint_key("node-7", b"\x00\xffuser").unwrap();
    assert_eq!(
        parse_hint_key(&k),
        Some(("node-7".into(), b"\x00\xffuser".to_vec()))
    );
    assert!(parse_hint_key(&[HINT, 9, b'a']).is_none());
    assert!(hint_key(&"x".repeat(300), b"k").is_err());
}

fn open_with_handoff(dir: &Path, f: impl FnOnce(&mut crate::config::HandoffConfig)) -> Store {
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    f(&mut config.handoff);
    Store::open(dir, "node-1", &config, Arc::new(SystemClock)).unwrap()
}

/// A hint ages from when this node took it: a sender whose clock is decades
/// behind (or a lie of `u64::MAX`) must neither expire it at once nor keep
/// it for ever. Legacy values (a bare set) still age from their write time.
#[test]
fn hints_age_from_their_receipt_on_this_nodes_clock() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let before = SystemClock.now_millis();
    for (key, write_time) in [(b"old".as_slice(), 1), (b"future".as_slice(), u64::MAX - 1)] {
        let mut set = SiblingSet::new();
        set.update(&Context::empty(), "w#1", value("v"), write_time)
            .unwrap();
        s.put_hint("owner", key, &set).unwrap();
    }
    let hints = s.hints(10).unwrap();
    assert_eq!(hints.len(), 2);
    let after = SystemClock.now_millis();
    for h in &hints {
        assert!(
            (before..=after).contains(&h.received_ms),
            "{:?} received at {}",
            String::from_utf8_lossy(&h.key),
            h.received_ms
        );
    }
    let mut legacy = SiblingSet::new();
    legacy
        .update(&Context::empty(), "w#1", value("v"), 42)
        .unwrap();
    assert_eq!(hints::decode_hint(&legacy.encode()).unwrap(), (legacy, 42));
}

/// Past a quota, or with handoff off, a new hint is refused (the gateway
/// then tries another fallback) instead of being stored or dropped; an
/// existing hint still takes newer writes, and a delivered one frees room.
#[test]
fn hint_quotas_and_disabled_handoff_refuse_new_hints() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with_handoff(dir.path(), |h| {
        h.max_hints_per_owner = 2;
        h.max_hints = 3;
    });
    let mut set = SiblingSet::new();
    set.update(&Context::empty(), "w#1", value("v"), 1).unwrap();
    s.put_hint("a", b"k1", &set).unwrap();
    s.put_hint("a", b"k2", &set).unwrap();
    let refused = s.put_hint("a", b"k3", &set).unwrap_err();
    assert!(
        matches!(refused, StoreError::HintRefused { .. }),
        "{refused}"
    );
    let standing_in = s
        .coordinate(b"k3", &Context::empty(), value("x"), 1, Some("a"))
        .unwrap_err();
    assert!(matches!(standing_in, StoreError::HintRefused { .. }));
    assert_eq!(
        s.read(b"k3").unwrap(),
        None,
        "a refused stand-in wrote nothing"
    );
    // An existing hint takes a newer version.
    let mut newer = set.clone();
    newer.update(&set.context(), "w#1", value("w"), 2).unwrap();
    s.put_hint("a", b"k1", &newer).unwrap();
    s.put_hint("b", b"k1", &set).unwrap();
    assert!(matches!(
        s.put_hint("c", b"k1", &set),
        Err(StoreError::HintRefused { .. })
    ));
    assert_eq!(s.hint_count().unwrap(), 3);
    s.drop_hint("a", b"k2").unwrap();
    s.put_hint("a", b"k3", &set).unwrap();
    assert_eq!(s.hint_count().unwrap(), 3);
    drop(s);

    // The counts survive a restart (counted again at open).
    let s = open_with_handoff(dir.path(), |h| {
        h.max_hints_per_owner = 2;
        h.max_hints = 3;
    });
    assert_eq!(s.hint_count().unwrap(), 3);
    assert!(s.put_hint("d", b"k", &set).is_err());
    drop(s);

    let off = tempfile::tempdir().unwrap();
    let s = open_with_handoff(off.path(), |h| h.enabled = false);
    assert!(matches!(
        s.put_hint("a", b"k", &set),
        Err(StoreError::HintRefused { .. })
    ));
    assert_eq!(s.hint_count().unwrap(), 0);
}

#[test]
fn hints_for_a_key_are_found_without_reading_other_keys_hints() {
    // The debug endpoint asks every node for one key's hints; a node with a
    // large hint backlog must answer from that key's entries alone. An
    // unreadable hint of another key stands in for "any other hint": a
    // lookup that read it would fail.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut set = SiblingSet::new();
    set.update(&Context::empty(), "w#1", value("v"), 1).unwrap();
    let mut other = SiblingSet::new();
    other
        .update(&Context::empty(), "w#1", value("other"), 2)
        .unwrap();
    for owner in ["a", "bb", "c", "d"] {
        for i in 0..50 {
            s.put_hint(owner, format!("k{i}").as_bytes(), &other)
                .unwrap();
        }
    }
    // Held for three owners, in the key order of the hint space (owner
    // length first).
    for owner in ["bb", "c", "a"] {
        s.put_hint(owner, b"wanted", &set).unwrap();
    }
    for owner in ["a", "d"] {
        s.engine
            .put(&hint_key(owner, b"unrelated").unwrap(), b"\xffnot a hint")
            .unwrap();
    }
    let found = s.hints_for_key(b"wanted").unwrap();
    let owners: Vec<&str> = found.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(owners, ["a", "c", "bb"]);
    assert!(found.iter().all(|(_, held)| *held == set));
    assert_eq!(s.hints_for_key(b"absent").unwrap(), vec![]);
    // The unreadable entries are there: a scan of all hints trips on them.
    assert!(matches!(
        s.hints(usize::MAX),
        Err(StoreError::Corrupt { .. })
    ));
    // Deleted hints are not found, and an owner whose last hint went is
    // not asked any more.
    s.drop_hint("c", b"wanted").unwrap();
    let owners: Vec<String> = s
        .hints_for_key(b"wanted")
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(owners, ["a", "bb"]);
}
