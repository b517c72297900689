//! The trust file: which issuers writ believes, with which keys, and what a
//! verified token of theirs proves (docs/identity.md).

use std::collections::BTreeMap;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Subject attributes a claim mapping may not write: writ sets them itself.
const RESERVED: &[&str] = &["attested", "verified_by", "token", "kind", "auth", "shared"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    accept_broker_attestation: bool,
    issuers: Vec<IssuerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerFile {
    preset: Option<String>,
    issuer: Option<String>,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    algorithms: Option<Vec<String>>,
    audiences: Vec<String>,
    clock_skew: Option<String>,
    max_age: Option<String>,
    kind: Option<String>,
    auth: Option<String>,
    subject_claim: Option<String>,
    claims: Option<BTreeMap<String, String>>,
}

/// One trusted issuer, checked and with its keys parsed.
pub(crate) struct Issuer {
    pub(crate) issuer: String,
    pub(crate) keys: Vec<Key>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) audiences: Vec<String>,
    pub(crate) clock_skew: i64,
    pub(crate) max_age: i64,
    pub(crate) kind: String,
    pub(crate) auth: String,
    pub(crate) subject_claim: String,
    /// Claim path → subject attribute.
    pub(crate) claims: Vec<(String, String)>,
}

pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Option<String>,
    pub(crate) key: DecodingKey,
}

/// A preset: the defaults for one kind of issuer.
struct Preset {
    issuer: Option<&'static str>,
    algorithms: &'static [&'static str],
    kind: &'static str,
    auth: &'static str,
    max_age: &'static str,
    claims: &'static [(&'static str, &'static str)],
}

fn preset(name: &str) -> Option<Preset> {
    Some(match name {
        "github-actions" => Preset {
            issuer: Some("https://token.actions.githubusercontent.com"),
            algorithms: &["RS256"],
            kind: "ci",
            auth: "oidc",
            max_age: "1h",
            claims: &[
                ("repository", "repository"),
                ("ref", "ref"),
                ("workflow_ref", "workflow_ref"),
                ("job_workflow_ref", "job_workflow_ref"),
                ("event_name", "event_name"),
                ("environment", "environment"),
                ("repository_owner", "repository_owner"),
            ],
        },
        "gitlab-ci" => Preset {
            issuer: Some("https://gitlab.com"),
            algorithms: &["RS256"],
            kind: "ci",
            auth: "oidc",
            max_age: "2h",
            claims: &[
                ("project_path", "project_path"),
                ("namespace_path", "namespace_path"),
                ("ref", "ref"),
                ("ref_type", "ref_type"),
                ("ref_protected", "ref_protected"),
                ("pipeline_source", "pipeline_source"),
                ("environment", "environment"),
            ],
        },
        "kubernetes" => Preset {
            issuer: None,
            algorithms: &["RS256", "ES256"],
            kind: "workload",
            auth: "k8s-sa",
            max_age: "24h",
            claims: &[
                ("kubernetes.io.namespace", "namespace"),
                ("kubernetes.io.serviceaccount.name", "service_account"),
                ("kubernetes.io.pod.name", "pod"),
            ],
        },
        "spiffe" => Preset {
            issuer: None,
            algorithms: &["RS256", "ES256", "ES384"],
            kind: "workload",
            auth: "spiffe",
            max_age: "1h",
            claims: &[],
        },
        _ => return None,
    })
}

/// What is wrong with a trust file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trust file `{file}`: {message}")]
pub struct TrustError {
    file: String,
    message: String,
}

pub(crate) fn error(file: &str, message: impl Into<String>) -> TrustError {
    TrustError {
        file: file.to_owned(),
        message: message.into(),
    }
}

fn duration(file: &str, what: &str, text: &str) -> Result<i64, TrustError> {
    crate::duration::parse_seconds(text)
        .ok()
        .and_then(|s| i64::try_from(s).ok())
        .ok_or_else(|| {
            error(
                file,
                format!("{what} `{text}` is not a duration like `60s` or `1h`"),
            )
        })
}

fn algorithm(file: &str, issuer: &str, name: &str) -> Result<Algorithm, TrustError> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => {
            return Err(error(
                file,
                format!(
                    "issuer `{issuer}`: algorithm `{other}` is not accepted (only public-key \
                     algorithms: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; \
                     never `none` or an HMAC algorithm)"
                ),
            ))
        }
    };
    Ok(alg)
}

