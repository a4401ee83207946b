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

mod host;
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

    /// The customer account an account id names; `what` says why it must be one.
    fn customer_from_id(id: &str, what: &str) -> Account {
        Account::Customer(
            Account::customer_number_in(id)
                .unwrap_or_else(|| panic!("{what}: {id} is not a customer account"))
                .to_owned(),
        )
    }

    fn kind(&self) -> &'static str {
        match self {
            Account::Customer(_) => "customer",
            Account::Budget { .. } => "budget",
            Account::Sink { .. } => "sink",
            Account::Issuer => "issuer",
            Account::Expired => "expired",
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

/// A write a plugin call makes, buffered during the call and replayed at commit with
/// [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// [`award`].
    Award {
        /// Bank customer number.
        customer: String,
        /// Points.
        amount: i64,
        /// Expiry of the lot.
        expires_at_ms: i64,
    },
    /// [`spend`].
    Spend {
        /// Bank customer number.
        customer: String,
        /// Points.
        amount: i64,
    },
    /// [`hold`].
    Hold {
        /// Bank customer number.
        customer: String,
        /// Points.
        amount: i64,
        /// When the hold lapses.
        expires_at_ms: i64,
    },
    /// [`capture`].
    Capture {
        /// The hold.
        hold: String,
        /// Points.
        amount: i64,
    },
    /// [`release`].
    Release {
        /// The hold.
        hold: String,
    },
    /// [`reverse`].
    Reverse {
        /// The posting.
        posting: String,
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
        }
    }
}

/// Applies `operation` of `plugin_id` in `region`. Returns the id of what it created (the
/// posting, the hold, or for a release the hold).
pub async fn apply(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    region: &str,
    operation: &Operation,
) -> Result<String, LedgerError> {
    match operation {
        Operation::Award {
            customer,
            amount,
            expires_at_ms,
        } => {
            award(
                conn,
                request,
                plugin_id,
                region,
                customer,
                *amount,
                *expires_at_ms,
            )
            .await
        }
        Operation::Spend { customer, amount } => {
            spend(conn, request, plugin_id, region, customer, *amount).await
        }
        Operation::Hold {
            customer,
            amount,
            expires_at_ms,
        } => {
            hold(
                conn,
                request,
                plugin_id,
                region,
                customer,
                *amount,
                *expires_at_ms,
            )
            .await
        }
        Operation::Capture { hold, amount } => {
            capture(conn, request, plugin_id, hold, *amount).await
        }
        Operation::Release { hold } => release(conn, request, plugin_id, hold)
            .await
            .map(|()| hold.clone()),
        Operation::Reverse { posting } => reverse(conn, request, plugin_id, posting).await,
    }
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
    let reversed = already_reversed(conn, posting).await.is_err();
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

/// The bank customer number of a customer account.
fn customer_number(account: &Account) -> String {
    match account {
        Account::Customer(customer) => customer.clone(),
        other => unreachable!("{other:?} is not a customer"),
    }
}

/// Locks `account`'s row until the transaction ends and returns its balance, creating the
/// account first if needed: one statement (an upsert that changes nothing takes the row lock
/// on PostgreSQL, and the write lock on SQLite).
async fn lock(conn: &mut Conn<'_>, account: &Account) -> Result<i64, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "INSERT INTO ledger_accounts (id, kind) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance RETURNING balance",
        )
        .bind(account.id())
        .bind(account.kind())
        .fetch_one(&mut *c)
        .await
    })
}

/// The stored result for `key` if this exact request was made before; an error if the key
/// was used for another request; `None` if the key is new.
async fn remembered(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    fingerprint: &str,
) -> Result<Option<String>, LedgerError> {
    match lookup_key(conn, request.scope, request.key).await? {
        None => Ok(None),
        Some((stored_fingerprint, result)) if stored_fingerprint == fingerprint => Ok(Some(result)),
        Some(_) => Err(LedgerError::ExistsWithDifferentAmount(
            request.key.to_owned(),
        )),
    }
}

async fn remember(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    fingerprint: &str,
    result: &str,
) -> Result<(), sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query("INSERT INTO ledger_idempotency (scope, key, fingerprint, result) VALUES ($1, $2, $3, $4)")
            .bind(request.scope)
            .bind(request.key)
            .bind(fingerprint)
            .bind(result)
            .execute(&mut *c)
            .await
            .map(drop)
    })
}

