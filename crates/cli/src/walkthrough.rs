//! `veil walkthrough DIR`: one of the scenarios under `examples/`, run end to end in one
//! command. It starts the demo on a temporary data directory and a loopback port (the same data
//! as `veil serve --demo`), then plays the steps of `DIR/walkthrough.json` over HTTP as the demo
//! users they name, printing each answer or refusal, and fails if any step turns out other than
//! the walkthrough says (an answer where a refusal was expected, or another refusal).

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::client::show_answer;
use crate::serve::{build_demo, demo_state};
use crate::{CliResult, WalkthroughArgs};

/// A scenario's `walkthrough.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Walkthrough {
    /// Printed first.
    title: String,
    steps: Vec<Step>,
}

/// One step: who acts, what it shows (printed before it), and what they do. (serde cannot deny
/// unknown fields through `flatten`; a misspelt `refused` still fails the step when the
/// refusal comes.)
#[derive(Debug, Deserialize)]
struct Step {
    /// The demo user acting.
    #[serde(rename = "as")]
    user: String,
    /// What the step shows.
    say: String,
    #[serde(flatten)]
    action: Action,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
enum Action {
    /// `POST /v1/query` with the SQL of `file` (beside `walkthrough.json`).
    Query {
        file: String,
        #[serde(default = "aggregate")]
        mode: String,
        #[serde(default)]
        epsilon: Option<f64>,
        /// The error code the step must be refused with; absent, it must be answered.
        #[serde(default)]
        refused: Option<String>,
    },
    /// `POST /v1/access-requests`: ask for `mode` on `dataset` for `days`, with a purpose.
    RequestAccess { dataset: String, mode: String, purpose: String, days: i64 },
    /// `POST /v1/access-requests/{id}/approve` of the last request made in the walkthrough.
    ApproveLastRequest,
    /// The auditor's checks of the log, the last step: `GET /v1/audit/verify` on the server;
    /// then the server stops (shutdown signs a checkpoint over the last record) and the offline
    /// check runs on a copy of the audit directory with only the public key (`veil audit
    /// verify`); then a second copy with one record edited must fail that check.
    VerifyAudit,
}

fn aggregate() -> String {
    "aggregate".to_owned()
}

/// What one step got, as written to `--answers`.
struct Outcome {
    status: StatusCode,
    body: Value,
}

pub(crate) async fn walkthrough(args: WalkthroughArgs) -> CliResult {
    let dir = args.dir;
    let path = dir.join("walkthrough.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let plan: Walkthrough = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // Every file a step names is read before anything starts, so a typo fails at once.
    let mut sql = Vec::new();
    for step in &plan.steps {
        if let Action::Query { file, .. } = &step.action {
            let p = dir.join(file);
            sql.push(std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))?);
        }
    }

    let tmp = tempfile::Builder::new().prefix("veil-walkthrough-").tempdir()?;
    let root = tmp.path().to_path_buf();
    let people = args.people;
    println!("Starting the demo ({people} residents) on a temporary data directory …");
    let (catalog, setup) = tokio::task::spawn_blocking(move || build_demo(&root, people)).await??;
    let state = demo_state(catalog, &setup, 64, veil_query::Limits::standard())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(veil_server::run(
        listener,
        None,
        state,
        veil_server::Stop::on(async move {
            let _ = stopped.await;
        }),
    ));
    let mut server = Some((stop, running));

    println!("\n# {}\n", plan.title);
    let client = reqwest::Client::new();
    let mut outcomes = Vec::new();
    let mut mismatches = Vec::new();
    let mut last_request: Option<String> = None;
    let mut sql = sql.into_iter();
    for (i, step) in plan.steps.iter().enumerate() {
        let n = i + 1;
        let token = setup.token(&step.user).ok_or_else(|| format!("step {n}: no demo user `{}`", step.user))?;
        if server.is_none() {
            return Err(format!("step {n}: verify_audit stops the server, so it must be the last step").into());
        }
        println!("## {n}. {} (as {})", step.say, step.user);
        let call = |method: Method, path: &str| client.request(method, format!("{url}{path}")).bearer_auth(token);
        let outcome = match &step.action {
            Action::Query { file, mode, epsilon, refused } => {
                let text = sql.next().unwrap_or_default();
                println!(
                    "$ veil query --mode {mode}{} -- \"$(cat {file})\"",
                    epsilon.map_or(String::new(), |e| format!(" --epsilon {e}"))
                );
                let mut body = json!({"sql": text, "mode": mode});
                if let Some(e) = epsilon {
                    body["epsilon"] = json!(e);
                }
                let outcome = send(call(Method::POST, "/query").json(&body)).await?;
                if outcome.status.is_success() {
                    show_answer(&mut std::io::stdout().lock(), &outcome.body, false)?;
                } else {
                    show_refusal(&outcome);
                }
                let got = code(&outcome);
                if got.as_deref() != refused.as_deref() {
                    let want = refused.as_deref().unwrap_or("an answer");
                    let got = got.unwrap_or_else(|| "an answer".to_owned());
                    mismatches.push(format!("step {n} ({file}): expected {want}, got {got}"));
                }
                outcome
            }
            Action::RequestAccess { dataset, mode, purpose, days } => {
                let expires = time::OffsetDateTime::now_utc() + time::Duration::days(*days);
                let expires_at = expires.format(&time::format_description::well_known::Rfc3339)?;
                let body = json!({"dataset": dataset, "mode": mode, "purpose": purpose, "expires_at": expires_at});
                let outcome = send(call(Method::POST, "/access-requests").json(&body)).await?;
                last_request = outcome.body["id"].as_str().map(str::to_owned);
                expect_success(&outcome, n, &mut mismatches);
                println!("access request {} for {mode} on {dataset}: {purpose}", outcome.body["id"]);
                outcome
            }
            Action::ApproveLastRequest => {
                let id = last_request.as_deref().ok_or_else(|| format!("step {n}: no access request to approve"))?;
                let outcome = send(call(Method::POST, &format!("/access-requests/{id}/approve"))).await?;
                expect_success(&outcome, n, &mut mismatches);
                println!("approved {id}: {}", outcome.body["state"]);
                outcome
            }
            Action::VerifyAudit => {
                let outcome = send(call(Method::GET, "/audit/verify")).await?;
                expect_success(&outcome, n, &mut mismatches);
                println!("on the server:\n{}", outcome.body["summary"].as_str().unwrap_or("?"));
                stop_server(&mut server).await?;
                println!(
                    "the server stopped (shutdown signs a checkpoint); a copy of its audit/ directory, verified offline:"
                );
                let (intact, tampered) = verify_copies(&setup.data_dir).await?;
                println!("{intact}\nthe same copy with one denied attempt rewritten as allowed:\n{tampered}");
                if !intact.ok() || intact.checkpoints == 0 {
                    mismatches
                        .push(format!("step {n}: the copy of the audit log does not verify under a signed checkpoint"));
                }
                if tampered.ok() {
                    mismatches.push(format!("step {n}: an edited copy of the audit log still verifies"));
                }
                let body =
                    json!({"server": outcome.body, "offline": intact.to_string(), "tampered": tampered.to_string()});
                Outcome { status: outcome.status, body }
            }
        };
        outcomes.push(outcome);
        println!();
    }

