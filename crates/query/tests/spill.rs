//! A join larger than the memory pool completes: DataFusion's hash join cannot spill, so the
//! engine runs such a plan again with sort-merge joins, whose sorts spill. Queries beyond the
//! process's memory wait their turn, and running out of memory or time is told generically
//! over data about people, as is a noisy sum beyond its integer type.

#![allow(clippy::unwrap_used)] // a failed fixture should fail the test loudly

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use veil_common::{Mode, Tag};
use veil_guard::{ColumnInfo, Contribution, DatasetInfo};
use veil_query::{Error, Limits, QueryEngine, QueryRequest, SessionDataset, parse};

const ROWS: i64 = 2_000_000;

/// `ROWS` rows of (k, v): k counts up, v = k mod 7.
fn table(dir: &Path, name: &str) -> SessionDataset {
    let schema =
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, false)]));
    let path: PathBuf = dir.join(format!("{name}.parquet"));
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), Arc::clone(&schema), None).unwrap();
    for start in (0..ROWS).step_by(50_000) {
        let k = Int64Array::from_iter_values(start..start + 50_000);
        let v = Int64Array::from_iter_values((start..start + 50_000).map(|i| i % 7));
        writer.write(&RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(k), Arc::new(v)]).unwrap()).unwrap();
    }
    writer.close().unwrap();
    let attribute =
        ColumnInfo { tag: Tag::Attribute, linkable: false, generalize: None, bounds: None, public_values: None };
    SessionDataset {
        dataset: format!("t.{name}").parse().unwrap(),
        path,
        rows: ROWS as u64,
        info: DatasetInfo {
            privacy_unit: None,
            columns: HashMap::from([("k".to_owned(), attribute.clone()), ("v".to_owned(), attribute)]),
            contribution: Contribution::default(),
            one_row_per_unit: false,
            capped: Default::default(),
            unique: Vec::new(),
            rows: 0,
        },
        capped_copy: None,
    }
}

/// The same table as about people: `k` is each person's id.
fn about_people(mut dataset: SessionDataset) -> SessionDataset {
    dataset.info.privacy_unit = Some("k".to_owned());
    if let Some(k) = dataset.info.columns.get_mut("k") {
        k.tag = Tag::Identifier;
    }
    dataset.info.one_row_per_unit = true;
    dataset
}

async fn join(engine: &QueryEngine, datasets: &[SessionDataset]) -> Result<Vec<i64>, Error> {
    counts(engine, datasets, "SELECT a.v, count(*) AS n FROM t.a a JOIN t.b b ON a.k = b.k GROUP BY a.v ORDER BY a.v")
        .await
}

/// The rows of each value of `v`, 0 to 6: the right count per group.
fn rows_per_v() -> Vec<i64> {
    (0..7).map(|v| (0..ROWS).filter(|k| k % 7 == v).count() as i64).collect()
}

/// Runs `sql` in aggregate mode over `datasets` (about nobody: exact) and returns its column `n`.
async fn counts(engine: &QueryEngine, datasets: &[SessionDataset], sql: &str) -> Result<Vec<i64>, Error> {
    let request = QueryRequest {
        mode: Mode::Aggregate,
        k: 0,
        datasets: datasets.to_vec(),
        dry_run: false,
        noise_key: [0; 32],
        exact_aggregates: false,
        dp: None,
    };
    let answer = engine.run(&parse(sql, 1 << 16).unwrap(), request).await?;
    let counts = answer.batches.iter().flat_map(|b| {
        let n = b.column_by_name("n").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        n.values().to_vec()
    });
    Ok(counts.collect())
}

#[tokio::test]
async fn a_join_larger_than_the_memory_pool_completes_by_spilling() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = [table(dir.path(), "a"), table(dir.path(), "b")];
    let expected = rows_per_v();

    // A 32 MiB pool is smaller than the hash join's build side (2M keys; checked by hand with
    // the fallback switched off: it fails): the answer comes from spilling sorts instead.
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let tight = Limits { memory_bytes: 32 << 20, ..Limits::standard() };
    let engine = QueryEngine::new(tight.clone(), &spill).unwrap();
    assert_eq!(join(&engine, &datasets).await.unwrap(), expected);
    assert!(std::fs::read_dir(&spill).unwrap().next().is_some(), "the sorts spilled under the spill directory");

    // Without spill space nothing can give, and the error says which limit was hit.
    let none = Limits { spill_bytes: 0, ..tight };
    let engine = QueryEngine::new(none, &spill).unwrap();
    assert!(matches!(join(&engine, &datasets).await, Err(Error::MemoryExceeded { .. })));
}

/// The memory of the process bounds all queries together: three analyst queries at once took
/// 7.5 GB before, each within its 1 GiB. As many run at once as their pools fit in the
/// process's memory; the others wait, and every one answers.
#[tokio::test]
async fn queries_beyond_the_memory_of_the_process_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = [table(dir.path(), "a"), table(dir.path(), "b")];
    let expected = rows_per_v();
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    // Room for one 32 MiB query at a time, and three asked at once. The deadline counts the
    // wait for a place, and three spilling joins one after the other on a busy two-core
    // machine took longer than the standard 30 s: what is tested here is that each answers.
    let one = Limits {
        memory_bytes: 32 << 20,
        total_memory_bytes: 48 << 20,
        deadline: std::time::Duration::from_secs(600),
        ..Limits::standard()
    };
    let engine = QueryEngine::new(one, &spill).unwrap();
    let answers = futures::future::join_all((0..3).map(|_| join(&engine, &datasets))).await;
    for answer in answers {
        assert_eq!(answer.unwrap(), expected);
    }
}

