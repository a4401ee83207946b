//! Hostile plugin proving the **stack** limits: a plugin that recurses without end traps,
//! and the host answers with its trap error, not a crash.
//!
//! - Action `recurse` recurses with a 4 KiB buffer in every frame. Rust keeps such buffers
//!   on the *shadow stack* in the plugin's own linear memory (1 MiB, placed first), so this
//!   overflows it after about 250 frames and traps with an out-of-bounds memory access.
//! - Action `recurse-native` recurses with only scalar locals, which live on the *native*
//!   WebAssembly stack, so it proves the host's own stack limit (wasmtime's `max_wasm_stack`)
//!   and traps with a stack overflow.

use core::hint::black_box;

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};

/// The bytes each `recurse` frame keeps on the shadow stack.
const FRAME_BUFFER_BYTES: usize = 4 << 10;

struct HostileRecursion;

impl Scenario for HostileRecursion {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "recurse" => Response::json(&recurse(black_box(0))),
            "recurse-native" => Response::json(&recurse_native(
                black_box(u64::MAX),
                black_box(1),
                black_box(2),
            )),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileRecursion);

/// Recurses until the shadow stack runs out. The buffer goes through `black_box`, so it must
/// exist in memory; the use after the call prevents a tail call.
fn recurse(depth: u64) -> u64 {
    let mut buffer = [0_u8; FRAME_BUFFER_BYTES];
    buffer[depth as usize % FRAME_BUFFER_BYTES] = depth as u8;
    let buffer = black_box(buffer);
    // Never true at run time; it only keeps the recursion from looking unconditional.
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(black_box(depth + 1));
    below ^ u64::from(buffer[depth as usize % FRAME_BUFFER_BYTES])
}

/// Recurses `remaining` times (about forever) keeping everything in WebAssembly locals. The
/// rotation after the call is neither associative nor commutative, so the optimizer cannot
/// turn the recursion into a loop.
#[inline(never)]
fn recurse_native(remaining: u64, left: u64, right: u64) -> u64 {
    if remaining == 0 {
        return left;
    }
    let below = recurse_native(remaining - 1, right, left.wrapping_mul(31) ^ right);
    below.rotate_left((left % 63) as u32 + 1) ^ right
}
