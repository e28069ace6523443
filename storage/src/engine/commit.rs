//! [`Commit`]: the durability of one write, as a future.
//!
//! Under `SyncMode::Always` with background threads a write is appended inline and
//! its caller gets a `Commit` holding a [`Slot`]; the slot also sits in
//! [`Pending`], the queue the commit thread resolves after each fsync. The queue is
//! in sequence order (slots are pushed under the write lock, which hands out the
//! sequence numbers), so resolving an fsync that covered sequence `t` pops the
//! queue's front up to `t` and wakes exactly those waiters, nobody else.
//!
//! Every other case (`Never`, `Periodic`, `Background::Inline`, an empty batch) is
//! decided by the time the write returns, and its `Commit` is already resolved.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

use super::{lock, Shared};
use crate::error::{Error, Result};

/// Most writes that may wait in [`Pending`] for their fsync at once (each is a
/// sequence number and a slot, about 100 bytes, so a full queue is ~6 MiB). A
/// writer that finds it full waits for room, at most `Options::write_timeout`,
/// like a writer waiting for a memtable flush; in practice the queue holds the
/// writes that arrived during one fsync.
pub(super) const MAX_PENDING_COMMITS: usize = 1 << 16;

/// How a commit ended. Cloneable (unlike [`Error`]) because one fsync decides
/// many commits and a commit may be polled again after it finished.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Durable,
    /// The commit log failed before this write was known to be durable; the
    /// reason is the first failure's, as in [`Error::WalFailed`].
    Failed(String),
}

impl Outcome {
    fn result(&self) -> Result<()> {
        match self {
            Outcome::Durable => Ok(()),
            Outcome::Failed(reason) => Err(Error::WalFailed {
                reason: reason.clone(),
            }),
        }
    }
}

