//! `cargo xtask deploy k8s`: a StatefulSet of storage nodes with a headless
//! Service (their stable DNS names are the seeds), a gateway Deployment and
//! Service, a ConfigMap with both configs, a PodDisruptionBudget; the
//! cluster secret and the tokens come from Secrets the operator creates.

use std::fmt::Write as _;

use super::{
    block, gateway_toml, node_toml, quoted, Paths, Spec, HTTP_PORT, METRICS_PORT, RESP_PORT,
    RPC_PORT, SECRET_COMMAND,
};

/// The storage nodes: pods `shoal-node-0`..`shoal-node-{K-1}`, each its id.
pub(super) const STATEFULSET: &str = "shoal-node";
/// The headless Service that gives each node pod a stable DNS name.
pub(super) const NODES_SERVICE: &str = "shoal-nodes";
/// The gateway's Deployment and Service.
pub(super) const GATEWAY: &str = "shoal-gateway";
const CONFIG_MAP: &str = "shoal-config";
/// The Secret holding `cluster.secret` (made by the operator, never here).
pub(super) const SECRET: &str = "shoal-cluster-secret";
/// The Secret holding `tokens.toml` (optional).
pub(super) const TOKENS_SECRET: &str = "shoal-tokens";

const CONFIG_DIR: &str = "/etc/shoal/config";
const SECRET_DIR: &str = "/etc/shoal/secret";
const TOKENS_DIR: &str = "/etc/shoal/tokens";
const DATA_MOUNT: &str = "/var/lib/shoal";

/// What `deploy k8s` renders.
pub(super) struct K8s {
    pub(super) spec: Spec,
    pub(super) namespace: String,
    pub(super) storage: String,
    pub(super) storage_class: Option<String>,
    pub(super) cluster_domain: String,
}

/// A DNS-1123 label: what a namespace name must be.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl K8s {
    fn check(&self) -> Result<(), String> {
        if !is_label(&self.namespace) {
            return Err(format!(
                "--namespace {:?} is not a DNS label (a-z, 0-9, '-', at most 63)",
                self.namespace
            ));
        }
        if !self.cluster_domain.split('.').all(is_label) {
            return Err(format!(
                "--cluster-domain {:?} is not a DNS name",
                self.cluster_domain
            ));
        }
        if let Some(class) = &self.storage_class {
            if !class.split('.').all(is_label) {
                return Err(format!("--storage-class {class:?} is not a DNS name"));
            }
        }
        let s = &self.storage;
        if !s.starts_with(|c: char| c.is_ascii_digit())
            || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return Err(format!(
                "--storage {s:?} is not a Kubernetes quantity (e.g. 10Gi)"
            ));
        }
        Ok(())
    }

    /// The suffix of every node's stable name: `.shoal-nodes.NS.svc.DOMAIN`.
    fn domain(&self) -> String {
        format!(
            "{NODES_SERVICE}.{}.svc.{}",
            self.namespace, self.cluster_domain
        )
    }

    /// Every node's RPC address by its stable DNS name: the seeds, and each
    /// pod's `member.advertise` (the same string, so a member drops itself
    /// from its seeds).
    pub(super) fn seeds(&self) -> Vec<String> {
        (0..self.spec.nodes)
            .map(|i| format!("{STATEFULSET}-{i}.{}:{RPC_PORT}", self.domain()))
            .collect()
    }
}

const PATHS: Paths<'static> = Paths {
    secret: "/etc/shoal/secret/cluster.secret",
    tokens: "/etc/shoal/tokens/tokens.toml",
    data: "/var/lib/shoal/data",
};

fn labels(component: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!("{pad}app.kubernetes.io/name: shoal\n{pad}app.kubernetes.io/component: {component}\n")
}

