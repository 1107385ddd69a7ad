//! Fixtures shared by the query crate's integration tests: writing a dataset's file and asking
//! in aggregate mode. Each test file uses what it needs.

#![allow(dead_code)] // each test crate compiles this module and uses a part of it
#![allow(clippy::unwrap_used)] // a failed fixture should fail the test loudly

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::ArrowWriter;
use veil_common::{Mode, Tag};
use veil_guard::{ColumnInfo, Contribution, DatasetInfo};
use veil_query::{Limits, QueryEngine, QueryRequest, SessionDataset, parse};

/// `batch` written as the Parquet file `file`.parquet in `dir`, and its path.
pub(crate) fn parquet(dir: &Path, file: &str, batch: &RecordBatch) -> PathBuf {
    let path = dir.join(format!("{file}.parquet"));
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    path
}

/// A column tagged `tag`, not linkable, with the declared `bounds`.
pub(crate) fn column(tag: Tag, bounds: Option<(f64, f64)>) -> ColumnInfo {
    ColumnInfo { tag, linkable: false, generalize: None, bounds, public_values: None }
}

/// The linkable identifier column, the privacy unit of [`about_people`].
pub(crate) fn identifier() -> ColumnInfo {
    ColumnInfo { linkable: true, ..column(Tag::Identifier, None) }
}

/// `batch` written as `file` in `dir` and described as the dataset `name` about people, its
/// unit `person_id` (whose column `columns` must hold), each person contributing as
/// `contribution` says, declared one row a person where `one_row`.
pub(crate) fn about_people(
    (dir, file): (&Path, &str),
    name: &str,
    batch: &RecordBatch,
    columns: HashMap<String, ColumnInfo>,
    contribution: Contribution,
    one_row: bool,
) -> SessionDataset {
    let rows = batch.num_rows() as u64;
    SessionDataset {
        dataset: name.parse().unwrap(),
        path: parquet(dir, file, batch),
        rows,
        info: DatasetInfo {
            privacy_unit: Some("person_id".to_owned()),
            columns,
            contribution,
            one_row_per_unit: one_row,
            capped: Default::default(),
            unique: Vec::new(),
            rows,
        },
        capped_copy: None,
    }
}

/// `batch` written as `file` in `dir` and described as the dataset `name` about nobody (a code
/// table), each column an attribute with the bounds `bounds` gives it.
pub(crate) fn about_nobody(
    (dir, file): (&Path, &str),
    name: &str,
    batch: &RecordBatch,
    bounds: &[(&str, (f64, f64))],
) -> SessionDataset {
    let rows = batch.num_rows() as u64;
    let columns = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let declared = bounds.iter().find(|(c, _)| c == f.name()).map(|(_, b)| *b);
            (f.name().clone(), column(Tag::Attribute, declared))
        })
        .collect();
    SessionDataset {
        dataset: name.parse().unwrap(),
        path: parquet(dir, file, batch),
        rows,
        info: DatasetInfo {
            privacy_unit: None,
            columns,
            contribution: Contribution::default(),
            one_row_per_unit: false,
            capped: Default::default(),
            unique: Vec::new(),
            rows,
        },
        capped_copy: None,
    }
}

/// A temporary directory holding `build`'s dataset with the target (`true`) and its twin
/// without, and an engine over it.
pub(crate) fn twins(
    build: impl Fn(&Path, &str, bool) -> SessionDataset,
) -> (tempfile::TempDir, SessionDataset, SessionDataset, QueryEngine) {
    let dir = tempfile::tempdir().unwrap();
    let (target, twin) = (build(dir.path(), "target", true), build(dir.path(), "twin", false));
    let engine = QueryEngine::new(Limits::standard(), dir.path()).unwrap();
    (dir, target, twin, engine)
}

/// An aggregate-mode request at k = `k` over `datasets`, under the noise key `noise_key`.
pub(crate) fn aggregate(datasets: Vec<SessionDataset>, k: u64, noise_key: [u8; 32]) -> QueryRequest {
    QueryRequest { mode: Mode::Aggregate, k, datasets, dry_run: false, noise_key, exact_aggregates: false, dp: None }
}

/// Per released group of `sql` asked as `request` says, its first column as text (`NULL` for
/// none) and the numbers after it, in the SELECT list's order and the answer's.
pub(crate) async fn released(engine: &QueryEngine, request: QueryRequest, sql: &str) -> Vec<(String, Vec<f64>)> {
    let answer = engine.run(&parse(sql, 1 << 16).unwrap(), request).await.unwrap();
    let mut rows = Vec::new();
    for batch in &answer.batches {
        let first = cast(batch.column(0), &DataType::Utf8).unwrap();
        let first = first.as_any().downcast_ref::<StringArray>().unwrap();
        let numbers: Vec<ArrayRef> =
            (1..batch.num_columns()).map(|i| cast(batch.column(i), &DataType::Float64).unwrap()).collect();
        for row in 0..batch.num_rows() {
            let values =
                numbers.iter().map(|a| a.as_any().downcast_ref::<Float64Array>().unwrap().value(row)).collect();
            let key = if first.is_null(row) { "NULL".to_owned() } else { first.value(row).to_owned() };
            rows.push((key, values));
        }
    }
    rows
}
