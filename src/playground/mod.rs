//! `writ playground`: one page where an author edits a policy and a
//! request and sees, as they type, the diagnostics, the decision, the
//! `--explain` text and the decision tree (docs/editors.md).
//!
//! The page ([`PAGE`], plain HTML and JavaScript, no build step) only
//! sends the texts to `POST /v1/playground/evaluate` and shows what comes
//! back: every answer is the engine's, through [`evaluate`]. The endpoint
//! exists only on this server, which binds loopback unless told otherwise;
//! `writ serve` has no such route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::diagnostics::Diagnostics;
use crate::explain::{explain, Style};
use crate::source::SourceFile;
use crate::{Engine, Request};

/// The page, embedded at build time.
pub const PAGE: &str = include_str!("page.html");

/// Largest body `POST /v1/playground/evaluate` reads, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// Largest policy text evaluated, in bytes.
pub const MAX_POLICY: usize = 256 * 1024;

/// Largest data text evaluated, in bytes.
pub const MAX_DATA: usize = 512 * 1024;

/// Most rules whose tree is drawn (Graphviz takes long on large trees;
/// `writ tree --svg` draws any).
pub const MAX_DRAWN_RULES: usize = 300;

/// The name the policy text has in diagnostics and traces.
const POLICY_NAME: &str = "playground.writ";

/// Evaluations at once; more wait their turn.
const CONCURRENCY: usize = 2;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the playground on `addr` until Ctrl-C or SIGTERM.
pub fn run(addr: SocketAddr) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // The deepest expression the parser accepts needs up to 8 MiB of
        // stack in a debug build (docs/security.md); evaluations run on
        // the blocking threads, which get this too.
        .thread_stack_size(8 * 1024 * 1024)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on `{addr}`: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    eprintln!("writ: playground on http://{local}/");
    if !local.ip().is_loopback() {
        eprintln!("writ: warning: the playground is reachable from other machines (`--addr {local}`); it runs Graphviz on what they send");
    }
    let router = router();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT);
    let stop = stop_signal()?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let service = TowerToHyperService::new(router.clone());
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        }
    }
    eprintln!("writ: playground stopped");
    Ok(())
}

#[cfg(unix)]
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The playground's routes: the page and the endpoint.
fn router() -> Router {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    Router::new()
        .route("/", get(page))
        .route("/v1/playground/evaluate", post(evaluate_route))
        .fallback(not_found)
        .with_state(permits)
}

async fn page() -> Response {
    let mut response = Response::new(Body::from(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page loads nothing from elsewhere, and nothing may frame it.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "the playground has `/` and `POST /v1/playground/evaluate`".to_owned(),
    )
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    reply(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn reply(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn evaluate_route(State(permits): State<Arc<Semaphore>>, request: HttpRequest) -> Response {
    let (parts, body) = request.into_parts();
    // JSON only: a cross-site form cannot send it without a preflight.
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send `Content-Type: application/json`".to_owned(),
        );
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
    };
    let bytes: Bytes =
        match tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body did not arrive in time".to_owned(),
                )
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the body: {e}"),
                )
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
    let input: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the body is not JSON: {e}"),
            )
        }
    };
    let Ok(_permit) = permits.acquire().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the playground is stopping".to_owned(),
        );
    };
    match tokio::task::spawn_blocking(move || evaluate(&input)).await {
        Ok(Ok(answer)) => reply(StatusCode::OK, &answer),
        Ok(Err(message)) => error(StatusCode::BAD_REQUEST, "bad_input", message),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the evaluation failed".to_owned(),
        ),
    }
}

/// Evaluates `{"policy": TEXT, "request": JSON TEXT, "data": JSON TEXT?}`:
/// the policy's diagnostics, and when it compiles, the decision on the
/// request, its explanation and the decision tree as SVG.
///
/// `Err` names what is wrong with the input's shape or size; what is wrong
/// with the policy, the request or the data is in the answer.
pub fn evaluate(input: &Value) -> Result<Value, String> {
    let text = |key: &str, limit: usize| -> Result<Option<&str>, String> {
        match input.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.len() > limit => {
                Err(format!("`{key}` is longer than {limit} bytes"))
            }
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("`{key}` is a string")),
        }
    };
    if !input.is_object() {
        return Err(
            "the body is an object: {\"policy\": \"...\", \"request\": \"...\", \"data\": \"...\"}"
                .to_owned(),
        );
    }
    let policy = text("policy", MAX_POLICY)?.unwrap_or("");
    let request = text("request", crate::request::MAX_REQUEST_BYTES)?;
    let data_text = text("data", MAX_DATA)?.filter(|d| !d.trim().is_empty());

    let mut answer = json!({
        "diagnostics": [],
        "rendered": "",
        "decision": null,
        "request_error": null,
        "data_error": null,
        "explain": null,
        "tree_svg": null,
        "tree_error": null,
    });
    let data = match data_text.map(|d| crate::load::parse_data("data", d.as_bytes())) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(message)) => {
            answer["data_error"] = json!(message);
            return Ok(answer);
        }
    };
    let engine = match Engine::compile([(POLICY_NAME, policy)], data.as_ref()) {
        Ok(engine) => engine,
        Err(found) => {
            answer["diagnostics"] = diagnostics(policy, &found);
            answer["rendered"] = json!(found.render(false));
            return Ok(answer);
        }
    };
    let rules = engine.policy().rules.len();
    if rules > MAX_DRAWN_RULES {
        answer["tree_error"] = json!(format!("{rules} rules are more than the {MAX_DRAWN_RULES} drawn here; `writ tree --svg` draws them"));
    } else {
        match crate::cli::dot_to_svg(&engine.tree().to_dot(engine.policy())) {
            Ok(svg) => answer["tree_svg"] = json!(svg),
            Err(message) => answer["tree_error"] = json!(message),
        }
    }
    let Some(request) = request.filter(|r| !r.trim().is_empty()) else {
        answer["request_error"] = json!("write a request (JSON) to see a decision");
        return Ok(answer);
    };
    match Request::from_json(request) {
        Ok(request) => {
            let decision = engine.decide(&request);
            answer["decision"] = serde_json::from_str(&decision.to_json()).unwrap_or(Value::Null);
            answer["explain"] = json!(explain(&decision, &engine, Style::new(false)));
        }
        Err(error) => answer["request_error"] = json!(error.to_string()),
    }
    Ok(answer)
}

