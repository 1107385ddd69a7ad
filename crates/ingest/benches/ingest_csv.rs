//! Ingesting a large CSV: rows/s and peak memory, Veil's path against a raw baseline.
//!
//! Run with `cargo bench -p veil-ingest --bench ingest_csv` (size in MiB from
//! `VEIL_BENCH_CSV_MB`, default 1024). It writes a synthetic CSV of that size to a temporary
//! directory, then ingests it twice, each in a fresh child process so peak RSS is its own:
//!
//! - `raw`: `arrow::csv` with the schema given, straight into a Parquet `ArrowWriter` with
//!   default settings (what a hand-written loader would do);
//! - `veil`: `veil_ingest::open` + `write_parquet` (type inference on a sample, text read, cast
//!   with line-precise errors, bounded row groups, fsync).
//!
//! It prints rows/s and peak RSS for both, and the ratios.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn write_csv(path: &Path, target_bytes: u64) -> u64 {
    let file = std::fs::File::create(path).expect("create csv");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "person_id,district,age,cost,visit_date,chronic,note").expect("write");
    let districts = ["东城区", "西城区", "朝阳区", "丰台区", "海淀区", "通州区"];
    let mut written = 0u64;
    let mut rows = 0u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while written < target_bytes {
        // xorshift: cheap, deterministic filler; nothing here needs to be random-quality.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = format!(
            "1101051950{:08},{},{},{}.{:02},2025-{:02}-{:02},{},visit note {}\n",
            x % 100_000_000,
            districts[(x % 6) as usize],
            60 + x % 35,
            x % 5000,
            x % 100,
            1 + x % 12,
            1 + x % 28,
            if x.is_multiple_of(3) { "true" } else { "false" },
            x % 1000
        );
        out.write_all(line.as_bytes()).expect("write");
        written += line.len() as u64;
        rows += 1;
    }
    out.flush().expect("flush");
    rows
}

fn child(mode: &str, src: &Path, dst: &Path) {
    let started = Instant::now();
    let rows = match mode {
        "raw" => {
            let schema = Arc::new(Schema::new(vec![
                Field::new("person_id", DataType::Utf8, true),
                Field::new("district", DataType::Utf8, true),
                Field::new("age", DataType::Int64, true),
                Field::new("cost", DataType::Float64, true),
                Field::new("visit_date", DataType::Date32, true),
                Field::new("chronic", DataType::Boolean, true),
                Field::new("note", DataType::Utf8, true),
            ]));
            let file = std::fs::File::open(src).expect("open");
            let reader =
                arrow::csv::ReaderBuilder::new(Arc::clone(&schema)).with_header(true).build(file).expect("reader");
            let out = std::fs::File::create(dst).expect("create");
            let mut writer = parquet::arrow::ArrowWriter::try_new(out, schema, None).expect("writer");
            let mut rows = 0u64;
            for batch in reader {
                let batch = batch.expect("batch");
                rows += batch.num_rows() as u64;
                writer.write(&batch).expect("write");
            }
            writer.close().expect("close");
            rows
        }
        _ => {
            let source = veil_ingest::open(
                src,
                veil_ingest::SourceFormat::Csv,
                &veil_ingest::ReadOptions::with_declared(HashMap::new()),
            )
            .expect("open");
            veil_ingest::write_parquet(source, dst, |_| Ok(())).expect("write").rows
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!("{mode} {rows} {secs} {}", peak_rss_mib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]), Path::new(&args[i + 3]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe this.
    }
    let mib: u64 = std::env::var("VEIL_BENCH_CSV_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.csv");
    let started = Instant::now();
    let rows = write_csv(&src, mib * 1024 * 1024);
    let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {rows} rows, {:.0} MiB of CSV in {:.1}s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().expect("current exe");
    let mut results = HashMap::new();
    for mode in ["raw", "veil"] {
        let dst = dir.path().join(format!("{mode}.parquet"));
        let out = Command::new(&exe).args(["--child", mode]).arg(&src).arg(&dst).output().expect("child");
        assert!(out.status.success(), "{mode} failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let f: Vec<&str> = line.split_whitespace().collect();
        let (rows, secs, rss): (f64, f64, f64) =
            (f[1].parse().unwrap_or(0.0), f[2].parse().unwrap_or(f64::NAN), f[3].parse().unwrap_or(f64::NAN));
        let out_size = std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
        println!(
            "{mode:<5} {rows:>12.0} rows  {secs:>7.2}s  {:>12.0} rows/s  peak RSS {rss:>7.1} MiB  parquet {out_size:.0} MiB",
            rows / secs
        );
        results.insert(mode, (rows / secs, rss));
        let _ = std::fs::remove_file(&dst);
    }
    let (raw, veil) = (results["raw"], results["veil"]);
    println!("veil/raw: throughput {:.2}x, peak RSS {:.2}x", veil.0 / raw.0, veil.1 / raw.1);
}
