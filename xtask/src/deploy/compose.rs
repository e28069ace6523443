//! `cargo xtask deploy compose`: one service per storage node (`node-1`..,
//! the ids `cluster up` gives) and a gateway, a named volume per node, the
//! configs inline, the cluster secret from a file beside the compose file.

use std::fmt::Write as _;

use super::{
    block, gateway_toml, node_toml, quoted, Paths, Spec, HTTP_PORT, RESP_PORT, RPC_PORT,
    SECRET_COMMAND,
};

const NODE_CONFIG: &str = "/etc/shoal/node.toml";
const GATEWAY_CONFIG: &str = "/etc/shoal/gateway.toml";
/// The gateway's service (and DNS) name; its member id is `gateway-1`.
const GATEWAY_SERVICE: &str = "gateway";
const GATEWAY_ID: &str = "gateway-1";
const DATA_MOUNT: &str = "/var/lib/shoal";

/// Compose mounts secrets under `/run/secrets/`.
const PATHS: Paths<'static> = Paths {
    secret: "/run/secrets/cluster.secret",
    tokens: "/etc/shoal/tokens/tokens.toml",
    data: "/var/lib/shoal/data",
};

/// What `deploy compose` renders.
pub(super) struct Compose {
    pub(super) spec: Spec,
    pub(super) gateway_port: u16,
}

fn node_id(i: u16) -> String {
    format!("node-{i}")
}

/// Every node's RPC address by its service name: the seeds and, per node,
/// its `member.advertise`.
fn seeds(spec: &Spec) -> Vec<String> {
    (1..=spec.nodes)
        .map(|i| format!("{}:{RPC_PORT}", node_id(i)))
        .collect()
}

