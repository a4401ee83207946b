//! One call to a scenario, as the plugin sees it.

use serde::de::DeserializeOwned;

use crate::__private::bindings::lifecircle::scenario::types::{
    Caller as RawCaller, Request as RawRequest,
};
use crate::ScenarioError;

/// Who made the call the plugin is handling.
///
/// ```
/// use lifecircle_sdk::Caller;
///
/// let caller = Caller::Customer { pseudonym: "c-7f3a".to_owned() };
/// assert_eq!(caller.customer_pseudonym(), Some("c-7f3a"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// A customer of the bank, through the mobile banking app.
    Customer {
        /// A stable pseudonym for this customer, different for every plugin.
        ///
        /// The host derives it from the bank's customer number with a secret the plugin never
        /// sees, so two plugins cannot join their data on it. Use it as the key for
        /// per-customer data in [`store`](crate::store).
        pseudonym: String,
    },
    /// A partner system (a merchant till, a biller) calling through the partner API.
    Partner {
        /// The partner's id as registered with the bank.
        partner_id: String,
    },
    /// The host's scheduler, running work the plugin asked for earlier.
    Scheduler,
}

impl Caller {
    /// The customer's pseudonym when a customer is calling, otherwise `None`.
    ///
    /// ```
    /// use lifecircle_sdk::Caller;
    ///
    /// assert_eq!(Caller::Scheduler.customer_pseudonym(), None);
    /// ```
    pub fn customer_pseudonym(&self) -> Option<&str> {
        match self {
            Self::Customer { pseudonym } => Some(pseudonym),
            Self::Partner { .. } | Self::Scheduler => None,
        }
    }

    pub(crate) fn from_raw(raw: RawCaller) -> Self {
        match raw {
            RawCaller::Customer(customer) => Self::Customer {
                pseudonym: customer.pseudonym,
            },
            RawCaller::Partner(partner) => Self::Partner {
                partner_id: partner.partner_id,
            },
            RawCaller::Scheduler => Self::Scheduler,
        }
    }
}

/// One call to a scenario: the action, the JSON body, the caller and where the call runs.
///
/// The host builds it; [`Request::new`] and the `with_*` methods exist for a plugin's unit
/// tests.
///
/// ```
/// use lifecircle_sdk::{Caller, Request};
///
/// let request = Request::new(
///     "draw",
///     Caller::Customer { pseudonym: "c-7f3a".to_owned() },
///     r#"{"sides": 6}"#,
/// );
/// assert_eq!(request.action(), "draw");
/// assert_eq!(request.customer_pseudonym(), Some("c-7f3a"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    action: String,
    body: String,
    caller: Caller,
    region: String,
    request_id: String,
    idempotency_key: Option<String>,
}

