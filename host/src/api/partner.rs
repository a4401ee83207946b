//! Partner endpoints: `POST /partner/v1/scenarios/{plugin}/{action}?region=R` runs an action of
//! one of the partner's own plugins (a merchant till redeeming a coupon, a biller confirming a
//! payment) with a partner caller, authenticated by the partner's API key.

use axum::body::Body;
use axum::extract::{FromRequestParts, State};

use super::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;

use super::auth::bearer;
use super::scenarios::{Target, run};
use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::identity::is_region;
use crate::identity::partners::{self, Partner};
use crate::runtime::Caller;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The partner routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(call))
}

/// The partner a request's API key belongs to.
pub struct AuthenticatedPartner(pub Partner);

impl FromRequestParts<AppState> for AuthenticatedPartner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::new(
                ErrorCode::PartnerKeyInvalid,
                "partner endpoints need `Authorization: Bearer <partner API key>`; the bank \\
                 issues keys at /admin/v1/partners/{id}/keys",
            )
        };
        let key = bearer(parts).ok_or_else(invalid)?;
        let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
        partners::find(&mut connection.conn(), key)
            .await
            .map_err(ApiError::internal)?
            .map(AuthenticatedPartner)
            .ok_or_else(invalid)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionQuery {
    /// The region whose data the call uses.
    region: Option<String>,
}

#[utoipa::path(
    post,
    operation_id = "partner_call_scenario",
    path = "/partner/v1/scenarios/{plugin}/{action}",
    tag = "partner",
    params(("plugin" = String, Path, description = "The plugin id"), ("action" = String, Path, description = "The plugin's action"), ("region" = String, Query, description = "The region whose data the call uses")),
    request_body(content = serde_json::Value, description = "The action's JSON input", content_type = "application/json"),
    responses((status = 200, description = "The plugin's JSON answer"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "Not the partner's plugin"), (status = 404, description = "Not found"), (status = 503, description = "The plugin is killed")),
    security(("partner_key" = []))
)]
async fn call(
    State(state): State<AppState>,
    AuthenticatedPartner(partner): AuthenticatedPartner,
    Path((plugin_id, action)): Path<(String, String)>,
    Query(query): Query<RegionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !partner.owns(&plugin_id) {
        return Err(ApiError::new(
            ErrorCode::PartnerForbidden,
            format!(
                "partner {:?} may call its own plugins only, not {plugin_id:?}",
                partner.id
            ),
        ));
    }
    let region = query.region.filter(|r| is_region(r)).ok_or_else(|| {
        ApiError::new(
            ErrorCode::RequestInvalid,
            "say which region the call is for: ?region=cn-fj (lowercase letters, digits, '-')",
        )
    })?;
    // Data is scoped by the region's name: a name outside the bank's region tree would be
    // served by its nearest parent's enablement but keep its data apart, out of reports.
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let known = crate::registry::regions::get(&mut connection.conn(), &region)
        .await
        .map_err(ApiError::internal)?;
    drop(connection);
    if known.is_none() {
        return Err(ApiError::new(
            ErrorCode::RegionNotFound,
            format!(
                "region {region:?} is not one of the bank's regions (GET /admin/v1/regions lists them)"
            ),
        ));
    }
    let target = Target {
        plugin_id,
        action,
        caller: Caller::Partner {
            partner_id: partner.id,
        },
        region,
        customer: None,
    };
    run(&state, target, &headers, body).await
}
