//! Admin endpoints, behind the bootstrap admin token until admin accounts exist:
//! `POST /admin/v1/budgets/{plugin}/{region}` funds a plugin's budget in a region from the
//! issuer (idempotent by `Idempotency-Key`), `GET` the same path reports it.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::body::Json as JsonBody;
use super::{Admin, idempotency_key};
use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::identity::is_region;
use crate::ledger::{self, ADMIN_SCOPE, BudgetReport, LedgerError, Operation, Request};
use crate::registry::is_plugin_id;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/admin/v1/budgets/{plugin}/{region}",
        get(report).post(fund),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FundBody {
    /// Points to move from the issuer into the budget.
    points: i64,
    /// A note kept with the posting.
    #[serde(default)]
    memo: String,
}

#[derive(Serialize)]
struct Funded {
    posting: String,
    budget: BudgetReport,
}

fn checked_path(plugin: &str, region: &str) -> Result<(), ApiError> {
    if !is_plugin_id(plugin) || !is_region(region) {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "plugin ids and regions are lowercase letters, digits and '-'",
        ));
    }
    Ok(())
}

async fn fund(
    State(state): State<AppState>,
    _admin: Admin,
    Path((plugin, region)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<FundBody>,
) -> Result<Json<Funded>, ApiError> {
    checked_path(&plugin, &region)?;
    let key = idempotency_key(&headers)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::RequestInvalid,
            "funding needs an Idempotency-Key header, so a retry funds once",
        )
    })?;
    if body.memo.len() > 200 {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "memo is at most 200 bytes",
        ));
    }
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let request = Request {
        scope: ADMIN_SCOPE,
        key: &key,
        now_ms,
        memo: &body.memo,
        id: None,
    };
    let mut conn = transaction.conn();
    let fund = Operation::Fund {
        amount: body.points,
    };
    let posting = match ledger::apply(&mut conn, &request, &plugin, &region, &fund).await {
        Ok(posting) => posting,
        Err(LedgerError::Database(error)) => return Err(ApiError::internal(error)),
        Err(LedgerError::AmountMustBePositive) => {
            return Err(ApiError::new(
                ErrorCode::RequestInvalid,
                "points must be a positive whole number",
            ));
        }
        Err(error) => return Err(ApiError::new(ErrorCode::LedgerConflict, error.to_string())),
    };
    let budget = ledger::budget_report(&mut conn, &plugin, &region)
        .await
        .map_err(ApiError::internal)?;
    transaction.commit().await.map_err(ApiError::internal)?;
    tracing::info!(%plugin, %region, points = body.points, %posting, "budget funded");
    Ok(Json(Funded { posting, budget }))
}

async fn report(
    State(state): State<AppState>,
    _admin: Admin,
    Path((plugin, region)): Path<(String, String)>,
) -> Result<Json<BudgetReport>, ApiError> {
    checked_path(&plugin, &region)?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let report = ledger::budget_report(&mut connection.conn(), &plugin, &region)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(report))
}
