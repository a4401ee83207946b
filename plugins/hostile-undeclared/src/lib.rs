//! Hostile plugin proving that the host **refuses to load a plugin that imports an
//! undeclared capability**.
//!
//! Its `plugin.toml` declares only `log`, but action `write` also calls `store::set`, so the
//! component imports `lifecircle:scenario/store`. The host must refuse to load the plugin,
//! naming the undeclared interface, and never run it.

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, log, store};

struct HostileUndeclared;

impl Scenario for HostileUndeclared {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "write" => {
                log::info("writing to a store this plugin did not declare");
                store::set("undeclared", b"written");
                Ok(Response::empty())
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileUndeclared);
