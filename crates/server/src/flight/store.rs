//! What a Flight SQL client holds between calls: tickets for answers not yet fetched, and
//! prepared statements. Each belongs to the token that made it, expires, and is bounded in
//! number, so a client that never fetches cannot make the server hold answers without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use ring::rand::{SecureRandom, SystemRandom};

use super::Options;

/// How long an answer waits for its `DoGet`.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a prepared statement lives without being closed.
pub(crate) const STATEMENT_TTL: Duration = Duration::from_secs(60 * 60);
/// Most unfetched answers one token may hold.
pub(crate) const MAX_TICKETS_PER_TOKEN: usize = 16;
/// Most prepared statements one token may hold.
pub(crate) const MAX_STATEMENTS_PER_TOKEN: usize = 64;

/// A handle's bytes: 16 random bytes, unguessable, carrying nothing.
pub(crate) type Handle = [u8; 16];

/// An answer waiting for its `DoGet`.
pub(crate) struct Answer {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
}

struct Held<T> {
    token_id: String,
    expires: Instant,
    value: T,
}

/// Why a handle could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Unknown, already used, or expired.
    Unknown,
    /// Made by another token.
    NotYours,
}

/// Tickets and prepared statements, each bound to a token.
pub(crate) struct Store {
    /// How long an answer waits ([`TICKET_TTL`]).
    ticket_ttl: Duration,
    /// How long a statement lives ([`STATEMENT_TTL`]).
    statement_ttl: Duration,
    tickets: Mutex<HashMap<Handle, Held<Answer>>>,
    statements: Mutex<HashMap<Handle, Held<(String, Options)>>>,
    random: SystemRandom,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            ticket_ttl: TICKET_TTL,
            statement_ttl: STATEMENT_TTL,
            tickets: Mutex::default(),
            statements: Mutex::default(),
            random: SystemRandom::new(),
        }
    }
}

impl Store {
    /// Whether `token_id` may hold one more unfetched answer: asked before a query runs, so a
    /// client over its limit is refused before anything is charged or recorded.
    pub(crate) fn ticket_room(&self, token_id: &str) -> bool {
        let now = Instant::now();
        self.tickets.lock().is_ok_and(|mut t| {
            t.retain(|_, held| held.expires > now);
            t.values().filter(|held| held.token_id == token_id).count() < MAX_TICKETS_PER_TOKEN
        })
    }

    /// Holds `answer` for `token_id` and returns its ticket's handle. The room was asked for
    /// before the query ran; queries of one token running at once may each find room, so the
    /// bound can be passed by as many as run together, never by one query's worth more.
    pub(crate) fn put_ticket(&self, token_id: &str, answer: Answer) -> Option<Handle> {
        let handle = self.handle()?;
        let held = Held { token_id: token_id.to_owned(), expires: Instant::now() + self.ticket_ttl, value: answer };
        self.tickets.lock().ok()?.insert(handle, held);
        Some(handle)
    }

    /// Takes the answer of `handle` for `token_id`: once only. A ticket shown by another token
    /// is refused and stays with its owner.
    pub(crate) fn take_ticket(&self, token_id: &str, handle: &[u8]) -> Result<Answer, Miss> {
        let handle: Handle = handle.try_into().map_err(|_| Miss::Unknown)?;
        let mut tickets = self.tickets.lock().map_err(|_| Miss::Unknown)?;
        match tickets.get(&handle) {
            None => Err(Miss::Unknown),
            Some(held) if held.expires <= Instant::now() => {
                tickets.remove(&handle);
                Err(Miss::Unknown)
            }
            Some(held) if held.token_id != token_id => Err(Miss::NotYours),
            Some(_) => tickets.remove(&handle).map(|held| held.value).ok_or(Miss::Unknown),
        }
    }

    /// Keeps `sql`, with the options it was prepared with, as a prepared statement of
    /// `token_id`; `None` when the token holds too many.
    pub(crate) fn put_statement(&self, token_id: &str, sql: String, options: Options) -> Option<Handle> {
        let now = Instant::now();
        let handle = self.handle()?;
        let mut statements = self.statements.lock().ok()?;
        statements.retain(|_, held| held.expires > now);
        if statements.values().filter(|held| held.token_id == token_id).count() >= MAX_STATEMENTS_PER_TOKEN {
            return None;
        }
        statements.insert(
            handle,
            Held { token_id: token_id.to_owned(), expires: now + self.statement_ttl, value: (sql, options) },
        );
        Some(handle)
    }

