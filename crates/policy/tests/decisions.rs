//! Decisions over the real files in `policies/`, as a table: subject, datasets with levels, mode
//! → allowed or denied, and the rule that decided.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use veil_common::{DatasetRef, DepartmentId, Level, Mode, Role, UserId};
use veil_policy::{
    CasbinPolicy, DEFAULT_MODEL, DEMO_POLICY, DatasetMeta, Grant, Membership, PolicyEngine, PolicyFiles, Subject,
};

const NOW: i64 = 1_800_000_000;

fn subject(user: &str, department: &str, role: Role) -> Subject {
    Subject {
        user: UserId::new(user).unwrap(),
        department: Some(DepartmentId::new(department).unwrap()),
        roles: vec![role],
    }
}

fn members() -> Vec<Membership> {
    let mut out = Vec::new();
    for dept in ["civil", "health", "hrss", "hotline"] {
        for (suffix, role) in [("analyst", Role::Analyst), ("steward", Role::Steward)] {
            out.push(Membership {
                user: UserId::new(format!("{dept}-{suffix}")).unwrap(),
                department: DepartmentId::new(dept).unwrap(),
                role,
            });
        }
    }
    out
}

fn ds(name: &str, level: Level) -> DatasetMeta {
    DatasetMeta { dataset: name.parse().unwrap(), level }
}

fn grant(user: &str, dataset: &str, mode: Mode, expires_at: i64) -> Grant {
    Grant {
        id: "g1".into(),
        user: UserId::new(user).unwrap(),
        dataset: dataset.parse::<DatasetRef>().unwrap(),
        mode,
        expires_at,
    }
}

fn demo(grants: Vec<Grant>) -> CasbinPolicy {
    CasbinPolicy::from_text(DEFAULT_MODEL, DEMO_POLICY, members(), grants, NOW).unwrap()
}

/// (who, department, role, datasets, mode, allowed, rule of the first denial or of the first check)
type Row = (&'static str, &'static str, Role, Vec<DatasetMeta>, Mode, bool, &'static str);

fn check_table(engine: &CasbinPolicy, rows: Vec<Row>) {
    for (user, dept, role, datasets, mode, allowed, rule) in rows {
        let names: Vec<String> = datasets.iter().map(|d| format!("{}@{}", d.dataset, d.level)).collect();
        let d = engine.decide(&subject(user, dept, role), &datasets, mode, NOW);
        let decided_by = d.first_denial().or(d.checks.first()).map(|c| c.rule).unwrap_or("none");
        assert_eq!(
            (d.allowed, decided_by),
            (allowed, rule),
            "{user} on {names:?} in {}: {:?}",
            mode.as_str(),
            d.checks
        );
    }
}

#[test]
fn the_demo_policy_decides_as_written() {
    use Level::*;
    use Mode::*;
    check_table(
        &demo(vec![]),
        vec![
            // Own department: everything, even CORE.
            ("civil-analyst", "civil", Role::Analyst, vec![ds("civil.elderly", L3)], Aggregate, true, "policy_allow"),
            (
                "civil-analyst",
                "civil",
                Role::Analyst,
                vec![ds("civil.secret", Core)],
                Deidentified,
                true,
                "policy_allow",
            ),
            // Health on civil affairs: aggregates up to L2, dp up to L3.
            (
                "health-analyst",
                "health",
                Role::Analyst,
                vec![ds("civil.registry", L2)],
                Aggregate,
                true,
                "policy_allow",
            ),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.elderly", L3)], Dp, true, "policy_allow"),
            (
                "health-analyst",
                "health",
                Role::Analyst,
                vec![ds("civil.elderly", L3)],
                Aggregate,
                false,
                "grant_required",
            ),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.elderly", L4)], Dp, false, "policy_deny"),
            // Civil affairs on health visits (L4): dp only.
            ("civil-analyst", "civil", Role::Analyst, vec![ds("health.visits", L4)], Dp, true, "policy_allow"),
            ("civil-analyst", "civil", Role::Analyst, vec![ds("health.visits", L4)], Aggregate, false, "level_ceiling"),
            (
                "civil-analyst",
                "civil",
                Role::Analyst,
                vec![ds("health.visits", L4)],
                Deidentified,
                false,
                "level_ceiling",
            ),
            // No line at all: denied by default.
            ("hrss-analyst", "hrss", Role::Analyst, vec![ds("health.visits", L4)], Dp, false, "policy_deny"),
            // The deny line closes civil.elderly to the hotline department.
            (
                "hotline-analyst",
                "hotline",
                Role::Analyst,
                vec![ds("civil.elderly", L2)],
                Aggregate,
                false,
                "policy_deny",
            ),
            // Only analysts query, whatever a line says (the `*` subject lines included).
            ("civil-steward", "civil", Role::Steward, vec![ds("civil.elderly", L3)], Aggregate, false, "not_analyst"),
            (
                "hotline-steward",
                "hotline",
                Role::Steward,
                vec![ds("hotline.tickets", L2)],
                Aggregate,
                false,
                "not_analyst",
            ),
            // 就高从严: judged at the strictest level, every dataset needs permission at it.
            (
                "health-analyst",
                "health",
                Role::Analyst,
                vec![ds("hotline.tickets", L2)],
                Aggregate,
                true,
                "policy_allow",
            ),
            (
                "health-analyst",
                "health",
                Role::Analyst,
                vec![ds("hotline.tickets", L2), ds("civil.elderly", L3)],
                Aggregate,
                false,
                "grant_required",
            ),
            (
                "hrss-analyst",
                "hrss",
                Role::Analyst,
                vec![ds("hrss.social_insurance", L3), ds("hotline.tickets", L2)],
                Dp,
                true,
                "policy_allow",
            ),
            (
                "hrss-analyst",
                "hrss",
                Role::Analyst,
                vec![ds("hrss.social_insurance", L4), ds("hotline.tickets", L2)],
                Dp,
                false,
                "policy_deny",
            ),
        ],
    );
}

#[test]
fn no_policy_line_widens_the_level_ceiling() {
    use Level::*;
    use Mode::*;
    let open = "p, *, *, *, *, *, allow\n";
    let engine = CasbinPolicy::from_text(DEFAULT_MODEL, open, members(), vec![], NOW).unwrap();
    check_table(
        &engine,
        vec![
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.core", Core)], Dp, false, "level_ceiling"),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.x", L4)], Aggregate, false, "level_ceiling"),
            (
                "health-analyst",
                "health",
                Role::Analyst,
                vec![ds("civil.x", Important)],
                Deidentified,
                false,
                "level_ceiling",
            ),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.x", Important)], Dp, false, "grant_required"),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.x", L3)], Deidentified, false, "grant_required"),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.x", L3)], Dp, true, "policy_allow"),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.x", L2)], Deidentified, true, "policy_allow"),
        ],
    );
}

