//! The one bounded wait of the test kit: poll a condition until it holds
//! or a bound passes. Every test waits for convergence this way, so none
//! can hang and every timeout names what it was waiting for.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled: often enough that a measured
/// convergence time is not mostly the poll, rarely enough that polling an
/// HTTP endpoint does not load a 2-core machine.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `cond` until it is true or `bound` passes; returns how long it
/// took, or `None` on timeout.
pub async fn within<F, Fut>(bound: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= bound {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`within`], panicking with `what` on timeout: for a condition the test
/// cannot go on without.
pub async fn until<F, Fut>(bound: Duration, what: &str, cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    match within(bound, cond).await {
        Some(took) => took,
        None => panic!("timed out after {bound:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_true_and_gives_up_at_the_bound() {
        let mut polls = 0;
        let took = within(Duration::from_secs(5), || {
            polls += 1;
            std::future::ready(polls == 3)
        })
        .await;
        assert!(took.is_some_and(|t| t < Duration::from_secs(5)));
        assert_eq!(polls, 3);
        let start = Instant::now();
        assert_eq!(
            within(Duration::from_millis(60), || async { false }).await,
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn until_names_what_it_waited_for() {
        until(Duration::from_millis(30), "the impossible", || async {
            false
        })
        .await;
    }
}
