//! The privacy budget ledger: one row per dataset a dp query charged, with its pure ε (discrete
//! Laplace) or its ρ (discrete Gaussian, zCDP) and the δ of its group selection; and the noisy
//! answers those queries released, so that an identical query is answered again for free.
//!
//! The order a dp query follows: [`Catalog::budget_ahead`] reads (writing nothing) whether an
//! identical query already has a recorded answer and whether every cap has room, which is all a
//! dry run asks. [`Catalog::reserve`] decides the same in one `IMMEDIATE` transaction and, unless
//! it replays, records the charge **before the query runs**: a query that then fails, times out
//! or is cut off keeps its charge, so whether a query fails (which could depend on one person's
//! rows) is never free to learn. [`Catalog::record_answer`] keeps the first answer measured for
//! a query, which is the one released to every identical query after it. Two queries, in this
//! process or another one on the same data directory, can never both take the last of a
//! budget.
//!
//! What the charges in a window guarantee together is [`veil_dp::Loss::guarantee`]: basic or
//! zCDP composition, whichever is smaller. Caps are in ε of that guarantee, compared without
//! slack; the δ of group selection has a cap of its own.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use veil_common::{DatasetName, DatasetRef, DepartmentId, UserId};
use veil_dp::{Guarantee, Loss};

use crate::{Catalog, Error, Result};

/// One dataset a query charges, with the caps that apply to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    /// The dataset.
    pub dataset: DatasetRef,
    /// Most ε the analyst's answers on it may guarantee together within the window.
    pub epsilon: f64,
    /// Most δ their group selections may spend together within the window.
    pub delta: f64,
}

/// What an analyst has spent on one dataset within the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    /// The dataset.
    pub dataset: DatasetRef,
    /// The charges, summed.
    pub loss: Loss,
    /// Charges recorded.
    pub queries: u64,
}

impl Spent {
    /// The (ε, δ) the charges guarantee together.
    pub fn guarantee(&self) -> Guarantee {
        self.loss.guarantee()
    }
}

/// A charge to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge<'a> {
    /// Who pays.
    pub user: &'a UserId,
    /// Pure ε (discrete Laplace noise), charged to every dataset in the caps; 0 for none.
    pub epsilon: f64,
    /// ρ (discrete Gaussian noise), likewise; 0 for none.
    pub rho: f64,
    /// δ of the answer's group selection, likewise.
    pub delta: f64,
    /// SHA-256 of the query's normalized plan, hex: which query paid.
    pub query: &'a str,
    /// Unix seconds now.
    pub now: i64,
    /// Length of the rolling window, seconds.
    pub window: i64,
}

impl Charge<'_> {
    fn loss(&self) -> Loss {
        Loss::charge(self.epsilon, self.rho, self.delta)
    }
}

/// The ledger's word on a dp query: the answer to release if an identical query recorded one
/// (nothing charged), and what the analyst has spent within the window, by dataset (after the
/// charge, once reserved).
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    /// The recorded answer of the identical query, if there is one.
    pub replay: Option<Vec<u8>>,
    /// Spent per dataset, as [`Catalog::budget_spent`].
    pub spent: Vec<Spent>,
}

fn validate(charge: &Charge<'_>) -> Result<()> {
    let number = |x: f64| x.is_finite() && x >= 0.0;
    let valid =
        number(charge.epsilon) && number(charge.rho) && number(charge.delta) && charge.epsilon + charge.rho > 0.0;
    if !valid {
        return Err(Error::invalid(
            "epsilon_invalid",
            "epsilon or rho must be a positive number, the other zero, and delta not negative",
        ));
    }
    Ok(())
}

/// The answer recorded for `charge`'s user and query. (A row without one is a placeholder an
/// older version left when it stopped between charging and recording: nothing to replay.)
fn recorded(conn: &Connection, user: &UserId, query: &str) -> Result<Option<Vec<u8>>> {
    let answer = conn
        .prepare_cached(
            "SELECT answer FROM dp_answers WHERE user_id = ?1 AND query_sha256 = ?2 AND answer IS NOT NULL",
        )?
        .query_row(params![user.as_str(), query], |r| r.get(0))
        .optional()?;
    Ok(answer)
}

