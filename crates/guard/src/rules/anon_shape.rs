//! Aggregate mode over personal data (design §2): the narrow shape an anonymized answer may
//! take, as a positive list checked on the plan. Everything not listed is refused.
//!
//! ```text
//! post-processing   Projection, Filter (HAVING), Sort, Limit, Window, SubqueryAlias: any read-only
//!                   rework of the released numbers, without subqueries
//! one Aggregate     keys: a column, or date_trunc / date_part to year, quarter, month, week or
//!                   day, or substr(column, 1, n); no GROUPING SETS
//!                   aggregates: COUNT(*), COUNT(column), COUNT(DISTINCT privacy unit), and SUM or
//!                   AVG of a bare column with declared bounds (clamped to them) or a boolean
//!                   column (true as 1); no FILTER, no
//!                   ORDER BY, nothing computed from a person's values
//! rows              TableScan, SubqueryAlias, Projection of keys, Filter of ANDed conditions
//!                   `key = constant`, `key IN (constants)`, a boolean column, its NOT, and a
//!                   range `key >= lo AND key < hi` whose ends lie on the key's grid; inner
//!                   equi-joins (people only on equal privacy units), each dataset read once;
//!                   no subquery
//! ```
//!
//! What this shape closes: a FILTER or CASE that reads one person while the threshold counts
//! everybody in the group, power moments that turn a sum into a maximum, complements spelled
//! in any of SQL's ways (`<>`, `NOT IN`, `IS NOT TRUE`, `NULLIF`, `strpos`, `NOT EXISTS`, …),
//! subqueries and set operations that subtract one answer from another inside the query,
//! ROLLUP residuals, and values above the steward's declared bounds. Differencing two admitted
//! answers (IN lists one value apart, a range one grid step apart) is left to the sticky noise
//! the rewrite and the query layer add (`rewrite/anonymize.rs`).

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{AggregateFunction, InList, ScalarFunction};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, JoinType, LogicalPlan, Operator};

use crate::DpAggregate;
use crate::exprs::uncast;
use crate::grid::Step;
use crate::lineage::{ColumnLineage, Sources};
use crate::rules::dp_shape::has_subquery;
use crate::{GuardContext, Rule, Violation};

/// What an answer over personal data may look like, said once for every refusal of shape.
const SHAPE: &str = "aggregate mode over data about people answers one aggregate: SELECT keys, COUNT(*) / COUNT(DISTINCT <privacy unit>) / SUM / AVG of bounded columns FROM … [JOIN … ON equal privacy units] [WHERE key = constant AND key IN (…) AND key >= lo AND key < hi] GROUP BY keys, then any HAVING, ORDER BY, LIMIT or window over the result";

/// What an anonymized answer is, for its rules.
pub(crate) fn note() -> String {
    format!(
        "anonymized, not differentially private: values clamped to their declared bounds; each group's {} largest contributions flattened to the average of its next {}; every count and sum carries sticky noise seeded by the group's people and by the query (standard deviation at least that average, the third largest contribution, the second over e, the first over e² and the most one person contributes over e³, and at least 1); groups pass a noisy threshold around k people (around {} at the least; never fewer than 2)",
        crate::ANON_OUTLIERS,
        crate::rewrite::anonymize::TOP_GROUP,
        crate::ANON_LEAST_THRESHOLD
    )
}

/// A refusal for two datasets about people joined other than on their privacy units.
pub(crate) fn people_not_linked() -> Violation {
    Violation::new(
        Rule::AnonShape,
        None,
        "a join of two datasets about people must equate their privacy units (JOIN … ON a.unit = b.unit), so that thresholds and noise count each person once",
    )
}

fn shape(message: impl Into<String>) -> Violation {
    Violation::new(Rule::AnonShape, None, format!("{}; {SHAPE}", message.into()))
}

fn condition(message: impl Into<String>) -> Violation {
    Violation::new(Rule::AnonCondition, None, message)
}

/// Whether `plan` reads a dataset about people, anywhere, subqueries included: then aggregate
/// mode anonymizes it.
pub(crate) fn applies(plan: &LogicalPlan, ctx: &GuardContext) -> bool {
    let mut personal = false;
    let walked = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            personal |= about_people(scan, ctx);
        }
        Ok(if personal { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    personal || walked.is_err()
}

/// Whether `scan` reads a dataset about people (or one the context does not know: fail closed).
pub(crate) fn about_people(scan: &datafusion::logical_expr::TableScan, ctx: &GuardContext) -> bool {
    ctx.dataset(scan.table_name.schema(), scan.table_name.table()).is_none_or(|d| d.privacy_unit.is_some())
}

/// Checks that every dataset in `plan`, about people or about nobody, belongs to one
/// department. Whatever a department controls selects and splits another department's people
/// in any way its rows do, and a department's steward can shape its rows around one person:
///
/// - a red team registered, in its own department, a table about nobody of a thousand values
///   with hundreds of columns, each splitting the values in a new way around the target's,
///   joined it on the people's subsidy, and averaged the pairs of answers one column apart
///   (fresh people and labels each time) to a planted person's exact subsidy and to whether
///   people exist (21 of 21);
/// - with lookup tables kept to the people's department, the next red team registered the
///   same columns in a dataset *about people* of its own department, keyed on the shared
///   linkable id: joined on the privacy unit (`r.c7 >= 0 AND r.c7 < 2` against `r.c7 = 0`,
///   the target alone holding 1), it told membership 18 of 20 times in 50 queries each, and
///   read exact subsidies where a few others shared them.
///
/// Noise seeded by the people in each bucket cannot stop that: every pair is two new sets of
/// people, one person apart. Linking people across departments is dp mode's work, whose
/// budget bounds what any number of such pairs tell.
pub(crate) fn one_department(plan: &LogicalPlan, ctx: &GuardContext) -> Result<(), Violation> {
    let mut tables: Vec<(String, String, bool)> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let department = scan.table_name.schema().unwrap_or_default().to_owned();
            tables.push((department, scan.table_name.to_string(), about_people(scan, ctx)));
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|_| shape("a plan that cannot be walked"))?;
    let Some((first, first_table, _)) = tables.first() else { return Ok(()) };
    match tables.iter().find(|(department, _, _)| department != first) {
        None => Ok(()),
        Some((_, table, people)) => Err(shape(format!(
            "`{first_table}` and `{table}` belong to different departments: in aggregate mode over people, data one department controls ({what}) selects and splits another department's people by anything its rows hold, and pairs of such answers one person apart average to that person's values; join across departments in dp mode",
            what = if *people { "its dataset about the same people" } else { "a lookup table" }
        ))),
    }
}

