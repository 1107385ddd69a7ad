//! What an anonymized answer reads of its datasets (about people, and code tables beside them):
//! each value within the range where the guard reasons about it exactly, and NULL beyond it.
//!
//! Why: the guard reads constants, grids, bands and the cells around them as doubles, and
//! dates and times as nanosecond timestamps (`date_trunc` casts a date to one). A 64-bit
//! integer beyond 2⁵³ has no double of its own: `t < 1800000000000000000` kept a target at
//! 1799999999999999900 and `t < 1.8e18` (the column converted to a double to compare) did not,
//! under one label, and the two answers were bit-identical exactly where the target was absent
//! (a red team, 2026-12-06: membership 60 of 60 districts in two queries). A date after 2262
//! has no nanosecond timestamp: a census truncating dates failed on it, so that a range over
//! the 2000s failed exactly where someone was born in 2300. Read as NULL, such a value is no
//! value in every spelling alike: no range, band or key holds it, and nothing fails on it.
//!
//! The limits: integers within ±2⁵² (4,503,599,627,370,496), where a double holds each one and
//! a band's floored division of it is exact for every width on the grid; dates and times from
//! 1679 to 2261 (truncating one to its week, month or year, in any time zone, stays within a
//! nanosecond timestamp's range, 1677-09-21 to 2262-04-11). The privacy unit is read as it is:
//! it names a person, never a condition or a key. A decimal of more than 15 digits is read as
//! a float (its constants too compare as floats then, as the guard reads them). A code table's
//! values are read so too:
//! `l.big < 1e16` and `l.big < 10000000000000000` took a code whose `big` is 10¹⁶ − 1 apart,
//! and with it its people.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, ExprSchemable, TableProviderFilterPushDown, cast, lit, when};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// The largest magnitude of a 64-bit integer read as it is: 2⁵².
const INTEGERS: i64 = 1 << 52;
/// Days from 1970-01-01 to 1679-01-01 and to 2262-01-01: dates read as they are lie from the
/// first to the day before the second.
const DAYS: (i64, i64) = (-106_285, 106_651);
const SECONDS_A_DAY: i64 = 86_400;

/// A table read as [`read_exactly`] says.
#[derive(Debug)]
pub(crate) struct Exact {
    inner: Arc<dyn TableProvider>,
    /// The inner schema with each column as [`reading`] reads it.
    schema: SchemaRef,
    unit: Option<String>,
}

/// `table`, the file of `dataset`, as `request` reads it: through [`read_exactly`] where its
/// answer is anonymized.
pub(crate) fn as_read(
    table: Arc<dyn TableProvider>,
    request: &crate::QueryRequest,
    dataset: &crate::SessionDataset,
) -> Result<Arc<dyn TableProvider>> {
    match request.anonymized() {
        true => read_exactly(table, dataset.info.privacy_unit.clone()),
        false => Ok(table),
    }
}

/// `inner`, each column but `unit` read as the guard reasons about it exactly ([`reading`]).
pub(crate) fn read_exactly(inner: Arc<dyn TableProvider>, unit: Option<String>) -> Result<Arc<dyn TableProvider>> {
    let stored = inner.schema();
    let df_schema = DFSchema::try_from(Schema::clone(&stored))?;
    let mut fields = Vec::with_capacity(stored.fields().len());
    for field in stored.fields() {
        fields.push(match reading(field, unit.as_deref())? {
            Some(read) => {
                let (_, read) = read.to_field(&df_schema)?;
                Field::new(field.name(), read.data_type().clone(), read.is_nullable())
                    .with_metadata(field.metadata().clone())
            }
            None => field.as_ref().clone(),
        });
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()));
    Ok(Arc::new(Exact { inner, schema, unit }))
}

impl Exact {
    /// Whether the column `name` is read otherwise than as stored.
    fn bounded(&self, name: &str) -> bool {
        self.inner.schema().field_with_name(name).is_ok_and(|f| !matches!(reading(f, self.unit.as_deref()), Ok(None)))
    }
}

