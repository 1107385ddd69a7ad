//! The query use case in process, without a protocol: every query is one audit record, on disk
//! before anything is released; refusals carry the record's number; the budget is the broker's.

#![allow(clippy::unwrap_used)] // tests: a failed fixture should fail loudly

use std::collections::BTreeMap;
use std::sync::Arc;

use veil_audit::{AuditLog, Filter, Record};
use veil_broker::{Broker, Caller, Refused, Released, Request};
use veil_catalog::{Catalog, ColumnInput, DatasetSpec, DpInput, MetadataInput};
use veil_common::{DepartmentId, Role, UserId};

/// People in the test dataset: 60 in each of four districts.
const PEOPLE: usize = 240;

struct World {
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    audit: Arc<AuditLog>,
    broker: Broker,
    /// Requests made so far: each caller's request id is fresh.
    requests: std::sync::atomic::AtomicU64,
}

fn column(tag: &str, data_type: Option<&str>, bounds: Option<(f64, f64)>) -> ColumnInput {
    ColumnInput {
        tag: tag.into(),
        linkable: false,
        bounds,
        data_type: data_type.map(Into::into),
        generalize: None,
        public_values: None,
        format: None,
    }
}

/// `civil.people`'s rows: 60 people in each of four districts; person `changed` (if any) with
/// a subsidy one step higher.
fn people_csv(changed: Option<usize>) -> String {
    let mut text = String::from("person_id,district,subsidy\n");
    for i in 0..PEOPLE {
        let subsidy = 100 + i % 7 * 50 + if Some(i) == changed { 50 } else { 0 };
        text.push_str(&format!("p{i:04},{},{subsidy}\n", ["A", "B", "C", "D"][i % 4]));
    }
    text
}

/// `civil.people`'s metadata: L3, district a quasi-identifier, subsidy sensitive.
fn people_spec() -> DatasetSpec {
    let columns = BTreeMap::from([
        ("person_id".to_owned(), column("identifier", None, None)),
        ("district".to_owned(), column("quasi_identifier", None, None)),
        ("subsidy".to_owned(), column("sensitive", Some("int64"), Some((0.0, 1000.0)))),
    ]);
    DatasetSpec::validate(MetadataInput {
        name: "people".into(),
        department: "civil".into(),
        level: "L3".into(),
        description: "test registry".into(),
        privacy_unit: Some("person_id".into()),
        format: None,
        sheet: None,
        encoding: None,
        delimiter: None,
        columns,
        dp: DpInput::default(),
        confirm_changes: Vec::new(),
        one_row_per_person: true,
    })
    .unwrap()
}

/// A data directory with civil affairs' L3 `civil.people`, the demo policy and its users.
fn world() -> World {
    world_with(veil_policy::DEMO_POLICY)
}

/// As [`world`], under the given policy lines.
fn world_with(policy_lines: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = UserId::new("admin").unwrap();
    let policy = [("policies/model.conf", veil_policy::DEFAULT_MODEL), ("policies/policy.csv", policy_lines)];
    veil_catalog::init(&data, &dir.path().join("admin.token"), &admin, &policy).unwrap();
    // A fixed installation secret: the noisy threshold's draws are the same at every run (a
    // fresh one withheld a group a test expects released about once in some hundreds).
    std::fs::write(data.join("keys").join("pseudonym.key"), [7u8; 32]).unwrap();
    let catalog = Catalog::open(&data).unwrap();
    for department in ["civil", "health", "hotline"] {
        catalog.create_department(&DepartmentId::new(department).unwrap(), department).unwrap();
    }
    for (user, department, role) in [
        ("civil-steward", Some("civil"), Role::Steward),
        ("civil-analyst", Some("civil"), Role::Analyst),
        ("health-analyst", Some("health"), Role::Analyst),
        ("hotline-analyst", Some("hotline"), Role::Analyst),
        ("auditor", None, Role::Auditor),
    ] {
        let department = department.map(|d| DepartmentId::new(d).unwrap());
        catalog.create_user(&UserId::new(user).unwrap(), department.as_ref(), &[role]).unwrap();
    }
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, people_csv(None)).unwrap();
    catalog
        .register_dataset(&people_spec(), &csv, &UserId::new("civil-steward").unwrap(), |_, _| None, &|_| {})
        .unwrap();
    let policy = veil_broker::load_policy(&catalog, veil_policy::PolicyFiles::in_dir(&data.join("policies"))).unwrap();
    let audit = Arc::new(
        AuditLog::open(&catalog.dir().audit(), &catalog.dir().audit_key(), veil_audit::Options::default()).unwrap(),
    );
    let spill = catalog.dir().tmp();
    let catalog = Arc::new(catalog);
    let broker = Broker::new(
        Arc::clone(&catalog),
        Arc::new(policy),
        Arc::clone(&audit),
        veil_broker::Limits::standard(),
        &spill,
    )
    .unwrap();
    World { _dir: dir, catalog, audit, broker, requests: Default::default() }
}

