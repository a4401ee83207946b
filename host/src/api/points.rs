//! The customer's points: `GET /v1/points` (balance, what expires when) and
//! `GET /v1/points/history?cursor=&limit=` (newest first, paged).

use axum::Json;
use axum::extract::State;

use super::extract::Query;
use serde::{Deserialize, Serialize};

use super::AuthenticatedCustomer;
use crate::AppState;
use crate::error::ApiError;
use crate::ledger::{self, Account};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The points routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(balance))
        .routes(routes!(history))
}

#[derive(Serialize)]
struct Lot {
    expires_at_ms: i64,
    points: i64,
}

#[derive(Serialize)]
struct BalanceBody {
    total: i64,
    available: i64,
    held: i64,
    expiring: Vec<Lot>,
}

#[utoipa::path(
    get,
    path = "/v1/points",
    tag = "customer",
    responses((status = 200, description = "Balance, available and held points, and the lots by expiry"), (status = 401, description = "No valid credential")),
    security(("customer_token" = []))
)]
async fn balance(
    State(state): State<AppState>,
    AuthenticatedCustomer(customer): AuthenticatedCustomer,
) -> Result<Json<BalanceBody>, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let balance = ledger::balance(
        &mut connection.conn(),
        &customer.customer_number,
        ledger::now_ms(),
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(BalanceBody {
        total: balance.total,
        available: balance.available,
        held: balance.held,
        expiring: balance
            .expiring
            .into_iter()
            .map(|(expires_at_ms, points)| Lot {
                expires_at_ms,
                points,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Entry {
    id: String,
    at_ms: i64,
    kind: String,
    /// Positive received, negative given.
    points: i64,
    scenario: Option<String>,
    memo: String,
}

#[derive(Serialize)]
struct HistoryBody {
    postings: Vec<Entry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/points/history",
    tag = "customer",
    params(("cursor" = Option<String>, Query, description = "The next_cursor of the previous page")),
    responses((status = 200, description = "One page of postings, newest first"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential")),
    security(("customer_token" = []))
)]
async fn history(
    State(state): State<AppState>,
    AuthenticatedCustomer(customer): AuthenticatedCustomer,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryBody>, ApiError> {
    let limit_max = state.config.ledger.history_limit_max;
    let limit = super::page_limit(query.limit, 20, limit_max);
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let postings = ledger::history(
        &mut connection.conn(),
        &customer.customer_number,
        query.cursor.as_deref(),
        i64::from(limit),
    )
    .await
    .map_err(ApiError::internal)?;
    let next_cursor = super::next_cursor(&postings, limit, |p| &p.id);
    let account = Account::Customer(customer.customer_number).id();
    let postings = postings
        .into_iter()
        .map(|posting| Entry {
            points: posting.points_for(&account),
            id: posting.id,
            at_ms: posting.created_at_ms,
            kind: posting.kind,
            scenario: posting.plugin_id,
            memo: posting.memo,
        })
        .collect();
    Ok(Json(HistoryBody {
        postings,
        next_cursor,
    }))
}
