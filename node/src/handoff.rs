//! Hinted handoff: a node holding hints for owners that were down hands
//! them over once gossip shows the owner alive again, deleting each only
//! after the owner acknowledged it; hints for a member that left go to the
//! key's current replicas instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::node::Inner;
use crate::rpc::ReplicateRequest;

/// Hints read per owner and delivery pass, so one pass holds bounded memory.
const HINT_BATCH: usize = 1_000;
/// Longest wait between delivery attempts to an owner that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Delivers held hints to their owners once gossip shows them alive, deleting
/// each only after the owner acknowledged it; backs off per owner on failure;
/// drops hints held longer than the TTL (anti-entropy repairs what they
/// carried).
pub(crate) async fn handoff_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(inner.config.handoff.retry_interval_ms);
    let ttl_ms = inner.config.handoff.hint_ttl_secs.saturating_mul(1000);
    let rpc_timeout = Duration::from_secs(2);
    // owner -> (next attempt, current backoff)
    let mut backoff: HashMap<String, (tokio::time::Instant, Duration)> = HashMap::new();
    // After a pass that moved a full batch for some owner, the next pass
    // starts at once: a backlog drains at delivery speed, not one batch per
    // interval.
    let mut backlog = false;
    loop {
        if !backlog {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(interval) => {}
            }
        } else if *shutdown.borrow() {
            return;
        }
        backlog = false;
        let store = inner.store.clone();
        let hints = match inner
            .env
            .spawn_blocking(move || store.hints_per_owner(HINT_BATCH))
            .await
        {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read hints");
                continue;
            }
            Err(_) => continue,
        };
        let now_ms = inner.env.clock.now_millis();
        let now = tokio::time::Instant::now();
        // Ordered, so that delivery order does not depend on a random hasher
        // (a deterministic simulation replays it exactly).
        let mut by_owner: std::collections::BTreeMap<String, Vec<crate::store::Hint>> =
            std::collections::BTreeMap::new();
        for hint in hints {
            // From when this node took the hint, on its own clock: the
            // siblings' write times are the sender's clock, which may be far
            // off (or lie), and would expire a hint at once or never.
            let age = now_ms.saturating_sub(hint.received_ms);
            if age > ttl_ms {
                tracing::warn!(owner = %hint.owner, key = ?String::from_utf8_lossy(&hint.key),
                    age_ms = age, "dropping hint past its TTL; anti-entropy repairs the owner");
                let store = inner.store.clone();
                let _ = inner
                    .env
                    .spawn_blocking(move || store.drop_hint(&hint.owner, &hint.key))
                    .await;
                continue;
            }
            by_owner.entry(hint.owner.clone()).or_default().push(hint);
        }
        for (owner, hints) in by_owner {
            if let Some((next, _)) = backoff.get(&owner) {
                if *next > now {
                    continue;
                }
            }
            let target = {
                let m = inner.membership.lock().expect("membership lock");
                match m.member(&owner) {
                    // The owner left the ring (decommissioned, or forgotten
                    // after its leave): it will never take these. Whoever
                    // owns the keys now does, as Riak hands a fallback's
                    // data to the partition's current owner.
                    None => HintDestination::Owners,
                    Some(i) if i.status == shoal_gossip::Status::Left => HintDestination::Owners,
                    Some(_) if !m.is_alive(&owner) => continue,
                    Some(i) => HintDestination::Owner(i.address),
                }
            };
            let (delivered, failed) = match target {
                HintDestination::Owner(address) => {
                    deliver(&inner, &owner, &address, hints, rpc_timeout).await
                }
                HintDestination::Owners => retarget(&inner, &owner, hints, rpc_timeout).await,
            };
            if failed {
                let delay = backoff
                    .get(&owner)
                    .map_or(interval, |(_, d)| (*d * 2).min(MAX_BACKOFF));
                backoff.insert(owner.clone(), (tokio::time::Instant::now() + delay, delay));
                tracing::debug!(%owner, delivered, retry_in = ?delay, "hint delivery failed");
            } else {
                backoff.remove(&owner);
                backlog |= delivered == HINT_BATCH;
                if delivered > 0 {
                    tracing::info!(%owner, delivered, "hints handed off");
                }
            }
        }
    }
}

