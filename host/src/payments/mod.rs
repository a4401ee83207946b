//! The `payments` interface: debits, refunds and payouts of the calling customer's bank
//! account through the bank's core-banking system, behind the [`CoreBanking`] port.
//!
//! Payments are external effects, made when the plugin asks, not at commit. The host keeps
//! its own record of each (`payments`): a payment is stored `pending` before the bank is asked,
//! then updated with the bank's answer, so a crash or a timeout leaves a pending payment that
//! [`status`](CallPayments) resolves by asking again with the same key. Keys are unique per
//! plugin; the key sent to the bank is the payment's id, so a retry never pays twice. Refunds
//! of one debit never add up to more than it: they are reserved on the debit's row under the
//! database's write lock.
//!
//! Two connectors: [`sandbox::SandboxBank`] (accounts in the database, for development and
//! tests) and [`http::HttpBank`] (the protocol a bank's core system implements, documented
//! there).

pub mod http;
pub mod sandbox;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::PaymentsConfig;
use crate::db::{Conn, Db};
use crate::runtime::interfaces::payments as wit;
use crate::runtime::{HostFailure, Metered};
use crate::with_conn;

/// A boxed future of a connector.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the host asks the bank to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// The idempotency key the bank sees: the payment's id.
    pub idempotency_key: String,
    /// `debit`, `refund` or `payout`.
    pub kind: Kind,
    /// The bank's customer number.
    pub account: String,
    /// Whole minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// A note for the statement.
    pub memo: String,
    /// For a refund: the idempotency key of the debit it refunds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<String>,
}

/// A payment's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// From the customer.
    Debit,
    /// Back to the customer, against a debit.
    Refund,
    /// To the customer.
    Payout,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Debit => "debit",
            Kind::Refund => "refund",
            Kind::Payout => "payout",
        }
    }

    fn parse(text: &str) -> Kind {
        match text {
            "refund" => Kind::Refund,
            "payout" => Kind::Payout,
            _ => Kind::Debit,
        }
    }
}

/// The bank's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Succeeded,
    /// Declined: why.
    Failed(String),
    /// Not known yet.
    Pending,
}

/// The bank could not be asked, or did not answer: the outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("core banking unavailable: {0}")]
pub struct Unavailable(pub String);

/// The port to the bank's core-banking system. Both calls are idempotent by the order's key.
pub trait CoreBanking: Send + Sync {
    /// Executes `order` (or answers how the earlier execution under its key went).
    fn execute<'a>(&'a self, order: &'a Order) -> BoxFuture<'a, Result<Outcome, Unavailable>>;

    /// How the order with `order`'s key went; `None` if the bank never received it.
    fn status<'a>(
        &'a self,
        order: &'a Order,
    ) -> BoxFuture<'a, Result<Option<Outcome>, Unavailable>>;
}

