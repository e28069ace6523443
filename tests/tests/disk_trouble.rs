//! Scenario 8: disk trouble. One of three nodes keeps its data on a small
//! tmpfs mounted by the test. As root, `chmod` stops nothing, so the faults
//! are real ones from the kernel:
//!
//! - **full**: a filler file takes every free byte of the mount while the
//!   node runs; its commit-log appends and flushes get `ENOSPC`;
//! - **read-only**: with the node stopped, the mount is remounted read-only
//!   (a remount cannot happen under a process holding files open for
//!   writing, which is also why a live node cannot be switched), and the node
//!   is started on it; it must refuse with a clear error or serve with
//!   errors, never panic.
//!
//! Throughout, clients write through the gateway: with N=3 every key has
//! the troubled node as a replica, and W=2 writes must keep succeeding on
//! the other two. The node must report its trouble (a replica write sent to
//! it is refused with a storage error naming it, and W=3 writes fail),
//! no server may panic, and the oracle must hold at the end. Needs root to
//! mount; skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_node::config::SyncMode;
use shoal_node::env::Env;
use shoal_node::rpc::ReplicateRequest;
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::Client;
use shoal_tests::oracle::History;
use shoal_tests::{run, workload};
use shoal_vclock::{Content, Context, SiblingSet};

/// Size of the troubled node's disk (the long form writes for minutes
/// before filling it on purpose).
fn mount_size() -> &'static str {
    if run::long() {
        "256m"
    } else {
        "16m"
    }
}

