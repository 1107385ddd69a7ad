//! Low-effect detection against the grid cells around a range: a group whose range the cells
//! around it extend by only a few people is measured over those cells too.
//!
//! Why: two nested cells of one column's grid, `birth_date` in [1900, 2000) (S) and in
//! [1950, 2000) (T), hold the same people unless someone was born in the first half of the
//! century. Where they hold the same people, S − T is the difference of their label layers
//! (the people's layers cancel); where S holds the target too, the people's layers are drawn
//! apart. Beside an IN list padded afresh per pair, a red team read membership off whether
//! S − T stayed one offset (16 of 16 in 12 queries), and after the lists' own layer off its
//! spread (15 of 16 in 60). Detection that compares a column's conditions only with none does
//! not see it: both ranges remove everyone born since 2000.
//!
//! How: for a column whose conditions select one interval T of it (a range on the grid, an
//! equality, a generalization's value), its ladder is every cell of a wider step of the grid
//! that contains T (numbers: 1, 2 and 5 × 10ⁿ wide, from a multiple of the width; dates: 1, 3
//! and 6 months, then 1, 2, 5, 10, … years, aligned; text: the texts starting with each of its
//! shorter prefixes). The query layer first runs a census:
//! per group, for T and each cell, the people with a row there and the seed of their set
//! (counted from each person's nearest values on either side of T: every cell holds T). A
//! cell that adds at most a few of a group's people (sticky noise seeded by those people, as
//! for a column's conditions) is low-effect; every measurement then filters the group's rows
//! through `__veil_within(column, keys…, T, cells…)`, true in T or in a low-effect cell of the
//! row's group ([`with_widened`] loads which). So T and a cell S around it that adds only a
//! few people measure one union of people, the same with the target or without, and S − T is
//! the difference of their labels' layers either way. The labels stay the query's.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

use super::labels::{Point, Span};

/// The function's name in plans.
const NAME: &str = "__veil_within";

/// How many decades of widths a number's ladder climbs above its range's width: as far as an
/// integer goes. Not to the declared bounds: values beyond them are stored as they are (only
/// sums clamp them), and a red team's pair `[0, 100000)` less `[0, 20000)` around bounds of
/// `[0, 10000]`, past a ladder that ended at the first cell holding the bounds, told whether a
/// person with 54,321 was there, 16 of 16 in 12 queries.
const DECADES: i32 = 19;

/// The steps of the years ladder of a date, in years.
pub(super) const YEARS: [i32; 13] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

/// A column of an anonymized answer whose range has a ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    /// The column, as labels name it; the `__veil_within` calls of its range carry it.
    pub column: String,
    /// Its cells, narrowest first, each as `[lo, hi)` in the column's type.
    pub cells: Vec<(ScalarValue, ScalarValue)>,
}

