//! The labels that seed an anonymized answer's noise besides its people (design: the label
//! layer). The same set of rows asked any way must get the same label, or each way of asking
//! is a fresh draw of the layer and many of them average it away. So a bucket is not labelled
//! by the expressions that select it but by what they select: for every stored column its
//! conditions and key values restrict, the one interval of the column's values they allow
//! together (`floor(x / 500) * 500 = 0`, `x >= 0 AND x < 500` and `floor(x / 500) = 0` are all
//! `x in [0, 499]`; `date_part('year', d) = 1950` and the group `1950-03` of
//! `date_trunc('month', d)` meet in `d in [1950-03-01, 1950-03-31]`; a condition another one
//! implies changes nothing). What is not an interval of one column (a boolean expression, the
//! month of a date whatever its year) keeps a label naming the expression.

use std::cmp::Ordering;

use chrono::{Days, Months, NaiveDate};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use crate::exprs::uncast;
use crate::rules::anon_shape::constant;

/// What seeds an anonymized answer's noise besides the people, as canonical text: a column by its
/// name without qualifier or casts, a constant as its value in the column's type, and what a
/// query selects of a column as the interval of values it allows. The query's spelling
/// (aliases, the order of the SELECT list, CTEs, GROUP BY or WHERE for the same group, a
/// constant's spelling, a range or a generalization for the same rows) changes none of it.
#[derive(Debug, Clone, Default)]
pub struct NoiseLabels {
    /// Per constant of the query's IN lists, its label (`key = value`), in the order of the
    /// per-constant seeds the measuring plan outputs after the people's seed.
    pub listed: Vec<String>,
    /// Per constant of the query's IN lists, in the same order, the name of its list (for
    /// `with_dropped`) and its value in the type of the list's compared expression.
    pub listed_values: Vec<(String, ScalarValue)>,
    /// The conditions that select no interval of one column, as text (`key = value`).
    pub fixed: Vec<String>,
    /// Per column the other conditions restrict, the interval they allow together.
    pub ranges: Vec<(String, Span)>,
    /// Per group key, how a group's value of it is labelled.
    pub keys: Vec<KeyLabel>,
    /// Per aggregate, the quantity it measures (`rows`, `people`, `sum <dataset>.<column>`, each
    /// with the joins its rows come through): aggregates measuring the same quantity share their
    /// people layer wherever they stand in the SELECT list, and no others do.
    pub measures: Vec<String>,
    /// Per aggregate, whether it is `COUNT(column)`: the count of values of the column's
    /// quantity (its `measures` entry, as its SUM and AVG name it), drawn as an average of the
    /// column draws the count it divides by, so that it says nothing an average does not.
    pub values: Vec<bool>,
    /// Per labelled column with declared bounds, the bounds (the widest, where datasets of the
    /// query declare several): an interval is labelled as far as they reach, and one holding
    /// all of them as no restriction. A red team drew one group's label layer hundreds of
    /// times with bands that each held everybody (`floor(salary / 1e5) * 1e5`, `/ 2e5`, …).
    pub bounds: Vec<(String, (f64, f64))>,
}

impl NoiseLabels {
    /// The labels of the bucket whose group keys have `values`, which seed its label layer:
    /// the conditions' and the key values', intersected per column, sorted, each once (so
    /// `WHERE district = 'a'` and the group `a` of `GROUP BY district` are one bucket).
    pub fn bucket(&self, values: &[ScalarValue]) -> Vec<String> {
        let mut ranges = self.ranges.clone();
        let mut labels = self.fixed.clone();
        for (key, value) in self.keys.iter().zip(values) {
            match key.selects(value) {
                Some(span) => restrict(&mut ranges, key.column(), span),
                None => labels.push(key.of(value)),
            }
        }
        labels.extend(ranges.iter().filter_map(|(column, span)| match self.bounds.iter().find(|(c, _)| c == column) {
            Some((_, bounds)) => span.within(*bounds).map(|s| s.label(column)),
            None => Some(span.label(column)),
        }));
        labels.sort();
        labels.dedup();
        labels
    }

