//! Why a query did not produce an answer. Messages name SQL constructs and columns, never a
//! value read from a dataset; a failure while running is one generic error for every cause
//! that could depend on data.

use datafusion::common::DataFusionError;
use veil_common::ErrorKind;
use veil_guard::{Violation, violation};

/// A query failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL is not one read-only query, does not parse, or is too long.
    #[error("{message}")]
    Sql {
        /// Stable code.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A table that is not a registered dataset.
    #[error("unknown dataset `{0}`: name datasets as department.dataset, as the catalogue lists them")]
    UnknownDataset(String),
    /// The query does not plan: an unknown column, a type mismatch.
    #[error("{0}")]
    Plan(String),
    /// The privacy guard refused the query.
    #[error("{}", .0.message)]
    Denied(Violation),
    /// The query needed more memory than one query may use.
    #[error(
        "the query needs more memory than it may use ({limit_mb} MiB per query, less while other queries run, and its spill space); aggregate more or read fewer columns"
    )]
    MemoryExceeded {
        /// The limit, in MiB.
        limit_mb: usize,
    },
    /// The answer has more rows than one answer may hold.
    #[error("the answer has more than {limit} rows; aggregate more or add LIMIT")]
    ResultTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The query ran past its deadline and was cancelled.
    #[error("the query did not finish within {seconds} s and was cancelled")]
    Timeout {
        /// The deadline, in seconds.
        seconds: u64,
    },
    /// The query failed while running. Deliberately without detail: which row failed, and
    /// why, or that it ran out of memory or time, could depend on data.
    #[error(
        "the query failed while running (an expression failed, or it ran out of memory or time); no detail is given because it could reveal data: narrow it, aggregate more or read fewer columns"
    )]
    Failed {
        /// The kind of failure (`arrow error`, `memory limit`, …), for the audit record only:
        /// never a message, which could quote a value.
        kind: &'static str,
    },
    /// A query over a table without personal data (the audit log, for auditors) failed while
    /// running; the cause is safe to show there.
    #[error("the query failed while running: {0}")]
    FailedUnguarded(String),
    /// A failure on our side.
    #[error("internal query error: {0}")]
    Internal(String),
}

impl Error {
    /// The coarse class, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Sql { .. } | Error::Plan(_) => ErrorKind::InvalidRequest,
            Error::UnknownDataset(_) => ErrorKind::NotFound,
            Error::Denied(v) if v.rule == veil_guard::Rule::UnsupportedSql => ErrorKind::InvalidRequest,
            Error::Denied(_) => ErrorKind::Forbidden,
            Error::MemoryExceeded { .. } | Error::Failed { .. } | Error::FailedUnguarded(_) => ErrorKind::Unprocessable,
            Error::ResultTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Sql { code, .. } => code,
            Error::UnknownDataset(_) => "unknown_dataset",
            Error::Plan(_) => "sql_invalid",
            Error::Denied(v) => v.rule.code(),
            Error::MemoryExceeded { .. } => "query_memory_exceeded",
            Error::ResultTooLarge { .. } => "result_too_large",
            Error::Timeout { .. } => "query_timeout",
            Error::Failed { .. } | Error::FailedUnguarded(_) => "query_failed",
            Error::Internal(_) => "internal",
        }
    }

    /// What the audit record adds to the message: the kind of a runtime failure, which the
    /// response does not show.
    pub fn audit_detail(&self) -> Option<String> {
        self.failure().map(|kind| format!("failed while running ({kind})"))
    }

    /// The kind of a runtime failure (`deadline`, `memory limit`, `expression`, …), for the
    /// audit record's `failure` field and the failure metrics; the response does not show it.
    pub fn failure(&self) -> Option<&'static str> {
        match self {
            Error::Failed { kind } => Some(kind),
            _ => None,
        }
    }

    /// The error as told to the caller. Over personal data, running out of memory or past the
    /// deadline is one more failure while running, since whether a query does can depend on
    /// one person's rows (a self-join that only grows when they exist); the audit record keeps
    /// which it was.
    pub(crate) fn told(self, over_personal_data: bool) -> Self {
        match self {
            Error::MemoryExceeded { .. } if over_personal_data => Error::Failed { kind: "memory limit" },
            Error::Timeout { .. } if over_personal_data => Error::Failed { kind: "deadline" },
            other => other,
        }
    }

    pub(crate) fn sql(code: &'static str, message: impl Into<String>) -> Self {
        Error::Sql { code, message: message.into() }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A planning failure: the guard's refusal, or a message about the SQL (unknown column, type
/// mismatch). Planning reads no data, so its messages carry none.
pub(crate) fn planning(e: DataFusionError) -> Error {
    if let Some(v) = violation(&e) {
        return Error::Denied(v.clone());
    }
    match e.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::SQL(..) => Error::Plan(clean(&e)),
        _ => internal(e),
    }
}

