//! The writer: one thread owns the open segment; callers hand it entries and wait until their
//! record is on disk.
//!
//! Group commit: while one batch is being synced, new entries queue up; the next turn takes
//! everything queued, writes it with one `write` and one `fdatasync`, then answers every caller.
//! Under load many records share one sync, so the cost of durability is paid per batch, not per
//! query. A failed write or sync refuses that batch (nothing that needs a record goes ahead
//! unrecorded) and leaves the file in an unknown state; the next batch first cuts the segment
//! back to its last durable record and syncs that, then writes, so the log resumes by itself
//! once the disk has room again (a full disk used to stop it until a restart), and its first
//! record after the gap says how many entries were refused and why.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::keys::{PublicKey, SigningKey};
use crate::record::{self, Entry, Record};
use crate::segment::{self, Lines};
use crate::{CHECKPOINT_ACTION, Error, Result};

/// How the log writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sign a checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this long after the first unsigned record, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Start a new segment once the current one reaches this size.
    pub max_segment_bytes: u64,
    /// Sync each batch to disk before answering. Off only to measure what durability costs.
    pub sync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            max_segment_bytes: 64 << 20,
            sync: true,
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Its sequence number (an answer carries its request id instead: `Filter::request_id`).
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
}

/// How often a log whose last write failed tries again on its own.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Largest number of entries written with one sync.
const MAX_BATCH: usize = 4096;

enum Msg {
    Append(Box<Entry>, Reply),
    Close(oneshot::Sender<Result<()>>),
}

/// Where a caller waits for its receipt: a task (async) or a thread (blocking; a blocking wait
/// on a oneshot would panic inside a runtime, and `open` runs inside one).
enum Reply {
    Task(oneshot::Sender<Result<Receipt>>),
    Thread(mpsc::SyncSender<Result<Receipt>>),
}

impl Reply {
    fn send(self, result: Result<Receipt>) {
        // A caller that stopped waiting (a dropped request) needs no answer.
        let _ = match self {
            Reply::Task(tx) => tx.send(result).map_err(|_| ()),
            Reply::Thread(tx) => tx.send(result).map_err(|_| ()),
        };
    }
}

/// An open audit log. Share it behind an `Arc`; close it at shutdown so the last records are
/// signed.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
    public_key: PublicKey,
    durable: Arc<AtomicU64>,
    /// Why the last write failed, while the log has not written since.
    failing: Arc<Mutex<Option<String>>>,
    /// Told of every append (the server's metrics).
    observer: OnceLock<Observer>,
}

/// A function told of every append.
struct Observer(Box<dyn Fn(&Appended) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// What an observer is told of one append: the kind of record, never its contents (no actor,
/// SQL or detail), whether it was written and how long it took.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The record's action (`query`, `dataset.register`, …).
    pub action: String,
    /// Its decision (`allowed`, `denied`, `failed`, …).
    pub decision: String,
    /// The mode of a query or grant.
    pub mode: Option<String>,
    /// The rule or error code that decided.
    pub rule: Option<String>,
    /// The kind of a failure while running, as the record names it (`deadline`, `memory limit`).
    pub failure: Option<String>,
    /// ε a dp answer spent.
    pub epsilon: Option<f64>,
    /// ρ a dp answer spent.
    pub rho: Option<f64>,
    /// Whether the record is on disk.
    pub written: bool,
    /// From the call to the answer.
    pub latency: std::time::Duration,
}

