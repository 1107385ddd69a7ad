//! Comparison 1: TPC-H aggregates through Veil over HTTP vs raw DataFusion on the same Parquet
//! in the same process, with DuckDB over the same files for context.
//!
//! Veil answers in `aggregate` mode: policy, guard, threshold rewrite (every group counts its
//! distinct customers), execution under the memory pool and deadline, post-processing and a
//! durable audit record, all inside one HTTP round trip. Raw DataFusion runs the same SQL text
//! with `SessionContext::sql(..).collect()`, same target partitions, no pool. Runs alternate
//! (DataFusion, then Veil, per query and run), and each run's ratio is taken from that pair.
//! DuckDB runs in its own Python process afterwards (`--python`), through `read_parquet` views.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use serde::Deserialize;
use serde_json::{Value, json};
use veil_tests::TestServer;

use crate::stats::{Table, median, millis, ratio, spread};
use crate::tpch::{self, TABLES};
use crate::{Common, Result};

/// Arguments of `veil-bench tpch`.
#[derive(Debug, Args)]
pub(crate) struct TpchArgs {
    #[command(flatten)]
    common: Common,
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Counted runs per query and system (one more runs first as a warm-up).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// DuckDB's side, run with `--python`.
    #[arg(long, default_value = "bench/duckdb_baseline.py")]
    script: PathBuf,
    /// Skip DuckDB.
    #[arg(long)]
    no_duckdb: bool,
}

const WARMUP: usize = 1;

/// Aggregate queries in the style of TPC-H Q1, Q3, Q5 and Q10, grouped so that every group
/// holds many customers (the originals' per-order and per-customer groups would all be
/// suppressed, rightly).
pub(crate) const QUERIES: &[(&str, &str)] = &[
    (
        "Q1 pricing summary",
        "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
                sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
                sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
                avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc,
                count(*) AS count_order
         FROM tpch.lineitem WHERE l_shipdate <= DATE '1998-09-02'
         GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus",
    ),
    (
        "Q3 shipping priority (by month)",
        "SELECT date_trunc('month', o_orderdate) AS month, o_shippriority,
                sum(l_extendedprice * (1 - l_discount)) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
              JOIN tpch.lineitem ON l_orderkey = o_orderkey
         WHERE c_mktsegment = 'BUILDING' AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
         GROUP BY date_trunc('month', o_orderdate), o_shippriority ORDER BY revenue DESC LIMIT 10",
    ),
    (
        "Q5 local supplier volume",
        "SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
              JOIN tpch.lineitem ON l_orderkey = o_orderkey
              JOIN tpch.supplier ON l_suppkey = s_suppkey AND c_nationkey = s_nationkey
              JOIN tpch.nation ON s_nationkey = n_nationkey
              JOIN tpch.region ON n_regionkey = r_regionkey
         WHERE r_name = 'ASIA' AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01'
         GROUP BY n_name ORDER BY revenue DESC",
    ),
    (
        "Q10 returned items (by nation)",
        "SELECT n_name, count(DISTINCT c_custkey) AS customers, sum(l_extendedprice * (1 - l_discount)) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
              JOIN tpch.lineitem ON l_orderkey = o_orderkey
              JOIN tpch.nation ON c_nationkey = n_nationkey
         WHERE o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01' AND l_returnflag = 'R'
         GROUP BY n_name ORDER BY revenue DESC",
    ),
];

/// Plain DataFusion over the Parquet files Veil stored, as `tpch.<table>`.
pub(crate) async fn plain_context(stored: &HashMap<&'static str, PathBuf>) -> Result<SessionContext> {
    let partitions = veil_query::Limits::standard().target_partitions;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    ctx.sql(&format!("CREATE SCHEMA {}", tpch::DEPARTMENT)).await?;
    for (name, path) in stored {
        let path = path.to_str().ok_or("a stored path is not UTF-8")?;
        ctx.register_parquet(format!("{}.{name}", tpch::DEPARTMENT), path, ParquetReadOptions::default()).await?;
    }
    Ok(ctx)
}

/// Posts `sql` in `mode` as `token`; the answer's rows, or an error naming the query.
pub(crate) async fn veil_query(server: &TestServer, token: &str, mode: &str, sql: &str) -> Result<Value> {
    let (status, body) = server.post("/v1/query", token, json!({"sql": sql, "mode": mode})).await;
    if !status.is_success() {
        return Err(format!("Veil refused or failed {sql}: {status} {body}").into());
    }
    Ok(body)
}

