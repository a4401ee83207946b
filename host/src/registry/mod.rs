//! Plugins the host serves: bundles read from the plugins directory at start-up, each a
//! directory with a `plugin.toml` manifest and a component, checked, compiled and ready.
//!
//! A bundle that fails any check stops start-up with a message naming the bundle and the
//! problem, so a bank never runs with a plugin silently missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, LimitAboveHost, LimitOverrides, Limits};
use crate::runtime::{CAPABILITIES, CompiledPlugin, IDENTITY_FIELDS, LoadError, Runtime};

mod config;
pub use config::CallConfig;

/// The name of a bundle's manifest file.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// The component file of a bundle whose manifest does not name one.
pub const DEFAULT_COMPONENT_FILE: &str = "plugin.wasm";

/// Component files larger than this are refused before they are read.
const COMPONENT_BYTES_MAX: u64 = 64 << 20;

/// A plugin's `plugin.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin id: lowercase letters, digits and `-`, at most 64 characters. It appears in
    /// URLs (`/v1/scenarios/{id}/...`).
    pub id: String,
    /// The plugin's version.
    pub version: String,
    /// The name shown to customers.
    pub name: String,
    /// One sentence shown to customers.
    pub description: String,
    /// The component file, relative to the bundle directory (default `plugin.wasm`).
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Days the points this plugin awards stay valid (default: the host's
    /// `ledger.points_validity_days`; at most its `ledger.points_validity_days_max`).
    #[serde(default)]
    pub points_validity_days: Option<u32>,
    /// What the plugin asks the host for.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Limits the plugin wants tighter than the host's.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Default settings per region (any table; plugins read them through `config`).
    #[serde(default)]
    pub config: toml::Table,
}

/// The capabilities a manifest requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Host interfaces the component imports, by short name (`store`, `config`, ...).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Customer profile fields the plugin asks to see through `identity` (`region`, `tier`,
    /// `tags`); it sees those the bank also granted (`plugin_grants.<id>.identity_fields`).
    #[serde(default)]
    pub identity_fields: Vec<String>,
}

/// A loaded plugin, ready to call.
pub struct Plugin {
    /// Its manifest.
    pub manifest: Manifest,
    /// The plugin id, shared cheaply with every call.
    pub id: Arc<str>,
    /// sha256 of the component, hex.
    pub digest: String,
    /// The limits its calls run under.
    pub limits: Limits,
    /// The compiled component.
    pub compiled: CompiledPlugin,
    /// Its settings.
    pub config: CallConfig,
    /// sha256 of its settings (JSON text), hex: which settings a call saw.
    pub config_digest: String,
    /// How long the points it awards stay valid, in milliseconds.
    pub points_validity_ms: i64,
    /// The customer profile fields it may see: requested and granted.
    pub identity_fields: Vec<String>,
}

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugins directory cannot be read.
    #[error(
        "cannot read plugins directory {path}: {source}; build the plugins first (make plugins) or pass --plugins DIR"
    )]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// One bundle is bad.
    #[error("plugin bundle {path}: {problem}")]
    Bundle {
        /// The bundle directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// The loaded plugins, by id.
#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
}

impl Registry {
    /// Loads every bundle directory under `dir`.
    pub fn load_dir(
        runtime: &Runtime,
        config: &Config,
        dir: &Path,
    ) -> Result<Registry, RegistryError> {
        let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let mut bundles: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.join(MANIFEST_FILE).is_file())
            .collect();
        bundles.sort();
        let mut registry = Registry::default();
        for bundle in bundles {
            let started = std::time::Instant::now();
            let plugin =
                load_bundle(runtime, config, &bundle).map_err(|problem| RegistryError::Bundle {
                    path: bundle.clone(),
                    problem,
                })?;
            if registry.plugins.contains_key(&plugin.manifest.id) {
                return Err(RegistryError::Bundle {
                    path: bundle,
                    problem: format!("a second bundle with id {:?}", plugin.manifest.id),
                });
            }
            tracing::info!(
                plugin = %plugin.manifest.id,
                version = %plugin.manifest.version,
                digest = %&plugin.digest[..12],
                elapsed_ms = started.elapsed().as_millis() as u64,
                "plugin loaded"
            );
            registry
                .plugins
                .insert(plugin.manifest.id.clone(), Arc::new(plugin));
        }
        Ok(registry)
    }

    /// The plugin with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(id).cloned()
    }

    /// Every plugin, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }
}