/// The whole manifest, documents separated by `---`.
pub(super) fn manifest(k: &K8s) -> Result<String, String> {
    k.check()?;
    let spec = &k.spec;
    let ns = &k.namespace;
    let seeds = k.seeds();
    let mut out = String::new();
    let nodes = spec.nodes;
    let _ = write!(
        out,
        "# Shoal on Kubernetes, from `cargo xtask deploy k8s --nodes {nodes}`: {nodes} storage nodes\n\
         # (StatefulSet {STATEFULSET}, pods {STATEFULSET}-0..{last}, each named\n\
         # {STATEFULSET}-<i>.{domain} by the headless Service {NODES_SERVICE}) and a\n\
         # gateway (Deployment and Service {GATEWAY}: HTTP {HTTP_PORT}, Redis protocol {RESP_PORT}).\n\
         # N={n} W={w} R={r}; every pod reads its config from the ConfigMap {CONFIG_MAP}, and\n\
         # SHOAL_MEMBER__ID / SHOAL_MEMBER__ADVERTISE give each its id and stable name.\n\
         #\n\
         # Before the pods can start:\n\
         # 1. The image {image} must hold shoal-node and shoal-gateway on its PATH\n\
         #    (`cargo build --release -p shoal-node -p shoal-gateway`; this repository has\n\
         #    no Dockerfile).\n\
         # 2. The cluster secret, made once and never written into this file:\n\
         #      {SECRET_COMMAND}\n\
         #      kubectl -n {ns} create secret generic {SECRET} --from-file=cluster.secret=cluster.secret\n\
         #    Every pod waits for it; shoal-admin needs the same file.\n\
         # 3. Client tokens: the gateway listens off loopback, so until the Secret\n\
         #    {TOKENS_SECRET} holds a token it refuses every request but /health:\n\
         #      cargo xtask cluster token add app --permissions read,write   # prints the token once\n\
         #      kubectl -n {ns} create secret generic {TOKENS_SECRET} --from-file=tokens.toml=target/cluster/tokens.toml\n\
         #    (the file keeps only hashes; the gateway re-reads it, and the kubelet\n\
         #    refreshes a changed Secret within about a minute).\n\
         #\n\
         # Then: kubectl apply -f <this file>; kubectl -n {ns} port-forward svc/{GATEWAY} {HTTP_PORT}\n\
         #\n\
         # The pods set no fsGroup: the kubelet would then make the mounted secret\n\
         # group-readable (0440), and Shoal refuses a secret file that group or\n\
         # others can read. The containers run as the image's user, which must be\n\
         # able to read the secret (mode 0400, owned by root) and write the volume.\n\
         #\n\
         # Adding nodes later: a node joining a running cluster needs member.join = true\n\
         # (SHOAL_MEMBER__JOIN=true) and the bootstrap nodes must not have it, which one\n\
         # pod template cannot say; `kubectl scale` alone would start a node that serves\n\
         # reads before it has its data. `cargo xtask cluster plan add --url <gateway>`\n\
         # shows what a join would move.\n",
        last = nodes - 1,
        domain = k.domain(),
        n = spec.n,
        w = spec.w,
        r = spec.r,
        image = spec.image,
    );
    if ns != "default" {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    app.kubernetes.io/name: shoal\n"
        );
    }
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CONFIG_MAP}\n  namespace: {ns}\n  labels:\n{}\
         data:\n  node.toml: |\n{}  gateway.toml: |\n{}",
        labels("config", 4),
        block(&node_toml(spec, &seeds, &PATHS), 4),
        block(&gateway_toml(spec, &seeds, &PATHS), 4),
    );
    // Not-ready pods are published too: gossip must find its seeds before
    // any node is ready, and a node's readiness says nothing about its peers.
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {NODES_SERVICE}\n  namespace: {ns}\n  labels:\n{}\
         spec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector:\n{}\
         \x20 ports:\n    - name: rpc\n      port: {RPC_PORT}\n      targetPort: rpc\n\
         \x20   - name: metrics\n      port: {METRICS_PORT}\n      targetPort: metrics\n",
        labels("node", 4),
        labels("node", 4),
    );
    let storage_class = k
        .storage_class
        .as_ref()
        .map(|c| format!("        storageClassName: {c}\n"))
        .unwrap_or_default();
    let _ = write!(
        out,
        "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {STATEFULSET}\n  namespace: {ns}\n  labels:\n{node_labels4}\
         spec:\n  serviceName: {NODES_SERVICE}\n  replicas: {nodes}\n\
         \x20 # All at once: the nodes bootstrap the cluster together.\n\
         \x20 podManagementPolicy: Parallel\n\
         \x20 selector:\n    matchLabels:\n{node_labels6}\
         \x20 template:\n    metadata:\n      labels:\n{node_labels8}\
         \x20   spec:\n      terminationGracePeriodSeconds: 60\n      containers:\n\
         \x20       - name: shoal-node\n          image: {image}\n\
         \x20         command: [\"shoal-node\", \"--config\", \"{CONFIG_DIR}/node.toml\"]\n\
         \x20         env:\n\
         \x20           - name: POD_NAME\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.name\n\
         \x20           # The pod's name is its ring id: stable across restarts, and tokens derive from it.\n\
         \x20           - name: SHOAL_MEMBER__ID\n              value: \"$(POD_NAME)\"\n\
         \x20           # Its stable DNS name, as in member.seeds; peers resolve it on every dial.\n\
         \x20           - name: SHOAL_MEMBER__ADVERTISE\n              value: \"$(POD_NAME).{domain}:{RPC_PORT}\"\n\
         \x20         ports:\n            - name: rpc\n              containerPort: {RPC_PORT}\n\
         \x20           - name: metrics\n              containerPort: {METRICS_PORT}\n\
         \x20         # The process is up; its RPC port speaks only the cluster's handshake.\n\
         \x20         readinessProbe:\n            httpGet:\n              path: /metrics\n              port: metrics\n\
         \x20           periodSeconds: 10\n\
         \x20         securityContext:\n            allowPrivilegeEscalation: false\n\
         \x20         volumeMounts:\n\
         \x20           - name: data\n              mountPath: {DATA_MOUNT}\n\
         \x20           - name: config\n              mountPath: {CONFIG_DIR}\n              readOnly: true\n\
         \x20           - name: cluster-secret\n              mountPath: {SECRET_DIR}\n              readOnly: true\n\
         \x20     volumes:\n\
         \x20       - name: config\n          configMap:\n            name: {CONFIG_MAP}\n\
         {secret_volume}\
         \x20 volumeClaimTemplates:\n    - metadata:\n        name: data\n      spec:\n\
         \x20       accessModes: [\"ReadWriteOnce\"]\n{storage_class}\
         \x20       resources:\n          requests:\n            storage: {storage}\n",
        node_labels4 = labels("node", 4),
        node_labels6 = labels("node", 6),
        node_labels8 = labels("node", 8),
        image = quoted(&spec.image),
        domain = k.domain(),
        secret_volume = secret_volume(),
        storage = k.storage,
    );
    // Voluntary disruptions (drains, upgrades) take down no more nodes than
    // the quorums tolerate.
    let tolerated = spec.n.saturating_sub(spec.w.max(spec.r)).max(1);
    let _ = write!(
        out,
        "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {STATEFULSET}\n  namespace: {ns}\n  labels:\n{}\
         spec:\n  maxUnavailable: {tolerated}\n  selector:\n    matchLabels:\n{}",
        labels("node", 4),
        labels("node", 6),
    );
    let _ = write!(
        out,
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {GATEWAY}\n  namespace: {ns}\n  labels:\n{gw4}\
         spec:\n  replicas: 1\n  selector:\n    matchLabels:\n{gw6}\
         \x20 template:\n    metadata:\n      labels:\n{gw8}\
         \x20   spec:\n      containers:\n\
         \x20       - name: shoal-gateway\n          image: {image}\n\
         \x20         command: [\"shoal-gateway\", \"--config\", \"{CONFIG_DIR}/gateway.toml\"]\n\
         \x20         env:\n\
         \x20           - name: POD_NAME\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.name\n\
         \x20           - name: POD_IP\n              valueFrom:\n                fieldRef:\n                  fieldPath: status.podIP\n\
         \x20           - name: SHOAL_MEMBER__ID\n              value: \"$(POD_NAME)\"\n\
         \x20           # Gateways are no seeds and hold no data: the pod's address will do.\n\
         \x20           - name: SHOAL_MEMBER__ADVERTISE\n              value: \"$(POD_IP):{RPC_PORT}\"\n\
         \x20         ports:\n            - name: rpc\n              containerPort: {RPC_PORT}\n\
         \x20           - name: http\n              containerPort: {HTTP_PORT}\n\
         \x20           - name: resp\n              containerPort: {RESP_PORT}\n\
         \x20         # 200 once at least W storage nodes are live; needs no token.\n\
         \x20         readinessProbe:\n            httpGet:\n              path: /health\n              port: http\n\
         \x20           periodSeconds: 5\n\
         \x20         securityContext:\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n\
         \x20         volumeMounts:\n\
         \x20           - name: config\n              mountPath: {CONFIG_DIR}\n              readOnly: true\n\
         \x20           - name: cluster-secret\n              mountPath: {SECRET_DIR}\n              readOnly: true\n\
         \x20           - name: tokens\n              mountPath: {TOKENS_DIR}\n              readOnly: true\n\
         \x20     volumes:\n\
         \x20       - name: config\n          configMap:\n            name: {CONFIG_MAP}\n\
         {secret_volume}\
         \x20       # Optional: without it the gateway starts and refuses all but /health.\n\
         \x20       - name: tokens\n          secret:\n            secretName: {TOKENS_SECRET}\n            optional: true\n\
         \x20           defaultMode: 256\n",
        gw4 = labels("gateway", 4),
        gw6 = labels("gateway", 6),
        gw8 = labels("gateway", 8),
        image = quoted(&spec.image),
        secret_volume = secret_volume(),
    );
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {GATEWAY}\n  namespace: {ns}\n  labels:\n{}\
         spec:\n  selector:\n{}\
         \x20 ports:\n    - name: http\n      port: {HTTP_PORT}\n      targetPort: http\n\
         \x20   - name: resp\n      port: {RESP_PORT}\n      targetPort: resp\n",
        labels("gateway", 4),
        labels("gateway", 4),
    );
    Ok(out)
}

