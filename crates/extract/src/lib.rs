//! De-identified extracts (GB/T 37964-2019 去标识化; effect assessed as GB/T 42460 asks): the
//! only rows Veil ever releases about people.
//!
//! An extract is built once, from a specification a steward approves, in the manner of the
//! statistical offices' microdata tools (ARX, sdcMicro):
//! - the privacy unit becomes a pseudonym keyed per extract; other identifiers are never kept;
//! - quasi-identifiers are generalized along their hierarchies ([`Step`]) to the combination of
//!   levels with the least information loss for which every equivalence class holds at least
//!   `k` distinct people and `l` distinct values of each sensitive column, once the classes that
//!   still fall short (at most the allowed share of records) are suppressed;
//! - numeric sensitive values are coded to their bounds, so an outlier's exact value never
//!   appears;
//! - rows are shuffled, so their order says nothing about the source.
//!
//! When the extract keeps the pseudonym, a person's rows can be linked to each other, so what
//! must be shared by `k` people is the person's whole set of generalized rows, not each row.
//!
//! The crate needs no server: [`build`] takes Arrow batches and a [`Spec`] and returns the rows
//! and a [`Report`]; [`write_parquet`] stores them.

#![warn(missing_docs)]

mod columns;
mod hierarchy;
mod output;
mod report;
mod search;

use arrow::datatypes::DataType;
pub use arrow::record_batch::RecordBatch;

pub use hierarchy::Step;

impl From<veil_common::Generalization> for Step {
    fn from(rule: veil_common::Generalization) -> Self {
        use veil_common::Generalization as G;
        match rule {
            G::Month => Step::Month,
            G::Year => Step::Year,
            G::Band(w) => Step::Band(f64::from(w)),
            G::Prefix(n) => Step::Prefix(n as usize),
            G::Suppress => Step::Suppressed,
        }
    }
}
pub use output::{read_parquet, write_parquet};
pub use report::{ClassSizes, ColumnReport, Report};

/// The smallest `k` an extract about people may have, whatever the level says.
pub const MIN_K: u64 = 5;
/// The share of records a spec may allow to be suppressed, at most.
pub const MAX_SUPPRESSION: f64 = 0.5;
/// Prosecutor risk above which a record is counted as at risk in the report.
pub const RISK_THRESHOLD: f64 = 0.05;
/// Generalization lattices larger than this are refused: fewer quasi-identifiers or levels.
pub const MAX_LATTICE: usize = 200_000;

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The columns of the extract, in order, with what each is.
    pub columns: Vec<ColumnSpec>,
    /// The input column holding the privacy unit, which `k` counts; `None` when each row is a
    /// different person. It is kept in the extract only if listed in `columns` as a pseudonym.
    pub unit: Option<String>,
    /// Every equivalence class holds at least this many distinct people.
    pub k: u64,
    /// Every class holds at least this many distinct values of each sensitive column.
    pub l: u64,
    /// The largest share of records that may be suppressed, in `[0, MAX_SUPPRESSION]`.
    pub max_suppression: f64,
    /// The most rows one person may have in the extract; a person's further rows are left out
    /// (chosen by the key). With linked rows a person's number of rows is part of their profile,
    /// so a cap keeps people with many rows from standing out.
    pub max_rows_per_person: Option<u64>,
    /// The extract's own key: pseudonyms and the shuffle derive from it, so two extracts of the
    /// same people cannot be linked.
    pub key: [u8; 32],
}

/// One column of an extract.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// Its name in the input and in the extract.
    pub name: String,
    /// What it is.
    pub role: Role,
}

/// What a column is in an extract.
#[derive(Debug, Clone)]
pub enum Role {
    /// The privacy unit, as a keyed pseudonym.
    Pseudonym,
    /// Generalized along `ladder` (finest first; `None`: the default ladder for its type),
    /// never finer than `floor`.
    QuasiIdentifier {
        /// The steps asked for, finest first; `*` is always the last.
        ladder: Option<Vec<Step>>,
        /// The finest form the column may take (the steward's declared generalization); steps
        /// of the ladder that do not contain it are left out.
        floor: Option<Step>,
    },
    /// `l`-diverse in every class; numbers coded to `bounds` (else to the 1st and 99th
    /// percentiles of the column).
    Sensitive {
        /// Declared bounds.
        bounds: Option<(f64, f64)>,
    },
    /// Kept as it is: the steward tagged it neither identifying nor sensitive.
    Attribute,
}

/// An extract: its rows, shuffled, and its report.
#[derive(Debug, Clone)]
pub struct Extract {
    /// The released rows.
    pub batch: RecordBatch,
    /// What was done and what risk remains.
    pub report: Report,
}

/// How far the build is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// `encode`, `search` or `write`.
    pub stage: &'static str,
    /// Work done in this stage.
    pub done: u64,
    /// Work in this stage (for `search`: lattice nodes, most of which are pruned).
    pub total: u64,
}

/// Why an extract could not be built. No message carries a value read from the data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is not usable as written.
    #[error("{0}")]
    Spec(String),
    /// A column the spec names is not in the input.
    #[error("column `{0}` is not in the dataset")]
    UnknownColumn(String),
    /// A column's type cannot be handled in its role.
    #[error("column `{column}` has type {data_type}, which an extract cannot hold as {role}")]
    Type {
        /// The column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// The role asked for.
        role: &'static str,
    },
    /// A hierarchy does not suit its column.
    #[error("hierarchy of `{column}`: {reason}")]
    Hierarchy {
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// No generalization meets `k` and `l` within the allowed suppression.
    #[error("no generalization meets the requirements: {reason}")]
    Infeasible {
        /// The column that blocks, if one does.
        column: Option<String>,
        /// What blocks.
        reason: String,
    },
    /// Arrow or Parquet failed.
    #[error("extract storage: {0}")]
    Storage(String),
}

