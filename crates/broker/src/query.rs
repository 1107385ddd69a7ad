//! [`Broker::query`]: resolves the datasets a query names, asks the policy about all of them at
//! once (就高从严), hands the query to the guarded engine with a session that holds exactly
//! those datasets, and records the decision before anything of the answer is released.

use std::time::Instant;

use ring::digest;
use veil_audit::{DatasetUse, Entry, Filter};
use veil_catalog::{CappedRows, DatasetInfo};
use veil_common::{AUDIT_SCHEMA, DatasetName, DatasetRef, DepartmentId, ErrorKind, Mode};
use veil_policy::{Action, DatasetMeta, PolicyEngine};
use veil_query::{ParsedQuery, QueryRequest, SessionDataset};

use crate::budget::{self, DatasetCap};
use crate::{Answer, Broker, Budget, Caller, Error, Refused, Released, Request, Rule, now_unix};

/// Why an answer over people is exact, in the answer's rules and the audit record.
const EXACT_BASIS: &str = "exact aggregates, not anonymized: every dataset is the analyst's own department's and a policy line allows exact_aggregates";

/// The audit log's table, for auditors.
const AUDIT_TABLE: &str = "audit.events";

/// A query that was decided (and run, unless a dry run), not yet recorded.
pub(crate) struct Done {
    pub(crate) answer: Answer,
    pub(crate) level: String,
    pub(crate) k: u64,
    /// The policy's decision for each dataset (or the grant of each extract).
    pub(crate) policy: Vec<Rule>,
    pub(crate) budget: Option<Vec<Budget>>,
}

impl Broker {
    /// Decides, runs and records one query.
    ///
    /// Every call appends exactly one audit record (allowed, dry run, denied or failed) and
    /// returns only after it is on disk; if the log cannot write, nothing is released and the
    /// error is `audit_unavailable`.
    ///
    /// # Errors
    /// [`Refused`] with the reason and the refusal's audit record.
    pub async fn query(&self, caller: &Caller, request: Request) -> Result<Released, Refused> {
        let started = Instant::now();
        let decision = if request.dry_run { "dry_run" } else { "allowed" };
        let mut entry = self.query_entry(caller, &request.sql, Some(&request.mode), decision);
        let outcome = self.decide_and_run(caller, request, &mut entry).await;
        entry.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        match &outcome {
            Ok(done) => {
                if done.answer.executed {
                    entry.rows = Some(done.answer.row_count() as u64);
                    entry.suppressed_groups = Some(done.answer.suppressed_groups);
                }
            }
            Err(e) => {
                entry.decision = if e.is_refusal() { "denied" } else { "failed" }.into();
                entry.rule = Some(e.code().to_owned());
                entry.detail = Some(e.audit_detail());
                entry.failure = e.failure().map(str::to_owned);
            }
        }
        // Veil's own account of the step: decision, rule and sizes; never SQL or values.
        tracing::debug!(
            decision = %entry.decision,
            rule = entry.rule.as_deref().unwrap_or(""),
            datasets = entry.datasets.len(),
            rows = entry.rows,
            duration_ms = entry.duration_ms,
            "query decided"
        );
        // The record is on disk before anything of the answer leaves.
        let reference = self.record(caller, entry).await.map_err(|error| Refused { error, audit_id: None })?;
        match outcome {
            Ok(mut done) => {
                let guard =
                    done.answer.rules.iter().map(|r| Rule { code: r.code.to_owned(), detail: r.detail.clone() });
                let rules = done.policy.into_iter().chain(guard).collect();
                // The exact number of withheld groups or classes would say whether a group of one
                // person exists (and, grouped by a sensitive column, how many distinct values
                // it has), in any mode: it goes to the audit record only.
                done.answer.suppressed_groups = 0;
                Ok(Released {
                    answer: done.answer,
                    level: done.level,
                    k: done.k,
                    rules,
                    budget: done.budget,
                    audit_id: reference,
                })
            }
            Err(error) => Err(Refused { error, audit_id: Some(reference) }),
        }
    }

    /// Records a query that its protocol refused before the broker could decide it (a call
    /// header that does not parse, too many answers waiting), as one `denied` query record like
    /// any other refusal, and returns the refusal with its record's reference.
    pub async fn refuse(&self, caller: &Caller, sql: &str, mode: Option<&str>, error: Error) -> Refused {
        let mut entry = self.query_entry(caller, sql, mode, "denied");
        entry.rule = Some(error.code().to_owned());
        entry.detail = Some(error.audit_detail());
        entry.failure = error.failure().map(str::to_owned);
        match self.record(caller, entry).await {
            Ok(reference) => Refused { error, audit_id: Some(reference) },
            Err(error) => Refused { error, audit_id: None },
        }
    }

