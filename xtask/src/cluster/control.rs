//! One process at a time: `stop`, `kill`, `start` and `add`.

use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::config::{
    node_config, node_proc, pick_port, write_config, BASE_METRICS_PORT, BASE_PORT,
};
use super::netns;
use super::process::{
    alive, died_message, log_since, pid_text, signal, spawn, wait_dead, STOP_DEADLINE,
};
use super::secret;
use super::state::{Dirs, Proc, State};
use super::view::{cluster_view, http_get, member_alive};

/// How long `start` and `add` wait for the new process to be alive.
const START_DEADLINE: Duration = Duration::from_secs(30);

pub(super) fn stop(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?;
    if !alive(p) {
        println!("{} is not running", p.id);
        return Ok(());
    }
    let pid = p.pid.unwrap_or_default();
    signal(pid, "TERM")?;
    if !wait_dead(p, STOP_DEADLINE) {
        return Err(format!(
            "{} (pid {pid}) is still running {} s after SIGTERM; `cargo xtask cluster kill {}` ends it",
            p.id,
            STOP_DEADLINE.as_secs(),
            p.id
        ));
    }
    println!("{} stopped (SIGTERM, pid {pid})", p.id);
    p.pid = None;
    state.save(dirs)
}

pub(super) fn kill(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?;
    if !alive(p) {
        println!("{} is not running", p.id);
        return Ok(());
    }
    let pid = p.pid.unwrap_or_default();
    signal(pid, "KILL")?;
    if !wait_dead(p, Duration::from_secs(5)) {
        return Err(format!("{} (pid {pid}) survived SIGKILL", p.id));
    }
    println!("{} killed (SIGKILL, pid {pid})", p.id);
    p.pid = None;
    state.save(dirs)
}

pub(super) fn start(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let env = state.env.clone();
    let net = state.netns.clone();
    let p = state.find_mut(name)?;
    if alive(p) {
        println!("{} is already running (pid {})", p.id, pid_text(p));
        return Ok(());
    }
    // Its config names the secret `up` made; a process refuses to start
    // without it, and this says why more plainly than its log would.
    secret::check(&dirs.secret_file())?;
    let proc_copy = p.clone();
    // `down` removed the namespaces; make this node's again.
    if let (Some(net), Some(_)) = (&net, &proc_copy.netns) {
        netns::require_root(&format!("starting {} in its namespace", proc_copy.id))?;
        netns::bridge_up(net)?;
        netns::node_up(net, node_number(&proc_copy.id)?)?;
    }
    let (child, offset) = spawn(dirs, &proc_copy, &env)?;
    p.pid = Some(child.id());
    let id = p.id.clone();
    state.save(dirs)?;
    wait_started(dirs, &state, &id, child, offset)
}

/// Waits until `id` is alive in the gateway's view (or, for the gateway itself
/// or with no gateway running, until its process has stayed up for a while).
fn wait_started(
    dirs: &Dirs,
    state: &State,
    id: &str,
    mut child: Child,
    offset: u64,
) -> Result<(), String> {
    let p = state
        .procs()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| format!("{id} vanished from the state"))?;
    let http = state.gateway.http.clone().unwrap_or_default();
    let is_gateway = p.id == state.gateway.id;
    let gateway_up = !is_gateway && alive(&state.gateway);
    let until = Instant::now() + START_DEADLINE;
    let settle = Instant::now() + Duration::from_secs(2);
    let mut last = String::from("no answer yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(died_message(dirs, &p, status, offset));
        }
        let listening = is_gateway || log_since(&p.log, offset).contains(" listening on ");
        let ok = if !listening {
            last = "no \"listening on\" line in its log yet".into();
            false
        } else if is_gateway {
            match http_get(&http, "/health") {
                Ok(r) if r.status == 200 => true,
                Ok(r) => {
                    last = format!("/health answered {}", r.status);
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        } else if gateway_up {
            match cluster_view(&http) {
                Ok(v) if member_alive(&v, id) => true,
                Ok(_) => {
                    last = format!("{id} not yet alive in /v1/cluster");
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        } else {
            Instant::now() >= settle
        };
        if ok {
            println!(
                "{id} started (pid {}, {}); log: {}",
                child.id(),
                p.listen,
                dirs.show(&p.log)
            );
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "{id} (pid {}) is running but not ready after {} s: {last}; log: {}",
                child.id(),
                START_DEADLINE.as_secs(),
                dirs.show(&p.log)
            ));
        }
        sleep(Duration::from_millis(250));
    }
}