impl World {
    fn caller(&self, user: &str) -> Caller {
        let token = self.catalog.issue_token(&UserId::new(user).unwrap()).unwrap().token;
        let principal = self.catalog.authenticate(&token).unwrap().unwrap();
        let n = self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Caller { principal, request_id: Some(format!("req-{user}-{n}")) }
    }

    async fn ask(&self, user: &str, sql: &str, mode: &str, epsilon: Option<f64>) -> Result<Released, Refused> {
        let request = Request {
            sql: sql.into(),
            mode: mode.into(),
            epsilon,
            rho: None,
            noise: None,
            accuracy: None,
            dry_run: false,
        };
        self.broker.query(&self.caller(user), request).await
    }

    /// The audit record an answer or refusal refers to.
    async fn record(&self, reference: impl AsRef<str>) -> Record {
        let filter = Filter { request_id: Some(reference.as_ref().to_owned()), ..Filter::default() };
        let page = self.broker.audit_records(filter, usize::MAX).await.unwrap();
        let [stored] = &page.records[..] else { panic!("{} records refer to one answer", page.records.len()) };
        stored.record.clone()
    }
}

const BY_DISTRICT: &str = "SELECT district, COUNT(*) AS n FROM civil.people GROUP BY district ORDER BY district";

#[tokio::test]
async fn a_released_answer_names_its_audit_record() {
    let w = world();
    let released = w.ask("civil-analyst", BY_DISTRICT, "aggregate", None).await.unwrap();
    assert_eq!(released.answer().row_count(), 4);
    assert_eq!(released.level(), "L3");
    assert!(released.rules().iter().any(|r| r.detail.starts_with("civil.people")));
    let record = w.record(released.audit_id()).await;
    assert_eq!(record.entry.action, "query");
    assert_eq!(record.entry.decision, "allowed");
    assert_eq!(record.entry.rows, Some(4));
    assert!(released.audit_id().starts_with("req-civil-analyst-"), "the protocol's request id");
    assert_eq!(record.entry.actor.unwrap().user, "civil-analyst");
    assert_eq!(record.entry.datasets[0].dataset, "civil.people");
    // Released only after the record is durable.
    assert!(w.audit.durable_seq() >= record.seq);
}

