//! Many concurrent durable writers against one engine: wall time and CPU per write.
//!
//! `cargo run -p shoal-storage --release --example group_commit [WRITERS] [SECS] [PREALLOCATE]`
//! (defaults 50 writers, 3 s per case, `Options::log_preallocate_bytes`'s default;
//! 0 turns preallocation off, for an A/B in one run). Prints, for `SyncMode::Always` on a temp
//! directory: a plain `write + fdatasync` loop on one file as the reference (what
//! one fsync costs on this disk in this run), then the writers: threads calling the
//! blocking `Engine::put`, then tokio tasks on a 2-worker runtime calling
//! `Engine::append` and awaiting the `Commit` (how the node writes). CPU is user + system time of the whole process from
//! `/proc/self/stat` (in USER_HZ ticks, 10 ms; runs last seconds, so the tick is
//! well below the spread) divided by the writes: `perf stat -e instructions` is
//! not available on the machine the figures in BENCHMARKS.md come from.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_storage::{Engine, Options, SyncMode, WriteBatch};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// User + system CPU of this process so far, in microseconds.
fn cpu_us() -> AnyResult<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name is in parentheses and may hold spaces; fields count from
    // after its closing one (utime and stime are fields 14 and 15 of the file).
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> AnyResult<u64> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/self/stat")?
            .parse::<u64>()?)
    };
    // USER_HZ is 100 on every Linux architecture this runs on.
    Ok((ticks(11)? + ticks(12)?) * 10_000)
}

/// One case's result.
struct Measured {
    writes: u64,
    wall: Duration,
    cpu_us: u64,
}

impl Measured {
    fn print(&self, name: &str) {
        let w = self.writes.max(1) as f64;
        println!(
            "{name:<34}: {:>8.0} writes/s  {:>7.2} us wall/write  {:>6.1} us CPU/write  ({} writes)",
            w / self.wall.as_secs_f64(),
            self.wall.as_secs_f64() * 1e6 / w,
            self.cpu_us as f64 / w,
            self.writes
        );
    }
}

/// The reference: one thread appending 100 bytes and fdatasyncing, `secs` long.
fn fsync_loop(dir: &std::path::Path, secs: u64) -> AnyResult<Measured> {
    let mut f = std::fs::File::create(dir.join("fsync-reference"))?;
    let (start, cpu0) = (Instant::now(), cpu_us()?);
    let mut writes = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        f.write_all(&[7u8; 100])?;
        f.sync_data()?;
        writes += 1;
    }
    Ok(Measured {
        writes,
        wall: start.elapsed(),
        cpu_us: cpu_us()? - cpu0,
    })
}

/// Zero-filled bytes ahead of the commit log (third argument).
static PREALLOCATE: AtomicU64 = AtomicU64::new(u64::MAX);

fn open(dir: &std::path::Path) -> AnyResult<Arc<Engine>> {
    let mut opts = Options {
        sync: SyncMode::Always,
        ..Options::default()
    };
    let preallocate = PREALLOCATE.load(Ordering::Relaxed);
    if preallocate != u64::MAX {
        opts.log_preallocate_bytes = preallocate;
    }
    Ok(Arc::new(Engine::open(dir, opts)?))
}

/// `writers` threads each calling the blocking `Engine::put` for `secs`.
fn threads(dir: &std::path::Path, writers: usize, secs: u64) -> AnyResult<Measured> {
    let engine = open(dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (start, cpu0) = (Instant::now(), cpu_us()?);
    let hs: Vec<_> = (0..writers)
        .map(|t| {
            let (engine, stop, count) = (engine.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || -> shoal_storage::Result<()> {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("t{t:04}-{i:010}");
                    engine.put(key.as_bytes(), &[7u8; 100])?;
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().map_err(|_| "writer panicked")??;
    }
    let m = Measured {
        writes: count.load(Ordering::Relaxed),
        wall: start.elapsed(),
        cpu_us: cpu_us()? - cpu0,
    };
    engine.close()?;
    Ok(m)
}

/// `writers` tokio tasks on a 2-worker runtime, each appending and awaiting its
/// commit in a loop, for `secs`.
fn tasks(dir: &std::path::Path, writers: usize, secs: u64) -> AnyResult<Measured> {
    let engine = open(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (start, cpu0) = (Instant::now(), cpu_us()?);
    let m = rt.block_on(async {
        let hs: Vec<_> = (0..writers)
            .map(|t| {
                let (engine, stop, count) = (engine.clone(), stop.clone(), count.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut batch = WriteBatch::new();
                        batch.put(format!("t{t:04}-{i:010}"), vec![7u8; 100]);
                        engine.append(batch)?.await?;
                        count.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok::<_, shoal_storage::Error>(())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(Measured {
            writes: count.load(Ordering::Relaxed),
            wall: start.elapsed(),
            cpu_us: cpu_us()? - cpu0,
        })
    })?;
    let syncs = engine.stats().commit_syncs;
    println!(
        "  ({} fsyncs, {:.1} writes per fsync)",
        syncs,
        m.writes as f64 / syncs.max(1) as f64
    );
    engine.close()?;
    Ok(m)
}

fn main() -> AnyResult<()> {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let secs: u64 = args.next().map_or(Ok(3), |a| a.parse())?;
    if let Some(a) = args.next() {
        PREALLOCATE.store(a.parse()?, Ordering::Relaxed);
    }
    let root = tempfile::tempdir()?;
    let preallocate = match PREALLOCATE.load(Ordering::Relaxed) {
        u64::MAX => Options::default().log_preallocate_bytes,
        n => n,
    };
    println!("{writers} writers, {secs} s per case, sync=always, 16-byte keys, 100-byte values, log preallocated {preallocate} bytes at a time");
    fsync_loop(root.path(), secs)?.print("reference: write+fdatasync loop");
    threads(&root.path().join("threads"), writers, secs)?
        .print(&format!("{writers} threads, Engine::put"));
    let m = tasks(&root.path().join("tasks"), writers, secs)?;
    m.print(&format!("{writers} tokio tasks, append().await"));
    Ok(())
}
