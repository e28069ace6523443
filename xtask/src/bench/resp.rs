//! `cargo xtask bench --resp`: Shoal over the Redis protocol beside Redis,
//! with the same `redis-benchmark` invocation for both, unpipelined and
//! pipelined (`-P 16`).
//!
//! `redis-benchmark` is the load generator here (it is what a Redis user
//! would point at Shoal); the bench adds what it does not print: the server
//! processes' CPU per operation, from `/proc/<pid>/stat` over each run.
//! Shoal's cluster is the bench's own (3 nodes, N=3 W=2 R=2, sync=always,
//! client token on); Redis runs once with `appendfsync always` and once
//! with no persistence.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::servers;
use super::Plan;

/// One `redis-benchmark` test's result.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    test: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Parses `redis-benchmark --csv` output: a header line, then one line per
/// test: `"SET","12345.68","0.567","0.100","0.511","0.959","1.183","3.199"`
/// (rps, avg, min, p50, p95, p99, max).
fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        if cells.len() < 7 || cells[0] == "test" {
            continue;
        }
        let num = |i: usize| {
            cells[i]
                .parse::<f64>()
                .map_err(|e| format!("redis-benchmark CSV {line:?}: {e}"))
        };
        rows.push(Row {
            test: cells[0].to_string(),
            rps: num(1)?,
            p50_ms: num(4)?,
            p99_ms: num(6)?,
        });
    }
    if rows.is_empty() {
        return Err(format!("redis-benchmark printed no results: {text:?}"));
    }
    Ok(rows)
}

/// Runs `redis-benchmark` once against `addr`; its rows and the servers' CPU.
fn run_benchmark(
    binary: &std::path::Path,
    addr: SocketAddr,
    password: Option<&str>,
    plan: &Plan,
    pipeline: usize,
    pids: &[u32],
) -> Result<(Vec<Row>, Duration, u64), String> {
    let requests = plan.requests;
    let mut cmd = Command::new(binary);
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-t", "set,get", "--csv"])
        .args(["-n", &requests.to_string()])
        .args(["-c", &plan.clients.to_string()])
        .args(["-P", &pipeline.to_string()])
        .args(["-r", &plan.keys.to_string()])
        .args(["-d", &plan.value_size.to_string()]);
    if let Some(p) = password {
        // A throwaway token of the bench's own cluster: `ps` may show it.
        cmd.args(["-a", p]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpu0 = servers::cpu_time(pids);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let out = wait_bounded(child, Duration::from_secs(900))?;
    let cpu = servers::cpu_time(pids).saturating_sub(cpu0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("rror") {
        return Err(format!(
            "redis-benchmark against {addr} failed ({}): {stdout}{stderr}",
            out.status
        ));
    }
    eprintln!("  -P {pipeline}: {:.1} s", started.elapsed().as_secs_f64());
    // Two tests (SET and GET) of `requests` each.
    Ok((parse_csv(&stdout)?, cpu, 2 * requests as u64))
}

fn wait_bounded(
    mut child: std::process::Child,
    bound: Duration,
) -> Result<std::process::Output, String> {
    let until = Instant::now() + bound;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() < until && !super::interrupted() => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("redis-benchmark did not finish in time (or interrupted)".into());
            }
        }
    }
}

/// One line of the report.
struct Line {
    system: String,
    pipeline: usize,
    rows: Vec<Row>,
    cpu_us_per_op: f64,
}

