//! Access requests: analysts ask, stewards of the dataset's department decide.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use veil_audit::{DatasetUse, Entry};
use veil_catalog::{AccessRequest, NewRequest, Principal, RequestState, Transition};
use veil_common::{DatasetRef, ErrorKind, Mode};

use super::AppJson;
use crate::auth::Caller;
use crate::authz;
use crate::dto::{AccessRequestView, DecisionReason, ErrorBody, ExtractRevisionInput, ExtractView, NewAccessRequest};
use crate::error::ApiError;
use crate::state::{AppState, entry_by, now_unix, this_request_id};
use crate::uploads::{Finishing, Stage, Upload};

/// Asks for a mode on a dataset, with a purpose and an expiry (analysts).
#[utoipa::path(post, path = "/v1/access-requests", tag = "access", request_body = NewAccessRequest, security(("bearer" = [])),
    responses((status = 201, body = AccessRequestView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn access_requests_create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: axum::http::HeaderMap,
    AppJson(body): AppJson<NewAccessRequest>,
) -> Result<(StatusCode, Json<AccessRequestView>), ApiError> {
    let department = authz::request_access(&state, &caller)?;
    let dataset: DatasetRef =
        body.dataset.parse().map_err(|e: veil_common::IdError| ApiError::bad_request("invalid_name", e.to_string()))?;
    let mode: Mode = body.mode.parse().map_err(|e: veil_common::mode::UnknownMode| {
        ApiError::new(ErrorKind::Unprocessable, "unknown_mode", e.to_string())
    })?;
    let expires_at = time::OffsetDateTime::parse(&body.expires_at, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::new(
                ErrorKind::Unprocessable,
                "invalid_expiry",
                "expires_at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z",
            )
        })?
        .unix_timestamp();
    if mode == Mode::Deidentified {
        // A client that names its request can follow the extract's build at `GET /v1/uploads/{id}`.
        let tracked = state.uploads.named(caller.user.as_str(), &headers)?;
        let finishing = Finishing(tracked.clone());
        let created = create_extract_request(state, caller, department, dataset, expires_at, body, tracked).await?;
        finishing.done();
        return Ok(created);
    }
    if body.extract.is_some() {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "extract_not_expected",
            "only a deidentified access request names an extract",
        ));
    }
    let new = NewRequest {
        user: caller.user.clone(),
        department,
        dataset,
        mode,
        purpose: body.purpose,
        expires_at,
        now_unix: now_unix(),
    };
    // The record is made on the catalogue's thread, outside this request's task: its id now.
    let (by, request_id) = (caller.clone(), this_request_id());
    let record = move |request: &veil_catalog::AccessRequest| {
        let mut entry = request_entry(&by, "access_request.create", request, format!("purpose: {}", request.purpose));
        entry.request_id = request_id;
        serde_json::to_string(&entry).ok()
    };
    let (request, pending) = state.blocking(move |c| c.create_access_request_recorded(&new, record)).await?;
    state.audit_pending(pending).await?;
    Ok((StatusCode::CREATED, Json(request.into())))
}

/// A de-identified request: the broker builds its extract at once, so the steward decides on
/// the extract itself and its report. A refusal is recorded too: it depends on the data.
async fn create_extract_request(
    state: AppState,
    caller: Principal,
    department: veil_common::DepartmentId,
    dataset: DatasetRef,
    expires_at: i64,
    body: NewAccessRequest,
    tracked: Option<std::sync::Arc<Upload>>,
) -> Result<(StatusCode, Json<AccessRequestView>), ApiError> {
    let NewAccessRequest { purpose, extract, .. } = body;
    let Some(extract) = extract else {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "extract_required",
            "a deidentified access request names its extract: {\"name\", \"columns\", optionally \"hierarchies\", \"k\", \"l\", \"max_suppression\"}",
        ));
    };
    let mut join = Vec::with_capacity(extract.join.len());
    for d in &extract.join {
        join.push(
            d.parse::<DatasetRef>().map_err(|e: veil_common::IdError| {
                ApiError::bad_request("invalid_name", format!("extract.join: {e}"))
            })?,
        );
    }
    let request = veil_broker::ExtractRequest {
        dataset: dataset.clone(),
        join: join.clone(),
        purpose,
        expires_at,
        name: extract.name,
        columns: extract.columns,
        hierarchies: extract.hierarchies.into_iter().collect(),
        k: extract.k,
        l: extract.l,
        max_suppression: extract.max_suppression,
    };
    // The record commits with the request (the catalogue's outbox): one record names every
    // dataset's access request, since each has its stewards.
    let (who, request_id) = (caller.clone(), this_request_id());
    let record = move |request: &AccessRequest, extract: &veil_catalog::ExtractInfo| {
        let parts: String = extract
            .parts
            .iter()
            .map(|p| format!("; joined with {} in access request {}", p.dataset, p.request_id))
            .collect();
        let detail = format!("purpose: {}; extract {}{parts}: {}", request.purpose, extract.name, extract.report);
        let mut entry = request_entry(&who, "access_request.create", request, detail);
        entry.request_id = request_id;
        entry.datasets.extend(extract.parts.iter().map(|p| DatasetUse { dataset: p.dataset.to_string(), level: None }));
        serde_json::to_string(&entry).ok()
    };
    let stage = move |stage: veil_broker::ExtractStage| {
        if let Some(upload) = &tracked {
            upload.at(match stage {
                veil_broker::ExtractStage::Comparing => Stage::Comparing,
                veil_broker::ExtractStage::Building => Stage::Building,
            });
        }
    };
    let asking = AppState::broker_caller(caller.clone());
    match state.broker.request_extract_followed(&asking, department, request, record, &stage).await {
        Ok((request, extract, pending)) => {
            state.audit_pending(pending).await?;
            let mut view = AccessRequestView::from(request);
            view.extract = Some(ExtractView::new(extract, false));
            Ok((StatusCode::CREATED, Json(view)))
        }
        Err(error) => {
            let mut entry = entry_by(&caller, "access_request.create", "denied");
            entry.datasets = std::iter::once(&dataset)
                .chain(&join)
                .map(|d| DatasetUse { dataset: d.to_string(), level: None })
                .collect();
            entry.mode = Some(Mode::Deidentified.as_str().to_owned());
            entry.rule = Some(error.code().to_owned());
            entry.detail = Some(error.message().to_owned());
            state.audit(entry).await?;
            Err(error.into())
        }
    }
}

