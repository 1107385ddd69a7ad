//! Runtime errors are no side channel (design §3): `1 / (CASE WHEN <one person> THEN 0 ELSE 1
//! END)` fails only if that person exists. Division and modulo get `NULLIF(divisor, 0)`, and
//! casts become `TRY_CAST`, so a value that would fail gives NULL on every row alike. Names are
//! preserved so that the plan's schema does not change. Runs after type coercion, so the zero
//! takes the divisor's type.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue};
use datafusion::functions::expr_fn::nullif;
use datafusion::logical_expr::expr::TryCast;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, lit};

pub(super) fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema = input_schema(&node);
        let preserver = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let saved = preserver.save(&e);
            let out = e.transform_up(|e| Ok(safe(e, schema.as_deref())))?;
            Ok(out.update_data(|e| saved.restore(e)))
        })
    })
    .map(|t| t.data)
}

/// The schema a node's expressions are evaluated against.
fn input_schema(node: &LogicalPlan) -> Option<DFSchemaRef> {
    match node.inputs().as_slice() {
        [one] => Some(Arc::clone(one.schema())),
        [l, r] => DFSchema::join(l.schema(), r.schema()).ok().map(Arc::new),
        _ => None,
    }
}

fn safe(e: Expr, schema: Option<&DFSchema>) -> Transformed<Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Divide | Operator::Modulo), right })
            if !is_literal(&right) =>
        {
            let zero = schema.and_then(|s| right.get_type(s).ok()).and_then(|t| ScalarValue::new_zero(&t).ok());
            match zero {
                Some(zero) => {
                    let divisor = nullif(*right, lit(zero));
                    Transformed::yes(Expr::BinaryExpr(BinaryExpr { left, op, right: Box::new(divisor) }))
                }
                None => Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
            }
        }
        Expr::Cast(c) if !is_literal(&c.expr) => {
            Transformed::yes(Expr::TryCast(TryCast::new_from_field(c.expr, c.field)))
        }
        other => Transformed::no(other),
    }
}

fn is_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(..))
}
