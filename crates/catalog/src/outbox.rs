//! The audit outbox: the audit record of a catalogue change, written in the change's own
//! transaction, so that no change can be in force without its record.
//!
//! The server appends the record to the tamper-evident log after the commit and then clears it
//! here; if the process dies in between, the record waits here and the server appends it when
//! it starts again ([`Catalog::pending_records`]). The catalogue holds records as opaque text
//! (the server's JSON of an audit entry): it never reads them.

use rusqlite::{Transaction, params};

use crate::{Catalog, Result, now};

/// An audit record written with its change and not yet in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Its place in the outbox, to clear it once appended.
    pub id: i64,
    /// The record, as the server wrote it.
    pub entry: String,
}

/// Writes `entry` in the change's transaction `tx`; returns the pending record.
pub(crate) fn write(tx: &Transaction<'_>, entry: String) -> Result<Pending> {
    tx.execute("INSERT INTO audit_outbox (entry, created_at) VALUES (?1, ?2)", params![entry, now()])?;
    Ok(Pending { id: tx.last_insert_rowid(), entry })
}

impl Catalog {
    /// Records written with their changes and not yet appended to the audit log, oldest first.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn pending_records(&self) -> Result<Vec<Pending>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, entry FROM audit_outbox ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok(Pending { id: r.get(0)?, entry: r.get(1)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a pending record once the audit log holds it.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn clear_pending(&self, id: i64) -> Result<()> {
        self.conn().execute("DELETE FROM audit_outbox WHERE id = ?1", [id])?;
        Ok(())
    }
}
