//! Where commits meet the committer (`docs/design.md`, "Group commit").
//!
//! A commit that finds nobody committing is committed by its caller, on the
//! caller's thread (unless that thread runs a current-thread runtime): its record is appended and synced there and the caller
//! goes on. A commit that finds the log busy waits in line; whoever is
//! committing, when done with its own group, hands what waits (and any due
//! checkpoint) to the committer thread, which commits everything waiting
//! in groups until the line is empty.
//!
//! A lone writer so pays for its `fdatasync` and nothing else: handing
//! every commit to a thread and back costs two thread wake-ups, and on this
//! project's VM those took 40–60 µs each, almost as long as the sync
//! itself (~100 µs). Concurrent writers still share one sync per group.
//!
//! A caller's turn commits one group (its own commit, and what queued
//! behind it and fits): more, and any checkpoint, are the committer
//! thread's, so a caller's thread never waits for much.
//!
//! On a multi-threaded Tokio runtime, a caller's commit blocks its worker
//! thread directly while recent turns took under [`DIRECT_MAX`] and the
//! commit is small ([`DIRECT_GROUP_BYTES`]; never a replica's restore):
//! handing the worker's other tasks to another thread (`block_in_place`)
//! costs another wake-up, and a lone writer ran ~25% slower with it
//! (6.5–7.3k against 8.1–10.2k puts/s here). Slower turns (a slow disk, a
//! sync that stalls) switch to `block_in_place`, so other tasks do not wait
//! behind a slow disk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{CLOSE_CHECKPOINT_BYTES, Committer, MAX_GROUP_BYTES, MAX_GROUP_OPS, Op, Request, wal};
use crate::backend::{BackendError, Write};

/// The line and the committer; see the module's documentation.
pub(super) struct Line {
    queue: Mutex<Queue>,
    /// Tells the committer thread its turn came ([`Queue::handed`]), or
    /// that the store closes.
    wake: Condvar,
    /// Held by whoever has the turn; nobody else touches it.
    committer: Mutex<Committer>,
    /// How long callers' turns took lately, in µs (a moving average, each
    /// turn weighing an eighth): whether the next may block its thread
    /// directly ([`DIRECT_MAX`]).
    recent_us: AtomicU64,
}

/// A caller's commit on a multi-threaded runtime blocks its worker thread
/// directly while callers' turns took less than this lately, and runs in
/// `block_in_place` otherwise (see the module's documentation).
pub(super) const DIRECT_MAX: Duration = Duration::from_micros(500);

/// The most record bytes a turn that blocks its worker directly commits.
const DIRECT_GROUP_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Request>,
    /// Someone has the turn: a caller or the committer thread.
    busy: bool,
    /// The turn is the committer thread's.
    handed: bool,
    closed: bool,
    /// A commit panicked while it had the turn: the line is closed, and
    /// the close leaves the log as it is, for the next open to replay.
    failed: bool,
}

/// What [`next_group`] takes off the front of a line.
pub(super) enum Group {
    /// Commits to log with one sync.
    Commits(Vec<Request>),
    /// A replica's restore, alone.
    Restore(Request),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stopped() -> BackendError {
    BackendError::Unavailable("the file backend's committer stopped".into())
}

impl Line {
    pub(super) fn new(committer: Committer) -> Self {
        Self {
            queue: Mutex::default(),
            wake: Condvar::new(),
            committer: Mutex::new(committer),
            recent_us: AtomicU64::new(0),
        }
    }

    /// Whether callers' turns took less than [`DIRECT_MAX`] lately.
    pub(super) fn commits_are_fast(&self) -> bool {
        self.recent_us.load(Ordering::Relaxed) < DIRECT_MAX.as_micros() as u64
    }

    fn note_turn(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let recent = self.recent_us.load(Ordering::Relaxed);
        let next = recent - recent / 8 + took / 8;
        self.recent_us.store(next, Ordering::Relaxed);
    }