/// Red team: the audit id in every answer was the record's sequence number, so the gap between
/// two of an analyst's answers counted everybody else's audited actions in between. The
/// reference an answer carries now says nothing of them.
#[tokio::test]
async fn an_answers_audit_reference_does_not_count_other_peoples_actions() {
    let w = world();
    // A caller without a request id of its own (a protocol that has none) gets a random one.
    let anonymous = |w: &World| {
        let mut caller = w.caller("civil-analyst");
        caller.request_id = None;
        caller
    };
    let request = |sql: &str| Request {
        sql: sql.into(),
        mode: "aggregate".into(),
        epsilon: None,
        rho: None,
        noise: None,
        accuracy: None,
        dry_run: false,
    };
    let mut gaps = Vec::new();
    for others in [0, 3] {
        let first = w.broker.query(&anonymous(&w), request(BY_DISTRICT)).await.unwrap();
        for _ in 0..others {
            w.ask("civil-steward", BY_DISTRICT, "aggregate", None).await.ok();
        }
        let second = w.broker.query(&anonymous(&w), request(BY_DISTRICT)).await.unwrap();
        let (a, b) = (first.audit_id(), second.audit_id());
        assert_ne!(a, b);
        assert_eq!(w.record(a).await.entry.rows, Some(4), "the reference finds its record");
        for reference in [a, b] {
            let parsed = uuid::Uuid::parse_str(reference).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "a random reference, not a count: {reference}");
        }
        gaps.push(w.record(b).await.seq - w.record(a).await.seq);
    }
    // The log itself still counts (an auditor sees every record); the answers do not.
    assert_eq!(gaps, [1, 4]);
}

#[tokio::test]
async fn a_refusal_is_recorded_with_its_rule() {
    let w = world();
    let refused = w.ask("hotline-analyst", BY_DISTRICT, "aggregate", None).await.unwrap_err();
    assert_eq!(refused.error.kind(), veil_common::ErrorKind::Forbidden);
    let record = w.record(refused.audit_id.unwrap()).await;
    assert_eq!(record.entry.decision, "denied");
    assert_eq!(record.entry.rule.as_deref(), Some(refused.error.code()));
    assert_eq!(record.entry.datasets[0].dataset, "civil.people");

    // An L3 dataset above the health department's aggregate ceiling (L2): refused, recorded.
    let refused = w.ask("health-analyst", BY_DISTRICT, "aggregate", None).await.unwrap_err();
    assert_eq!(refused.error.kind(), veil_common::ErrorKind::Forbidden);
    assert_eq!(w.record(refused.audit_id.unwrap()).await.entry.decision, "denied");
}

#[tokio::test]
async fn an_unknown_mode_is_refused_and_recorded_as_asked() {
    let w = world();
    let refused = w.ask("civil-analyst", BY_DISTRICT, "raw", None).await.unwrap_err();
    assert_eq!(refused.error.code(), "unknown_mode");
    let record = w.record(refused.audit_id.unwrap()).await;
    assert_eq!(record.entry.mode.as_deref(), Some("raw"));
    assert_eq!(record.entry.decision, "denied");
    assert!(record.entry.sql.unwrap().contains("civil.people"));
}

#[tokio::test]
async fn nothing_is_released_when_the_audit_log_cannot_record() {
    let w = world();
    w.audit.close().await.unwrap();
    let refused = w.ask("civil-analyst", BY_DISTRICT, "aggregate", None).await.unwrap_err();
    assert_eq!(refused.error.code(), "audit_unavailable");
    assert_eq!(refused.audit_id, None);
}

#[tokio::test]
async fn a_dry_run_is_recorded_and_runs_nothing() {
    let w = world();
    let request = Request {
        sql: BY_DISTRICT.into(),
        mode: "aggregate".into(),
        epsilon: None,
        rho: None,
        noise: None,
        accuracy: None,
        dry_run: true,
    };
    let released = w.broker.query(&w.caller("civil-analyst"), request).await.unwrap();
    assert!(!released.answer().executed);
    assert_eq!(released.answer().row_count(), 0);
    let record = w.record(released.audit_id()).await;
    assert_eq!(record.entry.decision, "dry_run");
    assert_eq!(record.entry.rows, None);
}

