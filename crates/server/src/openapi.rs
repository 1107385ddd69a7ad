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
        datasets::datasets_register, datasets::datasets_list, datasets::datasets_show, datasets::datasets_retire,
        datasets::datasets_access,
        access::access_requests_create, access::access_requests_list, access::access_requests_approve,
        access::access_requests_reject, access::access_requests_revise, access::access_requests_revoke, policy::policy_reload, query::query,
        budget::budget_show,
        audit::audit_search, audit::audit_export, audit::audit_verify,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        dto::ErrorBody, dto::ErrorDetail, dto::NewDepartment, dto::DepartmentView, dto::NewUser, dto::UserView,
        dto::TokenView, dto::DatasetMetadata, dto::ColumnMetadata, dto::DatasetView, dto::ColumnView, dto::VersionView,
        dto::Health, dto::Readiness, dto::Validation, dto::NewAccessRequest, dto::ExtractInput, dto::ExtractView, dto::ExtractPartView, dto::DecisionReason, dto::AccessRequestView, dto::AccessView,
        dto::ModeAccess, dto::ReloadView, dto::QueryBody, dto::QueryColumn, dto::QueryRule, dto::QueryResponse,
        dto::AuditPage, dto::AuditVerifyView, dto::DpMetadata, dto::DpView, dto::DpAnswer, dto::NoisyColumn, dto::HalfWidth, dto::AnonymizedAnswer, dto::NoiseSd,
        dto::BudgetView,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// `GET /v1/openapi.json`: public, like the API's shape itself.
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
