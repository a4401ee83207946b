//! The plugin's settings for the call's region.
//!
//! The settings are one JSON object: the `[config]` defaults of the plugin's `plugin.toml`,
//! overlaid with what the bank's admins set for the region. They are fixed for the whole call.
//!
//! Settings the plugin cannot parse are a bug in the plugin or its configuration, not in the
//! request: both functions report them as [`ScenarioError::Refused`] with code
//! `config_invalid`, so the app sees HTTP 422 and the message names the setting.
//!
//! Import: list `"config"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::config;
//!
//! let greeting: String = config::get("greeting")?.unwrap_or_else(|| "Hello".to_owned());
//! # let _ = greeting;
//! # Ok::<(), lifecircle_sdk::ScenarioError>(())
//! ```

use serde::de::DeserializeOwned;

use crate::__private::bindings::lifecircle::scenario::config as raw;
use crate::ScenarioError;

/// Returns the top-level setting `key` parsed as `T`, or `None` if it is not set.
///
/// A setting that does not parse as `T` is [`ScenarioError::Refused`] with code
/// `config_invalid`.
///
/// ```no_run
/// use lifecircle_sdk::config;
///
/// let daily_spins: u32 = config::get("daily_spins")?.unwrap_or(1);
/// # let _ = daily_spins;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ScenarioError> {
    raw::get(key)
        .map(|text| parse(&text, &format!("the setting `{key}` is not valid")))
        .transpose()
}

/// Returns all settings parsed as `T`, typically a struct with one field per setting.
///
/// Settings that do not parse as `T` are [`ScenarioError::Refused`] with code
/// `config_invalid`.
///
/// ```no_run
/// use lifecircle_sdk::config;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Settings {
///     greeting: String,
///     #[serde(default)]
///     daily_spins: u32,
/// }
///
/// let settings: Settings = config::get_all()?;
/// # let _ = settings;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn get_all<T: DeserializeOwned>() -> Result<T, ScenarioError> {
    parse(&raw::get_all(), "the settings are not valid")
}

fn parse<T: DeserializeOwned>(text: &str, problem: &str) -> Result<T, ScenarioError> {
    serde_json::from_str(text)
        .map_err(|error| ScenarioError::refused("config_invalid", format!("{problem}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_a_setting_of_the_expected_type() {
        assert_eq!(
            parse::<u32>("3", "the setting `daily_spins` is not valid"),
            Ok(3)
        );
    }

    #[test]
    fn parse_reports_a_setting_of_another_type_as_config_invalid() {
        let error = parse::<u32>(r#""three""#, "the setting `daily_spins` is not valid")
            .expect_err("should be an error");
        assert!(matches!(error, ScenarioError::Refused { .. }));
        assert_eq!(error.code(), Some("config_invalid"));
        assert!(
            error
                .message()
                .is_some_and(|m| m.starts_with("the setting `daily_spins` is not valid: "))
        );
    }
}
