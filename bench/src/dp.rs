//! Comparison 3: Veil's dp mode vs SmartNoise SQL on PUMS, at equal total epsilon per query.
//!
//! The same queries run on the real 1,000 PUMS rows and on a derived 1.2M-row table (the real
//! rows tiled with fresh person ids). Veil answers over HTTP (policy, guard, contribution
//! bounding, noise, durable budget, audit); SmartNoise answers through its `PrivateReader` in a
//! Python process. Truth comes from plain DataFusion over the same file.
//!
//! - Equal epsilon: Veil is asked for `--epsilon` per query, which it splits over the numbers it
//!   measures. SmartNoise is given the per-aggregate epsilon that makes its own
//!   `get_privacy_cost` of the query equal the same total. Both use delta 1e-7 for thresholds and
//!   one row per person (Veil: max_groups 1, max_rows 1; SmartNoise: max_ids 1).
//! - Fresh noise: Veil replays an identical query for the same analyst, so every (run, query)
//!   pair gets its own analyst.
//! - Error of one run: the mean over every true cell (group × aggregate) of
//!   |noisy − true| / max(|true|, 1); a group the answer left out counts as error 1.
//! - Time: wall time of one query, client side for Veil (HTTP round trip included), around
//!   `execute` for SmartNoise (data already loaded). One warm-up run each is not counted.
//! - Veil answers each query twice: with discrete Laplace noise at ε, and with discrete
//!   Gaussian noise at the ρ whose conversion (at the ledger's δ of 10⁻⁷) is the same ε, so the
//!   two mechanisms are compared at equal (ε, δ) for one query.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use serde::Deserialize;
use serde_json::{Value, json};
use veil_tests::TestServer;

use crate::stats::{Table, median, millis, ratio, spread};
use crate::{Common, Result};

/// Arguments of `veil-bench dp`.
#[derive(Debug, Args)]
pub(crate) struct DpArgs {
    #[command(flatten)]
    common: Common,
    /// Counted runs per query and system (one more runs first as a warm-up).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Total epsilon per query, for both systems.
    #[arg(long, default_value_t = 1.0)]
    epsilon: f64,
    /// How many times the derived table tiles the real one (0: skip it).
    #[arg(long, default_value_t = 1200)]
    tiles: usize,
    /// The real PUMS rows with a person id.
    #[arg(long, default_value = "bench/data/PUMS_pid.csv")]
    pums: PathBuf,
    /// SmartNoise's side, run with `--python`.
    #[arg(long, default_value = "bench/smartnoise_baseline.py")]
    script: PathBuf,
    /// Veil only, without the peer (to profile Veil's side).
    #[arg(long)]
    veil_only: bool,
}

/// Delta for thresholds: the server's own, and what SmartNoise is given.
const DELTA: f64 = 1e-7;
const WARMUP: usize = 1;

/// One query, written once: `{table}` becomes each system's table name. The first `keys`
/// columns are group keys, the rest noisy numbers.
struct Query {
    name: &'static str,
    sql: &'static str,
    keys: usize,
}

const QUERIES: &[Query] = &[
    Query { name: "count", sql: "SELECT COUNT(*) AS n FROM {table}", keys: 0 },
    Query { name: "count by sex", sql: "SELECT sex, COUNT(*) AS n FROM {table} GROUP BY sex", keys: 1 },
    Query { name: "count by educ", sql: "SELECT educ, COUNT(*) AS n FROM {table} GROUP BY educ", keys: 1 },
    Query { name: "sum income", sql: "SELECT SUM(income) AS s FROM {table}", keys: 0 },
    Query { name: "avg income by sex", sql: "SELECT sex, AVG(income) AS a FROM {table} GROUP BY sex", keys: 1 },
    Query { name: "avg age by married", sql: "SELECT married, AVG(age) AS a FROM {table} GROUP BY married", keys: 1 },
    Query {
        name: "count, sum income by race",
        sql: "SELECT race, COUNT(*) AS n, SUM(income) AS s FROM {table} GROUP BY race",
        keys: 1,
    },
];

