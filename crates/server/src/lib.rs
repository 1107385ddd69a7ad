//! Veil's REST API: an axum [`Router`] over the catalogue.
//!
//! **Architecture invariant:** this is the only crate that knows HTTP and JSON. Domain crates
//! return typed errors with an [`veil_common::ErrorKind`]; [`error::ApiError`] maps them to status
//! codes in one place, and masks internal failures from clients.
//!
//! **Architecture invariant:** every access decision is taken in [`authz`], never inline in a
//! handler, so that adding a route cannot skip it.
//!
//! # Layout
//! - [`state`]: shared state and server configuration.
//! - [`auth`]: the bearer-token extractor [`auth::Caller`].
//! - [`authz`]: who may do what.
//! - [`error`]: [`error::ApiError`] and its JSON form.
//! - [`dto`]: wire types (serde and OpenAPI live here, not in domain crates).
//! - `routes`: handlers, one module per resource.
//! - [`telemetry`]: request logging and Prometheus metrics.

#![warn(missing_docs)]

pub mod auth;
pub mod authz;
mod connections;
pub mod dto;
pub mod error;
pub mod flight;
pub mod logs;
mod openapi;
mod reference;
mod routes;
pub mod state;
pub mod telemetry;
pub mod uploads;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;

pub use connections::{SHUTDOWN_GRACE, Stop, raise_descriptor_limit};
pub use state::{AppState, ServerConfig, StartError, load_policy};

/// Largest JSON body any route but dataset upload accepts.
const MAX_JSON_BODY: usize = 1024 * 1024;
/// Largest `POST /v1/query` body accepted.
const MAX_QUERY_BODY: usize = 4 * 1024 * 1024;

/// The whole API as a router, ready to serve or to drive in tests with `oneshot`.
pub fn app(state: AppState) -> Router {
    let upload_limit = DefaultBodyLimit::max(state.config.max_upload_bytes);
    let v1 = Router::new()
        .route("/departments", post(routes::identity::departments_create).get(routes::identity::departments_list))
        .route("/users", post(routes::identity::users_create).get(routes::identity::users_list))
        .route("/users/{id}/tokens", post(routes::identity::tokens_create))
        .route("/users/{id}/tokens/{token_id}", delete(routes::identity::tokens_revoke))
        .route("/whoami", get(routes::identity::whoami))
        .route("/datasets/draft", post(routes::datasets::datasets_draft).layer(upload_limit))
        .route(
            "/datasets",
            post(routes::datasets::datasets_register).layer(upload_limit).get(routes::datasets::datasets_list),
        )
        .route("/uploads/{id}", get(routes::datasets::uploads_show))
        .route("/datasets/{dataset}", get(routes::datasets::datasets_show).delete(routes::datasets::datasets_retire))
        .route("/datasets/{dataset}/access", get(routes::datasets::datasets_access))
        .route(
            "/access-requests",
            post(routes::access::access_requests_create).get(routes::access::access_requests_list),
        )
        .route("/access-requests/{id}/approve", post(routes::access::access_requests_approve))
        .route("/access-requests/{id}/reject", post(routes::access::access_requests_reject))
        .route("/access-requests/{id}/revise", post(routes::access::access_requests_revise))
        .route("/access-requests/{id}/revoke", post(routes::access::access_requests_revoke))
        .route("/admin/policy/reload", post(routes::policy::policy_reload))
        // A longer body than other JSON, so that an over-long query gets the query layer's
        // own clear refusal (`sql_too_long`) rather than a bare 413.
        .route("/query", post(routes::query::query).layer(DefaultBodyLimit::max(MAX_QUERY_BODY)))
        .route("/budget", get(routes::budget::budget_show))
        .route("/audit", get(routes::audit::audit_search))
        .route("/audit/export", get(routes::audit::audit_export))
        .route("/audit/verify", get(routes::audit::audit_verify))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(reference::reference))
        .method_not_allowed_fallback(routes::ops::method_not_allowed);
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(routes::ops::not_found)
        .method_not_allowed_fallback(routes::ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), telemetry::observe))
        .with_state(state)
}

/// How often the policy files are checked for changes.
const POLICY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the catalogue's pending audit records are looked at: a record whose own append
/// failed (the log could not write) goes to the log at the next look after it has waited a whole
/// period, without a restart.
const PENDING_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the API on `listener`, and Arrow Flight SQL on `flight` when given, until
/// `stop.begin` completes; then finishes in-flight requests (for at most `stop.grace`, or until
/// `stop.now`) and closes the audit log with a signed checkpoint. While it runs, the policy
/// files are reloaded when they change.
///
/// # Errors
/// An I/O error of the listener.
pub async fn run(
    listener: TcpListener,
    flight: Option<TcpListener>,
    state: AppState,
    stop: Stop<impl Future<Output = ()> + Send + 'static, impl Future<Output = ()> + Send + 'static>,
) -> std::io::Result<()> {
    use futures::FutureExt;
    let Stop { begin, now, grace } = stop;
    // Flight's requests get what is left of the grace once HTTP's connections are done.
    let begun = std::sync::Arc::new(std::sync::OnceLock::new());
    let begin = {
        let begun = std::sync::Arc::clone(&begun);
        Box::pin(async move {
            begin.await;
            let _ = begun.set(tokio::time::Instant::now());
        })
        .shared()
    };
    let now = Box::pin(now).shared();
    let watcher = tokio::spawn(routes::policy::watch(state.clone(), POLICY_POLL));
    let drainer = tokio::spawn(state::drain_pending(state.clone(), PENDING_POLL));
    let flight = flight.map(|l| tokio::spawn(flight::serve(l, state.clone(), begin.clone())));
    let audit = std::sync::Arc::clone(&state.audit);
    let served = connections::serve(listener, app(state), Stop { begin, now: now.clone(), grace }).await;
    if let Some(mut flight) = flight {
        let finished = tokio::select! {
            finished = &mut flight => Some(finished),
            () = now => None,
            () = tokio::time::sleep_until(begun.get().copied().unwrap_or_else(tokio::time::Instant::now) + grace) => None,
        };
        match finished {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => tracing::error!(error = %e, "flight sql failed"),
            Some(Err(e)) => tracing::error!(error = %e, "flight sql task failed"),
            None => flight.abort(),
        }
    }
    watcher.abort();
    drainer.abort();
    // Every request has finished, or was cut off at the end of the grace: sign the chain head
    // so the log ends on a checkpoint.
    if let Err(e) = audit.close().await {
        tracing::error!(error = %e, "the audit log could not be closed cleanly");
    }
    served
}
