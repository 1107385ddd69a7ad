//! `POST /v1/query`: the query path's HTTP edge (DESIGN §3). Resolves the datasets a query
//! names, asks the policy about all of them at once (就高从严), and hands the query to the guarded
//! engine with a session that holds exactly those datasets.

use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::ipc::writer::StreamWriter;
use arrow::json::{ArrayWriter, WriterBuilder};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ring::digest;
use veil_audit::{DatasetUse, Entry};
use veil_catalog::{DatasetInfo, Principal};
use veil_common::{AUDIT_SCHEMA, DatasetName, DatasetRef, DepartmentId, ErrorKind, Mode};
use veil_policy::{DatasetMeta, PolicyEngine};
use veil_query::{Answer, DpParams, QueryRequest, SessionDataset};

use super::AppJson;
use super::budget::{self, DatasetCap};
use crate::auth::Caller;
use crate::authz;
use crate::dto::{BudgetView, DpAnswer, ErrorBody, NoisyColumn, QueryBody, QueryColumn, QueryResponse, QueryRule};
use crate::error::ApiError;
use crate::state::{AppState, entry_by, now_unix, subject};

/// The audit log's table, for auditors.
const AUDIT_TABLE: &str = "audit.events";

/// The media type of an Arrow IPC stream answer.
pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Runs one query in a result mode and returns only what that mode releases.
///
/// JSON by default; an Arrow IPC stream when `Accept: application/vnd.apache.arrow.stream`,
/// with `x-veil-suppressed-groups`, `x-veil-k` and `x-veil-audit-id` headers. With
/// `"dry_run": true` the query is decided and explained, not run.
#[utoipa::path(post, path = "/v1/query", tag = "query", security(("bearer" = [])), request_body = QueryBody,
    responses((status = 200, body = QueryResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(crate) async fn query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<QueryBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut entry = entry_by(&caller, "query", if body.dry_run { "dry_run" } else { "allowed" });
    entry.mode = Some(body.mode.clone());
    entry.sql_sha256 = Some(veil_common::hex::encode(digest::digest(&digest::SHA256, body.sql.as_bytes()).as_ref()));
    entry.sql = Some(recorded_sql(&body.sql, state.query.limits().max_sql_bytes));
    let outcome = run(&state, &caller, body, &mut entry).await;
    entry.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match &outcome {
        Ok(done) => {
            if done.answer.executed {
                entry.rows = Some(done.answer.row_count() as u64);
                entry.suppressed_groups = Some(done.answer.suppressed_groups);
            }
        }
        Err(e) => {
            entry.decision =
                if e.status().is_client_error() && e.code() != "query_failed" { "denied" } else { "failed" }.into();
            entry.rule = Some(e.code().to_owned());
            entry.detail = Some(e.message().to_owned());
        }
    }
    // The record is on disk before anything of the answer leaves (DESIGN §3).
    let receipt = state.audit(entry).await?;
    let done = match outcome {
        Ok(done) => done,
        Err(e) => return Ok(with_audit_id(e.into_response(), receipt.seq)),
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|m| m.trim().starts_with(ARROW_STREAM)));
    if wants_arrow && done.answer.executed {
        return arrow_response(&done, receipt.seq);
    }
    Ok(with_audit_id(Json(json_response(done, receipt.seq)?).into_response(), receipt.seq))
}

/// The SQL as typed, for the record; text beyond what any query may be long is cut (its hash
/// covers the whole text), so an over-long refusal cannot flood the log.
fn recorded_sql(sql: &str, max_bytes: usize) -> String {
    if sql.len() <= max_bytes {
        return sql.to_owned();
    }
    let mut end = max_bytes;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut at {end} of {} bytes]", &sql[..end], sql.len())
}

/// Adds the `x-veil-audit-id` header: the sequence number of this request's audit record.
fn with_audit_id(mut response: Response, seq: u64) -> Response {
    response.headers_mut().insert("x-veil-audit-id", HeaderValue::from(seq));
    response
}

/// A query that was decided (and run, unless a dry run).
struct Done {
    answer: Answer,
    /// The level the query was judged at, or `audit` for the audit log.
    level: String,
    k: u64,
    /// The policy's decision for each dataset.
    policy: Vec<QueryRule>,
    /// Dp mode: the budget of each dataset after the query.
    budget: Option<Vec<BudgetView>>,
}