/// Group key (joined key cells) → the numbers of that row.
type Answer = BTreeMap<String, Vec<f64>>;

/// One system's runs of one query.
#[derive(Default)]
struct Runs {
    seconds: Vec<f64>,
    answers: Vec<Answer>,
}

/// What one Veil query spends.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// ε, discrete Laplace noise.
    Epsilon(f64),
    /// ρ, discrete Gaussian noise.
    Rho(f64),
}

/// A table both systems answer over.
struct Dataset {
    label: String,
    name: &'static str,
    csv: PathBuf,
}

pub(crate) async fn run(args: DpArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let mut datasets = vec![Dataset { label: "PUMS, real (1,000 rows)".into(), name: "pums", csv: args.pums.clone() }];
    if args.tiles > 0 {
        let csv = args.common.out.join("pums_large.csv");
        let rows = tile(&args.pums, &csv, args.tiles)?;
        datasets.push(Dataset {
            label: format!("PUMS ×{}, derived ({rows} rows)", args.tiles),
            name: "pums_large",
            csv,
        });
    }

    let veil = Veil::start(&datasets, args.runs + WARMUP).await?;
    let mut report = format!(
        "## Dp: Veil vs SmartNoise SQL\n\nTotal ε = {} per query on both sides, δ = {DELTA}, {} runs (after {WARMUP} warm-up); \
         Veil also with discrete Gaussian noise at ρ = {:.5}, the same ε at δ = {DELTA}. \
         Error: mean over true cells of |noisy − true| / max(|true|, 1) per run (a left-out group counts 1); \
         median [p25–p75] over runs. Time: median per query.\n\n",
        args.epsilon,
        args.runs,
        veil_dp::accounting::rho_within(args.epsilon, veil_dp::accounting::CONVERSION_DELTA)
    );
    let mut raw = Vec::new();
    for dataset in &datasets {
        eprintln!("dp: {}: truth", dataset.label);
        let truth = truth(&dataset.csv).await?;
        eprintln!("dp: {}: Veil", dataset.label);
        let ours = veil.answer(dataset, Budget::Epsilon(args.epsilon), args.runs, false).await?;
        let first_time = veil.answer(dataset, Budget::Epsilon(args.epsilon), args.runs, true).await?;
        let rho = veil_dp::accounting::rho_within(args.epsilon, veil_dp::accounting::CONVERSION_DELTA);
        let gaussian = veil.answer(dataset, Budget::Rho(rho), args.runs, false).await?;
        if args.veil_only {
            for ((q, runs), first) in QUERIES.iter().zip(&ours).zip(&first_time) {
                eprintln!(
                    "veil {} {}: median {:.2} ms, first time {:.2} ms",
                    dataset.name,
                    q.name,
                    1e3 * median(&runs.seconds),
                    1e3 * median(&first.seconds)
                );
            }
            continue;
        }
        eprintln!("dp: {}: SmartNoise SQL", dataset.label);
        let (theirs, smartnoise_eps) = smartnoise(&args, dataset)?;
        let (table, json) = compare(&truth, &ours, &first_time, &gaussian, &theirs, &smartnoise_eps);
        report.push_str(&format!("### {}\n\n{}\n", dataset.label, table.markdown()));
        raw.push(json!({"dataset": dataset.label, "queries": json}));
    }
    println!("{report}");
    std::fs::write(results.join("dp.md"), &report)?;
    std::fs::write(results.join("dp.json"), serde_json::to_vec_pretty(&raw)?)?;
    eprintln!("dp: results in {}", results.display());
    Ok(())
}

