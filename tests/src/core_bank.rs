//! A core-banking service implementing the protocol of `host/src/payments/http.rs`, for the
//! tests of the HTTP connector and of scenarios whose payments it answers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use lifecircle::Config;
use lifecircle::config::Connector;
use serde_json::{Value, json};

/// The bearer token the bank takes.
const TOKEN: &str = "bank-secret";

/// The bank, keyed by customer name: `poor-*` have no money, `slow-*` are answered late
/// (after the transfer is done), `flaky-*` fail their first transfer before recording it,
/// `frozen-*` have their first credit (a refund or a payout) declined (`account_frozen`).
#[derive(Clone, Default)]
pub struct CoreBank {
    transfers: Arc<Mutex<HashMap<String, Value>>>,
    received: Arc<Mutex<Vec<Value>>>,
    executions: Arc<Mutex<HashMap<String, u32>>>,
    flaked: Arc<Mutex<bool>>,
    declined_credit: Arc<Mutex<HashSet<String>>>,
}

impl CoreBank {
    /// Serves the bank on 127.0.0.1 and returns its base URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    /// Points a host's payments at the bank served at `url`, waiting 200 ms for an answer
    /// (`slow-*` customers are answered after 300 ms).
    pub fn connect(config: &mut Config, url: &str) {
        config.payments.connector = Connector::Http;
        config.payments.http_url = Some(url.to_owned());
        config.payments.http_token = Some(TOKEN.into());
        config.payments.timeout_ms = 200;
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/v1/transfers", post(execute))
            .route("/v1/transfers/{key}", get(read))
            .with_state(self.clone())
    }

    /// Every transfer order received, in order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    /// How often the transfer under `key` was executed.
    pub fn executed(&self, key: &str) -> u32 {
        self.executions
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

async fn execute(
    State(bank): State<CoreBank>,
    headers: axum::http::HeaderMap,
    axum::Json(order): axum::Json<Value>,
) -> axum::response::Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {TOKEN}").as_str())
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    bank.received.lock().expect("lock").push(order.clone());
    let key = order["idempotency_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let account = order["account"].as_str().unwrap_or_default().to_owned();
    if account.starts_with("flaky-") {
        let mut flaked = bank.flaked.lock().expect("lock");
        if !*flaked {
            *flaked = true;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let answer = {
        let mut transfers = bank.transfers.lock().expect("lock");
        if let Some(earlier) = transfers.get(&key) {
            earlier.clone()
        } else {
            *bank
                .executions
                .lock()
                .expect("lock")
                .entry(key.clone())
                .or_default() += 1;
            let declines_credit = order["kind"] != "debit"
                && account.starts_with("frozen-")
                && bank
                    .declined_credit
                    .lock()
                    .expect("lock")
                    .insert(account.clone());
            let answer = if account.starts_with("poor-") {
                json!({"status": "failed", "reason": "insufficient_funds"})
            } else if declines_credit {
                json!({"status": "failed", "reason": "account_frozen"})
            } else {
                json!({"status": "succeeded"})
            };
            transfers.insert(key, answer.clone());
            answer
        }
    };
    // Done at once, answered late: the host gives up waiting before the answer comes.
    if account.starts_with("slow-") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    axum::Json(answer).into_response()
}

async fn read(State(bank): State<CoreBank>, Path(key): Path<String>) -> axum::response::Response {
    match bank.transfers.lock().expect("lock").get(&key) {
        Some(answer) => axum::Json(answer.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