/// The cells of a wider step of the grid that contain `span` (an interval of a column of type
/// `ty`), narrowest first, each as `[lo, hi)` in the column's type; none for a span that is not
/// an interval with both ends, or a column neither a number, a date nor a timestamp without a
/// time zone.
pub(super) fn cells(span: &Span, ty: &DataType) -> Vec<(ScalarValue, ScalarValue)> {
    if let Some((base, value)) = span.text_base()
        && matches!(ty, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
    {
        return text_cells(base, value)
            .into_iter()
            .filter_map(|(lo, hi)| {
                Some((ScalarValue::Utf8(Some(lo)).cast_to(ty).ok()?, ScalarValue::Utf8(Some(hi)).cast_to(ty).ok()?))
            })
            .collect();
    }
    let Some((lo, hi)) = span.half_open() else { return Vec::new() };
    let typed = |lo: ScalarValue, hi: ScalarValue| Some((lo.cast_to(ty).ok()?, hi.cast_to(ty).ok()?));
    let mut cells: Vec<(ScalarValue, ScalarValue)> = match (lo, hi) {
        (Point::Int(a), Point::Int(b)) if ty.is_integer() => widths_above((b - a) as f64)
            .filter_map(|w| {
                #[allow(clippy::cast_possible_truncation)] // saturating: a width past i64::MAX is no cell
                let w = w.round() as i64;
                if w <= 0 || w == i64::MAX {
                    return None;
                }
                let start = a.div_euclid(w).checked_mul(w)?;
                let end = start.checked_add(w)?;
                (end >= b).then_some((start, end))
            })
            .filter_map(|(start, end)| typed(ScalarValue::Int64(Some(start)), ScalarValue::Int64(Some(end))))
            .collect(),
        (Point::Float(a), Point::Float(b))
            if ty.is_floating() || matches!(ty, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            // Each cell's ends are the floats its decimal ends are read as (`grid`), as a
            // range's are.
            widths_above(b - a)
                .filter_map(|w| {
                    let step = crate::grid::Step::of(w)?;
                    let q = step.index(a);
                    let (start, end) = (step.edge(q), step.edge(q + 1.0));
                    (end >= b).then_some((start, end))
                })
                .filter_map(|(start, end)| typed(ScalarValue::Float64(Some(start)), ScalarValue::Float64(Some(end))))
                .collect()
        }
        (Point::Day(a), Point::Day(b)) if matches!(ty, DataType::Date32 | DataType::Date64) => date_cells(a, b)
            .into_iter()
            .filter_map(|(start, end)| {
                let day = |d: i64| i32::try_from(d).ok().map(|d| ScalarValue::Date32(Some(d)));
                typed(day(start)?, day(end)?)
            })
            .collect(),
        // Timestamps count their unit from midnight on 1970-01-01: the cells of their days.
        (Point::Int(a), Point::Int(b)) if matches!(ty, DataType::Timestamp(_, None)) => {
            let DataType::Timestamp(unit, None) = ty else { return Vec::new() };
            let per_day = super::labels::per_day(*unit);
            // An integer cast to a timestamp counts its unit.
            let at = |day: i64| ScalarValue::Int64(Some(day.checked_mul(per_day)?)).cast_to(ty).ok();
            let (first, after) = (a.div_euclid(per_day), b.div_euclid(per_day) + i64::from(b.rem_euclid(per_day) != 0));
            date_cells(first, after).into_iter().filter_map(|(start, end)| Some((at(start)?, at(end)?))).collect()
        }
        _ => Vec::new(),
    };
    cells.dedup();
    // One bit per cell in a group's mask.
    cells.truncate(64);
    cells
}

/// The least value of `span` (an interval of a column of type `ty` with a ladder) in the
/// column's type: a value outside the span lies below it exactly when it is less than this.
/// `None` where [`cells`] has no cells.
pub(super) fn split(span: &Span, ty: &DataType) -> Option<ScalarValue> {
    // A boolean's one value (`b`, `NOT b`): `false` lies below `true`.
    if let (Some(value), DataType::Boolean) = (span.boolean(), ty) {
        return Some(ScalarValue::Boolean(Some(value)));
    }
    if let Some((base, _)) = span.text_base()
        && matches!(ty, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
    {
        return ScalarValue::Utf8(Some(base.to_owned())).cast_to(ty).ok();
    }
    let (lo, _) = span.half_open()?;
    let least = match lo {
        // An integer cast to a timestamp counts its unit, as a timestamp's points do.
        Point::Int(a) if ty.is_integer() || matches!(ty, DataType::Timestamp(_, None)) => ScalarValue::Int64(Some(a)),
        Point::Float(a) if ty.is_floating() || matches!(ty, DataType::Decimal128(..) | DataType::Decimal256(..)) => {
            ScalarValue::Float64(Some(a))
        }
        Point::Day(a) if matches!(ty, DataType::Date32 | DataType::Date64) => {
            ScalarValue::Date32(Some(i32::try_from(a).ok()?))
        }
        _ => return None,
    };
    least.cast_to(ty).ok()
}

/// The cells of text around the value `base` (`value`) or the texts starting with it: the
/// texts starting with each prefix of it, longest first (the value's own prefix too, which
/// holds the longer texts that start with it), one character at the least; at most 64.
///
/// Why: nested prefixes are nested cells as much as nested ranges are: `substr(code, 1, 3) =
/// 'E11'` holds `code = 'E11.9'` and whoever else has another E11 code, and the difference of
/// the two is the target where they alone have one.
fn text_cells(base: &str, value: bool) -> Vec<(String, String)> {
    let chars: Vec<char> = base.chars().collect();
    let longest = if value { chars.len() } else { chars.len().saturating_sub(1) };
    (1..=longest)
        .rev()
        .filter_map(|n| {
            let prefix: String = chars[..n].iter().collect();
            let after = super::labels::successor(&prefix)?;
            Some((prefix, after))
        })
        .take(64)
        .collect()
}

/// The widths 1, 2 and 5 × 10ⁿ above `width`, for [`DECADES`] decades.
fn widths_above(width: f64) -> impl Iterator<Item = f64> {
    let first = if width > 0.0 { width.log10().floor() as i32 } else { 0 };
    (first..=first + DECADES)
        .flat_map(|n| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(n)))
        .filter(move |w| *w > width * (1.0 + 1e-9))
}

/// The cells of months and years that hold the days `[a, b)`, wider than it, narrowest first.
fn date_cells(a: i64, b: i64) -> Vec<(i64, i64)> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let day = |d: i64| epoch.checked_add_signed(chrono::TimeDelta::days(d));
    let days = |date: NaiveDate| (date - epoch).num_days();
    let Some(first) = day(a) else { return Vec::new() };
    let mut cells = Vec::new();
    let month = i64::from(first.year()) * 12 + i64::from(first.month0());
    for step in [1, 3, 6] {
        let start = month - month.rem_euclid(step);
        let at =
            |m: i64| NaiveDate::from_ymd_opt(i32::try_from(m.div_euclid(12)).ok()?, m.rem_euclid(12) as u32 + 1, 1);
        if let (Some(s), Some(e)) = (at(start), at(start + step)) {
            cells.push((days(s), days(e)));
        }
    }
    for step in YEARS {
        let start = first.year() - first.year().rem_euclid(step);
        let at = |y: i32| NaiveDate::from_ymd_opt(y, 1, 1);
        if let (Some(s), Some(e)) = (at(start), at(start + step)) {
            cells.push((days(s), days(e)));
        }
    }
    cells.retain(|(s, e)| *s <= a && *e >= b && e - s > b - a);
    cells
}

