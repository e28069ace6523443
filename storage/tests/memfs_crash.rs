//! Machine-crash tests on `MemFs`, which forgets every byte not fsynced and every
//! directory entry not made durable by a directory fsync. Where `crash.rs` kills the
//! process (the OS keeps what was written), these cut the power: they check the
//! engine's fsync ordering, not only its write ordering.
//!
//! Seeded random sequences of puts, deletes, batches, flushes, compactions and clean
//! reopens, then a crash (sometimes keeping a torn prefix of unsynced appends) and a
//! reopen, in both `Background` modes.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_storage::{
    Background, Engine, Fs, MemFs, OpenMode, Options, ReadableFile, SyncMode, WalRecovery,
    WritableFile, WriteBatch,
};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const DIR: &str = "/data/shoal";
const SEEDS: u64 = 64;
const STEPS: usize = 250;

fn options(fs: &MemFs, sync: SyncMode, background: Background) -> Options {
    Options {
        sync,
        background,
        fs: Arc::new(fs.clone()),
        memtable_bytes: 2048,
        block_bytes: 256,
        compaction_trigger: 3,
        wal_recovery: WalRecovery::Salvage,
        ..Options::default()
    }
}

fn contents(engine: &Engine) -> Model {
    engine
        .iter()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("scan")
}

/// One random write; applies it to `model` once the engine acknowledged it.
fn random_write(rng: &mut StdRng, engine: &Engine, model: &mut Model, step: usize) {
    let key = |rng: &mut StdRng| format!("key-{:03}", rng.gen_range(0..60)).into_bytes();
    let value = |rng: &mut StdRng| {
        let pad = "v".repeat(rng.gen_range(0..80));
        format!("value-{step}-{pad}").into_bytes()
    };
    match rng.gen_range(0..10) {
        0..=5 => {
            let (k, v) = (key(rng), value(rng));
            engine.put(&k, &v).expect("put");
            model.insert(k, v);
        }
        6..=7 => {
            let k = key(rng);
            engine.delete(&k).expect("delete");
            model.remove(&k);
        }
        _ => {
            let mut batch = WriteBatch::new();
            let mut ops = Vec::new();
            for _ in 0..rng.gen_range(1..6) {
                let k = key(rng);
                let v = rng.gen_bool(0.7).then(|| value(rng));
                match &v {
                    Some(v) => batch.put(k.clone(), v.clone()),
                    None => batch.delete(k.clone()),
                };
                ops.push((k, v));
            }
            engine.write(batch).expect("batch");
            for (k, v) in ops {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
        }
    }
}

/// Crashes the file system, keeping a random torn prefix of unsynced appends when
/// `torn`, and returns the file system found after the reboot.
fn crash(rng: &mut StdRng, fs: &MemFs, torn: bool) -> MemFs {
    if torn {
        fs.crash_keeping(|_, pending| rng.gen_range(0..=pending))
    } else {
        fs.crash()
    }
}

/// What a sequence leaves after a crash under `Always`: exactly what was acknowledged.
fn always_case(seed: u64, background: Background) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = Path::new(DIR);
    let mut fs = MemFs::new();
    let mut model = Model::new();
    let mut engine = Engine::open(dir, options(&fs, SyncMode::Always, background)).expect("open");
    for round in 0..3 {
        for step in 0..STEPS {
            match rng.gen_range(0..100) {
                0 => engine.flush().expect("flush"),
                1 => engine.compact().expect("compact"),
                2 => {
                    engine.close().expect("close");
                    engine = Engine::open(dir, options(&fs, SyncMode::Always, background))
                        .expect("reopen");
                }
                _ => random_write(&mut rng, &engine, &mut model, step),
            }
        }
        // Crash with the engine still running: its threads (if any) and its drop
        // only see the dead file system from here on.
        let torn = rng.gen_bool(0.5);
        let next = crash(&mut rng, &fs, torn);
        drop(engine);
        fs = next;
        engine = Engine::open(dir, options(&fs, SyncMode::Always, background))
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen after crash: {e}"));
        assert!(
            engine.recovery().salvaged.is_empty(),
            "seed {seed} round {round}: {:?}",
            engine.recovery()
        );
        let got = contents(&engine);
        if got != model {
            let missing: Vec<_> = model.keys().filter(|k| !got.contains_key(*k)).collect();
            panic!(
                "seed {seed} round {round} {background:?}: after crash {} keys, expected {} \
                 ({} missing, e.g. {:?}); files: {:?}",
                got.len(),
                model.len(),
                missing.len(),
                missing.first().map(|k| String::from_utf8_lossy(k)),
                fs.durable_files(dir),
            );
        }
    }
}

#[test]
fn always_acknowledged_writes_survive_power_loss_inline() {
    for seed in 0..SEEDS {
        always_case(seed, Background::Inline);
    }
}

#[test]
fn always_acknowledged_writes_survive_power_loss_threads() {
    for seed in 0..SEEDS {
        always_case(1000 + seed, Background::Threads);
    }
}

