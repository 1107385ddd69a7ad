//! Checking a log, live or a copy offline, with only the public key.

use std::ops::ControlFlow;
use std::path::Path;

use serde::Serialize;

use crate::keys::PublicKey;
use crate::record::{self, GENESIS};
use crate::segment::{Line, Segment};
use crate::{CHECKPOINT_ACTION, Result};

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Records that verified, up to the first problem.
    pub records: u64,
    /// Segment files.
    pub segments: usize,
    /// Checkpoint records whose signatures verified.
    pub checkpoints: u64,
    /// Sequence number of the last verified record (0 for an empty log).
    pub head_seq: u64,
    /// Its hash.
    pub head_hash: String,
    /// The last record a verified checkpoint signs, if any.
    pub signed_through: Option<u64>,
    /// Records after the last checkpoint: chained, but not yet covered by a signature, so
    /// someone with write access could have rewritten them consistently.
    pub unsigned: u64,
    /// The first thing wrong, if anything.
    pub problem: Option<Problem>,
}

/// The first record that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The sequence number that should have been at this place.
    pub seq: u64,
    /// The segment file's name.
    pub segment: String,
    /// 1-based line in it.
    pub line: u64,
    /// What is wrong.
    pub why: String,
}

impl Report {
    /// Whether every record verified.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            None => write!(
                f,
                "ok: {} records in {} segments, {} signed checkpoints, head seq {} hash {}",
                self.records, self.segments, self.checkpoints, self.head_seq, self.head_hash
            )?,
            Some(p) => write!(
                f,
                "BAD at seq {} ({} line {}): {}\n{} records before it verified",
                p.seq, p.segment, p.line, p.why, self.records
            )?,
        }
        match (self.unsigned, self.signed_through) {
            (0, _) => Ok(()),
            (n, Some(seq)) => {
                write!(f, "\nwarning: {n} records after seq {seq} are not covered by a signed checkpoint")
            }
            (n, None) => write!(f, "\nwarning: no signed checkpoint; all {n} records are unsigned"),
        }
    }
}

/// Verifies the log in `dir` against `key`: every record's hash, the chain, the sequence, and
/// every checkpoint's signature. With `until`, stops after that sequence number (a live log
/// being appended to). Stops at the first problem.
///
/// # Errors
/// Only when files cannot be read; a damaged log is a [`Report`] with a [`Problem`].
pub fn verify(dir: &Path, key: &PublicKey, until: Option<u64>) -> Result<Report> {
    let mut report = Report {
        records: 0,
        segments: 0,
        checkpoints: 0,
        head_seq: 0,
        head_hash: GENESIS.to_owned(),
        signed_through: None,
        unsigned: 0,
        problem: None,
    };
    let mut first_of_segment = None;
    let segments = crate::segment::scan(dir, |segment, line| {
        let expected = report.head_seq + 1;
        if until.is_some_and(|u| expected > u) {
            return ControlFlow::Break(());
        }
        let starts_segment = first_of_segment != Some(segment.first_seq);
        first_of_segment = Some(segment.first_seq);
        if starts_segment && segment.first_seq != expected {
            let why = format!(
                "the segment is named for seq {} but follows seq {} (a segment was removed, added or renamed)",
                segment.first_seq, report.head_seq
            );
            return report.fail(expected, segment, &line, why);
        }
        match step(&mut report, key, &line) {
            Ok(()) => ControlFlow::Continue(()),
            Err(why) => report.fail(expected, segment, &line, why),
        }
    })?;
    report.segments = segments.len();
    Ok(report)
}

/// Checks one line as the record after `report`'s head, and advances the head.
fn step(report: &mut Report, key: &PublicKey, line: &Line) -> Result<(), String> {
    let expected = report.head_seq + 1;
    if !line.complete {
        return Err("the record is incomplete (a write stopped half way, or the file was cut)".into());
    }
    let (rec, hash) = record::decode_line(&line.bytes)?;
    if rec.seq != expected {
        return Err(format!(
            "found seq {} where {expected} belongs (a record was removed, inserted or moved)",
            rec.seq
        ));
    }
    if rec.prev != report.head_hash {
        return Err(format!("the record does not continue the chain from seq {}", report.head_seq));
    }
    match (&rec.checkpoint, rec.entry.action == CHECKPOINT_ACTION) {
        (Some(checkpoint), true) => {
            if checkpoint.head_seq != report.head_seq || checkpoint.head_hash != report.head_hash {
                return Err("the checkpoint does not sign the record before it".into());
            }
            if !key.verifies(checkpoint) {
                return Err(format!(
                    "the checkpoint's signature does not verify with public key {} (it names key {})",
                    key.id(),
                    checkpoint.key_id
                ));
            }
            report.checkpoints += 1;
            report.signed_through = Some(checkpoint.head_seq);
            report.unsigned = 0;
        }
        (None, false) => report.unsigned += 1,
        _ => return Err("a checkpoint field on a record that is not a checkpoint, or the reverse".into()),
    }
    report.records += 1;
    report.head_seq = rec.seq;
    report.head_hash = veil_common::hex::encode(&hash);
    Ok(())
}

impl Report {
    fn fail(&mut self, seq: u64, segment: &Segment, line: &Line, why: String) -> ControlFlow<()> {
        let segment = segment.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.problem = Some(Problem { seq, segment, line: line.number, why });
        ControlFlow::Break(())
    }
}
