//! Low-effect detection against the grid cells around a group key's bucket: a group takes the
//! rows of the few people a cell around its bucket adds.
//!
//! Why: two nested buckets of one column, `floor(date_part('year', birth_date) / 100) * 100 =
//! 1900` (S) and `… / 50) * 50 = 1950` (T), hold the same people unless someone was born in
//! the first half of the century. Where they hold the same people, S − T is the difference of
//! their label layers; where S holds the target too, their people layers are drawn apart, and
//! beside an IN list padded afresh per pair the spread of S − T told the target from a twin
//! without them (checked on a red team's data: 4–5 against at most 1, in 12 queries). The
//! ranges' ladder (`ladder.rs`) does not reach it: a bucket's rows are its own, not a filter's.
//!
//! How: for a key that is a number, a date, a timestamp or text, or one of aggregate mode's
//! generalizations of one, each bucket selects an interval of the column, and the cells of a
//! wider step of the grid that contain it are its ladder (`ladder::cells`). Every key's last
//! cell is every value, NULL too (what the query without the key holds), so a key over a
//! column of any other type (a boolean) is claimed as well, with that cell alone. Each variant
//! of low-effect detection has its own census and claims, over its rows without the
//! conditions it leaves out. One census lists,
//! per value of the other keys, the people per combination of the bucketed keys' buckets and
//! values ([`Buckets::census`]). The query layer tries, per group, larger groups first, every
//! combination of its keys' own buckets and the cells around them: a region that adds at most
//! a few people to the group (sticky noise seeded by those people, as for a range's cells) is
//! low-effect, and the group *claims* those people's rows in it, each row claimed once. Every
//! measurement then groups each row by `__veil_claimed(key, own, unit, n, values…, other
//! keys…)`, the claiming group's key where a group claimed the row and its own elsewhere. So T
//! takes the target's rows when S holds them, and S and T measure one set of people with the
//! target or without. A group keeps its labels; a bucket whose few people a neighbour claims
//! loses them (at most a few people, and no group is duplicated: each row is counted once).
//!
//! The WHERE clause's ranges on other columns are dimensions of the claims too
//! ([`Buckets::ranges`]): a group's own region is its buckets within every range, and its
//! regions take the cells of each range's ladder beside its keys' cells, so a person outside a
//! date range and an income key's bucket is claimed as ranges on both columns let them in. The
//! claims decide those ranges alone: a row outside them is let in where a region took it
//! ([`admitted`]), not by a ladder widened column by column; ranges on two or more columns are
//! decided so with no bucketed key at all ([`Buckets::keys`] empty, a census without bucket
//! columns), so that every spelling of one region (two ranges, a range and a key either way,
//! two keys) counts its people and draws once. A range that is one bucket of a key
//! ([`Buckets::spelled`], `spelled.rs`) is claimed as that key: the groups of its buckets
//! around the range's compete for the people between them, and the range's group holds what
//! the key's group of its bucket would. So does a range on a key's own column: a claimed row is
//! let in where the group that claimed it is one of the answer's ([`ADMITTED`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, UInt64Array, new_null_array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

/// The function's name in plans.
const NAME: &str = "__veil_claimed";

