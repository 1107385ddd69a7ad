//! Finding records: the auditor's filters, with pagination by sequence number.

use std::ops::ControlFlow;
use std::path::Path;

use time::OffsetDateTime;

use crate::Result;
use crate::record::{self, Record, Stored};

/// Which records to return. Every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The acting user.
    pub user: Option<String>,
    /// The acting user's department.
    pub department: Option<String>,
    /// A dataset (`dept.name`), or every dataset of a department (`dept`).
    pub dataset: Option<String>,
    /// `allowed`, `denied`, `failed`, `dry_run`, `ok`, `error`.
    pub decision: Option<String>,
    /// The action, e.g. `query`.
    pub action: Option<String>,
    /// At or after this time.
    pub from: Option<OffsetDateTime>,
    /// Before this time.
    pub to: Option<OffsetDateTime>,
    /// Only records after this sequence number (the previous page's `next`).
    pub after: Option<u64>,
    /// The request a record came from: the reference an answer carries (`audit_id`).
    pub request_id: Option<String>,
}

impl Filter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &Record) -> bool {
        let e = &record.entry;
        let actor = e.actor.as_ref();
        let eq = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        eq(&self.user, actor.map(|a| a.user.as_str()))
            && eq(&self.department, actor.and_then(|a| a.department.as_deref()))
            && eq(&self.decision, Some(&e.decision))
            && eq(&self.action, Some(&e.action))
            && eq(&self.request_id, e.request_id.as_deref())
            && self.dataset.as_deref().is_none_or(|want| {
                e.datasets.iter().any(|d| {
                    d.dataset == want || d.dataset.strip_prefix(want).is_some_and(|rest| rest.starts_with('.'))
                })
            })
            && self.from.is_none_or(|t| record.time >= t)
            && self.to.is_none_or(|t| record.time < t)
            && self.after.is_none_or(|s| record.seq > s)
    }
}

/// One page of matching records, oldest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The records.
    pub records: Vec<Stored>,
    /// Pass as `after` for the next page; `None` when this is the last.
    pub next: Option<u64>,
    /// Lines that could not be read as records (run verify to see why).
    pub unreadable: u64,
}

/// Up to `limit` records in `dir` that match `filter`, none after `until` (the durable head of a
/// live log: later bytes may still be being written).
///
/// # Errors
/// Only when files cannot be read.
pub fn search(dir: &Path, filter: &Filter, limit: usize, until: Option<u64>) -> Result<Page> {
    let mut page = Page { records: Vec::new(), next: None, unreadable: 0 };
    crate::segment::scan(dir, |_, line| {
        if !line.complete {
            return ControlFlow::Continue(());
        }
        let Ok((rec, hash)) = record::decode_line(&line.bytes) else {
            page.unreadable += 1;
            return ControlFlow::Continue(());
        };
        if until.is_some_and(|u| rec.seq > u) {
            return ControlFlow::Break(());
        }
        if !filter.matches(&rec) {
            return ControlFlow::Continue(());
        }
        if page.records.len() == limit {
            page.next = page.records.last().map(|r| r.record.seq);
            return ControlFlow::Break(());
        }
        page.records.push(Stored { record: rec, hash: veil_common::hex::encode(&hash) });
        ControlFlow::Continue(())
    })?;
    Ok(page)
}
