//! `POST /v1/query`: the query path's HTTP edge. The use case (policy, levels, scopes, budget,
//! guard, execution and the audit record) is the broker's; this turns the request into a
//! [`veil_broker::Request`] and the released answer into JSON, an Arrow IPC stream, CSV or
//! Parquet.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use arrow::json::{ArrayWriter, WriterBuilder};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use veil_broker::{Refused, Released};
use veil_common::ErrorKind;

use super::AppJson;
use super::budget::budget_view;
use crate::auth::Caller;
use crate::dto::{
    AnonymizedAnswer, DpAnswer, ErrorBody, HalfWidth, NoiseSd, NoisyColumn, QueryBody, QueryColumn, QueryResponse,
    QueryRule, RowsCapped,
};
use crate::error::ApiError;
use crate::state::AppState;

/// The media type of an Arrow IPC stream answer.
pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The media type of a Parquet answer.
pub(crate) const PARQUET: &str = "application/vnd.apache.parquet";

/// Runs one query in a result mode and returns only what that mode releases.
///
/// JSON by default; an Arrow IPC stream when `Accept: application/vnd.apache.arrow.stream` and
/// Parquet when `Accept: application/vnd.apache.parquet` (the JSON answer's reports in the
/// schema's metadata, and in Parquet's key-value metadata too), CSV when `Accept: text/csv` (dp
/// intervals as `<column>_ci95_low` and `_high` columns, the rest of the report in the
/// `x-veil-report` header); each with `x-veil-k` and `x-veil-audit-id` headers; 406 when
/// `Accept` lists none of these. How many groups were withheld is never
/// released (it would tell whether a group of one person exists); the audit record keeps it. With
/// `"dry_run": true` the query is decided and explained, not run.
#[utoipa::path(post, path = "/v1/query", tag = "query", security(("bearer" = [])), request_body = QueryBody,
    responses((status = 200, body = QueryResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 406, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(crate) async fn query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<QueryBody>,
) -> Result<Response, ApiError> {
    // Decided before the query runs: an answer nobody can read is not worth a budget.
    let format = answer_format(&headers)?;
    let noise = body
        .noise
        .as_deref()
        .map(|n| {
            n.parse::<veil_broker::Noise>().map_err(|_| {
                ApiError::bad_request("epsilon_invalid", format!("noise is `{n}`; it must be `laplace` or `gaussian`"))
            })
        })
        .transpose()?;
    let request = veil_broker::Request {
        sql: body.sql,
        mode: body.mode,
        epsilon: body.epsilon,
        rho: body.rho,
        noise,
        accuracy: body.accuracy.map(|a| a.into_iter().collect()),
        dry_run: body.dry_run,
    };
    let released = match state.broker.query(&AppState::broker_caller(caller), request).await {
        Ok(released) => released,
        Err(Refused { error, audit_id: Some(reference) }) => {
            return Ok(with_audit_id(ApiError::from(error).into_response(), &reference));
        }
        Err(Refused { error, audit_id: None }) => return Err(error.into()),
    };
    match format {
        Format::Arrow if released.answer().executed => return arrow_response(&released),
        Format::Parquet if released.answer().executed => return parquet_response(&released),
        Format::Csv if released.answer().executed => return csv_response(&released),
        _ => {}
    }
    Ok(with_audit_id(Json(json_response(&released)?).into_response(), released.audit_id()))
}

/// Adds the `x-veil-audit-id` header: the reference of this request's audit record (the
/// request id it is recorded under, which an auditor searches for).
fn with_audit_id(mut response: Response, reference: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(reference) {
        response.headers_mut().insert("x-veil-audit-id", value);
    }
    response
}

fn json_response(released: &Released) -> Result<QueryResponse, ApiError> {
    let answer = released.answer();
    let columns: Vec<QueryColumn> = answer
        .schema
        .fields()
        .iter()
        .map(|f| QueryColumn { name: f.name().clone(), data_type: f.data_type().to_string() })
        .collect();
    let rows = json_rows(&answer.batches, &columns)?;
    let dp = answer.dp.as_ref().map(|r| DpAnswer {
        noise: match r.noise {
            veil_broker::Noise::Laplace => "laplace",
            veil_broker::Noise::Gaussian => "gaussian",
        }
        .to_owned(),
        epsilon: r.epsilon,
        rho: r.rho,
        delta: r.delta,
        measurements: r.measurements,
        threshold: r.threshold,
        released_from: r.released_from,
        replayed: r.replayed,
        intervals: r
            .intervals
            .iter()
            .map(|(column, ci)| NoisyColumn {
                column: column.clone(),
                ci95: ci.iter().map(|(l, h)| [*l, *h]).collect(),
            })
            .collect(),
        half_widths: r
            .half_widths
            .iter()
            .map(|(column, h)| HalfWidth { column: column.clone(), half_width: *h })
            .collect(),
        budget: released.budget().unwrap_or_default().iter().map(budget_view).collect(),
    });
    Ok(QueryResponse {
        dry_run: !answer.executed,
        rules: released.rules().iter().map(|r| QueryRule { code: r.code.clone(), detail: r.detail.clone() }).collect(),
        columns,
        rows,
        level: released.level().to_owned(),
        k: released.k(),
        audit_id: released.audit_id().to_owned(),
        dp,
        anonymized: answer.anonymized.as_ref().map(|a| AnonymizedAnswer {
            noise_sd: a
                .noise_sd
                .iter()
                .map(|(column, sd)| NoiseSd { column: column.clone(), sd_at_most: *sd })
                .collect(),
            flattened: a.flattened.clone(),
            rows_capped: (a.rows_capped.iter())
                .map(|(dataset, rows)| RowsCapped { dataset: dataset.clone(), rows: *rows })
                .collect(),
        }),
    })
}

/// Rows as JSON arrays in column order, through arrow's JSON writer (explicit nulls). The
/// writer makes objects keyed by column name, so each column is written under its position:
/// two columns of one name (`SELECT a.x, b.x …`) gave the second as NULL.
fn json_rows(batches: &[RecordBatch], columns: &[QueryColumn]) -> Result<Vec<Vec<serde_json::Value>>, ApiError> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut writer: ArrayWriter<Vec<u8>> = WriterBuilder::new().with_explicit_nulls(true).build(Vec::new());
    // The batches of one answer share a schema: renamed once.
    let fields: Vec<arrow::datatypes::Field> =
        first.schema().fields().iter().enumerate().map(|(i, f)| f.as_ref().clone().with_name(i.to_string())).collect();
    let positional = Arc::new(arrow::datatypes::Schema::new(fields));
    let renamed = batches
        .iter()
        .map(|b| RecordBatch::try_new(Arc::clone(&positional), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    let refs: Vec<&RecordBatch> = renamed.iter().collect();
    writer.write_batches(&refs).map_err(ApiError::internal)?;
    writer.finish().map_err(ApiError::internal)?;
    let bytes = writer.into_inner();
    let objects: Vec<serde_json::Map<String, serde_json::Value>> =
        if bytes.is_empty() { Vec::new() } else { serde_json::from_slice(&bytes).map_err(ApiError::internal)? };
    Ok(objects
        .into_iter()
        .map(|mut o| (0..columns.len()).map(|i| o.remove(&i.to_string()).unwrap_or(serde_json::Value::Null)).collect())
        .collect())
}

/// The answer formats `/v1/query` produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Arrow,
    Parquet,
    Csv,
}

/// The first format of `Accept` (in the order listed) that Veil produces; JSON when there is
/// no `Accept`; 406 when none of those listed can be produced (a client asking for CSV used to
/// get JSON silently). A dry run is always answered in JSON.
fn answer_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT) else { return Ok(Format::Json) };
    let accept = accept.to_str().unwrap_or("");
    for media in accept.split(',') {
        let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "" => {}
            "application/json" | "application/*" | "*/*" => return Ok(Format::Json),
            ARROW_STREAM => return Ok(Format::Arrow),
            PARQUET => return Ok(Format::Parquet),
            "text/csv" | "text/*" => return Ok(Format::Csv),
            _ => {}
        }
    }
    Err(ApiError::new(
        ErrorKind::NotAcceptable,
        "not_acceptable",
        format!(
            "no answer format in Accept is produced; accepted: application/json, {ARROW_STREAM}, {PARQUET}, text/csv"
        ),
    ))
}

