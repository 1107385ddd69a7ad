//! The privacy budget around a dp query: what it costs, reserving it before the query runs (or
//! replaying the recorded answer of an identical query for free), and the caller's view.
//!
//! Accounting is per analyst and dataset over a rolling 30-day window: a query's pure ε
//! (discrete Laplace) or ρ (discrete Gaussian), and the δ of its group selection, are charged in
//! full to every dataset it reads; what the window's charges guarantee together is the smaller
//! of basic and zCDP composition (`veil_dp::accounting`). The charge is reserved in one
//! catalogue transaction before the query runs and kept if it fails, so concurrent queries
//! never overspend and a failure is never free.

use veil_audit::Entry;
use veil_catalog::{Cap, Charge, DatasetInfo, Spent};
use veil_common::{DatasetRef, Level, Mode};
use veil_dp::{Loss, Noise};
use veil_policy::{DatasetMeta, PolicyEngine};
use veil_query::{DpParams, NoisyAggregate, Prepared};

use crate::{Answer, Broker, Caller, Error, now_unix};

/// Delta of a dp answer's group selection: the chance, at most, that a group made of one
/// person's rows is released despite the threshold. Far below one over any population a
/// department holds. An answer without a threshold spends none.
pub(crate) const DELTA: f64 = 1e-7;

/// The most δ of group selection an analyst may spend on one dataset per window: a hundred
/// grouped answers. With the 10⁻⁷ of converting ρ, the window's δ stays near 10⁻⁵.
pub(crate) const DELTA_CAP: f64 = 1e-5;

/// The rolling budget window.
const WINDOW_DAYS: u32 = 30;
const WINDOW: i64 = WINDOW_DAYS as i64 * 86_400;

/// The most epsilon one query may ask for.
const MAX_EPSILON: f64 = 10.0;

/// The least epsilon one query may ask for. Below it an answer is noise (a count's 95%
/// interval is thousands wide), and without a floor an analyst whose cap is spent could still
/// take unlimited answers at ε ≈ 0, each with its δ: a spent cap must mean no more answers.
const MIN_EPSILON: f64 = 1e-3;

/// The least and most ρ one query may ask for: ρ = ε²/2 maps the ε floor to 5·10⁻⁷; 2 is more
/// than any cap allows in one answer.
const MIN_RHO: f64 = 1e-6;
const MAX_RHO: f64 = 2.0;

/// One dataset's privacy budget for one analyst over the rolling window.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The dataset.
    pub dataset: DatasetRef,
    /// Its level.
    pub level: Level,
    /// Epsilon the analyst's answers may guarantee together per window; `None` where the level
    /// sets no cap (a dataset about nobody at L1 or L2).
    pub cap: Option<f64>,
    /// Epsilon the answers in the window guarantee together.
    pub spent: f64,
    /// Epsilon left, where there is a cap.
    pub left: Option<f64>,
    /// Delta of that guarantee: group selections', plus converting ρ where it was.
    pub delta_spent: f64,
    /// Most delta of group selection per window.
    pub delta_cap: f64,
    /// ρ of the answers with Gaussian noise in the window.
    pub rho_spent: f64,
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
    /// The noise its steward chose for answers that do not choose theirs.
    noise: Noise,
}

impl DatasetCap {
    pub(crate) fn of(info: &DatasetInfo) -> Self {
        Self { dataset: info.dataset.clone(), level: info.level, cap: info.epsilon_cap(), noise: info.dp.noise }
    }

    fn ledger(&self) -> Cap {
        Cap { dataset: self.dataset.clone(), epsilon: self.cap.unwrap_or(f64::INFINITY), delta: DELTA_CAP }
    }
}

