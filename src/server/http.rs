//! Routes and handlers.
//!
//! Every handler reads its body itself, under the size limit and the request
//! timeout, so that each way a body can be wrong gets a JSON error:
//! `{"error": {"code": "...", "message": "..."}}`. No error path allows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Map, Value};

use super::authzen::{self, Parts, Semantic};
use super::log::{self as decision_log, Entry};
use super::metrics::{Endpoint, ErrorCode};
use super::state::Loaded;
use super::{now_rfc3339, App, ShapeError};
use crate::decision::Decision;
use crate::request::{Prepared, Request, RequestError};

/// Most requests in one batch (either batch endpoint).
pub(crate) const MAX_BATCH: usize = 1000;

const REQUEST_ID: &str = "x-request-id";
const DECISION_ID: &str = "x-writ-decision-id";

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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
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
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = json_body(body.to_string());
        *response.status_mut() = self.status;
        if matches!(
            self.code,
            ErrorCode::BodyTooLarge | ErrorCode::Timeout | ErrorCode::BadBody
        ) {
            // The rest of the body was not read; do not reuse the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn json_body(text: impl Into<Body>) -> Response {
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn request_error(error: &RequestError) -> ApiError {
    ApiError::invalid(error.to_string())
}

/// Reads the body under the size limit and the timeout, and checks that it
/// is JSON.
async fn read_json(app: &App, request: HttpRequest) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
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
    let read = Limited::new(body, app.max_body).collect();
    let bytes = match tokio::time::timeout(app.request_timeout, read).await {
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
    check_json(&bytes)?;
    Ok((parts.headers, bytes))
}

/// UTF-8, not empty, not too deep. JSON syntax is checked by the endpoint's
/// own parse, which tells "not JSON" (`malformed_json`) from "JSON of the
/// wrong shape" (`invalid_request`).
fn check_json(bytes: &[u8]) -> Result<(), ApiError> {
    let malformed =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, message);
    let text = std::str::from_utf8(bytes)
        .map_err(|_| malformed("the request body is not UTF-8".to_owned()))?;
    if text.trim().is_empty() {
        return Err(malformed(
            "the request body is empty; send a JSON object".to_owned(),
        ));
    }
    // Nesting needs no check here: serde_json stops at 128 levels, and
    // every request is held to `MAX_JSON_DEPTH` before it is read into
    // writ's types.
    Ok(())
}

/// Parses and validates a contract request. Only a body that fails is read
/// a second time, to tell "not JSON" (`malformed_json`) from "JSON of the
/// wrong shape" (`invalid_request`): a body the parse accepts is JSON, and
/// its object fields are objects ([`Request::parse_json`] reads them as
/// maps only).
fn parse_request(bytes: &[u8]) -> Result<(Request, Prepared), ApiError> {
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    Request::parse_json(text).map_err(|error| match super::check_shape(text) {
        Ok(()) => request_error(&error),
        Err(ShapeError::Syntax(message)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the request body is not valid JSON: {message}"),
        ),
        Err(ShapeError::Invalid(error)) => request_error(&error),
    })
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
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
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// Decides one validated request (`prepared` is what validating it derived):
/// fills in the time, decides, counts, logs.
async fn decide_one(
    app: &App,
    loaded: &Loaded,
    (mut request, mut prepared): (Request, Prepared),
    endpoint: Endpoint,
    request_id: Option<&str>,
) -> (Decision, String) {
    let time_filled = request.environment.time.is_none();
    // The clock is read only when something needs it.
    let now = if time_filled || app.log.is_some() {
        now_rfc3339()
    } else {
        String::new()
    };
    if time_filled {
        prepared.time = crate::request::parse_time(&now);
        request.environment.time = Some(now.clone());
        app.metrics.time_filled();
    }
    let decision = loaded.engine.decide_prepared(&request, &prepared);
    app.metrics.decision(decision.is_allow());
    let decision_id = super::ids::next();
    if let Some(log) = &app.log {
        let entry = Entry {
            decision_id: &decision_id,
            time: &now,
            endpoint: endpoint.path(),
            request_id,
            time_filled,
        };
        log.send(decision_log::line(
            &entry,
            &request,
            &decision,
            &app.redaction,
        ))
        .await;
    }
    (decision, decision_id)
}

async fn decide(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let result = async {
        let (_, body) = read_json(&app, request).await?;
        let parsed = parse_request(&body)?;
        let loaded = app.current.load_full();
        let (decision, decision_id) =
            decide_one(&app, &loaded, parsed, Endpoint::Decide, id.as_deref()).await;
        // The contract's decision, with the id of its log line last.
        let mut response = json_body(decision.json_bytes(Some(&decision_id)));
        if let Ok(value) = HeaderValue::from_str(&decision_id) {
            response.headers_mut().insert(DECISION_ID, value);
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
        let (_, body) = read_json(&app, request).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
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
        for (index, item) in items.iter().enumerate() {
            let request = super::request_from_value(item).map_err(|error| match error {
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
        for (index, request) in requests.into_iter().enumerate() {
            let (decision, decision_id) =
                decide_one(&app, &loaded, request, Endpoint::Batch, id.as_deref()).await;
            if index > 0 {
                out.push(b',');
            }
            decision.write_json(&mut out, Some(&decision_id));
        }
        out.push(b']');
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

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            "the request must be a JSON object with `subject`, `action` and `resource`",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

async fn evaluation(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let result = async {
        let (_, body) = read_json(&app, request).await?;
        let object = parse_object(&body)?;
        let parsed = authzen::to_request(Parts::of(&object))
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let loaded = app.current.load_full();
        let (decision, decision_id) =
            decide_one(&app, &loaded, parsed, Endpoint::Evaluation, id.as_deref()).await;
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
        let (_, body) = read_json(&app, request).await?;
        let object = parse_object(&body)?;
        let defaults = Parts::of(&object);
        let loaded = app.current.load_full();
        let items = match object.get("evaluations") {
            // No `evaluations`: one evaluation, answered like the single
            // endpoint.
            None | Some(Value::Null) => {
                let parsed =
                    authzen::to_request(defaults).map_err(|e| ApiError::invalid(e.to_string()))?;
                let (decision, decision_id) =
                    decide_one(&app, &loaded, parsed, Endpoint::Evaluations, id.as_deref()).await;
                return Ok(json_body(
                    authzen_result(&decision, &decision_id).to_string(),
                ));
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(ApiError::invalid(
                    "invalid request at `evaluations`: expected an array",
                ))
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
                    let (decision, decision_id) =
                        decide_one(&app, &loaded, parsed, Endpoint::Evaluations, id.as_deref())
                            .await;
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
    let loaded = app.current.load();
    json_body(json!({"status": "ready", "digest": loaded.engine.digest()}).to_string())
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let loaded = app.current.load_full();
    let mut response = Response::new(Body::from(app.metrics.render(&loaded)));
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
