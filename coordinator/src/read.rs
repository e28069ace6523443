//! One client read as a state machine: which replicas are asked, when the
//! rest are asked too, what the client is told, which replicas are repaired.
//!
//! The caller performs every [`ReadAction`] and feeds replies to
//! [`ReadOp::answered`], the timer to [`ReadOp::speculate`] and the deadline
//! to [`ReadOp::expire`], until [`ReadOp::finished`].
//!
//! The rules it encodes:
//! - only R replicas are asked at first (the fast ones, in ring order
//!   otherwise): asking all N costs every process a third more work per read
//!   at N = 3, R = 2, for answers the verdict does not wait for;
//! - a replica that fails is replaced at once by the next one not yet asked;
//!   one that is merely slow is covered by asking the rest after a
//!   speculative delay (a few times the slowest asked replica's latency), so
//!   a hung replica costs one delay, not the deadline;
//! - the verdict is the reconciliation of the first R answers, as soon as
//!   they are in, or a failure as soon as R can no longer be reached;
//! - once every asked replica answered (or the deadline passed), replicas
//!   that answered with an older state are repaired with the merge of all
//!   answers. Replicas never asked are left to anti-entropy.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_ring::view::RingView;
use shoal_vclock::{Policy, SiblingSet};

use crate::plan::Target;
use crate::reconcile::{reconcile_with, Reconciled};
use crate::replicas::{much_slower, read_plan, Health};
use crate::tally::{Progress, QuorumFailure, Tally};

/// The speculative delay never drops below this: under a few milliseconds,
/// scheduling noise on a loaded host would ask the extra replicas on most
/// reads and undo the saving.
pub const MIN_SPECULATION: Duration = Duration::from_millis(5);

/// How many times the slowest asked replica's smoothed latency a read waits
/// before asking the rest.
pub const SPECULATION_FACTOR: f64 = 4.0;

/// How many replicas a read asks up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// R, then the rest on failure or after the speculative delay.
    Quorum,
    /// Every target at once (more load, the freshest read repair).
    All,
}

/// What the caller must do next for a read.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadAction {
    /// Ask `node` for its state of the key.
    Read {
        /// The replica.
        node: String,
    },
    /// Call [`ReadOp::speculate`] after this long (unless finished first).
    Timer {
        /// The delay.
        after: Duration,
    },
    /// The client's answer. Emitted exactly once.
    Verdict(Result<Reconciled, QuorumFailure>),
    /// Write `set` to `target` (read repair): it answered with less.
    Repair {
        /// The stale replica (with the owner it stands in for, if a fallback).
        target: Target,
        /// The merge of every answer.
        set: SiblingSet,
    },
}

/// The state of one read; see the module docs.
#[derive(Debug, Clone)]
pub struct ReadOp {
    targets: Vec<Target>,
    /// Indexes into `targets`, in the order they are asked.
    order: Vec<usize>,
    asked: usize,
    waiting: BTreeSet<String>,
    tally: Tally<Option<SiblingSet>>,
    /// How many are asked up front.
    first: usize,
    speculation: Duration,
    verdict: bool,
    repaired: bool,
    policy: Policy,
}

impl ReadOp {
    /// A read of the key at `position` needing `r` answers among `n`
    /// replicas.
    pub fn new(
        view: &RingView,
        position: u64,
        n: usize,
        r: usize,
        fanout: Fanout,
        health: &impl Health,
    ) -> Self {
        let plan = read_plan(view, position, n, health);
        let mut tally = Tally::new(r, plan.owners.len());
        for owner in &plan.uncovered {
            tally.fail(owner.clone(), "down, and no live node to stand in");
        }
        let latency: Vec<f64> = plan
            .targets
            .iter()
            .map(|t| health.latency_us(&t.node))
            .collect();
        let best = latency.iter().copied().fold(f64::INFINITY, f64::min);
        // Ring order, except that much slower replicas go last.
        let (fast, slow): (Vec<usize>, Vec<usize>) =
            (0..plan.targets.len()).partition(|&i| !much_slower(latency[i], best));
        let order: Vec<usize> = fast.into_iter().chain(slow).collect();
        let first = match fanout {
            Fanout::Quorum => r.max(1),
            Fanout::All => order.len(),
        };
        let slowest = order
            .iter()
            .take(first)
            .map(|&i| latency[i])
            .fold(0.0, f64::max);
        let speculation =
            Duration::from_secs_f64(slowest * SPECULATION_FACTOR / 1e6).max(MIN_SPECULATION);
        Self {
            targets: plan.targets,
            order,
            asked: 0,
            waiting: BTreeSet::new(),
            tally,
            first,
            speculation,
            verdict: false,
            repaired: false,
            policy: Policy::Siblings,
        }
    }

