//! Every expression the guard admits over personal data is total: it gives a value (or NULL)
//! for every input and never fails while running. A failure that happens only when some row
//! reaches an expression is an exact, noise-free answer to "does such a row exist?", and a
//! `CASE WHEN <one person's traits> THEN <failing expression>` or a filter in front of it
//! aims that question at one person (`sqrt(CASE WHEN … THEN subsidy - 2937 ELSE 0 END)`
//! bisects a subsidy in a dozen queries, whatever the noise).
//!
//! Two halves. The rewrite (`rewrite/safe_arithmetic.rs`) turns the operations that fail on
//! some values into total ones: every division and modulo (literal divisors too), integer
//! division of the smallest value by −1, `sqrt` of a negative, `abs` of the smallest integer,
//! casts. This rule refuses what cannot be made total that way, as a short positive list of
//! what is admitted:
//! - arithmetic on integers and floating-point numbers (wrapping; division made total), and
//!   arithmetic whose operands are all constants (folded at planning, the same for every row);
//!   not arithmetic on decimals (which fails on overflow) or on dates, times and intervals
//!   (which fail out of range) over a column;
//! - `LIKE` / `ILIKE` with a constant pattern of the forms `text`, `text%`, `%text`, `%text%`
//!   (ILIKE in ASCII), matched without compiling a regular expression; no
//!   `SIMILAR TO`, regular expression operators or bit shifts over a column;
//! - `date_trunc` / `date_part` with a granularity from their lists; `substr` with a constant,
//!   non-negative length; no `date_bin`;
//! - text constants of at most [`MAX_LITERAL_CHARS`] characters;
//! - text that grows at most [`MAX_TEXT_GROWTH`] times the longest value it is made from:
//!   concatenation adds up, `replace` multiplies by the ratio of its constant replacement to
//!   its constant search string, through any number of derived tables. Total is not enough:
//!   `replace` nested seven times over `CASE WHEN <one person's traits> THEN 'x' END` took half
//!   a second instead of 40 ms (and nine times ran the server out of memory) exactly when the
//!   person matched; a value's time and memory must not grow with one person's row.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};

use crate::lineage::ColumnLineage;
use crate::{Rule, Violation};

/// The most times longer than the longest value it is made from a text value may become.
pub(crate) const MAX_TEXT_GROWTH: u64 = 16;

/// The longest text constant a query over personal data may hold, in characters. Work on a
/// constant is done for every row an expression reaches, and whether an expression is reached
/// at all can hinge on one person (`CASE WHEN <their traits> THEN strpos(concat(code, <20,000
/// characters>), 'z') > 0 …` took 2.8 s instead of 0.07 s when they matched): bounding every
/// constant bounds that difference.
pub(crate) const MAX_LITERAL_CHARS: usize = 64;

/// Granularities `date_trunc` accepts.
const TRUNC_UNITS: &[&str] =
    &["microsecond", "millisecond", "second", "minute", "hour", "day", "week", "month", "quarter", "year"];

/// Parts `date_part` accepts.
const PARTS: &[&str] = &[
    "year",
    "quarter",
    "month",
    "week",
    "day",
    "hour",
    "minute",
    "second",
    "millisecond",
    "microsecond",
    "nanosecond",
    "dow",
    "doy",
    "epoch",
    "isodow",
    "isoyear",
];

fn refuse(message: String) -> Violation {
    Violation::new(Rule::ExpressionMayFail, None, message)
}

