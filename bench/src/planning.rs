//! Comparison 2: what the guard adds to planning, for queries of varied shape over TPC-H.
//!
//! Plain: DataFusion's `create_logical_plan` and `optimize` on a `SessionContext` holding the
//! same Parquet files. Veil: `parse` and a dry run of the query engine in aggregate mode, which
//! builds the per-request session, registers the permitted tables, plans, runs the guard as an
//! analyzer rule (lineage, rules, threshold or anonymizing rewrite) and optimizes. Neither runs
//! the query. The two alternate per iteration; each query's ratio is the median of its
//! per-iteration pairs. The varied queries run as the department's own analyst with exact
//! aggregates (the whole SQL surface); the anonymized ones of the `tpch` comparison as anyone
//! else.

use std::time::Instant;

use clap::Args;
use serde_json::json;
use veil_common::Mode;
use veil_query::{Limits, QueryEngine, QueryRequest, SessionDataset, parse};

use crate::stats::{Table, median, ratio, spread};
use crate::tpch::{self, TABLES};
use crate::{Common, Result};

/// Arguments of `veil-bench planning`.
#[derive(Debug, Args)]
pub(crate) struct PlanningArgs {
    #[command(flatten)]
    common: Common,
    /// TPC-H scale factor of the tables (planning does not read the data).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Timed iterations per query and system.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
}

