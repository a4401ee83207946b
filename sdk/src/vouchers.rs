//! Vouchers: hand the calling customer something another scenario honours, such as a coupon
//! won on the wheel that the coupons scenario then issues. Plugins never call each other; the
//! customer's app carries the voucher from one to the other.
//!
//! The host signs each voucher with the issuing plugin, the recipient plugin, the customer, the
//! region, a label and an expiry, so no plugin can forge one and no customer can use another's
//! or alter it. The recipient decides what it honours (which issuers, which labels) and keeps
//! each voucher's [`Voucher::id`] so that it honours it once, for example with
//! [`store::compare_and_swap`](crate::store::compare_and_swap).
//!
//! Import: list `"vouchers"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! The issuing side (the wheel):
//!
//! ```no_run
//! use lifecircle_sdk::vouchers;
//! use std::time::Duration;
//!
//! let text = vouchers::issue("merchant-coupons", "coupon:tea-10", Duration::from_secs(30 * 86_400))
//!     .expect("issued");
//! // Answer `text` to the app, which passes it to the coupons scenario.
//! ```
//!
//! The honouring side (the coupons scenario):
//!
//! ```no_run
//! use lifecircle_sdk::{store, vouchers, ScenarioError};
//!
//! # fn honour(text: &str) -> Result<(), ScenarioError> {
//! let voucher = vouchers::open(text)?;
//! if voucher.issuer != "spin-wheel" || voucher.label != "coupon:tea-10" {
//!     return Err(ScenarioError::invalid_input("voucher_not_accepted", "not a voucher for this"));
//! }
//! if !store::compare_and_swap(&format!("voucher/{}", voucher.id), None, Some(b"used")) {
//!     return Err(ScenarioError::conflict("voucher_used", "this voucher was used already"));
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::__private::bindings::lifecircle::scenario::vouchers as raw;
use crate::ScenarioError;

/// An opened voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    /// Unique to this voucher: keep it to honour the voucher once.
    pub id: String,
    /// The plugin that issued it.
    pub issuer: String,
    /// The issuer's label, such as `coupon:tea-10`.
    pub label: String,
    /// When it was issued, ms since the Unix epoch.
    pub issued_at_ms: i64,
    /// When it expires, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Why a voucher was not issued or not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoucherError {
    /// Only a customer's call (or a job for a customer) can issue or open a voucher.
    NoCustomer,
    /// The recipient is not a plugin id, or the label is empty or longer than 64 bytes of
    /// letters, digits, `-`, `_`, `.` and `:`.
    InvalidRequest,
    /// The validity asked for is zero or longer than the bank allows.
    ValidityTooLong {
        /// The limit.
        max: Duration,
    },
    /// The text is not a voucher the host signed (mistyped, altered or made up).
    NotAVoucher,
    /// The voucher is for another plugin.
    NotForThisPlugin,
    /// The voucher is another customer's.
    NotForThisCustomer,
    /// The voucher was issued in another region.
    NotForThisRegion,
    /// The voucher has expired.
    Expired,
}

impl fmt::Display for VoucherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCustomer => write!(f, "vouchers are for customers' calls"),
            Self::InvalidRequest => write!(
                f,
                "a voucher names a plugin id and a label of 1 to 64 letters, digits, '-', '_', \
                 '.' or ':'"
            ),
            Self::ValidityTooLong { max } => write!(
                f,
                "a voucher is valid for at least 1 ms and at most {} days",
                max.as_secs() / 86_400
            ),
            Self::NotAVoucher => {
                write!(f, "this is not a valid voucher; check it was copied whole")
            }
            Self::NotForThisPlugin => write!(f, "this voucher is for another scenario"),
            Self::NotForThisCustomer => write!(f, "this voucher belongs to another customer"),
            Self::NotForThisRegion => write!(f, "this voucher was issued in another region"),
            Self::Expired => write!(f, "this voucher has expired"),
        }
    }
}

impl std::error::Error for VoucherError {}

/// `?` turns a [`VoucherError`] into a refusal the app can show: `voucher_invalid` (400) for
/// text that is not a voucher for this scenario, `voucher_not_yours`, `voucher_wrong_region`
/// or `voucher_expired` (422), and `voucher_not_issued` (422) when issuing failed.
impl From<VoucherError> for ScenarioError {
    fn from(error: VoucherError) -> Self {
        let message = error.to_string();
        match error {
            VoucherError::NotAVoucher | VoucherError::NotForThisPlugin => {
                ScenarioError::invalid_input("voucher_invalid", message)
            }
            VoucherError::NotForThisCustomer => {
                ScenarioError::refused("voucher_not_yours", message)
            }
            VoucherError::NotForThisRegion => {
                ScenarioError::refused("voucher_wrong_region", message)
            }
            VoucherError::Expired => ScenarioError::refused("voucher_expired", message),
            VoucherError::NoCustomer
            | VoucherError::InvalidRequest
            | VoucherError::ValidityTooLong { .. } => {
                ScenarioError::refused("voucher_not_issued", message)
            }
        }
    }
}

fn from_raw(error: raw::VoucherError) -> VoucherError {
    match error {
        raw::VoucherError::NoCustomer => VoucherError::NoCustomer,
        raw::VoucherError::InvalidRequest => VoucherError::InvalidRequest,
        raw::VoucherError::ValidityTooLong(max_ms) => VoucherError::ValidityTooLong {
            max: Duration::from_millis(max_ms.max(0) as u64),
        },
        raw::VoucherError::NotAVoucher => VoucherError::NotAVoucher,
        raw::VoucherError::NotForThisPlugin => VoucherError::NotForThisPlugin,
        raw::VoucherError::NotForThisCustomer => VoucherError::NotForThisCustomer,
        raw::VoucherError::NotForThisRegion => VoucherError::NotForThisRegion,
        raw::VoucherError::Expired => VoucherError::Expired,
    }
}

/// Issues a voucher for plugin `recipient` to honour for the calling customer in this region,
/// labelled `label`, valid for `valid_for` from the call's time. The answer is its text (a few
/// hundred URL-safe bytes) to give the customer's app.
pub fn issue(recipient: &str, label: &str, valid_for: Duration) -> Result<String, VoucherError> {
    let valid_for_ms = i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX);
    raw::issue(recipient, label, valid_for_ms).map_err(from_raw)
}

/// Checks that `text` is a voucher the host issued for this plugin, the calling customer and
/// this region, not expired, and opens it.
pub fn open(text: &str) -> Result<Voucher, VoucherError> {
    let voucher = raw::open(text).map_err(from_raw)?;
    Ok(Voucher {
        id: voucher.id,
        issuer: voucher.issuer,
        label: voucher.label,
        issued_at_ms: voucher.issued_at_ms,
        expires_at_ms: voucher.expires_at_ms,
    })
}
