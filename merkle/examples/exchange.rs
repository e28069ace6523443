//! Bytes two replicas exchange to find and repair their differences, on 1,000,000
//! keys, against a full `(key, digest)` listing.
//!
//! `cargo run -p shoal-merkle --release --example exchange`
//!
//! Replica B differs from A in `d` keys: a third missing on B, a third with another
//! digest, a third extra on B. "tree" counts every request and response of the diff
//! as bincode; "keys" counts both sides' bincode `(key, digest)` listings of the
//! differing segments (or, when the diff answers `FullListing`, A's listing of the
//! whole ring); "full" is A's listing of all its keys, what a tree-less exchange
//! would send. A first table uses the default shape; a second compares shapes.

use rand::{rngs::StdRng, seq::index::sample, SeedableRng};
use sha2::{Digest as _, Sha256};
use shoal_merkle::{
    Diff, DiffOptions, DiffOutcome, LeafRange, MerkleTree, Step, TokenRange, TreeShape,
};

const KEYS: usize = 1_000_000;
const DIFFERENCES: [usize; 4] = [0, 10, 1_000, 100_000];

type Entry = (u64, Vec<u8>, [u8; 32]);

fn entry(key: Vec<u8>, version: u64) -> Entry {
    let h: [u8; 32] = Sha256::digest(&key).into();
    let position = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    let digest: [u8; 32] = Sha256::digest(version.to_be_bytes()).into();
    (position, key, digest)
}

/// Both sides' entries, sorted by position.
struct Replica {
    entries: Vec<Entry>,
    tree: MerkleTree,
}

impl Replica {
    /// Bincode bytes of this side's `(key, digest)` listing of one segment.
    fn listing_bytes(&self, shape: TreeShape, segment: LeafRange) -> usize {
        let range = shape.token_range(segment);
        let pieces = if range.start < range.end {
            vec![(range.start, range.end)]
        } else {
            vec![(range.start, u64::MAX), (0, range.end)]
        };
        let mut listing: Vec<(&[u8], &[u8; 32])> = Vec::new();
        for (start, end) in pieces {
            let from = self.entries.partition_point(|e| e.0 < start);
            let to = if end == u64::MAX {
                self.entries.len()
            } else {
                self.entries.partition_point(|e| e.0 < end)
            };
            listing.extend(
                self.entries[from..to]
                    .iter()
                    .map(|(_, k, d)| (k.as_slice(), d)),
            );
        }
        bincode::serialized_size(&listing).expect("serializable") as usize
    }

    fn full_listing_bytes(&self) -> usize {
        let listing: Vec<(&[u8], &[u8; 32])> = self
            .entries
            .iter()
            .map(|(_, k, d)| (k.as_slice(), d))
            .collect();
        bincode::serialized_size(&listing).expect("serializable") as usize
    }
}

struct Row {
    differences: usize,
    rounds: u32,
    tree_bytes: usize,
    key_bytes: usize,
    full_bytes: usize,
    outcome: String,
}

fn exchange(a: &Replica, b: &Replica) -> Row {
    let shape = a.tree.shape();
    let (mut diff, mut request) =
        Diff::new(&a.tree, TokenRange::FULL, DiffOptions::default()).expect("aligned");
    let mut tree_bytes = 0;
    let report = loop {
        tree_bytes += bincode::serialized_size(&request).expect("serializable") as usize;
        let response = b.tree.answer(&request).expect("valid request");
        tree_bytes += bincode::serialized_size(&response).expect("serializable") as usize;
        match diff.handle(&a.tree, response).expect("valid response") {
            Step::Send(next) => request = next,
            Step::Done(report) => break report,
        }
    };
    let full_bytes = a.full_listing_bytes();
    let (key_bytes, outcome) = match &report.outcome {
        DiffOutcome::Equal => (0, "equal".to_string()),
        DiffOutcome::Segments(segments) => {
            let bytes = segments
                .iter()
                .map(|s| a.listing_bytes(shape, *s) + b.listing_bytes(shape, *s))
                .sum();
            let leaves: u64 = segments
                .iter()
                .map(|s| u64::from(shape.range_len(*s)))
                .sum();
            (
                bytes,
                format!("{} segments, {leaves} leaves", segments.len()),
            )
        }
        DiffOutcome::FullListing => (full_bytes, "full listing".to_string()),
    };
    Row {
        differences: 0,
        rounds: report.rounds,
        tree_bytes,
        key_bytes,
        full_bytes,
        outcome,
    }
}

