//! The `ledger` interface: a call's view of the ledger and its buffered writes.
//!
//! During a call nothing is written. Each write is checked against what is committed plus the
//! call's own earlier writes (so reads see the call's writes and an overspend is refused at
//! once), given its id, and buffered as an [`Operation`]. When the call returns `ok` the commit
//! writer replays the operations with [`super::apply`] in the call's savepoint, where every
//! rule is checked again against what other calls committed meanwhile.

use std::collections::HashMap;

use super::{Balance, Operation, Posting};
use crate::db::Pool;
use crate::runtime::interfaces::ledger as wit;
use crate::runtime::{HostFailure, LimitExceeded, Metered};

/// A buffered ledger write: the operation, its idempotency key and memo, and the id it was
/// given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedOperation {
    /// What to do.
    pub operation: Operation,
    /// The plugin's idempotency key.
    pub key: String,
    /// The plugin's note.
    pub memo: String,
    /// The id the plugin was told.
    pub id: String,
}

/// The limits and settings of a call's ledger.
#[derive(Debug, Clone, Copy)]
pub struct LedgerSettings {
    /// The call's time.
    pub now_ms: i64,
    /// Validity of awarded points.
    pub points_validity_ms: i64,
    /// Longest hold.
    pub hold_seconds_max: u32,
    /// Longest history page.
    pub history_limit_max: u32,
    /// Writes per call.
    pub writes_per_call_max: u32,
    /// Longest idempotency key.
    pub key_bytes_max: u32,
}

/// One call's ledger: whose points, and what the call has done so far.
#[derive(Default)]
pub struct CallLedger {
    db: Option<Pool>,
    plugin_id: String,
    region: String,
    /// The bank customer number of the caller, if a customer. Never shown to the plugin.
    customer: Option<String>,
    settings: Option<LedgerSettings>,
    operations: Vec<BufferedOperation>,
    /// The customer's committed balance (without lots), read once.
    committed: Option<Balance>,
    /// The budget's committed balance, read once.
    budget_committed: Option<i64>,
    total_delta: i64,
    available_delta: i64,
    held_delta: i64,
    budget_delta: i64,
    /// Holds this call created: id → points.
    new_holds: HashMap<String, i64>,
}

impl CallLedger {
    /// The ledger of a call of `plugin_id` in `region` by `customer`.
    pub fn new(
        db: Pool,
        plugin_id: &str,
        region: &str,
        customer: Option<String>,
        settings: LedgerSettings,
    ) -> Self {
        Self {
            db: Some(db),
            plugin_id: plugin_id.to_owned(),
            region: region.to_owned(),
            customer,
            settings: Some(settings),
            ..Self::default()
        }
    }

    /// The buffered writes, in order.
    pub fn into_operations(self) -> Vec<BufferedOperation> {
        self.operations
    }

    fn settings(&self) -> LedgerSettings {
        self.settings
            .expect("a call's ledger is built with settings")
    }

    fn customer(&self) -> Result<String, wit::LedgerError> {
        self.customer.clone().ok_or(wit::LedgerError::NotACustomer)
    }

    fn db(&self) -> Result<&Pool, HostFailure> {
        self.db
            .as_ref()
            .ok_or_else(|| HostFailure("ledger used without a database".into()))
    }

    async fn committed_balance(&mut self, customer: &str) -> Result<Balance, HostFailure> {
        if let Some(balance) = &self.committed {
            return Ok(balance.clone());
        }
        let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
        let balance =
            super::balance_summary(&mut connection.conn(), customer, self.settings().now_ms)
                .await
                .map_err(read_failure)?;
        self.committed = Some(balance.clone());
        Ok(balance)
    }

    async fn available(&mut self, customer: &str) -> Result<i64, HostFailure> {
        Ok(self.committed_balance(customer).await?.available + self.available_delta)
    }

