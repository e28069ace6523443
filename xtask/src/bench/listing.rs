//! `cargo xtask bench --listing`: how fast a bucket's keys are listed, and
//! what listing a small bucket costs while a big one shares the cluster.
//!
//! One cluster of the bench's own takes `--keys` keys in the bucket `big`
//! and 10 in `small` (both written through the gateway, `--value-size`
//! bytes each). The whole of `big` is then listed page by page (10,000 keys
//! a page), and `small` listed in full 200 times; each is timed and the
//! server processes' CPU counted over it. A listing reads only its bucket's
//! storage space on each node, so the small bucket's cost should not follow
//! the big one's size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{self, Client, Keys, LoadTarget};
use super::servers;
use super::Plan;

/// Full listings of the small bucket.
const SMALL_ROUNDS: usize = 200;
/// Keys of the small bucket.
const SMALL_KEYS: usize = 10;

async fn preload(
    target: &LoadTarget,
    bucket: &str,
    count: usize,
    clients: usize,
    value_size: usize,
) -> Result<(), String> {
    let LoadTarget::Shoal { addr, auth, .. } = target else {
        return Err("listing needs a Shoal target".into());
    };
    let target = LoadTarget::Shoal {
        addr: *addr,
        put_query: String::new(),
        get_query: String::new(),
        auth: auth.clone(),
        base: format!("/v1/buckets/{bucket}/keys/"),
    };
    let keys = Arc::new(Keys::new("k-", count, value_size));
    let clients = clients.min(count).max(1);
    let mut all: Vec<Client> = (0..clients)
        .map(|id| Client::new(id, clients, target.clone(), keys.clone()))
        .collect();
    load::connect_all(&mut all).await?;
    let (_, stats) = load::preload(all).await;
    eprintln!(
        "  {bucket}: {count} keys written in {:.1} s ({} errors)",
        stats.elapsed.as_secs_f64(),
        stats.error_count()
    );
    Ok(())
}

/// Lists `bucket` to the end; the keys seen and the pages it took.
async fn list_all(
    addr: std::net::SocketAddr,
    auth: &str,
    bucket: &str,
) -> Result<(u64, u64), String> {
    let (mut keys, mut pages) = (0u64, 0u64);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/buckets/{bucket}/keys?limit=10000"),
            Some(c) => format!("/v1/buckets/{bucket}/keys?limit=10000&cursor={c}"),
        };
        let r = servers::http_get_with(addr, &path, &[("Authorization", auth)]).await?;
        if r.status != 200 {
            return Err(format!(
                "listing {bucket}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let body: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("listing body: {e}"))?;
        keys += body["keys"].as_array().map_or(0, |k| k.len() as u64);
        pages += 1;
        match body["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok((keys, pages)),
        }
    }
}

pub(crate) async fn run(plan: &Plan) -> Result<(), String> {
    let super::ShoalAt::Own(nodes, nwr) = &plan.shoal else {
        return Err("--listing starts its own cluster; it does not take --url".into());
    };
    let (guard, addr, bearer) = servers::shoal(*nodes, *nwr, plan.no_build, None).await?;
    let pids = guard.pids();
    let target = LoadTarget::Shoal {
        addr,
        put_query: String::new(),
        get_query: String::new(),
        auth: Some(bearer.clone()),
        base: String::new(),
    };
    eprintln!("== listing: preload");
    preload(&target, "big", plan.keys, plan.clients, plan.value_size).await?;
    preload(&target, "small", SMALL_KEYS, plan.clients, plan.value_size).await?;
    super::check_interrupted()?;

    let cpu0 = servers::cpu_time(&pids);
    let started = Instant::now();
    let (big_keys, big_pages) = list_all(addr, &bearer, "big").await?;
    let big_took = started.elapsed();
    let big_cpu = servers::cpu_time(&pids).saturating_sub(cpu0);
    super::check_interrupted()?;

    let cpu0 = servers::cpu_time(&pids);
    let started = Instant::now();
    let mut small_keys = 0;
    for _ in 0..SMALL_ROUNDS {
        small_keys += list_all(addr, &bearer, "small").await?.0;
    }
    let small_took = started.elapsed();
    let small_cpu = servers::cpu_time(&pids).saturating_sub(cpu0);
    drop(guard);

    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "\nlisting ({nodes} nodes, N={} W={} R={}; {}-byte values):",
        nwr.0, nwr.1, nwr.2, plan.value_size
    );
    println!(
        "  big bucket:   {big_keys} keys in {big_pages} pages, {:.2} s: {:.0} keys/s, server CPU {:.1} us per key",
        big_took.as_secs_f64(),
        big_keys as f64 / big_took.as_secs_f64().max(1e-9),
        per(big_cpu, big_keys)
    );
    println!(
        "  small bucket: {SMALL_KEYS} keys listed {SMALL_ROUNDS} times beside it: {:.2} ms per listing, server CPU {:.0} us per listing ({} keys seen)",
        small_took.as_secs_f64() * 1e3 / SMALL_ROUNDS as f64,
        per(small_cpu, SMALL_ROUNDS as u64),
        small_keys
    );
    if big_keys != plan.keys as u64 || small_keys != (SMALL_KEYS * SMALL_ROUNDS) as u64 {
        return Err(format!(
            "listed {big_keys} of {} big keys, {small_keys} of {} small",
            plan.keys,
            SMALL_KEYS * SMALL_ROUNDS
        ));
    }
    Ok(())
}
