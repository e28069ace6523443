//! Running one compaction: merging the tables the policy chose into one and
//! installing it in their place.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::compaction_policy::{self, Choice};
use super::files::write_table;
use super::{lock, Shared};
use crate::error::{Error, Result};
use crate::iter::{Merger, Source};
use crate::sstable::{Table, TableIter};

impl Shared {
    /// One compaction of the newest tables (all of them if `full`); `false` if none
    /// was due.
    pub(super) fn compact_once(&self, full: bool) -> Result<bool> {
        let _c = lock(&self.compaction_lock);
        let v = self.version();
        let sizes: Vec<u64> = v.tables.iter().map(|t| t.size).collect();
        let Some(Choice { tables: k, bottom }) =
            compaction_policy::choose(&sizes, self.opts.compaction_trigger, full)
        else {
            return Ok(false);
        };
        let picked: Vec<Arc<Table>> = v.tables[..k].to_vec();
        let sources = picked
            .iter()
            .map(|t| {
                Source::Table(TableIter::new(
                    t.clone(),
                    self.cache.clone(),
                    Bound::Unbounded,
                    Bound::Unbounded,
                ))
            })
            .collect();
        let filter = self.opts.compaction_filter.clone();
        let entries = Merger::new(sources).filter_map(|r| {
            if self.closed.load(Ordering::Relaxed) {
                return Some(Err(Error::Closed));
            }
            match r {
                Err(e) => Some(Err(e)),
                Ok((key, None)) => (!bottom).then_some(Ok((key, None))),
                Ok((key, Some(val))) => match filter.as_ref().map(|f| f(&key, &val)) {
                    None | Some(crate::Verdict::Keep) => Some(Ok((key, Some(val)))),
                    Some(crate::Verdict::Purge) => (!bottom).then_some(Ok((key, None))),
                    Some(crate::Verdict::Replace(value)) => Some(Ok((key, Some(value)))),
                },
            }
        });
        let id = self.next_file.fetch_add(1, Ordering::SeqCst);
        let out = write_table(&self.dir, id, &self.opts, entries)?;
        let ids: HashSet<u64> = picked.iter().map(|t| t.id).collect();
        let size = out.as_ref().map_or(0, |t| t.size);
        self.install(
            |tables| {
                let mut next = Vec::with_capacity(tables.len());
                let mut placed = false;
                for t in tables {
                    if !ids.contains(&t.id) {
                        next.push(t.clone());
                    } else if !placed {
                        placed = true;
                        next.extend(out.iter().cloned());
                    }
                }
                next
            },
            None,
            None,
        )?;
        for t in &picked {
            if let Err(e) = self.opts.fs.remove_file(&t.path) {
                tracing::warn!(path = %t.path.display(), error = %e, "could not remove compacted table");
            }
        }
        self.counters.compaction.fetch_add(size, Ordering::Relaxed);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}
