//! Each person's rows per dataset are capped **before** joins, so the size of every join over
//! people has a bound known at planning. Contributions are also bounded after the join (per
//! group, in the dp and anonymized rewrites), but a bound after a join comes too late for its
//! cost: one person with 40 visits joined with itself five times is 10⁸ rows, and whether such
//! a query is slow, runs out of memory or misses its deadline tells whether that person exists,
//! with no noise at all.
//!
//! Each dataset about people that the plan below the answer's aggregate scans, unless every
//! person is one row in it, keeps at most `max_groups × max_rows` rows per person (the most one
//! person may contribute from it anyway), right at the scan, before any filter:
//! `ROW_NUMBER() OVER (PARTITION BY unit ORDER BY __veil_row_hash(row)) <= cap`. The order is a
//! hash of each row's values, so the rows kept are a function of the person's rows alone and
//! the same at every asking: with a random sample a red team asked an anonymized join with a
//! filter eight times and got eight counts (which of a person's rows the filter matched, so the
//! people and the noise, changed each time), noise that averaging strips. In dp mode always,
//! also without joins: what a query does with the rows a filter lets through takes time, and a
//! person with 20,000 events made a query measurably slower exactly when an `IN`/`EXISTS`
//! subquery on their traits let their events through; capped at the scan, one person's rows
//! cost the same few rows' work whatever they hold, and dp counts no more of them anyway. In
//! anonymized plans only with joins: there the cap would change what a count of rows means (a
//! person's every visit counts, flattened, not `max_rows` of them), and the anonymized shape
//! admits no subquery; a plain filter over a person's many rows is turned into a mask by the
//! engine instead (every row goes through the same work, matched or not: `release::masked` in
//! the query crate).
//!
//! Only the rows of people who have more than the cap are ranked: a first pass counts each
//! person's rows, people within the cap keep all of theirs (a semi join with those people, no
//! hash, no sort), and the others' rows are ranked as above (a semi join with them, then the
//! window). The rows kept are the same; the sort of every row, which made a join over 1.5 M
//! TPC-H orders ten times slower than the join itself, is gone where nobody exceeds the cap.
//! The work depends on how many rows the people over the cap have, which is a property of the
//! dataset version, not of the query: the cap stands before every filter, so no condition of
//! the query decides which rows are ranked. (A NULL unit is one person, as it is one
//! partition of the ranking.)
//!
//! Capped while the query runs, every stored row is still read first: a red team timed twin
//! datasets, one with a planted person of 3,000 rows, and dp queries over it took 36–64 ms
//! against 16–26 ms (medians), telling roughly how many rows are stored, with no noise on it.
//! So each version about people is capped once more when it is registered, keeping the same
//! cap of each person's rows in a stored copy (`veil_ingest::write_capped`; its rows are also
//! those whose values hash lowest): where the dataset says it has one ([`CapAt::Stored`]), its
//! scan reads the copy instead, and a query reads at most the cap of anybody's rows; where
//! nobody has more than the cap ([`CapAt::Within`]) nothing is capped; versions registered
//! before the copy existed ([`CapAt::Query`]) are capped as above.
//!
//! When the plan joins (inner or outer) or has subqueries (which run as joins), a dataset
//! about nobody (a code table) can meet one row in at most all of its rows, its public row
//! count. The product of the caps and of those row counts bounds one person's rows after the
//! joins; a plan whose product exceeds [`MAX_JOINED_ROWS_PER_PERSON`] is refused. (Without the
//! code tables in the product, one person's row joined twice to a code table with 2,000 rows
//! per code became 4·10⁶ rows and a timeout exactly when that person matched a filter.) Sampling one person's
//! rows depends on that person alone, so it changes no privacy guarantee; where a person has
//! more rows than the cap, counts come out lower, as they do under the per-group bound.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError, NullEquality, Result};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, JoinType, LogicalPlan, LogicalPlanBuilder, TableScanBuilder, col, lit,
};
use veil_common::Mode;

use super::bound_contributions::DP_PREFIX;
use super::enforce_min_group_size::{Threaded, Threshold};
use crate::{CapAt, GuardContext, Rule, Violation};

/// The most rows one person may have after the joins of one query.
pub(crate) const MAX_JOINED_ROWS_PER_PERSON: u64 = 1024;