#[test]
fn grants_allow_until_they_expire_and_deny_lines_still_win() {
    use Level::*;
    use Mode::*;
    let grants = vec![
        grant("health-analyst", "civil.elderly", Aggregate, NOW + 60),
        grant("hotline-analyst", "civil.elderly", Dp, NOW + 60),
        grant("health-analyst", "civil.important", Dp, NOW + 60),
    ];
    let engine = demo(grants);
    check_table(
        &engine,
        vec![
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.elderly", L3)], Aggregate, true, "grant"),
            (
                "health-analyst",
                "health",
                Role::Analyst,
                vec![ds("civil.elderly", L3)],
                Deidentified,
                false,
                "grant_required",
            ),
            ("health-analyst", "health", Role::Analyst, vec![ds("civil.important", Important)], Dp, true, "grant"),
            ("hotline-analyst", "hotline", Role::Analyst, vec![ds("civil.elderly", L3)], Dp, false, "policy_deny"),
            // Another analyst of the same department does not inherit the grant.
            (
                "health-analyst2",
                "health",
                Role::Analyst,
                vec![ds("civil.elderly", L3)],
                Aggregate,
                false,
                "grant_required",
            ),
        ],
    );
    // A minute later the grant has expired, with nobody acting.
    let later = engine.decide(
        &subject("health-analyst", "health", Role::Analyst),
        &[ds("civil.elderly", L3)],
        Aggregate,
        NOW + 61,
    );
    assert!(!later.allowed);
    assert_eq!(later.checks[0].rule, "grant_required");
    // Revocation: the grants are replaced without it.
    engine.set_subjects(members(), vec![], NOW).unwrap();
    let revoked = engine.decide(
        &subject("health-analyst", "health", Role::Analyst),
        &[ds("civil.important", Important)],
        Dp,
        NOW,
    );
    assert!(!revoked.allowed);
}

