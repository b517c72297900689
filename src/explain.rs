//! Rendering a decision for people: `writ eval --explain`.
//!
//! The decision first, then what decided it, then how scope and TTL were
//! derived, then obligations, then (on default deny) the permits that came
//! closest; every step with its `file:line`.

use std::fmt::Write as _;

use crate::decision::{Decision, Effect, ErrorOut, Failed, ObligationOut, Outcome, Step, TraceEntry};
use crate::engine::Engine;
use crate::ir::{Obligation, RuleKind, TemplatePart};

/// ANSI styling, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colour when `color` is true.
    pub fn new(color: bool) -> Style {
        Style { color }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    fn green(self, text: &str) -> String {
        self.paint("1;32", text)
    }
    fn red(self, text: &str) -> String {
        self.paint("1;31", text)
    }
    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// `left` padded to `width`, at least two spaces, then `right`; no
/// trailing blanks.
fn columns(left: &str, width: usize, right: &str) -> String {
    let pad = width.saturating_sub(left.chars().count()).max(2);
    format!("{left}{}{right}", " ".repeat(pad))
        .trim_end()
        .to_owned()
}

fn rule_line(entry: &TraceEntry) -> String {
    format!("{} {}  {}", entry.kind, entry.rule, entry.at)
}

/// The explanation of a decision made by `engine`.
pub fn explain(decision: &Decision, engine: &Engine, style: Style) -> String {
    let mut out = String::new();
    verdict(&mut out, decision, style);
    decided_by(&mut out, decision, engine, style);
    scope_and_ttl(&mut out, decision, style);
    obligations(&mut out, decision, engine, style);
    errors(&mut out, decision, style);
    closest_permits(&mut out, decision, style);
    rules_considered(&mut out, decision, style);
    out
}

/// The verdict, and on allow what was granted.
fn verdict(out: &mut String, decision: &Decision, style: Style) {
    let verdict = match decision.decision {
        Effect::Allow => style.green("ALLOW"),
        Effect::Deny => style.red("DENY"),
    };
    let _ = writeln!(out, "{verdict}  {}", style.dim(&decision.policy.digest));
    if decision.decision == Effect::Allow {
        let _ = writeln!(
            out,
            "  scope {}  ttl {}s  obligations {}",
            if decision.scope.is_empty() {
                "(none)".to_owned()
            } else {
                decision.scope.join(", ")
            },
            decision.ttl,
            decision.obligations.len()
        );
    }

}

/// The rules that decided, with their `because`, error and doc comment.
fn decided_by(out: &mut String, decision: &Decision, engine: &Engine, style: Style) {
    let doc = |id: &str| {
        engine
            .policy()
            .rules
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.doc.clone())
    };
    let _ = writeln!(out, "\n{}", style.bold("decided by"));
    let deciding: Vec<&TraceEntry> = decision
        .trace
        .iter()
        .filter(|e| decision.reasons.iter().any(|r| e.rule == *r))
        .collect();
    if deciding.is_empty() {
        let text = match decision.decision {
            Effect::Deny if decision.errors.iter().any(ErrorOut::is_request) => {
                "the request was rejected before any rule ran".to_owned()
            }
            Effect::Deny
                if !decision.dropped_scope.is_empty()
                    && decision
                        .trace
                        .iter()
                        .any(|e| e.kind == "permit" && e.outcome == Outcome::Matched) =>
            {
                "no requested scope item survived: deny".to_owned()
            }
            Effect::Deny => "no permit matched: deny by default".to_owned(),
            Effect::Allow => "(nothing)".to_owned(),
        };
        let _ = writeln!(out, "  {text}");
    }
    for entry in deciding {
        let _ = writeln!(out, "  {}", rule_line(entry));
        if let Some(because) = &entry.because {
            let _ = writeln!(out, "    because {because}");
        }
        if let Some(error) = &entry.error {
            let _ = writeln!(out, "    error (fails closed): {error}");
        }
        if let Some(doc) = doc(&entry.rule) {
            for line in doc.lines() {
                let _ = writeln!(out, "    {}", style.dim(&format!("/// {line}")));
            }
        }
    }

}

/// How scope and TTL were derived, step by step.
fn scope_and_ttl(out: &mut String, decision: &Decision, style: Style) {
    let steps: Vec<&TraceEntry> = decision
        .trace
        .iter()
        .filter(|e| e.effect.iter().any(Step::is_scope_or_ttl))
        .collect();
    if !steps.is_empty() || !decision.dropped_scope.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("scope and ttl"));
        for entry in steps {
            for effect in entry
                .effect
                .iter()
                .filter(|x| !matches!(x, Step::ObligationAdded { .. }))
            {
                let _ = writeln!(
                    out,
                    "  {}",
                    columns(
                        &effect.to_string(),
                        40,
                        &style.dim(&format!("{} {}", entry.rule, entry.at))
                    )
                );
            }
            // A limit's message says why it applied; a permit's is under
            // "decided by".
            if entry.kind == "limit" {
                if let Some(because) = &entry.because {
                    let _ = writeln!(out, "    because {because}");
                }
            }
        }
        if !decision.dropped_scope.is_empty() {
            let _ = writeln!(out, "  dropped: {}", decision.dropped_scope.join(", "));
        }
        if decision.decision == Effect::Allow {
            let _ = writeln!(out, "  => ttl {}s", decision.ttl);
        }
    }

}