pub(super) fn manifest(c: &Compose) -> Result<String, String> {
    let spec = &c.spec;
    let seeds = seeds(spec);
    let mut out = String::new();
    let _ = write!(
        out,
        "# Shoal on Docker Compose, from `cargo xtask deploy compose --nodes {nodes}`: storage nodes\n\
         # node-1..node-{nodes} and a gateway (http://127.0.0.1:{port}, Redis protocol on\n\
         # 127.0.0.1:{RESP_PORT}); N={n} W={w} R={r}. Needs Compose 2.23.1 or later (inline configs).\n\
         #\n\
         # Beside this file, before `docker compose up -d`:\n\
         # 1. The image {image} must hold shoal-node and shoal-gateway on its PATH\n\
         #    (this repository has no Dockerfile).\n\
         # 2. The cluster secret, made once and never written into this file:\n\
         #      {SECRET_COMMAND}\n\
         #    (containers that run as root read it; with `user:` set it must be\n\
         #    readable by that user, and still not by group or others).\n\
         # 3. Client tokens in ./tokens/tokens.toml: the gateway listens off loopback\n\
         #    inside its container, so until that file holds a token it refuses\n\
         #    every request but /health. It is re-read within seconds:\n\
         #      cargo xtask cluster token add app --permissions read,write   # prints the token once\n\
         #      mkdir -p tokens && cp target/cluster/tokens.toml tokens/\n\
         #\n\
         # Every service reads one config below; SHOAL_MEMBER__ID and\n\
         # SHOAL_MEMBER__ADVERTISE give each its id and name.\n\
         name: shoal\nservices:\n",
        nodes = spec.nodes,
        port = c.gateway_port,
        n = spec.n,
        w = spec.w,
        r = spec.r,
        image = spec.image,
    );
    for i in 1..=spec.nodes {
        let id = node_id(i);
        let _ = write!(
            out,
            "  {id}:\n    image: {image}\n\
             \x20   command: [\"shoal-node\", \"--config\", \"{NODE_CONFIG}\"]\n\
             \x20   environment:\n      SHOAL_MEMBER__ID: {id_q}\n      SHOAL_MEMBER__ADVERTISE: {advertise}\n\
             \x20   configs:\n      - source: node_toml\n        target: {NODE_CONFIG}\n\
             \x20   secrets:\n      - source: cluster_secret\n        target: cluster.secret\n\
             \x20   volumes:\n      - {id}-data:{DATA_MOUNT}\n\
             \x20   restart: unless-stopped\n    stop_grace_period: 60s\n",
            image = quoted(&spec.image),
            id_q = quoted(&id),
            advertise = quoted(&seeds[usize::from(i - 1)]),
        );
    }
    let depends: Vec<String> = (1..=spec.nodes).map(node_id).collect();
    let _ = write!(
        out,
        "  {GATEWAY_SERVICE}:\n    image: {image}\n\
         \x20   command: [\"shoal-gateway\", \"--config\", \"{GATEWAY_CONFIG}\"]\n\
         \x20   environment:\n      SHOAL_MEMBER__ID: {id}\n      SHOAL_MEMBER__ADVERTISE: {advertise}\n\
         \x20   configs:\n      - source: gateway_toml\n        target: {GATEWAY_CONFIG}\n\
         \x20   secrets:\n      - source: cluster_secret\n        target: cluster.secret\n\
         \x20   volumes:\n      - ./tokens:/etc/shoal/tokens:ro\n\
         \x20   ports:\n      - \"127.0.0.1:{port}:{HTTP_PORT}\"\n      - \"127.0.0.1:{RESP_PORT}:{RESP_PORT}\"\n\
         \x20   depends_on: [{depends}]\n\
         \x20   restart: unless-stopped\n",
        image = quoted(&spec.image),
        id = quoted(GATEWAY_ID),
        advertise = quoted(&format!("{GATEWAY_SERVICE}:{RPC_PORT}")),
        port = c.gateway_port,
        depends = depends.join(", "),
    );
    let _ = write!(
        out,
        "configs:\n  node_toml:\n    content: |\n{}  gateway_toml:\n    content: |\n{}\
         secrets:\n  cluster_secret:\n    file: ./cluster.secret\n\
         volumes:\n",
        block(&node_toml(spec, &seeds, &PATHS), 6),
        block(&gateway_toml(spec, &seeds, &PATHS), 6),
    );
    for i in 1..=spec.nodes {
        let _ = writeln!(out, "  {}-data: {{}}", node_id(i));
    }
    // Compose interpolates `$` everywhere, inline configs included.
    if out.contains('$') {
        return Err("the compose file would contain a `$`, which Compose interpolates".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::test_support::{documents, load, port_of, str_at};
    use super::*;

    fn compose(nodes: u16) -> Compose {
        Compose {
            spec: Spec {
                nodes,
                n: 3,
                w: 2,
                r: 2,
                image: "shoal:test".into(),
            },
            gateway_port: 18080,
        }
    }

    fn env_of(service: &Value) -> Vec<(String, String)> {
        service["environment"]
            .as_object()
            .expect("environment map")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
            .collect()
    }

    /// The config a service mounts, by its `configs:` entry.
    fn config_of<'a>(file: &'a Value, service: &Value) -> &'a str {
        let entry = &service["configs"][0];
        assert_eq!(str_at(service, "/command/2"), str_at(entry, "/target"));
        let source = str_at(entry, "/source");
        str_at(file, &format!("/configs/{source}/content"))
    }

    #[test]
    fn one_service_per_node_and_a_gateway_whose_configs_load() {
        let text = manifest(&compose(4)).unwrap();
        let docs = documents(&text);
        assert_eq!(docs.len(), 1);
        let file = &docs[0];
        let services = file["services"].as_object().unwrap();
        let names: Vec<&str> = services.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["gateway", "node-1", "node-2", "node-3", "node-4"],
            "{text}"
        );
        let seeds: Vec<String> = (1..=4).map(|i| format!("node-{i}:7000")).collect();
        let secret_file = str_at(file, "/secrets/cluster_secret/file");
        assert_eq!(secret_file, "./cluster.secret");
        for i in 1..=4 {
            let id = format!("node-{i}");
            let service = &services[&id];
            assert_eq!(str_at(service, "/image"), "shoal:test");
            assert_eq!(str_at(service, "/command/0"), "shoal-node");
            let config = load(config_of(file, service), &env_of(service)).unwrap();
            assert_eq!(config.member.id, id);
            assert_eq!(
                config.member.advertise.as_deref(),
                Some(seeds[i - 1].as_str())
            );
            assert_eq!(config.member.seeds, seeds);
            // The secret mounted where the config looks for it.
            let secret = &service["secrets"][0];
            assert_eq!(str_at(secret, "/source"), "cluster_secret");
            assert_eq!(
                config.security.cluster_secret_file.unwrap(),
                std::path::Path::new("/run/secrets").join(str_at(secret, "/target"))
            );
            // Its data inside its own named volume.
            let volume = str_at(service, "/volumes/0");
            let (name, mount) = volume.split_once(':').unwrap();
            assert_eq!(name, format!("{id}-data"));
            assert!(file["volumes"].get(name).is_some(), "{name} not declared");
            assert!(config.member.data_dir.starts_with(mount));
        }
        let gateway = &services["gateway"];
        assert_eq!(str_at(gateway, "/command/0"), "shoal-gateway");
        let config = load(config_of(file, gateway), &env_of(gateway)).unwrap();
        assert_eq!(config.member.id, "gateway-1");
        assert_eq!(config.member.advertise.as_deref(), Some("gateway:7000"));
        assert_eq!(config.member.seeds, seeds);
        assert_eq!(
            str_at(gateway, "/ports/0"),
            format!("127.0.0.1:18080:{}", port_of(&config.http.listen))
        );
        assert_eq!(
            str_at(gateway, "/ports/1"),
            format!("127.0.0.1:6380:{}", port_of(&config.gateway.resp_listen))
        );
        let tokens = config.security.tokens_file.unwrap();
        let (_, mount) = str_at(gateway, "/volumes/0").split_once(':').unwrap();
        assert!(tokens.starts_with(mount.trim_end_matches(":ro")));
        assert_eq!(gateway["depends_on"].as_array().unwrap().len(), 4);
        assert!(!text.contains('$'));
        assert!(text.contains(&format!("#      {SECRET_COMMAND}\n")));
    }
}
