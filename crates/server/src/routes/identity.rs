//! Departments, users and tokens (admin), and `whoami`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use veil_common::{DepartmentId, Role, UserId};

use super::AppJson;
use crate::auth::Caller;
use crate::authz;
use crate::dto::{DepartmentView, ErrorBody, NewDepartment, NewUser, TokenView, UserView};
use crate::error::ApiError;
use crate::state::{AppState, entry_by, for_this_request};

fn parse_user(id: &str) -> Result<UserId, ApiError> {
    UserId::new(id).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

/// Creates a department (admin).
#[utoipa::path(post, path = "/v1/departments", tag = "identity", request_body = NewDepartment,
    security(("bearer" = [])),
    responses((status = 201, body = DepartmentView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn departments_create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppJson(body): AppJson<NewDepartment>,
) -> Result<(StatusCode, Json<DepartmentView>), ApiError> {
    authz::manage_identity(&state, &caller)?;
    let id = DepartmentId::new(body.id).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let mut entry = for_this_request(entry_by(&caller, "department.create", "ok"));
    entry.target = Some(id.to_string());
    entry.detail = Some(body.name.trim().to_owned()).filter(|d| !d.is_empty());
    let record = serde_json::to_string(&entry).ok();
    let (department, pending) = state.blocking(move |c| c.create_department_recorded(&id, &body.name, record)).await?;
    state.audit_pending(pending).await?;
    Ok((StatusCode::CREATED, Json(department.into())))
}

/// Lists departments (anyone signed in).
#[utoipa::path(get, path = "/v1/departments", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = [DepartmentView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn departments_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<DepartmentView>>, ApiError> {
    authz::read_catalogue(&state, &caller)?;
    let departments = state.blocking(|c| c.departments()).await?;
    Ok(Json(departments.into_iter().map(Into::into).collect()))
}

/// Creates a user with a department and roles (admin).
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = NewUser, security(("bearer" = [])),
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn users_create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppJson(body): AppJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    authz::manage_identity(&state, &caller)?;
    let id = parse_user(&body.id)?;
    let department = body
        .department
        .map(DepartmentId::new)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let roles = body
        .roles
        .iter()
        .map(|r| r.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(veil_common::ErrorKind::Unprocessable, "unknown_role", e.to_string()))?;
    let mut entry = for_this_request(entry_by(&caller, "user.create", "ok"));
    entry.target = Some(id.to_string());
    let record = move |user: &veil_catalog::User| {
        let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        entry.detail = Some(format!("roles {}", roles.join(",")));
        serde_json::to_string(&entry).ok()
    };
    let (user, pending) =
        state.blocking(move |c| c.create_user_recorded(&id, department.as_ref(), &roles, record)).await?;
    state.audit_pending(pending).await?;
    state.refresh_policy().await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Lists users (admin).
#[utoipa::path(get, path = "/v1/users", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn users_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    authz::manage_identity(&state, &caller)?;
    let users = state.blocking(|c| c.users()).await?;
    Ok(Json(users.into_iter().map(Into::into).collect()))
}

/// Issues a token for a user (admin). The token is in this response only.
#[utoipa::path(post, path = "/v1/users/{id}/tokens", tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 201, body = TokenView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn tokens_create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    authz::manage_identity(&state, &caller)?;
    let id = parse_user(&id)?;
    let mut entry = for_this_request(entry_by(&caller, "token.create", "ok"));
    entry.target = Some(id.to_string());
    let record = move |token: &str| {
        entry.detail = Some(format!("token {token}"));
        serde_json::to_string(&entry).ok()
    };
    let (issued, pending) = state.blocking(move |c| c.issue_token_recorded(&id, record)).await?;
    state.audit_pending(pending).await?;
    Ok((StatusCode::CREATED, Json(TokenView { id: issued.id, token: issued.token })))
}

/// Revokes a token (admin); it stops working at once.
#[utoipa::path(delete, path = "/v1/users/{id}/tokens/{token_id}", tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id"), ("token_id" = String, Path, description = "token id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn tokens_revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authz::manage_identity(&state, &caller)?;
    let id = parse_user(&id)?;
    let mut entry = for_this_request(entry_by(&caller, "token.revoke", "ok"));
    entry.target = Some(id.to_string());
    entry.detail = Some(format!("token {token_id}"));
    let record = serde_json::to_string(&entry).ok();
    let pending = state.blocking(move |c| c.revoke_token(&id, &token_id, record)).await?;
    state.audit_pending(pending).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/whoami", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(Caller(caller): Caller) -> Json<UserView> {
    Json(UserView {
        id: caller.user.to_string(),
        department: caller.department.map(|d| d.to_string()),
        roles: caller.roles.iter().map(|r| r.to_string()).collect(),
        created_at: None,
    })
}