/// What one posting moves.
struct Movement<'a> {
    kind: &'a str,
    from: &'a Account,
    to: &'a Account,
    amount: i64,
    /// The plugin and region that asked, if a plugin did.
    plugin: Option<(&'a str, &'a str)>,
    /// The posting this one reverses.
    reverses: Option<&'a str>,
}

/// Records a posting and moves its amount between the two balances.
async fn post(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    movement: Movement<'_>,
) -> Result<String, sqlx::Error> {
    let Movement {
        kind,
        from,
        to,
        amount,
        plugin,
        reverses,
    } = movement;
    assert!(amount > 0, "postings move positive amounts");
    let id = request.new_id();
    let (plugin_id, region) = plugin.unzip();
    with_conn!(conn.reborrow(), c => {
        // The source always exists: it was locked by the caller, or it is the issuer. Its
        // balance goes first, so a CHECK never sees a proposed negative row.
        let updated = sqlx::query("UPDATE ledger_accounts SET balance = balance - $1 WHERE id = $2")
            .bind(amount)
            .bind(from.id())
            .execute(&mut *c)
            .await?
            .rows_affected();
        if updated != 1 {
            // A bug, never input: refuse rather than let the balances stop summing to zero.
            return Err(sqlx::Error::RowNotFound);
        }
        // The destination may be new (a customer's first award): create it with the amount.
        sqlx::query(
            "INSERT INTO ledger_accounts (id, kind, balance) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance",
        )
        .bind(to.id())
        .bind(to.kind())
        .bind(amount)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO ledger_postings (id, created_at_ms, kind, from_account, to_account, amount, \
             plugin_id, region, memo, reverses) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(request.now_ms)
        .bind(kind)
        .bind(from.id())
        .bind(to.id())
        .bind(amount)
        .bind(plugin_id)
        .bind(region)
        .bind(request.memo)
        .bind(reverses)
        .execute(&mut *c)
        .await?;
    });
    Ok(id)
}

/// Unexpired lots of `account` with points left, earliest-expiring first: (id, remaining).
async fn spendable_lots(
    conn: &mut Conn<'_>,
    account: &Account,
    now_ms: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, remaining FROM ledger_lots WHERE account_id = $1 AND remaining > 0 \
             AND expires_at_ms > $2 ORDER BY expires_at_ms, id",
        )
        .bind(account.id())
        .bind(now_ms)
        .fetch_all(&mut *c)
        .await
    })
}

/// Points held by open, unexpired holds on `account`.
async fn held(conn: &mut Conn<'_>, account: &Account, now_ms: i64) -> Result<i64, sqlx::Error> {
    let held: Option<i64> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT CAST(SUM(amount) AS BIGINT) FROM ledger_holds WHERE account_id = $1 \
             AND status = 'open' AND expires_at_ms > $2",
        )
        .bind(account.id())
        .bind(now_ms)
        .fetch_one(&mut *c)
        .await?
    });
    Ok(held.unwrap_or(0))
}

/// The customer's spendable lots (earliest-expiring first) and how many points are available:
/// what the lots hold minus open, unexpired holds.
async fn spendable(
    conn: &mut Conn<'_>,
    customer: &Account,
    now_ms: i64,
) -> Result<(Vec<(String, i64)>, i64), sqlx::Error> {
    let lots = spendable_lots(conn, customer, now_ms).await?;
    let in_lots: i64 = lots.iter().map(|(_, remaining)| remaining).sum();
    let available = in_lots - held(conn, customer, now_ms).await?;
    Ok((lots, available))
}

/// Takes `amount` from `lots` in order, recording the moves under `posting`.
async fn take_from_lots(
    conn: &mut Conn<'_>,
    posting: &str,
    lots: &[(String, i64)],
    mut amount: i64,
) -> Result<(), sqlx::Error> {
    for (lot, remaining) in lots {
        if amount == 0 {
            break;
        }
        let taken = amount.min(*remaining);
        amount -= taken;
        with_conn!(conn.reborrow(), c => {
            sqlx::query("UPDATE ledger_lots SET remaining = remaining - $1 WHERE id = $2")
                .bind(taken)
                .bind(lot)
                .execute(&mut *c)
                .await?;
            sqlx::query("INSERT INTO ledger_lot_moves (posting_id, lot_id, amount) VALUES ($1, $2, $3)")
                .bind(posting)
                .bind(lot)
                .bind(taken)
                .execute(&mut *c)
                .await?;
        });
    }
    assert_eq!(
        amount, 0,
        "the lots covered the amount: checked before taking"
    );
    Ok(())
}

