//! `/v1/grants` (docs/lifecycle.md): decide, and on allow record the grant
//! in the ledger before answering; read, list and revoke grants.

use std::sync::{Arc, Mutex};

use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use sha2::Digest;

use super::{json_body, json_error, read_body, read_json, request_error, ApiError, ErrorCode};
use crate::ledger::{
    self, Filter, Grant, GrantState, Issue, Ledger, LedgerError, Selector, Verdict,
};
use crate::request::json::{self, Limits};
use crate::request::{typed, Request, MAX_JSON_DEPTH};
use crate::server::log::{self as decision_log, Entry};
use crate::server::{now_rfc3339, App};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest `Idempotency-Key` taken, in bytes.
const MAX_KEY_BYTES: usize = 200;
const PREFIX: &str = "/v1/grants/";
/// The endpoint, as the decision log names it.
const GRANTS: &str = "/v1/grants";
/// The revocation reason of a grant whose decision could not be logged.
const UNLOGGED: &str = "decision_log_unavailable";

pub(super) fn ledger_of(app: &App) -> Result<&Ledger, ApiError> {
    app.ledger.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "this `writ serve` keeps no grants; start it with `--ledger FILE` or `--ledger postgres://...`",
        )
    })
}

pub(super) fn unavailable(error: LedgerError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::LedgerUnavailable,
        format!("{error}; nothing was decided or recorded"),
    )
}

pub(super) fn respond(app: &App, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|error| error.into_response(app))
}

/// `POST /v1/grants`.
pub(super) async fn issue(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let result = issue_inner(app.clone(), request).await;
    respond(&app, result)
}

/// What `POST /v1/grants` hands the ledger: the issuance's keys and the
/// decision to run once the subject's grants are counted, boxed.
struct Pending {
    key: Option<String>,
    request_digest: String,
    grant_id: String,
    counted: String,
    window: std::time::Duration,
    now: i64,
    log_line: Arc<Mutex<Option<String>>>,
    decide: Box<dyn Fn(u64) -> Verdict + Send + Sync>,
}

