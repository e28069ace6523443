//! Cost of the per-write operations the node runs: `update` on the
//! coordinator, `sync` between replicas, and encoding for storage.
//!
//! Run with `cargo bench -p shoal-vclock`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shoal_vclock::{Content, Context, SiblingSet};

/// A state where `actors` replicas wrote, with `siblings` concurrent values.
fn state(actors: usize, siblings: usize) -> SiblingSet {
    let mut s = SiblingSet::new();
    for i in 0..actors {
        s.update(
            &s.context(),
            &format!("node-{i}"),
            Content::Tombstone,
            i as u64,
        )
        .unwrap();
    }
    for i in 0..siblings {
        let value = Content::value(vec![b'x'; 100], "text/plain");
        s.update(
            &Context::empty(),
            &format!("node-{}", i % actors),
            value,
            1_000 + i as u64,
        )
        .unwrap();
    }
    s
}

fn benches(c: &mut Criterion) {
    let base = state(5, 3);
    let ctx = base.context();
    c.bench_function("update (5 actors, 3 siblings, full context)", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| {
                s.update(
                    &ctx,
                    "node-1",
                    Content::value(vec![b'y'; 100], "text/plain"),
                    9_999,
                )
                .unwrap();
                s
            },
            BatchSize::SmallInput,
        )
    });
    let mut other = base.clone();
    other
        .update(&Context::empty(), "node-2", Content::Tombstone, 10_000)
        .unwrap();
    c.bench_function("sync (5 actors, 3 vs 4 siblings)", |b| {
        b.iter(|| base.sync(&other))
    });
    c.bench_function("encode (5 actors, 3 siblings)", |b| {
        b.iter(|| base.encode())
    });
    let bytes = base.encode();
    c.bench_function("decode (5 actors, 3 siblings)", |b| {
        b.iter(|| SiblingSet::decode(&bytes).unwrap())
    });
    c.bench_function("digest (5 actors, 3 siblings)", |b| {
        b.iter(|| base.digest())
    });
}

criterion_group! {
    name = siblings;
    // Small, fast state machines: short runs are enough and keep CI quick.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = benches
}
criterion_main!(siblings);
