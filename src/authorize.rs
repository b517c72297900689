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

use std::cell::Cell;
use std::fmt;

use crate::compile::{NodeId, Tree, NEAR_LIMIT};
use std::sync::Arc;

use crate::decision::{Considered, Did, Effect, Name, Outcome, Saw, Seen, Step};
use crate::eval::{EvalError, Evaluator, Fill, RuleResult};
use crate::ir::{Attr, Expr, Obligation, PolicySet, Rule, RuleKind, TtlCap};
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
    /// The obligations added, in policy order: what the broker must do
    /// on allow (a deny carries none; its trace's steps may still name
    /// those added before an obligation failed).
    pub obligations: Vec<Obligated>,
    /// What failed, in the order met.
    pub errors: Vec<Fault>,
    /// The rules considered, in policy order: each one's index, outcome
    /// and the condition that failed.
    pub trace: Vec<Considered>,
    /// The steps the considered rules took, each with its rule's index,
    /// in rule order (one rule's steps in the order taken).
    pub effects: Vec<(u32, Did)>,
    /// The `because` texts of the matched rules that have one, by rule
    /// index, in rule order.
    pub because: Vec<(u32, String)>,
}

/// An obligation the decision carries. A `revoke_on`'s event stays in the
/// policy set (read with [`Obligated::event`]); only an audience, filled
/// for the request, is a string of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligated {
    /// `approval`, `revoke_on`, `audience`, `log`.
    pub kind: &'static str,
    /// For `audience`: the value.
    pub value: Option<String>,
    /// The rule that asked for it.
    pub rule: u32,
    /// Which of the rule's obligations it is (0 for a `require`).
    pub source: u32,
}

impl Obligated {
    /// For `revoke_on`: the event, read from `set`, the policy set the
    /// rule index is into.
    pub fn event<'s>(&self, set: &'s PolicySet) -> Option<&'s str> {
        match obligation_of(set, self.rule, self.source) {
            Some(Obligation::RevokeOn(event)) => Some(event),
            _ => None,
        }
    }

    /// The event or the value, when the kind has one (what the trace's
    /// `added obligation` step names).
    pub fn detail<'s>(&'s self, set: &'s PolicySet) -> Option<&'s str> {
        self.event(set).or(self.value.as_deref())
    }
}

