//! Hostile plugin proving `payments.per_call_max`: action `flood` debits one fen under a new
//! key again and again until the host refuses, then answers how many payments were made and
//! why the next one was refused.

use lifecircle_sdk::payments::{self, Money};
use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};
use serde::Serialize;

struct HostilePayments;

#[derive(Serialize)]
struct FloodAnswer {
    made: u32,
    stopped_by: &'static str,
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
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostilePayments);
