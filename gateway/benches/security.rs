//! What client security costs per request: the token check, sealing and
//! opening a context, and TLS against plain bytes for one small request and
//! its answer. `cargo bench -p shoal-gateway --bench security`.
//!
//! The reference in the same run is a request's plain work that all of this
//! sits beside: percent-decoding a key and encoding the context bytes.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::http::{HeaderValue, Method};
use criterion::{criterion_group, criterion_main, Criterion};
use sha2::{Digest, Sha256};
use shoal_gateway::auth::{need_for, Auth};
use shoal_gateway::seal::{ContextSeal, DEFAULT_BUCKET};
use shoal_node::config::SecurityConfig;
use shoal_node::secure::ClusterSecret;
use shoal_vclock::{Content, Context, SiblingSet};

fn context() -> Context {
    let mut s = SiblingSet::new();
    for (i, actor) in ["node-1#3", "node-2#1", "node-3#2"].iter().enumerate() {
        let ctx = s.context();
        s.update(&ctx, actor, Content::value("v", "text/plain"), i as u64)
            .unwrap();
    }
    s.context()
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..10 {
        let hash: String = Sha256::digest(format!("token-{i}").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        text.push_str(&format!(
            "[[token]]\nname = \"t{i}\"\nsha256 = \"{hash}\"\npermissions = [\"read\", \"write\"]\n"
        ));
    }
    let path = dir.path().join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    let config = SecurityConfig {
        tokens_file: Some(path),
        ..SecurityConfig::default()
    };
    let auth = Auth::load(&config, "127.0.0.1:8080".parse().unwrap()).unwrap();
    let header = HeaderValue::from_static("Bearer token-7");
    c.bench_function("token check, 10 tokens", |b| {
        b.iter(|| {
            let need = need_for(&Method::PUT, "/v1/kv/user:42");
            auth.check(Some(&header), need).unwrap()
        })
    });

    let seal = ContextSeal::new(&ClusterSecret::from_bytes(&[7; 32]).unwrap(), 4096);
    let ctx = context();
    let token = seal.seal(DEFAULT_BUCKET, b"user:42", &ctx);
    c.bench_function("context seal (3 actors)", |b| {
        b.iter(|| seal.seal(DEFAULT_BUCKET, b"user:42", &ctx))
    });
    c.bench_function("context open (3 actors)", |b| {
        b.iter(|| {
            seal.open(DEFAULT_BUCKET, b"user:42", Some(token.as_bytes()))
                .unwrap()
        })
    });
    c.bench_function("reference: key decode + context encode", |b| {
        b.iter(|| {
            let k = shoal_gateway::request::decode_key("user%3A42").unwrap();
            (k, ctx.encode())
        })
    });
}

/// An in-memory TLS 1.3 session: handshake, then one 200-byte request and a
/// 300-byte answer each way, against copying the same bytes.
fn tls(c: &mut Criterion) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
            )
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connect = || {
        let mut client =
            rustls::ClientConnection::new(client_config.clone(), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(server_config.clone()).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            pump(&mut client, &mut server);
        }
        (client, server)
    };
    c.bench_function("TLS handshake (both ends)", |b| b.iter(connect));
    let (mut client, mut server) = connect();
    let request = vec![b'q'; 200];
    let answer = vec![b'a'; 300];
    let mut buf = vec![0u8; 1024];
    c.bench_function("TLS: 200 B request + 300 B answer", |b| {
        b.iter(|| {
            client.writer().write_all(&request).unwrap();
            pump(&mut client, &mut server);
            let n = server.reader().read(&mut buf).unwrap();
            assert_eq!(n, 200);
            server.writer().write_all(&answer).unwrap();
            pump(&mut client, &mut server);
            let n = client.reader().read(&mut buf).unwrap();
            assert_eq!(n, 300);
        })
    });
    c.bench_function("plain: 200 B request + 300 B answer (copies)", |b| {
        b.iter(|| {
            let mut wire = Vec::with_capacity(512);
            wire.extend_from_slice(&request);
            buf[..200].copy_from_slice(&wire[..200]);
            wire.clear();
            wire.extend_from_slice(&answer);
            buf[..300].copy_from_slice(&wire[..300]);
            std::hint::black_box(&buf);
        })
    });
}

/// Moves every pending TLS record from each side to the other.
fn pump(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    if !wire.is_empty() {
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
    }
    wire.clear();
    while server.wants_write() {
        server.write_tls(&mut wire).unwrap();
    }
    if !wire.is_empty() {
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
}

criterion_group!(benches, tokens, tls);
criterion_main!(benches);
