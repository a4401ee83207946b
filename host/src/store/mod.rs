//! The `store` interface: each plugin's own key-value data, per region, in `store_entries`.
//!
//! A call never writes to the database while it runs. Its writes are buffered as a list of
//! operations and a view of the keys it touched, so its reads see its own writes; when the
//! call returns `ok`, the commit writer replays the operations in one transaction, re-checking
//! every `increment` bound and `compare-and-swap` expectation against what other calls
//! committed meanwhile. A failed check fails the whole call with `store_conflict`; a trap, an
//! error or a timeout simply drops the buffer. Nothing partial is ever visible.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::db::{Conn, Pool};
use crate::runtime::{HostFailure, LimitExceeded};

mod host;

/// Whose data a call works on: one plugin in one region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
}

impl WriteSet {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.ledger.is_empty()
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

/// Replays `writes` on `connection`, which must be inside a transaction the caller rolls
/// back if this fails.
pub async fn apply(connection: &mut Conn<'_>, writes: &WriteSet) -> Result<(), ApplyError> {
    let Some(scope) = &writes.scope else {
        return Ok(());
    };
    let mut keys_added: i64 = 0;
    for op in &writes.ops {
        match op {
            Op::Put { key, value } => {
                let existed = db::get(connection.reborrow(), scope, key).await?.is_some();
                db::put(connection.reborrow(), scope, key, value).await?;
                keys_added += i64::from(!existed);
            }
            Op::Delete { key } => {
                keys_added -= i64::from(db::delete(connection.reborrow(), scope, key).await?);
            }
            Op::Increment {
                key,
                delta,
                min,
                max,
            } => {
                let current = db::get(connection.reborrow(), scope, key).await?;
                let conflict = || ApplyError::Conflict {
                    key: String::from_utf8_lossy(key).into_owned(),
                };
                let value = parse_counter(current.as_deref()).ok_or_else(conflict)?;
                let new = value.checked_add(*delta).ok_or_else(conflict)?;
                if new < *min || new > *max {
                    return Err(conflict());
                }
                db::put(
                    connection.reborrow(),
                    scope,
                    key,
                    new.to_string().as_bytes(),
                )
                .await?;
                keys_added += i64::from(current.is_none());
            }
            Op::CompareAndSwap { key, expected, new } => {
                let current = db::get(connection.reborrow(), scope, key).await?;
                if current != *expected {
                    return Err(ApplyError::Conflict {
                        key: String::from_utf8_lossy(key).into_owned(),
                    });
                }
                match new {
                    Some(value) => db::put(connection.reborrow(), scope, key, value).await?,
                    None => {
                        db::delete(connection.reborrow(), scope, key).await?;
                    }
                }
                keys_added += i64::from(new.is_some()) - i64::from(current.is_some());
            }
        }
    }
    if keys_added != 0 {
        let count = db::add_key_count(connection.reborrow(), scope, keys_added).await?;
        if count > writes.keys_max as i64 && keys_added > 0 {
            return Err(ApplyError::KeyLimit(writes.keys_max));
        }
    }
    apply_ledger(connection, scope, writes).await
}

/// Replays the call's ledger writes; each must create what the plugin was told it created.
async fn apply_ledger(
    connection: &mut Conn<'_>,
    scope: &Scope,
    writes: &WriteSet,
) -> Result<(), ApplyError> {
    use crate::ledger::{LedgerError, Operation, Request};
    for buffered in &writes.ledger {
        let request = Request {
            scope: &scope.plugin_id,
            key: &buffered.key,
            now_ms: writes.now_ms,
            memo: &buffered.memo,
            id: Some(&buffered.id),
        };
        let expected = match &buffered.operation {
            Operation::Release { hold } => hold,
            _ => &buffered.id,
        };
        match crate::ledger::apply(
            connection,
            &request,
            &scope.plugin_id,
            &scope.region,
            &buffered.operation,
        )
        .await
        {
            Ok(created) if created == *expected => {}
            Ok(_) => return Err(ApplyError::KeyTaken(buffered.key.clone())),
            Err(LedgerError::Database(error)) => return Err(ApplyError::Database(error)),
            Err(rule) => return Err(ApplyError::Ledger(rule)),
        }
    }
    Ok(())
}

mod db {
    //! The queries behind the store, one text for both backends.

    use super::Scope;
    use crate::db::Conn;
    use crate::with_conn;

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

    pub async fn put(
        conn: Conn<'_>,
        scope: &Scope,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), sqlx::Error> {
        with_conn!(conn, c => {
            sqlx::query(
                "INSERT INTO store_entries (plugin_id, region, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (plugin_id, region, key) DO UPDATE SET value = excluded.value",
            )
            .bind(&scope.plugin_id)
            .bind(&scope.region)
            .bind(key)
            .bind(value)
            .execute(&mut *c)
            .await
            .map(drop)
        })
    }

    /// Deletes `key`; returns whether it was there.
    pub async fn delete(conn: Conn<'_>, scope: &Scope, key: &[u8]) -> Result<bool, sqlx::Error> {
        let rows = with_conn!(conn, c => {
            sqlx::query("DELETE FROM store_entries WHERE plugin_id = $1 AND region = $2 AND key = $3")
                .bind(&scope.plugin_id)
                .bind(&scope.region)
                .bind(key)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        Ok(rows > 0)
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

    /// Adds `delta` to the plugin's key count and returns the new count.
    pub async fn add_key_count(
        conn: Conn<'_>,
        scope: &Scope,
        delta: i64,
    ) -> Result<i64, sqlx::Error> {
        with_conn!(conn, c => {
            sqlx::query_scalar(
                "INSERT INTO store_usage (plugin_id, region, key_count) VALUES ($1, $2, $3) \
                 ON CONFLICT (plugin_id, region) \
                 DO UPDATE SET key_count = store_usage.key_count + excluded.key_count \
                 RETURNING key_count",
            )
            .bind(&scope.plugin_id)
            .bind(&scope.region)
            .bind(delta)
            .fetch_one(&mut *c)
            .await
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
