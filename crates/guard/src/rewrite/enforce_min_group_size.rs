//! Thresholds count people, not rows (design §2): every aggregate over data gets a hidden count
//! of distinct people (capped at `k`, see [`super::people`]) per privacy unit that reaches it,
//! and a filter right above it drops groups with fewer than `k`, before anything else (a window,
//! a join, HAVING) can see them.
//!
//! The privacy units are carried up from the table scans through projections, filters, joins
//! and unions ([`Unit`]): added to every projection that drops them, renamed to a hidden
//! `__veil_unit_N` where their name is taken, so aliases, subqueries and CTEs cannot drop them. A
//! join keeps both sides' units: a group must hold `k` distinct people on each side, which is
//! exactly "the person" when the sides are joined on the same linkable id, and stricter
//! otherwise (join amplification cannot make one person look like many).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Distinct, Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, SubqueryAlias, Volatility, col,
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

/// A column that carries a privacy unit through a plan: the dataset's own unit column for as
/// long as it stays visible under its own name, or a hidden `__veil_unit_N` column where it
/// must be renamed or made uniform (set operations, the de-identified answer). Using the
/// dataset's column where it can leaves the plan as the analyst wrote it, so the optimizer and
/// the executor do no extra work for it.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    column: Column,
    /// Already a [`unit_hash`] (a hidden column), not the raw value.
    hashed: bool,
}

impl Unit {
    /// The unit as it is carried.
    pub(super) fn expr(&self) -> Expr {
        Expr::Column(self.column.clone())
    }

    /// The unit as a hash, for counting.
    pub(super) fn hash(&self) -> Expr {
        let column = Expr::Column(self.column.clone());
        if self.hashed { column } else { unit_hash(column) }
    }
}

/// A plan rewritten to carry its rows' privacy units.
pub(super) struct Threaded {
    pub(super) plan: LogicalPlan,
    pub(super) units: Vec<Unit>,
}

impl<'a> Threshold<'a> {
    pub(super) fn new(ctx: &'a GuardContext, suppressed: Arc<AtomicU64>) -> Self {
        Self { ctx, suppressed, next: 0 }
    }

