//! De-identified mode: an analyst asks for an extract (a specification over one dataset, or over
//! several joined on their privacy units), Veil builds it at once so the stewards decide on the
//! extract itself and its risk report, and once approved (by the stewards of every dataset in
//! it) the analyst queries it, and only it, as `extracts.<name>`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use veil_audit::{DatasetUse, Entry};
use veil_catalog::{AccessRequest, DatasetInfo, ExtractInfo, NewExtract, NewRequest};
use veil_common::{DatasetRef, DepartmentId, EXTRACT_SCHEMA, ErrorKind, Mode, Tag};
use veil_extract::{ColumnSpec, Role, Spec, Step};
use veil_policy::ceiling::{Ceiling, across_departments};
use veil_query::ParsedQuery;

use crate::query::Done;
use crate::{Broker, Caller, Error, Rule, now_unix};

/// The share of records an extract may suppress unless its request says otherwise.
pub const DEFAULT_MAX_SUPPRESSION: f64 = 0.05;
/// Distinct values of each sensitive column per class unless the request asks for more.
pub const DEFAULT_L: u64 = 2;
/// The share of records the base release of a dataset may suppress (an extract may suppress
/// its own share on top).
pub const BASE_MAX_SUPPRESSION: f64 = 0.1;
/// The largest `k` a request may ask for: a larger one would only tell, by its refusal, how
/// many people a small dataset holds.
pub const MAX_K: u64 = 100;
/// The largest `l` a request may ask for.
pub const MAX_L: u64 = 10;

/// Where the work on an asked-for extract is ([`Broker::request_extract_followed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractStage {
    /// Comparing it with the extracts already released (before the build, and its rows after).
    Comparing,
    /// Reading its datasets and building it.
    Building,
}

/// What an analyst asks for.
#[derive(Debug, Clone)]
pub struct ExtractRequest {
    /// The source dataset.
    pub dataset: DatasetRef,
    /// Other datasets joined to it on their privacy units (linkable identifiers of one type);
    /// each gets an access request of its own, for its department's stewards.
    pub join: Vec<DatasetRef>,
    /// Why, for the steward (PIPL purpose limitation).
    pub purpose: String,
    /// Unix seconds after which the grant stops working.
    pub expires_at: i64,
    /// The table name the analyst will query, `extracts.<name>`.
    pub name: String,
    /// The columns to release, in order; with several datasets, a column two of them have is
    /// named `<department>.<dataset>.<column>`, and is released as `<column>`.
    pub columns: Vec<String>,
    /// Per quasi-identifier: the steps of its hierarchy, finest first (`month`, `band:10`, …).
    pub hierarchies: Vec<(String, Vec<String>)>,
    /// A `k` above the level's.
    pub k: Option<u64>,
    /// An `l` above the default.
    pub l: Option<u64>,
    /// The largest share of records that may be suppressed.
    pub max_suppression: Option<f64>,
}

/// What a steward changes in a pending extract before deciding on it: each only stricter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractRevision {
    /// A higher `k`.
    pub k: Option<u64>,
    /// A higher `l`.
    pub l: Option<u64>,
    /// A lower largest share of suppressed records.
    pub max_suppression: Option<f64>,
}

impl ExtractRevision {
    /// Checks that the revision asks for something, and only for more than the extract's
    /// `(k, l, max_suppression)` already meet.
    fn check(&self, (k, l, max_suppression): (u64, u64, f64)) -> Result<(), Error> {
        let not_stricter = |message: String| Error::new(ErrorKind::Unprocessable, "revision_not_stricter", message);
        if self.k.is_none() && self.l.is_none() && self.max_suppression.is_none() {
            return Err(not_stricter("a revision raises `k` or `l` or lowers `max_suppression`".into()));
        }
        if let Some(new) = self.k
            && new < k
        {
            return Err(not_stricter(format!("k may only be raised: the extract meets k = {k}")));
        }
        if let Some(new) = self.l
            && new < l
        {
            return Err(not_stricter(format!("l may only be raised: the extract meets l = {l}")));
        }
        if let Some(new) = self.max_suppression
            && !(0.0..=max_suppression).contains(&new)
        {
            return Err(not_stricter(format!(
                "max_suppression may only be lowered, to between 0 and the extract's {max_suppression}"
            )));
        }
        Ok(())
    }
}

impl Broker {
    /// Builds the extract `request` describes and records it with a pending access request for
    /// the dataset's stewards to decide on, with its audit record (`record`, given the request
    /// and the extract) in the same transaction.
    ///
    /// # Errors
    /// A dataset the caller may never see in this mode; a specification that does not fit the
    /// dataset; no generalization meeting `k` and `l` (naming the blocking column).
    pub async fn request_extract(
        &self,
        caller: &Caller,
        department: DepartmentId,
        request: ExtractRequest,
        record: impl FnOnce(&AccessRequest, &ExtractInfo) -> Option<String> + Send + 'static,
    ) -> Result<(AccessRequest, ExtractInfo, Option<veil_catalog::Pending>), Error> {
        self.request_extract_followed(caller, department, request, record, &|_| {}).await
    }

    /// [`Broker::request_extract`], telling `stage` where the work is as it goes. The stages
    /// only: how many rows or generalizations a build has gone through depends on the data.
    ///
    /// # Errors
    /// As [`Broker::request_extract`].
    pub async fn request_extract_followed(
        &self,
        caller: &Caller,
        department: DepartmentId,
        request: ExtractRequest,
        record: impl FnOnce(&AccessRequest, &ExtractInfo) -> Option<String> + Send + 'static,
        stage: &(dyn Fn(ExtractStage) + Send + Sync),
    ) -> Result<(AccessRequest, ExtractInfo, Option<veil_catalog::Pending>), Error> {
        veil_catalog::check_extract_name(&request.name)?;
        let asked = NewRequest {
            user: caller.principal.user.clone(),
            department: department.clone(),
            dataset: request.dataset.clone(),
            mode: Mode::Deidentified,
            purpose: request.purpose.clone(),
            expires_at: request.expires_at,
            now_unix: now_unix(),
        };
        asked.check()?; // before the build, which is the costly part
        let sources = self.extract_sources(&request).await?;
        for (info, _) in &sources {
            if info.dataset.department != department
                && let Ceiling::Never(why) = across_departments(info.level, Mode::Deidentified)
            {
                return Err(Error::new(ErrorKind::Forbidden, "mode_not_allowed", why));
            }
        }
        let new = self.build_extract(sources, &request, stage).await?;
        self.blocking(move |c| {
            let (r, pending) = c.create_extract_request(&asked, new, record)?;
            let e = c.extract(&r.id)?.ok_or_else(|| veil_catalog::Error::AccessRequestNotFound(r.id.clone()))?;
            Ok((r, e, pending))
        })
        .await
    }

    /// The datasets `request` names, each with the file of its current version.
    async fn extract_sources(&self, request: &ExtractRequest) -> Result<Vec<(DatasetInfo, std::path::PathBuf)>, Error> {
        let mut datasets = vec![request.dataset.clone()];
        for d in &request.join {
            if datasets.contains(d) {
                return Err(Error::invalid("invalid_extract", format!("{d} is named twice in the extract")));
            }
            datasets.push(d.clone());
        }
        self.blocking(move |c| datasets.iter().map(|d| Ok((c.dataset(d)?, c.current_file(d)?))).collect()).await
    }