/// Reads and checks the body and builds the issuance's decision
/// ([`Pending`]), or the error answer.
fn pending(
    app: &Arc<App>,
    ledger: &Ledger,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Pending, ApiError> {
    // The fast way: one pass from the text into the request, with
    // `credential_ref` set aside (`request::typed`). A body it does not
    // take is read the careful way below, which names what is wrong; the
    // two read a body they both take into the same request.
    let text = std::str::from_utf8(bytes).ok();
    let fast = text
        .map(|text| text.strip_prefix('\u{feff}').unwrap_or(text))
        .and_then(|text| Some((text, typed::read_grant(text, MAX_JSON_DEPTH)?)));
    let (credential_ref, request_digest, mut request, mut prepared) = match fast {
        Some((text, (request, credential_ref))) => {
            let key = idempotency_key(headers)?;
            let request_digest = match &key {
                Some(_) => body_digest(text).ok_or_else(|| {
                    ApiError::invalid("the request body is not one JSON document")
                })?,
                None => String::new(),
            };
            let credential_ref = match credential_ref {
                None => None,
                Some(text) if !text.is_empty() && text.len() <= 1024 => Some(text),
                Some(_) => return Err(bad_credential_ref()),
            };
            let prepared = request.validate().map_err(request_error)?;
            (credential_ref, (key, request_digest), request, prepared)
        }
        None => {
            let limits = Limits {
                max_bytes: app.max_body,
                max_depth: MAX_JSON_DEPTH,
            };
            let value = json::read(bytes, limits).map_err(json_error)?;
            let key = idempotency_key(headers)?;
            // What the key is bound to: the body as parsed (so spacing does
            // not matter, but every field and value does, `credential_ref`
            // included). Only a key is bound to anything: without one,
            // nothing is hashed. [`body_digest`] gives the same from the
            // text.
            let request_digest = if key.is_some() {
                crate::hex::prefixed(
                    "sha256:",
                    &sha2::Sha256::digest(value.to_string().as_bytes()),
                )
            } else {
                String::new()
            };
            let Value::Object(mut body) = value else {
                return Err(ApiError::invalid(
                    "the request body must be a JSON object: a request (contract.md) and an optional `credential_ref`",
                ));
            };
            let credential_ref = match body.shift_remove("credential_ref") {
                None => None,
                Some(Value::String(text)) if !text.is_empty() && text.len() <= 1024 => Some(text),
                Some(_) => return Err(bad_credential_ref()),
            };
            let (request, prepared) =
                Request::from_value(Value::Object(body)).map_err(request_error)?;
            (credential_ref, (key, request_digest), request, prepared)
        }
    };
    let (key, request_digest) = request_digest;
    // As on every decision endpoint: the token is verified (on the server's
    // clock) before anything reads the subject, so a grant is counted and
    // recorded under the verified identity, and a broker's bare
    // `attested: true` counts for nothing when a trust file is configured.
    // Which approval token was sent (its digest: the token is not kept),
    // for the grant's attestation should writ verify it.
    let approval_token = app
        .trust
        .as_ref()
        .and_then(|_| request.context.get("approval"))
        .and_then(Value::as_str)
        .map(|token| crate::hex::prefixed("sha256:", &sha2::Sha256::digest(token.as_bytes())));
    let attestation = app
        .trust
        .as_ref()
        .map(|trust| trust.apply(&mut request, crate::identity::Trust::now()));
    if let Some(attestation) = &attestation {
        attestation.prepare(&mut prepared);
    }
    let Some(subject) = request.subject.id.clone().filter(|id| !id.is_empty()) else {
        return Err(ApiError::invalid(
            "`subject.id` is required by /v1/grants: grants are counted and recorded per subject",
        ));
    };
    let time_filled = request.environment.time.is_none();
    let logged_at = now_rfc3339();
    if time_filled {
        prepared.time = crate::request::parse_time(&logged_at);
        request.environment.time = Some(logged_at.clone());
        app.metrics.time_filled();
    }
    let request_id = super::request_id(headers);
    // The decision's log line, built where the decision is made (inside the
    // ledger's transaction) and written once the ledger has answered.
    let log_line: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let task = request
        .intent
        .id
        .clone()
        .or_else(|| request.intent.task.clone());
    let loaded = app.current.load_full();
    let now = ledger.now();
    let grant_id = ledger::new_grant_id();
    let approval = attestation
        .as_ref()
        .and_then(|a| approval_attestation(a.approval.as_ref()?, approval_token?, now));
    let (window, window_from) = repeat_window(&loaded.engine, app.repeat_window);
    // The answer's `issuance_count` but for its value, and the grant id as
    // JSON, written here rather than for each decision of the group.
    let count_rest = count_rest(
        window.as_secs(),
        window_from,
        request.context.get(RECENT_ISSUANCES),
    );
    let request = Mutex::new(request);
    let grant_json = {
        let mut text = Vec::with_capacity(grant_id.len() + 2);
        json_string(&mut text, &grant_id);
        utf8(text)
    };
    let counted = subject.clone();
    let decide = {
        let grant_id = grant_id.clone();
        let log_line = log_line.clone();
        let app = app.clone();
        move |count: u64| -> Verdict {
            // Normally called once; a group that is retried calls it again.
            // The request is changed in place (its count), not copied.
            let mut request = match request.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            request
                .context
                .insert(RECENT_ISSUANCES.to_owned(), Value::from(count));
            let request = &*request;
            let mut decision = loaded.engine.decide_prepared(request, &prepared);
            if let Some(attestation) = &attestation {
                attestation.annotate(&mut decision);
            }
            let decision_id = crate::server::ids::next();
            if app.log.is_some() {
                let entry = Entry {
                    decision_id: &decision_id,
                    time: &logged_at,
                    endpoint: GRANTS,
                    request_id: request_id.as_deref(),
                    time_filled,
                };
                let line = decision_log::line(&entry, request, &decision, &app.redaction);
                if let Ok(mut slot) = log_line.lock() {
                    *slot = Some(line);
                }
            }
            // The decision as `/v1/decide` writes it, with the count
            // appended as its last member (written once, not parsed back).
            let mut answer = decision.json_bytes(Some(&decision_id));
            append_member(
                &mut answer,
                "issuance_count",
                &count_object(count, &count_rest),
            );
            if !decision.is_allow() {
                return Verdict {
                    grant: None,
                    status: 200,
                    body: utf8(answer),
                    request_text: None,
                    obligations_text: None,
                };
            }
            append_member(&mut answer, "grant_id", &grant_json);
            // The stored request and obligations written as text straight
            // from the request and the decision where nothing needs redacting
            // (the same text as their JSON values'); the values otherwise.
            let request_text = recorded_text(request);
            let stored = match &request_text {
                Some(_) => Value::Null,
                None => recorded(request),
            };
            let obligations_text = serde_json::to_string(&decision.obligations).ok();
            let obligations = match &obligations_text {
                Some(_) => Value::Null,
                None => serde_json::to_value(&decision.obligations).unwrap_or(Value::Null),
            };
            let ttl_ms = i64::try_from(decision.ttl)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
            let grant = Grant {
                grant_id: grant_id.clone(),
                decision_id,
                policy_digest: decision.policy.digest.to_string(),
                subject_id: subject.clone(),
                task_id: task.clone(),
                request: stored,
                scope: decision.scope.clone(),
                ttl: decision.ttl,
                issued_at: now,
                expires_at: now.saturating_add(ttl_ms),
                obligations,
                credential_ref: credential_ref.clone(),
                revoked_at: None,
                revoked_by: None,
                reason: None,
                narrowed: false,
                redecision: None,
                redecided_at: None,
                approval: approval.clone(),
            };
            let mut body = Vec::with_capacity(answer.len() + grant_json.len() + 26);
            body.extend_from_slice(b"{\"grant_id\":");
            body.extend_from_slice(grant_json.as_bytes());
            body.extend_from_slice(b",\"decision\":");
            body.extend_from_slice(&answer);
            body.push(b'}');
            Verdict {
                grant: Some(grant),
                status: 201,
                body: utf8(body),
                request_text,
                obligations_text,
            }
        }
    };
    Ok(Pending {
        key,
        request_digest,
        grant_id,
        counted,
        window,
        now,
        log_line,
        decide: Box::new(decide),
    })
}

async fn issue_inner(app: Arc<App>, request: HttpRequest) -> Result<Response, ApiError> {
    let ledger = ledger_of(&app)?;
    let (headers, bytes) = read_body(&app, request).await?;
    // Everything up to the ledger is done by a plain function, so that the
    // request, its prepared form and the decision's closure (several KB)
    // are not part of this future's state: the future is moved into a box
    // or two on its way through the router, and each move copies all of it.
    let Pending {
        key,
        request_digest,
        grant_id,
        counted,
        window,
        now,
        log_line,
        decide,
    } = pending(&app, ledger, &headers, &bytes)?;
    drop((headers, bytes));
    let issued = ledger
        .issue(
            Issue {
                subject_id: &counted,
                window,
                now,
                idempotency_key: key.as_deref(),
                request_digest: &request_digest,
                grant_id: &grant_id,
            },
            decide,
        )
        .await
        .map_err(unavailable)?;
    if issued.key_reused {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            format!(
                "the `Idempotency-Key` `{}` was first used with a different request; nothing was decided or recorded (use a new key for a new request)",
                key.as_deref().unwrap_or_default()
            ),
        ));
    }
    if issued.replayed {
        // A replay decided nothing and writes no line; but the first answer
        // may have been withheld for want of its log line (below).
        if issued.status == 201 {
            withheld_unlogged(ledger, &grant_id_in(&issued.body)).await?;
        }
    } else {
        app.metrics.decision(issued.status == 201);
        let line = log_line.lock().ok().and_then(|mut slot| slot.take());
        if let Some(line) = line {
            if let Err(error) = super::record(&app, vec![line]).await {
                // The grant was committed with the decision (count and record
                // are one transaction), so the line can only be written after
                // it. Writing it first would need an await inside the ledger's
                // transaction and would log an allow for a grant that a
                // failed commit never recorded. Instead, an allow whose line
                // is lost is revoked before the broker ever sees its id: the
                // answer is 503, and no credential is minted for a decision
                // the log does not hold.
                // If the ledger fails too, the grant stays live but was
                // never answered; say so for the operator.
                if issued.status == 201 {
                    if let Err(revoke) = ledger
                        .revoke(&grant_id, "writ", UNLOGGED, ledger.now())
                        .await
                    {
                        eprintln!(
                            "writ: grant `{grant_id}` was not answered (its decision could not be logged) and could not be revoked: {revoke}"
                        );
                    }
                }
                return Err(error);
            }
        }
    }
    let mut response = json_body(issued.body);
    *response.status_mut() = StatusCode::from_u16(issued.status).unwrap_or(StatusCode::OK);
    if issued.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn bad_credential_ref() -> ApiError {
    ApiError::invalid("invalid request at `credential_ref`: expected a string of 1 to 1024 bytes")
}

