//! `GET /v1/budget`: the caller's privacy budget, as the broker keeps it.

use axum::Json;
use axum::extract::State;

use crate::auth::Caller;
use crate::dto::{BudgetView, ErrorBody};
use crate::error::ApiError;
use crate::state::AppState;

/// The wire form of one dataset's budget.
pub(crate) fn budget_view(b: &veil_broker::Budget) -> BudgetView {
    BudgetView {
        dataset: b.dataset.to_string(),
        level: b.level.as_str().to_owned(),
        cap: b.cap,
        spent: b.spent,
        left: b.left,
        delta_spent: b.delta_spent,
        delta_cap: b.delta_cap,
        rho_spent: b.rho_spent,
        queries: b.queries,
        window_days: b.window_days,
    }
}

/// The caller's privacy budget: epsilon spent and left, per dataset they may query in dp mode
/// or have spent on within the window.
#[utoipa::path(get, path = "/v1/budget", tag = "query", security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn budget_show(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<BudgetView>>, ApiError> {
    let caller = veil_broker::Caller { principal: caller, request_id: None };
    let budget = state.broker.budget(&caller).await?;
    Ok(Json(budget.iter().map(budget_view).collect()))
}