/// A tmpfs mounted by this test, unmounted (lazily, so a straggling open
/// file cannot block it) on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(path: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={}", mount_size()),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Mount(path.to_path_buf()))
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a filler file until the mount is full; returns its size.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).expect("create filler");
        let chunk = vec![0xEEu8; 64 * 1024];
        let mut written = 0u64;
        // Bounded by the mount size; ENOSPC ends it.
        for _ in 0..8192 {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.flush();
        written
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Writes `count` keys with w=3; returns the error messages of the refused.
async fn w3_errors(client: &mut Client, prefix: &str, count: usize) -> Vec<String> {
    let mut errors = Vec::new();
    for i in 0..count {
        let r = client
            .request("PUT", &format!("/v1/kv/{prefix}{i}?w=3"), &[], b"probe")
            .await;
        match r {
            Ok(r) if r.status == 204 => {}
            Ok(r) => errors.push(format!("{} {}", r.status, r.text())),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

/// Sends node `i` a replica write directly; returns the node's answer (or
/// why there was none) and how long it took.
async fn direct_write(cluster: &Cluster, i: usize, key: &str) -> (String, Duration) {
    let node = cluster.node(i).expect("node runs").advertise().to_string();
    let pool = shoal_tests::secret::pool(Env::real().net, Duration::from_secs(2), 8 << 20);
    let mut set = SiblingSet::new();
    set.update(
        &Context::empty(),
        "disk-probe",
        Content::value(b"probe".to_vec(), "text/plain"),
        1,
    )
    .expect("a fresh sibling set takes an update");
    let request = ReplicateRequest {
        key: shoal_tests::wire(key),
        siblings: set,
        hint_for: None,
    };
    let start = Instant::now();
    let answer = pool
        .call(&node, Duration::from_secs(10), |c, ctx| async move {
            c.replicate(ctx, request).await
        })
        .await;
    let text = match answer {
        Ok(Ok(())) => "stored".to_string(),
        Ok(Err(e)) => format!("refused: {e}"),
        Err(e) => format!("no answer: {e}"),
    };
    (text, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_read_only_disk_lose_nothing() {
    let name = "full_and_read_only_disk_lose_nothing";
    let seed = run::seed(name);
    let panics_before = run::count_panics();
    let started = Instant::now();
    let scratch = tempfile::tempdir().expect("temp dir");
    let mount = match Mount::new(&scratch.path().join("disk")) {
        Ok(m) => m,
        Err(e) => {
            println!("{name}: SKIPPED: cannot mount a tmpfs here (needs root): {e}");
            return;
        }
    };
    let troubled = 2;
    let data_dir = mount.0.join("node-3");
    let mut cluster = Cluster::start_with(
        Spec {
            nodes: 3,
            ..Spec::default()
        },
        |i, c| {
            if i == troubled {
                c.member.data_dir = data_dir.clone();
                // Every write reaches the disk before it is acknowledged.
                c.storage.sync = SyncMode::Always;
                c.storage.memtable_bytes = 256 << 10;
            }
        },
    )
    .await;
    let history = Arc::new(History::new());
    let phase = run::duration(Duration::from_secs(3), Duration::from_secs(60));
    let load = |prefix: &str| workload::Spec {
        clients: 6,
        duration: phase,
        shared_keys: 8,
        shared_ratio: 0.3,
        w: Some(2),
        r: Some(2),
        timeout: Duration::from_secs(5),
        prefix: prefix.into(),
        stop: None,
        ..workload::Spec::default()
    };
    let addr = cluster.gateway_addr();
    workload::run(&load("before-"), addr, history.clone(), seed).await;

    // Full disk while serving.
    let filled = mount.fill();
    history.fault();
    println!("{name}: filled the node-3 mount with {filled} bytes");
    let before = history.counts();
    workload::run(&load("full-"), addr, history.clone(), seed ^ 1).await;
    let during = history.counts();
    let mut client = Client::new(addr, Duration::from_secs(5));
    let errors = w3_errors(&mut client, "full-probe-", 20).await;
    println!(
        "{name}: disk full: {} operations acknowledged, {} refused/unknown; w=3 refused {} of 20, e.g. {:?}",
        during.ok - before.ok,
        (during.failed + during.unknown) - (before.failed + before.unknown),
        errors.len(),
        errors.first()
    );
    assert!(
        during.ok - before.ok > 20,
        "the cluster stopped serving W=2 while one disk was full (seed {seed})"
    );
    assert_eq!(
        errors.len(),
        20,
        "w=3 writes were acknowledged while node-3's disk was full: {errors:?} (seed {seed})"
    );
    let (answer, took) = direct_write(&cluster, troubled, "full-direct").await;
    println!("{name}: a replica write sent straight to node-3: {answer} after {took:?}");
    assert!(
        answer.starts_with("refused: storage error on node-3"),
        "node-3 with a full disk answered a write with {answer:?} after {took:?} (seed {seed})"
    );
    mount.free();
    // Without a restart, node-3 takes writes again once there is room: its
    // engine retries the failed commit log in the background.
    let freed = Instant::now();
    let mut answer = String::new();
    for attempt in 0..40 {
        answer = direct_write(&cluster, troubled, &format!("freed-direct-{attempt}"))
            .await
            .0;
        if answer == "stored" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "{name}: after freeing space node-3 answered {answer:?} within {:?}",
        freed.elapsed()
    );
    assert_eq!(
        answer, "stored",
        "node-3 still refuses writes after space was freed (seed {seed})"
    );
    workload::run(&load("freed-"), addr, history.clone(), seed ^ 2).await;
    let recovered = w3_errors(&mut client, "freed-probe-", 5).await;
    println!(
        "{name}: after freeing space, w=3 refused {} of 5",
        recovered.len()
    );
    assert!(
        recovered.is_empty(),
        "w=3 writes still refused after space was freed: {recovered:?} (seed {seed})"
    );

    // Read-only: stop the node, remount, start it on the read-only disk.
    cluster.stop(troubled).await;
    mount.remount("ro");
    history.fault();
    let outcome = cluster.try_restart(troubled).await;
    match &outcome {
        Err(e) => println!("{name}: start on a read-only data dir refused: {e}"),
        Ok(()) => println!("{name}: node-3 started on a read-only data dir"),
    }
    let before = history.counts();
    workload::run(&load("ro-"), addr, history.clone(), seed ^ 3).await;
    let during = history.counts();
    println!(
        "{name}: read-only disk: {} operations acknowledged",
        during.ok - before.ok
    );
    assert!(
        during.ok - before.ok > 20,
        "the cluster stopped serving W=2 with one disk read-only (seed {seed})"
    );
    match outcome {
        Ok(()) => {
            let (answer, took) = direct_write(&cluster, troubled, "ro-direct").await;
            println!("{name}: a replica write sent straight to node-3: {answer} after {took:?}");
            assert!(
                answer.starts_with("refused: storage error on node-3"),
                "node-3 on a read-only disk answered a write with {answer:?} (seed {seed})"
            );
            cluster.stop(troubled).await;
        }
        Err(e) => assert!(
            e.contains("node-3") || e.contains("Read-only") || e.contains("read-only"),
            "the start-up error does not say what is wrong: {e} (seed {seed})"
        ),
    }

    // Healthy again: restart on the writable disk, then judge.
    mount.remount("rw");
    cluster.restart(troubled).await;
    let alive = cluster.wait_alive(3, Duration::from_secs(20)).await;
    assert!(alive.is_some(), "node-3 did not come back (seed {seed})");
    let verdict = workload::verify(addr, &history, 3, Duration::from_secs(30)).await;
    println!(
        "{name}: {} panics {} (wall {:?})",
        verdict.summary(),
        run::panics() - panics_before,
        started.elapsed()
    );
    verdict.assert_holds(seed);
    assert_eq!(
        run::panics() - panics_before,
        0,
        "a server panicked (seed {seed})"
    );
    cluster.shutdown().await;
    drop(mount);
}
