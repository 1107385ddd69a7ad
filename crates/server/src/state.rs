//! State shared by every handler, and the server's configuration.

use std::path::PathBuf;
use std::sync::Arc;

use veil_catalog::{AccessRequest, Catalog, Principal};
use veil_common::{Event, EventSink};
use veil_policy::{CasbinPolicy, Grant, Membership, PolicyFiles, Subject};

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
    pub query: veil_query::Limits,
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
    /// Where auditable events go.
    pub events: Arc<dyn EventSink>,
    /// Runs guarded queries.
    pub query: Arc<veil_query::QueryEngine>,
}

/// The current time in unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The policy subject for a signed-in principal.
pub fn subject(principal: &Principal) -> Subject {
    Subject { user: principal.user.clone(), department: principal.department.clone(), roles: principal.roles.clone() }
}

fn grant(request: AccessRequest) -> Grant {
    Grant {
        id: request.id,
        user: request.user,
        dataset: request.dataset,
        mode: request.mode,
        expires_at: request.expires_at,
    }
}

fn memberships(catalog: &Catalog) -> Result<Vec<Membership>, veil_catalog::Error> {
    Ok(catalog
        .memberships()?
        .into_iter()
        .map(|(user, department, role)| Membership { user, department, role })
        .collect())
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
    let grants = catalog.active_grants(now)?.into_iter().map(grant).collect();
    Ok(CasbinPolicy::from_files(files, memberships(catalog)?, grants, now)?)
}

impl AppState {
    /// State over an open catalogue and a loaded policy. Queries spill under the data
    /// directory's `tmp/`, which every open empties.
    ///
    /// # Errors
    /// When the query runtime cannot be built.
    pub fn new(
        catalog: Catalog,
        config: ServerConfig,
        policy: CasbinPolicy,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, veil_query::Error> {
        let query = veil_query::QueryEngine::new(config.query.clone(), &catalog.dir().tmp())?;
        Ok(Self {
            catalog: Arc::new(catalog),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            policy: Arc::new(policy),
            events,
            query: Arc::new(query),
        })
    }

    /// Runs synchronous catalogue work on a blocking thread, so SQLite and file I/O never stall
    /// the async runtime.
    pub(crate) async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Catalog) -> Result<T, veil_catalog::Error> + Send + 'static,
        T: Send + 'static,
    {
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || work(&catalog))
            .await
            .map_err(|e| ApiError::internal(format!("catalogue task failed: {e}")))?
            .map_err(ApiError::from)
    }

    /// Feeds the policy engine the current role memberships and grants, after a change to either.
    pub(crate) async fn refresh_policy(&self) -> Result<(), ApiError> {
        let policy = Arc::clone(&self.policy);
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            let now = now_unix();
            let grants = catalog.active_grants(now)?.into_iter().map(grant).collect();
            policy.set_subjects(memberships(&catalog)?, grants, now).map_err(ApiError::internal)
        })
        .await
        .map_err(|e| ApiError::internal(format!("policy task failed: {e}")))?
    }

    /// Reports an auditable event.
    pub(crate) fn event(
        &self,
        action: &'static str,
        actor: Option<&Principal>,
        target: Option<String>,
        outcome: &'static str,
        detail: impl Into<String>,
    ) {
        self.events.record(Event {
            action,
            actor: actor.map(|p| p.user.to_string()),
            target,
            outcome,
            detail: detail.into(),
        });
    }
}
