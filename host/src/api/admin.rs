//! Admin endpoints. Every one takes an admin token and checks its role and region scope;
//! every change is recorded in the admin audit in the same transaction.
//!
//! - `POST /admin/v1/budgets/{plugin}/{region}` funds a plugin's budget in a region from the
//!   issuer (idempotent by `Idempotency-Key`); `GET` the same path reports it.
//! - `POST /admin/v1/customers:import` imports customers (JSON Lines or CSV, streamed);
//!   `GET`/`PATCH /admin/v1/customers/{customer_number}` read and change one.
//! - `GET /admin/v1/audit?cursor=&limit=` pages through the admin audit, newest first.
//! - `PUT`/`GET /admin/v1/partners/{id}` set and read a partner and the plugins it may call;
//!   `POST /admin/v1/partners/{id}/keys` issues it an API key (shown once). Head office only:
//!   partners are not tied to one region.

use axum::Json;
use axum::body::Body;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::body::Json as JsonBody;
use super::{Admin, idempotency_key};
use crate::AppState;
use crate::audit::admin::{self as admin_audit, Change, Entry};
use crate::error::{ApiError, ErrorCode};
use crate::identity::customers::{self, Profile, Saved, Status, TagChange};
use crate::identity::import::{Format, ImportError, ImportLimits, Importer, Summary};
use crate::identity::is_region;
use crate::identity::partners::{self, Partner};
use crate::ledger::{self, ADMIN_SCOPE, BudgetReport, LedgerError, Operation, Request};
use crate::registry::is_plugin_id;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The admin routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report, fund))
        .routes(routes!(import))
        .routes(routes!(customer, update_customer))
        .routes(routes!(audit))
        .routes(routes!(partner, put_partner))
        .routes(routes!(create_partner_key))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FundBody {
    /// Points to move from the issuer into the budget.
    points: i64,
    /// A note kept with the posting.
    #[serde(default)]
    memo: String,
}

#[derive(Serialize)]
struct Funded {
    posting: String,
    budget: BudgetReport,
}

