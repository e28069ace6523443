//! Merging scans over memtables and tables.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::Result;
use crate::memtable::Memtable;
use crate::sstable::{Entry, TableIter};

/// Entries fetched from a memtable per lock acquisition.
const MEM_CHUNK: usize = 256;

/// A memtable read in chunks, resuming after the last key seen, so a long scan never
/// holds the memtable lock while the caller works.
pub(crate) struct MemIter {
    mem: Arc<Memtable>,
    next_from: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    buf: VecDeque<Entry>,
    done: bool,
}

impl MemIter {
    pub(crate) fn new(mem: Arc<Memtable>, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> MemIter {
        MemIter {
            mem,
            next_from: start,
            end,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Iterator for MemIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            let chunk = self
                .mem
                .chunk(as_ref(&self.next_from), as_ref(&self.end), MEM_CHUNK);
            if chunk.len() < MEM_CHUNK {
                self.done = true;
            }
            if let Some((k, _)) = chunk.last() {
                self.next_from = Bound::Excluded(k.clone());
            }
            self.buf.extend(chunk);
        }
        self.buf.pop_front().map(Ok)
    }
}

/// One input of a merge, newest first.
pub(crate) enum Source {
    Mem(MemIter),
    Table(TableIter),
}

impl Iterator for Source {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Source::Mem(m) => m.next(),
            Source::Table(t) => t.next(),
        }
    }
}

/// K-way merge: for each key, the entry of the newest source wins and the older
/// ones are skipped. Yields tombstones; callers decide what to do with them. After
/// an error it yields nothing more, so a damaged block is reported, not skipped.
pub(crate) struct Merger {
    heads: Vec<Option<Entry>>,
    sources: Vec<Source>,
    started: bool,
    failed: bool,
}

impl Merger {
    pub(crate) fn new(sources: Vec<Source>) -> Merger {
        Merger {
            heads: Vec::new(),
            sources,
            started: false,
            failed: false,
        }
    }

    fn pull(&mut self, i: usize) -> Result<()> {
        self.heads[i] = self.sources[i].next().transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        if !self.started {
            self.started = true;
            self.heads = vec![None; self.sources.len()];
            for i in 0..self.sources.len() {
                self.pull(i)?;
            }
        }
        // Few sources (memtables plus tables), so a linear pass beats a heap.
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some((k, _)) = h {
                if best.is_none_or(|b| self.heads[b].as_ref().is_some_and(|(bk, _)| k < bk)) {
                    best = Some(i);
                }
            }
        }
        let Some(b) = best else { return Ok(None) };
        let winner = self.heads[b].take();
        let key = winner.as_ref().map(|(k, _)| k.clone()).unwrap_or_default();
        self.pull(b)?;
        for i in b + 1..self.heads.len() {
            if self.heads[i].as_ref().is_some_and(|(k, _)| *k == key) {
                self.pull(i)?;
            }
        }
        Ok(winner)
    }
}

impl Iterator for Merger {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// An ordered scan over live keys, returned by [`crate::Engine::scan`].
///
/// It reads a consistent set of tables and memtables chosen when it was created;
/// writes made after that to the memtables it covers may or may not appear (each key
/// shows either its old or its new value). A corrupt block ends the scan with an
/// [`crate::Error::CorruptBlock`] item.
pub struct Iter {
    pub(crate) merger: Merger,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("sources", &self.merger.sources.len())
            .finish()
    }
}

impl Iterator for Iter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.merger.next()? {
                Ok((k, Some(v))) => return Some(Ok((k, v))),
                Ok((_, None)) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
