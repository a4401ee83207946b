//! The `store` interface: each plugin's own key-value data, per region, in `store_entries`.
//!
//! A call never writes to the database while it runs. Its writes are buffered as a list of
//! operations and a view of the keys it touched, so its reads see its own writes; when the
//! call returns `ok`, the commit writer replays the operations in one transaction, re-checking
//! every `increment` bound and `compare-and-swap` expectation against what other calls
//! committed meanwhile. A failed check fails the whole call with `store_conflict`; a trap, an
//! error or a timeout simply drops the buffer. Nothing partial is ever visible.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::db::{Conn, Pool};

use crate::runtime::{HostFailure, LimitExceeded};

mod host;

/// Whose data a call works on: one plugin in one region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The plugin id.
    pub plugin_id: String,
    /// The region.
    pub region: String,
}

/// The size limits of a plugin's store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Bytes of one key.
    pub key_bytes_max: u64,
    /// Bytes of one value.
    pub value_bytes_max: u64,
    /// Keys per plugin and region.
    pub keys_max: u64,
    /// Keys one `list-keys` call returns.
    pub list_keys_max: u64,
    /// Bytes of values one `get-many` call returns (the call's memory limit: more could not
    /// fit in its memory).
    pub read_bytes_max: u64,
}

/// One buffered write, replayed in order at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store a value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Add to a counter, within bounds.
    Increment {
        /// The key.
        key: Vec<u8>,
        /// What to add.
        delta: i64,
        /// Smallest allowed result.
        min: i64,
        /// Largest allowed result.
        max: i64,
    },
    /// Replace a value only if it still equals `expected`.
    CompareAndSwap {
        /// The key.
        key: Vec<u8>,
        /// The value the call saw (`None`: absent).
        expected: Option<Vec<u8>>,
        /// The new value (`None`: delete).
        new: Option<Vec<u8>>,
    },
}

/// A call's writes, ready to commit.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// Whose data.
    pub scope: Option<Arc<Scope>>,
    /// The operations, in the order the plugin made them.
    pub ops: Vec<Op>,
    /// The plugin's key limit, checked again at commit.
    pub keys_max: u64,
    /// The call's ledger writes, in order.
    pub ledger: Vec<crate::ledger::BufferedOperation>,
    /// The call's time, for the ledger writes.
    pub now_ms: i64,
    /// The call's jobs: scheduled, cancelled, and the one it completes.
    pub jobs: crate::jobs::JobWrites,
    /// The analytics events the call emitted.
    pub events: Vec<crate::events::NewEvent>,
}

impl WriteSet {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.ledger.is_empty()
            && self.jobs.is_empty()
            && self.events.is_empty()
    }
}

/// One call's view of its store: the database plus its own buffered writes.
#[derive(Default)]
pub struct CallStore {
    db: Option<Pool>,
    scope: Option<Arc<Scope>>,
    limits: Option<StoreLimits>,
    /// Every key the call has read or written, with the value it now sees (`None`: absent).
    view: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ops: Vec<Op>,
    /// Keys the plugin had committed when the call first needed to know.
    keys_committed: Option<u64>,
    /// Keys the call's writes add (negative: remove), as far as it can see.
    keys_added: i64,
}

