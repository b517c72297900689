//! The trust file: which issuers writ believes, with which keys, and what a
//! verified token of theirs proves (docs/identity.md).

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::jwks::{self, FetchPolicy, Remote, Source};

/// Subject attributes a claim mapping may not write: writ sets them itself.
const RESERVED: &[&str] = &["attested", "verified_by", "token", "kind", "auth", "shared"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    accept_broker_attestation: bool,
    #[serde(default)]
    issuers: Vec<IssuerFile>,
    #[serde(default)]
    approval_issuers: Vec<ApprovalFile>,
}

/// Where an issuer's keys are, and how a URL is fetched (the `jwks_*`
/// fields of both kinds of issuer).
struct KeysFile<'a> {
    jwks_file: &'a Option<String>,
    jwks_url: &'a Option<String>,
    jwks_timeout: &'a Option<String>,
    jwks_refetch_interval: &'a Option<String>,
    jwks_refresh: &'a Option<String>,
}

macro_rules! keys_of {
    ($entry:expr) => {
        KeysFile {
            jwks_file: &$entry.jwks_file,
            jwks_url: &$entry.jwks_url,
            jwks_timeout: &$entry.jwks_timeout,
            jwks_refetch_interval: &$entry.jwks_refetch_interval,
            jwks_refresh: &$entry.jwks_refresh,
        }
    };
}

/// An issuer of approval tokens (`context.approval`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalFile {
    issuer: String,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    jwks_timeout: Option<String>,
    jwks_refetch_interval: Option<String>,
    jwks_refresh: Option<String>,
    algorithms: Vec<String>,
    audiences: Vec<String>,
    clock_skew: Option<String>,
    max_age: Option<String>,
    #[serde(default)]
    claims: ApprovalClaimsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalClaimsFile {
    approver: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    expires: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerFile {
    preset: Option<String>,
    issuer: Option<String>,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    jwks_timeout: Option<String>,
    jwks_refetch_interval: Option<String>,
    jwks_refresh: Option<String>,
    algorithms: Option<Vec<String>>,
    audiences: Vec<String>,
    clock_skew: Option<String>,
    max_age: Option<String>,
    kind: Option<String>,
    auth: Option<String>,
    subject_claim: Option<String>,
    claims: Option<BTreeMap<String, String>>,
}

/// One trusted issuer, checked and with its keys parsed (or their URL).
pub(crate) struct Issuer {
    pub(crate) issuer: String,
    pub(crate) keys: Source,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) audiences: Vec<String>,
    pub(crate) clock_skew: i64,
    pub(crate) max_age: i64,
    pub(crate) kind: String,
    pub(crate) auth: String,
    pub(crate) subject_claim: String,
    /// Claim path → subject attribute.
    pub(crate) claims: Vec<(String, String)>,
    /// For an approval issuer: the claims an approval is read from.
    pub(crate) approval: Option<ApprovalClaims>,
    /// Verifications by outcome (`super::OUTCOMES`), for the metrics.
    pub(crate) outcomes: [AtomicU64; super::OUTCOMES.len()],
}

/// The claims that name an approval's parts (docs/identity.md).
#[derive(Debug, Clone)]
pub(crate) struct ApprovalClaims {
    pub(crate) approver: String,
    pub(crate) action: String,
    pub(crate) resource: String,
    pub(crate) scope: String,
    pub(crate) expires: String,
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

/// What a trust file holds, parsed: its flag, its identity issuers and
/// its approval issuers. URL sources have no keys yet.
pub(crate) struct Parsed {
    pub(crate) accept_broker_attestation: bool,
    pub(crate) issuers: Vec<Issuer>,
    pub(crate) approvers: Vec<Issuer>,
}

pub(crate) fn parse(file: &str, text: &str, base: &Path) -> Result<Parsed, TrustError> {
    let parsed: TrustFile = serde_json::from_str(text).map_err(|e| error(file, e.to_string()))?;
    if parsed.issuers.is_empty() && parsed.approval_issuers.is_empty() {
        return Err(error(
            file,
            "`issuers` is empty (and there are no `approval_issuers`)",
        ));
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
        let keys = source(file, &issuer, &keys_of!(entry), base)?;
        let names: Vec<String> = match (&entry.algorithms, &preset) {
            (Some(names), _) => names.clone(),
            (None, Some(p)) => p.algorithms.iter().map(|n| (*n).to_owned()).collect(),
            (None, None) => {
                return Err(error(
                    file,
                    format!("issuer `{issuer}` has no `algorithms`"),
                ))
            }
        };
        let algorithms = algorithms(file, &issuer, &names)?;
        audiences(file, &issuer, &entry.audiences)?;
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
            approval: None,
            outcomes: Default::default(),
        });
    }
    let mut approvers: Vec<Issuer> = Vec::new();
    for entry in parsed.approval_issuers {
        let issuer = entry.issuer;
        if issuer.is_empty() {
            return Err(error(file, "an approval issuer's `issuer` is empty"));
        }
        if approvers.iter().any(|i| i.issuer == issuer) {
            return Err(error(
                file,
                format!("approval issuer `{issuer}` is listed twice"),
            ));
        }
        if issuers.iter().any(|i| i.issuer == issuer) {
            return Err(error(
                file,
                format!(
                    "`{issuer}` is both an identity issuer and an approval issuer; \
                     a workload's token must never pass for a person's approval"
                ),
            ));
        }
        let keys = source(file, &issuer, &keys_of!(entry), base)?;
        let algorithms = algorithms(file, &issuer, &entry.algorithms)?;
        audiences(file, &issuer, &entry.audiences)?;
        let clock_skew = duration(
            file,
            "clock_skew",
            entry.clock_skew.as_deref().unwrap_or("60s"),
        )?;
        let max_age = duration(file, "max_age", entry.max_age.as_deref().unwrap_or("1h"))?;
        let c = entry.claims;
        let claim = |given: Option<String>, default: &str| -> Result<String, TrustError> {
            let name = given.unwrap_or_else(|| default.to_owned());
            if name.is_empty() {
                return Err(error(
                    file,
                    format!("approval issuer `{issuer}`: a claim name is empty"),
                ));
            }
            Ok(name)
        };
        let approval = ApprovalClaims {
            approver: claim(c.approver, "sub")?,
            action: claim(c.action, "action")?,
            resource: claim(c.resource, "resource")?,
            scope: claim(c.scope, "scope")?,
            expires: claim(c.expires, "exp")?,
        };
        approvers.push(Issuer {
            issuer,
            keys,
            algorithms,
            audiences: entry.audiences,
            clock_skew,
            max_age,
            kind: String::new(),
            auth: String::new(),
            subject_claim: approval.approver.clone(),
            claims: Vec::new(),
            approval: Some(approval),
            outcomes: Default::default(),
        });
    }
    Ok(Parsed {
        accept_broker_attestation: parsed.accept_broker_attestation,
        issuers,
        approvers,
    })
}

