//! Which aggregate may read which column (design §3): counts of anything, sums and moments of
//! numeric non-identifiers, and order statistics (MIN, MAX, median, percentiles), which return
//! one person's value, only of attributes. Everything else (array_agg, string_agg, first_value,
//! any aggregate that returns an input value) is refused.

use veil_common::Tag;

use crate::lineage::{ColumnLineage, Sources};
use crate::{Rule, Violation};

/// What an allowed aggregate reveals about its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggregateClass {
    /// COUNT, COUNT(DISTINCT): how many, never which.
    Count,
    /// SUM, AVG, STDDEV, VAR: a blend of every input value.
    Moment,
    /// MIN, MAX, MEDIAN, percentiles: one input value.
    OrderStatistic,
    /// GROUPING(): which grouping set a row belongs to.
    Grouping,
}

/// The class of an aggregate by DataFusion's canonical name, or `None` if it is not allowed.
pub(crate) fn classify(name: &str) -> Option<AggregateClass> {
    Some(match name {
        "count" => AggregateClass::Count,
        "sum" | "avg" | "stddev" | "stddev_pop" | "var" | "var_pop" | "var_samp" | "stddev_samp" => {
            AggregateClass::Moment
        }
        "min" | "max" | "median" | "approx_median" | "approx_percentile_cont" | "percentile_cont" => {
            AggregateClass::OrderStatistic
        }
        "grouping" => AggregateClass::Grouping,
        _ => return None,
    })
}

/// Checks one aggregate call over arguments with the given lineage.
pub(crate) fn check(name: &str, args: &[ColumnLineage], sources: &Sources) -> Result<AggregateClass, Violation> {
    let Some(class) = classify(name) else {
        return Err(Violation::new(
            Rule::AggregateNotAllowed,
            None,
            format!(
                "aggregate `{name}` is not allowed: it can return input values; use COUNT, SUM, AVG, STDDEV or VAR, and MIN/MAX/MEDIAN only on attribute columns of exact answers"
            ),
        ));
    };
    for arg in args {
        if let Some(id) = arg.identifier(sources) {
            let column = sources.get(id).name.clone();
            if class != AggregateClass::Count || arg.bare.is_none() {
                return Err(Violation::new(
                    Rule::IdentifierAggregated,
                    Some(column.clone()),
                    format!(
                        "`{column}` is an identifier: it may only be counted, as COUNT({column}) or COUNT(DISTINCT {column})"
                    ),
                ));
            }
        }
        if class == AggregateClass::OrderStatistic
            && let Some(src) = arg.row_source_tagged(sources, &[Tag::QuasiIdentifier, Tag::Sensitive, Tag::Identifier])
        {
            let c = sources.get(src);
            return Err(Violation::new(
                Rule::ExtremeValueOfProtectedColumn,
                Some(c.name.clone()),
                format!(
                    "`{name}` returns one person's value and `{}` is tagged {}: MIN, MAX, MEDIAN and percentiles are allowed only on attribute columns, and only in exact answers (anonymized ones allow COUNT, SUM and AVG)",
                    c.name, c.tag
                ),
            ));
        }
    }
    Ok(class)
}
