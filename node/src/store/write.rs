//! The write paths, kept apart from open, scans and GC: every way a state
//! is minted or merged into the store sits here, so the rules they all keep
//! (mint and append under the key's stripe, bound the clock, update the
//! tree, await the fsync without the stripe) are read and changed side by
//! side.

use std::sync::atomic::Ordering;

use shoal_storage::{Commit, WriteBatch};
use shoal_vclock::{Content, Context, SiblingSet};

use super::hints::{encode_hint, hint_key};
use super::{data_key, data_key_at, digest_of, Store, StoreError, Written, STRIPES};
use crate::keys;

impl Store {
    /// `set` with its clock bounded, as every state this store writes is.
    pub(super) fn bounded(&self, mut set: SiblingSet) -> SiblingSet {
        set.prune(self.max_clock_entries);
        set
    }

    /// Coordinates a client write: reads the local state, applies `update`
    /// with this node's actor, stores it durably and returns it.
    pub fn coordinate(
        &self,
        key: &[u8],
        context: &Context,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<SiblingSet, StoreError> {
        self.coordinate_begin(key, context, content, now, hint_for)?
            .wait()
    }

    /// Appends the deletion of a storage key; the caller waits for the commit
    /// after releasing the key's stripe.
    pub(super) fn append_delete(&self, storage_key: Vec<u8>) -> Result<Commit, StoreError> {
        let mut batch = WriteBatch::new();
        batch.delete(storage_key);
        Ok(self.engine.append(batch)?)
    }

    pub(super) fn written<T>(&self, value: T, commit: Commit) -> Written<T> {
        Written::new(value, commit, self.write_timeout)
    }

    /// [`Store::coordinate`] up to the append: the counter is minted and the
    /// new state appended under the key's stripe, so that only one writer at
    /// a time mints for a key on this replica; the fsync is awaited after.
    ///
    /// With `hint_for`, this node stands in for a down owner: the new version
    /// is stored as a hint for that owner as well as in the local data. The
    /// data copy is what keeps this actor's counters for `key` monotonic: a
    /// hint is deleted once delivered, and minting from it alone would hand
    /// out the same dot twice for two different values.
    pub fn coordinate_begin(
        &self,
        key: &[u8],
        context: &Context,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<Written<SiblingSet>, StoreError> {
        self.mint_begin(key, Some(context), content, now, hint_for)
    }

    /// [`Store::coordinate_begin`] of a write that supersedes every version
    /// this replica holds for `key` (last writer wins, whatever the bucket's
    /// policy): the coordinator's own state is the context.
    pub fn supersede_begin(
        &self,
        key: &[u8],
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<Written<SiblingSet>, StoreError> {
        self.mint_begin(key, None, content, now, hint_for)
    }

    /// `context: None` supersedes what this replica holds.
    fn mint_begin(
        &self,
        key: &[u8],
        context: Option<&Context>,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<Written<SiblingSet>, StoreError> {
        let hint_key = hint_for.map(|owner| hint_key(owner, key)).transpose()?;
        let position = keys::position(key);
        let _guard = self.lock_at(position);
        let held = match &hint_key {
            Some(hk) => self.read_hint(hk, key)?,
            None => None,
        };
        if let (Some(owner), None) = (hint_for, &held) {
            self.hints.check_room(owner)?;
        }
        let data_key = data_key_at(key, position);
        let stored = self.engine.get(&data_key)?;
        let old_digest = stored.as_deref().map(digest_of);
        let mut set = match self.decode(key, stored)? {
            Some(set) => set,
            // Possibly a key a tombstone GC removed: mint above every
            // counter this actor minted for such keys.
            None => SiblingSet::minting_above(self.mint_floor.load(Ordering::Relaxed)),
        };
        let policy = self.props.policy(key);
        match context {
            Some(context) => policy.update(&mut set, context, &self.actor, content, now),
            None => set.update_newest(&self.actor, content, now),
        }
        .map_err(StoreError::Version)?;
        let set = self.bounded(set);
        self.note_expiry(&set);
        let encoded = set.encode();
        let new_digest = digest_of(&encoded);
        let commit = match hint_key {
            None => {
                let mut batch = WriteBatch::new();
                batch.put(data_key, encoded);
                self.engine.append(batch)?
            }
            Some(hint_key) => {
                let is_new = held.is_none();
                let hinted = match held {
                    Some((held, _)) => self.bounded(policy.sync(&held, &set)),
                    None => set.clone(),
                };
                let mut batch = WriteBatch::new();
                batch.put(data_key, encoded);
                batch.put(hint_key, encode_hint(&hinted, self.clock.now_millis()));
                let commit = self.engine.append(batch)?;
                if let (true, Some(owner)) = (is_new, hint_for) {
                    self.hints.added(owner);
                }
                commit
            }
        };
        self.tree_update_at(position, key, old_digest.as_ref(), Some(&new_digest));
        Ok(self.written(set, commit))
    }

    /// Merges `incoming` into the local state of `key`, durably; returns the
    /// merged state.
    pub fn merge(&self, key: &[u8], incoming: &SiblingSet) -> Result<SiblingSet, StoreError> {
        self.merge_begin(key, incoming)?.wait()
    }

    /// [`Store::merge`] up to the append, under the key's stripe. When the
    /// state does not change nothing is appended, but what was read may be a
    /// write still waiting for its fsync, so the commit is a barrier behind it.
    pub fn merge_begin(
        &self,
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<Written<SiblingSet>, StoreError> {
        let position = keys::position(key);
        let storage_key = data_key_at(key, position);
        let _guard = self.lock_at(position);
        let stored = self.engine.get(&storage_key)?;
        let old_digest = stored.as_deref().map(digest_of);
        let current = self.decode(key, stored)?;
        let policy = self.props.policy(key);
        let merged = self.bounded(match &current {
            Some(c) => policy.sync(c, incoming),
            None => policy.sync(&SiblingSet::new(), incoming),
        });
        if current.as_ref() == Some(&merged) {
            let commit = self.engine.barrier()?;
            return Ok(self.written(merged, commit));
        }
        self.note_expiry(&merged);
        let encoded = merged.encode();
        let digest = digest_of(&encoded);
        let mut batch = WriteBatch::new();
        batch.put(storage_key, encoded);
        let commit = self.engine.append(batch)?;
        self.tree_update_at(position, key, old_digest.as_ref(), Some(&digest));
        Ok(self.written(merged, commit))
    }

    /// Merges many states at once (anti-entropy and range streaming): one
    /// engine batch, so one commit-log sync for the lot. Returns the merged
    /// states in input order and how many keys changed.
    pub fn merge_many(
        &self,
        items: &[(Vec<u8>, SiblingSet)],
    ) -> Result<(Vec<SiblingSet>, usize), StoreError> {
        // Stripes locked in ascending order, each once: every other path
        // holds one stripe at a time, so this cannot deadlock.
        let mut stripes: Vec<usize> = items.iter().map(|(k, _)| stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let guards: Vec<_> = stripes
            .iter()
            .map(|&i| self.locks[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut batch = WriteBatch::new();
        let mut merged_all = Vec::with_capacity(items.len());
        let mut updates = Vec::new();
        // A key twice in one batch: the second merge must see the first.
        // Ordered, so the batch (and a simulation's trace) is the same on
        // every run.
        let mut pending: std::collections::BTreeMap<&[u8], (Option<[u8; 32]>, SiblingSet)> =
            std::collections::BTreeMap::new();
        for (key, incoming) in items {
            let (old_digest, current) = match pending.get(key.as_slice()) {
                Some((d, set)) => (*d, Some(set.clone())),
                None => {
                    let stored = self.engine.get(&data_key(key))?;
                    (stored.as_deref().map(digest_of), self.decode(key, stored)?)
                }
            };
            let policy = self.props.policy(key);
            let merged = self.bounded(match &current {
                Some(c) => policy.sync(c, incoming),
                None => policy.sync(&SiblingSet::new(), incoming),
            });
            if current.as_ref() != Some(&merged) {
                pending.insert(key.as_slice(), (old_digest, merged.clone()));
            } else if let Some(entry) = pending.get_mut(key.as_slice()) {
                entry.1 = merged.clone();
            }
            merged_all.push(merged);
        }
        let changed = pending.len();
        for (key, (old_digest, set)) in pending {
            self.note_expiry(&set);
            let encoded = set.encode();
            updates.push((key.to_vec(), old_digest, digest_of(&encoded)));
            batch.put(data_key(key), encoded);
        }
        let commit = if batch.is_empty() {
            // Unchanged states may be writes still waiting for their fsync.
            self.engine.barrier()?
        } else {
            self.engine.append(batch)?
        };
        for (key, old, new) in updates {
            self.tree_update(&key, old.as_ref(), Some(&new));
        }
        // The fsync is waited for without the stripes, which inline RPCs on
        // the runtime would otherwise wait on.
        drop(guards);
        commit.wait()?;
        Ok((merged_all, changed))
    }
}

fn stripe_of(key: &[u8]) -> usize {
    (keys::position(key) as usize) % STRIPES
}
