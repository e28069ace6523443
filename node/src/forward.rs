//! The coordinator's half of a forwarded write: after minting the version,
//! send it to the other targets of the router's plan and count their
//! acknowledgements with its own, so the router makes one call per write.
//!
//! The decisions (spares with hints, when the verdict is known) are
//! `shoal_coordinator::WriteOp::forwarded`'s; this module performs its
//! actions through the node's connection pool. The version is sent to the
//! replicas while the coordinator's own commit is still in flight, so the
//! fsyncs overlap; the commit is one more reply to the op.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_coordinator::{Forwarding, QuorumFailure, Target, WriteAction, WriteOp};
use shoal_vclock::SiblingSet;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::pool::Pool;
use crate::rpc::{ForwardRequest, QuorumCounts, RemoteError, ReplicateRequest};

/// What remains of a forwarded write after the coordinator minted it.
pub(crate) struct Plan {
    /// This node's slot (its id, or the owner it stands in for).
    pub me: Target,
    /// The router's plan.
    pub forwarding: Forwarding,
    /// RPC addresses of the replicas and spares.
    pub addresses: HashMap<String, String>,
    /// How long until the verdict is due.
    pub budget: Duration,
}

impl Plan {
    /// The plan in `request`, checked: a malformed one is the router's bug,
    /// answered with a typed error instead of a guess.
    pub fn from_request(me: &str, request: &ForwardRequest) -> Result<Self, RemoteError> {
        let bad = |message: String| Err(RemoteError::BadRequest { message });
        let count = request.replicas.len() + request.spares.len();
        if count > crate::rpc::MAX_FORWARD_TARGETS {
            return bad(format!(
                "a forwarded write names {count} targets and spares (at most {})",
                crate::rpc::MAX_FORWARD_TARGETS
            ));
        }
        if request.needed == 0 || request.needed > request.owners {
            return bad(format!(
                "a forwarded write needs {} of {} owners",
                request.needed, request.owners
            ));
        }
        if request.budget_ms == 0 || request.budget_ms > crate::rpc::MAX_FORWARD_BUDGET_MS {
            return bad(format!(
                "forward budget {} ms is outside 1..={} ms",
                request.budget_ms,
                crate::rpc::MAX_FORWARD_BUDGET_MS
            ));
        }
        let everyone = request.replicas.iter().chain(&request.spares);
        let mut addresses = HashMap::new();
        for t in everyone {
            if t.node == me
                || addresses
                    .insert(t.node.clone(), t.address.clone())
                    .is_some()
            {
                return bad(format!(
                    "a forwarded write names {} twice (or names its coordinator)",
                    t.node
                ));
            }
        }
        let target = |t: &crate::rpc::ForwardTarget| Target {
            node: t.node.clone(),
            hint_for: t.hint_for.clone(),
        };
        Ok(Plan {
            me: Target {
                node: me.to_string(),
                hint_for: request.write.hint_for.clone(),
            },
            forwarding: Forwarding {
                replicas: request.replicas.iter().map(target).collect(),
                spares: request.spares.iter().map(|t| t.node.clone()).collect(),
                needed: request.needed as usize,
                owners: request.owners as usize,
                failed: request.failed.clone(),
            },
            addresses,
            budget: Duration::from_millis(request.budget_ms),
        })
    }
}

/// Replicates `set` as `plan` says while `own` (this node's commit)
/// completes; returns the verdict once it is known. Replication to targets
/// still outstanding then goes on in the background until `plan.budget`
/// runs out.
pub(crate) async fn replicate(
    pool: Arc<Pool>,
    plan: Plan,
    key: Vec<u8>,
    set: SiblingSet,
    own: impl Future<Output = Result<(), String>> + Send + 'static,
) -> Result<(), QuorumCounts> {
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(drive(pool, plan, key, set, own, done_tx));
    match done_rx.await {
        Ok(verdict) => verdict.map_err(|f| counts(&f)),
        // The driver always answers before it ends; this is a panic in it.
        Err(_) => Err(QuorumCounts {
            succeeded: 0,
            needed: 0,
            failed: 0,
            unknown: 0,
            total: 0,
        }),
    }
}

