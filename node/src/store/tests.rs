//! The store's unit tests: key layout, hints, epochs, scans, the tree.

use shoal_merkle::TokenRange;
use shoal_vclock::{Content, Context};

use super::hints::{encode_hint, hint_key, parse_hint_key, prefix_successor};
use super::*;
use crate::env::SystemClock;

fn open(dir: &Path) -> Store {
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    Store::open(dir, "node-1", &config, Arc::new(SystemClock)).unwrap()
}

/// A key of the default bucket.
fn w(k: &str) -> Vec<u8> {
    keys::wire(keys::DEFAULT_BUCKET, k.as_bytes())
}

fn value(v: &str) -> Content {
    Content::value(v.as_bytes().to_vec(), "text/plain")
}

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
fn coordinate_mints_increasing_dots_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let actor;
    {
        let s = open(dir.path());
        actor = s.actor().to_string();
        let a = s
            .coordinate(b"k", &Context::empty(), value("a"), 1, None)
            .unwrap();
        let b = s
            .coordinate(b"k", &Context::empty(), value("b"), 2, None)
            .unwrap();
        assert_eq!(b.values().len(), 2, "blind writes keep both");
        let c = s
            .coordinate(b"k", &b.context(), value("c"), 3, None)
            .unwrap();
        assert_eq!(c.values().len(), 1);
        assert!(a.values()[0].dot.counter < c.values()[0].dot.counter);
        assert_eq!(s.incarnation(), 1);
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.incarnation(), 2, "incarnation rises on every open");
    assert_eq!(s.actor(), actor, "epoch survives a restart");
    let got = s.read(b"k").unwrap().unwrap();
    assert_eq!(got.values()[0].value(), Some(&b"c"[..]));
}

/// A store of node-1 on `fs` (an in-memory disk that a test can crash),
/// with no engine threads.
fn open_on_mem(fs: &shoal_storage::MemFs, config: &Config) -> Store {
    Store::open_with(
        Path::new("/data/node-1"),
        "node-1",
        config,
        Arc::new(SystemClock),
        Arc::new(fs.clone()),
        shoal_storage::Background::Inline,
    )
    .unwrap()
}

#[test]
fn a_crash_that_loses_unsynced_dots_moves_to_a_new_epoch() {
    // sync = never on a disk that forgets what was not fsynced: the
    // last write's dot is lost locally but a peer holds it.
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    let fs = shoal_storage::MemFs::new();
    let open = |fs: &shoal_storage::MemFs| open_on_mem(fs, &config);
    let s = open(&fs);
    let old_actor = s.actor().to_string();
    let on_peer = s
        .coordinate(b"k", &Context::empty(), value("a"), 1, None)
        .unwrap();
    // Power lost before anything else reaches the disk: the old engine's
    // closing I/O fails.
    let fs = fs.crash();
    drop(s);
    let s = open(&fs);
    assert_eq!(s.read(b"k").unwrap(), None, "the unsynced write is gone");
    assert_ne!(s.actor(), old_actor, "an unclean stop starts a new epoch");
    let here = s
        .coordinate(b"k", &Context::empty(), value("b"), 2, None)
        .unwrap();
    let merged = here.sync(&on_peer);
    assert_eq!(
        merged.values().len(),
        2,
        "both blind writes survive the merge (one dot would mean one value)"
    );
    // A clean stop keeps the epoch, even across a later crash of nothing.
    let actor = s.actor().to_string();
    s.close().unwrap();
    let s = open(&fs.crash());
    assert_eq!(s.actor(), actor, "a clean stop keeps the epoch");
}