/// Decides and runs a query, noting in `entry` the datasets it uses as they are resolved.
async fn run(state: &AppState, caller: &Principal, body: QueryBody, entry: &mut Entry) -> Result<Done, ApiError> {
    let mode: Mode = body
        .mode
        .parse()
        .map_err(|e: veil_common::mode::UnknownMode| ApiError::bad_request("unknown_mode", e.to_string()))?;
    let parsed = veil_query::parse(&body.sql, state.query.limits().max_sql_bytes)?;
    if parsed.tables().is_empty() {
        return Err(ApiError::bad_request("no_dataset", "the query reads no dataset; name one as department.dataset"));
    }
    if parsed.tables().iter().any(|(schema, _)| schema == AUDIT_SCHEMA) {
        return audit_query(state, caller, &parsed, body.dry_run, entry).await;
    }
    let mut refs = Vec::new();
    for (department, name) in parsed.tables() {
        let unknown = || veil_query::Error::UnknownDataset(format!("{department}.{name}"));
        let department = DepartmentId::new(department.clone()).map_err(|_| unknown())?;
        let name = DatasetName::new(name.clone()).map_err(|_| unknown())?;
        refs.push(DatasetRef { department, name });
    }
    let user = caller.user.clone();
    let now = now_unix();
    let (found, grants) = state
        .blocking(move |c| {
            let mut found = Vec::new();
            for r in &refs {
                let info = c.dataset(r)?;
                if info.retired_at.is_some() {
                    return Err(veil_catalog::Error::DatasetNotFound(r.clone()));
                }
                found.push((info, c.current_file(r)?));
            }
            let grants = c.active_grants(now)?.into_iter().filter(|g| g.user == user).collect::<Vec<_>>();
            Ok((found, grants))
        })
        .await?;
    entry.datasets = found
        .iter()
        .map(|(d, _)| DatasetUse { dataset: d.dataset.to_string(), level: Some(d.level.to_string()) })
        .collect();
    let metas: Vec<DatasetMeta> =
        found.iter().map(|(d, _)| DatasetMeta { dataset: d.dataset.clone(), level: d.level }).collect();
    let decision = state.policy.decide(&subject(caller), &metas, mode, now);
    if let Some(denied) = decision.first_denial() {
        return Err(ApiError::new(ErrorKind::Forbidden, denied.rule, format!("{}: {}", denied.dataset, denied.reason)));
    }
    let k =
        decision.level.min_group_size().ok_or_else(|| ApiError::forbidden("core data never leaves its department"))?;

    // Pseudonyms are keyed by the analyst and the grant (or policy line) each dataset is used
    // under, so outputs under two grants cannot be linked.
    // The audit record says on what basis each dataset was used: a policy line, or an access
    // request with its purpose (PIPL purpose limitation), so an auditor sees why as well as who.
    let mut scope = caller.user.to_string();
    let mut basis = Vec::with_capacity(decision.checks.len());
    for check in &decision.checks {
        let grant = grants.iter().find(|g| g.dataset == check.dataset && g.mode == mode);
        scope.push_str(&format!("\n{}:{}", check.dataset, grant.map_or("policy", |g| g.id.as_str())));
        basis.push(match grant {
            Some(g) => format!("{}: access request {} for \"{}\"", check.dataset, g.id, g.purpose),
            None => format!("{}: {}", check.dataset, check.reason),
        });
    }
    entry.detail = Some(basis.join("; "));
    let pseudonym_key = state.catalog.pseudonym_key(&scope);
    let caps: Vec<DatasetCap> = found.iter().map(|(d, _)| DatasetCap::of(d)).collect();
    let dp = match mode {
        Mode::Dp => Some(DpParams { epsilon: budget::epsilon(body.epsilon, &caps)?, delta: budget::DELTA }),
        _ => None,
    };
    let request = QueryRequest {
        mode,
        k,
        datasets: found.into_iter().map(|(info, path)| session_dataset(info, path)).collect(),
        dry_run: body.dry_run,
        pseudonym_key,
        dp,
    };
    let prepared = state.query.prepare(&parsed, request).await?;
    let (answer, budget) = match dp {
        Some(params) => {
            let (answer, budget) = budget::run_dp(state, caller, prepared, params, caps, entry).await?;
            (answer, Some(budget))
        }
        None => (state.query.execute(prepared).await?, None),
    };
    let policy = decision
        .checks
        .iter()
        .map(|c| QueryRule { code: c.rule.to_owned(), detail: format!("{}: {}", c.dataset, c.reason) })
        .collect();
    Ok(Done { answer, level: decision.level.as_str().to_owned(), k, policy, budget })
}