#[tokio::test]
async fn dp_charges_the_budget_once_and_replays_for_free() {
    let w = world();
    let sql = "SELECT district, COUNT(*) AS n FROM civil.people GROUP BY district";
    let first = w.ask("health-analyst", sql, "dp", Some(0.5)).await.unwrap();
    let report = first.answer().dp.as_ref().unwrap();
    assert!(!report.replayed);
    let budget = first.budget().unwrap();
    assert_eq!(budget.len(), 1);
    assert!((budget[0].spent - 0.5).abs() < 1e-12);
    assert_eq!(w.record(first.audit_id()).await.entry.epsilon, Some(0.5));

    let again = w.ask("health-analyst", sql, "dp", Some(0.5)).await.unwrap();
    assert!(again.answer().dp.as_ref().unwrap().replayed);
    assert!((again.budget().unwrap()[0].spent - 0.5).abs() < 1e-12);
    assert_eq!(again.answer().batches, first.answer().batches);
    let record = w.record(again.audit_id()).await;
    assert_eq!(record.entry.epsilon, Some(0.0));
    assert!(record.entry.detail.unwrap().contains("nothing charged"));

    let shown = w.broker.budget(&w.caller("health-analyst")).await.unwrap();
    let people = shown.iter().find(|b| b.dataset.to_string() == "civil.people").unwrap();
    assert!((people.spent - 0.5).abs() < 1e-12);
    assert_eq!(people.queries, 1);
    // Epsilon out of range: refused before anything runs, and recorded.
    let refused = w.ask("health-analyst", sql, "dp", Some(0.0)).await.unwrap_err();
    assert_eq!(refused.error.code(), "epsilon_invalid");
    assert_eq!(w.record(refused.audit_id.unwrap()).await.entry.decision, "denied");
}

#[tokio::test]
async fn a_recorded_answer_of_another_shape_is_never_released() {
    // The answer key covers the aggregate's shape; if a recorded answer were damaged or
    // swapped all the same, the replay fails closed instead of releasing it as this query's.
    let w = world();
    let count = "SELECT COUNT(*) AS n FROM civil.people";
    let both = "SELECT AVG(subsidy) AS n FROM civil.people";
    w.ask("health-analyst", count, "dp", Some(0.5)).await.unwrap();
    w.ask("health-analyst", both, "dp", Some(0.5)).await.unwrap();
    let db = rusqlite::Connection::open(w.catalog.dir().catalog_db()).unwrap();
    let swapped = db
        .execute(
            "UPDATE dp_answers SET answer = (SELECT answer FROM dp_answers ORDER BY rowid LIMIT 1)
              WHERE rowid = (SELECT max(rowid) FROM dp_answers)",
            [],
        )
        .unwrap();
    assert_eq!(swapped, 1);
    let refused = w.ask("health-analyst", both, "dp", Some(0.5)).await.unwrap_err();
    assert_eq!(refused.error.code(), "internal");
    assert_eq!(w.record(refused.audit_id.unwrap()).await.entry.decision, "failed");
}

#[tokio::test]
async fn only_auditors_see_the_audit_table() {
    let w = world();
    w.ask("civil-analyst", BY_DISTRICT, "aggregate", None).await.unwrap();
    let sql = "SELECT action, COUNT(*) AS n FROM audit.events GROUP BY action";
    let released = w.ask("auditor", sql, "aggregate", None).await.unwrap();
    assert_eq!(released.level(), "audit");
    assert_eq!(w.record(released.audit_id()).await.entry.action, "audit.query");

    let refused = w.ask("civil-analyst", sql, "aggregate", None).await.unwrap_err();
    assert_eq!(refused.error.kind(), veil_common::ErrorKind::NotFound);
    assert!(refused.error.message().contains("audit.events"));
}

/// Sums and counts of the answer's column `n` (an Int64 count) and `total` (a sum).
fn counts_and_sums(released: &Released) -> Vec<(i64, f64)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    let mut out = Vec::new();
    for batch in &released.answer().batches {
        let n = batch.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        let total = arrow::compute::cast(batch.column_by_name("total").unwrap(), &DataType::Float64).unwrap();
        let total = total.as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            out.push((n.value(i), if total.is_null(i) { f64::NAN } else { total.value(i) }));
        }
    }
    out
}