    async fn budget_remaining(&mut self) -> Result<i64, HostFailure> {
        let committed = match self.budget_committed {
            Some(balance) => balance,
            None => {
                let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
                let account = super::Account::Budget {
                    plugin_id: self.plugin_id.clone(),
                    region: self.region.clone(),
                };
                let balance = super::account_balance(&mut connection.conn(), &account)
                    .await
                    .map_err(read_failure)?;
                self.budget_committed = Some(balance);
                balance
            }
        };
        Ok(committed + self.budget_delta)
    }

    /// What an earlier use of `key` gave, if this exact request was made before (in this call
    /// or committed); an error if the key was used for something else; `None` if new. An
    /// empty key (the sweep's, which has none) or a too long one stops the call.
    async fn earlier_result(
        &mut self,
        key: &str,
        operation: &Operation,
    ) -> Result<Option<String>, Refusal> {
        let max = self.settings().key_bytes_max;
        if key.is_empty() || key.len() > max as usize {
            return Err(Refusal::Limit(LimitExceeded::LedgerKey(u64::from(max))));
        }
        let fingerprint = operation.fingerprint(&self.plugin_id, &self.region);
        if let Some(earlier) = self.operations.iter().find(|o| o.key == key) {
            return if earlier.operation.fingerprint(&self.plugin_id, &self.region) == fingerprint {
                Ok(Some(earlier.id.clone()))
            } else {
                Err(Refusal::Rule(wit::LedgerError::ExistsWithDifferentAmount))
            };
        }
        match self.stored_key(key).await? {
            None => Ok(None),
            Some((stored, result)) if stored == fingerprint => Ok(Some(result)),
            Some(_) => Err(Refusal::Rule(wit::LedgerError::ExistsWithDifferentAmount)),
        }
    }

    /// The committed (fingerprint, result) of `key`. The first time, the customer's balance
    /// and the budget's are read with it, in one round trip, unless the call read them
    /// already (a call reads each once, so what it sees does not shift under it).
    async fn stored_key(&mut self, key: &str) -> Result<Option<(String, String)>, HostFailure> {
        let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
        let customer_read = self.committed.is_some() || self.customer.is_none();
        if customer_read && self.budget_committed.is_some() {
            return super::lookup_key(&mut connection.conn(), &self.plugin_id, key)
                .await
                .map_err(read_failure);
        }
        let snapshot = super::call_snapshot(
            &mut connection.conn(),
            &self.plugin_id,
            &self.region,
            self.customer.as_deref(),
            key,
            self.settings().now_ms,
        )
        .await
        .map_err(read_failure)?;
        if !customer_read {
            self.committed = Some(snapshot.customer);
        }
        self.budget_committed.get_or_insert(snapshot.budget);
        Ok(snapshot.key)
    }

    /// Buffers `operation` under `key` with a new id, after the writes-per-call limit.
    fn buffer(
        &mut self,
        operation: Operation,
        key: String,
        memo: String,
    ) -> Result<String, Refusal> {
        let max = self.settings().writes_per_call_max;
        if self.operations.len() as u64 >= u64::from(max) {
            return Err(Refusal::Limit(LimitExceeded::LedgerWrites(u64::from(max))));
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        self.operations.push(BufferedOperation {
            operation,
            key,
            memo,
            id: id.clone(),
        });
        Ok(id)
    }
}

/// Why a ledger call did not succeed: a rule the plugin can handle, or a trap.
enum Refusal {
    Rule(wit::LedgerError),
    Limit(LimitExceeded),
    Host(HostFailure),
}

impl From<HostFailure> for Refusal {
    fn from(failure: HostFailure) -> Self {
        Refusal::Host(failure)
    }
}

impl From<wit::LedgerError> for Refusal {
    fn from(rule: wit::LedgerError) -> Self {
        Refusal::Rule(rule)
    }
}

/// A rule refusal becomes the WIT error; a limit or a host failure stops the call.
fn settle<T>(result: Result<T, Refusal>) -> wasmtime::Result<Result<T, wit::LedgerError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(Refusal::Rule(rule)) => Ok(Err(rule)),
        Err(Refusal::Limit(limit)) => Err(limit.into()),
        Err(Refusal::Host(failure)) => Err(failure.into()),
    }
}

