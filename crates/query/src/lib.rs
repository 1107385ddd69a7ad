//! The query path (design §3) from parsed SQL to a released answer:
//!
//! ```text
//! parse: one read-only query ─► (server: resolve datasets, authorise with the policy)
//!   ─► session with only those datasets ─► plan ─► analyzer + privacy guard ─► optimizer
//!   ─► execute (memory pool, spill dir, deadline, row limit) ─► post-process ─► Answer
//! ```
//!
//! **Architecture invariant:** this is the only crate that creates a DataFusion session or
//! plans SQL. Every session is per request and holds only the datasets the caller may use in
//! the requested mode, so a hidden dataset does not exist for the query, not even in an error.

//!
//! # Layout
//! - `request`: what a query asks for and answers ([`QueryRequest`], [`Limits`], [`Answer`] with
//!   its dp or anonymization report).
//! - `engine`: [`QueryEngine`]: sessions, planning with the guard, execution under the pool and
//!   the deadline, the unguarded runs (audit log, extracts).
//! - `tables`, `plan_cache`: the table providers and the guarded dp plans kept between queries.
//! - `release`: finishing noisy answers (dp's measure and release, anonymized answers).
//! - `dp`, `anon`: the noise of each mode; `parse`: one read-only statement; `error`.

mod anon;
mod dp;
mod drain;
mod engine;
mod error;
mod exact;
mod memory;
mod parse;
mod plan_cache;
mod probe;
mod release;
mod request;
mod tables;
#[cfg(test)]
mod testing;

#[doc(hidden)]
pub use anon::check_claims_walk;
pub use dp::{DpParams, NoisyAggregate, measurements};
pub use engine::{Prepared, QueryEngine};
pub use error::{Error, Result};
pub use memory::{Reserved, Unreserved};
pub use parse::{ParsedQuery, parse};
pub use request::{AnonReport, Answer, DpReport, Limits, QueryRequest, SessionDataset};
