//! The store's unit tests: key layout, hints, epochs, scans, the tree.

use shoal_merkle::TokenRange;
use shoal_vclock::{Content, Context};

use super::hints::{encode_hint, hint_key, parse_hint_key, prefix_successor};
use super::*;
use crate::env::SystemClock;

fn open(dir: &Path) -> Store {
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    Store::open(dir, "node-1", &config, Arc::new(SystemClock)).unwrap()
}

/// A key of the default bucket.
fn w(k: &str) -> Vec<u8> {
    keys::wire(keys::DEFAULT_BUCKET, k.as_bytes())
}

fn value(v: &str) -> Content {
    Content::value(v.as_bytes().to_vec(), "text/plain")
}

fn small_tree_config() -> Config {
    let mut config = Config::default();
    config.storage.sync = SyncMode::Never;
    config.anti_entropy.leaf_bits = 16;
    config.tombstones.grace_secs = 1;
    config
}

mod buckets;
mod gc;
mod hint_space;
mod scan;
mod tree;
mod writes;
