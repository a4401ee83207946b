//! The `vouchers` interface: what one plugin hands the calling customer for another plugin to
//! honour (a coupon won on the wheel), signed by the host so that no plugin can forge one and
//! no customer can use another's.
//!
//! A voucher is stateless: `v1.` + base64url(JSON claims) + `.` + base64url(HMAC-SHA256 of
//! the claims). The claims name the issuer, the recipient, the region, the label, the validity,
//! and a keyed digest of the voucher's id with the customer number: it binds the voucher to its
//! customer, reveals no customer number, and differs from voucher to voucher, so plugins that
//! read vouchers cannot use it to link their pseudonyms of one customer. The key is a random
//! secret the host keeps in its database, shared by every replica.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::VouchersConfig;
use crate::runtime::Metered;
use crate::runtime::interfaces::vouchers as wit;

/// Signs and checks vouchers with the host's key.
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    /// A signer keyed by `secret` (the host's `vouchers` secret).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    fn mac(&self, domain: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(domain);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The digest voucher `id` carries of `customer_number`: meaningless without the key, and
    /// different for every voucher of the same customer.
    fn customer_tag(&self, id: &str, customer_number: &str) -> String {
        let data = format!("{id}\0{customer_number}");
        hex::encode(&self.mac(b"lifecircle/vouchers/customer\0", data.as_bytes())[..16])
    }

    fn seal(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let tag = URL_SAFE_NO_PAD.encode(self.mac(b"lifecircle/vouchers/v1\0", body.as_bytes()));
        format!("v1.{body}.{tag}")
    }

    /// The claims of `text` if the host signed it.
    fn unseal(&self, text: &str) -> Option<Claims> {
        let rest = text.trim().strip_prefix("v1.")?;
        let (body, tag) = rest.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"lifecircle/vouchers/v1\0");
        mac.update(body.as_bytes());
        // Constant time: the comparison reveals nothing of the right tag.
        mac.verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

/// What a voucher says, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    id: String,
    #[serde(rename = "iss")]
    issuer: String,
    #[serde(rename = "to")]
    recipient: String,
    #[serde(rename = "reg")]
    region: String,
    #[serde(rename = "cus")]
    customer: String,
    #[serde(rename = "lab")]
    label: String,
    #[serde(rename = "iat")]
    issued_at_ms: i64,
    #[serde(rename = "exp")]
    expires_at_ms: i64,
}

/// Who calls, where and when: what the vouchers of one call are scoped to.
#[derive(Debug, Clone)]
pub struct VoucherContext {
    /// The plugin.
    pub plugin_id: String,
    /// The call's region.
    pub region: String,
    /// The calling customer's number; `None` for a partner's call.
    pub customer_number: Option<String>,
    /// The call's time.
    pub now_ms: i64,
}

/// One call's `vouchers`.
pub struct CallVouchers {
    signer: std::sync::Arc<Signer>,
    context: VoucherContext,
    config: VouchersConfig,
}

impl CallVouchers {
    /// The vouchers of a call in `context`.
    pub fn new(
        signer: std::sync::Arc<Signer>,
        context: VoucherContext,
        config: VouchersConfig,
    ) -> Self {
        Self {
            signer,
            context,
            config,
        }
    }

    fn issue(
        &self,
        recipient: String,
        label: String,
        valid_for_ms: i64,
    ) -> Result<String, wit::VoucherError> {
        let customer = self
            .context
            .customer_number
            .as_deref()
            .ok_or(wit::VoucherError::NoCustomer)?;
        if !crate::registry::is_plugin_id(&recipient) || !is_label(&label) {
            return Err(wit::VoucherError::InvalidRequest);
        }
        let max_ms = i64::from(self.config.validity_days_max) * 86_400_000;
        if valid_for_ms < 1 || valid_for_ms > max_ms {
            return Err(wit::VoucherError::ValidityTooLong(max_ms));
        }
        let context = &self.context;
        let id = uuid::Uuid::now_v7().simple().to_string();
        Ok(self.signer.seal(&Claims {
            customer: self.signer.customer_tag(&id, customer),
            id,
            issuer: context.plugin_id.clone(),
            recipient,
            region: context.region.clone(),
            label,
            issued_at_ms: context.now_ms,
            expires_at_ms: context.now_ms.saturating_add(valid_for_ms),
        }))
    }

    fn open(&self, text: &str) -> Result<wit::Voucher, wit::VoucherError> {
        let customer = self
            .context
            .customer_number
            .as_deref()
            .ok_or(wit::VoucherError::NoCustomer)?;
        let claims = self
            .signer
            .unseal(text)
            .ok_or(wit::VoucherError::NotAVoucher)?;
        let context = &self.context;
        if claims.recipient != context.plugin_id {
            return Err(wit::VoucherError::NotForThisPlugin);
        }
        if claims.customer != self.signer.customer_tag(&claims.id, customer) {
            return Err(wit::VoucherError::NotForThisCustomer);
        }
        if claims.region != context.region {
            return Err(wit::VoucherError::NotForThisRegion);
        }
        if context.now_ms >= claims.expires_at_ms {
            return Err(wit::VoucherError::Expired);
        }
        Ok(wit::Voucher {
            id: claims.id,
            issuer: claims.issuer,
            label: claims.label,
            issued_at_ms: claims.issued_at_ms,
            expires_at_ms: claims.expires_at_ms,
        })
    }
}

