//! One query, end to end: a session that holds only the datasets the caller may use, planning,
//! the guard (as an analyzer rule), execution under a memory pool and a deadline, and the
//! post-processing of the answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
    SchemaProvider, TableProvider,
};
use datafusion::common::Column;
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::logical_expr::{LogicalPlan, Volatility};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions, execute_stream};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use ring::digest;
use veil_common::{DatasetRef, Mode};
use veil_guard::{AppliedRule, DP_ROW, DpPlan, GuardContext, GuardOutcome, PrivacyGuardRule, violation};

use crate::anon;
use crate::dp::{self, DpParams, NoisyAggregate};
use crate::{Error, ParsedQuery, Result};

/// Limits every query runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
    /// Memory one query may use before it spills or fails, in bytes.
    pub memory_bytes: usize,
    /// Spill space one query may use, in bytes.
    pub spill_bytes: u64,
    /// How long a query may run.
    pub deadline: Duration,
    /// Most rows an answer may hold.
    pub max_result_rows: usize,
    /// Parallelism of one query.
    pub target_partitions: usize,
}

impl Limits {
    /// Limits for a server on this machine: 1 GiB per query, 30 s, 100,000 rows.
    pub fn standard() -> Self {
        Self {
            max_sql_bytes: 64 * 1024,
            memory_bytes: 1 << 30,
            spill_bytes: 16 << 30,
            deadline: Duration::from_secs(30),
            max_result_rows: 100_000,
            target_partitions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

/// A dataset the caller may use in this query, with its classification.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDataset {
    /// Which dataset: its department is the SQL schema, its name the SQL table.
    pub dataset: DatasetRef,
    /// Its current Parquet file.
    pub path: PathBuf,
    /// Rows in that file (from the catalogue).
    pub rows: u64,
    /// Its classification, for the guard.
    pub info: veil_guard::DatasetInfo,
}

/// One query to run.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// The result mode.
    pub mode: Mode,
    /// Minimum distinct people per group or class.
    pub k: u64,
    /// The datasets the session holds: exactly the permitted ones the query names.
    pub datasets: Vec<SessionDataset>,
    /// Only decide; do not run.
    pub dry_run: bool,
    /// Dp mode: the epsilon and delta the query spends.
    pub dp: Option<DpParams>,
    /// Aggregate mode over data about people: the installation's secret under which sticky
    /// noise is seeded (the same for every analyst, so that nobody averages it away).
    pub noise_key: [u8; 32],
    /// Aggregate mode over people: exact aggregates (with k-thresholds) instead of anonymized
    /// ones, for a department's own analysts where a policy line says so.
    pub exact_aggregates: bool,
}

impl QueryRequest {
    /// Rows in all its datasets.
    fn input_rows(&self) -> u64 {
        self.datasets.iter().map(|d| d.rows).sum()
    }
}

/// The answer, or the decision of a dry run.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Output schema.
    pub schema: SchemaRef,
    /// Rows (empty for a dry run).
    pub batches: Vec<RecordBatch>,
    /// Groups (aggregate mode) or quasi-identifier classes (de-identified mode) withheld because
    /// they hold fewer than k people.
    pub suppressed_groups: u64,
    /// The rules that applied and why.
    pub rules: Vec<AppliedRule>,
    /// Whether the query ran.
    pub executed: bool,
    /// Dp mode: the privacy parameters and the intervals of the noisy values.
    pub dp: Option<DpReport>,
    /// Aggregate mode over people: the noise of the anonymized values.
    pub anonymized: Option<AnonReport>,
}

/// How noisy an anonymized answer is.
#[derive(Debug, Clone, Default)]
pub struct AnonReport {
    /// For each output column that is an anonymized count, sum or average (renamed at most):
    /// its name and, per row, the standard deviation of its noise, rounded up to 1, 2 or 5 × 10ⁿ
    /// (the noise scales with a few people's contributions, so only its order is stated).
    /// Empty when the answer reworks the groups (an aggregate or window over them).
    pub noise_sd: Vec<(String, Vec<f64>)>,
}

/// What a dp answer spent and how precise it is.
#[derive(Debug, Clone)]
pub struct DpReport {
    /// The noise: discrete Laplace (ε) or discrete Gaussian (ρ).
    pub noise: veil_dp::Noise,
    /// Epsilon the query spends, with Laplace noise (charged once; nothing when replayed).
    pub epsilon: Option<f64>,
    /// Rho the query spends, with Gaussian noise.
    pub rho: Option<f64>,
    /// Delta for releasing groups (0 for an answer without a threshold).
    pub delta: f64,
    /// How many numbers per group share epsilon.
    pub measurements: usize,
    /// The noisy count of people a group needed, if the answer has groups.
    pub threshold: Option<f64>,
    /// For each output column that is a noisy aggregate (renamed at most): its name and the
    /// 95% interval of its value in each row.
    pub intervals: Vec<(String, Vec<(f64, f64)>)>,
    /// For each output column that is a noisy count or sum: the half-width of its 95% interval,
    /// the same in every row and known before the query runs (a dry run shows it). Averages
    /// are not listed: theirs depends on how many values they have.
    pub half_widths: Vec<(String, f64)>,
    /// Whether this is the recorded answer of an identical earlier query.
    pub replayed: bool,
    /// The noisy aggregate, to record (set when freshly computed).
    pub noisy: Option<NoisyAggregate>,
}

