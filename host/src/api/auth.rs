//! Who is asking: a handler that takes an [`AuthenticatedCustomer`] only runs for a request
//! with a valid customer token of an active customer the identity service knows (or enrolls);
//! one that takes an [`Admin`] only for a request with an admin token, and then checks the
//! admin's role and region scope itself.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::AppState;
use crate::config::UnknownCustomers;
use crate::error::{ApiError, ErrorCode};
use crate::identity::{Claims, TokenError};

use crate::identity::admins::{Admin as AdminAccount, Forbidden, Role};
use crate::identity::customers::{self, Profile, Status};

/// The customer a request's bearer token proves, as the identity service knows them.
pub struct AuthenticatedCustomer(pub Profile);

/// The non-empty `Authorization: Bearer` credential of a request.
pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

impl FromRequestParts<AppState> for AuthenticatedCustomer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| token_error(TokenError::Missing))?;
        let claims = state.identity.verify(token).map_err(token_error)?;
        let now = std::time::Instant::now();
        // A cached profile keeps the time it was read: refreshing it on every hit would keep
        // a busy customer's profile forever, and a freeze or region move made on another
        // replica would never arrive here.
        let profile = match state.customers.get(&claims.sub, now) {
            Some(profile) => profile,
            None => {
                let profile = read_or_enroll(state, &claims).await?;
                state.customers.put(&profile, now);
                profile
            }
        };
        if profile.status == Status::Frozen {
            return Err(ApiError::new(
                ErrorCode::CustomerFrozen,
                "this customer's access to life scenarios is frozen by the bank; the customer \
                 should contact the bank",
            ));
        }
        Ok(AuthenticatedCustomer(profile))
    }
}

fn token_error(error: TokenError) -> ApiError {
    let code = match error {
        TokenError::Missing => ErrorCode::TokenMissing,
        TokenError::Expired => ErrorCode::TokenExpired,
        TokenError::Invalid(_) => ErrorCode::TokenInvalid,
    };
    ApiError::new(code, error.to_string())
}

/// The customer's profile from the database; a customer not there yet is enrolled (or
/// refused) as `identity.unknown_customers` says.
async fn read_or_enroll(state: &AppState, claims: &Claims) -> Result<Profile, ApiError> {
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let known = customers::get(&mut connection.conn(), &claims.sub)
        .await
        .map_err(ApiError::internal)?;
    drop(connection);
    if let Some(profile) = known {
        return Ok(profile);
    }
    match state.config.identity.unknown_customers {
        UnknownCustomers::Reject => Err(ApiError::new(
            ErrorCode::CustomerNotEnrolled,
            "this customer is not enrolled in life scenarios; the bank enrolls customers \
             through its customer import",
        )),
        UnknownCustomers::AutoEnroll => {
            let region = claims.region.as_deref().ok_or_else(|| {
                token_error(TokenError::Invalid(
                    "claim `region` is needed to enroll a new customer".into(),
                ))
            })?;
            let tier = claims.tier.as_deref().unwrap_or_default();
            customers::check_tier(tier).map_err(|reason| {
                token_error(TokenError::Invalid(format!("claim `tier`: {reason}")))
            })?;
            let mut connection = state.db.write.acquire().await.map_err(ApiError::internal)?;
            let now_ms = crate::ledger::now_ms();
            customers::enroll(&mut connection.conn(), &claims.sub, region, tier, now_ms)
                .await
                .map_err(ApiError::internal)
        }
    }
}

/// A request carrying an admin token: the admin, whose role and scope handlers check with
/// [`Admin::may_read`] and [`Admin::may_write`].
pub struct Admin(pub AdminAccount);

impl Admin {
    /// 403 unless the admin may read what belongs to `region`.
    pub fn may_read(&self, region: Option<&str>) -> Result<(), ApiError> {
        self.0.may_read(region).map_err(forbidden)
    }

    /// 403 unless the admin may change what belongs to `region`.
    pub fn may_write(&self, region: Option<&str>) -> Result<(), ApiError> {
        self.0.may_write(region).map_err(forbidden)
    }

    /// 403 unless the admin may upload plugin versions.
    pub fn may_upload(&self) -> Result<(), ApiError> {
        self.0.may_upload().map_err(forbidden)
    }

    /// 403 unless the admin may review plugin versions.
    pub fn may_review(&self) -> Result<(), ApiError> {
        self.0.may_review().map_err(forbidden)
    }
}

fn forbidden(Forbidden(message): Forbidden) -> ApiError {
    ApiError::new(ErrorCode::AdminForbidden, message)
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::new(
                ErrorCode::AdminTokenInvalid,
                "admin endpoints need `Authorization: Bearer <admin token>`; create one with \
                 `lifecircle admin create-token`",
            )
        };
        let presented = bearer(parts).ok_or_else(invalid)?;
        if state.admin_token_matches(presented) {
            return Ok(Admin(AdminAccount {
                name: "config".into(),
                role: Role::HeadOffice,
                region: None,
            }));
        }
        let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
        crate::identity::admins::find(&mut connection.conn(), presented)
            .await
            .map_err(ApiError::internal)?
            .map(Admin)
            .ok_or_else(invalid)
    }
}
