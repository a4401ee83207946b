//! Invocation records for admins, and the public side of verifiable draws.
//!
//! - `GET /admin/v1/invocations?plugin=&customer=&region=&cursor=&limit=` pages through
//!   invocation records, newest first; `GET /admin/v1/invocations/{id}` reads one.
//! - `GET /v1/fairness/commitments?plugin=&region=&from=&to=` lists draw-seed commitments
//!   (and seeds of days that are over). No credential: anyone may check.
//! - `GET /v1/fairness/draws/{invocation}` shows an invocation's draws and, once its seed is
//!   revealed, recomputes them. No credential either.

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use crate::AppState;
use crate::audit::fairness::{Commitment, CommitmentFilter};
use crate::audit::{self, DrawView, Invocation, InvocationFilter};
use crate::calendar::Date;
use crate::error::{ApiError, ErrorCode};
use crate::identity::is_region;
use crate::registry::is_plugin_id;

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invocations))
        .routes(routes!(invocation))
        .routes(routes!(commitments))
        .routes(routes!(draws))
}

/// The most days one commitments listing spans.
const COMMITMENT_DAYS_MAX: i64 = 92;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct InvocationsQuery {
    /// One plugin only.
    plugin: Option<String>,
    /// One customer only (the bank's customer number; records hold per-plugin pseudonyms).
    customer: Option<String>,
    /// Regions within this one only (default: the admin's scope).
    region: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Records per page (at most `audit.page_max`).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct InvocationPage {
    invocations: Vec<Invocation>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/invocations",
    tag = "admin",
    params(InvocationsQuery),
    responses((status = 200, description = "Invocation records, newest first", body = InvocationPage), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The scope does not allow it")),
    security(("admin_token" = []))
)]
async fn invocations(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<InvocationsQuery>,
) -> Result<Json<InvocationPage>, ApiError> {
    if let Some(plugin) = &query.plugin
        && !is_plugin_id(plugin)
    {
        return Err(invalid("plugin ids are lowercase letters, digits and '-'"));
    }
    if let Some(region) = &query.region {
        if !is_region(region) {
            return Err(invalid("regions are lowercase letters, digits and '-'"));
        }
        admin.may_read(Some(region))?;
    }
    let scope = query.region.as_deref().or(admin.0.region.as_deref());
    let callers = query.customer.as_deref().map(|customer| {
        let plugins: Vec<String> = match &query.plugin {
            Some(plugin) => vec![plugin.clone()],
            None => state
                .registry
                .snapshot()
                .plugin_ids()
                .map(str::to_owned)
                .collect(),
        };
        plugins
            .iter()
            .map(|plugin| state.identity.pseudonym(plugin, customer))
            .collect()
    });
    let limit = super::page_limit(query.limit, 50, state.config.audit.page_max);
    let filter = InvocationFilter {
        plugin: query.plugin.as_deref(),
        callers,
        scope,
        before: query.cursor.as_deref(),
        limit: i64::from(limit),
    };
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let invocations = audit::page(&mut connection.conn(), &filter)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = super::next_cursor(&invocations, limit, |i| &i.id);
    Ok(Json(InvocationPage {
        invocations,
        next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/invocations/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The invocation (request) id")),
    responses((status = 200, description = "The invocation record", body = Invocation), (status = 401, description = "No valid credential"), (status = 403, description = "The scope does not allow it"), (status = 404, description = "No such invocation")),
    security(("admin_token" = []))
)]
async fn invocation(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Invocation>, ApiError> {
    let found = load(&state, &id).await?;
    admin.may_read(Some(&found.region))?;
    Ok(Json(found))
}

async fn load(state: &AppState, id: &str) -> Result<Invocation, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    audit::get(&mut connection.conn(), id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvocationNotFound,
                format!(
                    "no invocation {id:?} is on record (records are kept for {} days)",
                    state.config.audit.retention_days
                ),
            )
        })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct CommitmentsQuery {
    /// One plugin only.
    plugin: Option<String>,
    /// One region only (the region whose enablement runs the plugin).
    region: Option<String>,
    /// The first day, `YYYY-MM-DD` (default: today).
    from: Option<String>,
    /// The last day, `YYYY-MM-DD` (default: the last day committed in advance); at most 92
    /// days after `from`.
    to: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CommitmentList {
    commitments: Vec<Commitment>,
}

#[utoipa::path(
    get,
    path = "/v1/fairness/commitments",
    tag = "customer",
    params(CommitmentsQuery),
    responses((status = 200, description = "Draw-seed commitments by day, with the seeds of days that are over", body = CommitmentList), (status = 400, description = "Bad input; the error names it"))
)]
async fn commitments(
    State(state): State<AppState>,
    Query(query): Query<CommitmentsQuery>,
) -> Result<Json<CommitmentList>, ApiError> {
    let calendar = &state.calendar;
    let now_ms = state.registry.clock.now_ms();
    let day = |text: &Option<String>, name: &str, default: Date| match text {
        None => Ok(default),
        Some(text) => Date::parse(text)
            .ok_or_else(|| invalid(&format!("{name} must be a date, YYYY-MM-DD; got {text:?}"))),
    };
    let today = calendar.day_of(now_ms);
    let from = day(&query.from, "from", today)?;
    let ahead = i64::from(state.config.audit.commit_days_ahead);
    let to = day(
        &query.to,
        "to",
        Date::from_days(from.days().max(today.days()) + ahead),
    )?;
    if to < from || to.days() - from.days() > COMMITMENT_DAYS_MAX {
        return Err(invalid(&format!(
            "`to` must be on or after `from` and at most {COMMITMENT_DAYS_MAX} days after it"
        )));
    }
    if query.plugin.as_deref().is_some_and(|p| !is_plugin_id(p))
        || query.region.as_deref().is_some_and(|r| !is_region(r))
    {
        return Err(invalid(
            "plugin ids and regions are lowercase letters, digits and '-'",
        ));
    }
    let filter = CommitmentFilter {
        from,
        to,
        plugin: query.plugin.as_deref(),
        region: query.region.as_deref(),
        limit: i64::from(state.config.audit.page_max),
    };
    let commitments = state
        .fairness
        .commitments(&filter, now_ms)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CommitmentList { commitments }))
}

