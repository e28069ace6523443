//! A crash test that really crashes: the test binary re-runs itself as a child that
//! writes under `SyncMode::Always` from several threads and prints each acknowledged
//! key; the parent SIGKILLs it at a random moment, reopens the directory and checks
//! that every acknowledged key is there with its value. The child uses a tiny
//! memtable so kills also land inside flushes, compactions and manifest updates.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use shoal_storage::{Engine, Options, SyncMode, WriteBatch};

const CHILD_DIR: &str = "SHOAL_STORAGE_CRASH_DIR";
const CHILD_ROUND: &str = "SHOAL_STORAGE_CRASH_ROUND";
const THREADS: u32 = 4;

fn options() -> Options {
    Options {
        sync: SyncMode::Always,
        memtable_bytes: 32 << 10,
        compaction_trigger: 3,
        block_bytes: 512,
        ..Options::default()
    }
}

fn value_for(key: &str) -> Vec<u8> {
    format!("value-of-{key}-{}", "x".repeat(key.len() % 17)).into_bytes()
}

/// The child: only does anything when the parent sets `CHILD_DIR`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let engine = Arc::new(Engine::open(&dir, options()).expect("child open"));
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (engine, stdout) = (engine.clone(), stdout.clone());
            std::thread::spawn(move || {
                // Bounded: the parent kills the child long before this ends.
                for i in 0..200_000u32 {
                    let keys: Vec<String> = if i % 5 == 0 {
                        let ks = vec![
                            format!("r{round:02}-t{t}-{i:07}a"),
                            format!("r{round:02}-t{t}-{i:07}b"),
                        ];
                        let mut b = WriteBatch::new();
                        for k in &ks {
                            b.put(k.as_bytes(), value_for(k));
                        }
                        engine.write(b).expect("child batch");
                        ks
                    } else {
                        let k = format!("r{round:02}-t{t}-{i:07}");
                        engine.put(k.as_bytes(), &value_for(&k)).expect("child put");
                        vec![k]
                    };
                    let mut out = stdout
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for k in keys {
                        let _ = writeln!(out, "ACK {k}");
                    }
                    let _ = out.flush();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let seed: u64 = std::env::var("SHOAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        });
    println!("crash test seed {seed} (set SHOAL_CRASH_SEED to replay the kill times)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("own test binary");
    let mut acked: Vec<String> = Vec::new();
    let started = Instant::now();
    for round in 0..8u32 {
        if started.elapsed() > Duration::from_secs(25) {
            break;
        }
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let mut out = child.stdout.take().expect("child stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..1200)));
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        let text = reader.join().expect("reader thread");
        let before = acked.len();
        acked.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("ACK "))
                .map(str::to_string),
        );
        let engine = Engine::open(dir.path(), options()).expect("reopen after SIGKILL");
        for k in &acked {
            assert_eq!(
                engine.get(k.as_bytes()).expect("get"),
                Some(value_for(k)),
                "acknowledged key {k} lost after round {round} (seed {seed})"
            );
        }
        let live = engine
            .iter()
            .expect("iter")
            .collect::<Result<Vec<_>, _>>()
            .expect("full scan");
        assert!(live.len() >= acked.len());
        println!(
            "round {round}: {} new acks, {} total, {} live keys, recovery {:?}",
            acked.len() - before,
            acked.len(),
            live.len(),
            engine.recovery()
        );
        engine.close().expect("close");
    }
    assert!(!acked.is_empty(), "the child never acknowledged a write");
}
