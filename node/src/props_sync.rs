//! The pull that spreads bucket props (see [`crate::buckets`]): once a
//! second, each member asks the next live storage node (round-robin over
//! the sorted ids, so no randomness and the same order in a simulation)
//! for its table, sending its own table's digest; an equal table costs one
//! small answer, a different one is merged (the greater version of each
//! bucket wins), so a change made anywhere reaches every member within a
//! few rounds.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::buckets::{PropsTable, VersionedProps};
use crate::membership::{lock, SharedMembership};
use crate::pool::Pool;

/// How often a member pulls.
pub const PULL_INTERVAL: Duration = Duration::from_secs(1);

/// What a member does with records pulled from a peer: a node stores them
/// durably ([`crate::store::Store::merge_props`]), a gateway keeps them in
/// its table.
pub type Apply = Arc<dyn Fn(Vec<(String, VersionedProps)>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Pulls every [`PULL_INTERVAL`] until `shutdown`.
pub async fn run(
    me: String,
    table: Arc<PropsTable>,
    apply: Apply,
    pool: Arc<Pool>,
    membership: SharedMembership,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut round = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(PULL_INTERVAL) => {}
        }
        let peers: Vec<(String, String)> = lock(&membership)
            .live_storage_members()
            .into_iter()
            .filter(|m| m.id.as_str() != me)
            .map(|m| (m.id.as_str().to_string(), m.address))
            .collect();
        if peers.is_empty() {
            continue;
        }
        let (peer, address) = &peers[round % peers.len()];
        round = round.wrapping_add(1);
        let digest = table.digest();
        let answer = pool
            .call(address, PULL_INTERVAL, |c, ctx| async move {
                c.bucket_props(ctx, digest).await
            })
            .await;
        match answer {
            Ok(Ok(Some(records))) => {
                tracing::debug!(%peer, records = records.len(), "bucket props pulled");
                apply(records).await;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "bucket props pull refused"),
            Err(e) => tracing::debug!(%peer, error = %e, "bucket props pull failed"),
        }
    }
}
