//! Aggregate mode over data about people: sticky noise (design §2, in the manner of Open
//! Diffix). The guard's anonymizing plan gives, per group, each measured contribution's total,
//! the total of its largest contributors and the average of the next ones (the top group), the
//! number of people and a seed of the set of people (the XOR of their hashed units). Here:
//!
//! - the largest contributions are flattened to the top group's average, so one person with an
//!   extreme value or many rows moves nothing visibly;
//! - every released number gets two layers of noise whose standard deviation is that average
//!   (at least 1): one seeded by the set of people in the group and the quantity measured
//!   (its dataset's column and its joins), one by the bucket's labels (its conditions other than IN lists
//!   and its key values, in canonical form: no spelling of the query redraws it; one for all
//!   the bucket's measures), both under the installation's secret, and one more per constant
//!   of the query's IN lists,
//!   seeded by the constant and the group's people whose rows match it (so padding an IN list
//!   with fresh sets of other constants leaves the layer of the constant that singles a person
//!   out the same every time: it does not average away). The same group asked the same way
//!   always gets the same answer, so repeating a query averages nothing away; two groups that
//!   differ by one person get independent noise, so their difference does not reveal the person;
//! - a group is released only when its people reach k and a noisy threshold above it, seeded by
//!   its people alone;
//! - a column's conditions that remove almost nobody from a group (at most one person, or a
//!   few below a sticky noisy margin) are left out of it: the group is answered as measured
//!   without them (low-effect detection, as Diffix does against intersection attacks).
//!
//! Why noise from HMAC-SHA256 rather than the dp crate's sampler: sticky noise must be the same
//! every time for the same seed, so it comes from a keyed pseudorandom function (ring's HMAC),
//! not from the OS random source; Box–Muller turns two of its uniforms into a normal value.
//! Floating point is acceptable here: this mode makes no differential privacy claim, and every
//! released count is rounded.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::common::{HashMap as FastMap, HashSet as FastSet, ScalarValue};
use ring::hmac;
use veil_guard::{ANON_LEAST_THRESHOLD, ANON_OUTLIERS, DpAggregate, DpPlan};

use crate::Result;
use crate::error::internal;

/// Standard deviation of each noise layer, in units of the top group's average contribution.
const LAYER_SD: f64 = 1.0;

/// The fewest people a released group may hold, whatever the threshold's draw says.
const MIN_PEOPLE: u64 = 2;

/// The least middle of the release threshold, whatever k says (L1's k is 0, L2's 5): the
/// threshold stands far enough above [`MIN_PEOPLE`] that its draw reaches the fixed floor less
/// than one time in a thousand. The floor is an edge no draw can hide: a group of one is never
/// released, so a group holding one planted person alone, and two with the target, is released
/// only with the target there. With the middle at 4 that was one time in 25 at L1 and one in 65
/// at L2 per planted person, and a red team planting sixty people a district found 86% and 65%
/// of the targets, never wrongly. With a Laplace draw of scale 1 the chance at the floor is
/// e^-(middle + 0.5 - 2) / 2, so about 1 in 1,300 at 8. Statistical offices withhold cells
/// under about ten alike, and differentially private partition selection at ε = 1 releases
/// nothing much below twelve.
const MIN_THRESHOLD: u64 = ANON_LEAST_THRESHOLD;

/// A column's conditions remove almost nobody from a group (low-effect detection) when the
/// people they remove are at most this margin plus a sticky Laplace draw (scale 1, seeded by the
/// people removed: [`low_effect`]).
const LOW_EFFECT_MARGIN: f64 = 3.5;

/// Whether `count` people whose set has the seed `seed` (the XOR of their hashes) are almost
/// nobody: none, or at most [`LOW_EFFECT_MARGIN`] plus a sticky Laplace draw seeded by the set
/// alone. One draw per set of people, however it is reached: a range's cell, a key's claim, a
/// column's conditions left out or an IN-list constant.
///
/// Why one draw per set: the draws were seeded by the column or the list too, and two ways of
/// asking for the same people drew twice. A red team compared a range with a key over the same
/// rows, the target and two people it knew outside the range: the range's check drew again
/// where the key's claims had not taken the three, and the two sums came back equal only then
/// (25 of 26 calls right).
///
/// Why Laplace and no count always low-effect: up to two people were, three a normal draw
/// apart, so a decision not to leave a condition out proved that a third person was there. A
/// red team put two decoys beside the target outside a range and compared two spellings whose
/// answers were alike exactly when the range was kept (a week straddling the year against the
/// day): the target's birth year in 8 of 28 districts, never wrongly, and fresh decoys give
/// fresh draws. With a Laplace draw one person more changes the chance either way by a factor
/// of e at most, as for the release threshold. What stays an edge is one person against
/// nobody (nothing removed is no decision): a condition removing the target alone is kept about
/// one time in 25 (e^-2.5 / 2), one sticky draw for that person.
///
/// The draw is made for nobody too, so that the time a decision takes does not say whether
/// anyone was there.
fn low_effect(key: &hmac::Key, count: u64, seed: u64) -> bool {
    let draw = laplace(key, &[b"low effect", &seed.to_le_bytes()]);
    count == 0 || count as f64 <= LOW_EFFECT_MARGIN + draw
}

/// A released group needs its people to reach `max(k, MIN_THRESHOLD)` plus this margin plus a
/// sticky Laplace draw (scale 1), and [`MIN_PEOPLE`]: near the threshold, release is a coin
/// toss no one can rerun. Laplace, not normal: one person more multiplies a group's chance of
/// release by at most e, however far below the threshold it is; a normal draw's thin tail made
/// that ratio grow without bound there, so a group of two or three, released seldom, was
/// released some ten to thirty times more often with one person more, and "any release among
/// many fresh cells around the target" was nearly proof (a red team: a small release wrong 1
/// time in 70). The threshold is drawn around k, not above it: with a fixed
/// floor at k, a group of k − 1 was never released, so k − 1 planted people on the target's
/// value, or beside them in a group, made any released group say "the target is there" (a red
/// team, 2026-12-04: 60 of 60 held out with twelve planted columns, a value 30 of 30, and fresh
/// draws from one pool of decoys through combinations of group keys, 76 of 90 with no false
/// alarm). A group of k people is released about three times in ten, k − 1 one in nine, k − 2
/// one in 25.
const THRESHOLD_MARGIN: f64 = 0.5;

/// Whether a group of `people` whose set has the seed `seed` passes the release threshold for
/// `k`: at least [`MIN_PEOPLE`], and `max(k, MIN_THRESHOLD)` plus [`THRESHOLD_MARGIN`] plus a
/// sticky Laplace draw seeded by the people alone.
fn released(key: &hmac::Key, people: u64, k: u64, seed: &[u8]) -> bool {
    let z = laplace(key, &[b"threshold", seed]);
    people >= MIN_PEOPLE && people as f64 >= k.max(MIN_THRESHOLD) as f64 + THRESHOLD_MARGIN + z
}

/// The noisy values of an anonymized answer's aggregate, with how many groups were withheld.
pub(crate) struct Anonymized {
    /// The released groups in the aggregate's column order and types, named `c0, c1, …`.
    pub(crate) values: RecordBatch,
    /// Groups withheld by the threshold (for the audit record only).
    pub(crate) suppressed: u64,
    /// Per aggregate: the most the standard deviation of its values' noise can be, when that
    /// follows from the query and the public bounds alone (`None` otherwise).
    pub(crate) noise_sd: Vec<Option<f64>>,
    /// Per aggregate: whether flattening may have moved its values ([`flattened`]).
    pub(crate) flattened: Vec<bool>,
}

/// A released group: its row in the answer's measured totals (for its keys), the measurements
/// it is answered from and its row there, its people, the seed of their set, and its labels.
struct Group {
    row: usize,
    source: usize,
    at: usize,
    people: u64,
    seed: [u8; 8],
    label: Vec<u8>,
    /// Per IN-list constant: its label and the seed of the group's people matching it.
    conditions: Vec<Vec<u8>>,
    /// The IN-list constants some of the group's people match, sorted: with its labels, the
    /// seed of the lists' layer.
    lists: Vec<u8>,
    /// The columns that select the group's people ([`selecting`]), which seed the selection
    /// layer with them.
    selection: Vec<u8>,
}

/// Per group key the claims do not decide (by its place; empty for the others), the people of
/// each slice of one measurement's groups: the groups whose other keys' values are the same
/// (keyed by those values), with the number of their people and the seed of their set (the
/// XOR of the groups'). Over several rows a person a person in two groups of one slice counts
/// twice, and their hash cancels in the seed.
struct Slices(Vec<HashMap<Vec<ScalarValue>, (u64, u64)>>);

impl Slices {
    fn of(measured: &Measurements<'_>) -> Result<Self> {
        let bucketed = measured.plan.buckets.as_ref().map_or(&[][..], |b| &b.keys);
        let mut slices = vec![HashMap::new(); measured.plan.keys];
        if slices.len() == bucketed.len() {
            return Ok(Self(slices));
        }
        for row in 0..measured.totals.num_rows() {
            let values = measured.keys(row)?;
            let (people, seed) = (measured.people(row), u64::from_le_bytes(measured.seed(row)));
            for (j, slice) in slices.iter_mut().enumerate().filter(|(j, _)| !bucketed.contains(j)) {
                let others: Vec<ScalarValue> =
                    values.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, v)| v.clone()).collect();
                let entry: &mut (u64, u64) = slice.entry(others).or_default();
                entry.0 += people;
                entry.1 ^= seed;
            }
        }
        Ok(Self(slices))
    }
}

/// The columns that select the people of the group at `row` of `measured` (the answer's
/// measurements or the variant answering it), by the stored column each reads, sorted and each
/// once, as the seed of the selection layer:
/// - every column whose conditions the group is answered with (not left out by low-effect
///   detection, `low`);
/// - every claims' dimension (a bucketed key, a range that is a key's bucket) along which the
///   group does not hold almost everyone ([`Whole`], from the claims' own draws);
/// - every other key's column where a condition is on it too, or where the other groups of its
///   slice (the same values of the other keys) hold more than almost nobody ([`low_effect`],
///   the draw that leaves a condition out for the same people).
///
/// Why: two questions over the same rows of everyone drew the same people layer and differed
/// by the floor's layers alone, where rows that differ drew two people layers at the group's
/// scale. With two conditions on two columns that agree on everyone but the target (`WHERE
/// code = 1` against `WHERE <March>`, the target in March or not), the size of the difference
/// told the target's month in two queries (a red team: 47 to 50 of 50 districts; the query
/// crate's `two_columns_that_select_the_same_people_but_the_target_tell_nothing`, 53 of 60
/// before, 41 now). A layer at the group's scale
/// seeded by the selecting columns too makes two questions over different columns differ by
/// two such draws, with the target or without. A column that selects nobody is not in it: keys
/// that split nobody and conditions that remove nobody, asked in every subset of a code table's
/// columns, would draw it afresh per subset over the same people, and the spread of the draws
/// read the group's scale (55 of 60 districts).
fn selecting(
    plan: &DpPlan,
    conditioned: &BTreeSet<String>,
    (low, values): (&[&String], &[ScalarValue]),
    (measured, row): (&Measurements<'_>, usize),
    (slices, whole): (&Slices, &Whole),
    key: &hmac::Key,
) -> Vec<u8> {
    let mut columns: BTreeSet<&str> = BTreeSet::new();
    for variant in &plan.variants {
        if let ([column], [reads]) = (variant.columns.as_slice(), variant.reads.as_slice())
            && !low.contains(&column)
        {
            columns.insert(reads);
        }
    }
    // The claims' dimensions along which the group holds almost everyone (none where it made
    // no claims: every dimension selects).
    let (bucketed, spelled): (&[usize], &[(usize, veil_guard::KeyLabel)]) =
        plan.buckets.as_ref().map_or((&[], &[]), |b| (&b.keys, &b.spelled));
    let along = whole.get(values).copied().unwrap_or(0);
    for (at, (_, label)) in spelled.iter().enumerate() {
        if along & (1 << (bucketed.len() + at)) == 0 {
            columns.insert(label.reads());
        }
    }
    for (j, label) in plan.noise.keys.iter().enumerate() {
        if let Some(at) = bucketed.iter().position(|b| *b == j) {
            if along & (1 << at) == 0 {
                columns.insert(label.reads());
            }
            continue;
        }
        if conditioned.contains(label.column()) {
            columns.insert(label.reads());
            continue;
        }
        let others: Vec<ScalarValue> =
            values.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, v)| v.clone()).collect();
        let (people, seed) = slices.0.get(j).and_then(|s| s.get(&others)).copied().unwrap_or_default();
        let (own, own_seed) = (measured.people(row), u64::from_le_bytes(measured.seed(row)));
        if !low_effect(key, people.saturating_sub(own), seed ^ own_seed) {
            columns.insert(label.reads());
        }
    }
    columns.into_iter().collect::<Vec<_>>().join("\u{1f}").into_bytes()
}

/// The columns the answer's conditions restrict, as its labels name them: a key beside a
/// condition on its column selects wherever the claims do not decide it ([`selecting`]).
fn conditioned(noise: &veil_guard::NoiseLabels) -> BTreeSet<String> {
    let ranges = noise.ranges.iter().map(|(column, _)| column.clone());
    ranges.chain(noise.fixed.iter().chain(&noise.listed).map(|l| label_column(l))).collect()
}

/// One IN-list constant as a group measures it ([`Measurements::constants`]).
#[derive(Clone, Copy)]
struct Constant {
    seed: u64,
    matched: bool,
}

/// One measuring plan's output: the answer's, or a variant's without one column's conditions.
struct Measurements<'a> {
    plan: &'a DpPlan,
    totals: RecordBatch,
    people: Int64Array,
    seeds: UInt64Array,
    condition_seeds: Vec<UInt64Array>,
    /// Per IN-list constant, the number of the group's people whose rows match it.
    condition_people: Vec<Int64Array>,
    /// A variant over several rows a person ([`veil_guard::DpPlan::touched`]): the number of
    /// the group's people with a row the conditions it leaves out do not hold, and their seed.
    touched: Option<(Int64Array, UInt64Array)>,
    /// Over several rows a person, the seed of the group's people with their numbers of rows,
    /// then per measured contribution (in the order of the plan's aggregates:
    /// [`contributions`]) the seed of what they contribute to it.
    contents: Vec<UInt64Array>,
}

/// How many contributions an aggregate measures: rows for a count of rows, the sum for a sum,
/// the sum and the count of values for an average, none for a count of people.
fn contributions(aggregate: DpAggregate) -> usize {
    match aggregate {
        DpAggregate::CountPeople => 0,
        DpAggregate::CountRows | DpAggregate::Sum { .. } => 1,
        DpAggregate::Avg { .. } => 2,
    }
}

