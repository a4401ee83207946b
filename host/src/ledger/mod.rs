//! The shared points ledger: double-entry postings between accounts, on SQLite or PostgreSQL.
//!
//! Every operation runs inside a transaction the caller owns (the commit writer's, or one of
//! its own) and either applies whole or returns an error naming the broken rule, after which
//! the caller rolls back. The rules hold by construction, under any concurrency:
//!
//! - A posting moves a positive amount from one account to another, and both balances change
//!   in the same transaction, so the sum of all balances stays zero (the issuer goes negative).
//! - Before reading a customer's or budget's balance an operation locks that account's row (an
//!   `UPDATE` that changes nothing takes the lock on both backends), so two operations on one
//!   account run one after the other and balances never go negative.
//! - Awards create lots with an expiry; spends take from the earliest-expiring unexpired lots;
//!   expired lots are moved to the `expired` account by [`sweep_expired`].
//! - Holds reserve points: available = unexpired lots − open, unexpired holds.
//! - Idempotency keys are permanent per scope (a plugin id): a retry with the same request gets
//!   the first result; the same key for a different request is refused.
//!
//! Reversing an award claws back what the customer still has available (the award's own lot
//! first, then earliest-expiring) and returns it to the budget; any remainder is recorded as
//! owed in `ledger_clawbacks`. Reversing a spend puts the points back into the lots they came
//! from, with their original expiry.

use crate::db::Conn;
use crate::with_conn;

mod batch;
mod host;
pub use batch::{Batch, Mark, Write};
pub use host::{BufferedOperation, CallLedger, LedgerSettings};

/// An account in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A customer's points, by the bank's customer number.
    Customer(String),
    /// What a plugin may still give away in a region.
    Budget {
        /// The plugin.
        plugin_id: String,
        /// The region.
        region: String,
    },
    /// Where points spent on a plugin in a region go.
    Sink {
        /// The plugin.
        plugin_id: String,
        /// The region.
        region: String,
    },
    /// Where all points come from (negative: points in circulation).
    Issuer,
    /// Where expired points go.
    Expired,
}

impl Account {
    /// The account's id in `ledger_accounts`.
    pub fn id(&self) -> String {
        match self {
            Account::Customer(customer) => format!("customer:{customer}"),
            Account::Budget { plugin_id, region } => format!("budget:{plugin_id}:{region}"),
            Account::Sink { plugin_id, region } => format!("sink:{plugin_id}:{region}"),
            Account::Issuer => "issuer".to_owned(),
            Account::Expired => "expired".to_owned(),
        }
    }

    /// The bank customer number in a customer account id, if the id names a customer.
    pub fn customer_number_in(id: &str) -> Option<&str> {
        id.strip_prefix("customer:")
    }

    /// The kind of account an account id names (`customer`, `budget`, `sink`, `issuer`,
    /// `expired`), as stored in `ledger_accounts.kind`.
    pub fn kind_of(id: &str) -> &'static str {
        match id.split(':').next() {
            Some("customer") => "customer",
            Some("budget") => "budget",
            Some("sink") => "sink",
            Some("issuer") => "issuer",
            _ => "expired",
        }
    }
}

