//! Counting people cheaply, for thresholds.
//!
//! A threshold only asks "at least `k` distinct people?", so each group keeps at most `k`
//! distinct privacy units and stops looking once it has them: memory is `groups × k` and a
//! saturated group costs nothing more, where `COUNT(DISTINCT unit)` keeps every unit of every
//! group and ships them all between aggregation phases.
//!
//! Units are counted as 64-bit hashes of their values, hashed only while a group still looks
//! for people (a saturated group skips its rows unhashed). Where units must travel as one type
//! (set operations, the de-identified answer) they are carried already hashed ([`unit_hash`]);
//! the count then takes the hash as it is. Two people whose ids hash alike count as one: a
//! collision can only make a group look smaller, so it suppresses more, never less.
//!
//! Neither function is registered in a session: a query cannot call them, they exist only in
//! rewritten plans.

use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, LargeStringArray, ListArray, StringArray, StringViewArray,
    UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::hash_utils::{QualityRandomState, create_hashes};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, Expr, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Fixed seed, so that one unit hashes alike in every partition and in every dataset.
const SEED: u64 = 0x5645_494c_756e_6974;
const STATE: QualityRandomState = QualityRandomState::with_seed(SEED);

/// `__veil_unit_hash(unit)`: the privacy unit as a `UInt64` hash; null stays null.
pub(super) fn unit_hash(unit: Expr) -> Expr {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
        Arc::new(ScalarUDF::new_from_impl(Hashes { rows: false, signature: Signature::any(1, Volatility::Immutable) }))
    });
    UDF.call(vec![unit])
}

