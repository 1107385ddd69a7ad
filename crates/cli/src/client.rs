//! The REST client behind the administration and catalogue commands.

use std::io::{IsTerminal, Write};
use std::path::Path;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::{
    AccessCommand, AuditExportArgs, AuditFilter, AuditSearchArgs, CliResult, DatasetCommand, DepartmentCommand, Format,
    QueryArgs, Remote, TokenCommand, UserCommand,
};

impl Remote {
    fn token(&self) -> CliResult<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_owned());
        }
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            return Ok(text.trim().to_owned());
        }
        Err("no token: pass --token, set VEIL_TOKEN, or pass --token-file".into())
    }

    fn request(&self, method: Method, path: &str) -> CliResult<RequestBuilder> {
        let server = self.server.trim_end_matches('/');
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(format!(
                "the server address `{server}` needs its scheme: http://{server} (--server or VEIL_SERVER)"
            )
            .into());
        }
        let url = format!("{server}/v1{path}");
        Ok(reqwest::Client::new().request(method, url).bearer_auth(self.token()?))
    }
}

/// Sends a request and returns its JSON body, or the server's error message.
async fn send(request: RequestBuilder) -> CliResult<Value> {
    let text = answered(request).await?.text().await?;
    Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
}

/// Sends a request and returns the successful response, or the server's refusal as
/// `status: message (code)`.
async fn answered(request: RequestBuilder) -> CliResult<Response> {
    let response: Response = request.send().await.map_err(|e| {
        let why = causes(&e);
        // The server answers a request it refuses without reading all of it (an upload over its
        // limit) and closes the connection under the rest: it was reached, and it refused.
        if e.is_body() || why.contains("Broken pipe") || why.contains("Connection reset") {
            format!(
                "the server closed the connection before the whole request was sent: it refused it early (an upload larger than the server accepts, --max-upload-mb, is refused so): {why}"
            )
        } else {
            format!("cannot reach the server: {why}")
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| Some(format!("{} ({})", v["error"]["message"].as_str()?, v["error"]["code"].as_str()?)))
        .unwrap_or(text);
    Err(format!("{status}: {message}").into())
}

/// An error with its causes, outermost first (reqwest's own message is often just "error
/// sending request"; the cause says "connection refused" or names the DNS failure).
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

fn print(value: &Value) -> CliResult {
    if !value.is_null() {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

pub(crate) async fn department(cmd: DepartmentCommand) -> CliResult {
    match cmd {
        DepartmentCommand::Create { id, name, remote } => {
            print(&send(remote.request(Method::POST, "/departments")?.json(&json!({"id": id, "name": name}))).await?)
        }
        DepartmentCommand::List(remote) => print(&send(remote.request(Method::GET, "/departments")?).await?),
    }
}

pub(crate) async fn user(cmd: UserCommand) -> CliResult {
    match cmd {
        UserCommand::Create { id, department, roles, remote } => {
            let body = json!({"id": id, "department": department, "roles": roles});
            print(&send(remote.request(Method::POST, "/users")?.json(&body)).await?)
        }
        UserCommand::List(remote) => print(&send(remote.request(Method::GET, "/users")?).await?),
    }
}

pub(crate) async fn token(cmd: TokenCommand) -> CliResult {
    match cmd {
        TokenCommand::Create { user, remote } => {
            print(&send(remote.request(Method::POST, &format!("/users/{user}/tokens"))?).await?)
        }
        TokenCommand::Revoke { user, token_id, remote } => {
            send(remote.request(Method::DELETE, &format!("/users/{user}/tokens/{token_id}"))?).await?;
            println!("revoked");
            Ok(())
        }
    }
}

pub(crate) async fn access(cmd: AccessCommand) -> CliResult {
    let decide = |remote: &Remote, id: &str, action: &str, body: Value| -> CliResult<RequestBuilder> {
        Ok(remote.request(Method::POST, &format!("/access-requests/{id}/{action}"))?.json(&body))
    };
    let request = match cmd {
        AccessCommand::Request(args) => {
            let mut body = json!({"dataset": args.dataset, "mode": args.mode, "purpose": args.purpose,
                                  "expires_at": args.expires});
            if let Some(name) = args.extract {
                let mut extract = json!({"name": name, "columns": args.columns});
                if !args.join.is_empty() {
                    extract["join"] = json!(args.join);
                }
                strictness(&mut extract, args.k, args.l, args.max_suppression);
                body["extract"] = extract;
                // Veil builds the extract before it answers: its stage on a spinner.
                let request = args.remote.request(Method::POST, "/access-requests")?.json(&body);
                let spinner = indicatif::ProgressBar::new_spinner();
                spinner.enable_steady_tick(std::time::Duration::from_millis(120));
                spinner.set_message("asking");
                let id = uuid::Uuid::new_v4().simple().to_string();
                let said = |p: &Value| format!("the extract: {}", p["stage"].as_str().unwrap_or("?"));
                return print(&followed(&args.remote, request, &id, spinner, &said).await?);
            } else if !args.columns.is_empty()
                || !args.join.is_empty()
                || args.k.is_some()
                || args.l.is_some()
                || args.max_suppression.is_some()
            {
                return Err(
                    "--columns, --join, --k, --l and --max-suppression describe an extract: give --extract NAME".into(),
                );
            }
            args.remote.request(Method::POST, "/access-requests")?.json(&body)
        }
        AccessCommand::List { state, remote } => {
            let path = match state {
                Some(state) => format!("/access-requests?state={state}"),
                None => "/access-requests".to_owned(),
            };
            remote.request(Method::GET, &path)?
        }
        AccessCommand::Approve { id, remote } => decide(&remote, &id, "approve", json!({}))?,
        AccessCommand::Reject { id, reason, remote } => decide(&remote, &id, "reject", json!({"reason": reason}))?,
        AccessCommand::Revoke { id, reason, remote } => decide(&remote, &id, "revoke", json!({"reason": reason}))?,
        AccessCommand::Revise { id, k, l, max_suppression, reason, remote } => {
            let mut body = json!({"reason": reason});
            strictness(&mut body, k, l, max_suppression);
            decide(&remote, &id, "revise", body)?
        }
        AccessCommand::Check { dataset, remote } => {
            remote.request(Method::GET, &format!("/datasets/{dataset}/access"))?
        }
    };
    print(&send(request).await?)
}

/// An extract's `k`, `l` and `max_suppression`, where given, into `body`.
fn strictness(body: &mut Value, k: Option<u64>, l: Option<u64>, max_suppression: Option<f64>) {
    for (field, value) in
        [("k", k.map(|k| json!(k))), ("l", l.map(|l| json!(l))), ("max_suppression", max_suppression.map(|m| json!(m)))]
    {
        if let Some(value) = value {
            body[field] = value;
        }
    }
}

pub(crate) async fn policy_reload(remote: Remote) -> CliResult {
    print(&send(remote.request(Method::POST, "/admin/policy/reload")?).await?)
}

pub(crate) async fn whoami(remote: Remote) -> CliResult {
    print(&send(remote.request(Method::GET, "/whoami")?).await?)
}

/// The file at `path` as a multipart part, read as it is sent, each chunk counted on `bar`
/// (whose length it sets).
async fn upload_part(path: &Path, bar: &indicatif::ProgressBar) -> CliResult<reqwest::multipart::Part> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await.map_err(|e| format!("opening {}: {e}", path.display()))?;
    let length = file.metadata().await?.len();
    bar.set_length(length);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("data").to_owned();
    // The state is `None` once the file failed to read: the stream ends with that error.
    let chunks = futures::stream::unfold(Some((file, bar.clone())), |state| async move {
        let (mut file, bar) = state?;
        let mut chunk = vec![0u8; 256 * 1024];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                bar.inc(n as u64);
                Some((Ok(chunk), Some((file, bar))))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), length).file_name(name))
}

/// Sends a request named `id` (its `Veil-Upload-Id`) and, while the server answers, shows on
/// `bar` what `said` makes of `GET /v1/uploads/{id}` (asked every half second), once the bar
/// (a registration's bytes sent) is full. The bar draws only on a terminal.
async fn followed(
    remote: &Remote,
    request: RequestBuilder,
    id: &str,
    bar: indicatif::ProgressBar,
    said: &dyn Fn(&Value) -> String,
) -> CliResult<Value> {
    let answer = send(request.header("veil-upload-id", id));
    tokio::pin!(answer);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let answer = loop {
        tokio::select! {
            answer = &mut answer => break answer,
            _ = tick.tick() => {
                if bar.is_hidden() || bar.position() < bar.length().unwrap_or(0) {
                    continue;
                }
                let Ok(asked) = remote.request(Method::GET, &format!("/uploads/{id}")) else { continue };
                if let Ok(progress) = send(asked).await {
                    bar.set_message(said(&progress));
                }
            }
        }
    };
    bar.finish_and_clear();
    answer
}

pub(crate) async fn dataset(cmd: DatasetCommand) -> CliResult {
    match cmd {
        DatasetCommand::Register { metadata, file, dry_run, remote } => {
            let mut text =
                std::fs::read_to_string(&metadata).map_err(|e| format!("reading {}: {e}", metadata.display()))?;
            if dry_run {
                let mut json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not JSON metadata: {e}", metadata.display()))?;
                let Some(object) = json.as_object_mut() else {
                    return Err(format!("{} is not a JSON object", metadata.display()).into());
                };
                object.insert("dry_run".into(), serde_json::Value::Bool(true));
                text = json.to_string();
            }
            let request = remote.request(Method::POST, "/datasets")?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("sending");
            let request = match file {
                Some(file) => {
                    let form = reqwest::multipart::Form::new()
                        .part("metadata", reqwest::multipart::Part::text(text).mime_str("application/json")?)
                        .part("file", upload_part(&file, &bar).await?);
                    request.multipart(form)
                }
                None => request.header("content-type", "application/json").body(text),
            };
            let id = uuid::Uuid::new_v4().simple().to_string();
            let said = |p: &Value| format!("sent; the server has read {} rows", p["rows_read"].as_u64().unwrap_or(0));
            let registered = followed(&remote, request, &id, bar, &said).await?;
            if let Some(over) = registered["rows_over_caps"].as_u64().filter(|n| *n > 0) {
                eprintln!(
                    "note: {over} rows are beyond each person's max_groups × max_rows ({} × {}): dp and anonymized answers leave them out; declare caps that hold the heaviest people (the metadata's `dp` block)",
                    registered["dp"]["max_groups"], registered["dp"]["max_rows"]
                );
            }
            print(&registered)
        }
        DatasetCommand::List { include_retired, remote } => {
            let path = if include_retired { "/datasets?include_retired=true" } else { "/datasets" };
            let list = send(remote.request(Method::GET, path)?).await?;
            println!("{:<28} {:<10} {:>10} {:>8}  description", "dataset", "level", "rows", "version");
            for d in list.as_array().into_iter().flatten() {
                let description: String = d["description"].as_str().unwrap_or("").chars().take(60).collect();
                println!(
                    "{:<28} {:<10} {:>10} {:>8}  {description}",
                    d["id"].as_str().unwrap_or(""),
                    d["level"].as_str().unwrap_or(""),
                    // Not shown to other departments for data about people.
                    d["row_count"].as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    d["version"].as_i64().unwrap_or(0),
                );
            }
            Ok(())
        }
        DatasetCommand::Show { dataset, remote } => {
            print(&send(remote.request(Method::GET, &format!("/datasets/{dataset}"))?).await?)
        }
        DatasetCommand::Draft { file, name, department } => {
            let draft = tokio::task::spawn_blocking(move || veil_catalog::draft::draft(&file))
                .await
                .map_err(|e| format!("drafting failed: {e}"))??;
            print(&draft.metadata(&name, &department))?;
            eprintln!(
                "level {} ({}); {} rows sampled; review every tag, and declare true bounds",
                draft.level, draft.level_reason, draft.rows_sampled
            );
            for c in &draft.columns {
                eprintln!("  {:<24} {:<16} {}", c.name, c.tag.to_string(), c.reason);
            }
            Ok(())
        }
        DatasetCommand::Retire { dataset, remote } => {
            send(remote.request(Method::DELETE, &format!("/datasets/{dataset}"))?).await?;
            println!("retired {dataset}");
            Ok(())
        }
    }
}

/// `veil query`: the answer as a table, then what was withheld and which rules applied;
/// `--dry-run` prints only the decision.
pub(crate) async fn query(args: QueryArgs) -> CliResult {
    let sql = match (&args.sql, &args.file) {
        (_, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the query from {}: {e}", path.display()))?
        }
        (Some(dash), None) if dash == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read the query from standard input: {e}"))?;
            text
        }
        (Some(sql), None) => sql.clone(),
        (None, None) => return Err("give the query, `-` for standard input, or --file PATH".into()),
    };
    let mut body = json!({"sql": sql, "mode": args.mode, "dry_run": args.dry_run});
    if let Some(epsilon) = args.epsilon {
        body["epsilon"] = json!(epsilon);
    }
    if let Some(rho) = args.rho {
        body["rho"] = json!(rho);
    }
    if let Some(noise) = &args.noise {
        body["noise"] = json!(noise);
    }
    if !args.accuracy.is_empty() {
        let mut accuracy = serde_json::Map::new();
        for item in &args.accuracy {
            let (column, width) = item
                .split_once('=')
                .and_then(|(c, w)| Some((c.trim(), w.trim().parse::<f64>().ok()?)))
                .ok_or_else(|| format!("--accuracy {item}: expected COLUMN=WIDTH, a column name and a number"))?;
            accuracy.insert(column.to_owned(), json!(width));
        }
        body["accuracy"] = Value::Object(accuracy);
    }
    let format = if args.json { Format::Json } else { args.format };
    let request = args.remote.request(Method::POST, "/query")?.json(&body);
    let media = match format {
        Format::Csv => "text/csv",
        Format::Arrow => "application/vnd.apache.arrow.stream",
        Format::Parquet => "application/vnd.apache.parquet",
        Format::Table | Format::Json => "",
    };
    // A dry run is answered in JSON whatever was asked.
    if !media.is_empty() && !args.dry_run {
        if format != Format::Csv && args.output.is_none() && std::io::stdout().is_terminal() {
            return Err(format!("{media} is binary: give --output FILE or redirect standard output").into());
        }
        let response = answered(request.header(reqwest::header::ACCEPT, media)).await?;
        // The rest of a CSV answer's report.
        let report = response.headers().get("x-veil-report").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await?;
        let mut out = open_output(args.output.as_deref())?;
        out.write_all(&bytes)?;
        out.flush()?;
        if let Some(report) = report {
            eprintln!("veil report: {report}");
        }
        return Ok(());
    }
    let answer = send(request).await?;
    let mut out = open_output(args.output.as_deref())?;
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(out.flush()?);
    }
    show_answer(&mut out, &answer, args.dry_run)?;
    Ok(out.flush()?)
}