impl Appended {
    fn of(entry: &Entry) -> Self {
        Self {
            action: entry.action.clone(),
            decision: entry.decision.clone(),
            mode: entry.mode.clone(),
            rule: entry.rule.clone(),
            failure: entry.failure.clone(),
            epsilon: entry.epsilon,
            rho: entry.rho,
            written: false,
            latency: std::time::Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Append(..) => "Append",
            Msg::Close(_) => "Close",
        })
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, signing with the key at `key_path` (created if
    /// missing). A write that a crash left half done at the end is set aside in a `torn-*.bin`
    /// file and the log continues after the last whole record; that it happened is recorded.
    ///
    /// # Errors
    /// Files cannot be read or written, the key is unusable, or the log does not continue its
    /// own chain ([`Error::Damaged`]), in which case nothing is written.
    pub fn open(dir: &Path, key_path: &Path, options: Options) -> Result<Self> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(Error::io("creating", dir))?;
        let key = SigningKey::load_or_create(key_path)?;
        let public_key = key.public_key();
        let recovered = recover(dir)?;
        let (file, bytes) = open_segment(&recovered.segment)?;
        let durable = Arc::new(AtomicU64::new(recovered.seq));
        let failing = Arc::new(Mutex::new(None));
        let writer = Writer {
            dir: dir.to_path_buf(),
            key,
            options,
            file,
            segment: recovered.segment.clone(),
            segment_bytes: bytes,
            seq: recovered.seq,
            hash: recovered.hash,
            unsigned: 0,
            first_unsigned: None,
            failed: None,
            refused: 0,
            durable: Arc::clone(&durable),
            failing: Arc::clone(&failing),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("veil-audit".into())
            .spawn(move || writer.run(&rx))
            .map_err(Error::io("starting the writer for", dir))?;
        let log = Self {
            tx,
            thread: Mutex::new(Some(thread)),
            dir: dir.to_path_buf(),
            public_key,
            durable,
            failing,
            observer: OnceLock::new(),
        };
        if let Some(torn) = recovered.torn {
            let mut entry = Entry::new("audit.recovered", "ok");
            entry.detail = Some(format!(
                "set aside {} bytes of an unfinished write after seq {} in {}; their requests were never answered",
                torn.bytes, recovered.seq, torn.file
            ));
            log.append_blocking(entry)?;
        }
        let mut entry = Entry::new("audit.open", "ok");
        entry.detail = Some(format!("log opened after seq {}", recovered.seq));
        log.append_blocking(entry)?;
        Ok(log)
    }

    /// Appends `entry` and returns once it is on disk.
    ///
    /// # Errors
    /// The log stopped after a failed write, or is closed.
    pub async fn append(&self, entry: Entry) -> Result<Receipt> {
        let observed = self.observing(&entry);
        let (reply, answer) = oneshot::channel();
        let result = match self.tx.send(Msg::Append(Box::new(entry), Reply::Task(reply))) {
            Ok(()) => answer.await.map_err(|_| Error::Closed).and_then(|r| r),
            Err(_) => Err(Error::Closed),
        };
        self.observed(observed, result.is_ok());
        result
    }

    /// Tells `observe` of every append from now on (once: a second observer is ignored).
    pub fn observe(&self, observe: impl Fn(&Appended) + Send + Sync + 'static) {
        let _ = self.observer.set(Observer(Box::new(observe)));
    }

    fn observing(&self, entry: &Entry) -> Option<(Appended, std::time::Instant)> {
        self.observer.get().map(|_| (Appended::of(entry), std::time::Instant::now()))
    }

    fn observed(&self, observing: Option<(Appended, std::time::Instant)>, written: bool) {
        if let (Some(observe), Some((mut appended, started))) = (self.observer.get(), observing) {
            appended.written = written;
            appended.latency = started.elapsed();
            (observe.0)(&appended);
        }
    }

    /// [`AuditLog::append`] for code outside an async runtime.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_blocking(&self, entry: Entry) -> Result<Receipt> {
        let observed = self.observing(&entry);
        let (reply, answer) = mpsc::sync_channel(1);
        let result = match self.tx.send(Msg::Append(Box::new(entry), Reply::Thread(reply))) {
            Ok(()) => answer.recv().map_err(|_| Error::Closed).and_then(|r| r),
            Err(_) => Err(Error::Closed),
        };
        self.observed(observed, result.is_ok());
        result
    }