    /// `op` committed, on this thread if the line is empty, `inline`, and
    /// the thread may block ([`may_block`]); else by whoever has the turn. The socket server of a shared store
    /// passes `inline: false`: its one thread serves every client, and
    /// should read the next client's commit while this one syncs.
    pub(super) async fn ask(
        &self,
        op: Op,
        writes: Vec<Write>,
        inline: bool,
    ) -> Result<u64, BackendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request { op, writes, reply };
        let light = !matches!(request.op, Op::Restore(..))
            && wal::record_len(&request.writes) <= DIRECT_GROUP_BYTES;
        let here = if inline {
            may_block(light && self.commits_are_fast())
        } else {
            None
        };
        if self.enqueue(request, here.is_some())? {
            // From here this caller has the turn: should anything panic
            // before it gives it up (`block_in_place` itself, or the
            // commit), the line fails rather than wait for it forever.
            let guard = FailOnUnwind(self);
            match here {
                Some(Blocking::InPlace) => {
                    tokio::task::block_in_place(|| self.take_turn(MAX_GROUP_BYTES));
                }
                Some(Blocking::OnWorker) => self.take_turn(DIRECT_GROUP_BYTES),
                Some(Blocking::Directly) | None => self.take_turn(MAX_GROUP_BYTES),
            }
            std::mem::forget(guard);
        }
        answer.await.map_err(|_| stopped())?
    }

    /// Puts `request` in line; whether the caller now has the turn.
    fn enqueue(&self, request: Request, inline: bool) -> Result<bool, BackendError> {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return Err(stopped());
        }
        queue.waiting.push_back(request);
        if queue.busy {
            return Ok(false);
        }
        queue.busy = true;
        if !inline {
            queue.handed = true;
            self.wake.notify_one();
        }
        Ok(inline)
    }

    /// A caller's turn: commits the group at the front of the line (its own
    /// commit first, and what queued behind it, up to `max_bytes` of
    /// records), then gives the turn up, or hands it to the committer
    /// thread if more waits or a checkpoint is due.
    fn take_turn(&self, max_bytes: usize) {
        let mut committer = lock(&self.committer);
        let group = next_group(&mut lock(&self.queue).waiting, max_bytes);
        let started = Instant::now();
        match group {
            Some(Group::Commits(batch)) => committer.commit_group(batch),
            Some(Group::Restore(request)) => committer.restore(request),
            None => {}
        }
        self.note_turn(started.elapsed());
        let due = committer.checkpoint_due();
        drop(committer);
        let mut queue = lock(&self.queue);
        if due || !queue.waiting.is_empty() {
            queue.handed = true;
        } else {
            queue.busy = false;
        }
        // The thread takes the turn, or (closing) may now finish.
        if queue.handed || queue.closed {
            self.wake.notify_one();
        }
    }

    /// A commit panicked while it had the turn. Its group may be in the log
    /// but not in the state (so the next versions would repeat), and the
    /// committer may be half-way: the line stops, as a dead committer
    /// thread did before. Every waiting commit is answered "stopped" (its
    /// outcome unknown), later ones are refused, and the close leaves the
    /// log for the next open to replay.
    fn fail(&self) {
        let mut queue = lock(&self.queue);
        queue.failed = true;
        queue.closed = true;
        queue.busy = false;
        queue.handed = false;
        queue.waiting.clear();
        self.wake.notify_all();
    }

    /// No more commits: the committer thread finishes what waits, then
    /// (checkpointing what the log holds, if much) returns.
    pub(super) fn close(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_all();
    }

    /// The committer thread: waits for its turn, then commits what waits,
    /// checkpointing when due, until the line is empty; on close, finishes.
    pub(super) fn run(&self) {
        loop {
            {
                let mut queue = lock(&self.queue);
                loop {
                    if queue.handed {
                        break;
                    }
                    if queue.closed && !queue.busy {
                        let failed = queue.failed;
                        drop(queue);
                        if !failed {
                            lock(&self.committer).close();
                        }
                        return;
                    }
                    queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            }
            let guard = FailOnUnwind(self);
            let mut committer = lock(&self.committer);
            loop {
                if committer.checkpoint_due() {
                    committer.checkpoint();
                }
                let waiting = {
                    let mut queue = lock(&self.queue);
                    if queue.waiting.is_empty() {
                        queue.busy = false;
                        queue.handed = false;
                        break;
                    }
                    std::mem::take(&mut queue.waiting)
                };
                committer.commit_all(waiting);
            }
            drop(committer);
            std::mem::forget(guard);
        }
    }
}

