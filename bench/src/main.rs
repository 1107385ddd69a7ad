//! `veil-bench`: Veil side by side with its peers, every comparison in one run, ratios first.
//! `bench/run` builds it in release mode, prepares the Python peers in their own virtual
//! environment and calls it; see BENCHMARKS.md for what each comparison measures.
//!
//! # Layout
//! - `overhead`: TPC-H aggregates through Veil vs raw DataFusion (and DuckDB): exact and
//!   anonymized, with the anonymized answers' utility.
//! - `anon`: anonymized aggregation on the demo world: groups released, errors, time.
//! - `planning`: guarded planning vs plain DataFusion planning, 30+ queries.
//! - `throughput`: 1/8/64 clients, audit synced vs not.
//! - `scale`: TPC-H SF10 under a 2 GiB memory pool: spill and peak RSS.
//! - `dp`: Veil's dp mode vs SmartNoise SQL on PUMS at equal total epsilon.
//! - `extract`: building de-identified extracts at 1M and 10M rows: time and peak RSS.
//! - `ingest`: registering a 1 GB CSV vs DuckDB's `read_csv`: rows/s and peak RSS.
//! - `transfer`: a 1M-row answer over Flight SQL vs HTTP JSON and HTTP Arrow.
//! - `tpch`: TPC-H data generation, tags and registration.
//! - `stats`: medians, quartiles and the results table.
//! - `utility`: released groups and values against the exact answer.

mod anon;
mod dp;
mod extract;
mod ingest;
mod overhead;
mod planning;
mod scale;
mod stats;
mod throughput;
mod tpch;
mod transfer;
mod utility;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Errors end the run with their message; a bench has no caller to recover.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Veil's benchmarks against its peers.
#[derive(Debug, Parser)]
#[command(name = "veil-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// TPC-H aggregates through Veil over HTTP vs raw DataFusion and DuckDB on the same Parquet.
    Tpch(overhead::TpchArgs),
    /// Dp mode vs SmartNoise SQL on PUMS (the real 1,000 rows and a derived 1.2M-row table).
    Dp(dp::DpArgs),
    /// Planning with the guard vs plain DataFusion planning, for queries of varied shape.
    Planning(planning::PlanningArgs),
    /// Queries per second and latency from 1, 8 and 64 clients, audit synced vs not.
    Throughput(throughput::ThroughputArgs),
    /// TPC-H SF10 through Veil under a 2 GiB query memory pool: time, spill, peak RSS.
    Scale(scale::ScaleArgs),
    /// Building de-identified extracts of 1M and 10M rows: time, peak RSS, suppression.
    Extract(extract::ExtractArgs),
    /// Anonymized aggregation on the demo world: utility against the exact answers, and time.
    Anon(anon::AnonArgs),
    /// A 1M-row answer fetched over Arrow Flight SQL vs HTTP JSON and HTTP Arrow IPC.
    Transfer(transfer::TransferArgs),
    /// A 1 GB CSV registered by Veil vs loaded by DuckDB's read_csv: rows/s and peak RSS.
    Ingest(ingest::IngestArgs),
}

/// Where results go and which Python runs the peers.
#[derive(Debug, Args)]
struct Common {
    /// Directory for generated data and results (`<out>/results/*.md`, `*.json`).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The Python interpreter of the virtual environment holding the Python peers.
    #[arg(long, default_value = "target/bench/venv/bin/python")]
    python: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Tpch(args) => overhead::run(args).await,
        Command::Dp(args) => dp::run(args).await,
        Command::Planning(args) => planning::run(args).await,
        Command::Throughput(args) => throughput::run(args).await,
        Command::Scale(args) => scale::run(args).await,
        Command::Extract(args) => extract::run(args).await,
        Command::Anon(args) => anon::run(args).await,
        Command::Transfer(args) => transfer::run(args).await,
        Command::Ingest(args) => ingest::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
