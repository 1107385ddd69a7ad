//! [`CasbinPolicy`]: the casbin-backed [`PolicyEngine`].
//!
//! The enforcer is rebuilt from text whenever its inputs change (the files, role memberships,
//! approved grants) and swapped in whole, so a decision always sees one consistent policy and a
//! failed rebuild leaves the old one in force. casbin builds asynchronously in its API, but from
//! in-memory text nothing awaits I/O, so it is driven to completion with a local executor and
//! the engine stays synchronous.

use std::sync::{Arc, Mutex, RwLock};

use casbin::function_map::{OperatorFunction, dynamic_to_str};
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use veil_common::{DepartmentId, Level, Mode, Role};

use crate::ceiling::{Ceiling, across_departments};
use crate::file::{EXACT_AGGREGATES, PolicyFiles, PolicyLine, parse};
use crate::{Check, DatasetMeta, Decision, Error, Grant, Membership, PolicyEngine, Result, Subject};

/// Everything an enforcer is built from.
#[derive(Debug, Clone)]
struct Inputs {
    model: String,
    lines: Vec<PolicyLine>,
    memberships: Vec<Membership>,
    grants: Vec<Grant>,
}

/// A built enforcer and the grants it includes.
struct Loaded {
    enforcer: Enforcer,
    /// The unexpired grants at build time (each is also an allow line in the enforcer).
    grants: Vec<Grant>,
    /// When the first included grant expires: the enforcer is rebuilt then.
    next_expiry: Option<i64>,
}

/// The casbin-backed policy engine.
pub struct CasbinPolicy {
    files: Option<PolicyFiles>,
    /// Serialises rebuilds; decisions never take this lock.
    inputs: Mutex<Inputs>,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for CasbinPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CasbinPolicy").field("files", &self.files).finish_non_exhaustive()
    }
}

/// `levelWithin(r.level, p.max_level)`: the request's level is at or below the line's.
fn level_within(level: Dynamic, max: Dynamic) -> Dynamic {
    let max = dynamic_to_str(&max);
    if max == "*" {
        return true.into();
    }
    match (dynamic_to_str(&level).parse::<Level>(), max.parse::<Level>()) {
        (Ok(level), Ok(max)) => (level <= max).into(),
        _ => false.into(),
    }
}

fn build(inputs: &Inputs, now: i64) -> Result<Loaded> {
    let grants: Vec<Grant> = inputs.grants.iter().filter(|g| g.expires_at > now).cloned().collect();
    let mut text = String::new();
    for line in &inputs.lines {
        text.push_str(&line.to_casbin());
    }
    for m in &inputs.memberships {
        text.push_str(&format!("g, user:{}, {}, {}\n", m.user, m.role, m.department));
    }
    for g in &grants {
        text.push_str(&format!("p, user:{}, *, {}, *, {}, allow\n", g.user, g.dataset, g.mode.as_str()));
    }
    let model = futures::executor::block_on(DefaultModel::from_str(&inputs.model))
        .map_err(|e| Error::Model { file: "model.conf".into(), message: e.to_string() })?;
    let mut enforcer = futures::executor::block_on(Enforcer::new(model, StringAdapter::new(text)))
        .map_err(|e| Error::Casbin(e.to_string()))?;
    enforcer.add_function("levelWithin", OperatorFunction::Arg2(level_within));
    let next_expiry = grants.iter().map(|g| g.expires_at).min();
    Ok(Loaded { enforcer, grants, next_expiry })
}

impl CasbinPolicy {
    /// Loads the model and policy files, with the given memberships and grants.
    ///
    /// # Errors
    /// A file that cannot be read, a malformed line (named by number), or an invalid model.
    pub fn from_files(files: PolicyFiles, memberships: Vec<Membership>, grants: Vec<Grant>, now: i64) -> Result<Self> {
        let (model, lines) = files.read()?;
        Self::new(Some(files), Inputs { model, lines, memberships, grants }, now)
    }

    /// Builds from model and policy text (tests, embedded defaults).
    ///
    /// # Errors
    /// As [`CasbinPolicy::from_files`].
    pub fn from_text(
        model: &str,
        policy: &str,
        memberships: Vec<Membership>,
        grants: Vec<Grant>,
        now: i64,
    ) -> Result<Self> {
        let inputs = Inputs { model: model.to_owned(), lines: parse("policy.csv", policy)?, memberships, grants };
        Self::new(None, inputs, now)
    }