#[tokio::test]
async fn exact_aggregates_over_people_only_where_a_policy_line_names_them() {
    let sql =
        "SELECT district, COUNT(*) AS n, SUM(subsidy) AS total FROM civil.people GROUP BY district ORDER BY district";
    // The truth: 60 people per district; person i has subsidy 100 + (i % 7) * 50.
    let truth: Vec<(i64, f64)> = (0..4)
        .map(|d| {
            let sum: usize = (0..PEOPLE).filter(|i| i % 4 == d).map(|i| 100 + i % 7 * 50).sum();
            (60, sum as f64)
        })
        .collect();

    // The demo policy allows the own department every mode, which is not exact aggregates.
    let w = world();
    let released = w.ask("civil-analyst", sql, "aggregate", None).await.unwrap();
    assert!(released.rules().iter().any(|r| r.code == "anonymized"));
    assert!(!released.rules().iter().any(|r| r.code == "exact_aggregates"));
    assert_ne!(counts_and_sums(&released), truth, "anonymized answers carry noise");
    // Each value's noise is bounded by a figure from the query and the declared bounds alone,
    // and the values are within it.
    let noise = &released.answer().anonymized.as_ref().unwrap().noise_sd;
    // The people layer (√2 times the scale), the labels' layer and the measure's own.
    let layers = 2.0;
    assert_eq!(noise, &[("n".to_owned(), layers), ("total".to_owned(), layers * 1000.0)]);
    for ((n, total), (true_n, true_total)) in counts_and_sums(&released).into_iter().zip(&truth) {
        assert!((n - true_n).abs() as f64 <= 5.0 * noise[0].1, "count {n} vs {true_n}");
        assert!((total - true_total).abs() <= 5.0 * noise[1].1, "sum {total} vs {true_total}");
    }
    // The stated noise says nothing about who is in a group: a red team read whether one
    // person's value was above zero off the scale two groups' answers stated when it came from
    // their contributions. Groups of different people, with and without the largest values:
    // the same figures.
    for narrower in ["subsidy >= 0 AND subsidy < 200", "subsidy >= 0 AND subsidy < 500", "district = 'B'"] {
        let sql = format!(
            "SELECT district, COUNT(*) AS n, SUM(subsidy) AS total FROM civil.people WHERE {narrower} GROUP BY district"
        );
        let released = w.ask("civil-analyst", &sql, "aggregate", None).await.unwrap();
        assert_eq!(&released.answer().anonymized.as_ref().unwrap().noise_sd, noise, "{sql}");
    }
    // A rework that mixes groups states no per-row noise.
    let reworked =
        "SELECT SUM(n) AS all_people FROM (SELECT district, COUNT(*) AS n FROM civil.people GROUP BY district) AS t";
    let released = w.ask("civil-analyst", reworked, "aggregate", None).await.unwrap();
    assert!(released.answer().anonymized.as_ref().unwrap().noise_sd.is_empty());

    let policy = format!("{}\np, analyst, civil, @own, *, exact_aggregates, allow\n", veil_policy::DEMO_POLICY);
    let w = world_with(&policy);
    let released = w.ask("civil-analyst", sql, "aggregate", None).await.unwrap();
    assert_eq!(counts_and_sums(&released), truth);
    assert!(released.rules().iter().any(|r| r.code == "exact_aggregates"));
    assert!(!released.rules().iter().any(|r| r.code == "anonymized"));
    let record = w.record(released.audit_id()).await;
    assert!(record.entry.detail.unwrap().contains("exact_aggregates"));
    // Exact answers keep the threshold: a group of fewer than k people is withheld.
    let small = "SELECT subsidy, COUNT(*) AS n, SUM(subsidy) AS total FROM civil.people WHERE district = 'A' AND subsidy = 100 GROUP BY subsidy";
    let released = w.ask("civil-analyst", small, "aggregate", None).await.unwrap();
    assert!(counts_and_sums(&released).is_empty(), "9 people are fewer than L3's k");
    // Another department's analyst never gets them, whatever a line says: the policy's own
    // tests decide that (`exact_aggregates_need_a_line_that_names_them_and_stay_in_the_department`).
}