/// Writes `tiles` copies of the PUMS rows to `to`, copy `t` giving person `p` the id
/// `t·n + p` (n the real row count); returns the number of rows written.
fn tile(from: &Path, to: &Path, tiles: usize) -> Result<usize> {
    let mut reader = csv::Reader::from_path(from)?;
    let header = reader.headers()?.clone();
    let pid = header.iter().position(|h| h == "pid").ok_or("the PUMS file has no pid column")?;
    let rows: Vec<csv::StringRecord> = reader.records().collect::<std::result::Result<_, _>>()?;
    let mut writer = csv::Writer::from_path(to)?;
    writer.write_record(&header)?;
    for t in 0..tiles {
        for row in &rows {
            let id: usize = row[pid].parse()?;
            let fresh = (t * rows.len() + id).to_string();
            writer.write_record(row.iter().enumerate().map(|(i, v)| if i == pid { fresh.as_str() } else { v }))?;
        }
    }
    writer.flush()?;
    Ok(tiles * rows.len())
}

/// Exact answers from plain DataFusion over the same CSV.
async fn truth(csv: &Path) -> Result<Vec<Answer>> {
    let ctx = SessionContext::new();
    let path = csv.to_str().ok_or("the CSV path is not UTF-8")?;
    ctx.register_csv("pums", path, CsvReadOptions::new()).await?;
    let mut out = Vec::new();
    for q in QUERIES {
        let batches = ctx.sql(&q.sql.replace("{table}", "pums")).await?.collect().await?;
        let mut answer = Answer::new();
        for batch in batches {
            let values: Vec<Float64Array> = batch.columns()[q.keys..]
                .iter()
                .map(|c| cast(c, &DataType::Float64).map(|a| Float64Array::from(a.to_data())))
                .collect::<std::result::Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                let key = batch.columns()[..q.keys]
                    .iter()
                    .map(|c| array_value_to_string(c, row))
                    .collect::<std::result::Result<Vec<_>, _>>()?
                    .join("|");
                let numbers = values.iter().map(|v| if v.is_null(row) { f64::NAN } else { v.value(row) }).collect();
                answer.insert(key, numbers);
            }
        }
        out.push(answer);
    }
    Ok(out)
}

/// A key cell of a JSON answer as text, integers without a fraction (SmartNoise returns the
/// integer codes as strings, Veil as numbers).
fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_i64().map(|i| i.to_string()).unwrap_or_else(|| n.to_string()),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Rows of a JSON answer (arrays of cells) as an [`Answer`].
fn answer_of(rows: &[Value], keys: usize) -> Result<Answer> {
    let mut answer = Answer::new();
    for row in rows {
        let cells = row.as_array().ok_or("an answer row is not an array")?;
        let key = cells[..keys].iter().map(key_text).collect::<Vec<_>>().join("|");
        let numbers = cells[keys..].iter().map(|c| c.as_f64().unwrap_or(f64::NAN)).collect();
        answer.insert(key, numbers);
    }
    Ok(answer)
}

/// How a steward of department `census` registers PUMS rows as `name` at `level`.
pub(crate) fn pums_metadata(name: &str, level: &str) -> Value {
    json!({
        "name": name, "department": "census", "level": level, "privacy_unit": "pid", "one_row_per_person": true,
        "description": "PUMS microdata (California demographics), one row per person",
        "columns": {
            "pid": {"tag": "identifier"},
            "age": {"tag": "quasi_identifier", "bounds": [0, 100]},
            "sex": {"tag": "quasi_identifier"},
            "educ": {"tag": "quasi_identifier"},
            "race": {"tag": "quasi_identifier"},
            "income": {"tag": "sensitive", "bounds": [0, 500000]},
            "married": {"tag": "attribute"}
        }
    })
}

/// The server with both datasets registered and one analyst per (run, query).
struct Veil {
    server: TestServer,
    analysts: Vec<Vec<String>>,
    /// Other analysts for the first-time pass, so that none of its answers is a replay.
    first_time_analysts: Vec<Vec<String>>,
}

