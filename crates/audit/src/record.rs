//! One audit record and its line on disk.
//!
//! A segment is JSON lines. Each line is `{"record":R,"hash":"H"}` where `R` is the record's JSON
//! exactly as written and `H` is the hex SHA-256 of those bytes. The record names the hash of the
//! record before it (`prev`), so the hashes form a chain: changing, removing, inserting or
//! reordering a record breaks it at that record. Hashing the bytes as written, not a re-encoding,
//! means any edit, even one a JSON parser would ignore, is caught.

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// User id.
    pub user: String,
    /// Their department, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Their roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A dataset an action touched, with its level at the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetUse {
    /// `department.name`.
    pub dataset: String,
    /// Its classification level, where the action knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// What a caller asks to be recorded. Names, ids, codes, counts and the SQL as typed; never a
/// value read from a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The action: `query`, `dataset.register`, `access_request.approve`, `auth.failed`, ….
    pub action: String,
    /// `allowed`, `denied`, `failed`, `dry_run`, `ok` or `error`.
    pub decision: String,
    /// The HTTP request this came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who acted, if anyone signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// What it was done to: a request id, a user id, a department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Datasets involved, with their levels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetUse>,
    /// Result mode of a query or grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The rule (or error code) that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, in words: a purpose, a reason, a refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The kind of a query's failure while running (`deadline`, `memory limit`, `expression`,
    /// …), which its response does not show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The SQL as the analyst typed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Hex SHA-256 of `sql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_sha256: Option<String>,
    /// Rows returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Groups withheld for being too small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_groups: Option<u64>,
    /// Privacy budget charged: what the dp answer added to the ε its analyst's answers on the
    /// dataset guarantee together (0 when an identical answer was replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// ρ (zCDP) a dp answer with discrete Gaussian noise spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    /// How long the action took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl Entry {
    /// An entry for `action` with `decision` and nothing else yet.
    pub fn new(action: impl Into<String>, decision: impl Into<String>) -> Self {
        Self { action: action.into(), decision: decision.into(), ..Self::default() }
    }
}

/// A signature over the chain head, made by the log's Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The sequence number of the record signed (the one before the checkpoint record).
    pub head_seq: u64,
    /// That record's hash.
    pub head_hash: String,
    /// First 8 bytes of SHA-256 of the public key, hex: which key signed.
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes a checkpoint signs: a domain tag, the head's sequence number and hash.
    pub fn message(head_seq: u64, head_hash: &[u8]) -> Vec<u8> {
        let mut message = b"veil-audit-checkpoint-v1\n".to_vec();
        message.extend_from_slice(&head_seq.to_be_bytes());
        message.extend_from_slice(head_hash);
        message
    }
}

/// A record as stored: the entry, its place in the chain and, for checkpoint records, the
/// signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was written (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
    /// Present on `audit.checkpoint` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A record with the hash that chains the next one to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stored {
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// Hex SHA-256 of the record's bytes as written.
    pub hash: String,
}

const PREFIX: &[u8] = b"{\"record\":";
const HASH_KEY: &[u8] = b",\"hash\":\"";
const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2; // `,"hash":"` + 64 hex + `"}`

/// The line for `record` (with its trailing newline) and the record's hash.
///
/// # Errors
/// When the record cannot be encoded (a non-finite epsilon).
pub fn encode_line(record: &Record) -> Result<(Vec<u8>, [u8; 32]), serde_json::Error> {
    let body = serde_json::to_vec(record)?;
    let hash = sha256(&body);
    let mut line = Vec::with_capacity(PREFIX.len() + body.len() + SUFFIX_LEN + 1);
    line.extend_from_slice(PREFIX);
    line.extend_from_slice(&body);
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(veil_common::hex::encode(&hash).as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// Reads one line (without its newline): the record, and whether its hash matches its bytes.
///
/// # Errors
/// Why the line is not a record, in words.
pub fn decode_line(line: &[u8]) -> Result<(Record, [u8; 32]), String> {
    if line.len() < PREFIX.len() + SUFFIX_LEN || !line.starts_with(PREFIX) || !line.ends_with(b"\"}") {
        return Err("not a record line".into());
    }
    let body = &line[PREFIX.len()..line.len() - SUFFIX_LEN];
    let tail = &line[line.len() - SUFFIX_LEN..];
    if !tail.starts_with(HASH_KEY) {
        return Err("not a record line".into());
    }
    let claimed = std::str::from_utf8(&tail[HASH_KEY.len()..HASH_KEY.len() + 64])
        .ok()
        .and_then(veil_common::hex::decode)
        .ok_or("the hash is not hex")?;
    let hash = sha256(body);
    if claimed != hash {
        return Err("the record's bytes do not match its hash".into());
    }
    let record: Record = serde_json::from_slice(body).map_err(|e| format!("the record is not valid: {e}"))?;
    Ok((record, hash))
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut entry = Entry::new("query", "allowed");
        entry.sql = Some("SELECT 1 -- \"quoted\" 名字".into());
        entry.rows = Some(3);
        Record { seq: 7, time: OffsetDateTime::UNIX_EPOCH, prev: GENESIS.into(), entry, checkpoint: None }
    }

    #[test]
    fn a_line_decodes_to_the_record_it_encodes() {
        let (line, hash) = encode_line(&record()).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let (back, back_hash) = decode_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, record());
        assert_eq!(back_hash, hash);
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(json["record"]["seq"], 7);
        assert_eq!(json["hash"], veil_common::hex::encode(&hash));
    }

    #[test]
    fn any_changed_byte_is_caught() {
        let (line, _) = encode_line(&record()).unwrap();
        let line = &line[..line.len() - 1];
        for i in 0..line.len() {
            let mut bad = line.to_vec();
            bad[i] ^= 0x01;
            assert!(decode_line(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
    }
}