    /// Thresholds every aggregate in `plan`; the schema is unchanged.
    pub(super) fn apply(&mut self, plan: LogicalPlan) -> Result<LogicalPlan> {
        match plan {
            LogicalPlan::Aggregate(agg) => {
                let columns: Vec<Expr> = agg.schema.columns().into_iter().map(Expr::Column).collect();
                match self.aggregate(agg)? {
                    // Drop the counts again, so the schema is the aggregate's.
                    filtered @ LogicalPlan::Filter(_) => {
                        Ok(LogicalPlan::Projection(Projection::try_new(columns, Arc::new(filtered))?))
                    }
                    unchanged => Ok(unchanged),
                }
            }
            // A projection over an aggregate (what every SELECT … GROUP BY plans to) names the
            // columns it keeps, so the counts need no projection of their own.
            LogicalPlan::Projection(ref p) if matches!(*p.input, LogicalPlan::Aggregate(_)) => {
                let LogicalPlan::Projection(p) = plan.map_subqueries(|s| self.apply(s).map(Transformed::yes))?.data
                else {
                    return plan_err!("the privacy guard lost a projection");
                };
                let LogicalPlan::Aggregate(agg) = Arc::unwrap_or_clone(p.input) else {
                    return plan_err!("the privacy guard lost an aggregate");
                };
                let filtered = self.aggregate(agg)?;
                Ok(LogicalPlan::Projection(Projection::try_new(p.expr, Arc::new(filtered))?))
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let keys: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
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
    /// The request's context.
    pub(super) fn ctx(&self) -> &'a GuardContext {
        self.ctx
    }

    pub(super) fn thread(&mut self, plan: LogicalPlan) -> Result<Threaded> {
        let plan = plan.map_subqueries(|s| self.apply(s).map(Transformed::yes))?.data;
        match plan {
            LogicalPlan::TableScan(ref scan) => {
                let unit = self
                    .ctx
                    .dataset(scan.table_name.schema(), scan.table_name.table())
                    .and_then(|d| d.privacy_unit.clone());
                let Some(unit) = unit else { return Ok(Threaded { plan, units: Vec::new() }) };
                let column = Column::new(Some(scan.table_name.clone()), unit);
                if !scan.projected_schema.has_column(&column) {
                    return plan_err!("the privacy guard cannot find the privacy unit of {}", scan.table_name);
                }
                Ok(Threaded { plan, units: vec![Unit { column, hashed: false }] })
            }
            LogicalPlan::Projection(p) => {
                let Threaded { plan: input, units } = self.thread(Arc::unwrap_or_clone(p.input))?;
                let mut exprs = p.expr;
                let mut names: HashSet<String> = p.schema.fields().iter().map(|f| f.name().clone()).collect();
                let mut carried = Vec::with_capacity(units.len());
                for unit in units {
                    if exprs.iter().any(|e| matches!(e, Expr::Column(c) if *c == unit.column)) {
                        carried.push(unit);
                    } else if names.insert(unit.column.name.clone()) {
                        exprs.push(Expr::Column(unit.column.clone()));
                        carried.push(unit);
                    } else {
                        // The name is taken in this projection's output: carry the unit hidden.
                        let hidden = self.hidden();
                        exprs.push(unit.hash().alias(&hidden));
                        carried.push(Unit { column: Column::from_name(hidden), hashed: true });
                    }
                }
                let plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?);
                Ok(Threaded { plan, units: carried })
            }
            LogicalPlan::SubqueryAlias(a) => {
                let Threaded { plan: input, units } = self.thread(Arc::unwrap_or_clone(a.input))?;
                let alias = a.alias;
                let units = units
                    .into_iter()
                    .map(|u| Unit { column: Column::new(Some(alias.clone()), u.column.name), hashed: u.hashed })
                    .collect();
                let plan = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(input), alias)?);
                Ok(Threaded { plan, units })
            }
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => {
                Ok(Threaded { plan: self.apply(plan)?, units: Vec::new() })
            }
            LogicalPlan::Union(_) => {
                let mut inputs = Vec::new();
                for input in plan.inputs().into_iter().cloned() {
                    let columns = input.schema().columns();
                    inputs.push((columns, self.thread(input)?));
                }
                let counts: Vec<usize> = inputs.iter().map(|(_, t)| t.units.len()).collect();
                if counts.windows(2).any(|w| w[0] != w[1]) {
                    return plan_err!(
                        "the branches of this set operation are about different numbers of people per row; aggregate each branch first"
                    );
                }
                // Set operations match columns by position: every branch ends in the same
                // hidden, hashed unit columns.
                let names: Vec<String> = (0..counts.first().copied().unwrap_or(0)).map(|_| self.hidden()).collect();
                let branches = inputs
                    .into_iter()
                    .map(|(columns, t)| append_hidden(&columns, t, &names))
                    .collect::<Result<Vec<_>>>()?;
                let plan = plan.with_new_exprs(plan.expressions(), branches)?;
                let units = names.into_iter().map(|n| Unit { column: Column::from_name(n), hashed: true }).collect();
                Ok(Threaded { plan, units })
            }
            LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Window(_) => {
                let mut inputs = Vec::new();
                let mut units = Vec::new();
                for input in plan.inputs().into_iter().cloned() {
                    let threaded = self.thread(input)?;
                    inputs.push(threaded.plan);
                    units.extend(threaded.units);
                }
                let plan = plan.with_new_exprs(plan.expressions(), inputs)?;
                // A semi or anti join keeps one side's columns only, and that side's people.
                units.retain(|u| plan.schema().has_column(&u.column));
                Ok(Threaded { plan, units })
            }
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Ok(Threaded { plan, units: Vec::new() }),
            other => plan_err!("the privacy guard cannot carry privacy units through {}", other.display()),
        }
    }

    /// A fresh hidden unit column name.
    pub(super) fn hidden(&mut self) -> String {
        let name = format!("{UNIT_PREFIX}{}", self.next);
        self.next += 1;
        name
    }

    /// The aggregate with a capped count of people per unit, and the filter that drops groups
    /// with fewer than `k` (the counts are extra columns of the result).
    fn aggregate(&mut self, agg: Aggregate) -> Result<LogicalPlan> {
        let Threaded { plan: input, units } = self.thread(Arc::unwrap_or_clone(agg.input))?;
        if units.is_empty() || self.ctx.k == 0 {
            return Ok(LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(input), agg.group_expr, agg.aggr_expr)?));
        }
        let mut aggr = agg.aggr_expr;
        let mut counts = Vec::with_capacity(units.len());
        for (i, unit) in units.iter().enumerate() {
            let name = format!("{COUNT_PREFIX}{i}");
            aggr.push(people_upto(self.ctx.k, Expr::Column(unit.column.clone())).alias(&name));
            counts.push(col(Column::from_name(name)));
        }
        let grouped = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(input), agg.group_expr, aggr)?);
        let keep = MinGroupSize { k: self.ctx.k, suppressed: Arc::clone(&self.suppressed), signature: signature() };
        let keep = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(keep)), counts));
        Ok(LogicalPlan::Filter(Filter::try_new(keep, Arc::new(grouped))?))
    }
}

/// `columns` of a threaded plan followed by its units as the hidden, hashed columns `names`: the
/// shape set operations and the de-identified answer need.
pub(super) fn append_hidden(columns: &[Column], threaded: Threaded, names: &[String]) -> Result<LogicalPlan> {
    let Threaded { plan, units } = threaded;
    let mut exprs: Vec<Expr> = columns.iter().cloned().map(Expr::Column).collect();
    exprs.extend(units.iter().zip(names).map(|(unit, name)| unit.hash().alias(name)));
    Ok(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?))
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
