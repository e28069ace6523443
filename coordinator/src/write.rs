//! One client write as a state machine: which replica coordinates, who gets
//! the version after it, when the client hears back.
//!
//! The caller owns sockets and clocks. It calls [`WriteOp::start`], performs
//! every [`WriteAction`] it gets back, and feeds each reply to
//! [`WriteOp::coordinated`] or [`WriteOp::replicated`] (and the deadline to
//! [`WriteOp::expire`]), performing the actions those return, until
//! [`WriteOp::finished`].
//!
//! The rules it encodes:
//! - exactly one replica mints the version (the coordinator); the others can
//!   only be sent the result, so coordinate attempts are sequential and
//!   bounded ([`MAX_COORDINATOR_ATTEMPTS`]), and only an attempt that
//!   certainly stored nothing (refused, unreachable) is retried elsewhere:
//!   one that timed out may still have stored a version, and a second
//!   coordinator would mint the same write again under another dot
//!   ([`WriteOp::coordinate_unknown`]);
//! - a coordinator that hangs must leave time for the next candidate, so each
//!   attempt but the last gets half the remaining budget;
//! - a target that fails is replaced by the next live spare on the walk, which
//!   keeps the version as a hint for the slot's owner (sloppy quorum);
//! - the verdict comes as soon as W (+ pending) replicas stored the version
//!   or that can no longer happen; replication to the rest goes on after it.

use std::collections::VecDeque;
use std::time::Duration;

use shoal_ring::view::RingView;

use crate::plan::Target;
use crate::replicas::{prefer_fast_coordinator, write_plan, Health};
use crate::tally::{Progress, QuorumFailure, Tally};

/// How many targets a write tries as its coordinator before giving up.
pub const MAX_COORDINATOR_ATTEMPTS: usize = 3;

/// What the caller must do next for a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteAction {
    /// Ask `target` to mint the new version from the client's context and
    /// value, within `budget`. At most one is outstanding at a time.
    Coordinate {
        /// The replica (with the owner it stands in for, if a fallback).
        target: Target,
        /// How long this attempt may take.
        budget: Duration,
    },
    /// Send the coordinated version to `target`.
    Replicate {
        /// The replica (with the owner it stands in for, if a fallback).
        target: Target,
    },
    /// The client's answer. Emitted exactly once.
    Verdict(Result<(), QuorumFailure>),
}

/// The state of one write; see the module docs.
#[derive(Debug, Clone)]
pub struct WriteOp {
    tally: Tally<()>,
    /// Targets not yet contacted, coordinator candidates first.
    queue: VecDeque<Target>,
    spares: VecDeque<String>,
    attempts: usize,
    coordinating: Option<Target>,
    coordinated: bool,
    replicating: Vec<Target>,
    verdict: bool,
    /// The coordinator's half of a write whose replication it was handed
    /// ([`WriteOp::forwarded`]): its own store is one more reply, not an
    /// attempt that another candidate could retry.
    forwarded: bool,
}

/// What a coordinator needs to replicate a write itself: the rest of the
/// plan, as the router's [`WriteOp`] holds it when it asks for
/// coordination ([`WriteOp::forwarding`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// The targets after the coordinator.
    pub replicas: Vec<Target>,
    /// Live members after them, to replace targets that fail.
    pub spares: Vec<String>,
    /// Acknowledgements needed, the coordinator's own included.
    pub needed: usize,
    /// The key's owners (the quorum's denominator).
    pub owners: usize,
    /// Slots that already failed (down owners nobody stands in for, and
    /// coordinators that failed before this one).
    pub failed: Vec<String>,
}

impl WriteOp {
    /// A write of the key at `position` needing `w` acknowledgements (plus
    /// one per pending replica while the ring changes) among `n` replicas.
    pub fn new(view: &RingView, position: u64, n: usize, w: usize, health: &impl Health) -> Self {
        let (plan, spares, pending) = write_plan(view, position, n, health);
        let mut tally = Tally::new(w + pending, plan.owners.len());
        for owner in &plan.uncovered {
            tally.fail(owner.clone(), "down, and no live node to stand in");
        }
        let mut queue: VecDeque<Target> = plan.targets.into();
        prefer_fast_coordinator(&mut queue, health);
        Self {
            tally,
            queue,
            spares,
            attempts: 0,
            coordinating: None,
            coordinated: false,
            replicating: Vec::new(),
            verdict: false,
            forwarded: false,
        }
    }