/// Under `Never` a crash may lose writes, but the engine opens cleanly and keeps
/// everything before the last `flush`/`close`. With whole unsynced suffixes dropped
/// (no torn writes), what it keeps is the state after some prefix of the writes.
fn never_case(seed: u64, background: Background) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = Path::new(DIR);
    let mut fs = MemFs::new();
    let mut model = Model::new();
    // States after each acknowledged write since the last flush or close; a crash
    // must land on one of them (when nothing torn is kept) and never before the first.
    let mut since_barrier = vec![model.clone()];
    let mut engine = Engine::open(dir, options(&fs, SyncMode::Never, background)).expect("open");
    for round in 0..3 {
        for step in 0..STEPS {
            match rng.gen_range(0..100) {
                0..=1 => {
                    engine.flush().expect("flush");
                    since_barrier = vec![model.clone()];
                }
                2 => engine.compact().expect("compact"),
                3 => {
                    engine.close().expect("close");
                    since_barrier = vec![model.clone()];
                    engine = Engine::open(dir, options(&fs, SyncMode::Never, background))
                        .expect("reopen");
                }
                _ => {
                    random_write(&mut rng, &engine, &mut model, step);
                    since_barrier.push(model.clone());
                }
            }
        }
        let torn = rng.gen_bool(0.5);
        let next = crash(&mut rng, &fs, torn);
        drop(engine);
        fs = next;
        engine = Engine::open(dir, options(&fs, SyncMode::Never, background))
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen after crash: {e}"));
        let got = contents(&engine);
        let barrier = &since_barrier[0];
        for (k, v) in barrier {
            // A key overwritten or deleted after the barrier may show any later value.
            let later: Vec<Option<&Vec<u8>>> = since_barrier.iter().map(|m| m.get(k)).collect();
            assert!(
                later.contains(&got.get(k)),
                "seed {seed} round {round} {background:?}: {} = {:?} was durable at the \
                 last flush/close (value {:?})",
                String::from_utf8_lossy(k),
                got.get(k).map(|v| String::from_utf8_lossy(v).into_owned()),
                String::from_utf8_lossy(v),
            );
        }
        if !torn {
            assert!(
                since_barrier.contains(&got),
                "seed {seed} round {round} {background:?}: recovered state ({} keys) is no \
                 prefix of the writes since the last flush/close",
                got.len()
            );
        }
        // Continue from what survived.
        model = got;
        since_barrier = vec![model.clone()];
    }
}

#[test]
fn never_opens_after_power_loss_with_a_prefix_inline() {
    for seed in 0..SEEDS {
        never_case(2000 + seed, Background::Inline);
    }
}

#[test]
fn never_opens_after_power_loss_with_a_prefix_threads() {
    for seed in 0..SEEDS {
        never_case(3000 + seed, Background::Threads);
    }
}

/// A file system whose table creation fails, so frozen memtables stay unflushed.
#[derive(Debug)]
struct NoTables(MemFs);

impl Fs for NoTables {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0.read(path)
    }
    fn open_write(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn WritableFile>> {
        if path.extension().is_some_and(|e| e == "sst") {
            return Err(io::Error::other("no space for tables"));
        }
        self.0.open_write(path, mode)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>> {
        self.0.open_read(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn shoal_storage::LockGuard>> {
        self.0.lock(path)
    }
}

/// `close` promises durability in every mode, including for frozen memtables whose
/// flush has not happened (here: cannot happen) and whose segments `Never` did not
/// fsync at rotation.
fn never_close_case(background: Background) {
    let dir = Path::new(DIR);
    let fs = MemFs::new();
    let opts = Options {
        fs: Arc::new(NoTables(fs.clone())),
        max_immutable_memtables: 64,
        ..options(&fs, SyncMode::Never, background)
    };
    let engine = Engine::open(dir, opts).expect("open");
    let mut model = Model::new();
    for i in 0..400u32 {
        let (k, v) = (format!("k{i:05}"), format!("v{i}-{}", "x".repeat(40)));
        engine.put(k.as_bytes(), v.as_bytes()).expect("put");
        model.insert(k.into_bytes(), v.into_bytes());
    }
    assert!(
        engine.stats().immutable_memtables > 1,
        "{background:?}: {:?}",
        engine.stats()
    );
    engine.close().expect("close");
    drop(engine);
    let fs = fs.crash();
    let engine = Engine::open(dir, options(&fs, SyncMode::Never, background)).expect("reopen");
    let got = contents(&engine);
    assert_eq!(
        got.len(),
        model.len(),
        "{background:?}: writes before close lost in a crash"
    );
    assert_eq!(got, model);
}

#[test]
fn never_close_makes_unflushed_segments_durable_inline() {
    never_close_case(Background::Inline);
}

#[test]
fn never_close_makes_unflushed_segments_durable_threads() {
    never_close_case(Background::Threads);
}
