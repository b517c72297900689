//! The routes for running writ in a fleet (docs/fleet.md): the AuthZEN
//! metadata and Search APIs, and `GET /v1/status`. Registered by
//! [`routes`], merged into the main router.

use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use super::{
    decide_at, json_body, parse_object, read_json, record, request_id, ApiError, ErrorCode,
};
use crate::request::MAX_JSON_DEPTH;
use crate::server::metrics::Endpoint;
use crate::server::search::{self, Kind, Search};
use crate::server::{now_rfc3339, App};

/// The well-known path of the AuthZEN metadata (RFC 8615).
pub(crate) const WELL_KNOWN: &str = "/.well-known/authzen-configuration";

/// The fleet routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(WELL_KNOWN, get(configuration))
        .route(&format!("{WELL_KNOWN}/{{*tenant}}"), get(configuration))
        .route(Kind::Subject.path(), post(search_subject))
        .route(Kind::Resource.path(), post(search_resource))
        .route(Kind::Action.path(), post(search_action))
        .route("/v1/status", get(status))
}

/// `GET /.well-known/authzen-configuration`: the PDP's identifier and the
/// endpoints it serves. The identifier is `--authzen-pdp` when given (the
/// metadata is then served only at the well-known URL derived from it),
/// else `http://` and the request's `Host`.
async fn configuration(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let path = request.uri().path();
    let suffix = path.strip_prefix(WELL_KNOWN).unwrap_or_default();
    let pdp = match &app.authzen_pdp {
        Some(pdp) => {
            let wanted = pdp_path(pdp);
            if suffix.trim_end_matches('/') != wanted {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!(
                        "no AuthZEN metadata at `{path}`; this PDP's is at `{WELL_KNOWN}{wanted}`"
                    ),
                )
                .into_response(&app);
            }
            pdp.trim_end_matches('/').to_owned()
        }
        None => {
            if !suffix.is_empty() && suffix != "/" {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("no AuthZEN metadata at `{path}`; without `--authzen-pdp` it is at `{WELL_KNOWN}`"),
                )
                .into_response(&app);
            }
            match host(request.headers()) {
                Some(host) => format!("http://{host}"),
                None => {
                    return ApiError::invalid(
                        "the request has no usable `Host` header to name this PDP by; send one, or start writ with `--authzen-pdp URL`",
                    )
                    .into_response(&app)
                }
            }
        }
    };
    json_body(metadata(&pdp).to_string())
}

/// The metadata document for the PDP identified by `pdp` (no trailing `/`).
pub(crate) fn metadata(pdp: &str) -> Value {
    json!({
        "policy_decision_point": pdp,
        "access_evaluation_endpoint": format!("{pdp}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{pdp}/access/v1/evaluations"),
        "search_subject_endpoint": format!("{pdp}{}", Kind::Subject.path()),
        "search_resource_endpoint": format!("{pdp}{}", Kind::Resource.path()),
        "search_action_endpoint": format!("{pdp}{}", Kind::Action.path()),
    })
}

/// The path of a PDP identifier (`https://h/tenant1` gives `/tenant1`),
/// without a trailing `/`.
pub(crate) fn pdp_path(pdp: &str) -> &str {
    let rest = pdp.split_once("://").map_or(pdp, |(_, rest)| rest);
    rest.find('/')
        .map_or("", |at| &rest[at..])
        .trim_end_matches('/')
}

/// The `Host` header, if it is a plain `host[:port]` (or `[v6]:port`).
fn host(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then_some(value)
}

async fn search_subject(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    run_search(app, request, Kind::Subject).await
}

async fn search_resource(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    run_search(app, request, Kind::Resource).await
}

async fn search_action(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    run_search(app, request, Kind::Action).await
}

/// One search: the request checked (a missing or wrong field is `400`),
/// then each candidate from the page's offset decided until the page is
/// full or [`search::MAX_EXAMINED`] were decided. Every decision is logged,
/// as an evaluation's is.
async fn run_search(app: Arc<App>, request: HttpRequest, kind: Kind) -> Response {
    let started = std::time::Instant::now();
    let id = request_id(request.headers());
    let result: Result<Response, ApiError> = async {
        let (_, body) = read_json(&app, request, MAX_JSON_DEPTH).await?;
        let object = parse_object(body)?;
        // Up to MAX_EXAMINED decisions: on the blocking pool, so that the
        // workers keep answering meanwhile.
        let searching = app.clone();
        let request_id = id.clone();
        let (body, lines) = tokio::task::spawn_blocking(move || {
            search_page(&searching, kind, &object, request_id.as_deref())
        })
        .await
        .unwrap_or_else(|error| {
            // A thread that failed found nothing: fail closed.
            eprintln!("writ: a search could not be finished: {error}");
            Ok((
                json!({"page": {"next_token": "", "count": 0}, "results": []}),
                Vec::new(),
            ))
        })?;
        record(&app, lines).await?;
        Ok(json_body(body.to_string()))
    }
    .await;
    super::finish(&app, Endpoint::Search(kind), started, id.as_deref(), result)
}

/// Checks a search and decides its page: the answer, and the log lines of
/// the decisions made.
fn search_page(
    app: &App,
    kind: Kind,
    object: &Map<String, Value>,
    request_id: Option<&str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let loaded = app.current.load_full();
    let search = Search::parse(kind, object, loaded.engine.digest())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let candidates = search.candidates(loaded.engine.policy());
    let now = now_rfc3339();
    let mut results = Vec::new();
    let mut lines = Vec::new();
    let mut next = None;
    for (index, candidate) in candidates.iter().enumerate().skip(search.offset) {
        let examined = index - search.offset;
        if results.len() >= search.limit || examined >= search::MAX_EXAMINED {
            next = Some(index);
            break;
        }
        // The stand-in checked the request; a candidate's id cannot make
        // it invalid, and one that did would not be allowed.
        let Ok(parsed) = search.request_for(candidate) else {
            continue;
        };
        let (decision, _) = decide_at(
            app,
            &loaded,
            parsed,
            kind.path(),
            request_id,
            &now,
            &mut lines,
        );
        if decision.is_allow() {
            results.push(search.result(candidate));
        }
    }
    let mut page = Map::new();
    page.insert(
        "next_token".to_owned(),
        Value::String(next.map(|at| search.token(at)).unwrap_or_default()),
    );
    page.insert("count".to_owned(), Value::from(results.len()));
    let mut body = Map::new();
    body.insert("page".to_owned(), Value::Object(page));
    body.insert("results".to_owned(), Value::Array(results));
    Ok((Value::Object(body), lines))
}

/// `GET /v1/status`: what is serving and how the parts around it are.
async fn status(State(app): State<Arc<App>>) -> Response {
    let body = crate::server::status::report(&app).await;
    let mut response = json_body(body.to_string());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdp_paths() {
        assert_eq!(pdp_path("https://pdp.example.com"), "");
        assert_eq!(pdp_path("https://pdp.example.com/"), "");
        assert_eq!(pdp_path("https://pdp.example.com/tenant1"), "/tenant1");
        assert_eq!(pdp_path("https://pdp.example.com/a/b/"), "/a/b");
    }

    #[test]
    fn metadata_names_every_endpoint() {
        let doc = metadata("https://pdp.example.com/t");
        assert_eq!(doc["policy_decision_point"], "https://pdp.example.com/t");
        assert_eq!(
            doc["search_action_endpoint"],
            "https://pdp.example.com/t/access/v1/search/action"
        );
        assert_eq!(
            doc["access_evaluation_endpoint"],
            "https://pdp.example.com/t/access/v1/evaluation"
        );
    }
}
