//! Glue between the generated WIT bindings and the typed API, used by [`crate::export!`].
//!
//! Nothing here is part of the SDK's API: it is public only because the macro expands in the
//! plugin's crate, and it may change in any release.

/// The bindings generated from `wit/` for `world scheduled-scenario`. The only `generate!` in
/// the project.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "scheduled-scenario",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "lifecircle_sdk::__private::bindings",
    });
}

use crate::{Job, Request, Response, Scenario, ScenarioError};

pub use bindings::exports::lifecircle::scenario::handler::Guest;
pub use bindings::exports::lifecircle::scenario::job_handler::Guest as JobGuest;
pub use bindings::lifecircle::scenario::types::{
    Job as RawJob, Request as RawRequest, Response as RawResponse,
    ScenarioError as RawScenarioError,
};

/// Converts the raw request, runs the plugin, and converts its answer back.
pub fn handle<S: Scenario>(request: RawRequest) -> Result<RawResponse, RawScenarioError> {
    S::handle(Request::from_raw(request))
        .map(Response::into_raw)
        .map_err(ScenarioError::into_raw)
}

/// Converts the raw job, runs the plugin's job handler, and converts its answer back.
pub fn on_job<S: Scenario>(job: RawJob) -> Result<(), RawScenarioError> {
    S::on_job(Job::from_raw(job)).map_err(ScenarioError::into_raw)
}
