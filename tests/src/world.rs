//! A small two-department world with known ground truth, for query and attack tests.
//!
//! `civil.residents` (L3): 200 people. District 甲区 has 120 residents born in 1950, 乙区 75
//! born in 1955, 丙区 5 born in 1960: 丙区 is below every threshold (k = 10 at L3).
//! `health.visits` (L3): every resident of 甲区 has 3 visits, of 乙区 1, and of 丙区 12 (so
//! 丙区 has 60 visit rows but only 5 people: the join-amplification case).
//! The civil analyst holds an approved grant on `health.visits` for aggregate, and an approved
//! extract of it, `extracts.visits` (the pseudonym and the cost; every resident with three visits
//! has both diagnoses, so the diagnosis is not diverse enough to release), for deidentified.
//! In dp mode, `health.visits` lets a person count in 2 groups with 3 rows each.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::TestServer;

/// One resident, as generated.
#[derive(Debug, Clone)]
pub struct Resident {
    /// 18-character id.
    pub person_id: String,
    /// Name.
    pub name: String,
    /// District.
    pub district: &'static str,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Monthly subsidy.
    pub subsidy: i64,
}

/// One visit.
#[derive(Debug, Clone)]
pub struct Visit {
    /// Who.
    pub person_id: String,
    /// Diagnosis code.
    pub icd10: &'static str,
    /// Cost.
    pub cost: i64,
}

/// The world and its tokens.
pub struct World {
    /// The server.
    pub s: TestServer,
    /// Steward of civil affairs.
    pub civil_steward: String,
    /// Analyst of civil affairs, with grants on health.visits.
    pub civil_analyst: String,
    /// A second civil analyst, without grants.
    pub civil_analyst_2: String,
    /// Analyst of health.
    pub health_analyst: String,
    /// Auditor.
    pub auditor: String,
    /// Ground truth.
    pub residents: Vec<Resident>,
    /// Ground truth.
    pub visits: Vec<Visit>,
}

/// Generates the residents.
pub fn residents() -> Vec<Resident> {
    let mut out = Vec::new();
    for (district, count, year) in [("甲区", 120, 1950), ("乙区", 75, 1955), ("丙区", 5, 1960)] {
        for _ in 0..count {
            let i = out.len();
            out.push(Resident {
                person_id: format!("110101{year}{:02}{:02}{:04}", i % 12 + 1, i % 28 + 1, i),
                name: format!("居民{i}"),
                district,
                birth_date: format!("{year}-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
                subsidy: 100 + (i as i64 % 7) * 50,
            });
        }
    }
    out
}

/// Generates the visits.
pub fn visits(residents: &[Resident]) -> Vec<Visit> {
    let mut out = Vec::new();
    for (i, r) in residents.iter().enumerate() {
        let n = match r.district {
            "甲区" => 3,
            "乙区" => 1,
            _ => 12,
        };
        for j in 0..n {
            out.push(Visit {
                person_id: r.person_id.clone(),
                icd10: if (i + j) % 2 == 0 { "I10" } else { "E11" },
                cost: 200 + ((i * 7 + j * 13) % 10) as i64 * 30,
            });
        }
    }
    out
}

/// The residents as the civil steward uploads them.
pub fn residents_csv(rows: &[Resident]) -> Vec<u8> {
    let mut csv = String::from("person_id,name,phone,district,birth_date,living_alone,subsidy\n");
    for (i, r) in rows.iter().enumerate() {
        csv.push_str(&format!(
            "{},{},1380000{:04},{},{},{},{}\n",
            r.person_id,
            r.name,
            i,
            r.district,
            r.birth_date,
            i % 3 == 0,
            r.subsidy
        ));
    }
    csv.into_bytes()
}

fn visits_csv(rows: &[Visit]) -> Vec<u8> {
    let mut csv = String::from("person_id,icd10,cost\n");
    for v in rows {
        csv.push_str(&format!("{},{},{}\n", v.person_id, v.icd10, v.cost));
    }
    csv.into_bytes()
}

/// The metadata `department` registers the visits with: several rows per person.
fn visits_metadata(department: &str) -> Value {
    json!({
        "name": "visits", "department": department, "level": "L3", "privacy_unit": "person_id",
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true},
            "icd10": {"tag": "sensitive"},
            "cost": {"tag": "sensitive", "bounds": [0, 5000]}
        },
        "dp": {"max_groups": 2, "max_rows": 3}
    })
}

/// The metadata civil affairs registers the residents with, under `name`: a registry, one row
/// per person.
pub fn residents_metadata(name: &str) -> Value {
    json!({
        "name": name, "department": "civil", "level": "L3", "privacy_unit": "person_id", "one_row_per_person": true,
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true},
            "name": {"tag": "identifier"},
            "phone": {"tag": "identifier", "type": "string"},
            "district": {"tag": "quasi_identifier"},
            "birth_date": {"tag": "quasi_identifier", "type": "date", "generalize": "year"},
            "living_alone": {"tag": "attribute"},
            "subsidy": {"tag": "sensitive", "bounds": [0, 1000]}
        }
    })
}

