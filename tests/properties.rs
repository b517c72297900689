//! Properties of the evaluator, checked on small generated policies and
//! requests.
//!
//! Policies are generated as an AST of this file's own ([`GenRule`],
//! [`Cond`]) over a fixed vocabulary of attributes and values, rendered to
//! writ text and compiled by the real front end. Requests are generated as a
//! model ([`Req`]) and rendered to JSON for `Request::from_json`. The same
//! AST and model are evaluated here by a tiny three-valued interpreter
//! ([`Cond::eval`]), independent of the engine, which says which rules hold
//! (true), which do not (false) and which fail (an attribute is missing or
//! has the wrong type). The properties compare the engine's decisions with
//! what that interpreter says must be true of them.
//!
//! The case counts and sizes are small (a handful of rules, four requests a
//! case) so the whole file runs in a few seconds in a debug build.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use writ::decision::{Decision, Effect, Outcome, TraceEntry};
use writ::scope::ScopeItem;
use writ::{Engine, Request};

// ---------------------------------------------------------------------------
// Vocabulary

const ACTIONS: &[&str] = &["read", "write", "deploy"];
const KINDS: &[&str] = &["ci", "agent", "service"];
const TEAMS: &[&str] = &["payments", "search"];
const ENVS: &[&str] = &["dev", "prod"];
const LEVELS: &[&str] = &["public", "internal", "confidential", "restricted"];
const TIERS: &[&str] = &["gold", "silver"];
const RESOURCE_IDS: &[&str] = &["db://payments/orders", "db://search/index"];
/// Scope items a request may ask for.
const REQUESTABLE: &[&str] = &[
    "read:db://payments/orders",
    "read:db://payments/*",
    "write:db://payments/orders",
    "read:db://search/index",
    "deploy:k8s://prod/payments",
];
/// Grant patterns: templates and constant patterns, narrow and wide.
const GRANTS: &[&str] = &[
    "read:{resource.id}",
    "{action}:{resource.id}",
    "read:db://payments/*",
    "read:db://payments/**",
    "*:db://search/index",
    "write:db://payments/orders",
    "deploy:k8s://prod/*",
];
/// `limit scope` patterns.
const LIMITS: &[&str] = &[
    "read:db://payments/**",
    "*:db://search/*",
    "read:db://payments/orders",
    "deploy:k8s://prod/payments",
];
/// Durations as written and in seconds.
const DURATIONS: &[(&str, u64)] = &[
    ("5m", 300),
    ("15m", 900),
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
];
const REQUESTED_TTLS: &[u64] = &[60, 600, 900, 3600, 10_000];

// ---------------------------------------------------------------------------
// The request model

/// `context.tier`: absent, a string, or a number (which `== "gold"` cannot
/// compare: an evaluation error).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tier {
    Absent,
    Str(&'static str),
    Num(i64),
}

/// A request, every attribute optional.
#[derive(Debug, Clone)]
struct Req {
    action: Option<&'static str>,
    kind: Option<&'static str>,
    subject_owner: Option<&'static str>,
    resource_owner: Option<&'static str>,
    resource_id: Option<&'static str>,
    env: Option<&'static str>,
    sensitivity: Option<usize>,
    attested: Option<bool>,
    tier: Tier,
    scope: Option<Vec<&'static str>>,
    ttl: Option<u64>,
}

impl Req {
    fn to_json(&self) -> String {
        let mut subject = Map::new();
        let mut resource = Map::new();
        let mut root = Map::new();
        if let Some(v) = self.kind {
            subject.insert("kind".into(), json!(v));
        }
        if let Some(v) = self.subject_owner {
            subject.insert("owner".into(), json!(v));
        }
        if let Some(v) = self.attested {
            subject.insert("attested".into(), json!(v));
        }
        if let Some(v) = self.resource_owner {
            resource.insert("owner".into(), json!(v));
        }
        if let Some(v) = self.resource_id {
            resource.insert("id".into(), json!(v));
        }
        root.insert("subject".into(), Value::Object(subject));
        root.insert("resource".into(), Value::Object(resource));
        if let Some(v) = self.action {
            root.insert("action".into(), json!(v));
        }
        if let Some(v) = self.env {
            root.insert("environment".into(), json!({ "name": v }));
        }
        if let Some(level) = self.sensitivity {
            root.insert("sensitivity".into(), json!(LEVELS[level]));
        }
        match self.tier {
            Tier::Absent => {}
            Tier::Str(s) => {
                root.insert("context".into(), json!({ "tier": s }));
            }
            Tier::Num(n) => {
                root.insert("context".into(), json!({ "tier": n }));
            }
        }
        let mut requested = Map::new();
        if let Some(scope) = &self.scope {
            requested.insert("scope".into(), json!(scope));
        }
        if let Some(ttl) = self.ttl {
            requested.insert("ttl".into(), json!(ttl));
        }
        root.insert("requested".into(), Value::Object(requested));
        Value::Object(root).to_string()
    }

    fn request(&self) -> Request {
        let text = self.to_json();
        match Request::from_json(&text) {
            Ok(request) => request,
            Err(error) => panic!("generated request {text} is invalid: {error}"),
        }
    }

    /// The requested scope items, when a non-empty scope was requested.
    fn requested_items(&self) -> Option<&[&'static str]> {
        self.scope.as_deref().filter(|s| !s.is_empty())
    }
}

