//! Immutable sorted tables, and the block cache they share.
//!
//! File layout (little endian); every block is followed by the crc32c of its bytes:
//!
//! ```text
//! data block*   entries (klen u32, vlen u32 | u32::MAX for a tombstone, key, value),
//!               then count u32
//! filter block  Bloom filter over every key in the table
//! index block   count u32, then per data block: klen u32, last key, offset u64, len u32
//! footer        index offset u64, index len u64, filter offset u64, filter len u64,
//!               entries u64, format u32, crc32c u32 of the preceding 44 bytes,
//!               magic b"SHOALSST"
//! ```
//!
//! The index and filter are loaded at open; data blocks are read with `pread` on
//! demand and verified each time they enter the cache, so a damaged block fails
//! only the reads that need it.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::bloom::{self, Bloom};
use crate::error::{io_err, Error, Result};
use crate::fs::{Fs, OpenMode, ReadableFile, WritableFile};

const MAGIC: &[u8; 8] = b"SHOALSST";
const FORMAT: u32 = 1;
const FOOTER: usize = 56;
const TOMBSTONE: u32 = u32::MAX;
/// Bytes a table builder buffers before writing them out.
const WRITE_BUFFER: usize = 1 << 16;

/// A key and its value, `None` being a tombstone.
pub(crate) type Entry = (Vec<u8>, Option<Vec<u8>>);

pub(crate) fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.sst"))
}

/// Streams sorted entries into a new table file.
pub(crate) struct TableBuilder {
    path: PathBuf,
    out: Box<dyn WritableFile>,
    /// Bytes not yet written to `out`.
    pending: Vec<u8>,
    offset: u64,
    block: Vec<u8>,
    block_count: u32,
    block_last: Vec<u8>,
    block_bytes: usize,
    index: Vec<u8>,
    index_count: u32,
    hashes: Vec<u64>,
    bits_per_key: u32,
}

impl TableBuilder {
    pub(crate) fn create(
        fs: &dyn Fs,
        path: PathBuf,
        block_bytes: usize,
        bits_per_key: u32,
    ) -> Result<TableBuilder> {
        let out = fs
            .open_write(&path, OpenMode::CreateNew)
            .map_err(io_err(&path, "create table"))?;
        Ok(TableBuilder {
            path,
            out,
            pending: Vec::with_capacity(WRITE_BUFFER),
            offset: 0,
            block: Vec::with_capacity(block_bytes + 1024),
            block_count: 0,
            block_last: Vec::new(),
            block_bytes: block_bytes.max(64),
            index: Vec::new(),
            index_count: 0,
            hashes: Vec::new(),
            bits_per_key,
        })
    }

    /// Adds the next entry; keys must arrive strictly ascending.
    pub(crate) fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.block
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.block
            .extend_from_slice(&value.map_or(TOMBSTONE, |v| v.len() as u32).to_le_bytes());
        self.block.extend_from_slice(key);
        if let Some(v) = value {
            self.block.extend_from_slice(v);
        }
        self.block_count += 1;
        self.block_last.clear();
        self.block_last.extend_from_slice(key);
        self.hashes.push(bloom::hash(key));
        if self.block.len() >= self.block_bytes {
            self.finish_block()?;
        }
        Ok(())
    }

    pub(crate) fn entries(&self) -> usize {
        self.hashes.len()
    }

    /// Buffers `bytes`, writing the buffer out once it is full.
    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= WRITE_BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        self.out
            .write_all(&self.pending)
            .map_err(io_err(&self.path, "write table"))?;
        self.pending.clear();
        Ok(())
    }

    fn write_block(&mut self, payload: &[u8]) -> Result<(u64, u64)> {
        let crc = crc32c::crc32c(payload);
        self.emit(payload)?;
        self.emit(&crc.to_le_bytes())?;
        let at = self.offset;
        let len = payload.len() as u64 + 4;
        self.offset += len;
        Ok((at, len))
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block_count == 0 {
            return Ok(());
        }
        let mut payload = std::mem::take(&mut self.block);
        payload.extend_from_slice(&self.block_count.to_le_bytes());
        let (at, len) = self.write_block(&payload)?;
        payload.clear();
        self.block = payload;
        self.block_count = 0;
        self.index
            .extend_from_slice(&(self.block_last.len() as u32).to_le_bytes());
        self.index.extend_from_slice(&self.block_last);
        self.index.extend_from_slice(&at.to_le_bytes());
        self.index.extend_from_slice(&(len as u32).to_le_bytes());
        self.index_count += 1;
        Ok(())
    }

    /// Writes filter, index and footer and fsyncs; returns the file size.
    pub(crate) fn finish(mut self) -> Result<u64> {
        self.finish_block()?;
        let filter = bloom::build(&self.hashes, self.bits_per_key);
        let (filter_at, filter_len) = self.write_block(&filter)?;
        let mut index = self.index_count.to_le_bytes().to_vec();
        index.extend_from_slice(&std::mem::take(&mut self.index));
        let (index_at, index_len) = self.write_block(&index)?;
        let mut footer = Vec::with_capacity(FOOTER);
        for v in [
            index_at,
            index_len,
            filter_at,
            filter_len,
            self.hashes.len() as u64,
        ] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
        footer.extend_from_slice(&FORMAT.to_le_bytes());
        footer.extend_from_slice(&crc32c::crc32c(&footer).to_le_bytes());
        footer.extend_from_slice(MAGIC);
        self.pending.extend_from_slice(&footer);
        self.write_out()?;
        self.out
            .sync_all()
            .map_err(io_err(&self.path, "fsync table"))?;
        Ok(self.offset + FOOTER as u64)
    }
}

