//! The catalogue's SQLite schema and its versioned migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Migrations only ever append:
//! a release adds a new entry to [`MIGRATIONS`] and never edits an old one, so any older data
//! directory opens by applying the entries it has not seen, each in its own transaction.

use std::path::Path;

use rusqlite::Connection;

use crate::{Error, Result};

/// Every migration, in order. Entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: identity and datasets.
    r#"
    CREATE TABLE departments (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE users (
        id          TEXT PRIMARY KEY,
        department  TEXT REFERENCES departments(id),
        created_at  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE user_roles (
        user_id     TEXT NOT NULL REFERENCES users(id),
        role        TEXT NOT NULL CHECK (role IN ('admin','steward','analyst','auditor')),
        PRIMARY KEY (user_id, role)
    ) STRICT;
    CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        user_id     TEXT NOT NULL REFERENCES users(id),
        tag         BLOB NOT NULL,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    ) STRICT;
    CREATE TABLE datasets (
        department      TEXT NOT NULL REFERENCES departments(id),
        name            TEXT NOT NULL,
        current_version INTEGER NOT NULL,
        created_at      TEXT NOT NULL,
        retired_at      TEXT,
        PRIMARY KEY (department, name)
    ) STRICT;
    CREATE TABLE dataset_versions (
        department     TEXT NOT NULL,
        name           TEXT NOT NULL,
        version        INTEGER NOT NULL,
        level          TEXT NOT NULL CHECK (level IN ('L1','L2','L3','L4','IMPORTANT','CORE')),
        description    TEXT NOT NULL,
        privacy_unit   TEXT,
        file           TEXT NOT NULL UNIQUE,
        source_format  TEXT NOT NULL,
        row_count      INTEGER NOT NULL,
        byte_size      INTEGER NOT NULL,
        registered_by  TEXT NOT NULL,
        registered_at  TEXT NOT NULL,
        PRIMARY KEY (department, name, version),
        FOREIGN KEY (department, name) REFERENCES datasets(department, name)
    ) STRICT;
    CREATE TABLE dataset_columns (
        department   TEXT NOT NULL,
        name         TEXT NOT NULL,
        version      INTEGER NOT NULL,
        position     INTEGER NOT NULL,
        column_name  TEXT NOT NULL,
        data_type    TEXT NOT NULL,
        tag          TEXT NOT NULL CHECK (tag IN ('identifier','quasi_identifier','sensitive','attribute')),
        linkable     INTEGER NOT NULL,
        bound_lo     REAL,
        bound_hi     REAL,
        PRIMARY KEY (department, name, version, position),
        UNIQUE (department, name, version, column_name),
        FOREIGN KEY (department, name, version) REFERENCES dataset_versions(department, name, version)
    ) STRICT;
    "#,
    // 2: access requests; approved ones are grants.
    r#"
    CREATE TABLE access_requests (
        id                  TEXT PRIMARY KEY,
        user_id             TEXT NOT NULL REFERENCES users(id),
        department          TEXT NOT NULL,
        dataset_department  TEXT NOT NULL,
        dataset_name        TEXT NOT NULL,
        mode                TEXT NOT NULL CHECK (mode IN ('aggregate','dp','deidentified')),
        purpose             TEXT NOT NULL,
        expires_at          INTEGER NOT NULL,
        state               TEXT NOT NULL CHECK (state IN ('pending','approved','rejected','revoked')),
        created_at          TEXT NOT NULL,
        decided_by          TEXT,
        decided_at          TEXT,
        reason              TEXT,
        FOREIGN KEY (dataset_department, dataset_name) REFERENCES datasets(department, name)
    ) STRICT;
    CREATE INDEX access_requests_by_dataset ON access_requests (dataset_department, state);
    "#,
    // 3: how a quasi-identifier is generalised in de-identified results.
    r#"
    ALTER TABLE dataset_columns ADD COLUMN generalize TEXT;
    "#,
    // 4: the privacy budget ledger.
    r#"
    CREATE TABLE budget_ledger (
        id            INTEGER PRIMARY KEY,
        user_id       TEXT NOT NULL REFERENCES users(id),
        department    TEXT NOT NULL,
        name          TEXT NOT NULL,
        epsilon       REAL NOT NULL CHECK (epsilon > 0),
        delta         REAL NOT NULL CHECK (delta >= 0),
        query_sha256  TEXT NOT NULL,
        charged_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX budget_by_user ON budget_ledger (user_id, department, name, charged_at);
    "#,
    r#"
    ALTER TABLE dataset_versions ADD COLUMN max_groups INTEGER;
    ALTER TABLE dataset_versions ADD COLUMN max_rows INTEGER;
    ALTER TABLE dataset_versions ADD COLUMN epsilon_cap REAL;
    CREATE TABLE dp_answers (
        user_id       TEXT NOT NULL REFERENCES users(id),
        query_sha256  TEXT NOT NULL,
        answer        BLOB,
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (user_id, query_sha256)
    ) STRICT;
    "#,
    r#"
    ALTER TABLE dataset_columns ADD COLUMN public_values TEXT;
    "#,
    // 1 when every privacy unit value occurs in one row of the file; older versions: unknown (0).
    r#"
    ALTER TABLE dataset_versions ADD COLUMN one_row_per_unit INTEGER NOT NULL DEFAULT 0;
    "#,
    // 8: de-identified extracts, one per de-identified access request.
    r#"
    CREATE TABLE extracts (
        request_id      TEXT PRIMARY KEY REFERENCES access_requests(id),
        name            TEXT NOT NULL,
        spec            TEXT NOT NULL,
        source_version  INTEGER NOT NULL,
        file            TEXT NOT NULL UNIQUE,
        rows            INTEGER NOT NULL,
        report          TEXT NOT NULL,
        created_at      TEXT NOT NULL
    ) STRICT;
    CREATE INDEX extracts_by_name ON extracts (name);
    "#,
    // 9: the ledger keeps ρ (discrete Gaussian answers) beside pure ε; a charge has one of them.
    r#"
    CREATE TABLE budget_charges (
        id            INTEGER PRIMARY KEY,
        user_id       TEXT NOT NULL REFERENCES users(id),
        department    TEXT NOT NULL,
        name          TEXT NOT NULL,
        epsilon       REAL NOT NULL CHECK (epsilon >= 0),
        rho           REAL NOT NULL CHECK (rho >= 0),
        delta         REAL NOT NULL CHECK (delta >= 0),
        query_sha256  TEXT NOT NULL,
        charged_at    INTEGER NOT NULL,
        CHECK (epsilon > 0 OR rho > 0)
    ) STRICT;
    INSERT INTO budget_charges (id, user_id, department, name, epsilon, rho, delta, query_sha256, charged_at)
        SELECT id, user_id, department, name, epsilon, 0, delta, query_sha256, charged_at FROM budget_ledger;
    DROP TABLE budget_ledger;
    CREATE INDEX charges_by_user ON budget_charges (user_id, department, name, charged_at);
    "#,
    // 10: the audit records of changes, written in the change's own transaction and removed once
    // the audit log holds them, so a crash between the commit and the append loses no record.
    r#"
    CREATE TABLE audit_outbox (
        id         INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: the server tells old from new by id
        entry      TEXT NOT NULL,
        created_at TEXT NOT NULL
    ) STRICT;
    "#,
    // 11: the noise a dataset's steward chose for dp answers that do not choose theirs (NULL:
    // discrete Laplace, as before).
    r#"
    ALTER TABLE dataset_versions ADD COLUMN noise TEXT;
    "#,
    // 12: an extract joined from several datasets has one access request per dataset, each for
    // its department's stewards; the extract belongs to the first, the others are its parts.
    r#"
    CREATE TABLE extract_parts (
        request_id          TEXT PRIMARY KEY REFERENCES access_requests(id),
        extract_request_id  TEXT NOT NULL REFERENCES extracts(request_id),
        source_version      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX extract_parts_by_extract ON extract_parts (extract_request_id);
    "#,
    // 13: each person's rows capped in a stored copy of a version (`capped_at`: the cap it was
    // measured at, NULL for versions registered before; `capped_file`: the copy, NULL when
    // nobody has more rows than the cap; `capped_rows`: its rows).
    r#"
    ALTER TABLE dataset_versions ADD COLUMN capped_at INTEGER;
    ALTER TABLE dataset_versions ADD COLUMN capped_file TEXT;
    ALTER TABLE dataset_versions ADD COLUMN capped_rows INTEGER;
    "#,
    // 14: 1 when each value of a column of a dataset about nobody is on one row at most (a code
    // table's key), measured at registration; 0 otherwise and for versions registered before.
    r#"
    ALTER TABLE dataset_columns ADD COLUMN unique_values INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// The schema version this build writes.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens the database with the settings every connection needs: WAL for concurrent readers,
/// `synchronous = FULL` so a committed transaction survives power loss, foreign keys on, and
/// room to keep every statement of the query path prepared.
pub(crate) fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.set_prepared_statement_cache_capacity(32);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Applies the migrations `conn` has not seen yet, up to `target` (all of them in production;
/// tests stop early to build an "older release" database).
pub(crate) fn migrate_to(conn: &mut Connection, target: i64) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > latest() {
        return Err(Error::SchemaTooNew { found, supported: latest() });
    }
    for version in found..target.min(latest()) {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(from = version, to = version + 1, "catalogue migrated");
    }
    Ok(())
}

/// Applies every pending migration.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_catalogue_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        {
            let mut conn = connect(&path).expect("connect");
            migrate_to(&mut conn, 0).expect("version 0");
        }
        let mut conn = connect(&path).expect("reopen");
        migrate(&mut conn).expect("migrate");
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
        assert_eq!(v, latest());
        migrate(&mut conn).expect("migrating twice is a no-op");

        conn.pragma_update(None, "user_version", latest() + 1).expect("bump");
        let err = migrate(&mut conn).expect_err("newer schema");
        assert!(matches!(err, Error::SchemaTooNew { .. }), "{err}");
    }
}
