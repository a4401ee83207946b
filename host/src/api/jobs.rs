//! Admins and plugins' scheduled jobs.
//!
//! - `GET /admin/v1/jobs?plugin=&region=&status=&cursor=&limit=` pages through jobs, newest
//!   first (a branch admin sees its own subtree).
//! - `GET /admin/v1/jobs/{id}` reads one.
//! - `POST /admin/v1/jobs/{id}/cancel` with `{"reason": "..."}` cancels a pending job; the
//!   change is recorded in the admin audit.

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::body::Json as JsonBody;
use crate::AppState;
use crate::audit::admin::{self as admin_audit, Change};
use crate::error::{ApiError, ErrorCode};
use crate::identity::is_region;
use crate::jobs::{self, JobFilter, JobView};
use crate::registry::is_plugin_id;

/// The job routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(cancel_job))
}

const STATUSES: [&str; 5] = ["pending", "running", "done", "failed", "cancelled"];

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    /// One plugin only.
    plugin: Option<String>,
    /// Regions within this one only (default: the admin's scope).
    region: Option<String>,
    /// `pending`, `running`, `done`, `failed` or `cancelled`.
    status: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Jobs per page (at most `audit.page_max`).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct JobPage {
    jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/jobs",
    tag = "admin",
    params(JobsQuery),
    responses((status = 200, description = "Jobs, newest first", body = JobPage), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The scope does not allow it")),
    security(("admin_token" = []))
)]
async fn list_jobs(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<JobsQuery>,
) -> Result<Json<JobPage>, ApiError> {
    if query.plugin.as_deref().is_some_and(|p| !is_plugin_id(p)) {
        return Err(invalid(
            "plugin ids are lowercase letters, digits and '-'".into(),
        ));
    }
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(invalid(format!(
            "status is one of {}; got {status:?}",
            STATUSES.join(", ")
        )));
    }
    if let Some(region) = &query.region {
        if !is_region(region) {
            return Err(invalid(
                "regions are lowercase letters, digits and '-'".into(),
            ));
        }
        admin.may_read(Some(region))?;
    }
    let limit = super::page_limit(query.limit, 50, state.config.audit.page_max);
    let filter = JobFilter {
        plugin: query.plugin.as_deref(),
        status: query.status.as_deref(),
        scope: query.region.as_deref().or(admin.0.region.as_deref()),
        before: query.cursor.as_deref(),
        limit: i64::from(limit),
    };
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let jobs = jobs::page(&mut connection.conn(), &filter)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = super::next_cursor(&jobs, limit, |job| &job.id);
    Ok(Json(JobPage { jobs, next_cursor }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/jobs/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The job id")),
    responses((status = 200, description = "The job", body = JobView), (status = 401, description = "No valid credential"), (status = 403, description = "The scope does not allow it"), (status = 404, description = "No such job")),
    security(("admin_token" = []))
)]
async fn show_job(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let job = load(&mut connection.conn(), &id).await?;
    admin.may_read(Some(&job.region))?;
    Ok(Json(job))
}

async fn load(conn: &mut crate::db::Conn<'_>, id: &str) -> Result<JobView, ApiError> {
    jobs::get(conn, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::JobNotFound, format!("no job {id:?}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// Why: kept with the job and in the admin audit.
    reason: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{id}/cancel",
    tag = "admin",
    params(("id" = String, Path, description = "The job id")),
    request_body = CancelBody,
    responses((status = 200, description = "The job, cancelled", body = JobView), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "No such job"), (status = 409, description = "The job is no longer pending")),
    security(("admin_token" = []))
)]
async fn cancel_job(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CancelBody>,
) -> Result<Json<JobView>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(invalid(
            "reason is 1 to 500 bytes: say why the job is cancelled".into(),
        ));
    }
    let now_ms = crate::ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = load(&mut conn, &id).await?;
    admin.may_write(Some(&before.region))?;
    let cancelled = jobs::cancel(
        &mut conn,
        &id,
        &format!("cancelled by {}: {reason}", admin.0.name),
        now_ms,
    )
    .await
    .map_err(ApiError::internal)?;
    if !cancelled {
        return Err(ApiError::new(
            ErrorCode::JobNotPending,
            format!(
                "job {id:?} is {}, not pending; only pending jobs can be cancelled",
                before.status
            ),
        ));
    }
    let after = load(&mut conn, &id).await?;
    let change = Change {
        actor: &admin.0.name,
        action: "job.cancel",
        target: format!("job/{}/{id}", before.plugin_id),
        region: Some(&before.region),
        before: serde_json::to_value(&before).ok(),
        after: serde_json::to_value(&after).ok(),
    };
    admin_audit::record(&mut conn, &change, now_ms)
        .await
        .map_err(ApiError::internal)?;
    transaction.commit().await.map_err(ApiError::internal)?;
    Ok(Json(after))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::RequestInvalid, message)
}