    /// The labels of a group of the claims (`buckets.rs`), which order the groups there: its
    /// keys' `values`, and the buckets of the keys whose buckets some of the conditions are
    /// (`spelled`, with their labels), each without the conditions on its column. So every
    /// group of a key is ordered as in the query without those conditions, whichever range on
    /// the column selects it or its neighbours (a group outside the range, labelled by its
    /// bucket within the range, had an empty interval, the same for all of them).
    #[must_use]
    pub fn claim_order(&self, values: &[ScalarValue], spelled: &[(&KeyLabel, ScalarValue)]) -> Vec<String> {
        let mut order = self.clone();
        let keys: Vec<&KeyLabel> = self.keys.iter().chain(spelled.iter().map(|(k, _)| *k)).collect();
        let columns: Vec<&str> = keys.iter().map(|k| k.column()).collect();
        order.ranges.retain(|(column, _)| !columns.contains(&column.as_str()));
        order.fixed.retain(|f| !keys.iter().any(|k| k.names(f)));
        order.keys.extend(spelled.iter().map(|(k, _)| (*k).clone()));
        let mut all = values.to_vec();
        all.extend(spelled.iter().map(|(_, v)| v.clone()));
        order.bucket(&all)
    }

    /// Whether the bucket `value` of `key` lies within the conditions' interval of its column
    /// (every bucket does where they have none): a group of the claims that is, or is within,
    /// one of the answer's groups.
    #[must_use]
    pub fn holds(&self, key: &KeyLabel, value: &ScalarValue) -> bool {
        // A key that selects no interval (a month of every year): its conditions are its
        // values, named as text.
        if key.column.is_none() && self.fixed.iter().any(|f| key.names(f)) {
            return self.fixed.contains(&key.of(value));
        }
        let Some((_, interval)) = self.ranges.iter().find(|(column, _)| column == key.column()) else { return true };
        key.selects(value).is_some_and(|bucket| bucket.intersect(interval) == bucket)
    }
}

/// Intersects `column`'s interval in `ranges` with `span`, or adds it.
pub(crate) fn restrict(ranges: &mut Vec<(String, Span)>, column: &str, span: Span) {
    match ranges.iter_mut().find(|(c, _)| c == column) {
        Some((_, existing)) => *existing = existing.intersect(&span),
        None => ranges.push((column.to_string(), span)),
    }
}

/// How a value of a key is labelled: as the interval of its column it selects when it is a
/// column or a generalization of one (`substr(district, 1, 9) = '门头沟区'` is `district =
/// 门头沟区`: a red team asked one district with fifty prefix lengths, fifty fresh draws before),
/// else `key = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLabel {
    /// The key's label (`crate::rewrite::anonymize::label`).
    key: String,
    /// The stored column the key generalizes and how, when it is one.
    column: Option<Generalized>,
    /// The stored column the key reads, where it reads one (`birth_date` for `date_part('day',
    /// birth_date)` too), as a condition on it is named; else the key's label.
    reads: String,
}

impl KeyLabel {
    /// The label of `key`, an expression over the columns of `plan`'s scans.
    pub(crate) fn new(key: &Expr, plan: &LogicalPlan) -> Self {
        let label = super::anonymize::label(key);
        let column = Generalized::of(key, plan);
        let reads = match (&column, key.column_refs().into_iter().collect::<Vec<_>>().as_slice()) {
            (Some(g), _) => g.column.clone(),
            (None, [only]) => super::anonymize::label(&Expr::Column((*only).clone())),
            (None, _) => label.clone(),
        };
        Self { key: label, column, reads }
    }

    /// The stored column the key reads, named as the conditions on it are (low-effect
    /// detection's variants): a key and a condition on one column select by one column,
    /// whichever part of it they read.
    #[must_use]
    pub fn reads(&self) -> &str {
        &self.reads
    }

    /// Whether `label` names one value of this key that selects no interval of a column
    /// (`date_part(month, d) = 3`), as [`KeyLabel::of`] names it.
    fn names(&self, label: &str) -> bool {
        self.column.is_none() && label.strip_prefix(self.key.as_str()).is_some_and(|rest| rest.starts_with(" = "))
    }

    /// The stored column's label, or the key's when it generalizes no column.
    #[must_use]
    pub fn column(&self) -> &str {
        self.column.as_ref().map_or(&self.key, |g| &g.column)
    }

    /// The interval of its column that the key's `value` selects, when it is one.
    pub(crate) fn selects(&self, value: &ScalarValue) -> Option<Span> {
        self.column.as_ref()?.select(value)
    }

