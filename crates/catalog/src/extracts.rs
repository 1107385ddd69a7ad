//! De-identified extracts: built when an analyst asks for one, stored as an immutable Parquet
//! file beside the access request that names it, readable once a steward approves the request.
//! An extract joined from several datasets has one access request per dataset (its parts), each
//! decided by that dataset's stewards, and is readable once every one of them is approved.
//!
//! The same invariant as dataset versions: the file is complete, fsynced and renamed into
//! `extracts/` before the transaction that creates the request and names the file commits; a
//! crash in between leaves an orphan file that [`Catalog::open`] removes.

use std::fs;
use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};
use veil_common::{DatasetRef, Mode, UserId};

use crate::access::{self, AccessRequest, NewRequest, RequestState};
use crate::layout::sync_dir;
use crate::{Catalog, Error, Result, now};

/// An extract as the catalogue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractInfo {
    /// The access request it belongs to.
    pub request_id: String,
    /// The table name its analyst reads it by, `extracts.<name>`.
    pub name: String,
    /// The specification as asked for (JSON).
    pub spec: String,
    /// The version of the source dataset it was built from.
    pub source_version: i64,
    /// Its Parquet file.
    pub file: PathBuf,
    /// Rows released.
    pub rows: u64,
    /// The risk and utility report (JSON).
    pub report: String,
    /// When it was built (RFC 3339).
    pub created_at: String,
    /// The other datasets it is joined from, each with its own access request.
    pub parts: Vec<ExtractPart>,
}

impl ExtractInfo {
    /// Whether the access request of every other dataset it is joined from is approved (true
    /// for an extract of one dataset).
    pub fn parts_approved(&self) -> bool {
        self.parts.iter().all(|p| p.state == RequestState::Approved)
    }
}

/// Another dataset an extract is joined from, and the access request its stewards decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractPart {
    /// The access request for this dataset.
    pub request_id: String,
    /// The dataset.
    pub dataset: DatasetRef,
    /// Its version the extract was built from.
    pub source_version: i64,
    /// Where its request stands.
    pub state: RequestState,
}

/// An extract released: its access request's id, and the datasets it was built from, each with
/// its version, its own first.
pub type ReleasedSources = (String, Vec<(DatasetRef, i64)>);

/// A built extract, waiting in `tmp/` to be named by a new access request.
#[derive(Debug, Clone)]
pub struct NewExtract {
    /// `extracts.<name>`.
    pub name: String,
    /// The specification (JSON).
    pub spec: String,
    /// The source version it was built from.
    pub source_version: i64,
    /// The finished, synced Parquet file in `tmp/`.
    pub staged: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// Its report (JSON).
    pub report: String,
    /// The other datasets it is joined from, with the versions it was built from: each gets an
    /// access request of its own, for its stewards.
    pub parts: Vec<(DatasetRef, i64)>,
}

/// The longest extract name.
const MAX_NAME: usize = 64;

/// Checks an extract name: a SQL identifier analysts can type unquoted.
///
/// # Errors
/// [`Error::Invalid`] naming what is wrong.
pub fn check_extract_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_extract_name",
            format!("an extract name is 1 to {MAX_NAME} lowercase letters, digits or `_`, starting with a letter"),
        ))
    }
}

const EXTRACT_COLUMNS: &str = "request_id, name, spec, source_version, file, rows, report, created_at";

impl Catalog {
    /// Where extract files live.
    fn extracts_dir(&self) -> PathBuf {
        self.dir.root().join("extracts")
    }

    /// Records a new pending de-identified access request together with its built extract:
    /// the staged file is moved into `extracts/` and named in the same transaction that creates
    /// the request, with its audit record (`record`, given the request and the extract, in the
    /// catalogue's outbox). On any failure nothing is left behind.
    ///
    /// # Errors
    /// As [`Catalog::create_access_request`]; [`Error::Invalid`] for a bad name or a name the
    /// analyst already uses for a pending or granted extract.
    pub fn create_extract_request(
        &self,
        new: &NewRequest,
        extract: NewExtract,
        record: impl FnOnce(&AccessRequest, &ExtractInfo) -> Option<String>,
    ) -> Result<(AccessRequest, Option<crate::Pending>)> {
        let staged = extract.staged.clone();
        let result = self.place_extract(new, extract, record);
        let _ = fs::remove_file(&staged);
        result
    }