/// What an `Idempotency-Key` is bound to, from the body's text (its byte
/// order mark skipped): `sha256:` and the hex SHA-256 of the body as
/// `serde_json` writes its parsed value (no spacing, members in the order
/// written, strings and numbers as `serde_json` writes them), which is what
/// the key was always bound to, so a key stored by an earlier writ still
/// replays. Written as it is read, without building the value. `None` if
/// the text is not one JSON document.
fn body_digest(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(Compact(&mut out), &mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(crate::hex::prefixed("sha256:", &sha2::Sha256::digest(&out)))
}

/// Writes the JSON value it reads, as `Value::to_string` writes it.
struct Compact<'a>(&'a mut Vec<u8>);

impl<'de> serde::de::DeserializeSeed<'de> for Compact<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Compact<'_> {
    /// Writes `value` as `serde_json` serializes it.
    fn write<T: serde::Serialize + ?Sized, E: serde::de::Error>(self, value: &T) -> Result<(), E> {
        serde_json::to_writer(self.0, value).map_err(E::custom)
    }
}

impl<'de> serde::de::Visitor<'de> for Compact<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        self.write(&value)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<(), E> {
        self.write(&value)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<(), E> {
        self.write(&value)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        if !value.is_finite() {
            return Err(E::custom("a number that is not finite"));
        }
        self.write(&value)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<(), E> {
        self.write(value)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if items.next_element_seed(Compact(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'{');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if entries.next_key_seed(Compact(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            out.push(b':');
            entries.next_value_seed(Compact(&mut *out))?;
            first = false;
        }
        out.push(b'}');
        Ok(())
    }
}

/// The attestation a grant keeps of an approval token writ verified at
/// `now` (Unix milliseconds): `None` unless `check` verified. It stops
/// counting at the earlier of the approval's expiry claim and the token's
/// `exp`; with neither readable, it never counts (fail closed).
fn approval_attestation(
    check: &crate::identity::ApprovalCheck,
    token: String,
    now: i64,
) -> Option<ledger::ApprovalAttestation> {
    let issuer = check.verified_by.clone()?;
    let claimed = check
        .value
        .get("expires")
        .and_then(Value::as_str)
        .and_then(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        })
        .and_then(|at| i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok());
    let token_exp = check.token_exp.map(|exp| exp.saturating_mul(1000));
    let expires_at = match (claimed, token_exp) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => i64::MIN,
    };
    Some(ledger::ApprovalAttestation {
        approval: check.value.clone(),
        issuer,
        token,
        expires_at,
        verified_at: now,
    })
}

/// The policy constant that sets the window of the issuance count.
pub(crate) const REPEAT_WINDOW: &str = "repeat_window";

/// The window the issuance count looks back over, and where it came
/// from: the serving policy set's constant `repeat_window` when it defines
/// one as a duration (at least 1 s), else `--repeat-window`.
pub(crate) fn repeat_window(
    engine: &crate::engine::Engine,
    flag: std::time::Duration,
) -> (std::time::Duration, &'static str) {
    match engine.policy().consts.get(REPEAT_WINDOW) {
        Some(crate::ir::Lit::Dur(seconds)) => (
            std::time::Duration::from_secs((*seconds).max(1)),
            "policy constant repeat_window",
        ),
        Some(_) => (
            flag,
            "--repeat-window (the policy's repeat_window is not a duration)",
        ),
        None => (flag, "--repeat-window"),
    }
}

/// Appends `"name":value` to the JSON object in `object` (a decision's
/// text, which is never empty), as inserting it into the parsed object
/// would: last.
fn append_member(object: &mut Vec<u8>, name: &str, value: &str) {
    if object.last() == Some(&b'}') {
        object.pop();
    }
    if object.last() != Some(&b'{') {
        object.push(b',');
    }
    object.push(b'"');
    object.extend_from_slice(name.as_bytes());
    object.extend_from_slice(b"\":");
    object.extend_from_slice(value.as_bytes());
    object.push(b'}');
}

/// `{"value":COUNT,...}`: the count first, then the members of `rest` (a
/// JSON object's text), as `json!` writes the object with `value` first.
fn count_object(count: u64, rest: &str) -> String {
    let members = rest
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default();
    let mut text = String::with_capacity(rest.len() + 32);
    text.push_str("{\"value\":");
    text.push_str(&count.to_string());
    if !members.is_empty() {
        text.push(',');
        text.push_str(members);
    }
    text.push('}');
    text
}

/// The members of the answer's `issuance_count` but its `value`, as the
/// object's text: the same bytes as `json!({"source": "ledger",
/// "window_seconds": .., "window_from": .., "ignored_from_request": ..})
/// .to_string()` (`null` when the broker sent no count), written directly.
fn count_rest(window_seconds: u64, window_from: &str, from_broker: Option<&Value>) -> String {
    let mut text = Vec::with_capacity(128);
    text.extend_from_slice(b"{\"source\":\"ledger\",\"window_seconds\":");
    text.extend_from_slice(window_seconds.to_string().as_bytes());
    text.extend_from_slice(b",\"window_from\":");
    json_string(&mut text, window_from);
    text.extend_from_slice(b",\"ignored_from_request\":");
    match from_broker {
        // Writing a value to a `Vec` cannot fail (its keys are strings).
        Some(value) => {
            let _ = serde_json::to_writer(&mut text, value);
        }
        None => text.extend_from_slice(b"null"),
    }
    text.push(b'}');
    utf8(text)
}

/// JSON text written by writ as a string, without a copy (it is always
/// UTF-8; were it not, the invalid bytes would read as U+FFFD).
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// The `grant_id` in a stored `201` answer.
fn grant_id_in(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| {
            value
                .get("grant_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// A replayed `201` whose grant was revoked because its decision could not
/// be logged is answered `503` again, never `201`.
async fn withheld_unlogged(ledger: &Ledger, grant_id: &str) -> Result<(), ApiError> {
    let grant = ledger.get(grant_id).await.map_err(unavailable)?;
    if grant.is_some_and(|grant| grant.reason.as_deref() == Some(UNLOGGED)) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DecisionLogUnavailable,
            "the decision could not be written to the decision log, which is required; its grant was revoked and is not answered",
        ));
    }
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) if !text.is_empty() && text.len() <= MAX_KEY_BYTES => Ok(Some(text.to_owned())),
        _ => Err(ApiError::invalid(format!(
            "`Idempotency-Key` must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
        ))),
    }
}

