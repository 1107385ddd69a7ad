//! Reading uploaded datasets (CSV, Arrow IPC file or stream, Parquet) and writing them as the
//! immutable Parquet files Veil stores.
//!
//! Ingestion streams: [`open`] yields record batches one at a time and [`write_parquet`] flushes
//! row groups as it goes, so memory stays bounded by a few batches whatever the file's size.
//!
//! This crate knows file formats and Arrow types, not tags, levels or departments: checking a
//! file against its dataset metadata is the catalogue's job, done on the [`Source::schema`]
//! before any batch is written.
//!
//! **Invariant:** no error from this crate carries a value read from the file. A CSV value that
//! does not parse is reported by line, column name and expected type only.
//!
//! # Layout
//! - [`format`]: which format a file is, from its first bytes or a declared name.
//! - [`csv_infer`]: column types for CSV, inferred from a sample or declared.
//! - [`read`]: [`open`], one batch iterator over any supported format.
//! - [`write`]: [`write_parquet`], Parquet output.
//! - [`unique`]: [`UniqueValues`], whether a column holds each value once.

#![warn(missing_docs)]

mod cap;
pub mod csv_infer;
mod error;
pub mod format;
pub mod parquet_pages;
pub mod read;
pub mod spreadsheet;
pub mod unique;
pub mod write;
mod xls;

pub use cap::write_capped;
pub use csv_infer::DeclaredType;
pub use csv_infer::date_form;
pub use encoding_rs::Encoding;
pub use error::{Error, Result};
pub use format::SourceFormat;
pub use read::{ReadOptions, Source, delimiter_named, encoding_named, open};
pub use unique::UniqueValues;
pub use write::{WriteReport, write_parquet};

/// The most columns a dataset may have. Readers allocate per column and per batch row, so a
/// small file with ten thousand columns cost gigabytes before any check could refuse it; real
/// registries have tens to hundreds.
pub const MAX_COLUMNS: usize = 1024;
