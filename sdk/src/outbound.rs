//! HTTP to the partner systems the plugin needs (a biller's API), and nowhere else.
//!
//! A request may only go to a host the plugin's manifest asks for (`[capabilities]
//! outbound_hosts`) and the bank granted in the call's region; anything else is refused with
//! [`OutboundError::HostNotAllowed`] before a connection is made. The bank bounds the timeout,
//! the request and response sizes and the requests per call. Waiting on a response burns no
//! fuel and extends the call's deadline, up to the bank's bound.
//!
//! Requests are external effects: they happen even if the call fails later, so send the
//! partner an idempotency key it understands.
//!
//! Import: list `"outbound"` under `[capabilities] interfaces` and the hosts under
//! `outbound_hosts` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::outbound::HttpRequest;
//!
//! let answer = HttpRequest::post("https://api.water.example/bills/inquire")
//!     .json(&serde_json::json!({"account": "0591-1234"}))
//!     .header("idempotency-key", "inquire-42")
//!     .send()
//!     .expect("the biller answered");
//! let due: serde_json::Value = answer.json().expect("JSON");
//! # let _ = due;
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::lifecircle::scenario::outbound as raw;
use crate::ScenarioError;

/// An HTTP request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl HttpRequest {
    /// A request with `method` (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` to `url`.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    ///
    /// ```
    /// use lifecircle_sdk::outbound::HttpRequest;
    ///
    /// let request = HttpRequest::post("https://biller.example/pay").json(&[1, 2]);
    /// assert_eq!(request.body_bytes(), Some(&b"[1,2]"[..]));
    /// ```
    pub fn json(self, body: &impl Serialize) -> Self {
        let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
        self.header("content-type", "application/json").body(bytes)
    }

    /// The body, if set.
    pub fn body_bytes(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Sends the request and waits for the whole response.
    pub fn send(self) -> Result<HttpResponse, OutboundError> {
        let request = raw::HttpRequest {
            method: self.method,
            url: self.url,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| raw::Header { name, value })
                .collect(),
            body: self.body,
        };
        raw::send(&request)
            .map(|response| HttpResponse {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .map(|header| (header.name, header.value))
                    .collect(),
                body: response.body,
            })
            .map_err(OutboundError::from_raw)
    }
}

/// An HTTP response. Redirects are not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; one that does not parse is a `partner_response_invalid` refusal.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ScenarioError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            ScenarioError::refused(
                "partner_response_invalid",
                format!("the partner's answer is not the JSON expected: {error}"),
            )
        })
    }
}

/// Why there is no response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundError {
    /// The host is not on the plugin's allow-list in this region.
    HostNotAllowed {
        /// The host.
        host: String,
    },
    /// The request is malformed or its body too large.
    InvalidRequest {
        /// Why.
        reason: String,
    },
    /// No response in time.
    Timeout,
    /// The response is larger than the bank allows.
    ResponseTooLarge {
        /// The limit in bytes.
        max_bytes: u32,
    },
    /// The call has made as many requests as the bank allows.
    TooManyRequests {
        /// The limit.
        max: u32,
    },
    /// The connection failed (DNS, TCP, TLS).
    ConnectionFailed {
        /// Why.
        reason: String,
    },
}

impl OutboundError {
    fn from_raw(raw: raw::OutboundError) -> Self {
        match raw {
            raw::OutboundError::HostNotAllowed(host) => Self::HostNotAllowed { host },
            raw::OutboundError::InvalidRequest(reason) => Self::InvalidRequest { reason },
            raw::OutboundError::Timeout => Self::Timeout,
            raw::OutboundError::ResponseTooLarge(max_bytes) => Self::ResponseTooLarge { max_bytes },
            raw::OutboundError::TooManyRequests(max) => Self::TooManyRequests { max },
            raw::OutboundError::ConnectionFailed(reason) => Self::ConnectionFailed { reason },
        }
    }

    /// A stable snake_case name of the case, for error codes.
    ///
    /// ```
    /// use lifecircle_sdk::outbound::OutboundError;
    ///
    /// assert_eq!(OutboundError::Timeout.code(), "outbound_timeout");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::HostNotAllowed { .. } => "outbound_host_not_allowed",
            Self::InvalidRequest { .. } => "outbound_invalid_request",
            Self::Timeout => "outbound_timeout",
            Self::ResponseTooLarge { .. } => "outbound_response_too_large",
            Self::TooManyRequests { .. } => "outbound_too_many_requests",
            Self::ConnectionFailed { .. } => "outbound_connection_failed",
        }
    }
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostNotAllowed { host } => {
                write!(f, "{host} is not on this scenario's allow-list here")
            }
            Self::InvalidRequest { reason } => write!(f, "invalid request: {reason}"),
            Self::Timeout => write!(f, "the partner did not answer in time"),
            Self::ResponseTooLarge { max_bytes } => {
                write!(f, "the partner's answer is over {max_bytes} bytes")
            }
            Self::TooManyRequests { max } => {
                write!(f, "a call may make at most {max} requests to partners")
            }
            Self::ConnectionFailed { reason } => write!(f, "cannot reach the partner: {reason}"),
        }
    }
}

impl std::error::Error for OutboundError {}

/// `?` turns an [`OutboundError`] into a refusal (HTTP 422) whose code is
/// [`OutboundError::code`].
impl From<OutboundError> for ScenarioError {
    fn from(error: OutboundError) -> Self {
        ScenarioError::refused(error.code(), error.to_string())
    }
}
