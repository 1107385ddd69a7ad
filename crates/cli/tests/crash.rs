//! `kill -9` during concurrent queries: every audit id a client was given is in the log after a
//! restart, and the log verifies offline with the exported public key.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::{init, people, register, serve, veil};

/// Every record in the log's segments, in order, as JSON.
fn log_records(data: &Path) -> Vec<serde_json::Value> {
    let mut segments: Vec<_> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("segment-"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        for line in std::fs::read_to_string(segment).unwrap().lines() {
            let mut line: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(line["record"].take());
        }
    }
    out
}

/// Every record's (seq, action) in the log's segments.
/// Every (request id, action) of the records in the log's segments that name a request.
fn records(data: &Path) -> Vec<(String, String)> {
    log_records(data)
        .iter()
        .filter_map(|r| Some((r["request_id"].as_str()?.to_owned(), r["action"].as_str()?.to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_acknowledged_audit_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, token) = init(tmp.path());
    let (mut child, url) = serve(&data);

    // Sixteen clients send queries as fast as they are answered; each answer (here a refusal,
    // which is audited like any query) carries the audit id of its durable record.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let client = reqwest::Client::new();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (client, url, token, acknowledged) = (client.clone(), url.clone(), token.clone(), Arc::clone(&acknowledged));
            tokio::spawn(async move {
                for n in 0.. {
                    let body = serde_json::json!({"sql": format!("SELECT count(*) FROM civil.t{i}_{n}"), "dry_run": n % 2 == 0});
                    let Ok(response) = client.post(format!("{url}/v1/query")).bearer_auth(&token).json(&body).send().await
                    else {
                        return;
                    };
                    let Some(id) = response.headers().get("x-veil-audit-id") else { return };
                    let id = id.to_str().unwrap().to_owned();
                    acknowledged.lock().unwrap().insert(id);
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    // Reopening recovers the log (setting aside a half-written batch, if the kill left one).
    let (mut child, _) = serve(&data);
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success());

    let stored: std::collections::HashMap<String, String> = records(&data).into_iter().collect();
    for id in &acknowledged {
        assert_eq!(stored.get(id).map(String::as_str), Some("query"), "acknowledged audit id {id} is missing");
    }
    let key = tmp.path().join("audit.pub");
    let out = veil().args(["audit", "public-key", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success());
    std::fs::write(&key, &out.stdout).unwrap();
    let out = veil().args(["audit", "verify", "--dir"]).arg(&data).arg("--public-key").arg(&key).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.starts_with("ok: "), "{report}");
    assert!(!report.contains("warning"), "a graceful stop signs the head: {report}");
}

/// Every (target dataset, detail) of the `dataset.register` records in the log's segments.
fn registrations(data: &Path) -> Vec<(String, String)> {
    log_records(data)
        .iter()
        .filter(|r| r["action"] == "dataset.register")
        .map(|r| {
            let dataset = r["datasets"][0]["dataset"].as_str().unwrap_or_default().to_owned();
            (dataset, r["detail"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_registering_leaves_no_version_without_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, admin) = init(tmp.path());
    let (child, url) = serve(&data);
    let client = reqwest::Client::new();
    let tokens = people(&url, &admin, &[("civil", "民政局")], &[("civil-steward", "civil", "steward")]).await;
    let steward = tokens["civil-steward"].clone();

    // Four stewards' clients register new versions as fast as they are answered.
    let answered = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (client, url, steward, answered) =
                (client.clone(), url.clone(), steward.clone(), Arc::clone(&answered));
            tokio::spawn(async move {
                for n in 0.. {
                    let metadata = serde_json::json!({
                        "name": format!("t{i}"), "department": "civil", "level": "L1", "description": "crash test",
                        "columns": {"n": {"tag": "attribute"}}
                    });
                    let bytes = format!("n\n{n}\n").into_bytes();
                    let Ok(response) = register(&client, &url, &steward, &metadata, bytes).await else {
                        return;
                    };
                    if !response.status().is_success() {
                        return;
                    }
                    *answered.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    // The restart appends what the kill left pending; then every version in the catalogue has
    // its record in the log.
    kill_and_restart(child, &answered, clients, &data).await;
    let recorded = registrations(&data);
    let catalog = veil_catalog::Catalog::open(&data).unwrap();
    let mut versions = 0;
    for dataset in catalog.datasets(true).unwrap() {
        for version in &dataset.versions {
            versions += 1;
            let detail = format!("version {}, ", version.version);
            assert!(
                recorded.iter().any(|(d, text)| *d == dataset.dataset.to_string() && text.starts_with(&detail)),
                "{} version {} is in force without its audit record",
                dataset.dataset,
                version.version
            );
        }
    }
    assert!(versions >= 40, "{versions} versions");
    assert!(catalog.pending_records().unwrap().is_empty());
}

/// Once the clients have had 40 answers, kills the server with SIGKILL (wherever each change is:
/// before, in or after its commit), waits for the clients, then starts the server again on
/// `data` (which appends what the kill left pending) and stops it gracefully.
async fn kill_and_restart(
    mut child: Child,
    answered: &Mutex<usize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
    data: &Path,
) {
    while *answered.lock().unwrap() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let (mut child, _) = serve(data);
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// Every (action, target) of the access-request decisions in the log's segments.
fn decisions(data: &Path) -> BTreeSet<(String, String)> {
    log_records(data)
        .iter()
        .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("access_request.")))
        .map(|r| {
            (r["action"].as_str().unwrap_or_default().to_owned(), r["target"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Access decisions commit with their audit records (the catalogue's outbox): a kill aimed
/// between the two (a red team found 6 of 6 grants in force without a record) leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_deciding_access_leaves_no_grant_without_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, admin) = init(tmp.path());
    let (child, url) = serve(&data);
    let client = reqwest::Client::new();
    let post = |path: String, token: String, body: serde_json::Value| {
        let request = client.post(format!("{url}{path}")).bearer_auth(token).json(&body);
        async move { request.send().await.unwrap() }
    };
    let tokens = people(
        &url,
        &admin,
        &[("civil", "民政局"), ("health", "卫健委")],
        &[("civil-steward", "civil", "steward"), ("health-analyst", "health", "analyst")],
    )
    .await;
    let metadata = serde_json::json!({
        "name": "t", "department": "civil", "level": "L2", "description": "crash test",
        "columns": {"n": {"tag": "attribute"}}
    });
    let registered = register(&client, &url, &tokens["civil-steward"], &metadata, b"n\n1\n2\n".to_vec()).await;
    assert!(registered.unwrap().status().is_success());
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..160 {
        let body = serde_json::json!({"dataset": "civil.t", "mode": "aggregate", "purpose": format!("crash test {n}"), "expires_at": expires});
        let asked: serde_json::Value =
            post("/v1/access-requests".into(), tokens["health-analyst"].clone(), body).await.json().await.unwrap();
        ids.push(asked["id"].as_str().unwrap().to_owned());
    }

    // Four clients decide them, approving and rejecting in turn, as fast as they are answered.
    let queue = Arc::new(Mutex::new(ids));
    let answered = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (client, url, steward) = (client.clone(), url.clone(), tokens["civil-steward"].clone());
            let (queue, answered) = (Arc::clone(&queue), Arc::clone(&answered));
            tokio::spawn(async move {
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else { return };
                    let (verb, body) = if i % 2 == 0 {
                        ("approve", serde_json::json!({}))
                    } else {
                        ("reject", serde_json::json!({"reason": "crash test"}))
                    };
                    let sent =
                        client.post(format!("{url}/v1/access-requests/{id}/{verb}")).bearer_auth(&steward).json(&body);
                    match sent.send().await {
                        Ok(response) if response.status().is_success() => *answered.lock().unwrap() += 1,
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // The restart appends what the kill left pending; then every decision in force has its record.
    kill_and_restart(child, &answered, clients, &data).await;
    let recorded = decisions(&data);
    let catalog = veil_catalog::Catalog::open(&data).unwrap();
    let mut decided = 0;
    for request in catalog.access_requests(&veil_catalog::RequestFilter::default()).unwrap() {
        let action = match request.state {
            veil_catalog::RequestState::Approved => "access_request.approve",
            veil_catalog::RequestState::Rejected => "access_request.reject",
            veil_catalog::RequestState::Pending | veil_catalog::RequestState::Revoked => continue,
        };
        decided += 1;
        assert!(
            recorded.contains(&(action.to_owned(), request.id.clone())),
            "request {} is {:?} without its audit record",
            request.id,
            request.state
        );
    }
    assert!((40..160).contains(&decided), "{decided} decisions: the kill came while deciding");
    assert!(catalog.pending_records().unwrap().is_empty());
}

/// Extract requests commit with their audit records (the extract's file, the request and the
/// record in one step): a kill while analysts ask for extracts leaves no request whose extract
/// a steward could approve without its `access_request.create` record, and no request without
/// its extract's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_building_extracts_leaves_no_request_without_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, admin) = init(tmp.path());
    let (child, url) = serve(&data);
    let client = reqwest::Client::new();
    let tokens = people(
        &url,
        &admin,
        &[("civil", "民政局")],
        &[("civil-steward", "civil", "steward"), ("civil-analyst", "civil", "analyst")],
    )
    .await;
    let metadata = serde_json::json!({
        "name": "p", "department": "civil", "level": "L2", "description": "crash test", "privacy_unit": "id",
        "columns": {
            "id": {"tag": "identifier"},
            "district": {"tag": "quasi_identifier"},
            "subsidy": {"tag": "sensitive", "bounds": [0, 1000]}
        }
    });
    let mut csv = String::from("id,district,subsidy\n");
    for i in 0..60 {
        csv.push_str(&format!("p{i},d{},{}\n", i % 3, 100 + (i % 7) * 50));
    }
    let registered = register(&client, &url, &tokens["civil-steward"], &metadata, csv.into_bytes()).await;
    assert!(registered.unwrap().status().is_success());
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    // Four clients ask for extracts as fast as they are answered.
    let answered = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (client, url, analyst) = (client.clone(), url.clone(), tokens["civil-analyst"].clone());
            let (answered, expires) = (Arc::clone(&answered), expires.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let body = serde_json::json!({
                        "dataset": "civil.p", "mode": "deidentified", "purpose": "crash test", "expires_at": expires,
                        "extract": {"name": format!("e{i}_{n}"), "columns": ["id", "district", "subsidy"]}
                    });
                    let sent = client.post(format!("{url}/v1/access-requests")).bearer_auth(&analyst).json(&body);
                    match sent.send().await {
                        Ok(response) if response.status().is_success() => *answered.lock().unwrap() += 1,
                        _ => return,
                    }
                }
            })
        })
        .collect();
    kill_and_restart(child, &answered, clients, &data).await;
    let created: BTreeSet<String> = log_records(&data)
        .iter()
        .filter(|r| r["action"] == "access_request.create")
        .filter_map(|r| r["target"].as_str().map(str::to_owned))
        .collect();
    let catalog = veil_catalog::Catalog::open(&data).unwrap();
    let requests = catalog.access_requests(&veil_catalog::RequestFilter::default()).unwrap();
    for request in &requests {
        assert!(created.contains(&request.id), "request {} is in the catalogue without its audit record", request.id);
        let extract = catalog.extract(&request.id).unwrap().expect("each request has its extract");
        assert!(extract.file.exists(), "request {}'s extract has no file", request.id);
    }
    assert!(requests.len() >= 40, "{} requests", requests.len());
    assert!(catalog.pending_records().unwrap().is_empty());
}
