//! Hostile plugin proving the **store** limits. Each action traps at a limit; the host must
//! answer with its store-limit error and commit nothing.
//!
//! - Action `many-keys` sets `key-0`, `key-1`, ... forever: proves `store_keys_max`.
//! - Action `big-value` sets one value of 16 MiB (or `{"bytes": n}`): proves
//!   `store_value_bytes_max`.
//! - Action `big-key` sets a value under a key of 1 MiB (or `{"bytes": n}`): proves
//!   `store_key_bytes_max`.
//!
//! - Action `many-gets` reads `{"keys": n}` distinct keys in one `get-many`: proves that
//!   each key counts against `host_calls_max`.
//! - Action `big-read` sets one value of `{"bytes": n}` and reads it back `{"copies": m}`
//!   times in one `get-many`: proves that an answer larger than `memory_bytes_max` stops the
//!   call.
//!
//! The sizes can be chosen so a test can stay under the memory limit while passing a store
//! limit.

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, store};
use serde::Deserialize;

/// The default size of `big-value`'s value.
const BIG_VALUE_BYTES_DEFAULT: usize = 16 << 20;

/// The default size of `big-key`'s key.
const BIG_KEY_BYTES_DEFAULT: usize = 1 << 20;

struct HostileStore;

impl Scenario for HostileStore {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "many-keys" => many_keys(),
            "big-value" => {
                let bytes = requested_bytes(&request, BIG_VALUE_BYTES_DEFAULT)?;
                store::set("big-value", &vec![b'v'; bytes]);
                Ok(Response::empty())
            }
            "big-key" => {
                let bytes = requested_bytes(&request, BIG_KEY_BYTES_DEFAULT)?;
                store::set(&"k".repeat(bytes), b"v");
                Ok(Response::empty())
            }
            "many-gets" => {
                let body: ManyGets = request.json()?;
                let keys: Vec<String> = (0..body.keys).map(|i| format!("key-{i}")).collect();
                store::get_many(&keys);
                Ok(Response::empty())
            }
            "big-read" => {
                let body: BigRead = request.json()?;
                store::set("big-read", &vec![b'r'; body.bytes]);
                store::get_many(&vec!["big-read"; body.copies]);
                Ok(Response::empty())
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileStore);

fn many_keys() -> ! {
    let mut index: u64 = 0;
    loop {
        store::set(&format!("key-{index}"), b"v");
        index = index.wrapping_add(1);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeBody {
    bytes: usize,
}

/// `{"bytes": n}` from the body, or `default` when the body is `null`.
fn requested_bytes(request: &Request, default: usize) -> Result<usize, ScenarioError> {
    Ok(request
        .json::<Option<SizeBody>>()?
        .map_or(default, |body| body.bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManyGets {
    keys: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BigRead {
    bytes: usize,
    copies: usize,
}
