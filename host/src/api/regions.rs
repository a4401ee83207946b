//! Regions and what each runs.
//!
//! - `GET /admin/v1/regions` lists the region tree; `PUT /admin/v1/regions/{region}`
//!   (`{"display_name"}`, head office) creates or renames one. A region's parent (its name up
//!   to the last `-`) must exist first.
//! - `PUT /admin/v1/regions/{region}/plugins/{plugin}` sets what the region (and its subtree,
//!   unless a region below sets its own) runs: `version`, `enabled`, `config` (checked against
//!   the manifest's schema), targeting (`tiers`, `tags`), a campaign window (`starts_at_ms`,
//!   `ends_at_ms`) and `points_validity_days`. `GET` reads the row, `DELETE` removes it so the
//!   region inherits again. `GET /admin/v1/regions/{region}/plugins` lists the region's own
//!   rows and what it runs in effect.
//! - `POST .../kill` (`{"reason"}`) stops the plugin in the region's subtree at once (503
//!   `plugin_killed`), whatever the rows say; `DELETE .../kill` lifts it.
//! - `POST .../rollback` restores the version the row ran before its last version change.
//!
//! Every change is one transaction with its admin audit entry (before and after), bumps the
//! registry generation, and takes effect on this host when it answers and on every other host
//! within `registry.poll_interval_ms`.

use axum::Json;
use axum::extract::State;

use super::extract::Path;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Admin;
use super::body::Json as JsonBody;
use crate::AppState;
use crate::audit::admin::{self as admin_audit, Change as AuditChange};
use crate::db::Conn;
use crate::error::{ApiError, ErrorCode};
use crate::identity::is_region;
use crate::ledger;
use crate::registry::enablement::{self, Change, EnableError, Enablement, Kill, Setting};
use crate::registry::regions::{self, Region, RegionError};
use crate::registry::{Lookup, is_plugin_id};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The region routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_regions))
        .routes(routes!(put_region))
        .routes(routes!(region_plugins))
        .routes(routes!(get_row, put_row, delete_row))
        .routes(routes!(kill, revive))
        .routes(routes!(rollback))
}

fn bad_path(message: &str) -> ApiError {
    ApiError::new(ErrorCode::RequestInvalid, message.to_owned())
}

fn checked_region(region: &str) -> Result<(), ApiError> {
    if is_region(region) {
        Ok(())
    } else {
        Err(bad_path(
            "a region name is parts of lowercase letters and digits joined by '-' (cn-fj-xm)",
        ))
    }
}

fn checked(region: &str, plugin: &str) -> Result<(), ApiError> {
    checked_region(region)?;
    if !is_plugin_id(plugin) {
        return Err(bad_path("plugin ids are lowercase letters, digits and '-'"));
    }
    Ok(())
}

fn enable_error(error: EnableError) -> ApiError {
    let code = match &error {
        EnableError::VersionNotFound { .. } => ErrorCode::PluginVersionNotFound,
        EnableError::NotApproved { .. } => ErrorCode::PluginVersionNotApproved,
        EnableError::Invalid(_) => ErrorCode::EnablementInvalid,
        EnableError::NoRollback(_) => ErrorCode::RollbackUnavailable,
        EnableError::Database(error) => return ApiError::internal(error),
    };
    ApiError::new(code, error.to_string())
}

async fn existing_region(conn: &mut Conn<'_>, region: &str) -> Result<Region, ApiError> {
    regions::get(conn, region)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::RegionNotFound,
                format!(
                    "no region {region:?}; head office creates it with PUT /admin/v1/regions/{region}"
                ),
            )
        })
}

/// Records a change in the admin audit, in `conn`'s transaction.
async fn audit<B: Serialize, A: Serialize>(
    conn: &mut Conn<'_>,
    admin: &Admin,
    action: &str,
    target: String,
    region: &str,
    before: Option<B>,
    after: Option<A>,
) -> Result<(), ApiError> {
    let change = AuditChange {
        actor: &admin.0.name,
        action,
        target,
        region: Some(region),
        before: before.and_then(|b| serde_json::to_value(b).ok()),
        after: after.and_then(|a| serde_json::to_value(a).ok()),
    };
    admin_audit::record(conn, &change, ledger::now_ms())
        .await
        .map_err(ApiError::internal)
}

/// Swaps in the change on this host; other hosts follow within the poll interval.
async fn apply_here(state: &AppState) {
    if let Err(error) = state.registry.reload().await {
        tracing::warn!(%error, "the registry change is committed but this host could not reload yet; it retries at the next poll");
    }
}

