//! One query, end to end: a session that holds only the datasets the caller may use, planning,
//! the guard (as an analyzer rule), execution under a memory pool and a deadline, and the
//! post-processing of the answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::MemTable;
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions, execute_stream};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use ring::digest;
use veil_common::Mode;
use veil_guard::{CapAt, CappedCopies, DP_ROW, GuardContext, GuardOutcome, PrivacyGuardRule};

use crate::dp::{self, DpParams};
use crate::drain::{Drains, drained};
use crate::error::{clean, error_kind, internal, is_resource_limit, optimizing, planning};
use crate::memory::{Reserved, Unreserved};
use crate::plan_cache::{GuardedPlan, PlanCache, reads_clock_or_chance};
use crate::probe::probing;
use crate::release::{noisy_outputs, noisy_source};
use crate::request::{Answer, DpReport, Limits, QueryRequest, SessionDataset};
use crate::tables::{TableKey, Tables, in_memory, parquet_table, register};
use crate::{Error, ParsedQuery, Result};

/// A query planned and guarded, ready to run: the dp path decides about the budget between
/// [`QueryEngine::prepare`] and [`QueryEngine::execute`].
#[derive(Debug)]
pub struct Prepared {
    pub(crate) state: SessionState,
    pub(crate) plan: LogicalPlan,
    pub(crate) optimized: LogicalPlan,
    pub(crate) outcome: GuardOutcome,
    pub(crate) request: QueryRequest,
    /// Dp mode: the physical plan of `optimized`, once made, shared with the plan cache.
    pub(crate) physical: Arc<OnceLock<Arc<dyn ExecutionPlan>>>,
}

impl Prepared {
    /// Whether the query is only to be decided, not run.
    pub fn dry_run(&self) -> bool {
        self.request.dry_run
    }

    /// Dp mode: each output column of the answer that is one of its noisy aggregates, by name,
    /// with that aggregate, and the bounds one person's contribution has: what an accuracy
    /// asked for per column is computed from, before the query runs.
    ///
    /// # Errors
    /// [`Error::Internal`] if the analyst's plan cannot be rebuilt over the aggregate.
    pub fn dp_outputs(&self) -> Result<Vec<(String, veil_guard::DpAggregate)>> {
        let Some(dp) = self.outcome.rewritten.dp.as_ref() else { return Ok(Vec::new()) };
        let mut fields: Vec<Field> = dp
            .aggregate_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect();
        fields.push(Field::new(DP_ROW, DataType::Int64, false));
        let empty = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
        let (_, copies) = dp.finish(noisy_source(dp, empty)?).map_err(internal)?;
        Ok(noisy_outputs(&self.plan, dp, &copies))
    }

    /// Dp mode: the least ε (discrete Laplace noise) or ρ (discrete Gaussian noise) that gives
    /// each named noisy count or sum column of the answer a 95% interval no wider than asked.
    ///
    /// # Errors
    /// [`Error::Sql`] `accuracy_invalid` when that cannot be promised (an average, an unknown
    /// column); [`Error::Internal`] for a query that is not a dp one.
    pub fn budget_for_accuracy(&self, accuracy: &[(String, f64)], noise: veil_dp::Noise) -> Result<f64> {
        let Some(dp) = self.outcome.rewritten.dp.as_ref() else {
            return Err(internal("accuracy for a query that is not a dp one"));
        };
        dp::budget_for_accuracy(dp, &self.dp_outputs()?, accuracy, noise)
    }

    /// Dp mode: the same query with other privacy parameters (what an accuracy asked for
    /// costs, known only once the query is planned).
    #[must_use]
    pub fn with_dp_params(mut self, params: DpParams) -> Self {
        self.request.dp = Some(params);
        self
    }

    /// Dp mode: the δ the answer spends, its group selection's (none without a threshold: an
    /// answer with one group, or with every group public, releases the same groups whoever is
    /// in the data).
    pub fn selection_delta(&self) -> Option<f64> {
        let params = self.request.dp?;
        let dp = self.outcome.rewritten.dp.as_ref()?;
        Some(if dp.thresholded() { params.delta } else { 0.0 })
    }

