//! One file store shared by many processes on one machine.
//!
//! redb is a single-process engine, so the process that holds the store
//! (the one with the log's exclusive lock, [`super::wal`]) serves it on a
//! Unix domain socket beside it (`PATH.sock`, the database file's
//! permissions), and a process that finds the store held connects there:
//! its backend is a [`Client`] that sends each storage call to the holder.
//! Commits stay atomic and versioned because the holder's committer orders
//! them all; a client's reads see every acknowledged commit because the
//! holder answers them. Only the storage interface crosses the socket:
//! every process runs its own guest.
//!
//! Frames are `u32 LE length | postcard body`: a [`Call`] one way, a
//! `Result<Answer, BackendError>` back, one at a time per connection.
//!
//! The socket is bound only while the lock is held, so a socket file left
//! by a holder that crashed is stale: the next holder removes it and binds
//! again, and the lock itself went with the crashed process.

use std::io::{Read, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{State, read};
use crate::backend::{
    Backend, BackendError, Change, Check, Entry, Scan, Write, validate_commit, validate_get_many,
    validate_key, validate_scan,
};

/// The largest frame either side accepts (a commit of up to the log's
/// record limit, with room for its framing).
const MAX_FRAME: usize = super::wal::MAX_RECORD + (1 << 20);

/// The socket of the database at `db`.
pub(super) fn socket_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

/// The longest path a Unix socket address holds (`sun_path`, less its
/// terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// Runs `f` on an address for the socket at `path` that fits a socket
/// address: `path` itself, or, when it is longer, the same file reached
/// through `/proc/self/fd/N/` and an open handle on its directory.
fn with_address<T>(path: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::io::AsRawFd as _;
    if path.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    // O_PATH: the handle only names the directory, so reaching the socket
    // needs what a plain path would (search permission), not read.
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    f(&short)
}

/// A storage call.
#[derive(Debug, Serialize, Deserialize)]
enum Call {
    Get(Vec<u8>),
    GetMany(Vec<Vec<u8>>),
    Scan(Scan),
    Commit(Vec<Check>, Vec<Write>),
    CurrentVersion,
    Changes(u64, u32),
    /// Turns the connection into a feed of commit notifications: the
    /// holder writes its version (`u64 LE`, no framing) now and after each
    /// commit, and reads nothing more.
    Subscribe,
}

/// How a call to the holder failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failed {
    /// The holder answered it with an error (or it was never sent: it
    /// could not be encoded).
    Answered,
    /// The holder never took it: it was not made, and may be asked again.
    Unsent,
    /// The holder took it and the connection was lost before its answer:
    /// a commit may or may not have been made.
    Taken,
}

/// Its answer.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Entry(Option<Entry>),
    Entries(Vec<Option<Entry>>),
    Scanned(Vec<Entry>),
    Version(u64),
    Changes(Vec<Change>),
}

fn lost(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!(
        "lost the process that holds {} ({e}); a commit in flight may or may not have been made: reopen the store and read it back",
        path.display()
    ))
}

/// What the holder's server needs of its backend.
pub(super) struct Holder {
    pub(super) state: Arc<RwLock<State>>,
    pub(super) line: Arc<super::line::Line>,
    pub(super) commits: tokio::sync::watch::Receiver<u64>,
    /// Where damage met answering another process is noted.
    pub(super) counters: Arc<super::Counters>,
    /// redb's file, for the error of a panic inside redb.
    pub(super) path: PathBuf,
}

/// The holder's socket server: a thread with its own runtime, so it runs
/// whatever runtime (or none) the holding process uses.
pub(super) struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    /// The bound socket file's device and inode, so that only this
    /// server's socket is removed, never one a later holder bound.
    bound: Option<(u64, u64)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