/// Whether `e` reads no column (it is folded to one value at planning).
fn constant(e: &Expr) -> bool {
    let mut reads = false;
    let _ = e.apply(|e| {
        if matches!(e, Expr::Column(_) | Expr::OuterReferenceColumn(..) | Expr::ScalarSubquery(_)) {
            reads = true;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    !reads
}

fn text_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        Expr::Cast(c) => text_literal(&c.expr),
        Expr::TryCast(c) => text_literal(&c.expr),
        Expr::Alias(a) => text_literal(&a.expr),
        _ => None,
    }
}

fn integer_literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(i)) => Some(i),
            _ => None,
        },
        Expr::Cast(c) => integer_literal(&c.expr),
        Expr::TryCast(c) => integer_literal(&c.expr),
        Expr::Negative(inner) => integer_literal(inner).and_then(i64::checked_neg),
        Expr::Alias(a) => integer_literal(&a.expr),
        _ => None,
    }
}

/// An operator over `b`'s operands, evaluated against `schema`.
///
/// # Errors
/// When the operation can fail for some values.
pub(crate) fn binary(b: &BinaryExpr, schema: &DFSchema) -> Result<(), Violation> {
    if constant(&b.left) && constant(&b.right) {
        return Ok(());
    }
    let arithmetic =
        matches!(b.op, Operator::Plus | Operator::Minus | Operator::Multiply | Operator::Divide | Operator::Modulo);
    if arithmetic {
        let types = [b.left.get_type(schema), b.right.get_type(schema)];
        let fails = |t: &DataType| {
            matches!(
                t,
                DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..)
            ) || t.is_temporal()
                || matches!(t, DataType::Interval(_) | DataType::Duration(_))
        };
        return match types {
            [Ok(l), Ok(r)] if !fails(&l) && !fails(&r) => Ok(()),
            [Ok(_), Ok(_)] => Err(refuse(format!(
                "`{}` is arithmetic on decimals, dates, times or intervals, which can fail on overflow for some values; cast to DOUBLE, or compare with a constant date instead",
                Expr::BinaryExpr(b.clone())
            ))),
            _ => Err(refuse(format!("the type of `{}` could not be determined", Expr::BinaryExpr(b.clone())))),
        };
    }
    let pattern = matches!(
        b.op,
        Operator::RegexMatch
            | Operator::RegexIMatch
            | Operator::RegexNotMatch
            | Operator::RegexNotIMatch
            | Operator::LikeMatch
            | Operator::ILikeMatch
            | Operator::NotLikeMatch
            | Operator::NotILikeMatch
            | Operator::BitwiseShiftLeft
            | Operator::BitwiseShiftRight
    );
    if pattern {
        return Err(refuse(format!(
            "`{}` is not allowed over data: a pattern or shift can fail for some values; use LIKE with a constant pattern",
            b.op
        )));
    }
    Ok(())
}

/// A constant in a query over personal data.
///
/// # Errors
/// For text longer than [`MAX_LITERAL_CHARS`].
pub(crate) fn literal(value: &ScalarValue) -> Result<(), Violation> {
    let long = match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            s.chars().count() > MAX_LITERAL_CHARS
        }
        ScalarValue::Binary(Some(b)) | ScalarValue::BinaryView(Some(b)) | ScalarValue::LargeBinary(Some(b)) => {
            b.len() > MAX_LITERAL_CHARS
        }
        _ => false,
    };
    if long {
        return Err(refuse(format!(
            "a text constant is longer than {MAX_LITERAL_CHARS} characters: work on constants is done for every row an expression reaches, so how long the query runs could depend on one person's row"
        )));
    }
    Ok(())
}