/// What this crate's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Storage(e.to_string())
    }
}

/// Builds the extract `spec` describes from `input` (all rows of the source, with at least the
/// columns the spec names and the unit).
///
/// # Errors
/// A spec that does not fit the input; no generalization meeting `k` and `l`.
pub fn build(input: &[RecordBatch], spec: &Spec, progress: &mut dyn FnMut(Progress)) -> Result<Extract> {
    check(spec)?;
    let table = columns::Table::encode(input, spec)?;
    progress(Progress { stage: "encode", done: table.rows() as u64, total: table.rows() as u64 });
    let found = search::search(&table, spec, progress)?;
    let batch = output::release(&table, spec, &found)?;
    let report = report::report(&table, spec, &found);
    Ok(Extract { batch, report })
}

/// Builds the extract `spec` describes as a projection of the dataset's base release `base`
/// (every quasi-identifier and sensitive column of the dataset, at the dataset's `k` and `l`):
/// the base is built first (it is deterministic, so every extract of one source sees the same
/// base), its suppressed records stay out, and each quasi-identifier starts at the base's level
/// and each number is coded to the base's bounds. Then every extract is a function of the one
/// base, and extracts released together, to one analyst or several, reveal no more than the
/// base: no combination of them links a person's rows across extracts into a class smaller than
/// `k`, and a record one extract suppresses, every extract suppresses.
///
/// # Errors
/// As [`build`]; also when the base itself cannot be built.
pub fn build_within(
    input: &[RecordBatch],
    base: &Spec,
    spec: &Spec,
    progress: &mut dyn FnMut(Progress),
) -> Result<Extract> {
    check(base)?;
    check(spec)?;
    let table = columns::Table::encode(input, base)?;
    let found = search::search(&table, base, progress)?;
    let keep: arrow::array::BooleanArray =
        found.eval.class.iter().map(|c| Some(found.eval.kept[*c as usize])).collect();
    let kept = arrow::compute::filter_record_batch(&table.input, &keep)?;
    let mut spec = spec.clone();
    let mut warnings = Vec::new();
    for column in &mut spec.columns {
        match &mut column.role {
            Role::QuasiIdentifier { floor, ladder } => {
                let level = table.qis.iter().zip(&found.eval.levels).find(|(q, _)| q.name == column.name);
                if let Some((qi, level)) = level {
                    let step = qi.ladder[*level];
                    if let Some(asked) = ladder.as_ref().and_then(|l| l.first())
                        && *asked != step
                        && hierarchy::contains(*asked, step)
                    {
                        warnings.push(format!(
                            "`{}`: the dataset's base release already generalizes it to `{step}`, coarser than the `{asked}` asked for",
                            column.name
                        ));
                    }
                    *floor = Some(floor.map_or(step, |f| hierarchy::coarser(f, step)));
                }
            }
            Role::Sensitive { bounds } => {
                if let Some(s) = table.sensitive.iter().find(|s| s.name == column.name) {
                    *bounds = s.bounds.or(*bounds);
                }
            }
            Role::Pseudonym | Role::Attribute => {}
        }
    }
    let mut extract = build(&[kept], &spec, progress)?;
    let r = &mut extract.report;
    for c in &mut r.columns {
        if let Some(coding) = table.sensitive.iter().find(|s| s.name == c.name).and_then(|s| s.coding) {
            c.treatment = coding.to_owned();
        }
    }
    r.source_records = table.rows() as u64 + table.without_unit;
    r.suppressed_records += found.eval.suppressed_rows;
    r.records_without_unit = table.without_unit;
    r.records_over_person_cap = table.over_cap;
    r.source_records += table.over_cap;
    r.base_suppressed_records = found.eval.suppressed_rows;
    r.warnings.extend(warnings);
    Ok(extract)
}

fn check(spec: &Spec) -> Result<()> {
    if spec.k < 2 {
        return Err(Error::Spec(format!("k is {}; an extract needs k of at least 2", spec.k)));
    }
    if spec.l < 1 {
        return Err(Error::Spec("l must be at least 1".into()));
    }
    if !(0.0..=MAX_SUPPRESSION).contains(&spec.max_suppression) {
        return Err(Error::Spec(format!(
            "max_suppression is {}; it must lie between 0 and {MAX_SUPPRESSION}",
            spec.max_suppression
        )));
    }
    if spec.columns.is_empty() {
        return Err(Error::Spec("an extract needs at least one column".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &spec.columns {
        if !seen.insert(c.name.as_str()) {
            return Err(Error::Spec(format!("column `{}` is listed twice", c.name)));
        }
        let is_unit = spec.unit.as_deref() == Some(c.name.as_str());
        if is_unit && !matches!(c.role, Role::Pseudonym) {
            return Err(Error::Spec(format!("the privacy unit `{}` can be in an extract only as a pseudonym", c.name)));
        }
        if matches!(c.role, Role::Pseudonym) && !is_unit {
            return Err(Error::Spec(format!(
                "column `{}` is an identifier other than the privacy unit: it cannot be in an extract",
                c.name
            )));
        }
    }
    Ok(())
}
