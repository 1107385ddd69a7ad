//! In aggregate mode `floor(x / w)` is a band of a grid, labelled by the interval it holds,
//! `[w·k, w·(k+1))` (`labels.rs`), and measured against ranges and the cells around it as
//! that interval. SQL's floor of a division did not always put a value there:
//! - over a signed integer x, `x / w` divides as integers, truncating toward zero, so the band
//!   0 also held −(w − 1) to −1: `floor(x / 500) = 0` and `x >= 0 AND x < 500` shared their
//!   label but not their rows, and their answers were bit-identical exactly when nobody in the
//!   group had a value in between (a red team, 2026-12-05: whether the target exists and
//!   whether their value is below zero, 60 of 60 districts in two queries);
//! - over floats, `0.29 / 0.01` is 28.999999999999996, so the band 0.28 held 0.29 (a red team,
//!   2026-12-08; `grid.rs`).
//!
//! Each such floor is the guard's band function instead (`grid::band`), which puts a value in
//! the band whose decimal ends, read as a range's constants are, hold it.

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use crate::exprs::uncast;
use crate::grid::{Step, band, band_parts, floor_parts};

pub(super) fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    super::safe_arithmetic::each_expression(plan, floored)
}

/// `floor(x / w)`, w a width on the grid, as `__veil_band(CAST(x AS Float64), w, false)`, and
/// `floor(x / w) * w` as `__veil_band(CAST(x AS Float64), w, true)` (the band's start as the
/// float a query's constant for it is read as).
fn floored(e: Expr, _schema: Option<&DFSchema>) -> Result<Transformed<Expr>> {
    // Rewritten from the leaves up: the floor below is a band already.
    if let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Multiply, right }) = &e
        && let Some((x, w, false)) = band_parts(uncast(left))
        && let Some(width) = super::labels::width(w)
        && super::labels::width(right) == Some(width)
    {
        return Ok(Transformed::yes(band(uncast(x).clone(), width, true)));
    }
    match floor_of(&e) {
        Some((x, step)) => Ok(Transformed::yes(band(x.clone(), step.width(), false))),
        None => Ok(Transformed::no(e)),
    }
}

/// `(x, w)` of `floor(x / w)` with w a width on the grid (through casts).
fn floor_of(e: &Expr) -> Option<(&Expr, Step)> {
    let (x, w) = floor_parts(e)?;
    Some((uncast(x), super::labels::width(w).and_then(Step::of)?))
}
