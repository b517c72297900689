//! Routes and handlers.
//!
//! Every handler reads its body itself, under the size limit and the request
//! timeout, and through the one JSON reader ([`crate::request::json`]), so
//! that each way a body can be wrong gets a JSON error:
//! `{"error": {"code": "...", "message": "..."}}`. No error path allows.
//! Request heads that are too large for the limits here (but within what
//! hyper itself parses) get JSON errors from [`guard`] too.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::future::Either;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use serde_json::{json, Map, Value};

mod fleet;
mod grants;
mod lifecycle;

pub(crate) use lifecycle::{spawn_redecision, spawn_sweeper};

use super::authzen::{self, Parts, Semantic};
use super::log::{self as decision_log, Entry};
use super::metrics::{Endpoint, ErrorCode};
use super::state::Loaded;
use super::{now_rfc3339, App};
use crate::decision::Decision;
use crate::request::json::{self, JsonError, Limits};
use crate::request::{Prepared, Request, RequestError, MAX_JSON_DEPTH};

/// Most requests in one batch (either batch endpoint).
pub(crate) const MAX_BATCH: usize = 1000;

/// Longest request target (path and query) answered with JSON; longer is
/// `414`. hyper itself refuses targets over 65,534 bytes, with no body.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;

/// Most request header bytes (names and values) answered with JSON; more
/// is `431`. hyper itself refuses heads over [`HYPER_MAX_HEAD`].
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Most request headers answered with JSON; more is `431`.
pub(crate) const MAX_HEADERS: usize = 100;

/// The head size hyper reads before it gives up with an empty `431`: well
/// above [`MAX_URI_BYTES`] + [`MAX_HEADER_BYTES`], so that the limits here
/// are the ones clients meet.
pub(crate) const HYPER_MAX_HEAD: usize = 256 * 1024;

/// The header count hyper parses before it gives up with an empty `431`:
/// twice [`MAX_HEADERS`], so that a client with too many headers gets JSON.
/// Not more: hyper sets up room for this many headers on every request
/// (at 1,000 that was about a tenth of the server's instructions per
/// decision, docs/performance.md).
pub(crate) const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;