/// Checks that `plan` reads every dataset once. A condition or key on one copy of a self-join,
/// or on one of a lookup table joined twice, has the label and the quantity's name of the same
/// condition on the other copy (both name the dataset's column), over other rows: one noise,
/// and the difference of the two answers was exact (a red team, 2026-12-05: an event register
/// joined with itself, `WHERE b.flag` against `WHERE a.flag AND b.flag`, membership and a value
/// 60 of 60 in two queries; a code table joined through two person columns with a key listed
/// twice, the same). A second copy adds nothing an anonymized count needs: rows multiplied, or
/// a second lookup of one table, which a query per lookup answers.
pub(crate) fn each_dataset_once(plan: &LogicalPlan) -> Result<(), Violation> {
    let mut seen: Vec<String> = Vec::new();
    let mut twice = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.to_string();
            if seen.contains(&name) {
                twice = Some(name);
                return Ok(TreeNodeRecursion::Stop);
            }
            seen.push(name);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|_| shape("a plan that cannot be walked"))?;
    match twice {
        None => Ok(()),
        Some(name) => Err(shape(format!(
            "`{name}` is read twice: an anonymized answer reads each dataset once (a condition on one copy would be labelled as on the other, over other rows); ask one query per copy"
        ))),
    }
}

/// Checks that the conditions and keys of `plan` read each column name from one dataset only.
/// Labels name a column without its dataset (an alias must change nothing), so over a join of
/// two datasets holding a column `flag`, `WHERE a.flag AND NOT b.flag` and `WHERE NOT a.flag AND
/// b.flag` were one label, one quantity and one set of people over other rows (each person's
/// flagged rows of one times their unflagged rows of the other): their difference was exact,
/// membership 60 of 60 and a value 28 of 28 in two queries, over two registers or one register
/// registered twice (a red team, 2026-12-05). Read from one dataset per query, a column's
/// dataset is in the quantity's name (`rewrite/anonymize.rs`, `columns_read`), and two queries
/// reading it from two datasets draw apart.
pub(crate) fn one_dataset_per_column(plan: &LogicalPlan) -> Result<(), Violation> {
    let mut read: Vec<(String, String)> = crate::rewrite::anonymize::conditions_and_keys(plan)
        .into_iter()
        .filter_map(|c| Some((c.name, c.relation?.to_string())))
        .collect();
    read.sort();
    read.dedup();
    match read.windows(2).find(|w| w[0].0 == w[1].0) {
        None => Ok(()),
        Some(w) => Err(shape(format!(
            "`{}` is read from both `{}` and `{}`: an anonymized answer's conditions and keys read a column name from one dataset (its labels name the column, not the dataset); ask about one dataset's `{}` per query",
            w[0].0, w[0].1, w[1].1, w[0].0
        ))),
    }
}

/// The rules on what restricts one column beside what else ([`repeating_parts_alone`],
/// [`in_lists_alone`], [`conditions_whole_buckets`]), over the plan's conditions and keys as they
/// read at the scan, read once.
pub(crate) fn restrictions_per_column(plan: &LogicalPlan) -> Result<(), Violation> {
    let (conditions, keys) = crate::rewrite::anonymize::measured_conditions_and_keys(plan);
    let read: Vec<&Expr> = conditions.iter().chain(&keys).collect();
    let joined = crate::rewrite::anonymize::join_sides_read(plan);
    casts_one_to_one(plan, &read.iter().copied().chain(&joined).collect::<Vec<_>>())?;
    repeating_parts_alone(&read)?;
    in_lists_alone(&read)?;
    conditions_whole_buckets(plan)
}

/// The conditions on a key's column select whole buckets of the key, whatever the key (the
/// intervals they select together, `NoiseLabels`' per column, against the key's buckets at
/// either end: `KeyLabel::cuts`): a range's ends on a band's or a date key's grid (a finer key
/// within a coarser range, months within a year, stays), and no equality on the column, no
/// longer prefix, no day or instant, inside a coarser bucket.
///
/// Why: a condition that cuts a bucket measures part of the key's group under the labels of
/// the condition alone, and the two decide about the people around them apart. `WHERE x >= 4
/// AND x < 6 GROUP BY floor(x / 5) * 5` put a target at 5.5 in a group of their own, and its
/// group 0 (labelled x in [4, 5), as `WHERE x >= 4 AND x < 5` is) came back bit-identical to
/// that range's answer in every district without the target and in few with them (a red team,
/// 2026-12-05: 53 to 58 of 60 in two queries, numbers and dates alike). `code = 'K550'` asked
/// alone took a target coded `K55` from its prefix's cell, and beside `GROUP BY substr(code,
/// 1, 3)`, whose bucket `K55` it cuts, did not: apart exactly when the target was there (a red
/// team, 2026-12-05, later: 50 of 50 districts, the target's code 49 of 50 between two values;
/// a day beside a month key and an instant beside a day key, 49 of 50).
fn conditions_whole_buckets(plan: &LogicalPlan) -> Result<(), Violation> {
    let Some((key, column)) = crate::rewrite::anonymize::key_cut_by_conditions(plan) else { return Ok(()) };
    Err(Violation::new(
        Rule::AnonCondition,
        Some(column.clone()),
        format!(
            "the conditions on `{column}` cut the buckets of the key `{}` on the same column: beside a key on its column, conditions select whole buckets of it; widen the conditions, or group by a finer key",
            shown(&key)
        ),
    ))
}

