//! Handlers, one module per resource.

pub(crate) mod access;
pub(crate) mod audit;
pub(crate) mod budget;
pub(crate) mod datasets;
pub(crate) mod identity;
pub(crate) mod ops;
pub(crate) mod policy;
pub(crate) mod query;

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;

use crate::error::ApiError;

/// `axum::Json`, with its rejections in Veil's error format.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct AppJson<T>(pub(crate) T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                veil_common::ErrorKind::PayloadTooLarge,
                "body_too_large",
                "the request body is too large",
            );
        }
        ApiError::bad_request("invalid_json", rejection.body_text())
    }
}
