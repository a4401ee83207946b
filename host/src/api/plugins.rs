//! Plugin versions: upload, list, show, review.
//!
//! - `POST /admin/v1/plugins` uploads a bundle as `multipart/form-data` with two fields,
//!   `manifest` (the `plugin.toml`) and `component` (the `.wasm` file). Every check runs before
//!   anything is stored; a failed one is 400 `plugin_invalid` naming the problem. The version
//!   starts `submitted`. Uploading the same bytes again is answered with the stored version;
//!   the same id and version with other bytes is 409 `plugin_version_exists`.
//! - `POST /partner/v1/plugins` is the same for a partner's own plugin ids, with its API key.
//! - `GET /admin/v1/plugins[?plugin=ID]` lists versions, newest first;
//!   `GET /admin/v1/plugins/{plugin}/versions/{version}` shows one with what it requests.
//! - `POST /admin/v1/plugins/{plugin}/versions/{version}/approve` (`{"reason", "grants":
//!   {"identity_fields": [...]}}`) and `.../reject` (`{"reason"}`): `reviewer` or
//!   `head_office`, never the uploader.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};

use super::extract::{Path, Query};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::Admin;
use super::body::Json as JsonBody;
use super::partner::AuthenticatedPartner;
use crate::AppState;
use crate::audit::admin::{self as admin_audit, Change};
use crate::error::{ApiError, ErrorCode};
use crate::ledger;
use crate::registry::catalog::{self, CatalogError, Grants, Review, Stored, VersionRecord};
use crate::registry::{Manifest, is_plugin_id};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The plugin routes.
pub fn router() -> OpenApiRouter<AppState> {
    // Uploads bound each field themselves (registry.*_bytes_max), not by the body limit.
    let (schemas, paths, upload_routes) = routes!(list, upload);
    let uploads = (
        schemas,
        paths,
        upload_routes.layer(DefaultBodyLimit::disable()),
    );
    let (schemas, paths, partner_routes) = routes!(partner_upload);
    let partner_uploads = (
        schemas,
        paths,
        partner_routes.layer(DefaultBodyLimit::disable()),
    );
    OpenApiRouter::new()
        .routes(uploads)
        .routes(partner_uploads)
        .routes(routes!(show))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

/// A version as admins see it: the record and what the manifest requests.
#[derive(Serialize)]
struct VersionView {
    #[serde(flatten)]
    record: VersionRecord,
    name: String,
    description: String,
    /// What the plugin asks for; a reviewer grants some of it.
    requested: Requested,
}

#[derive(Serialize)]
struct Requested {
    interfaces: Vec<String>,
    identity_fields: Vec<String>,
}

impl From<VersionRecord> for VersionView {
    fn from(record: VersionRecord) -> Self {
        let manifest = record.manifest();
        let (name, description, capabilities) = match manifest {
            Some(m) => (m.name, m.description, m.capabilities),
            None => Default::default(),
        };
        VersionView {
            record,
            name,
            description,
            requested: Requested {
                interfaces: capabilities.interfaces,
                identity_fields: capabilities.identity_fields,
            },
        }
    }
}

fn catalog_error(error: CatalogError) -> ApiError {
    let code = match &error {
        CatalogError::VersionExists { .. } => ErrorCode::PluginVersionExists,
        CatalogError::VersionNotFound { .. } => ErrorCode::PluginVersionNotFound,
        CatalogError::AlreadyReviewed { .. } => ErrorCode::PluginAlreadyReviewed,
        CatalogError::OwnUpload { .. } => ErrorCode::ReviewOwnUpload,
        CatalogError::GrantInvalid(_) => ErrorCode::RequestInvalid,
        CatalogError::Database(error) => return ApiError::internal(error),
    };
    ApiError::new(code, error.to_string())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::PluginInvalid, message)
}