/// The noise and privacy parameter a query spends: ε with discrete Laplace noise or ρ with
/// discrete Gaussian noise, as asked; without either, the noise asked for (`noise`) or else
/// the one every dataset's steward chose (Laplace unless all chose Gaussian), at a tenth of
/// what the smallest cap among the datasets allows (ε at most 1), so that an analyst who never
/// says gets ten answers per window. With an accuracy the budget is a placeholder until the
/// query is planned ([`for_accuracy`]).
pub(crate) fn params(
    epsilon: Option<f64>,
    rho: Option<f64>,
    noise: Option<Noise>,
    accuracy: bool,
    caps: &[DatasetCap],
) -> Result<DpParams, Error> {
    let conflict = |message: &str| Err(Error::invalid("epsilon_invalid", message.to_owned()));
    match (epsilon, rho, noise) {
        (Some(_), Some(_), _) => {
            return conflict("ask for epsilon (discrete Laplace noise) or rho (discrete Gaussian noise), not both");
        }
        _ if accuracy && (epsilon.is_some() || rho.is_some()) => {
            return conflict(
                "ask for an accuracy or for epsilon or rho, not both: the accuracy decides what the query spends",
            );
        }
        (Some(_), None, Some(Noise::Gaussian)) => {
            return conflict("epsilon is spent with Laplace noise; give rho for Gaussian noise");
        }
        (None, Some(_), Some(Noise::Laplace)) => {
            return conflict("rho is spent with Gaussian noise; give epsilon for Laplace noise");
        }
        _ => {}
    }
    let chosen = noise.unwrap_or_else(|| {
        let all_gaussian = !caps.is_empty() && caps.iter().all(|c| c.noise == Noise::Gaussian);
        if all_gaussian { Noise::Gaussian } else { Noise::Laplace }
    });
    if accuracy {
        return Ok(DpParams { noise: chosen, budget: 1.0, delta: DELTA });
    }
    match (epsilon, rho) {
        (None, Some(r)) if r.is_finite() && (MIN_RHO..=MAX_RHO).contains(&r) => Ok(DpParams::gaussian(r, DELTA)),
        (None, Some(r)) => Err(Error::invalid(
            "epsilon_invalid",
            format!("rho {r} is not allowed: it must be a number from {MIN_RHO} to {MAX_RHO}"),
        )),
        (Some(e), _) if e.is_finite() && (MIN_EPSILON..=MAX_EPSILON).contains(&e) => Ok(DpParams::laplace(e, DELTA)),
        (Some(e), _) => Err(Error::invalid(
            "epsilon_invalid",
            format!("epsilon {e} is not allowed: it must be a number from {MIN_EPSILON} to {MAX_EPSILON}"),
        )),
        (None, None) => {
            let smallest = caps.iter().filter_map(|c| c.cap).fold(f64::INFINITY, f64::min);
            Ok(match chosen {
                Noise::Laplace => DpParams::laplace((smallest / 10.0).clamp(MIN_EPSILON, 1.0), DELTA),
                // ρ composes by adding: a tenth of the ρ the cap allows in all, and without a
                // cap the ρ of ε = 1 (ρ = ε²/2).
                Noise::Gaussian => {
                    let whole = if smallest.is_finite() {
                        veil_dp::accounting::rho_within(smallest, veil_dp::accounting::CONVERSION_DELTA)
                    } else {
                        5.0
                    };
                    DpParams::gaussian((whole / 10.0).clamp(MIN_RHO, MAX_RHO), DELTA)
                }
            })
        }
    }
}

/// The least ε (discrete Laplace) or ρ (discrete Gaussian, as `placeholder` chose) that gives
/// every column of `accuracy` a 95% interval no wider than asked, for a planned dp query,
/// within the limits of one query.
pub(crate) fn for_accuracy(
    prepared: &Prepared,
    accuracy: &[(String, f64)],
    placeholder: DpParams,
) -> Result<DpParams, Error> {
    let budget = prepared.budget_for_accuracy(accuracy, placeholder.noise)?;
    let too_much = |what: String| {
        Err(Error::invalid(
            "accuracy_invalid",
            format!("that accuracy costs {what}, more than one query may spend; ask for wider intervals"),
        ))
    };
    match placeholder.noise {
        Noise::Laplace if budget > MAX_EPSILON => too_much(format!("epsilon {budget:.3} (at most {MAX_EPSILON})")),
        Noise::Laplace => Ok(DpParams::laplace(budget.max(MIN_EPSILON), DELTA)),
        Noise::Gaussian if budget > MAX_RHO => too_much(format!("rho {budget:.4} (at most {MAX_RHO})")),
        Noise::Gaussian => Ok(DpParams::gaussian(budget.max(MIN_RHO), DELTA)),
    }
}

/// What a charge adds to the ε the analyst's answers guarantee on each dataset, at most: the
/// query's cost in the window's terms (less than its own ε once zCDP composition is the tighter
/// bound).
fn cost(spent: &[Spent], caps: &[DatasetCap], charge: Loss) -> f64 {
    caps.iter()
        .map(|c| {
            let before = spent.iter().find(|s| s.dataset == c.dataset).map_or_else(Loss::default, |s| s.loss);
            before.plus(charge).guarantee().epsilon - before.guarantee().epsilon
        })
        .fold(0.0, f64::max)
}

