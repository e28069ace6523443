//! Buckets in the store's layout, apart from the other topics: data from
//! before buckets opens as the default bucket, and a bucket's conflict
//! policy holds on every path and across restarts.

use super::*;

/// A data directory written before buckets: its data keys are the default
/// bucket's, and its hints move to the wire-key layout at open.
#[test]
fn a_data_directory_from_before_buckets_opens_as_the_default_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = SiblingSet::new();
    set.update(&Context::empty(), "node-2#1", value("old"), 1)
        .unwrap();
    {
        let s = open(dir.path());
        // Exactly the layout of before: `0x01 + position + key`, and
        // `0x02 + owner + position + key` for a hint.
        let mut data = vec![DATA];
        data.extend_from_slice(&shoal_ring::key_position(b"user:1").to_be_bytes());
        data.extend_from_slice(b"user:1");
        s.engine.put(&data, &set.encode()).unwrap();
        let mut hint = vec![LEGACY_HINT, 6];
        hint.extend_from_slice(b"node-3");
        hint.extend_from_slice(&shoal_ring::key_position(b"user:2").to_be_bytes());
        hint.extend_from_slice(b"user:2");
        s.engine.put(&hint, &encode_hint(&set, 5)).unwrap();
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.read(&w("user:1")).unwrap(), Some(set.clone()));
    assert_eq!(
        s.hints_for_key(&w("user:2")).unwrap(),
        vec![("node-3".to_string(), set.clone())]
    );
    assert_eq!(s.hint_count().unwrap(), 1);
    let legacy = s
        .engine
        .scan([LEGACY_HINT].as_slice()..[LEGACY_HINT + 1].as_slice())
        .unwrap()
        .count();
    assert_eq!(legacy, 0, "every old hint moved");
    assert_eq!(s.with_tree(|t| t.len()), 1);
}

#[test]
fn an_lww_bucket_keeps_one_winner_on_every_path_and_its_props_survive_a_restart() {
    use crate::buckets::{BucketProps, PropsVersion, VersionedProps};
    let dir = tempfile::tempdir().unwrap();
    let reg = |k: &str| keys::wire("reg", k.as_bytes());
    let lww = VersionedProps {
        version: PropsVersion {
            ms: 7,
            origin: "gw".into(),
        },
        props: BucketProps {
            conflict: shoal_vclock::Policy::Lww,
            ttl_s: None,
        },
    };
    let concurrent = |actor: &str, v: &str, t: u64| {
        let mut s = SiblingSet::new();
        s.update(&Context::empty(), actor, value(v), t).unwrap();
        s
    };
    {
        let s = open(dir.path());
        assert_eq!(s.merge_props(&[("reg".into(), lww.clone())]).unwrap(), 1);
        s.coordinate(&reg("k"), &Context::empty(), value("mine"), 100, None)
            .unwrap();
        // A concurrent newer write arrives by replication, an older one by
        // a batch (anti-entropy), another as a hint: one winner each time.
        let merged = s
            .merge(&reg("k"), &concurrent("node-2#1", "newer", 200))
            .unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged.values()[0].value(), Some(&b"newer"[..]));
        let (after, _) = s
            .merge_many(&[(reg("k"), concurrent("node-3#1", "older", 50))])
            .unwrap();
        assert_eq!(after[0].values()[0].value(), Some(&b"newer"[..]));
        let hinted = s
            .put_hint("node-4", &reg("h"), &concurrent("node-2#1", "a", 1))
            .unwrap();
        assert_eq!(hinted.len(), 1);
        let hinted = s
            .put_hint("node-4", &reg("h"), &concurrent("node-3#1", "b", 2))
            .unwrap();
        assert_eq!(hinted.values()[0].value(), Some(&b"b"[..]));
        // A blind write supersedes what the replica holds, even a version
        // from a clock ahead.
        let written = s
            .coordinate(&reg("k"), &Context::empty(), value("last"), 10, None)
            .unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written.values()[0].value(), Some(&b"last"[..]));
        // The default bucket still keeps siblings.
        s.merge(&w("k"), &concurrent("node-2#1", "x", 1)).unwrap();
        let both = s.merge(&w("k"), &concurrent("node-3#1", "y", 2)).unwrap();
        assert_eq!(both.len(), 2);
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.props().record("reg"), Some(lww));
    let merged = s
        .merge(&reg("k"), &concurrent("node-5#1", "late", 1))
        .unwrap();
    assert_eq!(merged.values()[0].value(), Some(&b"last"[..]));
}
