//! Range scans and bucket listings, kept apart from point reads and writes:
//! they are the only readers that walk the data space in storage-key order,
//! so the layout arithmetic they share (a bucket's space, a token range's
//! segments in it, cursors into them) stays in one place.

use serde::{Deserialize, Serialize};
use shoal_merkle::TokenRange;
use shoal_vclock::SiblingSet;

use super::{digest_of, hints, space_of, wire_of, Store, StoreError, BUCKET, DATA};

/// One key found by [`Store::scan_ranges`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    /// The user key.
    pub key: Vec<u8>,
    /// [`digest_of`] its stored state.
    pub digest: [u8; 32],
    /// The state itself, when values were asked for.
    pub siblings: Option<SiblingSet>,
}

/// Where a paged scan stopped: the index of the range it was in and the last
/// data key returned from it (storage layout, opaque to callers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor {
    /// Index into the scanned ranges.
    pub range: u32,
    /// Last storage key returned.
    pub after: Vec<u8>,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScanPage {
    /// Keys in ring order (range by range).
    pub entries: Vec<ScanEntry>,
    /// Where to resume; `None` when the ranges are exhausted.
    pub next: Option<ScanCursor>,
}

/// One key of a [`ListPage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Its ring position.
    pub position: u64,
    /// The user key.
    pub key: Vec<u8>,
    /// Its state without values ([`SiblingSet::skeleton`]).
    pub skeleton: SiblingSet,
}

/// A page of `Replica::list_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ListPage {
    /// Entries in `(position, key)` order.
    pub entries: Vec<ListEntry>,
    /// Whether the page stopped at its limit: keys after the last entry
    /// may exist. `false`: this node holds nothing more of the bucket.
    pub more: bool,
}

impl Store {
    /// One page of the data keys in `ranges` (ring token ranges, each one
    /// ordered scan), from `cursor`, up to `max_keys` keys or about
    /// `max_bytes` of values. With `values` false only digests are returned
    /// (anti-entropy's listing); with it true the states too (streaming).
    pub fn scan_ranges(
        &self,
        ranges: &[TokenRange],
        cursor: Option<&ScanCursor>,
        max_keys: usize,
        max_bytes: usize,
        values: bool,
    ) -> Result<ScanPage, StoreError> {
        let mut page = ScanPage::default();
        let mut bytes = 0usize;
        // The range index and storage key of the last entry taken.
        let mut last_at: Option<(u32, Vec<u8>)> = None;
        let first = cursor.map_or(0, |c| c.range as usize);
        if cursor.is_some() && first >= ranges.len() {
            return Err(StoreError::BadCursor);
        }
        for (index, range) in ranges.iter().enumerate().skip(first) {
            let after = cursor
                .filter(|c| c.range as usize == index)
                .map(|c| &c.after);
            if let Some(after) = after {
                if wire_of(after).is_none() {
                    return Err(StoreError::BadCursor);
                }
            }
            let mut segments = Vec::new();
            for space in self.spaces()? {
                segments.extend(storage_segments(&space, *range));
            }
            // Resume inside the segment that holds the cursor; earlier
            // segments are done.
            let (skip, mut from) = match after {
                None => (0, None),
                Some(a) => match segments.iter().position(|(lo, hi)| {
                    lo.as_slice() <= a.as_slice() && a.as_slice() < hi.as_slice()
                }) {
                    Some(i) => (i, Some(a.clone())),
                    None => return Err(StoreError::BadCursor),
                },
            };
            for (lo, hi) in segments.into_iter().skip(skip) {
                let start = match from.take() {
                    Some(a) => std::ops::Bound::Excluded(a),
                    None => std::ops::Bound::Included(lo),
                };
                let bounds = (start, std::ops::Bound::Excluded(hi));
                for item in self.engine.scan::<Vec<u8>, _>(bounds)? {
                    let (k, v) = item?;
                    let size = k.len() + if values { v.len() } else { 32 };
                    if bytes + size > max_bytes {
                        // Stop before the entry that would overflow the
                        // budget (a page always takes at least one).
                        if let Some((range, after)) = last_at.take() {
                            page.next = Some(ScanCursor { range, after });
                            return Ok(page);
                        }
                    }
                    bytes += size;
                    last_at = Some((index as u32, k.clone()));
                    let Some(key) = wire_of(&k) else {
                        continue;
                    };
                    let siblings = if values {
                        self.decode(&key, Some(v.clone()))?
                    } else {
                        None
                    };
                    page.entries.push(ScanEntry {
                        digest: digest_of(&v),
                        key,
                        siblings,
                    });
                    if page.entries.len() >= max_keys {
                        page.next = Some(ScanCursor {
                            range: index as u32,
                            after: k,
                        });
                        return Ok(page);
                    }
                }
            }
        }
        Ok(page)
    }