impl<'a> Measurements<'a> {
    fn new(measured: &[RecordBatch], schema: &SchemaRef, plan: &'a DpPlan) -> Result<Self> {
        let totals = concat_batches(schema, measured).map_err(internal)?;
        let conditions = plan.noise.listed.len();
        let touched_columns = if plan.touched { 2 } else { 0 };
        let contents = if plan.one_row_per_person {
            0
        } else {
            1 + plan.aggregates.iter().map(|a| contributions(*a)).sum::<usize>()
        };
        let width = totals.num_columns() - (2 * conditions + touched_columns + contents).min(totals.num_columns());
        if width < plan.keys + 2 {
            return Err(internal("the anonymizing plan's output is too narrow"));
        }
        let people =
            totals.column(width - 2).as_primitive_opt::<Int64Type>().ok_or_else(|| internal("people"))?.clone();
        let seeds = totals.column(width - 1).as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("seed"))?.clone();
        let condition_seeds = (width..width + conditions)
            .map(|i| {
                totals.column(i).as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("condition seed")).cloned()
            })
            .collect::<Result<Vec<_>>>()?;
        let condition_people = (width + conditions..width + 2 * conditions)
            .map(|i| {
                totals.column(i).as_primitive_opt::<Int64Type>().ok_or_else(|| internal("condition people")).cloned()
            })
            .collect::<Result<Vec<_>>>()?;
        let touched = if plan.touched {
            let at = width + 2 * conditions;
            let count = totals.column(at).as_primitive_opt::<Int64Type>().ok_or_else(|| internal("touched"))?.clone();
            let seed =
                totals.column(at + 1).as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("touched seed"))?.clone();
            Some((count, seed))
        } else {
            None
        };
        let first = width + 2 * conditions + touched_columns;
        let contents = (first..first + contents)
            .map(|i| totals.column(i).as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("content")).cloned())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { plan, totals, people, seeds, condition_seeds, condition_people, touched, contents })
    }

    /// A variant over several rows a person: the number of the group's people at `row` whose
    /// rows the conditions it leaves out change, and the seed of their set.
    fn touched(&self, row: usize) -> Option<(u64, u64)> {
        let (count, seed) = self.touched.as_ref()?;
        let count = if count.is_valid(row) { u64::try_from(count.value(row)).unwrap_or(0) } else { 0 };
        Some((count, if seed.is_valid(row) { seed.value(row) } else { 0 }))
    }

    fn people(&self, row: usize) -> u64 {
        u64::try_from(self.people.value(row)).unwrap_or(0)
    }

    /// The seed of what the group's people at `row` contribute to the `i`-th measured
    /// contribution, or with `None` of their rows alone; empty over one row a person, where
    /// the people are the rows.
    fn content(&self, row: usize, i: Option<usize>) -> Vec<u8> {
        self.contents
            .get(i.map_or(0, |i| i + 1))
            .map_or_else(Vec::new, |c| if c.is_valid(row) { c.value(row) } else { 0 }.to_le_bytes().to_vec())
    }

    fn seed(&self, row: usize) -> [u8; 8] {
        if self.seeds.is_valid(row) { self.seeds.value(row) } else { 0 }.to_le_bytes()
    }

    /// The group's key values.
    fn keys(&self, row: usize) -> Result<Vec<ScalarValue>> {
        (0..self.plan.keys).map(|i| ScalarValue::try_from_array(self.totals.column(i), row).map_err(internal)).collect()
    }

    /// The bucket's labels at `row`, which seed the label layer: what its conditions and key
    /// values select of each column, and the conditions that select no interval of one column,
    /// sorted and each once (so `WHERE district = 'a'` and the group `a` of `GROUP BY district`
    /// are one bucket, and so are a range and a generalization selecting the same values).
    fn label(&self, row: usize) -> Result<Vec<u8>> {
        Ok(self.plan.noise.bucket(&self.keys(row)?).join("\u{1f}").into_bytes())
    }

    /// Per IN-list constant of the answer, as the group at `row` measures it: the seed of its
    /// people matching the constant and whether there are any; where nobody matches (or
    /// low-effect detection left out the few who did), the seed of the group's people, marked
    /// so. Seeded by nobody, such a constant drew one layer for every group and every query,
    /// two lists differing by it one offset for every group, and a group whose constant a draw
    /// kept stood out from the rest (a red team read the offset off groups without its planted
    /// people).
    fn constants(&self, row: usize) -> Vec<Constant> {
        (0..self.plan.noise.listed.len()).filter_map(|i| self.constant(row, i)).collect()
    }

    /// The `i`-th of [`Self::constants`] (`None` past the answer's constants).
    fn constant(&self, row: usize, i: usize) -> Option<Constant> {
        let (seeds, people) = (self.condition_seeds.get(i)?, self.condition_people.get(i)?);
        Some(if people.is_valid(row) && people.value(row) > 0 {
            Constant { seed: if seeds.is_valid(row) { seeds.value(row) } else { 0 }, matched: true }
        } else {
            Constant { seed: u64::from_le_bytes(self.seed(row)), matched: false }
        })
    }

    /// The group at `row`, answered from these measurements (`source`), for the answer's
    /// group at `answer_row`, under the bucket labels `label` and with the IN-list constants
    /// `constants` (one per constant of [`NoiseLabels::listed`](veil_guard::NoiseLabels)).
    fn group(&self, answer_row: usize, source: usize, row: usize, label: Vec<u8>, constants: &[Constant]) -> Group {
        let listed = &self.plan.noise.listed;
        let conditions = listed
            .iter()
            .zip(constants)
            .map(|(text, c)| {
                let whose: &[u8] = if c.matched { b"matching" } else { b"group" };
                [text.as_bytes(), &[0x1f], whose, &c.seed.to_le_bytes()].concat()
            })
            .collect();
        // The constants that some of the group's people match (those low-effect detection
        // left out match nobody any more): the IN lists' own share of the bucket's labels.
        let mut lists: Vec<&str> =
            listed.iter().zip(constants).filter(|(_, c)| c.matched).map(|(text, _)| text.as_str()).collect();
        lists.sort_unstable();
        lists.dedup();
        Group {
            row: answer_row,
            source,
            at: row,
            people: self.people(row),
            seed: self.seed(row),
            label,
            conditions,
            lists: lists.join("\u{1f}").into_bytes(),
            selection: Vec::new(),
        }
    }

    /// The contribution measured at column `at` and after, with the contributions below zero
    /// ranked on their own where the sum is `signed` ([`veil_guard::DpAggregate::signed`]).
    fn measured_at(&self, at: usize, row: usize, signed: bool) -> Result<Measured> {
        let f = |i: usize| self.totals.column(i).as_primitive_opt::<Float64Type>().ok_or_else(|| internal("a measure"));
        let side = |at: usize| -> Result<Ranked> {
            let (o, g, s) = (f(at)?, f(at + 1)?, f(at + 2)?);
            Ok(Ranked {
                outliers: if o.is_valid(row) { o.value(row) } else { 0.0 },
                top: g.is_valid(row).then(|| g.value(row)),
                scale: if s.is_valid(row) { s.value(row) } else { 0.0 },
            })
        };
        let t = f(at)?;
        Ok(Measured {
            total: if t.is_valid(row) { t.value(row) } else { 0.0 },
            above: side(at + 1)?,
            below: if signed { Some(side(at + 4)?) } else { None },
        })
    }
}

/// How many columns a measured contribution takes: the total and three per side (above zero,
/// and below where `signed`).
fn measure_width(signed: bool) -> usize {
    if signed { 7 } else { 4 }
}

/// One measured contribution of a group: its total, and per side (the contributions above
/// zero, and the magnitudes of those below where the sum is signed) the outliers and the top
/// group.
#[derive(Clone, Copy)]
struct Measured {
    total: f64,
    above: Ranked,
    below: Option<Ranked>,
}

/// One side of a measured contribution: the outliers' excess over the top group's average
/// (their total where there is no top group), the top group's average, and the least scale
/// of noise that hides one person of the side's ranking (`veil_guard`'s `Parts::scale`: the
/// largest of that average, the third contribution, the second over e and the first over e²).
#[derive(Clone, Copy)]
struct Ranked {
    outliers: f64,
    top: Option<f64>,
    scale: f64,
}

impl Ranked {
    /// How far flattening moves this side's total (toward zero), and the noise's standard
    /// deviation it asks for: the top group's average (with no top group, the outliers'
    /// average, and the total is left as it is), or the side's scale where that is larger.
    fn flattening(self, people: u64) -> (f64, f64) {
        let (down, sd) = match self.top {
            Some(top) => (self.outliers, top.abs()),
            None => (0.0, (self.outliers / (ANON_OUTLIERS as f64).min(people as f64).max(1.0)).abs()),
        };
        (down, sd.max(self.scale.abs()))
    }
}

impl Measured {
    /// The total with the outliers above zero brought down to their top group's average and
    /// those below zero up to theirs, and the noise's standard deviation: for a signed sum,
    /// both sides' together.
    ///
    /// Why both: one person's value moves from one side to the other, by both bounds'
    /// magnitudes. Scaled by the larger side alone, eight people at each bound and the target
    /// at one or the other told the target's sign 79 of 100 times in one sum (a red team,
    /// 2026-12-06). With four at each bound each side's flattening moves too, and the sign was
    /// told 95 of 100 times, 54 of 60 with this: open (`docs/aggregate.md`).
    fn flattened(self, people: u64) -> (f64, f64) {
        let (down, above) = self.above.flattening(people);
        let (up, below) = self.below.map_or((0.0, 0.0), |side| side.flattening(people));
        (self.total - down + up, above + below)
    }
}

/// Low-effect detection per IN-list constant, on a first measurement with nothing dropped:
/// per list (by name), the hashes of the (group keys, constant) pairs whose rows are left out
/// of the answer's measurements ([`veil_guard::with_dropped`]). A constant is low-effect in a
/// group when the group's people with rows matching it, at least one, are at most
/// [`LOW_EFFECT_MARGIN`] plus a sticky Laplace draw seeded by those people alone
/// ([`low_effect`]). A constant matching nobody has no rows to leave out.
///
/// Why: `x IN (a, b, c)` against `x IN (a, b, z)`, `z` matching nobody, differ in a group by the
/// people only `c` brings there; when that is one person, the difference is theirs, one sticky
/// sample of noise away (a red team read a year and a street prefix that way). Left out, both
/// answers measure the same people.
///
/// # Errors
/// [`crate::Error::Internal`] if the measuring plan's output is not as the guard describes it.
pub(crate) fn dropped(
    measured: &[RecordBatch],
    schema: &SchemaRef,
    plan: &DpPlan,
    secret: &[u8; 32],
) -> Result<Dropped> {
    let census = Measurements::new(measured, schema, plan)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut dropped: HashMap<String, BTreeSet<u64>> = HashMap::new();
    let mut people: HashMap<(Vec<ScalarValue>, String), (u64, u64)> = HashMap::new();
    let people_of = &mut people;
    for (i, ((list, value), people)) in plan.noise.listed_values.iter().zip(&census.condition_people).enumerate() {
        let mut rows = Vec::new();
        for row in 0..census.totals.num_rows() {
            let n = u64::try_from(people.value(row)).unwrap_or(0);
            if n == 0 || !people.is_valid(row) {
                continue;
            }
            let seeds = &census.condition_seeds[i];
            let seed = if seeds.is_valid(row) { seeds.value(row) } else { 0 };
            let label = plan.noise.listed.get(i).map_or(&[][..], |l| l.as_bytes());
            if low_effect(&key, n, seed) {
                rows.push(row as u32);
                let column = label_column(&String::from_utf8_lossy(label));
                let left_out = people_of.entry((census.keys(row)?, column)).or_default();
                left_out.0 += n;
                left_out.1 ^= seed;
            }
        }
        if rows.is_empty() {
            continue;
        }
        let rows = UInt32Array::from(rows);
        let keys = (0..plan.keys)
            .map(|k| take(census.totals.column(k), &rows, None).map_err(internal))
            .collect::<Result<Vec<_>>>()?;
        let values = value.to_array_of_size(rows.len()).map_err(internal)?;
        let hashes = veil_guard::dropped_hashes(&keys, &values).map_err(internal)?;
        dropped.entry(list.clone()).or_default().extend(hashes);
    }
    Ok(Dropped { hashes: dropped, people })
}

/// Low-effect detection per value a join looks up in a table about nobody (the guard's
/// `anonymize::looked_up_values`): from its census (the group keys, the value, the number of
/// people with a row of it and the seed of their set), the hashes of the (group, value) pairs
/// whose people are almost nobody, decided as an IN list's constant is, with noise seeded by
/// those people.
///
/// Why: a code table's flag is an IN list of the codes it holds; two flags apart on the
/// target's code alone differed by the target, in every pair (docs/aggregate.md, "A code
/// table's column").
///
/// # Errors
/// [`crate::Error::Internal`] if the census's output is not as the guard describes it.
pub(crate) fn looked_up(
    census: &[RecordBatch],
    schema: &SchemaRef,
    keys: usize,
    secret: &[u8; 32],
) -> Result<BTreeSet<u64>> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    if schema.fields().len() != keys + 3 {
        return Err(internal("a census of values looked up laid out otherwise"));
    }
    let mut hashes = BTreeSet::new();
    for batch in census {
        let people = batch.column(keys + 1).as_primitive_opt::<Int64Type>();
        let seeds = batch.column(keys + 2).as_primitive_opt::<UInt64Type>();
        let (Some(people), Some(seeds)) = (people, seeds) else {
            return Err(internal("a census of values looked up typed otherwise"));
        };
        let rows: Vec<u32> = (0..batch.num_rows())
            .filter(|&row| {
                let n = u64::try_from(people.value(row)).unwrap_or(0);
                let seed = if seeds.is_valid(row) { seeds.value(row) } else { 0 };
                n > 0 && low_effect(&key, n, seed)
            })
            .map(|row| row as u32)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let rows = UInt32Array::from(rows);
        let picked =
            (0..=keys).map(|k| take(batch.column(k), &rows, None).map_err(internal)).collect::<Result<Vec<_>>>()?;
        let (values, keys) = picked.split_last().ok_or_else(|| internal("a census without values"))?;
        hashes.extend(veil_guard::dropped_hashes(keys, values).map_err(internal)?);
    }
    Ok(hashes)
}

/// Low-effect detection against the grid cells around each range (the guard's `ladder.rs`):
/// from the census, per laddered column, the groups (by `veil_guard::group_hashes` of their
/// keys) with the bit mask of the cells whose rows outside the range belong to at most a few
/// people, decided as for a column's conditions, with noise seeded by those people.
///
/// Why: `birth_date` in [1900, 2000) and in [1950, 2000) hold the same people, or differ by the
/// target alone; measured over the same union of people, their difference is the same either
/// way (docs/aggregate.md, "Nested grid cells").
///
/// # Errors
/// [`crate::Error::Internal`] if the census's output is not as the guard describes it.
pub(crate) fn widened(
    census: &[RecordBatch],
    schema: &SchemaRef,
    plan: &DpPlan,
    secret: &[u8; 32],
) -> Result<HashMap<String, Vec<(u64, u64)>>> {
    let totals = concat_batches(schema, census).map_err(internal)?;
    if totals.num_columns() != plan.keys + 1 + 2 * plan.ladders.len() {
        return Err(internal("the census's output is not as described"));
    }
    let keys: Vec<ArrayRef> = (0..plan.keys).map(|i| Arc::clone(totals.column(i))).collect();
    let hashes = veil_guard::group_hashes(&keys, totals.num_rows()).map_err(internal)?;
    let units = totals.column(plan.keys).as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("census unit"))?;
    let sides = plan
        .ladders
        .iter()
        .enumerate()
        .map(|(l, ladder)| {
            Sides::new(totals.column(plan.keys + 1 + 2 * l), totals.column(plan.keys + 2 + 2 * l), ladder)
        })
        .collect::<Result<Vec<_>>>()?;
    // Per group, per ladder, per cell: the people with a row in it outside the range (whose
    // rows the cell changes: over several rows a person, most of them are in the range too),
    // and the seed of their set.
    let mut tallies: FastMap<u64, Vec<Vec<(u64, u64)>>> = FastMap::default();
    for (row, hash) in hashes.iter().enumerate() {
        let unit = units.value(row);
        let tally =
            tallies.entry(*hash).or_insert_with(|| plan.ladders.iter().map(|l| vec![(0, 0); l.cells.len()]).collect());
        for (side, cells) in sides.iter().zip(tally.iter_mut()) {
            for (cell, (people, seed)) in cells.iter_mut().enumerate() {
                if side.in_cell(row, cell) {
                    *people += 1;
                    *seed ^= unit;
                }
            }
        }
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut widened: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for (l, ladder) in plan.ladders.iter().enumerate() {
        let mut groups = Vec::new();
        for (hash, tally) in &tallies {
            // A group with nobody in the range is widened as any other: left as it was, it
            // existed only when someone was in the range, and with the target alone there,
            // widened by the cells around, a released count said so, never wrongly (a red team
            // against the claims, which decided the same way; test
            // `a_range_only_the_target_holds_is_answered_from_its_neighbours_without_them_too`).
            let mut mask = 0u64;
            for (cell, (people, seed)) in tally[l].iter().enumerate() {
                // Every person whose rows the cell changes counts, those in the range too: a
                // cell holding rows of everybody is not low-effect, however few people it adds
                // (over a visits register with visits in every month, a month's range was
                // answered with the visits of the months around it). Over one row a person,
                // those are the people it adds.
                if low_effect(&key, *people, *seed) {
                    mask |= 1 << cell;
                }
            }
            if mask != 0 {
                groups.push((*hash, mask));
            }
        }
        groups.sort_unstable();
        widened.insert(ladder.column.clone(), groups);
    }
    Ok(widened)
}

/// One laddered column of a range census: per person and group, their greatest value below
/// the range and least above it, and the ladder's cells, in arrow's row form (compared
/// without allocating, whatever the column's type).
struct Sides {
    below: (RowForm, Rows),
    above: (RowForm, Rows),
    cells: Vec<(OwnedRow, OwnedRow)>,
}

impl Sides {
    fn new(below: &ArrayRef, above: &ArrayRef, ladder: &veil_guard::Ladder) -> Result<Self> {
        let (below, above) = (RowForm::new(below)?, RowForm::new(above)?);
        let cells =
            ladder.cells.iter().map(|(lo, hi)| Ok((below.of(lo)?, below.of(hi)?))).collect::<Result<Vec<_>>>()?;
        let (below_rows, above_rows) = (below.all()?, above.all()?);
        Ok(Self { below: (below, below_rows), above: (above, above_rows), cells })
    }

    /// Whether the person of `row` has a row in the cell `cell` outside the range: the cell
    /// holds the range, so below it from the cell's start, or above it before the cell's end.
    fn in_cell(&self, row: usize, cell: usize) -> bool {
        let Some((lo, hi)) = self.cells.get(cell) else { return false };
        let ((below, below_rows), (above, above_rows)) = (&self.below, &self.above);
        (below.array.is_valid(row) && below_rows.row(row) >= lo.row())
            || (above.array.is_valid(row) && above_rows.row(row) < hi.row())
    }
}

/// A column and its values in arrow's row form: one byte string per value, ordered as the
/// values are and compared without allocating, whatever the column's type (a year of orders is
/// a million census rows, which as `ScalarValue`s took most of a second to read and sort).
/// Converted when asked, every value or some.
struct RowForm {
    array: ArrayRef,
    converter: RowConverter,
}

