//! Write Lifecircle scenario plugins in plain Rust.
//!
//! A scenario plugin is a WebAssembly component that the Lifecircle host calls once per
//! request. This crate is the only thing a plugin needs: it hides the generated WIT bindings
//! behind a typed [`Request`], [`Response`] and [`ScenarioError`], and wraps each host
//! capability in a module ([`store`], [`ledger`], [`identity`], [`config`], [`random`],
//! [`clock`], [`log`], [`jobs`], [`outbound`], [`payments`], [`events`], [`vouchers`]).
//!
//! A plugin implements [`Scenario`] and hands its type to [`export!`]:
//!
//! ```
//! use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};
//!
//! struct Hello;
//!
//! impl Scenario for Hello {
//!     fn handle(request: Request) -> Result<Response, ScenarioError> {
//!         match request.action() {
//!             "ping" => Response::json(&serde_json::json!({ "pong": true })),
//!             _ => Err(ScenarioError::unknown_action()),
//!         }
//!     }
//! }
//!
//! lifecircle_sdk::export!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` as a `cdylib` crate and list
//! the capability modules it calls under `[capabilities] interfaces` in its `plugin.toml`;
//! the host refuses to load a plugin that imports an interface it did not declare.
//!
//! Every call runs in a fresh instance under limits the bank sets (instructions, wall-clock
//! time, memory, host calls, log bytes, response bytes, store sizes). Going past a limit or
//! panicking stops the call and, like returning an `Err`, discards everything the call wrote
//! to [`store`] and the [`ledger`].
//!
//! The capability functions only work inside the host: on any other target they panic, so a
//! plugin's native unit tests should exercise its pure logic (parsing, validation, responses).

pub mod clock;
pub mod config;
mod error;
pub mod events;
pub mod identity;
pub mod jobs;
pub mod ledger;
pub mod log;
pub mod outbound;
pub mod payments;
pub mod random;
mod request;
mod response;
pub mod store;
pub mod vouchers;

pub use error::ScenarioError;
pub use jobs::Job;
pub use request::{Caller, Request};
pub use response::Response;

/// A scenario plugin: answers one request at a time.
///
/// The host creates a fresh instance of the plugin for every call, so nothing survives
/// between calls except what the plugin writes to [`store`] and the [`ledger`]. Those writes
/// are committed only if `handle` returns `Ok`.
///
/// ```
/// use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};
///
/// struct Echo;
///
/// impl Scenario for Echo {
///     fn handle(request: Request) -> Result<Response, ScenarioError> {
///         match request.action() {
///             "echo" => {
///                 let body: serde_json::Value = request.json()?;
///                 Response::json(&body)
///             }
///             _ => Err(ScenarioError::unknown_action()),
///         }
///     }
/// }
/// ```
pub trait Scenario {
    /// Handles one request: returns the response body, or why the plugin declined.
    fn handle(request: Request) -> Result<Response, ScenarioError>;

    /// Runs one attempt of a job the plugin scheduled with [`jobs::schedule`]. Its writes
    /// land with the job's completion, only if it returns `Ok`; otherwise the host retries it
    /// later. A plugin that schedules no jobs keeps this default, which knows no job.
    fn on_job(job: Job) -> Result<(), ScenarioError> {
        let _ = job;
        Err(ScenarioError::unknown_action())
    }
}

/// Exports a [`Scenario`] implementation as the plugin's request handler and job handler
/// (world `scheduled-scenario`).
///
/// Call it exactly once, at the top level of the plugin crate (a `cdylib`).
///
/// ```
/// use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};
///
/// struct Plugin;
///
/// impl Scenario for Plugin {
///     fn handle(_request: Request) -> Result<Response, ScenarioError> {
///         Ok(Response::empty())
///     }
/// }
///
/// lifecircle_sdk::export!(Plugin);
/// ```
#[macro_export]
macro_rules! export {
    ($scenario:ty) => {
        const _: () = {
            struct LifecircleScenarioExport;

            impl $crate::__private::Guest for LifecircleScenarioExport {
                fn handle(
                    request: $crate::__private::RawRequest,
                ) -> ::core::result::Result<
                    $crate::__private::RawResponse,
                    $crate::__private::RawScenarioError,
                > {
                    $crate::__private::handle::<$scenario>(request)
                }
            }

            impl $crate::__private::JobGuest for LifecircleScenarioExport {
                fn on_job(
                    job: $crate::__private::RawJob,
                ) -> ::core::result::Result<(), $crate::__private::RawScenarioError> {
                    $crate::__private::on_job::<$scenario>(job)
                }
            }

            $crate::__private::bindings::export_handler!(
                LifecircleScenarioExport with_types_in $crate::__private::bindings
            );
        };
    };
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
