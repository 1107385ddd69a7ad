//! The privacy budget ledger (design §2, §3): the epsilon and delta each analyst has spent on
//! each dataset, over a rolling window, and the noisy answer each charged query released.
//!
//! A dp query is looked at twice. Before it runs, [`Catalog::budget_ahead`] reads (no lock,
//! nothing written) whether an identical query already has a recorded answer and whether every
//! cap has room, so a query that cannot be afforded is refused before it runs. After it ran,
//! [`Catalog::settle`] checks the caps again, records the charge and the answer in one
//! `IMMEDIATE` transaction, or hands back the answer an identical query recorded meanwhile: two
//! queries, in this process or another one on the same data directory, can never both take the
//! last of a budget, and nothing is charged for a query that released nothing.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use veil_common::{DatasetName, DatasetRef, DepartmentId, UserId};

use crate::{Catalog, Error, Result};

/// One dataset a query charges, with the cap that applies to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    /// The dataset.
    pub dataset: DatasetRef,
    /// Most epsilon the analyst may spend on it within the window.
    pub epsilon: f64,
}

/// What an analyst has spent on one dataset within the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    /// The dataset.
    pub dataset: DatasetRef,
    /// Epsilon spent.
    pub epsilon: f64,
    /// Delta spent.
    pub delta: f64,
    /// Charges recorded.
    pub queries: u64,
}

/// A charge to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge<'a> {
    /// Who pays.
    pub user: &'a UserId,
    /// Epsilon, charged to every dataset in the caps.
    pub epsilon: f64,
    /// Delta, charged likewise.
    pub delta: f64,
    /// SHA-256 of the query's normalized plan, hex: which query paid.
    pub query: &'a str,
    /// Unix seconds now.
    pub now: i64,
    /// Length of the rolling window, seconds.
    pub window: i64,
}

/// The ledger's word on a dp query: the answer to release if an identical query recorded one
/// (nothing charged), and what the analyst has spent within the window, by dataset (after the
/// charge, once settled).
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    /// The recorded answer of the identical query, if there is one.
    pub replay: Option<Vec<u8>>,
    /// Spent per dataset, as [`Catalog::budget_spent`].
    pub spent: Vec<Spent>,
}

fn validate(charge: &Charge<'_>) -> Result<()> {
    let valid = charge.epsilon.is_finite() && charge.epsilon > 0.0 && charge.delta.is_finite() && charge.delta >= 0.0;
    if !valid {
        return Err(Error::invalid("epsilon_invalid", "epsilon must be a positive number and delta not negative"));
    }
    Ok(())
}

/// The answer recorded for `charge`'s user and query. (A row without one is a placeholder an
/// older version left when it stopped between charging and recording: nothing to replay.)
fn recorded(conn: &Connection, charge: &Charge<'_>) -> Result<Option<Vec<u8>>> {
    let answer = conn
        .prepare_cached(
            "SELECT answer FROM dp_answers WHERE user_id = ?1 AND query_sha256 = ?2 AND answer IS NOT NULL",
        )?
        .query_row(params![charge.user.as_str(), charge.query], |r| r.get(0))
        .optional()?;
    Ok(answer)
}

/// What `user` has spent on each dataset since `since`, by dataset.
fn spent(conn: &Connection, user: &UserId, since: i64) -> Result<Vec<Spent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT department, name, SUM(epsilon), SUM(delta), COUNT(*) FROM budget_ledger
          WHERE user_id = ?1 AND charged_at > ?2 GROUP BY department, name ORDER BY department, name",
    )?;
    let rows = stmt.query_map(params![user.as_str(), since], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (department, name, epsilon, delta, queries) = row?;
        let dataset = DatasetRef { department: DepartmentId::new(department)?, name: DatasetName::new(name)? };
        out.push(Spent { dataset, epsilon, delta, queries: u64::try_from(queries).unwrap_or(0) });
    }
    Ok(out)
}

/// Whether every cap has `charge`'s epsilon left, given what was `spent`.
fn afford(charge: &Charge<'_>, caps: &[Cap], spent: &[Spent]) -> Result<()> {
    for cap in caps {
        let used = spent.iter().find(|s| s.dataset == cap.dataset).map_or(0.0, |s| s.epsilon);
        let left = (cap.epsilon - used).max(0.0);
        // No slack: a rounding error in the sum of charges refuses (fails closed), never lets
        // a query past a spent cap.
        if used + charge.epsilon > cap.epsilon {
            return Err(Error::BudgetExceeded {
                dataset: cap.dataset.clone(),
                asked: charge.epsilon,
                left,
                cap: cap.epsilon,
            });
        }
    }
    Ok(())
}

