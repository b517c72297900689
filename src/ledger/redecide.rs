//! Re-deciding a live grant (docs/lifecycle.md, "Re-deciding a live
//! grant"): the request the grant was issued for is decided again with the
//! policy set serving now, and the grant is kept, narrowed or revoked. A
//! re-decision never widens a grant: its scope can only lose items and its
//! expiry only come closer.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{rfc3339, Action, ApprovalAttestation, Change, Grant};
use crate::decision::{Decision, Outcome, TraceEntry};
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
    let change = |action: Action, reason: String, why: String, decision: Value| Change {
        grant: grant.clone(),
        action,
        by: by.to_owned(),
        reason,
        why,
        decision: Some(decision),
    };
    // The decision's JSON (with its trace) is only built for a change: an
    // unchanged grant writes nothing.
    let (request, prepared) = match typed_request(grant, context, now) {
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
    let mut decision = engine.decide_prepared(&request, &prepared);
    if let Some(entry) = approval_entry(grant, context, now) {
        decision.trace.splice(0..0, [entry]);
    }
    if !decision.is_allow() {
        let reason = deny_reason(&decision);
        return Some(change(
            Action::Revoke,
            reason.clone(),
            format!("re-decided: deny ({reason})"),
            decision_json(&decision),
        ));
    }
    if let Some(rule) = new_approval(grant, &decision) {
        let reason = format!(
            "the re-decision requires an approval (rule {rule}) that the grant was not issued under"
        );
        return Some(change(
            Action::Revoke,
            reason.clone(),
            format!("re-decided: {reason}"),
            decision_json(&decision),
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
            decision_json(&decision),
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
        decision_json(&decision),
    ))
}

/// [`request_for`], built on writ's typed request rather than on JSON: the
/// recorded request is read from the grant's document without copying it,
/// the four fields a re-decision sets are set, and the request is validated
/// as every request is. (A re-decision pass reads thousands of grants; the
/// JSON copy was most of its cost.)
fn typed_request(
    grant: &Grant,
    context: Option<&Map<String, Value>>,
    now: i64,
) -> Result<(Request, crate::request::Prepared), String> {
    if !grant.request.is_object() {
        return Err("the recorded request is not a JSON object".to_owned());
    }
    let mut request = Request::deserialize(&grant.request).map_err(|e| e.to_string())?;
    if let Some(context) = context {
        for (name, value) in context {
            request.context.insert(name.clone(), value.clone());
        }
    }
    let left_ms = grant.expires_at.saturating_sub(now).max(0);
    request.requested.scope = Some(grant.scope.clone());
    request.requested.ttl = Some(u64::try_from(left_ms.saturating_add(999) / 1000).unwrap_or(0));
    request.environment.time = Some(rfc3339(now));
    let mut prepared = request.validate().map_err(|e| e.to_string())?;
    // Validation read any `verified` in the stored (or the event's)
    // `context.approval` as false; only writ's own attestation, kept apart
    // from the request, makes the approval read verified, and only while
    // it has not expired.
    if let Recorded::Counts(attestation) = recorded_approval(grant, context, now) {
        prepared.approval = Some(attestation.approval.clone());
    }
    Ok((request, prepared))
}

/// What becomes of the approval writ verified when it issued the grant.
enum Recorded<'a> {
    /// None was verified (or the stored attestation does not read).
    None,
    /// It counts: it is handed to the evaluator as verified.
    Counts(&'a ApprovalAttestation),
    /// Its expiry has passed: it no longer counts.
    Expired(&'a ApprovalAttestation),
    /// The event's `context` carries an `approval` of its own, which
    /// replaces the recorded one (and, like any approval a caller writes,
    /// reads `verified: false`).
    Replaced(&'a ApprovalAttestation),
}

fn recorded_approval<'a>(
    grant: &'a Grant,
    context: Option<&Map<String, Value>>,
    now: i64,
) -> Recorded<'a> {
    let Some(attestation) = &grant.approval else {
        return Recorded::None;
    };
    if context.is_some_and(|c| c.contains_key("approval")) {
        Recorded::Replaced(attestation)
    } else if attestation.counts_at(now) {
        Recorded::Counts(attestation)
    } else {
        Recorded::Expired(attestation)
    }
}

/// The trace entry saying what became of the recorded approval, first in
/// the re-decision's trace (as a verification is at issue).
fn approval_entry(
    grant: &Grant,
    context: Option<&Map<String, Value>>,
    now: i64,
) -> Option<TraceEntry> {
    let (outcome, note) = match recorded_approval(grant, context, now) {
        Recorded::None => return None,
        Recorded::Counts(a) => (
            Outcome::Matched,
            format!(
                "context.approval as writ verified it at issue ({}, by `{}`, token {}): context.approval.verified = true until {}",
                rfc3339(a.verified_at),
                a.issuer,
                a.token,
                rfc3339(a.expires_at)
            ),
        ),
        Recorded::Expired(a) => (
            Outcome::NotMatched,
            format!(
                "the approval writ verified at issue (by `{}`, token {}) expired at {}: it no longer counts (context.approval.verified = false)",
                a.issuer,
                a.token,
                rfc3339(a.expires_at)
            ),
        ),
        Recorded::Replaced(a) => (
            Outcome::NotMatched,
            format!(
                "the event's context.approval replaces the approval writ verified at issue (by `{}`, token {}); what a caller writes there reads context.approval.verified = false",
                a.issuer, a.token
            ),
        ),
    };
    Some(TraceEntry {
        rule: "context.approval".into(),
        kind: "verify".into(),
        at: "ledger".into(),
        outcome,
        failed: None,
        error: None,
        effect: Vec::new(),
        because: Some(note),
        closest: false,
    })
}

/// The rule of an `approval` obligation the re-decision asks for when the
/// grant was issued without one: the credential exists, and no one
/// approved it as the policy now requires, so it is revoked (the broker
/// could not discharge the obligation before minting).
fn new_approval(grant: &Grant, decision: &Decision) -> Option<String> {
    let had = grant
        .obligations
        .as_array()
        .is_some_and(|all| all.iter().any(|o| o["kind"] == "approval"));
    if had {
        return None;
    }
    decision
        .obligations
        .iter()
        .find(|o| o.kind == "approval")
        .map(|o| o.rule.clone())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const POLICY: &str = r#"
@id("deploy.permit")
permit if action == "deploy" grant ["deploy:{resource.id}", "logs:{resource.id}"] for 30m;
@id("risk.high")
forbid if context has risk_score and context.risk_score > 70 because "risky";
"#;

    fn engine(extra: &str) -> Engine {
        Engine::compile([("p.writ", format!("{POLICY}{extra}"))], None).expect("compiles")
    }

    /// A live grant of 30 minutes issued at `now`, holding `scope`.
    fn grant(now: i64, scope: &[&str]) -> Grant {
        Grant {
            grant_id: "g".to_owned(),
            decision_id: "d".to_owned(),
            policy_digest: "sha256:x".to_owned(),
            subject_id: "s".to_owned(),
            task_id: None,
            request: json!({
                "subject": {"id": "s", "kind": "ci"},
                "action": "deploy",
                "resource": {"id": "k8s://a"},
                "environment": {"time": "2020-01-01T00:00:00Z"},
                "requested": {"scope": ["deploy:k8s://a"], "ttl": 60},
                "context": {"risk_score": 10, "recent_issuances": 0}
            }),
            scope: scope.iter().map(|s| (*s).to_owned()).collect(),
            ttl: 1800,
            issued_at: now,
            expires_at: now + 1_800_000,
            obligations: json!([]),
            credential_ref: None,
            revoked_at: None,
            revoked_by: None,
            reason: None,
            narrowed: false,
            redecision: None,
            redecided_at: None,
            approval: None,
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn the_request_is_the_recorded_one_with_now_the_grant_and_the_event() {
        let g = grant(NOW, &["deploy:k8s://a"]);
        let context = json!({"risk_score": 90, "state": "quarantined"});
        let request = request_for(&g, context.as_object(), NOW + 600_500);
        assert_eq!(request["requested"]["scope"], json!(["deploy:k8s://a"]));
        // 1199.5 s left, rounded up.
        assert_eq!(request["requested"]["ttl"], 1200);
        assert_eq!(request["environment"]["time"], rfc3339(NOW + 600_500));
        assert_eq!(request["context"]["risk_score"], 90);
        assert_eq!(request["context"]["state"], "quarantined");
        assert_eq!(request["context"]["recent_issuances"], 0);
    }

    #[test]
    fn the_typed_request_is_the_json_one() {
        let g = grant(NOW, &["deploy:k8s://a"]);
        let context = json!({"risk_score": 90});
        let (typed, _) = typed_request(&g, context.as_object(), NOW + 600_500).expect("typed");
        let (from_json, _) =
            Request::from_value(request_for(&g, context.as_object(), NOW + 600_500))
                .expect("from JSON");
        assert_eq!(typed, from_json);
    }

    #[test]
    fn the_same_policy_changes_nothing_and_never_widens() {
        // The policy would grant both items for 30 minutes; the grant holds
        // one, with 10 minutes left: it stays as it is.
        let mut g = grant(NOW, &["deploy:k8s://a"]);
        g.expires_at = NOW + 600_000;
        assert!(redecide(&engine(""), &g, None, REDECISION, NOW).is_none());
        // Later, with less time left, still nothing.
        assert!(redecide(&engine(""), &g, None, REDECISION, NOW + 123_456).is_none());
    }

    #[test]
    fn a_lower_cap_narrows_the_expiry_and_a_forbid_revokes() {
        let g = grant(NOW, &["deploy:k8s://a", "logs:k8s://a"]);
        let change =
            redecide(&engine("limit ttl 5m;"), &g, None, REDECISION, NOW + 1000).expect("a change");
        assert_eq!(
            change.action,
            Action::Narrow {
                scope: g.scope.clone(),
                expires_at: NOW + 1000 + 300_000
            }
        );
        assert_eq!(change.by, REDECISION);
        assert!(change.decision.is_some());

        let context = json!({"risk_score": 95});
        let change = redecide(
            &engine(""),
            &g,
            context.as_object(),
            "event:risk_change",
            NOW,
        )
        .expect("a change");
        assert_eq!(change.action, Action::Revoke);
        assert!(change.reason.contains("risk.high"), "{}", change.reason);
        assert_eq!(change.by, "event:risk_change");
    }

    #[test]
    fn a_smaller_grant_list_narrows_the_scope() {
        let g = grant(NOW, &["deploy:k8s://a", "logs:k8s://a"]);
        let only_deploy = Engine::compile(
            [(
                "p.writ",
                "@id(\"deploy.only\")\npermit if action == \"deploy\" grant [\"deploy:{resource.id}\"] for 30m;",
            )],
            None,
        )
        .expect("compiles");
        let change = redecide(&only_deploy, &g, None, REDECISION, NOW).expect("a change");
        assert_eq!(
            change.action,
            Action::Narrow {
                scope: vec!["deploy:k8s://a".to_owned()],
                expires_at: g.expires_at
            }
        );
    }

    #[test]
    fn an_unreadable_recorded_request_is_revoked() {
        let mut g = grant(NOW, &["deploy:k8s://a"]);
        g.request = json!({"subject": "not an object"});
        let change = redecide(&engine(""), &g, None, REDECISION, NOW).expect("a change");
        assert_eq!(change.action, Action::Revoke);
        assert!(
            change.reason.contains("no longer validates"),
            "{}",
            change.reason
        );
    }

    /// Deploys only with an approval the evaluator reads as verified, for
    /// this action and resource, unexpired, from someone else.
    /// Deploys only with an approval the evaluator reads as verified, for
    /// this action and resource, unexpired, from someone else.
    const APPROVED: &str = include_str!("../../tests/approvals/deploy.writ");

    /// The approval as writ's verification writes it, for `k8s://a`.
    fn verified_approval(expires: &str) -> Value {
        json!({"verified": true, "approver": "alice@acme.io", "action": "deploy",
               "resource": "k8s://a", "expires": expires, "verified_by": "https://approvals.test"})
    }

    /// A grant whose stored request holds a verified approval's claims;
    /// with `attested`, writ's attestation of it, valid until `until`.
    fn approved_grant(attested: bool, until: i64) -> Grant {
        let mut g = grant(NOW, &["deploy:k8s://a"]);
        let approval = verified_approval(&rfc3339(NOW + 3_600_000));
        g.request["context"]["approval"] = approval.clone();
        if attested {
            g.approval = Some(ApprovalAttestation {
                approval,
                issuer: "https://approvals.test".to_owned(),
                token: "sha256:00".to_owned(),
                expires_at: until,
                verified_at: NOW,
            });
        }
        g
    }

    fn approved_engine(extra: &str) -> Engine {
        Engine::compile([("p.writ", format!("{APPROVED}{extra}"))], None).expect("compiles")
    }

    #[test]
    fn an_attested_approval_still_counts_on_re_decision() {
        let g = approved_grant(true, NOW + 600_000);
        assert!(redecide(&approved_engine(""), &g, None, REDECISION, NOW + 1000).is_none());
    }

    #[test]
    fn a_stored_request_claiming_verified_gains_nothing() {
        // The same stored request, but no attestation (a grant recorded
        // before version 6, or a row edited by hand): validation reads the
        // stored `verified: true` as false, so the approval does not count.
        let g = approved_grant(false, 0);
        let change =
            redecide(&approved_engine(""), &g, None, REDECISION, NOW + 1000).expect("a change");
        assert_eq!(change.action, Action::Revoke);
        assert!(
            change.reason.contains("deploy.approved"),
            "{}",
            change.reason
        );
        // An event that writes its own approval replaces the attested one,
        // and reads unverified too.
        let g = approved_grant(true, NOW + 600_000);
        let context = json!({"approval": verified_approval(&rfc3339(NOW + 3_600_000))});
        let change = redecide(
            &approved_engine(""),
            &g,
            context.as_object(),
            "event:state_change",
            NOW + 1000,
        )
        .expect("a change");
        assert_eq!(change.action, Action::Revoke);
        let trace = &change.decision.expect("the decision")["trace"][0];
        assert_eq!(trace["rule"], "context.approval", "{trace}");
        assert!(
            trace["because"]
                .as_str()
                .is_some_and(|t| t.contains("replaces")),
            "{trace}"
        );
    }

    #[test]
    fn an_expired_approval_no_longer_counts() {
        // The attestation ends before the claims in the request say: the
        // attestation's end is what counts.
        let g = approved_grant(true, NOW + 600_000);
        let change =
            redecide(&approved_engine(""), &g, None, REDECISION, NOW + 600_000).expect("a change");
        assert_eq!(change.action, Action::Revoke);
        let decision = change.decision.expect("the decision");
        assert!(
            decision["trace"][0]["because"]
                .as_str()
                .is_some_and(|t| t.contains("expired")),
            "{decision}"
        );
        // A policy that only shortens unapproved grants narrows instead.
        let narrowing = Engine::compile(
            [(
                "p.writ",
                "@id(\"deploy.permit\")\npermit if action == \"deploy\" grant [\"deploy:{resource.id}\"] for 30m;\n@id(\"ttl.unapproved\")\nlimit ttl 1m if not (context has approval.verified and context.approval.verified == true);",
            )],
            None,
        )
        .expect("compiles");
        assert!(redecide(&narrowing, &g, None, REDECISION, NOW + 1000).is_none());
        let change = redecide(&narrowing, &g, None, REDECISION, NOW + 600_000).expect("a change");
        assert_eq!(
            change.action,
            Action::Narrow {
                scope: g.scope.clone(),
                expires_at: NOW + 600_000 + 60_000
            }
        );
    }

    #[test]
    fn an_approval_the_grant_was_not_issued_under_revokes() {
        let requiring = "@id(\"deploy.ask\")\nrequire approval if action == \"deploy\" and not (context has approval.verified and context.approval.verified == true);";
        let policy = format!(
            "@id(\"deploy.permit\")\npermit if action == \"deploy\" grant [\"deploy:{{resource.id}}\"] for 30m;\n{requiring}"
        );
        let engine = Engine::compile([("p.writ", policy)], None).expect("compiles");
        // Attested and current: no obligation, nothing changes.
        let g = approved_grant(true, NOW + 600_000);
        assert!(redecide(&engine, &g, None, REDECISION, NOW + 1000).is_none());
        // Expired: the allow now asks for an approval the credential was
        // minted without.
        let change = redecide(&engine, &g, None, REDECISION, NOW + 700_000).expect("a change");
        assert_eq!(change.action, Action::Revoke);
        assert!(change.reason.contains("deploy.ask"), "{}", change.reason);
        // A grant issued under that obligation keeps it: nothing new.
        let mut asked = approved_grant(false, 0);
        asked.obligations = json!([{"kind": "approval", "rule": "deploy.ask"}]);
        assert!(redecide(&engine, &asked, None, REDECISION, NOW + 1000).is_none());
    }
}
