//! Dp mode's noise (design §3): the guard's bounded plan gives, per group, exact totals in
//! which one person weighs at most `G` groups × `R` rows × the declared bound; here each
//! released number gets discrete Laplace (ε) or discrete Gaussian (ρ) noise calibrated to that
//! weight, groups whose noisy count of people is below the threshold are dropped, and every
//! value keeps its 95% interval.
//!
//! The query's ε or ρ is split equally over the numbers it releases per group: one per COUNT
//! and SUM, two per AVG (a noisy sum over a noisy count), and, when the answer has groups, one
//! for the noisy count of people that decides whether a group is released (reused as the
//! answer of COUNT(DISTINCT unit)). One person moves, in each of at most `G` groups, a row
//! count by `R`, a people count by 1 and a sum by `R·M` (`M = max(|lo|, |hi|)`): Laplace noise
//! is calibrated to `G` times that (L1), Gaussian noise to `√G` times it (L2). A group of one
//! person passes the threshold with probability at most `δ/G`, so at most `δ` over the
//! person's groups.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use veil_dp::{Mechanism, Noise, Noisy, Sampler};
use veil_guard::{DpAggregate, DpPlan};

use crate::error::internal;
use crate::{Error, Result};

/// Confidence of the intervals reported with every noisy value.
const CONFIDENCE: f64 = 0.95;

/// The privacy parameters of one dp query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpParams {
    /// Discrete Laplace (pure ε) or discrete Gaussian (ρ-zCDP).
    pub noise: Noise,
    /// What the whole query spends: ε for Laplace noise, ρ for Gaussian noise.
    pub budget: f64,
    /// Delta for releasing groups whose presence depends on people.
    pub delta: f64,
}

impl DpParams {
    /// Pure ε, discrete Laplace noise.
    pub fn laplace(epsilon: f64, delta: f64) -> Self {
        Self { noise: Noise::Laplace, budget: epsilon, delta }
    }

    /// ρ-zCDP, discrete Gaussian noise.
    pub fn gaussian(rho: f64, delta: f64) -> Self {
        Self { noise: Noise::Gaussian, budget: rho, delta }
    }

    /// The pure ε spent, if Laplace.
    pub fn epsilon(&self) -> Option<f64> {
        (self.noise == Noise::Laplace).then_some(self.budget)
    }

    /// The ρ spent, if Gaussian.
    pub fn rho(&self) -> Option<f64> {
        (self.noise == Noise::Gaussian).then_some(self.budget)
    }
}

/// The noisy aggregate of a dp answer, before the analyst's post-processing: what is recorded
/// and replayed for an identical query.
#[derive(Debug, Clone)]
pub struct NoisyAggregate {
    /// The released groups: the aggregate's columns, named `c0, c1, …`, then `lo<i>` and
    /// `hi<i>` (Float64) bounding the 95% interval of each noisy column `i`.
    batch: RecordBatch,
    /// Groups withheld because their noisy count of people was below the threshold.
    pub suppressed: u64,
    /// The noisy count of people a group needed, if the answer has groups.
    pub threshold: Option<f64>,
}

