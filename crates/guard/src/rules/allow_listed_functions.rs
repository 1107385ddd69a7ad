//! Only functions that are known to be safe on untrusted SQL: no reading of files, no error that
//! depends on a data value where an argument must be a constant, no unkeyed hashing (md5 of a
//! 身份证号 is reversible by enumeration). Everything not listed is refused.

use datafusion::logical_expr::Expr;

use crate::{Rule, Violation};

/// Scalar functions an analyst may call, by DataFusion's canonical name.
const SCALAR: &[&str] = &[
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "signum",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log2",
    "log10",
    "isnan",
    "iszero",
    "nanvl",
    "greatest",
    "least",
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "lower",
    "upper",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "concat",
    "concat_ws",
    "substr",
    "left",
    "right",
    "replace",
    "starts_with",
    "ends_with",
    "strpos",
    "date_trunc",
    "date_part",
    "date_bin",
    "current_date",
    "now",
];

/// Arguments (by position) that must be constants: a data-dependent granularity or length can
/// make a function fail on some rows only, and an error must not depend on data.
const CONSTANT_ARGS: &[(&str, &[usize])] = &[
    ("substr", &[1, 2]),
    ("left", &[1]),
    ("right", &[1]),
    ("date_trunc", &[0]),
    ("date_part", &[0]),
    ("date_bin", &[0]),
];

/// Window functions, allowed only over aggregated groups.
const WINDOW: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// Checks a scalar function call.
pub(crate) fn check_scalar(name: &str, args: &[Expr]) -> Result<(), Violation> {
    if !SCALAR.contains(&name) {
        return Err(Violation::new(
            Rule::FunctionNotAllowed,
            None,
            format!(
                "function `{name}` is not allowed in queries; see the list of allowed functions in the documentation"
            ),
        ));
    }
    if let Some((_, positions)) = CONSTANT_ARGS.iter().find(|(n, _)| *n == name) {
        for &i in *positions {
            if args.get(i).is_some_and(|a| !is_constant(a)) {
                return Err(Violation::new(
                    Rule::FunctionNotAllowed,
                    None,
                    format!("argument {} of `{name}` must be a constant", i + 1),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `name` is an allowed window function (aggregates used as windows are checked as
/// aggregates).
pub(crate) fn is_window_function(name: &str) -> bool {
    WINDOW.contains(&name)
}

fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Literal(..) => true,
        Expr::Cast(c) => is_constant(&c.expr),
        Expr::TryCast(c) => is_constant(&c.expr),
        Expr::Alias(a) => is_constant(&a.expr),
        Expr::Negative(e) => is_constant(e),
        _ => false,
    }
}

/// Checks every scalar function call anywhere in `plan` (subqueries included) against the list:
/// for plans the guard does not otherwise check, such as queries over approved extracts, whose
/// rows may be released but whose SQL must still not read files, hash unkeyed or build values
/// without bound (`repeat(x, 10^8)`).
///
/// # Errors
/// The first call that is not allowed.
pub fn check_plan(plan: &datafusion::logical_expr::LogicalPlan) -> Result<(), Violation> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found: Option<Violation> = None;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && let Err(v) = check_scalar(f.name(), &f.args)
                {
                    found = Some(v);
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    if walked.is_err() {
        return Err(Violation::new(Rule::FunctionNotAllowed, None, "the query's functions could not be checked"));
    }
    found.map_or(Ok(()), Err)
}
