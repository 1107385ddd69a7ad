//! Thresholds count people, not rows (DESIGN §2): every aggregate over data gets a hidden
//! count of distinct people (capped at `k`, see [`super::people`]) per privacy unit that reaches it, and a filter right above it drops
//! groups with fewer than `k`, before anything else (a window, a join, HAVING) can see them.
//!
//! The privacy units are carried up from the table scans as hidden columns (`__veil_unit_N`)
//! through projections, filters, joins and unions, so aliases, subqueries and CTEs cannot drop
//! them. A join keeps both sides' units: a group must hold `k` distinct people on each side,
//! which is exactly "the person" when the sides are joined on the same linkable id, and stricter
//! otherwise (join amplification cannot make one person look like many).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Distinct, Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility, col,
};

use super::people::{people_upto, unit_hash};
use crate::GuardContext;

/// Prefix of the hidden privacy-unit columns.
pub const UNIT_PREFIX: &str = "__veil_unit_";
const COUNT_PREFIX: &str = "__veil_people_";

pub(super) struct Threshold<'a> {
    ctx: &'a GuardContext,
    suppressed: Arc<AtomicU64>,
    next: usize,
}

/// The hidden privacy-unit columns of a schema.
pub(super) fn unit_columns(schema: &DFSchema) -> Vec<Column> {
    schema
        .iter()
        .filter(|(_, f)| f.name().starts_with(UNIT_PREFIX))
        .map(|(q, f)| Column::new(q.cloned(), f.name()))
        .collect()
}

impl<'a> Threshold<'a> {
    pub(super) fn new(ctx: &'a GuardContext, suppressed: Arc<AtomicU64>) -> Self {
        Self { ctx, suppressed, next: 0 }
    }

    /// Thresholds every aggregate in `plan`; the schema is unchanged.
    pub(super) fn apply(&mut self, plan: LogicalPlan) -> Result<LogicalPlan> {
        match plan {
            LogicalPlan::Aggregate(agg) => self.aggregate(agg),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let keys: Vec<Expr> = unit_free_columns(input.schema());
                let agg = LogicalPlanBuilder::from(Arc::unwrap_or_clone(input)).aggregate(keys, Vec::<Expr>::new())?;
                self.apply(agg.build()?)
            }
            other => {
                let other = other.map_subqueries(|s| self.apply(s).map(Transformed::yes))?.data;
                other.map_children(|c| self.apply(c).map(Transformed::yes)).map(|t| t.data)
            }
        }
    }

    /// Rewrites `plan` (below an aggregate, or at the root in de-identified mode) so that its
    /// output also carries the privacy units of the rows it is made of.
    pub(super) fn thread(&mut self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let plan = plan.map_subqueries(|s| self.apply(s).map(Transformed::yes))?.data;
        match plan {
            LogicalPlan::TableScan(ref scan) => {
                let unit = self
                    .ctx
                    .dataset(scan.table_name.schema(), scan.table_name.table())
                    .and_then(|d| d.privacy_unit.clone());
                let Some(unit) = unit else { return Ok(plan) };
                let mut exprs: Vec<Expr> = scan.projected_schema.columns().into_iter().map(Expr::Column).collect();
                let unit = Expr::Column(Column::new(Some(scan.table_name.clone()), unit));
                let name = format!("{UNIT_PREFIX}{}", self.next);
                self.next += 1;
                exprs.push(unit_hash(unit).alias(name));
                Ok(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?))
            }
            LogicalPlan::Projection(p) => {
                let input = self.thread(Arc::unwrap_or_clone(p.input))?;
                let mut exprs = p.expr;
                exprs.extend(unit_columns(input.schema()).into_iter().map(Expr::Column));
                Ok(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?))
            }
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => self.apply(plan),
            LogicalPlan::Union(_) => {
                let inputs = plan.inputs().into_iter().cloned().map(|i| self.thread(i)).collect::<Result<Vec<_>>>()?;
                let counts: Vec<usize> = inputs.iter().map(|i| unit_columns(i.schema()).len()).collect();
                if counts.windows(2).any(|w| w[0] != w[1]) {
                    return plan_err!(
                        "the branches of this set operation are about different numbers of people per row; aggregate each branch first"
                    );
                }
                plan.with_new_exprs(plan.expressions(), inputs)
            }
            LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Window(_) => {
                let inputs = plan.inputs().into_iter().cloned().map(|i| self.thread(i)).collect::<Result<Vec<_>>>()?;
                plan.with_new_exprs(plan.expressions(), inputs)
            }
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Ok(plan),
            other => plan_err!("the privacy guard cannot carry privacy units through {}", other.display()),
        }
    }

    fn aggregate(&mut self, agg: Aggregate) -> Result<LogicalPlan> {
        let input = self.thread(Arc::unwrap_or_clone(agg.input))?;
        let units = unit_columns(input.schema());
        if units.is_empty() || self.ctx.k == 0 {
            return Ok(LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(input), agg.group_expr, agg.aggr_expr)?));
        }
        let mut aggr = agg.aggr_expr;
        let mut counts = Vec::with_capacity(units.len());
        for (i, unit) in units.into_iter().enumerate() {
            let name = format!("{COUNT_PREFIX}{i}");
            aggr.push(people_upto(self.ctx.k, Expr::Column(unit)).alias(&name));
            counts.push(col(Column::from_name(name)));
        }
        let grouped = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(input), agg.group_expr, aggr)?);
        let keep = MinGroupSize { k: self.ctx.k, suppressed: Arc::clone(&self.suppressed), signature: signature() };
        let keep = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(keep)), counts));
        let filtered = LogicalPlan::Filter(Filter::try_new(keep, Arc::new(grouped))?);
        let original: Vec<Expr> = agg.schema.columns().into_iter().map(Expr::Column).collect();
        Ok(LogicalPlan::Projection(Projection::try_new(original, Arc::new(filtered))?))
    }
}

fn unit_free_columns(schema: &DFSchema) -> Vec<Expr> {
    schema.columns().into_iter().filter(|c| !c.name.starts_with(UNIT_PREFIX)).map(Expr::Column).collect()
}

fn signature() -> Signature {
    Signature::variadic(vec![DataType::Int64], Volatility::Volatile)
}

/// `true` where every count of distinct people is at least `k`; counts the groups it drops.
/// Never registered in a session, so a query cannot call it; it exists only in rewritten plans.
#[derive(Debug)]
struct MinGroupSize {
    k: u64,
    suppressed: Arc<AtomicU64>,
    signature: Signature,
}

impl PartialEq for MinGroupSize {
    fn eq(&self, other: &Self) -> bool {
        self.k == other.k && Arc::ptr_eq(&self.suppressed, &other.suppressed)
    }
}

impl Eq for MinGroupSize {}

impl Hash for MinGroupSize {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.k.hash(state);
    }
}

impl ScalarUDFImpl for MinGroupSize {
    fn name(&self) -> &str {
        "__veil_min_group_size"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let k = i64::try_from(self.k).unwrap_or(i64::MAX);
        let rows = args.number_rows;
        let mut keep = vec![true; rows];
        for array in &arrays {
            let counts = array.as_primitive_opt::<Int64Type>();
            for (i, slot) in keep.iter_mut().enumerate() {
                let n = counts.and_then(|c| (c.is_valid(i)).then(|| c.value(i))).unwrap_or(0);
                *slot &= n >= k;
            }
        }
        let dropped = keep.iter().filter(|k| !**k).count() as u64;
        self.suppressed.fetch_add(dropped, Ordering::Relaxed);
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(keep))))
    }
}
