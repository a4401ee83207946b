//! The ledger engine: applies the writes of many calls with a few statements.
//!
//! [`Batch::load`] locks every account the writes touch, in one statement and in id order (so
//! hosts sharing PostgreSQL cannot deadlock), and then reads under those locks everything the
//! rules need: idempotency keys, the customers' lots and open holds, and the holds and
//! postings that captures, releases and reversals name. [`Batch::apply`] applies one write in
//! memory, checking every rule; a call whose write breaks one is undone with
//! [`Batch::undo_to`], so the next call sees the ledger as if it never ran. [`Batch::flush`]
//! writes what the applied calls did, a few multi-row statements per table, in the caller's
//! transaction.
//!
//! Many calls therefore cost about a dozen statements together instead of a dozen each, and
//! the rules are checked in one place for every caller: plugin calls through the commit
//! writer, admin funding and the expiry sweep through [`super::apply`].

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Account, LedgerError, Operation, Request};
use crate::db::{self, Conn};
use crate::{execute_rows, select_in, with_conn};

/// One write: what to do, for which plugin in which region, with which key.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    /// The idempotency key, time, memo and chosen id.
    pub request: Request<'a>,
    /// The plugin whose budget, sink and holds are used.
    pub plugin_id: &'a str,
    /// The region of the budget and sink.
    pub region: &'a str,
    /// What to do.
    pub operation: &'a Operation,
}

/// A lot as the batch sees it.
#[derive(Debug, Clone)]
struct Lot {
    account: String,
    award_posting: String,
    amount: i64,
    remaining: i64,
    expires_at_ms: i64,
    /// What the database holds; `None` for a lot created in this batch.
    stored: Option<i64>,
}

/// A hold as the batch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    account: String,
    plugin_id: String,
    region: String,
    amount: i64,
    created_at_ms: i64,
    expires_at_ms: i64,
    status: String,
    capture_posting: Option<String>,
    /// The status the database holds; `None` for a hold created in this batch.
    stored: Option<String>,
}

/// A committed posting a reversal names.
#[derive(Debug, Clone)]
struct Named {
    kind: String,
    from: String,
    to: String,
    amount: i64,
    plugin_id: Option<String>,
    region: Option<String>,
}

/// A posting made in this batch.
#[derive(Debug)]
struct NewPosting {
    id: String,
    created_at_ms: i64,
    kind: &'static str,
    from: String,
    to: String,
    amount: i64,
    plugin_id: Option<String>,
    region: Option<String>,
    memo: String,
    reverses: Option<String>,
}

/// An idempotency key's record.
#[derive(Debug)]
struct KeyRecord {
    fingerprint: String,
    result: String,
    /// Whether the database holds it (false: used first in this batch).
    stored: bool,
}

/// How to take back one change.
#[derive(Debug)]
enum Undo {
    Balance { account: String, delta: i64 },
    LotRemaining { lot: String, before: i64 },
    LotCreated { lot: String },
    Hold { hold: String, before: Option<Hold> },
    Key { scope: String, key: String },
    Reversed { posting: String },
}

/// A point to undo back to: see [`Batch::mark`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    undo: usize,
    postings: usize,
    moves: usize,
    clawbacks: usize,
}

/// What one posting moves.
struct Movement<'a> {
    kind: &'static str,
    from: &'a str,
    to: &'a str,
    amount: i64,
    /// The plugin and region that asked, if a plugin did.
    plugin: Option<(&'a str, &'a str)>,
    reverses: Option<&'a str>,
}

/// The accounts, lots, holds and keys a set of writes needs, and what applying them changed.
#[derive(Debug, Default)]
pub struct Batch {
    /// The earliest and latest time of the writes.
    now_min: i64,
    now_max: i64,
    /// Locked accounts: id → (balance now, balance stored).
    accounts: HashMap<String, (i64, i64)>,
    /// The lots the writes may need: each customer's earliest-expiring lots, enough to cover
    /// every point the batch could take; the lots expiring while the batch's calls ran; the
    /// lots named by reversals and expiries; the lots the batch created.
    lots: HashMap<String, Lot>,
    /// Lot ids per customer account, earliest-expiring first.
    lots_by_account: HashMap<String, Vec<String>>,
    /// Points in each customer's lots unexpired at `now_min`, all of them, loaded or not.
    unexpired: HashMap<String, i64>,
    holds: HashMap<String, Hold>,
    /// Hold ids per customer account.
    holds_by_account: HashMap<String, Vec<String>>,
    keys: HashMap<(String, String), KeyRecord>,
    /// Committed postings named by reversals.
    named: HashMap<String, Named>,
    /// Lot moves of the named postings: posting → (lot, points).
    named_moves: HashMap<String, Vec<(String, i64)>>,
    /// Named postings already reversed.
    reversed: HashSet<String>,
    new_postings: Vec<NewPosting>,
    new_moves: Vec<(String, String, i64)>,
    /// (reversal, original, clawed, owed).
    new_clawbacks: Vec<(String, String, i64, i64)>,
    undo: Vec<Undo>,
}

fn budget(plugin_id: &str, region: &str) -> String {
    Account::Budget {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    }
    .id()
}

fn sink(plugin_id: &str, region: &str) -> String {
    Account::Sink {
        plugin_id: plugin_id.to_owned(),
        region: region.to_owned(),
    }
    .id()
}

fn customer(number: &str) -> String {
    Account::Customer(number.to_owned()).id()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn positive(amount: i64) -> Result<(), LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::AmountMustBePositive);
    }
    Ok(())
}

/// A broken assumption of the engine: fails the whole batch rather than the ledger's rules.
fn bug(what: String) -> LedgerError {
    tracing::error!(%what, "ledger engine bug; the batch is rolled back");
    LedgerError::Database(sqlx::Error::Protocol(what))
}