impl NoisyAggregate {
    /// Arrow IPC bytes, for the catalogue.
    ///
    /// # Errors
    /// [`Error::Internal`] if Arrow cannot write the batch.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta = HashMap::new();
        meta.insert("suppressed".to_owned(), self.suppressed.to_string());
        if let Some(t) = self.threshold {
            meta.insert("threshold".to_owned(), t.to_string());
        }
        let schema = Arc::new(self.batch.schema().as_ref().clone().with_metadata(meta));
        let batch = RecordBatch::try_new(Arc::clone(&schema), self.batch.columns().to_vec()).map_err(internal)?;
        let mut out = Vec::new();
        let mut writer = StreamWriter::try_new(&mut out, &schema).map_err(internal)?;
        writer.write(&batch).map_err(internal)?;
        writer.finish().map_err(internal)?;
        drop(writer);
        Ok(out)
    }

    /// Reads what [`NoisyAggregate::to_bytes`] wrote.
    ///
    /// # Errors
    /// [`Error::Internal`] if the bytes are not such a batch.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(internal)?;
        let schema = reader.schema();
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(internal)?;
        let batch = concat_batches(&schema, &batches).map_err(internal)?;
        let meta = schema.metadata();
        let suppressed = meta.get("suppressed").and_then(|s| s.parse().ok()).unwrap_or(0);
        let threshold = meta.get("threshold").and_then(|s| s.parse().ok());
        let plain = Arc::new(schema.as_ref().clone().with_metadata(HashMap::new()));
        let batch = RecordBatch::try_new(plain, batch.columns().to_vec()).map_err(internal)?;
        Ok(Self { batch, suppressed, threshold })
    }

    /// The aggregate's values, columns `c0 … c<n-1>` of `plan`'s aggregate, checked to be what
    /// the plan measures: an answer recorded for another shape is never released as this one's
    /// (the answer key covers the shape; this holds even if a recorded answer was damaged).
    ///
    /// # Errors
    /// [`Error::Internal`] if a column is missing, of another type, or a noisy column lacks
    /// its interval.
    pub(crate) fn values(&self, plan: &DpPlan) -> Result<RecordBatch> {
        let expected = plan.aggregate_schema.fields();
        let fields = self.batch.schema_ref().fields();
        let fits = fields.len() == expected.len() + 2 * (expected.len() - plan.keys)
            && expected
                .iter()
                .enumerate()
                .all(|(i, f)| fields[i].data_type() == f.data_type() && (i < plan.keys || self.intervals(i).is_some()));
        if !fits {
            return Err(internal("a recorded dp answer does not have the shape of this query's aggregate"));
        }
        let indices: Vec<usize> = (0..expected.len()).collect();
        self.batch.project(&indices).map_err(internal)
    }

    /// The bounds of the 95% intervals of aggregate column `i`, by row, if that column is noisy.
    fn intervals(&self, i: usize) -> Option<(&Float64Array, &Float64Array)> {
        let lo = self.batch.column_by_name(&format!("lo{i}"))?.as_primitive_opt::<Float64Type>()?;
        let hi = self.batch.column_by_name(&format!("hi{i}"))?.as_primitive_opt::<Float64Type>()?;
        Some((lo, hi))
    }
}

/// How many numbers per group share the query's epsilon.
pub fn measurements(plan: &DpPlan) -> usize {
    let per: usize = plan
        .aggregates
        .iter()
        .map(|a| match a {
            DpAggregate::CountRows | DpAggregate::Sum { .. } => 1,
            DpAggregate::Avg { .. } => 2,
            DpAggregate::CountPeople => usize::from(!plan.thresholded()),
        })
        .sum();
    (per + usize::from(plan.thresholded())).max(1)
}

/// How a dp answer's noise is calibrated: the query's ε or ρ shared equally by the numbers it
/// measures per group, one person in at most `groups` groups with at most `rows` rows in each.
#[derive(Debug, Clone, Copy)]
struct Calibration {
    noise: Noise,
    share: f64,
    groups: u64,
    rows: f64,
}

/// How one noisy aggregate is measured.
enum Measured {
    /// One noisy value that one person moves by at most `per_value`; `real` for sums on a grid.
    Value { per_value: f64, real: bool },
    /// A sum with bounds `[0, 0]`: exactly zero, no noise.
    Zero,
    /// An average: a noisy sum over a noisy count, whose interval depends on the count.
    Average,
}

impl Calibration {
    fn of(plan: &DpPlan, params: DpParams) -> Self {
        let c = plan.contribution;
        Self {
            noise: params.noise,
            share: params.budget / measurements(plan) as f64,
            groups: if plan.grouped() { c.max_groups.max(1) } else { 1 },
            rows: c.max_rows.max(1) as f64,
        }
    }

    /// The noise for values one person moves by `per_value` each, in at most `groups` groups.
    fn mechanism(&self, per_value: f64) -> Result<Mechanism> {
        Mechanism::new(self.noise, per_value, self.groups, self.share)
            .map_err(|e| Error::Internal(format!("noise: {e}")))
    }

    fn measured(&self, aggregate: DpAggregate) -> Measured {
        match aggregate {
            DpAggregate::CountRows => Measured::Value { per_value: self.rows, real: false },
            DpAggregate::CountPeople => Measured::Value { per_value: 1.0, real: false },
            DpAggregate::Sum { lo, hi } if lo.abs().max(hi.abs()) == 0.0 => Measured::Zero,
            DpAggregate::Sum { lo, hi } => {
                Measured::Value { per_value: self.rows * lo.abs().max(hi.abs()), real: true }
            }
            DpAggregate::Avg { .. } => Measured::Average,
        }
    }
}