#[test]
fn a_malformed_reload_keeps_the_policy_in_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.conf"), DEFAULT_MODEL).unwrap();
    std::fs::write(dir.path().join("policy.csv"), DEMO_POLICY).unwrap();
    let engine = CasbinPolicy::from_files(PolicyFiles::in_dir(dir.path()), members(), vec![], NOW).unwrap();
    let who = subject("health-analyst", "health", Role::Analyst);
    let hotline = [ds("hotline.tickets", Level::L2)];
    assert!(engine.decide(&who, &hotline, Mode::Aggregate, NOW).allowed);

    std::fs::write(
        dir.path().join("policy.csv"),
        "p, analyst, *, @own, *, *, allow\np, analyst, *, hotline.*, L2, everything, allow\n",
    )
    .unwrap();
    let err = engine.reload(NOW).unwrap_err();
    assert!(err.to_string().contains("policy.csv line 2"), "{err}");
    assert!(engine.decide(&who, &hotline, Mode::Aggregate, NOW).allowed, "the old policy stays in force");

    std::fs::write(dir.path().join("model.conf"), "[request_definition]\nr = sub\n").unwrap();
    assert!(engine.reload(NOW).is_err(), "a broken model is refused");
    assert!(engine.decide(&who, &hotline, Mode::Aggregate, NOW).allowed);

    std::fs::write(dir.path().join("model.conf"), DEFAULT_MODEL).unwrap();
    std::fs::write(dir.path().join("policy.csv"), "p, analyst, *, @own, *, *, allow\n").unwrap();
    assert_eq!(engine.reload(NOW).unwrap(), 1);
    assert!(!engine.decide(&who, &hotline, Mode::Aggregate, NOW).allowed, "the new policy is in force");
}

#[test]
fn an_empty_query_is_denied() {
    assert!(!demo(vec![]).decide(&subject("civil-analyst", "civil", Role::Analyst), &[], Mode::Aggregate, NOW).allowed);
}

#[test]
fn exact_aggregates_need_a_line_that_names_them_and_stay_in_the_department() {
    use Level::*;
    let civil = subject("civil-analyst", "civil", Role::Analyst);
    let health = subject("health-analyst", "health", Role::Analyst);
    let people = [ds("civil.elderly", L3)];
    // The demo policy allows every mode on the own department (`*`), which is not this.
    assert!(!demo(vec![]).exact_aggregates(&civil, &people, NOW));

    let policy = format!(
        "{DEMO_POLICY}\np, analyst, civil, @own, L3, exact_aggregates, allow\np, analyst, health, civil.*, *, exact_aggregates, allow\n"
    );
    let engine = CasbinPolicy::from_text(DEFAULT_MODEL, &policy, members(), vec![], NOW).unwrap();
    assert!(engine.exact_aggregates(&civil, &people, NOW));
    // Above the line's level, or a dataset of another department among them: no.
    assert!(!engine.exact_aggregates(&civil, &[ds("civil.registry", L4)], NOW));
    assert!(!engine.exact_aggregates(&civil, &[ds("civil.elderly", L3), ds("hotline.tickets", L2)], NOW));
    // Another department, whatever a line says: never.
    assert!(!engine.exact_aggregates(&health, &people, NOW));
    assert!(!engine.exact_aggregates(&subject("civil-steward", "civil", Role::Steward), &people, NOW));
    // A deny line of every mode closes it.
    let denied = format!("{policy}p, *, civil, civil.elderly, *, *, deny\n");
    let engine = CasbinPolicy::from_text(DEFAULT_MODEL, &denied, members(), vec![], NOW).unwrap();
    assert!(!engine.exact_aggregates(&civil, &people, NOW));
    assert!(engine.exact_aggregates(&civil, &[ds("civil.pension", L2)], NOW));
}

/// A refusal for a missing grant names the dataset's own level and the level it was read at
/// when the query's strictest dataset raised it (an L2 dataset was called "L3 data" under 就高从严),
/// and says how to ask for access.
#[test]
fn a_missing_grant_names_both_levels_and_how_to_ask() {
    let engine = demo(vec![]);
    let health = subject("health-analyst", "health", Role::Analyst);
    let d = engine.decide(
        &health,
        &[ds("hotline.tickets", Level::L2), ds("civil.elderly", Level::L3)],
        Mode::Aggregate,
        NOW,
    );
    let denial = d.first_denial().unwrap();
    assert_eq!(denial.rule, "grant_required");
    assert!(denial.reason.contains("L2 data of another department, read at L3"), "{}", denial.reason);
    assert!(denial.reason.contains("POST /v1/access-requests"), "{}", denial.reason);
    let alone = engine.decide(&health, &[ds("civil.elderly", Level::L3)], Mode::Aggregate, NOW);
    let reason = &alone.first_denial().unwrap().reason;
    assert!(reason.starts_with("L3 data of another department in aggregate mode"), "{reason}");
}