    /// Builds the extract `request` describes from the current versions of its datasets
    /// (`sources`, each with its file), staged in `tmp/` for the catalogue to name.
    async fn build_extract(
        &self,
        sources: Vec<(DatasetInfo, std::path::PathBuf)>,
        request: &ExtractRequest,
        stage: &(dyn Fn(ExtractStage) + Send + Sync),
    ) -> Result<NewExtract, Error> {
        let infos: Vec<&DatasetInfo> = sources.iter().map(|(i, _)| i).collect();
        let (spec, taken) = self.extract_spec(&infos, request)?;
        let (k, l) = (spec.k, spec.l);
        let current: Vec<(DatasetRef, i64)> = infos.iter().map(|i| (i.dataset.clone(), i.current_version)).collect();
        stage(ExtractStage::Comparing);
        // A join refused here is still built (and the file dropped): its answer comes no sooner
        // than a join's that passes, so the time taken does not say which it was ([`held`]).
        let early = match self.check_against_released(current.clone(), request.columns.clone(), spec.k, None).await {
            Ok(()) => None,
            Err(refusal) if holdable(&current, &refusal) => Some(refusal),
            Err(refusal) => return Err(refusal),
        };
        stage(ExtractStage::Building);
        // Each dataset's base release, the columns to read from it, and its own columns of the
        // extract.
        let mut inputs = Vec::with_capacity(sources.len());
        for ((info, path), own) in sources.iter().zip(taken) {
            let base = base_spec(info, spec.k, base_key(&self.catalog, &info.dataset));
            let mut read: Vec<String> = Vec::new();
            for name in own.iter().chain(base.columns.iter().map(|c| &c.name)).chain(info.privacy_unit.iter()) {
                if !read.contains(name) {
                    read.push(name.clone());
                }
            }
            inputs.push((info.dataset.to_string(), path.clone(), read, base, own));
        }
        let staged = self.catalog.dir().tmp_file("parquet");
        let target = staged.clone();
        let dataset = infos.iter().map(|i| i.dataset.to_string()).collect::<Vec<_>>().join(" + ");
        // The build holds its datasets in memory: room for it in the memory queries share,
        // estimated from the files' footers, before anything is read.
        let files: Vec<(std::path::PathBuf, Vec<String>)> =
            inputs.iter().map(|(_, path, read, _, _)| (path.clone(), read.clone())).collect();
        let _room = self.reserve_build(files, "the extract cannot be built").await?;
        let built = tokio::task::spawn_blocking(move || -> Result<veil_extract::Report, veil_extract::Error> {
            let mut read = Vec::with_capacity(inputs.len());
            for (name, path, columns, base, own) in inputs {
                read.push((name, veil_extract::read_parquet(&path, &columns)?, base, own));
            }
            let started = std::time::Instant::now();
            let mut progress = |p: veil_extract::Progress| {
                tracing::debug!(dataset = %dataset, stage = p.stage, done = p.done, total = p.total, "building extract");
            };
            let extract = match read.as_slice() {
                [(_, input, base, _)] => veil_extract::build_within(input, base, &spec, &mut progress)?,
                _ => {
                    let sources = read
                        .iter()
                        .map(|(name, input, base, own)| veil_extract::Source {
                            name: name.clone(),
                            input,
                            base: base.clone(),
                            columns: own.clone(),
                        })
                        .collect::<Vec<_>>();
                    veil_extract::build_joined(&sources, &spec, &mut progress)?
                }
            };
            tracing::info!(
                dataset = %dataset,
                rows = extract.report.records,
                suppressed = extract.report.suppressed_records,
                duration_ms = started.elapsed().as_millis() as u64,
                "extract built"
            );
            veil_extract::write_parquet(&extract.batch, &target)?;
            Ok(extract.report)
        })
        .await
        .map_err(|e| Error::internal(format!("extract task failed: {e}")))?;
        let mut report = match built {
            Ok(r) => r,
            // Whether a join can meet k and l depends on who is in both datasets: refused at
            // once, it told the analyst, before any steward looked, whether a partner dataset
            // made to hold a target and a few known people meets another department's in k
            // people or fewer. It goes to the stewards instead, who can only reject it.
            Err(ref e @ veil_extract::Error::Infeasible { ref column, .. }) if sources.len() > 1 => {
                let _ = std::fs::remove_file(&staged);
                let why = Why { code: "extract_infeasible", why: e.to_string(), column: column.clone() };
                return unbuildable(request, &current, (k, l), why, staged);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(extract_error(e));
            }
        };
        let roles = report.columns.iter().map(|c| (c.name.clone(), c.role.to_owned())).collect();
        stage(ExtractStage::Comparing);
        let refusal =
            match (early, self.differing_release(staged.clone(), roles, current.clone(), report.k, None).await) {
                (Some(refusal), _) | (None, Ok(Some(refusal)) | Err(refusal)) => Some(refusal),
                (None, Ok(None)) => None,
            };
        if let Some(refusal) = refusal {
            let _ = std::fs::remove_file(&staged);
            return held(request, &current, (k, l), refusal, staged);
        }
        let versions = current;
        let released = self.blocking({
            let versions = versions.clone();
            move |c| {
                versions
                    .iter()
                    .map(|(d, _)| Ok((c.released_extract_versions(d)?, c.released_extract_joins(d)?)))
                    .collect::<Result<Vec<_>, veil_catalog::Error>>()
            }
        });
        let released = match released.await {
            Ok(released) => released,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        };
        for ((dataset, current), (released, joins)) in versions.iter().zip(released) {
            // The datasets this extract joins `dataset` with, as the catalogue lists them.
            let mut partners: Vec<DatasetRef> =
                versions.iter().map(|(d, _)| d.clone()).filter(|d| d != dataset).collect();
            partners.sort_by_key(ToString::to_string);
            let mut other_joins: Vec<String> = joins
                .into_iter()
                .filter(|j| *j != partners)
                .map(|j| match j.as_slice() {
                    [] => "alone".to_owned(),
                    _ => format!("joined with {}", j.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")),
                })
                .collect();
            other_joins.sort();
            other_joins.dedup();
            if !other_joins.is_empty() {
                report.warnings.push(format!(
                    "rows of {dataset} were already released in extracts of other people ({}): a join keeps only the people found in every dataset, so anyone holding two extracts of different joins can compare them and see who is in one but not the other, with their values; a dataset made to differ from another by one person gives that person's row",
                    other_joins.join("; ")
                ));
            }
            let earlier: Vec<String> = released.into_iter().filter(|v| v != current).map(|v| v.to_string()).collect();
            if !earlier.is_empty() {
                report.warnings.push(format!(
                    "extracts of version(s) {} of {dataset} were already released: anyone holding an extract of each version can compare them and see who was added, removed or changed",
                    earlier.join(", "),
                ));
            }
        }
        let rows = report.records;
        let report = match serde_json::to_string(&report) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(Error::internal(e));
            }
        };
        Ok(new_extract(request, &versions, staged, rows, report))
    }

    /// Builds the extract of the pending access request `request_id` again, stricter as a
    /// steward of its dataset asks (a higher `k` or `l`, a lower share of suppressed records),
    /// from the dataset's current version, and puts it in place of the one the steward saw, with
    /// `record` (the audit record, given the request) in the same transaction. The request stays
    /// pending: the steward reads the new report, then approves or rejects.
    ///
    /// # Errors
    /// A request without an extract or no longer pending; a revision that asks for nothing or
    /// for less than the extract already meets (`revision_not_stricter`); no generalization
    /// meeting the new `k` and `l`.
    pub async fn revise_extract(
        &self,
        request_id: &str,
        revision: ExtractRevision,
        record: impl FnOnce(&AccessRequest) -> Option<String> + Send + 'static,
    ) -> Result<(AccessRequest, ExtractInfo, Option<veil_catalog::Pending>), Error> {
        let id = request_id.to_owned();
        let (asked, extract) = self
            .blocking(move |c| {
                let asked = c.access_request(&id)?;
                Ok((asked, c.extract(&id)?))
            })
            .await?;
        let Some(extract) = extract else {
            return Err(Error::new(
                ErrorKind::Unprocessable,
                "no_extract",
                format!(
                    "access request {request_id} names no extract: only a deidentified request's extract is revised"
                ),
            ));
        };
        // Before the build, which is the costly part; the catalogue checks again as it commits.
        asked.require(veil_catalog::RequestState::Pending, "revising")?;
        let mut request = request_from_spec(&extract.spec, &asked)?;
        let sources = self.extract_sources(&request).await?;
        let mut levels_k = 0;
        for (info, _) in &sources {
            levels_k = levels_k.max(level_k(info)?);
        }
        let now = (
            request.k.unwrap_or(levels_k),
            request.l.unwrap_or(DEFAULT_L),
            request.max_suppression.unwrap_or(DEFAULT_MAX_SUPPRESSION),
        );
        revision.check(now)?;
        request.k = revision.k.or(request.k);
        request.l = revision.l.or(request.l);
        request.max_suppression = revision.max_suppression.or(request.max_suppression);
        let new = self.build_extract(sources, &request, &|_| {}).await?;
        let id = request_id.to_owned();
        self.blocking(move |c| c.revise_extract(&id, new, record)).await
    }

    /// The builder's spec: roles from the datasets' column tags, `k` from the highest of their
    /// levels; with it, the extract's columns each dataset gives (its unit aside).
    fn extract_spec(
        &self,
        infos: &[&DatasetInfo],
        request: &ExtractRequest,
    ) -> Result<(Spec, Vec<Vec<String>>), Error> {
        let invalid = |code, message: String| Error::new(ErrorKind::Unprocessable, code, message);
        if request.columns.is_empty() {
            return Err(invalid("extract_columns_required", "an extract names at least one column".into()));
        }
        let first = infos.first().ok_or_else(|| Error::internal("an extract without a dataset"))?;
        if infos.len() > 1 {
            check_links(infos)?;
        }
        let mut hierarchies: HashMap<&str, &Vec<String>> = HashMap::new();
        for (column, steps) in &request.hierarchies {
            hierarchies.insert(column.as_str(), steps);
        }
        let mut columns: Vec<ColumnSpec> = Vec::with_capacity(request.columns.len());
        let mut own = vec![Vec::new(); infos.len()];
        for asked in &request.columns {
            let (i, name) = resolve_column(infos, asked)?;
            let info = infos[i];
            let column =
                info.columns.iter().find(|c| c.name == name).ok_or_else(|| {
                    invalid("unknown_column", format!("`{name}` is not a column of {}", info.dataset))
                })?;
            let is_unit = info.privacy_unit.as_deref() == Some(name);
            let role = match column.tag {
                Tag::Identifier if is_unit => Role::Pseudonym,
                Tag::Identifier => {
                    return Err(invalid(
                        "identifier_in_extract",
                        format!(
                            "`{name}` is a direct identifier: only the privacy unit may be in an extract, as a pseudonym"
                        ),
                    ));
                }
                Tag::QuasiIdentifier => {
                    let ladder = hierarchies
                        .remove(name)
                        .map(|steps| {
                            steps
                                .iter()
                                .map(|s| s.parse::<Step>())
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|e| invalid("invalid_hierarchy", format!("hierarchy of `{name}`: {e}")))
                        })
                        .transpose()?;
                    Role::QuasiIdentifier { ladder, floor: column.generalize.map(Step::from) }
                }
                Tag::Sensitive => Role::Sensitive { bounds: column.bounds },
                Tag::Attribute => Role::Attribute,
            };
            // The joined unit keeps the first dataset's name.
            let out = match (&first.privacy_unit, is_unit) {
                (Some(unit), true) => unit.clone(),
                _ => name.to_owned(),
            };
            if columns.iter().any(|c| c.name == out) {
                return Err(invalid(
                    "invalid_extract",
                    format!("`{out}` is asked for twice: an extract's columns have distinct names"),
                ));
            }
            if !is_unit {
                own[i].push(out.clone());
            }
            columns.push(ColumnSpec { name: out, role });
        }
        if let Some(column) = hierarchies.keys().next() {
            return Err(invalid(
                "invalid_hierarchy",
                format!("a hierarchy is given for `{column}`, which is not a quasi-identifier column of the extract"),
            ));
        }
        let mut level_k_max = 0;
        let mut strictest = first;
        for info in infos {
            let k = level_k(info)?;
            if k > level_k_max {
                (level_k_max, strictest) = (k, info);
            }
        }
        let k = match request.k {
            Some(k) if k > MAX_K => {
                return Err(invalid("k_too_large", format!("k may be at most {MAX_K}")));
            }
            Some(k) if k < level_k_max => {
                return Err(invalid(
                    "k_too_small",
                    format!(
                        "k may only be raised: {} at level {} asks for at least {level_k_max}",
                        strictest.dataset, strictest.level
                    ),
                ));
            }
            Some(k) => k,
            None => level_k_max,
        };
        let l = match request.l {
            Some(l) if l > MAX_L => {
                return Err(invalid("l_too_large", format!("l may be at most {MAX_L}")));
            }
            Some(l) if l < DEFAULT_L => {
                return Err(invalid("l_too_small", format!("l may only be raised above {DEFAULT_L}")));
            }
            Some(l) => l,
            None => DEFAULT_L,
        };
        let mut key = [0u8; 32];
        SystemRandom::new().fill(&mut key).map_err(|_| Error::internal("no randomness for an extract key"))?;
        let spec = Spec {
            columns,
            unit: first.privacy_unit.clone(),
            k,
            l,
            max_suppression: request.max_suppression.unwrap_or(DEFAULT_MAX_SUPPRESSION),
            max_rows_per_person: None,
            key,
        };
        Ok((spec, own))
    }

    /// A de-identified query: it reads the caller's approved extracts, and nothing else, with
    /// any read-only SQL; every row of an extract may be released to its analyst.
    pub(crate) async fn extract_query(
        &self,
        caller: &Caller,
        parsed: &ParsedQuery,
        dry_run: bool,
        entry: &mut Entry,
    ) -> Result<Done, Error> {
        let mut names = Vec::with_capacity(parsed.tables().len());
        for (schema, name) in parsed.tables() {
            if schema != EXTRACT_SCHEMA {
                return Err(Error::invalid(
                    "deidentified_reads_extracts",
                    format!(
                        "in deidentified mode a query reads your approved extracts, as {EXTRACT_SCHEMA}.<name>; `{schema}.{name}` is not one (ask for an extract of it with a de-identified access request)"
                    ),
                ));
            }
            names.push(name.clone());
        }
        let user = caller.principal.user.clone();
        let now = now_unix();
        let found = self
            .blocking(move |c| {
                let mut found = Vec::with_capacity(names.len());
                for name in names {
                    let granted = c.granted_extract(&user, &name, now)?;
                    // Every dataset it is built from, with its level.
                    let sources = match &granted {
                        Some((r, e)) => std::iter::once(&r.dataset)
                            .chain(e.parts.iter().map(|p| &p.dataset))
                            .map(|d| Ok((d.clone(), c.dataset(d)?.level)))
                            .collect::<Result<Vec<_>, veil_catalog::Error>>()?,
                        None => Vec::new(),
                    };
                    found.push((name, granted.map(|g| (g, sources))));
                }
                Ok(found)
            })
            .await?;
        let mut files = Vec::new();
        let mut rules = Vec::new();
        let mut level = veil_common::Level::L1;
        let mut k = 0;
        for (name, granted) in found {
            let Some(((request, extract), sources)) = granted else {
                return Err(veil_query::Error::UnknownDataset(format!("{EXTRACT_SCHEMA}.{name}")).into());
            };
            for (dataset, source_level) in &sources {
                entry.datasets.push(DatasetUse { dataset: dataset.to_string(), level: Some(source_level.to_string()) });
                level = level.max(*source_level);
            }
            k = k.max(report_k(&extract.report));
            let joined: String = extract
                .parts
                .iter()
                .map(|p| {
                    format!(
                        " joined with {} (version {}, access request {})",
                        p.dataset, p.source_version, p.request_id
                    )
                })
                .collect();
            rules.push(Rule {
                code: "approved_extract".into(),
                detail: format!(
                    "{EXTRACT_SCHEMA}.{}: extract of {} (version {}){joined} approved in access request {} for \"{}\"",
                    extract.name, request.dataset, extract.source_version, request.id, request.purpose
                ),
            });
            files.push((EXTRACT_SCHEMA.to_owned(), extract.name, extract.file, extract.rows));
        }
        entry.detail = Some(rules.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>().join("; "));
        let answer = self.engine.run_over_files(parsed, files, dry_run).await?;
        if answer.row_count() >= self.limits().max_result_rows {
            rules.push(Rule {
                code: "rows_capped".into(),
                detail: format!(
                    "the first {} rows; page through the rest with LIMIT and OFFSET",
                    self.limits().max_result_rows
                ),
            });
        }
        Ok(Done { answer, level: level.as_str().to_owned(), k, policy: rules, budget: None })
    }
}

