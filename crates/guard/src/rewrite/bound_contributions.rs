//! Dp mode: bounds what one person can add to the answer's aggregate, so that noise calibrated
//! to those bounds hides any one person (design §3, as ZetaSQL, Qrlew and SmartNoise do it).
//!
//! ```text
//! rows (with their privacy unit carried up, as for thresholds)
//!   ─► per person and group: COUNT, SUM of values clamped to the declared [lo, hi], their count
//!   ─► at most R rows per person and group: counts capped at R; a sum over n > R rows scaled
//!      to R rows (n·mean → R·mean), so a person adds at most R·max(|lo|, |hi|)
//!   ─► at most G groups per person: ROW_NUMBER() OVER (PARTITION BY unit ORDER BY random()) <= G
//!      (a random sample of the person's groups, never the first ones)
//!   ─► per group: the bounded totals and the number of people
//! ```
//!
//! The output ([`DpPlan`] says its layout) holds exact bounded totals; the query layer adds the
//! noise, drops groups whose noisy count of people is below the threshold and finishes the
//! analyst's plan (renaming, HAVING, ORDER BY, LIMIT) over the noisy values with
//! [`DpPlan::finish`]. Nothing this plan computes leaves the broker without noise.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchemaRef, Result, plan_err};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions::math::expr_fn::random;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, Projection, cast, col, lit, when,
};

use super::enforce_min_group_size::{Threaded, Threshold};
use crate::exprs::unalias;
use crate::rules::dp_shape::{self, is_post_processing};
use crate::{Assessment, Contribution, DpAggregate, Reach};

/// Prefix of the columns of the bounded plan.
pub const DP_PREFIX: &str = "__veil_dp_";
/// The hidden row number [`DpPlan::finish`] expects as the source's last column.
pub const DP_ROW: &str = "__veil_dp_row";

/// A dp answer's plan, split where the noise goes in.
///
/// The bounded plan (the one to run) outputs, in order: the `keys` group keys; per aggregate,
/// by [`DpAggregate`]: `CountRows` one Int64 (bounded row count), `CountPeople` nothing (it is
/// the people count), `Sum` one Float64 (bounded sum), `Avg` a Float64 (bounded sum) and an
/// Int64 (bounded count of values); and last the Int64 number of people in the group.
#[derive(Debug, Clone)]
pub struct DpPlan {
    /// The analyst's plan, to finish over the noisy aggregate.
    pub(super) upper: LogicalPlan,
    /// The answer aggregate's output schema: the group keys, then one column per aggregate.
    pub aggregate_schema: DFSchemaRef,
    /// How many group keys.
    pub keys: usize,
    /// The aggregates, in order.
    pub aggregates: Vec<DpAggregate>,
    /// The contribution bounds the plan enforces.
    pub contribution: Contribution,
    /// The public domain of each group key, when every key has one: then every combination is
    /// released (with zeros where no row has it) and no threshold applies.
    pub public_keys: Option<Vec<Vec<String>>>,
    /// Anonymized answers: the canonical labels that seed the noise layers.
    pub noise: super::labels::NoiseLabels,
    /// Anonymized answers: every person is one row of the aggregate's input (measured at
    /// registration, no join repeating rows), so each contributes one row to one group.
    pub one_row_per_person: bool,
    /// Anonymized answers: for each aggregate, the first aggregate that measures the same sum
    /// (`SUM(x)` and `AVG(x)` both sum x), so that the same quantity gets the same noise.
    pub measures: Vec<usize>,
    /// Anonymized answers: per combination of the columns the query's conditions restrict
    /// (at most four), the answer without those columns' conditions: to answer a group with
    /// when those conditions remove almost nobody from it (low-effect detection).
    pub variants: Vec<Variant>,
    /// Anonymized answers: the columns whose range has cells of the grid around it
    /// (`ladder.rs`), in the order of the census's measurements.
    pub ladders: Vec<super::Ladder>,
    /// Anonymized answers with ladders: the plan that gives, per person and group, whether
    /// they are in every range and their nearest values on either side of each
    /// (`anonymize::census`), run before the others; the query layer counts each cell's people.
    pub census: Option<LogicalPlan>,
    /// Anonymized answers: the group keys whose buckets have cells of the grid around them,
    /// with their census (`buckets.rs`), run before every other measurement.
    pub buckets: Option<super::Buckets>,
    /// Anonymized answers joined to tables about nobody: per people column a join looks up,
    /// the name its `__veil_dropped` calls carry and the census of the people per group and
    /// value of it (`anonymize::looked_up_census`), run before the measurements. A variant has
    /// its own, over its rows: each measurement leaves out the pairs its own census finds.
    pub looked_up: Vec<(String, LogicalPlan)>,
    /// Anonymized answers, a variant over several rows a person: its output ends with the
    /// number of each group's people with a row the conditions it leaves out do not hold
    /// (whose rows those conditions change), then the seed of their set.
    pub touched: bool,
    /// Anonymized answers: the datasets whose rows per person the query's joins cap, each with
    /// its cap (`cap_rows::capped`), for the answer to say that its counts of rows and sums
    /// are of the rows kept.
    pub rows_capped: Vec<(String, u64)>,
    /// Anonymized answers: the most rows of one person a group counts (1 over one row a
    /// person; else the product of the caps of the datasets about people it reads,
    /// `cap_rows::rows_per_person`). Each person's contribution is clamped to it (times a
    /// sum's bound), and the noise's scale is at least that over e³.
    pub rows_per_person: u64,
}