    /// Signs a final checkpoint, syncs, and stops the writer. Appends after this fail.
    ///
    /// # Errors
    /// The last write failed, or the log was already closed.
    pub async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Msg::Close(reply)).map_err(|_| Error::Closed)?;
        let result = answer.await.map_err(|_| Error::Closed)?;
        let thread = self.thread.lock().map_err(|_| Error::Closed)?.take();
        if let Some(thread) = thread {
            // The writer answered Close as its last act; joining only reaps the thread.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }

    /// Why the last write failed, while the log has not written since (for readiness).
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// The highest sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public key that verifies this log's checkpoints.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }
}

struct Writer {
    dir: PathBuf,
    key: SigningKey,
    options: Options,
    /// The open segment, its path (for error messages) and size.
    file: File,
    segment: PathBuf,
    segment_bytes: u64,
    seq: u64,
    hash: [u8; 32],
    /// Records since the last checkpoint.
    unsigned: u64,
    first_unsigned: Option<Instant>,
    /// Why the last write failed, until a write succeeds again.
    failed: Option<String>,
    /// Entries refused since the last write failed.
    refused: u64,
    durable: Arc<AtomicU64>,
    failing: Arc<Mutex<Option<String>>>,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        loop {
            let wait = match self.first_unsigned {
                // While writing fails, try again every few seconds even without entries, so
                // that readiness comes back by itself once there is room.
                _ if self.failed.is_some() => RETRY_INTERVAL,
                Some(since) => self.options.checkpoint_interval.saturating_sub(since.elapsed()),
                None => Duration::from_secs(3600),
            };
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.commit(Vec::new(), true);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.commit(Vec::new(), true);
                    return;
                }
            };
            let mut appends = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Append(entry, reply) => appends.push((entry, reply)),
                    Msg::Close(reply) => close = Some(reply),
                }
                next = if appends.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
            }
            let checkpoint_due =
                close.is_some() || self.first_unsigned.is_some_and(|t| t.elapsed() >= self.options.checkpoint_interval);
            let outcome = self.commit(appends, checkpoint_due);
            if let Some(reply) = close {
                let _ = reply.send(outcome);
                return;
            }
        }
    }

    /// Writes the entries (and a checkpoint when one is due or `checkpoint` asks), syncs, then
    /// answers each caller.
    fn commit(&mut self, mut appends: Vec<(Box<Entry>, Reply)>, checkpoint: bool) -> Result<()> {
        let resuming = self.failed.is_some();
        if let Some(why) = self.failed.clone() {
            if appends.is_empty() && !checkpoint {
                return Err(Error::Stopped(why));
            }
            if let Err(e) = self.cut_back() {
                tracing::warn!(error = %e, "the audit log still cannot write");
                self.refused += appends.len() as u64;
                for (_, reply) in appends {
                    reply.send(Err(Error::Stopped(why.clone())));
                }
                return Err(Error::Stopped(why));
            }
            // The gap, said first: an auditor sees why requests in it were refused.
            let mut resumed = Entry::new("audit.resumed", "ok");
            resumed.detail = Some(format!(
                "writing failed after seq {} ({why}); {} entries were refused meanwhile",
                self.seq, self.refused
            ));
            let (reply, _) = mpsc::sync_channel(1);
            appends.insert(0, (Box::new(resumed), Reply::Thread(reply)));
        }
        let now = OffsetDateTime::now_utc();
        let (mut seq, mut hash) = (self.seq, self.hash);
        let mut buffer = Vec::new();
        let mut done = Vec::with_capacity(appends.len());
        for (entry, reply) in appends {
            let rec = Record {
                seq: seq + 1,
                time: now,
                prev: veil_common::hex::encode(&hash),
                entry: *entry,
                checkpoint: None,
            };
            match record::encode_line(&rec) {
                Ok((line, h)) => {
                    buffer.extend_from_slice(&line);
                    seq += 1;
                    hash = h;
                    done.push((reply, Receipt { seq, hash: veil_common::hex::encode(&h) }));
                }
                Err(e) => {
                    reply.send(Err(Error::Encode(e.to_string())));
                }
            }
        }
        let mut unsigned = self.unsigned + done.len() as u64;
        if unsigned > 0 && (checkpoint || unsigned >= self.options.checkpoint_every) {
            let rec = Record {
                seq: seq + 1,
                time: now,
                prev: veil_common::hex::encode(&hash),
                entry: Entry::new(CHECKPOINT_ACTION, "ok"),
                checkpoint: Some(self.key.checkpoint(seq, &hash)),
            };
            let (line, h) = record::encode_line(&rec).map_err(|e| Error::Encode(e.to_string()))?;
            buffer.extend_from_slice(&line);
            seq += 1;
            hash = h;
            unsigned = 0;
        }
        if buffer.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write(&buffer) {
            let why = e.to_string();
            tracing::error!(error = %why, "the audit log could not write; it refuses entries until a write succeeds");
            if !resuming {
                self.refused = 0;
            }
            // The entry saying the log resumed is not one of the refused.
            self.refused += (done.len() as u64).saturating_sub(u64::from(resuming));
            self.set_failed(Some(why.clone()));
            for (reply, _) in done {
                reply.send(Err(Error::Stopped(why.clone())));
            }
            return Err(e);
        }
        if resuming {
            tracing::info!(refused = self.refused, "the audit log writes again");
            self.refused = 0;
            self.set_failed(None);
        }
        self.seq = seq;
        self.hash = hash;
        self.unsigned = unsigned;
        self.first_unsigned = match unsigned {
            0 => None,
            _ => self.first_unsigned.or_else(|| Some(Instant::now())),
        };
        self.durable.store(seq, Ordering::Release);
        for (reply, receipt) in done {
            reply.send(Ok(receipt));
        }
        Ok(())
    }

    /// Appends `buffer`, starting a new segment first if this one is full, and syncs.
    fn write(&mut self, buffer: &[u8]) -> Result<()> {
        if self.segment_bytes > 0 && self.segment_bytes + buffer.len() as u64 > self.options.max_segment_bytes {
            let path = self.dir.join(segment::file_name(self.seq + 1));
            let (file, bytes) = open_segment(&path)?;
            sync_dir(&self.dir)?;
            self.file = file;
            self.segment = path;
            self.segment_bytes = bytes;
        }
        self.file.write_all(buffer).map_err(Error::io("appending to the audit log in", &self.segment))?;
        if self.options.sync {
            self.file.sync_data().map_err(Error::io("syncing the audit log in", &self.segment))?;
        }
        self.segment_bytes += buffer.len() as u64;
        Ok(())
    }

    /// Why the last write failed (`None` once one succeeds), for the writer and for readiness.
    fn set_failed(&mut self, why: Option<String>) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.clone_from(&why);
        }
        self.failed = why;
    }

    /// After a failed write: the segment cut back to its size after the last durable record,
    /// synced, and reopened for appending. A write that failed may have left part of its bytes,
    /// and a sync that failed leaves unknown which reached the disk; the bytes up to the last
    /// successful sync did.
    fn cut_back(&mut self) -> Result<()> {
        let file = OpenOptions::new().write(true).open(&self.segment).map_err(Error::io("reopening", &self.segment))?;
        file.set_len(self.segment_bytes).map_err(Error::io("cutting back", &self.segment))?;
        file.sync_all().map_err(Error::io("syncing", &self.segment))?;
        let (file, bytes) = open_segment(&self.segment)?;
        self.file = file;
        self.segment_bytes = bytes;
        Ok(())
    }
}

