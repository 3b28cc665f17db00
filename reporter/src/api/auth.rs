//! JWT bearer tokens (HS256 only). A token carries the role and, for an advertiser, its id;
//! signature and expiry are checked on every request (no leeway beyond [`LEEWAY_SECS`]).
//! The [`Scope`] extractor turns a request into what the caller may see; handlers never look at
//! the token themselves.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;

/// Clock skew tolerated on `exp`, seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Shortest secret accepted, bytes (HS256 wants at least its output size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token accepted, bytes (the header is hostile input).
pub const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees its own advertiser's data only.
    Advertiser,
    /// Sees everything, including no-bid reasons and ingest counters.
    Operator,
}

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was minted for (free text, logged).
    pub sub: String,
    pub role: Role,
    /// The advertiser id; required for the advertiser role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adv: Option<u32>,
    pub iat: u64,
    pub exp: u64,
}

/// What the caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Advertiser(i64),
}

impl Scope {
    /// The advertiser filter for a query given an optional `advertiser_id` parameter: an
    /// advertiser asking for another advertiser is refused; an operator gets what it asks.
    pub fn advertiser_filter(self, asked: Option<i64>) -> Result<Option<i64>, ApiError> {
        match (self, asked) {
            (Scope::All, a) => Ok(a),
            (Scope::Advertiser(me), None) => Ok(Some(me)),
            (Scope::Advertiser(me), Some(a)) if a == me => Ok(Some(me)),
            (Scope::Advertiser(_), Some(_)) => Err(ApiError::Forbidden(
                "this token may only read its own advertiser's data".into(),
            )),
        }
    }
    pub fn require_operator(self) -> Result<(), ApiError> {
        match self {
            Scope::All => Ok(()),
            Scope::Advertiser(_) => Err(ApiError::Forbidden(
                "this route is for operators only".into(),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
    #[error("an advertiser token needs an advertiser id")]
    MissingAdvertiser,
    #[error("could not sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Keys and validation rules, built once at start.
pub struct Auth {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { HS256, secret redacted }")
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    pub fn new(secret: &[u8]) -> Result<Auth, AuthError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AuthError::ShortSecret);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat"]);
        Ok(Auth {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Mints a token valid for `ttl_secs` from now.
    pub fn mint(
        &self,
        role: Role,
        adv: Option<u32>,
        sub: &str,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        if role == Role::Advertiser && adv.is_none() {
            return Err(AuthError::MissingAdvertiser);
        }
        let iat = now_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            adv,
            iat,
            exp: iat.saturating_add(ttl_secs),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.enc,
        )?)
    }

    /// Checks a bearer token and returns its claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized("token too long".into()));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let why = match e.kind() {
                    K::ExpiredSignature => "token expired",
                    K::InvalidSignature => "token signature invalid",
                    K::InvalidAlgorithm => "token algorithm not accepted (HS256 only)",
                    K::MissingRequiredClaim(_) => "token lacks a required claim (exp, iat)",
                    _ => "token malformed",
                };
                ApiError::Unauthorized(why.into())
            })?;
        Ok(data.claims)
    }

    /// The caller's scope from an `Authorization: Bearer …` header value.
    pub fn scope(&self, header: Option<&str>) -> Result<(Scope, Claims), ApiError> {
        let h = header.ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
        })?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be a Bearer token".into()))?
            .trim();
        let c = self.verify(token)?;
        let scope = match (c.role, c.adv) {
            (Role::Operator, _) => Scope::All,
            (Role::Advertiser, Some(a)) => Scope::Advertiser(a as i64),
            (Role::Advertiser, None) => {
                return Err(ApiError::Unauthorized(
                    "advertiser token without an advertiser id".into(),
                ));
            }
        };
        Ok((scope, c))
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
    pub claims: Claims,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header =
            match parts.headers.get(AUTHORIZATION) {
                None => None,
                Some(v) => Some(v.to_str().map_err(|_| {
                    ApiError::Unauthorized("Authorization header is not text".into())
                })?),
            };
        let (scope, claims) = state.auth.scope(header)?;
        Ok(Caller { scope, claims })
    }
}

/// Parses a TTL: `3600`, `90s`, `30m`, `24h`, `7d`.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 3600, 90s, 30m, 24h, 7d"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("unknown unit in `{s}` (s, m, h, d)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0 && v <= 366 * 86_400)
        .ok_or_else(|| format!("`{s}` must be between 1 s and 366 days"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn mints_and_verifies() {
        let a = Auth::new(SECRET).unwrap();
        let t = a.mint(Role::Advertiser, Some(7), "alice", 60).unwrap();
        let (scope, c) = a.scope(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(scope, Scope::Advertiser(7));
        assert_eq!(c.sub, "alice");
        let t = a.mint(Role::Operator, None, "ops", 60).unwrap();
        assert_eq!(a.scope(Some(&format!("Bearer {t}"))).unwrap().0, Scope::All);
    }

    #[test]
    fn refuses_bad_tokens() {
        let a = Auth::new(SECRET).unwrap();
        let other = Auth::new(b"another-secret-another-secret-xx").unwrap();
        let forged = other.mint(Role::Operator, None, "mallory", 60).unwrap();
        let err = a.scope(Some(&format!("Bearer {forged}"))).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(ref m) if m.contains("signature")));

        // Expired (beyond the leeway).
        let iat = now_secs() - 1000;
        let claims = Claims {
            sub: "x".into(),
            role: Role::Operator,
            adv: None,
            iat,
            exp: iat + 10,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let err = a.scope(Some(&format!("Bearer {t}"))).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(ref m) if m.contains("expired")));

        // Algorithm other than HS256.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(a.scope(Some(&format!("Bearer {t}"))).is_err());

        assert!(a.scope(None).is_err());
        assert!(a.scope(Some("Basic abc")).is_err());
        assert!(a.scope(Some("Bearer not.a.token")).is_err());
        assert!(a.mint(Role::Advertiser, None, "x", 60).is_err());
        assert!(matches!(Auth::new(b"short"), Err(AuthError::ShortSecret)));
    }

    #[test]
    fn advertiser_filter_never_widens() {
        assert_eq!(Scope::All.advertiser_filter(None).unwrap(), None);
        assert_eq!(Scope::All.advertiser_filter(Some(3)).unwrap(), Some(3));
        assert_eq!(
            Scope::Advertiser(3).advertiser_filter(None).unwrap(),
            Some(3)
        );
        assert_eq!(
            Scope::Advertiser(3).advertiser_filter(Some(3)).unwrap(),
            Some(3)
        );
        assert!(Scope::Advertiser(3).advertiser_filter(Some(4)).is_err());
        assert!(Scope::Advertiser(3).require_operator().is_err());
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("abc").is_err());
    }
}
