//! Aggregate mode: no negation, `<>`, NOT IN, NOT LIKE, NOT BETWEEN or OR over identifiers and
//! quasi-identifiers in row-level conditions. These are the building blocks of tracker and
//! complement attacks (`WHERE district = 'X' OR birth_date = …`, `birth_date <> …`), which
//! pad or subtract one person so that two large groups differ by exactly them.
//! Differencing with positive conditions remains possible in a threshold-only mode; that is what
//! `dp` mode is for (design §2).

use veil_common::{Mode, Tag};

use crate::lineage::{ColumnLineage, Grain, Sources};
use crate::{Rule, Violation};

/// Checks a negating or disjunctive condition over `operands`.
pub(crate) fn check(
    mode: Mode,
    grain: Grain,
    construct: &str,
    operands: &[&ColumnLineage],
    sources: &Sources,
) -> Result<(), Violation> {
    if mode != Mode::Aggregate || grain != Grain::Rows {
        return Ok(());
    }
    let hit = operands.iter().find_map(|l| l.row_source_tagged(sources, &[Tag::QuasiIdentifier, Tag::Identifier]));
    match hit {
        Some(src) => {
            let column = sources.get(src).name.clone();
            let message = format!(
                "{construct} over `{column}`, a {} column, is a tracker or complement condition; use positive conditions (=, <, >, BETWEEN, IN) or dp mode",
                sources.get(src).tag
            );
            Err(Violation::new(Rule::ComplementCondition, Some(column), message))
        }
        None => Ok(()),
    }
}