/// `input` (the rows below an answer's aggregate) with its privacy units carried up
/// ([`Threshold::thread`]) and then its scans capped ([`cap_at_scans`]), in that order: the
/// cap's own aggregate and joins are not the query's and must not be threaded or thresholded.
///
/// # Errors
/// As [`cap_at_scans`], and when a unit cannot be carried up.
pub(super) fn threaded_and_capped(input: LogicalPlan, threshold: &mut Threshold<'_>) -> Result<Threaded> {
    let Threaded { plan, units } = threshold.thread(input)?;
    Ok(Threaded { plan: cap_at_scans(plan, threshold.ctx())?, units })
}

/// `input` with each person's rows capped per dataset at its scans, before filters and joins:
/// always in dp mode, else when it joins.
///
/// # Errors
/// A [`Violation`] (inside the DataFusion error) when the caps' product exceeds
/// [`MAX_JOINED_ROWS_PER_PERSON`]; a DataFusion error if a node cannot be rebuilt.
fn cap_at_scans(input: LogicalPlan, ctx: &GuardContext) -> Result<LogicalPlan> {
    let joins = joins(&input)?;
    if !joins && ctx.mode != Mode::Dp {
        return Ok(input);
    }
    let mut product: u64 = 1;
    input.apply_with_subqueries(|node| {
        if let Some((by, _)) = factor(node, ctx) {
            product = product.saturating_mul(by);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if joins && product > MAX_JOINED_ROWS_PER_PERSON {
        return Err(DataFusionError::External(Box::new(Violation::new(
            Rule::JoinRowsPerPerson,
            None,
            format!(
                "these joins can give one person up to {product} rows (each dataset's rows per person, max_groups × max_rows, and each joined table about nobody's row count, multiplied); at most {MAX_JOINED_ROWS_PER_PERSON} are admitted: join fewer or smaller tables, or the same one fewer times"
            ),
        ))));
    }
    let mut next = 0;
    input
        .transform_up_with_subqueries(|node| {
            let (Some((cap, Some(unit))), LogicalPlan::TableScan(scan)) = (factor(&node, ctx), &node) else {
                return Ok(Transformed::no(node));
            };
            let (schema, table) = (scan.table_name.schema(), scan.table_name.table());
            match ctx.dataset(schema, table).map(|d| d.capped) {
                Some(CapAt::Within) => return Ok(Transformed::no(node)),
                Some(CapAt::Stored) => {
                    if let Some(copy) = ctx.capped_copy(schema, table) {
                        // The same name: the columns above keep their qualifier.
                        let capped = TableScanBuilder::new(scan.table_name.clone(), Arc::clone(copy))
                            .with_projection(scan.projection.clone())
                            .with_filters(scan.filters.clone())
                            .with_fetch(scan.fetch)
                            .build()?;
                        return Ok(Transformed::yes(LogicalPlan::TableScan(capped)));
                    }
                }
                Some(CapAt::Query) | None => {}
            }
            let columns: Vec<Expr> = node.schema().iter().map(|(q, f)| Expr::Column(Column::from((q, f)))).collect();
            let unit = Column::new(Some(scan.table_name.clone()), unit);
            let (rank, rows, person) = (
                format!("{DP_PREFIX}cap_{next}"),
                format!("{DP_PREFIX}cap_rows_{next}"),
                format!("{DP_PREFIX}cap_unit_{next}"),
            );
            next += 1;
            // The people with more than `cap` rows, or with at most `cap`.
            let people = |over: bool| -> Result<LogicalPlan> {
                // COUNT is an Int64, ROW_NUMBER a UInt64.
                let (rows_of, cap) = (col(rows.as_str()), i64::try_from(cap).unwrap_or(i64::MAX));
                LogicalPlanBuilder::from(node.clone())
                    .aggregate(vec![Expr::Column(unit.clone()).alias(&person)], vec![count(lit(1)).alias(&rows)])?
                    .filter(if over { rows_of.gt(lit(cap)) } else { rows_of.lt_eq(lit(cap)) })?
                    .project(vec![col(person.as_str())])?
                    .build()
            };
            // A NULL unit is one person here, as it is one partition of the ranking.
            let of = |over: bool| -> Result<LogicalPlanBuilder> {
                LogicalPlanBuilder::from(node.clone()).join_detailed(
                    people(over)?,
                    JoinType::LeftSemi,
                    (vec![unit.clone()], vec![Column::from_name(person.as_str())]),
                    None,
                    NullEquality::NullEqualsNull,
                )
            };
            let numbered = row_number()
                .partition_by(vec![Expr::Column(unit.clone())])
                .order_by(vec![super::people::row_hash(columns.clone()).sort(true, false)])
                .build()?
                .alias(&rank);
            let ranked = of(true)?
                .window(vec![numbered])?
                .filter(col(rank.as_str()).lt_eq(lit(cap)))?
                .project(columns)?
                .build()?;
            let capped = of(false)?.union(ranked)?.alias(scan.table_name.clone())?.build()?;
            Ok(Transformed::yes(capped))
        })
        .map(|t| t.data)
}

/// The datasets whose rows per person [`cap_at_scans`] caps in `input`, named
/// `department.dataset`, each with its cap (`max_groups × max_rows`), in scan order, each once:
/// those about people, not one row a person, when the plan joins (or always, in dp mode). Said
/// in an anonymized answer, since a count of rows or a sum over them is then of the rows kept
/// (at most that many a person) and lower than the data's wherever somebody has more. From the
/// declarations alone: nothing says whether anybody has more.
///
/// # Errors
/// A DataFusion error if the plan cannot be walked.
pub(crate) fn capped(input: &LogicalPlan, ctx: &GuardContext) -> Result<Vec<(String, u64)>> {
    if !joins(input)? && ctx.mode != Mode::Dp {
        return Ok(Vec::new());
    }
    let mut capped = people_caps(input, ctx)?;
    let mut seen = std::collections::HashSet::new();
    capped.retain(|(name, _)| seen.insert(name.clone()));
    Ok(capped)
}

/// The most rows of one person an anonymized answer over `input` counts in a group: the
/// product of the caps (`max_groups × max_rows`) of the datasets about people it scans that are
/// not one row a person (1 where there are none). What a dataset's steward declares one person
/// contributes at most, as dp mode counts; beyond the joins' caps, a code table that repeats a
/// key may repeat a person's rows, which the measuring plan clamps to this.
///
/// # Errors
/// A DataFusion error if the plan cannot be walked.
pub(crate) fn rows_per_person(input: &LogicalPlan, ctx: &GuardContext) -> Result<u64> {
    Ok(people_caps(input, ctx)?.iter().fold(1u64, |rows, (_, cap)| rows.saturating_mul(*cap)))
}

/// Each scan in `input` of a dataset about people that is not one row a person, named
/// `department.dataset`, with its cap (`max_groups × max_rows`), in scan order.
fn people_caps(input: &LogicalPlan, ctx: &GuardContext) -> Result<Vec<(String, u64)>> {
    let mut caps = Vec::new();
    input.apply_with_subqueries(|node| {
        if let (Some((cap, Some(_))), LogicalPlan::TableScan(scan)) = (factor(node, ctx), node) {
            let name = match scan.table_name.schema() {
                Some(schema) => format!("{schema}.{}", scan.table_name.table()),
                None => scan.table_name.table().to_owned(),
            };
            caps.push((name, cap));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(caps)
}

/// Whether `input` joins rows (inner or outer) or has subqueries (which run as joins of their
/// own, and whose scans count in the caps' product: an over-estimate where they only filter,
/// never an under-estimate).
fn joins(input: &LogicalPlan) -> Result<bool> {
    let mut joins = false;
    input.apply_with_subqueries(|node| {
        joins |= matches!(node, LogicalPlan::Join(j)
            if matches!(j.join_type, JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full))
            || node.expressions().iter().any(has_subquery);
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(joins)
}

/// What a scan multiplies one person's rows by: its cap for a dataset about people (with the
/// unit to cap by, unless every person is one row in it), its row count for a dataset about
/// nobody (a row meets at most all of its rows); `None` for any other node.
fn factor(node: &LogicalPlan, ctx: &GuardContext) -> Option<(u64, Option<String>)> {
    let LogicalPlan::TableScan(scan) = node else { return None };
    let d = ctx.dataset(scan.table_name.schema(), scan.table_name.table())?;
    Some(match &d.privacy_unit {
        Some(_) if d.one_row_per_unit => (1, None),
        Some(unit) => (d.contribution.max_groups.max(1) * d.contribution.max_rows.max(1), Some(unit.clone())),
        None => (d.rows.max(1), None),
    })
}

/// Whether `expr` holds a subquery (`IN`, `EXISTS` or a scalar one).
fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::InSubquery(_) | Expr::Exists(_) | Expr::ScalarSubquery(_)))).unwrap_or(true)
}
