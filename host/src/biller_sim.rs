//! The biller simulator: a small utility company's bill API, for development (`lifecircle
//! serve` starts it in development mode) and tests. `utility-payments` talks to it through
//! `outbound` exactly as it would to a real biller.
//!
//! - `POST /bills/inquire` with `{"account": "..."}` answers `{"account", "due_fen",
//!   "period"}`, or 404 `{"error": "no_bill"}` for an account starting with `nobill`.
//! - `POST /bills/pay` with `{"payment": id, "account": "...", "fen": n}` confirms the payment:
//!   `{"status": "confirmed", "receipt": "..."}`. The same payment id answers the same.
//! - `GET /bills/payments/{payment}` answers `{"status": "confirmed" / "pending" / "failed"}`,
//!   or 404 if the biller never saw it.
//!
//! How it behaves is told by the account's first word: `fail…` refuses the payment (502,
//! status `failed`), `slow…` confirms it but answers after 3 s (longer than a plugin waits),
//! `pending…` answers `pending` and confirms on the third status query, `pendingfail…` answers
//! `pending` and fails on the third, `locked…` answers `pending` and its first two status
//! queries 403 (then confirms), `busy…` confirms it but answers 503 without a body (as a proxy
//! in front of a busy biller would). Anything else is due 42.50 yuan and confirms at
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// One payment the simulator saw: its status, the account, how often its status was asked.
type Seen = (String, String, u32);

/// What the simulator knows of each payment.
#[derive(Clone, Default)]
struct Bills {
    payments: Arc<Mutex<HashMap<String, Seen>>>,
}

/// The simulator's routes.
pub fn router() -> Router {
    Router::new()
        .route("/bills/inquire", post(inquire))
        .route("/bills/pay", post(pay))
        .route("/bills/payments/{payment}", get(status))
        .with_state(Bills::default())
}

/// Serves the simulator on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

#[derive(Deserialize)]
struct Inquiry {
    account: String,
}

async fn inquire(Json(inquiry): Json<Inquiry>) -> Response {
    if inquiry.account.starts_with("nobill") {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no_bill"}))).into_response();
    }
    Json(json!({"account": inquiry.account, "due_fen": 4250, "period": "2026-11"})).into_response()
}

#[derive(Deserialize)]
struct Payment {
    payment: String,
    account: String,
    fen: i64,
}

async fn pay(State(bills): State<Bills>, Json(payment): Json<Payment>) -> Response {
    let account = payment.account.as_str();
    let status = if account.starts_with("fail") || payment.fen <= 0 {
        "failed"
    } else if account.starts_with("pending") || account.starts_with("locked") {
        "pending"
    } else {
        "confirmed"
    };
    bills
        .payments
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(payment.payment.clone())
        .or_insert_with(|| (status.to_owned(), account.to_owned(), 0));
    match status {
        "failed" => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"status": "failed", "error": "the biller refused the payment"})),
        )
            .into_response(),
        "pending" => Json(json!({"status": "pending"})).into_response(),
        _ if account.starts_with("busy") => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        _ => {
            if account.starts_with("slow") {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Json(json!({"status": "confirmed", "receipt": format!("R-{}", payment.payment)}))
                .into_response()
        }
    }
}

async fn status(State(bills): State<Bills>, Path(payment): Path<String>) -> Response {
    let mut payments = bills
        .payments
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some((status, account, asked)) = payments.get_mut(&payment) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown_payment"})),
        )
            .into_response();
    };
    *asked += 1;
    if account.starts_with("locked") && *asked < 3 {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "the status service is locked"})),
        )
            .into_response();
    }
    if status == "pending" && *asked >= 3 {
        *status = if account.starts_with("pendingfail") {
            "failed".into()
        } else {
            "confirmed".into()
        };
    }
    Json(json!({"status": status, "receipt": format!("R-{payment}")})).into_response()
}
