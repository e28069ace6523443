//! The Jepsen-style oracle: a history of operations as the client saw them,
//! and the check that runs on the healed, converged cluster.
//!
//! Every write carries a value no other write uses, and the set of values its
//! context had seen (`covers`: the siblings of the read it was based on). A
//! write ends `Ok` (acknowledged), `Failed` (definitely not applied: refused
//! before it did anything, or never sent) or `Unknown` (timed out, quorum
//! failed after reaching some replicas, connection lost mid-request).
//!
//! The rule, per key, on the final state:
//! - every `Ok` write's value is present, unless an `Ok` or `Unknown` write's
//!   context covered it (that write, if applied, superseded it legitimately;
//!   an unknown write may have been applied, so it is allowed to have done
//!   so);
//! - `Unknown` writes may be present or absent;
//! - `Failed` writes must be absent;
//! - no value appears that no write in the history issued.
//!
//! Keys of an `lww` bucket are registers, judged by their own rule: at most
//! one value is readable, and every `Ok` write is that value unless the
//! value it holds is an `Ok` or `Unknown` write that may have been stamped
//! after it, that is, one that did not end more than [`LWW_SLACK_MS`]
//! before this one began (timestamps are milliseconds of the coordinators'
//! clocks).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How an operation ended, as the client saw it; the simulation's checker
/// records the same three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely not applied.
    Failed,
    /// May or may not have been applied.
    Unknown,
}

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: String,
    /// Its value, unique across the history.
    pub value: Vec<u8>,
    /// Values the write's context had seen (and so supersedes if applied).
    pub covers: Vec<Vec<u8>>,
    /// How it ended.
    pub outcome: Outcome,
    /// For a write to an `lww` bucket: when the client sent it and when it
    /// saw the outcome (ms since the Unix epoch).
    pub span: Option<(u64, u64)>,
}

/// How far apart two register writes must be for the later to have to win:
/// write times are milliseconds, a coordinator may stamp a write a
/// millisecond above what it holds, and two writes in one millisecond are
/// ordered by the tie-break, not by the client's clock.
pub const LWW_SLACK_MS: u64 = 5;

/// Milliseconds since the Unix epoch, the clock register spans are kept in.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A concurrent record of everything the clients did.
#[derive(Debug, Default)]
pub struct History {
    writes: Mutex<Vec<Write>>,
    reads: Mutex<[u64; 3]>,
    faults: AtomicU64,
}

/// The counts every test prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Reads and writes issued by the workload.
    pub operations: u64,
    /// Operations that ended `Ok`.
    pub ok: u64,
    /// Operations that ended `Unknown`.
    pub unknown: u64,
    /// Operations that ended `Failed`.
    pub failed: u64,
    /// Faults the test injected.
    pub faults: u64,
}

/// The result of [`History::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Operation counts.
    pub counts: Counts,
    /// Acknowledged writes the check looked for.
    pub checked: u64,
    /// Acknowledged writes found neither present nor superseded: `(key, value)`.
    pub lost: Vec<(String, String)>,
    /// Writes that failed yet are present.
    pub failed_present: Vec<(String, String)>,
    /// Values present that no write issued.
    pub phantom: Vec<(String, String)>,
    /// Acknowledged writes absent because a later write superseded them.
    pub superseded: u64,
    /// Register keys read with more than one value.
    pub register_siblings: Vec<String>,
}

