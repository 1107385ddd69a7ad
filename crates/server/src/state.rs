//! State shared by every handler, and the server's configuration.

use std::path::PathBuf;
use std::sync::Arc;

use veil_audit::{Actor, AuditLog, Entry, Receipt};
use veil_broker::Broker;
pub use veil_broker::{actor, load_policy, subject};
use veil_catalog::{Catalog, Principal};
use veil_policy::CasbinPolicy;

use crate::error::ApiError;
use crate::telemetry::Metrics;

/// Settings of a running server, validated before it starts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where stewards may point `"source"` at files to import; `None` turns path import off.
    pub import_root: Option<PathBuf>,
    /// Largest dataset upload accepted, in bytes.
    pub max_upload_bytes: usize,
    /// Limits every query runs under.
    pub query: veil_broker::Limits,
    /// How the audit log writes and signs.
    pub audit: veil_audit::Options,
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The catalogue.
    pub catalog: Arc<Catalog>,
    /// Server settings.
    pub config: Arc<ServerConfig>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Who may query what.
    pub policy: Arc<CasbinPolicy>,
    /// The tamper-evident audit log: every decision and change is recorded here before its
    /// response is sent.
    pub audit: Arc<AuditLog>,
    /// The query use case: decides, runs and records every query.
    pub broker: Broker,
    /// Registrations in progress, for their stewards.
    pub uploads: Arc<crate::uploads::Uploads>,
}