    /// Rows where the key is at least `value` (`Some(true)`) or below it (`Some(false)`), or
    /// equal to it (`None`), as an interval of its column.
    pub(crate) fn compared(&self, value: &ScalarValue, at_least: Option<bool>) -> Option<Span> {
        let span = self.selects(value)?;
        match at_least {
            None => Some(span),
            Some(true) => Some(Span { lo: span.lo, hi: None }),
            Some(false) => {
                let (start, included) = span.lo?;
                Some(Span::new(None, Some((start, !included))))
            }
        }
    }

    /// The cells of a wider step of the grid that contain the interval the key's `value`
    /// selects, narrowest first, each `[lo, hi)` in the column's type (`ladder::cells`); none
    /// where it selects no interval.
    #[must_use]
    pub fn cells_around(&self, value: &ScalarValue) -> Vec<(ScalarValue, ScalarValue)> {
        match (&self.column, self.selects(value)) {
            (Some(g), Some(span)) => super::ladder::cells(&span, &g.ty),
            _ => Vec::new(),
        }
    }

    /// The key's place among the dimensions of the claims (`buckets.rs`): its column, then how
    /// it divides it, the same for every spelling of one generalization (`floor(x / 100)` and
    /// `floor(x / 100) * 100`; `date_trunc('year', d)` and `date_part('year', d)`), so that the
    /// order of the keys in a query, or which of them a range spells, changes nothing.
    #[must_use]
    pub fn grain(&self) -> (String, String) {
        let Some(g) = &self.column else { return (self.key.clone(), String::new()) };
        let how = match g.how {
            How::Value => "value".to_owned(),
            How::Prefix(n) => format!("prefix {n:09}"),
            How::Band { width, years: false, .. } => format!("band {width:e}"),
            How::Band { width, years: true, .. } => format!("years {width:e}"),
            How::Year | How::Trunc(Unit::Year) => format!("years {:e}", 1.0),
            How::Trunc(unit) => format!("{unit:?}"),
        };
        (g.column.clone(), how)
    }

    /// Whether `span`, an interval of the key's column, cuts one of the key's buckets: holds
    /// part of it and not the rest (`code = 'K550'` beside `substr(code, 1, 3)`; a day beside
    /// `date_trunc('month', d)`). A key whose buckets are the column's values cuts nothing.
    pub(crate) fn cuts(&self, span: &Span) -> bool {
        let Some(g) = &self.column else { return false };
        let whole = |bucket: Option<Span>| bucket.is_some_and(|b| b.intersect(span) == b);
        let first = span.lo.as_ref().is_some_and(|(p, _)| !whole(g.bucket_around(p)));
        let last = span.hi.as_ref().is_some_and(|(p, included)| {
            if *included {
                !whole(g.bucket_around(p))
            } else {
                // Up to an excluded end: whole where a bucket starts there.
                g.bucket_around(p).is_none_or(|b| b.lo.as_ref() != Some(&(p.clone(), true)))
            }
        });
        first || last
    }

    /// The label of the rows where the key equals `value`.
    pub fn of(&self, value: &ScalarValue) -> String {
        match self.selects(value) {
            Some(span) => span.label(self.column()),
            None => format!("{} = {}", self.key, value_text(value)),
        }
    }
}

/// A key that is a stored column or one of aggregate mode's generalizations of one.
#[derive(Debug, Clone, PartialEq)]
struct Generalized {
    /// The column's label.
    column: String,
    /// The column's type.
    ty: DataType,
    how: How,
}

/// How a key generalizes its column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    /// The column itself.
    Value,
    /// `substr(c, 1, n)`.
    Prefix(usize),
    /// `floor(c / width)`, times the width when `scaled`; of the date's year when `years`.
    Band { width: f64, scaled: bool, years: bool },
    /// `date_trunc(unit, c)`.
    Trunc(Unit),
    /// `date_part('year', c)`.
    Year,
}

/// A unit dates are truncated to, or a part taken of: the units aggregate mode admits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unit {
    Year,
    Quarter,
    Month,
    Week,
    Day,
}

