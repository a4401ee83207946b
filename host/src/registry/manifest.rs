//! A plugin's `plugin.toml`: who it is, what customers see of it, what it asks the host for,
//! and the shape of its per-region settings. Unknown keys are refused and every error names
//! the field, so a partner can fix a manifest from the message alone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::schema::Schema;
use crate::config::LimitOverrides;
use crate::runtime::{CAPABILITIES, IDENTITY_FIELDS};

/// The name of a bundle's manifest file.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A plugin's `plugin.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin id: lowercase letters, digits and `-`, at most 64 characters. It appears in
    /// URLs (`/v1/scenarios/{id}/...`).
    pub id: String,
    /// The plugin's version. With the id it names one immutable upload.
    pub version: String,
    /// The name shown to customers (English, or the bank's default language).
    pub name: String,
    /// One sentence shown to customers.
    pub description: String,
    /// The icon shown to customers: an `https://` URL.
    #[serde(default)]
    pub icon: Option<String>,
    /// Where the app files the scenario (`bills`, `coupons`, `games`, ...): lowercase letters,
    /// digits and `-`.
    #[serde(default)]
    pub category: Option<String>,
    /// The name and description in other languages, by language tag (`zh`, `zh-Hant`).
    #[serde(default)]
    pub translations: BTreeMap<String, Translation>,
    /// The component file, relative to the bundle directory (default `plugin.wasm`).
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Days the points this plugin awards stay valid (default: the host's
    /// `ledger.points_validity_days`; at most its `ledger.points_validity_days_max`). A region
    /// may set its own.
    #[serde(default)]
    pub points_validity_days: Option<u32>,
    /// What the plugin asks the host for.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Limits the plugin wants tighter than the host's.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Default settings for every region (plugins read them through `config`); a region's
    /// settings replace them key by key.
    #[serde(default)]
    pub config: toml::Table,
    /// A JSON Schema (the keywords are listed in the README) that the settings of every region,
    /// defaults included, must fit.
    #[serde(default)]
    pub config_schema: Option<toml::Table>,
}

/// Customer-facing text in one more language.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
}

/// The capabilities a manifest requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Host interfaces the component imports, by short name (`store`, `config`, ...).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Customer profile fields the plugin asks to see through `identity` (`region`, `tier`,
    /// `tags`); it sees those the bank's reviewer granted.
    #[serde(default)]
    pub identity_fields: Vec<String>,
    /// Hosts the plugin asks to reach through `outbound` (`api.water.example`,
    /// `api.water.example:8443`, `*.water.example`); it reaches those the bank grants in a
    /// region.
    #[serde(default)]
    pub outbound_hosts: Vec<String>,
}

