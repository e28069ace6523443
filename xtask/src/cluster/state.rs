//! Where a cluster's files live, and `state.json`: what `up` started, so that
//! later commands (run as separate `xtask` processes) find it again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where one cluster's files are; the bench points `cluster` at a directory of
/// its own so that it never disturbs the cluster a user runs.
pub(super) struct Dirs {
    /// The workspace root (cargo runs from here).
    pub(super) root: PathBuf,
    /// `target/` (or `$CARGO_TARGET_DIR`).
    pub(super) target: PathBuf,
    /// `target/cluster/`.
    pub(super) cluster: PathBuf,
    /// Set by `bench --instructions`: every process runs under callgrind
    /// and writes its counts here (the bench reads them per window).
    pub(super) callgrind: Option<PathBuf>,
}

impl Dirs {
    pub(super) fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(|| root.join("target"), |t| root.join(t));
        let cluster = target.join("cluster");
        Self {
            root,
            target,
            cluster,
            callgrind: None,
        }
    }

    fn state_file(&self) -> PathBuf {
        self.cluster.join("state.json")
    }

    /// Absolute, because the processes read it from their config and run
    /// from the workspace root.
    pub(super) fn secret_file(&self) -> PathBuf {
        let path = self.cluster.join("cluster.secret");
        std::path::absolute(&path).unwrap_or(path)
    }

    /// The gateway's client tokens (`cargo xtask cluster token`), next to the
    /// secret; absolute for the same reason.
    pub(super) fn tokens_file(&self) -> PathBuf {
        let path = self.cluster.join("tokens.toml");
        std::path::absolute(&path).unwrap_or(path)
    }

    pub(super) fn binary(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    /// `path` relative to the workspace root when it is inside it (for messages).
    pub(super) fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// What `target/cluster/state.json` records.
#[derive(Serialize, Deserialize)]
pub(super) struct State {
    pub(super) n: usize,
    pub(super) w: usize,
    pub(super) r: usize,
    /// `SHOAL_*` variables `up` was given, re-applied by `start` and `add`.
    pub(super) env: BTreeMap<String, String>,
    /// Zones `up --zones` spread the nodes over (see [`State::zone_of`]);
    /// empty: every node in the default zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) zones: Vec<String>,
    /// `up --netns`: the nodes run in network namespaces on this bridge
    /// (see `super::netns`); none for a loopback cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) netns: Option<Netns>,
    pub(super) gateway: Proc,
    pub(super) nodes: Vec<Proc>,
}

/// The network a `up --netns` cluster runs on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(super) struct Netns {
    /// The bridge in the root namespace, holding `<subnet>.254`.
    pub(super) bridge: String,
    /// The first three octets of its /24: node-i is at `<subnet>.i`.
    pub(super) subnet: String,
}

/// One process of the cluster.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct Proc {
    pub(super) id: String,
    /// Binary name: `shoal-node` or `shoal-gateway`.
    pub(super) binary: String,
    /// tarpc (gossip and replica RPC) address.
    pub(super) listen: String,
    /// The gateway's HTTP address.
    pub(super) http: Option<String>,
    /// A node's `/metrics` address (`metrics.listen`); none in a state
    /// file from before metrics.
    #[serde(default)]
    pub(super) metrics: Option<String>,
    /// The gateway's Redis protocol address (`gateway.resp_listen`); none
    /// for nodes and in a state file from before RESP.
    #[serde(default)]
    pub(super) resp: Option<String>,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
    pub(super) data_dir: Option<PathBuf>,
    /// The network namespace it runs in (`up --netns` nodes); none: the
    /// root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) netns: Option<String>,
    /// Last pid started; may be dead (see [`super::process::alive`]).
    pub(super) pid: Option<u32>,
}

impl State {
    pub(super) fn load(dirs: &Dirs) -> Result<Option<Self>, String> {
        let path = dirs.state_file();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                format!(
                    "{} is damaged ({e}); `cargo xtask cluster down --wipe` starts over",
                    dirs.show(&path)
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", dirs.show(&path))),
        }
    }

    pub(super) fn load_required(dirs: &Dirs) -> Result<Self, String> {
        Self::load(dirs)?.ok_or_else(|| {
            "no cluster here (no target/cluster/state.json); start one with `cargo xtask cluster up`"
                .to_string()
        })
    }

    pub(super) fn save(&self, dirs: &Dirs) -> Result<(), String> {
        let path = dirs.state_file();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        fs::write(&tmp, text + "\n")
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", dirs.show(&path)))
    }

    /// The zone of node `id`, round robin by its number: `node-i` is in
    /// `zones[(i - 1) % zones.len()]`, so `add` continues the rotation `up`
    /// started. `None` without zones (and for the gateway).
    pub(super) fn zone_of(&self, id: &str) -> Option<&str> {
        let i: usize = id.strip_prefix("node-")?.parse().ok()?;
        let count = self.zones.len();
        (count > 0 && i > 0).then(|| self.zones[(i - 1) % count].as_str())
    }

    pub(super) fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.nodes.iter().chain(std::iter::once(&self.gateway))
    }

    /// Finds `node-2`, `2` or `gateway`.
    pub(super) fn find_mut(&mut self, name: &str) -> Result<&mut Proc, String> {
        if name == "gateway" || name == self.gateway.id {
            return Ok(&mut self.gateway);
        }
        let wanted = if name.chars().all(|c| c.is_ascii_digit()) {
            format!("node-{name}")
        } else {
            name.to_string()
        };
        let known: Vec<String> = self.procs().map(|p| p.id.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|p| p.id == wanted)
            .ok_or_else(|| {
                format!(
                    "no member {name:?} in this cluster (have: {})",
                    known.join(", ")
                )
            })
    }
}
