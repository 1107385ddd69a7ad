//! Dataset registration over HTTP: every format, every validation error (and that nothing was
//! stored), import-path escapes, atomicity, versions, retirement and restarts.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use veil_tests::TestServer;

/// A server with departments civil and health and a steward in each.
async fn setup() -> (TestServer, String, String) {
    let s = TestServer::start().await;
    s.department("civil", "民政局").await;
    s.department("health", "卫健委").await;
    let civil = s.user("civil-steward", Some("civil"), &["steward"]).await;
    let health = s.user("health-steward", Some("health"), &["steward"]).await;
    (s, civil, health)
}

const CSV: &str = "person_id,district,age,subsidy\n110105194912310021,朝阳区,76,800.5\n110108195003150032,海淀区,75,\n110101195107200043,东城区,74,1200\n";

fn metadata() -> Value {
    json!({
        "name": "elderly", "department": "civil", "level": "L3",
        "description": "elderly registry", "privacy_unit": "person_id",
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true},
            "district": {"tag": "quasi_identifier"},
            "age": {"tag": "quasi_identifier", "bounds": [60, 120]},
            "subsidy": {"tag": "sensitive", "bounds": [0, 3000]}
        }
    })
}

/// `base` with the value at a JSON pointer set (the parent object must exist).
fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect(pointer);
    let parent = if parent.is_empty() { &mut base } else { base.pointer_mut(parent).expect(parent) };
    parent.as_object_mut().expect("object").insert(key.to_owned(), value);
    base
}

async fn assert_nothing_registered(s: &TestServer, token: &str) {
    let (status, _) = s.get("/v1/datasets/civil.elderly", token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused registration left a dataset behind");
    assert!(s.stored_files().is_empty(), "a refused registration left files: {:?}", s.stored_files());
}

#[tokio::test]
async fn csv_upload_registers_metadata_only_is_shown() {
    let (s, civil, health) = setup().await;
    let (status, body) = s.upload(&civil, &metadata(), CSV.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "civil.elderly");
    assert_eq!(body["row_count"], 3);
    assert_eq!(body["version"], 1);
    assert_eq!(body["level_label"], "一般数据3级");
    let columns: Vec<(String, String, String)> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["name"].as_str().unwrap().into(), c["tag"].as_str().unwrap().into(), c["type"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("person_id".into(), "identifier".into(), "Utf8".into()),
            ("district".into(), "quasi_identifier".into(), "Utf8".into()),
            ("age".into(), "quasi_identifier".into(), "Int64".into()),
            ("subsidy".into(), "sensitive".into(), "Float64".into()),
        ]
    );
    // Another department's steward sees the metadata, and no value from the file anywhere.
    let (status, shown) = s.get("/v1/datasets/civil.elderly", &health).await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = s.get("/v1/datasets", &health).await;
    for text in [shown.to_string(), listed.to_string()] {
        assert!(!text.contains("110105194912310021") && !text.contains("800.5"), "a data value leaked: {text}");
    }
}

