//! `cargo xtask deploy k8s|compose --nodes K`: manifests, printed to stdout,
//! that run the same binaries (`shoal-node`, `shoal-gateway`) with the same
//! config schema as `cargo xtask cluster up`, in containers.
//!
//! Both targets share one `node.toml` for every storage node and one
//! `gateway.toml` (rendered here, [`node_toml`] and [`gateway_toml`]); what
//! differs per container, `member.id` and `member.advertise`, is set by
//! `SHOAL_MEMBER__ID` and `SHOAL_MEMBER__ADVERTISE` (figment's environment
//! overrides: `SHOAL_` + the key path upper-cased, sections joined by `__`).
//! Inside a container a process binds `0.0.0.0` (`member.listen` must be an
//! `ip:port`) and advertises a DNS name that every peer resolves again on
//! each dial.
//!
//! Why not `cluster::config::node_config`: it writes `advertise = listen`
//! (right for 127.0.0.1, wrong for a container, which binds 0.0.0.0 and is
//! dialed by name) and a per-process id into the file (a StatefulSet has one
//! pod template), and it is private to the `cluster` module. The tests below
//! load every config a manifest embeds, with the manifest's environment,
//! through `shoal_node::config::Config`, so neither can drift from the schema.
//!
//! The cluster secret is never in a manifest: each says how to create it
//! (a `kubectl create secret` line, or a file for compose) and mounts it
//! where `security.cluster_secret_file` points.

use std::io::Write as _;

use clap::{Args, Subcommand};

mod compose;
mod k8s;

/// The RPC (gossip and replica) port of every process.
const RPC_PORT: u16 = 7000;
/// The gateway's HTTP port.
const HTTP_PORT: u16 = 8080;
/// The gateway's Redis protocol port (as `cluster up`: 6379 is left to Redis).
const RESP_PORT: u16 = 6380;
/// A node's `/metrics` port.
const METRICS_PORT: u16 = 9100;

/// Arguments of `cargo xtask deploy`.
#[derive(Args)]
pub(crate) struct DeployArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand)]
enum Target {
    /// Kubernetes: a StatefulSet of K storage nodes behind a headless
    /// Service, a gateway Deployment and Service, the configs in a ConfigMap
    /// (`... | kubectl apply -f -`).
    K8s(K8sArgs),
    /// Docker Compose: one service per storage node and a gateway, a volume
    /// per node, the cluster secret from a file (`... > compose.yaml`).
    Compose(ComposeArgs),
}

/// What both targets take.
#[derive(Args)]
struct Common {
    /// Number of storage nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// Replicas per key.
    #[arg(long, default_value_t = 3)]
    n: usize,
    /// Write quorum.
    #[arg(long, default_value_t = 2)]
    w: usize,
    /// Read quorum.
    #[arg(long, default_value_t = 2)]
    r: usize,
    /// The container image: one with `shoal-node` and `shoal-gateway` on its PATH.
    #[arg(long, default_value = "shoal:latest")]
    image: String,
}