fn positive(amount: i64) -> Result<(), LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::AmountMustBePositive);
    }
    Ok(())
}

/// Moves `amount` from the issuer into a plugin's budget in a region (an admin funding a
/// campaign). Returns the posting id.
pub async fn fund(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    region: &str,
    amount: i64,
) -> Result<String, LedgerError> {
    positive(amount)?;
    let budget = Account::Budget {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    };
    lock(conn, &budget).await?;
    let fingerprint = format!("fund:{}:{amount}", budget.id());
    if let Some(posting) = remembered(conn, request, &fingerprint).await? {
        return Ok(posting);
    }
    let posting = post(
        conn,
        request,
        Movement {
            kind: "fund",
            from: &Account::Issuer,
            to: &budget,
            amount,
            plugin: Some((plugin_id, region)),
            reverses: None,
        },
    )
    .await?;
    remember(conn, request, &fingerprint, &posting).await?;
    Ok(posting)
}

/// Gives `amount` points from the plugin's budget in `region` to `customer`, as a lot that
/// expires at `expires_at_ms`. Returns the posting id.
pub async fn award(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    region: &str,
    customer: &str,
    amount: i64,
    expires_at_ms: i64,
) -> Result<String, LedgerError> {
    positive(amount)?;
    let budget = Account::Budget {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    };
    let customer = Account::Customer(customer.to_owned());
    let remaining = lock(conn, &budget).await?;
    let fingerprint = Operation::Award {
        customer: customer_number(&customer),
        amount,
        expires_at_ms,
    }
    .fingerprint(plugin_id, region);
    if let Some(posting) = remembered(conn, request, &fingerprint).await? {
        return Ok(posting);
    }
    if remaining < amount {
        return Err(LedgerError::BudgetExhausted {
            remaining,
            requested: amount,
        });
    }
    let posting = post(
        conn,
        request,
        Movement {
            kind: "award",
            from: &budget,
            to: &customer,
            amount,
            plugin: Some((plugin_id, region)),
            reverses: None,
        },
    )
    .await?;
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO ledger_lots (id, account_id, award_posting, amount, remaining, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(new_id())
        .bind(customer.id())
        .bind(&posting)
        .bind(amount)
        .bind(expires_at_ms)
        .execute(&mut *c)
        .await?;
    });
    remember(conn, request, &fingerprint, &posting).await?;
    Ok(posting)
}

/// Moves `amount` of `customer`'s available points to the plugin's sink in `region`, taking
/// them from the earliest-expiring lots. Returns the posting id.
pub async fn spend(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    region: &str,
    customer: &str,
    amount: i64,
) -> Result<String, LedgerError> {
    positive(amount)?;
    let customer = Account::Customer(customer.to_owned());
    let sink = Account::Sink {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    };
    lock(conn, &customer).await?;
    let fingerprint = Operation::Spend {
        customer: customer_number(&customer),
        amount,
    }
    .fingerprint(plugin_id, region);
    if let Some(posting) = remembered(conn, request, &fingerprint).await? {
        return Ok(posting);
    }
    let posting = spend_locked(
        conn,
        request,
        &customer,
        &sink,
        (plugin_id, region),
        amount,
        "spend",
    )
    .await?;
    remember(conn, request, &fingerprint, &posting).await?;
    Ok(posting)
}

/// The body of a spend or a capture, with the customer's row already locked.
async fn spend_locked(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    customer: &Account,
    sink: &Account,
    plugin: (&str, &str),
    amount: i64,
    kind: &str,
) -> Result<String, LedgerError> {
    let (lots, available) = spendable(conn, customer, request.now_ms).await?;
    if available < amount {
        return Err(LedgerError::PointsInsufficient {
            available: available.max(0),
            requested: amount,
        });
    }
    let posting = post(
        conn,
        request,
        Movement {
            kind,
            from: customer,
            to: sink,
            amount,
            plugin: Some(plugin),
            reverses: None,
        },
    )
    .await?;
    take_from_lots(conn, &posting, &lots, amount).await?;
    Ok(posting)
}

