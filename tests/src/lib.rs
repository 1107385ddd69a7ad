//! Shared fixtures for the integration tests: a real Veil server on `127.0.0.1:0` over a fresh
//! data directory, and helpers to drive it over HTTP.

#![allow(clippy::unwrap_used)] // test support: a failed fixture should fail the test loudly

use std::path::{Path, PathBuf};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use veil_server::{AppState, ServerConfig};

pub mod logs;
pub mod world;

/// A running server and the directory it owns.
pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The Arrow Flight SQL endpoint on another loopback port, e.g. `http://127.0.0.1:41235`.
    pub flight: String,
    /// The admin's bearer token.
    pub admin: String,
    root: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    client: reqwest::Client,
}

impl TestServer {
    /// Initialises a data directory and starts a server on it.
    pub async fn start() -> Self {
        Self::start_with(usize::MAX).await
    }

    /// Same, with an upload limit.
    pub async fn start_with(max_upload_bytes: usize) -> Self {
        Self::start_configured(max_upload_bytes, veil_audit::Options::default()).await
    }

    /// Same, with an upload limit and audit log options.
    pub async fn start_configured(max_upload_bytes: usize, audit: veil_audit::Options) -> Self {
        Self::start_on(tempfile::tempdir().unwrap(), max_upload_bytes, audit).await
    }

    /// A server whose directories are in `parent` (a small disk of its own, say).
    pub async fn start_in(parent: &Path) -> Self {
        Self::start_on(tempfile::tempdir_in(parent).unwrap(), usize::MAX, veil_audit::Options::default()).await
    }

    async fn start_on(root: tempfile::TempDir, max_upload_bytes: usize, audit: veil_audit::Options) -> Self {
        let admin = initialise(&root);
        Self::launch(root, admin, max_upload_bytes, veil_query::Limits::standard(), audit).await
    }

    /// The state a server on a new data directory in `root` serves, without serving it (to
    /// drive the server's middleware with routes of a test's own).
    pub fn state_in(root: &tempfile::TempDir) -> AppState {
        initialise(root);
        let catalog = veil_catalog::Catalog::open(&root.path().join("data")).unwrap();
        let config = ServerConfig {
            import_root: None,
            max_upload_bytes: usize::MAX,
            query: veil_query::Limits::standard(),
            audit: veil_audit::Options::default(),
        };
        let files = veil_policy::PolicyFiles::in_dir(&root.path().join("data").join("policies"));
        let policy = veil_server::load_policy(&catalog, files).unwrap();
        AppState::new(catalog, config, policy).unwrap()
    }

    async fn launch(
        root: tempfile::TempDir,
        admin: String,
        max_upload_bytes: usize,
        query: veil_query::Limits,
        audit: veil_audit::Options,
    ) -> Self {
        logs::capture();
        let catalog = veil_catalog::Catalog::open(&root.path().join("data")).unwrap();
        let config = ServerConfig { import_root: Some(root.path().join("import")), max_upload_bytes, query, audit };
        let files = veil_policy::PolicyFiles::in_dir(&root.path().join("data").join("policies"));
        let policy = veil_server::load_policy(&catalog, files).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let flight_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let flight = format!("http://{}", flight_listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(catalog, config, policy).unwrap();
        let stop = veil_server::Stop::on(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(veil_server::run(listener, Some(flight_listener), state, stop));
        Self { url, flight, admin, root, shutdown: Some(tx), task: Some(task), client: reqwest::Client::new() }
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub async fn restart(self) -> Self {
        self.restart_with(veil_query::Limits::standard()).await
    }

    /// Same, with other query limits.
    pub async fn restart_with(mut self, limits: veil_query::Limits) -> Self {
        self.restart_in_place(limits).await;
        self
    }

    /// [`TestServer::restart_with`] where the server is held by something that cannot give it up.
    pub async fn restart_in_place(&mut self, limits: veil_query::Limits) {
        self.stop_in_place().await;
        let root = std::mem::replace(&mut self.root, tempfile::tempdir().unwrap());
        *self = Self::launch(root, self.admin.clone(), usize::MAX, limits, veil_audit::Options::default()).await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Every whole record in the audit log so far, read from the files.
    pub fn audit_records(&self) -> Vec<veil_audit::Record> {
        let filter = veil_audit::Filter::default();
        let page = veil_audit::search(&self.data_dir().join("audit"), &filter, usize::MAX, None).unwrap();
        page.records.into_iter().map(|s| s.record).collect()
    }

    /// The audit records filed under request id `reference`: what an answer's `audit_id`
    /// refers to.
    pub fn audit_records_of(&self, reference: &str) -> Vec<veil_audit::Record> {
        let filter = veil_audit::Filter { request_id: Some(reference.to_owned()), ..Default::default() };
        let page = veil_audit::search(&self.data_dir().join("audit"), &filter, usize::MAX, None).unwrap();
        page.records.into_iter().map(|s| s.record).collect()
    }

    /// The policy directory (the demo policy, to start with).
    pub fn policy_dir(&self) -> PathBuf {
        self.data_dir().join("policies")
    }

    /// The import root.
    pub fn import_root(&self) -> PathBuf {
        self.root.path().join("import")
    }

    /// The directory holding `data/` and `import/`; free for test files.
    pub fn scratch(&self) -> &Path {
        self.root.path()
    }

    /// A request to `/v1{path}` with `token`, if any.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.url));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends and returns status and JSON body (`Null` for an empty body).
    pub async fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, body)
    }

    /// `POST` JSON as the given token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.request(Method::POST, path, Some(token)).json(&body)).await
    }

    /// `GET` as the given token.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(self.request(Method::GET, path, Some(token))).await
    }