fn open_segment(path: &Path) -> Result<(File, u64)> {
    let file =
        OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(Error::io("opening", path))?;
    let bytes = file.metadata().map_err(Error::io("reading the size of", path))?.len();
    Ok((file, bytes))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing", dir))
}

/// The hash the first record's `prev` names: all zeros, written as [`crate::record::GENESIS`].
const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// Where the log continues after open.
struct Recovered {
    segment: PathBuf,
    seq: u64,
    hash: [u8; 32],
    torn: Option<Torn>,
}

struct Torn {
    file: String,
    bytes: u64,
}

/// Finds the last whole record. Only the end of the last segment may be unfinished (a write a
/// crash interrupted; its callers were never answered): it is moved to a `torn-*.bin` file. A
/// bad record followed by good ones is not a crash; opening refuses.
fn recover(dir: &Path) -> Result<Recovered> {
    let segments = segment::list(dir)?;
    let Some(last) = segments.last() else {
        let path = dir.join(segment::file_name(1));
        File::create(&path).map_err(Error::io("creating", &path))?;
        sync_dir(dir)?;
        return Ok(Recovered { segment: path, seq: 0, hash: GENESIS_HASH, torn: None });
    };
    let damaged = |line: u64, why: String| Error::Damaged { segment: last.path.clone(), line, why };
    let mut lines = Lines::open(&last.path)?;
    let mut head: Option<(u64, [u8; 32])> = None;
    let mut good_end = 0u64;
    let mut first_bad: Option<(u64, String)> = None;
    while let Some(line) = lines.next_line()? {
        let decoded = if line.complete { record::decode_line(&line.bytes) } else { Err("unfinished".into()) };
        match (decoded, &first_bad) {
            (Ok((rec, hash)), None) => {
                let expected = head.map_or(last.first_seq, |(seq, _)| seq + 1);
                if rec.seq != expected {
                    return Err(damaged(line.number, format!("seq {} where {expected} belongs", rec.seq)));
                }
                if let Some((_, prev)) = head
                    && rec.prev != veil_common::hex::encode(&prev)
                {
                    return Err(damaged(line.number, "the record does not continue the chain".into()));
                }
                head = Some((rec.seq, hash));
                good_end = line.offset + line.bytes.len() as u64 + 1;
            }
            (Ok(_), Some((bad, why))) => {
                return Err(damaged(*bad, format!("{why}, and whole records follow it")));
            }
            (Err(why), None) => first_bad = Some((line.number, why)),
            (Err(_), Some(_)) => {}
        }
    }
    let torn = if first_bad.is_some() { Some(set_aside(dir, &last.path, good_end, head)?) } else { None };
    match head {
        Some((seq, hash)) => Ok(Recovered { segment: last.path.clone(), seq, hash, torn }),
        None if segments.len() == 1 && last.first_seq == 1 => {
            Ok(Recovered { segment: last.path.clone(), seq: 0, hash: GENESIS_HASH, torn })
        }
        None => {
            // The last segment holds no whole record: it was started by the write that tore.
            fs::remove_file(&last.path).map_err(Error::io("removing the empty segment", &last.path))?;
            sync_dir(dir)?;
            let mut previous = recover(dir)?;
            previous.torn = previous.torn.or(torn);
            Ok(previous)
        }
    }
}

/// Moves `path`'s bytes from `from` on into a `torn-*.bin` file beside it and cuts `path` there.
fn set_aside(dir: &Path, path: &Path, from: u64, head: Option<(u64, [u8; 32])>) -> Result<Torn> {
    let bytes = fs::read(path).map_err(Error::io("reading", path))?;
    let tail = bytes.get(from as usize..).unwrap_or_default();
    let after = head.map_or(0, |(seq, _)| seq);
    let name = format!("torn-{after:012}-{}.bin", OffsetDateTime::now_utc().unix_timestamp());
    let aside = dir.join(&name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .map_err(Error::io("creating", &aside))?;
    file.write_all(tail).map_err(Error::io("writing", &aside))?;
    file.sync_all().map_err(Error::io("syncing", &aside))?;
    let segment = OpenOptions::new().write(true).open(path).map_err(Error::io("opening", path))?;
    segment.set_len(from).map_err(Error::io("cutting the unfinished write from", path))?;
    segment.sync_all().map_err(Error::io("syncing", path))?;
    sync_dir(dir)?;
    tracing::warn!(bytes = tail.len(), after, file = %name, "set aside an unfinished audit write");
    Ok(Torn { file: name, bytes: tail.len() as u64 })
}
