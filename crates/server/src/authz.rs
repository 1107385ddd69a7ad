//! Who may do what with identity and the catalogue (DESIGN §1).
//!
//! Every handler asks here before acting. Data access (queries, grants, levels) will be decided
//! by the policy engine; these are the role rules of the management API.

use veil_catalog::Principal;
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

/// Registering or retiring a dataset of `department`: a steward of that department only.
pub fn manage_datasets_of(caller: &Principal, department: &DepartmentId) -> Result<(), ApiError> {
    if !caller.has(Role::Steward) {
        return Err(ApiError::forbidden("registering and retiring datasets needs the steward role"));
    }
    if caller.department.as_ref() != Some(department) {
        return Err(ApiError::forbidden(format!(
            "a steward registers and retires datasets only in their own department, not in `{department}`"
        )));
    }
    Ok(())
}

/// Reading catalogue metadata (never data): anyone signed in.
pub fn read_catalogue(_caller: &Principal) -> Result<(), ApiError> {
    Ok(())
}