impl Broker {
    /// Runs a prepared dp query and settles its budget; returns the answer and the budget of
    /// each of `caps`' datasets afterwards.
    ///
    /// An identical earlier query's recorded answer is released again, charging nothing. Else
    /// the charge is reserved before the query runs, in one transaction that checks every cap
    /// (so two queries never both take the last of a budget); a query that then fails keeps
    /// its charge, so failing is never a free answer. The answer measured is recorded; if an
    /// identical query recorded one meanwhile, that one is released (both were charged). A dry
    /// run charges nothing but is refused exactly when the real run would be.
    pub(crate) async fn run_dp(
        &self,
        caller: &Caller,
        prepared: Prepared,
        params: DpParams,
        caps: Vec<DatasetCap>,
        entry: &mut Entry,
    ) -> Result<(Answer, Vec<Budget>), Error> {
        let user = caller.principal.user.clone();
        let ledger_caps: Vec<Cap> = caps.iter().map(DatasetCap::ledger).collect();
        let key = prepared.dp_key().ok_or_else(|| Error::internal("a dp query without its answer key"))?;
        let delta = prepared.selection_delta().unwrap_or(params.delta);
        let loss = Loss::charge(params.epsilon().unwrap_or(0.0), params.rho().unwrap_or(0.0), delta);
        let charge = {
            let (user, key) = (user.clone(), key.clone());
            move |c: &veil_catalog::Catalog, reserve: bool| {
                let charge = Charge {
                    user: &user,
                    epsilon: loss.epsilon,
                    rho: loss.rho,
                    delta: loss.delta,
                    query: &key,
                    now: now_unix(),
                    window: WINDOW,
                };
                if reserve { c.reserve(&charge, &ledger_caps) } else { c.budget_ahead(&charge, &ledger_caps) }
            }
        };
        if prepared.dry_run() {
            let ahead = self.blocking(move |c| charge(c, false)).await?;
            let mut answer = self.engine.execute(prepared).await?;
            if let Some(report) = answer.dp.as_mut() {
                // What the real run would do: release the recorded answer, charging nothing.
                report.replayed = ahead.replay.is_some();
            }
            return Ok((answer, budgets(&ahead.spent, caps)));
        }
        let reserved = self.blocking(move |c| charge(c, true)).await?;
        entry.rho = params.rho();
        let (noisy, replayed) = match reserved.replay {
            Some(recorded) => (NoisyAggregate::from_bytes(&recorded)?, true),
            None => {
                // Charged from here on, whatever happens to the query.
                let spent_after = &reserved.spent;
                let before: Vec<Spent> =
                    spent_after.iter().map(|s| Spent { loss: without(s.loss, loss), ..s.clone() }).collect();
                entry.epsilon = Some(cost(&before, &caps, loss));
                let noisy = self.engine.measure(&prepared).await?;
                let bytes = noisy.to_bytes()?;
                let now = now_unix();
                match self.blocking(move |c| c.record_answer(&user, &key, &bytes, now)).await? {
                    None => (noisy, false),
                    // An identical query recorded its answer first: that one is released.
                    Some(first) => (NoisyAggregate::from_bytes(&first)?, true),
                }
            }
        };
        if replayed && entry.epsilon.is_none() {
            entry.epsilon = Some(0.0);
            entry.rho = entry.rho.map(|_| 0.0);
            // After the basis the query path recorded (policy line or access request), if any.
            let replay = "the recorded answer of an identical query; nothing charged";
            entry.detail = Some(match entry.detail.take() {
                Some(basis) => format!("{basis}; {replay}"),
                None => replay.to_owned(),
            });
        }
        let answer = self.engine.release(prepared, noisy, replayed).await?;
        Ok((answer, budgets(&reserved.spent, caps)))
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
            let guarantee = s.map(Spent::guarantee);
            let used = guarantee.map_or(0.0, |g| g.epsilon);
            Budget {
                dataset: c.dataset,
                level: c.level,
                cap: c.cap,
                spent: used,
                left: c.cap.map(|cap| (cap - used).max(0.0)),
                delta_spent: guarantee.map_or(0.0, |g| g.delta),
                delta_cap: DELTA_CAP,
                rho_spent: s.map_or(0.0, |s| s.loss.rho),
                queries: s.map_or(0, |s| s.queries),
                window_days: WINDOW_DAYS,
            }
        })
        .collect()
}

/// `total` less one `charge` (what was spent before a charge, from what is spent after it).
fn without(total: Loss, charge: Loss) -> Loss {
    Loss {
        epsilon: total.epsilon - charge.epsilon,
        epsilon_squared: total.epsilon_squared - charge.epsilon_squared,
        rho: total.rho - charge.rho,
        delta: total.delta - charge.delta,
    }
}
