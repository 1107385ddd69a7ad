//! A group's largest contributions, in one pass: what flattening needs from each group of an
//! anonymized answer ([`super::anonymize`]).
//!
//! Contributions are ranked largest first, ties broken by the person's unit hash,
//! so that the ranking, and so the answer, is the same every time. Each group keeps only its
//! `ANON_OUTLIERS + TOP_GROUP` best contributions: memory is that many pairs per group and one
//! comparison or two per row, where ranking them with a window sorted every group's people.
//!
//! Like the other functions of rewritten plans, it is not registered in a session: a query
//! cannot call it.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, StructArray, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature, Volatility,
};

/// What flattening needs of a group's ranking, returned together as a struct of three
/// `Float64` fields (named as [`PARTS`] lists them): one aggregate keeps one ranking per group,
/// where an aggregate per part kept three.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Parts {
    /// How much the outliers' values exceed the top group's average, together: what
    /// flattening takes off the total (where there is no top group, the outliers' sum; null
    /// when there are none: no people).
    pub outliers: Option<f64>,
    /// The average of the values of the `top` contributions after the outliers (null when
    /// there are none, as when the group has no more than `outliers` people).
    pub top_group: Option<f64>,
    /// The least scale of noise that hides one person added or removed ([`Top::scale`]):
    /// the largest of the top group's average, the third contribution, the second over e and
    /// the first over e² (a missing contribution as 0; null for no people).
    pub scale: Option<f64>,
}

/// The names of [`Parts`]' fields in the struct `__veil_top` returns, in order.
pub(super) const PARTS: [&str; 3] = ["outliers", "top_group", "scale"];

/// How many of a group's largest contributions are outliers (`count`, fewer where the group
/// has fewer people), and how many after them make up the top group (`top`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Outliers {
    pub count: usize,
    pub top: usize,
}

/// `__veil_top(value, unit)`: the group's ranking's [`Parts`], as a struct.
pub(super) fn top(outliers: Outliers, value: Expr, unit: Expr) -> Expr {
    let udaf = Top { outliers, signature: Signature::any(2, Volatility::Immutable) };
    AggregateUDF::new_from_impl(udaf).call(vec![value, unit])
}

/// The struct's fields, each a nullable `Float64`.
fn part_fields() -> Fields {
    PARTS.iter().map(|name| Field::new(*name, DataType::Float64, true)).collect()
}

/// Rankings' parts as the struct array `__veil_top` returns.
fn parts_array(parts: impl IntoIterator<Item = Parts>) -> ArrayRef {
    let (mut outliers, mut top_group, mut scale) = (Vec::new(), Vec::new(), Vec::new());
    for p in parts {
        outliers.push(p.outliers);
        top_group.push(p.top_group);
        scale.push(p.scale);
    }
    let columns: Vec<ArrayRef> = [outliers, top_group, scale]
        .into_iter()
        .map(|values| Arc::new(Float64Array::from(values)) as ArrayRef)
        .collect();
    Arc::new(StructArray::new(part_fields(), columns, None))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Top {
    outliers: Outliers,
    signature: Signature,
}

/// One contribution: its value (0 for a person with no value, [`entry`]) and its person's unit
/// hash.
type Entry = (f64, Option<u64>);

/// Whether `a` ranks before `b`: larger first (a person with no value as 0), then by unit.
fn before(a: &Entry, b: &Entry) -> bool {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)) == Ordering::Less
}

/// Keeps `entry` among the `keep` best of `ranked` (best first).
fn offer(ranked: &mut Vec<Entry>, keep: usize, entry: Entry) {
    if ranked.len() >= keep && ranked.last().is_none_or(|worst| !before(&entry, worst)) {
        return;
    }
    // Best first: those `entry` does not rank before come first.
    let at = ranked.partition_point(|e| !before(&entry, e));
    ranked.insert(at, entry);
    ranked.truncate(keep);
}

impl Top {
    fn keep(&self) -> usize {
        self.outliers.count + self.outliers.top
    }