impl RowForm {
    fn new(array: &ArrayRef) -> Result<Self> {
        let converter = RowConverter::new(vec![SortField::new(array.data_type().clone())]).map_err(internal)?;
        Ok(Self { array: Arc::clone(array), converter })
    }

    /// Every value, in row form, by row.
    fn all(&self) -> Result<Rows> {
        self.converter.convert_columns(std::slice::from_ref(&self.array)).map_err(internal)
    }

    /// The values at `rows`, in row form, in that order: the distinct values of a census's
    /// dimension are few, and converting every row of it cost as much as the walk (two text
    /// keys over 777 k rows).
    fn at_rows(&self, rows: &[usize]) -> Result<Rows> {
        let indices = rows.iter().map(|r| u32::try_from(*r)).collect::<std::result::Result<Vec<_>, _>>();
        let indices = UInt32Array::from(indices.map_err(internal)?);
        let values = datafusion::arrow::compute::take(&self.array, &indices, None).map_err(internal)?;
        self.converter.convert_columns(&[values]).map_err(internal)
    }

    /// `value` cast to the column's type, in row form.
    fn of(&self, value: &ScalarValue) -> Result<OwnedRow> {
        let array = value.cast_to(self.array.data_type()).and_then(|v| v.to_array()).map_err(internal)?;
        Ok(self.converter.convert_columns(&[array]).map_err(internal)?.row(0).owned())
    }