/// Prints an answer of `POST /v1/query` for a person: the rows as a table, the dp intervals,
/// what was withheld, the budget and the rules that applied.
pub(crate) fn show_answer(out: &mut dyn Write, answer: &Value, dry_run: bool) -> CliResult {
    if dry_run {
        writeln!(out, "allowed (dry run; nothing was run)")?;
    } else {
        writeln!(out, "{}", table(answer)?)?;
        if let Some(dp) = answer.get("dp") {
            for column in dp["intervals"].as_array().into_iter().flatten() {
                let cis: Vec<String> = column["ci95"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|ci| format!("[{}, {}]", ci[0], ci[1]))
                    .collect();
                writeln!(
                    out,
                    "95% intervals of {}, by row: {}",
                    column["column"].as_str().unwrap_or("?"),
                    cis.join(" ")
                )?;
            }
        }
        if let Some(anonymized) = answer.get("anonymized") {
            for column in anonymized["noise_sd"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "noise of {}: standard deviation at most {} in every row",
                    column["column"].as_str().unwrap_or("?"),
                    number(column["sd_at_most"].as_f64().unwrap_or(0.0))
                )?;
            }
            let flattened: Vec<&str> =
                anonymized["flattened"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
            if !flattened.is_empty() {
                writeln!(
                    out,
                    "{}: the largest contributions are flattened, so where a few people hold most of a group's rows or total, the value is lower than the data's",
                    flattened.join(", ")
                )?;
            }
            for capped in anonymized["rows_capped"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}: at most {} rows a person are counted (the join caps each person's rows)",
                    capped["dataset"].as_str().unwrap_or("?"),
                    capped["rows"].as_u64().unwrap_or(0)
                )?;
            }
        }
        let rows = answer["rows"].as_array().map_or(0, Vec::len);
        let extract = answer["rules"].as_array().into_iter().flatten().any(|r| r["code"] == "approved_extract");
        match answer["level"].as_str().unwrap_or("?") {
            "audit" => writeln!(out, "{rows} rows of the audit log")?,
            level if extract => writeln!(
                out,
                "{rows} rows of approved de-identified extracts (every class at least k = {} people); level {level}",
                answer["k"]
            )?,
            level if answer.get("dp").is_some() => writeln!(
                out,
                "{rows} rows; groups whose noisy count of people is below the threshold are withheld (how many is not released); level {level}"
            )?,
            level => writeln!(
                out,
                "{rows} rows; groups of fewer than k = {} people are withheld (how many is not released); level {level}",
                answer["k"]
            )?,
        }
    }
    if let Some(dp) = answer.get("dp") {
        let asked = match dp["rho"].as_f64() {
            Some(rho) => format!("rho {} (discrete Gaussian)", number(rho)),
            None => format!("epsilon {}", number(dp["epsilon"].as_f64().unwrap_or(0.0))),
        };
        let spent = if dp["replayed"] == true {
            "nothing charged (the recorded answer of an identical query)".to_owned()
        } else {
            asked
        };
        let threshold = match (dp["threshold"].as_f64(), dp["released_from"].as_f64()) {
            (Some(t), Some(r)) => format!(
                "groups need at least {} noisy people (a group of {} or more is released 95% of the time)",
                number(t),
                number(r)
            ),
            (Some(t), None) => format!("groups need at least {} noisy people", number(t)),
            (None, _) => "no threshold (one group)".to_owned(),
        };
        writeln!(
            out,
            "dp: {spent}, shared by {} numbers per group; delta {}; {threshold}",
            dp["measurements"], dp["delta"]
        )?;
        let widths: Vec<String> = dp["half_widths"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                format!("{} ±{}", h["column"].as_str().unwrap_or("?"), number(h["half_width"].as_f64().unwrap_or(0.0)))
            })
            .collect();
        if !widths.is_empty() {
            writeln!(out, "  95% intervals: {}", widths.join(", "))?;
        }
        for b in dp["budget"].as_array().into_iter().flatten() {
            writeln!(out, "  budget {}: {}", b["dataset"].as_str().unwrap_or("?"), budget_line(b))?;
        }
    }
    for rule in answer["rules"].as_array().into_iter().flatten() {
        writeln!(out, "  {}: {}", rule["code"].as_str().unwrap_or("?"), rule["detail"].as_str().unwrap_or(""))?;
    }
    Ok(())
}

