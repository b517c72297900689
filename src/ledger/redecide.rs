//! Re-deciding a live grant (docs/lifecycle.md, "Re-deciding a live
//! grant"): the request the grant was issued for is decided again with the
//! policy set serving now, and the grant is kept, narrowed or revoked. A
//! re-decision never widens a grant: its scope can only lose items and its
//! expiry only come closer.

use serde_json::{Map, Value};

use super::{rfc3339, Action, Change, Grant};
use crate::decision::Decision;
use crate::engine::Engine;
use crate::request::Request;

/// `revoked_by` for a re-decision that no event asked for (a policy reload,
/// `POST /v1/grants/recheck`, `writ grants recheck`).
pub const REDECISION: &str = "redecision";

/// The request a live grant is decided again with, at `now` (Unix
/// milliseconds): the recorded request with `environment.time` = now,
/// `context` = the recorded context with `context` merged over it (an
/// event's new facts win), `requested.scope` = the grant's scope and
/// `requested.ttl` = the seconds it has left (rounded up, so that an
/// unchanged policy gives back the same expiry).
pub fn request_for(grant: &Grant, context: Option<&Map<String, Value>>, now: i64) -> Value {
    let mut request = match &grant.request {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if let Some(context) = context {
        let recorded = request
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if !recorded.is_object() {
            *recorded = Value::Object(Map::new());
        }
        if let Value::Object(recorded) = recorded {
            for (name, value) in context {
                recorded.insert(name.clone(), value.clone());
            }
        }
    }
    let left_ms = grant.expires_at.saturating_sub(now).max(0);
    let left = (left_ms.saturating_add(999)) / 1000;
    let requested = request
        .entry("requested")
        .or_insert_with(|| Value::Object(Map::new()));
    if !requested.is_object() {
        *requested = Value::Object(Map::new());
    }
    if let Value::Object(requested) = requested {
        requested.insert("scope".to_owned(), Value::from(grant.scope.clone()));
        requested.insert("ttl".to_owned(), Value::from(left));
    }
    let environment = request
        .entry("environment")
        .or_insert_with(|| Value::Object(Map::new()));
    if !environment.is_object() {
        *environment = Value::Object(Map::new());
    }
    if let Value::Object(environment) = environment {
        environment.insert("time".to_owned(), Value::from(rfc3339(now)));
    }
    Value::Object(request)
}

/// Decides `grant` again with `engine` at `now`, with an event's `context`
/// merged over the recorded one; returns the change to make (`None`: the
/// grant stays as it is), revoked or narrowed `by` the given name.
///
/// - deny (or a recorded request that no longer validates, or an allow
///   that leaves none of the grant's scope): revoke, reason = the new
///   decision's reasons (or errors);
/// - allow with fewer of the grant's scope items, or a shorter lifetime
///   than it has left: narrow to the intersection of the scopes and the
///   earlier of the expiries;
/// - allow with the same: nothing.
pub fn redecide(
    engine: &Engine,
    grant: &Grant,
    context: Option<&Map<String, Value>>,
    by: &str,
    now: i64,
) -> Option<Change> {
    let request = request_for(grant, context, now);
    let change = |action: Action, reason: String, why: String, decision: Value| Change {
        grant: grant.clone(),
        action,
        by: by.to_owned(),
        reason,
        why,
        decision: Some(decision),
    };
    let (request, prepared) = match Request::from_value(request) {
        Ok(parsed) => parsed,
        Err(error) => {
            let reason = format!("the recorded request no longer validates: {error}");
            return Some(change(
                Action::Revoke,
                reason.clone(),
                format!("re-decided: {reason}"),
                serde_json::json!({"decision": "deny", "errors": [reason]}),
            ));
        }
    };
    let decision = engine.decide_prepared(&request, &prepared);
    let recorded = decision_json(&decision);
    if !decision.is_allow() {
        let reason = deny_reason(&decision);
        return Some(change(
            Action::Revoke,
            reason.clone(),
            format!("re-decided: deny ({reason})"),
            recorded,
        ));
    }
    let scope: Vec<String> = grant
        .scope
        .iter()
        .filter(|item| decision.scope.contains(item))
        .cloned()
        .collect();
    if scope.is_empty() {
        let reason = "the re-decision allows none of the grant's scope".to_owned();
        return Some(change(
            Action::Revoke,
            reason.clone(),
            format!("re-decided: {reason}"),
            recorded,
        ));
    }
    let ttl_ms = i64::try_from(decision.ttl)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let expires_at = grant.expires_at.min(now.saturating_add(ttl_ms));
    if scope.len() == grant.scope.len() && expires_at == grant.expires_at {
        return None;
    }
    let mut what = Vec::new();
    let dropped: Vec<&String> = grant.scope.iter().filter(|i| !scope.contains(i)).collect();
    if !dropped.is_empty() {
        what.push(format!(
            "scope without {}",
            dropped
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if expires_at < grant.expires_at {
        what.push(format!("expiry {}", rfc3339(expires_at)));
    }
    let reason = format!(
        "narrowed ({}) by {}",
        what.join("; "),
        decision.reasons.join(", ")
    );
    Some(change(
        Action::Narrow { scope, expires_at },
        reason.clone(),
        format!("re-decided: {reason}"),
        recorded,
    ))
}

/// The decision as stored with the grant: its JSON, trace included.
fn decision_json(decision: &Decision) -> Value {
    serde_json::from_slice(&decision.json_bytes(None)).unwrap_or(Value::Null)
}

/// A deny's reasons in words: its rules, else its errors.
fn deny_reason(decision: &Decision) -> String {
    if !decision.reasons.is_empty() {
        return format!("denied by {}", decision.reasons.join(", "));
    }
    let errors: Vec<String> = decision
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.rule, e.message))
        .collect();
    if errors.is_empty() {
        "denied: no rule allows it any more".to_owned()
    } else {
        format!("denied on error: {}", errors.join("; "))
    }
}
