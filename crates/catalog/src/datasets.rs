//! Dataset registration, listing and retirement.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use arrow::array::Array;
use rusqlite::{OptionalExtension, params};
use veil_common::{DatasetName, DatasetRef, DepartmentId, Generalization, Level, Tag, UserId};
use veil_ingest::{ReadOptions, SourceFormat, UniqueValues};

use crate::layout::sync_dir;
use crate::{Catalog, DatasetSpec, DpSettings, Error, Pending, Result, now};

/// What the catalogue shows about a dataset: metadata only, never data.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInfo {
    /// Which dataset.
    pub dataset: DatasetRef,
    /// Level of the current version.
    pub level: Level,
    /// Description of the current version.
    pub description: String,
    /// Privacy unit of the current version.
    pub privacy_unit: Option<String>,
    /// Dp mode's settings.
    pub dp: DpSettings,
    /// Rows in the current version.
    pub row_count: u64,
    /// Whether every privacy unit value occurs in one row of the current version's file (a
    /// registry of people rather than of events): declared by the steward and checked at
    /// registration (`one_row_per_person`); for versions registered before it was declared,
    /// as measured then.
    pub one_row_per_unit: bool,
    /// The current version's rows with each person's capped at `max_groups × max_rows`.
    pub capped: CappedRows,
    /// The current version number (1-based).
    pub current_version: i64,
    /// When the first version was registered.
    pub created_at: String,
    /// When it was retired, if it is.
    pub retired_at: Option<String>,
    /// Columns of the current version, in file order.
    pub columns: Vec<ColumnInfo>,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
}

/// A version's rows with each person's capped at `max_groups × max_rows` (the most one person
/// may contribute to a dp answer), measured when it was registered
/// ([`veil_ingest::write_capped`]): queries that cap each person's rows read these instead of
/// capping while they run, which reads every row first and takes longer the more rows one
/// person has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CappedRows {
    /// Not measured (a version registered before this was, or about nobody): a query caps
    /// while it runs.
    #[default]
    Unmeasured,
    /// Nobody has more rows than the cap (or the dataset is a declared registry): the
    /// version's own file is capped.
    Within,
    /// The copy of the version keeping the cap of each person's rows, and its rows.
    Copy(PathBuf, u64),
}

/// The epsilon cap of a dataset about people whose level sets none (L1, L2): personal data always
/// has a cumulative bound per analyst, as at L3. A steward may set a lower one.
pub const PERSONAL_EPSILON_CAP: f64 = 10.0;

impl DatasetInfo {
    /// The current version's rows beyond each person's `max_groups × max_rows`, which dp and
    /// anonymized answers leave out; `None` where registration did not measure them.
    #[must_use]
    pub fn rows_over_caps(&self) -> Option<u64> {
        match self.capped {
            CappedRows::Unmeasured => None,
            CappedRows::Within => Some(0),
            CappedRows::Copy(_, kept) => Some(self.row_count.saturating_sub(kept)),
        }
    }

    /// The epsilon one analyst may spend on this dataset per budget window: the stricter of the
    /// steward's cap and the level's; for a dataset about people at most
    /// [`PERSONAL_EPSILON_CAP`] even where the level sets none. `None` only for a dataset about
    /// nobody at L1 or L2.
    pub fn epsilon_cap(&self) -> Option<f64> {
        let cap = self.dp.cap(self.level);
        match self.privacy_unit {
            Some(_) => Some(cap.map_or(PERSONAL_EPSILON_CAP, |c| c.min(PERSONAL_EPSILON_CAP))),
            None => cap,
        }
    }
}

/// A column of a dataset version.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    /// Its name.
    pub name: String,
    /// Its Arrow type, as text.
    pub data_type: String,
    /// Its tag.
    pub tag: Tag,
    /// Whether it is a linkable identifier.
    pub linkable: bool,
    /// Its declared bounds.
    pub bounds: Option<(f64, f64)>,
    /// How it is generalised in de-identified results.
    pub generalize: Option<Generalization>,
    /// Its public domain, if declared.
    pub public_values: Option<Vec<String>>,
    /// Whether each of its values is on one row at most, in a dataset about nobody (a code
    /// table's key: a join on it meets one row at most); measured at registration, up to about
    /// a million values (past them, counted as repeating). Never set for a dataset about people.
    pub unique: bool,
}

/// The most distinct values a column of a dataset about nobody is tracked to for
/// `ColumnInfo::unique`; past it a column counts as repeating (the safe answer).
const MAX_UNIQUE_TRACKED: usize = 1 << 20;

/// One registered version of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// Its number.
    pub version: i64,
    /// Its level.
    pub level: Level,
    /// Its rows.
    pub row_count: u64,
    /// Its Parquet file's size.
    pub byte_size: u64,
    /// The format it was uploaded in.
    pub source_format: String,
    /// The steward who registered it.
    pub registered_by: String,
    /// When.
    pub registered_at: String,
}

/// Resolves `relative` under the import `root`, refusing anything that could leave it: an
/// absolute path, a `..` component, or a symbolic link anywhere along the way.
///
/// # Errors
/// [`Error::ImportPath`] saying which rule the path breaks.
pub fn resolve_import(root: &Path, relative: &str) -> Result<PathBuf> {
    let rel = Path::new(relative);
    if relative.is_empty() || rel.is_absolute() {
        return Err(Error::ImportPath("source must be a relative path under the import root".into()));
    }
    let mut path = root.to_path_buf();
    for component in rel.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Error::ImportPath("source may not contain `..` or leave the import root".into()));
            }
        }
        let meta = fs::symlink_metadata(&path)
            .map_err(|_| Error::ImportPath(format!("source `{relative}` does not exist under the import root")))?;
        if meta.file_type().is_symlink() {
            return Err(Error::ImportPath("source may not be or pass through a symbolic link".into()));
        }
    }
    if !path.is_file() {
        return Err(Error::ImportPath(format!("source `{relative}` is not a file")));
    }
    // Belt and braces: the canonical path must still be under the canonical root.
    let canonical_root = root.canonicalize().map_err(Error::io("resolving import root", root))?;
    let canonical = path.canonicalize().map_err(Error::io("resolving", &path))?;
    if !canonical.starts_with(&canonical_root) {
        return Err(Error::ImportPath("source leaves the import root".into()));
    }
    Ok(canonical)
}

