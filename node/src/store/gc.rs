//! Expiry and tombstone GC, kept apart from the write paths: what a node
//! removes (expired values' bytes, tombstones every replica holds,
//! tombstones past the grace period) must never race a write that brings
//! the key back, and keeping every removal together keeps the rules they
//! share (the key's stripe, the tree, the mint floor) in one place to check.

use std::sync::atomic::{AtomicU64, Ordering};

use shoal_storage::WriteBatch;
use shoal_vclock::SiblingSet;

use super::hints::{decode_hint, hint_key};
use super::{
    data_key, digest_of, meta, meta_key, wire_of, Candidate, Store, StoreError, BUCKET, DATA, HINT,
    META,
};
use crate::keys;

impl Store {
    /// Remembers when `set`'s values with a TTL expire, for the purge.
    pub(super) fn note_expiry(&self, set: &SiblingSet) {
        if let Some(at) = set.next_expiry() {
            self.expiry_due.fetch_min(at, Ordering::Relaxed);
        }
    }

    /// When expired values are due a purge: a compaction reclaims their
    /// bytes from then on (`None`: nothing known to expire).
    pub fn expiry_due(&self) -> Option<u64> {
        match self.expiry_due.load(Ordering::Relaxed) {
            u64::MAX => None,
            at => Some(at.saturating_add(self.expiry_skew_ms)),
        }
    }

    /// Purges expired values now if any are due: flushes and compacts the
    /// whole store, which shrinks each expired value to its remains (the
    /// compaction filter) and notes when the next ones are due. Returns
    /// whether it ran.
    pub fn purge_expired(&self) -> Result<bool, StoreError> {
        if self
            .expiry_due()
            .is_none_or(|due| self.clock.now_millis() < due)
        {
            return Ok(false);
        }
        // Cleared first: the compaction's filter and writes meanwhile note
        // the values still to expire.
        self.expiry_due.store(u64::MAX, Ordering::Relaxed);
        self.engine.flush()?;
        self.engine.compact()?;
        Ok(true)
    }

    /// Deletes data keys whose state is only tombstones older than the grace
    /// period, under their lock, removing them from the tree. Visits at most
    /// `limit` keys per call and returns how many it purged.
    pub fn purge_tombstones(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut candidates = Vec::new();
        let mut visited = 0;
        'spaces: for space in [DATA, BUCKET] {
            for item in self
                .engine
                .scan([space].as_slice()..[space + 1].as_slice())?
            {
                if visited >= limit {
                    break 'spaces;
                }
                visited += 1;
                let (k, v) = item?;
                if !keep_after_grace(&k, &v, now_ms, self.grace_ms) {
                    candidates.push(k);
                }
            }
        }
        let mut purged = 0;
        for k in candidates {
            let Some(key) = wire_of(&k) else {
                continue;
            };
            let guard = self.lock(&key);
            // Re-read under the lock: a write may have revived the key.
            let Some(v) = self.engine.get(&k)? else {
                continue;
            };
            if keep_after_grace(&k, &v, now_ms, self.grace_ms) {
                continue;
            }
            let commit = self.append_delete(k.clone())?;
            self.tree_update(&key, Some(&digest_of(&v)), None);
            drop(guard);
            commit.wait()?;
            purged += 1;
            self.counters
                .tombstones_purged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(purged)
    }

    /// Tombstone GC candidates: data keys whose state is dead (tombstones,
    /// and values expired for longer than `expiry.max_skew_ms`), with the
    /// digest of that state; at most `limit`, from `after` (a
    /// storage key; exclusive) on, and where the scan stopped.
    pub fn tombstone_candidates(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Candidate>, Option<Vec<u8>>), StoreError> {
        let mut out = Vec::new();
        let dead_before = self.clock.now_millis().saturating_sub(self.expiry_skew_ms);
        let start = after.map_or_else(
            || vec![DATA],
            |a| {
                let mut k = a.to_vec();
                k.push(0);
                k
            },
        );
        for item in self
            .engine
            .scan(start.as_slice()..[BUCKET + 1].as_slice())?
        {
            let (k, v) = item?;
            if !matches!(k.first(), Some(&DATA | &BUCKET)) {
                continue;
            }
            let Ok(set) = SiblingSet::decode(&v) else {
                continue;
            };
            if set.is_dead(dead_before) {
                if let Some(key) = wire_of(&k) {
                    out.push((key, digest_of(&v)));
                }
            }
            if out.len() >= limit {
                return Ok((out, Some(k)));
            }
        }
        Ok((out, None))
    }

