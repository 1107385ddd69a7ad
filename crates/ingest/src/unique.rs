//! Whether a column holds each value at most once, learned while a file is written: the privacy
//! unit (one row per person), so that queries over a dataset with one row per person can skip
//! bounding contributions that the data already respects; and a code table's columns, so that a
//! join on one meets one row of it at most.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::row::{RowConverter, SortField};

use crate::{Error, Result};

/// Most distinct values tracked; past this a column counts as not unique (the safe answer:
/// dp queries then bound contributions as for any dataset). About 8 bytes each.
const MAX_TRACKED: usize = 32 << 20;

/// Tracks one column over batches: unique so far, or not.
///
/// Values are compared by a 64-bit hash of their row encoding (NULL is one value, as in GROUP
/// BY). A collision can only make a unique column look repeated, never the reverse.
#[derive(Debug)]
pub struct UniqueValues {
    column: usize,
    converter: RowConverter,
    hasher: RandomState,
    seen: Option<HashSet<u64>>,
    limit: usize,
}

impl UniqueValues {
    /// Tracks column `column` of batches shaped like `schema`.
    ///
    /// # Errors
    /// [`Error::WriteFile`] if the column's type cannot be compared.
    pub fn new(schema: &arrow::datatypes::Schema, column: usize) -> Result<Self> {
        Self::with_limit(schema, column, MAX_TRACKED)
    }

    /// [`Self::new`], counting the column as not unique past `limit` distinct values.
    ///
    /// # Errors
    /// [`Error::WriteFile`] if the column's type cannot be compared.
    pub fn with_limit(schema: &arrow::datatypes::Schema, column: usize, limit: usize) -> Result<Self> {
        let field = schema.fields().get(column).ok_or_else(|| Error::WriteFile("no such column".into()))?;
        let converter =
            RowConverter::new(vec![SortField::new(field.data_type().clone())]).map_err(crate::error::write_error)?;
        let limit = limit.min(MAX_TRACKED);
        Ok(Self { column, converter, hasher: RandomState::new(), seen: Some(HashSet::new()), limit })
    }

    /// Takes in one batch.
    ///
    /// # Errors
    /// [`Error::WriteFile`] if the batch's column cannot be encoded.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(seen) = self.seen.as_mut() else { return Ok(()) };
        let rows = self
            .converter
            .convert_columns(&[as_compared(batch.column(self.column))])
            .map_err(crate::error::write_error)?;
        for row in rows.iter() {
            if seen.len() >= self.limit || !seen.insert(self.hasher.hash_one(row.as_ref())) {
                self.seen = None;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Whether every value seen so far was seen once.
    pub fn unique(&self) -> bool {
        self.seen.is_some()
    }
}

/// `column` with the values SQL's `=` holds equal made one: a float's −0 and 0 (which the row
/// encoding keeps apart, as it orders them).
///
/// Why: a code table keyed by a float holding both 0 and −0 was measured unique, and a join
/// on it met two of its rows for every person at 0; joined through eight such tables one
/// person was 256 rows counted as 256 people, and a sum over them read their value exactly
/// (a red team, 2026-12-08: 60 of 60 in one query).
fn as_compared(column: &ArrayRef) -> ArrayRef {
    use arrow::datatypes::{DataType, Float16Type, Float32Type, Float64Type};
    match column.data_type() {
        DataType::Float64 => plus_zero::<Float64Type>(column),
        DataType::Float32 => plus_zero::<Float32Type>(column),
        DataType::Float16 => plus_zero::<Float16Type>(column),
        _ => Arc::clone(column),
    }
}

/// Each float of `column` plus zero: −0 becomes 0, every other value stays as it is.
fn plus_zero<T: arrow::datatypes::ArrowPrimitiveType>(column: &ArrayRef) -> ArrayRef {
    use arrow::array::AsArray;
    use arrow::datatypes::ArrowNativeTypeOp;
    Arc::new(column.as_primitive::<T>().unary::<_, T>(|v| v.add_wrapping(T::Native::ZERO)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: Vec<Option<&str>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let n = ids.len() as i64;
        let columns: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(ids)), Arc::new(Int64Array::from_iter_values(0..n))];
        RecordBatch::try_new(schema, columns).expect("batch")
    }

    #[test]
    fn a_value_repeated_in_a_later_batch_or_two_nulls_are_not_unique() {
        let first = batch(vec![Some("a"), Some("b")]);
        let mut ids = UniqueValues::new(&first.schema(), 0).expect("tracker");
        ids.observe(&first).expect("observe");
        ids.observe(&batch(vec![Some("c"), None])).expect("observe");
        assert!(ids.unique());
        ids.observe(&batch(vec![Some("a")])).expect("observe");
        assert!(!ids.unique(), "`a` came back in a later batch");

        let mut capped = UniqueValues::with_limit(&first.schema(), 0, 2).expect("tracker");
        capped.observe(&first).expect("observe");
        assert!(capped.unique(), "two values, as many as the limit");
        capped.observe(&batch(vec![Some("c")])).expect("observe");
        assert!(!capped.unique(), "a third value is past the limit: not known to be unique");

        // SQL's `=` holds a float's 0 and −0 equal: one value, as a join meets both.
        let floats = |values: Vec<f64>| {
            let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Float64, false)]));
            RecordBatch::try_new(schema, vec![Arc::new(arrow::array::Float64Array::from(values)) as ArrayRef])
                .expect("batch")
        };
        let mut zeros = UniqueValues::new(&floats(vec![]).schema(), 0).expect("tracker");
        zeros.observe(&floats(vec![1.0, 0.0, 2.0])).expect("observe");
        assert!(zeros.unique());
        zeros.observe(&floats(vec![-0.0])).expect("observe");
        assert!(!zeros.unique(), "-0 is 0");

        let mut nulls = UniqueValues::new(&first.schema(), 0).expect("tracker");
        nulls.observe(&batch(vec![None, None])).expect("observe");
        assert!(!nulls.unique(), "NULL is one value, as in GROUP BY");
    }
}