/// What a dry run of a registration found ([`Catalog::check_dataset`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Rows read, every one valid.
    pub rows: u64,
    /// The columns as they would be stored: name and Arrow type.
    pub columns: Vec<(String, String)>,
    /// With a privacy unit: whether each person is one row.
    pub one_row_per_unit: Option<bool>,
}

/// A source read and written under `tmp/`, not yet placed.
struct Ingested {
    tmp: PathBuf,
    format: SourceFormat,
    schema: arrow::datatypes::SchemaRef,
    report: veil_ingest::WriteReport,
    one_row_per_unit: bool,
    /// For a dataset about nobody, the columns each value of which is on one row at most.
    unique: Vec<String>,
}

/// The capped copy a registration measured: the cap, and the copy in `tmp/` with its rows if
/// anybody has more rows than the cap.
struct CappedCopy {
    cap: u64,
    copy: Option<(PathBuf, u64)>,
}

impl Catalog {
    /// Registers a new version of a dataset from the file at `source`.
    ///
    /// The file is converted to Parquet in `tmp/`, fsynced, renamed into `datasets/`, and only
    /// then named by a catalogue transaction. Any failure removes what was written: the
    /// catalogue and the data directory are as before. `source` itself is left alone.
    ///
    /// `record` gives the audit record of the change from its version and row count; it is
    /// written in the same transaction ([`crate::outbox`]) and returned as pending, for the
    /// caller to append to the audit log and clear. `rows_read` is told how many rows have been
    /// read so far, batch by batch, for a progress display.
    ///
    /// # Errors
    /// [`Error::DepartmentNotFound`]; [`Error::Invalid`] when the file does not match the
    /// metadata; [`Error::Ingest`] when the file cannot be read; I/O and SQLite failures.
    pub fn register_dataset(
        &self,
        spec: &DatasetSpec,
        source: &Path,
        by: &UserId,
        record: impl FnOnce(u64, u64) -> Option<String>,
        rows_read: &dyn Fn(u64),
    ) -> Result<(DatasetInfo, Option<Pending>)> {
        let Ingested { tmp, format, schema, report, one_row_per_unit: measured, unique } =
            self.ingest(spec, source, rows_read)?;
        // Declared, and checked by `ingest`: the registry's shorter query path depends on the
        // declaration, never on whether a file happens to hold each person once.
        let one_row_per_unit = spec.privacy_unit.is_some() && spec.one_row_per_person;
        let capped = match self.capped_copy(spec, &tmp, measured) {
            Ok(capped) => capped,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };

        let dataset_dir = self.dir.datasets().join(spec.dataset.department.as_str()).join(spec.dataset.name.as_str());
        let id = uuid::Uuid::new_v4();
        let file_name = format!("{id}.parquet");
        let relative = format!("datasets/{}/{}/{file_name}", spec.dataset.department, spec.dataset.name);
        let placed = dataset_dir.join(&file_name);
        let capped_name = format!("{id}.capped.parquet");
        let copy = capped.as_ref().and_then(|c| c.copy.as_ref());
        let capped_relative =
            copy.map(|_| format!("datasets/{}/{}/{capped_name}", spec.dataset.department, spec.dataset.name));
        let capped_placed = dataset_dir.join(&capped_name);
        let place = || -> Result<()> {
            fs::create_dir_all(&dataset_dir).map_err(Error::io("creating directory", &dataset_dir))?;
            fs::rename(&tmp, &placed).map_err(Error::io("moving dataset file to", &placed))?;
            if let Some((copy, _)) = copy {
                fs::rename(copy, &capped_placed).map_err(Error::io("moving dataset file to", &capped_placed))?;
            }
            sync_dir(&dataset_dir)?;
            if let Some(parent) = dataset_dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        };
        let remove_all = || {
            for file in [Some(&tmp), copy.map(|(c, _)| c), Some(&placed), Some(&capped_placed)].into_iter().flatten() {
                let _ = fs::remove_file(file);
            }
        };
        if let Err(e) = place() {
            remove_all();
            return Err(e);
        }

        let commit = || -> Result<(Option<Pending>, i64)> {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let registered_at = now();
            let version: i64 = tx.query_row(
                "SELECT coalesce(max(version), 0) + 1 FROM dataset_versions WHERE department = ?1 AND name = ?2",
                params![spec.dataset.department.as_str(), spec.dataset.name.as_str()],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO datasets (department, name, current_version, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (department, name) DO UPDATE SET current_version = excluded.current_version, retired_at = NULL",
                params![spec.dataset.department.as_str(), spec.dataset.name.as_str(), version, registered_at],
            )?;
            tx.execute(
                "INSERT INTO dataset_versions (department, name, version, level, description, privacy_unit, file,
                     source_format, row_count, byte_size, registered_by, registered_at, max_groups, max_rows, epsilon_cap,
                     one_row_per_unit, noise, capped_at, capped_file, capped_rows)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                params![
                    spec.dataset.department.as_str(),
                    spec.dataset.name.as_str(),
                    version,
                    spec.level.as_str(),
                    spec.description,
                    spec.privacy_unit,
                    relative,
                    format.as_str(),
                    report.rows as i64,
                    report.bytes as i64,
                    by.as_str(),
                    registered_at,
                    spec.dp.max_groups as i64,
                    spec.dp.max_rows as i64,
                    spec.dp.epsilon_cap,
                    one_row_per_unit,
                    spec.dp.noise.as_str(),
                    capped.as_ref().map(|c| c.cap as i64),
                    capped_relative,
                    copy.map(|(_, rows)| *rows as i64),
                ],
            )?;
            for (position, field) in schema.fields().iter().enumerate() {
                let Some(column) = spec.columns.get(field.name()) else { continue };
                tx.execute(
                    "INSERT INTO dataset_columns (department, name, version, position, column_name, data_type, tag, linkable, bound_lo, bound_hi, generalize, public_values, unique_values)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        spec.dataset.department.as_str(),
                        spec.dataset.name.as_str(),
                        version,
                        position as i64,
                        field.name(),
                        field.data_type().to_string(),
                        column.tag.as_str(),
                        column.linkable,
                        column.bounds.map(|b| b.0),
                        column.bounds.map(|b| b.1),
                        column.generalize.map(|g| g.to_string()),
                        // One value per line; validation refuses values with line breaks.
                        column.public_values.as_ref().map(|v| v.join("\n")),
                        unique.contains(field.name()),
                    ],
                )?;
            }
            let pending = record(version as u64, report.rows).map(|e| crate::outbox::write(&tx, e)).transpose()?;
            tx.commit()?;
            Ok((pending, version))
        };
        let (pending, version) = match commit() {
            Ok(done) => done,
            Err(e) => {
                remove_all();
                return Err(e);
            }
        };
        tracing::info!(dataset = %spec.dataset, rows = report.rows, bytes = report.bytes, "dataset version registered");
        Ok((self.dataset_at(&spec.dataset, Some(version))?, pending))
    }

    /// Every check a registration makes (the department, the file against its metadata, every
    /// value of every row, the privacy unit), without storing anything: a steward's dry run.
    ///
    /// # Errors
    /// As [`Catalog::register_dataset`] before it stores anything.
    pub fn check_dataset(&self, spec: &DatasetSpec, source: &Path, rows_read: &dyn Fn(u64)) -> Result<Checked> {
        let Ingested { tmp, schema, report, one_row_per_unit, .. } = self.ingest(spec, source, rows_read)?;
        let _ = fs::remove_file(&tmp);
        let columns = schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
        Ok(Checked {
            rows: report.rows,
            columns,
            one_row_per_unit: spec.privacy_unit.as_ref().map(|_| one_row_per_unit),
        })
    }

    /// For a dataset about people, the cap of each person's rows and, where somebody has more,
    /// the copy of the ingested file at `tmp` keeping each person's rows up to it (`None` for a
    /// dataset about nobody). A file `ingest` measured as one row per person (declared or not)
    /// needs no copy and is not read again.
    fn capped_copy(&self, spec: &DatasetSpec, tmp: &Path, one_row_per_person: bool) -> Result<Option<CappedCopy>> {
        let Some(unit) = spec.privacy_unit.as_ref() else { return Ok(None) };
        let cap = spec.dp.max_groups.max(1).saturating_mul(spec.dp.max_rows.max(1));
        if one_row_per_person {
            return Ok(Some(CappedCopy { cap, copy: None }));
        }
        let copy = self.dir.tmp_file("parquet");
        match veil_ingest::write_capped(tmp, unit, cap, &copy) {
            Ok(written) => Ok(Some(CappedCopy { cap, copy: written.map(|w| (copy, w.rows)) })),
            Err(e) => {
                let _ = fs::remove_file(&copy);
                Err(e.into())
            }
        }
    }

    /// Reads `source` as `spec` describes it and writes it as Parquet under `tmp/` (the caller
    /// places or removes the file), measuring whether each person is one row.
    fn ingest(&self, spec: &DatasetSpec, source: &Path, rows_read: &dyn Fn(u64)) -> Result<Ingested> {
        if !self.department_exists(&spec.dataset.department)? {
            return Err(Error::DepartmentNotFound(spec.dataset.department.clone()));
        }
        let format = match spec.format {
            Some(f) => f,
            None => SourceFormat::sniff(source)?,
        };
        let options = ReadOptions {
            sheet: spec.sheet.clone(),
            encoding: spec.encoding,
            delimiter: spec.delimiter,
            formats: spec.declared_formats(),
            ..ReadOptions::with_declared(spec.declared_types())
        };
        let opened = veil_ingest::open(source, format, &options)?;
        spec.check_schema(&opened.schema)?;
        self.check_changes(spec, &opened.schema)?;
        let schema = opened.schema.clone();

        let unit_column = |unit: &String| {
            let i = schema.index_of(unit).map_err(|_| {
                Error::invalid("privacy_unit_unknown", format!("privacy_unit `{unit}` is not a column of the file"))
            })?;
            Ok::<_, Error>((unit.clone(), i, UniqueValues::new(&schema, i)?))
        };
        let (unit, mut units) = match spec.privacy_unit.as_ref().map(unit_column).transpose()? {
            Some((name, i, tracked)) => (Some((name, i)), Some(tracked)),
            None => (None, None),
        };
        // About nobody: which columns hold each value once (a code table's key), so that a
        // join on one is known to meet one row of it at most.
        let mut columns = match spec.privacy_unit {
            Some(_) => Vec::new(),
            None => (0..schema.fields().len())
                .map(|i| UniqueValues::with_limit(&schema, i, MAX_UNIQUE_TRACKED))
                .collect::<std::result::Result<Vec<_>, _>>()?,
        };
        let tmp = self.dir.tmp_file("parquet");
        let mut read = 0u64;
        let written = veil_ingest::write_parquet(opened, &tmp, |batch| {
            // Every row about people names its person: rows without one would be one person
            // together, to every count, cap and threshold.
            if let Some((name, i)) = &unit {
                let units = batch.column(*i);
                if units.null_count() > 0
                    && let Some(at) = (0..units.len()).find(|&r| units.is_null(r))
                {
                    return Err(veil_ingest::Error::UnitMissing { column: name.clone(), row: read + at as u64 + 1 });
                }
            }
            read += batch.num_rows() as u64;
            rows_read(read);
            for tracked in units.iter_mut().chain(columns.iter_mut()) {
                tracked.observe(batch)?;
            }
            Ok(())
        });
        let one_row_per_unit = units.as_ref().is_some_and(UniqueValues::unique);
        let unique = schema
            .fields()
            .iter()
            .zip(&columns)
            .filter(|(_, tracked)| tracked.unique())
            .map(|(f, _)| f.name().clone())
            .collect();
        let checked = written.map_err(Error::from).and_then(|report| {
            if let Some(unit) = spec.privacy_unit.as_ref().filter(|_| spec.one_row_per_person && !one_row_per_unit) {
                return Err(Error::invalid(
                    "one_row_per_person_violated",
                    format!(
                        "the metadata declares one row per person, but the privacy unit `{unit}` holds a value on more \
                         than one row (or more distinct values than can be checked): register it without \
                         one_row_per_person, or with one row per person"
                    ),
                ));
            }
            self.check_rekeyed(spec, &tmp)?;
            Ok(report)
        });
        match checked {
            Ok(report) => Ok(Ingested { tmp, format, schema, report, one_row_per_unit, unique }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Refuses a version (written to `new`) whose people were re-keyed, unless the metadata
    /// names the privacy unit in `confirm_changes`: most of its rows are, but for the unit, rows
    /// that only one person had in the latest version, and most of those under a unit that
    /// version did not have.
    /// Extracts tell people apart across versions by their unit: a red team re-keyed everybody
    /// in a new version with one person added, and the two versions' extracts, compared as two
    /// populations, gave that person's row.
    fn check_rekeyed(&self, spec: &DatasetSpec, new: &Path) -> Result<()> {
        let Some(unit) = spec.privacy_unit.as_ref().filter(|u| !spec.confirm_changes.contains(u)) else {
            return Ok(());
        };
        let latest = match self.dataset_at(&spec.dataset, None) {
            Ok(info) => info,
            Err(Error::DatasetNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if latest.privacy_unit.as_ref() != Some(unit) {
            return Ok(());
        }
        let common: Vec<String> = latest
            .columns
            .iter()
            .map(|c| c.name.clone())
            .filter(|c| c != unit && spec.columns.contains_key(c))
            .collect();
        if common.is_empty() {
            return Ok(());
        }
        let (old, _) = self.version_source(&spec.dataset, latest.current_version)?;
        // Rows only one person had: who had each; and every person.
        let mut distinct: std::collections::HashMap<u64, Option<String>> = std::collections::HashMap::new();
        let mut people = std::collections::HashSet::new();
        for (person, row) in row_contents(&old, unit, &common)? {
            people.insert(person.clone());
            distinct.entry(row).and_modify(|p| *p = None).or_insert(Some(person));
        }
        // A row as someone else's before is a re-keying when its unit is new (everybody a year
        // older has the row of somebody a year older before, under a unit that was there).
        let (mut rows, mut matched, mut moved) = (0u64, 0u64, 0u64);
        for (person, row) in row_contents(new, unit, &common)? {
            rows += 1;
            if let Some(Some(before)) = distinct.get(&row) {
                matched += 1;
                moved += u64::from(*before != person && !people.contains(&person));
            }
        }
        if matched < 10 || matched * 2 < rows || moved * 2 < matched {
            return Ok(());
        }
        Err(Error::invalid(
            "column_change_unconfirmed",
            format!(
                "this version of {} re-keys its people: {matched} of its {rows} rows are as one person's row of version {} but for `{unit}`, and {moved} of them have a `{unit}` it did not have; extracts tell people apart across versions by `{unit}`, so if that is meant, name `{unit}` in \"confirm_changes\" (an extract of this version is then not released beside one of an earlier version)",
                spec.dataset, latest.current_version
            ),
        ))
    }

    /// Refuses a version that drops a column of the dataset's latest version (retired or not),
    /// gives one another type or another tag, or has another privacy unit, unless the metadata
    /// names the column in `confirm_changes`: queries,
    /// extracts and the steward's own pipelines rely on the columns as they were, and a
    /// change made by mistake would otherwise go unnoticed until something downstream broke.
    fn check_changes(&self, spec: &DatasetSpec, schema: &arrow::datatypes::Schema) -> Result<()> {
        let latest = match self.dataset_at(&spec.dataset, None) {
            Ok(info) => info,
            Err(Error::DatasetNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut changes = Vec::new();
        for column in latest.columns.iter().filter(|c| !spec.confirm_changes.contains(&c.name)) {
            match schema.field_with_name(&column.name) {
                Err(_) => changes.push(format!("drops `{}`", column.name)),
                Ok(field) if field.data_type().to_string() != column.data_type => changes.push(format!(
                    "reads `{}` as {} where version {} has {}",
                    column.name,
                    field.data_type(),
                    latest.current_version,
                    column.data_type
                )),
                Ok(_) => {}
            }
            // A tag says how the column is released: a sensitive column tagged otherwise in a
            // new version would be released as it is, beside extracts that kept it l-diverse.
            if let Some(declared) = spec.columns.get(&column.name)
                && declared.tag != column.tag
            {
                changes.push(format!(
                    "tags `{}` {} where version {} tags it {}",
                    column.name, declared.tag, latest.current_version, column.tag
                ));
            }
        }
        if latest.privacy_unit != spec.privacy_unit
            && let Some(unit) = latest.privacy_unit.as_ref().filter(|u| !spec.confirm_changes.contains(u))
        {
            changes.push(format!("does not have `{unit}` as its privacy unit"));
        }
        if changes.is_empty() {
            return Ok(());
        }
        Err(Error::invalid(
            "column_change_unconfirmed",
            format!(
                "this version of {} {}: if that is meant, name the column(s) in \"confirm_changes\" (declare a column's \"type\" or tag to keep it as it was)",
                spec.dataset,
                changes.join(", ")
            ),
        ))
    }

    /// Every dataset's metadata, by department and name; retired ones only when asked for.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn datasets(&self, include_retired: bool) -> Result<Vec<DatasetInfo>> {
        let refs: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT department, name FROM datasets WHERE ?1 OR retired_at IS NULL ORDER BY department, name",
            )?;
            let rows = stmt.query_map([include_retired], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        refs.into_iter()
            .map(|(d, n)| self.dataset(&DatasetRef { department: DepartmentId::new(d)?, name: DatasetName::new(n)? }))
            .collect()
    }

    /// One dataset's metadata, retired or not.
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`], or a SQLite failure.
    pub fn dataset(&self, dataset: &DatasetRef) -> Result<DatasetInfo> {
        self.dataset_at(dataset, None)
    }

    /// One dataset's metadata as version `version` declared it (`current_version` is then
    /// `version`), retired or not.
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`] for a version that is not there; SQLite failures.
    pub fn dataset_version(&self, dataset: &DatasetRef, version: i64) -> Result<DatasetInfo> {
        self.dataset_at(dataset, Some(version))
    }

    /// One dataset's metadata as of `version` (its current one when `None`): what a
    /// registration answers is the version its own transaction created, even when another
    /// registration of the same name committed right after it.
    fn dataset_at(&self, dataset: &DatasetRef, version: Option<i64>) -> Result<DatasetInfo> {
        let conn = self.conn();
        let key = params![dataset.department.as_str(), dataset.name.as_str()];
        let head = conn
            .prepare_cached(
                "SELECT current_version, created_at, retired_at FROM datasets WHERE department = ?1 AND name = ?2",
            )?
            .query_row(key, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))
            .optional()?;
        let Some((current_version, created_at, retired_at)) = head else {
            return Err(Error::DatasetNotFound(dataset.clone()));
        };
        let current_version = version.unwrap_or(current_version);
        let mut stmt = conn.prepare_cached(
            "SELECT version, level, row_count, byte_size, source_format, registered_by, registered_at, description, privacy_unit,
                    max_groups, max_rows, epsilon_cap, one_row_per_unit, noise, capped_at, capped_file, capped_rows
             FROM dataset_versions WHERE department = ?1 AND name = ?2 ORDER BY version",
        )?;
        let mut description = String::new();
        let mut privacy_unit = None;
        let mut dp = DpSettings::default();
        let mut one_row_per_unit = false;
        let mut capped = CappedRows::Unmeasured;
        let versions = stmt
            .query_map(key, |r| {
                let version: i64 = r.get(0)?;
                if version == current_version {
                    description = r.get(7)?;
                    privacy_unit = r.get(8)?;
                    // Versions registered before dp settings existed have the defaults.
                    let defaults = DpSettings::default();
                    dp = DpSettings {
                        max_groups: r.get::<_, Option<i64>>(9)?.map_or(defaults.max_groups, |v| v.max(1) as u64),
                        max_rows: r.get::<_, Option<i64>>(10)?.map_or(defaults.max_rows, |v| v.max(1) as u64),
                        epsilon_cap: r.get(11)?,
                        noise: match r.get::<_, Option<String>>(13)? {
                            Some(name) => parse_stored(name)?,
                            None => defaults.noise,
                        },
                    };
                    one_row_per_unit = r.get(12)?;
                    // Measured at the cap the version declares (the only one it has).
                    capped = match (r.get::<_, Option<i64>>(14)?, r.get::<_, Option<String>>(15)?) {
                        (None, _) => CappedRows::Unmeasured,
                        (Some(_), None) => CappedRows::Within,
                        // Written with the file; never missing but in a damaged catalogue,
                        // where the largest count keeps the copy out of memory.
                        (Some(_), Some(file)) => CappedRows::Copy(
                            self.dir.root().join(file),
                            r.get::<_, Option<i64>>(16)?.map_or(u64::MAX, |n| n as u64),
                        ),
                    };
                }
                Ok(VersionInfo {
                    version,
                    level: parse_stored(r.get::<_, String>(1)?)?,
                    row_count: r.get::<_, i64>(2)? as u64,
                    byte_size: r.get::<_, i64>(3)? as u64,
                    source_format: r.get(4)?,
                    registered_by: r.get(5)?,
                    registered_at: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let current = versions
            .iter()
            .find(|v| v.version == current_version)
            .cloned()
            .ok_or_else(|| Error::DatasetNotFound(dataset.clone()))?;
        let mut stmt = conn.prepare_cached(
            "SELECT column_name, data_type, tag, linkable, bound_lo, bound_hi, generalize, public_values, unique_values FROM dataset_columns
             WHERE department = ?1 AND name = ?2 AND version = ?3 ORDER BY position",
        )?;
        let columns = stmt
            .query_map(params![dataset.department.as_str(), dataset.name.as_str(), current_version], |r| {
                let lo: Option<f64> = r.get(4)?;
                let hi: Option<f64> = r.get(5)?;
                Ok(ColumnInfo {
                    name: r.get(0)?,
                    data_type: r.get(1)?,
                    tag: parse_stored(r.get::<_, String>(2)?)?,
                    linkable: r.get(3)?,
                    bounds: lo.zip(hi),
                    generalize: r.get::<_, Option<String>>(6)?.map(parse_stored).transpose()?,
                    public_values: r.get::<_, Option<String>>(7)?.map(|v| v.split('\n').map(str::to_owned).collect()),
                    unique: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DatasetInfo {
            dataset: dataset.clone(),
            level: current.level,
            description,
            privacy_unit,
            dp,
            row_count: current.row_count,
            one_row_per_unit,
            capped,
            current_version,
            created_at,
            retired_at,
            columns,
            versions,
        })
    }

    /// The file of version `version` of `dataset` and the column its privacy unit is in.
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`] for a version that is not there; SQLite failures.
    pub fn version_source(&self, dataset: &DatasetRef, version: i64) -> Result<(PathBuf, Option<String>)> {
        let conn = self.conn();
        let found: Option<(String, Option<String>)> = conn
            .prepare_cached(
                "SELECT file, privacy_unit FROM dataset_versions WHERE department = ?1 AND name = ?2 AND version = ?3",
            )?
            .query_row(params![dataset.department.as_str(), dataset.name.as_str(), version], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        found.map(|(f, unit)| (self.dir.root().join(f), unit)).ok_or_else(|| Error::DatasetNotFound(dataset.clone()))
    }

    /// The Parquet file of a live dataset's current version.
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`] for an unknown or retired dataset.
    pub fn current_file(&self, dataset: &DatasetRef) -> Result<PathBuf> {
        let conn = self.conn();
        let file: Option<String> = conn
            .prepare_cached(
                "SELECT v.file FROM datasets d JOIN dataset_versions v
                   ON v.department = d.department AND v.name = d.name AND v.version = d.current_version
                 WHERE d.department = ?1 AND d.name = ?2 AND d.retired_at IS NULL",
            )?
            .query_row(params![dataset.department.as_str(), dataset.name.as_str()], |r| r.get(0))
            .optional()?;
        file.map(|f| self.dir.root().join(f)).ok_or_else(|| Error::DatasetNotFound(dataset.clone()))
    }

    /// Retires a dataset: it leaves the listing and can no longer be queried. Its versions stay
    /// on disk for the audit trail; registering the name again starts a new version.
    ///
    /// `record`, the audit record, is written in the same transaction ([`crate::outbox`]).
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`] for an unknown or already retired dataset.
    pub fn retire_dataset(&self, dataset: &DatasetRef, record: Option<String>) -> Result<Option<Pending>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE datasets SET retired_at = ?3 WHERE department = ?1 AND name = ?2 AND retired_at IS NULL",
            params![dataset.department.as_str(), dataset.name.as_str(), now()],
        )?;
        if n == 0 {
            return Err(Error::DatasetNotFound(dataset.clone()));
        }
        let pending = record.map(|e| crate::outbox::write(&tx, e)).transpose()?;
        tx.commit()?;
        tracing::info!(dataset = %dataset, "dataset retired");
        Ok(pending)
    }

    /// Empties `tmp/` and removes dataset files no committed version names (left by a crash
    /// between placing a file and committing its version).
    pub(crate) fn sweep(&self) -> Result<()> {
        let tmp = self.dir.tmp();
        for entry in fs::read_dir(&tmp).map_err(Error::io("reading", &tmp))? {
            let path = entry.map_err(Error::io("reading", &tmp))?.path();
            let _ = fs::remove_file(&path);
        }
        let known = self.named_files(
            "SELECT file FROM dataset_versions UNION SELECT capped_file FROM dataset_versions WHERE capped_file IS NOT NULL",
        )?;
        let root = self.dir.datasets();
        for dept in read_dirs(&root)? {
            for dataset in read_dirs(&dept)? {
                self.remove_unnamed(&dataset, &known, "dataset file that no version names")?;
            }
        }
        Ok(())
    }

    /// The files (relative to the data directory) that the rows of `sql` name.
    pub(crate) fn named_files(&self, sql: &str) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes the files of `dir` that `known` does not name.
    pub(crate) fn remove_unnamed(&self, dir: &Path, known: &HashSet<String>, what: &str) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(Error::io("reading", dir))? {
            let path = entry.map_err(Error::io("reading", dir))?.path();
            let relative = path.strip_prefix(self.dir.root()).ok().and_then(Path::to_str).map(str::to_owned);
            if relative.is_none_or(|r| !known.contains(&r)) {
                tracing::warn!(file = %path.display(), "removing {what}");
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("reading", dir))? {
        let path = entry.map_err(Error::io("reading", dir))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Parses a level or tag stored by this catalogue; the CHECK constraints make failure a
/// corrupted database, reported as a conversion error.
fn parse_stored<T: std::str::FromStr>(text: String) -> rusqlite::Result<T> {
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unexpected stored value `{text}`").into(),
        )
    })
}

/// Each row of the Parquet file at `path`: its `unit` as text and a hash of its `columns`
/// (rows without a unit left out).
fn row_contents(path: &Path, unit: &str, columns: &[String]) -> Result<Vec<(String, u64)>> {
    use arrow::array::AsArray;
    use std::hash::{Hash, Hasher};
    let source = veil_ingest::open(path, SourceFormat::Parquet, &ReadOptions::with_declared(Default::default()))?;
    let at = |name: &str| {
        source
            .schema
            .index_of(name)
            .map_err(|_| Error::invalid("column_missing", format!("a stored version has no `{name}`")))
    };
    // Our own files, of types we wrote: a failure here is not the caller's, and its message
    // could quote a value.
    let failed = |_| Error::invalid("version_not_comparable", "a stored version could not be compared with this one");
    let unit_at = at(unit)?;
    let picked = columns.iter().map(|c| at(c)).collect::<Result<Vec<_>>>()?;
    let converter = arrow::row::RowConverter::new(
        picked.iter().map(|&i| arrow::row::SortField::new(source.schema.field(i).data_type().clone())).collect(),
    )
    .map_err(failed)?;
    let mut out = Vec::new();
    for batch in source.batches {
        let batch = batch?;
        let arrays: Vec<_> = picked.iter().map(|&i| std::sync::Arc::clone(batch.column(i))).collect();
        let rows = converter.convert_columns(&arrays).map_err(failed)?;
        let units = arrow::compute::cast(batch.column(unit_at), &arrow::datatypes::DataType::Utf8).map_err(failed)?;
        for (i, person) in units.as_string::<i32>().iter().enumerate() {
            let Some(person) = person else { continue };
            let mut h = std::hash::DefaultHasher::new();
            rows.row(i).as_ref().hash(&mut h);
            out.push((person.to_owned(), h.finish()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataDir;

    #[test]
    fn open_removes_uploads_and_files_no_version_names() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        crate::init(&data, &root.path().join("t"), &UserId::new("admin").expect("id"), &[]).expect("init");
        let dir = DataDir::existing(&data).expect("dir");
        // What a crash leaves: a half-written upload, and a version file placed but never committed.
        std::fs::write(dir.tmp().join("abc.upload"), b"partial").expect("write");
        let orphan_dir = dir.datasets().join("civil").join("elderly");
        std::fs::create_dir_all(&orphan_dir).expect("mkdir");
        std::fs::write(orphan_dir.join("0000.parquet"), b"PAR1").expect("write");
        drop(Catalog::open(&data).expect("open"));
        assert_eq!(std::fs::read_dir(dir.tmp()).expect("tmp").count(), 0);
        assert!(!orphan_dir.join("0000.parquet").exists());
    }

    /// Rows of the Parquet file at `path`, read back.
    fn rows_in(path: &Path) -> u64 {
        let format = SourceFormat::sniff(path).expect("format");
        let source = veil_ingest::open(path, format, &ReadOptions::with_declared(Default::default())).expect("open");
        source.batches.map(|b| b.expect("batch").num_rows() as u64).sum()
    }

    /// A catalogue in a new data directory with the department `civil`, and the directory.
    fn civil_catalog() -> (tempfile::TempDir, Catalog) {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        crate::init(&data, &root.path().join("t"), &UserId::new("admin").expect("id"), &[]).expect("init");
        let catalog = Catalog::open(&data).expect("open");
        catalog.create_department(&DepartmentId::new("civil").expect("id"), "民政局").expect("department");
        (root, catalog)
    }

    /// `civil.<name>`'s metadata at L2: its privacy unit, each column with its tag, its dp
    /// settings and whether it declares one row a person.
    fn civil_spec(
        name: &str,
        unit: Option<&str>,
        columns: &[(&str, &str)],
        dp: crate::DpInput,
        one_row_per_person: bool,
    ) -> DatasetSpec {
        let column = |tag: &str| crate::ColumnInput {
            tag: tag.into(),
            linkable: false,
            bounds: None,
            data_type: None,
            generalize: None,
            public_values: None,
            format: None,
        };
        DatasetSpec::validate(crate::MetadataInput {
            name: name.into(),
            department: "civil".into(),
            level: "L2".into(),
            description: String::new(),
            privacy_unit: unit.map(str::to_owned),
            format: None,
            sheet: None,
            encoding: None,
            delimiter: None,
            columns: columns.iter().map(|(c, tag)| ((*c).to_owned(), column(tag))).collect(),
            dp,
            confirm_changes: Vec::new(),
            one_row_per_person,
        })
        .expect("spec")
    }

    /// Registers `csv` (written beside the data directory) as `spec` says, by the admin.
    fn register_csv(catalog: &Catalog, root: &Path, spec: &DatasetSpec, csv: &str) -> Result<DatasetInfo> {
        let file = root.join(format!("{}.csv", spec.dataset.name));
        std::fs::write(&file, csv).expect("csv");
        let admin = UserId::new("admin").expect("id");
        catalog.register_dataset(spec, &file, &admin, |_, _| None, &|_| {}).map(|(info, _)| info)
    }

    #[test]
    fn each_persons_rows_are_capped_in_a_copy_stored_at_registration() {
        let (root, catalog) = civil_catalog();
        let data = root.path().join("data");
        let register = |name: &str, max_rows: u64, heavy: usize, pair: bool, declared: bool| {
            let dp = crate::DpInput { max_rows: Some(max_rows), ..crate::DpInput::default() };
            let spec = civil_spec(name, Some("id"), &[("id", "identifier"), ("x", "attribute")], dp, declared);
            let mut csv = String::from("id,x\n");
            (0..20).for_each(|i| csv.push_str(&format!("p{i},{i}\n")));
            (0..heavy).for_each(|i| csv.push_str(&format!("heavy,{i}\n")));
            if pair {
                csv.push_str("p0,100\n");
            }
            register_csv(&catalog, root.path(), &spec, &csv)
        };
        let capped =
            |name, max_rows, heavy, pair| register(name, max_rows, heavy, pair, false).expect("register").capped;
        // Twins but for one person's rows: 3,000 or 2, capped at 1 (with the 21 others' first).
        let (CappedRows::Copy(many, many_rows), CappedRows::Copy(few, few_rows)) =
            (capped("many", 1, 3_000, true), capped("few", 1, 2, true))
        else {
            panic!("people over the cap: copies stored");
        };
        assert_eq!((rows_in(&many), rows_in(&few)), (21, 21), "a query over either reads as many rows");
        assert_eq!((many_rows, few_rows), (21, 21), "the copies' rows are recorded");
        assert_eq!(capped("within", 3, 3, true), CappedRows::Within, "nobody over 3 rows");

        // One row per person is the steward's declaration, checked; a file that happens to
        // hold each person once takes no shorter path for it.
        let undeclared = register("unique", 1, 1, false, false).expect("register");
        assert_eq!((undeclared.one_row_per_unit, undeclared.capped), (false, CappedRows::Within));
        let declared = register("registry", 1, 1, false, true).expect("register");
        assert_eq!((declared.one_row_per_unit, declared.capped), (true, CappedRows::Within));
        match register("repeats", 1, 1, true, true) {
            Err(Error::Invalid { code, .. }) => assert_eq!(code, "one_row_per_person_violated"),
            other => panic!("a declared registry with a repeated person: {other:?}"),
        }
        // The copies are named by their versions: reopening keeps them.
        drop(catalog);
        drop(Catalog::open(&data).expect("open"));
        assert!(many.exists() && few.exists());
    }

    #[test]
    fn a_code_tables_unique_columns_are_measured_at_registration() {
        let (root, catalog) = civil_catalog();
        let register = |name: &str, unit: Option<&str>, csv: &str| {
            let key = if unit.is_some() { "identifier" } else { "attribute" };
            let columns = [("k", key), ("region", "attribute"), ("note", "attribute")];
            let spec = civil_spec(name, unit, &columns, crate::DpInput::default(), false);
            let info = register_csv(&catalog, root.path(), &spec, csv).expect("register");
            let unique: Vec<String> = info.columns.iter().filter(|c| c.unique).map(|c| c.name.clone()).collect();
            (info.current_version, unique)
        };
        // A key each value of which is on one row; a region that repeats; two empty notes (NULL
        // is one value, as in GROUP BY).
        let codes = "k,region,note\n1,east,a\n2,east,\n3,west,\n";
        assert_eq!(register("codes", None, codes), (1, vec!["k".to_owned()]));
        // A later version whose key repeats (and whose other columns do not): measured anew, the
        // first version's as it was.
        let second = register("codes", None, "k,region,note\n1,east,a\n1,west,b\n");
        assert_eq!(second, (2, vec!["region".to_owned(), "note".to_owned()]));
        let codes = DatasetRef {
            department: DepartmentId::new("civil").expect("id"),
            name: DatasetName::new("codes").expect("name"),
        };
        let first = catalog.dataset_version(&codes, 1).expect("first version");
        assert_eq!(first.columns.iter().filter(|c| c.unique).map(|c| c.name.as_str()).collect::<Vec<_>>(), ["k"]);
        // A float key of 0 and -0 repeats, as a join's `=` meets both (a red team, 2026-12-08:
        // measured unique, one person at 0 was 2^J rows through J such tables, counted as
        // people).
        let zeros = register("zeros", None, "k,region,note\n0.0,east,a\n-0.0,west,b\n1.5,north,c\n");
        assert_eq!(zeros, (1, vec!["region".to_owned(), "note".to_owned()]));
        // About people: never measured (a person's unique value is no code table's key).
        assert_eq!(register("people", Some("k"), "k,region,note\np1,east,a\np2,west,b\n"), (1, Vec::new()));
    }

    #[test]
    fn a_row_about_nobody_in_particular_is_refused_by_column_and_row() {
        // Rows of a dataset about people without a privacy unit were one person together, to
        // every count, cap and threshold (a red team saw them capped as one person's rows).
        let (root, catalog) = civil_catalog();
        let columns = [("id", "identifier"), ("x", "attribute")];
        let spec = civil_spec("people", Some("id"), &columns, crate::DpInput::default(), false);
        match register_csv(&catalog, root.path(), &spec, "id,x\np1,1\np2,2\n,3\np4,4\n") {
            Err(e) => {
                assert_eq!(e.code(), "privacy_unit_missing");
                assert!(e.to_string().contains("column `id`, row 3"), "{e}");
            }
            Ok(_) => panic!("a row without its person was registered"),
        }
        let people = DatasetRef {
            department: DepartmentId::new("civil").expect("id"),
            name: DatasetName::new("people").expect("name"),
        };
        assert!(matches!(catalog.dataset(&people), Err(Error::DatasetNotFound(_))), "nothing stored");
    }

    #[test]
    fn a_registration_answers_and_records_the_version_it_created() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let admin = UserId::new("admin").expect("id");
        crate::init(&data, &root.path().join("t"), &admin, &[]).expect("init");
        let catalog = std::sync::Arc::new(Catalog::open(&data).expect("open"));
        catalog.create_department(&DepartmentId::new("civil").expect("id"), "民政局").expect("department");
        let spec = DatasetSpec::validate(crate::MetadataInput {
            name: "counts".into(),
            department: "civil".into(),
            level: "L1".into(),
            description: "a table about nobody".into(),
            privacy_unit: None,
            format: None,
            sheet: None,
            encoding: None,
            delimiter: None,
            columns: std::collections::BTreeMap::from([(
                "n".to_owned(),
                crate::ColumnInput {
                    tag: "attribute".into(),
                    linkable: false,
                    bounds: None,
                    data_type: Some("int64".into()),
                    generalize: None,
                    public_values: None,
                    format: None,
                },
            )]),
            dp: crate::DpInput::default(),
            confirm_changes: Vec::new(),
            one_row_per_person: false,
        })
        .expect("spec");
        // Two stewards register the same name at once, with files of different lengths: each
        // answer and each record is about its own version.
        let threads: Vec<_> = [3usize, 5]
            .into_iter()
            .map(|rows| {
                let (catalog, spec) = (std::sync::Arc::clone(&catalog), spec.clone());
                let file = root.path().join(format!("{rows}.csv"));
                std::fs::write(&file, format!("n\n{}", "1\n".repeat(rows))).expect("csv");
                std::thread::spawn(move || {
                    (0..8)
                        .map(|_| {
                            let record = |version: u64, rows: u64| Some(format!("{version} {rows}"));
                            let (info, pending) = catalog
                                .register_dataset(&spec, &file, &UserId::new("admin").expect("id"), record, &|_| {})
                                .expect("register");
                            (rows as u64, info, pending.expect("recorded").entry)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut versions = Vec::new();
        for thread in threads {
            for (rows, info, entry) in thread.join().expect("thread") {
                assert_eq!(info.row_count, rows, "the answer is the version this registration created");
                assert_eq!(entry, format!("{} {rows}", info.current_version));
                versions.push((info.current_version, rows));
            }
        }
        versions.sort_unstable();
        assert_eq!(versions.iter().map(|(v, _)| *v).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
        assert_eq!(catalog.pending_records().expect("pending").len(), 16);
        // The read-back a registration answers with names its version, not the current one
        // (the race above is rare; this is what closes it).
        let counts = DatasetRef {
            department: DepartmentId::new("civil").expect("id"),
            name: DatasetName::new("counts").expect("name"),
        };
        let current = catalog.dataset(&counts).expect("current");
        for (version, rows) in versions {
            let then = catalog.dataset_at(&counts, Some(version)).expect("version");
            assert_eq!((then.current_version, then.row_count), (version, rows));
        }
        assert_eq!(current.current_version, 16);
    }
}
