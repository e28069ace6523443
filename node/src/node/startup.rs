//! Start-up wiring, kept apart from the service it starts: the order in
//! which a node binds, opens its store, builds its components and spawns
//! its loops is what makes a failed start leave nothing behind, and reads
//! best as one sequence on its own.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::Role;
use tokio::sync::watch;

use super::{Inner, NodeError, NodeHandle, NodeService};
use crate::anti_entropy::AntiEntropy;
use crate::config::Config;
use crate::env::Env;
use crate::handoff::Handoff;
use crate::handover::Handover;
use crate::rpc::Replica;
use crate::store::Store;

/// Starts a storage node from `config`, reaching the outside world through
/// `env`. Binds `member.listen` (port 0 picks one), opens `member.data_dir`,
/// checks that `member.advertise` reaches this node ([`crate::advertise`]),
/// and joins through `member.seeds`.
pub async fn start(config: Config, env: Env) -> Result<NodeHandle, NodeError> {
    if config.member.id.is_empty() {
        return Err(NodeError::MissingId);
    }
    // The secret and the port first: a node that could not serve must not
    // have opened (and locked) its store.
    let (transport, listener, addr) = crate::member::bind(&config, &env).await?;
    let id = config.member.id.clone();
    let dir = config.member.data_dir.clone();
    let store = {
        let (id, config, clock) = (id.clone(), config.clone(), env.clock.clone());
        let (fs, background) = (env.fs.clone(), env.storage_background());
        let open_dir = dir.clone();
        env.spawn_blocking(move || Store::open_with(&open_dir, &id, &config, clock, fs, background))
            .await
            .expect("store open task panicked")
            .map_err(|source| NodeError::Store {
                path: dir.display().to_string(),
                source,
            })?
    };

    let store_err = |source| NodeError::Store {
        path: dir.display().to_string(),
        source,
    };
    if crate::handover::was_decommissioned(&store).map_err(store_err)? {
        return Err(NodeError::Decommissioned {
            path: dir.display().to_string(),
        });
    }
    let joining = crate::handover::join_pending(&config, &store).map_err(store_err)?;
    let member = crate::member::Member::new(
        &config,
        &env,
        transport,
        addr,
        crate::member::Spec {
            role: Role::Storage,
            // A joining node announces itself with the joining flag: gateways
            // write to it but do not read from it until it clears the flag.
            weight: if joining {
                config.member.weight | crate::membership::JOINING_FLAG
            } else {
                config.member.weight
            },
            incarnation: store.incarnation(),
            connect_timeout: connect_timeout(&config),
        },
    )?;
    let (membership, pool, uptime) = (
        member.membership.clone(),
        member.pool.clone(),
        member.uptime,
    );
    let advertise = member.advertise.clone();
    let store = Arc::new(store);
    let shutting_down = Arc::new(AtomicBool::new(false));
    let anti_entropy = Arc::new(AntiEntropy::new(
        &config,
        store.clone(),
        env.clone(),
        membership.clone(),
        pool.clone(),
    ));
    let handover = Arc::new(Handover::new(
        &config,
        crate::handover::Handles {
            store: store.clone(),
            env: env.clone(),
            membership: membership.clone(),
            pool: pool.clone(),
            uptime,
            advertise: advertise.clone(),
            shutting_down: shutting_down.clone(),
        },
    ));
    let handoff = Handoff::new(
        &config,
        store.clone(),
        env.clone(),
        membership.clone(),
        pool.clone(),
    );
    let inner = Arc::new(Inner {
        config: config.clone(),
        env,
        id: id.clone(),
        store,
        membership,
        uptime,
        shutting_down,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.rpc.max_in_flight)),
        anti_entropy: anti_entropy.clone(),
        handover: handover.clone(),
        pool: pool.clone(),
        metrics_addr: std::sync::OnceLock::new(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    if !config.metrics.listen.is_empty() {
        let sources = crate::observe::NodeSources {
            store: inner.store.clone(),
            membership: inner.membership.clone(),
            connections: member.connections.clone(),
            reach: member.reach.clone(),
            in_flight: inner.in_flight.clone(),
            max_in_flight: config.rpc.max_in_flight,
        };
        let render: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(move || crate::observe::node_metrics(sources.store.counters(), &sources));
        let (bound, task) = crate::observe::serve_metrics(
            &config.metrics.listen,
            config.metrics.allow_remote,
            render,
            shutdown_rx.clone(),
        )
        .await?;
        let _ = inner.metrics_addr.set(bound);
        tracing::info!(%bound, "metrics served at /metrics");
        tasks.push(task);
    }
    let service = NodeService(inner.clone());
    let answers = handover.clone();
    let counters = inner.store.counters().clone();
    let served = member
        .run(
            listener,
            shutdown_rx.clone(),
            move |transport, connection| {
                let service = service.clone();
                let counters = counters.clone();
                crate::serve::serve_connection(
                    answers.watch_answers(transport),
                    move |ctx, request| {
                        let histogram = rpc_name(&request);
                        let started = std::time::Instant::now();
                        let served = tarpc::server::Serve::serve(service.serve(), ctx, request);
                        // A combinator, not an `async move` block: such a
                        // block holds the moved-in future twice (before and
                        // during its await), doubling what every layer above
                        // copies.
                        futures::FutureExt::inspect(served, move |_| {
                            counters.rpc.get(histogram).observe(started.elapsed());
                        })
                    },
                    connection,
                )
            },
        )
        .await;
    match served {
        Ok(served) => tasks.extend(served),
        Err(e) => {
            // The advertised address is wrong: undo what start-up began
            // (the metrics listener, the open store) before saying so.
            let _ = shutdown.send(true);
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
            let store = inner.store.clone();
            if let Ok(Err(close)) = inner.env.spawn_blocking(move || store.close()).await {
                tracing::warn!(error = %close, "closing the store after a refused start failed");
            }
            return Err(e.into());
        }
    }
    if joining {
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {}
                result = handover.join() => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "join did not finish; restart the node to resume it");
                    }
                }
            }
        }));
    }
    if config.anti_entropy.enabled {
        tasks.push(tokio::spawn(anti_entropy.run(shutdown_rx.clone())));
    }
    {
        let store = inner.store.clone();
        let env = inner.env.clone();
        let apply: crate::props_sync::Apply = Arc::new(move |records| {
            let (store, env) = (store.clone(), env.clone());
            Box::pin(async move {
                match env
                    .spawn_blocking(move || store.merge_props(&records))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "pulled bucket props not stored"),
                    Err(e) => tracing::warn!(error = %e, "bucket props task failed"),
                }
            })
        });
        tasks.push(tokio::spawn(crate::props_sync::run(
            id.clone(),
            inner.store.props().clone(),
            apply,
            pool.clone(),
            inner.membership.clone(),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(
        crate::tombstones::TombstoneGc {
            id: id.clone(),
            n: config.replication.n,
            store: inner.store.clone(),
            pool: pool.clone(),
            membership: inner.membership.clone(),
            env: inner.env.clone(),
            config: config.tombstones,
        }
        .run(shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(crate::expiry::run(
        inner.store.clone(),
        inner.env.clone(),
        config.expiry,
        shutdown_rx.clone(),
    )));
    if config.handoff.enabled {
        tasks.push(tokio::spawn(handoff.run(shutdown_rx)));
    }
    tracing::info!(%id, %addr, %advertise, incarnation = inner.store.incarnation(), "node started");
    Ok(NodeHandle {
        inner,
        addr,
        advertise,
        shutdown,
        tasks,
    })
}

/// The label of a request's RPC: tarpc names it `Replica.<method>`.
fn rpc_name(request: &crate::rpc::ReplicaRequest) -> &'static str {
    use tarpc::RequestName;
    let name = request.name();
    let method = name.strip_prefix("Replica.").unwrap_or(name);
    crate::observe::RPC_NAMES
        .iter()
        .find(|n| **n == method)
        .copied()
        .unwrap_or("other")
}

/// How long dialing a peer, handshake included, may take: five gossip
/// rounds, and never under one second (rounds of at least 200 ms). A dial is
/// a TCP connect plus two 48-byte handshake messages, one round trip each,
/// so a reachable peer answers far sooner; the bound is what an
/// unreachable one costs each caller (a gossip round, a hint delivery, a
/// streaming attempt), so it stays within a few rounds, and the failure
/// detector (`gossip.failure_timeout_ms`) still decides whether the peer is
/// down.
fn connect_timeout(config: &Config) -> Duration {
    Duration::from_millis(config.gossip.interval_ms.max(200).saturating_mul(5))
}
