//! The walk over expressions: one method per expression kind, each deriving the lineage of
//! its value from its parts' and applying the expression-level rules (identifiers, totality,
//! complements, the allow-list), and the conditions, aggregate and window calls and
//! subqueries that plan nodes hand over.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::logical_expr::expr::{
    AggregateFunction, Between, Case, Cast, Exists, InList, InSubquery, Like, ScalarFunction, TryCast, WindowFunction,
};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, Subquery, WindowFunctionDefinition};
use veil_common::Mode;

use super::walk::{Scope, Walk, unsupported};
use super::{column_of, is_outer_ref, one_to_one};
use crate::lineage::{ColumnLineage, Grain, NodeLineage};
use crate::rules::{
    allow_listed_functions, anon_shape, deny_complement_conditions, deny_identifier_use, dp_shape, restrict_aggregates,
    total_expressions,
};
use crate::{Rule, Violation};

impl Walk<'_> {
    /// A condition (WHERE, HAVING, JOIN … ON filter): conjuncts that equate two linkable
    /// identifiers are joins; every other conjunct may not touch an identifier.
    pub(super) fn condition(
        &mut self,
        predicate: &Expr,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
    ) -> Result<(), Violation> {
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

    /// An aggregate call: its arguments, FILTER and ORDER BY; what each mode admits.
    pub(super) fn aggregate_call(
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

    /// A window call: its arguments, partitions, order and FILTER; allow-listed functions.
    pub(super) fn window_call(
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
    pub(super) fn expr(&mut self, e: &Expr, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
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
            Expr::BinaryExpr(b) => self.binary(b, scope, outer),
            Expr::Like(like) => self.like(like, false, scope, outer),
            Expr::SimilarTo(like) => self.like(like, true, scope, outer),
            Expr::Not(inner) => {
                let l = self.expr(inner, scope, outer)?;
                self.complement("NOT", &[&l], scope)?;
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
            Expr::Between(b) => self.between(b, scope, outer),
            Expr::Case(case) => self.case(case, scope, outer),
            Expr::ScalarFunction(f) => self.scalar_function(f, scope, outer),
            Expr::InList(list) => self.in_list(list, scope, outer),
            Expr::Exists(Exists { subquery, .. }) => {
                self.subquery(subquery, scope, outer, false)?;
                Ok(ColumnLineage::default())
            }
            Expr::InSubquery(sub) => self.in_subquery(sub, scope, outer),
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

    /// A complement (`<>`, `OR`, `NOT`, `NOT IN`, …) of the given operands.
    fn complement(&self, construct: &str, operands: &[&ColumnLineage], scope: Scope<'_>) -> Result<(), Violation> {
        deny_complement_conditions::check(self.mode(), scope.grain, construct, operands, &self.sources)
    }

    fn binary(&mut self, b: &BinaryExpr, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
        if self.over_people {
            total_expressions::binary(b, scope.schema)?;
        }
        let l = self.expr(&b.left, scope, outer)?;
        let r = self.expr(&b.right, scope, outer)?;
        if matches!(b.op, Operator::NotEq | Operator::Or | Operator::IsDistinctFrom) {
            self.complement(&format!("`{}`", b.op), &[&l, &r], scope)?;
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

    /// LIKE, ILIKE and SIMILAR TO.
    fn like(
        &mut self,
        like: &Like,
        similar: bool,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
    ) -> Result<ColumnLineage, Violation> {
        if self.over_people {
            total_expressions::like(like, similar)?;
        }
        let l = self.expr(&like.expr, scope, outer)?;
        let p = self.expr(&like.pattern, scope, outer)?;
        if like.negated {
            self.complement("NOT LIKE", &[&l, &p], scope)?;
        }
        deny_identifier_use::in_condition(&l, &self.sources)?;
        deny_identifier_use::in_condition(&p, &self.sources)?;
        Ok(ColumnLineage::derived([&l, &p]))
    }

    fn between(&mut self, b: &Between, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
        let parts =
            [self.expr(&b.expr, scope, outer)?, self.expr(&b.low, scope, outer)?, self.expr(&b.high, scope, outer)?];
        if b.negated {
            let ops: Vec<&ColumnLineage> = parts.iter().collect();
            self.complement("NOT BETWEEN", &ops, scope)?;
        }
        for p in &parts {
            deny_identifier_use::in_condition(p, &self.sources)?;
        }
        Ok(ColumnLineage::derived(&parts))
    }

    /// CASE: its operand and WHEN arms are conditions, its THEN and ELSE arms values.
    fn case(&mut self, case: &Case, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
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

    /// A scalar function: allow-listed, total over people, text growth bounded.
    fn scalar_function(
        &mut self,
        f: &ScalarFunction,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
    ) -> Result<ColumnLineage, Violation> {
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

    fn in_list(&mut self, list: &InList, scope: Scope<'_>, outer: &[Scope<'_>]) -> Result<ColumnLineage, Violation> {
        let mut parts = vec![self.expr(&list.expr, scope, outer)?];
        for item in &list.list {
            parts.push(self.expr(item, scope, outer)?);
        }
        if list.negated {
            let ops: Vec<&ColumnLineage> = parts.iter().collect();
            self.complement("NOT IN", &ops, scope)?;
        }
        for p in &parts {
            deny_identifier_use::in_condition(p, &self.sources)?;
        }
        Ok(ColumnLineage::derived(&parts))
    }

    /// `x IN (SELECT y …)`: with both sides linkable identifiers, a semi-join inside the
    /// broker; over people in dp mode, only of equal privacy units.
    fn in_subquery(
        &mut self,
        sub: &InSubquery,
        scope: Scope<'_>,
        outer: &[Scope<'_>],
    ) -> Result<ColumnLineage, Violation> {
        let InSubquery { expr, subquery, .. } = sub;
        let l = self.expr(expr, scope, outer)?;
        let dp = self.mode() == Mode::Dp;
        if dp
            && l.recast
            && let Some(column) = self.unit_name(&l)
        {
            return Err(dp_shape::recast_unit(column));
        }
        let linkable_probe = column_of(expr).is_some() && l.is_linkable_key(&self.sources);
        let node = self.subquery(subquery, scope, outer, linkable_probe)?;
        let out = node.columns.first().cloned().unwrap_or_default();
        if dp && linkable_probe && self.personal(&subquery.subquery) && !(self.is_unit(&l) && self.is_unit(&out)) {
            return Err(match self.recast_units(&l, &out) {
                Some(names) => dp_shape::recast_units(&names),
                None => dp_shape::people_not_linked(
                    "`unit IN (SELECT unit …)` about people must compare the privacy units of both datasets",
                ),
            });
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
}