/// An optimizer failure: as [`planning`], and also a constant the optimizer could not fold (a
/// pattern that is no regular expression, a literal that does not cast): the logical optimizer
/// reads no data, so its message quotes only the query. These were a 500 (a red team).
pub(crate) fn optimizing(e: DataFusionError) -> Error {
    if violation(&e).is_none()
        && matches!(
            e.find_root(),
            DataFusionError::Execution(_) | DataFusionError::ArrowError(..) | DataFusionError::External(_)
        )
    {
        return Error::Plan(clean(&e));
    }
    planning(e)
}

/// A planning message for the analyst: without DataFusion's error-class prefixes and without
/// its plea to report a bug in DataFusion (a function called with the wrong argument types is
/// an "internal error" there, but the analyst's SQL to fix here).
pub(crate) fn clean(e: &DataFusionError) -> String {
    const BUG_REPORT: &str = "This issue was likely caused by a bug in DataFusion's code. Please help us to resolve this by filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues";
    let text = e.find_root().to_string();
    let text = text.split("\nbacktrace").next().unwrap_or(&text);
    let mut text = text
        .replace(&format!("{BUG_REPORT}. "), "")
        .replace(BUG_REPORT, "")
        .replace("..\n", ". ")
        .replace("Internal error: ", "");
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "SQL error: ",
        "External error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest.to_owned();
            break;
        }
    }
    text.trim().to_owned()
}

/// Whether the query ran out of its memory pool, or of spill space once it spilled. DataFusion
/// reports the latter only as an I/O error with a fixed text (no data in it), so that text is
/// what identifies it.
pub(crate) fn is_resource_limit(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => true,
        DataFusionError::ArrowError(inner, _) => {
            matches!(&**inner, datafusion::arrow::error::ArrowError::IoError(msg, _) if msg.contains("spilling process has exceeded"))
        }
        _ => false,
    }
}

pub(crate) fn error_kind(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::ArrowError(..) => "arrow error",
        DataFusionError::Execution(_) => "execution error",
        DataFusionError::IoError(_) => "io error",
        DataFusionError::External(_) => "external error",
        _ => "other error",
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planning_message_has_no_plea_to_report_a_datafusion_bug() {
        let e = DataFusionError::Plan(
            "Internal error: Function 'substr' failed to match any signature, errors: Error during planning: Function 'substr' requires Int64, but received Float64 (DataType: Float64)..\nThis issue was likely caused by a bug in DataFusion's code. Please help us to resolve this by filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues. No function matches the given name and argument types 'substr(Utf8View, Int64, Float64)'.".into(),
        );
        let text = clean(&e);
        assert!(!text.contains("Internal error") && !text.contains("bug report") && !text.contains("github"), "{text}");
        assert!(text.starts_with("Function 'substr' failed to match any signature"), "{text}");
        assert!(text.contains("(DataType: Float64). No function matches"), "{text}");
    }
}