/// The group keys of an anonymized answer whose buckets have cells of the grid around them,
/// claimed together: a group's cells are every combination of its keys' own buckets and the
/// cells around them (a red team's target alone in the cell of two nested keys, which neither
/// key's cells alone reach, told membership 8 of 8 while each key claimed on its own).
#[derive(Debug, Clone)]
pub struct Buckets {
    /// The keys' positions among the answer's group keys, in order (none where only ranges
    /// on two or more columns are claimed).
    pub keys: Vec<usize>,
    /// The plan the query layer runs first, over the rows of the answer's input with every
    /// range's conditions left out: the other keys (in order); per bucketed key, the key and
    /// the value of its column; per range beside them (`ranges`), the value of its column and
    /// the Int64 1 where the row is in the range; per range that is a key's bucket
    /// (`spelled`), the row's bucket of that key; then the person's 64-bit hash, 1 and the hash
    /// again, once per person (over one row per person: 0, the number of people and the XOR of
    /// their hashes, per combination of values).
    pub census: LogicalPlan,
    /// The ranges of the answer's WHERE clause on columns no bucketed key generalizes, by
    /// their place among the answer's ladders (`DpPlan::ladders`; none in a variant that
    /// leaves the range out, where every row is in it): the claims' regions take
    /// their cells as dimensions beside the keys', and a claim names a row by their values too
    /// (a red team's person outside a date range and an income key's bucket was measured by
    /// ranges on both columns and not by the range beside the key: the two spellings of one
    /// question, with the same labels, differed exactly when someone was in that corner).
    pub ranges: Vec<Option<usize>>,
    /// The ranges of `ranges` (by their place there) whose interval is one bucket of a key
    /// (`spelled.rs`: `x >= 400 AND x < 500`, the bucket 400 of `floor(x / 100) * 100`), with
    /// that key's label: the claims group their rows by that key's buckets, as they do a
    /// key's, so that the range's group takes the rows the key's group of its bucket would.
    pub spelled: Vec<(usize, super::KeyLabel)>,
}

/// The name the `__veil_claimed` calls of the key at `key` carry ([`with_claimed`]).
#[must_use]
pub fn claim_name(key: usize) -> String {
    key.to_string()
}

/// The name the `__veil_claimed` call that lets a row through the ranges the claims decide
/// carries (`admitted`): a claimed row where the group that claimed it is one of the answer's
/// (inside the ranges or not), an unclaimed one where it is in every range.
pub const ADMITTED: &str = "admitted";

/// `__veil_claimed(ADMITTED, own, unit, n, values…, others…)`: for a claimed row, whether one
/// of the answer's groups claimed it; `own` (whether the row is in every range the claims
/// decide) elsewhere; with no row claimed yet. `others` are the group keys without buckets.
pub(super) fn admitted(own: Expr, unit: Expr, values: &[Expr], others: Vec<Expr>) -> Expr {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(udf(&[])));
    let mut args = vec![lit(ADMITTED), own, unit, lit(values.len() as i64)];
    args.extend(values.iter().cloned());
    args.extend(others);
    UDF.call(args)
}

/// `__veil_claimed(key, own, unit, n, values…, others…)` with no row claimed: the call the
/// guard puts in plans in place of the group key `own`; `values` are the columns every
/// bucketed key of the answer generalizes (`n` of them), `others` the other group keys.
pub(super) fn claimed(key: usize, own: Expr, unit: Expr, values: &[Expr], others: Vec<Expr>) -> Expr {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(udf(&[])));
    let mut args = vec![lit(claim_name(key)), own, unit, lit(values.len() as i64)];
    args.extend(values.iter().cloned());
    args.extend(others);
    UDF.call(args)
}

