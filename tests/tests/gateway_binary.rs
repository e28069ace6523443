//! The `shoal-gateway` binary: starts from a config file, serves, and exits
//! cleanly on SIGTERM; a bad config is refused with the key named.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_tests::http::fetch as request;
use shoal_tests::wait;

/// Every network wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exited = runtime.block_on(wait::within(WAIT, || {
        std::future::ready(matches!(child.try_wait(), Ok(Some(_))))
    }));
    if exited.is_none() {
        let _ = child.kill();
        panic!("shoal-gateway did not exit in time");
    }
    child.wait().unwrap()
}

#[test]
fn serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[member]\nid = \"gw-bin\"\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [security]\ncluster_secret = {:?}\n",
            shoal_tests::secret::secret().0
        ),
    )
    .unwrap();
    let mut child = Command::new(shoal_tests::procs::binary("shoal-gateway"))
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            panic!("no start-up line: {e}");
        }
    };
    let addr: std::net::SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let health = runtime.block_on(request(addr, "GET", "/health", &[], b""));
    assert_eq!(health.status, 503);
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "[http]\nmax_concurent_requests = 3\n").unwrap();
    let out = Command::new(shoal_tests::procs::binary("shoal-gateway"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_concurent_requests"), "{err}");
}

/// Every member refuses to start without the cluster secret, and with a
/// secret file that others may read: both would leave the RPC port open to
/// anyone who reaches it.
#[test]
fn no_secret_or_a_readable_secret_file_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, format!("{}\n", shoal_tests::secret::secret().0)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let base =
        "[member]\nid = \"gw-bin\"\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n";
    for (toml, expect) in [
        (base.to_string(), "no cluster secret"),
        (
            format!("{base}[security]\ncluster_secret_file = {secret:?}\n"),
            "chmod 600",
        ),
    ] {
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, toml).unwrap();
        let out = Command::new(shoal_tests::procs::binary("shoal-gateway"))
            .arg("--config")
            .arg(&file)
            .env_remove("SHOAL_SECURITY__CLUSTER_SECRET")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
}