/// The cluster secret's volume, for a pod's `volumes:` list.
fn secret_volume() -> String {
    format!(
        "        # Made by `kubectl create secret` (see the top of this file), never here.\n\
         \x20       - name: cluster-secret\n          secret:\n            secretName: {SECRET}\n\
         \x20           items:\n              - key: cluster.secret\n                path: cluster.secret\n\
         \x20           # 0400: Shoal refuses a secret file that group or others can read.\n\
         \x20           defaultMode: 256\n"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::super::test_support::{documents, load, port_of, str_at};
    use super::*;

    fn k8s(nodes: u16, namespace: &str) -> K8s {
        K8s {
            spec: Spec {
                nodes,
                n: 3,
                w: 2,
                r: 2,
                image: "registry.example/shoal:1".into(),
            },
            namespace: namespace.into(),
            storage: "20Gi".into(),
            storage_class: Some("fast".into()),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn by_kind(docs: &[Value]) -> BTreeMap<String, Value> {
        docs.iter()
            .map(|d| {
                (
                    format!("{}/{}", str_at(d, "/kind"), str_at(d, "/metadata/name")),
                    d.clone(),
                )
            })
            .collect()
    }

    /// The container's environment as the kubelet hands it over: `$(VAR)`
    /// replaced by the earlier variables, field references by `fields`.
    fn container_env(container: &Value, fields: &BTreeMap<&str, &str>) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for var in container["env"].as_array().expect("env list") {
            let name = str_at(var, "/name").to_string();
            let value = match var.get("value") {
                Some(v) => {
                    let mut text = v.as_str().expect("string value").to_string();
                    for (k, val) in &env {
                        text = text.replace(&format!("$({k})"), val);
                    }
                    assert!(!text.contains("$("), "{name}: unresolved {text}");
                    text
                }
                None => {
                    let path = str_at(var, "/valueFrom/fieldRef/fieldPath");
                    fields
                        .get(path)
                        .unwrap_or_else(|| panic!("no field {path}"))
                        .to_string()
                }
            };
            env.push((name, value));
        }
        env
    }

    fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
        container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == volume)
            .map(|m| str_at(m, "/mountPath"))
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    }

    fn container_port(container: &Value, name: &str) -> u16 {
        container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    /// `path` in the container's filesystem: which volume it lies in and the
    /// file name inside it.
    fn in_mount<'a>(container: &Value, volume: &str, path: &'a str) -> &'a str {
        let dir = mount_path(container, volume);
        path.strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or_else(|| panic!("{path} is not under the {volume} mount {dir}"))
    }

    fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    #[test]
    fn the_manifest_is_yaml_with_the_objects_the_cluster_needs() {
        let text = manifest(&k8s(5, "kv")).unwrap();
        let docs = documents(&text);
        let objects = by_kind(&docs);
        let names: Vec<&str> = objects.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "ConfigMap/shoal-config",
                "Deployment/shoal-gateway",
                "Namespace/kv",
                "PodDisruptionBudget/shoal-node",
                "Service/shoal-gateway",
                "Service/shoal-nodes",
                "StatefulSet/shoal-node",
            ]
        );
        for d in &docs {
            if d["kind"] != "Namespace" {
                assert_eq!(str_at(d, "/metadata/namespace"), "kv", "{d}");
            }
        }
        // No secret is ever in the manifest, only how to make one.
        assert!(docs.iter().all(|d| d["kind"] != "Secret"));
        assert!(text.contains(&format!(
            "#      kubectl -n kv create secret generic {SECRET} --from-file=cluster.secret=cluster.secret\n"
        )));
        assert!(!manifest(&k8s(1, "default"))
            .unwrap()
            .contains("kind: Namespace"));

        let sts = &objects["StatefulSet/shoal-node"];
        let headless = &objects["Service/shoal-nodes"];
        assert_eq!(sts["spec"]["replicas"], 5);
        assert_eq!(str_at(sts, "/spec/serviceName"), NODES_SERVICE);
        assert_eq!(str_at(sts, "/spec/podManagementPolicy"), "Parallel");
        assert_eq!(str_at(headless, "/spec/clusterIP"), "None");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
        assert_eq!(&headless["spec"]["selector"], pod_labels);
        assert_eq!(&sts["spec"]["selector"]["matchLabels"], pod_labels);
        assert_eq!(
            &objects["PodDisruptionBudget/shoal-node"]["spec"]["selector"]["matchLabels"],
            pod_labels
        );
        let claim = &sts["spec"]["volumeClaimTemplates"][0];
        assert_eq!(str_at(claim, "/metadata/name"), "data");
        assert_eq!(str_at(claim, "/spec/resources/requests/storage"), "20Gi");
        assert_eq!(str_at(claim, "/spec/storageClassName"), "fast");
        let node = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(str_at(node, "/image"), "registry.example/shoal:1");
        assert_eq!(str_at(node, "/readinessProbe/httpGet/path"), "/metrics");

        let deployment = &objects["Deployment/shoal-gateway"];
        let gw_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            &objects["Service/shoal-gateway"]["spec"]["selector"],
            gw_labels
        );
        assert_ne!(gw_labels, pod_labels);
        let gw = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(str_at(gw, "/readinessProbe/httpGet/path"), "/health");
        assert_eq!(str_at(gw, "/readinessProbe/httpGet/port"), "http");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(volume(pod, "tokens")["secret"]["optional"], true);
        for pod in [pod, &sts["spec"]["template"]["spec"]] {
            let secret = &volume(pod, "cluster-secret")["secret"];
            assert_eq!(str_at(secret, "/secretName"), SECRET);
            assert_eq!(secret["defaultMode"], 0o400);
            assert!(pod.get("securityContext").is_none(), "no fsGroup");
        }
    }

    /// Each embedded config, loaded by `shoal_node::config::Config` with the
    /// environment the pod gets, is what the manifest around it says: its
    /// ports, mounts and names.
    #[test]
    fn the_embedded_configs_load_with_the_pods_environment_and_match_the_manifest() {
        let k = k8s(4, "kv");
        let objects = by_kind(&documents(&manifest(&k).unwrap()));
        let data = &objects["ConfigMap/shoal-config"]["data"];
        let sts = &objects["StatefulSet/shoal-node"];
        let node = &sts["spec"]["template"]["spec"]["containers"][0];
        let command: Vec<&str> = node["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(command[..2], ["shoal-node", "--config"]);
        let file = in_mount(node, "config", command[2]);
        let seeds = k.seeds();
        assert_eq!(seeds.len(), 4);
        for i in 0..4u16 {
            let pod = format!("shoal-node-{i}");
            let fields = BTreeMap::from([("metadata.name", pod.as_str())]);
            let env = container_env(node, &fields);
            assert!(env.iter().any(|(k, _)| k == "SHOAL_MEMBER__ID"));
            let config = load(str_at(data, &format!("/{file}")), &env).unwrap();
            assert_eq!(config.member.id, pod);
            // The stable name the headless Service gives the pod, and one of
            // the seeds exactly (so the member drops itself from them).
            let advertise = config.member.advertise.clone().unwrap();
            assert_eq!(
                advertise,
                format!("shoal-node-{i}.shoal-nodes.kv.svc.cluster.local:7000")
            );
            assert_eq!(config.member.seeds, seeds);
            assert_eq!(seeds[usize::from(i)], advertise);
            assert!(!config.member.join);
            assert_eq!(port_of(&config.member.listen), container_port(node, "rpc"));
            assert_eq!(port_of(&advertise), container_port(node, "rpc"));
            assert_eq!(
                port_of(&config.metrics.listen),
                container_port(node, "metrics")
            );
            let secret = config.security.cluster_secret_file.clone().unwrap();
            let secret = secret.to_str().unwrap();
            assert_eq!(in_mount(node, "cluster-secret", secret), "cluster.secret");
            assert!(config.security.cluster_secret.is_none());
            in_mount(node, "data", config.member.data_dir.to_str().unwrap());
            assert_eq!(
                (
                    config.replication.n,
                    config.replication.w,
                    config.replication.r
                ),
                (3, 2, 2)
            );
        }
        let headless = &objects["Service/shoal-nodes"];
        assert_eq!(headless["spec"]["ports"][0]["port"], u64::from(RPC_PORT));

        let gw = &objects["Deployment/shoal-gateway"]["spec"]["template"]["spec"]["containers"][0];
        let fields = BTreeMap::from([
            ("metadata.name", "shoal-gateway-7c9d-x2x7q"),
            ("status.podIP", "10.1.2.3"),
        ]);
        let file = in_mount(gw, "config", gw["command"][2].as_str().unwrap());
        let config = load(
            str_at(data, &format!("/{file}")),
            &container_env(gw, &fields),
        )
        .unwrap();
        assert_eq!(config.member.id, "shoal-gateway-7c9d-x2x7q");
        assert_eq!(config.member.advertise.as_deref(), Some("10.1.2.3:7000"));
        assert_eq!(config.member.seeds, seeds);
        assert_eq!(port_of(&config.http.listen), container_port(gw, "http"));
        assert_eq!(
            port_of(&config.gateway.resp_listen),
            container_port(gw, "resp")
        );
        let tokens = config.security.tokens_file.clone().unwrap();
        assert_eq!(
            in_mount(gw, "tokens", tokens.to_str().unwrap()),
            "tokens.toml"
        );
        let secret = config.security.cluster_secret_file.clone().unwrap();
        in_mount(gw, "cluster-secret", secret.to_str().unwrap());
        let service = &objects["Service/shoal-gateway"];
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn bad_names_are_refused() {
        let mut k = k8s(3, "Bad_NS");
        assert!(manifest(&k).unwrap_err().contains("--namespace"));
        k.namespace = "ok".into();
        k.storage = "lots".into();
        assert!(manifest(&k).unwrap_err().contains("--storage"));
        k.storage = "1Gi".into();
        k.cluster_domain = "a..b".into();
        assert!(manifest(&k).unwrap_err().contains("--cluster-domain"));
    }
}
