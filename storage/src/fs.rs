//! The file system seam: every byte the engine reads or writes goes through [`Fs`].
//!
//! The engine's durability argument is about *which* operations are made durable
//! and in what order (file fsync, then directory fsync, then the manifest rename),
//! so the trait exposes exactly those operations and nothing else. That lets a
//! deterministic simulation substitute a file system that forgets everything not
//! made durable when a host "crashes", and check the argument instead of trusting
//! it. [`StdFs`] is the real thing; [`MemFs`] is an in-memory file system with
//! crash semantics for tests and simulations.
//!
//! The durability model both implement (and the engine relies on):
//!
//! - bytes written to a file survive a crash only once `sync_data`/`sync_all` of that
//!   file has returned after them;
//! - a file created, renamed or removed in a directory is found in that state after a
//!   crash only once [`Fs::sync_dir`] of that directory has returned after it;
//! - [`Fs::create_dir_all`] is durable when it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How [`Fs::open_write`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create a new, empty file; fail with `AlreadyExists` if the name is taken.
    CreateNew,
    /// Create the file, or truncate an existing one to empty.
    Truncate,
    /// Open an existing file; writes go to its end.
    Append,
}

/// The file operations the engine performs. Object safe, so a simulation can hand
/// the engine its own implementation through [`crate::Options::fs`].
pub trait Fs: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and any missing ancestors, durably: when this returns, the new
    /// directories survive a crash.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir` (not paths), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole contents of a file; `NotFound` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file for sequential writing; see [`OpenMode`].
    fn open_write(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for positional reads.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>>;
    /// Removes a directory entry; durable only after [`Fs::sync_dir`] of its parent.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` over `to`; durable only after [`Fs::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals in `dir` so far survive a crash.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the file `path` (created if missing), held until
    /// the returned guard is dropped; `WouldBlock` if another holder has it. Two
    /// engines on one directory would each replay and rewrite the other's files.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// A held [`Fs::lock`]; dropping it releases the lock. A process that dies
/// releases it too (the kernel drops a dead process's `flock`s).
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// A file open for writing. Writes are sequential, each one after the previous (or
/// at the end of the file in [`OpenMode::Append`]). Methods take `&self` so that one
/// thread can fsync while another appends, which group commit relies on.
pub trait WritableFile: Send + Sync + fmt::Debug {
    /// Writes all of `buf` (to the OS; not durable until synced).
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Makes the written bytes durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the written bytes and the file's metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Writes `len` zero bytes at `offset` without moving where the next
    /// [`WritableFile::write_all`] goes, so later writes there change no file
    /// size and their syncs write no metadata. Only ever called at or past the
    /// end of what was written. An optimisation: the default does nothing,
    /// which is correct for any file system (the file then grows by appends).
    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
}

/// A file open for positional reads.
pub trait ReadableFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's current size in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// The operating system's file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdWritable(File);

impl WritableFile for StdWritable {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        // Real zeros, not `fallocate`: unwritten extents would still need
        // their conversion journaled (or written) on the first sync after
        // each write into them.
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(ZEROS.len() as u64);
            FileExt::write_all_at(&self.0, &ZEROS[..n as usize], offset + at)?;
            at += n;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct StdReadable(File);

/// An `flock`ed file; closing it (on drop) unlocks it.
#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File);

impl LockGuard for StdLock {}

impl ReadableFile for StdReadable {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories that do not exist yet, outermost first; each needs its parent
        // fsynced, or a machine crash can lose it together with everything in it.
        let missing: Vec<&Path> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| !a.exists())
            .collect();
        std::fs::create_dir_all(dir)?;
        for created in missing.iter().rev() {
            if let Some(parent) = created.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn open_write(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn WritableFile>> {
        let mut o = OpenOptions::new();
        match mode {
            // Not `O_APPEND`: Linux would then put `zero_fill`'s positional
            // writes at the end too. A new file's cursor starts at 0 and
            // only `write_all` moves it, so writes are still sequential.
            OpenMode::CreateNew => o.write(true).create_new(true),
            OpenMode::Truncate => o.write(true).create(true).truncate(true),
            OpenMode::Append => o.append(true),
        };
        Ok(Box::new(StdWritable(o.open(path)?)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>> {
        Ok(Box::new(StdReadable(File::open(path)?)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another process", path.display()),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// An in-memory file system that models what survives a machine crash, for tests and
/// simulations.
///
/// It keeps two views: the live one every call sees, and the durable one a crash
/// falls back to. A file's bytes become durable at its `sync_data`/`sync_all`; a
/// directory's entries (creations, renames, removals) at [`Fs::sync_dir`] of that
/// directory. [`MemFs::crash`] returns a new file system holding only the durable
/// view and makes this one fail every further call, so threads of the "crashed"
/// engine cannot touch the recovered state. Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    crashed: bool,
    dirs: std::collections::BTreeSet<PathBuf>,
    /// Directory entries as the running system sees them.
    live: BTreeMap<PathBuf, u64>,
    /// Directory entries as a crash would leave them.
    durable: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Paths locked through [`Fs::lock`] (not files: a crash forgets them, as a
    /// reboot forgets `flock`s).
    locks: std::collections::BTreeSet<PathBuf>,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    /// Contents as of the last sync.
    synced: Vec<u8>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

impl MemState {
    fn check(&self) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other("the file system has crashed"));
        }
        Ok(())
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if !self.dirs.contains(p) => Err(not_found(p)),
            _ => Ok(()),
        }
    }

    fn inode(&self, path: &Path) -> io::Result<u64> {
        self.live.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn new_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, Inode::default());
        self.next_inode
    }
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    fn state(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulates a machine crash: returns the file system as it would be found after
    /// reboot (only durable directory entries and synced bytes), and makes `self` and
    /// every file opened through it fail from now on.
    pub fn crash(&self) -> MemFs {
        self.crash_keeping(|_, _| 0)
    }

    /// Like [`MemFs::crash`], but a file whose unsynced changes are only appends keeps
    /// `keep(path, unsynced_len)` bytes (clamped) of them, as a torn write would.
    pub fn crash_keeping(&self, mut keep: impl FnMut(&Path, usize) -> usize) -> MemFs {
        let mut s = self.state();
        s.crashed = true;
        let mut next = MemState {
            crashed: false,
            dirs: s.dirs.clone(),
            live: s.durable.clone(),
            durable: s.durable.clone(),
            inodes: BTreeMap::new(),
            next_inode: s.next_inode,
            locks: Default::default(),
        };
        for (path, ino) in &s.durable {
            let node = &s.inodes[ino];
            let mut data = node.synced.clone();
            if node.data.len() > data.len() && node.data.starts_with(&data) {
                let pending = node.data.len() - data.len();
                let k = keep(path, pending).min(pending);
                data.extend_from_slice(&node.data[node.synced.len()..node.synced.len() + k]);
            }
            next.inodes.insert(
                *ino,
                Inode {
                    synced: data.clone(),
                    data,
                },
            );
        }
        MemFs {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// Names of the files in `dir` as a crash would leave them, sorted; for tests.
    pub fn durable_files(&self, dir: &Path) -> Vec<String> {
        let s = self.state();
        s.durable
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }
}

#[derive(Debug)]
struct MemFile {
    state: Arc<Mutex<MemState>>,
    ino: u64,
    path: PathBuf,
}

impl MemFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.check()?;
        let node = s
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| not_found(&self.path))?;
        Ok(f(node))
    }
}

impl WritableFile for MemFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.with(|n| n.data.extend_from_slice(buf))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.with(|n| n.synced.clone_from(&n.data))
    }
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.with(|n| n.data.resize(len, 0))
    }
}

impl ReadableFile for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|n| {
            let range = usize::try_from(offset)
                .ok()
                .and_then(|start| Some(start..start.checked_add(buf.len())?));
            let src = range.and_then(|r| n.data.get(r)).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                )
            })?;
            buf.copy_from_slice(src);
            Ok(())
        })?
    }
    fn size(&self) -> io::Result<u64> {
        self.with(|n| n.data.len() as u64)
    }
}

