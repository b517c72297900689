//! Version 2 of the default pack passes nothing on silence: removing a
//! field a rule of version 2 names, from a request, never makes the pack
//! more permissive where version 2 requires that field, and turns an allow
//! into a deny (or adds the approval step) where it says so.
//!
//! Requests are generated as a model ([`Req`]) of the shapes the pack
//! permits (a team reading, writing or deploying what it owns, an agent
//! invoking its team's tool), with every version 2 field present, absent or
//! holding a value that should not pass. Each property takes one request,
//! removes one field, and compares the two decisions of the embedded pack.
//!
//! Where version 2 does not require a field, a value that is present and
//! wrong is stricter than silence: a `staging` workload asking in `dev` is
//! refused by `env.isolation`, and the same request that says nothing about
//! where it runs is not (only `isolated_environments` require it); likewise
//! an issuance count over the limit on a service's internal read
//! (`rate.unknown` covers privileged, sensitive and agent requests only) and
//! a plan a CI job declared (only agents must declare one). The last
//! property pins exactly those exemptions, so that any other deny that
//! silence lifts is a failure.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use writ::decision::{Decision, Effect};
use writ::Engine;

const TIME: &str = "2026-11-22T10:00:00Z";
const PRIVILEGED: &[&str] = &["write", "deploy", "delete", "admin"];

/// `subject.environment` against `environment.name`.
#[derive(Debug, Clone, Copy)]
enum HomeEnv {
    Same,
    Other,
    Absent,
}

/// `intent.actions`.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Absent,
    WithAction,
    WithoutAction,
}

/// `context.approval`.
#[derive(Debug, Clone, Copy)]
enum Approval {
    Absent,
    Yes,
    Legacy,
    Valid,
    SelfApproved,
    Expired,
}

/// A request of a shape the pack may allow.
#[derive(Debug, Clone)]
struct Req {
    kind: &'static str,
    action: &'static str,
    sensitivity: &'static str,
    env: &'static str,
    home: HomeEnv,
    task: bool,
    id: bool,
    plan: Plan,
    count: Option<u32>,
    risk: Option<i64>,
    approval: Approval,
    state: Option<&'static str>,
    act: Option<usize>,
}

impl Req {
    fn subject_id(&self) -> String {
        format!("spiffe://acme.io/ns/payments/sa/{}", self.kind)
    }

    fn resource_id(&self) -> &'static str {
        if self.action == "invoke" {
            "tool://payments/ledger-search"
        } else {
            "db://payments/orders"
        }
    }

    /// The request as JSON, every field the model holds.
    fn to_json(&self) -> Value {
        let mut subject = json!({
            "id": self.subject_id(), "kind": self.kind, "auth": "spiffe",
            "attested": true, "owner": "payments"
        });
        match self.home {
            HomeEnv::Same => subject["environment"] = json!(self.env),
            HomeEnv::Other => subject["environment"] = json!("staging"),
            HomeEnv::Absent => {}
        }
        if let Some(state) = self.state {
            subject["state"] = json!(state);
        }
        if let Some(depth) = self.act {
            let chain: Vec<Value> = (0..depth)
                .map(|i| json!({"id": format!("agent://hop-{i}"), "kind": "agent"}))
                .collect();
            subject["act"] = json!(chain);
        }
        let mut intent = json!({});
        if self.task {
            intent["task"] = json!("job");
        }
        if self.id {
            intent["id"] = json!("run-1");
        }
        match self.plan {
            Plan::Absent => {}
            Plan::WithAction => intent["actions"] = json!(["read", self.action]),
            Plan::WithoutAction => intent["actions"] = json!(["list"]),
        }
        let mut context = json!({});
        if let Some(count) = self.count {
            context["recent_issuances"] = json!(count);
        }
        if let Some(risk) = self.risk {
            context["risk_score"] = json!(risk);
        }
        let approval = |approver: String, expires: &str| {
            json!({"verified": true, "approver": approver, "action": self.action,
                   "resource": self.resource_id(), "expires": expires})
        };
        match self.approval {
            Approval::Absent => {}
            Approval::Yes => context["approval"] = json!("yes"),
            Approval::Legacy => context["approval"] = json!({"by": "oncall@acme.io"}),
            Approval::Valid => {
                context["approval"] = approval("oncall@acme.io".into(), "2026-11-22T11:00:00Z")
            }
            Approval::SelfApproved => {
                context["approval"] = approval(self.subject_id(), "2026-11-22T11:00:00Z")
            }
            Approval::Expired => {
                context["approval"] = approval("oncall@acme.io".into(), "2026-11-22T09:00:00Z")
            }
        }
        json!({
            "subject": subject,
            "action": self.action,
            "resource": {"id": self.resource_id(),
                         "kind": if self.action == "invoke" { "tool" } else { "database" },
                         "owner": "payments"},
            "intent": intent,
            "environment": {"name": self.env, "broker": "vault", "time": TIME},
            "sensitivity": self.sensitivity,
            "requested": {"scope": [format!("{}:{}", self.action, self.resource_id())], "ttl": 3600},
            "context": context,
        })
    }

    fn privileged(&self) -> bool {
        PRIVILEGED.contains(&self.action)
    }

    fn sensitive(&self) -> bool {
        matches!(self.sensitivity, "confidential" | "restricted")
    }

    /// Version 2 needs a home environment here (`isolated_environments`).
    fn needs_home(&self) -> bool {
        self.env == "prod"
    }

    /// `rate.unknown` applies here.
    fn needs_count(&self) -> bool {
        self.privileged() || self.sensitive() || self.kind == "agent"
    }

    /// `intent.required` applies here.
    fn needs_task(&self) -> bool {
        self.needs_count() || self.kind == "ci"
    }

    /// `intent.plan` requires a plan here.
    fn needs_plan(&self) -> bool {
        self.kind == "agent"
    }

    /// Some approval rule asks for a person here, unless a valid approval
    /// is given.
    fn approval_asked(&self) -> bool {
        (self.env == "prod" && self.sensitivity == "restricted")
            || (self.kind == "agent" && self.privileged())
            || self.risk.is_some_and(|r| r >= 40)
    }
}

