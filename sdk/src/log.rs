//! Log lines written into the host's tracing output, tagged with the plugin, region and
//! request id.
//!
//! The bytes a call may log are limited; going past the limit stops the call. Never log
//! secrets or personal data: the pseudonym is the most a log line should name.
//!
//! Use the functions for fixed text and the macros ([`trace!`](crate::trace),
//! [`debug!`](crate::debug), [`info!`](crate::info), [`warn!`](crate::warn),
//! [`error!`](crate::error)) for `format!`-style lines.
//!
//! Import: list `"log"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::log;
//!
//! log::info("draw started");
//! lifecircle_sdk::info!("drew {} of {}", 4, 6);
//! ```

use crate::__private::bindings::lifecircle::scenario::log as raw;

/// How important a log line is.
///
/// ```no_run
/// use lifecircle_sdk::log::{self, Level};
///
/// log::log(Level::Warn, "stock is running low");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fine detail.
    Trace,
    /// Detail for developers.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes one log line at `level`.
///
/// ```no_run
/// use lifecircle_sdk::log::{self, Level};
///
/// log::log(Level::Info, "draw finished");
/// ```
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => raw::Level::Trace,
        Level::Debug => raw::Level::Debug,
        Level::Info => raw::Level::Info,
        Level::Warn => raw::Level::Warn,
        Level::Error => raw::Level::Error,
    };
    raw::log(level, message);
}

/// Writes one line of fine detail.
///
/// ```no_run
/// lifecircle_sdk::log::trace("entering draw");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes one line of detail for developers.
///
/// ```no_run
/// lifecircle_sdk::log::debug("parsed the body");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes one line about a normal event.
///
/// ```no_run
/// lifecircle_sdk::log::info("draw finished");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes one line about something unexpected that the plugin handled.
///
/// ```no_run
/// lifecircle_sdk::log::warn("stock is running low");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes one line about something that failed.
///
/// ```no_run
/// lifecircle_sdk::log::error("the prize table is empty");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Writes one [`Trace`](crate::log::Level::Trace) line, formatted like `format!`.
///
/// ```no_run
/// lifecircle_sdk::trace!("attempt {}", 2);
/// ```
#[macro_export]
macro_rules! trace {
    ($($argument:tt)+) => {
        $crate::log::trace(&::std::format!($($argument)+))
    };
}

/// Writes one [`Debug`](crate::log::Level::Debug) line, formatted like `format!`.
///
/// ```no_run
/// lifecircle_sdk::debug!("sides = {}", 6);
/// ```
#[macro_export]
macro_rules! debug {
    ($($argument:tt)+) => {
        $crate::log::debug(&::std::format!($($argument)+))
    };
}

/// Writes one [`Info`](crate::log::Level::Info) line, formatted like `format!`.
///
/// ```no_run
/// lifecircle_sdk::info!("drew {} of {}", 4, 6);
/// ```
#[macro_export]
macro_rules! info {
    ($($argument:tt)+) => {
        $crate::log::info(&::std::format!($($argument)+))
    };
}

/// Writes one [`Warn`](crate::log::Level::Warn) line, formatted like `format!`.
///
/// ```no_run
/// lifecircle_sdk::warn!("only {} prizes left", 3);
/// ```
#[macro_export]
macro_rules! warn {
    ($($argument:tt)+) => {
        $crate::log::warn(&::std::format!($($argument)+))
    };
}

/// Writes one [`Error`](crate::log::Level::Error) line, formatted like `format!`.
///
/// ```no_run
/// lifecircle_sdk::error!("prize table {} is empty", "spring");
/// ```
#[macro_export]
macro_rules! error {
    ($($argument:tt)+) => {
        $crate::log::error(&::std::format!($($argument)+))
    };
}
