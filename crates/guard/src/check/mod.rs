//! The plan check: derives the lineage of every column of every node, bottom up, entering
//! subqueries, and applies the rules where they belong. Pure: no I/O, no state beyond the walk.
//!
//! Each mode's admitted shape is decided first, on the whole plan, by its own module
//! (`rules/dp_shape.rs`, `rules/anon_shape.rs`); then the walk visits every node
//! ([`walk`], one method per node kind) and expression ([`expr`], one method per expression
//! kind) and applies the rules of every mode (identifiers, totality, allow-listed functions).

mod expr;
mod walk;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Distinct, Expr, LogicalPlan, Operator};
use veil_common::Mode;

use crate::exprs::unalias;
use crate::rules::{anon_shape, dp_shape, return_only_aggregates};
use crate::{Contribution, DpAggregate, GuardContext, Reach, Rule, Violation};
use walk::Walk;

/// What the guard found in an allowed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The rules that applied and why, for `dry_run` and the audit record.
    pub rules: Vec<AppliedRule>,
    /// Whether any dataset read has a privacy unit (so thresholds apply).
    pub counts_people: bool,
    /// Dp mode, and aggregate mode over data about people: what each aggregate of the
    /// answer's aggregate computes, in its order.
    pub dp: Vec<DpAggregate>,
    /// Dp mode: the public domain of each group key, when every key is a column with one.
    pub dp_public_keys: Option<Vec<Vec<String>>>,
    /// Dp mode: how people's rows reach the answer's aggregate, and so its contribution bounds
    /// ([`GuardContext::reach`]).
    pub dp_reach: Reach,
    /// Aggregate mode over data about people: the answer has the anonymizing shape, and `dp`
    /// classifies its aggregates (sums and averages are clamped to their bounds).
    pub anonymized: bool,
}

/// One rule that shaped the answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppliedRule {
    /// Stable code.
    pub code: &'static str,
    /// What it did to this query.
    pub detail: String,
}

/// Decides whether `plan` may run in `ctx.mode`.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check(plan: &LogicalPlan, ctx: &GuardContext) -> Result<Assessment, Violation> {
    // Each mode's shape, on the whole plan, before any node is walked.
    let (reach, anonymized) = match ctx.mode {
        Mode::Deidentified => {
            return Err(Violation::new(
                Rule::DeidentifiedReadsExtracts,
                None,
                "deidentified mode reads approved extracts, never source datasets: ask for an extract with a de-identified access request",
            ));
        }
        Mode::Dp => (ctx.reach(&dp_shape::check(plan)?.input), false),
        Mode::Aggregate => {
            let anonymized = !ctx.exact_aggregates && anon_shape::applies(plan, ctx);
            if anonymized {
                anon_shape::check(plan)?;
                anon_shape::one_department(plan, ctx)?;
            }
            (Reach { contribution: Contribution::default(), one_row_per_person: false }, anonymized)
        }
    };
    let mut walk = Walk::new(ctx, reach.contribution, anonymized);
    let root = walk.plan(plan, &[])?;
    if anonymized {
        // After the walk, whose rules on identifiers and joins name the cause more closely.
        anon_shape::each_dataset_once(plan)?;
        anon_shape::one_dataset_per_column(plan)?;
        anon_shape::restrictions_per_column(plan)?;
    }
    return_only_aggregates::check_output(&root, plan.schema())?;
    match ctx.mode {
        Mode::Aggregate => {
            walk.note("return_only_aggregates", "every output column is an aggregate or a group key".into());
            if anonymized {
                walk.note("anonymized", anon_shape::note());
            }
            if walk.counts_people && (ctx.k > 0 || anonymized) {
                // Anonymized answers pass a noisy threshold around k, or around the least middle
                // where k is smaller (the query layer's `anon.rs`); exact ones, a fixed one.
                let detail = if anonymized {
                    format!(
                        "groups are released past a noisy threshold around {} distinct people (never fewer than 2); how many are withheld, only the audit record says",
                        ctx.k.max(crate::ANON_LEAST_THRESHOLD)
                    )
                } else {
                    format!(
                        "groups with fewer than {} distinct people are withheld; how many, only the audit record says",
                        ctx.k
                    )
                };
                walk.note("min_group_size", detail);
            }
        }
        Mode::Dp => {
            if !walk.counts_people {
                return Err(Violation::new(
                    Rule::DpShape,
                    None,
                    "dp mode protects people, and no dataset of this query declares a privacy unit; use aggregate mode",
                ));
            }
            walk.note("contribution_bounds", dp_shape::bounds_note(walk.contribution, &walk.dp));
        }
        Mode::Deidentified => {} // refused above
    }
    walk.note(
        "safe_sql",
        "one read-only query; allow-listed functions; every expression total: division by zero or −1, sqrt of a negative, abs of the smallest integer and failed casts give NULL, never an error"
            .into(),
    );
    Ok(Assessment {
        rules: walk.rules.into_iter().collect(),
        counts_people: walk.counts_people,
        dp: walk.dp,
        dp_public_keys: walk.dp_public_keys,
        dp_reach: reach,
        anonymized,
    })
}

/// Whether a join has at least one equality of columns, in its keys or its condition.
fn equi_join(j: &datafusion::logical_expr::Join) -> bool {
    !j.on.is_empty()
        || j.filter.as_ref().is_some_and(|f| {
            split_conjunction(f).iter().any(|c| {
                matches!(c, Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right })
                    if column_of(left).is_some() && column_of(right).is_some())
            })
        })
}

/// Whether a cast from `from` to `to` maps distinct values to distinct values and back (text
/// to text, an integer to a wider integer of the same signedness), so that a column cast this
/// way still names the same person.
fn one_to_one(from: &DataType, to: &DataType) -> bool {
    use DataType::{Int8, Int16, Int32, Int64, LargeUtf8, UInt8, UInt16, UInt32, UInt64, Utf8, Utf8View};
    from == to
        || matches!(
            (from, to),
            (Utf8 | Utf8View | LargeUtf8, Utf8 | Utf8View | LargeUtf8)
                | (Int8, Int16 | Int32 | Int64)
                | (Int16, Int32 | Int64)
                | (Int32, Int64)
                | (UInt8, UInt16 | UInt32 | UInt64)
                | (UInt16, UInt32 | UInt64)
                | (UInt32, UInt64)
        )
}

/// The column `e` is (of this query or an outer one), through casts and aliases.
fn column_of(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) | Expr::OuterReferenceColumn(_, c) => Some(c),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        Expr::Alias(a) => column_of(&a.expr),
        _ => None,
    }
}

fn is_outer_ref(e: &Expr) -> bool {
    match e {
        Expr::OuterReferenceColumn(..) => true,
        Expr::Cast(c) => is_outer_ref(&c.expr),
        Expr::TryCast(c) => is_outer_ref(&c.expr),
        _ => false,
    }
}

fn node_name(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Explain(_) => "EXPLAIN",
        LogicalPlan::Analyze(_) => "EXPLAIN ANALYZE",
        LogicalPlan::Dml(_) => "a data change (INSERT, UPDATE, DELETE)",
        LogicalPlan::Ddl(_) => "a definition (CREATE, DROP)",
        LogicalPlan::Copy(_) => "COPY",
        LogicalPlan::Statement(_) => "a statement (SET, PREPARE, transactions)",
        LogicalPlan::DescribeTable(_) => "DESCRIBE",
        LogicalPlan::RecursiveQuery(_) => "a recursive query",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::Distinct(Distinct::On(_)) => "DISTINCT ON",
        _ => "an unsupported plan node",
    }
}
