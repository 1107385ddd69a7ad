//! The input, encoded once for the search: each quasi-identifier as a distinct-value id per row
//! with the label code of every value at every level, each sensitive column as coded values, the
//! privacy unit as a dense person id.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Date32Type, Float64Type};
use arrow::record_batch::RecordBatch;

use crate::hierarchy::{self, Kind, Step, Value};
use crate::{Error, Result, Role, Spec};

/// The encoded input.
pub(crate) struct Table {
    /// All input rows in one batch.
    pub(crate) input: RecordBatch,
    /// The person each row is about, `0..people`.
    pub(crate) units: Vec<u32>,
    /// Distinct people.
    pub(crate) people: usize,
    /// Whether rows of one person can be linked in the extract (the pseudonym is kept and some
    /// person has several rows): then classes are formed over people's whole profiles.
    pub(crate) linked: bool,
    pub(crate) qis: Vec<Qi>,
    pub(crate) sensitive: Vec<Sensitive>,
    /// Rows left out because their privacy unit is missing.
    pub(crate) without_unit: u64,
    /// Rows left out because their person had more than the cap.
    pub(crate) over_cap: u64,
    /// In an extract joined from several datasets, what each dataset's own staff know.
    pub(crate) views: Vec<View>,
}

/// What the staff of one dataset of a joined extract know exactly: the columns of theirs the
/// extract releases as they are (attributes, sensitive values), by which they can tell rows
/// apart within a class; and the other datasets' sensitive columns that must stay l-diverse
/// among the rows they cannot tell apart.
pub(crate) struct View {
    /// The known columns' names.
    pub(crate) known_names: Vec<String>,
    /// Per known column, per row: the id of its released value.
    pub(crate) known: Vec<Vec<u32>>,
    /// Indices into [`Table::sensitive`] of the other datasets' sensitive columns.
    pub(crate) protected: Vec<usize>,
}

/// A quasi-identifier.
pub(crate) struct Qi {
    pub(crate) name: String,
    pub(crate) ladder: Vec<Step>,
    /// Per row: the id of its distinct value.
    pub(crate) base: Vec<u32>,
    /// Per level, per distinct value: the code of its label.
    pub(crate) codes: Vec<Vec<u32>>,
    /// Per level, per code: the label (`None` for null).
    pub(crate) labels: Vec<Vec<Option<String>>>,
    /// Per level, per distinct value: its information loss in `[0, 1]`.
    pub(crate) loss: Vec<Vec<f64>>,
    /// Per level: the mean loss over all rows.
    pub(crate) mean_loss: Vec<f64>,
}

/// The code of a missing sensitive value: not a value `l` counts.
pub(crate) const NULL_CODE: u32 = u32::MAX;

/// A sensitive column.
pub(crate) struct Sensitive {
    pub(crate) name: String,
    /// Per row: the id of its released (coded) value as `l` counts it (text trimmed and
    /// lowercased, so `HIV ` and `hiv` are one value), [`NULL_CODE`] for a missing one.
    pub(crate) codes: Vec<u32>,
    /// The bounds numbers were coded to.
    pub(crate) bounds: Option<(f64, f64)>,
    /// The released values, row-aligned with the input.
    pub(crate) released: ArrayRef,
    /// How numbers and dates were coded, for the report.
    pub(crate) coding: Option<String>,
}

impl Table {
    pub(crate) fn rows(&self) -> usize {
        self.units.len()
    }

