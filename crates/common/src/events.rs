//! The event hook: every decision and change worth auditing is reported here.
//!
//! The audit log (a later crate) implements [`EventSink`] durably; until then the server logs
//! events with `tracing`. Events carry names, ids and codes, never a value read from a dataset.

use std::sync::Mutex;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The action, e.g. `access_request.approve`, `policy.reload`, `dataset.register`.
    pub action: &'static str,
    /// Who did it (a user id), if anyone signed in.
    pub actor: Option<String>,
    /// What it was done to: a dataset (`civil.elderly`), a request id, a user id.
    pub target: Option<String>,
    /// `allow`, `deny`, `ok` or `error`.
    pub outcome: &'static str,
    /// Why, in words: the rule that decided, a purpose, a reason. Never a data value.
    pub detail: String,
}

/// Receives events. Implementations must be cheap to call and must not fail the caller.
pub trait EventSink: Send + Sync {
    /// Records one event.
    fn record(&self, event: Event);
}

/// Keeps events in memory: for tests and for inspecting what a component reports.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
}

impl MemorySink {
    /// Every event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl EventSink for MemorySink {
    fn record(&self, event: Event) {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }
}
