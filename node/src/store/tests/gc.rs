//! Tombstone removal, apart from the write paths: a purge must remove only
//! the dead state it checked, and the keys it removes must never be minted
//! below what they held.

use super::*;

#[test]
fn tombstones_purge_only_after_grace() {
    let mut t = SiblingSet::new();
    t.update(&Context::empty(), "a", Content::Tombstone, 1_000)
        .unwrap();
    let bytes = t.encode();
    let key = data_key(b"k");
    assert!(keep_after_grace(&key, &bytes, 1_500, 1_000));
    assert!(!keep_after_grace(&key, &bytes, 2_001, 1_000));
    let mut v = SiblingSet::new();
    v.update(&Context::empty(), "a", value("v"), 1_000).unwrap();
    assert!(keep_after_grace(&key, &v.encode(), 1_000_000, 1_000));
    assert!(keep_after_grace(&key, b"garbage", 1_000_000, 1_000));
    assert!(keep_after_grace(
        &meta_key(b"epoch"),
        b"x",
        1_000_000,
        1_000
    ));
}

#[test]
fn a_gc_purge_removes_only_the_state_it_checked_and_later_writes_mint_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = w("gone");
    let first_dot;
    {
        let s = open(dir.path());
        let v = s
            .coordinate(&key, &Context::empty(), value("v"), 1, None)
            .unwrap();
        let t = s
            .coordinate(&key, &v.context(), Content::Tombstone, 2, None)
            .unwrap();
        first_dot = t.values()[0].dot.clone();
        assert!(t.is_tombstone_only());
        let digest = digest_of(&t.encode());
        assert!(
            !s.gc_purge(&key, &[0u8; 32]).unwrap(),
            "another state's digest"
        );
        assert_eq!(s.gc_state(&key).unwrap(), (Some(digest), false));
        assert!(s.gc_purge(&key, &digest).unwrap());
        assert_eq!(s.read(&key).unwrap(), None);
        assert_eq!(s.gc_state(&key).unwrap(), (None, false));
        assert!(s.with_tree(|t| t.is_empty()), "the key left the tree");
        // Written again blindly: a dot no clock of the purged state covers.
        let again = s
            .coordinate(&key, &Context::empty(), value("again"), 3, None)
            .unwrap();
        let dot = &again.values()[0].dot;
        assert_eq!(dot.actor, first_dot.actor);
        assert!(dot.counter > first_dot.counter, "{dot} after {first_dot}");
        s.close().unwrap();
    }
    // The floor is durable: after a restart too.
    let s = open(dir.path());
    let other = w("gone-too");
    let t = s
        .coordinate(&other, &Context::empty(), Content::Tombstone, 4, None)
        .unwrap();
    let digest = digest_of(&t.encode());
    assert!(s.gc_purge(&other, &digest).unwrap());
    let again = s
        .coordinate(&other, &Context::empty(), value("x"), 5, None)
        .unwrap();
    assert!(again.values()[0].dot.counter > first_dot.counter);
}