async fn drive(
    pool: Arc<Pool>,
    plan: Plan,
    key: Vec<u8>,
    set: SiblingSet,
    own: impl Future<Output = Result<(), String>> + Send + 'static,
    done: oneshot::Sender<Result<(), QuorumFailure>>,
) {
    let mut done = Some(done);
    let deadline = Instant::now() + plan.budget;
    let me = plan.me.node.clone();
    let mut op = WriteOp::forwarded(plan.me, plan.forwarding);
    let mut actions: VecDeque<WriteAction> = op.start_forwarded().into();
    let mut own = Box::pin(own);
    let mut own_pending = true;
    let mut sends = FuturesUnordered::new();
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    let (pool, addresses, key, set) = (&pool, &plan.addresses, &key, &set);
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                WriteAction::Replicate { target } => {
                    let request = ReplicateRequest {
                        key: key.clone(),
                        siblings: set.clone(),
                        hint_for: target.hint_for,
                    };
                    let node = target.node;
                    let address = addresses.get(&node).cloned();
                    sends.push(async move {
                        let result = match address {
                            None => Err("address unknown".to_string()),
                            Some(address) => {
                                let timeout = deadline.saturating_duration_since(Instant::now());
                                match pool
                                    .call(&address, timeout, |c, ctx| async move {
                                        c.replicate(ctx, request).await
                                    })
                                    .await
                                {
                                    Ok(Ok(())) => Ok(()),
                                    Ok(Err(e)) => Err(e.to_string()),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                        };
                        (node, result)
                    });
                }
                WriteAction::Verdict(verdict) => {
                    if let Some(tx) = done.take() {
                        let _ = tx.send(verdict);
                    }
                }
                // A forwarded op never asks for another coordinator.
                WriteAction::Coordinate { .. } => {}
            }
        }
        if op.finished() {
            return;
        }
        tokio::select! {
            biased;
            result = &mut own, if own_pending => {
                own_pending = false;
                actions.extend(op.coordinated(&me, result, Duration::ZERO));
            }
            Some((node, result)) = sends.next(), if !sends.is_empty() => {
                if let Err(cause) = &result {
                    tracing::debug!(%node, %cause, "forwarded replication failed");
                }
                actions.extend(op.replicated(&node, result));
            }
            _ = &mut expiry => actions.extend(op.expire()),
        }
    }
}

fn counts(f: &QuorumFailure) -> QuorumCounts {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    QuorumCounts {
        succeeded: n(f.succeeded),
        needed: n(f.needed),
        failed: n(f.failed),
        unknown: n(f.unknown),
        total: n(f.total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{CoordinateRequest, ForwardTarget};
    use shoal_vclock::{Content, Context};

    fn request(replicas: &[&str], needed: u32, budget_ms: u64) -> ForwardRequest {
        ForwardRequest {
            write: CoordinateRequest {
                key: b"k".to_vec(),
                context: Context::empty(),
                content: Content::value(b"v".to_vec(), "text/plain"),
                hint_for: None,
                supersede: false,
            },
            replicas: replicas
                .iter()
                .map(|n| ForwardTarget {
                    node: n.to_string(),
                    address: format!("{n}:1"),
                    hint_for: None,
                })
                .collect(),
            spares: Vec::new(),
            needed,
            owners: 3,
            failed: Vec::new(),
            budget_ms,
        }
    }

    #[test]
    fn malformed_plans_are_refused() {
        assert!(Plan::from_request("a", &request(&["b", "c"], 2, 500)).is_ok());
        for (r, why) in [
            (request(&["b", "c"], 0, 500), "needs nothing"),
            (request(&["b", "c"], 4, 500), "needs more than the owners"),
            (request(&["b", "c"], 2, 0), "no budget"),
            (request(&["b", "c"], 2, 3_600_000), "an hour"),
            (request(&["b", "b"], 2, 500), "a target twice"),
            (request(&["a", "c"], 2, 500), "itself"),
        ] {
            assert!(
                matches!(
                    Plan::from_request("a", &r),
                    Err(RemoteError::BadRequest { .. })
                ),
                "{why}"
            );
        }
        let many: Vec<String> = (0..65).map(|i| format!("n{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Plan::from_request("a", &request(&many, 2, 500)).is_err());
    }
}
