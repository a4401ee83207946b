//! Hostile plugin proving the **ledger key** limit. Ledger idempotency keys are kept forever,
//! so the host refuses an empty one (which would collide with every other empty one) and one
//! longer than `ledger.key_bytes_max`: the call stops and nothing it wrote is kept.
//!
//! - Action `spend` spends one point under a key of `{"bytes": n}` bytes. With a good key it
//!   answers the ledger's own refusal (a new customer has no points) as `{"refused": code}`.
//! - Action `award` awards one point under `{"key": k}`, the same key whoever the customer:
//!   two customers' calls race for one key, which only one of them may take.

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, ledger};
use serde::Deserialize;

struct HostileLedger;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendBody {
    bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AwardBody {
    key: String,
}

impl Scenario for HostileLedger {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "spend" => {
                let body: SpendBody = request.json()?;
                match ledger::spend(1, &"k".repeat(body.bytes), "a bad key") {
                    Ok(posting) => Response::json(&serde_json::json!({"posting": posting})),
                    Err(error) => Response::json(&serde_json::json!({"refused": error.code()})),
                }
            }
            "award" => {
                let body: AwardBody = request.json()?;
                match ledger::award(1, &body.key, "a shared key") {
                    Ok(posting) => Response::json(&serde_json::json!({"posting": posting})),
                    Err(error) => Response::json(&serde_json::json!({"refused": error.code()})),
                }
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileLedger);
