//! The `identity` interface: the calling customer's profile fields the plugin requested and the
//! bank granted, fixed when the call starts. Never the customer number.

use super::Metered;
use super::bindings::lifecircle::scenario::identity::{CustomerProfile, Host};

/// The fields of the calling customer a plugin may see; `None` for a partner or the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallIdentity(pub Option<Fields>);

/// Granted profile fields; `None`: not granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// The customer's region.
    pub region: Option<String>,
    /// The customer's tier.
    pub tier: Option<String>,
    /// The customer's tags.
    pub tags: Option<Vec<String>>,
}

impl Host for Metered<'_, CallIdentity> {
    fn profile(&mut self) -> wasmtime::Result<Option<CustomerProfile>> {
        let identity = self.charge()?;
        Ok(identity.0.clone().map(|fields| CustomerProfile {
            region: fields.region,
            tier: fields.tier,
            tags: fields.tags,
        }))
    }
}
