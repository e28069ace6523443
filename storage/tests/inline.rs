//! `Background::Inline`: no threads, flushes and compactions on the caller's thread,
//! and the same calls always doing the same file operations.
//!
//! Only one test here looks at the process's threads, and every other test in this
//! binary runs Inline engines, so a `shoal-*` thread can only come from a bug.

use std::path::Path;
use std::sync::Arc;

use shoal_storage::{Background, Engine, Error, MemFs, Options, Stats, SyncMode};

fn inline(fs: &MemFs, sync: SyncMode) -> Options {
    Options {
        sync,
        background: Background::Inline,
        fs: Arc::new(fs.clone()),
        memtable_bytes: 1024,
        block_bytes: 256,
        compaction_trigger: 3,
        ..Options::default()
    }
}

/// Names of the engine's threads alive in this process (Linux).
fn engine_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("list threads") {
        let comm = task.expect("thread").path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            if name.starts_with("shoal-") {
                names.push(name.trim().to_string());
            }
        }
    }
    names
}

fn put_past_memtable(engine: &Engine, round: u32) {
    for i in 0..20u32 {
        let k = format!("r{round:03}-k{i:03}");
        engine.put(k.as_bytes(), &[b'v'; 64]).expect("put");
    }
}

#[test]
fn inline_flushes_and_compacts_on_the_callers_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The real file system too: Inline is not only for simulations.
    let opts = Options {
        fs: Options::default().fs,
        ..inline(&MemFs::new(), SyncMode::Always)
    };
    let engine = Engine::open(dir.path(), opts).expect("open");
    assert_eq!(engine_threads(), Vec::<String>::new());
    for round in 0..10 {
        put_past_memtable(&engine, round);
        let stats = engine.stats();
        // The write that filled the memtable returned only after flushing it.
        assert_eq!(stats.immutable_memtables, 0, "{stats:?}");
        assert!(stats.tables >= 1, "{stats:?}");
        assert!(stats.memtable_bytes < 1024, "{stats:?}");
        assert_eq!(stats.last_background_error, None);
        assert_eq!(engine_threads(), Vec::<String>::new());
    }
    let stats = engine.stats();
    assert!(stats.flushes >= 10, "{stats:?}");
    assert!(stats.compactions >= 1, "{stats:?}");
    assert!(stats.tables < 3, "compaction keeps up inline: {stats:?}");
    engine.close().expect("close");
    assert_eq!(engine_threads(), Vec::<String>::new());

    // The check above can fail: a threaded engine's threads are visible, and a close
    // whose final fsync fails still stops them.
    let fs = MemFs::new();
    let threaded = Engine::open(
        "/db",
        Options {
            background: Background::Threads,
            ..inline(&fs, SyncMode::Always)
        },
    )
    .expect("open threaded");
    // A new thread names itself once it runs; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !engine_threads().iter().any(|n| n == "shoal-flush") {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            engine_threads()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    threaded.put(b"k", b"v").expect("put");
    let _after = fs.crash();
    assert!(threaded.close().is_err(), "close on a crashed disk fails");
    assert_eq!(engine_threads(), Vec::<String>::new());
}

#[test]
fn periodic_is_refused_inline() {
    let fs = MemFs::new();
    let opts = inline(
        &fs,
        SyncMode::Periodic(std::time::Duration::from_millis(10)),
    );
    match Engine::open("/db", opts) {
        Err(Error::InvalidOptions(msg)) => assert!(msg.contains("Periodic"), "{msg}"),
        other => panic!("expected InvalidOptions, got {other:?}"),
    }
    assert!(
        fs.durable_files(Path::new("/db")).is_empty(),
        "refused before touching the directory"
    );
    for sync in [SyncMode::Always, SyncMode::Never] {
        let engine = Engine::open("/db", inline(&fs, sync)).expect("Always and Never work");
        engine.put(b"k", b"v").expect("put");
        engine.close().expect("close");
    }
}

/// What a workload did, the files it left durable, and the data it left.
type Outcome = (Stats, Vec<String>, Vec<(Vec<u8>, Vec<u8>)>);

/// Runs a fixed workload.
fn workload(sync: SyncMode) -> Outcome {
    let fs = MemFs::new();
    let dir = Path::new("/db");
    let engine = Engine::open(dir, inline(&fs, sync)).expect("open");
    for i in 0..600u32 {
        let k = format!("key-{:04}", (i * 7919) % 300);
        if i % 5 == 0 {
            engine.delete(k.as_bytes()).expect("delete");
        } else {
            engine
                .put(k.as_bytes(), format!("v{i}").as_bytes())
                .expect("put");
        }
        if i % 200 == 199 {
            engine.flush().expect("flush");
        }
    }
    let mut stats = engine.stats();
    // Bloom counters depend on nothing but the calls too, but keep the comparison to
    // what the disk saw.
    stats.bloom_negatives = 0;
    stats.bloom_false_positives = 0;
    let data = engine
        .iter()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("scan");
    engine.close().expect("close");
    (stats, fs.durable_files(dir), data)
}

#[test]
fn inline_is_deterministic() {
    for sync in [SyncMode::Always, SyncMode::Never] {
        let a = workload(sync);
        let b = workload(sync);
        assert!(a.0.flushes > 5 && a.0.compactions > 0, "{:?}", a.0);
        assert_eq!(a, b, "{sync:?}: same calls, different outcome");
    }
}
