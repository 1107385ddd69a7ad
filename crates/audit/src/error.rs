//! Errors of the audit log.

use std::path::{Path, PathBuf};

/// An audit log failure. When the log cannot write, nothing that needs a record may proceed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the log could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The signing key or an exported public key is unusable.
    #[error("audit key {}: {why}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The log on disk does not continue its own chain, so it is not appended to.
    #[error("the audit log is damaged in {} line {line}: {why}; run `veil audit verify` on a copy", segment.display())]
    Damaged {
        /// The segment file.
        segment: PathBuf,
        /// 1-based line in it.
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// An earlier write or sync failed; the log accepts nothing more until it is reopened.
    #[error("the audit log stopped after a failed write: {0}")]
    Stopped(String),
    /// The log was closed.
    #[error("the audit log is closed")]
    Closed,
    /// A record could not be encoded.
    #[error("an audit record could not be encoded: {0}")]
    Encode(String),
}

impl Error {
    /// A closure that wraps an I/O error with what was being done to `path`.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { action, path, source }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
