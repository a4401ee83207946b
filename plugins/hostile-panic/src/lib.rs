//! Hostile plugin proving that a **trap is contained**.
//!
//! - Action `panic` panics with a message.
//! - Action `trap` executes the WebAssembly `unreachable` instruction directly.
//!
//! For both the host must answer with its trap error (HTTP 500 with a generic body), keep
//! serving other calls, and keep nothing the call did.

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};

struct HostilePanic;

impl Scenario for HostilePanic {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "panic" => panic!("hostile-panic panicked on purpose"),
            "trap" => trap(),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostilePanic);

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

/// Off WebAssembly (native unit tests) the nearest thing to a trap.
#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
