//! Continuous evaluation (docs/lifecycle.md): re-deciding live grants
//! (`POST /v1/grants/recheck`, after every policy reload, events that carry
//! `context`) and the revocation feed (`GET /v1/revocations`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request as HttpRequest, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::grants::{ledger_of, respond, unavailable};
use super::{json_body, ApiError};
use crate::ledger::redecide::{redecide, REDECISION};
use crate::ledger::{Change, FeedRead, Grant, Ledger, LedgerError, Report, Selector};
use crate::server::App;

/// Longest `wait` a feed read may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting feed read looks at the store for rows other
/// replicas appended (rows this process appends wake it at once).
const POLL: Duration = Duration::from_millis(250);

/// Most changes an answer lists one by one (all are counted).
const KEEP: usize = 10_000;

/// Re-decides the live grants `selector` selects with the policy set
/// serving as each page is decided, `context` merged over each recorded
/// one, revoking or narrowing `by` the given name. The deciding runs on
/// the blocking pool, a page at a time, so the workers keep answering.
pub(crate) async fn redecide_selected(
    app: &Arc<App>,
    ledger: &Ledger,
    selector: &Selector,
    context: Option<Map<String, Value>>,
    by: &str,
) -> Result<Report, LedgerError> {
    let context = Arc::new(context);
    let by: Arc<str> = Arc::from(by);
    let result = ledger
        .redecide_live(selector, KEEP, |page: Vec<Grant>, now: i64| {
            let loaded = app.current.load_full();
            let context = context.clone();
            let by = by.clone();
            async move {
                let decided = tokio::task::spawn_blocking(move || -> Vec<Change> {
                    page.iter()
                        .filter_map(|grant| {
                            redecide(&loaded.engine, grant, context.as_ref().as_ref(), &by, now)
                        })
                        .collect()
                })
                .await;
                decided.unwrap_or_else(|error| {
                    eprintln!("writ: a page of grants could not be re-decided: {error}");
                    Vec::new()
                })
            }
        })
        .await;
    app.metrics.redecision(
        result
            .as_ref()
            .ok()
            .map(|r| (r.revoked, r.narrowed, r.unchanged())),
    );
    result
}

/// After a reload that swapped a new policy set in: re-decides every live
/// grant in the background (decisions keep being answered meanwhile), one
/// pass at a time, and says what it did on stderr.
pub(crate) fn spawn_redecision(app: Arc<App>, digest: String) {
    if app.ledger.is_none() {
        return;
    }
    tokio::spawn(async move {
        let Some(ledger) = app.ledger.as_ref() else {
            return;
        };
        let _pass = ledger.redeciding().await;
        let started = Instant::now();
        match redecide_selected(&app, ledger, &Selector::default(), None, REDECISION).await {
            Ok(report) => eprintln!(
                "writ: re-decided {} live grant(s) after the reload to {digest} in {} ms: {} revoked, {} narrowed, {} unchanged",
                report.checked,
                started.elapsed().as_millis(),
                report.revoked,
                report.narrowed,
                report.unchanged()
            ),
            Err(error) => eprintln!(
                "writ: the live grants were not all re-decided after the reload to {digest}: {error}; `POST /v1/grants/recheck` tries again"
            ),
        }
    });
}

