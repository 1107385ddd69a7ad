//! [`ApiError`]: every failure of the API, and the one place where it becomes an HTTP response.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use veil_common::ErrorKind;

use crate::dto::{ErrorBody, ErrorDetail};

/// An error on its way to the client: a status, a stable code and a message that is safe to
/// show. Internal failures carry their detail only to the log.
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error of `kind` with a client-facing `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into() }
    }

    /// A malformed request (400).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, code, message)
    }

    /// A refused action (403).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// No or bad credentials (401).
    pub fn unauthenticated() -> Self {
        Self::new(ErrorKind::Unauthenticated, "unauthenticated", "a valid bearer token is required")
    }

    /// A failure on our side (500). `detail` is logged, never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "internal error");
        Self::new(
            ErrorKind::Internal,
            "internal",
            "internal error; the operator can find the details in the server log",
        )
    }

    /// The data directory's disk is full (507): said plainly, without the path or the cause.
    pub fn storage_full(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "the data directory's disk is full");
        Self::new(
            ErrorKind::StorageFull,
            "storage_full",
            "the server's disk is full: nothing was stored; try again once the operator has made room",
        )
    }

    /// An I/O failure on our side: [`ApiError::storage_full`] when the disk is full, else
    /// [`ApiError::internal`].
    pub fn io(e: std::io::Error) -> Self {
        if veil_common::is_storage_full(&e) { Self::storage_full(e) } else { Self::internal(e) }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The coarse class, which each protocol maps to its status.
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
}

impl From<veil_catalog::Error> for ApiError {
    fn from(e: veil_catalog::Error) -> Self {
        match e.kind() {
            ErrorKind::Internal => ApiError::internal(e),
            ErrorKind::StorageFull => ApiError::storage_full(e),
            kind => ApiError::new(kind, e.code(), e.to_string()),
        }
    }
}

impl From<veil_policy::Error> for ApiError {
    fn from(e: veil_policy::Error) -> Self {
        match e.kind() {
            ErrorKind::Internal => ApiError::internal(e),
            kind => ApiError::new(kind, e.code(), e.to_string()),
        }
    }
}

impl From<veil_broker::Error> for ApiError {
    /// The broker has masked internal failures and logged their detail already.
    fn from(e: veil_broker::Error) -> Self {
        ApiError::new(e.kind(), e.code(), e.message())
    }
}

impl From<veil_audit::Error> for ApiError {
    /// The audit log could not record the request: the answer is withheld (fail closed).
    fn from(e: veil_audit::Error) -> Self {
        tracing::error!(error = %e, "the audit log could not record a request; its answer is withheld");
        ApiError::new(
            ErrorKind::Unavailable,
            "audit_unavailable",
            "the audit log could not record this request, so its answer is withheld; the operator can find the details in the server log",
        )
    }
}

impl From<veil_ingest::Error> for ApiError {
    fn from(e: veil_ingest::Error) -> Self {
        veil_catalog::Error::from(e).into()
    }
}

/// An error response's code and message, kept on the response for the audit trail.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let refusal = Refusal { code: self.code, message: body.error.message.clone() };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(refusal);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
