//! Access requests: an analyst asks for a mode on a dataset with a purpose (PIPL purpose
//! limitation) and an expiry; a steward approves or rejects; an approved request is a grant
//! until it expires or is revoked.

use rusqlite::{OptionalExtension, Row, params};
use veil_common::{DatasetName, DatasetRef, DepartmentId, Mode, Role, UserId};

use crate::{Catalog, Error, Pending, Result, now};

/// Where an access request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for a steward.
    Pending,
    /// Approved: a grant until it expires or is revoked.
    Approved,
    /// Rejected, with a reason.
    Rejected,
    /// Approved, then revoked.
    Revoked,
}

impl RequestState {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
            RequestState::Revoked => "revoked",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        [RequestState::Pending, RequestState::Approved, RequestState::Rejected, RequestState::Revoked]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A steward's decision on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// pending → approved.
    Approve,
    /// pending → rejected, with a reason for the analyst.
    Reject(String),
    /// approved → revoked, with a reason.
    Revoke(String),
}

/// An access request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// Its id.
    pub id: String,
    /// The analyst who asked.
    pub user: UserId,
    /// Their department when they asked.
    pub department: DepartmentId,
    /// The dataset.
    pub dataset: DatasetRef,
    /// The mode asked for.
    pub mode: Mode,
    /// Why, shown to the steward.
    pub purpose: String,
    /// Unix seconds after which a grant stops working.
    pub expires_at: i64,
    /// Where it stands.
    pub state: RequestState,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// The steward who decided, if any.
    pub decided_by: Option<String>,
    /// When (RFC 3339).
    pub decided_at: Option<String>,
    /// The reason given with a rejection or revocation.
    pub reason: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only in this state.
    pub state: Option<RequestState>,
    /// Only for datasets of this department (a steward's view).
    pub dataset_department: Option<DepartmentId>,
    /// Only made by this user (an analyst's view).
    pub user: Option<UserId>,
}

const MAX_PURPOSE: usize = 2000;
const MAX_GRANT_SECONDS: i64 = 366 * 24 * 3600;
const COLUMNS: &str = "id, user_id, department, dataset_department, dataset_name, mode, purpose, expires_at, state, \
                       created_at, decided_by, decided_at, reason";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AccessRequest> {
    let conv =
        |i: usize, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into());
    Ok(AccessRequest {
        id: r.get(0)?,
        user: UserId::new(r.get::<_, String>(1)?).map_err(|e| conv(1, e.to_string()))?,
        department: DepartmentId::new(r.get::<_, String>(2)?).map_err(|e| conv(2, e.to_string()))?,
        dataset: DatasetRef {
            department: DepartmentId::new(r.get::<_, String>(3)?).map_err(|e| conv(3, e.to_string()))?,
            name: DatasetName::new(r.get::<_, String>(4)?).map_err(|e| conv(4, e.to_string()))?,
        },
        mode: r.get::<_, String>(5)?.parse().map_err(|e: veil_common::mode::UnknownMode| conv(5, e.to_string()))?,
        purpose: r.get(6)?,
        expires_at: r.get(7)?,
        state: RequestState::parse(&r.get::<_, String>(8)?).ok_or_else(|| conv(8, "unknown state".into()))?,
        created_at: r.get(9)?,
        decided_by: r.get(10)?,
        decided_at: r.get(11)?,
        reason: r.get(12)?,
    })
}

/// A request as an analyst makes it.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The analyst.
    pub user: UserId,
    /// Their department.
    pub department: DepartmentId,
    /// The dataset.
    pub dataset: DatasetRef,
    /// The mode asked for.
    pub mode: Mode,
    /// Why, shown to the steward.
    pub purpose: String,
    /// Unix seconds after which a grant stops working.
    pub expires_at: i64,
    /// Now, in Unix seconds.
    pub now_unix: i64,
}

impl NewRequest {
    /// Checks what needs no catalogue: a purpose of 1 to 2,000 characters, an expiry in the
    /// future and at most a year ahead. (A de-identified request checks this before its extract
    /// is built.)
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is wrong.
    pub fn check(&self) -> Result<()> {
        let purpose = self.purpose.trim();
        if purpose.is_empty() {
            return Err(Error::invalid(
                "purpose_required",
                "a purpose is required: say what the data will be used for",
            ));
        }
        if purpose.chars().count() > MAX_PURPOSE {
            return Err(Error::invalid(
                "purpose_too_long",
                format!("the purpose has more than {MAX_PURPOSE} characters"),
            ));
        }
        if self.expires_at <= self.now_unix {
            return Err(Error::invalid("expiry_in_past", "expires_at must be in the future"));
        }
        if self.expires_at > self.now_unix + MAX_GRANT_SECONDS {
            return Err(Error::invalid("expiry_too_far", "expires_at may be at most one year ahead"));
        }
        Ok(())
    }
}

/// A fresh request id.
pub(crate) fn new_request_id() -> String {
    format!("ar_{}", uuid::Uuid::new_v4().simple())
}

/// Checks a request and inserts it as pending.
pub(crate) fn insert_request(conn: &rusqlite::Connection, id: &str, new: &NewRequest) -> Result<AccessRequest> {
    new.check()?;
    let NewRequest { user, department, dataset, mode, purpose, expires_at, .. } = new;
    let purpose = purpose.trim();
    let current: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM datasets WHERE department = ?1 AND name = ?2 AND retired_at IS NULL",
            params![dataset.department.as_str(), dataset.name.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if current.is_none() {
        return Err(Error::DatasetNotFound(dataset.clone()));
    }
    conn.execute(
        "INSERT INTO access_requests (id, user_id, department, dataset_department, dataset_name, mode, purpose,
             expires_at, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
        params![
            id,
            user.as_str(),
            department.as_str(),
            dataset.department.as_str(),
            dataset.name.as_str(),
            mode.as_str(),
            purpose,
            expires_at,
            now()
        ],
    )?;
    read_request(conn, id)
}

/// Request `id` as `conn` sees it (inside its transaction, when it is one).
pub(crate) fn read_request(conn: &rusqlite::Connection, id: &str) -> Result<AccessRequest> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1"), [id], from_row)?)
}

