//! What every invocation leaves behind: a record in `invocations` (plugin digest, config
//! digest, caller pseudonym, action, input hash, outcome, fuel and time used, random seed), and
//! the replayable randomness those seeds drive.

pub mod admin;
mod random;

use crate::db::Conn;
use crate::execute_rows;
pub use random::Draws;

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
    /// The seed of the call's `random` interface, hex.
    pub seed: String,
}

/// Inserts `records`, many per statement: one round trip to the database per few hundred
/// records rather than one each.
pub async fn insert_all(
    connection: &mut Conn<'_>,
    records: &[&InvocationRecord],
) -> Result<(), sqlx::Error> {
    execute_rows!(
        connection,
        records,
        "INSERT INTO invocations (id, started_at_ms, plugin_id, plugin_version, \
                 plugin_digest, config_digest, region, caller_kind, caller, action, \
                 input_digest, outcome, fuel_consumed, duration_us, seed) ",
        |row, record| row
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
            .push_bind(&record.seed),
    );
    Ok(())
}