impl Generalized {
    /// `key` as a generalization of a column of `plan`'s scans, when it is one.
    fn of(key: &Expr, plan: &LogicalPlan) -> Option<Self> {
        let (column, how) = match uncast(key) {
            Expr::Column(c) => (c, How::Value),
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Multiply, right }) => {
                let (c, how) = band(left)?;
                let How::Band { width, years, .. } = how else { return None };
                (number(&constant(right)?)? == width).then_some((c, How::Band { width, scaled: true, years }))?
            }
            Expr::ScalarFunction(ScalarFunction { func, args }) => match (func.name(), args.as_slice()) {
                ("floor" | crate::grid::BAND, _) => band(key)?,
                ("substr", [c, start, length]) => {
                    let n = number(&constant(length)?)?;
                    if !(n >= 1.0 && n.fract() == 0.0 && number(&constant(start)?)? == 1.0) {
                        return None;
                    }
                    (column(c)?, How::Prefix(n as usize))
                }
                ("date_trunc", [unit, c]) => (column(c)?, How::Trunc(Unit::of(&constant(unit)?)?)),
                ("date_part", [unit, c]) if unit_text(&constant(unit)?)? == "year" => (column(c)?, How::Year),
                _ => return None,
            },
            _ => return None,
        };
        let ty = scan_type(plan, column)?;
        Domain::of(&ty)?;
        Some(Self { column: super::anonymize::label(&Expr::Column(column.clone())), ty, how })
    }

    /// The interval of the column where the key equals `value`, when the value is one the key
    /// takes (a band's start, a unit's first day).
    fn select(&self, value: &ScalarValue) -> Option<Span> {
        let domain = Domain::of(&self.ty)?;
        if value.is_null() {
            return None;
        }
        match self.how {
            How::Value => Some(Span::point(domain.point(value)?)),
            How::Prefix(n) => {
                let text = value.try_as_str().flatten()?;
                match text.chars().count().cmp(&n) {
                    // A prefix longer than the value is the whole value.
                    Ordering::Less => Some(Span::point(Point::Text(text.to_string()))),
                    Ordering::Equal => {
                        let start = Point::Text(text.to_string());
                        Some(Span::new(Some((start, true)), Some((Point::Text(successor(text)?), false))))
                    }
                    Ordering::Greater => None,
                }
            }
            How::Band { width, scaled, years } => {
                let v = number(value)?;
                let band = if scaled { v / width } else { v };
                if (band - band.round()).abs() > 1e-9 * band.abs().max(1.0) {
                    return None;
                }
                let step = crate::grid::Step::of(width)?;
                let (lo, hi) = (step.edge(band.round()), step.edge(band.round() + 1.0));
                if years {
                    if lo.fract() != 0.0 || hi.fract() != 0.0 {
                        return None;
                    }
                    let start = NaiveDate::from_ymd_opt(lo as i32, 1, 1)?;
                    let end = NaiveDate::from_ymd_opt(hi as i32, 1, 1)?;
                    domain.dates(start, end)
                } else {
                    domain.reals(lo, hi)
                }
            }
            How::Year => {
                let y = number(value)?;
                if y.fract() != 0.0 {
                    return None;
                }
                let start = NaiveDate::from_ymd_opt(y as i32, 1, 1)?;
                domain.dates(start, start.checked_add_months(Months::new(12))?)
            }
            How::Trunc(unit) => {
                let start = midnight(value)?;
                if unit.start(start) != Some(start) {
                    return None;
                }
                domain.dates(start, unit.after(start)?)
            }
        }
    }

    /// The interval of the column that the key's bucket holding the value `p` selects.
    fn bucket_around(&self, p: &Point) -> Option<Span> {
        let domain = Domain::of(&self.ty)?;
        // The day a date or timestamp point falls on.
        let day = || -> Option<NaiveDate> {
            let days = match (p, domain) {
                (Point::Day(d), _) => *d,
                (Point::Int(v), Domain::Timestamp(unit)) => v.div_euclid(per_day(unit)),
                _ => return None,
            };
            epoch().checked_add_signed(chrono::TimeDelta::try_days(days)?)
        };
        let years = |width: f64| {
            use chrono::Datelike;
            let first = (f64::from(day()?.year()) / width).floor() * width;
            let start = NaiveDate::from_ymd_opt(first as i32, 1, 1)?;
            domain.dates(start, NaiveDate::from_ymd_opt((first + width) as i32, 1, 1)?)
        };
        match self.how {
            How::Value => Some(Span::point(p.clone())),
            How::Prefix(n) => {
                let Point::Text(t) = p else { return None };
                if t.chars().count() < n {
                    return Some(Span::point(p.clone()));
                }
                let prefix: String = t.chars().take(n).collect();
                let after = successor(&prefix)?;
                Some(Span::new(Some((Point::Text(prefix), true)), Some((Point::Text(after), false))))
            }
            How::Band { width, years: false, .. } => {
                let x = match p {
                    Point::Int(v) => *v as f64,
                    Point::Float(v) => *v,
                    _ => return None,
                };
                let step = crate::grid::Step::of(width)?;
                let band = step.index(x);
                domain.reals(step.edge(band), step.edge(band + 1.0))
            }
            How::Band { width, years: true, .. } => years(width),
            How::Year => years(1.0),
            How::Trunc(unit) => {
                let start = unit.start(day()?)?;
                domain.dates(start, unit.after(start)?)
            }
        }
    }
}

