//! The walk over plan nodes: one method per node kind, each deriving its columns' lineage
//! from its inputs' and applying the rules that belong to that node. Expressions are in
//! [`super::expr`].

use std::collections::BTreeSet;

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, JoinType};
use datafusion::logical_expr::utils::{grouping_set_to_exprlist, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Distinct, Expr, Filter, Join, LogicalPlan, Operator, Projection, Sort, TableScan, Union,
    Values, Window,
};
use veil_common::Mode;

use super::{AppliedRule, DpAggregate, column_of, equi_join, node_name, unalias};
use crate::lineage::{ColumnLineage, Grain, NodeLineage, SourceColumn, Sources};
use crate::rules::{anon_shape, deny_identifier_use, deny_reserved_names, dp_shape, return_only_aggregates};
use crate::{Contribution, GuardContext, Rule, Violation};

/// A node's schema and lineage, as expressions over it see them.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    pub(super) schema: &'a DFSchema,
    pub(super) lineage: &'a [ColumnLineage],
    pub(super) grain: Grain,
}

impl<'a> Scope<'a> {
    /// The scope of `node`'s rows, as its parent's expressions see them.
    fn of(schema: &'a DFSchema, node: &'a NodeLineage) -> Self {
        Self { schema, lineage: &node.columns, grain: node.grain }
    }
}

/// What the walk has learnt so far.
pub(super) struct Walk<'a> {
    pub(super) ctx: &'a GuardContext,
    pub(super) sources: Sources,
    pub(super) rules: BTreeSet<AppliedRule>,
    /// Set when a condition ties a subquery to its outer row by linkable identifiers.
    pub(super) linked: bool,
    /// Set when that condition equates the privacy units of both sides (dp mode needs it).
    pub(super) unit_linked: bool,
    pub(super) counts_people: bool,
    /// Dp mode, and aggregate mode over people: the aggregates of the answer's one aggregate,
    /// in order.
    pub(super) dp: Vec<DpAggregate>,
    /// Dp mode: the contribution bounds of the answer.
    pub(super) contribution: Contribution,
    /// Dp mode: the group keys' public domains, if every key has one.
    pub(super) dp_public_keys: Option<Vec<Vec<String>>>,
    /// Aggregate mode over data about people ([`anon_shape`]).
    pub(super) anonymized: bool,
    /// Whether the query may read data about people (its session holds a dataset with a
    /// privacy unit): then every expression must be total (`total_expressions`).
    pub(super) over_people: bool,
}

pub(super) fn unsupported(what: impl Into<String>) -> Violation {
    Violation::new(Rule::UnsupportedSql, None, what)
}

impl<'a> Walk<'a> {
    pub(super) fn new(ctx: &'a GuardContext, contribution: Contribution, anonymized: bool) -> Self {
        Self {
            ctx,
            sources: Sources::default(),
            rules: BTreeSet::new(),
            linked: false,
            unit_linked: false,
            counts_people: false,
            dp: Vec::new(),
            dp_public_keys: None,
            contribution,
            anonymized,
            over_people: ctx.datasets.values().any(|d| d.privacy_unit.is_some()),
        }
    }

    pub(super) fn note(&mut self, code: &'static str, detail: String) {
        self.rules.insert(AppliedRule { code, detail });
    }

    pub(super) fn mode(&self) -> Mode {
        self.ctx.mode
    }

    /// Whether `column` is a dataset's privacy unit, bare (cast at most one-to-one).
    pub(super) fn is_unit(&self, column: &ColumnLineage) -> bool {
        !column.aggregated && !column.recast && column.bare.is_some_and(|s| self.sources.get(s).unit)
    }

    /// `a` and `b` by name, when both are privacy units but at least one is cast in a way that
    /// is not one-to-one ("7", "07" and "007" all become 7.0): a link that is refused, named.
    pub(super) fn recast_units(&self, a: &ColumnLineage, b: &ColumnLineage) -> Option<String> {
        let (x, y) = (self.unit_name(a)?, self.unit_name(b)?);
        (a.recast || b.recast).then(|| format!("{x} and {y}"))
    }

    /// The name of the privacy unit `c` is (cast or not), if it is one.
    pub(super) fn unit_name(&self, c: &ColumnLineage) -> Option<&str> {
        c.bare.filter(|s| !c.aggregated && self.sources.get(*s).unit).map(|s| self.sources.get(s).name.as_str())
    }