/// A dry run checks what a registration checks, every row included, answers what it would store,
/// is recorded, and stores nothing; then the same files register.
#[tokio::test]
async fn a_dry_run_checks_everything_and_stores_nothing() {
    let (s, civil, _) = setup().await;
    let dry = with(metadata(), "/dry_run", json!(true));
    let (status, body) = s.upload(&civil, &dry, CSV.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["dataset"], &body["rows"], &body["stored"]), (&json!("civil.elderly"), &json!(3), &json!(false)));
    assert_eq!(body["one_row_per_unit"], true, "{body}");
    let types: Vec<&str> = body["columns"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Utf8", "Utf8", "Int64", "Float64"]);
    assert!(!body.to_string().contains("110105194912310021"), "no value in the answer: {body}");
    assert_nothing_registered(&s, &civil).await;
    let checked = s.audit_records().into_iter().find(|r| r.entry.action == "dataset.check").expect("recorded");
    assert!(checked.entry.detail.unwrap().contains("nothing stored"));

    // A bad file gets the registration's own refusal.
    let bad = format!("{CSV}110101195107200044,西城区,old,10\n").into_bytes();
    let (status, body) = s.upload(&civil, &dry, bad.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(s.upload(&civil, &metadata(), bad).await, (status, body));
    assert_nothing_registered(&s, &civil).await;

    let (status, body) = s.upload(&civil, &metadata(), CSV.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Utf8, false),
        Field::new("district", DataType::Utf8, true),
        Field::new("age", DataType::Float64, true),
        Field::new("subsidy", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(StringArray::from(vec!["朝阳区", "海淀区"])),
            Arc::new(Float64Array::from(vec![70.0, 80.0])),
            Arc::new(Float64Array::from(vec![100.0, 200.0])),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn parquet_and_arrow_file_and_stream_uploads_register() {
    let (s, civil, _) = setup().await;
    let b = batch();
    let mut parquet_bytes = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut parquet_bytes, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }
    let mut file_bytes = Vec::new();
    {
        let mut w = arrow::ipc::writer::FileWriter::try_new(&mut file_bytes, &b.schema()).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
    }
    let mut stream_bytes = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut stream_bytes, &b.schema()).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
    }
    for (i, (bytes, format)) in
        [(parquet_bytes, "parquet"), (file_bytes, "arrow_file"), (stream_bytes, "arrow_stream")].into_iter().enumerate()
    {
        let (status, body) = s.upload(&civil, &metadata(), bytes).await;
        assert_eq!(status, StatusCode::CREATED, "{format}: {body}");
        assert_eq!(body["version"], i as i64 + 1);
        assert_eq!(body["row_count"], 2);
        assert_eq!(body["versions"][i]["source_format"], format);
    }
}

#[tokio::test]
async fn every_validation_error_is_named_and_registers_nothing() {
    let (s, civil, _) = setup().await;
    let csv = CSV.as_bytes().to_vec();
    /// What is wrong, metadata, file, expected status, code, and a word the message must name.
    type Case = (&'static str, Value, Vec<u8>, StatusCode, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            "unknown level",
            with(metadata(), "/level", json!("L5")),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_level",
            "L5",
        ),
        (
            "unknown tag",
            with(metadata(), "/columns/district/tag", json!("secret")),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_tag",
            "`district`",
        ),
        (
            "untagged column",
            {
                let mut m = metadata();
                m["columns"].as_object_mut().unwrap().remove("district");
                m
            },
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "untagged_column",
            "`district`",
        ),
        (
            "tag for a column not in the file",
            with(metadata(), "/columns/income", json!({"tag": "sensitive"})),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_column",
            "`income`",
        ),
        (
            "privacy unit not an identifier",
            with(metadata(), "/privacy_unit", json!("district")),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "privacy_unit_not_identifier",
            "`district`",
        ),
        (
            "linkable non-identifier",
            with(metadata(), "/columns/district/linkable", json!(true)),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "linkable_not_identifier",
            "`district`",
        ),
        (
            "bounds on a text column",
            with(metadata(), "/columns/district/bounds", json!([0, 1])),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bounds_not_numeric",
            "`district`",
        ),
        (
            "inverted bounds",
            with(metadata(), "/columns/age/bounds", json!([120, 60])),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bounds_invalid",
            "`age`",
        ),
        (
            "no privacy unit at L3",
            with(metadata(), "/privacy_unit", Value::Null),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "privacy_unit_required",
            "L3",
        ),
        (
            "CSV value that does not parse",
            with(metadata(), "/columns/age/type", json!("int64")),
            format!("{CSV}110105194912310054,朝阳区,seventy,10\n").into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "csv_value",
            "line 5, column `age`",
        ),
        (
            "CSV row with a missing field",
            metadata(),
            format!("{CSV}110105194912310054,朝阳区\n").into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "csv_malformed",
            "line 5",
        ),
        (
            "declared type differs",
            with(metadata(), "/columns/district/type", json!("int64")),
            csv.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "csv_value",
            "column `district`",
        ),
        (
            "unknown metadata field",
            with(metadata(), "/colour", json!("red")),
            csv.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
            "colour",
        ),
        (
            "another department",
            with(metadata(), "/department", json!("health")),
            csv.clone(),
            StatusCode::FORBIDDEN,
            "forbidden",
            "health",
        ),
        (
            "bad dataset name",
            with(metadata(), "/name", json!("Elderly People")),
            csv.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "dataset name",
        ),
    ];
    for (what, meta, file, want_status, want_code, want_in_message) in cases {
        let (status, body) = s.upload(&civil, &meta, file).await;
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(body["error"]["code"], want_code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(want_in_message), "{what}: message `{message}` should mention {want_in_message}");
        assert!(
            !message.contains("seventy") && !message.contains("110105194912310054"),
            "{what}: a value leaked: {message}"
        );
        assert_nothing_registered(&s, &civil).await;
    }
}

