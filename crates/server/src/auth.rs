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
        let token = bearer(parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()));
        let principal = state.authenticate(token).await?;
        let _ = crate::state::REQUEST.try_with(|request| {
            if let Ok(mut actor) = request.actor.lock() {
                *actor = Some(crate::state::actor(&principal));
            }
        });
        Ok(Caller(principal))
    }
}

/// The token of an `authorization: Bearer …` header value, in HTTP and in gRPC metadata alike.
pub(crate) fn bearer(header: Option<&str>) -> Option<String> {
    header.and_then(|v| v.strip_prefix("Bearer ")).map(|t| t.trim().to_owned())
}

impl AppState {
    /// The principal of a bearer token, for every protocol. A missing, malformed, unknown or
    /// revoked token is refused alike (401), and the refusal recorded.
    pub(crate) async fn authenticate(&self, token: Option<String>) -> Result<Principal, ApiError> {
        let Some(token) = token else {
            self.event("auth.failed", None, None, "denied", "no bearer token").await?;
            return Err(ApiError::unauthenticated());
        };
        let principal = self.blocking(move |catalog| catalog.authenticate(&token)).await?;
        self.metrics.auth(principal.is_some());
        match principal {
            Some(p) => Ok(p),
            None => {
                self.event("auth.failed", None, None, "denied", "invalid bearer token").await?;
                Err(ApiError::unauthenticated())
            }
        }
    }
}