/// `__veil_row_hash(columns…)`: a `UInt64` hash of a row's values together. It orders a
/// person's rows for the cap before joins (`cap_rows`): a function of the rows alone, so a
/// capped query asked again keeps the same rows (a random sample gave an anonymized join with
/// a filter fresh people and fresh noise at every asking).
pub(super) fn row_hash(columns: Vec<Expr>) -> Expr {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
        Arc::new(ScalarUDF::new_from_impl(Hashes {
            rows: true,
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    });
    UDF.call(columns)
}

/// `__veil_people_upto_k(unit)`: `min(k, distinct non-null units)` per group, as `Int64`. The
/// unit is a privacy-unit column of any type, or a [`unit_hash`] of one.
pub(super) fn people_upto(k: u64, unit: Expr) -> Expr {
    let cap = usize::try_from(k).unwrap_or(usize::MAX);
    let udaf = PeopleUpTo { cap, signature: Signature::any(1, Volatility::Immutable) };
    AggregateUDF::new_from_impl(udaf).call(vec![unit])
}

/// Each row of `arrays` (columns of one length) hashed, its values together: what
/// [`row_hash`] computes, and what names a group, a claimed row or a dropped constant.
///
/// Why not `create_hashes` over all the columns at once: it combines them linearly, each
/// column after the first multiplied by the same factor, so two rows whose values are swapped
/// between two columns after the first (a group `(D0, true, false)` and `(D0, false, true)`
/// of two flags) hashed alike, and so did a NULL in either of two places. Hashes here are
/// identities (a claim, a widened group), not buckets of a hash table checked by equality
/// after: two groups that hashed alike shared their claims. Each column is hashed on its own
/// and folded in by a rotation and a multiplication, which depend on its place; one column
/// hashes as `create_hashes` does, a NULL as 0.
pub(super) fn hash_rows(arrays: &[ArrayRef]) -> Result<Vec<u64>> {
    folded(arrays, |array, column| create_hashes([array], &STATE, column).map(|_| ()))
}

/// One column hashed into `column` (zeros, as long) as [`hash_rows`] hashes it, but text in any
/// layout (string views, large strings) hashed as plain strings are (`create_hashes` hashes a
/// short string view by its view, not its text).
pub(super) fn hash_text_into(array: &ArrayRef, column: &mut [u64]) -> Result<()> {
    let texts: Box<dyn Iterator<Item = Option<&str>>> = match array.data_type() {
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        _ => return create_hashes([array], &STATE, column).map(|_| ()),
    };
    // As `create_hashes` hashes a plain string; a NULL stays 0.
    for (hash, text) in column.iter_mut().zip(texts) {
        if let Some(text) = text {
            *hash = STATE.hash_one(text);
        }
    }
    Ok(())
}

/// Each row of `arrays` hashed, each column by `hash` and folded in by its place (one buffer
/// for the column hashed: this runs on every batch a row hash reads).
pub(super) fn folded(arrays: &[ArrayRef], hash: impl Fn(&ArrayRef, &mut [u64]) -> Result<()>) -> Result<Vec<u64>> {
    let rows = arrays.first().map_or(0, |a| a.len());
    let mut hashes = vec![0; rows];
    let mut column = vec![0; rows];
    for (i, array) in arrays.iter().enumerate() {
        column.fill(0);
        hash(array, &mut column)?;
        fold_in(&mut hashes, &column, i == 0);
    }
    Ok(hashes)
}

/// Columns' hashes (each of `rows`) folded in by their places, as [`folded`] folds them.
/// No column at all folds to 0 on every row.
pub(super) fn fold(columns: &[impl AsRef<[u64]>], rows: usize) -> Vec<u64> {
    let mut hashes = vec![0; rows];
    for (i, column) in columns.iter().enumerate() {
        fold_in(&mut hashes, column.as_ref(), i == 0);
    }
    hashes
}

/// `column` folded into `hashes`: the first as it is, each after it by a rotation and a
/// multiplication.
fn fold_in(hashes: &mut [u64], column: &[u64], first: bool) {
    if first {
        hashes.copy_from_slice(column);
    } else {
        for (h, c) in hashes.iter_mut().zip(column) {
            *h = (h.rotate_left(23) ^ c).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// Every unit of `array` hashed, nulls kept: what [`unit_hash`] computes.
fn hash_all(array: &ArrayRef) -> Result<UInt64Array> {
    let mut hashes = vec![0; array.len()];
    create_hashes([array], &STATE, &mut hashes)?;
    Ok(UInt64Array::new(hashes.into(), array.logical_nulls()))
}

/// The units of one batch, hashed on demand.
enum Units<'a> {
    /// Already hashed: a [`unit_hash`] column, or another type hashed up front.
    Hashed(UInt64Array),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
}

impl<'a> Units<'a> {
    fn new(array: &'a ArrayRef) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::UInt64 => Self::Hashed(array.as_primitive::<UInt64Type>().clone()),
            DataType::Utf8 => Self::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Self::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Self::Utf8View(array.as_string_view()),
            _ => Self::Hashed(hash_all(array)?),
        })
    }

    /// The unit of `row`, hashed; `None` for a null.
    fn get(&self, row: usize) -> Option<u64> {
        let text = match self {
            Self::Hashed(a) => return a.is_valid(row).then(|| a.value(row)),
            Self::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            Self::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
            Self::Utf8View(a) => a.is_valid(row).then(|| a.value(row)),
        };
        text.map(|t| STATE.hash_one(t.as_bytes()))
    }
}

/// [`unit_hash`] (`rows: false`: one column, nulls kept) and [`row_hash`] (`rows: true`: the
/// columns of a row hashed together).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Hashes {
    rows: bool,
    signature: Signature,
}

