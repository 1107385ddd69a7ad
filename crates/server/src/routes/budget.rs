//! The privacy budget (DESIGN §2–§3): what a dp query costs, charging it before the query runs
//! (or replaying the recorded answer of an identical query for free), and `GET /v1/budget`.
//!
//! Accounting is basic composition per analyst and dataset over a rolling 30-day window: a
//! query's epsilon is charged in full to every dataset it reads; the ledger's check and charge
//! are one catalogue transaction, so concurrent queries never overspend.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use veil_audit::Entry;
use veil_catalog::{Cap, Charge, DatasetInfo, Principal, Spend, Spent};
use veil_common::{DatasetRef, ErrorKind, Level, Mode, UserId};
use veil_policy::{DatasetMeta, PolicyEngine};
use veil_query::{Answer, DpParams, NoisyAggregate, Prepared};

use crate::auth::Caller;
use crate::dto::{BudgetView, ErrorBody};
use crate::error::ApiError;
use crate::state::{AppState, now_unix, subject};

/// Delta of every dp query: the chance, at most, that a group made of one person's rows is
/// released despite the threshold. Far below one over any population a department holds.
pub(crate) const DELTA: f64 = 1e-7;

/// The rolling budget window.
const WINDOW_DAYS: u32 = 30;
const WINDOW: i64 = WINDOW_DAYS as i64 * 86_400;

/// The most epsilon one query may ask for.
const MAX_EPSILON: f64 = 10.0;

/// How often a query waits for an identical one that is running.
const WAIT_STEP: Duration = Duration::from_millis(50);

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
        Self { dataset: info.dataset.clone(), level: info.level, cap: info.dp.cap(info.level) }
    }
}

/// The epsilon a query spends: as asked, or a tenth of the smallest cap among its datasets
/// (at most 1), so that an analyst who never says gets ten answers per window.
pub(crate) fn epsilon(asked: Option<f64>, caps: &[DatasetCap]) -> Result<f64, ApiError> {
    match asked {
        Some(e) if e.is_finite() && e > 0.0 && e <= MAX_EPSILON => Ok(e),
        Some(e) => Err(ApiError::bad_request(
            "epsilon_invalid",
            format!("epsilon {e} is not allowed: it must be a number above 0 and at most {MAX_EPSILON}"),
        )),
        None => {
            let smallest = caps.iter().filter_map(|c| c.cap).fold(f64::INFINITY, f64::min);
            Ok((smallest / 10.0).min(1.0))
        }
    }
}

/// Charges (or replays) and runs a prepared dp query. A dry run charges nothing. A query that
/// fails before releasing anything is refunded.
pub(crate) async fn run_dp(
    state: &AppState,
    caller: &Principal,
    prepared: Prepared,
    params: DpParams,
    caps: &[DatasetCap],
    dry_run: bool,
    entry: &mut Entry,
) -> Result<Answer, ApiError> {
    if dry_run {
        return Ok(state.query.execute(prepared, None).await?);
    }
    let key = prepared.dp_key().ok_or_else(|| ApiError::internal("a dp query without its answer key"))?;
    let ledger_caps: Vec<Cap> =
        caps.iter().map(|c| Cap { dataset: c.dataset.clone(), epsilon: c.cap.unwrap_or(f64::INFINITY) }).collect();
    let started = Instant::now();
    let deadline = state.query.limits().deadline;
    let recorded = loop {
        let (user, key, caps) = (caller.user.clone(), key.clone(), ledger_caps.clone());
        let spend = state
            .blocking(move |c| {
                let charge = Charge {
                    user: &user,
                    epsilon: params.epsilon,
                    delta: params.delta,
                    query: &key,
                    now: now_unix(),
                    window: WINDOW,
                };
                c.spend_or_replay(&charge, &caps)
            })
            .await?;
        match spend {
            Spend::Charged(_) => break None,
            Spend::Replay(bytes) => break Some(NoisyAggregate::from_bytes(&bytes)?),
            Spend::Running if started.elapsed() < deadline => tokio::time::sleep(WAIT_STEP).await,
            Spend::Running => {
                return Err(ApiError::new(
                    ErrorKind::Timeout,
                    "query_in_progress",
                    "an identical dp query of yours is still running; its answer will be replayed when it finishes",
                ));
            }
        }
    };
    let replayed = recorded.is_some();
    entry.epsilon = Some(if replayed { 0.0 } else { params.epsilon });
    if replayed {
        // After the basis the query path recorded (policy line or access request), if any.
        let replay = "the recorded answer of an identical query; nothing charged";
        entry.detail = Some(match entry.detail.take() {
            Some(basis) => format!("{basis}; {replay}"),
            None => replay.to_owned(),
        });
    }
    let outcome = state.query.execute(prepared, recorded).await;
    if replayed {
        return Ok(outcome?);
    }
    let user = caller.user.clone();
    match outcome {
        Ok(answer) => {
            let bytes = match answer.dp.as_ref().and_then(|d| d.noisy.as_ref()) {
                Some(noisy) => noisy.to_bytes()?,
                None => return Err(ApiError::internal("a dp answer without its noisy aggregate")),
            };
            state.blocking(move |c| c.record_answer(&user, &key, &bytes)).await?;
            Ok(answer)
        }
        Err(e) => {
            entry.epsilon = Some(0.0);
            state.blocking(move |c| c.refund(&user, &key)).await?;
            Err(e.into())
        }
    }
}

/// The budget of `user` on each of `caps`' datasets now.
pub(crate) async fn views(state: &AppState, user: &UserId, caps: Vec<DatasetCap>) -> Result<Vec<BudgetView>, ApiError> {
    let user = user.clone();
    let spent = state.blocking(move |c| c.budget_spent(&user, now_unix() - WINDOW)).await?;
    Ok(budget_views(&spent, caps))
}

/// Each of `caps`' datasets with what was `spent` on it.
fn budget_views(spent: &[Spent], caps: Vec<DatasetCap>) -> Vec<BudgetView> {
    caps.into_iter()
        .map(|c| {
            let s = spent.iter().find(|s| s.dataset == c.dataset);
            let used = s.map_or(0.0, |s| s.epsilon);
            BudgetView {
                dataset: c.dataset.to_string(),
                level: c.level.as_str().to_owned(),
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

/// The caller's privacy budget: epsilon spent and left, per dataset they may query in dp mode
/// or have spent on within the window.
#[utoipa::path(get, path = "/v1/budget", tag = "query", security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn budget_show(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<BudgetView>>, ApiError> {
    let user = caller.user.clone();
    let (datasets, spent) =
        state.blocking(move |c| Ok((c.datasets(false)?, c.budget_spent(&user, now_unix() - WINDOW)?))).await?;
    let now = now_unix();
    let who = subject(&caller);
    let caps = datasets
        .iter()
        .filter(|d| {
            let meta = [DatasetMeta { dataset: d.dataset.clone(), level: d.level }];
            spent.iter().any(|s| s.dataset == d.dataset)
                || state.policy.decide(&who, &meta, Mode::Dp, now).first_denial().is_none()
        })
        .map(DatasetCap::of)
        .collect();
    Ok(Json(budget_views(&spent, caps)))
}
