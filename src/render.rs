//! Renders a typed [`Authorization`] into the [`Decision`] of the contract:
//! rule indices become ids. The trace and the errors move across as they
//! are, with the policy set they index (one reference count per decision,
//! one more and a shared list when there are errors): rule ids, locations,
//! condition texts and error messages are read from the policy set and the
//! typed errors, and the steps' text written in one place, `Step`'s
//! `Display` in `crate::decision`, only when the decision is serialized or
//! its trace or errors read.

use std::sync::Arc;

use crate::authorize::{authorize, Authorization, Compiled, Obligated};
use crate::compile::{Node, NodeId, Tree};
use crate::decision::{Decision, Errors, Faults, Name, ObligationOut, PolicyRef, Trace};
use crate::ir::PolicySet;
use crate::request::{Prepared, Request};

/// Decides a request. Never panics; any error fails closed.
pub fn decide(compiled: &Compiled, request: &Request) -> Decision {
    match request.validate() {
        Ok(prepared) => decide_prepared(compiled, request, &prepared),
        Err(error) => Decision::rejected(error.to_string(), compiled.digest.as_str()),
    }
}

/// Decides a request already validated into `prepared`.
pub fn decide_prepared(compiled: &Compiled, request: &Request, prepared: &Prepared) -> Decision {
    decision(
        authorize(compiled, request, prepared),
        compiled.set,
        compiled.digest,
    )
}

/// Evaluates every rule in order without the tree; the reference the tree
/// is tested against.
pub fn decide_naive(set: &Arc<PolicySet>, digest: &Name, request: &Request) -> Decision {
    let all: Vec<u32> = (0..set.rules.len() as u32).collect();
    let tree = Tree {
        nodes: vec![Node::Leaf { rules: all }],
        root: NodeId(0),
    };
    decide(
        &Compiled {
            set,
            tree: &tree,
            digest,
        },
        request,
    )
}

/// The decision an authorization stands for.
pub fn decision(outcome: Authorization, set: &Arc<PolicySet>, digest: &Name) -> Decision {
    let id = |rule: u32| set.rules[rule as usize].id.as_str().to_owned();
    // The errors stay typed, shared by the errors and the trace entries
    // that index them, until the decision is written or read.
    let faults = (!outcome.errors.is_empty())
        .then(|| Arc::new(Faults::new(Arc::clone(set), outcome.errors)));
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
        errors: Errors::recorded(faults.clone()),
        trace: Trace::new(Arc::clone(set), outcome.trace, faults),
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
