//! Identity writ verifies itself (feature `identity`; docs/identity.md).
//!
//! A [`Trust`] lists the issuers writ believes. [`Trust::apply`] verifies
//! the request's `subject.token` (a compact JWS) against it, on writ's own
//! clock, and rewrites the subject: a verified token sets
//! `subject.attested = true`, `subject.verified_by`, `subject.kind`,
//! `subject.auth`, `subject.id` and the mapped claims, overriding what the
//! broker sent; anything else leaves `subject.attested = false`. A
//! `context.approval` string is verified against the approval issuers and
//! becomes `{verified, approver, action, resource, expires}`.
//! [`Attestation::annotate`] then records what happened in the decision.
//! [`Trust::decide`] does both around the engine.
//!
//! The signatures are checked by the `jsonwebtoken` crate. Key locations
//! in the token (`jku`, `x5u`, an embedded `jwk`) are never read: keys come
//! only from the trust file, from a JWKS file or a JWKS URL it names
//! (`jwks`).

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::decision::{Decision, ErrorOut, Outcome, TraceEntry};
use crate::request::{Prepared, Request, Subject};

mod jwks;
mod trust;

pub use jwks::MAX_JWKS_BYTES;
use jwks::{Family, Source};
use trust::Issuer;
pub use trust::TrustError;

/// The longest token writ reads, in bytes; a longer one is malformed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most verified tokens kept in the cache.
pub const MAX_CACHED: usize = 10_000;

/// The outcomes of a verification, as the metrics label them: `verified`,
/// then every [`Failure::code`].
pub const OUTCOMES: [&str; 11] = [
    "verified",
    "expired",
    "not_yet_valid",
    "too_old",
    "bad_signature",
    "unknown_issuer",
    "unknown_key",
    "keys_unavailable",
    "wrong_audience",
    "disallowed_algorithm",
    "malformed",
];

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
    /// The issuer's JWKS URL has not given any keys yet (down, slow, or
    /// answering garbage since writ started): nothing of it verifies.
    KeysUnavailable(String),
    /// None of the token's audiences is one the issuer requires.
    WrongAudience(String),
    /// The header's `alg` is not one the issuer accepts.
    DisallowedAlgorithm(String),
    /// Not a compact JWS, too long, a `crit` header, or a claim of the
    /// wrong type.
    Malformed(String),
}

impl Failure {
    /// `expired`, `not_yet_valid`, `too_old`, `bad_signature`,
    /// `unknown_issuer`, `unknown_key`, `keys_unavailable`,
    /// `wrong_audience`, `disallowed_algorithm`, `malformed`.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Expired(_) => "expired",
            Failure::NotYetValid(_) => "not_yet_valid",
            Failure::TooOld(_) => "too_old",
            Failure::BadSignature(_) => "bad_signature",
            Failure::UnknownIssuer(_) => "unknown_issuer",
            Failure::UnknownKey(_) => "unknown_key",
            Failure::KeysUnavailable(_) => "keys_unavailable",
            Failure::WrongAudience(_) => "wrong_audience",
            Failure::DisallowedAlgorithm(_) => "disallowed_algorithm",
            Failure::Malformed(_) => "malformed",
        }
    }

    /// What exactly was wrong.
    pub fn detail(&self) -> &str {
        match self {
            Failure::Expired(d)
            | Failure::NotYetValid(d)
            | Failure::TooOld(d)
            | Failure::BadSignature(d)
            | Failure::UnknownIssuer(d)
            | Failure::UnknownKey(d)
            | Failure::KeysUnavailable(d)
            | Failure::WrongAudience(d)
            | Failure::DisallowedAlgorithm(d)
            | Failure::Malformed(d) => d,
        }
    }

    /// The decision's error message for the token in `field`
    /// (`context.approval <code>: <detail>`).
    pub fn message(&self, field: &str) -> String {
        format!("{field} {}: {}", self.code(), self.detail())
    }

    fn outcome(&self) -> usize {
        OUTCOMES
            .iter()
            .position(|o| *o == self.code())
            .unwrap_or(OUTCOMES.len() - 1)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message("subject.token"))
    }
}

/// What [`Trust::apply`] did to a request.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// The approval token in `context.approval`, when there was one and
    /// the trust file has approval issuers.
    pub approval: Option<ApprovalCheck>,
}

