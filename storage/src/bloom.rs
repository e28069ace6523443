//! Bloom filters over whole keys, one per SSTable.
//!
//! Double hashing from one 64-bit hash (Kirsch and Mitzenmacher): probe `i` is
//! `h + i * delta`, so a lookup hashes the key once for all tables.

/// A 64-bit hash of a key: word-at-a-time multiply-xorshift, finished with the
/// splitmix64 finalizer so that every input bit affects every output bit.
pub(crate) fn hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// The optimal number of probes, `bits_per_key * ln 2`, kept in 1..=30.
pub(crate) fn num_probes(bits_per_key: u32) -> u32 {
    ((f64::from(bits_per_key) * 0.69).round() as u32).clamp(1, 30)
}

/// Builds the serialized filter: one byte of probe count, then the bit array.
pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let k = num_probes(bits_per_key);
    let nbits = (hashes.len() as u64 * u64::from(bits_per_key)).max(64);
    let nbytes = nbits.div_ceil(8) as usize;
    let nbits = nbytes as u64 * 8;
    let mut out = vec![0u8; nbytes + 1];
    out[0] = k as u8;
    for &h in hashes {
        let mut pos = h;
        let delta = h.rotate_left(31) | 1;
        for _ in 0..k {
            let bit = pos % nbits;
            out[1 + (bit / 8) as usize] |= 1 << (bit % 8);
            pos = pos.wrapping_add(delta);
        }
    }
    out
}

/// A decoded filter held in memory for the table's lifetime.
#[derive(Debug)]
pub(crate) struct Bloom {
    k: u32,
    bits: Vec<u8>,
}

impl Bloom {
    /// Decodes a filter block; `None` if it is malformed.
    pub(crate) fn decode(data: &[u8]) -> Option<Bloom> {
        let (&k, bits) = data.split_first()?;
        if k == 0 || k > 30 || bits.is_empty() {
            return None;
        }
        Some(Bloom {
            k: u32::from(k),
            bits: bits.to_vec(),
        })
    }

    /// `false` means the key is certainly absent.
    pub(crate) fn may_contain(&self, h: u64) -> bool {
        let nbits = self.bits.len() as u64 * 8;
        let mut pos = h;
        let delta = h.rotate_left(31) | 1;
        for _ in 0..self.k {
            let bit = pos % nbits;
            if self.bits[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            pos = pos.wrapping_add(delta);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_rate_near_target() {
        let keys: Vec<u64> = (0..10_000u32).map(|i| hash(&i.to_be_bytes())).collect();
        let f = Bloom::decode(&build(&keys, 10)).expect("valid filter");
        assert!(keys.iter().all(|&h| f.may_contain(h)));
        let fp = (10_000..110_000u32)
            .filter(|i| f.may_contain(hash(&i.to_be_bytes())))
            .count();
        let rate = fp as f64 / 100_000.0;
        assert!(rate < 0.02, "false-positive rate {rate}");
    }

    #[test]
    fn malformed_filters_are_rejected() {
        assert!(Bloom::decode(&[]).is_none());
        assert!(Bloom::decode(&[0, 1]).is_none());
        assert!(Bloom::decode(&[5]).is_none());
    }
}