impl Catalog {
    /// Before a dp query runs: the answer an identical query recorded (to replay, charging
    /// nothing), else whether every cap has the query's epsilon left. Reads only; the charge
    /// is [`Catalog::settle`]'s.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] naming the first dataset without enough left;
    /// [`Error::Invalid`] for a charge that is not positive; SQLite failures.
    pub fn budget_ahead(&self, charge: &Charge<'_>, caps: &[Cap]) -> Result<Ledger> {
        validate(charge)?;
        let conn = self.conn();
        let spent = spent(&conn, charge.user, charge.now - charge.window)?;
        if let Some(answer) = recorded(&conn, charge)? {
            return Ok(Ledger { replay: Some(answer), spent });
        }
        afford(charge, caps, &spent)?;
        Ok(Ledger { replay: None, spent })
    }

    /// After a dp query computed `answer`, in one `IMMEDIATE` transaction: the answer an
    /// identical query recorded meanwhile, if any (release that one; nothing charged); else
    /// the charge to every dataset in `caps` if each has the epsilon left, all or nothing,
    /// with `answer` recorded for replay. Returns what the analyst has spent afterwards.
    ///
    /// # Errors
    /// As [`Catalog::budget_ahead`]; when refused, nothing is charged or recorded.
    pub fn settle(&self, charge: &Charge<'_>, caps: &[Cap], answer: &[u8]) -> Result<Ledger> {
        validate(charge)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let since = charge.now - charge.window;
        if let Some(recorded) = recorded(&tx, charge)? {
            return Ok(Ledger { replay: Some(recorded), spent: spent(&tx, charge.user, since)? });
        }
        afford(charge, caps, &spent(&tx, charge.user, since)?)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO budget_ledger (user_id, department, name, epsilon, delta, query_sha256, charged_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for cap in caps {
                insert.execute(params![
                    charge.user.as_str(),
                    cap.dataset.department.as_str(),
                    cap.dataset.name.as_str(),
                    charge.epsilon,
                    charge.delta,
                    charge.query,
                    charge.now
                ])?;
            }
        }
        tx.prepare_cached(
            "INSERT INTO dp_answers (user_id, query_sha256, answer, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, query_sha256) DO UPDATE SET answer = excluded.answer, created_at = excluded.created_at",
        )?
        .execute(params![charge.user.as_str(), charge.query, answer, charge.now])?;
        let spent = spent(&tx, charge.user, since)?;
        tx.commit()?;
        Ok(Ledger { replay: None, spent })
    }

    /// What `user` has spent on each dataset since `since` (Unix seconds), by dataset.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn budget_spent(&self, user: &UserId, since: i64) -> Result<Vec<Spent>> {
        spent(&self.conn(), user, since)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use veil_common::Role;

    use super::*;

    fn catalog() -> (tempfile::TempDir, Arc<Catalog>, UserId) {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let admin = UserId::new("admin").expect("id");
        crate::init(&data, &root.path().join("t"), &admin, &[]).expect("init");
        let catalog = Catalog::open(&data).expect("open");
        let analyst = UserId::new("ana").expect("id");
        let department = DepartmentId::new("civil").expect("id");
        catalog.create_department(&department, "民政局").expect("department");
        catalog.create_user(&analyst, Some(&department), &[Role::Analyst]).expect("user");
        (root, Arc::new(catalog), analyst)
    }

    fn dataset(name: &str) -> DatasetRef {
        DatasetRef { department: DepartmentId::new("health").expect("id"), name: DatasetName::new(name).expect("name") }
    }