/// The connector the configuration names.
pub fn connector(
    config: &PaymentsConfig,
    db: &Db,
    client: &reqwest::Client,
) -> Arc<dyn CoreBanking> {
    match &config.connector {
        crate::config::Connector::Sandbox => Arc::new(sandbox::SandboxBank::new(
            db.clone(),
            config.sandbox_opening_balance_minor,
        )),
        crate::config::Connector::Http => Arc::new(http::HttpBank::new(
            client.clone(),
            config.http_url.clone().unwrap_or_default(),
            config.http_token.clone(),
        )),
    }
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Payment {
    /// Its id (also the key the bank saw).
    pub id: String,
    /// The plugin that made it.
    pub plugin_id: String,
    /// The region of the call.
    pub region: String,
    /// The customer (the bank's customer number; plugins never see it).
    pub customer_number: String,
    /// `debit`, `refund` or `payout`.
    pub kind: String,
    /// Whole minor units.
    pub minor_units: i64,
    /// ISO 4217.
    pub currency: String,
    /// The plugin's idempotency key.
    pub idempotency_key: String,
    /// `succeeded`, `failed` or `pending`.
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// For a refund: the debit.
    pub refunds: Option<String>,
    /// For a debit: what its refunds take back.
    pub refunded_minor: i64,
    /// The plugin's note.
    pub memo: String,
    /// The invocation that made it.
    pub invocation_id: String,
    /// When.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

impl Payment {
    fn order(&self) -> Order {
        Order {
            idempotency_key: self.id.clone(),
            kind: Kind::parse(&self.kind),
            account: self.customer_number.clone(),
            amount_minor: self.minor_units,
            currency: self.currency.clone(),
            memo: self.memo.clone(),
            refunds: self.refunds.clone(),
        }
    }

    fn to_wit(&self) -> wit::Payment {
        wit::Payment {
            id: self.id.clone(),
            kind: match Kind::parse(&self.kind) {
                Kind::Debit => wit::PaymentKind::Debit,
                Kind::Refund => wit::PaymentKind::Refund,
                Kind::Payout => wit::PaymentKind::Payout,
            },
            amount: wit::Money {
                minor_units: self.minor_units,
                currency: self.currency.clone(),
            },
            status: match self.status.as_str() {
                "succeeded" => wit::PaymentStatus::Succeeded,
                "failed" => wit::PaymentStatus::Failed,
                _ => wit::PaymentStatus::Pending,
            },
            refunds: self.refunds.clone(),
            reason: self.reason.clone(),
        }
    }
}

const COLUMNS: &str = "SELECT id, plugin_id, region, customer_number, kind, minor_units, currency, \
     idempotency_key, status, reason, refunds, refunded_minor, memo, invocation_id, \
     created_at_ms, updated_at_ms FROM payments";

/// One payment by id.
pub async fn get(conn: &mut Conn<'_>, id: &str) -> Result<Option<Payment>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!("{COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *c)
            .await
    })
}

async fn by_key(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    key: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!("{COLUMNS} WHERE plugin_id = $1 AND idempotency_key = $2"))
            .bind(plugin_id)
            .bind(key)
            .fetch_optional(&mut *c)
            .await
    })
}

/// Which payments to list.
#[derive(Debug, Default)]
pub struct PaymentFilter<'a> {
    /// One plugin only.
    pub plugin: Option<&'a str>,
    /// One customer only.
    pub customer: Option<&'a str>,
    /// Regions within this one only.
    pub scope: Option<&'a str>,
    /// Strictly before this payment id.
    pub before: Option<&'a str>,
    /// Rows at most.
    pub limit: i64,
}

/// Payments newest first, as `filter` says.
pub async fn page(
    conn: &mut Conn<'_>,
    filter: &PaymentFilter<'_>,
) -> Result<Vec<Payment>, sqlx::Error> {
    let subtree = filter.scope.map(|scope| format!("{scope}-%"));
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!(
            "{COLUMNS} WHERE ($1 IS NULL OR plugin_id = $1) AND ($2 IS NULL OR customer_number = $2) \
             AND ($3 IS NULL OR region = $3 OR region LIKE $4) AND ($5 IS NULL OR id < $5) \
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(filter.plugin)
        .bind(filter.customer)
        .bind(filter.scope)
        .bind(subtree)
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&mut *c)
        .await
    })
}

/// Who and where a call pays for.
#[derive(Clone)]
pub struct PaymentContext {
    /// The plugin.
    pub plugin_id: String,
    /// The call's region.
    pub region: String,
    /// The customer, if the call is for one.
    pub customer_number: Option<String>,
    /// The invocation.
    pub invocation_id: String,
}

/// One call's `payments`.
#[derive(Default)]
pub struct CallPayments {
    parts: Option<Parts>,
    made: u32,
    /// Whether a payment was answered to this call (new, or an earlier one of its key).
    asked: bool,
    waited: Arc<AtomicU64>,
    wait_ms_max: u64,
}

/// What a call's payments work with: the database, the bank, the limits, whom it pays for.
type Parts = (Db, Arc<dyn CoreBanking>, PaymentsConfig, PaymentContext);

/// What a payments call ends with: an answer, a refusal, or a host failure (a trap).
type Answer = Result<Result<wit::Payment, wit::PaymentError>, HostFailure>;