/// The diagnostics with 1-based lines and columns (in characters) of their
/// first label, for the page.
fn diagnostics(policy: &str, found: &Diagnostics) -> Value {
    let source = SourceFile::new(POLICY_NAME, policy);
    let items: Vec<Value> = found
        .reports()
        .iter()
        .map(|report| {
            let label = report.labels().and_then(|mut labels| labels.next());
            let (start, end) = label
                .as_ref()
                .map_or((0, 0), |l| (l.offset(), l.offset() + l.len()));
            let position = |offset: usize| {
                source.line_col(u32::try_from(offset.min(policy.len())).unwrap_or(u32::MAX))
            };
            let (line, column) = position(start);
            let (end_line, end_column) = position(end);
            json!({
                "code": report.code().map(|c| c.to_string()),
                "severity": match report.severity() {
                    Some(miette::Severity::Warning) => "warning",
                    Some(miette::Severity::Advice) => "advice",
                    _ => "error",
                },
                "message": report.to_string(),
                "label": label.as_ref().and_then(|l| l.label()).map(str::to_owned),
                "help": report.help().map(|h| h.to_string()),
                "line": line,
                "column": column,
                "end_line": end_line,
                "end_column": end_column,
            })
        })
        .collect();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_with_an_error_gives_its_diagnostic_and_no_decision() {
        let answer = evaluate(&json!({
            "policy": "permit if action == \"read\" and sensitivity <= internall;",
            "request": "{\"action\": \"read\"}",
        }));
        let answer = answer.unwrap_or_default();
        assert_eq!(answer["decision"], Value::Null);
        let first = &answer["diagnostics"][0];
        assert_eq!(first["code"], "writ::check::unknown_name", "{answer}");
        assert_eq!(
            (first["line"].as_u64(), first["column"].as_u64()),
            (Some(1), Some(47))
        );
        assert!(answer["rendered"]
            .as_str()
            .unwrap_or("")
            .contains("internall"));
    }

    #[test]
    fn a_policy_that_compiles_gives_the_decision_and_its_explanation() {
        let answer = evaluate(&json!({
            "policy": "@id(\"reader\")\npermit if action == \"read\" grant [\"read:x\"] for 5m;",
            "request": "{\"action\": \"read\"}",
        }))
        .unwrap_or_default();
        assert_eq!(answer["diagnostics"], json!([]));
        assert_eq!(answer["decision"]["decision"], "allow", "{answer}");
        assert_eq!(answer["decision"]["reasons"], json!(["reader"]));
        assert!(answer["explain"].as_str().unwrap_or("").contains("reader"));

        let refused = evaluate(&json!({"policy": "permit;", "request": "{\"actoin\": 1}"}))
            .unwrap_or_default();
        assert_eq!(refused["decision"], Value::Null);
        assert!(
            refused["request_error"]
                .as_str()
                .is_some_and(|e| e.contains("actoin")),
            "{refused}"
        );
    }

    #[test]
    fn shapes_and_sizes_are_bounded() {
        assert!(evaluate(&json!([1])).is_err());
        assert!(evaluate(&json!({"policy": 3})).is_err());
        let huge = "x".repeat(MAX_POLICY + 1);
        assert!(evaluate(&json!({"policy": huge})).is_err());
        let broken = evaluate(&json!({"policy": "permit;", "data": "{"})).unwrap_or_default();
        assert!(broken["data_error"].is_string(), "{broken}");
        let list = evaluate(&json!({"policy": "permit;", "data": "[1]"})).unwrap_or_default();
        assert_eq!(
            list["diagnostics"].as_array().map(Vec::len),
            Some(1),
            "{list}"
        );
        assert_eq!(list["decision"], Value::Null);
    }
}