/// Every cast of a person's value in a condition or key (`read`, as read at the scans of
/// `plan`) maps distinct values to distinct values, in their order: a wider integer, a number
/// to a float, a date to a timestamp, a timestamp to a finer unit, text to text, a boolean to a
/// number. A cast that merges values (a float to an integer, a timestamp to a date, text to a
/// number) is refused: ask by the column, through a band, `date_trunc` or a prefix.
///
/// Why: labels name a column without its casts, so `CAST(x AS BIGINT) = 0` was labelled as
/// `x = 0` while selecting every x in (−1, 1), `CAST(ts AS DATE) = '2024-03-05'` as the instant
/// of midnight while selecting the day, and `CAST(code AS BIGINT) = 7` as `code = '7'` while
/// also selecting `'07'`. The same label over other people: with nobody between the two
/// spellings, the answers were bit-identical, and they differed exactly where the target was
/// (a red team, 2026-12-05: membership 48 of 48 districts in two queries, over floats, times
/// and codes, and the target's day or code where present). A one-to-one cast selects, under an
/// equality or a range, what the same condition on the column does.
fn casts_one_to_one(plan: &LogicalPlan, read: &[&Expr]) -> Result<(), Violation> {
    // Conditions and keys as read at the scans: their columns are the scans' own.
    let mut scans = datafusion::common::DFSchema::empty();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans.merge(&scan.projected_schema);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|_| shape("a plan that cannot be walked"))?;
    for e in read {
        let mut merging = None;
        e.apply(|x| {
            let (Expr::Cast(datafusion::logical_expr::Cast { expr, field })
            | Expr::TryCast(datafusion::logical_expr::TryCast { expr, field })) = x
            else {
                return Ok(TreeNodeRecursion::Continue);
            };
            if expr.column_refs().is_empty() {
                return Ok(TreeNodeRecursion::Continue);
            }
            let one_to_one = datafusion::logical_expr::ExprSchemable::get_type(expr.as_ref(), &scans)
                .is_ok_and(|from| one_to_one(&from, field.data_type()));
            if one_to_one {
                Ok(TreeNodeRecursion::Continue)
            } else {
                merging = Some(x.clone());
                Ok(TreeNodeRecursion::Stop)
            }
        })
        .map_err(|_| shape("a condition that cannot be walked"))?;
        if let Some(cast) = merging {
            let column = cast.column_refs().into_iter().next().map(|c| c.name.clone());
            return Err(Violation::new(
                Rule::AnonCondition,
                column,
                format!(
                    "`{}` casts a value to a type that merges values: an anonymized answer's conditions, keys and joins cast only one to one (a wider number, a date to a timestamp, within one time zone); ask by the column itself, a band `floor(x / w)`, `date_trunc`, or a prefix `substr(c, 1, n)`, and join columns of one type",
                    cast.schema_name()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a cast from `from` to `to` maps distinct values to distinct values, in their order
/// ([`casts_one_to_one`]). An integer of 64 bits to a float rounds beyond 2⁵³, which an
/// anonymized answer never reads (the query layer reads a 64-bit integer beyond ±2⁵² as NULL:
/// `t < 1.8e18` and `t < 1800000000000000000` held a target at 1799999999999999900 apart, a red
/// team, 2026-12-06); the float then still orders as the integer. A
/// decimal widens to a decimal with as many digits before and after the point (type coercion
/// does so to compare `c_acctbal >= 0`), or to a float where it has at most 15 digits.
fn one_to_one(from: &datafusion::arrow::datatypes::DataType, to: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType::{
        Boolean, Date32, Date64, Decimal128, Decimal256, Dictionary, Float16, Float32, Float64, Int8, Int16, Int32,
        Int64, LargeUtf8, Timestamp, UInt8, UInt16, UInt32, UInt64, Utf8, Utf8View,
    };
    /// A decimal type's digits before and after the point.
    fn decimal(t: &datafusion::arrow::datatypes::DataType) -> Option<(i16, i16)> {
        match t {
            Decimal128(p, s) | Decimal256(p, s) => Some((i16::from(*p) - i16::from(*s), i16::from(*s))),
            _ => None,
        }
    }
    /// An integer type's range as (signed, bits).
    fn integer(t: &datafusion::arrow::datatypes::DataType) -> Option<(bool, u32)> {
        Some(match t {
            Int8 => (true, 8),
            Int16 => (true, 16),
            Int32 => (true, 32),
            Int64 => (true, 64),
            UInt8 => (false, 8),
            UInt16 => (false, 16),
            UInt32 => (false, 32),
            UInt64 => (false, 64),
            _ => return None,
        })
    }
    if from == to {
        return true;
    }
    if let (Some((from_signed, from_bits)), Some((to_signed, to_bits))) = (integer(from), integer(to)) {
        return match (from_signed, to_signed) {
            (true, false) => false,
            (false, true) => to_bits > from_bits,
            _ => to_bits >= from_bits,
        };
    }
    if let (Some((from_int, from_frac)), Some((to_int, to_frac))) = (decimal(from), decimal(to)) {
        return to_int >= from_int && to_frac >= from_frac;
    }
    match (from, to) {
        (Dictionary(_, value), to) => one_to_one(value, to),
        (from, Float64) => {
            integer(from).is_some()
                || matches!(from, Float16 | Float32 | Boolean)
                || decimal(from).is_some_and(|(int, frac)| int + frac <= 15)
        }
        (Float16, Float32) => true,
        (Boolean, to) => integer(to).is_some() || matches!(to, Float32),
        // Within one time zone, or none: a cast into another zone (`AT TIME ZONE`, a zoned
        // column cast to a plain timestamp) keeps the instant but moves its clock, and a part
        // or truncation of it put a target a few hours from a month's end in the next month
        // under the bare column's label (a red team, 2026-12-06: membership 60 of 60 districts
        // in two queries, and the target's hour in nine).
        (Date32, Date64 | Timestamp(_, None)) => true,
        (Timestamp(from_unit, from_zone), Timestamp(to_unit, to_zone)) => {
            from_zone == to_zone && finer_or_same(*from_unit, *to_unit)
        }
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        _ => false,
    }
}

/// Whether a timestamp of unit `to` holds every instant of unit `from`.
fn finer_or_same(from: datafusion::arrow::datatypes::TimeUnit, to: datafusion::arrow::datatypes::TimeUnit) -> bool {
    use datafusion::arrow::datatypes::TimeUnit::{Microsecond, Millisecond, Nanosecond, Second};
    let rank = |u| match u {
        Second => 0,
        Millisecond => 1,
        Microsecond => 2,
        Nanosecond => 3,
    };
    rank(to) >= rank(from)
}

/// A week (`date_trunc('week', d)`, `date_part('week', d)`), and a part of a date that repeats
/// (`date_part` to a day of the month, a month or a quarter of the year), is the only
/// restriction of its column: every condition and key on `d` is that same generalization.
///
/// Why: weeks do not nest in months, quarters or years, so a week beside a range on the grid
/// is cut by it, and the cells a range or an equality measures around itself (the grid's) never
/// hold the rest of the week. Under a quarter's range, the week of 2024-09-30 was answered
/// without the range when it removed almost nobody from the week (the target alone, on
/// 2024-10-02), under the label of the one day 2024-09-30, which `d = '2024-09-30'` also gets
/// and never with the target: the two answers were bit-identical exactly when the target was
/// not there (a red team, 2026-12-05: 59 of 60 districts in two queries, also through a join and
/// with `date_trunc('month', d)` as a second key). A repeating part is cut by any range or
/// other key on its column the same way: the day 15 of every month beside August's range, as a
/// key, had the range left out where it removed only the target (on 15 February) from the
/// key's cell, and as a condition beside the range kept it; the two sums were equal exactly
/// when the target was not there (a red team, 2026-12-05: 50 of 50 districts in two queries, and
/// the same with the month of the year beside a year, or the day beside `date_trunc('month',
/// d)`). Every such question has a spelling on the grid (`date_trunc` to the day or month with
/// a range).
fn repeating_parts_alone(read: &[&Expr]) -> Result<(), Violation> {
    let parts: Vec<(String, datafusion::common::Column)> = read.iter().filter_map(|e| repeating_part(e)).collect();
    for (part, column) in &parts {
        let other = read.iter().find(|e| {
            e.column_refs().contains(column) && !repeating_part(e).is_some_and(|(p, c)| p == *part && c == *column)
        });
        if let Some(other) = other {
            return Err(Violation::new(
                Rule::AnonCondition,
                Some(column.name.clone()),
                format!(
                    "`{}` is restricted by `{part}` and by `{}`: a week, or a day of the month, a month or a quarter of the year, does not nest in ranges of months and years, so beside another condition or key on its column it is cut by it; ask by it alone, or by `date_trunc` to the day, month or quarter with a range",
                    column.name,
                    shown(other)
                ),
            ));
        }
    }
    Ok(())
}

/// An IN list is the only restriction of what it lists: every other condition and key on its
/// column is the list's own expression (`GROUP BY district` beside `district IN (…)`).
///
/// Why: a list is no interval, so the labels leave it out, and low-effect detection leaves a
/// column's conditions out together. Beside a coarser key on the column (`GROUP BY
/// substr(code, 1, 2)`), the list alone was left out where it removed only the target from the
/// key's bucket (their code outside the list), while the same bucket asked as a condition beside
/// the list was left out with the list, removing many, and kept: the same label over other
/// people, bit-identical exactly when the target was not there (a red team, 2026-12-05: 269 of
/// 270 targets in two queries per dataset, over prefixes, number bands and months).
fn in_lists_alone(read: &[&Expr]) -> Result<(), Violation> {
    for list in read {
        let Expr::InList(InList { expr, .. }) = uncast(list) else { continue };
        let columns = expr.column_refs();
        let other = read.iter().find(|e| {
            !std::ptr::eq(*e, list)
                && e.column_refs().iter().any(|c| columns.contains(c))
                && uncast(e).to_string() != uncast(expr).to_string()
        });
        if let Some(other) = other {
            return Err(Violation::new(
                Rule::AnonCondition,
                columns.iter().next().map(|c| c.name.clone()),
                format!(
                    "an IN list on `{}` is beside `{}` on the same column: a list is the only condition on what it lists, and a key on it is the listed expression itself; drop one, or list the values the other selects",
                    shown(expr),
                    shown(other)
                ),
            ));
        }
    }
    Ok(())
}

/// The repeating part of a date `e` holds (`date_trunc('week')`, or `date_part` to anything but
/// the year), as `function('unit')`, and its column ([`repeating_parts_alone`]).
fn repeating_part(e: &Expr) -> Option<(String, datafusion::common::Column)> {
    use crate::rewrite::DateUnit;
    let mut found = None;
    let _ = e.apply(|x| {
        if let Expr::ScalarFunction(ScalarFunction { func, args }) = uncast(x)
            && let [unit, column] = args.as_slice()
            && let Some(u) = constant(unit)
            && let Some(date_unit) = DateUnit::of(&u)
            && match func.name() {
                "date_trunc" => date_unit == DateUnit::Week,
                "date_part" => date_unit != DateUnit::Year,
                _ => false,
            }
            && let Expr::Column(c) = uncast(column)
        {
            found = Some((format!("{}('{}', {})", func.name(), date_unit.name(), c.name), c.clone()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Checks the plan's shape: post-processing over one aggregate over rows of the admitted forms.
pub(crate) fn check(plan: &LogicalPlan) -> Result<(), Violation> {
    let mut node = plan;
    let agg = loop {
        match node {
            // The answer's aggregate is the one over rows; an aggregate above it reworks the
            // released groups (which the threshold has already filtered).
            LogicalPlan::Aggregate(agg) if !reads_aggregates(&agg.input) => break agg,
            LogicalPlan::Aggregate(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::SubqueryAlias(_) => {
                if has_subquery(node) {
                    return Err(shape("a subquery over the released numbers reads data outside the anonymization"));
                }
                let [input] = node.inputs()[..] else { return Err(shape("an unexpected plan node")) };
                node = input;
            }
            LogicalPlan::Union(_) => {
                return Err(shape("UNION combines answers inside the query, where one can be subtracted from another"));
            }
            _ => return Err(shape("this query is not one aggregate")),
        }
    };
    if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return Err(Violation::new(
            Rule::AnonGroupKey,
            None,
            "ROLLUP, CUBE and GROUPING SETS release totals whose differences are single groups; run one query per grouping",
        ));
    }
    for key in &agg.group_expr {
        if !is_key(key) {
            return Err(Violation::new(
                Rule::AnonGroupKey,
                None,
                format!(
                    "the group key `{}` is not a column or an allowed generalization (date_trunc or date_part to year, quarter, month, week or day; substr(column, 1, n))",
                    shown(key)
                ),
            ));
        }
    }
    rows(&agg.input)
}

/// Whether `plan` aggregates somewhere (an aggregate or DISTINCT).
pub(crate) fn reads_aggregates(plan: &LogicalPlan) -> bool {
    plan.exists(|n| Ok(matches!(n, LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_)))).unwrap_or(true)
}

/// Checks that `plan`, below the answer's aggregate, is rows of the admitted forms.
fn rows(plan: &LogicalPlan) -> Result<(), Violation> {
    if has_subquery(plan) {
        return Err(shape("a subquery below the aggregate can single out or subtract people"));
    }
    match plan {
        LogicalPlan::TableScan(scan) if scan.fetch.is_none() && scan.filters.is_empty() => {}
        LogicalPlan::SubqueryAlias(_) => {}
        LogicalPlan::Projection(p) => {
            if let Some(e) = p.expr.iter().find(|e| !is_key(e)) {
                return Err(shape(format!(
                    "`{}` computes a new value from people's rows before the aggregate; aggregate bare columns",
                    shown(e)
                )));
            }
        }
        LogicalPlan::Filter(f) => conditions(&f.predicate, f.input.schema())?,
        LogicalPlan::Join(j) => {
            // Before the optimizer, `ON a = b` may still be the join's filter rather than its keys.
            let equalities = j.filter.as_ref().map(split_conjunction).unwrap_or_default();
            let column_equality = |e: &&Expr| {
                matches!(uncast(e), Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right })
                    if is_column(left) && is_column(right))
            };
            let equi = j.on.iter().all(|(l, r)| is_column(l) && is_column(r))
                && equalities.iter().all(column_equality)
                && !(j.on.is_empty() && equalities.is_empty());
            if j.join_type != JoinType::Inner || !equi {
                return Err(shape(
                    "only inner joins on equal columns are allowed (people on equal privacy units); a cross, outer or non-equi join can multiply or pick out one person's rows",
                ));
            }
            // One pair of columns per join. A red team added a second equality beside the units
            // (`ON a.id = b.id AND a.district = b.res_district`, or two generalizations of one
            // column from two CTEs, `AND x.v = y.v`): a condition on people that no label
            // and no low-effect check saw, so the answer came back identical, bit for bit,
            // exactly when it removed nobody from a group, and gave a planted subsidy to one of
            // two values with no noise to average.
            if j.on.len() + equalities.len() != 1 {
                return Err(shape(
                    "a join compares one pair of columns in aggregate mode over people (their privacy units, or a lookup table's key); a second equality is a condition on people that escapes the noise and low-effect detection",
                ));
            }
        }
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => {
            return Err(shape(
                "an aggregate or DISTINCT below the answer's aggregate computes exact values outside it",
            ));
        }
        LogicalPlan::Window(_) => return Err(shape("a window function over people's rows")),
        LogicalPlan::Union(_) => return Err(shape("UNION over people's rows can pad or subtract a person")),
        LogicalPlan::Limit(_) | LogicalPlan::Sort(_) | LogicalPlan::TableScan(_) => {
            return Err(shape("LIMIT or ORDER BY below the aggregate picks rows by position"));
        }
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            return Err(shape("a constant table beside people's rows"));
        }
        _ => return Err(shape("this query shape")),
    }
    plan.inputs().into_iter().try_for_each(rows)
}

/// The most constants the IN lists of one query may hold in all. Each carries a noise layer of
/// its own (`rewrite::anonymize`), so the noise grows with the list; a long list is also the
/// padding a differencing attack draws fresh sets from.
pub const MAX_LISTED: usize = 16;

/// The most keys a WHERE clause may restrict (`=`, a range, an IN list, a boolean column): the
/// answer is measured once more without every combination of their conditions, for low-effect
/// detection (fifteen measurements for four).
pub(crate) const MAX_RESTRICTED: usize = 4;

/// Notes that the WHERE clause restricts `key` (once per key).
fn restricts(ranges: &mut Vec<(String, Option<ScalarValue>, Option<ScalarValue>)>, key: &Expr) {
    let name = shown(key);
    if !ranges.iter().any(|(k, _, _)| *k == name) {
        ranges.push((name, None, None));
    }
}

/// Checks a WHERE clause over rows of `schema`: ANDed conditions of the admitted forms, every
/// range closed on the key's grid, and none on a flag.
fn conditions(predicate: &Expr, schema: &datafusion::common::DFSchema) -> Result<(), Violation> {
    let mut ranges: Vec<(String, Option<ScalarValue>, Option<ScalarValue>)> = Vec::new();
    let mut listed = 0;
    for c in split_conjunction(predicate) {
        match uncast(c) {
            e if is_column(e) => restricts(&mut ranges, e),
            Expr::Not(inner) if is_column(inner) => restricts(&mut ranges, inner),
            Expr::InList(InList { expr, list, negated: false }) if is_key(expr) && list.iter().all(is_constant) => {
                restricts(&mut ranges, expr);
                listed += list.len();
                if listed > MAX_LISTED {
                    return Err(condition(format!(
                        "IN lists hold at most {MAX_LISTED} constants in all: each constant adds its own noise"
                    )));
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (key, op, value) = match (is_key(left), is_key(right)) {
                    (true, false) if is_constant(right) => (left, *op, right),
                    (false, true) if is_constant(left) => (right, flip(*op), left),
                    _ => return Err(condition(format!("`{}` is not `key <op> constant`", shown(c)))),
                };
                let Some(value) = constant(value) else {
                    return Err(condition(format!("`{}` compares with a value that is not a constant", shown(c))));
                };
                let name = shown(key);
                let slot = match ranges.iter().position(|(k, _, _)| *k == name) {
                    Some(i) => i,
                    None => {
                        ranges.push((name, None, None));
                        ranges.len() - 1
                    }
                };
                // A flag's only buckets are its values: a range on it (through a cast to a
                // number) is no bucket of the key on it, and was decided apart from that key
                // (a red team, 2026-12-06: `cast(b AS int) >= 1 AND cast(b AS int) < 2`
                // against the key `b`'s group `true` beside a range holding both values, apart
                // only with a target whose flag is NULL, 200 of 240 districts in two queries).
                //
                // So are a part of a date that repeats: its buckets are its values, each the
                // bucket of the key on it. A range on one (`date_part('month', d) >= 3 AND … <
                // 4`) was decided by its variant beside the equality's claims, under labels of
                // its own (a red team, 2026-12-06: no tell, but fresh draws of one group).
                if matches!(op, Operator::GtEq | Operator::Lt) {
                    if reads_a_flag(key, schema) {
                        return Err(condition(format!(
                            "`{}` is a range on a true/false column: ask by the column, its NOT, or `= true` / `= false`",
                            shown(c)
                        )));
                    }
                    if repeating_part(key).is_some_and(|(part, _)| part.starts_with("date_part(")) {
                        return Err(condition(format!(
                            "`{}` is a range on a part of a date that repeats: ask for its values, `= v` or `IN (v, …)`",
                            shown(c)
                        )));
                    }
                }
                match op {
                    Operator::Eq => {}
                    Operator::GtEq if ranges[slot].1.is_none() => ranges[slot].1 = Some(value),
                    Operator::Lt if ranges[slot].2.is_none() => ranges[slot].2 = Some(value),
                    _ => {
                        return Err(condition(format!(
                            "`{}`: conditions are `key = constant`, `key IN (constants)` or a range `key >= lo AND key < hi`; `<>`, `<=`, `>`, NOT and OR single people out by complement or by a step of one",
                            shown(c)
                        )));
                    }
                }
            }
            other => {
                return Err(condition(format!(
                    "`{}` is not one of the conditions aggregate mode admits on people's rows: `key = constant`, `key IN (constants)`, a boolean column, or a range `key >= lo AND key < hi` on the key's grid",
                    shown(other)
                )));
            }
        }
    }
    if ranges.len() > MAX_RESTRICTED {
        return Err(condition(format!(
            "conditions restrict at most {MAX_RESTRICTED} keys (=, ranges, IN lists, boolean columns): the answer is measured without every combination of them"
        )));
    }
    for (key, lo, hi) in ranges {
        match (lo, hi) {
            (None, None) => {}
            (Some(lo), Some(hi)) if on_grid(&lo, &hi) => {}
            (Some(_), Some(_)) => {
                return Err(condition(format!(
                    "the range on `{key}` does not lie on its grid: a number range's width is 1, 2 or 5 times a power of ten and its start a multiple of it; a date range runs from the first of a month over 1, 3 or 6 months (aligned) or whole years from January"
                )));
            }
            _ => {
                return Err(condition(format!(
                    "the range on `{key}` is open: give both ends, `{key} >= lo AND {key} < hi`, on the key's grid"
                )));
            }
        }
    }
    Ok(())
}

/// Whether `key`, over rows of `schema`, is a boolean or a cast of one.
fn reads_a_flag(key: &Expr, schema: &datafusion::common::DFSchema) -> bool {
    use datafusion::logical_expr::ExprSchemable;
    let mut flag = false;
    let _ = key.apply(|e| {
        flag |= e.get_type(schema).is_ok_and(|t| t == datafusion::arrow::datatypes::DataType::Boolean);
        Ok(if flag { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    flag
}

/// An expression of the analyst's query as SQL for a refusal (`floor(subsidy / 500) * 500`), not
/// as DataFusion names it (`Int64(500) * floor(...)`); casts type coercion added are left out.
fn shown(e: &Expr) -> String {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let bare = e
        .clone()
        .transform_up(|x| match x {
            Expr::Cast(c) => Ok(Transformed::yes(*c.expr)),
            Expr::TryCast(c) => Ok(Transformed::yes(*c.expr)),
            Expr::Alias(a) => Ok(Transformed::yes(*a.expr)),
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(datafusion::common::Column::new_unqualified(c.name)))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| e.clone());
    datafusion::sql::unparser::Unparser::default()
        .with_pretty(true)
        .expr_to_sql(&bare)
        .map_or_else(|_| e.schema_name().to_string(), |sql| sql.to_string())
}

/// `a op b` as `b flip(op) a`.
fn flip(op: Operator) -> Operator {
    match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        other => other,
    }
}

fn is_column(e: &Expr) -> bool {
    matches!(uncast(e), Expr::Column(_))
}

fn is_constant(e: &Expr) -> bool {
    constant(e).is_some()
}

/// The value of a constant, with the casts around it applied.
pub(crate) fn constant(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        Expr::Cast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
        Expr::TryCast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
        Expr::Alias(a) => constant(&a.expr),
        _ => None,
    }
}

/// Whether `e` is a column or one allowed generalization of a column: a date truncated or a
/// date part, a text prefix, or a number floored to a grid of 1, 2 or 5 times a power of ten
/// (`floor(x / w)` or `floor(x / w) * w`, where x may be a date part).
fn is_key(e: &Expr) -> bool {
    match uncast(e) {
        Expr::Column(_) => true,
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Multiply, right }) => {
            floored(left).is_some_and(|w| constant(right).and_then(|r| number(&r)).is_some_and(|r| r == w))
        }
        Expr::ScalarFunction(_) if floored(e).is_some() => true,
        Expr::ScalarFunction(ScalarFunction { func, args }) => match (func.name(), args.as_slice()) {
            ("date_trunc" | "date_part", [unit, column]) => {
                // The units a date generalization may go to: year, quarter, month, week, day.
                is_column(column) && constant(unit).is_some_and(|u| crate::rewrite::DateUnit::of(&u).is_some())
            }
            // A prefix of at least one character: `substr(code, 1, 0) = ''` says only that the
            // code is not NULL, under a label of its own.
            ("substr", [column, start, length]) => {
                is_column(column)
                    && constant(start).is_some_and(|s| s.to_string() == "1")
                    && constant(length).and_then(|n| number(&n)).is_some_and(|n| n >= 1.0 && n.fract() == 0.0)
            }
            _ => false,
        },
        _ => false,
    }
}

/// The grid step `w` of `floor(x / w)`, where x is a column or a date part and `w` is 1, 2 or 5
/// times a power of ten.
fn floored(e: &Expr) -> Option<f64> {
    let (left, right) = crate::grid::floor_parts(e)?;
    let w = constant(right).and_then(|w| number(&w))?;
    // A band of years (a decade); no band of a part of a date that repeats, whose values are
    // asked as values: `floor(date_part('day', d) / 10) * 10` was labelled apart from the days
    // it holds, fresh draws of one group (a red team, 2026-12-06).
    let year = |f: &ScalarFunction| {
        f.args.first().and_then(constant).and_then(|u| crate::rewrite::DateUnit::of(&u))
            == Some(crate::rewrite::DateUnit::Year)
    };
    let inner_ok = is_column(left)
        || matches!(uncast(left), Expr::ScalarFunction(f) if f.func.name() == "date_part" && year(f) && is_key(left));
    (inner_ok && on_grid(&ScalarValue::Float64(Some(0.0)), &ScalarValue::Float64(Some(w)))).then_some(w)
}

/// Whether `[lo, hi)` lies on its grid: for numbers a width of 1, 2 or 5 times a power of ten
/// with `lo` a multiple of it; for dates and timestamps (at midnight) from the first of a month
/// over 1, 3 or 6 months aligned to them, or whole years from January.
fn on_grid(lo: &ScalarValue, hi: &ScalarValue) -> bool {
    if let (Some(lo), Some(hi)) = (month_start(lo), month_start(hi)) {
        let months = hi - lo;
        let first_month = lo.rem_euclid(12);
        return match months {
            1 => true,
            3 | 6 => first_month % months == 0,
            // Whole years, 1, 2 or 5 × 10ⁿ of them, from a year that is a multiple of the
            // count (1950–1960, not 1951–1961): a date lies in one such range per width, so
            // ranges cannot offer an attacker hundreds of people sets around one person.
            m if m > 0 && m % 12 == 0 && first_month == 0 => {
                let (years, year) = (m / 12, 1970 + lo.div_euclid(12));
                Step::of(years as f64).is_some() && year.rem_euclid(years) == 0
            }
            _ => false,
        };
    }
    let (Some(lo), Some(hi)) = (number(lo), number(hi)) else { return false };
    // Both ends exactly the ends of one band, as the floats their decimals are read as (`grid`):
    // `[0.2, 0.30000000000000004)` is a float past the band `[0.2, 0.3)`.
    let Some(step) = Step::of(hi - lo) else { return false };
    let band = step.index(lo);
    step.edge(band) == lo && step.edge(band + 1.0) == hi
}

/// A numeric constant's value as a float, where a float holds it as itself: the guard reads
/// grids and labels as floats, and two constants one float apart were one label over other
/// rows. `amt >= '0.199999999999999999'` over a decimal column (the text cast to the column's
/// decimal exactly) was on the grid and labelled as `amt >= 0.2`, and held a target at that
/// value where `amt >= 0.2` did not (a red team, 2026-12-06: membership 60 of 60 districts in
/// two queries). A decimal of more than 15 significant digits, or an integer no float holds,
/// is no number here (the query layer reads such columns as floats: `exact.rs`).
pub(crate) fn number(v: &ScalarValue) -> Option<f64> {
    if !v.data_type().is_numeric() {
        return None;
    }
    /// Significant digits of an unsigned magnitude written in decimal.
    fn digits(magnitude: &str) -> usize {
        magnitude.trim_start_matches('0').trim_end_matches('0').len()
    }
    let exact = match v {
        ScalarValue::Int64(Some(x)) => (*x as f64) as i128 == i128::from(*x),
        ScalarValue::UInt64(Some(x)) => (*x as f64) as u128 == u128::from(*x),
        ScalarValue::Decimal128(Some(x), ..) => digits(&x.unsigned_abs().to_string()) <= 15,
        ScalarValue::Decimal256(Some(x), ..) => digits(x.to_string().trim_start_matches('-')) <= 15,
        _ => true,
    };
    if !exact {
        return None;
    }
    v.cast_to(&datafusion::arrow::datatypes::DataType::Float64).ok().and_then(|f| match f {
        ScalarValue::Float64(x) => x,
        _ => None,
    })
}

/// Months since January 1970 of a date or timestamp that falls at midnight on the first of a
/// month; `None` for anything else.
fn month_start(v: &ScalarValue) -> Option<i64> {
    use chrono::Datelike;
    let day = crate::rewrite::midnight(v)?;
    (day.day() == 1).then(|| i64::from(day.year() - 1970) * 12 + i64::from(day.month0()))
}

/// The bounds an average of `column` is clamped to: its declared ones, or [0, 1] for a boolean
/// (`boolean`: the argument is one, cast to a number); `None` where no average is admitted.
fn averaged(column: &crate::lineage::SourceColumn, boolean: bool) -> Option<(f64, f64)> {
    column.bounds.or(boolean.then_some((0.0, 1.0)))
}

/// Classifies one aggregate of an anonymized answer, or refuses it.
/// `boolean` says the argument is a boolean column (cast to a number, true as 1): bounded by its
/// type to `[0, 1]`.
pub(crate) fn aggregate(
    f: &AggregateFunction,
    args: &[ColumnLineage],
    sources: &Sources,
    boolean: bool,
) -> Result<DpAggregate, Violation> {
    let name = f.func.name();
    let refuse = |column: Option<String>, message: String| Err(Violation::new(Rule::AnonAggregate, column, message));
    if f.params.filter.is_some() {
        return refuse(
            None,
            format!(
                "{}(…) FILTER (WHERE …) counts some rows while the threshold counts everybody in the group; put the condition in WHERE or make it a group key",
                name.to_uppercase()
            ),
        );
    }
    if !f.params.order_by.is_empty() {
        return refuse(None, format!("{} with ORDER BY", name.to_uppercase()));
    }
    // A value cast to another type is still the person's value (type coercion casts the
    // argument of AVG); a unit cast other than one-to-one no longer names one person.
    let (bare, person) = match args {
        [a] if !a.aggregated => (a.bare, a.bare.filter(|_| !a.recast)),
        _ => (None, None),
    };
    match name {
        "count" if f.params.distinct => match person {
            Some(src) if sources.get(src).unit => Ok(DpAggregate::CountPeople),
            _ => {
                refuse(None, "COUNT(DISTINCT …) over people counts people only: COUNT(DISTINCT <privacy unit>)".into())
            }
        },
        // COUNT(column) counts the rows where the column is not NULL: the count of values an
        // average of the column divides by, and drawn as that one is (the rewrite names it so:
        // `anonymize::measured_quantities`), never with COUNT(*)'s noise. Sharing it, the
        // difference from the row count was the group's NULLs exactly: a red team read whether
        // each of 100 planted people had a NULL phone, one query each, never wrong. Only where
        // an average is admitted (declared bounds, or a boolean), so that it says what
        // `sum / avg` says: of a text column it was a count of NULLs no other aggregate gives,
        // and averaged over 64 routes through code tables it told whether the target's was
        // NULL, 48 of 50 (a red team, 2026-12-06).
        "count" => match f.params.args.as_slice() {
            [Expr::Literal(v, _)] if !v.is_null() => Ok(DpAggregate::CountRows),
            _ => match bare.map(|src| sources.get(src)) {
                Some(c) if averaged(c, boolean).is_some() => Ok(DpAggregate::CountRows),
                Some(c) => refuse(
                    Some(c.name.clone()),
                    format!(
                        "COUNT(`{}`): a count of a column's values is released where its average is, a column with declared bounds (its steward can declare them at registration); count the rows with COUNT(*)",
                        c.name
                    ),
                ),
                None => refuse(
                    None,
                    "COUNT takes *; a COUNT of an expression (CASE, NULLIF, …) counts a chosen person".into(),
                ),
            },
        },
        "sum" | "avg" => {
            if f.params.distinct {
                return refuse(None, format!("{} of DISTINCT values", name.to_uppercase()));
            }
            let Some(src) = bare else {
                return refuse(
                    None,
                    format!(
                        "{} takes a bare column with declared bounds, not an expression: powers, CASE and arithmetic can make a sum reveal one person's value",
                        name.to_uppercase()
                    ),
                );
            };
            let column = sources.get(src);
            match averaged(column, boolean) {
                Some((lo, hi)) => {
                    Ok(if name == "sum" { DpAggregate::Sum { lo, hi } } else { DpAggregate::Avg { lo, hi } })
                }
                None => refuse(
                    Some(column.name.clone()),
                    format!(
                        "`{}` has no declared bounds, so one person's extreme value would show in its {}; its steward can declare bounds at registration",
                        column.name,
                        name.to_uppercase()
                    ),
                ),
            }
        }
        other => refuse(
            None,
            format!(
                "`{other}` over people is not released (MIN, MAX, medians, percentiles and moments reveal single values); aggregate mode releases COUNT, COUNT(DISTINCT <privacy unit>), SUM and AVG of bounded columns"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    /// Type coercion's own casts stay admitted (a wider integer, a decimal widened to compare
    /// with a constant, a date to the timestamp `date_trunc` takes); casts that merge values
    /// are refused.
    #[test]
    fn casts_that_keep_values_apart_are_one_to_one() {
        use datafusion::arrow::datatypes::DataType::{Date32, Decimal128, Float64, Int32, Int64, Timestamp, Utf8};
        use datafusion::arrow::datatypes::TimeUnit::{Nanosecond, Second};
        for (from, to) in [
            (Int32, Int64),
            (Int64, Float64),
            (Decimal128(15, 2), Decimal128(22, 2)),
            (Decimal128(15, 2), Float64),
            (Date32, Timestamp(Nanosecond, None)),
            (Timestamp(Second, None), Timestamp(Nanosecond, None)),
        ] {
            assert!(super::one_to_one(&from, &to), "{from} to {to}");
        }
        for (from, to) in [
            (Float64, Int64),
            (Int64, Int32),
            (Decimal128(15, 2), Decimal128(15, 0)),
            (Decimal128(38, 10), Float64),
            (Timestamp(Nanosecond, None), Date32),
            (Timestamp(Nanosecond, None), Timestamp(Second, None)),
            (Utf8, Int64),
            (Int64, Utf8),
        ] {
            assert!(!super::one_to_one(&from, &to), "{from} to {to}");
        }
    }

    use datafusion::common::ScalarValue;

    use super::month_start;

    /// A constant is a number where a float holds it as itself: no decimal of more than 15
    /// significant digits, no integer beyond what a float holds.
    #[test]
    fn numbers_are_constants_a_float_holds_as_themselves() {
        let decimal = |v: i128| ScalarValue::Decimal128(Some(v), 38, 18);
        assert_eq!(super::number(&decimal(200_000_000_000_000_000)), Some(0.2));
        assert_eq!(super::number(&decimal(-123_456_789_012_345_000_000)), Some(-123.456_789_012_345));
        assert_eq!(super::number(&decimal(199_999_999_999_999_999)), None);
        assert_eq!(super::number(&ScalarValue::Int64(Some(10_000_000_000_000_000))), Some(1e16));
        assert_eq!(super::number(&ScalarValue::Int64(Some((1 << 53) + 1))), None);
        assert_eq!(super::number(&ScalarValue::Int64(Some(i64::MAX))), None);
        assert_eq!(super::number(&ScalarValue::UInt64(Some(u64::MAX))), None);
    }

    #[test]
    fn months_start_on_their_first_day_at_midnight() {
        let date = |d: &str| ScalarValue::from(d).cast_to(&datafusion::arrow::datatypes::DataType::Date32).unwrap();
        assert_eq!(month_start(&date("1970-01-01")), Some(0));
        assert_eq!(month_start(&date("2024-01-01")), Some(54 * 12));
        assert_eq!(month_start(&date("2024-02-29")), None);
        assert_eq!(month_start(&date("1969-12-01")), Some(-1));
        let noon = ScalarValue::TimestampSecond(Some(19_723 * 86_400 + 43_200), None);
        assert_eq!(month_start(&noon), None);
        // A fraction of a second after midnight, or before it (1960), is no midnight.
        let day = 86_400_000_000_000_i64;
        let half = ScalarValue::TimestampNanosecond(Some(19_723 * day + 500_000_000), None);
        assert_eq!(month_start(&half), None);
        let before = ScalarValue::TimestampNanosecond(Some(-3_653 * day - 500_000_000), None);
        assert_eq!(month_start(&before), None);
        let micro = ScalarValue::TimestampMicrosecond(Some(19_723 * 86_400_000_000 + 1), None);
        assert_eq!(month_start(&micro), None);
        assert_eq!(month_start(&ScalarValue::TimestampNanosecond(Some(19_723 * day), None)), Some(54 * 12));
        // Text is no date.
        assert_eq!(month_start(&ScalarValue::from("2024-01-01")), None);
    }
}
