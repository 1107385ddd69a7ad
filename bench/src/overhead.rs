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
use crate::utility::{Utility, compare};
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
    /// Only the queries whose name starts with one of these (`--only A3 --only Q1`); all by
    /// default.
    #[arg(long)]
    only: Vec<String>,
}

const WARMUP: usize = 1;

/// Who asks, and so how Veil answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// Over tables about no person: exact, the whole read-only SQL surface.
    NoPerson,
    /// Over customers, by the department's own analyst whom a policy line gives exact
    /// aggregates: exact, groups of fewer than k customers withheld.
    Exact,
    /// Over customers, anonymized (docs/aggregate.md): the narrow shape, sticky noise.
    Anonymized,
}

impl Answered {
    fn as_str(self) -> &'static str {
        match self {
            Answered::NoPerson => "exact (no person)",
            Answered::Exact => "exact (own department)",
            Answered::Anonymized => "anonymized",
        }
    }
}

/// One query of the comparison: its name, SQL, how Veil answers it and how many of its
/// leading output columns are group keys.
pub(crate) struct Query {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
    pub(crate) answered: Answered,
    /// For an anonymized query, the same question with each group's people counted
    /// (`count(DISTINCT <privacy unit>)`) as raw DataFusion runs it: the least work that a
    /// threshold on people (the low-count filter) needs, before any noise. `None` where
    /// the query counts them already, or is not anonymized.
    pub(crate) people: Option<&'static str>,
    pub(crate) keys: usize,
}