    /// The coordinator's side of a write it was handed with `forwarding`:
    /// `me` is the slot its own store fills. [`WriteOp::start_forwarded`]
    /// sends the version to every replica at once, in parallel with the
    /// coordinator's own commit, whose outcome is fed in with
    /// [`WriteOp::coordinated`] like any other reply.
    pub fn forwarded(me: Target, forwarding: Forwarding) -> Self {
        let mut tally = Tally::new(forwarding.needed, forwarding.owners);
        for slot in forwarding.failed {
            tally.fail(slot, "failed before this coordinator");
        }
        Self {
            tally,
            queue: forwarding.replicas.into(),
            spares: forwarding.spares.into(),
            attempts: MAX_COORDINATOR_ATTEMPTS,
            coordinating: Some(me),
            coordinated: true,
            replicating: Vec::new(),
            verdict: false,
            forwarded: true,
        }
    }

    /// The first actions of a [`WriteOp::forwarded`] op.
    pub fn start_forwarded(&mut self) -> Vec<WriteAction> {
        let mut out = Vec::new();
        for target in std::mem::take(&mut self.queue) {
            self.replicating.push(target.clone());
            out.push(WriteAction::Replicate { target });
        }
        self.report(&mut out);
        out
    }

    /// What the coordinator now being asked needs to replicate the write
    /// itself, so that the router makes one call instead of one per
    /// replica. `None` when no coordinate attempt is outstanding.
    pub fn forwarding(&self) -> Option<Forwarding> {
        self.coordinating.as_ref()?;
        Some(Forwarding {
            replicas: self.queue.iter().cloned().collect(),
            spares: self.spares.iter().cloned().collect(),
            needed: self.tally.needed(),
            owners: self.tally.total(),
            failed: self.tally.failures().keys().cloned().collect(),
        })
    }

    /// The coordinator at `node`, handed the replication with
    /// [`WriteOp::forwarding`], answered: `Ok` with its verdict (it stored
    /// the version and counted the replicas' acknowledgements), or `Err`
    /// when it could not coordinate at all (the next candidate is tried).
    pub fn forwarded_reply(
        &mut self,
        node: &str,
        result: Result<Result<(), QuorumFailure>, String>,
        remaining: Duration,
    ) -> Vec<WriteAction> {
        match result {
            Ok(verdict) => {
                let mut out = Vec::new();
                if self.coordinating.take_if(|t| t.node == node).is_none() {
                    return out;
                }
                self.coordinated = true;
                self.queue.clear();
                if !self.verdict {
                    self.verdict = true;
                    out.push(WriteAction::Verdict(verdict));
                }
                out
            }
            Err(cause) => self.coordinated(node, Err(cause), remaining),
        }
    }

    /// The coordinate attempt at `node` ended without saying whether it
    /// stored the version: it timed out, or its connection broke after the
    /// request went out. No other candidate is tried, and the verdict is a
    /// failure with that slot unknown. A second coordinator would mint a
    /// second version of the same write under its own dot; the client's
    /// context would cover only that one, so a later delete with it would
    /// leave the first standing, and the deleted value would come back
    /// (`cargo xtask sim --seed 59` found exactly that). An unknown outcome
    /// is the client's to retry with the context it holds, as a write
    /// timeout is in Cassandra and Riak.
    pub fn coordinate_unknown(&mut self, node: &str, cause: String) -> Vec<WriteAction> {
        if self.forwarded {
            // The coordinator's own store always answers; nothing to retry.
            return self.coordinated(node, Err(cause), Duration::ZERO);
        }
        let mut out = Vec::new();
        if self.coordinating.take_if(|t| t.node == node).is_none() {
            return out;
        }
        self.queue.clear();
        if !self.verdict {
            self.verdict = true;
            out.push(WriteAction::Verdict(Err(self.tally.failure())));
        }
        out
    }

    /// The first actions, `remaining` being the request's whole budget.
    pub fn start(&mut self, remaining: Duration) -> Vec<WriteAction> {
        let mut out = Vec::new();
        self.next_coordinator(remaining, &mut out);
        out
    }