/// What became of an approval token.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalCheck {
    /// The approval issuer whose token verified.
    pub verified_by: Option<String>,
    /// What `context.approval` now reads: `{verified: true, approver,
    /// action, resource, expires, ...}` or `{verified: false}`.
    pub value: Value,
    /// Why the token was not believed.
    pub failure: Option<Failure>,
    /// A verified token's `exp`, Unix seconds (a grant's attestation of
    /// the approval stops counting then, at the latest).
    pub token_exp: Option<i64>,
}

fn verify_entry(
    rule: &str,
    outcome: Outcome,
    because: Option<String>,
    error: Option<String>,
) -> TraceEntry {
    TraceEntry {
        rule: rule.into(),
        kind: "verify".into(),
        at: "trust".into(),
        outcome,
        failed: None,
        error,
        effect: Vec::new(),
        because,
        closest: false,
    }
}

impl Attestation {
    /// Records the verification in a decision: a failure in `errors`
    /// (rule `subject.token` or `context.approval`) and a trace entry
    /// each, first, saying what was verified and what it overrode.
    pub fn annotate(&self, decision: &mut Decision) {
        let mut entries = Vec::with_capacity(2);
        if let Some(entry) = self.subject_entry(decision) {
            entries.push(entry);
        }
        if let Some(check) = &self.approval {
            let field = "context.approval";
            if let Some(failure) = &check.failure {
                let message = failure.message(field);
                decision
                    .errors
                    .push(ErrorOut::in_rule(field.to_owned(), message.clone()));
                entries.push(verify_entry(field, Outcome::Error, None, Some(message)));
            } else if let Some(issuer) = &check.verified_by {
                let part = |name: &str| check.value.get(name).and_then(Value::as_str).unwrap_or("");
                let note = format!(
                    "context.approval verified by `{issuer}`: context.approval.verified = true \
                     (approver `{}`, action `{}`, resource `{}`, expires {})",
                    part("approver"),
                    part("action"),
                    part("resource"),
                    part("expires")
                );
                entries.push(verify_entry(field, Outcome::Matched, Some(note), None));
            }
        }
        decision.trace.splice(0..0, entries);
    }

    fn subject_entry(&self, decision: &mut Decision) -> Option<TraceEntry> {
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
            return None;
        };
        Some(verify_entry("subject.token", outcome, note, error))
    }

    /// Hands a verified approval to the evaluator. Validation reads any
    /// `context.approval` object with `verified` forced to false (a broker
    /// cannot claim it); only this, after [`Trust::apply`], makes it read
    /// true. `prepared` must come from the request `apply` rewrote (or
    /// from it before: the approval token was a string then).
    pub fn prepare(&self, prepared: &mut Prepared) {
        if let Some(check) = &self.approval {
            prepared.approval = Some(check.value.clone());
        }
    }
}

/// Which list of issuers a token is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// `subject.token`: `issuers`.
    Subject,
    /// `context.approval`: `approval_issuers`.
    Approval,
}

impl Use {
    fn label(self) -> &'static str {
        match self {
            Use::Subject => "subject",
            Use::Approval => "approval",
        }
    }
}

/// A token whose signature verified, with what it says, checked for
/// everything but the clock (which is checked on every use).
struct Verified {
    used: Use,
    index: usize,
    /// The key set's generation the signature was checked against.
    generation: u64,
    exp: i64,
    nbf: Option<i64>,
    iat: i64,
    payload: Payload,
}

enum Payload {
    /// `subject.id` and the mapped claims, in the issuer's `claims` order.
    Subject {
        id: Option<String>,
        mapped: Vec<Option<Value>>,
    },
    /// What `context.approval` reads.
    Approval(Value),
}

/// Hashes a token by its last 32 bytes (the signature's end) and its
/// length: a verified token is unpredictable there, and the map compares
/// whole tokens, so a lookup does not hash a kilobyte. Only tokens whose
/// signature verified are ever stored.
#[derive(Default, Clone)]
struct TailState(RandomState);

struct TailHasher(DefaultHasher);

impl BuildHasher for TailState {
    type Hasher = TailHasher;
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(32)..]);
        self.0.write_usize(bytes.len());
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

