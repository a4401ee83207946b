//! Hostile plugin proving the **events** limits.
//!
//! - Action `flood` emits `flood` events until the host refuses one, then answers how many it
//!   emitted and why the next was refused: proves `events.per_call_max`.
//! - Action `big` emits one event whose properties hold `{"bytes": n}` bytes: proves
//!   `events.properties_bytes_max` (the refusal is passed on).

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, events};
use serde::{Deserialize, Serialize};

struct HostileEvents;

#[derive(Serialize)]
struct FloodAnswer {
    emitted: u32,
    stopped_by: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeBody {
    bytes: usize,
}

impl Scenario for HostileEvents {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "flood" => {
                let mut emitted = 0;
                loop {
                    match events::emit("flood", &serde_json::json!({"n": emitted})) {
                        Ok(()) => emitted += 1,
                        Err(error) => {
                            return Response::json(&FloodAnswer {
                                emitted,
                                stopped_by: format!("{error:?}"),
                            });
                        }
                    }
                }
            }
            "big" => {
                let SizeBody { bytes } = request.json()?;
                events::emit("big", &serde_json::json!({"padding": "p".repeat(bytes)}))?;
                Ok(Response::empty())
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileEvents);
