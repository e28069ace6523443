//! Property tests for the tree and diff laws stated in the crate docs.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use shoal_merkle::{
    Diff, DiffOptions, DiffOutcome, DiffReport, LeafRange, MerkleTree, Request, Response, Step,
    TokenRange, TreeShape, MAX_HASHES_PER_MESSAGE, MAX_MESSAGE_BYTES,
};

/// Key id -> version. Versions are small numbers so two maps often agree.
type Content = BTreeMap<u16, u8>;

fn key(id: u16) -> Vec<u8> {
    format!("key-{id}").into_bytes()
}

/// Positions crowd into 512 leaves spread over the ring, so leaves often hold
/// several keys and diffs have to tell them apart.
fn position(id: u16) -> u64 {
    let h: [u8; 32] = Sha256::digest(key(id)).into();
    let bucket = u64::from(u16::from_be_bytes([h[0], h[1]])) % 512;
    let low = u64::from_be_bytes([0, 0, h[2], h[3], h[4], h[5], h[6], h[7]]);
    (bucket * 128) << 48 | low
}

fn digest(version: u8) -> [u8; 32] {
    [version; 32]
}

fn build(shape: TreeShape, content: &Content) -> MerkleTree {
    MerkleTree::rebuild(
        shape,
        content
            .iter()
            .map(|(&id, &v)| (position(id), key(id), digest(v))),
    )
}

/// Leaves whose entries differ between `a` and `b`.
fn differing_leaves(shape: TreeShape, a: &Content, b: &Content) -> BTreeSet<u32> {
    let ids: BTreeSet<u16> = a.keys().chain(b.keys()).copied().collect();
    ids.into_iter()
        .filter(|id| a.get(id) != b.get(id))
        .map(|id| shape.leaf_of(position(id)))
        .collect()
}

fn expand(shape: TreeShape, segments: &[LeafRange]) -> BTreeSet<u32> {
    let mut leaves = BTreeSet::new();
    for s in segments {
        let mut leaf = s.start;
        for _ in 0..shape.range_len(*s) {
            assert!(leaves.insert(leaf), "segments overlap at leaf {leaf}");
            leaf = (leaf + 1) % shape.leaves();
        }
    }
    leaves
}

/// Runs a diff to the end, sending every message through bincode as a real
/// transport would and checking the size limits on the way.
fn run(
    local: &MerkleTree,
    remote: &MerkleTree,
    range: TokenRange,
    options: DiffOptions,
) -> DiffReport {
    let (mut diff, mut request) = Diff::new(local, range, options).unwrap();
    for _ in 0..100_000 {
        let bytes = bincode::serialize(&request).unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        let received: Request = bincode::deserialize(&bytes).unwrap();
        let response = remote.answer(&received).unwrap();
        let bytes = bincode::serialize(&response).unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        if let shoal_merkle::Answer::Hashes { hashes } = &response.answer {
            assert!(hashes.len() <= MAX_HASHES_PER_MESSAGE);
        }
        let response: Response = bincode::deserialize(&bytes).unwrap();
        match diff.handle(local, response).unwrap() {
            Step::Send(next) => request = next,
            Step::Done(report) => return report,
        }
    }
    panic!("diff did not finish in 100,000 rounds");
}

fn shapes() -> impl Strategy<Value = TreeShape> {
    (16u8..=18, 1u8..=8).prop_map(|(l, f)| TreeShape::new(l, f).unwrap())
}

fn contents() -> impl Strategy<Value = Content> {
    prop::collection::btree_map(0u16..400, 0u8..3, 0..120)
}

/// A ring range on the token grid (multiples of 2^48), possibly wrapping or full.
fn ranges() -> impl Strategy<Value = TokenRange> {
    prop_oneof![
        Just(TokenRange::FULL),
        (any::<u16>(), any::<u16>()).prop_map(|(s, e)| TokenRange {
            start: u64::from(s) << 48,
            end: u64::from(e) << 48,
        }),
    ]
}

