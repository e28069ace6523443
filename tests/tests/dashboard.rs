//! The `/ui` dashboard in a real browser: headless Chromium, driven by
//! `tests/browser/dashboard.mjs` (Playwright), opens the page of a 3-node
//! in-process cluster and checks that it renders one row per member and one
//! arc per ring range, then that a stopped node reads down within 10 s.
//! Screenshots land in `target/dashboard/`.
//!
//! Needs chromium, node and `tests/browser/node_modules` (`.ci/run`
//! installs them); without one of them the test says what is missing and
//! passes without running.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::cluster::{node_id, Cluster, Spec};
use shoal_tests::http::fetch;

/// Bound on one run of the browser script (its own waits are shorter).
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHOAL_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the test needs from outside Cargo, or what is missing.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let mut missing = Vec::new();
    let chromium = browser();
    if chromium.is_none() {
        missing.push("chromium (SHOAL_CHROMIUM, /usr/bin/chromium or /usr/bin/chromium-browser)");
    }
    let node = on_path("node");
    if node.is_none() {
        missing.push("node on PATH");
    }
    if !tests_dir()
        .join("browser/node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("tests/browser/node_modules/playwright-core (npm ci in tests/browser)");
    }
    match (chromium, node) {
        (Some(c), Some(n)) if missing.is_empty() => Ok((c, n)),
        _ => Err(missing.join(", ")),
    }
}

/// Runs `node dashboard.mjs <args>` with a bound; returns (success, the
/// JSON line it printed, its stderr).
fn run_script(
    node: &Path,
    chromium: &Path,
    out_dir: &Path,
    name: &str,
    args: &[String],
) -> (bool, String, String) {
    let stdout_path = out_dir.join(format!("{name}.json"));
    let stderr_path = out_dir.join(format!("{name}.stderr"));
    let mut child = Command::new(node)
        .arg(tests_dir().join("browser/dashboard.mjs"))
        .args(args)
        .current_dir(tests_dir().join("browser"))
        .env("SHOAL_CHROMIUM", chromium)
        .stdin(Stdio::null())
        // Files, not pipes: nothing can block on a full pipe while we wait.
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("node starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let mut stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\nkilled after {CHILD_TIMEOUT:?}"));
    }
    (
        status.is_some_and(|s| s.success()),
        stdout.trim().to_string(),
        stderr,
    )
}

async fn script(
    node: &Path,
    chromium: &Path,
    out_dir: &Path,
    name: &str,
    args: Vec<String>,
) -> (bool, String, String) {
    let (node, chromium, out_dir, name) = (
        node.to_path_buf(),
        chromium.to_path_buf(),
        out_dir.to_path_buf(),
        name.to_string(),
    );
    tokio::task::spawn_blocking(move || run_script(&node, &chromium, &out_dir, &name, &args))
        .await
        .expect("the browser script's thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_the_cluster_and_shows_a_stopped_node_down() {
    let (chromium, node) = match prerequisites() {
        Ok(found) => found,
        Err(missing) => {
            eprintln!("SKIPPED: missing {missing}; .ci/run installs it");
            return;
        }
    };
    let out_dir = tests_dir().join("../target/dashboard");
    std::fs::create_dir_all(&out_dir).expect("target/dashboard");

    let mut cluster = Cluster::start(Spec {
        nodes: 3,
        ..Spec::default()
    })
    .await;
    cluster
        .wait_alive(3, Duration::from_secs(20))
        .await
        .expect("three nodes alive within 20 s");
    let addr = cluster.gateway_addr();
    for i in 0..10 {
        let r = fetch(
            addr,
            "PUT",
            &format!("/v1/kv/dash-{i}"),
            &[("Content-Type", "text/plain")],
            format!("value {i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 204, "PUT dash-{i}: {}", r.text());
    }

    let page = fetch(addr, "GET", "/ui", &[], b"").await;
    assert_eq!(page.status, 200, "GET /ui: {}", page.text());
    let stats = fetch(addr, "GET", "/v1/cluster/stats", &[], b"").await;
    assert_eq!(stats.status, 200, "GET /v1/cluster/stats: {}", stats.text());
    let stats = stats.json().expect("stats are JSON");
    let members = stats["members"].as_array().map_or(0, Vec::len);
    let arcs = stats["ring"]["arcs"].as_array().map_or(0, Vec::len);
    assert_eq!(members, 4, "3 nodes and the gateway: {stats}");
    assert!(arcs > 0, "a ring: {stats}");

    let url = format!("http://{addr}");
    let shot = out_dir.join("dashboard.png");
    let (ok, out, err) = script(
        &node,
        &chromium,
        &out_dir,
        "render",
        vec![
            "render".into(),
            url.clone(),
            "--members".into(),
            members.to_string(),
            "--arcs".into(),
            arcs.to_string(),
            "--screenshot".into(),
            shot.display().to_string(),
        ],
    )
    .await;
    assert!(ok, "render failed: {out}\n{err}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());

    let stopped = node_id(2);
    cluster.stop(2).await;
    let shot = out_dir.join("dashboard-down.png");
    let (ok, out, err) = script(
        &node,
        &chromium,
        &out_dir,
        "down",
        vec![
            "down".into(),
            url,
            "--member".into(),
            stopped.clone(),
            "--within-ms".into(),
            "10000".into(),
            "--screenshot".into(),
            shot.display().to_string(),
        ],
    )
    .await;
    assert!(ok, "{stopped} never read down on the page: {out}\n{err}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());

    cluster.shutdown().await;
}