    /// Dp mode: the identity of the noisy answer, hex SHA-256 of the optimized bounded plan (so
    /// syntax variants and post-processing do not change it), the dataset versions and the
    /// privacy parameters. Two queries with the same key get the same recorded answer.
    pub fn dp_key(&self) -> Option<String> {
        let params = self.request.dp?;
        let dp = self.outcome.rewritten.dp.as_ref()?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.optimized.display_indent().to_string().as_bytes());
        // Two answers of different shapes can optimize to one bounded plan (with max_rows 1,
        // COUNT(*) is the people count): the measured aggregate's columns, aggregates and key
        // domains are part of the key, so a replay always has the shape the query expects.
        let fields: Vec<String> =
            dp.aggregate_schema.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
        ctx.update(
            format!(
                "\naggregate={} keys={} measures={:?} public={:?} bounds={:?}",
                fields.join(","),
                dp.keys,
                dp.aggregates,
                dp.public_keys,
                dp.contribution
            )
            .as_bytes(),
        );
        for d in &self.request.datasets {
            ctx.update(format!("\n{}={}", d.dataset, d.path.display()).as_bytes());
        }
        ctx.update(
            format!(
                "\nnoise={:?} budget={:?} delta={:?} k={}",
                params.noise, params.budget, params.delta, self.request.k
            )
            .as_bytes(),
        );
        Some(veil_common::hex::encode(ctx.finish().as_ref()))
    }
}

/// Inputs smaller than about this (rows, all datasets of a query) run on one partition: there,
/// planning and starting parallel operators cost more than they save (on the dp bench's 1,000
/// rows, one partition takes a fifth off each query). The line lies between half and one and a
/// half times this, drawn when the engine starts (`QueryEngine::line_drawn`): at a fixed line,
/// one person's rows could move twin datasets to either side of it, and the time of a query
/// tell which (as the line for keeping a table in memory did, `tables::in_memory`).
const SMALL_INPUT_ROWS: u64 = 256 * 1024;

/// Runs guarded queries. One per server; cheap to share.
#[derive(Debug)]
pub struct QueryEngine {
    limits: Limits,
    runtime: Arc<RuntimeEnv>,
    /// Places for running queries, as many as their pools fit in the process's memory.
    admission: crate::memory::Admission,
    /// Configuration and function registries every request's session starts from; built once,
    /// because registering DataFusion's functions is most of the cost of a new session.
    base: SessionState,
    /// Guarded dp plans by SQL text and request.
    plans: Mutex<PlanCache>,
    /// Each dataset's table provider, for the file of the version last queried: versions are
    /// immutable files, so a provider is current as long as its file is.
    tables: Mutex<Tables>,
    /// Spills of every query run, for the metrics.
    spills: Spills,
    /// Where the line of [`SMALL_INPUT_ROWS`] lies for this engine, drawn when it starts.
    line_drawn: u64,
}

/// Spills summed over the operators of every query run.
#[derive(Debug, Default)]
struct Spills {
    count: AtomicU64,
    bytes: AtomicU64,
}

impl Spills {
    /// Adds what the operators of `plan` spilled.
    fn count(&self, plan: &Arc<dyn ExecutionPlan>) {
        if let Some(metrics) = plan.metrics() {
            self.count.fetch_add(metrics.spill_count().unwrap_or(0) as u64, Ordering::Relaxed);
            self.bytes.fetch_add(metrics.spilled_bytes().unwrap_or(0) as u64, Ordering::Relaxed);
        }
        for child in plan.children() {
            self.count(child);
        }
    }
}

