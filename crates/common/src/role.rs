//! Roles: what a user may do (DESIGN §1).

use std::fmt;
use std::str::FromStr;

/// A user's role. A user may hold several; steward and analyst roles act within the user's
/// department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Platform operator: departments, users, tokens, policy. Never reads data.
    Admin,
    /// Registers, versions and retires the department's datasets; approves access to them.
    Steward,
    /// Browses the catalogue, requests access, submits queries.
    Analyst,
    /// Reads and verifies the audit log. Never queries department data.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Steward, Role::Analyst, Role::Auditor];

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Steward => "steward",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
        }
    }

    /// Whether the role only makes sense inside a department.
    pub fn needs_department(self) -> bool {
        matches!(self, Role::Steward | Role::Analyst)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected one of admin, steward, analyst, auditor")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.chars().take(32).collect()))
    }
}
