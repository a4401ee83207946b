//! Customer tokens: JWTs minted by the bank's mobile banking, verified with the keys the bank
//! configured.
//!
//! The key decides the algorithm, never the token: each configured key has exactly one
//! algorithm (HS256 for the shared secret; RS256 or ES256 for a PEM file or a JWKS entry), the
//! token's `kid` picks the key, and a token whose header names any other algorithm is refused.
//! So `alg: none`, or an HS256 token "signed" with an RSA public key as the secret, never
//! verifies. Several keys with distinct `kid`s allow rotation: mobile banking signs with the
//! new key while tokens signed with the old one stay valid until the old key is removed.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::TokenError;

/// One key customer tokens may be signed with.
pub struct TokenKey {
    /// The `kid` tokens name it by (`None`: tokens without a `kid`).
    pub kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// Why the configured keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read the token key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key is not what its configuration says.
    #[error("token key {what}: {reason}")]
    Invalid {
        /// Which key.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl TokenKey {
    /// The HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> TokenKey {
        TokenKey {
            kid: None,
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A PEM public key (`RS256` or `ES256`) read from `path`.
    pub fn from_pem_file(kid: &str, algorithm: &str, path: &Path) -> Result<TokenKey, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| KeyError::Invalid {
            what: format!("{kid:?} ({})", path.display()),
            reason,
        };
        let (algorithm, decoding) = match algorithm {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
            "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
            other => {
                return Err(invalid(format!(
                    "algorithm {other:?} is not supported; use RS256 or ES256 (or auth.token_secret for HS256)"
                )));
            }
        };
        let decoding = decoding.map_err(|error| {
            invalid(format!(
                "not a {algorithm:?} public key in PEM form: {error}"
            ))
        })?;
        Ok(TokenKey {
            kid: Some(kid.to_owned()),
            algorithm,
            decoding,
        })
    }

    /// Every key of a JWKS file. Each needs a `kid`; its algorithm is its `alg`, or follows
    /// from its type (RSA: RS256, EC P-256: ES256).
    pub fn from_jwks_file(path: &Path) -> Result<Vec<TokenKey>, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |what: String, reason: String| KeyError::Invalid {
            what: format!("{what} in {}", path.display()),
            reason,
        };
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|error| invalid("set".into(), format!("not a JWKS document: {error}")))?;
        set.keys
            .iter()
            .enumerate()
            .map(|(index, jwk)| {
                let what = format!("keys[{index}]");
                let kid = jwk
                    .common
                    .key_id
                    .clone()
                    .ok_or_else(|| invalid(what.clone(), "has no `kid`".into()))?;
                let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
                    (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_))
                    | (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                    (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(ec))
                    | (None, AlgorithmParameters::EllipticCurve(ec))
                        if ec.curve == EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    _ => {
                        return Err(invalid(
                            what,
                            "only RSA keys (RS256) and EC P-256 keys (ES256) are supported".into(),
                        ));
                    }
                };
                let decoding =
                    DecodingKey::from_jwk(jwk).map_err(|error| invalid(what, error.to_string()))?;
                Ok(TokenKey {
                    kid: Some(kid),
                    algorithm,
                    decoding,
                })
            })
            .collect()
    }
}

/// What a customer token must say besides its signature.
#[derive(Debug, Clone, Default)]
pub struct TokenRules {
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// The required `aud`, if any.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

/// The claims the host reads from a customer token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The bank's customer number.
    pub sub: String,
    /// The customer's region, used to enroll a customer the identity service does not know.
    #[serde(default)]
    pub region: Option<String>,
    /// The customer's tier, used likewise.
    #[serde(default)]
    pub tier: Option<String>,
}

/// Verifies customer tokens against the configured keys.
pub struct Verifier {
    keys: Vec<(TokenKey, Validation)>,
}

impl Verifier {
    /// A verifier of tokens signed with one of `keys` that follow `rules`.
    pub fn new(keys: Vec<TokenKey>, rules: &TokenRules) -> Verifier {
        let keys = keys
            .into_iter()
            .map(|key| {
                let mut validation = Validation::new(key.algorithm);
                validation.leeway = rules.leeway_seconds;
                validation.validate_nbf = true;
                let mut required = vec!["exp", "sub"];
                match &rules.issuer {
                    Some(issuer) => {
                        validation.set_issuer(&[issuer]);
                        required.push("iss");
                    }
                    None => validation.iss = None,
                }
                match &rules.audience {
                    Some(audience) => {
                        validation.set_audience(&[audience]);
                        required.push("aud");
                    }
                    None => validation.validate_aud = false,
                }
                validation.set_required_spec_claims(&required);
                (key, validation)
            })
            .collect();
        Verifier { keys }
    }

    /// How many keys it accepts.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The claims of `token`, if a configured key signed it and its claims hold.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token".into()))?;
        let (key, validation) = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(key, _)| key.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| TokenError::Invalid(format!("no key with kid {kid:?}")))?,
            None => match self.keys.as_slice() {
                [only] => only,
                _ => self
                    .keys
                    .iter()
                    .find(|(key, _)| key.kid.is_none())
                    .ok_or_else(|| {
                        TokenError::Invalid("the token names no key (`kid` header)".into())
                    })?,
            },
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => {
                        TokenError::Invalid("not valid yet (nbf)".into())
                    }
                    ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                    ErrorKind::InvalidAlgorithm => TokenError::Invalid(format!(
                        "wrong algorithm: this key verifies {:?} only",
                        key.algorithm
                    )),
                    ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer (iss)".into()),
                    ErrorKind::InvalidAudience => {
                        TokenError::Invalid("wrong audience (aud)".into())
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenError::Invalid(format!("missing claim `{claim}`"))
                    }
                    _ => TokenError::Invalid("malformed token".into()),
                }
            })?;
        Ok(data.claims)
    }
}