impl CallPayments {
    /// The payments of a call in `context`. Waiting on the bank counts in `waited` (shared
    /// with `outbound`), which extends the call's deadline up to `wait_ms_max` in all.
    pub fn new(
        db: Db,
        bank: Arc<dyn CoreBanking>,
        config: PaymentsConfig,
        context: PaymentContext,
        waited: Arc<AtomicU64>,
        wait_ms_max: u64,
    ) -> Self {
        Self {
            parts: Some((db, bank, config, context)),
            made: 0,
            asked: false,
            waited,
            wait_ms_max,
        }
    }

    /// Whether the call was answered a payment (made now or earlier under its key).
    pub fn asked(&self) -> bool {
        self.asked
    }

    fn parts(&self) -> Result<&Parts, HostFailure> {
        self.parts
            .as_ref()
            .ok_or_else(|| HostFailure("payments used without a context".into()))
    }

    /// Checks a new payment's amount and the call's count; the customer it is for.
    fn admit(&self, amount: &wit::Money) -> Result<Result<String, wit::PaymentError>, HostFailure> {
        let (_, _, config, context) = self.parts()?;
        let Some(customer) = context.customer_number.clone() else {
            return Ok(Err(wit::PaymentError::NotACustomer));
        };
        if amount.minor_units <= 0 {
            return Ok(Err(wit::PaymentError::AmountMustBePositive));
        }
        if amount.minor_units > config.amount_minor_max {
            return Ok(Err(wit::PaymentError::AmountTooLarge(
                config.amount_minor_max,
            )));
        }
        if !config.currencies.contains(&amount.currency) {
            return Ok(Err(wit::PaymentError::CurrencyNotSupported(
                amount.currency.clone(),
            )));
        }
        if self.made >= config.per_call_max {
            return Ok(Err(wit::PaymentError::TooManyPayments(config.per_call_max)));
        }
        Ok(Ok(customer))
    }