fn udf(claims: &[(u64, ScalarValue)]) -> ScalarUDF {
    let hashes = super::dropped::table(claims.iter().map(|(h, _)| *h).collect());
    let by_hash: HashMap<u64, &ScalarValue> = claims.iter().map(|(h, k)| (*h, k)).collect();
    let keys: Vec<Option<ScalarValue>> = hashes.iter().map(|h| by_hash.get(h).map(|k| (*k).clone())).collect();
    let built = built(&keys);
    let digest = {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one((&hashes, &keys))
    };
    ScalarUDF::new_from_impl(Claimed {
        table: ClaimTable(Arc::new(Table { hashes, keys, built, digest })),
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// `keys` as one array (NULL for a decoy), in the type of the claimed keys; `None` when
/// nothing was claimed or the keys do not make one array.
fn built(keys: &[Option<ScalarValue>]) -> Option<ArrayRef> {
    let ty = keys.iter().flatten().next()?.data_type();
    let typed = keys.iter().map(|k| match k {
        Some(k) => Ok(k.clone()),
        None => ScalarValue::try_from(&ty),
    });
    ScalarValue::iter_to_array(typed.collect::<Result<Vec<_>>>().ok()?).ok()
}

/// What a `__veil_claimed` call carries, made once.
#[derive(Debug)]
struct Table {
    /// The claimed rows' hashes and decoys, as `dropped`'s table: a lookup makes as many steps
    /// whether any row was claimed or none.
    hashes: Vec<u64>,
    /// Per entry of `hashes`, the claiming group's key (`None` for a decoy).
    keys: Vec<Option<ScalarValue>>,
    /// `keys` as one array (not rebuilt for every batch); it follows from them.
    built: Option<ArrayRef>,
    /// A hash of `hashes` and `keys`, made once.
    digest: u64,
}

/// A claim table, hashed by its digest and compared by it first.
///
/// Why: the optimizer hashes a plan's expressions many times, and hashing every claimed row's
/// key each time made each claimed row cost a query more than its lookup: a person's hundred
/// rows beside each of 32 groups, claimed, about a millisecond of a 28 ms query, which a
/// copy of the data without them (nothing claimed) did not spend (timing alone, 2026-12-07).
#[derive(Debug)]
struct ClaimTable(Arc<Table>);

impl PartialEq for ClaimTable {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        Arc::ptr_eq(a, b) || (a.digest == b.digest && a.hashes == b.hashes && a.keys == b.keys)
    }
}

impl Eq for ClaimTable {}

impl std::hash::Hash for ClaimTable {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.digest.hash(state);
    }
}

/// The hash `__veil_claimed` looks each row up by: its other keys (one array per key), its
/// values of the bucketed keys' columns and its person.
///
/// # Errors
/// A DataFusion error if the arrays cannot be hashed together (different lengths).
pub fn claim_hashes(others: &[ArrayRef], values: &[ArrayRef], unit: &ArrayRef) -> Result<Vec<u64>> {
    let mut arrays = others.to_vec();
    arrays.extend(values.iter().cloned());
    arrays.push(Arc::clone(unit));
    super::dropped::hashed(&arrays)
}

/// `plan` with each `__veil_claimed` call carrying, for its key (by [`claim_name`]), the
/// rows claimed (by [`claim_hashes`]) and the key of the group claiming each.
///
/// # Errors
/// A DataFusion error if a rewritten node cannot be rebuilt.
pub fn with_claimed(plan: LogicalPlan, claims: &HashMap<String, Vec<(u64, ScalarValue)>>) -> Result<LogicalPlan> {
    super::dropped::reloaded(plan, NAME, |key| udf(claims.get(key).map_or(&[][..], Vec::as_slice)))
}

/// `plan` with `column` (a column of a scan below it) among its output columns: under a
/// hidden name through each projection that drops it, requalified through subquery aliases;
/// `None` when a node it passes does not keep its inputs' columns.
pub(super) fn carry(plan: &LogicalPlan, column: &Column, hidden: &mut usize) -> Result<Option<(LogicalPlan, Column)>> {
    use datafusion::logical_expr::{Projection, SubqueryAlias};
    if plan.schema().has_column(column) {
        return Ok(Some((plan.clone(), column.clone())));
    }
    let mut inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
    let mut read = None;
    for input in &mut inputs {
        if let Some((carried, r)) = carry(input, column, hidden)? {
            *input = carried;
            read = Some(r);
            break;
        }
    }
    let Some(read) = read else { return Ok(None) };
    let single = |mut inputs: Vec<LogicalPlan>| inputs.pop().map(Arc::new);
    Ok(Some(match plan.clone() {
        LogicalPlan::Projection(p) => {
            let Some(input) = single(inputs) else { return Ok(None) };
            let name = format!("{}bucket_{}", super::DP_PREFIX, *hidden);
            *hidden += 1;
            let mut exprs = p.expr;
            exprs.push(Expr::Column(read).alias(&name));
            (LogicalPlan::Projection(Projection::try_new(exprs, input)?), Column::from_name(name))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let Some(input) = single(inputs) else { return Ok(None) };
            let read = Column::new(Some(a.alias.clone()), read.name);
            (LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(input, a.alias)?), read)
        }
        plan @ (LogicalPlan::Filter(_) | LogicalPlan::Join(_) | LogicalPlan::Sort(_) | LogicalPlan::Limit(_)) => {
            (plan.with_new_exprs(plan.expressions(), inputs)?, read)
        }
        _ => return Ok(None),
    }))
}

/// Each row's group key: the key of the group that claimed it, else its own.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Claimed {
    table: ClaimTable,
    signature: Signature,
}

