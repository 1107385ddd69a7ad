//! Registrations and extract requests in progress, for whoever sent them: a client names its
//! request (`Veil-Upload-Id`), and `GET /v1/uploads/{id}` tells how far the server got (for a
//! registration, bytes received and rows read; for an extract, its stage only), while it works
//! and for a while after. Only its sender sees it; the counts are of their own file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// The header a client names its upload with.
pub const UPLOAD_ID_HEADER: &str = "veil-upload-id";

/// How long a finished upload stays to be read.
const KEPT_FOR: Duration = Duration::from_secs(600);

/// The most uploads tracked per user at once (finished ones count until they expire).
const PER_USER: usize = 32;

/// Where an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The file is arriving.
    Receiving = 0,
    /// Its rows are being read, checked and written.
    Reading = 1,
    /// Registered (or checked, for a dry run).
    Done = 2,
    /// Refused or failed; the registration's answer says why.
    Failed = 3,
    /// An extract is being compared with the extracts already released.
    Comparing = 4,
    /// An extract's datasets are being read and the extract built.
    Building = 5,
}

impl Stage {
    /// Its name in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Receiving => "receiving",
            Stage::Reading => "reading",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::Comparing => "comparing",
            Stage::Building => "building",
        }
    }

    fn of(n: u8) -> Self {
        match n {
            0 => Stage::Receiving,
            1 => Stage::Reading,
            2 => Stage::Done,
            4 => Stage::Comparing,
            5 => Stage::Building,
            _ => Stage::Failed,
        }
    }
}

/// One upload's progress, updated by the registration as it goes.
#[derive(Debug)]
pub struct Upload {
    stage: AtomicU8,
    bytes: AtomicU64,
    rows: AtomicU64,
    finished: Mutex<Option<Instant>>,
}

impl Upload {
    fn new() -> Self {
        Self {
            stage: AtomicU8::new(Stage::Receiving as u8),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            finished: Mutex::new(None),
        }
    }

    /// Counts `n` more bytes received.
    pub fn received(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes that `rows` rows have been read so far (and that reading has begun).
    pub fn read(&self, rows: u64) {
        self.stage.store(Stage::Reading as u8, Ordering::Relaxed);
        self.rows.store(rows, Ordering::Relaxed);
    }

    /// Notes that the work is at `stage` (an extract's).
    pub fn at(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    /// Ends it: done or failed.
    pub fn finish(&self, ok: bool) {
        self.stage.store(if ok { Stage::Done } else { Stage::Failed } as u8, Ordering::Relaxed);
        if let Ok(mut finished) = self.finished.lock() {
            *finished = Some(Instant::now());
        }
    }

    /// Its stage, bytes received and rows read.
    pub fn now(&self) -> (Stage, u64, u64) {
        (
            Stage::of(self.stage.load(Ordering::Relaxed)),
            self.bytes.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }

    fn expired(&self, now: Instant) -> bool {
        self.finished.lock().ok().and_then(|f| *f).is_some_and(|at| now.duration_since(at) > KEPT_FOR)
    }
}

/// The uploads being tracked, by user and the id their client gave.
#[derive(Debug, Default)]
pub struct Uploads {
    tracked: Mutex<HashMap<(String, String), Arc<Upload>>>,
}

impl Uploads {
    /// Starts tracking `user`'s upload `id`.
    ///
    /// # Errors
    /// An id that is not 1 to 64 letters, digits, `-` or `_`; one the user already has; more
    /// than [`PER_USER`] of theirs tracked.
    pub fn begin(&self, user: &str, id: &str) -> Result<Arc<Upload>, ApiError> {
        let valid =
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ApiError::bad_request(
                "invalid_upload_id",
                format!("the {UPLOAD_ID_HEADER} header is 1 to 64 letters, digits, `-` or `_`"),
            ));
        }
        let mut tracked = self.tracked.lock().map_err(|_| ApiError::internal("the upload table is poisoned"))?;
        let now = Instant::now();
        tracked.retain(|_, upload| !upload.expired(now));
        let key = (user.to_owned(), id.to_owned());
        if tracked.contains_key(&key) {
            return Err(ApiError::new(
                veil_common::ErrorKind::Conflict,
                "upload_id_in_use",
                format!("an upload named `{id}` is already tracked"),
            ));
        }
        if tracked.keys().filter(|(u, _)| u == user).count() >= PER_USER {
            return Err(ApiError::new(
                veil_common::ErrorKind::Conflict,
                "too_many_uploads",
                format!("at most {PER_USER} uploads are tracked per user; finished ones expire after ten minutes"),
            ));
        }
        let upload = Arc::new(Upload::new());
        tracked.insert(key, Arc::clone(&upload));
        Ok(upload)
    }

    /// Starts tracking the request `headers` name with [`UPLOAD_ID_HEADER`], if they name one.
    ///
    /// # Errors
    /// A name that is not text; as [`Uploads::begin`].
    pub fn named(&self, user: &str, headers: &axum::http::HeaderMap) -> Result<Option<Arc<Upload>>, ApiError> {
        let Some(id) = headers.get(UPLOAD_ID_HEADER) else { return Ok(None) };
        let id = id.to_str().map_err(|_| ApiError::bad_request("invalid_upload_id", "the upload id is not text"))?;
        self.begin(user, id).map(Some)
    }

    /// `user`'s upload `id`, if tracked.
    pub fn get(&self, user: &str, id: &str) -> Option<Arc<Upload>> {
        let tracked = self.tracked.lock().ok()?;
        tracked.get(&(user.to_owned(), id.to_owned())).filter(|u| !u.expired(Instant::now())).cloned()
    }
}

/// Marks an upload failed when dropped unless it was finished first: a registration refused or
/// failing half-way, by whatever path, is not left "reading".
pub struct Finishing(pub Option<Arc<Upload>>);

impl Finishing {
    /// Ends the upload as done.
    pub fn done(mut self) {
        if let Some(upload) = self.0.take() {
            upload.finish(true);
        }
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        if let Some(upload) = self.0.take() {
            upload.finish(false);
        }
    }
}