    fn place_extract(
        &self,
        new: &NewRequest,
        extract: NewExtract,
        record: impl FnOnce(&AccessRequest, &ExtractInfo) -> Option<String>,
    ) -> Result<(AccessRequest, Option<crate::Pending>)> {
        if new.mode != Mode::Deidentified {
            return Err(Error::invalid("extract_not_expected", "only a deidentified access request names an extract"));
        }
        check_extract_name(&extract.name)?;
        if self.extract_name_in_use(&new.user, &extract.name, new.now_unix)? {
            return Err(Error::invalid(
                "extract_name_in_use",
                format!("you already have a pending or granted extract named `{}`", extract.name),
            ));
        }
        let id = access::new_request_id();
        let dir = self.extracts_dir();
        fs::create_dir_all(&dir).map_err(Error::io("creating directory", &dir))?;
        let file_name = format!("{id}.parquet");
        let placed = dir.join(&file_name);
        let place = || -> Result<()> {
            fs::rename(&extract.staged, &placed).map_err(Error::io("moving extract file to", &placed))?;
            sync_dir(&dir)
        };
        if let Err(e) = place() {
            let _ = fs::remove_file(&placed);
            return Err(e);
        }
        let commit = || -> Result<(AccessRequest, Option<crate::Pending>)> {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let request = access::insert_request(&tx, &id, new)?;
            let created_at = now();
            tx.execute(
                &format!("INSERT INTO extracts ({EXTRACT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    id,
                    extract.name,
                    extract.spec,
                    extract.source_version,
                    format!("extracts/{file_name}"),
                    extract.rows as i64,
                    extract.report,
                    created_at
                ],
            )?;
            let mut parts = Vec::with_capacity(extract.parts.len());
            for (dataset, version) in &extract.parts {
                let part = access::new_request_id();
                access::insert_request(&tx, &part, &NewRequest { dataset: dataset.clone(), ..new.clone() })?;
                tx.execute(
                    "INSERT INTO extract_parts (request_id, extract_request_id, source_version) VALUES (?1, ?2, ?3)",
                    params![part, id, version],
                )?;
                parts.push(ExtractPart {
                    request_id: part,
                    dataset: dataset.clone(),
                    source_version: *version,
                    state: RequestState::Pending,
                });
            }
            let info = ExtractInfo {
                request_id: id.clone(),
                name: extract.name.clone(),
                spec: extract.spec.clone(),
                source_version: extract.source_version,
                file: placed.clone(),
                rows: extract.rows,
                report: extract.report.clone(),
                created_at,
                parts,
            };
            let pending = record(&request, &info).map(|e| crate::outbox::write(&tx, e)).transpose()?;
            tx.commit()?;
            Ok((request, pending))
        };
        commit().inspect_err(|_| {
            let _ = fs::remove_file(&placed);
        })
    }

    /// Replaces the extract of the pending access request `request_id` with `extract`, built
    /// again after a steward raised its k or l or lowered its suppression, with its audit
    /// record (`record`, given the request) in the same transaction. The file it replaces is
    /// removed after the commit (or, after a crash, when the catalogue next opens).
    ///
    /// # Errors
    /// [`Error::AccessRequestNotFound`]; [`Error::AccessRequestState`] when the request is no
    /// longer pending (another steward decided meanwhile); I/O and SQLite failures.
    pub fn revise_extract(
        &self,
        request_id: &str,
        extract: NewExtract,
        record: impl FnOnce(&AccessRequest) -> Option<String>,
    ) -> Result<(AccessRequest, ExtractInfo, Option<crate::Pending>)> {
        let staged = extract.staged.clone();
        let result = self.replace_extract(request_id, extract, record);
        let _ = fs::remove_file(&staged);
        result
    }