/// A timestamp unit's count in a day.
pub(super) fn per_day(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 86_400,
        TimeUnit::Millisecond => 86_400_000,
        TimeUnit::Microsecond => 86_400_000_000,
        TimeUnit::Nanosecond => 86_400_000_000_000,
    }
}

/// `floor(c / width)` where c is a column or the year of one, or the guard's exact spelling of
/// it (`grid::band`, which `true_floor.rs` puts in its place).
fn band(e: &Expr) -> Option<(&Column, How)> {
    match crate::grid::floor_parts(e) {
        Some((x, width)) => band_of(x, width, false),
        None => {
            let (x, width, scaled) = crate::grid::band_parts(uncast(e))?;
            band_of(x, width, scaled)
        }
    }
}

/// The band of `x` in the grid of `width` (a constant), times it when `scaled`.
fn band_of<'a>(x: &'a Expr, width: &Expr, scaled: bool) -> Option<(&'a Column, How)> {
    let width = self::width(width)?;
    match uncast(x) {
        Expr::Column(c) => Some((c, How::Band { width, scaled, years: false })),
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "date_part" => match args.as_slice() {
            [unit, c] if unit_text(&constant(unit)?)? == "year" => {
                Some((column(c)?, How::Band { width, scaled, years: true }))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A band's width: a positive constant, or the guard's own guarded division of one
/// (`nullif(500, 0)`).
pub(super) fn width(e: &Expr) -> Option<f64> {
    let w = match uncast(e) {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "nullif" => match args.as_slice() {
            [w, _] => number(&constant(w)?)?,
            _ => return None,
        },
        other => number(&constant(other)?)?,
    };
    (w.is_finite() && w > 0.0).then_some(w)
}

fn column(e: &Expr) -> Option<&Column> {
    match uncast(e) {
        Expr::Column(c) => Some(c),
        _ => None,
    }
}

fn unit_text(v: &ScalarValue) -> Option<String> {
    v.try_as_str().flatten().map(str::to_lowercase)
}

fn number(v: &ScalarValue) -> Option<f64> {
    crate::rules::anon_shape::number(v).filter(|x| x.is_finite())
}

/// The type of column `c` where a scan of `plan` reads it.
fn scan_type(plan: &LogicalPlan, c: &Column) -> Option<DataType> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(i) = scan.projected_schema.index_of_column(c)
        {
            found = Some(scan.projected_schema.field(i).data_type().clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The day a date or timestamp value falls on, when it falls at midnight.
pub(crate) fn midnight(value: &ScalarValue) -> Option<NaiveDate> {
    // The constant's whole value in its own unit (a timestamp's in UTC), never cast to a coarser
    // one: cast to seconds, `TIMESTAMP '2024-03-01 00:00:00.5'` was midnight, and beside a date
    // column (cast to a timestamp to compare) it was labelled as March while leaving out the
    // people of 1 March (a red team, 2026-12-06: membership 59 of 59 districts in two queries;
    // before 1970 the cast rounded up to midnight). Text is no date.
    let (count, per_day) = match value {
        ScalarValue::Date32(Some(days)) => (i64::from(*days), 1),
        ScalarValue::Date64(Some(ms)) => (*ms, per_day(TimeUnit::Millisecond)),
        ScalarValue::TimestampSecond(Some(v), _) => (*v, per_day(TimeUnit::Second)),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, per_day(TimeUnit::Millisecond)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, per_day(TimeUnit::Microsecond)),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, per_day(TimeUnit::Nanosecond)),
        _ => return None,
    };
    if count.rem_euclid(per_day) != 0 {
        return None;
    }
    epoch().checked_add_signed(chrono::TimeDelta::try_days(count.div_euclid(per_day))?)
}

fn epoch() -> NaiveDate {
    NaiveDate::default()
}

impl Unit {
    /// The unit a constant names, in any case.
    pub(crate) fn of(v: &ScalarValue) -> Option<Self> {
        Some(match unit_text(v)?.as_str() {
            "year" => Self::Year,
            "quarter" => Self::Quarter,
            "month" => Self::Month,
            "week" => Self::Week,
            "day" => Self::Day,
            _ => return None,
        })
    }

    /// The unit's name, as `date_part` and `date_trunc` take it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Year => "year",
            Self::Quarter => "quarter",
            Self::Month => "month",
            Self::Week => "week",
            Self::Day => "day",
        }
    }

    /// The first day of the unit holding `day`.
    fn start(self, day: NaiveDate) -> Option<NaiveDate> {
        use chrono::Datelike;
        match self {
            Self::Year => day.with_day(1)?.with_month(1),
            Self::Quarter => day.with_day(1)?.with_month((day.month0() / 3) * 3 + 1),
            Self::Month => day.with_day(1),
            // Weeks start on Monday, as date_trunc has them.
            Self::Week => day.checked_sub_days(Days::new(u64::from(day.weekday().num_days_from_monday()))),
            Self::Day => Some(day),
        }
    }

    /// The first day after the unit starting on `start`.
    fn after(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::Year => start.checked_add_months(Months::new(12)),
            Self::Quarter => start.checked_add_months(Months::new(3)),
            Self::Month => start.checked_add_months(Months::new(1)),
            Self::Week => start.checked_add_days(Days::new(7)),
            Self::Day => start.checked_add_days(Days::new(1)),
        }
    }
}

/// The smallest text above every text starting with `prefix`: its last character's successor.
pub(super) fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32)?;
    chars.push(next);
    Some(chars.into_iter().collect())
}