/// What `user` has spent on each dataset since `since`, by dataset.
fn spent(conn: &Connection, user: &UserId, since: i64) -> Result<Vec<Spent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT department, name, SUM(epsilon), SUM(epsilon * epsilon), SUM(rho), SUM(delta), COUNT(*)
           FROM budget_charges WHERE user_id = ?1 AND charged_at > ?2
          GROUP BY department, name ORDER BY department, name",
    )?;
    let rows = stmt.query_map(params![user.as_str(), since], |r| {
        let loss = Loss { epsilon: r.get(2)?, epsilon_squared: r.get(3)?, rho: r.get(4)?, delta: r.get(5)? };
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, loss, r.get::<_, i64>(6)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (department, name, loss, queries) = row?;
        let dataset = DatasetRef { department: DepartmentId::new(department)?, name: DatasetName::new(name)? };
        out.push(Spent { dataset, loss, queries: u64::try_from(queries).unwrap_or(0) });
    }
    Ok(out)
}

/// Whether every cap has room for `charge`, given what was `spent`.
fn afford(charge: &Charge<'_>, caps: &[Cap], spent: &[Spent]) -> Result<()> {
    for cap in caps {
        let before = spent.iter().find(|s| s.dataset == cap.dataset).map_or_else(Loss::default, |s| s.loss);
        let after = before.plus(charge.loss());
        let (was, will) = (before.guarantee().epsilon, after.guarantee().epsilon);
        // No slack: a rounding error in the sum of charges refuses (fails closed), never lets
        // a query past a spent cap.
        if will > cap.epsilon {
            return Err(Error::BudgetExceeded {
                dataset: cap.dataset.clone(),
                asked: will - was,
                left: (cap.epsilon - was).max(0.0),
                cap: cap.epsilon,
            });
        }
        if after.delta > cap.delta {
            return Err(Error::DeltaExceeded { dataset: cap.dataset.clone(), cap: cap.delta });
        }
    }
    Ok(())
}

impl Catalog {
    /// Before a dp query runs, or for its dry run: the answer an identical query recorded (to
    /// replay, charging nothing), else whether every cap has room for the query. Reads only.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] or [`Error::DeltaExceeded`] naming the first dataset without
    /// enough left; [`Error::Invalid`] for a charge that is not positive; SQLite failures.
    pub fn budget_ahead(&self, charge: &Charge<'_>, caps: &[Cap]) -> Result<Ledger> {
        validate(charge)?;
        let conn = self.conn();
        let spent = spent(&conn, charge.user, charge.now - charge.window)?;
        if let Some(answer) = recorded(&conn, charge.user, charge.query)? {
            return Ok(Ledger { replay: Some(answer), spent });
        }
        afford(charge, caps, &spent)?;
        Ok(Ledger { replay: None, spent })
    }

    /// Before a dp query runs, in one `IMMEDIATE` transaction: the answer an identical query
    /// recorded, if any (release that one; nothing charged); else the charge to every dataset
    /// in `caps` if each has room, all or nothing. The charge stays whatever happens to the
    /// query afterwards. Returns what the analyst has spent afterwards.
    ///
    /// # Errors
    /// As [`Catalog::budget_ahead`]; when refused, nothing is charged.
    pub fn reserve(&self, charge: &Charge<'_>, caps: &[Cap]) -> Result<Ledger> {
        validate(charge)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let since = charge.now - charge.window;
        if let Some(recorded) = recorded(&tx, charge.user, charge.query)? {
            return Ok(Ledger { replay: Some(recorded), spent: spent(&tx, charge.user, since)? });
        }
        afford(charge, caps, &spent(&tx, charge.user, since)?)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO budget_charges (user_id, department, name, epsilon, rho, delta, query_sha256, charged_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for cap in caps {
                insert.execute(params![
                    charge.user.as_str(),
                    cap.dataset.department.as_str(),
                    cap.dataset.name.as_str(),
                    charge.epsilon,
                    charge.rho,
                    charge.delta,
                    charge.query,
                    charge.now
                ])?;
            }
        }
        let spent = spent(&tx, charge.user, since)?;
        tx.commit()?;
        Ok(Ledger { replay: None, spent })
    }

