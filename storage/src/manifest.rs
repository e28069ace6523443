//! The manifest: which tables are live and which commit log segments still matter.
//!
//! It is rewritten whole on every change (write `MANIFEST.tmp`, fsync, rename over
//! `MANIFEST`, fsync the directory), so a crash leaves either the old or the new
//! set of tables, never a mix. It is small (8 bytes per table), so rewriting it is
//! cheaper than maintaining an edit log.
//!
//! Layout: `b"SHOALMF1"`, format u32, next_file u64, log_number u64, count u32,
//! count x table id u64 (newest first), crc32c u32 of all preceding bytes.

use std::path::Path;

use crate::error::{io_err, Error, Result};
use crate::fs::{Fs, OpenMode};

const MAGIC: &[u8; 8] = b"SHOALMF1";
const FORMAT: u32 = 1;
pub(crate) const FILE: &str = "MANIFEST";
const TMP: &str = "MANIFEST.tmp";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// No file id below this is reused.
    pub(crate) next_file: u64,
    /// Commit log segments with a smaller id are fully contained in tables.
    pub(crate) log_number: u64,
    /// Live tables, newest first.
    pub(crate) tables: Vec<u64>,
}

pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(io_err(dir, "fsync directory"))
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(36 + 8 * self.tables.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT.to_le_bytes());
        b.extend_from_slice(&self.next_file.to_le_bytes());
        b.extend_from_slice(&self.log_number.to_le_bytes());
        b.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            b.extend_from_slice(&t.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Manifest, String> {
        if b.len() < 36 {
            return Err(format!("{} bytes is too short", b.len()));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        if &body[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let format = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if format != FORMAT {
            return Err(format!("unsupported format version {format}"));
        }
        let n = u32::from_le_bytes([body[28], body[29], body[30], body[31]]) as usize;
        if body.len() != 32 + 8 * n {
            return Err(format!("length {} does not match {n} tables", body.len()));
        }
        Ok(Manifest {
            next_file: u64_at(12),
            log_number: u64_at(20),
            tables: (0..n).map(|i| u64_at(32 + 8 * i)).collect(),
        })
    }

    /// Reads the manifest; `None` if the directory has none yet.
    pub(crate) fn load(fs: &dyn Fs, dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(FILE);
        match fs.read(&path) {
            Ok(b) => Manifest::decode(&b)
                .map(Some)
                .map_err(|reason| Error::CorruptManifest { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                path,
                op: "read manifest",
                source: e,
            }),
        }
    }

    /// Atomically replaces the manifest on disk.
    pub(crate) fn store(&self, fs: &dyn Fs, dir: &Path) -> Result<()> {
        let tmp = dir.join(TMP);
        let f = fs
            .open_write(&tmp, OpenMode::Truncate)
            .map_err(io_err(&tmp, "create manifest"))?;
        f.write_all(&self.encode())
            .map_err(io_err(&tmp, "write manifest"))?;
        f.sync_all().map_err(io_err(&tmp, "fsync manifest"))?;
        drop(f);
        fs.rename(&tmp, &dir.join(FILE))
            .map_err(io_err(&tmp, "rename manifest"))?;
        sync_dir(fs, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = Manifest {
            next_file: 9,
            log_number: 7,
            tables: vec![5, 3, 1],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(Manifest::decode(&c).is_err(), "flip at {i} accepted");
            assert!(Manifest::decode(&b[..i]).is_err());
        }
    }
}
