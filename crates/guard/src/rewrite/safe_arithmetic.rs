//! Runtime errors are no side channel (design §3): `1 / (CASE WHEN <one person> THEN 0 ELSE 1
//! END)` fails only if that person exists. Each operation that fails on some values becomes
//! total, giving NULL (or the wrapped value) on every row alike:
//! - division and modulo: `NULLIF(divisor, 0)`, literal divisors too; for signed integers the
//!   divisor −1 is taken apart (`a / -1` is `0 - a`, wrapping like every integer subtraction;
//!   `a % -1` is 0), since the smallest value divided by −1 overflows;
//! - `sqrt(x)` is `sqrt(CASE WHEN x >= 0 THEN x END)`; `abs(x)` of a signed integer is NULL for
//!   the smallest value, whose absolute value does not exist in the type;
//! - casts become `TRY_CAST`.
//!
//! What cannot be made total this way is refused by the `total_expressions` rule. Names are
//! preserved so that the plan's schema does not change. Runs after type coercion, so the
//! constants take the operands' types.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue};
use datafusion::functions::expr_fn::nullif;
use datafusion::logical_expr::expr::{ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, lit, when};

pub(super) fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    each_expression(plan, safe)
}

/// `plan` with every expression of every node (subqueries' too) rewritten bottom-up by `f`,
/// given the schema the node's expressions are evaluated against; names are preserved, so
/// that the plan's schema does not change.
pub(super) fn each_expression(
    plan: LogicalPlan,
    f: impl Fn(Expr, Option<&DFSchema>) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema = input_schema(&node);
        let preserver = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let saved = preserver.save(&e);
            let out = e.transform_up(|e| f(e, schema.as_deref()))?;
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

fn safe(e: Expr, schema: Option<&DFSchema>) -> Result<Transformed<Expr>> {
    let type_of = |e: &Expr| schema.and_then(|s| e.get_type(s).ok());
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Divide | Operator::Modulo), right })
            if !is_safe_divisor(&right) =>
        {
            let Some(t) = type_of(&right) else {
                return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })));
            };
            let (Ok(zero), Ok(minus_one)) = (ScalarValue::new_zero(&t), ScalarValue::new_negative_one(&t)) else {
                return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })));
            };
            let divided = Expr::BinaryExpr(BinaryExpr {
                left: left.clone(),
                op,
                right: Box::new(nullif(*right.clone(), lit(zero.clone()))),
            });
            if !t.is_signed_integer() {
                return Ok(Transformed::yes(divided));
            }
            // By −1: the negation (wrapping), or 0 for the remainder.
            let by_minus_one = match op {
                Operator::Divide => {
                    Expr::BinaryExpr(BinaryExpr { left: Box::new(lit(zero)), op: Operator::Minus, right: left })
                }
                _ => lit(zero),
            };
            Ok(Transformed::yes(when(right.as_ref().clone().eq(lit(minus_one)), by_minus_one).otherwise(divided)?))
        }
        // The one argument made NULL where the function fails: a negative for `sqrt`, the
        // smallest integer for `abs`.
        Expr::ScalarFunction(f) if matches!(f.name(), "sqrt" | "abs") && f.args.len() == 1 => {
            let arg = &f.args[0];
            let valid = type_of(arg).and_then(|t| match f.name() {
                "sqrt" => ScalarValue::new_zero(&t).ok().map(|zero| arg.clone().gt_eq(lit(zero))),
                _ => smallest_integer(&t).map(|smallest| arg.clone().not_eq(lit(smallest))),
            });
            let Some(valid) = valid else { return Ok(Transformed::no(Expr::ScalarFunction(f))) };
            let guarded = when(valid, arg.clone()).end()?;
            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(f.func, vec![guarded]))))
        }
        Expr::Cast(c) if !is_literal(&c.expr) => {
            Ok(Transformed::yes(Expr::TryCast(TryCast::new_from_field(c.expr, c.field))))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// A literal divisor that can never fail: not zero, not −1, not NULL.
fn is_safe_divisor(e: &Expr) -> bool {
    match e {
        Expr::Literal(v, _) => matches!(
            v.cast_to(&datafusion::arrow::datatypes::DataType::Float64),
            Ok(ScalarValue::Float64(Some(x))) if x != 0.0 && x != -1.0 && x.is_finite()
        ),
        _ => false,
    }
}

/// The smallest value of a signed integer type, whose absolute value overflows.
fn smallest_integer(t: &datafusion::arrow::datatypes::DataType) -> Option<ScalarValue> {
    use datafusion::arrow::datatypes::DataType;
    match t {
        DataType::Int8 => Some(ScalarValue::Int8(Some(i8::MIN))),
        DataType::Int16 => Some(ScalarValue::Int16(Some(i16::MIN))),
        DataType::Int32 => Some(ScalarValue::Int32(Some(i32::MIN))),
        DataType::Int64 => Some(ScalarValue::Int64(Some(i64::MIN))),
        _ => None,
    }
}

fn is_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(..))
}
