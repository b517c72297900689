//! `writ diff` and `writ query`: questions over *all* requests, answered
//! from the policies themselves without a solver.
//!
//! The rules test a small set of values (docs/tree.md): string constants,
//! range thresholds, presence, booleans, levels. [`space`] gathers, from
//! every rule read, each attribute path's representative values, and the
//! search walks their product attribute by attribute, reading each rule's
//! condition with three-valued logic over the partial request. A branch
//! stops as soon as its answer is known for every request below it: for
//! `diff`, when the rules still alive on both sides are the same rules
//! (then every request below decides alike) or both sides surely deny; for
//! `query`, when the question is surely false there. What is left is
//! decided by the real engine. Conditions whose representative values may
//! not stand for every value (data lookups keyed by request values,
//! quantifiers, times, functions) are named per rule, and the requests
//! around them are also sampled (seeded, deterministic): the answer then
//! says it is bounded. docs/review.md has the design and its limits.

pub mod diff;
pub mod query;
mod same;
pub mod space;

use crate::ir::{PolicySet, RuleKind};
use space::{Cond, Probe, Space, Truth};

/// How far the search may go before it stops and says so.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Partial requests visited, at most.
    pub nodes: usize,
    /// Sampled requests around each class whose rules fall outside the
    /// enumerable part.
    pub samples_per_class: usize,
    /// Sampled requests in all, at most.
    pub samples: usize,
    /// The seed of the sampling.
    pub seed: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            nodes: 200_000,
            samples_per_class: 4,
            samples: 50_000,
            seed: 21,
        }
    }
}

/// How much of the request space an answer covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Partial requests visited.
    pub nodes: usize,
    /// Classes decided by the engine (full requests).
    pub classes: usize,
    /// Branches closed because their answer was known for every request
    /// below them.
    pub closed: usize,
    /// Quick descents to a class (a region is dived into before it is
    /// enumerated).
    pub dives: usize,
    /// Requests the contract refuses (skipped: nobody can send them).
    pub refused: usize,
    /// Requests sampled around classes outside the enumerable part.
    pub sampled: usize,
    /// The search stopped at a budget.
    pub stopped: bool,
    /// Regions with a difference explored only up to their first witness
    /// (the request counts are then lower bounds).
    pub cut: usize,
    /// Rules whose conditions fall outside the enumerable part and were
    /// read on the way, with why: `(side, rule id, reasons)`.
    pub outside: Vec<(String, String, Vec<&'static str>)>,
}

impl Coverage {
    /// True when every request was covered by the enumeration: no stop at
    /// the budget and no condition outside the enumerable part read.
    pub fn complete(&self) -> bool {
        !self.stopped && self.outside.is_empty()
    }

    /// One sentence on what was covered.
    pub fn sentence(&self) -> String {
        if self.complete() {
            if self.cut > 0 {
                return format!(
                    "complete as to where the sets differ: every branch was closed or reached a region that differs, but {} such region(s) were explored only up to a witness that widens, so they may hold other changes and their counts are lower bounds ({} classes decided, {} quick descents, {} branches closed)",
                    self.cut, self.classes, self.dives, self.closed
                );
            }
            return format!(
                "complete: every request was covered ({} classes decided, {} branches closed where the answer is known for every request below)",
                self.classes, self.closed
            );
        }
        let mut parts = Vec::new();
        if self.stopped {
            parts.push(format!(
                "the search stopped at a budget after {} partial requests",
                self.nodes
            ));
        }
        if !self.outside.is_empty() {
            parts.push(format!(
                "{} rule(s) test values the classes may not stand for, so {} request(s) were also sampled around them",
                self.outside.len(),
                self.sampled
            ));
        }
        format!(
            "bounded: {} ({} classes decided, {} branches closed)",
            parts.join("; "),
            self.classes,
            self.closed
        )
    }
}

/// One policy set as the search reads it.
pub(crate) struct Side<'a> {
    pub set: &'a PolicySet,
    pub name: &'static str,
    pub conds: Vec<Cond<'a>>,
    /// Each rule's reasons for falling outside the enumerable part.
    pub outside: Vec<Vec<&'static str>>,
}

