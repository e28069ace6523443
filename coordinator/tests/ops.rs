//! Properties of the request state machines under any order of replies,
//! any outcomes, any liveness and an expiry at any moment.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use shoal_coordinator::{
    Fanout, Health, ReadAction, ReadOp, WriteAction, WriteOp, MAX_COORDINATOR_ATTEMPTS,
};
use shoal_ring::view::{RingView, ViewMember};
use shoal_ring::RingConfig;
use shoal_vclock::{Content, Context, SiblingSet};

const MEMBERS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

struct World {
    down: BTreeSet<String>,
    latency: BTreeMap<String, f64>,
}

impl Health for World {
    fn is_live(&self, node: &str) -> bool {
        !self.down.contains(node)
    }
    fn latency_us(&self, node: &str) -> f64 {
        self.latency.get(node).copied().unwrap_or(0.0)
    }
}

fn view(members: usize) -> RingView {
    let m: Vec<ViewMember> = MEMBERS[..members]
        .iter()
        .map(|id| ViewMember::new(*id, 1))
        .collect();
    RingView::new(&m, RingConfig::default()).unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    members: usize,
    position: u64,
    need: usize,
    down: Vec<bool>,
    ok: Vec<bool>,
    latency: Vec<u32>,
    /// Which outstanding reply is delivered next (index modulo the count).
    picks: Vec<usize>,
    /// After how many deliveries the deadline passes (beyond picks: never).
    expire_after: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (3usize..=6).prop_flat_map(|members| {
        (
            Just(members),
            any::<u64>(),
            1usize..=3,
            proptest::collection::vec(prop::bool::weighted(0.2), members),
            proptest::collection::vec(prop::bool::weighted(0.75), members),
            proptest::collection::vec(0u32..20_000, members),
            proptest::collection::vec(any::<usize>(), 0..24),
            0usize..30,
        )
            .prop_map(
                |(members, position, need, down, ok, latency, picks, expire_after)| Case {
                    members,
                    position,
                    need,
                    down,
                    ok,
                    latency,
                    picks,
                    expire_after,
                },
            )
    })
}

fn world(c: &Case) -> World {
    World {
        down: (0..c.members)
            .filter(|i| c.down[*i])
            .map(|i| MEMBERS[i].to_string())
            .collect(),
        latency: (0..c.members)
            .map(|i| (MEMBERS[i].to_string(), f64::from(c.latency[i])))
            .collect(),
    }
}

