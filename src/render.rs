//! Renders a typed [`Authorization`] into the [`Decision`] of the contract:
//! rule indices become ids and errors their messages. The trace moves
//! across as it is: its entries' outcomes and steps stay typed, and the
//! steps' text is written in one place, `Step`'s `Display` in
//! `crate::decision`, when the decision is serialized.

use crate::authorize::{Authorization, Fault, Obligated};
use crate::decision::{Decision, ErrorOut, Name, ObligationOut, PolicyRef};
use crate::ir::PolicySet;

/// The decision an authorization stands for.
pub fn decision(outcome: Authorization, set: &PolicySet, digest: &Name) -> Decision {
    let id = |rule: u32| set.rules[rule as usize].id.as_str().to_owned();
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
        errors: outcome.errors.iter().map(|f| error(f, set)).collect(),
        trace: outcome.trace,
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
