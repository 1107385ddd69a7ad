//! Aggregate mode returns aggregates only: every row of the answer is a group, and no row of a
//! dataset leaves unaggregated. Rows may not be cut (LIMIT/OFFSET) or ranked (window functions)
//! before they are aggregated: `sum(x)` over `ORDER BY x LIMIT 10 OFFSET n` and `n + 1`
//! differ by one person's value.

use datafusion::common::DFSchema;

use crate::lineage::{Grain, NodeLineage};
use crate::{Rule, Violation};

/// The query's answer must be groups.
pub(crate) fn check_output(root: &NodeLineage, schema: &DFSchema) -> Result<(), Violation> {
    if root.grain != Grain::Rows {
        return Ok(());
    }
    let column = schema.fields().first().map(|f| f.name().clone());
    Err(Violation::new(
        Rule::RowLevelOutput,
        column.clone(),
        format!(
            "aggregate mode returns aggregates only, but `{}` is a row value; aggregate it (COUNT, SUM, AVG …) or group by it",
            column.as_deref().unwrap_or("the output")
        ),
    ))
}

/// LIMIT/OFFSET (or a sort with a fetch) over rows.
pub(crate) fn check_limit(grain: Grain) -> Result<(), Violation> {
    if grain == Grain::Rows {
        return Err(Violation::new(
            Rule::LimitBeforeAggregate,
            None,
            "LIMIT and OFFSET may only cut aggregated results, not rows before aggregation (a LIMIT walk isolates people)",
        ));
    }
    Ok(())
}

/// A window function over rows.
pub(crate) fn check_window(grain: Grain) -> Result<(), Violation> {
    if grain == Grain::Rows {
        return Err(Violation::new(
            Rule::RowLevelWindow,
            None,
            "window functions may only run over aggregated groups, not over rows",
        ));
    }
    Ok(())
}
