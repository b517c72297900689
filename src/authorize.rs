//! The authorizer: walks the decision tree, has the evaluator
//! (`crate::eval`) judge the candidate rules, and combines them into a
//! typed [`Authorization`]: which forbids denied, which permits granted,
//! the scope and TTL steps, the obligations and the errors (typed, with
//! their spans). `crate::render` turns an authorization into the
//! `Decision`; the trace it carries holds each considered rule by index
//! ([`Considered`]), with typed outcomes and steps: names, condition texts
//! and step texts are written only when the trace is read or serialized.
//!
//! The order of combination: a matching forbid denies; then the matched
//! permits' grants are built; no permit means deny by default; then scope
//! (requested items covered by a grant and by every `limit scope`), TTL
//! (the requested value capped by contributing permits and `limit ttl`
//! rules, in policy order, the caps computed for the request worked out
//! here) and obligations (permits' and `require`s',
//! deduplicated, in policy order).

use std::fmt;

use crate::compile::{NodeId, Tree, NEAR_LIMIT};
use std::sync::Arc;

use crate::decision::{Considered, Effect, Name, Outcome, Seen, Step};
use crate::eval::{EvalError, Evaluator, Fill, RuleResult};
use crate::ir::{Expr, Obligation, PolicySet, Rule, RuleKind, TtlCap};
use crate::request::{Prepared, Request};
use crate::scope::ScopeItem;

/// The TTL granted when no permit, limit or request bounds it.
pub const DEFAULT_TTL: u64 = 3600;

/// Everything the authorizer needs from a compiled engine.
pub struct Compiled<'e> {
    /// The checked rules (shared, so that a decision's trace can refer to
    /// them).
    pub set: &'e Arc<PolicySet>,
    /// Their decision tree.
    pub tree: &'e Tree,
    /// The policy digest.
    pub digest: &'e Name,
}

/// The typed result of authorizing one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    /// Allow or deny.
    pub effect: Effect,
    /// The rules that decided, by index: the granting permits on allow;
    /// the forbids, or the rules whose TTL cap or obligation failed, on
    /// deny.
    pub reasons: Vec<u32>,
    /// Granted scope items; empty on deny.
    pub scope: Vec<String>,
    /// Requested items no permit covered or a limit removed.
    pub dropped: Vec<String>,
    /// Granted lifetime in seconds; 0 on deny.
    pub ttl: u64,
    /// What the broker must do; empty on deny.
    pub obligations: Vec<Obligated>,
    /// What failed, in the order met.
    pub errors: Vec<Fault>,
    /// The rules considered, in policy order: each one's index, outcome,
    /// the condition that failed, its steps as [`Step`]s.
    pub trace: Vec<Considered>,
}

/// An obligation the decision carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligated {
    /// `approval`, `revoke_on`, `audience`, `log`.
    pub kind: &'static str,
    /// For `revoke_on`: the event.
    pub event: Option<String>,
    /// For `audience`: the value.
    pub value: Option<String>,
    /// The rule that asked for it.
    pub rule: u32,
}

/// An error in a decision, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The rule being evaluated; `None` for the request itself.
    pub rule: Option<u32>,
    /// What went wrong.
    pub error: AuthError,
}

/// What can go wrong while authorizing.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthError {
    /// A condition or template could not be evaluated.
    Eval(Box<EvalError>),
    /// TTL caps of 0 seconds brought the TTL to 0.
    TtlZero,
    /// The request asked for 0 seconds (and skipped validation).
    RequestedTtlZero,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Eval(e) => fmt::Display::fmt(e, f),
            AuthError::TtlZero => {
                f.write_str("the ttl works out to 0 seconds; an allow lasts at least one second")
            }
            AuthError::RequestedTtlZero => {
                f.write_str("`requested.ttl` is 0; ask for at least 1 second")
            }
        }
    }
}

