//! State shared by every handler, and the server's configuration.

use std::path::PathBuf;
use std::sync::Arc;

use veil_catalog::Catalog;

use crate::error::ApiError;
use crate::telemetry::Metrics;

/// Settings of a running server, validated before it starts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where stewards may point `"source"` at files to import; `None` turns path import off.
    pub import_root: Option<PathBuf>,
    /// Largest dataset upload accepted, in bytes.
    pub max_upload_bytes: usize,
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
}

impl AppState {
    /// State over an open catalogue.
    pub fn new(catalog: Catalog, config: ServerConfig) -> Self {
        Self { catalog: Arc::new(catalog), config: Arc::new(config), metrics: Arc::new(Metrics::new()) }
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
}
