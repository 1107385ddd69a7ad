//! The broker adds columns of its own to a plan (privacy-unit carriers, group sizes); their names
//! start with a reserved prefix that no query may use, so a query cannot impersonate them.

use datafusion::common::DFSchema;

use crate::{Rule, Violation};

/// The prefix of every column the broker adds.
pub(crate) const RESERVED_PREFIX: &str = "__veil";

/// Refuses a schema with a field named with the reserved prefix.
pub(crate) fn check(schema: &DFSchema) -> Result<(), Violation> {
    match schema.fields().iter().find(|f| f.name().starts_with(RESERVED_PREFIX)) {
        Some(f) => Err(Violation::new(
            Rule::ReservedName,
            Some(f.name().clone()),
            format!("names starting with `{RESERVED_PREFIX}` are reserved for the broker"),
        )),
        None => Ok(()),
    }
}