/// The grant id in `/v1/grants/{grant_id}`.
fn grant_id_of(request: &HttpRequest) -> String {
    let path = request.uri().path();
    percent_decode(path.strip_prefix(PREFIX).unwrap_or_default())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no grant `{id}` in the ledger"),
    )
}

/// `GET /v1/grants/{grant_id}`.
pub(super) async fn show(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let id = grant_id_of(&request);
    drop(request);
    let result = async {
        let ledger = ledger_of(&app)?;
        let grant = ledger.get(&id).await.map_err(unavailable)?;
        let grant = grant.ok_or_else(|| not_found(&id))?;
        Ok(json_body(grant.to_json(ledger.now()).to_string()))
    }
    .await;
    respond(&app, result)
}

/// `DELETE /v1/grants/{grant_id}`: the broker could not mint.
pub(super) async fn revoke(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let id = grant_id_of(&request);
    drop(request);
    let result = async {
        let ledger = ledger_of(&app)?;
        let now = ledger.now();
        let revoked = ledger
            .revoke(&id, "broker", "not_minted", now)
            .await
            .map_err(unavailable)?;
        let (grant, changed) = revoked.ok_or_else(|| not_found(&id))?;
        Ok(json_body(
            json!({"revoked": changed, "grant": grant.to_json(now)}).to_string(),
        ))
    }
    .await;
    respond(&app, result)
}

