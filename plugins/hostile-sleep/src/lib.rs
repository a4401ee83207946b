//! Hostile plugin proving the **wall-clock deadline** (`deadline_ms`).
//!
//! Action `sleep` asks WASI to sleep for an hour. Blocking in a host call burns no fuel, so
//! only the deadline can stop it: the host must stop the call when the deadline passes and
//! answer with its timeout error, well before the hour is up.

use std::time::Duration;

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};

/// Far longer than any deadline the host may set.
const SLEEP_DURATION: Duration = Duration::from_secs(3_600);

struct HostileSleep;

impl Scenario for HostileSleep {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "sleep" => {
                std::thread::sleep(SLEEP_DURATION);
                Ok(Response::empty())
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileSleep);
