//! The write paths' guarantees, apart from the other topics: minted dots
//! never repeat (across crashes, epochs and concurrent writers), an
//! acknowledged write is durable, and clocks stay bounded.

use super::*;

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
