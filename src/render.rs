//! Renders a typed [`Authorization`] into the [`Decision`] of the contract:
//! rule indices become ids. The trace and the errors move across as they
//! are, with the policy set they index (one reference count per decision,
//! one more and a shared list when there are errors): rule ids, locations,
//! condition texts and error messages are read from the policy set and the
//! typed errors, and the steps' text written in one place, `Step`'s
//! `Display` in `crate::decision`, only when the decision is serialized or
//! its trace or errors read.

use std::sync::Arc;

use crate::authorize::{authorize, Authorization, Compiled};
use crate::compile::{Node, NodeId, Tree};
use crate::decision::{
    Decision, Effect, Errors, Faults, Name, Obligations, PolicyRef, Record, Trace,
};
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
        proven: Vec::new(),
        proven_slots: Vec::new(),
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
    let errors = Errors::recorded(faults.clone());
    let allow = outcome.effect == Effect::Allow;
    // The trace and the obligations share one record, which holds what
    // they are built from until they are read.
    let (trace, obligations) = if outcome.trace.is_empty() {
        (Trace::default(), Obligations::default())
    } else {
        let record = Arc::new(Record {
            set: Arc::clone(set),
            considered: outcome.trace,
            effects: outcome.effects,
            because: outcome.because,
            obligations: outcome.obligations,
            faults,
        });
        let obligations = if allow {
            Obligations::recorded(Arc::clone(&record))
        } else {
            Obligations::default()
        };
        (Trace::new(record), obligations)
    };
    Decision {
        decision: outcome.effect,
        scope: outcome.scope,
        ttl: outcome.ttl,
        obligations,
        reasons: outcome.reasons.into_iter().map(id).collect(),
        dropped_scope: outcome.dropped,
        errors,
        trace,
        policy: PolicyRef {
            digest: digest.clone(),
        },
    }
}
