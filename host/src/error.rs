//! The one error type every HTTP answer goes through, and the one table of stable error codes.
//!
//! Bodies are `{"code": "...", "message": "...", "request_id": "..."}`. Codes never change
//! meaning once shipped; apps branch on them. A 5xx caused by a host bug carries a generic
//! message and the detail goes to the log under the same request id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

tokio::task_local! {
    /// The id of the HTTP request being served, set by the request-id middleware so that any
    /// error created while serving it can carry the id.
    pub static REQUEST_ID: String;
}

/// Every error code the API can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not valid JSON.
    BodyInvalidJson,
    /// A header or parameter is malformed.
    RequestInvalid,
    /// The plugin said the body does not fit the action.
    ScenarioInvalidInput,
    /// No `Authorization: Bearer` token.
    TokenMissing,
    /// The token is malformed, forged, or lacks a required claim.
    TokenInvalid,
    /// The token's `exp` has passed.
    TokenExpired,
    /// No such route.
    RouteNotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// No such plugin for this caller.
    PluginNotFound,
    /// The plugin has no such action.
    ScenarioActionUnknown,
    /// The plugin said the request conflicts with the current state.
    ScenarioConflict,
    /// Another call changed what this call's writes depended on; nothing was written.
    StoreConflict,
    /// When the call committed, the customer no longer had the points it spent or held.
    PointsInsufficient,
    /// When the call committed, the plugin's budget could no longer cover its awards.
    BudgetExhausted,
    /// When the call committed, another call had changed what its ledger writes depended on.
    LedgerConflict,
    /// No valid admin token.
    AdminTokenInvalid,
    /// The admin's role or region scope does not cover the request.
    AdminForbidden,
    /// The customer is frozen by the bank.
    CustomerFrozen,
    /// The identity service does not know the customer, and does not enroll from tokens.
    CustomerNotEnrolled,
    /// No such customer.
    CustomerNotFound,
    /// A customer import cannot be read at all (format, CSV header).
    ImportInvalid,
    /// No valid partner API key.
    PartnerKeyInvalid,
    /// The partner called a plugin that is not its own.
    PartnerForbidden,
    /// No such partner.
    PartnerNotFound,
    /// The request body is larger than the plugin accepts.
    RequestTooLarge,
    /// The plugin refused the request.
    ScenarioRefused,
    /// The plugin trapped (panicked or executed an invalid instruction).
    PluginTrapped,
    /// The plugin's response is larger than allowed.
    PluginResponseTooLarge,
    /// The plugin's response body is not JSON.
    PluginResponseInvalid,
    /// The plugin made more host calls than allowed.
    PluginHostCallLimit,
    /// The plugin logged more bytes than allowed.
    PluginLogLimit,
    /// The plugin made more ledger writes in one call than allowed.
    PluginLedgerWriteLimit,
    /// Every plugin instance slot is busy.
    HostOverloaded,
    /// The plugin ran past its wall-clock deadline.
    PluginDeadlineExceeded,
    /// The plugin executed more instructions than allowed.
    PluginFuelExhausted,
    /// The plugin tried to grow its memory past the limit.
    PluginMemoryLimit,
    /// The plugin tried to grow a table past the limit.
    PluginTableLimit,
    /// The plugin recursed past the stack limit.
    PluginStackOverflow,
    /// The plugin tried to keep more `store` keys than allowed.
    PluginStoreKeyLimit,
    /// The plugin used a `store` key longer than allowed.
    PluginStoreKeyTooLarge,
    /// The plugin tried to store a value larger than allowed.
    PluginStoreValueTooLarge,
    /// A kill switch stops the plugin in the caller's region.
    PluginKilled,
    /// An uploaded bundle failed a check (manifest, size, component, imports).
    PluginInvalid,
    /// No such plugin version in the registry.
    PluginVersionNotFound,
    /// The plugin id and version were uploaded before with another component.
    PluginVersionExists,
    /// The version is not approved, so it cannot be enabled.
    PluginVersionNotApproved,
    /// The version was approved or rejected already.
    PluginAlreadyReviewed,
    /// The reviewer uploaded the version (four-eyes rule).
    ReviewOwnUpload,
    /// No such region.
    RegionNotFound,
    /// A region's settings for a plugin do not fit (schema, targeting, schedule).
    EnablementInvalid,
    /// The region has no setting of its own for the plugin.
    EnablementNotFound,
    /// There is no earlier version to roll back to.
    RollbackUnavailable,
    /// No invocation with that id is on record.
    InvocationNotFound,
    /// The plugin scheduled more jobs than allowed (per call, or pending in all).
    PluginJobLimit,
    /// No such job.
    JobNotFound,
    /// The job is no longer pending.
    JobNotPending,
    /// The sandbox bank is not in use (the connector is `http`).
    PaymentsSandboxDisabled,
    /// A bug or an outage in the host.
    Internal,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics index outcomes by it).
    pub const ALL: [ErrorCode; 58] = [
        ErrorCode::BodyInvalidJson,
        ErrorCode::RequestInvalid,
        ErrorCode::ScenarioInvalidInput,
        ErrorCode::TokenMissing,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PluginNotFound,
        ErrorCode::ScenarioActionUnknown,
        ErrorCode::ScenarioConflict,
        ErrorCode::StoreConflict,
        ErrorCode::PointsInsufficient,
        ErrorCode::BudgetExhausted,
        ErrorCode::LedgerConflict,
        ErrorCode::AdminTokenInvalid,
        ErrorCode::AdminForbidden,
        ErrorCode::CustomerFrozen,
        ErrorCode::CustomerNotEnrolled,
        ErrorCode::CustomerNotFound,
        ErrorCode::ImportInvalid,
        ErrorCode::PartnerKeyInvalid,
        ErrorCode::PartnerForbidden,
        ErrorCode::PartnerNotFound,
        ErrorCode::RequestTooLarge,
        ErrorCode::ScenarioRefused,
        ErrorCode::PluginTrapped,
        ErrorCode::PluginResponseTooLarge,
        ErrorCode::PluginResponseInvalid,
        ErrorCode::PluginHostCallLimit,
        ErrorCode::PluginLogLimit,
        ErrorCode::PluginLedgerWriteLimit,
        ErrorCode::HostOverloaded,
        ErrorCode::PluginDeadlineExceeded,
        ErrorCode::PluginFuelExhausted,
        ErrorCode::PluginMemoryLimit,
        ErrorCode::PluginTableLimit,
        ErrorCode::PluginStackOverflow,
        ErrorCode::PluginStoreKeyLimit,
        ErrorCode::PluginStoreKeyTooLarge,
        ErrorCode::PluginStoreValueTooLarge,
        ErrorCode::PluginKilled,
        ErrorCode::PluginInvalid,
        ErrorCode::PluginVersionNotFound,
        ErrorCode::PluginVersionExists,
        ErrorCode::PluginVersionNotApproved,
        ErrorCode::PluginAlreadyReviewed,
        ErrorCode::ReviewOwnUpload,
        ErrorCode::RegionNotFound,
        ErrorCode::EnablementInvalid,
        ErrorCode::EnablementNotFound,
        ErrorCode::RollbackUnavailable,
        ErrorCode::InvocationNotFound,
        ErrorCode::PluginJobLimit,
        ErrorCode::JobNotFound,
        ErrorCode::JobNotPending,
        ErrorCode::PaymentsSandboxDisabled,
        ErrorCode::Internal,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BodyInvalidJson => "body_invalid_json",
            ErrorCode::RequestInvalid => "request_invalid",
            ErrorCode::ScenarioInvalidInput => "scenario_invalid_input",
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PluginNotFound => "plugin_not_found",
            ErrorCode::ScenarioActionUnknown => "scenario_action_unknown",
            ErrorCode::ScenarioConflict => "scenario_conflict",
            ErrorCode::StoreConflict => "store_conflict",
            ErrorCode::PointsInsufficient => "points_insufficient",
            ErrorCode::BudgetExhausted => "budget_exhausted",
            ErrorCode::LedgerConflict => "ledger_conflict",
            ErrorCode::AdminTokenInvalid => "admin_token_invalid",
            ErrorCode::AdminForbidden => "admin_forbidden",
            ErrorCode::CustomerFrozen => "customer_frozen",
            ErrorCode::CustomerNotEnrolled => "customer_not_enrolled",
            ErrorCode::CustomerNotFound => "customer_not_found",
            ErrorCode::ImportInvalid => "import_invalid",
            ErrorCode::PartnerKeyInvalid => "partner_key_invalid",
            ErrorCode::PartnerForbidden => "partner_forbidden",
            ErrorCode::PartnerNotFound => "partner_not_found",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::ScenarioRefused => "scenario_refused",
            ErrorCode::PluginTrapped => "plugin_trapped",
            ErrorCode::PluginResponseTooLarge => "plugin_response_too_large",
            ErrorCode::PluginResponseInvalid => "plugin_response_invalid",
            ErrorCode::PluginHostCallLimit => "plugin_host_call_limit",
            ErrorCode::PluginLogLimit => "plugin_log_limit",
            ErrorCode::PluginLedgerWriteLimit => "plugin_ledger_write_limit",
            ErrorCode::HostOverloaded => "host_overloaded",
            ErrorCode::PluginDeadlineExceeded => "plugin_deadline_exceeded",
            ErrorCode::PluginFuelExhausted => "plugin_fuel_exhausted",
            ErrorCode::PluginMemoryLimit => "plugin_memory_limit",
            ErrorCode::PluginTableLimit => "plugin_table_limit",
            ErrorCode::PluginStackOverflow => "plugin_stack_overflow",
            ErrorCode::PluginStoreKeyLimit => "plugin_store_key_limit",
            ErrorCode::PluginStoreKeyTooLarge => "plugin_store_key_too_large",
            ErrorCode::PluginStoreValueTooLarge => "plugin_store_value_too_large",
            ErrorCode::PluginKilled => "plugin_killed",
            ErrorCode::PluginInvalid => "plugin_invalid",
            ErrorCode::PluginVersionNotFound => "plugin_version_not_found",
            ErrorCode::PluginVersionExists => "plugin_version_exists",
            ErrorCode::PluginVersionNotApproved => "plugin_version_not_approved",
            ErrorCode::PluginAlreadyReviewed => "plugin_already_reviewed",
            ErrorCode::ReviewOwnUpload => "review_own_upload",
            ErrorCode::RegionNotFound => "region_not_found",
            ErrorCode::EnablementInvalid => "enablement_invalid",
            ErrorCode::EnablementNotFound => "enablement_not_found",
            ErrorCode::RollbackUnavailable => "rollback_unavailable",
            ErrorCode::InvocationNotFound => "invocation_not_found",
            ErrorCode::PluginJobLimit => "plugin_job_limit",
            ErrorCode::JobNotFound => "job_not_found",
            ErrorCode::JobNotPending => "job_not_pending",
            ErrorCode::PaymentsSandboxDisabled => "payments_sandbox_disabled",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status for the code.
    ///
    /// Plugin limits follow one rule: time (deadline, fuel) is 504 as for a slow upstream;
    /// space (memory, table, stack, store) is 507; a broken contract (trap, bad or oversized
    /// response, host-call or log flood) is 502 as for a faulty upstream. 500 is only for
    /// host bugs.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BodyInvalidJson
            | ErrorCode::RequestInvalid
            | ErrorCode::ScenarioInvalidInput
            | ErrorCode::ImportInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::TokenMissing
            | ErrorCode::TokenInvalid
            | ErrorCode::TokenExpired
            | ErrorCode::AdminTokenInvalid
            | ErrorCode::PartnerKeyInvalid => StatusCode::UNAUTHORIZED,
            ErrorCode::AdminForbidden
            | ErrorCode::PartnerForbidden
            | ErrorCode::CustomerFrozen
            | ErrorCode::CustomerNotEnrolled => StatusCode::FORBIDDEN,
            ErrorCode::RouteNotFound
            | ErrorCode::PluginNotFound
            | ErrorCode::ScenarioActionUnknown
            | ErrorCode::CustomerNotFound
            | ErrorCode::PartnerNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ScenarioConflict
            | ErrorCode::StoreConflict
            | ErrorCode::PointsInsufficient
            | ErrorCode::BudgetExhausted
            | ErrorCode::LedgerConflict => StatusCode::CONFLICT,
            ErrorCode::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ScenarioRefused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::PluginTrapped
            | ErrorCode::PluginResponseTooLarge
            | ErrorCode::PluginResponseInvalid
            | ErrorCode::PluginHostCallLimit
            | ErrorCode::PluginLogLimit
            | ErrorCode::PluginLedgerWriteLimit => StatusCode::BAD_GATEWAY,
            ErrorCode::HostOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PluginDeadlineExceeded | ErrorCode::PluginFuelExhausted => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorCode::PluginMemoryLimit
            | ErrorCode::PluginTableLimit
            | ErrorCode::PluginStackOverflow
            | ErrorCode::PluginStoreKeyLimit
            | ErrorCode::PluginStoreKeyTooLarge
            | ErrorCode::PluginStoreValueTooLarge => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::PluginKilled => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PluginInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::PluginVersionNotFound => StatusCode::NOT_FOUND,
            ErrorCode::PluginVersionExists => StatusCode::CONFLICT,
            ErrorCode::PluginVersionNotApproved => StatusCode::CONFLICT,
            ErrorCode::PluginAlreadyReviewed => StatusCode::CONFLICT,
            ErrorCode::ReviewOwnUpload => StatusCode::FORBIDDEN,
            ErrorCode::RegionNotFound => StatusCode::NOT_FOUND,
            ErrorCode::EnablementInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::EnablementNotFound => StatusCode::NOT_FOUND,
            ErrorCode::RollbackUnavailable => StatusCode::CONFLICT,
            ErrorCode::InvocationNotFound => StatusCode::NOT_FOUND,
            ErrorCode::PluginJobLimit => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::JobNotFound => StatusCode::NOT_FOUND,
            ErrorCode::JobNotPending => StatusCode::CONFLICT,
            ErrorCode::PaymentsSandboxDisabled => StatusCode::CONFLICT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    scenario_code: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scenario_code: Option<&'a str>,
}

impl ApiError {
    /// An error with a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            scenario_code: None,
        }
    }

    /// A host bug or outage: the detail goes to the log, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            ErrorCode::Internal,
            "the host failed to handle this request; the bank's operators can find the \
             detail in the log under this request_id",
        )
    }

    /// Adds the plugin's own code to a scenario error.
    pub fn with_scenario_code(mut self, scenario_code: impl Into<String>) -> Self {
        self.scenario_code = Some(scenario_code.into());
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The plugin's own code, for a scenario error.
    pub fn scenario_code(&self) -> Option<&str> {
        self.scenario_code.as_deref()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let body = ErrorBody {
            code: self.code.as_str(),
            message: &self.message,
            request_id,
            scenario_code: self.scenario_code.as_deref(),
        };
        (self.code.status(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_are_the_only_500() {
        for code in ErrorCode::ALL {
            assert_eq!(
                code.status() == StatusCode::INTERNAL_SERVER_ERROR,
                code == ErrorCode::Internal,
                "{code:?}"
            );
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code:?}"
            );
        }
    }
}