    /// The SQL and options of prepared statement `handle`, for `token_id` only.
    pub(crate) fn statement(&self, token_id: &str, handle: &[u8]) -> Result<(String, Options), Miss> {
        let handle: Handle = handle.try_into().map_err(|_| Miss::Unknown)?;
        let statements = self.statements.lock().map_err(|_| Miss::Unknown)?;
        match statements.get(&handle) {
            Some(held) if held.expires <= Instant::now() => Err(Miss::Unknown),
            Some(held) if held.token_id != token_id => Err(Miss::NotYours),
            Some(held) => Ok(held.value.clone()),
            None => Err(Miss::Unknown),
        }
    }

    /// Closes prepared statement `handle` of `token_id`.
    pub(crate) fn close_statement(&self, token_id: &str, handle: &[u8]) -> Result<(), Miss> {
        self.statement(token_id, handle)?;
        let handle: Handle = handle.try_into().map_err(|_| Miss::Unknown)?;
        self.statements.lock().map_err(|_| Miss::Unknown)?.remove(&handle);
        Ok(())
    }

    fn handle(&self) -> Option<Handle> {
        let mut handle = [0u8; 16];
        self.random.fill(&mut handle).ok()?;
        Some(handle)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Schema;

    use super::*;

    fn answer() -> Answer {
        Answer { schema: Arc::new(Schema::empty()), batches: Vec::new() }
    }

    #[test]
    fn a_ticket_is_taken_once_and_only_by_its_token() {
        let store = Store::default();
        let handle = store.put_ticket("a", answer()).expect("held");
        assert_eq!(store.take_ticket("b", &handle).err(), Some(Miss::NotYours));
        assert!(store.take_ticket("a", &handle).is_ok(), "the owner's ticket survives a stranger's try");
        assert_eq!(store.take_ticket("a", &handle).err(), Some(Miss::Unknown), "once only");
        assert_eq!(store.take_ticket("a", b"short").err(), Some(Miss::Unknown));
    }

    #[test]
    fn answers_and_statements_expire() {
        let store = Store { ticket_ttl: Duration::ZERO, statement_ttl: Duration::ZERO, ..Store::default() };
        let ticket = store.put_ticket("a", answer()).expect("held");
        assert_eq!(store.take_ticket("a", &ticket).err(), Some(Miss::Unknown), "expired");
        for _ in 0..MAX_TICKETS_PER_TOKEN {
            store.put_ticket("a", answer()).expect("held");
        }
        assert!(store.ticket_room("a"), "expired answers take no room");
        let statement = store.put_statement("a", "SELECT 1".into(), Options::default()).expect("kept");
        assert_eq!(store.statement("a", &statement).err(), Some(Miss::Unknown), "expired");
    }

    #[test]
    fn a_token_holds_a_bounded_number_of_answers_and_statements() {
        let store = Store::default();
        for _ in 0..MAX_TICKETS_PER_TOKEN {
            assert!(store.ticket_room("a"));
            store.put_ticket("a", answer()).expect("held");
        }
        assert!(!store.ticket_room("a"), "the token's tickets are bounded");
        assert!(store.ticket_room("b"), "another token is not affected");
        for _ in 0..MAX_STATEMENTS_PER_TOKEN {
            store.put_statement("a", "SELECT 1".into(), Options::default()).expect("kept");
        }
        assert!(store.put_statement("a", "SELECT 1".into(), Options::default()).is_none());
        let other = store.put_statement("b", "SELECT 2".into(), Options::default()).expect("kept");
        assert_eq!(store.statement("a", &other).err(), Some(Miss::NotYours));
        assert_eq!(store.close_statement("a", &other).err(), Some(Miss::NotYours));
        store.close_statement("b", &other).expect("closed by its owner");
        assert_eq!(store.statement("b", &other).err(), Some(Miss::Unknown));
    }
}