    /// The coordinate attempt at `node` ended: `Ok` with the version stored
    /// there, or `Err` with why not. A refusal that is the client's fault
    /// (bad context, value too large) is the caller's to answer: retrying it
    /// elsewhere would fail alike.
    pub fn coordinated(
        &mut self,
        node: &str,
        result: Result<(), String>,
        remaining: Duration,
    ) -> Vec<WriteAction> {
        let mut out = Vec::new();
        let Some(target) = self.coordinating.take_if(|t| t.node == node) else {
            return out;
        };
        if self.forwarded {
            match result {
                Ok(()) => self.tally.succeed(slot(&target), ()),
                Err(cause) => self.tally.fail(slot(&target), cause),
            };
            self.report(&mut out);
            return out;
        }
        match result {
            Ok(()) => {
                self.coordinated = true;
                self.tally.succeed(slot(&target), ());
                for target in std::mem::take(&mut self.queue) {
                    self.replicating.push(target.clone());
                    out.push(WriteAction::Replicate { target });
                }
                self.report(&mut out);
            }
            Err(cause) => {
                match self.spares.pop_front() {
                    Some(spare) => self.queue.push_back(Target {
                        node: spare,
                        hint_for: Some(slot(&target)),
                    }),
                    None => {
                        self.tally.fail(slot(&target), cause);
                    }
                }
                self.next_coordinator(remaining, &mut out);
            }
        }
        out
    }

    /// The replication to `node` ended.
    pub fn replicated(&mut self, node: &str, result: Result<(), String>) -> Vec<WriteAction> {
        let mut out = Vec::new();
        let Some(i) = self.replicating.iter().position(|t| t.node == node) else {
            return out;
        };
        let target = self.replicating.swap_remove(i);
        match result {
            Ok(()) => {
                self.tally.succeed(slot(&target), ());
            }
            Err(cause) => match self.spares.pop_front() {
                Some(spare) => {
                    let target = Target {
                        node: spare,
                        hint_for: Some(slot(&target)),
                    };
                    self.replicating.push(target.clone());
                    out.push(WriteAction::Replicate { target });
                }
                None => {
                    self.tally.fail(slot(&target), cause);
                }
            },
        }
        self.report(&mut out);
        out
    }

    /// The request's deadline passed: replicas still outstanding are unknown
    /// (they may yet store the version), and the caller stops waiting.
    pub fn expire(&mut self) -> Vec<WriteAction> {
        let mut out = Vec::new();
        self.coordinating = None;
        self.replicating.clear();
        self.queue.clear();
        if !self.verdict {
            self.verdict = true;
            out.push(WriteAction::Verdict(Err(self.tally.failure())));
        }
        out
    }

    /// Whether the verdict was given and no replica is still being awaited.
    pub fn finished(&self) -> bool {
        self.verdict && self.coordinating.is_none() && self.replicating.is_empty()
    }

    /// Whether a coordinator stored the version.
    pub fn is_coordinated(&self) -> bool {
        self.coordinated
    }

    fn next_coordinator(&mut self, remaining: Duration, out: &mut Vec<WriteAction>) {
        let exhausted = self.attempts >= MAX_COORDINATOR_ATTEMPTS || remaining.is_zero();
        match self.queue.pop_front() {
            Some(target) if !exhausted => {
                self.attempts += 1;
                // Only the last candidate gets the whole remaining budget.
                let last = self.queue.is_empty() || self.attempts == MAX_COORDINATOR_ATTEMPTS;
                let budget = if last { remaining } else { remaining / 2 };
                self.coordinating = Some(target.clone());
                out.push(WriteAction::Coordinate { target, budget });
            }
            _ => {
                self.queue.clear();
                if !self.verdict {
                    self.verdict = true;
                    out.push(WriteAction::Verdict(Err(self.tally.failure())));
                }
            }
        }
    }

    fn report(&mut self, out: &mut Vec<WriteAction>) {
        if self.verdict {
            return;
        }
        match self.tally.progress() {
            Progress::Pending => {}
            Progress::Reached => {
                self.verdict = true;
                out.push(WriteAction::Verdict(Ok(())));
            }
            Progress::Failed(f) => {
                self.verdict = true;
                out.push(WriteAction::Verdict(Err(f)));
            }
        }
    }
}

