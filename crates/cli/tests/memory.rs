//! Peak memory of a real `veil serve` process for hostile uploads: each is refused, and the
//! process's peak resident memory grows by less than 512 MiB over all of them (before their
//! checks, a 1.5 MB CSV of 10,000 columns cost 2.1 GiB, and Parquet files of a few kilobytes
//! decoded to hundreds of MiB before their refusal: by their pages, or by a dictionary entry
//! repeated in every row); and for distinct counts over millions of values, whose state once
//! escaped the queries' pools.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::process::Command;
use std::sync::Arc;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::{init, people, register, serve};

/// The peak resident memory of process `pid`, in bytes (Linux's `VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
    line.trim().strip_suffix("kB").unwrap().trim().parse::<u64>().unwrap() * 1024
}

/// A Parquet file of 300 rows of 2 MiB of zeros each, one page per row, compressed to a few
/// kilobytes: 600 MiB once decoded.
fn parquet_bomb() -> Vec<u8> {
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let schema = Arc::new(Schema::new(vec![Field::new("note", DataType::Utf8, false)]));
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_dictionary_enabled(false)
        .set_data_page_size_limit(1 << 20)
        .set_write_batch_size(1)
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), Some(properties)).unwrap();
    let row = "0".repeat(2 << 20);
    for _ in 0..30 {
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![row.as_str(); 10]))],
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    writer.close().unwrap();
    out
}

/// A Parquet file of a few kilobytes: a dictionary of one 2 MiB text and 300 rows repeating
/// it, 600 MiB once decoded while its pages declare 2 MiB.
fn dictionary_bomb() -> Vec<u8> {
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let schema = Arc::new(Schema::new(vec![Field::new("note", DataType::Utf8, false)]));
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_dictionary_page_size_limit(8 << 20)
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), Some(properties)).unwrap();
    let long = "0".repeat(2 << 20);
    let batch = arrow::array::RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![long.as_str(); 300]))])
        .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

/// A CSV of 10,000 columns and 70 rows (about 1.4 MB).
fn wide_csv() -> Vec<u8> {
    let header: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let mut out = header.join(",");
    out.push('\n');
    let row = vec!["1"; 10_000].join(",");
    for _ in 0..70 {
        out.push_str(&row);
        out.push('\n');
    }
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_refused_within_a_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, admin) = init(tmp.path());
    let (mut child, url) = serve(&data);
    let client = reqwest::Client::new();
    let tokens = people(&url, &admin, &[("civil", "民政局")], &[("civil-steward", "civil", "steward")]).await;
    let steward = tokens["civil-steward"].clone();
    let upload = |name: &str, bytes: Vec<u8>| {
        let metadata = serde_json::json!({
            "name": name, "department": "civil", "level": "L1", "description": "memory test",
            "columns": {"note": {"tag": "attribute"}}
        });
        register(&client, &url, &steward, &metadata, bytes)
    };
    // A small upload first, so the baseline holds what serving one takes.
    let fine = upload("fine", b"note\nhello\n".to_vec()).await.unwrap();
    assert!(fine.status().is_success(), "{}", fine.text().await.unwrap());
    let baseline = peak_rss(child.id());

    let (bomb, dictionary) = (parquet_bomb(), dictionary_bomb());
    for bytes in [&bomb, &dictionary] {
        assert!(bytes.len() < 256 << 10, "the bomb is small: {} bytes", bytes.len());
    }
    for (name, bytes) in [("bomb", bomb), ("dictionary", dictionary), ("wide", wide_csv())] {
        let response = upload(name, bytes).await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_client_error(), "{name}: {status} {body}");
    }
    let grown = peak_rss(child.id()).saturating_sub(baseline);
    assert!(grown < 512 << 20, "the server's peak memory grew by {} MiB", grown >> 20);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// A red team's analyst query held +3.9 GB with per-group `COUNT(DISTINCT)` state outside the
/// query's pool, and three at once 7.5 GB. On a server whose queries get 48 MiB each and 128 MiB
/// together, one and two distinct counts over three million values in seven groups (one query
/// each, then three at once), each more than its pool holds, keep the process's peak resident
/// memory within the pools and a margin: they spill or are refused for memory, never answered
/// from memory nobody granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_counts_over_millions_of_values_stay_within_the_pools() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, admin) = init(tmp.path());
    let (mut child, url) = common::serve_with(&data, &["--query-memory-mb", "48", "--query-memory-total-mb", "128"]);
    let client = reqwest::Client::new();
    let tokens = people(
        &url,
        &admin,
        &[("civil", "民政局")],
        &[("civil-steward", "civil", "steward"), ("civil-analyst", "civil", "analyst")],
    )
    .await;
    let rows = 3_000_000u64;
    let mut csv = String::with_capacity(rows as usize * 12);
    csv.push_str("k,v\n");
    for k in 0..rows {
        csv.push_str(&format!("{},{}\n", k * 7919 % 1_000_000_007, k % 7));
    }
    let metadata = serde_json::json!({
        "name": "wide", "department": "civil", "level": "L1", "description": "memory test",
        "columns": {"k": {"tag": "attribute", "type": "int64"}, "v": {"tag": "attribute", "type": "int64"}}
    });
    let registered = register(&client, &url, &tokens["civil-steward"], &metadata, csv.into_bytes()).await.unwrap();
    assert!(registered.status().is_success(), "{}", registered.text().await.unwrap());
    let baseline = peak_rss(child.id());
    let ask = |sql: &'static str| {
        let body = serde_json::json!({"sql": sql, "mode": "aggregate"});
        client.post(format!("{url}/v1/query")).bearer_auth(&tokens["civil-analyst"]).json(&body).send()
    };
    let one = "SELECT v, count(DISTINCT k) AS n FROM civil.wide GROUP BY v ORDER BY v";
    let two = "SELECT v, count(DISTINCT k) AS n, count(DISTINCT k / 2) AS m FROM civil.wide GROUP BY v ORDER BY v";
    let mut statuses = Vec::new();
    for sql in [one, two] {
        statuses.push(ask(sql).await.unwrap().status());
    }
    let (a, b, c) = tokio::join!(ask(one), ask(two), ask(one));
    statuses.extend([a, b, c].into_iter().map(|r| r.unwrap().status()));
    let grown = peak_rss(child.id()).saturating_sub(baseline);
    eprintln!("statuses {statuses:?}, peak grew {} MiB", grown >> 20);
    // Refused for memory (422), or past the deadline (504) while waiting for room on a busy
    // machine: never a 500.
    assert!(statuses.iter().all(|s| s.is_success() || [422, 503, 504].contains(&s.as_u16())), "{statuses:?}");
    assert!(
        [0, 2, 4].iter().any(|&i| statuses[i].is_success()),
        "one distinct count is answered (spilling): {statuses:?}"
    );
    // 128 MiB of pools, and what reading and answering take outside them.
    assert!(grown < 384 << 20, "the server's peak memory grew by {} MiB", grown >> 20);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}
