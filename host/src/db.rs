//! The database: SQLite (one file in WAL mode with full fsync on commit, the embedded default)
//! or PostgreSQL (`postgres://`, the scale-out backend shared by several hosts).
//!
//! Each query is written once, with `$1`-style placeholders that both backends understand, and
//! run on whichever backend is configured through [`with_conn!`](crate::with_conn), which expands the query code
//! once per backend so each expansion is checked against that backend's types. Migrations are
//! kept per backend in `host/migrations/{sqlite,postgres}` because their DDL differs.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use crate::config::SqliteConfig;

/// A pool of connections to one backend.
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// SQLite connections that only read (see [`Readers`]).
    SqliteReaders(Arc<Readers>),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Read-only SQLite connections, handed out and taken back without a round trip to the
/// connection's thread. sqlx's pool pings a connection when it is taken and again when it is
/// given back, so a one-statement read cost three trips to the connection's thread and two
/// thread wake-ups each; reads are most of what a scenario call does to the database. A read
/// connection never holds a transaction, so one given back mid-statement (its future dropped)
/// simply finishes that statement before the next.
#[derive(Debug)]
pub struct Readers {
    idle: Mutex<Vec<SqliteConnection>>,
    permits: Arc<tokio::sync::Semaphore>,
    count: u32,
}

/// How long a read waits for a free connection before it fails (sqlx's pool default).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection taken from [`Readers`]; given back on drop.
#[derive(Debug)]
pub struct Reader {
    connection: Option<SqliteConnection>,
    readers: Arc<Readers>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !self.readers.permits.is_closed()
        {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(connection);
        }
    }
}

impl Readers {
    async fn open(options: &SqliteConnectOptions, count: u32) -> Result<Readers, sqlx::Error> {
        let mut idle = Vec::with_capacity(count as usize);
        for _ in 0..count {
            idle.push(SqliteConnection::connect_with(options).await?);
        }
        Ok(Readers {
            idle: Mutex::new(idle),
            permits: Arc::new(tokio::sync::Semaphore::new(count as usize)),
            count,
        })
    }

    async fn acquire(self: &Arc<Self>) -> Result<Reader, sqlx::Error> {
        use tokio::sync::TryAcquireError;
        // A free connection is taken without arming a timer.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(sqlx::Error::PoolClosed),
            Err(TryAcquireError::NoPermits) => {
                tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?
                    .map_err(|_| sqlx::Error::PoolClosed)?
            }
        };
        let connection = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .ok_or(sqlx::Error::PoolClosed)?;
        Ok(Reader {
            connection: Some(connection),
            readers: self.clone(),
            _permit: permit,
        })
    }

    /// Waits (as long as a read may wait) until every connection is given back, then closes
    /// them all. A connection is back in the set before its permit is released, so none is
    /// missed.
    async fn close(&self) {
        let given_back = self.permits.acquire_many(self.count);
        let _all = tokio::time::timeout(ACQUIRE_TIMEOUT, given_back).await;
        self.permits.close();
        let idle = std::mem::take(
            &mut *self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for connection in idle {
            let _ = connection.close().await;
        }
    }
}

/// A connection borrowed from a pool or a transaction.
pub enum Conn<'c> {
    /// SQLite.
    Sqlite(&'c mut SqliteConnection),
    /// PostgreSQL.
    Postgres(&'c mut PgConnection),
}

/// A connection taken from a [`Pool`], returned to it on drop.
pub enum PooledConn {
    /// SQLite.
    Sqlite(PoolConnection<Sqlite>),
    /// An SQLite read connection.
    SqliteReader(Reader),
    /// PostgreSQL.
    Postgres(PoolConnection<Postgres>),
}

/// An open transaction; rolled back on drop unless committed.
pub enum Transaction {
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Runs `$body` with `$c` bound to the concrete connection of a [`Conn`] (a `&mut
/// SqliteConnection` or a `&mut PgConnection`). The body is compiled once per backend.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite($c) => $body,
            $crate::db::Conn::Postgres($c) => $body,
        }
    };
}