impl Batch {
    /// Locks what `writes` touch and reads what their rules need, in `conn`'s transaction.
    pub async fn load(conn: &mut Conn<'_>, writes: &[&Write<'_>]) -> Result<Batch, sqlx::Error> {
        let mut batch = Batch::default();
        if writes.is_empty() {
            return Ok(batch);
        }
        batch.now_min = writes
            .iter()
            .map(|w| w.request.now_ms)
            .min()
            .unwrap_or_default();
        batch.now_max = writes
            .iter()
            .map(|w| w.request.now_ms)
            .max()
            .unwrap_or_default();
        // Who the named holds and postings belong to never changes: read before locking.
        let hold_ids: Vec<String> = writes
            .iter()
            .filter_map(|w| match w.operation {
                Operation::Capture { hold, .. } | Operation::Release { hold } => Some(hold.clone()),
                _ => None,
            })
            .collect();
        let owners = hold_owners(conn, &hold_ids).await?;
        let posting_ids: Vec<String> = writes
            .iter()
            .filter_map(|w| match w.operation {
                Operation::Reverse { posting } => Some(posting.clone()),
                _ => None,
            })
            .collect();
        batch.named = named_postings(conn, &posting_ids).await?;
        let mut lock_set = BTreeMap::new();
        for write in writes {
            for account in batch.accounts_of(write, &owners) {
                lock_set.insert(account, ());
            }
        }
        let locked: Vec<String> = lock_set.into_keys().collect();
        batch.accounts = lock(conn, &locked).await?;
        // Under the locks: everything that changes.
        let customers: Vec<String> = locked
            .iter()
            .filter(|id| Account::customer_number_in(id).is_some())
            .cloned()
            .collect();
        let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for write in writes.iter().filter(|w| !w.request.key.is_empty()) {
            keys.entry(write.request.scope)
                .or_default()
                .push(write.request.key.to_owned());
        }
        for (scope, keys) in keys {
            for (key, fingerprint, result) in stored_keys(conn, scope, &keys).await? {
                batch.keys.insert(
                    (scope.to_owned(), key),
                    KeyRecord {
                        fingerprint,
                        result,
                        stored: true,
                    },
                );
            }
        }
        batch.named_moves = lot_moves(conn, &posting_ids).await?;
        batch.reversed = reversed(conn, &posting_ids).await?;
        let mut lot_ids: Vec<String> = batch
            .named_moves
            .values()
            .flatten()
            .map(|(lot, _)| lot.clone())
            .collect();
        lot_ids.extend(writes.iter().filter_map(|w| match w.operation {
            Operation::Expire { lot, .. } => Some(lot.clone()),
            _ => None,
        }));
        // At most this many points leave each customer's lots in this batch (a capture of a
        // hold made in the same call may be anyone's).
        let mut need: HashMap<&str, i64> = HashMap::new();
        let mut anyone = 0i64;
        for write in writes {
            let (account, amount) = match write.operation {
                Operation::Spend {
                    customer: number,
                    amount,
                } => (Some(customer(number)), *amount),
                Operation::Capture { hold, amount } => (
                    owners.get(hold).map(|(account, ..)| account.clone()),
                    *amount,
                ),
                Operation::Reverse { posting } => match batch.named.get(posting) {
                    Some(named) if named.kind == "award" => (Some(named.to.clone()), named.amount),
                    _ => continue,
                },
                _ => continue,
            };
            match account.and_then(|a| customers.iter().find(|c| **c == a)) {
                Some(account) => {
                    let total = need.entry(account.as_str()).or_default();
                    *total = total.saturating_add(amount);
                }
                None => anyone = anyone.saturating_add(amount),
            }
        }
        let needs: Vec<(String, i64)> = customers
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    need.get(c.as_str())
                        .copied()
                        .unwrap_or(0)
                        .saturating_add(anyone),
                )
            })
            .collect();
        for (id, lot) in spendable_lots(conn, &needs, batch.now_max).await? {
            batch.lots.insert(id, lot);
        }
        let awards: Vec<String> = batch
            .named
            .iter()
            .filter(|(_, named)| named.kind == "award")
            .map(|(id, _)| id.clone())
            .collect();
        for (id, lot) in named_lots(conn, &lot_ids, &awards).await? {
            batch.lots.insert(id, lot);
        }
        // A customer's balance is what its lots hold; every lot with points left that
        // expired by `now_min` is loaded, so what is unexpired follows.
        for account in &customers {
            let balance = batch
                .accounts
                .get(account)
                .map_or(0, |(balance, _)| *balance);
            batch.unexpired.insert(account.clone(), balance);
        }
        for lot in batch.lots.values() {
            if lot.remaining > 0
                && lot.expires_at_ms <= batch.now_min
                && let Some(unexpired) = batch.unexpired.get_mut(&lot.account)
            {
                *unexpired -= lot.remaining;
            }
        }
        let mut by_account: Vec<(&String, &Lot)> = batch.lots.iter().collect();
        by_account.sort_by_key(|(id, lot)| (lot.expires_at_ms, *id));
        for (id, lot) in by_account {
            batch
                .lots_by_account
                .entry(lot.account.clone())
                .or_default()
                .push(id.clone());
        }
        batch.holds = holds(conn, &customers, batch.now_min, &hold_ids)
            .await?
            .into_iter()
            .collect();
        for (id, hold) in &batch.holds {
            batch
                .holds_by_account
                .entry(hold.account.clone())
                .or_default()
                .push(id.clone());
        }
        Ok(batch)
    }

    /// The accounts `write` may change.
    fn accounts_of(
        &self,
        write: &Write<'_>,
        owners: &HashMap<String, (String, String, String)>,
    ) -> Vec<String> {
        let (plugin_id, region) = (write.plugin_id, write.region);
        match write.operation {
            Operation::Fund { .. } => vec![Account::Issuer.id(), budget(plugin_id, region)],
            Operation::Award { customer: c, .. } => {
                vec![budget(plugin_id, region), customer(c)]
            }
            Operation::Spend { customer: c, .. } => vec![customer(c), sink(plugin_id, region)],
            Operation::Hold { customer: c, .. } => vec![customer(c)],
            Operation::Capture { hold, .. } | Operation::Release { hold } => {
                match owners.get(hold) {
                    Some((account, owner, hold_region)) if owner == plugin_id => {
                        vec![account.clone(), sink(plugin_id, hold_region)]
                    }
                    // A hold made earlier in the same call: its customer is locked by that
                    // write, and it is in the call's region.
                    _ => vec![sink(plugin_id, region)],
                }
            }
            Operation::Reverse { posting } => match self.named.get(posting) {
                Some(named) if named.plugin_id.as_deref() == Some(plugin_id) => {
                    vec![named.from.clone(), named.to.clone()]
                }
                _ => Vec::new(),
            },
            Operation::Expire { customer: c, .. } => vec![customer(c), Account::Expired.id()],
        }
    }

    /// The point [`Batch::undo_to`] returns to.
    pub fn mark(&self) -> Mark {
        Mark {
            undo: self.undo.len(),
            postings: self.new_postings.len(),
            moves: self.new_moves.len(),
            clawbacks: self.new_clawbacks.len(),
        }
    }

    /// Takes back everything applied since `mark`.
    pub fn undo_to(&mut self, mark: Mark) {
        while self.undo.len() > mark.undo {
            let Some(undo) = self.undo.pop() else { break };
            match undo {
                Undo::Balance { account, delta } => {
                    if let Some((balance, _)) = self.accounts.get_mut(&account) {
                        *balance -= delta;
                    }
                }
                Undo::LotRemaining { lot, before } => {
                    self.set_lot_remaining(&lot, before);
                }
                Undo::LotCreated { lot } => {
                    self.set_lot_remaining(&lot, 0);
                    if let Some(removed) = self.lots.remove(&lot)
                        && let Some(ids) = self.lots_by_account.get_mut(&removed.account)
                    {
                        ids.retain(|id| *id != lot);
                    }
                }
                Undo::Hold { hold, before } => match before {
                    Some(before) => {
                        self.holds.insert(hold, before);
                    }
                    None => {
                        if let Some(removed) = self.holds.remove(&hold)
                            && let Some(ids) = self.holds_by_account.get_mut(&removed.account)
                        {
                            ids.retain(|id| *id != hold);
                        }
                    }
                },
                Undo::Key { scope, key } => {
                    self.keys.remove(&(scope, key));
                }
                Undo::Reversed { posting } => {
                    self.reversed.remove(&posting);
                }
            }
        }
        self.new_postings.truncate(mark.postings);
        self.new_moves.truncate(mark.moves);
        self.new_clawbacks.truncate(mark.clawbacks);
    }

    /// Applies `write`, or returns the rule it breaks (its partial changes are then for the
    /// caller to undo). Returns the id of what it created: the posting, the hold, for a
    /// release the hold; for an expiry of an already empty lot, an empty string.
    pub fn apply(&mut self, write: &Write<'_>) -> Result<String, LedgerError> {
        let request = &write.request;
        let (plugin_id, region) = (write.plugin_id, write.region);
        let fingerprint = write.operation.fingerprint(plugin_id, region);
        match write.operation {
            Operation::Fund { amount } => {
                positive(*amount)?;
                if let Some(posting) = self.remembered(request, &fingerprint)? {
                    return Ok(posting);
                }
                let posting = self.post(
                    request,
                    Movement {
                        kind: "fund",
                        from: &Account::Issuer.id(),
                        to: &budget(plugin_id, region),
                        amount: *amount,
                        plugin: Some((plugin_id, region)),
                        reverses: None,
                    },
                )?;
                self.remember(request, fingerprint, &posting);
                Ok(posting)
            }
            Operation::Award {
                customer: number,
                amount,
                expires_at_ms,
            } => {
                positive(*amount)?;
                if let Some(posting) = self.remembered(request, &fingerprint)? {
                    return Ok(posting);
                }
                let budget = budget(plugin_id, region);
                let remaining = self.balance(&budget)?;
                if remaining < *amount {
                    return Err(LedgerError::BudgetExhausted {
                        remaining,
                        requested: *amount,
                    });
                }
                let account = customer(number);
                let posting = self.post(
                    request,
                    Movement {
                        kind: "award",
                        from: &budget,
                        to: &account,
                        amount: *amount,
                        plugin: Some((plugin_id, region)),
                        reverses: None,
                    },
                )?;
                self.create_lot(Lot {
                    account,
                    award_posting: posting.clone(),
                    amount: *amount,
                    remaining: *amount,
                    expires_at_ms: *expires_at_ms,
                    stored: None,
                });
                self.remember(request, fingerprint, &posting);
                Ok(posting)
            }
            Operation::Spend {
                customer: number,
                amount,
            } => {
                positive(*amount)?;
                if let Some(posting) = self.remembered(request, &fingerprint)? {
                    return Ok(posting);
                }
                let posting = self.spend_from_lots(
                    request,
                    &customer(number),
                    &sink(plugin_id, region),
                    (plugin_id, region),
                    *amount,
                    "spend",
                )?;
                self.remember(request, fingerprint, &posting);
                Ok(posting)
            }
            Operation::Hold {
                customer: number,
                amount,
                expires_at_ms,
            } => {
                positive(*amount)?;
                if let Some(hold) = self.remembered(request, &fingerprint)? {
                    return Ok(hold);
                }
                let account = customer(number);
                let (_, available) = self.spendable(&account, request.now_ms);
                if available < *amount {
                    return Err(LedgerError::PointsInsufficient {
                        available: available.max(0),
                        requested: *amount,
                    });
                }
                let hold = request.new_id();
                self.set_hold(
                    &hold,
                    Hold {
                        account,
                        plugin_id: plugin_id.to_owned(),
                        region: region.to_owned(),
                        amount: *amount,
                        created_at_ms: request.now_ms,
                        expires_at_ms: *expires_at_ms,
                        status: "open".into(),
                        capture_posting: None,
                        stored: None,
                    },
                );
                self.remember(request, fingerprint, &hold);
                Ok(hold)
            }
            Operation::Capture { hold, amount } => {
                positive(*amount)?;
                let found = self.hold_of(plugin_id, hold)?;
                if let Some(posting) = self.remembered(request, &fingerprint)? {
                    return Ok(posting);
                }
                open(&found, request.now_ms)?;
                if *amount > found.amount {
                    return Err(LedgerError::CaptureExceedsHold {
                        held: found.amount,
                        requested: *amount,
                    });
                }
                // Resolve first, so the hold no longer counts against what the capture spends.
                let mut resolved = Hold {
                    status: "captured".into(),
                    ..found.clone()
                };
                self.set_hold(hold, resolved.clone());
                let posting = self.spend_from_lots(
                    request,
                    &found.account,
                    &sink(plugin_id, &found.region),
                    (plugin_id, &found.region),
                    *amount,
                    "capture",
                )?;
                resolved.capture_posting = Some(posting.clone());
                self.set_hold(hold, resolved);
                self.remember(request, fingerprint, &posting);
                Ok(posting)
            }
            Operation::Release { hold } => {
                let found = self.hold_of(plugin_id, hold)?;
                if self.remembered(request, &fingerprint)?.is_some() {
                    return Ok(hold.clone());
                }
                open(&found, request.now_ms)?;
                self.set_hold(
                    hold,
                    Hold {
                        status: "released".into(),
                        ..found
                    },
                );
                self.remember(request, fingerprint, hold);
                Ok(hold.clone())
            }
            Operation::Reverse { posting } => self.reverse(write, posting, fingerprint),
            Operation::Expire {
                lot,
                customer: number,
            } => {
                let remaining = self.lots.get(lot).map_or(0, |lot| lot.remaining);
                if remaining == 0 {
                    return Ok(String::new());
                }
                let account = customer(number);
                let posting = self.post(
                    request,
                    Movement {
                        kind: "expire",
                        from: &account,
                        to: &Account::Expired.id(),
                        amount: remaining,
                        plugin: None,
                        reverses: None,
                    },
                )?;
                self.take_from_lots(&posting, std::slice::from_ref(lot), remaining)?;
                Ok(posting)
            }
        }
    }

    /// Reverses an award or a spend of the writing plugin.
    fn reverse(
        &mut self,
        write: &Write<'_>,
        posting: &str,
        fingerprint: String,
    ) -> Result<String, LedgerError> {
        let request = &write.request;
        let plugin_id = write.plugin_id;
        let named = match self.named.get(posting) {
            Some(named) if named.plugin_id.as_deref() == Some(plugin_id) => named.clone(),
            _ => return Err(LedgerError::PostingNotFound),
        };
        if let Some(reversal) = self.remembered(request, &fingerprint)? {
            return Ok(reversal);
        }
        if self.reversed.contains(posting) {
            return Err(LedgerError::AlreadyReversed);
        }
        let region = named.region.clone().unwrap_or_default();
        let reversal = match named.kind.as_str() {
            "spend" | "capture" => {
                let reversal = self.post(
                    request,
                    Movement {
                        kind: "reverse",
                        from: &named.to,
                        to: &named.from,
                        amount: named.amount,
                        plugin: Some((plugin_id, &region)),
                        reverses: Some(posting),
                    },
                )?;
                // The points go back into the lots they came from, with their expiry.
                let moves = self.named_moves.get(posting).cloned().unwrap_or_default();
                for (lot, moved) in moves {
                    let before = self
                        .lots
                        .get(&lot)
                        .map(|lot| lot.remaining)
                        .ok_or_else(|| bug(format!("lot {lot} was not loaded")))?;
                    self.change_lot(&lot, before + moved);
                }
                reversal
            }
            "award" => {
                let account = named.to.clone();
                let (mut lots, available) = self.spendable(&account, request.now_ms);
                // The award's own lot first.
                lots.sort_by_key(|lot| {
                    self.lots
                        .get(lot)
                        .is_none_or(|lot| lot.award_posting != posting)
                });
                let clawed = named.amount.min(available.max(0));
                let owed = named.amount - clawed;
                let reversal = if clawed > 0 {
                    let reversal = self.post(
                        request,
                        Movement {
                            kind: "reverse",
                            from: &account,
                            to: &named.from,
                            amount: clawed,
                            plugin: Some((plugin_id, &region)),
                            reverses: Some(posting),
                        },
                    )?;
                    self.take_from_lots(&reversal, &lots, clawed)?;
                    reversal
                } else {
                    // Nothing to move, and an empty posting is not allowed: the reversal is
                    // only the record of what is owed.
                    request.new_id()
                };
                self.new_clawbacks
                    .push((reversal.clone(), posting.to_owned(), clawed, owed));
                reversal
            }
            other => return Err(LedgerError::NotReversible(other.to_owned())),
        };
        self.reversed.insert(posting.to_owned());
        self.undo.push(Undo::Reversed {
            posting: posting.to_owned(),
        });
        self.remember(request, fingerprint, &reversal);
        Ok(reversal)
    }

    /// The earlier result of this exact request; an error if the key was used for another.
    fn remembered(
        &self,
        request: &Request<'_>,
        fingerprint: &str,
    ) -> Result<Option<String>, LedgerError> {
        match self
            .keys
            .get(&(request.scope.to_owned(), request.key.to_owned()))
        {
            None => Ok(None),
            Some(record) if record.fingerprint == fingerprint => Ok(Some(record.result.clone())),
            Some(_) => Err(LedgerError::ExistsWithDifferentAmount(
                request.key.to_owned(),
            )),
        }
    }

    fn remember(&mut self, request: &Request<'_>, fingerprint: String, result: &str) {
        let (scope, key) = (request.scope.to_owned(), request.key.to_owned());
        self.keys.insert(
            (scope.clone(), key.clone()),
            KeyRecord {
                fingerprint,
                result: result.to_owned(),
                stored: false,
            },
        );
        self.undo.push(Undo::Key { scope, key });
    }

    fn balance(&self, account: &str) -> Result<i64, LedgerError> {
        self.accounts
            .get(account)
            .map(|(balance, _)| *balance)
            .ok_or_else(|| bug(format!("{account} was not locked")))
    }

    fn add_balance(&mut self, account: &str, delta: i64) -> Result<(), LedgerError> {
        let (balance, _) = self
            .accounts
            .get_mut(account)
            .ok_or_else(|| bug(format!("{account} was not locked")))?;
        *balance = balance
            .checked_add(delta)
            .ok_or_else(|| LedgerError::BalanceOverflow(account.to_owned()))?;
        self.undo.push(Undo::Balance {
            account: account.to_owned(),
            delta,
        });
        Ok(())
    }

    /// Records a posting and moves its amount between the two balances.
    fn post(
        &mut self,
        request: &Request<'_>,
        movement: Movement<'_>,
    ) -> Result<String, LedgerError> {
        debug_assert!(movement.amount > 0, "postings move positive amounts");
        self.add_balance(movement.from, -movement.amount)?;
        self.add_balance(movement.to, movement.amount)?;
        let id = request.new_id();
        let (plugin_id, region) = movement.plugin.unzip();
        self.new_postings.push(NewPosting {
            id: id.clone(),
            created_at_ms: request.now_ms,
            kind: movement.kind,
            from: movement.from.to_owned(),
            to: movement.to.to_owned(),
            amount: movement.amount,
            plugin_id: plugin_id.map(str::to_owned),
            region: region.map(str::to_owned),
            memo: request.memo.to_owned(),
            reverses: movement.reverses.map(str::to_owned),
        });
        Ok(id)
    }

    /// The customer's loaded spendable lots (earliest-expiring first) and how many points are
    /// available: what all unexpired lots hold minus open, unexpired holds.
    fn spendable(&self, account: &str, now_ms: i64) -> (Vec<String>, i64) {
        let lots: Vec<String> = self
            .lots_by_account
            .get(account)
            .into_iter()
            .flatten()
            .filter(|id| {
                self.lots
                    .get(*id)
                    .is_some_and(|lot| lot.remaining > 0 && lot.expires_at_ms > now_ms)
            })
            .cloned()
            .collect();
        // Every lot that expired between `now_min` and `now` is loaded: take them out of the
        // total.
        let lapsed: i64 = self
            .lots_by_account
            .get(account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.lots.get(id))
            .filter(|lot| lot.expires_at_ms > self.now_min && lot.expires_at_ms <= now_ms)
            .map(|lot| lot.remaining)
            .sum();
        let in_lots = self.unexpired.get(account).copied().unwrap_or_default() - lapsed;
        let held: i64 = self
            .holds_by_account
            .get(account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.holds.get(id))
            .filter(|hold| holding(hold, now_ms))
            .map(|hold| hold.amount)
            .sum();
        (lots, in_lots - held)
    }

    /// Moves `amount` of the customer's available points to `sink`, from the
    /// earliest-expiring lots.
    fn spend_from_lots(
        &mut self,
        request: &Request<'_>,
        account: &str,
        sink: &str,
        plugin: (&str, &str),
        amount: i64,
        kind: &'static str,
    ) -> Result<String, LedgerError> {
        let (lots, available) = self.spendable(account, request.now_ms);
        if available < amount {
            return Err(LedgerError::PointsInsufficient {
                available: available.max(0),
                requested: amount,
            });
        }
        let posting = self.post(
            request,
            Movement {
                kind,
                from: account,
                to: sink,
                amount,
                plugin: Some(plugin),
                reverses: None,
            },
        )?;
        self.take_from_lots(&posting, &lots, amount)?;
        Ok(posting)
    }

    /// Takes `amount` from `lots` in order, recording the moves under `posting`.
    fn take_from_lots(
        &mut self,
        posting: &str,
        lots: &[String],
        mut amount: i64,
    ) -> Result<(), LedgerError> {
        for lot in lots {
            if amount == 0 {
                break;
            }
            let remaining = self
                .lots
                .get(lot)
                .map(|lot| lot.remaining)
                .ok_or_else(|| bug(format!("lot {lot} was not loaded")))?;
            let taken = amount.min(remaining);
            if taken == 0 {
                continue;
            }
            amount -= taken;
            self.change_lot(lot, remaining - taken);
            self.new_moves
                .push((posting.to_owned(), lot.clone(), taken));
        }
        if amount != 0 {
            return Err(bug(format!(
                "the lots fell {amount} short of posting {posting}"
            )));
        }
        Ok(())
    }

    /// Sets a lot's remaining points, keeping its customer's unexpired total; returns what it
    /// was.
    fn set_lot_remaining(&mut self, id: &str, remaining: i64) -> i64 {
        let Some(lot) = self.lots.get_mut(id) else {
            return remaining;
        };
        let before = std::mem::replace(&mut lot.remaining, remaining);
        if lot.expires_at_ms > self.now_min {
            *self.unexpired.entry(lot.account.clone()).or_default() += remaining - before;
        }
        before
    }

    /// [`Batch::set_lot_remaining`], undoably.
    fn change_lot(&mut self, id: &str, remaining: i64) {
        let before = self.set_lot_remaining(id, remaining);
        self.undo.push(Undo::LotRemaining {
            lot: id.to_owned(),
            before,
        });
    }

    fn create_lot(&mut self, lot: Lot) {
        let id = new_id();
        let lots = &self.lots;
        let ids = self.lots_by_account.entry(lot.account.clone()).or_default();
        let position = ids.partition_point(|other| {
            lots.get(other).is_some_and(|o| {
                (o.expires_at_ms, other.as_str()) < (lot.expires_at_ms, id.as_str())
            })
        });
        ids.insert(position, id.clone());
        let remaining = lot.remaining;
        self.lots.insert(
            id.clone(),
            Lot {
                remaining: 0,
                ..lot
            },
        );
        self.set_lot_remaining(&id, remaining);
        self.undo.push(Undo::LotCreated { lot: id });
    }

    /// The hold `id` of `plugin_id`.
    fn hold_of(&self, plugin_id: &str, id: &str) -> Result<Hold, LedgerError> {
        match self.holds.get(id) {
            Some(hold) if hold.plugin_id == plugin_id => Ok(hold.clone()),
            _ => Err(LedgerError::HoldNotFound),
        }
    }

    fn set_hold(&mut self, id: &str, hold: Hold) {
        let account = hold.account.clone();
        let before = self.holds.insert(id.to_owned(), hold);
        if before.is_none() {
            self.holds_by_account
                .entry(account)
                .or_default()
                .push(id.to_owned());
        }
        self.undo.push(Undo::Hold {
            hold: id.to_owned(),
            before,
        });
    }

    /// Writes what the applied writes did.
    pub async fn flush(self, conn: &mut Conn<'_>) -> Result<(), sqlx::Error> {
        let changes = Changes::of(&self);
        match conn {
            Conn::Postgres(c) => changes.write_postgres(c).await,
            Conn::Sqlite(_) => changes.write(conn).await,
        }
    }
}

