//! Aggregate mode over data about people: sums and averages see each value clamped to its
//! column's declared bounds, so one person's extreme value moves an answer by at most the
//! bound (the steward's bounds held only in dp mode before).

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, cast, lit, when};

use crate::DpAggregate;
use crate::check::unalias;

/// Clamps the arguments of the answer aggregate's sums and averages (classified in `kinds`, in
/// order) to their bounds, keeping each aggregate's type and output name.
pub(super) fn clamp(plan: LogicalPlan, kinds: &[DpAggregate]) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Aggregate(agg) = node else { return Ok(Transformed::no(node)) };
        // Only the answer's aggregate over rows; one above it reworks released groups.
        let over_groups =
            agg.input.exists(|n| Ok(matches!(n, LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_))))?;
        if over_groups {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        if agg.aggr_expr.len() != kinds.len() {
            return plan_err!("the privacy guard classified a different number of aggregates");
        }
        let exprs = agg
            .aggr_expr
            .iter()
            .zip(kinds)
            .map(|(e, kind)| match kind {
                DpAggregate::Sum { lo, hi } | DpAggregate::Avg { lo, hi } => clamped(e, *lo, *hi, &agg),
                DpAggregate::CountRows | DpAggregate::CountPeople => Ok(e.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let rebuilt = Aggregate::try_new(agg.input, agg.group_expr, exprs)?;
        Ok(Transformed::yes(LogicalPlan::Aggregate(rebuilt)))
    })
    .map(|t| t.data)
}

/// `e` (a SUM or AVG call) over its argument clamped to `[lo, hi]`, in the argument's type,
/// under `e`'s own output name.
fn clamped(e: &Expr, lo: f64, hi: f64, agg: &Aggregate) -> Result<Expr> {
    let Expr::AggregateFunction(f) = unalias(e) else { return plan_err!("an aggregate that is not a function call") };
    let [x] = f.params.args.as_slice() else { return plan_err!("SUM or AVG without one argument") };
    let t = x.get_type(agg.input.schema())?;
    let (lo, hi) = (cast(lit(lo), t.clone()), cast(lit(hi), t));
    let x = when(x.clone().lt(lo.clone()), lo).when(x.clone().gt(hi.clone()), hi).otherwise(x.clone())?;
    let mut call = f.clone();
    call.params.args = vec![x];
    let name = e.schema_name().to_string();
    Ok(Expr::AggregateFunction(AggregateFunction { func: call.func, params: call.params }).alias(name))
}