/// Where a batch of hints goes.
enum HintDestination {
    /// To their owner, at this address.
    Owner(String),
    /// The owner left: to each key's current replicas.
    Owners,
}

/// Hands hints held for `owner`, a member that left, to every replica their
/// key has now (both rings while membership is in flux; this node merges
/// its own share locally). A hint is deleted once all of them took it;
/// otherwise it is retried. Returns how many were delivered and whether any
/// failed.
async fn retarget(
    inner: &Arc<Inner>,
    owner: &str,
    hints: Vec<crate::store::Hint>,
    timeout: Duration,
) -> (usize, bool) {
    let (view, addresses) = {
        let m = inner.membership.lock().expect("membership lock");
        let members = m.ring_members();
        let addresses = crate::membership::reachable(&members, |i| m.is_alive(i.id.as_str()));
        (crate::membership::ring_view(&members), addresses)
    };
    let n = inner.config.replication.n;
    let (mut delivered, mut failed) = (0, false);
    for hint in hints {
        let (current, pending) = view.write_replicas(&hint.key, n);
        let targets: Vec<String> = current
            .into_iter()
            .chain(pending)
            .map(str::to_string)
            .collect();
        let mut all = !targets.is_empty();
        for t in &targets {
            let ok = if *t == inner.id {
                let (store, key, siblings) =
                    (inner.store.clone(), hint.key.clone(), hint.siblings.clone());
                matches!(
                    inner
                        .env
                        .spawn_blocking(move || store.merge(&key, &siblings))
                        .await,
                    Ok(Ok(_))
                )
            } else {
                match addresses.get(t) {
                    Some(crate::membership::Reachable { address, up: true }) => {
                        let request = ReplicateRequest {
                            key: hint.key.clone(),
                            siblings: hint.siblings.clone(),
                            hint_for: None,
                        };
                        matches!(
                            inner
                                .pool
                                .call(address, timeout, |c, ctx| async move {
                                    c.replicate(ctx, request).await
                                })
                                .await,
                            Ok(Ok(()))
                        )
                    }
                    _ => false,
                }
            };
            all &= ok;
        }
        if !all {
            failed = true;
            continue;
        }
        forget_delivered(inner, owner, hint).await;
        delivered += 1;
    }
    if delivered > 0 {
        tracing::info!(%owner, delivered, "hints for a member that left handed to the keys' current replicas");
    }
    (delivered, failed)
}

/// Deletes a delivered hint, unless it changed meanwhile (a newer write for
/// the same owner arrived while it was in flight: that one still has to go).
async fn forget_delivered(inner: &Arc<Inner>, owner: &str, hint: crate::store::Hint) {
    let store = inner.store.clone();
    let owner = owner.to_string();
    let _ = inner
        .env
        .spawn_blocking(move || store.delete_hint_if_unchanged(&owner, &hint.key, &hint.siblings))
        .await;
}

/// Sends `hints` to `owner` with bounded concurrency; returns how many were
/// delivered and whether any failed.
async fn deliver(
    inner: &Arc<Inner>,
    owner: &str,
    address: &str,
    hints: Vec<crate::store::Hint>,
    timeout: Duration,
) -> (usize, bool) {
    use futures::StreamExt;
    let results: Vec<bool> = futures::stream::iter(hints)
        .map(|hint| async move {
            let request = ReplicateRequest {
                key: hint.key.clone(),
                siblings: hint.siblings.clone(),
                hint_for: None,
            };
            let sent = inner
                .pool
                .call(address, timeout, |c, ctx| async move {
                    c.replicate(ctx, request).await
                })
                .await;
            match sent {
                Ok(Ok(())) => {
                    forget_delivered(inner, owner, hint).await;
                    true
                }
                _ => false,
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let delivered = results.iter().filter(|ok| **ok).count();
    (delivered, delivered < results.len())
}
