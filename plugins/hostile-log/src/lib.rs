//! Hostile plugin proving the **log-bytes** limit (`log_bytes_max`).
//!
//! Action `flood` writes 1 KiB info lines forever. The host must stop the call once the
//! bytes it logged pass the limit and answer with its log-limit error, without writing the
//! flood into its own log.

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, log};

/// The size of each line.
const LINE_BYTES: usize = 1 << 10;

struct HostileLog;

impl Scenario for HostileLog {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "flood" => flood(),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileLog);

fn flood() -> ! {
    let line = "x".repeat(LINE_BYTES);
    loop {
        log::info(&line);
    }
}
