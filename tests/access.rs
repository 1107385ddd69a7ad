//! Access over HTTP: what the policy lets each caller do, access requests from asking to
//! revocation, policy reload, and every endpoint against every role and department.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use veil_tests::TestServer;

const CSV: &str = "person_id,district,age\n110105194912310021,朝阳区,76\n110108195003150032,海淀区,75\n";

fn metadata(name: &str, level: &str) -> Value {
    json!({
        "name": name, "department": "civil", "level": level, "privacy_unit": "person_id",
        "columns": {"person_id": {"tag": "identifier", "linkable": true}, "district": {"tag": "quasi_identifier"}, "age": {"tag": "quasi_identifier"}}
    })
}

struct World {
    s: TestServer,
    civil_steward: String,
    health_steward: String,
    civil_analyst: String,
    health_analyst: String,
    auditor: String,
}

async fn world() -> World {
    let s = TestServer::start().await;
    for (id, name) in [("civil", "民政局"), ("health", "卫健委"), ("hotline", "12345")] {
        s.department(id, name).await;
    }
    let civil_steward = s.user("civil-steward", Some("civil"), &["steward"]).await;
    let health_steward = s.user("health-steward", Some("health"), &["steward"]).await;
    let civil_analyst = s.user("civil-analyst", Some("civil"), &["analyst"]).await;
    let health_analyst = s.user("health-analyst", Some("health"), &["analyst"]).await;
    let auditor = s.user("auditor", None, &["auditor"]).await;
    let (status, body) = s.upload(&civil_steward, &metadata("elderly", "L3"), CSV.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    World { s, civil_steward, health_steward, civil_analyst, health_analyst, auditor }
}

fn in_a_month() -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// mode → (allowed, rule) as `GET /v1/datasets/{d}/access` reports it.
async fn access(s: &TestServer, token: &str, dataset: &str) -> Vec<(String, bool, String)> {
    let (status, body) = s.get(&format!("/v1/datasets/{dataset}/access"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mode"].as_str().unwrap().to_owned(),
                m["allowed"].as_bool().unwrap(),
                m["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn allowed(modes: &[(String, bool, String)], mode: &str) -> (bool, String) {
    let m = modes.iter().find(|m| m.0 == mode).unwrap();
    (m.1, m.2.clone())
}

async fn request(s: &TestServer, token: &str, mode: &str) -> (StatusCode, Value) {
    s.post(
        "/v1/access-requests",
        token,
        json!({"dataset": "civil.elderly", "mode": mode, "purpose": "独居老人主动关怀: chronic disease follow-up by street", "expires_at": in_a_month()}),
    )
    .await
}

#[tokio::test]
async fn an_approved_request_grants_access_until_revoked_and_survives_restart() {
    let w = world().await;
    let s = &w.s;
    // Before: dp by policy, aggregate needs a grant (L3 across departments).
    let before = access(s, &w.health_analyst, "civil.elderly").await;
    assert_eq!(allowed(&before, "dp"), (true, "policy_allow".into()));
    assert_eq!(allowed(&before, "aggregate"), (false, "grant_required".into()));

    // Bad requests are refused clearly.
    let cases = [
        (
            json!({"dataset": "civil.elderly", "mode": "aggregate", "purpose": "  ", "expires_at": in_a_month()}),
            "purpose_required",
        ),
        (
            json!({"dataset": "civil.elderly", "mode": "raw", "purpose": "x", "expires_at": in_a_month()}),
            "unknown_mode",
        ),
        (
            json!({"dataset": "civil.elderly", "mode": "dp", "purpose": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            "expiry_in_past",
        ),
        (
            json!({"dataset": "civil.elderly", "mode": "dp", "purpose": "x", "expires_at": "next week"}),
            "invalid_expiry",
        ),
        (
            json!({"dataset": "civil.nothing", "mode": "dp", "purpose": "x", "expires_at": in_a_month()}),
            "dataset_not_found",
        ),
    ];
    for (body, code) in cases {
        let (_, reply) = s.post("/v1/access-requests", &w.health_analyst, body.clone()).await;
        assert_eq!(reply["error"]["code"], code, "{body}: {reply}");
    }

    let (status, created) = request(s, &w.health_analyst, "aggregate").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "pending");
    let id = created["id"].as_str().unwrap().to_owned();

    // The steward of civil sees it with its purpose; the steward of health does not.
    let (_, pending) = s.get("/v1/access-requests?state=pending", &w.civil_steward).await;
    assert_eq!(pending[0]["purpose"], "独居老人主动关怀: chronic disease follow-up by street");
    let (_, none) = s.get("/v1/access-requests?state=pending", &w.health_steward).await;
    assert_eq!(none, json!([]));
    let (_, mine) = s.get("/v1/access-requests", &w.health_analyst).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (_, others) = s.get("/v1/access-requests", &w.civil_analyst).await;
    assert_eq!(others, json!([]));

    // Only a steward of the dataset's department decides.
    for token in [&w.health_steward, &w.health_analyst, &w.auditor, &s.admin] {
        assert_eq!(
            s.post(&format!("/v1/access-requests/{id}/approve"), token, json!({})).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let (status, approved) = s.post(&format!("/v1/access-requests/{id}/approve"), &w.civil_steward, json!({})).await;
    assert_eq!((status, approved["state"].as_str()), (StatusCode::OK, Some("approved")), "{approved}");
    let (status, again) = s.post(&format!("/v1/access-requests/{id}/approve"), &w.civil_steward, json!({})).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("access_request_state")));

    assert_eq!(allowed(&access(s, &w.health_analyst, "civil.elderly").await, "aggregate"), (true, "grant".into()));
    assert_eq!(
        allowed(&access(s, &w.health_analyst, "civil.elderly").await, "deidentified"),
        (false, "grant_required".into()),
        "a grant is for one mode"
    );

    // Grants persist in the catalogue and feed the policy after a restart.
    let s = w.s.restart().await;
    assert_eq!(allowed(&access(&s, &w.health_analyst, "civil.elderly").await, "aggregate"), (true, "grant".into()));

    let (status, body) =
        s.post(&format!("/v1/access-requests/{id}/revoke"), &w.civil_steward, json!({"reason": ""})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_required")));
    let (status, revoked) =
        s.post(&format!("/v1/access-requests/{id}/revoke"), &w.civil_steward, json!({"reason": "project ended"})).await;
    assert_eq!((status, revoked["state"].as_str()), (StatusCode::OK, Some("revoked")), "{revoked}");
    assert_eq!(
        allowed(&access(&s, &w.health_analyst, "civil.elderly").await, "aggregate"),
        (false, "grant_required".into())
    );

    // A rejection carries its reason back to the analyst.
    let (_, second) = request(&s, &w.health_analyst, "dp").await;
    let second = second["id"].as_str().unwrap();
    let (status, rejected) = s
        .post(&format!("/v1/access-requests/{second}/reject"), &w.civil_steward, json!({"reason": "use dp instead"}))
        .await;
    assert_eq!((status, rejected["reason"].as_str()), (StatusCode::OK, Some("use dp instead")));

    let records = s.audit_records();
    let actions: Vec<&str> = records.iter().map(|r| r.entry.action.as_str()).collect();
    for action in ["access_request.create", "access_request.revoke", "access_request.reject"] {
        assert!(actions.contains(&action), "{action} was not recorded: {actions:?}");
    }
}

#[tokio::test]
async fn the_level_ceiling_and_roles_show_in_access_decisions() {
    let w = world().await;
    let s = &w.s;
    let (status, _) = s.upload(&w.civil_steward, &metadata("core_registry", "CORE"), CSV.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    for (mode, ok, rule) in access(s, &w.health_analyst, "civil.core_registry").await {
        assert_eq!((ok, rule.as_str()), (false, "level_ceiling"), "{mode}: CORE never leaves its department");
    }
    for (mode, ok, _) in access(s, &w.civil_analyst, "civil.core_registry").await {
        assert!(ok, "{mode}: the owning department's analysts may use CORE data");
    }
    for token in [&w.civil_steward, &w.auditor, &s.admin] {
        for (mode, ok, rule) in access(s, token, "civil.elderly").await {
            assert_eq!((ok, rule.as_str()), (false, "not_analyst"), "{mode}");
        }
    }
}

#[tokio::test]
async fn policy_reloads_on_request_and_on_file_change_and_a_bad_file_changes_nothing() {
    let w = world().await;
    let s = &w.s;
    let health_dp_on_elderly = || async { allowed(&access(s, &w.health_analyst, "civil.elderly").await, "dp") };
    assert!(health_dp_on_elderly().await.0);

    assert_eq!(s.post("/v1/admin/policy/reload", &w.civil_steward, json!({})).await.0, StatusCode::FORBIDDEN);
    let (status, body) = s.post("/v1/admin/policy/reload", &s.admin, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let policy = s.policy_dir().join("policy.csv");
    let good = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{good}\np, analyst, health, civil.*, L3, dp\n")).unwrap();
    let (status, body) = s.post("/v1/admin/policy/reload", &s.admin, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("policy_line_invalid"))
    );
    let line = good.lines().count() + 2;
    assert!(body["error"]["message"].as_str().unwrap().contains(&format!("line {line}")), "{body}");
    assert!(health_dp_on_elderly().await.0, "the policy in force stays in force");

    // A valid edit is picked up by the file watcher without anyone calling reload.
    std::fs::write(&policy, format!("{good}\np, *, health, civil.elderly, *, *, deny\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health_dp_on_elderly().await.0 {
        assert!(Instant::now() < deadline, "the policy watcher did not reload the edited file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health_dp_on_elderly().await, (false, "policy_deny".into()));
    let reloads: Vec<_> = s.audit_records().into_iter().filter(|r| r.entry.action == "policy.reload").collect();
    let decided = |d: &str| reloads.iter().any(|r| r.entry.decision == d);
    assert!(decided("error") && decided("ok"), "{reloads:?}");
}

#[tokio::test]
async fn every_endpoint_answers_every_role_with_the_exact_status() {
    let w = world().await;
    let s = &w.s;
    let roles: Vec<(&str, String)> = vec![
        ("admin", s.admin.clone()),
        ("civil-steward", w.civil_steward.clone()),
        ("health-steward", w.health_steward.clone()),
        ("civil-analyst", w.civil_analyst.clone()),
        ("health-analyst", w.health_analyst.clone()),
        ("auditor", w.auditor.clone()),
    ];
    use StatusCode as S;
    const OK: S = S::OK;
    const NEW: S = S::CREATED;
    const GONE: S = S::NO_CONTENT;
    const NO: S = S::FORBIDDEN;
    // Expected status for: admin, civil steward, health steward, civil analyst, health analyst, auditor.
    let everyone_reads = [OK, OK, OK, OK, OK, OK];
    for (n, (who, token)) in roles.iter().enumerate() {
        let i = |expected: [S; 6]| expected[n];
        let check = |what: &str, got: S, want: S| assert_eq!(got, want, "{what} as {who}");
        check(
            "POST /v1/departments",
            s.post("/v1/departments", token, json!({"id": format!("d{n}"), "name": "x"})).await.0,
            i([NEW, NO, NO, NO, NO, NO]),
        );
        check("GET /v1/departments", s.get("/v1/departments", token).await.0, i(everyone_reads));
        check(
            "POST /v1/users",
            s.post("/v1/users", token, json!({"id": format!("u{n}"), "roles": ["auditor"]})).await.0,
            i([NEW, NO, NO, NO, NO, NO]),
        );
        check("GET /v1/users", s.get("/v1/users", token).await.0, i([OK, NO, NO, NO, NO, NO]));
        let (status, issued) = s.post("/v1/users/auditor/tokens", token, json!({})).await;
        check("POST /v1/users/{id}/tokens", status, i([NEW, NO, NO, NO, NO, NO]));
        let token_id = issued["id"].as_str().unwrap_or("0000000000000000").to_owned();
        let revoke = s.request(Method::DELETE, &format!("/v1/users/auditor/tokens/{token_id}"), Some(token));
        check("DELETE /v1/users/{id}/tokens/{token_id}", s.send(revoke).await.0, i([GONE, NO, NO, NO, NO, NO]));
        check("GET /v1/whoami", s.get("/v1/whoami", token).await.0, i(everyone_reads));
        let name = format!("scratch{n}");
        check(
            "POST /v1/datasets",
            s.upload(token, &metadata(&name, "L2"), CSV.as_bytes().to_vec()).await.0,
            i([NO, NEW, NO, NO, NO, NO]),
        );
        check("GET /v1/datasets", s.get("/v1/datasets", token).await.0, i(everyone_reads));
        check("GET /v1/datasets/{d}", s.get("/v1/datasets/civil.elderly", token).await.0, i(everyone_reads));
        check(
            "GET /v1/datasets/{d}/access",
            s.get("/v1/datasets/civil.elderly/access", token).await.0,
            i(everyone_reads),
        );
        // Retire a dataset that exists whoever asks (registered by the civil steward).
        let (st, _) = s.upload(&w.civil_steward, &metadata(&format!("retire{n}"), "L2"), CSV.as_bytes().to_vec()).await;
        assert_eq!(st, NEW);
        let retire = s.request(Method::DELETE, &format!("/v1/datasets/civil.retire{n}"), Some(token));
        check("DELETE /v1/datasets/{d}", s.send(retire).await.0, i([NO, GONE, NO, NO, NO, NO]));
        check("POST /v1/access-requests", request(s, token, "aggregate").await.0, i([NO, NO, NO, NEW, NEW, NO]));
        check("GET /v1/access-requests", s.get("/v1/access-requests", token).await.0, i([NO, OK, OK, OK, OK, OK]));
        // A fresh pending request (by the health analyst) for each decision.
        for action in ["approve", "reject"] {
            let (_, pending) = request(s, &w.health_analyst, "dp").await;
            let id = pending["id"].as_str().unwrap();
            let got = s.post(&format!("/v1/access-requests/{id}/{action}"), token, json!({"reason": "r"})).await.0;
            check(&format!("POST /v1/access-requests/{{id}}/{action}"), got, i([NO, OK, NO, NO, NO, NO]));
        }
        let (_, pending) = request(s, &w.health_analyst, "dp").await;
        let id = pending["id"].as_str().unwrap();
        assert_eq!(s.post(&format!("/v1/access-requests/{id}/approve"), &w.civil_steward, json!({})).await.0, OK);
        let got = s.post(&format!("/v1/access-requests/{id}/revoke"), token, json!({"reason": "r"})).await.0;
        check("POST /v1/access-requests/{id}/revoke", got, i([NO, OK, NO, NO, NO, NO]));
        check(
            "POST /v1/admin/policy/reload",
            s.post("/v1/admin/policy/reload", token, json!({})).await.0,
            i([OK, NO, NO, NO, NO, NO]),
        );
        // Only analysts query, and only what the policy allows: civil's own L3 data yes, the
        // health analyst's L3 aggregates of civil data only under a grant it does not have.
        check(
            "POST /v1/query",
            s.post("/v1/query", token, json!({"sql": "SELECT count(*) FROM civil.elderly", "mode": "aggregate"}))
                .await
                .0,
            i([NO, NO, NO, OK, NO, NO]),
        );
        // Only auditors read the audit log, in every form; for anyone else `audit.events`
        // does not exist, like any dataset they may not use.
        check("GET /v1/audit", s.get("/v1/audit", token).await.0, i([NO, NO, NO, NO, NO, OK]));
        check("GET /v1/audit/export", s.get("/v1/audit/export", token).await.0, i([NO, NO, NO, NO, NO, OK]));
        check("GET /v1/audit/verify", s.get("/v1/audit/verify", token).await.0, i([NO, NO, NO, NO, NO, OK]));
        let audit_sql = json!({"sql": "SELECT count(*) FROM audit.events"});
        const HIDDEN: S = S::NOT_FOUND;
        check(
            "POST /v1/query on audit.events",
            s.post("/v1/query", token, audit_sql).await.0,
            i([HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN, OK]),
        );
    }
    // Without a token, every endpoint is 401.
    for (method, path) in [
        (Method::GET, "/v1/departments"),
        (Method::GET, "/v1/datasets"),
        (Method::POST, "/v1/datasets"),
        (Method::GET, "/v1/access-requests"),
        (Method::GET, "/v1/audit"),
        (Method::GET, "/v1/audit/verify"),
        (Method::POST, "/v1/admin/policy/reload"),
        (Method::GET, "/v1/datasets/civil.elderly/access"),
        (Method::POST, "/v1/query"),
    ] {
        assert_eq!(s.send(s.request(method.clone(), path, None)).await.0, S::UNAUTHORIZED, "{method} {path}");
    }
}

/// A dp red team read `row_count` (and each version's `byte_size`) of planted twin datasets
/// as an analyst of another department: 501 against 500 rows, membership for no ε, and who was
/// added or removed between versions. Exact sizes of a dataset about people are shown to its
/// own department, administrators and auditors; to others, not at all. A dataset about nobody
/// keeps its public row count.
#[tokio::test]
async fn other_departments_see_no_exact_size_of_data_about_people() {
    let w = veil_tests::world::world().await;
    let (status, _) =
        w.s.upload(
            &w.civil_steward,
            &serde_json::json!({"name": "codes", "department": "civil", "level": "L1",
                                "columns": {"code": {"tag": "attribute"}, "label": {"tag": "attribute"}}}),
            b"code,label\nA,one\nB,two\n".to_vec(),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let sizes = |body: &serde_json::Value| {
        let versions = body["versions"].as_array().cloned().unwrap_or_default();
        (
            body["row_count"].clone(),
            versions.iter().map(|v| (v["row_count"].clone(), v["byte_size"].clone())).collect::<Vec<_>>(),
        )
    };
    for (who, token, shown) in [
        ("another department", &w.health_analyst, false),
        ("its department", &w.civil_analyst, true),
        ("an auditor", &w.auditor, true),
    ] {
        let (status, body) = w.s.get("/v1/datasets/civil.residents", token).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let (rows, versions) = sizes(&body);
        assert_eq!(rows.is_u64(), shown, "{who}: {body}");
        assert!(versions.iter().all(|(r, b)| r.is_u64() == shown && b.is_u64() == shown), "{who}: {body}");
        let (_, list) = w.s.get("/v1/datasets", token).await;
        let listed = list.as_array().unwrap().iter().find(|d| d["id"] == "civil.residents").unwrap();
        assert_eq!(listed["row_count"].is_u64(), shown, "{who}: {listed}");
        let (_, codes) = w.s.get("/v1/datasets/civil.codes", token).await;
        assert_eq!(codes["row_count"], 2, "{who}: a table about nobody keeps its count: {codes}");
    }
}