/// Runs a multi-row statement over `rows`, one statement per [`Conn::statement_chunks`] chunk: `head`,
/// then `VALUES (...), (...)` with each row's placeholders bound by the closure, then the
/// optional `tail`. `head` may open a `WITH d (...) AS (` whose `VALUES` the `tail` closes
/// and uses, as in an `UPDATE ... FROM d`. Expands to code for both backends, like
/// [`with_conn!`](crate::with_conn); must be used where `?` returns an `sqlx::Error`.
#[macro_export]
macro_rules! execute_rows {
    ($conn:expr, $rows:expr, $head:expr, |$row:ident, $item:pat_param| $bind:expr $(, $tail:expr)? $(,)?) => {
        for chunk in $conn.statement_chunks($rows) {
            $crate::with_conn!($conn.reborrow(), c => {
                let mut query = sqlx::QueryBuilder::new($head);
                query.push_values(chunk, |mut $row, $item| {
                    $bind;
                });
                $( query.push($tail); )?
                query.build().execute(&mut *c).await?;
            });
        }
    };
}

/// Runs `{prefix}{values, comma separated})` followed by `{sql}{value}` for each extra
/// condition, in [`lookup_chunks`] of the values, and collects the rows as `$row`. Expands to
/// code for both backends; must be used where `?` returns an `sqlx::Error`.
#[macro_export]
macro_rules! select_in {
    ($conn:expr, $row:ty, $prefix:expr, $values:expr $(, ($sql:expr, $extra:expr))* $(,)?) => {{
        let mut rows: Vec<$row> = Vec::new();
        for chunk in $crate::db::lookup_chunks($values, $crate::db::STATEMENT_ROWS[0]) {
            let found: Vec<$row> = $crate::with_conn!($conn.reborrow(), c => {
                let mut query = sqlx::QueryBuilder::new($prefix);
                let mut list = query.separated(", ");
                for value in &chunk {
                    list.push_bind(value);
                }
                list.push_unseparated(")");
                $( query.push($sql).push_bind($extra); )*
                query.build_query_as().fetch_all(&mut *c).await?
            });
            rows.extend(found);
        }
        rows
    }};
}

impl Pool {
    /// Takes a connection from the pool.
    pub async fn acquire(&self) -> Result<PooledConn, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(pool) => PooledConn::Sqlite(pool.acquire().await?),
            Pool::SqliteReaders(readers) => PooledConn::SqliteReader(readers.acquire().await?),
            Pool::Postgres(pool) => PooledConn::Postgres(pool.acquire().await?),
        })
    }

    /// Starts a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so a transaction that reads before it writes waits for other writers instead of failing
    /// when it upgrades.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(pool) => Transaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::SqliteReaders(_) => {
                return Err(sqlx::Error::Configuration(
                    "read connections do not begin transactions".into(),
                ));
            }
            Pool::Postgres(pool) => Transaction::Postgres(pool.begin().await?),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::SqliteReaders(readers) => readers.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

impl PooledConn {
    /// The connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            PooledConn::Sqlite(connection) => Conn::Sqlite(connection),
            PooledConn::SqliteReader(reader) => Conn::Sqlite(
                reader
                    .connection
                    .as_mut()
                    .expect("a reader holds its connection until dropped"),
            ),
            PooledConn::Postgres(connection) => Conn::Postgres(connection),
        }
    }
}

impl Transaction {
    /// The transaction's connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Transaction::Sqlite(transaction) => Conn::Sqlite(transaction),
            Transaction::Postgres(transaction) => Conn::Postgres(transaction),
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => transaction.commit().await,
            Transaction::Postgres(transaction) => transaction.commit().await,
        }
    }
}

impl Conn<'_> {
    /// The chunks a multi-row statement over `rows` is run in, one statement each. On SQLite
    /// they are [`statement_chunks`]: a few statement texts per table, each prepared once. On
    /// PostgreSQL every statement is a round trip to the server and a share of its work, and
    /// the server keeps a plan for each text, so all rows go in one statement (up to
    /// 1,024 rows, so every table stays under its limit of bound values).
    pub fn statement_chunks<'r, T>(&self, rows: &'r [T]) -> Vec<&'r [T]> {
        match self {
            Conn::Sqlite(_) => statement_chunks(rows).collect(),
            Conn::Postgres(_) => rows.chunks(POSTGRES_STATEMENT_ROWS).collect(),
        }
    }

    /// The same connection, borrowed again for a shorter time.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(connection) => Conn::Sqlite(connection),
            Conn::Postgres(connection) => Conn::Postgres(connection),
        }
    }

    /// Runs a statement that takes no parameters and returns no rows.
    pub async fn execute(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        with_conn!(self.reborrow(), c => sqlx::query(sql).execute(&mut *c).await.map(drop))
    }

    /// Checks the connection answers.
    pub async fn ping(&mut self) -> Result<(), sqlx::Error> {
        with_conn!(self.reborrow(), c => c.ping().await)
    }
}

