//! Small helpers over expressions, shared by the check and the rewrites.

use datafusion::logical_expr::Expr;

/// `e` without its aliases.
pub(crate) fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// `e` without its aliases and the casts around it (type coercion's or the analyst's): the
/// column or constant underneath.
pub(crate) fn uncast(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => uncast(&a.expr),
        Expr::Cast(c) => uncast(&c.expr),
        Expr::TryCast(c) => uncast(&c.expr),
        other => other,
    }
}

/// The distinct group keys of `agg`, in order, as its output has them: a key repeated in GROUP BY
/// (`GROUP BY district, district`) is one column of the aggregate's output, so the rewrites that
/// rebuild it must count it once. A plan whose output does not match is refused, not guessed at.
pub(crate) fn group_keys(agg: &datafusion::logical_expr::Aggregate) -> datafusion::common::Result<Vec<Expr>> {
    let mut keys: Vec<Expr> = Vec::with_capacity(agg.group_expr.len());
    for key in &agg.group_expr {
        if !keys.iter().any(|k| k.clone().unalias() == key.clone().unalias()) {
            keys.push(key.clone());
        }
    }
    if keys.len() + agg.aggr_expr.len() != agg.schema.fields().len() {
        return datafusion::common::plan_err!("the privacy guard cannot match this GROUP BY to the aggregate's output");
    }
    Ok(keys)
}
