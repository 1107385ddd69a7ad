//! The privacy budget around a dp query: what it costs, charging it as its answer is recorded
//! (or replaying the recorded answer of an identical query for free), and the caller's view.
//!
//! Accounting is basic composition per analyst and dataset over a rolling 30-day window: a
//! query's epsilon is charged in full to every dataset it reads; the ledger's check, charge and
//! recorded answer are one catalogue transaction, so concurrent queries never overspend.

use veil_audit::Entry;
use veil_catalog::{Cap, Charge, DatasetInfo, Spent};
use veil_common::{DatasetRef, Level, Mode};
use veil_policy::{DatasetMeta, PolicyEngine};
use veil_query::{DpParams, NoisyAggregate, Prepared};

use crate::{Answer, Broker, Caller, Error, now_unix};

/// Delta of every dp query: the chance, at most, that a group made of one person's rows is
/// released despite the threshold. Far below one over any population a department holds.
pub(crate) const DELTA: f64 = 1e-7;

/// The rolling budget window.
const WINDOW_DAYS: u32 = 30;
const WINDOW: i64 = WINDOW_DAYS as i64 * 86_400;

/// The most epsilon one query may ask for.
const MAX_EPSILON: f64 = 10.0;

/// The least epsilon one query may ask for. Below it an answer is noise (a count's 95%
/// interval is thousands wide), and without a floor an analyst whose cap is spent could still
/// take unlimited answers at ε ≈ 0, each with its δ: a spent cap must mean no more answers.
const MIN_EPSILON: f64 = 1e-3;

/// One dataset's privacy budget for one analyst over the rolling window.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The dataset.
    pub dataset: DatasetRef,
    /// Its level.
    pub level: Level,
    /// Epsilon the analyst may spend on it per window; `None` where the level sets no cap.
    pub cap: Option<f64>,
    /// Epsilon spent in the window.
    pub spent: f64,
    /// Epsilon left, where there is a cap.
    pub left: Option<f64>,
    /// Delta spent in the window.
    pub delta_spent: f64,
    /// Dp queries charged in the window.
    pub queries: u64,
    /// The window's length in days.
    pub window_days: u32,
}

/// A dataset a dp query reads, with the cap that applies to it.
#[derive(Debug, Clone)]
pub(crate) struct DatasetCap {
    dataset: DatasetRef,
    level: Level,
    /// `None`: the level sets no cap (charged and shown, never refused).
    cap: Option<f64>,
}

impl DatasetCap {
    pub(crate) fn of(info: &DatasetInfo) -> Self {
        Self { dataset: info.dataset.clone(), level: info.level, cap: info.epsilon_cap() }
    }
}

/// The epsilon a query spends: as asked, or a tenth of the smallest cap among its datasets
/// (at most 1), so that an analyst who never says gets ten answers per window.
pub(crate) fn epsilon(asked: Option<f64>, caps: &[DatasetCap]) -> Result<f64, Error> {
    match asked {
        Some(e) if e.is_finite() && (MIN_EPSILON..=MAX_EPSILON).contains(&e) => Ok(e),
        Some(e) => Err(Error::invalid(
            "epsilon_invalid",
            format!("epsilon {e} is not allowed: it must be a number from {MIN_EPSILON} to {MAX_EPSILON}"),
        )),
        None => {
            let smallest = caps.iter().filter_map(|c| c.cap).fold(f64::INFINITY, f64::min);
            Ok((smallest / 10.0).clamp(MIN_EPSILON, 1.0))
        }
    }
}