/// Whether `label` is 1 to 64 bytes of letters, digits, `-`, `_`, `.` and `:`.
fn is_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl wit::Host for Metered<'_, CallVouchers> {
    fn issue(
        &mut self,
        recipient: String,
        label: String,
        valid_for_ms: i64,
    ) -> wasmtime::Result<Result<String, wit::VoucherError>> {
        Ok(self.charge()?.issue(recipient, label, valid_for_ms))
    }

    fn open(&mut self, text: String) -> wasmtime::Result<Result<wit::Voucher, wit::VoucherError>> {
        let vouchers = self.charge()?;
        if text.len() > 4096 {
            return Ok(Err(wit::VoucherError::NotAVoucher));
        }
        Ok(vouchers.open(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(plugin: &str, region: &str, customer: Option<&str>, now_ms: i64) -> CallVouchers {
        CallVouchers::new(
            std::sync::Arc::new(Signer::new(b"a test key of the host")),
            VoucherContext {
                plugin_id: plugin.into(),
                region: region.into(),
                customer_number: customer.map(Into::into),
                now_ms,
            },
            VouchersConfig::default(),
        )
    }

    #[test]
    fn a_voucher_opens_only_for_its_recipient_customer_and_region_until_it_expires() {
        let wheel = call("spin-wheel", "cn-fj", Some("6222001"), 1_000);
        let text = wheel
            .issue("merchant-coupons".into(), "coupon:tea-10".into(), 500)
            .expect("works");
        assert!(text.len() < 400, "{} bytes", text.len());

        let opened = call("merchant-coupons", "cn-fj", Some("6222001"), 1_499)
            .open(&text)
            .expect("works");
        assert_eq!(opened.issuer, "spin-wheel");
        assert_eq!(opened.label, "coupon:tea-10");
        assert_eq!((opened.issued_at_ms, opened.expires_at_ms), (1_000, 1_500));

        let refused = |plugin, region, customer, now| {
            call(plugin, region, Some(customer), now)
                .open(&text)
                .expect_err("refused")
        };
        use wit::VoucherError::*;
        assert!(matches!(
            refused("merchant-coupons", "cn-fj", "6222001", 1_500),
            Expired
        ));
        assert!(matches!(
            refused("points-mall", "cn-fj", "6222001", 1_100),
            NotForThisPlugin
        ));
        assert!(matches!(
            refused("merchant-coupons", "cn-fj", "6222002", 1_100),
            NotForThisCustomer
        ));
        assert!(matches!(
            refused("merchant-coupons", "cn-gd", "6222001", 1_100),
            NotForThisRegion
        ));
        assert!(matches!(
            call("merchant-coupons", "cn-fj", None, 1_100).open(&text),
            Err(NoCustomer)
        ));
    }

    #[test]
    fn an_altered_or_foreign_voucher_is_not_a_voucher() {
        let wheel = call("spin-wheel", "cn", Some("6222001"), 0);
        let text = wheel
            .issue("merchant-coupons".into(), "x".into(), 1_000)
            .expect("works");
        let coupons = call("merchant-coupons", "cn", Some("6222001"), 1);
        assert!(coupons.open(&text).is_ok());
        // Another label with the same tag.
        let (body, tag) = text["v1.".len()..].split_once('.').expect("works");
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("works")).expect("works");
        claims.label = "coupon:all-free".into();
        let forged = format!(
            "v1.{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("works"))
        );
        for text in [forged.as_str(), "v1.e30.AAAA", "", "coupon:tea-10"] {
            assert!(matches!(
                coupons.open(text),
                Err(wit::VoucherError::NotAVoucher)
            ));
        }
        // Signed by another host.
        let other = CallVouchers {
            signer: std::sync::Arc::new(Signer::new(b"another host")),
            ..call("merchant-coupons", "cn", Some("6222001"), 1)
        };
        assert!(matches!(
            other.open(&text),
            Err(wit::VoucherError::NotAVoucher)
        ));
    }

    #[test]
    fn vouchers_of_one_customer_cannot_be_linked() {
        let wheel = call("spin-wheel", "cn", Some("6222001"), 0);
        let claims = |text: String| -> Claims {
            let body = text["v1.".len()..].split_once('.').expect("a body").0;
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("base64")).expect("json")
        };
        let issue = || {
            wheel
                .issue("merchant-coupons".into(), "a".into(), 1_000)
                .expect("issued")
        };
        let (first, second) = (claims(issue()), claims(issue()));
        assert_ne!(first.id, second.id);
        assert_ne!(first.customer, second.customer);
        assert!(!first.customer.contains("6222001"));
    }

    #[test]
    fn issuing_is_bounded() {
        let wheel = call("spin-wheel", "cn", Some("6222001"), 0);
        let max_ms = i64::from(VouchersConfig::default().validity_days_max) * 86_400_000;
        assert!(
            wheel
                .issue("merchant-coupons".into(), "a".into(), max_ms)
                .is_ok()
        );
        assert!(matches!(
            wheel.issue("merchant-coupons".into(), "a".into(), max_ms + 1),
            Err(wit::VoucherError::ValidityTooLong(limit)) if limit == max_ms
        ));
        assert!(matches!(
            wheel.issue("merchant-coupons".into(), "a".into(), 0),
            Err(wit::VoucherError::ValidityTooLong(_))
        ));
        for (recipient, label) in [("Not An Id", "a"), ("merchant-coupons", ""), ("m", "a b")] {
            assert!(matches!(
                wheel.issue(recipient.into(), label.into(), 1),
                Err(wit::VoucherError::InvalidRequest)
            ));
        }
        assert!(matches!(
            call("spin-wheel", "cn", None, 0).issue("m".into(), "a".into(), 1),
            Err(wit::VoucherError::NoCustomer)
        ));
    }
}