/// A query planned and guarded, ready to run: the dp path decides about the budget between
/// [`QueryEngine::prepare`] and [`QueryEngine::execute`].
#[derive(Debug)]
pub struct Prepared {
    state: SessionState,
    plan: LogicalPlan,
    optimized: LogicalPlan,
    outcome: GuardOutcome,
    request: QueryRequest,
    /// Dp mode: the physical plan of `optimized`, once made, shared with the plan cache.
    physical: Arc<OnceLock<Arc<dyn ExecutionPlan>>>,
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

    /// Dp mode: the least ε (discrete Laplace) that gives each named noisy count or sum column
    /// of the answer a 95% interval no wider than asked.
    ///
    /// # Errors
    /// [`Error::Sql`] `accuracy_invalid` when that cannot be promised (an average, an unknown
    /// column); [`Error::Internal`] for a query that is not a dp one.
    pub fn epsilon_for_accuracy(&self, accuracy: &[(String, f64)]) -> Result<f64> {
        let Some(dp) = self.outcome.rewritten.dp.as_ref() else {
            return Err(internal("accuracy for a query that is not a dp one"));
        };
        dp::epsilon_for_accuracy(dp, &self.dp_outputs()?, accuracy)
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

impl DpReport {
    /// What a dp query of `dp`'s shape spends, before its values are known.
    fn new(dp: &DpPlan, params: DpParams, replayed: bool) -> Self {
        Self {
            noise: params.noise,
            epsilon: params.epsilon(),
            rho: params.rho(),
            delta: if dp.thresholded() { params.delta } else { 0.0 },
            measurements: dp::measurements(dp),
            threshold: None,
            intervals: Vec::new(),
            half_widths: Vec::new(),
            replayed,
            noisy: None,
        }
    }
}

impl Answer {
    /// An executed answer of these rows, with nothing else to report yet.
    fn rows(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self { schema, batches, suppressed_groups: 0, rules: Vec::new(), executed: true, dp: None, anonymized: None }
    }

    /// Rows in the answer.
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Released groups run through the analyst's plan: the rows and their schema, for each output
/// column the aggregate column it copies (if any), and for each row the group it comes from.
struct Finished {
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
    copies: Vec<Option<usize>>,
    row_ids: Int64Array,
}

/// A dp answer's rows, their schema, the intervals of its noisy columns by row, and which
/// aggregate each noisy output column is.
type FinishedDp = (Vec<RecordBatch>, SchemaRef, Vec<(String, Vec<(f64, f64)>)>, Vec<(String, veil_guard::DpAggregate)>);

/// The output columns of `plan` that are copies of one of `dp`'s noisy aggregates (`copies`,
/// as [`DpPlan::finish`] gives them), by name, with that aggregate.
fn noisy_outputs(plan: &LogicalPlan, dp: &DpPlan, copies: &[Option<usize>]) -> Vec<(String, veil_guard::DpAggregate)> {
    plan.schema()
        .fields()
        .iter()
        .zip(copies)
        .filter_map(|(f, copy)| {
            let aggregate = dp.aggregates.get(copy.as_ref()?.checked_sub(dp.keys)?)?;
            Some((f.name().clone(), *aggregate))
        })
        .collect()
}

/// The noisy aggregate `batch` (columns `c0, c1, …` and [`DP_ROW`]) as a plan whose columns
/// carry the names of the aggregate they stand for.
fn noisy_source(dp: &DpPlan, batch: RecordBatch) -> Result<LogicalPlan> {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
    let mut exprs = aggregate_columns(dp);
    exprs.push(Expr::Column(Column::from_name(DP_ROW)));
    LogicalPlanBuilder::scan("__veil_dp_noisy", provider_as_source(Arc::new(table)), None)
        .and_then(|b| b.project(exprs))
        .and_then(|b| b.build())
        .map_err(internal)
}

/// The noisy columns `c0, c1, …` under the names (and qualifiers) of the aggregate they stand
/// for, so that the analyst's plan above the aggregate reads them unchanged.
fn aggregate_columns(plan: &DpPlan) -> Vec<Expr> {
    plan.aggregate_schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            Expr::Column(Column::from_name(format!("c{i}"))).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect()
}

/// Inputs smaller than this (rows, all datasets of a query) run on one partition: there,
/// planning and starting parallel operators cost more than they save (on the dp bench's 1,000
/// rows, one partition takes a fifth off each query).
const SMALL_INPUT_ROWS: u64 = 256 * 1024;

/// Datasets of at most this many rows are decoded once and kept in memory: for them, opening
/// and decoding the Parquet file is most of a query's time.
const IN_MEMORY_ROWS: u64 = 64 * 1024;

/// Most memory the datasets kept decoded may take together; beyond it, small datasets are read
/// from Parquet like large ones.
const IN_MEMORY_BYTES: usize = 256 << 20;

/// Table providers by dataset (department, name), each for one file.
#[derive(Debug, Default)]
struct Tables {
    by_dataset: HashMap<DatasetRef, CachedTable>,
    /// Bytes of the tables kept in memory.
    in_memory: usize,
}

#[derive(Debug)]
struct CachedTable {
    file: PathBuf,
    table: Arc<dyn TableProvider>,
    /// Bytes it holds in memory (0 for a Parquet-backed one).
    bytes: usize,
}

impl Tables {
    /// The provider of `dataset` if it is for `file`.
    fn get(&self, dataset: &DatasetRef, file: &Path) -> Option<Arc<dyn TableProvider>> {
        self.by_dataset.get(dataset).filter(|c| c.file == file).map(|c| Arc::clone(&c.table))
    }

    /// Keeps a provider for `dataset`'s `file`, replacing the one for an older file, and
    /// returns it: the `decoded` one (with the bytes it holds) if it fits in memory, else the
    /// Parquet-backed one.
    fn put(
        &mut self,
        dataset: DatasetRef,
        file: PathBuf,
        parquet: Arc<dyn TableProvider>,
        decoded: Option<(Arc<dyn TableProvider>, usize)>,
    ) -> Arc<dyn TableProvider> {
        if let Some(old) = self.by_dataset.remove(&dataset) {
            self.in_memory -= old.bytes;
        }
        let (table, bytes) = match decoded {
            Some((table, bytes)) if self.in_memory + bytes <= IN_MEMORY_BYTES => (table, bytes),
            _ => (parquet, 0),
        };
        self.in_memory += bytes;
        self.by_dataset.insert(dataset, CachedTable { file, table: Arc::clone(&table), bytes });
        table
    }
}

/// How many guarded dp plans are kept.
const PLAN_CACHE_ENTRIES: usize = 256;

/// A query as planned, guarded and optimized for one request.
#[derive(Debug, Clone)]
struct GuardedPlan {
    plan: LogicalPlan,
    optimized: LogicalPlan,
    outcome: GuardOutcome,
    /// The physical plan of `optimized`, kept by the first run if it can run again
    /// ([`rerunnable`]).
    physical: Arc<OnceLock<Arc<dyn ExecutionPlan>>>,
}

/// Guarded dp plans, so that a dp query asked again (by anyone, or by the same analyst to get
/// the recorded answer) is not planned, guarded and optimized again: for a small dataset that
/// is most of a dp query's time.
///
/// A plan is reused only for the same SQL text and an equal request: mode, k, privacy
/// parameters and every dataset's file, row count and classification (so a new version, a
/// changed tag or bound plans afresh), and only if the plan reads no clock or random function,
/// whose value the optimizer may have fixed at planning time. Only dp plans are kept: their
/// outcome holds nothing that one run changes (aggregate mode's threshold counts the groups it
/// drops into a counter inside the plan).
#[derive(Debug, Default)]
struct PlanCache {
    by_sql: HashMap<String, Vec<(QueryRequest, GuardedPlan, u64)>>,
    /// Use counter, for dropping the least recently used entry.
    clock: u64,
}

impl PlanCache {
    fn get(&mut self, sql: &str, request: &QueryRequest) -> Option<GuardedPlan> {
        self.clock += 1;
        let entry = self.by_sql.get_mut(sql)?.iter_mut().find(|(r, _, _)| same_plan(r, request))?;
        entry.2 = self.clock;
        Some(entry.1.clone())
    }

    /// Keeps `plan`, first dropping the plans over older files of the same datasets (they would
    /// never be asked for again, and would keep those files' tables in memory).
    fn put(&mut self, sql: &str, request: &QueryRequest, plan: GuardedPlan) {
        let outdated = |kept: &QueryRequest| {
            kept.datasets.iter().any(|k| request.datasets.iter().any(|d| d.dataset == k.dataset && d.path != k.path))
        };
        for entries in self.by_sql.values_mut() {
            entries.retain(|(kept, _, _)| !outdated(kept));
        }
        self.by_sql.retain(|_, entries| !entries.is_empty());
        if self.len() >= PLAN_CACHE_ENTRIES {
            self.drop_oldest();
        }
        self.clock += 1;
        self.by_sql.entry(sql.to_owned()).or_default().push((request.clone(), plan, self.clock));
    }

    /// Plans kept.
    fn len(&self) -> usize {
        self.by_sql.values().map(Vec::len).sum()
    }

    fn drop_oldest(&mut self) {
        let oldest = self
            .by_sql
            .iter()
            .flat_map(|(sql, entries)| entries.iter().enumerate().map(move |(i, e)| (e.2, sql, i)))
            .min()
            .map(|(_, sql, i)| (sql.clone(), i));
        if let Some((sql, i)) = oldest
            && let Some(entries) = self.by_sql.get_mut(&sql)
        {
            entries.swap_remove(i);
            if entries.is_empty() {
                self.by_sql.remove(&sql);
            }
        }
    }
}

/// Whether a plan kept for `kept` serves `request`: everything the guard and the planner saw is
/// equal (the pseudonym key, which only de-identified answers use, and dry running are not
/// planning inputs).
fn same_plan(kept: &QueryRequest, request: &QueryRequest) -> bool {
    kept.mode == request.mode
        && kept.k == request.k
        && kept.dp == request.dp
        && kept.exact_aggregates == request.exact_aggregates
        && kept.datasets == request.datasets
}

/// Whether `plan` calls a function whose value is not fixed by its arguments (`now()`,
/// `random()`, …), anywhere, subqueries included.
fn reads_clock_or_chance(plan: &LogicalPlan) -> bool {
    let varies = |e: &Expr| {
        e.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable)))
    };
    let mut found = false;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            found |= varies(e)?;
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })
    });
    walked.is_err() || found
}