fn checked_path(plugin: &str, region: &str) -> Result<(), ApiError> {
    if !is_plugin_id(plugin) || !is_region(region) {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "plugin ids and regions are lowercase letters, digits and '-'",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/admin/v1/budgets/{plugin}/{region}",
    tag = "admin",
    params(("plugin" = String, Path, description = "The plugin id"), ("region" = String, Path, description = "The region, such as cn-fj-xm"), ("Idempotency-Key" = String, Header, description = "Funds once per key")),
    request_body = FundBody,
    responses((status = 200, description = "The posting and the budget after"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 409, description = "Conflict")),
    security(("admin_token" = []))
)]
async fn fund(
    State(state): State<AppState>,
    admin: Admin,
    Path((plugin, region)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<FundBody>,
) -> Result<Json<Funded>, ApiError> {
    checked_path(&plugin, &region)?;
    admin.may_write(Some(&region))?;
    let key = idempotency_key(&headers)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::RequestInvalid,
            "funding needs an Idempotency-Key header, so a retry funds once",
        )
    })?;
    if body.memo.len() > 200 {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "memo is at most 200 bytes",
        ));
    }
    let points_max = state.config.ledger.fund_points_max;
    if body.points > points_max {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            format!(
                "one funding moves at most {points_max} points (ledger.fund_points_max); \
                 fund in several requests or raise the limit"
            ),
        ));
    }
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let request = Request {
        scope: ADMIN_SCOPE,
        key: &key,
        now_ms,
        memo: &body.memo,
        id: None,
    };
    let mut conn = transaction.conn();
    let before = ledger::budget_report(&mut conn, &plugin, &region)
        .await
        .map_err(ApiError::internal)?;
    let fund = Operation::Fund {
        amount: body.points,
    };
    let posting = match ledger::apply(&mut conn, &request, &plugin, &region, &fund).await {
        Ok(posting) => posting,
        Err(LedgerError::Database(error)) => return Err(ApiError::internal(error)),
        Err(LedgerError::AmountMustBePositive) => {
            return Err(ApiError::new(
                ErrorCode::RequestInvalid,
                "points must be a positive whole number",
            ));
        }
        Err(error) => return Err(ApiError::new(ErrorCode::LedgerConflict, error.to_string())),
    };
    let budget = ledger::budget_report(&mut conn, &plugin, &region)
        .await
        .map_err(ApiError::internal)?;
    // A retry funds nothing, so it changes nothing to record.
    if budget != before {
        let change = Change {
            actor: &admin.0.name,
            action: "budget.fund",
            target: format!("budget/{plugin}/{region}"),
            region: Some(&region),
            before: serde_json::to_value(&before).ok(),
            after: serde_json::to_value(&budget).ok(),
        };
        admin_audit::record(&mut conn, &change, now_ms)
            .await
            .map_err(ApiError::internal)?;
    }
    transaction.commit().await.map_err(ApiError::internal)?;
    tracing::info!(%plugin, %region, points = body.points, %posting, "budget funded");
    Ok(Json(Funded { posting, budget }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/budgets/{plugin}/{region}",
    tag = "admin",
    params(("plugin" = String, Path, description = "The plugin id"), ("region" = String, Path, description = "The region, such as cn-fj-xm")),
    responses((status = 200, description = "Funded, awarded, spent back and remaining"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it")),
    security(("admin_token" = []))
)]
async fn report(
    State(state): State<AppState>,
    admin: Admin,
    Path((plugin, region)): Path<(String, String)>,
) -> Result<Json<BudgetReport>, ApiError> {
    checked_path(&plugin, &region)?;
    admin.may_read(Some(&region))?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let report = ledger::budget_report(&mut connection.conn(), &plugin, &region)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    /// `jsonl` or `csv`; default from the Content-Type.
    #[serde(default)]
    format: Option<String>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/customers:import",
    tag = "admin",
    params(("format" = Option<String>, Query, description = "jsonl or csv (default: from the Content-Type)")),
    request_body(content_type = "application/x-ndjson", description = "One customer per line (JSON Lines, or CSV with text/csv)"),
    responses((status = 200, description = "Counts of inserted, updated, unchanged and rejected lines, with the first errors"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it")),
    security(("admin_token" = []))
)]
/// Streams the body into the importer: constant memory, whatever the file's length.
async fn import(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Summary>, ApiError> {
    // Importing writes customers; the admin's scope then limits which lines it may write.
    admin.may_write(admin.0.region.as_deref())?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let name = query.format.as_deref().unwrap_or(match content_type {
        t if t.starts_with("text/csv") => "csv",
        t if t.starts_with("application/x-ndjson") || t.starts_with("application/jsonl") => "jsonl",
        _ => "",
    });
    let format = Format::from_name(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ImportInvalid,
            "say the format: ?format=jsonl or ?format=csv, or Content-Type \
             application/x-ndjson or text/csv",
        )
    })?;
    let limits = ImportLimits {
        line_bytes_max: state.config.identity.import_line_bytes_max,
        errors_listed_max: state.config.identity.import_errors_listed_max,
    };
    let mut importer = Importer::new(
        state.db.write.clone(),
        format,
        &admin.0.name,
        admin.0.region.as_deref(),
        limits,
    );
    let failed = |error: ImportError| match error {
        ImportError::Header(message) => ApiError::new(ErrorCode::ImportInvalid, message),
        ImportError::Database(error) => ApiError::internal(error),
    };
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::new(
                ErrorCode::RequestInvalid,
                format!("the upload broke off: {error}; the lines before it were imported"),
            )
        })?;
        if let Ok(chunk) = frame.into_data() {
            importer.feed(&chunk).await.map_err(failed)?;
        }
    }
    let summary = importer.finish().await.map_err(failed)?;
    state.customers.clear();
    tracing::info!(
        admin = %admin.0.name,
        inserted = summary.inserted,
        updated = summary.updated,
        rejected = summary.rejected,
        "customers imported"
    );
    Ok(Json(summary))
}

#[derive(Serialize)]
struct CustomerView {
    #[serde(flatten)]
    profile: Profile,
    /// The latest tag changes, newest first.
    tag_history: Vec<TagChange>,
}

/// Tag changes shown with a customer.
const TAG_HISTORY_SHOWN: i64 = 50;