/// Fails the line ([`Line::fail`]) if dropped while its thread panics.
struct FailOnUnwind<'a>(&'a Line);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

/// How a caller may run a commit (an append and its sync) on its thread.
enum Blocking {
    /// Outside any async runtime: just run it.
    Directly,
    /// On a multi-threaded Tokio runtime, while commits are fast and this
    /// one is small: run it on the worker, and commit no more than
    /// [`DIRECT_GROUP_BYTES`] in the turn.
    OnWorker,
    /// On a multi-threaded Tokio runtime, in `block_in_place`: the
    /// worker's other tasks move to another thread meanwhile, so a slow
    /// disk stalls only this caller.
    InPlace,
}

/// Whether this thread may block on a commit: not on a current-thread
/// runtime, whose one thread runs every other task too (there the
/// committer thread commits while the runtime goes on). On a multi-threaded
/// one, directly only while commits are `fast`.
fn may_block(fast: bool) -> Option<Blocking> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => Some(Blocking::Directly),
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => Some(match fast {
            true => Blocking::OnWorker,
            false => Blocking::InPlace,
        }),
        Ok(_) => None,
    }
}

impl Committer {
    /// Commits `waiting` in order, in groups ([`next_group`]).
    fn commit_all(&mut self, mut waiting: VecDeque<Request>) {
        while let Some(group) = next_group(&mut waiting, MAX_GROUP_BYTES) {
            match group {
                Group::Commits(batch) => self.commit_group(batch),
                Group::Restore(request) => self.restore(request),
            }
            if !waiting.is_empty() && self.checkpoint_due() {
                self.checkpoint();
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.wal.used() >= self.config.checkpoint_bytes()
    }

    /// On close: a checkpoint if the log holds much, so that the next open
    /// (a one-shot CLI call, say) has little to replay, the log sealed
    /// ([`wal::Wal::seal`]) and cut back to what it holds
    /// ([`wal::Wal::shrink`]); then redb's file compacted
    /// if much of it is free ([`super::compact_if_sparse`]), closed and
    /// marked sound ([`Committer::close_redb`]), the store's lock (the
    /// log's) held throughout.
    fn close(&mut self) {
        if self.wal.used() >= CLOSE_CHECKPOINT_BYTES.min(self.config.checkpoint_bytes()) {
            self.checkpoint();
        }
        self.wal.seal();
        self.wal.shrink();
        if self.checkpoint_failed.is_none() {
            super::compact_if_sparse(&self.state, &*self.disk, &self.path, self.rewritten);
        }
        self.close_redb();
    }
}

/// The next group off the front of `waiting`: a restore alone, or commits
/// up to the group's limits ([`MAX_GROUP_OPS`], and `max_bytes` of records,
/// at most [`MAX_GROUP_BYTES`]; the first may be larger, up to
/// [`wal::MAX_RECORD`]).
pub(super) fn next_group(waiting: &mut VecDeque<Request>, max_bytes: usize) -> Option<Group> {
    let max_bytes = max_bytes.min(MAX_GROUP_BYTES);
    let first = waiting.pop_front()?;
    if matches!(first.op, Op::Restore(..)) {
        return Some(Group::Restore(first));
    }
    let mut ops = first.checks().len() + first.writes.len();
    let mut bytes = wal::record_len(&first.writes);
    let mut batch = vec![first];
    while ops < MAX_GROUP_OPS && bytes < max_bytes {
        let Some(next) = waiting.front() else {
            break;
        };
        let size = wal::record_len(&next.writes);
        if matches!(next.op, Op::Restore(..)) || bytes + size > max_bytes {
            break;
        }
        ops += next.checks().len() + next.writes.len();
        bytes += size;
        batch.extend(waiting.pop_front());
    }
    Some(Group::Commits(batch))
}