    /// `held` of each cell's ends in row form; `None` for a cell an end of which does not cast
    /// to the column's type (as [`RowForm::of`] fails). Ends of the column's type already (a
    /// key's ladder is) are converted in one batch: one at a time, the cells of 32 groups on two
    /// banded keys, about sixty a key, took 8% of the answer's time (a profile of a release
    /// build). The row form of a value does not depend on the values beside it.
    fn spans(
        &self,
        cells: &[(ScalarValue, ScalarValue)],
        held: impl Fn(Row<'_>, Row<'_>) -> (usize, usize),
    ) -> Vec<Option<(usize, usize)>> {
        let ty = self.array.data_type();
        let together = cells
            .iter()
            .all(|(lo, hi)| lo.data_type() == *ty && hi.data_type() == *ty)
            .then(|| ScalarValue::iter_to_array(cells.iter().flat_map(|(lo, hi)| [lo.clone(), hi.clone()])).ok())
            .flatten()
            .and_then(|ends| self.converter.convert_columns(&[ends]).ok());
        match together {
            Some(ends) => (0..cells.len()).map(|i| Some(held(ends.row(2 * i), ends.row(2 * i + 1)))).collect(),
            None => cells
                .iter()
                .map(|(lo, hi)| match (self.of(lo), self.of(hi)) {
                    (Ok(lo), Ok(hi)) => Some(held(lo.row(), hi.row())),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// How many people a cell around a bucket may add before it is surely not low-effect (the
/// margin is 3.5 plus a draw of sd 1): counting stops there.
const MOST_ADDED: u64 = 16;
/// How many combinations of cells the walk of one group enumerates at most.
const MOST_COMBINATIONS: usize = 4096;
/// How many of them one group measures: those it tries (the cells that hold a value their
/// narrower ones do not and add a few people at most, in every combination), then others, up
/// to this number or every combination, so that how many it measures does not depend on who is
/// around it.
const MOST_TRIED: usize = 64;

/// Whether a debug build runs the rows' walk beside the lines' in every region it counts by
/// lines, and asserts they agree (the count, the seed, every row the region holds claimed). On
/// by default, so every test of a debug build checks; [`check_claims_walk`] turns it off for a
/// test that measures the walk's time, which must be the time of the walk a release runs.
static CHECK_WALK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the debug builds' cross-check of the claims walk on or off (see [`CHECK_WALK`]) for the
/// whole process; a release build never checks. For tests only.
#[doc(hidden)]
pub fn check_claims_walk(on: bool) {
    CHECK_WALK.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this build checks the claims walk ([`CHECK_WALK`]): never in a release build.
fn checking_walk() -> bool {
    cfg!(debug_assertions) && CHECK_WALK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Per dimension of the walk (each bucketed key, then each range beside them), a side of a
/// region around a group: its own bucket (along a range, the range), a cell of the grid around
/// it as the places `[lo, hi)` of the slice's distinct values it holds ([`Places`]), or every
/// value, NULL and not a number too (the query without the key).
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Own,
    Cell(u32, u32),
    All,
}

/// A slice's blocks and entries placed along the walk's dimensions in integers: each value by
/// its place among the slice's distinct values of its dimension, in order (a cell of the grid
/// is then a span of places), each block by an id of its bucket and the places of its least and
/// greatest value per key. A region's blocks are found from the narrowest of its sides' lists
/// (the blocks with the group's bucket along a key, or those whose values meet a cell along
/// it, a span of the blocks ordered by their least value), and its rows are decided by
/// comparing integers.
///
/// Why: a group measures a fixed number of regions (every cell around it alone, about sixty
/// per numeric key, then [`MOST_TRIED`] combinations), and before this each region looked at
/// every block of the slice, comparing values in arrow's row form. One person's rows in new
/// buckets near many groups made new blocks that every region of every group looked at: about
/// 0.16 ms a row, ten rows around each of 32 groups twice as slow as without them, told apart
/// in one query 69 times of 72 (a red team, 2026-12-07, timing alone). Now a region looks only
/// at the blocks of its narrowest side (or of its plane: [`Planes`]), a block costs a few
/// integer comparisons, and a row costs what its block's regions read of it.
struct Places {
    /// How many dimensions, and how many of them are keys.
    n: usize,
    m: usize,
    /// Per entry (by index, `n` each), the place of its value along each dimension; written
    /// slice by slice.
    value: Vec<u32>,
    /// Per block (by its place in the slice, `m` each): its bucket's id, and the places
    /// of its least and greatest value, per key.
    bucket: Vec<u32>,
    least: Vec<u32>,
    most: Vec<u32>,
    /// Per key, per bucket id, its blocks in order.
    with_bucket: Vec<Vec<Vec<u32>>>,
    /// Per key, the blocks by their least value, and the greatest value among those up to each.
    by_least: Vec<Vec<u32>>,
    most_so_far: Vec<Vec<u32>>,
    /// Every block, in order.
    every: Vec<u32>,
}

impl Places {
    /// The places of the values of `blocks`' entries along the `m` keys and `r` ranges (per
    /// dimension, the slice's distinct values and their hashes `sorted`, in order), and
    /// of their buckets (ids of their hashes).
    fn new(
        (m, r): (usize, usize),
        blocks: &[Block],
        entries: &[Entry],
        (values, bucket_hashes): (&[Vec<u64>], &[&Vec<u64>]),
        sorted: &[Vec<(Row<'_>, u64)>],
        value: Vec<u32>,
    ) -> Result<Self> {
        let n = m + r;
        if bucket_hashes.len() != m
            || values.len() != n
            || values.iter().any(|v| v.len() != entries.len())
            || sorted.len() != n
            || value.len() < entries.len() * n
        {
            return Err(internal("the claims walk's places"));
        }
        let mut places = Self {
            n,
            m,
            value,
            bucket: Vec::with_capacity(blocks.len() * m),
            least: Vec::with_capacity(blocks.len() * m),
            most: Vec::with_capacity(blocks.len() * m),
            with_bucket: vec![Vec::new(); m],
            by_least: Vec::with_capacity(m),
            most_so_far: Vec::with_capacity(m),
            every: (0..u32::try_from(blocks.len()).map_err(internal)?).collect(),
        };
        let place_of: Vec<FastMap<u64, u32>> = sorted
            .iter()
            .map(|values| {
                values.iter().enumerate().map(|(at, (_, h))| Ok((*h, u32::try_from(at).map_err(internal)?))).collect()
            })
            .collect::<Result<_>>()?;
        for block in blocks {
            for e in block.entries.clone() {
                for j in 0..n {
                    let at = place_of[j].get(&values[j][e]).ok_or_else(|| internal("a value's place"))?;
                    places.value[e * n + j] = *at;
                }
            }
        }
        let mut ids: Vec<FastMap<u64, u32>> = vec![FastMap::default(); m];
        for (b, block) in blocks.iter().enumerate() {
            for (j, hashes) in bucket_hashes.iter().enumerate().take(m) {
                let next = u32::try_from(ids[j].len()).map_err(internal)?;
                let id = *ids[j].entry(hashes[block.row]).or_insert(next);
                if id == next {
                    places.with_bucket[j].push(Vec::new());
                }
                places.with_bucket[j][id as usize].push(u32::try_from(b).map_err(internal)?);
                let values = block.entries.clone().map(|e| places.value[e * n + j]);
                places.bucket.push(id);
                places.least.push(values.clone().min().unwrap_or(0));
                places.most.push(values.max().unwrap_or(0));
            }
        }
        for j in 0..m {
            let mut by_least = places.every.clone();
            by_least.sort_by_key(|b| places.least[*b as usize * m + j]);
            let mut most = 0;
            places.most_so_far.push(
                by_least
                    .iter()
                    .map(|b| {
                        most = most.max(places.most[*b as usize * m + j]);
                        most
                    })
                    .collect(),
            );
            places.by_least.push(by_least);
        }
        Ok(places)
    }

    /// The place of `entry`'s value along dimension `j`.
    fn of(&self, entry: usize, j: usize) -> u32 {
        self.value[entry * self.n + j]
    }

    /// The blocks that may meet every side of a region around the block `own`: those of its
    /// narrowest side (along a key, the blocks with `own`'s bucket or those whose values may
    /// meet the cell) or of `plane` (the blocks with `own`'s buckets along every key where the
    /// region is its own: [`Planes`]), whichever is shorter; every block where nothing narrows
    /// it.
    fn candidates<'s>(&'s self, own: usize, sides: &[Side], plane: Option<&'s [u32]>) -> &'s [u32] {
        let m = self.m;
        let mut narrowest = self.every.as_slice();
        for (j, side) in sides.iter().enumerate().take(m) {
            let list = match *side {
                Side::Own => self.with_bucket[j][self.bucket[own * m + j] as usize].as_slice(),
                Side::Cell(lo, hi) => {
                    // Before `start` every block ends below the cell; from `end` on every block
                    // begins at or above its end.
                    let start = self.most_so_far[j].partition_point(|most| *most < lo);
                    let end = self.by_least[j].partition_point(|b| self.least[*b as usize * m + j] < hi);
                    self.by_least[j].get(start..end.max(start)).unwrap_or_default()
                }
                Side::All => continue,
            };
            if list.len() < narrowest.len() {
                narrowest = list;
            }
        }
        match plane {
            Some(plane) if plane.len() < narrowest.len() => plane,
            _ => narrowest,
        }
    }

    /// The blocks that meet every side of a region around the block `own`, in order.
    fn meeting(&self, own: usize, sides: &[Side]) -> Vec<u32> {
        let candidates = self.candidates(own, sides, None);
        candidates.iter().copied().filter(|b| self.meets(*b as usize, own, sides)).collect()
    }

    /// Whether the block `block` meets every side of a region around the block `own`.
    fn meets(&self, block: usize, own: usize, sides: &[Side]) -> bool {
        let m = self.m;
        sides.iter().take(m).enumerate().all(|(j, side)| match *side {
            Side::Own => self.bucket[block * m + j] == self.bucket[own * m + j],
            Side::Cell(lo, hi) => self.least[block * m + j] < hi && self.most[block * m + j] >= lo,
            Side::All => true,
        })
    }

    /// Whether every value of the block `block` lies in every cell along the keys of `sides`.
    fn whole(&self, block: usize, sides: &[Side]) -> bool {
        let m = self.m;
        sides.iter().take(m).enumerate().all(|(j, side)| match *side {
            Side::Cell(lo, hi) => self.least[block * m + j] >= lo && self.most[block * m + j] < hi,
            Side::Own | Side::All => true,
        })
    }
}

/// Per set of keys (a bit each, for up to [`MOST_PLANE_KEYS`] keys), the blocks with a group's
/// buckets along every key of the set, found when first asked: every block a region meets whose
/// sides are the group's own bucket along those keys is among them. A region around a group is
/// mostly its own bucket along all keys but one (each cell alone, and most of the combinations
/// the walk measures first), and the blocks with the group's bucket along one key hold those of
/// every other group and person that share that bucket alone: a person's rows beside many
/// groups on a grid were looked at by every region of every group sharing one of their buckets.
struct Planes(Vec<Option<Vec<u32>>>);

/// The most keys for which [`Planes`] keeps a list per set of them.
const MOST_PLANE_KEYS: usize = 6;

impl Planes {
    fn new(m: usize) -> Self {
        Self(if m <= MOST_PLANE_KEYS { vec![None; 1 << m] } else { Vec::new() })
    }

    /// The blocks with the group `own`'s buckets along every key where `sides` is its own,
    /// where two keys or more are.
    fn of(&mut self, places: &Places, own: usize, sides: &[Side]) -> Option<&[u32]> {
        let m = places.m;
        if self.0.is_empty() {
            return None;
        }
        let set: usize =
            sides.iter().take(m).enumerate().filter(|(_, s)| **s == Side::Own).fold(0, |set, (j, _)| set | 1 << j);
        if set.count_ones() < 2 {
            return None;
        }
        let list = self.0.get_mut(set)?;
        if list.is_none() {
            let own_along: Vec<Side> = (0..m).map(|j| if set & 1 << j != 0 { Side::Own } else { Side::All }).collect();
            *list = Some(places.meeting(own, &own_along));
        }
        list.as_deref()
    }
}

/// A person by their place nearest a group's bucket along a key, with their seed.
#[derive(Clone, Copy)]
struct Nearest {
    place: u32,
    person: u64,
    seed: u64,
}

/// A group's line along one key: the blocks with its buckets along every other key, where the
/// regions it measures find the rows off its bucket along that key alone. Read once per group
/// and key, outward from the group's own bucket, a person at a time: per side, the people
/// nearest it, each by their nearest place, until more than [`MOST_ADDED`]. A cell holds the
/// group's bucket, so a person has a row of the line in it exactly when their greatest place
/// below the bucket reaches the cell's start or their least above it is before the cell's end:
/// each region counts the line's people in its cell from those lists in a few steps, whatever
/// rows they have, and reads the line's rows only where it claims them, each once
/// ([`Line::claim`]). Over several rows a person only: over one row a person a row is an entry,
/// which the walk reads once per region as before.
///
/// Why: a region read every row it held. A person's hundred rows beside each of 32 groups,
/// each in a bucket of its own, were read by each of the sixty cells around every group and
/// by most of the combinations it measured: 9–13 ms a query beyond the same rows far from
/// every group, and one query told 48 held-out targets of 48 from a copy without them (a red
/// team, 2026-12-07, timing alone).
struct Line<'a> {
    /// The key, by its place among the walk's dimensions.
    key: usize,
    /// The line's blocks by their least place along the key (the group's own at `at`).
    blocks: std::borrow::Cow<'a, [u32]>,
    at: usize,
    /// The places the group's own values span along the key.
    own: (u32, u32),
    /// Below the group's bucket, nearest first: per person, their greatest place below it;
    /// above it, their least place above it. A side holding fewer than `MOST_ADDED + 1`
    /// people holds everyone on that side.
    below: Vec<Nearest>,
    above: Vec<Nearest>,
    /// The places `[lo, hi)` whose rows the group claimed (or found claimed), and per side
    /// how many blocks, nearest first, lie wholly within them.
    claimed: (u32, u32),
    passed: (usize, usize),
}

impl<'a> Line<'a> {
    /// The line of the group `own` along key `j`, where its blocks lie apart along the key
    /// (each bucket an interval of its values, as every admitted generalization's is); `None`
    /// over one row a person or where they do not, and the walk reads the regions' rows.
    fn new(slice: &Slice<'a>, own: usize, j: usize, planes: &mut Planes) -> Option<Self> {
        let Slice { census, entries, blocks, places, one_row } = *slice;
        let m = places.m;
        if one_row || j >= m {
            return None;
        }
        let least = |b: u32| places.least[b as usize * m + j];
        let most = |b: u32| places.most[b as usize * m + j];
        let mut sides = vec![Side::Own; m];
        sides[j] = Side::All;
        let line: std::borrow::Cow<'a, [u32]> = if m == 1 {
            std::borrow::Cow::Borrowed(&places.by_least[j])
        } else {
            let mut list = planes.of(places, own, &sides).map_or_else(|| places.meeting(own, &sides), <[u32]>::to_vec);
            list.sort_unstable_by_key(|b| least(*b));
            std::borrow::Cow::Owned(list)
        };
        let own_u32 = u32::try_from(own).ok()?;
        let at = line.partition_point(|b| least(*b) < least(own_u32));
        if line.get(at) != Some(&own_u32) {
            return None;
        }
        let mut entries_of = Vec::new();
        let mut side = |ahead: &mut dyn Iterator<Item = &u32>, upward: bool| -> Option<Vec<Nearest>> {
            let mut people: Vec<Nearest> = Vec::with_capacity(MOST_ADDED as usize + 1);
            let mut edge = if upward { most(own_u32) } else { least(own_u32) };
            for b in ahead {
                // Apart from the blocks nearer the group's: else the nearest place of a person
                // is not found first, and the walk reads the rows.
                let apart = if upward { least(*b) > edge } else { most(*b) < edge };
                if !apart {
                    return None;
                }
                edge = if upward { most(*b) } else { least(*b) };
                let block = blocks.get(*b as usize)?;
                entries_of.clear();
                entries_of.extend(
                    (block.entries.clone())
                        .map(|at| (at, &entries[at]))
                        .filter(|(_, e)| census.in_every_range(e))
                        .map(|(at, e)| Nearest { place: places.of(at, j), person: e.person, seed: e.seed }),
                );
                if upward {
                    entries_of.sort_unstable_by_key(|n| n.place);
                } else {
                    entries_of.sort_unstable_by_key(|n| std::cmp::Reverse(n.place));
                }
                for entry in &entries_of {
                    if !people.iter().any(|n| n.person == entry.person) {
                        people.push(*entry);
                        if people.len() as u64 > MOST_ADDED {
                            return Some(people);
                        }
                    }
                }
            }
            Some(people)
        };
        let below = side(&mut line[..at].iter().rev(), false)?;
        let above = side(&mut line[at + 1..].iter(), true)?;
        let own = (least(own_u32), most(own_u32));
        let claimed = (own.0, own.1.saturating_add(1));
        Some(Self { key: j, blocks: line, at, own, below, above, claimed, passed: (0, 0) })
    }

    /// Whether the cell `[lo, hi)` holds the group's bucket.
    fn holds(&self, lo: u32, hi: u32) -> bool {
        lo <= self.own.0 && hi > self.own.1
    }

    /// Adds to `tally` the line's people in `side` (a cell holding the group's bucket, or every
    /// value), until more than [`MOST_ADDED`]; `false`, adding nobody, for any other side.
    fn count(&self, side: Side, tally: &mut Tally) -> bool {
        let (below, above) = match side {
            Side::Cell(lo, hi) if self.holds(lo, hi) => (
                &self.below[..self.below.partition_point(|n| n.place >= lo)],
                &self.above[..self.above.partition_point(|n| n.place < hi)],
            ),
            Side::All => (self.below.as_slice(), self.above.as_slice()),
            Side::Cell(..) | Side::Own => return false,
        };
        for n in below.iter().chain(above) {
            tally.add_person(n.person, n.seed);
            if tally.count > MOST_ADDED {
                break;
            }
        }
        true
    }

    /// The line's rows in the cell `[lo, hi)` (which holds the group's bucket) that the group
    /// has not claimed yet, into `out` (entries by index); they are claimed from then on.
    fn claim(&mut self, slice: &Slice<'_>, (lo, hi): (u32, u32), out: &mut Vec<usize>) {
        let Slice { census, entries, blocks, places, .. } = *slice;
        let (m, j) = (places.m, self.key);
        let (below, above) = self.blocks.split_at(self.at);
        let above = above.get(1..).unwrap_or_default();
        let mut read = |b: u32, from: u32, to: u32| {
            let Some(block) = blocks.get(b as usize) else { return };
            out.extend(
                (block.entries.clone())
                    .filter(|at| census.in_every_range(&entries[*at]) && (from..to).contains(&places.of(*at, j))),
            );
        };
        if lo < self.claimed.0 {
            for b in below.iter().rev().skip(self.passed.0) {
                if places.most[*b as usize * m + j] < lo {
                    break;
                }
                read(*b, lo, self.claimed.0);
            }
            self.claimed.0 = lo;
            let whole = below.iter().rev().skip(self.passed.0);
            self.passed.0 += whole.take_while(|b| places.least[**b as usize * m + j] >= lo).count();
        }
        if hi > self.claimed.1 {
            for b in above.iter().skip(self.passed.1) {
                if places.least[*b as usize * m + j] >= hi {
                    break;
                }
                read(*b, self.claimed.1, hi);
            }
            self.claimed.1 = hi;
            let whole = above.iter().skip(self.passed.1);
            self.passed.1 += whole.take_while(|b| places.most[**b as usize * m + j] < hi).count();
        }
    }
}

/// What a region adds whose sides along the keys are cells holding the group's bucket (with a
/// [`Line`] each) or its own, and along every range its own: as [`added`] counts it, from the
/// lines' people in its cells and the rows of the blocks off the group's buckets along two of
/// its keys or more (read), and in `taken.found` those rows alone (the lines' rows it claims
/// are read by [`Line::claim`]). `None` for any other region.
fn added_by_lines(
    slice: &Slice<'_>,
    own: usize,
    sides: &[Side],
    plane: Option<&[u32]>,
    lines: &[Option<Line<'_>>],
    taken: &mut Taken,
) -> Option<(u64, u64)> {
    let Slice { census, entries, blocks, places, .. } = *slice;
    let m = places.m;
    if sides[m..].iter().any(|s| *s != Side::Own) {
        return None;
    }
    let mut cells = 0;
    for (j, side) in sides[..m].iter().enumerate() {
        match *side {
            Side::Own => {}
            Side::Cell(lo, hi) if lines.get(j)?.as_ref()?.holds(lo, hi) => cells += 1,
            Side::Cell(..) | Side::All => return None,
        }
    }
    taken.tally.clear();
    taken.found.clear();
    let Taken { tally, found, .. } = taken;
    for (j, side) in sides[..m].iter().enumerate() {
        if let Some(line) = lines.get(j)?
            && line.count(*side, tally)
            && tally.count > MOST_ADDED
        {
            return Some((tally.count, 0));
        }
    }
    if cells >= 2 {
        for at in places.candidates(own, sides, plane) {
            let b = *at as usize;
            // Off the group's buckets along one key at most: the group's own, or a line's.
            let off = (0..m).filter(|j| places.bucket[b * m + j] != places.bucket[own * m + j]).count();
            if off < 2 || !places.meets(b, own, sides) {
                continue;
            }
            let Some(block) = blocks.get(b) else { continue };
            for at in block.entries.clone() {
                let e = &entries[at];
                let within = census.in_every_range(e)
                    && sides[..m].iter().enumerate().all(|(j, side)| match *side {
                        Side::Cell(lo, hi) => (lo..hi).contains(&places.of(at, j)),
                        Side::Own | Side::All => true,
                    });
                if !within {
                    continue;
                }
                tally.add(e, false);
                found.push(at);
                if tally.count > MOST_ADDED {
                    found.clear();
                    return Some((tally.count, 0));
                }
            }
        }
    }
    Some((tally.count, tally.seed))
}

/// One row of a bucket census: its row there (its values and buckets, in the census's row
/// form), the person (0 over one row per person), the people and their seed, and the row's
/// claim hash.
struct Entry {
    row: usize,
    /// Per range beside the keys, bit `r` where the row is in it.
    inside: u64,
    person: u64,
    people: u64,
    seed: u64,
    hash: u64,
}

/// The entries of one combination of buckets (one group of the answer, before claims); its
/// people are those with a row in every range beside the keys.
struct Block {
    /// A row of the census in it, its first (its buckets and keys are read from there).
    row: usize,
    /// Its entries (by index), which lie together.
    entries: Range<usize>,
    people: u64,
    /// Whether every entry is in every range beside the keys.
    all_inside: bool,
}

impl Block {
    /// The block's own people (its entries within every range beside the keys) and the seed
    /// of their set, as the group's measurement counts them, in `tally`.
    fn people_in_every_range(
        &self,
        census: &Census,
        entries: &[Entry],
        one_row: bool,
        tally: &mut Tally,
    ) -> (u64, u64) {
        tally.clear();
        for e in entries[self.entries.clone()].iter().filter(|e| census.in_every_range(e)) {
            tally.add(e, one_row);
        }
        (tally.count, tally.seed)
    }
}

/// What a block whose group walks is besides ([`claimed`] reads it only for those).
struct Walker {
    /// The buckets, as values, per dimension of the walk.
    buckets: Vec<ScalarValue>,
    /// The same in the claims' order (per bucketed key, then per range that is a key's
    /// bucket): the keys of a group that claims rows.
    claimed: Vec<ScalarValue>,
    /// The values of the group's keys, where it is one of the answer's groups (its buckets of
    /// the ranges that are a key's bucket are the query's).
    keys: Option<Vec<ScalarValue>>,
    /// Its place in the order in which groups claim: a keyed hash of its labels alone.
    rank: u64,
}

/// People counted from census entries, and the seed of their set (the XOR of their hashes):
/// per value over one row a person (an entry counts its people), each person once over
/// several rows a person (an entry is a person's).
#[derive(Default)]
struct Tally {
    persons: FastSet<u64>,
    count: u64,
    seed: u64,
}

impl Tally {
    /// A tally with room for `persons` people over several rows a person.
    fn with_room(persons: usize) -> Self {
        Self { persons: FastSet::with_capacity_and_hasher(persons, Default::default()), ..Self::default() }
    }

    /// Nobody counted, the room kept.
    fn clear(&mut self) {
        self.persons.clear();
        self.count = 0;
        self.seed = 0;
    }

    fn add(&mut self, e: &Entry, one_row: bool) {
        if one_row {
            self.count += e.people;
            self.seed ^= e.seed;
        } else {
            self.add_person(e.person, e.seed);
        }
    }

    /// The person `person`, of seed `seed`, over several rows a person.
    fn add_person(&mut self, person: u64, seed: u64) {
        if self.persons.insert(person) {
            self.count += 1;
            self.seed ^= seed;
        }
    }
}

/// A bucket census's values per dimension (each bucketed key, then each range beside them),
/// in arrow's row form.
struct Census {
    values: Vec<RowForm>,
    /// The bits of an entry in every range beside the keys.
    everywhere: u64,
}

impl Census {
    /// Whether `entry` is in every range beside the keys.
    fn in_every_range(&self, entry: &Entry) -> bool {
        entry.inside == self.everywhere
    }
}

/// Whether `array` holds not a number at `row` (it has no place in an order).
fn not_a_number(array: &ArrayRef, row: usize) -> bool {
    use datafusion::arrow::datatypes::{DataType, Float16Type, Float32Type};
    match array.data_type() {
        DataType::Float16 => array.as_primitive::<Float16Type>().value(row).is_nan(),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(row).is_nan(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row).is_nan(),
        _ => false,
    }
}

/// What the walk of one group holds: the claim hashes of the entries it took in the regions
/// around it so far, and the tally and the entries of the region it measured last. The tally
/// and the entries are kept from region to region, with room for a few people made once, so
/// that a region with someone in it does not allocate where an empty one does not (time).
struct Taken {
    hashes: FastSet<u64>,
    tally: Tally,
    found: Vec<usize>,
}

impl Taken {
    fn new() -> Self {
        let room = MOST_ADDED as usize + 1;
        Self { hashes: FastSet::default(), tally: Tally::with_room(room), found: Vec::with_capacity(4 * room) }
    }
}

/// What the walks of a slice's groups read: the census, its entries, the slice's blocks (in the
/// order of their first rows) and their places.
struct Slice<'a> {
    census: &'a Census,
    entries: &'a [Entry],
    blocks: &'a [Block],
    places: &'a Places,
    one_row: bool,
}

/// The people whose rows the region `sides` around the group `own` (by its place in the
/// slice's blocks) adds to it, counted until more than [`MOST_ADDED`]: their number and the
/// seed of their set, and in `taken.found` the entries (by index) the region would take, where
/// it adds at most so many. A person already in the group counts too: the region changes their
/// contribution. A region reaching every value of a key adds the rows the group has not `taken`
/// yet: the query without the key holds the group's own and what it took, and a condition left
/// out changes the rows of the others (one set of people, one draw, either way).
///
/// Its rows are looked for in the narrowest of its sides' lists ([`Places::candidates`]) and
/// `plane` (the blocks with the group's buckets along every key where the region is its own).
fn added(slice: &Slice<'_>, own: usize, sides: &[Side], plane: Option<&[u32]>, taken: &mut Taken) -> (u64, u64) {
    let Slice { census, entries, blocks, places, one_row } = *slice;
    taken.tally.clear();
    taken.found.clear();
    let Taken { hashes, tally: added, found } = taken;
    let m = places.m;
    let reaches_all = sides.contains(&Side::All);
    // Where the region takes no cell around a range, a block all within the ranges is placed
    // by its keys alone.
    let ranges_own = sides[m..].iter().all(|s| *s == Side::Own);
    for at in places.candidates(own, sides, plane) {
        let b = *at as usize;
        let Some(block) = blocks.get(b) else { continue };
        if !places.meets(b, own, sides) {
            continue;
        }
        // The group's own rows outside a range are in a region that takes a cell around it.
        if b == own && ranges_own && block.all_inside {
            continue;
        }
        // Whole inside or partly, by the keys (every side meets the block).
        let whole = ranges_own && block.all_inside && places.whole(b, sides);
        if one_row && whole && !reaches_all && block.people > MOST_ADDED {
            found.clear();
            return (MOST_ADDED + 1, 0);
        }
        for at in block.entries.clone() {
            let e = &entries[at];
            let within = whole
                || sides.iter().enumerate().all(|(j, side)| match *side {
                    Side::Own if j < m => true,
                    Side::Own => e.inside & (1 << (j - m)) != 0,
                    Side::All => true,
                    Side::Cell(lo, hi) => (lo..hi).contains(&places.of(at, j)),
                });
            // Its own rows within every range are the group's.
            let own_row = b == own && census.in_every_range(e);
            if !within || own_row || (reaches_all && hashes.contains(&e.hash)) {
                continue;
            }
            // A person already in the group (its own, or taken from a narrower cell) counts
            // as any other: the region changes their rows, as a condition left out changes
            // the rows of everyone with a row it removes. Counted for nobody, they let one
            // group a district claim every row of the district over several rows a person,
            // and the group with a person more claimed: whose rows all held one code.
            added.add(e, one_row);
            found.push(at);
            if added.count > MOST_ADDED {
                found.clear();
                return (added.count, 0);
            }
        }
    }
    (added.count, added.seed)
}

/// What [`claimed`] reads of a measurement besides its census: two measurements asking alike
/// over one census claim alike, and the query layer runs that census and its claims once (a
/// variant that leaves out a range on a key's own column has the answer's census).
#[derive(PartialEq)]
pub(crate) struct ClaimsAsked<'a> {
    /// How many group keys the measurement has.
    keys: usize,
    /// The bucketed keys' positions among them, and their labels.
    bucketed: &'a [usize],
    labels: Vec<&'a veil_guard::KeyLabel>,
    /// Per range beside the keys, its ladder; none where the measurement leaves it out (a
    /// variant: every row is in it, and it has no cells).
    ranges: Vec<Option<&'a veil_guard::Ladder>>,
    /// The ranges that are a key's bucket (`spelled.rs` in the guard), by their place among
    /// `ranges`, with that key's label: claimed as that key's buckets are.
    spelled: Vec<(usize, &'a veil_guard::KeyLabel)>,
    one_row: bool,
}

impl<'a> ClaimsAsked<'a> {
    pub(crate) fn of(plan: &'a DpPlan, buckets: &'a veil_guard::Buckets) -> Result<Self> {
        let ranges = buckets
            .ranges
            .iter()
            .map(|at| at.map_or(Some(None), |at| plan.ladders.get(at).map(Some)))
            .collect::<Option<Vec<_>>>()
            .filter(|r| r.len() < 64)
            .ok_or_else(|| internal("a range beside the keys without its ladder"))?;
        let labels = buckets
            .keys
            .iter()
            .map(|k| plan.noise.keys.get(*k))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| internal("a bucketed key not labelled"))?;
        if plan.keys < buckets.keys.len() {
            return Err(internal("more bucketed keys than keys"));
        }
        let spelled = buckets.spelled.iter().map(|(at, label)| (*at, label)).collect();
        Ok(Self { keys: plan.keys, bucketed: &buckets.keys, labels, ranges, spelled, one_row: plan.one_row_per_person })
    }

    /// The labels of the keys the claims group rows by: the bucketed keys', then those whose
    /// buckets are ranges.
    fn claiming(&self) -> impl Iterator<Item = &'a veil_guard::KeyLabel> + '_ {
        self.labels.iter().copied().chain(self.spelled.iter().map(|(_, label)| *label))
    }
}

/// The rows claimed (by their claim hash), each with the buckets of the group that claimed it:
/// per bucketed key, then per range that is a key's bucket.
pub(crate) type Claims = FastMap<u64, Vec<ScalarValue>>;

/// Per group of the answer that tried its claims (by its keys' values, its bucketed keys' as
/// the claims' buckets), the claims' dimensions (per bucketed key, then per range that is a
/// key's bucket, bit by bit) along which it holds almost everyone: the slice (the other
/// dimensions at the group's own) holds one value of it, or the people its every other value
/// adds are almost nobody, by the draw that claims them ([`low_effect`]). Such a dimension
/// selects nobody from the group ([`selecting`]).
pub(crate) type Whole = FastMap<Vec<ScalarValue>, u64>;

/// What a measurement's `__veil_claimed` calls carry, from the `claims` its census gave: per
/// bucketed key (by `claim_name`), each claimed row's hash and the claiming group's bucket;
/// under `ADMITTED`, each claimed row's hash and whether the group that claimed it is, or is
/// within, one of this measurement's groups (its buckets within the measurement's intervals,
/// `noise`): a row a group outside a range claims is not the range's, inside it or not. Each
/// in hash order.
pub(crate) fn claims_for(
    claims: &Claims,
    asked: &ClaimsAsked<'_>,
    noise: &veil_guard::NoiseLabels,
) -> HashMap<String, Vec<(u64, ScalarValue)>> {
    let labels: Vec<&veil_guard::KeyLabel> = asked.claiming().collect();
    let mut per_key: HashMap<String, Vec<(u64, ScalarValue)>> = HashMap::new();
    let mut admitted: Vec<(u64, ScalarValue)> = claims
        .iter()
        .map(|(h, buckets)| {
            let held = labels.iter().zip(buckets).all(|(label, bucket)| noise.holds(label, bucket));
            (*h, ScalarValue::Boolean(Some(held)))
        })
        .collect();
    admitted.sort_by_key(|(h, _)| *h);
    per_key.insert(veil_guard::ADMITTED.to_owned(), admitted);
    for (j, k) in asked.bucketed.iter().enumerate() {
        let mut claimed: Vec<(u64, ScalarValue)> = claims.iter().map(|(h, tuple)| (*h, tuple[j].clone())).collect();
        claimed.sort_by_key(|(h, _)| *h);
        per_key.insert(veil_guard::claim_name(*k), claimed);
    }
    per_key
}

/// The rows the groups of the bucketed keys claim (`buckets.rs` in the guard), from their
/// census. Per value of the other keys, each group in turn (in an order keyed by the secret and
/// its labels alone), tries the regions around it: per bucketed key its own bucket or a cell of
/// the grid around it (the ranges' ladder), every combination but its own buckets alone, among
/// the cells that add at most [`MOST_ADDED`] people with the other keys at their own, up to
/// [`MOST_TRIED`] of them (and measures as many whoever is around it: on time, below). A region
/// whose people are almost nobody ([`low_effect`]: the draw a range's cell adding the same
/// people gets) is low-effect, and the group claims those people's rows there that no group
/// claimed before. A group some of whose rows were claimed claims none. The order is keyed by
/// each group's labels with no condition on a key's column (`order`: the answer's, for a
/// variant too; `NoiseLabels::claim_order`). A range that is one bucket of a key (`spelled`)
/// is a dimension as that key: its groups compete as the key's do. Output: per claimed row, its
/// hash (`claim_hashes`) and the claiming group's buckets ([`claims_for`] makes a
/// measurement's of them).
pub(crate) fn claimed(
    census: &[RecordBatch],
    schema: &SchemaRef,
    asked: &ClaimsAsked<'_>,
    order: &veil_guard::NoiseLabels,
    k: u64,
    secret: &[u8; 32],
) -> Result<(Claims, Whole)> {
    let totals = concat_batches(schema, census).map_err(internal)?;
    let ClaimsAsked { keys: all_keys, bucketed, ranges: all_ranges, spelled, one_row, .. } = asked;
    let one_row = *one_row;
    let (m0, r0, s) = (bucketed.len(), all_ranges.len(), spelled.len());
    let others = all_keys - m0;
    if totals.num_columns() != others + 2 * (m0 + r0) + s + 3 {
        return Err(internal("the bucket census's output is not as described"));
    }
    let keys: Vec<ArrayRef> = (0..others).map(|i| Arc::clone(totals.column(i))).collect();
    // The keys' values, then the ranges': a claim names a row by them all, in that order.
    let values: Vec<ArrayRef> = (0..m0)
        .map(|j| others + 2 * j + 1)
        .chain((0..r0).map(|d| others + 2 * (m0 + d)))
        .map(|at| Arc::clone(totals.column(at)))
        .collect();
    // The dimensions of the regions: the bucketed keys and the ranges that are a key's bucket
    // (grouped by that key's buckets, as a key's rows are), then the other ranges. In an order
    // no spelling changes: the keys by their columns and how they divide them
    // (`KeyLabel::grain`), the ranges by their columns. Which combinations of cells a group
    // tries, and in what order, follows it (the last dimension's wider cells are skipped once
    // one adds too many, and a cell of every value adds what the narrower ones did not take),
    // so keys in another order, or a range for one of them, claimed otherwise (a red team,
    // 2026-12-05: a range on one column beside a key on another against two keys, apart only
    // with the target).
    let mut plain: Vec<usize> = (0..r0).filter(|d| !spelled.iter().any(|(at, _)| at == d)).collect();
    plain.sort_by_cached_key(|d| all_ranges[*d].map(|l| l.column.clone()));
    let (m, r) = (m0 + s, plain.len());
    let claiming: Vec<&veil_guard::KeyLabel> = asked.claiming().collect();
    let mut walk: Vec<usize> = (0..m).collect();
    walk.sort_by_cached_key(|j| claiming[*j].grain());
    let labels: Vec<&veil_guard::KeyLabel> = walk.iter().map(|j| claiming[*j]).collect();
    let range_cells: Vec<Option<&veil_guard::Ladder>> = plain.iter().map(|d| all_ranges[*d]).collect();
    let all_buckets: Vec<&ArrayRef> = (0..m0)
        .map(|j| totals.column(others + 2 * j))
        .chain((0..s).map(|k| totals.column(others + 2 * (m0 + r0) + k)))
        .collect();
    let bucket_columns: Vec<&ArrayRef> = walk.iter().map(|j| all_buckets[*j]).collect();
    let key_values: Vec<&ArrayRef> =
        values[..m0].iter().chain(spelled.iter().map(|(at, _)| &values[m0 + at])).collect();
    let dimensions: Vec<&ArrayRef> =
        walk.iter().map(|j| key_values[*j]).chain(plain.iter().map(|d| &values[m0 + d])).collect();
    // A group's buckets in the claims' order (per bucketed key, then per range that is a key's
    // bucket) from its buckets in the walk's.
    let unwalked = |buckets: &[ScalarValue]| {
        let mut ordered = buckets.to_vec();
        for (k, j) in walk.iter().enumerate() {
            ordered[*j] = buckets[k].clone();
        }
        ordered
    };
    let flags = plain
        .iter()
        .map(|d| totals.column(others + 2 * (m0 + d) + 1).as_primitive_opt::<Int64Type>())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| internal("census ranges"))?;
    let last = others + 2 * (m0 + r0) + s;
    let unit = totals.column(last);
    let units = unit.as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("census unit"))?;
    let people = totals.column(last + 1).as_primitive_opt::<Int64Type>().ok_or_else(|| internal("census people"))?;
    let seeds = totals.column(last + 2).as_primitive_opt::<UInt64Type>().ok_or_else(|| internal("census seed"))?;
    let rows = Census {
        values: dimensions.iter().map(|v| RowForm::new(v)).collect::<Result<_>>()?,
        everywhere: if r == 0 { 0 } else { u64::MAX >> (64 - r) },
    };
    // Each column hashed once ([`veil_guard::column_hashes`]), then folded into what names a
    // row's slice, block and claim (as [`veil_guard::group_hashes`] and
    // [`veil_guard::claim_hashes`] hash the same arrays): a text column of 777 k rows costs
    // some ten milliseconds a hashing, and the walk hashed each up to four times.
    let census_rows = totals.num_rows();
    let hash = |a: &ArrayRef| veil_guard::column_hashes(a).map_err(internal);
    let key_hashes = keys.iter().map(hash).collect::<Result<Vec<_>>>()?;
    let value_hashes = values.iter().map(hash).collect::<Result<Vec<_>>>()?;
    let bucket_hashes = all_buckets.iter().map(|b| hash(b)).collect::<Result<Vec<_>>>()?;
    let fold = |columns: &[&Vec<u64>]| veil_guard::folded_hashes(columns, census_rows);
    let groups = fold(&key_hashes.iter().collect::<Vec<_>>());
    let hashes = fold(&key_hashes.iter().chain(&value_hashes).chain([&hash(unit)?]).collect::<Vec<_>>());
    // A row's block within its slice: its buckets, per dimension of the walk.
    let block_of = fold(&walk.iter().map(|j| &bucket_hashes[*j]).collect::<Vec<_>>());
    let bucket_hashes: Vec<&Vec<u64>> = walk.iter().map(|j| &bucket_hashes[*j]).collect();
    // Per dimension, the hashes of its values: the keys' (in the walk's order), then the
    // ranges' beside them.
    let key_values_at: Vec<usize> = (0..m0).chain(spelled.iter().map(|(at, _)| m0 + at)).collect();
    let dimension_hashes: Vec<&Vec<u64>> = walk
        .iter()
        .map(|j| &value_hashes[key_values_at[*j]])
        .chain(plain.iter().map(|d| &value_hashes[m0 + d]))
        .collect();
    // Each row's block (by the other keys' values and its buckets, as ids in the order of
    // their first rows), its slice's when it makes a new one (the slices, by the other keys'
    // values), and per block its first row, how many rows it has and their least claim hash.
    let mut block_at: FastMap<(u64, u64), u32> = FastMap::default();
    let mut slice_of: FastMap<u64, usize> = FastMap::default();
    let (mut block_slice, mut block_row, mut block_len, mut block_least) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut row_block: Vec<u32> = Vec::with_capacity(census_rows);
    for (row, group) in groups.iter().enumerate() {
        // A NULL or not a number has no place in an order: a key's is in its cell of every
        // value only (its row form sorts before every value, or after); a range's in none, but
        // for a range this measurement leaves out, which every row is in (a red team: the
        // target born before 1950 with no income, beside a year key and an income range, was
        // claimed by the variant without the range of two ranges and not by the key's: 50 of
        // 50).
        if (m..m + r)
            .any(|j| range_cells[j - m].is_some() && (dimensions[j].is_null(row) || not_a_number(dimensions[j], row)))
        {
            row_block.push(u32::MAX);
            continue;
        }
        let block = *block_at.entry((*group, block_of[row])).or_insert_with(|| {
            let slices = slice_of.len();
            block_slice.push(*slice_of.entry(*group).or_insert(slices));
            block_row.push(row);
            block_len.push(0usize);
            block_least.push(u64::MAX);
            (block_len.len() - 1) as u32
        });
        let b = block as usize;
        block_len[b] += 1;
        block_least[b] = block_least[b].min(hashes[row]);
        row_block.push(block);
    }
    if block_len.len() >= u32::MAX as usize {
        return Err(internal("a census of more than 2^32 blocks"));
    }
    // The same order of slices every time, whatever the census's (by their least claim
    // hash); each slice's blocks in the order of their first rows.
    let mut slice_least = vec![u64::MAX; slice_of.len()];
    let mut slice_blocks: Vec<Vec<usize>> = vec![Vec::new(); slice_of.len()];
    for (b, slice) in block_slice.iter().enumerate() {
        slice_least[*slice] = slice_least[*slice].min(block_least[b]);
        slice_blocks[*slice].push(b);
    }
    let mut slices: Vec<usize> = (0..slice_of.len()).collect();
    slices.sort_by_key(|s| slice_least[*s]);
    // The entries laid out slice by slice and block by block: the walk reads a block's
    // entries together, and in the census's order they lie spread over all of it (over a
    // year of orders, 1.5 million rows, reading them so took longer than the pass that
    // counted them). Nothing the walk decides depends on the order of the census's rows.
    let in_order: Vec<usize> = slices.iter().flat_map(|s| slice_blocks[*s].iter().copied()).collect();
    let (laid_out, block_start) = block_by_block(&in_order, &row_block, &block_len);
    // Gathered in that order a column at a time (one stream of reads each), then put together.
    let gather = |column: &[u64]| -> Vec<u64> { laid_out.iter().map(|row| column[*row]).collect() };
    // Per entry, bit `d` where it is in the range `d` beside the keys (none without such ranges).
    let inside: Option<Vec<u64>> = (!flags.is_empty()).then(|| {
        (laid_out.iter())
            .map(|row| {
                (flags.iter().enumerate())
                    .filter(|(_, f)| f.is_valid(*row) && f.value(*row) == 1)
                    .fold(0u64, |bits, (d, _)| bits | (1 << d))
            })
            .collect()
    });
    let (person, hash) = (gather(units.values()), gather(&hashes));
    // Over several rows a person, each row is one person whose seed is their hash: two
    // columns fewer to gather where the census says so (as it does).
    let (people, seed) = if people.values().iter().all(|p| *p == 1) && seeds.values() == units.values() {
        (None, None)
    } else {
        let people: Vec<u64> = laid_out.iter().map(|row| u64::try_from(people.value(*row)).unwrap_or(0)).collect();
        (Some(people), Some(gather(seeds.values())))
    };
    let entries: Vec<Entry> = (0..laid_out.len())
        .map(|at| Entry {
            row: laid_out[at],
            inside: inside.as_ref().map_or(0, |i| i[at]),
            person: person[at],
            people: people.as_ref().map_or(1, |p| p[at]),
            seed: seed.as_ref().map_or(person[at], |s| s[at]),
            hash: hash[at],
        })
        .collect();
    // Per dimension, the hash of each entry's value along it.
    let entry_values: Vec<Vec<u64>> = dimension_hashes.iter().map(|h| gather(h)).collect();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut claims: FastMap<u64, Vec<ScalarValue>> = FastMap::default();
    let mut whole: Whole = FastMap::default();
    // Per entry and dimension, its value's place in its slice ([`Places`]); one allocation,
    // written slice by slice.
    let mut value_places = vec![0u32; entries.len() * (m + r)];
    // What a group that walks is besides its block, read from one of its rows.
    let walker = |row: usize| -> Result<Walker> {
        let buckets = bucket_columns
            .iter()
            .map(|b| ScalarValue::try_from_array(b, row).map_err(internal))
            .collect::<Result<Vec<_>>>()?;
        // Keyed by the installation's secret, so that no analyst knows the order;
        // by the group's labels alone (as the answer's conditions and its keys'
        // values name it), so that nobody in the data changes it and no spelling
        // of a key does. Keyed by the buckets as spelled, `floor(x / 100) * 100`
        // (400) and `floor(x / 100)` (4), one label, gave a person two groups both
        // claim to one group in one spelling and to the other in the other: equal
        // exactly when nobody was between them (a red team, 2026-12-05: 46 of 50
        // districts, also `date_trunc('year', d)` against `date_part('year', d)`).
        // A range that is a key's bucket orders its group, and the groups around
        // it, by that key's labels, and no group by the conditions on its keys'
        // columns: a range orders as the key without it does
        // (`NoiseLabels::claim_order`).
        let claimed = unwalked(&buckets);
        let mut values = Vec::with_capacity(*all_keys);
        let mut other = keys.iter();
        for position in 0..*all_keys {
            let value = match bucketed.iter().position(|b| *b == position) {
                Some(j) => claimed.get(j).cloned(),
                None => other.next().map(|k| ScalarValue::try_from_array(k, row)).transpose().map_err(internal)?,
            };
            values.push(value.ok_or_else(|| internal("a group's keys in the census"))?);
        }
        let spelled: Vec<(&veil_guard::KeyLabel, ScalarValue)> =
            claiming[m0..].iter().copied().zip(claimed[m0..].iter().cloned()).collect();
        let labelled = order.claim_order(&values, &spelled);
        // A block whose buckets of the ranges that are a key's bucket are the
        // query's is one of the answer's groups.
        let answered = spelled.iter().all(|(label, bucket)| order.holds(label, bucket));
        let tag = hmac::sign(&key, format!("claim order {labelled:?}").as_bytes());
        let rank = tag.as_ref().iter().take(8).fold(0u64, |r, b| r << 8 | u64::from(*b));
        let keys = answered.then_some(values);
        Ok(Walker { buckets, claimed, keys, rank })
    };
    for slice in slices {
        // The slice's blocks, in the order of their first rows.
        let blocks: Vec<Block> = (slice_blocks[slice].iter())
            .map(|b| {
                let at = block_start[*b]..block_start[*b] + block_len[*b];
                let mut block = Block { row: block_row[*b], entries: at.clone(), people: 0, all_inside: true };
                for e in &entries[at] {
                    let in_every_range = rows.in_every_range(e);
                    block.all_inside &= in_every_range;
                    if in_every_range {
                        block.people += e.people;
                    }
                }
                block
            })
            .collect();
        // Per key, this slice's distinct values in order: a cell holding no value its
        // narrower cell does not is the same region of the data, and is not tried again.
        // Per range beside the keys, how many distinct values of this slice it holds: a cell
        // around it that holds no more is the range itself, and is not tried. Counted in the
        // same pass.
        let mut in_range = vec![0usize; r];
        // Per dimension, each distinct value's hash and a row of it, then those rows' values in
        // row form.
        let distinct: Vec<Vec<(u64, usize)>> = (0..m + r)
            .map(|j| {
                let mut distinct: FastMap<u64, usize> = FastMap::default();
                let mut inside: FastSet<u64> = FastSet::default();
                for at in blocks.iter().flat_map(|b| b.entries.clone()) {
                    let (e, hash) = (&entries[at], entry_values[j][at]);
                    distinct.entry(hash).or_insert(e.row);
                    if j >= m && e.inside & (1 << (j - m)) != 0 {
                        inside.insert(hash);
                    }
                }
                if j >= m {
                    in_range[j - m] = inside.len();
                }
                distinct.into_iter().collect()
            })
            .collect();
        let converted = (distinct.iter().zip(&rows.values))
            .map(|(values, form)| form.at_rows(&values.iter().map(|(_, row)| *row).collect::<Vec<_>>()))
            .collect::<Result<Vec<Rows>>>()?;
        let sorted: Vec<Vec<(Row<'_>, u64)>> = (distinct.iter().zip(&converted))
            .map(|(values, rows)| {
                let mut v: Vec<(Row<'_>, u64)> =
                    values.iter().enumerate().map(|(i, (hash, _))| (rows.row(i), *hash)).collect();
                v.sort_unstable();
                v
            })
            .collect();
        let held = |j: usize, lo: Row<'_>, hi: Row<'_>| {
            let below = |bound: Row<'_>| sorted[j].partition_point(|(v, _)| *v < bound);
            (below(lo), below(hi))
        };
        let places = Places::new(
            (m, r),
            &blocks,
            &entries,
            (&entry_values, &bucket_hashes),
            &sorted,
            std::mem::take(&mut value_places),
        )?;
        let slice = Slice { census: &rows, entries: &entries, blocks: &blocks, places: &places, one_row };
        // A group claims only where its own people would be released (the draw its answer
        // gets without claims), so claims enlarge released groups and never make one. A
        // group of one claimed the few people of the districts around it through its
        // key's prefix cell and was released now and then, only where that one person
        // existed (a red team, never wrongly). A block with nobody in the ranges claims as
        // any other: skipped, its group existed only when someone was in its cell of the
        // query, and with the target alone there, widened by the cells around, a released
        // group said so (a red team, no planted people: 30 of 30, never wrongly). Only a
        // group that walks is read further (its buckets, keys and place in the claim order):
        // a bucket nobody but one person is in costs its draw and little more.
        let mut tally = Tally::default();
        let mut walkers: Vec<(usize, Walker)> = Vec::new();
        for (b, block) in blocks.iter().enumerate() {
            let (people, seed) = block.people_in_every_range(&rows, &entries, one_row, &mut tally);
            if released(&key, people, k, &seed.to_le_bytes()) {
                walkers.push((b, walker(block.row)?));
            }
        }
        // In an order nobody in the data changes. Larger first, a cell two groups could both
        // claim went to the one with a person more, so the target decided which group took the
        // cell's people (a red team: the target's bucket 56 of 60 districts in one query).
        walkers.sort_by_key(|(_, w)| w.rank);
        for (own_at, own) in &walkers {
            let own_at = *own_at;
            let block = &blocks[own_at];
            // A group some of whose rows were claimed claims none; it walks its regions all
            // the same (below, on time).
            let claims_none = entries[block.entries.clone()].iter().any(|e| claims.contains_key(&e.hash));
            // Per key: its own bucket, then each cell around it; per range beside the keys: the
            // range, then each cell of its ladder; each with whether the group tries it: the
            // cells that hold a value the narrower ones do not and add at most a few people
            // with the other dimensions at their own.
            //
            // Why every cell is measured, and as many combinations whoever is around: which
            // cells a group tries depends on the people around it, and the walk measured only
            // those. One person with rows in the cells around a few groups made them try every
            // combination of cells where before they had one to try: a query twelve times
            // slower (3.5 against 0.29 s), and with 48 rows around two of eight groups twice as
            // slow, told apart from the same rows far away in one query, six targets of six (a
            // red team, 2026-12-07, timing alone). Now each cell around the group is measured
            // alone, and the group measures [`MOST_TRIED`] combinations of them (or all there
            // are, a number its buckets and the query decide): those it tries, then others.
            // What it does per region still grows with the rows the region reaches (a few
            // integer comparisons a block and a row: [`Places`]), and with how many of its own
            // the group has (as the measurement's work does), not with how many regions it
            // tries.
            let n = m + r;
            // What the region of the group's own buckets but along `j`, where it is `side`,
            // adds: how many people, and their seed. (Nothing is taken yet: the group's walk
            // has not begun.)
            let mut taken = Taken::new();
            let mut planes = Planes::new(m);
            let mut sides_of = vec![Side::Own; n];
            // Along each key, the group's line (every key's regions are measured below).
            let mut lines: Vec<Option<Line>> = (0..m).map(|j| Line::new(&slice, own_at, j, &mut planes)).collect();
            let mut alone = |j: usize, side: Side| -> (u64, u64) {
                sides_of.iter_mut().enumerate().for_each(|(i, s)| *s = if i == j { side } else { Side::Own });
                if let Some(Some(line)) = lines.get(j) {
                    taken.tally.clear();
                    if line.count(side, &mut taken.tally) {
                        let Tally { count, seed, .. } = taken.tally;
                        let counted = (count, if count > MOST_ADDED { 0 } else { seed });
                        // The rows' walk says the same (debug builds run it beside the line's).
                        if checking_walk() {
                            let plane = planes.of(&places, own_at, &sides_of);
                            let walked = added(&slice, own_at, &sides_of, plane, &mut taken);
                            debug_assert_eq!(counted, walked, "the line counts as the rows' walk");
                        }
                        return counted;
                    }
                }
                let plane = planes.of(&places, own_at, &sides_of);
                added(&slice, own_at, &sides_of, plane, &mut taken)
            };
            let mut choices: Vec<Vec<(Side, bool)>> = Vec::with_capacity(n);
            let mut whole_along = 0u64;
            for j in 0..n {
                let cells = match (labels.get(j), range_cells.get(j.wrapping_sub(m))) {
                    (Some(label), _) => label.cells_around(&own.buckets[j]),
                    (None, Some(Some(ladder))) => ladder.cells.clone(),
                    (None, _) => Vec::new(),
                };
                let mut sides = vec![(Side::Own, true)];
                let mut last = None;
                // In the layout the census gave the column (text as a view or not).
                for span in rows.values[j].spans(&cells, |lo, hi| held(j, lo, hi)).into_iter().flatten() {
                    let (Ok(from), Ok(to)) = (u32::try_from(span.0), u32::try_from(span.1)) else { continue };
                    let cell = Side::Cell(from, to);
                    let (count, _) = alone(j, cell);
                    // A cell holding no value its narrower one does not, or no more of a
                    // range's than the range, is a region tried already.
                    let new = last != Some(span) && !(j >= m && span.1 - span.0 == in_range[j - m]);
                    if new {
                        last = Some(span);
                    }
                    sides.push((cell, new && count <= MOST_ADDED));
                }
                // A key's last cell is every value, NULL too: what the query without the key
                // holds (a group against it told the one person outside the group, a flag
                // or a code no prefix of the group's reaches). Not tried where the widest
                // cell already held every value of the slice.
                if j < m {
                    let (count, seed) = alone(j, Side::All);
                    let few = low_effect(&key, count, seed) && count <= MOST_ADDED;
                    sides.push((Side::All, count <= MOST_ADDED && last != Some((0, sorted[j].len()))));
                    if sorted[j].len() <= 1 || few {
                        whole_along |= 1 << walk[j];
                    }
                }
                choices.push(sides);
            }
            if let (Some(keys), false) = (&own.keys, claims_none) {
                whole.insert(keys.clone(), whole_along);
            }
            // Every combination but the group's own region alone, narrowest first per
            // dimension, as an odometer over the dimensions' cells.
            let mut steps: Vec<usize> = Vec::new();
            let mut combination = vec![0usize; n];
            for _ in 0..MOST_COMBINATIONS {
                let mut j = n;
                while j > 0 {
                    j -= 1;
                    combination[j] += 1;
                    if combination[j] < choices[j].len() {
                        break;
                    }
                    combination[j] = 0;
                }
                if combination.iter().all(|c| *c == 0) {
                    break;
                }
                steps.extend_from_slice(&combination);
            }
            let combinations: Vec<&[usize]> = if n == 0 { Vec::new() } else { steps.chunks_exact(n).collect() };
            let mut sides_of = vec![Side::Own; n];
            // What a combination adds, and whether it was counted from the group's lines
            // (whose rows it claims are then read by them).
            let mut measure = |combination: &[usize], taken: &mut Taken, lines: &[Option<Line<'_>>]| {
                sides_of.iter_mut().zip(combination).enumerate().for_each(|(j, (s, c))| *s = choices[j][*c].0);
                let plane = planes.of(&places, own_at, &sides_of);
                // The rows' walk counts the same (debug builds run it beside the lines'), and
                // finds the rows the region claims where it claims: kept to check that each was.
                let checking = checking_walk();
                let walked = if checking {
                    (added(&slice, own_at, &sides_of, plane, taken), taken.found.clone())
                } else {
                    ((0, 0), Vec::new())
                };
                match added_by_lines(&slice, own_at, &sides_of, plane, lines, taken) {
                    Some(counted) => {
                        if checking {
                            debug_assert_eq!(counted, walked.0, "the lines count as the rows' walk");
                        }
                        (counted, true, walked.1)
                    }
                    None => (added(&slice, own_at, &sides_of, plane, taken), false, walked.1),
                }
            };
            // The group tries the combinations of cells it tries, up to [`MOST_TRIED`]; a
            // region that adds too many people passes the last dimension's wider cells (they
            // add at least as many) for the cells of the dimensions before it as they are.
            // Then it measures regions it did not try, until it has measured as many as it
            // would try at most: the same number whoever is around it.
            let budget = combinations.len().min(MOST_TRIED);
            let mut measured = vec![false; combinations.len()];
            let mut tried = 0;
            let mut passed: Option<&[usize]> = None;
            for (at, combination) in combinations.iter().enumerate() {
                let before = combination.split_last().map(|(_, before)| before);
                let tries =
                    !claims_none && combination.iter().enumerate().all(|(j, c)| choices[j][*c].1) && passed != before;
                if !tries || tried == budget {
                    continue;
                }
                measured[at] = true;
                tried += 1;
                let ((count, seed), by_lines, walked) = measure(combination, &mut taken, &lines);
                let few = low_effect(&key, count, seed);
                if count > MOST_ADDED {
                    passed = before;
                    continue;
                }
                if few {
                    // The lines' rows in the region the group has not claimed yet.
                    let sides = combination.iter().enumerate().map(|(j, c)| choices[j][*c].0);
                    for (side, line) in sides.zip(lines.iter_mut()) {
                        if let (true, Side::Cell(lo, hi), Some(line)) = (by_lines, side, line) {
                            line.claim(&slice, (lo, hi), &mut taken.found);
                        }
                    }
                    for at in &taken.found {
                        let e = &entries[*at];
                        claims.entry(e.hash).or_insert_with(|| own.claimed.clone());
                        taken.hashes.insert(e.hash);
                    }
                    debug_assert!(
                        walked.iter().all(|at| taken.hashes.contains(&entries[*at].hash)),
                        "every row the region holds is claimed"
                    );
                }
            }
            let untried = combinations.iter().zip(&measured).filter(|(_, m)| !**m).map(|(c, _)| c);
            for combination in untried.take(budget - tried) {
                let ((count, seed), ..) = measure(combination, &mut taken, &lines);
                std::hint::black_box(low_effect(&key, count, seed));
            }
        }
        value_places = places.value;
    }
    Ok((claims, whole))
}

/// The order that lays rows out block by block (a counting sort): per place, the row that goes
/// there, and where each block begins. `blocks` lists the blocks in the order they are to lie,
/// `of` gives each row's block (`u32::MAX` for a row of none, left out) and `len` each block's
/// number of rows; within a block, the rows keep their order.
fn block_by_block(blocks: &[usize], of: &[u32], len: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut starts = vec![0usize; len.len()];
    let mut start = 0;
    for b in blocks {
        starts[*b] = start;
        start += len[*b];
    }
    let mut order = vec![0usize; start];
    let mut next = starts.clone();
    for (row, b) in of.iter().enumerate() {
        if let Some(at) = next.get_mut(*b as usize) {
            order[*at] = row;
            *at += 1;
        }
    }
    (order, starts)
}

/// A variant's claims (`own`, by [`claimed`] over its rows) with the answer's added where it
/// made none for the row: per claim name, every row the answer claimed for one of its groups
/// that the variant did not, with the answer's bucket, in hash order.
///
/// Why: each variant claims over its own rows (without the conditions it leaves out), and the
/// cells around a group there can hold many people where, under the conditions, they held only
/// the target: the answer's claims let the target in and the variant's did not. Such a variant,
/// taken to remove almost nobody, answered a group without a person the answer held: `WHERE
/// <August> AND alone` without the flag lost the one person living alone outside August whom
/// `GROUP BY alone` beside the range kept, so the two were equal exactly when that person was
/// absent, with known people added in the range who do not live alone to pass a count of the
/// variant's people (a red team, 2026-12-05: 50 of 50 districts in two queries, also with
/// prefixes, equalities, IN lists, several rows a person and joins). With the answer's claims,
/// a variant holds every row the answer does.
pub(crate) fn with_claims_of(
    mut own: HashMap<String, Vec<(u64, ScalarValue)>>,
    answer: &HashMap<String, Vec<(u64, ScalarValue)>>,
) -> HashMap<String, Vec<(u64, ScalarValue)>> {
    // The rows a group outside the answer's claimed are no row of the answer's.
    let outside: FastSet<u64> = answer
        .get(veil_guard::ADMITTED)
        .into_iter()
        .flatten()
        .filter(|(_, held)| *held == ScalarValue::Boolean(Some(false)))
        .map(|(h, _)| *h)
        .collect();
    for (name, claimed) in answer {
        let rows = own.entry(name.clone()).or_default();
        let taken: FastSet<u64> = rows.iter().map(|(h, _)| *h).collect();
        rows.extend(claimed.iter().filter(|(h, _)| !taken.contains(h) && !outside.contains(h)).cloned());
        rows.sort_by_key(|(h, _)| *h);
    }
    own
}

/// What low-effect detection per IN-list constant leaves out ([`dropped`]).
#[derive(Debug, Default)]
pub(crate) struct Dropped {
    /// Per list (by name), the hashes of the (group keys, constant) pairs left out.
    pub(crate) hashes: HashMap<String, BTreeSet<u64>>,
    /// Per group (its keys) and column of the lists (as labels name it): the people matching
    /// the constants left out there, and the seed of their set (the XOR of their units'), as
    /// the first measurement found them.
    people: HashMap<(Vec<ScalarValue>, String), (u64, u64)>,
}

/// The column a bucket label names (`birth_date in [1950-01-01, 1950-12-31]`, `district = 甲区`).
fn label_column(label: &str) -> String {
    let end = [" in ", " = "].iter().filter_map(|s| label.find(s)).min().unwrap_or(label.len());
    label[..end].to_owned()
}

/// Adds sticky noise to the measured totals and applies the threshold. `variants` are the
/// outputs of `plan.variants`' measuring plans, in order: a group from which one column's
/// conditions remove almost nobody (low-effect detection) is answered as the same group
/// without them; one with several such columns, without all of them (a variant per
/// combination of columns).
///
/// Why: a pair of queries whose conditions differ only in a range that excludes one person
/// (`income < 50000` and `income < 20000`, all but the target earning less than 20000), asked
/// over many different sets of other people, let the noise average away and read the target's
/// traits (a red team called a planted person a smoker in about 230 queries). Now both are
/// answered without the income condition, the same answer.
///
/// # Errors
/// [`crate::Error::Internal`] if the measuring plan's output is not as the guard describes it.
pub(crate) fn add_noise(
    measured: &[RecordBatch],
    schema: &SchemaRef,
    plan: &DpPlan,
    variants: &[(Vec<RecordBatch>, SchemaRef)],
    (dropped, whole): (&Dropped, &Whole),
    k: u64,
    secret: &[u8; 32],
) -> Result<Anonymized> {
    let mut sources = vec![Measurements::new(measured, schema, plan)?];
    for ((batches, schema), variant) in variants.iter().zip(&plan.variants) {
        sources.push(Measurements::new(batches, schema, &variant.measured)?);
    }
    let main = &sources[0];
    let totals = &main.totals;
    // Each variant's rows by their keys.
    let mut by_keys: Vec<HashMap<Vec<ScalarValue>, usize>> = Vec::new();
    for source in &sources[1..] {
        let mut rows = HashMap::new();
        for row in 0..source.totals.num_rows() {
            rows.insert(source.keys(row)?, row);
        }
        by_keys.push(rows);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let slices = sources.iter().map(Slices::of).collect::<Result<Vec<_>>>()?;
    let conditioned = conditioned(&plan.noise);

    // Which groups pass: people ≥ 2, and above a noisy threshold around max(k, 8) seeded by
    // the people ([`released`]).
    let mut kept = Vec::new();
    for row in 0..totals.num_rows() {
        // A group is answered without conditions that remove almost nobody only where its own
        // people, as the query asks, would be released by their own draw: leaving conditions
        // out enlarges groups that would be released anyway and never makes one (as claims
        // do). A group that only the target made, beside ten people a condition removes, was
        // released whenever the Laplace draw took ten for almost nobody, only with the target.
        if !released(&key, main.people(row), k, &main.seed(row)) {
            continue;
        }
        // A variant's group is found by these values: they are its keys too.
        let keys = if plan.keys == 0 { Vec::new() } else { main.keys(row)? };
        // The columns whose conditions remove almost nobody from this group.
        // The source measuring this group without `columns`' conditions (0: the answer's), and
        // the group's row there: the guard measures every combination of restricted columns
        // (a group found in none is withheld, failing closed).
        let without = |columns: &[&String]| {
            if columns.is_empty() {
                return Some((0, row));
            }
            let v = plan
                .variants
                .iter()
                .position(|v| v.columns.len() == columns.len() && columns.iter().all(|c| v.columns.contains(c)))?;
            Some((v + 1, *by_keys[v].get(&keys)?))
        };
        // Whether leaving out `columns`' conditions together changes almost nobody's rows in
        // this group.
        let low_together = |columns: &[&String]| {
            let Some((source, at)) = without(columns) else { return false };
            // Leaving conditions out takes nobody out of a group. A variant holds every row
            // the answer does ([`with_claims_of`]); one that still holds fewer people (a row the
            // answer's claims put in this group and the variant's in another) does not answer
            // it, failing closed: taken for a removal of nobody, such a variant answered a
            // group without a person the answer held (a red team, 2026-12-05: 48 of 50
            // districts in two queries, before the variants took the answer's claims).
            if sources[source].people(at) < main.people(row) {
                return false;
            }
            // People whose rows an IN list's constants left out (one person alone in a year)
            // are in a variant without the list's column, but were never in the answer: they
            // count for nobody here, as in a table without them (else the target, left out by
            // the list, tipped the column's decision: a twin table's answer differed in one
            // run of twelve).
            let (left_out, left_out_seed) = columns
                .iter()
                .filter_map(|c| dropped.people.get(&(keys.clone(), (*c).clone())))
                .fold((0u64, 0u64), |(n, seed), (m, s)| (n + m, seed ^ s));
            // The decision's noise is seeded by the people the conditions remove (the XOR of
            // the two seeds), not by the group's: a red team with decoys redrew it per people
            // set and averaged the decision into a count of the removed.
            let (effect, removed) = match sources[source].touched(at) {
                // Over several rows a person, everyone with a row the conditions remove: they
                // change the contributions of people they keep too. Counted by the people they
                // remove whole, a condition removing rows of everybody was answered without
                // it (`WHERE code = 1` with every visit of a visits register).
                Some(touched) => touched,
                None => (
                    sources[source].people(at).saturating_sub(main.people(row)).saturating_sub(left_out),
                    u64::from_le_bytes(main.seed(row)) ^ u64::from_le_bytes(sources[source].seed(at)) ^ left_out_seed,
                ),
            };
            low_effect(&key, effect, removed)
        };
        // The columns whose conditions, each left out alone, remove almost nobody from this
        // group; then the most of them that also do together (the first such set in the
        // columns' order). Two conditions that each single out the target, `WHERE <the
        // target's secret trait> AND <a trait only the target has>`, each remove nobody beside
        // the other: answered without both, the group was the target's whole district, and it
        // existed only when the target had the secret (a red team: 46 of 50 in about ten
        // queries a district, never wrongly, on a registry of one row a person).
        let alone: Vec<&String> = plan
            .variants
            .iter()
            .filter_map(|v| match v.columns.as_slice() {
                [column] if low_together(&[column]) => Some(column),
                _ => None,
            })
            .collect();
        let mut low: Vec<&String> = Vec::new();
        for subset in 1..(1usize << alone.len()) {
            let chosen: Vec<&String> =
                alone.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, c)| *c).collect();
            if chosen.len() > low.len() && (chosen.len() == 1 || low_together(&chosen)) {
                low = chosen;
            }
        }
        let Some((source, at)) = without(&low) else { continue };
        // Answered without some conditions, a group keeps the query's labels: left out with
        // them, a range that removed a few people answered otherwise than a key selecting the
        // same rows, whose label stays, and their sums were equal exactly when the range was
        // kept (a red team, 25 of 26 calls right). A key's last cell is every value, so its
        // group takes what a condition's answer without it takes, by the same draw; and each
        // variant claims over its own rows, so a keyed group answered without a condition
        // holds what the same question without keys does (with the claims made under the
        // condition it did not: a person two conditions remove together, 50 of 50).
        //
        // And its IN-list layers (every variant measures the answer's constants, the guard's
        // `bound_with`): those of a list it filters by as it measures them; those of
        // a list it leaves out as the same question with that list measures them (the
        // variant without the other columns, or the answer's measurement). A variant without
        // the list's column had none, so two lists that differed by a constant low-effect
        // detection left out came back bit-identical where the list's column was left out
        // too, and differed where a draw kept the constant: a red team planted two decoys on
        // the target's rare value per group, and eight such values called membership 59 of 60.
        // Measured by the variant without the list, they would be seeded by the people it
        // takes back, the target among them, which the query with the list left out.
        let mut constants = sources[source].constants(at);
        if source != 0 {
            for (i, text) in plan.noise.listed.iter().enumerate() {
                let column = label_column(text);
                if !low.iter().any(|c| **c == column) {
                    continue;
                }
                let rest: Vec<&String> = low.iter().copied().filter(|c| **c != column).collect();
                if let (Some((s, r)), Some(c)) = (without(&rest), constants.get_mut(i))
                    && let Some(measured) = sources[s].constant(r, i)
                {
                    *c = measured;
                }
            }
        }
        let mut group = sources[source].group(row, source, at, main.label(row)?, &constants);
        group.selection =
            selecting(plan, &conditioned, (&low, &keys), (&sources[source], at), (&slices[source], whole), &key);
        // Answered as the query measured it, the group passed that draw above already.
        if source == 0 || released(&key, group.people, k, &group.seed) {
            kept.push(group);
        }
    }
    let suppressed = (totals.num_rows() - kept.len()) as u64;

    let indices = UInt32Array::from_iter_values(kept.iter().map(|g| g.row as u32));
    let mut columns: Vec<ArrayRef> = Vec::new();
    for i in 0..plan.keys {
        columns.push(take(totals.column(i), &indices, None).map_err(internal)?);
    }
    let mut at = plan.keys;
    // The layers' standard deviation together, in units of a layer's scale.
    let with_lists = !plan.noise.listed.is_empty();
    // The people layer's variance twice the scale's square, each other layer's at most it: the
    // labels', the measure's, with IN lists the lists' and one per constant.
    let layers = LAYER_SD * ((4 + usize::from(with_lists) + plan.noise.listed.len()) as f64).sqrt();
    let noise_sd = plan.aggregates.iter().map(|a| stated_sd(*a, plan.rows_per_person, layers)).collect();
    for (j, aggregate) in plan.aggregates.iter().enumerate() {
        let mut values = Vec::with_capacity(kept.len());
        // Where the answer also releases this aggregate's sum rounded to an integer, an average
        // is of that rounded sum: the unrounded one told a little more of it.
        let round_sum = rounded_sum(plan, j);
        // The first of this aggregate's measured contributions, among all the answer's.
        let first: usize = plan.aggregates[..j].iter().map(|a| contributions(*a)).sum();
        for &Group {
            source, at: row, people: p, ref seed, ref label, ref conditions, ref lists, ref selection, ..
        } in &kept
        {
            let signed = aggregate.signed();
            let measured_at = |at: usize, row: usize, signed: bool| sources[source].measured_at(at, row, signed);
            // Two layers per measure, the people's and the bucket's labels', and with IN lists
            // the constants' and the lists' (below).
            //
            // The people layer is the measure's own: seeded by the group's people and the
            // quantity (the guard's `measures`: `rows`, `people` or `sum <dataset>.<column>`,
            // with the joins its rows come through). Aggregates of
            // one quantity share it wherever they stand in the SELECT list (several COUNT(*) are
            // one sample, not several; SUM(x) and AVG(x) measure the same sum); aggregates of
            // two quantities never do, whatever their values. Rows and people are the same
            // count only over one row per person; else their draws are independent: shared
            // draws scaled differently let a red team take the people count's known noise off
            // the row count. Seeded by the content instead (the people and what each row adds),
            // equal answers said "equal contents", never wrongly: `count(*)` against `sum(f)`
            // told whether everyone in a group has f = 1, and a steward's column holding the
            // planted people's values and a guess for everyone else read the target's value,
            // each in one query (a red team, 60 of 60 held out). Two quantities the query names
            // apart are apart whatever the data holds.
            //
            // The other layers are the bucket's, one for all its measures: seeded by the
            // quantity too, they drew afresh per column, and copies of a column summed in one
            // query averaged them away with the people layers (a red team: 33 samples of one
            // count, membership 30 of 30). Shared, they stay in any average over columns.
            //
            // And one layer more per measure, seeded by the bucket's labels and the quantity:
            // with every bucket layer shared at one scale from the declarations (1 for a count
            // and for the sum of a column declared within [0, 1]), `count(*) - sum(w)` took
            // them all off, leaving the people layers, the same over the same people; two
            // questions over the same people but for the target (a code table's two flags
            // apart on the target's code alone) then differed by rounding without the target
            // and by four people layers with them (a red team, 2026-12-05: 49 of 50 districts
            // in two queries). An average over copies takes this layer off, and leaves the
            // shared ones; a difference of two measures leaves this one.
            //
            // Only the people layer has the group's scale (`people_sd`, √2 times it: the two
            // layers' variance before). The others are drawn afresh by the query's spelling
            // (a range that removes nobody, an IN list padded with a value nobody has) over
            // the same people, so their spread over many spellings measured the scale, which
            // follows the contributions: a target who moves it by a factor near e was told 60
            // of 60 in sixteen queries (a red team, 2026-12-05). Their scale (`bucket_sd`) is
            // from the query and the declarations alone: the floor.
            //
            // A group answered without conditions that remove almost nobody is the quantity the
            // plan without them names (over a join, the columns its conditions read are in the
            // name): named by the answer's plan, conditions that removed nobody drew the people
            // layer afresh over the same people and rows, and eight subsets of three told the
            // scale by their spread (a red team: 53 of 60 districts in eight queries).
            let quantity = sources[source].plan.noise.measures.get(j).map_or(&[][..], |m| m.as_bytes());
            let noise = |measure: usize, people_sd: f64, bucket_sd: f64| {
                let tag = [quantity, &measure.to_le_bytes()].concat();
                // Over several rows a person, seeded by what the people contribute too (their
                // rows alone, for a count of people): the same people over other rows are
                // another draw (`Measurements::content`).
                // (A count of rows measures one contribution, whichever measure it is drawn as.)
                let offset = if matches!(aggregate, DpAggregate::CountRows) { 0 } else { measure };
                let content = match contributions(*aggregate) {
                    0 => sources[source].content(row, None),
                    n if offset < n => sources[source].content(row, Some(first + offset)),
                    _ => Vec::new(),
                };
                let people_layer = if content.is_empty() {
                    normal(&key, &[b"people", seed, &tag])
                } else {
                    normal(&key, &[b"people", seed, &content, &tag])
                };
                // And one seeded by the columns that select them too ([`selecting`]).
                let selection_layer = normal(&key, &[b"selection", seed, &content, &tag, selection]);
                let label_layer = normal(&key, &[b"labels", label]);
                let measure_layer = normal(&key, &[b"measure", label, &tag]);
                // One more layer per IN-list constant, seeded by it and the people matching it.
                let condition_layers: f64 = conditions.iter().map(|c| normal(&key, &[b"condition", c])).sum();
                // And, with IN lists, one seeded by the labels and the constants the group's
                // people match. The per-constant layers cancel between two queries with one
                // list, and the list was in no other seed: a red team asked two nested ranges
                // (`birth_date` from 1900 and from 1950, to 2000), or buckets of two widths,
                // beside a district list padded afresh per pair. Where both held the same
                // people their difference was one offset for every padding; where they
                // differed by the target it moved: membership 16 of 16 in 12 queries. With
                // this layer every padding draws both afresh, with the target or without. It
                // narrows the attack, no more: the difference's spread over 30 paddings still
                // tells (docs/aggregate.md, "Nested grid cells").
                let lists_layer = if with_lists { normal(&key, &[b"lists", label, lists]) } else { 0.0 };
                LAYER_SD
                    * (people_sd * (people_layer + selection_layer)
                        + bucket_sd * (label_layer + measure_layer + condition_layers + lists_layer))
            };
            // Every layer's scale is at least 1: a group whose contributions after the two
            // largest are all zero would otherwise get no noise at all, and its sum would be
            // exact (a red team saw a stated scale of 0). And at least the most one person
            // contributes over e³ (`floor`), so that the scale's largest term, the first
            // contribution over e², moves by a factor of e at most with one person more.
            let noisy = |m: Measured, measure: usize| {
                let (value, sd) = m.flattened(p);
                let least = floor(*aggregate, measure, plan.rows_per_person).max(1.0);
                value + noise(measure, sd.max(least), least)
            };
            values.push(match *aggregate {
                // COUNT(column) is drawn as an average of the column draws the count of values
                // it divides by (one quantity, the second measure): it says no more than
                // `sum / avg` does.
                DpAggregate::CountRows => {
                    let measure = usize::from(plan.noise.values.get(j).copied().unwrap_or(false));
                    noisy(measured_at(at, row, false)?, measure).round().max(0.0)
                }
                DpAggregate::CountPeople => (p as f64 + noise(0, 1.0, 1.0)).round().max(0.0),
                DpAggregate::Sum { .. } => noisy(measured_at(at, row, signed)?, 0),
                DpAggregate::Avg { lo, hi } => {
                    let s = noisy(measured_at(at, row, signed)?, 0);
                    let s = if round_sum { s.round() } else { s };
                    let n = noisy(measured_at(at + measure_width(signed), row, false)?, 1).round().max(1.0);
                    (s / n).clamp(lo, hi)
                }
            });
        }
        at += match aggregate {
            DpAggregate::CountRows => measure_width(false),
            DpAggregate::Sum { .. } => measure_width(aggregate.signed()),
            DpAggregate::Avg { .. } => measure_width(aggregate.signed()) + measure_width(false),
            DpAggregate::CountPeople => 0,
        };
        let target = plan.aggregate_schema.field(plan.keys + j).data_type().clone();
        let array: ArrayRef = Arc::new(Float64Array::from(values));
        let array = if target.is_integer() {
            // A noisy value beyond the integer type fails the answer, told as any failure while
            // running: cast safely, it came back NULL (a red team), a value no sum has.
            let rounded: Float64Array = array.as_primitive::<Float64Type>().unary(f64::round);
            let strict = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
            datafusion::arrow::compute::cast_with_options(&rounded, &target, &strict)
                .map_err(|_| crate::Error::Failed { kind: "integer overflow" })?
        } else {
            cast(&array, &target).map_err(internal)?
        };
        columns.push(array);
    }
    let fields: Vec<Field> =
        columns.iter().enumerate().map(|(i, a)| Field::new(format!("c{i}"), a.data_type().clone(), true)).collect();
    let values = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(internal)?;
    let values = crate::dp::sorted_by_keys(&values, plan.keys)?;
    let flattened = plan.aggregates.iter().map(|a| flattened(*a, plan.one_row_per_person)).collect();
    Ok(Anonymized { values, suppressed, noise_sd, flattened })
}

/// Whether aggregate `j` measures the same sum as a SUM of the answer whose values are integers
/// (so released rounded).
fn rounded_sum(plan: &DpPlan, j: usize) -> bool {
    let measure = plan.measures.get(j).copied().unwrap_or(j);
    plan.aggregates.iter().enumerate().any(|(i, a)| {
        matches!(a, DpAggregate::Sum { .. })
            && plan.measures.get(i).copied().unwrap_or(i) == measure
            && plan.aggregate_schema.fields().get(plan.keys + i).is_some_and(|f| f.data_type().is_integer())
    })
}

/// The least scale of the noise of an aggregate's `measure` (0: its count or sum; 1: an
/// average's count of values): the most one person contributes to it
/// ([`DpAggregate::most_per_person`]), over e³.
fn floor(aggregate: DpAggregate, measure: usize, rows_per_person: u64) -> f64 {
    aggregate.most_per_person(measure, rows_per_person) / std::f64::consts::E.powi(3)
}

/// Whether flattening may move an aggregate's values away from the data's beyond their noise:
/// a count of rows where a person may have several, and every sum or average (the largest
/// contributions are brought down to the top group's average, and for a signed sum the lowest
/// up). Where a few people hold most rows, the count is far lower than the data's (a red team's
/// 282 visits of seven people answered 32–40). A count of people never is: each counts once.
/// From the query alone, as the stated noise is.
fn flattened(aggregate: DpAggregate, one_row_per_person: bool) -> bool {
    match aggregate {
        DpAggregate::CountPeople => false,
        DpAggregate::CountRows => !one_row_per_person,
        DpAggregate::Sum { .. } | DpAggregate::Avg { .. } => true,
    }
}

/// What an answer may say about an aggregate's noise: the most its standard deviation can be,
/// from the query (`layers`) and the declarations only. A scale derived from the group's own
/// contributions moved when one person entered it, and a red team read whether a planted
/// person's value was above zero off two answers' stated scales, with no noise in the way.
///
/// COUNT(DISTINCT unit) has layers of scale 1. Every term of a count's or a sum's scale is at
/// most what one person contributes, and each person's contribution is clamped to that: R rows
/// (`rows_per_person`, 1 over one row a person), each of a sum at most the larger bound's
/// magnitude; a signed sum's scale is both sides' ([`Measured::flattened`]), so at most R times
/// both bounds' magnitudes. An average's noise depends on a noisy count: nothing data-free can
/// be said.
fn stated_sd(aggregate: DpAggregate, rows_per_person: u64, layers: f64) -> Option<f64> {
    let most = match aggregate {
        DpAggregate::Avg { .. } => return None,
        DpAggregate::Sum { lo, hi } if aggregate.signed() => rows_per_person as f64 * (lo.abs() + hi.abs()),
        _ => aggregate.most_per_person(0, rows_per_person),
    };
    Some(layers * most.max(1.0))
}

/// Two uniforms in (0, 1] determined by `key` and `parts`, from one HMAC-SHA256 output (53
/// bits each).
fn uniforms(key: &hmac::Key, parts: &[&[u8]]) -> (f64, f64) {
    let mut ctx = hmac::Context::with_key(key);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let tag = ctx.sign();
    let bytes = tag.as_ref();
    let uniform = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // In (0, 1]: never zero, so the logarithm is finite.
        ((u64::from_le_bytes(word) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    (uniform(&bytes[0..8]), uniform(&bytes[8..16]))
}

/// A standard normal value determined by `key` and `parts`, through Box–Muller.
fn normal(key: &hmac::Key, parts: &[&[u8]]) -> f64 {
    let (u1, u2) = uniforms(key, parts);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Laplace value of scale 1 determined by `key` and `parts`: an exponential value (from one
/// uniform) with a sign (from the other).
fn laplace(key: &hmac::Key, parts: &[&[u8]]) -> f64 {
    let (u1, u2) = uniforms(key, parts);
    let magnitude = -u1.ln();
    if u2 <= 0.5 { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_more_multiplies_the_chance_of_release_by_at_most_e() {
        // Over many sets of people (seeds), the share of groups of n people released, for n from
        // the fixed floor up: a normal draw's thin tail made the ratio of neighbouring shares
        // grow without bound below the threshold (about 27 from 2 to 3 people at k = 5).
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]);
        for k in [0, 5, 10] {
            let share = |people: u64| {
                let n = 40_000u64;
                let hits = (0..n).filter(|i| super::released(&key, people, k, &i.to_le_bytes())).count();
                hits as f64 / n as f64
            };
            let shares: Vec<f64> = (0..=k.max(MIN_THRESHOLD) + 4).map(share).collect();
            assert_eq!(shares[0] + shares[1], 0.0, "a group of fewer than two is never released");
            for n in 2..shares.len() - 1 {
                let (a, b) = (shares[n], shares[n + 1]);
                // e, with room for sampling error where both shares are small.
                assert!(b <= a * std::f64::consts::E * 1.15 + 0.002, "k = {k}: {n} people {a}, {} people {b}", n + 1);
            }
            // Around the middle: a group of its size about three times in ten, two more nearly
            // always.
            let middle = k.max(MIN_THRESHOLD) as usize;
            assert!((0.25..0.35).contains(&shares[middle]) && shares[middle + 2] > 0.85, "k = {k}: {shares:?}");
        }
    }

    #[test]
    fn one_person_more_changes_the_chance_of_a_low_effect_decision_by_at_most_e() {
        // Leak (a red team, 2026-12-05): two people removed were always low-effect and three a
        // normal draw apart, so a condition kept proved a third person was there (two spellings
        // alike exactly then: the target's birth year 8 of 28, never wrongly). Over many sets
        // of people (seeds), the share of sets of n people judged low-effect, and kept.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]);
        let n = 40_000u64;
        let shares: Vec<(f64, f64)> = (0..=12)
            .map(|count| {
                let low = (0..n).filter(|seed| super::low_effect(&key, count, *seed)).count() as f64 / n as f64;
                (low, 1.0 - low)
            })
            .collect();
        assert_eq!(shares[0].0, 1.0, "removing nobody is no decision");
        for count in 2..=12 {
            let ((low_before, kept_before), (low, kept)) = (shares[count - 1], shares[count]);
            // One person more: neither outcome becomes more than e times likelier (with room for
            // sampling where a share is small), and no count is decided the same way always.
            assert!(kept > 0.0 && low > 0.0, "{count} people: low-effect {low}");
            // Where both shares rest on a few hundred sets at least (the tail beyond is the same
            // Laplace, too thin to sample here).
            let sampled = |share: f64| share * n as f64 >= 200.0;
            let at_most_e_times =
                |likelier: f64, than: f64| !sampled(likelier.min(than)) || likelier <= std::f64::consts::E * than * 1.2;
            assert!(at_most_e_times(kept, kept_before), "{count} people kept {kept}, one fewer {kept_before}");
            assert!(at_most_e_times(low_before, low), "{count} people left out {low}, one fewer {low_before}");
        }
        assert!((0.02..0.07).contains(&shares[1].1), "one person removed kept {}", shares[1].1);
    }

    #[test]
    fn a_group_at_the_fixed_floor_is_released_less_than_one_time_in_a_thousand() {
        // Leak (a red team, 2026-12-05): one planted person alone in a group is never released
        // (the floor), and with the target there the group of two was released one time in 25
        // at L1 and one in 65 at L2: each release named the target, never wrongly, and sixty
        // planted people a district found 86% and 65% of the targets.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]);
        let n = 400_000u64;
        for k in [0, 5, 10, 20, 50] {
            assert!(!super::released(&key, 1, k, b"one"), "a group of one");
            let hits = (0..n).filter(|i| super::released(&key, MIN_PEOPLE, k, &i.to_le_bytes())).count();
            assert!((hits as f64) < n as f64 / 1_000.0, "k = {k}: a group of two released {hits} times in {n}");
        }
    }

    #[test]
    fn noise_is_sticky_normal_and_keyed() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        assert_eq!(normal(&key, &[b"people", b"1"]), normal(&key, &[b"people", b"1"]), "sticky");
        assert_ne!(normal(&key, &[b"people", b"1"]), normal(&key, &[b"people", b"2"]));
        assert_ne!(normal(&key, &[b"people", b"1"]), normal(&other, &[b"people", b"1"]), "keyed");
        // Parts are length-prefixed: ("ab", "c") and ("a", "bc") are different seeds.
        assert_ne!(normal(&key, &[b"ab", b"c"]), normal(&key, &[b"a", b"bc"]));
        let draws: Vec<f64> = (0u32..20_000).map(|i| normal(&key, &[&i.to_le_bytes()])).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean}, variance {var}");
    }

    #[test]
    fn the_stated_noise_follows_from_the_query_and_the_bounds_alone() {
        let layers = 2f64.sqrt();
        let sum = DpAggregate::Sum { lo: 0.0, hi: 3000.0 };
        assert_eq!(stated_sd(DpAggregate::CountPeople, 20, layers), Some(layers));
        assert_eq!(stated_sd(DpAggregate::CountRows, 1, layers), Some(layers));
        assert_eq!(stated_sd(sum, 1, layers), Some(layers * 3000.0));
        // Over several rows a person, each person's contribution is clamped to R rows (the
        // caps' product), so every term of the scale is at most R (times the bound).
        assert_eq!(stated_sd(DpAggregate::CountRows, 20, layers), Some(layers * 20.0), "several rows per person");
        assert_eq!(stated_sd(sum, 20, layers), Some(layers * 60_000.0));
        // A signed sum's scale is both sides' together.
        assert_eq!(stated_sd(DpAggregate::Sum { lo: -1000.0, hi: 3000.0 }, 1, layers), Some(layers * 4000.0));
        assert_eq!(stated_sd(DpAggregate::Avg { lo: 0.0, hi: 3000.0 }, 1, layers), None);
    }

    #[test]
    fn the_noise_floor_is_what_one_person_may_contribute_over_e_cubed() {
        let e3 = std::f64::consts::E.powi(3);
        let sum = DpAggregate::Sum { lo: -50.0, hi: 20.0 };
        assert_eq!(floor(DpAggregate::CountRows, 0, 20), 20.0 / e3);
        assert_eq!(floor(sum, 0, 4), 200.0 / e3, "the larger bound's magnitude, times the rows");
        assert_eq!(floor(DpAggregate::Avg { lo: 0.0, hi: 10.0 }, 1, 4), 4.0 / e3, "an average's count of values");
        assert_eq!(floor(DpAggregate::CountPeople, 0, 20), 1.0 / e3);
    }

    #[test]
    fn a_person_is_in_a_cell_by_their_nearest_values_around_the_range() {
        // The range [10, 20); cells [10, 30), [0, 50) and [0, 100), which hold it.
        let cell = |lo: i64, hi: i64| (ScalarValue::Int64(Some(lo)), ScalarValue::Int64(Some(hi)));
        let ladder = veil_guard::Ladder { column: "x".into(), cells: vec![cell(10, 30), cell(0, 50), cell(0, 100)] };
        // Per person: the greatest value below the range and the least above it.
        let below: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, None, Some(-1), None, Some(9)]));
        let above: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(25), Some(60), None, None, Some(50)]));
        let sides = Sides::new(&below, &above, &ladder).expect("sides");
        let held = |row| (0..3).map(|c| sides.in_cell(row, c)).collect::<Vec<_>>();
        assert_eq!(held(0), [false, true, true], "5 is below [10, 30) and in [0, 50)");
        assert_eq!(held(1), [true, true, true], "25 is in every cell");
        assert_eq!(held(2), [false, false, true], "60 only in [0, 100)");
        assert_eq!(held(3), [false, false, false], "-1 is in none");
        assert_eq!(held(4), [false, false, false], "no row outside the range");
        // 50 is past [0, 50)'s end; 9 is below [10, 30) and in [0, 50): either side holds.
        assert_eq!(held(5), [false, true, true]);
    }

    /// A group's cells along a dimension are put in row form together where their ends are of
    /// the column's type, and one at a time otherwise: either way each cell spans the values it
    /// holds, and a cell an end of which does not cast spans nothing.
    #[test]
    fn cells_converted_together_span_what_each_alone_does() -> Result<()> {
        use datafusion::arrow::array::{Date32Array, Int32Array, Int64Array, StringArray};
        let int = |v: i64| ScalarValue::Int64(Some(v));
        let text = |v: &str| ScalarValue::Utf8(Some(v.into()));
        let date = |v: i32| ScalarValue::Date32(Some(v));
        // A column, its cells, and what each spans (`None`: an end does not cast).
        type Case = (ArrayRef, Vec<(ScalarValue, ScalarValue)>, Vec<Option<(usize, usize)>>);
        let columns: Vec<Case> = vec![
            (
                Arc::new(Int64Array::from(vec![-5, 0, 3, 10, 250, 1000])),
                vec![(int(0), int(10)), (int(0), int(100)), (int(-1000), int(1000)), (int(i64::MIN), int(i64::MAX))],
                vec![Some((1, 3)), Some((1, 4)), Some((0, 5)), Some((0, 6))],
            ),
            (
                Arc::new(StringArray::from(vec!["E11", "E11.9", "E12", "Z"])),
                vec![(text("E11"), text("E12")), (text("E"), text("F")), (text(""), text("ZZ"))],
                vec![Some((0, 2)), Some((0, 3)), Some((0, 4))],
            ),
            (
                Arc::new(Date32Array::from(vec![0, 31, 59, 365])),
                vec![(date(0), date(59)), (date(-365), date(366))],
                vec![Some((0, 2)), Some((0, 4))],
            ),
            // Ends of another type are cast one at a time; one that does not fit spans nothing.
            (
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                vec![(int(0), int(3)), (int(0), int(i64::MAX))],
                vec![Some((0, 2)), None],
            ),
        ];
        for (array, cells, expected) in columns {
            let form = RowForm::new(&array)?;
            let all = form.all()?;
            let mut sorted: Vec<Row<'_>> = (0..array.len()).map(|i| all.row(i)).collect();
            sorted.sort_unstable();
            let held =
                |lo: Row<'_>, hi: Row<'_>| (sorted.partition_point(|v| *v < lo), sorted.partition_point(|v| *v < hi));
            let alone: Vec<Option<(usize, usize)>> = cells
                .iter()
                .map(|(lo, hi)| match (form.of(lo), form.of(hi)) {
                    (Ok(lo), Ok(hi)) => Some(held(lo.row(), hi.row())),
                    _ => None,
                })
                .collect();
            let together = form.spans(&cells, held);
            assert_eq!(together, alone, "{:?}", array.data_type());
            assert_eq!(together, expected, "{:?}", array.data_type());
        }
        Ok(())
    }

    /// Over random people, ranges and cells that hold them, a person is in a cell by their
    /// nearest values around the range exactly when one of their values outside the range is
    /// in the cell (what a flag per cell over every row measured).
    #[test]
    fn nearest_values_place_people_in_cells_as_their_rows_do() {
        // SplitMix64: a fixed sequence, so that a failure repeats.
        let mut state = 7u64;
        let mut next = |n: i64| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % n as u64) as i64
        };
        for _ in 0..200 {
            let a = next(100) - 50;
            let b = a + 1 + next(20);
            let cells: Vec<(i64, i64)> = (0..1 + next(6))
                .map(|_| {
                    let lo = a - next(60);
                    (lo, b + next(60))
                })
                .collect();
            let ladder = veil_guard::Ladder {
                column: "x".into(),
                cells: cells
                    .iter()
                    .map(|(lo, hi)| (ScalarValue::Int64(Some(*lo)), ScalarValue::Int64(Some(*hi))))
                    .collect(),
            };
            let people: Vec<Vec<i64>> = (0..30).map(|_| (0..next(5)).map(|_| next(300) - 150).collect()).collect();
            let below: Vec<Option<i64>> = people.iter().map(|v| v.iter().copied().filter(|v| *v < a).max()).collect();
            let above: Vec<Option<i64>> = people.iter().map(|v| v.iter().copied().filter(|v| *v >= b).min()).collect();
            let (below, above): (ArrayRef, ArrayRef) =
                (Arc::new(Int64Array::from(below)), Arc::new(Int64Array::from(above)));
            let sides = Sides::new(&below, &above, &ladder).expect("sides");
            for (row, values) in people.iter().enumerate() {
                for (cell, (lo, hi)) in cells.iter().enumerate() {
                    let outside = values.iter().any(|v| (*v < a || *v >= b) && lo <= v && v < hi);
                    assert_eq!(
                        sides.in_cell(row, cell),
                        outside,
                        "values {values:?}, range [{a}, {b}), cell [{lo}, {hi})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_census_is_read_block_by_block_with_every_row_once() {
        // Rows 0..7 of blocks b, a, b, c, none, a, b (ids 0, 1, 0, 2, -, 1, 0), laid out c, b, a.
        let (order, starts) = block_by_block(&[2, 0, 1], &[0, 1, 0, 2, u32::MAX, 1, 0], &[3, 2, 1]);
        // Each block together, in the order asked, its rows in theirs; the row of no block left out.
        assert_eq!(order, [3, 0, 2, 6, 1, 5]);
        assert_eq!(starts, [1, 4, 0]);
    }

    #[test]
    fn outliers_are_flattened_to_the_top_group() {
        // Totals of 10 people: two outliers of 1,000 and 500 (1,480 above the top group), the
        // next four at 10 on average.
        let above = Ranked { outliers: 1_480.0, top: Some(10.0), scale: 0.0 };
        let m = Measured { total: 1_580.0, above, below: None };
        let (value, sd) = m.flattened(10);
        assert_eq!(value, 100.0, "1,580 - 1,000 - 500 + 2 × 10");
        assert_eq!(sd, 10.0);
        // With no top group (two people), nothing is flattened and the scale is their average.
        let m = Measured { total: 30.0, above: Ranked { outliers: 30.0, top: None, scale: 0.0 }, below: None };
        assert_eq!(m.flattened(2), (30.0, 15.0));
        // A signed sum: the same ten people and one more of -1,000 among others at -5 to 0,
        // whose magnitudes' two largest exceed their top group's 4 by 1,000 - 4 + 5 - 4.
        let below = Ranked { outliers: 997.0, top: Some(4.0), scale: 0.0 };
        let m = Measured { total: 1_580.0 - 1_005.0, above, below: Some(below) };
        let (value, sd) = m.flattened(12);
        assert_eq!(value, 100.0 - 1_005.0 + 997.0, "the lowest brought up to -4 each");
        assert_eq!(sd, 14.0, "both sides' top groups: a value may move from one to the other");
        // A scale above the top group's average sets the noise; the flattening is unchanged.
        let scaled = Measured { above: Ranked { scale: 1_000.0 / std::f64::consts::E, ..above }, ..m };
        assert_eq!(scaled.flattened(12), (value, 1_000.0 / std::f64::consts::E + 4.0));
    }
}