/// `GET /v1/grants?subject=&task=&state=&limit=&after=`.
pub(super) async fn list(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let query = request.uri().query().unwrap_or_default().to_owned();
    drop(request);
    let result = async {
        let ledger = ledger_of(&app)?;
        let filter = parse_filter(&query)?;
        let now = ledger.now();
        let grants = ledger.list(&filter, now).await.map_err(unavailable)?;
        let next = if grants.len() == filter.limit {
            grants.last().map(|g| g.grant_id.clone())
        } else {
            None
        };
        let grants: Vec<Value> = grants.iter().map(|g| g.to_json(now)).collect();
        Ok(json_body(
            json!({"grants": grants, "next": next}).to_string(),
        ))
    }
    .await;
    respond(&app, result)
}

/// `POST /v1/events`: revoke the live grants the event selects whose
/// `revoke_on` names it (all of the subject's for `identity_revoked`).
pub(super) async fn event(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let result = event_inner(app.clone(), request).await;
    respond(&app, result)
}

async fn event_inner(app: Arc<App>, request: HttpRequest) -> Result<Response, ApiError> {
    let ledger = ledger_of(&app)?;
    let (_, value) = read_json(&app, request, MAX_JSON_DEPTH).await?;
    let Value::Object(mut body) = value else {
        return Err(ApiError::invalid(
            "an event is a JSON object: {\"type\", \"subject\", \"task\", \"grant\", \"reason\"}",
        ));
    };
    let mut text = |name: &str, required: bool| -> Result<Option<String>, ApiError> {
        match body.shift_remove(name) {
            None if required => Err(ApiError::invalid(format!(
                "the event has no `{name}`; name the event, e.g. `\"type\": \"task_end\"`"
            ))),
            None => Ok(None),
            Some(Value::String(t)) if !t.is_empty() && t.len() <= 1024 => Ok(Some(t)),
            Some(_) => Err(ApiError::invalid(format!(
                "invalid event at `{name}`: expected a string of 1 to 1024 bytes"
            ))),
        }
    };
    let kind = text("type", true)?.unwrap_or_default();
    let selector = Selector {
        subject: text("subject", false)?,
        task: text("task", false)?,
        grant: text("grant", false)?,
    };
    let reason = text("reason", false)?.unwrap_or_else(|| kind.clone());
    let context = match body.shift_remove("context") {
        None => None,
        Some(Value::Object(context)) => Some(context),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "invalid event at `context`: expected a JSON object of new facts (e.g. {{\"risk_score\": 80}}), found {}",
                crate::request::json_kind(&other)
            )))
        }
    };
    if let Some(other) = body.keys().next() {
        return Err(ApiError::invalid(format!(
            "unknown event field `{other}`: use type, subject, task, grant, context, reason"
        )));
    }
    if selector.is_empty() {
        return Err(ApiError::invalid(
            "the event selects no grant: give at least one of `subject`, `task`, `grant`",
        ));
    }
    if kind == ledger::IDENTITY_REVOKED && selector.subject.is_none() {
        return Err(ApiError::invalid(
            "`identity_revoked` revokes a subject's grants: give `subject`",
        ));
    }
    if let Some(id) = &selector.grant {
        if ledger.get(id).await.map_err(unavailable)?.is_none() {
            return Err(not_found(id));
        }
    }
    let now = ledger.now();
    let revoked = ledger
        .revoke_for_event(&selector, &kind, &reason, now)
        .await
        .map_err(|error| match error {
            LedgerError::Invalid(message) => ApiError::invalid(message),
            other => unavailable(other),
        })?;
    let mut revoked: Vec<Value> = revoked
        .iter()
        .map(|(grant, why)| {
            json!({
                "grant_id": grant.grant_id,
                "subject_id": grant.subject_id,
                "task_id": grant.task_id,
                "credential_ref": grant.credential_ref,
                "why": why,
            })
        })
        .collect();
    let mut narrowed = Vec::new();
    let mut checked = 0;
    if let Some(context) = context {
        // The grants the event left live are decided again with its facts.
        let report = super::lifecycle::redecide_selected(
            &app,
            ledger,
            &selector,
            Some(context),
            &format!("event:{kind}"),
        )
        .await
        .map_err(unavailable)?;
        checked = report.checked;
        for change in report.changes {
            if change["kind"] == "narrowed" {
                narrowed.push(change);
            } else {
                revoked.push(change);
            }
        }
    }
    Ok(json_body(
        json!({"type": kind, "revoked": revoked, "narrowed": narrowed, "redecided": checked})
            .to_string(),
    ))
}

