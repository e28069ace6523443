//! Ports and the TOML configs xtask writes for each process.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::Path;

use super::state::{Dirs, Proc, State};

/// First port tried for the gateway's gossip listener; nodes take the next ones.
pub(super) const BASE_PORT: u16 = 7100;

/// First port tried for node-1's `/metrics`; node-i takes `+ i`, the
/// node-exporter style range Prometheus users expect.
pub(super) const BASE_METRICS_PORT: u16 = 9100;

/// Port tried first for the gateway's Redis protocol listener (6379 is left
/// to a Redis that may run beside it).
pub(super) const RESP_PORT: u16 = 6380;

pub(super) fn port_free(addr: &str) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// `127.0.0.1:preferred` when free and not already `taken`, else a port the
/// kernel picks.
pub(super) fn pick_port(preferred: u16, taken: &[String]) -> Result<String, String> {
    pick_port_on("127.0.0.1", preferred, taken)
}

/// [`pick_port`] on `host` (an address of this machine's namespace).
pub(super) fn pick_port_on(host: &str, preferred: u16, taken: &[String]) -> Result<String, String> {
    let addr = format!("{host}:{preferred}");
    if !taken.contains(&addr) && port_free(&addr) {
        return Ok(addr);
    }
    for _ in 0..16 {
        let l = TcpListener::bind(format!("{host}:0"))
            .map_err(|e| format!("cannot bind a port on {host}: {e}"))?;
        let a = l
            .local_addr()
            .map_err(|e| format!("cannot bind a port: {e}"))?
            .to_string();
        if !taken.contains(&a) {
            return Ok(a);
        }
    }
    Err("cannot find a free port".into())
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

fn seeds_toml(seeds: &[String]) -> String {
    let items: Vec<String> = seeds.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The `[security]` section: the processes refuse to start without a secret,
/// and read it from a file so that it never shows in `ps` or in the configs.
/// The gateway's also names its client tokens file, which need not exist
/// (no file means no tokens configured) until `cluster token add` makes it;
/// the gateway picks it up then without a restart.
fn security_toml(secret: &Path, tokens: Option<&Path>) -> String {
    let mut out = format!(
        "[security]\ncluster_secret_file = {}\n",
        toml_str(&secret.to_string_lossy())
    );
    if let Some(tokens) = tokens {
        out.push_str(&format!(
            "tokens_file = {}\n",
            toml_str(&tokens.to_string_lossy())
        ));
    }
    out.push('\n');
    out
}

pub(super) fn node_config(p: &Proc, seeds: &[String], s: &State, secret: &Path) -> String {
    let data = p.data_dir.as_deref().unwrap_or(Path::new("data"));
    format!(
        "# Written by `cargo xtask cluster`; SHOAL_* environment variables override any key.\n\
         [member]\nid = {}\nlisten = {}\nadvertise = {}\nseeds = {}\nweight = 1\n{}data_dir = {}\n\n\
         [replication]\nn = {}\nw = {}\nr = {}\n\n\
         [storage]\nsync = \"always\"\n\n\
         {}\
         {}\
         [log]\nfilter = \"info\"\n",
        toml_str(&p.id),
        toml_str(&p.listen),
        toml_str(&p.listen),
        seeds_toml(seeds),
        s.zone_of(&p.id)
            .map(|z| format!("zone = {}\n", toml_str(z)))
            .unwrap_or_default(),
        toml_str(&data.to_string_lossy()),
        s.n,
        s.w,
        s.r,
        security_toml(secret, None),
        p.metrics
            .as_ref()
            .map(|m| format!(
                "[metrics]\nlisten = {}\n{}\n",
                toml_str(m),
                // In its namespace a node's loopback is its own: it serves
                // /metrics on its bridge address, which only this machine
                // reaches.
                if p.netns.is_some() {
                    "allow_remote = true\n"
                } else {
                    ""
                }
            ))
            .unwrap_or_default(),
    )
}

pub(super) fn gateway_config(
    p: &Proc,
    seeds: &[String],
    s: &State,
    secret: &Path,
    tokens: &Path,
) -> String {
    let data = p.data_dir.as_deref().unwrap_or(Path::new("data"));
    format!(
        "# Written by `cargo xtask cluster`; SHOAL_* environment variables override any key.\n\
         [member]\nid = {}\nlisten = {}\nadvertise = {}\nseeds = {}\ndata_dir = {}\n\n\
         [replication]\nn = {}\nw = {}\nr = {}\n\n\
         [http]\nlisten = {}\n\n\
         {}\
         {}\
         [log]\nfilter = \"info\"\n",
        toml_str(&p.id),
        toml_str(&p.listen),
        toml_str(&p.listen),
        seeds_toml(seeds),
        toml_str(&data.to_string_lossy()),
        s.n,
        s.w,
        s.r,
        toml_str(p.http.as_deref().unwrap_or("127.0.0.1:8080")),
        p.resp
            .as_ref()
            .map(|r| format!("[gateway]\nresp_listen = {}\n\n", toml_str(r)))
            .unwrap_or_default(),
        security_toml(secret, Some(tokens)),
    )
}

pub(super) fn node_proc(dirs: &Dirs, i: usize, listen: String, metrics: Option<String>) -> Proc {
    let id = format!("node-{i}");
    Proc {
        config: dirs.cluster.join(format!("{id}.toml")),
        log: dirs.cluster.join(format!("{id}.log")),
        data_dir: Some(dirs.cluster.join(&id).join("data")),
        binary: "shoal-node".into(),
        http: None,
        metrics,
        resp: None,
        netns: None,
        pid: None,
        listen,
        id,
    }
}

pub(super) fn write_config(dirs: &Dirs, p: &Proc, text: &str) -> Result<(), String> {
    if let Some(d) = &p.data_dir {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", dirs.show(d)))?;
    }
    fs::write(&p.config, text).map_err(|e| format!("cannot write {}: {e}", dirs.show(&p.config)))
}

pub(super) fn shoal_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("SHOAL_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_in(dir: &Path) -> (Dirs, State) {
        let dirs = Dirs {
            cluster: dir.to_path_buf(),
            ..Dirs::new()
        };
        let p = node_proc(
            &dirs,
            2,
            "127.0.0.1:7102".into(),
            Some("127.0.0.1:9102".into()),
        );
        let gateway = Proc {
            id: "gateway-1".into(),
            binary: "shoal-gateway".into(),
            listen: "127.0.0.1:7100".into(),
            http: Some("127.0.0.1:8080".into()),
            metrics: None,
            resp: None,
            config: dir.join("gateway.toml"),
            log: dir.join("gateway.log"),
            data_dir: Some(dir.join("gateway")),
            netns: None,
            pid: None,
        };
        let state = State {
            n: 3,
            w: 2,
            r: 2,
            env: BTreeMap::new(),
            zones: Vec::new(),
            netns: None,
            gateway,
            nodes: vec![p],
        };
        (dirs, state)
    }

    #[test]
    fn configs_use_only_schema_keys_and_quote_strings() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, state) = cluster_in(dir.path());
        let text = node_config(
            &state.nodes[0],
            &["127.0.0.1:7101".into(), "127.0.0.1:7102".into()],
            &state,
            &dirs.secret_file(),
        );
        assert!(text.contains("id = \"node-2\""));
        assert!(text.contains("seeds = [\"127.0.0.1:7101\", \"127.0.0.1:7102\"]"));
        assert!(text.contains("[replication]\nn = 3\nw = 2\nr = 2"));
    }

    #[test]
    fn zones_go_round_robin_by_node_number() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, mut state) = cluster_in(dir.path());
        let secret = dirs.secret_file();
        let seeds = ["127.0.0.1:7102".to_string()];
        // No zones: no key, so the node takes the default zone.
        let node = node_config(&state.nodes[0], &seeds, &state, &secret);
        assert!(!node.contains("zone"), "{node}");
        state.zones = vec!["a".into(), "b".into(), "c".into()];
        let zones: Vec<Option<&str>> = [
            "node-1",
            "node-2",
            "node-3",
            "node-4",
            "node-7",
            "gateway-1",
        ]
        .iter()
        .map(|id| state.zone_of(id))
        .collect();
        assert_eq!(
            zones,
            [Some("a"), Some("b"), Some("c"), Some("a"), Some("a"), None]
        );
        // node-2, as `cluster_in` makes it.
        let node = node_config(&state.nodes[0], &seeds, &state, &secret);
        assert!(
            node.contains("weight = 1\nzone = \"b\"\ndata_dir"),
            "{node}"
        );
        let gateway = gateway_config(&state.gateway, &seeds, &state, &secret, &dirs.tokens_file());
        assert!(!gateway.contains("zone"), "{gateway}");
    }

    #[test]
    fn every_config_names_the_secret_file_by_its_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, state) = cluster_in(dir.path());
        let secret = dirs.secret_file();
        assert!(secret.is_absolute());
        assert_eq!(secret, dir.path().join("cluster.secret"));
        let section = format!(
            "\n[security]\ncluster_secret_file = \"{}\"\n",
            secret.display()
        );
        let seeds = ["127.0.0.1:7102".to_string()];
        let node = node_config(&state.nodes[0], &seeds, &state, &secret);
        let gateway = gateway_config(&state.gateway, &seeds, &state, &secret, &dirs.tokens_file());
        for text in [node, gateway] {
            assert_eq!(text.matches(&section).count(), 1, "{text}");
            assert_eq!(text.matches("[security]").count(), 1, "{text}");
        }
    }

    #[test]
    fn the_gateway_config_names_the_tokens_file_next_to_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, state) = cluster_in(dir.path());
        let (secret, tokens) = (dirs.secret_file(), dirs.tokens_file());
        assert!(tokens.is_absolute());
        assert_eq!(tokens, dir.path().join("tokens.toml"));
        let seeds = ["127.0.0.1:7102".to_string()];
        let gateway = gateway_config(&state.gateway, &seeds, &state, &secret, &tokens);
        let section = format!(
            "\n[security]\ncluster_secret_file = \"{}\"\ntokens_file = \"{}\"\n\n[log]",
            secret.display(),
            tokens.display()
        );
        assert_eq!(gateway.matches(&section).count(), 1, "{gateway}");
        assert_eq!(gateway.matches("tokens_file").count(), 1, "{gateway}");
        // Nodes serve no clients: their config has no such key (and they
        // refuse unknown keys).
        let node = node_config(&state.nodes[0], &seeds, &state, &secret);
        assert!(!node.contains("tokens_file"), "{node}");
        // Making the config does not make the file: only `token add` does.
        assert!(!tokens.exists());
    }
}
