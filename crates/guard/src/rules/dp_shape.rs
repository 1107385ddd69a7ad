//! Dp mode (design §3): an answer is one aggregate over the rows of the datasets, so that every
//! released number passes through the contribution bounds and the noise. What may come after
//! the aggregate only reworks its noisy output (renaming, expressions, HAVING, ORDER BY, LIMIT:
//! post-processing, which costs no privacy); what comes before it stays at the grain of rows
//! (scans, projections, filters, joins on privacy units, EXISTS / IN tied to the outer person).
//! Aggregates are COUNT, COUNT(DISTINCT unit), SUM and AVG; sums and averages only of columns
//! with declared bounds.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

use crate::DpAggregate;
use crate::lineage::{ColumnLineage, Sources};
use crate::{Contribution, Rule, Violation};

fn shape(message: impl Into<String>) -> Violation {
    Violation::new(Rule::DpShape, None, message)
}

/// A refusal for datasets about people combined other than person by person.
pub(crate) fn people_not_linked(message: &str) -> Violation {
    Violation::new(Rule::DpPeopleNotLinked, None, message)
}

/// A refusal for two privacy units (`names`) linked through a cast that is not one-to-one.
pub(crate) fn recast_units(names: &str) -> Violation {
    people_not_linked(&format!(
        "{names} are privacy units compared through a cast or conversion that is not one-to-one (\"7\", \"07\" and \"007\" all equal 7): link them uncast, with the same type"
    ))
}

/// A refusal for a privacy unit (`column`) probed through a cast that is not one-to-one.
pub(crate) fn recast_unit(column: &str) -> Violation {
    people_not_linked(&format!(
        "{column} is a privacy unit cast or converted in a way that is not one-to-one (\"7\", \"07\" and \"007\" all equal 7): compare it uncast, with a unit of the same type"
    ))
}

/// What the contribution bounds did to this answer, for its rules.
pub(crate) fn bounds_note(c: Contribution, aggregates: &[DpAggregate]) -> String {
    let clamps: Vec<String> = aggregates
        .iter()
        .filter_map(|a| match a {
            DpAggregate::Sum { lo, hi } | DpAggregate::Avg { lo, hi } => Some(format!("[{lo}, {hi}]")),
            DpAggregate::CountRows | DpAggregate::CountPeople => None,
        })
        .collect();
    let clamped = if clamps.is_empty() {
        String::new()
    } else {
        format!("; summed values clamped to their declared bounds, in order {}", clamps.join(", "))
    };
    format!(
        "each person counts in at most {} group(s) (sampled at random) with at most {} row(s) each{clamped}; the intervals cover these bounded values",
        c.max_groups, c.max_rows
    )
}

/// Whether `plan` is a node that may follow the answer's aggregate: it reworks its one input's
/// rows (renaming, expressions, HAVING, ORDER BY, LIMIT) without reading data.
pub(crate) fn is_post_processing(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_)
    )
}

/// The answer's one aggregate, under its post-processing nodes, if the plan has that shape.
pub(crate) fn answer_aggregate(plan: &LogicalPlan) -> Option<&Aggregate> {
    match plan {
        LogicalPlan::Aggregate(agg) => Some(agg),
        _ if is_post_processing(plan) => match plan.inputs()[..] {
            [input] => answer_aggregate(input),
            _ => None,
        },
        _ => None,
    }
}

/// Checks the plan's shape: post-processing nodes over exactly one aggregate over rows; returns
/// that aggregate.
pub(crate) fn check(plan: &LogicalPlan) -> Result<&Aggregate, Violation> {
    let Some(agg) = answer_aggregate(plan) else {
        return Err(shape(
            "dp mode answers one aggregate query: SELECT keys, COUNT/SUM/AVG … FROM … [JOIN …] [WHERE …] [GROUP BY keys], then optionally HAVING, ORDER BY and LIMIT; without an aggregate there is nothing to add noise to",
        ));
    };
    let mut node = plan;
    while !matches!(node, LogicalPlan::Aggregate(_)) {
        if has_subquery(node) {
            return Err(shape(
                "a subquery after the aggregate would read data outside the noise; in dp mode only renaming, expressions over the aggregates, HAVING, ORDER BY and LIMIT may follow it",
            ));
        }
        let [input] = node.inputs()[..] else { return Err(shape("an unexpected plan node")) };
        node = input;
    }
    if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return Err(shape("ROLLUP, CUBE and GROUPING SETS are not supported in dp mode; run one query per grouping"));
    }
    rows(&agg.input)?;
    Ok(agg)
}

