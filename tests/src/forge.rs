//! Contexts as an attacker writes them: the valid binary encoding
//! (`shoal_vclock::Context::encode`'s format 0x21) with whatever content the
//! test wants, so hostile-but-well-formed input is one function, not a
//! varint loop in every test.

/// Format byte 0x21, varint floor, varint count, then per actor (sorted,
/// deduplicated, keeping the highest counter) a varint length, the name and a varint counter.
pub fn context_bytes(floor: u64, entries: &[(String, u64)]) -> Vec<u8> {
    let mut entries = entries.to_vec();
    // An actor named twice keeps its highest counter.
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    entries.dedup_by(|a, b| a.0 == b.0);
    let mut out = vec![0x21];
    varint(&mut out, floor);
    varint(&mut out, entries.len() as u64);
    for (actor, counter) in &entries {
        varint(&mut out, actor.len() as u64);
        out.extend_from_slice(actor.as_bytes());
        varint(&mut out, *counter);
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_as_the_context_it_describes() {
        let bytes = context_bytes(7, &[("b".into(), 300), ("a".into(), 1), ("b".into(), 9)]);
        let ctx = shoal_vclock::Context::decode(&bytes).unwrap();
        assert_eq!(ctx.counter_floor(), 7);
        let got: Vec<(String, u64)> = ctx.entries().map(|(a, n)| (a.to_string(), n)).collect();
        assert_eq!(got, [("a".to_string(), 1), ("b".to_string(), 300)]);
    }
}
