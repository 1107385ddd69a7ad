//! Comparison 6: building de-identified extracts. A synthetic registry of people (birth date,
//! district code, gender, age; diagnosis and subsidy sensitive) at 1M and 10M rows; the
//! extract of four columns is built within the base release of every column, as the broker
//! builds it. Each size reports the build time, the process's peak resident memory during the
//! build (reset before), the lattice nodes evaluated, the records suppressed, and the ratio to
//! one DataFusion pass that groups the same rows by their exact quasi-identifiers and counts
//! distinct people (the least any k-anonymity check has to do). Then the cost the broker pays
//! per extract already released when it compares a new one with it by its rows: the new extract
//! written as Parquet, both files read back, the multisets of rows subtracted.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use parquet::arrow::ArrowWriter;
use serde_json::json;
use veil_extract::{ColumnSpec, Role, Spec};

use crate::scale::{reset_peak_rss, rss_kib};
use crate::stats::{Table, ratio};
use crate::{Common, Result};

/// Arguments of `veil-bench extract`.
#[derive(Debug, Args)]
pub(crate) struct ExtractArgs {
    #[command(flatten)]
    common: Common,
    /// Row counts to build extracts of, comma-separated.
    #[arg(long, default_value = "1000000,10000000", value_delimiter = ',')]
    rows: Vec<usize>,
}

