//! How close Veil's answers are to the exact ones: each released group matched to the exact
//! group with the same keys, and the relative error of each of its values.

use std::collections::HashMap;

use arrow::json::ArrayWriter;
use arrow::json::writer::JsonArray;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::Result;
use crate::stats::median;

/// One answer against the exact one.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utility {
    /// Groups in the exact answer.
    pub(crate) exact_groups: usize,
    /// Groups Veil released (each matched to an exact group).
    pub(crate) released: usize,
    /// Per released value: |released − exact| / max(|exact|, 1).
    pub(crate) errors: Vec<f64>,
}

impl Utility {
    /// `released / exact` groups, as `12 / 12`.
    pub(crate) fn groups(&self) -> String {
        format!("{} / {}", self.released, self.exact_groups)
    }

    /// The median relative error, as a percentage.
    pub(crate) fn median_error(&self) -> String {
        if self.errors.is_empty() { "—".into() } else { format!("{:.2}%", 100.0 * median(&self.errors)) }
    }
}

/// Compares Veil's JSON answer (`columns`, `rows`) with the exact `batches` of the same SQL:
/// the first `keys` columns identify a group, the rest are its numbers.
///
/// # Errors
/// When a released group has no exact counterpart (Veil invented a group), or a value is not
/// a number.
pub(crate) fn compare(exact: &[RecordBatch], veil: &Value, keys: usize) -> Result<Utility> {
    let mut truth: HashMap<String, Vec<f64>> = HashMap::new();
    for row in exact_rows(exact)? {
        let (key, values) = split(&row, keys)?;
        truth.insert(key, values);
    }
    let mut out = Utility { exact_groups: truth.len(), ..Utility::default() };
    for row in veil["rows"].as_array().into_iter().flatten() {
        let row = row.as_array().ok_or("a Veil row is not an array")?;
        let (key, values) = split(row, keys)?;
        let expected = truth.get(&key).ok_or_else(|| format!("Veil released a group the exact answer lacks: {key}"))?;
        out.released += 1;
        for (v, e) in values.iter().zip(expected) {
            out.errors.push((v - e).abs() / e.abs().max(1.0));
        }
    }
    Ok(out)
}

/// The exact answer's rows as JSON arrays in column order, written the way Veil writes its own.
fn exact_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>> {
    let mut writer: ArrayWriter<Vec<u8>> =
        arrow::json::WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(Vec::new());
    let mut names = Vec::new();
    for batch in batches {
        names = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&bytes)?;
    Ok(objects.into_iter().map(|mut o| names.iter().map(|n| o.remove(n).unwrap_or(Value::Null)).collect()).collect())
}

/// A row's key (its first `keys` cells) and its numbers (the rest; null as 0).
fn split(row: &[Value], keys: usize) -> Result<(String, Vec<f64>)> {
    let key = row.iter().take(keys).map(Value::to_string).collect::<Vec<_>>().join("|");
    let values = row
        .iter()
        .skip(keys)
        .map(|v| match v {
            Value::Null => Ok(0.0),
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("not a number: {n}").into()),
            // Decimals are written as strings.
            Value::String(s) => s.parse::<f64>().map_err(|_| format!("not a number: {s}").into()),
            other => Err(format!("not a number: {other}").into()),
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok((key, values))
}