/// Why a ledger operation was refused. Each variant names the broken rule.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Amounts are positive whole points.
    #[error("the amount must be a positive number of points")]
    AmountMustBePositive,
    /// The customer has fewer available points than asked.
    #[error("{available} points available, {requested} asked")]
    PointsInsufficient {
        /// Available now.
        available: i64,
        /// Asked for.
        requested: i64,
    },
    /// The plugin's budget in the region cannot cover the award.
    #[error("the budget has {remaining} points left, {requested} asked")]
    BudgetExhausted {
        /// Left in the budget.
        remaining: i64,
        /// Asked for.
        requested: i64,
    },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key {0:?} was already used for a different request")]
    ExistsWithDifferentAmount(String),
    /// No such hold for this plugin.
    #[error("no such hold")]
    HoldNotFound,
    /// The hold was already captured, released or expired.
    #[error("the hold is already {0}")]
    HoldAlreadyResolved(String),
    /// A capture larger than the hold.
    #[error("capture of {requested} exceeds the hold of {held}")]
    CaptureExceedsHold {
        /// Held.
        held: i64,
        /// Asked to capture.
        requested: i64,
    },
    /// No such posting of this plugin.
    #[error("no such posting")]
    PostingNotFound,
    /// The posting was reversed before.
    #[error("the posting was already reversed")]
    AlreadyReversed,
    /// Only awards and spends can be reversed.
    #[error("a {0} posting cannot be reversed")]
    NotReversible(String),
    /// The move would take an account's balance past what 64 bits hold (only a runaway
    /// issuer could: every other balance is bounded by what was issued).
    #[error("the balance of {0} would overflow")]
    BalanceOverflow(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl LedgerError {
    /// The stable snake_case code of the rule.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::AmountMustBePositive => "amount_must_be_positive",
            LedgerError::PointsInsufficient { .. } => "points_insufficient",
            LedgerError::BudgetExhausted { .. } => "budget_exhausted",
            LedgerError::ExistsWithDifferentAmount(_) => "exists_with_different_amount",
            LedgerError::HoldNotFound => "hold_not_found",
            LedgerError::HoldAlreadyResolved(_) => "hold_already_resolved",
            LedgerError::CaptureExceedsHold { .. } => "capture_exceeds_hold",
            LedgerError::PostingNotFound => "posting_not_found",
            LedgerError::AlreadyReversed => "already_reversed",
            LedgerError::NotReversible(_) => "not_reversible",
            LedgerError::BalanceOverflow(_) => "balance_overflow",
            LedgerError::Database(_) => "internal",
        }
    }
}

/// Who asks, and the idempotency key of the request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The idempotency scope: the plugin id, or [`ADMIN_SCOPE`].
    pub scope: &'a str,
    /// The idempotency key.
    pub key: &'a str,
    /// The time of the request, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// A note kept with the posting, shown in histories.
    pub memo: &'a str,
    /// The id to give what the request creates (a posting or a hold), when the caller chose
    /// it in advance (a plugin call learns its ids before it commits); otherwise a new one.
    pub id: Option<&'a str>,
}

impl Request<'_> {
    fn new_id(&self) -> String {
        self.id.map_or_else(new_id, str::to_owned)
    }
}

/// The idempotency scope of admin operations (no plugin id starts with `~`).
pub const ADMIN_SCOPE: &str = "~admin";

/// A customer's points as they can see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Every point the customer holds, expired-but-not-yet-swept lots included.
    pub total: i64,
    /// Points that can be spent or held now.
    pub available: i64,
    /// Points reserved by open holds.
    pub held: i64,
    /// Unexpired lots with points left: (expires at ms, points), earliest first.
    pub expiring: Vec<(i64, i64)>,
}

/// One posting as a history shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Posting {
    /// The posting id.
    pub id: String,
    /// When, in ms since the Unix epoch.
    pub created_at_ms: i64,
    /// `fund`, `award`, `spend`, `expire`, `capture`, `reverse`.
    pub kind: String,
    /// From this account.
    pub from_account: String,
    /// To this account.
    pub to_account: String,
    /// Points moved.
    pub amount: i64,
    /// The plugin that asked.
    pub plugin_id: Option<String>,
    /// The note.
    pub memo: String,
}

/// The current time in milliseconds since the Unix epoch, the ledger's unit of time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A ledger write. A plugin call buffers its writes (all but `Fund` and `Expire`) and the
/// commit writer replays them through a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Move points from the issuer into the plugin's budget in the region (an admin funding a
    /// campaign).
    Fund {
        /// Points.
        amount: i64,
    },
    /// Give points from the plugin's budget in the region to a customer, as a lot.
    Award {
        /// Bank customer number.
        customer: String,
        /// Points.
        amount: i64,
        /// Expiry of the lot.
        expires_at_ms: i64,
    },
    /// Move a customer's available points to the plugin's sink in the region, from the
    /// earliest-expiring lots.
    Spend {
        /// Bank customer number.
        customer: String,
        /// Points.
        amount: i64,
    },
    /// Reserve a customer's available points until a time.
    Hold {
        /// Bank customer number.
        customer: String,
        /// Points.
        amount: i64,
        /// When the hold lapses.
        expires_at_ms: i64,
    },
    /// Spend part or all of a hold into the plugin's sink; the rest is released.
    Capture {
        /// The hold.
        hold: String,
        /// Points.
        amount: i64,
    },
    /// Release a hold: its points are available again.
    Release {
        /// The hold.
        hold: String,
    },
    /// Reverse an award or a spend of the plugin (see the module docs for the policy).
    Reverse {
        /// The posting.
        posting: String,
    },
    /// Move what is left of an expired lot to the `expired` account (the sweep).
    Expire {
        /// The lot.
        lot: String,
        /// Bank customer number of the lot's owner.
        customer: String,
    },
}