/// `GET /v1/access-requests` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// `pending`, `approved`, `rejected` or `revoked`.
    #[serde(default)]
    state: Option<String>,
}

/// Lists access requests: a steward sees those for their department's datasets, an analyst
/// their own, an auditor all.
#[utoipa::path(get, path = "/v1/access-requests", tag = "access", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = [AccessRequestView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(crate) async fn access_requests_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<AccessRequestView>>, ApiError> {
    let mut filter = authz::list_requests(&state, &caller)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(s) = params.state {
        filter.state = Some(RequestState::parse(&s).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "state must be pending, approved, rejected or revoked")
        })?);
    }
    // An analyst sees an extract's report once it is approved: before, a stream of requests
    // would be a counting oracle over the source that no steward looked at.
    let analyst = filter.user.is_some();
    // Whose datasets' figures a joined extract's report shows ([`ExtractView::seen_by`]).
    let department = match (&filter.dataset_department, analyst) {
        (Some(d), _) => Some(d.to_string()),
        (None, true) => Some(caller.department.as_ref().map(ToString::to_string).unwrap_or_default()),
        (None, false) => None,
    };
    let views = state
        .blocking(move |c| {
            let mut views = Vec::new();
            for request in c.access_requests(&filter)? {
                let extract = c.extract(&request.id)?;
                let with_report = !analyst
                    || (request.state == RequestState::Approved
                        && extract.as_ref().is_none_or(veil_catalog::ExtractInfo::parts_approved));
                let mut view = AccessRequestView::from(request);
                view.extract = extract.map(|e| ExtractView::new(e, with_report).seen_by(department.as_deref()));
                views.push(view);
            }
            Ok(views)
        })
        .await?;
    Ok(Json(views))
}

async fn decide(
    state: AppState,
    caller: veil_catalog::Principal,
    id: String,
    transition: Transition,
    action: &'static str,
) -> Result<Json<AccessRequestView>, ApiError> {
    let lookup = id.clone();
    let request = state.blocking(move |c| c.access_request(&lookup)).await?;
    authz::steward_of(&state, &caller, &request.dataset.department)?;
    let user = caller.user.clone();
    let detail = match &transition {
        Transition::Approve => String::new(),
        Transition::Reject(r) | Transition::Revoke(r) => r.clone(),
    };
    // The decision and its record commit together (the catalogue's outbox); the record goes to
    // the log before the answer.
    let (who, request_id) = (caller.clone(), this_request_id());
    let record = move |decided: &AccessRequest| {
        let detail = format!("for {}; purpose: {}; {detail}", decided.user, decided.purpose);
        let mut entry = request_entry(&who, action, decided, detail);
        entry.request_id = request_id;
        serde_json::to_string(&entry).ok()
    };
    let approving = matches!(transition, Transition::Approve);
    let commit = move |c: &veil_catalog::Catalog| {
        let (decided, pending) = c.decide_access_request(&id, &user, transition, record)?;
        let extract = c.extract(&decided.id)?;
        Ok((decided, pending, extract))
    };
    // An extract released beside another of nearly the same people would single out those
    // between them: checked again at approval, for extracts asked for before the other's.
    let (decided, pending, extract) =
        if approving { state.broker.release(&request.id, commit).await? } else { state.blocking(commit).await? };
    state.audit_pending(pending).await?;
    state.refresh_policy().await?;
    let steward_of = decided.dataset.department.to_string();
    let mut view = AccessRequestView::from(decided);
    view.extract = extract.map(|e| ExtractView::new(e, true).seen_by(Some(&steward_of)));
    Ok(Json(view))
}

