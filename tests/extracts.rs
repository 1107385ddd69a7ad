//! De-identified mode over HTTP: an analyst asks for an extract, the steward sees its report
//! and approves, the analyst queries it. And the re-identifications that opened free-form
//! de-identified SQL, each now run against an extract and measured: no row an attacker can
//! pick is tied to a planted person better than one in k.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use serde_json::{Value, json};
use veil_tests::TestServer;

/// k at L2, the level of `civil.people`.
const K: usize = 5;

/// The planted person: alone in 戊区, born on a day nobody else was, with the highest subsidy.
const TARGET_ID: &str = "110101193905170099";
const TARGET_DISTRICT: &str = "戊区";
const TARGET_BIRTH: &str = "1939-05-17";
const TARGET_SUBSIDY: i64 = 1999;

struct World {
    s: TestServer,
    steward: String,
    analyst: String,
    other_analyst: String,
}

fn metadata() -> Value {
    json!({
        "name": "people", "department": "civil", "level": "L2", "privacy_unit": "person_id",
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true},
            "name": {"tag": "identifier"},
            "district": {"tag": "quasi_identifier"},
            "birth_date": {"tag": "quasi_identifier", "type": "date"},
            "living_alone": {"tag": "attribute"},
            "subsidy": {"tag": "sensitive", "bounds": [0, 2000]},
            "diagnosis": {"tag": "sensitive"}
        }
    })
}

/// 300 look-alike people in four districts, born 1940–1959, and the planted person.
fn csv() -> String {
    let mut out = String::from("person_id,name,district,birth_date,living_alone,subsidy,diagnosis\n");
    for i in 0..300 {
        let district = ["甲区", "乙区", "丙区", "丁区"][i % 4];
        let year = 1940 + (i * 7) % 20;
        let (month, day) = (i % 12 + 1, (i * 5) % 28 + 1);
        out.push_str(&format!(
            "1101{year}{month:02}{day:02}{i:06},居民{i},{district},{year}-{month:02}-{day:02},{},{},{}\n",
            i % 3 == 0,
            100 + (i % 9) * 100,
            ["I10", "E11", "J45"][i % 3]
        ));
    }
    out.push_str(&format!("{TARGET_ID},目标,{TARGET_DISTRICT},{TARGET_BIRTH},true,{TARGET_SUBSIDY},C50\n"));
    out
}

/// Every person id of the source.
fn source_ids() -> Vec<String> {
    csv().lines().skip(1).filter_map(|l| l.split(',').next()).map(str::to_owned).collect()
}

async fn world() -> World {
    let s = TestServer::start().await;
    s.department("civil", "民政局").await;
    let steward = s.user("civil-steward", Some("civil"), &["steward"]).await;
    let analyst = s.user("civil-analyst", Some("civil"), &["analyst"]).await;
    let other_analyst = s.user("civil-analyst-2", Some("civil"), &["analyst"]).await;
    let (status, body) = s.upload(&steward, &metadata(), csv().into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    World { s, steward, analyst, other_analyst }
}

/// Asserts that an ask or approval was refused for setting fewer than k people apart from the
/// extracts released.
fn assert_isolates(status: StatusCode, body: &Value) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("extract_isolates_people")),
        "{body}"
    );
}

/// Asserts that an ask was refused for narrowing someone's sensitive value with the extracts
/// released; `what` says which case.
fn assert_narrows(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("extract_narrows_values")),
        "{what}: {body}"
    );
}

fn in_a_month() -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

impl World {
    /// The health department and its steward's token.
    async fn health_steward(&self) -> String {
        self.s.department("health", "卫健委").await;
        self.s.user("health-steward", Some("health"), &["steward"]).await
    }