/// The current time in unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The query runtime could not be built.
    #[error(transparent)]
    Query(#[from] veil_broker::Error),
    /// The audit log could not be opened (or does not verify at its end).
    #[error(transparent)]
    Audit(#[from] veil_audit::Error),
    /// The catalogue's pending audit records could not be read or cleared.
    #[error(transparent)]
    Catalog(#[from] veil_catalog::Error),
}

/// What the audit trail needs to know about the HTTP request being served.
#[derive(Debug, Default)]
pub(crate) struct RequestContext {
    /// The request id (also the `x-request-id` header).
    pub(crate) id: String,
    /// The signed-in caller, once authenticated.
    pub(crate) actor: std::sync::Mutex<Option<Actor>>,
    /// Whether the handler recorded the request itself.
    pub(crate) audited: std::sync::atomic::AtomicBool,
}

tokio::task_local! {
    /// The request being served, set by the telemetry middleware so audit records name their
    /// request and caller without every handler passing them along.
    pub(crate) static REQUEST: std::sync::Arc<RequestContext>;
}

/// `entry` as the audit log will hold it for this request: with its request id. For records
/// written by the catalogue with their change, off the request's task.
pub(crate) fn for_this_request(mut entry: Entry) -> Entry {
    let _ = REQUEST.try_with(|request| {
        entry.request_id.get_or_insert_with(|| request.id.clone());
    });
    entry
}

/// The id of the HTTP request being served, for a record made where the request's task-local
/// context is not (a closure run on the catalogue's blocking thread).
pub(crate) fn this_request_id() -> Option<String> {
    REQUEST.try_with(|request| request.id.clone()).ok()
}

/// A pending record as the log will hold it, saying why it comes late (`late`).
fn late_entry(pending: &veil_catalog::Pending, late: &str) -> Entry {
    match serde_json::from_str::<Entry>(&pending.entry) {
        Ok(mut entry) => {
            entry.detail = Some(match entry.detail.take() {
                Some(d) => format!("{d} ({late})"),
                None => late.to_owned(),
            });
            entry
        }
        Err(_) => {
            let mut entry = Entry::new("audit.recovered", "failed");
            entry.detail = Some(format!("a record written with a change could not be read; {late}"));
            entry
        }
    }
}

/// Appends the records that changes wrote with themselves but that never reached the audit log
/// (the process stopped in between), each saying so, then clears them.
fn append_pending(catalog: &Catalog, audit: &AuditLog) -> Result<(), StartError> {
    const LATE: &str =
        "appended when the server started: committed with its change, which the process outlived only in the catalogue";
    for pending in catalog.pending_records()? {
        audit.append_blocking(late_entry(&pending, LATE))?;
        catalog.clear_pending(pending.id)?;
        tracing::warn!(id = pending.id, "a pending audit record was appended at start");
    }
    Ok(())
}

/// While the server runs: appends the pending records that have waited at least a whole
/// `every` (their request's own append failed, or it is still running after that long), each
/// saying so, then clears them. A record still pending at shutdown is appended at the next start.
pub(crate) async fn drain_pending(state: AppState, every: std::time::Duration) {
    const LATE: &str = "appended while the server ran, after its request's own append had failed";
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The newest pending record seen at the previous look: only those have waited long enough.
    let mut seen = 0;
    loop {
        ticker.tick().await;
        let Ok(pending) = state.blocking(|c| c.pending_records()).await else { continue };
        for p in pending.iter().filter(|p| p.id <= seen) {
            if state.audit.append(late_entry(p, LATE)).await.is_err() {
                break; // the log still cannot write; next time
            }
            let id = p.id;
            if state.blocking(move |c| c.clear_pending(id)).await.is_err() {
                break;
            }
            tracing::warn!(id, "a pending audit record was appended late");
        }
        seen = pending.iter().map(|p| p.id).max().unwrap_or(seen);
    }
}

/// A record of `action` by a signed-in caller, with `decision`; the handler adds the rest.
pub(crate) fn entry_by(caller: &Principal, action: &str, decision: &str) -> Entry {
    let mut entry = Entry::new(action, decision);
    entry.actor = Some(actor(caller));
    entry
}

impl AppState {
    /// State over an open catalogue and a loaded policy. Queries spill under the data
    /// directory's `tmp/`, which every open empties; the audit log is opened (and its end
    /// recovered) in the data directory's `audit/`.
    ///
    /// # Errors
    /// When the query runtime cannot be built or the audit log cannot be opened.
    pub fn new(catalog: Catalog, config: ServerConfig, policy: CasbinPolicy) -> Result<Self, StartError> {
        let audit = Arc::new(AuditLog::open(&catalog.dir().audit(), &catalog.dir().audit_key(), config.audit.clone())?);
        append_pending(&catalog, &audit)?;
        let spill_dir = catalog.dir().tmp();
        let catalog = Arc::new(catalog);
        let policy = Arc::new(policy);
        let broker = Broker::new(
            Arc::clone(&catalog),
            Arc::clone(&policy),
            Arc::clone(&audit),
            config.query.clone(),
            &spill_dir,
        )?;
        let metrics = Arc::new(Metrics::new());
        let observer = Arc::clone(&metrics);
        audit.observe(move |appended| observer.appended(appended));
        Ok(Self { catalog, config: Arc::new(config), metrics, policy, audit, broker, uploads: Arc::default() })
    }

    /// Runs synchronous catalogue work on a blocking thread, so SQLite and file I/O never stall
    /// the async runtime.
    pub(crate) async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Catalog) -> Result<T, veil_catalog::Error> + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.broker.blocking(work).await?)
    }

    /// Feeds the policy engine the current role memberships and grants, after a change to either.
    pub(crate) async fn refresh_policy(&self) -> Result<(), ApiError> {
        let policy = Arc::clone(&self.policy);
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            let now = now_unix();
            let (memberships, grants) = veil_broker::policy_subjects(&catalog, now)?;
            policy.set_subjects(memberships, grants, now).map_err(ApiError::internal)
        })
        .await
        .map_err(|e| ApiError::internal(format!("policy task failed: {e}")))?
    }

    /// The broker's view of a signed-in caller on this request: the principal, with the
    /// request id its audit record carries. The request counts as recorded by its handler,
    /// since the broker records every query it is given.
    pub(crate) fn broker_caller(principal: Principal) -> veil_broker::Caller {
        let request_id = REQUEST
            .try_with(|request| {
                request.audited.store(true, std::sync::atomic::Ordering::Relaxed);
                request.id.clone()
            })
            .ok();
        veil_broker::Caller { principal, request_id }
    }

    /// Appends `entry` to the audit log, with this request's id, and returns once it is on
    /// disk. If the log cannot write, the caller fails (503): nothing goes unrecorded.
    pub(crate) async fn audit(&self, mut entry: Entry) -> Result<Receipt, ApiError> {
        let _ = REQUEST.try_with(|request| {
            request.audited.store(true, std::sync::atomic::Ordering::Relaxed);
            entry.request_id.get_or_insert_with(|| request.id.clone());
        });
        self.audit.append(entry).await.map_err(ApiError::from)
    }

    /// Appends the audit record a catalogue change wrote in its own transaction, then clears it
    /// from the catalogue: the change and its record are never apart, even across a crash
    /// (a record left pending is appended by [`drain_pending`] or at the next start).
    pub(crate) async fn audit_pending(&self, pending: Option<veil_catalog::Pending>) -> Result<Receipt, ApiError> {
        let Some(pending) = pending else {
            return Err(ApiError::internal("a change was committed without its audit record"));
        };
        let entry: Entry = serde_json::from_str(&pending.entry).map_err(ApiError::internal)?;
        let receipt = self.audit(entry).await?;
        self.blocking(move |c| c.clear_pending(pending.id)).await?;
        Ok(receipt)
    }

    /// Records a simple event: an action by `actor` on `target`, its decision and why.
    pub(crate) async fn event(
        &self,
        action: &str,
        actor: Option<&Principal>,
        target: Option<String>,
        decision: &str,
        detail: impl Into<String>,
    ) -> Result<Receipt, ApiError> {
        let mut entry = match actor {
            Some(caller) => entry_by(caller, action, decision),
            None => Entry::new(action, decision),
        };
        entry.target = target;
        entry.detail = Some(detail.into()).filter(|d: &String| !d.is_empty());
        self.audit(entry).await
    }
}
