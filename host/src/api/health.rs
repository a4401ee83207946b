//! Operations endpoints: `/healthz` (the database answers) and `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `GET /healthz`, `GET /metrics`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The host and its database answer"))
)]
async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    connection.conn().ping().await.map_err(ApiError::internal)?;
    Ok(Json(
        json!({"status": "ok", "deployments": state.registry.snapshot().deployments().count()}),
    ))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition"))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
