//! Torn writes and bit flips in commit log segments and tables: open succeeds where
//! it can, intact acknowledged data is served, damage is reported with file and
//! offset, and nothing panics or returns a wrong value.

use std::path::{Path, PathBuf};

use shoal_storage::{Engine, Error, Options, SyncMode, WalRecovery};

const N: u32 = 10;

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

fn val(i: u32) -> Vec<u8> {
    format!("value-{i:04}-padding").into_bytes()
}

/// Size of one single-put record: header, count, op header, key, value.
fn record_len() -> u64 {
    (8 + 4 + 9 + key(0).len() + val(0).len()) as u64
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.path().join(e.file_name())).expect("copy");
    }
    to
}

/// Segment preallocation: off, and the default (the segment is then the
/// records followed by zeros).
const PREALLOCATE: [u64; 2] = [0, 1 << 20];

/// A directory whose only data is `N` puts in one commit log segment,
/// preallocated `prealloc` bytes at a time. The process "crashes" by
/// forgetting the engine without closing it (`Always` already made every put
/// durable).
fn log_only_dir(prealloc: u64) -> (tempfile::TempDir, PathBuf) {
    assert_eq!(Options::default().log_preallocate_bytes, PREALLOCATE[1]);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        dir.path(),
        Options {
            sync: SyncMode::Always,
            log_preallocate_bytes: prealloc,
            ..Options::default()
        },
    )
    .expect("open");
    for i in 0..N {
        engine.put(&key(i), &val(i)).expect("put");
    }
    std::mem::forget(engine);
    let seg = files(dir.path(), "log")
        .into_iter()
        .find(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) > 0);
    let seg = seg.expect("a non-empty segment");
    let written = record_len() * u64::from(N);
    let bytes = std::fs::read(&seg).expect("read");
    assert_eq!(bytes.len() as u64, written.max(prealloc));
    assert!(bytes[written as usize..].iter().all(|&b| b == 0));
    (dir, seg)
}

fn present(engine: &Engine) -> Vec<bool> {
    (0..N)
        .map(|i| match engine.get(&key(i)).expect("get") {
            Some(v) => {
                assert_eq!(v, val(i), "wrong value for key {i}");
                true
            }
            None => false,
        })
        .collect()
}

#[test]
fn torn_log_tail_is_truncated_and_the_prefix_served() {
    for prealloc in PREALLOCATE {
        torn_log_tail(prealloc);
    }
}

/// A crash inside an append: the file ends early, or, in a preallocated
/// segment, the rest of the file is still zeros.
fn torn_log_tail(prealloc: u64) {
    let (dir, seg) = log_only_dir(prealloc);
    let r = record_len();
    let total = r * u64::from(N);
    // Every byte of the last two records, and every record boundary +-1.
    let mut cuts: Vec<u64> = (total - 2 * r..=total).collect();
    cuts.extend((1..N as u64).flat_map(|b| [b * r - 1, b * r, b * r + 1]));
    cuts.push(0);
    for cut in cuts {
        let copy = copy_dir(dir.path());
        let seg_copy = copy.path().join(seg.file_name().expect("name"));
        if prealloc == 0 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&seg_copy)
                .expect("open")
                .set_len(cut)
                .expect("truncate");
        } else {
            let mut bytes = std::fs::read(&seg_copy).expect("read");
            bytes[cut as usize..].fill(0);
            std::fs::write(&seg_copy, &bytes).expect("write");
        }
        let engine = Engine::open(copy.path(), Options::default()).expect("open after torn tail");
        let whole = (cut / r) as usize;
        let expect: Vec<bool> = (0..N as usize).map(|i| i < whole).collect();
        assert_eq!(
            present(&engine),
            expect,
            "cut at {cut}, prealloc {prealloc}"
        );
        assert_eq!(
            engine.recovery().torn_tails.len(),
            usize::from(cut % r != 0),
            "cut at {cut}"
        );
        if let Some(d) = engine.recovery().torn_tails.first() {
            assert_eq!(d.offset, whole as u64 * r);
        }
    }
}

#[test]
fn log_bit_flips_are_reported_never_served() {
    for prealloc in PREALLOCATE {
        log_bit_flips(prealloc);
    }
}

fn log_bit_flips(prealloc: u64) {
    let (dir, seg) = log_only_dir(prealloc);
    let r = record_len();
    let len = r * u64::from(N);
    for at in 0..len {
        let copy = copy_dir(dir.path());
        let seg_copy = copy.path().join(seg.file_name().expect("name"));
        let mut bytes = std::fs::read(&seg_copy).expect("read");
        bytes[at as usize] ^= 0x04;
        std::fs::write(&seg_copy, &bytes).expect("write");
        let damaged = at / r;
        let last = damaged == u64::from(N) - 1;
        match Engine::open(copy.path(), Options::default()) {
            Ok(engine) => {
                // Only damage to the last record looks like a torn tail.
                assert!(last, "flip at {at} silently accepted (prealloc {prealloc})");
                let expect: Vec<bool> = (0..N).map(|i| u64::from(i) < damaged).collect();
                assert_eq!(present(&engine), expect);
            }
            Err(Error::CorruptRecord { path, offset, .. }) => {
                assert!(!last || offset == damaged * r, "flip at {at}");
                assert_eq!(path, seg_copy);
                assert_eq!(offset, damaged * r, "flip at {at}");
                // Salvage mode opens and serves everything before the damage.
                let opts = Options {
                    wal_recovery: WalRecovery::Salvage,
                    ..Options::default()
                };
                let engine = Engine::open(copy.path(), opts).expect("salvage open");
                let expect: Vec<bool> = (0..N).map(|i| u64::from(i) < damaged).collect();
                assert_eq!(present(&engine), expect);
                assert_eq!(engine.recovery().salvaged.len(), 1);
            }
            Err(e) => panic!("unexpected error for flip at {at}: {e}"),
        }
    }
}

