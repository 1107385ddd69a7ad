//! The query endpoint: honest analytics across two departments, dry runs, Arrow IPC answers,
//! de-identified rows, limits and who may query.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::collections::{BTreeMap, HashMap, HashSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use veil_tests::world::world;

fn as_i64(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[tokio::test]
async fn grouped_counts_sums_and_averages_over_a_join_are_anonymized_and_small_groups_suppressed() {
    let w = world().await;
    w.civil_visits().await;
    let sql = |visits: &str| {
        format!(
            "SELECT r.district, count(DISTINCT r.person_id) AS people, count(*) AS visits, sum(v.cost) AS cost, avg(v.cost) AS mean_cost
             FROM civil.residents r JOIN {visits} v ON r.person_id = v.person_id
             GROUP BY r.district ORDER BY r.district"
        )
    };
    // Across departments, people are linked in dp mode only.
    w.refused(&sql("health.visits"), StatusCode::FORBIDDEN, "anon_shape").await;
    let body = w.ok(&sql("civil.visits")).await;
    // Ground truth from the generator.
    let district_of: BTreeMap<&str, &str> = w.residents.iter().map(|r| (r.person_id.as_str(), r.district)).collect();
    let mut truth: BTreeMap<&str, (HashSet<&str>, i64, i64)> = BTreeMap::new();
    for v in &w.visits {
        let e = truth.entry(district_of[v.person_id.as_str()]).or_default();
        e.0.insert(&v.person_id);
        e.1 += 1;
        e.2 += v.cost;
    }
    let rows = body["rows"].as_array().unwrap();
    let got: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(got, vec!["乙区", "甲区"], "丙区 has 5 people (< k = 10) and is suppressed: {body}");
    // Anonymized: sticky noise of a few units per count (the top contributors' average), and on
    // sums at least the most one person contributes over e³ a layer (6 visits of at most 5,000:
    // about 1,500, three layers, about 2,600 together, a tenth of a group of 75 visits); the
    // flattened values lower. Within four of those standard deviations and a tenth.
    let sum_sd = 3f64.sqrt() * 6.0 * 5000.0 / std::f64::consts::E.powi(3);
    for row in rows {
        let (people, visits, cost) = &truth[row[0].as_str().unwrap()];
        assert!(near(as_i64(&row[1]) as f64, people.len() as f64, 0.1, 8.0), "people: {row:?}");
        assert!(near(as_i64(&row[2]) as f64, *visits as f64, 0.1, 10.0), "visits: {row:?}");
        assert!(near(as_i64(&row[3]) as f64, *cost as f64, 0.1, 4.0 * sum_sd), "cost: {row:?}");
        let mean = *cost as f64 / *visits as f64;
        assert!(near(row[4].as_f64().unwrap(), mean, 0.15, 4.0 * sum_sd / *visits as f64), "mean: {row:?}");
    }
    assert_eq!(w.withheld(&body), Some(1));
    assert_eq!(body["k"], 10);
    assert_eq!(body["level"], "L3");
    let codes: Vec<&str> = body["rules"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    for code in ["policy_allow", "linkable_join", "min_group_size", "return_only_aggregates"] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    let columns: Vec<&str> = body["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, vec!["district", "people", "visits", "cost", "mean_cost"]);
}

#[tokio::test]
async fn thresholds_follow_people_through_subqueries_renamed_columns_unions_and_self_joins() {
    let w = world().await;
    let mut people: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &w.residents {
        *people.entry(r.district).or_default() += 1;
    }
    let large: Vec<(&str, i64)> = people.iter().filter(|(_, n)| **n >= 10).map(|(d, n)| (*d, *n)).collect();
    assert_eq!(people.len() - large.len(), 1, "the generator makes one district smaller than k");
    // (query, rows per person): each shape must count the same people as the plain one.
    let shapes = [
        ("SELECT district, count(*) FROM civil.residents GROUP BY district ORDER BY district", 1),
        // The unit column renamed inside a subquery, and its name reused for something else.
        (
            "SELECT person_id, count(*) FROM (SELECT district AS person_id, person_id AS pid FROM civil.residents) t GROUP BY person_id ORDER BY person_id",
            1,
        ),
        // Nested subqueries with aliases, a CTE and a filter on an attribute.
        (
            "WITH r AS (SELECT * FROM civil.residents WHERE subsidy >= 0 AND subsidy < 10000) SELECT d, count(*) FROM (SELECT x.district AS d FROM r x) y GROUP BY d ORDER BY d",
            1,
        ),
    ];
    // Over people, set operations, DISTINCT and a dataset read twice (a self-join: a condition
    // on one copy is labelled as on the other) are not the one aggregate aggregate mode admits.
    for sql in [
        "SELECT a.district, count(*) FROM civil.residents a JOIN civil.residents b ON a.person_id = b.person_id GROUP BY a.district ORDER BY a.district",
        "SELECT district, count(*) FROM (SELECT district FROM civil.residents UNION ALL SELECT district FROM civil.residents) u GROUP BY district ORDER BY district",
        "SELECT DISTINCT district FROM civil.residents ORDER BY district",
    ] {
        w.refused(sql, StatusCode::FORBIDDEN, "anon_shape").await;
    }
    for (sql, rows_per_person) in shapes {
        let body = w.ok(sql).await;
        let rows = body["rows"].as_array().unwrap();
        let got: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r[0].as_str().unwrap(), if rows_per_person == 0 { 0 } else { as_i64(&r[1]) / rows_per_person }))
            .collect();
        let want: Vec<(&str, i64)> =
            large.iter().map(|(d, n)| (*d, if rows_per_person == 0 { 0 } else { *n })).collect();
        assert_eq!(got.len(), want.len(), "{sql}: {body}");
        for ((d, n), (e, m)) in got.iter().zip(&want) {
            assert!(d == e && near(*n as f64, *m as f64, 0.05, 8.0), "{sql}: {body}");
        }
        assert_eq!(w.withheld(&body), Some(1), "{sql}: {body}");
    }
}

#[tokio::test]
async fn dry_run_explains_the_decision_without_running() {
    let w = world().await;
    let (status, body) = w
        .s
        .post(
            "/v1/query",
            &w.civil_analyst,
            json!({"sql": "SELECT district, count(*) FROM civil.residents GROUP BY district", "mode": "aggregate", "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dry_run"], true);
    assert_eq!(body["rows"], json!([]));
    assert!(body["rules"].as_array().unwrap().iter().any(|r| r["code"] == "min_group_size"), "{body}");
    // A dry run of a refused query is refused the same way.
    let (status, body) =
        w.s.post(
            "/v1/query",
            &w.civil_analyst,
            json!({"sql": "SELECT name FROM civil.residents", "mode": "aggregate", "dry_run": true}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("anon_shape")), "{body}");
}

#[tokio::test]
async fn arrow_ipc_answers_carry_the_same_rows_and_what_the_json_answer_says_beside_them() {
    let w = world().await;
    let sql = "SELECT district, count(*) AS n FROM civil.residents GROUP BY district ORDER BY district";
    let response =
        w.s.request(Method::POST, "/v1/query", Some(&w.civil_analyst))
            .header("accept", "application/vnd.apache.arrow.stream")
            .json(&json!({"sql": sql, "mode": "aggregate"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/vnd.apache.arrow.stream");
    assert!(
        response.headers().get("x-veil-suppressed-groups").is_none(),
        "how many groups were withheld is not released"
    );
    assert!(!response.headers()["x-veil-audit-id"].is_empty());
    let bytes = response.bytes().await.unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    let metadata = reader.schema().metadata().clone();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let d = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let d = d.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        let n = batch.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        for i in 0..batch.num_rows() {
            rows.push((d.value(i).to_owned(), n.value(i)));
        }
    }
    let districts: Vec<&str> = rows.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(districts, ["乙区", "甲区"]);
    assert_eq!(metadata["veil.k"], "10");
    let rules: serde_json::Value = serde_json::from_str(&metadata["veil.rules"]).unwrap();
    assert!(rules.as_array().unwrap().iter().any(|r| r["code"] == "anonymized"), "{rules}");
    let noise: serde_json::Value = serde_json::from_str(&metadata["veil.anonymized"]).unwrap();
    assert_eq!(noise["noise_sd"][0]["column"], "n", "{noise}");
    // A count of rows over one row a person is never flattened, and nothing is joined.
    assert_eq!((&noise["flattened"], &noise["rows_capped"]), (&json!([]), &json!([])), "{noise}");

    // A dp answer's intervals, ε and budget travel in the schema's metadata too.
    let response =
        w.s.request(Method::POST, "/v1/query", Some(&w.civil_analyst))
            .header("accept", "application/vnd.apache.arrow.stream")
            .json(&json!({"sql": sql, "mode": "dp", "epsilon": 0.5}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let audit_id = response.headers()["x-veil-audit-id"].to_str().unwrap().to_owned();
    let bytes = response.bytes().await.unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    let metadata = reader.schema().metadata().clone();
    assert_eq!(metadata["veil.audit_id"], audit_id);
    let dp: serde_json::Value = serde_json::from_str(&metadata["veil.dp"]).unwrap();
    assert_eq!(dp["epsilon"], 0.5, "{dp}");
    assert_eq!(dp["intervals"][0]["column"], "n", "{dp}");
    assert!(!dp["budget"].as_array().unwrap().is_empty(), "{dp}");
    assert!(near(rows[0].1 as f64, 75.0, 0.0, 8.0) && near(rows[1].1 as f64, 120.0, 0.0, 8.0), "{rows:?}");
}

/// CSV and Parquet answers: the same rows, and no part of the report lost (dp intervals as
/// columns and the rest in a header for CSV; schema and key-value metadata for Parquet).
#[tokio::test]
async fn csv_and_parquet_answers_carry_the_rows_and_the_report_and_unknown_formats_are_refused() {
    let w = world().await;
    let sql = "SELECT district, count(*) AS n FROM civil.residents GROUP BY district ORDER BY district";
    let ask_in = |accept: &'static str, body: serde_json::Value| {
        w.s.request(Method::POST, "/v1/query", Some(&w.civil_analyst)).header("accept", accept).json(&body).send()
    };
    let ask = |accept: &'static str| ask_in(accept, json!({"sql": sql, "mode": "aggregate"}));
    let response = ask("text/csv").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(!response.headers()["x-veil-audit-id"].is_empty());
    let report: serde_json::Value =
        serde_json::from_str(response.headers()["x-veil-report"].to_str().unwrap()).unwrap();
    assert!(report["rules"].as_array().unwrap().iter().any(|r| r["code"] == "anonymized"), "{report}");
    assert_eq!(report["anonymized"]["noise_sd"][0]["column"], "n", "{report}");
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "district,n");
    // 乙区 and 甲区, and 丙区 (5 people, k = 10) about one time in 500: the threshold's draw has
    // a Laplace tail.
    let districts: Vec<&str> = lines[1..].iter().map(|l| l.split(',').next().unwrap_or_default()).collect();
    assert!(matches!(districts[..], ["乙区", "甲区"] | ["丙区", "乙区", "甲区"]), "{text}");

    // A dp answer in CSV: each noisy column's interval as two more columns, ε and the budget
    // in the report header (its text escaped to ASCII, as a header needs).
    let response = ask_in("text/csv", json!({"sql": sql, "mode": "dp", "epsilon": 0.5})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: serde_json::Value =
        serde_json::from_str(response.headers()["x-veil-report"].to_str().unwrap()).unwrap();
    assert_eq!((&report["dp"]["epsilon"], &report["level"]), (&json!(0.5), &json!("L3")), "{report}");
    assert_eq!(report["dp"]["budget"][0]["dataset"], "civil.residents", "{report}");
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("district,n,n_ci95_low,n_ci95_high"), "{text}");
    for line in lines {
        let cells: Vec<f64> = line.split(',').skip(1).map(|c| c.parse().unwrap()).collect();
        assert!(cells[1] <= cells[0] && cells[0] <= cells[2], "the interval holds the value: {line}");
    }

    // Parquet: the rows, and the report in the schema's metadata and Parquet's own.
    let response =
        ask_in("application/vnd.apache.parquet", json!({"sql": sql, "mode": "dp", "epsilon": 0.5})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/vnd.apache.parquet");
    let bytes = response.bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
    let key_values: HashMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect();
    let dp: serde_json::Value = serde_json::from_str(&key_values["veil.dp"]).unwrap();
    assert_eq!((&dp["epsilon"], &dp["intervals"][0]["column"]), (&json!(0.5), &json!("n")), "{dp}");
    assert_eq!(reader.schema().metadata()["veil.k"], key_values["veil.k"]);
    let batches: Vec<_> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
    let districts = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let districts = districts.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert_eq!(districts.iter().flatten().collect::<Vec<_>>(), ["乙区", "甲区"]);
    // The first format listed that Veil produces wins.
    let response = ask("text/html, application/json;q=0.9").await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    // None produced: 406, and the query does not run.
    let queries = w.s.audit_records().iter().filter(|r| r.entry.action == "query").count();
    let response = ask("text/html").await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_acceptable");
    assert_eq!(w.s.audit_records().iter().filter(|r| r.entry.action == "query").count(), queries);
}

/// Whether `got` is within `rel` of `truth` (relative) plus `abs`: anonymized answers carry
/// sticky noise, a few units on counts and a few percent on sums.
fn near(got: f64, truth: f64, rel: f64, abs: f64) -> bool {
    (got - truth).abs() <= rel * truth.abs() + abs
}

#[tokio::test]
async fn who_may_query_is_the_policy_s_decision() {
    let w = world().await;
    let sql = "SELECT count(*) FROM civil.residents";
    let (status, body) = w.query(&w.auditor, "aggregate", sql).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_analyst")), "{body}");
    // The health analyst may read civil data only as dp up to L3 under the demo policy; L3
    // aggregates need a grant.
    let (status, body) = w.query(&w.health_analyst, "aggregate", sql).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // The second civil analyst has no grant on health data.
    let (status, body) = w.query(&w.civil_analyst_2, "aggregate", "SELECT count(*) FROM health.visits").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) =
        w.s.send(w.s.request(Method::POST, "/v1/query", None).json(&json!({"sql": sql, "mode": "aggregate"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    w.refused("SELECT count(*) FROM civil.nothing", StatusCode::NOT_FOUND, "dataset_not_found").await;
    // ... and in dp mode the policy lets them.
    let (status, body) = w.query(&w.health_analyst, "dp", sql).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.refused_in("raw", sql, StatusCode::BAD_REQUEST, "unknown_mode").await;
}

#[tokio::test]
async fn limits_give_clear_errors_and_the_server_stays_healthy() {
    let w = world().await;
    let long =
        format!("SELECT count(*) FROM civil.residents WHERE district IN ({})", vec!["'甲区'"; 300_000].join(","));
    assert!(long.len() > 2_000_000);
    w.refused(&long, StatusCode::BAD_REQUEST, "sql_too_long").await;
    let deep = format!("SELECT {}1{} FROM civil.residents", "(".repeat(2000), ")".repeat(2000));
    let body = w.refused(&deep, StatusCode::BAD_REQUEST, "sql_syntax").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("nested too deeply"), "{body}");
    let (status, _) = w.s.send(w.s.request(Method::GET, "/healthz", None)).await;
    assert_eq!(status, StatusCode::OK);
    w.ok("SELECT count(*) FROM civil.residents").await;
}

#[tokio::test]
async fn exceeding_memory_deadline_or_answer_size_is_a_clear_error() {
    let mut w = world().await;
    let grouped =
        "SELECT district, birth_date, count(DISTINCT person_id) FROM civil.residents GROUP BY district, birth_date";
    let standard = veil_query::Limits::standard();

    w.s.restart_in_place(veil_query::Limits { max_result_rows: 1, ..standard.clone() }).await;
    w.refused(
        "SELECT district, count(*) FROM civil.residents GROUP BY district",
        StatusCode::PAYLOAD_TOO_LARGE,
        "result_too_large",
    )
    .await;

    // 300³ joined rows of a table about nobody (over people, aggregate mode admits joins on
    // privacy units only): far longer than a millisecond.
    let meta = serde_json::json!({
        "name": "stops", "department": "civil", "level": "L1", "description": "bus stops",
        "columns": {"district": {"tag": "attribute"}, "stop": {"tag": "attribute"}}
    });
    let csv: String =
        std::iter::once("district,stop\n".to_owned()).chain((0..300).map(|i| format!("甲区,s{i}\n"))).collect();
    let (status, body) = w.s.upload(&w.civil_steward, &meta, csv.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let heavy = "SELECT a.district, count(*) FROM civil.stops a JOIN civil.stops b ON a.district = b.district
                 JOIN civil.stops c ON b.district = c.district GROUP BY a.district";
    w.s.restart_in_place(veil_query::Limits { deadline: std::time::Duration::from_millis(1), ..standard.clone() })
        .await;
    w.refused(heavy, StatusCode::GATEWAY_TIMEOUT, "query_timeout").await;

    w.s.restart_in_place(veil_query::Limits { memory_bytes: 1024, spill_bytes: 0, ..standard.clone() }).await;
    w.refused(heavy, StatusCode::UNPROCESSABLE_ENTITY, "query_memory_exceeded").await;
    // Over people, running out of memory can depend on one person's rows: it is told as any
    // failure while running, and only the audit record says which it was.
    w.refused(grouped, StatusCode::UNPROCESSABLE_ENTITY, "query_failed").await;
    let failed = w.s.audit_records().into_iter().rev().find(|r| r.entry.decision == "failed").unwrap();
    assert!(failed.entry.detail.as_deref().unwrap_or("").contains("(memory limit)"), "{failed:?}");

    // The server is healthy afterwards and answers within normal limits again.
    let (status, _) = w.s.send(w.s.request(Method::GET, "/healthz", None)).await;
    assert_eq!(status, StatusCode::OK);
    w.s.restart_in_place(standard).await;
    w.ok(grouped).await;
}

/// A red team asked `SELECT count(*) FROM (<an anonymized grouped answer>) x` and got the inner
/// answer's rows back instead of one count of its groups. The answer's rework runs over the
/// released groups: one row, at most the number of districts.
#[tokio::test]
async fn a_count_over_an_anonymized_answer_counts_its_released_groups() {
    let w = veil_tests::world::world().await;
    let groups = w.ok("SELECT district, count(*) AS n FROM civil.residents GROUP BY district").await;
    let released = groups["rows"].as_array().unwrap().len();
    for sql in [
        "SELECT count(*) AS groups FROM (SELECT district, count(*) AS n FROM civil.residents GROUP BY district) x",
        "SELECT count(n) AS groups FROM (SELECT district, count(*) AS n FROM civil.residents GROUP BY district) x",
    ] {
        let body = w.ok(sql).await;
        let rows = body["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{sql}: {body}");
        assert_eq!(rows[0][0].as_u64(), Some(released as u64), "{sql}: {body}");
    }
}
