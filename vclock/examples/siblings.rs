//! Replays the sibling explosion of Riak before 2.0 and prints how Shoal's
//! sibling sets avoid it, plus the encoded size of causal contexts.
//!
//! The scenario (basho/riak_test#383; riak_cs#1005 hit it with 10 writers on
//! one object; fixed by dots in basho/riak_kv#746): W clients update one key
//! in turns, each writing with the context returned by its own previous
//! write, which is one step stale because the other clients wrote since.
//! Every write is concurrent with the W-1 writes since its context, so W
//! siblings is the honest answer. With one version vector per object (Riak's
//! vnode vclocks, modelled below as `NaiveObject`) a stale context cannot say
//! which siblings it saw, so none are removed and siblings grow with every
//! write. With dotted version vectors each sibling's dot is checked against
//! the context and the count stays at W.
//!
//! Run with `cargo run -p shoal-vclock --release --example siblings`.

use shoal_vclock::{Content, Context, SiblingSet, VectorClock};

const REPLICAS: usize = 3;
const PUTS_PER_WRITER: usize = 50;

/// Riak < 2.0: one vector clock (per-replica entries) for all siblings.
#[derive(Clone, Default)]
struct NaiveObject {
    clock: VectorClock,
    values: Vec<u64>,
}

impl NaiveObject {
    /// `riak_kv_vnode:put_merge` for a coordinating vnode: increment the
    /// client's clock; if that replaces the stored object, store the value
    /// alone, else keep every stored sibling and bump the merged clock.
    fn put(&mut self, ctx: &VectorClock, actor: &str, value: u64, now: u64) {
        let mut incoming = ctx.clone();
        let counter = incoming.increment(actor, now).expect("counter overflow");
        if counter > self.clock.get(actor)
            && incoming.descends(&self.clock)
            && !self.clock.descends(&incoming)
        {
            *self = NaiveObject {
                clock: incoming,
                values: vec![value],
            };
        } else {
            self.clock.merge(&incoming);
            self.clock.increment(actor, now).expect("counter overflow");
            self.values.push(value);
        }
    }

    /// `riak_object:syntactic_merge`: the dominating object wins, otherwise
    /// the union of siblings under the merged clock.
    fn sync(&mut self, other: &NaiveObject) {
        if self.clock.descends(&other.clock) {
            return;
        }
        if other.clock.descends(&self.clock) {
            *self = other.clone();
            return;
        }
        self.clock.merge(&other.clock);
        for v in &other.values {
            if !self.values.contains(v) {
                self.values.push(*v);
            }
        }
    }
}

fn naive_max_siblings(writers: usize) -> usize {
    let mut replicas = vec![NaiveObject::default(); REPLICAS];
    let mut contexts = vec![VectorClock::new(); writers];
    let mut max = 0;
    for (put, now) in (0..writers * PUTS_PER_WRITER).zip(1u64..) {
        let (w, r) = (put % writers, put % REPLICAS);
        replicas[r].put(&contexts[w], &format!("node-{r}"), put as u64, now);
        contexts[w] = replicas[r].clock.clone();
        let stored = replicas[r].clone();
        for other in &mut replicas {
            other.sync(&stored);
        }
        max = max.max(replicas[r].values.len());
    }
    max
}

fn dvv_max_siblings(writers: usize) -> usize {
    let mut replicas = vec![SiblingSet::new(); REPLICAS];
    let mut contexts = vec![Context::empty(); writers];
    let mut max = 0;
    for (put, now) in (0..writers * PUTS_PER_WRITER).zip(1u64..) {
        let (w, r) = (put % writers, put % REPLICAS);
        let value = Content::value((put as u64).to_le_bytes().to_vec(), "text/plain");
        replicas[r]
            .update(&contexts[w], &format!("node-{r}"), value, now)
            .expect("counter overflow");
        contexts[w] = replicas[r].context();
        let stored = replicas[r].clone();
        for other in &mut replicas {
            other.merge(&stored);
        }
        max = max.max(replicas[r].len());
    }
    max
}

/// A converged state where `actors` replicas have each coordinated about a
/// thousand writes (two-byte counters) and one 100-byte value survives.
fn state_with_actors(actors: usize) -> SiblingSet {
    let mut s = SiblingSet::new();
    let now = 1_700_000_000_000u64;
    for i in 0..actors * 1000 {
        let ctx = s.context();
        let value = Content::value(vec![b'x'; 100], "text/plain");
        s.update(&ctx, &format!("node-{}", i % actors), value, now + i as u64)
            .expect("counter overflow");
    }
    s
}

fn main() {
    println!(
        "Sibling explosion replay: W writers take turns on one key through {REPLICAS} replicas\n\
         (fully synced after each put); each put carries the context returned by the writer's\n\
         own previous put. {PUTS_PER_WRITER} puts per writer."
    );
    println!();
    println!(
        "writers   puts   max siblings: per-replica VV (Riak < 2.0)   DVV sibling set (shoal)"
    );
    // Sanity check of the naive model: a lone writer never makes siblings.
    assert_eq!(naive_max_siblings(1), 1);
    for writers in [2, 7, 10] {
        let naive = naive_max_siblings(writers);
        let dvv = dvv_max_siblings(writers);
        println!(
            "{writers:>7} {:>6}   {naive:>41}   {dvv:>23}",
            writers * PUTS_PER_WRITER
        );
        assert!(dvv <= writers, "more siblings than concurrent writers");
    }
    println!();
    println!("Encoded sizes (actors node-0..node-N, ~1000 writes each, one 100-byte value):");
    println!("actors   context bytes   sibling set bytes");
    for actors in [3, 10, 50] {
        let s = state_with_actors(actors);
        let ctx = s.context().encode();
        assert_eq!(Context::decode(&ctx), Ok(s.context()));
        println!("{actors:>6}   {:>13}   {:>17}", ctx.len(), s.encode().len());
    }
}