/// Reads the `manifest` and `component` fields, each within its limit.
async fn read_bundle(
    state: &AppState,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(String, Vec<u8>), ApiError> {
    let mut multipart = multipart.map_err(|_| {
        invalid(
            "send the bundle as multipart/form-data with the fields `manifest` (plugin.toml) \
             and `component` (the .wasm file)",
        )
    })?;
    let limits = &state.config.registry;
    let broken = |error: axum::extract::multipart::MultipartError| {
        invalid(format!(
            "the upload could not be read: {}",
            error.body_text()
        ))
    };
    let (mut manifest, mut component) = (None, None);
    // The first problem found; the rest of the upload is then read and dropped (up to a
    // bound), so the client gets to read the answer instead of a broken connection.
    let mut refused: Option<ApiError> = None;
    let mut dropped_bytes_max = limits.component_bytes_max + limits.manifest_bytes_max;
    while let Some(mut field) = multipart.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_owned();
        let (max, key) = match name.as_str() {
            "manifest" => (limits.manifest_bytes_max, "manifest_bytes_max"),
            "component" => (limits.component_bytes_max, "component_bytes_max"),
            other => {
                refused.get_or_insert_with(|| {
                    invalid(format!(
                        "unknown form field {other:?}: send only `manifest` and `component`"
                    ))
                });
                (0, "")
            }
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(broken)? {
            if refused.is_none() && (bytes.len() + chunk.len()) as u64 > max {
                refused = Some(invalid(format!(
                    "the {name} is over the {max}-byte limit (registry.{key})"
                )));
                bytes = Vec::new();
            }
            if refused.is_some() {
                dropped_bytes_max = dropped_bytes_max.saturating_sub(chunk.len() as u64);
                if dropped_bytes_max == 0 {
                    break;
                }
                continue;
            }
            bytes.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "manifest" => manifest = Some(bytes),
            _ => component = Some(bytes),
        }
        if dropped_bytes_max == 0 {
            break;
        }
    }
    if let Some(error) = refused {
        return Err(error);
    }
    let manifest = manifest.ok_or_else(|| invalid("the `manifest` field is missing"))?;
    let component = component.ok_or_else(|| invalid("the `component` field is missing"))?;
    let manifest =
        String::from_utf8(manifest).map_err(|_| invalid("the manifest is not UTF-8 text"))?;
    Ok((manifest, component))
}

/// Checks and stores an upload by `uploaded_by`; `allowed` says whether it may upload the
/// manifest's plugin id.
async fn store_upload(
    state: &AppState,
    multipart: Result<Multipart, MultipartRejection>,
    uploaded_by: &str,
    allowed: impl Fn(&str) -> Result<(), ApiError>,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    let (manifest_text, wasm) = read_bundle(state, multipart).await?;
    // Whose plugin it is decides before the costly checks (compiling) run.
    let id = Manifest::parse(&manifest_text).map_err(invalid)?.id;
    allowed(&id)?;
    let checked = state
        .registry
        .check(manifest_text, wasm)
        .await
        .map_err(invalid)?;
    let manifest = &checked.manifest;
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let stored = catalog::store(&mut conn, &checked, &manifest.version, uploaded_by, now_ms)
        .await
        .map_err(catalog_error)?;
    let record = catalog::get(&mut conn, &manifest.id, &manifest.version)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("an upload vanished inside its transaction"))?;
    if stored == Stored::New {
        let change = Change {
            actor: uploaded_by,
            action: "plugin.upload",
            target: format!("plugin/{}/{}", manifest.id, manifest.version),
            region: None,
            before: None,
            after: serde_json::to_value(&record).ok(),
        };
        admin_audit::record(&mut conn, &change, now_ms)
            .await
            .map_err(ApiError::internal)?;
    }
    transaction.commit().await.map_err(ApiError::internal)?;
    tracing::info!(plugin = %manifest.id, version = %manifest.version, digest = %checked.digest, by = uploaded_by, "plugin version uploaded");
    let status = match stored {
        Stored::New => StatusCode::CREATED,
        Stored::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(record.into())))
}

#[utoipa::path(
    post,
    operation_id = "upload_plugin_version",
    path = "/admin/v1/plugins",
    tag = "admin",
    request_body(content_type = "multipart/form-data", description = "Fields `manifest` (plugin.toml) and `component` (the .wasm file)"),
    responses((status = 200, description = "The version already stored (201: stored now, submitted for review)"), (status = 400, description = "The bundle failed a check; the message names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 409, description = "The same id and version exist with other content")),
    security(("admin_token" = []))
)]
async fn upload(
    State(state): State<AppState>,
    admin: Admin,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    admin.may_upload()?;
    store_upload(&state, multipart, &admin.0.name, |_| Ok(())).await
}

#[utoipa::path(
    post,
    path = "/partner/v1/plugins",
    tag = "partner",
    request_body(content_type = "multipart/form-data", description = "Fields `manifest` (plugin.toml) and `component` (the .wasm file)"),
    responses((status = 200, description = "The version already stored (201: stored now, submitted for review)"), (status = 400, description = "The bundle failed a check; the message names it"), (status = 401, description = "No valid credential"), (status = 403, description = "Not the partner's plugin id"), (status = 409, description = "The same id and version exist with other content")),
    security(("partner_key" = []))
)]
async fn partner_upload(
    State(state): State<AppState>,
    AuthenticatedPartner(partner): AuthenticatedPartner,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    let uploader = format!("partner:{}", partner.id);
    store_upload(&state, multipart, &uploader, |plugin_id| {
        if partner.owns(plugin_id) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::PartnerForbidden,
                format!(
                    "partner {:?} may upload its own plugins only, not {plugin_id:?}; the bank \
                     sets which plugins are a partner's",
                    partner.id
                ),
            ))
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this plugin's versions.
    #[serde(default)]
    plugin: Option<String>,
}

/// Versions listed at most.
const LIST_MAX: i64 = 500;

#[derive(Serialize)]
struct VersionList {
    versions: Vec<VersionView>,
}

