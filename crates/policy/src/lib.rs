//! Who may query what: the [`PolicyEngine`] trait and its casbin implementation.
//!
//! **Architecture invariant:** this is the only crate that knows casbin. Everything else asks a
//! `dyn PolicyEngine` and gets a [`Decision`] back.
//!
//! A decision combines three things:
//! 1. the level ceiling of design §2, in code ([`ceiling`]), which no policy line can widen;
//! 2. the casbin policy over the files in `policies/` (RBAC with department domains,
//!    deny-override), plus role memberships from the user registry;
//! 3. approved, unexpired access requests ([`Grant`]), which act as allow lines and satisfy the
//!    ceiling's "needs an approved grant".
//!
//! Any failure to decide is a deny (fail closed). The role rules of the management API (who
//! manages identity, who stewards which department) are decided here too ([`management`]), so
//! every authorization decision goes through the one trait.
//!
//! # Layout
//! - [`file`]: reading and checking policy files, naming the bad line.
//! - [`ceiling`]: the level ceiling.
//! - [`engine`]: the casbin-backed [`CasbinPolicy`].
//! - [`management`]: the role rules of the management API.

#![warn(missing_docs)]

pub mod ceiling;
pub mod engine;
mod error;
pub mod file;
pub mod management;

pub use engine::CasbinPolicy;
pub use error::{Error, Result};
pub use file::PolicyFiles;
pub use management::{Action, Denied, RequestScope};

use veil_common::{DatasetRef, DepartmentId, Level, Mode, Role, UserId};

/// The model every new data directory starts with.
pub const DEFAULT_MODEL: &str = include_str!("../../../policies/model.conf");
/// The policy every new data directory starts with: own department only.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default_policy.csv");
/// The policy of `veil serve --demo`.
pub const DEMO_POLICY: &str = include_str!("../../../policies/demo_policy.csv");

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The user.
    pub user: UserId,
    /// Their department.
    pub department: Option<DepartmentId>,
    /// Their roles.
    pub roles: Vec<Role>,
}

/// A dataset as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetMeta {
    /// Which.
    pub dataset: DatasetRef,
    /// Its level.
    pub level: Level,
}

/// A user's roles in their department, from the user registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The user.
    pub user: UserId,
    /// Their department.
    pub department: DepartmentId,
    /// One role they hold there.
    pub role: Role,
}

/// An approved access request: `user` may query `dataset` in `mode` until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The request's id.
    pub id: String,
    /// The analyst.
    pub user: UserId,
    /// The dataset.
    pub dataset: DatasetRef,
    /// The mode.
    pub mode: Mode,
    /// Unix seconds after which it no longer works.
    pub expires_at: i64,
}

/// One dataset's part of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The dataset.
    pub dataset: DatasetRef,
    /// Whether it may be used.
    pub allowed: bool,
    /// The rule that decided: `policy_allow`, `grant`, `not_analyst`, `core_data`,
    /// `level_ceiling`, `grant_required` or `policy_deny`.
    pub rule: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// The answer to "may this subject query these datasets in this mode?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed only if every dataset is.
    pub allowed: bool,
    /// The level the query is judged at: the strictest among its datasets (就高从严).
    pub level: Level,
    /// The mode asked for.
    pub mode: Mode,
    /// One check per dataset, in the order given.
    pub checks: Vec<Check>,
}

impl Decision {
    /// The first refusal, if any.
    pub fn first_denial(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.allowed)
    }
}

/// Every authorization decision in Veil. Implementations are synchronous and in memory, so the
/// query path can call them from a planner rule.
pub trait PolicyEngine: Send + Sync {
    /// Decides whether `subject` may query all of `datasets` in `mode` at time `now` (unix
    /// seconds). An empty `datasets` is denied.
    fn decide(&self, subject: &Subject, datasets: &[DatasetMeta], mode: Mode, now: i64) -> Decision;

    /// Whether `subject` may have exact aggregates of `datasets` about people: only when every
    /// one belongs to the subject's own department and a policy line names
    /// [`file::EXACT_AGGREGATES`] for it (design §2: across departments, always anonymized).
    /// Asked after [`PolicyEngine::decide`] allowed the query in aggregate mode; any doubt is no.
    fn exact_aggregates(&self, subject: &Subject, datasets: &[DatasetMeta], now: i64) -> bool {
        let _ = (subject, datasets, now);
        false
    }

    /// Decides a management action (identity, policy, stewardship, access requests).
    ///
    /// # Errors
    /// [`Denied`] with the reason.
    fn authorize(&self, subject: &Subject, action: &Action<'_>) -> Result<(), Denied> {
        management::authorize(subject, action)
    }

    /// Which access requests `subject` may list.
    ///
    /// # Errors
    /// [`Denied`] for roles that may list none.
    fn request_scope(&self, subject: &Subject) -> Result<RequestScope, Denied> {
        management::request_scope(subject)
    }
}
