//! Identifiers (name, 身份证号, phone) may be counted, joined on when both sides are linkable, and
//! (in de-identified mode) returned as pseudonyms. They may not be filtered on, grouped by,
//! sorted by, compared, or computed with: each of those singles out a person or leaks part of the
//! value (`substr(id, 7, 8)` is a birth date; `CASE WHEN name = … THEN` is a tracker).

use crate::lineage::{ColumnLineage, Sources};
use crate::{Rule, Violation};

fn refuse(rule: Rule, lineage: &ColumnLineage, sources: &Sources, what: &str) -> Result<(), Violation> {
    match lineage.identifier(sources) {
        Some(src) => {
            let column = sources.get(src).name.clone();
            let message = format!("`{column}` is an identifier and cannot be {what}");
            Err(Violation::new(rule, Some(column), message))
        }
        None => Ok(()),
    }
}

/// A filter, CASE condition, HAVING or any comparison.
pub(crate) fn in_condition(lineage: &ColumnLineage, sources: &Sources) -> Result<(), Violation> {
    refuse(
        Rule::IdentifierInCondition,
        lineage,
        sources,
        "used in a condition (filters, CASE and comparisons on identifiers single out people)",
    )
}

/// Any expression that computes with a value: arithmetic, functions, CASE results.
pub(crate) fn in_expression(lineage: &ColumnLineage, sources: &Sources) -> Result<(), Violation> {
    refuse(
        Rule::IdentifierTransformed,
        lineage,
        sources,
        "used inside an expression; it may only be counted or joined on as it is",
    )
}

/// A GROUP BY or DISTINCT key.
pub(crate) fn as_group_key(lineage: &ColumnLineage, sources: &Sources) -> Result<(), Violation> {
    refuse(Rule::IdentifierGroupKey, lineage, sources, "a group key: a group per identifier is a group per person")
}

/// An ORDER BY key.
pub(crate) fn as_order_key(lineage: &ColumnLineage, sources: &Sources) -> Result<(), Violation> {
    refuse(Rule::IdentifierInOrder, lineage, sources, "an ORDER BY key")
}

/// A join key pair: fine without identifiers; with one, both sides must be bare linkable
/// identifiers (an equi-join of the same person across departments, run inside the broker).
pub(crate) fn as_join_key(
    left: &ColumnLineage,
    right: &ColumnLineage,
    sources: &Sources,
) -> Result<Option<(String, String)>, Violation> {
    if left.identifier(sources).is_none() && right.identifier(sources).is_none() {
        return Ok(None);
    }
    if let (true, true, Some(l), Some(r)) =
        (left.is_linkable_key(sources), right.is_linkable_key(sources), left.bare, right.bare)
    {
        return Ok(Some((sources.get(l).name.clone(), sources.get(r).name.clone())));
    }
    let id = left.identifier(sources).or(right.identifier(sources));
    let column = id.map(|s| sources.get(s).name.clone());
    let message = format!(
        "`{}` is an identifier: identifiers can only be join keys in an equality between two linkable identifiers",
        column.as_deref().unwrap_or("?")
    );
    Err(Violation::new(Rule::IdentifierInJoin, column, message))
}
