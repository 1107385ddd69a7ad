//! Fixtures shared by the query crate's integration tests: writing a dataset's file and asking
//! in aggregate mode. Each test file uses what it needs.

#![allow(dead_code)] // each test crate compiles this module and uses a part of it
#![allow(clippy::unwrap_used)] // a failed fixture should fail the test loudly

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use veil_common::Mode;
use veil_query::{Limits, QueryEngine, QueryRequest, SessionDataset};

/// `batch` written as the Parquet file `file`.parquet in `dir`, and its path.
pub(crate) fn parquet(dir: &Path, file: &str, batch: &RecordBatch) -> PathBuf {
    let path = dir.join(format!("{file}.parquet"));
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    path
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
