//! Deterministic simulation of a whole Shoal cluster (issue 12): the real
//! `shoal-node` and `shoal-gateway` code as turmoil hosts (5 storage nodes,
//! 1-2 gateways, several HTTP clients, and a sixth node that may join), all
//! driven from one seed.
//!
//! The seams: sockets are turmoil's TCP ([`env::SimNet`]); each process's
//! wall clock is turmoil's simulated time plus a skew the fault schedule can
//! change ([`env::SimClock`]); timers are tokio's, which turmoil pauses and
//! advances; the gossip RNG is seeded from that clock, so from the seed
//! (the simulated epoch is drawn from it); files are turmoil's simulated
//! disk behind the storage engine's `Fs` seam ([`env::SimFs`]), where a
//! crash loses every write not yet fsynced and every directory entry whose
//! directory was not synced. The engine runs without threads
//! (`Background::Inline`) and its calls run inline on the host's task
//! ([`shoal_node::env::Blocking::Inline`]), so no thread timing leaks into
//! the schedule. Half the seeds run the nodes with `sync = "never"`: a crash
//! then really loses acknowledged writes on that node, and the replicas,
//! hinted handoff and anti-entropy must make up for it.
//!
//! Determinism needs more than seeded randomness: every `tokio::select!` in
//! the services is `biased` (tokio picks among ready branches at random),
//! and a host that crashes or is powered off after a decommission has its
//! links cut while turmoil drops its tasks, because tokio drops them in
//! task-id order (a process-wide counter), and their sockets' FINs would
//! otherwise leave in that order.
//!
//! A run ([`run`]): start the cluster and wait for one gossip view; start the
//! clients ([`workload`]) while the driver applies the fault schedule
//! ([`faults`]) between simulation steps; heal everything; then the checker
//! ([`check`]) waits, bounded in simulated time, for one gossip view, for
//! every key's owners to agree, and for every ring range's owners to hold
//! equal Merkle hashes, and checks the oracle of `TESTING.md`. The trace (every
//! operation and fault, stamped with simulated time) is hashed: the same seed
//! must give the same hash.

pub mod check;
pub mod env;
pub mod faults;
pub mod workload;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_node::config::{Config, SyncMode};

use check::{CheckPlan, Converged, Stores, View, Views, VIEW_PERIOD};
use env::{sim_env, SimClock, SimFs};
use faults::{Action, FaultCounts};
use workload::{ClientPlan, History, SharedHistory};

/// Storage nodes in every run.
pub const NODES: usize = 5;
/// Port of every member's RPC listener.
const RPC_PORT: u16 = 7000;
/// Port of every gateway's HTTP listener.
const HTTP_PORT: u16 = 8080;
/// Bound on the start-up phase (one gossip view before clients start).
const STARTUP_BOUND: Duration = Duration::from_secs(30);
/// Hard bound on a whole run in simulated time (turmoil fails past it).
const SIM_BOUND: Duration = Duration::from_secs(600);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed everything derives from.
    pub seed: u64,
    /// Inject the fault schedule (false: a clean run, where stale register
    /// reads are violations).
    pub faults: bool,
    /// Clients.
    pub clients: usize,
    /// Operations per client.
    pub ops_per_client: usize,
}

