//! What each region runs: per (region, plugin) a row with the version, whether it is enabled,
//! its settings, targeting and schedule. A row applies to its region's subtree unless a region
//! below has its own row. Kill switches are kept apart: a kill stops the plugin in the region
//! and its whole subtree, whatever the rows below say, until it is lifted.
//!
//! Every change bumps the registry generation in the same transaction; hosts poll it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::catalog::{self, Status};
use crate::db::Conn;
use crate::identity::customers;
use crate::with_conn;

/// A region's settings for a plugin, besides version and on/off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Settings the plugin reads through `config`; they replace the manifest's defaults key by
    /// key.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Only customers of these tiers see the plugin (empty: every tier).
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Only customers with every one of these tags see the plugin.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Not before this time (ms since the Unix epoch).
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    /// Not from this time on (ms since the Unix epoch): a campaign window's end.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
    /// Days the points the plugin awards here stay valid (default: its manifest's).
    #[serde(default)]
    pub points_validity_days: Option<u32>,
    /// Hosts the plugin may reach through `outbound` here: some of those its manifest asks
    /// for (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_hosts: Vec<String>,
}

impl Setting {
    /// Whether the schedule admits `now_ms`.
    pub fn open_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms.is_none_or(|start| now_ms >= start)
            && self.ends_at_ms.is_none_or(|end| now_ms < end)
    }

    /// Whether targeting admits a customer of `tier` with `tags`.
    pub fn admits(&self, tier: &str, tags: &[String]) -> bool {
        (self.tiers.is_empty() || self.tiers.iter().any(|t| t == tier))
            && self.tags.iter().all(|required| tags.contains(required))
    }
}

/// One region's row for one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enablement {
    /// The region.
    pub region: String,
    /// The plugin.
    pub plugin_id: String,
    /// Counts the row's changes, from 1.
    pub revision: i64,
    /// The version it runs (`None` only on a row that disables).
    pub version: Option<String>,
    /// The version before the last version change: what rollback restores.
    pub previous_version: Option<String>,
    /// On or off (off hides the plugin in the subtree).
    pub enabled: bool,
    /// Settings, targeting, schedule.
    #[serde(flatten)]
    pub setting: Setting,
    /// Who changed it last.
    pub updated_by: String,
    /// When, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A kill switch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kill {
    /// Where: this region and its subtree.
    pub region: String,
    /// The plugin.
    pub plugin_id: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub killed_by: String,
    /// When, ms since the Unix epoch.
    pub killed_at_ms: i64,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    /// The version is not stored.
    #[error("no version {version} of plugin {plugin_id}; upload it first")]
    VersionNotFound {
        /// The plugin.
        plugin_id: String,
        /// The version.
        version: String,
    },
    /// The version is not approved.
    #[error("{plugin_id} {version} is {status}; only approved versions can be enabled")]
    NotApproved {
        /// The plugin.
        plugin_id: String,
        /// The version.
        version: String,
        /// Its review state.
        status: &'static str,
    },
    /// The settings do not fit.
    #[error("{0}")]
    Invalid(String),
    /// Nothing to roll back to.
    #[error("{0}")]
    NoRollback(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Bumps the registry generation: every host reloads when it sees the new value.
pub async fn bump_generation(conn: &mut Conn<'_>) -> Result<(), sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query("UPDATE registry_generation SET generation = generation + 1 WHERE id = 1")
            .execute(&mut *c)
            .await
            .map(drop)
    })
}

/// The registry generation.
pub async fn generation(conn: &mut Conn<'_>) -> Result<i64, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT generation FROM registry_generation WHERE id = 1")
            .fetch_one(&mut *c)
            .await
    })
}

/// Checks that `version` of `plugin_id` may be enabled with `setting`: approved, settings
/// within `config_bytes_max` and fitting the manifest's schema (defaults applied), targeting
/// and schedule well-formed, points validity within the host's maximum.
pub async fn check(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    version: &str,
    setting: &Setting,
    config_bytes_max: u64,
    points_validity_days_max: u32,
) -> Result<(), EnableError> {
    let record = catalog::get(conn, plugin_id, version)
        .await?
        .ok_or_else(|| EnableError::VersionNotFound {
            plugin_id: plugin_id.to_owned(),
            version: version.to_owned(),
        })?;
    if record.status != Status::Approved {
        return Err(EnableError::NotApproved {
            plugin_id: plugin_id.to_owned(),
            version: version.to_owned(),
            status: record.status.as_str(),
        });
    }
    let manifest = record
        .manifest()
        .ok_or_else(|| EnableError::Invalid("the stored manifest does not parse".into()))?;
    check_setting(setting, config_bytes_max, points_validity_days_max)?;
    let requested = &manifest.capabilities.outbound_hosts;
    if let Some(host) = setting
        .outbound_hosts
        .iter()
        .find(|host| !requested.contains(host))
    {
        return Err(EnableError::Invalid(format!(
            "outbound_hosts: {plugin_id} {version} does not ask for {host:?} (it asks for: {})",
            if requested.is_empty() {
                "nothing".to_owned()
            } else {
                requested.join(", ")
            }
        )));
    }
    let merged = merged_config(&manifest.defaults(), &setting.config);
    if let Some(schema) = manifest.schema().map_err(EnableError::Invalid)? {
        let problems = schema.problems(&Value::Object(merged));
        if !problems.is_empty() {
            return Err(EnableError::Invalid(format!(
                "the settings do not fit {plugin_id} {version}'s config_schema: {}",
                problems.join("; ")
            )));
        }
    }
    Ok(())
}

