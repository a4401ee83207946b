//! Customer scenario endpoints: `GET /v1/scenarios` lists what the caller may use,
//! `POST /v1/scenarios/{plugin}/{action}` calls a plugin with a JSON body.

use axum::Json;
use axum::body::Body;
use axum::extract::State;

use super::extract::Path;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::body::read_json_text;
use super::{AuthenticatedCustomer, current_request_id, idempotency_key};
use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::identity::customers::Profile;
use crate::invocation;
use crate::registry::{Deployment, Lookup, Translation};
use crate::runtime::{Caller, Request};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest accepted action name.
const ACTION_BYTES_MAX: usize = 64;

/// The scenario routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(call))
}

#[derive(Serialize)]
struct ScenarioSummary<'a> {
    id: &'a str,
    version: &'a str,
    name: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    /// Name and description in other languages, by language tag.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    translations: &'a BTreeMap<String, Translation>,
}

#[utoipa::path(
    get,
    operation_id = "list_scenarios",
    path = "/v1/scenarios",
    tag = "customer",
    responses((status = 200, description = "The scenarios enabled for the caller's region, tier and tags now"), (status = 401, description = "No valid credential")),
    security(("customer_token" = []))
)]
/// The scenarios enabled for the caller's region, tier and tags at this moment.
async fn list(
    State(state): State<AppState>,
    AuthenticatedCustomer(customer): AuthenticatedCustomer,
) -> impl IntoResponse {
    let snapshot = state.registry.snapshot();
    let available = snapshot.available(&customer, state.registry.clock.now_ms());
    let scenarios: Vec<ScenarioSummary> = available
        .iter()
        .map(|deployment| {
            let manifest = &deployment.plugin.manifest;
            ScenarioSummary {
                id: &manifest.id,
                version: &deployment.plugin.version,
                name: &manifest.name,
                description: &manifest.description,
                icon: manifest.icon.as_deref(),
                category: manifest.category.as_deref(),
                translations: &manifest.translations,
            }
        })
        .collect();
    Json(serde_json::json!({ "scenarios": scenarios })).into_response()
}

#[utoipa::path(
    post,
    operation_id = "call_scenario",
    path = "/v1/scenarios/{plugin}/{action}",
    tag = "customer",
    params(("plugin" = String, Path, description = "The plugin id"), ("action" = String, Path, description = "The plugin's action")),
    request_body(content = serde_json::Value, description = "The action's JSON input", content_type = "application/json"),
    responses((status = 200, description = "The plugin's JSON answer"), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 404, description = "Not found"), (status = 409, description = "The call's writes conflicted at commit; nothing was written"), (status = 422, description = "The plugin refused the request"), (status = 503, description = "The plugin is killed, or the host is at its instance limit"), (status = 504, description = "The plugin ran out of time or fuel")),
    security(("customer_token" = []))
)]
async fn call(
    State(state): State<AppState>,
    AuthenticatedCustomer(customer): AuthenticatedCustomer,
    Path((plugin_id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pseudonym = state
        .identity
        .pseudonym(&plugin_id, &customer.customer_number);
    let target = Target {
        plugin_id,
        action,
        caller: Caller::Customer { pseudonym },
        region: customer.region.clone(),
        customer: Some(&customer),
    };
    run(&state, target, &headers, body).await
}

/// Which plugin action to run, for whom, where.
pub struct Target<'a> {
    /// The plugin.
    pub plugin_id: String,
    /// The action.
    pub action: String,
    /// Who calls, as the plugin sees it.
    pub caller: Caller,
    /// The region whose data and budget the call uses.
    pub region: String,
    /// The calling customer's profile, for a customer's call (its ledger and `identity`).
    pub customer: Option<&'a Profile>,
}

/// Runs `target` with a JSON `body`: the plugin must be enabled for the caller, the action
/// well-formed, the body within the plugin's limit.
pub async fn run(
    state: &AppState,
    target: Target<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Target {
        plugin_id,
        action,
        caller,
        region,
        customer,
    } = target;
    let deployment = deployment(state, &plugin_id, &region, customer)?;
    let plugin = &deployment.plugin;
    if action.is_empty()
        || action.len() > ACTION_BYTES_MAX
        || !action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(ApiError::new(
            ErrorCode::RequestInvalid,
            format!("action names are 1 to {ACTION_BYTES_MAX} letters, digits, '-', '_' or '.'"),
        ));
    }
    let idempotency_key = idempotency_key(headers)?;
    let body = read_json_text(body, plugin.limits.request_bytes_max)
        .await
        .map_err(|error| match error.code() {
            ErrorCode::RequestTooLarge => ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "the request body is over this scenario's limit of {} bytes",
                    plugin.limits.request_bytes_max
                ),
            ),
            _ => error,
        })?;
    let response = invocation::invoke(
        state,
        &deployment,
        Request {
            action,
            body,
            caller,
            region,
            request_id: current_request_id(),
            idempotency_key,
        },
        customer,
    )
    .await?;
    Ok(([(CONTENT_TYPE, "application/json")], response).into_response())
}

/// What the caller's region runs of `plugin_id`, if the caller may use it now: 404 when it is
/// not enabled for the caller (whether it exists elsewhere is not said), 503 when a kill switch
/// stops it.
fn deployment(
    state: &AppState,
    plugin_id: &str,
    region: &str,
    customer: Option<&Profile>,
) -> Result<Arc<Deployment>, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::PluginNotFound,
            format!("no scenario {plugin_id:?} is available to you"),
        )
    };
    let now_ms = state.registry.clock.now_ms();
    match state.registry.snapshot().lookup(plugin_id, region) {
        Lookup::Found(deployment) if deployment.admits(customer, now_ms) => Ok(deployment),
        Lookup::Killed { deployment, .. } if deployment.admits(customer, now_ms) => {
            Err(ApiError::new(
                ErrorCode::PluginKilled,
                format!("the bank has stopped scenario {plugin_id:?} for now; try again later"),
            ))
        }
        Lookup::Found(_) | Lookup::Killed { .. } | Lookup::Missing => Err(not_found()),
    }
}
