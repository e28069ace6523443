//! `repair` and `decommission`, which `shoal-admin` carries out over the
//! node's RPC (xtask stays free of the RPC stack).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use super::process::{alive, wait_dead, STOP_DEADLINE};
use super::secret;
use super::state::{Dirs, Proc, State};

/// `shoal-admin`'s arguments: the node accepts commands only from holders of
/// the cluster secret, given as a file so that it never shows in `ps`.
fn admin_args(secret: &Path, command: &str, force: bool, addr: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--secret-file".into(), secret.into(), command.into()];
    if force {
        args.push("--force".into());
    }
    args.push(addr.into());
    args
}

/// Runs `shoal-admin --secret-file FILE COMMAND ADDR` for a running node and
/// passes its output on, showing the node's progress (from the gateway, when
/// one runs) while it works.
fn admin(
    dirs: &Dirs,
    command: &str,
    force: bool,
    p: &Proc,
    http: Option<&str>,
) -> Result<(), String> {
    let binary = dirs.binary("shoal-admin");
    if !binary.exists() {
        return Err(format!(
            "{} is not built; `cargo build --release -p shoal-node` builds it",
            dirs.show(&binary)
        ));
    }
    let secret = dirs.secret_file();
    secret::check(&secret)?;
    let mut child = Command::new(&binary)
        .args(admin_args(&secret, command, force, &p.listen))
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", dirs.show(&binary)))?;
    if let Some(http) = http {
        super::progress::watch(http, &p.id, || matches!(child.try_wait(), Ok(None)));
    }
    let status = child
        .wait()
        .map_err(|e| format!("{} did not finish: {e}", dirs.show(&binary)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command} of {} failed ({status})", p.id))
    }
}

/// The running gateway's HTTP address, where progress is read.
fn gateway_http(state: &State) -> Option<String> {
    state.gateway.http.clone().filter(|_| alive(&state.gateway))
}

pub(super) fn repair(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?.clone();
    if p.binary != "shoal-node" {
        return Err(format!("{} is not a storage node", p.id));
    }
    if !alive(&p) {
        return Err(format!("{} is not running", p.id));
    }
    admin(dirs, "repair", false, &p, gateway_http(&state).as_deref())
}

/// `force`: even if fewer than N live storage nodes would remain (the node
/// refuses otherwise).
pub(super) fn decommission(dirs: &Dirs, name: &str, force: bool) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?.clone();
    if p.binary != "shoal-node" {
        return Err(format!("{} is not a storage node", p.id));
    }
    if !alive(&p) {
        return Err(format!("{} is not running", p.id));
    }
    admin(
        dirs,
        "decommission",
        force,
        &p,
        gateway_http(&state).as_deref(),
    )?;
    if !wait_dead(&p, STOP_DEADLINE) {
        return Err(format!(
            "{} handed its ranges over but is still running {} s later",
            p.id,
            STOP_DEADLINE.as_secs()
        ));
    }
    println!("{} left the ring and stopped", p.id);
    state.find_mut(name)?.pid = None;
    state.save(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_admin_gets_the_secret_file_before_the_command() {
        let args = admin_args(
            Path::new("/w/target/cluster/cluster.secret"),
            "repair",
            false,
            "127.0.0.1:7102",
        );
        assert_eq!(
            args,
            [
                "--secret-file",
                "/w/target/cluster/cluster.secret",
                "repair",
                "127.0.0.1:7102"
            ]
        );
    }

    #[test]
    fn a_forced_decommission_passes_force_before_the_address() {
        let args = admin_args(Path::new("s"), "decommission", true, "127.0.0.1:7102");
        assert_eq!(
            args,
            [
                "--secret-file",
                "s",
                "decommission",
                "--force",
                "127.0.0.1:7102"
            ]
        );
    }
}