    /// The average of the values of the `top` contributions from `from` on (none without).
    fn average(&self, ranked: &[Entry], from: usize) -> Option<f64> {
        let values: Vec<f64> = ranked.iter().skip(from).take(self.outliers.top).map(|e| e.0).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// The noise's scale for a group ranked as `ranked`: the largest of the top group's average,
    /// the third contribution, the second over e and the first over e².
    ///
    /// Why: flattening brings the outliers to the top group's average, so a person added at
    /// the head of the top group counts in full and raises what the outliers count as. Scaled
    /// by that average alone, the noise was small without a lone heavy person and large with
    /// them, and the answer moved by their whole contribution: sixteen people of 2 visits, two
    /// of 60 and one of 20 planted, and the target of 20 or absent, was read 114 of 120 times in
    /// one query. A person added moves the flattened total by about the third contribution at
    /// most (more is flattened), so the scale is at least that, with or without them; and one
    /// person added or removed moves each rank by one place at most, so each term moves by a
    /// factor of e at most (the second over e is at most the third's next value, and so on).
    /// The first is bounded by the most one person contributes (`anon.rs`, the floor at that
    /// over e³), so no term grows without bound. Measured by a simulation of the rules (every
    /// layout of up to three heavy people of 5 to 5,000 beside 8 to 40 light ones, the target
    /// of 2 to 5,000, the best threshold): the worst layout called 74% (1.0 before), none above
    /// 80% (six in ten before).
    fn scale(&self, ranked: &[Entry], top: Option<f64>) -> Option<f64> {
        if ranked.is_empty() {
            return None;
        }
        let value = |i: usize| ranked.get(i).map_or(0.0, |e| e.0).max(0.0);
        let e = std::f64::consts::E;
        Some(top.unwrap_or(0.0).max(value(2)).max(value(1) / e).max(value(0) / (e * e)))
    }

    fn evaluate(&self, ranked: &[Entry]) -> Parts {
        let n = self.outliers.count.min(ranked.len());
        let top = self.average(ranked, n);
        let values: Vec<f64> = ranked.iter().take(n).map(|e| e.0).collect();
        let outliers = (!values.is_empty()).then(|| match top {
            Some(top) => values.iter().map(|v| (v - top).max(0.0)).sum(),
            None => values.iter().sum(),
        });
        Parts { outliers, top_group: top, scale: self.scale(ranked, top) }
    }
}

impl AggregateUDFImpl for Top {
    fn name(&self) -> &str {
        "__veil_top"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(part_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let values = Field::new_list_field(DataType::Float64, true);
        let units = Field::new_list_field(DataType::UInt64, true);
        Ok(vec![
            Arc::new(Field::new_list(format_state_name(args.name, "values"), values, true)),
            Arc::new(Field::new_list(format_state_name(args.name, "units"), units, true)),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Single { spec: self.clone(), ranked: Vec::new() }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups { spec: self.clone(), ranked: Vec::new() }))
    }
}

/// A batch's values and units, as the ranking reads them.
fn inputs(values: &[ArrayRef]) -> Result<(Float64Array, UInt64Array)> {
    let [value, unit] = values else { return exec_err!("__veil_top takes a value and a unit") };
    let value = cast(value, &DataType::Float64)?.as_primitive::<Float64Type>().clone();
    let unit = cast(unit, &DataType::UInt64)?.as_primitive::<UInt64Type>().clone();
    Ok((value, unit))
}

/// The contribution at `row`. A person with no value (NULL) contributes 0, as the sum counts
/// them, and ranks so.
///
/// Why: ranked before every number (as `ORDER BY value DESC NULLS FIRST` would), six people
/// with no value took every outlier's and top group's place, so a heavy person after them was
/// counted in full and the noise fell to its floor: a red team told a planted person of 1,000
/// among people of 0 to 20 and eight NULLs 50 of 50 times in one query, and read a lone
/// value among NULLs to about ±90. The same group with 0 in place of NULL was flattened.
fn entry(values: &Float64Array, units: &UInt64Array, row: usize) -> Entry {
    let value = if values.is_valid(row) { values.value(row) } else { 0.0 };
    (value, units.is_valid(row).then(|| units.value(row)))
}

/// The rankings as the state's two list arrays.
fn to_state(rankings: &[Vec<Entry>]) -> Vec<ArrayRef> {
    let lengths = rankings.iter().map(Vec::len);
    let offsets = OffsetBuffer::from_lengths(lengths);
    let values = Float64Array::from_iter_values(rankings.iter().flatten().map(|e| e.0));
    let units: UInt64Array = rankings.iter().flatten().map(|e| e.1).collect();
    let list = |item: DataType, array: ArrayRef| -> ArrayRef {
        Arc::new(ListArray::new(Arc::new(Field::new_list_field(item, true)), offsets.clone(), array, None))
    };
    vec![list(DataType::Float64, Arc::new(values)), list(DataType::UInt64, Arc::new(units))]
}

/// Each state row's entries, offered to the ranking `into(row)` returns.
fn merge_state(states: &[ArrayRef], mut into: impl FnMut(usize, Entry)) -> Result<()> {
    let [values, units] = states else { return exec_err!("__veil_top expects two state lists") };
    let (Some(values), Some(units)) = (values.as_list_opt::<i32>(), units.as_list_opt::<i32>()) else {
        return exec_err!("__veil_top expects list states");
    };
    let (Some(v), Some(u)) =
        (values.values().as_primitive_opt::<Float64Type>(), units.values().as_primitive_opt::<UInt64Type>())
    else {
        return exec_err!("__veil_top expects values and unit hashes in its state");
    };
    let offsets = values.value_offsets();
    for row in 0..values.len() {
        if values.is_null(row) {
            continue;
        }
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            into(row, entry(v, u, i));
        }
    }
    Ok(())
}

/// The whole input as one group (an aggregate without GROUP BY).
#[derive(Debug)]
struct Single {
    spec: Top,
    ranked: Vec<Entry>,
}

impl Accumulator for Single {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (v, u) = inputs(values)?;
        let keep = self.spec.keep();
        for row in 0..v.len() {
            offer(&mut self.ranked, keep, entry(&v, &u, row));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarValue::try_from_array(&parts_array([self.spec.evaluate(&self.ranked)]), 0)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.ranked.capacity() * size_of::<Entry>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        to_state(std::slice::from_ref(&self.ranked)).iter().map(|a| ScalarValue::try_from_array(a, 0)).collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let keep = self.spec.keep();
        let ranked = &mut self.ranked;
        merge_state(states, |_, e| offer(ranked, keep, e))
    }
}

/// One ranking per group.
struct Groups {
    spec: Top,
    ranked: Vec<Vec<Entry>>,
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.ranked.resize_with(total_num_groups, Vec::new);
        let (v, u) = inputs(values)?;
        let keep = self.spec.keep();
        for (row, &group) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            if let Some(ranked) = self.ranked.get_mut(group) {
                offer(ranked, keep, entry(&v, &u, row));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.ranked);
        Ok(parts_array(taken.iter().map(|r| self.spec.evaluate(r))))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(to_state(&emit_to.take_needed(&mut self.ranked)))
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.ranked.resize_with(total_num_groups, Vec::new);
        let keep = self.spec.keep();
        let ranked = &mut self.ranked;
        merge_state(values, |row, e| {
            if let Some(r) = group_indices.get(row).and_then(|&g| ranked.get_mut(g)) {
                offer(r, keep, e);
            }
        })
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let (v, u) = inputs(values)?;
        let rows: Vec<Vec<Entry>> = (0..v.len())
            .map(|row| {
                let kept = self.spec.keep() > 0 && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
                if kept { vec![entry(&v, &u, row)] } else { Vec::new() }
            })
            .collect();
        Ok(to_state(&rows))
    }