/// The noisy count of people a group needs to be released, if the answer's groups depend on
/// people: known before the query runs (it depends on the noise, δ and k only), so a dry run
/// shows it too.
///
/// # Errors
/// [`Error::Internal`] if the noise's parameters cannot be represented.
pub(crate) fn threshold(plan: &DpPlan, params: DpParams, k: u64) -> Result<Option<f64>> {
    if !plan.thresholded() {
        return Ok(None);
    }
    let people = Calibration::of(plan, params).mechanism(1.0)?;
    let t = people.threshold(params.delta).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Some(t.max(k as f64)))
}

/// The people a group needs to be released with probability at least 95%: the threshold plus
/// the noise's one-sided 95% bound. With `threshold` people a group is released about half the
/// time; with fewer, rarely. Known before the query runs, so a dry run says which groups would
/// likely be withheld without counting any (a count of them would be one more measurement).
///
/// # Errors
/// [`Error::Internal`] if the noise's parameters cannot be represented.
pub(crate) fn released_from(plan: &DpPlan, params: DpParams, k: u64) -> Result<Option<f64>> {
    let Some(threshold) = threshold(plan, params, k)? else { return Ok(None) };
    let people = Calibration::of(plan, params).mechanism(1.0)?;
    // A two-sided 90% half-width bounds the noise below by it with probability 95%.
    let below = people.half_width(false, 0.90).map_err(|e| Error::Internal(format!("noise: {e}")))?;
    Ok(Some((threshold + below).ceil()))
}

/// The 95% half-width of each of `outputs` that is a noisy count or sum, as its values will
/// report it: known before the query runs.
///
/// # Errors
/// [`Error::Internal`] if the noise's parameters cannot be represented.
pub(crate) fn half_widths(
    plan: &DpPlan,
    params: DpParams,
    outputs: Vec<(String, DpAggregate)>,
) -> Result<Vec<(String, f64)>> {
    let calibration = Calibration::of(plan, params);
    let mut out = Vec::new();
    for (name, aggregate) in outputs {
        let half = match calibration.measured(aggregate) {
            Measured::Value { per_value, real } => calibration
                .mechanism(per_value)?
                .half_width(real, CONFIDENCE)
                .map_err(|e| Error::Internal(format!("noise: {e}")))?,
            Measured::Zero => 0.0,
            Measured::Average => continue,
        };
        out.push((name, half));
    }
    Ok(out)
}

/// The least ε (discrete Laplace `noise`) or ρ (discrete Gaussian) that gives every column of
/// `accuracy` a 95% interval no wider than asked, for an answer of `plan` whose noisy columns
/// are `outputs`. The query's ε or ρ is shared equally by the numbers it measures per group
/// (both compose by adding), so the most demanding column sets every share.
///
/// # Errors
/// [`Error::Sql`] `accuracy_invalid` for a column that is not a noisy count or sum of the
/// answer, an average, or a width no budget gives.
pub(crate) fn budget_for_accuracy(
    plan: &DpPlan,
    outputs: &[(String, DpAggregate)],
    accuracy: &[(String, f64)],
    noise: Noise,
) -> Result<f64> {
    if accuracy.is_empty() {
        return Err(Error::sql("accuracy_invalid", "name at least one noisy column and the half-width it needs"));
    }
    let calibration = Calibration::of(plan, DpParams { noise, budget: 1.0, delta: 0.0 });
    let mut share: f64 = 0.0;
    for (column, half_width) in accuracy {
        let Some((_, aggregate)) = outputs.iter().find(|(name, _)| name == column) else {
            let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::sql(
                "accuracy_invalid",
                format!("`{column}` is not a noisy column of this answer; its noisy columns are {}", names.join(", ")),
            ));
        };
        let (per_value, real) = match calibration.measured(*aggregate) {
            Measured::Value { per_value, real } => (per_value, real),
            Measured::Zero => continue,
            Measured::Average => {
                return Err(Error::sql(
                    "accuracy_invalid",
                    format!(
                        "the interval of the average `{column}` depends on how many values it has, which is not known before the query runs; ask for the accuracy of its SUM and COUNT, or for an epsilon"
                    ),
                ));
            }
        };
        let needed = Mechanism::budget_for(noise, per_value, calibration.groups, *half_width, real, CONFIDENCE)
            .map_err(|_| {
                Error::sql("accuracy_invalid", format!("`{column}`: a half-width of {half_width} cannot be met"))
            })?;
        share = share.max(needed);
    }
    Ok(share * measurements(plan) as f64)
}

