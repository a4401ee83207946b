//! Glue between the generated WIT bindings and the typed API, used by [`crate::export!`].
//!
//! Nothing here is part of the SDK's API: it is public only because the macro expands in the
//! plugin's crate, and it may change in any release.

/// The bindings generated from `wit/` for `world scenario`. The only `generate!` in the project.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "scenario",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "lifecircle_sdk::__private::bindings",
    });
}

use crate::{Request, Response, Scenario, ScenarioError};

pub use bindings::exports::lifecircle::scenario::handler::Guest;
pub use bindings::lifecircle::scenario::types::{
    Request as RawRequest, Response as RawResponse, ScenarioError as RawScenarioError,
};

/// Converts the raw request, runs the plugin, and converts its answer back.
pub fn handle<S: Scenario>(request: RawRequest) -> Result<RawResponse, RawScenarioError> {
    S::handle(Request::from_raw(request))
        .map(Response::into_raw)
        .map_err(ScenarioError::into_raw)
}