impl ScalarUDFImpl for Hashes {
    fn name(&self) -> &str {
        if self.rows { "__veil_row_hash" } else { "__veil_unit_hash" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if self.rows {
            return Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(hash_rows(&arrays)?))));
        }
        let [units] = arrays.as_slice() else { return exec_err!("__veil_unit_hash takes one argument") };
        Ok(ColumnarValue::Array(Arc::new(hash_all(units)?)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PeopleUpTo {
    cap: usize,
    signature: Signature,
}

impl AggregateUDFImpl for PeopleUpTo {
    fn name(&self) -> &str {
        "__veil_people_upto_k"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let units = Field::new_list_field(DataType::UInt64, false);
        Ok(vec![Arc::new(Field::new_list(format_state_name(args.name, "units"), units, false))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(One { cap: self.cap, units: Vec::new() }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups { cap: self.cap, units: Vec::new(), heap: 0 }))
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// Adds `unit` to `set` unless the set already holds it or is full; returns the bytes added.
fn insert(set: &mut Vec<u64>, cap: usize, unit: u64) -> usize {
    if set.len() >= cap || set.contains(&unit) {
        return 0;
    }
    let before = set.capacity();
    set.push(unit);
    (set.capacity() - before) * size_of::<u64>()
}

/// The unit hashes of a state list.
fn hashes(array: &ArrayRef) -> Result<&UInt64Array> {
    match array.as_primitive_opt::<UInt64Type>() {
        Some(a) => Ok(a),
        None => exec_err!("__veil_people_upto_k expects unit hashes in its state, got {}", array.data_type()),
    }
}

fn lists(array: &ArrayRef) -> Result<&ListArray> {
    match array.as_list_opt::<i32>() {
        Some(a) => Ok(a),
        None => exec_err!("__veil_people_upto_k expects lists of unit hashes, got {}", array.data_type()),
    }
}

/// A list array of unit hashes with the given list lengths.
fn list_array(lengths: impl IntoIterator<Item = usize>, units: UInt64Array) -> ArrayRef {
    let item = Arc::new(Field::new_list_field(DataType::UInt64, false));
    Arc::new(ListArray::new(item, OffsetBuffer::from_lengths(lengths), Arc::new(units), None))
}

/// The sets as a list array, one list per set.
fn to_lists(sets: &[Vec<u64>]) -> ArrayRef {
    list_array(sets.iter().map(Vec::len), sets.iter().flatten().copied().collect())
}

fn count(set: &[u64]) -> i64 {
    i64::try_from(set.len()).unwrap_or(i64::MAX)
}

/// The whole input as one group (an aggregate without GROUP BY).
#[derive(Debug)]
struct One {
    cap: usize,
    units: Vec<u64>,
}

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else { return Ok(()) };
        let units = Units::new(values)?;
        for row in 0..values.len() {
            if self.units.len() >= self.cap {
                break;
            }
            if let Some(unit) = units.get(row) {
                insert(&mut self.units, self.cap, unit);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(count(&self.units))))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.units.capacity() * size_of::<u64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = to_lists(std::slice::from_ref(&self.units));
        Ok(vec![ScalarValue::try_from_array(&list, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else { return Ok(()) };
        let lists = lists(states)?;
        for row in 0..lists.len() {
            for unit in hashes(&lists.value(row))?.iter().flatten() {
                insert(&mut self.units, self.cap, unit);
            }
        }
        Ok(())
    }
}

/// One capped set per group.
struct Groups {
    cap: usize,
    units: Vec<Vec<u64>>,
    /// Bytes held by the sets' buffers, kept as they grow so [`GroupsAccumulator::size`] is cheap.
    heap: usize,
}

impl Groups {
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<u64>> {
        let taken = emit_to.take_needed(&mut self.units);
        let freed: usize = taken.iter().map(|s| s.capacity() * size_of::<u64>()).sum();
        self.heap = self.heap.saturating_sub(freed);
        taken
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.units.resize_with(total_num_groups, Vec::new);
        let Some(values) = values.first() else { return Ok(()) };
        let units = Units::new(values)?;
        for (row, &group) in group_indices.iter().enumerate() {
            let Some(set) = self.units.get_mut(group) else { continue };
            // A group that has its k people needs no more: its rows are not even hashed.
            if set.len() >= self.cap || opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            if let Some(unit) = units.get(row) {
                self.heap += insert(set, self.cap, unit);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        Ok(Arc::new(taken.iter().map(|s| count(s)).collect::<Int64Array>()))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(vec![to_lists(&taken)])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.units.resize_with(total_num_groups, Vec::new);
        let Some(values) = values.first() else { return Ok(()) };
        let lists = lists(values)?;
        let offsets = lists.value_offsets();
        let units = hashes(lists.values())?;
        for (row, &group) in group_indices.iter().enumerate() {
            let Some(set) = self.units.get_mut(group) else { continue };
            if lists.is_null(row) {
                continue;
            }
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            for i in start..end {
                if set.len() >= self.cap {
                    break;
                }
                self.heap += insert(set, self.cap, units.value(i));
            }
        }
        Ok(())
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let Some(values) = values.first() else { return exec_err!("__veil_people_upto_k takes one argument") };
        let units = Units::new(values)?;
        let keep = |row: usize| {
            let kept = self.cap > 0 && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            kept.then(|| units.get(row)).flatten()
        };
        let kept: Vec<Option<u64>> = (0..values.len()).map(keep).collect();
        let lengths = kept.iter().map(|u| usize::from(u.is_some()));
        Ok(vec![list_array(lengths, kept.iter().flatten().copied().collect())])
    }

    fn size(&self) -> usize {
        self.units.capacity() * size_of::<Vec<u64>>() + self.heap
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use datafusion::arrow::array::StringArray;

    use super::*;

    fn units(values: &[Option<u64>]) -> ArrayRef {
        Arc::new(values.iter().copied().collect::<UInt64Array>())
    }

    fn counts(array: &ArrayRef) -> Vec<i64> {
        array.as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().to_vec()
    }

    fn groups(cap: usize) -> Groups {
        Groups { cap, units: Vec::new(), heap: 0 }
    }

    /// Rows whose values are swapped between two columns, or whose NULL stands in another
    /// place, are other rows (`create_hashes` over several columns hashed them alike).
    #[test]
    fn rows_hash_by_their_values_in_place() {
        use datafusion::arrow::array::BooleanArray;
        let district: ArrayRef = Arc::new(StringArray::from(vec!["D0"; 4]));
        let first: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]));
        let second: ArrayRef = Arc::new(BooleanArray::from(vec![Some(false), Some(true), Some(true), None]));
        let hashes = hash_rows(&[district, first, second]).unwrap();
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b, "{hashes:?}");
            }
        }
        // One column hashes as it always has (the rows a capped join keeps stay the same).
        let one: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let mut expected = vec![0; 2];
        create_hashes([&one], &STATE, &mut expected).unwrap();
        assert_eq!(hash_rows(&[one]).unwrap(), expected);
    }

    #[test]
    fn counts_distinct_people_per_group_up_to_the_cap() {
        let mut acc = groups(3);
        // Group 0: one person on four rows; group 1: five people; group 2: two people and nulls.
        let values = units(&[
            Some(7),
            Some(7),
            Some(1),
            Some(2),
            Some(7),
            Some(3),
            None,
            Some(4),
            Some(5),
            Some(9),
            Some(8),
            None,
        ]);
        acc.update_batch(&[values], &[0, 0, 1, 1, 0, 1, 2, 1, 1, 2, 2, 0], None, 3).unwrap();
        assert_eq!(counts(&acc.evaluate(EmitTo::All).unwrap()), vec![1, 3, 2]);
    }

    #[test]
    fn text_and_integer_units_are_counted_by_value() {
        let texts: [ArrayRef; 2] = [
            Arc::new(StringArray::from(vec![Some("a"), Some("a"), Some("b"), None])),
            Arc::new(StringViewArray::from(vec![Some("a"), Some("a"), Some("b"), None])),
        ];
        for array in texts {
            let mut acc = groups(10);
            acc.update_batch(&[array], &[0, 0, 0, 0], None, 1).unwrap();
            assert_eq!(counts(&acc.evaluate(EmitTo::All).unwrap()), vec![2]);
        }
        let ints: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(vec![7, 7, 8, 9]));
        let mut acc = groups(10);
        acc.update_batch(&[ints], &[0, 0, 0, 1], None, 2).unwrap();
        assert_eq!(counts(&acc.evaluate(EmitTo::All).unwrap()), vec![2, 1]);
    }

    #[test]
    fn filtered_rows_are_not_counted() {
        let mut acc = groups(10);
        let filter = BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]);
        acc.update_batch(&[units(&[Some(1), Some(2), Some(3), Some(4)])], &[0, 0, 0, 0], Some(&filter), 1).unwrap();
        assert_eq!(counts(&acc.evaluate(EmitTo::All).unwrap()), vec![2]);
    }

    #[test]
    fn merging_partial_states_counts_people_seen_in_several_partitions_once() {
        let cap = 4;
        let mut left = groups(cap);
        let mut right = groups(cap);
        // The same two people in both partitions of group 0; group 1 saturates across partitions.
        left.update_batch(&[units(&[Some(1), Some(2), Some(10), Some(11)])], &[0, 0, 1, 1], None, 2).unwrap();
        right
            .update_batch(&[units(&[Some(2), Some(1), Some(12), Some(13), Some(14)])], &[0, 0, 1, 1, 1], None, 2)
            .unwrap();
        let mut last = groups(cap);
        for mut partial in [left, right] {
            let state = partial.state(EmitTo::All).unwrap();
            last.merge_batch(&state, &[0, 1], 2).unwrap();
        }
        assert_eq!(counts(&last.evaluate(EmitTo::All).unwrap()), vec![2, 4]);
    }

    #[test]
    fn skipped_partial_aggregation_state_matches_the_rows() {
        let acc = groups(5);
        let filter = BooleanArray::from(vec![true, true, false]);
        let state = acc.convert_to_state(&[units(&[Some(1), None, Some(3)])], Some(&filter)).unwrap();
        let mut last = groups(5);
        last.merge_batch(&state, &[0, 0, 0], 1).unwrap();
        assert_eq!(counts(&last.evaluate(EmitTo::All).unwrap()), vec![1]);
    }

    #[test]
    fn emitting_the_first_groups_keeps_the_rest() {
        let mut acc = groups(5);
        acc.update_batch(&[units(&[Some(1), Some(2), Some(3)])], &[0, 1, 1], None, 2).unwrap();
        assert_eq!(counts(&acc.evaluate(EmitTo::First(1)).unwrap()), vec![1]);
        assert_eq!(counts(&acc.evaluate(EmitTo::All).unwrap()), vec![2]);
        assert_eq!(acc.size(), 0);
    }

    #[test]
    fn the_ungrouped_accumulator_agrees() {
        let mut one = One { cap: 3, units: Vec::new() };
        one.update_batch(&[units(&[Some(5), Some(5), None])]).unwrap();
        let state = one.state().unwrap();
        let mut last = One { cap: 3, units: Vec::new() };
        last.merge_batch(&[state[0].to_array().unwrap()]).unwrap();
        last.update_batch(&[units(&[Some(6), Some(7), Some(8)])]).unwrap();
        assert_eq!(last.evaluate().unwrap(), ScalarValue::Int64(Some(3)));
    }

    #[test]
    fn unit_hashes_are_stable_and_keep_nulls() {
        let hash = |values: Vec<Option<&str>>| {
            let array: ArrayRef = Arc::new(StringArray::from(values));
            hash_all(&array).unwrap().values().to_vec()
        };
        let a = hash(vec![Some("110101195001011234"), Some("110101195001011235")]);
        let b = hash(vec![Some("110101195001011234")]);
        assert_eq!(a[0], b[0], "one person hashes alike in every batch");
        assert_ne!(a[0], a[1]);
        let udf = Hashes { rows: false, signature: Signature::any(1, Volatility::Immutable) };
        let array: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(array)],
            arg_fields: vec![Arc::new(Field::new("u", DataType::Utf8, true))],
            number_rows: 2,
            return_field: Arc::new(Field::new("h", DataType::UInt64, true)),
            config_options: Arc::default(),
        };
        let ColumnarValue::Array(out) = udf.invoke_with_args(args).unwrap() else { panic!("an array") };
        assert!(out.is_valid(0) && out.is_null(1));
    }
}
