//! What the plugin may know about the calling customer: the profile fields its manifest
//! requests and the bank granted, never the bank's customer number.
//!
//! Request fields in `plugin.toml`; the bank decides which of them the plugin gets. A field
//! that was not requested, or not granted, is `None`, so write the plugin to work without it:
//!
//! ```toml
//! [capabilities]
//! interfaces = ["identity"]
//! identity_fields = ["tier", "tags"]   # any of "region", "tier", "tags"
//! ```
//!
//! ```no_run
//! use lifecircle_sdk::identity;
//!
//! let vip = identity::profile()
//!     .and_then(|profile| profile.tags)
//!     .is_some_and(|tags| tags.iter().any(|tag| tag == "vip"));
//! # let _ = vip;
//! ```

use crate::__private::bindings::lifecircle::scenario::identity as raw;

/// The calling customer's granted profile fields.
///
/// ```
/// use lifecircle_sdk::identity::Profile;
///
/// let profile = Profile { region: None, tier: Some("gold".into()), tags: None };
/// assert!(profile.is_tier("gold"));
/// assert!(!profile.has_tag("vip"), "tags were not granted, so no tag is known");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// The customer's region, such as `cn-fj-xm`, if granted.
    pub region: Option<String>,
    /// The customer's tier, such as `gold` (an empty string: no tier), if granted.
    pub tier: Option<String>,
    /// The customer's tags, sorted, if granted.
    pub tags: Option<Vec<String>>,
}

impl Profile {
    /// Whether the customer's tier is known to be `tier`.
    pub fn is_tier(&self, tier: &str) -> bool {
        self.tier.as_deref() == Some(tier)
    }

    /// Whether the customer is known to carry `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().flatten().any(|t| t == tag)
    }
}

/// The calling customer's granted profile fields; `None` when the caller is a partner or the
/// scheduler.
///
/// ```no_run
/// use lifecircle_sdk::identity;
///
/// match identity::profile() {
///     Some(profile) if profile.is_tier("gold") => { /* a gold customer's offer */ }
///     Some(_) => { /* everyone else, including when the tier was not granted */ }
///     None => { /* a partner or a scheduled job */ }
/// }
/// ```
pub fn profile() -> Option<Profile> {
    raw::profile().map(|raw| Profile {
        region: raw.region,
        tier: raw.tier,
        tags: raw.tags,
    })
}
