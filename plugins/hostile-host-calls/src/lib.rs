//! Hostile plugin proving the **host-call** limit (`host_calls_max`).
//!
//! Action `flood` calls `clock::now()` forever. Each call is cheap for the plugin but costs
//! the host, so the host counts them: it must stop the call at its limit and answer with its
//! host-call-limit error.

use core::hint::black_box;

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, clock};

struct HostileHostCalls;

impl Scenario for HostileHostCalls {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "flood" => flood(),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileHostCalls);

fn flood() -> ! {
    loop {
        black_box(clock::now());
    }
}
