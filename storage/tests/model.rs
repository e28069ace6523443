//! Model-based test: random operation sequences against a `BTreeMap`, including
//! flushes, compactions and reopens, with a memtable small enough that background
//! flushes and compactions happen on their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use shoal_storage::{Engine, Options, SyncMode, Verdict, WriteBatch};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Get(u8),
    Scan(u8, u8),
    Flush,
    Compact,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    // Shared prefixes and varying lengths exercise ordering across blocks.
    let mut v = b"key".to_vec();
    v.extend(std::iter::repeat_n(k, usize::from(k % 3) + 1));
    v
}

fn op() -> impl Strategy<Value = Op> {
    let val = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => Just(b"purge".to_vec()),
        1 => Just(b"shrink".to_vec()),
    ];
    prop_oneof![
        6 => (any::<u8>(), val.clone()).prop_map(|(k, v)| Op::Put(k % 64, v)),
        2 => any::<u8>().prop_map(|k| Op::Delete(k % 64)),
        2 => proptest::collection::vec((any::<u8>(), proptest::option::of(val)), 1..6)
            .prop_map(|ops| Op::Batch(ops.into_iter().map(|(k, v)| (k % 64, v)).collect())),
        3 => any::<u8>().prop_map(|k| Op::Get(k % 64)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Scan(a % 64, b % 64)),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn options() -> Options {
    Options {
        sync: SyncMode::Never,
        memtable_bytes: 1024,
        block_bytes: 128,
        compaction_trigger: 3,
        // Purge values equal to "purge" to check the filter never resurrects data.
        compaction_filter: Some(Arc::new(|_k: &[u8], v: &[u8]| match v {
            b"purge" => Verdict::Purge,
            b"shrink" => Verdict::Replace(b"s".to_vec()),
            _ => Verdict::Keep,
        })),
        ..Options::default()
    }
}

/// A value "shrink" may be replaced by "s" by any compaction (the filter's
/// `Replace`): once a read shows "s", the model has it too.
fn absorb_shrinks(seen: &[(Vec<u8>, Vec<u8>)], model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in seen {
        if v == b"s" && model.get(k).is_some_and(|m| m == b"shrink") {
            model.insert(k.clone(), b"s".to_vec());
        }
    }
}

/// A purgeable key may be dropped by any compaction; once gone it stays gone.
fn reconcile(
    engine: &Engine,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    purgeable: &mut BTreeMap<Vec<u8>, ()>,
) {
    purgeable.retain(|k, ()| {
        let present = engine.get(k).expect("get").is_some();
        if !present {
            model.remove(k);
        }
        present
    });
}

/// Drops from the model the purgeable keys that `seen` (a read of `range`)
/// lacks: a background compaction may purge them at any moment, including
/// between [`reconcile`] and the read being checked.
fn forget_purged(
    seen: &[(Vec<u8>, Vec<u8>)],
    range: std::ops::Range<Vec<u8>>,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    purgeable: &mut BTreeMap<Vec<u8>, ()>,
) {
    purgeable.retain(|k, ()| {
        if !range.contains(k) || seen.iter().any(|(s, _)| s == k) {
            return true;
        }
        model.remove(k);
        false
    });
}

fn check_all(
    engine: &Engine,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    purgeable: &mut BTreeMap<Vec<u8>, ()>,
) {
    let all: Vec<_> = engine
        .iter()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("scan");
    forget_purged(&all, Vec::new()..vec![0xFF; 16], model, purgeable);
    absorb_shrinks(&all, model);
    let expect: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, expect);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_btreemap(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut engine = Engine::open(dir.path(), options()).expect("open");
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // Values the filter may purge: compaction may drop them, so the model only
        // allows "present with that value" or "absent" for these keys.
        let mut purgeable: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    engine.put(&key(k), &v).expect("put");
                    purgeable.remove(&key(k));
                    if v == b"purge" { purgeable.insert(key(k), ()); }
                    model.insert(key(k), v);
                }
                Op::Delete(k) => {
                    engine.delete(&key(k)).expect("delete");
                    purgeable.remove(&key(k));
                    model.remove(&key(k));
                }
                Op::Batch(ops) => {
                    let mut b = WriteBatch::new();
                    for (k, v) in &ops {
                        match v {
                            Some(v) => { b.put(key(*k), v.clone()); model.insert(key(*k), v.clone()); }
                            None => { b.delete(key(*k)); model.remove(&key(*k)); }
                        }
                        purgeable.remove(&key(*k));
                        if v.as_deref() == Some(b"purge".as_slice()) { purgeable.insert(key(*k), ()); }
                    }
                    engine.write(b).expect("batch");
                }
                Op::Get(k) => {
                    reconcile(&engine, &mut model, &mut purgeable);
                    let got = engine.get(&key(k)).expect("get");
                    if let Some(v) = &got {
                        absorb_shrinks(&[(key(k), v.clone())], &mut model);
                    }
                    if got.is_none() && purgeable.remove(&key(k)).is_some() {
                        model.remove(&key(k));
                    }
                    prop_assert_eq!(got, model.get(&key(k)).cloned());
                }
                Op::Scan(a, b) => {
                    reconcile(&engine, &mut model, &mut purgeable);
                    let (lo, hi) = (key(a.min(b)), key(a.max(b)));
                    let got: Vec<_> = engine.scan(lo.as_slice()..hi.as_slice()).expect("scan")
                        .collect::<Result<_, _>>().expect("scan item");
                    forget_purged(&got, lo.clone()..hi.clone(), &mut model, &mut purgeable);
                    absorb_shrinks(&got, &mut model);
                    let expect: Vec<_> = model.range(lo.clone()..hi.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(got, expect);
                }
                Op::Flush => engine.flush().expect("flush"),
                Op::Compact => {
                    engine.compact().expect("compact");
                }
                Op::Reopen => {
                    engine.close().expect("close");
                    drop(engine);
                    engine = Engine::open(dir.path(), options()).expect("reopen");
                }
            }
        }
        reconcile(&engine, &mut model, &mut purgeable);
        check_all(&engine, &mut model, &mut purgeable);
        engine.flush().expect("flush");
        engine.compact().expect("compact");
        for k in purgeable.keys() { model.remove(k); }
        let mut none = BTreeMap::new();
        check_all(&engine, &mut model, &mut none);
    }
}

#[test]
fn concurrent_writers_and_readers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        sync: SyncMode::Always,
        memtable_bytes: 16 << 10,
        ..Options::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), opts.clone()).expect("open"));
    let handles: Vec<_> = (0..8u32)
        .map(|t| {
            let e = engine.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let k = format!("t{t:02}-{i:05}");
                    e.put(k.as_bytes(), &i.to_le_bytes()).expect("put");
                    assert_eq!(
                        e.get(k.as_bytes()).expect("get"),
                        Some(i.to_le_bytes().to_vec())
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    assert_eq!(engine.iter().expect("iter").count(), 2400);
    engine.close().expect("close");
    drop(engine);
    let engine = Engine::open(dir.path(), opts).expect("reopen");
    assert_eq!(engine.iter().expect("iter").count(), 2400);
}
