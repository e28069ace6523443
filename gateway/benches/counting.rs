//! What counting costs per request (issue 21): the gateway's per-request
//! count (a status counter, a latency histogram, the clock reads around
//! it) and a node's per-RPC histogram, against a request's plain work in the
//! same run (encoding and decoding a small sibling set, which every write
//! and read does several times). `cargo bench -p shoal-gateway --bench
//! counting`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use criterion::{criterion_group, criterion_main, Criterion};
use shoal_gateway::observe::GatewayCounters;
use shoal_node::metrics::{HistogramSet, LATENCY_BOUNDS};
use shoal_vclock::{Content, SiblingSet};

fn counting(c: &mut Criterion) {
    let counters = GatewayCounters::default();
    c.bench_function(
        "gateway: count one request (clock reads, counter, histogram)",
        |b| {
            b.iter(|| {
                let started = Instant::now();
                counters.request(
                    black_box("put"),
                    StatusCode::NO_CONTENT,
                    None,
                    started.elapsed(),
                );
            })
        },
    );
    let rpc = HistogramSet::new(&["coordinate_forward", "replicate", "read"], LATENCY_BOUNDS);
    c.bench_function("node: time one RPC (clock reads, histogram)", |b| {
        b.iter(|| {
            let started = Instant::now();
            rpc.get(black_box("replicate")).observe(started.elapsed());
        })
    });
    c.bench_function("histogram observe alone", |b| {
        let h = rpc.get("read");
        b.iter(|| h.observe(black_box(Duration::from_micros(350))))
    });
    // Reference: a request's own work, a small set encoded and decoded.
    let mut set = SiblingSet::new();
    for (i, actor) in ["node-1#3", "node-2#1", "node-3#2"].iter().enumerate() {
        let ctx = set.context();
        set.update(
            &ctx,
            actor,
            Content::value(vec![7u8; 100], "text/plain"),
            i as u64,
        )
        .unwrap();
    }
    c.bench_function("reference: encode + decode a 100-byte sibling set", |b| {
        b.iter(|| SiblingSet::decode(&black_box(&set).encode()).unwrap())
    });
}

criterion_group!(benches, counting);
criterion_main!(benches);
