//! Comparison 5: scale and memory. TPC-H `lineitem` at SF10 (60M rows) and `orders` (15M)
//! through Veil with the query memory pool at 2 GiB, asked by the department's own analyst with
//! exact aggregates (the memory behaviour of the engine, not the anonymizing shape, is measured): an aggregate with few groups, one with a
//! group per order (15M groups), and a join of the two tables. Each query reports its time,
//! the process's peak resident memory while it ran (the kernel's high-water mark, reset before
//! each query), and the most spill space it held under the data directory's `tmp/`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use veil_tests::TestServer;

use crate::overhead::veil_query;
use crate::stats::Table;
use crate::tpch;
use crate::{Common, Result};

/// Arguments of `veil-bench scale`.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    common: Common,
    /// TPC-H scale factor (10: lineitem has 60M rows).
    #[arg(long, default_value_t = 10.0)]
    scale: f64,
    /// The query memory pool, in MiB.
    #[arg(long, default_value_t = 2048)]
    memory_mb: usize,
}

const QUERIES: &[(&str, &str)] = &[
    (
        "Q1: 4 groups over lineitem",
        "SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice * (1 - l_discount)), avg(l_discount), count(*)
         FROM tpch.lineitem GROUP BY l_returnflag, l_linestatus",
    ),
    (
        "a group per order (15M groups at SF10), then totals",
        "SELECT count(*) AS orders, sum(q) AS quantity, max(q) AS largest
         FROM (SELECT l_orderkey, sum(l_quantity) AS q FROM tpch.lineitem GROUP BY l_orderkey) t",
    ),
    (
        "join orders ⋈ lineitem, by priority",
        "SELECT o_orderpriority, count(*) AS lines, sum(l_extendedprice) AS price
         FROM tpch.orders JOIN tpch.lineitem ON o_orderkey = l_orderkey GROUP BY o_orderpriority",
    ),
    (
        "the same join carrying order comments (build side over the pool)",
        "SELECT o_orderpriority, count(*) AS lines, max(length(o_comment)) AS longest_comment
         FROM tpch.orders JOIN tpch.lineitem ON o_orderkey = l_orderkey GROUP BY o_orderpriority",
    ),
];

pub(crate) async fn run(args: ScaleArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let files = tpch::generate(&args.common.out.join("tpch"), args.scale, &["lineitem", "orders"])?;
    let registered = tpch::register(TestServer::start().await, &files).await?;
    let limits = veil_query::Limits {
        memory_bytes: args.memory_mb << 20,
        deadline: Duration::from_secs(3600),
        ..veil_query::Limits::standard()
    };
    let server = registered.server.restart_with(limits).await;
    let spill_dir = server.data_dir().join("tmp");

    let mut table = Table::new(&["query", "seconds", "RSS before MiB", "peak RSS MiB", "peak spill MiB", "outcome"]);
    let mut raw = Vec::new();
    for (name, sql) in QUERIES {
        eprintln!("scale: {name}");
        reset_peak_rss()?;
        let before = rss_kib("VmRSS:")?;
        let watcher = SpillWatcher::start(&spill_dir);
        let started = Instant::now();
        let outcome = veil_query(&server, &registered.exact, "aggregate", sql).await;
        let seconds = started.elapsed().as_secs_f64();
        let spilled = watcher.stop();
        let peak = rss_kib("VmHWM:")?;
        let outcome = match outcome {
            Ok(body) => format!("ok, {} rows", body["rows"].as_array().map_or(0, Vec::len)),
            Err(e) => format!("failed: {e}"),
        };
        table.row(vec![
            (*name).to_owned(),
            format!("{seconds:.1}"),
            (before >> 10).to_string(),
            (peak >> 10).to_string(),
            (spilled >> 20).to_string(),
            outcome.clone(),
        ]);
        raw.push(json!({"query": name, "sql": sql, "seconds": seconds, "rss_before_kib": before, "peak_rss_kib": peak, "peak_spill_bytes": spilled, "outcome": outcome}));
    }
    let report = format!(
        "## Scale: TPC-H SF{} through Veil with a {} MiB query memory pool\n\n\
         RSS is the whole bench process's (server, client, and what the allocator kept from generating and registering the data); the peak is reset before each query.\n\n{}",
        args.scale,
        args.memory_mb,
        table.markdown()
    );
    println!("{report}");
    std::fs::write(results.join("scale.md"), &report)?;
    std::fs::write(results.join("scale.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}

/// Resets the kernel's record of this process's peak resident memory (Linux).
pub(crate) fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").map_err(|e| format!("resetting peak RSS: {e}").into())
}

/// A memory figure of this process in KiB (Linux): `VmRSS:` now, `VmHWM:` the peak since
/// the last reset.
pub(crate) fn rss_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line =
        status.lines().find(|l| l.starts_with(field)).ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    Ok(line.split_whitespace().nth(1).ok_or("malformed /proc/self/status")?.parse()?)
}

/// Samples the size of a directory tree every 100 ms; `stop` returns the largest seen.
struct SpillWatcher {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl SpillWatcher {
    fn start(dir: &Path) -> Self {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, p, dir) = (Arc::clone(&stop), Arc::clone(&peak), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(size(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