    /// Whether `plan` reads a dataset about people.
    pub(super) fn personal(&self, plan: &LogicalPlan) -> bool {
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
            Some(names) if self.mode() == Mode::Dp => Err(dp_shape::recast_units(&names)),
            _ => Ok(false),
        }
    }

    /// A node's lineage, after the rules that belong to it.
    pub(super) fn plan(&mut self, plan: &LogicalPlan, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        deny_reserved_names::check(plan.schema())?;
        match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan, outer),
            LogicalPlan::Projection(p) => self.projection(p, outer),
            LogicalPlan::Filter(f) => self.filter(f, outer),
            LogicalPlan::Sort(s) => self.sort(s, outer),
            LogicalPlan::Limit(l) => {
                let input = self.plan(&l.input, outer)?;
                self.limit(input.grain)?;
                Ok(input)
            }
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input, outer),
            LogicalPlan::Subquery(s) => self.plan(&s.subquery, outer),
            LogicalPlan::Union(u) => self.union(u, outer),
            LogicalPlan::Join(j) => self.join(j, outer),
            LogicalPlan::Aggregate(agg) => self.aggregate(agg, outer),
            LogicalPlan::Window(w) => self.window(w, outer),
            LogicalPlan::Distinct(Distinct::All(input)) => self.distinct(input, outer),
            LogicalPlan::EmptyRelation(e) => Ok(NodeLineage {
                columns: vec![ColumnLineage::default(); e.schema.fields().len()],
                grain: Grain::NoData,
            }),
            LogicalPlan::Values(v) => self.values(v, outer),
            other => Err(unsupported(format!(
                "only a single read-only query (SELECT, WITH, UNION …) is allowed; this is {}",
                node_name(other)
            ))),
        }
    }

    /// A dataset's rows: each column's tag and bounds become its source; pushed-down filters
    /// are conditions like any other.
    fn scan(&mut self, scan: &TableScan, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let info = self
            .ctx
            .dataset(scan.table_name.schema(), scan.table_name.table())
            .ok_or_else(|| Violation::new(Rule::UnknownTable, None, "the query reads a table outside the session"))?;
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
        let scope = Scope::of(&scan.projected_schema, &node);
        for f in &scan.filters {
            self.condition(f, scope, outer)?;
        }
        if scan.fetch.is_some() {
            self.limit(Grain::Rows)?;
        }
        Ok(node)
    }

    fn projection(&mut self, p: &Projection, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let input = self.plan(&p.input, outer)?;
        let scope = Scope::of(p.input.schema(), &input);
        let columns = p.expr.iter().map(|e| self.expr(e, scope, outer)).collect::<Result<_, _>>()?;
        Ok(NodeLineage { columns, grain: input.grain })
    }

    fn filter(&mut self, f: &Filter, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let input = self.plan(&f.input, outer)?;
        self.condition(&f.predicate, Scope::of(f.input.schema(), &input), outer)?;
        Ok(input)
    }

    /// ORDER BY: no identifier as a key (the order would rank people by it).
    fn sort(&mut self, s: &Sort, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let input = self.plan(&s.input, outer)?;
        let scope = Scope::of(s.input.schema(), &input);
        for key in &s.expr {
            let l = self.expr(&key.expr, scope, outer)?;
            deny_identifier_use::as_order_key(&l, &self.sources)?;
        }
        if s.fetch.is_some() {
            self.limit(input.grain)?;
        }
        Ok(input)
    }

    /// LIMIT (or a sort or scan with a fetch): in aggregate mode only over groups.
    fn limit(&self, grain: Grain) -> Result<(), Violation> {
        if self.mode() == Mode::Aggregate { return_only_aggregates::check_limit(grain) } else { Ok(()) }
    }

    /// UNION: each output column is every branch's column.
    fn union(&mut self, u: &Union, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
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

    /// A join over data about people needs an equality of stored columns; two datasets about
    /// people must be joined on their privacy units in dp and anonymized answers.
    fn join(&mut self, j: &Join, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
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
        let (ls, rs) = (Scope::of(j.left.schema(), &left), Scope::of(j.right.schema(), &right));
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
            let side =
                |e: &Expr| column_of(e).and_then(|c| joined.maybe_index_of_column(c)).map(|i| i < left.columns.len());
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
                return Err(anon_shape::people_not_linked());
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

    /// GROUP BY: no identifier as a key; each aggregate call checked; the rows become groups.
    fn aggregate(&mut self, agg: &Aggregate, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let input = self.plan(&agg.input, outer)?;
        let scope = Scope::of(agg.input.schema(), &input);
        let keys = grouping_set_to_exprlist(&agg.group_expr).map_err(|_| unsupported("this GROUP BY"))?;
        let mut columns = Vec::new();
        let mut domains = Some(Vec::new());
        for key in &keys {
            let l = self.expr(key, scope, outer)?;
            deny_identifier_use::as_group_key(&l, &self.sources)?;
            let domain = l.bare.filter(|_| !l.aggregated).and_then(|s| self.sources.get(s).public_values.clone());
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

    /// A window: only over groups in aggregate mode; each window call checked.
    fn window(&mut self, w: &Window, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let input = self.plan(&w.input, outer)?;
        return_only_aggregates::check_window(input.grain)?;
        let scope = Scope::of(w.input.schema(), &input);
        let mut columns = input.columns.clone();
        for e in &w.window_expr {
            let Expr::WindowFunction(f) = unalias(e) else {
                return Err(unsupported("a window expression that is not a function call"));
            };
            columns.push(self.window_call(f, scope, outer)?);
        }
        Ok(NodeLineage { columns, grain: input.grain })
    }

    /// SELECT DISTINCT: a grouping by every column, so no identifier among them.
    fn distinct(&mut self, input: &LogicalPlan, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let inner = self.plan(input, outer)?;
        for c in &inner.columns {
            deny_identifier_use::as_group_key(c, &self.sources)?;
        }
        let grain = if inner.grain == Grain::NoData { Grain::NoData } else { Grain::Groups };
        Ok(NodeLineage { columns: inner.columns, grain })
    }

    /// A constant table: its expressions are checked like any other.
    fn values(&mut self, v: &Values, outer: &[Scope<'_>]) -> Result<NodeLineage, Violation> {
        let scope = Scope { schema: &v.schema, lineage: &[], grain: Grain::NoData };
        for row in &v.values {
            for e in row {
                self.expr(e, scope, outer)?;
            }
        }
        Ok(NodeLineage { columns: vec![ColumnLineage::default(); v.schema.fields().len()], grain: Grain::NoData })
    }
}
