//! Snapshots of the plans the guard rewrites, one per mode and shape, as DataFusion tests its
//! own optimizer rules: the SQL is planned, analyzed, checked and rewritten without a server,
//! and the rewritten plan's text is compared with `tests/snapshots/<case>.plan`.
//!
//! A failure shows both plans. After a deliberate change of a rewrite,
//! `VEIL_REGENERATE_GOLDEN=1 cargo test -p veil-guard --test rewritten_plans` writes the new
//! snapshots; review their diff before committing them.

#![allow(clippy::unwrap_used)] // tests: a failed fixture should fail loudly

mod common;

use std::path::PathBuf;

use veil_common::Mode;

use common::session;

/// (snapshot name, mode, exact aggregates, SQL)
const CASES: &[(&str, Mode, bool, &str)] = &[
    (
        "anonymized_groups",
        Mode::Aggregate,
        false,
        "SELECT district, count(*) AS n, sum(subsidy) AS total FROM civil.people WHERE district IN ('a', 'b') GROUP BY district",
    ),
    (
        "anonymized_join_people",
        Mode::Aggregate,
        false,
        "SELECT icd10, count(DISTINCT p.id) AS people, avg(cost) AS cost FROM civil.people p JOIN civil.visits v ON p.id = v.id GROUP BY icd10",
    ),
    (
        "anonymized_range_with_ladder",
        Mode::Aggregate,
        false,
        "SELECT district, count(*) AS n FROM civil.people WHERE birth_date >= DATE '1950-01-01' AND birth_date < DATE '2000-01-01' GROUP BY district",
    ),
    (
        "anonymized_range_carried_up",
        Mode::Aggregate,
        false,
        "WITH r AS (SELECT * FROM civil.people WHERE subsidy >= 0 AND subsidy < 500) SELECT d, count(*) AS n FROM (SELECT district AS d FROM r) y GROUP BY d",
    ),
    (
        // A key whose buckets have cells around them: grouped through `__veil_claimed`, the
        // year's column carried up from the CTE that computes it.
        "anonymized_bucket_claimed",
        Mode::Aggregate,
        false,
        "WITH r AS (SELECT district, date_part('year', birth_date) AS y FROM civil.people) SELECT district, y, count(*) AS n FROM r GROUP BY district, y",
    ),
    (
        // A sum that may be below zero: the contributions above zero and below ranked apart.
        "anonymized_signed_sum",
        Mode::Aggregate,
        false,
        "SELECT district, sum(balance) AS total, avg(balance) AS mean FROM civil.people GROUP BY district",
    ),
    (
        // A band of an integer column: its division made a floating-point one, so that the
        // band holds the rows its label says (integer division truncates toward zero).
        "anonymized_integer_band",
        Mode::Aggregate,
        false,
        "SELECT district, count(*) AS n FROM civil.people WHERE floor(subsidy / 500) = 0 GROUP BY district",
    ),
    (
        // A code table's column is an IN list of the people's values it looks up: each
        // (group, value) pair the query layer finds low-effect is left out through
        // `__veil_dropped(looked up p.district, …)`.
        "anonymized_code_table",
        Mode::Aggregate,
        false,
        "SELECT s.n, count(*) AS people FROM civil.people p JOIN civil.stops s ON p.district = s.district WHERE s.n = 3 GROUP BY s.n",
    ),
    (
        // A code table joined on a key measured unique: one row a person stays one, so no
        // person's rows are grouped first, and the counts of rows and people are one count.
        "anonymized_code_table_one_row",
        Mode::Aggregate,
        false,
        "SELECT d.region, count(*) AS n, avg(p.subsidy) AS s FROM civil.people p JOIN civil.districts d ON p.district = d.district GROUP BY d.region",
    ),
    (
        // A flag as a condition is the bucket `true` of the key on it: its condition is lifted
        // to the aggregate's input and decided by the claims (`__veil_claimed(admitted, …)`),
        // as the key's group would be, with no variant.
        "anonymized_flag_claimed",
        Mode::Aggregate,
        false,
        "SELECT district, count(*) AS n FROM civil.people WHERE alone GROUP BY district",
    ),
    (
        "exact_own_department",
        Mode::Aggregate,
        true,
        "SELECT district, count(*) AS n, sum(subsidy) AS total FROM civil.people WHERE district IN ('a', 'b') GROUP BY district",
    ),
    (
        "exact_about_nobody",
        Mode::Aggregate,
        false,
        "SELECT district, sum(n / 3) AS third FROM civil.stops GROUP BY district HAVING sum(n) > 2",
    ),
    (
        "dp_groups",
        Mode::Dp,
        false,
        "SELECT district, count(*) AS n, avg(subsidy) AS a FROM civil.people GROUP BY district",
    ),
    (
        "dp_join_people",
        Mode::Dp,
        false,
        "SELECT icd10, count(*) AS visits FROM civil.people p JOIN health.visits v ON p.id = v.id WHERE p.alone GROUP BY icd10",
    ),
];

