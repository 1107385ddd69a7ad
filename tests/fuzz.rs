//! Generated queries, seeded: a few thousand over the three modes, from a grammar that mixes the
//! shapes each mode admits with what it refuses (identifiers, complements, subqueries, unions,
//! windows, casts, division by zero, overflow, functions, malformed SQL). Whatever comes back:
//! no 5xx, every query has exactly one audit record, and no resident's id or name is in any
//! answer (the world's own check adds: nor in any log line or audit record).

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use veil_tests::world::world;

/// Queries per mode.
const PER_MODE: usize = 700;

fn pick<'a>(rng: &mut impl Rng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or("")
}

/// A query of a shape `mode` admits, varied in its keys, conditions and aggregates.
fn admitted(rng: &mut impl Rng, mode: &str) -> String {
    let key = pick(rng, &["district", "date_trunc('year', birth_date)", "living_alone", "floor(subsidy / 100) * 100"]);
    let condition = pick(
        rng,
        &[
            "",
            " WHERE district = '甲区'",
            " WHERE living_alone",
            " WHERE subsidy >= 0 AND subsidy < 500",
            " WHERE district IN ('甲区', '丙区')",
            " WHERE birth_date >= DATE '1950-01-01' AND birth_date < DATE '1960-01-01'",
        ],
    );
    match mode {
        "deidentified" => pick(
            rng,
            &[
                "SELECT * FROM extracts.visits LIMIT 5",
                "SELECT count(*), avg(cost), max(cost) FROM extracts.visits",
                "SELECT cost, count(*) FROM extracts.visits GROUP BY cost ORDER BY 2 DESC",
                "SELECT a.person_id FROM extracts.visits a JOIN extracts.visits b ON a.person_id = b.person_id LIMIT 3",
            ],
        )
        .to_owned(),
        _ => {
            let aggregate = pick(rng, &["count(*)", "count(DISTINCT person_id)", "sum(subsidy)", "avg(subsidy)"]);
            match rng.random_range(0..4) {
                0 => "SELECT icd10, count(DISTINCT person_id) AS a FROM health.visits GROUP BY icd10".to_owned(),
                1 => format!(
                    "SELECT r.district, count(*) AS a FROM civil.residents r JOIN health.visits v ON r.person_id = v.person_id{} GROUP BY r.district",
                    condition.replace("district", "r.district").replace("living_alone", "r.living_alone")
                ),
                _ => format!("SELECT {key}, {aggregate} AS a FROM civil.residents{condition} GROUP BY {key}"),
            }
        }
    }
}

