//! The server's side of authorization: asks the [`PolicyEngine`] and turns a refusal into 403.
//!
//! Every handler calls one of these before acting; none decides access itself.

use veil_catalog::{Principal, RequestFilter};
use veil_common::DepartmentId;
use veil_policy::{Action, PolicyEngine, RequestScope};

use crate::error::ApiError;
use crate::state::{AppState, subject};

fn authorize(state: &AppState, caller: &Principal, action: Action<'_>) -> Result<(), ApiError> {
    state.policy.authorize(&subject(caller), &action).map_err(|d| ApiError::forbidden(d.0))
}

/// Managing departments, users and tokens.
pub fn manage_identity(state: &AppState, caller: &Principal) -> Result<(), ApiError> {
    authorize(state, caller, Action::ManageIdentity)
}

/// Reloading the policy.
pub fn manage_policy(state: &AppState, caller: &Principal) -> Result<(), ApiError> {
    authorize(state, caller, Action::ManagePolicy)
}

/// Registering or retiring `department`'s datasets, or deciding access requests to them.
pub fn steward_of(state: &AppState, caller: &Principal, department: &DepartmentId) -> Result<(), ApiError> {
    authorize(state, caller, Action::StewardOf(department))
}

/// Requesting access; returns the caller's department.
pub fn request_access(state: &AppState, caller: &Principal) -> Result<DepartmentId, ApiError> {
    authorize(state, caller, Action::RequestAccess)?;
    caller.department.clone().ok_or_else(|| ApiError::forbidden("requesting access needs a department"))
}

/// Reading catalogue metadata (never data).
pub fn read_catalogue(state: &AppState, caller: &Principal) -> Result<(), ApiError> {
    authorize(state, caller, Action::ReadCatalogue)
}

/// Reading the service's metrics (administrators and auditors): request counts and latencies
/// are other users' activity and timing.
pub fn read_metrics(state: &AppState, caller: &Principal) -> Result<(), ApiError> {
    manage_identity(state, caller).or_else(|_| read_audit(state, caller))
}

/// Reading the audit log (auditors).
pub fn read_audit(state: &AppState, caller: &Principal) -> Result<(), ApiError> {
    authorize(state, caller, Action::ReadAudit)
}

/// The access requests the caller may list, as a catalogue filter.
pub fn list_requests(state: &AppState, caller: &Principal) -> Result<RequestFilter, ApiError> {
    let scope = state.policy.request_scope(&subject(caller)).map_err(|d| ApiError::forbidden(d.0))?;
    Ok(match scope {
        RequestScope::All => RequestFilter::default(),
        RequestScope::DatasetsOf(d) => RequestFilter { dataset_department: Some(d), ..Default::default() },
        RequestScope::Own(u) => RequestFilter { user: Some(u), ..Default::default() },
    })
}