/// Checks what does not depend on the version.
pub fn check_setting(
    setting: &Setting,
    config_bytes_max: u64,
    points_validity_days_max: u32,
) -> Result<(), EnableError> {
    let invalid = |message: String| Err(EnableError::Invalid(message));
    let size = Value::Object(setting.config.clone()).to_string().len() as u64;
    if size > config_bytes_max {
        return invalid(format!(
            "config is {size} bytes of JSON, over the {config_bytes_max}-byte limit \
             (registry.config_bytes_max)"
        ));
    }
    for (index, tier) in setting.tiers.iter().enumerate() {
        if let Err(reason) = customers::check_tier(tier) {
            return invalid(format!("tiers[{index}]: {reason}"));
        }
    }
    if let Err(reason) = customers::normalize_tags(setting.tags.clone()) {
        return invalid(format!("tags: {reason}"));
    }
    if let (Some(start), Some(end)) = (setting.starts_at_ms, setting.ends_at_ms)
        && start >= end
    {
        return invalid("starts_at_ms must be before ends_at_ms".into());
    }
    if let Some(days) = setting.points_validity_days
        && (days == 0 || days > points_validity_days_max)
    {
        return invalid(format!(
            "points_validity_days must be 1 to {points_validity_days_max} (the bank's \
             ledger.points_validity_days_max)"
        ));
    }
    Ok(())
}

/// The settings a plugin sees: its defaults with the region's keys replacing them.
pub fn merged_config(
    defaults: &Map<String, Value>,
    region: &Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = defaults.clone();
    for (key, value) in region {
        merged.insert(key.clone(), value.clone());
    }
    merged
}

type Row = (
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    bool,
    String,
    String,
    i64,
);

const COLUMNS: &str = "SELECT region, plugin_id, revision, version, previous_version, enabled, \
    setting, updated_by, updated_at_ms FROM plugin_enablements";

fn enablement(row: Row) -> Enablement {
    let (
        region,
        plugin_id,
        revision,
        version,
        previous_version,
        enabled,
        setting,
        updated_by,
        updated_at_ms,
    ) = row;
    Enablement {
        region,
        plugin_id,
        revision,
        version,
        previous_version,
        enabled,
        setting: serde_json::from_str(&setting).unwrap_or_default(),
        updated_by,
        updated_at_ms,
    }
}

/// The row of `plugin_id` in `region`.
pub async fn get(
    conn: &mut Conn<'_>,
    region: &str,
    plugin_id: &str,
) -> Result<Option<Enablement>, sqlx::Error> {
    let sql = format!("{COLUMNS} WHERE region = $1 AND plugin_id = $2");
    let row: Option<Row> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&sql)
            .bind(region)
            .bind(plugin_id)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.map(enablement))
}

/// Every row, or those of `region`.
pub async fn list(
    conn: &mut Conn<'_>,
    region: Option<&str>,
) -> Result<Vec<Enablement>, sqlx::Error> {
    let sql = format!("{COLUMNS} WHERE ($1 IS NULL OR region = $1) ORDER BY region, plugin_id");
    let rows: Vec<Row> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&sql)
            .bind(region)
            .fetch_all(&mut *c)
            .await?
    });
    Ok(rows.into_iter().map(enablement).collect())
}

/// What a change sets.
pub struct Change<'a> {
    /// The version (`None`: keep none, only for disabling).
    pub version: Option<&'a str>,
    /// On or off.
    pub enabled: bool,
    /// Settings.
    pub setting: &'a Setting,
    /// Who.
    pub by: &'a str,
}

/// Writes `change` as the next revision of the row and returns the row before and after.
pub async fn put(
    conn: &mut Conn<'_>,
    region: &str,
    plugin_id: &str,
    change: &Change<'_>,
    now_ms: i64,
) -> Result<(Option<Enablement>, Enablement), sqlx::Error> {
    let before = get(conn, region, plugin_id).await?;
    let (revision, previous_version) = match &before {
        Some(row) if row.version.as_deref() != change.version => {
            (row.revision + 1, row.version.clone())
        }
        Some(row) => (row.revision + 1, row.previous_version.clone()),
        None => (1, None),
    };
    let setting = serde_json::to_string(change.setting).unwrap_or_else(|_| "{}".into());
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO plugin_enablements (region, plugin_id, revision, version, \
             previous_version, enabled, setting, updated_by, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (region, plugin_id) DO UPDATE SET revision = excluded.revision, \
             version = excluded.version, previous_version = excluded.previous_version, \
             enabled = excluded.enabled, setting = excluded.setting, \
             updated_by = excluded.updated_by, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(region)
        .bind(plugin_id)
        .bind(revision)
        .bind(change.version)
        .bind(&previous_version)
        .bind(change.enabled)
        .bind(setting)
        .bind(change.by)
        .bind(now_ms)
        .execute(&mut *c)
        .await?;
    });
    bump_generation(conn).await?;
    let after = get(conn, region, plugin_id)
        .await?
        .expect("the row was just written in this transaction");
    Ok((before, after))
}

