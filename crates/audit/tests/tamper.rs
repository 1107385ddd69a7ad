//! Tampering with a closed log, and reopening after an unfinished write: each test edits the
//! files the way an attacker (or a crash) would and checks what `verify` and `open` say.

#![allow(clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use veil_audit::{AuditLog, Entry, Options, PublicKey, Record, SigningKey, decode_line, encode_line, verify};

struct Fixture {
    _root: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("audit");
        let key = root.path().join("audit.key");
        Self { _root: root, dir, key }
    }

    fn open(&self, options: Options) -> AuditLog {
        AuditLog::open(&self.dir, &self.key, options).unwrap()
    }

    /// A closed log: `audit.open`, `n` query records, checkpoints every 5 records, and the final
    /// checkpoint written by close.
    fn with_records(n: u64) -> Self {
        let f = Self::new();
        let log = f.open(Options { checkpoint_every: 5, ..Options::default() });
        for i in 0..n {
            let mut entry = Entry::new("query", "allowed");
            entry.sql = Some(format!("SELECT count(*) FROM civil.residents -- {i}"));
            log.append_blocking(entry).unwrap();
        }
        close(&log);
        f
    }

    fn public_key(&self) -> PublicKey {
        SigningKey::load_or_create(&self.key).unwrap().public_key()
    }

    fn segment(&self) -> PathBuf {
        let mut segments: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("segment-"))
            .collect();
        segments.sort();
        segments.pop().unwrap()
    }

    fn lines(&self) -> Vec<Vec<u8>> {
        fs::read(self.segment()).unwrap().split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
    }

    fn write_lines(&self, lines: &[Vec<u8>]) {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
        }
        fs::write(self.segment(), bytes).unwrap();
    }

    fn report(&self) -> veil_audit::Report {
        verify(&self.dir, &self.public_key(), None).unwrap()
    }
}

fn close(log: &AuditLog) {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(log.close()).unwrap();
}

fn seq_of(line: &[u8]) -> u64 {
    decode_line(line).unwrap().0.seq
}

/// Re-encodes `records` as a consistent chain from `prev`, as someone with write access (but
/// without the signing key) would after editing one.
fn rechain(records: Vec<Record>, mut prev: String) -> Vec<Vec<u8>> {
    records
        .into_iter()
        .map(|mut r| {
            r.prev = prev.clone();
            let (mut line, hash) = encode_line(&r).unwrap();
            line.pop();
            prev = veil_common::hex::encode(&hash);
            line
        })
        .collect()
}

#[test]
fn an_untouched_log_verifies_and_ends_signed() {
    let f = Fixture::with_records(12);
    let report = f.report();
    assert!(report.ok(), "{report}");
    // audit.open + 12 queries + checkpoints after every 5 records + the final one from close.
    assert_eq!(report.records, 13 + 3);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.unsigned, 0);
    assert_eq!(report.signed_through, Some(report.head_seq - 1));
}

#[test]
fn flipping_one_byte_is_caught_at_that_record() {
    let f = Fixture::with_records(12);
    let mut lines = f.lines();
    let target = seq_of(&lines[6]);
    let at = lines[6].iter().position(|b| *b == b'-').unwrap();
    lines[6][at] = b'+';
    f.write_lines(&lines);
    let report = f.report();
    let problem = report.problem.unwrap();
    assert_eq!(problem.seq, target);
    assert_eq!(problem.line, 7);
    assert!(problem.why.contains("do not match its hash"), "{}", problem.why);
    assert_eq!(report.records, target - 1);
}

#[test]
fn deleting_a_record_is_caught() {
    let f = Fixture::with_records(12);
    let mut lines = f.lines();
    let removed = seq_of(&lines[4]);
    lines.remove(4);
    f.write_lines(&lines);
    let problem = f.report().problem.unwrap();
    assert_eq!(problem.seq, removed);
    assert!(problem.why.contains("removed, inserted or moved"), "{}", problem.why);
}

#[test]
fn swapping_two_records_is_caught() {
    let f = Fixture::with_records(12);
    let mut lines = f.lines();
    lines.swap(2, 3);
    f.write_lines(&lines);
    let problem = f.report().problem.unwrap();
    assert_eq!(problem.seq, 3);
    assert_eq!(problem.line, 3);
}

#[test]
fn inserting_a_record_is_caught() {
    let f = Fixture::with_records(12);
    let mut lines = f.lines();
    let copy = lines[3].clone();
    lines.insert(5, copy);
    f.write_lines(&lines);
    let problem = f.report().problem.unwrap();
    assert_eq!(problem.seq, 6);
}

#[test]
fn truncating_mid_record_is_caught_and_at_a_record_boundary_leaves_an_unsigned_tail() {
    let f = Fixture::with_records(12);
    let bytes = fs::read(f.segment()).unwrap();
    fs::write(f.segment(), &bytes[..bytes.len() - 30]).unwrap();
    let problem = f.report().problem.unwrap();
    assert!(problem.why.contains("incomplete"), "{}", problem.why);

    // Cut the last three whole records (the final checkpoint among them): every record left
    // verifies, but the report says plainly that the tail is not signed.
    let mut lines = f.lines();
    lines.truncate(lines.len() - 3);
    f.write_lines(&lines);
    let report = f.report();
    assert!(report.ok(), "{report}");
    assert!(report.unsigned > 0);
    assert!(report.to_string().contains("not covered by a signed checkpoint"), "{report}");
}