/// A directory holding one table of `n` keys in many small blocks.
fn table_dir(n: u32) -> (tempfile::TempDir, PathBuf, Options) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        sync: SyncMode::Never,
        block_bytes: 256,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts.clone()).expect("open");
    for i in 0..n {
        engine.put(&key(i), &val(i)).expect("put");
    }
    engine.flush().expect("flush");
    engine.close().expect("close");
    drop(engine);
    let sst = files(dir.path(), "sst");
    assert_eq!(sst.len(), 1);
    (dir, sst[0].clone(), opts)
}

#[test]
fn damaged_data_block_fails_only_its_keys() {
    let n = 2000;
    let (dir, sst, opts) = table_dir(n);
    let mut bytes = std::fs::read(&sst).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(&sst, &bytes).expect("write");
    let engine = Engine::open(dir.path(), opts).expect("open with a damaged data block");
    let (mut ok, mut bad) = (0, 0);
    for i in 0..n {
        match engine.get(&key(i)) {
            Ok(v) => {
                assert_eq!(v, Some(val(i)));
                ok += 1;
            }
            Err(Error::CorruptBlock { path, offset, .. }) => {
                assert_eq!(path, sst);
                assert_eq!(offset, 0);
                bad += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(bad > 0 && ok > n - 20, "ok {ok}, bad {bad}");
    let scan: Vec<_> = engine.iter().expect("iter").collect();
    assert!(matches!(scan.last(), Some(Err(Error::CorruptBlock { .. }))));
    // A scan starting after the damaged block is unaffected.
    let tail = engine
        .scan(key(1000).as_slice()..)
        .expect("scan")
        .collect::<Result<Vec<_>, _>>()
        .expect("intact range");
    assert_eq!(tail.len(), 1000);
}

#[test]
fn bit_flips_anywhere_in_a_table_are_detected() {
    let n = 40;
    let (dir, sst, opts) = table_dir(n);
    let len = std::fs::metadata(&sst).expect("stat").len() as usize;
    for at in (0..len).step_by(3) {
        let copy = copy_dir(dir.path());
        let sst_copy = copy.path().join(sst.file_name().expect("name"));
        let mut bytes = std::fs::read(&sst_copy).expect("read");
        bytes[at] ^= 0x20;
        std::fs::write(&sst_copy, &bytes).expect("write");
        match Engine::open(copy.path(), opts.clone()) {
            Ok(engine) => {
                for i in 0..n {
                    match engine.get(&key(i)) {
                        Ok(v) => assert_eq!(v, Some(val(i)), "flip at {at} served a wrong value"),
                        Err(Error::CorruptBlock { path, .. }) => assert_eq!(path, sst_copy),
                        Err(e) => panic!("flip at {at}: unexpected error {e}"),
                    }
                }
            }
            Err(Error::CorruptBlock { path, .. }) => assert_eq!(path, sst_copy),
            Err(e) => panic!("flip at {at}: unexpected error {e}"),
        }
    }
}

#[test]
fn truncated_table_is_reported_at_open() {
    let (dir, sst, opts) = table_dir(40);
    let len = std::fs::metadata(&sst).expect("stat").len();
    for cut in [0, 1, 30, len / 2, len - 57, len - 1] {
        let copy = copy_dir(dir.path());
        let sst_copy = copy.path().join(sst.file_name().expect("name"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&sst_copy)
            .expect("open")
            .set_len(cut)
            .expect("truncate");
        match Engine::open(copy.path(), opts.clone()) {
            Err(Error::CorruptBlock { path, .. }) => assert_eq!(path, sst_copy),
            other => panic!("cut at {cut}: expected CorruptBlock, got {other:?}"),
        }
    }
}

#[test]
fn corrupt_manifest_is_reported() {
    let (dir, _sst, opts) = table_dir(10);
    let m = dir.path().join("MANIFEST");
    let mut bytes = std::fs::read(&m).expect("read");
    bytes[20] ^= 1;
    std::fs::write(&m, &bytes).expect("write");
    assert!(matches!(
        Engine::open(dir.path(), opts),
        Err(Error::CorruptManifest { .. })
    ));
}

#[test]
fn invalid_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        max_key_len: 8,
        max_value_len: 8,
        sync: SyncMode::Never,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts).expect("open");
    assert!(matches!(
        engine.put(b"", b"v"),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        engine.put(b"123456789", b"v"),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        engine.put(b"k", b"123456789"),
        Err(Error::ValueTooLarge { .. })
    ));
    engine.close().expect("close");
    assert!(matches!(engine.put(b"k", b"v"), Err(Error::Closed)));
    assert!(matches!(engine.get(b"k"), Err(Error::Closed)));
}
