//! What every invocation leaves behind: a record in `invocations` (plugin digest, config
//! digest, caller pseudonym, action, input hash, outcome, fuel and time used, the ledger
//! writes it committed, the draw seed it used) with each of its draws in `fairness_draws`;
//! the verifiable randomness those draws come from; and the sweeper that keeps them bounded.

pub mod admin;
pub mod fairness;
mod random;

use std::time::Duration;

use serde::Serialize;

use crate::db::{Conn, Db};
use crate::{execute_rows, with_conn};
pub use random::{Draw, Draws, Replayed, replay};

/// One invocation's audit record.
#[derive(Debug, Clone)]
pub struct InvocationRecord {
    /// The request id (unique per invocation).
    pub id: String,
    /// Milliseconds since the Unix epoch when the call started.
    pub started_at_ms: i64,
    /// The plugin id.
    pub plugin_id: String,
    /// The plugin version.
    pub plugin_version: String,
    /// sha256 of the plugin's component.
    pub plugin_digest: String,
    /// sha256 of the settings the call saw.
    pub config_digest: String,
    /// The region.
    pub region: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: &'static str,
    /// The caller's pseudonym (customer) or id (partner); empty for the scheduler.
    pub caller: String,
    /// The action.
    pub action: String,
    /// sha256 of the request body.
    pub input_digest: String,
    /// `ok` or the error code the call ended with.
    pub outcome: &'static str,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Wall-clock microseconds.
    pub duration_us: u64,
    /// The commitment (SHA-256) of the draw seed the call used.
    pub seed_commitment: String,
    /// The region of that seed.
    pub seed_region: String,
    /// The day of that seed, `YYYY-MM-DD`.
    pub seed_day: String,
    /// The draws the call made, in order.
    pub draws: Vec<Draw>,
    /// The ids of the ledger writes the call committed (postings, holds).
    pub ledger_writes: Vec<String>,
}

/// Inserts `records` and their draws, many rows per statement: one round trip to the
/// database per few hundred records rather than one each.
pub async fn insert_all(
    connection: &mut Conn<'_>,
    records: &[&InvocationRecord],
) -> Result<(), sqlx::Error> {
    let ledger_writes: Vec<String> = records
        .iter()
        .map(|record| serde_json::to_string(&record.ledger_writes).unwrap_or_default())
        .collect();
    let rows: Vec<(&InvocationRecord, &String)> =
        records.iter().copied().zip(&ledger_writes).collect();
    execute_rows!(
        connection,
        &rows,
        "INSERT INTO invocations (id, started_at_ms, plugin_id, plugin_version, \
                 plugin_digest, config_digest, region, caller_kind, caller, action, \
                 input_digest, outcome, fuel_consumed, duration_us, seed_commitment, \
                 seed_region, seed_day, ledger_writes) ",
        |row, (record, ledger_writes)| row
            .push_bind(&record.id)
            .push_bind(record.started_at_ms)
            .push_bind(&record.plugin_id)
            .push_bind(&record.plugin_version)
            .push_bind(&record.plugin_digest)
            .push_bind(&record.config_digest)
            .push_bind(&record.region)
            .push_bind(record.caller_kind)
            .push_bind(&record.caller)
            .push_bind(&record.action)
            .push_bind(&record.input_digest)
            .push_bind(record.outcome)
            .push_bind(i64::try_from(record.fuel_consumed).unwrap_or(i64::MAX))
            .push_bind(i64::try_from(record.duration_us).unwrap_or(i64::MAX))
            .push_bind(&record.seed_commitment)
            .push_bind(&record.seed_region)
            .push_bind(&record.seed_day)
            .push_bind(*ledger_writes),
    );
    let draws: Vec<(&str, &Draw)> = records
        .iter()
        .flat_map(|record| record.draws.iter().map(|draw| (record.id.as_str(), draw)))
        .collect();
    execute_rows!(
        connection,
        &draws,
        "INSERT INTO fairness_draws (invocation_id, seq, counter, upper, value) ",
        |row, (invocation_id, draw)| row
            .push_bind(*invocation_id)
            .push_bind(i64::try_from(draw.seq).unwrap_or(i64::MAX))
            .push_bind(i64::try_from(draw.counter).unwrap_or(i64::MAX))
            .push_bind(draw.upper.map(|upper| upper.to_string()))
            .push_bind(draw.value.to_string()),
    );
    Ok(())
}

