//! `preference_list` for 100 members, including the key's SHA-256, in one
//! zone and spread over three (issue 25: the walk first looks for a member of
//! each zone). Reach (issue 2): <= 1 microsecond per call.

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_ring::{Member, Ring, RingConfig};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let ring = Ring::new(
        (1..=100).map(|i| Member::new(format!("node-{i}"), 1)),
        RingConfig::default(),
    )
    .expect("valid ring");
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("user:{i}").into_bytes())
        .collect();
    let mut i = 0usize;
    c.bench_function("preference_list/100 members/n=3 (with key hash)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ring.preference_list(black_box(&keys[i]), 3))
        })
    });
    let zoned = Ring::new(
        (1..=100).map(|i| Member::new(format!("node-{i}"), 1).in_zone(["a", "b", "c"][i % 3])),
        RingConfig::default(),
    )
    .expect("valid ring");
    c.bench_function(
        "preference_list/100 members in 3 zones/n=3 (with key hash)",
        |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(zoned.preference_list(black_box(&keys[i]), 3))
            })
        },
    );
    c.bench_function("key_position (SHA-256 prefix)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(shoal_ring::key_position(black_box(&keys[i])))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
