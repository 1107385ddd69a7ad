//! Request logging and Prometheus metrics.
//!
//! Logs carry the method, the matched route *template* (`/v1/datasets/{dataset}`), the status
//! and the latency: never a query string, a body, a header value or a path parameter, so no
//! data value and no token can reach a log line.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use veil_audit::{Appended, Entry};

use crate::error::{ApiError, Refusal};
use crate::state::{AppState, REQUEST, RequestContext};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    mode: String,
    decision: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    cause: String,
}

/// The server's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    auth: Family<OutcomeLabels, Counter>,
    ingested_rows: Counter,
    registered: Counter,
    decisions: Family<DecisionLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    epsilon: Counter<f64, AtomicU64>,
    rho: Counter<f64, AtomicU64>,
    audit_appends: Family<OutcomeLabels, Counter>,
    audit_latency: Histogram,
    spills: Counter,
    spilled_bytes: Counter,
    resident_bytes: Gauge,
}

impl Metrics {
    /// A fresh registry with every Veil metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("veil");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        let auth = Family::<OutcomeLabels, Counter>::default();
        let ingested_rows = Counter::default();
        let registered = Counter::default();
        registry.register("http_requests", "HTTP requests by method, route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register("authentications", "Bearer token checks by outcome", auth.clone());
        registry.register("ingested_rows", "Rows ingested into dataset versions", ingested_rows.clone());
        registry.register("dataset_versions_registered", "Dataset versions registered", registered.clone());
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("query_decisions", "Query decisions by mode, decision and rule", decisions.clone());
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "query_failures",
            "Queries that failed while running, by cause (deadline: timeouts; memory limit)",
            failures.clone(),
        );
        let epsilon = Counter::<f64, AtomicU64>::default();
        registry.register("dp_epsilon_spent", "Privacy budget ε charged by dp answers", epsilon.clone());
        let rho = Counter::<f64, AtomicU64>::default();
        registry.register("dp_rho_spent", "zCDP ρ charged by dp answers", rho.clone());
        let audit_appends = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "audit_appends",
            "Audit records appended, by outcome (written or failed)",
            audit_appends.clone(),
        );
        let audit_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "audit_append_duration_seconds",
            "Time to append an audit record, until it is on disk",
            audit_latency.clone(),
        );
        let spills = Counter::default();
        registry.register("query_spills", "Times queries' operators spilled to disk", spills.clone());
        let spilled_bytes = Counter::default();
        registry.register("query_spilled_bytes", "Bytes queries' operators spilled to disk", spilled_bytes.clone());
        let resident_bytes = Gauge::default();
        registry.register("process_resident_memory_bytes", "Resident memory of the process", resident_bytes.clone());
        Self {
            registry,
            requests,
            latency,
            auth,
            ingested_rows,
            registered,
            decisions,
            failures,
            epsilon,
            rho,
            audit_appends,
            audit_latency,
            spills,
            spilled_bytes,
            resident_bytes,
        }
    }

    /// Counts one audit append and what its record says of a query: its decision by mode and
    /// rule, a failure's cause, the budget it charged.
    pub fn appended(&self, appended: &Appended) {
        let outcome = if appended.written { "written" } else { "failed" };
        self.audit_appends.get_or_create(&OutcomeLabels { outcome }).inc();
        self.audit_latency.observe(appended.latency.as_secs_f64());
        if appended.action != "query" || !appended.written {
            return;
        }
        let labels = DecisionLabels {
            mode: appended.mode.clone().unwrap_or_default(),
            decision: appended.decision.clone(),
            rule: appended.rule.clone().unwrap_or_default(),
        };
        self.decisions.get_or_create(&labels).inc();
        let cause = match (appended.rule.as_deref(), appended.failure.as_deref()) {
            (Some("query_timeout"), _) => Some("deadline"),
            (Some("query_memory_exceeded"), _) => Some("memory limit"),
            (_, Some(kind)) => Some(kind),
            _ => None,
        };
        if let Some(cause) = cause {
            self.failures.get_or_create(&FailureLabels { cause: cause.to_owned() }).inc();
        }
        if let Some(epsilon) = appended.epsilon.filter(|e| e.is_finite() && *e > 0.0) {
            self.epsilon.inc_by(epsilon);
        }
        if let Some(rho) = appended.rho.filter(|r| r.is_finite() && *r > 0.0) {
            self.rho.inc_by(rho);
        }
    }

    /// Brings the figures read at scrape time up to date: spills so far, resident memory.
    pub fn refresh(&self, (spills, spilled_bytes): (u64, u64)) {
        self.spills.inc_by(spills.saturating_sub(self.spills.get()));
        self.spilled_bytes.inc_by(spilled_bytes.saturating_sub(self.spilled_bytes.get()));
        if let Some(bytes) = resident_bytes() {
            self.resident_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Counts one token check.
    pub fn auth(&self, ok: bool) {
        self.auth.get_or_create(&OutcomeLabels { outcome: if ok { "ok" } else { "rejected" } }).inc();
    }

    /// Counts one registered version of `rows` rows.
    pub fn registered(&self, rows: u64) {
        self.registered.inc();
        self.ingested_rows.inc_by(rows);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process's resident memory, from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: gives every request an id (the `x-request-id` response header), logs it, and
/// records its metrics.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", id = %request_id, method = %method, route = %route);
    let context = Arc::new(RequestContext { id: request_id.clone(), ..RequestContext::default() });
    // A panic in a handler (a bug) is answered 500 with the generic code and recorded below as
    // a failed request, instead of dropping the connection with nothing in the audit log.
    let served = REQUEST.scope(Arc::clone(&context), AssertUnwindSafe(next.run(request)).catch_unwind());
    let mut response = match tracing::Instrument::instrument(served, span.clone()).await {
        Ok(response) => response,
        Err(_) => {
            span.in_scope(|| tracing::error!("the request's handler panicked"));
            ApiError::internal("the request's handler panicked").into_response()
        }
    };
    // Every refusal the handler did not record: a 403 from anyone, and a refused change (a
    // registration that does not validate, a decision on a request already decided) by a
    // signed-in caller. A readiness probe's 503 is its answer, not a failure: recording it would
    // write a record per probe while the disk is low, and replace the answer while the log
    // cannot write.
    let status = response.status();
    let refused_change = status.is_client_error()
        && !matches!(method.as_str(), "GET" | "HEAD")
        && context.actor.lock().is_ok_and(|a| a.is_some());
    if (status == StatusCode::FORBIDDEN || refused_change || status.is_server_error())
        && !context.audited.load(Ordering::Relaxed)
        && route != "/readyz"
    {
        response = record_refusal(&state, &context, format!("{method} {route}"), response).await;
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| tracing::info!(status, ms = elapsed.as_millis() as u64, "request done"));
    state.metrics.requests.get_or_create(&RequestLabels { method, route: route.clone(), status }).inc();
    state.metrics.latency.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Records a refusal the handler did not record itself, so every denied action or change is in
/// the audit trail; if the record cannot be written, the answer is 503 instead. A 403's message
/// says which rule refused; other refusals keep their code and status only, since a validation
/// message may quote what was sent.
async fn record_refusal(state: &AppState, context: &RequestContext, target: String, response: Response) -> Response {
    let refusal = response.extensions().get::<Refusal>().cloned();
    let mut entry = if response.status().is_server_error() {
        Entry::new("request.failed", "failed")
    } else {
        Entry::new("request.denied", "denied")
    };
    entry.request_id = Some(context.id.clone());
    entry.actor = context.actor.lock().ok().and_then(|a| a.clone());
    entry.target = Some(target);
    entry.rule = refusal.as_ref().map(|r| r.code.to_owned());
    entry.detail = if response.status() == StatusCode::FORBIDDEN {
        refusal.map(|r| r.message)
    } else {
        Some(format!("refused with status {}", response.status().as_u16()))
    };
    match state.audit.append(entry).await {
        Ok(_) => response,
        Err(e) => ApiError::from(e).into_response(),
    }
}
