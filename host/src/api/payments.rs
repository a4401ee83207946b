//! Admins and payments.
//!
//! - `GET /admin/v1/payments?plugin=&customer=&cursor=&limit=` pages through the payments
//!   plugins made, newest first (a branch admin sees its own subtree).
//! - `POST /admin/v1/sandbox/accounts/{customer}/fund` with `{"amount_minor": n, "currency":
//!   "CNY"}` funds (negative: takes from) a sandbox account; `GET` the account reads it. Only
//!   while the connector is the sandbox; head office only.

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::body::Json as JsonBody;
use crate::AppState;
use crate::audit::admin::{self as admin_audit, Change};
use crate::config::Connector;
use crate::error::{ApiError, ErrorCode};
use crate::payments::sandbox::{self, Account, FundError};
use crate::payments::{self, Payment, PaymentFilter};
use crate::registry::is_plugin_id;

/// The payment routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_payments))
        .routes(routes!(fund_account))
        .routes(routes!(sandbox_account))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PaymentsQuery {
    /// One plugin only.
    plugin: Option<String>,
    /// One customer only (the bank's customer number).
    customer: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Payments per page (at most `audit.page_max`).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PaymentPage {
    payments: Vec<Payment>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/payments",
    tag = "admin",
    params(PaymentsQuery),
    responses((status = 200, description = "Payments, newest first", body = PaymentPage), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential")),
    security(("admin_token" = []))
)]
async fn list_payments(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<PaymentsQuery>,
) -> Result<Json<PaymentPage>, ApiError> {
    if query.plugin.as_deref().is_some_and(|p| !is_plugin_id(p)) {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "plugin ids are lowercase letters, digits and '-'",
        ));
    }
    let limit = super::page_limit(query.limit, 50, state.config.audit.page_max);
    let filter = PaymentFilter {
        plugin: query.plugin.as_deref(),
        customer: query.customer.as_deref(),
        scope: admin.0.region.as_deref(),
        before: query.cursor.as_deref(),
        limit: i64::from(limit),
    };
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let payments = payments::page(&mut connection.conn(), &filter)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = super::next_cursor(&payments, limit, |p| &p.id);
    Ok(Json(PaymentPage {
        payments,
        next_cursor,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FundBody {
    /// Minor units to add (negative: to take, never below 0).
    amount_minor: i64,
    /// ISO 4217; an account keeps the currency it was opened in.
    currency: String,
}

fn sandbox_only(state: &AppState, admin: &Admin) -> Result<(), ApiError> {
    admin.may_write(None)?;
    if state.config.payments.connector != Connector::Sandbox {
        return Err(ApiError::new(
            ErrorCode::PaymentsSandboxDisabled,
            "payments go to the bank's core system (payments.connector = \"http\"); there are \
             no sandbox accounts",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/admin/v1/sandbox/accounts/{customer}/fund",
    tag = "admin",
    params(("customer" = String, Path, description = "The bank's customer number")),
    request_body = FundBody,
    responses((status = 200, description = "The account after", body = Account), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "Head office only"), (status = 409, description = "The connector is not the sandbox, or the account holds another currency")),
    security(("admin_token" = []))
)]
async fn fund_account(
    State(state): State<AppState>,
    admin: Admin,
    Path(customer): Path<String>,
    JsonBody(body): JsonBody<FundBody>,
) -> Result<Json<Account>, ApiError> {
    sandbox_only(&state, &admin)?;
    if customer.is_empty() || customer.len() > 64 {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "customer numbers are 1 to 64 bytes",
        ));
    }
    if !state.config.payments.currencies.contains(&body.currency) {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            format!(
                "currency {:?} is not accepted here (payments.currencies: {})",
                body.currency,
                state.config.payments.currencies.join(", ")
            ),
        ));
    }
    let now_ms = crate::ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = sandbox::account(&mut conn, &customer)
        .await
        .map_err(ApiError::internal)?;
    let after = sandbox::fund(
        &mut conn,
        &customer,
        &body.currency,
        body.amount_minor,
        now_ms,
    )
    .await
    .map_err(|error| match error {
        FundError::CurrencyMismatch(currency) => ApiError::new(
            ErrorCode::RequestInvalid,
            format!("the account holds {currency}; fund it in {currency}"),
        ),
        FundError::Database(error) => ApiError::internal(error),
    })?;
    let change = Change {
        actor: &admin.0.name,
        action: "sandbox.fund",
        target: format!("sandbox/account/{customer}"),
        region: None,
        before: before.and_then(|b| serde_json::to_value(b).ok()),
        after: serde_json::to_value(&after).ok(),
    };
    admin_audit::record(&mut conn, &change, now_ms)
        .await
        .map_err(ApiError::internal)?;
    transaction.commit().await.map_err(ApiError::internal)?;
    Ok(Json(after))
}

#[utoipa::path(
    get,
    path = "/admin/v1/sandbox/accounts/{customer}",
    tag = "admin",
    params(("customer" = String, Path, description = "The bank's customer number")),
    responses((status = 200, description = "The account", body = Account), (status = 401, description = "No valid credential"), (status = 403, description = "Head office only"), (status = 404, description = "No such account"), (status = 409, description = "The connector is not the sandbox")),
    security(("admin_token" = []))
)]
async fn sandbox_account(
    State(state): State<AppState>,
    admin: Admin,
    Path(customer): Path<String>,
) -> Result<Json<Account>, ApiError> {
    sandbox_only(&state, &admin)?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    sandbox::account(&mut connection.conn(), &customer)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::CustomerNotFound,
                format!("no sandbox account for {customer:?}; fund one to open it"),
            )
        })
}
