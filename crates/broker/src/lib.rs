//! The query use case without a protocol: who may ask what, at which level, under which
//! pseudonym scope and budget, guarded, run and recorded.
//!
//! ```text
//! Broker::query(caller, request)
//!   parse ─► resolve datasets ─► PolicyEngine::decide (就高从严) ─► k, pseudonym scope, epsilon
//!   ─► QueryEngine::prepare (guard) ─► run (dp: budget ahead ─► measure ─► settle ─► release)
//!   ─► audit record appended and on disk ─► Released
//! ```
//!
//! **Architecture invariant:** a [`Released`] answer is constructed only here, after the audit
//! log has acknowledged the query's record, so no protocol adapter (HTTP today, Flight SQL
//! next) can hand out an answer that was not recorded. A refusal is recorded the same way and
//! comes back as [`Refused`] with its record's sequence number.
//!
//! **API boundary:** no HTTP, no serde: adapters translate [`Request`], [`Released`],
//! [`Refused`] and [`Budget`] into their own wire types.
//!
//! # Layout
//! - [`error`]: [`Error`], the typed refusal every protocol maps in one place.
//! - `query`: the use case itself.
//! - `budget`: the dp ledger around a query, and the caller's budget view.
//! - `extract`: de-identified extracts: asking for one (built at once, for the steward to
//!   decide on), and queries over the approved ones.

#![warn(missing_docs)]

mod budget;
pub mod error;
mod extract;
mod query;

use std::path::Path;
use std::sync::Arc;

use veil_audit::{Actor, AuditLog, Entry};
use veil_catalog::{Catalog, Principal};
use veil_policy::{CasbinPolicy, Grant, Membership, PolicyFiles, Subject};

pub use budget::Budget;
pub use error::Error;
pub use extract::{
    BASE_MAX_SUPPRESSION, DEFAULT_L, DEFAULT_MAX_SUPPRESSION, ExtractRequest, ExtractRevision, ExtractStage, MAX_K,
    MAX_L,
};
pub use veil_dp::Noise;
pub use veil_query::{Answer, DpReport, Limits};

/// Who asks: the signed-in principal and, where the protocol has one, the request id that the
/// audit record carries.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated principal.
    pub principal: Principal,
    /// The protocol's request id, if any (HTTP's `x-request-id`).
    pub request_id: Option<String>,
}

impl Caller {
    /// The policy subject of this caller.
    pub fn subject(&self) -> Subject {
        subject(&self.principal)
    }

    /// The audit record's view of this caller.
    fn actor(&self) -> Actor {
        actor(&self.principal)
    }
}

/// The policy subject for a signed-in principal.
pub fn subject(principal: &Principal) -> Subject {
    Subject { user: principal.user.clone(), department: principal.department.clone(), roles: principal.roles.clone() }
}

/// The audit record's view of a signed-in principal.
pub fn actor(principal: &Principal) -> Actor {
    Actor {
        user: principal.user.to_string(),
        department: principal.department.as_ref().map(ToString::to_string),
        roles: principal.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    }
}

/// The policy's subjects from the catalogue: every user's role memberships and the grants
/// in force at `now`.
///
/// # Errors
/// A catalogue failure.
pub fn policy_subjects(catalog: &Catalog, now: i64) -> Result<(Vec<Membership>, Vec<Grant>), veil_catalog::Error> {
    let memberships = catalog
        .memberships()?
        .into_iter()
        .map(|(user, department, role)| Membership { user, department, role })
        .collect();
    let grants = catalog
        .active_grants(now)?
        .into_iter()
        .map(|r| Grant { id: r.id, user: r.user, dataset: r.dataset, mode: r.mode, expires_at: r.expires_at })
        .collect();
    Ok((memberships, grants))
}

/// Loads the policy files, with role memberships and grants from the catalogue.
///
/// # Errors
/// A catalogue failure, or a policy error naming the file and line.
pub fn load_policy(
    catalog: &Catalog,
    files: PolicyFiles,
) -> Result<CasbinPolicy, Box<dyn std::error::Error + Send + Sync>> {
    let now = now_unix();
    let (memberships, grants) = policy_subjects(catalog, now)?;
    Ok(CasbinPolicy::from_files(files, memberships, grants, now)?)
}

/// One query as the analyst asked it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The SQL text.
    pub sql: String,
    /// The result mode as the client named it; an unknown one is refused (and recorded).
    pub mode: String,
    /// Dp mode: the epsilon to spend with discrete Laplace noise; a default from the caps when
    /// neither this nor `rho` is given.
    pub epsilon: Option<f64>,
    /// Dp mode: the ρ (zCDP) to spend with discrete Gaussian noise instead.
    pub rho: Option<f64>,
    /// Dp mode: the noise, when neither ε nor ρ says it (with an accuracy, or for the
    /// default budget); else the one the datasets' stewards chose.
    pub noise: Option<veil_dp::Noise>,
    /// Dp mode: instead of ε or ρ, the 95% half-width wanted for noisy output columns, by name;
    /// the query spends the least ε or ρ that gives every one of them.
    pub accuracy: Option<Vec<(String, f64)>>,
    /// Only decide and explain; do not run or charge.
    pub dry_run: bool,
}

