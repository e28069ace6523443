//! The forgery defences must never refuse an honest member: random schedules of
//! joins, crashes, restarts, weight changes and departures under message loss
//! still converge, with no refusal reported anywhere.

mod sim;

use proptest::prelude::*;
use sim::{Sim, SimConfig};

#[derive(Debug, Clone)]
enum Op {
    Join,
    Crash(usize),
    Restart(usize),
    QuickRestart(usize),
    Reweigh(usize, u32),
    Leave(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Join),
        (0..64usize).prop_map(Op::Crash),
        (0..64usize).prop_map(Op::Restart),
        (0..64usize).prop_map(Op::QuickRestart),
        (0..64usize, 1..100u32).prop_map(|(i, w)| Op::Reweigh(i, w)),
        (0..64usize).prop_map(Op::Leave),
    ]
}

/// Applies `op` to the member picked by `pick` among those it makes sense for;
/// seeds (the first three) are never taken down, so the cluster stays joinable.
fn apply(sim: &mut Sim, op: &Op) {
    let pick = |i: usize, pool: Vec<usize>| -> Option<usize> {
        let pool: Vec<usize> = pool.into_iter().filter(|&j| j >= 3).collect();
        (!pool.is_empty()).then(|| pool[i % pool.len()])
    };
    let crashed: Vec<usize> = (0..sim.nodes.len())
        .filter(|&i| sim.nodes[i].gossip.is_none() && !sim.nodes[i].departed)
        .collect();
    match *op {
        Op::Join => {
            sim.add_node();
        }
        Op::Crash(i) => {
            if let Some(j) = pick(i, sim.running()) {
                sim.crash(j);
            }
        }
        Op::Restart(i) => {
            if let Some(j) = pick(i, crashed) {
                sim.restart(j);
            }
        }
        Op::QuickRestart(i) => {
            if let Some(j) = pick(i, sim.running()) {
                sim.crash(j);
                sim.restart(j);
            }
        }
        Op::Reweigh(i, w) => {
            if let Some(j) = pick(i, sim.running()) {
                sim.member_mut(j).set_weight(w);
            }
        }
        Op::Leave(i) => {
            if let Some(j) = pick(i, sim.running()) {
                sim.member_mut(j).leave();
                sim.run(3);
                sim.nodes[j].departed = true;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_honest_schedules_converge_without_refusals(
        n in 4..14usize,
        seed in any::<u64>(),
        loss in 0.0..0.15f64,
        ops in proptest::collection::vec((arb_op(), 1..6u64), 0..10),
    ) {
        let mut cfg = SimConfig::new(n);
        cfg.loss = loss;
        let mut sim = Sim::new(cfg, seed);
        prop_assert!(sim.run_until(80, Sim::converged).is_some(), "no initial convergence");
        for (op, gap) in &ops {
            apply(&mut sim, op);
            sim.run(*gap);
        }
        // `converged` also requires that no crashed or departed member is seen up.
        let done = sim.run_until(80, Sim::converged);
        prop_assert!(done.is_some(), "no convergence after {:?}", ops);
        prop_assert_eq!(sim.stats.refusals, 0);
        for i in sim.running() {
            prop_assert_eq!(sim.member(i).refusals(), 0);
        }
    }
}