fn parse_filter(query: &str) -> Result<Filter, ApiError> {
    let mut filter = Filter {
        limit: 100,
        ..Filter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "subject" => filter.subject = Some(value),
            "task" => filter.task = Some(value),
            "after" => filter.after = Some(value),
            "state" => {
                filter.state = Some(GrantState::parse(&value).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "`state={value}` is not a grant state: use `live`, `expired` or `revoked`"
                    ))
                })?)
            }
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(format!("`limit={value}` is not a number from 1 to 1000"))
                    })?
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{other}`: use subject, task, state, limit, after"
                )))
            }
        }
    }
    Ok(filter)
}

/// Decodes `%XX` escapes and `+` (a space in a query); a malformed escape
/// is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The context attribute the ledger's count is decided under.
const RECENT_ISSUANCES: &str = "recent_issuances";

/// The request as the ledger keeps it: as decided, with the verified
/// claims the trust file set, but no bearer token at rest. `subject.token`,
/// and any other string that is a compact JWS (an approval token in
/// `context.approval` that no approval issuer verified, a token in a field
/// of the broker's own), is replaced by [`token_digest`] of it. What a
/// re-decision reads stays as it was decided: the subject as the token set
/// it, a verified approval's claims (`Trust::apply` already replaced the
/// token with them), and each field present, holding a string, so `has`
/// tests and types decide the same; only the token's text is gone.
fn recorded(request: &Request) -> Value {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Some(Value::String(token)) = value
        .get_mut("subject")
        .and_then(|subject| subject.get_mut("token"))
    {
        *token = token_digest(token);
    }
    redact_tokens(&mut value);
    value
}

/// [`recorded`]'s text, written straight from `request` when there is
/// nothing to redact in it (no `subject.token`, no string that is a compact
/// JWS): the same text as `recorded(request).to_string()`, without building
/// the value. `None` when there is something to redact: then [`recorded`].
fn recorded_text(request: &Request) -> Option<String> {
    if request.subject.token.is_some() {
        return None;
    }
    let text = serde_json::to_string(request).ok()?;
    (!holds_compact_jws(&text)).then_some(text)
}

/// `text` as a JSON string, as `serde_json` writes it: as it is between
/// quotes when nothing in it needs an escape (no `"`, `\` or control
/// character), `serde_json`'s own escaping otherwise.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // Without an early exit, so that the check is done many bytes at once.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a `str` to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Whether a string of `text` (JSON as `serde_json` writes it) may be a
/// compact JWS: a string that is one is written as `"`, its text (base64url
/// and dots need no escape) and `"`; every such run with exactly two dots
/// (a compact JWS has three parts, so no other run can be one) is checked.
fn holds_compact_jws(text: &str) -> bool {
    let bytes = text.as_bytes();
    let in_run = |b: u8| BASE64URL_OR_DOT[usize::from(b)];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        let mut dots = 0_usize;
        while end < bytes.len() && in_run(bytes[end]) {
            dots += usize::from(bytes[end] == b'.');
            end += 1;
        }
        if dots == 2
            && end < bytes.len()
            && bytes[end] == b'"'
            && text.get(start..end).is_some_and(is_compact_jws)
        {
            return true;
        }
        i = end.max(start);
    }
    false
}

/// The bytes of a compact JWS: base64url and the dot.
static BASE64URL_OR_DOT: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        b += 1;
    }
    table
};

/// What a redacted token is stored as: `redacted:sha256:` and the hex
/// SHA-256 of its text (the same token always reads the same, so grants
/// issued on one token can still be told apart from another's).
fn token_digest(token: &str) -> String {
    if token.starts_with(REDACTED) {
        return token.to_owned();
    }
    crate::hex::prefixed(REDACTED, &sha2::Sha256::digest(token.as_bytes()))
}

/// The prefix of a redacted token.
const REDACTED: &str = "redacted:sha256:";

/// Replaces every string in `value` that is a compact JWS by its digest.
fn redact_tokens(value: &mut Value) {
    match value {
        Value::String(text) if is_compact_jws(text) => *text = token_digest(text),
        Value::Array(items) => items.iter_mut().for_each(redact_tokens),
        Value::Object(map) => map.values_mut().for_each(redact_tokens),
        _ => {}
    }
}