    pub(crate) fn encode(input: &[RecordBatch], spec: &Spec) -> Result<Self> {
        let schema =
            input.first().map(RecordBatch::schema).ok_or_else(|| Error::Spec("the dataset is empty".into()))?;
        let mut input = concat_batches(&schema, input)?;
        // A row nobody can be counted for cannot be released: k would not hold for it.
        let mut without_unit = 0;
        if let Some(unit) = &spec.unit {
            let i = input.schema().index_of(unit).map_err(|_| Error::UnknownColumn(unit.clone()))?;
            without_unit = input.column(i).null_count() as u64;
            if without_unit > 0 {
                let present = arrow::compute::is_not_null(input.column(i))?;
                input = arrow::compute::filter_record_batch(&input, &present)?;
            }
        }
        let rows = input.num_rows();
        let (mut units, people) = match &spec.unit {
            Some(unit) => intern_units(
                input
                    .schema()
                    .index_of(unit)
                    .map(|i| input.column(i))
                    .map_err(|_| Error::UnknownColumn(unit.clone()))?,
            )?,
            None => ((0..rows as u32).collect(), rows),
        };
        let mut over_cap = 0;
        if let Some(cap) = spec.max_rows_per_person.filter(|_| people < rows) {
            let keep = capped(&input, spec, &units, people, cap)?;
            over_cap = keep.false_count() as u64;
            if over_cap > 0 {
                input = arrow::compute::filter_record_batch(&input, &keep)?;
                units = units.iter().zip(keep.values().iter()).filter(|(_, k)| *k).map(|(u, _)| *u).collect();
            }
        }
        let rows = input.num_rows();
        let column = |name: &str| -> Result<&ArrayRef> {
            input.schema().index_of(name).map(|i| input.column(i)).map_err(|_| Error::UnknownColumn(name.to_owned()))
        };
        let linked = people < rows && spec.columns.iter().any(|c| matches!(c.role, Role::Pseudonym));
        let mut qis = Vec::new();
        let mut sensitive = Vec::new();
        for c in &spec.columns {
            let array = column(&c.name)?;
            match &c.role {
                Role::QuasiIdentifier { ladder, floor } => {
                    qis.push(encode_qi(&c.name, array, ladder.as_deref(), *floor)?);
                }
                Role::Sensitive { bounds } => {
                    sensitive.push(encode_sensitive(&c.name, array, *bounds, &units, spec.k)?);
                }
                Role::Pseudonym | Role::Attribute => {}
            }
        }
        Ok(Table { input, units, people, linked, qis, sensitive, without_unit, over_cap, views: Vec::new() })
    }

    /// Adds what each dataset's staff know ([`crate::Insider`]).
    pub(crate) fn with_views(mut self, insiders: &[crate::Insider]) -> Result<Self> {
        for insider in insiders {
            let mut known = Vec::with_capacity(insider.known.len());
            for name in &insider.known {
                let array = match self.sensitive.iter().find(|s| s.name == *name) {
                    Some(s) => Arc::clone(&s.released),
                    None => {
                        self.input.column_by_name(name).cloned().ok_or_else(|| Error::UnknownColumn(name.clone()))?
                    }
                };
                let text = cast(&array, &DataType::Utf8)?;
                let mut ids: HashMap<Option<&str>, u32> = HashMap::new();
                known.push(
                    text.as_string::<i32>()
                        .iter()
                        .map(|v| {
                            let next = ids.len() as u32;
                            *ids.entry(v).or_insert(next)
                        })
                        .collect(),
                );
            }
            let protected = insider
                .protected
                .iter()
                .filter_map(|name| self.sensitive.iter().position(|s| s.name == *name))
                .collect();
            self.views.push(View { known_names: insider.known.clone(), known, protected });
        }
        Ok(self)
    }
}

/// Which rows to keep so that no person has more than `cap`: each person's rows with the
/// smallest keyed hash of their values in `spec`'s columns, so the choice is fixed by the key
/// and each person's rows, whatever their order in the file: a red team registered the same
/// rows again in another order, and the record kept of a person with two changed, which the
/// two versions' extracts showed (one person of the class had both diagnoses).
fn capped(
    input: &RecordBatch,
    spec: &Spec,
    units: &[u32],
    people: usize,
    cap: u64,
) -> Result<arrow::array::BooleanArray> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &spec.key);
    let columns: Vec<ArrayRef> = spec
        .columns
        .iter()
        .filter_map(|c| input.schema().index_of(&c.name).ok().map(|i| Arc::clone(input.column(i))))
        .collect();
    let converter = arrow::row::RowConverter::new(
        columns.iter().map(|c| arrow::row::SortField::new(c.data_type().clone())).collect(),
    )?;
    let values = converter.convert_columns(&columns)?;
    let mut order: Vec<(u32, [u8; 8], usize)> = units
        .iter()
        .enumerate()
        .map(|(row, u)| {
            let tag = ring::hmac::sign(&key, values.row(row).as_ref());
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&tag.as_ref()[..8]);
            (*u, bytes, row)
        })
        .collect();
    order.sort_unstable();
    let mut keep = vec![false; units.len()];
    let mut seen = vec![0u64; people];
    for (u, _, row) in order {
        if seen[u as usize] < cap {
            seen[u as usize] += 1;
            keep[row] = true;
        }
    }
    Ok(keep.into_iter().map(Some).collect())
}