/// Why replaying a write set failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another call changed what an `increment` or `compare-and-swap` depended on.
    #[error("another call changed key {key:?} first")]
    Conflict {
        /// The key, lossily as text.
        key: String,
    },
    /// The writes would take the plugin past its key limit.
    #[error("more than {0} store keys")]
    KeyLimit(u64),
    /// A ledger rule no longer held at commit.
    #[error(transparent)]
    Ledger(crate::ledger::LedgerError),
    /// An idempotency key the call used was taken by another call first.
    #[error("idempotency key {0:?} was used by another call first")]
    KeyTaken(String),
    /// The call's jobs do not hold (the plugin's limit, or a lost lease).
    #[error("{0:?}")]
    Jobs(crate::jobs::JobConflict),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl CallStore {
    /// A view of `scope`'s data in `db`.
    pub fn new(db: Pool, scope: Arc<Scope>, limits: StoreLimits) -> Self {
        Self {
            db: Some(db),
            scope: Some(scope),
            limits: Some(limits),
            ..Self::default()
        }
    }

    /// The buffered writes.
    pub fn into_writes(self) -> WriteSet {
        WriteSet {
            scope: self.scope,
            ops: self.ops,
            keys_max: self.limits.map_or(0, |l| l.keys_max),
            ledger: Vec::new(),
            now_ms: 0,
            jobs: Default::default(),
            events: Vec::new(),
        }
    }

    fn limits(&self) -> StoreLimits {
        self.limits.expect("a call's store is built with limits")
    }

    fn scope(&self) -> Result<&Scope, HostFailure> {
        self.scope
            .as_deref()
            .ok_or_else(|| HostFailure("store used without a scope".into()))
    }

    /// A read connection and the scope.
    async fn reader(&self) -> Result<(crate::db::PooledConn, &Scope), HostFailure> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| HostFailure("store used without a database".into()))?;
        let connection = db.acquire().await.map_err(read_failure)?;
        Ok((connection, self.scope()?))
    }

    fn check_key(&self, key: &str) -> Result<(), LimitExceeded> {
        let max = self.limits().key_bytes_max;
        if key.len() as u64 > max {
            return Err(LimitExceeded::StoreKeyBytes(max));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), LimitExceeded> {
        let max = self.limits().value_bytes_max;
        if value.len() as u64 > max {
            return Err(LimitExceeded::StoreValueBytes(max));
        }
        Ok(())
    }

    /// The value the call currently sees under `key`.
    async fn current(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, HostFailure> {
        if let Some(value) = self.view.get(key) {
            return Ok(value.clone());
        }
        let (mut connection, scope) = self.reader().await?;
        let value = db::get(connection.conn(), scope, key)
            .await
            .map_err(read_failure)?;
        self.view.insert(key.to_vec(), value.clone());
        Ok(value)
    }

    /// Reads into the view those of `keys` it does not hold yet, with one query per
    /// [`READ_CHUNK`] keys. Stops with the memory limit once the values read pass
    /// `read_bytes_max`, so a plugin cannot make the host hold more than that.
    async fn load(&mut self, keys: &[Vec<u8>]) -> Result<(), wasmtime::Error> {
        let mut missing: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| !self.view.contains_key(*key))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        let max = self.limits().read_bytes_max;
        let mut read_bytes: u64 = 0;
        for chunk in missing.chunks(READ_CHUNK) {
            let (mut connection, scope) = self.reader().await?;
            let found = db::get_many(connection.conn(), scope, chunk)
                .await
                .map_err(read_failure)?;
            drop(connection);
            read_bytes += found
                .iter()
                .map(|(_, value)| value.len() as u64)
                .sum::<u64>();
            if read_bytes > max {
                return Err(LimitExceeded::Memory(max).into());
            }
            for key in chunk {
                self.view.insert(key.clone(), None);
            }
            for (key, value) in found {
                self.view.insert(key, Some(value));
            }
        }
        Ok(())
    }

    /// Records that the call now sees `new` under `key`, and counts keys it adds or removes.
    async fn see(&mut self, key: Vec<u8>, new: Option<Vec<u8>>) -> wasmtime::Result<()> {
        let old_present = self.current(&key).await?.is_some();
        let new_present = new.is_some();
        self.view.insert(key, new);
        match (old_present, new_present) {
            (false, true) => {
                self.keys_added += 1;
                let committed = match self.keys_committed {
                    Some(count) => count,
                    None => {
                        let (mut connection, scope) = self.reader().await?;
                        let count = db::key_count(connection.conn(), scope)
                            .await
                            .map_err(read_failure)?;
                        self.keys_committed = Some(count);
                        count
                    }
                };
                let max = self.limits().keys_max;
                if committed as i64 + self.keys_added > max as i64 {
                    return Err(LimitExceeded::StoreKeys(max).into());
                }
            }
            (true, false) => self.keys_added -= 1,
            _ => {}
        }
        Ok(())
    }
}

/// Keys one query of [`CallStore::load`] reads: at most this many values (each at most
/// `value_bytes_max`) are in the host's memory before the byte limit is checked.
const READ_CHUNK: usize = 64;

