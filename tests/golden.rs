//! Golden queries: every line of `golden/queries.golden` through the real query path, with the
//! decision (and for refusals, the rule) it must get.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use veil_tests::world::world;

#[tokio::test]
async fn golden_queries_get_their_recorded_decisions() {
    let w = world().await;
    let text = include_str!("golden/queries.golden");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut parts = line.splitn(3, ' ');
        let (mode, expected, sql) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let (status, body) = w.query(&w.civil_analyst, mode, sql).await;
        let got = if status.is_success() { "ok" } else { body["error"]["code"].as_str().unwrap_or("?") };
        if got != expected {
            failures.push(format!("{mode} {sql}\n  expected {expected}, got {got}: {body}"));
        }
        count += 1;
    }
    assert!(count >= 40, "the golden file lost its queries");
    assert!(failures.is_empty(), "{} of {count} golden queries differ:\n{}", failures.len(), failures.join("\n"));
}