impl Manifest {
    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| format!("{MANIFEST_FILE}: {}", e.message()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what the schema cannot: id shape, text lengths, known capabilities, the settings
    /// schema and that the default settings fit it.
    pub fn validate(&self) -> Result<(), String> {
        if !is_plugin_id(&self.id) {
            return Err(format!(
                "{MANIFEST_FILE}: id {:?} must be 1 to 64 lowercase letters, digits or '-', starting with a letter or digit",
                self.id
            ));
        }
        let mut texts = vec![
            ("version".to_owned(), &self.version, 64),
            ("name".to_owned(), &self.name, 200),
            ("description".to_owned(), &self.description, 2000),
        ];
        for (language, translation) in &self.translations {
            if !is_language_tag(language) {
                return Err(format!(
                    "{MANIFEST_FILE}: translations.{language} is not a language tag such as zh or zh-Hant"
                ));
            }
            texts.push((
                format!("translations.{language}.name"),
                &translation.name,
                200,
            ));
            texts.push((
                format!("translations.{language}.description"),
                &translation.description,
                2000,
            ));
        }
        for (field, value, max) in texts {
            if value.trim().is_empty() || value.len() > max {
                return Err(format!(
                    "{MANIFEST_FILE}: {field} must be 1 to {max} bytes and not blank"
                ));
            }
        }
        if !self
            .version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+_".contains(&b))
        {
            return Err(format!(
                "{MANIFEST_FILE}: version {:?} may hold only letters, digits, '.', '-', '+' and '_'",
                self.version
            ));
        }
        if let Some(icon) = &self.icon
            && (!icon.starts_with("https://")
                || icon.len() > 2048
                || icon.contains(char::is_whitespace))
        {
            return Err(format!(
                "{MANIFEST_FILE}: icon must be an https:// URL of at most 2048 bytes"
            ));
        }
        if let Some(category) = &self.category
            && (!is_plugin_id(category) || category.len() > 32)
        {
            return Err(format!(
                "{MANIFEST_FILE}: category {category:?} must be 1 to 32 lowercase letters, digits or '-'"
            ));
        }
        for (index, field) in self.capabilities.identity_fields.iter().enumerate() {
            if !IDENTITY_FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "{MANIFEST_FILE}: capabilities.identity_fields[{index}] = {field:?} is not a profile field (known: {})",
                    IDENTITY_FIELDS.join(", ")
                ));
            }
        }
        for (index, rule) in self.capabilities.outbound_hosts.iter().enumerate() {
            crate::outbound::HostRule::parse(rule).map_err(|problem| {
                format!("{MANIFEST_FILE}: capabilities.outbound_hosts[{index}]: {problem}")
            })?;
        }
        if !self.capabilities.outbound_hosts.is_empty()
            && !self.capabilities.interfaces.iter().any(|i| i == "outbound")
        {
            return Err(format!(
                "{MANIFEST_FILE}: capabilities.outbound_hosts needs \"outbound\" in capabilities.interfaces"
            ));
        }
        for (index, interface) in self.capabilities.interfaces.iter().enumerate() {
            if !CAPABILITIES.contains(&interface.as_str()) {
                return Err(format!(
                    "{MANIFEST_FILE}: capabilities.interfaces[{index}] = {interface:?} is not a host interface (known: {})",
                    CAPABILITIES.join(", ")
                ));
            }
        }
        if let Some(schema) = self.schema()? {
            let problems = schema.problems(&Value::Object(self.defaults()));
            if let Some(first) = problems.first() {
                return Err(format!(
                    "{MANIFEST_FILE}: the default [config] does not fit config_schema: {first}"
                ));
            }
        }
        Ok(())
    }

    /// The default settings as JSON.
    pub fn defaults(&self) -> Map<String, Value> {
        match toml_to_json(toml::Value::Table(self.config.clone())) {
            Value::Object(settings) => settings,
            _ => unreachable!("a TOML table converts to a JSON object"),
        }
    }

    /// The settings schema, checked.
    pub fn schema(&self) -> Result<Option<Schema>, String> {
        self.config_schema
            .as_ref()
            .map(|table| {
                Schema::new(toml_to_json(toml::Value::Table(table.clone())))
                    .map_err(|e| format!("{MANIFEST_FILE}: {e}"))
            })
            .transpose()
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

/// Whether `tag` looks like a BCP 47 language tag (`zh`, `zh-Hant`, `en-GB`).
fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|part| {
            (2..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// A TOML value as JSON (dates become strings).
pub fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
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

    const GOOD: &str =
        "id = \"hello\"\nversion = \"0.1.0\"\nname = \"Hello\"\ndescription = \"Says hello.\"\n";

    #[test]
    fn a_minimal_manifest_is_valid() {
        let parsed = Manifest::parse(GOOD).expect("valid");
        assert_eq!(parsed.id, "hello");
        assert!(parsed.capabilities.interfaces.is_empty());
    }

    #[test]
    fn unknown_manifest_key_is_named() {
        let error = Manifest::parse(&format!("{GOOD}colour = \"red\"\n")).expect_err("unknown key");
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn unknown_capability_is_named_with_its_position() {
        let error = Manifest::parse(&format!(
            "{GOOD}[capabilities]\ninterfaces = [\"store\", \"sockets\"]\n"
        ))
        .expect_err("unknown capability");
        assert!(error.contains("interfaces[1]"), "{error}");
        assert!(error.contains("sockets"), "{error}");
    }

    #[test]
    fn translations_icon_and_category_are_checked() {
        let good = format!(
            "{GOOD}icon = \"https://cdn.example/hello.png\"\ncategory = \"games\"\n\
             [translations.zh]\nname = \"你好\"\ndescription = \"打招呼。\"\n"
        );
        let parsed = Manifest::parse(&good).expect("valid");
        assert_eq!(parsed.translations["zh"].name, "你好");
        let error = Manifest::parse(&format!("{GOOD}icon = \"http://x\"\n")).expect_err("http");
        assert!(error.contains("icon"), "{error}");
        let error = Manifest::parse(&format!(
            "{GOOD}[translations.Chinese]\nname = \"x\"\ndescription = \"y\"\n"
        ))
        .expect_err("bad tag");
        assert!(error.contains("translations.Chinese"), "{error}");
    }

    #[test]
    fn defaults_must_fit_the_settings_schema() {
        let text = format!(
            "{GOOD}[config]\nspins = \"many\"\n[config_schema]\ntype = \"object\"\n\
             [config_schema.properties.spins]\ntype = \"integer\"\n"
        );
        let error = Manifest::parse(&text).expect_err("defaults do not fit");
        assert!(error.contains("config.spins"), "{error}");
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