type Cache = HashMap<Box<str>, Arc<Verified>, TailState>;

/// The issuers writ trusts, parsed once; cheap to share (`Send + Sync`).
pub struct Trust {
    accept_broker_attestation: bool,
    issuers: Vec<Issuer>,
    approvers: Vec<Issuer>,
    cache: Mutex<Cache>,
    /// Failures before an issuer was known (no or unknown `iss`,
    /// malformed), by use and outcome.
    unattributed: [[AtomicU64; OUTCOMES.len()]; 2],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("accept_broker_attestation", &self.accept_broker_attestation)
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .field(
                "approval_issuers",
                &self.approvers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Counters of a [`Trust`], for `writ serve`'s `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    /// Verifications by use (`subject`, `approval`), issuer (`unknown`
    /// when none was found) and outcome ([`OUTCOMES`]).
    pub verifications: Vec<(&'static str, String, &'static str, u64)>,
    /// Per JWKS URL: issuer, fetches tried, fetches failed, keys held.
    pub jwks: Vec<(String, u64, u64, usize)>,
    /// Verifications answered from the cache of verified tokens.
    pub cache_hits: u64,
    /// Verifications that checked a signature (or failed before).
    pub cache_misses: u64,
}

impl Trust {
    /// Reads a trust file (JSON, docs/identity.md); `jwks_file` paths are
    /// relative to the file's directory. JWKS URLs are fetched now; one
    /// that fails leaves its issuer without keys until a later fetch
    /// succeeds ([`Trust::key_problems`] says which).
    pub fn load(path: &Path) -> Result<Trust, TrustError> {
        let name = path.display().to_string();
        let text = read(path).map_err(|e| TrustError::new(&name, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Trust::from_json(&name, &text, base)
    }

    /// Parses a trust file's text; `base` is where `jwks_file` paths start.
    /// JWKS URLs are fetched now, as by [`Trust::load`].
    pub fn from_json(name: &str, text: &str, base: &Path) -> Result<Trust, TrustError> {
        let parsed = trust::parse(name, text, base)?;
        let trust = Trust {
            accept_broker_attestation: parsed.accept_broker_attestation,
            issuers: parsed.issuers,
            approvers: parsed.approvers,
            cache: Mutex::new(HashMap::with_hasher(TailState::default())),
            unattributed: Default::default(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        };
        for issuer in trust.issuers.iter().chain(&trust.approvers) {
            if let Source::Url(remote) = &issuer.keys {
                let _ = remote.fetch();
            }
        }
        Ok(trust)
    }

    /// The issuers whose JWKS URL gave no keys, each with why: their
    /// tokens fail (`keys_unavailable`) until a fetch succeeds.
    pub fn key_problems(&self) -> Vec<String> {
        self.issuers
            .iter()
            .chain(&self.approvers)
            .filter_map(|issuer| match &issuer.keys {
                Source::Url(remote) if issuer.keys.current().keys.is_empty() => Some(format!(
                    "issuer `{}` has no keys yet: {}",
                    issuer.issuer,
                    remote
                        .last_error()
                        .unwrap_or_else(|| format!("`{}` was not fetched", remote.url))
                )),
                _ => None,
            })
            .collect()
    }

    /// Forgets every verified token: the next use of each checks its
    /// signature again (the benchmarks' cold path).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// The counters since the trust file was loaded.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            ..Counts::default()
        };
        for (used, list) in [
            (Use::Subject, &self.issuers),
            (Use::Approval, &self.approvers),
        ] {
            for issuer in list.iter() {
                for (slot, outcome) in OUTCOMES.iter().enumerate() {
                    counts.verifications.push((
                        used.label(),
                        issuer.issuer.clone(),
                        outcome,
                        issuer.outcomes[slot].load(Ordering::Relaxed),
                    ));
                }
                if let Source::Url(remote) = &issuer.keys {
                    counts.jwks.push((
                        issuer.issuer.clone(),
                        remote.fetches.load(Ordering::Relaxed),
                        remote.failures.load(Ordering::Relaxed),
                        issuer.keys.current().keys.len(),
                    ));
                }
            }
            for (slot, outcome) in OUTCOMES.iter().enumerate().skip(1) {
                let count = self.unattributed[used as usize][slot].load(Ordering::Relaxed);
                if count > 0 {
                    counts
                        .verifications
                        .push((used.label(), "unknown".to_owned(), outcome, count));
                }
            }
        }
        counts
    }

    /// Verifies the request's tokens at `now`, decides, and records the
    /// verification in the decision.
    pub fn decide(&self, engine: &crate::Engine, request: &Request, now: i64) -> Decision {
        let mut request = request.clone();
        let attestation = self.apply(&mut request, now);
        let mut decision = match request.validate() {
            Ok(mut prepared) => {
                attestation.prepare(&mut prepared);
                engine.decide_prepared(&request, &prepared)
            }
            Err(_) => engine.decide(&request),
        };
        attestation.annotate(&mut decision);
        decision
    }

    /// The current time as writ's clock says, in Unix seconds.
    pub fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Verifies `subject.token` and an approval token in
    /// `context.approval` at `now` (Unix seconds, writ's clock, never a
    /// time from the request) and rewrites the request. A decision made on
    /// a [`Prepared`] must pass it through [`Attestation::prepare`] for a
    /// verified approval to count.
    pub fn apply(&self, request: &mut Request, now: i64) -> Attestation {
        let mut out = Attestation::default();
        self.apply_subject(&mut request.subject, now, &mut out);
        if !self.approvers.is_empty() {
            if let Some(Value::String(token)) = request.context.get_mut("approval") {
                let token = std::mem::take(token);
                let check = match self.verify(Use::Approval, &token, now) {
                    Ok((issuer, verified)) => match &verified.payload {
                        Payload::Approval(value) => ApprovalCheck {
                            verified_by: Some(issuer.issuer.clone()),
                            value: value.clone(),
                            failure: None,
                            token_exp: Some(verified.exp),
                        },
                        Payload::Subject { .. } => unverified_approval(Failure::UnknownIssuer(
                            "not an approval issuer".to_owned(),
                        )),
                    },
                    Err(failure) => unverified_approval(failure),
                };
                request
                    .context
                    .insert("approval".to_owned(), check.value.clone());
                out.approval = Some(check);
            }
        }
        out
    }

    fn apply_subject(&self, subject: &mut Subject, now: i64, out: &mut Attestation) {
        let Some(token) = subject.token.take() else {
            if subject.attested == Some(true) {
                if self.accept_broker_attestation {
                    out.broker_attestation_accepted = true;
                } else {
                    subject.attested = Some(false);
                    out.broker_attestation_ignored = true;
                }
            }
            return;
        };
        match self.verify(Use::Subject, &token, now) {
            Ok((issuer, verified)) => {
                if let Payload::Subject { id, mapped } = &verified.payload {
                    out.overridden = rewrite(subject, issuer, id, mapped);
                    out.verified_by = Some(issuer.issuer.clone());
                }
            }
            Err(failure) => {
                subject.attested = Some(false);
                out.failure = Some(failure);
            }
        }
        subject.token = Some(token);
    }

    fn list(&self, used: Use) -> &[Issuer] {
        match used {
            Use::Subject => &self.issuers,
            Use::Approval => &self.approvers,
        }
    }

    /// Checks signature, issuer, audience, claim types and times; returns
    /// the issuer and what the token says. Counts the outcome.
    fn verify(
        &self,
        used: Use,
        token: &str,
        now: i64,
    ) -> Result<(&Issuer, Arc<Verified>), Failure> {
        let list = self.list(used);
        let result = self.verify_uncounted(used, list, token, now);
        let (index, slot) = match &result {
            Ok((index, _)) => (Some(*index), 0),
            Err((index, failure)) => (*index, failure.outcome()),
        };
        match index.and_then(|i| list.get(i)) {
            Some(issuer) => issuer.outcomes[slot].fetch_add(1, Ordering::Relaxed),
            None => self.unattributed[used as usize][slot].fetch_add(1, Ordering::Relaxed),
        };
        match result {
            Ok((index, verified)) => Ok((&list[index], verified)),
            Err((_, failure)) => Err(failure),
        }
    }

    fn verify_uncounted(
        &self,
        used: Use,
        list: &[Issuer],
        token: &str,
        now: i64,
    ) -> Result<(usize, Arc<Verified>), (Option<usize>, Failure)> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err((
                None,
                Failure::Malformed(format!(
                    "{} bytes, more than the limit of {MAX_TOKEN_BYTES}",
                    token.len()
                )),
            ));
        }
        let hit = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        if let Some(hit) = hit {
            if let Some(issuer) = list.get(hit.index) {
                if hit.used == used && hit.generation == issuer.keys.generation() {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    check_times(issuer, &hit, now).map_err(|f| (Some(hit.index), f))?;
                    return Ok((hit.index, hit));
                }
            }
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        let (index, generation, claims) = verify_signature(list, token)?;
        let issuer = &list[index];
        let verified = Arc::new(
            read_claims(issuer, used, index, generation, &claims).map_err(|f| (Some(index), f))?,
        );
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, v| v.exp > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(token.into(), verified.clone());
        }
        check_times(issuer, &verified, now).map_err(|f| (Some(index), f))?;
        Ok((index, verified))
    }
}