#[derive(Serialize)]
struct RegionList {
    regions: Vec<Region>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/regions",
    tag = "admin",
    responses((status = 200, description = "The regions the admin may read"), (status = 401, description = "No valid credential")),
    security(("admin_token" = []))
)]
async fn list_regions(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<RegionList>, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let all = regions::list(&mut connection.conn())
        .await
        .map_err(ApiError::internal)?;
    let regions = all
        .into_iter()
        .filter(|region| admin.may_read(Some(&region.name)).is_ok())
        .collect();
    Ok(Json(RegionList { regions }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegionBody {
    display_name: String,
}

#[utoipa::path(
    put,
    path = "/admin/v1/regions/{region}",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm")),
    request_body = RegionBody,
    responses((status = 200, description = "The region"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "The parent region does not exist")),
    security(("admin_token" = []))
)]
async fn put_region(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RegionBody>,
) -> Result<Json<Region>, ApiError> {
    checked_region(&name)?;
    admin.may_write(None)?;
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = regions::put(&mut conn, &name, &body.display_name, now_ms)
        .await
        .map_err(|error| match error {
            RegionError::ParentMissing { .. } => {
                ApiError::new(ErrorCode::RegionNotFound, error.to_string())
            }
            RegionError::Database(error) => ApiError::internal(error),
            other => ApiError::new(ErrorCode::RequestInvalid, other.to_string()),
        })?;
    let after = existing_region(&mut conn, &name).await?;
    if before.as_ref() != Some(&after) {
        let target = format!("region/{name}");
        audit(
            &mut conn,
            &admin,
            "region.put",
            target,
            &name,
            before,
            Some(&after),
        )
        .await?;
    }
    transaction.commit().await.map_err(ApiError::internal)?;
    Ok(Json(after))
}

/// What a region runs of one plugin in effect.
#[derive(Serialize)]
struct Effective {
    plugin: String,
    /// `running`, `killed` or `off`.
    state: &'static str,
    version: Option<String>,
    /// The region whose row decides (this one or one above it).
    from_region: Option<String>,
    revision: Option<i64>,
    /// Why it is killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    kill_reason: Option<String>,
}

#[derive(Serialize)]
struct RegionPlugins {
    region: String,
    /// The region's own rows.
    rows: Vec<Enablement>,
    /// Kill switches set in this region.
    kills: Vec<Kill>,
    /// What the region runs in effect, counting inherited rows and kills above it.
    effective: Vec<Effective>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/regions/{region}/plugins",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm")),
    responses((status = 200, description = "The region's own rows, kills, and what it runs in effect"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it")),
    security(("admin_token" = []))
)]
async fn region_plugins(
    State(state): State<AppState>,
    admin: Admin,
    Path(region): Path<String>,
) -> Result<Json<RegionPlugins>, ApiError> {
    checked_region(&region)?;
    admin.may_read(Some(&region))?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let mut conn = connection.conn();
    let rows = enablement::list(&mut conn, Some(&region))
        .await
        .map_err(ApiError::internal)?;
    let kills = enablement::kills(&mut conn, None)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|kill| kill.region == region)
        .collect();
    let snapshot = state.registry.snapshot();
    let effective = snapshot
        .plugin_ids()
        .map(|plugin| {
            let (state, deployment, kill_reason) = match snapshot.lookup(plugin, &region) {
                Lookup::Found(deployment) => ("running", Some(deployment), None),
                Lookup::Killed {
                    deployment, reason, ..
                } => ("killed", Some(deployment), Some(reason)),
                Lookup::Missing => ("off", None, None),
            };
            Effective {
                plugin: plugin.to_owned(),
                state,
                version: deployment.as_ref().map(|d| d.plugin.version.clone()),
                from_region: deployment.as_ref().map(|d| d.region.clone()),
                revision: deployment.as_ref().map(|d| d.revision),
                kill_reason,
            }
        })
        .collect();
    Ok(Json(RegionPlugins {
        region,
        rows,
        kills,
        effective,
    }))
}

fn row_not_found(region: &str, plugin: &str) -> ApiError {
    ApiError::new(
        ErrorCode::EnablementNotFound,
        format!("region {region} has no setting of its own for {plugin}"),
    )
}

