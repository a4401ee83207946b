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

/// A request carrying the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if state.admin_token_matches(presented) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                ErrorCode::AdminTokenInvalid,
                "admin endpoints need `Authorization: Bearer <admin token>` (auth.admin_token)",
            ))
        }
    }
}