impl Veil {
    async fn start(datasets: &[Dataset], runs: usize) -> Result<Self> {
        let server = TestServer::start().await;
        server.department("census", "统计局").await;
        let steward = server.user("census-steward", Some("census"), &["steward"]).await;
        for d in datasets {
            let mut metadata = pums_metadata(d.name, "L3");
            metadata["dp"] = json!({"max_groups": 1, "max_rows": 1});
            let (status, body) = server.upload(&steward, &metadata, std::fs::read(&d.csv)?).await;
            if !status.is_success() {
                return Err(format!("registering {}: {status} {body}", d.name).into());
            }
        }
        let mut analysts = Vec::new();
        let mut first_time_analysts = Vec::new();
        for run in 0..runs {
            let (mut per_query, mut first_time) = (Vec::new(), Vec::new());
            for q in 0..QUERIES.len() {
                per_query.push(server.user(&format!("analyst-{run}-{q}"), Some("census"), &["analyst"]).await);
                first_time.push(server.user(&format!("first-{run}-{q}"), Some("census"), &["analyst"]).await);
            }
            analysts.push(per_query);
            first_time_analysts.push(first_time);
        }
        Ok(Self { server, analysts, first_time_analysts })
    }

    /// Every query `runs` times (after the warm-up), each time by a fresh analyst. With
    /// `first_time`, each run's SQL text differs (a comment with the run's number), so the
    /// server has never planned it: no kept plan serves it.
    async fn answer(&self, dataset: &Dataset, budget: Budget, runs: usize, first_time: bool) -> Result<Vec<Runs>> {
        let (field, value) = match budget {
            Budget::Epsilon(e) => ("epsilon", e),
            Budget::Rho(r) => ("rho", r),
        };
        let analysts = if first_time { &self.first_time_analysts } else { &self.analysts };
        let mut out: Vec<Runs> = QUERIES.iter().map(|_| Runs::default()).collect();
        for (run, tokens) in analysts.iter().enumerate() {
            for ((q, token), runs_of) in QUERIES.iter().zip(tokens).zip(&mut out) {
                let mut sql = q.sql.replace("{table}", &format!("census.{}", dataset.name));
                if first_time {
                    sql = format!("{sql} -- {} run {run}", dataset.name);
                }
                let started = Instant::now();
                let (status, body) =
                    self.server.post("/v1/query", token, json!({"sql": sql, "mode": "dp", field: value})).await;
                let seconds = started.elapsed().as_secs_f64();
                if std::env::var_os("VEIL_BENCH_TRACE").is_some() {
                    eprintln!("veil {} {}: {:.2} ms", dataset.name, q.name, 1e3 * seconds);
                }
                if !status.is_success() || body["dp"]["replayed"] != false || body["dp"][field] != value {
                    return Err(format!("{}: {status} {body}", q.name).into());
                }
                if run >= WARMUP {
                    runs_of.seconds.push(seconds);
                    runs_of.answers.push(answer_of(body["rows"].as_array().ok_or("no rows")?, q.keys)?);
                }
            }
        }
        debug_assert!(out.iter().all(|r| r.seconds.len() == runs));
        Ok(out)
    }
}

/// SmartNoise's output, as `smartnoise_baseline.py` prints it.
#[derive(Deserialize)]
struct SmartNoiseOutput {
    queries: Vec<SmartNoiseQuery>,
}

#[derive(Deserialize)]
struct SmartNoiseQuery {
    epsilon_per_aggregate: f64,
    runs: Vec<SmartNoiseRun>,
}

#[derive(Deserialize)]
struct SmartNoiseRun {
    seconds: f64,
    rows: Vec<Value>,
}