impl Operation {
    /// What identifies the request behind an idempotency key: a retry must match it.
    pub fn fingerprint(&self, plugin_id: &str, region: &str) -> String {
        let budget = || {
            Account::Budget {
                plugin_id: plugin_id.to_owned(),
                region: region.to_owned(),
            }
            .id()
        };
        let sink = || {
            Account::Sink {
                plugin_id: plugin_id.to_owned(),
                region: region.to_owned(),
            }
            .id()
        };
        match self {
            Operation::Fund { amount } => format!("fund:{}:{amount}", budget()),
            Operation::Award {
                customer, amount, ..
            } => format!("award:{}:customer:{customer}:{amount}", budget()),
            Operation::Spend { customer, amount } => {
                format!("spend:customer:{customer}:{}:{amount}", sink())
            }
            Operation::Hold {
                customer, amount, ..
            } => format!("hold:customer:{customer}:{plugin_id}:{region}:{amount}"),
            Operation::Capture { hold, amount } => format!("capture:{hold}:{amount}"),
            Operation::Release { hold } => format!("release:{hold}"),
            Operation::Reverse { posting } => format!("reverse:{posting}"),
            Operation::Expire { lot, .. } => format!("expire:{lot}"),
        }
    }
}

/// Applies `operation` of `plugin_id` in `region` in `conn`'s transaction (which the caller
/// rolls back if this fails). Returns the id of what it created (the posting, the hold, or for
/// a release the hold). Many writes at once go through [`Batch`] instead.
pub async fn apply(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    region: &str,
    operation: &Operation,
) -> Result<String, LedgerError> {
    let write = Write {
        request: request.clone(),
        plugin_id,
        region,
        operation,
    };
    let mut batch = Batch::load(conn, &[&write]).await?;
    let created = batch.apply(&write)?;
    batch.flush(conn).await?;
    Ok(created)
}

/// The stored result and fingerprint of an idempotency key, if it was used.
pub async fn lookup_key(
    conn: &mut Conn<'_>,
    scope: &str,
    key: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT fingerprint, result FROM ledger_idempotency WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *c)
            .await
    })
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A hold as the call-time view needs it.
#[derive(Debug, Clone)]
pub struct HoldState {
    /// Bank customer number.
    pub customer: String,
    /// Points held.
    pub amount: i64,
    /// `open`, `captured`, `released` or `expired`.
    pub status: String,
    /// When it lapses.
    pub expires_at_ms: i64,
}

/// The hold `hold` of `plugin_id`, if it exists.
pub async fn hold_state(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    hold: &str,
) -> Result<Option<HoldState>, sqlx::Error> {
    let row: Option<(String, i64, String, i64)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT account_id, amount, status, expires_at_ms FROM ledger_holds \
             WHERE id = $1 AND plugin_id = $2",
        )
        .bind(hold)
        .bind(plugin_id)
        .fetch_optional(&mut *c)
        .await?
    });
    Ok(
        row.map(|(account, amount, status, expires_at_ms)| HoldState {
            customer: Account::customer_number_in(&account)
                .unwrap_or_default()
                .to_owned(),
            amount,
            status,
            expires_at_ms,
        }),
    )
}

impl Posting {
    /// The posting's points from `customer_account`'s point of view: positive received,
    /// negative given.
    pub fn points_for(&self, customer_account: &str) -> i64 {
        if self.to_account == customer_account {
            self.amount
        } else {
            -self.amount
        }
    }
}