impl Server {
    /// Binds `db`'s socket (replacing a stale one: the caller holds the
    /// store's exclusive lock) and serves `holder` on it until dropped.
    pub(super) fn start(db: &Path, holder: Holder) -> Result<Self, BackendError> {
        let path = socket_path(db);
        let io = |what: &str, e: std::io::Error| {
            BackendError::Unavailable(format!("cannot {what} {}: {e}", path.display()))
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the stale socket", e)),
        }
        let listener = with_address(&path, |at| std::os::unix::net::UnixListener::bind(at))
            .map_err(|e| io("bind", e))?;
        let bound = std::fs::symlink_metadata(&path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        // Whoever may open the database may connect: its mode, less execute.
        if let Ok(meta) = std::fs::metadata(db) {
            let mode = meta.permissions().mode() & 0o666;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io("set the permissions of", e))?;
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| io("configure", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| io("start the server of", e))?;
        let holder = Arc::new(holder);
        let thread = std::thread::Builder::new()
            .name("kvstash-share".into())
            .spawn(move || runtime.block_on(serve(listener, holder, stopped)))
            .map_err(|e| io("start the server of", e))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            path,
            bound,
        })
    }
}

impl Drop for Server {
    /// Stops serving (the calls already taken are answered first, then the
    /// connections close and their processes take the store over) and
    /// removes the socket, if it is still this one's.
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if current.is_some() && current == self.bound {
            let _ = std::fs::remove_file(&self.path);
        }
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    holder: Arc<Holder>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
        return;
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let connections = tokio::task::LocalSet::new();
    connections
        .run_until(async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            open.spawn_local(connection(stream, holder.clone(), stopping.clone()));
                        }
                        // Out of file descriptors, say: not a busy loop, and
                        // the open connections go on meanwhile (they may be
                        // what frees descriptors).
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    },
                    // Reap finished connections as they end.
                    Some(_) = open.join_next(), if !open.is_empty() => {}
                }
            }
            // Stopping: no new connections, no new calls; a call already
            // read is answered (its commit may have been made), so no
            // client is left not knowing. A holder that cannot answer in
            // time (a stuck disk) leaves them as a crash would.
            drop(listener);
            let _ = stop.send(true);
            let drained = async { while open.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
        })
        .await;
}

/// How long a stopping holder waits for the calls it has read.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers one connection's calls, in order, until it closes or the holder
/// stops. A call is taken whole or not at all: one cut off by the stop
/// leaves its bytes unread, and its client, told by the reset, knows it
/// was not made.
async fn connection(
    mut stream: tokio::net::UnixStream,
    holder: Arc<Holder>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let frame = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            frame = read_frame_async(&mut stream) => frame,
        };
        let Ok(Some(frame)) = frame else {
            return;
        };
        let answer = match postcard::from_bytes::<Call>(&frame) {
            Ok(Call::Subscribe) => return notify(stream, holder.commits.clone(), stopping).await,
            Ok(call) => answer(&holder, call).await,
            Err(e) => Err(BackendError::Invalid(format!("a malformed call: {e}"))),
        };
        let Ok(mut bytes) = postcard::to_stdvec(&answer) else {
            return;
        };
        if bytes.len() > MAX_FRAME {
            let too_large: Result<Answer, BackendError> = Err(BackendError::Invalid(format!(
                "the answer is larger than the {} MiB a shared store's socket carries; ask for fewer keys",
                MAX_FRAME >> 20
            )));
            let Ok(short) = postcard::to_stdvec(&too_large) else {
                return;
            };
            bytes = short;
        }
        if write_frame_async(&mut stream, &bytes).await.is_err() {
            return;
        }
    }
}