impl ScalarUDFImpl for Claimed {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(own) => Ok(own.clone()),
            None => exec_err!("{NAME} without its key"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = match args.args.get(3) {
            Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))) => usize::try_from(*n).unwrap_or(usize::MAX),
            _ => return exec_err!("{NAME} without its number of values"),
        };
        let (Some(own), Some(unit), Some(rest)) = (args.args.get(1), args.args.get(2), args.args.get(4..)) else {
            return exec_err!("{NAME} without its key, unit and values");
        };
        // Each as long as the batch: a key or a unit may be a constant.
        let rows = args.number_rows;
        let arrays = [own.to_array(rows)?, unit.to_array(rows)?];
        let rest = rest.iter().map(|v| v.to_array(rows)).collect::<Result<Vec<_>>>()?;
        let ([own, unit], true) = (arrays.as_slice(), rest.len() >= n) else {
            return exec_err!("{NAME} without its values");
        };
        let (values, others) = rest.split_at(n);
        let hashes = claim_hashes(others, values, unit)?;
        let ty = own.data_type();
        let table = &self.table.0;
        let keys: ArrayRef = match &table.built {
            None if table.keys.iter().all(Option::is_none) => new_null_array(ty, table.keys.len()),
            Some(keys) if keys.data_type() == ty => Arc::clone(keys),
            Some(keys) => datafusion::arrow::compute::cast(keys, ty)?,
            None => return exec_err!("{NAME}: the claimed keys are not of one type"),
        };
        // Every row looked up, and its place chosen by arithmetic, whatever was claimed: the
        // work does not say whether any row was (see `dropped::lookup`). Taken from one array
        // of the batch's keys and the claiming keys: `interleave` from the two cost more per
        // row read from the claiming keys (about 0.8 ms over a person's 100,000 rows, in the
        // scan and again in the aggregate), which told whether that person's rows were claimed.
        let both = concat(&[own.as_ref(), keys.as_ref()])?;
        let places: UInt64Array = hashes
            .iter()
            .enumerate()
            .map(|(row, h)| {
                let (at, found) = super::dropped::lookup(&table.hashes, *h);
                let claimed = usize::from(found & table.keys.get(at).is_some_and(Option::is_some));
                (claimed * (rows + at) + (1 - claimed) * row) as u64
            })
            .collect();
        Ok(ColumnarValue::Array(take(both.as_ref(), &places, None)?))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    use super::*;

    /// `__veil_claimed(admitted, false, 0, …)` over one row per person (the unit a constant,
    /// the key too): true exactly for the rows claimed, by their other keys and values, as
    /// long as the batch.
    #[test]
    fn a_claimed_row_is_admitted_and_no_other() {
        let others: ArrayRef = Arc::new(StringArray::from(vec!["D0", "D0", "D1"]));
        let values: ArrayRef = Arc::new(Int64Array::from(vec![1931, 1960, 1931]));
        let unit = ScalarValue::UInt64(Some(0));
        let units = unit.to_array_of_size(3).unwrap();
        let hashes = claim_hashes(std::slice::from_ref(&others), std::slice::from_ref(&values), &units).unwrap();
        // The first row claimed; the third has its value but another district.
        let udf = udf(&[(hashes[0], ScalarValue::Boolean(Some(true)))]);
        let args = [
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(ADMITTED.into()))),
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))),
            ColumnarValue::Scalar(unit),
            ColumnarValue::Scalar(ScalarValue::Int64(Some(1))),
            ColumnarValue::Array(values),
            ColumnarValue::Array(others),
        ];
        let args = ScalarFunctionArgs {
            arg_fields: args.iter().map(|a| Arc::new(Field::new("a", a.data_type(), true))).collect(),
            args: args.to_vec(),
            number_rows: 3,
            return_field: Arc::new(Field::new("admitted", DataType::Boolean, true)),
            config_options: Arc::default(),
        };
        let ColumnarValue::Array(out) = udf.invoke_with_args(args).unwrap() else { panic!("an array") };
        let out: Vec<Option<bool>> = out.as_boolean().iter().collect();
        assert_eq!(out, [Some(true), Some(false), Some(false)]);
    }
}