/// A verified, decoded data block.
#[derive(Debug)]
pub(crate) struct Block {
    data: Vec<u8>,
    /// Per entry: key start, key length, value start, value length or `TOMBSTONE`.
    entries: Vec<[u32; 4]>,
}

impl Block {
    fn parse(data: Vec<u8>) -> Result<Block, String> {
        if data.len() < 4 {
            return Err("block shorter than its entry count".into());
        }
        let end = data.len() - 4;
        let n =
            u32::from_le_bytes([data[end], data[end + 1], data[end + 2], data[end + 3]]) as usize;
        let mut entries = Vec::with_capacity(n.min(end / 8));
        let mut at = 0usize;
        for i in 0..n {
            let hdr = data
                .get(at..at + 8)
                .filter(|_| at + 8 <= end)
                .ok_or_else(|| format!("entry {i} header out of bounds"))?;
            let kl = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let vl = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            let k = at + 8;
            let v = k + kl;
            let next = v + if vl == TOMBSTONE { 0 } else { vl as usize };
            if next > end {
                return Err(format!("entry {i} runs past the block"));
            }
            if let Some(prev) = entries.last() {
                let [pk, pl, _, _]: [u32; 4] = *prev;
                if data[pk as usize..(pk + pl) as usize] >= data[k..v] {
                    return Err(format!("entry {i} out of order"));
                }
            }
            entries.push([k as u32, kl as u32, v as u32, vl]);
            at = next;
        }
        if at != end {
            return Err("trailing bytes after the last entry".into());
        }
        Ok(Block { data, entries })
    }

    fn key(&self, i: usize) -> &[u8] {
        let [k, kl, _, _] = self.entries[i];
        &self.data[k as usize..(k + kl) as usize]
    }

    fn entry(&self, i: usize) -> Entry {
        let [_, _, v, vl] = self.entries[i];
        let val = (vl != TOMBSTONE).then(|| self.data[v as usize..(v + vl) as usize].to_vec());
        (self.key(i).to_vec(), val)
    }

    /// Index of the first entry with key >= `key` (or > if `exclusive`).
    fn seek(&self, key: &[u8], exclusive: bool) -> usize {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = self.key(mid);
            if k < key || (exclusive && k == key) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    map: HashMap<(u64, u64), Arc<Block>>,
    order: VecDeque<(u64, u64)>,
    bytes: usize,
}

/// Decoded data blocks keyed by (table id, offset), evicted first-in first-out per
/// shard. Table ids are never reused, so blocks of deleted tables simply age out.
pub(crate) struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes: usize,
}

