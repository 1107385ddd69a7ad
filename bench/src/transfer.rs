//! Comparison 8: large answers fetched over Arrow Flight SQL vs over HTTP as JSON and as an
//! Arrow IPC stream: time to a decoded answer in the client, and bytes on the wire.
//!
//! Two answers: an aggregate with one group per row of a dataset about nobody (exact answers,
//! every read-only shape allowed), 1M rows by default; and a whole de-identified extract of a
//! dataset about people (pseudonyms, generalized dates and districts, coded amounts), 1M people
//! by default, asked for and approved as an analyst and a steward would. Each protocol decodes
//! what it receives into Arrow batches or JSON values, as a client would; the server runs the
//! same query through the same broker each time (one audit record each).

use std::time::Instant;

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use serde_json::json;
use veil_tests::TestServer;

use crate::stats::{Table, median, ratio};
use crate::{Common, Result};

/// Arguments of `veil-bench transfer`.
#[derive(Debug, Args)]
pub(crate) struct TransferArgs {
    #[command(flatten)]
    common: Common,
    /// Rows of the aggregate answer (and of its dataset).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// People of the dataset the extract is built from.
    #[arg(long, default_value_t = 1_000_000)]
    extract_people: usize,
    /// Fetches per protocol; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const QUERY: &str = "SELECT id, grp, sum(amount) AS amount FROM bench.ledger GROUP BY id, grp";
const EXTRACT: &str = "SELECT * FROM extracts.people";

/// One fetch: seconds to a decoded answer, bytes received, rows decoded.
struct Fetch {
    seconds: f64,
    bytes: usize,
    rows: usize,
}

pub(crate) async fn run(args: TransferArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let most = args.rows.max(args.extract_people) * 2;
    let limits = veil_query::Limits { max_result_rows: most, ..veil_query::Limits::standard() };
    let server = TestServer::start().await.restart_with(limits).await;
    let analyst = register(&server, args.rows).await?;
    let (extract_analyst, extract_rows) = extract(&server, args.extract_people).await?;
    let mut text = String::new();
    let answers = [
        (format!("a {}-row aggregate answer", args.rows), QUERY, "aggregate", &analyst, args.rows),
        (
            format!("a {extract_rows}-row de-identified extract"),
            EXTRACT,
            "deidentified",
            &extract_analyst,
            extract_rows,
        ),
    ];
    for (title, sql, mode, token, rows) in answers {
        let measured = compare(&server, token, sql, mode, rows, args.runs).await?;
        let (_, flight_seconds, flight_bytes) = measured[2];
        let mut table =
            Table::new(&["protocol", "median s", "MB received", "time vs Flight SQL", "bytes vs Flight SQL"]);
        for (name, seconds, bytes) in &measured {
            table.row(vec![
                (*name).to_owned(),
                format!("{seconds:.3}"),
                format!("{:.1}", *bytes as f64 / 1e6),
                ratio(seconds / flight_seconds),
                ratio(*bytes as f64 / flight_bytes as f64),
            ]);
        }
        text.push_str(&format!(
            "### Transfer: {title} over HTTP JSON, HTTP Arrow and Flight SQL\n\n`{sql}` ({mode}), median of {} fetches, decoded in the client.\n\n{}\n",
            args.runs,
            table.markdown()
        ));
    }
    std::fs::write(results.join("transfer.md"), &text)?;
    println!("{text}");
    Ok(())
}

/// Each protocol's median time and bytes for `sql`, checking every fetch has `rows` rows.
async fn compare(
    server: &TestServer,
    token: &str,
    sql: &str,
    mode: &str,
    rows: usize,
    runs: usize,
) -> Result<Vec<(&'static str, f64, usize)>> {
    let protocols =
        [("HTTP JSON", Protocol::Json), ("HTTP Arrow IPC", Protocol::Arrow), ("Flight SQL", Protocol::Flight)];
    let mut measured = Vec::new();
    for (name, protocol) in protocols {
        let mut fetches = Vec::new();
        for _ in 0..runs {
            let fetch = protocol.fetch(server, token, sql, mode).await?;
            if fetch.rows != rows {
                return Err(format!("{name}: {} rows, expected {rows}", fetch.rows).into());
            }
            fetches.push(fetch);
        }
        let seconds = median(&fetches.iter().map(|f| f.seconds).collect::<Vec<_>>());
        let bytes = fetches[0].bytes;
        eprintln!("transfer: {sql}: {name}: {seconds:.3} s, {bytes} bytes");
        measured.push((name, seconds, bytes));
    }
    Ok(measured)
}

/// A dataset of `people` people (one row each), an analyst's de-identified extract of it
/// approved by the steward, and how many rows the extract holds.
async fn extract(server: &TestServer, people: usize) -> Result<(String, usize)> {
    server.department("civil", "民政局").await;
    let steward = server.user("civil-steward", Some("civil"), &["steward"]).await;
    let analyst = server.user("civil-analyst", Some("civil"), &["analyst"]).await;
    let mut csv = String::with_capacity(people * 64);
    csv.push_str("person_id,district,birth_date,living_alone,subsidy\n");
    let districts = ["东城区", "西城区", "朝阳区", "海淀区", "丰台区", "石景山区", "通州区", "昌平区"];
    for i in 0..people {
        let (year, month, day) = (1930 + (i * 7) % 40, i % 12 + 1, (i * 5) % 28 + 1);
        let district = districts[(i * 31) % districts.len()];
        csv.push_str(&format!("P{i:09},{district},{year}-{month:02}-{day:02},{},{}\n", i % 3 == 0, (i * 37) % 2000));
    }
    let metadata = json!({
        "name": "people", "department": "civil", "level": "L2", "privacy_unit": "person_id", "one_row_per_person": true,
        "columns": {
            "person_id": {"tag": "identifier"},
            "district": {"tag": "quasi_identifier"},
            "birth_date": {"tag": "quasi_identifier", "type": "date"},
            "living_alone": {"tag": "attribute"},
            "subsidy": {"tag": "sensitive", "bounds": [0, 2000]}
        }
    });
    let (status, body) = server.upload(&steward, &metadata, csv.into_bytes()).await;
    if !status.is_success() {
        return Err(format!("registering the people: {status} {body}").into());
    }
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let expires_at = expires.format(&time::format_description::well_known::Rfc3339)?;
    let extract =
        json!({"name": "people", "columns": ["person_id", "district", "birth_date", "living_alone", "subsidy"]});
    let body = json!({"dataset": "civil.people", "mode": "deidentified", "purpose": "transfer benchmark",
                      "expires_at": expires_at, "extract": extract});
    let (status, asked) = server.post("/v1/access-requests", &analyst, body).await;
    if !status.is_success() {
        return Err(format!("asking for the extract: {status} {asked}").into());
    }
    let id = asked["id"].as_str().ok_or("no access request id")?;
    let (status, decided) = server.post(&format!("/v1/access-requests/{id}/approve"), &steward, json!({})).await;
    if !status.is_success() {
        return Err(format!("approving the extract: {status} {decided}").into());
    }
    let rows = decided["extract"]["rows"].as_u64().ok_or_else(|| format!("no extract rows in {decided}"))?;
    Ok((analyst, usize::try_from(rows)?))
}

/// A dataset about nobody with `rows` rows, and an analyst of its department.
async fn register(server: &TestServer, rows: usize) -> Result<String> {
    server.department("bench", "bench").await;
    let steward = server.user("bench-steward", Some("bench"), &["steward"]).await;
    let mut csv = String::with_capacity(rows * 24);
    csv.push_str("id,grp,amount\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},g{},{}.{:02}\n", i % 97, (i * 7919) % 100_000, i % 100));
    }
    let metadata = json!({
        "name": "ledger", "department": "bench", "level": "L1",
        "description": "synthetic ledger about no person",
        "columns": {"id": {"tag": "attribute"}, "grp": {"tag": "attribute"}, "amount": {"tag": "attribute"}}
    });
    let (status, body) = server.upload(&steward, &metadata, csv.into_bytes()).await;
    if !status.is_success() {
        return Err(format!("registering the ledger: {status} {body}").into());
    }
    Ok(server.user("bench-analyst", Some("bench"), &["analyst"]).await)
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Json,
    Arrow,
    Flight,
}

