//! Shoal's storage engine against fjall, same machine, same run.
//!
//! `cargo run -p shoal-storage --release --example compare [N]` (or
//! `SHOAL_BENCH_N=...`; default 1,000,000). Random puts of 16-byte keys and 100-byte
//! values without sync, then N random gets (half present, half absent), then
//! `sync = always` writers (1 and 16 threads) for `SHOAL_BENCH_SYNC_SECS` seconds
//! each (default 2), then write amplification after a full compaction and the Bloom
//! filter's measured false-positive rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use rand::{Rng, RngCore, SeedableRng};
use shoal_storage::{Engine, Options, SyncMode};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;
/// A thread-safe put function under test.
type PutFn = Arc<dyn Fn(&[u8], &[u8]) + Send + Sync>;

fn keys(n: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut k = [0u8; 16];
            rng.fill_bytes(&mut k);
            k
        })
        .collect()
}

fn rate(ops: usize, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64()
}

/// Runs `threads` writers calling `put` for `secs`, returns ops/s.
fn timed_writers(threads: usize, secs: u64, put: PutFn) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, count, put) = (stop.clone(), count.clone(), put.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                let mut k = [0u8; 16];
                let v = [7u8; 100];
                while !stop.load(Ordering::Relaxed) {
                    rng.fill_bytes(&mut k);
                    put(&k, &v);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() -> AnyResult<()> {
    let n: usize = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SHOAL_BENCH_N").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = std::env::var("SHOAL_BENCH_SYNC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let base = tempfile::tempdir()?;
    let present = keys(n, 1);
    let absent = keys(n / 2, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut value = [0u8; 100];
    rng.fill_bytes(&mut value);
    // Same lookup sequence for both engines: even = present key, odd = absent key.
    let lookups: Vec<([u8; 16], bool)> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                (present[rng.gen_range(0..n)], true)
            } else {
                (absent[i / 2 % absent.len().max(1)], false)
            }
        })
        .collect();
    println!(
        "N = {n}, 16-byte keys, 100-byte values, data under {}",
        base.path().display()
    );

    // --- Shoal ---
    let opts = Options {
        sync: SyncMode::Never,
        ..Options::default()
    };
    let shoal = Engine::open(base.path().join("shoal"), opts.clone())?;
    let t = Instant::now();
    for k in &present {
        shoal.put(k, &value)?;
    }
    let shoal_put = rate(n, t.elapsed());
    let t = Instant::now();
    let mut hits = 0usize;
    for (k, want) in &lookups {
        let got = shoal.get(k)?;
        hits += usize::from(got.is_some());
        assert_eq!(got.is_some(), *want, "shoal lookup disagrees");
    }
    let shoal_get = rate(n, t.elapsed());
    let after_gets = shoal.stats();

    // --- fjall ---
    let db = Database::builder(base.path().join("fjall")).open()?;
    let ks = db.keyspace("bench", KeyspaceCreateOptions::default)?;
    let t = Instant::now();
    for k in &present {
        ks.insert(k.as_slice(), value.as_slice())?;
    }
    let fjall_put = rate(n, t.elapsed());
    let t = Instant::now();
    let mut fhits = 0usize;
    for (k, _) in &lookups {
        fhits += usize::from(ks.get(k.as_slice())?.is_some());
    }
    let fjall_get = rate(n, t.elapsed());
    assert_eq!(hits, fhits, "engines disagree on lookups");

    println!("random puts, no sync : shoal {shoal_put:>10.0} ops/s   fjall {fjall_put:>10.0} ops/s   ratio {:.2}x", shoal_put / fjall_put);
    println!("random gets (50% hit): shoal {shoal_get:>10.0} ops/s   fjall {fjall_get:>10.0} ops/s   ratio {:.2}x", shoal_get / fjall_get);
    println!(
        "bloom filter         : measured false-positive rate {:.4} over {} absent-key table probes, target {:.4} ({} bits/key), {} tables",
        after_gets.bloom_false_positive_rate(),
        after_gets.bloom_negatives + after_gets.bloom_false_positives,
        opts.expected_false_positive_rate(),
        opts.bloom_bits_per_key,
        after_gets.tables,
    );

    shoal.flush()?;
    shoal.compact()?;
    let s = shoal.stats();
    println!(
        "write amplification  : {:.2} after flush + full compaction (user {} MB; log {} MB, flushes {} MB, compactions {} MB; {} flushes, {} compactions)",
        s.write_amplification(),
        s.user_bytes_written >> 20,
        s.wal_bytes_written >> 20,
        s.flush_bytes_written >> 20,
        s.compaction_bytes_written >> 20,
        s.flushes,
        s.compactions,
    );
    shoal.close()?;
    drop(shoal);
    drop(ks);
    drop(db);

    // --- sync = always ---
    let mut always = Vec::new();
    for threads in [1usize, 16] {
        let e = Arc::new(Engine::open(
            base.path().join(format!("shoal-always-{threads}")),
            Options {
                sync: SyncMode::Always,
                ..Options::default()
            },
        )?);
        let put = {
            let e = e.clone();
            Arc::new(move |k: &[u8], v: &[u8]| {
                if let Err(err) = e.put(k, v) {
                    eprintln!("shoal put failed: {err}");
                }
            })
        };
        let s = timed_writers(threads, secs, put);
        e.close()?;
        let db = Database::builder(base.path().join(format!("fjall-always-{threads}"))).open()?;
        let ks = db.keyspace("bench", KeyspaceCreateOptions::default)?;
        let put = {
            let (db, ks) = (db.clone(), ks.clone());
            Arc::new(move |k: &[u8], v: &[u8]| {
                if let Err(err) = ks
                    .insert(k, v)
                    .and_then(|()| db.persist(PersistMode::SyncData))
                {
                    eprintln!("fjall put failed: {err}");
                }
            })
        };
        let f = timed_writers(threads, secs, put);
        println!("sync=always {threads:>2} writer(s): shoal {s:>10.0} ops/s   fjall {f:>10.0} ops/s   ratio {:.2}x", s / f);
        always.push(s);
    }
    println!(
        "group commit         : shoal 16 writers / 1 writer under sync=always = {:.1}x",
        always[1] / always[0]
    );
    Ok(())
}
