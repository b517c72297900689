//! Renders a typed [`Authorization`] into the [`Decision`] of the contract:
//! rule indices become ids, kinds and locations, errors become their
//! messages. The trace's steps stay typed; their text is written in one
//! place, `Step`'s `Display` in `crate::decision`.

use crate::authorize::{AuthError, Authorization, Considered, Fault, Obligated};
use crate::decision::{Decision, ErrorOut, Failed, Name, ObligationOut, PolicyRef, TraceEntry};
use crate::eval::EvalError;
use crate::ir::PolicySet;

/// The decision an authorization stands for.
pub fn decision(outcome: Authorization, set: &PolicySet, digest: &Name) -> Decision {
    let id = |rule: u32| set.rules[rule as usize].id.as_str().to_owned();
    let errors: Vec<ErrorOut> = outcome.errors.iter().map(|f| error(f, set)).collect();
    // A rule's error is both in `errors` and in its trace entry: write its
    // message once.
    let message = |rule: u32, e: Box<EvalError>| -> String {
        outcome
            .errors
            .iter()
            .zip(&errors)
            .find(|(fault, _)| {
                fault.rule == Some(rule) && matches!(&fault.error, AuthError::Eval(f) if *f == e)
            })
            .map_or_else(|| e.to_string(), |(_, out)| out.message.clone())
    };
    let trace = outcome
        .considered
        .into_iter()
        .map(|c| entry(c, set, &message))
        .collect();
    Decision {
        decision: outcome.effect,
        scope: outcome.scope,
        ttl: outcome.ttl,
        obligations: outcome
            .obligations
            .into_iter()
            .map(|o| obligation(o, set))
            .collect(),
        reasons: outcome.reasons.into_iter().map(id).collect(),
        dropped_scope: outcome.dropped,
        errors,
        trace,
        policy: PolicyRef {
            digest: digest.clone(),
        },
    }
}

fn obligation(o: Obligated, set: &PolicySet) -> ObligationOut {
    ObligationOut {
        kind: o.kind.to_owned(),
        event: o.event,
        value: o.value,
        rule: set.rules[o.rule as usize].id.as_str().to_owned(),
    }
}

fn error(fault: &Fault, set: &PolicySet) -> ErrorOut {
    ErrorOut {
        rule: match fault.rule {
            Some(rule) => set.rules[rule as usize].id.as_str().to_owned(),
            None => "request".to_owned(),
        },
        message: fault.error.to_string(),
    }
}

fn entry(
    c: Considered,
    set: &PolicySet,
    message: impl Fn(u32, Box<EvalError>) -> String,
) -> TraceEntry {
    let rule = &set.rules[c.rule as usize];
    TraceEntry {
        rule: rule.id.clone(),
        kind: rule.kind_name.clone(),
        at: rule.location.clone(),
        outcome: c.outcome,
        failed: c.failed.map(|(at, saw)| Failed {
            condition: rule.conjunct_text[at].clone(),
            saw,
        }),
        error: c.error.map(|e| message(c.rule, e)),
        effect: c.steps,
        because: c.because,
        closest: c.closest,
    }
}
