//! `writ query`: is there a request for which a condition holds, in the
//! language's own expressions over the request, plus a few words about
//! the decision (`effect`, `allow`, `deny`, `allowed`, `denied`, `scope`,
//! `scope matches "glob"`, `ttl`, `obligation KIND`)? The answer is a
//! witness request, or "none" with what was covered.

use serde_json::{json, Value};

use super::space::{self, Cond, Probe, Rng, Space, Truth, QUERY_KEY};
use super::{outside_slots, pick, sample_around, sampled_slots, start, wanted, Budget, Coverage, Side};
use crate::decision::{Decision, Effect};
use crate::engine::Engine;
use crate::eval::{Evaluator, RuleResult};
use crate::ir::{PolicySet, RuleKind};
use crate::lexer::{lex, Token};
use crate::request::Request;
use crate::source::Sources;

/// A question, checked: compiled as the condition of a rule over the
/// request, with the decision under `context.writ_query`.
pub struct Query {
    /// As written.
    pub text: String,
    /// As the checker read it (decision words replaced).
    pub rewritten: String,
    engine: Engine,
}

/// Why a query cannot be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn decision_path(field: &str) -> String {
    format!("context.{QUERY_KEY}.{field}")
}

/// Replaces the decision words of a query by the paths they read.
pub fn rewrite(text: &str) -> Result<String, QueryError> {
    let mut sources = Sources::new();
    let file = sources.add("query", text.to_owned());
    let (tokens, errors) = lex(file, text);
    if let Some((span, error)) = errors.first() {
        return Err(QueryError(format!(
            "the query does not read at byte {}: {error}",
            span.start
        )));
    }
    let tokens: Vec<_> = tokens.into_iter().filter(|t| !t.token.is_trivia()).collect();
    let mut out = String::new();
    let mut at = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let start = tokens[i].span.start as usize;
        let after_dot = i > 0 && tokens[i - 1].token == Token::Dot;
        let next = tokens.get(i + 1).map(|t| &t.token);
        let replacement: Option<(String, usize)> = match (&tokens[i].token, after_dot) {
            (_, true) => None,
            (Token::Ident(name), false) => match name.as_ref() {
                "effect" => Some((decision_path("effect"), 1)),
                "allow" => Some(("\"allow\"".to_owned(), 1)),
                "deny" => Some(("\"deny\"".to_owned(), 1)),
                "allowed" => Some((format!("({} == \"allow\")", decision_path("effect")), 1)),
                "denied" => Some((format!("({} == \"deny\")", decision_path("effect")), 1)),
                "obligation" => {
                    let kind = match next {
                        Some(Token::Approval) => "approval".to_owned(),
                        Some(Token::Log) => "log".to_owned(),
                        Some(Token::Revoke) => "revoke_on".to_owned(),
                        Some(Token::Audience) => "audience".to_owned(),
                        _ => {
                            return Err(QueryError(
                                "`obligation` names a kind: `obligation approval`, `obligation revoke`, `obligation audience` or `obligation log`"
                                    .to_owned(),
                            ))
                        }
                    };
                    Some((
                        format!("(\"{kind}\" in {})", decision_path("obligations")),
                        2,
                    ))
                }
                _ => None,
            },
            (Token::Ttl, false) => Some((decision_path("ttl"), 1)),
            (Token::Scope, false) => match (next, tokens.get(i + 2)) {
                (Some(Token::Matches), Some(glob)) if matches!(glob.token, Token::Str(_)) => {
                    let glob_text = &text[glob.span.start as usize..glob.span.end as usize];
                    Some((
                        format!(
                            "any(writ_item in {}: writ_item matches {glob_text})",
                            decision_path("scope")
                        ),
                        3,
                    ))
                }
                _ => Some((decision_path("scope"), 1)),
            },
            _ => None,
        };
        match replacement {
            Some((with, count)) => {
                let end = tokens[i + count - 1].span.end as usize;
                out.push_str(&text[at..start]);
                out.push_str(&with);
                at = end;
                i += count;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[at..]);
    Ok(out)
}

impl Query {
    /// Checks a query.
    pub fn new(text: &str) -> Result<Query, QueryError> {
        let rewritten = rewrite(text)?;
        let source = format!("forbid if {rewritten}\n;\n");
        let engine = Engine::compile([("query", source)], None).map_err(|d| {
            QueryError(format!(
                "the query does not check (read as `{rewritten}`):\n{}",
                d.render(false)
            ))
        })?;
        if engine.policy().rules.len() != 1 {
            return Err(QueryError(
                "a query is one condition, without `;`".to_owned(),
            ));
        }
        Ok(Query {
            text: text.to_owned(),
            rewritten,
            engine,
        })
    }

    fn set(&self) -> &PolicySet {
        self.engine.policy()
    }
}

/// A request the query holds for.
#[derive(Debug, Clone)]
pub struct Found {
    /// The full request, as `writ eval` reads it.
    pub request: Value,
    /// Its decision under the policy set.
    pub decision: Decision,
    /// Found by the bounded sampling, not by the enumeration.
    pub sampled: bool,
}

/// What `writ query` found.
#[derive(Debug, Clone)]
pub struct QueryReport {
    /// The query as written.
    pub query: String,
    /// The first request found, if any.
    pub found: Option<Found>,
    /// How much of the request space was covered.
    pub coverage: Coverage,
}

struct Asker<'a> {
    space: &'a Space,
    side: Side<'a>,
    engine: &'a Engine,
    query: &'a Query,
    cond: Cond<'a>,
    budget: Budget,
    coverage: Coverage,
    found: Option<Found>,
    rng: Rng,
}

