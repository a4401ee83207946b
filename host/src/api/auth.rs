//! The customer extractor: a handler that takes an [`AuthenticatedCustomer`] only runs for a
//! request with a valid customer token.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::identity::{Customer, TokenError};

/// The customer a request's bearer token proves.
pub struct AuthenticatedCustomer(pub Customer);

impl FromRequestParts<AppState> for AuthenticatedCustomer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty());
        let result = match token {
            Some(token) => state.identity.verify(token),
            None => Err(TokenError::Missing),
        };
        result.map(AuthenticatedCustomer).map_err(|error| {
            let code = match error {
                TokenError::Missing => ErrorCode::TokenMissing,
                TokenError::Expired => ErrorCode::TokenExpired,
                TokenError::Invalid(_) => ErrorCode::TokenInvalid,
            };
            ApiError::new(code, error.to_string())
        })
    }
}