async fn load_customer(
    conn: &mut crate::db::Conn<'_>,
    admin: &Admin,
    number: &str,
) -> Result<Profile, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::CustomerNotFound,
            "no customer with this customer number; import them first",
        )
    };
    let profile = customers::get(conn, number)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    // Outside the admin's regions a customer is as absent as one never imported: a 403 would
    // tell a branch which customer numbers the bank has elsewhere.
    admin
        .may_read(Some(&profile.region))
        .map_err(|_| not_found())?;
    Ok(profile)
}

#[utoipa::path(
    get,
    path = "/admin/v1/customers/{customer}",
    tag = "admin",
    params(("customer" = String, Path, description = "The bank's customer number")),
    responses((status = 200, description = "The customer and the latest tag changes"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn customer(
    State(state): State<AppState>,
    admin: Admin,
    Path(number): Path<String>,
) -> Result<Json<CustomerView>, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let mut conn = connection.conn();
    let profile = load_customer(&mut conn, &admin, &number).await?;
    let tag_history = customers::tag_history(&mut conn, &number, TAG_HISTORY_SHOWN)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CustomerView {
        profile,
        tag_history,
    }))
}

/// Fields to change; the others stay.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerPatch {
    region: Option<String>,
    tier: Option<String>,
    tags: Option<Vec<String>>,
    /// `active` or `frozen`.
    #[schema(value_type = Option<String>)]
    status: Option<Status>,
}

