//! Reloading the policy: on request, and when its files change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;

use crate::auth::Caller;
use crate::authz;
use crate::dto::{ErrorBody, ReloadView};
use crate::error::ApiError;
use crate::state::{AppState, now_unix};

/// Re-reads the policy files and reports the outcome as an event. On error the policy in force
/// stays in force.
pub(crate) async fn reload(state: &AppState, actor: Option<&veil_catalog::Principal>) -> Result<usize, ApiError> {
    let policy = Arc::clone(&state.policy);
    let result = tokio::task::spawn_blocking(move || policy.reload(now_unix()))
        .await
        .map_err(|e| ApiError::internal(format!("policy task failed: {e}")))?;
    match result {
        Ok(lines) => {
            state.event("policy.reload", actor, None, "ok", format!("{lines} policy lines in force")).await?;
            Ok(lines)
        }
        Err(e) => {
            state.event("policy.reload", actor, None, "error", format!("refused, previous policy kept: {e}")).await?;
            Err(e.into())
        }
    }
}

/// Reloads the policy files (admins). A malformed file is refused with its line number and the
/// policy in force stays in force.
#[utoipa::path(post, path = "/v1/admin/policy/reload", tag = "policy", security(("bearer" = [])),
    responses((status = 200, body = ReloadView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn policy_reload(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ReloadView>, ApiError> {
    authz::manage_policy(&state, &caller)?;
    let lines = reload(&state, Some(&caller)).await?;
    Ok(Json(ReloadView { lines }))
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls the policy files every `every` and reloads when their modification time or size
/// changes. Polling (rather than inotify) works the same on every file system, including
/// network mounts and files replaced by `git checkout`.
pub(crate) async fn watch(state: AppState, every: Duration) {
    let Some(files) = state.policy.files().cloned() else { return };
    let mut last = (stamp(&files.model), stamp(&files.policy));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = (stamp(&files.model), stamp(&files.policy));
        if now != last {
            last = now;
            match reload(&state, None).await {
                Ok(lines) => tracing::info!(lines, "policy files changed; reloaded"),
                Err(e) => {
                    tracing::warn!(code = e.code(), "policy files changed but were refused; the previous policy stays")
                }
            }
        }
    }
}