#[test]
fn an_unclean_stop_moves_to_a_new_epoch_even_with_fsync_per_write() {
    // A forwarded write hands its dot to the replicas while its own fsync
    // runs, so a crash can lose a dot peers hold under sync = always too.
    let config = Config::default();
    assert_eq!(config.storage.sync, SyncMode::Always);
    let fs = shoal_storage::MemFs::new();
    let open = |fs: &shoal_storage::MemFs| open_on_mem(fs, &config);
    let s = open(&fs);
    let old_actor = s.actor().to_string();
    s.coordinate(b"k", &Context::empty(), value("a"), 1, None)
        .unwrap();
    let fs = fs.crash();
    drop(s);
    let s = open(&fs);
    assert_ne!(s.actor(), old_actor, "an unclean stop starts a new epoch");
    assert!(s.read(b"k").unwrap().is_some(), "the synced write is kept");
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
fn tombstones_purge_only_after_grace() {
    let mut t = SiblingSet::new();
    t.update(&Context::empty(), "a", Content::Tombstone, 1_000)
        .unwrap();
    let bytes = t.encode();
    let key = data_key(b"k");
    assert!(keep_after_grace(&key, &bytes, 1_500, 1_000));
    assert!(!keep_after_grace(&key, &bytes, 2_001, 1_000));
    let mut v = SiblingSet::new();
    v.update(&Context::empty(), "a", value("v"), 1_000).unwrap();
    assert!(keep_after_grace(&key, &v.encode(), 1_000_000, 1_000));
    assert!(keep_after_grace(&key, b"garbage", 1_000_000, 1_000));
    assert!(keep_after_grace(
        &meta_key(b"epoch"),
        b"x",
        1_000_000,
        1_000
    ));
}

fn small_tree_config() -> Config {
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    config.anti_entropy.leaf_bits = 16;
    config.tombstones.grace_secs = 1;
    config
}

#[test]
fn incremental_tree_equals_a_rebuild_through_every_write_path_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_tree_config();
    let root;
    {
        let s = Store::open(dir.path(), "node-1", &config, Arc::new(SystemClock)).unwrap();
        for i in 0..200u32 {
            // Half in the default bucket, half in another: one tree over both.
            let key = if i < 100 {
                w(&format!("k{i}"))
            } else {
                keys::wire("carts", format!("k{i}").as_bytes())
            };
            s.coordinate(&key, &Context::empty(), value("a"), 1, None)
                .unwrap();
        }
        // Overwrites, a stand-in write with a hint, merges, a batch with
        // a key twice, and deletes that purge.
        let current = s.read(&w("k1")).unwrap().unwrap();
        s.coordinate(&w("k1"), &current.context(), value("b"), 2, None)
            .unwrap();
        s.coordinate(&w("k2"), &Context::empty(), value("c"), 3, Some("node-9"))
            .unwrap();
        let mut other = SiblingSet::new();
        other
            .update(&Context::empty(), "node-2#1", value("x"), 4)
            .unwrap();
        s.merge(&w("k3"), &other).unwrap();
        s.merge(&w("new"), &other).unwrap();
        s.put_hint("node-9", &w("hint-only"), &other).unwrap();
        let mut again = other.clone();
        again
            .update(&other.context(), "node-2#1", value("y"), 5)
            .unwrap();
        let (_, changed) = s
            .merge_many(&[
                (w("k4"), other.clone()),
                (w("batch"), other.clone()),
                (w("batch"), again.clone()),
            ])
            .unwrap();
        assert_eq!(changed, 2);
        assert_eq!(s.read(&w("batch")).unwrap(), Some(again));
        for key in [w("k5"), w("k6")] {
            let key = key.as_slice();
            let current = s.read(key).unwrap().unwrap();
            s.coordinate(key, &current.context(), Content::Tombstone, 10, None)
                .unwrap();
        }
        // The tombstones were written at t=10 ms: long past the grace.
        assert_eq!(s.purge_tombstones(1_000_000, usize::MAX).unwrap(), 2);
        assert_eq!(s.read(&w("k5")).unwrap(), None);
        let incremental = s.with_tree(|t| t.clone());
        assert_eq!(incremental, s.rebuilt_tree().unwrap());
        assert_eq!(
            incremental.len(),
            200 + 2 - 2,
            "new + batch, minus two purged"
        );
        root = incremental.root_hash();
        s.close().unwrap();
    }
    let s = Store::open(dir.path(), "node-1", &config, Arc::new(SystemClock)).unwrap();
    assert_eq!(s.with_tree(|t| t.root_hash()), root, "rebuilt at open");
}