/// `civil.people` as a new version, `subsidy` of person `changed` raised by one step.
fn register_changed(w: &World, changed: usize) {
    let csv = w._dir.path().join("people-v2.csv");
    std::fs::write(&csv, people_csv(Some(changed))).unwrap();
    w.catalog
        .register_dataset(&people_spec(), &csv, &UserId::new("civil-steward").unwrap(), |_, _| None, &|_| {})
        .unwrap();
}

/// Two extracts that may not both be released (one of each version, a person's value changed
/// between them), both asked for before either was approved, approved at once, each approval
/// slow to commit: one is released, the other refused.
#[tokio::test]
async fn two_approvals_at_once_release_no_pair_a_check_refuses() {
    let w = world();
    let ask = |name: &str| veil_broker::ExtractRequest {
        dataset: "civil.people".parse().unwrap(),
        join: Vec::new(),
        purpose: "复核".into(),
        expires_at: time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400,
        name: name.into(),
        columns: vec!["person_id".into(), "district".into(), "subsidy".into()],
        hierarchies: Vec::new(),
        k: None,
        l: None,
        max_suppression: None,
    };
    let analyst = w.caller("civil-analyst");
    let civil = DepartmentId::new("civil").unwrap();
    let (first, _, _) = w.broker.request_extract(&analyst, civil.clone(), ask("first"), |_, _| None).await.unwrap();
    register_changed(&w, 7);
    let (second, _, _) = w.broker.request_extract(&analyst, civil, ask("second"), |_, _| None).await.unwrap();
    let approve = |id: String| {
        let broker = w.broker.clone();
        async move {
            let deciding = id.clone();
            let commit = move |c: &Catalog| {
                // Slower than the other approval's check.
                std::thread::sleep(std::time::Duration::from_millis(500));
                let steward = UserId::new("civil-steward").unwrap();
                c.decide_access_request(&deciding, &steward, veil_catalog::Transition::Approve, |_| None)
            };
            broker.release(&id, commit).await
        }
    };
    let (a, b) = tokio::join!(approve(first.id.clone()), approve(second.id.clone()));
    let refused = match (a, b) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (a, b) => panic!("one released and one refused, not {:?} and {:?}", a.map(|_| ()), b.map(|_| ())),
    };
    assert_eq!(refused.code(), "extract_isolates_people", "{}", refused.message());
}

