//! Vocabulary shared by every Veil crate: identifiers, classification levels, column tags, roles
//! and the error kinds that the HTTP edge maps to status codes.
//!
//! This crate does no I/O and has no async code. Everything here is a plain value type with a
//! stable text form (the form stored in the catalogue and used on the wire).
//!
//! # Layout
//! - [`ids`]: validated names of departments, users and datasets.
//! - [`level`]: the classification levels of GB/T 43697-2024 and their defaults.
//! - [`tag`]: the column tags of GB/T 37964-2019.
//! - [`role`]: what a user may do.
//! - [`mode`]: what a query may return.
//! - [`generalize`]: how a quasi-identifier is coarsened in de-identified results.
//! - [`hex`]: bytes as hex text.
//! - [`error`]: [`ErrorKind`], the coarse class every crate's error maps to.

#![warn(missing_docs)]

/// Implements `Display` and `FromStr` for an enum of stored codes that has `ALL` and `as_str`,
/// and defines the error for an unknown code, which names the codes that are allowed.
macro_rules! code_enum {
    ($ty:ident, $err:ident, $what:literal) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[doc = concat!("A ", $what, " that is not one of the known codes.")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $err(pub String);

        impl std::fmt::Display for $err {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let expected: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                write!(f, "unknown {} `{}`: expected one of {}", $what, self.0, expected.join(", "))
            }
        }

        impl std::error::Error for $err {}

        impl std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, $err> {
                $ty::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| $err(s.chars().take(32).collect()))
            }
        }
    };
}

pub mod error;
pub mod generalize;
pub mod hex;
pub mod ids;
pub mod level;
pub mod mode;
pub mod role;
pub mod tag;

pub use error::{ErrorKind, is_storage_full};
pub use generalize::Generalization;
pub use ids::{DatasetName, DatasetRef, DepartmentId, IdError, UserId};
pub use level::Level;
pub use mode::Mode;
pub use role::Role;
pub use tag::Tag;

/// The SQL schema of the audit log's table (`audit.events`); no department may take this id.
pub const AUDIT_SCHEMA: &str = "audit";

/// The SQL schema of an analyst's approved de-identified extracts (`extracts.<name>`); no
/// department may take this id.
pub const EXTRACT_SCHEMA: &str = "extracts";