/// The id, status and capture posting columns of holds.
type HoldColumns<'h> = (Vec<&'h str>, Vec<&'h str>, Vec<Option<&'h str>>);

/// What a batch changed, table by table, ready to be written.
struct Changes<'a> {
    postings: &'a [NewPosting],
    /// (account, balance change).
    deltas: Vec<(&'a String, i64)>,
    new_lots: Vec<(&'a String, &'a Lot)>,
    /// (lot, remaining now).
    changed_lots: Vec<(&'a String, i64)>,
    moves: &'a [(String, String, i64)],
    new_holds: Vec<(&'a String, &'a Hold)>,
    /// Stored holds that were resolved: they only ever change status (and gain a capture
    /// posting).
    resolved_holds: Vec<(&'a String, &'a Hold)>,
    clawbacks: &'a [(String, String, i64, i64)],
    new_keys: Vec<(&'a (String, String), &'a KeyRecord)>,
}

impl<'a> Changes<'a> {
    fn of(batch: &'a Batch) -> Self {
        Changes {
            postings: &batch.new_postings,
            deltas: batch
                .accounts
                .iter()
                .filter(|(_, (now, stored))| now != stored)
                .map(|(id, (now, stored))| (id, now - stored))
                .collect(),
            new_lots: batch
                .lots
                .iter()
                .filter(|(_, lot)| lot.stored.is_none())
                .collect(),
            changed_lots: batch
                .lots
                .iter()
                .filter(|(_, lot)| lot.stored.is_some_and(|stored| stored != lot.remaining))
                .map(|(id, lot)| (id, lot.remaining))
                .collect(),
            moves: &batch.new_moves,
            new_holds: batch
                .holds
                .iter()
                .filter(|(_, hold)| hold.stored.is_none())
                .collect(),
            resolved_holds: batch
                .holds
                .iter()
                .filter(|(_, hold)| {
                    hold.stored
                        .as_ref()
                        .is_some_and(|stored| *stored != hold.status)
                })
                .collect(),
            clawbacks: &batch.new_clawbacks,
            new_keys: batch
                .keys
                .iter()
                .filter(|(_, record)| !record.stored)
                .collect(),
        }
    }

    /// Writes the changes with a few multi-row statements per table (SQLite).
    async fn write(self, conn: &mut Conn<'_>) -> Result<(), sqlx::Error> {
        // Postings first: lots, moves, holds and clawbacks refer to them.
        execute_rows!(
            conn,
            self.postings,
            "INSERT INTO ledger_postings (id, created_at_ms, kind, from_account, \
                     to_account, amount, plugin_id, region, memo, reverses) ",
            |row, p| row
                .push_bind(&p.id)
                .push_bind(p.created_at_ms)
                .push_bind(p.kind)
                .push_bind(&p.from)
                .push_bind(&p.to)
                .push_bind(p.amount)
                .push_bind(&p.plugin_id)
                .push_bind(&p.region)
                .push_bind(&p.memo)
                .push_bind(&p.reverses),
        );
        execute_rows!(
            conn,
            &self.deltas,
            "WITH d (id, delta) AS (",
            |row, (id, delta)| row.push_bind(*id).push_bind(*delta),
            ") UPDATE ledger_accounts SET balance = ledger_accounts.balance + d.delta \
                     FROM d WHERE ledger_accounts.id = d.id",
        );
        execute_rows!(
            conn,
            &self.new_lots,
            "INSERT INTO ledger_lots (id, account_id, award_posting, amount, remaining, \
                     expires_at_ms) ",
            |row, (id, lot)| row
                .push_bind(*id)
                .push_bind(&lot.account)
                .push_bind(&lot.award_posting)
                .push_bind(lot.amount)
                .push_bind(lot.remaining)
                .push_bind(lot.expires_at_ms),
        );
        execute_rows!(
            conn,
            &self.changed_lots,
            "WITH d (id, remaining) AS (",
            |row, (id, remaining)| row.push_bind(*id).push_bind(*remaining),
            ") UPDATE ledger_lots SET remaining = d.remaining FROM d \
                     WHERE ledger_lots.id = d.id",
        );
        execute_rows!(
            conn,
            self.moves,
            "INSERT INTO ledger_lot_moves (posting_id, lot_id, amount) ",
            |row, (posting, lot, amount)| row.push_bind(posting).push_bind(lot).push_bind(*amount),
        );
        execute_rows!(
            conn,
            &self.new_holds,
            "INSERT INTO ledger_holds (id, account_id, plugin_id, region, amount, \
                     created_at_ms, expires_at_ms, status, capture_posting) ",
            |row, (id, hold)| row
                .push_bind(*id)
                .push_bind(&hold.account)
                .push_bind(&hold.plugin_id)
                .push_bind(&hold.region)
                .push_bind(hold.amount)
                .push_bind(hold.created_at_ms)
                .push_bind(hold.expires_at_ms)
                .push_bind(&hold.status)
                .push_bind(&hold.capture_posting),
        );
        execute_rows!(
            conn,
            &self.resolved_holds,
            "WITH d (id, status, capture_posting) AS (",
            |row, (id, hold)| row
                .push_bind(*id)
                .push_bind(&hold.status)
                .push_bind(&hold.capture_posting),
            ") UPDATE ledger_holds SET status = d.status, \
                     capture_posting = d.capture_posting FROM d \
                     WHERE ledger_holds.id = d.id AND ledger_holds.status IN ('open', 'expired')",
        );
        execute_rows!(
            conn,
            self.clawbacks,
            "INSERT INTO ledger_clawbacks (reversal_posting, original_posting, clawed, owed) ",
            |row, (reversal, original, clawed, owed)| row
                .push_bind(reversal)
                .push_bind(original)
                .push_bind(*clawed)
                .push_bind(*owed),
        );
        execute_rows!(
            conn,
            &self.new_keys,
            "INSERT INTO ledger_idempotency (scope, key, fingerprint, result) ",
            |row, ((scope, key), record)| row
                .push_bind(scope)
                .push_bind(key)
                .push_bind(&record.fingerprint)
                .push_bind(&record.result),
        );
        Ok(())
    }

    /// Writes the changes in one statement (PostgreSQL): every table's rows arrive as arrays,
    /// one per column, and each table is written by one part of the statement, so a batch of
    /// any size is one round trip and one statement text, planned once. The parts run
    /// together; the foreign keys between them are checked when the statement ends. Each
    /// update also names its rows with `id = ANY(...)`, so it finds them through the primary
    /// key whatever the planner's statistics say (joined to the arrays alone, a table whose
    /// statistics lag behind its growth was planned as a full scan).
    async fn write_postgres(self, c: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let p = self.postings;
        fn hold<'h>(rows: &[(&'h String, &'h Hold)]) -> HoldColumns<'h> {
            let ids = rows.iter().map(|(id, _)| id.as_str()).collect();
            let statuses = rows.iter().map(|(_, h)| h.status.as_str()).collect();
            let captures = rows
                .iter()
                .map(|(_, h)| h.capture_posting.as_deref())
                .collect();
            (ids, statuses, captures)
        }
        let (new_hold_ids, new_hold_statuses, new_hold_captures) = hold(&self.new_holds);
        let (resolved_ids, resolved_statuses, resolved_captures) = hold(&self.resolved_holds);
        sqlx::query(
            "WITH postings AS (INSERT INTO ledger_postings (id, created_at_ms, kind, \
             from_account, to_account, amount, plugin_id, region, memo, reverses) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[])), \
             balances AS (UPDATE ledger_accounts SET balance = ledger_accounts.balance + d.delta \
             FROM unnest($11::text[], $12::bigint[]) AS d (id, delta) \
             WHERE ledger_accounts.id = d.id AND ledger_accounts.id = ANY($11)), \
             lots AS (INSERT INTO ledger_lots (id, account_id, award_posting, amount, \
             remaining, expires_at_ms) SELECT * FROM unnest($13::text[], $14::text[], \
             $15::text[], $16::bigint[], $17::bigint[], $18::bigint[])), \
             remaining AS (UPDATE ledger_lots SET remaining = d.remaining \
             FROM unnest($19::text[], $20::bigint[]) AS d (id, remaining) \
             WHERE ledger_lots.id = d.id AND ledger_lots.id = ANY($19)), \
             moves AS (INSERT INTO ledger_lot_moves (posting_id, lot_id, amount) \
             SELECT * FROM unnest($21::text[], $22::text[], $23::bigint[])), \
             holds AS (INSERT INTO ledger_holds (id, account_id, plugin_id, region, amount, \
             created_at_ms, expires_at_ms, status, capture_posting) \
             SELECT * FROM unnest($24::text[], $25::text[], $26::text[], $27::text[], \
             $28::bigint[], $29::bigint[], $30::bigint[], $31::text[], $32::text[])), \
             resolved AS (UPDATE ledger_holds SET status = d.status, \
             capture_posting = d.capture_posting \
             FROM unnest($33::text[], $34::text[], $35::text[]) AS d (id, status, capture_posting) \
             WHERE ledger_holds.id = d.id AND ledger_holds.id = ANY($33) \
             AND ledger_holds.status IN ('open', 'expired')), \
             clawbacks AS (INSERT INTO ledger_clawbacks (reversal_posting, original_posting, \
             clawed, owed) SELECT * FROM unnest($36::text[], $37::text[], $38::bigint[], \
             $39::bigint[])) \
             INSERT INTO ledger_idempotency (scope, key, fingerprint, result) \
             SELECT * FROM unnest($40::text[], $41::text[], $42::text[], $43::text[])",
        )
        .bind(p.iter().map(|p| p.id.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.created_at_ms).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.kind).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.from.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.to.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.amount).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.plugin_id.as_deref()).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.region.as_deref()).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.memo.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.reverses.as_deref()).collect::<Vec<_>>())
        .bind(
            self.deltas
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.deltas
                .iter()
                .map(|(_, delta)| *delta)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_lots
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_lots
                .iter()
                .map(|(_, l)| l.account.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_lots
                .iter()
                .map(|(_, l)| l.award_posting.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_lots
                .iter()
                .map(|(_, l)| l.amount)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_lots
                .iter()
                .map(|(_, l)| l.remaining)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_lots
                .iter()
                .map(|(_, l)| l.expires_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.changed_lots
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.changed_lots
                .iter()
                .map(|(_, r)| *r)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.moves
                .iter()
                .map(|(p, _, _)| p.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.moves
                .iter()
                .map(|(_, l, _)| l.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(self.moves.iter().map(|(_, _, a)| *a).collect::<Vec<_>>())
        .bind(new_hold_ids)
        .bind(
            self.new_holds
                .iter()
                .map(|(_, h)| h.account.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_holds
                .iter()
                .map(|(_, h)| h.plugin_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_holds
                .iter()
                .map(|(_, h)| h.region.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_holds
                .iter()
                .map(|(_, h)| h.amount)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_holds
                .iter()
                .map(|(_, h)| h.created_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_holds
                .iter()
                .map(|(_, h)| h.expires_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(new_hold_statuses)
        .bind(new_hold_captures)
        .bind(resolved_ids)
        .bind(resolved_statuses)
        .bind(resolved_captures)
        .bind(
            self.clawbacks
                .iter()
                .map(|(r, _, _, _)| r.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.clawbacks
                .iter()
                .map(|(_, o, _, _)| o.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.clawbacks
                .iter()
                .map(|(_, _, c, _)| *c)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.clawbacks
                .iter()
                .map(|(_, _, _, o)| *o)
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_keys
                .iter()
                .map(|((s, _), _)| s.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_keys
                .iter()
                .map(|((_, k), _)| k.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_keys
                .iter()
                .map(|(_, r)| r.fingerprint.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            self.new_keys
                .iter()
                .map(|(_, r)| r.result.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(c)
        .await?;
        Ok(())
    }
}

/// A hold that can still be captured or released.
/// Whether `hold` still holds its points at `now_ms`: not captured or released, and not
/// lapsed then. One the sweep labelled expired still holds for a call made before it lapsed
/// (the sweep's clock, maybe another host's, can run ahead of the call's).
fn holding(hold: &Hold, now_ms: i64) -> bool {
    matches!(hold.status.as_str(), "open" | "expired") && hold.expires_at_ms > now_ms
}

/// [`holding`], or the error saying why not.
fn open(hold: &Hold, now_ms: i64) -> Result<(), LedgerError> {
    if holding(hold, now_ms) {
        return Ok(());
    }
    let status = if hold.status == "open" {
        "expired"
    } else {
        hold.status.as_str()
    };
    Err(LedgerError::HoldAlreadyResolved(status.to_owned()))
}

/// Locks `accounts` (sorted) until the transaction ends, creating those that do not exist,
/// and returns their balances: an upsert that changes nothing takes the row lock on
/// PostgreSQL (and SQLite's one writer holds the whole database).
async fn lock(
    conn: &mut Conn<'_>,
    accounts: &[String],
) -> Result<HashMap<String, (i64, i64)>, sqlx::Error> {
    let mut balances = HashMap::with_capacity(accounts.len());
    for chunk in conn.statement_chunks(accounts) {
        let rows: Vec<(String, i64)> = with_conn!(conn.reborrow(), c => {
            let mut query = sqlx::QueryBuilder::new("INSERT INTO ledger_accounts (id, kind) ");
            query.push_values(chunk, |mut row, id| {
                row.push_bind(id).push_bind(Account::kind_of(id));
            });
            query.push(
                " ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance \
                 RETURNING id, balance",
            );
            query.build_query_as().fetch_all(&mut *c).await?
        });
        balances.extend(
            rows.into_iter()
                .map(|(id, balance)| (id, (balance, balance))),
        );
    }
    Ok(balances)
}

/// The owner (account, plugin, region) of each hold in `ids` that exists.
async fn hold_owners(
    conn: &mut Conn<'_>,
    ids: &[String],
) -> Result<HashMap<String, (String, String, String)>, sqlx::Error> {
    let rows = select_in!(
        conn,
        (String, String, String, String),
        "SELECT id, account_id, plugin_id, region FROM ledger_holds WHERE id IN (",
        ids
    );
    Ok(rows
        .into_iter()
        .map(|(id, account, plugin, region)| (id, (account, plugin, region)))
        .collect())
}

/// The postings in `ids` that exist.
async fn named_postings(
    conn: &mut Conn<'_>,
    ids: &[String],
) -> Result<HashMap<String, Named>, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
    );
    let rows = select_in!(
        conn,
        Row,
        "SELECT id, kind, from_account, to_account, amount, plugin_id, region \
         FROM ledger_postings WHERE id IN (",
        ids
    );
    Ok(rows
        .into_iter()
        .map(|(id, kind, from, to, amount, plugin_id, region)| {
            (
                id,
                Named {
                    kind,
                    from,
                    to,
                    amount,
                    plugin_id,
                    region,
                },
            )
        })
        .collect())
}

/// The lots each posting in `ids` took points from.
async fn lot_moves(
    conn: &mut Conn<'_>,
    ids: &[String],
) -> Result<HashMap<String, Vec<(String, i64)>>, sqlx::Error> {
    let rows = select_in!(
        conn,
        (String, String, i64),
        "SELECT posting_id, lot_id, amount FROM ledger_lot_moves WHERE posting_id IN (",
        ids
    );
    let mut moves: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for (posting, lot, amount) in rows.into_iter().collect::<HashSet<_>>() {
        moves.entry(posting).or_default().push((lot, amount));
    }
    Ok(moves)
}

/// The postings in `ids` that were reversed.
async fn reversed(conn: &mut Conn<'_>, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    let by_posting = select_in!(
        conn,
        (String,),
        "SELECT reverses FROM ledger_postings WHERE reverses IN (",
        ids
    );
    let by_clawback = select_in!(
        conn,
        (String,),
        "SELECT original_posting FROM ledger_clawbacks WHERE original_posting IN (",
        ids
    );
    Ok(by_posting
        .into_iter()
        .chain(by_clawback)
        .map(|(id,)| id)
        .collect())
}

/// The stored (key, fingerprint, result) of those of `keys` used in `scope`.
///
/// On PostgreSQL each key is looked up on its own (`LATERAL ... OFFSET 0` keeps the lookup
/// from being planned as a join): `scope = ... AND key IN (...)` was planned, on statistics
/// not yet gathered about a fast-growing table, as a scan of every key of the scope.
async fn stored_keys(
    conn: &mut Conn<'_>,
    scope: &str,
    keys: &[String],
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    if let Conn::Postgres(c) = conn {
        return sqlx::query_as(
            "SELECT k.key, k.fingerprint, k.result FROM unnest($2::text[]) AS w (key) \
             CROSS JOIN LATERAL (SELECT key, fingerprint, result FROM ledger_idempotency \
             WHERE scope = $1 AND key = w.key OFFSET 0) AS k",
        )
        .bind(scope)
        .bind(keys)
        .fetch_all(&mut **c)
        .await;
    }
    Ok(select_in!(
        conn,
        (String, String, String),
        "SELECT key, fingerprint, result FROM ledger_idempotency WHERE key IN (",
        keys,
        (" AND scope = ", scope)
    ))
}

type LotRow = (String, String, String, i64, i64, i64);

/// The columns of a [`LotRow`].
const LOT_COLUMNS: &str = "id, account_id, award_posting, amount, remaining, expires_at_ms";

fn lot_from_row(
    (id, account, award_posting, amount, remaining, expires_at_ms): LotRow,
) -> (String, Lot) {
    (
        id,
        Lot {
            account,
            award_posting,
            amount,
            remaining,
            expires_at_ms,
            stored: Some(remaining),
        },
    )
}

/// The lots of each customer a batch of writes made up to `now_max` can need: every lot with
/// points left that expires by `now_max` (expired but not yet swept, or expiring while the
/// batch's calls ran), and the earliest-expiring lots after it, as many as the points the
/// batch may take from the customer (every lot holds at least one). Each part is an index
/// range scan: a customer with years of daily awards costs a few rows, not thousands.
///
/// On PostgreSQL one statement joins each customer to its two ranges (`LATERAL`): its text is
/// the same for any number of customers, so it is planned once, where the SQLite form, two
/// subqueries per customer, is a new statement for each count.
async fn spendable_lots(
    conn: &mut Conn<'_>,
    needs: &[(String, i64)],
    now_max: i64,
) -> Result<Vec<(String, Lot)>, sqlx::Error> {
    let rows: Vec<LotRow> = match conn {
        Conn::Postgres(c) => {
            let (accounts, counts): (Vec<&str>, Vec<i64>) = needs
                .iter()
                .map(|(account, need)| (account.as_str(), *need))
                .unzip();
            sqlx::query_as(&format!(
                "SELECT l.* FROM unnest($1::text[], $2::bigint[]) AS n (account, need) \
                 CROSS JOIN LATERAL (\
                 SELECT {LOT_COLUMNS} FROM ledger_lots WHERE remaining > 0 \
                 AND account_id = n.account AND expires_at_ms <= $3 \
                 UNION ALL (SELECT {LOT_COLUMNS} FROM ledger_lots WHERE remaining > 0 \
                 AND account_id = n.account AND expires_at_ms > $3 \
                 ORDER BY expires_at_ms, id LIMIT n.need)) AS l"
            ))
            .bind(accounts)
            .bind(counts)
            .bind(now_max)
            .fetch_all(&mut **c)
            .await?
        }
        Conn::Sqlite(c) => {
            let lot = format!(
                "SELECT {LOT_COLUMNS} FROM ledger_lots WHERE remaining > 0 AND account_id = "
            );
            let mut rows = Vec::new();
            // Two arms per customer, 64 customers a statement: SQLite allows 500 arms in one.
            for chunk in db::lookup_chunks(needs, 64) {
                let mut query = sqlx::QueryBuilder::new("");
                for (arm, (account, need)) in chunk.iter().enumerate() {
                    if arm > 0 {
                        query.push(" UNION ALL ");
                    }
                    query
                        .push(format!("SELECT * FROM ({lot}"))
                        .push_bind(account)
                        .push(" AND expires_at_ms <= ")
                        .push_bind(now_max)
                        .push(format!(") AS due{arm} UNION ALL SELECT * FROM ({lot}"))
                        .push_bind(account)
                        .push(" AND expires_at_ms > ")
                        .push_bind(now_max)
                        .push(" ORDER BY expires_at_ms, id LIMIT ")
                        .push_bind(*need)
                        .push(format!(") AS next{arm}"));
                }
                let found: Vec<LotRow> = query.build_query_as().fetch_all(&mut **c).await?;
                rows.extend(found);
            }
            rows
        }
    };
    Ok(rows.into_iter().map(lot_from_row).collect())
}

/// The lots in `ids`, and the lots of the awards in `awards`.
async fn named_lots(
    conn: &mut Conn<'_>,
    ids: &[String],
    awards: &[String],
) -> Result<Vec<(String, Lot)>, sqlx::Error> {
    let select = format!("SELECT {LOT_COLUMNS} FROM ledger_lots WHERE ");
    let mut rows: Vec<LotRow> = select_in!(conn, LotRow, format!("{select}id IN ("), ids);
    rows.extend(select_in!(
        conn,
        LotRow,
        format!("{select}award_posting IN ("),
        awards
    ));
    Ok(rows.into_iter().map(lot_from_row).collect())
}

/// The open, unexpired holds of `customers`, and the holds in `ids`.
async fn holds(
    conn: &mut Conn<'_>,
    customers: &[String],
    now_ms: i64,
    ids: &[String],
) -> Result<Vec<(String, Hold)>, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        i64,
        i64,
        String,
        Option<String>,
    );
    const COLUMNS: &str = "SELECT id, account_id, plugin_id, region, amount, created_at_ms, \
                           expires_at_ms, status, capture_posting FROM ledger_holds WHERE ";
    let mut rows = select_in!(
        conn,
        Row,
        format!("{COLUMNS}account_id IN ("),
        customers,
        (
            " AND status IN ('open', 'expired') AND expires_at_ms > ",
            now_ms
        )
    );
    rows.extend(select_in!(conn, Row, format!("{COLUMNS}id IN ("), ids));
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                account,
                plugin_id,
                region,
                amount,
                created_at_ms,
                expires_at_ms,
                status,
                capture_posting,
            )| {
                (
                    id,
                    Hold {
                        account,
                        plugin_id,
                        region,
                        amount,
                        created_at_ms,
                        expires_at_ms,
                        stored: Some(status.clone()),
                        status,
                        capture_posting,
                    },
                )
            },
        )
        .collect())
}