    /// What a tombstone GC asks of each member about `key`: the digest of
    /// its state (`None`: it holds none) and whether it holds a hint for it
    /// (for any owner).
    pub fn gc_state(&self, key: &[u8]) -> Result<(Option<[u8; 32]>, bool), StoreError> {
        let digest = self.engine.get(&data_key(key))?.map(|v| digest_of(&v));
        let mut hinted = false;
        for (owner, _) in self.hints_by_owner() {
            if self.engine.get(&hint_key(&owner, key)?)?.is_some() {
                hinted = true;
                break;
            }
        }
        Ok((digest, hinted))
    }

    /// Removes `key`'s state if it is still exactly the dead state (only
    /// tombstones and expired values) whose digest is `digest` (a write since the GC's check changes it, and then
    /// the key stays). The highest counter this actor minted for the key is
    /// made durable as the mint floor in the same batch. Returns whether it
    /// removed it.
    pub fn gc_purge(&self, key: &[u8], digest: &[u8; 32]) -> Result<bool, StoreError> {
        let storage_key = data_key(key);
        let guard = self.lock(key);
        let Some(v) = self.engine.get(&storage_key)? else {
            return Ok(false);
        };
        if digest_of(&v) != *digest {
            return Ok(false);
        }
        let set = SiblingSet::decode(&v).map_err(|source| StoreError::Corrupt {
            key: keys::display(key),
            source,
        })?;
        let dead_before = self.clock.now_millis().saturating_sub(self.expiry_skew_ms);
        if !set.is_dead(dead_before) {
            return Ok(false);
        }
        let minted = set.clock().get(&self.actor).max(set.counter_floor());
        let floor = self
            .mint_floor
            .fetch_max(minted, Ordering::Relaxed)
            .max(minted);
        let mut batch = WriteBatch::new();
        batch.delete(storage_key);
        batch.put(
            meta_key(meta::MINT_FLOOR.as_bytes()),
            floor.to_be_bytes().to_vec(),
        );
        let commit = self.engine.append(batch)?;
        self.tree_update(key, Some(digest), None);
        drop(guard);
        commit.wait()?;
        self.counters
            .tombstones_purged
            .fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Purges expired tombstones, then runs a compaction now (tests use it
    /// to check tombstone purging).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.purge_tombstones(self.clock.now_millis(), usize::MAX)?;
        self.engine.flush()?;
        self.engine.compact()?;
        Ok(())
    }
}

/// Compaction's verdict on a data entry that holds values with a TTL:
/// expired values (by `cutoff`) shrink to their remains; the others are
/// noted as due later. Undecodable bytes are kept as they are.
pub(super) fn expiry_verdict(
    value: &[u8],
    cutoff: u64,
    counters: &crate::observe::NodeCounters,
    due: &AtomicU64,
) -> shoal_storage::Verdict {
    let Ok(mut set) = SiblingSet::decode(value) else {
        return shoal_storage::Verdict::Keep;
    };
    let freed = set.purge_expired(cutoff);
    if let Some(at) = set.next_expiry() {
        due.fetch_min(at, Ordering::Relaxed);
    }
    if freed == 0 {
        return shoal_storage::Verdict::Keep;
    }
    let encoded = set.encode();
    counters.expired_purged.fetch_add(1, Ordering::Relaxed);
    counters.expired_bytes_reclaimed.fetch_add(
        value.len().saturating_sub(encoded.len()) as u64,
        Ordering::Relaxed,
    );
    shoal_storage::Verdict::Replace(encoded)
}

/// Compaction filter: drop a data or hint entry whose state is only
/// tombstones, all older than the grace period (when one is set). Anything undecodable is kept
/// (purging is never the way to handle corruption).
pub(super) fn keep_after_grace(key: &[u8], value: &[u8], now_ms: u64, grace_ms: u64) -> bool {
    // 0: no grace purge at all (the default); the tombstone GC decides.
    if key.first() == Some(&META) || grace_ms == 0 {
        return true;
    }
    let decoded = if key.first() == Some(&HINT) {
        decode_hint(value).map(|(set, _)| set)
    } else {
        SiblingSet::decode(value)
    };
    match decoded {
        Ok(set) if set.is_tombstone_only() => match set.latest_write_time() {
            Some(t) => now_ms.saturating_sub(t) < grace_ms,
            None => true,
        },
        _ => true,
    }
}
