//! Hostile plugin for `payments`:
//!
//! - `flood` debits one fen under a new key again and again until the host refuses, then
//!   answers how many payments were made and why the next one was refused (proves
//!   `payments.per_call_max`).
//! - `pay-then-trap` (`{"fen": 100, "trap_until_s": <unix seconds>}`, `Idempotency-Key`
//!   required) debits under the request's key and traps while the call's time is before
//!   `trap_until_s`: its debit happens, its receipt is lost. From then on it keeps the receipt
//!   `receipt:<key>` and answers the payment (proves the host runs such a call again).

use lifecircle_sdk::payments::{self, Money};
use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, clock, store};
use serde::{Deserialize, Serialize};

struct HostilePayments;

#[derive(Serialize)]
struct FloodAnswer {
    made: u32,
    stopped_by: &'static str,
}

#[derive(Deserialize)]
struct PayThenTrap {
    fen: i64,
    trap_until_s: i64,
}

#[derive(Serialize)]
struct Receipt {
    payment: String,
}

impl Scenario for HostilePayments {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "flood" => {
                let mut made = 0;
                loop {
                    let key = format!("{}/{made}", request.request_id());
                    match payments::debit(Money::cny(1), &key, "flood") {
                        Ok(_) => made += 1,
                        Err(error) => {
                            return Response::json(&FloodAnswer {
                                made,
                                stopped_by: error.code(),
                            });
                        }
                    }
                }
            }
            "pay-then-trap" => {
                let key = request.require_idempotency_key()?;
                let asked: PayThenTrap = request.json()?;
                let payment = payments::debit(Money::cny(asked.fen), key, "pay then trap")
                    .map_err(|error| ScenarioError::refused(error.code(), error.to_string()))?;
                if clock::unix_seconds() < asked.trap_until_s {
                    panic!("trapping after debit {}", payment.id);
                }
                store::set(&format!("receipt:{key}"), payment.id.as_bytes());
                Response::json(&Receipt {
                    payment: payment.id,
                })
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostilePayments);
