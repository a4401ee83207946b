//! Who a customer is: customer tokens (JWTs minted by the bank's mobile banking), the
//! customers the bank knows (with their region, tier, tags and status), the admins who manage
//! them, and the per-plugin pseudonyms that are all a plugin ever learns of a customer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::Sha256;

pub mod admins;
pub mod customers;
pub mod import;
pub mod partners;
pub mod token;

pub use token::{Claims, TokenKey, TokenRules, Verifier};

/// A customer as a development token names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// The bank's customer number (`sub`). Never shown to plugins.
    pub id: String,
    /// The customer's region (`region`).
    pub region: String,
}

/// The claims of a development token.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    region: &'a str,
    exp: u64,
    iat: u64,
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
    /// Forged, malformed, wrong algorithm or key, wrong issuer or audience, not yet valid, or
    /// missing a claim.
    #[error("the customer token is not valid: {0}")]
    Invalid(String),
}

/// Longest accepted customer number.
pub const CUSTOMER_ID_BYTES_MAX: usize = 128;

/// Verifies customer tokens and derives pseudonyms.
pub struct Identity {
    verifier: Verifier,
    /// The HS256 secret, when the host has one: development tokens are signed with it.
    minting: Option<EncodingKey>,
    pseudonym_key: Vec<u8>,
}

impl Identity {
    /// Tokens verified with `keys` under `rules`; development tokens signed with
    /// `hs256_secret` if given; pseudonyms keyed by `pseudonym_key`.
    pub fn new(
        keys: Vec<TokenKey>,
        rules: &TokenRules,
        hs256_secret: Option<&[u8]>,
        pseudonym_key: &[u8],
    ) -> Self {
        Self {
            verifier: Verifier::new(keys, rules),
            minting: hs256_secret.map(EncodingKey::from_secret),
            pseudonym_key: pseudonym_key.to_vec(),
        }
    }

    /// An identity that verifies and mints HS256 tokens with `secret` (tests, benchmarks).
    pub fn hs256(secret: &[u8], pseudonym_key: &[u8], leeway_seconds: u64) -> Self {
        let rules = TokenRules {
            leeway_seconds,
            ..TokenRules::default()
        };
        Self::new(
            vec![TokenKey::hs256(secret)],
            &rules,
            Some(secret),
            pseudonym_key,
        )
    }

    /// The claims of a bearer token, checked: signature, algorithm, `exp`, `nbf`, `iss`,
    /// `aud`, and a customer number of 1 to [`CUSTOMER_ID_BYTES_MAX`] bytes.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verifier.verify(token)?;
        if claims.sub.is_empty() || claims.sub.len() > CUSTOMER_ID_BYTES_MAX {
            return Err(TokenError::Invalid(format!(
                "claim `sub` must be 1 to {CUSTOMER_ID_BYTES_MAX} bytes"
            )));
        }
        if let Some(region) = &claims.region
            && !is_region(region)
        {
            return Err(TokenError::Invalid(
                "claim `region` must be 1 to 64 lowercase letters, digits or '-'".into(),
            ));
        }
        Ok(claims)
    }

    /// Whether this host can mint development tokens (it has an HS256 secret).
    pub fn can_mint(&self) -> bool {
        self.minting.is_some()
    }

    /// A token for `customer`, valid for `ttl`, signed with the host's HS256 secret (for
    /// development and tests; in production mobile banking mints them). `None` when the host
    /// verifies only public keys and so has no secret to sign with.
    pub fn mint(&self, customer: &Customer, ttl: Duration) -> Option<String> {
        let key = self.minting.as_ref()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = MintedClaims {
            sub: &customer.id,
            region: &customer.region,
            exp: now + ttl.as_secs(),
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
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

/// A new random API secret (an admin token, a partner key): `prefix`, then 256 random bits
/// in hex. Only its [`secret_digest`] is stored.
pub(crate) fn new_secret(prefix: &str) -> Result<String, sqlx::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(format!("{prefix}{}", hex::encode(secret)))
}

/// The SHA-256 digest a secret is stored and looked up by: a lookup by digest leaks nothing
/// about the stored secrets.
pub(crate) fn secret_digest(secret: &str) -> Vec<u8> {
    use sha2::Digest;
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `region` is a valid region name: parts of lowercase letters and digits joined by
/// `-`, at most 64 bytes. Regions form a tree by name: `cn-fj-xm` is under `cn-fj`, which is
/// under `cn`.
pub fn is_region(region: &str) -> bool {
    region.len() <= 64
        && region.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Whether `region` is `scope` or a region under it (`cn-fj-xm` is under `cn-fj` and `cn`).
pub fn region_within(region: &str, scope: &str) -> bool {
    region == scope
        || region
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::hs256(&[1; 32], &[2; 32], 0)
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
        let token = identity
            .mint(&customer(), Duration::from_secs(60))
            .expect("an HS256 identity mints");
        let claims = identity.verify(&token).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.region.as_deref()),
            ("6222000012345678", Some("cn-fj"))
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let token = Identity::hs256(&[9; 32], &[2; 32], 0)
            .mint(&customer(), Duration::from_secs(60))
            .expect("an HS256 identity mints");
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
    fn a_region_is_within_itself_and_its_ancestors_only() {
        assert!(region_within("cn-fj-xm", "cn-fj"));
        assert!(region_within("cn-fj", "cn-fj"));
        assert!(region_within("cn-fj", "cn"));
        assert!(!region_within("cn-fjx", "cn-fj"));
        assert!(!region_within("cn", "cn-fj"));
        assert!(!region_within("cn-gd", "cn-fj"));
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