/// Aggregate queries in the style of TPC-H Q1, Q3, Q5 and Q10, grouped so that every group
/// holds many customers (the originals' per-order and per-customer groups would all be
/// suppressed, rightly), with prices as floating point (decimal arithmetic over data about
/// people may fail, and is refused); then anonymized queries over customers and their orders.
pub(crate) const QUERIES: &[Query] = &[
    Query {
        name: "Q1 pricing summary",
        sql: "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
                sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
                sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
                avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc,
                count(*) AS count_order
         FROM tpch.lineitem WHERE l_shipdate <= DATE '1998-09-02'
         GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus",
        answered: Answered::NoPerson,
        people: None,
        keys: 2,
    },
    Query {
        name: "Q3 shipping priority (by month)",
        sql: "SELECT date_trunc('month', o_orderdate) AS month, o_shippriority,
                sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
              JOIN tpch.lineitem ON l_orderkey = o_orderkey
         WHERE c_mktsegment = 'BUILDING' AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
         GROUP BY date_trunc('month', o_orderdate), o_shippriority ORDER BY revenue DESC LIMIT 10",
        answered: Answered::Exact,
        people: None,
        keys: 2,
    },
    Query {
        name: "Q5 local supplier volume",
        sql: "SELECT n_name, sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
              JOIN tpch.lineitem ON l_orderkey = o_orderkey
              JOIN tpch.supplier ON l_suppkey = s_suppkey AND c_nationkey = s_nationkey
              JOIN tpch.nation ON s_nationkey = n_nationkey
              JOIN tpch.region ON n_regionkey = r_regionkey
         WHERE r_name = 'ASIA' AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01'
         GROUP BY n_name ORDER BY revenue DESC",
        answered: Answered::Exact,
        people: None,
        keys: 1,
    },
    Query {
        name: "Q10 returned items (by nation)",
        sql: "SELECT n_name, count(DISTINCT c_custkey) AS customers,
                sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
              JOIN tpch.lineitem ON l_orderkey = o_orderkey
              JOIN tpch.nation ON c_nationkey = n_nationkey
         WHERE o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01' AND l_returnflag = 'R'
         GROUP BY n_name ORDER BY revenue DESC",
        answered: Answered::Exact,
        people: None,
        keys: 1,
    },
    Query {
        name: "A1 customers by segment and nation",
        sql: "SELECT c_mktsegment, c_nationkey, count(*) AS customers, avg(c_acctbal) AS balance
         FROM tpch.customer GROUP BY c_mktsegment, c_nationkey ORDER BY c_mktsegment, c_nationkey",
        answered: Answered::Anonymized,
        people: Some(
            "SELECT c_mktsegment, c_nationkey, count(DISTINCT c_custkey) AS people, count(*) AS customers,
                avg(c_acctbal) AS balance
         FROM tpch.customer GROUP BY c_mktsegment, c_nationkey ORDER BY c_mktsegment, c_nationkey",
        ),
        keys: 2,
    },
    Query {
        name: "A2 balances in a band, two segments",
        sql: "SELECT c_nationkey, count(*) AS customers, sum(c_acctbal) AS balance
         FROM tpch.customer
         WHERE c_mktsegment IN ('BUILDING', 'MACHINERY') AND c_acctbal >= 0 AND c_acctbal < 5000
         GROUP BY c_nationkey ORDER BY c_nationkey",
        answered: Answered::Anonymized,
        people: Some(
            "SELECT c_nationkey, count(DISTINCT c_custkey) AS people, count(*) AS customers, sum(c_acctbal) AS balance
         FROM tpch.customer
         WHERE c_mktsegment IN ('BUILDING', 'MACHINERY') AND c_acctbal >= 0 AND c_acctbal < 5000
         GROUP BY c_nationkey ORDER BY c_nationkey",
        ),
        keys: 1,
    },
    Query {
        name: "A3 orders by month, one year",
        sql: "SELECT date_trunc('month', o_orderdate) AS month, count(*) AS orders, sum(o_totalprice) AS revenue
         FROM tpch.orders WHERE o_orderdate >= DATE '1995-01-01' AND o_orderdate < DATE '1996-01-01'
         GROUP BY date_trunc('month', o_orderdate) ORDER BY month",
        answered: Answered::Anonymized,
        people: Some(
            "SELECT date_trunc('month', o_orderdate) AS month, count(DISTINCT o_custkey) AS people, count(*) AS orders,
                sum(o_totalprice) AS revenue
         FROM tpch.orders WHERE o_orderdate >= DATE '1995-01-01' AND o_orderdate < DATE '1996-01-01'
         GROUP BY date_trunc('month', o_orderdate) ORDER BY month",
        ),
        keys: 1,
    },
    Query {
        name: "A4 orders by priority",
        sql: "SELECT o_orderpriority, count(DISTINCT o_custkey) AS customers, count(*) AS orders,
                avg(o_totalprice) AS price
         FROM tpch.orders GROUP BY o_orderpriority ORDER BY o_orderpriority",
        answered: Answered::Anonymized,
        people: None,
        keys: 1,
    },
    Query {
        name: "A5 customers' filled orders (join)",
        sql: "SELECT c_mktsegment, o_orderpriority, count(*) AS orders, sum(o_totalprice) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
         WHERE o_orderstatus = 'F' GROUP BY c_mktsegment, o_orderpriority ORDER BY c_mktsegment, o_orderpriority",
        answered: Answered::Anonymized,
        people: Some(
            "SELECT c_mktsegment, o_orderpriority, count(DISTINCT c_custkey) AS people, count(*) AS orders,
                sum(o_totalprice) AS revenue
         FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey
         WHERE o_orderstatus = 'F' GROUP BY c_mktsegment, o_orderpriority ORDER BY c_mktsegment, o_orderpriority",
        ),
        keys: 2,
    },
    Query {
        name: "A6 customers by nation name (code table)",
        sql: "SELECT n_name, count(*) AS customers, avg(c_acctbal) AS balance
         FROM tpch.customer JOIN tpch.nation ON c_nationkey = n_nationkey GROUP BY n_name ORDER BY n_name",
        answered: Answered::Anonymized,
        people: Some(
            "SELECT n_name, count(DISTINCT c_custkey) AS people, count(*) AS customers, avg(c_acctbal) AS balance
         FROM tpch.customer JOIN tpch.nation ON c_nationkey = n_nationkey GROUP BY n_name ORDER BY n_name",
        ),
        keys: 1,
    },
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
    let queries: Vec<&Query> =
        QUERIES.iter().filter(|q| args.only.is_empty() || args.only.iter().any(|o| q.name.starts_with(o))).collect();
    if queries.is_empty() {
        return Err(format!("no query's name starts with any of {:?}", args.only).into());
    }

    let mut plain_s = vec![Vec::new(); queries.len()];
    let mut veil_s = vec![Vec::new(); queries.len()];
    let mut ratios = vec![Vec::new(); queries.len()];
    // Per anonymized query, raw DataFusion counting each group's people, against its own run.
    let mut people_ratios = vec![Vec::new(); queries.len()];
    let mut utility = vec![Utility::default(); queries.len()];
    for run in 0..args.runs + WARMUP {
        for (i, q) in queries.iter().enumerate() {
            let token = if q.answered == Answered::Exact { &veil.exact } else { &veil.analyst };
            let started = Instant::now();
            let batches = plain.sql(q.sql).await?.collect().await?;
            let p = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let body = veil_query(&veil.server, token, "aggregate", q.sql).await?;
            let v = started.elapsed().as_secs_f64();
            let counted = match q.answered {
                Answered::Anonymized => {
                    let started = Instant::now();
                    plain.sql(q.people.unwrap_or(q.sql)).await?.collect().await?;
                    Some(started.elapsed().as_secs_f64())
                }
                Answered::NoPerson | Answered::Exact => None,
            };
            if run == 0 {
                let anonymized = body["rules"].as_array().into_iter().flatten().any(|r| r["code"] == "anonymized");
                if anonymized != (q.answered == Answered::Anonymized) {
                    return Err(
                        format!("{}: expected {}, anonymized: {anonymized}", q.name, q.answered.as_str()).into()
                    );
                }
                utility[i] = compare(&batches, &body, q.keys)?;
                eprintln!(
                    "tpch: {}: groups {}, median error {}",
                    q.name,
                    utility[i].groups(),
                    utility[i].median_error()
                );
                if utility[i].released == 0 {
                    return Err(format!("{}: Veil suppressed every group: {body}", q.name).into());
                }
            }
            if run >= WARMUP {
                plain_s[i].push(p);
                veil_s[i].push(v);
                ratios[i].push(v / p);
                if let Some(counted) = counted {
                    people_ratios[i].push(counted / p);
                }
            }
        }
    }

    let duckdb = if args.no_duckdb { None } else { Some(duckdb(&args, &queries, &veil.stored)?) };
    let mut table = Table::new(&[
        "query",
        "Veil answers",
        "DataFusion ms",
        "Veil ms",
        "Veil / DataFusion",
        "people counted / DataFusion",
        "groups released / exact",
        "median relative error",
        "DuckDB ms",
        "DuckDB / DataFusion",
    ]);
    for (i, q) in queries.iter().enumerate() {
        let p = median(&plain_s[i]);
        let (duck_ms, duck_ratio) = match &duckdb {
            Some(d) => (millis(median(&d.queries[i])), ratio(median(&d.queries[i]) / p)),
            None => ("—".into(), "—".into()),
        };
        table.row(vec![
            q.name.to_owned(),
            q.answered.as_str().to_owned(),
            spread(&plain_s[i], millis),
            spread(&veil_s[i], millis),
            spread(&ratios[i], ratio),
            if people_ratios[i].is_empty() { "—".into() } else { spread(&people_ratios[i], ratio) },
            utility[i].groups(),
            utility[i].median_error(),
            duck_ms,
            duck_ratio,
        ]);
    }
    let report = format!(
        "## TPC-H SF{}: Veil over HTTP vs raw DataFusion (and DuckDB {})\n\n\
         {} runs after {WARMUP} warm-up; median [p25–p75]; the Veil ratio is the median of per-run pairs. \
         People counted: raw DataFusion answering an anonymized query with each group's distinct \
         customers counted too, the least work a threshold on people needs. \
         Veil: aggregate mode, k = 5 (L2), audit synced. Errors: per released value, \
         |Veil − exact| / max(|exact|, 1), median over the query's values.\n\n{}\n",
        args.scale,
        duckdb.as_ref().map_or("skipped".to_owned(), |d| d.version.clone()),
        args.runs,
        table.markdown(),
    );
    println!("{report}");
    std::fs::write(results.join("tpch.md"), &report)?;
    let raw = json!({
        "scale": args.scale,
        "queries": queries.iter().enumerate().map(|(i, q)| json!({
            "query": q.name, "sql": q.sql, "answered": q.answered.as_str(),
            "groups_exact": utility[i].exact_groups, "groups_released": utility[i].released,
            "relative_errors": utility[i].errors,
            "datafusion_seconds": plain_s[i], "veil_seconds": veil_s[i],
            "people_counted_ratios": people_ratios[i],
            "duckdb_seconds": duckdb.as_ref().map(|d| d.queries[i].clone()),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(results.join("tpch.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}

/// DuckDB's times per query, over the same Parquet files.
fn duckdb(args: &TpchArgs, queries: &[&Query], stored: &HashMap<&'static str, PathBuf>) -> Result<DuckDbOutput> {
    eprintln!("tpch: DuckDB");
    let spec = args.common.out.join("duckdb_tpch.json");
    let body = json!({
        "schema": tpch::DEPARTMENT,
        "tables": stored,
        "queries": queries.iter().map(|q| q.sql).collect::<Vec<_>>(),
        "runs": args.runs, "warmup": WARMUP,
    });
    std::fs::write(&spec, serde_json::to_vec(&body)?)?;
    let output = std::process::Command::new(&args.common.python).arg(&args.script).arg(&spec).output()?;
    if !output.status.success() {
        return Err(format!("DuckDB failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
