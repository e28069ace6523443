//! Merging what replicas answered to a read, and deciding who needs repair.

use std::collections::BTreeMap;

use shoal_vclock::{Policy, SiblingSet};

/// The merged result of a read and the replicas that answered with less.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciled {
    /// The least upper bound of every answer (`vclock` sync); `None` when no
    /// replica holds the key at all.
    pub merged: Option<SiblingSet>,
    /// Replicas whose answer differs from `merged` (older, missing or
    /// diverged): read repair sends them `merged`, which `sync` makes safe
    /// even if they moved on meanwhile.
    pub stale: Vec<String>,
}

/// Merges the answers of a read (`None`: the replica has nothing for the key).
///
/// Because `sync` is commutative, associative and idempotent, the result does
/// not depend on which replicas answered first or how often.
pub fn reconcile(answers: &BTreeMap<String, Option<SiblingSet>>) -> Reconciled {
    reconcile_with(answers, Policy::Siblings)
}

/// [`reconcile`] under a bucket's conflict policy: with [`Policy::Lww`] the
/// merge holds one version, the newest any replica has, and every replica
/// that holds anything else is stale.
pub fn reconcile_with(
    answers: &BTreeMap<String, Option<SiblingSet>>,
    policy: Policy,
) -> Reconciled {
    let merged = answers
        .values()
        .flatten()
        .fold(None::<SiblingSet>, |acc, set| match acc {
            None => Some(policy.sync(&SiblingSet::new(), set)),
            Some(acc) => Some(policy.sync(&acc, set)),
        });
    let stale = match &merged {
        None => Vec::new(),
        Some(m) => answers
            .iter()
            .filter(|(_, answer)| answer.as_ref() != Some(m))
            .map(|(node, _)| node.clone())
            .collect(),
    };
    Reconciled { merged, stale }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vclock::{Content, Context};

    fn write(base: &SiblingSet, ctx: &Context, actor: &str, v: &str) -> SiblingSet {
        let mut s = base.clone();
        s.update(
            ctx,
            actor,
            Content::value(v.as_bytes().to_vec(), "text/plain"),
            1,
        )
        .unwrap();
        s
    }

    fn answers(list: &[(&str, Option<&SiblingSet>)]) -> BTreeMap<String, Option<SiblingSet>> {
        list.iter()
            .map(|(n, s)| (n.to_string(), s.cloned()))
            .collect()
    }

    #[test]
    fn lww_answers_the_newest_and_repairs_the_rest() {
        let a = write(&SiblingSet::new(), &Context::empty(), "a", "one");
        let mut b = SiblingSet::new();
        b.update(
            &Context::empty(),
            "b",
            Content::value(b"two".to_vec(), "t"),
            5,
        )
        .unwrap();
        let r = reconcile_with(&answers(&[("a", Some(&a)), ("b", Some(&b))]), Policy::Lww);
        let merged = r.merged.unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged.values()[0].value(), Some(&b"two"[..]));
        assert_eq!(r.stale, vec!["a".to_string(), "b".to_string()]);
        let siblings = reconcile(&answers(&[("a", Some(&a)), ("b", Some(&b))]));
        assert_eq!(siblings.merged.unwrap().len(), 2);
    }

    #[test]
    fn nothing_anywhere() {
        let r = reconcile(&answers(&[("a", None), ("b", None)]));
        assert_eq!(
            r,
            Reconciled {
                merged: None,
                stale: vec![]
            }
        );
    }

    #[test]
    fn agreeing_replicas_need_no_repair() {
        let v1 = write(&SiblingSet::new(), &Context::empty(), "a", "one");
        let r = reconcile(&answers(&[("a", Some(&v1)), ("b", Some(&v1))]));
        assert_eq!(r.merged.as_ref(), Some(&v1));
        assert!(r.stale.is_empty());
    }

    #[test]
    fn older_and_missing_replicas_are_stale() {
        let v1 = write(&SiblingSet::new(), &Context::empty(), "a", "one");
        let v2 = write(&v1, &v1.context(), "a", "two");
        let r = reconcile(&answers(&[("a", Some(&v2)), ("b", Some(&v1)), ("c", None)]));
        assert_eq!(r.merged.as_ref(), Some(&v2));
        assert_eq!(r.stale, vec!["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn concurrent_answers_become_siblings_and_everyone_is_stale() {
        let x = write(&SiblingSet::new(), &Context::empty(), "a", "x");
        let y = write(&SiblingSet::new(), &Context::empty(), "b", "y");
        let r = reconcile(&answers(&[("a", Some(&x)), ("b", Some(&y))]));
        let merged = r.merged.unwrap();
        assert_eq!(merged.values().len(), 2);
        assert_eq!(r.stale, vec!["a".to_string(), "b".to_string()]);
    }
}
