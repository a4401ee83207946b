//! The HTTP surface: the customer router (`/v1/...`), the partner router (`/partner/v1/...`),
//! the admin router (`/admin/v1/...`) and operations (`/healthz`, `/metrics`),
//! with a request id and tracing span for every request and our JSON error for every failure,
//! including unknown routes and wrong methods.

mod admin;
mod auth;
mod body;
mod health;
mod partner;
mod plugins;
mod points;
mod regions;
mod scenarios;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;

use crate::AppState;
use crate::error::{ApiError, ErrorCode, REQUEST_ID};

pub use auth::{Admin, AuthenticatedCustomer};

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(scenarios::router())
        .merge(points::router())
        .merge(admin::router())
        .merge(partner::router())
        .merge(plugins::router())
        .merge(regions::router())
        .merge(health::router())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an id: in the response header, in every error body, in its span.
async fn request_id(request: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The id of the request being served.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

async fn route_not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take this method",
    )
}

/// Longest accepted `Idempotency-Key`.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// The request's `Idempotency-Key` header, checked: 1 to 128 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            ErrorCode::RequestInvalid,
            format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
            ),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}
