//! The commit log: numbered segment files of length-prefixed, checksummed records.
//!
//! Record layout (little endian):
//!
//! ```text
//! +---------+-----------+---------------------------------------------+
//! | len u32 | crc32c u32| payload (len bytes)                         |
//! +---------+-----------+---------------------------------------------+
//! payload = count u32, then count x (kind u8, klen u32, vlen u32, key, value)
//! ```
//!
//! The checksum covers the length bytes and the payload, so a flipped length is caught
//! too. One record holds one whole write batch, which is what makes a batch atomic
//! across a crash: it is replayed entirely or not at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{io_err, Error, Result};
use crate::fs::{Fs, OpenMode, WritableFile};
use crate::options::WalRecovery;

/// Bytes of the record header.
pub(crate) const HEADER: usize = 8;
/// Largest payload accepted on replay; a larger length is treated as damage.
const MAX_RECORD: usize = 1 << 30;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// One operation of a batch: a value to store, or `None` for a delete.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);

/// Path of segment `id` in `dir`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.log"))
}

/// Appends one complete record holding `ops` to `out`.
pub(crate) fn encode_record(ops: &[Op], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for (k, v) in ops {
        out.push(if v.is_some() { KIND_PUT } else { KIND_DELETE });
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        let vl = v.as_ref().map_or(0, Vec::len);
        out.extend_from_slice(&(vl as u32).to_le_bytes());
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.extend_from_slice(v);
        }
    }
    let len = (out.len() - start - HEADER) as u32;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn decode_payload(p: &[u8]) -> Option<Vec<Op>> {
    let n = read_u32(p, 0)? as usize;
    let mut at = 4;
    let mut ops = Vec::with_capacity(n.min(p.len() / 9));
    for _ in 0..n {
        let kind = *p.get(at)?;
        let kl = read_u32(p, at + 1)? as usize;
        let vl = read_u32(p, at + 5)? as usize;
        at += 9;
        let key = p.get(at..at.checked_add(kl)?)?.to_vec();
        at += kl;
        let val = match kind {
            KIND_PUT => {
                let v = p.get(at..at.checked_add(vl)?)?.to_vec();
                at += vl;
                Some(v)
            }
            KIND_DELETE if vl == 0 => None,
            _ => return None,
        };
        ops.push((key, val));
    }
    (at == p.len()).then_some(ops)
}

/// Whether an intact record starts anywhere at or after `from`; used only on
/// damage, to tell a torn tail from a corrupt length in the middle.
fn valid_record_after(data: &[u8], from: usize) -> bool {
    (from..data.len().saturating_sub(HEADER)).any(|off| {
        let Some(len) = read_u32(data, off).map(|l| l as usize) else {
            return false;
        };
        let Some(crc) = read_u32(data, off + 4) else {
            return false;
        };
        len >= 4
            && off + HEADER + len <= data.len()
            && crc32c::crc32c_append(
                crc32c::crc32c(&data[off..off + 4]),
                &data[off + HEADER..off + HEADER + len],
            ) == crc
            && decode_payload(&data[off + HEADER..off + HEADER + len]).is_some()
    })
}

/// Damage found while replaying a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub path: PathBuf,
    /// Byte offset where the damage starts.
    pub offset: u64,
    /// What check failed.
    pub reason: String,
}

/// Outcome of replaying one segment.
#[derive(Debug, Default)]
pub(crate) struct SegmentReplay {
    pub(crate) records: u64,
    pub(crate) torn_tail: Option<Damage>,
    pub(crate) salvaged: Option<Damage>,
}

