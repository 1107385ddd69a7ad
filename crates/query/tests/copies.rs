//! Copies of one quantity in aggregate mode, measured where the answer is made: a dataset whose
//! steward declared sixteen columns holding the same values, asked with a planted person and of
//! its twin without them, under one noise key.
//!
//! Leak (a red team, 2026-12-05): each SUM drew its own noise, seeded by the column's name, so
//! `SELECT district, count(*), sum(w0), …, sum(w31) … GROUP BY district` gave 33 samples of one
//! count in one query, and their average less the people the analyst knew was the target's
//! presence: membership 30 of 30 held out, and a flag 12 of 12 with `WHERE alone`. A measure's
//! people layer is now seeded by what it adds up (its people and what each row adds), so the
//! copies, and the count beside them, are one sample.

#![allow(clippy::unwrap_used)] // a failed fixture should fail the test loudly

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use veil_common::{Mode, Tag};
use veil_guard::{ColumnInfo, Contribution, DatasetInfo};
use veil_query::{Limits, QueryEngine, QueryRequest, SessionDataset, parse};

const COPIES: usize = 16;
const DISTRICTS: usize = 60;
const OTHERS: usize = 40;

/// Forty people a district, and with `target` one more: each with `COPIES` columns `w0…`
/// holding 1.0, declared within [0, 1].
fn dataset(dir: &Path, file: &str, target: bool) -> SessionDataset {
    let mut ids = Vec::new();
    let mut districts = Vec::new();
    for d in 0..DISTRICTS {
        for p in 0..OTHERS + usize::from(target) {
            ids.push(if p == OTHERS { format!("T{d:02}") } else { format!("P{d:02}{p:02}") });
            districts.push(format!("R{d:02}"));
        }
    }
    let rows = ids.len();
    let mut fields =
        vec![Field::new("person_id", DataType::Utf8, false), Field::new("district", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(ids)), Arc::new(StringArray::from(districts))];
    let column = |tag, bounds| ColumnInfo { tag, linkable: false, generalize: None, bounds, public_values: None };
    let mut info = HashMap::from([
        ("person_id".to_owned(), ColumnInfo { linkable: true, ..column(Tag::Identifier, None) }),
        ("district".to_owned(), column(Tag::QuasiIdentifier, None)),
    ]);
    for c in 0..COPIES {
        fields.push(Field::new(format!("w{c}"), DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from(vec![1.0; rows])));
        info.insert(format!("w{c}"), column(Tag::Sensitive, Some((0.0, 1.0))));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let path = dir.join(format!("{file}.parquet"));
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    SessionDataset {
        dataset: "civil.people".parse().unwrap(),
        path,
        rows: rows as u64,
        info: DatasetInfo {
            privacy_unit: Some("person_id".to_owned()),
            columns: info,
            contribution: Contribution::default(),
            one_row_per_unit: true,
            capped: Default::default(),
            rows: rows as u64,
        },
        capped_copy: None,
    }
}

/// Per released district, its `count(*)` and every copy's sum, in the SELECT list's order.
async fn answers(engine: &QueryEngine, dataset: &SessionDataset, sql: &str) -> Vec<Vec<f64>> {
    let request = QueryRequest {
        mode: Mode::Aggregate,
        k: 5,
        datasets: vec![dataset.clone()],
        dry_run: false,
        noise_key: [7; 32],
        exact_aggregates: false,
        dp: None,
    };
    let answer = engine.run(&parse(sql, 1 << 16).unwrap(), request).await.unwrap();
    let mut rows = Vec::new();
    for batch in &answer.batches {
        let numbers: Vec<Float64Array> = (1..batch.num_columns())
            .map(|i| {
                cast(batch.column(i), &DataType::Float64)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .clone()
            })
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(numbers.iter().map(|a| a.value(row)).collect());
        }
    }
    rows
}

#[tokio::test]
async fn copies_of_a_column_summed_in_one_query_are_one_sample() {
    let dir = tempfile::tempdir().unwrap();
    let (target, twin) = (dataset(dir.path(), "target", true), dataset(dir.path(), "twin", false));
    let engine = QueryEngine::new(Limits::standard(), dir.path()).unwrap();
    let sums: Vec<String> = (0..COPIES).map(|c| format!("sum(w{c}) AS s{c}")).collect();
    let sql = format!("SELECT district, count(*) AS n, {} FROM civil.people GROUP BY district", sums.join(", "));
    let (with, without) = (answers(&engine, &target, &sql).await, answers(&engine, &twin, &sql).await);
    assert_eq!((with.len(), without.len()), (DISTRICTS, DISTRICTS), "every district is released");
    // The attack: the average of the count and the copies, less the forty people known, said
    // "present" above one half.
    let score = |row: &Vec<f64>| row.iter().sum::<f64>() / row.len() as f64 - OTHERS as f64;
    let right = with.iter().filter(|r| score(r) > 0.5).count() + without.iter().filter(|r| score(r) <= 0.5).count();
    // One sample a district: as good as one count, about 64% (two in three at most, with room
    // for the spread of 120 trials); with a draw per copy it was nearly every one.
    assert!(right * 100 <= 2 * DISTRICTS * 75, "{right} of {} called right", 2 * DISTRICTS);
    // And directly: the copies agree, and with the count (whole people, so rounded alike).
    for row in with.iter().chain(&without) {
        assert!(row[1..].iter().all(|s| *s == row[1]), "the copies' sums differ: {row:?}");
        assert_eq!(row[0], row[1].round().max(0.0), "a count and a sum of ones differ: {row:?}");
    }
}
