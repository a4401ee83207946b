//! Hostile plugin proving the **fuel** limit (`fuel_max`) and, with fuel raised, the
//! **wall-clock deadline** (`deadline_ms`, enforced by epoch interruption).
//!
//! Action `spin` does arithmetic forever without calling the host. The host must stop the
//! call when its fuel runs out (or its deadline passes) and answer with its out-of-fuel
//! (or timeout) error; nothing the call did may remain.

use core::hint::black_box;

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};

struct HostileLoop;

impl Scenario for HostileLoop {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "spin" => spin(),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileLoop);

/// Never returns: `black_box` keeps the optimizer from proving the loop does nothing.
fn spin() -> ! {
    let mut state: u64 = black_box(1);
    loop {
        state = black_box(
            state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1),
        );
    }
}