    /// Creates a user with a new token and returns the token.
    pub async fn user(&self, id: &str, department: Option<&str>, roles: &[&str]) -> String {
        let (status, body) =
            self.post("/v1/users", &self.admin, json!({"id": id, "department": department, "roles": roles})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self.post(&format!("/v1/users/{id}/tokens"), &self.admin, json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a department.
    pub async fn department(&self, id: &str, name: &str) {
        let (status, body) = self.post("/v1/departments", &self.admin, json!({"id": id, "name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Uploads a dataset as multipart: metadata JSON, then the file bytes.
    pub async fn upload(&self, token: &str, metadata: &Value, file: Vec<u8>) -> (StatusCode, Value) {
        let form = reqwest::multipart::Form::new()
            .part("metadata", reqwest::multipart::Part::text(metadata.to_string()))
            .part("file", reqwest::multipart::Part::bytes(file).file_name("data"));
        self.send(self.request(Method::POST, "/v1/datasets", Some(token)).multipart(form)).await
    }

    /// Every file under the data directory's `datasets/` and `tmp/`.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir().join("datasets"), &mut out);
        walk(&self.data_dir().join("tmp"), &mut out);
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Initialises a data directory under `root` with the demo policy, and an import root beside
/// it; returns the admin's token.
fn initialise(root: &tempfile::TempDir) -> String {
    let token_file = root.path().join("admin.token");
    let policy =
        [("policies/model.conf", veil_policy::DEFAULT_MODEL), ("policies/policy.csv", veil_policy::DEMO_POLICY)];
    veil_catalog::init(&root.path().join("data"), &token_file, &veil_common::UserId::new("admin").unwrap(), &policy)
        .unwrap();
    fixed_secret(&root.path().join("data"));
    std::fs::create_dir(root.path().join("import")).unwrap();
    std::fs::read_to_string(&token_file).unwrap().trim().to_owned()
}

/// Replaces the installation's secret (which seeds pseudonyms and anonymized answers' noise)
/// with one fixed by the test's name and how many data directories it made before: a test's
/// answers are then the same at every run. Drawn afresh at every run, a group a test expects
/// released was withheld by the threshold's tail about once in some hundreds of runs.
fn fixed_secret(data: &Path) {
    use std::hash::{DefaultHasher, Hash, Hasher};
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let test = std::thread::current().name().unwrap_or("").to_owned();
    let mut key = Vec::with_capacity(32);
    for part in 0u8..4 {
        // SipHash with its fixed keys: the same bytes for the same test at every run.
        let mut hasher = DefaultHasher::new();
        (&test, made, part).hash(&mut hasher);
        key.extend(hasher.finish().to_le_bytes());
    }
    std::fs::write(data.join("keys").join("pseudonym.key"), key).unwrap();
}
