//! How big a key's causal metadata grows, and what `SiblingSet::prune`
//! buys: the encoded size and entry count of the stored sibling set and of
//! the context a client reads, after
//!
//! - 10,000 writes through 5 coordinators in turn (round robin), each write
//!   carrying the context read just before it;
//! - the same 10,000 writes when every node's actor id gets a new epoch
//!   every 100 writes (`node-3#57`, as after a restart that lost data), so
//!   100 epochs of 5 nodes leave 500 actors behind;
//!
//! each without pruning and with `prune(max)` after every write.
//!
//! Run with `cargo run -p shoal-vclock --release --example clock_size`.

use shoal_vclock::{Content, SiblingSet};

const NODES: usize = 5;
const WRITES: usize = 10_000;
const WRITES_PER_EPOCH: usize = 100;

/// What one scenario ends with.
struct Sizes {
    siblings: usize,
    clock_entries: usize,
    set_bytes: usize,
    context_entries: usize,
    context_bytes: usize,
}

/// Replays `WRITES` read-then-write cycles; `epochs` bumps every actor id
/// every `WRITES_PER_EPOCH` writes.
fn replay(epochs: bool, prune: Option<usize>) -> Result<Sizes, shoal_vclock::Error> {
    let mut s = SiblingSet::new();
    for i in 0..WRITES {
        let node = i % NODES;
        let actor = if epochs {
            format!("node-{node}#{}", i / WRITES_PER_EPOCH + 1)
        } else {
            format!("node-{node}")
        };
        let ctx = s.context();
        let value = Content::value(format!("value {i:05}").into_bytes(), "text/plain");
        // One millisecond per write, from an arbitrary recent epoch.
        s.update(&ctx, &actor, value, 1_700_000_000_000 + i as u64)?;
        if let Some(max) = prune {
            s.prune(max);
        }
    }
    let ctx = s.context();
    let context_entries = ctx.entries().len();
    Ok(Sizes {
        siblings: s.len(),
        clock_entries: s.clock().len(),
        set_bytes: s.encode().len(),
        context_entries,
        context_bytes: ctx.encode().len(),
    })
}

fn main() -> Result<(), shoal_vclock::Error> {
    println!(
        "{WRITES} writes, {NODES} coordinators round robin, each write with the context read before it"
    );
    println!();
    println!(
        "| scenario | prune | siblings | clock entries | set bytes | context entries | context bytes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, epochs) in [
        ("round robin", false),
        ("new epoch every 100 writes (100 epochs)", true),
    ] {
        for prune in [None, Some(10), Some(50)] {
            let z = replay(epochs, prune)?;
            let prune = prune.map_or_else(|| "none".to_owned(), |m| format!("prune({m})"));
            println!(
                "| {name} | {prune} | {} | {} | {} | {} | {} |",
                z.siblings, z.clock_entries, z.set_bytes, z.context_entries, z.context_bytes
            );
        }
    }
    Ok(())
}