/// A posting as the call-time view needs it.
#[derive(Debug, Clone)]
pub struct PostingState {
    /// `award`, `spend`, ...
    pub kind: String,
    /// Points moved.
    pub amount: i64,
    /// The customer it involved, if one did.
    pub customer: Option<String>,
    /// Whether it was reversed.
    pub reversed: bool,
}

/// The posting `posting` of `plugin_id`, if it exists.
pub async fn posting_state(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    posting: &str,
) -> Result<Option<PostingState>, sqlx::Error> {
    let row: Option<(String, i64, String, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT kind, amount, from_account, to_account FROM ledger_postings \
             WHERE id = $1 AND plugin_id = $2",
        )
        .bind(posting)
        .bind(plugin_id)
        .fetch_optional(&mut *c)
        .await?
    });
    let Some((kind, amount, from, to)) = row else {
        return Ok(None);
    };
    let reversed: i64 = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM ledger_postings WHERE reverses = $1) \
             + (SELECT COUNT(*) FROM ledger_clawbacks WHERE original_posting = $1)",
        )
        .bind(posting)
        .fetch_one(&mut *c)
        .await?
    });
    let reversed = reversed > 0;
    let customer = [from, to]
        .into_iter()
        .find_map(|account| Account::customer_number_in(&account).map(str::to_owned));
    Ok(Some(PostingState {
        kind,
        amount,
        customer,
        reversed,
    }))
}

/// Moves what is left of lots that expired at or before `now_ms` to the `expired` account, at
/// most `batch` lots, and marks holds that lapsed as `expired`. Returns how many lots it
/// swept; running it again sweeps nothing new.
pub async fn sweep_expired(
    conn: &mut Conn<'_>,
    now_ms: i64,
    batch: i64,
) -> Result<usize, LedgerError> {
    let lots: Vec<(String, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, account_id FROM ledger_lots WHERE remaining > 0 \
             AND expires_at_ms <= $1 ORDER BY account_id, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(batch)
        .fetch_all(&mut *c)
        .await?
    });
    let operations: Vec<Operation> = lots
        .into_iter()
        .map(|(lot, account)| Operation::Expire {
            lot,
            customer: Account::customer_number_in(&account)
                .unwrap_or_default()
                .to_owned(),
        })
        .collect();
    let request = Request {
        scope: ADMIN_SCOPE,
        key: "",
        now_ms,
        memo: "expired",
        id: None,
    };
    let writes: Vec<Write<'_>> = operations
        .iter()
        .map(|operation| Write {
            request: request.clone(),
            plugin_id: "",
            region: "",
            operation,
        })
        .collect();
    let mut engine = Batch::load(conn, &writes.iter().collect::<Vec<_>>()).await?;
    let mut swept = 0;
    for write in &writes {
        // A concurrent sweep may have emptied the lot first: then there is nothing to move.
        swept += usize::from(!engine.apply(write)?.is_empty());
    }
    engine.flush(conn).await?;
    with_conn!(conn.reborrow(), c => {
        sqlx::query("UPDATE ledger_holds SET status = 'expired' WHERE status = 'open' AND expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut *c)
            .await?;
    });
    Ok(swept)
}

/// Lots swept per transaction by the background sweeper.
const SWEEP_BATCH: i64 = 500;

/// Sweeps expired lots every `interval`, in batches, for as long as the runtime runs.
/// Several hosts may sweep one database at once: a lot is swept once.
pub fn start_sweeper(db: crate::db::Db, interval: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now_ms = now_ms();
            loop {
                let swept = async {
                    let mut transaction = db.write.begin().await?;
                    let swept = sweep_expired(&mut transaction.conn(), now_ms, SWEEP_BATCH).await?;
                    transaction.commit().await?;
                    Ok::<_, LedgerError>(swept)
                }
                .await;
                match swept {
                    Ok(0) => break,
                    Ok(lots) => tracing::info!(lots, "expired points swept"),
                    Err(error) => {
                        tracing::warn!(%error, "expiry sweep failed; retrying at the next interval");
                        break;
                    }
                }
            }
        }
    });
}

/// A customer's balance at `now_ms`, with the points of each unexpired lot.
pub async fn balance(
    conn: &mut Conn<'_>,
    customer: &str,
    now_ms: i64,
) -> Result<Balance, sqlx::Error> {
    let mut balance = balance_summary(conn, customer, now_ms).await?;
    balance.expiring = expiring_lots(conn, customer, now_ms).await?;
    Ok(balance)
}

