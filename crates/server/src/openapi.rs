//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::routes::{access, audit, budget, datasets, identity, ops, policy, query};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Veil", description = "Privacy-preserving data-sharing broker: 数据可用不可见."),
    paths(
        identity::departments_create, identity::departments_list, identity::users_create, identity::users_list,
        identity::tokens_create, identity::tokens_revoke, identity::whoami,
        datasets::datasets_register, datasets::uploads_show, datasets::datasets_draft, datasets::datasets_list, datasets::datasets_show, datasets::datasets_retire,
        datasets::datasets_access,
        access::access_requests_create, access::access_requests_list, access::access_requests_approve,
        access::access_requests_reject, access::access_requests_revise, access::access_requests_revoke, policy::policy_reload, query::query,
        budget::budget_show,
        audit::audit_search, audit::audit_export, audit::audit_verify,
        ops::healthz, ops::readyz, ops::metrics, openapi_json, crate::reference::reference,
    ),
    components(schemas(
        dto::ErrorBody, dto::ErrorDetail, dto::NewDepartment, dto::DepartmentView, dto::NewUser, dto::UserView,
        dto::TokenView, dto::DatasetMetadata, dto::ColumnMetadata, dto::DatasetView, dto::ColumnView, dto::VersionView,
        dto::Health, dto::Readiness, dto::Validation, dto::DraftView, dto::DraftReason, dto::NewAccessRequest, dto::ExtractInput, dto::ExtractView, dto::ExtractPartView, dto::DecisionReason, dto::AccessRequestView, dto::AccessView,
        dto::ModeAccess, dto::ReloadView, dto::QueryBody, dto::QueryColumn, dto::QueryRule, dto::QueryResponse,
        dto::AuditPage, dto::AuditVerifyView, dto::DpMetadata, dto::DpView, dto::DpAnswer, dto::NoisyColumn, dto::HalfWidth, dto::AnonymizedAnswer, dto::NoiseSd, dto::RowsCapped,
        dto::BudgetView,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// This document (public, like the API's shape itself).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Json<serde_json::Value> {
    Json(document())
}

/// The document: the handlers' annotations, completed where they are repetitive (a description
/// for every response, the 503 of every change the audit log must record) or cannot say it
/// (the binary answers of a query, the multipart upload of a dataset).
pub(crate) fn document() -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                let Some(responses) = operation.get_mut("responses").and_then(|r| r.as_object_mut()) else { continue };
                // Every change is recorded before it is answered; when the log cannot record
                // it, the answer is withheld.
                if path.starts_with("/v1/") && method != "get" && !responses.contains_key("503") {
                    responses.insert("503".into(), json!({"content": error}));
                }
                for (status, response) in responses.iter_mut() {
                    if response.get("description").is_none_or(|d| d.as_str().is_none_or(str::is_empty)) {
                        response["description"] = json!(described(status));
                    }
                }
            }
        }
        let binary = json!({"schema": {"type": "string", "contentMediaType": "application/octet-stream"}});
        if let Some(ok) = paths.get_mut("/v1/query").and_then(|p| p.pointer_mut("/post/responses/200/content")) {
            for media in ["application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"] {
                ok[media] = binary.clone();
            }
            ok["text/csv"] = json!({"schema": {"type": "string"}});
        }
        if let Some(body) = paths.get_mut("/v1/datasets").and_then(|p| p.pointer_mut("/post/requestBody/content")) {
            body["multipart/form-data"] = json!({
                "schema": {
                    "type": "object",
                    "required": ["metadata", "file"],
                    "properties": {
                        "metadata": {"$ref": "#/components/schemas/DatasetMetadata"},
                        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                                 "description": "CSV with a header, Arrow IPC file or stream, or Parquet"}
                    }
                },
                "encoding": {"metadata": {"contentType": "application/json"}}
            });
        }
    }
    doc
}

/// What a response with `status` means, where its handler says no more.
fn described(status: &str) -> &'static str {
    match status {
        "200" => "the answer",
        "201" => "created",
        "204" => "done; nothing to answer",
        "400" => "the request is malformed: the error says what and where",
        "401" => "no valid bearer token",
        "403" => "the caller's roles or the policy do not allow it: the error says which rule",
        "404" => "no such thing, or not one the caller may see",
        "406" => "none of the formats `Accept` lists is one Veil answers in",
        "409" => "it conflicts with the current state (already exists, already decided)",
        "413" => "too large: the error gives the limit",
        "422" => "well-formed, but refused: the error's code says why",
        "503" => "unavailable: the audit log could not record it, so its answer is withheld",
        "504" => "the deadline passed",
        "507" => "not enough disk space to store it; nothing was stored",
        _ => "see the error body",
    }
}
