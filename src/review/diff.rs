//! `writ diff OLD NEW`: every class of requests the two policy sets decide
//! differently, each with a witness request, the two decisions and the
//! rules responsible, sorted into the kinds of change `writ replay` uses.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::same::same_rule;
use super::space::{Probe, Rng, Space, Truth};
use super::{pick, sample_around, sampled_slots, start, wanted, Budget, Coverage, Side};
use crate::decision::Decision;
use crate::engine::Engine;
use crate::ir::RuleKind;
use crate::replay::{compare, FailOn, Kind};
use crate::request::Request;

/// A request the two sets decide differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Witness {
    /// The full request, as `writ eval` reads it.
    pub request: Value,
    /// The old set's decision (effect, scope, ttl, obligations, reasons).
    pub before: Value,
    /// The new set's decision.
    pub after: Value,
    /// Found by the bounded sampling, not by the enumeration.
    pub sampled: bool,
}

/// The classes with one kind of change and the same rules responsible.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// What changed.
    pub kind: Kind,
    /// What exactly, for the witness: `ttl 900 -> 3600`.
    pub detail: String,
    /// The rules responsible under the old set.
    pub rules_before: Vec<String>,
    /// The rules responsible under the new set.
    pub rules_after: Vec<String>,
    /// How many explored requests (classes and samples) changed so.
    pub requests: usize,
    /// The first of them.
    pub witness: Witness,
}

/// What `writ diff` found.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffReport {
    /// The changes, by kind (widening first), then by rules.
    pub groups: Vec<Group>,
    /// How much of the request space was covered.
    pub coverage: Coverage,
    /// The old set's digest.
    pub old_digest: String,
    /// The new set's digest.
    pub new_digest: String,
    /// Rules in the old set.
    pub old_rules: usize,
    /// Rules in the new set.
    pub new_rules: usize,
    /// Rules of the new set that decide exactly like one of the old set.
    pub alike: usize,
    /// The attribute paths explored.
    pub slots: Vec<String>,
}

impl DiffReport {
    /// True when some change allows more than before.
    pub fn widens(&self) -> bool {
        self.groups.iter().any(|g| g.kind.widens())
    }

    /// 1 when `fail_on` is met, else 0.
    pub fn exit_code(&self, fail_on: FailOn) -> u8 {
        let met = match fail_on {
            FailOn::Widen => self.widens(),
            FailOn::Change => !self.groups.is_empty(),
            FailOn::None => false,
        };
        u8::from(met)
    }

    /// Requests changed per kind.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for group in &self.groups {
            *counts.entry(group.kind).or_insert(0) += group.requests;
        }
        counts
    }
}

type Key = (Kind, Vec<String>, Vec<String>);

struct Differ<'a> {
    space: &'a Space,
    old: Side<'a>,
    new: Side<'a>,
    old_engine: &'a Engine,
    new_engine: &'a Engine,
    /// Each rule's class: rules that decide alike share one.
    class_old: Vec<usize>,
    class_new: Vec<usize>,
    budget: Budget,
    coverage: Coverage,
    groups: BTreeMap<Key, Group>,
    rng: Rng,
    region: Option<Region>,
}

/// How many partial requests a region with a difference is explored after
/// its first witness (ten times as many without one, then the search
/// stops and says so).
const REGION_NODES: usize = 2_000;

/// Quick descents into a region before it is enumerated.
const DIVES: usize = 256;

/// The region being explored: below a node where every differing rule is
/// decided.
struct Region {
    start: usize,
    found: bool,
    widened: bool,
}