/// Reserves `amount` of `customer`'s available points until `expires_at_ms`. Returns the
/// hold id.
pub async fn hold(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    region: &str,
    customer: &str,
    amount: i64,
    expires_at_ms: i64,
) -> Result<String, LedgerError> {
    positive(amount)?;
    let customer = Account::Customer(customer.to_owned());
    lock(conn, &customer).await?;
    let fingerprint = Operation::Hold {
        customer: customer_number(&customer),
        amount,
        expires_at_ms,
    }
    .fingerprint(plugin_id, region);
    if let Some(hold) = remembered(conn, request, &fingerprint).await? {
        return Ok(hold);
    }
    let (_, available) = spendable(conn, &customer, request.now_ms).await?;
    if available < amount {
        return Err(LedgerError::PointsInsufficient {
            available: available.max(0),
            requested: amount,
        });
    }
    let hold = request.new_id();
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO ledger_holds (id, account_id, plugin_id, region, amount, created_at_ms, \
             expires_at_ms, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open')",
        )
        .bind(&hold)
        .bind(customer.id())
        .bind(plugin_id)
        .bind(region)
        .bind(amount)
        .bind(request.now_ms)
        .bind(expires_at_ms)
        .execute(&mut *c)
        .await?;
    });
    remember(conn, request, &fingerprint, &hold).await?;
    Ok(hold)
}

/// Locks the customer of a hold of `plugin_id`. Returns the customer account.
async fn lock_hold_owner(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    hold: &str,
) -> Result<Account, LedgerError> {
    let account_id: Option<String> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT account_id FROM ledger_holds WHERE id = $1 AND plugin_id = $2")
            .bind(hold)
            .bind(plugin_id)
            .fetch_optional(&mut *c)
            .await?
    });
    let account_id = account_id.ok_or(LedgerError::HoldNotFound)?;
    let customer = Account::customer_from_id(&account_id, "holds are on customer accounts");
    lock(conn, &customer).await?;
    Ok(customer)
}

/// A hold read under its owner's lock, checked to be open and unexpired: (region, amount).
async fn open_hold(
    conn: &mut Conn<'_>,
    hold: &str,
    now_ms: i64,
) -> Result<(String, i64), LedgerError> {
    let (region, amount, expires_at_ms, status): (String, i64, i64, String) = with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT region, amount, expires_at_ms, status FROM ledger_holds WHERE id = $1")
            .bind(hold)
            .fetch_one(&mut *c)
            .await?
    });
    if status != "open" {
        return Err(LedgerError::HoldAlreadyResolved(status));
    }
    if expires_at_ms <= now_ms {
        return Err(LedgerError::HoldAlreadyResolved("expired".into()));
    }
    Ok((region, amount))
}

async fn resolve_hold(
    conn: &mut Conn<'_>,
    hold: &str,
    status: &str,
    capture: Option<&str>,
) -> Result<(), sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query("UPDATE ledger_holds SET status = $1, capture_posting = $2 WHERE id = $3")
            .bind(status)
            .bind(capture)
            .bind(hold)
            .execute(&mut *c)
            .await
            .map(drop)
    })
}

/// Spends `amount` (at most the held amount) of a hold into the plugin's sink and releases the
/// rest. Returns the posting id.
pub async fn capture(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    hold: &str,
    amount: i64,
) -> Result<String, LedgerError> {
    positive(amount)?;
    let customer = lock_hold_owner(conn, plugin_id, hold).await?;
    let fingerprint = Operation::Capture {
        hold: hold.to_owned(),
        amount,
    }
    .fingerprint(plugin_id, "");
    if let Some(posting) = remembered(conn, request, &fingerprint).await? {
        return Ok(posting);
    }
    let (region, held_amount) = open_hold(conn, hold, request.now_ms).await?;
    if amount > held_amount {
        return Err(LedgerError::CaptureExceedsHold {
            held: held_amount,
            requested: amount,
        });
    }
    // Resolve first so the hold no longer counts against what the capture may spend.
    resolve_hold(conn, hold, "captured", None).await?;
    let sink = Account::Sink {
        plugin_id: plugin_id.to_owned(),
        region: region.clone(),
    };
    let posting = spend_locked(
        conn,
        request,
        &customer,
        &sink,
        (plugin_id, &region),
        amount,
        "capture",
    )
    .await?;
    resolve_hold(conn, hold, "captured", Some(&posting)).await?;
    remember(conn, request, &fingerprint, &posting).await?;
    Ok(posting)
}

