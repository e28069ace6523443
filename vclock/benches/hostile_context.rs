//! Cost of a write carrying a hostile causal context: 60,000 distinct actors,
//! about half a megabyte, which any client can send (contexts are not
//! authenticated). Folding the context into the clock must stay linear, or
//! one such request pins a core for seconds.
//!
//! Run with `cargo bench -p shoal-vclock --bench hostile_context`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shoal_vclock::{Content, Context, SiblingSet};

const ACTORS: usize = 60_000;

/// The canonical encoding of a context naming `ACTORS` actors, every one at
/// counter 1. `parity` 0 and 1 give disjoint actor sets that interleave in
/// sort order, so folding one into a clock holding the other inserts between
/// every pair of existing entries.
fn hostile_context(parity: usize) -> Context {
    let mut bytes = vec![0x21, 0];
    put_varint(&mut bytes, ACTORS as u64);
    for i in 0..ACTORS {
        let actor = format!("{:06}", 2 * i + parity);
        put_varint(&mut bytes, actor.len() as u64);
        bytes.extend_from_slice(actor.as_bytes());
        bytes.push(1);
    }
    Context::decode(&bytes).expect("the hand-built context is canonical")
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An ordinary key: five replicas wrote it, three siblings are live.
fn ordinary() -> SiblingSet {
    let mut s = SiblingSet::new();
    for i in 0..5 {
        let ctx = s.context();
        s.update(&ctx, &format!("node-{i}"), Content::Tombstone, i)
            .unwrap();
    }
    for i in 0..3 {
        let value = Content::value(vec![b'x'; 100], "text/plain");
        s.update(&Context::empty(), &format!("node-{i}"), value, 100 + i)
            .unwrap();
    }
    s
}

fn benches(c: &mut Criterion) {
    let even = hostile_context(0);
    let odd = hostile_context(1);
    println!(
        "hostile context: {} actors, {} bytes encoded",
        even.entries().len(),
        even.encode().len()
    );
    let value = || Content::value(vec![b'y'; 100], "text/plain");

    let base = ordinary();
    c.bench_function("update (ordinary key, 60k-actor context)", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| {
                s.update(&even, "node-1", value(), 9_999).unwrap();
                s
            },
            BatchSize::LargeInput,
        )
    });

    // A replica that already took one hostile write (and has not pruned yet)
    // takes a second one whose actors fall between its entries.
    let mut big = ordinary();
    big.update(&even, "node-1", value(), 9_000).unwrap();
    c.bench_function(
        "update (60k-entry clock, disjoint 60k-actor context)",
        |b| {
            b.iter_batched(
                || big.clone(),
                |mut s| {
                    s.update(&odd, "node-2", value(), 9_999).unwrap();
                    s
                },
                BatchSize::LargeInput,
            )
        },
    );

    // What the node does right after such a write.
    c.bench_function("prune (60k-entry clock to 50)", |b| {
        b.iter_batched(
            || big.clone(),
            |mut s| {
                s.prune(50);
                s
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = hostile;
    // Each iteration handles a 60k-entry clock: few samples suffice, and the
    // quadratic variant this guards against takes seconds per iteration.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(hostile);