fn succeeds(c: &Case, node: &str) -> bool {
    let i = MEMBERS.iter().position(|m| *m == node).unwrap();
    c.ok[i] && !c.down[i]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_write_gives_one_verdict_and_never_claims_unmet_quorum(c in case()) {
        let w = world(&c);
        let mut op = WriteOp::new(&view(c.members), c.position, 3, c.need, &w);
        let second = Duration::from_secs(1);
        let mut pending: Vec<(bool, String)> = Vec::new(); // (is coordinate, node)
        let mut contacted = BTreeSet::new();
        let mut stored = BTreeSet::new(); // slots are owners; count nodes that stored
        let mut verdicts = Vec::new();
        let mut attempts = 0;
        let mut handle = |actions: Vec<WriteAction>,
                          pending: &mut Vec<(bool, String)>,
                          verdicts: &mut Vec<Result<(), usize>>,
                          attempts: &mut usize| {
            for a in actions {
                match a {
                    WriteAction::Coordinate { target, budget } => {
                        prop_assert!(budget <= second);
                        prop_assert!(pending.iter().all(|(c, _)| !c), "one coordinator at a time");
                        prop_assert!(contacted.insert(target.node.clone()), "each node once");
                        *attempts += 1;
                        pending.push((true, target.node));
                    }
                    WriteAction::Replicate { target } => {
                        prop_assert!(contacted.insert(target.node.clone()), "each node once");
                        pending.push((false, target.node));
                    }
                    WriteAction::Verdict(v) => verdicts.push(v.map_err(|f| f.succeeded)),
                }
            }
            Ok(())
        };
        handle(op.start(second), &mut pending, &mut verdicts, &mut attempts)?;
        let mut delivered = 0;
        let mut picks = c.picks.iter();
        while !op.finished() {
            if delivered == c.expire_after || pending.is_empty() {
                handle(op.expire(), &mut pending, &mut verdicts, &mut attempts)?;
                pending.clear();
                break;
            }
            let i = picks.next().copied().unwrap_or(0) % pending.len();
            let (coordinate, node) = pending.remove(i);
            let ok = succeeds(&c, &node);
            if ok {
                stored.insert(node.clone());
            }
            let result = if ok { Ok(()) } else { Err("no".to_string()) };
            let actions = if coordinate {
                op.coordinated(&node, result, second)
            } else {
                op.replicated(&node, result)
            };
            handle(actions, &mut pending, &mut verdicts, &mut attempts)?;
            delivered += 1;
        }
        prop_assert!(op.finished());
        prop_assert_eq!(verdicts.len(), 1, "exactly one verdict");
        prop_assert!(attempts <= MAX_COORDINATOR_ATTEMPTS);
        if verdicts[0].is_ok() {
            prop_assert!(stored.len() >= c.need, "Ok with {} stored of {}", stored.len(), c.need);
        }
    }

    #[test]
    fn a_read_gives_one_verdict_from_r_answers_and_repairs_only_answerers(c in case()) {
        let w = world(&c);
        let mut op = ReadOp::new(&view(c.members), c.position, 3, c.need, Fanout::Quorum, &w);
        let mut pending: Vec<String> = Vec::new();
        let mut asked = BTreeSet::new();
        let mut answered = BTreeSet::new();
        let mut verdicts = 0;
        let mut ok_verdict = false;
        let mut handle = |actions: Vec<ReadAction>, pending: &mut Vec<String>, answered: &BTreeSet<String>| {
            for a in actions {
                match a {
                    ReadAction::Read { node } => {
                        prop_assert!(asked.insert(node.clone()), "each node once");
                        pending.push(node);
                    }
                    ReadAction::Timer { .. } => {}
                    ReadAction::Verdict(v) => {
                        verdicts += 1;
                        if v.is_ok() {
                            ok_verdict = true;
                            prop_assert!(answered.len() >= c.need);
                        }
                    }
                    ReadAction::Repair { target, .. } => {
                        prop_assert!(answered.contains(&target.node), "repairs go to answerers");
                    }
                }
            }
            Ok(())
        };
        handle(op.start(), &mut pending, &answered)?;
        let mut delivered = 0;
        let mut picks = c.picks.iter();
        let mut value = SiblingSet::new();
        value.update(&Context::empty(), "a", Content::value(b"v".to_vec(), "text/plain"), 1).unwrap();
        while !op.finished() {
            if delivered == c.expire_after {
                handle(op.expire(), &mut pending, &answered)?;
                break;
            }
            let pick = picks.next().copied().unwrap_or(0);
            if pending.is_empty() || pick % 5 == 4 {
                let speculated = op.speculate();
                let before = pending.len();
                handle(speculated, &mut pending, &answered)?;
                if pending.len() == before && pending.is_empty() {
                    handle(op.expire(), &mut pending, &answered)?;
                    break;
                }
                delivered += 1;
                continue;
            }
            let node = pending.remove(pick % pending.len());
            let result = if succeeds(&c, &node) {
                answered.insert(node.clone());
                // Some replicas hold the value, some nothing: repairs follow.
                Ok(if pick % 2 == 0 { Some(value.clone()) } else { None })
            } else {
                Err("no".to_string())
            };
            let actions = op.answered(&node, result);
            handle(actions, &mut pending, &answered)?;
            delivered += 1;
        }
        prop_assert!(op.finished());
        prop_assert_eq!(verdicts, 1, "exactly one verdict");
        let _ = ok_verdict;
    }
}