#[derive(Deserialize)]
struct DuckDbOutput {
    version: String,
    queries: Vec<Vec<f64>>,
}

pub(crate) async fn run(args: TpchArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let names: Vec<&'static str> = TABLES.iter().map(|t| t.name).collect();
    let files = tpch::generate(&args.common.out.join("tpch"), args.scale, &names)?;
    let veil = tpch::register(TestServer::start().await, &files).await?;
    let plain = plain_context(&veil.stored).await?;

    let mut plain_s = vec![Vec::new(); QUERIES.len()];
    let mut veil_s = vec![Vec::new(); QUERIES.len()];
    let mut ratios = vec![Vec::new(); QUERIES.len()];
    let mut notes = Vec::new();
    for run in 0..args.runs + WARMUP {
        for (i, (name, sql)) in QUERIES.iter().enumerate() {
            let started = Instant::now();
            let batches = plain.sql(sql).await?.collect().await?;
            let p = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let body = veil_query(&veil.server, &veil.analyst, "aggregate", sql).await?;
            let v = started.elapsed().as_secs_f64();
            let plain_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let veil_rows = body["rows"].as_array().map_or(0, Vec::len);
            if run == 0 {
                eprintln!("tpch: {name}: {plain_rows} rows plain, {veil_rows} through Veil");
                notes.push(format!(
                    "{name}: {plain_rows} groups plain, {veil_rows} through Veil ({} withheld)",
                    plain_rows.saturating_sub(veil_rows)
                ));
                if veil_rows == 0 {
                    return Err(format!("{name}: Veil suppressed every group: {body}").into());
                }
            }
            if run >= WARMUP {
                plain_s[i].push(p);
                veil_s[i].push(v);
                ratios[i].push(v / p);
            }
        }
    }

    let duckdb = if args.no_duckdb { None } else { Some(duckdb(&args, &veil.stored)?) };
    let mut table =
        Table::new(&["query", "DataFusion ms", "Veil ms", "Veil / DataFusion", "DuckDB ms", "DuckDB / DataFusion"]);
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        let p = median(&plain_s[i]);
        let (duck_ms, duck_ratio) = match &duckdb {
            Some(d) => (millis(median(&d.queries[i])), ratio(median(&d.queries[i]) / p)),
            None => ("—".into(), "—".into()),
        };
        table.row(vec![
            (*name).to_owned(),
            spread(&plain_s[i], millis),
            spread(&veil_s[i], millis),
            spread(&ratios[i], ratio),
            duck_ms,
            duck_ratio,
        ]);
    }
    let report = format!(
        "## TPC-H SF{}: Veil over HTTP vs raw DataFusion (and DuckDB {})\n\n\
         {} runs after {WARMUP} warm-up; median [p25–p75]; the Veil ratio is the median of per-run pairs. \
         Veil: aggregate mode, k = 5 (L2), audit synced.\n\n{}\n{}\n",
        args.scale,
        duckdb.as_ref().map_or("skipped".to_owned(), |d| d.version.clone()),
        args.runs,
        table.markdown(),
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>(),
    );
    println!("{report}");
    std::fs::write(results.join("tpch.md"), &report)?;
    let raw = json!({
        "scale": args.scale,
        "queries": QUERIES.iter().enumerate().map(|(i, (name, sql))| json!({
            "query": name, "sql": sql, "datafusion_seconds": plain_s[i], "veil_seconds": veil_s[i],
            "duckdb_seconds": duckdb.as_ref().map(|d| d.queries[i].clone()),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(results.join("tpch.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}

/// DuckDB's times per query, over the same Parquet files.
fn duckdb(args: &TpchArgs, stored: &HashMap<&'static str, PathBuf>) -> Result<DuckDbOutput> {
    eprintln!("tpch: DuckDB");
    let spec = args.common.out.join("duckdb_tpch.json");
    let body = json!({
        "schema": tpch::DEPARTMENT,
        "tables": stored,
        "queries": QUERIES.iter().map(|(_, sql)| sql).collect::<Vec<_>>(),
        "runs": args.runs, "warmup": WARMUP,
    });
    std::fs::write(&spec, serde_json::to_vec(&body)?)?;
    let output = std::process::Command::new(&args.common.python).arg(&args.script).arg(&spec).output()?;
    if !output.status.success() {
        return Err(format!("DuckDB failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
