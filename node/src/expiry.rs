//! The expiry purge loop: when the store knows of values expired for longer
//! than `expiry.max_skew_ms`, it compacts, and the compaction filter shrinks
//! each expired value to its remains (see `Store::purge_expired`).
//!
//! Purging rides on compaction (as Cassandra's does) rather than on a scan
//! of its own, so it reads the data once and writes it once; a full
//! compaction is forced at most every `expiry.min_compact_interval_ms`, and
//! only when something is due.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ExpiryConfig;
use crate::env::Env;
use crate::store::Store;

/// Checks every `check_interval_ms` until `shutdown`.
pub(crate) async fn run(
    store: Arc<Store>,
    env: Env,
    config: ExpiryConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(config.check_interval_ms);
    let spacing = Duration::from_millis(config.min_compact_interval_ms);
    let mut last: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        if last.is_some_and(|t| t.elapsed() < spacing) {
            continue;
        }
        let due = store
            .expiry_due()
            .is_some_and(|at| env.clock.now_millis() >= at);
        if !due {
            continue;
        }
        last = Some(Instant::now());
        let s = store.clone();
        let before = store
            .counters()
            .expired_purged
            .load(std::sync::atomic::Ordering::Relaxed);
        match env.spawn_blocking(move || s.purge_expired()).await {
            Ok(Ok(true)) => {
                let purged = store
                    .counters()
                    .expired_purged
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .saturating_sub(before);
                tracing::info!(keys = purged, "expired values purged by compaction");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "expiry purge failed; retried later"),
            Err(e) => tracing::warn!(error = %e, "expiry purge task failed"),
        }
    }
}
