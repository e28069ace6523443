//! `up` and `down`: a whole cluster at once.

use std::fs;
use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::config::{
    gateway_config, node_config, node_proc, pick_port, pick_port_on, port_free, shoal_env,
    write_config, BASE_METRICS_PORT, BASE_PORT, RESP_PORT,
};
use super::netns;
use super::process::{alive, died_message, pid_text, signal, spawn, wait_dead, STOP_DEADLINE};
use super::secret;
use super::state::{Dirs, Proc, State};
use super::tokens;
use super::view::{cluster_view, http_get, member_alive};
use super::UpArgs;
use crate::{cargo, run_cmd};

/// How long `up` waits for the gateway to report every node alive.
const UP_DEADLINE: Duration = Duration::from_secs(60);
const GATEWAY_ID: &str = "gateway-1";

pub(super) fn up(dirs: &Dirs, a: &UpArgs) -> Result<(), String> {
    if a.n == 0 || a.w == 0 || a.r == 0 || a.w > a.n || a.r > a.n {
        return Err(format!(
            "need 1 <= W <= N and 1 <= R <= N (got N={} W={} R={})",
            a.n, a.w, a.r
        ));
    }
    check_zones(&a.zones)?;
    if a.netns {
        netns::require_root("`cluster up --netns`")?;
    }
    if let Some(state) = State::load(dirs)? {
        let live: Vec<&str> = state
            .procs()
            .filter(|p| alive(p))
            .map(|p| p.id.as_str())
            .collect();
        if !live.is_empty() {
            println!(
                "a cluster is already running ({} of {} processes alive: {}); nothing changed.\n\
                 gateway: http://{}\n\
                 `cargo xtask cluster status` shows it, `cargo xtask cluster down` stops it.",
                live.len(),
                state.nodes.len() + 1,
                live.join(", "),
                state.gateway.http.as_deref().unwrap_or("?"),
            );
            return Ok(());
        }
    }
    if a.netns {
        let found = netns::leftovers();
        if !found.is_empty() {
            return Err(format!(
                "network namespaces or links of a netns cluster exist already ({}): another \
                 `up --netns` cluster runs on this machine, or a crashed one left them; \
                 `cargo xtask cluster down --netns` removes them",
                found.join(", ")
            ));
        }
    }
    let http = format!("127.0.0.1:{}", a.gateway_port);
    if !port_free(&http) {
        return Err(format!(
            "gateway port {} is already taken (127.0.0.1:{}); free it or pass --gateway-port",
            a.gateway_port, a.gateway_port
        ));
    }
    // Before the build, so that a refused secret is reported at once.
    fs::create_dir_all(&dirs.cluster)
        .map_err(|e| format!("cannot create {}: {e}", dirs.show(&dirs.cluster)))?;
    let secret = dirs.secret_file();
    if secret::ensure(&secret)? {
        eprintln!("created the cluster secret {}", dirs.show(&secret));
    }
    // A tokens file the gateway could not read would leave its access rules
    // unclear: refuse it now, naming it, rather than in the gateway's log.
    tokens::load(&dirs.tokens_file())?;
    if !a.no_build {
        let mut build = cargo();
        build.current_dir(&dirs.root).args([
            "build",
            "--release",
            "-p",
            "shoal-node",
            "-p",
            "shoal-gateway",
        ]);
        run_cmd(&mut build).map_err(|e| format!("building the release binaries failed: {e}"))?;
    }
    for binary in ["shoal-node", "shoal-gateway"] {
        let path = dirs.binary(binary);
        if !path.exists() {
            return Err(format!(
                "{} is not built (`cargo build --release -p {binary}`, or drop --no-build)",
                dirs.show(&path)
            ));
        }
    }

    // Ports: the gateway's gossip port first, then one per node. With
    // `--netns` each node has a namespace (and so every port) of its own,
    // and the gateway gossips on the bridge's address.
    let net = a.netns.then(netns::layout);
    if let Some(net) = &net {
        netns::bridge_up(net)?;
    }
    let mut taken = vec![http.clone()];
    let gossip = match &net {
        Some(net) => pick_port_on(&netns::bridge_host(net), BASE_PORT, &taken),
        None => pick_port(BASE_PORT, &taken),
    };
    let gossip = match gossip {
        Ok(g) => g,
        Err(e) => {
            if net.is_some() {
                let _ = netns::teardown();
            }
            return Err(e);
        }
    };
    taken.push(gossip.clone());
    let mut nodes = Vec::new();
    for i in 1..=usize::from(a.nodes) {
        let offset = u16::try_from(i).unwrap_or(0);
        let (listen, metrics) = match &net {
            Some(net) => {
                let host = netns::node_host(net, i);
                (
                    format!("{host}:{}", BASE_PORT.saturating_add(offset)),
                    format!("{host}:{}", BASE_METRICS_PORT.saturating_add(offset)),
                )
            }
            None => {
                let listen = pick_port(BASE_PORT.saturating_add(offset), &taken)?;
                taken.push(listen.clone());
                let metrics = pick_port(BASE_METRICS_PORT.saturating_add(offset), &taken)?;
                taken.push(metrics.clone());
                (listen, metrics)
            }
        };
        let mut p = node_proc(dirs, i, listen, Some(metrics));
        p.netns = net.is_some().then(|| netns::node_ns(i));
        nodes.push(p);
    }
    let resp = pick_port(RESP_PORT, &taken)?;
    taken.push(resp.clone());
    let gateway = Proc {
        id: GATEWAY_ID.into(),
        binary: "shoal-gateway".into(),
        listen: gossip,
        http: Some(http.clone()),
        metrics: None,
        resp: Some(resp),
        config: dirs.cluster.join("gateway.toml"),
        log: dirs.cluster.join("gateway.log"),
        data_dir: Some(dirs.cluster.join("gateway")),
        netns: None,
        pid: None,
    };
    let mut state = State {
        n: a.n,
        w: a.w,
        r: a.r,
        env: shoal_env(),
        zones: a.zones.clone(),
        netns: net.clone(),
        gateway,
        nodes,
    };
    if let Some(net) = &net {
        // Recorded before the namespaces exist, so that `down` removes them
        // whatever happens next.
        state.save(dirs)?;
        for i in 1..=state.nodes.len() {
            if let Err(e) = netns::node_up(net, i) {
                let _ = netns::teardown();
                return Err(format!("cannot set up node-{i}'s namespace: {e}"));
            }
        }
    }
    let seeds: Vec<String> = state.nodes.iter().map(|p| p.listen.clone()).collect();
    for p in &state.nodes {
        write_config(dirs, p, &node_config(p, &seeds, &state, &secret))?;
    }
    write_config(
        dirs,
        &state.gateway,
        &gateway_config(&state.gateway, &seeds, &state, &secret, &dirs.tokens_file()),
    )?;

    // Start everything, recording each pid as soon as it exists so a failure
    // part-way leaves a state that `down` can clean up.
    let mut children: Vec<(usize, Child, u64)> = Vec::new();
    let count = state.nodes.len();
    for i in 0..=count {
        let p = if i < count {
            &mut state.nodes[i]
        } else {
            &mut state.gateway
        };
        let (child, offset) = match spawn(dirs, p, &state.env) {
            Ok(c) => c,
            Err(e) => {
                state.save(dirs)?;
                teardown(dirs, &mut state, children);
                return Err(e);
            }
        };
        p.pid = Some(child.id());
        children.push((i, child, offset));
    }
    state.save(dirs)?;
    eprintln!(
        "started {} nodes and the gateway; waiting (up to {} s) for http://{http}/health and every node alive",
        count,
        UP_DEADLINE.as_secs()
    );

    let until = Instant::now() + UP_DEADLINE;
    let mut last: String;
    loop {
        for (i, child, offset) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                let p = if *i < count {
                    state.nodes[*i].clone()
                } else {
                    state.gateway.clone()
                };
                let msg = died_message(dirs, &p, status, *offset);
                teardown(dirs, &mut state, children);
                return Err(msg);
            }
        }
        match ready(&http, &state) {
            Ok(()) => break,
            Err(e) => last = e,
        }
        if Instant::now() >= until {
            teardown(dirs, &mut state, children);
            return Err(format!(
                "the cluster was not ready within {} s: {last}; logs in {}",
                UP_DEADLINE.as_secs(),
                dirs.show(&dirs.cluster)
            ));
        }
        sleep(Duration::from_millis(250));
    }
    // The children outlive us (own process group); dropping a Child neither
    // kills nor waits for it.
    drop(children);
    print_summary(dirs, &state);
    Ok(())
}

