//! The auditor's endpoints: search, export and verify the audit log. Every read of the log is
//! itself recorded.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_audit::{Filter, Stored};

use crate::auth::Caller;
use crate::authz;
use crate::dto::{AuditPage, AuditVerifyView, ErrorBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Most records one page returns.
const MAX_PAGE: usize = 1000;

/// Filters shared by search and export. Every one that is given must match.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// The acting user.
    user: Option<String>,
    /// The acting user's department.
    department: Option<String>,
    /// A dataset (`civil.residents`) or a department's datasets (`civil`).
    dataset: Option<String>,
    /// `allowed`, `denied`, `failed`, `dry_run`, `ok` or `error`.
    decision: Option<String>,
    /// The action, e.g. `query`, `dataset.register`, `auth.failed`.
    action: Option<String>,
    /// At or after this time (RFC 3339).
    from: Option<String>,
    /// Before this time (RFC 3339).
    to: Option<String>,
    /// Only records after this sequence number: the previous page's `next`.
    after: Option<u64>,
    /// The request a record came from: the `audit_id` (`x-veil-audit-id`) an answer or
    /// refusal carries.
    request_id: Option<String>,
    /// Records per page (search only), 1 to 1000; 100 if not given.
    limit: Option<usize>,
    /// Export format: `jsonl` (default) or `parquet` (export only).
    format: Option<String>,
}

impl AuditParams {
    fn filter(&self) -> Result<Filter, ApiError> {
        let time = |name: &str, value: &Option<String>| -> Result<Option<OffsetDateTime>, ApiError> {
            value
                .as_deref()
                .map(|v| {
                    OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("`{name}` must be an RFC 3339 time such as 2026-11-01T00:00:00Z"),
                        )
                    })
                })
                .transpose()
        };
        Ok(Filter {
            user: self.user.clone(),
            department: self.department.clone(),
            dataset: self.dataset.clone(),
            decision: self.decision.clone(),
            action: self.action.clone(),
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
            after: self.after,
            request_id: self.request_id.clone(),
        })
    }

    /// The filters, as recorded in the auditor's own record.
    fn describe(&self) -> String {
        let fields = [
            ("user", self.user.clone()),
            ("department", self.department.clone()),
            ("dataset", self.dataset.clone()),
            ("decision", self.decision.clone()),
            ("action", self.action.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("after", self.after.map(|a| a.to_string())),
            ("request_id", self.request_id.clone()),
        ];
        let set: Vec<String> = fields.into_iter().filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))).collect();
        if set.is_empty() { "all records".into() } else { set.join(" ") }
    }
}

fn params(params: Result<Query<AuditParams>, QueryRejection>) -> Result<AuditParams, ApiError> {
    params.map(|Query(p)| p).map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// Matching records, read up to the log's durable head (later bytes may be mid-write).
async fn find(state: &AppState, filter: Filter, limit: usize) -> Result<veil_audit::Page, ApiError> {
    Ok(state.broker.audit_records(filter, limit).await?)
}

fn to_json(records: &[Stored]) -> Result<Vec<serde_json::Value>, ApiError> {
    records.iter().map(|r| serde_json::to_value(r).map_err(ApiError::internal)).collect()
}

/// Searches the audit log (auditors), oldest first; pass `next` as `after` for the next page.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_search(
    State(state): State<AppState>,
    Caller(caller): Caller,
    raw: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    authz::read_audit(&state, &caller)?;
    let params = params(raw)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("`limit` must be between 1 and {MAX_PAGE}")));
    }
    let filter = params.filter()?;
    state.event("audit.search", Some(&caller), None, "allowed", params.describe()).await?;
    let page = find(&state, filter, limit).await?;
    Ok(Json(AuditPage { records: to_json(&page.records)?, next: page.next, unreadable: page.unreadable }))
}

/// Exports matching records (auditors): JSON lines, or Parquet with `format=parquet`.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])), params(AuditParams),
    responses((status = 200, description = "application/x-ndjson or application/vnd.apache.parquet"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    raw: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    authz::read_audit(&state, &caller)?;
    let params = params(raw)?;
    let parquet = match params.format.as_deref() {
        None | Some("jsonl") => false,
        Some("parquet") => true,
        Some(_) => return Err(ApiError::bad_request("invalid_query", "`format` must be jsonl or parquet")),
    };
    let filter = params.filter()?;
    state.event("audit.export", Some(&caller), None, "allowed", params.describe()).await?;
    let page = find(&state, filter, usize::MAX).await?;
    let (bytes, media) = if parquet {
        (veil_audit::to_parquet(&page.records).map_err(ApiError::internal)?, "application/vnd.apache.parquet")
    } else {
        let mut out = Vec::new();
        for record in &page.records {
            serde_json::to_writer(&mut out, record).map_err(ApiError::internal)?;
            out.push(b'\n');
        }
        (out, "application/x-ndjson")
    };
    let mut response = Body::from(bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    Ok(response)
}

/// Verifies the whole log up to its durable head against the server's public key (auditors).
/// For an independent check, copy the log and run `veil audit verify` with the exported key.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = AuditVerifyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_verify(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<AuditVerifyView>, ApiError> {
    authz::read_audit(&state, &caller)?;
    state.event("audit.verify", Some(&caller), None, "allowed", "verify the whole log").await?;
    let dir = state.audit.dir().to_path_buf();
    let key = state.audit.public_key();
    let until = state.audit.durable_seq();
    let report = tokio::task::spawn_blocking(move || veil_audit::verify(&dir, &key, Some(until)))
        .await
        .map_err(|e| ApiError::internal(format!("audit task failed: {e}")))??;
    Ok(Json(AuditVerifyView {
        ok: report.ok(),
        summary: report.to_string(),
        public_key: key.to_hex(),
        key_id: key.id(),
        report: serde_json::to_value(&report).map_err(ApiError::internal)?,
    }))
}