#[utoipa::path(
    get,
    operation_id = "list_plugin_versions",
    path = "/admin/v1/plugins",
    tag = "admin",
    params(("plugin" = Option<String>, Query, description = "Only this plugin's versions")),
    responses((status = 200, description = "Versions, newest first"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it")),
    security(("admin_token" = []))
)]
async fn list(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<VersionList>, ApiError> {
    admin.may_read(admin.0.region.as_deref())?;
    if let Some(plugin) = &query.plugin
        && !is_plugin_id(plugin)
    {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "plugin ids are lowercase letters, digits and '-'",
        ));
    }
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let versions = catalog::list(&mut connection.conn(), query.plugin.as_deref(), LIST_MAX)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(VersionList {
        versions: versions.into_iter().map(VersionView::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/plugins/{plugin}/versions/{version}",
    tag = "admin",
    params(("plugin" = String, Path, description = "The plugin id"), ("version" = String, Path, description = "The version")),
    responses((status = 200, description = "The version and what it requests"), (status = 401, description = "No valid credential"), (status = 403, description = "The role or scope does not allow it"), (status = 404, description = "Not found")),
    security(("admin_token" = []))
)]
async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path((plugin, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    admin.may_read(admin.0.region.as_deref())?;
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let record = catalog::get(&mut connection.conn(), &plugin, &version)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            catalog_error(CatalogError::VersionNotFound {
                plugin_id: plugin.clone(),
                version: version.clone(),
            })
        })?;
    Ok(Json(record.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Why it is approved (kept with the review; required).
    #[serde(default)]
    reason: String,
    /// What it is granted among what it requests.
    #[serde(default)]
    grants: Grants,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// Why: the partner reads it (required).
    #[serde(default)]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/plugins/{plugin}/versions/{version}/approve",
    tag = "admin",
    params(("plugin" = String, Path, description = "The plugin id"), ("version" = String, Path, description = "The version")),
    request_body = ApproveBody,
    responses((status = 200, description = "The approved version"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "Not a reviewer, or the reviewer uploaded it"), (status = 404, description = "Not found"), (status = 409, description = "Already reviewed")),
    security(("admin_token" = []))
)]
async fn approve(
    State(state): State<AppState>,
    admin: Admin,
    Path((plugin, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<ApproveBody>,
) -> Result<Json<VersionView>, ApiError> {
    let decision = Review {
        reviewer: &admin.0.name,
        approve: true,
        reason: &body.reason,
        grants: body.grants,
        four_eyes: true,
    };
    decide(&state, &admin, &plugin, &version, decision).await
}

#[utoipa::path(
    post,
    path = "/admin/v1/plugins/{plugin}/versions/{version}/reject",
    tag = "admin",
    params(("plugin" = String, Path, description = "The plugin id"), ("version" = String, Path, description = "The version")),
    request_body = RejectBody,
    responses((status = 200, description = "The rejected version"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "Not a reviewer, or the reviewer uploaded it"), (status = 404, description = "Not found"), (status = 409, description = "Already reviewed")),
    security(("admin_token" = []))
)]
async fn reject(
    State(state): State<AppState>,
    admin: Admin,
    Path((plugin, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<RejectBody>,
) -> Result<Json<VersionView>, ApiError> {
    let decision = Review {
        reviewer: &admin.0.name,
        approve: false,
        reason: &body.reason,
        grants: Grants::default(),
        four_eyes: true,
    };
    decide(&state, &admin, &plugin, &version, decision).await
}

/// Reviews a version once, recording the decision in the admin audit.
async fn decide(
    state: &AppState,
    admin: &Admin,
    plugin: &str,
    version: &str,
    decision: Review<'_>,
) -> Result<Json<VersionView>, ApiError> {
    admin.may_review()?;
    if decision.reason.trim().is_empty() || decision.reason.len() > 2000 {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            "a review needs a reason (1 to 2000 bytes): the partner and later reviewers read it",
        ));
    }
    let now_ms = ledger::now_ms();
    let mut transaction = state.db.write.begin().await.map_err(ApiError::internal)?;
    let mut conn = transaction.conn();
    let before = catalog::get(&mut conn, plugin, version)
        .await
        .map_err(ApiError::internal)?;
    let after = catalog::review(&mut conn, plugin, version, &decision, now_ms)
        .await
        .map_err(catalog_error)?;
    let change = Change {
        actor: &admin.0.name,
        action: if decision.approve {
            "plugin.approve"
        } else {
            "plugin.reject"
        },
        target: format!("plugin/{plugin}/{version}"),
        region: None,
        before: before.and_then(|b| serde_json::to_value(b).ok()),
        after: serde_json::to_value(&after).ok(),
    };
    admin_audit::record(&mut conn, &change, now_ms)
        .await
        .map_err(ApiError::internal)?;
    transaction.commit().await.map_err(ApiError::internal)?;
    Ok(Json(after.into()))
}
