//! The hint space: states held for owners that were down, under
//! `0x04` + owner length + owner + position + wire key. Hints written
//! before buckets (`0x02`, user key) are moved here once, at open, by
//! [`migrate_legacy`].
//!
//! A hint's value is its receipt time and the sibling set
//! (`0x48`, 8-byte big-endian milliseconds, then the set's encoding), so
//! that the handoff TTL runs from when this node took the hint, on its own
//! clock. The sender's clock is in the siblings' `write_time`s, and a
//! peer's clock (or a lying peer) could make a hint expire at once or never.
//! Values written before the receipt time existed (a bare set) age from
//! their newest `write_time`, as they always did.
//!
//! Hints are capped per owner and in all (`handoff.max_hints_per_owner`,
//! `handoff.max_hints`): past either, or with `handoff.enabled = false`, a
//! new hint is refused with [`StoreError::HintRefused`], and the gateway
//! sends the write to another fallback. An acknowledged write is never
//! dropped for lack of room; it is not acknowledged there in the first place.

use std::collections::HashMap;
use std::sync::Mutex;

use shoal_storage::{Engine, WriteBatch};
use shoal_vclock::SiblingSet;

use super::{Store, StoreError, Written, HINT, LEGACY_HINT};
use crate::keys;

/// Marks a hint value that carries its receipt time.
const RECEIVED_FORMAT: u8 = 0x48;

/// A hint read back for delivery.
#[derive(Debug, Clone)]
pub struct Hint {
    /// The owner it is for.
    pub owner: String,
    /// The user key.
    pub key: Vec<u8>,
    /// The state to hand over.
    pub siblings: SiblingSet,
    /// When this node last took a write into this hint (its own clock, ms
    /// since the Unix epoch); the handoff TTL counts from here.
    pub received_ms: u64,
}

/// How many hints there are, per owner and in all, kept in memory (counted
/// once at open) so that the quota check costs no scan.
#[derive(Debug)]
pub(super) struct HintBook {
    counts: Mutex<Counts>,
    enabled: bool,
    max_per_owner: u64,
    max_total: u64,
}

#[derive(Debug, Default)]
struct Counts {
    per_owner: HashMap<String, u64>,
    total: u64,
}

