//! The plan walk: derives the lineage of every column of every node, bottom up, entering
//! subqueries, and applies the rules where they belong. Pure: no I/O, no state beyond the walk.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema, JoinType};
use datafusion::logical_expr::expr::{AggregateFunction, Cast, Exists, InSubquery, TryCast, WindowFunction};
use datafusion::logical_expr::utils::{grouping_set_to_exprlist, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Distinct, Expr, ExprSchemable, LogicalPlan, Operator, Subquery, WindowFunctionDefinition,
};
use veil_common::Mode;

use crate::lineage::{ColumnLineage, Grain, NodeLineage, SourceColumn, Sources};
use crate::rules::{
    allow_listed_functions, anon_shape, deny_complement_conditions, deny_identifier_use, deny_reserved_names, dp_shape,
    restrict_aggregates, return_only_aggregates, total_expressions,
};
use crate::{Contribution, GuardContext, Reach, Rule, Violation};

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

/// One aggregate of a dp answer, as the contribution bounds and the noise treat it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DpAggregate {
    /// `COUNT(*)` or `COUNT(expr)`: rows, at most `max_rows` per person and group.
    CountRows,
    /// `COUNT(DISTINCT unit)`: people, one per person and group.
    CountPeople,
    /// `SUM(column)` of a column with declared bounds.
    Sum {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// `AVG(column)` of a column with declared bounds: a noisy sum over a noisy count.
    Avg {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
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
    if ctx.mode == Mode::Deidentified {
        return Err(Violation::new(
            Rule::DeidentifiedReadsExtracts,
            None,
            "deidentified mode reads approved extracts, never source datasets: ask for an extract with a de-identified access request",
        ));
    }
    let mut reach = Reach { contribution: Contribution::default(), one_row_per_person: false };
    if ctx.mode == Mode::Dp {
        let agg = dp_shape::check(plan)?;
        reach = ctx.reach(&agg.input);
    }
    let anonymized = ctx.mode == Mode::Aggregate && !ctx.exact_aggregates && anon_shape::applies(plan, ctx);
    if anonymized {
        anon_shape::check(plan)?;
    }
    let mut walk = Walk {
        ctx,
        sources: Sources::default(),
        rules: BTreeSet::new(),
        linked: false,
        unit_linked: false,
        counts_people: false,
        dp: Vec::new(),
        dp_public_keys: None,
        contribution: reach.contribution,
        anonymized,
        over_people: ctx.datasets.values().any(|d| d.privacy_unit.is_some()),
    };
    let root = walk.plan(plan, &[])?;
    match ctx.mode {
        Mode::Aggregate => {
            return_only_aggregates::check_output(&root, plan.schema())?;
            walk.note("return_only_aggregates", "every output column is an aggregate or a group key".into());
            if anonymized {
                walk.note(
                    "anonymized",
                    "anonymized, not differentially private: values clamped to their declared bounds; each group's two largest contributions flattened to the average of its next four; every count and sum carries sticky noise seeded by the group's people and by the query (standard deviation about that average, at least 1 on counts); groups need k people and a noisy margin"
                        .into(),
                );
            }
            if walk.counts_people && ctx.k > 0 {
                walk.note(
                    "min_group_size",
                    format!(
                        "groups with fewer than {} distinct people are withheld; how many, only the audit record says",
                        ctx.k
                    ),
                );
            }
        }
        Mode::Dp => {
            return_only_aggregates::check_output(&root, plan.schema())?;
            if !walk.counts_people {
                return Err(Violation::new(
                    Rule::DpShape,
                    None,
                    "dp mode protects people, and no dataset of this query declares a privacy unit; use aggregate mode",
                ));
            }
            let c = walk.contribution;
            let clamps: Vec<String> = walk
                .dp
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
            walk.note(
                "contribution_bounds",
                format!(
                    "each person counts in at most {} group(s) (sampled at random) with at most {} row(s) each{clamped}; the intervals cover these bounded values",
                    c.max_groups, c.max_rows
                ),
            );
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

/// A node's schema and lineage, as expressions over it see them.
#[derive(Clone, Copy)]
struct Scope<'a> {
    schema: &'a DFSchema,
    lineage: &'a [ColumnLineage],
    grain: Grain,
}

struct Walk<'a> {
    ctx: &'a GuardContext,
    sources: Sources,
    rules: BTreeSet<AppliedRule>,
    /// Set when a condition ties a subquery to its outer row by linkable identifiers.
    linked: bool,
    /// Set when that condition equates the privacy units of both sides (dp mode needs it).
    unit_linked: bool,
    counts_people: bool,
    /// Dp mode: the aggregates of the answer's one aggregate, in order.
    dp: Vec<DpAggregate>,
    /// Dp mode: the contribution bounds of the answer.
    contribution: Contribution,
    /// Dp mode: the group keys' public domains, if every key has one.
    dp_public_keys: Option<Vec<Vec<String>>>,
    /// Aggregate mode over data about people ([`anon_shape`]).
    anonymized: bool,
    /// Whether the query may read data about people (its session holds a dataset with a
    /// privacy unit): then every expression must be total ([`total_expressions`]).
    over_people: bool,
}

fn unsupported(what: impl Into<String>) -> Violation {
    Violation::new(Rule::UnsupportedSql, None, what)
}

impl Walk<'_> {
    fn note(&mut self, code: &'static str, detail: String) {
        self.rules.insert(AppliedRule { code, detail });
    }

    fn mode(&self) -> Mode {
        self.ctx.mode
    }

    /// Whether `column` is a dataset's privacy unit, bare (cast at most one-to-one).
    fn is_unit(&self, column: &ColumnLineage) -> bool {
        !column.aggregated && !column.recast && column.bare.is_some_and(|s| self.sources.get(s).unit)
    }

    /// `a` and `b` by name, when both are privacy units but at least one is cast in a way that
    /// is not one-to-one ("7", "07" and "007" all become 7.0): a link that is refused, named.
    fn recast_units(&self, a: &ColumnLineage, b: &ColumnLineage) -> Option<String> {
        let (x, y) = (self.unit_name(a)?, self.unit_name(b)?);
        (a.recast || b.recast).then(|| format!("{x} and {y}"))
    }

    /// The name of the privacy unit `c` is (cast or not), if it is one.
    fn unit_name(&self, c: &ColumnLineage) -> Option<&str> {
        c.bare.filter(|s| !c.aggregated && self.sources.get(*s).unit).map(|s| self.sources.get(s).name.as_str())
    }

    /// Whether `plan` reads a dataset about people.
    fn personal(&self, plan: &LogicalPlan) -> bool {
        plan.exists(|node| {
            Ok(matches!(node, LogicalPlan::TableScan(scan)
                if self.ctx.dataset(scan.table_name.schema(), scan.table_name.table())
                    .is_some_and(|d| d.privacy_unit.is_some())))
        })
        .unwrap_or(true)
    }

    /// Whether a join condition equates a privacy unit of the left input (the first
    /// `left_columns` columns of `scope`) with one of the right input.
    fn links_units(
        &mut self,
        filter: &Expr,
        scope: Scope<'_>,
        left_columns: usize,
        outer: &[Scope<'_>],
    ) -> Result<bool, Violation> {
        let mut recast = None;
        for conjunct in split_conjunction(filter) {
            let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = conjunct else { continue };
            let (Some(a), Some(b)) = (column_of(left), column_of(right)) else { continue };
            let (Some(ia), Some(ib)) = (scope.schema.maybe_index_of_column(a), scope.schema.maybe_index_of_column(b))
            else {
                continue;
            };
            let sides_differ = (ia < left_columns) != (ib < left_columns);
            if !sides_differ {
                continue;
            }
            let (l, r) = (self.expr(left, scope, outer)?, self.expr(right, scope, outer)?);
            if self.is_unit(&l) && self.is_unit(&r) {
                return Ok(true);
            }
            recast = recast.or_else(|| self.recast_units(&l, &r));
        }
        match recast {
            Some(names) if self.mode() == Mode::Dp => Err(dp_shape::people_not_linked(&format!(
                "{names} are privacy units compared through a cast or conversion that is not one-to-one (\"7\", \"07\" and \"007\" all equal 7): link them uncast, with the same type"
            ))),
            _ => Ok(false),
        }
    }

    fn plan(&mut self, plan: &LogicalPlan, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        deny_reserved_names::check(plan.schema())?;
        match plan {
            LogicalPlan::TableScan(scan) => {
                let info = self.ctx.dataset(scan.table_name.schema(), scan.table_name.table()).ok_or_else(|| {
                    Violation::new(Rule::UnknownTable, None, "the query reads a table outside the session")
                })?;
                let dataset = match scan.table_name.schema() {
                    Some(s) => format!("{s}.{}", scan.table_name.table()),
                    None => scan.table_name.table().to_owned(),
                };
                if info.privacy_unit.is_some() {
                    self.counts_people = true;
                }
                let mut columns = Vec::new();
                for field in scan.projected_schema.fields() {
                    let c = info
                        .columns
                        .get(field.name())
                        .ok_or_else(|| unsupported(format!("column `{}` of {dataset} has no tag", field.name())))?;
                    let src = self.sources.add(SourceColumn {
                        name: format!("{dataset}.{}", field.name()),
                        tag: c.tag,
                        linkable: c.linkable,
                        generalize: c.generalize,
                        unit: info.privacy_unit.as_deref() == Some(field.name().as_str()),
                        bounds: c.bounds,
                        public_values: c.public_values.clone(),
                    });
                    columns.push(ColumnLineage::source(src));
                }
                let node = NodeLineage { columns, grain: Grain::Rows };
                let scope = Scope { schema: &scan.projected_schema, lineage: &node.columns, grain: Grain::Rows };
                for f in &scan.filters {
                    self.condition(f, scope, outer)?;
                }
                if scan.fetch.is_some() {
                    self.limit(Grain::Rows)?;
                }
                Ok(node)
            }
            LogicalPlan::Projection(p) => {
                let input = self.plan(&p.input, outer)?;
                let scope = Scope { schema: p.input.schema(), lineage: &input.columns, grain: input.grain };
                let columns = p.expr.iter().map(|e| self.expr(e, scope, outer)).collect::<Result<_, _>>()?;
                Ok(NodeLineage { columns, grain: input.grain })
            }
            LogicalPlan::Filter(f) => {
                let input = self.plan(&f.input, outer)?;
                let scope = Scope { schema: f.input.schema(), lineage: &input.columns, grain: input.grain };
                self.condition(&f.predicate, scope, outer)?;
                Ok(input)
            }
            LogicalPlan::Sort(s) => {
                let input = self.plan(&s.input, outer)?;
                let scope = Scope { schema: s.input.schema(), lineage: &input.columns, grain: input.grain };
                for key in &s.expr {
                    let l = self.expr(&key.expr, scope, outer)?;
                    deny_identifier_use::as_order_key(&l, &self.sources)?;
                }
                if s.fetch.is_some() {
                    self.limit(input.grain)?;
                }
                Ok(input)
            }
            LogicalPlan::Limit(l) => {
                let input = self.plan(&l.input, outer)?;
                self.limit(input.grain)?;
                Ok(input)
            }
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input, outer),
            LogicalPlan::Subquery(s) => self.plan(&s.subquery, outer),
            LogicalPlan::Union(u) => {
                let mut merged: Option<NodeLineage> = None;
                for input in &u.inputs {
                    let branch = self.plan(input, outer)?;
                    merged = Some(match merged {
                        None => branch,
                        Some(m) => NodeLineage {
                            columns: m.columns.iter().zip(&branch.columns).map(|(a, b)| a.union(b)).collect(),
                            grain: m.grain.combine(branch.grain),
                        },
                    });
                }
                merged.ok_or_else(|| unsupported("a set operation without inputs"))
            }
            LogicalPlan::Join(j) => {
                let people_on = (self.personal(&j.left), self.personal(&j.right));
                if (people_on.0 || people_on.1) && !equi_join(j) {
                    return Err(Violation::new(
                        Rule::JoinWithoutKey,
                        None,
                        "a join over data about people needs an equality of columns (ON a.x = b.y): a cross or non-equi join multiplies one person's rows without a bound known before it runs, and that shows in time, memory and failures",
                    ));
                }
                let left = self.plan(&j.left, outer)?;
                let right = self.plan(&j.right, outer)?;
                let ls = Scope { schema: j.left.schema(), lineage: &left.columns, grain: left.grain };
                let rs = Scope { schema: j.right.schema(), lineage: &right.columns, grain: right.grain };
                let mut unit_link = false;
                // Whether some equality compares a column with a column, not computed values: a
                // constant key (`0 AS k = code * 0`) joins every row with every row.
                let mut keyed = false;
                for (l, r) in &j.on {
                    let ll = self.expr(l, ls, outer)?;
                    let rl = self.expr(r, rs, outer)?;
                    unit_link |= self.is_unit(&ll) && self.is_unit(&rl);
                    keyed |= ll.bare.is_some() && rl.bare.is_some();
                    if let Some((a, b)) = deny_identifier_use::as_join_key(&ll, &rl, &self.sources)? {
                        self.note("linkable_join", format!("{a} = {b} is joined inside the broker"));
                    }
                }
                let grain = left.grain.combine(right.grain);
                let mut both = left.columns.clone();
                both.extend(right.columns.iter().cloned());
                if let Some(filter) = &j.filter {
                    let joined = DFSchema::join(j.left.schema(), j.right.schema())
                        .map_err(|_| unsupported("a join whose inputs share column names"))?;
                    let scope = Scope { schema: &joined, lineage: &both, grain };
                    self.condition(filter, scope, outer)?;
                    unit_link |= self.links_units(filter, scope, left.columns.len(), outer)?;
                    let side = |e: &Expr| {
                        column_of(e).and_then(|c| joined.maybe_index_of_column(c)).map(|i| i < left.columns.len())
                    };
                    for conjunct in split_conjunction(filter) {
                        if let Expr::BinaryExpr(BinaryExpr { left: a, op: Operator::Eq, right: b }) = conjunct
                            && matches!((side(a), side(b)), (Some(x), Some(y)) if x != y)
                        {
                            let (a, b) = (self.expr(a, scope, outer)?, self.expr(b, scope, outer)?);
                            keyed |= a.bare.is_some() && b.bare.is_some();
                        }
                    }
                }
                if (people_on.0 || people_on.1) && !keyed {
                    return Err(Violation::new(
                        Rule::JoinWithoutKey,
                        None,
                        "a join over data about people needs an equality of two columns as they are stored (ON a.x = b.y), not of computed values: a constant or computed key can join every row with every row, and that shows in time",
                    ));
                }
                if people_on == (true, true) && !unit_link {
                    if self.anonymized {
                        return Err(Violation::new(
                            Rule::AnonShape,
                            None,
                            "a join of two datasets about people must equate their privacy units (JOIN … ON a.unit = b.unit), so that thresholds and noise count each person once",
                        ));
                    }
                    if self.mode() == Mode::Dp {
                        return Err(dp_shape::people_not_linked(
                            "a join of two datasets about people must equate their privacy units (JOIN … ON a.unit = b.unit), so that every joined row is about one person",
                        ));
                    }
                }
                let columns = match j.join_type {
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => both,
                    JoinType::LeftSemi | JoinType::LeftAnti => left.columns,
                    JoinType::RightSemi | JoinType::RightAnti => right.columns,
                    JoinType::LeftMark | JoinType::RightMark => return Err(unsupported("mark joins")),
                };
                Ok(NodeLineage { columns, grain })
            }
            LogicalPlan::Aggregate(agg) => {
                let input = self.plan(&agg.input, outer)?;
                let scope = Scope { schema: agg.input.schema(), lineage: &input.columns, grain: input.grain };
                let keys = grouping_set_to_exprlist(&agg.group_expr).map_err(|_| unsupported("this GROUP BY"))?;
                let mut columns = Vec::new();
                let mut domains = Some(Vec::new());
                for key in &keys {
                    let l = self.expr(key, scope, outer)?;
                    deny_identifier_use::as_group_key(&l, &self.sources)?;
                    let domain =
                        l.bare.filter(|_| !l.aggregated).and_then(|s| self.sources.get(s).public_values.clone());
                    domains = domains.zip(domain).map(|(mut all, d)| {
                        all.push(d);
                        all
                    });
                    columns.push(ColumnLineage { aggregated: false, ..l });
                }
                if self.mode() == Mode::Dp && !keys.is_empty() {
                    self.dp_public_keys = dp_shape::public_keys(domains)?;
                    if self.dp_public_keys.is_some() {
                        self.note(
                            "public_groups",
                            "every group key has a public list of values: every listed group is released, noisy, with no threshold".into(),
                        );
                    }
                }
                if agg.schema.fields().len() > keys.len() + agg.aggr_expr.len() {
                    // The grouping-set id DataFusion adds after the keys.
                    columns.push(ColumnLineage::default());
                }
                for e in &agg.aggr_expr {
                    let Expr::AggregateFunction(f) = unalias(e) else {
                        return Err(unsupported("an aggregate expression that is not a function call"));
                    };
                    columns.push(self.aggregate_call(f, scope, outer)?);
                }
                let grain = if input.grain == Grain::NoData { Grain::NoData } else { Grain::Groups };
                Ok(NodeLineage { columns, grain })
            }
            LogicalPlan::Window(w) => {
                let input = self.plan(&w.input, outer)?;
                return_only_aggregates::check_window(input.grain)?;
                let scope = Scope { schema: w.input.schema(), lineage: &input.columns, grain: input.grain };
                let mut columns = input.columns.clone();
                for e in &w.window_expr {
                    let Expr::WindowFunction(f) = unalias(e) else {
                        return Err(unsupported("a window expression that is not a function call"));
                    };
                    columns.push(self.window_call(f, scope, outer)?);
                }
                Ok(NodeLineage { columns, grain: input.grain })
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let inner = self.plan(input, outer)?;
                for c in &inner.columns {
                    deny_identifier_use::as_group_key(c, &self.sources)?;
                }
                let grain = if inner.grain == Grain::NoData { Grain::NoData } else { Grain::Groups };
                Ok(NodeLineage { columns: inner.columns, grain })
            }
            LogicalPlan::EmptyRelation(e) => Ok(NodeLineage {
                columns: vec![ColumnLineage::default(); e.schema.fields().len()],
                grain: Grain::NoData,
            }),
            LogicalPlan::Values(v) => {
                let scope = Scope { schema: &v.schema, lineage: &[], grain: Grain::NoData };
                for row in &v.values {
                    for e in row {
                        self.expr(e, scope, outer)?;
                    }
                }
                Ok(NodeLineage {
                    columns: vec![ColumnLineage::default(); v.schema.fields().len()],
                    grain: Grain::NoData,
                })
            }
            other => Err(unsupported(format!(
                "only a single read-only query (SELECT, WITH, UNION …) is allowed; this is {}",
                node_name(other)
            ))),
        }
    }

    fn limit(&self, grain: Grain) -> Result<(), Violation> {
        if self.mode() == Mode::Aggregate { return_only_aggregates::check_limit(grain) } else { Ok(()) }
    }

    /// A condition (WHERE, HAVING, JOIN … ON filter): conjuncts that equate two linkable
    /// identifiers are joins; every other conjunct may not touch an identifier.
    fn condition(&mut self, predicate: &Expr, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<(), Violation> {
        for conjunct in split_conjunction(predicate) {
            if self.linkable_equality(conjunct, scope, outer)? {
                continue;
            }
            let l = self.expr(conjunct, scope, outer)?;
            deny_identifier_use::in_condition(&l, &self.sources)?;
        }
        Ok(())
    }

    /// Whether `e` is `a = b` over two bare linkable identifiers (possibly one from the outer
    /// query, which ties a subquery to its outer row).
    fn linkable_equality(&mut self, e: &Expr, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<bool, Violation> {
        let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = e else {
            return Ok(false);
        };
        if column_of(left).is_none() || column_of(right).is_none() {
            return Ok(false);
        }
        let l = self.expr(left, scope, outer)?;
        let r = self.expr(right, scope, outer)?;
        match deny_identifier_use::as_join_key(&l, &r, &self.sources) {
            Ok(Some((a, b))) => {
                self.note("linkable_join", format!("{a} = {b} is joined inside the broker"));
                if is_outer_ref(left) || is_outer_ref(right) {
                    self.linked = true;
                    self.unit_linked |= self.is_unit(&l) && self.is_unit(&r);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn aggregate_call(
        &mut self,
        f: &AggregateFunction,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
    ) -> Result<ColumnLineage, Violation> {
        let args = f.params.args.iter().map(|a| self.expr(a, scope, outer)).collect::<Result<Vec<_>, _>>()?;
        if let Some(filter) = &f.params.filter {
            self.condition(filter, scope, outer)?;
        }
        for o in &f.params.order_by {
            let l = self.expr(&o.expr, scope, outer)?;
            deny_identifier_use::as_order_key(&l, &self.sources)?;
        }
        restrict_aggregates::check(f.func.name(), &args, &self.sources)?;
        if self.mode() == Mode::Dp {
            let kind = dp_shape::aggregate(f, &args, &self.sources, self.contribution.max_rows)?;
            self.dp.push(kind);
        } else if self.anonymized && scope.grain == Grain::Rows {
            // The answer's aggregate over people's rows; one over released groups reworks them.
            // A boolean column (true as 1) is bounded by its type: SUM and AVG give counts and
            // shares.
            let boolean = f.params.args.first().and_then(column_of).is_some_and(|c| {
                scope.schema.qualified_field_from_column(c).is_ok_and(|(_, f)| f.data_type() == &DataType::Boolean)
            });
            self.dp.push(anon_shape::aggregate(f, &args, &self.sources, boolean)?);
        }
        let mut out = ColumnLineage::derived(&args);
        out.aggregated = true;
        Ok(out)
    }

    fn window_call(
        &mut self,
        f: &WindowFunction,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
    ) -> Result<ColumnLineage, Violation> {
        let mut parts = Vec::new();
        for e in f.params.args.iter().chain(&f.params.partition_by) {
            parts.push(self.expr(e, scope, outer)?);
        }
        for o in &f.params.order_by {
            parts.push(self.expr(&o.expr, scope, outer)?);
        }
        if let Some(filter) = &f.params.filter {
            self.condition(filter, scope, outer)?;
        }
        match &f.fun {
            WindowFunctionDefinition::AggregateUDF(udf) => {
                restrict_aggregates::check(udf.name(), &parts, &self.sources)?;
            }
            WindowFunctionDefinition::WindowUDF(udf) => {
                if !allow_listed_functions::is_window_function(udf.name()) {
                    return Err(Violation::new(
                        Rule::FunctionNotAllowed,
                        None,
                        format!("window function `{}` is not allowed", udf.name()),
                    ));
                }
            }
        }
        let mut out = ColumnLineage::derived(&parts);
        out.aggregated = scope.grain != Grain::Rows;
        Ok(out)
    }

    /// A subquery inside an expression: walked with the current node as its outer scope. Over
    /// rows, it must be tied to the outer row by linkable identifiers.
    fn subquery(
        &mut self,
        sub: &Subquery,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
        linked_by_caller: bool,
    ) -> Result<NodeLineage, Violation> {
        let mut scopes = outer.to_vec();
        scopes.push(scope);
        let saved = std::mem::replace(&mut self.linked, false);
        let saved_units = std::mem::replace(&mut self.unit_linked, false);
        let node = self.plan(&sub.subquery, &scopes);
        let linked = std::mem::replace(&mut self.linked, saved);
        let unit_linked = std::mem::replace(&mut self.unit_linked, saved_units);
        let node = node?;
        if self.mode() == Mode::Dp && self.personal(&sub.subquery) && !unit_linked && !linked_by_caller {
            return Err(dp_shape::people_not_linked(
                "a subquery about people must be tied to the outer row by equal privacy units (WHERE inner.unit = outer.unit)",
            ));
        }
        if node.grain == Grain::Rows && !linked && !linked_by_caller {
            return Err(Violation::new(
                Rule::UnlinkedSubquery,
                None,
                "a subquery over rows must be tied to the outer row by an equality of linkable identifiers; aggregate inside it instead",
            ));
        }
        Ok(node)
    }

    /// A column's lineage: from the node's own input, else from the enclosing queries.
    fn column(&self, c: &Column, scope: Option<Scope<'_>>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
        for s in scope.iter().chain(outer.iter().rev()) {
            if let Some(i) = s.schema.maybe_index_of_column(c) {
                return s.lineage.get(i).cloned().ok_or_else(|| unsupported("a column the guard could not trace"));
            }
        }
        Err(unsupported(format!("column `{}` could not be traced", c.name)))
    }

    /// The lineage of an expression, applying the expression-level rules.
    fn expr(&mut self, e: &Expr, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
        let mode = self.mode();
        match e {
            Expr::Alias(a) => self.expr(&a.expr, scope, outer),
            Expr::Column(c) => self.column(c, Some(scope), outer),
            Expr::OuterReferenceColumn(_, c) => self.column(c, None, outer),
            // A constant is as long as it is: it counts like a value it is made from.
            Expr::Literal(value, _) => {
                if self.over_people {
                    total_expressions::literal(value)?;
                }
                Ok(ColumnLineage { growth: 1, ..ColumnLineage::default() })
            }
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                let mut inner = self.expr(expr, scope, outer)?;
                let from = expr.get_type(scope.schema).ok();
                inner.recast |= !from.is_some_and(|from| one_to_one(&from, field.data_type()));
                Ok(inner)
            }
            Expr::BinaryExpr(b) => {
                if self.over_people {
                    total_expressions::binary(b, scope.schema)?;
                }
                let l = self.expr(&b.left, scope, outer)?;
                let r = self.expr(&b.right, scope, outer)?;
                if matches!(b.op, Operator::NotEq | Operator::Or | Operator::IsDistinctFrom) {
                    let construct = format!("`{}`", b.op);
                    deny_complement_conditions::check(mode, scope.grain, &construct, &[&l, &r], &self.sources)?;
                }
                if b.op.negate().is_some() || b.op.is_logic_operator() {
                    deny_identifier_use::in_condition(&l, &self.sources)?;
                    deny_identifier_use::in_condition(&r, &self.sources)?;
                } else {
                    deny_identifier_use::in_expression(&l, &self.sources)?;
                    deny_identifier_use::in_expression(&r, &self.sources)?;
                }
                let mut out = ColumnLineage::derived([&l, &r]);
                if b.op == Operator::StringConcat {
                    out.growth = l.growth.saturating_add(r.growth);
                    if self.over_people {
                        total_expressions::growth("||", out.growth)?;
                    }
                }
                Ok(out)
            }
            Expr::Like(like) | Expr::SimilarTo(like) => {
                if self.over_people {
                    total_expressions::like(like, matches!(e, Expr::SimilarTo(_)))?;
                }
                let l = self.expr(&like.expr, scope, outer)?;
                let p = self.expr(&like.pattern, scope, outer)?;
                if like.negated {
                    deny_complement_conditions::check(mode, scope.grain, "NOT LIKE", &[&l, &p], &self.sources)?;
                }
                deny_identifier_use::in_condition(&l, &self.sources)?;
                deny_identifier_use::in_condition(&p, &self.sources)?;
                Ok(ColumnLineage::derived([&l, &p]))
            }
            Expr::Not(inner) => {
                let l = self.expr(inner, scope, outer)?;
                deny_complement_conditions::check(mode, scope.grain, "NOT", &[&l], &self.sources)?;
                deny_identifier_use::in_condition(&l, &self.sources)?;
                Ok(ColumnLineage::derived([&l]))
            }
            Expr::IsNotNull(inner)
            | Expr::IsNull(inner)
            | Expr::IsTrue(inner)
            | Expr::IsFalse(inner)
            | Expr::IsUnknown(inner)
            | Expr::IsNotTrue(inner)
            | Expr::IsNotFalse(inner)
            | Expr::IsNotUnknown(inner) => {
                let l = self.expr(inner, scope, outer)?;
                deny_identifier_use::in_condition(&l, &self.sources)?;
                Ok(ColumnLineage::derived([&l]))
            }
            Expr::Negative(inner) => {
                let l = self.expr(inner, scope, outer)?;
                deny_identifier_use::in_expression(&l, &self.sources)?;
                Ok(ColumnLineage::derived([&l]))
            }
            Expr::Between(b) => {
                let parts = [
                    self.expr(&b.expr, scope, outer)?,
                    self.expr(&b.low, scope, outer)?,
                    self.expr(&b.high, scope, outer)?,
                ];
                if b.negated {
                    let ops: Vec<&ColumnLineage> = parts.iter().collect();
                    deny_complement_conditions::check(mode, scope.grain, "NOT BETWEEN", &ops, &self.sources)?;
                }
                for p in &parts {
                    deny_identifier_use::in_condition(p, &self.sources)?;
                }
                Ok(ColumnLineage::derived(&parts))
            }
            Expr::Case(case) => {
                let mut parts = Vec::new();
                if let Some(operand) = &case.expr {
                    let l = self.expr(operand, scope, outer)?;
                    deny_identifier_use::in_condition(&l, &self.sources)?;
                    parts.push(l);
                }
                for (when, then) in &case.when_then_expr {
                    let w = self.expr(when, scope, outer)?;
                    deny_identifier_use::in_condition(&w, &self.sources)?;
                    let t = self.expr(then, scope, outer)?;
                    deny_identifier_use::in_expression(&t, &self.sources)?;
                    parts.push(w);
                    parts.push(t);
                }
                if let Some(otherwise) = &case.else_expr {
                    let l = self.expr(otherwise, scope, outer)?;
                    deny_identifier_use::in_expression(&l, &self.sources)?;
                    parts.push(l);
                }
                Ok(ColumnLineage::derived(&parts))
            }
            Expr::ScalarFunction(f) => {
                allow_listed_functions::check_scalar(f.func.name(), &f.args)?;
                if self.over_people {
                    total_expressions::function(f.func.name(), &f.args)?;
                }
                let mut parts = Vec::new();
                for a in &f.args {
                    let l = self.expr(a, scope, outer)?;
                    deny_identifier_use::in_expression(&l, &self.sources)?;
                    parts.push(l);
                }
                let mut out = ColumnLineage::derived(&parts);
                out.growth = total_expressions::text_growth(f.func.name(), &f.args, &parts, out.growth);
                if self.over_people {
                    total_expressions::growth(f.func.name(), out.growth)?;
                }
                Ok(out)
            }
            Expr::InList(list) => {
                let mut parts = vec![self.expr(&list.expr, scope, outer)?];
                for item in &list.list {
                    parts.push(self.expr(item, scope, outer)?);
                }
                if list.negated {
                    let ops: Vec<&ColumnLineage> = parts.iter().collect();
                    deny_complement_conditions::check(mode, scope.grain, "NOT IN", &ops, &self.sources)?;
                }
                for p in &parts {
                    deny_identifier_use::in_condition(p, &self.sources)?;
                }
                Ok(ColumnLineage::derived(&parts))
            }
            Expr::Exists(Exists { subquery, .. }) => {
                self.subquery(subquery, scope, outer, false)?;
                Ok(ColumnLineage::default())
            }
            Expr::InSubquery(InSubquery { expr, subquery, .. }) => {
                let l = self.expr(expr, scope, outer)?;
                if mode == Mode::Dp
                    && l.recast
                    && let Some(column) = self.unit_name(&l)
                {
                    return Err(dp_shape::people_not_linked(&format!(
                        "{column} is a privacy unit cast or converted in a way that is not one-to-one (\"7\", \"07\" and \"007\" all equal 7): compare it uncast, with a unit of the same type"
                    )));
                }
                // `x IN (SELECT y …)` with both linkable identifiers is a semi-join.
                let linkable_probe = column_of(expr).is_some() && l.is_linkable_key(&self.sources);
                let node = self.subquery(subquery, scope, outer, linkable_probe)?;
                let out = node.columns.first().cloned().unwrap_or_default();
                if mode == Mode::Dp
                    && linkable_probe
                    && self.personal(&subquery.subquery)
                    && !(self.is_unit(&l) && self.is_unit(&out))
                {
                    if let Some(names) = self.recast_units(&l, &out) {
                        return Err(dp_shape::people_not_linked(&format!(
                            "{names} are privacy units compared through a cast or conversion that is not one-to-one (\"7\", \"07\" and \"007\" all equal 7): link them uncast, with the same type"
                        )));
                    }
                    return Err(dp_shape::people_not_linked(
                        "`unit IN (SELECT unit …)` about people must compare the privacy units of both datasets",
                    ));
                }
                if linkable_probe && out.is_linkable_key(&self.sources) {
                    if let (Some(a), Some(b)) = (l.bare, out.bare) {
                        let (a, b) = (self.sources.get(a).name.clone(), self.sources.get(b).name.clone());
                        self.note("linkable_join", format!("{a} IN {b} is joined inside the broker"));
                    }
                    return Ok(ColumnLineage::default());
                }
                if linkable_probe && node.grain == Grain::Rows {
                    return Err(Violation::new(
                        Rule::UnlinkedSubquery,
                        None,
                        "`IN (SELECT …)` over rows must compare linkable identifiers on both sides",
                    ));
                }
                deny_identifier_use::in_condition(&l, &self.sources)?;
                deny_identifier_use::in_condition(&out, &self.sources)?;
                Ok(ColumnLineage::derived([&l, &out]))
            }
            Expr::ScalarSubquery(sub) => {
                let node = self.subquery(sub, scope, outer, false)?;
                Ok(node.columns.first().cloned().unwrap_or_default())
            }
            Expr::AggregateFunction(_) => Err(unsupported("an aggregate function in this position")),
            Expr::WindowFunction(_) => Err(unsupported("a window function in this position")),
            Expr::GroupingSet(_) => Err(unsupported("a grouping set in this position")),
            Expr::SetComparison(_) => Err(unsupported("ANY / ALL comparisons with a subquery")),
            Expr::Placeholder(_) => Err(unsupported("query parameters")),
            Expr::ScalarVariable(..) => Err(unsupported("variables")),
            Expr::Unnest(_) => Err(unsupported("UNNEST")),
            _ => Err(unsupported("this expression")),
        }
    }
}

/// `e` without its aliases.
pub(crate) fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
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