/// Dense person ids (rows without a unit were left out before).
fn intern_units(array: &ArrayRef) -> Result<(Vec<u32>, usize)> {
    let text = cast(array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut ids: HashMap<Option<&str>, u32> = HashMap::new();
    let units = text
        .iter()
        .map(|v| {
            let next = ids.len() as u32;
            *ids.entry(v).or_insert(next)
        })
        .collect();
    Ok((units, ids.len()))
}

fn kind(name: &str, data_type: &DataType, role: &'static str) -> Result<Kind> {
    Ok(match data_type {
        DataType::Date32 | DataType::Date64 => Kind::Date,
        DataType::Timestamp(_, _) => Kind::Timestamp,
        t if t.is_integer() => Kind::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(_, _) | DataType::Decimal256(_, _)) => Kind::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        DataType::Boolean => Kind::Boolean,
        other => return Err(Error::Type { column: name.to_owned(), data_type: other.clone(), role }),
    })
}

/// A column as generalization reads it, row by row, without a value per row: rows are keyed
/// (borrowing the column's text) and only distinct values are built.
enum Rows {
    /// Dates: days; timestamps also keep their text for the exact step.
    Time {
        days: arrow::array::Date32Array,
        text: Option<arrow::array::StringArray>,
    },
    Number(Float64Array),
    Text(arrow::array::StringArray),
}