fn algorithms(file: &str, issuer: &str, names: &[String]) -> Result<Vec<Algorithm>, TrustError> {
    let algorithms = names
        .iter()
        .map(|n| algorithm(file, issuer, n))
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err(error(
            file,
            format!("issuer `{issuer}`: `algorithms` is empty"),
        ));
    }
    Ok(algorithms)
}

fn audiences(file: &str, issuer: &str, audiences: &[String]) -> Result<(), TrustError> {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(error(
            file,
            format!("issuer `{issuer}`: `audiences` must name writ's audience(s)"),
        ));
    }
    Ok(())
}

/// A duration option of a JWKS URL, at least `least`.
fn fetch_duration(
    file: &str,
    issuer: &str,
    what: &str,
    given: Option<&str>,
    default: &str,
    least: Duration,
) -> Result<Duration, TrustError> {
    let text = given.unwrap_or(default);
    let millis = crate::duration::parse_millis(text)
        .ok()
        .and_then(|m| u64::try_from(m).ok())
        .ok_or_else(|| {
            error(
                file,
                format!(
                    "issuer `{issuer}`: {what} `{text}` is not a duration like `3s` or `500ms`"
                ),
            )
        })?;
    let value = Duration::from_millis(millis);
    if value < least {
        return Err(error(
            file,
            format!(
                "issuer `{issuer}`: {what} `{text}` is shorter than {}ms",
                least.as_millis()
            ),
        ));
    }
    Ok(value)
}

/// The issuer's keys: a JWKS file read now, or a JWKS URL to fetch.
fn source(
    file: &str,
    issuer: &str,
    keys: &KeysFile<'_>,
    base: &Path,
) -> Result<Source, TrustError> {
    match (keys.jwks_file, keys.jwks_url) {
        (Some(_), Some(_)) => Err(error(
            file,
            format!("issuer `{issuer}` has both `jwks_file` and `jwks_url`; give one"),
        )),
        (None, None) => Err(error(
            file,
            format!("issuer `{issuer}` has no `jwks_file` and no `jwks_url`"),
        )),
        (Some(path), None) => {
            if keys.jwks_timeout.is_some()
                || keys.jwks_refetch_interval.is_some()
                || keys.jwks_refresh.is_some()
            {
                return Err(error(
                    file,
                    format!(
                        "issuer `{issuer}`: `jwks_timeout`, `jwks_refetch_interval` and \
                         `jwks_refresh` are for a `jwks_url`"
                    ),
                ));
            }
            read_jwks(file, issuer, &base.join(path)).map(|set| Source::File(Arc::new(set)))
        }
        (None, Some(url)) => {
            if !jwks::url_allowed(url) {
                return Err(error(
                    file,
                    format!(
                        "issuer `{issuer}`: `jwks_url` `{url}` must be https:// (plain http:// \
                         only to the loopback)"
                    ),
                ));
            }
            let policy = FetchPolicy {
                timeout: fetch_duration(
                    file,
                    issuer,
                    "jwks_timeout",
                    keys.jwks_timeout.as_deref(),
                    "3s",
                    Duration::from_millis(100),
                )?,
                refetch_interval: fetch_duration(
                    file,
                    issuer,
                    "jwks_refetch_interval",
                    keys.jwks_refetch_interval.as_deref(),
                    "30s",
                    Duration::from_secs(1),
                )?,
                refresh: fetch_duration(
                    file,
                    issuer,
                    "jwks_refresh",
                    keys.jwks_refresh.as_deref(),
                    "1h",
                    Duration::from_secs(1),
                )?,
            };
            Ok(Source::Url(Remote::new(url.clone(), policy)))
        }
    }
}

fn read_jwks(file: &str, issuer: &str, path: &Path) -> Result<jwks::KeySet, TrustError> {
    let text = super::read(path).map_err(|e| {
        error(
            file,
            format!("issuer `{issuer}`: cannot read `{}`: {e}", path.display()),
        )
    })?;
    jwks::parse(&text, true).map_err(|e| {
        error(
            file,
            format!("issuer `{issuer}`: `{}`: {e}", path.display()),
        )
    })
}