fn exact() -> DiffOptions {
    DiffOptions {
        adaptive: false,
        ..DiffOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The exact diff reports precisely the leaves inside the range where the two
    /// sides hold different (key, digest) entries; `Equal` exactly when there are none.
    #[test]
    fn exact_diff_reports_exactly_the_differing_leaves(
        shape in shapes(), a in contents(), b in contents(), range in ranges(),
    ) {
        let (ta, tb) = (build(shape, &a), build(shape, &b));
        let leaf_range = shape.leaf_range(range).unwrap();
        let expected: BTreeSet<u32> = differing_leaves(shape, &a, &b)
            .into_iter()
            .filter(|l| leaf_range.contains(*l))
            .collect();
        let report = run(&ta, &tb, range, exact());
        match report.outcome {
            DiffOutcome::Equal => prop_assert!(expected.is_empty()),
            DiffOutcome::Segments(segments) => {
                prop_assert!(!expected.is_empty(), "differing range hashes with equal content");
                prop_assert_eq!(expand(shape, &segments), expected);
            }
            DiffOutcome::FullListing => prop_assert!(false, "exact diffs never give up"),
        }
        // Symmetric: the other side finds the same leaves.
        let back = run(&tb, &ta, range, exact());
        prop_assert_eq!(back.outcome == DiffOutcome::Equal, report.rounds == 1);
    }

    /// The adaptive diff may coarsen or give up, but never misses a differing leaf and
    /// never reports one outside the range.
    #[test]
    fn adaptive_diff_covers_every_difference_inside_the_range(
        shape in shapes(), a in contents(), b in contents(), range in ranges(),
        entry_bytes in prop_oneof![Just(1u32), Just(64), Just(4096)],
    ) {
        let (ta, tb) = (build(shape, &a), build(shape, &b));
        let leaf_range = shape.leaf_range(range).unwrap();
        let expected: BTreeSet<u32> = differing_leaves(shape, &a, &b)
            .into_iter()
            .filter(|l| leaf_range.contains(*l))
            .collect();
        let options = DiffOptions { entry_bytes, adaptive: true };
        match run(&ta, &tb, range, options).outcome {
            DiffOutcome::Equal => prop_assert!(expected.is_empty()),
            DiffOutcome::Segments(segments) => {
                let reported = expand(shape, &segments);
                prop_assert!(reported.is_superset(&expected));
                prop_assert!(reported.iter().all(|l| leaf_range.contains(*l)));
            }
            DiffOutcome::FullListing => prop_assert!(!expected.is_empty()),
        }
    }

    /// An empty diff means equal content: equal range hashes, and the same entries.
    #[test]
    fn equal_outcome_means_equal_content(shape in shapes(), a in contents(), range in ranges()) {
        let ta = build(shape, &a);
        let report = run(&ta, &ta.clone(), range, DiffOptions::default());
        prop_assert_eq!(report.outcome, DiffOutcome::Equal);
        prop_assert_eq!(report.rounds, 1);
        prop_assert_eq!(report.hashes_received, 0);
    }

    /// Incremental updates in any order, with detours (a wrong version first, an extra
    /// key inserted and removed again) and flushes at random points, give the tree a
    /// rebuild gives.
    #[test]
    fn incremental_updates_in_any_order_equal_rebuild(
        shape in shapes(),
        content in contents(),
        order_seed in any::<u64>(),
        detours in prop::collection::vec((0u16..400, 0u8..3, any::<bool>()), 0..40),
        flush_every in 1usize..50,
    ) {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut ops: Vec<(u16, u8)> = content.iter().map(|(&k, &v)| (k, v)).collect();
        ops.shuffle(&mut rand::rngs::StdRng::seed_from_u64(order_seed));
        let mut tree = MerkleTree::new(shape);
        // Detours: write a version, later replace or remove it; the tree must forget it.
        let mut state: Content = BTreeMap::new();
        for (i, (id, v, keep_key)) in detours.iter().enumerate() {
            let old = state.get(id).map(|&o| digest(o));
            tree.update(position(*id), &key(*id), old.as_ref(), Some(&digest(*v))).unwrap();
            state.insert(*id, *v);
            if !keep_key {
                tree.remove(position(*id), &key(*id), &digest(*v)).unwrap();
                state.remove(id);
            }
            if i % flush_every == 0 {
                tree.flush();
            }
        }
        for (i, (id, v)) in ops.iter().enumerate() {
            let old = state.get(id).map(|&o| digest(o));
            tree.update(position(*id), &key(*id), old.as_ref(), Some(&digest(*v))).unwrap();
            state.insert(*id, *v);
            if i % flush_every == 0 {
                tree.flush();
            }
        }
        // Keys written only by detours and kept must go to match `content`.
        let extra: Vec<(u16, u8)> = state
            .iter()
            .filter(|(id, _)| !content.contains_key(id))
            .map(|(&id, &v)| (id, v))
            .collect();
        for (id, v) in extra {
            tree.remove(position(id), &key(id), &digest(v)).unwrap();
        }
        let rebuilt = build(shape, &content);
        prop_assert_eq!(tree.root_hash(), rebuilt.root_hash());
        prop_assert_eq!(&tree, &rebuilt);
        tree.flush();
        prop_assert_eq!(tree.root_hash(), rebuilt.root_hash());
        prop_assert_eq!(tree.range_hash(TokenRange { start: 5 << 48, end: 3 << 48 }).unwrap(),
            rebuilt.range_hash(TokenRange { start: 5 << 48, end: 3 << 48 }).unwrap());
        prop_assert_eq!(tree.len(), content.len() as u64);
    }

    /// Range hashes depend only on the entries inside the range.
    #[test]
    fn range_hash_ignores_entries_outside(
        shape in shapes(), a in contents(), b in contents(), range in ranges(),
    ) {
        let leaf_range = shape.leaf_range(range).unwrap();
        let inside = |c: &Content| -> Content {
            c.iter()
                .filter(|(&id, _)| leaf_range.contains(shape.leaf_of(position(id))))
                .map(|(&k, &v)| (k, v))
                .collect()
        };
        let (ta, tb) = (build(shape, &a), build(shape, &b));
        prop_assert_eq!(
            ta.range_hash(range).unwrap() == tb.range_hash(range).unwrap(),
            inside(&a) == inside(&b)
        );
        prop_assert_eq!(ta.range_len(range).unwrap(), inside(&a).len() as u64);
    }
}