#[test]
fn range_scans_page_through_wrapping_ranges_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        "node-1",
        &small_tree_config(),
        Arc::new(SystemClock),
    )
    .unwrap();
    // Three buckets' keys: a scan of a range visits every bucket's.
    let keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            keys::wire(
                ["default", "a", "b-2"][i as usize % 3],
                format!("key-{i}").as_bytes(),
            )
        })
        .collect();
    for k in &keys {
        s.coordinate(k, &Context::empty(), value("v"), 1, None)
            .unwrap();
    }
    // A wrapping range and a plain one.
    let ranges = [
        TokenRange {
            start: 0xC000_0000_0000_0000,
            end: 0x2000_0000_0000_0000,
        },
        TokenRange {
            start: 0x4000_0000_0000_0000,
            end: 0x6000_0000_0000_0000,
        },
    ];
    let mut expected: Vec<&Vec<u8>> = keys
        .iter()
        .filter(|k| {
            let p = keys::position(k);
            ranges.iter().any(|r| r.contains(p))
        })
        .collect();
    expected.sort();
    let mut got = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let page = s
            .scan_ranges(&ranges, cursor.as_ref(), 7, usize::MAX, true)
            .unwrap();
        assert!(page.entries.len() <= 7);
        for e in &page.entries {
            let stored = s.read(&e.key).unwrap().unwrap();
            assert_eq!(e.siblings.as_ref(), Some(&stored));
            assert_eq!(e.digest, digest_of(&stored.encode()));
        }
        got.extend(page.entries.into_iter().map(|e| e.key));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the scan ended");
    assert_eq!(got.len(), expected.len(), "each key once");
    // Paging by bytes alone (one or two entries a page) visits the same keys.
    let mut by_bytes = Vec::new();
    let mut cursor = None;
    for _ in 0..1_000 {
        let page = s
            .scan_ranges(&ranges, cursor.as_ref(), usize::MAX, 80, true)
            .unwrap();
        assert!(!page.entries.is_empty() || page.next.is_none());
        by_bytes.extend(page.entries.into_iter().map(|e| e.key));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    by_bytes.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(by_bytes, sorted);
    got.sort();
    assert_eq!(got.iter().collect::<Vec<_>>(), expected);
    let bad = ScanCursor {
        range: 5,
        after: vec![DATA; 9],
    };
    assert!(matches!(
        s.scan_ranges(&ranges, Some(&bad), 7, usize::MAX, false),
        Err(StoreError::BadCursor)
    ));
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

/// A state that 40 different actors wrote one after another, each having
/// read the previous write: one sibling, a clock of 40 entries.
fn many_actor_state(actors: usize) -> SiblingSet {
    let mut set = SiblingSet::new();
    for i in 0..actors {
        let ctx = set.context();
        set.update(
            &ctx,
            &format!("node-{i}#1"),
            value(&format!("v{i}")),
            i as u64 + 1,
        )
        .unwrap();
    }
    set
}

#[test]
fn clocks_stay_bounded_on_write_merge_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    config.versioning.max_clock_entries = 5;
    let s = Store::open(dir.path(), "node-1", &config, Arc::new(SystemClock)).unwrap();
    let incoming = many_actor_state(40);
    assert_eq!(incoming.clock().len(), 40);

    // Merge (replication, read repair, hinted handoff).
    let merged = s.merge(b"m", &incoming).unwrap();
    assert!(merged.clock().len() <= 5, "merge: {}", merged.clock().len());
    assert_eq!(s.read(b"m").unwrap().unwrap(), merged);
    assert_eq!(merged.values().len(), 1, "pruning dropped no version");

    // Batch merge (anti-entropy, range streaming).
    let (batch, _) = s.merge_many(&[(b"b".to_vec(), incoming.clone())]).unwrap();
    assert!(
        batch[0].clock().len() <= 5,
        "merge_many: {}",
        batch[0].clock().len()
    );

    // A write whose context names all 40 actors.
    let written = s
        .coordinate(b"w", &incoming.context(), value("new"), 100, None)
        .unwrap();
    assert!(
        written.clock().len() <= 5,
        "coordinate: {}",
        written.clock().len()
    );
    assert_eq!(written.values().len(), 1);
    // The pruned actors' counters stay below every new dot.
    assert!(written.counter_floor() >= 1);
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

fn open_always_on(fs: &shoal_storage::MemFs, background: shoal_storage::Background) -> Store {
    let mut config = Config::default();
    config.storage.sync = SyncMode::Always;
    Store::open_with(
        Path::new("/node"),
        "node-1",
        &config,
        Arc::new(SystemClock),
        Arc::new(fs.clone()),
        background,
    )
    .unwrap()
}

/// Many RPC-style writers on one key, each releasing the stripe before it
/// awaits its fsync: every one mints its own dot (the stripe serialises the
/// minting), and every write acknowledged (awaited `Ok`) survives a power
/// loss right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_coordinates_mint_distinct_dots_and_ack_only_durable_writes() {
    let fs = shoal_storage::MemFs::new();
    let s = Arc::new(open_always_on(&fs, shoal_storage::Background::Threads));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let written = s
                    .coordinate_begin(b"k", &Context::empty(), value(&format!("v{i}")), 1, None)
                    .unwrap();
                written.durable().await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let state = s.read(b"k").unwrap().unwrap();
    let mut dots: Vec<_> = state.values().iter().map(|v| v.dot.clone()).collect();
    dots.sort();
    dots.dedup();
    assert_eq!(
        dots.len(),
        50,
        "blind writes keep one sibling each, each its own dot"
    );
    let crashed = fs.crash();
    drop(s);
    let s = open_always_on(&crashed, shoal_storage::Background::Threads);
    assert_eq!(
        s.read(b"k").unwrap(),
        Some(state),
        "acknowledged means durable"
    );
}