/// An anonymized answer without some columns' conditions ([`DpPlan::variants`]).
#[derive(Debug, Clone)]
pub struct Variant {
    /// The columns, as labels name them.
    pub columns: Vec<String>,
    /// Per column, the stored column its conditions read, as keys name it (`KeyLabel::reads`):
    /// a list of a part of a date reads the date.
    pub reads: Vec<String>,
    /// Its measuring plan, laid out as the answer's.
    pub plan: LogicalPlan,
    /// How to finish it; its `buckets` are its own census, without its columns' conditions.
    pub measured: DpPlan,
}

impl DpPlan {
    /// Whether the answer has groups (so a person may count in several).
    pub fn grouped(&self) -> bool {
        self.keys > 0
    }

    /// Whether a group's presence depends on people, so that it must pass a threshold: it has
    /// groups, and their keys are not all from public domains.
    pub fn thresholded(&self) -> bool {
        self.grouped() && self.public_keys.is_none()
    }

    /// The analyst's plan with its aggregate replaced by `source`, which must have the
    /// aggregate's columns (names and qualifiers) followed by [`DP_ROW`]. The result has the
    /// analyst's columns followed by [`DP_ROW`]; for each of the analyst's columns, the
    /// aggregate column it is a plain copy of (renamed at most), if any, which is whose
    /// interval it carries.
    ///
    /// # Errors
    /// If a node cannot be rebuilt over the source (a bug; the caller refuses).
    pub fn finish(&self, source: LogicalPlan) -> Result<(LogicalPlan, Vec<Option<usize>>)> {
        finish(&self.upper, source)
    }

    /// An anonymized answer: the analyst's plan with its aggregate over rows replaced by
    /// `source`, which must have the aggregate's columns (names and qualifiers); every node
    /// above it (any read-only rework) is rebuilt over it.
    ///
    /// # Errors
    /// If a node cannot be rebuilt over the source (a bug; the caller refuses).
    pub fn over(&self, source: LogicalPlan) -> Result<LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        let target = LogicalPlan::Aggregate(super::anonymize::lowest_aggregate(&self.upper)?.clone());
        let mut source = Some(source);
        self.upper
            .clone()
            .transform_up(|node| match source.take_if(|_| node == target) {
                Some(s) => Ok(Transformed::yes(s)),
                None => Ok(Transformed::yes(node.recompute_schema()?)),
            })
            .map(|t| t.data)
    }
}