fn snapshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.plan"))
}

#[tokio::test]
async fn rewritten_plans_match_their_snapshots() {
    let regenerate = std::env::var_os("VEIL_REGENERATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, mode, exact_aggregates, sql) in CASES {
        let (ctx, mut guard) = session().await;
        guard.mode = *mode;
        guard.exact_aggregates = *exact_aggregates;
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let analyzed = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).unwrap();
        let assessment = veil_guard::check(&analyzed, &guard).unwrap_or_else(|v| panic!("{name}: refused: {v}"));
        let rewritten = veil_guard::rewrite(analyzed, &guard, &assessment).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = format!("-- {sql}\n{}\n", rewritten.plan.display_indent());
        let path = snapshot(name);
        if regenerate {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != text {
            failures.push(format!("{name} ({}):\n--- expected\n{expected}\n--- got\n{text}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "rewritten plans differ from their snapshots (VEIL_REGENERATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// Where a version's rows were capped when it was registered, a capped scan reads the stored
/// copy (no ranking of rows while the query runs, so its work does not grow with one person's
/// rows); where nobody has more rows than the cap, nothing is capped; where the copy is
/// declared but not opened, the rows are capped while the query runs (never uncapped).
#[tokio::test]
async fn a_capped_scan_reads_the_stored_copy_where_there_is_one() {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::{MemTable, provider_as_source};
    use datafusion::logical_expr::LogicalPlan;
    use std::sync::Arc;
    use veil_guard::CapAt;

    let sql = "SELECT icd10, count(*) AS visits FROM civil.people p JOIN civil.visits v ON p.id = v.id GROUP BY icd10";
    let fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("icd10", DataType::Utf8, false),
        Field::new("cost", DataType::Float64, false),
    ];
    let copy = provider_as_source(Arc::new(MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]]).unwrap()));
    for mode in [Mode::Dp, Mode::Aggregate] {
        for (cap_at, opened) in [(CapAt::Stored, true), (CapAt::Within, false), (CapAt::Stored, false)] {
            let (ctx, mut guard) = session().await;
            guard.mode = mode;
            let key = ("civil".to_owned(), "visits".to_owned());
            guard.datasets.get_mut(&key).unwrap().capped = cap_at;
            if opened {
                guard.capped_copies.0.insert(key, Arc::clone(&copy));
            }
            let state = ctx.state();
            let plan = state.create_logical_plan(sql).await.unwrap();
            let analyzed = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).unwrap();
            let assessment = veil_guard::check(&analyzed, &guard).unwrap();
            let rewritten = veil_guard::rewrite(analyzed, &guard, &assessment).unwrap().plan;
            let (mut scans, mut of_copy, mut ranked) = (0usize, 0usize, false);
            rewritten
                .apply_with_subqueries(|node| {
                    if let LogicalPlan::TableScan(scan) = node
                        && scan.table_name.table() == "visits"
                    {
                        scans += 1;
                        of_copy += usize::from(Arc::ptr_eq(&scan.source, &copy));
                    }
                    ranked |= matches!(node, LogicalPlan::Window(_));
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
            let shown = rewritten.display_indent();
            match (cap_at, opened) {
                (CapAt::Stored, true) => {
                    assert_eq!((scans, of_copy), (1, 1), "{mode:?}: one scan, of the copy:\n{shown}")
                }
                (CapAt::Within, _) => assert_eq!((scans, of_copy), (1, 0), "{mode:?}: nothing capped:\n{shown}"),
                _ => assert!(scans > 1 && of_copy == 0 && ranked, "{mode:?}: capped while it runs:\n{shown}"),
            }
        }
    }
}
