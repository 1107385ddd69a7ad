//! Identity over HTTP: tokens, departments, users, roles, and the error format.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use reqwest::{Method, StatusCode};
use serde_json::json;
use veil_tests::TestServer;

#[tokio::test]
async fn the_init_token_signs_in_as_admin() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/v1/whoami", &s.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], "admin");
    assert_eq!(body["roles"], json!(["admin"]));
}

#[tokio::test]
async fn missing_malformed_wrong_and_revoked_tokens_are_401() {
    let s = TestServer::start().await;
    let response = s.request(Method::GET, "/v1/datasets", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers().get("www-authenticate").unwrap(), "Bearer");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    for bad in ["nonsense", "veil_0000000000000000_00", &s.admin.replace('_', "-")] {
        let (status, _) = s.get("/v1/datasets", bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    // Right id, wrong secret.
    let (id_part, secret) = s.admin.rsplit_once('_').unwrap();
    let flipped = format!("{id_part}_{}", secret.chars().rev().collect::<String>());
    assert_eq!(s.get("/v1/datasets", &flipped).await.0, StatusCode::UNAUTHORIZED);

    s.department("civil", "民政局").await;
    s.user("a1", Some("civil"), &["analyst"]).await;
    let (status, issued) = s.post("/v1/users/a1/tokens", &s.admin, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = issued["token"].as_str().unwrap();
    assert_eq!(s.get("/v1/whoami", token).await.0, StatusCode::OK);
    let revoke =
        s.request(Method::DELETE, &format!("/v1/users/a1/tokens/{}", issued["id"].as_str().unwrap()), Some(&s.admin));
    assert_eq!(s.send(revoke).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/v1/whoami", token).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_manages_departments_and_users_with_clear_errors() {
    let s = TestServer::start().await;
    s.department("civil", "民政局").await;
    let (status, body) = s.post("/v1/departments", &s.admin, json!({"id": "civil", "name": "again"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("department_exists")));
    let (status, body) = s.post("/v1/departments", &s.admin, json!({"id": "Civil Affairs", "name": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_name")));
    let (status, body) = s.post("/v1/departments", &s.admin, json!({"id": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")), "{body}");

    let cases = [
        (
            json!({"id": "u1", "department": "civil", "roles": ["wizard"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_role",
        ),
        (json!({"id": "u1", "roles": ["steward"]}), StatusCode::UNPROCESSABLE_ENTITY, "department_required"),
        (json!({"id": "u1", "department": "civil", "roles": []}), StatusCode::UNPROCESSABLE_ENTITY, "roles_required"),
        (
            json!({"id": "u1", "department": "nowhere", "roles": ["analyst"]}),
            StatusCode::NOT_FOUND,
            "department_not_found",
        ),
        (json!({"id": "admin", "roles": ["auditor"]}), StatusCode::CONFLICT, "user_exists"),
    ];
    for (body, want_status, want_code) in cases {
        let (status, reply) = s.post("/v1/users", &s.admin, body.clone()).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (want_status, Some(want_code)), "{body}");
    }
    let (status, users) = s.get("/v1/users", &s.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(users.as_array().unwrap().len(), 1, "no refused user was created: {users}");
    assert_eq!(s.post("/v1/users/nobody/tokens", &s.admin, json!({})).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_admins_manage_identity() {
    let s = TestServer::start().await;
    s.department("civil", "民政局").await;
    let steward = s.user("steward", Some("civil"), &["steward"]).await;
    let analyst = s.user("analyst", Some("civil"), &["analyst"]).await;
    let auditor = s.user("auditor", None, &["auditor"]).await;
    for token in [&steward, &analyst, &auditor] {
        assert_eq!(s.post("/v1/departments", token, json!({"id": "x", "name": "x"})).await.0, StatusCode::FORBIDDEN);
        assert_eq!(s.post("/v1/users", token, json!({"id": "x", "roles": ["admin"]})).await.0, StatusCode::FORBIDDEN);
        assert_eq!(s.post("/v1/users/admin/tokens", token, json!({})).await.0, StatusCode::FORBIDDEN);
        assert_eq!(s.get("/v1/users", token).await.0, StatusCode::FORBIDDEN);
        // Departments and the catalogue are visible to everyone signed in.
        assert_eq!(s.get("/v1/departments", token).await.0, StatusCode::OK);
        assert_eq!(s.get("/v1/datasets", token).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let s = TestServer::start().await;
    let (status, body) = s.send(s.request(Method::GET, "/healthz", None)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let _ = s.get("/v1/datasets", &s.admin).await;
    // Request counts and latencies are other users' activity: administrators and auditors only.
    assert_eq!(s.send(s.request(Method::GET, "/metrics", None)).await.0, StatusCode::UNAUTHORIZED);
    s.department("civil", "民政局").await;
    let analyst = s.user("metrics-analyst", Some("civil"), &["analyst"]).await;
    assert_eq!(s.send(s.request(Method::GET, "/metrics", Some(&analyst))).await.0, StatusCode::FORBIDDEN);
    let metrics = s.request(Method::GET, "/metrics", Some(&s.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("veil_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/datasets\""), "{metrics}");
    let (status, api) = s.send(s.request(Method::GET, "/v1/openapi.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    // The reference page: served by the binary, loading nothing from the network.
    let page = s.request(Method::GET, "/v1/docs", None).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains("<code>/v1/datasets</code>") && page.contains("id=\"schema-DatasetMetadata\""));
    assert!(!page.contains("<script") && !page.contains("src="));
    for path in ["/v1/datasets", "/v1/datasets/{dataset}", "/v1/users/{id}/tokens", "/v1/departments"] {
        assert!(api["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    let (status, body) = s.send(s.request(Method::GET, "/v1/no-such-thing", None)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    // A known endpoint with a method it does not take: 405 with an error body (it was empty).
    for (method, path) in [(Method::GET, "/v1/query"), (Method::DELETE, "/healthz")] {
        let (status, body) = s.send(s.request(method, path, Some(&s.admin))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
        );
    }
}
