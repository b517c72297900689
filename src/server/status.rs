//! `GET /v1/status` and its `/metrics` twin: which policy set serves (its
//! digest, the same on every replica that loads the same files, wherever
//! they are), where it came from, when it was loaded, the last successful
//! and failed reloads, and whether the grant ledger and the decision log
//! are working (docs/fleet.md).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::state::{Loaded, ReloadEvent};
use super::App;

/// How long the ledger may take to answer the health check.
const LEDGER_PING: Duration = Duration::from_secs(2);

/// The revision of a set loaded from files: the first 12 hex digits of its
/// digest (a directory carries no revision of its own).
pub(crate) fn revision(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// The revision serving: the bundle's, or the digest's head, both read
/// from the one snapshot that is serving.
fn serving_revision(loaded: &Loaded) -> String {
    loaded
        .revision
        .clone()
        .unwrap_or_else(|| revision(loaded.engine.digest()))
}

/// Where the policy set is read from.
fn source(app: &App) -> Value {
    if let Some(puller) = &app.bundle {
        return json!({ "kind": "bundle", "url": puller.url() });
    }
    let policies = &app.source.policies;
    let embedded = policies.is_empty() || policies.iter().all(|p| p == "default");
    let kind = if embedded {
        "embedded"
    } else if policies.iter().any(|p| p == "default") {
        "embedded+files"
    } else {
        "files"
    };
    json!({
        "kind": kind,
        "policies": policies,
        "data": app.source.data.as_ref().map(|p| p.display().to_string()),
    })
}

/// `at` as RFC 3339 (UTC), for the status reports.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// `at` in Unix seconds, for the metrics.
pub(crate) fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn event(event: Option<&ReloadEvent>) -> Value {
    match event {
        None => Value::Null,
        Some(event) => {
            let mut out = json!({
                "at": rfc3339(event.at),
                "trigger": event.trigger,
                "digest": event.digest,
            });
            if let Some(error) = &event.error {
                out["error"] = Value::String(error.clone());
            }
            out
        }
    }
}

/// The ledger's health: none without a ledger, else whether it answered a
/// ping within [`LEDGER_PING`] and, if not, why.
async fn ledger_health(app: &App) -> Option<Result<(), String>> {
    let ledger = app.ledger.as_ref()?;
    Some(
        match tokio::time::timeout(LEDGER_PING, ledger.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "the grant ledger did not answer within {} s",
                LEDGER_PING.as_secs()
            )),
        },
    )
}

/// The body of `GET /v1/status`.
pub(crate) async fn report(app: &App) -> Value {
    let loaded = app.current.load_full();
    let digest = loaded.engine.digest();
    let (success, failure) = app.reload_history.last();
    let ledger = match (&app.ledger, ledger_health(app).await) {
        (Some(ledger), Some(health)) => {
            let mut out = json!({
                "kind": ledger.kind(),
                "target": ledger.target(),
                "healthy": health.is_ok(),
            });
            if let Err(error) = health {
                out["error"] = Value::String(error);
            }
            out
        }
        _ => Value::Null,
    };
    let decision_log = match &app.log {
        None => Value::Null,
        Some(log) => {
            let mut out = json!({
                "target": app.log_target,
                "required": log.required(),
                "ready": log.ready(),
            });
            if log.has_file() {
                out["writable"] = Value::Bool(log.writable());
            }
            if let Some(shipper) = log.shipper() {
                out["shipping"] = shipper.status();
            }
            out
        }
    };
    json!({
        "status": if app.draining.load(std::sync::atomic::Ordering::SeqCst) { "shutting_down" } else { "serving" },
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": app.started_at,
        "policy": {
            "revision": serving_revision(&loaded),
            "digest": digest,
            "rules": loaded.engine.policy().rules.len(),
            "files": loaded.files,
            "loaded_at": loaded.loaded_at,
            "source": source(app),
        },
        "reloads": {
            "succeeded": app.metrics.reloads(),
            "failed": app.metrics.reload_failures(),
            "last_success": event(success.as_ref()),
            "last_failure": event(failure.as_ref()),
        },
        "ledger": ledger,
        "decision_log": decision_log,
        "bundle": app.bundle.as_ref().map_or(Value::Null, |puller| puller.status()),
    })
}

