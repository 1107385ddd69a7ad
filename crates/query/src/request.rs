//! What a query asks for and what it answers: the request, the limits it runs under, and the
//! answer with its dp or anonymization report.

use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use veil_common::{DatasetRef, Mode};
use veil_guard::{AppliedRule, DpPlan};

use crate::dp::{self, DpParams, NoisyAggregate};

/// Limits every query runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
    /// Memory one query may use before it spills or fails, in bytes.
    pub memory_bytes: usize,
    /// Memory all queries running at once may use together, in bytes.
    pub total_memory_bytes: usize,
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
    /// Limits for a server on this machine: 1 GiB per query and 4 GiB for all at once, 30 s,
    /// 100,000 rows.
    pub fn standard() -> Self {
        Self {
            max_sql_bytes: 64 * 1024,
            memory_bytes: 1 << 30,
            total_memory_bytes: 4 << 30,
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
    /// The copy of that file keeping at most the cap of each person's rows, stored when it was
    /// registered (where `info.capped` is [`veil_guard::CapAt::Stored`]), and its rows.
    pub capped_copy: Option<(PathBuf, u64)>,
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
    pub(crate) fn input_rows(&self) -> u64 {
        // A dp query reads each capped copy, not its version.
        let rows = |d: &SessionDataset| match &d.capped_copy {
            Some((_, capped)) if self.mode == veil_common::Mode::Dp => *capped,
            _ => d.rows,
        };
        self.datasets.iter().map(rows).sum()
    }

    /// Whether the query reads data about people other than through exact aggregates for the
    /// department that holds it: its failures are then told as [`Error::told`] says.
    ///
    /// [`Error::told`]: crate::Error::told
    pub(crate) fn over_personal_data(&self) -> bool {
        !self.exact_aggregates && self.datasets.iter().any(|d| d.info.privacy_unit.is_some())
    }

    /// Whether its answer is anonymized (aggregate mode over data about people, without exact
    /// aggregates): each value of every dataset it reads, about people or a code table, is
    /// then read within the range the guard reasons about exactly (`exact.rs`).
    pub(crate) fn anonymized(&self) -> bool {
        self.mode == veil_common::Mode::Aggregate && self.over_personal_data()
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
    /// For each output column that copies an anonymized count or sum (renamed at most), when
    /// the query and the public bounds alone bound its noise: its name and the most the
    /// standard deviation of its noise can be, the same in every row. Nothing that depends on
    /// the data: a scale read off a group's own contributions told whether one person's value
    /// was above zero. Empty when the answer reworks the groups (an aggregate or window over
    /// them).
    pub noise_sd: Vec<(String, f64)>,
    /// The output columns that copy a count or sum whose values flattening may have moved
    /// beyond their noise (brought down where a few people hold most of it): counts of rows
    /// where a person may have several, sums and averages. From the query alone. Empty when
    /// the answer reworks the groups.
    pub flattened: Vec<String>,
    /// The datasets whose rows per person the query's joins capped, with the cap: its counts
    /// of rows and sums are of at most that many rows a person. From the declarations alone.
    pub rows_capped: Vec<(String, u64)>,
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
    /// The people a group needs to be released with probability at least 95%.
    pub released_from: Option<f64>,
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

impl DpReport {
    /// What a dp query of `dp`'s shape spends, before its values are known.
    pub(crate) fn new(dp: &DpPlan, params: DpParams, replayed: bool) -> Self {
        Self {
            noise: params.noise,
            epsilon: params.epsilon(),
            rho: params.rho(),
            delta: if dp.thresholded() { params.delta } else { 0.0 },
            measurements: dp::measurements(dp),
            threshold: None,
            released_from: None,
            intervals: Vec::new(),
            half_widths: Vec::new(),
            replayed,
            noisy: None,
        }
    }
}

impl Answer {
    /// An executed answer of these rows, with nothing else to report yet.
    pub(crate) fn rows(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self { schema, batches, suppressed_groups: 0, rules: Vec::new(), executed: true, dp: None, anonymized: None }
    }

    /// Rows in the answer.
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}
