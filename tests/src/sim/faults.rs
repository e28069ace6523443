//! The fault schedule: drawn from the seed before the run starts, applied by
//! the driver between simulation steps, healed at the end of the workload.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// One change to the simulated world.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Cut the link between two hosts, both ways.
    Partition(String, String),
    /// Cut one direction only: `from`'s messages to `to` are lost.
    PartitionOneWay(String, String),
    /// Heal a both-ways cut.
    Repair(String, String),
    /// Heal a one-way cut.
    RepairOneWay(String, String),
    /// Cut a node off from every other host.
    Isolate(String),
    /// Heal an isolation.
    Rejoin(String),
    /// Kill a node's software (its tasks are dropped mid-flight).
    Crash(String),
    /// Start a crashed node again on the same data directory.
    Restart(String),
    /// Raise the maximum message latency of every link of a host.
    Slow(String, Duration),
    /// Put a host's links back to the normal latency.
    Fast(String),
    /// Make every link of a host flap (lose in-flight messages) at this rate
    /// per step.
    Lossy(String, f64),
    /// Stop the flapping.
    Lossless(String),
    /// Set a node's wall-clock offset, in milliseconds.
    Skew(String, i64),
    /// Start a new storage node that joins the running cluster (streams the
    /// ranges it gains, then serves).
    Join(String),
    /// Ask a node to decommission (stream its ranges to their new owners,
    /// then leave); retried, like an operator would, until it succeeds.
    Decommission(String),
}

impl Action {
    /// The kind this action counts under, or `None` for a heal.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Action::Partition(..) | Action::Isolate(_) => Some(Kind::Partition),
            Action::PartitionOneWay(..) => Some(Kind::PartitionOneWay),
            Action::Crash(_) => Some(Kind::Crash),
            Action::Slow(..) => Some(Kind::Latency),
            Action::Lossy(..) => Some(Kind::Loss),
            Action::Skew(..) => Some(Kind::Skew),
            Action::Join(_) => Some(Kind::Join),
            Action::Decommission(_) => Some(Kind::Decommission),
            Action::Repair(..)
            | Action::RepairOneWay(..)
            | Action::Rejoin(_)
            | Action::Restart(_)
            | Action::Fast(_)
            | Action::Lossless(_) => None,
        }
    }
}

/// The kinds of faults, as counted in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Both-ways partitions (a pair of hosts, or one node from all).
    Partition,
    /// One-way partitions.
    PartitionOneWay,
    /// Crash and restart of a node.
    Crash,
    /// Raised message latency.
    Latency,
    /// Message loss (link flapping).
    Loss,
    /// Clock skew changes (up to +-30 s).
    Skew,
    /// A node joining.
    Join,
    /// A node decommissioned.
    Decommission,
}

/// Faults injected, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Both-ways partitions.
    pub partition: u64,
    /// One-way partitions.
    pub partition_oneway: u64,
    /// Crash + restart.
    pub crash: u64,
    /// Latency spikes.
    pub latency: u64,
    /// Lossy periods.
    pub loss: u64,
    /// Clock skews.
    pub skew: u64,
    /// Joins.
    pub join: u64,
    /// Decommissions.
    pub decommission: u64,
}

impl FaultCounts {
    /// Counts one injected fault of `kind`.
    pub fn add(&mut self, kind: Kind) {
        let slot = match kind {
            Kind::Partition => &mut self.partition,
            Kind::PartitionOneWay => &mut self.partition_oneway,
            Kind::Crash => &mut self.crash,
            Kind::Latency => &mut self.latency,
            Kind::Loss => &mut self.loss,
            Kind::Skew => &mut self.skew,
            Kind::Join => &mut self.join,
            Kind::Decommission => &mut self.decommission,
        };
        *slot += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &FaultCounts) {
        self.partition += other.partition;
        self.partition_oneway += other.partition_oneway;
        self.crash += other.crash;
        self.latency += other.latency;
        self.loss += other.loss;
        self.skew += other.skew;
        self.join += other.join;
        self.decommission += other.decommission;
    }

    /// All faults.
    pub fn total(&self) -> u64 {
        self.partition
            + self.partition_oneway
            + self.crash
            + self.latency
            + self.loss
            + self.skew
            + self.join
            + self.decommission
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {}, one-way {}, crash {}, latency {}, loss {}, skew {}, join {}, \
             decommission {}",
            self.partition,
            self.partition_oneway,
            self.crash,
            self.latency,
            self.loss,
            self.skew,
            self.join,
            self.decommission
        )
    }
}

