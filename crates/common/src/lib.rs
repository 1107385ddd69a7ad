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
//! - [`error`]: [`ErrorKind`], the coarse class every crate's error maps to.

#![warn(missing_docs)]

pub mod error;
pub mod ids;
pub mod level;
pub mod role;
pub mod tag;

pub use error::ErrorKind;
pub use ids::{DatasetName, DatasetRef, DepartmentId, IdError, UserId};
pub use level::Level;
pub use role::Role;
pub use tag::Tag;