    /// An upper bound, in constant time: every ranking holds at most `keep` entries.
    fn size(&self) -> usize {
        self.ranked.capacity() * (size_of::<Vec<Entry>>() + (self.spec.keep() + 1) * size_of::<Entry>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranking a sort would give: the reference the one-pass ranking must equal.
    fn sorted(mut all: Vec<Entry>) -> Vec<Entry> {
        all.sort_by(|a, b| {
            if before(a, b) {
                Ordering::Less
            } else if before(b, a) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
        all
    }

    #[test]
    fn the_one_pass_ranking_keeps_what_a_sort_puts_first() {
        // Values with ties, nulls and units in a scrambled order (a fixed pseudo-random walk).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut all = Vec::new();
        for i in 0..500u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let value = match x >> 60 {
                0 => 0.0,
                v => (v % 7) as f64 * 10.0,
            };
            all.push((value, Some(x.rotate_left(17) ^ i)));
        }
        let mut ranked = Vec::new();
        for e in &all {
            offer(&mut ranked, 6, *e);
        }
        assert_eq!(ranked, sorted(all.clone())[..6].to_vec());
        // Split in two and merged, as partitions are: the same.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, e) in all.iter().enumerate() {
            offer(if i % 3 == 0 { &mut a } else { &mut b }, 6, *e);
        }
        for e in b {
            offer(&mut a, 6, e);
        }
        assert_eq!(a, ranked);
    }

    /// People with no value rank as contributions of 0: six of them beside a heavy person and
    /// light ones leave the heavy person flattened and the scale set by them, as zeros do (the
    /// red team's group of twenty light people, eight NULLs and the target of 1,000).
    #[test]
    fn people_with_no_value_rank_as_zero() {
        let parts = |nulls: Option<f64>| {
            let mut values = vec![nulls; 8];
            values.push(Some(1000.0));
            values.extend((0..20).map(|i| Some(f64::from(i))));
            let values: ArrayRef = Arc::new(Float64Array::from(values));
            let units: ArrayRef = Arc::new(UInt64Array::from((0..29u64).collect::<Vec<_>>()));
            let mut single = Single { spec: spec(), ranked: Vec::new() };
            single.update_batch(&[values, units]).expect("ranked");
            single.spec.evaluate(&single.ranked)
        };
        let (with_nulls, with_zeros) = (parts(None), parts(Some(0.0)));
        assert_eq!(with_nulls, with_zeros);
        assert!(with_nulls.outliers.is_some_and(|o| o > 900.0), "the heavy person is flattened: {with_nulls:?}");
        assert!(with_nulls.scale.is_some_and(|s| s >= 1000.0 / (std::f64::consts::E * std::f64::consts::E)));
    }

    fn spec() -> Top {
        Top { outliers: Outliers { count: 3, top: 4 }, signature: Signature::any(2, Volatility::Immutable) }
    }

    /// `values`, ranked as given, each with a unit of its own (`None`: a person with no value,
    /// as [`entry`] reads one).
    fn ranked(values: &[Option<f64>]) -> Vec<Entry> {
        values.iter().enumerate().map(|(i, v)| (v.unwrap_or(0.0), Some(i as u64))).collect()
    }

    #[test]
    fn outliers_and_the_top_group_are_read_off_the_ranking() {
        let ranked = ranked(&[None, Some(1000.0), Some(10.0), Some(8.0), Some(6.0)]);
        assert_eq!(spec().evaluate(&ranked).outliers, Some(996.0), "a person without a value takes a slot");
        assert_eq!(spec().evaluate(&ranked).top_group, Some(7.0));
        assert_eq!(spec().evaluate(&ranked[..3]).top_group, None, "no more people than outliers");
        assert_eq!(spec().evaluate(&ranked[..3]).outliers, Some(1010.0), "no top group: their sum");
        assert_eq!(spec().evaluate(&ranked[..1]).outliers, Some(0.0), "one person of no value: an outlier of 0");
        assert_eq!(spec().evaluate(&[]).outliers, None, "no people");
    }

    /// The red team's group: two people of 60 rows, the target of 40 and people of 2. The
    /// target is an outlier too, flattened to the top group after them; and the three largest
    /// are outliers whatever the slope below them.
    #[test]
    fn the_three_largest_contributions_are_outliers() {
        let mut values = vec![Some(60.0), Some(60.0), Some(40.0)];
        values.extend([Some(2.0); 20]);
        let with = ranked(&values);
        assert_eq!(spec().evaluate(&with).top_group, Some(2.0));
        assert_eq!(spec().evaluate(&with).outliers, Some(58.0 + 58.0 + 38.0));
        // A gentle slope: three outliers all the same.
        let gentle = ranked(&[Some(30.0), Some(20.0), Some(12.0), Some(10.0), Some(8.0), Some(7.0), Some(6.0)]);
        assert_eq!(spec().evaluate(&gentle).top_group, Some(7.75));
        // A cliff: three, however steep the rest falls.
        let cliff = ranked(&[Some(1e6), Some(1e5), Some(1e4), Some(1e3), Some(1e2), Some(10.0), Some(4.0), Some(1.0)]);
        assert_eq!(spec().evaluate(&cliff).top_group, Some(278.5));
        // Never past the last contribution.
        let short = ranked(&[Some(100.0), Some(50.0), Some(20.0), Some(1.0)]);
        assert_eq!(spec().evaluate(&short).top_group, Some(1.0));
        // Negative sums: the top group's average may be below zero.
        let negative = ranked(&[Some(5.0), Some(1.0), Some(0.5), Some(-3.0), Some(-4.0), Some(-5.0)]);
        assert_eq!(spec().evaluate(&negative).top_group, Some(-4.0));
    }

    /// The scale is about the size of what one person added or removed moves, whatever their
    /// rank, and the same with a lone heavy person or without (the layout a measurement on the
    /// engine read 114 of 120 times when the scale was the top group's average).
    #[test]
    fn the_scale_hides_a_lone_heavy_person_and_moves_by_e_at_most() {
        let e = std::f64::consts::E;
        let mut values = vec![Some(60.0), Some(60.0), Some(20.0)];
        values.extend([Some(2.0); 16]);
        let without = ranked(&values);
        values.insert(3, Some(20.0));
        let with = ranked(&values);
        let scale = |r: &[Entry]| spec().evaluate(r).scale.unwrap();
        assert_eq!((scale(&without), scale(&with)), (60.0 / e, 60.0 / e), "alike with the target or without");
        assert!(scale(&without) >= 20.0, "at least the target's contribution");
        assert!(spec().evaluate(&without).top_group < Some(20.0 / 2.0), "where the top group's average was small");
        // One person far above the rest sets it over e²; a second one beside them, over e.
        let one = ranked(&[Some(1000.0), Some(2.0), Some(2.0), Some(2.0)]);
        let two = ranked(&[Some(1000.0), Some(1000.0), Some(2.0), Some(2.0), Some(2.0)]);
        assert_eq!(scale(&one), 1000.0 / (e * e));
        assert_eq!(scale(&two), 1000.0 / e);
        // Nobody without a value is below zero: a null is no contribution.
        assert_eq!(scale(&ranked(&[None, Some(3.0)])), 3.0 / e);
        assert_eq!(spec().evaluate(&[]).scale, None);
    }
}