impl Rows {
    fn new(array: &ArrayRef, kind: Kind) -> Result<Self> {
        Ok(match kind {
            Kind::Date | Kind::Timestamp => {
                let days = cast(array, &DataType::Date32)?.as_primitive::<Date32Type>().clone();
                let text = (kind == Kind::Timestamp)
                    .then(|| cast(array, &DataType::Utf8).map(|t| t.as_string::<i32>().clone()))
                    .transpose()?;
                Rows::Time { days, text }
            }
            Kind::Integer | Kind::Float => {
                Rows::Number(cast(array, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
            }
            Kind::Text | Kind::Boolean => Rows::Text(cast(array, &DataType::Utf8)?.as_string::<i32>().clone()),
        })
    }

    /// A hashable key of row `i`'s value.
    fn key(&self, i: usize) -> (u8, u64, &str) {
        match self {
            Rows::Time { days, .. } if days.is_null(i) => (0, 0, ""),
            Rows::Time { days, text: None } => (1, days.value(i) as u32 as u64, ""),
            Rows::Time { days, text: Some(t) } => (1, days.value(i) as u32 as u64, t.value(i)),
            Rows::Number(n) if n.is_null(i) || !n.value(i).is_finite() => (0, 0, ""),
            Rows::Number(n) => (2, n.value(i).to_bits(), ""),
            Rows::Text(t) if t.is_null(i) => (0, 0, ""),
            Rows::Text(t) => (3, 0, t.value(i)),
        }
    }

    /// Row `i`'s value.
    fn value(&self, i: usize) -> Value {
        match self.key(i) {
            (0, _, _) => Value::Null,
            (1, _, text) => {
                let Rows::Time { days, .. } = self else { return Value::Null };
                let days = days.value(i);
                let text = if text.is_empty() { hierarchy::day_text(days) } else { text.to_owned() };
                Value::Time { days, text }
            }
            (2, bits, _) => Value::Number(f64::from_bits(bits)),
            (_, _, text) => Value::Text(text.to_owned()),
        }
    }
}

fn encode_qi(name: &str, array: &ArrayRef, ladder: Option<&[Step]>, floor: Option<Step>) -> Result<Qi> {
    let kind = kind(name, array.data_type(), "a quasi-identifier")?;
    let rows = Rows::new(array, kind)?;
    let mut ids: HashMap<(u8, u64, &str), u32> = HashMap::new();
    let mut owned: Vec<Value> = Vec::new();
    let base: Vec<u32> = (0..array.len())
        .map(|i| {
            *ids.entry(rows.key(i)).or_insert_with(|| {
                owned.push(rows.value(i));
                owned.len() as u32 - 1
            })
        })
        .collect();
    let distinct: Vec<&Value> = owned.iter().collect();
    let ladder = match ladder {
        Some(steps) => hierarchy::from_floor(name, kind, floor, hierarchy::checked_ladder(name, kind, steps)?)?,
        None => {
            let numbers = distinct.iter().filter_map(|v| if let Value::Number(n) = v { Some(*n) } else { None });
            let (lo, hi) = numbers.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), n| (lo.min(n), hi.max(n)));
            let range = (hi > lo).then_some(hi - lo);
            let mut lengths = distinct.iter().filter_map(|v| match v {
                Value::Text(t) if t.chars().all(|c| c.is_ascii_alphanumeric()) => Some(t.chars().count()),
                Value::Text(_) => Some(0),
                _ => None,
            });
            let first = lengths.next();
            let codes = first.filter(|n| (2..=18).contains(n) && lengths.all(|m| Some(m) == first));
            hierarchy::default_ladder(name, kind, floor, range, codes)?
        }
    };
    let integer = kind == Kind::Integer;
    let non_null = distinct.iter().filter(|v| !matches!(v, Value::Null)).count();
    let mut counts = vec![0u64; distinct.len()];
    for b in &base {
        counts[*b as usize] += 1;
    }
    let mut codes = Vec::with_capacity(ladder.len());
    let mut labels = Vec::with_capacity(ladder.len());
    let mut loss = Vec::with_capacity(ladder.len());
    let mut mean_loss = Vec::with_capacity(ladder.len());
    for step in &ladder {
        let mut label_ids: HashMap<Option<String>, u32> = HashMap::new();
        let mut level_labels = Vec::new();
        let level_codes: Vec<u32> = distinct
            .iter()
            .map(|v| {
                let label = hierarchy::label(v, *step, integer);
                *label_ids.entry(label.clone()).or_insert_with(|| {
                    level_labels.push(label);
                    level_labels.len() as u32 - 1
                })
            })
            .collect();
        // Loss of a value: the share of the column's other distinct values its label also covers.
        let mut covered = vec![0u64; level_labels.len()];
        for (v, code) in distinct.iter().zip(&level_codes) {
            if !matches!(v, Value::Null) {
                covered[*code as usize] += 1;
            }
        }
        let level_loss: Vec<f64> = distinct
            .iter()
            .zip(&level_codes)
            .map(|(v, code)| match (*step, *v) {
                (Step::Suppressed, _) => 1.0,
                (_, Value::Null) => 0.0,
                _ if non_null <= 1 => 0.0,
                _ => (covered[*code as usize] - 1) as f64 / (non_null - 1) as f64,
            })
            .collect();
        let total: f64 = level_loss.iter().zip(&counts).map(|(l, c)| l * *c as f64).sum();
        mean_loss.push(if base.is_empty() { 0.0 } else { total / base.len() as f64 });
        codes.push(level_codes);
        labels.push(level_labels);
        loss.push(level_loss);
    }
    Ok(Qi { name: name.to_owned(), ladder, base, codes, labels, loss, mean_loss })
}