/// Builds the world.
pub async fn world() -> World {
    world_on(TestServer::start().await).await
}

/// Builds the world on a fresh server.
pub async fn world_on(s: TestServer) -> World {
    s.department("civil", "民政局").await;
    s.department("health", "卫健委").await;
    let civil_steward = s.user("civil-steward", Some("civil"), &["steward"]).await;
    let health_steward = s.user("health-steward", Some("health"), &["steward"]).await;
    let civil_analyst = s.user("civil-analyst", Some("civil"), &["analyst"]).await;
    let civil_analyst_2 = s.user("civil-analyst-2", Some("civil"), &["analyst"]).await;
    let health_analyst = s.user("health-analyst", Some("health"), &["analyst"]).await;
    let auditor = s.user("auditor", None, &["auditor"]).await;
    let residents = residents();
    let visits = visits(&residents);
    let meta = residents_metadata("residents");
    let (status, body) = s.upload(&civil_steward, &meta, residents_csv(&residents)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s.upload(&health_steward, &visits_metadata("health"), visits_csv(&visits)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for mode in ["aggregate", "deidentified"] {
        let mut request =
            json!({"dataset": "health.visits", "mode": mode, "purpose": "独居老人主动关怀", "expires_at": expires});
        if mode == "deidentified" {
            request["extract"] = json!({"name": "visits", "columns": ["person_id", "cost"]});
        }
        let (status, body) = s.post("/v1/access-requests", &civil_analyst, request).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, body) =
            s.post(&format!("/v1/access-requests/{id}/approve"), &health_steward, json!({"reason": "ok"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    World { s, civil_steward, civil_analyst, civil_analyst_2, health_analyst, auditor, residents, visits }
}

/// Every test of the world is also a test of what the server wrote: at its end (unless it failed
/// already), no identifier value of the world's people (18-character ids, names) appears in the
/// server's log, captured at trace level in JSON, nor in any audit record outside the analyst's
/// own words: the SQL text, and a refused query's reason, which quotes the condition it refuses
/// (an attack types an id or a name into a query, and the record keeps the query).
impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let ids: Vec<&str> = self.residents.iter().map(|r| r.person_id.as_str()).collect();
        let names: std::collections::HashSet<&str> = self.residents.iter().map(|r| r.name.as_str()).collect();
        let search = |text: &str, place: &str| {
            if let Some(id) = ids.iter().find(|id| text.contains(**id)) {
                panic!("a person's id ({id}) in {place}");
            }
            let tokens = text.split(|c: char| !c.is_alphanumeric());
            if let Some(name) = tokens.into_iter().find(|t| names.contains(t)) {
                panic!("a person's name ({name}) in {place}");
            }
        };
        let log = crate::logs::captured();
        // Veil's own debug lines are there: the capture is on and the level is not cut.
        assert!(log.contains(r#""level":"DEBUG""#), "the server's debug lines are missing from the captured log");
        search(&log, "the server's log");
        for record in self.s.audit_records() {
            let mut entry = record.entry;
            if entry.sql.take().is_some() && entry.decision == "denied" {
                entry.detail = None;
            }
            search(&serde_json::to_string(&entry).unwrap_or_default(), "an audit record");
        }
    }
}

impl World {
    /// Registers `civil.visits`: the visits again, as civil affairs' own dataset about the same
    /// people. Aggregate mode over people reads one department's datasets per query, so its
    /// joins of people are tested on these.
    pub async fn civil_visits(&self) {
        let (status, body) =
            self.s.upload(&self.civil_steward, &visits_metadata("civil"), visits_csv(&self.visits)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// `POST /v1/query` as `token`.
    pub async fn query(&self, token: &str, mode: &str, sql: &str) -> (StatusCode, Value) {
        self.s.post("/v1/query", token, json!({"sql": sql, "mode": mode})).await
    }

    /// An aggregate query as the civil analyst that must succeed.
    pub async fn ok(&self, sql: &str) -> Value {
        let (status, body) = self.query(&self.civil_analyst, "aggregate", sql).await;
        assert_eq!(status, StatusCode::OK, "{sql}: {body}");
        body
    }

    /// How many groups an answer withheld, from its audit record: the answer itself never
    /// says (the number would tell whether a group of one person exists).
    pub fn withheld(&self, body: &Value) -> Option<u64> {
        assert!(body.get("suppressed_groups").is_none(), "an answer tells how many groups it withheld: {body}");
        let reference = body["audit_id"].as_str()?;
        self.s
            .audit_records()
            .into_iter()
            .find(|r| r.entry.request_id.as_deref() == Some(reference))?
            .entry
            .suppressed_groups
    }

    /// An aggregate query as the civil analyst that must be refused with `code`.
    pub async fn refused(&self, sql: &str, status: StatusCode, code: &str) -> Value {
        self.refused_in("aggregate", sql, status, code).await
    }

    /// A query in `mode` as the civil analyst that must be refused with `code`.
    pub async fn refused_in(&self, mode: &str, sql: &str, status: StatusCode, code: &str) -> Value {
        let (got, body) = self.query(&self.civil_analyst, mode, sql).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{sql}: {body}");
        body
    }
}