/// The status series for `/metrics`: when the set serving was loaded, the
/// last reloads' times, and whether the ledger and the decision log work.
/// (`writ_policy_info{digest}` and the reload counters are rendered with
/// the other counters.)
pub(crate) async fn render(app: &App, out: &mut String) {
    let loaded = app.current.load_full();
    let (success, failure) = app.reload_history.last();
    out.push_str("# HELP writ_policy_revision_info The revision and source of the policy set that is serving.\n");
    out.push_str("# TYPE writ_policy_revision_info gauge\n");
    let _ = writeln!(
        out,
        "writ_policy_revision_info{{revision=\"{}\",source=\"{}\"}} 1",
        serving_revision(&loaded),
        source(app)["kind"].as_str().unwrap_or_default()
    );
    if let Ok(at) = time::OffsetDateTime::parse(
        &loaded.loaded_at,
        &time::format_description::well_known::Rfc3339,
    ) {
        out.push_str("# HELP writ_policy_loaded_timestamp_seconds When the policy set that is serving was loaded (Unix time).\n");
        out.push_str("# TYPE writ_policy_loaded_timestamp_seconds gauge\n");
        let seconds = at.unix_timestamp_nanos() as f64 / 1e9;
        let _ = writeln!(out, "writ_policy_loaded_timestamp_seconds {seconds}");
    }
    out.push_str("# HELP writ_reload_last_success_timestamp_seconds When a reload last activated a policy set (Unix time; 0: never).\n");
    out.push_str("# TYPE writ_reload_last_success_timestamp_seconds gauge\n");
    let _ = writeln!(
        out,
        "writ_reload_last_success_timestamp_seconds {}",
        success.as_ref().map_or(0.0, |e| unix_seconds(e.at))
    );
    out.push_str("# HELP writ_reload_last_failure_timestamp_seconds When a reload last failed, the last good set serving on (Unix time; 0: never).\n");
    out.push_str("# TYPE writ_reload_last_failure_timestamp_seconds gauge\n");
    let _ = writeln!(
        out,
        "writ_reload_last_failure_timestamp_seconds {}",
        failure.as_ref().map_or(0.0, |e| unix_seconds(e.at))
    );
    out.push_str("# HELP writ_reload_failures_total Policy reloads that failed (the same count as writ_policy_reload_failures_total).\n");
    out.push_str("# TYPE writ_reload_failures_total counter\n");
    let _ = writeln!(
        out,
        "writ_reload_failures_total {}",
        app.metrics.reload_failures()
    );
    if let Some(puller) = &app.bundle {
        puller.render(out);
    }
    if let Some(health) = ledger_health(app).await {
        out.push_str("# HELP writ_ledger_up Whether the grant ledger answered its health check (1) or not (0).\n");
        out.push_str("# TYPE writ_ledger_up gauge\n");
        let _ = writeln!(out, "writ_ledger_up {}", u8::from(health.is_ok()));
    }
    if let Some(log) = &app.log {
        out.push_str("# HELP writ_decision_log_up Whether the decision log's sinks work: the file's last write succeeded, the collector took the last batch (1), or not (0).\n");
        out.push_str("# TYPE writ_decision_log_up gauge\n");
        let up = log.writable() && log.shipper().map_or(true, |s| s.healthy());
        let _ = writeln!(out, "writ_decision_log_up {}", u8::from(up));
        if let Some(shipper) = log.shipper() {
            out.push_str("# HELP writ_decision_log_buffered_lines Decision log lines waiting for the collector.\n");
            out.push_str("# TYPE writ_decision_log_buffered_lines gauge\n");
            let _ = writeln!(
                out,
                "writ_decision_log_buffered_lines {}",
                shipper.buffered()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_is_the_digest_head() {
        assert_eq!(revision("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(revision("abc"), "abc");
    }
}