impl Protocol {
    async fn fetch(self, server: &TestServer, token: &str, sql: &str, mode: &str) -> Result<Fetch> {
        let started = Instant::now();
        let (bytes, rows) = match self {
            Protocol::Json | Protocol::Arrow => {
                let accept = match self {
                    Protocol::Json => "application/json",
                    _ => "application/vnd.apache.arrow.stream",
                };
                let response = reqwest::Client::new()
                    .post(format!("{}/v1/query", server.url))
                    .bearer_auth(token)
                    .header("accept", accept)
                    .json(&json!({"sql": sql, "mode": mode}))
                    .send()
                    .await?
                    .error_for_status()?;
                let body = response.bytes().await?;
                let rows = match self {
                    Protocol::Json => {
                        let answer: serde_json::Value = serde_json::from_slice(&body)?;
                        answer["rows"].as_array().map_or(0, Vec::len)
                    }
                    _ => {
                        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(&body), None)?;
                        let batches = reader.collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
                        batches.iter().map(RecordBatch::num_rows).sum()
                    }
                };
                (body.len(), rows)
            }
            Protocol::Flight => flight_fetch(server, token, sql, mode).await?,
        };
        Ok(Fetch { seconds: started.elapsed().as_secs_f64(), bytes, rows })
    }
}

/// GetFlightInfo with the statement, then DoGet of its ticket, counting the bytes of every
/// message and decoding the batches.
async fn flight_fetch(server: &TestServer, token: &str, sql: &str, mode: &str) -> Result<(usize, usize)> {
    let channel = tonic::transport::Channel::from_shared(server.flight.clone())?.connect().await?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let command = CommandStatementQuery { query: sql.to_owned(), transaction_id: None };
    let mut request = tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    request.metadata_mut().insert("authorization", bearer.clone());
    request.metadata_mut().insert("x-veil-mode", mode.parse()?);
    let info = client.get_flight_info(request).await?.into_inner();
    let ticket: Ticket = info.endpoint.first().and_then(|e| e.ticket.clone()).ok_or("the FlightInfo has no ticket")?;
    let mut request = tonic::Request::new(ticket);
    request.metadata_mut().insert("authorization", bearer);
    let stream = client.do_get(request).await?.into_inner();
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = {
        let bytes = std::sync::Arc::clone(&bytes);
        stream
            .inspect_ok(move |d: &FlightData| {
                bytes.fetch_add(d.data_header.len() + d.data_body.len(), std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(FlightError::from)
    };
    let batches: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(counted.boxed()).try_collect().await?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    Ok((bytes.load(std::sync::atomic::Ordering::Relaxed), rows))
}
