//! `cargo xtask cluster`: a local Shoal cluster (nodes plus one gateway) in the
//! background, for trying things by hand, tests and benchmarks.
//!
//! Everything lives under `target/cluster/`: one TOML config per process, one log
//! per process, node data under `node-i/data`, `state.json` with the pids and
//! addresses, `cluster.secret`, which every process and `shoal-admin` need, and
//! `tokens.toml`, the gateway's client tokens (made by `token add`). Processes run in their own process group, so they outlive `xtask`
//! and a Ctrl-C in the terminal that started them; `down` stops them.
//!
//! `SHOAL_*` variables given to `up` reach every process (they inherit the
//! environment) and are recorded in the state file, so `start` and `add` give
//! them to the processes they start later too.
//!
//! `up --netns` runs every node in a network namespace of its own on a
//! bridge (`netns`), so that `partition` and `heal` cut real links.
//!
//! The submodules split by duty and depend only downwards: `state` (paths and
//! the state file), `secret` (the cluster secret), `tokens` (the client
//! tokens file) and `view` (the gateway's HTTP answers) need no sibling;
//! `process`, `config` and `netns` build on `state`; the commands (`lifecycle`,
//! `control`, `status`, `admin`) build on those and never on each other.

mod admin;
mod config;
mod control;
mod lifecycle;
mod netns;
mod plan;
mod process;
mod progress;
mod secret;
mod state;
mod status;
mod tokens;
mod view;

use std::path::Path;

use clap::{Args, Subcommand};

use state::{Dirs, State};

/// Arguments of `cargo xtask cluster`.
#[derive(Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCmd,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Build the release binaries, start the nodes and a gateway in the background,
    /// wait until the gateway sees every node alive, print the endpoints.
    Up(UpArgs),
    /// Members, liveness, ring ownership and pids, as a table.
    Status,
    /// Stop one process gracefully (SIGTERM), waiting for it to exit.
    Stop(NodeArg),
    /// Kill one process (SIGKILL), as a crash would.
    Kill(NodeArg),
    /// Start a stopped or killed process again, with the same config and data dir.
    Start(NodeArg),
    /// Start one more node; it joins through the seeds, receives the ranges
    /// it gains from their current replicas, and only then serves reads.
    Add,
    /// Stream NODE's ranges to their new owners, then stop it (it leaves the ring).
    Decommission(DecommissionArgs),
    /// Run anti-entropy for NODE's ranges now and print what moved.
    Repair(NodeArg),
    /// Stop everything (SIGTERM, then SIGKILL after a bounded wait); for an
    /// `up --netns` cluster, also remove its namespaces, veths and bridge.
    Down(DownArgs),
    /// Cut NODE of an `up --netns` cluster off the network (its link down).
    Partition(NodeArg),
    /// Bring NODE's link back up (every node's without NODE).
    Heal(HealArgs),
    /// The gateway's client tokens in target/cluster/tokens.toml: add, list, remove.
    Token(TokenArgs),
    /// What adding or decommissioning a node would move (ranges, keys, each
    /// node's share before and after), from the running ring; changes nothing.
    Plan(PlanArgs),
}

#[derive(Args)]
struct PlanArgs {
    #[command(subcommand)]
    command: PlanCmd,
}

#[derive(Subcommand)]
enum PlanCmd {
    /// A new node joining, as `cluster add` would start it.
    Add(PlanAddArgs),
    /// NODE leaving, as `cluster decommission NODE` would.
    Decommission(PlanDecommissionArgs),
}

/// Which gateway `plan` reads the ring from.
#[derive(Args)]
pub(super) struct PlanTarget {
    /// The gateway (`host:port` or `http://host:port`); default: the one
    /// `cluster up` started (target/cluster/).
    #[arg(long)]
    pub(super) url: Option<String>,
    /// A client token with the `read` permission (`Authorization: Bearer`),
    /// when the gateway has tokens configured.
    #[arg(long)]
    pub(super) token: Option<String>,
}

#[derive(Args)]
struct PlanAddArgs {
    #[command(flatten)]
    target: PlanTarget,
    /// The new node's zone (`member.zone`); default: the one `cluster add`
    /// would give it (`up --zones` rotates them), else `default`.
    #[arg(long)]
    zone: Option<String>,
    /// The new node's ring weight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    weight: u32,
    /// The new node's id (tokens derive from it); default: the next one,
    /// as `cluster add` names it (`node-4` after `node-3`).
    #[arg(long)]
    id: Option<String>,
}

#[derive(Args)]
struct PlanDecommissionArgs {
    /// `node-2` (or just `2`).
    node: String,
    #[command(flatten)]
    target: PlanTarget,
}

#[derive(Args)]
struct TokenArgs {
    #[command(subcommand)]
    command: TokenCmd,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a token, print it once, and store only its SHA-256 hash.
    Add(TokenAddArgs),
    /// Names and permissions of the configured tokens.
    List,
    /// Revoke a token (the gateway drops it within seconds).
    Remove(TokenNameArg),
}

#[derive(Args)]
struct TokenAddArgs {
    /// Letters, digits, '_', '.' and '-'; unique in the file.
    name: String,
    /// Comma-separated, any of: read, write, admin, metrics.
    #[arg(long)]
    permissions: String,
}

#[derive(Args)]
struct TokenNameArg {
    /// The name given to `token add`.
    name: String,
}