/// Replays every intact record of a segment through `apply`, in order.
///
/// Replay stops without complaint where only zeros remain: that is where
/// appends stopped in a segment preallocated by [`LogWriter`]. A record that is
/// damaged and reaches the end of the file or of the written part (header cut
/// short, length running past the end, checksum failing on the last record) is
/// a torn write from a crash: the file is truncated there. Damage followed by
/// more records is corruption: an error in `Strict` mode, a reported stop in
/// `Salvage` mode.
pub(crate) fn replay_segment(
    fs: &dyn Fs,
    path: &Path,
    mode: WalRecovery,
    mut apply: impl FnMut(Vec<Op>),
) -> Result<SegmentReplay> {
    let data = fs
        .read(path)
        .map_err(io_err(path, "read commit log segment"))?;
    let mut out = SegmentReplay::default();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        let damage = |reason: &str| Damage {
            path: path.to_path_buf(),
            offset: at as u64,
            reason: reason.to_string(),
        };
        if rest.iter().all(|&b| b == 0) {
            // Where appends stopped in a preallocated segment (or where a
            // crash left blocks the file system zero-filled): nothing was
            // written here, so nothing is lost and nothing needs repair.
            return Ok(out);
        }
        let torn = if rest.len() < HEADER {
            Some(damage("record header cut short"))
        } else {
            None
        };
        let problem = if torn.is_some() {
            None
        } else {
            let len = read_u32(rest, 0).unwrap_or(0) as usize;
            let crc = read_u32(rest, 4).unwrap_or(0);
            if len > MAX_RECORD {
                Some((damage("record length out of range"), false))
            } else if HEADER + len > rest.len() {
                // A torn write keeps its true length and loses bytes at the end; a
                // flipped length looks the same unless intact records follow.
                let torn = !valid_record_after(&data, at + 1);
                Some((damage("record runs past the end of the segment"), torn))
            } else {
                let payload = &rest[HEADER..HEADER + len];
                let actual = crc32c::crc32c_append(crc32c::crc32c(&rest[..4]), payload);
                let at_end = HEADER + len == rest.len();
                if actual != crc {
                    // The last write of a preallocated segment, torn by a
                    // crash, has only zeros after it; a damaged length can
                    // reach the zeros too, but then intact records follow.
                    let torn = at_end
                        || (rest[HEADER + len..].iter().all(|&b| b == 0)
                            && !valid_record_after(&data, at + 1));
                    Some((damage("record checksum mismatch"), torn))
                } else if let Some(ops) = decode_payload(payload) {
                    apply(ops);
                    out.records += 1;
                    at += HEADER + len;
                    continue;
                } else {
                    Some((damage("record payload malformed"), false))
                }
            }
        };
        let torn = torn.or_else(|| problem.as_ref().filter(|p| p.1).map(|p| p.0.clone()));
        if let Some(d) = torn {
            tracing::warn!(path = %path.display(), offset = at, reason = %d.reason, "truncating torn commit log tail");
            let f = fs
                .open_write(path, OpenMode::Append)
                .map_err(io_err(path, "open segment to truncate"))?;
            f.set_len(at as u64)
                .map_err(io_err(path, "truncate torn tail"))?;
            f.sync_all()
                .map_err(io_err(path, "fsync truncated segment"))?;
            out.torn_tail = Some(d);
            return Ok(out);
        }
        if let Some((d, _)) = problem {
            return match mode {
                WalRecovery::Strict => Err(Error::CorruptRecord {
                    path: d.path,
                    offset: d.offset,
                    reason: d.reason,
                }),
                WalRecovery::Salvage => {
                    tracing::error!(path = %path.display(), offset = at, reason = %d.reason, "skipping corrupt commit log suffix");
                    out.salvaged = Some(d);
                    Ok(out)
                }
            };
        }
    }
    Ok(out)
}

/// The open segment being appended to, with the user-space buffer that group commit
/// drains.
pub(crate) struct LogWriter {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn WritableFile>,
    pub(crate) buf: Vec<u8>,
    pub(crate) bytes_written: u64,
    /// Bytes of the file already zero-filled ahead of the appends.
    allocated: u64,
    /// How many bytes each zero-fill adds (0: none).
    preallocate: u64,
}

impl LogWriter {
    /// Creates segment `id` and fsyncs the directory so the file survives a
    /// crash. Appends are preallocated `preallocate` bytes at a time (see
    /// [`crate::Options::log_preallocate_bytes`]).
    pub(crate) fn create(fs: &dyn Fs, dir: &Path, id: u64, preallocate: u64) -> Result<LogWriter> {
        let path = segment_path(dir, id);
        let file = fs
            .open_write(&path, OpenMode::CreateNew)
            .map_err(io_err(&path, "create commit log segment"))?;
        crate::manifest::sync_dir(fs, dir)?;
        Ok(LogWriter {
            path,
            file: Arc::from(file),
            buf: Vec::with_capacity(1 << 16),
            bytes_written: 0,
            allocated: 0,
            preallocate,
        })
    }