fn read_failure(error: sqlx::Error) -> HostFailure {
    HostFailure(format!("ledger read: {error}"))
}

fn positive(points: i64) -> Result<(), Refusal> {
    if points <= 0 {
        return Err(Refusal::Rule(wit::LedgerError::AmountMustBePositive));
    }
    Ok(())
}

impl CallLedger {
    async fn do_award(
        &mut self,
        points: i64,
        key: String,
        memo: String,
    ) -> Result<String, Refusal> {
        positive(points)?;
        let customer = self.customer()?;
        let operation = Operation::Award {
            customer: customer.clone(),
            amount: points,
            expires_at_ms: self.settings().now_ms + self.settings().points_validity_ms,
        };
        if let Some(id) = self.earlier_result(&key, &operation).await? {
            return Ok(id);
        }
        let remaining = self.budget_remaining().await?;
        if remaining < points {
            return Err(Refusal::Rule(wit::LedgerError::BudgetExhausted(
                remaining.max(0),
            )));
        }
        self.committed_balance(&customer).await?;
        let id = self.buffer(operation, key, memo)?;
        self.budget_delta -= points;
        self.total_delta += points;
        self.available_delta += points;
        Ok(id)
    }

    async fn do_spend(
        &mut self,
        points: i64,
        key: String,
        memo: String,
    ) -> Result<String, Refusal> {
        positive(points)?;
        let customer = self.customer()?;
        let operation = Operation::Spend {
            customer: customer.clone(),
            amount: points,
        };
        if let Some(id) = self.earlier_result(&key, &operation).await? {
            return Ok(id);
        }
        let available = self.available(&customer).await?;
        if available < points {
            return Err(Refusal::Rule(wit::LedgerError::PointsInsufficient(
                available.max(0),
            )));
        }
        let id = self.buffer(operation, key, memo)?;
        self.total_delta -= points;
        self.available_delta -= points;
        Ok(id)
    }

    async fn do_hold(&mut self, points: i64, seconds: u32, key: String) -> Result<String, Refusal> {
        positive(points)?;
        let customer = self.customer()?;
        let settings = self.settings();
        let seconds = seconds.clamp(1, settings.hold_seconds_max);
        let operation = Operation::Hold {
            customer: customer.clone(),
            amount: points,
            expires_at_ms: settings.now_ms + i64::from(seconds) * 1000,
        };
        if let Some(id) = self.earlier_result(&key, &operation).await? {
            return Ok(id);
        }
        let available = self.available(&customer).await?;
        if available < points {
            return Err(Refusal::Rule(wit::LedgerError::PointsInsufficient(
                available.max(0),
            )));
        }
        let id = self.buffer(operation, key, String::new())?;
        self.available_delta -= points;
        self.held_delta += points;
        self.new_holds.insert(id.clone(), points);
        Ok(id)
    }

    /// The points of an open hold of this plugin on this customer: one this call created, or
    /// a committed one.
    async fn open_hold(&mut self, hold: &str) -> Result<i64, Refusal> {
        if let Some(points) = self.new_holds.get(hold) {
            return Ok(*points);
        }
        let customer = self.customer()?;
        let now_ms = self.settings().now_ms;
        let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
        let found = super::hold_state(&mut connection.conn(), &self.plugin_id, hold)
            .await
            .map_err(read_failure)?;
        match found {
            Some(state) if state.customer == customer => {
                // An `expired` label from a sweep whose clock ran ahead of this call's does
                // not close the hold before its time.
                let lapsed = state.expires_at_ms <= now_ms;
                if !matches!(state.status.as_str(), "open" | "expired") || lapsed {
                    return Err(Refusal::Rule(wit::LedgerError::HoldAlreadyResolved));
                }
                Ok(state.amount)
            }
            // Another customer's hold does not exist for this caller.
            _ => Err(Refusal::Rule(wit::LedgerError::HoldNotFound)),
        }
    }