/// Rows per multi-row statement, largest first: powers of two, so `n` rows take at most as
/// many statements as `n` has one bits, and only a handful of statement texts exist per table
/// (each parsed once, then kept in the connection's statement cache). The largest, times the
/// columns of any table (at most 127), stays under SQLite's limit of 32,766 bound values.
pub const STATEMENT_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Prepared statements each connection keeps: every size of every multi-row statement fits.
const STATEMENT_CACHE: usize = 1024;

/// Rows per multi-row statement on PostgreSQL at most: every table's columns (at most 60)
/// times this stay under its limit of 65,535 bound values.
const POSTGRES_STATEMENT_ROWS: usize = 1024;

/// Splits `rows` into chunks of the [`STATEMENT_ROWS`] sizes, largest first: one multi-row
/// statement each.
pub fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS
            .into_iter()
            .find(|size| *size <= rest.len())?;
        let (chunk, remaining) = rest.split_at(size);
        rest = remaining;
        Some(chunk)
    })
}

/// Splits the values of an `IN (...)` list (or of any lookup where a value listed twice only
/// repeats rows) into chunks of at most `max` values, each padded with copies of its last
/// value up to the next [`STATEMENT_ROWS`] size, so the statement stays cached.
pub fn lookup_chunks<T: Clone>(values: &[T], max: usize) -> impl Iterator<Item = Vec<T>> + '_ {
    values.chunks(max.max(1)).map(|chunk| {
        let size = STATEMENT_ROWS
            .into_iter()
            .rev()
            .find(|size| *size >= chunk.len())
            .unwrap_or(chunk.len());
        let mut padded = chunk.to_vec();
        if let Some(last) = chunk.last() {
            padded.resize(size, last.clone());
        }
        padded
    })
}

/// The runtime the commit writer runs on, and on PostgreSQL the write connection: one thread
/// of its own for the process.
///
/// A batch is a dozen round trips to the database (to SQLite's connection thread, or to the
/// PostgreSQL server). On the shared runtime the writer's wake-up after each one waited behind
/// the calls being served, and so did the socket's readiness (a busy runtime looks at its
/// sockets between batches of tasks): under load a batch took milliseconds of waiting for a
/// fraction of a millisecond of work, and every writing call waited with it. On a thread of
/// its own the writer runs as soon as an answer is there. A socket is watched by the runtime
/// that opened it, so PostgreSQL's write pool is opened here too; the runtime lives as long as
/// the process, so the pool outlives any runtime that uses it.
pub fn writer_runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("lifecircle-writer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the writer's runtime starts");
                let _ = sender.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the writer's thread starts");
        receiver.recv().expect("the writer's runtime starts")
    })
}

/// Readers and the writer of one database.
#[derive(Clone)]
pub struct Db {
    /// Connections for reads.
    pub read: Pool,
    /// The one connection that writes, owned by the commit writer, so writers never wait on
    /// each other's locks and many calls share one commit.
    pub write: Pool,
    /// SQLite only: the task that checkpoints the WAL off the commit path.
    checkpointer: Option<Arc<Checkpointer>>,
    /// SQLite only: the bound on the WAL file.
    wal: Option<Arc<WalBound>>,
}

