//! The privacy budget ledger (DESIGN §2, §3): the epsilon and delta each analyst has spent on
//! each dataset, over a rolling window. Charging reads what was spent and records the new charge
//! in one `IMMEDIATE` transaction, so two queries, in this process or another one on the same
//! data directory, can never both take the last of a budget.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use veil_common::{DatasetName, DatasetRef, DepartmentId, UserId};

use crate::{Catalog, Error, Result};

/// Slack for summing floating-point charges: a budget spent in exact steps is not refused
/// for a rounding error.
const SLACK: f64 = 1e-9;

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
    /// Epsilon, charged to every dataset in `caps`.
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

/// What [`Catalog::spend_or_replay`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Spend {
    /// Charged; the epsilon left on each dataset afterwards, in the order of the caps.
    Charged(Vec<f64>),
    /// The recorded answer of the identical query; nothing charged.
    Replay(Vec<u8>),
    /// The identical query is running now; nothing charged. Ask again shortly.
    Running,
}

fn validate(charge: &Charge<'_>) -> Result<()> {
    let valid = charge.epsilon.is_finite() && charge.epsilon > 0.0 && charge.delta.is_finite() && charge.delta >= 0.0;
    if !valid {
        return Err(Error::invalid("epsilon_invalid", "epsilon must be a positive number and delta not negative"));
    }
    Ok(())
}

/// Checks every cap and records the charge, inside the caller's `IMMEDIATE` transaction.
fn charge_in(tx: &rusqlite::Transaction<'_>, charge: &Charge<'_>, caps: &[Cap]) -> Result<Vec<f64>> {
    let since = charge.now - charge.window;
    let mut left = Vec::with_capacity(caps.len());
    for cap in caps {
        let spent: f64 = tx.query_row(
            "SELECT COALESCE(SUM(epsilon), 0) FROM budget_ledger
              WHERE user_id = ?1 AND department = ?2 AND name = ?3 AND charged_at > ?4",
            params![charge.user.as_str(), cap.dataset.department.as_str(), cap.dataset.name.as_str(), since],
            |r| r.get(0),
        )?;
        let remaining = (cap.epsilon - spent).max(0.0);
        if charge.epsilon > remaining + SLACK {
            return Err(Error::BudgetExceeded {
                dataset: cap.dataset.clone(),
                asked: charge.epsilon,
                left: remaining,
                cap: cap.epsilon,
            });
        }
        left.push((remaining - charge.epsilon).max(0.0));
    }
    for cap in caps {
        tx.execute(
            "INSERT INTO budget_ledger (user_id, department, name, epsilon, delta, query_sha256, charged_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                charge.user.as_str(),
                cap.dataset.department.as_str(),
                cap.dataset.name.as_str(),
                charge.epsilon,
                charge.delta,
                charge.query,
                charge.now
            ],
        )?;
    }
    Ok(left)
}

impl Catalog {
    /// Charges `charge` to every dataset in `caps` if each has the epsilon left, all or nothing.
    /// Returns the epsilon left on each afterwards, in the order of `caps`.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] naming the first dataset without enough left (nothing is
    /// charged); [`Error::Invalid`] for a charge that is not positive; SQLite failures.
    pub fn charge_budget(&self, charge: &Charge<'_>, caps: &[Cap]) -> Result<Vec<f64>> {
        validate(charge)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let left = charge_in(&tx, charge, caps)?;
        tx.commit()?;
        Ok(left)
    }

    /// Dp mode's charge with replay (DESIGN §3): in one `IMMEDIATE` transaction, the answer
    /// recorded for the same user and query if there is one (charging nothing); else, if the
    /// same query is still running, [`Spend::Running`]; else the charge, as
    /// [`Catalog::charge_budget`], and a placeholder for the answer, which
    /// [`Catalog::record_answer`] fills in or [`Catalog::refund`] removes.
    ///
    /// # Errors
    /// As [`Catalog::charge_budget`].
    pub fn spend_or_replay(&self, charge: &Charge<'_>, caps: &[Cap]) -> Result<Spend> {
        validate(charge)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let recorded: Option<Option<Vec<u8>>> = tx
            .query_row(
                "SELECT answer FROM dp_answers WHERE user_id = ?1 AND query_sha256 = ?2",
                params![charge.user.as_str(), charge.query],
                |r| r.get(0),
            )
            .optional()?;
        match recorded {
            Some(Some(answer)) => return Ok(Spend::Replay(answer)),
            Some(None) => return Ok(Spend::Running),
            None => {}
        }
        let left = charge_in(&tx, charge, caps)?;
        tx.execute(
            "INSERT INTO dp_answers (user_id, query_sha256, answer, created_at) VALUES (?1, ?2, NULL, ?3)",
            params![charge.user.as_str(), charge.query, charge.now],
        )?;
        tx.commit()?;
        Ok(Spend::Charged(left))
    }