impl QueryEngine {
    /// An engine with `limits`, spilling under `spill_dir`.
    ///
    /// # Errors
    /// [`Error::Internal`] if the runtime cannot be built.
    pub fn new(limits: Limits, spill_dir: &Path) -> Result<Self> {
        let disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![spill_dir.to_path_buf()]))
            .with_max_temp_directory_size(limits.spill_bytes);
        let runtime = RuntimeEnvBuilder::new().with_disk_manager_builder(disk).build_arc().map_err(internal)?;
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(limits.target_partitions)
            .set_bool("datafusion.execution.enable_recursive_ctes", false)
            // Each sort keeps this much back for merging what it spilled (10 MiB by default):
            // a sixteenth of the pool at most, so that several sorts can spill in a small one.
            .set_usize("datafusion.execution.sort_spill_reservation_bytes", (limits.memory_bytes / 16).min(10 << 20));
        let base = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .with_table_functions(HashMap::new())
            .build();
        Ok(Self {
            admission: crate::memory::Admission::new(limits.memory_bytes, limits.total_memory_bytes),
            limits,
            runtime,
            base,
            plans: Mutex::new(PlanCache::default()),
            tables: Mutex::new(Tables::default()),
            spills: Spills::default(),
            line_drawn: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8),
        })
    }

    /// The limits queries run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reserves room in the memory queries share for other work expected to hold about
    /// `bytes` (a registration's ingest, an extract's build), waiting for it at most as long as
    /// a query may run; the room is held while the returned value lives.
    ///
    /// # Errors
    /// [`Unreserved::TooLarge`] beyond the whole budget; [`Unreserved::Busy`] if no room came
    /// free in time.
    pub async fn reserve_memory(&self, bytes: u64) -> std::result::Result<Reserved, Unreserved> {
        self.admission.reserve(bytes, self.limits.deadline).await
    }

    /// Plans, guards and (unless a dry run) runs `query`.
    ///
    /// # Errors
    /// See [`Error`]: a refusal names the rule and column; a failure while running is generic.
    pub async fn run(&self, query: &ParsedQuery, request: QueryRequest) -> Result<Answer> {
        let prepared = self.prepare(query, request).await?;
        self.execute(prepared).await
    }

    /// Plans and guards `query` without running it.
    ///
    /// # Errors
    /// See [`Error`]: a refusal names the rule and column.
    pub async fn prepare(&self, query: &ParsedQuery, request: QueryRequest) -> Result<Prepared> {
        if request.mode == Mode::Dp {
            let cached = self.plans.lock().map_err(internal)?.get(&query.sql, &request);
            if let Some(GuardedPlan { plan, optimized, outcome, physical }) = cached {
                let (mut state, _) = self.session(None, request.input_rows());
                data_independent(&mut state, &request);
                return Ok(Prepared { state, plan, optimized, outcome, request, physical });
            }
        }
        // The stored copies capping each person's rows, opened before the guard that reads them
        // (the guard is part of the session the tables are registered in).
        let mut capped_copies = CappedCopies::default();
        for d in &request.datasets {
            if let (CapAt::Stored, Some((path, rows))) = (d.info.capped, &d.capped_copy) {
                let copy = self.table_of((d.dataset.clone(), true), path, *rows, true, &self.base).await?;
                let copy = crate::exact::as_read(copy, &request, d).map_err(internal)?;
                let key = (d.dataset.department.to_string(), d.dataset.name.to_string());
                capped_copies.0.insert(key, provider_as_source(copy));
            }
        }
        let ctx = GuardContext {
            mode: request.mode,
            k: request.k,
            datasets: request
                .datasets
                .iter()
                .map(|d| ((d.dataset.department.to_string(), d.dataset.name.to_string()), d.info.clone()))
                .collect(),
            exact_aggregates: request.exact_aggregates,
            capped_copies,
        };
        let guard = Arc::new(PrivacyGuardRule::new(ctx));
        let (mut state, catalog) = self.session(Some(&guard), request.input_rows());
        data_independent(&mut state, &request);
        for d in &request.datasets {
            let table = crate::exact::as_read(self.table(d, &state).await?, &request, d).map_err(internal)?;
            register(&catalog, d.dataset.department.as_str(), d.dataset.name.as_str(), table)?;
        }

        let plan = self.plan(&state, query.statement.clone()).await?;
        let optimized = state.optimize(&plan).map_err(optimizing)?;
        let outcome = guard.outcome().ok_or_else(|| internal("the privacy guard did not run"))?;
        if request.mode == Mode::Dp && (request.dp.is_none() || outcome.rewritten.dp.is_none()) {
            return Err(internal("a dp query without its privacy parameters or bounded plan"));
        }
        let physical = Arc::new(OnceLock::new());
        if request.mode == Mode::Dp && !reads_clock_or_chance(&plan) {
            let guarded = GuardedPlan {
                plan: plan.clone(),
                optimized: optimized.clone(),
                outcome: outcome.clone(),
                physical: Arc::clone(&physical),
            };
            self.plans.lock().map_err(internal)?.put(&query.sql, &request, guarded);
        }
        Ok(Prepared { state, plan, optimized, outcome, request, physical })
    }

    /// Runs a prepared query (unless it is a dry run). In dp mode it measures and releases a
    /// fresh noisy answer; the budget is the caller's (see [`QueryEngine::measure`]).
    ///
    /// # Errors
    /// See [`Error`]: a failure while running is generic.
    pub async fn execute(&self, prepared: Prepared) -> Result<Answer> {
        let personal = prepared.request.over_personal_data();
        self.execute_prepared(prepared).await.map_err(|e| e.told(personal))
    }

    async fn execute_prepared(&self, prepared: Prepared) -> Result<Answer> {
        if prepared.outcome.rewritten.anonymized.is_some() && !prepared.request.dry_run {
            return self.anonymized(prepared).await;
        }
        if prepared.outcome.rewritten.dp.is_some() && !prepared.request.dry_run {
            let noisy = self.measure(&prepared).await?;
            return self.release(prepared, noisy, false).await;
        }
        let half_widths = self.half_widths(&prepared)?;
        let Prepared { state, plan, optimized, outcome, request, .. } = prepared;
        let mut answer = self.answer(&state, &plan, &optimized, request.dry_run, false).await?;
        answer.rules = outcome.assessment.rules.clone();
        answer.suppressed_groups = outcome.rewritten.suppressed_groups.load(Ordering::Relaxed);
        if let (Some(dp), Some(params)) = (&outcome.rewritten.dp, request.dp) {
            let mut report = DpReport::new(dp, params, false);
            // A dry run: the threshold and the counts' and sums' intervals depend on the noise,
            // δ and k only.
            report.threshold = dp::threshold(dp, params, request.k)?;
            report.released_from = dp::released_from(dp, params, request.k)?;
            report.half_widths = half_widths;
            answer.dp = Some(report);
            return Ok(answer);
        }
        Ok(answer)
    }

    /// Runs `query` over in-memory `tables` (schema, name, rows) with no privacy guard: for
    /// tables that hold no personal data and whose readers may see every row, such as the audit
    /// log for auditors. The same SQL surface (one read-only query, no file access, the
    /// allow-listed functions) and limits apply.
    ///
    /// # Errors
    /// As [`QueryEngine::run`], without the guard's refusals.
    pub async fn run_unguarded(
        &self,
        query: &ParsedQuery,
        tables: Vec<(String, String, RecordBatch)>,
        dry_run: bool,
    ) -> Result<Answer> {
        let rows = tables.iter().map(|(_, _, b)| b.num_rows() as u64).sum();
        let (state, catalog) = self.session(None, rows);
        for (schema, name, batch) in tables {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
            register(&catalog, &schema, &name, Arc::new(table))?;
        }
        self.run_registered(&state, query, dry_run, Registered::Unguarded).await
    }

    /// Runs `query` over Parquet `files` (schema, name, path, rows) with no privacy guard: for files
    /// whose every row may be released to the caller, such as an approved de-identified extract.
    /// The same SQL surface (one read-only query, the allow-listed functions) and limits apply, except that an
    /// answer longer than the row limit is cut at the limit (the caller pages with `LIMIT`/`OFFSET`)
    /// rather than refused.
    ///
    /// # Errors
    /// As [`QueryEngine::run`], without the guard's refusals.
    pub async fn run_over_files(
        &self,
        query: &ParsedQuery,
        files: Vec<(String, String, std::path::PathBuf, u64)>,
        dry_run: bool,
    ) -> Result<Answer> {
        let (state, catalog) = self.session(None, files.iter().map(|f| f.3).sum());
        for (schema, name, path, _) in files {
            register(&catalog, &schema, &name, parquet_table(&path, &state, false).await?)?;
        }
        self.run_registered(&state, query, dry_run, Registered::Released).await
    }

    /// Plans and runs `query` over the tables registered in `state`, unguarded but for the
    /// guard's allow-listed functions, as in every mode, as `tables` says.
    async fn run_registered(
        &self,
        state: &SessionState,
        query: &ParsedQuery,
        dry_run: bool,
        tables: Registered,
    ) -> Result<Answer> {
        let mut plan = self.plan(state, query.statement.clone()).await?;
        veil_guard::check_functions(&plan).map_err(Error::Denied)?;
        if tables == Registered::Released {
            plan = LogicalPlanBuilder::from(plan)
                .limit(0, Some(self.limits.max_result_rows))
                .and_then(LogicalPlanBuilder::build)
                .map_err(planning)?;
        }
        let optimized = state.optimize(&plan).map_err(optimizing)?;
        self.answer(state, &plan, &optimized, dry_run, tables == Registered::Unguarded).await
    }

    /// The answer to an optimized plan: its schema alone for a dry run, else its rows, run
    /// under the deadline (no rules or suppression yet; the caller adds what applies).
    pub(crate) async fn answer(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        optimized: &LogicalPlan,
        dry_run: bool,
        explain: bool,
    ) -> Result<Answer> {
        let mut answer = Answer { executed: false, ..Answer::rows(Arc::clone(plan.schema().inner()), Vec::new()) };
        if dry_run {
            return Ok(answer);
        }
        answer.batches = self.within_deadline(self.collect(state, optimized, explain, None, Rows::Answer)).await?;
        answer.schema =
            answer.batches.first().map(RecordBatch::schema).unwrap_or_else(|| Arc::clone(optimized.schema().inner()));
        answer.executed = true;
        Ok(answer)
    }

    /// Runs `work` under the deadline. The timer is polled first: a query that yields after its
    /// deadline stops there, instead of running on to its next yield (`tokio::time::timeout`
    /// polls the work first).
    pub(crate) async fn within_deadline<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            biased;
            () = tokio::time::sleep(self.limits.deadline) => Err(Error::Timeout { seconds: self.limits.deadline.as_secs() }),
            done = work => done,
        }
    }

    /// A session for one request: the base's configuration and functions, its own guard (if
    /// any), and a catalogue of its own that starts empty (the caller registers the permitted
    /// tables), so nothing one request registers is visible to another. Cloning the base keeps
    /// its function registries as they are; rebuilding a state through `SessionStateBuilder`
    /// would register every function again, which costs more than planning a query. Inputs of
    /// fewer than [`SMALL_INPUT_ROWS`] rows run on one partition.
    pub(crate) fn session(
        &self,
        guard: Option<&Arc<PrivacyGuardRule>>,
        input_rows: u64,
    ) -> (SessionState, Arc<MemoryCatalogProvider>) {
        let mut state = self.base.clone();
        if let Some(guard) = guard {
            state.add_analyzer_rule(Arc::clone(guard) as _);
        }
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        let default_catalog = self.base.config().options().catalog.default_catalog.clone();
        catalogs.register_catalog(default_catalog, Arc::clone(&catalog) as _);
        state.register_catalog_list(catalogs);
        // Fixes `now()` and friends to this query's start, as `SessionContext::sql` does;
        // without it the optimizer cannot fold them and running them fails.
        state.mark_start_execution();
        if input_rows < SMALL_INPUT_ROWS / 2 + self.line_drawn % SMALL_INPUT_ROWS {
            state.config_mut().options_mut().execution.target_partitions = 1;
        }
        (state, catalog)
    }

    /// The context a query runs in: the session's functions and configuration, with a memory
    /// pool of its own, so one query cannot starve the others.
    fn task(&self, state: &SessionState) -> Arc<TaskContext> {
        let mut runtime = (*self.runtime).clone();
        runtime.memory_pool = Arc::new(FairSpillPool::new(self.limits.memory_bytes));
        Arc::new(TaskContext::from(state).with_runtime(Arc::new(runtime)))
    }

    /// The table provider of `dataset`'s current file: a small dataset's rows decoded once and
    /// kept in memory (within [`IN_MEMORY_BYTES`] for all), a larger one read from Parquet
    /// by each query.
    async fn table(&self, dataset: &SessionDataset, state: &SessionState) -> Result<Arc<dyn TableProvider>> {
        let personal = dataset.info.privacy_unit.is_some();
        self.table_of((dataset.dataset.clone(), false), &dataset.path, dataset.rows, personal, state).await
    }

    /// The table provider of the file at `path` of `rows` rows (at most), cached as `key`;
    /// `personal` for a file about people ([`parquet_table`]).
    async fn table_of(
        &self,
        key: TableKey,
        path: &Path,
        rows: u64,
        personal: bool,
        state: &SessionState,
    ) -> Result<Arc<dyn TableProvider>> {
        if let Some(t) = self.tables.lock().map_err(internal)?.get(&key, path) {
            return Ok(t);
        }
        let table = parquet_table(path, state, personal).await?;
        let mut decoded = None;
        if in_memory(path, rows) {
            let plan = LogicalPlanBuilder::scan("t", provider_as_source(Arc::clone(&table)), None)
                .and_then(|b| b.build())
                .map_err(internal)?;
            let batches = self.collect(state, &plan, false, None, Rows::Table).await?;
            let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            let memory: Arc<dyn TableProvider> =
                Arc::new(MemTable::try_new(table.schema(), vec![batches]).map_err(internal)?);
            decoded = Some((memory, bytes));
        }
        Ok(self.tables.lock().map_err(internal)?.put(key, path.to_path_buf(), table, decoded))
    }

    async fn plan(&self, state: &SessionState, statement: DfStatement) -> Result<LogicalPlan> {
        let plan = state.statement_to_plan(statement).await.map_err(planning)?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::sql("sql_not_read_only", clean(&e)))?;
        Ok(plan)
    }

    /// Runs a plan, its rows bounded as `rows` says. With `explain`, a failure says why (only
    /// for tables without personal data).
    ///
    /// DataFusion's hash join holds its whole build side in memory and cannot spill. When a
    /// plan with one runs out of memory, it runs once more with sort-merge joins, whose sorts
    /// spill under the pool: the same answer, slower, instead of a refusal.
    ///
    /// With `kept`, the physical plan it holds runs again with fresh operators (as DataFusion
    /// re-runs a plan, over the same immutable inputs); if it holds none, the one made here is
    /// kept there when it can run again ([`rerunnable`]): a repeated dp query skips physical
    /// planning.
    pub(crate) async fn collect(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        explain: bool,
        kept: Option<&OnceLock<Arc<dyn ExecutionPlan>>>,
        rows: Rows,
    ) -> Result<Vec<RecordBatch>> {
        let physical = match kept.and_then(OnceLock::get) {
            Some(physical) => reset_plan_states(Arc::clone(physical)).map_err(internal)?,
            None => {
                let physical = state.query_planner().create_physical_plan(plan, state).await.map_err(planning)?;
                if let Some(kept) = kept
                    && rerunnable(&physical)
                {
                    let _ = kept.set(Arc::clone(&physical));
                }
                physical
            }
        };
        match self.collect_physical(state, Arc::clone(&physical), rows).await {
            Err(Stop::Failed(e)) if is_resource_limit(&e) && has_hash_join(&physical) => {
                tracing::debug!("a hash join ran out of memory; running again with sort-merge joins");
                let mut state = state.clone();
                state.config_mut().options_mut().optimizer.prefer_hash_join = false;
                let physical = state.query_planner().create_physical_plan(plan, &state).await.map_err(planning)?;
                self.collect_physical(&state, physical, rows).await
            }
            other => other,
        }
        .map_err(|stop| match stop {
            Stop::TooLarge => Error::ResultTooLarge { limit: self.limits.max_result_rows },
            Stop::Failed(e) if explain && !is_resource_limit(&e) => Error::FailedUnguarded(clean(&e)),
            Stop::Failed(e) => self.runtime_error(e),
        })
    }

    /// One run of a physical plan, every operator yielding, its rows bounded as `rows` says.
    async fn collect_physical(
        &self,
        state: &SessionState,
        physical: Arc<dyn ExecutionPlan>,
        rows: Rows,
    ) -> std::result::Result<Vec<RecordBatch>, Stop> {
        let drains = Arc::new(Drains::default());
        let physical = match rows {
            Rows::Measurements => drained(probing(physical).map_err(Stop::Failed)?, &drains).map_err(Stop::Failed)?,
            Rows::Answer | Rows::Table => physical,
        };
        let physical = yielding(physical).map_err(Stop::Failed)?;
        // A place among the queries running now (waiting counts towards the deadline).
        let _place = self.admission.enter().await;
        let task = self.task(state);
        let held = MemoryConsumer::new("measurements").register(task.memory_pool());
        let root = Arc::clone(&physical);
        let run = async {
            let mut stream = execute_stream(physical, task).map_err(Stop::Failed)?;
            let mut batches = Vec::new();
            let mut count = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(Stop::Failed)?;
                count += batch.num_rows();
                match rows {
                    Rows::Answer if count > self.limits.max_result_rows => return Err(Stop::TooLarge),
                    // The bytes of the batch's own rows: an aggregate emits slices of one large
                    // output, and each slice's whole-buffer size counted that output once per
                    // slice (a census of 1.5 million rows ran a 1 GiB pool out).
                    Rows::Measurements => held.try_grow(slice_size(&batch)).map_err(Stop::Failed)?,
                    Rows::Answer | Rows::Table => {}
                }
                batches.push(batch);
            }
            // What a join skipped because one side was empty is read all the same.
            drains.finish().await;
            Ok(batches)
        };
        let result = run.await;
        self.spills.count(&root);
        result
    }

    /// How often and how much the operators of finished queries spilled to disk, since start.
    pub fn spills(&self) -> (u64, u64) {
        (self.spills.count.load(Ordering::Relaxed), self.spills.bytes.load(Ordering::Relaxed))
    }

    /// A failure while running. Only resource exhaustion is named; every other cause gets the
    /// same generic error, and its detail goes to the debug log only as its kind.
    fn runtime_error(&self, e: DataFusionError) -> Error {
        if is_resource_limit(&e) {
            return Error::MemoryExceeded { limit_mb: self.limits.memory_bytes >> 20 };
        }
        let kind = error_kind(&e);
        tracing::debug!(kind, "query failed while running");
        Error::Failed { kind }
    }
}