/// How a column's values compare in a label: integers (and timestamps, in their unit) as
/// integers, dates as days, other numbers as floats, booleans and text as themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Domain {
    Integer,
    Date,
    /// Timestamps without a time zone, in their unit.
    Timestamp(TimeUnit),
    Float,
    Boolean,
    Text,
}

impl Domain {
    fn of(ty: &DataType) -> Option<Self> {
        Some(match ty {
            t if t.is_integer() => Self::Integer,
            DataType::Date32 | DataType::Date64 => Self::Date,
            DataType::Timestamp(unit, None) => Self::Timestamp(*unit),
            t if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => Self::Float,
            DataType::Boolean => Self::Boolean,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            _ => return None,
        })
    }

    /// `value` as a point of this domain, when it is exactly one (`4321.5` is no integer).
    fn point(self, value: &ScalarValue) -> Option<Point> {
        Some(match self {
            Self::Integer => {
                let x = number(value)?;
                (x.fract() == 0.0 && x.abs() < 2f64.powi(53)).then_some(Point::Int(x as i64))?
            }
            Self::Date => match value.cast_to(&DataType::Date32).ok()? {
                ScalarValue::Date32(Some(d)) if midnight(value).is_some() => Point::Day(i64::from(d)),
                _ => return None,
            },
            Self::Timestamp(unit) => {
                let cast = value.cast_to(&DataType::Timestamp(unit, None)).ok()?;
                let ScalarValue::Int64(Some(v)) = cast.cast_to(&DataType::Int64).ok()? else { return None };
                Point::Int(v)
            }
            Self::Float => Point::Float(number(value)? + 0.0),
            Self::Boolean => match value.cast_to(&DataType::Boolean).ok()? {
                ScalarValue::Boolean(Some(b)) => Point::Bool(b),
                _ => return None,
            },
            Self::Text => Point::Text(value.try_as_str().flatten()?.to_string()),
        })
    }

    /// The interval `[lo, hi)` of real numbers, in this domain.
    fn reals(self, lo: f64, hi: f64) -> Option<Span> {
        let (lo, hi) = match self {
            // An integer is at least lo when it is at least ⌈lo⌉.
            Self::Integer => (Point::Int(lo.ceil() as i64), Point::Int(hi.ceil() as i64)),
            Self::Float => (Point::Float(lo + 0.0), Point::Float(hi + 0.0)),
            _ => return None,
        };
        Some(Span::new(Some((lo, true)), Some((hi, false))))
    }

