//! The walkthroughs under `examples/`, run through the real server over the demo world and
//! checked against the generator's ground truth (plain DataFusion over the generated batches).

#![allow(clippy::unwrap_used)] // tests: a failed fixture should fail the test loudly

use std::path::PathBuf;

use datafusion::arrow::json::ArrayWriter;
use datafusion::prelude::SessionContext;
use reqwest::StatusCode;
use serde_json::{Value, json};
use veil_tests::demo::Demo;

/// The demo's default size, so answers match what `veil serve --demo` shows.
const PEOPLE: usize = 20_000;

fn example(scenario: &str, file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(scenario).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rows of a truth query, as JSON arrays in column order.
async fn truth_rows(ctx: &SessionContext, sql: &str) -> Vec<Vec<Value>> {
    let df = ctx.sql(sql).await.unwrap();
    let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let batches = df.collect().await.unwrap();
    let mut writer = ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    let buffer = writer.into_inner();
    let objects: Vec<serde_json::Map<String, Value>> =
        if buffer.is_empty() { Vec::new() } else { serde_json::from_slice(&buffer).unwrap() };
    objects.into_iter().map(|o| names.iter().map(|n| o.get(n).cloned().unwrap_or(Value::Null)).collect()).collect()
}

/// Equal as answers: numbers within 1e-9 relative, everything else exactly.
fn same(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| match (u.as_f64(), v.as_f64()) {
                    (Some(u), Some(v)) => (u - v).abs() <= 1e-9 * u.abs().max(v.abs()).max(1.0),
                    _ => u == v,
                })
        })
}

async fn answer(demo: &Demo, user: &str, sql: &str) -> Value {
    let (status, body) =
        demo.server.post("/v1/query", &demo.tokens[user], json!({"sql": sql, "mode": "aggregate"})).await;
    assert_eq!(status, StatusCode::OK, "{sql}: {body}");
    body
}

fn rows(body: &Value) -> Vec<Vec<Value>> {
    body["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect()
}

#[tokio::test]
async fn hotline_trends_match_the_ground_truth() {
    let demo = Demo::start(PEOPLE).await;
    let truth = demo.truth().await;
    // The civil affairs analyst reads another department's L2 tickets as aggregates.
    let analyst = "civil-analyst";

    // 1. Volume per district, category and month: exact, with groups of fewer than k = 5
    // callers suppressed and counted.
    let body = answer(&demo, analyst, &example("hotline-trends", "1-volume.sql")).await;
    let expected = truth_rows(
        &truth,
        "SELECT district, category, date_part('month', created_at) AS month, count(*) AS tickets
         FROM hotline.tickets GROUP BY 1, 2, 3 HAVING count(DISTINCT caller_id) >= 5 ORDER BY month, district, category",
    )
    .await;
    let all = truth_rows(&truth, "SELECT count(*) FROM (SELECT 1 FROM hotline.tickets GROUP BY district, category, date_part('month', created_at))").await;
    assert!(same(&rows(&body), &expected), "volume differs from the truth: {body}");
    assert_eq!(
        body["suppressed_groups"].as_u64().unwrap() as usize + expected.len(),
        all[0][0].as_u64().unwrap() as usize
    );
    assert!(expected.len() > 100, "most groups are released");

    // 2. Service quality per district.
    let body = answer(&demo, analyst, &example("hotline-trends", "2-service.sql")).await;
    let expected = truth_rows(&truth, &example("hotline-trends", "2-service.sql")).await;
    assert!(same(&rows(&body), &expected), "service quality differs from the truth: {body}");

    // 3. Month over month: 医保咨询 is the category the generator makes rise, and it is flagged.
    let body = answer(&demo, analyst, &example("hotline-trends", "3-rising.sql")).await;
    let expected = truth_rows(&truth, &example("hotline-trends", "3-rising.sql")).await;
    assert!(same(&rows(&body), &expected), "the trend differs from the truth: {body}");
    let flagged: Vec<(String, i64)> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[4] == "rising")
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
        .collect();
    let expected: Vec<(String, i64)> = (5..=10).map(|m| ("医保咨询".to_owned(), m)).collect();
    assert_eq!(flagged, expected, "only 医保咨询 is flagged, from May on: {body}");

    // What the analyst cannot do, and the refusal they get, without the value they sent.
    for (file, code) in
        [("refused-phone.sql", "identifier_group_key"), ("refused-isolate.sql", "identifier_in_condition")]
    {
        let sql = example("hotline-trends", file);
        let (status, body) =
            demo.server.post("/v1/query", &demo.tokens[analyst], json!({"sql": sql, "mode": "aggregate"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{file}: {body}");
        assert_eq!(body["error"]["code"], code, "{file}: {body}");
        assert!(!body.to_string().contains("110101195001011234"), "{body}");
    }
}