/// What the tables a query runs over without the guard are ([`QueryEngine::run_registered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registered {
    /// Without personal data (the audit log, for auditors): a failure says why.
    Unguarded,
    /// Rows that may all be released to the caller (approved extracts): the answer stops at the
    /// row limit instead of being refused past it, and a failure is told without its cause,
    /// which would quote a value (`Cannot cast string '…'`, a red team).
    Released,
}

/// What bounds the rows one run collects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows {
    /// An answer: at most the row limit, else `result_too_large`.
    Answer,
    /// Measurements of groups before the noisy threshold (anonymized and dp): as many as the
    /// query's memory pool holds, and every input of a join read to its end ([`drained`]).
    /// Their number is no answer, and the row limit on it told, by `result_too_large` or not,
    /// whether groups numbered more than the limit, exactly: a filter tuned to the limit then
    /// said whether one person was alone in their group.
    Measurements,
    /// A small table's rows, decoded once (bounded by [`crate::tables::in_memory`]).
    Table,
}

/// The memory the rows of `batch` take, counting for each column only its slice of its
/// buffers.
fn slice_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
        .sum()
}

/// Why one run of a physical plan stopped short.
enum Stop {
    /// The answer passed the row limit.
    TooLarge,
    /// DataFusion failed (memory, spill space, or anything else).
    Failed(DataFusionError),
}