/// An invocation record as admins read it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invocation {
    /// The invocation (request) id; also the paging cursor.
    pub id: String,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// The plugin id.
    pub plugin: String,
    /// The plugin version.
    pub version: String,
    /// sha256 of the plugin's component.
    pub plugin_digest: String,
    /// sha256 of the settings it saw.
    pub config_digest: String,
    /// The region it ran in.
    pub region: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: String,
    /// The customer's pseudonym for this plugin, or the partner's id.
    pub caller: String,
    /// The action.
    pub action: String,
    /// sha256 of the request body.
    pub input_digest: String,
    /// `ok`, or the error code it ended with.
    pub outcome: String,
    /// Fuel (instructions) it used.
    pub fuel_consumed: i64,
    /// How long it took, µs.
    pub duration_us: i64,
    /// The draw seed it used: its commitment, region and day.
    pub seed: SeedReference,
    /// The ledger postings it committed.
    pub postings: Vec<PostingView>,
    /// Ids of ledger writes that are not postings (holds, releases).
    pub other_ledger_writes: Vec<String>,
    /// Its draws, in order.
    pub draws: Vec<DrawView>,
}

/// Which seed an invocation drew from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeedReference {
    /// SHA-256 of the seed, hex.
    pub commitment: String,
    /// The region of the seed.
    pub region: String,
    /// The day of the seed.
    pub day: String,
}

/// A ledger posting an invocation made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PostingView {
    /// The posting id.
    pub id: String,
    /// `award`, `spend`, `capture`, `reverse`…
    pub kind: String,
    /// The account points left.
    pub from_account: String,
    /// The account points went to.
    pub to_account: String,
    /// Points moved.
    pub amount: i64,
    /// The plugin's memo.
    pub memo: String,
}

/// A recorded draw. Numbers are decimal strings: they are unsigned 64-bit and would lose
/// precision as JSON numbers in JavaScript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DrawView {
    /// Its place among the invocation's draws, from 0.
    pub seq: u64,
    /// The HMAC block counter it started at.
    pub counter: u64,
    /// The bound it was drawn below; `null` for 64 raw bits.
    pub upper: Option<String>,
    /// The value it returned.
    pub value: String,
}

impl DrawView {
    /// The draw, if its numbers parse.
    pub fn to_draw(&self) -> Option<Draw> {
        Some(Draw {
            seq: self.seq,
            counter: self.counter,
            upper: match &self.upper {
                Some(upper) => Some(upper.parse().ok()?),
                None => None,
            },
            value: self.value.parse().ok()?,
        })
    }
}

/// Which invocations to list.
#[derive(Debug, Default)]
pub struct InvocationFilter<'a> {
    /// One plugin only.
    pub plugin: Option<&'a str>,
    /// Callers with one of these pseudonyms (or partner ids) only.
    pub callers: Option<Vec<String>>,
    /// Regions within this one only.
    pub scope: Option<&'a str>,
    /// Strictly older than this invocation id.
    pub before: Option<&'a str>,
    /// Rows at most.
    pub limit: i64,
}

/// One row of `invocations`.
#[derive(sqlx::FromRow)]
struct InvocationRow {
    id: String,
    started_at_ms: i64,
    plugin_id: String,
    plugin_version: String,
    plugin_digest: String,
    config_digest: String,
    region: String,
    caller_kind: String,
    caller: String,
    action: String,
    input_digest: String,
    outcome: String,
    fuel_consumed: i64,
    duration_us: i64,
    seed_commitment: String,
    seed_region: String,
    seed_day: String,
    ledger_writes: String,
}

const INVOCATION_COLUMNS: &str = "SELECT id, started_at_ms, plugin_id, plugin_version, \
     plugin_digest, config_digest, region, caller_kind, caller, action, input_digest, outcome, \
     fuel_consumed, duration_us, seed_commitment, seed_region, seed_day, ledger_writes \
     FROM invocations";

/// Invocations newest first, as `filter` says, with their postings and draws.
pub async fn page(
    conn: &mut Conn<'_>,
    filter: &InvocationFilter<'_>,
) -> Result<Vec<Invocation>, sqlx::Error> {
    if filter.callers.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let subtree = filter.scope.map(|scope| format!("{scope}-%"));
    let rows: Vec<InvocationRow> = with_conn!(conn.reborrow(), c => {
        let mut query = sqlx::QueryBuilder::new(INVOCATION_COLUMNS);
        query.push(" WHERE 1 = 1");
        if let Some(plugin) = filter.plugin {
            query.push(" AND plugin_id = ").push_bind(plugin);
        }
        if let Some(callers) = &filter.callers {
            query.push(" AND caller IN (");
            let mut list = query.separated(", ");
            for caller in callers {
                list.push_bind(caller);
            }
            list.push_unseparated(")");
        }
        if let (Some(scope), Some(subtree)) = (filter.scope, &subtree) {
            query
                .push(" AND (region = ")
                .push_bind(scope)
                .push(" OR region LIKE ")
                .push_bind(subtree)
                .push(")");
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before);
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit);
        query.build_query_as().fetch_all(&mut *c).await?
    });
    let mut invocations = Vec::with_capacity(rows.len());
    for row in rows {
        invocations.push(complete(conn, row).await?);
    }
    Ok(invocations)
}

