//! Counting answers toward a quorum.
//!
//! A request is sent to every target at once and succeeds as soon as the
//! required number answered; it fails as soon as that can no longer happen,
//! without waiting for the slowest replica. A replica that has not answered
//! when the caller's deadline passes is *unknown*, not failed: the write may
//! still have reached it (Dynamo gives no atomicity across replicas).

use std::collections::BTreeMap;

/// Where a quorum stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More answers are needed and could still come.
    Pending,
    /// Enough replicas answered.
    Reached,
    /// Too many replicas failed for the quorum to be reached.
    Failed(QuorumFailure),
}

/// Why a quorum was not reached, with the counts the client sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{succeeded} of {needed} required replicas answered ({failed} failed, {unknown} did not answer in time, {total} contacted)"
)]
pub struct QuorumFailure {
    /// Replicas that answered successfully.
    pub succeeded: usize,
    /// Replicas required (W or R).
    pub needed: usize,
    /// Replicas that answered with an error or could not be reached.
    pub failed: usize,
    /// Replicas that had not answered by the deadline.
    pub unknown: usize,
    /// Replicas contacted.
    pub total: usize,
}

/// Answers for one request, keyed by replica.
#[derive(Clone, Debug)]
pub struct Tally<T> {
    needed: usize,
    total: usize,
    answers: BTreeMap<String, T>,
    failures: BTreeMap<String, String>,
}

impl<T> Tally<T> {
    /// A tally that needs `needed` successes out of `total` contacted replicas.
    pub fn new(needed: usize, total: usize) -> Self {
        Self {
            needed,
            total,
            answers: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// Records a successful answer. A second answer from the same replica
    /// replaces the first and does not count twice.
    pub fn succeed(&mut self, node: impl Into<String>, answer: T) -> Progress {
        let node = node.into();
        self.failures.remove(&node);
        self.answers.insert(node, answer);
        self.progress()
    }

    /// Records a failure (error answer or unreachable replica) with its cause.
    pub fn fail(&mut self, node: impl Into<String>, cause: impl Into<String>) -> Progress {
        let node = node.into();
        if !self.answers.contains_key(&node) {
            self.failures.insert(node, cause.into());
        }
        self.progress()
    }

    /// Successes required.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Replicas counted in the denominator.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The current state.
    pub fn progress(&self) -> Progress {
        if self.needed == 0 || self.answers.len() >= self.needed {
            Progress::Reached
        } else if self.answers.len() + self.outstanding() < self.needed {
            Progress::Failed(self.failure())
        } else {
            Progress::Pending
        }
    }

    /// The failure to report when the deadline passes while still pending.
    pub fn failure(&self) -> QuorumFailure {
        QuorumFailure {
            succeeded: self.answers.len(),
            needed: self.needed,
            failed: self.failures.len(),
            unknown: self.outstanding(),
            total: self.total,
        }
    }

    /// Replicas that have not answered either way.
    pub fn outstanding(&self) -> usize {
        self.total
            .saturating_sub(self.answers.len() + self.failures.len())
    }

    /// The successful answers so far.
    pub fn answers(&self) -> &BTreeMap<String, T> {
        &self.answers
    }

    /// The failures so far, with their causes.
    pub fn failures(&self) -> &BTreeMap<String, String> {
        &self.failures
    }

    /// Consumes the tally, returning the answers.
    pub fn into_answers(self) -> BTreeMap<String, T> {
        self.answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays events ("+a" success, "-a" failure) and checks the progress
    /// after each, written as P (pending), R (reached) or F (failed).
    #[track_caller]
    fn check(needed: usize, total: usize, events: &str, expected: &str) {
        let mut t = Tally::new(needed, total);
        let got: Vec<&str> = events
            .split_whitespace()
            .map(|e| {
                let p = match e.split_at(1) {
                    ("+", node) => t.succeed(node, ()),
                    ("-", node) => t.fail(node, "boom"),
                    _ => panic!("bad event {e}"),
                };
                match p {
                    Progress::Pending => "P",
                    Progress::Reached => "R",
                    Progress::Failed(_) => "F",
                }
            })
            .collect();
        assert_eq!(got.join(" "), expected, "events {events}");
    }

    #[test]
    fn quorum_progress() {
        // W=2 of 3, all up
        check(2, 3, "+a +b", "P R");
        // one down: still reaches
        check(2, 3, "-a +b +c", "P P R");
        // two down: fails as soon as it is impossible, without waiting for c
        check(2, 3, "-a -b", "P F");
        // W=3 of 3 with one failure fails at once
        check(3, 3, "+a -b", "P F");
        // duplicate answers do not count twice
        check(2, 3, "+a +a", "P P");
        // a late success after a failure from the same node replaces it
        check(2, 2, "-a +a +b", "F P R");
        // fewer targets than needed (n > live): fails once all answered
        check(2, 1, "+a", "F");
        // R=1
        check(1, 3, "-a +b", "P R");
    }

    #[test]
    fn failure_counts_unknown_replicas() {
        let mut t: Tally<()> = Tally::new(2, 3);
        t.succeed("a", ());
        let f = t.failure();
        assert_eq!(
            f,
            QuorumFailure {
                succeeded: 1,
                needed: 2,
                failed: 0,
                unknown: 2,
                total: 3
            }
        );
        assert_eq!(
            f.to_string(),
            "1 of 2 required replicas answered (0 failed, 2 did not answer in time, 3 contacted)"
        );
    }
}