#[utoipa::path(
    get,
    path = "/admin/v1/regions/{region}/plugins/{plugin}",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm"), ("plugin" = String, Path, description = "The plugin id")),
    responses((status = 200, description = "The region's row for the plugin"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn get_row(
    State(state): State<AppState>,
    admin: Admin,
    Path((region, plugin)): Path<(String, String)>,
) -> Result<Json<Enablement>, ApiError> {
    checked(&region, &plugin)?;
    admin.may_read(Some(&region))?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    enablement::get(&mut connection.conn(), &region, &plugin)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| row_not_found(&region, &plugin))
}

/// What a region runs of a plugin.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RowBody {
    /// The version (needed when enabled).
    #[serde(default)]
    version: Option<String>,
    /// On (default) or off.
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    /// The region's settings, checked against the manifest's `config_schema`.
    #[serde(default)]
    #[schema(value_type = Object)]
    config: Map<String, Value>,
    /// Only customers of these tiers (empty: all).
    #[serde(default)]
    tiers: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    starts_at_ms: Option<i64>,
    #[serde(default)]
    ends_at_ms: Option<i64>,
    #[serde(default)]
    points_validity_days: Option<u32>,
    /// Hosts the plugin may reach through `outbound` in this subtree (of those its manifest
    /// asks for).
    #[serde(default)]
    outbound_hosts: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// The response to a change: the row before and after.
#[derive(Serialize)]
struct RowChange {
    before: Option<Enablement>,
    after: Enablement,
}

#[utoipa::path(
    put,
    path = "/admin/v1/regions/{region}/plugins/{plugin}",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm"), ("plugin" = String, Path, description = "The plugin id")),
    request_body = RowBody,
    responses((status = 200, description = "The row before and after"), (status = 400, description = "The settings do not fit; the message names the path"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found"), (status = 409, description = "The version is not approved")),
    security(("admin_token" = []))
)]
async fn put_row(
    State(state): State<AppState>,
    admin: Admin,
    Path((region, plugin)): Path<(String, String)>,
    JsonBody(body): JsonBody<RowBody>,
) -> Result<Json<RowChange>, ApiError> {
    checked(&region, &plugin)?;
    admin.may_write(Some(&region))?;
    let setting = Setting {
        config: body.config,
        tiers: body.tiers,
        tags: body.tags,
        starts_at_ms: body.starts_at_ms,
        ends_at_ms: body.ends_at_ms,
        points_validity_days: body.points_validity_days,
        outbound_hosts: body.outbound_hosts,
    };
    let limits = &state.config;
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    existing_region(&mut conn, &region).await?;
    match &body.version {
        Some(version) => enablement::check(
            &mut conn,
            &plugin,
            version,
            &setting,
            limits.registry.config_bytes_max,
            limits.ledger.points_validity_days_max,
        )
        .await
        .map_err(enable_error)?,
        None if body.enabled => {
            return Err(ApiError::new(
                ErrorCode::EnablementInvalid,
                "say which version to enable: {\"version\": \"1.2.0\", ...}",
            ));
        }
        None => enablement::check_setting(
            &setting,
            limits.registry.config_bytes_max,
            limits.ledger.points_validity_days_max,
        )
        .map_err(enable_error)?,
    }
    let change = Change {
        version: body.version.as_deref(),
        enabled: body.enabled,
        setting: &setting,
        by: &admin.0.name,
    };
    let (before, after) = enablement::put(&mut conn, &region, &plugin, &change, ledger::now_ms())
        .await
        .map_err(ApiError::internal)?;
    let target = format!("region/{region}/plugin/{plugin}");
    audit(
        &mut conn,
        &admin,
        "enablement.put",
        target,
        &region,
        before.as_ref(),
        Some(&after),
    )
    .await?;
    transaction.commit().await.map_err(ApiError::internal)?;
    apply_here(&state).await;
    Ok(Json(RowChange { before, after }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/regions/{region}/plugins/{plugin}",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm"), ("plugin" = String, Path, description = "The plugin id")),
    responses((status = 200, description = "The removed row; the region inherits again"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn delete_row(
    State(state): State<AppState>,
    admin: Admin,
    Path((region, plugin)): Path<(String, String)>,
) -> Result<Json<Enablement>, ApiError> {
    checked(&region, &plugin)?;
    admin.may_write(Some(&region))?;
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = enablement::remove(&mut conn, &region, &plugin)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| row_not_found(&region, &plugin))?;
    let target = format!("region/{region}/plugin/{plugin}");
    audit(
        &mut conn,
        &admin,
        "enablement.remove",
        target,
        &region,
        Some(&before),
        None::<()>,
    )
    .await?;
    transaction.commit().await.map_err(ApiError::internal)?;
    apply_here(&state).await;
    Ok(Json(before))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KillBody {
    /// Why: shown to other admins and kept in the audit.
    reason: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/regions/{region}/plugins/{plugin}/kill",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm"), ("plugin" = String, Path, description = "The plugin id")),
    request_body = KillBody,
    responses((status = 200, description = "The kill switch, in force at once"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn kill(
    State(state): State<AppState>,
    admin: Admin,
    Path((region, plugin)): Path<(String, String)>,
    JsonBody(body): JsonBody<KillBody>,
) -> Result<Json<Kill>, ApiError> {
    checked(&region, &plugin)?;
    admin.may_write(Some(&region))?;
    if body.reason.trim().is_empty() || body.reason.len() > 2000 {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "say why (reason: 1 to 2000 bytes); other admins read it",
        ));
    }
    let kill = Kill {
        region: region.clone(),
        plugin_id: plugin.clone(),
        reason: body.reason,
        killed_by: admin.0.name.clone(),
        killed_at_ms: ledger::now_ms(),
    };
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    existing_region(&mut conn, &region).await?;
    enablement::kill(&mut conn, &kill)
        .await
        .map_err(ApiError::internal)?;
    let target = format!("region/{region}/plugin/{plugin}/kill");
    audit(
        &mut conn,
        &admin,
        "plugin.kill",
        target,
        &region,
        None::<()>,
        Some(&kill),
    )
    .await?;
    transaction.commit().await.map_err(ApiError::internal)?;
    apply_here(&state).await;
    tracing::warn!(%plugin, %region, admin = %admin.0.name, "plugin killed");
    Ok(Json(kill))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/regions/{region}/plugins/{plugin}/kill",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm"), ("plugin" = String, Path, description = "The plugin id")),
    responses((status = 200, description = "The lifted kill switch"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn revive(
    State(state): State<AppState>,
    admin: Admin,
    Path((region, plugin)): Path<(String, String)>,
) -> Result<Json<Kill>, ApiError> {
    checked(&region, &plugin)?;
    admin.may_write(Some(&region))?;
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = enablement::revive(&mut conn, &region, &plugin)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::EnablementNotFound,
                format!("{plugin} is not killed in {region}"),
            )
        })?;
    let target = format!("region/{region}/plugin/{plugin}/kill");
    audit(
        &mut conn,
        &admin,
        "plugin.revive",
        target,
        &region,
        Some(&before),
        None::<()>,
    )
    .await?;
    transaction.commit().await.map_err(ApiError::internal)?;
    apply_here(&state).await;
    Ok(Json(before))
}

#[utoipa::path(
    post,
    path = "/admin/v1/regions/{region}/plugins/{plugin}/rollback",
    tag = "admin",
    params(("region" = String, Path, description = "The region, such as cn-fj-xm"), ("plugin" = String, Path, description = "The plugin id")),
    responses((status = 200, description = "The row before and after"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found"), (status = 409, description = "No earlier version to roll back to")),
    security(("admin_token" = []))
)]
async fn rollback(
    State(state): State<AppState>,
    admin: Admin,
    Path((region, plugin)): Path<(String, String)>,
) -> Result<Json<RowChange>, ApiError> {
    checked(&region, &plugin)?;
    admin.may_write(Some(&region))?;
    let limits = &state.config;
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let row = enablement::get(&mut conn, &region, &plugin)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| row_not_found(&region, &plugin))?;
    let target = enablement::rollback_target(
        &mut conn,
        &row,
        limits.registry.config_bytes_max,
        limits.ledger.points_validity_days_max,
    )
    .await
    .map_err(enable_error)?;
    let change = Change {
        version: Some(&target),
        enabled: row.enabled,
        setting: &row.setting,
        by: &admin.0.name,
    };
    let (before, after) = enablement::put(&mut conn, &region, &plugin, &change, ledger::now_ms())
        .await
        .map_err(ApiError::internal)?;
    let audit_target = format!("region/{region}/plugin/{plugin}");
    audit(
        &mut conn,
        &admin,
        "enablement.rollback",
        audit_target,
        &region,
        before.as_ref(),
        Some(&after),
    )
    .await?;
    transaction.commit().await.map_err(ApiError::internal)?;
    apply_here(&state).await;
    Ok(Json(RowChange { before, after }))
}
