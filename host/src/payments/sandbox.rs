//! The sandbox core-banking system, for development and tests: accounts with balances in the
//! host's database (`sandbox_accounts`), and every transfer it executed by key
//! (`sandbox_transfers`), so asking twice under one key moves money once.
//!
//! An account that does not exist yet is opened on first use with
//! `payments.sandbox_opening_balance_minor` in the transfer's currency (0: it is not opened,
//! and the transfer fails with `account_not_found`). Admins fund accounts with `POST
//! /admin/v1/sandbox/accounts/{customer}/fund`.

use serde::Serialize;

use super::{BoxFuture, CoreBanking, Kind, Order, Outcome, Unavailable};
use crate::db::{Conn, Db};
use crate::with_conn;

/// The sandbox bank.
pub struct SandboxBank {
    db: Db,
    opening_balance_minor: i64,
}

/// A sandbox account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Account {
    /// The bank's customer number.
    pub customer_number: String,
    /// ISO 4217.
    pub currency: String,
    /// The balance in minor units.
    pub balance_minor: i64,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

impl SandboxBank {
    /// The sandbox in `db`.
    pub fn new(db: Db, opening_balance_minor: i64) -> Self {
        Self {
            db,
            opening_balance_minor,
        }
    }

    async fn transfer(&self, order: &Order) -> Result<Outcome, sqlx::Error> {
        let mut transaction = self.db.write.begin().await?;
        let mut conn = transaction.conn();
        if let Some(outcome) = stored(&mut conn, &order.idempotency_key).await? {
            return Ok(outcome);
        }
        let now_ms = crate::ledger::now_ms();
        let mut account = account(&mut conn, &order.account).await?;
        if account.is_none() && self.opening_balance_minor > 0 {
            open(
                &mut conn,
                &order.account,
                &order.currency,
                self.opening_balance_minor,
                now_ms,
            )
            .await?;
            account = self::account(&mut conn, &order.account).await?;
        }
        let outcome = match account {
            None => Outcome::Failed("account_not_found".into()),
            Some(account) if account.currency != order.currency => {
                Outcome::Failed("currency_mismatch".into())
            }
            Some(account) => {
                let delta = match order.kind {
                    Kind::Debit => -order.amount_minor,
                    Kind::Refund | Kind::Payout => order.amount_minor,
                };
                if account.balance_minor + delta < 0 {
                    Outcome::Failed("insufficient_funds".into())
                } else {
                    with_conn!(conn.reborrow(), c => {
                        sqlx::query(
                            "UPDATE sandbox_accounts SET balance_minor = balance_minor + $2, \
                             updated_at_ms = $3 WHERE customer_number = $1",
                        )
                        .bind(&order.account)
                        .bind(delta)
                        .bind(now_ms)
                        .execute(&mut *c)
                        .await?;
                    });
                    Outcome::Succeeded
                }
            }
        };
        let (status, reason) = match &outcome {
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Failed(reason) => ("failed", Some(reason.as_str())),
            Outcome::Pending => ("pending", None),
        };
        with_conn!(conn.reborrow(), c => {
            sqlx::query(
                "INSERT INTO sandbox_transfers (idempotency_key, kind, customer_number, \
                 minor_units, currency, status, reason, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&order.idempotency_key)
            .bind(order.kind.as_str())
            .bind(&order.account)
            .bind(order.amount_minor)
            .bind(&order.currency)
            .bind(status)
            .bind(reason)
            .bind(now_ms)
            .execute(&mut *c)
            .await?;
        });
        transaction.commit().await?;
        Ok(outcome)
    }
}

impl CoreBanking for SandboxBank {
    fn execute<'a>(&'a self, order: &'a Order) -> BoxFuture<'a, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            self.transfer(order)
                .await
                .map_err(|error| Unavailable(format!("sandbox database: {error}")))
        })
    }

    fn status<'a>(
        &'a self,
        order: &'a Order,
    ) -> BoxFuture<'a, Result<Option<Outcome>, Unavailable>> {
        Box::pin(async move {
            let mut connection = self
                .db
                .read
                .acquire()
                .await
                .map_err(|error| Unavailable(format!("sandbox database: {error}")))?;
            stored(&mut connection.conn(), &order.idempotency_key)
                .await
                .map_err(|error| Unavailable(format!("sandbox database: {error}")))
        })
    }
}

async fn stored(conn: &mut Conn<'_>, key: &str) -> Result<Option<Outcome>, sqlx::Error> {
    let row: Option<(String, Option<String>)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT status, reason FROM sandbox_transfers WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.map(|(status, reason)| match status.as_str() {
        "succeeded" => Outcome::Succeeded,
        "failed" => Outcome::Failed(reason.unwrap_or_default()),
        _ => Outcome::Pending,
    }))
}

/// The account of `customer`, if open.
pub async fn account(conn: &mut Conn<'_>, customer: &str) -> Result<Option<Account>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT customer_number, currency, balance_minor, updated_at_ms FROM sandbox_accounts \
             WHERE customer_number = $1",
        )
        .bind(customer)
        .fetch_optional(&mut *c)
        .await
    })
}

/// Opens `customer`'s account in `currency` with `balance_minor`, unless it is open already.
pub async fn open(
    conn: &mut Conn<'_>,
    customer: &str,
    currency: &str,
    balance_minor: i64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO sandbox_accounts (customer_number, currency, balance_minor, updated_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (customer_number) DO NOTHING",
        )
        .bind(customer)
        .bind(currency)
        .bind(balance_minor)
        .bind(now_ms)
        .execute(&mut *c)
        .await
        .map(drop)
    })
}

/// Why funding an account was refused.
#[derive(Debug, thiserror::Error)]
pub enum FundError {
    /// The account holds another currency.
    #[error("the account holds {0}")]
    CurrencyMismatch(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Adds `amount_minor` (negative: takes, never below 0) to `customer`'s account, opening it
/// in `currency` if needed. Returns the account after.
pub async fn fund(
    conn: &mut Conn<'_>,
    customer: &str,
    currency: &str,
    amount_minor: i64,
    now_ms: i64,
) -> Result<Account, FundError> {
    open(conn, customer, currency, 0, now_ms).await?;
    let before = account(conn, customer)
        .await?
        .ok_or(FundError::Database(sqlx::Error::RowNotFound))?;
    if before.currency != currency {
        return Err(FundError::CurrencyMismatch(before.currency));
    }
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "UPDATE sandbox_accounts SET balance_minor = CASE WHEN balance_minor + $2 < 0 \
             THEN 0 ELSE balance_minor + $2 END, updated_at_ms = $3 WHERE customer_number = $1",
        )
        .bind(customer)
        .bind(amount_minor)
        .bind(now_ms)
        .execute(&mut *c)
        .await?;
    });
    account(conn, customer)
        .await?
        .ok_or(FundError::Database(sqlx::Error::RowNotFound))
}
