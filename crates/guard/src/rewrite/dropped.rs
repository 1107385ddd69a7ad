//! Low-effect detection per IN-list constant: the rows of a group that match a constant only a
//! few of its people match are left out of the group.
//!
//! Why: `WHERE date_trunc('year', birth_date) IN (1931, 1960, 1961)` against the same list with
//! a year nobody has in place of 1931 differ, in the target's group, by exactly the target when
//! they alone were born in 1931; the constant brings its own noise layer, but that is one sticky
//! sample, and a red team compared it with the other groups of the same answer to say in about
//! eight queries whether the target's year was 1931. Column-level detection does not see it:
//! without the whole list on `birth_date`, the group gains everybody. Diffix checks each IN
//! element on its own; so does Veil now.
//!
//! How: every anonymizing plan with IN lists filters its rows through
//! `NOT __veil_dropped(list, keys…, value)`, one call per list (`list` names it, `keys` are the
//! group keys, `value` the list's compared expression). In the plan the guard builds, the set of
//! dropped (group, constant) pairs is empty; the query layer measures once with it empty (each
//! group's people per constant), decides which constants are low-effect in which group, and
//! measures again with the plan's calls carrying those pairs ([`with_dropped`]). A call hashes
//! every row's keys and value whatever the set holds, so the work does not say whether anything
//! was dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

/// The function's name in plans.
const NAME: &str = "__veil_dropped";

/// `__veil_dropped(list, keys…, value)` with nothing dropped: the call the guard puts in plans.
pub(super) fn dropped(list: &str, keys: Vec<Expr>, value: Expr) -> Expr {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(udf(BTreeSet::new())));
    let mut args = vec![lit(list)];
    args.extend(keys);
    args.push(value);
    UDF.call(args)
}