/// `__veil_within(column, keys…, range, cells…)` with no cell low-effect anywhere: the call
/// the guard puts in plans, true where `range` is. The number of keys comes second.
pub(super) fn within(column: &str, keys: Vec<Expr>, range: Expr, cells: Vec<Expr>) -> Expr {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(udf(&[])));
    let mut args = vec![lit(column), lit(keys.len() as i64)];
    args.extend(keys);
    args.push(range);
    args.extend(cells);
    UDF.call(args)
}

fn udf(widened: &[(u64, u64)]) -> ScalarUDF {
    let real: std::collections::BTreeSet<u64> = widened.iter().map(|(h, _)| *h).collect();
    let hashes = super::dropped::table(real);
    let by_group: HashMap<u64, u64> = widened.iter().copied().collect();
    let masks = hashes.iter().map(|h| by_group.get(h).copied().unwrap_or(0)).collect();
    ScalarUDF::new_from_impl(Within { hashes, masks, signature: Signature::variadic_any(Volatility::Immutable) })
}

/// The hash of each group's keys, one array per key, as `__veil_within` finds a row's group:
/// 0 for every row when there are no keys.
///
/// # Errors
/// A DataFusion error if the arrays cannot be hashed together (different lengths).
pub fn group_hashes(keys: &[ArrayRef], rows: usize) -> Result<Vec<u64>> {
    if keys.is_empty() { Ok(vec![0; rows]) } else { super::dropped::hashed(keys) }
}

/// `plan` with each `__veil_within` call carrying, for its column, the groups (by
/// [`group_hashes`]) and the bit mask of the cells low-effect in each (bit `i` for cell `i`).
///
/// # Errors
/// A DataFusion error if a rewritten node cannot be rebuilt.
pub fn with_widened(plan: LogicalPlan, widened: &HashMap<String, Vec<(u64, u64)>>) -> Result<LogicalPlan> {
    super::dropped::reloaded(plan, NAME, |column| udf(widened.get(column).map_or(&[][..], Vec::as_slice)))
}

/// Whether each row is in its range or in a cell low-effect for its group.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Within {
    /// The groups' hashes and decoys, as `dropped`'s table: a lookup makes as many steps
    /// whether any group is widened or none.
    hashes: Vec<u64>,
    /// Per entry of `hashes`, its cells' mask (0 for a decoy).
    masks: Vec<u64>,
    signature: Signature,
}