    fn resolved_in_this_call(&self, hold: &str) -> bool {
        self.operations.iter().any(|o| {
            matches!(&o.operation, Operation::Capture { hold: h, .. } | Operation::Release { hold: h } if h == hold)
        })
    }

    async fn do_capture(
        &mut self,
        hold: String,
        points: i64,
        key: String,
    ) -> Result<String, Refusal> {
        positive(points)?;
        let operation = Operation::Capture {
            hold: hold.clone(),
            amount: points,
        };
        if let Some(id) = self.earlier_result(&key, &operation).await? {
            return Ok(id);
        }
        if self.resolved_in_this_call(&hold) {
            return Err(Refusal::Rule(wit::LedgerError::HoldAlreadyResolved));
        }
        let held = self.open_hold(&hold).await?;
        if points > held {
            return Err(Refusal::Rule(wit::LedgerError::CaptureExceedsHold(held)));
        }
        let id = self.buffer(operation, key, String::new())?;
        self.held_delta -= held;
        self.available_delta += held - points;
        self.total_delta -= points;
        Ok(id)
    }

    async fn do_release(&mut self, hold: String, key: String) -> Result<(), Refusal> {
        let operation = Operation::Release { hold: hold.clone() };
        if self.earlier_result(&key, &operation).await?.is_some() {
            return Ok(());
        }
        if self.resolved_in_this_call(&hold) {
            return Err(Refusal::Rule(wit::LedgerError::HoldAlreadyResolved));
        }
        let held = self.open_hold(&hold).await?;
        self.buffer(operation, key, String::new())?;
        self.held_delta -= held;
        self.available_delta += held;
        Ok(())
    }

    async fn do_reverse(&mut self, posting: String, key: String) -> Result<String, Refusal> {
        let customer = self.customer()?;
        let operation = Operation::Reverse {
            posting: posting.clone(),
        };
        if let Some(id) = self.earlier_result(&key, &operation).await? {
            return Ok(id);
        }
        let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
        let found = super::posting_state(&mut connection.conn(), &self.plugin_id, &posting)
            .await
            .map_err(read_failure)?;
        drop(connection);
        let state = match found {
            Some(state) if state.customer.as_deref() == Some(customer.as_str()) => state,
            _ => return Err(Refusal::Rule(wit::LedgerError::PostingNotFound)),
        };
        if state.reversed
            || self
                .operations
                .iter()
                .any(|o| matches!(&o.operation, Operation::Reverse { posting: p } if *p == posting))
        {
            return Err(Refusal::Rule(wit::LedgerError::AlreadyReversed));
        }
        let id = match state.kind.as_str() {
            "spend" | "capture" => {
                let id = self.buffer(operation, key, String::new())?;
                self.total_delta += state.amount;
                self.available_delta += state.amount;
                id
            }
            "award" => {
                let clawed = state.amount.min(self.available(&customer).await?.max(0));
                let id = self.buffer(operation, key, String::new())?;
                self.total_delta -= clawed;
                self.available_delta -= clawed;
                self.budget_delta += clawed;
                id
            }
            _ => return Err(Refusal::Rule(wit::LedgerError::NotReversible)),
        };
        Ok(id)
    }

