//! [`Error`]: why the broker refused or could not answer, as a kind, a stable code and a message
//! that is safe to show. Internal failures keep their detail for the log only.

use veil_common::ErrorKind;

/// A refusal or failure of the query use case.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    /// What only the audit record says (the kind of a runtime failure).
    audit: Option<String>,
    /// The kind of a runtime failure, as the audit record's `failure` field.
    failure: Option<&'static str>,
}

/// What a client is shown for any internal failure.
const INTERNAL_MESSAGE: &str = "internal error; the operator can find the details in the server log";

impl Error {
    /// An error of `kind` with a client-facing `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into(), audit: None, failure: None }
    }

    /// A malformed request.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, code, message)
    }

    /// A refused action.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// A failure on our side. `detail` is logged, never shown.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "internal error");
        Self::new(ErrorKind::Internal, "internal", INTERNAL_MESSAGE)
    }

    /// The coarse class, which a protocol maps to its status.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The kind of a runtime failure (`deadline`, `memory limit`, …), for the audit record.
    pub fn failure(&self) -> Option<&'static str> {
        self.failure
    }

    /// What the audit record says: the message, and what only the record may say (the kind of
    /// a runtime failure, never a value).
    pub fn audit_detail(&self) -> String {
        match &self.audit {
            Some(more) => format!("{}; {more}", self.message),
            None => self.message.clone(),
        }
    }

    /// Whether the query was refused (the caller's request), as opposed to failing on our side
    /// or in running: what the audit record calls `denied` rather than `failed`.
    pub fn is_refusal(&self) -> bool {
        !matches!(self.kind, ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Internal)
            && self.code != "query_failed"
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// Maps a domain crate's error: its kind and code, its message unless internal.
macro_rules! from_domain {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                match e.kind() {
                    ErrorKind::Internal => Error::internal(e),
                    kind => Error::new(kind, e.code(), e.to_string()),
                }
            }
        }
    )*};
}

from_domain!(veil_catalog::Error, veil_policy::Error);

impl From<veil_query::Error> for Error {
    fn from(e: veil_query::Error) -> Self {
        match e.kind() {
            ErrorKind::Internal => Error::internal(e),
            kind => {
                Error { audit: e.audit_detail(), failure: e.failure(), ..Error::new(kind, e.code(), e.to_string()) }
            }
        }
    }
}

impl From<veil_audit::Error> for Error {
    /// The audit log could not record the request: the answer is withheld (fail closed).
    fn from(e: veil_audit::Error) -> Self {
        tracing::error!(error = %e, "the audit log could not record a request; its answer is withheld");
        Error::new(
            ErrorKind::Unavailable,
            "audit_unavailable",
            "the audit log could not record this request, so its answer is withheld; the operator can find the details in the server log",
        )
    }
}