impl Request {
    /// A request for `action` from `caller` with the JSON text `body`, in region `test`, with
    /// request id `test` and no idempotency key. Meant for unit tests.
    ///
    /// ```
    /// use lifecircle_sdk::{Caller, Request};
    ///
    /// let request = Request::new("echo", Caller::Scheduler, "null");
    /// assert_eq!(request.region(), "test");
    /// ```
    pub fn new(action: impl Into<String>, caller: Caller, body: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            body: body.into(),
            caller,
            region: "test".to_owned(),
            request_id: "test".to_owned(),
            idempotency_key: None,
        }
    }

    /// Replaces the region. Meant for unit tests.
    ///
    /// ```
    /// use lifecircle_sdk::{Caller, Request};
    ///
    /// let request = Request::new("echo", Caller::Scheduler, "null").with_region("cn-fj-xm");
    /// assert_eq!(request.region(), "cn-fj-xm");
    /// ```
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Replaces the request id. Meant for unit tests.
    ///
    /// ```
    /// use lifecircle_sdk::{Caller, Request};
    ///
    /// let request = Request::new("echo", Caller::Scheduler, "null").with_request_id("r-1");
    /// assert_eq!(request.request_id(), "r-1");
    /// ```
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// Sets the idempotency key. Meant for unit tests.
    ///
    /// ```
    /// use lifecircle_sdk::{Caller, Request};
    ///
    /// let request = Request::new("echo", Caller::Scheduler, "null").with_idempotency_key("k-1");
    /// assert_eq!(request.idempotency_key(), Some("k-1"));
    /// ```
    pub fn with_idempotency_key(mut self, idempotency_key: impl Into<String>) -> Self {
        self.idempotency_key = Some(idempotency_key.into());
        self
    }

    /// The action name from the URL, for example `echo` in `POST /v1/scenarios/hello/echo`.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("echo", Caller::Scheduler, "null");
    /// assert_eq!(request.action(), "echo");
    /// ```
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The region the call runs in, for example `cn-fj-xm`. [`store`](crate::store) and
    /// [`config`](crate::config) are already scoped to it.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("echo", Caller::Scheduler, "null").with_region("cn-fj-xm");
    /// assert_eq!(request.region(), "cn-fj-xm");
    /// ```
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A unique id for this call; it appears in the host's logs and audit records.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("echo", Caller::Scheduler, "null").with_request_id("r-1");
    /// assert_eq!(request.request_id(), "r-1");
    /// ```
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The client's `Idempotency-Key` header, when it sent one.
    ///
    /// A plugin that writes should derive the keys of its writes from it, so that a retried
    /// call does not act twice.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("echo", Caller::Scheduler, "null");
    /// assert_eq!(request.idempotency_key(), None);
    /// ```
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// Who is calling.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("echo", Caller::Scheduler, "null");
    /// assert_eq!(request.caller(), &Caller::Scheduler);
    /// ```
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The customer's pseudonym when a customer is calling, otherwise `None`.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let caller = Caller::Partner { partner_id: "till-9".to_owned() };
    /// let request = Request::new("echo", caller, "null");
    /// assert_eq!(request.customer_pseudonym(), None);
    /// ```
    pub fn customer_pseudonym(&self) -> Option<&str> {
        self.caller.customer_pseudonym()
    }

    /// The customer's pseudonym, or [`ScenarioError::Refused`] with code `customer_required`
    /// when a partner or the scheduler is calling.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("spin", Caller::Scheduler, "null");
    /// let error = request.require_customer().expect_err("should be an error");
    /// assert_eq!(error.code(), Some("customer_required"));
    /// ```
    pub fn require_customer(&self) -> Result<&str, ScenarioError> {
        self.customer_pseudonym()
            .ok_or_else(ScenarioError::customer_required)
    }

    /// The client's `Idempotency-Key`, or [`ScenarioError::InvalidInput`] with code
    /// `idempotency_key_required`: what an action that writes on the client's behalf (pays,
    /// spends, claims) asks for, so a retried request does not act twice.
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("pay", Caller::Scheduler, "null");
    /// let error = request.require_idempotency_key().expect_err("no key");
    /// assert_eq!(error.code(), Some("idempotency_key_required"));
    /// let keyed = request.with_idempotency_key("k-1");
    /// assert_eq!(keyed.require_idempotency_key().ok(), Some("k-1"));
    /// ```
    pub fn require_idempotency_key(&self) -> Result<&str, ScenarioError> {
        self.idempotency_key().ok_or_else(|| {
            ScenarioError::invalid_input(
                "idempotency_key_required",
                "send an Idempotency-Key header, so a retried request does not act twice",
            )
        })
    }

    /// The cursor a listing action is asked to continue after: the body is `{"after":
    /// cursor}`, `{}` or nothing; anything else is [`ScenarioError::InvalidInput`]. Pair it
    /// with [`store::page`](crate::store::page).
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let first = Request::new("orders", Caller::Scheduler, "null");
    /// assert_eq!(first.page_after().ok(), Some(None));
    /// let next = Request::new("orders", Caller::Scheduler, r#"{"after": "orders/p/2"}"#);
    /// assert_eq!(next.page_after().ok(), Some(Some("orders/p/2".to_owned())));
    /// let wrong = Request::new("orders", Caller::Scheduler, r#"{"page": 2}"#);
    /// assert!(wrong.page_after().is_err());
    /// ```
    pub fn page_after(&self) -> Result<Option<String>, ScenarioError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PageBody {
            after: Option<String>,
        }
        Ok(self.json::<Option<PageBody>>()?.and_then(|page| page.after))
    }

    /// The request body as JSON text (`null` when the client sent no body).
    ///
    /// ```
    /// # use lifecircle_sdk::{Caller, Request};
    /// let request = Request::new("echo", Caller::Scheduler, r#"{"a":1}"#);
    /// assert_eq!(request.body_text(), r#"{"a":1}"#);
    /// ```
    pub fn body_text(&self) -> &str {
        &self.body
    }

    /// Parses the body as `T`.
    ///
    /// A body that does not fit `T` becomes [`ScenarioError::InvalidInput`] with code
    /// `invalid_body` and serde's description as the message, so `?` answers the client
    /// with HTTP 400.
    ///
    /// ```
    /// use lifecircle_sdk::{Caller, Request};
    /// use serde::Deserialize;
    ///
    /// #[derive(Debug, Deserialize)]
    /// struct Draw {
    ///     sides: u32,
    /// }
    ///
    /// let request = Request::new("draw", Caller::Scheduler, r#"{"sides": 6}"#);
    /// assert_eq!(request.json::<Draw>()?.sides, 6);
    ///
    /// let request = Request::new("draw", Caller::Scheduler, r#"{"sides": "six"}"#);
    /// assert_eq!(request.json::<Draw>().unwrap_err().code(), Some("invalid_body"));
    /// # Ok::<(), lifecircle_sdk::ScenarioError>(())
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ScenarioError> {
        serde_json::from_str(&self.body)
            .map_err(|error| ScenarioError::invalid_input("invalid_body", error.to_string()))
    }

    pub(crate) fn from_raw(raw: RawRequest) -> Self {
        Self {
            action: raw.action,
            body: raw.body,
            caller: Caller::from_raw(raw.caller),
            region: raw.region,
            request_id: raw.request_id,
            idempotency_key: raw.idempotency_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::__private::bindings::lifecircle::scenario::types::{Customer, Partner};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Draw {
        sides: u32,
    }

    fn raw(caller: RawCaller, body: &str) -> RawRequest {
        RawRequest {
            action: "draw".to_owned(),
            body: body.to_owned(),
            caller,
            region: "cn-fj-xm".to_owned(),
            request_id: "r-1".to_owned(),
            idempotency_key: Some("k-1".to_owned()),
        }
    }

    #[test]
    fn from_raw_keeps_every_field() {
        let customer = RawCaller::Customer(Customer {
            pseudonym: "c-1".to_owned(),
        });
        let request = Request::from_raw(raw(customer, "{}"));
        assert_eq!(request.action(), "draw");
        assert_eq!(request.body_text(), "{}");
        assert_eq!(request.region(), "cn-fj-xm");
        assert_eq!(request.request_id(), "r-1");
        assert_eq!(request.idempotency_key(), Some("k-1"));
        assert_eq!(request.customer_pseudonym(), Some("c-1"));
        assert_eq!(
            request.caller(),
            &Caller::Customer {
                pseudonym: "c-1".to_owned()
            }
        );
    }

    #[test]
    fn from_raw_maps_partner_and_scheduler_callers() {
        let partner = RawCaller::Partner(Partner {
            partner_id: "till-9".to_owned(),
        });
        assert_eq!(
            Request::from_raw(raw(partner, "{}")).caller(),
            &Caller::Partner {
                partner_id: "till-9".to_owned()
            }
        );
        assert_eq!(
            Request::from_raw(raw(RawCaller::Scheduler, "{}")).caller(),
            &Caller::Scheduler
        );
    }

    #[test]
    fn json_parses_a_body_that_fits() {
        let request = Request::new("draw", Caller::Scheduler, r#"{"sides": 6}"#);
        assert_eq!(request.json::<Draw>(), Ok(Draw { sides: 6 }));
    }

    #[test]
    fn json_turns_a_body_that_does_not_fit_into_invalid_input() {
        let request = Request::new("draw", Caller::Scheduler, r#"{"sides": -1}"#);
        let error = request.json::<Draw>().expect_err("should be an error");
        let ScenarioError::InvalidInput { code, message } = error else {
            panic!("expected invalid input, got {error:?}");
        };
        assert_eq!(code, "invalid_body");
        assert!(message.contains("invalid value"), "{message}");
    }

    #[test]
    fn json_turns_a_missing_body_into_invalid_input() {
        let request = Request::new("draw", Caller::Scheduler, "null");
        let error = request.json::<Draw>().expect_err("should be an error");
        assert_eq!(error.code(), Some("invalid_body"));
    }

    #[test]
    fn json_turns_malformed_text_into_invalid_input() {
        let request = Request::new("draw", Caller::Scheduler, "{not json");
        let error = request
            .json::<serde_json::Value>()
            .expect_err("should be an error");
        assert_eq!(error.code(), Some("invalid_body"));
    }

    #[test]
    fn require_customer_refuses_partners_and_the_scheduler() {
        let partner = Caller::Partner {
            partner_id: "till-9".to_owned(),
        };
        for caller in [partner, Caller::Scheduler] {
            let error = Request::new("count", caller, "null")
                .require_customer()
                .expect_err("should be an error");
            assert!(matches!(error, ScenarioError::Refused { .. }));
            assert_eq!(error.code(), Some("customer_required"));
        }
    }

    #[test]
    fn require_customer_returns_the_pseudonym() {
        let caller = Caller::Customer {
            pseudonym: "c-1".to_owned(),
        };
        let request = Request::new("count", caller, "null");
        assert_eq!(request.require_customer(), Ok("c-1"));
    }
}