/// One invocation, with its postings and draws.
pub async fn get(conn: &mut Conn<'_>, id: &str) -> Result<Option<Invocation>, sqlx::Error> {
    let row: Option<InvocationRow> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!("{INVOCATION_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
    });
    match row {
        Some(row) => Ok(Some(complete(conn, row).await?)),
        None => Ok(None),
    }
}

async fn complete(conn: &mut Conn<'_>, row: InvocationRow) -> Result<Invocation, sqlx::Error> {
    let InvocationRow {
        id,
        started_at_ms,
        plugin_id: plugin,
        plugin_version: version,
        plugin_digest,
        config_digest,
        region,
        caller_kind,
        caller,
        action,
        input_digest,
        outcome,
        fuel_consumed,
        duration_us,
        seed_commitment: commitment,
        seed_region,
        seed_day,
        ledger_writes,
    } = row;
    let ledger_writes: Vec<String> = serde_json::from_str(&ledger_writes).unwrap_or_default();
    let postings: Vec<(String, String, String, String, i64, String)> = if ledger_writes.is_empty() {
        Vec::new()
    } else {
        crate::select_in!(
            conn,
            (String, String, String, String, i64, String),
            "SELECT id, kind, from_account, to_account, amount, memo FROM ledger_postings \
             WHERE id IN (",
            &ledger_writes,
        )
    };
    let postings: Vec<PostingView> = ledger_writes
        .iter()
        .filter_map(|write| postings.iter().find(|p| &p.0 == write))
        .map(
            |(id, kind, from_account, to_account, amount, memo)| PostingView {
                id: id.clone(),
                kind: kind.clone(),
                from_account: from_account.clone(),
                to_account: to_account.clone(),
                amount: *amount,
                memo: memo.clone(),
            },
        )
        .collect();
    let other_ledger_writes = ledger_writes
        .into_iter()
        .filter(|write| !postings.iter().any(|p| &p.id == write))
        .collect();
    let draws = draws_of(conn, &id).await?;
    Ok(Invocation {
        id,
        started_at_ms,
        plugin,
        version,
        plugin_digest,
        config_digest,
        region,
        caller_kind,
        caller,
        action,
        input_digest,
        outcome,
        fuel_consumed,
        duration_us,
        seed: SeedReference {
            commitment,
            region: seed_region,
            day: seed_day,
        },
        postings,
        other_ledger_writes,
        draws,
    })
}

/// The draws of invocation `id`, in order.
pub async fn draws_of(conn: &mut Conn<'_>, id: &str) -> Result<Vec<DrawView>, sqlx::Error> {
    let rows: Vec<(i64, i64, Option<String>, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT seq, counter, upper, value FROM fairness_draws WHERE invocation_id = $1 \
             ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(seq, counter, upper, value)| DrawView {
            seq: seq as u64,
            counter: counter as u64,
            upper,
            value,
        })
        .collect())
}

/// Deletes invocation records, their draws, events and draw seeds older than `before_ms`. Returns
/// how many invocation records it deleted.
pub async fn sweep(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    let mut transaction = db.write.begin().await?;
    let mut conn = transaction.conn();
    let deleted = with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "DELETE FROM fairness_draws WHERE invocation_id IN \
             (SELECT id FROM invocations WHERE started_at_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *c)
        .await?;
        sqlx::query("DELETE FROM events WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&mut *c)
            .await?;
        sqlx::query("DELETE FROM fairness_seeds WHERE ends_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *c)
            .await?;
        sqlx::query("DELETE FROM invocations WHERE started_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    transaction.commit().await?;
    Ok(deleted)
}

/// Sweeps records older than `retention` every `interval`.
pub fn start_sweeper(db: Db, retention: Duration, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let before = crate::ledger::now_ms() - retention.as_millis() as i64;
            match sweep(&db, before).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "swept invocation records past retention"),
                Err(error) => tracing::warn!(%error, "could not sweep old invocation records"),
            }
        }
    });
}