    /// Writes the buffer to the OS (not fsynced), first zero-filling ahead of
    /// it if it would pass the preallocated part. The zeros reach the disk
    /// with the next fsync, which is the one slower fsync per
    /// `preallocate` bytes.
    pub(crate) fn drain(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.bytes_written + self.buf.len() as u64;
        if self.preallocate > 0 && end > self.allocated {
            let to = end.div_ceil(self.preallocate) * self.preallocate;
            self.file
                .zero_fill(self.allocated, to - self.allocated)
                .map_err(io_err(&self.path, "preallocate commit log"))?;
            self.allocated = to;
        }
        self.file
            .write_all(&self.buf)
            .map_err(io_err(&self.path, "append to commit log"))?;
        self.bytes_written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fs::MemFs;

    fn record(i: u8) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&[(vec![b'k', i], Some(vec![i; 20]))], &mut out);
        out
    }

    /// Three records, then what preallocation leaves: zeros to the end.
    fn preallocated_segment(fs: &MemFs, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let path = PathBuf::from("/wal/0000000000000001.log");
        fs.create_dir_all(Path::new("/wal")).expect("dir");
        let mut data: Vec<u8> = (0..3).flat_map(record).collect();
        data.extend_from_slice(&[0u8; 4096]);
        edit(&mut data);
        let f = fs.open_write(&path, OpenMode::CreateNew).expect("create");
        f.write_all(&data).expect("write");
        path
    }

    fn replay(fs: &MemFs, path: &Path) -> Result<(SegmentReplay, usize)> {
        let mut batches = 0;
        let r = replay_segment(fs, path, WalRecovery::Strict, |_| batches += 1)?;
        Ok((r, batches))
    }

    #[test]
    fn a_preallocated_zero_tail_ends_the_log_without_damage() {
        let fs = MemFs::new();
        let path = preallocated_segment(&fs, |_| {});
        let (r, batches) = replay(&fs, &path).expect("replay");
        assert_eq!((r.records, batches), (3, 3));
        assert!(r.torn_tail.is_none(), "{:?}", r.torn_tail);
        assert!(r.salvaged.is_none());
    }

    #[test]
    fn a_damaged_last_record_before_the_zero_tail_is_a_torn_write() {
        // A crash inside the last write of a preallocated segment leaves a
        // record whose checksum fails with only zeros after it: nothing after
        // it was ever acknowledged, so it is a torn tail, not corruption.
        let fs = MemFs::new();
        let r = record(0).len();
        let path = preallocated_segment(&fs, |d| d[2 * r + HEADER + 3] ^= 0x10);
        let (out, batches) = replay(&fs, &path).expect("a torn tail is not an error");
        assert_eq!((out.records, batches), (2, 2));
        assert_eq!(out.torn_tail.map(|d| d.offset), Some(2 * r as u64));
    }

    #[test]
    fn a_damaged_length_reaching_into_the_zero_tail_over_intact_records_is_corruption() {
        // The first record's length grows to cover the two intact records
        // after it and end inside the zeros: treating that as a torn tail
        // would silently drop two acknowledged records.
        let fs = MemFs::new();
        let r = record(0).len();
        let path = preallocated_segment(&fs, |d| {
            let len = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) + 2 * r as u32 + 10;
            d[..4].copy_from_slice(&len.to_le_bytes());
        });
        match replay(&fs, &path) {
            Err(Error::CorruptRecord { offset: 0, .. }) => {}
            other => panic!("expected corruption at 0, got {other:?}"),
        }
    }

    #[test]
    fn records_round_trip() {
        let ops = vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)];
        let mut buf = Vec::new();
        encode_record(&ops, &mut buf);
        assert_eq!(decode_payload(&buf[HEADER..]), Some(ops));
        assert_eq!(decode_payload(&buf[HEADER..buf.len() - 1]), None);
    }
}
