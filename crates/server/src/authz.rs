//! Who may do what with identity, the catalogue, access requests and the policy (DESIGN §1).
//!
//! Every handler asks here before acting. Which datasets an analyst may query, in which mode, is
//! decided by the policy engine (`veil-policy`); these are the role rules of the management API.

use veil_catalog::{Principal, RequestFilter};
use veil_common::{DepartmentId, Role};

use crate::error::ApiError;

/// Managing departments, users and tokens: admins only.
pub fn manage_identity(caller: &Principal) -> Result<(), ApiError> {
    if caller.has(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden("managing departments, users and tokens needs the admin role"))
    }
}

/// Reloading the policy: admins only.
pub fn manage_policy(caller: &Principal) -> Result<(), ApiError> {
    if caller.has(Role::Admin) { Ok(()) } else { Err(ApiError::forbidden("reloading the policy needs the admin role")) }
}

/// Registering or retiring a dataset of `department`, or deciding access requests to it: a
/// steward of that department only.
pub fn steward_of(caller: &Principal, department: &DepartmentId) -> Result<(), ApiError> {
    if !caller.has(Role::Steward) {
        return Err(ApiError::forbidden("this needs the steward role"));
    }
    if caller.department.as_ref() != Some(department) {
        return Err(ApiError::forbidden(format!(
            "a steward acts only on their own department's datasets, not on `{department}`'s"
        )));
    }
    Ok(())
}

/// Requesting access: analysts with a department.
pub fn request_access(caller: &Principal) -> Result<DepartmentId, ApiError> {
    match (&caller.department, caller.has(Role::Analyst)) {
        (Some(d), true) => Ok(d.clone()),
        _ => Err(ApiError::forbidden("requesting access needs the analyst role in a department")),
    }
}

/// Which access requests the caller may list: a steward those for their department's datasets,
/// an analyst their own, an auditor all. Admins manage identity, not access.
pub fn list_requests(caller: &Principal) -> Result<RequestFilter, ApiError> {
    if caller.has(Role::Auditor) {
        return Ok(RequestFilter::default());
    }
    if caller.has(Role::Steward) {
        return Ok(RequestFilter { dataset_department: caller.department.clone(), ..Default::default() });
    }
    if caller.has(Role::Analyst) {
        return Ok(RequestFilter { user: Some(caller.user.clone()), ..Default::default() });
    }
    Err(ApiError::forbidden("listing access requests needs the steward, analyst or auditor role"))
}

/// Reading catalogue metadata (never data): anyone signed in.
pub fn read_catalogue(_caller: &Principal) -> Result<(), ApiError> {
    Ok(())
}
