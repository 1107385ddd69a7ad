//! Comparison 9: ingesting a large CSV. A 1 GB file of people as a department exports them
//! (an 18-character resident id, a Chinese name and district, a phone number, a birth date, a
//! visit time, an ICD-10 code, a cost with cents, a subsidy, a flag and a note) is registered
//! through the JSON API as a steward would (the file under the import root: Veil detects the
//! dialect and types, checks every value against the metadata, checks that the privacy unit
//! holds one row per person and writes Parquet, fsynced), and loaded by DuckDB's `read_csv`,
//! once written to Parquet (the same work) and once into its own table. Rows/s and each
//! process's peak resident memory.
//!
//! A second file holds the same rows as hand-kept exports do (GB18030, dates as `1932/7/31` and
//! `2024年1月5日` row by row, costs as `"1,500.12"`): Veil only (DuckDB reads that encoding
//! only through an extension from the network, and not those dates as dates), its rows/s
//! against the clean file's.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};
use veil_tests::TestServer;

use crate::scale::{reset_peak_rss, rss_kib};
use crate::stats::{Table, ratio};
use crate::{Common, Result};

/// Arguments of `veil-bench ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    common: Common,
    /// Size of the generated CSV in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// DuckDB's side.
    #[arg(long, default_value = "bench/duckdb_ingest.py")]
    script: PathBuf,
}

/// One ingest measured.
struct Measured {
    rows: u64,
    seconds: f64,
    peak_rss_mib: f64,
}

