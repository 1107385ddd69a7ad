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

mod anon;
mod dp;
mod engine;
mod error;
mod parse;

pub use dp::{DpParams, NoisyAggregate, measurements};
pub use engine::{AnonReport, Answer, DpReport, Limits, Prepared, QueryEngine, QueryRequest, SessionDataset};
pub use error::{Error, Result};
pub use parse::{ParsedQuery, parse};
