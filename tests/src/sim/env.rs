//! The simulated side of `shoal_node::env`: turmoil's TCP, a wall clock on
//! turmoil's simulated time with a per-node skew, and inline blocking work.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use shoal_node::env::{Blocking, BoxConn, BoxFuture, Clock, Env, Listener, Net};

/// Sockets over turmoil's simulated network. Addresses may be host names
/// (`node-1:7000`): turmoil resolves them through its own DNS.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNet;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((Box::new(stream) as BoxConn, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for SimNet {
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxConn>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as BoxConn)
        })
    }
}

/// The wall clock of one simulated process: turmoil's simulated time since
/// the Unix epoch (the simulation's epoch is drawn from the seed) plus a skew
/// that the fault schedule may change at any moment.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// Sets this clock's offset from simulated true time.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::SeqCst);
    }

    /// The current offset from simulated true time.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn now_millis(&self) -> u64 {
        // Outside a host (never in practice: services read the clock from
        // their own tasks) there is no simulated time; 0 keeps versions
        // ordered by their counters, as the real clock does before 1970.
        let true_ms = turmoil::since_epoch().map_or(0, |d| d.as_millis() as i64);
        true_ms.saturating_add(self.skew_ms()).max(0) as u64
    }
}

/// The [`Env`] every simulated node and gateway gets: simulated sockets, its
/// own skewable clock, its own simulated disk, and blocking work (the storage
/// engine's flushes and compactions included) run inline so that thread
/// timing cannot reorder simulated events.
pub fn sim_env(clock: SimClock, fs: SimFs) -> Env {
    Env {
        net: Arc::new(SimNet),
        clock: Arc::new(clock),
        blocking: Blocking::Inline,
        fs: Arc::new(fs),
    }
}

/// One simulated host's disk: turmoil's simulated file system (`unstable-fs`)
/// behind the storage engine's [`shoal_storage::Fs`] seam. Writes not yet
/// synced, and directory entries whose directory was not synced, are lost
/// when turmoil crashes the host.
///
/// Each start of a host gets its own instance; the driver cuts its power
/// ([`SimFs::power_off`]) just before crashing the host, so that nothing the
/// dying process does afterwards (its engine's `Drop` closes and fsyncs the
/// log) reaches the disk: a killed process gets no such last word.
#[derive(Debug, Clone)]
pub struct SimFs {
    powered: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for SimFs {
    fn default() -> Self {
        Self {
            powered: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

impl SimFs {
    /// From now on every operation through this instance fails.
    pub fn power_off(&self) {
        self.powered.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.powered.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(io::Error::other("the simulated host crashed"))
        }
    }
}

use turmoil::fs::shim::std::fs as tfs;

#[derive(Debug)]
struct SimWritable {
    file: std::sync::Mutex<tfs::File>,
    powered: SimFs,
}

#[derive(Debug)]
struct SimReadable {
    file: tfs::File,
    powered: SimFs,
}

impl shoal_storage::WritableFile for SimWritable {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.powered.check()?;
        self.file
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .write_all(buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.powered.check()?;
        self.file
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.powered.check()?;
        self.file
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.powered.check()?;
        self.file
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .set_len(len)
    }
}

impl shoal_storage::ReadableFile for SimReadable {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.powered.check()?;
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        self.powered.check()?;
        Ok(self.file.metadata()?.len())
    }
}

impl shoal_storage::Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        tfs::create_dir_all(dir)?;
        // The seam promises a durable directory: sync every level's entry.
        let mut levels: Vec<&Path> = dir.ancestors().collect();
        levels.reverse();
        for level in levels {
            if !level.as_os_str().is_empty() {
                tfs::sync_dir(level)?;
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        tfs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check()?;
        tfs::read(path)
    }

    fn open_write(
        &self,
        path: &Path,
        mode: shoal_storage::OpenMode,
    ) -> io::Result<Box<dyn shoal_storage::WritableFile>> {
        self.check()?;
        let mut options = tfs::OpenOptions::new();
        match mode {
            shoal_storage::OpenMode::CreateNew => options.write(true).create_new(true),
            shoal_storage::OpenMode::Truncate => options.write(true).create(true).truncate(true),
            shoal_storage::OpenMode::Append => options.append(true),
        };
        Ok(Box::new(SimWritable {
            file: std::sync::Mutex::new(options.open(path)?),
            powered: self.clone(),
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn shoal_storage::ReadableFile>> {
        self.check()?;
        Ok(Box::new(SimReadable {
            file: tfs::File::open(path)?,
            powered: self.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        tfs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        tfs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        tfs::sync_dir(dir)
    }

    /// turmoil's disk has no `flock`, and needs none: a simulated host runs
    /// one node, and the driver drops a crashed node's engine before the
    /// restart opens the directory again (as a dead process's locks go).
    fn lock(&self, _path: &Path) -> io::Result<Box<dyn shoal_storage::LockGuard>> {
        self.check()?;
        Ok(Box::new(SimLock))
    }
}

/// The guard [`SimFs::lock`] hands out.
#[derive(Debug)]
struct SimLock;

impl shoal_storage::LockGuard for SimLock {}