impl BlockCache {
    pub(crate) fn new(bytes: usize) -> BlockCache {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_bytes: bytes / SHARDS,
        }
    }

    fn shard(&self, key: (u64, u64)) -> std::sync::MutexGuard<'_, Shard> {
        let i =
            (bloom::hash(&[key.0.to_le_bytes(), key.1.to_le_bytes()].concat()) as usize) % SHARDS;
        // The shard holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: (u64, u64)) -> Option<Arc<Block>> {
        self.shard(key).map.get(&key).cloned()
    }

    fn insert(&self, key: (u64, u64), block: Arc<Block>) {
        if self.shard_bytes == 0 {
            return;
        }
        let size = block.data.len() + block.entries.len() * 16;
        let mut s = self.shard(key);
        if s.map.insert(key, block).is_none() {
            s.order.push_back(key);
            s.bytes += size;
        }
        while s.bytes > self.shard_bytes {
            let Some(old) = s.order.pop_front() else {
                break;
            };
            if let Some(b) = s.map.remove(&old) {
                s.bytes = s.bytes.saturating_sub(b.data.len() + b.entries.len() * 16);
            }
        }
    }
}

struct IndexEntry {
    last_key: Vec<u8>,
    offset: u64,
    len: u32,
}

/// An open table: index and filter in memory, data blocks on disk.
pub(crate) struct Table {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) entries: u64,
    file: Box<dyn ReadableFile>,
    index: Vec<IndexEntry>,
    filter: Bloom,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Table {
    pub(crate) fn open(fs: &dyn Fs, path: PathBuf, id: u64) -> Result<Table> {
        let file = fs.open_read(&path).map_err(io_err(&path, "open table"))?;
        let size = file.size().map_err(io_err(&path, "stat table"))?;
        let corrupt = |offset: u64, reason: String| Error::CorruptBlock {
            path: path.clone(),
            offset,
            reason,
        };
        if size < FOOTER as u64 {
            return Err(corrupt(
                0,
                format!("file of {size} bytes is shorter than the footer"),
            ));
        }
        let foot_at = size - FOOTER as u64;
        let mut foot = [0u8; FOOTER];
        file.read_exact_at(&mut foot, foot_at)
            .map_err(io_err(&path, "read table footer"))?;
        if &foot[48..] != MAGIC {
            return Err(corrupt(foot_at, "bad magic".into()));
        }
        if crc32c::crc32c(&foot[..44]).to_le_bytes() != foot[44..48] {
            return Err(corrupt(foot_at, "footer checksum mismatch".into()));
        }
        let format = u32::from_le_bytes([foot[40], foot[41], foot[42], foot[43]]);
        if format != FORMAT {
            return Err(corrupt(
                foot_at,
                format!("unsupported format version {format}"),
            ));
        }
        let u = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&foot[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let (index_at, index_len, filter_at, filter_len, entries) = (u(0), u(1), u(2), u(3), u(4));
        let index_raw = read_block(&*file, &path, index_at, index_len, foot_at)?;
        let filter_raw = read_block(&*file, &path, filter_at, filter_len, foot_at)?;
        let filter = Bloom::decode(&filter_raw)
            .ok_or_else(|| corrupt(filter_at, "malformed Bloom filter".into()))?;
        let index = decode_index(&index_raw, foot_at).map_err(|r| corrupt(index_at, r))?;
        Ok(Table {
            id,
            path,
            size,
            entries,
            file,
            index,
            filter,
        })
    }

    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        self.filter.may_contain(hash)
    }

    fn block(&self, i: usize, cache: &BlockCache) -> Result<Arc<Block>> {
        let e = &self.index[i];
        if let Some(b) = cache.get((self.id, e.offset)) {
            return Ok(b);
        }
        let raw = read_block(
            &*self.file,
            &self.path,
            e.offset,
            u64::from(e.len),
            self.size,
        )?;
        let b = Arc::new(Block::parse(raw).map_err(|reason| Error::CorruptBlock {
            path: self.path.clone(),
            offset: e.offset,
            reason,
        })?);
        cache.insert((self.id, e.offset), b.clone());
        Ok(b)
    }

    /// `None`: the key is not in this table; `Some(None)`: a tombstone.
    pub(crate) fn get(&self, key: &[u8], cache: &BlockCache) -> Result<Option<Option<Vec<u8>>>> {
        let i = self.index.partition_point(|e| e.last_key.as_slice() < key);
        if i == self.index.len() {
            return Ok(None);
        }
        let b = self.block(i, cache)?;
        let j = b.seek(key, false);
        if j < b.len() && b.key(j) == key {
            return Ok(Some(b.entry(j).1));
        }
        Ok(None)
    }
}

