//! Roles: what a user may do (design §1).

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

code_enum!(Role, UnknownRole, "role");
