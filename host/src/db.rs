//! The embedded database: one SQLite file in WAL mode with full fsync on commit, a pool of
//! readers, and a single writer connection that the commit writer owns.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Readers and the writer of one database.
#[derive(Clone)]
pub struct Db {
    /// Connections for reads (many at once under WAL).
    pub read: SqlitePool,
    /// The one connection that writes, so writers never wait on each other's locks.
    pub write: SqlitePool,
}

/// Connections kept for reads.
const READERS: u32 = 8;

impl Db {
    /// Opens (creating if needed) the database at `url` and runs the migrations.
    pub async fn open(url: &str) -> Result<Db, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Db { read, write })
    }

    /// The secret named `name`: created randomly on first use and kept in the database, so
    /// every process on this database agrees on it.
    pub async fn secret(&self, name: &str) -> Result<Vec<u8>, sqlx::Error> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e.to_string())))?;
        sqlx::query(
            "INSERT INTO host_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh[..])
        .execute(&self.write)
        .await?;
        sqlx::query_scalar("SELECT value FROM host_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.write)
            .await
    }
}