#[derive(Args)]
pub(super) struct UpArgs {
    /// Number of storage nodes (`node-1`..`node-K`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(super) nodes: u16,
    /// The gateway's HTTP port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub(super) gateway_port: u16,
    /// Replicas per key.
    #[arg(long, default_value_t = 3)]
    pub(super) n: usize,
    /// Write quorum.
    #[arg(long, default_value_t = 2)]
    pub(super) w: usize,
    /// Read quorum.
    #[arg(long, default_value_t = 2)]
    pub(super) r: usize,
    /// Do not run `cargo build --release` first (use the binaries already built).
    #[arg(long)]
    pub(super) no_build: bool,
    /// Zones (`member.zone`) to spread the nodes over, round robin:
    /// `--zones a,b,c` puts node-1 in a, node-2 in b, node-3 in c, node-4 in
    /// a, and `add` continues the rotation. Without it every node is in the
    /// default zone.
    #[arg(long, value_delimiter = ',')]
    pub(super) zones: Vec<String>,
    /// Run every node in its own network namespace (`shoal-node-i`, at
    /// 10.77.0.i on bridge `shoal-br0`; the gateway stays in this one), so
    /// `partition` and `heal` can cut real links. Needs root.
    #[arg(long)]
    pub(super) netns: bool,
}

#[derive(Args)]
struct NodeArg {
    /// `node-2` (or just `2`), or `gateway`.
    node: String,
}

#[derive(Args)]
struct DecommissionArgs {
    /// `node-2` (or just `2`).
    node: String,
    /// Decommission even if fewer than N live storage nodes would remain.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct DownArgs {
    /// Also delete `target/cluster/` (configs, logs, all data and the cluster secret).
    #[arg(long)]
    wipe: bool,
    /// Also remove the namespaces, veths and bridge of an `up --netns`
    /// cluster whose state file is gone or does not record them (found by
    /// name: `shoal-node-*`, `shoal-v*`, `shoal-br0`).
    #[arg(long)]
    netns: bool,
}

#[derive(Args)]
struct HealArgs {
    /// `node-2` (or just `2`); none: every node.
    node: Option<String>,
}

pub(crate) fn run(args: &ClusterArgs) -> Result<(), String> {
    let dirs = Dirs::new();
    match &args.command {
        ClusterCmd::Up(a) => lifecycle::up(&dirs, a),
        ClusterCmd::Status => status::status(&dirs),
        ClusterCmd::Stop(a) => control::stop(&dirs, &a.node),
        ClusterCmd::Kill(a) => control::kill(&dirs, &a.node),
        ClusterCmd::Start(a) => control::start(&dirs, &a.node),
        ClusterCmd::Add => control::add(&dirs),
        ClusterCmd::Decommission(a) => admin::decommission(&dirs, &a.node, a.force),
        ClusterCmd::Repair(a) => admin::repair(&dirs, &a.node),
        ClusterCmd::Down(a) => lifecycle::down(&dirs, a.wipe, a.netns),
        ClusterCmd::Partition(a) => control::partition(&dirs, &a.node),
        ClusterCmd::Heal(a) => control::heal(&dirs, a.node.as_deref()),
        ClusterCmd::Token(a) => token(&dirs, &a.command),
        ClusterCmd::Plan(a) => match &a.command {
            PlanCmd::Add(p) => plan::add(
                &dirs,
                &p.target,
                p.id.as_deref(),
                p.zone.as_deref(),
                p.weight,
            ),
            PlanCmd::Decommission(p) => plan::decommission(&dirs, &p.target, &p.node),
        },
    }
}

fn token(dirs: &Dirs, cmd: &TokenCmd) -> Result<(), String> {
    let path = dirs.tokens_file();
    let shown = dirs.show(&path);
    match cmd {
        TokenCmd::Add(a) => {
            let token = tokens::add(&path, &a.name, &a.permissions)?;
            println!("{token}");
            eprintln!(
                "added token {:?} to {shown}; it is shown only this once (the file keeps its \
                 SHA-256 hash), so store it now. A running gateway picks it up within seconds.",
                a.name
            );
        }
        TokenCmd::List => {
            let all = tokens::load(&path)?;
            if all.is_empty() {
                println!(
                    "no tokens configured in {shown}: the gateway allows anonymous access on a \
                     loopback listener"
                );
            } else {
                for line in tokens::list_lines(&all) {
                    println!("{line}");
                }
            }
        }
        TokenCmd::Remove(a) => {
            tokens::remove(&path, &a.name)?;
            eprintln!(
                "removed token {:?} from {shown}; a running gateway refuses it within seconds",
                a.name
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- for `cargo xtask bench`

/// `up` in `dir` instead of `target/cluster/`, so a benchmark never touches the
/// cluster a user runs; returns the gateway's HTTP address.
pub(crate) fn up_at(
    dir: &Path,
    nodes: u16,
    gateway_port: u16,
    (n, w, r): (usize, usize, usize),
    no_build: bool,
    callgrind: Option<&Path>,
) -> Result<String, String> {
    let dirs = Dirs {
        cluster: dir.to_path_buf(),
        callgrind: callgrind.map(Path::to_path_buf),
        ..Dirs::new()
    };
    let args = UpArgs {
        nodes,
        gateway_port,
        n,
        w,
        r,
        no_build,
        zones: Vec::new(),
        netns: false,
    };
    lifecycle::up(&dirs, &args)?;
    State::load_required(&dirs)?
        .gateway
        .http
        .ok_or_else(|| "the cluster state has no gateway address".into())
}

/// `token add` for a cluster [`up_at`] started: returns the new token.
pub(crate) fn add_token_at(dir: &Path, name: &str, permissions: &str) -> Result<String, String> {
    let dirs = Dirs {
        cluster: dir.to_path_buf(),
        ..Dirs::new()
    };
    tokens::add(&dirs.tokens_file(), name, permissions)
}

/// `down --wipe` for a cluster [`up_at`] started.
pub(crate) fn down_at(dir: &Path) -> Result<(), String> {
    let dirs = Dirs {
        cluster: dir.to_path_buf(),
        ..Dirs::new()
    };
    lifecycle::down(&dirs, true, false)
}