fn finish(node: &LogicalPlan, source: LogicalPlan) -> Result<(LogicalPlan, Vec<Option<usize>>)> {
    match node {
        // The answer's aggregate over rows. An aggregate over its groups (`SELECT count(*) FROM
        // (<the answer>) x`, admitted in anonymized answers) is no copy: it was taken for the
        // answer's and returned the groups themselves (a red team asked for their number); the
        // caller then reworks the released groups as a whole plan (`DpPlan::over`).
        LogicalPlan::Aggregate(agg) if !crate::rules::anon_shape::reads_aggregates(&agg.input) => {
            let copies = (0..agg.schema.fields().len()).map(Some).collect();
            Ok((source, copies))
        }
        LogicalPlan::Projection(p) => {
            let (input, copies) = finish(&p.input, source)?;
            let mut exprs = p.expr.clone();
            let of = exprs
                .iter()
                .map(|e| match unalias(e) {
                    Expr::Column(c) => {
                        input.schema().maybe_index_of_column(c).and_then(|i| copies.get(i).copied().flatten())
                    }
                    _ => None,
                })
                .collect();
            exprs.push(Expr::Column(row_column(&input)?));
            Ok((LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?), of))
        }
        _ if is_post_processing(node) => {
            let [input] = node.inputs()[..] else { return plan_err!("the privacy guard lost a node's input") };
            let (input, copies) = finish(input, source)?;
            Ok((node.with_new_exprs(node.expressions(), vec![input])?, copies))
        }
        other => plan_err!("the privacy guard cannot finish a dp answer through {}", other.display()),
    }
}

fn row_column(plan: &LogicalPlan) -> Result<Column> {
    let (qualifier, field) = plan.schema().qualified_field_with_unqualified_name(DP_ROW)?;
    Ok(Column::new(qualifier.cloned(), field.name()))
}

/// The answer's aggregate: the first under the post-processing nodes.
pub(super) fn answer_aggregate(plan: &LogicalPlan) -> Result<&Aggregate> {
    match dp_shape::answer_aggregate(plan) {
        Some(agg) => Ok(agg),
        None => plan_err!("a dp answer must end in one aggregate"),
    }
}

/// `arg` as a Float64 clamped to `[lo, hi]`.
pub(super) fn clamped(arg: &Expr, lo: f64, hi: f64) -> Result<Expr> {
    let x = cast(arg.clone(), DataType::Float64);
    when(x.clone().lt(lit(lo)), lit(lo)).when(x.clone().gt(lit(hi)), lit(hi)).otherwise(x)
}

pub(super) fn name(what: &str, i: usize) -> String {
    format!("{DP_PREFIX}{what}_{i}")
}

