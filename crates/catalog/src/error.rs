//! Errors of the catalogue.

use std::path::PathBuf;

use veil_common::{DatasetRef, DepartmentId, ErrorKind, IdError, UserId};

/// A catalogue failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is not an initialised Veil data directory.
    #[error("{} is not a Veil data directory (run `veil init` first)", .0.display())]
    NotInitialized(PathBuf),
    /// `init` was pointed at a directory that is not empty.
    #[error("{} already exists and is not empty; nothing was changed", .0.display())]
    DirectoryNotEmpty(PathBuf),
    /// `init` would overwrite an existing token file.
    #[error("{} already exists; refusing to overwrite it, nothing was changed", .0.display())]
    TokenFileExists(PathBuf),
    /// The catalogue was written by a newer Veil.
    #[error("the catalogue has schema version {found}, this Veil knows up to {supported}: upgrade Veil")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A file in the data directory could not be read or written.
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
    /// SQLite failed.
    #[error("catalogue database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A name that breaks the naming rules.
    #[error(transparent)]
    BadName(#[from] IdError),
    /// Dataset metadata that is refused; `code` is stable, `message` names the column or field.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code, e.g. `untagged_column`.
        code: &'static str,
        /// What is wrong and where.
        message: String,
    },
    /// A department with this id exists.
    #[error("department `{0}` already exists")]
    DepartmentExists(DepartmentId),
    /// A department named in a request does not exist.
    #[error("department `{0}` does not exist")]
    DepartmentNotFound(DepartmentId),
    /// A user with this id exists.
    #[error("user `{0}` already exists")]
    UserExists(UserId),
    /// A user named in a request does not exist.
    #[error("user `{0}` does not exist")]
    UserNotFound(UserId),
    /// A token named in a request does not exist.
    #[error("token `{0}` does not exist")]
    TokenNotFound(String),
    /// A dataset named in a request does not exist (or is retired).
    #[error("dataset `{0}` does not exist")]
    DatasetNotFound(DatasetRef),
    /// An access request named in a request does not exist.
    #[error("access request `{0}` does not exist")]
    AccessRequestNotFound(String),
    /// An access request is not in a state that allows the action.
    #[error("access request `{id}` is {state}; {action} needs it to be {needed}")]
    AccessRequestState {
        /// The request.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
        /// The state the action needs.
        needed: &'static str,
    },
    /// A path given for server-side import is refused.
    #[error("{0}")]
    ImportPath(String),
    /// A dp query would spend more epsilon on a dataset than the analyst has left.
    #[error(
        "dataset `{dataset}`: this query costs epsilon {asked}, and {left:.4} of the {cap} allowed in the budget window is left"
    )]
    BudgetExceeded {
        /// The dataset whose budget is short.
        dataset: DatasetRef,
        /// The epsilon the query costs.
        asked: f64,
        /// The epsilon left.
        left: f64,
        /// The cap.
        cap: f64,
    },
    /// A grouped dp query would spend more delta on a dataset than the window allows.
    #[error(
        "dataset `{dataset}`: the {cap} of delta allowed in the budget window for releasing groups is spent; an answer without GROUP BY, or grouped only by columns with public values, spends none"
    )]
    DeltaExceeded {
        /// The dataset whose budget is short.
        dataset: DatasetRef,
        /// The cap.
        cap: f64,
    },
    /// The uploaded file could not be ingested.
    #[error(transparent)]
    Ingest(#[from] veil_ingest::Error),
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            _ if self.is_disk_full() => ErrorKind::StorageFull,
            Error::NotInitialized(_)
            | Error::DirectoryNotEmpty(_)
            | Error::TokenFileExists(_)
            | Error::SchemaTooNew { .. }
            | Error::Io { .. }
            | Error::Sqlite(_) => ErrorKind::Internal,
            Error::BadName(_) | Error::ImportPath(_) => ErrorKind::InvalidRequest,
            Error::Invalid { .. } => ErrorKind::Unprocessable,
            Error::DepartmentExists(_) | Error::UserExists(_) | Error::AccessRequestState { .. } => ErrorKind::Conflict,
            Error::BudgetExceeded { .. } | Error::DeltaExceeded { .. } => ErrorKind::Forbidden,
            Error::AccessRequestNotFound(_) => ErrorKind::NotFound,
            Error::DepartmentNotFound(_)
            | Error::UserNotFound(_)
            | Error::TokenNotFound(_)
            | Error::DatasetNotFound(_) => ErrorKind::NotFound,
            Error::Ingest(e) => e.kind(),
        }
    }

    /// A stable machine-readable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            _ if self.is_disk_full() => "storage_full",
            Error::Invalid { code, .. } => code,
            Error::Ingest(e) => e.code(),
            Error::BadName(_) => "invalid_name",
            Error::ImportPath(_) => "import_path_refused",
            Error::DepartmentExists(_) => "department_exists",
            Error::DepartmentNotFound(_) => "department_not_found",
            Error::UserExists(_) => "user_exists",
            Error::UserNotFound(_) => "user_not_found",
            Error::TokenNotFound(_) => "token_not_found",
            Error::DatasetNotFound(_) => "dataset_not_found",
            Error::AccessRequestNotFound(_) => "access_request_not_found",
            Error::AccessRequestState { .. } => "access_request_state",
            Error::BudgetExceeded { .. } | Error::DeltaExceeded { .. } => "budget_exceeded",
            Error::NotInitialized(_)
            | Error::DirectoryNotEmpty(_)
            | Error::TokenFileExists(_)
            | Error::SchemaTooNew { .. }
            | Error::Io { .. }
            | Error::Sqlite(_) => "internal",
        }
    }

    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid { code, message: message.into() }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}

impl Error {
    /// Whether the catalogue's own write failed for a full disk (a file, or SQLite's
    /// `SQLITE_FULL`); ingest's errors say so themselves.
    fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => veil_common::is_storage_full(source),
            Error::Sqlite(e) => {
                veil_common::is_storage_full(e)
                    || matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
            }
            _ => false,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