#[tokio::test]
async fn malformed_uploads_are_400() {
    let (s, civil, _) = setup().await;
    let only_metadata =
        reqwest::multipart::Form::new().part("metadata", reqwest::multipart::Part::text(metadata().to_string()));
    let (status, body) = s.send(s.request(Method::POST, "/v1/datasets", Some(&civil)).multipart(only_metadata)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("file_required")));
    let only_file =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(CSV.as_bytes().to_vec()));
    let (status, body) = s.send(s.request(Method::POST, "/v1/datasets", Some(&civil)).multipart(only_file)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("metadata_required")));
    let bad_json = reqwest::multipart::Form::new().part("metadata", reqwest::multipart::Part::text("{not json"));
    let (status, body) = s.send(s.request(Method::POST, "/v1/datasets", Some(&civil)).multipart(bad_json)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_metadata")));
    let (status, body) = s.send(s.request(Method::POST, "/v1/datasets", Some(&civil)).body("x")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_media_type")));
    assert_nothing_registered(&s, &civil).await;
}

#[tokio::test]
async fn analysts_auditors_and_admins_cannot_register() {
    let (s, _, _) = setup().await;
    let analyst = s.user("civil-analyst", Some("civil"), &["analyst"]).await;
    for token in [analyst.as_str(), s.admin.as_str()] {
        let (status, _) = s.upload(token, &metadata(), CSV.as_bytes().to_vec()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn import_root_registers_and_refuses_paths_that_escape() {
    let (s, civil, _) = setup().await;
    std::fs::create_dir(s.import_root().join("civil")).unwrap();
    std::fs::write(s.import_root().join("civil/elderly.csv"), CSV).unwrap();
    std::fs::write(s.scratch().join("outside.csv"), CSV).unwrap();
    std::os::unix::fs::symlink(s.scratch().join("outside.csv"), s.import_root().join("link.csv")).unwrap();
    std::os::unix::fs::symlink(s.scratch(), s.import_root().join("linkdir")).unwrap();
    let outside = s.scratch().join("outside.csv").display().to_string();
    for source in [
        "../outside.csv",
        "civil/../../outside.csv",
        outside.as_str(),
        "link.csv",
        "linkdir/outside.csv",
        "missing.csv",
        "",
    ] {
        let (status, body) = s.post("/v1/datasets", &civil, with(metadata(), "/source", json!(source))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{source}: {body}");
        assert_eq!(body["error"]["code"], "import_path_refused", "{source}: {body}");
        assert_nothing_registered(&s, &civil).await;
    }
    let (status, body) = s.post("/v1/datasets", &civil, with(metadata(), "/source", json!("civil/elderly.csv"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["row_count"], 3);
    assert!(s.import_root().join("civil/elderly.csv").exists(), "the imported file is left where it was");
}

#[tokio::test]
async fn a_failure_mid_ingest_leaves_no_trace() {
    let (s, civil, _) = setup().await;
    // Far more rows than one batch or one row group, with a bad value near the end, so that
    // part of the file has been converted and written when the error is found.
    let mut csv = String::from("person_id,district,age,subsidy\n");
    for i in 0..200_000u32 {
        csv.push_str(&format!("p{i},朝阳区,{},{}\n", 60 + i % 40, i % 3000));
    }
    csv.push_str("p-bad,朝阳区,not-a-number,1\n");
    let meta = with(metadata(), "/columns/age/type", json!("int64"));
    let (status, body) = s.upload(&civil, &meta, csv.into_bytes()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 200002"), "{body}");
    assert_nothing_registered(&s, &civil).await;
    // And the catalogue is intact: a good registration still works afterwards.
    assert_eq!(s.upload(&civil, &metadata(), CSV.as_bytes().to_vec()).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn versions_retirement_and_restart() {
    let (s, civil, health) = setup().await;
    assert_eq!(s.upload(&civil, &metadata(), CSV.as_bytes().to_vec()).await.0, StatusCode::CREATED);
    let v2 = with(metadata(), "/level", json!("L4"));
    let (status, body) = s.upload(&civil, &v2, format!("{CSV}110101195107200051,东城区,90,0\n").into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["version"].as_i64(), body["level"].as_str(), body["row_count"].as_u64()),
        (Some(2), Some("L4"), Some(4))
    );
    assert_eq!(body["versions"].as_array().unwrap().len(), 2);

    let retire = |token: &str| s.request(Method::DELETE, "/v1/datasets/civil.elderly", Some(token));
    assert_eq!(s.send(retire(&health)).await.0, StatusCode::FORBIDDEN, "another department's steward cannot retire");
    let s = s.restart().await;
    let (status, body) = s.get("/v1/datasets/civil.elderly", &health).await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::OK, Some(2)), "a restart keeps versions: {body}");
    let files = s.stored_files();
    assert_eq!(files.len(), 2, "both versions' files survive a restart: {files:?}");

    let retire = s.request(Method::DELETE, "/v1/datasets/civil.elderly", Some(&civil));
    assert_eq!(s.send(retire).await.0, StatusCode::NO_CONTENT);
    let (_, listed) = s.get("/v1/datasets", &civil).await;
    assert_eq!(listed, json!([]), "retired datasets leave the listing");
    let (_, all) = s.get("/v1/datasets?include_retired=true", &civil).await;
    assert!(all[0]["retired_at"].is_string(), "{all}");
    let again = s.request(Method::DELETE, "/v1/datasets/civil.elderly", Some(&civil));
    assert_eq!(s.send(again).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.get("/v1/datasets/civil.nothing", &civil).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.get("/v1/datasets/not-a-ref", &civil).await.0, StatusCode::BAD_REQUEST);
}

/// A version that drops a column, reads one as another type, tags one otherwise or has another
/// privacy unit is refused, dry run or not, naming each change and storing nothing, until the
/// steward names the columns in `confirm_changes`.
#[tokio::test]
async fn a_version_dropping_or_retyping_a_column_needs_confirming() {
    let (s, civil, _) = setup().await;
    assert_eq!(s.upload(&civil, &metadata(), CSV.as_bytes().to_vec()).await.0, StatusCode::CREATED);
    let mut v2 = metadata();
    v2["columns"].as_object_mut().unwrap().remove("district");
    let csv = "person_id,age,subsidy\n110105194912310021,76.5,800.5\n110108195003150032,75.5,\n";
    let version = || async { s.get("/v1/datasets/civil.elderly", &civil).await.1["version"].as_i64() };

    for metadata in [
        v2.clone(),
        with(v2.clone(), "/dry_run", json!(true)),
        with(v2.clone(), "/confirm_changes", json!(["district"])),
    ] {
        let (status, body) = s.upload(&civil, &metadata, csv.as_bytes().to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("column_change_unconfirmed")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("reads `age` as Float64 where version 1 has Int64"), "{message}");
        assert_eq!(message.contains("drops `district`"), metadata.get("confirm_changes").is_none(), "{message}");
        assert!(!message.contains("76.5"), "no value in the error: {message}");
        assert_eq!(version().await, Some(1), "a refused version was stored");
        assert_eq!(s.stored_files().len(), 1);
    }

    let confirmed = with(v2, "/confirm_changes", json!(["district", "age"]));
    let (status, body) =
        s.upload(&civil, &with(confirmed.clone(), "/dry_run", json!(true)), csv.as_bytes().to_vec()).await;
    assert_eq!((status, &body["stored"]), (StatusCode::OK, &json!(false)), "{body}");
    let (status, body) = s.upload(&civil, &confirmed, csv.as_bytes().to_vec()).await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::CREATED, Some(2)), "{body}");
    // The next version keeps v2's columns: nothing to confirm.
    let same = with(confirmed, "/confirm_changes", json!([]));
    let (status, body) = s.upload(&civil, &same, csv.as_bytes().to_vec()).await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::CREATED, Some(3)), "{body}");
    // Another tag, or another privacy unit, is a change too.
    let retagged = with(same.clone(), "/columns/subsidy", json!({"tag": "attribute"}));
    let retagged = with(retagged, "/columns/person_id", json!({"tag": "identifier"}));
    let retagged = with(with(retagged, "/privacy_unit", Value::Null), "/level", json!("L2"));
    let (status, body) = s.upload(&civil, &retagged, csv.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tags `subsidy` attribute where version 3 tags it sensitive"), "{message}");
    assert!(message.contains("does not have `person_id` as its privacy unit"), "{message}");
    let confirmed = with(retagged, "/confirm_changes", json!(["subsidy", "person_id"]));
    let (status, body) = s.upload(&civil, &confirmed, csv.as_bytes().to_vec()).await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::CREATED, Some(4)), "{body}");
}

/// A version whose people were re-keyed (every row as before but for a new person id) is
/// refused until the steward confirms the privacy unit: extracts tell people apart across
/// versions by it (a red team re-keyed everybody and added one person, and the two versions'
/// extracts, compared as two populations, gave that person's row). New people with rows like
/// others' are no re-keying.
#[tokio::test]
async fn a_version_that_rekeys_its_people_needs_confirming() {
    let (s, civil, _) = setup().await;
    let rows = |prefix: &str, extra: bool| {
        let mut csv = String::from("person_id,district,age,subsidy\n");
        for i in 0..40 {
            csv.push_str(&format!("{prefix}{i:04},朝阳区,{},{}\n", 60 + i % 40, 100 + i * 7));
        }
        if extra {
            csv.push_str(&format!("{prefix}9999,海淀区,77,2999\n"));
        }
        csv
    };
    assert_eq!(s.upload(&civil, &metadata(), rows("P", false).into_bytes()).await.0, StatusCode::CREATED);
    let (status, body) = s.upload(&civil, &metadata(), rows("X", true).into_bytes()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("column_change_unconfirmed")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("re-keys its people: 40 of its 41 rows") && message.contains("`person_id`"), "{message}");
    assert!(!message.contains("X0001") && !message.contains("P0001"), "no value in the error: {message}");
    // Half of them re-keyed is still a re-keying; a few are corrections.
    let half: String = rows("P", true)
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{}\n", if i % 2 == 1 { l.replacen('P', "X", 1) } else { l.to_owned() }))
        .collect();
    assert_eq!(s.upload(&civil, &metadata(), half.into_bytes()).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let few: String = rows("P", true)
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{}\n", if i < 4 { l.replacen('P', "X", 1) } else { l.to_owned() }))
        .collect();
    assert_eq!(s.upload(&civil, &metadata(), few.into_bytes()).await.0, StatusCode::CREATED);
    let confirmed = with(metadata(), "/confirm_changes", json!(["person_id"]));
    let (status, body) = s.upload(&civil, &confirmed, rows("X", true).into_bytes()).await;
    assert_eq!((status, body["version"].as_i64()), (StatusCode::CREATED, Some(3)), "{body}");
}

/// A registration named with `Veil-Upload-Id` can be followed by its uploader: bytes received
/// and rows read, then `done` (or `failed` for a refused one); nobody else sees it, and an id is
/// not reused while tracked.
#[tokio::test]
async fn a_named_upload_reports_its_progress_to_its_uploader() {
    let (s, civil, health) = setup().await;
    let named = |id: &str, metadata: &Value, file: &str| {
        let form = reqwest::multipart::Form::new()
            .part("metadata", reqwest::multipart::Part::text(metadata.to_string()))
            .part("file", reqwest::multipart::Part::bytes(file.as_bytes().to_vec()).file_name("data"));
        s.request(Method::POST, "/v1/datasets", Some(&civil)).header("veil-upload-id", id).multipart(form)
    };
    let (status, body) = s.send(named("up-1", &metadata(), CSV)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, progress) = s.get("/v1/uploads/up-1", &civil).await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(progress, json!({"stage": "done", "bytes_received": CSV.len(), "rows_read": 3}));
    assert_eq!(s.get("/v1/uploads/up-1", &health).await.0, StatusCode::NOT_FOUND, "only the uploader sees it");
    let (status, body) = s.send(named("up-1", &metadata(), CSV)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("upload_id_in_use")), "{body}");

    let bad = format!("{CSV}110101195107200044,西城区,old,10\n");
    let (status, _) = s.send(named("up-2", &metadata(), &bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, progress) = s.get("/v1/uploads/up-2", &civil).await;
    assert_eq!(progress["stage"], "failed", "{progress}");
    let (status, body) = s.send(named("no/slash", &metadata(), CSV)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_upload_id")),
        "{body}"
    );
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_stores_nothing() {
    let s = TestServer::start_with(64 * 1024).await;
    s.department("civil", "民政局").await;
    let civil = s.user("civil-steward", Some("civil"), &["steward"]).await;
    let mut csv = String::from("person_id,district,age,subsidy\n");
    while csv.len() < 256 * 1024 {
        csv.push_str("p,朝阳区,70,1\n");
    }
    let (status, body) = s.upload(&civil, &metadata(), csv.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_nothing_registered(&s, &civil).await;
}

/// A steward's register as an `.xlsx` workbook: the sheet named in the metadata, its header
/// below two blank rows, Excel dates and numbers, registered like the CSV it would be.
#[tokio::test]
async fn a_spreadsheet_sheet_registers_as_its_csv_would() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let (s, civil, _) = setup().await;
    let mut workbook = Workbook::new();
    workbook.add_worksheet().set_name("说明").unwrap().write_string(0, 0, "民政局名册").unwrap();
    let sheet = workbook.add_worksheet().set_name("名册").unwrap();
    for (col, name) in ["person_id", "name", "birth_date", "subsidy"].iter().enumerate() {
        sheet.write_string(2, col as u16, *name).unwrap();
    }
    let date = Format::new().set_num_format("yyyy年m月d日");
    for (i, (id, y)) in [("110105194912310021", 1949), ("110105195003150032", 1950), ("110105195107200043", 1951)]
        .into_iter()
        .enumerate()
    {
        let row = 3 + i as u32;
        sheet.write_string(row, 0, id).unwrap();
        sheet.write_string(row, 1, format!("居民{i}")).unwrap();
        sheet.write_datetime_with_format(row, 2, ExcelDateTime::from_ymd(y, 6, 1).unwrap(), &date).unwrap();
        sheet.write_number(row, 3, 1000.5 + f64::from(i as u32)).unwrap();
    }
    let bytes = workbook.save_to_buffer().unwrap();
    let metadata = json!({
        "name": "register", "department": "civil", "level": "L3", "privacy_unit": "person_id", "sheet": "名册",
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true},
            "name": {"tag": "identifier"},
            "birth_date": {"tag": "quasi_identifier"},
            "subsidy": {"tag": "sensitive", "bounds": [0, 3000]}
        }
    });
    let (status, body) = s.upload(&civil, &metadata, bytes).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (&body["row_count"], &body["versions"][0]["source_format"]),
        (&json!(3), &json!("spreadsheet")),
        "{body}"
    );
    let types: Vec<&str> = body["columns"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Utf8", "Utf8", "Date32", "Float64"], "{body}");
}

/// The same fifty people as departments really send them, each file registered end to end:
/// CRLF lines; a byte-order mark and semicolons; GB18030 and tabs; UTF-16 with its mark and
/// bars; dates in four hand-entered forms row by row with quoted thousands separators and
/// full-width digits; a workbook whose header is on its third row. Each holds fifty rows of
/// the same types. And the errors of such files name their line (CRLF counted once) and column,
/// never the value.
#[tokio::test]
async fn a_corpus_of_messy_files_registers_with_exact_rows_and_types() {
    use rust_xlsxwriter::Workbook;
    let (s, civil, _) = setup().await;
    let districts = ["朝阳区", "海淀区", "东城区", "西城区", "丰台区"];
    // Per person: id, district, birth date (y, m, d), subsidy in cents, age.
    type Person = (String, &'static str, (i32, u32, u32), u64, u64);
    let people: Vec<Person> = (0..50u64)
        .map(|i| {
            let (y, m, d) = (1940 + (i % 30) as i32, 1 + (i % 12) as u32, 1 + (i % 28) as u32);
            (format!("1101051{i:011}"), districts[i as usize % 5], (y, m, d), 100_000 + i * 2_537, 60 + i % 40)
        })
        .collect();
    let header = ["person_id", "district", "birth_date", "subsidy", "age"];
    let plain = |sep: &str, eol: &str| -> String {
        let mut text = header.join(sep) + eol;
        for (id, district, (y, m, d), cents, age) in &people {
            let fields = [
                id.clone(),
                district.to_string(),
                format!("{y}-{m:02}-{d:02}"),
                format!("{}.{:02}", cents / 100, cents % 100),
                age.to_string(),
            ];
            text.push_str(&(fields.join(sep) + eol));
        }
        text
    };
    let hand_kept = || -> String {
        let full_width = |n: u64| -> String {
            n.to_string().chars().map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).unwrap_or(c)).collect()
        };
        let mut text = header.join(",") + "\n";
        for (i, (id, district, (y, m, d), cents, age)) in people.iter().enumerate() {
            let date = match i % 4 {
                0 => format!("{y}-{m:02}-{d:02}"),
                1 => format!("{y}/{m}/{d}"),
                2 => format!("{y}年{m}月{d}日"),
                _ => format!("{y}{m:02}{d:02}"),
            };
            let whole = cents / 100;
            let grouped =
                if whole >= 1000 { format!("{},{:03}", whole / 1000, whole % 1000) } else { whole.to_string() };
            text.push_str(&format!("{id},{district},{date},\"{grouped}.{:02}\",{}\n", cents % 100, full_width(*age)));
        }
        text
    };
    let utf16 = |text: &str| -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    };
    let workbook = || -> Vec<u8> {
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        sheet.write_string(0, 0, "民政局 高龄补贴名册").unwrap();
        for (col, name) in header.iter().enumerate() {
            sheet.write_string(2, col as u16, *name).unwrap();
        }
        for (i, (id, district, (y, m, d), cents, age)) in people.iter().enumerate() {
            let row = 3 + i as u32;
            sheet.write_string(row, 0, id).unwrap();
            sheet.write_string(row, 1, *district).unwrap();
            sheet.write_string(row, 2, format!("{y}-{m:02}-{d:02}")).unwrap();
            sheet.write_number(row, 3, *cents as f64 / 100.0).unwrap();
            sheet.write_number(row, 4, *age as f64).unwrap();
        }
        book.save_to_buffer().unwrap()
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("crlf", plain(",", "\r\n").into_bytes()),
        ("bom_semicolon", [&[0xEF, 0xBB, 0xBF][..], plain(";", "\n").as_bytes()].concat()),
        ("gb18030_tab", encoding_rs::GB18030.encode(&plain("\t", "\n")).0.into_owned()),
        ("utf16_bar", utf16(&plain("|", "\r\n"))),
        ("hand_kept", hand_kept().into_bytes()),
        ("workbook", workbook()),
    ];
    let named = |name: &str| {
        let mut metadata = with(metadata(), "/name", json!(name));
        metadata["columns"]["birth_date"] = json!({"tag": "quasi_identifier"});
        metadata["columns"]["age"] = json!({"tag": "quasi_identifier"});
        metadata
    };
    for (name, bytes) in files {
        let (status, body) = s.upload(&civil, &named(name), bytes).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(body["row_count"], json!(50), "{name}: {body}");
        let types: Vec<&str> =
            body["columns"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["Utf8", "Utf8", "Date32", "Float64", "Int64"], "{name}: {body}");
    }
    // A date that is no date on the 38th line of a CRLF file (the 37th person), and a subsidy
    // that is no number on the 12th: each named by line and column, never the value.
    for (line, column, bad) in [(38, "birth_date", "1979-13-45"), (12, "subsidy", "12,34")] {
        let mut lines: Vec<String> = plain(",", "\r\n").split("\r\n").map(str::to_owned).collect();
        let mut fields: Vec<String> = lines[line - 1].split(',').map(str::to_owned).collect();
        fields[header.iter().position(|h| *h == column).unwrap()] = format!("\"{bad}\"");
        lines[line - 1] = fields.join(",");
        // Declared, as a steward does once a draft has told the types (inferred, a column with
        // a value in no form would be text).
        let mut metadata = named(&format!("bad_{column}"));
        metadata["columns"]["birth_date"]["type"] = json!("date");
        metadata["columns"]["subsidy"]["type"] = json!("float64");
        let (status, body) = s.upload(&civil, &metadata, lines.join("\r\n").into_bytes()).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{column}: {body}");
        assert!(message.contains(&format!("line {line}")) && message.contains(column), "{column}: {message}");
        assert!(!message.contains(bad), "{column}: the value in {message}");
        assert!(column != "birth_date" || message.contains("2024年1月5日"), "the forms expected: {message}");
    }
}