/// Named once, not parsed from a string on every lookup and insert (a
/// `&str` name is checked and hashed byte by byte each time).
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static DECISION_ID: HeaderName = HeaderName::from_static("x-writ-decision-id");

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/decide/batch", post(decide_batch))
        .route("/access/v1/evaluation", post(evaluation))
        .route("/access/v1/evaluations", post(evaluations))
        .route("/v1/policy", get(policy))
        .route("/v1/policy/reload", post(reload_policy))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/grants", post(grants::issue).get(grants::list))
        .route("/v1/grants/recheck", post(lifecycle::recheck))
        .route("/v1/revocations", get(lifecycle::revocations))
        .route(
            "/v1/grants/{grant_id}",
            get(grants::show).delete(grants::revoke),
        )
        .route("/v1/events", post(grants::event))
        .merge(fleet::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Refuses, with a JSON body, request heads over the server's limits.
async fn guard(State(app): State<Arc<App>>, request: HttpRequest, next: Next) -> Response {
    match refuse_head(&app, request.uri(), request.headers()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// The answer to a request head over the server's limits (target length,
/// header count and bytes), if it is; [`guard`] and [`Service`] ask it
/// before anything else.
fn refuse_head(app: &App, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                ErrorCode::UriTooLong,
                format!(
                    "the request target is {target} bytes, more than the limit of {MAX_URI_BYTES}"
                ),
            )
            .into_response(app),
        );
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!(
                "the request has {} headers of {bytes} bytes; the limits are {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response(app));
    }
    None
}

/// A connection's service: `POST /v1/decide` goes straight to [`decide`],
/// every other request through the router.
///
/// The router cost a decision about 7,000 instructions of about 76,000
/// (callgrind, docs/performance.md "The server at 40,000/s"): matching the
/// path, boxing the middleware's and the handler's futures, cloning the
/// route's service. The direct path does what the router does for that
/// route and nothing else: [`refuse_head`] first (as [`guard`]), then
/// [`decide`], then `Content-Length` from the body's exact size when the
/// answer has none (as axum's route does), so the answer is the same
/// bytes. Any other method, path or spelling of it (a trailing slash, a
/// doubled one) is the router's, with its 404 and 405.
#[derive(Clone)]
pub(crate) struct Service {
    app: Arc<App>,
    router: TowerToHyperService<Router>,
}

/// A decision answered without the router.
type Direct = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service {
    /// The service of one connection, over the server's router.
    pub(crate) fn new(app: Arc<App>, router: Router) -> Service {
        Service {
            app,
            router: TowerToHyperService::new(router),
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Direct, TowerToHyperServiceFuture<Router, hyper::Request<Incoming>>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        if request.method() != Method::POST || request.uri().path() != "/v1/decide" {
            return Either::Right(self.router.call(request));
        }
        let app = self.app.clone();
        Either::Left(Box::pin(async move {
            let request = request.map(Body::new);
            let mut response = match refuse_head(&app, request.uri(), request.headers()) {
                Some(refused) => refused,
                None => decide(State(app), request).await,
            };
            set_content_length(&mut response);
            Ok(response)
        }))
    }
}

/// `Content-Length` from the body's exact size, unless the answer has one:
/// what axum's route adds to every answer it returns.
fn set_content_length(response: &mut Response) {
    if response.headers().contains_key(header::CONTENT_LENGTH) {
        return;
    }
    if let Some(size) = response.body().size_hint().exact() {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
}

/// A refused request.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    fn into_response(self, app: &App) -> Response {
        app.metrics.error(self.code);
        let mut response = json_body(error_body(self.code, &self.message));
        *response.status_mut() = self.status;
        if matches!(
            self.code,
            ErrorCode::DecisionLogUnavailable | ErrorCode::LedgerUnavailable
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self.code,
            ErrorCode::BodyTooLarge
                | ErrorCode::Timeout
                | ErrorCode::BadBody
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::UriTooLong
                | ErrorCode::HeadersTooLarge
        ) {
            // The rest of the body was not read; do not reuse the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// `{"error":{"code":"...","message":"..."}}`, written straight out: the
/// bytes `serde_json` writes for that object (the message escaped as
/// serde_json escapes any string), without building a `Value` first
/// (about 3,900 instructions of an error answer, callgrind).
fn error_body(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + message.len());
    out.extend_from_slice(b"{\"error\":{\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    // Writing a string into a `Vec` does not fail.
    let _ = serde_json::to_writer(&mut out, message);
    out.extend_from_slice(b"}}");
    out
}

fn json_body(text: impl Into<Body>) -> Response {
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn request_error(error: RequestError) -> ApiError {
    match error {
        RequestError::Json(error) => json_error(error),
        other => ApiError::invalid(other.to_string()),
    }
}

/// The JSON reader's refusals: not JSON (`malformed_json`), JSON writ will
/// not take (`invalid_request`), too large (`413`).
fn json_error(error: JsonError) -> ApiError {
    match error {
        JsonError::TooLarge { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {limit} bytes"),
        ),
        JsonError::Empty => malformed("the request body is empty; send a JSON object".to_owned()),
        JsonError::NotUtf8 { offset } => malformed(format!(
            "the request body is not UTF-8 (invalid byte at offset {offset})"
        )),
        JsonError::Syntax { message } => {
            malformed(format!("the request body is not valid JSON: {message}"))
        }
        error @ (JsonError::DuplicateKey { .. } | JsonError::TooDeep { .. }) => {
            ApiError::invalid(format!("invalid request: {error}"))
        }
    }
}

fn malformed(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, message)
}

/// Whether `Content-Type` declares JSON: `application/json` or
/// `application/*+json`, any case, with parameters; a `charset` other than
/// UTF-8 is not JSON (RFC 8259 section 8.1).
fn is_json(content_type: &HeaderValue) -> bool {
    // What nearly every client sends, known without lowercasing a copy
    // (about 700 instructions of a decision otherwise).
    if content_type.as_bytes() == b"application/json" {
        return true;
    }
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some(("application", subtype)) = essence.split_once('/') else {
        return false;
    };
    if subtype != "json" && !(subtype.len() > 5 && subtype.ends_with("+json")) {
        return false;
    }
    parts.all(|parameter| match parameter.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// A decision endpoint's body must be declared JSON; a missing
/// `Content-Type` is refused too, because a browser can send a body without
/// one (or as `text/plain`) across origins with no CORS preflight.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) if is_json(value) => Ok(()),
        Some(value) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "`Content-Type: {}` is not JSON; send `Content-Type: application/json`",
                String::from_utf8_lossy(value.as_bytes())
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the request has no `Content-Type`; send `Content-Type: application/json`",
        )),
    }
}

/// Checks the content type, reads the body under the size limit and the
/// timeout, and reads it as one JSON document (at most `max_depth` deep).
async fn read_json(
    app: &App,
    request: HttpRequest,
    max_depth: usize,
) -> Result<(HeaderMap, Value), ApiError> {
    let (headers, bytes) = read_body(app, request).await?;
    let limits = Limits {
        max_bytes: app.max_body,
        max_depth,
    };
    let value = json::read(&bytes, limits).map_err(json_error)?;
    Ok((headers, value))
}

/// Checks the content type and reads the body under the size limit and
/// the timeout.
async fn read_body(app: &App, request: HttpRequest) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {} bytes", app.max_body),
        )
    };
    if let Some(length) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > app.max_body as u64 {
            return Err(too_large());
        }
    }
    let mut read = std::pin::pin!(Limited::new(body, app.max_body).collect());
    // Nearly always the whole body came with the head and is read in one
    // poll: only a body still on its way needs the timer (whose set-up
    // and removal were about 400 instructions of every decision,
    // docs/performance.md "Server CPU, round 30").
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let read = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(app.request_timeout, read).await,
    };
    let bytes = match read {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::Timeout,
                format!(
                    "the request body did not arrive within {} ms",
                    app.request_timeout.as_millis()
                ),
            ))
        }
        Ok(Err(error)) => {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                return Err(too_large());
            }
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadBody,
                format!("cannot read the request body: {error}"),
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok((parts.headers, bytes))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
}

