//! A range as the bucket of a key: the generalization of a column one of whose buckets is the
//! interval a query's conditions select of it. `x >= 400 AND x < 500` is the bucket 400 of
//! `floor(x / 100) * 100`, a year of a date the bucket of `date_trunc('year', d)`, `code =
//! 'I10'` the bucket `I10` of `code`, `substr(code, 1, 2) = 'I1'` the bucket of that prefix.
//! The claims (`buckets.rs`) group the rows of such a column by that key, as they group a key's
//! rows, so that the range's group takes the rows the key's group of its bucket takes, in
//! competition with the buckets around it.
//!
//! Why: a range is no key. `WHERE x >= 400 AND x < 500 GROUP BY district` had one group per
//! district, which took the few people the cells around its range add (the target at 550,
//! through [400, 600)) with nobody to compete, while the group 400 of `GROUP BY district,
//! floor(x / 100) * 100` competed for them with the group 600, whose cell [500, 1000) reaches
//! them too, and lost them about half the time. Both carry one label, so the range against the
//! group 400, and the range [600, 700) against the group 600, differed exactly when the target
//! was there (a red team, 2026-12-05: 49 of 50 districts, years too).

use chrono::Datelike;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, LogicalPlan, cast, lit};

use super::labels::{KeyLabel, Point, Span, midnight};

