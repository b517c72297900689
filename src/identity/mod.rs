//! Identity writ verifies itself (feature `identity`; docs/identity.md).
//!
//! A [`Trust`] lists the issuers writ believes. [`Trust::apply`] verifies
//! the request's `subject.token` (a compact JWS) against it, on writ's own
//! clock, and rewrites the subject: a verified token sets
//! `subject.attested = true`, `subject.verified_by`, `subject.kind`,
//! `subject.auth`, `subject.id` and the mapped claims, overriding what the
//! broker sent; anything else leaves `subject.attested = false`.
//! [`Attestation::annotate`] then records what happened in the decision.
//! [`Trust::decide`] does both around [`Engine::decide`](crate::Engine::decide).
//!
//! The signatures are checked by the `jsonwebtoken` crate. Key locations
//! in the token (`jku`, `x5u`, an embedded `jwk`) are never read: keys come
//! only from the trust file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::decision::{Decision, ErrorOut, Outcome, TraceEntry};
use crate::request::{Request, Subject};

mod trust;

use trust::Issuer;
pub use trust::TrustError;

/// The longest token writ reads, in bytes; a longer one is malformed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most verified tokens kept in the cache.
pub const MAX_CACHED: usize = 10_000;

/// Why a token was not believed. The `code` names it in the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `exp` (plus the skew) is not after now.
    Expired(String),
    /// `nbf` or `iat` is after now (plus the skew).
    NotYetValid(String),
    /// `iat` is older than the issuer's `max_age`.
    TooOld(String),
    /// The signature does not verify with the issuer's key.
    BadSignature(String),
    /// No trusted issuer has this `iss`.
    UnknownIssuer(String),
    /// The issuer has no key with this `kid`.
    UnknownKey(String),
    /// None of the token's audiences is one the issuer requires.
    WrongAudience(String),
    /// The header's `alg` is not one the issuer accepts.
    DisallowedAlgorithm(String),
    /// Not a compact JWS, too long, or a claim of the wrong type.
    Malformed(String),
}

impl Failure {
    /// `expired`, `not_yet_valid`, `too_old`, `bad_signature`,
    /// `unknown_issuer`, `unknown_key`, `wrong_audience`,
    /// `disallowed_algorithm`, `malformed`.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Expired(_) => "expired",
            Failure::NotYetValid(_) => "not_yet_valid",
            Failure::TooOld(_) => "too_old",
            Failure::BadSignature(_) => "bad_signature",
            Failure::UnknownIssuer(_) => "unknown_issuer",
            Failure::UnknownKey(_) => "unknown_key",
            Failure::WrongAudience(_) => "wrong_audience",
            Failure::DisallowedAlgorithm(_) => "disallowed_algorithm",
            Failure::Malformed(_) => "malformed",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Failure::Expired(d)
            | Failure::NotYetValid(d)
            | Failure::TooOld(d)
            | Failure::BadSignature(d)
            | Failure::UnknownIssuer(d)
            | Failure::UnknownKey(d)
            | Failure::WrongAudience(d)
            | Failure::DisallowedAlgorithm(d)
            | Failure::Malformed(d) => d,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "subject.token {}: {}", self.code(), self.detail())
    }
}

/// What [`Trust::apply`] did to a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attestation {
    /// The issuer whose token verified.
    pub verified_by: Option<String>,
    /// The subject attributes the token set where the broker had sent a
    /// different value.
    pub overridden: Vec<String>,
    /// Why the token was not believed.
    pub failure: Option<Failure>,
    /// The broker sent `attested: true` without a token and the trust
    /// file does not accept broker attestation: it was set to false.
    pub broker_attestation_ignored: bool,
    /// The broker's `attested: true` was kept (`accept_broker_attestation`).
    pub broker_attestation_accepted: bool,
}