/// Checks that `plan`, below the answer's aggregate, stays at the grain of rows.
fn rows(plan: &LogicalPlan) -> Result<(), Violation> {
    match plan {
        LogicalPlan::TableScan(scan) if scan.fetch.is_none() => {}
        LogicalPlan::Sort(sort) if sort.fetch.is_none() => {}
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Subquery(_)
        | LogicalPlan::Join(_) => {}
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => {
            return Err(shape(
                "an aggregate or DISTINCT before the answer's aggregate would compute exact values outside the noise; aggregate once, in the outermost query",
            ));
        }
        LogicalPlan::Window(_) => return Err(shape("window functions are not supported in dp mode")),
        LogicalPlan::Limit(_) | LogicalPlan::TableScan(_) | LogicalPlan::Sort(_) => {
            return Err(shape(
                "LIMIT before the aggregate picks rows by position; in dp mode it may only follow the aggregate",
            ));
        }
        LogicalPlan::Union(_) => {
            return Err(shape(
                "UNION is not supported in dp mode; run one query per dataset, or join on the privacy unit",
            ));
        }
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            return Err(shape("constant tables are not supported in dp mode: aggregate the datasets' rows"));
        }
        _ => return Err(shape("this query shape is not supported in dp mode")),
    }
    for e in plan.expressions() {
        let mut found = Ok(());
        e.apply(|x| {
            match x {
                Expr::ScalarSubquery(_) => {
                    found = Err(shape(
                        "a scalar subquery computes an exact value outside the noise; in dp mode only EXISTS and IN tied to the outer person are allowed",
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Expr::Exists(e) => found = rows(&e.subquery.subquery),
                // DataFusion runs `NOT IN (SELECT …)` as a null-aware anti join, which looks
                // its rows up otherwise than every other join (one key only, no sentinel key):
                // a red team timed it slower when somebody passed the subquery's filter, 62 of
                // 92 pairs. `NOT EXISTS` says the same for units, which are never NULL.
                Expr::InSubquery(i) if i.negated => {
                    found = Err(shape(
                        "NOT IN (SELECT …) is not supported in dp mode; write NOT EXISTS (SELECT 1 FROM … WHERE unit = outer.unit)",
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Expr::InSubquery(i) => found = rows(&i.subquery.subquery),
                _ => {}
            }
            Ok(if found.is_ok() { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
        })
        .map_err(|_| shape("an expression the guard could not walk"))?;
        found?;
    }
    plan.inputs().into_iter().try_for_each(rows)
}

/// Whether a node's expressions hold a subquery.
pub(crate) fn has_subquery(plan: &LogicalPlan) -> bool {
    plan.expressions().iter().any(|e| {
        e.exists(|x| Ok(matches!(x, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)))).unwrap_or(true)
    })
}

/// The most groups a public-domain answer may list (the product of its keys' domains).
const MAX_PUBLIC_GROUPS: usize = 100_000;

/// The group keys' public domains, if every key has one, unless their combinations are too many.
pub(crate) fn public_keys(domains: Option<Vec<Vec<String>>>) -> Result<Option<Vec<Vec<String>>>, Violation> {
    let Some(domains) = domains else { return Ok(None) };
    let groups = domains.iter().try_fold(1usize, |acc, d| acc.checked_mul(d.len()));
    match groups {
        Some(n) if n <= MAX_PUBLIC_GROUPS => Ok(Some(domains)),
        _ => Err(shape(format!(
            "the group keys' public values combine into more than {MAX_PUBLIC_GROUPS} groups, and dp mode would release every one; group by fewer keys"
        ))),
    }
}

/// Whether `f` is `COUNT(*)` (a non-null literal argument) without a FILTER: it counts every
/// row of its group.
fn counts_every_row(f: &AggregateFunction) -> bool {
    f.func.name() == "count"
        && !f.params.distinct
        && f.params.filter.is_none()
        && matches!(f.params.args.as_slice(), [Expr::Literal(v, _)] if !v.is_null())
}

/// Classifies one aggregate call of the answer's aggregate, or refuses it. `max_rows` is the
/// query's bound on rows per person and group: at 1, a group's bounded rows are its people, so
/// `COUNT(*)` is the people count (one measurement instead of two).
pub(crate) fn aggregate(
    f: &AggregateFunction,
    args: &[ColumnLineage],
    sources: &Sources,
    max_rows: u64,
) -> Result<DpAggregate, Violation> {
    let (name, distinct) = (f.func.name(), f.params.distinct);
    let bare = args.first().and_then(|a| a.bare.filter(|_| !a.aggregated));
    match name {
        "count" if distinct => match bare {
            Some(src) if sources.get(src).unit && args.len() == 1 => Ok(DpAggregate::CountPeople),
            _ => Err(Violation::new(
                Rule::DpAggregateNotSupported,
                None,
                "COUNT(DISTINCT …) in dp mode counts people only: COUNT(DISTINCT <privacy unit>)",
            )),
        },
        "count" if max_rows <= 1 && counts_every_row(f) => Ok(DpAggregate::CountPeople),
        "count" => Ok(DpAggregate::CountRows),
        "sum" | "avg" => {
            if distinct {
                return Err(Violation::new(
                    Rule::DpAggregateNotSupported,
                    None,
                    format!("{} of DISTINCT values is not supported in dp mode", name.to_uppercase()),
                ));
            }
            let Some(src) = bare else {
                return Err(Violation::new(
                    Rule::DpUnboundedColumn,
                    None,
                    format!(
                        "{} in dp mode takes a column with declared bounds, not an expression: its bounds are what the noise is calibrated to",
                        name.to_uppercase()
                    ),
                ));
            };
            let column = sources.get(src);
            let Some((lo, hi)) = column.bounds else {
                return Err(Violation::new(
                    Rule::DpUnboundedColumn,
                    Some(column.name.clone()),
                    format!(
                        "`{}` has no declared bounds, so its {} cannot be given calibrated noise; its steward can declare bounds at registration",
                        column.name,
                        name.to_uppercase()
                    ),
                ));
            };
            Ok(if name == "sum" { DpAggregate::Sum { lo, hi } } else { DpAggregate::Avg { lo, hi } })
        }
        _ => Err(Violation::new(
            Rule::DpAggregateNotSupported,
            None,
            format!(
                "`{name}` has no differentially private mechanism here (MIN, MAX, medians and percentiles reveal single values); dp mode releases COUNT, COUNT(DISTINCT <privacy unit>), SUM and AVG"
            ),
        )),
    }
}