/// The expression reading the stored column `field` as the guard reasons about it exactly, or
/// `None` where it is `unit` or of a type read as stored:
/// - a dictionary's values decoded first (a dictionary of 64-bit integers was read as stored,
///   and grouped one below 1.8 × 10¹⁸ apart from it: a red team, 2026-12-06);
/// - a decimal of more than 15 digits as a float: the guard reads its constants as floats, and
///   `amt >= '0.199999999999999999'` (cast to the column's decimal exactly) held a target at
///   that value where `amt >= 0.2`, one float and one label, did not (a red team, 2026-12-06:
///   60 of 60 districts in two queries); read as floats, both compare as floats;
/// - a 64-bit integer, a date or a time within its range as stored, NULL beyond.
fn reading(field: &Field, unit: Option<&str>) -> Result<Option<Expr>> {
    if Some(field.name().as_str()) == unit {
        return Ok(None);
    }
    let stored = Expr::Column(Column::new_unqualified(field.name()));
    let (values, data_type) = match field.data_type() {
        DataType::Dictionary(_, value) => (cast(stored, value.as_ref().clone()), value.as_ref()),
        t => (stored, t),
    };
    let (first, last) = (DAYS.0, DAYS.1 - 1);
    // The first and last instant of those days, in `per_day` units a day.
    let instants = |per_day: i64| (first * per_day, (last + 1) * per_day - 1);
    let (lo, hi) = match data_type {
        DataType::Decimal128(precision, _) | DataType::Decimal256(precision, _) if *precision > 15 => {
            return Ok(Some(cast(values, DataType::Float64)));
        }
        DataType::Int64 => (ScalarValue::Int64(Some(-INTEGERS)), ScalarValue::Int64(Some(INTEGERS))),
        DataType::UInt64 => (ScalarValue::UInt64(Some(0)), ScalarValue::UInt64(Some(INTEGERS.unsigned_abs()))),
        DataType::Date32 => (ScalarValue::Date32(Some(first as i32)), ScalarValue::Date32(Some(last as i32))),
        DataType::Date64 => {
            let (lo, hi) = instants(SECONDS_A_DAY * 1_000);
            (ScalarValue::Date64(Some(lo)), ScalarValue::Date64(Some(hi)))
        }
        DataType::Timestamp(unit, tz) => {
            let per_second = match unit {
                TimeUnit::Second => 1,
                TimeUnit::Millisecond => 1_000,
                TimeUnit::Microsecond => 1_000_000,
                TimeUnit::Nanosecond => 1_000_000_000,
            };
            let (lo, hi) = instants(SECONDS_A_DAY * per_second);
            let at = |v: i64| match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(Some(v), tz.clone()),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(v), tz.clone()),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(v), tz.clone()),
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(v), tz.clone()),
            };
            (at(lo), at(hi))
        }
        _ => return Ok(None),
    };
    Ok(Some(when(values.clone().gt_eq(lit(lo)).and(values.clone().lt_eq(lit(hi))), values).end()?))
}

#[async_trait]
impl TableProvider for Exact {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    /// A filter on a column read within a range runs above the reading (the inner table's
    /// statistics and pruning know the values as stored); the others as the inner table says.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let on_bounded = |f: &Expr| f.column_refs().iter().any(|c| self.bounded(&c.name));
        let passed: Vec<&Expr> = filters.iter().copied().filter(|f| !on_bounded(f)).collect();
        let mut inner = self.inner.supports_filters_pushdown(&passed)?.into_iter();
        Ok(filters
            .iter()
            .map(|f| match on_bounded(f) {
                true => TableProviderFilterPushDown::Unsupported,
                false => inner.next().unwrap_or(TableProviderFilterPushDown::Unsupported),
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scan = self.inner.scan(state, projection, filters, limit).await?;
        let schema = scan.schema();
        let df_schema = DFSchema::try_from(Schema::clone(&schema))?;
        let mut any = false;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (at, field) in schema.fields().iter().enumerate() {
            let expr: Arc<dyn PhysicalExpr> = match reading(field, self.unit.as_deref())? {
                Some(read) => {
                    any = true;
                    state.create_physical_expr(read, &df_schema)?
                }
                None => Arc::new(ColumnExpr::new(field.name(), at)),
            };
            columns.push(ProjectionExpr { expr, alias: field.name().clone() });
        }
        if !any {
            return Ok(scan);
        }
        Ok(Arc::new(ProjectionExec::try_new(columns, scan)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Array, Date32Array, DictionaryArray, Int32Array, Int64Array, RecordBatch, TimestampNanosecondArray,
    };
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// Each type's last value read as it is and the first beyond, either side; the unit as it is.
    #[tokio::test]
    async fn values_beyond_the_exact_range_are_read_as_null() {
        let big = super::INTEGERS;
        let days = (super::DAYS.0 as i32, super::DAYS.1 as i32 - 1);
        let nanos = 86_400 * 1_000_000_000_i64;
        let (first, last) = (i64::from(days.0) * nanos, (i64::from(days.1) + 1) * nanos - 1);
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![i64::MAX, 1, 2, 3])) as _),
            ("x", Arc::new(Int64Array::from(vec![-big - 1, -big, big, big + 1])) as _),
            ("d", Arc::new(Date32Array::from(vec![days.0 - 1, days.0, days.1, days.1 + 1])) as _),
            ("t", Arc::new(TimestampNanosecondArray::from(vec![first - 1, first, last, last + 1])) as _),
            // A dictionary of integers, decoded.
            (
                "k",
                Arc::new(
                    DictionaryArray::try_new(
                        Int32Array::from(vec![0, 1, 2, 3]),
                        Arc::new(Int64Array::from(vec![-big - 1, -big, big, big + 1])),
                    )
                    .unwrap(),
                ) as _,
            ),
        ])
        .unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("p", super::read_exactly(Arc::new(table), Some("id".to_owned())).unwrap()).unwrap();
        let read = ctx.sql("SELECT id, x, d, t, k FROM p").await.unwrap().collect().await.unwrap();
        let valid = |c: usize| (0..4).map(|r| read[0].column(c).is_valid(r)).collect::<Vec<_>>();
        assert_eq!(valid(0), [true; 4], "the unit");
        for c in 1..5 {
            assert_eq!(valid(c), [false, true, true, false], "column {c}");
        }
        // A filter on a bounded column runs on what is read.
        let beyond =
            ctx.sql("SELECT count(*) FROM p WHERE x > 4503599627370496").await.unwrap().collect().await.unwrap();
        let n = beyond[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
        assert_eq!(n, 0);
    }
}