/// The rows as CSV with a header line (RFC 4180 quoting), each dp column's 95% interval as two
/// more columns, and the rest of the report (as the JSON answer has it, without rows and
/// intervals) in the `x-veil-report` header, non-ASCII characters escaped as JSON does.
fn csv_response(released: &Released) -> Result<Response, ApiError> {
    let answer = released.answer();
    let intervals = answer.dp.as_ref().map(|d| d.intervals.as_slice()).unwrap_or_default();
    let (schema, batches) =
        with_interval_columns(&answer.schema, &answer.batches, intervals).map_err(ApiError::internal)?;
    let mut bytes = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut bytes);
        for b in &batches {
            writer.write(b).map_err(ApiError::internal)?;
        }
    }
    if batches.is_empty() {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        bytes = format!("{}\n", names.join(",")).into_bytes();
    }
    let mut report = json_response(released)?;
    report.rows = Vec::new();
    report.columns = Vec::new();
    if let Some(dp) = report.dp.as_mut() {
        dp.intervals = Vec::new();
    }
    let report = HeaderValue::from_str(&ascii_json(&to_json(&report)?)).map_err(ApiError::internal)?;
    let mut response = rows_response(bytes, "text/csv; charset=utf-8", released);
    response.headers_mut().insert("x-veil-report", report);
    Ok(response)
}

