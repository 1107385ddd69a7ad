//! Liveness, metrics and the fallback.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::auth::Caller;
use crate::authz;
use crate::dto::{ErrorBody, Health};
use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers and the catalogue can be read.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.blocking(|catalog| catalog.departments().map(|_| ())).await?;
    Ok(Json(Health { status: "ok".to_owned() }))
}

/// Prometheus metrics in the text exposition format, for administrators and auditors (a
/// scraper signs in with such a token): latencies and counts by route are other users'
/// activity and timing.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    authz::read_metrics(&state, &caller)?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render()))
}

/// Any other path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(veil_common::ErrorKind::NotFound, "not_found", "no such endpoint")
}

/// A known endpoint asked with a method it does not have: 405 with the error body every other
/// refusal has (it was empty).
pub(crate) async fn method_not_allowed() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = ApiError::new(
        veil_common::ErrorKind::InvalidRequest,
        "method_not_allowed",
        "this endpoint does not take this method; see /v1/openapi.json",
    )
    .into_response();
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}