/// Whether `text` is a compact JWS (RFC 7515; a signed JWT): three
/// base64url parts, the first a JSON object naming its `alg`.
fn is_compact_jws(text: &str) -> bool {
    use base64::Engine as _;
    let mut parts = text.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let base64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if header.is_empty() || !base64url(header) || !base64url(payload) || !base64url(signature) {
        return false;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|header| header.get("alg").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn members_are_appended_as_the_parsed_object_would_have_them() {
        let mut text = br#"{"decision":"deny","trace":[{"a":"}"}]}"#.to_vec();
        append_member(&mut text, "issuance_count", r#"{"value":3}"#);
        let mut parsed: Map<String, Value> =
            serde_json::from_str(r#"{"decision":"deny","trace":[{"a":"}"}]}"#).expect("json");
        parsed.insert("issuance_count".to_owned(), json!({"value": 3}));
        assert_eq!(text, Value::Object(parsed).to_string().into_bytes());
        let mut empty = b"{}".to_vec();
        append_member(&mut empty, "n", "1");
        assert_eq!(empty, br#"{"n":1}"#.to_vec());
    }

    #[test]
    fn tokens_are_kept_as_digests_and_other_strings_as_they_are() {
        // {"alg":"RS256","typ":"JWT"} . {"sub":"x"} . signature
        let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        assert!(is_compact_jws(jwt));
        assert!(!is_compact_jws("a.b.c"));
        assert!(!is_compact_jws("yes"));
        assert!(!is_compact_jws("deploy:k8s://prod.eu/payments"));
        let request = Request::from_value(json!({
            "subject": {"id": "s", "token": "opaque-bearer", "extra": [jwt]},
            "action": "deploy",
            "context": {"approval": jwt, "note": "yes"}
        }))
        .expect("a request")
        .0;
        let kept = recorded(&request);
        let text = kept.to_string();
        assert!(!text.contains("opaque-bearer"), "{text}");
        assert!(!text.contains(jwt), "{text}");
        assert_eq!(kept["subject"]["token"], token_digest("opaque-bearer"));
        assert_eq!(kept["context"]["approval"], token_digest(jwt));
        assert_eq!(kept["subject"]["extra"][0], token_digest(jwt));
        assert_eq!(kept["context"]["note"], "yes");
        assert_eq!(kept["subject"]["id"], "s");
        assert!(token_digest(jwt).starts_with("redacted:sha256:"));
        assert_eq!(token_digest(&token_digest(jwt)), token_digest(jwt));
        // What is kept still validates as a request.
        assert!(Request::from_value(kept).is_ok());
    }

    /// The digest an `Idempotency-Key` is bound to, as every earlier writ
    /// computed it: the parsed value's text.
    fn value_digest(text: &str) -> String {
        let limits = Limits {
            max_bytes: usize::MAX,
            max_depth: MAX_JSON_DEPTH,
        };
        let value = json::read(text.as_bytes(), limits).expect("a JSON document");
        crate::hex::prefixed(
            "sha256:",
            &sha2::Sha256::digest(value.to_string().as_bytes()),
        )
    }

    #[test]
    fn the_key_digest_is_the_one_earlier_versions_stored() {
        let bodies = [
            r#"{"subject":{"id":"s"},"action":"deploy"}"#,
            "{ \"subject\" : { \"id\" : \"s\" } ,\n\t\"action\":\"deploy\" }  ",
            r#"{"action":"deploy","subject":{"id":"s"},"credential_ref":"cr-1"}"#,
            // Escapes written differently, non-ASCII, control characters.
            r#"{"subject":{"id":"\u0073\/x"},"context":{"n":"caf\u00e9 \u2603 \ud83d\ude00","c":"\u0001\b\f\n\r\t\"\\"}}"#,
            "{\"subject\":{\"id\":\"café ☃ 😀\"}}",
            // Numbers in every form the reader takes.
            r#"{"context":{"a":0,"b":-0,"c":1.0,"d":1e2,"e":1E-7,"f":-12.50,"g":18446744073709551615,"h":18446744073709551616,"i":-9223372036854775808,"j":0.1,"k":123456789012345678901234567890,"l":5e-324,"m":1.7976931348623157e308}}"#,
            r#"{"context":{"list":[1,[true,false,null],{},[],{"x":[{"y":"z"}]}],"o":{"b":1,"a":2}}}"#,
        ];
        for body in bodies {
            assert_eq!(body_digest(body), Some(value_digest(body)), "{body}");
        }
        // Spacing and key order: the same as before, spacing ignored, order
        // kept.
        assert_eq!(body_digest(bodies[0]), body_digest(bodies[1]));
        assert_ne!(
            body_digest(r#"{"a":1,"b":2}"#),
            body_digest(r#"{"b":2,"a":1}"#)
        );
        assert_eq!(
            value_digest(r#"{"a":1,"b":2}"#),
            body_digest(r#"{ "a" : 1 , "b" : 2 }"#).expect("a digest")
        );
        // A key stored by an earlier writ for this body (its digest, taken
        // from that version's code) still matches.
        assert_eq!(
            body_digest(r#"{"subject": {"id": "s"}, "action": "deploy"}"#).expect("a digest"),
            crate::hex::prefixed(
                "sha256:",
                &sha2::Sha256::digest(br#"{"subject":{"id":"s"},"action":"deploy"}"#)
            )
        );
        assert_eq!(body_digest("{} x"), None);
        assert_eq!(body_digest(""), None);
        let example = include_str!("../../../examples/ci-deploy.json");
        assert_eq!(body_digest(example), Some(value_digest(example)));
    }

    #[test]
    fn the_stored_request_is_written_as_its_value_would_be() {
        let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let plain = [
            include_str!("../../../examples/ci-deploy.json").to_owned(),
            json!({
                "subject": {"id": "s", "zeta": 1, "alpha": {"b": [1.5, "a.b.c", "x", 1e300, -7], "a": true}},
                "action": "deploy",
                "resource": {"id": "r", "extra": "caf\u{e9} \"q\" \\ \n"},
                "intent": {"task": "t", "actions": ["a", "b"]},
                "environment": {"time": "2026-11-22T10:00:00Z"},
                "requested": {"scope": ["s:1", "s:2"], "ttl": 60},
                "context": {"recent_issuances": 3, "risk_score": 20, "note": "not.a.jws"}
            })
            .to_string(),
        ];
        // Bodies as a broker might send them: any key order, spacing,
        // escapes, unicode, numbers, strings with dots, no context; each
        // with the ledger's count put in as the issuance does (replacing a
        // broker's value where it has one).
        let awkward = [
            r#"{"context":{"z":[],"recent_issuances":"many"},"requested":{"ttl":60,"scope":[]},"subject":{"kind":"ci","id":"a\u0041\n\t\"b\"/\/"}}"#,
            r#"{ "subject" : { "id" : "caf\u00e9 \u2603 \ud83d\ude00 \u0000 \u001f é" } ,
	"action":"read" }"#,
            r#"{"subject":{"id":"s","n":[0,-0,1.0,1e2,-1.5E-3,12345678901234567890,0.1]},"environment":{"time":"2026-11-22T10:00:00+02:00","zone":[{}]}}"#,
            r#"{"subject":{"id":"a.b.c"},"resource":{"id":"x.y.z","k":"e30.e30.e30"},"context":{"d":"eyJ4IjoxfQ.eyJ4IjoxfQ.sig","e":"..","f":"a..b"}}"#,
            r#"{"subject":{"id":"s"},"context":{}}"#,
            r#"{"subject":{"id":"s"},"sensitivity":"restricted","intent":{"actions":["a","b"],"objective_changed":false}}"#,
        ];
        // Every field of every struct: with a subject token, nothing is
        // written straight out (the token must become its digest).
        let every = json!({
            "context": {"b": 1, "a": [[], {"y": 2, "x": "\u{1}"}]},
            "requested": {"ttl": 18446744073709551615_u64, "scope": ["a:x", "b:\"c"]},
            "sensitivity": "internal",
            "environment": {"more": 2.5, "time": "2026-11-22T10:00:00Z", "broker": "b", "name": "n"},
            "intent": {"more": "m", "actions": [], "objective_changed": true, "objective": "o", "id": "i", "task": "t"},
            "resource": {"more": {}, "owner": "o", "kind": "k", "id": "i"},
            "action": "a\u{7f}",
            "subject": {
                "more": false, "act": [{"id": "x", "kind": "agent"}], "state": "active",
                "token": "t", "environment": "e", "owner": "o", "shared": false,
                "attested": true, "auth": "a", "kind": "k", "id": "i", "zz": "\u{1f}"
            }
        });
        let (request, _) = Request::from_value(every).expect("a request");
        assert_eq!(recorded_text(&request), None, "a subject token is redacted");
        for text in plain.iter().map(String::as_str).chain(awkward) {
            let (mut request, _) = Request::parse_json(text).expect("a request");
            for count in [None, Some(0_u64), Some(u64::MAX)] {
                if let Some(count) = count {
                    request
                        .context
                        .insert(RECENT_ISSUANCES.to_owned(), Value::from(count));
                }
                let written = recorded_text(&request).expect("nothing to redact");
                assert_eq!(written, recorded(&request).to_string(), "{text}");
                assert_eq!(
                    written,
                    serde_json::to_string(&request).expect("text"),
                    "{text}"
                );
            }
        }
        for redacted in [
            json!({"subject": {"id": "s", "token": "opaque"}, "action": "a"}),
            json!({"subject": {"id": "s"}, "action": "a", "context": {"approval": jwt}}),
            json!({"subject": {"id": "s", "x": [{"y": jwt}]}, "action": "a"}),
        ] {
            let (request, _) = Request::from_value(redacted.clone()).expect("a request");
            assert_eq!(recorded_text(&request), None, "{redacted}");
        }
        assert!(holds_compact_jws(&json!({ "a": jwt }).to_string()));
        assert!(holds_compact_jws(&json!([1, jwt, "x"]).to_string()));
        assert!(holds_compact_jws(&json!({ jwt: 1 }).to_string()));
        // Two dots are needed, not enough: `e30` is `{}`, which has no `alg`.
        assert!(!holds_compact_jws(
            &json!({ "a": "e30.e30.e30", "b": "a.b.c", "c": format!("{jwt}.x") }).to_string()
        ));
        assert!(!holds_compact_jws(
            &json!({ "a": "x.y", "b": "" }).to_string()
        ));
        // A JWS inside a longer string is not one (as `redact_tokens` has it).
        assert!(!holds_compact_jws(
            &json!({ "a": format!("Bearer {jwt}") }).to_string()
        ));
    }

    #[test]
    fn the_count_is_written_as_the_whole_object_would_be() {
        for from_broker in [None, Some(json!(99)), Some(json!("a \"quoted\" one"))] {
            let rest = json!({
                "source": "ledger",
                "window_seconds": 3600,
                "window_from": "--repeat-window",
                "ignored_from_request": from_broker,
            })
            .to_string();
            let whole = json!({
                "value": 7,
                "source": "ledger",
                "window_seconds": 3600,
                "window_from": "--repeat-window",
                "ignored_from_request": from_broker,
            });
            assert_eq!(count_object(7, &rest), whole.to_string());
            assert_eq!(
                count_rest(3600, "--repeat-window", from_broker.as_ref()),
                rest
            );
        }
        for from_broker in [
            None,
            Some(json!({"b": [1, "x\u{1}"], "a": -2.5})),
            Some(json!(u64::MAX)),
        ] {
            let window_from = "policy \"constant\" repeat_window \u{e9}";
            let rest = json!({
                "source": "ledger",
                "window_seconds": 0,
                "window_from": window_from,
                "ignored_from_request": from_broker,
            })
            .to_string();
            assert_eq!(count_rest(0, window_from, from_broker.as_ref()), rest);
        }
        let id = crate::ledger::new_grant_id();
        let mut text = Vec::new();
        json_string(&mut text, &id);
        assert_eq!(utf8(text), Value::from(id).to_string());
        assert_eq!(count_object(0, "{}"), r#"{"value":0}"#);
    }

    #[test]
    fn queries_decode() {
        assert_eq!(percent_decode("spiffe%3A%2F%2Fa%2Fb"), "spiffe://a/b");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        let filter = parse_filter("subject=s&state=live&limit=5&after=x").expect("parses");
        assert_eq!(filter.subject.as_deref(), Some("s"));
        assert_eq!(filter.state, Some(GrantState::Live));
        assert_eq!(filter.limit, 5);
        assert!(parse_filter("state=gone").is_err());
        assert!(parse_filter("limit=0").is_err());
        assert!(parse_filter("colour=red").is_err());
    }
}