/// A generalization of a column, as aggregate mode admits it for a key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Spelling {
    /// The column itself.
    Value,
    /// `floor(c / width) * width`.
    Band(f64),
    /// `date_trunc(unit, c)`.
    Trunc(&'static str),
    /// `date_part('year', c)`.
    Year,
    /// `floor(date_part('year', c) / width) * width`.
    Years(f64),
    /// `substr(c, 1, n)`.
    Prefix(i64),
    /// `date_part(unit, c)`, a part of a date that repeats (a month of every year): its only
    /// cell is every value.
    Part(&'static str),
}

impl Spelling {
    /// The key over `c`, a column of the spelled column's type, typed as DataFusion plans it
    /// without coercion (a date is truncated as a timestamp).
    pub(crate) fn over(&self, c: Expr, ty: &DataType) -> Expr {
        use datafusion::functions::datetime::expr_fn::{date_part, date_trunc};
        use datafusion::functions::unicode::expr_fn::substring;
        let instant = |c: Expr| match ty {
            DataType::Date32 | DataType::Date64 => cast(c, DataType::Timestamp(TimeUnit::Nanosecond, None)),
            _ => c,
        };
        let band = |x: Expr, width: f64| crate::grid::band(x, width, true);
        match self {
            Self::Value => c,
            Self::Band(width) => band(c, *width),
            Self::Trunc(unit) => date_trunc(lit(*unit), instant(c)),
            Self::Year => date_part(lit("year"), instant(c)),
            Self::Years(width) => band(date_part(lit("year"), instant(c)), *width),
            Self::Prefix(n) => substring(c, lit(1i64), lit(*n)),
            Self::Part(unit) => date_part(lit(*unit), c),
        }
    }
}

/// The key whose one bucket is `span`, an interval of a column of type `ty` that `source` reads
/// at a scan of `plan`, with its label; `None` where no key of aggregate mode's has it for a
/// bucket (six months of a date).
pub(crate) fn spelled(span: &Span, ty: &DataType, source: &Expr, plan: &LogicalPlan) -> Option<(Spelling, KeyLabel)> {
    let least = super::ladder::split(span, ty)?;
    let year = || midnight(&least).map(|d| ScalarValue::Float64(Some(f64::from(d.year()))));
    let mut candidates: Vec<(Spelling, Option<ScalarValue>)> = vec![(Spelling::Value, Some(least.clone()))];
    match ty {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, None) => {
            for unit in ["day", "week", "month", "quarter", "year"] {
                candidates.push((Spelling::Trunc(unit), Some(least.clone())));
            }
            candidates.push((Spelling::Year, year()));
            // Bands of years as the years ladder steps them (one year is the year itself).
            candidates.extend(super::ladder::YEARS[1..].iter().map(|w| (Spelling::Years(f64::from(*w)), year())));
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            if let Some((base, false)) = span.text_base() {
                candidates.push((Spelling::Prefix(base.chars().count() as i64), Some(least.clone())));
            }
        }
        _ if ty.is_numeric() => {
            if let Some((lo, hi)) = span.half_open() {
                let (lo, hi) = match (lo, hi) {
                    (Point::Int(a), Point::Int(b)) => (a as f64, b as f64),
                    (Point::Float(a), Point::Float(b)) => (a, b),
                    _ => return None,
                };
                // The band of the step `hi - lo` is (a float or two off it).
                if let Some(step) = crate::grid::Step::of(hi - lo) {
                    candidates.push((Spelling::Band(step.width()), Some(ScalarValue::Float64(Some(lo)))));
                }
            }
        }
        _ => {}
    }
    candidates.into_iter().find_map(|(spelling, value)| {
        let label = KeyLabel::new(&spelling.over(source.clone(), ty), plan);
        (label.selects(&value?).as_ref() == Some(span)).then_some((spelling, label))
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{col, table_scan};

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> i64 {
        (chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap() - chrono::NaiveDate::default()).num_days()
    }

    /// `[lo, hi)` of a column's points.
    fn span(lo: Point, hi: Point) -> Span {
        Span::new(Some((lo, true)), Some((hi, false)))
    }

    fn point(p: Point) -> Span {
        Span::new(Some((p.clone(), true)), Some((p, true)))
    }

    #[test]
    fn a_range_is_spelled_as_the_key_whose_bucket_it_is() {
        let schema = Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("d", DataType::Date32, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("c", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
        ]);
        let plan = table_scan(Some("p"), &schema, None).unwrap().build().unwrap();
        let of = |name: &str, s: &Span| {
            let ty = schema.field_with_name(name).unwrap().data_type().clone();
            spelled(s, &ty, &col(format!("p.{name}")), &plan).map(|(spelling, _)| spelling)
        };
        let days = |a: (i32, u32, u32), b: (i32, u32, u32)| {
            span(Point::Day(day(a.0, a.1, a.2)), Point::Day(day(b.0, b.1, b.2)))
        };
        let micros = |a: (i32, u32, u32), b: (i32, u32, u32)| {
            let at = |(y, m, d)| Point::Int(day(y, m, d) * 86_400_000_000);
            span(at(a), at(b))
        };
        let cases = [
            (of("x", &span(Point::Int(400), Point::Int(500))), Some(Spelling::Band(100.0))),
            (of("x", &span(Point::Int(-2000), Point::Int(0))), Some(Spelling::Band(2000.0))),
            (of("x", &point(Point::Int(450))), Some(Spelling::Value)),
            (of("f", &span(Point::Float(0.5), Point::Float(1.0))), Some(Spelling::Band(0.5))),
            (of("d", &days((2023, 1, 1), (2024, 1, 1))), Some(Spelling::Trunc("year"))),
            (of("d", &days((2024, 8, 1), (2024, 9, 1))), Some(Spelling::Trunc("month"))),
            (of("d", &days((2024, 7, 1), (2024, 10, 1))), Some(Spelling::Trunc("quarter"))),
            (of("d", &days((2020, 1, 1), (2030, 1, 1))), Some(Spelling::Years(10.0))),
            (of("d", &point(Point::Day(day(2024, 8, 15)))), Some(Spelling::Value)),
            // No key has six months for a bucket.
            (of("d", &days((2024, 1, 1), (2024, 7, 1))), None),
            (of("t", &micros((2023, 1, 1), (2024, 1, 1))), Some(Spelling::Trunc("year"))),
            (of("c", &point(Point::Text("I10".into()))), Some(Spelling::Value)),
            (of("c", &span(Point::Text("I1".into()), Point::Text("I2".into()))), Some(Spelling::Prefix(2))),
            // A flag, or its NOT, is the bucket of the key on it.
            (of("b", &point(Point::Bool(true))), Some(Spelling::Value)),
            (of("b", &point(Point::Bool(false))), Some(Spelling::Value)),
        ];
        for (i, (found, expected)) in cases.into_iter().enumerate() {
            assert_eq!(found, expected, "case {i}");
        }
    }
}