/// A query over `audit.events`, the audit log as a table: auditors only, every record as
/// recorded (the log holds no value read from a dataset), not combined with datasets. For anyone
/// else the table does not exist, like any dataset they may not use.
async fn audit_query(
    state: &AppState,
    caller: &Principal,
    parsed: &veil_query::ParsedQuery,
    dry_run: bool,
    entry: &mut Entry,
) -> Result<Done, ApiError> {
    entry.action = "audit.query".into();
    entry.mode = None;
    entry.datasets = vec![DatasetUse { dataset: AUDIT_TABLE.into(), level: None }];
    for (schema, name) in parsed.tables() {
        if schema != AUDIT_SCHEMA || name != "events" || authz::read_audit(state, caller).is_err() {
            return Err(veil_query::Error::UnknownDataset(format!("{schema}.{name}")).into());
        }
    }
    let page = super::audit::find(state, veil_audit::Filter::default(), usize::MAX).await?;
    let through = page.records.last().map_or(0, |r| r.record.seq);
    let batch = veil_audit::to_batch(&page.records).map_err(ApiError::internal)?;
    let answer =
        state.query.run_unguarded(parsed, vec![(AUDIT_SCHEMA.to_owned(), "events".to_owned(), batch)], dry_run).await?;
    let policy = vec![QueryRule {
        code: "auditor_reads_audit_log".into(),
        detail: format!("{AUDIT_TABLE}: every record up to seq {through}, as recorded, for auditors only"),
    }];
    Ok(Done { answer, level: AUDIT_SCHEMA.to_owned(), k: 0, policy, budget: None })
}

fn session_dataset(info: DatasetInfo, path: std::path::PathBuf) -> SessionDataset {
    let columns = info
        .columns
        .iter()
        .map(|c| {
            let column = veil_guard::ColumnInfo {
                tag: c.tag,
                linkable: c.linkable, // registration allows it only on identifiers
                generalize: c.generalize,
                bounds: c.bounds,
                public_values: c.public_values.clone(),
            };
            (c.name.clone(), column)
        })
        .collect();
    SessionDataset {
        department: info.dataset.department.to_string(),
        name: info.dataset.name.to_string(),
        path,
        rows: info.row_count,
        info: veil_guard::DatasetInfo {
            privacy_unit: info.privacy_unit,
            columns,
            contribution: veil_guard::Contribution { max_groups: info.dp.max_groups, max_rows: info.dp.max_rows },
            one_row_per_unit: info.one_row_per_unit,
        },
    }
}

fn rules(done: &Done) -> Vec<QueryRule> {
    let guard = done.answer.rules.iter().map(|r| QueryRule { code: r.code.to_owned(), detail: r.detail.clone() });
    done.policy.iter().cloned().chain(guard).collect()
}

fn json_response(mut done: Done, audit_id: u64) -> Result<QueryResponse, ApiError> {
    let budget = done.budget.take().unwrap_or_default();
    let columns: Vec<QueryColumn> = done
        .answer
        .schema
        .fields()
        .iter()
        .map(|f| QueryColumn { name: f.name().clone(), data_type: f.data_type().to_string() })
        .collect();
    let rows = json_rows(&done.answer.batches, &columns)?;
    let dp = done.answer.dp.as_ref().map(|r| DpAnswer {
        epsilon: r.epsilon,
        delta: r.delta,
        measurements: r.measurements,
        threshold: r.threshold,
        replayed: r.replayed,
        intervals: r
            .intervals
            .iter()
            .map(|(column, ci)| NoisyColumn {
                column: column.clone(),
                ci95: ci.iter().map(|(l, h)| [*l, *h]).collect(),
            })
            .collect(),
        budget,
    });
    Ok(QueryResponse {
        dry_run: !done.answer.executed,
        rules: rules(&done),
        columns,
        rows,
        suppressed_groups: done.answer.suppressed_groups,
        level: done.level.clone(),
        k: done.k,
        audit_id,
        dp,
    })
}

/// Rows as JSON arrays in column order, through arrow's JSON writer (explicit nulls).
fn json_rows(batches: &[RecordBatch], columns: &[QueryColumn]) -> Result<Vec<Vec<serde_json::Value>>, ApiError> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let mut writer: ArrayWriter<Vec<u8>> = WriterBuilder::new().with_explicit_nulls(true).build(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(ApiError::internal)?;
    writer.finish().map_err(ApiError::internal)?;
    let bytes = writer.into_inner();
    let objects: Vec<serde_json::Map<String, serde_json::Value>> =
        if bytes.is_empty() { Vec::new() } else { serde_json::from_slice(&bytes).map_err(ApiError::internal)? };
    Ok(objects
        .into_iter()
        .map(|mut o| columns.iter().map(|c| o.remove(&c.name).unwrap_or(serde_json::Value::Null)).collect())
        .collect())
}

fn arrow_response(done: &Done, audit_id: u64) -> Result<Response, ApiError> {
    let mut bytes = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut bytes, &done.answer.schema).map_err(ApiError::internal)?;
        for b in &done.answer.batches {
            writer.write(b).map_err(ApiError::internal)?;
        }
        writer.finish().map_err(ApiError::internal)?;
    }
    let mut response = Response::new(Body::from(bytes));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
    let header_value = |v: String| HeaderValue::from_str(&v).map_err(ApiError::internal);
    h.insert("x-veil-suppressed-groups", header_value(done.answer.suppressed_groups.to_string())?);
    h.insert("x-veil-k", header_value(done.k.to_string())?);
    Ok(with_audit_id(response, audit_id))
}
