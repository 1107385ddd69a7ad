//! Role rules of the management API (design §1): who may manage identity and policy, register
//! and retire datasets, request access and decide requests. These are fixed by the product, not
//! configurable, so they are code, like the level ceiling.

use veil_common::{DepartmentId, Role, UserId};

use crate::Subject;

/// Something a caller wants to do that is not querying data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Create departments, users and tokens; revoke tokens.
    ManageIdentity,
    /// Reload the policy.
    ManagePolicy,
    /// Register or retire datasets of a department, or decide access requests to them.
    StewardOf(&'a DepartmentId),
    /// Ask for access to a dataset.
    RequestAccess,
    /// Read catalogue metadata (never data).
    ReadCatalogue,
    /// Read, search, export and verify the audit log, and query `audit.events`.
    ReadAudit,
}

/// Which access requests a caller may list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestScope {
    /// Every request (auditors).
    All,
    /// Requests for this department's datasets (stewards).
    DatasetsOf(DepartmentId),
    /// The caller's own requests (analysts).
    Own(UserId),
}

/// A refusal, with the reason to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// Decides a management action.
///
/// # Errors
/// [`Denied`] saying which role or department the action needs.
pub fn authorize(subject: &Subject, action: &Action<'_>) -> Result<(), Denied> {
    let has = |r: Role| subject.roles.contains(&r);
    match action {
        Action::ManageIdentity if has(Role::Admin) => Ok(()),
        Action::ManageIdentity => Err(Denied("managing departments, users and tokens needs the admin role".into())),
        Action::ManagePolicy if has(Role::Admin) => Ok(()),
        Action::ManagePolicy => Err(Denied("reloading the policy needs the admin role".into())),
        Action::StewardOf(department) => {
            if !has(Role::Steward) {
                Err(Denied("this needs the steward role".into()))
            } else if subject.department.as_ref() != Some(*department) {
                Err(Denied(format!("a steward acts only on their own department's datasets, not on `{department}`'s")))
            } else {
                Ok(())
            }
        }
        Action::RequestAccess if has(Role::Analyst) && subject.department.is_some() => Ok(()),
        Action::RequestAccess => Err(Denied("requesting access needs the analyst role in a department".into())),
        Action::ReadCatalogue => Ok(()),
        Action::ReadAudit if has(Role::Auditor) => Ok(()),
        Action::ReadAudit => Err(Denied("reading the audit log needs the auditor role".into())),
    }
}

/// Which access requests `subject` may list: auditors all, stewards those for their
/// department's datasets, analysts their own. Admins manage identity, not access.
///
/// # Errors
/// [`Denied`] for any other role.
pub fn request_scope(subject: &Subject) -> Result<RequestScope, Denied> {
    let has = |r: Role| subject.roles.contains(&r);
    match &subject.department {
        _ if has(Role::Auditor) => Ok(RequestScope::All),
        Some(d) if has(Role::Steward) => Ok(RequestScope::DatasetsOf(d.clone())),
        Some(_) if has(Role::Analyst) => Ok(RequestScope::Own(subject.user.clone())),
        _ => Err(Denied("listing access requests needs the steward, analyst or auditor role".into())),
    }
}