/// `veil budget`: epsilon spent and left per dataset.
pub(crate) async fn budget(remote: Remote) -> CliResult {
    let budget = send(remote.request(Method::GET, "/budget")?).await?;
    for b in budget.as_array().into_iter().flatten() {
        println!(
            "{:<28} {:<10} {}",
            b["dataset"].as_str().unwrap_or("?"),
            b["level"].as_str().unwrap_or("?"),
            budget_line(b)
        );
    }
    Ok(())
}

fn budget_line(b: &Value) -> String {
    let spent = number(b["spent"].as_f64().unwrap_or(0.0));
    match (b["cap"].as_f64(), b["left"].as_f64()) {
        (Some(cap), Some(left)) => format!(
            "epsilon spent {spent} of {}, {} left ({} queries, {}-day window)",
            number(cap),
            number(left),
            b["queries"],
            b["window_days"]
        ),
        _ => format!("epsilon spent {spent}, no cap at this level ({} queries)", b["queries"]),
    }
}

/// A budget figure for people: at most four decimals, no float noise (`0.7000000000000002`).
fn number(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

/// The answer's rows as a text table (arrow's pretty printer, which handles wide characters).
fn table(answer: &Value) -> CliResult<String> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let columns = answer["columns"].as_array().ok_or("the answer has no columns")?;
    let rows = answer["rows"].as_array().ok_or("the answer has no rows")?;
    let fields: Vec<Field> =
        columns.iter().map(|c| Field::new(c["name"].as_str().unwrap_or("?"), DataType::Utf8, true)).collect();
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| {
            let cells: StringArray = rows
                .iter()
                .map(|r| match &r[i] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect();
            Arc::new(cells) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    Ok(arrow::util::pretty::pretty_format_batches(&[batch])?.to_string())
}

impl AuditFilter {
    /// The filters given, as query parameters.
    fn query(self) -> Vec<(&'static str, String)> {
        let fields = [
            ("user", self.user),
            ("department", self.department),
            ("dataset", self.dataset),
            ("decision", self.decision),
            ("action", self.action),
            ("from", self.from),
            ("to", self.to),
            ("after", self.after.map(|a| a.to_string())),
            ("request_id", self.request_id),
        ];
        fields.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
    }
}

/// Where an answer goes: `path`, or standard output. Opened once the server has answered, so a
/// refusal leaves an existing file as it was.
fn open_output(path: Option<&Path>) -> CliResult<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(
            std::fs::File::create(path).map_err(|e| format!("cannot write the answer to {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    })
}

pub(crate) async fn audit_export(args: AuditExportArgs) -> CliResult {
    if args.format == "parquet" && args.output.is_none() && std::io::stdout().is_terminal() {
        return Err("Parquet is binary: give --output FILE or redirect standard output".into());
    }
    let mut query = args.filter.query();
    query.push(("format", args.format));
    let response = answered(args.remote.request(Method::GET, "/audit/export")?.query(&query)).await?;
    let bytes = response.bytes().await?;
    let mut out = open_output(args.output.as_deref())?;
    out.write_all(&bytes)?;
    Ok(out.flush()?)
}

pub(crate) async fn audit_search(args: AuditSearchArgs) -> CliResult {
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    query.extend(args.filter.query());
    let page = send(args.remote.request(Method::GET, "/audit")?.query(&query)).await?;
    if args.json {
        return print(&page);
    }
    for r in page["records"].as_array().into_iter().flatten() {
        let text = |key: &str| r[key].as_str().unwrap_or("-").to_owned();
        let datasets: Vec<&str> =
            r["datasets"].as_array().into_iter().flatten().filter_map(|d| d["dataset"].as_str()).collect();
        let mut line = format!(
            "{:>6} {} {:<12} {:<22} {:<8}",
            r["seq"],
            text("time"),
            r["actor"]["user"].as_str().unwrap_or("-"),
            text("action"),
            text("decision")
        );
        if !datasets.is_empty() {
            line.push_str(&format!(" {}", datasets.join(",")));
        }
        for key in ["rule", "rows", "suppressed_groups"] {
            if !r[key].is_null() {
                line.push_str(&format!(" {key}={}", r[key].as_str().map_or_else(|| r[key].to_string(), str::to_owned)));
            }
        }
        println!("{line}");
    }
    if let Some(next) = page["next"].as_u64() {
        println!("more: --after {next}");
    }
    Ok(())
}
