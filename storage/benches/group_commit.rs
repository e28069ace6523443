//! Time per durable write with many concurrent writers on one engine
//! (`SyncMode::Always`, temp directory): 50 threads on the blocking `put`, and 50
//! tokio tasks awaiting `append`'s `Commit`. CPU per write, which this cannot
//! show, is printed by `cargo run -p shoal-storage --release --example
//! group_commit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_storage::{Engine, Options, SyncMode, WriteBatch};

const WRITERS: u64 = 50;

fn open(dir: &std::path::Path) -> Arc<Engine> {
    let opts = Options {
        sync: SyncMode::Always,
        ..Options::default()
    };
    Arc::new(Engine::open(dir, opts).expect("open"))
}

fn bench(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("group_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(5));

    let engine = open(&root.path().join("threads"));
    g.bench_function("50 threads, put (per write)", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(WRITERS);
            let start = Instant::now();
            let hs: Vec<_> = (0..WRITERS)
                .map(|t| {
                    let engine = engine.clone();
                    std::thread::spawn(move || {
                        for i in 0..per {
                            let key = format!("t{t:04}-{i:010}");
                            engine.put(key.as_bytes(), &[7u8; 100]).expect("put");
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("writer");
            }
            start
                .elapsed()
                .mul_f64(iters as f64 / (per * WRITERS) as f64)
        })
    });
    engine.close().expect("close");

    let engine = open(&root.path().join("tasks"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    g.bench_function("50 tokio tasks, append().await (per write)", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(WRITERS);
            let start = Instant::now();
            rt.block_on(async {
                let hs: Vec<_> = (0..WRITERS)
                    .map(|t| {
                        let engine = engine.clone();
                        tokio::spawn(async move {
                            for i in 0..per {
                                let mut batch = WriteBatch::new();
                                batch.put(format!("t{t:04}-{i:010}"), vec![7u8; 100]);
                                engine.append(batch).expect("append").await.expect("commit");
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.expect("task");
                }
            });
            start
                .elapsed()
                .mul_f64(iters as f64 / (per * WRITERS) as f64)
        })
    });
    engine.close().expect("close");
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