fn udf(hashes: BTreeSet<u64>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Dropped {
        table: table(hashes),
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// The fewest entries a table of dropped hashes holds.
const TABLE_SIZE: usize = 64;

/// `hashes` sorted in a table of [`TABLE_SIZE`] entries (or the next power of two above their
/// number), the rest filled with decoys: a lookup then makes as many comparisons whether
/// nothing or something was dropped. A set whose lookup returns at once when it is empty made
/// the measurement after low-effect detection 2 ms slower (of 200) when a listed constant was
/// one person's, which told whether that person exists.
pub(super) fn table(hashes: BTreeSet<u64>) -> Vec<u64> {
    let size = hashes.len().next_power_of_two().max(TABLE_SIZE);
    let mut table: Vec<u64> = hashes.into_iter().collect();
    // Decoys from a fixed sequence (SplitMix64's steps): a row hashing to one by chance has
    // odds of one in 2⁵⁸, and would only lose its row from an answer.
    let mut state = 0x5645_494c_5f44_524fu64;
    while table.len() < size {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table.push(z ^ (z >> 31));
    }
    table.sort_unstable();
    table
}

/// Where `hash` is in `table` (from [`table`]: sorted, a power of two long) and whether it
/// is there, in the same steps and branches whatever `hash` is. The standard binary search
/// returns from a branch of its own when it finds the value, and a caller's match on found
/// or not runs more code on one side: over a person's 100,000 rows, a claimed value cost
/// about 1 ms (of 90) more in each of the two places the measurement evaluates the claim,
/// which told whether an IN list's constant was that person's value. Hand-written for that
/// reason: every step is the same arithmetic, and the caller combines the answer
/// arithmetically too.
pub(super) fn lookup(table: &[u64], hash: u64) -> (usize, bool) {
    let (mut base, mut size) = (0usize, table.len());
    while size > 1 {
        let half = size / 2;
        base += usize::from(table.get(base + half).is_some_and(|t| *t <= hash)) * half;
        size -= half;
    }
    (base, table.get(base).is_some_and(|t| *t == hash))
}

/// The hashes [`with_dropped`] expects for some rows of one list: `keys` (one array per group
/// key) and `values` (the constants, in the type of the list's compared expression), row by row.
///
/// # Errors
/// A DataFusion error if the arrays cannot be hashed together (different lengths).
pub fn dropped_hashes(keys: &[ArrayRef], values: &ArrayRef) -> Result<Vec<u64>> {
    let mut arrays = keys.to_vec();
    arrays.push(Arc::clone(values));
    hashed(&arrays)
}

/// Each row of `arrays` hashed alike whatever the layout of its text and binary values: a group
/// key scanned as a string view comes out of the aggregate as a string view, but measured
/// values can travel as another layout of the same values, and a hash of one layout missed the
/// other's. Text is hashed as a plain string is, in its own layout (casting it first copied
/// every string: some ten columns of 777 k strings over one census); binary is cast to plain
/// binary and dictionaries to their values. Each column is hashed as [`column_hashes`] hashes
/// it, into one buffer (this runs on every batch a claim or a dropped constant is looked up
/// in), and folded as [`folded_hashes`] folds them.
pub(super) fn hashed(arrays: &[ArrayRef]) -> Result<Vec<u64>> {
    super::people::folded(arrays, hash_plain_into)
}

/// One column's own hashes, as [`group_hashes`](super::group_hashes),
/// [`claim_hashes`](super::claim_hashes) and [`dropped_hashes`] hash each of their columns
/// before folding them ([`folded_hashes`]): a column several of them hold is hashed once.
///
/// # Errors
/// A DataFusion error if the column cannot be cast to its plain layout.
pub fn column_hashes(array: &ArrayRef) -> Result<Vec<u64>> {
    let mut column = vec![0; array.len()];
    hash_plain_into(array, &mut column)?;
    Ok(column)
}

/// `array` hashed into `column` (zeros, as long) in its plain layout.
fn hash_plain_into(array: &ArrayRef, column: &mut [u64]) -> Result<()> {
    use datafusion::arrow::compute::cast;
    let target = match array.data_type() {
        DataType::Dictionary(_, value) => value.as_ref().clone(),
        other => other.clone(),
    };
    let target = match target {
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other,
    };
    if &target == array.data_type() {
        super::people::hash_text_into(array, column)
    } else {
        super::people::hash_text_into(&cast(array, &target)?, column)
    }
}

/// Columns' hashes ([`column_hashes`], each of `rows`) folded in their order: the rows' hashes
/// the same columns' arrays give [`group_hashes`](super::group_hashes) (0 for every row where
/// there are none) and [`claim_hashes`](super::claim_hashes).
pub fn folded_hashes(columns: &[impl AsRef<[u64]>], rows: usize) -> Vec<u64> {
    super::people::fold(columns, rows)
}

/// `plan` with each `__veil_dropped` call carrying the hashes `dropped` holds for its list (by
/// the list's name), none for a list it does not name.
///
/// # Errors
/// A DataFusion error if a rewritten node cannot be rebuilt.
pub fn with_dropped(plan: LogicalPlan, dropped: &HashMap<String, BTreeSet<u64>>) -> Result<LogicalPlan> {
    reloaded(plan, NAME, |list| udf(dropped.get(list).cloned().unwrap_or_default()))
}

/// `plan` with each call of the function `name` (whose first argument names what it is about:
/// a list, a column) calling `loaded(that name)` instead: how the query layer hands a plan
/// what a first measurement found.
pub(super) fn reloaded(plan: LogicalPlan, name: &str, loaded: impl Fn(&str) -> ScalarUDF) -> Result<LogicalPlan> {
    let load = |e: Expr| {
        e.transform_up(|e| match e {
            Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == name => {
                let about = match args.first() {
                    Some(Expr::Literal(ScalarValue::Utf8(Some(about)), _)) => about.as_str(),
                    _ => return exec_err!("{name} without the name of what it is about"),
                };
                let func = Arc::new(loaded(about));
                Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction { func, args })))
            }
            other => Ok(Transformed::no(other)),
        })
    };
    Ok(plan.transform_up_with_subqueries(|node| node.map_expressions(load))?.data)
}

/// Whether each row's group keys and value are a dropped pair.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Dropped {
    /// See [`table`]; searched by [`lookup`], whose steps depend on its size only.
    table: Vec<u64>,
    signature: Signature,
}