/// Under `Inline` (the simulation) a write is durable when `*_begin`
/// returns, so awaiting it never yields to the scheduler.
#[test]
fn inline_writes_are_resolved_when_begin_returns() {
    let fs = shoal_storage::MemFs::new();
    let s = open_always_on(&fs, shoal_storage::Background::Inline);
    let set = s
        .coordinate_begin(b"k", &Context::empty(), value("a"), 1, None)
        .unwrap();
    assert!(set.is_resolved());
    let set = set.wait().unwrap();
    let same = s.merge_begin(b"k", &set).unwrap();
    assert!(
        same.is_resolved(),
        "an unchanged merge waits for nothing here"
    );
    let hint = s.put_hint_begin("owner", b"k", &set).unwrap();
    assert!(hint.is_resolved());
    hint.wait().unwrap();
}

/// An unchanged merge acknowledges a state some other write appended; it
/// resolves only once that write is durable (a barrier behind it).
#[test]
fn an_unchanged_merge_is_acknowledged_only_once_durable() {
    let fs = shoal_storage::MemFs::new();
    let s = open_always_on(&fs, shoal_storage::Background::Threads);
    let set = s
        .coordinate(b"k", &Context::empty(), value("a"), 1, None)
        .unwrap();
    let again = s.merge_begin(b"k", &set).unwrap().wait().unwrap();
    assert_eq!(again, set);
    let (_, changed) = s.merge_many(&[(b"k".to_vec(), set.clone())]).unwrap();
    assert_eq!(changed, 0);
}

/// A data directory written before buckets: its data keys are the default
/// bucket's, and its hints move to the wire-key layout at open.
#[test]
fn a_data_directory_from_before_buckets_opens_as_the_default_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SiblingSet::new();
    set.update(&Context::empty(), "node-2#1", value("old"), 1)
        .unwrap();
    {
        let s = open(dir.path());
        // Exactly the layout of before: `0x01 + position + key`, and
        // `0x02 + owner + position + key` for a hint.
        let mut data = vec![DATA];
        data.extend_from_slice(&shoal_ring::key_position(b"user:1").to_be_bytes());
        data.extend_from_slice(b"user:1");
        s.engine.put(&data, &set.encode()).unwrap();
        let mut hint = vec![LEGACY_HINT, 6];
        hint.extend_from_slice(b"node-3");
        hint.extend_from_slice(&shoal_ring::key_position(b"user:2").to_be_bytes());
        hint.extend_from_slice(b"user:2");
        s.engine.put(&hint, &encode_hint(&set, 5)).unwrap();
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.read(&w("user:1")).unwrap(), Some(set.clone()));
    assert_eq!(
        s.hints_for_key(&w("user:2")).unwrap(),
        vec![("node-3".to_string(), set.clone())]
    );
    assert_eq!(s.hint_count().unwrap(), 1);
    let legacy = s
        .engine
        .scan([LEGACY_HINT].as_slice()..[LEGACY_HINT + 1].as_slice())
        .unwrap()
        .count();
    assert_eq!(legacy, 0, "every old hint moved");
    assert_eq!(s.with_tree(|t| t.len()), 1);
}