fn encode_sensitive(
    name: &str,
    array: &ArrayRef,
    bounds: Option<(f64, f64)>,
    units: &[u32],
    k: u64,
) -> Result<Sensitive> {
    let kind = kind(name, array.data_type(), "a sensitive column")?;
    let mut used = None;
    let (released, coding): (ArrayRef, _) = match kind {
        Kind::Integer | Kind::Float => {
            let numbers = cast(array, &DataType::Float64)?;
            let numbers = numbers.as_primitive::<Float64Type>();
            let (lo, hi, declared) = match bounds {
                Some((lo, hi)) if lo <= hi => (lo, hi, true),
                Some(_) => return Err(Error::Spec(format!("the bounds of `{name}` are reversed"))),
                None => {
                    let (lo, hi) = percentiles(numbers);
                    (lo, hi, false)
                }
            };
            used = Some((lo, hi));
            let clamped: Float64Array =
                numbers.iter().map(|v| v.filter(|v| v.is_finite()).map(|v| v.clamp(lo, hi))).collect();
            let (coded, grouping) = shared_by_k(&clamped, units, k);
            let bounded = if declared {
                "coded to the declared bounds"
            } else {
                "coded to the 1st and 99th percentiles (no bounds declared)"
            };
            let coding = [bounded].into_iter().chain(grouping).collect::<Vec<_>>().join("; ");
            if kind == Kind::Integer {
                let ints: Int64Array = coded.iter().map(|v| v.map(|v| v.round() as i64)).collect();
                (Arc::new(ints), Some(coding))
            } else {
                (Arc::new(coded), Some(coding))
            }
        }
        Kind::Date | Kind::Timestamp => {
            // As numbers of days (dates) or of the timestamp's unit, grouped as numbers are,
            // then back to the column's type (a group's mean date rounded to a day).
            let (ticks, day) = match array.data_type() {
                DataType::Date32 => (cast(array, &DataType::Int32)?, 1.0),
                DataType::Date64 => (cast(array, &DataType::Int64)?, 86_400_000.0),
                _ => (cast(array, &DataType::Int64)?, 1.0),
            };
            let ticks = cast(&ticks, &DataType::Float64)?;
            let (coded, grouping) = shared_by_k(ticks.as_primitive::<Float64Type>(), units, k);
            let whole: Int64Array = coded.iter().map(|v| v.map(|v| ((v / day).round() * day) as i64)).collect();
            let back = match array.data_type() {
                DataType::Date32 => cast(&cast(&whole, &DataType::Int32)?, &DataType::Date32)?,
                other => cast(&whole, other)?,
            };
            let coding = (!grouping.is_empty()).then(|| grouping.join("; "));
            (back, coding)
        }
        _ => (Arc::clone(array), None),
    };
    let text = cast(&released, &DataType::Utf8)?;
    let mut ids: HashMap<String, u32> = HashMap::new();
    let codes = text
        .as_string::<i32>()
        .iter()
        .map(|v| match v.map(|v| v.trim().to_lowercase()).filter(|v| !v.is_empty()) {
            None => NULL_CODE,
            Some(v) => {
                let next = ids.len() as u32;
                *ids.entry(v).or_insert(next)
            }
        })
        .collect();
    Ok(Sensitive { name: name.to_owned(), codes, released, coding, bounds: used })
}

/// The released values of a number or date column: [`microaggregated`], and a missing value
/// fewer than `k` people share (but some) replaced by the value most people share. Returns what
/// was done to them, for the report (nothing when every value, and the missing one, is
/// shared by `k` people).
///
/// A missing value one person has is a key like any other: whoever knows the target has no
/// income on record finds their row (and, with two extracts, links them on it).
fn shared_by_k(values: &Float64Array, units: &[u32], k: u64) -> (Float64Array, Vec<&'static str>) {
    let mut done = Vec::new();
    let grouped = match microaggregated(values, units, k) {
        Some(grouped) => {
            done.push("values fewer than k people share replaced by the mean of a group of at least k");
            grouped
        }
        None => values.clone(),
    };
    let missing: std::collections::HashSet<u32> =
        (0..grouped.len()).filter(|r| grouped.is_null(*r)).map(|r| units[r]).collect();
    if missing.is_empty() || missing.len() as u64 >= k.max(1) {
        return (grouped, done);
    }
    let mut people: HashMap<u64, std::collections::HashSet<u32>> = HashMap::new();
    for (r, v) in grouped.iter().enumerate() {
        if let Some(v) = v {
            people.entry(v.to_bits()).or_default().insert(units[r]);
        }
    }
    // The value most people share; of those, the least, so the choice does not depend on order.
    let Some(most) = people
        .iter()
        .map(|(bits, who)| (who.len(), f64::from_bits(*bits)))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, v)| v)
    else {
        return (grouped, done);
    };
    done.push("missing values fewer than k people share given the value most people share");
    (grouped.iter().map(|v| Some(v.unwrap_or(most))).collect(), done)
}

