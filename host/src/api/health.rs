//! Operations endpoints: `/healthz` (the database answers) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

/// `GET /healthz`, `GET /metrics`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    connection.conn().ping().await.map_err(ApiError::internal)?;
    Ok(Json(
        json!({"status": "ok", "deployments": state.registry.snapshot().deployments().count()}),
    ))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