impl ScalarUDFImpl for Within {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let keys = match args.args.get(1) {
            Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))) => usize::try_from(*n).unwrap_or(usize::MAX),
            _ => return exec_err!("{NAME} without its number of keys"),
        };
        let Some(rest) = args.args.get(2..) else { return exec_err!("{NAME} without its range") };
        let arrays = ColumnarValue::values_to_arrays(rest)?;
        if arrays.len() <= keys {
            return exec_err!("{NAME} without its range");
        }
        let (keys, marks) = arrays.split_at(keys);
        let rows = args.number_rows;
        let hashes = group_hashes(keys, rows)?;
        let Some(marks) = marks.iter().map(|m| m.as_boolean_opt()).collect::<Option<Vec<_>>>() else {
            return exec_err!("{NAME} over a range or cell that is not a condition");
        };
        let (range, cells) = marks.split_at(1);
        let range = range[0];
        // Every cell is read for every row, whatever the row's group widens: the work does
        // not say whether any group was.
        let within: BooleanArray = (0..rows)
            .map(|i| {
                let (at, found) = super::dropped::lookup(&self.hashes, hashes[i]);
                let mask = self.masks.get(at).copied().unwrap_or(0) * u64::from(found);
                let mut inside = range.is_valid(i) & range.value(i);
                for (c, cell) in cells.iter().enumerate() {
                    inside |= cell.is_valid(i) & cell.value(i) & ((mask >> c) & 1 == 1);
                }
                Some(inside)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(within)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::TimeUnit;

    use super::*;

    fn span(lo: Point, hi: Point) -> Span {
        Span::new(Some((lo, true)), Some((hi, true)))
    }

    fn ints(cells: &[(ScalarValue, ScalarValue)]) -> Vec<(i64, i64)> {
        cells
            .iter()
            .map(|(a, b)| match (a, b) {
                (ScalarValue::Int64(Some(a)), ScalarValue::Int64(Some(b))) => (*a, *b),
                other => panic!("not integers: {other:?}"),
            })
            .collect()
    }

    /// An integer range's ladder holds each wider cell of the 1-2-5 grid that contains it,
    /// none straddling it, as far as the column's type goes (not only to its declared bounds:
    /// values beyond them are stored).
    #[test]
    fn a_ranges_ladder_is_the_wider_grid_cells_around_it() {
        // [1950, 2000): 100 and 200 wide hold it; 500 wide [1500, 2000); 1000 [1000, 2000);
        // 2000 [0, 2000); 5000 [0, 5000); …
        let century = ints(&cells(&span(Point::Int(1950), Point::Int(1999)), &DataType::Int64));
        assert_eq!(century[..6], [(1900, 2000), (1800, 2000), (1500, 2000), (1000, 2000), (0, 2000), (0, 5000)]);
        assert_eq!(century.last(), Some(&(0, 5_000_000_000_000_000_000)));
        // One year, 1944: [1944, 1946) (2), [1940, 1945) (5), [1940, 1950) (10), … — and
        // not 20 wide [1940, 1960) before 10 wide.
        let year = cells(&span(Point::Int(1944), Point::Int(1944)), &DataType::Int32);
        let got: Vec<(i64, i64)> = year
            .iter()
            .map(|(a, b)| match (a, b) {
                (&ScalarValue::Int32(Some(a)), &ScalarValue::Int32(Some(b))) => (i64::from(a), i64::from(b)),
                other => panic!("not the column's type: {other:?}"),
            })
            .collect();
        assert_eq!(got[..5], [(1944, 1946), (1940, 1945), (1940, 1950), (1940, 1960), (1900, 1950)]);
        assert_eq!(got.last(), Some(&(0, 2_000_000_000)), "as far as an Int32 goes");
        assert!(got.iter().all(|(a, b)| *a <= 1944 && *b >= 1945));
    }

    #[test]
    fn a_dates_ladder_climbs_months_then_years() {
        let day = |y, m, d| {
            (NaiveDate::from_ymd_opt(y, m, d).unwrap() - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
        };
        // 1950-02: the quarter, the half, the year, 1950–1951, 1950–1954, the 1950s, …
        let cells = date_cells(day(1950, 2, 1), day(1950, 3, 1));
        assert_eq!(cells[0], (day(1950, 1, 1), day(1950, 4, 1)));
        assert_eq!(cells[1], (day(1950, 1, 1), day(1950, 7, 1)));
        assert_eq!(cells[2], (day(1950, 1, 1), day(1951, 1, 1)));
        assert_eq!(cells[5], (day(1950, 1, 1), day(1960, 1, 1)));
        assert!(cells.contains(&(day(1900, 1, 1), day(2000, 1, 1))));
        // [1950, 2000) is held by the century and wider only.
        let cells = date_cells(day(1950, 1, 1), day(2000, 1, 1));
        assert_eq!(cells[0], (day(1900, 1, 1), day(2000, 1, 1)));
    }

    /// A timestamp range of 1950 (from midnight, in microseconds) climbs the cells of its days.
    #[test]
    fn a_timestamps_ladder_is_its_days_cells() {
        let per_day = 86_400_000_000i64;
        let (a, b) = (-7_305 * per_day, -6_940 * per_day - 1);
        let ty = DataType::Timestamp(TimeUnit::Microsecond, None);
        let cells = cells(&span(Point::Int(a), Point::Int(b)), &ty);
        // The year 1950 is T; 1950–1951 is the first cell around it.
        assert_eq!(
            cells.first(),
            Some(&(
                ScalarValue::TimestampMicrosecond(Some(a), None),
                ScalarValue::TimestampMicrosecond(Some(-6_575 * per_day), None)
            ))
        );
    }

    /// The value a range's census splits values outside it by is its least value, in the
    /// column's type, and every cell starts at or below it.
    #[test]
    fn a_range_splits_at_its_least_value() {
        let text = |s: &str| Point::Text(s.into());
        let years = span(Point::Int(1950), Point::Int(1999));
        assert_eq!(split(&years, &DataType::Int32), Some(ScalarValue::Int32(Some(1950))));
        let days = span(Point::Day(-7_305), Point::Day(-6_941));
        assert_eq!(split(&days, &DataType::Date32), Some(ScalarValue::Date32(Some(-7_305))));
        let ty = DataType::Timestamp(TimeUnit::Microsecond, None);
        let micros = span(Point::Int(-7_305 * 86_400_000_000), Point::Int(-6_940 * 86_400_000_000 - 1));
        assert_eq!(split(&micros, &ty), Some(ScalarValue::TimestampMicrosecond(Some(-7_305 * 86_400_000_000), None)));
        let code = Span::new(Some((text("E11.9"), true)), Some((text("E11.9"), true)));
        assert_eq!(split(&code, &DataType::Utf8), Some(ScalarValue::Utf8(Some("E11.9".into()))));
        for (s, ty) in [(years, DataType::Int32), (code, DataType::Utf8)] {
            let least = split(&s, &ty).expect("a split");
            assert!(cells(&s, &ty).iter().all(|(lo, _)| lo <= &least));
        }
        // No ladder, no split: a range open at one end.
        assert_eq!(split(&Span::new(Some((Point::Int(3), true)), None), &DataType::Int64), None);
    }

    /// A text's ladder is its shorter prefixes: the value `E11.9` is held by `E11.9…`, `E11.`,
    /// `E11`, `E1` and `E`; the prefix `E1` (every text starting with it) by `E` alone.
    #[test]
    fn a_texts_ladder_is_its_prefixes() {
        let text = |s: &str| Point::Text(s.into());
        let strings = |cells: Vec<(ScalarValue, ScalarValue)>| -> Vec<(String, String)> {
            cells
                .into_iter()
                .map(|(a, b)| match (a, b) {
                    (ScalarValue::Utf8(Some(a)), ScalarValue::Utf8(Some(b))) => (a, b),
                    other => panic!("not text: {other:?}"),
                })
                .collect()
        };
        let value =
            strings(cells(&Span::new(Some((text("E11.9"), true)), Some((text("E11.9"), true))), &DataType::Utf8));
        let starts: Vec<&str> = value.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(starts, ["E11.9", "E11.", "E11", "E1", "E"]);
        assert_eq!(value[2], ("E11".to_owned(), "E12".to_owned()));
        let prefix = strings(cells(&Span::new(Some((text("E1"), true)), Some((text("E2"), false))), &DataType::Utf8));
        assert_eq!(prefix, [("E".to_owned(), "F".to_owned())]);
        // Not a prefix's bucket: no ladder.
        assert!(cells(&Span::new(Some((text("a"), true)), Some((text("c"), false))), &DataType::Utf8).is_empty());
    }
}
