//! Authentication: the bearer token on a request, resolved to a [`Principal`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use veil_catalog::Principal;

use crate::error::ApiError;
use crate::state::AppState;

/// The signed-in caller. Extracting it fails with 401 for a missing, malformed, unknown or
/// revoked token, all alike.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let Some(token) = token else {
            state.event("auth.failed", None, None, "denied", "no bearer token").await?;
            return Err(ApiError::unauthenticated());
        };
        let principal = state.blocking(move |catalog| catalog.authenticate(&token)).await?;
        state.metrics.auth(principal.is_some());
        match principal {
            Some(p) => {
                let _ = crate::state::REQUEST.try_with(|request| {
                    if let Ok(mut actor) = request.actor.lock() {
                        *actor = Some(crate::state::actor(&p));
                    }
                });
                Ok(Caller(p))
            }
            None => {
                state.event("auth.failed", None, None, "denied", "invalid bearer token").await?;
                Err(ApiError::unauthenticated())
            }
        }
    }
}
