//! The data directory lock. Its own test binary because it opens threaded engines,
//! and `inline.rs` asserts that no engine thread exists while its tests run.

use shoal_storage::{Engine, Options};

#[test]
fn a_second_engine_on_one_directory_is_refused_until_the_first_closes() {
    // Real files: the lock is an `flock`, which also excludes a second open
    // file description in the same process.
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::open(dir.path(), Options::default()).unwrap();
    first.put(b"k", b"v").unwrap();
    match Engine::open(dir.path(), Options::default()) {
        Err(shoal_storage::Error::Locked { path }) => {
            assert!(path.ends_with("LOCK"), "{path:?}")
        }
        other => panic!("a second engine opened the directory: {other:?}"),
    }
    first.close().unwrap();
    let second = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(second.get(b"k").unwrap(), Some(b"v".to_vec()));
    drop(second);
    // A drop releases it as well.
    Engine::open(dir.path(), Options::default()).unwrap();

    // The in-memory disk locks the same way, and a crash (a reboot) forgets it.
    let fs = shoal_storage::MemFs::new();
    let opts = Options {
        fs: std::sync::Arc::new(fs.clone()),
        ..Options::default()
    };
    let held = Engine::open("/db", opts.clone()).unwrap();
    assert!(matches!(
        Engine::open("/db", opts),
        Err(shoal_storage::Error::Locked { .. })
    ));
    let rebooted = fs.crash();
    drop(held);
    let opts = Options {
        fs: std::sync::Arc::new(rebooted),
        ..Options::default()
    };
    Engine::open("/db", opts).unwrap();
}