impl Broker {
    /// Runs a prepared dp query and settles its budget; returns the answer and the budget of
    /// each of `caps`' datasets afterwards.
    ///
    /// An identical earlier query's recorded answer is released again, charging nothing. Else
    /// the ledger is read first, so a query that cannot be afforded is refused before it runs;
    /// then the query measures its noisy aggregate, and the charge and that aggregate are
    /// recorded together in one transaction that checks the caps again (a concurrent query may
    /// have spent the rest, or recorded the identical query's answer, which is then released
    /// instead). Only a settled answer is released; a query that fails or is refused at the end
    /// is charged nothing and released nothing. A dry run charges nothing.
    pub(crate) async fn run_dp(
        &self,
        caller: &Caller,
        prepared: Prepared,
        params: DpParams,
        caps: Vec<DatasetCap>,
        entry: &mut Entry,
    ) -> Result<(Answer, Vec<Budget>), Error> {
        let user = caller.principal.user.clone();
        if prepared.dry_run() {
            let spent = self.blocking(move |c| c.budget_spent(&user, now_unix() - WINDOW)).await?;
            return Ok((self.engine.execute(prepared).await?, budgets(&spent, caps)));
        }
        let ledger_caps: Vec<Cap> =
            caps.iter().map(|c| Cap { dataset: c.dataset.clone(), epsilon: c.cap.unwrap_or(f64::INFINITY) }).collect();
        let key = prepared.dp_key().ok_or_else(|| Error::internal("a dp query without its answer key"))?;
        // Before the query runs (`None`) or with the answer it measured.
        let ledger = move |c: &veil_catalog::Catalog, answer: Option<&[u8]>| {
            let charge = Charge {
                user: &user,
                epsilon: params.epsilon,
                delta: params.delta,
                query: &key,
                now: now_unix(),
                window: WINDOW,
            };
            match answer {
                None => c.budget_ahead(&charge, &ledger_caps),
                Some(answer) => c.settle(&charge, &ledger_caps, answer),
            }
        };
        let ahead = {
            let ledger = ledger.clone();
            self.blocking(move |c| ledger(c, None)).await?
        };
        let (noisy, replayed, spent) = match ahead.replay {
            Some(recorded) => (NoisyAggregate::from_bytes(&recorded)?, true, ahead.spent),
            None => {
                let noisy = self.engine.measure(&prepared).await?;
                let bytes = noisy.to_bytes()?;
                let settled = self.blocking(move |c| ledger(c, Some(&bytes))).await?;
                match settled.replay {
                    // An identical query settled first: its answer is the one released.
                    Some(recorded) => (NoisyAggregate::from_bytes(&recorded)?, true, settled.spent),
                    None => (noisy, false, settled.spent),
                }
            }
        };
        entry.epsilon = Some(if replayed { 0.0 } else { params.epsilon });
        if replayed {
            // After the basis the query path recorded (policy line or access request), if any.
            let replay = "the recorded answer of an identical query; nothing charged";
            entry.detail = Some(match entry.detail.take() {
                Some(basis) => format!("{basis}; {replay}"),
                None => replay.to_owned(),
            });
        }
        let answer = self.engine.release(prepared, noisy, replayed).await?;
        Ok((answer, budgets(&spent, caps)))
    }

    /// The caller's privacy budget: epsilon spent and left, per dataset they may query in dp
    /// mode or have spent on within the window.
    ///
    /// # Errors
    /// When the catalogue cannot be read.
    pub async fn budget(&self, caller: &Caller) -> Result<Vec<Budget>, Error> {
        let user = caller.principal.user.clone();
        let (datasets, spent) =
            self.blocking(move |c| Ok((c.datasets(false)?, c.budget_spent(&user, now_unix() - WINDOW)?))).await?;
        let now = now_unix();
        let who = caller.subject();
        let caps = datasets
            .iter()
            .filter(|d| {
                let meta = [DatasetMeta { dataset: d.dataset.clone(), level: d.level }];
                spent.iter().any(|s| s.dataset == d.dataset)
                    || self.policy.decide(&who, &meta, Mode::Dp, now).first_denial().is_none()
            })
            .map(DatasetCap::of)
            .collect();
        Ok(budgets(&spent, caps))
    }
}

/// Each of `caps`' datasets with what was `spent` on it.
fn budgets(spent: &[Spent], caps: Vec<DatasetCap>) -> Vec<Budget> {
    caps.into_iter()
        .map(|c| {
            let s = spent.iter().find(|s| s.dataset == c.dataset);
            let used = s.map_or(0.0, |s| s.epsilon);
            Budget {
                dataset: c.dataset,
                level: c.level,
                cap: c.cap,
                spent: used,
                left: c.cap.map(|cap| (cap - used).max(0.0)),
                delta_spent: s.map_or(0.0, |s| s.delta),
                queries: s.map_or(0, |s| s.queries),
                window_days: WINDOW_DAYS,
            }
        })
        .collect()
}