    /// After a reserved dp query measured `answer`: records it for `query`, unless an identical
    /// query recorded one first; then that one is returned, to be released instead.
    ///
    /// The commit is not synced to disk (the next synced commit, such as any charge, carries
    /// it): a record lost to a power failure only means the query asked again is charged again
    /// and measured afresh, never that anything is released without its charge, which
    /// [`Catalog::reserve`] made durable before the query ran. It saves a sync on every dp query.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn record_answer(&self, user: &UserId, query: &str, answer: &[u8], now: i64) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let recorded = record_answer(&mut conn, user, query, answer, now);
        // Back to the setting every other write relies on, whatever happened above.
        conn.pragma_update(None, "synchronous", "FULL")?;
        recorded
    }

    /// What `user` has spent on each dataset since `since` (Unix seconds), by dataset.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn budget_spent(&self, user: &UserId, since: i64) -> Result<Vec<Spent>> {
        spent(&self.conn(), user, since)
    }
}

fn record_answer(
    conn: &mut Connection,
    user: &UserId,
    query: &str,
    answer: &[u8],
    now: i64,
) -> Result<Option<Vec<u8>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(first) = recorded(&tx, user, query)? {
        return Ok(Some(first));
    }
    tx.prepare_cached(
        "INSERT INTO dp_answers (user_id, query_sha256, answer, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, query_sha256) DO UPDATE SET answer = excluded.answer, created_at = excluded.created_at",
    )?
    .execute(params![user.as_str(), query, answer, now])?;
    tx.commit()?;
    Ok(None)
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

    fn cap(name: &str, epsilon: f64) -> Cap {
        Cap { dataset: dataset(name), epsilon, delta: 1e-5 }
    }

    fn charge(user: &UserId, epsilon: f64, now: i64) -> Charge<'_> {
        Charge { user, epsilon, rho: 0.0, delta: 1e-7, query: "q", now, window: 30 * 86_400 }
    }

    fn left(ledger: &Ledger, caps: &[Cap]) -> Vec<f64> {
        caps.iter()
            .map(|c| {
                let spent = ledger.spent.iter().find(|s| s.dataset == c.dataset).map_or(0.0, |s| s.guarantee().epsilon);
                c.epsilon - spent
            })
            .collect()
    }

    #[test]
    fn an_identical_query_replays_its_answer_and_is_charged_once() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("visits", 1.0)];
        let ahead = catalog.budget_ahead(&charge(&ana, 0.5, 10), &caps).expect("ahead");
        assert_eq!(ahead, Ledger { replay: None, spent: Vec::new() });
        let reserved = catalog.reserve(&charge(&ana, 0.5, 10), &caps).expect("charge");
        assert_eq!((reserved.replay.as_deref(), left(&reserved, &caps)), (None, vec![0.5]));
        assert_eq!(catalog.record_answer(&ana, "q", b"answer", 10).expect("record"), None);
        for now in 12..20 {
            let ahead = catalog.budget_ahead(&charge(&ana, 0.5, now), &caps).expect("ahead");
            assert_eq!(ahead.replay.as_deref(), Some(&b"answer"[..]));
            assert_eq!(
                catalog.reserve(&charge(&ana, 0.5, now), &caps).expect("replay").replay.as_deref(),
                Some(&b"answer"[..])
            );
            // An identical query that measured concurrently releases the first answer.
            assert_eq!(
                catalog.record_answer(&ana, "q", b"another", now).expect("record").as_deref(),
                Some(&b"answer"[..])
            );
        }
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert_eq!((spent[0].guarantee().epsilon, spent[0].queries), (0.5, 1), "charged once");
        // Recording an answer is not synced, and leaves every later write synced.
        let synchronous: i64 =
            catalog.conn().pragma_query_value(None, "synchronous", |r| r.get(0)).expect("synchronous");
        assert_eq!(synchronous, 2, "FULL");
    }

    #[test]
    fn a_reserved_charge_stays_when_the_query_never_answers() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("visits", 1.0)];
        catalog.reserve(&charge(&ana, 0.5, 10), &caps).expect("charge");
        // The query failed: nothing recorded, and asking again measures (and pays) again.
        assert_eq!(catalog.budget_ahead(&charge(&ana, 0.5, 11), &caps).expect("ahead").replay, None);
        catalog.reserve(&charge(&ana, 0.5, 11), &caps).expect("charge");
        let third = catalog.reserve(&charge(&ana, 0.5, 12), &caps).expect_err("spent");
        assert_eq!(third.code(), "budget_exceeded");
        assert_eq!(catalog.budget_spent(&ana, 0).expect("spent")[0].queries, 2);
    }

    #[test]
    fn a_placeholder_left_by_an_older_version_is_not_an_answer() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("visits", 1.0)];
        catalog
            .conn()
            .execute(
                "INSERT INTO dp_answers (user_id, query_sha256, answer, created_at) VALUES ('ana', 'q', NULL, 1)",
                [],
            )
            .expect("placeholder");
        assert_eq!(catalog.budget_ahead(&charge(&ana, 0.5, 10), &caps).expect("ahead").replay, None);
        assert_eq!(catalog.reserve(&charge(&ana, 0.5, 10), &caps).expect("charge").replay, None);
        assert_eq!(catalog.record_answer(&ana, "q", b"answer", 10).expect("record"), None);
        let ahead = catalog.budget_ahead(&charge(&ana, 0.5, 11), &caps).expect("ahead");
        assert_eq!(ahead.replay.as_deref(), Some(&b"answer"[..]));
    }

    #[test]
    fn a_charge_that_would_exceed_any_cap_is_refused_whole() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("a", 3.0), cap("b", 1.0)];
        let reserved = catalog.reserve(&charge(&ana, 0.75, 100), &caps).expect("charge");
        assert_eq!(left(&reserved, &caps), vec![2.25, 0.25]);
        let second = Charge { query: "q2", ..charge(&ana, 0.5, 101) };
        for refused in [catalog.budget_ahead(&second, &caps).map(|_| ()), catalog.reserve(&second, &caps).map(|_| ())] {
            let err = refused.expect_err("over b's cap");
            assert!(
                matches!(&err, Error::BudgetExceeded { dataset, left, .. } if dataset.name.as_str() == "b" && (*left - 0.25).abs() < 1e-12),
                "{err:?}"
            );
        }
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        let each: Vec<_> = spent.iter().map(|s| (s.guarantee().epsilon, s.queries)).collect();
        assert_eq!(each, vec![(0.75, 1), (0.75, 1)]);
    }

    #[test]
    fn charges_leave_the_window() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("a", 1.0)];
        catalog.reserve(&charge(&ana, 1.0, 1_000), &caps).expect("charge");
        assert!(catalog.reserve(&Charge { query: "q2", ..charge(&ana, 0.1, 2_000) }, &caps).is_err());
        let later = 1_000 + 30 * 86_400;
        let reserved = catalog.reserve(&Charge { query: "q3", ..charge(&ana, 1.0, later) }, &caps).expect("charge");
        assert_eq!(left(&reserved, &caps), vec![0.0]);
    }

    #[test]
    fn many_small_answers_compose_below_their_sum() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("a", 10.0)];
        let mut answered = 0;
        for i in 0..300 {
            let query = format!("q{i}");
            if catalog.reserve(&Charge { query: &query, delta: 0.0, ..charge(&ana, 0.1, 10) }, &caps).is_err() {
                break;
            }
            answered += 1;
        }
        // Basic composition would stop at 100; zCDP composition (at a δ of 10⁻⁷) allows more.
        assert!((150..300).contains(&answered), "{answered} answers at ε 0.1 within a cap of 10");
        let spent = &catalog.budget_spent(&ana, 0).expect("spent")[0];
        assert!(spent.guarantee().epsilon <= 10.0 && spent.guarantee().delta > 0.0);
    }

    #[test]
    fn gaussian_charges_count_in_rho_and_the_delta_of_group_selection_has_a_cap() {
        let (_root, catalog, ana) = catalog();
        let caps = [Cap { dataset: dataset("a"), epsilon: 3.0, delta: 3e-7 }];
        let gaussian =
            |i: usize, rho: f64, delta: f64| Charge { rho, epsilon: 0.0, delta, ..charge(&ana, 0.0, i as i64) };
        let first = catalog.reserve(&Charge { query: "g1", ..gaussian(1, 0.05, 1e-7) }, &caps).expect("charge");
        let g = first.spent[0].guarantee();
        assert!(g.epsilon > 0.05 && g.epsilon < 2.0, "{g:?}");
        catalog.reserve(&Charge { query: "g2", ..gaussian(2, 0.01, 1e-7) }, &caps).expect("charge");
        catalog.reserve(&Charge { query: "g3", ..gaussian(3, 0.01, 1e-7) }, &caps).expect("charge");
        let err = catalog.reserve(&Charge { query: "g4", ..gaussian(4, 0.01, 1e-7) }, &caps).expect_err("δ cap");
        assert!(matches!(err, Error::DeltaExceeded { .. }), "{err:?}");
        // An answer without group selection still fits.
        catalog.reserve(&Charge { query: "g5", ..gaussian(5, 0.01, 0.0) }, &caps).expect("no δ");
        let err = catalog.reserve(&Charge { query: "g6", ..gaussian(6, 0.5, 0.0) }, &caps).expect_err("ε cap");
        assert!(matches!(err, Error::BudgetExceeded { .. }), "{err:?}");
    }

    #[test]
    fn bad_charges_are_refused() {
        let (_root, catalog, ana) = catalog();
        let caps = [cap("a", 1.0)];
        for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(catalog.budget_ahead(&charge(&ana, epsilon, 1), &caps), Err(Error::Invalid { .. })));
            assert!(matches!(catalog.reserve(&charge(&ana, epsilon, 1), &caps), Err(Error::Invalid { .. })));
        }
        let negative_rho = Charge { rho: -0.1, ..charge(&ana, 0.5, 1) };
        assert!(matches!(catalog.reserve(&negative_rho, &caps), Err(Error::Invalid { .. })));
    }

    #[test]
    fn budget_race_concurrent_charges_never_overspend() {
        let (root, catalog, ana) = catalog();
        // A second handle on the same directory: a second process, with its own connection.
        let other = Arc::new(Catalog::open(&root.path().join("data")).expect("open"));
        let caps = [cap("a", 3.0)];
        let threads: Vec<_> = (0..24)
            .map(|i| {
                let c = if i % 2 == 0 { Arc::clone(&catalog) } else { Arc::clone(&other) };
                let (ana, caps) = (ana.clone(), caps.clone());
                std::thread::spawn(move || {
                    let query = format!("q{i}");
                    let charge = Charge { query: &query, ..charge(&ana, 1.0, 10) };
                    c.budget_ahead(&charge, &caps).is_ok() && c.reserve(&charge, &caps).is_ok()
                })
            })
            .collect();
        let granted = threads.into_iter().map(|t| t.join().expect("thread")).filter(|ok| *ok).count();
        assert_eq!(granted, 3, "3.0 / 1.0 charges fit, no more");
        let spent = catalog.budget_spent(&ana, 0).expect("spent");
        assert!(spent[0].guarantee().epsilon <= 3.0, "overspent: {:?}", spent[0]);
    }
}