    fn replace_extract(
        &self,
        request_id: &str,
        extract: NewExtract,
        record: impl FnOnce(&AccessRequest) -> Option<String>,
    ) -> Result<(AccessRequest, ExtractInfo, Option<crate::Pending>)> {
        let before = self.extract(request_id)?.ok_or_else(|| Error::AccessRequestNotFound(request_id.to_owned()))?;
        let owner = before.request_id.clone();
        let dir = self.extracts_dir();
        // A name of its own, so the file an approval may be reading stays until the commit.
        let file_name = format!("{owner}-{}.parquet", uuid::Uuid::new_v4().simple());
        let placed = dir.join(&file_name);
        fs::rename(&extract.staged, &placed).map_err(Error::io("moving extract file to", &placed))?;
        let commit = || -> Result<(AccessRequest, Option<crate::Pending>)> {
            sync_dir(&dir)?;
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let request = access::read_request(&tx, request_id)?;
            request.require(access::RequestState::Pending, "revising")?;
            // Every dataset's stewards decide on the extract as it is: none may have approved
            // the one it replaces.
            for part in std::iter::once(owner.clone()).chain(before.parts.iter().map(|p| p.request_id.clone())) {
                access::read_request(&tx, &part)?.require(access::RequestState::Pending, "revising")?;
            }
            tx.execute(
                "UPDATE extracts SET spec = ?2, source_version = ?3, file = ?4, rows = ?5, report = ?6, created_at = ?7
                  WHERE request_id = ?1",
                params![
                    owner,
                    extract.spec,
                    extract.source_version,
                    format!("extracts/{file_name}"),
                    extract.rows as i64,
                    extract.report,
                    now()
                ],
            )?;
            for (dataset, version) in &extract.parts {
                tx.execute(
                    "UPDATE extract_parts SET source_version = ?2
                      WHERE extract_request_id = ?1 AND request_id IN
                            (SELECT id FROM access_requests WHERE dataset_department = ?3 AND dataset_name = ?4)",
                    params![owner, version, dataset.department.as_str(), dataset.name.as_str()],
                )?;
            }
            let pending = record(&request).map(|e| crate::outbox::write(&tx, e)).transpose()?;
            tx.commit()?;
            Ok((request, pending))
        };
        let (request, pending) = commit().inspect_err(|_| {
            let _ = fs::remove_file(&placed);
        })?;
        let _ = fs::remove_file(&before.file);
        let after = self.extract(request_id)?.ok_or_else(|| Error::AccessRequestNotFound(request_id.to_owned()))?;
        Ok((request, after, pending))
    }