    async fn do_balance(&mut self) -> Result<wit::PointsBalance, Refusal> {
        let customer = self.customer()?;
        let committed = self.committed_balance(&customer).await?;
        let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
        let lots = super::expiring_lots(&mut connection.conn(), &customer, self.settings().now_ms)
            .await
            .map_err(read_failure)?;
        drop(connection);
        let mut expiring: Vec<wit::Lot> = lots
            .iter()
            .map(|(expires_at_ms, points)| wit::Lot {
                expires_at_ms: *expires_at_ms,
                points: *points,
            })
            .collect();
        // Replay the call's own writes on the lots the way the ledger will: awards add a lot,
        // spends and captures take from the earliest-expiring lots first.
        for buffered in &self.operations {
            match buffered.operation {
                Operation::Award {
                    amount,
                    expires_at_ms,
                    ..
                } => {
                    let at = expiring.partition_point(|lot| lot.expires_at_ms <= expires_at_ms);
                    expiring.insert(
                        at,
                        wit::Lot {
                            expires_at_ms,
                            points: amount,
                        },
                    );
                }
                Operation::Spend { amount, .. } | Operation::Capture { amount, .. } => {
                    let mut left = amount;
                    for lot in expiring.iter_mut() {
                        let taken = left.min(lot.points);
                        lot.points -= taken;
                        left -= taken;
                    }
                    expiring.retain(|lot| lot.points > 0);
                }
                _ => {}
            }
        }
        Ok(wit::PointsBalance {
            total: committed.total + self.total_delta,
            available: (committed.available + self.available_delta).max(0),
            held: committed.held + self.held_delta,
            expiring,
        })
    }

    async fn do_history(
        &mut self,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<wit::Posting>, Refusal> {
        let customer = self.customer()?;
        let limit = limit.min(self.settings().history_limit_max);
        let mut connection = self.db()?.acquire().await.map_err(read_failure)?;
        let postings = super::history(
            &mut connection.conn(),
            &customer,
            before.as_deref(),
            i64::from(limit),
        )
        .await
        .map_err(read_failure)?;
        let account = super::Account::Customer(customer).id();
        Ok(postings
            .into_iter()
            .map(|posting| to_wit_posting(posting, &account))
            .collect())
    }
}

/// A posting as the customer sees it: positive received, negative given.
fn to_wit_posting(posting: Posting, customer_account: &str) -> wit::Posting {
    let points = posting.points_for(customer_account);
    wit::Posting {
        id: posting.id,
        at_ms: posting.created_at_ms,
        kind: posting.kind,
        points,
        scenario: posting.plugin_id,
        memo: posting.memo,
    }
}

impl wit::Host for Metered<'_, CallLedger> {
    async fn balance(&mut self) -> wasmtime::Result<Result<wit::PointsBalance, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_balance().await)
    }

    async fn history(
        &mut self,
        before: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<wit::Posting>, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_history(before, limit).await)
    }

    async fn award(
        &mut self,
        points: i64,
        idempotency_key: String,
        memo: String,
    ) -> wasmtime::Result<Result<String, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_award(points, idempotency_key, memo).await)
    }

    async fn spend(
        &mut self,
        points: i64,
        idempotency_key: String,
        memo: String,
    ) -> wasmtime::Result<Result<String, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_spend(points, idempotency_key, memo).await)
    }

    async fn hold(
        &mut self,
        points: i64,
        seconds: u32,
        idempotency_key: String,
    ) -> wasmtime::Result<Result<String, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_hold(points, seconds, idempotency_key).await)
    }

    async fn capture(
        &mut self,
        hold: String,
        points: i64,
        idempotency_key: String,
    ) -> wasmtime::Result<Result<String, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_capture(hold, points, idempotency_key).await)
    }

    async fn release(
        &mut self,
        hold: String,
        idempotency_key: String,
    ) -> wasmtime::Result<Result<(), wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_release(hold, idempotency_key).await)
    }

    async fn reverse(
        &mut self,
        posting: String,
        idempotency_key: String,
    ) -> wasmtime::Result<Result<String, wit::LedgerError>> {
        let ledger = self.charge()?;
        settle(ledger.do_reverse(posting, idempotency_key).await)
    }
}
