//! The secure transport's costs: one handshake (both ends, in one thread),
//! and one small message each way over an established connection, against
//! the same exchange over the bare in-memory pipe (the reference, measured
//! in the same run). `cargo bench -p shoal-node --bench transport`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_node::config::{Config, SecretText};
use shoal_node::env::BoxConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// About one replicate request or answer: key, clock and a 100-byte value.
const MESSAGE: usize = 200;

fn transport() -> shoal_node::secure::Transport {
    let mut c = Config::default();
    c.security.cluster_secret = Some(SecretText("ab".repeat(32)));
    c.transport().expect("valid secret")
}

fn pipe() -> (BoxConn, BoxConn) {
    let (a, b) = tokio::io::duplex(1 << 16);
    (Box::new(a), Box::new(b))
}

async fn round_trip(a: &mut BoxConn, b: &mut BoxConn, buf: &mut [u8]) {
    a.write_all(&buf[..MESSAGE]).await.unwrap();
    a.flush().await.unwrap();
    b.read_exact(&mut buf[..MESSAGE]).await.unwrap();
    b.write_all(&buf[..MESSAGE]).await.unwrap();
    b.flush().await.unwrap();
    a.read_exact(&mut buf[..MESSAGE]).await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let t = transport();
    let mut group = c.benchmark_group("transport");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("handshake (NNpsk0, both ends)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (x, y) = pipe();
                let (i, r) = tokio::join!(t.connect(x), t.accept(y));
                black_box((i.unwrap(), r.unwrap()))
            })
        })
    });
    let mut buf = vec![7u8; MESSAGE];
    let (mut a, mut b) = pipe();
    group.bench_function("200-byte round trip, plain pipe (reference)", |bench| {
        bench.iter(|| rt.block_on(round_trip(&mut a, &mut b, &mut buf)))
    });
    let (x, y) = pipe();
    let (i, r) = rt.block_on(async { tokio::join!(t.connect(x), t.accept(y)) });
    let (mut a, mut b): (BoxConn, BoxConn) = (Box::new(i.unwrap()), Box::new(r.unwrap()));
    group.bench_function("200-byte round trip, secure", |bench| {
        bench.iter(|| rt.block_on(round_trip(&mut a, &mut b, &mut buf)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