impl Attestation {
    /// Records the verification in a decision: a failure in `errors`
    /// (rule `subject.token`) and one trace entry, first, saying what was
    /// verified and what it overrode.
    pub fn annotate(&self, decision: &mut Decision) {
        let (outcome, note, error) = if let Some(issuer) = &self.verified_by {
            let mut note = format!("subject.token verified by `{issuer}`: subject.attested = true");
            if !self.overridden.is_empty() {
                note.push_str("; overrode what the broker sent for ");
                note.push_str(
                    &self
                        .overridden
                        .iter()
                        .map(|a| format!("subject.{a}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            (Outcome::Matched, Some(note), None)
        } else if let Some(failure) = &self.failure {
            decision.errors.push(ErrorOut::in_rule(
                "subject.token".to_owned(),
                failure.to_string(),
            ));
            (Outcome::Error, None, Some(failure.to_string()))
        } else if self.broker_attestation_ignored {
            (
                Outcome::Matched,
                Some(
                    "no subject.token: the broker's subject.attested = true is ignored \
                     (accept_broker_attestation is off)"
                        .to_owned(),
                ),
                None,
            )
        } else if self.broker_attestation_accepted {
            (
                Outcome::Matched,
                Some(
                    "no subject.token: the broker's subject.attested = true is accepted \
                     (accept_broker_attestation)"
                        .to_owned(),
                ),
                None,
            )
        } else {
            return;
        };
        decision.trace.insert(
            0,
            TraceEntry {
                rule: "subject.token".into(),
                kind: "verify".into(),
                at: "trust".into(),
                outcome,
                failed: None,
                error,
                effect: Vec::new(),
                because: note,
                closest: false,
            },
        );
    }
}

/// The issuers writ trusts, parsed once; cheap to share (`Send + Sync`).
pub struct Trust {
    accept_broker_attestation: bool,
    issuers: Vec<Issuer>,
    /// Token digest → (issuer index, verified claims, exp).
    cache: Mutex<HashMap<[u8; 32], (usize, Value, i64)>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("accept_broker_attestation", &self.accept_broker_attestation)
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The token as the request carries it: `subject.token` (a string: the
/// request schema refuses any other type). The one place that reads it.
fn token_of(subject: &Subject) -> Option<&str> {
    subject.token.as_deref()
}

impl Trust {
    /// Reads a trust file (JSON, docs/identity.md); `jwks_file` paths are
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Trust, TrustError> {
        let name = path.display().to_string();
        let text = read(path).map_err(|e| TrustError::new(&name, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Trust::from_json(&name, &text, base)
    }

    /// Parses a trust file's text; `base` is where `jwks_file` paths start.
    pub fn from_json(name: &str, text: &str, base: &Path) -> Result<Trust, TrustError> {
        let (accept_broker_attestation, issuers) = trust::parse(name, text, base)?;
        Ok(Trust {
            accept_broker_attestation,
            issuers,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies the request's token at `now`, decides, and records the
    /// verification in the decision.
    pub fn decide(&self, engine: &crate::Engine, request: &Request, now: i64) -> Decision {
        let mut request = request.clone();
        let attestation = self.apply(&mut request, now);
        let mut decision = engine.decide(&request);
        attestation.annotate(&mut decision);
        decision
    }

    /// The current time as writ's clock says, in Unix seconds.
    pub fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Verifies `subject.token` at `now` (Unix seconds, writ's clock, never
    /// a time from the request) and rewrites the subject.
    pub fn apply(&self, request: &mut Request, now: i64) -> Attestation {
        let mut out = Attestation::default();
        let subject = &mut request.subject;
        let token = match token_of(subject) {
            None => {
                if subject.attested == Some(true) {
                    if self.accept_broker_attestation {
                        out.broker_attestation_accepted = true;
                    } else {
                        subject.attested = Some(false);
                        out.broker_attestation_ignored = true;
                    }
                }
                return out;
            }
            Some(token) => token.to_owned(),
        };
        match self.verify(&token, now) {
            Ok((issuer, claims)) => match self.rewrite(subject, issuer, &claims) {
                Ok(overridden) => {
                    out.verified_by = Some(issuer.issuer.clone());
                    out.overridden = overridden;
                }
                Err(failure) => {
                    subject.attested = Some(false);
                    out.failure = Some(failure);
                }
            },
            Err(failure) => {
                subject.attested = Some(false);
                out.failure = Some(failure);
            }
        }
        out
    }

    /// Checks signature, issuer, audience and times; returns the issuer
    /// and the claims.
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<(&Issuer, Value), Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Malformed(format!(
                "{} bytes, more than the limit of {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&digest).cloned());
        let (index, claims) = match cached {
            Some((index, claims, _)) => (index, claims),
            None => {
                let (index, claims) = self.verify_signature(token)?;
                let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= MAX_CACHED {
                        cache.retain(|_, (_, _, e)| *e > now);
                        if cache.len() >= MAX_CACHED {
                            cache.clear();
                        }
                    }
                    cache.insert(digest, (index, claims.clone(), exp));
                }
                (index, claims)
            }
        };
        let issuer = &self.issuers[index];
        check_claims(issuer, &claims, now)?;
        Ok((issuer, claims))
    }

    fn verify_signature(&self, token: &str) -> Result<(usize, Value), Failure> {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err(Failure::Malformed(format!(
                "a compact JWS has 3 dot-separated parts, this has {}",
                parts.len()
            )));
        }
        let header = decode_part(parts[0], "header")?;
        let payload = decode_part(parts[1], "payload")?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => {
                return Err(Failure::Malformed(
                    "the header has no `alg` string".to_owned(),
                ))
            }
        };
        let iss = match payload.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(Failure::Malformed("`iss` is not a string".to_owned())),
            None => return Err(Failure::UnknownIssuer("the token has no `iss`".to_owned())),
        };
        let index = self
            .issuers
            .iter()
            .position(|i| i.issuer == iss)
            .ok_or_else(|| Failure::UnknownIssuer(format!("`{iss}` is not in the trust file")))?;
        let issuer = &self.issuers[index];
        let algorithm = issuer
            .algorithms
            .iter()
            .copied()
            .find(|a| alg_name(*a) == alg)
            .ok_or_else(|| {
                Failure::DisallowedAlgorithm(format!(
                    "`{alg}` is not accepted for `{iss}` (accepted: {})",
                    issuer
                        .algorithms
                        .iter()
                        .map(|a| alg_name(*a))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(Failure::Malformed("`kid` is not a string".to_owned())),
        };
        // `jku`, `x5u`, `x5c` and `jwk` are never read: the key comes from
        // the trust file alone.
        let key = match kid {
            Some(kid) => issuer
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| {
                    Failure::UnknownKey(format!("`{iss}` has no key with kid `{kid}`"))
                })?,
            None if issuer.keys.len() == 1 => &issuer.keys[0],
            None => {
                return Err(Failure::UnknownKey(format!(
                    "the token has no `kid` and `{iss}` has {} keys",
                    issuer.keys.len()
                )))
            }
        };
        if key.alg.as_deref().is_some_and(|a| a != alg) {
            return Err(Failure::DisallowedAlgorithm(format!(
                "the key is for `{}`, the token says `{alg}`",
                key.alg.as_deref().unwrap_or_default()
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
            Ok(data) => Ok((index, data.claims)),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(Failure::BadSignature(
                    "the signature does not verify with the issuer's key".to_owned(),
                )),
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Err(
                    Failure::DisallowedAlgorithm(format!("`{alg}` does not fit the issuer's key")),
                ),
                _ => Err(Failure::Malformed(e.to_string())),
            },
        }
    }

    /// Sets the subject from verified claims; returns the attributes whose
    /// broker value it replaced.
    fn rewrite(
        &self,
        subject: &mut Subject,
        issuer: &Issuer,
        claims: &Value,
    ) -> Result<Vec<String>, Failure> {
        let id = match lookup(claims, &issuer.subject_claim) {
            Some(Value::String(id)) => Some(id.clone()),
            None => None,
            Some(_) => {
                return Err(Failure::Malformed(format!(
                    "claim `{}` is not a string",
                    issuer.subject_claim
                )))
            }
        };
        let mut mapped = Vec::new();
        for (claim, attribute) in &issuer.claims {
            let value = match lookup(claims, claim) {
                None => None,
                Some(v @ (Value::String(_) | Value::Bool(_))) => Some(v.clone()),
                Some(other) => {
                    return Err(Failure::Malformed(format!(
                        "claim `{claim}` is {}, not a string",
                        type_name(other)
                    )))
                }
            };
            if matches!(attribute.as_str(), "environment" | "owner")
                && matches!(value, Some(Value::Bool(_)))
            {
                return Err(Failure::Malformed(format!(
                    "claim `{claim}` is a boolean, not a string"
                )));
            }
            mapped.push((attribute.as_str(), value));
        }
        let mut overridden = Vec::new();
        let mut set = |name: &str, before: Option<Value>, after: &Option<Value>| {
            if before.is_some() && before != *after {
                overridden.push(name.to_owned());
            }
        };
        let string = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).map(str::to_owned);
        let new_id = id.map(Value::String);
        set("id", subject.id.clone().map(Value::String), &new_id);
        subject.id = string(&new_id);
        let kind = Some(Value::String(issuer.kind.clone()));
        set("kind", subject.kind.clone().map(Value::String), &kind);
        subject.kind = Some(issuer.kind.clone());
        let auth = Some(Value::String(issuer.auth.clone()));
        set("auth", subject.auth.clone().map(Value::String), &auth);
        subject.auth = Some(issuer.auth.clone());
        for (attribute, value) in mapped {
            match attribute {
                "environment" => {
                    set(
                        attribute,
                        subject.environment.clone().map(Value::String),
                        &value,
                    );
                    subject.environment = string(&value);
                }
                "owner" => {
                    set(attribute, subject.owner.clone().map(Value::String), &value);
                    subject.owner = string(&value);
                }
                other => {
                    set(other, subject.extra.get(other).cloned(), &value);
                    match value {
                        Some(v) => {
                            subject.extra.insert(other.to_owned(), v);
                        }
                        None => {
                            subject.extra.shift_remove(other);
                        }
                    }
                }
            }
        }
        let verified_by = Some(Value::String(issuer.issuer.clone()));
        set(
            "verified_by",
            subject.extra.get("verified_by").cloned(),
            &verified_by,
        );
        subject.extra.insert(
            "verified_by".to_owned(),
            Value::String(issuer.issuer.clone()),
        );
        subject.attested = Some(true);
        Ok(overridden)
    }
}

impl TrustError {
    fn new(file: &str, e: impl std::fmt::Display) -> TrustError {
        trust::error(file, format!("cannot read it: {e}"))
    }
}

/// Reads a trust or JWKS file, refusing one over the input size limit.
pub(crate) fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    crate::source::read_limited(
        file,
        &path.display().to_string(),
        crate::source::MAX_INPUT_BYTES,
    )
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn decode_part(part: &str, what: &str) -> Result<Value, Failure> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Failure::Malformed(format!("the {what} is not base64url")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| Failure::Malformed(format!("the {what} is not JSON")))?;
    if !value.is_object() {
        return Err(Failure::Malformed(format!(
            "the {what} is not a JSON object"
        )));
    }
    Ok(value)
}

fn type_name(value: &Value) -> &'static str {
    crate::request::json_kind(value)
}

/// A claim by dotted path; a key may itself hold dots
/// (`kubernetes.io.namespace` is `{"kubernetes.io": {"namespace": ...}}`).
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let map = value.as_object()?;
    if let Some(found) = map.get(path) {
        return Some(found);
    }
    for (i, _) in path.match_indices('.') {
        if let Some(inner) = map.get(&path[..i]) {
            if let Some(found) = lookup(inner, &path[i + 1..]) {
                return Some(found);
            }
        }
    }
    None
}

/// A NumericDate claim: absent, or a number of seconds.
fn time_claim(claims: &Value, name: &str) -> Result<Option<i64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| Failure::Malformed(format!("`{name}` is not a time"))),
        Some(other) => Err(Failure::Malformed(format!(
            "`{name}` is {}, not a number",
            type_name(other)
        ))),
    }
}

fn check_claims(issuer: &Issuer, claims: &Value, now: i64) -> Result<(), Failure> {
    let skew = issuer.clock_skew;
    let exp = time_claim(claims, "exp")?
        .ok_or_else(|| Failure::Malformed("the token has no `exp`".to_owned()))?;
    if now >= exp.saturating_add(skew) {
        return Err(Failure::Expired(format!(
            "`exp` {exp} is before now ({now})"
        )));
    }
    if let Some(nbf) = time_claim(claims, "nbf")? {
        if nbf > now.saturating_add(skew) {
            return Err(Failure::NotYetValid(format!(
                "`nbf` {nbf} is after now ({now})"
            )));
        }
    }
    let iat = time_claim(claims, "iat")?
        .ok_or_else(|| Failure::Malformed("the token has no `iat`".to_owned()))?;
    if iat > now.saturating_add(skew) {
        return Err(Failure::NotYetValid(format!(
            "`iat` {iat} is after now ({now})"
        )));
    }
    if now.saturating_sub(iat) > issuer.max_age.saturating_add(skew) {
        return Err(Failure::TooOld(format!(
            "issued at {iat}, more than {}s before now ({now})",
            issuer.max_age
        )));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for item in list {
                match item {
                    Value::String(aud) => out.push(aud.as_str()),
                    _ => return Err(Failure::Malformed("`aud` holds a non-string".to_owned())),
                }
            }
            out
        }
        None => Vec::new(),
        Some(other) => {
            return Err(Failure::Malformed(format!(
                "`aud` is {}, not a string",
                type_name(other)
            )))
        }
    };
    if !audiences
        .iter()
        .any(|a| issuer.audiences.iter().any(|want| want == a))
    {
        return Err(Failure::WrongAudience(format!(
            "the token is for [{}], writ accepts [{}]",
            audiences.join(", "),
            issuer.audiences.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths_may_hold_dotted_names() {
        let claims = serde_json::json!({
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "deployer"}},
            "a.b": 1,
        });
        assert_eq!(
            lookup(&claims, "kubernetes.io.namespace"),
            Some(&serde_json::json!("payments"))
        );
        assert_eq!(
            lookup(&claims, "kubernetes.io.serviceaccount.name"),
            Some(&serde_json::json!("deployer"))
        );
        assert_eq!(lookup(&claims, "a.b"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&claims, "kubernetes.io.pod.name"), None);
    }

    #[test]
    fn time_claims_take_numbers_only() {
        let claims = serde_json::json!({"exp": 10, "nbf": 1.5, "iat": "now"});
        assert_eq!(time_claim(&claims, "exp"), Ok(Some(10)));
        assert_eq!(time_claim(&claims, "nbf"), Ok(Some(1)));
        assert_eq!(time_claim(&claims, "missing"), Ok(None));
        assert_eq!(
            time_claim(&claims, "iat").map_err(|f| f.code()),
            Err("malformed")
        );
    }
}