    /// Reconciles answers under `policy` (the key's bucket's).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The first actions.
    pub fn start(&mut self) -> Vec<ReadAction> {
        let mut out = Vec::new();
        while self.asked < self.first.min(self.order.len()) {
            self.ask_next(&mut out);
        }
        if self.asked < self.order.len() {
            out.push(ReadAction::Timer {
                after: self.speculation,
            });
        }
        self.report(&mut out);
        out
    }

    /// `node` answered: `Ok` with its state (`None`: it holds nothing), or
    /// `Err` with why it could not.
    pub fn answered(
        &mut self,
        node: &str,
        result: Result<Option<SiblingSet>, String>,
    ) -> Vec<ReadAction> {
        let mut out = Vec::new();
        if !self.waiting.remove(node) {
            return out;
        }
        match result {
            Ok(state) => {
                self.tally.succeed(node, state);
            }
            Err(cause) => {
                self.tally.fail(node, cause);
                if !self.verdict {
                    self.ask_next(&mut out);
                }
            }
        }
        self.report(&mut out);
        self.repair_when_complete(&mut out);
        out
    }

    /// The speculative delay passed: ask every replica not asked yet.
    pub fn speculate(&mut self) -> Vec<ReadAction> {
        let mut out = Vec::new();
        if !self.verdict {
            while self.asked < self.order.len() {
                self.ask_next(&mut out);
            }
        }
        out
    }

    /// The deadline passed: replicas that did not answer are unknown, and
    /// those that did are repaired.
    pub fn expire(&mut self) -> Vec<ReadAction> {
        let mut out = Vec::new();
        if !self.verdict {
            self.verdict = true;
            out.push(ReadAction::Verdict(Err(self.tally.failure())));
        }
        self.waiting.clear();
        self.repair_when_complete(&mut out);
        out
    }

    /// Whether the verdict was given and repairs (if any) were handed out.
    pub fn finished(&self) -> bool {
        self.verdict && self.repaired
    }

    fn ask_next(&mut self, out: &mut Vec<ReadAction>) {
        if let Some(&i) = self.order.get(self.asked) {
            self.asked += 1;
            let node = self.targets[i].node.clone();
            self.waiting.insert(node.clone());
            out.push(ReadAction::Read { node });
        }
    }

    fn report(&mut self, out: &mut Vec<ReadAction>) {
        if self.verdict {
            return;
        }
        match self.tally.progress() {
            Progress::Pending => {
                // A failure may leave nobody to wait for while the tally
                // still counts the unasked as outstanding.
                if self.waiting.is_empty() && self.asked == self.order.len() {
                    self.verdict = true;
                    out.push(ReadAction::Verdict(Err(self.tally.failure())));
                }
            }
            Progress::Reached => {
                self.verdict = true;
                out.push(ReadAction::Verdict(Ok(reconcile_with(
                    self.tally.answers(),
                    self.policy,
                ))));
            }
            Progress::Failed(f) => {
                self.verdict = true;
                out.push(ReadAction::Verdict(Err(f)));
            }
        }
    }

