//! The `config` interface: a plugin's settings for the call's region, fixed for the call.
//!
//! The settings are the `[config]` defaults of the plugin's manifest with the keys the region's
//! enablement sets on top (checked against the manifest's `config_schema` when set), resolved
//! once per registry snapshot.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::runtime::Metered;
use crate::runtime::interfaces::config::Host;

/// A plugin's settings, shared by all its calls.
#[derive(Clone)]
pub struct CallConfig {
    values: Arc<Map<String, Value>>,
    /// The settings as JSON text, built once.
    text: Arc<str>,
}

impl CallConfig {
    /// Settings from a JSON object.
    pub fn new(values: Map<String, Value>) -> Self {
        let text = Value::Object(values.clone()).to_string();
        Self {
            values: Arc::new(values),
            text: Arc::from(text),
        }
    }

    /// The settings as JSON text.
    pub fn as_json(&self) -> &str {
        &self.text
    }
}

impl Host for Metered<'_, CallConfig> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.charge()?.values.get(&key).map(Value::to_string))
    }

    fn get_all(&mut self) -> wasmtime::Result<String> {
        Ok(self.charge()?.text.to_string())
    }
}