pub(crate) async fn run(args: ExtractArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let mut table = Table::new(&[
        "rows",
        "build s",
        "one group-by pass s",
        "ratio",
        "peak RSS MiB (input held)",
        "input MiB",
        "nodes evaluated",
        "suppressed",
        "chosen levels",
        "compare with one release s",
        "peak RSS MiB (compare)",
    ]);
    let mut raw = Vec::new();
    for rows in args.rows {
        eprintln!("extract: {rows} rows");
        let batch = registry(rows);
        let input_mib = batch.get_array_memory_size() >> 20;
        let baseline = group_by_pass(&batch).await?;
        reset_peak_rss()?;
        let started = Instant::now();
        let extract = veil_extract::build_within(std::slice::from_ref(&batch), &base(), &wanted(), &mut |_| {})?;
        let seconds = started.elapsed().as_secs_f64();
        let peak = rss_kib("VmHWM:")? >> 10;
        let (compare, compare_peak) = compare_with_release(&batch, &extract, &args.common.out)?;
        let r = &extract.report;
        let levels = r
            .columns
            .iter()
            .filter(|c| c.role == "quasi_identifier")
            .map(|c| format!("{} {}", c.name, c.treatment))
            .collect::<Vec<_>>()
            .join(", ");
        table.row(vec![
            rows.to_string(),
            format!("{seconds:.1}"),
            format!("{baseline:.2}"),
            ratio(seconds / baseline),
            peak.to_string(),
            input_mib.to_string(),
            format!("{} of {}", r.nodes_evaluated, r.lattice),
            format!("{} ({:.2}%)", r.suppressed_records, 100.0 * r.suppressed_records as f64 / rows as f64),
            levels.clone(),
            format!("{compare:.1}"),
            compare_peak.to_string(),
        ]);
        raw.push(json!({"rows": rows, "seconds": seconds, "group_by_seconds": baseline, "peak_rss_mib": peak,
                        "input_mib": input_mib, "nodes_evaluated": r.nodes_evaluated, "lattice": r.lattice,
                        "suppressed": r.suppressed_records, "levels": levels,
                        "compare_seconds": compare, "compare_peak_rss_mib": compare_peak}));
    }
    let report = format!(
        "## Extracts: building a k-anonymous, l-diverse extract within its base release\n\n\
         k = 10, l = 2, at most 5% suppressed; base: every quasi-identifier and sensitive column. \
         The ratio is the build over one DataFusion group-by pass of the same in-memory rows. \
         Comparing: the extract and one released before it (the same spec, another key), both read \
         from Parquet and their rows subtracted, as the broker does for each release.\n\n{}",
        table.markdown()
    );
    println!("{report}");
    std::fs::write(results.join("extract.md"), &report)?;
    std::fs::write(results.join("extract.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}

/// Seconds and peak RSS (MiB, reset before) for comparing `extract` with one released extract
/// of the same rows by their values, as the broker does for every release at each request and
/// approval: both written to Parquet first (not timed), then read and subtracted.
fn compare_with_release(batch: &RecordBatch, extract: &veil_extract::Extract, out: &Path) -> Result<(f64, u64)> {
    let dir = out.join("extract");
    std::fs::create_dir_all(&dir)?;
    let mut released = wanted();
    released.key = [9; 32];
    let released = veil_extract::build_within(std::slice::from_ref(batch), &base(), &released, &mut |_| {})?;
    let (new, old) = (dir.join("new.parquet"), dir.join("released.parquet"));
    for (path, e) in [(&new, extract), (&old, &released)] {
        let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, e.batch.schema(), None)?;
        writer.write(&e.batch)?;
        writer.close()?;
    }
    let roles: Vec<(String, String)> =
        extract.report.columns.iter().map(|c| (c.name.clone(), c.role.to_owned())).collect();
    drop(released);
    reset_peak_rss()?;
    let started = Instant::now();
    let a = veil_extract::ReleasedRows::read(&new, &roles)?;
    let b = veil_extract::ReleasedRows::read(&old, &roles)?;
    let differs = veil_extract::differs_by_few(&a, &b, 10, 2);
    let seconds = started.elapsed().as_secs_f64();
    let peak = rss_kib("VmHWM:")? >> 10;
    if differs {
        return Err("two extracts of the same rows were found to differ".into());
    }
    std::fs::remove_dir_all(&dir)?;
    Ok((seconds, peak))
}

/// A registry of `rows` people, one row each, from a fixed linear congruential sequence (no
/// generator crate needed for the bench's own data).
fn registry(rows: usize) -> RecordBatch {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let mut person = Vec::with_capacity(rows);
    let mut birth = Vec::with_capacity(rows);
    let mut district = Vec::with_capacity(rows);
    let mut gender = Vec::with_capacity(rows);
    let mut age = Vec::with_capacity(rows);
    let mut diagnosis = Vec::with_capacity(rows);
    let mut subsidy = Vec::with_capacity(rows);
    for i in 0..rows {
        let days = -7_300 + next(25_000) as i32; // 1950 to 2018
        person.push(format!("P{i:09}"));
        birth.push(days);
        district.push(format!("1101{:02}", next(16)));
        gender.push(if next(2) == 0 { "F" } else { "M" });
        age.push(i64::from(2026 - (1970 + days / 365)));
        diagnosis.push(["I10", "E11", "J45", "C50", "F32", "M54", "K21", "N18"][next(8) as usize]);
        subsidy.push(next(3_000) as f64 + if next(1000) == 0 { 50_000.0 } else { 0.0 });
    }
    RecordBatch::try_from_iter([
        ("person_id", Arc::new(StringArray::from(person)) as ArrayRef),
        ("birth_date", Arc::new(Date32Array::from(birth))),
        ("district", Arc::new(StringArray::from(district))),
        ("gender", Arc::new(StringArray::from(gender))),
        ("age", Arc::new(Int64Array::from(age))),
        ("diagnosis", Arc::new(StringArray::from(diagnosis))),
        ("subsidy", Arc::new(Float64Array::from(subsidy))),
    ])
    .expect("columns of equal length")
}

fn qi(name: &str) -> ColumnSpec {
    ColumnSpec { name: name.into(), role: Role::QuasiIdentifier { ladder: None, floor: None } }
}

fn spec(columns: Vec<ColumnSpec>) -> Spec {
    Spec {
        columns,
        unit: Some("person_id".into()),
        k: 10,
        l: 2,
        max_suppression: 0.05,
        max_rows_per_person: None,
        key: [7; 32],
    }
}

/// The base release: every quasi-identifier and sensitive column.
fn base() -> Spec {
    let mut s = spec(vec![
        ColumnSpec { name: "person_id".into(), role: Role::Pseudonym },
        qi("birth_date"),
        qi("district"),
        qi("gender"),
        qi("age"),
        ColumnSpec { name: "diagnosis".into(), role: Role::Sensitive { bounds: None } },
        ColumnSpec { name: "subsidy".into(), role: Role::Sensitive { bounds: Some((0.0, 5_000.0)) } },
    ]);
    s.max_suppression = 0.1;
    s
}

/// The extract an analyst asks for.
fn wanted() -> Spec {
    spec(vec![
        ColumnSpec { name: "person_id".into(), role: Role::Pseudonym },
        qi("birth_date"),
        qi("district"),
        ColumnSpec { name: "subsidy".into(), role: Role::Sensitive { bounds: Some((0.0, 5_000.0)) } },
    ])
}

/// Seconds for one DataFusion pass grouping the rows by their exact quasi-identifiers and
/// counting distinct people per group.
async fn group_by_pass(batch: &RecordBatch) -> Result<f64> {
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?))?;
    let started = Instant::now();
    ctx.sql("SELECT birth_date, district, gender, age, count(DISTINCT person_id) FROM t GROUP BY 1, 2, 3, 4")
        .await?
        .collect()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}