/// A field of version 2 that the properties remove.
#[derive(Debug, Clone, Copy)]
enum Field {
    Home,
    Count,
    Task,
    Id,
    Plan,
    Approval,
}

const FIELDS: [Field; 6] = [
    Field::Home,
    Field::Count,
    Field::Task,
    Field::Id,
    Field::Plan,
    Field::Approval,
];

/// The request without `field`.
fn without(request: &Value, field: Field) -> Value {
    let mut request = request.clone();
    let (object, key) = match field {
        Field::Home => ("subject", "environment"),
        Field::Count => ("context", "recent_issuances"),
        Field::Task => ("intent", "task"),
        Field::Id => ("intent", "id"),
        Field::Plan => ("intent", "actions"),
        Field::Approval => ("context", "approval"),
    };
    if let Some(map) = request[object].as_object_mut() {
        map.remove(key);
    }
    request
}

/// True when the model holds `field` at all.
fn holds(req: &Req, field: Field) -> bool {
    match field {
        Field::Home => !matches!(req.home, HomeEnv::Absent),
        Field::Count => req.count.is_some(),
        Field::Task => req.task,
        Field::Id => req.id,
        Field::Plan => !matches!(req.plan, Plan::Absent),
        Field::Approval => !matches!(req.approval, Approval::Absent),
    }
}

/// The rule that denies when `field` is missing where version 2 needs it.
fn rule_for_missing(field: Field) -> Option<&'static str> {
    match field {
        Field::Home => Some("env.isolation"),
        Field::Count => Some("rate.unknown"),
        Field::Task | Field::Id => Some("intent.required"),
        Field::Plan => Some("intent.plan"),
        Field::Approval => None,
    }
}

/// True when version 2 needs `field` for this request.
fn needed(req: &Req, field: Field) -> bool {
    match field {
        Field::Home => req.needs_home(),
        Field::Count => req.needs_count(),
        Field::Task | Field::Id => req.needs_task(),
        Field::Plan => req.needs_plan(),
        Field::Approval => false,
    }
}

fn engine() -> &'static Engine {
    use std::sync::OnceLock;
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::default_pack(None).expect("the pack compiles"))
}

fn decide(request: &Value) -> Decision {
    engine()
        .decide_json(&request.to_string())
        .unwrap_or_else(|e| panic!("a generated request is valid: {e}\n{request}"))
}

fn has_approval(decision: &Decision) -> bool {
    decision.obligations.iter().any(|o| o.kind == "approval")
}