pub(crate) async fn run(args: IngestArgs) -> Result<()> {
    let results = args.common.out.join("results");
    let dir = args.common.out.join("ingest");
    std::fs::create_dir_all(&results)?;
    std::fs::create_dir_all(&dir)?;
    let clean = dir.join(format!("people_{}mib.csv", args.mib));
    let messy = dir.join(format!("people_{}mib_gb18030.csv", args.mib));
    let rows = generate(&clean, &messy, args.mib << 20)?;
    let mib = |p: &Path| -> Result<f64> { Ok(std::fs::metadata(p)?.len() as f64 / 1_048_576.0) };
    let (clean_mib, messy_mib) = (mib(&clean)?, mib(&messy)?);

    eprintln!("ingest: Veil, {rows} rows, {clean_mib:.0} MiB");
    let veil = register(&dir, &clean, false).await?;
    eprintln!("ingest: Veil, the GB18030 file");
    let veil_messy = register(&dir, &messy, true).await?;
    let mut duckdb = Vec::new();
    let mut version = String::new();
    for (mode, threads) in [("parquet", 2), ("parquet", 1), ("table", 2)] {
        eprintln!("ingest: DuckDB {mode}, {threads} threads");
        let (measured, v) = duckdb_ingest(&args, &dir, &clean, mode, threads)?;
        version = v;
        duckdb.push((mode, threads, measured));
    }
    for m in [&veil, &veil_messy].into_iter().chain(duckdb.iter().map(|d| &d.2)) {
        if m.rows != rows {
            return Err(format!("an ingest read {} rows of {rows}", m.rows).into());
        }
    }

    let mut table =
        Table::new(&["file", "ingest", "rows", "s", "rows/s", "MiB/s", "peak RSS MiB", "Veil rows/s ÷ this"]);
    let mut raw = Vec::new();
    let veil_rate = rows as f64 / veil.seconds;
    let mut line = |file: &str, size: f64, name: String, m: &Measured| {
        let rate = m.rows as f64 / m.seconds;
        table.row(vec![
            file.into(),
            name.clone(),
            m.rows.to_string(),
            format!("{:.1}", m.seconds),
            format!("{:.0}", rate),
            format!("{:.1}", size / m.seconds),
            format!("{:.0}", m.peak_rss_mib),
            ratio(veil_rate / rate),
        ]);
        raw.push(json!({"file": file, "ingest": name, "rows": m.rows, "seconds": m.seconds,
                        "mib": size, "peak_rss_mib": m.peak_rss_mib}));
    };
    line("clean UTF-8", clean_mib, "Veil registration".into(), &veil);
    for (mode, threads, m) in &duckdb {
        let name = match *mode {
            "parquet" => format!("DuckDB {version} read_csv → Parquet, {threads} thread(s)"),
            _ => format!("DuckDB {version} read_csv → table, {threads} thread(s)"),
        };
        line("clean UTF-8", clean_mib, name, m);
    }
    line("GB18030, mixed date forms, 1,500.12", messy_mib, "Veil registration".into(), &veil_messy);
    let report = format!(
        "## Ingest: a {clean_mib:.0} MiB CSV registered by Veil vs loaded by DuckDB's read_csv\n\n\
         Veil's peak RSS is the whole server's (reset before the registration); DuckDB's is its \
         Python process's (the interpreter alone is about 40 MiB).\n\n{}",
        table.markdown()
    );
    println!("{report}");
    std::fs::write(results.join("ingest.md"), &report)?;
    std::fs::write(results.join("ingest.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}

/// Registers `csv` on a new server in `dir` as a steward of civil affairs would, measuring
/// the registration request.
async fn register(dir: &Path, csv: &Path, messy: bool) -> Result<Measured> {
    let server = TestServer::start_in(dir).await;
    server.department("civil", "民政局").await;
    let steward = server.user("steward", Some("civil"), &["steward"]).await;
    let source = "people.csv";
    let linked = server.import_root().join(source);
    if std::fs::hard_link(csv, &linked).is_err() {
        std::fs::copy(csv, &linked)?;
    }
    let mut metadata = json!({
        "name": "people", "department": "civil", "level": "L3", "privacy_unit": "resident_id", "one_row_per_person": true,
        "source": source,
        "columns": {
            "resident_id": {"tag": "identifier", "linkable": true},
            "name": {"tag": "identifier"},
            "gender": {"tag": "quasi_identifier"},
            "birth_date": {"tag": "quasi_identifier", "generalize": "year"},
            "district": {"tag": "quasi_identifier"},
            "phone": {"tag": "identifier", "type": "string"},
            "visit_time": {"tag": "attribute"},
            "icd10": {"tag": "sensitive"},
            "cost": {"tag": "sensitive", "bounds": [0, 10000]},
            "subsidy": {"tag": "sensitive", "bounds": [0, 5000]},
            "chronic": {"tag": "attribute"},
            "note": {"tag": "attribute"}
        }
    });
    if messy {
        metadata["encoding"] = json!("gb18030");
    }
    reset_peak_rss()?;
    let started = Instant::now();
    let (status, body) = server.post("/v1/datasets", &steward, metadata).await;
    let seconds = started.elapsed().as_secs_f64();
    let peak = rss_kib("VmHWM:")? as f64 / 1024.0;
    if !status.is_success() {
        return Err(format!("registering {}: {status} {body}", csv.display()).into());
    }
    let rows = body["row_count"]
        .as_u64()
        .or_else(|| body["rows"].as_u64())
        .ok_or_else(|| format!("no row count in {body}"))?;
    Ok(Measured { rows, seconds, peak_rss_mib: peak })
}

/// DuckDB loading `csv` in a process of its own.
fn duckdb_ingest(args: &IngestArgs, dir: &Path, csv: &Path, mode: &str, threads: u32) -> Result<(Measured, String)> {
    let out = dir.join(format!("duckdb_{mode}.out"));
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(out.with_extension("out.wal"));
    let output = std::process::Command::new(&args.common.python)
        .arg(&args.script)
        .args([mode, &csv.display().to_string(), &out.display().to_string(), &threads.to_string()])
        .output()?;
    let _ = std::fs::remove_file(&out);
    if !output.status.success() {
        return Err(format!("DuckDB {mode}: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let v: Value = serde_json::from_slice(&output.stdout)?;
    let number = |k: &str| v[k].as_f64().ok_or_else(|| format!("DuckDB's answer has no {k}: {v}"));
    Ok((
        Measured { rows: number("rows")? as u64, seconds: number("seconds")?, peak_rss_mib: number("peak_rss_mib")? },
        v["version"].as_str().unwrap_or("?").to_owned(),
    ))
}

/// Writes the clean and the messy file (once; both reused while their size holds) and returns
/// the rows each holds.
fn generate(clean: &Path, messy: &Path, bytes: u64) -> Result<u64> {
    let rows_file = clean.with_extension("rows");
    if let (true, true, Ok(rows)) = (clean.exists(), messy.exists(), std::fs::read_to_string(&rows_file)) {
        return Ok(rows.trim().parse()?);
    }
    eprintln!("ingest: generating {} MiB of CSV, twice", bytes >> 20);
    let mut plain = BufWriter::with_capacity(1 << 20, std::fs::File::create(clean.with_extension("partial"))?);
    let mut kept = BufWriter::with_capacity(1 << 20, std::fs::File::create(messy.with_extension("partial"))?);
    let header = "resident_id,name,gender,birth_date,district,phone,visit_time,icd10,cost,subsidy,chronic,note\n";
    plain.write_all(header.as_bytes())?;
    kept.write_all(&gb18030(header))?;
    let mut written = 0u64;
    let mut rows = 0u64;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: u64| {
        // A fixed linear congruential sequence: the bench's own data needs no generator crate.
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    const SURNAMES: [&str; 8] = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄"];
    const GIVEN: [&str; 8] = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强"];
    const DISTRICTS: [&str; 6] = ["东城区", "西城区", "朝阳区", "丰台区", "海淀区", "通州区"];
    const ICD10: [&str; 8] = ["I10", "E11.9", "J45", "C50.9", "F32", "M54.5", "K21.0", "N18.3"];
    while written < bytes {
        let (year, month, day) = (1930 + next(90), 1 + next(12), 1 + next(28));
        let (visit_month, visit_day) = (1 + next(12), 1 + next(28));
        let (hour, minute, second) = (next(24), next(60), next(60));
        let cents = next(1_000_000);
        let id = format!("11{rows:015}{}", ["X", "1", "7"][next(3) as usize]);
        let name = format!("{}{}", SURNAMES[next(8) as usize], GIVEN[next(8) as usize]);
        let gender = ["男", "女"][next(2) as usize];
        let district = DISTRICTS[next(6) as usize];
        let phone = format!("13{:09}", next(1_000_000_000));
        let icd = ICD10[next(8) as usize];
        let subsidy = next(5000);
        let chronic = next(3) == 0;
        let note = format!("第{}次随访", 1 + next(20));
        let line = format!(
            "{id},{name},{gender},{year}-{month:02}-{day:02},{district},{phone},2025-{visit_month:02}-{visit_day:02} \
             {hour:02}:{minute:02}:{second:02},{icd},{}.{:02},{subsidy},{chronic},{note}\n",
            cents / 100,
            cents % 100
        );
        let birth = if rows.is_multiple_of(2) {
            format!("{year}/{month}/{day}")
        } else {
            format!("{year}年{month}月{day}日")
        };
        let cost = thousands(cents);
        let hand = format!(
            "{id},{name},{gender},{birth},{district},{phone},2025/{visit_month}/{visit_day} \
             {hour:02}:{minute:02}:{second:02},{icd},\"{cost}\",{subsidy},{chronic},{note}\n"
        );
        plain.write_all(line.as_bytes())?;
        kept.write_all(&gb18030(&hand))?;
        written += line.len() as u64;
        rows += 1;
    }
    for (file, path) in [(plain, clean), (kept, messy)] {
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(path.with_extension("partial"), path)?;
    }
    std::fs::write(&rows_file, rows.to_string())?;
    Ok(rows)
}

fn gb18030(text: &str) -> Vec<u8> {
    encoding_rs::GB18030.encode(text).0.into_owned()
}

/// `cents` as a sum with thousands separators: `1,500.12`.
fn thousands(cents: u64) -> String {
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}.{:02}", cents % 100)
}