/// A customer's unexpired lots with points left at `now_ms`: (expires at ms, points),
/// earliest first.
pub async fn expiring_lots(
    conn: &mut Conn<'_>,
    customer: &str,
    now_ms: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT expires_at_ms, remaining FROM ledger_lots WHERE account_id = $1 \
             AND remaining > 0 AND expires_at_ms > $2 ORDER BY expires_at_ms, id",
        )
        .bind(Account::Customer(customer.to_owned()).id())
        .bind(now_ms)
        .fetch_all(&mut *c)
        .await
    })
}

/// A customer's balance at `now_ms` without the lots (`expiring` is empty): one query
/// however many lots the customer has.
pub async fn balance_summary(
    conn: &mut Conn<'_>,
    customer: &str,
    now_ms: i64,
) -> Result<Balance, sqlx::Error> {
    let parts: (i64, i64, i64) = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!("SELECT {BALANCE_PARTS}"))
            .bind(Account::Customer(customer.to_owned()).id())
            .bind(now_ms)
            .fetch_one(&mut *c)
            .await?
    });
    Ok(Balance::from_parts(parts))
}

/// The balance, the points in expired lots not yet swept, and the open holds of the account
/// `$1` at `$2` (a hold a sweep labelled expired early, on a clock ahead of `$2`, still holds). The balance is what the lots hold: less the expired lots not yet swept (few,
/// and found through the index of lots with points left) it is what is unexpired.
const BALANCE_PARTS: &str = "COALESCE((SELECT balance FROM ledger_accounts WHERE id = $1), 0), \
     CAST(COALESCE((SELECT SUM(remaining) FROM ledger_lots WHERE account_id = $1 \
     AND remaining > 0 AND expires_at_ms <= $2), 0) AS BIGINT), \
     CAST(COALESCE((SELECT SUM(amount) FROM ledger_holds WHERE account_id = $1 \
     AND status IN ('open', 'expired') AND expires_at_ms > $2), 0) AS BIGINT)";

impl Balance {
    /// The balance from its [`BALANCE_PARTS`], without the lots.
    fn from_parts((total, expired, held): (i64, i64, i64)) -> Balance {
        Balance {
            total,
            available: (total - expired - held).max(0),
            held,
            expiring: Vec::new(),
        }
    }
}

/// What a call reads of the committed ledger before its first write, in one query: the
/// stored use of the write's idempotency key, the customer's balance (when the call has a
/// customer) and the balance of the plugin's budget in the region. A call's first write
/// needs the key and usually one of the balances, and every read is a round trip to the
/// database; asking for all three at once costs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    /// The key's stored (fingerprint, result), if it was used.
    pub key: Option<(String, String)>,
    /// The customer's balance without the lots (zero for a call without a customer).
    pub customer: Balance,
    /// The budget's balance.
    pub budget: i64,
}

/// The [`CallSnapshot`] of a write of `plugin_id` in `region` by `customer` with `key`, at
/// `now_ms`.
pub async fn call_snapshot(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    region: &str,
    customer: Option<&str>,
    key: &str,
    now_ms: i64,
) -> Result<CallSnapshot, sqlx::Error> {
    type Row = (Option<String>, Option<String>, i64, i64, i64, i64);
    let customer = customer.map(|c| Account::Customer(c.to_owned()).id());
    let budget = Account::Budget {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    };
    let (fingerprint, result, total, expired, held, budget): Row = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!(
            "SELECT k.fingerprint, k.result, {BALANCE_PARTS}, \
             COALESCE((SELECT balance FROM ledger_accounts WHERE id = $3), 0) \
             FROM (SELECT 1 AS one) AS one \
             LEFT JOIN ledger_idempotency k ON k.scope = $4 AND k.key = $5"
        ))
        .bind(customer.as_deref().unwrap_or(""))
        .bind(now_ms)
        .bind(budget.id())
        .bind(plugin_id)
        .bind(key)
        .fetch_one(&mut *c)
        .await?
    });
    Ok(CallSnapshot {
        key: fingerprint.zip(result),
        customer: Balance::from_parts((total, expired, held)),
        budget,
    })
}