/// Removes the row of `plugin_id` in `region`, so the region inherits from above again.
pub async fn remove(
    conn: &mut Conn<'_>,
    region: &str,
    plugin_id: &str,
) -> Result<Option<Enablement>, sqlx::Error> {
    let before = get(conn, region, plugin_id).await?;
    if before.is_some() {
        const SQL: &str = "DELETE FROM plugin_enablements WHERE region = $1 AND plugin_id = $2";
        delete_and_bump(conn, SQL, region, plugin_id).await?;
    }
    Ok(before)
}

/// Runs a `DELETE` keyed by `$1` region and `$2` plugin id, then bumps the generation.
async fn delete_and_bump(
    conn: &mut Conn<'_>,
    sql: &'static str,
    region: &str,
    plugin_id: &str,
) -> Result<(), sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query(sql)
            .bind(region)
            .bind(plugin_id)
            .execute(&mut *c)
            .await?;
    });
    bump_generation(conn).await
}

/// The version a rollback of the row would restore, checked like any enablement.
pub async fn rollback_target(
    conn: &mut Conn<'_>,
    row: &Enablement,
    config_bytes_max: u64,
    points_validity_days_max: u32,
) -> Result<String, EnableError> {
    let target = row
        .previous_version
        .clone()
        .filter(|previous| row.version.as_ref() != Some(previous))
        .ok_or_else(|| {
            EnableError::NoRollback(format!(
                "{} in {} has run no other version before {}; nothing to roll back to",
                row.plugin_id,
                row.region,
                row.version.as_deref().unwrap_or("(none)")
            ))
        })?;
    check(
        conn,
        &row.plugin_id,
        &target,
        &row.setting,
        config_bytes_max,
        points_validity_days_max,
    )
    .await?;
    Ok(target)
}

/// Every kill switch, or those of `plugin_id`.
pub async fn kills(conn: &mut Conn<'_>, plugin_id: Option<&str>) -> Result<Vec<Kill>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, i64)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT region, plugin_id, reason, killed_by, killed_at_ms FROM plugin_kills \
             WHERE ($1 IS NULL OR plugin_id = $1) ORDER BY plugin_id, region",
        )
        .bind(plugin_id)
        .fetch_all(&mut *c)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(
            |(region, plugin_id, reason, killed_by, killed_at_ms)| Kill {
                region,
                plugin_id,
                reason,
                killed_by,
                killed_at_ms,
            },
        )
        .collect())
}

/// Kills `plugin_id` in `region`'s subtree (again: the new reason replaces the old).
pub async fn kill(conn: &mut Conn<'_>, kill: &Kill) -> Result<(), sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO plugin_kills (region, plugin_id, reason, killed_by, killed_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (region, plugin_id) DO UPDATE SET \
             reason = excluded.reason, killed_by = excluded.killed_by, \
             killed_at_ms = excluded.killed_at_ms",
        )
        .bind(&kill.region)
        .bind(&kill.plugin_id)
        .bind(&kill.reason)
        .bind(&kill.killed_by)
        .bind(kill.killed_at_ms)
        .execute(&mut *c)
        .await?;
    });
    bump_generation(conn).await
}

/// Lifts the kill of `plugin_id` in `region`; returns it, if there was one.
pub async fn revive(
    conn: &mut Conn<'_>,
    region: &str,
    plugin_id: &str,
) -> Result<Option<Kill>, sqlx::Error> {
    let before = kills(conn, Some(plugin_id))
        .await?
        .into_iter()
        .find(|kill| kill.region == region);
    if before.is_some() {
        const SQL: &str = "DELETE FROM plugin_kills WHERE region = $1 AND plugin_id = $2";
        delete_and_bump(conn, SQL, region, plugin_id).await?;
    }
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_a_half_open_window() {
        let setting = Setting {
            starts_at_ms: Some(100),
            ends_at_ms: Some(200),
            ..Setting::default()
        };
        assert!(!setting.open_at(99));
        assert!(setting.open_at(100));
        assert!(setting.open_at(199));
        assert!(!setting.open_at(200));
        assert!(Setting::default().open_at(0));
    }

    #[test]
    fn targeting_needs_a_listed_tier_and_every_tag() {
        let setting = Setting {
            tiers: vec!["gold".into(), "platinum".into()],
            tags: vec!["vip".into(), "fj".into()],
            ..Setting::default()
        };
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(setting.admits("gold", &tags(&["fj", "vip", "x"])));
        assert!(!setting.admits("silver", &tags(&["fj", "vip"])));
        assert!(!setting.admits("gold", &tags(&["vip"])));
        assert!(Setting::default().admits("", &[]));
    }
}