/// Builds the bounded plan for `upper`'s aggregate and returns it with the [`DpPlan`].
///
/// When the one dataset about people whose rows reach the aggregate has one row per person and
/// no join below the aggregate can repeat them, every person is one row in one group: steps 1–3
/// would change nothing, so the totals come from the rows in one aggregate (the same values).
pub(super) fn bound(
    upper: LogicalPlan,
    assessment: &Assessment,
    threshold: &mut Threshold<'_>,
) -> Result<(LogicalPlan, DpPlan)> {
    let Reach { contribution, one_row_per_person: rows_are_people } = assessment.dp_reach;
    let kinds = assessment.dp.as_slice();
    let agg = answer_aggregate(&upper)?.clone();
    if agg.aggr_expr.len() != kinds.len() {
        return plan_err!("the privacy guard classified a different number of aggregates");
    }
    let group_keys = crate::exprs::group_keys(&agg)?;
    let keys = group_keys.len();
    let dp = DpPlan {
        aggregate_schema: Arc::clone(&agg.schema),
        keys,
        aggregates: kinds.to_vec(),
        contribution,
        public_keys: assessment.dp_public_keys.clone(),
        noise: super::labels::NoiseLabels::default(),
        variants: Vec::new(),
        ladders: Vec::new(),
        census: None,
        buckets: None,
        looked_up: Vec::new(),
        touched: false,
        rows_capped: Vec::new(),
        rows_per_person: 1,
        upper: upper.clone(),
        one_row_per_person: false,
        measures: (0..kinds.len()).collect(),
    };
    let Threaded { plan: input, units } =
        super::cap_rows::threaded_and_capped(Arc::unwrap_or_clone(Arc::clone(&agg.input)), threshold)?;
    let unit = match units.as_slice() {
        [] => return plan_err!("a dp answer must read a dataset about people"),
        [only] => only.expr(),
        many => coalesce(many.iter().map(|u| u.hash()).collect()),
    };
    let r = i64::try_from(contribution.max_rows).unwrap_or(i64::MAX);
    let unit_name = format!("{DP_PREFIX}unit");

    // 1. Per person and group.
    let mut group = vec![unit.alias(&unit_name)];
    group.extend(group_keys.iter().enumerate().map(|(i, k)| k.clone().unalias().alias(name("key", i))));
    let mut partial = Vec::new();
    for (j, (e, kind)) in agg.aggr_expr.iter().zip(kinds).enumerate() {
        let Expr::AggregateFunction(f) = unalias(e) else {
            return plan_err!("an aggregate expression that is not a function call");
        };
        match kind {
            DpAggregate::CountRows => partial.push(unalias(e).clone().alias(name("rows", j))),
            DpAggregate::CountPeople => {}
            DpAggregate::Sum { lo, hi } | DpAggregate::Avg { lo, hi } => {
                let Some(arg) = f.params.args.first() else { return plan_err!("SUM without an argument") };
                let clamped = clamped(arg, *lo, *hi)?;
                let filter = f.params.filter.clone();
                let total =
                    AggregateFunction::new_udf(sum_udaf(), vec![clamped.clone()], false, filter.clone(), vec![], None);
                partial.push(Expr::AggregateFunction(total).alias(name("sum", j)));
                // A SUM's count of values only serves its scaling in step 2.
                if matches!(kind, DpAggregate::Avg { .. }) || !rows_are_people {
                    let n = count(clamped);
                    let n = match filter {
                        Some(f) => n.filter(*f).build()?,
                        None => n,
                    };
                    partial.push(n.alias(name("n", j)));
                }
            }
        }
    }
    let people = count(lit(1)).alias(format!("{DP_PREFIX}people"));
    if rows_are_people {
        // Step 1's sums and counts are already step 4's totals: group by the keys alone.
        partial.push(people);
        let plan = LogicalPlanBuilder::from(input).aggregate(group.into_iter().skip(1), partial)?.build()?;
        return Ok((plan, dp));
    }
    let per_person = LogicalPlanBuilder::from(input).aggregate(group, partial)?.build()?;

    // 2. At most R rows per person and group.
    let mut bounded = vec![col(unit_name.as_str())];
    bounded.extend((0..keys).map(|i| col(name("key", i))));
    for (j, kind) in kinds.iter().enumerate() {
        let capped = |c: String| when(col(c.as_str()).gt(lit(r)), lit(r)).otherwise(col(c.as_str()));
        match kind {
            DpAggregate::CountRows => bounded.push(capped(name("rows", j))?.alias(name("rows", j))),
            DpAggregate::CountPeople => {}
            DpAggregate::Sum { .. } | DpAggregate::Avg { .. } => {
                let n = cast(col(name("n", j)), DataType::Float64);
                let scaled = col(name("sum", j)) * lit(r as f64) / n;
                let s = when(col(name("n", j)).gt(lit(r)), scaled).otherwise(col(name("sum", j)))?;
                bounded.push(s.alias(name("sum", j)));
                bounded.push(capped(name("n", j))?.alias(name("n", j)));
            }
        }
    }
    let mut plan = LogicalPlanBuilder::from(per_person).project(bounded)?;

    // 3. At most G groups per person, chosen at random.
    if keys > 0 {
        let rank = format!("{DP_PREFIX}rank");
        let numbered = row_number()
            .partition_by(vec![col(unit_name.as_str())])
            .order_by(vec![random().sort(true, false)])
            .build()?
            .alias(&rank);
        let g = contribution.max_groups;
        plan = plan.window(vec![numbered])?.filter(col(rank.as_str()).lt_eq(lit(g)))?;
    }

    // 4. Per group: the bounded totals and the people.
    let mut totals = Vec::new();
    for (j, kind) in kinds.iter().enumerate() {
        match kind {
            DpAggregate::CountRows => totals.push(sum(col(name("rows", j))).alias(name("rows", j))),
            DpAggregate::CountPeople => {}
            DpAggregate::Sum { .. } => totals.push(sum(col(name("sum", j))).alias(name("sum", j))),
            DpAggregate::Avg { .. } => {
                totals.push(sum(col(name("sum", j))).alias(name("sum", j)));
                totals.push(sum(col(name("n", j))).alias(name("n", j)));
            }
        }
    }
    totals.push(people);
    let plan = plan.aggregate((0..keys).map(|i| col(name("key", i))), totals)?.build()?;
    Ok((plan, dp))
}