/// Looks for a request the query holds for under `engine`'s policy set.
pub fn query(engine: &Engine, query: &Query, budget: Budget) -> QueryReport {
    let qset = query.set();
    let extra: Vec<&crate::ir::Expr> = qset.rules.iter().flat_map(|r| &r.conjuncts).collect();
    let space = Space::of(&[engine.policy()], &extra);
    let cond = match qset.rules.first() {
        Some(rule) => space.cond(&rule.conjuncts),
        None => Cond::And(Vec::new()),
    };
    let mut asker = Asker {
        space: &space,
        side: Side::new(engine.policy(), &space, "policy"),
        engine,
        query,
        cond,
        budget,
        coverage: Coverage::default(),
        found: None,
        rng: Rng::new(budget.seed),
    };
    let mut assigned = start(&space);
    asker.node(&mut assigned);
    QueryReport {
        query: query.text.clone(),
        found: asker.found,
        coverage: asker.coverage,
    }
}

/// The request with a decision under `context.writ_query`.
fn with_decision(request: &Value, decision: &Decision) -> Value {
    let mut value = request.clone();
    let kinds: Vec<&str> = decision.obligations.iter().map(|o| o.kind.as_str()).collect();
    let seen = json!({
        "effect": decision.decision,
        "scope": decision.scope,
        "ttl": decision.ttl,
        "obligations": kinds,
    });
    let path: Vec<Box<str>> = vec!["context".into(), QUERY_KEY.into()];
    space::set_value(&mut value, &path, Some(seen));
    value
}

