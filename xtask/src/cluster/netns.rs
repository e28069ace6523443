//! `up --netns`: every node in its own network namespace, joined to a bridge
//! in the root namespace by a veth pair, so cluster traffic crosses real
//! interfaces that `partition` and `heal` take down and up.
//!
//! Fixed names, so that `down` finds what a crashed `xtask` left behind:
//! the bridge [`BRIDGE`] holds [`SUBNET`]`.254` (the gateway's gossip
//! address; the gateway itself stays in the root namespace, its HTTP on
//! 127.0.0.1), node `node-i` runs in namespace `shoal-node-i` at
//! [`SUBNET`]`.i` on its `eth0`, whose peer in the root namespace is
//! `shoal-vi`. One such cluster per machine. Everything here runs `ip`
//! (iproute2) and needs root.

use std::path::Path;
use std::process::Command;

use super::state::Netns;

/// The bridge every node's veth joins.
pub(super) const BRIDGE: &str = "shoal-br0";
/// The first three octets of the /24 the bridge and the nodes live on.
pub(super) const SUBNET: &str = "10.77.0";
/// Namespace names: `shoal-node-<i>`.
const NS_PREFIX: &str = "shoal-node-";
/// Root-namespace ends of the veth pairs: `shoal-v<i>` (15 bytes at most).
const VETH_PREFIX: &str = "shoal-v";
/// The most nodes the /24 holds (.254 is the bridge).
pub(super) const MAX_NODES: usize = 253;

/// What `up --netns` records in the state file.
pub(super) fn layout() -> Netns {
    Netns {
        bridge: BRIDGE.into(),
        subnet: SUBNET.into(),
    }
}

/// The bridge's address, where the gateway listens for gossip.
pub(super) fn bridge_host(net: &Netns) -> String {
    format!("{}.254", net.subnet)
}

/// Node `i`'s namespace and address.
pub(super) fn node_ns(i: usize) -> String {
    format!("{NS_PREFIX}{i}")
}

pub(super) fn node_host(net: &Netns, i: usize) -> String {
    format!("{}.{i}", net.subnet)
}

/// The root-namespace end of `ns`'s veth pair.
fn veth_of(ns: &str) -> Result<String, String> {
    ns.strip_prefix(NS_PREFIX)
        .map(|i| format!("{VETH_PREFIX}{i}"))
        .ok_or_else(|| format!("{ns:?} is not a namespace `up --netns` made"))
}

/// `Ok` when this process runs as root (effective uid 0).
pub(super) fn require_root(what: &str) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("");
    if euid == "0" {
        Ok(())
    } else {
        Err(format!(
            "{what} needs root: it creates and changes network namespaces, veth pairs and a \
             bridge (run it as root, e.g. `sudo -E cargo xtask cluster ...`)"
        ))
    }
}

/// Runs `ip ARGS`; its stdout, or an error naming the command and its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (Debian package iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn namespaces() -> Vec<String> {
    // "NAME" or "NAME (id: N)" per line; works without root too.
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// Our root-namespace interfaces (bridge and veth ends), by name.
fn our_links() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            // "7: shoal-v1@if2: <...> ..."
            let name = l.split(": ").nth(1)?;
            let name = name.split('@').next()?;
            (name == BRIDGE || name.starts_with(VETH_PREFIX)).then(|| name.to_string())
        })
        .collect()
}

/// Namespaces and interfaces with our names that exist now (anyone may look).
pub(super) fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(NS_PREFIX))
        .map(|n| format!("namespace {n}"))
        .collect();
    found.extend(our_links().into_iter().map(|l| format!("link {l}")));
    found
}