/// `POST /v1/grants/recheck`: re-decides every live grant now. The body, if
/// any, is not read.
pub(crate) async fn recheck(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    drop(request);
    let result = async {
        let ledger = ledger_of(&app)?;
        let _pass = ledger.redeciding().await;
        let started = Instant::now();
        let report = redecide_selected(&app, ledger, &Selector::default(), None, REDECISION)
            .await
            .map_err(unavailable)?;
        let mut body = report.to_json();
        if let Some(map) = body.as_object_mut() {
            map.insert(
                "policy_digest".to_owned(),
                Value::from(app.current.load().engine.digest()),
            );
            map.insert(
                "elapsed_ms".to_owned(),
                Value::from(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            );
        }
        Ok(json_body(body.to_string()))
    }
    .await;
    respond(&app, result)
}

/// What a feed read asks for.
#[derive(Debug, Clone, PartialEq)]
struct FeedQuery {
    after: i64,
    limit: usize,
    wait: Duration,
}

fn parse_feed_query(query: &str) -> Result<FeedQuery, ApiError> {
    let mut parsed = FeedQuery {
        after: 0,
        limit: 100,
        wait: Duration::ZERO,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "after" => {
                parsed.after = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "`after={value}` is not a feed cursor: give the `next` of a previous answer, or 0 for the start"
                        ))
                    })?
            }
            "limit" => {
                parsed.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(format!("`limit={value}` is not a number from 1 to 1000"))
                    })?
            }
            "wait" => {
                let millis = crate::duration::parse_millis(value).map_err(|_| {
                    ApiError::invalid(format!(
                        "`wait={value}` is not a duration: write e.g. `30s`, `500ms` or `0`"
                    ))
                })?;
                let wait = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
                if wait > MAX_WAIT {
                    return Err(ApiError::invalid(format!(
                        "`wait={value}` is longer than the most a read waits, {}s",
                        MAX_WAIT.as_secs()
                    )));
                }
                parsed.wait = wait;
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{other}`: use after, limit, wait"
                )))
            }
        }
    }
    Ok(parsed)
}

/// `GET /v1/revocations?after=CURSOR&limit=N&wait=30s`: the feed after
/// `after`, in cursor order; when there is nothing yet, waits up to `wait`
/// for a row (woken at once by this process's appends, and looking at the
/// store every [`POLL`] for other replicas').
pub(crate) async fn revocations(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let query = request.uri().query().unwrap_or_default().to_owned();
    drop(request);
    let result = async {
        let ledger = ledger_of(&app)?;
        let query = parse_feed_query(&query)?;
        let deadline = Instant::now() + query.wait;
        let appended = ledger.appended();
        loop {
            // Registered before reading, so an append between the read and
            // the wait still wakes this read.
            let notified = appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let rows = match ledger
                .read_feed(query.after, query.limit)
                .await
                .map_err(unavailable)?
            {
                FeedRead::Rows(rows) => rows,
                FeedRead::Pruned { after, pruned_to } => return Ok(pruned(after, pruned_to)),
            };
            let now = Instant::now();
            let draining = app.draining.load(std::sync::atomic::Ordering::SeqCst);
            if !rows.is_empty() || now >= deadline || draining {
                let next = rows.last().map_or(query.after, |row| row.seq);
                let rows: Vec<Value> = rows.iter().map(|row| row.to_json()).collect();
                return Ok(json_body(
                    json!({"revocations": rows, "next": next.to_string()}).to_string(),
                ));
            }
            let pause = (deadline - now).min(POLL);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
    .await;
    respond(&app, result)
}

/// The answer to a feed read whose cursor is before rows that retention
/// deleted: `410 Gone`, naming the oldest cursor the feed still holds and
/// the `next` to resume from; the rows in between are not on the feed any
/// more, so the reader must reconcile (list the revoked grants) rather than
/// go on as if it had seen them.
fn pruned(after: i64, pruned_to: i64) -> Response {
    let body = json!({
        "error": {
            "code": "feed_pruned",
            "message": format!(
                "the feed no longer holds the rows after cursor {after}: retention deleted them up to cursor {pruned_to}; resume with after={pruned_to} once you have reconciled (GET /v1/grants?state=revoked lists what was revoked)"
            ),
        },
        "oldest": (pruned_to + 1).to_string(),
        "next": pruned_to.to_string(),
    });
    let mut response = json_body(body.to_string());
    *response.status_mut() = StatusCode::GONE;
    response
}

/// How often the retention sweep runs: a quarter of the retention, at
/// least every second and at most every hour.
pub(crate) fn sweep_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Sweeps the ledger now and then every [`sweep_interval`]: deletes what
/// is older than `retention` and no longer holds (docs/lifecycle.md,
/// "Retention"). The grants a count can still see (the repeat window of
/// the policy set serving, or `--repeat-window`, whichever is longer) are
/// kept whatever the retention. A failure is reported once, until a sweep
/// succeeds again.
pub(crate) fn spawn_sweeper(app: Arc<App>, retention: Duration) {
    if app.ledger.is_none() {
        return;
    }
    tokio::spawn(async move {
        let interval = sweep_interval(retention);
        let mut failing = false;
        loop {
            if let Some(ledger) = &app.ledger {
                let loaded = app.current.load_full();
                let (window, _) = super::grants::repeat_window(&loaded.engine, app.repeat_window);
                match ledger.sweep(retention, window.max(app.repeat_window)).await {
                    Ok(_) => failing = false,
                    Err(error) => {
                        if !failing {
                            eprintln!(
                                "writ: retention sweep failed: {error}; trying again in {}s",
                                interval.as_secs()
                            );
                        }
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_queries_parse_or_say_what_is_wrong() {
        let query = parse_feed_query("after=42&limit=10&wait=30s").expect("parses");
        assert_eq!(
            query,
            FeedQuery {
                after: 42,
                limit: 10,
                wait: Duration::from_secs(30)
            }
        );
        assert_eq!(parse_feed_query("").expect("defaults").after, 0);
        for bad in [
            "after=abc",
            "after=-1",
            "wait=soon",
            "wait=61s",
            "limit=0",
            "colour=red",
        ] {
            assert!(parse_feed_query(bad).is_err(), "{bad}");
        }
    }
}