impl Asker<'_> {
    fn node(&mut self, assigned: &mut Vec<Option<usize>>) {
        if self.found.is_some() {
            return;
        }
        if self.coverage.nodes >= self.budget.nodes {
            self.coverage.stopped = true;
            return;
        }
        self.coverage.nodes += 1;
        let value = self.space.request(assigned);
        let Some(probe) = Probe::new(value.clone()) else {
            self.coverage.refused += 1;
            return;
        };
        let mut ignored = false;
        let qset = self.query.set();
        if matches!(
            probe.truth(&self.cond, qset, assigned, false, &mut ignored),
            Truth::False | Truth::Error
        ) {
            self.coverage.closed += 1;
            return;
        }
        let mut used = Vec::new();
        let statuses = self.side.statuses(&probe, assigned, &mut used);
        self.side.note_outside(&used, &mut self.coverage);
        if self.side.surely_denies(&statuses) {
            // Every request below is denied: ask the question of a deny.
            let deny = Decision {
                decision: Effect::Deny,
                ..Decision::rejected(String::new(), "")
            };
            if let Some(denied) = Probe::new(with_decision(&value, &deny)) {
                match denied.truth(&self.cond, qset, assigned, true, &mut ignored) {
                    Truth::False | Truth::Error => {
                        self.coverage.closed += 1;
                        return;
                    }
                    Truth::True => {
                        self.leaf(value, &statuses);
                        return;
                    }
                    Truth::Unknown => {}
                }
            }
        }
        let mut weights = Vec::new();
        let mut slots = Vec::new();
        wanted(&self.cond, assigned, &mut slots);
        weights.extend(slots.drain(..).map(|s| (s, 16)));
        for (i, status) in statuses.iter().enumerate() {
            if *status != Truth::Unknown {
                continue;
            }
            let weight = if matches!(self.side.set.rules[i].kind, RuleKind::Forbid) {
                2
            } else {
                1
            };
            wanted(&self.side.conds[i], assigned, &mut slots);
            weights.extend(slots.drain(..).map(|s| (s, weight)));
        }
        match pick(self.space, &weights) {
            None => self.leaf(self.space.filled(assigned), &statuses),
            Some(slot) => {
                for choice in 0..self.space.slots[slot].values.len() {
                    if self.space.consistent(assigned, slot, choice) {
                        assigned[slot] = Some(choice);
                        self.node(assigned);
                        if self.found.is_some() {
                            break;
                        }
                    }
                }
                assigned[slot] = None;
            }
        }
    }

    fn leaf(&mut self, value: Value, statuses: &[Truth]) {
        self.coverage.classes += 1;
        if self.judge(&value, false) {
            return;
        }
        let mut slots = Vec::new();
        sampled_slots(&self.side, statuses, &mut slots, &mut self.coverage);
        outside_slots(&self.cond, &mut slots);
        slots.sort_unstable();
        slots.dedup();
        if slots.is_empty() {
            return;
        }
        for _ in 0..self.budget.samples_per_class {
            let Some(sample) = sample_around(
                self.space,
                &value,
                &slots,
                &mut self.rng,
                &self.budget,
                &mut self.coverage,
            ) else {
                return;
            };
            if self.judge(&sample, true) {
                return;
            }
        }
    }

    /// Decides a request and asks the question of it.
    fn judge(&mut self, value: &Value, sampled: bool) -> bool {
        let Ok((request, _)) = Request::from_value(value.clone()) else {
            return false;
        };
        let decision = self.engine.decide(&request);
        let Ok((seen, prepared)) = Request::from_value(with_decision(value, &decision)) else {
            return false;
        };
        let qset = self.query.set();
        let Some(rule) = qset.rules.first() else {
            return false;
        };
        let holds = Evaluator::new(&seen, &prepared, &qset.data).rule(rule) == RuleResult::True;
        if holds {
            self.found = Some(Found {
                request: value.clone(),
                decision,
                sampled,
            });
        }
        holds
    }
}

/// The answer as JSON.
pub fn render_json(report: &QueryReport) -> String {
    let c = &report.coverage;
    let outside: Vec<Value> = c
        .outside
        .iter()
        .map(|(_, rule, reasons)| json!({ "rule": rule, "reasons": reasons }))
        .collect();
    let found = report.found.as_ref().map(|f| {
        json!({
            "request": f.request,
            "sampled": f.sampled,
            "decision": serde_json::from_str::<Value>(&f.decision.to_json()).unwrap_or(Value::Null),
        })
    });
    json!({
        "query": report.query,
        "found": found.is_some(),
        "witness": found,
        "complete": c.complete(),
        "coverage": {
            "complete": c.complete(),
            "nodes": c.nodes,
            "classes": c.classes,
            "closed": c.closed,
            "refused": c.refused,
            "sampled": c.sampled,
            "stopped_at_budget": c.stopped,
            "outside": outside,
        },
    })
    .to_string()
}