    /// A query's audit record as it starts: who, the mode asked for, the SQL and its hash.
    fn query_entry(&self, caller: &Caller, sql: &str, mode: Option<&str>, decision: &str) -> Entry {
        let mut entry = Entry::new("query", decision);
        entry.actor = Some(caller.actor());
        entry.mode = mode.map(str::to_owned);
        entry.sql_sha256 = Some(veil_common::hex::encode(digest::digest(&digest::SHA256, sql.as_bytes()).as_ref()));
        entry.sql = Some(recorded_sql(sql, self.limits().max_sql_bytes));
        entry
    }

    /// The strictest result mode the policy allows `caller` on every dataset `sql` reads: dp,
    /// then anonymized aggregates, then de-identified rows (`deidentified` for a query over
    /// extracts). For protocols whose tools cannot name a mode (Flight SQL); it decides nothing
    /// and records nothing: a query the policy refuses in every mode gets dp, and with it dp's
    /// refusal, recorded by [`Broker::query`].
    pub async fn strictest_mode(&self, caller: &Caller, sql: &str) -> Mode {
        const STRICTEST_FIRST: [Mode; 3] = [Mode::Dp, Mode::Aggregate, Mode::Deidentified];
        let Ok(parsed) = veil_query::parse(sql, self.limits().max_sql_bytes) else { return Mode::Dp };
        let tables = parsed.tables();
        if !tables.is_empty() && tables.iter().all(|(schema, _)| schema == veil_common::EXTRACT_SCHEMA) {
            return Mode::Deidentified;
        }
        let Some(refs) = dataset_refs(&parsed).ok().filter(|r| !r.is_empty()) else { return Mode::Dp };
        let metas = self
            .blocking(move |c| {
                refs.iter()
                    .map(|r| c.dataset(r).map(|d| DatasetMeta { dataset: d.dataset, level: d.level }))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let Ok(metas) = metas else { return Mode::Dp };
        let (subject, now) = (caller.subject(), now_unix());
        STRICTEST_FIRST
            .into_iter()
            .find(|&mode| self.policy.decide(&subject, &metas, mode, now).allowed)
            .unwrap_or(Mode::Dp)
    }

    /// Decides and runs a query, noting in `entry` the datasets it uses as they are resolved.
    async fn decide_and_run(&self, caller: &Caller, request: Request, entry: &mut Entry) -> Result<Done, Error> {
        let mode: Mode = request
            .mode
            .parse()
            .map_err(|e: veil_common::mode::UnknownMode| Error::invalid("unknown_mode", e.to_string()))?;
        let parsed = veil_query::parse(&request.sql, self.limits().max_sql_bytes)?;
        if parsed.tables().is_empty() {
            return Err(Error::invalid("no_dataset", "the query reads no dataset; name one as department.dataset"));
        }
        if parsed.tables().iter().any(|(schema, _)| schema == AUDIT_SCHEMA) {
            return self.audit_query(caller, &parsed, request.dry_run, entry).await;
        }
        if mode == Mode::Deidentified {
            return self.extract_query(caller, &parsed, request.dry_run, entry).await;
        }
        let refs = dataset_refs(&parsed)?;
        let user = caller.principal.user.clone();
        let now = now_unix();
        let (found, grants) = self
            .blocking(move |c| {
                let mut found = Vec::new();
                for r in &refs {
                    let info = c.dataset(r)?;
                    if info.retired_at.is_some() {
                        return Err(veil_catalog::Error::DatasetNotFound(r.clone()));
                    }
                    found.push((info, c.current_file(r)?));
                }
                let grants = c.active_grants(now)?.into_iter().filter(|g| g.user == user).collect::<Vec<_>>();
                Ok((found, grants))
            })
            .await?;
        entry.datasets = found
            .iter()
            .map(|(d, _)| DatasetUse { dataset: d.dataset.to_string(), level: Some(d.level.to_string()) })
            .collect();
        let metas: Vec<DatasetMeta> =
            found.iter().map(|(d, _)| DatasetMeta { dataset: d.dataset.clone(), level: d.level }).collect();
        let decision = self.policy.decide(&caller.subject(), &metas, mode, now);
        if let Some(denied) = decision.first_denial() {
            return Err(Error::new(
                ErrorKind::Forbidden,
                denied.rule,
                format!("{}: {}", denied.dataset, denied.reason),
            ));
        }
        let k =
            decision.level.min_group_size().ok_or_else(|| Error::forbidden("core data never leaves its department"))?;

        // The audit record says on what basis each dataset was used: a policy line, or an access
        // request with its purpose (PIPL purpose limitation), so an auditor sees why as well as who.
        let mut basis = Vec::with_capacity(decision.checks.len());
        for check in &decision.checks {
            let grant = grants.iter().find(|g| g.dataset == check.dataset && g.mode == mode);
            basis.push(match grant {
                Some(g) => format!("{}: access request {} for \"{}\"", check.dataset, g.id, g.purpose),
                None => format!("{}: {}", check.dataset, check.reason),
            });
        }
        // Exact aggregates of data about people only for the department's own analysts, where a
        // policy line names them (design §2); everyone else gets anonymized answers.
        let exact_aggregates = mode == Mode::Aggregate && self.policy.exact_aggregates(&caller.subject(), &metas, now);
        if exact_aggregates {
            basis.push(EXACT_BASIS.to_owned());
        }
        entry.detail = Some(basis.join("; "));
        let caps: Vec<DatasetCap> = found.iter().map(|(d, _)| DatasetCap::of(d)).collect();
        let dp = match mode {
            Mode::Dp => {
                Some(budget::params(request.epsilon, request.rho, request.noise, request.accuracy.is_some(), &caps)?)
            }
            // Noise parameters outside dp mode were accepted and ignored: an analyst could
            // believe an answer carried them.
            _ if request.epsilon.is_some()
                || request.rho.is_some()
                || request.noise.is_some()
                || request.accuracy.is_some() =>
            {
                return Err(Error::invalid(
                    "epsilon_invalid",
                    format!("epsilon, rho, noise and accuracy are dp mode's; {} mode takes none", mode.as_str()),
                ));
            }
            _ => None,
        };
        let noise_key = self.catalog.pseudonym_key(&noise_scope(&found));
        let query = QueryRequest {
            mode,
            k,
            datasets: found.into_iter().map(|(info, path)| session_dataset(info, path)).collect(),
            dry_run: request.dry_run,
            dp,
            noise_key,
            exact_aggregates,
        };
        let mut prepared = self.engine.prepare(&parsed, query).await?;
        let mut dp = dp;
        if let (Some(accuracy), Some(placeholder)) = (&request.accuracy, dp) {
            let params = budget::for_accuracy(&prepared, accuracy, placeholder)?;
            prepared = prepared.with_dp_params(params);
            dp = Some(params);
        }
        let (answer, budget) = match dp {
            Some(params) => {
                let (answer, budget) = self.run_dp(caller, prepared, params, caps, entry).await?;
                (answer, Some(budget))
            }
            None => (self.engine.execute(prepared).await?, None),
        };
        let mut policy: Vec<Rule> = decision
            .checks
            .iter()
            .map(|c| Rule { code: c.rule.to_owned(), detail: format!("{}: {}", c.dataset, c.reason) })
            .collect();
        if exact_aggregates {
            policy.push(Rule { code: "exact_aggregates".into(), detail: EXACT_BASIS.into() });
        }
        Ok(Done { answer, level: decision.level.as_str().to_owned(), k, policy, budget })
    }

    /// A query over `audit.events`, the audit log as a table: auditors only, every record as
    /// recorded (the log holds no value read from a dataset), not combined with datasets. For
    /// anyone else the table does not exist, like any dataset they may not use.
    async fn audit_query(
        &self,
        caller: &Caller,
        parsed: &ParsedQuery,
        dry_run: bool,
        entry: &mut Entry,
    ) -> Result<Done, Error> {
        entry.action = "audit.query".into();
        entry.mode = None;
        entry.datasets = vec![DatasetUse { dataset: AUDIT_TABLE.into(), level: None }];
        let auditor = self.policy.authorize(&caller.subject(), &Action::ReadAudit).is_ok();
        for (schema, name) in parsed.tables() {
            let events = schema == AUDIT_SCHEMA && name == "events";
            if auditor && !events {
                // An auditor was told "unknown dataset" for a dataset that exists.
                return Err(Error::invalid(
                    "audit_query_alone",
                    format!(
                        "{AUDIT_TABLE} is queried on its own: it cannot be joined with `{schema}.{name}` or any dataset; \
                         query the dataset in its own request"
                    ),
                ));
            }
            if !events || !auditor {
                return Err(veil_query::Error::UnknownDataset(format!("{schema}.{name}")).into());
            }
        }
        let page = self.audit_records(Filter::default(), usize::MAX).await?;
        let through = page.records.last().map_or(0, |r| r.record.seq);
        let batch = veil_audit::to_batch(&page.records).map_err(Error::internal)?;
        let answer = self
            .engine
            .run_unguarded(parsed, vec![(AUDIT_SCHEMA.to_owned(), "events".to_owned(), batch)], dry_run)
            .await?;
        let policy = vec![Rule {
            code: "auditor_reads_audit_log".into(),
            detail: format!("{AUDIT_TABLE}: every record up to seq {through}, as recorded, for auditors only"),
        }];
        Ok(Done { answer, level: AUDIT_SCHEMA.to_owned(), k: 0, policy, budget: None })
    }

    /// Matching audit records, read up to the log's durable head (later bytes may be mid-write).
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn audit_records(&self, filter: Filter, limit: usize) -> Result<veil_audit::Page, Error> {
        let dir = self.audit.dir().to_path_buf();
        let until = self.audit.durable_seq();
        tokio::task::spawn_blocking(move || veil_audit::search(&dir, &filter, limit, Some(until)))
            .await
            .map_err(|e| Error::internal(format!("audit task failed: {e}")))?
            .map_err(Error::from)
    }
}

/// The datasets a query names, as references; a name that cannot be a dataset's is an
/// unknown dataset.
fn dataset_refs(parsed: &ParsedQuery) -> Result<Vec<DatasetRef>, veil_query::Error> {
    parsed
        .tables()
        .iter()
        .map(|(department, name)| {
            let unknown = || veil_query::Error::UnknownDataset(format!("{department}.{name}"));
            let department = DepartmentId::new(department.clone()).map_err(|_| unknown())?;
            let name = DatasetName::new(name.clone()).map_err(|_| unknown())?;
            Ok(DatasetRef { department, name })
        })
        .collect()
}

/// The SQL as typed, for the record; text beyond what any query may be long is cut (its hash
/// covers the whole text), so an over-long refusal cannot flood the log.
fn recorded_sql(sql: &str, max_bytes: usize) -> String {
    if sql.len() <= max_bytes {
        return sql.to_owned();
    }
    let mut end = max_bytes;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut at {end} of {} bytes]", &sql[..end], sql.len())
}

/// The scope of the key an anonymized answer's sticky noise is seeded under
/// ([`veil_catalog::Catalog::pseudonym_key`]): the versions of the datasets the query reads,
/// the same for every analyst (a user id never holds NUL), or colluding analysts could average
/// the noise. Sticky within a version (the same group asked any way gets the same answer),
/// fresh across versions and datasets: a red team compared a group's answer over two versions,
/// and over two datasets of the same columns, and an unchanged group answered identically, bit
/// for bit, so an answer that changed said the planted person was in it, and a sum's change
/// gave their exact change in value.
///
/// Only datasets about people are in it: a table about nobody changes whom a group holds
/// through what the query joins, which its people and labels already say, and with each set
/// of tables joined its own scope, every layer was drawn afresh per set: six code tables of two
/// rows joined in all 64 subsets gave 128 draws of one group's count, whose mean told the
/// target's membership 50 of 50 (a red team, 2026-12-06). The same set of tables also drew
/// every decision afresh (whether a condition that removes almost nobody is left out): a
/// condition removing the target alone, kept one time in 25, was kept in one of 63 sets of
/// joins exactly where the target was there (47 of 50). Each set of datasets *about people* is
/// still a draw of its own: a department's registers of the same people each add one.
fn noise_scope(datasets: &[(DatasetInfo, std::path::PathBuf)]) -> String {
    let about_people = datasets.iter().filter(|(d, _)| d.privacy_unit.is_some());
    let mut read: Vec<String> = about_people.map(|(d, _)| format!("{}@{}", d.dataset, d.current_version)).collect();
    read.sort();
    read.dedup();
    format!("\0anonymized aggregation\n{}", read.join("\n"))
}

/// The catalogue's view of a dataset, as the guard and the engine need it.
fn session_dataset(info: DatasetInfo, path: std::path::PathBuf) -> SessionDataset {
    let columns = info
        .columns
        .iter()
        .map(|c| {
            let column = veil_guard::ColumnInfo {
                tag: c.tag,
                linkable: c.linkable, // registration allows it only on identifiers
                generalize: c.generalize,
                bounds: c.bounds,
                public_values: c.public_values.clone(),
            };
            (c.name.clone(), column)
        })
        .collect();
    let (capped, capped_copy) = match info.capped {
        CappedRows::Unmeasured => (veil_guard::CapAt::Query, None),
        CappedRows::Within => (veil_guard::CapAt::Within, None),
        CappedRows::Copy(path, rows) => (veil_guard::CapAt::Stored, Some((path, rows))),
    };
    SessionDataset {
        dataset: info.dataset,
        path,
        rows: info.row_count,
        info: veil_guard::DatasetInfo {
            privacy_unit: info.privacy_unit,
            columns,
            contribution: veil_guard::Contribution { max_groups: info.dp.max_groups, max_rows: info.dp.max_rows },
            one_row_per_unit: info.one_row_per_unit,
            rows: info.row_count,
            capped,
            unique: info.columns.iter().filter(|c| c.unique).map(|c| c.name.clone()).collect(),
        },
        capped_copy,
    }
}
