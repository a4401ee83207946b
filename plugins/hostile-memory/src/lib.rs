//! Hostile plugin proving the **memory** limit (`memory_bytes_max`).
//!
//! Action `grow` allocates 1 MiB blocks forever, writes to every page of each and keeps them
//! all alive. The host must refuse to grow the plugin's linear memory past the limit; the
//! allocator then fails and the call traps. The host must answer with its memory-limit error.

use core::hint::black_box;

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};

/// How much each step allocates.
const BLOCK_BYTES: usize = 1 << 20;

/// The WebAssembly page size: touching one byte per page commits the whole block.
const PAGE_BYTES: usize = 64 << 10;

struct HostileMemory;

impl Scenario for HostileMemory {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "grow" => grow(),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileMemory);

fn grow() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0_u8; BLOCK_BYTES];
        for offset in (0..BLOCK_BYTES).step_by(PAGE_BYTES) {
            block[offset] = 1;
        }
        blocks.push(black_box(block));
        black_box(&blocks);
    }
}