/// Authorizes a request already validated into `prepared`.
pub fn authorize(compiled: &Compiled, request: &Request, prepared: &Prepared) -> Authorization {
    let mut walk = Walk::new(compiled, request, prepared);
    walk.evaluate_candidates();

    // A matching forbid (or one that failed closed) denies.
    let mut reasons = Vec::new();
    for i in 0..walk.matched.len() {
        let (slot, rule) = walk.matched_rule(i);
        if let RuleKind::Forbid = walk.kind(rule) {
            walk.trace[slot].effect.push(Step::Denied);
            reasons.push(rule);
        }
    }
    if !reasons.is_empty() {
        return walk.deny(reasons, Vec::new());
    }

    let granted = walk.grants();
    if granted.is_empty() {
        // Deny by default, naming the permits that came closest. No permit
        // matched, so no requested item is covered.
        walk.mark_closest();
        let dropped = prepared
            .scope
            .iter()
            .map(|item| item.as_str().to_owned())
            .collect();
        return walk.deny(Vec::new(), dropped);
    }

    let scope = walk.scope(&granted);
    if scope.deny {
        return walk.deny(Vec::new(), scope.dropped);
    }
    let ttl = match walk.ttl(&granted, &scope.contributing) {
        Ok(ttl) => ttl,
        Err(reasons) => return walk.deny(reasons, Vec::new()),
    };
    let obligations = match walk.obligations(&granted) {
        Ok(obligations) => obligations,
        Err(rule) => return walk.deny(vec![rule], Vec::new()),
    };
    let reasons = granted.iter().map(|g| g.rule).collect();
    Authorization {
        effect: Effect::Allow,
        reasons,
        scope: scope.scope,
        dropped: scope.dropped,
        ttl,
        obligations,
        errors: walk.errors,
        trace: walk.trace,
    }
}

/// A TTL cap met: a permit's `for` or a limit's cap.
struct Cap {
    /// The rule's slot in the trace.
    slot: usize,
    /// The rule's index.
    rule: u32,
    /// The cap, in seconds.
    seconds: u64,
    /// The cap was computed for the request.
    computed: bool,
    /// The cap could not be computed (and is 0).
    failed: bool,
}

impl Cap {
    fn new(slot: usize, rule: u32, seconds: u64) -> Cap {
        Cap {
            slot,
            rule,
            seconds,
            computed: false,
            failed: false,
        }
    }
}

/// A matched permit whose grant was built.
struct Grant {
    /// Its slot in the trace.
    slot: usize,
    /// Its rule index.
    rule: u32,
    /// Its grant, built for this request.
    items: Vec<ScopeItem>,
}

impl Grant {
    fn covers(&self, item: &ScopeItem) -> bool {
        self.items.iter().any(|p| p.covers(item))
    }
}

/// Which grants cover one scope item, by their index among the grants: a
/// bit each for the first 64 (a decision rarely has more than a few
/// grants), a list for the rest.
struct Covering {
    bits: u64,
    rest: Vec<usize>,
}

impl Covering {
    /// The grants of `granted` that cover `item`.
    fn of(granted: &[Grant], item: &ScopeItem) -> Covering {
        let mut covering = Covering {
            bits: 0,
            rest: Vec::new(),
        };
        for (i, g) in granted.iter().enumerate() {
            if g.covers(item) {
                if i < 64 {
                    covering.bits |= 1 << i;
                } else {
                    covering.rest.push(i);
                }
            }
        }
        covering
    }

    fn is_empty(&self) -> bool {
        self.bits == 0 && self.rest.is_empty()
    }

    /// Grant `i` covers the item.
    fn has(&self, i: usize) -> bool {
        if i < 64 {
            self.bits & (1 << i) != 0
        } else {
            self.rest.contains(&i)
        }
    }
}

/// The scope worked out from the grants, the request and the limits.
struct Scope {
    /// Granted items.
    scope: Vec<String>,
    /// Items dropped.
    dropped: Vec<String>,
    /// For each grant: it covers a granted item.
    contributing: Vec<bool>,
    /// Something was asked for or granted, nothing survived, and no permit
    /// allows without scope.
    deny: bool,
}

/// The state of one authorization.
struct Walk<'a> {
    compiled: &'a Compiled<'a>,
    set: &'a PolicySet,
    prepared: &'a Prepared,
    request: &'a Request,
    evaluator: Evaluator<'a>,
    /// The tree's candidates, ascending.
    candidates: Vec<u32>,
    /// The switches whose value the request missed (for `mark_closest`).
    near: Vec<NodeId>,
    /// The trace so far, in policy order.
    trace: Vec<Considered>,
    errors: Vec<Fault>,
    /// The slots of the rules that matched, in policy order.
    matched: Vec<usize>,
    /// Permits that did not match, with the conjunct that failed.
    missed_permits: Vec<(u32, usize)>,
}