/// Finishes a decision endpoint: the latency, the error count, the echoed
/// request id.
fn finish(
    app: &App,
    endpoint: Endpoint,
    started: Instant,
    request_id: Option<&str>,
    result: Result<Response, ApiError>,
) -> Response {
    let mut response = match result {
        Ok(response) => {
            app.metrics.latency(endpoint, started.elapsed());
            response
        }
        Err(error) => error.into_response(app),
    };
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(REQUEST_ID.clone(), id);
    }
    response
}

/// Decides one validated request (`prepared` is what validating it derived):
/// fills in the time, decides, counts, and adds its log line to `lines`
/// (for [`record`]).
fn decide_one(
    app: &App,
    loaded: &Loaded,
    parsed: (Request, Prepared),
    endpoint: Endpoint,
    request_id: Option<&str>,
    lines: &mut Vec<String>,
) -> (Decision, String) {
    // The clock is read only when something needs it.
    let now = if parsed.0.environment.time.is_none() || app.log.is_some() {
        now_rfc3339()
    } else {
        String::new()
    };
    decide_at(
        app,
        loaded,
        parsed,
        endpoint.path(),
        request_id,
        &now,
        lines,
    )
}

/// What every decision endpoint does around the engine: fills in the time
/// from `now` when the request has none, verifies `subject.token` and the
/// approval (`--trust`) on the server's clock, decides, counts the
/// decision and, with a decision log, adds its line (under `endpoint`) to
/// `lines`. Returns the decision and its id.
pub(super) fn decide_at(
    app: &App,
    loaded: &Loaded,
    (mut request, mut prepared): (Request, Prepared),
    endpoint: &'static str,
    request_id: Option<&str>,
    now: &str,
    lines: &mut Vec<String>,
) -> (Decision, String) {
    let time_filled = request.environment.time.is_none();
    if time_filled {
        prepared.time = crate::request::parse_time(now);
        request.environment.time = Some(now.to_owned());
        app.metrics.time_filled();
    }
    // The token is checked on the server's clock, never the request's time.
    let attestation = app
        .trust
        .as_ref()
        .map(|trust| trust.apply(&mut request, crate::identity::Trust::now()));
    if let Some(attestation) = &attestation {
        attestation.prepare(&mut prepared);
    }
    let mut decision = loaded.engine.decide_prepared(&request, &prepared);
    if let Some(attestation) = attestation {
        attestation.annotate(&mut decision);
    }
    app.metrics.decision(decision.is_allow());
    let decision_id = super::ids::next();
    if app.log.is_some() {
        let entry = Entry {
            decision_id: &decision_id,
            time: now,
            endpoint,
            request_id,
            time_filled,
        };
        lines.push(decision_log::line(
            &entry,
            &request,
            &decision,
            &app.redaction,
        ));
    }
    (decision, decision_id)
}