/// Queries of varied shape that pass the guard in aggregate mode with exact aggregates.
const QUERIES: &[&str] = &[
    "SELECT count(*) FROM tpch.lineitem",
    "SELECT l_returnflag, count(*) FROM tpch.lineitem GROUP BY l_returnflag",
    "SELECT l_returnflag, l_linestatus, sum(l_quantity), avg(l_discount), min(l_shipdate), max(l_shipdate) FROM tpch.lineitem GROUP BY 1, 2",
    "SELECT l_shipmode, count(*) FROM tpch.lineitem WHERE l_shipdate BETWEEN DATE '1994-01-01' AND DATE '1994-12-31' AND l_discount > 0.05 GROUP BY l_shipmode ORDER BY 2 DESC",
    "SELECT l_shipmode, sum(CASE WHEN l_quantity > 25 THEN 1 ELSE 0 END) AS big, sum(CASE WHEN l_quantity <= 25 THEN 1 ELSE 0 END) AS small FROM tpch.lineitem GROUP BY l_shipmode",
    "SELECT extract(year FROM l_shipdate) AS y, sum(l_extendedprice * (1 - l_discount)) FROM tpch.lineitem GROUP BY 1 ORDER BY 1",
    "SELECT l_shipinstruct, l_shipmode, stddev(l_extendedprice), var_pop(l_tax) FROM tpch.lineitem GROUP BY l_shipinstruct, l_shipmode HAVING count(*) > 100",
    "SELECT c_mktsegment, count(*) FROM tpch.customer GROUP BY c_mktsegment",
    "SELECT c_mktsegment, c_nationkey, count(*), avg(c_acctbal) FROM tpch.customer GROUP BY c_mktsegment, c_nationkey",
    "SELECT c_nationkey, count(*) FROM tpch.customer WHERE c_acctbal > 0 AND c_mktsegment IN ('BUILDING', 'MACHINERY') GROUP BY c_nationkey ORDER BY 2 DESC LIMIT 5",
    "SELECT o_orderpriority, count(*) FROM tpch.orders WHERE o_orderdate >= DATE '1993-07-01' AND o_orderdate < DATE '1993-10-01' GROUP BY o_orderpriority ORDER BY o_orderpriority",
    "SELECT o_orderstatus, count(DISTINCT o_custkey), sum(o_totalprice) FROM tpch.orders GROUP BY o_orderstatus",
    "SELECT date_trunc('month', o_orderdate) AS m, count(*) FROM tpch.orders GROUP BY 1 ORDER BY 1",
    "WITH recent AS (SELECT * FROM tpch.orders WHERE o_orderdate > DATE '1997-01-01') SELECT o_orderpriority, avg(o_totalprice) FROM recent GROUP BY o_orderpriority",
    "SELECT band, count(*) FROM (SELECT CASE WHEN o_totalprice > 200000 THEN 'high' WHEN o_totalprice > 100000 THEN 'mid' ELSE 'low' END AS band FROM tpch.orders) t GROUP BY band",
    "SELECT c_mktsegment, count(*) FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey GROUP BY c_mktsegment",
    "SELECT c_mktsegment, o_orderpriority, sum(o_totalprice) FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey WHERE o_orderstatus = 'F' GROUP BY 1, 2",
    "SELECT n_name, count(*) FROM tpch.customer JOIN tpch.nation ON c_nationkey = n_nationkey GROUP BY n_name",
    "SELECT r_name, n_name, count(*) FROM tpch.customer JOIN tpch.nation ON c_nationkey = n_nationkey JOIN tpch.region ON n_regionkey = r_regionkey GROUP BY r_name, n_name",
    "SELECT l_shipmode, count(*) FROM tpch.orders JOIN tpch.lineitem ON o_orderkey = l_orderkey WHERE o_orderpriority IN ('1-URGENT', '2-HIGH') GROUP BY l_shipmode",
    "SELECT l_shipmode, sum(CASE WHEN o_orderpriority = '1-URGENT' OR o_orderpriority = '2-HIGH' THEN 1 ELSE 0 END) AS high_line_count FROM tpch.orders JOIN tpch.lineitem ON o_orderkey = l_orderkey WHERE l_shipmode IN ('MAIL', 'SHIP') AND l_commitdate < l_receiptdate AND l_shipdate < l_commitdate GROUP BY l_shipmode ORDER BY l_shipmode",
    "SELECT date_trunc('month', o_orderdate) AS month, o_shippriority, sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))) AS revenue FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey JOIN tpch.lineitem ON l_orderkey = o_orderkey WHERE c_mktsegment = 'BUILDING' GROUP BY 1, 2 ORDER BY revenue DESC LIMIT 10",
    "SELECT n_name, sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))) AS revenue FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey JOIN tpch.lineitem ON l_orderkey = o_orderkey JOIN tpch.supplier ON l_suppkey = s_suppkey AND c_nationkey = s_nationkey JOIN tpch.nation ON s_nationkey = n_nationkey JOIN tpch.region ON n_regionkey = r_regionkey WHERE r_name = 'ASIA' GROUP BY n_name ORDER BY revenue DESC",
    "SELECT n_name, count(DISTINCT c_custkey), sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))) FROM tpch.customer JOIN tpch.orders ON c_custkey = o_custkey JOIN tpch.lineitem ON l_orderkey = o_orderkey JOIN tpch.nation ON c_nationkey = n_nationkey WHERE l_returnflag = 'R' GROUP BY n_name",
    "SELECT s_nationkey, count(*), avg(s_acctbal) FROM tpch.supplier GROUP BY s_nationkey",
    "SELECT n_name, count(*) FROM tpch.supplier JOIN tpch.nation ON s_nationkey = n_nationkey WHERE s_acctbal > 1000 GROUP BY n_name",
    "SELECT l_returnflag, count(*) FROM tpch.lineitem WHERE l_suppkey IN (SELECT max(s_suppkey) FROM tpch.supplier GROUP BY s_nationkey) GROUP BY l_returnflag",
    "SELECT c_mktsegment, count(*) FROM tpch.customer WHERE c_acctbal > (SELECT avg(c_acctbal) FROM tpch.customer) GROUP BY c_mktsegment",
    "SELECT kind, count(*) FROM (SELECT 'F' AS kind FROM tpch.orders WHERE o_orderstatus = 'F' UNION ALL SELECT 'O' AS kind FROM tpch.orders WHERE o_orderstatus = 'O') u GROUP BY kind",
    "SELECT c_mktsegment, n, rank() OVER (ORDER BY n DESC) FROM (SELECT c_mktsegment, count(*) AS n FROM tpch.customer GROUP BY c_mktsegment) g",
    "SELECT upper(c_mktsegment) AS seg, coalesce(sum(c_acctbal), 0) FROM tpch.customer WHERE substr(c_mktsegment, 1, 1) = 'B' GROUP BY 1",
    "SELECT o_orderpriority, approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY o_shippriority), max(o_orderdate) FROM tpch.orders GROUP BY o_orderpriority",
    "SELECT l_linestatus, count(*) FILTER (WHERE l_tax > 0.04), count(*) FROM tpch.lineitem GROUP BY l_linestatus",
    "SELECT c_mktsegment, count(*) FROM tpch.customer c WHERE EXISTS (SELECT 1 FROM tpch.orders o WHERE o.o_custkey = c.c_custkey AND o.o_orderstatus = 'F') GROUP BY c_mktsegment",
];