/// The quorum slot a target fills: the owner it is for.
fn slot(t: &Target) -> String {
    t.hint_for.clone().unwrap_or_else(|| t.node.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::tests::{five, walk, Table};

    const SECOND: Duration = Duration::from_secs(1);

    fn show(actions: &[WriteAction]) -> String {
        actions
            .iter()
            .map(|a| match a {
                WriteAction::Coordinate { target, budget } => {
                    format!("coordinate {} {}ms", name(target), budget.as_millis())
                }
                WriteAction::Replicate { target } => format!("replicate {}", name(target)),
                WriteAction::Verdict(Ok(())) => "ok".into(),
                WriteAction::Verdict(Err(f)) => format!("failed {}/{}", f.succeeded, f.needed),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Owners by rank (o0, o1, ...) so that expectations read the same
    /// whatever the hash places first.
    fn name(t: &Target) -> String {
        let w = walk();
        let rank = |n: &str| format!("o{}", w.iter().position(|m| m == n).unwrap());
        match &t.hint_for {
            Some(o) => format!("{}>{}", rank(&t.node), rank(o)),
            None => rank(&t.node),
        }
    }

    #[test]
    fn coordinates_then_replicates_and_answers_at_w() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::default());
        assert_eq!(show(&op.start(SECOND)), "coordinate o0 500ms");
        assert_eq!(
            show(&op.coordinated(&w[0], Ok(()), SECOND)),
            "replicate o1, replicate o2"
        );
        assert_eq!(show(&op.replicated(&w[2], Ok(()))), "ok");
        assert!(!op.finished(), "o1 is still being replicated to");
        assert_eq!(show(&op.replicated(&w[1], Ok(()))), "");
        assert!(op.finished());
    }

    #[test]
    fn w1_answers_when_the_coordinator_stored_it() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 1, &Table::default());
        op.start(SECOND);
        assert_eq!(
            show(&op.coordinated(&w[0], Ok(()), SECOND)),
            "replicate o1, replicate o2, ok"
        );
    }

    #[test]
    fn a_coordinator_that_may_have_stored_the_version_is_not_retried() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::default());
        assert_eq!(show(&op.start(SECOND)), "coordinate o0 500ms");
        // o0 timed out: it may hold a version of this write already, so no
        // other replica mints a second one; the client hears "unknown".
        let actions = op.coordinate_unknown(&w[0], "no answer in time".into());
        assert_eq!(show(&actions), "failed 0/2");
        let WriteAction::Verdict(Err(failure)) = &actions[0] else {
            unreachable!()
        };
        assert_eq!((failure.failed, failure.unknown), (0, 3));
        assert!(op.finished());
        // A late answer from o0 changes nothing.
        assert_eq!(show(&op.coordinated(&w[0], Ok(()), SECOND)), "");
        assert_eq!(show(&op.forwarded_reply(&w[0], Ok(Ok(())), SECOND)), "");
    }

    #[test]
    fn failed_coordinator_is_replaced_by_a_spare_with_a_hint() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::default());
        op.start(SECOND);
        // o0 times out: the next owner coordinates with what is left, and the
        // first spare takes o0's slot as a hinted target.
        assert_eq!(
            show(&op.coordinated(&w[0], Err("timeout".into()), SECOND / 2)),
            "coordinate o1 250ms"
        );
        assert_eq!(
            show(&op.coordinated(&w[1], Ok(()), SECOND / 4)),
            "replicate o2, replicate o3>o0"
        );
        assert_eq!(show(&op.replicated(&w[3], Ok(()))), "ok");
    }

    #[test]
    fn coordinator_attempts_are_bounded() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::default());
        assert_eq!(show(&op.start(SECOND)), "coordinate o0 500ms");
        assert_eq!(
            show(&op.coordinated(&w[0], Err("x".into()), SECOND)),
            "coordinate o1 500ms"
        );
        // The third attempt is the last: it gets the whole budget.
        assert_eq!(
            show(&op.coordinated(&w[1], Err("x".into()), SECOND)),
            "coordinate o2 1000ms"
        );
        assert_eq!(
            show(&op.coordinated(&w[2], Err("x".into()), SECOND)),
            "failed 0/2"
        );
        assert!(op.finished());
    }

    #[test]
    fn failed_replica_is_replaced_then_counts_as_failed() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 3, &Table::down(&w[4]));
        op.start(SECOND);
        op.coordinated(&w[0], Ok(()), SECOND);
        // o1 fails: o3 stands in for it (o4 is down, so no spare after that).
        assert_eq!(
            show(&op.replicated(&w[1], Err("refused".into()))),
            "replicate o3>o1"
        );
        assert_eq!(
            show(&op.replicated(&w[3], Err("refused".into()))),
            "failed 1/3"
        );
        assert_eq!(show(&op.replicated(&w[2], Ok(()))), "", "one verdict only");
        assert!(op.finished());
    }

    #[test]
    fn down_owner_is_covered_by_a_fallback_up_front() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::down(&w[0]));
        assert_eq!(show(&op.start(SECOND)), "coordinate o1 500ms");
        assert_eq!(
            show(&op.coordinated(&w[1], Ok(()), SECOND)),
            "replicate o2, replicate o3>o0"
        );
    }

    #[test]
    fn nothing_live_fails_at_once() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::down(&w.join(" ")));
        assert_eq!(show(&op.start(SECOND)), "failed 0/2");
        let mut none = WriteOp::new(&RingView::default(), 42, 3, 2, &Table::default());
        assert_eq!(show(&none.start(SECOND)), "failed 0/2");
    }

    #[test]
    fn deadline_makes_outstanding_replicas_unknown() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 3, &Table::default());
        op.start(SECOND);
        op.coordinated(&w[0], Ok(()), SECOND);
        op.replicated(&w[1], Ok(()));
        let expired = op.expire();
        assert_eq!(show(&expired), "failed 2/3");
        match &expired[0] {
            WriteAction::Verdict(Err(f)) => assert_eq!(f.unknown, 1),
            other => panic!("{other:?}"),
        }
        assert!(op.finished());
        assert_eq!(
            show(&op.replicated(&w[2], Ok(()))),
            "",
            "late replies are ignored"
        );
    }

    #[test]
    fn slow_first_owner_does_not_coordinate() {
        let w = walk();
        let health = Table::default().slow(&w[0], 20_000.0).slow(&w[1], 500.0);
        let mut op = WriteOp::new(&five(), 42, 3, 2, &health);
        assert_eq!(show(&op.start(SECOND)), "coordinate o2 500ms");
    }

    #[test]
    fn a_forwarded_write_is_one_call_for_the_router() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::down(&w[2]));
        assert_eq!(show(&op.start(SECOND)), "coordinate o0 500ms");
        let f = op
            .forwarding()
            .expect("a coordinate attempt is outstanding");
        let replicas: Vec<String> = f.replicas.iter().map(name).collect();
        assert_eq!(replicas, ["o1", "o3>o2"]);
        assert_eq!(f.spares, [w[4].clone()]);
        assert_eq!((f.needed, f.owners), (2, 3));
        // The coordinator replicated and counted: its verdict is the client's.
        assert_eq!(show(&op.forwarded_reply(&w[0], Ok(Ok(())), SECOND)), "ok");
        assert!(op.finished());
    }

    #[test]
    fn a_forwarded_coordinator_that_fails_is_retried_elsewhere() {
        let w = walk();
        let mut op = WriteOp::new(&five(), 42, 3, 2, &Table::default());
        op.start(SECOND);
        assert_eq!(
            show(&op.forwarded_reply(&w[0], Err("timeout".into()), SECOND)),
            "coordinate o1 500ms"
        );
        let f = op.forwarding().unwrap();
        let replicas: Vec<String> = f.replicas.iter().map(name).collect();
        assert_eq!(replicas, ["o2", "o3>o0"]);
    }

    #[test]
    fn the_coordinator_replicates_in_parallel_with_its_own_commit() {
        let w = walk();
        let mut router = WriteOp::new(&five(), 42, 3, 2, &Table::default());
        router.start(SECOND);
        let f = router.forwarding().unwrap();
        let me = Target {
            node: w[0].clone(),
            hint_for: None,
        };
        let mut op = WriteOp::forwarded(me, f);
        assert_eq!(show(&op.start_forwarded()), "replicate o1, replicate o2");
        assert_eq!(show(&op.replicated(&w[1], Ok(()))), "");
        // Its own commit is the second acknowledgement.
        assert_eq!(show(&op.coordinated(&w[0], Ok(()), SECOND)), "ok");
        assert!(!op.finished(), "o2 is still being replicated to");
        // A failed commit of its own is a failed slot, never a retry.
        let mut op = WriteOp::forwarded(
            Target {
                node: w[0].clone(),
                hint_for: None,
            },
            router.forwarding().unwrap(),
        );
        op.start_forwarded();
        assert_eq!(show(&op.coordinated(&w[0], Err("disk".into()), SECOND)), "");
        assert_eq!(show(&op.replicated(&w[1], Ok(()))), "");
        assert_eq!(
            show(&op.replicated(&w[2], Err("x".into()))),
            "replicate o3>o2"
        );
        assert_eq!(show(&op.replicated(&w[3], Ok(()))), "ok");
    }
}
