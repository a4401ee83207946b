//! The HTTP connector: how a bank wires its core-banking system to Lifecircle.
//!
//! The bank runs a small service that implements two endpoints; the host calls them with the
//! configured `payments.http_url` as base and, if configured, `Authorization: Bearer
//! <payments.http_token>`. Amounts are whole minor units; keys are unique forever.
//!
//! **Execute a transfer**: `POST {base}/v1/transfers` with
//!
//! ```json
//! {"idempotency_key": "01a2…", "kind": "debit", "account": "6222000011112222",
//!  "amount_minor": 4250, "currency": "CNY", "memo": "water bill 2026-11",
//!  "refunds": null}
//! ```
//!
//! `kind` is `debit` (from the customer), `refund` (back to the customer; `refunds` is the
//! idempotency key of the debit it refunds) or `payout` (to the customer). The answer is `200`
//! with `{"status": "succeeded"}`, `{"status": "failed", "reason": "insufficient_funds"}` or
//! `{"status": "pending"}`. The same key sent again must answer the first transfer's outcome
//! and move nothing more.
//!
//! **Read a transfer**: `GET {base}/v1/transfers/{idempotency_key}` answers the same body, or
//! `404` if the bank never received that key (the host then sends it again).
//!
//! Any other status, a body that does not parse, a connection failure or a timeout
//! (`payments.timeout_ms`) leaves the outcome unknown: the payment stays `pending` until a
//! later read settles it.

use serde::{Deserialize, Serialize};

use super::{BoxFuture, CoreBanking, Order, Outcome, Unavailable};

/// The HTTP connector.
pub struct HttpBank {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The body of both answers.
#[derive(Debug, Deserialize, Serialize)]
pub struct TransferAnswer {
    /// `succeeded`, `failed` or `pending`.
    pub status: String,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
}

impl HttpBank {
    /// The connector to the service at `base`.
    pub fn new(client: reqwest::Client, base: String, token: Option<String>) -> Self {
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

fn outcome(answer: TransferAnswer) -> Result<Outcome, Unavailable> {
    match answer.status.as_str() {
        "succeeded" => Ok(Outcome::Succeeded),
        "failed" => Ok(Outcome::Failed(
            answer.reason.unwrap_or_else(|| "declined".into()),
        )),
        "pending" => Ok(Outcome::Pending),
        other => Err(Unavailable(format!("unknown transfer status {other:?}"))),
    }
}

fn unavailable(error: reqwest::Error) -> Unavailable {
    Unavailable(error.without_url().to_string())
}

impl CoreBanking for HttpBank {
    fn execute<'a>(&'a self, order: &'a Order) -> BoxFuture<'a, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            let response = self
                .authorized(self.client.post(format!("{}/v1/transfers", self.base)))
                .json(order)
                .send()
                .await
                .map_err(unavailable)?;
            if response.status() != reqwest::StatusCode::OK {
                return Err(Unavailable(format!(
                    "core banking answered {}",
                    response.status()
                )));
            }
            outcome(response.json().await.map_err(unavailable)?)
        })
    }

    fn status<'a>(
        &'a self,
        order: &'a Order,
    ) -> BoxFuture<'a, Result<Option<Outcome>, Unavailable>> {
        Box::pin(async move {
            let url = format!("{}/v1/transfers/{}", self.base, order.idempotency_key);
            let response = self
                .authorized(self.client.get(url))
                .send()
                .await
                .map_err(unavailable)?;
            match response.status() {
                reqwest::StatusCode::NOT_FOUND => Ok(None),
                reqwest::StatusCode::OK => {
                    outcome(response.json().await.map_err(unavailable)?).map(Some)
                }
                status => Err(Unavailable(format!("core banking answered {status}"))),
            }
        })
    }
}