impl ScalarUDFImpl for Dropped {
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
        // The list's name first, then the keys and the value.
        let Some((_, row)) = args.args.split_first() else { return exec_err!("{NAME} without arguments") };
        let arrays = ColumnarValue::values_to_arrays(row)?;
        let hashes = hashed(&arrays)?;
        let dropped: BooleanArray = hashes.iter().map(|h| Some(lookup(&self.table, *h).1)).collect();
        Ok(ColumnarValue::Array(Arc::new(dropped)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup makes as many steps whether nothing or one pair was dropped (the table is as
    /// large), finds every dropped hash, and no other.
    #[test]
    fn the_table_of_dropped_hashes_is_as_large_whether_anything_was_dropped() {
        let none = table(BTreeSet::new());
        let one = table(BTreeSet::from([42]));
        let many = table((0..100).map(|i| i * 7919).collect());
        assert_eq!(none.len(), TABLE_SIZE);
        assert_eq!(one.len(), TABLE_SIZE);
        assert_eq!(many.len(), 128);
        assert!(lookup(&one, 42).1);
        assert!(!lookup(&none, 42).1);
        assert!((0..100).all(|i| lookup(&many, i * 7919) == (many.binary_search(&(i * 7919)).unwrap(), true)));
        assert!((0..100).all(|i| !lookup(&many, i * 7919 + 1).1));
        // Below the least entry and above the greatest: not found, and no step out of bounds.
        assert!(!lookup(&one, 0).1 && !lookup(&one, u64::MAX).1);
        assert_eq!(lookup(&one, u64::MAX).0, one.len() - 1);
        assert!(none.windows(2).all(|w| w[0] < w[1]), "sorted, no decoy twice");
    }

    /// Text hashes alike in every layout it travels in, short (inlined in a view) and long,
    /// NULL and empty, alone and beside another column.
    #[test]
    fn text_hashes_alike_in_every_layout() {
        use datafusion::arrow::array::{DictionaryArray, Int64Array, LargeStringArray, StringArray, StringViewArray};
        use datafusion::arrow::datatypes::Int32Type;
        let values = vec![Some("a"), Some("longer than twelve bytes"), None, Some(""), Some("十二个字节以上的文字")];
        let layouts: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.clone())),
            Arc::new(StringViewArray::from(values.clone())),
            Arc::new(LargeStringArray::from(values.clone())),
            Arc::new(values.iter().copied().collect::<DictionaryArray<Int32Type>>()),
        ];
        let beside: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5]));
        let alone = hashed(&layouts[..1]).unwrap();
        let paired = hashed(&[Arc::clone(&beside), Arc::clone(&layouts[0])]).unwrap();
        for layout in &layouts {
            assert_eq!(hashed(std::slice::from_ref(layout)).unwrap(), alone, "{}", layout.data_type());
            assert_eq!(hashed(&[Arc::clone(&beside), Arc::clone(layout)]).unwrap(), paired, "{}", layout.data_type());
        }
        // As plain text always hashed, and every value apart.
        assert_eq!(alone, super::super::people::hash_rows(&layouts[..1]).unwrap());
        assert_eq!(alone.iter().collect::<BTreeSet<_>>().len(), values.len());
    }

    /// Columns hashed once and folded name rows as the functions that hash the arrays do, in
    /// any order of the columns, and no key at all as 0.
    #[test]
    fn columns_hashed_once_and_folded_hash_as_the_arrays_do() {
        use datafusion::arrow::array::{Int64Array, StringViewArray, UInt64Array};
        let text: ArrayRef = Arc::new(StringViewArray::from(vec![Some("A"), None, Some("longer than twelve bytes")]));
        let number: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), Some(7), None]));
        let unit: ArrayRef = Arc::new(UInt64Array::from(vec![1, 2, 3]));
        let [t, n, u] = [&text, &number, &unit].map(|a| column_hashes(a).unwrap());
        let folded = |columns: &[&Vec<u64>]| folded_hashes(columns, 3);
        let arrays = [Arc::clone(&text), Arc::clone(&number)];
        assert_eq!(folded(&[&t, &n]), super::super::group_hashes(&arrays, 3).unwrap());
        assert_eq!(
            folded(&[&n, &t]),
            super::super::group_hashes(&[Arc::clone(&number), Arc::clone(&text)], 3).unwrap()
        );
        assert_ne!(folded(&[&t, &n]), folded(&[&n, &t]));
        assert_eq!(folded(&[]), super::super::group_hashes(&[], 3).unwrap());
        assert_eq!(folded(&[]), vec![0; 3]);
        assert_eq!(
            folded(&[&t, &n, &u]),
            super::super::claim_hashes(std::slice::from_ref(&text), std::slice::from_ref(&number), &unit).unwrap()
        );
        assert_eq!(folded(&[&t, &n]), dropped_hashes(std::slice::from_ref(&text), &number).unwrap());
    }
}