/// One noisy column under construction: values and interval bounds.
#[derive(Default)]
struct Column {
    values: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl Column {
    fn push(&mut self, value: f64, (lo, hi): (f64, f64)) {
        self.values.push(value);
        self.lo.push(lo);
        self.hi.push(hi);
    }
}

/// Adds noise to the bounded totals and applies the threshold.
///
/// # Errors
/// [`Error::Internal`] if the bounded plan's output is not as the guard describes it, or the
/// random source fails (then nothing is released).
pub(crate) fn add_noise(
    bounded: &[RecordBatch],
    schema: &SchemaRef,
    plan: &DpPlan,
    params: DpParams,
    k: u64,
) -> Result<NoisyAggregate> {
    let totals = concat_batches(schema, bounded).map_err(internal)?;
    let calibration = Calibration::of(plan, params);
    let r = calibration.rows;
    let mut sampler = Sampler::new();
    let mut draw = |mechanism: Mechanism, value: f64, integer: bool, confidence: f64| -> Result<Noisy> {
        let noisy = if integer {
            mechanism.integer(&mut sampler, value as i64, confidence)
        } else {
            mechanism.real(&mut sampler, value, confidence)
        };
        noisy.map_err(|e| Error::Internal(format!("noise: {e}")))
    };
    let mechanism = |per_value: f64| calibration.mechanism(per_value);
    // A sum's mechanism; none when the bounds are [0, 0] and every sum is exactly zero.
    let sum_mechanism = |lo: f64, hi: f64| {
        let bound = lo.abs().max(hi.abs());
        if bound == 0.0 { Ok(None) } else { mechanism(r * bound).map(Some) }
    };

    let people = int_column(&totals, totals.num_columns() - 1)?;
    let people_noise = mechanism(1.0)?;
    let threshold = threshold(plan, params, k)?;

    // The answer's groups: each a row of the totals, or none (a public group nobody is in).
    let mut kept: Vec<Option<usize>> = Vec::new();
    let mut noisy_people = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut suppressed = 0u64;
    if let Some(domains) = &plan.public_keys {
        let (groups, keys) = public_groups(&totals, domains)?;
        for (i, key) in keys.iter().enumerate() {
            columns.push(cast(key, plan.aggregate_schema.field(i).data_type()).map_err(internal)?);
        }
        for row in groups {
            let n = row.and_then(|r| people.get(r)).copied().unwrap_or(0) as f64;
            noisy_people.push(draw(people_noise, n, true, CONFIDENCE)?);
            kept.push(row);
        }
    } else {
        for (row, n) in people.iter().enumerate() {
            let p = draw(people_noise, *n as f64, true, CONFIDENCE)?;
            if threshold.is_none_or(|t| p.value >= t) {
                kept.push(Some(row));
                noisy_people.push(p);
            }
        }
        suppressed = (totals.num_rows() - kept.len()) as u64;
        let indices = UInt32Array::from_iter_values(kept.iter().flatten().map(|r| *r as u32));
        for i in 0..plan.keys {
            columns.push(take(totals.column(i), &indices, None).map_err(internal)?);
        }
    }

    let mut intervals: Vec<(usize, Column)> = Vec::new();
    let mut at = plan.keys;
    for (j, aggregate) in plan.aggregates.iter().enumerate() {
        let out = plan.keys + j;
        let mut column = Column::default();
        match *aggregate {
            DpAggregate::CountRows => {
                let rows = int_column(&totals, at)?;
                at += 1;
                let mechanism = mechanism(r)?;
                for &row in &kept {
                    let v = row.and_then(|r| rows.get(r)).copied().unwrap_or(0) as f64;
                    let noisy = draw(mechanism, v, true, CONFIDENCE)?;
                    column.push(noisy.value.max(0.0), non_negative(noisy.interval()));
                }
            }
            DpAggregate::CountPeople => {
                for p in &noisy_people {
                    column.push(p.value.max(0.0), non_negative(p.interval()));
                }
            }
            DpAggregate::Sum { lo, hi } => {
                let sums = float_column(&totals, at)?;
                at += 1;
                let mechanism = sum_mechanism(lo, hi)?;
                for &row in &kept {
                    let v = row.and_then(|r| sums.get(r)).copied().unwrap_or(0.0);
                    let noisy = match mechanism {
                        Some(m) => draw(m, v, false, CONFIDENCE)?,
                        None => Noisy { value: 0.0, half_width: 0.0 },
                    };
                    column.push(noisy.value, noisy.interval());
                }
            }
            DpAggregate::Avg { lo, hi } => {
                let sums = float_column(&totals, at)?;
                let counts = int_column(&totals, at + 1)?;
                at += 2;
                // The sum is measured around the bounds' midpoint (a bounded mean as in Google's
                // differential privacy library): each row moves Σ(x − mid) by at most half the
                // range, half what it moves Σx by when the bounds start at zero. The capped
                // count and scaled sum keep the per-person bound at R·half (see the rewrite).
                let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
                let count_mechanism = mechanism(r)?;
                let centred_mechanism = if half == 0.0 { None } else { Some(mechanism(r * half)?) };
                // Each part at 97.5%, so both hold together at least 95% of the time.
                let part = 1.0 - (1.0 - CONFIDENCE) / 2.0;
                for &row in &kept {
                    let s = row.and_then(|r| sums.get(r)).copied().unwrap_or(0.0);
                    let n = row.and_then(|r| counts.get(r)).copied().unwrap_or(0) as f64;
                    let noisy_n = draw(count_mechanism, n, true, part)?;
                    let noisy_centred = match centred_mechanism {
                        Some(m) => draw(m, s - mid * n, false, part)?,
                        None => Noisy { value: 0.0, half_width: 0.0 },
                    };
                    let (ci_lo, ci_hi) = ratio_interval(noisy_centred, noisy_n, lo - mid, hi - mid);
                    column.push(
                        (mid + noisy_centred.value / noisy_n.value.max(1.0)).clamp(lo, hi),
                        (mid + ci_lo, mid + ci_hi),
                    );
                }
            }
        }
        let target = plan.aggregate_schema.field(out).data_type().clone();
        let values: ArrayRef = Arc::new(Float64Array::from(std::mem::take(&mut column.values)));
        columns.push(to_type(&values, &target)?);
        intervals.push((out, column));
    }

    let mut fields: Vec<Field> = Vec::new();
    for (i, array) in columns.iter().enumerate() {
        fields.push(Field::new(format!("c{i}"), array.data_type().clone(), true));
    }
    for (i, column) in intervals {
        fields.push(Field::new(format!("lo{i}"), DataType::Float64, false));
        fields.push(Field::new(format!("hi{i}"), DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from(column.lo)));
        columns.push(Arc::new(Float64Array::from(column.hi)));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(internal)?;
    // Public groups come in the order of their lists; others in the order of their keys.
    let batch = if plan.public_keys.is_some() { batch } else { sorted_by_keys(&batch, plan.keys)? };
    Ok(NoisyAggregate { batch, suppressed, threshold })
}

/// `batch`'s rows ordered by its first `keys` columns (ascending, nulls first). Released groups
/// come out of a hash aggregate in the order their first rows were read, which is the order
/// the data was stored in: a red team read a planted person's membership, then their exact
/// income by bisection, from which of two groups came first (`CASE WHEN <their traits> AND
/// income >= X THEN 'A' … END`). Ordered by what they release, the groups' order says nothing
/// more.
pub(crate) fn sorted_by_keys(batch: &RecordBatch, keys: usize) -> Result<RecordBatch> {
    use datafusion::arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
    if keys == 0 || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let columns: Vec<SortColumn> = batch
        .columns()
        .iter()
        .take(keys)
        .map(|c| SortColumn {
            values: Arc::clone(c),
            options: Some(SortOptions { descending: false, nulls_first: true }),
        })
        .collect();
    let order = lexsort_to_indices(&columns, None).map_err(internal)?;
    take_record_batch(batch, &order).map_err(internal)
}

/// Every combination of the public domains, in order, with the row of `totals` that holds it
/// (if any), and the key columns as text. Rows of `totals` outside the domains are not
/// released, and not counted anywhere.
fn public_groups(totals: &RecordBatch, domains: &[Vec<String>]) -> Result<(Vec<Option<usize>>, Vec<ArrayRef>)> {
    let text: Vec<ArrayRef> = (0..domains.len())
        .map(|i| cast(totals.column(i), &DataType::Utf8))
        .collect::<std::result::Result<_, _>>()
        .map_err(internal)?;
    let mut index: HashMap<Vec<&str>, usize> = HashMap::new();
    for row in 0..totals.num_rows() {
        let key: Option<Vec<&str>> =
            text.iter().map(|a| a.as_string_opt::<i32>().filter(|s| s.is_valid(row)).map(|s| s.value(row))).collect();
        if let Some(key) = key {
            index.insert(key, row);
        }
    }
    let mut combos: Vec<Vec<&str>> = vec![Vec::new()];
    for domain in domains {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                domain.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v.as_str());
                    next
                })
            })
            .collect();
    }
    let groups = combos.iter().map(|k| index.get(k).copied()).collect();
    let keys = (0..domains.len())
        .map(|i| {
            Arc::new(datafusion::arrow::array::StringArray::from_iter_values(combos.iter().map(|k| k[i]))) as ArrayRef
        })
        .collect();
    Ok((groups, keys))
}

