//! Small helpers over expressions, shared by the check and the rewrites.

use datafusion::logical_expr::Expr;

/// `e` without its aliases.
pub(crate) fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}
