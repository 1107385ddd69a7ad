//! Golden queries: every line of `golden/queries.golden` through the real query path, with the
//! decision (and for refusals, the rule) it must get.
//!
//! After a deliberate change of the guard, `VEIL_REGENERATE_GOLDEN=1 cargo test --test golden`
//! writes the decisions the queries get now into the file (comments kept); review its diff.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use veil_tests::world::world;

#[tokio::test]
async fn golden_queries_get_their_recorded_decisions() {
    let w = world().await;
    let text = include_str!("golden/queries.golden");
    let mut failures = Vec::new();
    let mut count = 0;
    let mut regenerated = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            regenerated.push_str(raw);
            regenerated.push('\n');
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (mode, expected, sql) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let (status, body) = w.query(&w.civil_analyst, mode, sql).await;
        let got = if status.is_success() { "ok" } else { body["error"]["code"].as_str().unwrap_or("?") };
        if got != expected {
            failures.push(format!("{mode} {sql}\n  expected {expected}, got {got}: {body}"));
        }
        regenerated.push_str(&format!("{mode} {got} {sql}\n"));
        count += 1;
    }
    if std::env::var_os("VEIL_REGENERATE_GOLDEN").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/queries.golden");
        std::fs::write(path, regenerated).unwrap();
        return;
    }
    assert!(count >= 40, "the golden file lost its queries");
    assert!(failures.is_empty(), "{} of {count} golden queries differ:\n{}", failures.len(), failures.join("\n"));
}