impl<'a> Walk<'a> {
    fn new(compiled: &'a Compiled<'a>, request: &'a Request, prepared: &'a Prepared) -> Walk<'a> {
        // Sized for a typical pack's candidates, so that the walk does not
        // grow them push by push.
        let mut candidates = Vec::with_capacity(32);
        let mut near = Vec::with_capacity(8);
        compiled.tree.candidates(
            |attr| crate::eval::attr_value(request, prepared, attr),
            &mut candidates,
            &mut near,
        );
        let set: &PolicySet = compiled.set;
        let count = candidates.len();
        Walk {
            compiled,
            set,
            prepared,
            request,
            evaluator: Evaluator::new(request, prepared, &set.data),
            trace: Vec::with_capacity(count),
            candidates,
            near,
            errors: Vec::new(),
            matched: Vec::with_capacity(count),
            missed_permits: Vec::with_capacity(count),
        }
    }

    fn kind(&self, rule: u32) -> &'a RuleKind {
        &self.set.rules[rule as usize].kind
    }

    /// The `i`th matched rule: its slot in the trace and its index.
    fn matched_rule(&self, i: usize) -> (usize, u32) {
        let slot = self.matched[i];
        (slot, self.trace[slot].rule)
    }

    /// Records an error of `rule`; its index among the decision's errors,
    /// which the rule's trace entry keeps instead of the message.
    fn fault(&mut self, rule: u32, error: AuthError) -> u32 {
        let at = self.errors.len() as u32;
        self.errors.push(Fault {
            rule: Some(rule),
            error,
        });
        at
    }

    /// Evaluates the tree's candidates, in policy order.
    fn evaluate_candidates(&mut self) {
        for i in 0..self.candidates.len() {
            let index = self.candidates[i];
            let rule = &self.set.rules[index as usize];
            let fails_closed = !matches!(rule.kind, RuleKind::Permit { .. });
            let mut entry = match self.evaluator.rule(rule) {
                RuleResult::True => Considered::new(index, Outcome::Matched),
                RuleResult::False(at) => {
                    let mut entry = Considered::new(index, Outcome::NotMatched);
                    entry.failed = Some(seen(&mut self.evaluator, rule, at));
                    if !fails_closed {
                        self.missed_permits.push((index, at));
                    }
                    entry
                }
                RuleResult::Error(error) => {
                    let outcome = if fails_closed {
                        Outcome::Matched
                    } else {
                        Outcome::Error
                    };
                    let mut entry = Considered::new(index, outcome);
                    entry.error = Some(self.fault(index, AuthError::Eval(error)));
                    entry
                }
            };
            if entry.outcome == Outcome::Matched {
                // A rule that applies only by failing closed did not hold,
                // so its `because` would not be true.
                if let (Some(because), None) = (&rule.because, &entry.error) {
                    entry.because = self.evaluator.template(because, Fill::Text).ok();
                }
                self.matched.push(self.trace.len());
            }
            self.trace.push(entry);
        }
    }

    /// Builds the matched permits' grants; a grant that cannot be built
    /// makes its permit not match.
    fn grants(&mut self) -> Vec<Grant> {
        let mut granted = Vec::new();
        for i in 0..self.matched.len() {
            let (slot, rule) = self.matched_rule(i);
            let RuleKind::Permit { grant, .. } = self.kind(rule) else {
                continue;
            };
            match self.evaluator.scope_items(grant) {
                Ok(items) => granted.push(Grant { slot, rule, items }),
                Err(error) => {
                    self.trace[slot].outcome = Outcome::Error;
                    self.trace[slot].error = Some(self.fault(rule, AuthError::Eval(error)));
                }
            }
        }
        granted
    }

    /// Each applicable scope limit's patterns, built for this request. A
    /// pattern that cannot be built keeps nothing: the limit fails closed.
    fn scope_limits(&mut self) -> Vec<(usize, Vec<ScopeItem>)> {
        let mut limits = Vec::new();
        for i in 0..self.matched.len() {
            let (slot, rule) = self.matched_rule(i);
            let RuleKind::LimitScope(templates) = self.kind(rule) else {
                continue;
            };
            let patterns = match self.evaluator.scope_items(templates) {
                Ok(patterns) => patterns,
                Err(error) => {
                    self.trace[slot].error = Some(self.fault(rule, AuthError::Eval(error)));
                    Vec::new()
                }
            };
            limits.push((slot, patterns));
        }
        limits
    }

    /// The scope: the requested items (or, when none were requested,
    /// everything granted) that a grant covers and every limit keeps. On
    /// success each granting permit's first step says what it granted.
    fn scope(&mut self, granted: &[Grant]) -> Scope {
        let limits = self.scope_limits();
        let prepared = self.prepared;
        let requested = !prepared.scope.is_empty();
        let everything: Vec<ScopeItem>;
        let wanted: &[ScopeItem] = if requested {
            &prepared.scope
        } else {
            let mut all: Vec<ScopeItem> = granted
                .iter()
                .flat_map(|g| g.items.iter().cloned())
                .collect();
            all.sort();
            all.dedup();
            everything = all;
            &everything
        };
        let mut out = Scope {
            scope: Vec::new(),
            dropped: Vec::new(),
            contributing: vec![false; granted.len()],
            deny: false,
        };
        let mut limit_drops: Vec<Vec<String>> = vec![Vec::new(); limits.len()];
        // For each item in `out.scope`: which grants cover it, so that a
        // grant and an item are matched once, not again for the
        // contributing flags and the permits' steps.
        let mut kept: Vec<Covering> = Vec::with_capacity(wanted.len());
        for item in wanted {
            let covering = Covering::of(granted, item);
            if covering.is_empty() {
                out.dropped.push(item.as_str().to_owned());
                continue;
            }
            let mut survives = true;
            for (which, (_, patterns)) in limits.iter().enumerate() {
                if !patterns.iter().any(|p| p.covers(item)) {
                    limit_drops[which].push(item.as_str().to_owned());
                    survives = false;
                }
            }
            if !survives {
                out.dropped.push(item.as_str().to_owned());
                continue;
            }
            for (i, flag) in out.contributing.iter_mut().enumerate() {
                *flag |= covering.has(i);
            }
            out.scope.push(item.as_str().to_owned());
            kept.push(covering);
        }
        for ((slot, _), dropped) in limits.iter().zip(limit_drops) {
            self.trace[*slot]
                .effect
                .push(Step::NarrowedScope { dropped });
        }
        let any_grant = granted.iter().any(|g| !g.items.is_empty());
        if (requested || any_grant) && out.scope.is_empty() {
            for g in granted {
                if !g.items.is_empty() || requested {
                    self.trace[g.slot].effect.push(Step::CoveredNone);
                }
            }
            // A permit without a grant still allows when nothing was
            // requested.
            let plain_allow = !requested && granted.iter().any(|g| g.items.is_empty());
            out.deny = !plain_allow;
        }
        if !out.deny {
            self.permit_steps(granted, &out, &kept, requested);
        }
        out
    }

    /// Each granting permit's first step: the granted items it covers, or
    /// that it allows without scope of its own.
    fn permit_steps(
        &mut self,
        granted: &[Grant],
        scope: &Scope,
        kept: &[Covering],
        requested: bool,
    ) {
        for (i, g) in granted.iter().enumerate() {
            let step = if g.items.is_empty() {
                Step::AllowedWithoutScope
            } else if scope.contributing[i] || !requested {
                let mut items = String::new();
                for (text, covering) in scope.scope.iter().zip(kept) {
                    if covering.has(i) {
                        if !items.is_empty() {
                            items.push_str(", ");
                        }
                        items.push_str(text);
                    }
                }
                if items.is_empty() {
                    continue;
                }
                Step::Granted { items }
            } else {
                continue;
            };
            self.trace[g.slot].effect.insert(0, step);
        }
    }

    /// The TTL: requested, then capped by contributing permits and
    /// applicable limits in policy order. `Err` with the reasons when the
    /// caps bring it to 0.
    ///
    /// A limit's computed cap is worked out here, for this request; one
    /// that cannot be (a missing attribute, a string that is no
    /// timestamp, data of another type) caps at 0, with its error: a
    /// limit fails closed like a forbid.
    fn ttl(&mut self, granted: &[Grant], contributing: &[bool]) -> Result<u64, Vec<u32>> {
        // Sized once: a push that grows a vector costs more than the
        // allocation.
        let mut caps: Vec<Cap> = Vec::with_capacity(granted.len() + self.matched.len());
        for (g, contributes) in granted.iter().zip(contributing) {
            if let RuleKind::Permit {
                ttl: Some(seconds), ..
            } = *self.kind(g.rule)
            {
                if *contributes {
                    caps.push(Cap::new(g.slot, g.rule, seconds));
                }
            }
        }
        for i in 0..self.matched.len() {
            let (slot, rule) = self.matched_rule(i);
            match self.kind(rule) {
                RuleKind::LimitTtl(TtlCap::Const(seconds)) => {
                    caps.push(Cap::new(slot, rule, *seconds));
                }
                RuleKind::LimitTtl(TtlCap::Computed(expr)) => {
                    caps.push(self.computed_cap(slot, rule, expr));
                }
                _ => {}
            }
        }
        caps.sort_by_key(|cap| cap.rule);
        // A computed cap only ever lowers: when nothing else bounds the
        // TTL, it caps the default, so a far-away instant or a large value
        // in the request or the data never grants more than the hour a
        // request would get without it.
        let mut ttl: Option<u64> = self.request.requested.ttl;
        if ttl.is_none() && !caps.is_empty() && caps.iter().all(|cap| cap.computed) {
            ttl = Some(DEFAULT_TTL);
        }
        for cap in &caps {
            let step = match ttl {
                Some(now) if now <= cap.seconds => Step::TtlKept {
                    cap: cap.seconds,
                    ttl: now,
                },
                Some(now) => Step::TtlCapped {
                    from: now,
                    to: cap.seconds,
                },
                None => Step::TtlSet(cap.seconds),
            };
            if !matches!(step, Step::TtlKept { .. }) {
                ttl = Some(cap.seconds);
            }
            self.trace[cap.slot].effect.push(step);
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl > 0 {
            return Ok(ttl);
        }
        // A credential for zero seconds reads like a deny, and issuers such
        // as Vault take 0 for "use the default": refuse it instead. A
        // requested TTL of 0 never gets here (validation refuses it), so
        // the zero comes from the caps of 0 seconds, which are the reasons.
        let mut reasons = Vec::new();
        for cap in &caps {
            if cap.seconds > 0 {
                continue;
            }
            self.trace[cap.slot].effect.push(Step::TtlUnderOneSecond);
            // A cap that failed has its own error already.
            if !cap.failed {
                self.fault(cap.rule, AuthError::TtlZero);
            }
            reasons.push(cap.rule);
        }
        if reasons.is_empty() {
            // A request for 0 seconds that skipped validation.
            self.errors.push(Fault {
                rule: None,
                error: AuthError::RequestedTtlZero,
            });
        }
        Err(reasons)
    }

    /// A limit's cap computed for this request, its trace step saying how;
    /// 0 with the error when it cannot be computed.
    fn computed_cap(&mut self, slot: usize, rule: u32, expr: &'a Expr) -> Cap {
        match self.evaluator.ttl_cap(expr) {
            Ok((seconds, how)) => {
                self.trace[slot].effect.push(Step::TtlComputed { cap: seconds, how });
                Cap {
                    computed: true,
                    ..Cap::new(slot, rule, seconds)
                }
            }
            Err(error) => {
                let at = self.fault(rule, AuthError::Eval(error));
                let entry = &mut self.trace[slot];
                if entry.error.is_none() {
                    entry.error = Some(at);
                }
                Cap {
                    slot,
                    rule,
                    seconds: 0,
                    computed: true,
                    failed: true,
                }
            }
        }
    }

    /// The obligations of the granting permits and applicable requires,
    /// deduplicated, in policy order. `Err` with the rule whose obligation
    /// could not be computed.
    fn obligations(&mut self, granted: &[Grant]) -> Result<Vec<Obligated>, u32> {
        let mut sources: Vec<(usize, u32, &'a Obligation)> = Vec::new();
        for g in granted {
            if let RuleKind::Permit { obligations, .. } = self.kind(g.rule) {
                sources.extend(obligations.iter().map(|o| (g.slot, g.rule, o)));
            }
        }
        for i in 0..self.matched.len() {
            let (slot, rule) = self.matched_rule(i);
            if let RuleKind::Require(obligation) = self.kind(rule) {
                sources.push((slot, rule, obligation));
            }
        }
        sources.sort_by_key(|&(_, rule, _)| rule);
        let mut out: Vec<Obligated> = Vec::with_capacity(sources.len());
        for (slot, rule, obligation) in sources {
            let (kind, event, value) = match obligation {
                Obligation::Approval => ("approval", None, None),
                Obligation::Log => ("log", None, None),
                Obligation::RevokeOn(event) => ("revoke_on", Some(String::from(&**event)), None),
                Obligation::Audience(template) => {
                    match self.evaluator.obligation_value("audience", template) {
                        Ok(value) => ("audience", None, Some(value)),
                        Err(error) => {
                            // An obligation that cannot be stated cannot be
                            // honoured.
                            let at = self.fault(rule, AuthError::Eval(error));
                            let entry = &mut self.trace[slot];
                            entry.outcome = Outcome::Error;
                            entry.error = Some(at);
                            entry.effect.push(Step::ObligationFailed);
                            return Err(rule);
                        }
                    }
                }
            };
            if out
                .iter()
                .any(|o| o.kind == kind && o.event == event && o.value == value)
            {
                continue;
            }
            let detail = event.clone().or_else(|| value.clone());
            self.trace[slot]
                .effect
                .push(Step::ObligationAdded { kind, detail });
            out.push(Obligated {
                kind,
                event,
                value,
                rule,
            });
        }
        Ok(out)
    }

    /// On default deny: flags up to three permits that came closest (the
    /// most conditions held before the first that failed), adding permits
    /// found in the sibling branches of the switches the request missed.
    /// Costs a handful of rule evaluations, whatever the size of the
    /// policy: the rules below the missed switches were listed when the
    /// tree was built ([`Tree::rules_below`]).
    fn mark_closest(&mut self) {
        let set = self.set;
        // (conditions held, rule index, failed conjunct), best first.
        // Room for the permits near the missed switches too, so that the
        // pool is allocated once.
        let mut pool: Vec<(usize, u32, Option<usize>)> =
            Vec::with_capacity(self.missed_permits.len() + 2 * NEAR_LIMIT);
        pool.extend(
            self.missed_permits
                .iter()
                .map(|&(r, at)| (at, r, Some(at))),
        );
        if pool.len() < 3 {
            for rule in self.compiled.tree.rules_below(&self.near) {
                let is_permit = matches!(set.rules[rule as usize].kind, RuleKind::Permit { .. });
                if !is_permit || pool.iter().any(|p| p.1 == rule) {
                    continue;
                }
                match self.evaluator.rule(&set.rules[rule as usize]) {
                    RuleResult::False(at) => pool.push((at, rule, Some(at))),
                    _ => pool.push((0, rule, None)),
                }
            }
        }
        pool.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        pool.truncate(3);
        // The entries inserted below grow the trace once.
        self.trace.reserve(pool.len());
        for (_, index, at) in pool {
            // The trace stays sorted by rule: the candidates, ascending,
            // and the permits inserted below in order.
            let place = match self.trace.binary_search_by_key(&index, |c| c.rule) {
                Ok(slot) => {
                    self.trace[slot].closest = true;
                    continue;
                }
                Err(place) => place,
            };
            let rule = &set.rules[index as usize];
            let mut entry = Considered::new(index, Outcome::NotMatched);
            entry.failed = at.map(|at| seen(&mut self.evaluator, rule, at));
            entry.closest = true;
            // Keep the trace in policy order (three entries at most are
            // added, so inserting beats sorting).
            self.trace.insert(place, entry);
        }
    }

    fn deny(self, reasons: Vec<u32>, dropped: Vec<String>) -> Authorization {
        Authorization {
            effect: Effect::Deny,
            reasons,
            scope: Vec::new(),
            dropped,
            ttl: 0,
            obligations: Vec::new(),
            errors: self.errors,
            trace: self.trace,
        }
    }
}

/// The `at`th condition of `rule`, which was false, and the value it saw.
fn seen<'a>(evaluator: &mut Evaluator<'a>, rule: &'a Rule, at: usize) -> Seen {
    Seen {
        condition: at as u32,
        saw: evaluator.saw(&rule.conjuncts[at]),
    }
}