impl Verdict {
    /// Whether every rule held.
    pub fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.failed_present.is_empty()
            && self.phantom.is_empty()
            && self.register_siblings.is_empty()
    }

    /// One line with every count, printed by every test.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "operations {} ok {} unknown {} failed {} faults {} acknowledged-writes-checked {} superseded {} lost {} failed-present {} phantom {} register-siblings {}",
            c.operations,
            c.ok,
            c.unknown,
            c.failed,
            c.faults,
            self.checked,
            self.superseded,
            self.lost.len(),
            self.failed_present.len(),
            self.phantom.len(),
            self.register_siblings.len()
        )
    }

    /// Panics with the summary and the first offenders unless every rule held.
    #[track_caller]
    pub fn assert_holds(&self, seed: u64) {
        assert!(
            self.holds(),
            "oracle violated (seed {seed}): {}\nlost (first 10): {:?}\nfailed but present: {:?}\nphantom: {:?}\nregister keys with siblings: {:?}",
            self.summary(),
            &self.lost[..self.lost.len().min(10)],
            &self.failed_present[..self.failed_present.len().min(10)],
            &self.phantom[..self.phantom.len().min(10)],
            &self.register_siblings[..self.register_siblings.len().min(10)],
        );
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a write.
    pub fn write(&self, key: &str, value: &[u8], covers: Vec<Vec<u8>>, outcome: Outcome) {
        self.writes.lock().expect("history lock").push(Write {
            key: key.to_string(),
            value: value.to_vec(),
            covers,
            outcome,
            span: None,
        });
    }

    /// Records a write to an `lww` bucket: blind, sent at `started_ms`
    /// ([`now_ms`]), its outcome seen now.
    pub fn register_write(&self, key: &str, value: &[u8], started_ms: u64, outcome: Outcome) {
        self.writes.lock().expect("history lock").push(Write {
            key: key.to_string(),
            value: value.to_vec(),
            covers: Vec::new(),
            outcome,
            span: Some((started_ms, now_ms())),
        });
    }

    /// Records a read's outcome (reads only count; the final check is what
    /// judges the data).
    pub fn read(&self, outcome: Outcome) {
        let mut r = self.reads.lock().expect("history lock");
        r[outcome as usize] += 1;
    }

    /// Counts one injected fault.
    pub fn fault(&self) {
        self.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// A copy of every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().expect("history lock").clone()
    }

    /// Every key written.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .writes
            .lock()
            .expect("history lock")
            .iter()
            .map(|w| w.key.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        keys.sort();
        keys
    }

    /// Counts of operations so far.
    pub fn counts(&self) -> Counts {
        let writes = self.writes.lock().expect("history lock");
        let reads = *self.reads.lock().expect("history lock");
        let mut c = Counts {
            faults: self.faults(),
            ..Counts::default()
        };
        let mut add = |o: Outcome, n: u64| match o {
            Outcome::Ok => c.ok += n,
            Outcome::Failed => c.failed += n,
            Outcome::Unknown => c.unknown += n,
        };
        for w in writes.iter() {
            add(w.outcome, 1);
        }
        add(Outcome::Ok, reads[Outcome::Ok as usize]);
        add(Outcome::Failed, reads[Outcome::Failed as usize]);
        add(Outcome::Unknown, reads[Outcome::Unknown as usize]);
        c.operations = c.ok + c.failed + c.unknown;
        c
    }

    /// Acknowledged writes whose value is not in `present` for their key and
    /// that no applied-or-maybe-applied write superseded: what a final check
    /// would call lost, before retrying. Used to decide which keys to read
    /// again while waiting for convergence.
    pub fn missing(&self, present: &HashMap<String, HashSet<Vec<u8>>>) -> Vec<(String, Vec<u8>)> {
        let writes = self.writes.lock().expect("history lock");
        let covered = covered_values(&writes);
        writes
            .iter()
            .filter(|w| w.outcome == Outcome::Ok)
            .filter(|w| !covered.contains(&(w.key.as_str(), w.value.as_slice())))
            .filter(|w| !present.get(&w.key).is_some_and(|p| p.contains(&w.value)))
            .filter(|w| !(w.span.is_some() && outrun_by_final(&writes, w, present.get(&w.key))))
            .map(|w| (w.key.clone(), w.value.clone()))
            .collect()
    }

    /// Judges the final state: `present` maps every key of the history to
    /// the values readable for it (all siblings).
    pub fn check(&self, present: &HashMap<String, HashSet<Vec<u8>>>) -> Verdict {
        let writes = self.writes.lock().expect("history lock").clone();
        let covered = covered_values(&writes);
        let mut verdict = Verdict {
            counts: self.counts(),
            ..Verdict::default()
        };
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let empty = HashSet::new();
        let mut issued: BTreeMap<&str, HashSet<&[u8]>> = BTreeMap::new();
        for w in &writes {
            issued.entry(&w.key).or_default().insert(&w.value);
            let here = present.get(&w.key).unwrap_or(&empty);
            let is_present = here.contains(&w.value);
            match w.outcome {
                Outcome::Ok => {
                    verdict.checked += 1;
                    if !is_present {
                        let outrun =
                            w.span.is_some() && outrun_by_final(&writes, w, present.get(&w.key));
                        if outrun || covered.contains(&(w.key.as_str(), w.value.as_slice())) {
                            verdict.superseded += 1;
                        } else {
                            verdict.lost.push((w.key.clone(), text(&w.value)));
                        }
                    }
                }
                Outcome::Failed if is_present => {
                    verdict.failed_present.push((w.key.clone(), text(&w.value)));
                }
                _ => {}
            }
        }
        let registers: HashSet<&str> = writes
            .iter()
            .filter(|w| w.span.is_some())
            .map(|w| w.key.as_str())
            .collect();
        for (key, values) in present {
            if values.len() > 1 && registers.contains(key.as_str()) {
                verdict.register_siblings.push(key.clone());
            }
            let known = issued.get(key.as_str());
            for v in values {
                if !known.is_some_and(|k| k.contains(v.as_slice())) {
                    verdict.phantom.push((key.clone(), text(v)));
                }
            }
        }
        verdict
    }
}