/// Writes the holder's version now and after each commit, until the
/// connection or the holder closes.
async fn notify(
    mut stream: tokio::net::UnixStream,
    mut commits: tokio::sync::watch::Receiver<u64>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut probe = [0u8; 1];
    loop {
        let version = *commits.borrow_and_update();
        if stream.write_all(&version.to_le_bytes()).await.is_err() {
            return;
        }
        // A subscriber sends nothing more: anything read (its end closing,
        // most likely) ends the feed, so a subscriber that went away does
        // not keep its connection open here until the next commit.
        tokio::select! {
            changed = commits.changed() => if changed.is_err() {
                return;
            },
            _ = stream.read(&mut probe) => return,
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// What another process asked, answered as this one's reads and commits
/// are: a panic inside redb is the error for corrupt data, and damage is
/// noted (the close does not mark the file sound).
async fn answer(holder: &Holder, call: Call) -> Result<Answer, BackendError> {
    let answered = match call {
        Call::Commit(checks, writes) => super::commit(Some(&holder.line), checks, writes, false)
            .await
            .map(Answer::Version),
        call @ (Call::Get(_)
        | Call::GetMany(_)
        | Call::Scan(_)
        | Call::CurrentVersion
        | Call::Changes(..)
        | Call::Subscribe) => super::guarded(&holder.path, || read_answer(holder, call)),
    };
    holder.counters.note(answered)
}

fn read_answer(holder: &Holder, call: Call) -> Result<Answer, BackendError> {
    let state = || read(&holder.state);
    match call {
        Call::Get(key) => {
            validate_key(&key)?;
            state().get(&key).map(Answer::Entry)
        }
        Call::GetMany(keys) => {
            validate_get_many(&keys)?;
            let state = state();
            let found: Result<Vec<_>, _> = keys.iter().map(|key| state.get(key)).collect();
            found.map(Answer::Entries)
        }
        Call::Scan(scan) => {
            validate_scan(&scan)?;
            if scan.is_empty() {
                return Ok(Answer::Scanned(Vec::new()));
            }
            state().scan(&scan).map(Answer::Scanned)
        }
        Call::Commit(..) => Err(BackendError::Invalid(
            "a commit is answered by the line".into(),
        )),
        Call::CurrentVersion => Ok(Answer::Version(state().version)),
        Call::Changes(since, limit) => state().changes(since, limit).map(Answer::Changes),
        Call::Subscribe => Err(BackendError::Invalid(
            "a subscription takes a connection of its own".into(),
        )),
    }
}

async fn read_frame_async(stream: &mut tokio::net::UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut frame = vec![0; len];
    stream.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

async fn write_frame_async(
    stream: &mut tokio::net::UnixStream,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

/// A backend that sends each call to the process holding the store.
///
/// Calls are made on a blocking socket, one at a time per client, like
/// the file backend's own reads, which also run on the caller's thread; a
/// commit waits for the holder's `fdatasync`. A holder that does not
/// answer within [`CALL_TIMEOUT`] counts as lost. Commit notifications
/// come over a connection of their own, followed by a thread started on
/// the first [`Backend::commits`].
pub struct Client {
    path: PathBuf,
    config: super::FileConfig,
    via: std::sync::Mutex<Via>,
    read_only: bool,
    /// The holder's version, as its notifications tell it; the follower
    /// thread holds it weakly and ends once the client is gone.
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    following: std::sync::Once,
}

/// How a client reaches the store now.
enum Via {
    Socket(std::os::unix::net::UnixStream),
    /// The holder went away and this process took the store over.
    Local(Arc<super::FileBackend>),
    /// The connection failed: the next call reconnects (or takes over).
    Lost,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("file::Client")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the holder of the store at `db`; `None` if nothing
    /// serves it (no holder, or one that has not bound its socket yet).
    pub(super) fn connect(db: &Path, config: &super::FileConfig) -> Option<Self> {
        let stream = connect(db)?;
        // The store's own path: taking it over later opens this file even
        // if the process has changed its working directory since.
        let mut config = config.clone();
        config.path = db.to_path_buf();
        Some(Self {
            path: db.to_path_buf(),
            read_only: config.read_only,
            config,
            via: std::sync::Mutex::new(Via::Socket(stream)),
            commits: Arc::new(tokio::sync::watch::Sender::new(0)),
            following: std::sync::Once::new(),
        })
    }

    fn via(&self) -> std::sync::MutexGuard<'_, Via> {
        self.via.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store in this process if it was taken over (reconnecting first
    /// after a lost connection: to a new holder, or taking the store over
    /// when nobody holds it).
    ///
    /// A read-only client does not keep a store it opened: it holds it only
    /// for the call that needed it, so a writer starting up can take the
    /// store (and then serves it to this client's next call).
    fn local(&self) -> Result<Option<Arc<super::FileBackend>>, BackendError> {
        let mut via = self.via();
        if matches!(*via, Via::Lost) {
            let next = match super::FileBackend::open_shared(&self.config) {
                Ok(backend) => Via::Local(backend),
                Err(e) if super::is_in_use(&e) => {
                    // The old holder may still be closing, or the new one
                    // binding its socket: as long as `open` waits.
                    let deadline = std::time::Instant::now() + super::HELD_WAIT;
                    loop {
                        if let Some(stream) = connect(&self.path) {
                            break Via::Socket(stream);
                        }
                        match super::FileBackend::open_shared(&self.config) {
                            Ok(backend) => break Via::Local(backend),
                            Err(e) if super::is_in_use(&e) => {}
                            Err(e) => return Err(e),
                        }
                        if std::time::Instant::now() >= deadline {
                            return Err(e);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                Err(e) => return Err(e),
            };
            match next {
                Via::Local(backend) if self.read_only => return Ok(Some(backend)),
                next @ (Via::Socket(_) | Via::Local(_) | Via::Lost) => *via = next,
            }
        }
        Ok(match &*via {
            Via::Local(backend) => Some(backend.clone()),
            Via::Socket(_) | Via::Lost => None,
        })
    }

    /// One call to the holder. A call the holder never took (the
    /// connection was gone before it was sent, or was reset with the call
    /// unread) is asked again, a commit included: of the next holder, or of
    /// the store taken over (whose answer is final). A read that lost the
    /// connection after it was sent is asked again too: a holder being
    /// killed may still accept a connection it never answers, so a read is
    /// asked until it is answered or [`super::HELD_WAIT`] passes. A commit
    /// the holder took and did not answer is never asked twice (it may
    /// have been made).
    async fn ask(&self, call: &Call) -> Result<Answer, BackendError> {
        let deadline = std::time::Instant::now() + super::HELD_WAIT;
        let mut attempt = self.call(call);
        loop {
            match attempt {
                Ok(answer) => return Ok(answer),
                Err((e, failed))
                    if failed == Failed::Answered
                        || (failed == Failed::Taken && matches!(call, Call::Commit(..)))
                        || std::time::Instant::now() >= deadline =>
                {
                    return Err(e);
                }
                Err(_) => {}
            }
            attempt = match self.local()? {
                Some(local) => return answer_locally(&local, call).await,
                None => self.call(call),
            };
            if attempt.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// The holder's answer; or an error, and how the call failed.
    fn call(&self, call: &Call) -> Result<Answer, (BackendError, Failed)> {
        let mut via = self.via();
        let Via::Socket(stream) = &mut *via else {
            // Another call lost the connection (or took the store over)
            // since this one looked: this one was not sent.
            let e = BackendError::Unavailable(format!(
                "the connection to the process that holds {} was lost before this call was sent; nothing was written, try again",
                self.path.display()
            ));
            return Err((e, Failed::Unsent));
        };
        let result = Self::round_trip(stream, call, &self.path);
        if result.as_ref().is_err_and(|e| e.1 != Failed::Answered) {
            *via = Via::Lost;
        }
        match result {
            Ok(answer) => answer.map_err(|e| (e, Failed::Answered)),
            Err(failed) => Err(failed),
        }
    }

    /// The answer; or an error, and how the call failed.
    fn round_trip(
        stream: &mut std::os::unix::net::UnixStream,
        call: &Call,
        path: &Path,
    ) -> Result<Result<Answer, BackendError>, (BackendError, Failed)> {
        let body = postcard::to_stdvec(call).map_err(|e| {
            (
                BackendError::Invalid(format!("cannot encode the call: {e}")),
                Failed::Answered,
            )
        })?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len as usize <= MAX_FRAME)
            .ok_or_else(|| {
                (
                    BackendError::Invalid("the call is too large".into()),
                    Failed::Answered,
                )
            })?;
        let taken = |e: &dyn std::fmt::Display| (lost(path, e), Failed::Taken);
        // The holder takes a call whole or not at all (it reads a frame
        // before acting on it, and answers every frame it has read before
        // it stops), so a call whose bytes did not all go out, or that the
        // kernel reset because the holder closed with them unread, was not
        // made.
        let unsent = |e: &std::io::Error| {
            let e = BackendError::Unavailable(format!(
                "the process that holds {} closed before taking this call ({e}); nothing was written",
                path.display()
            ));
            (e, Failed::Unsent)
        };
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&body);
        stream.write_all(&frame).map_err(|e| unsent(&e))?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionReset {
                unsent(&e)
            } else {
                taken(&e)
            }
        })?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(taken(&"an oversized answer"));
        }
        let mut answer = vec![0; len];
        stream.read_exact(&mut answer).map_err(|e| taken(&e))?;
        postcard::from_bytes::<Result<Answer, BackendError>>(&answer)
            .map_err(|e| taken(&format_args!("a malformed answer: {e}")))
    }

    /// Whether this client refuses writes (a read-only open).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

/// `call` on the store this process took over.
async fn answer_locally(local: &super::FileBackend, call: &Call) -> Result<Answer, BackendError> {
    Ok(match call {
        Call::Get(key) => Answer::Entry(local.get(key).await?),
        Call::GetMany(keys) => Answer::Entries(local.get_many(keys).await?),
        Call::Scan(scan) => Answer::Scanned(local.scan(scan).await?),
        Call::CurrentVersion => Answer::Version(local.current_version().await?),
        Call::Changes(since, limit) => Answer::Changes(local.changes(*since, *limit).await?),
        // Only a commit the holder never took is asked again.
        Call::Commit(checks, writes) => {
            Answer::Version(local.commit(checks.clone(), writes.clone()).await?)
        }
        Call::Subscribe => {
            return Err(BackendError::Invalid(
                "subscriptions are not retried".into(),
            ));
        }
    })
}

/// How long one call may wait for the holder (a commit waits for its
/// `fdatasync`) before the holder counts as lost.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn connect(db: &Path) -> Option<std::os::unix::net::UnixStream> {
    let stream = with_address(&socket_path(db), |at| {
        std::os::unix::net::UnixStream::connect(at)
    })
    .ok()?;
    stream.set_read_timeout(Some(CALL_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(CALL_TIMEOUT)).ok()?;
    Some(stream)
}

/// How often an idle follower checks that its client still exists, and
/// how long it waits before subscribing again to a holder that went away.
const FOLLOW_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
const FOLLOW_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Follows the commit notifications of whichever process holds `db` (this
/// one included, once it took the store over) into `commits`, while the
/// client that owns it exists. A holder that goes away wakes the watchers
/// too: they read the change feed again, through whoever holds it next.
fn follow(db: &Path, commits: &std::sync::Weak<tokio::sync::watch::Sender<u64>>) {
    while commits.strong_count() > 0 {
        if let Some(mut stream) = subscribe(db) {
            let mut version = [0u8; 8];
            let mut filled = 0;
            loop {
                match stream.read(&mut version[filled..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        filled += n;
                        if filled < version.len() {
                            continue;
                        }
                        filled = 0;
                        let Some(commits) = commits.upgrade() else {
                            return;
                        };
                        let version = u64::from_le_bytes(version);
                        commits.send_if_modified(|seen| {
                            let newer = version != *seen;
                            *seen = version;
                            newer
                        });
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        if commits.strong_count() == 0 {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            if let Some(commits) = commits.upgrade() {
                commits.send_modify(|_| {});
            }
        }
        std::thread::sleep(FOLLOW_RETRY);
    }
}

/// A connection to `db`'s holder turned into a notification feed.
fn subscribe(db: &Path) -> Option<std::os::unix::net::UnixStream> {
    let mut stream = connect(db)?;
    stream.set_read_timeout(Some(FOLLOW_CHECK)).ok()?;
    let body = postcard::to_stdvec(&Call::Subscribe).ok()?;
    let len = u32::try_from(body.len()).ok()?;
    stream.write_all(&len.to_le_bytes()).ok()?;
    stream.write_all(&body).ok()?;
    Some(stream)
}

fn unexpected(answer: &Answer) -> BackendError {
    BackendError::Unavailable(format!("the process holding the store answered {answer:?}"))
}

#[async_trait]
impl Backend for Client {
    fn summary(&self) -> String {
        format!(
            "file {} (through the process that holds it)",
            self.path.display()
        )
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        if let Some(local) = self.local()? {
            return local.get(key).await;
        }
        let answer = self.ask(&Call::Get(key.to_vec())).await?;
        let Answer::Entry(entry) = answer else {
            return Err(unexpected(&answer));
        };
        Ok(entry)
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        if let Some(local) = self.local()? {
            return local.get_many(keys).await;
        }
        let answer = self.ask(&Call::GetMany(keys.to_vec())).await?;
        match answer {
            Answer::Entries(entries) if entries.len() == keys.len() => Ok(entries),
            Answer::Entries(_)
            | Answer::Entry(_)
            | Answer::Scanned(_)
            | Answer::Version(_)
            | Answer::Changes(_) => Err(unexpected(&answer)),
        }
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        if let Some(local) = self.local()? {
            return local.scan(scan).await;
        }
        let answer = self.ask(&Call::Scan(scan.clone())).await?;
        let Answer::Scanned(entries) = answer else {
            return Err(unexpected(&answer));
        };
        Ok(entries)
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        if let Some(local) = self.local()? {
            return local.commit(checks, writes).await;
        }
        let answer = self.ask(&Call::Commit(checks, writes)).await?;
        let Answer::Version(version) = answer else {
            return Err(unexpected(&answer));
        };
        Ok(version)
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        if let Some(local) = self.local()? {
            return local.current_version().await;
        }
        let answer = self.ask(&Call::CurrentVersion).await?;
        let Answer::Version(version) = answer else {
            return Err(unexpected(&answer));
        };
        Ok(version)
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        if let Some(local) = self.local()? {
            return local.changes(since, limit).await;
        }
        let answer = self.ask(&Call::Changes(since, limit)).await?;
        let Answer::Changes(changes) = answer else {
            return Err(unexpected(&answer));
        };
        Ok(changes)
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.following.call_once(|| {
            let (path, commits) = (self.path.clone(), Arc::downgrade(&self.commits));
            // Without the thread, watchers poll, as with any backend that
            // cannot announce commits.
            let _ = std::thread::Builder::new()
                .name("kvstash-share-follow".into())
                .spawn(move || follow(&path, &commits));
        });
        Some(self.commits.subscribe())
    }

    fn commit_stats(&self) -> Option<super::SyncStats> {
        // Not waiting behind a call in flight on the socket.
        match &*self.via.try_lock().ok()? {
            Via::Local(backend) => Some(backend.sync_stats()),
            Via::Socket(_) | Via::Lost => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A client that takes its store over opens the file it connected to,
    /// whatever its configuration's (relative) path resolves to by then.
    #[test]
    fn a_client_takes_over_the_file_it_connected_to() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("held.redb");
        let holder =
            super::super::FileBackend::open_shared(&super::super::FileConfig::new(&db)).unwrap();
        let db = db.canonicalize().unwrap();
        let relative = super::super::FileConfig::new("somewhere/else.redb");
        let client = Client::connect(&db, &relative).expect("the holder serves its store");
        assert_eq!(client.config.path, db);
        drop(client);
        drop(holder);
    }

    /// A holder that closes while clients commit answers every call it
    /// took, and each client asks the ones it did not take of the next
    /// holder (one of them, taking the store over): every commit succeeds
    /// exactly once, none is left in doubt.
    #[test]
    fn a_holder_that_stops_leaves_no_commit_in_doubt() {
        const CLIENTS: u64 = 4;
        const COMMITS: u64 = 200;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("held.redb");
        let config = super::super::FileConfig::new(&db);
        let holder = super::super::FileBackend::open_shared(&config).unwrap();
        let writers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let client = Client::connect(&db.canonicalize().unwrap(), &config).unwrap();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        for i in 0..COMMITS {
                            let write = Write {
                                key: format!("{c}/{i}").into_bytes(),
                                value: Some(b"v".to_vec()),
                            };
                            if let Err(e) = client.commit(vec![], vec![write]).await {
                                panic!("commit {c}/{i}: {e}");
                            }
                        }
                    });
                })
            })
            .collect();
        while read(&holder.state).version < CLIENTS * COMMITS / 4 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(holder);
        for writer in writers {
            writer.join().expect("every commit succeeded");
        }
        let after = super::super::FileBackend::open_shared(&config).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(after.current_version().await, Ok(CLIENTS * COMMITS));
            for c in 0..CLIENTS {
                for i in 0..COMMITS {
                    let entry = after.get(format!("{c}/{i}").as_bytes()).await.unwrap();
                    assert!(entry.is_some(), "{c}/{i} was written");
                }
            }
        });
    }
}