/// Hands the lines of an answer's decisions to the decision log. With the
/// log required, a decision whose line was not written is not answered:
/// the whole answer becomes `503`.
async fn record(app: &App, lines: Vec<String>) -> Result<(), ApiError> {
    let Some(log) = &app.log else {
        return Ok(());
    };
    log.commit(lines).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DecisionLogUnavailable,
            "the decision could not be written to the decision log, which is required; it is not answered",
        )
    })
}

async fn decide(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let result = async {
        // One request: the reader's checking pass, then a typed parse
        // (`Request::parse_json`), without building a JSON value first.
        let (_, body) = read_body(&app, request).await?;
        let text = std::str::from_utf8(&body).map_err(|e| {
            json_error(JsonError::NotUtf8 {
                offset: e.valid_up_to(),
            })
        })?;
        let parsed = Request::parse_json(text).map_err(request_error)?;
        // No allocation unless a decision log takes the line.
        let mut lines = Vec::new();
        let (decision, decision_id) = {
            // A guard, not a clone of the `Arc` (no shared count touched),
            // dropped before the log is awaited.
            let loaded = app.current.load();
            decide_one(
                &app,
                &loaded,
                parsed,
                Endpoint::Decide,
                id.as_deref(),
                &mut lines,
            )
        };
        record(&app, lines).await?;
        // The contract's decision, with the id of its log line last.
        let mut response = json_body(decision.json_bytes(Some(&decision_id)));
        if let Ok(value) = HeaderValue::from_str(&decision_id) {
            response.headers_mut().insert(DECISION_ID.clone(), value);
        }
        Ok(response)
    }
    .await;
    finish(&app, Endpoint::Decide, started, id.as_deref(), result)
}

async fn decide_batch(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let result = async {
        let (_, value) = read_json(&app, request, MAX_JSON_DEPTH).await?;
        let Value::Array(items) = value else {
            return Err(ApiError::invalid(
                "a batch is a JSON array of requests: `[{...}, {...}]`",
            ));
        };
        if items.len() > MAX_BATCH {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BatchTooLarge,
                format!(
                    "the batch has {} requests, more than the limit of {MAX_BATCH}",
                    items.len()
                ),
            ));
        }
        // Every item is checked before any is decided: a batch is refused
        // whole, never half decided.
        let mut requests = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let request = Request::from_value(item).map_err(|error| match error {
                RequestError::Invalid { path, message } => {
                    let path = if path == "." {
                        format!("[{index}]")
                    } else {
                        format!("[{index}].{path}")
                    };
                    ApiError::invalid(format!("invalid request at `{path}`: {message}"))
                }
                other => ApiError::invalid(format!("request [{index}]: {other}")),
            })?;
            requests.push(request);
        }
        let loaded = app.current.load_full();
        let mut out = vec![b'['];
        let mut lines = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let (decision, decision_id) = decide_one(
                &app,
                &loaded,
                request,
                Endpoint::Batch,
                id.as_deref(),
                &mut lines,
            );
            if index > 0 {
                out.push(b',');
            }
            decision.write_json(&mut out, Some(&decision_id));
        }
        out.push(b']');
        record(&app, lines).await?;
        Ok(json_body(out))
    }
    .await;
    finish(&app, Endpoint::Batch, started, id.as_deref(), result)
}

