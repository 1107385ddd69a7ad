//! Departments, users, tokens and authentication.
//!
//! A token is `veil_<id>_<secret>`: a 64-bit public id to find the row, and 256 random bits
//! from the OS CSPRNG. Only an HMAC-SHA256 tag of the secret is stored, and it is checked with
//! `ring::hmac::verify`, which compares in constant time.

use rusqlite::{OptionalExtension, params};
use veil_common::{AUDIT_SCHEMA, DepartmentId, EXTRACT_SCHEMA, Role, UserId};

use crate::layout::random_bytes;
use crate::{Catalog, Error, Pending, Result, now};

/// A department, which is also the SQL schema of its datasets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    /// Its id.
    pub id: DepartmentId,
    /// Its display name, e.g. 民政局.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// The department it acts in; admins and auditors may have none.
    pub department: Option<DepartmentId>,
    /// Its roles, sorted.
    pub roles: Vec<Role>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// The signed-in caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub user: UserId,
    /// In which department.
    pub department: Option<DepartmentId>,
    /// With which roles.
    pub roles: Vec<Role>,
    /// Which token they used (its public id, never the secret).
    pub token_id: String,
}

impl Principal {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A newly issued token. `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token's public id.
    pub id: String,
    /// The bearer token itself.
    pub token: String,
}

impl Catalog {
    /// Creates a department.
    ///
    /// # Errors
    /// [`Error::DepartmentExists`], an invalid display name, or a reserved id (`audit`,
    /// `extracts`).
    pub fn create_department(&self, id: &DepartmentId, name: &str) -> Result<Department> {
        Ok(self.create_department_recorded(id, name, None)?.0)
    }

    /// [`Catalog::create_department`], writing the audit record `record` in the same
    /// transaction ([`crate::outbox`]).
    ///
    /// # Errors
    /// As [`Catalog::create_department`].
    pub fn create_department_recorded(
        &self,
        id: &DepartmentId,
        name: &str,
        record: Option<String>,
    ) -> Result<(Department, Option<Pending>)> {
        if id.as_str() == AUDIT_SCHEMA {
            return Err(Error::invalid(
                "reserved_name",
                "`audit` is reserved: it is the SQL schema of the audit log's `audit.events` table",
            ));
        }
        if id.as_str() == EXTRACT_SCHEMA {
            return Err(Error::invalid(
                "reserved_name",
                "`extracts` is reserved: it is the SQL schema of analysts' de-identified extracts",
            ));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::invalid("invalid_name", "a department name must have 1 to 200 characters"));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let created_at = now();
        let inserted = tx.execute(
            "INSERT INTO departments (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![id.as_str(), name, created_at],
        )?;
        if inserted == 0 {
            return Err(Error::DepartmentExists(id.clone()));
        }
        let pending = record.map(|e| crate::outbox::write(&tx, e)).transpose()?;
        tx.commit()?;
        Ok((Department { id: id.clone(), name: name.to_owned(), created_at }, pending))
    }

    /// Every department, by id.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn departments(&self) -> Result<Vec<Department>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, name, created_at FROM departments ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
        rows.map(|row| {
            let (id, name, created_at) = row?;
            Ok(Department { id: DepartmentId::new(id)?, name, created_at })
        })
        .collect()
    }

    /// Whether a department exists.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn department_exists(&self, id: &DepartmentId) -> Result<bool> {
        let conn = self.conn();
        Ok(conn.query_row("SELECT 1 FROM departments WHERE id = ?1", [id.as_str()], |_| Ok(())).optional()?.is_some())
    }

    /// Creates a user with roles in a department.
    ///
    /// # Errors
    /// [`Error::UserExists`]; [`Error::DepartmentNotFound`]; [`Error::Invalid`] for no roles, or a
    /// steward or analyst role without a department.
    pub fn create_user(&self, id: &UserId, department: Option<&DepartmentId>, roles: &[Role]) -> Result<User> {
        Ok(self.create_user_recorded(id, department, roles, |_| None)?.0)
    }

    /// [`Catalog::create_user`], writing the audit record `record` gives for the new user in the
    /// same transaction ([`crate::outbox`]): no user holds roles without its record.
    ///
    /// # Errors
    /// As [`Catalog::create_user`].
    pub fn create_user_recorded(
        &self,
        id: &UserId,
        department: Option<&DepartmentId>,
        roles: &[Role],
        record: impl FnOnce(&User) -> Option<String>,
    ) -> Result<(User, Option<Pending>)> {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(Error::invalid("roles_required", "a user needs at least one role"));
        }
        if department.is_none()
            && let Some(role) = roles.iter().find(|r| r.needs_department())
        {
            return Err(Error::invalid(
                "department_required",
                format!("role `{role}` acts within a department: give the user a department"),
            ));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(dept) = department {
            let exists = tx
                .query_row("SELECT 1 FROM departments WHERE id = ?1", [dept.as_str()], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(Error::DepartmentNotFound(dept.clone()));
            }
        }
        let created_at = now();
        let inserted = tx.execute(
            "INSERT INTO users (id, department, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![id.as_str(), department.map(DepartmentId::as_str), created_at],
        )?;
        if inserted == 0 {
            return Err(Error::UserExists(id.clone()));
        }
        for role in &roles {
            tx.execute("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)", params![id.as_str(), role.as_str()])?;
        }
        let user = User { id: id.clone(), department: department.cloned(), roles, created_at };
        let pending = record(&user).map(|e| crate::outbox::write(&tx, e)).transpose()?;
        tx.commit()?;
        Ok((user, pending))
    }

    /// Every user, by id.
    ///
    /// # Errors
    /// A SQLite failure.
    pub fn users(&self) -> Result<Vec<User>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT u.id, u.department, u.created_at, group_concat(r.role) \
             FROM users u LEFT JOIN user_roles r ON r.user_id = u.id GROUP BY u.id ORDER BY u.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (id, department, created_at, roles) = row?;
            Ok(User {
                id: UserId::new(id)?,
                department: department.map(DepartmentId::new).transpose()?,
                roles: parse_roles(roles.as_deref()),
                created_at,
            })
        })
        .collect()
    }

    /// Issues a new bearer token for a user. The token is returned once; only its tag is kept.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], or a failure of the OS random source or SQLite.
    pub fn issue_token(&self, user: &UserId) -> Result<IssuedToken> {
        Ok(self.issue_token_recorded(user, |_| None)?.0)
    }

    /// [`Catalog::issue_token`], writing the audit record `record` gives for the token's id in
    /// the same transaction ([`crate::outbox`]): no token works without its record.
    ///
    /// # Errors
    /// As [`Catalog::issue_token`].
    pub fn issue_token_recorded(
        &self,
        user: &UserId,
        record: impl FnOnce(&str) -> Option<String>,
    ) -> Result<(IssuedToken, Option<Pending>)> {
        let id = veil_common::hex::encode(&random_bytes::<8>()?);
        let secret = veil_common::hex::encode(&random_bytes::<32>()?);
        let tag = ring::hmac::sign(&self.token_key, secret.as_bytes());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists =
            tx.query_row("SELECT 1 FROM users WHERE id = ?1", [user.as_str()], |_| Ok(())).optional()?.is_some();
        if !exists {
            return Err(Error::UserNotFound(user.clone()));
        }
        tx.execute(
            "INSERT INTO tokens (id, user_id, tag, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, user.as_str(), tag.as_ref(), now()],
        )?;
        let pending = record(&id).map(|e| crate::outbox::write(&tx, e)).transpose()?;
        tx.commit()?;
        Ok((IssuedToken { token: format!("veil_{id}_{secret}"), id }, pending))
    }

    /// Revokes a token of a user; it stops working at once. `record`, the audit record, is
    /// written in the same transaction ([`crate::outbox`]).
    ///
    /// # Errors
    /// [`Error::TokenNotFound`] when the user has no such live token.
    pub fn revoke_token(&self, user: &UserId, token_id: &str, record: Option<String>) -> Result<Option<Pending>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE tokens SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
            params![token_id, user.as_str(), now()],
        )?;
        if n == 0 {
            let shown: String = token_id.chars().take(32).collect();
            return Err(Error::TokenNotFound(shown));
        }
        let pending = record.map(|e| crate::outbox::write(&tx, e)).transpose()?;
        tx.commit()?;
        Ok(pending)
    }

    /// Finds who a bearer token belongs to. `None` for anything that is not a live token:
    /// malformed, unknown, revoked or with a wrong secret, all alike.
    ///
    /// # Errors
    /// A SQLite failure only.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = token.strip_prefix("veil_").and_then(|t| t.split_once('_')) else {
            return Ok(None);
        };
        if id.len() != 16 || secret.len() != 64 {
            return Ok(None);
        }
        let conn = self.conn();
        let row = conn
            .prepare_cached(
                "SELECT t.tag, u.id, u.department, \
                        (SELECT group_concat(role) FROM user_roles WHERE user_id = u.id) \
                 FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.id = ?1 AND t.revoked_at IS NULL",
            )?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        let Some((tag, user, department, roles)) = row else {
            return Ok(None);
        };
        if ring::hmac::verify(&self.token_key, secret.as_bytes(), &tag).is_err() {
            return Ok(None);
        }
        Ok(Some(Principal {
            user: UserId::new(user)?,
            department: department.map(DepartmentId::new).transpose()?,
            roles: parse_roles(roles.as_deref()),
            token_id: id.to_owned(),
        }))
    }
}

fn parse_roles(joined: Option<&str>) -> Vec<Role> {
    let mut roles: Vec<Role> = joined.unwrap_or("").split(',').filter_map(|r| r.parse().ok()).collect();
    roles.sort();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A department and a user commit with their audit records (the outbox), and a refused
    /// creation leaves none: nothing is in force without its record, and no record without its
    /// change.
    #[test]
    fn departments_and_users_commit_with_their_records() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        crate::init(&data, &root.path().join("t"), &UserId::new("admin").expect("id"), &[]).expect("init");
        let catalog = Catalog::open(&data).expect("open");
        let civil = DepartmentId::new("civil").expect("id");
        let (_, pending) =
            catalog.create_department_recorded(&civil, "民政局", Some("department record".into())).expect("create");
        assert!(pending.is_some());
        assert!(catalog.create_department_recorded(&civil, "again", Some("refused".into())).is_err());
        let user = UserId::new("civil-analyst").expect("id");
        let (_, pending) = catalog
            .create_user_recorded(&user, Some(&civil), &[Role::Analyst], |_| Some("user record".into()))
            .expect("create");
        assert!(pending.is_some());
        assert!(
            catalog.create_user_recorded(&user, Some(&civil), &[Role::Analyst], |_| Some("refused".into())).is_err()
        );
        let entries: Vec<String> = catalog.pending_records().expect("pending").into_iter().map(|p| p.entry).collect();
        assert_eq!(entries, ["department record", "user record"]);
    }
}