/// The balance of any account (0 if it does not exist yet).
pub async fn account_balance(conn: &mut Conn<'_>, account: &Account) -> Result<i64, sqlx::Error> {
    let balance: Option<i64> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
            .bind(account.id())
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(balance.unwrap_or(0))
}

/// What a plugin's budget in a region has done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BudgetReport {
    /// Points funded by admins.
    pub funded: i64,
    /// Points awarded to customers.
    pub awarded: i64,
    /// Points that came back from reversed awards.
    pub clawed_back: i64,
    /// Points left to give away.
    pub remaining: i64,
}

/// The report of `plugin_id`'s budget in `region`.
pub async fn budget_report(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    region: &str,
) -> Result<BudgetReport, sqlx::Error> {
    let budget = Account::Budget {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    };
    let (funded, awarded, clawed_back): (Option<i64>, Option<i64>, Option<i64>) = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT \
             CAST(SUM(CASE WHEN kind = 'fund' AND to_account = $1 THEN amount END) AS BIGINT), \
             CAST(SUM(CASE WHEN kind = 'award' AND from_account = $1 THEN amount END) AS BIGINT), \
             CAST(SUM(CASE WHEN kind = 'reverse' AND to_account = $1 THEN amount END) AS BIGINT) \
             FROM ledger_postings WHERE from_account = $1 OR to_account = $1",
        )
        .bind(budget.id())
        .fetch_one(&mut *c)
        .await?
    });
    Ok(BudgetReport {
        funded: funded.unwrap_or(0),
        awarded: awarded.unwrap_or(0),
        clawed_back: clawed_back.unwrap_or(0),
        remaining: account_balance(conn, &budget).await?,
    })
}

/// Postings to or from `customer`, newest first, strictly before the posting id `before`
/// when given, at most `limit`.
pub async fn history(
    conn: &mut Conn<'_>,
    customer: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Posting>, sqlx::Error> {
    let account = Account::Customer(customer.to_owned()).id();
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, created_at_ms, kind, from_account, to_account, amount, plugin_id, memo \
             FROM ledger_postings WHERE (from_account = $1 OR to_account = $1) \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(&account)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *c)
        .await
    })
}

/// The invariants, checked from scratch: the sum of all balances, negative customer or
/// budget balances, and accounts whose balance differs from the sum of their postings or
/// (customers) of their lots. Empty when all hold.
pub async fn audit_invariants(conn: &mut Conn<'_>) -> Result<Vec<String>, sqlx::Error> {
    let mut broken = Vec::new();
    let sum: Option<i64> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT CAST(SUM(balance) AS BIGINT) FROM ledger_accounts")
            .fetch_one(&mut *c)
            .await?
    });
    if sum.unwrap_or(0) != 0 {
        broken.push(format!("the balances sum to {}", sum.unwrap_or(0)));
    }
    let negative: Vec<String> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT id FROM ledger_accounts WHERE kind <> 'issuer' AND balance < 0")
            .fetch_all(&mut *c)
            .await?
    });
    broken.extend(negative.into_iter().map(|id| format!("{id} is negative")));
    let drifted: Vec<String> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT a.id FROM ledger_accounts a WHERE a.balance <> \
             COALESCE((SELECT SUM(amount) FROM ledger_postings WHERE to_account = a.id), 0) \
             - COALESCE((SELECT SUM(amount) FROM ledger_postings WHERE from_account = a.id), 0)",
        )
        .fetch_all(&mut *c)
        .await?
    });
    broken.extend(
        drifted
            .into_iter()
            .map(|id| format!("{id} differs from its postings")),
    );
    let lots_drifted: Vec<String> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT a.id FROM ledger_accounts a WHERE a.kind = 'customer' AND a.balance <> \
             COALESCE((SELECT SUM(remaining) FROM ledger_lots WHERE account_id = a.id), 0)",
        )
        .fetch_all(&mut *c)
        .await?
    });
    broken.extend(
        lots_drifted
            .into_iter()
            .map(|id| format!("{id} differs from its lots")),
    );
    Ok(broken)
}