#[utoipa::path(
    patch,
    path = "/admin/v1/customers/{customer}",
    tag = "admin",
    params(("customer" = String, Path, description = "The bank's customer number")),
    request_body = CustomerPatch,
    responses((status = 200, description = "The customer after the change"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn update_customer(
    State(state): State<AppState>,
    admin: Admin,
    Path(number): Path<String>,
    JsonBody(patch): JsonBody<CustomerPatch>,
) -> Result<Json<CustomerView>, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::RequestInvalid, message);
    if let Some(region) = &patch.region
        && !is_region(region)
    {
        return Err(invalid(format!(
            "region {region:?} is not a region: 1 to 64 lowercase letters, digits or '-'"
        )));
    }
    if let Some(tier) = &patch.tier {
        customers::check_tier(tier).map_err(|reason| invalid(format!("tier: {reason}")))?;
    }
    let tags = patch
        .tags
        .map(customers::normalize_tags)
        .transpose()
        .map_err(|reason| invalid(format!("tags: {reason}")))?;
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = load_customer(&mut conn, &admin, &number).await?;
    admin.may_write(Some(&before.region))?;
    let mut after = before.clone();
    if let Some(region) = patch.region {
        admin.may_write(Some(&region))?;
        after.region = region;
    }
    after.tier = patch.tier.unwrap_or(after.tier);
    after.tags = tags.unwrap_or(after.tags);
    after.status = patch.status.unwrap_or(after.status);
    if after != before {
        after.updated_at_ms = now_ms;
        let saved = [Saved {
            before: Some(&before),
            after: &after,
        }];
        customers::save(&mut conn, &saved, &admin.0.name, now_ms)
            .await
            .map_err(ApiError::internal)?;
        let change = Change {
            actor: &admin.0.name,
            action: "customer.update",
            target: format!("customer/{number}"),
            region: Some(&after.region),
            before: serde_json::to_value(&before).ok(),
            after: serde_json::to_value(&after).ok(),
        };
        admin_audit::record(&mut conn, &change, now_ms)
            .await
            .map_err(ApiError::internal)?;
    }
    let tag_history = customers::tag_history(&mut conn, &number, TAG_HISTORY_SHOWN)
        .await
        .map_err(ApiError::internal)?;
    transaction.commit().await.map_err(ApiError::internal)?;
    state.customers.evict(&number);
    Ok(Json(CustomerView {
        profile: after,
        tag_history,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// Entries per page (default and maximum 100).
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize)]
struct AuditPage {
    entries: Vec<Entry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

/// Entries per audit page at most.
const AUDIT_PAGE_MAX: u32 = 100;

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "admin",
    params(("cursor" = Option<String>, Query, description = "The next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "Entries per page (at most 100)")),
    responses((status = 200, description = "Admin changes, newest first"), (status = 401, description = "No valid credential")),
    security(("admin_token" = []))
)]
async fn audit(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = super::page_limit(query.limit, AUDIT_PAGE_MAX, AUDIT_PAGE_MAX);
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    // A scoped admin sees the entries of its own subtree.
    let entries = admin_audit::page(
        &mut connection.conn(),
        admin.0.region.as_deref(),
        query.cursor.as_deref(),
        i64::from(limit),
    )
    .await
    .map_err(ApiError::internal)?;
    let next_cursor = super::next_cursor(&entries, limit, |entry| &entry.id);
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}

async fn load_partner(conn: &mut crate::db::Conn<'_>, id: &str) -> Result<Partner, ApiError> {
    partners::get(conn, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::PartnerNotFound,
                format!("no partner {id:?}; create it with PUT /admin/v1/partners/{id}"),
            )
        })
}

#[utoipa::path(
    get,
    path = "/admin/v1/partners/{partner}",
    tag = "admin",
    params(("partner" = String, Path, description = "The partner id")),
    responses((status = 200, description = "The partner and the plugins it may call"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn partner(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Partner>, ApiError> {
    admin.may_read(None)?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    Ok(Json(load_partner(&mut connection.conn(), &id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PartnerBody {
    name: String,
    plugins: Vec<String>,
}

#[utoipa::path(
    put,
    path = "/admin/v1/partners/{partner}",
    tag = "admin",
    params(("partner" = String, Path, description = "The partner id")),
    request_body = PartnerBody,
    responses((status = 200, description = "The partner"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it")),
    security(("admin_token" = []))
)]
async fn put_partner(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PartnerBody>,
) -> Result<Json<Partner>, ApiError> {
    admin.may_write(None)?;
    let mut plugins = body.plugins;
    plugins.sort();
    plugins.dedup();
    let after = Partner {
        id,
        name: body.name,
        plugins,
    };
    partners::check(&after).map_err(|message| ApiError::new(ErrorCode::RequestInvalid, message))?;
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = partners::get(&mut conn, &after.id)
        .await
        .map_err(ApiError::internal)?;
    if before.as_ref() != Some(&after) {
        partners::put(&mut conn, &after, now_ms)
            .await
            .map_err(ApiError::internal)?;
        let change = Change {
            actor: &admin.0.name,
            action: "partner.put",
            target: format!("partner/{}", after.id),
            region: None,
            before: before.as_ref().and_then(|b| serde_json::to_value(b).ok()),
            after: serde_json::to_value(&after).ok(),
        };
        admin_audit::record(&mut conn, &change, now_ms)
            .await
            .map_err(ApiError::internal)?;
    }
    transaction.commit().await.map_err(ApiError::internal)?;
    Ok(Json(after))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// A name for the key (which till or system uses it).
    name: String,
}

#[derive(Serialize)]
struct IssuedKey {
    partner: String,
    name: String,
    /// The key: shown this once, stored only as a digest.
    key: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/partners/{partner}/keys",
    tag = "admin",
    params(("partner" = String, Path, description = "The partner id")),
    request_body = KeyBody,
    responses((status = 200, description = "The new key, shown this once"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn create_partner_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<KeyBody>,
) -> Result<Json<IssuedKey>, ApiError> {
    admin.may_write(None)?;
    if body.name.trim().is_empty() || body.name.len() > 64 {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "a key name is 1 to 64 bytes",
        ));
    }
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    load_partner(&mut conn, &id).await?;
    let key = partners::create_key(&mut conn, &id, &body.name, now_ms)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::RequestInvalid,
                format!(
                    "partner {id:?} already has a key named {:?}; choose another name",
                    body.name
                ),
            )
        })?;
    let change = Change {
        actor: &admin.0.name,
        action: "partner_key.create",
        target: format!("partner/{id}/keys/{}", body.name),
        region: None,
        before: None,
        after: Some(serde_json::json!({"partner": id, "name": body.name})),
    };
    admin_audit::record(&mut conn, &change, now_ms)
        .await
        .map_err(ApiError::internal)?;
    transaction.commit().await.map_err(ApiError::internal)?;
    Ok(Json(IssuedKey {
        partner: id,
        name: body.name,
        key,
    }))
}
