//! The asynchronous commit path: who is woken when, what a failed fsync does, and
//! that close and `Background::Inline` leave nothing pending. The commit log's
//! fsyncs go through a gate the test opens one at a time, so each test knows which
//! records an fsync covered.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::fs::{LockGuard, ReadableFile, WritableFile};
use crate::{
    Background, Commit, Engine, Error, Fs, MemFs, OpenMode, Options, SyncMode, WriteBatch,
};

const DIR: &str = "/db";
/// Every wait in these tests gives up after this.
const BOUND: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct GateState {
    /// Whether commit log fsyncs are gated at all (not during open).
    armed: bool,
    /// Gated fsyncs allowed through before the next one blocks.
    permits: usize,
    /// Gated fsyncs that have started.
    entered: usize,
    /// Whether a gated fsync fails once let through.
    fail: bool,
    /// Whether table files cannot be created (flushes fail).
    no_tables: bool,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    fn with<T>(&self, f: impl FnOnce(&mut GateState) -> T) -> T {
        let mut s = self.state.lock().unwrap();
        let out = f(&mut s);
        self.cv.notify_all();
        out
    }

    fn wait_until(&self, what: &str, cond: impl Fn(&GateState) -> bool) {
        let deadline = Instant::now() + BOUND;
        let mut s = self.state.lock().unwrap();
        while !cond(&s) {
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}");
            s = self.cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    fn pass(&self) -> io::Result<()> {
        let deadline = Instant::now() + BOUND;
        let mut s = self.state.lock().unwrap();
        if !s.armed {
            return Ok(());
        }
        s.entered += 1;
        self.cv.notify_all();
        while s.permits == 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::other("gate never opened"));
            }
            s = self.cv.wait_timeout(s, deadline - now).unwrap().0;
        }
        s.permits -= 1;
        if s.fail {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct GatedFs {
    inner: MemFs,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn WritableFile>,
    gate: Arc<Gate>,
}

impl WritableFile for GatedFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass()?;
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Fs for GatedFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn open_write(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn WritableFile>> {
        if path.extension().is_some_and(|e| e == "sst") && self.gate.with(|s| s.no_tables) {
            return Err(io::Error::other("no space for tables"));
        }
        let inner = self.inner.open_write(path, mode)?;
        if path.extension().is_some_and(|e| e == "log") {
            return Ok(Box::new(GatedFile {
                inner,
                gate: self.gate.clone(),
            }));
        }
        Ok(inner)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>> {
        self.inner.open_read(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock(path)
    }
}

/// An engine whose commit log fsyncs wait at the gate (armed, no permits).
fn gated(background: Background) -> (Engine, Arc<Gate>, MemFs) {
    gated_with(background, Options::default())
}

fn gated_with(background: Background, base: Options) -> (Engine, Arc<Gate>, MemFs) {
    let mem = MemFs::new();
    let gate = Arc::new(Gate::default());
    let opts = Options {
        sync: SyncMode::Always,
        fs: Arc::new(GatedFs {
            inner: mem.clone(),
            gate: gate.clone(),
        }),
        background,
        write_timeout: BOUND,
        ..base
    };
    let engine = Engine::open(DIR, opts).expect("open");
    gate.with(|s| s.armed = true);
    (engine, gate, mem)
}

fn batch(key: &str) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(key.as_bytes(), b"v".as_slice());
    b
}

/// Counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    (c.clone(), Waker::from(c))
}

fn poll(commit: &mut Commit, waker: &Waker) -> Poll<crate::Result<()>> {
    Pin::new(commit).poll(&mut Context::from_waker(waker))
}

fn wait_for_wake(count: &Count, n: usize) {
    let deadline = Instant::now() + BOUND;
    while count.0.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "waker never woken");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_commit_is_woken_only_by_the_fsync_that_covers_it() {
    let (engine, gate, _) = gated(Background::Threads);
    let mut a = engine.append(batch("a")).unwrap();
    // The commit thread is inside a's fsync, so b's record is not in it.
    gate.wait_until("the first fsync", |s| s.entered == 1);
    let mut b = engine.append(batch("b")).unwrap();
    assert_eq!(
        engine.get(b"b").unwrap(),
        Some(b"v".to_vec()),
        "readable at once"
    );
    let ((ca, wa), (cb, wb)) = (counter(), counter());
    assert!(poll(&mut a, &wa).is_pending());
    assert!(poll(&mut b, &wb).is_pending());

    gate.with(|s| s.permits = 1);
    wait_for_wake(&ca, 1);
    assert!(matches!(poll(&mut a, &wa), Poll::Ready(Ok(()))));
    // The next round is parked at the gate: the first one is over, and it left b.
    gate.wait_until("the second fsync", |s| s.entered == 2);
    assert_eq!(
        cb.0.load(Ordering::SeqCst),
        0,
        "b woken by an fsync that did not cover it"
    );
    assert!(!b.is_resolved());

    gate.with(|s| s.permits = 1);
    wait_for_wake(&cb, 1);
    assert!(matches!(poll(&mut b, &wb), Poll::Ready(Ok(()))));
    assert_eq!(ca.0.load(Ordering::SeqCst), 1, "a woken once");
    // Polled again after it finished: the same outcome, no panic.
    assert!(matches!(poll(&mut a, &wa), Poll::Ready(Ok(()))));
    gate.with(|s| s.permits = usize::MAX);
    assert!(engine.stats().commit_syncs >= 2);
    engine.close().unwrap();
}

#[test]
fn a_failed_fsync_fails_every_commit_waiting_on_it() {
    let (engine, gate, _) = gated(Background::Threads);
    let mut a = engine.append(batch("a")).unwrap();
    gate.wait_until("the first fsync", |s| s.entered == 1);
    let mut b = engine.append(batch("b")).unwrap();
    let blocked = std::thread::spawn({
        let c = engine.append(batch("c")).unwrap();
        move || c.wait()
    });
    let ((ca, wa), (cb, wb)) = (counter(), counter());
    assert!(poll(&mut a, &wa).is_pending());
    assert!(poll(&mut b, &wb).is_pending());
    gate.with(|s| {
        s.fail = true;
        s.permits = usize::MAX;
    });
    wait_for_wake(&ca, 1);
    wait_for_wake(&cb, 1);
    for commit in [&mut a, &mut b] {
        match poll(commit, &wa) {
            Poll::Ready(Err(Error::WalFailed { reason })) => {
                assert!(reason.contains("injected fsync failure"), "{reason}")
            }
            other => panic!("expected WalFailed, got {other:?}"),
        }
    }
    assert!(matches!(
        blocked.join().unwrap(),
        Err(Error::WalFailed { .. })
    ));
    engine.close().unwrap();
}

#[test]
fn close_resolves_every_pending_commit() {
    let (engine, gate, mem) = gated(Background::Threads);
    let engine = Arc::new(engine);
    let mut a = engine.append(batch("a")).unwrap();
    gate.wait_until("the first fsync", |s| s.entered == 1);
    let mut b = engine.append(batch("b")).unwrap();
    let ((ca, wa), (cb, wb)) = (counter(), counter());
    assert!(poll(&mut a, &wa).is_pending());
    assert!(poll(&mut b, &wb).is_pending());
    let closing = std::thread::spawn({
        let engine = engine.clone();
        move || engine.close()
    });
    std::thread::sleep(Duration::from_millis(50));
    gate.with(|s| s.permits = usize::MAX);
    closing.join().unwrap().unwrap();
    wait_for_wake(&ca, 1);
    wait_for_wake(&cb, 1);
    assert!(matches!(poll(&mut a, &wa), Poll::Ready(Ok(()))));
    assert!(matches!(poll(&mut b, &wb), Poll::Ready(Ok(()))));
    assert!(matches!(engine.append(batch("c")), Err(Error::Closed)));
    // Both were acknowledged, so both survive a power loss.
    drop(engine);
    let reopened = Engine::open(
        DIR,
        Options {
            fs: Arc::new(mem.crash()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(reopened.get(b"a").unwrap(), Some(b"v".to_vec()));
    assert_eq!(reopened.get(b"b").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_barrier_waits_for_earlier_writes_only() {
    let (engine, gate, _) = gated(Background::Threads);
    assert!(engine.barrier().unwrap().is_resolved(), "nothing pending");
    let _a = engine.append(batch("a")).unwrap();
    gate.wait_until("the first fsync", |s| s.entered == 1);
    let mut barrier = engine.barrier().unwrap();
    let (count, waker) = counter();
    assert!(poll(&mut barrier, &waker).is_pending());
    gate.with(|s| s.permits = usize::MAX);
    wait_for_wake(&count, 1);
    assert!(matches!(poll(&mut barrier, &waker), Poll::Ready(Ok(()))));
    assert!(engine.barrier().unwrap().is_resolved());
    engine.close().unwrap();
}

#[test]
fn inline_commits_are_durable_when_append_returns() {
    let (engine, gate, mem) = gated(Background::Inline);
    gate.with(|s| s.permits = usize::MAX);
    let mut commit = engine.append(batch("a")).unwrap();
    assert!(commit.is_resolved(), "no thread may finish it later");
    let (_, waker) = counter();
    assert!(matches!(poll(&mut commit, &waker), Poll::Ready(Ok(()))));
    assert_eq!(gate.with(|s| s.entered), 1, "fsynced inside append");
    // A failed inline fsync is the append's own error.
    gate.with(|s| s.fail = true);
    match engine.append(batch("b")) {
        Err(Error::Io { op, .. }) => assert_eq!(op, "fsync commit log"),
        other => panic!("expected the fsync's error, got {other:?}"),
    }
    // Power loss: the acknowledged write is there.
    drop(engine);
    let crashed = Engine::open(
        DIR,
        Options {
            fs: Arc::new(mem.crash()),
            background: Background::Inline,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(crashed.get(b"a").unwrap(), Some(b"v".to_vec()));
}

/// `backlogged` tells an async caller when `append` would block on flushes.
#[test]
fn backlogged_while_flushes_cannot_keep_up() {
    let base = Options {
        memtable_bytes: 1 << 10,
        max_immutable_memtables: 1,
        ..Options::default()
    };
    let (engine, gate, _) = gated_with(Background::Threads, base);
    gate.with(|s| {
        s.permits = usize::MAX;
        s.no_tables = true;
    });
    assert!(!engine.backlogged());
    let deadline = Instant::now() + BOUND;
    let mut i = 0;
    while !engine.backlogged() {
        assert!(Instant::now() < deadline, "never backlogged");
        engine.put(format!("k{i}").as_bytes(), &[7u8; 200]).unwrap();
        i += 1;
    }
    gate.with(|s| s.no_tables = false);
    let deadline = Instant::now() + BOUND;
    while engine.backlogged() {
        assert!(
            Instant::now() < deadline,
            "the flush thread never caught up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    engine.close().unwrap();
}
