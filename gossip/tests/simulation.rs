//! Cluster properties, checked in the deterministic simulator. Each test prints
//! its seed; `GOSSIP_SEED=<n> cargo test -p shoal-gossip --test simulation`
//! replays a failure.

mod sim;

use std::time::Duration;

use shoal_gossip::{Config, Detector, Event, Status};
use sim::{seed_from_env, Sim, SimConfig};

/// Default detection period in rounds (`down_after` of the default config).
const DOWN_AFTER: u64 = 10;

fn converged_cluster(cfg: SimConfig, seed: u64) -> Sim {
    let mut sim = Sim::new(cfg, seed);
    let rounds = sim.run_until(60, Sim::converged);
    assert!(
        rounds.is_some(),
        "no convergence from scratch (seed {seed})"
    );
    sim
}

#[test]
fn members_converge_from_seeds() {
    let seed = seed_from_env(1);
    let mut sim = Sim::new(SimConfig::new(30), seed);
    let rounds = sim.run_until(40, Sim::converged);
    assert!(rounds.is_some(), "seed {seed}");
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
    for i in sim.running() {
        assert_eq!(
            sim.member(i).live_storage_members().len(),
            30,
            "seed {seed}"
        );
    }
}

#[test]
fn converges_under_loss_and_delay() {
    let seed = seed_from_env(2);
    let mut cfg = SimConfig::new(30);
    cfg.loss = 0.2;
    cfg.max_delay = 2;
    let mut sim = Sim::new(cfg, seed);
    assert!(sim.run_until(80, Sim::converged).is_some(), "seed {seed}");
}

#[test]
fn new_member_is_known_to_all_in_logarithmic_rounds() {
    let seed = seed_from_env(3);
    let mut sim = converged_cluster(SimConfig::new(64), seed);
    let j = sim.add_node();
    // 2 * log2(65) + 4 ~ 16.
    let rounds = sim.run_until(16, |s| s.all_know(j));
    assert!(rounds.is_some(), "seed {seed}");
    assert!(sim.events[0]
        .iter()
        .any(|e| matches!(e, Event::Joined(m) if m.id.as_str() == "node-64")));
}

#[test]
fn crashed_member_is_marked_down_by_all_within_the_detection_period() {
    let seed = seed_from_env(4);
    let mut sim = converged_cluster(SimConfig::new(30), seed);
    sim.crash(7);
    let rounds = sim.run_until(DOWN_AFTER + 6, |s| s.all_see(7, Status::Down));
    assert!(rounds.is_some(), "seed {seed}");
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
    // Still on the ring (a down storage member keeps its ranges), not live.
    let view = sim.member(0);
    assert!(view
        .ring_members()
        .iter()
        .any(|m| m.id.as_str() == "node-7"));
    assert!(!view
        .live_storage_members()
        .iter()
        .any(|m| m.id.as_str() == "node-7"));
    assert!(!view.is_alive("node-7"));
}

#[test]
fn restarted_member_replaces_its_old_entry() {
    let seed = seed_from_env(5);
    let mut sim = converged_cluster(SimConfig::new(20), seed);
    sim.crash(3);
    assert!(
        sim.run_until(DOWN_AFTER + 6, |s| s.all_see(3, Status::Down))
            .is_some(),
        "seed {seed}"
    );
    sim.restart(3);
    assert!(sim.run_until(15, Sim::converged).is_some(), "seed {seed}");
    assert_eq!(
        sim.member(0).member("node-3").map(|m| m.incarnation),
        Some(2)
    );
    let events = &sim.events[0];
    assert!(
        events.iter().any(|e| *e
            == Event::Up {
                id: "node-3".into()
            }),
        "seed {seed}"
    );
    assert!(events.iter().any(|e| *e
        == Event::Restarted {
            id: "node-3".into(),
            incarnation: 2
        }));

    // A restart faster than the detector: no down in between, the entry is
    // simply replaced.
    sim.crash(4);
    sim.step();
    sim.restart(4);
    assert!(sim.run_until(15, Sim::converged).is_some(), "seed {seed}");
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
}

#[test]
fn no_false_downs_at_ten_percent_loss() {
    let seed = seed_from_env(6);
    let mut cfg = SimConfig::new(40);
    cfg.loss = 0.1;
    cfg.max_delay = 1;
    let mut sim = converged_cluster(cfg, seed);
    sim.discard_events();
    sim.run(1_500);
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
    assert!(sim.converged(), "seed {seed}");
}

#[test]
fn partition_heals_into_one_view() {
    let seed = seed_from_env(7);
    let mut sim = converged_cluster(SimConfig::new(20), seed);
    let groups: Vec<u32> = (0..20).map(|i| u32::from(i >= 10)).collect();
    sim.partition(groups);
    let split = sim.run_until(DOWN_AFTER + 10, |s| {
        s.all_see(15, Status::Down) && s.all_see(2, Status::Down)
    });
    assert!(split.is_none() || sim.member(0).status("node-15") == Some(Status::Down));
    sim.run(30);
    assert_eq!(
        sim.member(0).status("node-15"),
        Some(Status::Down),
        "seed {seed}"
    );
    assert_eq!(
        sim.member(15).status("node-0"),
        Some(Status::Down),
        "seed {seed}"
    );
    assert_eq!(
        sim.member(0).status("node-5"),
        Some(Status::Alive),
        "seed {seed}"
    );
    sim.heal();
    let healed = sim.run_until(40, Sim::converged);
    assert!(healed.is_some(), "partition did not heal (seed {seed})");
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
}