/// The trace entries of the rules that ask for `obligation`: the rule it
/// is credited to first, then every other matched permit or applied
/// `require` that states the same obligation (the decision lists each
/// obligation once, under the first).
fn crediting<'d>(
    decision: &'d Decision,
    engine: &Engine,
    obligation: &ObligationOut,
) -> Vec<&'d TraceEntry> {
    let states = |rule: &crate::ir::Rule| {
        let same = |o: &Obligation| match o {
            Obligation::Approval => obligation.kind == "approval",
            Obligation::Log => obligation.kind == "log",
            Obligation::RevokeOn(event) => {
                obligation.kind == "revoke_on" && obligation.event.as_deref() == Some(&**event)
            }
            // An audience built per request is credited to its first rule
            // only; one without holes can be compared.
            Obligation::Audience(template) => {
                obligation.kind == "audience"
                    && template.parts.iter().all(|p| matches!(p, TemplatePart::Text(_)))
                    && obligation.value.as_deref()
                        == Some(
                            &*template
                                .parts
                                .iter()
                                .map(|p| match p {
                                    TemplatePart::Text(t) => t.to_string(),
                                    TemplatePart::Hole(_) => String::new(),
                                })
                                .collect::<String>(),
                        )
            }
        };
        match &rule.kind {
            RuleKind::Permit { obligations, .. } => obligations.iter().any(same),
            RuleKind::Require(o) => same(o),
            _ => false,
        }
    };
    let first = decision.trace.iter().find(|e| e.rule == obligation.rule);
    let others = decision.trace.iter().filter(|e| {
        e.rule != obligation.rule
            && match e.kind.as_str() {
                "permit" => e.outcome == Outcome::Matched,
                // An erring `require` applies (it fails closed).
                "require" => e.outcome != Outcome::NotMatched,
                _ => false,
            }
            && engine
                .policy()
                .rules
                .iter()
                .find(|r| r.id == e.rule)
                .is_some_and(states)
    });
    first.into_iter().chain(others).collect()
}

/// What a failed condition saw, in words: a `not (...)` that failed saw
/// its inside hold, which "saw true" alone does not say.
pub(crate) fn saw(failed: &Failed) -> String {
    match (failed.condition.starts_with("not "), &failed.saw) {
        (true, serde_json::Value::Bool(true)) => {
            "true: all of what `not` negates held".to_owned()
        }
        _ => failed.saw.to_string(),
    }
}

fn obligations(out: &mut String, decision: &Decision, engine: &Engine, style: Style) {
    if !decision.obligations.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("obligations"));
        for obligation in &decision.obligations {
            let what = obligation
                .event
                .as_deref()
                .or(obligation.value.as_deref())
                .map(|x| format!(" {x}"))
                .unwrap_or_default();
            let mut first = true;
            for entry in crediting(decision, engine, obligation) {
                let credit = style.dim(&format!("{} {}", entry.rule, entry.at));
                let line = if first {
                    columns(&format!("{}{what}", obligation.kind), 40, &credit)
                } else {
                    columns("", 40, &format!("{} {credit}", style.dim("also")))
                };
                first = false;
                let _ = writeln!(out, "  {line}");
                if entry.kind == "require" {
                    if let Some(because) = &entry.because {
                        let _ = writeln!(out, "    because {because}");
                    }
                }
            }
        }
    }

}

fn errors(out: &mut String, decision: &Decision, style: Style) {
    if !decision.errors.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("errors"));
        for error in &decision.errors {
            let _ = writeln!(out, "  {}: {}", error.rule, error.message);
        }
    }

}

/// On a default deny: the permits that came closest, and what failed.
fn closest_permits(out: &mut String, decision: &Decision, style: Style) {
    let closest: Vec<&TraceEntry> = decision.trace.iter().filter(|e| e.closest).collect();
    if !closest.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("closest permits"));
        for entry in closest {
            let _ = writeln!(out, "  {}", rule_line(entry));
            if let Some(failed) = &entry.failed {
                let _ = writeln!(
                    out,
                    "    failed: {}  (saw {})",
                    failed.condition,
                    saw(failed)
                );
            }
        }
    }

}

/// Every rule the walk considered, one line each.
fn rules_considered(out: &mut String, decision: &Decision, style: Style) {
    let _ = writeln!(out, "\n{}", style.bold("rules considered"));
    for entry in &decision.trace {
        let mark = match entry.outcome {
            Outcome::Matched => style.green("+"),
            Outcome::NotMatched => style.dim("-"),
            Outcome::Error => style.red("!"),
        };
        let detail = match (&entry.failed, &entry.error) {
            (Some(failed), _) => format!("{}  saw {}", failed.condition, saw(failed)),
            (None, Some(error)) => format!("error: {error}"),
            (None, None) => entry.effect_text(),
        };
        let _ = writeln!(out, "  {mark} {}", columns(&rule_line(entry), 48, &detail));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request refused before any rule ran is told apart from a rule
    /// that happens to be called `request` by the error's marker, not its
    /// rule id: the decision JSON of the two says `"rule": "request"` alike.
    #[test]
    fn a_rejected_request_is_not_a_rule_called_request() {
        let engine = Engine::compile(
            [(
                "p.writ",
                "@id(\"request\")\npermit if context.n > 1\n  grant [\"read:x\"] for 5m;\n",
            )],
            None,
        )
        .expect("compiles");
        let rejected = Decision::rejected("not JSON".to_owned(), engine.digest());
        let text = explain(&rejected, &engine, Style::new(false));
        assert!(text.contains("the request was rejected before any rule ran"), "{text}");

        let errs = engine
            .decide_json(r#"{"context":{"n":"many"}}"#)
            .expect("valid request");
        assert_eq!(errs.errors.len(), 1);
        assert_eq!(errs.errors[0].rule, "request");
        assert!(!errs.errors[0].is_request());
        let text = explain(&errs, &engine, Style::new(false));
        assert!(!text.contains("rejected before any rule ran"), "{text}");
        assert!(text.contains("no permit matched: deny by default"), "{text}");
    }
}