/// The AuthZEN answer for one decision.
fn authzen_result(decision: &Decision, decision_id: &str) -> Value {
    json!({
        "decision": decision.is_allow(),
        "context": {
            "decision_id": decision_id,
            "scope": decision.scope,
            "ttl": decision.ttl,
            "obligations": decision.obligations,
            "reasons": decision.reasons,
        }
    })
}

fn parse_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid(
            "the request must be a JSON object with `subject`, `action` and `resource`",
        )),
    }
}

async fn evaluation(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let result = async {
        let (_, body) = read_json(&app, request, MAX_JSON_DEPTH).await?;
        let object = parse_object(body)?;
        let parsed = authzen::to_request(Parts::of(&object))
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let loaded = app.current.load_full();
        // No allocation unless a decision log takes the line.
        let mut lines = Vec::new();
        let (decision, decision_id) = decide_one(
            &app,
            &loaded,
            parsed,
            Endpoint::Evaluation,
            id.as_deref(),
            &mut lines,
        );
        record(&app, lines).await?;
        Ok(json_body(
            authzen_result(&decision, &decision_id).to_string(),
        ))
    }
    .await;
    finish(&app, Endpoint::Evaluation, started, id.as_deref(), result)
}

async fn evaluations(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let result = async {
        let (_, body) = read_json(&app, request, MAX_JSON_DEPTH).await?;
        let object = parse_object(body)?;
        let defaults = Parts::of(&object);
        let loaded = app.current.load_full();
        let mut lines = Vec::new();
        let items = match object.get("evaluations") {
            // No `evaluations`: one evaluation, answered like the single
            // endpoint.
            None => {
                let parsed =
                    authzen::to_request(defaults).map_err(|e| ApiError::invalid(e.to_string()))?;
                let (decision, decision_id) = decide_one(
                    &app,
                    &loaded,
                    parsed,
                    Endpoint::Evaluations,
                    id.as_deref(),
                    &mut lines,
                );
                record(&app, lines).await?;
                return Ok(json_body(
                    authzen_result(&decision, &decision_id).to_string(),
                ));
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "invalid request at `evaluations`: expected an array, found {}",
                    crate::request::json_kind(other)
                )))
            }
        };
        let semantic = authzen::semantic(&object).map_err(|e| ApiError::invalid(e.to_string()))?;
        if items.len() > MAX_BATCH {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BatchTooLarge,
                format!(
                    "`evaluations` has {} items, more than the limit of {MAX_BATCH}",
                    items.len()
                ),
            ));
        }
        let mut results = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let mapped = match item {
                Value::Object(item) => authzen::to_request(defaults.overridden_by(item)),
                _ => Err(authzen::MapError {
                    path: String::new(),
                    message: "expected an object".to_owned(),
                }),
            };
            let allowed = match mapped {
                Ok(parsed) => {
                    let (decision, decision_id) = decide_one(
                        &app,
                        &loaded,
                        parsed,
                        Endpoint::Evaluations,
                        id.as_deref(),
                        &mut lines,
                    );
                    results.push(authzen_result(&decision, &decision_id));
                    decision.is_allow()
                }
                Err(error) => {
                    // One bad item is denied with its error; the others
                    // are still decided (AuthZEN 1.0, evaluations errors).
                    let path = if error.path.is_empty() {
                        format!("evaluations[{index}]")
                    } else {
                        format!("evaluations[{index}].{}", error.path)
                    };
                    app.metrics.error(ErrorCode::InvalidRequest);
                    results.push(json!({
                        "decision": false,
                        "context": {"error": {
                            "status": 400,
                            "code": ErrorCode::InvalidRequest.as_str(),
                            "message": format!("invalid request at `{path}`: {}", error.message),
                        }}
                    }));
                    false
                }
            };
            let stop = match semantic {
                Semantic::ExecuteAll => false,
                Semantic::DenyOnFirstDeny => !allowed,
                Semantic::PermitOnFirstPermit => allowed,
            };
            if stop {
                break;
            }
        }
        record(&app, lines).await?;
        Ok(json_body(json!({"evaluations": results}).to_string()))
    }
    .await;
    finish(&app, Endpoint::Evaluations, started, id.as_deref(), result)
}

