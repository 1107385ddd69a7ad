//! The privacy guard: decides on a DataFusion logical plan whether a query may run in a result
//! mode, and rewrites it so that its answer is safe to release (design §3).
//!
//! ```text
//! LogicalPlan ──► check: lineage of every column, bottom up, into subqueries ──► Violation
//!                   │ (rules/, one file per effect)                               (refuse)
//!                   ▼
//!               Assessment ──► rewrite: safe arithmetic; thresholds (aggregate) or
//!                              privacy-unit carriers (deidentified) ──► plan to run
//! ```
//!
//! Pure: no I/O, no async, no clock. [`check`] and [`rewrite`] are the core;
//! [`PrivacyGuardRule`] is the thin [`AnalyzerRule`](datafusion::optimizer::AnalyzerRule)
//! adapter the query layer registers. Any error means deny.

mod aggregate;
mod check;
mod context;
mod exprs;
mod grid;
mod lineage;
mod rewrite;
mod rule;
mod rules;
mod violation;

pub use aggregate::DpAggregate;
pub use check::{AppliedRule, Assessment, check};
pub use context::{CapAt, CappedCopies, ColumnInfo, Contribution, DatasetInfo, GuardContext, Reach};
pub use rewrite::{
    ADMITTED, ANON_LEAST_THRESHOLD, ANON_OUTLIERS, ANON_SEED, Buckets, DP_PREFIX, DP_ROW, DpPlan, KeyLabel, Ladder,
    NoiseLabels, Rewritten, Span, UNIT_PREFIX, Variant, claim_hashes, claim_name, column_hashes, dropped_hashes,
    folded_hashes, group_hashes, rewrite, with_claimed, with_dropped, with_widened,
};
pub use rule::{GuardOutcome, PrivacyGuardRule, violation};
pub use rules::allow_listed_functions::check_plan as check_functions;
pub use rules::anon_shape::MAX_LISTED;
pub use violation::{Rule, Violation};