fn replicas(shape: TreeShape, base: &[Entry], differences: usize, seed: u64) -> (Replica, Replica) {
    let a_tree = MerkleTree::rebuild(shape, base.iter().map(|(p, k, d)| (*p, k.as_slice(), *d)));
    let mut b_tree = a_tree.clone();
    let mut b_entries = base.to_vec();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut missing = Vec::new();
    for (j, i) in sample(&mut rng, base.len(), differences)
        .into_iter()
        .enumerate()
    {
        let (position, key, digest) = &base[i];
        match j % 3 {
            0 => {
                b_tree.remove(*position, key, digest).expect("present");
                missing.push(i);
            }
            1 => {
                let changed = entry(key.clone(), 2).2;
                b_tree
                    .update(*position, key, Some(digest), Some(&changed))
                    .expect("present");
                b_entries[i].2 = changed;
            }
            _ => {
                let extra = entry(format!("extra-{j:08}").into_bytes(), 1);
                b_tree.insert(extra.0, &extra.1, &extra.2).expect("fresh");
                b_entries.push(extra);
            }
        }
    }
    missing.sort_unstable();
    for i in missing.into_iter().rev() {
        b_entries.swap_remove(i);
    }
    b_entries.sort_unstable();
    let mut a_tree = a_tree;
    a_tree.flush();
    b_tree.flush();
    (
        Replica {
            entries: base.to_vec(),
            tree: a_tree,
        },
        Replica {
            entries: b_entries,
            tree: b_tree,
        },
    )
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn main() {
    let mut base: Vec<Entry> = (0..KEYS)
        .map(|i| entry(format!("key-{i:08}").into_bytes(), 1))
        .collect();
    base.sort_unstable();

    let shape = TreeShape::default();
    println!(
        "{KEYS} keys (12-byte keys, 32-byte digests); default shape: 2^{} leaves, fan-out {}",
        shape.leaf_bits(),
        1u32 << shape.fanout_bits()
    );
    println!(
        "{:>11} {:>6} {:>12} {:>12} {:>12} {:>12} {:>6}  outcome",
        "differences", "rounds", "tree", "keys", "total", "full listing", "total%"
    );
    for (seed, &d) in DIFFERENCES.iter().enumerate() {
        let (a, b) = replicas(shape, &base, d, seed as u64);
        let row = Row {
            differences: d,
            ..exchange(&a, &b)
        };
        let total = row.tree_bytes + row.key_bytes;
        println!(
            "{:>11} {:>6} {:>12} {:>12} {:>12} {:>12} {:>5.1}%  {}",
            row.differences,
            row.rounds,
            kib(row.tree_bytes),
            kib(row.key_bytes),
            kib(total),
            kib(row.full_bytes),
            100.0 * total as f64 / row.full_bytes as f64,
            row.outcome
        );
    }

    println!();
    println!("total bytes (tree + keys) and rounds by shape:");
    print!("{:>18}", "leaf_bits/fan-out");
    for d in DIFFERENCES {
        print!(" {:>22}", format!("d={d}"));
    }
    println!();
    for (leaf_bits, fanout_bits) in [
        (16, 4),
        (18, 4),
        (20, 1),
        (20, 2),
        (20, 4),
        (20, 8),
        (22, 4),
    ] {
        let shape = TreeShape::new(leaf_bits, fanout_bits).expect("valid shape");
        print!("{:>18}", format!("{leaf_bits}/{}", 1u32 << fanout_bits));
        for (seed, &d) in DIFFERENCES.iter().enumerate() {
            let (a, b) = replicas(shape, &base, d, seed as u64);
            let row = exchange(&a, &b);
            print!(
                " {:>22}",
                format!(
                    "{} ({} rt)",
                    kib(row.tree_bytes + row.key_bytes),
                    row.rounds
                )
            );
        }
        println!();
    }
}