fn req_strategy() -> impl Strategy<Value = Req> {
    let tier = prop_oneof![
        2 => Just(Tier::Absent),
        3 => select(TIERS).prop_map(Tier::Str),
        1 => (0i64..5).prop_map(Tier::Num),
    ];
    let scope = prop_oneof![
        2 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => prop::collection::vec(select(REQUESTABLE), 1..=3).prop_map(|mut v| {
            v.dedup();
            Some(v)
        }),
    ];
    (
        (
            prop::option::weighted(0.9, select(ACTIONS)),
            prop::option::weighted(0.9, select(KINDS)),
            prop::option::weighted(0.9, select(TEAMS)),
            prop::option::weighted(0.9, select(TEAMS)),
            prop::option::weighted(0.85, select(RESOURCE_IDS)),
            prop::option::weighted(0.9, select(ENVS)),
        ),
        (
            prop::option::weighted(0.9, 0usize..4),
            prop::option::weighted(0.85, any::<bool>()),
            tier,
            scope,
            prop::option::weighted(0.6, select(REQUESTED_TTLS)),
        ),
    )
        .prop_map(
            |(
                (action, kind, subject_owner, resource_owner, resource_id, env),
                (sensitivity, attested, tier, scope, ttl),
            )| Req {
                action,
                kind,
                subject_owner,
                resource_owner,
                resource_id,
                env,
                sensitivity,
                attested,
                tier,
                scope,
                ttl,
            },
        )
}

// ---------------------------------------------------------------------------
// The policy AST and its three-valued interpreter

/// A condition's value: errors are values, as in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Error,
}

impl Tri {
    fn of(value: Option<bool>) -> Tri {
        match value {
            Some(true) => Tri::True,
            Some(false) => Tri::False,
            None => Tri::Error,
        }
    }

    /// `and`: false if either side is false, even if the other fails.
    fn and(self, other: Tri) -> Tri {
        if self == Tri::False || other == Tri::False {
            Tri::False
        } else if self == Tri::Error || other == Tri::Error {
            Tri::Error
        } else {
            Tri::True
        }
    }

    /// `or`: true if either side is true, even if the other fails.
    fn or(self, other: Tri) -> Tri {
        if self == Tri::True || other == Tri::True {
            Tri::True
        } else if self == Tri::Error || other == Tri::Error {
            Tri::Error
        } else {
            Tri::False
        }
    }

    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Error => Tri::Error,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrAttr {
    Action,
    SubjectKind,
    SubjectOwner,
    ResourceOwner,
    EnvName,
}

impl StrAttr {
    const ALL: [StrAttr; 5] = [
        StrAttr::Action,
        StrAttr::SubjectKind,
        StrAttr::SubjectOwner,
        StrAttr::ResourceOwner,
        StrAttr::EnvName,
    ];

    fn path(self) -> &'static str {
        match self {
            StrAttr::Action => "action",
            StrAttr::SubjectKind => "subject.kind",
            StrAttr::SubjectOwner => "subject.owner",
            StrAttr::ResourceOwner => "resource.owner",
            StrAttr::EnvName => "environment.name",
        }
    }

    fn values(self) -> &'static [&'static str] {
        match self {
            StrAttr::Action => ACTIONS,
            StrAttr::SubjectKind => KINDS,
            StrAttr::SubjectOwner | StrAttr::ResourceOwner => TEAMS,
            StrAttr::EnvName => ENVS,
        }
    }

    fn get(self, req: &Req) -> Option<&'static str> {
        match self {
            StrAttr::Action => req.action,
            StrAttr::SubjectKind => req.kind,
            StrAttr::SubjectOwner => req.subject_owner,
            StrAttr::ResourceOwner => req.resource_owner,
            StrAttr::EnvName => req.env,
        }
    }
}

const LEVEL_OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