impl AccessRequest {
    /// Checks that the request is in state `needed` for `action` (`approving`, `revising`, …).
    ///
    /// # Errors
    /// [`Error::AccessRequestState`] naming both states.
    pub fn require(&self, needed: RequestState, action: &'static str) -> Result<()> {
        if self.state == needed {
            return Ok(());
        }
        Err(Error::AccessRequestState {
            id: self.id.clone(),
            state: self.state.as_str(),
            action,
            needed: needed.as_str(),
        })
    }
}

impl Catalog {
    /// Records a new pending request for `aggregate` or `dp`; a de-identified request comes
    /// with its extract ([`Catalog::create_extract_request`]).
    ///
    /// # Errors
    /// [`Error::DatasetNotFound`] for an unknown or retired dataset; [`Error::Invalid`] for an
    /// empty or over-long purpose, an expiry in the past or more than a year ahead.
    pub fn create_access_request(&self, new: &NewRequest) -> Result<AccessRequest> {
        Ok(self.create_access_request_recorded(new, |_| None)?.0)
    }

    /// [`Catalog::create_access_request`], writing the audit record `record` gives for the new
    /// request in the same transaction ([`crate::outbox`]).
    ///
    /// # Errors
    /// As [`Catalog::create_access_request`].
    pub fn create_access_request_recorded(
        &self,
        new: &NewRequest,
        record: impl FnOnce(&AccessRequest) -> Option<String>,
    ) -> Result<(AccessRequest, Option<Pending>)> {
        if new.mode == Mode::Deidentified {
            return Err(Error::invalid(
                "extract_required",
                "a de-identified access request names its extract: the columns to release, and optionally hierarchies, k, l and the share of records that may be suppressed",
            ));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let request = insert_request(&tx, &new_request_id(), new)?;
        let pending = record(&request).map(|e| crate::outbox::write(&tx, e)).transpose()?;
        tx.commit()?;
        Ok((request, pending))
    }

    /// One request.
    ///
    /// # Errors
    /// [`Error::AccessRequestNotFound`].
    pub fn access_request(&self, id: &str) -> Result<AccessRequest> {
        let conn = self.conn();
        conn.query_row(&format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| Error::AccessRequestNotFound(id.chars().take(64).collect()))
    }

    /// Requests matching `filter`, newest first.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn access_requests(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM access_requests
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR dataset_department = ?2) AND (?3 IS NULL OR user_id = ?3)
             ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map(
            params![
                filter.state.map(RequestState::as_str),
                filter.dataset_department.as_ref().map(DepartmentId::as_str),
                filter.user.as_ref().map(UserId::as_str)
            ],
            from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a request along: approve or reject a pending one, revoke an approved one.
    ///
    /// # Errors
    /// [`Error::AccessRequestNotFound`]; [`Error::AccessRequestState`] when the request is not in
    /// the state the transition needs; [`Error::Invalid`] for a missing reason.
    pub fn decide_access_request(
        &self,
        id: &str,
        by: &UserId,
        transition: Transition,
        record: impl FnOnce(&AccessRequest) -> Option<String>,
    ) -> Result<(AccessRequest, Option<Pending>)> {
        let (action, needed, next, reason) = match &transition {
            Transition::Approve => ("approving", RequestState::Pending, RequestState::Approved, None),
            Transition::Reject(r) => ("rejecting", RequestState::Pending, RequestState::Rejected, Some(r.trim())),
            Transition::Revoke(r) => ("revoking", RequestState::Approved, RequestState::Revoked, Some(r.trim())),
        };
        if reason.is_some_and(str::is_empty) {
            return Err(Error::invalid("reason_required", "a reason is required, for the analyst and the audit trail"));
        }
        self.access_request(id)?.require(needed, action)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE access_requests SET state = ?2, decided_by = ?3, decided_at = ?4, reason = ?5
             WHERE id = ?1 AND state = ?6",
            params![id, next.as_str(), by.as_str(), now(), reason, needed.as_str()],
        )?;
        if changed == 1 {
            // The decision and its audit record commit together.
            let decided =
                tx.query_row(&format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1"), [id], from_row)?;
            let pending = record(&decided).map(|e| crate::outbox::write(&tx, e)).transpose()?;
            tx.commit()?;
            return Ok((decided, pending));
        }
        drop(tx);
        drop(conn);
        // Another steward decided in between.
        let now_state = self.access_request(id)?.state;
        Err(Error::AccessRequestState { id: id.to_owned(), state: now_state.as_str(), action, needed: needed.as_str() })
    }

    /// Approved requests that have not expired at `now_unix`: the grants in force.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn active_grants(&self, now_unix: i64) -> Result<Vec<AccessRequest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM access_requests WHERE state = 'approved' AND expires_at > ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([now_unix], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every (user, department, role) of users with a department: the policy's role memberships.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn memberships(&self) -> Result<Vec<(UserId, DepartmentId, Role)>> {
        Ok(self
            .users()?
            .into_iter()
            .filter_map(|u| u.department.map(|d| (u.id, d, u.roles)))
            .flat_map(|(user, dept, roles)| roles.into_iter().map(move |r| (user.clone(), dept.clone(), r)))
            .collect())
    }
}