/// The `source`th obligation of rule `rule` of `set` (a `require`'s one
/// obligation for 0).
fn obligation_of(set: &PolicySet, rule: u32, source: u32) -> Option<&Obligation> {
    match &set.rules.get(rule as usize)?.kind {
        RuleKind::Permit { obligations, .. } => obligations.get(source as usize),
        RuleKind::Require(obligation) if source == 0 => Some(obligation),
        _ => None,
    }
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

/// The vectors an authorization works in and then drops: the tree's
/// candidates, the switches it missed, the matched rules' slots, the
/// grants, which grants cover each kept item, the TTL caps, and the string
/// a grant's template is filled into. Kept per thread between decisions,
/// emptied, so that a decision does not allocate and free each of them
/// again: none of them is part of the outcome.
#[derive(Default)]
struct Scratch {
    candidates: Vec<u64>,
    near: Vec<NodeId>,
    matched: Vec<usize>,
    granted: Vec<Grant>,
    kept: Vec<Covering>,
    caps: Vec<Cap>,
    /// A grant's text, filled from its template.
    text: String,
}

/// A vector longer than this is not kept for the next decision, so that
/// one large decision does not hold its memory for the life of the thread.
const SCRATCH_KEPT: usize = 1024;

impl Scratch {
    /// Empties every vector (the grants' items are dropped), keeping the
    /// room of those that are not too large.
    fn empty(&mut self) {
        fn reset<T>(vec: &mut Vec<T>) {
            if vec.capacity() > SCRATCH_KEPT {
                *vec = Vec::new();
            } else {
                vec.clear();
            }
        }
        reset(&mut self.candidates);
        reset(&mut self.near);
        reset(&mut self.matched);
        reset(&mut self.granted);
        reset(&mut self.kept);
        reset(&mut self.caps);
        if self.text.capacity() > SCRATCH_KEPT {
            self.text = String::new();
        }
    }
}

thread_local! {
    /// This thread's [`Scratch`], taken for the length of a decision (a
    /// decision that would find it taken, or one that panicked, gets or
    /// leaves empty vectors: only the reuse is lost).
    static SCRATCH: Cell<Scratch> = const { Cell::new(Scratch {
        candidates: Vec::new(),
        near: Vec::new(),
        matched: Vec::new(),
        granted: Vec::new(),
        kept: Vec::new(),
        caps: Vec::new(),
        text: String::new(),
    }) };
}

/// Authorizes a request already validated into `prepared`.
pub fn authorize(compiled: &Compiled, request: &Request, prepared: &Prepared) -> Authorization {
    let mut scratch = SCRATCH.with(Cell::take);
    let outcome = authorize_in(compiled, request, prepared, &mut scratch);
    scratch.empty();
    SCRATCH.with(|cell| cell.set(scratch));
    outcome
}

/// [`authorize`], working in `scratch`'s (empty) vectors.
fn authorize_in(
    compiled: &Compiled,
    request: &Request,
    prepared: &Prepared,
    scratch: &mut Scratch,
) -> Authorization {
    let Scratch {
        candidates,
        near,
        matched,
        granted,
        kept,
        caps,
        text,
    } = scratch;
    let mut walk = Walk::new(compiled, request, prepared, candidates, near, matched);
    walk.evaluate_candidates();

    // A matching forbid (or one that failed closed) denies.
    let mut reasons = Vec::new();
    for i in 0..walk.matched.len() {
        let (_, rule) = walk.matched_rule(i);
        if let RuleKind::Forbid = walk.kind(rule) {
            walk.step(rule, Step::Denied);
            reasons.push(rule);
        }
    }
    if !reasons.is_empty() {
        return walk.deny(reasons, Vec::new());
    }

    walk.grants(granted, text);
    let granted: &[Grant] = granted;
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

    let scope = walk.scope(granted, kept);
    if scope.deny {
        return walk.deny(Vec::new(), scope.dropped);
    }
    let ttl = match walk.ttl(granted, &scope.contributing, caps) {
        Ok(ttl) => ttl,
        Err(reasons) => return walk.deny(reasons, Vec::new()),
    };
    if let Err(rule) = walk.obligations(granted) {
        return walk.deny(vec![rule], Vec::new());
    }
    let reasons = granted.iter().map(|g| g.rule).collect();
    walk.finish_effects();
    Authorization {
        effect: Effect::Allow,
        reasons,
        scope: scope.scope,
        dropped: scope.dropped,
        ttl,
        obligations: walk.obligations,
        errors: walk.errors,
        trace: walk.trace,
        effects: walk.effects,
        because: walk.because,
    }
}

/// A TTL cap met: a permit's `for` or a limit's cap.
struct Cap {
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
    fn new(rule: u32, seconds: u64) -> Cap {
        Cap {
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
#[derive(Default)]
struct Covering {
    bits: u64,
    rest: Vec<usize>,
}

impl Covering {
    /// The grants of `granted` that cover `item`.
    fn of(granted: &[Grant], item: &ScopeItem) -> Covering {
        let mut covering = Covering::default();
        for (i, g) in granted.iter().enumerate() {
            if g.covers(item) {
                covering.insert(i);
            }
        }
        covering
    }

    /// Notes that grant `i` covers the item (once: each grant's index is
    /// inserted at most once by [`Covering::of`]).
    fn insert(&mut self, i: usize) {
        if i < 64 {
            self.bits |= 1 << i;
        } else {
            self.rest.push(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.bits == 0 && self.rest.is_empty()
    }

    /// Adds the grants `other` has.
    fn add(&mut self, other: &Covering) {
        self.bits |= other.bits;
        for &i in &other.rest {
            if !self.rest.contains(&i) {
                self.rest.push(i);
            }
        }
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
    /// The grants that cover a granted item.
    contributing: Covering,
    /// Something was asked for or granted, nothing survived, and no permit
    /// allows without scope.
    deny: bool,
}

/// The state of one authorization; `'s` is its scratch vectors'.
struct Walk<'a, 's> {
    compiled: &'a Compiled<'a>,
    set: &'a PolicySet,
    prepared: &'a Prepared,
    request: &'a Request,
    evaluator: Evaluator<'a>,
    /// The tree's candidates, ascending, each with the conjuncts of its
    /// condition the walk proved true ([`crate::compile::proven_rule`]).
    candidates: &'s [u64],
    /// The switches whose value the request missed (for `mark_closest`).
    near: &'s [NodeId],
    /// The trace so far, in policy order.
    trace: Vec<Considered>,
    errors: Vec<Fault>,
    /// The slots of the rules that matched, in policy order.
    matched: &'s mut Vec<usize>,
    /// The steps taken, each with its rule's index, in the order taken
    /// (sorted by rule at the end: [`Walk::finish_effects`]).
    effects: Vec<(u32, Did)>,
    /// The `because` texts, by rule index, in rule order.
    because: Vec<(u32, String)>,
    /// The obligations added so far.
    obligations: Vec<Obligated>,
}

impl<'a, 's> Walk<'a, 's> {
    /// The walk of the tree for `request`, in the scratch vectors given
    /// (empty).
    fn new(
        compiled: &'a Compiled<'a>,
        request: &'a Request,
        prepared: &'a Prepared,
        candidates: &'s mut Vec<u64>,
        near: &'s mut Vec<NodeId>,
        matched: &'s mut Vec<usize>,
    ) -> Walk<'a, 's> {
        // Sized for a typical pack's candidates, so that the walk does not
        // grow them push by push (no allocation once a decision on this
        // thread has made the room).
        candidates.reserve(32);
        near.reserve(8);
        compiled.tree.candidates_proven(
            |attr| crate::eval::attr_value(request, prepared, attr),
            candidates,
            near,
        );
        let set: &PolicySet = compiled.set;
        let count = candidates.len();
        matched.reserve(count);
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
            matched,
            effects: Vec::new(),
            because: Vec::new(),
            obligations: Vec::new(),
        }
    }

    /// Records a step of rule `rule`, after its earlier ones.
    fn step(&mut self, rule: u32, step: Step) {
        self.effects.push((rule, Did::Step(step)));
    }

    /// Records a step of rule `rule` before its earlier ones.
    fn first_step(&mut self, rule: u32, step: Step) {
        // The effects are in the order taken, so the rule's first step is
        // the first with its index; inserting there keeps the order the
        // final (stable) sort by rule gives.
        let at = self
            .effects
            .iter()
            .position(|(r, _)| *r == rule)
            .unwrap_or(self.effects.len());
        self.effects.insert(at, (rule, Did::Step(step)));
    }

    /// Puts the steps in rule order, each rule's in the order taken.
    fn finish_effects(&mut self) {
        // A stable sort; a decision has a handful of steps, mostly in
        // order already.
        self.effects.sort_by_key(|(rule, _)| *rule);
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
    #[cold]
    #[inline(never)]
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
            let (index, known) = crate::compile::proven_rule(self.candidates[i]);
            let rule = &self.set.rules[index as usize];
            let fails_closed = !matches!(rule.kind, RuleKind::Permit { .. });
            let entry = match self.evaluator.rule_known(rule, known) {
                RuleResult::True => Considered::new(index, Outcome::Matched),
                RuleResult::False(at) => {
                    let mut entry = Considered::new(index, Outcome::NotMatched);
                    entry.failed = Some(seen(&mut self.evaluator, rule, at));
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
                    if let Ok(text) = self.evaluator.template(because, Fill::Text) {
                        self.because.push((index, text));
                    }
                }
                self.matched.push(self.trace.len());
            }
            self.trace.push(entry);
        }
        // Every step belongs to a matched rule: a forbid's denial, a
        // permit's grant, scope and TTL, a limit's, an obligation; about
        // two each, so that the steps are not grown push by push.
        let steps = 2 * self.matched.len();
        self.effects.reserve_exact(steps);
    }

    /// Builds the matched permits' grants into `granted` (empty), filling
    /// their templates in `text`; a grant that cannot be built makes its
    /// permit not match.
    fn grants(&mut self, granted: &mut Vec<Grant>, text: &mut String) {
        granted.reserve(self.matched.len());
        for i in 0..self.matched.len() {
            let (slot, rule) = self.matched_rule(i);
            let RuleKind::Permit { grant, .. } = self.kind(rule) else {
                continue;
            };
            match self.evaluator.scope_items_in(grant, text) {
                Ok(items) => granted.push(Grant { slot, rule, items }),
                Err(error) => {
                    self.trace[slot].outcome = Outcome::Error;
                    self.trace[slot].error = Some(self.fault(rule, AuthError::Eval(error)));
                }
            }
        }
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
    /// `kept` (empty) is the room for which grants cover each kept item.
    fn scope(&mut self, granted: &[Grant], kept: &mut Vec<Covering>) -> Scope {
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
            scope: Vec::with_capacity(wanted.len()),
            dropped: Vec::new(),
            contributing: Covering::default(),
            deny: false,
        };
        let mut limit_drops: Vec<Vec<String>> = vec![Vec::new(); limits.len()];
        // For each item in `out.scope`: which grants cover it, so that a
        // grant and an item are matched once, not again for the
        // contributing flags and the permits' steps.
        kept.reserve(wanted.len());
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
            out.contributing.add(&covering);
            out.scope.push(item.as_str().to_owned());
            kept.push(covering);
        }
        for ((slot, _), dropped) in limits.iter().zip(limit_drops) {
            let rule = self.trace[*slot].rule;
            self.step(rule, Step::NarrowedScope { dropped });
        }
        let any_grant = granted.iter().any(|g| !g.items.is_empty());
        if (requested || any_grant) && out.scope.is_empty() {
            for g in granted {
                if !g.items.is_empty() || requested {
                    self.step(g.rule, Step::CoveredNone);
                }
            }
            // A permit without a grant still allows when nothing was
            // requested.
            let plain_allow = !requested && granted.iter().any(|g| g.items.is_empty());
            out.deny = !plain_allow;
        }
        if !out.deny {
            self.permit_steps(granted, &out, kept, requested);
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
            } else if scope.contributing.has(i) || !requested {
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
            self.first_step(g.rule, step);
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
    /// `caps` (empty) is the room for the caps met.
    fn ttl(
        &mut self,
        granted: &[Grant],
        contributing: &Covering,
        caps: &mut Vec<Cap>,
    ) -> Result<u64, Vec<u32>> {
        // Sized once: a push that grows a vector costs more than the
        // allocation.
        caps.reserve(granted.len() + self.matched.len());
        // The grants are the matched permits whose grant was built, in the
        // same (policy) order as the matched rules: read together, the
        // caps come in policy order, with no sort.
        let mut grants = granted
            .iter()
            .enumerate()
            .map(|(i, g)| (g, contributing.has(i)))
            .peekable();
        for i in 0..self.matched.len() {
            let (slot, rule) = self.matched_rule(i);
            if let Some((g, contributes)) = grants.next_if(|(g, _)| g.slot == slot) {
                if let (RuleKind::Permit {
                    ttl: Some(seconds), ..
                }, true) = (self.kind(g.rule), contributes)
                {
                    caps.push(Cap::new(g.rule, *seconds));
                }
                continue;
            }
            match self.kind(rule) {
                RuleKind::LimitTtl(TtlCap::Const(seconds)) => {
                    caps.push(Cap::new(rule, *seconds));
                }
                RuleKind::LimitTtl(TtlCap::Computed(expr)) => {
                    caps.push(self.computed_cap(slot, rule, expr));
                }
                _ => {}
            }
        }
        debug_assert!(caps.windows(2).all(|w| w[0].rule < w[1].rule));
        // A computed cap only ever lowers: when nothing else bounds the
        // TTL, it caps the default, so a far-away instant or a large value
        // in the request or the data never grants more than the hour a
        // request would get without it.
        let mut ttl: Option<u64> = self.request.requested.ttl;
        if ttl.is_none() && !caps.is_empty() && caps.iter().all(|cap| cap.computed) {
            ttl = Some(DEFAULT_TTL);
        }
        for cap in caps.iter() {
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
            self.step(cap.rule, step);
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
        for cap in caps.iter() {
            if cap.seconds > 0 {
                continue;
            }
            self.step(cap.rule, Step::TtlUnderOneSecond);
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
                self.step(rule, Step::TtlComputed { cap: seconds, how });
                Cap {
                    computed: true,
                    ..Cap::new(rule, seconds)
                }
            }
            Err(error) => {
                let at = self.fault(rule, AuthError::Eval(error));
                let entry = &mut self.trace[slot];
                if entry.error.is_none() {
                    entry.error = Some(at);
                }
                Cap {
                    rule,
                    seconds: 0,
                    computed: true,
                    failed: true,
                }
            }
        }
    }

    /// The obligations of the granting permits and applicable requires,
    /// deduplicated, in policy order, into `self.obligations`. `Err` with
    /// the rule whose obligation could not be computed.
    fn obligations(&mut self, granted: &[Grant]) -> Result<(), u32> {
        let is_require = |kind: &RuleKind| matches!(kind, RuleKind::Require(_));
        // Sized once: the permits' obligations and the requires'.
        let mut count = 0;
        for g in granted {
            if let RuleKind::Permit { obligations, .. } = self.kind(g.rule) {
                count += obligations.len();
            }
        }
        for i in 0..self.matched.len() {
            count += usize::from(is_require(self.kind(self.matched_rule(i).1)));
        }
        self.obligations.reserve_exact(count);
        // The grants and the matched rules are both in policy order: merge
        // them by rule instead of collecting and sorting.
        let (mut g, mut m) = (0, 0);
        loop {
            while m < self.matched.len() && !is_require(self.kind(self.matched_rule(m).1)) {
                m += 1;
            }
            let require = (m < self.matched.len()).then(|| self.matched_rule(m));
            match (granted.get(g), require) {
                (Some(grant), next) if !matches!(next, Some((_, rule)) if rule <= grant.rule) => {
                    g += 1;
                    if let RuleKind::Permit { obligations, .. } = self.kind(grant.rule) {
                        for (source, obligation) in (0..).zip(obligations.iter()) {
                            self.oblige(grant.slot, grant.rule, source, obligation)?;
                        }
                    }
                }
                (_, Some((slot, rule))) => {
                    m += 1;
                    if let RuleKind::Require(obligation) = self.kind(rule) {
                        self.oblige(slot, rule, 0, obligation)?;
                    }
                }
                (_, None) => return Ok(()),
            }
        }
    }

    /// Adds the `source`th obligation of rule `rule` (in trace slot
    /// `slot`) unless the same one was added; `Err` with the rule when it
    /// cannot be computed.
    fn oblige(
        &mut self,
        slot: usize,
        rule: u32,
        source: u32,
        obligation: &'a Obligation,
    ) -> Result<(), u32> {
        let set = self.set;
        let (kind, event, value) = match obligation {
            Obligation::Approval => ("approval", None, None),
            Obligation::Log => ("log", None, None),
            Obligation::RevokeOn(event) => ("revoke_on", Some(&**event), None),
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
                        self.step(rule, Step::ObligationFailed);
                        return Err(rule);
                    }
                }
            }
        };
        if self
            .obligations
            .iter()
            // The cheapest comparisons first: the value (nearly always
            // none), the kind (the same literal, so the same pointer).
            .any(|o| {
                o.value == value
                    && (std::ptr::eq(o.kind, kind) || o.kind == kind)
                    && o.event(set) == event
            })
        {
            return Ok(());
        }
        let at = self.obligations.len() as u32;
        self.effects.push((rule, Did::Obligation(at)));
        self.obligations.push(Obligated {
            kind,
            value,
            rule,
            source,
        });
        Ok(())
    }

    /// On default deny: flags up to three permits that came closest (the
    /// most conditions held before the first that failed), adding permits
    /// found in the sibling branches of the switches the request missed.
    /// Costs a handful of rule evaluations, whatever the size of the
    /// policy: the rules below the missed switches were listed when the
    /// tree was built ([`Tree::rules_below`]).
    #[cold]
    #[inline(never)]
    fn mark_closest(&mut self) {
        let set = self.set;
        // The permits that did not match, with the conjunct that failed:
        // the trace's, which no later step changes.
        let missed = |c: &Considered| match (&set.rules[c.rule as usize].kind, &c.failed) {
            (RuleKind::Permit { .. }, Some(seen)) if c.outcome == Outcome::NotMatched => {
                Some((seen.condition as usize, c.rule))
            }
            _ => None,
        };
        let count = self.trace.iter().filter(|c| missed(c).is_some()).count();
        // (conditions held, rule index, failed conjunct), best first.
        let mut known = [(0, 0, None); 3];
        let mut found: Vec<(usize, u32, Option<usize>)>;
        let tree = self.compiled.tree;
        let pool: &[(usize, u32, Option<usize>)] = match tree.near_permits_false(self.near) {
            // No permit was a candidate, and each permit near the missed
            // switch held no condition: the closest are the first by rule
            // index, which is the order the sort below would give them.
            Some(permits) if count == 0 => {
                for (slot, &rule) in known.iter_mut().zip(permits) {
                    *slot = (0, rule, Some(0));
                }
                &known[..permits.len().min(known.len())]
            }
            _ => {
                // Room for the permits near the missed switches too, so
                // that the pool is allocated once.
                found = Vec::with_capacity(count + 2 * NEAR_LIMIT);
                found.extend(
                    self.trace
                        .iter()
                        .filter_map(missed)
                        .map(|(at, r)| (at, r, Some(at))),
                );
                if found.len() < 3 {
                    let evaluator = &mut self.evaluator;
                    tree.near_rules(self.near, |rule, false_first| {
                        let is_permit =
                            matches!(set.rules[rule as usize].kind, RuleKind::Permit { .. });
                        if !is_permit || found.iter().any(|p| p.1 == rule) {
                            return;
                        }
                        // A first conjunct the tree knows is false is what
                        // evaluating the rule would find first.
                        if false_first {
                            found.push((0, rule, Some(0)));
                            return;
                        }
                        match evaluator.rule(&set.rules[rule as usize]) {
                            RuleResult::False(at) => found.push((at, rule, Some(at))),
                            _ => found.push((0, rule, None)),
                        }
                    });
                }
                found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                found.truncate(3);
                &found
            }
        };
        // The entries inserted below grow the trace once. Most default
        // denies that get here have no trace yet: a new one of that size
        // costs less than growing the empty one.
        if self.trace.capacity() == 0 {
            self.trace = Vec::with_capacity(pool.len());
        } else {
            self.trace.reserve(pool.len());
        }
        // The last entry (its attribute and place in the trace) whose
        // conjunct read an attribute as it is: the closest permits below a
        // missed switch mostly failed on that switch's attribute, and saw
        // the same value, copied from it.
        let mut last: Option<(&Attr, usize)> = None;
        for &(_, index, at) in pool {
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
            let mut noted = None;
            if let Some(at) = at {
                let attr = rule.conjuncts.get(at).and_then(crate::eval::saw_attr);
                let earlier = match (attr, last) {
                    (Some(attr), Some((seen_attr, slot))) if attr == seen_attr => self
                        .trace
                        .get(slot)
                        .and_then(|c| c.failed.as_ref())
                        .map(|seen| seen.saw.clone()),
                    _ => None,
                };
                entry.failed = Some(match earlier {
                    Some(saw) => Seen {
                        condition: at as u32,
                        saw,
                    },
                    None => {
                        noted = attr.map(|attr| (attr, place));
                        seen(&mut self.evaluator, rule, at)
                    }
                });
            }
            entry.closest = true;
            // The entry copied from moves down when one goes before it.
            if let Some((_, slot)) = &mut last {
                if place <= *slot {
                    *slot += 1;
                }
            }
            if noted.is_some() {
                last = noted;
            }
            // Keep the trace in policy order (three entries at most are
            // added, so inserting beats sorting).
            self.trace.insert(place, entry);
        }
    }

    #[cold]
    #[inline(never)]
    fn deny(mut self, reasons: Vec<u32>, dropped: Vec<String>) -> Authorization {
        self.finish_effects();
        Authorization {
            effect: Effect::Deny,
            reasons,
            scope: Vec::new(),
            dropped,
            ttl: 0,
            obligations: self.obligations,
            errors: self.errors,
            trace: self.trace,
            effects: self.effects,
            because: self.because,
        }
    }
}

/// The `at`th condition of `rule`, which was false, and the value it saw.
fn seen<'a>(evaluator: &mut Evaluator<'a>, rule: &'a Rule, at: usize) -> Seen {
    let conjunct = &rule.conjuncts[at];
    // Most false conjuncts saw a bool known from their shape alone:
    // recorded without a JSON value in between.
    let saw = match crate::eval::saw_bool(conjunct) {
        Some(known) => Saw::Bool(known),
        None => evaluator.saw(conjunct).into(),
    };
    Seen {
        condition: at as u32,
        saw,
    }
}

#[cfg(test)]
mod tests {
    use super::Covering;

    fn covering(grants: &[usize]) -> Covering {
        let mut covering = Covering::default();
        for &i in grants {
            covering.insert(i);
        }
        covering
    }

    #[test]
    fn the_union_of_coverings_has_the_grants_of_each() {
        // Grants past the 64 a bit set holds, one of them in both.
        let (a, b) = (covering(&[0, 5, 63, 64, 100]), covering(&[5, 70, 100]));
        let mut union = covering(&[]);
        assert!(union.is_empty());
        union.add(&a);
        union.add(&b);
        for i in 0..200 {
            assert_eq!(union.has(i), a.has(i) || b.has(i), "grant {i}");
        }
        assert_eq!(union.rest.len(), 3, "{:?}", union.rest);
    }
}
