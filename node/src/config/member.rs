//! The `[member]` section and its checks, kept apart from the other
//! sections: a member's identity (id, listen and advertised addresses, zone,
//! weight) is what gossip and the ring trust about it, and its rules are
//! easier to keep right read together than spread through one long check.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::bad;
use super::{Config, ConfigError};

/// Identity of this process in gossip and on the ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemberConfig {
    /// Unique, stable id; tokens derive from it, so renaming moves data.
    pub id: String,
    /// Where the tarpc server listens (`host:port`; port 0 picks one).
    pub listen: String,
    /// The address others should dial; defaults to the bound listen address.
    pub advertise: Option<String>,
    /// Addresses to join through (any live member; may include this one).
    pub seeds: Vec<String>,
    /// Relative capacity on the ring (storage nodes only).
    pub weight: u32,
    /// Failure domain (rack, availability zone): with at least N zones among
    /// the storage members, the N owners of every key lie in N distinct
    /// zones; with fewer, in all of them. Letters, digits, `-`, `_`, `.`; at
    /// most 64 bytes. Every member in one zone (the default) places keys as
    /// without zones.
    pub zone: String,
    /// Where a node keeps its data (storage nodes only).
    pub data_dir: PathBuf,
    /// Whether this node joins a running cluster: it announces itself as
    /// joining, receives the ranges it gains from their current replicas
    /// (resumably, across restarts), and only then takes its share of reads.
    /// Leave it `false` for the nodes that bootstrap a cluster together, and
    /// for a node restarting (even with a wiped disk: anti-entropy refills it).
    pub join: bool,
    /// What start-up does when the advertised address does not reach this
    /// member (see [`AdvertiseCheck`]).
    pub advertise_check: AdvertiseCheck,
    /// How long start-up keeps dialing the advertised address before it
    /// concludes nothing answers there: a name still being published (a
    /// Kubernetes headless service's record) gets this long to appear.
    pub advertise_check_ms: u64,
}

/// `member.advertise_check`: whether a member refuses to start when dialing
/// its own advertised address, over the cluster's authenticated RPC, does
/// not reach itself.
///
/// Refusing is the default because a wrong address (a typo, another host's
/// address, a port mapped to another member) otherwise shows only later and
/// elsewhere, as peers that cannot reach a member gossip says is alive.
/// `warn` is for hosts that cannot dial themselves at the address their
/// peers use (a NAT without hairpinning): the check still runs, in the
/// background, and reports through the log and metrics without stopping
/// anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvertiseCheck {
    /// Refuse to start when the address reaches nothing (after
    /// `member.advertise_check_ms` of retries) or reaches another member.
    #[default]
    Refuse,
    /// Log an error and report it in metrics, but serve.
    Warn,
    /// Do not dial.
    Off,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            listen: "127.0.0.1:7001".into(),
            advertise: None,
            seeds: Vec::new(),
            weight: 1,
            zone: shoal_ring::DEFAULT_ZONE.to_string(),
            data_dir: PathBuf::from("data"),
            join: false,
            advertise_check: AdvertiseCheck::Refuse,
            advertise_check_ms: 15_000,
        }
    }
}

impl Config {
    /// The `[member]` checks of [`Config::validate`], in its order.
    pub(super) fn check_member(&self) -> Result<(), ConfigError> {
        if self.member.weight == 0 || self.member.weight > self.gossip.max_weight {
            return bad(
                "member.weight",
                format!(
                    "{} is not in 1..={} (gossip.max_weight)",
                    self.member.weight, self.gossip.max_weight
                ),
            );
        }
        let zone = &self.member.zone;
        if zone.is_empty()
            || zone.len() > shoal_gossip::MAX_ZONE_LEN
            || !zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad(
                "member.zone",
                format!(
                    "{zone:?} is not 1..={} letters, digits, '-', '_' or '.'",
                    shoal_gossip::MAX_ZONE_LEN
                ),
            );
        }
        if self.member.advertise_check_ms > 3_600_000 {
            return bad(
                "member.advertise_check_ms",
                format!(
                    "{} is over an hour: a start-up that waits that long is a hang",
                    self.member.advertise_check_ms
                ),
            );
        }
        if self.member.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "member.listen",
                format!("{:?} is not an ip:port address", self.member.listen),
            );
        }
        Ok(())
    }
}