fn read_failure(error: sqlx::Error) -> HostFailure {
    HostFailure(format!("store read: {error}"))
}

/// The counter in `value`, if it holds one: ASCII decimal.
fn parse_counter(value: Option<&[u8]>) -> Option<i64> {
    match value {
        None => Some(0),
        Some(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
    }
}

/// The store data a batch of calls touches, and what applying their writes changed: the
/// store's half of the commit writer's batch (the ledger's is [`crate::ledger::Batch`]).
///
/// [`Staged::load`] locks each written scope's usage row (in order, so hosts sharing
/// PostgreSQL cannot deadlock) and reads the keys the writes name; [`Staged::apply`] replays
/// one call's operations in memory, re-checking every `increment` bound, `compare-and-swap`
/// expectation and the key limit; [`Staged::flush`] writes the result with a few multi-row
/// statements.
#[derive(Debug, Default)]
pub struct Staged {
    /// (scope, key) → (value now, value stored).
    entries: HashMap<(Arc<Scope>, Vec<u8>), (Value, Value)>,
    /// Scope → (keys now, keys stored).
    counts: HashMap<Arc<Scope>, (i64, i64)>,
    /// How to take back each change: the entry or count and its value before.
    undo: Vec<StoreUndo>,
}

/// A stored value, or `None` for an absent key.
type Value = Option<Vec<u8>>;

/// Rows to upsert: (key, value).
type Rows<'a> = Vec<(&'a [u8], &'a [u8])>;

#[derive(Debug)]
enum StoreUndo {
    Entry(Arc<Scope>, Vec<u8>, Option<Vec<u8>>),
    Count(Arc<Scope>, i64),
}

impl Staged {
    /// Locks the scopes `writes` write to and reads the keys they name, in `connection`'s
    /// transaction.
    pub async fn load(
        connection: &mut Conn<'_>,
        writes: &[&WriteSet],
    ) -> Result<Staged, sqlx::Error> {
        let mut staged = Staged::default();
        let mut keys: BTreeMap<Arc<Scope>, Vec<Vec<u8>>> = BTreeMap::new();
        for write in writes {
            if let Some(scope) = &write.scope
                && !write.ops.is_empty()
            {
                keys.entry(scope.clone())
                    .or_default()
                    .extend(write.ops.iter().map(|op| op.key().to_vec()));
            }
        }
        for (scope, mut scope_keys) in keys {
            let count = db::lock_usage(connection.reborrow(), &scope).await?;
            staged.counts.insert(scope.clone(), (count, count));
            scope_keys.sort();
            scope_keys.dedup();
            for key in &scope_keys {
                staged
                    .entries
                    .insert((scope.clone(), key.clone()), (None, None));
            }
            for (key, value) in db::get_many(connection.reborrow(), &scope, &scope_keys).await? {
                staged
                    .entries
                    .insert((scope.clone(), key), (Some(value.clone()), Some(value)));
            }
        }
        Ok(staged)
    }

    /// The point [`Staged::undo_to`] returns to.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Takes back everything applied since `mark`.
    pub fn undo_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            match self.undo.pop() {
                Some(StoreUndo::Entry(scope, key, before)) => {
                    if let Some((value, _)) = self.entries.get_mut(&(scope, key)) {
                        *value = before;
                    }
                }
                Some(StoreUndo::Count(scope, before)) => {
                    if let Some((count, _)) = self.counts.get_mut(&scope) {
                        *count = before;
                    }
                }
                None => break,
            }
        }
    }

    fn get(&self, scope: &Arc<Scope>, key: &[u8]) -> Option<&Vec<u8>> {
        self.entries
            .get(&(scope.clone(), key.to_vec()))
            .and_then(|(value, _)| value.as_ref())
    }

    fn set(&mut self, scope: &Arc<Scope>, key: &[u8], new: Option<Vec<u8>>) {
        let slot = self
            .entries
            .entry((scope.clone(), key.to_vec()))
            .or_default();
        let before = std::mem::replace(&mut slot.0, new);
        self.undo
            .push(StoreUndo::Entry(scope.clone(), key.to_vec(), before));
    }

    /// Replays `writes`' store operations, or returns why they no longer hold (the caller
    /// then undoes them).
    pub fn apply(&mut self, writes: &WriteSet) -> Result<(), ApplyError> {
        let Some(scope) = &writes.scope else {
            return Ok(());
        };
        if writes.ops.is_empty() {
            return Ok(());
        }
        let mut keys_added: i64 = 0;
        for op in &writes.ops {
            let current = self.get(scope, op.key()).cloned();
            let conflict = || ApplyError::Conflict {
                key: String::from_utf8_lossy(op.key()).into_owned(),
            };
            let new = match op {
                Op::Put { value, .. } => Some(value.clone()),
                Op::Delete { .. } => None,
                Op::Increment {
                    delta, min, max, ..
                } => {
                    let value = parse_counter(current.as_deref()).ok_or_else(conflict)?;
                    let new = value.checked_add(*delta).ok_or_else(conflict)?;
                    if new < *min || new > *max {
                        return Err(conflict());
                    }
                    Some(new.to_string().into_bytes())
                }
                Op::CompareAndSwap { expected, new, .. } => {
                    if current != *expected {
                        return Err(conflict());
                    }
                    new.clone()
                }
            };
            keys_added += i64::from(new.is_some()) - i64::from(current.is_some());
            self.set(scope, op.key(), new);
        }
        if keys_added != 0 {
            let (count, _) = self.counts.get_mut(scope).ok_or_else(|| {
                ApplyError::Database(sqlx::Error::Protocol("store scope not locked".into()))
            })?;
            let before = *count;
            *count += keys_added;
            let after = *count;
            self.undo.push(StoreUndo::Count(scope.clone(), before));
            if keys_added > 0 && after > writes.keys_max as i64 {
                return Err(ApplyError::KeyLimit(writes.keys_max));
            }
        }
        Ok(())
    }

    /// Writes what the applied operations changed.
    pub async fn flush(self, connection: &mut Conn<'_>) -> Result<(), sqlx::Error> {
        let mut puts: BTreeMap<&Arc<Scope>, Rows<'_>> = BTreeMap::new();
        let mut deletes: BTreeMap<&Arc<Scope>, Vec<Vec<u8>>> = BTreeMap::new();
        for ((scope, key), (value, stored)) in &self.entries {
            if value == stored {
                continue;
            }
            match value {
                Some(value) => puts.entry(scope).or_default().push((key, value)),
                None => deletes.entry(scope).or_default().push(key.clone()),
            }
        }
        for (scope, rows) in puts {
            db::put_many(connection.reborrow(), scope, &rows).await?;
        }
        for (scope, keys) in deletes {
            db::delete_many(connection.reborrow(), scope, &keys).await?;
        }
        for (scope, (count, stored)) in &self.counts {
            if count != stored {
                db::set_key_count(connection.reborrow(), scope, *count).await?;
            }
        }
        Ok(())
    }
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Increment { key, .. }
            | Op::CompareAndSwap { key, .. } => key,
        }
    }
}