/// Compares two compiled policy sets over all requests.
pub fn diff(old: &Engine, new: &Engine, budget: Budget) -> DiffReport {
    let old_set = old.policy();
    let new_set = new.policy();
    let space = Space::of(&[old_set, new_set], &[]);
    let data_equal = old_set.data == new_set.data;
    let n_old = old_set.rules.len();
    let class_old: Vec<usize> = (0..n_old)
        .map(|i| {
            (0..i)
                .find(|&k| same_rule(&old_set.rules[k], &old_set.rules[i], data_equal))
                .unwrap_or(i)
        })
        .collect();
    let class_new: Vec<usize> = (0..new_set.rules.len())
        .map(|j| {
            let rule = &new_set.rules[j];
            (0..n_old)
                .find(|&k| same_rule(&old_set.rules[k], rule, data_equal))
                .or_else(|| {
                    (0..j)
                        .find(|&k| same_rule(&new_set.rules[k], rule, data_equal))
                        .map(|k| n_old + k)
                })
                .unwrap_or(n_old + j)
        })
        .collect();
    let alike = class_new.iter().filter(|&&c| c < n_old).count();
    let mut differ = Differ {
        space: &space,
        old: Side::new(old_set, &space, "old"),
        new: Side::new(new_set, &space, "new"),
        old_engine: old,
        new_engine: new,
        class_old,
        class_new,
        budget,
        coverage: Coverage::default(),
        groups: BTreeMap::new(),
        rng: Rng::new(budget.seed),
        region: None,
    };
    let mut assigned = start(&space);
    differ.node(&mut assigned);
    let Differ {
        coverage, groups, ..
    } = differ;
    DiffReport {
        groups: groups.into_values().collect(),
        coverage,
        old_digest: old.digest().to_owned(),
        new_digest: new.digest().to_owned(),
        old_rules: n_old,
        new_rules: new_set.rules.len(),
        alike,
        slots: space.slots.iter().map(|s| s.dotted()).collect(),
    }
}

/// The classes of the rules that may still match, sorted.
fn live(statuses: &[Truth], classes: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = statuses
        .iter()
        .zip(classes)
        .filter(|(s, _)| **s != Truth::False)
        .map(|(_, c)| *c)
        .collect();
    out.sort_unstable();
    out
}

