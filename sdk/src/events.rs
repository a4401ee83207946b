//! Analytics events for the bank's campaign reports: what happened in the scenario
//! (`spin.drawn`, `coupon.claimed`) with a few properties.
//!
//! The host already records every call (action, outcome, time, fuel) and counts customers,
//! points and payments in its reports; emit what only the plugin knows. Events are part of
//! the call: they land with its other writes, only if it returns `Ok`. Put no customer data in
//! properties: the host adds the caller's pseudonym.
//!
//! Import: list `"events"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::events;
//!
//! events::emit("spin.drawn", &serde_json::json!({"prize": "mug"})).expect("recorded");
//! ```

use std::fmt;

use serde::Serialize;

use crate::__private::bindings::lifecircle::scenario::events as raw;
use crate::ScenarioError;

/// Why an event was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// The name is empty or longer than 64 bytes of letters, digits, `-`, `_` and `.`.
    InvalidName,
    /// The properties are not a JSON object.
    PropertiesNotAnObject,
    /// The properties are longer than the bank allows.
    PropertiesTooLarge {
        /// The limit in bytes.
        max_bytes: u32,
    },
    /// The call has emitted as many events as the bank allows.
    TooManyEvents {
        /// The limit.
        max: u32,
    },
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName => write!(
                f,
                "event names are 1 to 64 letters, digits, '-', '_' or '.'"
            ),
            Self::PropertiesNotAnObject => write!(f, "event properties are a JSON object"),
            Self::PropertiesTooLarge { max_bytes } => {
                write!(f, "event properties are at most {max_bytes} bytes")
            }
            Self::TooManyEvents { max } => write!(f, "a call may emit at most {max} events"),
        }
    }
}

impl std::error::Error for EventError {}

/// `?` turns an [`EventError`] into an `event_not_recorded` refusal (HTTP 422).
impl From<EventError> for ScenarioError {
    fn from(error: EventError) -> Self {
        ScenarioError::refused("event_not_recorded", error.to_string())
    }
}

/// Records event `name` with `properties`, which must serialize to a JSON object.
pub fn emit(name: &str, properties: &impl Serialize) -> Result<(), EventError> {
    let properties =
        serde_json::to_string(properties).map_err(|_| EventError::PropertiesNotAnObject)?;
    raw::emit(name, &properties).map_err(|error| match error {
        raw::EventError::InvalidName => EventError::InvalidName,
        raw::EventError::PropertiesNotAnObject => EventError::PropertiesNotAnObject,
        raw::EventError::PropertiesTooLarge(max_bytes) => {
            EventError::PropertiesTooLarge { max_bytes }
        }
        raw::EventError::TooManyEvents(max) => EventError::TooManyEvents { max },
    })
}
