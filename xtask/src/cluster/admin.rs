//! `repair` and `decommission`, which `shoal-admin` carries out over the
//! node's RPC (xtask stays free of the RPC stack).

use std::process::Command;

use super::process::{alive, wait_dead, STOP_DEADLINE};
use super::state::{Dirs, Proc, State};

/// Runs `shoal-admin COMMAND ADDR` for a running node and passes its output on.
pub(super) fn admin(dirs: &Dirs, command: &str, p: &Proc) -> Result<(), String> {
    let binary = dirs.binary("shoal-admin");
    if !binary.exists() {
        return Err(format!(
            "{} is not built; `cargo build --release -p shoal-node` builds it",
            dirs.show(&binary)
        ));
    }
    let status = Command::new(&binary)
        .args([command, p.listen.as_str()])
        .status()
        .map_err(|e| format!("cannot run {}: {e}", dirs.show(&binary)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command} of {} failed ({status})", p.id))
    }
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
    admin(dirs, "repair", &p)
}

pub(super) fn decommission(dirs: &Dirs, name: &str) -> Result<(), String> {
    let mut state = State::load_required(dirs)?;
    let p = state.find_mut(name)?.clone();
    if p.binary != "shoal-node" {
        return Err(format!("{} is not a storage node", p.id));
    }
    if !alive(&p) {
        return Err(format!("{} is not running", p.id));
    }
    admin(dirs, "decommission", &p)?;
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