/// Whether a physical plan can run again after [`reset_plan_states`]: only scans, projections,
/// filters, aggregates and the operators that move batches between partitions, none producing a
/// dynamic filter (DataFusion's own limits for re-running a plan: no dynamic filters, no
/// recursion); joins, sorts and windows are planned afresh each time.
fn rerunnable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let stateless = |node: &Arc<dyn ExecutionPlan>| {
        let known = matches!(
            node.name(),
            "DataSourceExec"
                | "ProjectionExec"
                | "FilterExec"
                | "AggregateExec"
                | "CoalesceBatchesExec"
                | "CoalescePartitionsExec"
                | "RepartitionExec"
                | "CooperativeExec"
        );
        known && node.dynamic_expressions_produced().is_empty()
    };
    !plan.exists(|node| Ok(!stateless(node))).unwrap_or(true)
}

/// Over data about people, no work skipped by what the data holds: no dynamic filters (a
/// join's build side narrowing its probe side's scan) and no Parquet pruning by statistics,
/// page indexes or bloom filters, which compare the query's constants with the values stored.
/// Either made a query's time tell whether a row matching its constants exists.
fn data_independent(state: &mut SessionState, request: &QueryRequest) {
    if !request.over_personal_data() {
        return;
    }
    let options = state.config_mut().options_mut();
    options.optimizer.enable_dynamic_filter_pushdown = false;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.optimizer.enable_topk_dynamic_filter_pushdown = false;
    options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    options.execution.parquet.pruning = false;
    options.execution.parquet.enable_page_index = false;
    options.execution.parquet.bloom_filter_on_read = false;
    // No file statistics: a file whose statistics exclude a filter is skipped whole, whatever
    // the format's options (`tables::parquet_table` turns off the rest).
    options.execution.collect_statistics = false;
}