/// Reads and verifies the block at `[at, at + len)`, which must end before `limit`.
fn read_block(
    file: &dyn ReadableFile,
    path: &Path,
    at: u64,
    len: u64,
    limit: u64,
) -> Result<Vec<u8>> {
    let corrupt = |reason: &str| Error::CorruptBlock {
        path: path.to_path_buf(),
        offset: at,
        reason: reason.into(),
    };
    if len < 4 || at.checked_add(len).is_none_or(|end| end > limit) || len > (1 << 31) {
        return Err(corrupt("block extent outside the file"));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, at)
        .map_err(io_err(path, "read table block"))?;
    let (payload, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(payload).to_le_bytes() != crc {
        return Err(corrupt("block checksum mismatch"));
    }
    buf.truncate(buf.len() - 4);
    Ok(buf)
}

fn decode_index(b: &[u8], limit: u64) -> Result<Vec<IndexEntry>, String> {
    let rd = |at: usize, n: usize| {
        b.get(at..at + n)
            .ok_or_else(|| "index entry out of bounds".to_string())
    };
    let n = u32::from_le_bytes(rd(0, 4)?.try_into().map_err(|_| "index count")?) as usize;
    let mut at = 4;
    let mut out = Vec::with_capacity(n.min(b.len() / 16));
    for _ in 0..n {
        let kl = u32::from_le_bytes(rd(at, 4)?.try_into().map_err(|_| "key length")?) as usize;
        let last_key = rd(at + 4, kl)?.to_vec();
        at += 4 + kl;
        let offset = u64::from_le_bytes(rd(at, 8)?.try_into().map_err(|_| "offset")?);
        let len = u32::from_le_bytes(rd(at + 8, 4)?.try_into().map_err(|_| "length")?);
        at += 12;
        if offset.saturating_add(u64::from(len)) > limit {
            return Err("index points outside the file".into());
        }
        if out
            .last()
            .is_some_and(|p: &IndexEntry| p.last_key >= last_key)
        {
            return Err("index keys out of order".into());
        }
        out.push(IndexEntry {
            last_key,
            offset,
            len,
        });
    }
    if at != b.len() {
        return Err("trailing bytes in index".into());
    }
    Ok(out)
}

/// Ordered iteration over a table from a start bound to an end bound.
pub(crate) struct TableIter {
    table: Arc<Table>,
    cache: Arc<BlockCache>,
    block_idx: usize,
    block: Option<Arc<Block>>,
    pos: usize,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    done: bool,
}

impl TableIter {
    pub(crate) fn new(
        table: Arc<Table>,
        cache: Arc<BlockCache>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> TableIter {
        let block_idx = match &start {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => {
                table.index.partition_point(|e| e.last_key < *k)
            }
        };
        TableIter {
            table,
            cache,
            block_idx,
            block: None,
            pos: 0,
            start,
            end,
            done: false,
        }
    }

    fn in_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Unbounded => true,
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
        }
    }
}

impl Iterator for TableIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let block = match &self.block {
                Some(b) => b.clone(),
                None => {
                    if self.block_idx >= self.table.index.len() {
                        self.done = true;
                        return None;
                    }
                    match self.table.block(self.block_idx, &self.cache) {
                        Ok(b) => {
                            self.pos = match &self.start {
                                Bound::Unbounded => 0,
                                Bound::Included(k) => b.seek(k, false),
                                Bound::Excluded(k) => b.seek(k, true),
                            };
                            self.block = Some(b.clone());
                            b
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            };
            if self.pos < block.len() {
                let key = block.key(self.pos);
                if !self.in_end(key) {
                    self.done = true;
                    return None;
                }
                let e = block.entry(self.pos);
                self.pos += 1;
                return Some(Ok(e));
            }
            self.block = None;
            self.block_idx += 1;
        }
        None
    }
}