/// `[lo, hi]` of a count, which is never negative.
fn non_negative((lo, hi): (f64, f64)) -> (f64, f64) {
    (lo.max(0.0), hi.max(0.0))
}

/// The interval of a noisy sum over a noisy count, from both parts' intervals, within the
/// declared bounds (the whole bounds when the count's interval reaches below one).
fn ratio_interval(s: Noisy, n: Noisy, lo: f64, hi: f64) -> (f64, f64) {
    let (s_lo, s_hi) = s.interval();
    let (n_lo, n_hi) = n.interval();
    if n_lo < 1.0 {
        return (lo, hi);
    }
    let candidates = [s_lo / n_lo, s_lo / n_hi, s_hi / n_lo, s_hi / n_hi];
    let min = candidates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = candidates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min.clamp(lo, hi), max.clamp(lo, hi))
}

fn int_column(batch: &RecordBatch, i: usize) -> Result<Vec<i64>> {
    let array = cast(batch.column(i), &DataType::Int64).map_err(internal)?;
    let array = array.as_primitive_opt::<Int64Type>().ok_or_else(|| internal("a bounded count is not an integer"))?;
    Ok((0..array.len()).map(|i| if array.is_valid(i) { array.value(i) } else { 0 }).collect())
}

fn float_column(batch: &RecordBatch, i: usize) -> Result<Vec<f64>> {
    let array = cast(batch.column(i), &DataType::Float64).map_err(internal)?;
    let array = array.as_primitive_opt::<Float64Type>().ok_or_else(|| internal("a bounded sum is not a number"))?;
    Ok((0..array.len()).map(|i| if array.is_valid(i) { array.value(i) } else { 0.0 }).collect())
}

/// A noisy column in the type the analyst's aggregate has (integers are rounded).
fn to_type(values: &ArrayRef, target: &DataType) -> Result<ArrayRef> {
    if target.is_integer() {
        let rounded: Float64Array = values.as_primitive::<Float64Type>().unary(f64::round);
        return cast(&(Arc::new(rounded) as ArrayRef), target).map_err(internal);
    }
    cast(values, target).map_err(internal)
}

/// The intervals of the analyst's columns: for each output column that is a copy of a noisy
/// aggregate column, one interval per output row.
pub(crate) fn output_intervals(
    noisy: &NoisyAggregate,
    copies: &[Option<usize>],
    rows: &Int64Array,
) -> Vec<Option<Vec<(f64, f64)>>> {
    copies
        .iter()
        .map(|copy| {
            let (lo, hi) = noisy.intervals((*copy)?)?;
            rows.values()
                .iter()
                .map(|r| {
                    usize::try_from(*r).ok().filter(|row| *row < lo.len()).map(|row| (lo.value(row), hi.value(row)))
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect()
}