mod db {
    //! The queries behind the store, one text for both backends.

    use super::Scope;
    use crate::db::Conn;
    use crate::{execute_rows, select_in, with_conn};

    pub async fn get(
        conn: Conn<'_>,
        scope: &Scope,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        with_conn!(conn, c => {
            sqlx::query_scalar(
                "SELECT value FROM store_entries WHERE plugin_id = $1 AND region = $2 AND key = $3",
            )
            .bind(&scope.plugin_id)
            .bind(&scope.region)
            .bind(key)
            .fetch_optional(&mut *c)
            .await
        })
    }

    /// The values of those of `keys` that exist.
    pub async fn get_many(
        conn: Conn<'_>,
        scope: &Scope,
        keys: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, sqlx::Error> {
        let mut conn = conn;
        let found = select_in!(
            conn,
            (Vec<u8>, Vec<u8>),
            "SELECT key, value FROM store_entries WHERE key IN (",
            keys,
            (" AND plugin_id = ", &scope.plugin_id),
            (" AND region = ", &scope.region),
        );
        Ok(found)
    }

    pub async fn put_many(
        conn: Conn<'_>,
        scope: &Scope,
        rows: &[(&[u8], &[u8])],
    ) -> Result<(), sqlx::Error> {
        let mut conn = conn;
        execute_rows!(
            conn,
            rows,
            "INSERT INTO store_entries (plugin_id, region, key, value) ",
            |row, (key, value)| row
                .push_bind(&scope.plugin_id)
                .push_bind(&scope.region)
                .push_bind(*key)
                .push_bind(*value),
            " ON CONFLICT (plugin_id, region, key) DO UPDATE SET value = excluded.value",
        );
        Ok(())
    }

    pub async fn delete_many(
        conn: Conn<'_>,
        scope: &Scope,
        keys: &[Vec<u8>],
    ) -> Result<(), sqlx::Error> {
        let mut conn = conn;
        for chunk in crate::db::lookup_chunks(keys, crate::db::STATEMENT_ROWS[0]) {
            with_conn!(conn.reborrow(), c => {
                let mut query =
                    sqlx::QueryBuilder::new("DELETE FROM store_entries WHERE plugin_id = ");
                query
                    .push_bind(&scope.plugin_id)
                    .push(" AND region = ")
                    .push_bind(&scope.region)
                    .push(" AND key IN (");
                let mut list = query.separated(", ");
                for key in &chunk {
                    list.push_bind(key);
                }
                list.push_unseparated(")");
                query.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Keys in `[from, to)` (`to` = `None`: no upper bound), in byte order.
    pub async fn keys(
        conn: Conn<'_>,
        scope: &Scope,
        from: &[u8],
        to: Option<&[u8]>,
        limit: i64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        with_conn!(conn, c => {
            sqlx::query_scalar(
                "SELECT key FROM store_entries WHERE plugin_id = $1 AND region = $2 \
                 AND key >= $3 AND ($4 IS NULL OR key < $4) ORDER BY key LIMIT $5",
            )
            .bind(&scope.plugin_id)
            .bind(&scope.region)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&mut *c)
            .await
        })
    }

    pub async fn key_count(conn: Conn<'_>, scope: &Scope) -> Result<u64, sqlx::Error> {
        let count: Option<i64> = with_conn!(conn, c => {
            sqlx::query_scalar("SELECT key_count FROM store_usage WHERE plugin_id = $1 AND region = $2")
                .bind(&scope.plugin_id)
                .bind(&scope.region)
                .fetch_optional(&mut *c)
                .await?
        });
        Ok(count.unwrap_or(0).max(0) as u64)
    }

    /// Locks the scope's usage row until the transaction ends (creating it if needed) and
    /// returns its key count: an upsert that changes nothing takes the row lock on PostgreSQL.
    pub async fn lock_usage(conn: Conn<'_>, scope: &Scope) -> Result<i64, sqlx::Error> {
        with_conn!(conn, c => {
            sqlx::query_scalar(
                "INSERT INTO store_usage (plugin_id, region, key_count) VALUES ($1, $2, 0) \
                 ON CONFLICT (plugin_id, region) \
                 DO UPDATE SET key_count = store_usage.key_count RETURNING key_count",
            )
            .bind(&scope.plugin_id)
            .bind(&scope.region)
            .fetch_one(&mut *c)
            .await
        })
    }

    pub async fn set_key_count(
        conn: Conn<'_>,
        scope: &Scope,
        count: i64,
    ) -> Result<(), sqlx::Error> {
        with_conn!(conn, c => {
            sqlx::query("UPDATE store_usage SET key_count = $3 WHERE plugin_id = $1 AND region = $2")
                .bind(&scope.plugin_id)
                .bind(&scope.region)
                .bind(count)
                .execute(&mut *c)
                .await
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_ascii_decimal_and_missing_is_zero() {
        assert_eq!(parse_counter(None), Some(0));
        assert_eq!(parse_counter(Some(b"-42")), Some(-42));
        assert_eq!(parse_counter(Some(b"4x")), None);
        assert_eq!(parse_counter(Some(&[0xff])), None);
    }
}