/// A `LIKE`, `ILIKE` or `SIMILAR TO`.
///
/// # Errors
/// Unless it is `LIKE`/`ILIKE` with a constant pattern that cannot fail.
pub(crate) fn like(like: &Like, similar: bool) -> Result<(), Violation> {
    if similar {
        return Err(refuse("SIMILAR TO is not allowed over data: use LIKE with a constant pattern".into()));
    }
    let escape = like.escape_char.unwrap_or('\\');
    let Some(p) = text_literal(&like.pattern) else {
        return Err(refuse("a LIKE pattern must be a constant".into()));
    };
    // Matched by prefix, suffix, substring or equality, never compiled to a regular expression:
    // compiling one only for a row that reaches it took 14 ms per pattern, so a CASE on one
    // person's traits in front of 150 patterns was 2.5 s against 0.3 s.
    let core = p.strip_prefix('%').unwrap_or(p);
    let core = core.strip_suffix('%').unwrap_or(core);
    let simple = !core.contains(['%', '_', escape]);
    if !simple {
        return Err(refuse(
            "a LIKE pattern over personal data may only be 'text', 'text%', '%text' or '%text%' (no other % or _, no escape character), so that matching it costs the same for every row".into(),
        ));
    }
    if like.case_insensitive && !p.is_ascii() {
        return Err(refuse("an ILIKE pattern over personal data must be ASCII; use LIKE for other text".into()));
    }
    Ok(())
}

/// A scalar function call (already on the allow-list).
///
/// # Errors
/// When its constant arguments are not ones it accepts, so it would fail on every row it reaches.
pub(crate) fn function(name: &str, args: &[Expr]) -> Result<(), Violation> {
    let unit = || args.first().and_then(text_literal).map(str::to_lowercase);
    match name {
        "date_trunc" if !unit().is_some_and(|u| TRUNC_UNITS.contains(&u.as_str())) => {
            Err(refuse(format!("the granularity of `date_trunc` must be one of {}", TRUNC_UNITS.join(", "))))
        }
        "date_part" if !unit().is_some_and(|u| PARTS.contains(&u.as_str())) => {
            Err(refuse(format!("the part of `date_part` must be one of {}", PARTS.join(", "))))
        }
        "date_bin" if !args.iter().all(constant) => {
            Err(refuse("`date_bin` over data is not allowed: use date_trunc".into()))
        }
        "substr" if args.get(2).is_some_and(|n| integer_literal(n).is_none_or(|n| n < 0)) => {
            Err(refuse("the length of `substr` must be a constant, not negative".into()))
        }
        _ => Ok(()),
    }
}

/// How much longer than its sources the text `name(args)` can be, given its arguments'
/// lineage (`parts`) and the largest of theirs (`most`): concatenation adds its parts up
/// (`concat_ws` repeats its separator between them), `replace` multiplies its input by
/// replacement / search length (unbounded, `u64::MAX`, unless both are constants and the
/// search is not empty); every other function keeps the longest of its arguments.
pub(crate) fn text_growth(name: &str, args: &[Expr], parts: &[ColumnLineage], most: u64) -> u64 {
    let total = || parts.iter().fold(0u64, |acc, p| acc.saturating_add(p.growth));
    match name {
        "concat" => total(),
        "concat_ws" => {
            let separator = parts.first().map_or(0, |p| p.growth);
            total().saturating_add(separator.saturating_mul(parts.len().saturating_sub(3) as u64))
        }
        "replace" => {
            let input = parts.first().map_or(0, |p| p.growth);
            match (args.get(1).and_then(text_literal), args.get(2).and_then(text_literal)) {
                (Some(from), Some(to)) if !from.is_empty() => {
                    let (from, to) = (from.chars().count() as u64, to.chars().count() as u64);
                    input.saturating_mul(to.div_ceil(from).max(1))
                }
                _ if input == 0 => 0,
                _ => u64::MAX,
            }
        }
        _ => most,
    }
}

/// Checks the growth of a text value made by `what`.
///
/// # Errors
/// When it exceeds [`MAX_TEXT_GROWTH`].
pub(crate) fn growth(what: &str, growth: u64) -> Result<(), Violation> {
    if growth <= MAX_TEXT_GROWTH {
        return Ok(());
    }
    Err(refuse(format!(
        "`{what}` can make a text value more than {MAX_TEXT_GROWTH} times longer than the values it is made from (through replace with a longer replacement, or concatenation of concatenations): how long such a query runs would depend on one person's row; replace only with constants no longer than what they replace, and concatenate fewer values"
    )))
}
