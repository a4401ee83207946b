//! Request bodies: read within a limit, and JSON parsed into our error format (never axum's
//! plain-text rejection).

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// Bytes of an admin request body at most.
const ADMIN_BODY_BYTES_MAX: u64 = 64 << 10;

/// Reads a body of at most `limit` bytes that must be JSON; an empty body is `null`.
pub async fn read_json_text(body: Body, limit: u64) -> Result<String, ApiError> {
    let bytes = to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTooLarge,
                format!("the request body is over the limit of {limit} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".to_owned());
    }
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::new(
            ErrorCode::BodyInvalidJson,
            "the request body is not UTF-8 JSON",
        )
    })?;
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        return Err(ApiError::new(
            ErrorCode::BodyInvalidJson,
            format!("the request body is not valid JSON: {error}"),
        ));
    }
    Ok(text)
}

/// A JSON body deserialized into `T`; a body that does not fit is a 400 naming the problem.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &AppState) -> Result<Self, ApiError> {
        let text = read_json_text(request.into_body(), ADMIN_BODY_BYTES_MAX).await?;
        serde_json::from_str(&text).map(Json).map_err(|error| {
            ApiError::new(
                ErrorCode::BodyInvalidJson,
                format!("the request body does not fit: {error}"),
            )
        })
    }
}