pub(super) fn add(dirs: &Dirs) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    // Never a new secret here: the running members hold the one `up` made.
    let secret = dirs.secret_file();
    secret::check(&secret)?;
    let i = state
        .nodes
        .iter()
        .filter_map(|p| p.id.strip_prefix("node-")?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let (listen, metrics) = match state.netns.clone() {
        Some(net) => {
            if i > netns::MAX_NODES {
                return Err(format!(
                    "a netns cluster holds at most {} nodes",
                    netns::MAX_NODES
                ));
            }
            netns::require_root("`cluster add` on a netns cluster")?;
            netns::bridge_up(&net)?;
            netns::node_up(&net, i)?;
            let host = netns::node_host(&net, i);
            let offset = u16::try_from(i).unwrap_or(0);
            (
                format!("{host}:{}", BASE_PORT.saturating_add(offset)),
                format!("{host}:{}", BASE_METRICS_PORT.saturating_add(offset)),
            )
        }
        None => {
            let mut taken: Vec<String> = state
                .procs()
                .flat_map(|p| {
                    std::iter::once(p.listen.clone())
                        .chain(p.http.clone())
                        .chain(p.metrics.clone())
                })
                .collect();
            let preferred = BASE_PORT.saturating_add(u16::try_from(i).unwrap_or(0));
            let listen = pick_port(preferred, &taken)?;
            taken.push(listen.clone());
            let metrics = pick_port(
                BASE_METRICS_PORT.saturating_add(u16::try_from(i).unwrap_or(0)),
                &taken,
            )?;
            (listen, metrics)
        }
    };
    let mut p = node_proc(dirs, i, listen, Some(metrics));
    p.netns = state.netns.is_some().then(|| netns::node_ns(i));
    // Same seeds as everyone else: the original nodes.
    let seeds: Vec<String> = state.nodes.iter().map(|n| n.listen.clone()).collect();
    // `join = true`: stream the gained ranges before serving reads for them.
    let config = node_config(&p, &seeds, &state, &secret).replacen(
        "[member]\n",
        "[member]\njoin = true\n",
        1,
    );
    write_config(dirs, &p, &config)?;
    let (child, offset) = spawn(dirs, &p, &state.env)?;
    let id = p.id.clone();
    state.nodes.push(Proc {
        pid: Some(child.id()),
        ..p
    });
    state.save(dirs)?;
    wait_started(dirs, &state, &id, child, offset)?;
    wait_joined(&state, &id)
}

/// How long `add` waits for a new node to receive its ranges.
const JOIN_DEADLINE: Duration = Duration::from_secs(600);

/// Waits until the gateway shows `id` as no longer joining.
fn wait_joined(state: &State, id: &str) -> Result<(), String> {
    let Some(http) = state.gateway.http.clone().filter(|_| alive(&state.gateway)) else {
        println!("{id} is joining; no gateway runs to watch it finish (see its log)");
        return Ok(());
    };
    let until = Instant::now() + JOIN_DEADLINE;
    let started = Instant::now();
    let joining = |http: &str| {
        http_get(http, "/v1/cluster").ok().and_then(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            v.get("members")?
                .as_array()?
                .iter()
                .find(|m| m.get("id").and_then(serde_json::Value::as_str) == Some(id))?
                .get("joining")?
                .as_bool()
        })
    };
    // The join's progress is shown while the gateway still sees it joining
    // (checked every 250 ms) and the deadline has not passed.
    let (mut joined, mut checked): (bool, Option<Instant>) = (false, None);
    super::progress::watch(&http, id, || {
        if checked.is_none_or(|at| at.elapsed() >= Duration::from_millis(250)) {
            checked = Some(Instant::now());
            joined = joining(&http) == Some(false);
        }
        !joined && Instant::now() < until
    });
    if joined {
        println!(
            "{id} joined: it received its ranges in {:.1} s and now serves reads",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!(
            "{id} is still joining after {} s; its log says why",
            JOIN_DEADLINE.as_secs()
        ))
    }
}

/// `node-3` -> 3.
fn node_number(id: &str) -> Result<usize, String> {
    id.strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("{id} is not a storage node"))
}

/// The namespace of node `name` in an `up --netns` cluster.
fn netns_of(state: &mut State, name: &str, what: &str) -> Result<(String, String), String> {
    if state.netns.is_none() {
        return Err(format!(
            "`cluster {what}` needs a cluster started with `cargo xtask cluster up --netns`; \
             this one runs on loopback"
        ));
    }
    let p = state.find_mut(name)?;
    match &p.netns {
        Some(ns) => Ok((p.id.clone(), ns.clone())),
        None => Err(format!(
            "{} runs in the root namespace (the gateway does); only nodes can be cut off",
            p.id
        )),
    }
}

pub(super) fn partition(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let (id, ns) = netns_of(&mut state, name, "partition")?;
    netns::require_root("`cluster partition`")?;
    netns::set_partitioned(&ns, true)?;
    println!(
        "{id} is cut off: its link (shoal-br0 <-> {ns}) is down; `cargo xtask cluster heal {id}` \
         restores it"
    );
    Ok(())
}

pub(super) fn heal(dirs: &Dirs, name: Option<&str>) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let targets = match name {
        Some(name) => vec![netns_of(&mut state, name, "heal")?],
        None => {
            let ids: Vec<String> = state.nodes.iter().map(|p| p.id.clone()).collect();
            let mut all = Vec::new();
            for id in ids {
                all.push(netns_of(&mut state, &id, "heal")?);
            }
            all
        }
    };
    netns::require_root("`cluster heal`")?;
    for (id, ns) in targets {
        if netns::partitioned(&ns) == Some(true) {
            netns::set_partitioned(&ns, false)?;
            println!("{id} is reachable again (its link is up)");
        } else if name.is_some() {
            println!("{id} was not cut off");
        }
    }
    Ok(())
}
