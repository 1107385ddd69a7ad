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
mod compare;
mod hierarchy;
mod output;
mod report;
mod search;

use arrow::datatypes::DataType;
pub use arrow::record_batch::RecordBatch;

pub use compare::{ReleasedRows, differs_by_few};
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
pub use output::{build_bytes, identifier_keys, read_parquet, unit_key, unit_row_hashes, write_empty, write_parquet};
pub use report::{ClassSizes, ColumnReport, Report, SourceRecords};

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
/// columns the spec names and the unit). Every column released as it is counts as known to
/// someone ([`insiders`]): each sensitive column stays `l`-diverse, and `k` people remain, among
/// the rows the other such columns cannot tell apart.
///
/// # Errors
/// A spec that does not fit the input; no generalization meeting `k` and `l`.
pub fn build(input: &[RecordBatch], spec: &Spec, progress: &mut dyn FnMut(Progress)) -> Result<Extract> {
    build_seen_by(input, spec, &insiders(&spec.columns, false), progress)
}

/// Someone who knows some columns of an extract exactly ([`insiders`]): the columns they
/// tell rows apart by, and the sensitive columns that must stay l-diverse among those rows.
#[derive(Debug, Clone)]
pub(crate) struct Insider {
    pub(crate) known: Vec<String>,
    pub(crate) protected: Vec<String>,
}

/// [`build`], where each of `insiders` tells rows apart by the columns they know.
fn build_seen_by(
    input: &[RecordBatch],
    spec: &Spec,
    insiders: &[Insider],
    progress: &mut dyn FnMut(Progress),
) -> Result<Extract> {
    check(spec)?;
    let table = columns::Table::encode(input, spec)?.with_views(insiders)?;
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
    check(spec)?;
    let based = within_base(input, base, &|c| spec.columns.iter().any(|a| a.name == c), progress)?;
    let mut spec = spec.clone();
    let warnings = based.fitting.fit(&mut spec.columns);
    let mut extract = build(std::slice::from_ref(&based.kept), &spec, progress)?;
    let r = &mut extract.report;
    based.fitting.code_columns(&mut r.columns);
    r.source_records = based.records.source_records;
    r.suppressed_records += based.records.base_suppressed_records;
    r.records_without_unit = based.records.records_without_unit;
    r.records_over_person_cap = based.records.records_over_person_cap;
    r.base_suppressed_records = based.records.base_suppressed_records;
    r.warnings.extend(warnings);
    Ok(extract)
}

/// One dataset of an extract joined from several on their privacy units.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// How the report names it.
    pub name: String,
    /// All its rows.
    pub input: &'a [RecordBatch],
    /// Its base release (as for [`build_within`]); its unit is the key the datasets are joined on.
    pub base: Spec,
    /// The extract's columns that come from it (the unit aside).
    pub columns: Vec<String>,
}

/// The most rows a join of several datasets may make before the search: each person's rows are
/// capped in every base release, but their product over several datasets can still be large.
pub const MAX_JOINED_ROWS: usize = 20_000_000;