    /// Asserts that the joined extract the analyst asked for (`status`, `body`) was not refused
    /// at once but held for its stewards: created as any other, with no report for the
    /// analyst; the steward's report says rule `code` refuses it, and approving it is refused.
    async fn assert_held(&self, status: StatusCode, body: &Value, code: &str) {
        assert_eq!(status, StatusCode::CREATED, "{code}: not refused at once: {body}");
        assert!(body["extract"].get("report").is_none_or(Value::is_null), "{body}");
        let id = body["id"].as_str().unwrap();
        let (_, theirs) = self.s.get("/v1/access-requests", &self.steward).await;
        let report = &theirs.as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["extract"]["report"];
        assert_eq!(report["refused_by"], code, "{report}");
        assert!(report["unbuildable"].as_str().is_some_and(|why| !why.is_empty()), "{report}");
        let (status, body) = self.s.post(&format!("/v1/access-requests/{id}/approve"), &self.steward, json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("extract_unbuildable")),
            "{body}"
        );
    }

    async fn ask(&self, token: &str, extract: Value) -> (StatusCode, Value) {
        self.ask_of("civil.people", token, extract).await
    }

    /// Asks for `extract` of `dataset`.
    async fn ask_of(&self, dataset: &str, token: &str, extract: Value) -> (StatusCode, Value) {
        let body = json!({"dataset": dataset, "mode": "deidentified", "purpose": "独居老人补贴复核",
                          "expires_at": in_a_month(), "extract": extract});
        self.s.post("/v1/access-requests", token, body).await
    }

    /// Registers `csv` as a dataset of visits named `name` (health), as `steward`.
    async fn upload_visits(&self, steward: &str, name: &str, csv: String) {
        let mut metadata = visits_metadata();
        metadata["name"] = json!(name);
        let (status, body) = self.s.upload(steward, &metadata, csv.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Asks for `extract` as the analyst and has the steward approve it; returns the request id.
    async fn granted(&self, extract: Value) -> String {
        let (status, body) = self.ask(&self.analyst, extract).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, body) = self.s.post(&format!("/v1/access-requests/{id}/approve"), &self.steward, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        id
    }

    async fn rows(&self, token: &str, sql: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.s.post("/v1/query", token, json!({"sql": sql, "mode": "deidentified"})).await;
        assert_eq!(status, StatusCode::OK, "{sql}: {body}");
        assert!(body.get("suppressed_groups").is_none(), "{body}");
        body["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect()
    }
}

fn standard() -> Value {
    json!({"name": "people", "columns": ["person_id", "district", "birth_date", "living_alone", "subsidy"]})
}

/// Whether a released label of a quasi-identifier covers the true `value`: `*`, a masked
/// prefix, a band, a year span, a quarter, or the value's own prefix (year, month, day).
fn covers(label: &str, value: &str) -> bool {
    if label == "*" || label == value {
        return true;
    }
    if let Some(stem) = label.strip_suffix('*') {
        return value.starts_with(stem.trim_end_matches('*'));
    }
    if let Some((year, q)) = label.split_once("-Q") {
        let month: u32 = value.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(0);
        return value.starts_with(year) && q.parse::<u32>().ok() == Some(month.div_ceil(3));
    }
    if label.len() == 9 && label.as_bytes()[4] == b'-' {
        let (lo, hi) = (&label[..4], &label[5..]);
        return (lo..=hi).contains(&&value[..4]);
    }
    value.starts_with(label)
}

/// The rows an attacker who knows the target's district and birth date cannot tell from the
/// target's own.
fn candidates(rows: &[Vec<Value>]) -> Vec<&Vec<Value>> {
    rows.iter()
        .filter(|r| {
            covers(r[1].as_str().unwrap_or("*"), TARGET_DISTRICT) && covers(r[2].as_str().unwrap_or("*"), TARGET_BIRTH)
        })
        .collect()
}

/// Asserts that every released row shares its quasi-identifiers with at least K rows (one row
/// per person here), whatever query selected it.
fn assert_classes(all: &[Vec<Value>], picked: &[Vec<Value>]) {
    let mut size: HashMap<(String, String), usize> = HashMap::new();
    for r in all {
        *size.entry((r[1].to_string(), r[2].to_string())).or_default() += 1;
    }
    for r in picked {
        let n = size.get(&(r[1].to_string(), r[2].to_string())).copied().unwrap_or(0);
        assert!(n >= K, "a released row shares its quasi-identifiers with {n} rows: {r:?}");
    }
}

/// An extract's build holds its datasets in memory, so it takes room in the memory queries
/// share before it reads anything (estimated from the files' footers); one that needs more than
/// the whole of it is refused with what it needs, and registration (one query's room) goes on.
#[tokio::test]
async fn an_extract_larger_than_the_servers_memory_is_refused_before_it_is_read() {
    let mut w = world().await;
    let tiny =
        veil_query::Limits { memory_bytes: 16 << 10, total_memory_bytes: 16 << 10, ..veil_query::Limits::standard() };
    w.s.restart_in_place(tiny).await;
    let (status, body) = w.ask(&w.analyst, standard()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "too_large_for_memory", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the extract cannot be built") && message.contains("16 KiB"), "{message}");
    let mut again = metadata();
    again["name"] = json!("again");
    let (status, body) = w.s.upload(&w.steward, &again, csv().into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn an_extract_is_asked_for_reported_approved_and_queried() {
    let w = world().await;
    let (status, asked) = w.ask(&w.analyst, standard()).await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    assert_eq!(asked["state"], "pending");
    assert_eq!(asked["extract"]["name"], "people");
    assert!(asked["extract"]["report"].is_null(), "the analyst sees no report before approval: {asked}");
    assert!(asked["extract"]["rows"].is_null(), "nor how many rows: {asked}");
    let id = asked["id"].as_str().unwrap();

    // Not readable while pending.
    let (status, body) =
        w.s.post("/v1/query", &w.analyst, json!({"sql": "SELECT * FROM extracts.people", "mode": "deidentified"}))
            .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_dataset")), "{body}");

    // The steward sees the report before deciding.
    let (_, listed) = w.s.get("/v1/access-requests", &w.steward).await;
    let report = &listed.as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["extract"]["report"];
    assert_eq!(report["k"], K as u64, "{report}");
    assert_eq!(report["source_records"], 301);
    let suppressed = report["suppressed_records"].as_u64().unwrap();
    assert!(suppressed as f64 <= 0.05 * 301.0, "{report}");
    assert!(report["highest_risk"].as_f64().unwrap() <= 1.0 / K as f64);
    let columns = report["columns"].as_array().unwrap();
    let treatment =
        |c: &str| columns.iter().find(|x| x["name"] == c).unwrap()["treatment"].as_str().unwrap().to_owned();
    assert!(treatment("subsidy").starts_with("coded to the declared bounds"), "{report}");
    assert!(source_ids().iter().all(|id| !report.to_string().contains(id.as_str())), "the report carries no value");

    let (status, approved) = w.s.post(&format!("/v1/access-requests/{id}/approve"), &w.steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let (_, mine) = w.s.get("/v1/access-requests", &w.analyst).await;
    assert!(mine[0]["extract"]["report"]["k"].is_u64(), "approved: the analyst sees the report: {mine}");

    let rows = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    assert_eq!(rows.len() as u64, 301 - suppressed);
    assert_classes(&rows, &rows);
    // A released number is no key to link on: at least k people share each.
    let mut subsidies: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in &rows {
        *subsidies.entry(row[4].to_string()).or_default() += 1;
    }
    assert!(subsidies.values().all(|n| *n >= K), "{subsidies:?}");
    let text = serde_json::to_string(&rows).unwrap();
    // Pseudonyms are hex and may hold any short digit run: look for whole source ids.
    assert!(
        source_ids().iter().all(|id| !text.contains(id.as_str())) && !text.contains("居民"),
        "an identifier left the broker"
    );
    let pseudonyms: HashSet<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(pseudonyms.len(), rows.len(), "one pseudonym per person");

    // Any read-only SQL over the extract: aggregates, ORDER BY, LIMIT.
    let by_district = w.rows(&w.analyst, "SELECT district, count(*) AS n FROM extracts.people GROUP BY district").await;
    assert_eq!(by_district.iter().map(|r| r[1].as_u64().unwrap()).sum::<u64>(), rows.len() as u64);

    // The decisions are recorded, with the report on creation.
    let records = w.s.audit_records();
    let create = records.iter().find(|r| r.entry.action == "access_request.create").unwrap();
    assert!(create.entry.detail.as_deref().unwrap_or("").contains("suppressed_records"));
    // It committed with the request (the outbox), and kept the HTTP request's id.
    assert_eq!(create.entry.target.as_deref(), Some(id));
    assert!(create.entry.request_id.is_some());
    assert!(veil_catalog::Catalog::open(&w.s.data_dir()).unwrap().pending_records().unwrap().is_empty());
    let query = records.iter().rev().find(|r| r.entry.action == "query").unwrap();
    assert_eq!(query.entry.datasets[0].dataset, "civil.people");
    assert!(query.entry.detail.as_deref().unwrap_or("").contains(id));
}

/// Leak (free-form de-identified SQL): `ORDER BY birth_date … LIMIT 1` picked one person's row.
#[tokio::test]
async fn order_by_limit_one_picks_a_class_not_a_person() {
    let w = world().await;
    w.granted(standard()).await;
    let all = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    for sql in [
        "SELECT * FROM extracts.people ORDER BY birth_date ASC LIMIT 1",
        "SELECT * FROM extracts.people ORDER BY birth_date DESC LIMIT 1",
        "SELECT * FROM extracts.people ORDER BY subsidy DESC LIMIT 1",
        "SELECT * FROM extracts.people ORDER BY district DESC, birth_date LIMIT 1",
    ] {
        let picked = w.rows(&w.analyst, sql).await;
        assert_classes(&all, &picked);
    }
}

/// Leak: a literal label (`UNION ALL` of a `'target'` branch, `LEFT JOIN (VALUES …)` on a birth
/// date) selected the planted person's row by their exact quasi-identifiers. In the extract,
/// whatever the attacker knows of the target matches at least k people with l subsidies.
#[tokio::test]
async fn a_literal_label_or_values_join_singles_out_nobody() {
    let w = world().await;
    w.granted(standard()).await;
    let all = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    let c = candidates(&all);
    assert!(c.is_empty() || c.len() >= K, "{} rows look like the target", c.len());
    let subsidies: HashSet<String> = c.iter().map(|r| r[4].to_string()).collect();
    assert!(c.is_empty() || subsidies.len() >= 2, "the target's look-alikes share one subsidy");
    for sql in [
        format!("SELECT 'target' AS who, subsidy FROM extracts.people WHERE birth_date = '{TARGET_BIRTH}'"),
        format!(
            "SELECT p.* FROM extracts.people p JOIN (VALUES ('{TARGET_DISTRICT}', '{TARGET_BIRTH}')) AS t(d, b) ON p.district = t.d AND p.birth_date = t.b"
        ),
        format!("SELECT * FROM extracts.people WHERE district = '{TARGET_DISTRICT}'"),
        format!("SELECT * FROM extracts.people WHERE subsidy = {TARGET_SUBSIDY}"),
    ] {
        let rows = w.rows(&w.analyst, &sql).await;
        assert!(rows.is_empty() || sql.contains("subsidy =") || rows.len() >= K, "{sql}: {rows:?}");
        if sql.contains("subsidy =") {
            // A sensitive value selects rows, never one person's quasi-identifiers alone.
            assert_classes(&all, &rows);
        }
    }
}

/// Leak: pseudonyms stable per analyst made the set difference of `>=` and `>` on a birth date
/// name the odd pseudonym. In an extract the difference of any two answers is whole classes.
#[tokio::test]
async fn the_difference_of_two_answers_is_whole_classes() {
    let w = world().await;
    w.granted(standard()).await;
    let all = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    let labels: HashSet<String> = all.iter().map(|r| r[2].as_str().unwrap_or("*").to_owned()).collect();
    for label in labels.iter().chain([&TARGET_BIRTH.to_owned()]) {
        let ge = w.rows(&w.analyst, &format!("SELECT * FROM extracts.people WHERE birth_date >= '{label}'")).await;
        let gt = w.rows(&w.analyst, &format!("SELECT * FROM extracts.people WHERE birth_date > '{label}'")).await;
        let gt: HashSet<String> = gt.iter().map(|r| r[0].to_string()).collect();
        let difference: Vec<Vec<Value>> = ge.into_iter().filter(|r| !gt.contains(&r[0].to_string())).collect();
        assert!(difference.is_empty() || difference.len() >= K, "{label}: {} rows differ", difference.len());
        assert_classes(&all, &difference);
    }
}

/// Two extracts of the residents granted to the analyst: `a` by district and birth date, `b` by
/// birth year; both with living alone and the subsidy.
async fn granted_a_and_b(w: &World) {
    w.granted(json!({"name": "a", "columns": ["district", "birth_date", "living_alone", "subsidy"]})).await;
    w.granted(json!({"name": "b", "columns": ["birth_date", "living_alone", "subsidy"], "hierarchies": {"birth_date": ["year"]}}))
        .await;
}

/// Red team: two extracts of the same people with different quasi-identifiers, asked for by
/// two analysts and each k-anonymous alone, were joined on their exact sensitive values and left
/// the planted person alone. Every extract of a dataset is a projection of one base release, so
/// the join still leaves the target among at least k people.
#[tokio::test]
async fn two_extracts_joined_on_their_values_still_hide_the_target() {
    let w = world().await;
    granted_a_and_b(&w).await;
    let a = w.rows(&w.analyst, "SELECT district, birth_date, living_alone, subsidy FROM extracts.a").await;
    let b = w.rows(&w.analyst, "SELECT birth_date, living_alone, subsidy FROM extracts.b").await;
    let in_b: HashSet<(String, String)> = b
        .iter()
        .filter(|r| covers(r[0].as_str().unwrap_or("*"), TARGET_BIRTH))
        .map(|r| (r[1].to_string(), r[2].to_string()))
        .collect();
    let possible = a
        .iter()
        .filter(|r| {
            covers(r[0].as_str().unwrap_or("*"), TARGET_DISTRICT) && covers(r[1].as_str().unwrap_or("*"), TARGET_BIRTH)
        })
        .filter(|r| in_b.contains(&(r[2].to_string(), r[3].to_string())))
        .count();
    assert!(possible == 0 || possible >= K, "joining two extracts leaves {possible} rows like the target");
    let exact = a.iter().chain(&b).filter(|r| r.iter().any(|v| v == &json!(TARGET_SUBSIDY))).count();
    assert!(exact == 0 || exact >= K, "the target's subsidy appears in {exact} rows");
}

/// Leak: five separately safe answers (the pseudonym with gender, district, year, month, day)
/// rebuilt a unique profile. An extract is one release: its pseudonyms are its own, so two
/// extracts, even of the same columns, cannot be linked, and the steward approves each.
#[tokio::test]
async fn two_extracts_cannot_be_linked_to_rebuild_a_profile() {
    let w = world().await;
    w.granted(json!({"name": "by_district", "columns": ["person_id", "district", "subsidy"]})).await;
    w.granted(json!({"name": "by_birth", "columns": ["person_id", "birth_date", "subsidy"]})).await;
    let a = w.rows(&w.analyst, "SELECT person_id FROM extracts.by_district").await;
    let b = w.rows(&w.analyst, "SELECT person_id FROM extracts.by_birth").await;
    let a: HashSet<String> = a.iter().map(|r| r[0].to_string()).collect();
    let b: HashSet<String> = b.iter().map(|r| r[0].to_string()).collect();
    assert!(!a.is_empty() && a.is_disjoint(&b), "pseudonyms link two extracts");
}

/// Leak: the suppressed-class counter bisected a value, and a 413 told whether a person
/// existed. An answer carries no counter, and a long answer is cut, not refused.
#[tokio::test]
async fn no_counter_and_no_size_refusal_tells_anything() {
    let w = world().await;
    w.granted(standard()).await;
    let limits = veil_query::Limits { max_result_rows: 50, ..veil_query::Limits::standard() };
    let w = World { s: w.s.restart_with(limits).await, ..w };
    let (status, body) =
        w.s.post("/v1/query", &w.analyst, json!({"sql": "SELECT * FROM extracts.people", "mode": "deidentified"}))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 50);
    assert!(body.to_string().contains("rows_capped"), "{body}");
    assert!(body.get("suppressed_groups").is_none());
    let (_, body) = w
        .s
        .post("/v1/query", &w.analyst, json!({"sql": "SELECT * FROM extracts.people LIMIT 10", "mode": "deidentified"}))
        .await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 10);
    assert!(!body.to_string().contains("rows_capped"));
}

#[tokio::test]
async fn deidentified_queries_read_only_the_callers_approved_extracts() {
    let w = world().await;
    let id = w.granted(standard()).await;
    let refused = |token: &str, sql: &str| {
        let body = json!({"sql": sql, "mode": "deidentified"});
        let s = &w.s;
        let token = token.to_owned();
        async move {
            let (status, body) = s.post("/v1/query", &token, body).await;
            (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(
        refused(&w.analyst, "SELECT * FROM civil.people").await,
        (StatusCode::BAD_REQUEST, "deidentified_reads_extracts".into())
    );
    assert_eq!(
        refused(&w.analyst, "SELECT p.* FROM extracts.people p JOIN civil.people c ON p.district = c.district").await,
        (StatusCode::BAD_REQUEST, "deidentified_reads_extracts".into())
    );
    assert_eq!(
        refused(&w.other_analyst, "SELECT * FROM extracts.people").await,
        (StatusCode::NOT_FOUND, "unknown_dataset".into()),
        "an extract is its analyst's alone"
    );
    let (status, _) =
        w.s.post(&format!("/v1/access-requests/{id}/revoke"), &w.steward, json!({"reason": "project ended"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        refused(&w.analyst, "SELECT * FROM extracts.people").await,
        (StatusCode::NOT_FOUND, "unknown_dataset".into()),
        "a revoked extract is gone at once"
    );
}

#[tokio::test]
async fn a_new_version_of_the_source_does_not_change_an_approved_extract() {
    let w = world().await;
    w.granted(standard()).await;
    let before = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    // One person's subsidy changes (the first one's: the planted person, alone in a district,
    // is suppressed by the base release and in no extract).
    let changed = |csv: String| -> String {
        let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
        let mut fields: Vec<String> = lines[1].split(',').map(str::to_owned).collect();
        fields[5] = "5".into();
        lines[1] = fields.join(",");
        lines.into_iter().map(|l| format!("{l}\n")).collect()
    };
    let (status, body) = w.s.upload(&w.steward, &metadata(), changed(csv()).into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let after = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    assert_eq!(before, after);
    // An extract of the new version, in which one person's rows changed, would give that
    // person's old and new rows by comparison with the first: refused.
    let (status, refused) = w.ask(&w.analyst, json!({"name": "people_v2", "columns": ["district", "subsidy"]})).await;
    assert_isolates(status, &refused);
    // Nor is the change hidden by one to everybody's unreleased column (a red team's cover):
    // rows are compared over the columns the extracts release.
    let covered = changed(csv()).replace(",居民", ",居民x");
    let (status, body) = w.s.upload(&w.steward, &metadata(), covered.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, refused) = w.ask(&w.analyst, json!({"name": "people_v3", "columns": ["district", "subsidy"]})).await;
    assert_isolates(status, &refused);
    // A version whose released columns are as before (names changed) is built, and warns the
    // steward that the versions can be compared.
    let many: String = csv()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if (1..=2 * K).contains(&i) {
                format!("{}\n", l.replacen(",居民", ",居民x", 1))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(many, csv());
    let (status, body) = w.s.upload(&w.steward, &metadata(), many.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, asked) = w.ask(&w.analyst, json!({"name": "people_v4", "columns": ["district", "subsidy"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let (_, listed) = w.s.get("/v1/access-requests", &w.steward).await;
    let report = &listed.as_array().unwrap().iter().find(|r| r["id"] == asked["id"]).unwrap()["extract"]["report"];
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("version(s) 1 of civil.people"), "{report}");
}

/// `civil.zones`, with its group column or (a later version) without it: 48 people in eight
/// zones, six per zone. The planted person is in zone Z101 and group g1 with diagnosis B; the
/// other five of Z101 are in g2 with A; the others of g1 in zones Z1xx have C and E.
fn zones(with_group: bool) -> (Value, String) {
    let mut columns = json!({
        "person_id": {"tag": "identifier", "linkable": true},
        "zone": {"tag": "quasi_identifier"},
        "diagnosis": {"tag": "sensitive"}
    });
    if with_group {
        columns["grp"] = json!({"tag": "quasi_identifier"});
    }
    let mut metadata = json!({"name": "zones", "department": "civil", "level": "L2", "privacy_unit": "person_id",
                              "columns": columns});
    if !with_group {
        metadata["confirm_changes"] = json!(["grp"]);
    }
    let mut people: Vec<(&str, &str, &str)> = vec![("Z101", "g1", "B")];
    people.extend([("Z101", "g2", "A"); 5]);
    for (zone, g1, g2) in [
        ("Z102", "C", "D"),
        ("Z103", "C", "A"),
        ("Z104", "E", "B"),
        ("Z201", "A", "C"),
        ("Z202", "C", "D"),
        ("Z203", "D", "E"),
        ("Z204", "E", "A"),
    ] {
        people.extend([(zone, "g1", g1); 3]);
        people.extend([(zone, "g2", g2); 3]);
    }
    let mut csv =
        String::from(if with_group { "person_id,grp,zone,diagnosis\n" } else { "person_id,zone,diagnosis\n" });
    for (i, (zone, group, diagnosis)) in people.into_iter().enumerate() {
        let group = if with_group { format!("{group},") } else { String::new() };
        csv.push_str(&format!("P{i:04},{group}{zone},{diagnosis}\n"));
    }
    (metadata, csv)
}

/// Leak (red team): a new version that drops one quasi-identifier lets the dataset's base
/// release show another exactly. One extract of each version, each k-anonymous and l-diverse,
/// then leave the target's diagnosis as the one value both of the classes the target is in
/// hold (grouped by group and zone prefix in one, by zone in the other). The second is now
/// refused; what the analyst holds leaves the target among at least two diagnoses.
#[tokio::test]
async fn a_new_version_generalized_otherwise_narrows_no_ones_value() {
    let w = world().await;
    let (metadata, csv) = zones(true);
    let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let approve = |id: String| {
        let s = &w.s;
        let steward = w.steward.clone();
        async move { s.post(&format!("/v1/access-requests/{id}/approve"), &steward, json!({})).await }
    };
    let (status, first) =
        w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v1", "columns": ["grp", "zone", "diagnosis"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, body) = approve(first["id"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (metadata, csv) = zones(false);
    let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, second) =
        w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v2", "columns": ["zone", "diagnosis"]})).await;
    let mut held = vec![w.rows(&w.analyst, "SELECT grp, zone, diagnosis FROM extracts.zones_v1").await];
    if status == StatusCode::CREATED {
        let (status, body) = approve(second["id"].as_str().unwrap().to_owned()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        held.push(w.rows(&w.analyst, "SELECT '*', zone, diagnosis FROM extracts.zones_v2").await);
    }
    // The diagnoses every extract's class of the target holds.
    let common = held_by_the_target(&held);
    assert!(common.len() >= 2, "the target's diagnosis narrowed to {common:?}");
    assert_narrows(status, &second, "the second version's extract");
    let message = second["error"]["message"].as_str().unwrap();
    assert!(message.contains("civil.zones") && message.contains("`diagnosis`"), "{message}");
    // Without the sensitive column it is built.
    let (status, body) =
        w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v2_zone", "columns": ["person_id", "zone"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A refresh generalized as the released version was (ten people more in a new zone, k of
    // each group, with two diagnoses each) is built with its diagnoses.
    let (metadata, mut csv) = zones(true);
    for i in 0..10 {
        csv.push_str(&format!("Q{i:04},g{},Z205,{}\n", 1 + i % 2, ["A", "C"][i / 2 % 2]));
    }
    let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v3", "columns": ["grp", "zone", "diagnosis"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The diagnoses every extract in `held` (rows of group, zone, diagnosis) holds in the class
/// of a target in group g1 and zone Z101: what the extracts together leave of their diagnosis.
fn held_by_the_target(held: &[Vec<Vec<Value>>]) -> HashSet<String> {
    let mut common: Option<HashSet<String>> = None;
    for rows in held {
        let class: HashSet<String> = rows
            .iter()
            .filter(|r| covers(r[0].as_str().unwrap_or("*"), "g1") && covers(r[1].as_str().unwrap_or("*"), "Z101"))
            .map(|r| r[2].as_str().unwrap().to_owned())
            .collect();
        common = Some(match common {
            None => class,
            Some(c) => c.intersection(&class).cloned().collect(),
        });
    }
    common.unwrap_or_default()
}

/// Asks for `zones_v1` of `civil.zones` (group, zone, diagnosis) and has the steward approve
/// it; `case` says which case.
async fn zones_v1_approved(w: &World, case: &str) {
    let (status, first) =
        w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v1", "columns": ["grp", "zone", "diagnosis"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{case}: {first}");
    steward_approves(w, &first, case).await;
}

/// Has the steward approve the request `asked` (an ask's answer); `case` says which case.
async fn steward_approves(w: &World, asked: &Value, case: &str) {
    let id = asked["id"].as_str().unwrap();
    let (status, body) = w.s.post(&format!("/v1/access-requests/{id}/approve"), &w.steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{case}: {body}");
}

/// As [`a_new_version_generalized_otherwise_narrows_no_ones_value`], the second version's
/// diagnosis renamed (`diag`), and then also recoded with a codebook the attacker knows: the
/// target's diagnosis is still the one value both classes share once translated, unless the
/// second extract is refused.
#[tokio::test]
async fn a_version_renaming_or_recoding_a_column_narrows_no_ones_value() {
    let codebook = [("A", "D01"), ("B", "D02"), ("C", "D03"), ("D", "D04"), ("E", "D05")];
    for recoded in [false, true] {
        let w = world().await;
        let (metadata, csv) = zones(true);
        assert_eq!(w.s.upload(&w.steward, &metadata, csv.into_bytes()).await.0, StatusCode::CREATED);
        zones_v1_approved(&w, &format!("recoded {recoded}")).await;
        let (mut metadata, csv) = zones(false);
        let columns = metadata["columns"].as_object_mut().unwrap();
        let tag = columns.remove("diagnosis").unwrap();
        columns.insert("diag".into(), tag);
        metadata["confirm_changes"] = json!(["grp", "diagnosis"]);
        let code = |d: &str| -> String {
            if recoded { codebook.iter().find(|(l, _)| *l == d).unwrap().1.to_owned() } else { d.to_owned() }
        };
        let mut lines = csv.lines();
        let mut renamed = format!("{}\n", lines.next().unwrap().replace("diagnosis", "diag"));
        for line in lines {
            let (rest, diagnosis) = line.rsplit_once(',').unwrap();
            renamed.push_str(&format!("{rest},{}\n", code(diagnosis)));
        }
        let (status, body) = w.s.upload(&w.steward, &metadata, renamed.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, second) =
            w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v2", "columns": ["zone", "diag"]})).await;
        let mut held = vec![w.rows(&w.analyst, "SELECT grp, zone, diagnosis FROM extracts.zones_v1").await];
        if status == StatusCode::CREATED {
            steward_approves(&w, &second, &format!("recoded {recoded}")).await;
            let mut rows = w.rows(&w.analyst, "SELECT '*', zone, diag FROM extracts.zones_v2").await;
            for r in &mut rows {
                let label = codebook.iter().find(|(_, c)| r[2] == *c).map_or(r[2].clone(), |(l, _)| json!(l));
                r[2] = label;
            }
            held.push(rows);
        }
        let common = held_by_the_target(&held);
        assert!(common.len() >= 2, "recoded {recoded}: the target's diagnosis narrowed to {common:?}");
        assert_narrows(status, &second, &format!("recoded {recoded}"));
    }
}

/// As [`a_new_version_generalized_otherwise_narrows_no_ones_value`], the second snapshot
/// registered as another dataset whose units are written otherwise: numbers (`7` for the
/// first's text `0007`), or in lower case behind a prefix. Both snapshots' people are matched
/// whatever the type and spelling of their units, so the target's diagnosis is still left
/// among two values or the second extract is refused (a red team's copy declared its unit
/// `int64` where the original's was text and went past the comparison person by person). And
/// a copy whose diagnosis is named `diag`: its values are found to translate (the identity).
#[tokio::test]
async fn a_snapshot_with_its_units_written_otherwise_narrows_no_ones_value() {
    let text = json!({"tag": "identifier", "linkable": true, "type": "string"});
    let cases = [
        ("integer units", json!({"tag": "identifier", "linkable": true, "type": "int64"})),
        ("prefixed lower-case units", text.clone()),
        ("the diagnosis renamed", text.clone()),
    ];
    for (case, unit) in cases {
        let w = world().await;
        let numeric = case == "integer units";
        let renamed = case == "the diagnosis renamed";
        let diagnosis = if renamed { "diag" } else { "diagnosis" };
        // The first snapshot's units: `0000`, `0001`, … (text) beside numbers, else `P0000`, ….
        let (mut metadata, csv) = zones(true);
        metadata["columns"]["person_id"] = text.clone();
        let csv = if numeric { csv.replace("\nP", "\n") } else { csv };
        let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{case}: {body}");
        zones_v1_approved(&w, case).await;
        // The same people without the group column, as another dataset.
        let (mut metadata, csv) = zones(false);
        metadata["name"] = json!("zones_copy");
        metadata["columns"]["person_id"] = unit;
        if renamed {
            let column = metadata["columns"]["diagnosis"].take();
            metadata["columns"]["diag"] = column;
            metadata["columns"].as_object_mut().unwrap().remove("diagnosis");
        }
        let mut copy = String::new();
        for (i, line) in csv.lines().enumerate() {
            let line = match line.split_once(',') {
                _ if i == 0 => line.replace("diagnosis", diagnosis),
                Some((id, rest)) if numeric => format!("{},{rest}", id[1..].parse::<u32>().unwrap()),
                Some((id, rest)) if !renamed => format!("cn-{},{rest}", id.to_lowercase()),
                _ => line.to_owned(),
            };
            copy.push_str(&line);
            copy.push('\n');
        }
        let (status, body) = w.s.upload(&w.steward, &metadata, copy.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{case}: {body}");
        let (status, second) =
            w.ask_of("civil.zones_copy", &w.analyst, json!({"name": "zones_v2", "columns": ["zone", diagnosis]})).await;
        let mut held = vec![w.rows(&w.analyst, "SELECT grp, zone, diagnosis FROM extracts.zones_v1").await];
        if status == StatusCode::CREATED {
            steward_approves(&w, &second, case).await;
            held.push(w.rows(&w.analyst, &format!("SELECT '*', zone, {diagnosis} FROM extracts.zones_v2")).await);
        }
        let common = held_by_the_target(&held);
        assert!(common.len() >= 2, "{case}: the target's diagnosis narrowed to {common:?}");
        assert_narrows(status, &second, case);
    }
}

/// A version without five people, the target and four others each in another class: five
/// people apart, as k asks, but the target's class differs by the target alone, and its
/// diagnoses' difference is theirs, unless the second extract is refused.
#[tokio::test]
async fn a_version_without_one_person_per_class_gives_no_ones_value() {
    let w = world().await;
    let (metadata, csv) = zones(true);
    assert_eq!(w.s.upload(&w.steward, &metadata, csv.clone().into_bytes()).await.0, StatusCode::CREATED);
    let columns = json!(["grp", "zone", "diagnosis"]);
    let (status, first) = w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v1", "columns": columns})).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let approve = |id: &Value| {
        let (s, steward, id) = (&w.s, w.steward.clone(), id.as_str().unwrap().to_owned());
        async move { s.post(&format!("/v1/access-requests/{id}/approve"), &steward, json!({})).await }
    };
    assert_eq!(approve(&first["id"]).await.0, StatusCode::OK);
    // The target (P0000: g1, Z101) and one person of each other group and zone prefix.
    let removed = ["P0000,", "P0009,", "P0024,", "P0027,", "P0042,"];
    let v2: String =
        csv.lines().filter(|l| !removed.iter().any(|r| l.starts_with(r))).map(|l| format!("{l}\n")).collect();
    assert_eq!(w.s.upload(&w.steward, &metadata, v2.into_bytes()).await.0, StatusCode::CREATED);
    let (status, second) = w.ask_of("civil.zones", &w.analyst, json!({"name": "zones_v2", "columns": columns})).await;
    if status == StatusCode::CREATED {
        assert_eq!(approve(&second["id"]).await.0, StatusCode::OK);
        // The target's class in each: the diagnoses one holds and the other does not.
        let class = |rows: Vec<Vec<Value>>| -> HashMap<String, i64> {
            let mut counts = HashMap::new();
            for r in
                rows.iter().filter(|r| covers(r[0].as_str().unwrap(), "g1") && covers(r[1].as_str().unwrap(), "Z101"))
            {
                *counts.entry(r[2].as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
            counts
        };
        let before = class(w.rows(&w.analyst, "SELECT grp, zone, diagnosis FROM extracts.zones_v1").await);
        let after = class(w.rows(&w.analyst, "SELECT grp, zone, diagnosis FROM extracts.zones_v2").await);
        let gone: Vec<&String> =
            before.iter().filter(|(d, n)| after.get(*d).copied().unwrap_or(0) < **n).map(|(d, _)| d).collect();
        assert!(gone.len() != 1, "the removed target's diagnosis is {gone:?}");
    }
    assert_isolates(status, &second);
}

/// The rows one answer has more of than another (a multiset difference).
fn more_in(a: &[Vec<Value>], b: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let mut left: HashMap<String, (usize, &Vec<Value>)> = HashMap::new();
    for r in a {
        left.entry(serde_json::to_string(r).unwrap()).or_insert((0, r)).0 += 1;
    }
    for r in b {
        if let Some((n, _)) = left.get_mut(&serde_json::to_string(r).unwrap()) {
            *n = n.saturating_sub(1);
        }
    }
    left.into_values().flat_map(|(n, r)| std::iter::repeat_n(r.clone(), n)).collect()
}

/// The second extract of an attack (`second`), refused with `code`; released, the rows it has
/// more than the first (`before`: the person added) fail the test.
fn assert_refused(second: Result<Vec<Vec<Value>>, Value>, before: &[Vec<Value>], code: &str, case: &str) {
    match second {
        Ok(after) => panic!("{case}: released; added {:?}", more_in(&after, before)),
        Err(refused) => assert_eq!(refused["error"]["code"], code, "{case}: {refused}"),
    }
}

/// Registers `name` in civil (L2, unit `person_id`) with the given other columns and rows.
async fn register(w: &World, name: &str, columns: Value, csv: String, confirm: &[&str]) {
    let mut columns = columns;
    columns["person_id"] = json!({"tag": "identifier", "linkable": true});
    let metadata = json!({"name": name, "department": "civil", "level": "L2", "privacy_unit": "person_id",
                          "columns": columns, "confirm_changes": confirm});
    let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Asks for `extract` of `dataset` and, if built, approves it and each part; the refusal or
/// the extract's rows (`SELECT sql FROM extracts.<name>`).
async fn released(w: &World, dataset: &str, extract: Value, select: &str) -> Result<Vec<Vec<Value>>, Value> {
    approved_by(w, &w.steward, dataset, extract, select).await
}

/// As [`released`], `steward` approving.
async fn approved_by(
    w: &World,
    steward: &str,
    dataset: &str,
    extract: Value,
    select: &str,
) -> Result<Vec<Vec<Value>>, Value> {
    let name = extract["name"].as_str().unwrap().to_owned();
    let (status, asked) = w.ask_of(dataset, &w.analyst, extract).await;
    if status != StatusCode::CREATED {
        return Err(asked);
    }
    let mut ids = vec![asked["id"].as_str().unwrap().to_owned()];
    for part in asked["extract"]["parts"].as_array().into_iter().flatten() {
        ids.push(part["request"].as_str().unwrap().to_owned());
    }
    for id in ids {
        let (status, body) = w.s.post(&format!("/v1/access-requests/{id}/approve"), steward, json!({})).await;
        if status == StatusCode::UNPROCESSABLE_ENTITY && body["error"]["code"] == "extract_unbuildable" {
            // A join held for its stewards (not refused at once): the rule that refused it, as
            // their report says.
            let (_, theirs) = w.s.get("/v1/access-requests", steward).await;
            let held = theirs.as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap();
            let report = &held["extract"]["report"];
            return Err(
                json!({"error": {"code": report["refused_by"], "message": report["unbuildable"]}, "held": true}),
            );
        }
        if status != StatusCode::OK {
            return Err(body);
        }
    }
    Ok(w.rows(&w.analyst, &format!("SELECT {select} FROM extracts.{name}")).await)
}

/// An extract of a dataset alone and one of it joined with a partner's dataset in which the
/// target alone has an occupation: the join's base suppresses the target, and the first
/// extract's rows less the second's are the target's row, unless the second is refused.
#[tokio::test]
async fn a_join_that_suppresses_the_target_does_not_give_their_row() {
    let w = world().await;
    let (mut cases, mut jobs) = (String::from("person_id,sex,diagnosis\n"), String::from("person_id,occupation\n"));
    for i in 0..64 {
        cases.push_str(&format!("P{i:04},{},{}\n", ["M", "F"][i % 2], ["I10", "E11", "J45", "K29"][i / 2 % 4]));
        jobs.push_str(&format!("P{i:04},{}\n", ["teacher", "driver", "nurse", "clerk"][i % 4]));
    }
    cases.push_str("T0001,F,B20\n");
    jobs.push_str("T0001,astronaut\n");
    register(&w, "cases", json!({"sex": {"tag": "quasi_identifier"}, "diagnosis": {"tag": "sensitive"}}), cases, &[])
        .await;
    register(&w, "jobs", json!({"occupation": {"tag": "quasi_identifier"}}), jobs, &[]).await;
    let alone = json!({"name": "alone", "columns": ["sex", "diagnosis"]});
    let alone = released(&w, "civil.cases", alone, "sex, diagnosis").await.unwrap();
    let joined = json!({"name": "joined", "join": ["civil.jobs"], "columns": ["sex", "diagnosis"]});
    match released(&w, "civil.cases", joined, "sex, diagnosis").await {
        Ok(joined) => panic!("released; the first less the second: {:?}", more_in(&alone, &joined)),
        Err(refused) => assert_eq!(refused["error"]["code"], "extract_isolates_people", "{refused}"),
    }
}

/// A yearly refresh in which everybody is a year older (in the same age band) and the target
/// is new: every row changed, but the released classes differ by the target's row alone, unless
/// the second extract is refused. And a recoding of every diagnosis the same way.
#[tokio::test]
async fn a_refresh_that_changes_everyone_does_not_hide_who_was_added() {
    let people = |shift: usize, code: &dyn Fn(&str) -> String, target: bool| {
        let mut csv = String::from("person_id,age,sex,diagnosis\n");
        for i in 0..60 {
            let diagnosis = code(["I10", "E11", "J45"][i % 3]);
            csv.push_str(&format!("P{i:04},{},{},{diagnosis}\n", 20 + i % 25 + shift, ["M", "F"][i % 2]));
        }
        if target {
            csv.push_str(&format!("T0001,37,F,{}\n", code("B20")));
        }
        csv
    };
    let columns = json!({"age": {"tag": "quasi_identifier"}, "sex": {"tag": "quasi_identifier"},
                         "diagnosis": {"tag": "sensitive"}});
    let same = |d: &str| d.to_owned();
    let recode = |d: &str| format!("x-{d}");
    for (case, shift, code) in [("older", 1, &same as &dyn Fn(&str) -> String), ("recoded", 0, &recode)] {
        let w = world().await;
        register(&w, "ages", columns.clone(), people(0, &same, false), &[]).await;
        let extract = |name: &str| json!({"name": name, "columns": ["age", "sex", "diagnosis"], "hierarchies": {"age": ["band:50", "*"]}});
        let before = released(&w, "civil.ages", extract("before"), "age, sex, diagnosis").await.unwrap();
        register(&w, "ages", columns.clone(), people(shift, code, true), &[]).await;
        assert_refused(
            released(&w, "civil.ages", extract("after"), "age, sex, diagnosis").await,
            &before,
            "extract_isolates_people",
            case,
        );
    }
}

/// A refresh that makes everybody a year older within their ten-year bands (every row changed,
/// no class) and changes the target's diagnosis: the target's class, in the two versions'
/// extracts, differs by their old and new diagnosis, unless the second is refused.
#[tokio::test]
async fn a_refresh_that_changes_everyone_does_not_hide_a_changed_value() {
    let w = world().await;
    let people = |shift: usize, target: &str| {
        let mut csv = String::from("person_id,age,sex,diagnosis\n");
        for i in 0..60 {
            let diagnosis = if i == 0 { target } else { ["I10", "E11", "J45"][i % 3] };
            csv.push_str(&format!("P{i:04},{},{},{diagnosis}\n", 20 + 10 * (i % 4) + shift, ["M", "F"][i % 2]));
        }
        csv
    };
    let columns = json!({"age": {"tag": "quasi_identifier"}, "sex": {"tag": "quasi_identifier"},
                         "diagnosis": {"tag": "sensitive"}});
    register(&w, "ages", columns.clone(), people(0, "B20"), &[]).await;
    let extract = |name: &str| json!({"name": name, "columns": ["age", "sex", "diagnosis"], "hierarchies": {"age": ["band:10", "*"]}});
    let before = released(&w, "civil.ages", extract("before"), "age, sex, diagnosis").await.unwrap();
    register(&w, "ages", columns, people(1, "C50"), &[]).await;
    match released(&w, "civil.ages", extract("after"), "age, sex, diagnosis").await {
        Ok(after) => panic!("released; gone {:?}, new {:?}", more_in(&before, &after), more_in(&after, &before)),
        Err(refused) => assert_eq!(refused["error"]["code"], "extract_isolates_people", "{refused}"),
    }
}

/// A person with two records, of which each person's one is released (the steward's bound):
/// the same rows registered again, in another order, released another of the target's records,
/// and the class's diagnoses, compared across the versions' extracts, showed one person with
/// both (a red team). The record kept is the same in every version whose rows are the same.
#[tokio::test]
async fn the_record_kept_of_a_person_is_the_same_in_every_version() {
    let w = world().await;
    let mut rows = vec!["T0001,20,10001,hiv".to_owned(), "T0001,20,10001,asthma".to_owned()];
    for (i, diagnosis) in ["cancer", "diabetes", "flu", "hiv"].into_iter().enumerate() {
        rows.push(format!("C{i:04},2{i},10001,{diagnosis}"));
    }
    for i in 0..50 {
        rows.push(format!("P{i:04},{},{},{}", 30 + i % 40, 10002 + i % 2, ["flu", "cold", "hiv", "cancer"][i % 4]));
    }
    let columns = json!({"age": {"tag": "quasi_identifier"}, "zip": {"tag": "quasi_identifier"},
                         "diag": {"tag": "sensitive"}});
    let mut classes = Vec::new();
    for version in 0..3 {
        // The same rows, turned round each time.
        rows.rotate_left(17);
        let csv = format!("person_id,age,zip,diag\n{}\n", rows.join("\n"));
        let mut metadata = json!({"name": "clinic", "department": "civil", "level": "L2", "privacy_unit": "person_id",
                                  "dp": {"max_groups": 1, "max_rows": 1}, "columns": columns.clone()});
        metadata["columns"]["person_id"] = json!({"tag": "identifier", "linkable": true});
        let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let extract = json!({"name": format!("clinic_v{version}"), "columns": ["age", "zip", "diag"],
                             "hierarchies": {"age": ["band:10", "*"]}});
        let released = released(&w, "civil.clinic", extract, "age, zip, diag").await;
        let released = released.unwrap();
        let mut class: Vec<String> = released
            .iter()
            .filter(|r| r[0] == "20-29" && r[1] == "10001")
            .map(|r| r[2].as_str().unwrap().to_owned())
            .collect();
        class.sort();
        assert_eq!(class.len(), 5, "the target's class is released: {released:?}");
        classes.push(class);
    }
    assert!(classes.windows(2).all(|w| w[0] == w[1]), "the target's class changed between versions: {classes:?}");
}

/// The same dataset version in two bases: one extract of `civil.groups` alone, by group, and
/// another of it joined with a partner dataset that holds each person's zone. Each is
/// k-anonymous and l-diverse; the diagnosis of the targets (group g1 in zone Z101) is the one
/// value their two classes share (g1 holds B to E, Z101 A and B), unless the second is refused.
#[tokio::test]
async fn an_extract_joined_with_a_partners_quasi_identifier_narrows_no_ones_value() {
    let w = world().await;
    // Zone codes share no prefix: a zone is released exactly or not at all.
    let mut people = vec![("g1", "B", Some("Z101")); 5];
    people.extend([("g2", "A", Some("Z101")); 5]);
    // Elsewhere each group and diagnosis of each zone holds k people: whoever knows the groups
    // and their diagnoses tells no fewer apart in a join that shows zones.
    for (n, zone) in ["Y2", "X303", "W4", "V505", "U6", "T707", "S8"].into_iter().enumerate() {
        people.extend([("g1", ["C", "D", "E"][n % 3], Some(zone)); 5]);
        people.extend([("g2", ["D", "E", "C"][n % 3], Some(zone)); 5]);
    }
    let (mut groups_csv, mut homes_csv) =
        (String::from("person_id,grp,diagnosis\n"), String::from("person_id,home_zone\n"));
    for (i, (group, diagnosis, zone)) in people.into_iter().enumerate() {
        groups_csv.push_str(&format!("P{i:04},{group},{diagnosis}\n"));
        if let Some(zone) = zone {
            homes_csv.push_str(&format!("P{i:04},{zone}\n"));
        }
    }
    let unit = json!({"tag": "identifier", "linkable": true});
    let groups = json!({"name": "groups", "department": "civil", "level": "L2", "privacy_unit": "person_id",
                        "columns": {"person_id": unit, "grp": {"tag": "quasi_identifier"}, "diagnosis": {"tag": "sensitive"}}});
    let homes = json!({"name": "homes", "department": "civil", "level": "L2", "privacy_unit": "person_id",
                       "columns": {"person_id": unit, "home_zone": {"tag": "quasi_identifier"}}});
    for (metadata, csv) in [(groups, groups_csv), (homes, homes_csv)] {
        let (status, body) = w.s.upload(&w.steward, &metadata, csv.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let approve = |id: &str| {
        let (s, steward, id) = (&w.s, w.steward.clone(), id.to_owned());
        async move { s.post(&format!("/v1/access-requests/{id}/approve"), &steward, json!({})).await }
    };
    let (status, alone) =
        w.ask_of("civil.groups", &w.analyst, json!({"name": "by_group", "columns": ["grp", "diagnosis"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{alone}");
    assert_eq!(approve(alone["id"].as_str().unwrap()).await.0, StatusCode::OK);
    let mut held = vec![w.rows(&w.analyst, "SELECT grp, '*', diagnosis FROM extracts.by_group").await];
    let joined = json!({"name": "by_home", "join": ["civil.homes"], "columns": ["home_zone", "diagnosis"]});
    let (status, asked) = w.ask_of("civil.groups", &w.analyst, joined).await;
    if approve(asked["id"].as_str().unwrap_or_default()).await.0 == StatusCode::OK {
        let part = asked["extract"]["parts"][0]["request"].as_str().unwrap();
        assert_eq!(approve(part).await.0, StatusCode::OK);
        held.push(w.rows(&w.analyst, "SELECT '*', home_zone, diagnosis FROM extracts.by_home").await);
    }
    let common = held_by_the_target(&held);
    assert!(common.len() >= 2, "the target's diagnosis narrowed to {common:?}");
    // A join: held for the stewards, who can only reject it.
    w.assert_held(status, &asked, "extract_narrows_values").await;
}

#[tokio::test]
async fn specs_that_cannot_be_met_or_would_leak_are_refused_clearly() {
    let w = world().await;
    let cases = [
        (
            json!({"name": "x", "columns": ["person_id", "diagnosis"], "l": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "extract_infeasible",
            "diagnosis",
        ),
        (
            json!({"name": "x", "columns": ["district"], "l": 50}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "l_too_large",
            "at most 10",
        ),
        (
            json!({"name": "x", "columns": ["person_id", "name"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "identifier_in_extract",
            "name",
        ),
        (
            json!({"name": "x", "columns": ["district"], "k": 2}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "k_too_small",
            "at least 5",
        ),
        (json!({"name": "x", "columns": ["nowhere"]}), StatusCode::UNPROCESSABLE_ENTITY, "unknown_column", "nowhere"),
        (
            json!({"name": "x", "columns": ["birth_date"], "hierarchies": {"birth_date": ["year", "month"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_extract",
            "birth_date",
        ),
        (
            json!({"name": "X y", "columns": ["district"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_extract_name",
            "lowercase",
        ),
        (
            json!({"name": "x", "columns": ["district"], "max_suppression": 0.9}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_extract",
            "max_suppression",
        ),
    ];
    let refusals = cases.len();
    for (extract, status, code, mention) in cases {
        let (got, body) = w.ask(&w.analyst, extract.clone()).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{extract}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mention), "{extract}: {message}");
        assert!(!message.contains("1999") && source_ids().iter().all(|id| !message.contains(id.as_str())), "{message}");
    }
    let (status, body) =
        w.s.post(
            "/v1/access-requests",
            &w.analyst,
            json!({"dataset": "civil.people", "mode": "deidentified", "purpose": "p", "expires_at": in_a_month()}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("extract_required")));
    // A bad purpose is refused before anything is built.
    let (status, body) =
        w.s.post(
            "/v1/access-requests",
            &w.analyst,
            json!({"dataset": "civil.people", "mode": "deidentified", "purpose": " ", "expires_at": in_a_month(),
                   "extract": standard()}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("purpose_required")));
    // Refusals that depend on the data are recorded.
    let denied =
        w.s.audit_records()
            .into_iter()
            .filter(|r| r.entry.action == "access_request.create" && r.entry.decision == "denied")
            .count();
    assert_eq!(denied, refusals + 1, "every refusal of an extract is recorded");
    // Nothing was left behind.
    let tmp = w.s.data_dir().join("tmp");
    assert!(w.s.stored_files().iter().all(|f| !f.starts_with(&tmp)), "a refused extract left a file");
}

/// Red team: `repeat(diagnosis, 100000000)` over an extract grew the server to 23 GB. Queries
/// over extracts call only the allow-listed functions, as every other mode does.
#[tokio::test]
async fn queries_over_extracts_call_only_allowed_functions() {
    let w = world().await;
    w.granted(standard()).await;
    for sql in [
        "SELECT repeat(district, 100000000) FROM extracts.people",
        "SELECT district FROM extracts.people WHERE length(repeat(district, 100000000)) > 1",
        "SELECT (SELECT max(lpad(district, 100000000, 'x')) FROM extracts.people) AS x",
        "SELECT md5(person_id) FROM extracts.people",
    ] {
        let (status, body) = w.s.post("/v1/query", &w.analyst, json!({"sql": sql, "mode": "deidentified"})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("function_not_allowed")),
            "{sql}: {body}"
        );
    }
}

/// A failing query over an extract says why without quoting the extract (a cast of its text),
/// and a pattern that is no regular expression is the caller's error, not the server's.
#[tokio::test]
async fn a_failing_query_over_an_extract_quotes_no_value() {
    let w = world().await;
    w.granted(standard()).await;
    let ask = |sql: &'static str| {
        let (s, analyst) = (&w.s, w.analyst.clone());
        async move { s.post("/v1/query", &analyst, json!({"sql": sql, "mode": "deidentified"})).await }
    };
    let (status, body) = ask("SELECT CAST(district AS INT) FROM extracts.people").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("query_failed")),
        "{body}"
    );
    let message = body.to_string();
    assert!(["甲区", "乙区", "丙区", "丁区", "戊区", "*"].iter().all(|v| !message.contains(v)), "{message}");
    let (status, body) = ask("SELECT district FROM extracts.people WHERE district ~ '['").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("sql_invalid")), "{body}");
}

/// A hierarchy finer than the base release allows is not silently replaced: the report says so.
#[tokio::test]
async fn the_report_says_when_the_base_release_is_coarser_than_asked() {
    let w = world().await;
    let id = w
        .granted(json!({"name": "days", "columns": ["birth_date", "subsidy"], "hierarchies": {"birth_date": ["day", "month"]}}))
        .await;
    let (_, listed) = w.s.get("/v1/access-requests", &w.analyst).await;
    let report = &listed.as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap()["extract"]["report"];
    let chosen = report["columns"][0]["treatment"].as_str().unwrap();
    if chosen != "day" && chosen != "month" {
        assert!(report["warnings"].to_string().contains("coarser than the `day` asked for"), "{report}");
    }
    assert!(report["base_suppressed_records"].as_u64().unwrap() <= report["suppressed_records"].as_u64().unwrap());
}

/// A steward who finds an extract's risk too high makes it stricter before deciding: Veil builds
/// it again at the higher k (and l), the request stays pending with the new report, and the
/// analyst reads the stricter extract once approved. Only stricter: a lower k, an empty
/// revision, or one without a reason is refused, and nobody but a steward may revise.
#[tokio::test]
async fn a_steward_raises_k_and_l_before_approving() {
    let w = world().await;
    let (status, asked) = w.ask(&w.analyst, standard()).await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let revise = |token: &str, body: Value| {
        let (s, id, token) = (&w.s, id.clone(), token.to_owned());
        async move { s.post(&format!("/v1/access-requests/{id}/revise"), &token, body).await }
    };
    for (body, code) in [
        (json!({"k": 3, "reason": "r"}), "revision_not_stricter"),
        (json!({"reason": "nothing asked"}), "revision_not_stricter"),
        (json!({"max_suppression": 0.5, "reason": "r"}), "revision_not_stricter"),
        (json!({"k": 12, "reason": " "}), "reason_required"),
    ] {
        let (status, refused) = revise(&w.steward, body.clone()).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{body}: {refused}"
        );
    }
    let (status, refused) = revise(&w.analyst, json!({"k": 12, "reason": "mine"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    let (status, revised) = revise(&w.steward, json!({"k": 12, "l": 3, "reason": "人数少的区风险高"})).await;
    assert_eq!(status, StatusCode::OK, "{revised}");
    assert_eq!(revised["state"], "pending");
    let report = &revised["extract"]["report"];
    assert_eq!(report["k"], 12, "{report}");
    assert!(report["highest_risk"].as_f64().unwrap() <= 1.0 / 12.0, "{report}");
    // Lowering it again is refused: the extract now meets k = 12.
    let (status, refused) = revise(&w.steward, json!({"k": 10, "reason": "r"})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("revision_not_stricter")),
        "{refused}"
    );

    // What the analyst reads once approved is the stricter extract: every class of k = 12.
    let (status, body) = w.s.post(&format!("/v1/access-requests/{id}/approve"), &w.steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = w.rows(&w.analyst, "SELECT * FROM extracts.people").await;
    assert_eq!(rows.len() as u64, report["records"].as_u64().unwrap());
    let mut size: HashMap<(String, String), usize> = HashMap::new();
    for r in &rows {
        *size.entry((r[1].to_string(), r[2].to_string())).or_default() += 1;
    }
    assert!(size.values().all(|n| *n >= 12), "a class below the revised k: {size:?}");
    // An approved request is no longer revised.
    let (status, refused) = revise(&w.steward, json!({"k": 20, "reason": "late"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");

    // The revision is recorded, with what was asked and why; the refusals too.
    let records = w.s.audit_records();
    let revisions: Vec<_> = records.iter().filter(|r| r.entry.action == "access_request.revise").collect();
    let ok = revisions.iter().find(|r| r.entry.decision == "ok").unwrap();
    let detail = ok.entry.detail.as_deref().unwrap_or("");
    assert!(detail.contains("k 12") && detail.contains("l 3") && detail.contains("人数少的区风险高"), "{detail}");
    assert!(revisions.iter().any(|r| r.entry.decision == "denied"), "refused revisions are recorded");
    // Only the extract in force is on disk.
    let files: Vec<_> = std::fs::read_dir(w.s.data_dir().join("extracts")).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

/// `health.visits` (L2): one to three visits of every person of `civil.people` but every tenth.
/// The person with the first id has one more, with a diagnosis nobody else has.
const RARE_ICD10: &str = "B20";

fn visits_metadata() -> Value {
    json!({
        "name": "visits", "department": "health", "level": "L2", "privacy_unit": "person_id",
        "dp": {"max_groups": 1, "max_rows": 4},
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true},
            "visit_date": {"tag": "quasi_identifier", "type": "date"},
            "district": {"tag": "quasi_identifier"},
            "icd10": {"tag": "sensitive"}
        }
    })
}

/// An extract named `name` of the pseudonyms and diagnoses of `civil.people` joined with
/// `health.<partner>`.
fn joined(name: &str, partner: &str) -> Value {
    json!({"name": name, "join": [format!("health.{partner}")], "columns": ["person_id", "icd10"]})
}

fn visits_csv() -> String {
    let mut out = String::from("person_id,visit_date,district,icd10\n");
    for (i, id) in source_ids().iter().enumerate() {
        if i == 1 {
            out.push_str(&format!("{id},2024-03-05,医院甲,{RARE_ICD10}\n"));
        }
        if i % 10 == 0 {
            continue;
        }
        for v in 0..=(i % 3) {
            let icd10 = ["I10", "E11", "J45", "K29"][(i + v) % 4];
            out.push_str(&format!("{id},2024-{:02}-{:02},医院{},{icd10}\n", v + 1, i % 28 + 1, ["甲", "乙"][i % 2]));
        }
    }
    out
}

/// Leak (red team, warned of only until now): a partner department registered two datasets that
/// differ by one person; each joined with `civil.people` in an extract, the `EXCEPT ALL` of the
/// two gave that person's row. An extract whose people differ from an extract already released
/// (over any of its datasets) by at least one and fewer than k is now refused; one that differs
/// by k or more is built.
#[tokio::test]
async fn an_extract_whose_people_differ_from_a_released_one_by_a_few_is_refused() {
    let w = world().await;
    let health_steward = w.health_steward().await;
    let ids = source_ids();
    let without = |people: &[&str]| {
        let all = visits_csv();
        let kept: Vec<&str> = all.lines().filter(|l| !people.iter().any(|p| l.starts_with(*p))).collect();
        format!("{}\n", kept.join("\n"))
    };
    for (name, csv) in [
        ("visits", visits_csv()),
        // Person 5's class in the join holds more than k, so without them it is not whole.
        ("twin", without(&[ids[5].as_str()])),
        ("fewer", without(&[&ids[3], &ids[4], &ids[5], &ids[6], &ids[7]])),
    ] {
        w.upload_visits(&health_steward, name, csv).await;
    }
    let (status, asked) = w.ask(&w.analyst, joined("with_visits", "visits")).await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    // Not released yet: a pending extract gives nobody anything to compare.
    let (status, pending) = w.ask(&w.analyst, joined("with_twin_early", "twin")).await;
    assert_eq!(status, StatusCode::CREATED, "{pending}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let part = asked["extract"]["parts"][0]["request"].as_str().unwrap().to_owned();
    let (status, body) = w.s.post(&format!("/v1/access-requests/{id}/approve"), &w.steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w.s.post(&format!("/v1/access-requests/{part}/approve"), &health_steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A join: held for the stewards, not refused at once (which told the analyst whether person
    // 5 is in both datasets).
    let (status, held) = w.ask(&w.analyst, joined("with_twin", "twin")).await;
    w.assert_held(status, &held, "extract_isolates_people").await;
    let (_, theirs) = w.s.get("/v1/access-requests", &w.steward).await;
    let report = &theirs.as_array().unwrap().iter().find(|r| r["id"] == held["id"]).unwrap()["extract"]["report"];
    let message = report["unbuildable"].as_str().unwrap();
    assert!(message.contains("civil.people") && !message.contains(ids[5].as_str()), "{message}");
    // The same join again is built. One whose people differ by k, but no more than one in a
    // class, is refused: each class's difference would be one person's row.
    let (status, body) = w.ask(&w.analyst, joined("with_visits_again", "visits")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = w.ask(&w.analyst, joined("with_fewer", "fewer")).await;
    w.assert_held(status, &body, "extract_isolates_people").await;
    // The twin asked for while the first was pending is refused at its approval.
    let early = pending["id"].as_str().unwrap();
    let (status, body) = w.s.post(&format!("/v1/access-requests/{early}/approve"), &w.steward, json!({})).await;
    assert_isolates(status, &body);

    // A second red team: four partners whose people pairwise differ by k or more, A = U ∪ Q1 ∪
    // Q2 ∪ {p}, B = U ∪ Q1, C = U ∪ Q2, D = U, give p's rows as A + D − B − C. A has the people
    // of `visits`, released above; B differs from it by Q2 and p, one or two in a class: refused
    // already (by group sizes alone, the third was the first refused: p alone in A, not in B or C).
    let q1: Vec<&str> = ids[11..11 + K].iter().map(String::as_str).collect();
    let q2: Vec<&str> = ids[21..21 + K].iter().map(String::as_str).collect();
    let p = ids[31].as_str();
    let b_out: Vec<&str> = q2.iter().copied().chain([p]).collect();
    let c_out: Vec<&str> = q1.iter().copied().chain([p]).collect();
    for (name, csv) in [("pb", without(&b_out)), ("pc", without(&c_out))] {
        w.upload_visits(&health_steward, name, csv).await;
        let (status, held) = w.ask(&w.analyst, joined(&format!("with_{name}"), name)).await;
        w.assert_held(status, &held, "extract_isolates_people").await;
    }
}

/// The people of `civil.people` joined with their visits in `health.visits`, another
/// department's dataset: each department's stewards decide on their own access request, the
/// extract is readable only while both are approved, and a person with a diagnosis nobody else
/// has is hidden among k people in it.
#[tokio::test]
async fn an_extract_joined_from_two_departments_needs_both_stewards() {
    let w = world().await;
    let health_steward = w.health_steward().await;
    let (status, body) = w.s.upload(&health_steward, &visits_metadata(), visits_csv().into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let joined = |columns: Value| json!({"name": "people_visits", "join": ["health.visits"], "columns": columns});

    // A column both datasets have is named with its dataset; the units link, whatever their name.
    let (status, refused) = w.ask(&w.analyst, joined(json!(["person_id", "district", "icd10"]))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("ambiguous_column")),
        "{refused}"
    );
    let columns = json!(["person_id", "civil.people.district", "birth_date", "icd10"]);
    let (status, asked) = w.ask(&w.analyst, joined(columns)).await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let parts = asked["extract"]["parts"].as_array().unwrap();
    assert_eq!((parts.len(), parts[0]["dataset"].as_str()), (1, Some("health.visits")), "{asked}");
    let part = parts[0]["request"].as_str().unwrap().to_owned();
    let query = json!({"sql": "SELECT * FROM extracts.people_visits", "mode": "deidentified"});

    // The health steward sees their own request, with the extract and its report.
    let (_, listed) = w.s.get("/v1/access-requests", &health_steward).await;
    let mine = listed.as_array().unwrap().iter().find(|r| r["id"] == part.as_str()).unwrap();
    assert_eq!(mine["dataset"], "health.visits");
    let report = mine["extract"]["report"].clone();
    // Each steward sees the figures of their own department's dataset only: an exact count of
    // another department's records, and of those the join left out, told whether a person is
    // in it (a red team, 28 of 28, with a partner dataset of everybody but the target).
    let datasets = |report: &Value| -> Vec<String> {
        report["sources"].as_array().unwrap().iter().map(|s| s["dataset"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(datasets(&report), ["health.visits"], "{report}");
    let (_, listed) = w.s.get("/v1/access-requests", &w.steward).await;
    let civil_view = &listed.as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap()["extract"]["report"];
    assert_eq!(datasets(civil_view), ["civil.people"], "{civil_view}");
    assert!(civil_view["sources"][0]["records_not_in_every_dataset"].as_u64().unwrap() >= 29, "{civil_view}");

    // One approval is not enough, and each steward decides only for their own dataset.
    let (status, _) = w.s.post(&format!("/v1/access-requests/{part}/approve"), &w.steward, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = w.s.post(&format!("/v1/access-requests/{id}/approve"), &w.steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w.s.post("/v1/query", &w.analyst, query.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_dataset")), "{body}");
    let (_, mine) = w.s.get("/v1/access-requests", &w.analyst).await;
    assert!(
        mine.as_array().unwrap().iter().all(|r| r["extract"]["report"].is_null()),
        "no report for the analyst until every steward approves: {mine}"
    );
    // Nor is the extract revised once a steward approved the one they saw.
    let (status, body) =
        w.s.post(&format!("/v1/access-requests/{part}/revise"), &health_steward, json!({"k": 8, "reason": "r"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = w.s.post(&format!("/v1/access-requests/{part}/approve"), &health_steward, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(datasets(&body["extract"]["report"]), ["health.visits"], "{body}");
    // The analyst (civil affairs), once both approved: civil's figures only.
    let (_, mine) = w.s.get("/v1/access-requests", &w.analyst).await;
    let theirs = &mine.as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap()["extract"]["report"];
    assert_eq!(datasets(theirs), ["civil.people"], "{theirs}");
    let rows = w.rows(&w.analyst, "SELECT * FROM extracts.people_visits").await;
    assert_eq!(rows.len() as u64, report["records"].as_u64().unwrap());
    // The person with the rare diagnosis, to an attacker who knows their district and birth
    // date: the pseudonyms they cannot rule out, and how many of them carry the diagnosis.
    let line = csv().lines().nth(2).unwrap().to_owned();
    let fields: Vec<&str> = line.split(',').collect();
    let (district, birth) = (fields[2], fields[3]);
    let candidates: HashSet<&str> = rows
        .iter()
        .filter(|r| covers(r[1].as_str().unwrap(), district) && covers(r[2].as_str().unwrap(), birth))
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(candidates.len() >= K, "the person narrowed to {} pseudonyms", candidates.len());
    let holding = |icd10: &str| {
        let held: HashSet<&str> = rows
            .iter()
            .filter(|r| r[3] == icd10 && candidates.contains(r[0].as_str().unwrap()))
            .map(|r| r[0].as_str().unwrap())
            .collect();
        held.len()
    };
    let rare = holding(RARE_ICD10);
    assert!(rare * K <= candidates.len(), "{rare} of {} candidates have the rare diagnosis", candidates.len());
    assert!(report["linked"] == true, "several visits per person are linked by the pseudonym: {report}");
    let people: HashSet<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert!(people.len() <= 301 - 30, "only people with visits are in the join: {}", people.len());
    let text = serde_json::to_string(&rows).unwrap();
    assert!(source_ids().iter().all(|id| !text.contains(id.as_str())), "an identifier left the broker");

    // Extracts of other joins of civil.people select other people: comparing two tells who is
    // in one but not the other. Each steward is warned when one was already released.
    let (status, alone) = w.ask(&w.analyst, standard()).await;
    assert_eq!(status, StatusCode::CREATED, "{alone}");
    let (status, again) =
        w.ask(&w.analyst, json!({"name": "again", "join": ["health.visits"], "columns": ["person_id", "icd10"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    let (_, listed) = w.s.get("/v1/access-requests", &w.steward).await;
    let warnings = |id: &Value| {
        let request = listed.as_array().unwrap().iter().find(|r| r["id"] == *id).unwrap();
        request["extract"]["report"]["warnings"].to_string()
    };
    assert!(warnings(&alone["id"]).contains("joined with health.visits"), "{}", warnings(&alone["id"]));
    assert!(!warnings(&again["id"]).contains("other people"), "the same join: {}", warnings(&again["id"]));

    // The query is recorded against both datasets; a revocation by either steward ends it.
    let records = w.s.audit_records();
    let recorded = records.iter().rev().find(|r| r.entry.action == "query").unwrap();
    let datasets: Vec<&str> = recorded.entry.datasets.iter().map(|d| d.dataset.as_str()).collect();
    assert_eq!(datasets, ["civil.people", "health.visits"]);
    let (status, body) =
        w.s.post(&format!("/v1/access-requests/{part}/revoke"), &health_steward, json!({"reason": "复核结束"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w.s.post("/v1/query", &w.analyst, query).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_dataset")), "{body}");
}

/// The people of `ages` (a registry: age, sex, diagnosis), sixty of them with units
/// `<prefix>0000…`, each `shift` years older, and the target (B20) if `target`.
fn ages_csv(prefix: &str, shift: usize, target: bool) -> String {
    let mut csv = String::from("person_id,age,sex,diagnosis\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "{prefix}{i:04},{},{},{}\n",
            20 + i % 25 + shift,
            ["M", "F"][i % 2],
            ["I10", "E11", "J45"][i % 3]
        ));
    }
    if target {
        csv.push_str("T0001,37,F,B20\n");
    }
    csv
}

fn ages_columns() -> Value {
    json!({"age": {"tag": "quasi_identifier"}, "sex": {"tag": "quasi_identifier"}, "diagnosis": {"tag": "sensitive"}})
}

fn ages_extract(name: &str) -> Value {
    json!({"name": name, "columns": ["age", "sex", "diagnosis"], "hierarchies": {"age": ["band:50", "*"]}})
}

/// Two snapshots of one registry registered as two datasets (the second with the target
/// added, or with everybody a year older within their bands and the target added): each
/// snapshot's extract alone is k-anonymous, but the second's rows less the first's are the
/// target's, unless the second is refused. Snapshots sharing a linkable unit and a sensitive
/// column are compared as versions of one dataset are.
#[tokio::test]
async fn a_snapshot_registered_as_another_dataset_does_not_give_who_was_added() {
    for (case, shift) in [("same rows", 0), ("a year older", 1)] {
        let w = world().await;
        register(&w, "ages_2025", ages_columns(), ages_csv("P", 0, false), &[]).await;
        let before = released(&w, "civil.ages_2025", ages_extract("before"), "age, sex, diagnosis").await.unwrap();
        register(&w, "ages_2026", ages_columns(), ages_csv("P", shift, true), &[]).await;
        assert_refused(
            released(&w, "civil.ages_2026", ages_extract("after"), "age, sex, diagnosis").await,
            &before,
            "extract_isolates_people",
            case,
        );
    }
}

/// As [`a_snapshot_registered_as_another_dataset_does_not_give_who_was_added`], the second
/// snapshot registered otherwise (a red team's five ways past a comparison of datasets found
/// by a shared unit and sensitive column name): its sensitive column renamed, or named in
/// another case; its unit of another type; its unit not declared linkable; everybody re-keyed.
/// Released rows are compared whatever the datasets' names, units and tags.
#[tokio::test]
async fn a_snapshot_registered_otherwise_does_not_give_who_was_added() {
    // Each case: the second snapshot's unit prefix, sensitive column, unit declaration.
    let linkable = json!({"tag": "identifier", "linkable": true});
    let cases = [
        ("renamed", "P", "diag", linkable.clone()),
        ("case", "P", "Diagnosis", linkable.clone()),
        ("integer unit", "7", "diagnosis", json!({"tag": "identifier", "linkable": true, "type": "int64"})),
        ("not linkable", "P", "diagnosis", json!({"tag": "identifier"})),
        ("re-keyed", "Q", "diagnosis", linkable.clone()),
    ];
    for (case, prefix, column, unit) in cases {
        let w = world().await;
        // The first snapshot's units are text: "P0000", or "70000" beside the integer case.
        let numeric = case == "integer unit";
        let first = ages_csv(if numeric { "7" } else { "P" }, 0, false);
        let second = ages_csv(prefix, 0, true)
            .replace("person_id,age,sex,diagnosis", &format!("person_id,age,sex,{column}"))
            .replace("T0001", if numeric { "79999" } else { "T0001" });
        let unit_first =
            if numeric { json!({"tag": "identifier", "linkable": true, "type": "string"}) } else { linkable.clone() };
        let meta = |name: &str, unit: Value, sensitive: &str| {
            let mut columns =
                json!({"person_id": unit, "age": {"tag": "quasi_identifier"}, "sex": {"tag": "quasi_identifier"}});
            columns[sensitive] = json!({"tag": "sensitive"});
            json!({"name": name, "department": "civil", "level": "L2", "privacy_unit": "person_id", "columns": columns})
        };
        let (status, body) =
            w.s.upload(&w.steward, &meta("ages_2025", unit_first, "diagnosis"), first.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{case}: {body}");
        let before = released(&w, "civil.ages_2025", ages_extract("before"), "age, sex, diagnosis").await.unwrap();
        let (status, body) = w.s.upload(&w.steward, &meta("ages_2026", unit, column), second.into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{case}: {body}");
        let extract =
            json!({"name": "after", "columns": ["age", "sex", column], "hierarchies": {"age": ["band:50", "*"]}});
        assert_refused(
            released(&w, "civil.ages_2026", extract, &format!("age, sex, \"{column}\"")).await,
            &before,
            "extract_isolates_people",
            case,
        );
    }
}

/// A snapshot re-keyed and with every value recoded by a codebook the attacker knows (a red
/// team's): no column of it pairs with the released extract's, but its one row more, decoded,
/// is the target's diagnosis, unless it is refused; as the numbers of rows of two extracts
/// with nothing in common are compared.
#[tokio::test]
async fn a_snapshot_recoded_with_a_codebook_does_not_give_who_was_added() {
    let w = world().await;
    register(&w, "ages", ages_columns(), ages_csv("P", 0, false), &[]).await;
    let extract = json!({"name": "before", "columns": ["diagnosis"]});
    let before = released(&w, "civil.ages", extract, "diagnosis").await.unwrap();
    let mut coded = String::from("person_id,diag\n");
    for line in ages_csv("P", 0, true).lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        coded.push_str(&format!("Q{},X{}\n", fields[0], fields[3]));
    }
    register(&w, "coded", json!({"diag": {"tag": "sensitive"}}), coded, &[]).await;
    let extract = json!({"name": "after", "columns": ["diag"]});
    assert_refused(
        released(&w, "civil.coded", extract, "substr(diag, 2)").await,
        &before,
        "extract_isolates_people",
        "",
    );
}

/// Two registers holding some of the same people (a quarter of the second's), with a linkable
/// unit and the same columns, are two populations: both release their extracts (a red team
/// found the second refused as if it were a version of the first).
#[tokio::test]
async fn two_registers_sharing_some_people_both_release_extracts() {
    let w = world().await;
    register(&w, "ages", ages_columns(), ages_csv("P", 0, false), &[]).await;
    // By sex alone: registers of people like these differ by many rows in each class.
    let extract = |name: &str| json!({"name": name, "columns": ["sex", "diagnosis"]});
    released(&w, "civil.ages", extract("first"), "sex, diagnosis").await.unwrap();
    let mut other = ages_csv("N", 3, false);
    for line in ages_csv("P", 0, false).lines().skip(1).take(20) {
        other.push_str(&format!("{line}\n"));
    }
    register(&w, "ages_elsewhere", ages_columns(), other, &[]).await;
    let second = released(&w, "civil.ages_elsewhere", extract("second"), "sex, diagnosis").await;
    let second = second.unwrap_or_else(|refused| panic!("refused: {refused}"));
    assert!(second.len() >= 70, "{} of 80 rows released", second.len());
}

/// Another department's register of other people like these (the same columns and codes,
/// classes a few rows apart): its extracts compared by their values with this department's
/// would be refused for differing by a few rows, though they share nobody (a red team's fresh
/// registers were refused on their first extract, even of `sex` alone). The comparison by
/// values stands between the registers of one department, where snapshots are registered, and
/// across departments between registers whose linkable units are mostly the same people.
#[tokio::test]
async fn another_departments_register_of_people_alike_releases_its_extracts() {
    let w = world().await;
    register(&w, "ages", ages_columns(), ages_csv("P", 0, false), &[]).await;
    for (name, columns) in [("sexes", json!(["sex"])), ("diagnoses", json!(["sex", "diagnosis"]))] {
        released(&w, "civil.ages", json!({"name": name, "columns": columns}), "*").await.unwrap();
    }
    let health = w.health_steward().await;
    let mut metadata = json!({"name": "patients", "department": "health", "level": "L2", "privacy_unit": "person_id",
                              "columns": ages_columns()});
    metadata["columns"]["person_id"] = json!({"tag": "identifier", "linkable": true});
    // Other people, one more of them: each class of sex (and diagnosis) a row or two apart.
    let (status, body) = w.s.upload(&health, &metadata, ages_csv("H", 2, true).into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (name, columns) in [("health_sexes", json!(["sex"])), ("health_diagnoses", json!(["sex", "diagnosis"]))] {
        let extract = json!({"name": name, "columns": columns});
        let rows = approved_by(&w, &health, "health.patients", extract, "*").await;
        let rows = rows.unwrap_or_else(|refused| panic!("{name} refused: {refused}"));
        assert!(rows.len() >= 55, "{name}: {} of 61 rows released", rows.len());
    }
    // The same people plus one, the sensitive column renamed: compared by its values within
    // civil (re-keyed), and in health where most of its linkable units are civil's.
    let snapshot = |prefix: &str| {
        let mut csv = String::from("person_id,diag\n");
        for line in ages_csv(prefix, 0, true).lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            csv.push_str(&format!("{},{}\n", fields[0], fields[3]));
        }
        csv
    };
    register(&w, "copy", json!({"diag": {"tag": "sensitive"}}), snapshot("Q"), &[]).await;
    let before = released(&w, "civil.ages", json!({"name": "plain", "columns": ["diagnosis"]}), "diagnosis").await;
    let before = before.unwrap();
    let after = released(&w, "civil.copy", json!({"name": "copied", "columns": ["diag"]}), "diag").await;
    assert_refused(after, &before, "extract_isolates_people", "a copy in one department");
    let copy = json!({"name": "residents", "department": "health", "level": "L2", "privacy_unit": "person_id",
                      "columns": {"person_id": {"tag": "identifier", "linkable": true}, "diag": {"tag": "sensitive"}}});
    let (status, body) = w.s.upload(&health, &copy, snapshot("P").into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let extract = json!({"name": "handed_over", "columns": ["diag"]});
    let after = approved_by(&w, &health, "health.residents", extract, "diag").await;
    assert_refused(after, &before, "extract_isolates_people", "a copy handed to another department");
    // Two registers sharing fewer than half their people (60 of 130 and 131), each with 70 men
    // of its own: the women's classes differ by the target alone (a red team's, by district).
    let sharing = |prefix: &str, target: bool| {
        let mut csv = String::from("person_id,sex,diag\n");
        for line in ages_csv("S", 0, target).lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            csv.push_str(&format!("{},{},{}\n", fields[0], fields[2], fields[3]));
        }
        (0..70).for_each(|i| csv.push_str(&format!("{prefix}{i:04},M,{}\n", ["I10", "E11"][i % 2])));
        csv
    };
    let columns = json!({"sex": {"tag": "quasi_identifier"}, "diag": {"tag": "sensitive"}});
    register(&w, "elder", columns, sharing("C", false), &[]).await;
    let extract = json!({"name": "elder_shared", "columns": ["sex", "diag"]});
    let before = released(&w, "civil.elder", extract, "sex, diag").await.unwrap();
    let partly = sharing("H", true);
    // In a third department, so that only civil's releases are compared with it.
    w.s.department("hrss", "人社局").await;
    let hrss = w.s.user("hrss-steward", Some("hrss"), &["steward"]).await;
    let mut metadata = copy.clone();
    (metadata["name"], metadata["department"]) = (json!("partly"), json!("hrss"));
    metadata["columns"]["sex"] = json!({"tag": "quasi_identifier"});
    let (status, body) = w.s.upload(&hrss, &metadata, partly.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let extract = json!({"name": "partly_shared", "columns": ["sex", "diag"]});
    let after = approved_by(&w, &hrss, "hrss.partly", extract, "sex, diag").await;
    assert_refused(after, &before, "extract_isolates_people", "a register sharing under half its people");
    // A copy whose ids are written otherwise (lower case, spaces around): the same people.
    let reformatted = snapshot("P").replace("\nP", "\n p").replace("\nT", "\n t").replace(',', " ,");
    let reformatted = reformatted.replacen("person_id ,diag", "person_id,diag", 1);
    let mut metadata = copy.clone();
    (metadata["name"], metadata["department"]) = (json!("reformatted"), json!("hrss"));
    let (status, body) = w.s.upload(&hrss, &metadata, reformatted.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let before = released(&w, "civil.ages", json!({"name": "plain_again", "columns": ["diagnosis"]}), "diagnosis");
    let before = before.await.unwrap();
    let extract = json!({"name": "reformatted_copy", "columns": ["diag"]});
    let after = approved_by(&w, &hrss, "hrss.reformatted", extract, "diag").await;
    assert_refused(after, &before, "extract_isolates_people", "a copy with its ids written otherwise");
    // A copy whose ids carry a prefix (`CN-`).
    let prefixed = snapshot("P").replace("\nP", "\nCN-P").replace("\nT", "\nCN-T");
    let mut metadata = copy.clone();
    (metadata["name"], metadata["department"]) = (json!("prefixed"), json!("hrss"));
    let (status, body) = w.s.upload(&hrss, &metadata, prefixed.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let extract = json!({"name": "prefixed_copy", "columns": ["diag"]});
    let after = approved_by(&w, &hrss, "hrss.prefixed", extract, "diag").await;
    assert_refused(after, &before, "extract_isolates_people", "a copy with prefixed ids");
    // A copy keyed by record number, the national id a linkable column beside it.
    let mut numbered = String::from("record_no,person_id,diag\n");
    for (i, line) in snapshot("P").lines().skip(1).enumerate() {
        numbered.push_str(&format!("R{i},{line}\n"));
    }
    let numbered_metadata = json!({"name": "numbered", "department": "hrss", "level": "L2", "privacy_unit": "record_no",
        "columns": {"record_no": {"tag": "identifier"}, "person_id": {"tag": "identifier", "linkable": true},
                    "diag": {"tag": "sensitive"}}});
    let (status, body) = w.s.upload(&hrss, &numbered_metadata, numbered.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let extract = json!({"name": "numbered_copy", "columns": ["diag"]});
    let after = approved_by(&w, &hrss, "hrss.numbered", extract, "diag").await;
    assert_refused(after, &before, "extract_isolates_people", "a copy keyed by record number");
    // Other people and one of civil's: too few in common to cancel out, and released (a red
    // team's register sharing one person was refused for classes a row or two off).
    w.s.department("medicare", "医保局").await;
    let medicare = w.s.user("medicare-steward", Some("medicare"), &["steward"]).await;
    let mut metadata = json!({"name": "insured", "department": "medicare", "level": "L2", "privacy_unit": "person_id",
                              "columns": ages_columns()});
    metadata["columns"]["person_id"] = json!({"tag": "identifier", "linkable": true});
    let one_shared = ages_csv("G", 2, true) + ages_csv("P", 0, false).lines().nth(1).unwrap() + "\n";
    let (status, body) = w.s.upload(&medicare, &metadata, one_shared.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let extract = json!({"name": "insured_sexes", "columns": ["sex"]});
    let rows = approved_by(&w, &medicare, "medicare.insured", extract, "*").await;
    assert_eq!(rows.unwrap_or_else(|refused| panic!("one person shared: {refused}")).len(), 62);
}

/// A version re-keying everybody (new units, the steward confirming it) with the target
/// added, and one re-keying everybody and recoding every diagnosis (no row as before, so
/// nothing for registration to ask about): nobody is matched across the versions, each
/// extract's people look like a population of their own, and the second's rows less the
/// first's are the target's, unless the second is refused.
#[tokio::test]
async fn a_version_that_rekeys_its_people_does_not_give_who_was_added() {
    for (case, recode, confirm) in
        [("re-keyed, confirmed", false, &["person_id"][..]), ("re-keyed, recoded", true, &[])]
    {
        let w = world().await;
        register(&w, "ages", ages_columns(), ages_csv("P", 0, false), &[]).await;
        let before = released(&w, "civil.ages", ages_extract("before"), "age, sex, diagnosis").await.unwrap();
        let mut after = ages_csv("Q", 0, true);
        if recode {
            after = after.replace(",I10", ",x-I10").replace(",E11", ",x-E11").replace(",J45", ",x-J45");
        }
        register(&w, "ages", ages_columns(), after, confirm).await;
        match released(&w, "civil.ages", ages_extract("after"), "age, sex, diagnosis").await {
            Ok(after) => panic!("{case}: released; added {:?}", more_in(&after, &before)),
            Err(refused) => {
                assert_eq!(refused["error"]["code"], "extract_people_unmatched", "{case}: {refused}");
                let message = refused["error"]["message"].as_str().unwrap();
                assert!(message.contains("civil.ages") && !message.contains("Q0001"), "{message}");
            }
        }
    }
}

/// A dataset retired by its steward is no longer read through the extracts built from it.
#[tokio::test]
async fn an_extract_of_a_retired_dataset_is_not_queryable() {
    let w = world().await;
    register(&w, "ages", ages_columns(), ages_csv("P", 0, false), &[]).await;
    let rows = released(&w, "civil.ages", ages_extract("aged"), "age, sex, diagnosis").await.unwrap();
    assert_eq!(rows.len(), 60);
    let retire = w.s.request(reqwest::Method::DELETE, "/v1/datasets/civil.ages", Some(&w.steward));
    let (status, body) = w.s.send(retire).await;
    assert!(status.is_success(), "{status} {body}");
    let sql = json!({"sql": "SELECT count(*) FROM extracts.aged", "mode": "deidentified"});
    let (status, body) = w.s.post("/v1/query", &w.analyst, sql).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_dataset")), "{body}");
}

/// A de-identified request named with `Veil-Upload-Id` is followed by its sender at
/// `GET /v1/uploads/{id}`: `done` once built, `failed` when refused; stages only, no counts;
/// nobody else sees it.
#[tokio::test]
async fn an_extract_request_named_by_its_sender_can_be_followed() {
    let w = world().await;
    register(&w, "ages", ages_columns(), ages_csv("P", 0, false), &[]).await;
    let ask = |id: &str, extract: Value| {
        let body = json!({"dataset": "civil.ages", "mode": "deidentified", "purpose": "复核",
                          "expires_at": in_a_month(), "extract": extract});
        w.s.request(reqwest::Method::POST, "/v1/access-requests", Some(&w.analyst))
            .header("veil-upload-id", id)
            .json(&body)
    };
    let (status, body) = w.s.send(ask("ext-1", ages_extract("followed"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, progress) = w.s.get("/v1/uploads/ext-1", &w.analyst).await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(progress, json!({"stage": "done", "bytes_received": 0, "rows_read": 0}));
    // A column the dataset does not have: refused, and the follower says so.
    let (status, _) = w.s.send(ask("ext-2", json!({"name": "nothing", "columns": ["shoe_size"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(w.s.get("/v1/uploads/ext-2", &w.analyst).await.1["stage"], "failed");
    assert_eq!(w.s.get("/v1/uploads/ext-1", &w.steward).await.0, StatusCode::NOT_FOUND);
}

/// A red team joined two of its extracts on a shared column and got the other side's column
/// back as NULL (with counts of the whole product): an inner join on equal values returns
/// those values on both sides.
#[tokio::test]
async fn two_extracts_joined_on_a_column_return_it_on_both_sides() {
    let w = world().await;
    granted_a_and_b(&w).await;
    let rows = w
        .rows(
            &w.analyst,
            "SELECT a.living_alone, b.living_alone, count(*) AS n FROM extracts.a a JOIN extracts.b b ON a.living_alone = b.living_alone GROUP BY 1, 2",
        )
        .await;
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(r[0], r[1], "{rows:?}");
    }
}

/// Leak (listed open until now): a join's feasibility depends on who is in both datasets, and a
/// join that could not meet k was refused at once, before any steward looked: a partner dataset
/// made to hold a target and a few known people told whether the target is in another
/// department's register. Such a request now goes to the stewards like any other (the analyst
/// sees the same pending request either way); the stewards see why it cannot be built and can
/// only reject it.
#[tokio::test]
async fn a_join_too_small_for_k_goes_to_the_stewards_not_back_to_the_analyst() {
    let w = world().await;
    let health_steward = w.health_steward().await;
    let ids = source_ids();
    // Three people of the register (fewer than k) in one partner, everybody in the other.
    let few: String = visits_csv()
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || ids[1..4].iter().any(|id| l.starts_with(id.as_str())))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    for (name, csv) in [("visits", visits_csv()), ("few", few)] {
        w.upload_visits(&health_steward, name, csv).await;
    }
    let (status, built) = w.ask(&w.analyst, joined("with_all", "visits")).await;
    assert_eq!(status, StatusCode::CREATED, "{built}");
    let (status, small) = w.ask(&w.analyst, joined("with_few", "few")).await;
    assert_eq!(status, StatusCode::CREATED, "not refused at once: {small}");
    // The analyst's two answers differ in nothing but names and ids.
    let shape = |v: &Value| -> Vec<(String, String)> {
        fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
            match v {
                Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, &format!("{at}.{k}"), out)),
                Value::Array(a) => a.iter().for_each(|v| walk(v, &format!("{at}[]"), out)),
                other => out.push((at.to_owned(), if other.is_string() { "text".into() } else { other.to_string() })),
            }
        }
        let mut out = Vec::new();
        walk(v, "", &mut out);
        out.retain(|(at, _)| !at.ends_with(".created_at") && !at.ends_with(".expires_at"));
        out
    };
    assert_eq!(shape(&built), shape(&small));
    assert!(small["extract"].get("report").is_none_or(Value::is_null), "{small}");
    let (_, mine) = w.s.get("/v1/access-requests", &w.analyst).await;
    let listed = mine.as_array().unwrap().iter().find(|r| r["id"] == small["id"]).unwrap();
    assert_eq!(listed["state"], "pending", "{listed}");
    assert!(listed["extract"].get("report").is_none_or(Value::is_null), "{listed}");

    // The steward sees why, and the column or rule that blocks; approving is refused.
    let id = small["id"].as_str().unwrap();
    let (_, theirs) = w.s.get("/v1/access-requests", &w.steward).await;
    let report = &theirs.as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["extract"]["report"];
    let why = report["unbuildable"].as_str().unwrap_or_default();
    assert!(why.contains("fewer than k = 5"), "{report}");
    assert_eq!(report["refused_by"], "extract_infeasible", "{report}");
    let (status, body) = w.s.post(&format!("/v1/access-requests/{id}/approve"), &w.steward, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("extract_unbuildable")),
        "{body}"
    );
    let (status, body) =
        w.s.post(&format!("/v1/access-requests/{id}/reject"), &w.steward, json!({"reason": "too few people"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An extract alone that cannot meet k is still refused at once, naming why: it is about a
    // whole dataset, not about who is in two.
    let (status, body) = w.ask_of("health.few", &w.analyst, json!({"name": "few_alone", "columns": ["icd10"]})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("extract_infeasible")),
        "{body}"
    );
}
