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
    /// Largest ring weight a storage member may gossip (gateways may also gossip
    /// 0, since they own no ranges). A record outside `1..=max_weight` is
    /// refused: weight 0 makes every ring builder fail, and one huge weight lets
    /// a single member coordinate nearly every key. Default 100, a hundredfold
    /// capacity spread; a caller allowing more (`shoal_ring::MAX_WEIGHT` is
    /// 1,000) must raise it on every member.
    pub max_weight: u32,
    /// Bits of the gossiped weight that carry flags, not capacity; they are
    /// cleared before the `max_weight` check (the node keeps its joining flag in
    /// the high bit). Default 0: the weight is all capacity. Must not overlap
    /// `max_weight`.
    pub weight_flags: u32,
    /// Most members (the local one and tombstones included) kept at once;
    /// records of unknown members past it are refused, so a flood of invented
    /// ids cannot grow memory or the digest without bound. It also caps the set
    /// used to report each refusal once. Default 1,024.
    pub max_members: usize,
    /// Most unknown members admitted (or asked for) per message; the rest are
    /// left for later rounds, where gossip offers them again. A joiner then
    /// learns a large cluster over a few rounds, while one message cannot fill
    /// the whole `max_members`. Default 64.
    pub max_new_members_per_message: usize,
    /// Most Ack exchanges awaiting their Ack2 at once; past it the oldest is
    /// dropped (its Ack2 will be refused and the records asked for again next
    /// round). An Ack2 is merged only as the answer to an Ack this member sent,
    /// so records nobody asked for cannot be pushed in. Default 256, far above
    /// the few Syns a member receives per interval.
    pub max_pending_acks: usize,
    /// How long an Ack waits for its Ack2, on the caller's clock; a later Ack2
    /// is refused. Default 10 s: many round trips, and well below the time in
    /// which versions move far.
    pub pending_ack_ttl: Duration,
    /// Largest rise of a member's incarnation over the one known here (over 0
    /// for a member not known at all) accepted at once; a further rise within an
    /// `interval` of the last one is left for a later round. Honest members only restart
    /// (node: a counter plus one; gateways: wall-clock milliseconds, 2^42 ms is
    /// the year 2109) or jump past a forged record of themselves, so a record
    /// beyond this is a lie, and refusing it keeps every accepted incarnation
    /// far from `u64::MAX`, where its owner could no longer outrank it.
    /// Default 2^42.
    pub max_incarnation_jump: u64,
    /// A known member's heartbeat may be at most the one last accepted plus
    /// `heartbeat_slack` per `interval` elapsed since (rounded up) plus
    /// `max_heartbeat_jump`. An honest member adds one per tick; the slack
    /// covers callers ticking early, clock-rate drift and local changes. Default 4.
    pub heartbeat_slack: u64,
    /// Constant part of the heartbeat bound (see `heartbeat_slack`): room for
    /// gossip delay and for a member that jumped past a forged record of
    /// itself. Default 1,000 (about 17 minutes of ticks).
    pub max_heartbeat_jump: u64,
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
            max_weight: 100,
            weight_flags: 0,
            max_members: 1_024,
            max_new_members_per_message: 64,
            max_pending_acks: 256,
            pending_ack_ttl: Duration::from_secs(10),
            max_incarnation_jump: 1 << 42,
            heartbeat_slack: 4,
            max_heartbeat_jump: 1_000,
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
        if self.max_weight == 0 {
            return bad("max_weight", "must be positive");
        }
        if self.max_weight & self.weight_flags != 0 {
            return bad("weight_flags", "must not overlap max_weight");
        }
        if self.max_members < 2 {
            return bad("max_members", "must leave room for another member");
        }
        if self.max_new_members_per_message == 0 {
            return bad("max_new_members_per_message", "must be positive");
        }
        if self.max_pending_acks == 0 {
            return bad("max_pending_acks", "must be positive");
        }
        if self.pending_ack_ttl.is_zero() {
            return bad("pending_ack_ttl", "must be positive");
        }
        if self.max_incarnation_jump == 0 || self.max_incarnation_jump > u64::MAX / 4 {
            return bad("max_incarnation_jump", "must be between 1 and 2^62");
        }
        if self.heartbeat_slack == 0 || self.heartbeat_slack > 1 << 20 {
            return bad("heartbeat_slack", "must be between 1 and 2^20");
        }
        if !(2..=1 << 40).contains(&self.max_heartbeat_jump) {
            return bad("max_heartbeat_jump", "must be between 2 and 2^40");
        }
        Ok(())
    }
}