    fn repair_when_complete(&mut self, out: &mut Vec<ReadAction>) {
        if !self.verdict || self.repaired || !self.waiting.is_empty() {
            return;
        }
        self.repaired = true;
        let reconciled = reconcile_with(self.tally.answers(), self.policy);
        let Some(merged) = reconciled.merged else {
            return;
        };
        for node in reconciled.stale {
            let target = self
                .targets
                .iter()
                .find(|t| t.node == node)
                .cloned()
                .unwrap_or(Target {
                    node,
                    hint_for: None,
                });
            out.push(ReadAction::Repair {
                target,
                set: merged.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_vclock::{Content, Context};

    use super::*;
    use crate::replicas::tests::{five, walk, Table};

    fn rank(n: &str) -> String {
        format!("o{}", walk().iter().position(|m| m == n).unwrap())
    }

    fn show(actions: &[ReadAction]) -> String {
        actions
            .iter()
            .map(|a| match a {
                ReadAction::Read { node } => format!("read {}", rank(node)),
                ReadAction::Timer { after } => format!("timer {}ms", after.as_millis()),
                ReadAction::Verdict(Ok(r)) => format!(
                    "ok {}",
                    r.merged
                        .as_ref()
                        .map(|s| s.len().to_string())
                        .unwrap_or("none".into())
                ),
                ReadAction::Verdict(Err(f)) => format!("failed {}/{}", f.succeeded, f.needed),
                ReadAction::Repair { target, .. } => format!("repair {}", rank(&target.node)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn version(text: &str, after: Option<&SiblingSet>) -> SiblingSet {
        let mut s = after.cloned().unwrap_or_default();
        let ctx = after.map(|a| a.context()).unwrap_or_else(Context::empty);
        s.update(
            &ctx,
            "a",
            Content::value(text.as_bytes().to_vec(), "text/plain"),
            1,
        )
        .unwrap();
        s
    }

    #[test]
    fn asks_r_then_answers_then_repairs_the_stale_one() {
        let w = walk();
        let mut op = ReadOp::new(&five(), 42, 3, 2, Fanout::Quorum, &Table::default());
        assert_eq!(show(&op.start()), "read o0, read o1, timer 5ms");
        let old = version("one", None);
        let new = version("two", Some(&old));
        assert_eq!(show(&op.answered(&w[1], Ok(Some(old)))), "");
        assert_eq!(show(&op.answered(&w[0], Ok(Some(new)))), "ok 1, repair o1");
        assert!(op.finished());
        assert_eq!(
            show(&op.speculate()),
            "",
            "no speculation after the verdict"
        );
    }

    #[test]
    fn a_failure_asks_the_next_replica_at_once() {
        let w = walk();
        let mut op = ReadOp::new(&five(), 42, 3, 2, Fanout::Quorum, &Table::default());
        op.start();
        assert_eq!(show(&op.answered(&w[0], Err("down".into()))), "read o2");
        assert_eq!(show(&op.answered(&w[1], Ok(None))), "");
        assert_eq!(show(&op.answered(&w[2], Ok(None))), "ok none");
        assert!(op.finished());
    }

    #[test]
    fn a_slow_replica_is_covered_by_speculation() {
        let w = walk();
        let mut op = ReadOp::new(&five(), 42, 3, 2, Fanout::Quorum, &Table::default());
        op.start();
        op.answered(&w[0], Ok(None));
        assert_eq!(show(&op.speculate()), "read o2");
        assert_eq!(show(&op.answered(&w[2], Ok(None))), "ok none");
        assert!(!op.finished(), "o1 is still awaited for read repair");
        assert_eq!(show(&op.expire()), "");
        assert!(op.finished());
    }

    #[test]
    fn slow_replicas_are_asked_last_and_set_the_delay() {
        let w = walk();
        let health = Table::default()
            .slow(&w[0], 30_000.0)
            .slow(&w[1], 2_000.0)
            .slow(&w[2], 1_000.0);
        let mut op = ReadOp::new(&five(), 42, 3, 2, Fanout::Quorum, &health);
        assert_eq!(show(&op.start()), "read o1, read o2, timer 8ms");
    }

    #[test]
    fn all_fanout_asks_everyone() {
        let mut op = ReadOp::new(&five(), 42, 3, 2, Fanout::All, &Table::default());
        assert_eq!(show(&op.start()), "read o0, read o1, read o2");
    }

    #[test]
    fn fails_as_soon_as_r_is_out_of_reach() {
        let w = walk();
        let mut op = ReadOp::new(&five(), 42, 3, 3, Fanout::Quorum, &Table::default());
        op.start();
        // R = N = 3: one failure and no spare to ask (reads do not use
        // fallbacks beyond the plan's) decides it.
        assert_eq!(show(&op.answered(&w[0], Err("x".into()))), "failed 0/3");
        let mut none = ReadOp::new(
            &RingView::default(),
            42,
            3,
            2,
            Fanout::Quorum,
            &Table::default(),
        );
        assert_eq!(show(&none.start()), "failed 0/2");
        assert_eq!(show(&none.expire()), "");
        assert!(none.finished());
    }

    #[test]
    fn deadline_fails_and_repairs_what_answered() {
        let w = walk();
        let mut op = ReadOp::new(&five(), 42, 3, 2, Fanout::Quorum, &Table::default());
        op.start();
        let old = version("one", None);
        let new = version("two", Some(&old));
        op.answered(&w[0], Ok(Some(new)));
        op.speculate();
        op.answered(&w[2], Err("x".into()));
        // o1 never answers; nothing stale among the answers.
        assert_eq!(show(&op.expire()), "failed 1/2");
        assert!(op.finished());
    }
}
