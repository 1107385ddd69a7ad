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
    /// The data directory's disk is full: HTTP 507. Nothing was stored; the same request works
    /// once the operator has made room.
    StorageFull,
    /// A bug or an I/O failure on our side: HTTP 500, with the detail logged, not returned.
    Internal,
}

/// Whether `error`, or an error it was caused by, is the disk being full (or the quota spent).
///
/// The source chain is walked for an `std::io::Error` of kind `StorageFull` or `QuotaExceeded`;
/// where a library kept only the text of the I/O error (Parquet's writer does), the operating
/// system's message for ENOSPC or EDQUOT is recognised instead.
pub fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        next = e.source();
    }
    let text = error.to_string();
    text.contains("(os error 28)") || text.contains("(os error 122)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("writing failed")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn a_full_disk_is_recognised_through_causes_and_in_kept_text() {
        let full = std::io::Error::from_raw_os_error(28);
        assert!(is_storage_full(&Wrapper(full)));
        let text = std::io::Error::other(format!("parquet: {}", std::io::Error::from_raw_os_error(28)));
        assert!(is_storage_full(&text));
        assert!(!is_storage_full(&Wrapper(std::io::Error::from_raw_os_error(13))));
    }
}
