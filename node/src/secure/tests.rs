use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn transport(byte: u8) -> Transport {
    Transport::new(
        ClusterSecret::from_bytes(&[byte; 32]).unwrap(),
        Duration::from_secs(2),
    )
}

fn pipe() -> (BoxConn, BoxConn) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Box::new(a), Box::new(b))
}

/// Both ends of a connection that completed the handshake.
async fn connected() -> (SecureConn, SecureConn) {
    let (a, b) = pipe();
    let (t1, t2) = (transport(1), transport(1));
    let (client, server) = tokio::join!(t1.connect(a), t2.accept(b));
    (client.unwrap(), server.unwrap())
}

#[tokio::test]
async fn the_same_secret_connects_and_carries_bytes_both_ways() {
    let (mut client, mut server) = connected().await;
    // Larger than one Noise message, so it spans several.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let big = big.clone();
        tokio::spawn(async move {
            client.write_all(&big).await.unwrap();
            client.flush().await.unwrap();
            let mut echo = [0u8; 5];
            client.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"thank");
        })
    };
    let mut got = vec![0u8; big.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, big);
    server.write_all(b"thank").await.unwrap();
    server.flush().await.unwrap();
    writer.await.unwrap();
}

#[tokio::test]
async fn another_clusters_secret_is_refused_on_both_sides() {
    let (a, b) = pipe();
    let (t1, t2) = (transport(1), transport(2));
    let (client, server) = tokio::join!(t1.connect(a), t2.accept(b));
    let server = server.unwrap_err();
    assert_eq!(server.kind(), io::ErrorKind::PermissionDenied, "{server}");
    // The responder hung up without answering, so the initiator never
    // completes either.
    assert!(client.is_err());
}

#[tokio::test]
async fn a_silent_peer_times_out_the_handshake() {
    let (a, _keep_open) = pipe();
    let t = Transport::new(
        ClusterSecret::from_bytes(&[1; 32]).unwrap(),
        Duration::from_millis(50),
    );
    let err = t.accept(a).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn a_plaintext_or_oversized_first_message_is_refused() {
    // What an old, plaintext peer sends first: a tarpc frame's 4-byte length
    // (read here as an empty handshake message, which fails its tag).
    let (a, mut b) = pipe();
    b.write_all(&[0, 0, 1, 0, 0, 0, 0, 0]).await.unwrap();
    let err = transport(1).accept(a).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    // A declared length no handshake message has is refused before it is read.
    let (a, mut b) = pipe();
    b.write_all(&[0xff, 0xff]).await.unwrap();
    let err = transport(1).accept(a).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

/// A man in the middle flips one byte of the first transport message: the
/// reader gets an error, never the altered bytes.
#[tokio::test]
async fn one_flipped_byte_fails_the_read() {
    let (a, a_mid) = pipe();
    let (b_mid, b) = pipe();
    let relay = tokio::spawn(async move {
        let (mut from_a_r, mut from_a_w) = tokio::io::split(a_mid);
        let (mut to_b_r, mut to_b_w) = tokio::io::split(b_mid);
        // Handshake: pass the first message (2 + 48 bytes) each way intact.
        let mut hs = [0u8; 50];
        from_a_r.read_exact(&mut hs).await.unwrap();
        to_b_w.write_all(&hs).await.unwrap();
        to_b_r.read_exact(&mut hs).await.unwrap();
        from_a_w.write_all(&hs).await.unwrap();
        // Then the first transport message, with one byte flipped.
        let mut msg = [0u8; 2 + 5 + 16];
        from_a_r.read_exact(&mut msg).await.unwrap();
        msg[4] ^= 0x01;
        to_b_w.write_all(&msg).await.unwrap();
        to_b_w.flush().await.unwrap();
        (from_a_r, from_a_w, to_b_r, to_b_w)
    });
    let (t1, t2) = (transport(1), transport(1));
    let (client, server) = tokio::join!(t1.connect(a), t2.accept(b));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.write_all(b"hello").await.unwrap();
    client.flush().await.unwrap();
    let _keep = relay.await.unwrap();
    let mut got = [0u8; 5];
    let err = server.read_exact(&mut got).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn many_small_messages_in_one_read_come_out_in_order() {
    // Under load one socket read holds many small messages; each is
    // decrypted and dropped from the front of the buffer in turn.
    let (mut client, mut server) = connected().await;
    let messages: Vec<Vec<u8>> = (0..2_000u32)
        .map(|i| (0..(i % 97 + 1)).map(|j| (i + j) as u8).collect())
        .collect();
    let expected: Vec<u8> = messages.concat();
    let writer = tokio::spawn(async move {
        for m in &messages {
            client.write_all(m).await.unwrap();
        }
        client.flush().await.unwrap();
        client
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 61];
    while got.len() < expected.len() {
        let n = server.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed after {} of {} bytes",
            got.len(),
            expected.len()
        );
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, expected);
    drop(writer.await.unwrap());
}
