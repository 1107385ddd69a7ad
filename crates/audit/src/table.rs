//! Records as an Arrow table: the `audit.events` table auditors query with SQL, and the Parquet
//! export.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::record::Stored;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let count = |name: &str| Field::new(name, DataType::UInt64, true);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        text("request_id", true),
        text("user", true),
        text("department", true),
        text("roles", true),
        text("action", false),
        text("decision", false),
        text("target", true),
        text("datasets", true),
        text("levels", true),
        text("mode", true),
        text("rule", true),
        text("detail", true),
        text("sql", true),
        text("sql_sha256", true),
        count("rows"),
        count("suppressed_groups"),
        Field::new("epsilon", DataType::Float64, true),
        Field::new("rho", DataType::Float64, true),
        count("duration_ms"),
        text("hash", false),
    ]))
});

/// The columns of `audit.events`. Lists (roles, datasets, levels) are comma-separated text, so
/// `datasets LIKE '%health.%'` works; `levels` lines up with `datasets` (`-` where unknown).
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// `records` as one batch with [`schema`].
///
/// # Errors
/// Only if the arrays do not fit the schema (a bug).
pub fn to_batch(records: &[Stored]) -> Result<RecordBatch, ArrowError> {
    fn text(records: &[Stored], f: impl Fn(&Stored) -> Option<String>) -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    }
    fn count(records: &[Stored], f: impl Fn(&Stored) -> Option<u64>) -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<UInt64Array>())
    }
    let joined = |items: Vec<&str>| (!items.is_empty()).then(|| items.join(","));
    fn entry(s: &Stored) -> &crate::Entry {
        &s.record.entry
    }
    let millis = records.iter().map(|s| (s.record.time.unix_timestamp_nanos() / 1_000_000) as i64);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(records.iter().map(|s| s.record.seq).collect::<UInt64Array>()),
        Arc::new(TimestampMillisecondArray::from_iter_values(millis).with_timezone("UTC")),
        text(records, |s| entry(s).request_id.clone()),
        text(records, |s| entry(s).actor.as_ref().map(|a| a.user.clone())),
        text(records, |s| entry(s).actor.as_ref().and_then(|a| a.department.clone())),
        text(records, |s| entry(s).actor.as_ref().and_then(|a| joined(a.roles.iter().map(String::as_str).collect()))),
        text(records, |s| Some(entry(s).action.clone())),
        text(records, |s| Some(entry(s).decision.clone())),
        text(records, |s| entry(s).target.clone()),
        text(records, |s| joined(entry(s).datasets.iter().map(|d| d.dataset.as_str()).collect())),
        text(records, |s| joined(entry(s).datasets.iter().map(|d| d.level.as_deref().unwrap_or("-")).collect())),
        text(records, |s| entry(s).mode.clone()),
        text(records, |s| entry(s).rule.clone()),
        text(records, |s| entry(s).detail.clone()),
        text(records, |s| entry(s).sql.clone()),
        text(records, |s| entry(s).sql_sha256.clone()),
        count(records, |s| entry(s).rows),
        count(records, |s| entry(s).suppressed_groups),
        Arc::new(records.iter().map(|s| entry(s).epsilon).collect::<Float64Array>()),
        Arc::new(records.iter().map(|s| entry(s).rho).collect::<Float64Array>()),
        count(records, |s| entry(s).duration_ms),
        text(records, |s| Some(s.hash.clone())),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// `records` as a Parquet file.
///
/// # Errors
/// When encoding fails.
pub fn to_parquet(records: &[Stored]) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let batch = to_batch(records)?;
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}