/// `POST /v1/datasets/draft`: a steward's file drafted into a metadata document with a reason
/// per tag; nothing registered, nothing of the file kept or recorded.
#[tokio::test]
async fn a_draft_suggests_metadata_and_registers_nothing() {
    let (s, civil, health) = setup().await;
    let draft = |token: &str| {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(CSV.as_bytes().to_vec()).file_name("elderly.csv"));
        s.request(Method::POST, "/v1/datasets/draft", Some(token)).multipart(form).send()
    };
    let response = draft(&civil).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let columns = &body["metadata"]["columns"];
    assert_eq!((&columns["person_id"]["tag"], &columns["person_id"]["linkable"]), (&json!("identifier"), &json!(true)));
    assert_eq!(body["metadata"]["privacy_unit"], "person_id");
    assert_eq!((&columns["age"]["tag"], &columns["age"]["generalize"]), (&json!("quasi_identifier"), &json!("band:5")));
    assert_eq!(
        (&columns["subsidy"]["tag"], &columns["subsidy"]["bounds"]),
        (&json!("sensitive"), &json!([800.5, 1200.0]))
    );
    assert_eq!(body["metadata"]["department"], "civil");
    assert_eq!(body["reasons"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(s.get("/v1/datasets", &civil).await.1, json!([]), "nothing registered");
    let record = s.audit_records().into_iter().find(|r| r.entry.action == "dataset.draft").expect("recorded");
    let text = serde_json::to_string(&record).unwrap();
    assert!(!text.contains("110105194912310021") && !text.contains("800.5"), "no value recorded: {text}");
    // A steward drafts for their own department only; an analyst not at all.
    assert_eq!(draft(&health).await.unwrap().status(), StatusCode::OK);
    let analyst = s.user("civil-analyst-d", Some("civil"), &["analyst"]).await;
    assert_eq!(draft(&analyst).await.unwrap().status(), StatusCode::FORBIDDEN);
}

/// A register of several rows a person says how many of its rows lie beyond each person's
/// `max_groups × max_rows`, which dp and anonymized answers leave out (under the default caps of
/// one row a person, every row but a person's first): to its own department only, since it is
/// read from the rows.
#[tokio::test]
async fn a_register_says_how_many_rows_its_caps_leave_out() {
    let (s, civil, health) = setup().await;
    let visits = json!({
        "name": "visits", "department": "civil", "level": "L2", "privacy_unit": "person_id",
        "columns": {"person_id": {"tag": "identifier", "linkable": true}, "code": {"tag": "sensitive"}}
    });
    let csv = "person_id,code\nP1,a\nP1,b\nP1,c\nP2,a\nP3,a\nP3,b\n";
    let (status, body) = s.upload(&civil, &visits, csv.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["row_count"].as_u64(), body["rows_over_caps"].as_u64()), (Some(6), Some(3)), "{body}");
    // Caps that hold everybody's rows leave none out.
    let held = with(visits.clone(), "/dp", json!({"max_groups": 1, "max_rows": 3}));
    let (status, body) = s.upload(&civil, &held, csv.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["rows_over_caps"].as_u64(), Some(0), "{body}");
    // Another department sees neither the rows nor what the caps leave out.
    let (_, shown) = s.get("/v1/datasets/civil.visits", &health).await;
    assert!(shown["row_count"].is_null() && shown.get("rows_over_caps").is_none(), "{shown}");
}