async fn policy(State(app): State<Arc<App>>) -> Response {
    let loaded = app.current.load_full();
    let rules: Vec<&str> = loaded
        .engine
        .policy()
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    json_body(
        json!({
            "digest": loaded.engine.digest(),
            "rules": rules,
            "files": loaded.files,
            "loaded_at": loaded.loaded_at,
            "reloads": app.metrics.reloads(),
            "reload_failures": app.metrics.reload_failures(),
        })
        .to_string(),
    )
}

/// `POST /v1/policy/reload`: an explicit reload, which may remove rules
/// and files. 200 when the set read was activated, 409 when it was refused;
/// either way the body names the digest now serving. The body of the
/// request is not read: the set comes from the files only.
async fn reload_policy(State(app): State<Arc<App>>) -> Response {
    let outcome = super::reload(&app, super::Trigger::Request).await;
    let mut response = json_body(outcome.to_json().to_string());
    if outcome.refusal.is_some() {
        *response.status_mut() = StatusCode::CONFLICT;
    }
    response
}

async fn health() -> Response {
    json_body("{\"status\":\"ok\"}".to_owned())
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        let mut response = json_body("{\"status\":\"shutting_down\"}".to_owned());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    if app.log.as_ref().is_some_and(|log| !log.ready()) {
        let mut response = json_body("{\"status\":\"decision_log_unavailable\"}".to_owned());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    if let Some(ledger) = &app.ledger {
        let ping = tokio::time::timeout(std::time::Duration::from_secs(2), ledger.ping()).await;
        let error = match ping {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("the grant ledger did not answer within 2 s".to_owned()),
        };
        if let Some(error) = error {
            let body = json!({"status": "ledger_unavailable", "error": error});
            let mut response = json_body(body.to_string());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
    }
    let loaded = app.current.load();
    json_body(json!({"status": "ready", "digest": loaded.engine.digest()}).to_string())
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let loaded = app.current.load_full();
    let mut page = app.metrics.render(&loaded);
    if let Some(trust) = &app.trust {
        super::metrics::identity(&mut page, &trust.counts());
    }
    if let Some(pusher) = &app.webhook {
        pusher.metrics.render(&mut page);
    }
    super::status::render(&app, &mut page).await;
    let mut response = Response::new(Body::from(page));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn not_found(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!(
            "no route for `{} {}`",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response(&app)
}

async fn method_not_allowed(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!(
            "`{}` is not allowed on `{}`",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response(&app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_the_bytes_of_the_json_object() {
        for message in [
            "plain",
            "quotes \" and \\ backslashes",
            "controls \n\t\u{1} and unicode é ✓",
            "",
        ] {
            for code in ErrorCode::ALL {
                let written = error_body(code, message);
                let built = json!({"error": {"code": code.as_str(), "message": message}});
                assert_eq!(
                    String::from_utf8(written).expect("UTF-8"),
                    built.to_string()
                );
            }
        }
    }

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "APPLICATION/JSON",
            " application/json ; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; boundary=x",
            "application/problem+json",
        ] {
            assert!(is_json(&HeaderValue::from_static(yes)), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonp",
            "application/+json",
            "json",
            "application/json; charset=latin1",
            "text/json",
            "",
        ] {
            assert!(!is_json(&HeaderValue::from_static(no)), "{no}");
        }
    }
}