/// Univariate microaggregation of the values fewer than `k` people share (as sdcMicro's
/// `microaggregation` does for a whole column): in value order, each such value joins its
/// neighbours until the group holds `k` people, and every value of the group is replaced by the
/// mean of its people's means; a value `k` people share stays as it is. `None` when every value is already
/// shared by `k` people. A red team linked two single-dataset extracts of two departments on a
/// salary both released exactly (each value one person's) and read the person's benefit; a
/// released number is now a value of at least `k` people, not a key.
fn microaggregated(values: &Float64Array, units: &[u32], k: u64) -> Option<Float64Array> {
    let k = k.max(1) as usize;
    let mut rows: Vec<(f64, u32, usize)> =
        values.iter().enumerate().filter_map(|(r, v)| v.map(|v| (v, units[r], r))).collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // Runs of one value: (first row in `rows`, end, people).
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = start;
        let mut people = 0;
        while end < rows.len() && rows[end].0.total_cmp(&rows[start].0).is_eq() {
            if end == start || rows[end].1 != rows[end - 1].1 {
                people += 1;
            }
            end += 1;
        }
        runs.push((start, end, people));
        start = end;
    }
    if runs.iter().all(|(_, _, people)| *people >= k) {
        return None;
    }
    // Groups of runs: a run k people share alone, rare runs with their neighbours.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut open: Option<(usize, std::collections::HashSet<u32>)> = None;
    for (first, end, people) in runs {
        match open.as_mut() {
            None if people >= k => groups.push((first, end)),
            None => {
                let who = rows[first..end].iter().map(|r| r.1).collect();
                open = Some((first, who));
            }
            Some((_, who)) => who.extend(rows[first..end].iter().map(|r| r.1)),
        }
        if let Some((from, who)) = &open
            && who.len() >= k
        {
            groups.push((*from, end));
            open = None;
        }
    }
    if let Some((from, _)) = open {
        match groups.last_mut() {
            Some(last) => last.1 = rows.len(),
            None => groups.push((from, rows.len())),
        }
    }
    let mut coded: Vec<Option<f64>> = values.iter().collect();
    for (from, to) in groups {
        let group = &rows[from..to];
        // The mean of each person's mean: one person's many rows weigh as one person (a red
        // team gave the target 5,000 rows in a group of five people, and the group's mean was
        // the target's value to the unit).
        // Ordered by person, so the sum (and the released mean, to the last bit) is the same in
        // every build of this base: extracts of one base link on these values exactly as the
        // combination checks assume.
        let mut per_person: std::collections::BTreeMap<u32, (f64, usize)> = std::collections::BTreeMap::new();
        for (v, unit, _) in group {
            let p = per_person.entry(*unit).or_default();
            p.0 += v;
            p.1 += 1;
        }
        let mean = per_person.values().map(|(sum, n)| sum / *n as f64).sum::<f64>() / per_person.len() as f64;
        for (_, _, row) in group {
            coded[*row] = Some(mean);
        }
    }
    Some(coded.into_iter().collect())
}

/// The 1st and 99th percentiles of the finite values (nearest rank); (0, 0) when there are none.
fn percentiles(numbers: &Float64Array) -> (f64, f64) {
    let mut v: Vec<f64> = numbers.iter().flatten().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (at(0.01), at(0.99))
}