pub(crate) async fn run(args: PlanningArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let names: Vec<&'static str> = TABLES.iter().map(|t| t.name).collect();
    let files = tpch::generate(&args.common.out.join("tpch"), args.scale, &names)?;
    let plain = crate::overhead::plain_context(&files.paths).await?;
    let scratch = tempfile::tempdir()?;
    let engine = QueryEngine::new(Limits::standard(), scratch.path())?;
    let mut datasets = Vec::new();
    for (name, path) in &files.paths {
        let table = tpch::Table::get(name)?;
        datasets.push(SessionDataset {
            dataset: format!("{}.{name}", tpch::DEPARTMENT).parse()?,
            path: path.clone(),
            rows: rows(path)?,
            info: table.info(&*tpch::parquet_schema(path)?),
            capped_copy: None,
        });
    }
    // Only the tables a query names are in its session, as the server does it.
    let request = |sql: &str, exact_aggregates: bool| QueryRequest {
        mode: Mode::Aggregate,
        k: 5,
        datasets: datasets.iter().filter(|d| mentions(sql, d.dataset.name.as_str())).cloned().collect(),
        dry_run: true,
        noise_key: [0; 32],
        exact_aggregates,
        dp: None,
    };
    let anonymized = crate::overhead::QUERIES.iter().filter(|q| q.answered == crate::overhead::Answered::Anonymized);
    let queries: Vec<(&str, bool)> =
        QUERIES.iter().map(|sql| (*sql, true)).chain(anonymized.map(|q| (q.sql, false))).collect();

    let mut table = Table::new(&["#", "query", "answers", "plain µs", "Veil µs", "Veil / plain"]);
    // Per kind (exact, anonymized): the per-query ratios and the summed medians.
    let mut all_ratios = [Vec::new(), Vec::new()];
    let (mut plain_total, mut veil_total) = ([0.0; 2], [0.0; 2]);
    let mut raw = Vec::new();
    for (i, &(sql, exact)) in queries.iter().enumerate() {
        // Refusals and planning errors end the run: every query must pass.
        let answer = engine
            .run(&parse(sql, 1 << 16)?, request(sql, exact))
            .await
            .map_err(|e| format!("query {}: {e}: {sql}", i + 1))?;
        if answer.rules.iter().any(|r| r.code == "anonymized") == exact {
            return Err(format!("query {}: answered otherwise than expected: {sql}", i + 1).into());
        }
        let kind = usize::from(!exact);
        let (mut p, mut v, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.iterations {
            let started = Instant::now();
            let state = plain.state();
            let plan = state.create_logical_plan(sql).await?;
            state.optimize(&plan)?;
            let ps = started.elapsed().as_secs_f64();
            let started = Instant::now();
            engine.run(&parse(sql, 1 << 16)?, request(sql, exact)).await?;
            let vs = started.elapsed().as_secs_f64();
            p.push(ps);
            v.push(vs);
            r.push(vs / ps);
        }
        let (pm, vm) = (median(&p), median(&v));
        plain_total[kind] += pm;
        veil_total[kind] += vm;
        all_ratios[kind].push(median(&r));
        let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(70).collect();
        table.row(vec![
            (i + 1).to_string(),
            format!("`{short}…`"),
            if exact { "exact" } else { "anonymized" }.to_owned(),
            format!("{:.0}", pm * 1e6),
            format!("{:.0}", vm * 1e6),
            spread(&r, ratio),
        ]);
        raw.push(json!({
            "sql": sql, "exact": exact, "plain_seconds_median": pm, "veil_seconds_median": vm,
            "ratio_median": median(&r),
        }));
    }
    let summary = |kind: usize, what: &str| {
        format!(
            "{} {what} queries: summed medians {:.2} ms plain → {:.2} ms Veil (**{}**); per-query ratio median {}, max {}.",
            all_ratios[kind].len(),
            plain_total[kind] * 1e3,
            veil_total[kind] * 1e3,
            ratio(veil_total[kind] / plain_total[kind]),
            ratio(median(&all_ratios[kind])),
            ratio(all_ratios[kind].iter().copied().fold(0.0, f64::max)),
        )
    };
    let report = format!(
        "## Planning: plain DataFusion vs Veil's guarded planning\n\n\
         Queries over TPC-H, {} alternating iterations each; medians.\n\n- {}\n- {}\n\n{}",
        args.iterations,
        summary(0, "exact-aggregate"),
        summary(1, "anonymized"),
        table.markdown(),
    );
    println!("{report}");
    std::fs::write(results.join("planning.md"), &report)?;
    std::fs::write(results.join("planning.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}

/// Rows in a Parquet file, from its footer.
fn rows(path: &std::path::Path) -> Result<u64> {
    use parquet::file::reader::FileReader;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(path)?)?;
    Ok(u64::try_from(reader.metadata().file_metadata().num_rows())?)
}

/// Whether `sql` names `tpch.<table>` (not as a prefix of a longer name).
fn mentions(sql: &str, table: &str) -> bool {
    let qualified = format!("{}.{table}", tpch::DEPARTMENT);
    sql.match_indices(&qualified)
        .any(|(at, _)| !sql[at + qualified.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
}
