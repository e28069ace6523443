//! Tuning knobs, with defaults for a one-second gossip interval.

use std::time::Duration;

use crate::error::GossipError;
use crate::message::MIN_MESSAGE_BYTES;

/// How a silent member is judged down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detector {
    /// Down when the heartbeat has not risen for `down_after`: simple to reason
    /// about, and the period an operator configures is the period they get.
    Timeout {
        /// Silence after which the member shows as suspect.
        suspect_after: Duration,
        /// Silence after which it is down.
        down_after: Duration,
    },
    /// Cassandra's phi-accrual detector with exponentially distributed arrivals:
    /// `phi = silence / mean_interval * log10(e)`, where the mean is taken over
    /// the last `window` intervals between observed heartbeat rises (plus one
    /// bootstrap sample of `Config::interval`). It adapts to how quickly each
    /// member's heartbeat actually reaches this observer. `down_phi = 8` means
    /// down after about 18 mean intervals of silence.
    PhiAccrual {
        /// Phi at which the member shows as suspect.
        suspect_phi: f64,
        /// Phi at which it is down.
        down_phi: f64,
        /// Intervals remembered per member, 1 to 10,000.
        window: usize,
    },
}

/// Configuration of a [`Membership`](crate::Membership).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Peers contacted per [`tick`](crate::Membership::tick). Push-pull with a
    /// fan-out of 3 spreads news to 1,000 members in about 7 rounds.
    pub fanout: usize,
    /// How often the caller intends to call `tick`; only the phi detector's
    /// bootstrap uses it, but the defaults below are multiples of it.
    pub interval: Duration,
    /// Failure detector.
    pub detector: Detector,
    /// How long a member that left is kept (and gossiped) as a tombstone. It must
    /// be far longer than a round trip of gossip through the cluster, so that
    /// every member hears of the departure before anyone forgets it.
    pub tombstone_ttl: Duration,
    /// How long a forgotten member's last version is remembered after the entry
    /// is dropped, so that stale gossip from a lagging member cannot bring it
    /// back; only a higher version (it really restarted) is accepted. Keep it
    /// above `forget_down_after`, so that a member which missed the departure and
    /// still holds the entry as down forgets it on its own before the quarantine
    /// ends elsewhere. It costs one small entry per forgotten member.
    pub quarantine: Duration,
    /// How long a member may stay down before it is forgotten. Storage members
    /// stay on the ring while down (sloppy quorum covers them), so this is long.
    pub forget_down_after: Duration,
    /// Upper bound on any message's bincode (fixed-int) size; see the `message`
    /// module. The default fits a UDP datagram and a full digest of about 1,500
    /// members with short ids.
    pub max_message_bytes: usize,
    /// Events kept until [`drain_events`](crate::Membership::drain_events); past
    /// this the oldest are dropped and counted, so a caller that never drains
    /// cannot make memory grow.
    pub max_pending_events: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            fanout: 3,
            interval: Duration::from_secs(1),
            detector: Detector::Timeout {
                suspect_after: Duration::from_secs(5),
                down_after: Duration::from_secs(10),
            },
            tombstone_ttl: Duration::from_secs(60 * 60),
            quarantine: Duration::from_secs(48 * 60 * 60),
            forget_down_after: Duration::from_secs(24 * 60 * 60),
            max_message_bytes: 64_000,
            max_pending_events: 4_096,
        }
    }
}

impl Config {
    /// Refuses values the state machine cannot work with.
    pub fn validate(&self) -> Result<(), GossipError> {
        let bad = |field, reason| Err(GossipError::InvalidConfig { field, reason });
        if !(1..=64).contains(&self.fanout) {
            return bad("fanout", "must be between 1 and 64");
        }
        if self.interval.is_zero() {
            return bad("interval", "must be positive");
        }
        match self.detector {
            Detector::Timeout {
                suspect_after,
                down_after,
            } => {
                if down_after.is_zero() {
                    return bad("detector.down_after", "must be positive");
                }
                if suspect_after > down_after {
                    return bad("detector.suspect_after", "must not exceed down_after");
                }
            }
            Detector::PhiAccrual {
                suspect_phi,
                down_phi,
                window,
            } => {
                if !(down_phi.is_finite() && down_phi > 0.0) {
                    return bad("detector.down_phi", "must be a positive number");
                }
                if !(suspect_phi.is_finite() && suspect_phi > 0.0 && suspect_phi <= down_phi) {
                    return bad(
                        "detector.suspect_phi",
                        "must be positive and at most down_phi",
                    );
                }
                if !(1..=10_000).contains(&window) {
                    return bad("detector.window", "must be between 1 and 10000");
                }
            }
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return bad("max_message_bytes", "is too small to hold one full record");
        }
        if self.max_pending_events == 0 {
            return bad("max_pending_events", "must be positive");
        }
        Ok(())
    }
}
