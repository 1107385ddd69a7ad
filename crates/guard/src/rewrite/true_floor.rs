//! In aggregate mode `floor(x / w)` is a band of a grid, labelled by the interval it holds,
//! `[w·k, w·(k+1))` (`labels.rs`), and measured against ranges and the cells around it as
//! that interval. Over a signed integer x, `x / w` divides as integers, truncating toward zero,
//! so the band 0 also held −(w − 1) to −1: `floor(x / 500) = 0` and `x >= 0 AND x < 500` shared
//! their label but not their rows, and their answers were bit-identical exactly when nobody in
//! the group had a value in between (a red team, 2026-12-05: whether the target exists and
//! whether their value is below zero, 60 of 60 districts in two queries). The division under a
//! floor is made a floating-point one, so that the rows are the label's.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, cast};

use crate::exprs::uncast;

pub(super) fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    super::safe_arithmetic::each_expression(plan, floored)
}

/// `floor(x / w)` with x a signed integer as `floor(CAST(x AS Float64) / CAST(w AS Float64))`
/// (the floor's argument is a Float64 either way: its signature coerces integers to it).
fn floored(e: Expr, schema: Option<&DFSchema>) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(f) = &e else { return Ok(Transformed::no(e)) };
    let ([arg], "floor", Some(schema)) = (f.args.as_slice(), f.name(), schema) else {
        return Ok(Transformed::no(e));
    };
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Divide, right }) = uncast(arg) else {
        return Ok(Transformed::no(e));
    };
    if !left.get_type(schema).is_ok_and(|t| t.is_signed_integer()) {
        return Ok(Transformed::no(e));
    }
    let divided = Expr::BinaryExpr(BinaryExpr {
        left: Box::new(cast(left.as_ref().clone(), DataType::Float64)),
        op: Operator::Divide,
        right: Box::new(cast(right.as_ref().clone(), DataType::Float64)),
    });
    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction { func: f.func.clone(), args: vec![divided] })))
}
