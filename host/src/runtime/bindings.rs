//! The one place the WIT contract in `wit/` becomes Rust: the host side of `world scenario`.
//!
//! `store`, `ledger` and `jobs` are async because they read the database, `outbound` and
//! `payments` because they wait on the network; every import is trappable because each counts
//! against a limit that stops the call.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "scenario",
    imports: {
        "lifecircle:scenario/store": async | trappable,
        "lifecircle:scenario/ledger": async | trappable,
        "lifecircle:scenario/jobs": async | trappable,
        "lifecircle:scenario/outbound": async | trappable,
        "lifecircle:scenario/payments": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});