/// `--zones` as the nodes will take them (`member.zone`): each 1..=64
/// letters, digits, '-', '_' or '.', none twice.
fn check_zones(zones: &[String]) -> Result<(), String> {
    for (i, z) in zones.iter().enumerate() {
        let valid = !z.is_empty()
            && z.len() <= 64
            && z.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(format!(
                "--zones: {z:?} is not a zone name (1 to 64 letters, digits, '-', '_' or '.')"
            ));
        }
        if zones[..i].contains(z) {
            return Err(format!("--zones: {z:?} is given twice"));
        }
    }
    Ok(())
}

/// `Ok` once `/health` is 200 and `/v1/cluster` lists every node alive.
fn ready(http: &str, state: &State) -> Result<(), String> {
    let health = http_get(http, "/health")?;
    if health.status != 200 {
        return Err(format!(
            "/health answered {}: {}",
            health.status,
            String::from_utf8_lossy(&health.body).trim()
        ));
    }
    let view = cluster_view(http)?;
    let missing: Vec<&str> = state
        .nodes
        .iter()
        .filter(|p| !member_alive(&view, &p.id))
        .map(|p| p.id.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not yet alive in /v1/cluster: {}",
            missing.join(", ")
        ))
    }
}

/// Stops what a failed `up` started, keeping the logs.
fn teardown(dirs: &Dirs, state: &mut State, children: Vec<(usize, Child, u64)>) {
    for (_, mut child, _) in children {
        let _ = signal(child.id(), "TERM");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    for p in state
        .nodes
        .iter_mut()
        .chain(std::iter::once(&mut state.gateway))
    {
        p.pid = None;
    }
    if state.netns.is_some() {
        if let Err(e) = netns::teardown() {
            eprintln!("removing the namespaces failed: {e}");
        }
    }
    let _ = state.save(dirs);
    eprintln!(
        "stopped the processes this `up` started; configs and logs stay in {}",
        dirs.show(&dirs.cluster)
    );
}

/// The port of a `host:port`.
fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(_, p)| p)
}

