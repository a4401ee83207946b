//! A successful answer to a request.

use serde::Serialize;

use crate::__private::bindings::lifecircle::scenario::types::Response as RawResponse;
use crate::ScenarioError;

/// A successful answer: a JSON body the host returns to the app with HTTP 200.
///
/// ```
/// use lifecircle_sdk::Response;
///
/// let response = Response::json(&serde_json::json!({ "count": 3 }))?;
/// assert_eq!(response.body_text(), r#"{"count":3}"#);
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    body: String,
}

impl Response {
    /// A response whose body is `value` serialized as JSON.
    ///
    /// Serialization fails only for values JSON cannot express (a map with non-string keys,
    /// a `Serialize` impl that reports an error): that is a bug in the plugin, reported as
    /// [`ScenarioError::Refused`] with code `response_unserializable`.
    ///
    /// ```
    /// use lifecircle_sdk::Response;
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize)]
    /// struct Draw {
    ///     number: u64,
    /// }
    ///
    /// let response = Response::json(&Draw { number: 4 })?;
    /// assert_eq!(response.body_text(), r#"{"number":4}"#);
    /// # Ok::<(), lifecircle_sdk::ScenarioError>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, ScenarioError> {
        serde_json::to_string(value)
            .map(|body| Self { body })
            .map_err(|error| ScenarioError::refused("response_unserializable", error.to_string()))
    }

    /// A response with the empty JSON object `{}` as its body.
    ///
    /// ```
    /// use lifecircle_sdk::Response;
    ///
    /// assert_eq!(Response::empty().body_text(), "{}");
    /// ```
    pub fn empty() -> Self {
        Self {
            body: "{}".to_owned(),
        }
    }

    /// A response whose body is `text`, sent as is.
    ///
    /// The SDK does not check `text`; the host does, and refuses a body that is not valid JSON
    /// (the call fails with HTTP 500). Prefer [`Response::json`]; use this only for JSON text
    /// the plugin already has, to avoid parsing it again.
    ///
    /// ```
    /// use lifecircle_sdk::Response;
    ///
    /// let response = Response::from_json_text(r#"{"cached":true}"#.to_owned());
    /// assert_eq!(response.body_text(), r#"{"cached":true}"#);
    /// ```
    pub fn from_json_text(text: String) -> Self {
        Self { body: text }
    }

    /// The body as JSON text.
    ///
    /// ```
    /// use lifecircle_sdk::Response;
    ///
    /// assert_eq!(Response::json(&[1, 2])?.body_text(), "[1,2]");
    /// # Ok::<(), lifecircle_sdk::ScenarioError>(())
    /// ```
    pub fn body_text(&self) -> &str {
        &self.body
    }

    pub(crate) fn into_raw(self) -> RawResponse {
        RawResponse { body: self.body }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn json_serializes_the_value_compactly() {
        let response = Response::json(&serde_json::json!({ "echo": { "a": [1, 2] } }))
            .expect("a JSON value always serializes");
        assert_eq!(response.body_text(), r#"{"echo":{"a":[1,2]}}"#);
    }

    #[test]
    fn json_reports_a_value_json_cannot_express_as_refused() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), "tuple keys are not strings");
        let error = Response::json(&map).expect_err("should be an error");
        assert!(matches!(error, ScenarioError::Refused { .. }));
        assert_eq!(error.code(), Some("response_unserializable"));
    }

    #[test]
    fn empty_is_an_empty_object() {
        assert_eq!(Response::empty().body_text(), "{}");
    }

    #[test]
    fn from_json_text_keeps_the_text_unchanged() {
        let response = Response::from_json_text("not json".to_owned());
        assert_eq!(response.into_raw().body, "not json");
    }
}
