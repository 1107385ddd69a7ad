//! Fixtures shared by the crate's unit tests (compiled for tests only: `#[cfg(test)] mod testing`
//! in `lib.rs`, so its `expect`s never run on a request path).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::LogicalPlanBuilder;

/// A two-row table of noisy totals (`c0` district, `c1` count) and a scan of it.
pub(crate) fn noisy_scan() -> (RecordBatch, LogicalPlanBuilder) {
    let keys: ArrayRef = Arc::new(StringArray::from(vec!["甲区", "乙区"]));
    let counts: ArrayRef = Arc::new(Int64Array::from(vec![41, 17]));
    let batch = RecordBatch::try_from_iter([("c0", keys), ("c1", counts)]).expect("batch");
    let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).expect("table");
    let scan = LogicalPlanBuilder::scan("noisy", provider_as_source(Arc::new(table)), None).expect("scan");
    (batch, scan)
}