fn print_summary(dirs: &Dirs, state: &State) {
    let http = state.gateway.http.as_deref().unwrap_or("?");
    println!(
        "Shoal cluster up: {} nodes, N={} W={} R={}",
        state.nodes.len(),
        state.n,
        state.w,
        state.r
    );
    if !state.zones.is_empty() {
        println!(
            "zones, round robin: {} (the N owners of a key lie in distinct zones)",
            state.zones.join(", ")
        );
    }
    if let Some(net) = &state.netns {
        println!(
            "network namespaces: node-i runs in shoal-node-i at {}.i, on bridge {} ({}, where the \
             gateway gossips); `cargo xtask cluster partition node-2` cuts a node off, `heal \
             node-2` restores it",
            net.subnet,
            net.bridge,
            netns::bridge_host(net)
        );
    }
    if !state.env.is_empty() {
        let vars: Vec<String> = state.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("environment given to every process: {}", vars.join(" "));
    }
    println!();
    println!(
        "  gateway   http://{http}   (gossip {}, pid {})",
        state.gateway.listen,
        pid_text(&state.gateway)
    );
    if let Some(resp) = &state.gateway.resp {
        println!(
            "  redis     {resp}   (RESP: redis-cli -p {})",
            port_of(resp)
        );
    }
    for p in &state.nodes {
        let zone = state
            .zone_of(&p.id)
            .map(|z| format!("   zone {z}"))
            .unwrap_or_default();
        println!("  {:<9} {:<22} pid {}{zone}", p.id, p.listen, pid_text(p));
    }
    println!();
    println!(
        "configs, logs ({{node-i,gateway}}.log) and data: {}/",
        dirs.show(&dirs.cluster)
    );
    println!(
        "cluster secret (every process and shoal-admin need it): {}",
        dirs.show(&dirs.secret_file())
    );
    let tokens = dirs.tokens_file();
    let configured = tokens::load(&tokens).map_or(0, |t| t.len());
    println!(
        "client tokens (read by the gateway within seconds of a change): {} ({})",
        dirs.show(&tokens),
        if configured == 0 {
            "none yet, so anonymous access on loopback; `cargo xtask cluster token add NAME \
             --permissions read,write` makes one"
                .to_owned()
        } else {
            format!("{configured} configured; `cargo xtask cluster token list` shows them")
        }
    );
    println!("try:   curl -i -X PUT --data-binary hello http://{http}/v1/kv/greeting");
    println!("       curl -i http://{http}/v1/kv/greeting");
    if let Some(resp) = &state.gateway.resp {
        println!("       redis-cli -p {} GET greeting", port_of(resp));
    }
    println!("then:  cargo xtask cluster status | kill node-2 | start node-2 | down");
}

