//! The in-memory write buffer.
//!
//! A `BTreeMap` under an `RwLock`: writers are already serialized by the commit log
//! lock, so a concurrent skiplist would buy little, and the map keeps scans ordered.
//! Only the newest version of a key is kept; `None` is a tombstone, which must be
//! kept to shadow older tables.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};

/// Per-entry bookkeeping charged against the memtable size on top of key and value.
const ENTRY_OVERHEAD: usize = 48;

#[derive(Debug)]
pub(crate) struct Memtable {
    map: RwLock<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    bytes: AtomicUsize,
    /// The commit log segment opened when this memtable was frozen: once this
    /// memtable is in a table, segments older than that one are no longer needed.
    pub(crate) sealed_at: OnceLock<u64>,
}

impl Memtable {
    pub(crate) fn new() -> Memtable {
        Memtable {
            map: RwLock::new(BTreeMap::new()),
            bytes: AtomicUsize::new(0),
            sealed_at: OnceLock::new(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        // A panic while holding the lock cannot leave the map half-updated (a
        // BTreeMap insert either happened or not), so a poisoned lock is still usable.
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let mut m = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut added = 0;
        for (k, v) in ops {
            added += k.len() + v.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
            m.insert(k, v);
        }
        self.bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// `None`: not here; `Some(None)`: deleted here; `Some(Some(v))`: the value.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.read().get(key).cloned()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Up to `limit` entries after `from` and within `end`, copied out so the lock is
    /// held only briefly; scans call this repeatedly.
    pub(crate) fn chunk(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let m = self.read();
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (from, end)
        {
            if a > b {
                return Vec::new();
            }
        }
        m.range::<[u8], _>((from, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Calls `f` on every entry in order without copying, for flushing a frozen
    /// memtable (no writer contends for its lock any more).
    pub(crate) fn for_each_entry<E>(
        &self,
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        for (k, v) in self.read().iter() {
            f(k, v.as_deref())?;
        }
        Ok(())
    }
}
