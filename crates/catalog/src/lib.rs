//! The catalogue: everything Veil knows about departments, users, tokens and datasets, and the
//! data directory that holds it.
//!
//! One data directory holds everything, so `veil serve` needs nothing else to start:
//!
//! ```text
//! DATA_DIR/
//!   catalog.db                    SQLite: departments, users, token tags, datasets, versions, columns
//!   keys/token.key                HMAC key for token tags (owner-only)
//!   keys/pseudonym.key            HMAC key for pseudonyms in de-identified results (owner-only)
//!   datasets/<dept>/<name>/<uuid>.parquet   immutable dataset versions
//!   extracts/<request id>.parquet            immutable de-identified extracts
//!   tmp/                          uploads and half-written versions; emptied at every open
//! ```
//!
//! **Invariant:** a dataset version is visible only after its Parquet file is complete, fsynced
//! and renamed into place *and* the catalogue transaction that names it has committed. A crash
//! between the two leaves an orphan file, which [`Catalog::open`] removes.
//!
//! The catalogue API is synchronous (SQLite and file I/O); async callers run it on a blocking
//! thread.
//!
//! # Layout
//! - [`layout`]: paths inside the data directory, and `init`.
//! - `schema`: versioned migrations.
//! - [`identity`]: departments, users, tokens and authentication.
//! - [`spec`]: dataset metadata as a steward declares it, and its validation.
//! - [`datasets`]: registration, listing, retirement.
//! - [`access`]: access requests and the grants they become.
//! - [`extracts`]: de-identified extracts and the requests that name them.

#![warn(missing_docs)]

pub mod access;
pub mod budget;
pub mod datasets;
pub mod draft;
mod error;
pub mod extracts;
pub mod identity;
pub mod layout;
pub mod outbox;
mod schema;
pub mod spec;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use ring::hmac;
use rusqlite::Connection;

pub use access::{AccessRequest, NewRequest, RequestFilter, RequestState, Transition};
pub use budget::{Cap, Charge, Ledger, Spent};
pub use datasets::{CappedRows, Checked, ColumnInfo, DatasetInfo, PERSONAL_EPSILON_CAP, VersionInfo, resolve_import};
pub use error::{Error, Result};
pub use extracts::{ExtractInfo, ExtractPart, NewExtract, ReleasedSources, check_extract_name};
pub use identity::{Department, IssuedToken, Principal, User};
pub use layout::{DataDir, init};
pub use outbox::Pending;
pub use spec::{ColumnInput, ColumnSpec, DatasetSpec, DpInput, DpSettings, MetadataInput};

/// An open catalogue over one data directory.
pub struct Catalog {
    dir: DataDir,
    /// One connection, serialised: catalogue writes are small and SQLite allows one writer at a
    /// time anyway. Long work (ingesting a file) happens outside the lock.
    conn: Mutex<Connection>,
    /// Key for token tags: a stolen `catalog.db` alone does not let anyone test token guesses.
    token_key: hmac::Key,
    /// Broker secret for pseudonyms; never leaves this struct, only keys derived from it do.
    pseudonym_key: hmac::Key,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("dir", &self.dir.root()).finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens the catalogue of an initialised data directory: applies pending migrations, empties
    /// `tmp/` and removes dataset files that no committed version names.
    ///
    /// # Errors
    /// [`Error::NotInitialized`] when `root` is not a Veil data directory,
    /// [`Error::SchemaTooNew`] when a newer Veil wrote it, or an I/O or SQLite failure.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = DataDir::existing(root)?;
        let mut conn = schema::connect(&dir.catalog_db())?;
        schema::migrate(&mut conn)?;
        let token_key = layout::read_key(&dir.token_key())?;
        if !dir.pseudonym_key().is_file() {
            // Data directories made before pseudonyms existed get their key on first open.
            layout::write_secret_file(&dir.pseudonym_key(), &layout::random_bytes::<32>()?)?;
        }
        let pseudonym_key = layout::read_key(&dir.pseudonym_key())?;
        let catalog = Self { dir, conn: Mutex::new(conn), token_key, pseudonym_key };
        catalog.sweep()?;
        catalog.sweep_extracts()?;
        Ok(catalog)
    }

    /// The key for pseudonyms in one scope (an analyst and the grants a query uses): the
    /// HMAC of the scope under the broker secret, so two scopes' pseudonyms cannot be linked.
    pub fn pseudonym_key(&self, scope: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.pseudonym_key, scope.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(&tag.as_ref()[..32]);
        key
    }

    /// The data directory this catalogue lives in.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (every write is a
        // transaction), so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The current time as stored in the catalogue: RFC 3339, UTC.
pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}