/// Runs guarded queries. One per server; cheap to share.
#[derive(Debug)]
pub struct QueryEngine {
    limits: Limits,
    runtime: Arc<RuntimeEnv>,
    /// Configuration and function registries every request's session starts from; built once,
    /// because registering DataFusion's functions is most of the cost of a new session.
    base: SessionState,
    /// Guarded dp plans by SQL text and request.
    plans: Mutex<PlanCache>,
    /// Each dataset's table provider, for the file of the version last queried: versions are
    /// immutable files, so a provider is current as long as its file is.
    tables: Mutex<Tables>,
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
            limits,
            runtime,
            base,
            plans: Mutex::new(PlanCache::default()),
            tables: Mutex::new(Tables::default()),
        })
    }

    /// The limits queries run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
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
                let (state, _) = self.session(None, request.input_rows());
                return Ok(Prepared { state, plan, optimized, outcome, request, physical });
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
        };
        let guard = Arc::new(PrivacyGuardRule::new(ctx));
        let (state, catalog) = self.session(Some(&guard), request.input_rows());
        for d in &request.datasets {
            let table = self.table(d, &state).await?;
            register(&catalog, d.dataset.department.as_str(), d.dataset.name.as_str(), table)?;
        }

        let plan = self.plan(&state, query.statement.clone()).await?;
        let optimized = state.optimize(&plan).map_err(planning)?;
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
            report.half_widths = half_widths;
            answer.dp = Some(report);
            return Ok(answer);
        }
        Ok(answer)
    }

    /// Aggregate mode over data about people: runs the measuring plan, adds sticky noise to its
    /// groups and applies the noisy threshold, then runs the analyst's plan over the noisy
    /// groups (any read-only rework of released numbers).
    async fn anonymized(&self, prepared: Prepared) -> Result<Answer> {
        let Prepared { state, optimized, outcome, request, .. } = prepared;
        let Some(plan) = &outcome.rewritten.anonymized else {
            return Err(internal("anonymizing a query that is not an anonymized one"));
        };
        let batches = self.within_deadline(self.collect(&state, &optimized, false, None)).await?;
        let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| Arc::clone(optimized.schema().inner()));
        // The query's labels: the measuring plan holds its keys' expressions and every filter
        // constant, so the label layer changes with what is asked, not with spelling alone.
        let label = digest::digest(&digest::SHA256, optimized.display_indent().to_string().as_bytes());
        let noisy = anon::add_noise(&batches, &schema, plan, request.k, &request.noise_key, label.as_ref())?;
        // Each value's noise when the answer's rows are the released groups (projected,
        // sorted, filtered or limited); a rework that mixes groups has none to state.
        let mut answer = match self.finish_released(plan, &noisy.values, false).await? {
            Some(finished) => {
                let names = finished.schema.fields().iter().map(|f| f.name().clone());
                let noise_sd = names
                    .zip(&finished.copies)
                    .filter_map(|(name, copy)| {
                        let sd = noisy.noise_sd.get(copy.as_ref()?.checked_sub(plan.keys)?)?;
                        let by_row = finished
                            .row_ids
                            .values()
                            .iter()
                            .map(|r| usize::try_from(*r).ok().and_then(|r| sd.get(r).copied()));
                        Some((name, by_row.collect::<Option<Vec<f64>>>()?))
                    })
                    .collect();
                let mut answer = Answer::rows(finished.schema, finished.batches);
                answer.anonymized = Some(AnonReport { noise_sd });
                answer
            }
            None => {
                let rows = noisy.values.num_rows() as u64;
                let table = MemTable::try_new(noisy.values.schema(), vec![vec![noisy.values]]).map_err(internal)?;
                let source = LogicalPlanBuilder::scan("__veil_anon_noisy", provider_as_source(Arc::new(table)), None)
                    .and_then(|b| b.project(aggregate_columns(plan)))
                    .and_then(|b| b.build())
                    .map_err(internal)?;
                let finished = plan.over(source).map_err(internal)?;
                let (state, _) = self.session(None, rows);
                let optimized = state.optimize(&finished).map_err(internal)?;
                let mut answer = self.answer(&state, &optimized, &optimized, false, false).await?;
                answer.anonymized = Some(AnonReport { noise_sd: Vec::new() });
                answer
            }
        };
        answer.rules = outcome.assessment.rules.clone();
        answer.suppressed_groups = noisy.suppressed;
        Ok(answer)
    }

    /// Dp mode: runs the bounded plan and adds noise to its totals, applying the threshold.
    /// Nothing of it is released yet: the caller charges the budget (or finds the answer an
    /// identical query recorded), then calls [`QueryEngine::release`].
    ///
    /// # Errors
    /// See [`Error`]; [`Error::Internal`] for a prepared query that is not a dp one.
    pub async fn measure(&self, prepared: &Prepared) -> Result<NoisyAggregate> {
        let Prepared { state, optimized, outcome, request, physical, .. } = prepared;
        let (Some(dp), Some(params)) = (&outcome.rewritten.dp, request.dp) else {
            return Err(internal("measuring a query that is not a dp one"));
        };
        let batches = self.within_deadline(self.collect(state, optimized, false, Some(physical))).await?;
        let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| Arc::clone(optimized.schema().inner()));
        dp::add_noise(&batches, &schema, dp, params, request.k)
    }

    /// Dp mode: the answer from a `noisy` aggregate (this query's measurement, or the one
    /// `replayed` from an identical earlier query), with the analyst's post-processing.
    ///
    /// # Errors
    /// See [`Error`]; [`Error::Internal`] for a prepared query that is not a dp one.
    pub async fn release(&self, prepared: Prepared, noisy: NoisyAggregate, replayed: bool) -> Result<Answer> {
        let Prepared { plan, outcome, request, .. } = prepared;
        let (Some(dp), Some(params)) = (&outcome.rewritten.dp, request.dp) else {
            return Err(internal("releasing a query that is not a dp one"));
        };
        let (batches, schema, intervals, outputs) = self.finish_dp(dp, &noisy, &plan).await?;
        let mut report = DpReport::new(dp, params, replayed);
        report.threshold = noisy.threshold;
        report.intervals = intervals;
        report.half_widths = dp::half_widths(dp, params, outputs)?;
        let suppressed_groups = noisy.suppressed;
        if !replayed {
            report.noisy = Some(noisy);
        }
        let mut answer = Answer::rows(schema, batches);
        answer.suppressed_groups = suppressed_groups;
        answer.rules = outcome.assessment.rules.clone();
        answer.dp = Some(report);
        Ok(answer)
    }

    /// Dp mode: the 95% half-width of each noisy count and sum column of the answer.
    fn half_widths(&self, prepared: &Prepared) -> Result<Vec<(String, f64)>> {
        let (Some(dp), Some(params)) = (&prepared.outcome.rewritten.dp, prepared.request.dp) else {
            return Ok(Vec::new());
        };
        dp::half_widths(dp, params, prepared.dp_outputs()?)
    }

    /// Runs the analyst's plan over the noisy aggregate: renaming, expressions, HAVING, ORDER
    /// BY and LIMIT are post-processing and cost no privacy. Returns the rows, their schema, the
    /// intervals of the output columns that are noisy values, and those columns' aggregates.
    async fn finish_dp(&self, dp: &DpPlan, noisy: &NoisyAggregate, plan: &LogicalPlan) -> Result<FinishedDp> {
        let values = noisy.values(dp)?;
        let finished =
            self.finish_released(dp, &values, false).await?.ok_or_else(|| internal("finishing a dp answer"))?;
        let names = plan.schema().fields().iter().map(|f| f.name().clone());
        let intervals = dp::output_intervals(noisy, &finished.copies, &finished.row_ids)
            .into_iter()
            .zip(names)
            .filter_map(|(i, name)| i.map(|i| (name, i)))
            .collect();
        Ok((finished.batches, finished.schema, intervals, noisy_outputs(plan, dp, &finished.copies)))
    }

    /// The analyst's plan run over the released groups `values` (columns `c0, c1, …`), keeping
    /// track of which group each answer row comes from and which output columns are plain
    /// copies of an aggregate: possible when the plan above the aggregate only projects, sorts,
    /// filters and limits. Otherwise `None`, or a failure when `required`.
    async fn finish_released(&self, plan: &DpPlan, values: &RecordBatch, required: bool) -> Result<Option<Finished>> {
        let rows = Int64Array::from_iter_values(0..values.num_rows() as i64);
        let mut fields: Vec<FieldRef> = values.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(DP_ROW, DataType::Int64, false)));
        let mut arrays = values.columns().to_vec();
        arrays.push(Arc::new(rows));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(internal)?;
        let (finished, copies) = match plan.finish(noisy_source(plan, batch.clone())?) {
            Ok(done) => done,
            Err(e) if required => return Err(internal(e)),
            Err(_) => return Ok(None),
        };
        let done = match selected(&finished, &batch) {
            Some(done) => done,
            None => {
                let (state, _) = self.session(None, values.num_rows() as u64);
                let optimized = state.optimize(&finished).map_err(internal)?;
                self.answer(&state, &optimized, &optimized, false, false).await?
            }
        };
        let width = done.schema.fields().len().saturating_sub(1);
        let keep: Vec<usize> = (0..width).collect();
        let schema = Arc::new(done.schema.project(&keep).map_err(internal)?);
        let mut batches = Vec::with_capacity(done.batches.len());
        let mut row_ids = Vec::new();
        for b in &done.batches {
            let ids = b.column(width).as_primitive_opt::<Int64Type>().ok_or_else(|| internal("row ids"))?;
            row_ids.extend(ids.values().iter().copied());
            batches.push(b.project(&keep).map_err(internal)?);
        }
        Ok(Some(Finished { batches, schema, copies, row_ids: Int64Array::from(row_ids) }))
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
        self.run_registered(&state, query, dry_run, false).await
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
            register(&catalog, &schema, &name, parquet_table(&path, &state).await?)?;
        }
        self.run_registered(&state, query, dry_run, true).await
    }

    /// Plans and runs `query` over the tables registered in `state`, unguarded but for the
    /// guard's allow-listed functions, as in every mode. With `cut`, the answer stops at the row
    /// limit instead of being refused past it.
    async fn run_registered(
        &self,
        state: &SessionState,
        query: &ParsedQuery,
        dry_run: bool,
        cut: bool,
    ) -> Result<Answer> {
        let mut plan = self.plan(state, query.statement.clone()).await?;
        veil_guard::check_functions(&plan).map_err(Error::Denied)?;
        if cut {
            plan = LogicalPlanBuilder::from(plan)
                .limit(0, Some(self.limits.max_result_rows))
                .and_then(LogicalPlanBuilder::build)
                .map_err(planning)?;
        }
        let optimized = state.optimize(&plan).map_err(planning)?;
        self.answer(state, &plan, &optimized, dry_run, true).await
    }

    /// The answer to an optimized plan: its schema alone for a dry run, else its rows, run
    /// under the deadline (no rules or suppression yet; the caller adds what applies).
    async fn answer(
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
        answer.batches = self.within_deadline(self.collect(state, optimized, explain, None)).await?;
        answer.schema =
            answer.batches.first().map(RecordBatch::schema).unwrap_or_else(|| Arc::clone(optimized.schema().inner()));
        answer.executed = true;
        Ok(answer)
    }

    /// Runs `work` under the deadline. The timer is polled first: a query that yields after its
    /// deadline stops there, instead of running on to its next yield (`tokio::time::timeout`
    /// polls the work first).
    async fn within_deadline<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
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
    fn session(
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
        if input_rows < SMALL_INPUT_ROWS {
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
        let key = dataset.dataset.clone();
        if let Some(t) = self.tables.lock().map_err(internal)?.get(&key, &dataset.path) {
            return Ok(t);
        }
        let table = parquet_table(&dataset.path, state).await?;
        let mut decoded = None;
        if dataset.rows <= IN_MEMORY_ROWS {
            let plan = LogicalPlanBuilder::scan("t", provider_as_source(Arc::clone(&table)), None)
                .and_then(|b| b.build())
                .map_err(internal)?;
            let batches = self.collect(state, &plan, false, None).await?;
            let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            let memory: Arc<dyn TableProvider> =
                Arc::new(MemTable::try_new(table.schema(), vec![batches]).map_err(internal)?);
            decoded = Some((memory, bytes));
        }
        Ok(self.tables.lock().map_err(internal)?.put(key, dataset.path.clone(), table, decoded))
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

    /// Runs a plan under the row limit. With `explain`, a failure says why (only for tables
    /// without personal data).
    ///
    /// DataFusion's hash join holds its whole build side in memory and cannot spill. When a
    /// plan with one runs out of memory, it runs once more with sort-merge joins, whose sorts
    /// spill under the pool: the same answer, slower, instead of a refusal.
    ///
    /// With `kept`, the physical plan it holds runs again with fresh operators (as DataFusion
    /// re-runs a plan, over the same immutable inputs); if it holds none, the one made here is
    /// kept there when it can run again ([`rerunnable`]): a repeated dp query skips physical
    /// planning.
    async fn collect(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        explain: bool,
        kept: Option<&OnceLock<Arc<dyn ExecutionPlan>>>,
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
        match self.collect_physical(state, Arc::clone(&physical)).await {
            Err(Stop::Failed(e)) if is_resource_limit(&e) && has_hash_join(&physical) => {
                tracing::debug!("a hash join ran out of memory; running again with sort-merge joins");
                let mut state = state.clone();
                state.config_mut().options_mut().optimizer.prefer_hash_join = false;
                let physical = state.query_planner().create_physical_plan(plan, &state).await.map_err(planning)?;
                self.collect_physical(&state, physical).await
            }
            other => other,
        }
        .map_err(|stop| match stop {
            Stop::TooLarge => Error::ResultTooLarge { limit: self.limits.max_result_rows },
            Stop::Failed(e) if explain && !is_resource_limit(&e) => Error::FailedUnguarded(clean(&e)),
            Stop::Failed(e) => self.runtime_error(e),
        })
    }

    /// One run of a physical plan, every operator yielding, under the row limit.
    async fn collect_physical(
        &self,
        state: &SessionState,
        physical: Arc<dyn ExecutionPlan>,
    ) -> std::result::Result<Vec<RecordBatch>, Stop> {
        let physical = yielding(physical).map_err(Stop::Failed)?;
        let mut stream = execute_stream(physical, self.task(state)).map_err(Stop::Failed)?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Stop::Failed)?;
            rows += batch.num_rows();
            if rows > self.limits.max_result_rows {
                return Err(Stop::TooLarge);
            }
            batches.push(batch);
        }
        Ok(batches)
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

/// The answer of `plan` over `batch` without running it, when `plan` only selects and renames
/// columns of its scan of `batch`, as the analyst's part of most dp queries does
/// (`SELECT key, COUNT(*) AS n … GROUP BY key`): a second planning and run would copy the same
/// columns at many times the cost.
fn selected(plan: &LogicalPlan, batch: &RecordBatch) -> Option<Answer> {
    fn columns(plan: &LogicalPlan) -> Option<Vec<usize>> {
        match plan {
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                Some(scan.projection.clone().unwrap_or_else(|| (0..scan.projected_schema.fields().len()).collect()))
            }
            LogicalPlan::SubqueryAlias(alias) => columns(&alias.input),
            LogicalPlan::Projection(p) => {
                let below = columns(&p.input)?;
                p.expr
                    .iter()
                    .map(|e| {
                        let Expr::Column(c) = e.clone().unalias_nested().data else { return None };
                        below.get(p.input.schema().maybe_index_of_column(&c)?).copied()
                    })
                    .collect()
            }
            _ => None,
        }
    }
    let arrays = columns(plan)?.into_iter().map(|i| batch.columns().get(i).cloned()).collect::<Option<Vec<_>>>()?;
    let schema = Arc::clone(plan.schema().inner());
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).ok()?;
    Some(Answer::rows(schema, vec![batch]))
}

