//! The configuration's unit tests: defaults, the environment's mapping,
//! refusals that name their key, the example file.

use super::*;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
}

#[test]
fn env_overrides_file_and_maps_sections() {
    let dir = std::env::temp_dir().join(format!("shoal-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        "[member]\nid = \"node-1\"\n[replication]\nw = 2\n[storage]\nsync = \"never\"\n",
    )
    .unwrap();
    let c = Config::load_with_env(
        Some(&file),
        env(&[
            ("SHOAL_REPLICATION__W", "1"),
            ("SHOAL_MEMBER__SEEDS", "[\"127.0.0.1:7001\"]"),
            ("SHOAL_STORAGE__SYNC", "periodic"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.member.id, "node-1");
    assert_eq!(c.replication.w, 1);
    assert_eq!(c.storage.sync, SyncMode::Periodic);
    assert_eq!(c.member.seeds, vec!["127.0.0.1:7001".to_string()]);
    std::fs::remove_dir_all(&dir).ok();
}

#[track_caller]
fn check_rejected(toml: &str, env_vars: &[(&str, &str)], names: &str) {
    let dir = std::env::temp_dir().join(format!(
        "shoal-config-rej-{}-{}",
        std::process::id(),
        names.replace('.', "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, toml).unwrap();
    let err = Config::load_with_env(Some(&file), env(env_vars)).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    let message = err.to_string();
    assert!(
        message.contains(names),
        "{message:?} does not name {names:?}"
    );
}

#[test]
fn rejects_unknown_keys_and_bad_values_naming_them() {
    check_rejected("[replication]\nwrites = 2\n", &[], "writes");
    check_rejected("[replicaton]\nw = 2\n", &[], "replicaton");
    check_rejected("", &[("SHOAL_GOSSIP__FANOUTT", "3")], "fanoutt");
    check_rejected("[replication]\nw = 4\n", &[], "replication.w");
    check_rejected("[replication]\nr = 0\n", &[], "replication.r");
    check_rejected("[storage]\nsync = \"sometimes\"\n", &[], "sometimes");
    check_rejected("[member]\nweight = 0\n", &[], "member.weight");
    check_rejected("[member]\nlisten = \"nowhere\"\n", &[], "member.listen");
    check_rejected("[replication]\nn = \"three\"\n", &[], "replication.n");
    check_rejected("", &[("SHOAL_REPLICATION__W", "lots")], "replication.w");
    check_rejected(
        "[anti_entropy]\nleaf_bits = 12\n",
        &[],
        "anti_entropy.leaf_bits",
    );
    check_rejected(
        "[anti_entropy]\nmax_bytes_per_sec = 10\n",
        &[],
        "anti_entropy.max_bytes_per_sec",
    );
    check_rejected(
        "",
        &[("SHOAL_RUNTIME__WORKER_THREADS", "100000")],
        "runtime.worker_threads",
    );
}

#[test]
fn worker_threads_default_to_one_per_cpu_and_can_be_set() {
    let c = Config::load_with_env(None, env(&[("SHOAL_RUNTIME__WORKER_THREADS", "1")])).unwrap();
    assert_eq!(c.runtime.worker_threads, 1);
    let rt = c.runtime.builder().build().expect("a runtime");
    assert_eq!(rt.metrics().num_workers(), 1);
    assert_eq!(Config::default().runtime.worker_threads, 0);
}

#[test]
fn the_commented_example_config_is_every_default() {
    let text = include_str!("../../shoal.example.toml");
    assert_eq!(Config::from_toml(text).unwrap(), Config::default());
}

#[test]
fn missing_file_is_named() {
    let err =
        Config::load_with_env(Some(Path::new("/nonexistent/shoal.toml")), env(&[])).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/shoal.toml"));
}