    fn new(files: Option<PolicyFiles>, inputs: Inputs, now: i64) -> Result<Self> {
        let loaded = build(&inputs, now)?;
        Ok(Self { files, inputs: Mutex::new(inputs), loaded: RwLock::new(Arc::new(loaded)) })
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, Inputs> {
        // Inputs are replaced whole, never left half-updated, so a poisoned lock is safe to take.
        self.inputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rebuilds with `change` applied to the inputs; on failure nothing changes.
    fn rebuild(&self, now: i64, change: impl FnOnce(&mut Inputs)) -> Result<()> {
        let mut inputs = self.inputs();
        let mut next = inputs.clone();
        change(&mut next);
        let loaded = build(&next, now)?;
        *inputs = next;
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// The files this engine reloads from, if it was built from files.
    pub fn files(&self) -> Option<&PolicyFiles> {
        self.files.as_ref()
    }

    /// Re-reads the policy files. On any error the policy in force stays in force.
    /// Returns the number of policy lines now in force.
    ///
    /// # Errors
    /// As [`CasbinPolicy::from_files`]; an engine built from text has no files and keeps its policy.
    pub fn reload(&self, now: i64) -> Result<usize> {
        let Some(files) = &self.files else {
            return Ok(self.inputs().lines.len());
        };
        let (model, lines) = files.read()?;
        let count = lines.len();
        self.rebuild(now, |inputs| {
            inputs.model = model;
            inputs.lines = lines;
        })?;
        Ok(count)
    }

    /// Replaces the role memberships and the approved grants (after a user is created, or a
    /// request is approved or revoked), in one rebuild.
    ///
    /// # Errors
    /// A rebuild failure; the previous policy stays in force.
    pub fn set_subjects(&self, memberships: Vec<Membership>, grants: Vec<Grant>, now: i64) -> Result<()> {
        self.rebuild(now, |inputs| {
            inputs.memberships = memberships;
            inputs.grants = grants;
        })
    }

    /// The enforcer to decide with, rebuilt first if a grant it includes has expired.
    fn current(&self, now: i64) -> Option<Arc<Loaded>> {
        let loaded = self.loaded();
        if loaded.next_expiry.is_none_or(|t| t > now) {
            return Some(loaded);
        }
        // Stale: rebuild once. Concurrent decisions wait on the inputs lock and then find the
        // fresh enforcer instead of rebuilding again.
        let inputs = self.inputs();
        let loaded = self.loaded();
        if loaded.next_expiry.is_none_or(|t| t > now) {
            return Some(loaded);
        }
        match build(&inputs, now) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&fresh);
                Some(fresh)
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the policy after a grant expired failed; denying");
                None
            }
        }
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn deny(dataset: &DatasetMeta, rule: &'static str, reason: String) -> Check {
    Check { dataset: dataset.dataset.clone(), allowed: false, rule, reason }
}

impl PolicyEngine for CasbinPolicy {
    fn decide(&self, subject: &Subject, datasets: &[DatasetMeta], mode: Mode, now: i64) -> Decision {
        let level = datasets.iter().map(|d| d.level).max().unwrap_or(Level::Core);
        let mut decision = Decision { allowed: false, level, mode, checks: Vec::new() };
        if datasets.is_empty() {
            return decision;
        }
        let loaded = self.current(now);
        for dataset in datasets {
            decision.checks.push(check_one(loaded.as_deref(), subject, dataset, level, mode, now));
        }
        decision.allowed = decision.checks.iter().all(|c| c.allowed);
        decision
    }

    fn exact_aggregates(&self, subject: &Subject, datasets: &[DatasetMeta], now: i64) -> bool {
        let Some(department) = &subject.department else { return false };
        if datasets.is_empty()
            || !subject.roles.contains(&Role::Analyst)
            || datasets.iter().any(|d| d.dataset.department != *department)
        {
            return false;
        }
        let Some(loaded) = self.current(now) else { return false };
        let level = datasets.iter().map(|d| d.level).max().unwrap_or(Level::Core);
        datasets.iter().all(|d| {
            loaded.enforcer.enforce(casbin_request(subject, department, d, level, EXACT_AGGREGATES)).unwrap_or(false)
        })
    }
}

/// The model's request: `(sub, dom, obj, owner, level, mode)`.
fn casbin_request(
    subject: &Subject,
    department: &DepartmentId,
    d: &DatasetMeta,
    level: Level,
    mode: &str,
) -> (String, String, String, String, String, String) {
    (
        format!("user:{}", subject.user),
        department.to_string(),
        d.dataset.to_string(),
        d.dataset.department.to_string(),
        level.as_str().to_owned(),
        mode.to_owned(),
    )
}

fn check_one(loaded: Option<&Loaded>, subject: &Subject, d: &DatasetMeta, level: Level, mode: Mode, now: i64) -> Check {
    if !subject.roles.contains(&Role::Analyst) {
        return deny(d, "not_analyst", "only analysts query data".into());
    }
    let Some(department) = &subject.department else {
        return deny(d, "not_analyst", "an analyst needs a department".into());
    };
    let Some(loaded) = loaded else {
        return deny(d, "policy_unavailable", "the policy could not be evaluated".into());
    };
    let own = *department == d.dataset.department;
    let needs_grant = if own {
        false
    } else {
        match across_departments(level, mode) {
            Ceiling::Never(why) => return deny(d, "level_ceiling", why.into()),
            Ceiling::NeedsGrant => true,
            Ceiling::Policy => false,
        }
    };
    let granted = loaded
        .grants
        .iter()
        .any(|g| g.user == subject.user && g.dataset == d.dataset && g.mode == mode && g.expires_at > now);
    if needs_grant && !granted {
        // The level that decides is the query's strictest (就高从严), which may be another
        // dataset's: say both when they differ. And say how to ask.
        let read_as = if d.level == level {
            format!("{level} data of another department")
        } else {
            format!(
                "{} data of another department, read at {level} (the query's strictest dataset sets the level)",
                d.level
            )
        };
        return deny(
            d,
            "grant_required",
            format!(
                "{read_as} in {mode} mode needs an approved access request: ask with POST /v1/access-requests (dataset, mode, purpose, expires_at); a steward of its department decides",
                mode = mode.as_str()
            ),
        );
    }
    match loaded.enforcer.enforce(casbin_request(subject, department, d, level, mode.as_str())) {
        Ok(true) => Check {
            dataset: d.dataset.clone(),
            allowed: true,
            rule: if granted { "grant" } else { "policy_allow" },
            reason: if granted { "an approved access request".into() } else { "a policy line allows it".into() },
        },
        Ok(false) => deny(
            d,
            "policy_deny",
            format!(
                "no policy line lets {department} analysts query {} at {level} in {} mode, or a deny line closes it",
                d.dataset,
                mode.as_str()
            ),
        ),
        Err(e) => {
            tracing::error!(error = %e, "casbin could not evaluate a request; denying");
            deny(d, "policy_unavailable", "the policy could not be evaluated".into())
        }
    }
}
