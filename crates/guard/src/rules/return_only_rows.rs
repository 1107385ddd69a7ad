//! De-identified mode returns rows: pseudonymised, generalised and k-anonymous. Aggregates,
//! DISTINCT and window functions would bypass the group-size threshold of aggregate mode (a
//! `count(*)` of a one-person class is not a row that k-anonymity could suppress), so they
//! belong in aggregate or dp mode.

use crate::lineage::Grain;
use crate::{Rule, Violation};

/// An aggregate, DISTINCT or window over rows.
pub(crate) fn check(grain: Grain, construct: &str) -> Result<(), Violation> {
    if grain == Grain::Rows {
        return Err(Violation::new(
            Rule::DeidentifiedReturnsRows,
            None,
            format!("{construct} is not available in deidentified mode, which returns rows; use aggregate mode"),
        ));
    }
    Ok(())
}
