//! The audit trail through the real server: what each action records, what auditors can do with
//! it, and that no value read from a dataset ever lands in it.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use veil_tests::world::world;

/// The one record an answer's audit id refers to (its request id).
fn record(s: &veil_tests::TestServer, reference: &str) -> veil_audit::Record {
    let records = s.audit_records_of(reference);
    let [record] = <[_; 1]>::try_from(records).unwrap_or_else(|r| panic!("{} audit records for {reference}", r.len()));
    record
}

/// The civil analyst asks for names, is refused, and gets the refusal's audit id (a header).
async fn refused_name_query(w: &veil_tests::world::World) -> String {
    let response =
        w.s.request(Method::POST, "/v1/query", Some(&w.civil_analyst))
            .json(&json!({"sql": "SELECT name FROM civil.residents", "mode": "aggregate"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    response.headers()["x-veil-audit-id"].to_str().unwrap().to_owned()
}

fn audit_id(body: &Value) -> String {
    body["audit_id"].as_str().unwrap_or_else(|| panic!("no audit_id in {body}")).to_owned()
}

#[tokio::test]
async fn every_query_is_recorded_with_its_outcome_before_the_answer() {
    let w = world().await;
    let s = &w.s;
    w.civil_visits().await;
    let sql = "SELECT r.district, count(*) AS n FROM civil.residents r JOIN civil.visits v ON r.person_id = v.person_id GROUP BY r.district";
    let body = w.ok(sql).await;
    let allowed = audit_id(&body);

    let denied = refused_name_query(&w).await;

    let (status, body) =
        s.post("/v1/query", &w.civil_analyst, json!({"sql": sql, "mode": "aggregate", "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dry = audit_id(&body);
    let (status, _) = w.query(&w.health_analyst, "aggregate", "SELECT count(*) FROM civil.residents").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let records = s.audit_records();
    let r = record(s, &allowed);
    assert_eq!((r.entry.action.as_str(), r.entry.decision.as_str()), ("query", "allowed"));
    assert_eq!(r.entry.sql.as_deref(), Some(sql), "the SQL as typed");
    assert_eq!(r.entry.sql_sha256.as_deref().map(str::len), Some(64));
    assert_eq!(r.entry.actor.as_ref().unwrap().user, "civil-analyst");
    assert_eq!(r.entry.actor.as_ref().unwrap().department.as_deref(), Some("civil"));
    let datasets: Vec<(&str, Option<&str>)> =
        r.entry.datasets.iter().map(|d| (d.dataset.as_str(), d.level.as_deref())).collect();
    assert_eq!(datasets, [("civil.residents", Some("L3")), ("civil.visits", Some("L3"))]);
    assert_eq!(r.entry.mode.as_deref(), Some("aggregate"));
    assert_eq!((r.entry.rows, r.entry.suppressed_groups), (Some(2), Some(1)), "甲区, 乙区; 丙区 suppressed");
    assert!(r.entry.duration_ms.is_some() && r.entry.request_id.is_some());

    let r = record(s, &denied);
    assert_eq!((r.entry.decision.as_str(), r.entry.rule.as_deref()), ("denied", Some("anon_shape")));
    assert_eq!(r.entry.rows, None);
    assert_eq!(record(s, &dry).entry.decision, "dry_run");
    let forbidden = records.iter().rev().find(|r| r.entry.action == "query").unwrap();
    assert_eq!(forbidden.entry.actor.as_ref().unwrap().user, "health-analyst");
    assert_eq!(forbidden.entry.decision, "denied");
}

#[tokio::test]
async fn changes_and_failed_sign_ins_are_recorded() {
    let w = world().await;
    let s = &w.s;
    let (status, _) = s.get("/v1/datasets", "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s.post("/v1/admin/policy/reload", &s.admin, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // A refusal by any endpoint is a decision too.
    let retire = s.request(Method::DELETE, "/v1/datasets/health.visits", Some(&w.civil_analyst));
    assert_eq!(s.send(retire).await.0, StatusCode::FORBIDDEN);
    let records = s.audit_records();
    let denied = records.iter().find(|r| r.entry.action == "request.denied").unwrap();
    assert_eq!(denied.entry.actor.as_ref().unwrap().user, "civil-analyst");
    assert_eq!(denied.entry.target.as_deref(), Some("DELETE /v1/datasets/{dataset}"));
    assert_eq!(denied.entry.rule.as_deref(), Some("forbidden"));
    assert!(denied.entry.detail.as_deref().unwrap().contains("steward"), "{:?}", denied.entry.detail);
    let actions: Vec<(&str, &str)> =
        records.iter().map(|r| (r.entry.action.as_str(), r.entry.decision.as_str())).collect();
    for expected in [
        ("audit.open", "ok"),
        ("department.create", "ok"),
        ("user.create", "ok"),
        ("token.create", "ok"),
        ("dataset.register", "ok"),
        ("access_request.create", "ok"),
        ("access_request.approve", "ok"),
        ("auth.failed", "denied"),
        ("policy.reload", "ok"),
    ] {
        assert!(actions.contains(&expected), "{expected:?} not recorded: {actions:?}");
    }
    let registered = records.iter().find(|r| r.entry.action == "dataset.register").unwrap();
    assert_eq!(registered.entry.datasets[0].dataset, "civil.residents");
    assert_eq!(registered.entry.datasets[0].level.as_deref(), Some("L3"));
    assert_eq!(registered.entry.rows, Some(200));
    let approved = records.iter().find(|r| r.entry.action == "access_request.approve").unwrap();
    assert!(approved.entry.detail.as_deref().unwrap().contains("独居老人主动关怀"), "the purpose is recorded");
    // Every record names the request it came from, except the log's own.
    assert!(records.iter().filter(|r| !r.entry.action.starts_with("audit.")).all(|r| r.entry.request_id.is_some()));
}

#[tokio::test]
async fn no_value_read_from_a_dataset_is_ever_in_the_log() {
    let w = world().await;
    let s = &w.s;
    w.ok("SELECT district, count(*), avg(subsidy) FROM civil.residents GROUP BY district").await;
    // A de-identified answer carries pseudonyms and generalized values, never raw ones; the
    // record carries neither.
    let (status, body) = w.query(&w.civil_analyst, "deidentified", "SELECT person_id, cost FROM extracts.visits").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for sql in [
        "SELECT count(*) FROM civil.residents WHERE CAST(person_id AS INT) > 0",
        "SELECT district, max(subsidy) FROM civil.residents GROUP BY district",
        "SELECT string_agg(name, ',') FROM civil.residents",
    ] {
        w.query(&w.civil_analyst, "aggregate", sql).await;
    }
    let mut log = Vec::new();
    for entry in std::fs::read_dir(s.data_dir().join("audit")).unwrap() {
        log.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let log = String::from_utf8(log).unwrap();
    for r in &w.residents {
        assert!(!log.contains(&r.person_id), "a person id is in the audit log");
        assert!(!log.contains(&format!("\"{}\"", r.name)), "a name is in the audit log");
    }
    assert!(!log.contains("13800000"), "a phone number is in the audit log");
}

#[tokio::test]
async fn auditors_search_filter_and_page_the_log() {
    let w = world().await;
    let s = &w.s;
    for _ in 0..3 {
        w.ok("SELECT district, count(*) FROM civil.residents GROUP BY district").await;
    }
    let reference = refused_name_query(&w).await;
    w.query(&w.health_analyst, "aggregate", "SELECT count(*) FROM health.visits").await;

    // The audit id a refusal (or an answer) carries finds its record, and only it.
    let (_, found) = s.get(&format!("/v1/audit?request_id={reference}"), &w.auditor).await;
    assert_eq!(found["records"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(
        (found["records"][0]["decision"].as_str(), found["records"][0]["rule"].as_str()),
        (Some("denied"), Some("anon_shape"))
    );

    let (status, page) = s.get("/v1/audit?user=civil-analyst&action=query&limit=2", &w.auditor).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    let next = page["next"].as_u64().unwrap();
    let (_, rest) = s.get(&format!("/v1/audit?user=civil-analyst&action=query&after={next}"), &w.auditor).await;
    assert_eq!(rest["records"].as_array().unwrap().len(), 2, "three allowed and one denied in all");
    assert!(rest["next"].is_null());

    let (_, denied) = s.get("/v1/audit?action=query&decision=denied", &w.auditor).await;
    let denied = denied["records"].as_array().unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["rule"], "anon_shape");

    let (_, health) = s.get("/v1/audit?dataset=health&action=query", &w.auditor).await;
    assert_eq!(health["records"].as_array().unwrap().len(), 1, "the department's datasets");
    let (_, by_department) = s.get("/v1/audit?department=health&action=query", &w.auditor).await;
    assert_eq!(by_department["records"][0]["actor"]["user"], "health-analyst");

    let (_, future) = s.get("/v1/audit?from=2999-01-01T00:00:00Z", &w.auditor).await;
    assert_eq!(future["records"].as_array().unwrap().len(), 0);
    let (status, body) = s.get("/v1/audit?from=yesterday", &w.auditor).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    let (status, _) = s.get("/v1/audit?limit=0", &w.auditor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Reading the log is itself recorded.
    let (_, reads) = s.get("/v1/audit?action=audit.search", &w.auditor).await;
    assert!(reads["records"].as_array().unwrap().len() >= 5);
}

#[tokio::test]
async fn auditors_query_the_log_with_sql() {
    let w = world().await;
    let s = &w.s;
    w.ok("SELECT count(*) FROM health.visits").await;
    w.query(&w.civil_analyst, "aggregate", "SELECT name FROM civil.residents").await;
    w.query(&w.civil_analyst, "aggregate", "SELECT min(person_id) FROM civil.residents").await;

    let who = "SELECT \"user\", count(*) AS n FROM audit.events \
               WHERE action = 'query' AND datasets LIKE '%health.%' AND time > now() - INTERVAL '7 days' \
               GROUP BY \"user\"";
    let (status, body) = s.post("/v1/query", &w.auditor, json!({"sql": who})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([["civil-analyst", 1]]));
    assert_eq!(body["rules"][0]["code"], "auditor_reads_audit_log");

    let by_rule = "SELECT rule, count(*) FROM audit.events WHERE decision = 'denied' GROUP BY rule ORDER BY rule";
    let (_, body) = s.post("/v1/query", &w.auditor, json!({"sql": by_rule})).await;
    assert_eq!(body["rows"], json!([["anon_shape", 1], ["identifier_aggregated", 1]]));

    // Row-level reads of the log are what auditors are for; the SQL as typed is there.
    let (_, body) =
        s.post("/v1/query", &w.auditor, json!({"sql": "SELECT sql FROM audit.events WHERE rule = 'anon_shape'"})).await;
    assert_eq!(body["rows"], json!([["SELECT name FROM civil.residents"]]));

    // The log cannot be mixed with datasets, and the SQL surface is the same.
    let (status, body) =
        s.post("/v1/query", &w.auditor, json!({"sql": "SELECT count(*) FROM audit.events, civil.residents"})).await;
    // It says so, rather than calling an existing dataset unknown.
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("audit_query_alone")),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("civil.residents"), "{body}");
    let (status, _) = s.post("/v1/query", &w.auditor, json!({"sql": "DELETE FROM audit.events"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The same functions as every mode: a query building strings of 10^8 characters per record
    // grew a server to 23 GB over an extract; over the log it is refused before it runs.
    let (status, body) = s
        .post("/v1/query", &w.auditor, json!({"sql": "SELECT max(length(repeat(sql, 100000000))) FROM audit.events"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("function_not_allowed")),
        "{body}"
    );
    // An analyst is told the table does not exist, as for any dataset it may not use.
    let (status, body) = w.query(&w.civil_analyst, "aggregate", "SELECT count(*) FROM audit.events").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_dataset")));
    let (status, body) = s.post("/v1/departments", &s.admin, json!({"id": "audit", "name": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("reserved_name")));
}

#[tokio::test]
async fn auditors_export_and_verify_and_the_log_survives_a_restart() {
    let mut w = world().await;
    w.ok("SELECT district, count(*) FROM civil.residents GROUP BY district").await;
    let s = &w.s;
    let response = s.request(Method::GET, "/v1/audit/export?action=query", Some(&w.auditor)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["hash"].as_str().unwrap().len(), 64);

    let response = s.request(Method::GET, "/v1/audit/export?format=parquet", Some(&w.auditor)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/vnd.apache.parquet");
    let bytes = response.bytes().await.unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert!(rows > 10, "every record: {rows}");

    let (status, verified) = s.get("/v1/audit/verify", &w.auditor).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["ok"], true, "{verified}");
    let key = veil_audit::PublicKey::parse(verified["public_key"].as_str().unwrap()).unwrap();

    // A graceful restart ends the log on a signed checkpoint and continues the same chain.
    let before = verified["report"]["head_seq"].as_u64().unwrap();
    w.s.restart_in_place(veil_query::Limits::standard()).await;
    let s = &w.s;
    let report = veil_audit::verify(&s.data_dir().join("audit"), &key, None).unwrap();
    assert!(report.ok(), "{report}");
    assert!(report.head_seq > before);
    let records = s.audit_records();
    let opened = records.iter().rposition(|r| r.entry.action == "audit.open").unwrap();
    assert_eq!(records[opened - 1].entry.action, "audit.checkpoint", "shutdown signed the head");
}

#[tokio::test]
async fn a_change_committed_before_a_crash_is_recorded_when_the_server_starts_again() {
    let mut w = world().await;
    // What the world's registrations and decisions left pending: nothing (each record reached
    // the log and was cleared).
    let catalog = veil_catalog::Catalog::open(&w.s.data_dir()).unwrap();
    assert!(catalog.pending_records().unwrap().is_empty());

    // A new version committed with its record, and the process gone before the append: the
    // catalogue's side of a registration, without the server's.
    let csv = w.s.scratch().join("again.csv");
    std::fs::write(&csv, veil_tests::world::residents_csv(&w.residents)).unwrap();
    let metadata: veil_server::dto::DatasetMetadata =
        serde_json::from_value(veil_tests::world::residents_metadata("residents")).unwrap();
    let spec = veil_catalog::DatasetSpec::validate(metadata.into()).unwrap();
    let steward = veil_common::UserId::new("civil-steward").unwrap();
    let record = |version: u64, rows: u64| {
        let mut entry = veil_audit::Entry::new("dataset.register", "ok");
        entry.target = Some("civil.residents".into());
        entry.detail = Some(format!("version {version}, {rows} rows"));
        Some(serde_json::to_string(&entry).unwrap())
    };
    let (info, pending) = catalog.register_dataset(&spec, &csv, &steward, record, &|_| {}).unwrap();
    assert_eq!(info.current_version, 2);
    assert!(pending.is_some());
    drop(catalog);
    let in_log = |s: &veil_tests::TestServer| {
        s.audit_records().into_iter().any(|r| {
            r.entry.action == "dataset.register"
                && r.entry.detail.as_deref().is_some_and(|d| d.starts_with("version 2"))
        })
    };
    assert!(!in_log(&w.s), "not yet in the log: the process stopped before the append");

    w.s.restart_in_place(veil_query::Limits::standard()).await;
    let s = &w.s;
    let records = s.audit_records();
    let late = records
        .iter()
        .find(|r| {
            r.entry.action == "dataset.register"
                && r.entry.detail.as_deref().is_some_and(|d| d.starts_with("version 2"))
        })
        .expect("the pending record is appended at start");
    assert!(late.entry.detail.as_deref().unwrap().contains("appended when the server started"));
    assert!(veil_catalog::Catalog::open(&s.data_dir()).unwrap().pending_records().unwrap().is_empty());
    // And the chain verifies with it.
    let (status, verified) = s.get("/v1/audit/verify", &w.auditor).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["ok"], true, "{verified}");
}

#[tokio::test]
async fn refused_changes_are_recorded_without_what_was_sent() {
    let w = world().await;
    let s = &w.s;
    // A registration whose file does not match its metadata (a column is missing).
    let mut metadata = veil_tests::world::residents_metadata("broken");
    metadata["columns"]["missing"] = json!({"tag": "attribute"});
    let (status, body) = s.upload(&w.civil_steward, &metadata, b"person_id,secret\np1,SECRET-VALUE\n".to_vec()).await;
    assert!(status.is_client_error(), "{status} {body}");
    let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    // A decision on a request already decided: 409.
    let approved = s.audit_records().into_iter().find(|r| r.entry.action == "access_request.approve").unwrap();
    let id = approved.entry.target.clone().unwrap();
    let second_steward = s.user("health-steward-2", Some("health"), &["steward"]).await;
    let (status, body) = s.post(&format!("/v1/access-requests/{id}/approve"), &second_steward, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let records = s.audit_records();
    let refused: Vec<_> = records.iter().filter(|r| r.entry.action == "request.denied").collect();
    let registration = refused
        .iter()
        .find(|r| r.entry.target.as_deref() == Some("POST /v1/datasets"))
        .expect("the refused registration is recorded");
    assert_eq!(registration.entry.rule.as_deref(), Some(code.as_str()));
    assert_eq!(registration.entry.actor.as_ref().unwrap().user, "civil-steward");
    assert!(
        refused.iter().any(|r| r.entry.target.as_deref().is_some_and(|t| t.contains("/approve"))
            && r.entry.detail.as_deref() == Some("refused with status 409")),
        "the refused decision is recorded"
    );
    let log = serde_json::to_string(&records.iter().map(|r| &r.entry).collect::<Vec<_>>()).unwrap();
    assert!(!log.contains("SECRET-VALUE"), "nothing sent is in the log");
}

#[tokio::test]
async fn a_record_whose_append_failed_reaches_the_log_while_the_server_runs() {
    let w = world().await;
    // What a change leaves when its request's append fails (the log could not write): its
    // record pending in the catalogue, with the server still running.
    let catalog = veil_catalog::Catalog::open(&w.s.data_dir()).unwrap();
    let steward = veil_common::UserId::new("civil-steward").unwrap();
    let csv = w.s.scratch().join("later.csv");
    std::fs::write(&csv, veil_tests::world::residents_csv(&w.residents)).unwrap();
    let metadata: veil_server::dto::DatasetMetadata =
        serde_json::from_value(veil_tests::world::residents_metadata("later")).unwrap();
    let spec = veil_catalog::DatasetSpec::validate(metadata.into()).unwrap();
    let record = |version: u64, _| {
        let mut entry = veil_audit::Entry::new("dataset.register", "ok");
        entry.target = Some(format!("civil.later v{version}"));
        Some(serde_json::to_string(&entry).unwrap())
    };
    catalog.register_dataset(&spec, &csv, &steward, record, &|_| {}).unwrap();
    let found = async {
        loop {
            let late = w.s.audit_records().into_iter().find(|r| r.entry.target.as_deref() == Some("civil.later v1"));
            if let Some(r) = late {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    let late = tokio::time::timeout(std::time::Duration::from_secs(20), found).await.expect("appended within 20 s");
    assert!(late.entry.detail.as_deref().unwrap().contains("appended while the server ran"));
    // The server clears the outbox after the append it has just made visible.
    let cleared = async {
        while !catalog.pending_records().unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), cleared)
        .await
        .expect("the outbox cleared after the append");
}

/// A panic in a request's handler (a bug) is caught by the server's middleware: answered 500
/// with the generic `internal` code and no detail, recorded in the audit log as a failed
/// request, and the server goes on serving.
#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_recorded_as_failed() {
    use axum::routing::get;
    async fn boom() -> &'static str {
        panic!("a bug")
    }
    let root = tempfile::tempdir().unwrap();
    let state = veil_tests::TestServer::state_in(&root);
    let app = axum::Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), veil_server::telemetry::observe))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("{url}/boom")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(!body.to_string().contains("a bug"), "the panic's message is not shown: {body}");
    assert_eq!(reqwest::get(format!("{url}/fine")).await.unwrap().status(), StatusCode::OK);
    let page =
        veil_audit::search(&root.path().join("data").join("audit"), &veil_audit::Filter::default(), usize::MAX, None)
            .unwrap();
    let failed: Vec<_> = page.records.iter().filter(|r| r.record.entry.action == "request.failed").collect();
    assert_eq!(failed.len(), 1, "{:?}", page.records);
    assert_eq!(failed[0].record.entry.decision, "failed");
    assert_eq!(failed[0].record.entry.target.as_deref(), Some("GET /boom"));
}
