//! The HTTP surface: the customer router (`/v1/...`), the partner router (`/partner/v1/...`),
//! the admin router (`/admin/v1/...`) and operations (`/healthz`, `/metrics`),
//! with a request id and tracing span for every request and our JSON error for every failure,
//! including unknown routes and wrong methods.

mod admin;
pub(crate) mod audit;
mod auth;
mod body;
mod extract;
mod health;
mod jobs;
mod partner;
mod payments;
mod plugins;
mod points;
mod regions;
mod reports;
mod scenarios;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tracing::Instrument;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::{ApiError, ErrorCode, REQUEST_ID};

pub use auth::{Admin, AuthenticatedCustomer};

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The whole API, and its OpenAPI document at `/openapi.json`. Every route is registered
/// with its `#[utoipa::path]` description through `routes!`, so the document lists exactly
/// the routes the router serves.
pub fn router(state: AppState) -> Router {
    let (router, document) = openapi_router().split_for_parts();
    let document: Arc<str> = Arc::from(document.to_json().unwrap_or_default());
    router
        .route(
            OPENAPI_PATH,
            get(
                move || async move { ([(CONTENT_TYPE, "application/json")], document.to_string()) },
            ),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Every route with its OpenAPI description.
fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Document::openapi())
        .merge(scenarios::router())
        .merge(points::router())
        .merge(admin::router())
        .merge(audit::router())
        .merge(jobs::router())
        .merge(payments::router())
        .merge(reports::router())
        .merge(partner::router())
        .merge(plugins::router())
        .merge(regions::router())
        .merge(health::router())
}

/// The OpenAPI document of the customer (`/v1`), partner (`/partner/v1`) and admin
/// (`/admin/v1`) APIs.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_router().into_openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Lifecircle",
        description = "Runs partners' life-scenario plugins for mobile banking. Every error is \
                       `{\"code\", \"message\", \"request_id\"}` with a stable snake_case code."
    ),
    modifiers(&Credentials),
    tags(
        (name = "customer", description = "Mobile banking, with a customer token (JWT)"),
        (name = "partner", description = "Merchant and biller systems, with a partner API key"),
        (name = "admin", description = "Bank admins, with an admin token"),
        (name = "operations", description = "Health and metrics")
    )
)]
struct Document;

/// The three bearer credentials the API takes.
struct Credentials;

impl utoipa::Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, format, description) in [
            (
                "customer_token",
                "JWT",
                "A customer token minted by mobile banking",
            ),
            (
                "admin_token",
                "opaque",
                "An admin API token with a role and region scope",
            ),
            (
                "partner_key",
                "opaque",
                "A partner API key issued by the bank",
            ),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format(format)
                .description(Some(description))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
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

/// Rows per page: the `limit` asked for, `default` without one, within 1 and `max`.
pub(crate) fn page_limit(asked: Option<u32>, default: u32, max: u32) -> u32 {
    asked.unwrap_or(default).clamp(1, max)
}

/// The cursor of the page after `rows`: the last row's id when the page is full, `None` on
/// the last page.
pub(crate) fn next_cursor<T>(rows: &[T], limit: u32, id: impl Fn(&T) -> &str) -> Option<String> {
    (rows.len() == limit as usize)
        .then(|| rows.last().map(|row| id(row).to_owned()))
        .flatten()
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

#[cfg(test)]
mod tests {
    /// A route registered with axum's own `route` would be served without being in the
    /// OpenAPI document; only the document's own route is.
    #[test]
    fn every_route_is_registered_with_its_openapi_description() {
        let plain_route = concat!(".ro", "ute(");
        let sources = [
            ("admin.rs", include_str!("admin.rs")),
            ("audit.rs", include_str!("audit.rs")),
            ("health.rs", include_str!("health.rs")),
            ("jobs.rs", include_str!("jobs.rs")),
            ("partner.rs", include_str!("partner.rs")),
            ("payments.rs", include_str!("payments.rs")),
            ("plugins.rs", include_str!("plugins.rs")),
            ("points.rs", include_str!("points.rs")),
            ("regions.rs", include_str!("regions.rs")),
            ("reports.rs", include_str!("reports.rs")),
            ("scenarios.rs", include_str!("scenarios.rs")),
        ];
        for (name, source) in sources {
            assert_eq!(source.matches(plain_route).count(), 0, "{name}");
        }
        assert_eq!(include_str!("mod.rs").matches(plain_route).count(), 1);
    }
}