impl HintBook {
    /// Counts the hints `engine` holds.
    pub(super) fn open(
        engine: &Engine,
        config: &crate::config::HandoffConfig,
    ) -> Result<Self, StoreError> {
        let mut counts = Counts::default();
        for item in engine.scan([HINT].as_slice()..[HINT + 1].as_slice())? {
            let (k, _) = item?;
            if let Some((owner, _)) = parse_hint_key(&k) {
                *counts.per_owner.entry(owner).or_default() += 1;
                counts.total += 1;
            }
        }
        Ok(Self {
            counts: Mutex::new(counts),
            enabled: config.enabled,
            max_per_owner: config.max_hints_per_owner,
            max_total: config.max_hints,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether one more hint for `owner` fits.
    pub(super) fn check_room(&self, owner: &str) -> Result<(), StoreError> {
        if !self.enabled {
            return Err(StoreError::HintRefused {
                reason: "handoff.enabled is false on this node".into(),
            });
        }
        let counts = self.lock();
        let for_owner = counts.per_owner.get(owner).copied().unwrap_or(0);
        if for_owner >= self.max_per_owner {
            return Err(StoreError::HintRefused {
                reason: format!(
                    "{for_owner} hints already held for {owner} (handoff.max_hints_per_owner)"
                ),
            });
        }
        if counts.total >= self.max_total {
            return Err(StoreError::HintRefused {
                reason: format!("{} hints already held (handoff.max_hints)", counts.total),
            });
        }
        Ok(())
    }

    pub(super) fn added(&self, owner: &str) {
        let mut counts = self.lock();
        *counts.per_owner.entry(owner.to_string()).or_default() += 1;
        counts.total += 1;
    }

    fn removed(&self, owner: &str) {
        let mut counts = self.lock();
        if let Some(n) = counts.per_owner.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_owner.remove(owner);
            }
        }
        counts.total = counts.total.saturating_sub(1);
    }

    fn total(&self) -> u64 {
        self.lock().total
    }

    /// Every owner with at least one hint held (bounded by
    /// `handoff.max_hints`, since each has a hint).
    fn owners(&self) -> Vec<String> {
        self.lock().per_owner.keys().cloned().collect()
    }

    fn by_owner(&self) -> Vec<(String, u64)> {
        let counts = self.lock();
        counts
            .per_owner
            .iter()
            .map(|(o, n)| (o.clone(), *n))
            .collect()
    }
}

/// A hint's stored value.
pub(super) fn encode_hint(set: &SiblingSet, received_ms: u64) -> Vec<u8> {
    let body = set.encode();
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(RECEIVED_FORMAT);
    out.extend_from_slice(&received_ms.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A hint's set and receipt time (a bare set of before the receipt time
/// ages from its newest write).
pub(super) fn decode_hint(bytes: &[u8]) -> Result<(SiblingSet, u64), shoal_vclock::Error> {
    match bytes.split_first() {
        Some((&RECEIVED_FORMAT, rest)) if rest.len() >= 8 => {
            let (at, body) = rest.split_at(8);
            let received = u64::from_be_bytes(at.try_into().expect("8 bytes"));
            Ok((SiblingSet::decode(body)?, received))
        }
        _ => {
            let set = SiblingSet::decode(bytes)?;
            let received = set.latest_write_time().unwrap_or(0);
            Ok((set, received))
        }
    }
}

impl Store {
    fn decode_hint_value(&self, key: &[u8], bytes: &[u8]) -> Result<(SiblingSet, u64), StoreError> {
        decode_hint(bytes).map_err(|source| StoreError::Corrupt {
            key: crate::keys::display(key),
            source,
        })
    }

    /// The hint held for `owner` and `key`, with its receipt time.
    pub(super) fn read_hint(
        &self,
        storage_key: &[u8],
        key: &[u8],
    ) -> Result<Option<(SiblingSet, u64)>, StoreError> {
        self.engine
            .get(storage_key)?
            .map(|b| self.decode_hint_value(key, &b))
            .transpose()
    }

    /// Merges `incoming` into the hint this node holds for `owner`, stamped
    /// with this node's clock; refused past the quotas or with handoff off.
    pub fn put_hint(
        &self,
        owner: &str,
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<SiblingSet, StoreError> {
        self.put_hint_begin(owner, key, incoming)?.wait()
    }

    /// [`Store::put_hint`] up to the append, under the key's stripe (a
    /// barrier behind earlier writes when the hint does not change, as in
    /// [`Store::merge_begin`]).
    pub fn put_hint_begin(
        &self,
        owner: &str,
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<Written<SiblingSet>, StoreError> {
        let hk = hint_key(owner, key)?;
        let _guard = self.lock(key);
        let held = self.read_hint(&hk, key)?;
        if held.is_none() {
            self.hints.check_room(owner)?;
        }
        let policy = self.props.policy(key);
        let merged = match &held {
            Some((set, _)) => policy.sync(set, incoming),
            None => policy.sync(&SiblingSet::new(), incoming),
        };
        if held.as_ref().map(|(s, _)| s) == Some(&merged) {
            let commit = self.engine.barrier()?;
            return Ok(self.written(merged, commit));
        }
        let now = self.clock.now_millis();
        let mut batch = WriteBatch::new();
        batch.put(hk, encode_hint(&merged, now));
        let commit = self.engine.append(batch)?;
        if held.is_none() {
            self.hints.added(owner);
        }
        Ok(self.written(merged, commit))
    }

    /// The hints held for `key`, by owner, in the hint space's key order.
    ///
    /// One point read per owner this node holds any hint for (the in-memory
    /// counts know them all): a hint's storage key is the owner followed by
    /// the key, so this never reads another key's hints, however many the
    /// node holds for an owner that was down a long time. The debug endpoint
    /// asks every node for this, per request.
    pub fn hints_for_key(&self, key: &[u8]) -> Result<Vec<(String, SiblingSet)>, StoreError> {
        let mut owners = self.hints.owners();
        // The order a scan of the hint space gives: owner length, then bytes.
        owners.sort_by(|a, b| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
        let mut out = Vec::new();
        for owner in owners {
            let hk = hint_key(&owner, key)?;
            if let Some((siblings, _)) = self.read_hint(&hk, key)? {
                out.push((owner, siblings));
            }
        }
        Ok(out)
    }

    /// Up to `limit` hints, grouped by owner in key order.
    pub fn hints(&self, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        for item in self.engine.scan([HINT].as_slice()..[HINT + 1].as_slice())? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some((owner, key)) = parse_hint_key(&k) else {
                tracing::warn!(key = ?k, "skipping malformed hint key");
                continue;
            };
            let (siblings, received_ms) = self.decode_hint_value(&key, &v)?;
            out.push(Hint {
                owner,
                key,
                siblings,
                received_ms,
            });
        }
        Ok(out)
    }

    /// Up to `per_owner` hints for each owner, in owner then key order.
    ///
    /// Taking a bounded slice per owner, rather than the first `n` hints of
    /// the key space, keeps one long-dead owner's backlog from hiding every
    /// other owner's hints from the handoff loop.
    pub fn hints_per_owner(&self, per_owner: usize) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        let mut from = vec![HINT];
        let end = [HINT + 1];
        'owners: loop {
            let mut taken = 0;
            let mut current: Option<Vec<u8>> = None;
            for item in self.engine.scan(from.as_slice()..end.as_slice())? {
                let (k, v) = item?;
                let Some((owner, key)) = parse_hint_key(&k) else {
                    tracing::warn!(key = ?k, "skipping malformed hint key");
                    continue;
                };
                // HINT, length byte, owner: the prefix shared by one owner's hints.
                let prefix = k[..2 + owner.len()].to_vec();
                match &current {
                    Some(p) if *p != prefix => {
                        from = prefix;
                        continue 'owners;
                    }
                    Some(_) if taken >= per_owner => {
                        match prefix_successor(&prefix) {
                            Some(next) => from = next,
                            None => break 'owners,
                        }
                        continue 'owners;
                    }
                    _ => current = Some(prefix),
                }
                let (siblings, received_ms) = self.decode_hint_value(&key, &v)?;
                out.push(Hint {
                    owner,
                    key,
                    siblings,
                    received_ms,
                });
                taken += 1;
            }
            break;
        }
        Ok(out)
    }

    /// Hints held per owner, from the in-memory counts (no disk read: the
    /// metrics scrape and the status RPC ask for it).
    pub fn hints_by_owner(&self) -> Vec<(String, u64)> {
        self.hints.by_owner()
    }

    /// Number of hints held.
    pub fn hint_count(&self) -> Result<u64, StoreError> {
        Ok(self.hints.total())
    }

    /// Deletes a delivered hint, unless it changed since it was read (a newer
    /// write arrived for the same owner and key; it will be delivered next).
    pub fn delete_hint_if_unchanged(
        &self,
        owner: &str,
        key: &[u8],
        delivered: &SiblingSet,
    ) -> Result<bool, StoreError> {
        let guard = self.lock(key);
        let hk = hint_key(owner, key)?;
        match self.read_hint(&hk, key)? {
            Some((current, _)) if current == *delivered => {
                let commit = self.append_delete(hk)?;
                self.hints.removed(owner);
                drop(guard);
                commit.wait()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes a hint whatever it holds (expired past its TTL).
    pub fn drop_hint(&self, owner: &str, key: &[u8]) -> Result<(), StoreError> {
        let guard = self.lock(key);
        let hk = hint_key(owner, key)?;
        if self.engine.get(&hk)?.is_some() {
            let commit = self.append_delete(hk)?;
            self.hints.removed(owner);
            drop(guard);
            commit.wait()?;
        }
        Ok(())
    }
}

pub(super) fn hint_key(owner: &str, key: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len =
        u8::try_from(owner.len()).map_err(|_| StoreError::OwnerTooLong { len: owner.len() })?;
    let mut k = Vec::with_capacity(10 + owner.len() + key.len());
    k.push(HINT);
    k.push(len);
    k.extend_from_slice(owner.as_bytes());
    k.extend_from_slice(&keys::position(key).to_be_bytes());
    k.extend_from_slice(key);
    Ok(k)
}

/// Moves every hint of the layout before buckets (`0x02`, user key of the
/// default bucket) to the wire-key layout, a batch at a time. Each batch
/// deletes what it rewrites, so a crash part-way leaves only hints not yet
/// moved under the old prefix, and the next open moves those. Returns how
/// many moved.
pub(super) fn migrate_legacy(engine: &Engine) -> Result<u64, StoreError> {
    const BATCH: usize = 1024;
    let mut moved = 0u64;
    loop {
        let mut batch = WriteBatch::new();
        let mut n = 0;
        for item in engine
            .scan([LEGACY_HINT].as_slice()..[LEGACY_HINT + 1].as_slice())?
            .take(BATCH)
        {
            let (k, v) = item?;
            n += 1;
            if let Some((owner, key)) = parse_hint_key(&k).filter(|(_, key)| !key.is_empty()) {
                batch.put(
                    hint_key(&owner, &keys::wire(keys::DEFAULT_BUCKET, &key))?,
                    v,
                );
            } else {
                tracing::warn!(key = ?k, "dropping a malformed hint of the old layout");
            }
            batch.delete(k);
        }
        if n == 0 {
            return Ok(moved);
        }
        engine.append(batch)?.wait()?;
        moved += n as u64;
    }
}

/// The smallest key greater than every key that starts with `prefix`.
pub(super) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

pub(super) fn parse_hint_key(k: &[u8]) -> Option<(String, Vec<u8>)> {
    let (&len, rest) = k.get(1..)?.split_first()?;
    let owner = rest.get(..len as usize)?;
    let key = rest.get(len as usize + 8..)?;
    Some((String::from_utf8(owner.to_vec()).ok()?, key.to_vec()))
}
