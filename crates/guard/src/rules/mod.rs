//! The guard's rules, one file per effect. Each is a small function over column lineage that
//! returns a [`Violation`](crate::Violation) naming the rule and the column; the plan walk in
//! [`check`](crate::check) decides where each applies.

pub(crate) mod allow_listed_functions;
pub(crate) mod anon_shape;
pub(crate) mod deny_complement_conditions;
pub(crate) mod deny_identifier_use;
pub(crate) mod deny_reserved_names;
pub(crate) mod dp_shape;
pub(crate) mod restrict_aggregates;
pub(crate) mod return_only_aggregates;
pub(crate) mod total_expressions;