#[derive(Args)]
struct K8sArgs {
    #[command(flatten)]
    common: Common,
    /// Namespace of every object (a Namespace object is included unless `default`).
    #[arg(long, default_value = "shoal")]
    namespace: String,
    /// Size of each node's PersistentVolumeClaim.
    #[arg(long, default_value = "10Gi")]
    storage: String,
    /// StorageClass of the claims (the cluster's default when not given).
    #[arg(long)]
    storage_class: Option<String>,
    /// The cluster's DNS domain, in the nodes' stable names.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

#[derive(Args)]
struct ComposeArgs {
    #[command(flatten)]
    common: Common,
    /// The gateway's HTTP port on the host's 127.0.0.1 (RESP: 6380).
    #[arg(long, default_value_t = HTTP_PORT)]
    gateway_port: u16,
}

pub(crate) fn run(args: &DeployArgs) -> Result<(), String> {
    let text = match &args.target {
        Target::K8s(a) => {
            let spec = a.common.spec()?;
            k8s::manifest(&k8s::K8s {
                spec,
                namespace: a.namespace.clone(),
                storage: a.storage.clone(),
                storage_class: a.storage_class.clone(),
                cluster_domain: a.cluster_domain.clone(),
            })?
        }
        Target::Compose(a) => {
            let spec = a.common.spec()?;
            compose::manifest(&compose::Compose {
                spec,
                gateway_port: a.gateway_port,
            })?
        }
    };
    // Not println!: `deploy ... | head` must not panic on a closed pipe.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// What both targets render from.
#[derive(Clone, Debug)]
struct Spec {
    nodes: u16,
    n: usize,
    w: usize,
    r: usize,
    image: String,
}

impl Common {
    fn spec(&self) -> Result<Spec, String> {
        if self.n == 0 || self.w == 0 || self.r == 0 || self.w > self.n || self.r > self.n {
            return Err(format!(
                "need 1 <= W <= N and 1 <= R <= N (got N={} W={} R={})",
                self.n, self.w, self.r
            ));
        }
        if self.image.is_empty() || self.image.chars().any(|c| c.is_whitespace() || c == '$') {
            return Err(format!(
                "--image {:?} is not an image reference",
                self.image
            ));
        }
        if usize::from(self.nodes) < self.n {
            eprintln!(
                "note: {} storage nodes for N={}: every key gets only {} copies until more join",
                self.nodes, self.n, self.nodes
            );
        }
        Ok(Spec {
            nodes: self.nodes,
            n: self.n,
            w: self.w,
            r: self.r,
            image: self.image.clone(),
        })
    }
}

/// Where the configs put what the manifests mount.
struct Paths<'a> {
    /// The cluster secret file (mounted read-only, mode 0400).
    secret: &'a str,
    /// The gateway's client tokens file (may be absent: no tokens yet).
    tokens: &'a str,
    /// A node's data directory, inside its volume.
    data: &'a str,
}

/// A TOML (and YAML) double-quoted string: JSON's escapes are valid in both.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn quoted_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The comment every embedded config starts with.
const CONFIG_HEADER: &str =
    "# Written by `cargo xtask deploy`; SHOAL_* environment variables override any key.\n\
     # member.id and member.advertise differ per container: SHOAL_MEMBER__ID and\n\
     # SHOAL_MEMBER__ADVERTISE set them.\n";

/// `node.toml`, shared by every storage node: the keys `cluster up` writes
/// (`cluster::config::node_config`), with a bind address for `listen` and
/// the metrics port open to the pod network (it serves no data and takes
/// no token).
fn node_toml(spec: &Spec, seeds: &[String], paths: &Paths<'_>) -> String {
    format!(
        "{CONFIG_HEADER}\
         [member]\nlisten = {}\nseeds = {}\nweight = 1\ndata_dir = {}\n\n\
         [replication]\nn = {}\nw = {}\nr = {}\n\n\
         [storage]\nsync = \"always\"\n\n\
         [security]\ncluster_secret_file = {}\n\n\
         [metrics]\nlisten = {}\nallow_remote = true\n\n\
         [log]\nfilter = \"info\"\n",
        quoted(&format!("0.0.0.0:{RPC_PORT}")),
        quoted_list(seeds),
        quoted(paths.data),
        spec.n,
        spec.w,
        spec.r,
        quoted(paths.secret),
        quoted(&format!("0.0.0.0:{METRICS_PORT}")),
    )
}

/// `gateway.toml`: as `cluster::config::gateway_config`, listening on all
/// addresses. A gateway off loopback serves only with tokens: the tokens
/// file is named, and until it holds a token every request but `/health`
/// and `/v1/openapi.json` is refused.
fn gateway_toml(spec: &Spec, seeds: &[String], paths: &Paths<'_>) -> String {
    format!(
        "{CONFIG_HEADER}\
         [member]\nlisten = {}\nseeds = {}\n\n\
         [replication]\nn = {}\nw = {}\nr = {}\n\n\
         [http]\nlisten = {}\n\n\
         [gateway]\nresp_listen = {}\n\n\
         [security]\ncluster_secret_file = {}\ntokens_file = {}\n\n\
         [log]\nfilter = \"info\"\n",
        quoted(&format!("0.0.0.0:{RPC_PORT}")),
        quoted_list(seeds),
        spec.n,
        spec.w,
        spec.r,
        quoted(&format!("0.0.0.0:{HTTP_PORT}")),
        quoted(&format!("0.0.0.0:{RESP_PORT}")),
        quoted(paths.secret),
        quoted(paths.tokens),
    )
}

/// `text` as the body of a YAML block scalar (`key: |`), each line indented
/// by `indent` spaces (empty lines stay empty).
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The line that makes a cluster secret, as README's "Security" section gives it.
const SECRET_COMMAND: &str =
    "head -c 32 /dev/urandom | xxd -p -c 64 > cluster.secret && chmod 600 cluster.secret";

#[cfg(test)]
mod test_support {
    //! Parsing what the manifests print, for the tests of both targets.