    async fn pay(
        &mut self,
        kind: Kind,
        amount: wit::Money,
        key: String,
        memo: String,
        refunds: Option<String>,
    ) -> Answer {
        let customer = match self.admit(&amount)? {
            Ok(customer) => customer,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let (db, _, _, context) = self.parts()?;
        let now_ms = crate::ledger::now_ms();
        let fresh = Payment {
            id: uuid::Uuid::now_v7().simple().to_string(),
            plugin_id: context.plugin_id.clone(),
            region: context.region.clone(),
            customer_number: customer,
            kind: kind.as_str().to_owned(),
            minor_units: amount.minor_units,
            currency: amount.currency,
            idempotency_key: key,
            status: "pending".into(),
            reason: None,
            refunds,
            refunded_minor: 0,
            memo,
            invocation_id: context.invocation_id.clone(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        let stored = match record(db, &fresh).await.map_err(db_failure)? {
            Recorded::New => fresh,
            Recorded::Earlier(earlier) => {
                let same = earlier.kind == fresh.kind
                    && earlier.minor_units == fresh.minor_units
                    && earlier.currency == fresh.currency
                    && earlier.refunds == fresh.refunds
                    && earlier.customer_number == fresh.customer_number;
                if !same {
                    return Ok(Err(wit::PaymentError::ExistsWithDifferentRequest));
                }
                // A retry: answer the first payment as it stands now.
                self.asked = true;
                return Ok(Ok(self.settle(*earlier).await?.to_wit()));
            }
            Recorded::Refused(refusal) => return Ok(Err(refusal)),
        };
        let db = db.clone();
        self.made += 1;
        self.asked = true;
        let outcome = self.ask(&stored, false).await;
        let settled = finish(&db, &stored, outcome).await.map_err(db_failure)?;
        Ok(Ok(settled.to_wit()))
    }

    /// Asks the bank to execute `payment`, or, to `resolve` it, how it went (sending it if
    /// the bank never got it), counting the wait; an unknown answer is `Pending`.
    async fn ask(&self, payment: &Payment, resolve: bool) -> Outcome {
        let Ok((_, bank, config, _)) = self.parts() else {
            return Outcome::Pending;
        };
        let waited = Duration::from_micros(self.waited.load(Ordering::Relaxed));
        let budget = Duration::from_millis(self.wait_ms_max).saturating_sub(waited);
        let timeout = Duration::from_millis(config.timeout_ms).min(budget);
        if timeout.is_zero() {
            return Outcome::Pending;
        }
        let reserved = timeout.as_micros() as u64;
        self.waited.fetch_add(reserved, Ordering::Relaxed);
        let started = Instant::now();
        let order = payment.order();
        let answer = tokio::time::timeout(timeout, async {
            if resolve && let Some(outcome) = bank.status(&order).await? {
                return Ok(outcome);
            }
            bank.execute(&order).await
        })
        .await;
        let used = (started.elapsed().as_micros() as u64).min(reserved);
        self.waited.fetch_sub(reserved - used, Ordering::Relaxed);
        match answer {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(Unavailable(reason))) => {
                tracing::warn!(payment = %payment.id, %reason, "core banking did not answer; the payment is pending");
                Outcome::Pending
            }
            Err(_) => {
                tracing::warn!(payment = %payment.id, "core banking timed out; the payment is pending");
                Outcome::Pending
            }
        }
    }

    /// A pending payment asked about again; a final one as it is.
    async fn settle(&self, payment: Payment) -> Result<Payment, HostFailure> {
        if payment.status != "pending" {
            return Ok(payment);
        }
        let (db, _, _, _) = self.parts()?;
        let outcome = self.ask(&payment, true).await;
        finish(db, &payment, outcome).await.map_err(db_failure)
    }

    async fn status(&mut self, id: String) -> Answer {
        let (db, _, _, context) = self.parts()?;
        let Some(customer) = context.customer_number.clone() else {
            return Ok(Err(wit::PaymentError::NotACustomer));
        };
        let mut connection = db.read.acquire().await.map_err(db_failure)?;
        let found = get(&mut connection.conn(), &id).await.map_err(db_failure)?;
        drop(connection);
        match found {
            Some(payment)
                if payment.plugin_id == context.plugin_id
                    && payment.customer_number == customer =>
            {
                Ok(Ok(self.settle(payment).await?.to_wit()))
            }
            _ => Ok(Err(wit::PaymentError::PaymentNotFound)),
        }
    }
}

/// How storing a new payment went.
enum Recorded {
    /// Stored, pending.
    New,
    /// The key was used before: the payment made then.
    Earlier(Box<Payment>),
    /// A refund that does not fit its debit.
    Refused(wit::PaymentError),
}

/// Stores `payment` as pending, in one transaction under the write lock: unless its key was
/// used before, and, for a refund, only if it fits what is left of its debit (reserved on the
/// debit's row).
async fn record(db: &Db, payment: &Payment) -> Result<Recorded, sqlx::Error> {
    let mut transaction = db.write.begin().await?;
    let mut conn = transaction.conn();
    if let Some(earlier) = by_key(&mut conn, &payment.plugin_id, &payment.idempotency_key).await? {
        return Ok(Recorded::Earlier(Box::new(earlier)));
    }
    if let Some(debit_id) = &payment.refunds {
        let debit = match &mut conn {
            Conn::Postgres(c) => {
                sqlx::query_as(&format!("{COLUMNS} WHERE id = $1 FOR UPDATE"))
                    .bind(debit_id)
                    .fetch_optional(&mut **c)
                    .await?
            }
            Conn::Sqlite(_) => get(&mut conn, debit_id).await?,
        };
        let debit: Option<Payment> = debit;
        let Some(debit) = debit.filter(|d| {
            d.plugin_id == payment.plugin_id && d.customer_number == payment.customer_number
        }) else {
            return Ok(Recorded::Refused(wit::PaymentError::PaymentNotFound));
        };
        if debit.kind != "debit" || debit.status != "succeeded" {
            return Ok(Recorded::Refused(wit::PaymentError::NotRefundable));
        }
        if debit.currency != payment.currency {
            return Ok(Recorded::Refused(wit::PaymentError::CurrencyNotSupported(
                payment.currency.clone(),
            )));
        }
        let left = debit.minor_units - debit.refunded_minor;
        if payment.minor_units > left {
            return Ok(Recorded::Refused(wit::PaymentError::RefundExceedsPayment(
                left,
            )));
        }
        with_conn!(conn.reborrow(), c => {
            sqlx::query("UPDATE payments SET refunded_minor = refunded_minor + $2 WHERE id = $1")
                .bind(debit_id)
                .bind(payment.minor_units)
                .execute(&mut *c)
                .await?;
        });
    }
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO payments (id, plugin_id, region, customer_number, kind, minor_units, \
             currency, idempotency_key, status, reason, refunds, refunded_minor, memo, \
             invocation_id, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14, $15)",
        )
        .bind(&payment.id)
        .bind(&payment.plugin_id)
        .bind(&payment.region)
        .bind(&payment.customer_number)
        .bind(&payment.kind)
        .bind(payment.minor_units)
        .bind(&payment.currency)
        .bind(&payment.idempotency_key)
        .bind(&payment.status)
        .bind(&payment.reason)
        .bind(&payment.refunds)
        .bind(&payment.memo)
        .bind(&payment.invocation_id)
        .bind(payment.created_at_ms)
        .bind(payment.updated_at_ms)
        .execute(&mut *c)
        .await?;
    });
    transaction.commit().await?;
    Ok(Recorded::New)
}