impl<'a> Side<'a> {
    pub fn new(set: &'a PolicySet, space: &Space, name: &'static str) -> Side<'a> {
        Side {
            set,
            name,
            conds: set.rules.iter().map(|r| space.cond(&r.conjuncts)).collect(),
            outside: set.rules.iter().map(space::rule_outside).collect(),
        }
    }

    /// Each rule's truth under the assignment; the rules that read a
    /// condition outside the enumerable part go to `outside_used`.
    pub fn statuses(
        &self,
        probe: &Probe,
        assigned: &[Option<usize>],
        outside_used: &mut Vec<usize>,
    ) -> Vec<Truth> {
        self.conds
            .iter()
            .enumerate()
            .map(|(i, cond)| {
                let mut used = false;
                let truth = probe.truth(cond, self.set, assigned, false, &mut used);
                if used && !outside_used.contains(&i) {
                    outside_used.push(i);
                }
                truth
            })
            .collect()
    }

    /// True when every request below surely denies: a forbid holds, or no
    /// permit can.
    pub fn surely_denies(&self, statuses: &[Truth]) -> bool {
        let mut permit_possible = false;
        for (rule, status) in self.set.rules.iter().zip(statuses) {
            match (&rule.kind, status) {
                (RuleKind::Forbid, Truth::True | Truth::Error) => return true,
                (RuleKind::Permit { .. }, Truth::True | Truth::Unknown) => permit_possible = true,
                _ => {}
            }
        }
        !permit_possible
    }

    /// Records the rules read outside the enumerable part in `coverage`.
    pub fn note_outside(&self, used: &[usize], coverage: &mut Coverage) {
        for &i in used {
            let Some(rule) = self.set.rules.get(i) else {
                continue;
            };
            let reasons = self.outside.get(i).cloned().unwrap_or_default();
            if reasons.is_empty() {
                continue;
            }
            let id = rule.id.to_string();
            if !coverage
                .outside
                .iter()
                .any(|(side, rule, _)| side == self.name && *rule == id)
            {
                coverage.outside.push((self.name.to_owned(), id, reasons));
            }
        }
    }
}

/// Adds to `slots` what the sampling around a class varies: the slots read
/// outside the enumerable part by every rule of `side` that may still
/// match there, and records those rules in `coverage`.
pub(crate) fn sampled_slots(
    side: &Side<'_>,
    statuses: &[Truth],
    slots: &mut Vec<usize>,
    coverage: &mut Coverage,
) {
    for (i, status) in statuses.iter().enumerate() {
        if *status != Truth::False && side.outside.get(i).is_some_and(|o| !o.is_empty()) {
            if let Some(cond) = side.conds.get(i) {
                outside_slots(cond, slots);
            }
            side.note_outside(&[i], coverage);
        }
    }
}

/// The next request sampled around the class `value` (its `slots` given
/// random values), or `None` once the whole budget of samples is spent,
/// which marks the coverage as stopped.
pub(crate) fn sample_around(
    space: &Space,
    value: &serde_json::Value,
    slots: &[usize],
    rng: &mut space::Rng,
    budget: &Budget,
    coverage: &mut Coverage,
) -> Option<serde_json::Value> {
    if coverage.sampled >= budget.samples {
        coverage.stopped = true;
        return None;
    }
    let mut sample = value.clone();
    for &slot in slots {
        let random = space::random_value(&space.slots[slot], rng);
        space::set_value(&mut sample, &space.slots[slot].path, random);
    }
    coverage.sampled += 1;
    Some(sample)
}

/// The unassigned slots the undecided leaves of `cond` need.
pub(crate) fn wanted(cond: &Cond<'_>, assigned: &[Option<usize>], out: &mut Vec<usize>) {
    match cond {
        Cond::And(parts) | Cond::Or(parts) => parts.iter().for_each(|p| wanted(p, assigned, out)),
        Cond::Not(inner) => wanted(inner, assigned, out),
        Cond::Leaf {
            slots, decision, ..
        } => {
            if *decision {
                return;
            }
            for &s in slots {
                if assigned.get(s).copied().flatten().is_none() {
                    out.push(s);
                }
            }
        }
    }
}

/// The slots read by conditions outside the enumerable part (the ones the
/// sampling varies).
pub(crate) fn outside_slots(cond: &Cond<'_>, out: &mut Vec<usize>) {
    match cond {
        Cond::And(parts) | Cond::Or(parts) => parts.iter().for_each(|p| outside_slots(p, out)),
        Cond::Not(inner) => outside_slots(inner, out),
        Cond::Leaf { slots, outside, .. } => {
            if outside.is_some() {
                out.extend(slots.iter().copied());
            }
        }
    }
}

/// The candidate to assign next: the unassigned slot with the highest
/// weight, fewest values on ties.
pub(crate) fn pick(space: &Space, weights: &[(usize, usize)]) -> Option<usize> {
    let mut score = vec![0usize; space.slots.len()];
    for &(slot, weight) in weights {
        if let Some(s) = score.get_mut(slot) {
            *s += weight;
        }
    }
    (0..space.slots.len())
        .filter(|&s| score[s] > 0)
        .max_by(|&a, &b| {
            score[a]
                .cmp(&score[b])
                .then(space.slots[b].values.len().cmp(&space.slots[a].values.len()))
                .then(b.cmp(&a))
        })
}

/// The time slot is always assigned (to [`space::TIME`]).
pub(crate) fn start(space: &Space) -> Vec<Option<usize>> {
    space
        .slots
        .iter()
        .map(|s| {
            if s.values.len() == 1 && s.values[0].is_some() {
                Some(0)
            } else {
                None
            }
        })
        .collect()
}