/// An invocation's draws, and whether they check out.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrawRecord {
    /// The invocation id.
    pub invocation: String,
    /// The plugin.
    pub plugin: String,
    /// The commitment of the seed the draws came from, and the seed once revealed.
    pub seed: PublicSeed,
    /// The recorded draws, in order.
    pub draws: Vec<DrawView>,
    /// The host's own check, once the seed is revealed; `null` before.
    pub verification: Option<Verification>,
}

/// The seed an invocation drew from, as the public sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicSeed {
    /// The region of the seed.
    pub region: String,
    /// The day of the seed.
    pub day: String,
    /// SHA-256 of the seed, hex.
    pub commitment: String,
    /// When the commitment was stored, ms since the Unix epoch.
    pub published_at_ms: i64,
    /// When the day started.
    pub starts_at_ms: i64,
    /// When the day ends and the seed is revealed.
    pub ends_at_ms: i64,
    /// The seed, hex; `null` until `ends_at_ms`.
    pub seed: Option<String>,
}

/// The result of recomputing an invocation's draws from the revealed seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// Whether SHA-256 of the revealed seed is the published commitment.
    pub commitment_matches: bool,
    /// Whether every draw is what the seed gives, none skipped.
    pub draws_match: bool,
    /// Both.
    pub verified: bool,
    /// The draws that do not match, by `seq`.
    pub mismatched: Vec<u64>,
}

/// Checks `draws` of `invocation` against a revealed `seed` (hex) and `commitment`.
pub fn verify(invocation: &str, seed: &str, commitment: &str, draws: &[DrawView]) -> Verification {
    let seed_bytes = hex::decode(seed).unwrap_or_default();
    let commitment_matches =
        seed_bytes.len() == 32 && hex::encode(Sha256::digest(&seed_bytes)) == commitment;
    let parsed: Vec<Option<audit::Draw>> = draws.iter().map(DrawView::to_draw).collect();
    let mismatched: Vec<u64> = if parsed.iter().any(Option::is_none) {
        draws.iter().map(|d| d.seq).collect()
    } else {
        let parsed: Vec<audit::Draw> = parsed.into_iter().flatten().collect();
        audit::replay(&seed_bytes, invocation, &parsed)
            .into_iter()
            .filter(|r| !r.matches)
            .map(|r| r.seq)
            .collect()
    };
    let draws_match = mismatched.is_empty();
    Verification {
        commitment_matches,
        draws_match,
        verified: commitment_matches && draws_match,
        mismatched,
    }
}

#[utoipa::path(
    get,
    path = "/v1/fairness/draws/{invocation}",
    tag = "customer",
    params(("invocation" = String, Path, description = "The invocation (request) id, from the x-request-id header of the call")),
    responses((status = 200, description = "The invocation's draws and, once its seed is revealed, their check", body = DrawRecord), (status = 404, description = "No such invocation"))
)]
async fn draws(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DrawRecord>, ApiError> {
    let found = load(&state, &id).await?;
    let now_ms = state.registry.clock.now_ms();
    let commitment = state
        .fairness
        .commitment(&found.plugin, &found.seed.region, &found.seed.day, now_ms)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvocationNotFound,
                format!("the draw seed of invocation {id:?} is no longer kept"),
            )
        })?;
    let verification = commitment
        .seed
        .as_deref()
        .map(|seed| verify(&found.id, seed, &commitment.commitment, &found.draws));
    Ok(Json(DrawRecord {
        invocation: found.id,
        plugin: found.plugin,
        seed: PublicSeed {
            region: commitment.region,
            day: commitment.day,
            commitment: commitment.commitment,
            published_at_ms: commitment.published_at_ms,
            starts_at_ms: commitment.starts_at_ms,
            ends_at_ms: commitment.ends_at_ms,
            seed: commitment.seed,
        },
        draws: found.draws,
        verification,
    }))
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::RequestInvalid, message)
}
