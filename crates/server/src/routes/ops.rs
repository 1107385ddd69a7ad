//! Liveness, metrics and the fallback.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::auth::Caller;
use crate::authz;
use crate::dto::{ErrorBody, Health, Readiness};
use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers and the catalogue can be read.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    catalogue_readable(&state).await?;
    Ok(Json(Health { status: "ok".to_owned() }))
}

/// Whether the catalogue answers a read: liveness and readiness ask the same.
async fn catalogue_readable(state: &AppState) -> Result<(), ApiError> {
    state.blocking(|catalog| catalog.departments().map(|_| ())).await
}

/// The least free space on the data directory's disk for the server to call itself ready: a
/// registration or an audit segment needs room, and 507s are better seen coming.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// Readiness: the catalogue can be read, the audit log can write (its last write did not fail),
/// and the data directory's disk has room. 503 with the same body when any is not so.
/// Unauthenticated like `/healthz`, so it says only ok or not per part: no reasons, paths or
/// numbers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let catalogue = match catalogue_readable(&state).await {
        Ok(()) => "ok",
        Err(_) => "cannot read",
    };
    let audit = if state.audit.failing().is_some() { "cannot write" } else { "ok" };
    let dir = state.catalog.dir().root().to_path_buf();
    let free =
        tokio::task::spawn_blocking(move || rustix::fs::statvfs(&dir).map(|s| s.f_bavail.saturating_mul(s.f_frsize)))
            .await;
    let disk = match free {
        Ok(Ok(bytes)) if bytes >= MIN_FREE_BYTES => "ok",
        Ok(Ok(_)) => "low",
        _ => "unknown",
    };
    let ready = catalogue == "ok" && audit == "ok" && disk == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" }.into(),
        catalogue: catalogue.into(),
        audit: audit.into(),
        disk: disk.into(),
    };
    (status, Json(body))
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
    state.metrics.refresh(state.broker.spills());
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