/// Leak: whether a query over people runs out of memory or time can depend on one person's
/// rows (a self-join that only grows when they exist), and the codes told it apart from a
/// success and from each other. Over people both are one generic failure while running, whose
/// audit detail keeps the cause; over data about nobody they keep their own, clearer errors.
#[tokio::test]
async fn running_out_of_memory_or_time_over_people_is_a_generic_failure() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = table(dir.path(), "a");
    let people = about_people(nobody.clone());
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let sql = "SELECT v, count(*) AS n FROM t.a GROUP BY v";
    let run = |limits: Limits, dataset: SessionDataset, k: u64| {
        let spill = spill.clone();
        async move {
            let engine = QueryEngine::new(limits, &spill).unwrap();
            let request = QueryRequest {
                mode: Mode::Aggregate,
                k,
                datasets: vec![dataset],
                dry_run: false,
                noise_key: [7; 32],
                exact_aggregates: false,
                dp: None,
            };
            engine.run(&parse(sql, 1 << 16).unwrap(), request).await
        }
    };
    let starved = Limits { memory_bytes: 1024, spill_bytes: 0, ..Limits::standard() };
    let hurried = Limits { deadline: std::time::Duration::from_millis(1), ..Limits::standard() };

    let memory = run(starved.clone(), nobody.clone(), 0).await.unwrap_err();
    assert!(matches!(memory, Error::MemoryExceeded { .. }), "{memory:?}");
    let time = run(hurried.clone(), nobody, 0).await.unwrap_err();
    assert!(matches!(time, Error::Timeout { .. }), "{time:?}");

    for (limits, cause) in [(starved, "memory limit"), (hurried, "deadline")] {
        let failed = run(limits, people.clone(), 5).await.unwrap_err();
        assert_eq!(failed.code(), "query_failed", "{failed:?}");
        assert_eq!(failed.kind(), veil_common::ErrorKind::Unprocessable);
        assert_eq!(failed.audit_detail(), Some(format!("failed while running ({cause})")));
    }
    // With room and time, the same query over people is answered.
    let answer = run(Limits::standard(), people, 5).await.unwrap();
    assert_eq!(answer.row_count(), 7);
}

/// Red team: per-group `COUNT(DISTINCT)` state escaped the query's pool (+3.9 GB for one query).
/// Two million distinct values in seven groups cannot fit a 32 MiB pool: a query with one
/// distinct count spills (DataFusion groups by the counted column too; the same answer, from
/// disk), one with two is refused for memory (as measured here); neither answers from memory
/// the pool never granted.
#[tokio::test]
async fn count_distinct_state_stays_inside_the_memory_pool() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = [table(dir.path(), "a")];
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let tight = Limits { memory_bytes: 32 << 20, ..Limits::standard() };
    let expected = rows_per_v();
    for sql in [
        "SELECT v, count(DISTINCT k) AS n FROM t.a GROUP BY v ORDER BY v",
        "SELECT v, count(DISTINCT k) AS n, count(DISTINCT k / 2) AS m FROM t.a GROUP BY v ORDER BY v",
    ] {
        let engine = QueryEngine::new(tight.clone(), &spill).unwrap();
        match counts(&engine, &datasets, sql).await {
            Ok(n) => {
                assert_eq!(n, expected);
                assert!(engine.spills().0 > 0, "{sql}: answered from memory the pool never granted");
            }
            Err(e) => assert!(matches!(e, Error::MemoryExceeded { .. }), "{sql}: {e:?}"),
        }
    }
}

/// A noisy sum beyond its integer type fails the answer, told as any failure while running;
/// cast safely, it came back NULL (a red team), a value no sum has.
#[tokio::test]
async fn a_noisy_sum_beyond_its_integer_type_is_a_generic_failure() {
    const PEOPLE: usize = 4_096;
    let dir = tempfile::tempdir().unwrap();
    let run = |each: i64| {
        let dir = dir.path().to_owned();
        async move {
            let ids: Vec<String> = (0..PEOPLE).map(|p| format!("P{p:04}")).collect();
            let batch = RecordBatch::try_from_iter([
                ("person_id", Arc::new(datafusion::arrow::array::StringArray::from(ids)) as _),
                ("x", Arc::new(Int64Array::from(vec![each; PEOPLE])) as _),
            ])
            .unwrap();
            let columns = HashMap::from([
                ("person_id".to_owned(), common::identifier()),
                ("x".to_owned(), common::column(Tag::Sensitive, Some((0.0, 4e15)))),
            ]);
            let file = format!("x{each}");
            let dataset = common::about_people((&dir, &file), "t.a", &batch, columns, Contribution::default(), true);
            let engine = QueryEngine::new(Limits::standard(), &dir).unwrap();
            let request = common::aggregate(vec![dataset], 5, [7; 32]);
            engine.run(&parse("SELECT sum(x) AS s FROM t.a", 1 << 16).unwrap(), request).await
        }
    };
    // 4,096 people of 4 × 10¹⁵ (each within the ±2⁵² an anonymized answer reads a 64-bit
    // integer as it is): about 1.6 × 10¹⁹, beyond 64-bit integers.
    let failed = run(4_000_000_000_000_000).await.unwrap_err();
    assert_eq!(failed.code(), "query_failed", "{failed:?}");
    assert_eq!(failed.audit_detail(), Some("failed while running (integer overflow)".to_owned()));
    // 4,096 of 2 × 10¹⁵ fit, and are answered (the noise's scale is about 10¹⁵ here: the
    // largest contributions).
    let answer = run(2_000_000_000_000_000).await.unwrap();
    let sums = answer.batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert!(sums.is_valid(0));
    assert!((sums.value(0) - 8_192_000_000_000_000_000).abs() < 20_000_000_000_000_000, "{:?}", sums.value(0));
}
