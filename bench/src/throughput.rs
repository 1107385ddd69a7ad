//! Comparison 4: small aggregate queries from 1, 8 and 64 concurrent clients over loopback,
//! with the audit log synced to disk before each answer and without.
//!
//! The load comes from a small Rust client in this process (reqwest, one task per client,
//! each sending its next query as soon as the last is answered), sharing the runtime with the
//! server: on a 2-core machine the client's own work is part of what is measured, the same on
//! both sides of the ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use veil_tests::TestServer;

use crate::stats::{Table, quantile, ratio};
use crate::{Common, Result};

/// Arguments of `veil-bench throughput`.
#[derive(Debug, Args)]
pub(crate) struct ThroughputArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds of load per (clients, audit setting).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// The PUMS rows the queries run over.
    #[arg(long, default_value = "bench/data/PUMS_pid.csv")]
    pums: std::path::PathBuf,
}

const QUERY: &str = "SELECT sex, count(*) AS n, avg(income) AS avg_income FROM census.pums GROUP BY sex";

/// What one load run saw.
struct Load {
    per_second: f64,
    latencies: Vec<f64>,
}

pub(crate) async fn run(args: ThroughputArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let mut loads = Vec::new();
    for sync in [true, false] {
        let options = veil_audit::Options { sync, ..veil_audit::Options::default() };
        let server = Arc::new(TestServer::start_configured(usize::MAX, options).await);
        let analyst = register(&server, &args.pums).await?;
        for &clients in &args.clients {
            eprintln!("throughput: audit sync {sync}, {clients} clients, {} s", args.seconds);
            loads.push(load(&server, &analyst, clients, Duration::from_secs(args.seconds)).await?);
        }
    }
    let (on, off) = loads.split_at(args.clients.len());
    let mut table = Table::new(&[
        "clients",
        "synced: q/s",
        "p50 / p99 ms",
        "not synced: q/s",
        "p50 / p99 ms",
        "synced / not synced (q/s)",
    ]);
    let latency =
        |l: &Load| format!("{:.1} / {:.1}", quantile(&l.latencies, 0.5) * 1e3, quantile(&l.latencies, 0.99) * 1e3);
    for ((clients, on), off) in args.clients.iter().zip(on).zip(off) {
        table.row(vec![
            clients.to_string(),
            format!("{:.0}", on.per_second),
            latency(on),
            format!("{:.0}", off.per_second),
            latency(off),
            ratio(on.per_second / off.per_second),
        ]);
    }
    let report = format!(
        "## Throughput: audit durability on vs off\n\n`{QUERY}` in aggregate mode over the 1,000 PUMS rows (L2), \
         {} s per cell, clients in the same process over loopback.\n\n{}",
        args.seconds,
        table.markdown()
    );
    println!("{report}");
    std::fs::write(results.join("throughput.md"), &report)?;
    Ok(())
}

/// Registers the PUMS rows at L2 in department `census`; returns an analyst's token.
async fn register(server: &TestServer, pums: &std::path::Path) -> Result<String> {
    server.department("census", "统计局").await;
    let steward = server.user("census-steward", Some("census"), &["steward"]).await;
    let metadata = crate::dp::pums_metadata("pums", "L2");
    let (status, body) = server.upload(&steward, &metadata, std::fs::read(pums)?).await;
    if !status.is_success() {
        return Err(format!("registering PUMS: {status} {body}").into());
    }
    Ok(server.user("census-analyst", Some("census"), &["analyst"]).await)
}

/// `clients` tasks sending [`QUERY`] back to back for `duration`.
async fn load(server: &Arc<TestServer>, analyst: &str, clients: usize, duration: Duration) -> Result<Load> {
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let server = Arc::clone(server);
        let analyst = analyst.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let (status, body) =
                    server.post("/v1/query", &analyst, json!({"sql": QUERY, "mode": "aggregate"})).await;
                if !status.is_success() {
                    return Err(format!("{status} {body}"));
                }
                latencies.push(sent.elapsed().as_secs_f64());
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Load { per_second: latencies.len() as f64 / elapsed, latencies })
}