/// An action and the simulated time (since the start) it is due at.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// Due time in simulated milliseconds.
    pub at_ms: u64,
    /// What happens.
    pub action: Action,
}

/// Largest clock offset a node gets, either way.
pub const MAX_SKEW_MS: i64 = 30_000;

/// Draws `count` faults over `[start_ms, end_ms)`, each with its heal
/// `1..=8 s` later (skews are not healed: a skewed clock is a state the
/// cluster must live with), and perhaps a join of `joiner` and a
/// decommission of one of `nodes`. At most one node is crashed at any moment, so
/// that the cluster keeps a write quorum for most keys and the run tests
/// recovery rather than total unavailability.
pub fn schedule(
    rng: &mut StdRng,
    nodes: &[String],
    joiner: Option<&str>,
    gateways: &[String],
    count: usize,
    start_ms: u64,
    end_ms: u64,
) -> Vec<Scheduled> {
    let mut out = Vec::new();
    // Intervals during which some node is crashed.
    let mut crashed: Vec<(u64, u64)> = Vec::new();
    let servers: Vec<&String> = nodes.iter().chain(gateways.iter()).collect();
    for _ in 0..count {
        let at = rng.gen_range(start_ms..end_ms);
        let heal = at + rng.gen_range(1_000..=8_000);
        let node = nodes[rng.gen_range(0..nodes.len())].clone();
        let mut pair = || {
            let a = servers[rng.gen_range(0..servers.len())].clone();
            let b = loop {
                let b = servers[rng.gen_range(0..servers.len())];
                if *b != a {
                    break b.clone();
                }
            };
            (a, b)
        };
        let (a, b) = pair();
        match rng.gen_range(0..7) {
            0 => {
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::Partition(a.clone(), b.clone()),
                });
                out.push(Scheduled {
                    at_ms: heal,
                    action: Action::Repair(a, b),
                });
            }
            1 => {
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::Isolate(node.clone()),
                });
                out.push(Scheduled {
                    at_ms: heal,
                    action: Action::Rejoin(node),
                });
            }
            2 => {
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::PartitionOneWay(a.clone(), b.clone()),
                });
                out.push(Scheduled {
                    at_ms: heal,
                    action: Action::RepairOneWay(a, b),
                });
            }
            3 => {
                if crashed.iter().any(|(s, e)| at < *e && *s < heal) {
                    continue;
                }
                crashed.push((at, heal));
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::Crash(node.clone()),
                });
                out.push(Scheduled {
                    at_ms: heal,
                    action: Action::Restart(node),
                });
            }
            4 => {
                let host = servers[rng.gen_range(0..servers.len())].clone();
                let max = Duration::from_millis(rng.gen_range(200..=2_000));
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::Slow(host.clone(), max),
                });
                out.push(Scheduled {
                    at_ms: heal,
                    action: Action::Fast(host),
                });
            }
            5 => {
                let host = servers[rng.gen_range(0..servers.len())].clone();
                let rate = rng.gen_range(0.001..0.02);
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::Lossy(host.clone(), rate),
                });
                out.push(Scheduled {
                    at_ms: heal,
                    action: Action::Lossless(host),
                });
            }
            _ => {
                let skew = rng.gen_range(-MAX_SKEW_MS..=MAX_SKEW_MS);
                out.push(Scheduled {
                    at_ms: at,
                    action: Action::Skew(node, skew),
                });
            }
        }
    }
    // Membership changes, each in about a third of the runs: a new node
    // joins, and one of the original nodes is decommissioned (possibly
    // while the other joins, or while a node is crashed or cut off).
    if let Some(joiner) = joiner {
        if rng.gen_bool(0.35) {
            out.push(Scheduled {
                at_ms: rng.gen_range(start_ms..end_ms),
                action: Action::Join(joiner.to_string()),
            });
        }
    }
    if rng.gen_bool(0.35) {
        out.push(Scheduled {
            at_ms: rng.gen_range(start_ms..end_ms),
            action: Action::Decommission(nodes[rng.gen_range(0..nodes.len())].clone()),
        });
    }
    // Stable: equal times keep their drawing order.
    out.sort_by_key(|s| s.at_ms);
    out
}