    /// The days from `start` to before `end`, in this domain.
    fn dates(self, start: NaiveDate, end: NaiveDate) -> Option<Span> {
        let day = |d: NaiveDate| d.signed_duration_since(epoch()).num_days();
        let (lo, hi) = match self {
            Self::Date => (Point::Day(day(start)), Point::Day(day(end))),
            Self::Timestamp(unit) => {
                let per_day = per_day(unit);
                (Point::Int(day(start).checked_mul(per_day)?), Point::Int(day(end).checked_mul(per_day)?))
            }
            _ => return None,
        };
        Some(Span::new(Some((lo, true)), Some((hi, false))))
    }
}

/// A value of a column in a label.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub(crate) enum Point {
    Int(i64),
    /// Days since 1970-01-01.
    Day(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl Point {
    /// Whether the values between this point and the next are none: integers and days.
    fn discrete(&self) -> Option<i64> {
        match self {
            Self::Int(v) | Self::Day(v) => Some(*v),
            _ => None,
        }
    }

    fn with(&self, v: i64) -> Self {
        match self {
            Self::Day(_) => Self::Day(v),
            _ => Self::Int(v),
        }
    }

    fn shown(&self) -> String {
        match self {
            Self::Int(v) => v.to_string(),
            Self::Day(d) => match epoch().checked_add_signed(chrono::TimeDelta::days(*d)) {
                Some(date) => date.format("%Y-%m-%d").to_string(),
                None => format!("day {d}"),
            },
            Self::Float(x) => x.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

/// An interval of a column's values: each end, when there is one, with whether it is included.
/// Over integers and days both ends are included, so that one set of values is one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    lo: Option<(Point, bool)>,
    hi: Option<(Point, bool)>,
}

impl Span {
    pub(super) fn new(lo: Option<(Point, bool)>, hi: Option<(Point, bool)>) -> Self {
        let lo = lo.map(|(p, included)| match p.discrete() {
            Some(v) if !included => (p.with(v.saturating_add(1)), true),
            _ => (p, included),
        });
        let hi = hi.map(|(p, included)| match p.discrete() {
            Some(v) if !included => (p.with(v.saturating_sub(1)), true),
            _ => (p, included),
        });
        Self { lo, hi }
    }

    fn point(p: Point) -> Self {
        Self { lo: Some((p.clone(), true)), hi: Some((p, true)) }
    }

    /// This interval of a numeric column as far as its declared bounds `(lo, hi)` reach: `None`
    /// when it holds all of them (no restriction the bounds do not make already). Intervals of
    /// other values are as they are.
    fn within(&self, (lo, hi): (f64, f64)) -> Option<Self> {
        let bound = match self.lo.as_ref().or(self.hi.as_ref()).map(|(p, _)| p) {
            #[allow(clippy::cast_possible_truncation)] // saturating casts of declared bounds
            Some(Point::Int(_)) => {
                Self::new(Some((Point::Int(lo.ceil() as i64), true)), Some((Point::Int(hi.floor() as i64), true)))
            }
            Some(Point::Float(_)) => Self::new(Some((Point::Float(lo), true)), Some((Point::Float(hi), true))),
            _ => return Some(self.clone()),
        };
        let clamped = self.intersect(&bound);
        (clamped != bound).then_some(clamped)
    }

    /// This interval as `[lo, hi)`, when it has both ends and is one: over integers and days
    /// `hi` is the value after the last one included; over other values the start must be
    /// included and the end not.
    pub(crate) fn half_open(&self) -> Option<(Point, Point)> {
        let (Some((lo, lo_in)), Some((hi, hi_in))) = (&self.lo, &self.hi) else { return None };
        match (lo, hi) {
            (Point::Int(_) | Point::Day(_), Point::Int(h) | Point::Day(h)) if *lo_in && *hi_in => {
                Some((lo.clone(), hi.with(h.checked_add(1)?)))
            }
            (Point::Float(a), Point::Float(b)) if *lo_in && !*hi_in && a < b => Some((lo.clone(), hi.clone())),
            _ => None,
        }
    }

    /// The one boolean value this interval holds (`b`, `NOT b`).
    pub(crate) fn boolean(&self) -> Option<bool> {
        match (&self.lo, &self.hi) {
            (Some((Point::Bool(a), true)), Some((Point::Bool(b), true))) if a == b => Some(*a),
            _ => None,
        }
    }

    /// This interval of text as the text its cells of the grid start from, and whether it is
    /// that one value (`= 'x'`) rather than every text starting with it (`[p, successor(p))`,
    /// a prefix's bucket).
    pub(crate) fn text_base(&self) -> Option<(&str, bool)> {
        match (&self.lo, &self.hi) {
            (Some((Point::Text(a), true)), Some((Point::Text(b), true))) if a == b => Some((a, true)),
            (Some((Point::Text(a), true)), Some((Point::Text(b), false))) if successor(a).as_deref() == Some(b) => {
                Some((a, false))
            }
            _ => None,
        }
    }

    /// The values in both.
    fn intersect(&self, other: &Self) -> Self {
        // The higher start; at one value, an excluded end is the narrower.
        let lo = match (&self.lo, &other.lo) {
            (Some(a), Some(b)) => Some(match a.0.partial_cmp(&b.0) {
                Some(Ordering::Greater) => a.clone(),
                Some(Ordering::Less) => b.clone(),
                _ => (a.0.clone(), a.1 && b.1),
            }),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        let hi = match (&self.hi, &other.hi) {
            (Some(a), Some(b)) => Some(match a.0.partial_cmp(&b.0) {
                Some(Ordering::Less) => a.clone(),
                Some(Ordering::Greater) => b.clone(),
                _ => (a.0.clone(), a.1 && b.1),
            }),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Self { lo, hi }
    }

    /// `column = v` for one value, else `column in [lo, hi)` with `-inf`/`inf` for a missing end.
    fn label(&self, column: &str) -> String {
        if let (Some((a, true)), Some((b, true))) = (&self.lo, &self.hi)
            && a == b
        {
            return format!("{column} = {}", a.shown());
        }
        let (open, lo) = match &self.lo {
            Some((p, included)) => (if *included { '[' } else { '(' }, p.shown()),
            None => ('(', "-inf".into()),
        };
        let (hi, close) = match &self.hi {
            Some((p, included)) => (p.shown(), if *included { ']' } else { ')' }),
            None => ("inf".into(), ')'),
        };
        format!("{column} in {open}{lo}, {hi}{close}")
    }
}

/// A value as a label shows it: as it prints, a floating-point zero without its sign.
pub(crate) fn value_text(value: &ScalarValue) -> String {
    signless(value.clone()).to_string()
}

/// `value`, with a floating-point zero's sign dropped: a red team's `= -0.0` selected the rows
/// of `= 0` with a label of its own.
pub(crate) fn signless(value: ScalarValue) -> ScalarValue {
    match value {
        // Adding zero turns -0.0 into 0.0 and leaves every other value as it is.
        ScalarValue::Float64(Some(x)) => ScalarValue::Float64(Some(x + 0.0)),
        ScalarValue::Float32(Some(x)) => ScalarValue::Float32(Some(x + 0.0)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_of_integers_and_days_include_both_ends() {
        let a = Span::new(Some((Point::Int(0), true)), Some((Point::Int(500), false)));
        assert_eq!(a.label("x"), "x in [0, 499]");
        let b = Span::new(Some((Point::Int(-1), false)), None);
        assert_eq!(a.intersect(&b), a);
        assert_eq!(Span::new(Some((Point::Int(200), true)), Some((Point::Int(201), false))).label("x"), "x = 200");
        let f = Span::new(Some((Point::Float(0.0), true)), Some((Point::Float(500.0), false)));
        assert_eq!(f.label("c"), "c in [0, 500)");
        let g = Span::new(None, Some((Point::Float(500.0), true)));
        assert_eq!(f.intersect(&g), f);
        assert_eq!(Span::new(None, Some((Point::Day(0), false))).label("d"), "d in (-inf, 1969-12-31]");
    }

    #[test]
    fn a_prefix_is_the_texts_between_it_and_its_successor() {
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        // The successor of the last character before the surrogates is the first after them.
        assert_eq!(successor("\u{d7ff}").as_deref(), Some("\u{e000}"));
        assert_eq!(successor(&char::MAX.to_string()), None);
    }

    #[test]
    fn units_start_where_date_trunc_starts_them() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(Unit::Quarter.start(day(1950, 8, 17)), Some(day(1950, 7, 1)));
        // 1950-08-17 was a Thursday.
        assert_eq!(Unit::Week.start(day(1950, 8, 17)), Some(day(1950, 8, 14)));
        assert_eq!(Unit::Month.after(day(1950, 12, 1)), Some(day(1951, 1, 1)));
    }
}