    fn charge(user: &UserId, epsilon: f64, now: i64) -> Charge<'_> {
        Charge { user, epsilon, delta: 1e-7, query: "q", now, window: 30 * 86_400 }
    }

    fn left(ledger: &Ledger, caps: &[Cap]) -> Vec<f64> {
        caps.iter()
            .map(|c| c.epsilon - ledger.spent.iter().find(|s| s.dataset == c.dataset).map_or(0.0, |s| s.epsilon))
            .collect()
    }

    #[test]
    fn an_identical_query_replays_its_answer_and_is_charged_once() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("visits"), epsilon: 1.0 }];
        let ahead = catalog.budget_ahead(&charge(&ana, 0.5, 10), &caps).expect("ahead");
        assert_eq!(ahead, Ledger { replay: None, spent: Vec::new() });
        let settled = catalog.settle(&charge(&ana, 0.5, 10), &caps, b"answer").expect("charge");
        assert_eq!((settled.replay.as_deref(), left(&settled, &caps)), (None, vec![0.5]));
        for now in 12..20 {
            let ahead = catalog.budget_ahead(&charge(&ana, 0.5, now), &caps).expect("ahead");
            assert_eq!(ahead.replay.as_deref(), Some(&b"answer"[..]));
            // An identical query that ran concurrently settles to the first one's answer.
            let settled = catalog.settle(&charge(&ana, 0.5, now), &caps, b"another").expect("replay");
            assert_eq!(settled.replay.as_deref(), Some(&b"answer"[..]));
        }
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert_eq!((spent[0].epsilon, spent[0].queries), (0.5, 1), "charged once");
    }

    #[test]
    fn a_placeholder_left_by_an_older_version_is_not_an_answer() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("visits"), epsilon: 1.0 }];
        catalog
            .conn()
            .execute(
                "INSERT INTO dp_answers (user_id, query_sha256, answer, created_at) VALUES ('ana', 'q', NULL, 1)",
                [],
            )
            .expect("placeholder");
        assert_eq!(catalog.budget_ahead(&charge(&ana, 0.5, 10), &caps).expect("ahead").replay, None);
        assert_eq!(catalog.settle(&charge(&ana, 0.5, 10), &caps, b"answer").expect("charge").replay, None);
        let ahead = catalog.budget_ahead(&charge(&ana, 0.5, 11), &caps).expect("ahead");
        assert_eq!(ahead.replay.as_deref(), Some(&b"answer"[..]));
    }

    #[test]
    fn a_charge_that_would_exceed_any_cap_is_refused_whole() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 3.0 }, Cap { dataset: dataset("b"), epsilon: 1.0 }];
        let settled = catalog.settle(&charge(&ana, 0.75, 100), &caps, b"1").expect("charge");
        assert_eq!(left(&settled, &caps), vec![2.25, 0.25]);
        let second = Charge { query: "q2", ..charge(&ana, 0.5, 101) };
        for refused in
            [catalog.budget_ahead(&second, &caps).map(|_| ()), catalog.settle(&second, &caps, b"2").map(|_| ())]
        {
            let err = refused.expect_err("over b's cap");
            assert!(
                matches!(&err, Error::BudgetExceeded { dataset, left, .. } if dataset.name.as_str() == "b" && (*left - 0.25).abs() < 1e-12),
                "{err:?}"
            );
        }
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert_eq!(spent.iter().map(|s| (s.epsilon, s.queries)).collect::<Vec<_>>(), vec![(0.75, 1), (0.75, 1)]);
        assert_eq!(catalog.budget_ahead(&second, &caps).err().map(|e| e.code()), Some("budget_exceeded"));
        let count: i64 =
            catalog.conn().query_row("SELECT COUNT(*) FROM dp_answers", [], |r| r.get(0)).expect("answers");
        assert_eq!(count, 1, "a refused query records no answer");
    }

    #[test]
    fn charges_leave_the_window() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 1.0 }];
        catalog.settle(&charge(&ana, 1.0, 1_000), &caps, b"1").expect("charge");
        assert!(catalog.settle(&Charge { query: "q2", ..charge(&ana, 0.1, 2_000) }, &caps, b"2").is_err());
        let later = 1_000 + 30 * 86_400;
        let settled = catalog.settle(&Charge { query: "q3", ..charge(&ana, 1.0, later) }, &caps, b"3").expect("charge");
        assert_eq!(left(&settled, &caps), vec![0.0]);
    }

    #[test]
    fn bad_charges_are_refused() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 1.0 }];
        for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(catalog.budget_ahead(&charge(&ana, epsilon, 1), &caps), Err(Error::Invalid { .. })));
            assert!(matches!(catalog.settle(&charge(&ana, epsilon, 1), &caps, b"x"), Err(Error::Invalid { .. })));
        }
    }

    #[test]
    fn budget_race_concurrent_charges_never_overspend() {
        let (root, catalog, ana) = catalog();
        // A second handle on the same directory: a second process, with its own connection.
        let other = Arc::new(Catalog::open(&root.path().join("data")).expect("open"));
        let caps = [Cap { dataset: dataset("a"), epsilon: 3.0 }];
        let threads: Vec<_> = (0..24)
            .map(|i| {
                let c = if i % 2 == 0 { Arc::clone(&catalog) } else { Arc::clone(&other) };
                let (ana, caps) = (ana.clone(), caps.clone());
                std::thread::spawn(move || {
                    let query = format!("q{i}");
                    let charge = Charge { query: &query, ..charge(&ana, 0.25, 10) };
                    c.budget_ahead(&charge, &caps).is_ok() && c.settle(&charge, &caps, b"answer").is_ok()
                })
            })
            .collect();
        let granted = threads.into_iter().map(|t| t.join().expect("thread")).filter(|ok| *ok).count();
        assert_eq!(granted, 12, "3.0 / 0.25 charges fit, no more");
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert!(spent[0].epsilon <= 3.0, "overspent: {}", spent[0].epsilon);
    }
}