/// Releases a hold: its points are available again.
pub async fn release(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    hold: &str,
) -> Result<(), LedgerError> {
    lock_hold_owner(conn, plugin_id, hold).await?;
    let fingerprint = Operation::Release {
        hold: hold.to_owned(),
    }
    .fingerprint(plugin_id, "");
    if remembered(conn, request, &fingerprint).await?.is_some() {
        return Ok(());
    }
    open_hold(conn, hold, request.now_ms).await?;
    resolve_hold(conn, hold, "released", None).await?;
    remember(conn, request, &fingerprint, hold).await?;
    Ok(())
}

/// Reverses an award or a spend of `plugin_id`. Returns the reversal posting id.
///
/// A spend's points go back into the lots they came from. An award is clawed back from what
/// the customer has available (the award's own lot first) into the budget; what cannot be
/// clawed back is recorded as owed.
pub async fn reverse(
    conn: &mut Conn<'_>,
    request: &Request<'_>,
    plugin_id: &str,
    posting: &str,
) -> Result<String, LedgerError> {
    let fingerprint = Operation::Reverse {
        posting: posting.to_owned(),
    }
    .fingerprint(plugin_id, "");
    let original: Option<(String, String, String, i64, Option<String>)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT kind, from_account, to_account, amount, region FROM ledger_postings \
             WHERE id = $1 AND plugin_id = $2",
        )
        .bind(posting)
        .bind(plugin_id)
        .fetch_optional(&mut *c)
        .await?
    });
    let (kind, from_id, to_id, amount, region) = original.ok_or(LedgerError::PostingNotFound)?;
    let region = region.unwrap_or_default();
    let customer_of =
        |id: &str| Account::customer_from_id(id, "awards and spends involve a customer");
    let budget = Account::Budget {
        plugin_id: plugin_id.to_owned(),
        region: region.clone(),
    };
    let reversal = match kind.as_str() {
        "spend" | "capture" => {
            let customer = customer_of(&from_id);
            lock(conn, &customer).await?;
            if let Some(reversal) = remembered(conn, request, &fingerprint).await? {
                return Ok(reversal);
            }
            already_reversed(conn, posting).await?;
            let sink = Account::Sink {
                plugin_id: plugin_id.to_owned(),
                region: region.clone(),
            };
            debug_assert_eq!(sink.id(), to_id);
            let reversal = post(
                conn,
                request,
                Movement {
                    kind: "reverse",
                    from: &sink,
                    to: &customer,
                    amount,
                    plugin: Some((plugin_id, &region)),
                    reverses: Some(posting),
                },
            )
            .await?;
            let moves: Vec<(String, i64)> = with_conn!(conn.reborrow(), c => {
                sqlx::query_as("SELECT lot_id, amount FROM ledger_lot_moves WHERE posting_id = $1")
                    .bind(posting)
                    .fetch_all(&mut *c)
                    .await?
            });
            for (lot, moved) in moves {
                with_conn!(conn.reborrow(), c => {
                    sqlx::query("UPDATE ledger_lots SET remaining = remaining + $1 WHERE id = $2")
                        .bind(moved)
                        .bind(&lot)
                        .execute(&mut *c)
                        .await?;
                });
            }
            reversal
        }
        "award" => {
            let customer = customer_of(&to_id);
            lock(conn, &budget).await?;
            lock(conn, &customer).await?;
            if let Some(reversal) = remembered(conn, request, &fingerprint).await? {
                return Ok(reversal);
            }
            already_reversed(conn, posting).await?;
            let (mut lots, available) = spendable(conn, &customer, request.now_ms).await?;
            // The award's own lot first.
            let own_lot: Option<String> = with_conn!(conn.reborrow(), c => {
                sqlx::query_scalar("SELECT id FROM ledger_lots WHERE award_posting = $1")
                    .bind(posting)
                    .fetch_optional(&mut *c)
                    .await?
            });
            if let Some(own) = own_lot {
                lots.sort_by_key(|(lot, _)| *lot != own);
            }
            let clawed = amount.min(available.max(0));
            let owed = amount - clawed;
            let reversal = if clawed > 0 {
                let reversal = post(
                    conn,
                    request,
                    Movement {
                        kind: "reverse",
                        from: &customer,
                        to: &budget,
                        amount: clawed,
                        plugin: Some((plugin_id, &region)),
                        reverses: Some(posting),
                    },
                )
                .await?;
                take_from_lots(conn, &reversal, &lots, clawed).await?;
                reversal
            } else {
                // Nothing to move: an empty posting is not allowed, so the reversal is only
                // the record of what is owed.
                request.new_id()
            };
            with_conn!(conn.reborrow(), c => {
                sqlx::query(
                    "INSERT INTO ledger_clawbacks (reversal_posting, original_posting, clawed, owed) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&reversal)
                .bind(posting)
                .bind(clawed)
                .bind(owed)
                .execute(&mut *c)
                .await?;
            });
            reversal
        }
        other => return Err(LedgerError::NotReversible(other.to_owned())),
    };
    remember(conn, request, &fingerprint, &reversal).await?;
    Ok(reversal)
}