/// Registers `table` as `schema.name` in a request's catalogue.
/// A table reading one Parquet file.
async fn parquet_table(path: &Path, state: &SessionState) -> Result<Arc<dyn TableProvider>> {
    let url = ListingTableUrl::parse(path.to_string_lossy()).map_err(internal)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config =
        ListingTableConfig::new(url).with_listing_options(options).infer_schema(state).await.map_err(internal)?;
    Ok(Arc::new(ListingTable::try_new(config).map_err(internal)?))
}

fn register(catalog: &MemoryCatalogProvider, schema: &str, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
    let provider = match catalog.schema(schema) {
        Some(s) => s,
        None => {
            let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(schema, Arc::clone(&s)).map_err(internal)?;
            s
        }
    };
    provider.register_table(name.to_owned(), table).map_err(internal)?;
    Ok(())
}

/// A planning failure: the guard's refusal, or a message about the SQL (unknown column, type
/// mismatch). Planning reads no data, so its messages carry none.
fn planning(e: DataFusionError) -> Error {
    if let Some(v) = violation(&e) {
        return Error::Denied(v.clone());
    }
    match e.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::SQL(..) => Error::Plan(clean(&e)),
        _ => internal(e),
    }
}

fn clean(e: &DataFusionError) -> String {
    let text = e.find_root().to_string();
    let text = text.split("\nbacktrace").next().unwrap_or(&text);
    for prefix in ["Error during planning: ", "Schema error: ", "This feature is not implemented: ", "SQL error: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    text.to_owned()
}

/// Whether the query ran out of its memory pool, or of spill space once it spilled. DataFusion
/// reports the latter only as an I/O error with a fixed text (no data in it), so that text is
/// what identifies it.
fn is_resource_limit(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => true,
        DataFusionError::ArrowError(inner, _) => {
            matches!(&**inner, datafusion::arrow::error::ArrowError::IoError(msg, _) if msg.contains("spilling process has exceeded"))
        }
        _ => false,
    }
}

