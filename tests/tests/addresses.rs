//! Addresses (issue 25): a member that would announce an address no peer
//! can dial refuses to start and says which key to set.

use shoal_node::env::Env;
use shoal_tests::config::Fast;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undialable_advertised_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for advertise in ["0.0.0.0:7000", "127.0.0.1:0"] {
        let config = Fast::node("node-1", dir.path())
            .edit(|c| c.member.advertise = Some(advertise.into()))
            .build();
        let err = match shoal_node::node::start(config, Env::real()).await {
            Ok(node) => {
                node.shutdown().await;
                panic!("{advertise}: started")
            }
            Err(e) => e.to_string(),
        };
        assert!(err.contains("member.advertise"), "{advertise}: {err}");
    }
    // A host name is each peer's to resolve: it starts.
    let config = Fast::node("node-2", dir.path())
        .edit(|c| c.member.advertise = Some("localhost:7000".into()))
        .build();
    let node = shoal_node::node::start(config, Env::real())
        .await
        .expect("a host name is accepted");
    node.shutdown().await;
}