/// An extract asked for with a follower is told its stages, in order, and nothing else (no
/// counts of the data's rows or generalizations).
#[tokio::test]
async fn an_extract_asked_for_tells_its_stages_in_order() {
    let w = world();
    let ask = veil_broker::ExtractRequest {
        dataset: "civil.people".parse().unwrap(),
        join: Vec::new(),
        purpose: "复核".into(),
        expires_at: time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400,
        name: "followed".into(),
        columns: vec!["person_id".into(), "district".into(), "subsidy".into()],
        hierarchies: Vec::new(),
        k: None,
        l: None,
        max_suppression: None,
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let stage = |s: veil_broker::ExtractStage| seen.lock().unwrap().push(s);
    let analyst = w.caller("civil-analyst");
    let civil = DepartmentId::new("civil").unwrap();
    w.broker.request_extract_followed(&analyst, civil, ask, |_, _| None, &stage).await.unwrap();
    use veil_broker::ExtractStage::{Building, Comparing};
    assert_eq!(*seen.lock().unwrap(), [Comparing, Building, Comparing]);
}

/// Registers `csv` as `civil.<name>` by civil's steward: about people (unit `person_id`, one row
/// a person) where `columns` names it, else about nobody; every column an attribute but those
/// `columns` tags.
fn register(w: &World, name: &str, csv: &str, columns: &[(&str, ColumnInput)]) {
    let about_people = columns.iter().any(|(c, _)| *c == "person_id");
    let mut all: BTreeMap<String, ColumnInput> =
        csv.lines().next().unwrap().split(',').map(|c| (c.to_owned(), column("attribute", None, None))).collect();
    all.extend(columns.iter().map(|(c, input)| ((*c).to_owned(), input.clone())));
    let spec = DatasetSpec::validate(MetadataInput {
        name: name.into(),
        department: "civil".into(),
        level: "L2".into(),
        description: String::new(),
        privacy_unit: about_people.then(|| "person_id".to_owned()),
        format: None,
        sheet: None,
        encoding: None,
        delimiter: None,
        columns: all,
        dp: DpInput::default(),
        confirm_changes: Vec::new(),
        one_row_per_person: about_people,
    })
    .unwrap();
    let file = w._dir.path().join(format!("{name}.csv"));
    std::fs::write(&file, csv).unwrap();
    w.catalog.register_dataset(&spec, &file, &UserId::new("civil-steward").unwrap(), |_, _| None, &|_| {}).unwrap();
}

#[tokio::test]
async fn a_code_table_keyed_by_zero_and_minus_zero_repeats_a_persons_row() {
    // Leak (a red team, 2026-12-08): a code table's float key holding 0 and -0 was measured
    // unique, so a join on it was taken to keep one row a person, while `=` meets both rows.
    // Through eight such tables one person at 0 was 256 rows counted as 256 people: a
    // condition singling them out was released, and its sum read their value exactly (60 of
    // 60 in one query). Both zeros are one value to the measurement now: the join repeats
    // rows, each person's are clamped to one, and one person is withheld.
    let w = world();
    let mut people = String::from("person_id,district,seq,z,income\n");
    for i in 0..PEOPLE {
        people.push_str(&format!("q{i:04},{},{},0.0,{}\n", ["A", "B", "C", "D"][i % 4], i / 4, i % 97 * 10));
    }
    let id = ColumnInput { linkable: true, ..column("identifier", None, None) };
    register(
        &w,
        "zeros",
        &people,
        &[
            ("person_id", id),
            ("district", column("quasi_identifier", None, None)),
            ("seq", column("quasi_identifier", Some("int64"), None)),
            ("z", column("attribute", Some("float64"), None)),
            ("income", column("sensitive", Some("int64"), Some((0.0, 1000.0)))),
        ],
    );
    let mut joins = String::new();
    for j in 1..=8 {
        register(&w, &format!("z{j}"), "k,v\n0.0,a\n-0.0,b\n", &[("k", column("attribute", Some("float64"), None))]);
        joins.push_str(&format!(" JOIN civil.z{j} j{j} ON p.z = j{j}.k"));
    }
    let ask = |condition: &str| {
        format!(
            "SELECT p.district, COUNT(*) AS n, SUM(p.income) AS total FROM civil.zeros p{joins}{condition} GROUP BY p.district"
        )
    };
    // One person a district: before, 256 "people", released with 256 times their income.
    let one = w.ask("civil-analyst", &ask(" WHERE p.seq = 7"), "aggregate", None).await.unwrap();
    assert!(counts_and_sums(&one).is_empty(), "one person released: {:?}", counts_and_sums(&one));
    // Everyone: sixty people a district, not 15,360.
    let all = w.ask("civil-analyst", &ask(""), "aggregate", None).await.unwrap();
    let counts = counts_and_sums(&all);
    assert_eq!(counts.len(), 4);
    assert!(counts.iter().all(|(n, _)| (*n - 60).abs() <= 10), "{counts:?}");
}