#[derive(Debug, Clone)]
enum Atom {
    /// `action == "read"` / `!=`
    Eq {
        attr: StrAttr,
        value: &'static str,
        negate: bool,
    },
    /// `action in ["read", "write"]` / `not in`
    In {
        attr: StrAttr,
        values: Vec<&'static str>,
        negate: bool,
    },
    /// `sensitivity >= confidential`
    Level { op: &'static str, level: usize },
    /// `subject.attested == true`
    Attested(bool),
    /// `subject.owner == resource.owner`
    OwnerMatch,
    /// `context.tier == "gold"`: fails on a missing tier or a number
    Tier(&'static str),
    /// `context has tier`: never fails
    HasTier,
}

impl Atom {
    fn render(&self) -> String {
        match self {
            Atom::Eq {
                attr,
                value,
                negate,
            } => format!(
                "{} {} \"{value}\"",
                attr.path(),
                if *negate { "!=" } else { "==" }
            ),
            Atom::In {
                attr,
                values,
                negate,
            } => {
                let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!(
                    "{} {} [{}]",
                    attr.path(),
                    if *negate { "not in" } else { "in" },
                    list.join(", ")
                )
            }
            Atom::Level { op, level } => format!("sensitivity {op} {}", LEVELS[*level]),
            Atom::Attested(b) => format!("subject.attested == {b}"),
            Atom::OwnerMatch => "subject.owner == resource.owner".to_owned(),
            Atom::Tier(t) => format!("context.tier == \"{t}\""),
            Atom::HasTier => "context has tier".to_owned(),
        }
    }

    fn eval(&self, req: &Req) -> Tri {
        match self {
            Atom::Eq {
                attr,
                value,
                negate,
            } => Tri::of(attr.get(req).map(|v| (v == *value) != *negate)),
            Atom::In {
                attr,
                values,
                negate,
            } => Tri::of(attr.get(req).map(|v| values.contains(&v) != *negate)),
            Atom::Level { op, level } => Tri::of(req.sensitivity.map(|s| match *op {
                "==" => s == *level,
                "!=" => s != *level,
                "<" => s < *level,
                "<=" => s <= *level,
                ">" => s > *level,
                _ => s >= *level,
            })),
            Atom::Attested(b) => Tri::of(req.attested.map(|a| a == *b)),
            Atom::OwnerMatch => Tri::of(match (req.subject_owner, req.resource_owner) {
                (Some(a), Some(b)) => Some(a == b),
                _ => None,
            }),
            Atom::Tier(t) => Tri::of(match req.tier {
                Tier::Str(s) => Some(s == *t),
                Tier::Absent | Tier::Num(_) => None,
            }),
            Atom::HasTier => Tri::of(Some(req.tier != Tier::Absent)),
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Atom(Atom),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl Cond {
    fn render(&self) -> String {
        match self {
            Cond::Atom(atom) => atom.render(),
            Cond::Not(inner) => format!("not ({})", inner.render()),
            Cond::And(a, b) => format!("({} and {})", a.render(), b.render()),
            Cond::Or(a, b) => format!("({} or {})", a.render(), b.render()),
        }
    }

    fn eval(&self, req: &Req) -> Tri {
        match self {
            Cond::Atom(atom) => atom.eval(req),
            Cond::Not(inner) => inner.eval(req).not(),
            Cond::And(a, b) => a.eval(req).and(b.eval(req)),
            Cond::Or(a, b) => a.eval(req).or(b.eval(req)),
        }
    }
}

fn atom_strategy() -> impl Strategy<Value = Atom> {
    let attr = select(StrAttr::ALL.to_vec());
    prop_oneof![
        4 => (attr.clone(), any::<prop::sample::Index>(), prop::bool::weighted(0.25)).prop_map(
            |(attr, index, negate)| Atom::Eq {
                attr,
                value: attr.values()[index.index(attr.values().len())],
                negate,
            }
        ),
        2 => (attr, prop::collection::vec(any::<prop::sample::Index>(), 1..=2), any::<bool>())
            .prop_map(|(attr, indices, negate)| {
                let mut values: Vec<&'static str> =
                    indices.iter().map(|i| *i.get(attr.values())).collect();
                values.dedup();
                Atom::In { attr, values, negate }
            }),
        2 => (select(LEVEL_OPS), 0usize..4).prop_map(|(op, level)| Atom::Level { op, level }),
        2 => any::<bool>().prop_map(Atom::Attested),
        2 => Just(Atom::OwnerMatch),
        1 => select(TIERS).prop_map(Atom::Tier),
        1 => Just(Atom::HasTier),
    ]
}

fn cond_strategy() -> impl Strategy<Value = Cond> {
    atom_strategy()
        .prop_map(Cond::Atom)
        .prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                1 => inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
                2 => (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
                2 => (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            ]
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obl {
    Approval,
    Log,
    RevokeOnTaskEnd,
    /// `audience resource.id`: cannot be computed when the request has no
    /// `resource.id`.
    AudienceResource,
}

impl Obl {
    fn render(self) -> &'static str {
        match self {
            Obl::Approval => "approval",
            Obl::Log => "log",
            Obl::RevokeOnTaskEnd => "revoke on task_end",
            Obl::AudienceResource => "audience resource.id",
        }
    }
}

fn obl_strategy() -> impl Strategy<Value = Obl> {
    select(vec![
        Obl::Approval,
        Obl::Log,
        Obl::RevokeOnTaskEnd,
        Obl::AudienceResource,
    ])
}

#[derive(Debug, Clone)]
enum Kind {
    Permit {
        /// `None`: no grant (a plain allow).
        grant: Option<Vec<&'static str>>,
        ttl: Option<(&'static str, u64)>,
        obligations: Vec<Obl>,
    },
    Forbid,
    LimitTtl((&'static str, u64)),
    LimitScope(Vec<&'static str>),
    Require(Obl),
}

#[derive(Debug, Clone)]
struct GenRule {
    id: String,
    kind: Kind,
    cond: Option<Cond>,
}

impl GenRule {
    fn render(&self) -> String {
        let cond = self
            .cond
            .as_ref()
            .map(|c| format!(" if {}", c.render()))
            .unwrap_or_default();
        let quoted = |items: &[&str]| {
            items
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let body = match &self.kind {
            Kind::Permit {
                grant,
                ttl,
                obligations,
            } => {
                let mut out = format!("permit{cond}");
                if let Some(items) = grant {
                    out.push_str(&format!(" grant [{}]", quoted(items)));
                    if let Some((text, _)) = ttl {
                        out.push_str(&format!(" for {text}"));
                    }
                }
                for o in obligations {
                    out.push(' ');
                    out.push_str(o.render());
                }
                out
            }
            Kind::Forbid => format!("forbid{cond}"),
            Kind::LimitTtl((text, _)) => format!("limit ttl {text}{cond}"),
            Kind::LimitScope(items) => format!("limit scope [{}]{cond}", quoted(items)),
            Kind::Require(o) => format!("require {}{cond}", o.render()),
        };
        format!("@id(\"{}\")\n{body};\n", self.id)
    }

    /// The condition's value; a rule without one always holds.
    fn value(&self, req: &Req) -> Tri {
        self.cond.as_ref().map_or(Tri::True, |c| c.eval(req))
    }

    /// A forbid, limit or require applies when its condition holds or
    /// fails (fail closed).
    fn applies(&self, req: &Req) -> bool {
        self.value(req) != Tri::False
    }

    /// A permit matches only when its condition is true and its grant can
    /// be built from the request.
    fn permit_items(&self, req: &Req) -> Option<Vec<ScopeItem>> {
        let Kind::Permit { grant, .. } = &self.kind else {
            return None;
        };
        if self.value(req) != Tri::True {
            return None;
        }
        let mut items = Vec::new();
        for template in grant.iter().flatten() {
            let mut text = (*template).to_owned();
            if text.contains("{resource.id}") {
                text = text.replace("{resource.id}", req.resource_id?);
            }
            if text.contains("{action}") {
                text = text.replace("{action}", req.action?);
            }
            match ScopeItem::parse(&text) {
                Ok(item) => items.push(item),
                Err(error) => panic!("the model built an invalid item `{text}`: {error}"),
            }
        }
        Some(items)
    }

    fn is_permit(&self) -> bool {
        matches!(self.kind, Kind::Permit { .. })
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    let duration = select(DURATIONS);
    prop_oneof![
        5 => (
            prop::option::weighted(0.8, prop::collection::vec(select(GRANTS), 1..=2)),
            prop::option::weighted(0.7, duration.clone()),
            prop::collection::vec(obl_strategy(), 0..=1),
        )
            .prop_map(|(grant, ttl, obligations)| Kind::Permit { grant, ttl, obligations }),
        2 => Just(Kind::Forbid),
        2 => duration.prop_map(Kind::LimitTtl),
        1 => prop::collection::vec(select(LIMITS), 1..=2).prop_map(Kind::LimitScope),
        2 => obl_strategy().prop_map(Kind::Require),
    ]
}

fn rule_strategy() -> impl Strategy<Value = (Kind, Option<Cond>)> {
    (
        kind_strategy(),
        prop::option::weighted(0.85, cond_strategy()),
    )
}

/// Rules with ids `r0`, `r1`, ... in order.
fn rules_strategy(max: usize) -> impl Strategy<Value = Vec<GenRule>> {
    prop::collection::vec(rule_strategy(), 1..=max).prop_map(|rules| {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, (kind, cond))| GenRule {
                id: format!("r{i}"),
                kind,
                cond,
            })
            .collect()
    })
}

fn render(rules: &[GenRule]) -> String {
    rules.iter().map(GenRule::render).collect()
}

/// Compiles the rules. The only diagnostic a generated policy may earn is
/// `never_holds` (two equality tests on one attribute in one conjunction,
/// which the checker rightly refuses); such cases are skipped.
fn compile(rules: &[GenRule]) -> Result<Engine, TestCaseError> {
    let text = render(rules);
    match Engine::compile([("gen.writ", text.as_str())], None) {
        Ok(engine) => Ok(engine),
        Err(diagnostics) => {
            let codes: Vec<String> = diagnostics.codes().iter().map(|c| c.to_string()).collect();
            if codes.iter().all(|c| c == "writ::check::never_holds") {
                Err(TestCaseError::reject("condition that can never hold"))
            } else {
                Err(TestCaseError::fail(format!(
                    "generated policy does not compile:\n{text}\n{}",
                    diagnostics.render(false)
                )))
            }
        }
    }
}

fn cases(rules: usize) -> impl Strategy<Value = (Vec<GenRule>, Vec<Req>)> {
    (
        rules_strategy(rules),
        prop::collection::vec(req_strategy(), 4),
    )
}

fn describe(rules: &[GenRule], req: &Req, decision: &Decision) -> String {
    format!(
        "policy:\n{}request: {}\ndecision: {}",
        render(rules),
        req.to_json(),
        decision.to_json()
    )
}

/// `cases` per property; `PROPTEST_CASES=N` runs N instead (a longer soak
/// than the normal suite's few seconds).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        max_global_rejects: 4096,
        ..ProptestConfig::default()
    }
}

/// The decision fields that rule order cannot change, in a comparable form.
#[derive(Debug, PartialEq)]
struct OrderFree {
    decision: Effect,
    scope: Vec<String>,
    ttl: u64,
    dropped_scope: Vec<String>,
    /// `(kind, event, value)`, sorted: which rule asked first depends on
    /// source order when two rules ask for the same obligation.
    obligations: Vec<(String, Option<String>, Option<String>)>,
    /// Sorted.
    reasons: Vec<String>,
    /// `(rule, message)`, sorted.
    errors: Vec<(String, String)>,
}

/// True when the deny comes from an obligation that could not be computed.
fn obligation_failed(decision: &Decision) -> bool {
    decision
        .trace
        .iter()
        .any(|e| e.effect.contains(&writ::decision::Step::ObligationFailed))
}

fn order_free(decision: &Decision) -> OrderFree {
    let mut obligations: Vec<_> = decision
        .obligations
        .iter()
        .map(|o| (o.kind.clone(), o.event.clone(), o.value.clone()))
        .collect();
    obligations.sort();
    let mut reasons = decision.reasons.clone();
    reasons.sort();
    let mut errors: Vec<_> = decision
        .errors
        .iter()
        .map(|e| (e.rule.clone(), e.message.clone()))
        .collect();
    errors.sort();
    OrderFree {
        decision: decision.decision,
        scope: decision.scope.clone(),
        ttl: decision.ttl,
        dropped_scope: decision.dropped_scope.clone(),
        obligations,
        reasons,
        errors,
    }
}

// ---------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config(96))]

    /// A forbid whose condition holds, or fails (fail closed), denies,
    /// whatever permits match, and is named among the reasons.
    #[test]
    fn a_forbid_that_applies_always_denies((rules, reqs) in cases(6)) {
        let engine = compile(&rules)?;
        for req in &reqs {
            let decision = engine.decide(&req.request());
            for rule in rules.iter().filter(|r| matches!(r.kind, Kind::Forbid)) {
                if rule.applies(req) {
                    prop_assert_eq!(decision.decision, Effect::Deny, "{}", describe(&rules, req, &decision));
                    prop_assert!(decision.reasons.contains(&rule.id), "{}", describe(&rules, req, &decision));
                }
            }
        }
    }

    /// Without a permit whose condition is true, the answer is deny; and
    /// an allow's reasons are permits whose conditions are true.
    #[test]
    fn no_permit_no_allow((rules, reqs) in cases(6)) {
        let engine = compile(&rules)?;
        for req in &reqs {
            let decision = engine.decide(&req.request());
            let holding: Vec<&GenRule> = rules
                .iter()
                .filter(|r| r.is_permit() && r.value(req) == Tri::True)
                .collect();
            if holding.is_empty() {
                prop_assert_eq!(decision.decision, Effect::Deny, "{}", describe(&rules, req, &decision));
            }
            if decision.is_allow() {
                for reason in &decision.reasons {
                    prop_assert!(
                        holding.iter().any(|r| &r.id == reason),
                        "reason {} is not a holding permit\n{}", reason, describe(&rules, req, &decision)
                    );
                }
            }
        }
    }

    /// A policy with no permit at all never allows, whatever it holds.
    #[test]
    fn a_policy_without_permits_denies_everything((rules, reqs) in cases(6)) {
        let rules: Vec<GenRule> = rules.into_iter().filter(|r| !r.is_permit()).collect();
        prop_assume!(!rules.is_empty());
        let engine = compile(&rules)?;
        for req in &reqs {
            let decision = engine.decide(&req.request());
            prop_assert_eq!(decision.decision, Effect::Deny, "{}", describe(&rules, req, &decision));
            prop_assert!(decision.scope.is_empty() && decision.ttl == 0 && decision.obligations.is_empty());
        }
    }

    /// The granted scope is part of what was requested (or, with nothing
    /// requested, items of the matched permits' grants); every granted item
    /// is covered by a pattern of a permit that matched, and by every
    /// `limit scope` that applies.
    #[test]
    fn granted_scope_is_requested_and_permitted((rules, reqs) in cases(6)) {
        let engine = compile(&rules)?;
        for req in &reqs {
            let decision = engine.decide(&req.request());
            if !decision.is_allow() {
                continue;
            }
            let permitted: Vec<ScopeItem> = rules
                .iter()
                .filter_map(|r| r.permit_items(req))
                .flatten()
                .collect();
            for granted in &decision.scope {
                let item = ScopeItem::parse(granted).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match req.requested_items() {
                    Some(requested) => prop_assert!(
                        requested.contains(&granted.as_str()),
                        "`{}` was not requested\n{}", granted, describe(&rules, req, &decision)
                    ),
                    None => prop_assert!(
                        permitted.iter().any(|p| p.as_str() == granted),
                        "`{}` is no matched permit's item\n{}", granted, describe(&rules, req, &decision)
                    ),
                }
                prop_assert!(
                    permitted.iter().any(|p| p.covers(&item)),
                    "`{}` is covered by no matched permit\n{}", granted, describe(&rules, req, &decision)
                );
                for rule in &rules {
                    if let Kind::LimitScope(patterns) = &rule.kind {
                        if rule.applies(req) {
                            let covered = patterns
                                .iter()
                                .filter_map(|p| ScopeItem::parse(p).ok())
                                .any(|p| p.covers(&item));
                            prop_assert!(
                                covered,
                                "`{}` escapes {}\n{}", granted, rule.id, describe(&rules, req, &decision)
                            );
                        }
                    }
                }
            }
        }
    }

    /// The TTL is at most the requested TTL, every `limit ttl` that applies
    /// and the `for` of every matched permit that contributed scope; and it
    /// is exactly the smallest of them (3600 when none bounds it).
    #[test]
    fn ttl_is_the_smallest_cap((rules, reqs) in cases(6)) {
        let engine = compile(&rules)?;
        for req in &reqs {
            let decision = engine.decide(&req.request());
            if !decision.is_allow() {
                prop_assert_eq!(decision.ttl, 0);
                continue;
            }
            let granted: Vec<ScopeItem> = decision
                .scope
                .iter()
                .filter_map(|s| ScopeItem::parse(s).ok())
                .collect();
            let mut caps: Vec<(String, u64)> = Vec::new();
            if let Some(ttl) = req.ttl {
                caps.push(("requested.ttl".to_owned(), ttl));
            }
            for rule in &rules {
                match &rule.kind {
                    Kind::LimitTtl((_, seconds)) if rule.applies(req) => {
                        caps.push((rule.id.clone(), *seconds));
                    }
                    Kind::Permit { ttl: Some((_, seconds)), .. } => {
                        let contributes = rule
                            .permit_items(req)
                            .is_some_and(|items| items.iter().any(|p| granted.iter().any(|g| p.covers(g))));
                        if contributes {
                            caps.push((rule.id.clone(), *seconds));
                        }
                    }
                    _ => {}
                }
            }
            for (who, cap) in &caps {
                prop_assert!(
                    decision.ttl <= *cap,
                    "ttl {} over the cap {} of {}\n{}", decision.ttl, cap, who, describe(&rules, req, &decision)
                );
            }
            let expected = caps.iter().map(|(_, c)| *c).min().unwrap_or(3600);
            prop_assert_eq!(decision.ttl, expected, "{}", describe(&rules, req, &decision));
        }
    }

    /// Adding a forbid never turns a deny into an allow (and one that
    /// applies turns an allow into a deny).
    #[test]
    fn adding_a_forbid_never_allows_more(
        (rules, reqs) in cases(5),
        cond in prop::option::weighted(0.9, cond_strategy()),
        at in any::<prop::sample::Index>(),
    ) {
        let before = compile(&rules)?;
        let forbid = GenRule { id: "added".to_owned(), kind: Kind::Forbid, cond };
        let mut more = rules.clone();
        more.insert(at.index(rules.len() + 1), forbid.clone());
        let after = compile(&more)?;
        for req in &reqs {
            let request = req.request();
            let (a, b) = (before.decide(&request), after.decide(&request));
            if !a.is_allow() {
                prop_assert!(!b.is_allow(), "{}", describe(&more, req, &b));
            }
            if forbid.applies(req) {
                prop_assert!(!b.is_allow(), "{}", describe(&more, req, &b));
            }
        }
    }

    /// Adding a permit never turns an allow into a deny, with one exception
    /// that is part of fail-closed: when the added permit matches and an
    /// obligation it attaches cannot be computed (here `audience
    /// resource.id` on a request without `resource.id`), the broker could
    /// not honour the allow, so the answer is deny and that permit is the
    /// reason. The invariant is therefore: allow before implies allow after,
    /// or a deny whose only reason is the added permit, which errored on an
    /// obligation.
    #[test]
    fn adding_a_permit_never_denies_more(
        (rules, reqs) in cases(5),
        (kind, cond) in (kind_strategy(), prop::option::weighted(0.8, cond_strategy()))
            .prop_filter("a permit", |(k, _)| matches!(k, Kind::Permit { .. })),
        at in any::<prop::sample::Index>(),
    ) {
        let before = compile(&rules)?;
        let permit = GenRule { id: "added".to_owned(), kind, cond };
        let mut more = rules.clone();
        more.insert(at.index(rules.len() + 1), permit.clone());
        let after = compile(&more)?;
        for req in &reqs {
            let request = req.request();
            let (a, b) = (before.decide(&request), after.decide(&request));
            if a.is_allow() && !b.is_allow() {
                let Kind::Permit { obligations, .. } = &permit.kind else { unreachable!() };
                prop_assert!(
                    obligations.contains(&Obl::AudienceResource) && req.resource_id.is_none(),
                    "the added permit turned allow into deny\n{}", describe(&more, req, &b)
                );
                prop_assert!(obligation_failed(&b), "{}", describe(&more, req, &b));
                prop_assert_eq!(&b.reasons, &vec!["added".to_owned()], "{}", describe(&more, req, &b));
                prop_assert!(b.errors.iter().any(|e| e.rule == "added"), "{}", describe(&more, req, &b));
            }
        }
    }

    /// Rule order never changes the decision. Exact: decision, scope, ttl,
    /// dropped scope. Up to order: reasons and errors (listed in source
    /// order), and obligations compared as `(kind, event, value)` (when two
    /// rules ask for the same one, the first in source order is named).
    /// One exception: when obligations cannot be computed, the first failing
    /// one in source order stops the evaluation and is the reason; then
    /// both orders deny for such a failure, but which rule is named may
    /// differ.
    #[test]
    fn rule_order_does_not_matter(
        (rules, reqs) in cases(6),
        shuffle in any::<u64>(),
    ) {
        let mut shuffled = rules.clone();
        // Fisher-Yates from the case's own randomness, so a failure shrinks
        // and replays.
        let mut state = shuffle | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = (state % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let a_engine = compile(&rules)?;
        let b_engine = compile(&shuffled)?;
        for req in &reqs {
            let request = req.request();
            let (a, b) = (a_engine.decide(&request), b_engine.decide(&request));
            if obligation_failed(&a) || obligation_failed(&b) {
                prop_assert!(obligation_failed(&a) && obligation_failed(&b), "{}\n{}", describe(&rules, req, &a), describe(&shuffled, req, &b));
                prop_assert_eq!(a.decision, Effect::Deny);
                prop_assert_eq!(b.decision, Effect::Deny);
                continue;
            }
            prop_assert_eq!(order_free(&a), order_free(&b), "{}\n{}", describe(&rules, req, &a), describe(&shuffled, req, &b));
        }
    }

    /// The same policies and request give the same decision, byte for byte,
    /// trace included: twice on one engine, and on a second engine compiled
    /// from the same text.
    #[test]
    fn decisions_are_deterministic((rules, reqs) in cases(6)) {
        let first = compile(&rules)?;
        let second = compile(&rules)?;
        prop_assert_eq!(first.digest(), second.digest());
        for req in &reqs {
            let request = req.request();
            let once = first.decide(&request).to_json();
            prop_assert_eq!(&once, &first.decide(&request).to_json());
            prop_assert_eq!(&once, &second.decide(&request).to_json());
            let via_json = first.decide_json(&req.to_json()).map(|d| d.to_json());
            prop_assert_eq!(via_json.as_deref(), Ok(once.as_str()));
        }
    }

    /// The decision tree only prunes: the tree decides exactly as evaluating
    /// every rule in order, and every rule that matched or failed appears in
    /// both traces with the same entry.
    #[test]
    fn tree_decides_as_naive_evaluation((rules, reqs) in cases(8)) {
        let engine = compile(&rules)?;
        for req in &reqs {
            let request = req.request();
            let tree = engine.decide(&request);
            let naive = engine.decide_naive(&request);
            let at = || describe(&rules, req, &tree);
            prop_assert_eq!(tree.decision, naive.decision, "{}", at());
            prop_assert_eq!(&tree.scope, &naive.scope, "{}", at());
            prop_assert_eq!(tree.ttl, naive.ttl, "{}", at());
            prop_assert_eq!(&tree.obligations, &naive.obligations, "{}", at());
            prop_assert_eq!(&tree.reasons, &naive.reasons, "{}", at());
            prop_assert_eq!(&tree.dropped_scope, &naive.dropped_scope, "{}", at());
            prop_assert_eq!(&tree.errors, &naive.errors, "{}", at());
            let decisive = |d: &Decision| -> Vec<TraceEntry> {
                d.trace.iter().filter(|e| e.outcome != Outcome::NotMatched).cloned().collect()
            };
            prop_assert_eq!(decisive(&tree), decisive(&naive), "{}", at());
        }
    }

    /// A request that fails validation (here an invalid scope item, which
    /// `from_json` would refuse but a library caller can still build) is
    /// denied with an error on `request`, never allowed.
    #[test]
    fn an_invalid_request_is_never_allowed(
        (rules, reqs) in cases(4),
        bad in select(vec![
            "read:a//b", "read:../x", "read", "read:db://x/./y",
            "read:db://x/%2e%2e", "read:db://x/.%2E", "read:db://x/a%2fb", "read:db://x/%252e",
        ]),
        zero_ttl in any::<bool>(),
    ) {
        let engine = compile(&rules)?;
        for req in &reqs {
            let mut request = req.request();
            if zero_ttl {
                request.requested.ttl = Some(0);
            } else {
                request.requested.scope.get_or_insert_with(Vec::new).push(bad.to_owned());
            }
            for decision in [engine.decide(&request), engine.decide_naive(&request)] {
                prop_assert_eq!(decision.decision, Effect::Deny);
                prop_assert!(decision.errors.iter().any(|e| e.rule == "request"), "{}", decision.to_json());
                prop_assert!(decision.scope.is_empty() && decision.ttl == 0);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Typed comparisons: a value of another type than the constant it is
// compared with is an error, whatever the operator.

/// The type of a JSON value in a request, or of a constant in a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Str,
    Num,
    Bool,
    List,
    Object,
}

/// A request value of any type but null.
fn any_value() -> impl Strategy<Value = (Type, Value)> {
    prop_oneof![
        "[a-z_]{0,8}".prop_map(|s| (Type::Str, json!(s))),
        any::<i32>().prop_map(|n| (Type::Num, json!(n))),
        (-1.0e6..1.0e6f64).prop_map(|n| (Type::Num, json!(n))),
        any::<bool>().prop_map(|b| (Type::Bool, json!(b))),
        prop::collection::vec(
            prop_oneof![
                "[a-z]{0,4}".prop_map(|s| json!(s)),
                any::<i16>().prop_map(|n| json!(n)),
                any::<bool>().prop_map(|b| json!(b)),
            ],
            0..3,
        )
        .prop_map(|items| (Type::List, Value::Array(items))),
        prop::collection::btree_map("[a-z]{1,4}", "[a-z]{0,4}", 0..3)
            .prop_map(|map| (Type::Object, json!(map))),
    ]
}

/// A constant of a scalar type, written in writ, with its type.
fn any_constant() -> impl Strategy<Value = (Type, String)> {
    prop_oneof![
        "[a-z_]{0,8}".prop_map(|s| (Type::Str, format!("\"{s}\""))),
        any::<i32>().prop_map(|n| (Type::Num, n.to_string())),
        any::<bool>().prop_map(|b| (Type::Bool, b.to_string())),
    ]
}

/// A comparison of `subject.event_name` (type "any") with constants of one
/// type: `==`, `!=`, `in` or `not in`, the lists never empty.
fn comparison() -> impl Strategy<Value = (Type, String)> {
    (
        select(vec!["==", "!=", "in", "not in"]),
        prop::collection::vec(any_constant(), 1..4),
    )
        .prop_map(|(op, constants)| {
            let ty = constants[0].0;
            let same: Vec<&str> = constants
                .iter()
                .filter(|(t, _)| *t == ty)
                .map(|(_, text)| text.as_str())
                .collect();
            let rhs = if op.ends_with("in") {
                format!("[{}]", same.join(", "))
            } else {
                same[0].to_owned()
            };
            (ty, format!("subject.event_name {op} {rhs}"))
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// For a request value of another type than the constants it is
    /// compared with, the comparison is an error: no permit that depends
    /// on it (or on its negation) matches, and every forbid that does
    /// applies, also the ones the decision tree indexes by their string
    /// tests (`==` and `in`), which a non-string value must not skip.
    #[test]
    fn a_comparison_across_types_fails_closed(
        (value_type, value) in any_value(),
        comparisons in prop::collection::vec(comparison(), 1..4),
        indexed in prop::collection::vec(
            prop_oneof![
                "[a-z]{1,4}".prop_map(|s| format!("subject.event_name == \"{s}\"")),
                prop::collection::vec("[a-z]{1,4}", 1..3).prop_map(|items| {
                    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
                    format!("subject.event_name in [{}]", quoted.join(", "))
                }),
            ],
            3..6,
        ),
    ) {
        let comparisons: Vec<String> = comparisons
            .into_iter()
            .filter(|(ty, _)| *ty != value_type)
            .map(|(_, text)| text)
            .collect();
        prop_assume!(!comparisons.is_empty());
        let mut policy = String::new();
        let mut forbids = Vec::new();
        for (i, cond) in comparisons.iter().enumerate() {
            policy.push_str(&format!("@id(\"p{i}\") permit if {cond} grant [\"read:db://a/{i}\"];\n"));
            policy.push_str(&format!("@id(\"n{i}\") permit if not ({cond}) grant [\"read:db://b/{i}\"];\n"));
            policy.push_str(&format!("@id(\"f{i}\") forbid if {cond};\n"));
            policy.push_str(&format!("@id(\"g{i}\") forbid if action == \"read\" and not ({cond});\n"));
            forbids.extend([format!("f{i}"), format!("g{i}")]);
        }
        if value_type != Type::Str {
            // Enough string tests on one attribute for the tree to switch
            // on it.
            for (i, cond) in indexed.iter().enumerate() {
                policy.push_str(&format!("@id(\"x{i}\") forbid if {cond};\n"));
                forbids.push(format!("x{i}"));
            }
        }
        let engine = match Engine::compile([("typed.writ", policy.as_str())], None) {
            Ok(engine) => engine,
            Err(diagnostics) => {
                let codes: Vec<String> = diagnostics.codes().iter().map(|c| c.to_string()).collect();
                return Err(TestCaseError::fail(format!(
                    "the policy does not compile ({codes:?}):\n{policy}"
                )));
            }
        };
        let text = json!({"subject": {"event_name": value}, "action": "read"}).to_string();
        let request = Request::from_json(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for decision in [engine.decide(&request), engine.decide_naive(&request)] {
            let at = || format!("policy:\n{policy}request: {text}\ndecision: {}", decision.to_json());
            prop_assert_eq!(decision.decision, Effect::Deny, "{}", at());
            for entry in &decision.trace {
                if entry.kind.as_str() == "permit" {
                    prop_assert_ne!(entry.outcome, Outcome::Matched, "{}", at());
                }
            }
            for id in &forbids {
                prop_assert!(decision.reasons.contains(id), "{} does not apply\n{}", id, at());
                prop_assert!(decision.errors.iter().any(|e| &e.rule == id), "{} has no error\n{}", id, at());
            }
        }
    }
}

/// The definition of `matches`, written the obvious (exponential) way:
/// `*` is any run of characters, `?` one character, `\*` a literal star.
fn reference_glob(pattern: &[char], text: &[char]) -> bool {
    match pattern {
        [] => text.is_empty(),
        ['*', rest @ ..] => (0..=text.len()).any(|i| reference_glob(rest, &text[i..])),
        ['?', rest @ ..] => !text.is_empty() && reference_glob(rest, &text[1..]),
        ['\\', '*', rest @ ..] => text.first() == Some(&'*') && reference_glob(rest, &text[1..]),
        [c, rest @ ..] => text.first() == Some(c) && reference_glob(rest, &text[1..]),
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// `matches` (a linear matcher since it backtracked exponentially, see
    /// `tests/regressions.rs`) agrees with the definition on small patterns
    /// and texts, multi-byte characters included.
    #[test]
    fn matches_agrees_with_the_definition_of_a_glob(
        pattern in "([ab*?é]|\\\\\\*){0,7}",
        text in "[ab*é]{0,8}",
    ) {
        let policy = format!("permit if subject.id matches \"{}\";", pattern.replace('\\', "\\\\"));
        let engine = Engine::compile([("glob.writ", policy.as_str())], None)
            .map_err(|d| TestCaseError::fail(d.render(false)))?;
        let request = Request::from_json(&json!({"subject": {"id": text}}).to_string())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pattern_chars: Vec<char> = pattern.chars().collect();
        let text_chars: Vec<char> = text.chars().collect();
        prop_assert_eq!(
            engine.decide(&request).is_allow(),
            reference_glob(&pattern_chars, &text_chars),
            "`{}` matches `{}`", pattern, text
        );
    }
}