#[test]
fn a_consistently_rewritten_chain_fails_at_the_first_checkpoint() {
    let f = Fixture::with_records(12);
    let lines = f.lines();
    let mut records: Vec<Record> = lines.iter().map(|l| decode_line(l).unwrap().0).collect();
    records[2].entry.sql = Some("SELECT 'an innocent query'".into());
    let genesis = veil_audit::GENESIS.to_owned();
    f.write_lines(&rechain(records, genesis));
    let report = f.report();
    let problem = report.problem.unwrap();
    assert!(problem.why.contains("does not sign the record before it"), "{}", problem.why);
    assert_eq!(problem.seq, 6, "the first checkpoint follows records 1..=5");
}

#[test]
fn a_checkpoint_forged_with_another_key_is_caught() {
    let f = Fixture::with_records(12);
    let other = SigningKey::load_or_create(&f.dir.parent().unwrap().join("other.key")).unwrap();
    let lines = f.lines();
    let mut records: Vec<Record> = lines.iter().map(|l| decode_line(l).unwrap().0).collect();
    records[2].entry.decision = "denied".into();
    // Re-sign every checkpoint with the forger's key over the rewritten chain.
    let mut prev = veil_audit::GENESIS.to_owned();
    let mut forged = Vec::new();
    for mut r in records {
        r.prev = prev.clone();
        if let Some(c) = &r.checkpoint {
            let hash: [u8; 32] = veil_common::hex::decode(&r.prev).unwrap().try_into().unwrap();
            r.checkpoint = Some(other.checkpoint(c.head_seq, &hash));
        }
        let (mut line, hash) = encode_line(&r).unwrap();
        line.pop();
        prev = veil_common::hex::encode(&hash);
        forged.push(line);
    }
    f.write_lines(&forged);
    let problem = f.report().problem.unwrap();
    assert_eq!(problem.seq, 6);
    assert!(problem.why.contains("signature does not verify"), "{}", problem.why);
    assert!(problem.why.contains(&other.public_key().id()), "names the key that signed: {}", problem.why);
}

#[test]
fn removing_a_segment_is_caught() {
    let f = Fixture::new();
    let log = f.open(Options { max_segment_bytes: 600, checkpoint_every: 4, ..Options::default() });
    for _ in 0..20 {
        log.append_blocking(Entry::new("query", "allowed")).unwrap();
    }
    close(&log);
    let report = f.report();
    assert!(report.ok(), "{report}");
    assert!(report.segments >= 3, "{report:?}");
    let mut segments: Vec<_> = fs::read_dir(&f.dir).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    fs::remove_file(&segments[1]).unwrap();
    let problem = f.report().problem.unwrap();
    assert!(problem.why.contains("a segment was removed"), "{}", problem.why);
}

#[test]
fn an_unfinished_write_is_set_aside_on_reopen_and_recorded() {
    let f = Fixture::with_records(3);
    let before = f.report();
    let mut bytes = fs::read(f.segment()).unwrap();
    bytes.extend_from_slice(b"{\"record\":{\"seq\":99,\"time\":\"2026-");
    fs::write(f.segment(), &bytes).unwrap();
    assert!(!f.report().ok());

    let log = f.open(Options::default());
    let receipt = log.append_blocking(Entry::new("query", "allowed")).unwrap();
    close(&log);
    let report = f.report();
    assert!(report.ok(), "{report}");
    assert_eq!(receipt.seq, before.head_seq + 3, "recovered, opened, then this query");
    let torn: Vec<_> = fs::read_dir(&f.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("torn-"))
        .collect();
    assert_eq!(torn.len(), 1);
    let recovered = f.lines().iter().map(|l| decode_line(l).unwrap().0).find(|r| r.entry.action == "audit.recovered");
    assert!(recovered.unwrap().entry.detail.unwrap().contains(&torn[0]));
}

#[test]
fn a_bad_record_before_whole_ones_is_not_taken_for_a_crash() {
    let f = Fixture::with_records(6);
    let mut lines = f.lines();
    lines[2][20] ^= 0x01;
    f.write_lines(&lines);
    let err = AuditLog::open(&f.dir, &f.key, Options::default()).unwrap_err();
    assert!(matches!(err, veil_audit::Error::Damaged { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("veil audit verify"), "{err}");
}

#[test]
fn concurrent_appenders_get_distinct_durable_records_in_one_chain() {
    let f = Fixture::new();
    let log = std::sync::Arc::new(f.open(Options { checkpoint_every: 50, ..Options::default() }));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| log.append_blocking(Entry::new("query", format!("t{t}-{i}"))).unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 800);
    assert!(log.durable_seq() >= *seqs.last().unwrap());
    close(&log);
    let report = f.report();
    assert!(report.ok(), "{report}");
    let queries = f.lines().iter().filter(|l| decode_line(l).unwrap().0.entry.action == "query").count();
    assert_eq!(queries, 800);
}

#[test]
fn a_quiet_log_is_signed_after_the_interval() {
    let f = Fixture::new();
    let log = f.open(Options { checkpoint_interval: Duration::from_millis(50), ..Options::default() });
    let receipt = log.append_blocking(Entry::new("query", "allowed")).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let report = f.report();
    assert!(report.ok(), "{report}");
    assert_eq!(report.signed_through, Some(receipt.seq));
    assert_eq!(report.unsigned, 0);
    close(&log);
}

#[test]
fn appends_after_close_fail() {
    let f = Fixture::new();
    let log = f.open(Options::default());
    close(&log);
    assert!(matches!(log.append_blocking(Entry::new("query", "allowed")), Err(veil_audit::Error::Closed)));
}