/// A held [`MemFs`] lock.
#[derive(Debug)]
struct MemLock {
    state: Arc<Mutex<MemState>>,
    path: PathBuf,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.locks.remove(&self.path);
    }
}

impl Fs for MemFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.check()?;
        for a in dir.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        s.check()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        s.check()?;
        let ino = s.inode(path)?;
        Ok(s.inodes[&ino].data.clone())
    }

    fn open_write(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn WritableFile>> {
        let mut s = self.state();
        s.check()?;
        s.parent_exists(path)?;
        let existing = s.live.get(path).copied();
        let ino = match (mode, existing) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", path.display()),
                ))
            }
            (OpenMode::Append, None) => return Err(not_found(path)),
            (OpenMode::Append, Some(ino)) => ino,
            (OpenMode::Truncate, Some(ino)) => {
                if let Some(n) = s.inodes.get_mut(&ino) {
                    n.data.clear();
                }
                ino
            }
            (OpenMode::CreateNew | OpenMode::Truncate, None) => {
                let ino = s.new_inode();
                s.live.insert(path.to_path_buf(), ino);
                ino
            }
        };
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            ino,
            path: path.to_path_buf(),
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>> {
        let s = self.state();
        s.check()?;
        let ino = s.inode(path)?;
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            ino,
            path: path.to_path_buf(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.check()?;
        s.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.check()?;
        s.parent_exists(to)?;
        let ino = s.inode(from)?;
        s.live.remove(from);
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.check()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let s = &mut *s;
        s.durable.retain(|p, _| p.parent() != Some(dir));
        for (p, ino) in &s.live {
            if p.parent() == Some(dir) {
                s.durable.insert(p.clone(), *ino);
            }
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut s = self.state();
        s.check()?;
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        Ok(Box::new(MemLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &MemFs, path: &Path, bytes: &[u8], sync: bool) -> Box<dyn WritableFile> {
        let f = fs.open_write(path, OpenMode::CreateNew).unwrap();
        f.write_all(bytes).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
        f
    }

    #[test]
    fn mem_fs_crash_keeps_only_what_was_made_durable() {
        let fs = MemFs::new();
        let d = Path::new("/db");
        fs.create_dir_all(d).unwrap();
        let a = write(&fs, &d.join("a"), b"synced", true);
        a.write_all(b"-pending").unwrap();
        fs.sync_dir(d).unwrap();
        write(&fs, &d.join("c"), b"c", true);
        fs.sync_dir(d).unwrap();
        // Synced bytes but the entry never made durable.
        write(&fs, &d.join("b"), b"b", true);
        // Removed and renamed without a directory sync.
        fs.remove_file(&d.join("c")).unwrap();
        fs.rename(&d.join("a"), &d.join("z")).unwrap();

        let after = fs.crash();
        assert!(a.write_all(b"x").is_err(), "old handles die with the crash");
        assert!(fs.list(d).is_err());
        assert_eq!(after.list(d).unwrap(), vec!["a", "c"]);
        assert_eq!(after.read(&d.join("a")).unwrap(), b"synced");
        assert_eq!(after.read(&d.join("c")).unwrap(), b"c");

        let torn = after.clone();
        let f = torn.open_write(&d.join("a"), OpenMode::Append).unwrap();
        f.write_all(b"0123456789").unwrap();
        let again = torn.crash_keeping(|_, n| n / 2);
        assert_eq!(again.read(&d.join("a")).unwrap(), b"synced01234");
    }

    #[test]
    fn std_fs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let sub = dir.path().join("x/y");
        fs.create_dir_all(&sub).unwrap();
        let p = sub.join("f");
        let w = fs.open_write(&p, OpenMode::CreateNew).unwrap();
        w.write_all(b"hello world").unwrap();
        w.sync_all().unwrap();
        assert!(fs.open_write(&p, OpenMode::CreateNew).is_err());
        let r = fs.open_read(&p).unwrap();
        let mut buf = [0u8; 5];
        r.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(r.size().unwrap(), 11);
        assert!(r.read_exact_at(&mut buf, 8).is_err());
        fs.rename(&p, &sub.join("g")).unwrap();
        fs.sync_dir(&sub).unwrap();
        assert_eq!(fs.list(&sub).unwrap(), vec!["g"]);
        assert_eq!(fs.read(&sub.join("g")).unwrap(), b"hello world");
        fs.remove_file(&sub.join("g")).unwrap();
        assert!(fs.list(&sub).unwrap().is_empty());
    }
}