/// A rule that decided part of the query, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Stable code.
    pub code: String,
    /// What it decided, naming datasets and columns, never values.
    pub detail: String,
}

/// An answer that has been recorded in the audit log: the only form in which a query's result
/// leaves the broker.
#[derive(Debug)]
pub struct Released {
    answer: Answer,
    level: String,
    k: u64,
    rules: Vec<Rule>,
    budget: Option<Vec<Budget>>,
    audit_id: String,
}

impl Released {
    /// The answer (or, for a dry run, the decision with the answer's schema). Its
    /// `suppressed_groups` is always zero: how many groups were withheld is in the audit
    /// record only.
    pub fn answer(&self) -> &Answer {
        &self.answer
    }

    /// The level the query was judged at (就高从严), or `audit` for the audit log.
    pub fn level(&self) -> &str {
        &self.level
    }

    /// The minimum number of people per released group or class at that level.
    pub fn k(&self) -> u64 {
        self.k
    }

    /// Every rule that applied: the policy's decision per dataset, then the guard's.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Dp mode: each dataset's budget after the query.
    pub fn budget(&self) -> Option<&[Budget]> {
        self.budget.as_deref()
    }

    /// The reference of the query's audit record: its request id, which an auditor searches
    /// for. Not the record's sequence number, which would tell an analyst how many audited
    /// actions everybody else made between two of their answers.
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }
}

/// A query that was refused or failed, after its refusal was recorded (`audit_id`), or that
/// could not be recorded at all (`audit_id` is `None` and the error is `audit_unavailable`).
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: Error,
    /// The reference of the refusal's audit record (as [`Released::audit_id`]).
    pub audit_id: Option<String>,
}

/// The query use case, shared by every protocol. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    catalog: Arc<Catalog>,
    policy: Arc<CasbinPolicy>,
    audit: Arc<AuditLog>,
    engine: Arc<veil_query::QueryEngine>,
    /// Held from an extract's check at approval to the approval's commit
    /// ([`Broker::releasing`]).
    releases: Arc<tokio::sync::Mutex<()>>,
}

impl Broker {
    /// A broker over the catalogue, policy and audit log the server also uses; queries spill
    /// under `spill_dir`.
    ///
    /// # Errors
    /// When the query runtime cannot be built.
    pub fn new(
        catalog: Arc<Catalog>,
        policy: Arc<CasbinPolicy>,
        audit: Arc<AuditLog>,
        limits: Limits,
        spill_dir: &Path,
    ) -> Result<Self, Error> {
        let engine = Arc::new(veil_query::QueryEngine::new(limits, spill_dir)?);
        Ok(Self { catalog, policy, audit, engine, releases: Arc::new(tokio::sync::Mutex::new(())) })
    }

    /// The limits every query runs under.
    pub fn limits(&self) -> &Limits {
        self.engine.limits()
    }

    /// How often and how many bytes queries' operators spilled to disk, since start.
    pub fn spills(&self) -> (u64, u64) {
        self.engine.spills()
    }

    /// Runs synchronous catalogue work on a blocking thread, so SQLite and file I/O never
    /// stall the async runtime.
    ///
    /// # Errors
    /// The work's catalogue error (its kind and code kept), or an internal one if the task died.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Catalog) -> Result<T, veil_catalog::Error> + Send + 'static,
        T: Send + 'static,
    {
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || work(&catalog))
            .await
            .map_err(|e| Error::internal(format!("catalogue task failed: {e}")))?
            .map_err(Error::from)
    }

    /// [`Broker::blocking`] for work that ingests a file (a registration, its dry run): it
    /// holds one query's share of the memory queries and builds share while it runs (its
    /// batches are bounded to fit one), waiting for it as a query would.
    ///
    /// # Errors
    /// `server_busy` (503) when no room came free in time; else as [`Broker::blocking`].
    pub async fn ingesting<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Catalog) -> Result<T, veil_catalog::Error> + Send + 'static,
        T: Send + 'static,
    {
        let one_query = self.engine.limits().memory_bytes as u64;
        let _room =
            self.engine.reserve_memory(one_query).await.map_err(|e| memory_error("the file cannot be read", e))?;
        self.blocking(work).await
    }

    /// Appends `entry` for `caller` and returns, once it is on disk, the record's reference:
    /// its request id (the caller's, or a fresh random one where the protocol has none).
    async fn record(&self, caller: &Caller, mut entry: Entry) -> Result<String, Error> {
        if entry.request_id.is_none() {
            entry.request_id.clone_from(&caller.request_id);
        }
        let reference = entry.request_id.get_or_insert_with(|| uuid::Uuid::new_v4().to_string()).clone();
        self.audit.append(entry).await.map_err(Error::from)?;
        Ok(reference)
    }
}

/// Why work that holds data in memory could not start: `what` it could not do, and why.
fn memory_error(what: &str, e: veil_query::Unreserved) -> Error {
    match e {
        veil_query::Unreserved::TooLarge { .. } => {
            Error::new(veil_common::ErrorKind::PayloadTooLarge, "too_large_for_memory", format!("{what}: {e}"))
        }
        veil_query::Unreserved::Busy => {
            Error::new(veil_common::ErrorKind::Unavailable, "server_busy", format!("{what} now: {e}"))
        }
    }
}

/// The current time in unix seconds.
fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