/// Builds the extract `spec` describes from several datasets joined on their privacy units
/// (`spec.unit` names the joined unit). Each dataset is first reduced to its own base release
/// as [`build_within`] does (its suppressed records out, each column no finer than its base),
/// so the joined extract reveals about each dataset no more than its base; the records of every
/// person found in all of them are joined (every combination of their rows). Then, as for one
/// dataset, the join has a base release of its own, deterministic for these dataset versions
/// (every quasi-identifier and sensitive column of every base, at the highest base `k`), and
/// the extract is built within it, so extracts of one join combined reveal no more than its
/// base. `k` and `l` are met over the joined records, and also as each dataset's own staff see
/// them: they know its columns exactly, so every class split by the values of that dataset's
/// columns released as they are must still hold `k` people and `l` values of the other
/// datasets' sensitive columns.
///
/// # Errors
/// As [`build_within`]; also fewer than two sources, a column named by two sources or by none,
/// and a join of more than [`MAX_JOINED_ROWS`].
pub fn build_joined(sources: &[Source<'_>], spec: &Spec, progress: &mut dyn FnMut(Progress)) -> Result<Extract> {
    check(spec)?;
    let Some(unit) = spec.unit.clone() else {
        return Err(Error::Spec("a joined extract is joined on a privacy unit".into()));
    };
    if sources.len() < 2 {
        return Err(Error::Spec("a joined extract has at least two datasets".into()));
    }
    for c in spec.columns.iter().filter(|c| c.name != unit) {
        let from = sources.iter().filter(|s| s.columns.contains(&c.name)).count();
        if from != 1 {
            return Err(Error::Spec(format!("column `{}` must come from exactly one dataset, not {from}", c.name)));
        }
    }
    let Joined { sources, based, mut asked, joined, linked, base } = join_bases(sources, spec, &unit, progress)?;
    let (table, found) = search_joined_base(&joined, &base, &asked, progress)?;
    let kept = kept_as_coded(&table, &found)?;
    let fitting = Fitting::of(&table, &found);
    let names: Vec<&str> = spec.columns.iter().map(|c| c.name.as_str()).collect();
    // The join's base is no finer than any dataset's, so it warns of every hierarchy either
    // makes coarser; its warnings name the columns as asked.
    let mut warnings: Vec<String> = fitting
        .fit(&mut asked.columns)
        .into_iter()
        .map(|w| {
            asked.columns.iter().zip(&names).fold(w, |w, (a, n)| w.replace(&format!("`{}`", a.name), &format!("`{n}`")))
        })
        .collect();
    let mut extract = build_seen_by(&[kept], &asked, &insiders(&asked.columns, true), progress).map_err(|e| {
        // A column named as asked, not as inside the join.
        match e {
            Error::Infeasible { column: Some(c), reason } => {
                let at = asked.columns.iter().position(|a| a.name == c);
                Error::Infeasible { column: Some(at.map_or(c, |i| names[i].to_owned())), reason }
            }
            other => other,
        }
    })?;
    // Back to the names asked for.
    let schema = extract.batch.schema();
    let fields: Vec<arrow::datatypes::Field> =
        schema.fields().iter().zip(&names).map(|(f, n)| f.as_ref().clone().with_name(*n)).collect();
    extract.batch = RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        extract.batch.columns().to_vec(),
    )?;
    let r = &mut extract.report;
    for (c, n) in r.columns.iter_mut().zip(&names) {
        c.name = (*n).to_owned();
    }
    for b in &based {
        b.fitting.code_columns(&mut r.columns);
    }
    r.warnings.append(&mut warnings);
    r.source_records = joined.num_rows() as u64;
    r.suppressed_records += found.eval.suppressed_rows;
    r.base_suppressed_records = found.eval.suppressed_rows;
    r.sources = sources
        .iter()
        .zip(&based)
        .zip(linked)
        .map(|((s, b), linked)| SourceRecords {
            dataset: s.name.clone(),
            records_not_in_every_dataset: b.kept.num_rows() as u64 - linked,
            ..b.records.clone()
        })
        .collect();
    r.warnings.push(format!(
        "every person in the extract is in each of {}: being in it says so about them",
        sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    Ok(extract)
}

/// Several datasets reduced to their base releases and joined on their units, and the join's own
/// base release ([`build_joined`]).
struct Joined<'a, 's> {
    /// The sources in the one order every join of them has.
    sources: Vec<&'a Source<'s>>,
    /// Each source's base release, in that order.
    based: Vec<Based>,
    /// The extract's spec, its columns named inside the join and fitted to the bases.
    asked: Spec,
    /// The join of the sources' kept records.
    joined: RecordBatch,
    /// Per source, how many of its kept records joined.
    linked: Vec<u64>,
    /// The join's base release.
    base: Spec,
}

/// Reduces each of `sources` to its base release, joins them on `unit` and states the join's
/// base release: every quasi-identifier and sensitive column of every base, at the highest base
/// `k`, deterministic for these dataset versions.
fn join_bases<'a, 's>(
    sources: &'a [Source<'s>],
    spec: &Spec,
    unit: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<Joined<'a, 's>> {
    // One order for every join of these datasets, whatever the request's.
    let mut sources: Vec<&Source<'_>> = sources.iter().collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    // Inside the join every column is named `<dataset>.<column>`: two datasets may share names.
    let mut asked = Spec { max_rows_per_person: None, ..spec.clone() };
    let mut base_columns = vec![ColumnSpec { name: unit.to_owned(), role: Role::Pseudonym }];
    let mut based = Vec::with_capacity(sources.len());
    let mut carried = Vec::with_capacity(sources.len());
    for s in &sources {
        let b = within_base(s.input, &s.base, &|c| spec.columns.iter().any(|a| a.name == c), progress)?;
        let mut mine: Vec<ColumnSpec> = spec.columns.iter().filter(|c| s.columns.contains(&c.name)).cloned().collect();
        b.fitting.fit(&mut mine);
        for fitted in mine {
            if let Some(c) = asked.columns.iter_mut().find(|c| c.name == fitted.name) {
                c.name = qualified(s, &fitted.name);
                c.role = fitted.role;
            }
        }
        let mut own: Vec<ColumnSpec> =
            s.base.columns.iter().filter(|c| !matches!(c.role, Role::Pseudonym)).cloned().collect();
        b.fitting.fit(&mut own);
        let mut carry: Vec<String> = own.iter().map(|c| c.name.clone()).collect();
        for c in &s.columns {
            if !carry.contains(c) {
                carry.push(c.clone());
            }
        }
        base_columns.extend(own.into_iter().map(|c| ColumnSpec { name: qualified(s, &c.name), role: c.role }));
        carried.push(carry);
        based.push(b);
    }
    let (joined, linked) = join_on_units(&sources, &based, &carried, unit)?;
    if joined.num_rows() == 0 {
        return Err(Error::Infeasible { column: None, reason: "no person is in every one of the datasets".into() });
    }
    // The join's base release; a sensitive column the extract does not ask for that no
    // generalization can release (too few values, or one its staff tell people apart by) leaves
    // it rather than blocking every extract of the join.
    let base = Spec {
        columns: base_columns,
        unit: Some(unit.to_owned()),
        k: sources.iter().map(|s| s.base.k).max().unwrap_or(spec.k),
        l: sources.iter().map(|s| s.base.l).min().unwrap_or(spec.l),
        max_suppression: sources.iter().map(|s| s.base.max_suppression).fold(MAX_SUPPRESSION, f64::min),
        max_rows_per_person: None,
        key: sources[0].base.key,
    };
    Ok(Joined { sources, based, asked, joined, linked, base })
}

/// Searches the join's base release `base` over `joined`, for an extract asking for `asked`.
fn search_joined_base(
    joined: &RecordBatch,
    base: &Spec,
    asked: &Spec,
    progress: &mut dyn FnMut(Progress),
) -> Result<(columns::Table, search::Found)> {
    search_base(
        base,
        &|c| asked.columns.iter().any(|a| a.name == c),
        &|base| columns::Table::encode(std::slice::from_ref(joined), base)?.with_views(&insiders(&base.columns, true)),
        progress,
    )
}

/// A column's name inside a join: `<dataset>.<column>`.
fn qualified(source: &Source<'_>, column: &str) -> String {
    format!("{}.{column}", source.name)
}

/// Who may know what of an extract's `columns` (named inside the join, for a joined one): for each sensitive
/// column, someone who knows every other column released as it is (attributes, the other
/// sensitive columns), so it must stay l-diverse among the rows they cannot tell apart; where
/// that leaves nobody knowing anything (no attribute and one sensitive column) or there is no
/// sensitive column, someone who knows every column released as it is, among whose rows k
/// people must remain. This is l-diversity for several
/// sensitive columns (each protected with the others taken as quasi-identifiers), and it
/// assumes nothing about which department knows what: four red teams got around each narrower
/// guess (a call time the hotline knows; two hotline datasets together; civil's `living_alone`
/// beside the hotline's `district`; a department holding copies of two other departments'
/// sensitive columns, which read a third's off the one row with both values). A fifth read a
/// benefit off a single-dataset extract by the income beside it, known from another
/// department's extract, so it holds for every extract, not only joined ones. One sensitive
/// column alone need not be spread over `k` people per value in one dataset's extract
/// (`joined` false): whoever knows it and the quasi-identifiers learns nothing more from the
/// row; in a join the row links to the other datasets' columns.
fn insiders(columns: &[ColumnSpec], joined: bool) -> Vec<Insider> {
    let as_is: Vec<(&str, bool)> = columns
        .iter()
        .filter_map(|c| match c.role {
            Role::Sensitive { .. } => Some((c.name.as_str(), true)),
            Role::Attribute => Some((c.name.as_str(), false)),
            Role::Pseudonym | Role::QuasiIdentifier { .. } => None,
        })
        .collect();
    let known_but = |skip: &str| -> Vec<String> {
        as_is.iter().filter(|(n, _)| *n != skip).map(|(n, _)| (*n).to_owned()).collect()
    };
    let mut seen: Vec<Insider> = as_is
        .iter()
        .filter(|(_, sensitive)| *sensitive)
        .map(|(name, _)| Insider { known: known_but(name), protected: vec![(*name).to_owned()] })
        .filter(|insider| !insider.known.is_empty())
        .collect();
    let sensitive = as_is.iter().any(|(_, sensitive)| *sensitive);
    if seen.is_empty() && !as_is.is_empty() && (joined || !sensitive) {
        seen.push(Insider { known: known_but(""), protected: Vec::new() });
    }
    seen
}

/// A dataset reduced to its base release.
struct Based {
    /// The records the base keeps (its suppressed ones left out).
    kept: RecordBatch,
    /// The base's levels and codings.
    fitting: Fitting,
    records: SourceRecords,
}

/// What a base release chose: each quasi-identifier's level, each sensitive number's bounds and
/// how it was coded. An extract within the base is never finer.
struct Fitting {
    steps: Vec<(String, Step)>,
    bounds: Vec<(String, Option<(f64, f64)>)>,
    codings: Vec<(String, String)>,
}

impl Fitting {
    fn of(table: &columns::Table, found: &search::Found) -> Self {
        Self {
            steps: table.qis.iter().zip(&found.eval.levels).map(|(q, l)| (q.name.clone(), q.ladder[*l])).collect(),
            bounds: table.sensitive.iter().map(|s| (s.name.clone(), s.bounds)).collect(),
            codings: table.sensitive.iter().filter_map(|s| Some((s.name.clone(), s.coding.clone()?))).collect(),
        }
    }

    /// Starts each quasi-identifier of `columns` at the base's level and codes each number to
    /// the base's bounds; warns where a hierarchy asked for is finer than the base allows.
    fn fit(&self, columns: &mut [ColumnSpec]) -> Vec<String> {
        let mut warnings = Vec::new();
        for column in columns {
            match &mut column.role {
                Role::QuasiIdentifier { floor, ladder } => {
                    if let Some((_, step)) = self.steps.iter().find(|(name, _)| *name == column.name) {
                        if let Some(asked) = ladder.as_ref().and_then(|l| l.first())
                            && asked != step
                            && hierarchy::contains(*asked, *step)
                        {
                            warnings.push(format!(
                                "`{}`: the base release already generalizes it to `{step}`, coarser than the `{asked}` asked for",
                                column.name
                            ));
                        }
                        *floor = Some(floor.map_or(*step, |f| hierarchy::coarser(f, *step)));
                    }
                }
                Role::Sensitive { bounds } => {
                    if let Some((_, b)) = self.bounds.iter().find(|(name, _)| *name == column.name) {
                        *bounds = b.or(*bounds);
                    }
                }
                Role::Pseudonym | Role::Attribute => {}
            }
        }
        warnings
    }

    /// Reports each sensitive number as the base coded it.
    fn code_columns(&self, columns: &mut [ColumnReport]) {
        for c in columns {
            if let Some((_, coding)) = self.codings.iter().find(|(name, _)| *name == c.name) {
                c.treatment.clone_from(coding);
            }
        }
    }
}

/// Reduces `input` to its base release `base`; `asked` says which columns the extract asks for.
fn within_base(
    input: &[RecordBatch],
    base: &Spec,
    asked: &dyn Fn(&str) -> bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Based> {
    let (table, found) = search_base(base, asked, &|base| columns::Table::encode(input, base), progress)?;
    let kept = kept_as_coded(&table, &found)?;
    let records = SourceRecords {
        dataset: String::new(),
        source_records: table.rows() as u64 + table.without_unit + table.over_cap,
        base_suppressed_records: found.eval.suppressed_rows,
        records_without_unit: table.without_unit,
        records_over_person_cap: table.over_cap,
        records_not_in_every_dataset: 0,
    };
    Ok(Based { kept, fitting: Fitting::of(&table, &found), records })
}

/// What a base release tells, of each sensitive column, about a person whose
/// quasi-identifiers are known: the values of the class their records fall in (of every such
/// class, for a person with several rows), as `l` counts them (text trimmed and lowercased).
/// Extracts of one version are built within its base, so an extract's class holds at least
/// these values; extracts of two versions, intersected on them, hold at least what the two
/// bases' intersection holds.
#[derive(Debug, Default)]
pub struct Candidates {
    /// The base's sensitive columns (a column no generalization could release left it).
    pub columns: Vec<String>,
    /// Per person the base releases (their privacy unit as [`unit_key`] reads it), per column of `columns`:
    /// hashes of the values, sorted.
    pub people: std::collections::HashMap<String, Vec<Vec<u64>>>,
    /// Per person: the base's classes their records fall in, sorted.
    pub classes: std::collections::HashMap<String, Vec<u32>>,
    /// Per person, per column of `columns`: hashes of their own values, sorted.
    pub own: std::collections::HashMap<String, Vec<Vec<u64>>>,
}

/// The [`Candidates`] of the base release `base` of `input`; `asked` names the columns the
/// extracts compared ask for, as [`build_within`] takes them.
///
/// # Errors
/// As [`build_within`]'s base; a base without a privacy unit.
pub fn base_candidates(input: &[RecordBatch], base: &Spec, asked: &dyn Fn(&str) -> bool) -> Result<Candidates> {
    let unit = base
        .unit
        .as_deref()
        .ok_or_else(|| Error::Spec("a base release compared across versions needs a privacy unit".into()))?;
    let (table, found) = search_base(base, asked, &|b| columns::Table::encode(input, b), &mut |_| {})?;
    candidates_of(&table, &found, unit)
}

/// The [`Candidates`] of the base release of the join of `sources` on `unit`, as
/// [`build_joined`] makes it for an extract asking for each source's `columns`; its columns
/// are named `<source>.<column>`.
///
/// # Errors
/// As [`build_joined`]'s base.
pub fn joined_base_candidates(sources: &[Source<'_>], unit: &str) -> Result<Candidates> {
    // The join's base depends on the columns asked for only by their names.
    let columns = std::iter::once(unit.to_owned())
        .chain(sources.iter().flat_map(|s| s.columns.iter().cloned()))
        .map(|name| ColumnSpec { name, role: Role::Attribute })
        .collect();
    let first = sources.first().ok_or_else(|| Error::Spec("a join without datasets".into()))?;
    let spec = Spec { columns, unit: Some(unit.to_owned()), ..first.base.clone() };
    let Joined { asked, joined, base, .. } = join_bases(sources, &spec, unit, &mut |_| {})?;
    let (table, found) = search_joined_base(&joined, &base, &asked, &mut |_| {})?;
    candidates_of(&table, &found, unit)
}

/// The [`Candidates`] of a base release found (`found`) over `table`, people known by `unit`.
fn candidates_of(table: &columns::Table, found: &search::Found, unit: &str) -> Result<Candidates> {
    use arrow::array::{Array, AsArray};
    use std::hash::{Hash, Hasher};
    let units = arrow::compute::cast(
        table.input.column_by_name(unit).ok_or_else(|| Error::UnknownColumn(unit.to_owned()))?,
        &DataType::Utf8,
    )?;
    let units = units.as_string::<i32>();
    let texts = table
        .sensitive
        .iter()
        .map(|s| arrow::compute::cast(&s.released, &DataType::Utf8))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // A fixed hasher: the same value hashes alike in every version compared.
    let hash = |text: &str| {
        let mut h = std::hash::DefaultHasher::new();
        text.trim().to_lowercase().hash(&mut h);
        h.finish()
    };
    let kept = |row: usize| found.eval.kept[found.eval.class[row] as usize];
    let mut values: Vec<Vec<Vec<u64>>> = vec![vec![Vec::new(); texts.len()]; found.eval.kept.len()];
    let mut classes_of: std::collections::HashMap<String, Vec<u32>> = std::collections::HashMap::new();
    let mut own: std::collections::HashMap<String, Vec<Vec<u64>>> = std::collections::HashMap::new();
    for row in (0..table.rows()).filter(|&r| kept(r)) {
        let class = found.eval.class[row];
        // People as every comparison of releases names them (`unit_key`): a copy whose units
        // are written otherwise (numbers for text) holds the same people.
        let unit = units.is_valid(row).then(|| output::unit_key(units.value(row)));
        let mut mine = unit.as_ref().map(|u| own.entry(u.clone()).or_insert_with(|| vec![Vec::new(); texts.len()]));
        for (j, ((s, text), held)) in table.sensitive.iter().zip(&texts).zip(&mut values[class as usize]).enumerate() {
            if s.codes[row] != columns::NULL_CODE {
                let value = hash(text.as_string::<i32>().value(row));
                held.push(value);
                if let Some(mine) = mine.as_mut() {
                    mine[j].push(value);
                }
            }
        }
        if let Some(unit) = unit {
            classes_of.entry(unit).or_default().push(class);
        }
    }
    for held in values.iter_mut().flatten().chain(own.values_mut().flatten()) {
        held.sort_unstable();
        held.dedup();
    }
    let mut classes = std::collections::HashMap::with_capacity(classes_of.len());
    let mut people = std::collections::HashMap::with_capacity(classes_of.len());
    for (unit, mut of) in classes_of {
        of.sort_unstable();
        of.dedup();
        let per_column = (0..texts.len())
            .map(|j| {
                let mut all: Vec<u64> = of.iter().flat_map(|&c| values[c as usize][j].iter().copied()).collect();
                all.sort_unstable();
                all.dedup();
                all
            })
            .collect();
        people.insert(unit.clone(), per_column);
        classes.insert(unit, of);
    }
    Ok(Candidates { columns: table.sensitive.iter().map(|s| s.name.clone()).collect(), people, classes, own })
}

/// The records a base release keeps, each sensitive column as the base coded it. Numbers are
/// microaggregated once, in the base, so every extract of it starts from the same groups and
/// can only merge them: a red team asked for extracts of one dataset with k = 5 to 30, whose
/// own groups put boundaries one rank apart, and read a person's exact income (and, from the
/// diagnoses up to each boundary, their diagnosis) off the difference of two released sums.
fn kept_as_coded(table: &columns::Table, found: &search::Found) -> Result<RecordBatch> {
    let keep: arrow::array::BooleanArray =
        found.eval.class.iter().map(|c| Some(found.eval.kept[*c as usize])).collect();
    let schema = table.input.schema();
    let mut fields: Vec<arrow::datatypes::Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = table.input.columns().to_vec();
    for s in &table.sensitive {
        if let Ok(i) = schema.index_of(&s.name) {
            fields[i] = fields[i].clone().with_data_type(s.released.data_type().clone());
            columns[i] = std::sync::Arc::clone(&s.released);
        }
    }
    let coded = RecordBatch::try_new(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
    Ok(arrow::compute::filter_record_batch(&coded, &keep)?)
}

/// Searches the base release `base` over the table `encode` makes of it. A column of the base
/// the extract does not ask for (`asked`) that no generalization can release (too few values,
/// or values that tell people apart) leaves the base rather than blocking every extract.
fn search_base(
    base: &Spec,
    asked: &dyn Fn(&str) -> bool,
    encode: &dyn Fn(&Spec) -> Result<columns::Table>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(columns::Table, search::Found)> {
    check(base)?;
    let mut base = base.clone();
    loop {
        let table = encode(&base)?;
        match search::search(&table, &base, progress) {
            Ok(found) => return Ok((table, found)),
            Err(Error::Infeasible { column: Some(c), .. })
                if !asked(&c) && base.columns.iter().any(|b| b.name == c) =>
            {
                base.columns.retain(|b| b.name != c);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Joins the sources' kept records on their units: for every person in all of them, every
/// combination of their records, in the first source's order. The joined batch holds the unit
/// (named `unit`) and, of each source, the columns `carried` names, as `<dataset>.<column>`.
/// Also returns, per source, how many of its kept records joined.
fn join_on_units(
    sources: &[&Source<'_>],
    based: &[Based],
    carried: &[Vec<String>],
    unit: &str,
) -> Result<(RecordBatch, Vec<u64>)> {
    use arrow::array::{AsArray, UInt32Array};
    let mut keys = Vec::with_capacity(based.len());
    for (s, b) in sources.iter().zip(based) {
        let name = s.base.unit.as_deref().ok_or_else(|| Error::Spec(format!("{} has no privacy unit", s.name)))?;
        let array = b.kept.column_by_name(name).ok_or_else(|| Error::UnknownColumn(name.to_owned()))?;
        keys.push(arrow::compute::cast(array, &DataType::Utf8)?);
    }
    // People are matched as the comparisons with released extracts match them (`unit_key`:
    // `7` and `0007`, `cn-p1` and `P1` are one person), so that who is in a joined extract is
    // what those comparisons take it to be.
    let texts: Vec<Vec<Option<String>>> =
        keys.iter().map(|k| k.as_string::<i32>().iter().map(|v| v.map(output::unit_key)).collect()).collect();
    let mut rows_of: Vec<std::collections::HashMap<&str, Vec<u32>>> = Vec::with_capacity(texts.len());
    for t in &texts {
        let mut map: std::collections::HashMap<&str, Vec<u32>> = std::collections::HashMap::new();
        for (row, v) in t.iter().enumerate() {
            if let Some(v) = v {
                map.entry(v.as_str()).or_default().push(row as u32);
            }
        }
        rows_of.push(map);
    }
    let mut take: Vec<Vec<u32>> = vec![Vec::new(); sources.len()];
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut linked = vec![0u64; sources.len()];
    for v in texts[0].iter().flatten() {
        let v = v.as_str();
        if !done.insert(v) {
            continue;
        }
        let Some(lists) = rows_of.iter().map(|m| m.get(v)).collect::<Option<Vec<_>>>() else { continue };
        for (n, list) in linked.iter_mut().zip(&lists) {
            *n += list.len() as u64;
        }
        // Every combination, the last source varying fastest.
        let combinations: usize = lists.iter().map(|l| l.len()).product();
        if take[0].len() + combinations > MAX_JOINED_ROWS {
            return Err(Error::Spec(format!(
                "joining the datasets makes more than {MAX_JOINED_ROWS} records: ask for fewer datasets"
            )));
        }
        for i in 0..combinations {
            let mut rest = i;
            for (s, list) in lists.iter().enumerate().rev() {
                take[s].push(list[rest % list.len()]);
                rest /= list.len();
            }
        }
    }
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    let indices: Vec<UInt32Array> = take.into_iter().map(UInt32Array::from).collect();
    let mut column = |batch: &RecordBatch, name: &str, as_name: String, rows: &UInt32Array| -> Result<()> {
        let i = batch.schema().index_of(name).map_err(|_| Error::UnknownColumn(name.to_owned()))?;
        let field = batch.schema().field(i).clone().with_name(as_name);
        arrays.push(arrow::compute::take(batch.column(i).as_ref(), rows, None)?);
        fields.push(field);
        Ok(())
    };
    let first_unit = sources[0].base.unit.as_deref().unwrap_or(unit);
    column(&based[0].kept, first_unit, unit.to_owned(), &indices[0])?;
    for (((s, b), rows), names) in sources.iter().zip(based).zip(&indices).zip(carried) {
        for name in names {
            column(&b.kept, name, qualified(s, name), rows)?;
        }
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema,
        arrays,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(indices[0].len())),
    )?;
    Ok((batch, linked))
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