/// Reads, checks and compiles one bundle; the error says what is wrong and how to fix it.
pub fn load_bundle(runtime: &Runtime, config: &Config, bundle: &Path) -> Result<Plugin, String> {
    let manifest_path = bundle.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {MANIFEST_FILE}: {e}"))?;
    let manifest: Manifest =
        toml::from_str(&text).map_err(|e| format!("{MANIFEST_FILE}: {}", e.message()))?;
    manifest.validate()?;
    let limits = config
        .limits_for(&manifest.id)
        .tightened_by(&manifest.limits)
        .map_err(|e: LimitAboveHost| format!("{MANIFEST_FILE}: {e}"))?;

    let validity_days = manifest
        .points_validity_days
        .unwrap_or(config.ledger.points_validity_days);
    if validity_days == 0 || validity_days > config.ledger.points_validity_days_max {
        return Err(format!(
            "{MANIFEST_FILE}: points_validity_days = {validity_days} must be 1 to {} (the bank's \
             ledger.points_validity_days_max)",
            config.ledger.points_validity_days_max
        ));
    }
    let component_path = bundle.join(
        manifest
            .component
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_COMPONENT_FILE)),
    );
    let size = std::fs::metadata(&component_path)
        .map_err(|e| format!("cannot read component {}: {e}", component_path.display()))?
        .len();
    if size > COMPONENT_BYTES_MAX {
        return Err(format!(
            "component {} is {size} bytes, over the {COMPONENT_BYTES_MAX}-byte limit",
            component_path.display()
        ));
    }
    let wasm = std::fs::read(&component_path)
        .map_err(|e| format!("cannot read component {}: {e}", component_path.display()))?;
    let digest = hex::encode(Sha256::digest(&wasm));
    let compiled = runtime
        .compile(&digest, &wasm, &manifest.capabilities.interfaces)
        .map_err(|e: LoadError| format!("component {}: {e}", component_path.display()))?;
    let settings = toml_to_json(toml::Value::Table(manifest.config.clone()));
    let serde_json::Value::Object(settings) = settings else {
        unreachable!("a TOML table converts to a JSON object");
    };
    let granted = config_grants(config, &manifest.id);
    let config = CallConfig::new(settings);
    let identity_fields = manifest
        .capabilities
        .identity_fields
        .iter()
        .filter(|field| granted.contains(field))
        .cloned()
        .collect();
    Ok(Plugin {
        id: Arc::from(manifest.id.as_str()),
        config_digest: hex::encode(Sha256::digest(config.as_json().as_bytes())),
        manifest,
        digest,
        limits,
        compiled,
        config,
        points_validity_ms: i64::from(validity_days) * 24 * 3600 * 1000,
        identity_fields,
    })
}

/// The identity fields the bank granted `plugin_id` in its configuration.
fn config_grants<'a>(config: &'a Config, plugin_id: &str) -> &'a [String] {
    config
        .plugin_grants
        .get(plugin_id)
        .map_or(&[], |grants| grants.identity_fields.as_slice())
}

impl Manifest {
    /// Checks what the schema cannot: id shape, non-empty texts, known capabilities.
    pub fn validate(&self) -> Result<(), String> {
        if !is_plugin_id(&self.id) {
            return Err(format!(
                "{MANIFEST_FILE}: id {:?} must be 1 to 64 lowercase letters, digits or '-', starting with a letter or digit",
                self.id
            ));
        }
        for (field, value, max) in [
            ("version", &self.version, 64),
            ("name", &self.name, 200),
            ("description", &self.description, 2000),
        ] {
            if value.trim().is_empty() || value.len() > max {
                return Err(format!(
                    "{MANIFEST_FILE}: {field} must be 1 to {max} bytes and not blank"
                ));
            }
        }
        for (index, field) in self.capabilities.identity_fields.iter().enumerate() {
            if !IDENTITY_FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "{MANIFEST_FILE}: capabilities.identity_fields[{index}] = {field:?} is not a profile field (known: {})",
                    IDENTITY_FIELDS.join(", ")
                ));
            }
        }
        for (index, interface) in self.capabilities.interfaces.iter().enumerate() {
            if !CAPABILITIES.contains(&interface.as_str()) {
                return Err(format!(
                    "{MANIFEST_FILE}: capabilities.interfaces[{index}] = {interface:?} is not a host interface (known: {})",
                    CAPABILITIES.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Whether `id` is a valid plugin id.
pub fn is_plugin_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Json::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        manifest.validate()?;
        Ok(manifest)
    }

    const GOOD: &str =
        "id = \"hello\"\nversion = \"0.1.0\"\nname = \"Hello\"\ndescription = \"Says hello.\"\n";

    #[test]
    fn a_minimal_manifest_is_valid() {
        let parsed = manifest(GOOD).expect("valid");
        assert_eq!(parsed.id, "hello");
        assert!(parsed.capabilities.interfaces.is_empty());
    }

    #[test]
    fn unknown_manifest_key_is_named() {
        let error = manifest(&format!("{GOOD}colour = \"red\"\n")).expect_err("unknown key");
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn unknown_capability_is_named_with_its_position() {
        let error = manifest(&format!(
            "{GOOD}[capabilities]\ninterfaces = [\"store\", \"sockets\"]\n"
        ))
        .expect_err("unknown capability");
        assert!(error.contains("interfaces[1]"), "{error}");
        assert!(error.contains("sockets"), "{error}");
    }

    #[test]
    fn plugin_ids_are_url_safe() {
        assert!(is_plugin_id("spin-wheel"));
        assert!(is_plugin_id("a1"));
        for bad in ["", "-x", "Spin", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_plugin_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn toml_config_becomes_json() {
        let table: toml::Table =
            toml::from_str("a = 1\nb = [true, \"x\"]\n[c]\nd = 1.5\n").expect("toml");
        assert_eq!(
            toml_to_json(toml::Value::Table(table)),
            serde_json::json!({"a": 1, "b": [true, "x"], "c": {"d": 1.5}})
        );
    }
}