/// Approves a pending request (stewards of the dataset's department).
#[utoipa::path(post, path = "/v1/access-requests/{id}/approve", tag = "access", security(("bearer" = [])),
    params(("id" = String, Path, description = "access request id")),
    responses((status = 200, body = AccessRequestView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn access_requests_approve(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<AccessRequestView>, ApiError> {
    decide(state, caller, id, Transition::Approve, "access_request.approve").await
}

/// Rejects a pending request with a reason (stewards of the dataset's department).
#[utoipa::path(post, path = "/v1/access-requests/{id}/reject", tag = "access", request_body = DecisionReason,
    security(("bearer" = [])), params(("id" = String, Path, description = "access request id")),
    responses((status = 200, body = AccessRequestView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn access_requests_reject(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<DecisionReason>,
) -> Result<Json<AccessRequestView>, ApiError> {
    decide(state, caller, id, Transition::Reject(body.reason), "access_request.reject").await
}

/// Makes a pending extract stricter (a higher `k` or `l`, a lower share of suppressed records)
/// with a reason (stewards of the dataset's department). Veil builds the extract again from the
/// dataset's current version; the request stays pending with the new report, for the steward
/// to approve or reject.
#[utoipa::path(post, path = "/v1/access-requests/{id}/revise", tag = "access", request_body = ExtractRevisionInput,
    security(("bearer" = [])), params(("id" = String, Path, description = "access request id")),
    responses((status = 200, body = AccessRequestView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn access_requests_revise(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<ExtractRevisionInput>,
) -> Result<Json<AccessRequestView>, ApiError> {
    let lookup = id.clone();
    let request = state.blocking(move |c| c.access_request(&lookup)).await?;
    authz::steward_of(&state, &caller, &request.dataset.department)?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "reason_required",
            "a reason is required, for the analyst and the audit trail",
        ));
    }
    let revision = veil_broker::ExtractRevision { k: body.k, l: body.l, max_suppression: body.max_suppression };
    let asked = [
        body.k.map(|k| format!("k {k}")),
        body.l.map(|l| format!("l {l}")),
        body.max_suppression.map(|m| format!("max_suppression {m}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let (who, request_id) = (caller.clone(), this_request_id());
    let record = move |revised: &AccessRequest| {
        let detail = format!("for {}; purpose: {}; {asked}; {reason}", revised.user, revised.purpose);
        let mut entry = request_entry(&who, "access_request.revise", revised, detail);
        entry.request_id = request_id;
        serde_json::to_string(&entry).ok()
    };
    match state.broker.revise_extract(&id, revision, record).await {
        Ok((revised, extract, pending)) => {
            state.audit_pending(pending).await?;
            let steward_of = revised.dataset.department.to_string();
            let mut view = AccessRequestView::from(revised);
            view.extract = Some(ExtractView::new(extract, true).seen_by(Some(&steward_of)));
            Ok(Json(view))
        }
        // A refusal depends on the data (no generalization meets the new k): recorded too.
        Err(error) => {
            let mut entry = request_entry(&caller, "access_request.revise", &request, error.message().to_owned());
            entry.decision = "denied".into();
            entry.rule = Some(error.code().to_owned());
            state.audit(entry).await?;
            Err(error.into())
        }
    }
}

/// Revokes an approved request with a reason; it stops working at once (stewards of the
/// dataset's department).
#[utoipa::path(post, path = "/v1/access-requests/{id}/revoke", tag = "access", request_body = DecisionReason,
    security(("bearer" = [])), params(("id" = String, Path, description = "access request id")),
    responses((status = 200, body = AccessRequestView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn access_requests_revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<DecisionReason>,
) -> Result<Json<AccessRequestView>, ApiError> {
    decide(state, caller, id, Transition::Revoke(body.reason), "access_request.revoke").await
}

/// The audit record of `action` on an access request: its id, dataset and mode.
fn request_entry(caller: &Principal, action: &str, request: &AccessRequest, detail: String) -> Entry {
    let mut entry = entry_by(caller, action, "ok");
    entry.target = Some(request.id.clone());
    entry.datasets = vec![DatasetUse { dataset: request.dataset.to_string(), level: None }];
    entry.mode = Some(request.mode.as_str().to_owned());
    entry.detail = Some(detail);
    entry
}