/// The `k` of extracts of `info`: the level's, and at least [`veil_extract::MIN_K`].
fn level_k(info: &DatasetInfo) -> Result<u64, Error> {
    info.level
        .min_group_size()
        .map(|k| k.max(veil_extract::MIN_K))
        .ok_or_else(|| Error::new(ErrorKind::Forbidden, "mode_not_allowed", "core data never leaves its department"))
}

/// Checks that datasets can be joined in an extract: each has a privacy unit that is a
/// linkable identifier, all of one type (an integer unit is not joined with a text one; units
/// of one type are matched as [`veil_extract::unit_key`] reads them).
fn check_links(infos: &[&DatasetInfo]) -> Result<(), Error> {
    let mut first_type: Option<(&DatasetInfo, &str)> = None;
    for info in infos {
        let unit = info.privacy_unit.as_deref().and_then(|u| info.columns.iter().find(|c| c.name == u));
        let Some(unit) = unit.filter(|u| u.tag == Tag::Identifier && u.linkable) else {
            return Err(Error::new(
                ErrorKind::Unprocessable,
                "not_linkable",
                format!(
                    "{} has no privacy unit that is a linkable identifier: it cannot be joined in an extract",
                    info.dataset
                ),
            ));
        };
        match first_type {
            None => first_type = Some((info, unit.data_type.as_str())),
            Some((other, t)) if t != unit.data_type => {
                return Err(Error::new(
                    ErrorKind::Unprocessable,
                    "not_linkable",
                    format!(
                        "the privacy units of {} ({t}) and {} ({}) differ in type: they are not joined",
                        other.dataset, info.dataset, unit.data_type
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Which dataset a requested column comes from, and its name there: `<department>.<dataset>.
/// <column>`, or a bare name only one dataset has (or the privacy unit, which every dataset of
/// a join has).
fn resolve_column<'a>(infos: &[&DatasetInfo], asked: &'a str) -> Result<(usize, &'a str), Error> {
    if infos.len() == 1 {
        return Ok((0, asked));
    }
    for (i, info) in infos.iter().enumerate() {
        if let Some(name) = asked.strip_prefix(&format!("{}.", info.dataset)) {
            return Ok((i, name));
        }
    }
    let having: Vec<usize> = (0..infos.len()).filter(|i| infos[*i].columns.iter().any(|c| c.name == asked)).collect();
    let is_unit = |i: &usize| infos[*i].privacy_unit.as_deref() == Some(asked);
    match having.as_slice() {
        [] => Err(Error::new(
            ErrorKind::Unprocessable,
            "unknown_column",
            format!(
                "`{asked}` is not a column of {}",
                infos.iter().map(|i| i.dataset.to_string()).collect::<Vec<_>>().join(" or ")
            ),
        )),
        [one] => Ok((*one, asked)),
        several if several.iter().all(is_unit) => Ok((several[0], asked)),
        several => Err(Error::new(
            ErrorKind::Unprocessable,
            "ambiguous_column",
            format!(
                "`{asked}` is a column of {}: name it as `<department>.<dataset>.{asked}`",
                several.iter().map(|i| infos[*i].dataset.to_string()).collect::<Vec<_>>().join(" and ")
            ),
        )),
    }
}

/// The dataset's base release: its privacy unit (as if kept), every quasi-identifier from its
/// declared generalization and every sensitive column, at the level's `k`, the default `l` and
/// [`BASE_MAX_SUPPRESSION`], each person's rows capped at the dataset's dp contribution bound.
/// Every extract of a dataset version is built as a projection of it; `key` (fixed per
/// dataset) picks the rows a cap leaves out, by their values, so every extract sees the same
/// base and every version keeps the same rows of a person whose rows did not change.
fn base_spec(info: &DatasetInfo, fallback_k: u64, key: [u8; 32]) -> Spec {
    let mut columns = Vec::new();
    if let Some(unit) = &info.privacy_unit {
        columns.push(ColumnSpec { name: unit.clone(), role: Role::Pseudonym });
    }
    for c in &info.columns {
        let role = match c.tag {
            Tag::QuasiIdentifier => Role::QuasiIdentifier { ladder: None, floor: c.generalize.map(Step::from) },
            Tag::Sensitive => Role::Sensitive { bounds: c.bounds },
            Tag::Identifier | Tag::Attribute => continue,
        };
        columns.push(ColumnSpec { name: c.name.clone(), role });
    }
    Spec {
        columns,
        unit: info.privacy_unit.clone(),
        k: level_k(info).unwrap_or(fallback_k),
        l: DEFAULT_L,
        max_suppression: BASE_MAX_SUPPRESSION,
        // Where people have several rows, as many as the steward's dp contribution bound allows.
        max_rows_per_person: (!info.one_row_per_unit).then(|| info.dp.max_groups.saturating_mul(info.dp.max_rows)),
        key,
    }
}

/// The key of a dataset's base releases ([`base_spec`]): secret, and the same for every version,
/// so that where a person's rows are capped, the same rows are kept in every version that has
/// them (a key per version kept another of a person's two records in a version with the same
/// rows, and two versions' extracts showed both).
fn base_key(catalog: &veil_catalog::Catalog, dataset: &DatasetRef) -> [u8; 32] {
    catalog.pseudonym_key(&format!("\0extract base\n{dataset}"))
}

/// Of an extract's `columns` (as its spec names them), those of `dataset`: `<dataset>.<column>`
/// or a bare name (a bare name another dataset has is no column of this one).
fn own_columns(dataset: &DatasetRef, columns: &[String]) -> Vec<String> {
    let prefix = format!("{dataset}.");
    columns
        .iter()
        .filter_map(|c| match c.strip_prefix(&prefix) {
            Some(own) => Some(own.to_owned()),
            None if c.contains('.') => None,
            None => Some(c.clone()),
        })
        .collect()
}

/// Each column of an extract and its role, as its stored report (JSON) gives them.
fn report_roles(report: &str) -> Vec<(String, String)> {
    let report: serde_json::Value = serde_json::from_str(report).unwrap_or_default();
    report["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["name"].as_str()?.to_owned(), c["role"].as_str()?.to_owned())))
        .collect()
}

/// The `k` an extract's stored report says it meets.
fn report_k(report: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(report).ok().and_then(|r| r.get("k")?.as_u64()).unwrap_or(0)
}

/// The request recorded with an extract (`spec_json`), for building it again.
fn request_from_spec(spec: &str, asked: &AccessRequest) -> Result<ExtractRequest, Error> {
    use serde_json::Value;
    let bad = || Error::internal(format!("the stored spec of extract request {} does not parse", asked.id));
    let spec: Value = serde_json::from_str(spec).map_err(|_| bad())?;
    let texts =
        |v: &Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|s| s.as_str().map(String::from)).collect() };
    let hierarchies = match spec.get("hierarchies") {
        Some(Value::Object(m)) => {
            m.iter().map(|(c, steps)| Some((c.clone(), texts(steps)?))).collect::<Option<Vec<_>>>()
        }
        _ => Some(Vec::new()),
    };
    let dataset = |v: &Value| v.as_str().and_then(|d| d.parse::<DatasetRef>().ok());
    let join = match spec.get("join") {
        Some(v) => v.as_array().ok_or_else(bad)?.iter().map(dataset).collect::<Option<Vec<_>>>().ok_or_else(bad)?,
        None => Vec::new(),
    };
    Ok(ExtractRequest {
        dataset: spec.get("dataset").and_then(dataset).ok_or_else(bad)?,
        join,
        purpose: asked.purpose.clone(),
        expires_at: asked.expires_at,
        name: spec.get("name").and_then(Value::as_str).ok_or_else(bad)?.to_string(),
        columns: spec.get("columns").and_then(texts).ok_or_else(bad)?,
        hierarchies: hierarchies.ok_or_else(bad)?,
        k: spec.get("k").and_then(Value::as_u64),
        l: spec.get("l").and_then(Value::as_u64),
        max_suppression: spec.get("max_suppression").and_then(Value::as_f64),
    })
}

/// The request as recorded with the extract.
/// The columns an extract's specification ([`spec_json`]) asks for, as it names them.
fn spec_columns(spec: &str) -> Vec<String> {
    let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
    spec["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect()
}

fn spec_json(request: &ExtractRequest) -> String {
    let hierarchies: serde_json::Map<String, serde_json::Value> =
        request.hierarchies.iter().map(|(c, steps)| (c.clone(), serde_json::json!(steps))).collect();
    let mut spec = serde_json::json!({
        "dataset": request.dataset.to_string(),
        "name": request.name,
        "columns": request.columns,
        "hierarchies": hierarchies,
        "k": request.k,
        "l": request.l,
        "max_suppression": request.max_suppression,
    });
    if !request.join.is_empty() {
        spec["join"] = serde_json::json!(request.join.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    spec.to_string()
}

/// The builder's refusals as the broker's.
impl Broker {
    /// Approves access request `request_id`: checks its extract, if it has one, against the
    /// extracts already released ([`Broker::check_release`]), then runs `commit` (the approval,
    /// given the catalogue), with no other approval checked or committed in between. Two
    /// approvals checked at once each passed without the other and were both released (a red
    /// team, two tries in four).
    ///
    /// # Errors
    /// As [`Broker::check_release`]; `commit`'s.
    pub async fn release<T, F>(&self, request_id: &str, commit: F) -> Result<T, Error>
    where
        F: FnOnce(&veil_catalog::Catalog) -> Result<T, veil_catalog::Error> + Send + 'static,
        T: Send + 'static,
    {
        let _one_at_a_time = self.releases.lock().await;
        self.check_release(request_id).await?;
        self.blocking(commit).await
    }

    /// Checks, before a steward approves access request `request_id`, its extract (if it has
    /// one) against every extract already released over any of its datasets, as when it was
    /// asked for ([`Broker::check_against_released`]): a request asked for before another was
    /// approved is checked again here.
    ///
    /// # Errors
    /// `extract_isolates_people` or `extract_narrows_values` (422), naming the dataset.
    async fn check_release(&self, request_id: &str) -> Result<(), Error> {
        let lookup = request_id.to_owned();
        let found = self
            .blocking(move |c| {
                let Some(extract) = c.extract(&lookup)? else { return Ok(None) };
                let main = (c.access_request(&extract.request_id)?.dataset, extract.source_version);
                let sources: Vec<(DatasetRef, i64)> = std::iter::once(main)
                    .chain(extract.parts.iter().map(|p| (p.dataset.clone(), p.source_version)))
                    .collect();
                Ok(Some((extract.request_id, sources, extract.report, extract.spec, extract.file)))
            })
            .await?;
        let Some((extract_id, sources, report, spec, file)) = found else { return Ok(()) };
        let report_json = serde_json::from_str::<serde_json::Value>(&report).map_err(Error::internal)?;
        if let Some(why) = report_json.get(UNBUILDABLE).and_then(serde_json::Value::as_str) {
            return Err(Error::new(
                ErrorKind::Unprocessable,
                "extract_unbuildable",
                format!("this extract of a join cannot be built ({why}); reject the request"),
            ));
        }
        let columns = spec_columns(&spec);
        // The k the extract met, as its report (JSON) states it.
        let k = report_json["k"].as_u64().ok_or_else(|| Error::internal("an extract's report without its k"))?;
        self.check_against_released(sources.clone(), columns, k, Some(extract_id.clone())).await?;
        match self.differing_release(file, report_roles(&report), sources, k, Some(extract_id)).await? {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Checks the extract of `current`'s datasets (each with its version) with `columns` and
    /// `k` against the extracts already released over its datasets (`except` left out): it
    /// may set no fewer than `k` people apart ([`Broker::isolating_release`]) and narrow
    /// nobody's sensitive value to fewer values than a base release leaves
    /// ([`Broker::narrowing_release`]).
    ///
    /// # Errors
    /// `extract_isolates_people` or `extract_narrows_values` (422), naming the dataset.
    async fn check_against_released(
        &self,
        current: Vec<(DatasetRef, i64)>,
        columns: Vec<String>,
        k: u64,
        except: Option<String>,
    ) -> Result<(), Error> {
        // Both comparisons need the extracts released over each dataset (and related ones), the
        // new extract's base, and often the same released bases: each found once.
        let lookup = current.clone();
        let over = Arc::new(
            self.blocking(move |c| {
                lookup.iter().map(|(d, _)| released_over(c, d, &lookup, except.as_deref())).collect::<Result<_, _>>()
            })
            .await?,
        );
        let built = Arc::new(Built::default());
        let shared = Arc::clone(&built);
        // Both run, whatever the first finds: a join's refusal goes to its stewards, and a check
        // that stopped at the first answered sooner (a red team timed it: 30–100 ms of about
        // 700, 12 of 12 calls on who is in another department's dataset).
        let isolating = self.isolating_release(current.clone(), columns.clone(), k, Arc::clone(&over), shared).await?;
        let narrowing = self.narrowing_release(current, columns, k, over, built).await?;
        match (isolating, narrowing) {
            (Some(refusal), _) => Err(refusal),
            (None, Some((dataset, column))) => Err(narrows_values(&dataset, &column)),
            (None, None) => Ok(()),
        }
    }

    /// The refusal of the extract of `current`'s datasets (each with its version) if, together
    /// with the extracts already released over one of its datasets or a related one (approved,
    /// or approved and revoked; as `over` lists them per dataset), it would let fewer than `k` people's rows be
    /// told apart, or its people cannot be matched with theirs.
    ///
    /// Each extract holds, of each of its datasets, every row of the people found in all of its
    /// datasets (its join). Over one dataset, a person is there as their unit and a hash of
    /// their rows at the version the extract read. Group these by the set of extracts each is
    /// in: any sum and difference of the extracts' rows (what `EXCEPT ALL`, counts per value and
    /// the like compute) is a sum of such groups, so a group of fewer than k is rows of fewer
    /// than k people. The new extract is refused when it makes such a group: one it is part
    /// of, or one it splits off a larger one. And since a difference is read class by class, a
    /// group it makes must also hold, in each class of the base release of every extract it is
    /// in, no one or at least `k` people, with at least [`DEFAULT_L`] values of each sensitive
    /// column that extract releases.
    ///
    /// Why: two partner datasets differing by one person, each joined with the same dataset,
    /// gave that person's row (`EXCEPT ALL`); a check of pairs of extracts fell to four whose
    /// pairs each differ by k or more (A + D − B − C left one person), and to a new version in
    /// which only one person's value changed; a check of the groups' sizes alone fell to a
    /// version without five people, one in each of five zones: each zone's rows differed by
    /// one, and the class counts gave each one's diagnosis (red teams).
    ///
    /// People are told apart by their unit, so two releases of one registry are compared also
    /// when it was registered as two datasets (a red team did, adding the target to the
    /// second: [`veil_catalog::Catalog::related_datasets`]); and extracts of two versions of a
    /// dataset whose people mostly cannot be matched by their unit (re-keyed, or replaced) are
    /// not released together ([`Releases::unmatched`]).
    async fn isolating_release(
        &self,
        current: Vec<(DatasetRef, i64)>,
        columns: Vec<String>,
        k: u64,
        over: Arc<Vec<(Vec<ReleasedOver>, Alias)>>,
        built: Arc<Built>,
    ) -> Result<Option<Error>, Error> {
        // The extracts released over each dataset (the new one last), and their bases.
        let plans = self
            .blocking(move |c| {
                let mut plans = Vec::new();
                for ((dataset, own), (over, alias)) in current.iter().zip(over.iter()) {
                    if over.is_empty() {
                        continue;
                    }
                    let mut released: Vec<(Versions, Vec<String>)> = Vec::with_capacity(over.len() + 1);
                    let mut owns = Vec::with_capacity(over.len() + 1);
                    for (id, sources, own) in over.iter().cloned() {
                        let spec = c.extract(&id)?.map(|e| e.spec).unwrap_or_default();
                        released.push((sources, spec_columns(&spec)));
                        owns.push(own);
                    }
                    released.push((current.clone(), columns.clone()));
                    owns.push((dataset.clone(), *own));
                    // Each extract's base as it was built (what the extract asked for decides
                    // which unasked columns leave it), once per dataset versions and columns.
                    let mut asked: Vec<(&Versions, Vec<String>)> = Vec::new();
                    let mut index: HashMap<(Versions, Vec<String>), usize> = HashMap::new();
                    let mut base_of = Vec::with_capacity(released.len());
                    for (sources, columns) in &released {
                        let mut key = (sources.clone(), columns.clone());
                        key.0.sort();
                        key.1.sort();
                        let at = *index.entry(key).or_insert_with(|| {
                            asked.push((sources, columns.clone()));
                            asked.len() - 1
                        });
                        base_of.push(at);
                    }
                    let mut bases = Vec::with_capacity(asked.len());
                    for (sources, columns) in asked {
                        bases.push(BaseOf::of(c, sources, &columns, k, alias)?);
                    }
                    plans.push(Releases { dataset: dataset.clone(), released, owns, base_of, bases });
                }
                Ok(plans)
            })
            .await?;
        if plans.is_empty() {
            return Ok(None);
        }
        // The bases are built in memory, as an extract is: room first.
        let files: Vec<(std::path::PathBuf, Vec<String>)> =
            plans.iter().flat_map(|p| p.bases.iter().flatten().flat_map(BaseOf::reads)).collect();
        let _room = self.reserve_build(files, "the extract cannot be compared with those released").await?;
        let catalog = std::sync::Arc::clone(&self.catalog);
        let work = move || -> Result<Option<Error>, Error> {
            // Per dataset version and columns: its units' hashes of their rows over those
            // columns (None for a dataset without a unit).
            type Hashes = Option<HashMap<String, u64>>;
            let mut loaded: HashMap<(DatasetRef, i64, Vec<String>), Hashes> = HashMap::new();
            let mut load = |source: &(DatasetRef, i64), columns: &[String]| -> Result<Hashes, Error> {
                let key = (source.0.clone(), source.1, columns.to_vec());
                if let Some(found) = loaded.get(&key) {
                    return Ok(found.clone());
                }
                let (file, unit) = catalog.version_source(&source.0, source.1)?;
                let hashes = match unit {
                    Some(unit) => Some(veil_extract::unit_row_hashes(&file, &unit, columns).map_err(extract_error)?),
                    None => None,
                };
                loaded.insert(key, hashes.clone());
                Ok(hashes)
            };
            let mut refusal = None;
            for plan in plans {
                let found = plan
                    .bases
                    .iter()
                    .map(|b| b.as_ref().map(|b| b.candidates(&built)).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                // Rows are compared over every column of the dataset any of these extracts
                // releases: a change nobody can see is no difference (a red team hid one
                // person's change under a change to everybody's unreleased column).
                let mut shown: Vec<String> = plan
                    .released
                    .iter()
                    .zip(&plan.owns)
                    .flat_map(|((_, columns), (own, _))| own_columns(own, columns))
                    .collect();
                shown.sort();
                shown.dedup();
                // Who is in each extract: as their rows (a changed row is another), and as
                // themselves (a red team changed everybody's row in a new version, within
                // their classes, to hide the one person it added). A person is in an extract
                // when found in each of its datasets and kept by its base (a red team's join
                // suppressed the one person unique in it, and the extract of the dataset alone,
                // less the join, was their row).
                let mut by_row: HashMap<(String, u64), Vec<usize>> = HashMap::new();
                let mut by_person: HashMap<String, Vec<usize>> = HashMap::new();
                let newest = &plan.owns[plan.owns.len() - 1];
                let people_now: std::collections::HashSet<String> =
                    load(newest, &[])?.map(|units| units.into_keys().collect()).unwrap_or_default();
                for (i, ((sources, _), own)) in plan.released.iter().zip(&plan.owns).enumerate() {
                    let Some(rows) = load(own, &shown)? else { continue };
                    // A related dataset is a version of this one only where it holds mostly the
                    // same people: two registers sharing some of their people are two
                    // populations (a red team found them refused), and the comparison of
                    // released rows (`differing_release`) still covers them.
                    if own.0 != newest.0 {
                        let shared = rows.keys().filter(|u| people_now.contains(*u)).count();
                        if shared * 2 < rows.len().min(people_now.len()) {
                            continue;
                        }
                    }
                    let mut others = Vec::new();
                    for other in sources.iter().filter(|s| *s != own) {
                        if let Some(units) = load(other, &[])? {
                            others.push(units);
                        }
                    }
                    let kept = found[plan.base_of[i]].as_ref();
                    for (unit, hash) in rows {
                        if others.iter().all(|o| o.contains_key(&unit))
                            && kept.is_none_or(|c| c.classes.contains_key(&unit))
                        {
                            by_row.entry((unit.clone(), hash)).or_default().push(i);
                            by_person.entry(unit).or_default().push(i);
                        }
                    }
                }
                // And as their sensitive values as released (a red team changed everybody's
                // row within their classes, a year older, to hide one person's new diagnosis),
                // over the sensitive columns of the dataset every base releases.
                let prefix = format!("{}.", plan.dataset);
                let mut common: Option<Vec<String>> = None;
                for c in found.iter().flatten() {
                    let mine: Vec<String> = c.columns.iter().filter(|n| n.starts_with(&prefix)).cloned().collect();
                    common = Some(match common {
                        None => mine,
                        Some(before) => before.into_iter().filter(|n| mine.contains(n)).collect(),
                    });
                }
                let common = common.unwrap_or_default();
                let mut by_value: HashMap<(&str, Vec<&[u64]>), Vec<usize>> = HashMap::new();
                if !common.is_empty() {
                    for (person, extracts) in &by_person {
                        for &i in extracts {
                            let Some(c) = &found[plan.base_of[i]] else { continue };
                            let Some(own) = c.own.get(person) else { continue };
                            let values: Vec<&[u64]> = common
                                .iter()
                                .filter_map(|n| c.columns.iter().position(|m| m == n))
                                .map(|j| own[j].as_slice())
                                .collect();
                            by_value.entry((person.as_str(), values)).or_default().push(i);
                        }
                    }
                }
                let rows: Vec<(&str, &[usize])> = by_row.iter().map(|((u, _), e)| (u.as_str(), e.as_slice())).collect();
                let people: Vec<(&str, &[usize])> = by_person.iter().map(|(u, e)| (u.as_str(), e.as_slice())).collect();
                let values: Vec<(&str, &[usize])> = by_value.iter().map(|((u, _), e)| (*u, e.as_slice())).collect();
                // Every plan compared, whatever the first finds: a join's refusal goes to its
                // stewards, and a check that stopped early answered sooner (`held`).
                let isolates = plan.isolates(&rows, k, &found)
                    | plan.isolates(&people, k, &found)
                    | plan.isolates(&values, k, &found);
                let unmatched = plan.unmatched(&people);
                if isolates {
                    refusal.get_or_insert_with(|| isolates_people(&plan.dataset, k));
                } else if unmatched {
                    refusal.get_or_insert_with(|| people_unmatched(&plan.dataset));
                }
            }
            Ok(refusal)
        };
        tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal(format!("extract task failed: {e}")))?
    }

    /// The refusal of the extract at `file` (its columns' `roles`, built from `sources`, meeting
    /// `k`) if its rows and those of an extract released from other datasets or versions
    /// (approved or revoked; `except` left out), compared by their values alone
    /// ([`veil_extract::differs_by_few`]), differ by rows that single out fewer than `k` people.
    ///
    /// The comparisons person by person ([`Broker::isolating_release`]) need to know who is
    /// who; a red team registered snapshots of one registry they could not match (a sensitive
    /// column renamed, a unit of another type or not linkable, everybody re-keyed) and read the
    /// person added as the one row the second extract had more. Extracts of the same dataset
    /// versions are projections of one base release and are not compared here.
    ///
    /// Only extracts that may be of the same people are compared so: by values alone, two
    /// registers of different people alike (the same codes, classes a few rows apart) look
    /// like two snapshots of one, and a red team's fresh registers were refused on their first
    /// extract, even of one column, for another department's releases. Extracts of two
    /// different datasets (or versions) kept by one department, where a register's snapshots
    /// are registered, are compared; others where the people they can hold (those in every
    /// dataset of the extract with a linkable identifier, named by any of them, compared as
    /// [`veil_extract::unit_key`] reads them) meet in `k` people at least. A copy re-keyed by
    /// another department, or with no identifier declared linkable, is not compared
    /// (docs/extracts.md).
    async fn differing_release(
        &self,
        file: std::path::PathBuf,
        roles: Vec<(String, String)>,
        sources: Versions,
        k: u64,
        except: Option<String>,
    ) -> Result<Option<Error>, Error> {
        if sources.is_empty() {
            return Err(Error::internal("an extract of nothing"));
        }
        let mut own = sources;
        own.sort();
        let released = self
            .blocking(move |c| {
                // A dataset version's linkable identifiers (its unit or any other column), each
                // looked up once (many releases read the same versions).
                let mut linkable: HashMap<(DatasetRef, i64), Vec<String>> = HashMap::new();
                let mut linked = |sources: &[(DatasetRef, i64)]| -> veil_catalog::Result<Vec<(DatasetRef, i64)>> {
                    let mut out = Vec::new();
                    for source in sources {
                        if !linkable.contains_key(source) {
                            let info = c.dataset_version(&source.0, source.1)?;
                            let columns = info.columns.iter().filter(|col| col.linkable).map(|col| col.name.clone());
                            linkable.insert(source.clone(), columns.collect());
                        }
                        if linkable.get(source).is_some_and(|columns| !columns.is_empty()) {
                            out.push(source.clone());
                        }
                    }
                    Ok(out)
                };
                let own_linked = linked(&own)?;
                let mut found = Vec::new();
                for (id, mut sources) in c.released_extracts()? {
                    sources.sort();
                    if except.as_deref() == Some(id.as_str()) || sources == own {
                        continue;
                    }
                    // `None` where two different datasets (or versions) of the extracts are
                    // kept by one department (always compared), else the released extract's
                    // linkable datasets, whose people decide it.
                    let kept_alike =
                        sources.iter().any(|t| own.iter().any(|o| o != t && o.0.department == t.0.department));
                    let theirs = if kept_alike {
                        None
                    } else {
                        let theirs = linked(&sources)?;
                        if own_linked.is_empty() || theirs.is_empty() {
                            continue;
                        }
                        Some(theirs)
                    };
                    if let Some(e) = c.extract(&id)? {
                        found.push((e.file, report_roles(&e.report), theirs));
                    }
                }
                Ok((own_linked, found, linkable))
            })
            .await?;
        let (own_linked, released, linkable) = released;
        if released.is_empty() {
            return Ok(None);
        }
        let files = std::iter::once((file.clone(), &roles))
            .chain(released.iter().map(|(f, r, _)| (f.clone(), r)))
            .map(|(f, r)| (f, r.iter().map(|(n, _)| n.clone()).collect()))
            .collect();
        let _room = self.reserve_build(files, "the extract cannot be compared with those released").await?;
        let catalog = std::sync::Arc::clone(&self.catalog);
        let work = move || -> Result<Option<Error>, Error> {
            // Each linked dataset version's people: the values of its linkable identifiers as
            // text, spaces, case, prefixes and leading zeros aside (`veil_extract::unit_key`),
            // read once. Every such column counts, not only the unit: a red team's copy was
            // keyed by record number, the national id beside it.
            let mut people: HashMap<(DatasetRef, i64), HashSet<String>> = HashMap::new();
            let theirs = released.iter().filter_map(|(_, _, theirs)| theirs.as_ref());
            let own_linked: &[_] = if theirs.clone().next().is_some() { &own_linked } else { &[] };
            for source in own_linked.iter().chain(theirs.flatten()) {
                if people.contains_key(source) {
                    continue;
                }
                let (file, _) = catalog.version_source(&source.0, source.1)?;
                let columns = linkable.get(source).map_or(&[][..], Vec::as_slice);
                people.insert(source.clone(), veil_extract::identifier_keys(&file, columns).map_err(extract_error)?);
            }
            // The people an extract of `sources` can hold: those in every one of them.
            let population = |sources: &[(DatasetRef, i64)]| -> HashSet<&String> {
                let mut sets = sources.iter().filter_map(|s| people.get(s));
                let Some(first) = sets.next() else { return HashSet::new() };
                let rest: Vec<_> = sets.collect();
                first.iter().filter(|u| rest.iter().all(|set| set.contains(*u))).collect()
            };
            let ours = population(own_linked);
            let new = veil_extract::ReleasedRows::read(&file, &roles).map_err(extract_error)?;
            let mut refusal = None;
            for (other, roles, theirs) in released {
                // Across departments, compared where the extracts may hold `k` people in
                // common: two registers sharing people hold them in the same classes, whatever
                // else they hold (a red team read a target's diagnosis from registers sharing
                // just under half their people, and from joins of registers sharing fewer).
                // With fewer than `k` in common, the one less the other isolates somebody only
                // where other people's rows cancel by chance or by a steward's crafting (out
                // of reach of any comparison); and one person shared by two registers alike
                // refused the second (a red team).
                let shared = |theirs: &[(DatasetRef, i64)]| {
                    let theirs = population(theirs);
                    ours.iter().filter(|u| theirs.contains(*u)).take(k as usize).count() as u64 >= k
                };
                let same_people = theirs.is_none_or(|theirs| shared(&theirs));
                if !same_people {
                    continue;
                }
                let old = veil_extract::ReleasedRows::read(&other, &roles).map_err(extract_error)?;
                // Every release compared, whatever the first finds (`held`).
                if veil_extract::differs_by_few(&new, &old, k, DEFAULT_L) {
                    refusal.get_or_insert_with(|| differs_by_few_rows(k));
                }
            }
            Ok(refusal)
        };
        tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal(format!("extract task failed: {e}")))?
    }

    /// Takes room in the memory queries share for reading `files` (each with the columns read)
    /// and building within them, estimated from their footers; `what` says what cannot be done
    /// without it.
    async fn reserve_build(
        &self,
        files: Vec<(std::path::PathBuf, Vec<String>)>,
        what: &'static str,
    ) -> Result<veil_query::Reserved, Error> {
        let estimate = tokio::task::spawn_blocking(move || {
            files.iter().try_fold(0u64, |n, (path, columns)| {
                Ok::<_, veil_extract::Error>(n.saturating_add(veil_extract::build_bytes(path, columns)?))
            })
        })
        .await
        .map_err(|e| Error::internal(format!("extract task failed: {e}")))?
        .map_err(extract_error)?;
        self.engine.reserve_memory(estimate).await.map_err(|e| crate::memory_error(what, e))
    }
}

/// The extracts released over `dataset`, the new one last ([`Broker::isolating_release`]).
struct Releases {
    dataset: DatasetRef,
    /// Each extract's datasets with their versions, and its columns.
    released: Vec<(Versions, Vec<String>)>,
    /// Per extract, the one of its datasets (with its version) standing for `dataset`: itself,
    /// or a related dataset.
    owns: Vec<(DatasetRef, i64)>,
    /// Per extract, its base in `bases`.
    base_of: Vec<usize>,
    /// `None` for a base of a dataset without a privacy unit.
    bases: Vec<Option<BaseOf>>,
}

impl Releases {
    /// Whether the new extract and one released over another version of its own dataset
    /// (`members`: each person with the extracts it is in) each hold many people the other does
    /// not ([`MIN_UNMATCHED`], and a quarter of the smaller): people are told apart across
    /// versions by their unit, and where most of them cannot be matched the two extracts look
    /// like two populations, though they may be one re-keyed (a red team gave everybody a new
    /// unit in a version with the target added; also, a year older, so no row matched
    /// either), and their difference is whoever was added.
    fn unmatched(&self, members: &[(&str, &[usize])]) -> bool {
        let newest = self.released.len() - 1;
        let mut in_new = 0u64;
        // Per released extract: its people, and those also in the new one.
        let mut held: HashMap<usize, (u64, u64)> = HashMap::new();
        for (_, extracts) in members {
            let with_new = extracts.contains(&newest);
            in_new += u64::from(with_new);
            for &i in extracts.iter().filter(|&&i| i != newest) {
                let counts = held.entry(i).or_default();
                counts.0 += 1;
                counts.1 += u64::from(with_new);
            }
        }
        let (dataset, version) = &self.owns[newest];
        held.into_iter().any(|(i, (theirs, both))| {
            let (d, v) = &self.owns[i];
            let least = (in_new - both).min(theirs - both);
            d == dataset && v != version && least >= MIN_UNMATCHED && least * 4 >= in_new.min(theirs)
        })
    }

    /// Whether the new extract makes a group of people (`members`: each with the extracts it
    /// is in, as indices into `released`) that is too small: fewer than `k` in all, or, in a
    /// class of the base (`found`, per base) of an extract it is in, some but fewer than `k`
    /// people or fewer than [`DEFAULT_L`] values of a sensitive column that extract releases.
    fn isolates(&self, members: &[(&str, &[usize])], k: u64, found: &[Option<Arc<veil_extract::Candidates>>]) -> bool {
        let newest = self.released.len() - 1;
        let mut after: HashMap<&[usize], Vec<&str>> = HashMap::new();
        let mut before: HashMap<Vec<usize>, u64> = HashMap::new();
        for (unit, extracts) in members {
            after.entry(extracts).or_default().push(unit);
            let old: Vec<usize> = extracts.iter().copied().filter(|&i| i != newest).collect();
            if !old.is_empty() {
                *before.entry(old).or_default() += 1;
            }
        }
        for (extracts, people) in &after {
            // A group the new extract is in, or one it splits off a larger one.
            let made = extracts.contains(&newest) || before.get(*extracts).copied() != Some(people.len() as u64);
            if !made {
                continue;
            }
            if (people.len() as u64) < k {
                return true;
            }
            let mut seen = Vec::new();
            for &i in *extracts {
                let b = self.base_of[i];
                if seen.contains(&b) {
                    continue;
                }
                seen.push(b);
                let (Some(base), Some(candidates)) = (&self.bases[b], &found[b]) else { continue };
                if few_in_a_class(people, base, candidates, &self.dataset, k) {
                    return true;
                }
            }
        }
        false
    }
}

/// Whether `people` hold, in some class of `base` (its [`veil_extract::Candidates`]), some but
/// fewer than `k` of them, or fewer than [`DEFAULT_L`] values of a sensitive column of
/// `dataset` the base's extracts release.
fn few_in_a_class(
    people: &[&str],
    base: &BaseOf,
    candidates: &veil_extract::Candidates,
    dataset: &DatasetRef,
    k: u64,
) -> bool {
    let prefix = format!("{dataset}.");
    let columns: Vec<usize> = candidates
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.strip_prefix(&prefix).is_some_and(|c| base.released(dataset, c).is_some()))
        .map(|(j, _)| j)
        .collect();
    // Per class: the group's people in it, and their values of each column.
    let mut classes: HashMap<u32, (u64, Vec<std::collections::HashSet<u64>>)> = HashMap::new();
    for person in people {
        let Some(of) = candidates.classes.get(*person) else { continue };
        for class in of {
            let (n, values) = classes.entry(*class).or_insert_with(|| (0, vec![Default::default(); columns.len()]));
            *n += 1;
            if let Some(own) = candidates.own.get(*person) {
                for (held, &j) in values.iter_mut().zip(&columns) {
                    held.extend(own[j].iter().copied());
                }
            }
        }
    }
    classes.values().any(|(n, values)| *n < k || values.iter().any(|v| (v.len() as u64) < DEFAULT_L))
}

/// Datasets, each with a version: what an extract is built from.
type Versions = Vec<(DatasetRef, i64)>;

/// The base release an extract is built within, to compare with another's
/// ([`Broker::narrowing_release`]): one dataset version's, or the join's of several.
struct BaseOf {
    /// Per dataset version, in the extract's order.
    parts: Vec<BasePart>,
    /// What it is built from.
    key: BaseKey,
}

/// The bases one check has built ([`Broker::check_against_released`]), each built once.
#[derive(Default)]
struct Built(std::sync::Mutex<HashMap<BaseKey, Arc<veil_extract::Candidates>>>);

/// A base's dataset versions, the columns asked of it and the names its datasets are compared
/// under, each sorted.
type BaseKey = (Versions, Vec<String>, Vec<DatasetRef>);

/// Related datasets ([`veil_catalog::Catalog::related_datasets`]) and the dataset each is
/// compared as, a version of it.
type Alias = HashMap<DatasetRef, DatasetRef>;

/// An extract released over a dataset: its access request's id, its datasets with their
/// versions, and the one of them standing for the dataset (itself, or a related one).
type ReleasedOver = (String, Versions, (DatasetRef, i64));

/// The extracts released over `dataset` or a dataset related to it (`except` left out), and
/// the related datasets as [`Alias`] (those in `current`, the new extract's, aside).
fn released_over(
    c: &veil_catalog::Catalog,
    dataset: &DatasetRef,
    current: &[(DatasetRef, i64)],
    except: Option<&str>,
) -> Result<(Vec<ReleasedOver>, Alias), veil_catalog::Error> {
    let related: Vec<DatasetRef> =
        c.related_datasets(dataset)?.into_iter().filter(|r| current.iter().all(|(d, _)| d != r)).collect();
    let mut released = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for from in std::iter::once(dataset).chain(&related) {
        for (id, sources) in c.released_extract_sources(from)? {
            if except == Some(id.as_str()) || !seen.insert(id.clone()) {
                continue;
            }
            let own = sources.iter().find(|(d, _)| d == dataset).or_else(|| sources.iter().find(|(d, _)| d == from));
            if let Some(own) = own.cloned() {
                released.push((id, sources, own));
            }
        }
    }
    let alias = related.into_iter().map(|r| (r, dataset.clone())).collect();
    Ok((released, alias))
}

/// One dataset version in a [`BaseOf`].
struct BasePart {
    dataset: DatasetRef,
    file: std::path::PathBuf,
    base: Spec,
    /// The columns of it the extracts compared ask for (its unit aside).
    asked: Vec<String>,
    /// Its sensitive columns those extracts release.
    sensitive: Vec<String>,
}

impl BaseOf {
    /// The base of the extracts of `sources` (each dataset with its version) that ask for
    /// `columns` (as their specs name them); `None` when a dataset has no privacy unit (it is
    /// about nobody, and is never joined). A dataset in `alias` is named as the dataset it maps
    /// to (a related dataset compared as another version of it), unless `sources` hold that one
    /// too.
    fn of(
        catalog: &veil_catalog::Catalog,
        sources: &[(DatasetRef, i64)],
        columns: &[String],
        fallback_k: u64,
        alias: &Alias,
    ) -> Result<Option<Self>, veil_catalog::Error> {
        let mut parts = Vec::with_capacity(sources.len());
        for (dataset, version) in sources {
            let info = catalog.dataset_version(dataset, *version)?;
            let (file, Some(unit)) = catalog.version_source(dataset, *version)? else { return Ok(None) };
            let asked: Vec<String> = own_columns(dataset, columns)
                .into_iter()
                .filter(|c| *c != unit && info.columns.iter().any(|i| i.name == *c))
                .collect();
            let sensitive = info
                .columns
                .iter()
                .filter(|c| c.tag == Tag::Sensitive && asked.contains(&c.name))
                .map(|c| c.name.clone())
                .collect();
            let base = base_spec(&info, fallback_k, base_key(catalog, dataset));
            // Not where the base joins the dataset it maps to itself: there it is a partner.
            let named = match alias.get(dataset) {
                Some(to) if sources.iter().all(|(d, _)| d != to) => to.clone(),
                _ => dataset.clone(),
            };
            parts.push(BasePart { dataset: named, file, base, asked, sensitive });
        }
        let mut key = (sources.to_vec(), columns.to_vec(), parts.iter().map(|p| p.dataset.clone()).collect::<Vec<_>>());
        key.0.sort();
        key.1.sort();
        key.1.dedup();
        key.2.sort();
        Ok(Some(Self { parts, key }))
    }

    /// Each dataset version's file and the columns to read of it: its base's (its unit among
    /// them) and those asked for.
    fn reads(&self) -> Vec<(std::path::PathBuf, Vec<String>)> {
        self.parts
            .iter()
            .map(|p| {
                let mut read: Vec<String> = p.base.columns.iter().map(|c| c.name.clone()).collect();
                read.extend(p.asked.iter().filter(|a| !read.contains(a)).cloned().collect::<Vec<_>>());
                (p.file.clone(), read)
            })
            .collect()
    }

    /// The sensitive `column` of `dataset` the extracts compared release, named as
    /// [`BaseOf::candidates`] names it.
    fn released(&self, dataset: &DatasetRef, column: &str) -> Option<String> {
        let part = self.parts.iter().find(|p| p.dataset == *dataset)?;
        part.sensitive.iter().any(|s| s == column).then(|| format!("{dataset}.{column}"))
    }

    /// What the base tells of each person's sensitive values, its columns named
    /// `<dataset>.<column>`: as `built` holds it, or built and kept there.
    fn candidates(&self, built: &Built) -> Result<Arc<veil_extract::Candidates>, Error> {
        let poisoned = |_| Error::internal("the bases built are poisoned");
        if let Some(found) = built.0.lock().map_err(poisoned)?.get(&self.key) {
            return Ok(Arc::clone(found));
        }
        let found = Arc::new(self.build()?);
        built.0.lock().map_err(poisoned)?.insert(self.key.clone(), Arc::clone(&found));
        Ok(found)
    }

    fn build(&self) -> Result<veil_extract::Candidates, Error> {
        let inputs = self
            .reads()
            .iter()
            .map(|(file, read)| veil_extract::read_parquet(file, read))
            .collect::<Result<Vec<_>, _>>()
            .map_err(extract_error)?;
        match (self.parts.as_slice(), inputs.as_slice()) {
            ([part], [input]) => {
                let mut found =
                    veil_extract::base_candidates(input, &part.base, &|c| part.asked.iter().any(|a| a == c))
                        .map_err(extract_error)?;
                for c in &mut found.columns {
                    *c = format!("{}.{c}", part.dataset);
                }
                Ok(found)
            }
            _ => {
                let unit = self.parts.first().and_then(|p| p.base.unit.clone()).unwrap_or_default();
                let sources: Vec<veil_extract::Source<'_>> = self
                    .parts
                    .iter()
                    .zip(&inputs)
                    .map(|(p, input)| veil_extract::Source {
                        name: p.dataset.to_string(),
                        input,
                        base: p.base.clone(),
                        columns: p.asked.clone(),
                    })
                    .collect();
                veil_extract::joined_base_candidates(&sources, &unit).map_err(extract_error)
            }
        }
    }
}

impl Broker {
    /// The dataset and sensitive column for which the extract of `current`'s datasets (each
    /// with its version) asking for `columns` would, with the extracts released over those
    /// datasets within other bases (as `over_each` lists them), narrow some person's value to fewer
    /// values than a base release leaves ([`DEFAULT_L`]), though none.
    ///
    /// Extracts of one dataset version are built within its base release, and extracts of one
    /// join within the join's, so no set of them says more than that base. Extracts within two
    /// bases do not: a red team registered a version that drops one quasi-identifier (the base
    /// then shows another one exactly), asked for one extract of each version, each k-anonymous
    /// and l-diverse, and read the target's diagnosis as the one value both of their classes
    /// hold; another did the same with one extract of a dataset alone and one of it joined with
    /// a partner's dataset that holds a quasi-identifier it lacks. So for each person of the
    /// new extract's base and each sensitive column it releases, the values their class holds
    /// in that base and in every other base an extract released the column within are
    /// intersected (an extract's class holds at least its base class's values, so the
    /// extracts' intersection holds at least this one); some but fewer than `l` values is
    /// refused. None in common (the person's value changed) says that it changed, not what it
    /// was.
    async fn narrowing_release(
        &self,
        current: Vec<(DatasetRef, i64)>,
        columns: Vec<String>,
        k: u64,
        over_each: Arc<Vec<(Vec<ReleasedOver>, Alias)>>,
        built: Arc<Built>,
    ) -> Result<Option<(DatasetRef, String)>, Error> {
        // The new extract's base, and the other bases extracts over its datasets were released within.
        let plans = self
            .blocking(move |c| {
                // Related datasets compared as versions of the new extract's datasets.
                let mut over = Vec::new();
                let mut alias = Alias::new();
                for (released, related) in over_each.iter() {
                    over.extend(released.iter().cloned());
                    for (r, d) in related {
                        alias.entry(r.clone()).or_insert_with(|| d.clone());
                    }
                }
                let Some(new) = BaseOf::of(c, &current, &columns, k, &alias)? else { return Ok(None) };
                if new.parts.iter().all(|p| p.sensitive.is_empty()) {
                    return Ok(None);
                }
                let mut own = current.clone();
                own.sort();
                // Per base (its sorted dataset versions): its dataset versions as an extract
                // names them, and the columns of the extracts within it.
                let mut asked_of: std::collections::BTreeMap<Versions, (Versions, Vec<String>)> = Default::default();
                for (id, sources, _) in over {
                    let mut key = sources.clone();
                    key.sort();
                    if key == own {
                        continue;
                    }
                    let spec = c.extract(&id)?.map(|e| e.spec).unwrap_or_default();
                    let entry = asked_of.entry(key).or_insert_with(|| (sources, Vec::new()));
                    entry.1.extend(spec_columns(&spec));
                }
                let mut older = Vec::new();
                for (_, (sources, mut asked)) in asked_of {
                    asked.sort();
                    asked.dedup();
                    // Any sensitive column of a dataset both release: it may be one column
                    // under two names.
                    if let Some(base) = BaseOf::of(c, &sources, &asked, k, &alias)?
                        && new.parts.iter().any(|n| {
                            !n.sensitive.is_empty()
                                && base.parts.iter().any(|p| p.dataset == n.dataset && !p.sensitive.is_empty())
                        })
                    {
                        older.push(base);
                    }
                }
                Ok((!older.is_empty()).then_some((new, older)))
            })
            .await?;
        let Some((new, older)) = plans else { return Ok(None) };
        // The bases are built in memory, as an extract is: room first.
        let files: Vec<(std::path::PathBuf, Vec<String>)> =
            std::iter::once(&new).chain(&older).flat_map(BaseOf::reads).collect();
        let _room = self.reserve_build(files, "the extract cannot be compared with those released").await?;
        let work = move || -> Result<Option<(DatasetRef, String)>, Error> {
            let now = new.candidates(&built)?;
            let before = older.iter().map(|b| Ok((b.candidates(&built)?, b))).collect::<Result<Vec<_>, Error>>()?;
            // Every person compared, whatever the first finds (`held`).
            let mut narrowed = None;
            for part in &new.parts {
                for column in &part.sensitive {
                    let name = format!("{}.{column}", part.dataset);
                    let Some(j) = now.columns.iter().position(|c| *c == name) else { continue };
                    // The columns of this dataset the other bases released that hold this
                    // one's values: by name, or under another name or coding (a red team
                    // renamed the column in a new version, then recoded it with a codebook),
                    // each with how its values translate (`None`: as they are).
                    let mut held_in: Vec<(&veil_extract::Candidates, usize, Option<Translation>)> = Vec::new();
                    for (then, base) in &before {
                        let Some(theirs) = base.parts.iter().find(|p| p.dataset == part.dataset) else { continue };
                        for other in &theirs.sensitive {
                            let released = format!("{}.{other}", part.dataset);
                            let Some(i) = then.columns.iter().position(|c| *c == released) else { continue };
                            match translation(then, i, &now, j) {
                                Some(map) => held_in.push((then, i, Some(map))),
                                None if other == column => held_in.push((then, i, None)),
                                None => {}
                            }
                        }
                    }
                    for (person, values) in &now.people {
                        let mut common = values[j].clone();
                        let mut compared = false;
                        for (then, i, map) in &held_in {
                            let Some(held) = then.people.get(person) else { continue };
                            match map {
                                None => common.retain(|v| held[*i].binary_search(v).is_ok()),
                                Some(map) => {
                                    let translated: std::collections::HashSet<u64> =
                                        held[*i].iter().filter_map(|v| map.get(v)).copied().collect();
                                    common.retain(|v| translated.contains(v));
                                }
                            }
                            compared = true;
                        }
                        if compared && !common.is_empty() && (common.len() as u64) < DEFAULT_L {
                            narrowed.get_or_insert_with(|| (part.dataset.clone(), column.clone()));
                        }
                    }
                }
            }
            Ok(narrowed)
        };
        tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal(format!("extract task failed: {e}")))?
    }
}

/// How the values of column `i` of `then` translate into those of column `j` of `now`, when
/// one is a function of the other: over the people with one value in each, each old value's
/// most frequent new value, if these hold for at least nine in ten of at least
/// [`MIN_TRANSLATED`] people, three or more per old value on average. A renamed or recoded
/// column translates (the identity, or a codebook); an unrelated one does not.
fn translation(
    then: &veil_extract::Candidates,
    i: usize,
    now: &veil_extract::Candidates,
    j: usize,
) -> Option<Translation> {
    let mut pairs: HashMap<u64, HashMap<u64, u64>> = HashMap::new();
    let mut people = 0u64;
    for (person, old) in &then.own {
        let (Some(new), [old]) = (now.own.get(person), old[i].as_slice()) else { continue };
        let [new] = new[j].as_slice() else { continue };
        *pairs.entry(*old).or_default().entry(*new).or_default() += 1;
        people += 1;
    }
    let mut map = HashMap::with_capacity(pairs.len());
    let mut agreeing = 0;
    for (old, news) in pairs {
        let (new, n) = news.into_iter().max_by_key(|(v, n)| (*n, *v))?;
        map.insert(old, new);
        agreeing += n;
    }
    // Each old value seen on a few people on average: a column of values nearly everyone holds
    // alone (an income beside a diagnosis) maps one to one onto anything, by chance.
    let spread = people >= 3 * map.len() as u64;
    (people >= MIN_TRANSLATED && spread && agreeing * 10 >= people * 9).then_some(map)
}

/// Old values to new ones ([`translation`]).
type Translation = HashMap<u64, u64>;

/// The fewest people a [`translation`] is found on.
const MIN_TRANSLATED: u64 = 10;

/// The refusal of an extract that, with the extracts of `dataset` released within other bases
/// (other versions, other joins), would narrow some person's `column` to fewer values than a
/// base release leaves.
fn narrows_values(dataset: &DatasetRef, column: &str) -> Error {
    Error::new(
        ErrorKind::Unprocessable,
        "extract_narrows_values",
        format!(
            "this extract, with the extracts of {dataset} already released from other versions or joined with other \
             datasets, would narrow some person's `{column}` to fewer than {DEFAULT_L} values: their class holds \
             different values in each (they are generalized differently, as when a quasi-identifier was added or \
             dropped, or a joined dataset brings one), and fewer than {DEFAULT_L} are in every one; ask for an \
             extract without `{column}`, or within the same datasets and versions as one released"
        ),
    )
}

/// The fewest people two extracts of a dataset may each hold without the other before they are
/// taken for two populations ([`Releases::unmatched`]).
const MIN_UNMATCHED: u64 = 10;

/// The refusal of an extract whose people mostly are not those of an extract released from
/// another version of `dataset`, nor the other way round ([`Releases::unmatched`]).
fn people_unmatched(dataset: &DatasetRef) -> Error {
    Error::new(
        ErrorKind::Unprocessable,
        "extract_people_unmatched",
        format!(
            "this extract and one already released from another version of {dataset} each hold many people the \
             other does not (the dataset's people were re-keyed or replaced between the versions): extracts are \
             compared person by person, and two that cannot be would give whoever was added to one, so no extract \
             of this version is released while that one counts (a revoked extract still does)"
        ),
    )
}

/// The refusal of [`Broker::differing_release`]: the comparison by values covers extracts of
/// every dataset of the department, so it names none (a red team asked for a first extract of a new dataset and
/// was told of extracts "released over" it, of which there were none).
fn differs_by_few_rows(k: u64) -> Error {
    Error::new(
        ErrorKind::Unprocessable,
        "extract_isolates_people",
        format!(
            "this extract's rows, compared by their values with an extract already released (of this or another \
             dataset of the same department: columns are paired by the values they hold, whatever their names), \
             differ in some class by fewer than {k} rows, or by rows with fewer than two values of a sensitive \
             column: the difference would single those rows out. A department's registers of similar people can be \
             refused so; ask for coarser or fewer columns"
        ),
    )
}

/// The refusal of an extract that, with the extracts released over `dataset`, would let fewer
/// than `k` people's rows be told apart.
fn isolates_people(dataset: &DatasetRef, k: u64) -> Error {
    Error::new(
        ErrorKind::Unprocessable,
        "extract_isolates_people",
        format!(
            "this extract, compared with the extracts already released over {dataset}, would single out the rows of \
             fewer than {k} people (people in one but not another, or whose rows changed between versions): a \
             dataset made to differ from another by one person would give that person's row; ask for the same \
             datasets and versions as an extract released, or for one whose people differ from each combination \
             of them by at least {k}"
        ),
    )
}

/// Why an extract of a join cannot be released: the rule's code, its message, and the column
/// that blocks, when one does.
struct Why {
    code: &'static str,
    why: String,
    column: Option<String>,
}

/// `refusal` of the extract `request` of `versions` ([`Broker::check_against_released`],
/// [`Broker::differing_release`]), as the analyst is told it: at once for an extract of one
/// dataset; for a join, whose comparison with the extracts released depends on who is in
/// both datasets, a request its stewards see and can only reject ([`unbuildable`]).
///
/// Why: refused at once, a join with a partner dataset made to differ from one already
/// released by one person told the analyst whether that person is in the other department's
/// dataset (the join's people differed from the released join's by them, or by nobody).
fn held(
    request: &ExtractRequest,
    versions: &[(DatasetRef, i64)],
    (k, l): (u64, u64),
    refusal: Error,
    staged: std::path::PathBuf,
) -> Result<NewExtract, Error> {
    if !holdable(versions, &refusal) {
        return Err(refusal);
    }
    let why = Why { code: refusal.code(), why: refusal.message().to_owned(), column: None };
    unbuildable(request, versions, (k, l), why, staged)
}

/// Whether `refusal` of an extract of `versions` goes to its stewards rather than back to the
/// analyst ([`held`]): a comparison with the extracts released, of a join.
fn holdable(versions: &[(DatasetRef, i64)], refusal: &Error) -> bool {
    versions.len() > 1
        && matches!(refusal.code(), "extract_isolates_people" | "extract_narrows_values" | "extract_people_unmatched")
}

/// The extract of a join that cannot be released (`why`: no generalization meets k or l, or
/// it compares badly with the extracts released), as a request its stewards see and can only
/// reject: an empty file, and a report with `unbuildable` (why), `refused_by` (the rule's
/// code) and `blocking_column` in place of the figures.
fn unbuildable(
    request: &ExtractRequest,
    versions: &[(DatasetRef, i64)],
    (k, l): (u64, u64),
    Why { code, why, column }: Why,
    staged: std::path::PathBuf,
) -> Result<NewExtract, Error> {
    if let Err(e) = veil_extract::write_empty(UNBUILDABLE, &staged) {
        let _ = std::fs::remove_file(&staged);
        return Err(Error::internal(e));
    }
    let report = serde_json::json!({
        "k": k,
        "l": l,
        UNBUILDABLE: why,
        "refused_by": code,
        "blocking_column": column,
        "records": 0,
    });
    Ok(new_extract(request, versions, staged, 0, report.to_string()))
}

/// The extract `request` asks for, of `versions` (its datasets with the versions it was built
/// from, the one asked for first), staged at `staged`, with its rows and report.
fn new_extract(
    request: &ExtractRequest,
    versions: &[(DatasetRef, i64)],
    staged: std::path::PathBuf,
    rows: u64,
    report: String,
) -> NewExtract {
    NewExtract {
        name: request.name.clone(),
        spec: spec_json(request),
        source_version: versions.first().map_or(0, |(_, v)| *v),
        staged,
        rows,
        report,
        parts: versions.get(1..).unwrap_or_default().to_vec(),
    }
}

/// The field of an extract's report (and the column of its empty file) that says it could
/// not be built.
const UNBUILDABLE: &str = "unbuildable";

fn extract_error(e: veil_extract::Error) -> Error {
    use veil_extract::Error as E;
    match e {
        E::Infeasible { .. } => Error::new(ErrorKind::Unprocessable, "extract_infeasible", e.to_string()),
        E::Spec(_) | E::UnknownColumn(_) | E::Type { .. } | E::Hierarchy { .. } => {
            Error::new(ErrorKind::Unprocessable, "invalid_extract", e.to_string())
        }
        E::Storage(_) => Error::internal(e),
    }
}