pub(crate) fn parse(
    file: &str,
    text: &str,
    base: &Path,
) -> Result<(bool, Vec<Issuer>), TrustError> {
    let parsed: TrustFile = serde_json::from_str(text).map_err(|e| error(file, e.to_string()))?;
    if parsed.issuers.is_empty() {
        return Err(error(file, "`issuers` is empty"));
    }
    let mut issuers: Vec<Issuer> = Vec::new();
    for entry in parsed.issuers {
        let preset = match &entry.preset {
            None => None,
            Some(name) => Some(preset(name).ok_or_else(|| {
                error(
                    file,
                    format!(
                        "unknown preset `{name}` (github-actions, gitlab-ci, kubernetes, spiffe)"
                    ),
                )
            })?),
        };
        let issuer = entry
            .issuer
            .clone()
            .or_else(|| preset.as_ref().and_then(|p| p.issuer.map(str::to_owned)))
            .ok_or_else(|| error(file, "an issuer has no `issuer` (the exact `iss`)"))?;
        if issuer.is_empty() {
            return Err(error(file, "`issuer` is empty"));
        }
        if issuers.iter().any(|i| i.issuer == issuer) {
            return Err(error(file, format!("issuer `{issuer}` is listed twice")));
        }
        if entry.jwks_url.is_some() {
            return Err(error(
                file,
                format!("issuer `{issuer}`: `jwks_url` is not supported yet; use `jwks_file`"),
            ));
        }
        let jwks = entry
            .jwks_file
            .as_deref()
            .ok_or_else(|| error(file, format!("issuer `{issuer}` has no `jwks_file`")))?;
        let keys = read_jwks(file, &issuer, &base.join(jwks))?;
        let algorithms = match (&entry.algorithms, &preset) {
            (Some(names), _) => names
                .iter()
                .map(|n| algorithm(file, &issuer, n))
                .collect::<Result<Vec<_>, _>>()?,
            (None, Some(p)) => p
                .algorithms
                .iter()
                .map(|n| algorithm(file, &issuer, n))
                .collect::<Result<Vec<_>, _>>()?,
            (None, None) => {
                return Err(error(
                    file,
                    format!("issuer `{issuer}` has no `algorithms`"),
                ))
            }
        };
        if algorithms.is_empty() {
            return Err(error(
                file,
                format!("issuer `{issuer}`: `algorithms` is empty"),
            ));
        }
        if entry.audiences.is_empty() || entry.audiences.iter().any(String::is_empty) {
            return Err(error(
                file,
                format!("issuer `{issuer}`: `audiences` must name writ's audience(s)"),
            ));
        }
        let clock_skew = duration(
            file,
            "clock_skew",
            entry.clock_skew.as_deref().unwrap_or("60s"),
        )?;
        let max_age = duration(
            file,
            "max_age",
            entry
                .max_age
                .as_deref()
                .or(preset.as_ref().map(|p| p.max_age))
                .unwrap_or("1h"),
        )?;
        let kind = entry
            .kind
            .clone()
            .or_else(|| preset.as_ref().map(|p| p.kind.to_owned()))
            .ok_or_else(|| error(file, format!("issuer `{issuer}` has no `kind`")))?;
        let auth = entry
            .auth
            .clone()
            .or_else(|| preset.as_ref().map(|p| p.auth.to_owned()))
            .ok_or_else(|| error(file, format!("issuer `{issuer}` has no `auth`")))?;
        let mut claims: Vec<(String, String)> = preset
            .as_ref()
            .map(|p| {
                p.claims
                    .iter()
                    .map(|(c, a)| ((*c).to_owned(), (*a).to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (claim, attribute) in entry.claims.clone().unwrap_or_default() {
            claims.retain(|(c, _)| *c != claim);
            claims.push((claim, attribute));
        }
        for (claim, attribute) in &claims {
            if RESERVED.contains(&attribute.as_str()) || attribute == "id" || attribute.is_empty() {
                return Err(error(
                    file,
                    format!(
                        "issuer `{issuer}`: claim `{claim}` cannot map to `subject.{attribute}` \
                         (writ sets it; `subject.id` comes from `subject_claim`)"
                    ),
                ));
            }
        }
        issuers.push(Issuer {
            issuer,
            keys,
            algorithms,
            audiences: entry.audiences,
            clock_skew,
            max_age,
            kind,
            auth,
            subject_claim: entry.subject_claim.unwrap_or_else(|| "sub".to_owned()),
            claims,
        });
    }
    Ok((parsed.accept_broker_attestation, issuers))
}

fn read_jwks(file: &str, issuer: &str, path: &Path) -> Result<Vec<Key>, TrustError> {
    let text = super::read(path).map_err(|e| {
        error(
            file,
            format!("issuer `{issuer}`: cannot read `{}`: {e}", path.display()),
        )
    })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
        error(
            file,
            format!("issuer `{issuer}`: `{}` is not a JWKS: {e}", path.display()),
        )
    })?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            return Err(error(
                file,
                format!("issuer `{issuer}`: a symmetric (`oct`) key is not accepted"),
            ));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            error(
                file,
                format!(
                    "issuer `{issuer}`: a key in `{}` is unusable: {e}",
                    path.display()
                ),
            )
        })?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
            key,
        });
    }
    if keys.is_empty() {
        return Err(error(
            file,
            format!("issuer `{issuer}`: `{}` holds no keys", path.display()),
        ));
    }
    Ok(keys)
}
