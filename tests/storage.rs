//! A full disk (issue: a full disk killed the service while health said ok): on a small disk of
//! its own, a registration that does not fit is answered 507 and recorded, a request whose
//! record does not fit is refused with 503, readiness says which part cannot work, and once
//! there is room again the server takes requests by itself, the audit log's chain whole and its
//! gap explained. Needs a tmpfs the tests may mount (root, or a runner that allows it); where
//! the machine does not allow it, the test says so and checks nothing.

#![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use veil_tests::TestServer;
use veil_tests::world::world_on;

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: this machine does not let the tests mount a tmpfs ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: no mount command to make a small disk ({e})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk, then frees `leave` bytes of it again.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let block = vec![0u8; 1 << 16];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        let size = file.metadata().unwrap().len();
        file.set_len(size.saturating_sub(leave)).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A CSV of about `rows` × 60 bytes about nobody.
fn stops_csv(rows: usize) -> Vec<u8> {
    let mut csv = String::from("district,stop,note\n");
    for i in 0..rows {
        csv.push_str(&format!("甲区,stop-{i:08},a note long enough to take some room {i:012}\n"));
    }
    csv.into_bytes()
}

fn stops_metadata(name: &str) -> Value {
    json!({
        "name": name, "department": "civil", "level": "L1",
        "columns": {"district": {"tag": "attribute"}, "stop": {"tag": "attribute"}, "note": {"tag": "attribute"}}
    })
}

async fn readiness(s: &TestServer) -> (StatusCode, Value) {
    s.send(s.request(Method::GET, "/readyz", None)).await
}

#[tokio::test]
async fn a_full_disk_is_answered_507_and_the_server_recovers_by_itself_when_room_returns() {
    let Some(disk) = SmallDisk::mount("100m") else { return };
    let w = world_on(TestServer::start_in(disk.path()).await).await;
    let count = "SELECT count(*) AS n FROM civil.residents";
    w.ok(count).await;
    let (status, body) = readiness(&w.s).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Room for an audit record, not for a 3 MB upload: 507, recorded, nothing stored.
    let filler = disk.fill(256 << 10);
    let (status, body) = w.s.upload(&w.civil_steward, &stops_metadata("stops"), stops_csv(50_000)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    assert!(!body.to_string().contains(&disk.path().display().to_string()), "no path in the answer: {body}");
    let refused =
        w.s.audit_records().into_iter().rev().find(|r| r.entry.target.as_deref() == Some("POST /v1/datasets"));
    assert!(refused.is_some(), "the refused registration is recorded");
    assert!(!w.s.stored_files().iter().any(|p| p.to_string_lossy().contains("stops")), "nothing of it stored");

    // No room at all: a query cannot be recorded, so it is refused, and readiness says why.
    disk.fill(0);
    // The log's last page may still hold a few records: ask until one does not fit.
    let mut answer = (StatusCode::OK, Value::Null);
    for _ in 0..200 {
        answer = w.query(&w.civil_analyst, "aggregate", count).await;
        if answer.0 != StatusCode::OK {
            break;
        }
    }
    let (status, body) = answer;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    let (status, body) = readiness(&w.s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!((&body["audit"], &body["disk"]), (&json!("cannot write"), &json!("low")), "{body}");

    // Room again: ready within a few seconds without a request or a restart.
    std::fs::remove_file(&filler).unwrap();
    let ready = async {
        loop {
            if readiness(&w.s).await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), ready).await.expect("ready again once there is room");
    w.ok(count).await;
    let (status, body) = w.s.upload(&w.civil_steward, &stops_metadata("stops"), stops_csv(50_000)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The chain is whole, and says where it stopped and how many entries it refused.
    let (status, verified) = w.s.get("/v1/audit/verify", &w.auditor).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    let resumed =
        w.s.audit_records().into_iter().find(|r| r.entry.action == "audit.resumed").expect("a record of the gap");
    let detail = resumed.entry.detail.unwrap();
    assert!(detail.contains("entries were refused meanwhile") && !detail.contains(" 0 entries"), "{detail}");
}