fn unverified_approval(failure: Failure) -> ApprovalCheck {
    let mut value = Map::new();
    value.insert("verified".to_owned(), Value::Bool(false));
    ApprovalCheck {
        verified_by: None,
        value: Value::Object(value),
        failure: Some(failure),
        token_exp: None,
    }
}

/// The header parameters writ understands; a `crit` naming anything is
/// refused (RFC 7515 4.1.11: writ implements no extension).
fn check_crit(header: &Value) -> Result<(), Failure> {
    match header.get("crit") {
        None => Ok(()),
        Some(crit) => Err(Failure::Malformed(format!(
            "the header's `crit` ({crit}) names extensions writ does not understand"
        ))),
    }
}

/// Finds the issuer and key and checks the signature; returns the issuer's
/// index, the key set's generation and the claims.
fn verify_signature(
    list: &[Issuer],
    token: &str,
) -> Result<(usize, u64, Value), (Option<usize>, Failure)> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err((
            None,
            Failure::Malformed(format!(
                "a compact JWS has 3 dot-separated parts, this has {}",
                parts.len()
            )),
        ));
    }
    let header = decode_part(parts[0], "header").map_err(|f| (None, f))?;
    let payload = decode_part(parts[1], "payload").map_err(|f| (None, f))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        _ => {
            return Err((
                None,
                Failure::Malformed("the header has no `alg` string".to_owned()),
            ))
        }
    };
    let iss = match payload.get("iss") {
        Some(Value::String(iss)) => iss.as_str(),
        Some(_) => return Err((None, Failure::Malformed("`iss` is not a string".to_owned()))),
        None => {
            return Err((
                None,
                Failure::UnknownIssuer("the token has no `iss`".to_owned()),
            ))
        }
    };
    let index = list.iter().position(|i| i.issuer == iss).ok_or_else(|| {
        (
            None,
            Failure::UnknownIssuer(format!("`{iss}` is not in the trust file")),
        )
    })?;
    let at = |f: Failure| (Some(index), f);
    let issuer = &list[index];
    check_crit(&header).map_err(at)?;
    let algorithm = issuer
        .algorithms
        .iter()
        .copied()
        .find(|a| alg_name(*a) == alg)
        .ok_or_else(|| {
            at(Failure::DisallowedAlgorithm(format!(
                "`{alg}` is not accepted for `{iss}` (accepted: {})",
                issuer
                    .algorithms
                    .iter()
                    .map(|a| alg_name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(at(Failure::Malformed("`kid` is not a string".to_owned()))),
    };
    // `jku`, `x5u`, `x5c` and `jwk` are never read: the key comes from
    // the trust file alone.
    if let Source::Url(remote) = &issuer.keys {
        // Keys older than `jwks_refresh` (or none yet) are fetched again,
        // at most once per interval.
        remote.refetch(false);
    }
    let mut generation = issuer.keys.generation();
    let mut keys = issuer.keys.current();
    if keys.find(kid).is_none() {
        if let Source::Url(remote) = &issuer.keys {
            // An unknown `kid`: the issuer may have rotated.
            if remote.refetch(true) {
                generation = issuer.keys.generation();
                keys = issuer.keys.current();
            }
        }
    }
    let key = match keys.find(kid) {
        Some(key) => key,
        None if keys.keys.is_empty() => {
            let why = match &issuer.keys {
                Source::Url(remote) => remote
                    .last_error()
                    .unwrap_or_else(|| format!("`{}` gave no keys", remote.url)),
                Source::File(_) => "no keys".to_owned(),
            };
            return Err(at(Failure::KeysUnavailable(format!(
                "`{iss}` has no keys: {why}"
            ))));
        }
        None => {
            return Err(at(Failure::UnknownKey(match kid {
                Some(kid) => format!("`{iss}` has no key with kid `{kid}`"),
                None => format!(
                    "the token has no `kid` and `{iss}` has {} keys",
                    keys.keys.len()
                ),
            })))
        }
    };
    if key.alg.as_deref().is_some_and(|a| a != alg) {
        return Err(at(Failure::DisallowedAlgorithm(format!(
            "the key is for `{}`, the token says `{alg}`",
            key.alg.as_deref().unwrap_or_default()
        ))));
    }
    // The key must be of the algorithm's kind before it is used with it
    // (jsonwebtoken's `decode` checks this too; `crypto::verify` does not).
    if Family::of(algorithm) != Some(key.family) {
        return Err(at(Failure::DisallowedAlgorithm(format!(
            "`{alg}` does not fit the issuer's key"
        ))));
    }
    // The header and payload are already decoded: only the signature is
    // left to check, over the token's first two parts as they were sent.
    let message = &token[..parts[0].len() + 1 + parts[1].len()];
    match jsonwebtoken::crypto::verify(parts[2], message.as_bytes(), &key.key, algorithm) {
        Ok(true) => Ok((index, generation, payload)),
        Ok(false) => Err(at(Failure::BadSignature(
            "the signature does not verify with the issuer's key".to_owned(),
        ))),
        Err(e) => Err(at(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => Failure::BadSignature(
                "the signature does not verify with the issuer's key".to_owned(),
            ),
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                Failure::DisallowedAlgorithm(format!("`{alg}` does not fit the issuer's key"))
            }
            _ => Failure::Malformed(e.to_string()),
        })),
    }
}

/// Everything about the claims that does not depend on the clock: types,
/// presence of `exp` and `iat`, the audience, and what the token says.
fn read_claims(
    issuer: &Issuer,
    used: Use,
    index: usize,
    generation: u64,
    claims: &Value,
) -> Result<Verified, Failure> {
    let exp = time_claim(claims, "exp")?
        .ok_or_else(|| Failure::Malformed("the token has no `exp`".to_owned()))?;
    let nbf = time_claim(claims, "nbf")?;
    let iat = time_claim(claims, "iat")?
        .ok_or_else(|| Failure::Malformed("the token has no `iat`".to_owned()))?;
    check_audience(issuer, claims)?;
    let payload = match &issuer.approval {
        None => subject_claims(issuer, claims)?,
        Some(names) => Payload::Approval(approval_claims(issuer, names, claims)?),
    };
    Ok(Verified {
        used,
        index,
        generation,
        exp,
        nbf,
        iat,
        payload,
    })
}

fn subject_claims(issuer: &Issuer, claims: &Value) -> Result<Payload, Failure> {
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
    let mut mapped = Vec::with_capacity(issuer.claims.len());
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
        mapped.push(value);
    }
    Ok(Payload::Subject { id, mapped })
}

/// `{verified: true, approver, action, resource, expires, scope?,
/// verified_by}` from an approval token's claims.
fn approval_claims(
    issuer: &Issuer,
    names: &trust::ApprovalClaims,
    claims: &Value,
) -> Result<Value, Failure> {
    let string = |name: &str, what: &str| match lookup(claims, name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(Value::String(text.clone())),
        Some(Value::String(_)) => Err(Failure::Malformed(format!(
            "the approval's {what} (claim `{name}`) is empty"
        ))),
        Some(other) => Err(Failure::Malformed(format!(
            "the approval's {what} (claim `{name}`) is {}, not a string",
            type_name(other)
        ))),
        None => Err(Failure::Malformed(format!(
            "the approval has no {what} (claim `{name}`)"
        ))),
    };
    let mut out = Map::new();
    out.insert("verified".to_owned(), Value::Bool(true));
    out.insert("approver".to_owned(), string(&names.approver, "approver")?);
    out.insert("action".to_owned(), string(&names.action, "action")?);
    out.insert("resource".to_owned(), string(&names.resource, "resource")?);
    let expires = match lookup(claims, &names.expires) {
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| {
        Failure::Malformed(format!(
            "the approval's expiry (claim `{}`) is not a NumericDate",
            names.expires
        ))
    })?;
    let expires = time::OffsetDateTime::from_unix_timestamp(expires)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or_else(|| {
            Failure::Malformed(format!("the approval's expiry {expires} is out of range"))
        })?;
    out.insert("expires".to_owned(), Value::String(expires));
    match lookup(claims, &names.scope) {
        None => {}
        Some(scope @ Value::String(_)) => {
            out.insert("scope".to_owned(), scope.clone());
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            out.insert("scope".to_owned(), Value::Array(items.clone()));
        }
        Some(other) => {
            return Err(Failure::Malformed(format!(
                "the approval's scope (claim `{}`) is {}, not a string or a list of strings",
                names.scope,
                type_name(other)
            )))
        }
    }
    out.insert(
        "verified_by".to_owned(),
        Value::String(issuer.issuer.clone()),
    );
    Ok(Value::Object(out))
}

/// Sets the subject from a verified token; returns the attributes whose
/// broker value it replaced.
fn rewrite(
    subject: &mut Subject,
    issuer: &Issuer,
    id: &Option<String>,
    mapped: &[Option<Value>],
) -> Vec<String> {
    // Values the broker already sent as the token says are left in place:
    // the cached path then allocates only what changes.
    let mut overridden = Vec::new();
    let mut note = |name: &str, changed: bool| {
        if changed {
            overridden.push(name.to_owned());
        }
    };
    if subject.id != *id {
        note("id", subject.id.is_some());
        subject.id.clone_from(id);
    }
    set_string(&mut subject.kind, &issuer.kind, "kind", &mut note);
    set_string(&mut subject.auth, &issuer.auth, "auth", &mut note);
    for ((_, attribute), value) in issuer.claims.iter().zip(mapped) {
        let string = value.as_ref().and_then(Value::as_str);
        let field = match attribute.as_str() {
            "environment" => Some(&mut subject.environment),
            "owner" => Some(&mut subject.owner),
            _ => None,
        };
        if let Some(field) = field {
            if field.as_deref() != string {
                note(attribute, field.is_some());
                *field = string.map(str::to_owned);
            }
            continue;
        }
        let before = subject.extra.get(attribute.as_str());
        if before == value.as_ref() {
            continue;
        }
        note(attribute, before.is_some());
        match value {
            Some(v) => {
                subject.extra.insert(attribute.clone(), v.clone());
            }
            None => {
                subject.extra.shift_remove(attribute.as_str());
            }
        }
    }
    let before = subject.extra.get("verified_by");
    if before.and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
        note("verified_by", before.is_some());
        subject.extra.insert(
            "verified_by".to_owned(),
            Value::String(issuer.issuer.clone()),
        );
    }
    subject.attested = Some(true);
    overridden
}

/// Sets a string attribute to `value`, noting a broker value it replaces.
fn set_string(
    field: &mut Option<String>,
    value: &str,
    name: &str,
    note: &mut impl FnMut(&str, bool),
) {
    if field.as_deref() != Some(value) {
        note(name, field.is_some());
        *field = Some(value.to_owned());
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

fn check_times(issuer: &Issuer, verified: &Verified, now: i64) -> Result<(), Failure> {
    let skew = issuer.clock_skew;
    let (exp, iat) = (verified.exp, verified.iat);
    if now >= exp.saturating_add(skew) {
        return Err(Failure::Expired(format!(
            "`exp` {exp} is before now ({now})"
        )));
    }
    if let Some(nbf) = verified.nbf {
        if nbf > now.saturating_add(skew) {
            return Err(Failure::NotYetValid(format!(
                "`nbf` {nbf} is after now ({now})"
            )));
        }
    }
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
    Ok(())
}

fn check_audience(issuer: &Issuer, claims: &Value) -> Result<(), Failure> {
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