    /// Records the answer a charged dp query released, so an identical query replays it.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn record_answer(&self, user: &UserId, query: &str, answer: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE dp_answers SET answer = ?3 WHERE user_id = ?1 AND query_sha256 = ?2",
            params![user.as_str(), query, answer],
        )?;
        Ok(())
    }

    /// Takes back the charge of a dp query that released nothing (it failed before its
    /// answer), with its placeholder, in one transaction.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn refund(&self, user: &UserId, query: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending = tx.execute(
            "DELETE FROM dp_answers WHERE user_id = ?1 AND query_sha256 = ?2 AND answer IS NULL",
            params![user.as_str(), query],
        )?;
        if pending > 0 {
            tx.execute(
                "DELETE FROM budget_ledger WHERE user_id = ?1 AND query_sha256 = ?2",
                params![user.as_str(), query],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// What `user` has spent on each dataset since `since` (Unix seconds), by dataset.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn budget_spent(&self, user: &UserId, since: i64) -> Result<Vec<Spent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
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

    #[test]
    fn an_identical_query_replays_its_answer_and_a_failed_one_is_refunded() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("visits"), epsilon: 1.0 }];
        let first = catalog.spend_or_replay(&charge(&ana, 0.5, 10), &caps).expect("charge");
        assert_eq!(first, Spend::Charged(vec![0.5]));
        assert_eq!(catalog.spend_or_replay(&charge(&ana, 0.5, 11), &caps).expect("ask"), Spend::Running);
        catalog.record_answer(&ana, "q", b"answer").expect("record");
        for now in 12..20 {
            let again = catalog.spend_or_replay(&charge(&ana, 0.5, now), &caps).expect("replay");
            assert_eq!(again, Spend::Replay(b"answer".to_vec()));
        }
        assert_eq!(catalog.budget_spent(&ana, 0).expect("spent")[0].epsilon, 0.5, "charged once");

        let other = Charge { query: "other", ..charge(&ana, 0.5, 30) };
        assert_eq!(catalog.spend_or_replay(&other, &caps).expect("charge"), Spend::Charged(vec![0.0]));
        catalog.refund(&ana, "other").expect("refund");
        assert_eq!(catalog.budget_spent(&ana, 0).expect("spent")[0].epsilon, 0.5, "the failed query is refunded");
        catalog.refund(&ana, "q").expect("no-op");
        assert_eq!(
            catalog.budget_spent(&ana, 0).expect("spent")[0].epsilon,
            0.5,
            "a released answer is never refunded"
        );
    }

    #[test]
    fn a_charge_that_would_exceed_any_cap_is_refused_whole() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 3.0 }, Cap { dataset: dataset("b"), epsilon: 1.0 }];
        assert_eq!(catalog.charge_budget(&charge(&ana, 0.75, 100), &caps).expect("charge"), vec![2.25, 0.25]);
        let err = catalog.charge_budget(&charge(&ana, 0.5, 101), &caps).expect_err("over b's cap");
        assert!(
            matches!(&err, Error::BudgetExceeded { dataset, left, .. } if dataset.name.as_str() == "b" && (*left - 0.25).abs() < 1e-12),
            "{err:?}"
        );
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert_eq!(spent.iter().map(|s| (s.epsilon, s.queries)).collect::<Vec<_>>(), vec![(0.75, 1), (0.75, 1)]);
    }

    #[test]
    fn charges_leave_the_window() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 1.0 }];
        catalog.charge_budget(&charge(&ana, 1.0, 1_000), &caps).expect("charge");
        assert!(catalog.charge_budget(&charge(&ana, 0.1, 2_000), &caps).is_err());
        let later = 1_000 + 30 * 86_400;
        assert_eq!(catalog.charge_budget(&charge(&ana, 1.0, later), &caps).expect("charge"), vec![0.0]);
    }

    #[test]
    fn bad_charges_are_refused() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 1.0 }];
        for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(catalog.charge_budget(&charge(&ana, epsilon, 1), &caps), Err(Error::Invalid { .. })));
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
                std::thread::spawn(move || c.charge_budget(&charge(&ana, 0.25, 10), &caps).is_ok())
            })
            .collect();
        let granted = threads.into_iter().map(|t| t.join().expect("thread")).filter(|ok| *ok).count();
        assert_eq!(granted, 12, "3.0 / 0.25 charges fit, no more");
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert!(spent[0].epsilon <= 3.0 + SLACK, "overspent: {}", spent[0].epsilon);
    }
}