#[derive(Default)]
struct SlotState {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

/// Where the commit thread leaves one write's outcome for its [`Commit`].
#[derive(Default)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    /// The outcome if decided; otherwise `waker` is kept to be woken when it is.
    fn poll_with(&self, waker: &Waker) -> Option<Outcome> {
        let mut s = lock(&self.state);
        if let Some(o) = &s.outcome {
            return Some(o.clone());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
        None
    }

    fn is_resolved(&self) -> bool {
        lock(&self.state).outcome.is_some()
    }

    /// Decides the outcome (the first decision stands) and wakes the waiter,
    /// outside the slot's lock.
    pub(super) fn resolve(&self, outcome: Outcome) {
        let waker = {
            let mut s = lock(&self.state);
            if s.outcome.is_some() {
                return;
            }
            s.outcome = Some(outcome);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The writes waiting for an fsync, and the commit thread's sleep state; guarded
/// by `Shared::commits`, a leaf lock (taken under `write` by appenders, alone by
/// everyone else).
#[derive(Default)]
pub(super) struct Pending {
    /// Ascending sequence numbers (equal ones for barriers), at most
    /// [`MAX_PENDING_COMMITS`].
    pub(super) queue: VecDeque<(u64, Arc<Slot>)>,
    /// The commit thread waits on `commits_cv` for work: an appender that finds
    /// it so notifies it (once, clearing this), every other append costs no wakeup.
    pub(super) sleeping: bool,
    /// Writers waiting on `room_cv` for the queue to shrink.
    pub(super) room_waiters: usize,
    /// Set by `close`: the commit thread exits, `close` resolves what is left.
    pub(super) shutdown: bool,
}

impl Shared {
    /// Queues a slot for sequence `seq` (caller holds the write lock, so the queue
    /// stays in order), waking the commit thread if it sleeps; `None` when the
    /// queue is full.
    pub(super) fn enqueue(&self, seq: u64) -> Option<Arc<Slot>> {
        let mut p = lock(&self.commits);
        if p.queue.len() >= MAX_PENDING_COMMITS {
            return None;
        }
        let slot = Arc::new(Slot::default());
        p.queue.push_back((seq, slot.clone()));
        if p.sleeping {
            p.sleeping = false;
            self.commits_cv.notify_one();
        }
        Some(slot)
    }

    /// Blocks until the queue has room, the engine closes or `deadline` passes.
    pub(super) fn wait_for_commit_room(&self, deadline: Instant) -> Result<()> {
        let mut p = lock(&self.commits);
        while p.queue.len() >= MAX_PENDING_COMMITS {
            self.check_open()?;
            let now = Instant::now();
            if now >= deadline {
                drop(p);
                return Err(self.stalled("group commit queue", deadline));
            }
            // Rechecked at least every 100 ms, whatever the notifications do.
            let wait = (deadline - now).min(std::time::Duration::from_millis(100));
            p.room_waiters += 1;
            p = self
                .room_cv
                .wait_timeout(p, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            p.room_waiters -= 1;
        }
        Ok(())
    }

    /// Resolves every queued write with sequence at most `upto` (all of them with
    /// `None`) as `outcome`. The slots are taken out under the queue lock and
    /// woken after it is released.
    pub(super) fn resolve_pending(&self, upto: Option<u64>, outcome: &Outcome) {
        let done: Vec<Arc<Slot>> = {
            let mut p = lock(&self.commits);
            let n = match upto {
                None => p.queue.len(),
                Some(t) => p.queue.partition_point(|(seq, _)| *seq <= t),
            };
            if p.room_waiters > 0 && n > 0 {
                self.room_cv.notify_all();
            }
            p.queue.drain(..n).map(|(_, slot)| slot).collect()
        };
        for slot in done {
            slot.resolve(outcome.clone());
        }
    }
}

enum State {
    /// Decided. `first` is handed out by the first poll (it may be the original
    /// I/O error of an inline fsync); later polls get `again`.
    Ready {
        first: Option<Result<()>>,
        again: Outcome,
    },
    /// Decided by the commit thread; `shared` builds a `Stalled` error for
    /// [`Commit::wait`].
    Waiting {
        slot: Arc<Slot>,
        shared: Arc<Shared>,
    },
}

/// The durability of one appended write: a future that resolves to `Ok(())` once
/// the write is durable under the engine's [`crate::SyncMode`], or to
/// [`Error::WalFailed`] if the commit log failed first (the write is then in the
/// memtable but must not be acknowledged; after a crash it may or may not be
/// there).
///
/// Runtime-agnostic: it is woken through the standard [`Waker`] by the engine's
/// commit thread, so any executor can await it, and [`Commit::wait`] blocks a
/// plain thread on it. Dropping it does not undo the write. Every `Commit` is
/// resolved by the fsync that covers it, by a commit log failure, or by
/// [`crate::Engine::close`]: none waits forever on an engine that is open or
/// closed. Polling it again after it finished returns the same outcome.
#[must_use = "a write is durable only once its Commit resolves"]
pub struct Commit {
    state: State,
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit")
            .field("resolved", &self.is_resolved())
            .finish()
    }
}

impl Commit {
    pub(super) fn ready(result: Result<()>) -> Commit {
        let again = match &result {
            Ok(()) => Outcome::Durable,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        Commit {
            state: State::Ready {
                first: Some(result),
                again,
            },
        }
    }

    pub(super) fn waiting(slot: Arc<Slot>, shared: Arc<Shared>) -> Commit {
        Commit {
            state: State::Waiting { slot, shared },
        }
    }

    /// Whether the outcome is decided, so that awaiting it returns at once (a
    /// caller can skip arming a timeout).
    pub fn is_resolved(&self) -> bool {
        match &self.state {
            State::Ready { .. } => true,
            State::Waiting { slot, .. } => slot.is_resolved(),
        }
    }

    /// Blocks the calling thread until the commit resolves, at most
    /// `Options::write_timeout` ([`Error::Stalled`] past it: the write may still
    /// become durable, but is not acknowledged). For callers without an executor;
    /// the blocking `Engine::put`, `delete` and `write` are `append` plus this.
    pub fn wait(self) -> Result<()> {
        let (slot, shared) = match self.state {
            State::Ready { first, again } => return first.unwrap_or_else(|| again.result()),
            State::Waiting { slot, shared } => (slot, shared),
        };
        let deadline = Instant::now() + shared.opts.write_timeout;
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        loop {
            if let Some(o) = slot.poll_with(&waker) {
                return o.result();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(shared.stalled("group commit fsync", deadline));
            }
            // A spurious or early unpark only repeats the check.
            std::thread::park_timeout(deadline - now);
        }
    }
}

impl Future for Commit {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready { first, again } => {
                Poll::Ready(first.take().unwrap_or_else(|| again.result()))
            }
            State::Waiting { slot, .. } => match slot.poll_with(cx.waker()) {
                None => Poll::Pending,
                Some(outcome) => {
                    let result = outcome.result();
                    this.state = State::Ready {
                        first: None,
                        again: outcome,
                    };
                    Poll::Ready(result)
                }
            },
        }
    }
}

/// Wakes a thread blocked in [`Commit::wait`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}