/// How often the checkpointer copies committed pages from SQLite's WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Checkpoints an SQLite database's WAL on a connection of its own, every
/// [`CHECKPOINT_INTERVAL`], so the commit writer never does.
///
/// Left to SQLite, the commit that grows the WAL past 1,000 pages checkpoints it before
/// returning: under load every few batches a commit copied megabytes into the database file
/// and fsynced it while every call in that batch, and every call queued behind it, waited.
/// A passive checkpoint runs beside the writer (it never blocks it, nor readers); commits
/// still reach the disk through the WAL before they are acknowledged.
#[derive(Debug)]
struct Checkpointer {
    stop: Arc<tokio::sync::Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpointer {
    async fn start(options: &SqliteConnectOptions) -> Result<Checkpointer, sqlx::Error> {
        let mut connection = SqliteConnection::connect_with(options).await?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stopped.notified() => break,
                }
                if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut connection)
                    .await
                {
                    tracing::warn!(%error, "WAL checkpoint failed; retrying at the next one");
                }
            }
            let _ = connection.close().await;
        });
        Ok(Checkpointer {
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stops checkpointing and closes the connection.
    async fn stop(&self) {
        self.stop.notify_one();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// How long the commit writer waits for readers to leave the WAL when it restarts it.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// How long the commit writer leaves the WAL alone after readers kept it from restarting
/// it (a long read, such as a large report), so batches do not each wait for them.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// The bound on an SQLite database's WAL file (`sqlite.wal_bytes_max`).
///
/// Passive checkpoints never let the log start over: SQLite restarts it only when a write
/// begins after every frame was copied and while no reader is reading from it, and under
/// sustained writes and reads that moment does not come, so the file grew without end (tens
/// of megabytes a second under the benchmarks' load). Once the file is past the bound, the
/// commit writer, between two batches, checkpoints what the checkpointer has not copied yet
/// and makes the next write start the log over (`wal_checkpoint(RESTART)`); the file is then
/// cut back to the bound (`journal_size_limit`). The file can pass the bound by one batch.
#[derive(Debug)]
struct WalBound {
    path: std::path::PathBuf,
    bytes_max: u64,
    /// No restart before this, after readers kept one from happening.
    not_before: Mutex<Option<std::time::Instant>>,
}

/// Connections kept for reads.
const READERS: u32 = 8;

/// How long a connection may wait for a lock before the statement fails.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `url` names a database this host can use.
pub fn is_supported_url(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Db {
    /// Opens (creating an SQLite file if needed) the database at `url` and runs the
    /// migrations, with the default SQLite settings.
    pub async fn open(url: &str) -> Result<Db, sqlx::Error> {
        Self::open_with(url, &SqliteConfig::default()).await
    }

    /// Opens the database at `url` as [`Db::open`] does; an SQLite database with `sqlite`'s
    /// settings.
    pub async fn open_with(url: &str, sqlite: &SqliteConfig) -> Result<Db, sqlx::Error> {
        if url.starts_with("sqlite:") {
            Self::open_sqlite(url, sqlite).await
        } else {
            Self::open_postgres(url).await
        }
    }

    async fn open_sqlite(url: &str, sqlite: &SqliteConfig) -> Result<Db, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(LOCK_TIMEOUT)
            .statement_cache_capacity(STATEMENT_CACHE)
            .foreign_keys(true)
            // Statement journals (kept while a multi-row statement runs inside the batch's
            // transaction) stay in memory instead of spilling to temporary files.
            .pragma("temp_store", "memory")
            // The checkpointer does it (see [`Checkpointer`]).
            .pragma("wal_autocheckpoint", "0")
            // A restarted log's file is cut back to this size.
            .pragma("journal_size_limit", sqlite.wal_bytes_max.to_string());
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A connection in this process does not go stale: no ping before each batch.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let checkpointer = Checkpointer::start(&options).await?;
        let mut wal_path = options.get_filename().as_os_str().to_owned();
        wal_path.push("-wal");
        let readers = Readers::open(&options.read_only(true), READERS).await?;
        Ok(Db {
            read: Pool::SqliteReaders(Arc::new(readers)),
            write: Pool::Sqlite(write),
            checkpointer: Some(Arc::new(checkpointer)),
            wal: Some(Arc::new(WalBound {
                path: wal_path.into(),
                bytes_max: sqlite.wal_bytes_max,
                not_before: Mutex::new(None),
            })),
        })
    }

    async fn open_postgres(url: &str) -> Result<Db, sqlx::Error> {
        // synchronous_commit stays on (the server default): a commit is on disk before it is
        // acknowledged. Prepared statements keep the server's default plan caching: planning
        // each execution for its parameters (`force_custom_plan`) was most of the server's
        // work for the small reads calls make, and a cached plan is made again whenever
        // (auto)analyze brings new statistics.
        let options = PgConnectOptions::from_str(url)?
            .options([("lock_timeout", format!("{}ms", LOCK_TIMEOUT.as_millis()))])
            .statement_cache_capacity(STATEMENT_CACHE);
        // The write connection's socket belongs to the runtime that opens it: the writer's.
        let write_options = options.clone();
        let write = writer_runtime()
            .spawn(async move {
                PgPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .connect_with(write_options)
                    .await
            })
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)??;
        sqlx::migrate!("./migrations/postgres").run(&write).await?;
        let read = PgPoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        Ok(Db {
            read: Pool::Postgres(read),
            write: Pool::Postgres(write),
            checkpointer: None,
            wal: None,
        })
    }

    /// The secret named `name`: created randomly on first use and kept in the database, so
    /// every process on this database agrees on it.
    pub async fn secret(&self, name: &str) -> Result<Vec<u8>, sqlx::Error> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e.to_string())))?;
        let mut connection = self.write.acquire().await?;
        with_conn!(connection.conn(), c => {
            sqlx::query(
                "INSERT INTO host_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(&fresh[..])
            .execute(&mut *c)
            .await?;
            sqlx::query_scalar("SELECT value FROM host_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *c)
                .await
        })
    }

    /// On SQLite, when the WAL file has grown past `sqlite.wal_bytes_max`: copies what is left
    /// of it into the database file and makes the next write start the log over. The commit
    /// writer calls it between batches, when nothing else writes. Waits at most 100 ms for
    /// readers to leave the log; if they have not, tries again a second later.
    pub async fn restart_wal_if_due(&self) {
        let Some(wal) = &self.wal else { return };
        let size = std::fs::metadata(&wal.path).map_or(0, |m| m.len());
        let started = std::time::Instant::now();
        let not_before = |at: Option<std::time::Instant>| {
            *wal.not_before
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
        };
        let due = wal
            .not_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|at| started >= at);
        if size <= wal.bytes_max || !due {
            return;
        }
        let restarted = async {
            let mut connection = self.write.acquire().await?;
            let mut conn = connection.conn();
            let Conn::Sqlite(c) = &mut conn else {
                return Ok(false);
            };
            let wait = format!("PRAGMA busy_timeout = {}", RESTART_WAIT.as_millis());
            sqlx::query(&wait).execute(&mut **c).await?;
            // (busy, frames in the log, frames copied)
            let checkpoint: Result<(i64, i64, i64), sqlx::Error> =
                sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
                    .fetch_one(&mut **c)
                    .await;
            let normal = format!("PRAGMA busy_timeout = {}", LOCK_TIMEOUT.as_millis());
            sqlx::query(&normal).execute(&mut **c).await?;
            Ok::<_, sqlx::Error>(checkpoint?.0 == 0)
        }
        .await;
        let elapsed_us = started.elapsed().as_micros() as u64;
        match restarted {
            Ok(true) => {
                not_before(None);
                tracing::debug!(bytes = size, elapsed_us, "WAL checkpointed and restarted");
            }
            // Busy at once: the checkpointer was copying; the next batch tries again.
            Ok(false) if started.elapsed() < RESTART_WAIT / 2 => {}
            Ok(false) => {
                not_before(Some(started + RESTART_BACKOFF));
                tracing::debug!(bytes = size, "readers kept the WAL from restarting");
            }
            Err(error) => {
                not_before(Some(started + RESTART_BACKOFF));
                tracing::warn!(%error, "WAL restart failed; retrying later");
            }
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_a_few_fixed_sizes() {
        let rows: Vec<u32> = (0..293).collect();
        let sizes: Vec<usize> = statement_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 32, 4, 1]);
        let sizes: Vec<usize> = statement_chunks(&rows[..13]).map(<[u32]>::len).collect();
        assert_eq!(sizes, [8, 4, 1]);
        assert_eq!(statement_chunks::<u32>(&[]).count(), 0);
        let lookups: Vec<Vec<u32>> = lookup_chunks(&rows[..5], 256).collect();
        assert_eq!(lookups, [vec![0, 1, 2, 3, 4, 4, 4, 4]]);
        assert_eq!(
            lookup_chunks(&rows, 256)
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            [256, 64]
        );
        assert_eq!(
            lookup_chunks(&rows[..40], 32)
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            [32, 8]
        );
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("checkpoints.db");
        let db = Db::open(&format!("sqlite://{}", path.display()))
            .await
            .expect("the database opens");
        let before = std::fs::metadata(&path).expect("the file exists").len();
        // 1 MB: a quarter of what makes SQLite's own commit checkpoint, so only the
        // checkpointer can move it into the database file.
        let mut connection = db.write.acquire().await.expect("the writer");
        with_conn!(connection.conn(), c => {
            sqlx::query("CREATE TABLE filler (bytes BLOB)").execute(&mut *c).await.expect("created");
            sqlx::query("INSERT INTO filler VALUES (zeroblob(1000000))")
                .execute(&mut *c)
                .await
                .expect("inserted");
        });
        drop(connection);
        let deadline = std::time::Instant::now() + 20 * CHECKPOINT_INTERVAL;
        let mut size = before;
        while size < before + 1_000_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(CHECKPOINT_INTERVAL / 5).await;
            size = std::fs::metadata(&path).expect("the file exists").len();
        }
        assert!(
            size >= before + 1_000_000,
            "the database file stayed at {size} bytes (was {before}): nothing was checkpointed"
        );
        db.close().await;
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redacted("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redacted("sqlite://data/l.db"), "sqlite://data/l.db");
    }
}