#[test]
fn graceful_leave_spreads_and_is_forgotten_without_coming_back() {
    let seed = seed_from_env(8);
    let mut cfg = SimConfig::new(20);
    cfg.gossip.tombstone_ttl = Duration::from_secs(40);
    cfg.gossip.quarantine = Duration::from_secs(400);
    let mut sim = converged_cluster(cfg, seed);

    sim.member_mut(5).start_leaving();
    assert!(
        sim.run_until(15, |s| s.all_see(5, Status::Leaving))
            .is_some(),
        "seed {seed}"
    );
    let view = sim.member(0);
    assert!(view
        .live_storage_members()
        .iter()
        .any(|m| m.id.as_str() == "node-5"));
    assert!(sim.events[0].contains(&Event::Leaving {
        id: "node-5".into()
    }));

    sim.member_mut(5).leave();
    let acked = sim.run_until(10, |s| s.member(5).leave_acknowledged_by() >= 3);
    assert!(acked.is_some(), "seed {seed}");
    sim.nodes[5].departed = true;
    assert!(
        sim.run_until(15, |s| s.all_see(5, Status::Left)).is_some(),
        "seed {seed}"
    );
    assert!(sim
        .member(0)
        .ring_members()
        .iter()
        .all(|m| m.id.as_str() != "node-5"));
    assert!(sim.events[0].contains(&Event::Left {
        id: "node-5".into()
    }));

    assert!(
        sim.run_until(60, |s| s.all_forgot(5)).is_some(),
        "seed {seed}"
    );
    // Forgotten for good: quarantine refuses any stale copy still in flight.
    sim.run(100);
    assert!(sim.all_forgot(5), "left member came back (seed {seed})");
    assert!(sim.events[0].contains(&Event::Forgotten {
        id: "node-5".into()
    }));
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
}

#[test]
fn stale_gossip_from_a_lagging_member_does_not_revive_a_forgotten_one() {
    let seed = seed_from_env(9);
    let mut cfg = SimConfig::new(12);
    cfg.gossip.tombstone_ttl = Duration::from_secs(30);
    cfg.gossip.quarantine = Duration::from_secs(1_000);
    cfg.gossip.forget_down_after = Duration::from_secs(300);
    let mut sim = converged_cluster(cfg, seed);
    // node-11 is cut off, node-4 leaves while it cannot hear.
    let groups: Vec<u32> = (0..12).map(|i| u32::from(i == 11)).collect();
    sim.partition(groups);
    sim.member_mut(4).leave();
    sim.run(5);
    sim.nodes[4].departed = true;
    let others_forgot = sim.run_until(80, |s| {
        s.running()
            .into_iter()
            .filter(|&i| i != 11)
            .all(|i| s.member(i).member("node-4").is_none())
    });
    assert!(others_forgot.is_some(), "seed {seed}");
    assert!(sim.member(11).member("node-4").is_some());
    sim.heal();
    sim.run(50);
    for i in sim.running().into_iter().filter(|&i| i != 11) {
        assert!(
            sim.member(i).member("node-4").is_none(),
            "revived at node-{i} (seed {seed})"
        );
    }
    assert!(sim.converged(), "seed {seed}");
}

#[test]
fn weight_change_is_reported_everywhere() {
    let seed = seed_from_env(10);
    let mut sim = converged_cluster(SimConfig::new(15), seed);
    sim.member_mut(2).set_weight(4);
    let spread = sim.run_until(12, |s| {
        s.running()
            .into_iter()
            .all(|i| s.member(i).member("node-2").map(|m| m.weight) == Some(4))
    });
    assert!(spread.is_some(), "seed {seed}");
    for i in sim.running().into_iter().filter(|&i| i != 2) {
        let changed = sim.events[i].iter().any(|e| {
            matches!(e, Event::Changed { before, after }
                if after.id.as_str() == "node-2" && before.weight == 1 && after.weight == 4)
        });
        assert!(changed, "node-{i} saw no change (seed {seed})");
    }
}

#[test]
fn phi_accrual_detects_crashes_without_false_downs() {
    let seed = seed_from_env(11);
    let mut cfg = SimConfig::new(25);
    cfg.loss = 0.1;
    cfg.gossip.detector = Detector::PhiAccrual {
        suspect_phi: 4.0,
        down_phi: 8.0,
        window: 100,
    };
    let mut sim = converged_cluster(cfg, seed);
    sim.run(200);
    sim.crash(3);
    // Down after about 18 mean intervals of silence.
    assert!(
        sim.run_until(30, |s| s.all_see(3, Status::Down)).is_some(),
        "seed {seed}"
    );
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
}

#[test]
fn small_message_cap_still_converges_and_is_respected() {
    let seed = seed_from_env(12);
    let mut cfg = SimConfig::new(60);
    cfg.measure_bytes = true;
    // About 25 digest entries per message: digests are windows, not the list.
    cfg.gossip = Config {
        max_message_bytes: 1_200,
        detector: Detector::Timeout {
            suspect_after: Duration::from_secs(30),
            down_after: Duration::from_secs(60),
        },
        ..Config::default()
    };
    let mut sim = Sim::new(cfg, seed);
    assert!(sim.run_until(150, Sim::converged).is_some(), "seed {seed}");
    assert!(sim.stats.largest_message <= 1_200);
    sim.run(100);
    assert_eq!(sim.stats.false_downs, 0, "seed {seed}");
}
