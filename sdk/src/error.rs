//! Why a plugin declined a request.

use std::fmt;

use crate::__private::bindings::lifecircle::scenario::types::{
    ErrorDetail as RawErrorDetail, ScenarioError as RawScenarioError,
};

/// Why a plugin declined a request; the host turns it into an HTTP error for the app.
///
/// Each case carries a stable snake_case `code` the app can branch on and a `message` a person
/// can read. Returning an error from [`Scenario::handle`](crate::Scenario::handle) discards
/// everything the call wrote to [`store`](crate::store) and the [`ledger`](crate::ledger).
///
/// | Case | HTTP status | Host `code` |
/// |------|-------------|-------------|
/// | [`InvalidInput`](Self::InvalidInput) | 400 | `scenario_invalid_input` |
/// | [`Refused`](Self::Refused) | 422 | `scenario_refused` |
/// | [`Conflict`](Self::Conflict) | 409 | `scenario_conflict` |
/// | [`UnknownAction`](Self::UnknownAction) | 404 | `scenario_action_unknown` |
///
/// The plugin's own `code` and `message` reach the app as `scenario_code` and `message`.
///
/// ```
/// use lifecircle_sdk::ScenarioError;
///
/// let error = ScenarioError::refused("daily_limit_reached", "You can spin once a day.");
/// assert_eq!(error.code(), Some("daily_limit_reached"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The request body does not fit the action.
    InvalidInput {
        /// A stable snake_case code, for example `sides_out_of_range`.
        code: String,
        /// A message a person can read.
        message: String,
    },
    /// The plugin understood the request and refuses it, for example a daily limit is reached.
    Refused {
        /// A stable snake_case code, for example `daily_limit_reached`.
        code: String,
        /// A message a person can read.
        message: String,
    },
    /// The request conflicts with the current state, for example a prize is out of stock.
    Conflict {
        /// A stable snake_case code, for example `out_of_stock`.
        code: String,
        /// A message a person can read.
        message: String,
    },
    /// The plugin has no such action.
    UnknownAction,
}

impl ScenarioError {
    /// The request body does not fit the action (HTTP 400).
    ///
    /// ```
    /// use lifecircle_sdk::ScenarioError;
    ///
    /// let error = ScenarioError::invalid_input("sides_out_of_range", "sides must be 1 to 100");
    /// assert!(matches!(error, ScenarioError::InvalidInput { .. }));
    /// ```
    pub fn invalid_input(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The plugin understood the request and refuses it (HTTP 422).
    ///
    /// ```
    /// use lifecircle_sdk::ScenarioError;
    ///
    /// let error = ScenarioError::refused("daily_limit_reached", "You can spin once a day.");
    /// assert_eq!(error.message(), Some("You can spin once a day."));
    /// ```
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Refused {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The request conflicts with the current state (HTTP 409).
    ///
    /// ```
    /// use lifecircle_sdk::ScenarioError;
    ///
    /// let error = ScenarioError::conflict("out_of_stock", "All prizes are gone.");
    /// assert_eq!(error.code(), Some("out_of_stock"));
    /// ```
    pub fn conflict(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Conflict {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The plugin has no such action (HTTP 404).
    ///
    /// ```
    /// use lifecircle_sdk::ScenarioError;
    ///
    /// assert_eq!(ScenarioError::unknown_action().code(), None);
    /// ```
    pub fn unknown_action() -> Self {
        Self::UnknownAction
    }

    /// The plugin's code, or `None` for [`UnknownAction`](Self::UnknownAction).
    ///
    /// ```
    /// use lifecircle_sdk::ScenarioError;
    ///
    /// assert_eq!(ScenarioError::conflict("taken", "Taken.").code(), Some("taken"));
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::InvalidInput { code, .. }
            | Self::Refused { code, .. }
            | Self::Conflict { code, .. } => Some(code),
            Self::UnknownAction => None,
        }
    }

    /// The plugin's message, or `None` for [`UnknownAction`](Self::UnknownAction).
    ///
    /// ```
    /// use lifecircle_sdk::ScenarioError;
    ///
    /// assert_eq!(ScenarioError::conflict("taken", "Taken.").message(), Some("Taken."));
    /// ```
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::InvalidInput { message, .. }
            | Self::Refused { message, .. }
            | Self::Conflict { message, .. } => Some(message),
            Self::UnknownAction => None,
        }
    }

    /// The refusal for a call that needs a customer but has none: shared by
    /// [`Request::require_customer`](crate::Request::require_customer) and the ledger's
    /// `NotACustomer`, so the app sees one code for one situation.
    pub(crate) fn customer_required() -> Self {
        Self::refused(
            "customer_required",
            "This action can only be called by a customer.",
        )
    }

    pub(crate) fn into_raw(self) -> RawScenarioError {
        match self {
            Self::InvalidInput { code, message } => {
                RawScenarioError::InvalidInput(RawErrorDetail { code, message })
            }
            Self::Refused { code, message } => {
                RawScenarioError::Refused(RawErrorDetail { code, message })
            }
            Self::Conflict { code, message } => {
                RawScenarioError::Conflict(RawErrorDetail { code, message })
            }
            Self::UnknownAction => RawScenarioError::UnknownAction,
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput { code, message } => {
                write!(formatter, "invalid input ({code}): {message}")
            }
            Self::Refused { code, message } => write!(formatter, "refused ({code}): {message}"),
            Self::Conflict { code, message } => write!(formatter, "conflict ({code}): {message}"),
            Self::UnknownAction => formatter.write_str("unknown action"),
        }
    }
}

impl std::error::Error for ScenarioError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WIT case's name, code and message, for comparing (generated types lack `PartialEq`).
    fn describe(raw: RawScenarioError) -> (&'static str, String, String) {
        match raw {
            RawScenarioError::InvalidInput(d) => ("invalid-input", d.code, d.message),
            RawScenarioError::Refused(d) => ("refused", d.code, d.message),
            RawScenarioError::Conflict(d) => ("conflict", d.code, d.message),
            RawScenarioError::UnknownAction => ("unknown-action", String::new(), String::new()),
        }
    }

    #[test]
    fn each_case_maps_to_the_matching_wit_case() {
        let expect = |case: &'static str, code: &str, message: &str| {
            (case, code.to_owned(), message.to_owned())
        };
        assert_eq!(
            describe(ScenarioError::invalid_input("a", "b").into_raw()),
            expect("invalid-input", "a", "b")
        );
        assert_eq!(
            describe(ScenarioError::refused("c", "d").into_raw()),
            expect("refused", "c", "d")
        );
        assert_eq!(
            describe(ScenarioError::conflict("e", "f").into_raw()),
            expect("conflict", "e", "f")
        );
        assert_eq!(
            describe(ScenarioError::unknown_action().into_raw()),
            expect("unknown-action", "", "")
        );
    }

    #[test]
    fn display_names_the_case_the_code_and_the_message() {
        assert_eq!(
            ScenarioError::invalid_input("bad_sides", "sides must be positive").to_string(),
            "invalid input (bad_sides): sides must be positive"
        );
        assert_eq!(
            ScenarioError::refused("limit", "Once a day.").to_string(),
            "refused (limit): Once a day."
        );
        assert_eq!(
            ScenarioError::conflict("gone", "Sold out.").to_string(),
            "conflict (gone): Sold out."
        );
        assert_eq!(
            ScenarioError::unknown_action().to_string(),
            "unknown action"
        );
    }

    #[test]
    fn unknown_action_has_neither_code_nor_message() {
        let error = ScenarioError::unknown_action();
        assert_eq!(error.code(), None);
        assert_eq!(error.message(), None);
    }
}