pub(super) fn down(dirs: &Dirs, wipe: bool, force_netns: bool) -> Result<(), String> {
    let state = State::load(dirs)?;
    let netns_cluster = force_netns || state.as_ref().is_some_and(|s| s.netns.is_some());
    if netns_cluster {
        // Before anything stops: without root nothing could be removed.
        netns::require_root("removing the cluster's network namespaces")?;
    }
    if let Some(mut state) = state {
        let live: Vec<Proc> = state.procs().filter(|p| alive(p)).cloned().collect();
        for p in &live {
            if let Some(pid) = p.pid {
                let _ = signal(pid, "TERM");
            }
        }
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until && live.iter().any(alive) {
            sleep(Duration::from_millis(100));
        }
        for p in live.iter().filter(|p| alive(p)) {
            if let Some(pid) = p.pid {
                eprintln!(
                    "{} (pid {pid}) still running {} s after SIGTERM; sending SIGKILL",
                    p.id,
                    STOP_DEADLINE.as_secs()
                );
                let _ = signal(pid, "KILL");
            }
        }
        for p in &live {
            if !wait_dead(p, Duration::from_secs(5)) {
                return Err(format!("{} (pid {:?}) would not die", p.id, p.pid));
            }
        }
        for p in state
            .nodes
            .iter_mut()
            .chain(std::iter::once(&mut state.gateway))
        {
            p.pid = None;
        }
        if !wipe {
            state.save(dirs)?;
        }
        println!("stopped {} processes", live.len());
    } else {
        println!("no cluster is running");
    }
    if netns_cluster {
        // By name, so that what a crashed `up` or an `add` made goes too.
        let removed = netns::teardown()?;
        if !removed.is_empty() {
            println!("removed {}", removed.join(", "));
        }
    } else {
        let found = netns::leftovers();
        if !found.is_empty() {
            println!(
                "note: {} of a netns cluster exist, which this cluster's state does not \
                 record; `cargo xtask cluster down --netns` removes them",
                found.join(", ")
            );
        }
    }
    if wipe && dirs.cluster.exists() {
        fs::remove_dir_all(&dirs.cluster)
            .map_err(|e| format!("cannot delete {}: {e}", dirs.show(&dirs.cluster)))?;
        println!("deleted {}", dirs.show(&dirs.cluster));
    }
    Ok(())
}