/// Creates the bridge with its address, unless it exists. Refuses when
/// another interface already holds an address in the subnet.
pub(super) fn bridge_up(net: &Netns) -> Result<(), String> {
    if link_exists(&net.bridge) {
        return ip(&["link", "set", &net.bridge, "up"]).map(drop);
    }
    let cidr = format!("{}.0/24", net.subnet);
    let clash = ip(&["-o", "addr", "show", "to", &cidr])?;
    if let Some(line) = clash.lines().next() {
        return Err(format!(
            "{cidr} is already in use on this machine ({}); `up --netns` needs it for itself",
            line.trim()
        ));
    }
    ip(&["link", "add", &net.bridge, "type", "bridge"])?;
    ip(&["link", "set", &net.bridge, "up"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", bridge_host(net)),
        "dev",
        &net.bridge,
    ])
    .map(drop)
}

/// Makes node `i`'s namespace with its veth on the bridge and its address,
/// unless it is all there already (a half-made one is made again).
pub(super) fn node_up(net: &Netns, i: usize) -> Result<String, String> {
    let ns = node_ns(i);
    let veth = veth_of(&ns)?;
    let has_ns = namespaces().contains(&ns);
    if has_ns && link_exists(&veth) {
        return Ok(ns);
    }
    if link_exists(&veth) {
        ip(&["link", "del", &veth])?;
    }
    if has_ns {
        ip(&["netns", "del", &ns])?;
    }
    ip(&["netns", "add", &ns])?;
    let made = (|| {
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &net.bridge, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", node_host(net, i)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"]).map(drop)
    })();
    if let Err(e) = made {
        let _ = ip(&["link", "del", &veth]);
        let _ = ip(&["netns", "del", &ns]);
        return Err(e);
    }
    Ok(ns)
}

/// The command that runs `binary` inside `ns`: `ip netns exec NS BINARY`
/// (`ip` execs it, so the pid is the binary's).
pub(super) fn command_in(ns: &str, binary: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(binary);
    cmd
}

/// Takes `ns`'s link down (`true`) or up again (`false`).
pub(super) fn set_partitioned(ns: &str, partitioned: bool) -> Result<(), String> {
    let veth = veth_of(ns)?;
    ip(&[
        "link",
        "set",
        &veth,
        if partitioned { "down" } else { "up" },
    ])
    .map(drop)
}

/// Whether `ns`'s link is down; `None` when it does not exist.
pub(super) fn partitioned(ns: &str) -> Option<bool> {
    let veth = veth_of(ns).ok()?;
    let line = ip(&["-o", "link", "show", "dev", &veth]).ok()?;
    let flags = line.split('<').nth(1)?.split('>').next()?;
    Some(!flags.split(',').any(|f| f == "UP"))
}

/// Removes every namespace, veth and bridge with our names, SIGKILLing any
/// process still inside a namespace first. Returns what it removed.
pub(super) fn teardown() -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for ns in namespaces()
        .into_iter()
        .filter(|n| n.starts_with(NS_PREFIX))
    {
        for pid in ip(&["netns", "pids", &ns]).unwrap_or_default().lines() {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        match ip(&["netns", "del", &ns]) {
            Ok(_) => removed.push(format!("namespace {ns}")),
            Err(e) => errors.push(e),
        }
    }
    // Deleting a namespace deletes its veth end and so the pair; what is
    // left is a veth whose namespace never came to be, and the bridge.
    for link in our_links() {
        match ip(&["link", "del", &link]) {
            Ok(_) => removed.push(format!("link {link}")),
            Err(e) if link_exists(&link) => errors.push(e),
            Err(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_map_back() {
        let ns = node_ns(MAX_NODES);
        let veth = veth_of(&ns).unwrap();
        assert_eq!(veth, "shoal-v253");
        // IFNAMSIZ: 15 bytes and the NUL.
        assert!(veth.len() <= 15 && BRIDGE.len() <= 15);
        assert!(veth_of("other-ns").is_err());
        let net = layout();
        assert_eq!(bridge_host(&net), "10.77.0.254");
        assert_eq!(node_host(&net, 3), "10.77.0.3");
    }
}