fn error_kind(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::ArrowError(..) => "arrow",
        DataFusionError::Execution(_) => "execution",
        DataFusionError::IoError(_) => "io",
        DataFusionError::External(_) => "external",
        _ => "other",
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::prelude::{col, lit};

    use super::*;

    fn noisy_scan() -> (RecordBatch, LogicalPlanBuilder) {
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["甲区", "乙区"]));
        let counts: ArrayRef = Arc::new(Int64Array::from(vec![41, 17]));
        let batch = RecordBatch::try_from_iter([("c0", keys), ("c1", counts)]).expect("batch");
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).expect("table");
        let scan = LogicalPlanBuilder::scan("noisy", provider_as_source(Arc::new(table)), None).expect("scan");
        (batch, scan)
    }

    #[test]
    fn selecting_and_renaming_columns_is_answered_without_running_a_plan() {
        let (batch, scan) = noisy_scan();
        let plan = scan
            .project([col("c1").alias("n"), col("c0").alias("district")])
            .and_then(|b| b.alias("q"))
            .and_then(|b| b.project([col("district"), col("n").alias("people")]))
            .and_then(|b| b.build())
            .expect("plan");
        let answer = selected(&plan, &batch).expect("answered directly");
        let names: Vec<&str> = answer.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["district", "people"]);
        assert_eq!(answer.batches[0].columns(), [batch.column(0).clone(), batch.column(1).clone()]);
    }

    #[test]
    fn anything_more_than_selecting_columns_runs_the_plan() {
        let (batch, scan) = noisy_scan();
        let sorted = scan.clone().sort([col("c1").sort(false, true)]).and_then(|b| b.build()).expect("plan");
        let computed = scan.clone().project([col("c1") + lit(1)]).and_then(|b| b.build()).expect("plan");
        let filtered = scan.filter(col("c1").gt(lit(20))).and_then(|b| b.build()).expect("plan");
        for plan in [sorted, computed, filtered] {
            assert!(selected(&plan, &batch).is_none(), "{}", plan.display_indent());
        }
    }

    #[test]
    fn plans_that_read_the_clock_or_chance_are_told_apart() {
        let (_, scan) = noisy_scan();
        let fixed = scan.clone().filter(col("c1").gt(lit(20))).and_then(|b| b.build()).expect("plan");
        assert!(!reads_clock_or_chance(&fixed));
        let clock = datafusion::functions::datetime::expr_fn::now();
        let chance = datafusion::functions::math::expr_fn::random();
        for varying in [clock, chance] {
            let plan = scan.clone().project([col("c1"), varying]).and_then(|b| b.build()).expect("plan");
            assert!(reads_clock_or_chance(&plan), "{}", plan.display_indent());
        }
    }

    fn request(files: &[(&str, &str)]) -> QueryRequest {
        let info = veil_guard::DatasetInfo {
            privacy_unit: None,
            columns: HashMap::new(),
            contribution: veil_guard::Contribution { max_groups: 1, max_rows: 1 },
            one_row_per_unit: false,
            rows: 0,
        };
        QueryRequest {
            mode: Mode::Dp,
            k: 10,
            datasets: files
                .iter()
                .map(|(name, file)| SessionDataset {
                    dataset: format!("civil.{name}").parse().unwrap(),
                    path: PathBuf::from(file),
                    rows: 1,
                    info: info.clone(),
                })
                .collect(),
            dry_run: false,
            dp: Some(DpParams::laplace(1.0, 1e-7)),
            noise_key: [9; 32],
            exact_aggregates: false,
        }
    }

    fn guarded() -> GuardedPlan {
        let (_, scan) = noisy_scan();
        let plan = scan.build().expect("plan");
        let outcome = GuardOutcome {
            assessment: veil_guard::Assessment {
                rules: Vec::new(),
                counts_people: true,
                dp: Vec::new(),
                dp_public_keys: None,
                dp_reach: veil_guard::Reach {
                    contribution: veil_guard::Contribution { max_groups: 1, max_rows: 1 },
                    one_row_per_person: true,
                },
                anonymized: false,
            },
            rewritten: veil_guard::Rewritten {
                plan: plan.clone(),
                suppressed_groups: Arc::default(),
                dp: None,
                anonymized: None,
            },
        };
        GuardedPlan { plan: plan.clone(), optimized: plan, outcome, physical: Arc::default() }
    }

    #[test]
    fn kept_plans_serve_only_an_equal_request_and_leave_with_their_files() {
        let mut cache = PlanCache::default();
        let a1 = request(&[("a", "a-1.parquet"), ("b", "b-1.parquet")]);
        cache.put("q", &a1, guarded());
        cache.put("other", &request(&[("b", "b-1.parquet")]), guarded());
        assert!(cache.get("q", &a1).is_some());
        assert!(cache.get("q", &QueryRequest { k: 5, ..a1.clone() }).is_none(), "another k");
        assert!(cache.get("q", &QueryRequest { dp: Some(DpParams::laplace(0.5, 1e-7)), ..a1.clone() }).is_none());
        assert!(cache.get("Q", &a1).is_none(), "another text");
        // A new version of b: both plans over b's first file go.
        cache.put("third", &request(&[("b", "b-2.parquet")]), guarded());
        assert_eq!(cache.len(), 1);
        assert!(cache.get("q", &a1).is_none() && cache.get("other", &request(&[("b", "b-1.parquet")])).is_none());
        for i in 0..PLAN_CACHE_ENTRIES + 10 {
            cache.put(&format!("q{i}"), &request(&[("b", "b-2.parquet")]), guarded());
        }
        assert_eq!(cache.len(), PLAN_CACHE_ENTRIES);
        assert!(cache.get("q0", &request(&[("b", "b-2.parquet")])).is_none(), "the oldest left first");
        assert!(cache.get(&format!("q{}", PLAN_CACHE_ENTRIES + 9), &request(&[("b", "b-2.parquet")])).is_some());
    }

    #[test]
    fn decoded_tables_stay_within_their_memory_and_follow_the_file() {
        let (batch, _) = noisy_scan();
        let provider = || -> Arc<dyn TableProvider> {
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).expect("table"))
        };
        let mut tables = Tables::default();
        let key: DatasetRef = "civil.a".parse().expect("reference");
        let decoded = provider();
        let kept = tables.put(key.clone(), "a-1".into(), provider(), Some((Arc::clone(&decoded), IN_MEMORY_BYTES)));
        assert!(Arc::ptr_eq(&kept, &decoded), "it fits exactly");
        assert!(tables.get(&key, Path::new("a-1")).is_some() && tables.get(&key, Path::new("a-2")).is_none());
        let other: DatasetRef = "civil.b".parse().expect("reference");
        let parquet = provider();
        let kept = tables.put(other.clone(), "b-1".into(), Arc::clone(&parquet), Some((provider(), 1)));
        assert!(Arc::ptr_eq(&kept, &parquet), "no room left: read from Parquet");
        // A new version of a replaces the old one and frees its memory.
        tables.put(key.clone(), "a-2".into(), provider(), Some((provider(), 10)));
        assert_eq!(tables.in_memory, 10);
        let decoded = provider();
        let kept = tables.put(other, "b-2".into(), provider(), Some((Arc::clone(&decoded), 100)));
        assert!(Arc::ptr_eq(&kept, &decoded));
        assert_eq!(tables.in_memory, 110);
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