/// One query of the grammar: an admitted shape, or one mixing what is admitted with what is not.
fn query(rng: &mut impl Rng, mode: &str) -> String {
    if rng.random_bool(0.4) {
        return admitted(rng, mode);
    }
    let table = if mode == "deidentified" {
        pick(rng, &["extracts.visits", "extracts.visits", "health.visits", "extracts.nothing"])
    } else {
        pick(rng, &["civil.residents", "civil.residents", "health.visits", "audit.events", "civil.nothing"])
    };
    let column = |rng: &mut rand_chacha::ChaCha8Rng| -> &'static str {
        pick(
            rng,
            &[
                "district",
                "subsidy",
                "birth_date",
                "living_alone",
                "person_id",
                "name",
                "phone",
                "icd10",
                "cost",
                "nosuch",
            ],
        )
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rng.random());
    let aggregate = match rng.random_range(0..14) {
        0 => "count(*)".to_owned(),
        1 => "count(DISTINCT person_id)".to_owned(),
        2 => format!("sum({})", column(&mut rng)),
        3 => format!("avg({})", column(&mut rng)),
        4 => format!("min({})", column(&mut rng)),
        5 => format!("count({})", column(&mut rng)),
        6 => "sum(subsidy) FILTER (WHERE district = '甲区')".to_owned(),
        7 => "sum(CASE WHEN subsidy > 500 THEN 1 ELSE 0 END)".to_owned(),
        8 => format!("sum(subsidy * subsidy / {})", rng.random_range(-1..3)),
        9 => "sum(CAST(subsidy AS BIGINT) * 9223372036854775807)".to_owned(),
        10 => format!("{} / 0", column(&mut rng)),
        11 => "approx_percentile_cont(subsidy, 0.5)".to_owned(),
        12 => format!("upper({})", column(&mut rng)),
        _ => column(&mut rng).to_owned(),
    };
    let key = match rng.random_range(0..8) {
        0 => Some("district".to_owned()),
        1 => Some("date_trunc('year', birth_date)".to_owned()),
        2 => Some("floor(subsidy / 100)".to_owned()),
        3 => Some("substr(district, 1, 1)".to_owned()),
        4 => Some(column(&mut rng).to_owned()),
        5 => Some("living_alone".to_owned()),
        _ => None,
    };
    let condition = match rng.random_range(0..16) {
        0 => Some("district = '甲区'".to_owned()),
        1 => Some(format!(
            "subsidy >= {} AND subsidy < {}",
            rng.random_range(0..10) * 100,
            rng.random_range(1..12) * 100
        )),
        2 => Some("birth_date >= DATE '1950-01-01' AND birth_date < DATE '1951-01-01'".to_owned()),
        3 => Some("birth_date <= DATE '1950-06-15'".to_owned()),
        4 => Some("district <> '丙区'".to_owned()),
        5 => Some("NOT living_alone".to_owned()),
        6 => Some("district IN ('甲区', '乙区')".to_owned()),
        7 => Some("name LIKE '居民1%'".to_owned()),
        8 => Some("phone IS NULL".to_owned()),
        9 => Some("district = '甲区' OR subsidy > 900".to_owned()),
        10 => Some(format!("person_id IN (SELECT person_id FROM {table})")),
        11 => Some("subsidy / (subsidy - 500) > 1".to_owned()),
        12 => Some(format!("{} = {}", column(&mut rng), rng.random_range(-5..5))),
        _ => None,
    };
    let mut sql = match &key {
        Some(k) => format!("SELECT {k}, {aggregate} AS a FROM {table}"),
        None => format!("SELECT {aggregate} AS a FROM {table}"),
    };
    if rng.random_bool(0.15) {
        sql.push_str(" r JOIN health.visits v ON r.person_id = v.person_id");
    }
    if let Some(c) = condition {
        sql.push_str(&format!(" WHERE {c}"));
    }
    if let Some(k) = &key {
        sql.push_str(&format!(" GROUP BY {k}"));
        if rng.random_bool(0.2) {
            sql.push_str(" HAVING count(*) > 3");
        }
    }
    match rng.random_range(0..10) {
        0 => sql = format!("SELECT * FROM ({sql}) t ORDER BY 1 LIMIT {}", rng.random_range(0..5)),
        1 => sql = format!("{sql} UNION ALL SELECT 1, 2"),
        2 => sql = format!("SELECT a, sum(a) OVER () FROM ({sql}) t"),
        3 => sql = format!("WITH t AS ({sql}) SELECT * FROM t"),
        4 => {
            // Cut at a character boundary.
            let mut at = rng.random_range(0..sql.len().max(1));
            while !sql.is_char_boundary(at) {
                at -= 1;
            }
            sql.truncate(at);
        }
        5 => sql = format!("EXPLAIN {sql}"),
        _ => {}
    }
    sql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_never_fail_the_server_are_all_audited_and_name_nobody() {
    let w = world().await;
    let before = w.s.audit_records().len();
    let secrets: Vec<&str> = w.residents.iter().flat_map(|r| [r.person_id.as_str(), r.name.as_str()]).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let (mut sent, mut answered) = (0usize, 0usize);
    for mode in ["aggregate", "dp", "deidentified"] {
        for _ in 0..PER_MODE {
            let sql = query(&mut rng, mode);
            let mut body = json!({"sql": sql, "mode": mode});
            if mode == "dp" {
                body["epsilon"] = json!(rng.random_range(0.001..0.01));
            }
            if rng.random_bool(0.1) {
                body["dry_run"] = json!(true);
            }
            let (status, answer) = w.s.post("/v1/query", &w.civil_analyst, body).await;
            sent += 1;
            assert!(!status.is_server_error(), "{mode}: {sql}: {status} {answer}");
            answered += usize::from(status.is_success());
            let text = answer.to_string();
            // A refusal may quote the analyst's own SQL: only what the SQL does not hold counts.
            if let Some(found) = secrets.iter().find(|s| text.contains(**s) && !sql.contains(**s)) {
                panic!("{mode}: {sql}: the answer names a resident ({found}): {text}");
            }
        }
    }
    // One record per query, whatever its outcome (the auditor's table included).
    let records = w.s.audit_records();
    let queries =
        records[before..].iter().filter(|r| matches!(r.entry.action.as_str(), "query" | "audit.query")).count();
    assert_eq!(queries, sent, "{sent} queries, {queries} records");
    assert!(answered > sent / 10, "only {answered} of {sent} answered: the grammar tests refusals only");
}
