//! Incremental update cost per key and full rebuild time, on 1,000,000 keys.
//!
//! `cargo bench -p shoal-merkle --bench tree`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sha2::{Digest as _, Sha256};
use shoal_merkle::{MerkleTree, TreeShape};

const KEYS: usize = 1_000_000;

fn entries() -> Vec<(u64, Vec<u8>, [u8; 32])> {
    (0..KEYS)
        .map(|i| {
            let key = format!("key-{i:08}").into_bytes();
            let h: [u8; 32] = Sha256::digest(&key).into();
            let position = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
            (position, key, [1; 32])
        })
        .collect()
}

fn shapes() -> [(TreeShape, &'static str); 3] {
    [
        (TreeShape::default(), "default"),
        (TreeShape::new(20, 4).expect("valid"), "20-4"),
        (TreeShape::new(20, 8).expect("valid"), "20-256"),
    ]
}

fn bench(c: &mut Criterion) {
    let entries = entries();
    let mut group = c.benchmark_group("merkle");
    for (shape, name) in shapes() {
        // The update a write makes: replace one key's digest. Ancestors are only
        // marked dirty here; `update_then_flush` pays for recomputing them too.
        let mut tree = MerkleTree::rebuild(shape, entries.iter().map(|(p, k, d)| (*p, k, *d)));
        tree.flush();
        let mut i = 0usize;
        let mut version = 1u8;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("update/{name}"), |b| {
            b.iter(|| {
                let (position, key, _) = &entries[i];
                let old = [version; 32];
                let new = [version.wrapping_add(1); 32];
                tree.update(*position, key, Some(&old), Some(&new))
                    .expect("present");
                i += 1;
                if i == entries.len() {
                    i = 0;
                    version = version.wrapping_add(1);
                }
            })
        });
        // 1,000 scattered updates then a flush, twice (there and back): with
        // throughput 2,000 the per-element time is the amortized cost per key of
        // keeping every hash current.
        let batch = 1000usize;
        group.throughput(Throughput::Elements(2 * batch as u64));
        let mut tree = MerkleTree::rebuild(shape, entries.iter().map(|(p, k, d)| (*p, k, *d)));
        let mut start = 0usize;
        group.bench_function(format!("update_then_flush_1000/{name}"), |b| {
            b.iter(|| {
                for (position, key, _) in &entries[start..start + batch] {
                    tree.update(*position, key, Some(&[1; 32]), Some(&[2; 32]))
                        .expect("present");
                }
                tree.flush();
                for (position, key, _) in &entries[start..start + batch] {
                    tree.update(*position, key, Some(&[2; 32]), Some(&[1; 32]))
                        .expect("present");
                }
                tree.flush();
                start = (start + batch) % (entries.len() - batch);
            })
        });
        group.throughput(Throughput::Elements(KEYS as u64));
        group.bench_function(format!("rebuild_1m/{name}"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    black_box(MerkleTree::rebuild(
                        shape,
                        entries.iter().map(|(p, k, d)| (*p, k, *d)),
                    ))
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