    stop_server(&mut server).await?;
    if let Some(out) = &args.answers {
        let steps: Vec<Value> = outcomes.iter().map(|o| json!({"status": o.status.as_u16(), "body": o.body})).collect();
        std::fs::write(out, serde_json::to_vec_pretty(&steps)?)
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
    }
    if mismatches.is_empty() {
        println!("Every step of {} went as the walkthrough says.", dir.display());
        Ok(())
    } else {
        Err(format!("the walkthrough went otherwise than it says:\n  {}", mismatches.join("\n  ")).into())
    }
}

async fn send(request: reqwest::RequestBuilder) -> CliResult<Outcome> {
    let response = request.send().await.map_err(|e| format!("cannot reach the demo server: {e}"))?;
    let status = response.status();
    let text = response.text().await?;
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? };
    Ok(Outcome { status, body })
}

/// The error code of a refused step, `None` for an answer.
fn code(outcome: &Outcome) -> Option<String> {
    if outcome.status.is_success() {
        return None;
    }
    Some(outcome.body["error"]["code"].as_str().unwrap_or("an error without a code").to_owned())
}

fn show_refusal(outcome: &Outcome) {
    let error = &outcome.body["error"];
    println!(
        "refused: {} {}: {}",
        outcome.status.as_u16(),
        error["code"].as_str().unwrap_or("?"),
        error["message"].as_str().unwrap_or("?")
    );
}

fn expect_success(outcome: &Outcome, n: usize, mismatches: &mut Vec<String>) {
    if !outcome.status.is_success() {
        show_refusal(outcome);
        mismatches.push(format!("step {n}: expected success, got {}", outcome.status));
    }
}

type Server = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

/// Stops the demo server, if it still runs, and waits until it has finished (and signed its
/// shutdown checkpoint).
async fn stop_server(server: &mut Option<Server>) -> CliResult {
    if let Some((stop, running)) = server.take() {
        let _ = stop.send(());
        running.await??;
    }
    Ok(())
}

/// What `veil audit public-key` then `veil audit verify` do, on two copies of the audit
/// directory: one as it is, and one where the first denied record says `allowed`.
async fn verify_copies(data_dir: &Path) -> CliResult<(veil_audit::Report, veil_audit::Report)> {
    let dir = veil_catalog::DataDir::existing(data_dir)?;
    let key = veil_audit::SigningKey::load(&dir.audit_key())?.public_key();
    let intact = tempfile::Builder::new().prefix("veil-audit-copy-").tempdir()?;
    copy_dir(&dir.audit(), intact.path())?;
    let edited = tempfile::Builder::new().prefix("veil-audit-edited-").tempdir()?;
    copy_dir(&dir.audit(), edited.path())?;
    rewrite_first_denial(edited.path())?;
    let (a, b) = (intact.path().to_path_buf(), edited.path().to_path_buf());
    let reports =
        tokio::task::spawn_blocking(move || (veil_audit::verify(&a, &key, None), veil_audit::verify(&b, &key, None)))
            .await?;
    Ok((reports.0?, reports.1?))
}

/// Edits a copy of an audit log as someone covering their tracks would: the first denied
/// record, in the first segment that has one, now says it was allowed.
fn rewrite_first_denial(dir: &Path) -> CliResult {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segments.sort();
    for path in segments {
        let text = std::fs::read_to_string(&path)?;
        if text.contains(DENIED) {
            std::fs::write(&path, text.replacen(DENIED, "\"decision\":\"allowed\"", 1))?;
            return Ok(());
        }
    }
    Err("the audit log has no denied record to edit".into())
}

const DENIED: &str = "\"decision\":\"denied\"";

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
