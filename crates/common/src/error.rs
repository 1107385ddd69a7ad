//! The coarse error classes that every crate's error type maps to.

/// What kind of failure an error is, independent of which crate raised it.
///
/// Each crate's `Error` has a `kind()` returning one of these; the server maps kinds to HTTP
/// status codes in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed (bad JSON, a missing part, a bad name): HTTP 400.
    InvalidRequest,
    /// The request is well formed but its content is refused (an unknown tag, a file that does not
    /// match its metadata, a row that does not parse): HTTP 422.
    Unprocessable,
    /// No valid credentials: HTTP 401.
    Unauthenticated,
    /// Valid credentials, but not allowed: HTTP 403.
    Forbidden,
    /// The thing named does not exist (or is invisible to the caller): HTTP 404.
    NotFound,
    /// The thing being created exists already: HTTP 409.
    Conflict,
    /// None of the answer formats the client accepts can be produced: HTTP 406.
    NotAcceptable,
    /// The request body, or the answer, is larger than the configured limit: HTTP 413.
    PayloadTooLarge,
    /// The work did not finish before its deadline: HTTP 504.
    Timeout,
    /// A part the request depends on cannot work right now (the audit log cannot write): HTTP 503.
    Unavailable,
    /// A bug or an I/O failure on our side: HTTP 500, with the detail logged, not returned.
    Internal,
}
