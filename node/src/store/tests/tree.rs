//! The Merkle tree, apart from the writes that keep it: whatever path
//! changes the data, the incrementally kept tree must equal a rebuild.

use super::*;

#[test]
fn incremental_tree_equals_a_rebuild_through_every_write_path_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_tree_config();
    let root;
    {
        let s = Store::open(dir.path(), "node-1", &config, Arc::new(SystemClock)).unwrap();
        for i in 0..200u32 {
            // Half in the default bucket, half in another: one tree over both.
            let key = if i < 100 {
                w(&format!("k{i}"))
            } else {
                keys::wire("carts", format!("k{i}").as_bytes())
            };
            s.coordinate(&key, &Context::empty(), value("a"), 1, None)
                .unwrap();
        }
        // Overwrites, a stand-in write with a hint, merges, a batch with
        // a key twice, and deletes that purge.
        let current = s.read(&w("k1")).unwrap().unwrap();
        s.coordinate(&w("k1"), &current.context(), value("b"), 2, None)
            .unwrap();
        s.coordinate(&w("k2"), &Context::empty(), value("c"), 3, Some("node-9"))
            .unwrap();
        let mut other = SiblingSet::new();
        other
            .update(&Context::empty(), "node-2#1", value("x"), 4)
            .unwrap();
        s.merge(&w("k3"), &other).unwrap();
        s.merge(&w("new"), &other).unwrap();
        s.put_hint("node-9", &w("hint-only"), &other).unwrap();
        let mut again = other.clone();
        again
            .update(&other.context(), "node-2#1", value("y"), 5)
            .unwrap();
        let (_, changed) = s
            .merge_many(&[
                (w("k4"), other.clone()),
                (w("batch"), other.clone()),
                (w("batch"), again.clone()),
            ])
            .unwrap();
        assert_eq!(changed, 2);
        assert_eq!(s.read(&w("batch")).unwrap(), Some(again));
        for key in [w("k5"), w("k6")] {
            let key = key.as_slice();
            let current = s.read(key).unwrap().unwrap();
            s.coordinate(key, &current.context(), Content::Tombstone, 10, None)
                .unwrap();
        }
        // The tombstones were written at t=10 ms: long past the grace.
        assert_eq!(s.purge_tombstones(1_000_000, usize::MAX).unwrap(), 2);
        assert_eq!(s.read(&w("k5")).unwrap(), None);
        let incremental = s.with_tree(|t| t.clone());
        assert_eq!(incremental, s.rebuilt_tree().unwrap());
        assert_eq!(
            incremental.len(),
            200 + 2 - 2,
            "new + batch, minus two purged"
        );
        root = incremental.root_hash();
        s.close().unwrap();
    }
    let s = Store::open(dir.path(), "node-1", &config, Arc::new(SystemClock)).unwrap();
    assert_eq!(s.with_tree(|t| t.root_hash()), root, "rebuilt at open");
}