/// Whether `plan` holds a hash join.
fn has_hash_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| Ok(node.is::<HashJoinExec>())).unwrap_or(false)
}

/// `plan` with every operator's output taking part in the runtime's cooperative budget.
///
/// DataFusion yields to the runtime only where a scan hands over a batch (its
/// `EnsureCooperative` rule wraps the leaves). A join that turns a few input batches into
/// millions of rows then runs within one poll, and the deadline's timer, polled on the same
/// task, never gets its turn. Wrapped at every edge, a query yields after about a hundred
/// batches wherever they are produced, so the deadline cancels it.
fn yielding(plan: Arc<dyn ExecutionPlan>) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    fn wrap(node: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        match node.is::<CooperativeExec>() {
            true => Arc::clone(node),
            false => Arc::new(CooperativeExec::new(Arc::clone(node))),
        }
    }
    let keep = || ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
    let plan = plan
        .transform_up(|node| {
            if node.children().is_empty() || node.is::<CooperativeExec>() {
                return Ok(Transformed::no(node));
            }
            let children = node.children().into_iter().map(wrap).collect();
            node.replace_children(children, keep()).map(Transformed::yes)
        })?
        .data;
    Ok(wrap(&plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noisy_scan;
    use datafusion::prelude::{col, lit};

    /// A slice of a large batch counts its own rows, not the whole buffer it shares: a census
    /// emitted as 183 slices of one 1.5-million-row output counted it 183 times.
    #[test]
    fn a_slice_counts_its_own_rows() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let whole = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..100_000))]).unwrap();
        let slice = whole.slice(0, 1_000);
        assert_eq!(slice_size(&slice), 8_000);
        assert!(slice.get_array_memory_size() >= 800_000, "the whole buffer, as counted before");
    }

    #[tokio::test]
    async fn scans_filters_and_aggregates_run_again_after_a_reset_and_sorts_do_not() {
        let (_, scan) = noisy_scan();
        let ctx = datafusion::prelude::SessionContext::new();
        let state = ctx.state();
        let grouped = scan
            .clone()
            .filter(col("c1").gt(lit(20)))
            .and_then(|b| b.aggregate([col("c0")], [datafusion::functions_aggregate::expr_fn::sum(col("c1"))]))
            .and_then(|b| b.build())
            .expect("plan");
        let physical = state.create_physical_plan(&grouped).await.expect("physical");
        assert!(rerunnable(&physical), "{}", datafusion::physical_plan::displayable(physical.as_ref()).indent(true));
        let mut runs = Vec::new();
        for _ in 0..3 {
            let fresh = reset_plan_states(Arc::clone(&physical)).expect("reset");
            let batches = datafusion::physical_plan::collect(fresh, ctx.task_ctx()).await.expect("run");
            runs.push(datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("text").to_string());
        }
        assert!(runs[0].contains("甲区") && runs[0].contains("41"), "{}", runs[0]);
        assert!(runs.iter().all(|r| *r == runs[0]), "{runs:?}");

        let sorted = scan.sort([col("c1").sort(false, true)]).and_then(|b| b.limit(0, Some(1))).and_then(|b| b.build());
        let physical = state.create_physical_plan(&sorted.expect("plan")).await.expect("physical");
        assert!(!rerunnable(&physical), "a top-k sort keeps a dynamic filter");
    }
}