async fn already_reversed(conn: &mut Conn<'_>, posting: &str) -> Result<(), LedgerError> {
    let reversed: i64 = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM ledger_postings WHERE reverses = $1) \
             + (SELECT COUNT(*) FROM ledger_clawbacks WHERE original_posting = $1)",
        )
        .bind(posting)
        .fetch_one(&mut *c)
        .await?
    });
    if reversed > 0 {
        return Err(LedgerError::AlreadyReversed);
    }
    Ok(())
}

/// Moves what is left of lots that expired at or before `now_ms` to the `expired` account, at
/// most `batch` lots. Returns how many lots it swept; running it again sweeps nothing new.
pub async fn sweep_expired(
    conn: &mut Conn<'_>,
    now_ms: i64,
    batch: i64,
) -> Result<usize, LedgerError> {
    let lots: Vec<(String, String, i64)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, account_id, remaining FROM ledger_lots WHERE remaining > 0 \
             AND expires_at_ms <= $1 ORDER BY account_id, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(batch)
        .fetch_all(&mut *c)
        .await?
    });
    // Customers are locked in account order, so concurrent sweeps cannot deadlock.
    let mut swept = 0;
    for (lot, account_id, _) in lots {
        let customer = Account::customer_from_id(&account_id, "lots belong to customers");
        lock(conn, &customer).await?;
        // Read again under the lock: a concurrent spend cannot take expired lots, but a
        // concurrent sweep may have emptied it.
        let remaining: i64 = with_conn!(conn.reborrow(), c => {
            sqlx::query_scalar("SELECT remaining FROM ledger_lots WHERE id = $1")
                .bind(&lot)
                .fetch_one(&mut *c)
                .await?
        });
        if remaining == 0 {
            continue;
        }
        let request = Request {
            scope: ADMIN_SCOPE,
            key: "",
            now_ms,
            memo: "expired",
            id: None,
        };
        let posting = post(
            conn,
            &request,
            Movement {
                kind: "expire",
                from: &customer,
                to: &Account::Expired,
                amount: remaining,
                plugin: None,
                reverses: None,
            },
        )
        .await?;
        take_from_lots(conn, &posting, &[(lot, remaining)], remaining).await?;
        swept += 1;
    }
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

/// A customer's balance at `now_ms`.
pub async fn balance(
    conn: &mut Conn<'_>,
    customer: &str,
    now_ms: i64,
) -> Result<Balance, sqlx::Error> {
    let customer = Account::Customer(customer.to_owned());
    let total: Option<i64> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
            .bind(customer.id())
            .fetch_optional(&mut *c)
            .await?
    });
    let expiring: Vec<(i64, i64)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT expires_at_ms, remaining FROM ledger_lots WHERE account_id = $1 \
             AND remaining > 0 AND expires_at_ms > $2 ORDER BY expires_at_ms, id",
        )
        .bind(customer.id())
        .bind(now_ms)
        .fetch_all(&mut *c)
        .await?
    });
    let held = held(conn, &customer, now_ms).await?;
    let in_lots: i64 = expiring.iter().map(|(_, remaining)| remaining).sum();
    Ok(Balance {
        total: total.unwrap_or(0),
        available: (in_lots - held).max(0),
        held,
        expiring,
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