fn reqs() -> impl Strategy<Value = Req> {
    let who = (
        select(vec!["ci", "service", "agent"]),
        select(vec!["read", "write", "deploy", "invoke"]),
        select(vec!["public", "internal", "confidential", "restricted"]),
        select(vec!["prod", "dev"]),
        select(vec![
            HomeEnv::Same,
            HomeEnv::Same,
            HomeEnv::Other,
            HomeEnv::Absent,
        ]),
    );
    let intent = (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
        select(vec![
            Plan::WithAction,
            Plan::WithAction,
            Plan::WithoutAction,
            Plan::Absent,
        ]),
    );
    let context = (
        prop::option::weighted(0.8, select(vec![0u32, 3, 10, 11, 40])),
        prop::option::weighted(0.3, select(vec![0i64, 20, 39, 40, 55, 69, 70, 95])),
        select(vec![
            Approval::Absent,
            Approval::Absent,
            Approval::Yes,
            Approval::Legacy,
            Approval::Valid,
            Approval::SelfApproved,
            Approval::Expired,
        ]),
        prop::option::weighted(0.2, select(vec!["active", "quarantined", "suspended"])),
        prop::option::weighted(0.2, 0usize..5),
    );
    (who, intent, context).prop_map(
        |(
            (kind, action, sensitivity, env, home),
            (task, id, plan),
            (count, risk, approval, state, act),
        )| {
            // Agents get a tool to invoke or a read; the others do not invoke.
            let action = match (kind, action) {
                ("agent", "write" | "deploy") => "invoke",
                (_, "invoke") if kind != "agent" => "read",
                _ => action,
            };
            Req {
                kind,
                action,
                sensitivity,
                env,
                home,
                task,
                id,
                plan,
                count,
                risk,
                approval,
                state,
                act,
            }
        },
    )
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Where version 2 needs a field, a request without it is denied, by
    /// the rule that names it: so removing it never turns a deny into an
    /// allow, and turns every allow into a deny.
    #[test]
    fn removing_a_needed_field_denies(req in reqs()) {
        let full = req.to_json();
        let before = decide(&full);
        for field in FIELDS {
            if !needed(&req, field) {
                continue;
            }
            let after = decide(&without(&full, field));
            prop_assert_eq!(after.decision, Effect::Deny, "{:?} removed from {}", field, full);
            let rule = rule_for_missing(field).expect("a needed field has a rule");
            prop_assert!(
                after.reasons.iter().any(|r| r == rule),
                "{:?} removed: reasons {:?}, expected {}", field, after.reasons, rule
            );
            if before.is_allow() && holds(&req, field) {
                prop_assert!(!after.is_allow());
            }
        }
    }

    /// Removing `context.approval` never denies what was allowed nor allows
    /// what was denied; on an allow it keeps the scope and the TTL, adds
    /// obligations only, and the approval step is there exactly when some
    /// approval rule of version 2 asks for one.
    #[test]
    fn removing_the_approval_only_adds_the_approval_step(req in reqs()) {
        let full = req.to_json();
        let before = decide(&full);
        let after = decide(&without(&full, Field::Approval));
        prop_assert_eq!(before.decision, after.decision, "{}", full);
        if before.is_allow() {
            prop_assert_eq!(&before.scope, &after.scope);
            prop_assert_eq!(before.ttl, after.ttl);
            for obligation in &before.obligations {
                prop_assert!(after.obligations.contains(obligation), "{:?} lost", obligation);
            }
            prop_assert_eq!(has_approval(&after), req.approval_asked(), "{}", full);
            // What is not a valid approval does not remove the step, with
            // or without it.
            if !matches!(req.approval, Approval::Valid) {
                prop_assert_eq!(has_approval(&before), req.approval_asked(), "{}", full);
            }
        }
    }

    /// No removal turns a deny into an allow, except where version 2 lets
    /// silence through on purpose: a home environment outside
    /// `isolated_environments`, a count on a request `rate.unknown` does not
    /// cover, a plan of a requester that need not declare one. There, the
    /// only thing that denied was the rule that reads the field (a value
    /// present and wrong), and the field was not needed.
    #[test]
    fn silence_lifts_no_deny_but_the_documented_ones(req in reqs()) {
        let full = req.to_json();
        let before = decide(&full);
        if before.is_allow() {
            return Ok(());
        }
        for field in FIELDS {
            let after = decide(&without(&full, field));
            if !after.is_allow() {
                continue;
            }
            prop_assert!(!needed(&req, field), "{:?} removed from a denied {} allows", field, full);
            let reader = match field {
                Field::Home => "env.isolation",
                Field::Count => "rate.repeat",
                Field::Plan => "intent.plan",
                _ => {
                    return Err(TestCaseError::fail(format!(
                        "{field:?} removed from a denied {full} allows"
                    )))
                }
            };
            prop_assert_eq!(&before.reasons, &vec![reader.to_owned()], "{}", full);
        }
    }

    /// Where the field is not needed and the request was allowed, removing
    /// it changes nothing a broker acts on.
    #[test]
    fn removing_an_unneeded_field_from_an_allow_changes_nothing(req in reqs()) {
        let full = req.to_json();
        let before = decide(&full);
        if !before.is_allow() {
            return Ok(());
        }
        for field in [Field::Home, Field::Count, Field::Task, Field::Id, Field::Plan] {
            if needed(&req, field) {
                continue;
            }
            let after = decide(&without(&full, field));
            prop_assert!(after.is_allow(), "{:?} removed from {}", field, full);
            prop_assert_eq!(&before.scope, &after.scope);
            prop_assert_eq!(before.ttl, after.ttl);
            prop_assert_eq!(&before.obligations, &after.obligations);
        }
    }
}

/// The generator reaches both answers, and allows with every field
/// present, so the properties above are not vacuous.
#[test]
fn the_generated_requests_reach_allows_and_denies() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = reqs();
    let (mut allows, mut denies, mut needed_allows) = (0, 0, 0);
    for _ in 0..400 {
        let req = strategy.new_tree(&mut runner).expect("a request").current();
        let decision = decide(&req.to_json());
        if decision.is_allow() {
            allows += 1;
            if FIELDS.iter().any(|f| needed(&req, *f) && holds(&req, *f)) {
                needed_allows += 1;
            }
        } else {
            denies += 1;
        }
    }
    assert!(allows >= 20, "{allows} allows of 400");
    assert!(denies >= 20, "{denies} denies of 400");
    assert!(
        needed_allows >= 10,
        "{needed_allows} allows with a needed field"
    );
}
