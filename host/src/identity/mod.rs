//! Who a customer is: customer tokens (HS256 JWTs minted by the bank's mobile banking), and the
//! per-plugin pseudonyms that are all a plugin ever learns of a customer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A customer proven by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// The bank's customer number (`sub`). Never shown to plugins.
    pub id: String,
    /// The customer's region (`region`).
    pub region: String,
}

/// The claims of a customer token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    region: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No bearer token.
    #[error("this endpoint needs a customer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token's time is up.
    #[error("the customer token has expired; get a new one from mobile banking")]
    Expired,
    /// Forged, malformed, wrong algorithm or missing a claim.
    #[error("the customer token is not valid: {0}")]
    Invalid(String),
}

/// Longest accepted customer number.
const CUSTOMER_ID_BYTES_MAX: usize = 128;

/// Verifies customer tokens and derives pseudonyms.
pub struct Identity {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pseudonym_key: Vec<u8>,
}

impl Identity {
    /// Tokens signed with `token_secret`; pseudonyms keyed by `pseudonym_key`.
    pub fn new(token_secret: &[u8], pseudonym_key: &[u8], leeway_seconds: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_seconds;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(token_secret),
            decoding: DecodingKey::from_secret(token_secret),
            validation,
            pseudonym_key: pseudonym_key.to_vec(),
        }
    }

    /// The customer a bearer token proves.
    pub fn verify(&self, token: &str) -> Result<Customer, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => TokenError::Invalid("wrong algorithm".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Invalid(format!("missing claim `{claim}`"))
                }
                _ => TokenError::Invalid("malformed token".into()),
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > CUSTOMER_ID_BYTES_MAX {
            return Err(TokenError::Invalid(format!(
                "claim `sub` must be 1 to {CUSTOMER_ID_BYTES_MAX} bytes"
            )));
        }
        if !is_region(&claims.region) {
            return Err(TokenError::Invalid(
                "claim `region` must be 1 to 64 lowercase letters, digits or '-'".into(),
            ));
        }
        Ok(Customer {
            id: claims.sub,
            region: claims.region,
        })
    }

    /// A token for `customer`, valid for `ttl` (for development and tests; in production
    /// mobile banking mints them).
    pub fn mint(&self, customer: &Customer, ttl: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: customer.id.clone(),
            region: customer.region.clone(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with a secret cannot fail")
    }

    /// The customer's pseudonym for `plugin_id`: stable for one plugin, unrelated across
    /// plugins, and not reversible without the host's key.
    pub fn pseudonym(&self, plugin_id: &str, customer_id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.pseudonym_key).expect("HMAC takes any key length");
        mac.update(plugin_id.as_bytes());
        mac.update(&[0]);
        mac.update(customer_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// Whether `region` is a valid region code.
pub fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::new(&[1; 32], &[2; 32], 0)
    }

    fn customer() -> Customer {
        Customer {
            id: "6222000012345678".into(),
            region: "cn-fj".into(),
        }
    }

    #[test]
    fn a_minted_token_verifies_to_its_customer() {
        let identity = identity();
        let token = identity.mint(&customer(), Duration::from_secs(60));
        assert_eq!(identity.verify(&token), Ok(customer()));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let token = Identity::new(&[9; 32], &[2; 32], 0).mint(&customer(), Duration::from_secs(60));
        assert_eq!(
            identity().verify(&token),
            Err(TokenError::Invalid("bad signature".into()))
        );
    }

    #[test]
    fn an_unsigned_token_is_invalid() {
        // {"alg":"none"} . {"sub":"x","region":"cn","exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwicmVnaW9uIjoiY24iLCJleHAiOjk5OTk5OTk5OTl9.";
        assert!(matches!(
            identity().verify(token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn pseudonyms_are_stable_per_plugin_and_differ_across_plugins() {
        let identity = identity();
        let a = identity.pseudonym("hello", "6222000012345678");
        assert_eq!(a, identity.pseudonym("hello", "6222000012345678"));
        assert_ne!(a, identity.pseudonym("lottery", "6222000012345678"));
        assert_ne!(a, identity.pseudonym("hello", "6222000012345679"));
        assert!(!a.contains("6222"));
    }
}