/// The classes in one sorted list and not the other (with multiplicity).
fn differing(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push(*x);
                i += 1;
            }
            (Some(_), Some(y)) => {
                out.push(*y);
                j += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (None, Some(y)) => {
                out.push(*y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

impl Differ<'_> {
    fn node(&mut self, assigned: &mut Vec<Option<usize>>) {
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
        let mut used_old = Vec::new();
        let mut used_new = Vec::new();
        let so = self.old.statuses(&probe, assigned, &mut used_old);
        let sn = self.new.statuses(&probe, assigned, &mut used_new);
        self.old.note_outside(&used_old, &mut self.coverage);
        self.new.note_outside(&used_new, &mut self.coverage);
        let lo = live(&so, &self.class_old);
        let ln = live(&sn, &self.class_new);
        if lo == ln {
            // The same rules may match on both sides: every request below
            // decides alike.
            self.coverage.closed += 1;
            return;
        }
        if self.old.surely_denies(&so) && self.new.surely_denies(&sn) {
            self.coverage.closed += 1;
            return;
        }
        let differs = differing(&lo, &ln);
        let mut weights = Vec::new();
        for (side, statuses, classes) in [
            (&self.old, &so, &self.class_old),
            (&self.new, &sn, &self.class_new),
        ] {
            for (i, status) in statuses.iter().enumerate() {
                if *status != Truth::Unknown {
                    continue;
                }
                let base = if differs.contains(&classes[i]) {
                    64
                } else if matches!(side.set.rules[i].kind, RuleKind::Forbid) {
                    16
                } else {
                    4
                };
                let mut slots = Vec::new();
                wanted(&side.conds[i], assigned, &mut slots);
                slots.sort_unstable();
                slots.dedup();
                // A rule that needs fewer values is decided sooner.
                let weight = base * 16 / slots.len().max(1);
                weights.extend(slots.into_iter().map(|s| (s, weight)));
            }
        }
        let Some(slot) = pick(self.space, &weights) else {
            self.leaf(self.space.filled(assigned), &so, &sn);
            return;
        };
        // A region: every rule that differs is decided here, so every
        // request below differs (or not) for the same rules.
        let root = self.region.is_none()
            && [(&so, &self.class_old), (&sn, &self.class_new)]
                .iter()
                .all(|(statuses, classes)| {
                    statuses
                        .iter()
                        .zip(classes.iter())
                        .all(|(s, c)| *s != Truth::Unknown || !differs.contains(c))
                });
        if root {
            self.region = Some(Region {
                start: self.coverage.nodes,
                found: false,
                widened: false,
            });
            // Quick dives first: a witness that widens settles the region.
            for _ in 0..DIVES {
                self.dive(assigned);
                if self.region.as_ref().is_some_and(|r| r.widened) {
                    self.coverage.cut += 1;
                    self.region = None;
                    return;
                }
            }
        }
        for (_, choice) in self.order(assigned, slot) {
            assigned[slot] = Some(choice);
            self.node(assigned);
            if let (true, Some(region)) = (root, &self.region) {
                let spent = self.coverage.nodes - region.start;
                if region.widened || (region.found && spent > REGION_NODES) {
                    self.coverage.cut += 1;
                    break;
                }
                if spent > REGION_NODES * 10 {
                    self.coverage.stopped = true;
                    break;
                }
            }
        }
        assigned[slot] = None;
        if root {
            self.region = None;
        }
    }

    /// One descent to a class without backtracking, each value chosen
    /// among the best by [`Differ::order`], at random (seeded).
    fn dive(&mut self, assigned: &mut [Option<usize>]) {
        let mut set = Vec::new();
        loop {
            let value = self.space.request(assigned);
            let Some(probe) = Probe::new(value.clone()) else {
                break;
            };
            let mut ignored = Vec::new();
            let so = self.old.statuses(&probe, assigned, &mut ignored);
            let sn = self.new.statuses(&probe, assigned, &mut ignored);
            if self.old.surely_denies(&so) && self.new.surely_denies(&sn) {
                break;
            }
            let mut weights = Vec::new();
            for (side, statuses) in [(&self.old, &so), (&self.new, &sn)] {
                for (i, status) in statuses.iter().enumerate() {
                    if *status == Truth::Unknown {
                        let mut slots = Vec::new();
                        wanted(&side.conds[i], assigned, &mut slots);
                        weights.extend(slots.into_iter().map(|s| (s, 1)));
                    }
                }
            }
            let Some(slot) = pick(self.space, &weights) else {
                self.coverage.dives += 1;
                self.judge(&self.space.filled(assigned), false);
                break;
            };
            // Only values that keep some side from a sure deny.
            let order: Vec<usize> = self
                .order(assigned, slot)
                .into_iter()
                .filter(|(score, _)| *score < 1000)
                .map(|(_, c)| c)
                .collect();
            if order.is_empty() {
                break;
            }
            let mut k = 0;
            while k + 1 < order.len() && self.rng.below(4) == 0 {
                k += 1;
            }
            assigned[slot] = Some(order[k]);
            set.push(slot);
        }
        for slot in set {
            assigned[slot] = None;
        }
    }

    /// The values of `slot` to try, consistent ones only, those that keep
    /// both sides furthest from a sure deny first (so a difference shows
    /// early).
    fn order(&self, assigned: &mut [Option<usize>], slot: usize) -> Vec<(usize, usize)> {
        let mut scored = Vec::new();
        for choice in 0..self.space.slots[slot].values.len() {
            if !self.space.consistent(assigned, slot, choice) {
                continue;
            }
            assigned[slot] = Some(choice);
            let absent = usize::from(self.space.slots[slot].values[choice].is_none());
            let score = match Probe::new(self.space.request(assigned)) {
                None => usize::MAX,
                Some(probe) => {
                    let mut ignored = Vec::new();
                    // An absent value makes the tests on it err, which fails
                    // permits and denies through forbids: tried last.
                    let mut score = 50 * absent;
                    for side in [&self.old, &self.new] {
                        let statuses = side.statuses(&probe, assigned, &mut ignored);
                        if side.surely_denies(&statuses) {
                            score += 1000;
                        }
                        for (rule, status) in side.set.rules.iter().zip(&statuses) {
                            match (&rule.kind, status) {
                                (RuleKind::Forbid, Truth::Unknown) => score += 1,
                                (RuleKind::Permit { .. }, Truth::False | Truth::Error) => score += 8,
                                _ => {}
                            }
                        }
                    }
                    score
                }
            };
            scored.push((score, choice));
        }
        assigned[slot] = None;
        scored.sort();
        scored
    }

    /// A class: decided by both engines, and sampled around when a rule
    /// that may still match falls outside the enumerable part.
    fn leaf(&mut self, value: Value, so: &[Truth], sn: &[Truth]) {
        self.coverage.classes += 1;
        self.judge(&value, false);
        let mut slots = Vec::new();
        sampled_slots(&self.old, so, &mut slots, &mut self.coverage);
        sampled_slots(&self.new, sn, &mut slots, &mut self.coverage);
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
            self.judge(&sample, true);
        }
    }

    fn judge(&mut self, value: &Value, sampled: bool) {
        let Ok((request, _)) = Request::from_value(value.clone()) else {
            return;
        };
        let before = self.old_engine.decide(&request);
        let after = self.new_engine.decide(&request);
        let b = crate::replay::Side::of(&before);
        let a = crate::replay::Side::of(&after);
        let groups = &mut self.groups;
        let region = &mut self.region;
        compare(&b, &a, &mut |kind, detail, (rules_before, rules_after)| {
            if let Some(region) = region.as_mut() {
                region.found = true;
                region.widened |= kind.widens();
            }
            let key = (kind, rules_before.clone(), rules_after.clone());
            groups
                .entry(key)
                .and_modify(|g| g.requests += 1)
                .or_insert_with(|| Group {
                    kind,
                    detail,
                    rules_before,
                    rules_after,
                    requests: 1,
                    witness: Witness {
                        request: value.clone(),
                        before: summary(&before),
                        after: summary(&after),
                        sampled,
                    },
                });
        });
    }
}

/// The compared parts of a decision, as JSON.
pub fn summary(decision: &Decision) -> Value {
    json!({
        "decision": decision.decision,
        "scope": decision.scope,
        "ttl": decision.ttl,
        "obligations": decision.obligations,
        "reasons": decision.reasons,
    })
}

/// A decision summary in a few words.
fn summary_text(summary: &Value) -> String {
    let effect = summary["decision"].as_str().unwrap_or("?");
    let words = |key: &str| -> String {
        summary[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Object(o) => {
                            let kind = o.get("kind").and_then(Value::as_str).unwrap_or("?");
                            match o
                                .get("event")
                                .or_else(|| o.get("value"))
                                .and_then(Value::as_str)
                            {
                                Some(x) => format!("{kind} {x}"),
                                None => kind.to_owned(),
                            }
                        }
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    if effect == "allow" {
        format!(
            "allow [{}] for {}s, obligations [{}] (by {})",
            words("scope"),
            summary["ttl"],
            words("obligations"),
            words("reasons")
        )
    } else {
        match words("reasons") {
            reasons if reasons.is_empty() => "deny (no permit matched)".to_owned(),
            reasons => format!("deny (by {reasons})"),
        }
    }
}

fn verdict(report: &DiffReport) -> String {
    if report.groups.is_empty() {
        if report.coverage.complete() {
            "no difference".to_owned()
        } else {
            "no difference found where it looked (coverage is bounded)".to_owned()
        }
    } else if report.widens() {
        "WIDENS: some requests are allowed more than before".to_owned()
    } else {
        "narrows only".to_owned()
    }
}

fn rules(list: &[String]) -> String {
    if list.is_empty() {
        "(none)".to_owned()
    } else {
        list.join(", ")
    }
}

/// The report for people.
pub fn render_text(report: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "writ diff: {}", verdict(report));
    let _ = writeln!(
        out,
        "rules: {} old, {} new, {} of the new decide exactly like an old one",
        report.old_rules, report.new_rules, report.alike
    );
    let _ = writeln!(out, "coverage: {}", report.coverage.sentence());
    if !report.coverage.outside.is_empty() {
        let _ = writeln!(out, "\noutside the enumerable part (sampled, not enumerated):");
        for (side, rule, reasons) in &report.coverage.outside {
            let _ = writeln!(out, "  {side} {rule}: {}", reasons.join(", "));
        }
    }
    let counts = report.counts();
    if !counts.is_empty() {
        let _ = writeln!(out, "\nchanges per kind (requests explored):");
        for (kind, count) in &counts {
            let tag = if kind.widens() { "widens" } else { "narrows" };
            let _ = writeln!(out, "  {:<20} {count:>7}  ({tag})", kind.label());
        }
        let _ = writeln!(out, "\nby rule, with a witness:");
        for group in &report.groups {
            let _ = writeln!(
                out,
                "  {}: {} request(s); rules before: {}; after: {}",
                group.kind.label(),
                group.requests,
                rules(&group.rules_before),
                rules(&group.rules_after)
            );
            let _ = writeln!(out, "    {}", group.detail);
            let _ = writeln!(
                out,
                "    witness{}: {}",
                if group.witness.sampled {
                    " (sampled)"
                } else {
                    ""
                },
                group.witness.request
            );
            let _ = writeln!(out, "    old: {}", summary_text(&group.witness.before));
            let _ = writeln!(out, "    new: {}", summary_text(&group.witness.after));
        }
    }
    out
}

/// The report for tools.
pub fn render_json(report: &DiffReport) -> String {
    let changes: Vec<Value> = report
        .groups
        .iter()
        .map(|g| {
            json!({
                "kind": g.kind.code(),
                "widens": g.kind.widens(),
                "detail": g.detail,
                "rules_before": g.rules_before,
                "rules_after": g.rules_after,
                "requests": g.requests,
                "witness": g.witness.request,
                "sampled": g.witness.sampled,
                "before": g.witness.before,
                "after": g.witness.after,
            })
        })
        .collect();
    let c = &report.coverage;
    let outside: Vec<Value> = c
        .outside
        .iter()
        .map(|(side, rule, reasons)| json!({ "side": side, "rule": rule, "reasons": reasons }))
        .collect();
    json!({
        "old": report.old_digest,
        "new": report.new_digest,
        "widens": report.widens(),
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
            "attributes": report.slots,
        },
        "rules": { "old": report.old_rules, "new": report.new_rules, "alike": report.alike },
        "changes": changes,
    })
    .to_string()
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The report as a pull-request comment.
pub fn render_markdown(report: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### writ diff: {}\n", verdict(report));
    let _ = writeln!(out, "Coverage: {}.\n", md_cell(&report.coverage.sentence()));
    if !report.coverage.outside.is_empty() {
        let _ = writeln!(
            out,
            "Rules outside the enumerable part (sampled, not enumerated):\n"
        );
        for (side, rule, reasons) in &report.coverage.outside {
            let _ = writeln!(out, "- {side} `{rule}`: {}", reasons.join(", "));
        }
        let _ = writeln!(out);
    }
    if report.groups.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "| change | requests | rules before | rules after | example |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---|");
    for g in &report.groups {
        let mark = if g.kind.widens() { " ⚠" } else { "" };
        let _ = writeln!(
            out,
            "| {}{mark} | {} | {} | {} | {} |",
            g.kind.label(),
            g.requests,
            md_cell(&rules(&g.rules_before)),
            md_cell(&rules(&g.rules_after)),
            md_cell(&g.detail)
        );
    }
    let _ = writeln!(out, "\n<details><summary>Witness requests</summary>\n");
    for g in &report.groups {
        let _ = writeln!(
            out,
            "**{}** ({} -> {}):\n\n```json\n{}\n```\n",
            g.kind.label(),
            md_cell(&summary_text(&g.witness.before)),
            md_cell(&summary_text(&g.witness.after)),
            g.witness.request
        );
    }
    let _ = writeln!(out, "</details>");
    out
}
