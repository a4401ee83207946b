//! Hostile plugin proving the **response-size** limit (`response_bytes_max`) and response
//! validation.
//!
//! - Action `huge` answers a JSON string of 8 MiB (or `{"bytes": n}` bytes of content). The
//!   host must refuse a body over its limit and answer with its output-too-large error.
//! - Action `huge-refusal` refuses with a message of `{"bytes": n}` bytes: a refusal is sent
//!   to the client too, so the same limit applies to it.
//! - Action `not-json` answers a body that is not JSON. The host must refuse it and answer
//!   with its invalid-response error (HTTP 500), never pass it to the app.

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};
use serde::Deserialize;

/// The default size of `huge`'s string content: far over any response limit the host sets.
const HUGE_BYTES_DEFAULT: usize = 8 << 20;

struct HostileResponse;

impl Scenario for HostileResponse {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "huge" => huge(&request),
            "huge-refusal" => {
                let body: HugeBody = request.json()?;
                Err(ScenarioError::refused("huge", "x".repeat(body.bytes)))
            }
            "not-json" => Ok(Response::from_json_text(
                "this body is not JSON {".to_owned(),
            )),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileResponse);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HugeBody {
    bytes: usize,
}

/// Builds the JSON text in one allocation, so the memory limit is not hit before the
/// response limit.
fn huge(request: &Request) -> Result<Response, ScenarioError> {
    let bytes = request
        .json::<Option<HugeBody>>()?
        .map_or(HUGE_BYTES_DEFAULT, |body| body.bytes);
    let mut text = String::with_capacity(bytes.saturating_add(2));
    text.push('"');
    text.extend(std::iter::repeat_n('x', bytes));
    text.push('"');
    Ok(Response::from_json_text(text))
}