#[test]
fn an_lww_bucket_keeps_one_winner_on_every_path_and_its_props_survive_a_restart() {
    use crate::buckets::{BucketProps, PropsVersion, VersionedProps};
    let dir = tempfile::tempdir().unwrap();
    let reg = |k: &str| keys::wire("reg", k.as_bytes());
    let lww = VersionedProps {
        version: PropsVersion {
            ms: 7,
            origin: "gw".into(),
        },
        props: BucketProps {
            conflict: shoal_vclock::Policy::Lww,
            ttl_s: None,
        },
    };
    let concurrent = |actor: &str, v: &str, t: u64| {
        let mut s = SiblingSet::new();
        s.update(&Context::empty(), actor, value(v), t).unwrap();
        s
    };
    {
        let s = open(dir.path());
        assert_eq!(s.merge_props(&[("reg".into(), lww.clone())]).unwrap(), 1);
        s.coordinate(&reg("k"), &Context::empty(), value("mine"), 100, None)
            .unwrap();
        // A concurrent newer write arrives by replication, an older one by
        // a batch (anti-entropy), another as a hint: one winner each time.
        let merged = s
            .merge(&reg("k"), &concurrent("node-2#1", "newer", 200))
            .unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged.values()[0].value(), Some(&b"newer"[..]));
        let (after, _) = s
            .merge_many(&[(reg("k"), concurrent("node-3#1", "older", 50))])
            .unwrap();
        assert_eq!(after[0].values()[0].value(), Some(&b"newer"[..]));
        let hinted = s
            .put_hint("node-4", &reg("h"), &concurrent("node-2#1", "a", 1))
            .unwrap();
        assert_eq!(hinted.len(), 1);
        let hinted = s
            .put_hint("node-4", &reg("h"), &concurrent("node-3#1", "b", 2))
            .unwrap();
        assert_eq!(hinted.values()[0].value(), Some(&b"b"[..]));
        // A blind write supersedes what the replica holds, even a version
        // from a clock ahead.
        let written = s
            .coordinate(&reg("k"), &Context::empty(), value("last"), 10, None)
            .unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written.values()[0].value(), Some(&b"last"[..]));
        // The default bucket still keeps siblings.
        s.merge(&w("k"), &concurrent("node-2#1", "x", 1)).unwrap();
        let both = s.merge(&w("k"), &concurrent("node-3#1", "y", 2)).unwrap();
        assert_eq!(both.len(), 2);
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.props().record("reg"), Some(lww));
    let merged = s
        .merge(&reg("k"), &concurrent("node-5#1", "late", 1))
        .unwrap();
    assert_eq!(merged.values()[0].value(), Some(&b"last"[..]));
}

#[test]
fn a_gc_purge_removes_only_the_state_it_checked_and_later_writes_mint_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = w("gone");
    let first_dot;
    {
        let s = open(dir.path());
        let v = s
            .coordinate(&key, &Context::empty(), value("v"), 1, None)
            .unwrap();
        let t = s
            .coordinate(&key, &v.context(), Content::Tombstone, 2, None)
            .unwrap();
        first_dot = t.values()[0].dot.clone();
        assert!(t.is_tombstone_only());
        let digest = digest_of(&t.encode());
        assert!(
            !s.gc_purge(&key, &[0u8; 32]).unwrap(),
            "another state's digest"
        );
        assert_eq!(s.gc_state(&key).unwrap(), (Some(digest), false));
        assert!(s.gc_purge(&key, &digest).unwrap());
        assert_eq!(s.read(&key).unwrap(), None);
        assert_eq!(s.gc_state(&key).unwrap(), (None, false));
        assert!(s.with_tree(|t| t.is_empty()), "the key left the tree");
        // Written again blindly: a dot no clock of the purged state covers.
        let again = s
            .coordinate(&key, &Context::empty(), value("again"), 3, None)
            .unwrap();
        let dot = &again.values()[0].dot;
        assert_eq!(dot.actor, first_dot.actor);
        assert!(dot.counter > first_dot.counter, "{dot} after {first_dot}");
        s.close().unwrap();
    }
    // The floor is durable: after a restart too.
    let s = open(dir.path());
    let other = w("gone-too");
    let t = s
        .coordinate(&other, &Context::empty(), Content::Tombstone, 4, None)
        .unwrap();
    let digest = digest_of(&t.encode());
    assert!(s.gc_purge(&other, &digest).unwrap());
    let again = s
        .coordinate(&other, &Context::empty(), value("x"), 5, None)
        .unwrap();
    assert!(again.values()[0].dot.counter > first_dot.counter);
}