impl Options {
    /// The standard shape for `seed`: 1 or 2 gateways and 3 to 5 clients,
    /// drawn from the seed.
    pub fn for_seed(seed: u64, faults: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5348_4f41_4c00_0000);
        Self {
            seed,
            faults,
            clients: rng.gen_range(3..=5),
            ops_per_client: 40,
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Whether faults were injected.
    pub faults_enabled: bool,
    /// Gateways in the run.
    pub gateways: usize,
    /// FNV-1a of the trace without its timestamps: the operations, faults and
    /// outcomes in order (what the determinism check compares).
    pub trace_hash: u64,
    /// FNV-1a of the whole trace, simulated timestamps and convergence times
    /// included (stricter: equal only if every event fell on the same
    /// simulated millisecond).
    pub timed_hash: u64,
    /// Trace lines (operations and faults in simulated order).
    pub trace_len: usize,
    /// The trace itself, for comparing two runs of a seed line by line.
    pub trace: Vec<String>,
    /// Client operations (reads and writes).
    pub ops: u64,
    /// Writes acknowledged / definitely failed / unknown.
    pub ok: u64,
    /// See `ok`.
    pub failed: u64,
    /// See `ok`.
    pub unknown: u64,
    /// Reads that got no answer or no quorum.
    pub failed_reads: u64,
    /// Register reads that answered, and how many were stale.
    pub register_reads: u64,
    /// See `register_reads`.
    pub stale_reads: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Acknowledged writes checked at the end, and how many were lost.
    pub acked_checked: u64,
    /// See `acked_checked` (must be 0).
    pub lost: u64,
    /// Tombstoned keys purged by the GC and keys whose expired values were
    /// purged, over the nodes running at the end.
    pub purged: (u64, u64),
    /// Simulated ms from the heal to one gossip view.
    pub gossip_converge_ms: Option<u64>,
    /// Simulated ms from the heal to agreeing replicas.
    pub data_converge_ms: Option<u64>,
    /// Simulated ms from the heal to equal Merkle hashes on every range's
    /// owners.
    pub merkle_converge_ms: Option<u64>,
    /// Ring ranges whose owners' Merkle hashes were compared.
    pub merkle_ranges: u64,
    /// Simulated time of the whole run.
    pub sim_ms: u64,
    /// The nodes' storage sync mode (drawn from the seed).
    pub sync: String,
    /// Wall-clock time of the whole run.
    pub wall: Duration,
    /// Broken invariants and simulation errors; empty when the run passed.
    pub violations: Vec<String>,
}

impl Report {
    /// No violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line for logs.
    pub fn summary(&self) -> String {
        format!(
            "seed {} ({}, {} gw, sync {}): trace {:016x} (timed {:016x}), {} ops, writes ok {} / failed {} / unknown {}, \
             failed reads {}, stale reads {}/{}, faults [{}], acked checked {}, lost {}, \
             purged tombstones {} expired {}, \
             converged gossip {:?} ms data {:?} ms merkle {:?} ms ({} ranges), sim {} ms, wall {:?}",
            self.seed,
            if self.faults_enabled {
                "faults"
            } else {
                "clean"
            },
            self.gateways,
            self.sync,
            self.trace_hash,
            self.timed_hash,
            self.ops,
            self.ok,
            self.failed,
            self.unknown,
            self.failed_reads,
            self.stale_reads,
            self.register_reads,
            self.faults,
            self.acked_checked,
            self.lost,
            self.purged.0,
            self.purged.1,
            self.gossip_converge_ms,
            self.data_converge_ms,
            self.merkle_converge_ms,
            self.merkle_ranges,
            self.sim_ms,
            self.wall
        )
    }
}

/// FNV-1a of the lines, each ended by a newline: stable across runs and
/// platforms (std's hashers are randomly keyed); the node's own FNV-1a.
pub fn fnv1a(lines: &[String]) -> u64 {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    shoal_node::member::fnv1a(&text)
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The simulated cluster's secret: fixed, so a seed replays exactly (the
/// handshake's ephemeral keys are random, but every message's size, and so
/// the simulated schedule, is not).
fn sim_secret() -> shoal_node::config::SecretText {
    shoal_node::config::SecretText("5a".repeat(32))
}

fn sim_transport() -> shoal_node::secure::Transport {
    let mut c = Config::default();
    c.security.cluster_secret = Some(sim_secret());
    c.transport().expect("the simulation's secret is valid")
}

/// [`crate::config::Fast`] as a simulated host: its fixed secret, its own
/// name for an address, and the slower gossip of a network that delays and
/// drops messages.
fn member_config(id: &str, seeds: &[String]) -> Config {
    crate::config::Fast::gateway(id)
        .secret(sim_secret())
        .seeds(seeds)
        .failure_timeout_ms(1_500)
        .handoff_retry_ms(200)
        .edit(|c| {
            c.member.listen = format!("0.0.0.0:{RPC_PORT}");
            c.member.advertise = Some(format!("{id}:{RPC_PORT}"));
            c.gossip.interval_ms = 100;
            c.http.listen = format!("0.0.0.0:{HTTP_PORT}");
            // The simulated network has no loopback: its clients are the
            // workload's own hosts, anonymous by design.
            c.security.allow_anonymous = true;
        })
        .build()
}

fn publish(views: &Views, id: &str, members: Vec<shoal_gossip::MemberInfo>) {
    // Members that left are history, not part of the view; a member still
    // streaming its ranges is marked, so that convergence waits for it.
    let mut list: Vec<(String, String)> = members
        .into_iter()
        .filter(|m| m.status != shoal_gossip::Status::Left)
        .map(|m| {
            let joining = shoal_node::membership::split_weight(m.weight).1;
            let status = format!("{:?}{}", m.status, if joining { " joining" } else { "" });
            (m.id.to_string(), status)
        })
        .collect();
    list.sort();
    let at_ms = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
    views.borrow_mut().insert(
        id.to_string(),
        View {
            at_ms,
            members: list,
        },
    );
}

fn err(e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    e.to_string().into()
}

/// Each node's current disk handle, so the driver can cut its power at a
/// crash.
type Disks = Rc<RefCell<BTreeMap<String, SimFs>>>;

/// Powers off every disk when dropped.
struct PowerOffAtEnd(Disks);

impl Drop for PowerOffAtEnd {
    fn drop(&mut self) {
        for disk in self.0.borrow().values() {
            disk.power_off();
        }
    }
}

/// What the driver changes besides turmoil's own state.
struct World {
    /// Nodes and gateways started so far (a joiner is added when it starts).
    servers: Vec<String>,
    clocks: BTreeMap<String, SimClock>,
    crashed: BTreeSet<String>,
    /// Directed links the schedule has cut (`(from, to)`): the same state
    /// as turmoil's links, which the crash needs to restore.
    cut: BTreeSet<(String, String)>,
    shared: Shared,
    /// Admin client hosts (they talk to nodes, so a crash cuts them too).
    admins: Vec<String>,
    /// The joiner's configuration and clock, until it starts.
    joiner: Option<(String, Config, SimClock)>,
    history: SharedHistory,
    normal_latency: Duration,
}

/// Turns off the machines of nodes that finished a decommission (they have
/// stopped their services), the way a crash does: links cut first, so that
/// the order in which the host's remaining tasks drop their sockets (tokio's
/// task-id order) cannot reach the network. Their links stay cut.
fn power_off_left(sim: &mut turmoil::Sim<'_>, world: &mut World) {
    let left = world.shared.changes.borrow().left.clone();
    for n in left {
        if !world.servers.contains(&n) {
            continue;
        }
        world.servers.retain(|s| *s != n);
        if let Some(disk) = world.shared.disks.borrow().get(&n) {
            disk.power_off();
        }
        world.shared.stores.borrow_mut().remove(&n);
        for o in world.servers.iter().chain(world.admins.iter()) {
            sim.partition(n.as_str(), o.as_str());
        }
        sim.crash(n.as_str());
        world.crashed.remove(&n);
    }
}

/// Applies one fault or heal to the world; false if it does not apply (a
/// restart of a running node, a crash of one that left, ...).
fn apply(sim: &mut turmoil::Sim<'_>, action: &Action, world: &mut World) -> bool {
    let World {
        servers,
        clocks,
        crashed,
        cut,
        shared,
        admins,
        joiner,
        history,
        normal_latency,
    } = world;
    let (stores, disks) = (&shared.stores, &shared.disks);
    let gone = shared.changes.borrow().left.clone();
    let normal_latency = *normal_latency;
    let others = |h: &str| -> Vec<String> { servers.iter().filter(|s| *s != h).cloned().collect() };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    match action {
        Action::Partition(a, b) => {
            sim.partition(a.as_str(), b.as_str());
            cut.insert(pair(a, b));
            cut.insert(pair(b, a));
        }
        Action::PartitionOneWay(a, b) => {
            sim.partition_oneway(a.as_str(), b.as_str());
            cut.insert(pair(a, b));
        }
        Action::Repair(a, b) => {
            sim.repair(a.as_str(), b.as_str());
            cut.remove(&pair(a, b));
            cut.remove(&pair(b, a));
        }
        Action::RepairOneWay(a, b) => {
            sim.repair_oneway(a.as_str(), b.as_str());
            cut.remove(&pair(a, b));
        }
        Action::Isolate(n) => {
            for o in others(n) {
                sim.partition(n.as_str(), o.as_str());
                cut.insert(pair(n, &o));
                cut.insert(pair(&o, n));
            }
        }
        Action::Rejoin(n) => {
            for o in others(n) {
                sim.repair(n.as_str(), o.as_str());
                cut.remove(&pair(n, &o));
                cut.remove(&pair(&o, n));
            }
        }
        Action::Crash(n) => {
            if gone.contains(n) || !crashed.insert(n.clone()) {
                return false;
            }
            // Power first: what the dying process does while its tasks are
            // dropped (its engine closing and fsyncing) must not reach the
            // disk. Then drop the checker's handle on its store, so the
            // engine is gone before a restart opens the same directory.
            if let Some(disk) = disks.borrow().get(n) {
                disk.power_off();
            }
            stores.borrow_mut().remove(n);
            // A machine that dies sends nothing: cut its links while its
            // tasks are dropped, so the FINs of its closing sockets are
            // lost. (They would otherwise leave in the order tokio drops
            // tasks, which follows task ids, a process-wide counter: a seed
            // would replay differently after other seeds ran.) Then restore
            // the links the schedule had not cut.
            let linked: Vec<String> = others(n)
                .into_iter()
                .chain(admins.iter().cloned())
                .collect();
            for o in &linked {
                sim.partition(n.as_str(), o.as_str());
            }
            sim.crash(n.as_str());
            for o in linked {
                if !cut.contains(&pair(n, &o)) {
                    sim.repair_oneway(n.as_str(), o.as_str());
                }
                if !cut.contains(&pair(&o, n)) {
                    sim.repair_oneway(o.as_str(), n.as_str());
                }
            }
        }
        Action::Restart(n) => {
            if !crashed.remove(n) {
                return false;
            }
            sim.bounce(n.as_str());
        }
        Action::Slow(h, max) => {
            for o in others(h) {
                sim.set_link_max_message_latency(h.as_str(), o.as_str(), *max);
            }
        }
        Action::Fast(h) => {
            for o in others(h) {
                sim.set_link_max_message_latency(h.as_str(), o.as_str(), normal_latency);
            }
        }
        Action::Lossy(h, rate) => {
            for o in others(h) {
                sim.set_link_fail_rate(h.as_str(), o.as_str(), *rate);
            }
        }
        Action::Lossless(h) => {
            for o in others(h) {
                sim.set_link_fail_rate(h.as_str(), o.as_str(), 0.0);
            }
        }
        Action::Skew(n, ms) => clocks[n].set_skew_ms(*ms),
        Action::Join(n) => {
            let Some((name, config, clock)) = joiner.take() else {
                return false;
            };
            debug_assert_eq!(&name, n);
            shared.changes.borrow_mut().joining.insert(name.clone());
            clocks.insert(name.clone(), clock.clone());
            add_node(sim, &name, config, clock, shared);
            servers.push(name);
        }
        Action::Decommission(n) => {
            {
                let mut c = shared.changes.borrow_mut();
                if c.left.contains(n) || !c.leaving.insert(n.clone()) {
                    return false;
                }
            }
            admins.push(format!("admin-{n}"));
            sim.client(
                format!("admin-{n}"),
                decommission(n.clone(), history.clone(), shared.changes.clone()),
            );
        }
    }
    true
}

/// Membership changes in flight and done, shared by the node hosts, the
/// admin clients and the checker.
#[derive(Debug, Default)]
pub struct MembershipChanges {
    /// Nodes started to join that have not finished streaming.
    pub joining: BTreeSet<String>,
    /// Nodes that finished joining.
    pub joined: BTreeSet<String>,
    /// Nodes asked to decommission that have not finished.
    pub leaving: BTreeSet<String>,
    /// Nodes that were decommissioned (and stopped).
    pub left: BTreeSet<String>,
}

/// Shared handle on [`MembershipChanges`].
pub type Changes = Rc<RefCell<MembershipChanges>>;

/// What every node host publishes into.
#[derive(Clone)]
struct Shared {
    views: Views,
    stores: Stores,
    disks: Disks,
    changes: Changes,
}

/// Registers a storage node host. It publishes its view and store, records
/// when a join finishes, and stops (shutting the node down) once a
/// decommission asks it to.
fn add_node(
    sim: &mut turmoil::Sim<'_>,
    name: &str,
    config: Config,
    clock: SimClock,
    shared: &Shared,
) {
    let (shared, name) = (shared.clone(), name.to_string());
    let host = name.clone();
    sim.host(host.as_str(), move || {
        let (config, clock, name, shared) =
            (config.clone(), clock.clone(), name.clone(), shared.clone());
        // A fresh disk handle per start: the previous one was powered off
        // when the host crashed.
        let disk = SimFs::default();
        shared.disks.borrow_mut().insert(name.clone(), disk.clone());
        async move {
            let node = match shoal_node::node::start(config, sim_env(clock, disk)).await {
                Ok(node) => node,
                // Crashed after its decommission was recorded and restarted:
                // it refuses to start, as it must; the host stays down.
                Err(shoal_node::node::NodeError::Decommissioned { .. }) => {
                    let mut c = shared.changes.borrow_mut();
                    c.leaving.remove(&name);
                    c.left.insert(name.clone());
                    return Ok(());
                }
                Err(e) => return Err(err(e)),
            };
            shared
                .stores
                .borrow_mut()
                .insert(name.clone(), node.store().clone());
            loop {
                publish(&shared.views, &name, node.members());
                if node.join_report().is_some() {
                    let mut c = shared.changes.borrow_mut();
                    if c.joining.remove(&name) {
                        c.joined.insert(name.clone());
                    }
                }
                tokio::select! {
                    biased;
                    _ = node.stop_requested() => break,
                    _ = tokio::time::sleep(VIEW_PERIOD) => {}
                }
            }
            shared.stores.borrow_mut().remove(&name);
            shared.views.borrow_mut().remove(&name);
            node.shutdown().await;
            Ok(())
        }
    });
}

/// An operator's decommission of `node`: asks it over RPC and retries every
/// couple of seconds (the node may be crashed or cut off) until it answers
/// with the handover report. Outcomes go into the trace.
async fn decommission(node: String, history: SharedHistory, changes: Changes) -> turmoil::Result {
    let pool = shoal_node::pool::Pool::new(
        std::sync::Arc::new(env::SimNet),
        sim_transport(),
        Duration::from_secs(2),
        64 << 20,
    );
    let addr = format!("{node}:{RPC_PORT}");
    for attempt in 1..=DECOMMISSION_ATTEMPTS {
        let result = pool
            .call(&addr, Duration::from_secs(60), |c, ctx| async move {
                c.decommission(ctx, false).await
            })
            .await;
        let at = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
        match result {
            Ok(Ok(report)) => {
                history.borrow_mut().log_at(
                    at,
                    format!(
                        "decommissioned {node} (attempt {attempt}): {} ranges, {} keys",
                        report.ranges, report.keys
                    ),
                );
                let mut c = changes.borrow_mut();
                c.leaving.remove(&node);
                c.left.insert(node);
                return Ok(());
            }
            Ok(Err(e)) => history
                .borrow_mut()
                .log_at(at, format!("decommission {node} attempt {attempt}: {e}")),
            Err(e) => history
                .borrow_mut()
                .log_at(at, format!("decommission {node} attempt {attempt}: {e}")),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Decommission attempts before the admin gives up (the checker then
/// reports the node still leaving).
const DECOMMISSION_ATTEMPTS: u32 = 60;

/// Runs one simulation. Never panics on a finding: violations (including
/// simulation errors) are in the report.
pub fn run(options: &Options) -> Report {
    let wall = Instant::now();
    let mut report = Report {
        seed: options.seed,
        faults_enabled: options.faults,
        ..Report::default()
    };
    let history: SharedHistory = Rc::new(RefCell::new(History::default()));
    let result = simulate(options, &history, &mut report);
    let h = history.borrow();
    if let Err(e) = result {
        report.violations.push(format!("simulation error: {e}"));
    }
    report.timed_hash = fnv1a(&h.trace);
    // Drop the timestamp and the convergence durations: what remains is the
    // order of operations, faults and outcomes.
    let untimed: Vec<String> = h
        .trace
        .iter()
        .map(|l| l.split_once(' ').map_or(l.as_str(), |(_, rest)| rest))
        .filter(|l| !l.starts_with("converged:"))
        .map(str::to_string)
        .collect();
    report.trace_hash = fnv1a(&untimed);
    report.trace_len = h.trace.len();
    report.trace = h.trace.clone();
    report.ops = h.ops;
    report.ok = h.ok;
    report.failed = h.failed;
    report.unknown = h.unknown;
    report.failed_reads = h.failed_reads;
    report.register_reads = h.register_reads;
    report.stale_reads = h.stale_reads;
    report.violations.extend(h.violations.iter().cloned());
    report.wall = wall.elapsed();
    report
}

fn simulate(options: &Options, history: &SharedHistory, report: &mut Report) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let gateways_count = rng.gen_range(1..=2);
    report.gateways = gateways_count;
    let normal_latency = Duration::from_millis(20);
    // The simulated epoch, and so every wall clock and the gossip RNG seeds
    // derived from it, comes from the seed.
    let epoch =
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + rng.gen_range(0..1u64 << 32));
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        .epoch(epoch)
        .simulation_duration(SIM_BOUND)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(normal_latency)
        .build();

    let nodes: Vec<String> = (1..=NODES).map(node_name).collect();
    let gateways: Vec<String> = (1..=gateways_count).map(|i| format!("gw-{i}")).collect();
    let servers: Vec<String> = nodes.iter().chain(gateways.iter()).cloned().collect();
    let seeds: Vec<String> = nodes[..2]
        .iter()
        .map(|n| format!("{n}:{RPC_PORT}"))
        .collect();
    let views: Views = Rc::new(RefCell::new(BTreeMap::new()));
    let stores: Stores = Rc::new(RefCell::new(BTreeMap::new()));
    let disks: Disks = Rc::new(RefCell::new(BTreeMap::new()));
    let changes: Changes = Rc::new(RefCell::new(MembershipChanges::default()));
    // Dropped first (declared last): the engines still open when the run
    // ends close as the simulation is torn down, outside any simulated host,
    // where the simulated disk cannot be reached. Powered off, their closing
    // I/O fails instead.
    let _power = PowerOffAtEnd(disks.clone());
    let mut clocks = BTreeMap::new();
    // Half the seeds fsync every write; the other half never do, so that a
    // crash loses what the node had acknowledged but not synced, and the
    // replicas and anti-entropy must make up for it.
    let sync = if rng.gen_bool(0.5) {
        SyncMode::Always
    } else {
        SyncMode::Never
    };
    report.sync = format!("{sync:?}");
    history
        .borrow_mut()
        .log_at(0, format!("storage sync {sync:?}"));

    let shared = Shared {
        views: views.clone(),
        stores: stores.clone(),
        disks: disks.clone(),
        changes: changes.clone(),
    };
    let node_base = |name: &str| {
        let mut config = member_config(name, &seeds);
        config.member.data_dir = Path::new("/data").join(name);
        config.storage.sync = sync;
        config.storage.memtable_bytes = 256 << 10;
        // Tombstone GC runs within the workload's minutes, and expired
        // values are purged by compaction while it runs.
        config.tombstones.settle_ms = 3_000;
        config.tombstones.gc_interval_ms = 1_000;
        config.expiry.check_interval_ms = 1_000;
        config.expiry.min_compact_interval_ms = 20_000;
        config
    };
    for name in &nodes {
        let clock = SimClock::default();
        clocks.insert(name.clone(), clock.clone());
        add_node(&mut sim, name, node_base(name), clock, &shared);
    }
    // The node a membership change may add later.
    let joiner = node_name(NODES + 1);
    let mut joiner_config = node_base(&joiner);
    joiner_config.member.join = true;
    for name in &gateways {
        let clock = SimClock::default();
        clocks.insert(name.clone(), clock.clone());
        let config = member_config(name, &seeds);
        let (views, host, name) = (views.clone(), name.clone(), name.clone());
        sim.host(host.as_str(), move || {
            let (config, clock, views, name) =
                (config.clone(), clock.clone(), views.clone(), name.clone());
            async move {
                let gateway =
                    shoal_gateway::Gateway::start(config, sim_env(clock, SimFs::default()))
                        .await
                        .map_err(err)?;
                loop {
                    publish(&views, &name, gateway.members());
                    tokio::time::sleep(VIEW_PERIOD).await;
                }
            }
        });
    }

    // Start-up: one gossip view before any client speaks.
    let expected: Vec<(String, String)> = {
        let mut ids = servers.clone();
        ids.sort();
        ids.into_iter()
            .map(|id| (id, "Alive".to_string()))
            .collect()
    };
    while !servers
        .iter()
        .all(|s| views.borrow().get(s).is_some_and(|v| v.members == expected))
    {
        if sim.elapsed() > STARTUP_BOUND {
            return Err(err(format!(
                "no single gossip view within {STARTUP_BOUND:?} of start: {:?}",
                views.borrow()
            )));
        }
        sim.step()?;
    }
    let start_ms = sim.elapsed().as_millis() as u64;
    history
        .borrow_mut()
        .log_at(start_ms, format!("cluster up: {servers:?}"));

    // Clients.
    let set_keys: Vec<String> = (0..3).map(|i| format!("set-{i}")).collect();
    let gateway_addrs: Vec<String> = gateways
        .iter()
        .map(|g| format!("{g}:{HTTP_PORT}"))
        .collect();
    for c in 0..options.clients {
        let name = format!("client-{c}");
        let plan = ClientPlan {
            name: name.clone(),
            ops: options.ops_per_client,
            seed: rng.gen(),
            gateways: gateway_addrs.clone(),
            set_keys: set_keys.clone(),
            register_keys: (0..2).map(|k| format!("reg-{c}-{k}")).collect(),
            doomed_key: format!("doom-{c}"),
            strict: !options.faults,
        };
        let history = history.clone();
        sim.client(name.as_str(), workload::client(plan, history));
    }

    // The fault schedule, over the expected length of the workload.
    let mut schedule = if options.faults {
        let count = rng.gen_range(3..=8);
        let horizon = options.ops_per_client as u64 * 150;
        faults::schedule(
            &mut rng,
            &nodes,
            Some(&joiner),
            &gateways,
            count,
            start_ms + 500,
            start_ms + horizon.max(1_000),
        )
    } else {
        Vec::new()
    };
    schedule.reverse();
    let mut world = World {
        servers: servers.clone(),
        clocks,
        crashed: BTreeSet::new(),
        cut: BTreeSet::new(),
        shared: shared.clone(),
        admins: Vec::new(),
        joiner: Some((joiner, joiner_config, SimClock::default())),
        history: history.clone(),
        normal_latency,
    };
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while schedule.last().is_some_and(|s| s.at_ms <= now) {
            let s = schedule.pop().expect("checked");
            if apply(&mut sim, &s.action, &mut world) {
                if let Some(kind) = s.action.kind() {
                    report.faults.add(kind);
                }
                history
                    .borrow_mut()
                    .log_at(now, format!("fault {:?}", s.action));
            }
        }
        power_off_left(&mut sim, &mut world);
        if sim.step()? {
            break;
        }
    }

    // Heal: every link, latency and loss back to normal, crashed nodes
    // restarted. Clock skews stay: a skewed clock is not a fault to heal.
    let servers = world.servers.clone();
    for (i, a) in servers.iter().enumerate() {
        for b in &servers[i + 1..] {
            sim.repair(a.as_str(), b.as_str());
        }
        apply(&mut sim, &Action::Fast(a.clone()), &mut world);
        apply(&mut sim, &Action::Lossless(a.clone()), &mut world);
    }
    world.cut.clear();
    for n in world.crashed.clone() {
        apply(&mut sim, &Action::Restart(n), &mut world);
    }
    let healed_at_ms = sim.elapsed().as_millis() as u64;
    history.borrow_mut().log_at(healed_at_ms, "healed".into());

    let converged = Rc::new(RefCell::new(Converged::default()));
    let all_nodes: Vec<String> = servers
        .iter()
        .filter(|s| !gateways.contains(s))
        .cloned()
        .collect();
    let plan = CheckPlan {
        members: servers.clone(),
        gateways: gateway_addrs,
        healed_at_ms,
        nodes: all_nodes,
        n: Config::default().replication.n,
    };
    sim.client(
        "checker",
        check::checker(
            plan,
            views.clone(),
            stores.clone(),
            changes.clone(),
            history.clone(),
            converged.clone(),
        ),
    );
    while !sim.step()? {
        power_off_left(&mut sim, &mut world);
    }
    let c = converged.borrow();
    report.gossip_converge_ms = c.gossip_ms;
    report.data_converge_ms = c.data_ms;
    report.merkle_converge_ms = c.merkle_ms;
    report.merkle_ranges = c.merkle_ranges;
    report.acked_checked = c.acked_checked;
    report.lost = c.lost;
    report.purged = c.purged;
    report.sim_ms = sim.elapsed().as_millis() as u64;
    let line = format!(
        "converged: gossip {:?} ms, data {:?} ms, merkle {:?} ms",
        c.gossip_ms, c.data_ms, c.merkle_ms
    );
    history.borrow_mut().log_at(report.sim_ms, line);
    Ok(())
}
