//! Which replicas a request goes to.
//!
//! A plan starts from the ring's clockwise walk for the key: the first `n`
//! members are the owners, everyone after them a fallback. With sloppy quorum,
//! each owner that is down is replaced by the next live fallback, which receives
//! the write with a hint naming the owner (Dynamo section 4.6).

use std::collections::BTreeSet;

/// One replica a request is sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The member to contact.
    pub node: String,
    /// `Some(owner)` when `node` stands in for a down owner and must keep the
    /// write as a hint for it.
    pub hint_for: Option<String>,
}

impl Target {
    fn owner(node: &str) -> Self {
        Self {
            node: node.to_string(),
            hint_for: None,
        }
    }
}

/// The replicas of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Replicas to contact, owners first (in preference order), then fallbacks.
    /// For a write, `targets[0]` coordinates: it mints the new version.
    pub targets: Vec<Target>,
    /// The key's owners (the first `n` of the walk), live or not.
    pub owners: Vec<String>,
    /// Owners that are down and not covered by a fallback.
    pub uncovered: Vec<String>,
}

impl Plan {
    /// The replica that coordinates a write: the first live owner, else the
    /// first fallback.
    pub fn coordinator(&self) -> Option<&Target> {
        self.targets.first()
    }

    /// Fallbacks in use (targets that hold hints).
    pub fn fallbacks(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.hint_for.is_some())
    }
}

/// Plans a request for a key whose ring walk is `walk` (the ring's distinct
/// members clockwise from the key, e.g. `shoal_ring::Ring::walk`).
///
/// `is_live` is the caller's view of liveness (gossip plus recent RPC
/// failures). With `sloppy` false, down owners are simply left out (strict
/// quorum); with it true, each is replaced by the next live non-owner.
pub fn plan<'a>(
    walk: impl IntoIterator<Item = &'a str>,
    n: usize,
    is_live: impl Fn(&str) -> bool,
    sloppy: bool,
) -> Plan {
    let mut walk = walk.into_iter();
    let owners: Vec<String> = walk.by_ref().take(n).map(str::to_string).collect();
    let mut targets: Vec<Target> = Vec::with_capacity(owners.len());
    let mut down: Vec<&String> = Vec::new();
    for owner in &owners {
        if is_live(owner) {
            targets.push(Target::owner(owner));
        } else {
            down.push(owner);
        }
    }
    let mut uncovered = Vec::new();
    let mut down = down.into_iter();
    if sloppy {
        let used: BTreeSet<&str> = owners.iter().map(String::as_str).collect();
        // `walk` continues past the owners; it is bounded by the member count.
        let mut fallbacks = walk.filter(|m| !used.contains(m) && is_live(m));
        for owner in down.by_ref() {
            match fallbacks.next() {
                Some(node) => targets.push(Target {
                    node: node.to_string(),
                    hint_for: Some(owner.clone()),
                }),
                None => {
                    uncovered.push(owner.clone());
                    break;
                }
            }
        }
    }
    uncovered.extend(down.cloned());
    Plan {
        targets,
        owners,
        uncovered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case: the walk, who is down, n, sloppy; expected targets as
    /// "node" or "node>owner" for hinted ones, and uncovered owners.
    #[track_caller]
    fn check(walk: &str, down: &str, n: usize, sloppy: bool, targets: &str, uncovered: &str) {
        let walk: Vec<&str> = walk.split_whitespace().collect();
        let down: Vec<&str> = down.split_whitespace().collect();
        let p = plan(walk.iter().copied(), n, |m| !down.contains(&m), sloppy);
        let got: Vec<String> = p
            .targets
            .iter()
            .map(|t| match &t.hint_for {
                Some(o) => format!("{}>{}", t.node, o),
                None => t.node.clone(),
            })
            .collect();
        assert_eq!(got.join(" "), targets, "targets");
        assert_eq!(p.uncovered.join(" "), uncovered, "uncovered");
    }

    #[test]
    fn plans() {
        // all up
        check("a b c d e", "", 3, true, "a b c", "");
        // one owner down: next live non-owner stands in with a hint
        check("a b c d e", "b", 3, true, "a c d>b", "");
        // first owner down: the coordinator becomes the next live owner
        check("a b c d e", "a", 3, true, "b c d>a", "");
        // two down, one of them a fallback: skip it
        check("a b c d e", "a d", 3, true, "b c e>a", "");
        // all owners down: fallbacks coordinate
        check("a b c d e", "a b c", 3, true, "d>a e>b", "c");
        // strict quorum: no fallbacks
        check("a b c d e", "b", 3, false, "a c", "b");
        // n greater than members
        check("a b", "", 3, true, "a b", "");
        check("a b", "a", 3, true, "b", "a");
        // everything down
        check("a b c", "a b c", 3, true, "", "a b c");
        // n = 1
        check("a b c", "a", 1, true, "b>a", "");
    }
}