    fn extract_name_in_use(&self, user: &UserId, name: &str, now_unix: i64) -> Result<bool> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM extracts e JOIN access_requests r ON r.id = e.request_id
              WHERE r.user_id = ?1 AND e.name = ?2 AND r.expires_at > ?3 AND r.state IN ('pending', 'approved')",
            params![user.as_str(), name, now_unix],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// The extract of an access request, if it has one.
    ///
    /// # Errors
    /// SQLite failures.
    /// For a part of an extract joined from several datasets, the extract it is part of.
    pub fn extract(&self, request_id: &str) -> Result<Option<ExtractInfo>> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!(
                    "SELECT {EXTRACT_COLUMNS} FROM extracts WHERE request_id = ?1
                        OR request_id = (SELECT extract_request_id FROM extract_parts WHERE request_id = ?1)"
                ),
                [request_id],
                |r| self.extract_from_row(r),
            )
            .optional()?;
        let Some(mut extract) = found else { return Ok(None) };
        let mut stmt = conn.prepare_cached(
            "SELECT p.request_id, r.dataset_department, r.dataset_name, p.source_version, r.state
               FROM extract_parts p JOIN access_requests r ON r.id = p.request_id
              WHERE p.extract_request_id = ?1 ORDER BY p.rowid",
        )?;
        let conv =
            |i: usize, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into());
        let parts = stmt.query_map([&extract.request_id], |r| {
            Ok(ExtractPart {
                request_id: r.get(0)?,
                dataset: DatasetRef {
                    department: veil_common::DepartmentId::new(r.get::<_, String>(1)?)
                        .map_err(|e| conv(1, e.to_string()))?,
                    name: veil_common::DatasetName::new(r.get::<_, String>(2)?).map_err(|e| conv(2, e.to_string()))?,
                },
                source_version: r.get(3)?,
                state: RequestState::parse(&r.get::<_, String>(4)?).ok_or_else(|| conv(4, "unknown state".into()))?,
            })
        })?;
        extract.parts = parts.collect::<Result<_, _>>()?;
        Ok(Some(extract))
    }

    /// The extract `name` that `user` may read now (its request, and the request of every other
    /// dataset it is joined from, approved and not expired, and none of those datasets retired:
    /// a steward who withdraws a dataset withdraws what was released of it), with its request.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn granted_extract(
        &self,
        user: &UserId,
        name: &str,
        now_unix: i64,
    ) -> Result<Option<(AccessRequest, ExtractInfo)>> {
        let id: Option<String> = {
            let conn = self.conn();
            conn.query_row(
                "SELECT r.id FROM extracts e JOIN access_requests r ON r.id = e.request_id
                  WHERE r.user_id = ?1 AND e.name = ?2 AND r.state = 'approved' AND r.expires_at > ?3
                    AND NOT EXISTS (SELECT 1 FROM datasets d WHERE d.department = r.dataset_department
                                       AND d.name = r.dataset_name AND d.retired_at IS NOT NULL)
                    AND NOT EXISTS (SELECT 1 FROM extract_parts p JOIN access_requests q ON q.id = p.request_id
                                     WHERE p.extract_request_id = r.id AND (q.state <> 'approved' OR q.expires_at <= ?3
                                       OR EXISTS (SELECT 1 FROM datasets d WHERE d.department = q.dataset_department
                                                     AND d.name = q.dataset_name AND d.retired_at IS NOT NULL)))",
                params![user.as_str(), name, now_unix],
                |r| r.get(0),
            )
            .optional()?
        };
        let Some(id) = id else { return Ok(None) };
        let request = self.access_request(&id)?;
        Ok(self.extract(&id)?.map(|e| (request, e)))
    }

    /// The source versions of `dataset` that approved (or once approved) extracts were built
    /// from.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn released_extract_versions(&self, dataset: &DatasetRef) -> Result<Vec<i64>> {
        self.released_with(dataset, "e.source_version", "p.source_version")
    }

    /// Of every approved (or once approved) extract with rows of `dataset`, distinct and in
    /// order: `own` (over `extracts e`) where the dataset is the extract's own, `part` (over
    /// `extract_parts p`) where it is one of its parts.
    fn released_with<T: rusqlite::types::FromSql>(
        &self,
        dataset: &DatasetRef,
        own: &str,
        part: &str,
    ) -> Result<Vec<T>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {own} FROM extracts e JOIN access_requests r ON r.id = e.request_id
              WHERE r.dataset_department = ?1 AND r.dataset_name = ?2 AND r.state IN ('approved', 'revoked')
             UNION
             SELECT {part} FROM extract_parts p JOIN access_requests r ON r.id = p.request_id
              WHERE r.dataset_department = ?1 AND r.dataset_name = ?2 AND r.state IN ('approved', 'revoked')
             ORDER BY 1"
        ))?;
        let rows = stmt.query_map(params![dataset.department.as_str(), dataset.name.as_str()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For every approved (or once approved) extract with rows of `dataset`, the other datasets
    /// it is joined with (none for an extract of `dataset` alone): each join releases a
    /// different set of its people.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn released_extract_joins(&self, dataset: &DatasetRef) -> Result<Vec<Vec<DatasetRef>>> {
        let released = self.released_extract_sources(dataset)?;
        Ok(released
            .into_iter()
            .map(|(_, sources)| {
                let mut others: Vec<DatasetRef> =
                    sources.into_iter().map(|(d, _)| d).filter(|d| d != dataset).collect();
                others.sort_by_key(ToString::to_string);
                others
            })
            .collect())
    }

    /// Every approved (or once approved) extract with rows of `dataset`: its access request's
    /// id and every dataset it was built from, with the version, its own first.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn released_extract_sources(&self, dataset: &DatasetRef) -> Result<Vec<ReleasedSources>> {
        let ids: Vec<String> = self.released_with(dataset, "r.id", "p.extract_request_id")?;
        self.sources_of(ids)
    }

    /// Every approved (or once approved) extract, over any dataset: as
    /// [`Catalog::released_extract_sources`].
    ///
    /// # Errors
    /// SQLite failures.
    pub fn released_extracts(&self) -> Result<Vec<ReleasedSources>> {
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT r.id FROM extracts e JOIN access_requests r ON r.id = e.request_id
                  WHERE r.state IN ('approved', 'revoked') ORDER BY r.id",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        self.sources_of(ids)
    }

    /// Each extract of `ids` with every dataset it was built from, with the version, its own
    /// first.
    fn sources_of(&self, ids: Vec<String>) -> Result<Vec<ReleasedSources>> {
        let mut released = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(extract) = self.extract(&id)? else { continue };
            let main = (self.access_request(&id)?.dataset, extract.source_version);
            let sources = std::iter::once(main).chain(extract.parts.into_iter().map(|p| (p.dataset, p.source_version)));
            released.push((id, sources.collect()));
        }
        Ok(released)
    }

    /// The other datasets, retired or not, whose people are `dataset`'s kind of people and whose
    /// values are its kind of values: each (as its latest version declares it) has a privacy unit
    /// that is a linkable identifier, as `dataset` has, and a sensitive column, as `dataset`
    /// has (named alike or not). Two snapshots of one registry registered as two datasets are such; their
    /// extracts are compared person by person as versions of one dataset are, their units
    /// matched as text whatever type each declares (a red team's copy declared `int64` where
    /// the original's unit was text, and was not compared while types had to agree).
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`], or a SQLite failure.
    pub fn related_datasets(&self, dataset: &DatasetRef) -> Result<Vec<DatasetRef>> {
        let info = self.dataset(dataset)?;
        let linkable_unit = |i: &crate::DatasetInfo| -> bool {
            i.privacy_unit.as_ref().is_some_and(|unit| i.columns.iter().any(|c| c.name == *unit && c.linkable))
        };
        if !linkable_unit(&info) {
            return Ok(Vec::new());
        }
        // Any sensitive column, whatever its name: a copy may name one column otherwise (a red
        // team's `diag` for `diagnosis`); which columns hold each other's values is found
        // over the people in both when they are compared.
        let sensitive = |i: &crate::DatasetInfo| i.columns.iter().any(|c| c.tag == veil_common::Tag::Sensitive);
        if !sensitive(&info) {
            return Ok(Vec::new());
        }
        Ok(self
            .datasets(true)?
            .into_iter()
            .filter(|other| other.dataset != *dataset && linkable_unit(other) && sensitive(other))
            .map(|other| other.dataset)
            .collect())
    }

    fn extract_from_row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<ExtractInfo> {
        Ok(ExtractInfo {
            request_id: r.get(0)?,
            name: r.get(1)?,
            spec: r.get(2)?,
            source_version: r.get(3)?,
            file: self.dir.root().join(r.get::<_, String>(4)?),
            rows: r.get::<_, i64>(5)? as u64,
            report: r.get(6)?,
            created_at: r.get(7)?,
            parts: Vec::new(),
        })
    }

    /// Removes extract files no committed request names.
    pub(crate) fn sweep_extracts(&self) -> Result<()> {
        let dir = self.extracts_dir();
        if !dir.is_dir() {
            return Ok(());
        }
        let known = self.named_files("SELECT file FROM extracts")?;
        self.remove_unnamed(&dir, &known, "extract file that no request names")?;
        Ok(())
    }
}