    use std::path::Path;

    use serde::Deserialize as _;

    /// Every YAML document of `text`, as JSON values.
    pub(super) fn documents(text: &str) -> Vec<serde_json::Value> {
        serde_norway::Deserializer::from_str(text)
            .map(|doc| serde_json::Value::deserialize(doc).expect("valid YAML"))
            .filter(|v| !v.is_null())
            .collect()
    }

    /// `config` (TOML text) loaded as the binaries load it: from a file,
    /// then the `SHOAL_*` variables of `env` (only those) over it.
    pub(super) fn load(
        config: &str,
        env: &[(String, String)],
    ) -> Result<shoal_node::config::Config, shoal_node::config::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, config).expect("write config");
        shoal_node::config::Config::load_with_env(Some(Path::new(&path)), env.iter().cloned())
    }

    pub(super) fn str_at<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a str {
        v.pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
    }

    /// The port of an `ip:port` or `host:port` address.
    pub(super) fn port_of(addr: &str) -> u16 {
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr:?}"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn spec() -> Spec {
        Spec {
            nodes: 3,
            n: 3,
            w: 2,
            r: 2,
            image: "shoal:test".into(),
        }
    }

    const PATHS: Paths<'static> = Paths {
        secret: "/s/cluster.secret",
        tokens: "/t/tokens.toml",
        data: "/d/data",
    };

    #[test]
    fn both_configs_load_with_the_schema_and_the_per_container_keys_from_env() {
        let seeds = vec!["a:7000".to_string(), "b:7000".to_string()];
        let env = vec![
            ("SHOAL_MEMBER__ID".to_string(), "a".to_string()),
            ("SHOAL_MEMBER__ADVERTISE".to_string(), "a:7000".to_string()),
        ];
        let node = test_support::load(&node_toml(&spec(), &seeds, &PATHS), &env).unwrap();
        assert_eq!(node.member.id, "a");
        assert_eq!(node.member.advertise.as_deref(), Some("a:7000"));
        assert_eq!(node.member.seeds, seeds);
        assert_eq!(node.member.data_dir, Path::new("/d/data"));
        assert_eq!(
            node.security.cluster_secret_file.as_deref(),
            Some(Path::new("/s/cluster.secret"))
        );
        assert!(node.security.cluster_secret.is_none());
        assert_eq!(node.metrics.listen, "0.0.0.0:9100");
        assert!(node.metrics.allow_remote);
        assert_eq!(
            (node.replication.n, node.replication.w, node.replication.r),
            (3, 2, 2)
        );
        let gateway = test_support::load(&gateway_toml(&spec(), &seeds, &PATHS), &env).unwrap();
        assert_eq!(gateway.http.listen, "0.0.0.0:8080");
        assert_eq!(gateway.gateway.resp_listen, "0.0.0.0:6380");
        assert_eq!(
            gateway.security.tokens_file.as_deref(),
            Some(Path::new("/t/tokens.toml"))
        );
        assert!(!gateway.security.allow_anonymous);
    }

    #[test]
    fn block_scalars_indent_every_line_but_empty_ones() {
        assert_eq!(block("a\n\nb = 1\n", 4), "    a\n\n    b = 1\n");
    }
}
