//! The `log` interface: a plugin's log lines, tagged with plugin and request id, written to the
//! host's tracing output within the call's byte budget.

use std::sync::Arc;

use super::Metered;
use super::bindings::lifecircle::scenario::log::{Host, Level};
use super::limits::LimitExceeded;

/// A call's log sink and what is left of its budget.
pub struct CallLog {
    plugin_id: Arc<str>,
    request_id: String,
    bytes_used: u64,
    bytes_max: u64,
}

impl CallLog {
    /// A sink for one call of `plugin_id`.
    pub fn new(plugin_id: Arc<str>, request_id: String, bytes_max: u64) -> Self {
        Self {
            plugin_id,
            request_id,
            bytes_used: 0,
            bytes_max,
        }
    }
}

impl Host for Metered<'_, CallLog> {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let sink = self.charge()?;
        sink.bytes_used = sink.bytes_used.saturating_add(message.len() as u64);
        if sink.bytes_used > sink.bytes_max {
            return Err(LimitExceeded::LogBytes(sink.bytes_max).into());
        }
        let plugin = &*sink.plugin_id;
        let request_id = &sink.request_id;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, request_id, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, request_id, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, request_id, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, request_id, "{message}"),
        }
        Ok(())
    }
}