    /// The data-space prefixes this store holds keys under: the default
    /// bucket's, then each other bucket's in name order (one seek per
    /// bucket, so a scan over every bucket costs the buckets it meets).
    fn spaces(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = vec![vec![DATA]];
        let mut from = vec![BUCKET];
        let end = [BUCKET + 1];
        loop {
            let Some(item) = self.engine.scan(from.as_slice()..end.as_slice())?.next() else {
                break;
            };
            let (k, _) = item?;
            let len = k.get(1).copied().unwrap_or(0) as usize;
            let Some(prefix) = k.get(..2 + len) else {
                break;
            };
            let prefix = prefix.to_vec();
            match hints::prefix_successor(&prefix) {
                Some(next) => from = next,
                None => {
                    out.push(prefix);
                    break;
                }
            }
            out.push(prefix);
        }
        Ok(out)
    }

    /// Up to `max_keys` keys of `bucket` (or about `max_bytes` of their
    /// skeletons) in `(position, key)` order from `position` (after the key
    /// `after` there). Reads that bucket's space only, so listing a small
    /// bucket costs its own keys whatever else the node holds.
    pub fn list_bucket(
        &self,
        bucket: &str,
        position: u64,
        after: Option<&[u8]>,
        max_keys: usize,
        max_bytes: usize,
    ) -> Result<ListPage, StoreError> {
        let space = space_of(bucket);
        let mut from = space.clone();
        from.extend_from_slice(&position.to_be_bytes());
        let start = match after {
            Some(key) => {
                from.extend_from_slice(key);
                std::ops::Bound::Excluded(from)
            }
            None => std::ops::Bound::Included(from),
        };
        let end = match hints::prefix_successor(&space) {
            Some(end) => std::ops::Bound::Excluded(end),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.engine.scan::<Vec<u8>, _>((start, end))? {
            if out.len() >= max_keys || bytes >= max_bytes {
                return Ok(ListPage {
                    entries: out,
                    more: true,
                });
            }
            let (k, v) = item?;
            let Some(pos) = k
                .get(space.len()..space.len() + 8)
                .and_then(|p| <[u8; 8]>::try_from(p).ok())
            else {
                continue;
            };
            let key = k[space.len() + 8..].to_vec();
            let skeleton = self.decode(&k, Some(v))?.unwrap_or_default().skeleton();
            bytes += key.len() + 64 + skeleton.clock().len() * 32;
            out.push(ListEntry {
                position: u64::from_be_bytes(pos),
                key,
                skeleton,
            });
        }
        Ok(ListPage {
            entries: out,
            more: false,
        })
    }
}

/// The storage-key segments `[lo, hi)` of a token range in one bucket's
/// space, in scan order: a wrapping range is its part up to the top of the
/// ring, then from zero.
fn storage_segments(space: &[u8], range: TokenRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    let at = |p: u64| {
        let mut k = space.to_vec();
        k.extend_from_slice(&p.to_be_bytes());
        k
    };
    let top = hints::prefix_successor(space).unwrap_or_else(|| vec![u8::MAX; 9]);
    if range.start < range.end {
        vec![(at(range.start), at(range.end))]
    } else if range.end == 0 {
        vec![(at(range.start), top)]
    } else {
        vec![(at(range.start), top), (at(0), at(range.end))]
    }
}