/// Whether register write `w`, absent, lost legitimately to the value the
/// key holds: a write that may have been applied (`Ok` or `Unknown`) and
/// did not end more than [`LWW_SLACK_MS`] before `w` began, so it may have
/// been stamped after `w`.
fn outrun_by_final(writes: &[Write], w: &Write, present: Option<&HashSet<Vec<u8>>>) -> bool {
    let (started, _) = w.span.unwrap_or_default();
    let Some(present) = present else {
        return false;
    };
    writes.iter().any(|f| {
        f.key == w.key
            && f.value != w.value
            && f.outcome != Outcome::Failed
            && present.contains(&f.value)
            && f.span
                .is_some_and(|(_, ended)| ended + LWW_SLACK_MS >= started)
    })
}

/// `(key, value)` pairs that some write which may have been applied (`Ok`
/// or `Unknown`) had in its context.
fn covered_values(writes: &[Write]) -> HashSet<(&str, &[u8])> {
    writes
        .iter()
        .filter(|w| w.outcome != Outcome::Failed)
        .flat_map(|w| w.covers.iter().map(move |c| (w.key.as_str(), c.as_slice())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, &[&str])]) -> HashMap<String, HashSet<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, vs)| {
                (
                    k.to_string(),
                    vs.iter().map(|v| v.as_bytes().to_vec()).collect(),
                )
            })
            .collect()
    }

    fn w(h: &History, key: &str, value: &str, covers: &[&str], outcome: Outcome) {
        h.write(
            key,
            value.as_bytes(),
            covers.iter().map(|c| c.as_bytes().to_vec()).collect(),
            outcome,
        );
    }

    /// One case: the history, the final state, and the expected
    /// (lost, failed-present, phantom, superseded) counts.
    #[track_caller]
    fn check(
        build: impl Fn(&History),
        final_state: &[(&str, &[&str])],
        expect: (usize, usize, usize, u64),
    ) {
        let h = History::new();
        build(&h);
        let v = h.check(&state(final_state));
        assert_eq!(
            (
                v.lost.len(),
                v.failed_present.len(),
                v.phantom.len(),
                v.superseded
            ),
            expect,
            "{}",
            v.summary()
        );
    }

    #[test]
    fn acknowledged_write_present_holds() {
        check(
            |h| w(h, "k", "a", &[], Outcome::Ok),
            &[("k", &["a"])],
            (0, 0, 0, 0),
        );
    }

    #[test]
    fn acknowledged_write_absent_is_lost() {
        check(
            |h| w(h, "k", "a", &[], Outcome::Ok),
            &[("k", &[])],
            (1, 0, 0, 0),
        );
        check(|h| w(h, "k", "a", &[], Outcome::Ok), &[], (1, 0, 0, 0));
    }

    #[test]
    fn sibling_counts_as_present() {
        check(
            |h| {
                w(h, "k", "a", &[], Outcome::Ok);
                w(h, "k", "b", &[], Outcome::Ok);
            },
            &[("k", &["a", "b"])],
            (0, 0, 0, 0),
        );
    }

    #[test]
    fn superseded_by_ok_or_unknown_context_is_excused() {
        for by in [Outcome::Ok, Outcome::Unknown] {
            check(
                |h| {
                    w(h, "k", "a", &[], Outcome::Ok);
                    w(h, "k", "b", &["a"], by);
                },
                &[("k", &["b"])],
                (0, 0, 0, 1),
            );
        }
    }

    #[test]
    fn a_failed_write_supersedes_nothing() {
        check(
            |h| {
                w(h, "k", "a", &[], Outcome::Ok);
                w(h, "k", "b", &["a"], Outcome::Failed);
            },
            &[("k", &[])],
            (1, 0, 0, 0),
        );
    }

    #[test]
    fn a_context_on_another_key_supersedes_nothing() {
        check(
            |h| {
                w(h, "k", "a", &[], Outcome::Ok);
                w(h, "j", "b", &["a"], Outcome::Ok);
            },
            &[("k", &[]), ("j", &["b"])],
            (1, 0, 0, 0),
        );
    }

    #[test]
    fn unknown_may_be_either() {
        check(
            |h| w(h, "k", "a", &[], Outcome::Unknown),
            &[("k", &[])],
            (0, 0, 0, 0),
        );
        check(
            |h| w(h, "k", "a", &[], Outcome::Unknown),
            &[("k", &["a"])],
            (0, 0, 0, 0),
        );
    }

    #[test]
    fn failed_must_be_absent_and_phantoms_are_caught() {
        check(
            |h| w(h, "k", "a", &[], Outcome::Failed),
            &[("k", &["a"])],
            (0, 1, 0, 0),
        );
        check(
            |h| w(h, "k", "a", &[], Outcome::Ok),
            &[("k", &["a", "zz"])],
            (0, 0, 1, 0),
        );
    }

    #[test]
    fn a_register_keeps_the_last_write_and_excuses_only_overlapping_ones() {
        let h = History::new();
        let push = |value: &str, span: (u64, u64), outcome| {
            h.writes.lock().unwrap().push(Write {
                key: "r".into(),
                value: value.as_bytes().to_vec(),
                covers: Vec::new(),
                outcome,
                span: Some(span),
            })
        };
        push("early", (0, 10), Outcome::Ok);
        push("overlap-a", (100, 120), Outcome::Ok);
        push("overlap-b", (110, 130), Outcome::Ok);
        let holds = |final_value: &str| h.check(&state(&[("r", &[final_value])])).holds();
        assert!(holds("overlap-a"));
        assert!(holds("overlap-b"));
        // The last writes overlapped each other, but not the first one.
        assert!(!holds("early"));
        let both = h.check(&state(&[("r", &["overlap-a", "overlap-b"])]));
        assert_eq!(both.register_siblings, vec!["r".to_string()]);
        // A later write that failed excuses nothing.
        push("late-failed", (1_000, 1_010), Outcome::Failed);
        assert!(holds("overlap-b"));
        assert!(!holds("late-failed"));
    }

    #[test]
    fn counts_add_up() {
        let h = History::new();
        w(&h, "k", "a", &[], Outcome::Ok);
        w(&h, "k", "b", &[], Outcome::Unknown);
        h.read(Outcome::Ok);
        h.read(Outcome::Failed);
        h.fault();
        let c = h.counts();
        assert_eq!(
            (c.operations, c.ok, c.unknown, c.failed, c.faults),
            (4, 2, 1, 1, 1)
        );
        assert_eq!(h.missing(&state(&[("k", &["b"])])).len(), 1);
    }
}
