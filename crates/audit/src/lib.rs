//! The tamper-evident audit log (design §3–§4).
//!
//! Append-only segments of JSON lines in one directory. Every record carries the SHA-256 of the
//! record before it; every so often (and at shutdown) a checkpoint record carries an Ed25519
//! signature over the chain head. [`verify`] checks a copy offline with only the public key and
//! names the first record that was edited, removed, inserted or moved. [`AuditLog`] writes with
//! group commit: a caller's record is synced to disk before `append` returns, so a response that
//! waited for it is never lost to a crash.
//!
//! Records hold names, ids, codes, counts and the SQL as the analyst typed it; never a value read
//! from a dataset.

mod error;
mod keys;
mod log;
mod record;
mod search;
mod segment;
mod table;
mod verify;

pub use error::{Error, Result};
pub use keys::{PublicKey, SigningKey};
pub use log::{Appended, AuditLog, Options, Receipt};
pub use record::{Actor, Checkpoint, DatasetUse, Entry, GENESIS, Record, Stored, decode_line, encode_line};
pub use search::{Filter, Page, search};
pub use table::{schema, to_batch, to_parquet};
pub use verify::{Problem, Report, verify};

/// The action of checkpoint records.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";