/// JSON text with every character beyond ASCII written as a `\uXXXX` escape (two for one
/// beyond the Basic Multilingual Plane), as an HTTP header needs; such characters occur only
/// inside JSON strings, where the escape means the same. serde_json has no option for it.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The answer with each dp column's 95% interval as two more columns, `<column>_ci95_low` and
/// `<column>_ci95_high` (CSV answers, and Flight SQL's `x-veil-intervals: true`), for tools
/// that do not read schema metadata. Post-processing of what the answer's report releases anyway.
pub(crate) fn with_interval_columns(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    intervals: &[(String, Vec<(f64, f64)>)],
) -> Result<(SchemaRef, Vec<RecordBatch>), arrow::error::ArrowError> {
    if intervals.is_empty() {
        return Ok((Arc::clone(schema), batches.to_vec()));
    }
    let batch = arrow::compute::concat_batches(schema, batches)?;
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    for (name, ci) in intervals {
        for (end, pick) in [("low", 0), ("high", 1)] {
            fields.push(Arc::new(Field::new(format!("{name}_ci95_{end}"), DataType::Float64, false)));
            let values = ci.iter().map(|&(low, high)| if pick == 0 { low } else { high });
            columns.push(Arc::new(Float64Array::from_iter_values(values)) as ArrayRef);
        }
    }
    let schema = Arc::new(Schema::new(fields).with_metadata(schema.metadata().clone()));
    Ok((Arc::clone(&schema), vec![RecordBatch::try_new(schema, columns)?]))
}

/// The Arrow stream's schema metadata: what the JSON answer says beside its rows, each as the
/// JSON the JSON answer has (`veil.dp`, `veil.anonymized`, `veil.rules`) or as text
/// (`veil.level`, `veil.k`, `veil.audit_id`), so that Arrow clients lose no interval, ε or budget.
fn answer_metadata(released: &Released) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let report = json_response(released)?;
    let mut metadata = std::collections::HashMap::from([
        ("veil.level".to_owned(), report.level.clone()),
        ("veil.k".to_owned(), report.k.to_string()),
        ("veil.audit_id".to_owned(), report.audit_id.clone()),
        ("veil.rules".to_owned(), to_json(&report.rules)?),
    ]);
    if let Some(dp) = &report.dp {
        metadata.insert("veil.dp".to_owned(), to_json(dp)?);
    }
    if let Some(anonymized) = &report.anonymized {
        metadata.insert("veil.anonymized".to_owned(), to_json(anonymized)?);
    }
    Ok(metadata)
}

/// One part of the answer as JSON text.
fn to_json(value: &impl serde::Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(ApiError::internal)
}

/// The answer as Arrow clients get it, over HTTP and Flight SQL alike: the report in the
/// schema's metadata, and string and binary views as plain strings and binaries. Views are
/// DataFusion's in-memory form; written to IPC, each batch carries the whole buffers its views
/// point into (a 1M-row extract took 2.5× its size over Flight), and many clients (JDBC tools,
/// older pyarrow) cannot read them.
pub(crate) fn arrow_answer(released: &Released) -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
    let answer = released.answer();
    let plain = |t: &DataType| match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    };
    let fields: Vec<Field> =
        answer.schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(plain(f.data_type()))).collect();
    let schema = Arc::new(Schema::new(fields).with_metadata(answer_metadata(released)?));
    let batches = answer
        .batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { cast(c, f.data_type()) })
                .collect::<Result<Vec<_>, _>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            RecordBatch::try_new_with_options(Arc::clone(&schema), columns, &options)
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()
        .map_err(ApiError::internal)?;
    Ok((schema, batches))
}

/// The answer as one Parquet file: the Arrow answer's schema (with its metadata), whose
/// report entries are also Parquet key-value metadata, for readers that ignore Arrow's.
fn parquet_response(released: &Released) -> Result<Response, ApiError> {
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;

    let (schema, batches) = arrow_answer(released)?;
    let mut report: Vec<KeyValue> =
        schema.metadata().iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
    report.sort_by(|a, b| a.key.cmp(&b.key));
    let properties = WriterProperties::builder().set_key_value_metadata(Some(report)).build();
    let mut bytes = Vec::new();
    {
        let mut writer =
            ArrowWriter::try_new(&mut bytes, Arc::clone(&schema), Some(properties)).map_err(ApiError::internal)?;
        for b in &batches {
            writer.write(b).map_err(ApiError::internal)?;
        }
        writer.close().map_err(ApiError::internal)?;
    }
    Ok(rows_response(bytes, PARQUET, released))
}

fn arrow_response(released: &Released) -> Result<Response, ApiError> {
    let (schema, batches) = arrow_answer(released)?;
    let mut bytes = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut bytes, &schema).map_err(ApiError::internal)?;
        for b in &batches {
            writer.write(b).map_err(ApiError::internal)?;
        }
        writer.finish().map_err(ApiError::internal)?;
    }
    Ok(rows_response(bytes, ARROW_STREAM, released))
}

/// An answer's rows encoded as `media`, with the `x-veil-k` and `x-veil-audit-id` headers.
fn rows_response(bytes: Vec<u8>, media: &'static str, released: &Released) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert("x-veil-k", HeaderValue::from(released.k()));
    with_audit_id(response, released.audit_id())
}
