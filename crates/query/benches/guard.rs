//! Guard overhead, side by side with plain DataFusion on the same data in the same process:
//! 1. planning: parse + plan + analyze + optimize, plain vs through the guarded engine (a dry
//!    run: per-request session, policy-free guard check and rewrite);
//! 2. end to end: heavy aggregates over 2 M rows, plain `ctx.sql().collect()` vs the engine
//!    (threshold rewrite, memory pool, deadline), and plain DataFusion running the same queries
//!    with the per-group count of distinct people added by hand (`plain_counting_people`).
//!
//! Run with `cargo bench -p veil-query --bench guard`; compare the `veil` and `plain` lines of
//! each group (criterion prints both), and report the ratio.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use veil_common::{Mode, Tag};
use veil_guard::{ColumnInfo, Contribution, DatasetInfo};
use veil_query::{Limits, QueryEngine, QueryRequest, SessionDataset, parse};

const ROWS: usize = 2_000_000;

const PLANNING: &[&str] = &[
    "SELECT district, count(*) FROM bench.people GROUP BY district",
    "SELECT district, count(DISTINCT person_id), sum(amount), avg(amount) FROM bench.people GROUP BY district",
    "SELECT district, kind, count(*) FROM bench.people WHERE amount > 100 AND kind IN ('a', 'b') GROUP BY district, kind ORDER BY 3 DESC LIMIT 10",
    "WITH t AS (SELECT district, amount FROM bench.people WHERE kind = 'c') SELECT district, stddev(amount) FROM t GROUP BY district",
    "SELECT a.district, count(*) FROM bench.people a JOIN bench.people b ON a.person_id = b.person_id GROUP BY a.district",
    "SELECT district, count(*) FROM bench.people p WHERE EXISTS (SELECT 1 FROM bench.people q WHERE q.person_id = p.person_id AND q.kind = 'a') GROUP BY district",
    "SELECT district, n, lag(n) OVER (ORDER BY district) FROM (SELECT district, count(*) AS n FROM bench.people GROUP BY district) g",
    "SELECT CASE WHEN amount > 500 THEN 'high' ELSE 'low' END AS band, count(*) FROM bench.people GROUP BY 1",
];

/// [`HEAVY`] by hand with the per-group distinct count the threshold rewrite adds, run plainly:
/// how much of the broker's cost is counting people at all.
const HEAVY_WITH_UNITS: &[&str] = &[
    "SELECT district, count(*), sum(amount), avg(amount), count(DISTINCT person_id) FROM bench.people GROUP BY district",
    "SELECT district, kind, count(DISTINCT person_id), avg(amount), count(DISTINCT person_id) AS u FROM bench.people GROUP BY district, kind",
];

const HEAVY: &[&str] = &[
    "SELECT district, count(*), sum(amount), avg(amount) FROM bench.people GROUP BY district",
    "SELECT district, kind, count(DISTINCT person_id), avg(amount) FROM bench.people GROUP BY district, kind",
];

fn write_data(dir: &Path) -> PathBuf {
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Utf8, false),
        Field::new("district", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("seq", DataType::Int64, false),
    ]));
    let path = dir.join("people.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), None).unwrap();
    let chunk = 100_000;
    for start in (0..ROWS).step_by(chunk) {
        let ids = (start..start + chunk).map(|i| format!("1101{:014}", i % (ROWS / 3)));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(ids)),
            Arc::new(StringArray::from_iter_values((start..start + chunk).map(|i| format!("区{}", i % 16)))),
            Arc::new(StringArray::from_iter_values((start..start + chunk).map(|i| ["a", "b", "c", "d"][i % 4]))),
            Arc::new(Float64Array::from_iter_values((start..start + chunk).map(|i| (i * 37 % 1000) as f64))),
            Arc::new(Int64Array::from_iter_values((start..start + chunk).map(|i| i as i64))),
        ];
        writer.write(&RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()).unwrap();
    }
    writer.close().unwrap();
    path
}

fn request(path: &Path, dry_run: bool) -> QueryRequest {
    let tag = |tag, linkable| ColumnInfo { tag, linkable, generalize: None, bounds: None, public_values: None };
    let columns = HashMap::from([
        ("person_id".to_owned(), tag(Tag::Identifier, true)),
        ("district".to_owned(), tag(Tag::QuasiIdentifier, false)),
        ("kind".to_owned(), tag(Tag::Attribute, false)),
        ("amount".to_owned(), tag(Tag::Sensitive, false)),
        ("seq".to_owned(), tag(Tag::Attribute, false)),
    ]);
    QueryRequest {
        mode: Mode::Aggregate,
        k: 10,
        datasets: vec![SessionDataset {
            dataset: "bench.people".parse().expect("a valid dataset reference"),
            path: path.to_path_buf(),
            rows: ROWS as u64,
            info: DatasetInfo {
                privacy_unit: Some("person_id".into()),
                columns,
                contribution: Contribution::default(),
                one_row_per_unit: false,
                capped: Default::default(),
                unique: Vec::new(),
                rows: 0,
            },
            capped_copy: None,
        }],
        dry_run,
        noise_key: [0; 32],
        exact_aggregates: false,
        dp: None,
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_data(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = QueryEngine::new(Limits::standard(), dir.path()).unwrap();
    let plain = SessionContext::new();
    rt.block_on(async {
        plain.sql("CREATE SCHEMA bench").await.unwrap();
        plain.register_parquet("bench.people", path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    });

    let mut group = c.benchmark_group("planning");
    group.bench_function("plain", |b| {
        b.to_async(&rt).iter(|| async {
            for sql in PLANNING {
                let state = plain.state();
                let plan = state.create_logical_plan(sql).await.unwrap();
                state.optimize(&plan).unwrap();
            }
        })
    });
    group.bench_function("veil", |b| {
        b.to_async(&rt).iter(|| async {
            for sql in PLANNING {
                let parsed = parse(sql, 1 << 16).unwrap();
                engine.run(&parsed, request(&path, true)).await.unwrap();
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("heavy_aggregates");
    group.sample_size(10);
    group.bench_function("plain", |b| {
        b.to_async(&rt).iter(|| async {
            for sql in HEAVY {
                plain.sql(sql).await.unwrap().collect().await.unwrap();
            }
        })
    });
    group.bench_function("plain_counting_people", |b| {
        b.to_async(&rt).iter(|| async {
            for sql in HEAVY_WITH_UNITS {
                plain.sql(sql).await.unwrap().collect().await.unwrap();
            }
        })
    });
    group.bench_function("veil", |b| {
        b.to_async(&rt).iter(|| async {
            for sql in HEAVY {
                let parsed = parse(sql, 1 << 16).unwrap();
                engine.run(&parsed, request(&path, false)).await.unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(guard, benches);
criterion_main!(guard);