pub(super) async fn run(plan: &Plan) -> Result<(), String> {
    let benchmark = servers::require("redis-benchmark", "redis-tools")?;
    servers::require("redis-server", "redis-server")?;
    let mut lines = Vec::new();
    {
        let super::ShoalAt::Own(nodes, nwr) = plan.shoal else {
            return Err(
                "--resp starts a cluster of its own; --url is not supported with it".into(),
            );
        };
        let (guard, _http, bearer) = servers::shoal(nodes, nwr, plan.no_build, None).await?;
        let addr = guard
            .resp_addr()
            .ok_or("the bench's gateway has no RESP address in its state.json")?;
        let token = bearer.trim_start_matches("Bearer ").to_string();
        let pids = guard.pids();
        let label = format!(
            "shoal ({nodes} nodes, N={} W={} R={}, sync=always)",
            nwr.0, nwr.1, nwr.2
        );
        eprintln!("== {label} over RESP at {addr}");
        for pipeline in [1, 16] {
            super::check_interrupted()?;
            let (b, p, t, pids2) = (
                benchmark.clone(),
                plan_copy(plan),
                token.clone(),
                pids.clone(),
            );
            let (rows, cpu, ops) = tokio::task::spawn_blocking(move || {
                run_benchmark(&b, addr, Some(&t), &p, pipeline, &pids2)
            })
            .await
            .map_err(|e| e.to_string())??;
            lines.push(line(&label, pipeline, rows, cpu, ops));
        }
        drop(guard);
    }
    for durable in [true, false] {
        super::check_interrupted()?;
        let (svc, addr) = servers::redis(durable).await?;
        let label = if durable {
            "redis (appendfsync always)"
        } else {
            "redis (no persistence)"
        };
        eprintln!("== {label}");
        let pids = svc.pids();
        for pipeline in [1, 16] {
            let (b, p, pids2) = (benchmark.clone(), plan_copy(plan), pids.clone());
            let (rows, cpu, ops) = tokio::task::spawn_blocking(move || {
                run_benchmark(&b, addr, None, &p, pipeline, &pids2)
            })
            .await
            .map_err(|e| e.to_string())??;
            lines.push(line(label, pipeline, rows, cpu, ops));
        }
        drop(svc);
    }
    print!("{}", report(plan, &lines));
    Ok(())
}

/// What `run_benchmark` needs of the plan, owned (it runs on a blocking
/// thread).
fn plan_copy(plan: &Plan) -> Plan {
    Plan {
        phases: Vec::new(),
        shoal: super::ShoalAt::Own(0, (0, 0, 0)),
        token: None,
        ..*plan
    }
}

fn line(system: &str, pipeline: usize, rows: Vec<Row>, cpu: Duration, ops: u64) -> Line {
    #[allow(clippy::cast_precision_loss, reason = "op counts are far below 2^53")]
    let cpu_us_per_op = cpu.as_secs_f64() * 1e6 / (ops.max(1) as f64);
    Line {
        system: system.to_string(),
        pipeline,
        rows,
        cpu_us_per_op,
    }
}

fn report(plan: &Plan, lines: &[Line]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nredis-benchmark -t set,get -n {} -c {} -r {} -d {} (same invocation for every system):\n",
        plan.requests, plan.clients, plan.keys, plan.value_size
    );
    let _ = writeln!(
        out,
        "| system | -P | SET/s | SET p50 / p99 ms | GET/s | GET p50 / p99 ms | server CPU us per op |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|---:|---|---:|");
    for l in lines {
        let find = |t: &str| l.rows.iter().find(|r| r.test == t);
        let cell = |r: Option<&Row>| {
            r.map_or(("-".to_string(), "-".to_string()), |r| {
                (
                    format!("{:.0}", r.rps),
                    format!("{:.2} / {:.2}", r.p50_ms, r.p99_ms),
                )
            })
        };
        let (set_rps, set_lat) = cell(find("SET"));
        let (get_rps, get_lat) = cell(find("GET"));
        let _ = writeln!(
            out,
            "| {} | {} | {set_rps} | {set_lat} | {get_rps} | {get_lat} | {:.0} |",
            l.system, l.pipeline, l.cpu_us_per_op
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_of_redis_benchmark_parses() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"12345.68\",\"0.567\",\"0.100\",\"0.511\",\"0.959\",\"1.183\",\"3.199\"\n\
                    \"GET\",\"23456.00\",\"0.300\",\"0.090\",\"0.287\",\"0.500\",\"0.700\",\"1.000\"\n";
        let rows = parse_csv(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].test, "SET");
        assert!((rows[0].rps - 12345.68).abs() < 1e-6);
        assert!((rows[1].p99_ms - 0.7).abs() < 1e-9);
        assert!(parse_csv("").is_err());
        assert!(parse_csv("\"SET\",\"x\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\"").is_err());
    }
}