/// Runs SmartNoise SQL over the same CSV; returns its runs and the per-aggregate epsilon it
/// was given for each query.
fn smartnoise(args: &DpArgs, dataset: &Dataset) -> Result<(Vec<Runs>, Vec<f64>)> {
    let spec = args.common.out.join(format!("smartnoise_{}.json", dataset.name));
    let queries: Vec<Value> =
        QUERIES.iter().map(|q| json!({"name": q.name, "sql": q.sql.replace("{table}", "PUMS.PUMS")})).collect();
    let body = json!({
        "csv": dataset.csv, "queries": queries, "epsilon": args.epsilon, "delta": DELTA,
        "runs": args.runs, "warmup": WARMUP,
    });
    std::fs::write(&spec, serde_json::to_vec(&body)?)?;
    let output = std::process::Command::new(&args.common.python).arg(&args.script).arg(&spec).output()?;
    if !output.status.success() {
        return Err(format!("SmartNoise SQL failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let parsed: SmartNoiseOutput = serde_json::from_slice(&output.stdout)?;
    let mut runs = Vec::new();
    let mut epsilons = Vec::new();
    for (q, got) in QUERIES.iter().zip(parsed.queries) {
        let mut r = Runs::default();
        for run in got.runs {
            r.seconds.push(run.seconds);
            r.answers.push(answer_of(&run.rows, q.keys)?);
        }
        runs.push(r);
        epsilons.push(got.epsilon_per_aggregate);
    }
    Ok((runs, epsilons))
}

/// The error of one answer against the truth, and how many true groups it released.
fn error(truth: &Answer, got: &Answer) -> (f64, usize) {
    let mut total = 0.0;
    let mut cells = 0usize;
    let mut released = 0;
    for (key, exact) in truth {
        let noisy = got.get(key);
        released += usize::from(noisy.is_some());
        for (i, t) in exact.iter().enumerate() {
            let e = match noisy.and_then(|n| n.get(i)) {
                Some(v) if !v.is_nan() => (v - t).abs() / t.abs().max(1.0),
                _ => 1.0,
            };
            total += e;
            cells += 1;
        }
    }
    (if cells == 0 { f64::NAN } else { total / cells as f64 }, released)
}

fn compare(
    truth: &[Answer],
    ours: &[Runs],
    first_time: &[Runs],
    gaussian: &[Runs],
    theirs: &[Runs],
    smartnoise_eps: &[f64],
) -> (Table, Vec<Value>) {
    let mut table = Table::new(&[
        "query",
        "Veil ms",
        "Veil ms, first time",
        "SmartNoise ms",
        "speed ratio",
        "ratio, first time",
        "Veil error",
        "Veil Gaussian error",
        "SmartNoise error",
        "groups Veil / SN / true",
    ]);
    let mut raw = Vec::new();
    for (i, q) in QUERIES.iter().enumerate() {
        let errors = |runs: &Runs| -> (Vec<f64>, Vec<f64>) {
            runs.answers.iter().map(|a| error(&truth[i], a)).map(|(e, g)| (e, g as f64)).unzip()
        };
        let (our_errors, our_groups) = errors(&ours[i]);
        let (gaussian_errors, _) = errors(&gaussian[i]);
        let (their_errors, their_groups) = errors(&theirs[i]);
        let four = |e: f64| format!("{e:.4}");
        let (our_ms, their_ms) = (median(&ours[i].seconds), median(&theirs[i].seconds));
        let first_ms = median(&first_time[i].seconds);
        table.row(vec![
            q.name.to_owned(),
            millis(our_ms),
            millis(first_ms),
            millis(their_ms),
            ratio(their_ms / our_ms),
            ratio(their_ms / first_ms),
            spread(&our_errors, four),
            spread(&gaussian_errors, four),
            spread(&their_errors, four),
            format!("{} / {} / {}", median(&our_groups), median(&their_groups), truth[i].len()),
        ]);
        raw.push(json!({
            "query": q.name, "sql": q.sql, "smartnoise_epsilon_per_aggregate": smartnoise_eps[i],
            "veil": {"seconds": ours[i].seconds, "errors": our_errors},
            "veil_first_time": {"seconds": first_time[i].seconds},
            "veil_gaussian": {"seconds": gaussian[i].seconds, "errors": gaussian_errors},
            "smartnoise": {"seconds": theirs[i].seconds, "errors": their_errors},
        }));
    }
    (table, raw)
}