/// Records the bank's answer for a pending `payment`; a failed refund gives its reservation
/// back to the debit. Returns the payment as stored.
async fn finish(db: &Db, payment: &Payment, outcome: Outcome) -> Result<Payment, sqlx::Error> {
    let (status, reason) = match outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Failed(reason) => ("failed", Some(reason)),
        Outcome::Pending => return Ok(payment.clone()),
    };
    let mut transaction = db.write.begin().await?;
    let mut conn = transaction.conn();
    let changed = with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "UPDATE payments SET status = $2, reason = $3, updated_at_ms = $4 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(&payment.id)
        .bind(status)
        .bind(&reason)
        .bind(crate::ledger::now_ms())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if changed == 1
        && status == "failed"
        && let Some(debit) = &payment.refunds
    {
        with_conn!(conn.reborrow(), c => {
            sqlx::query("UPDATE payments SET refunded_minor = refunded_minor - $2 WHERE id = $1")
                .bind(debit)
                .bind(payment.minor_units)
                .execute(&mut *c)
                .await?;
        });
    }
    let stored = get(&mut conn, &payment.id).await?;
    transaction.commit().await?;
    Ok(stored.unwrap_or_else(|| payment.clone()))
}

fn db_failure(error: sqlx::Error) -> HostFailure {
    HostFailure(format!("payments: {error}"))
}

impl wit::Host for Metered<'_, CallPayments> {
    async fn debit(
        &mut self,
        amount: wit::Money,
        idempotency_key: String,
        memo: String,
    ) -> wasmtime::Result<Result<wit::Payment, wit::PaymentError>> {
        Ok(self
            .charge()?
            .pay(Kind::Debit, amount, idempotency_key, memo, None)
            .await?)
    }

    async fn refund(
        &mut self,
        payment: String,
        amount: wit::Money,
        idempotency_key: String,
        memo: String,
    ) -> wasmtime::Result<Result<wit::Payment, wit::PaymentError>> {
        Ok(self
            .charge()?
            .pay(Kind::Refund, amount, idempotency_key, memo, Some(payment))
            .await?)
    }

    async fn payout(
        &mut self,
        amount: wit::Money,
        idempotency_key: String,
        memo: String,
    ) -> wasmtime::Result<Result<wit::Payment, wit::PaymentError>> {
        Ok(self
            .charge()?
            .pay(Kind::Payout, amount, idempotency_key, memo, None)
            .await?)
    }

    async fn status(
        &mut self,
        payment: String,
    ) -> wasmtime::Result<Result<wit::Payment, wit::PaymentError>> {
        Ok(self.charge()?.status(payment).await?)
    }
}
