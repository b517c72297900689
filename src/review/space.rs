//! The space of requests `writ diff` and `writ query` explore: the
//! attribute paths the policies read ("slots"), a few representative values
//! for each (the constants tested, an "other" value, absent, the sides of
//! every range threshold, each level), the rules' conditions read with
//! three-valued logic over a partial assignment, and which conditions fall
//! outside the part where those values stand for every request.

use serde_json::{json, Map, Value};

use crate::ast::BinOp;
use crate::eval::Evaluator;
use crate::ir::{Builtin, Expr, ExprKind, Lit, Obligation, Rule, RuleKind, Template, TemplatePart};
use crate::ir::{PolicySet, TtlCap, Ty};
use crate::request::{Prepared, Request};
use crate::sensitivity::Sensitivity;

/// The decision time every explored request carries (requests without a
/// time would be decided at the clock's time, which no witness may depend
/// on).
pub const TIME: &str = "2026-01-01T00:00:00Z";

/// The context key `writ query` puts the decision under, for its decision
/// predicates; never a slot.
pub const QUERY_KEY: &str = "writ_query";

/// An attribute path as read: `["subject", "kind"]`.
pub type Path = Vec<Box<str>>;

/// A path the policies read, with the values tried for it (`None` is
/// absent).
#[derive(Debug, Clone)]
pub struct Slot {
    /// The dotted path.
    pub path: Path,
    /// The representative values, absent first.
    pub values: Vec<Option<Value>>,
    /// The other slots this one is a prefix of, or below (assigned
    /// together: a child present needs its parent present).
    pub related: Vec<usize>,
}

impl Slot {
    /// `subject.kind`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// A condition read with three-valued logic: `and`, `or` and `not` over
/// leaves, each an expression evaluated once every slot it reads has a
/// value.
#[derive(Debug, Clone)]
pub enum Cond<'a> {
    /// Every part holds.
    And(Vec<Cond<'a>>),
    /// Some part holds.
    Or(Vec<Cond<'a>>),
    /// The part does not hold.
    Not(Box<Cond<'a>>),
    /// An expression the evaluator decides.
    Leaf {
        /// The expression.
        expr: &'a Expr,
        /// The slots it needs (with the slots related to them).
        slots: Vec<usize>,
        /// Why its representative values may not stand for every value,
        /// when they may not.
        outside: Option<&'static str>,
        /// It reads the decision (`writ query`'s predicates).
        decision: bool,
    },
}

/// Three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Holds for every completion.
    True,
    /// Fails for every completion.
    False,
    /// Not known yet.
    Unknown,
    /// Errs for every completion (a forbid that errs fails closed).
    Error,
}

/// The slots of both policy sets (and of a query) with their values.
#[derive(Debug, Default)]
pub struct Space {
    /// Every slot, in the order first read.
    pub slots: Vec<Slot>,
    /// Thresholds, strings and links gathered before the values are made.
    gathered: Vec<Gathered>,
    /// (element path, list path) pairs: `action in intent.actions`.
    links: Vec<(usize, usize)>,
    /// Grant and scope templates: text, or the slot a hole reads.
    templates: Vec<Vec<Result<String, Option<usize>>>>,
}

#[derive(Debug, Default, Clone)]
struct Gathered {
    strings: Vec<String>,
    numbers: Vec<f64>,
    durations: Vec<u64>,
    bools: bool,
    levels: bool,
    lists: Vec<Vec<String>>,
    ty: Option<Ty>,
    objects: bool,
}

/// The path an expression reads, when it is an attribute or a field of one.
pub fn path_of(expr: &Expr) -> Option<Path> {
    match &expr.kind {
        ExprKind::Attr(attr) => Some(attr.path().split('.').map(Into::into).collect()),
        ExprKind::Field(inner, field) => {
            let mut path = path_of(inner)?;
            path.push(field.clone());
            Some(path)
        }
        _ => None,
    }
}

fn has_path(attr: &crate::ir::Attr, fields: &[Box<str>]) -> Path {
    let mut path: Path = attr.path().split('.').map(Into::into).collect();
    path.extend(fields.iter().cloned());
    path
}

fn is_query_path(path: &Path) -> bool {
    path.len() >= 2 && &*path[0] == "context" && &*path[1] == QUERY_KEY
}

fn is_time_path(path: &Path) -> bool {
    path.len() == 2 && &*path[0] == "environment" && &*path[1] == "time"
}

/// The paths an expression reads (its own, not a quantifier's local).
pub fn reads(expr: &Expr, out: &mut Vec<Path>) {
    if let Some(path) = path_of(expr) {
        out.push(path);
        return;
    }
    match &expr.kind {
        ExprKind::Lit(_) | ExprKind::Attr(_) | ExprKind::Local(_) | ExprKind::Data(_) => {}
        ExprKind::Field(inner, _) | ExprKind::Not(inner) | ExprKind::DataKey(inner) => {
            reads(inner, out)
        }
        ExprKind::Until(inner) => {
            out.push(vec!["environment".into(), "time".into()]);
            reads(inner, out);
        }
        ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
            reads(a, out);
            reads(b, out);
        }
        ExprKind::Call(_, args) => args.iter().for_each(|a| reads(a, out)),
        ExprKind::Matches(inner, _) | ExprKind::HasIn(inner, _) => reads(inner, out),
        ExprKind::Has(attr, fields) => out.push(has_path(attr, fields)),
        ExprKind::Quantifier { list, body, .. } => {
            reads(list, out);
            reads(body, out);
        }
    }
}

/// Why an expression's representative values may not stand for all of its
/// values, or `None` when they do.
pub fn outside(expr: &Expr) -> Option<&'static str> {
    if expr.ty == Ty::Time {
        return Some("compares times");
    }
    match &expr.kind {
        ExprKind::Lit(_) | ExprKind::Attr(_) | ExprKind::Local(_) | ExprKind::Has(..) => None,
        ExprKind::Data(_) => Some("reads the data file"),
        ExprKind::DataKey(_) | ExprKind::Index(..) | ExprKind::HasIn(..) => {
            Some("looks data up by request values")
        }
        ExprKind::Until(_) => Some("compares times"),
        ExprKind::Quantifier { .. } => Some("quantifies over a list"),
        ExprKind::Call(Builtin::Lower, args) => args.iter().find_map(outside),
        ExprKind::Call(..) => Some("applies a function to request values"),
        ExprKind::Field(inner, _) | ExprKind::Not(inner) | ExprKind::Matches(inner, _) => {
            outside(inner)
        }
        ExprKind::Binary(op, a, b) => {
            if matches!(op, BinOp::Add | BinOp::Mul) && (path_of(a).is_some() || path_of(b).is_some())
            {
                return Some("computes with request values");
            }
            outside(a).or_else(|| outside(b))
        }
    }
}

impl Space {
    /// The slots every rule of `sets` reads, with their values.
    pub fn of(sets: &[&PolicySet], extra: &[&Expr]) -> Space {
        let mut space = Space::default();
        space.slot(&vec!["environment".into(), "time".into()]);
        for set in sets {
            for rule in &set.rules {
                for conjunct in &rule.conjuncts {
                    space.gather(conjunct);
                }
                space.gather_kind(&rule.kind);
            }
        }
        for expr in extra {
            space.gather(expr);
        }
        space.finish();
        space
    }

    fn slot(&mut self, path: &Path) -> Option<usize> {
        if is_query_path(path) {
            return None;
        }
        if let Some(i) = self.slots.iter().position(|s| &s.path == path) {
            return Some(i);
        }
        self.slots.push(Slot {
            path: path.clone(),
            values: Vec::new(),
            related: Vec::new(),
        });
        self.gathered.push(Gathered::default());
        Some(self.slots.len() - 1)
    }

    /// The slot of an attribute read, directly or through `lower(...)`.
    fn slot_of(&mut self, expr: &Expr) -> Option<usize> {
        match &expr.kind {
            ExprKind::Call(Builtin::Lower, args) if args.len() == 1 => self.slot_of(&args[0]),
            _ => {
                let path = path_of(expr)?;
                let index = self.slot(&path)?;
                if self.gathered[index].ty.is_none() && expr.ty != Ty::Any {
                    self.gathered[index].ty = Some(expr.ty);
                }
                Some(index)
            }
        }
    }

    fn gather_kind(&mut self, kind: &RuleKind) {
        match kind {
            RuleKind::Permit {
                grant, obligations, ..
            } => {
                grant.iter().for_each(|t| self.gather_template(t));
                obligations.iter().for_each(|o| self.gather_obligation(o));
            }
            RuleKind::Forbid => {}
            RuleKind::LimitTtl(TtlCap::Computed(expr)) => self.gather(expr),
            RuleKind::LimitTtl(TtlCap::Const(_)) => {}
            RuleKind::LimitScope(templates) => templates.iter().for_each(|t| self.gather_template(t)),
            RuleKind::Require(o) => self.gather_obligation(o),
        }
    }

    fn gather_obligation(&mut self, obligation: &Obligation) {
        if let Obligation::Audience(template) = obligation {
            self.gather_template(template);
        }
    }

    fn gather_template(&mut self, template: &Template) {
        let mut shape = Vec::new();
        for part in &template.parts {
            match part {
                TemplatePart::Hole(expr) => {
                    self.gather(expr);
                    shape.push(Err(self.slot_of(expr)));
                }
                TemplatePart::Text(text) => shape.push(Ok(text.to_string())),
            }
        }
        self.templates.push(shape);
    }

    /// Gathers the slots and constants an expression tests.
    fn gather(&mut self, expr: &Expr) {
        let mut paths = Vec::new();
        reads(expr, &mut paths);
        for path in &paths {
            self.slot(path);
        }
        match &expr.kind {
            ExprKind::Binary(op, a, b) if !matches!(op, BinOp::And | BinOp::Or) => {
                self.compare(*op, a, b);
                self.compare(*op, b, a);
                if let (Some(x), Some(y)) = (self.slot_of(a), self.slot_of(b)) {
                    match op {
                        BinOp::In | BinOp::NotIn => self.links.push((x, y)),
                        _ if a.ty == Ty::Str || b.ty == Ty::Str => {
                            self.gathered[x].strings.push("shared".to_owned());
                            self.gathered[y].strings.push("shared".to_owned());
                        }
                        _ => {}
                    }
                }
            }
            ExprKind::Matches(inner, glob) => {
                if let Some(slot) = self.slot_of(inner) {
                    let sample: String = glob
                        .parts
                        .iter()
                        .map(|p| match p {
                            crate::ir::GlobPart::Text(t) => t.to_string(),
                            crate::ir::GlobPart::Star => String::new(),
                            crate::ir::GlobPart::One => "x".to_owned(),
                        })
                        .collect();
                    let g = &mut self.gathered[slot];
                    g.strings.push(sample.clone());
                    g.strings.push(format!("{sample}-x"));
                    g.strings.push(String::new());
                }
            }
            ExprKind::Has(..) | ExprKind::Attr(_) | ExprKind::Field(..) => {
                if let Some(slot) = self.slot_of(expr) {
                    if expr.ty == Ty::Bool {
                        self.gathered[slot].bools = true;
                    }
                }
            }
            _ => {}
        }
        match &expr.kind {
            ExprKind::Field(inner, _)
            | ExprKind::Not(inner)
            | ExprKind::DataKey(inner)
            | ExprKind::Until(inner)
            | ExprKind::Matches(inner, _)
            | ExprKind::HasIn(inner, _) => self.gather(inner),
            ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
                self.gather(a);
                self.gather(b);
            }
            ExprKind::Call(Builtin::Len, args) if args.len() == 1 => {
                if let Some(slot) = self.slot_of(&args[0]) {
                    self.gathered[slot].objects = true;
                }
                self.gather(&args[0]);
            }
            ExprKind::Call(_, args) => args.iter().for_each(|a| self.gather(a)),
            ExprKind::Quantifier { list, body, .. } => {
                self.gather(list);
                self.gather(body);
                if let Some(slot) = self.slot_of(list) {
                    let mut strings = Vec::new();
                    lit_strings(body, &mut strings);
                    for s in strings {
                        self.gathered[slot].lists.push(vec![s]);
                    }
                }
            }
            _ => {}
        }
    }

    /// `attr op constant`: the constant's values for the attribute's slot.
    fn compare(&mut self, op: BinOp, attr: &Expr, other: &Expr) {
        let ExprKind::Lit(lit) = &other.kind else {
            return;
        };
        let Some(slot) = self.slot_of(attr) else {
            return;
        };
        let g = &mut self.gathered[slot];
        let mut add = |lit: &Lit| match lit {
            Lit::Str(s) => g.strings.push(s.to_string()),
            Lit::Num(n) => g.numbers.push(*n),
            Lit::Dur(d) => g.durations.push(*d),
            Lit::Bool(_) => g.bools = true,
            Lit::Level(_) => g.levels = true,
            Lit::List(_) | Lit::Json(_) => {}
        };
        match lit {
            Lit::List(items) => items.iter().for_each(&mut add),
            other => add(other),
        }
        if let (BinOp::In | BinOp::NotIn, Lit::Str(s)) = (op, lit) {
            // `"x" in attr`: the attribute is a list.
            g.lists.push(vec![s.to_string()]);
        }
    }

    /// Turns what was gathered into each slot's values.
    fn finish(&mut self) {
        // Scope items shaped like the grants, so that a requested scope
        // can be covered: each hole filled with its slot's strings.
        let scope: Path = vec!["requested".into(), "scope".into()];
        if let Some(requested) = self.slots.iter().position(|s| s.path == scope) {
            for shape in self.templates.clone() {
                let mut items = vec![String::new()];
                for part in &shape {
                    let fills: Vec<String> = match part {
                        Ok(text) => vec![text.clone()],
                        Err(Some(slot)) => {
                            let mut strings = self.gathered[*slot].strings.clone();
                            strings.sort();
                            strings.dedup();
                            strings.retain(|s| !s.is_empty());
                            if strings.is_empty() {
                                strings.push("shared".to_owned());
                            }
                            strings
                        }
                        Err(None) => vec!["shared".to_owned()],
                    };
                    items = items
                        .iter()
                        .flat_map(|i| fills.iter().map(move |f| format!("{i}{f}")))
                        .take(8)
                        .collect();
                }
                for item in items {
                    if !item.contains('*') {
                        self.gathered[requested].lists.push(vec![item]);
                    }
                }
            }
        }
        for &(elem, list) in &self.links.clone() {
            let strings = self.gathered[elem].strings.clone();
            for s in strings.into_iter().take(8) {
                self.gathered[list].lists.push(vec![s]);
            }
            self.gathered[list].lists.push(vec!["other".to_owned()]);
        }
        let paths: Vec<Path> = self.slots.iter().map(|s| s.path.clone()).collect();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.related = paths
                .iter()
                .enumerate()
                .filter(|(j, p)| {
                    *j != i && (p.starts_with(&slot.path) || slot.path.starts_with(p))
                })
                .map(|(j, _)| j)
                .collect();
            let is_parent = paths
                .iter()
                .any(|p| p.len() > slot.path.len() && p.starts_with(&slot.path));
            slot.values = if is_time_path(&slot.path) {
                vec![Some(json!(TIME))]
            } else if is_parent {
                vec![None, Some(json!({ "present": true }))]
            } else {
                values(&self.gathered[i], &slot.path)
            };
        }
    }

    /// The request for an assignment: each slot at its value (unassigned
    /// slots absent).
    pub fn request(&self, assigned: &[Option<usize>]) -> Value {
        let mut root = Map::new();
        // Parents first, so a child's value lands inside its parent's object.
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_by_key(|&i| self.slots[i].path.len());
        for i in order {
            let Some(choice) = assigned.get(i).copied().flatten() else {
                continue;
            };
            let Some(Some(value)) = self.slots[i].values.get(choice) else {
                continue;
            };
            set_path(&mut root, &self.slots[i].path, value.clone());
        }
        Value::Object(root)
    }

    /// The request of a class: the assignment, with each slot no undecided
    /// rule reads at its first present value where that is consistent
    /// (templates read them: a grant of `read:{resource.id}` needs an id).
    pub fn filled(&self, assigned: &[Option<usize>]) -> Value {
        let mut full = assigned.to_vec();
        for slot in 0..self.slots.len() {
            if full[slot].is_some() {
                continue;
            }
            if let Some(first) = self.slots[slot].values.iter().position(Option::is_some) {
                if self.consistent(&full, slot, first) {
                    full[slot] = Some(first);
                }
            }
        }
        self.request(&full)
    }

    /// Whether the value `choice` of `slot` is consistent with the related
    /// slots already assigned (a child present needs its parent present).
    pub fn consistent(&self, assigned: &[Option<usize>], slot: usize, choice: usize) -> bool {
        let present = matches!(self.slots[slot].values.get(choice), Some(Some(_)));
        self.slots[slot].related.iter().all(|&other| {
            let Some(Some(c)) = assigned.get(other) else {
                return true;
            };
            let other_present = matches!(self.slots[other].values.get(*c), Some(Some(_)));
            let other_is_parent = self.slots[slot].path.starts_with(&self.slots[other].path);
            if other_is_parent {
                other_present || !present
            } else {
                present || !other_present
            }
        })
    }

    /// A condition of `conjuncts`, with the slots each leaf needs.
    pub fn cond<'a>(&self, conjuncts: &'a [Expr]) -> Cond<'a> {
        Cond::And(conjuncts.iter().map(|c| self.cond_of(c)).collect())
    }

    fn cond_of<'a>(&self, expr: &'a Expr) -> Cond<'a> {
        match &expr.kind {
            ExprKind::Binary(BinOp::And, a, b) => Cond::And(vec![self.cond_of(a), self.cond_of(b)]),
            ExprKind::Binary(BinOp::Or, a, b) => Cond::Or(vec![self.cond_of(a), self.cond_of(b)]),
            ExprKind::Not(inner) => Cond::Not(Box::new(self.cond_of(inner))),
            _ => {
                let mut paths = Vec::new();
                reads(expr, &mut paths);
                let decision = paths.iter().any(is_query_path);
                let mut slots = Vec::new();
                for path in &paths {
                    if let Some(i) = self.slots.iter().position(|s| &s.path == path) {
                        slots.push(i);
                        slots.extend(self.slots[i].related.iter().copied());
                    }
                }
                slots.sort_unstable();
                slots.dedup();
                Cond::Leaf {
                    expr,
                    slots,
                    outside: outside(expr),
                    decision,
                }
            }
        }
    }
}

/// The string constants inside an expression (a quantifier's body).
fn lit_strings(expr: &Expr, out: &mut Vec<String>) {
    match &expr.kind {
        ExprKind::Lit(Lit::Str(s)) => out.push(s.to_string()),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            lit_strings(a, out);
            lit_strings(b, out);
        }
        ExprKind::Not(a) | ExprKind::Field(a, _) | ExprKind::Matches(a, _) => lit_strings(a, out),
        ExprKind::Call(_, args) => args.iter().for_each(|a| lit_strings(a, out)),
        _ => {}
    }
}

fn set_path(root: &mut Map<String, Value>, path: &[Box<str>], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = root;
    for part in parents {
        let entry = here
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        here = next;
    }
    match (here.get_mut(&**last), value) {
        (Some(Value::Object(existing)), Value::Object(new)) => {
            for (k, v) in new {
                existing.entry(k).or_insert(v);
            }
        }
        (_, value) => {
            here.insert(last.to_string(), value);
        }
    }
}

/// The values tried for one slot.
fn values(g: &Gathered, path: &Path) -> Vec<Option<Value>> {
    let mut out: Vec<Option<Value>> = vec![None];
    let mut push = |v: Value| {
        if !out.contains(&Some(v.clone())) {
            out.push(Some(v));
        }
    };
    let root_level = path.len() == 1 && &*path[0] == "sensitivity";
    match g.ty {
        Some(Ty::Level) => {
            for level in Sensitivity::ALL {
                push(json!(level.as_str()));
            }
            return out;
        }
        Some(Ty::Time) => {
            for t in ["2025-12-31T23:00:00Z", "2026-01-01T01:00:00Z", "2026-07-20T00:00:00Z"] {
                push(json!(t));
            }
            return out;
        }
        Some(Ty::Bool) => {
            push(json!(true));
            push(json!(false));
            return out;
        }
        Some(Ty::Dur) => {
            for d in cuts_int(&g.durations) {
                push(json!(d));
            }
            if g.durations.is_empty() {
                push(json!(900));
            }
            return out;
        }
        Some(Ty::Num) => {
            for n in cuts(&g.numbers) {
                push(json!(n));
            }
            if g.numbers.is_empty() {
                push(json!(1));
            }
            return out;
        }
        Some(Ty::StrList) => {
            push(json!([]));
            for list in &g.lists {
                push(json!(list));
            }
            push(json!(["other:item"]));
            return out;
        }
        Some(Ty::List) => {
            push(json!([]));
            for n in 1..=3 {
                let items: Vec<Value> = (0..n).map(|i| json!({ "id": format!("actor-{i}") })).collect();
                push(Value::Array(items));
            }
            return out;
        }
        _ => {}
    }
    if root_level || g.levels {
        for level in Sensitivity::ALL {
            push(json!(level.as_str()));
        }
    }
    let typed_str = g.ty == Some(Ty::Str);
    let mut strings = g.strings.clone();
    strings.sort();
    strings.dedup();
    for s in strings {
        push(json!(s));
    }
    if typed_str || !g.strings.is_empty() {
        push(json!("other"));
    }
    for n in cuts(&g.numbers) {
        push(json!(n));
    }
    for d in cuts_int(&g.durations) {
        push(json!(d));
    }
    if g.bools {
        push(json!(true));
        push(json!(false));
    }
    for list in &g.lists {
        push(json!(list));
    }
    if !typed_str {
        // A free attribute: one value of a type no rule compares it with,
        // which makes comparisons err (and forbids fail closed).
        if g.strings.is_empty() {
            push(json!("other"));
        } else {
            push(json!(0));
        }
    }
    out
}

/// One value in each class the thresholds cut the numbers into.
fn cuts(thresholds: &[f64]) -> Vec<f64> {
    let mut t: Vec<f64> = thresholds.iter().copied().filter(|x| x.is_finite()).collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    let mut out = Vec::new();
    if let (Some(first), Some(last)) = (t.first(), t.last()) {
        out.push(first - 1.0);
        for pair in t.windows(2) {
            out.push(pair[0]);
            out.push((pair[0] + pair[1]) / 2.0);
        }
        out.push(*last);
        out.push(last + 1.0);
    }
    out
}

/// One whole number in each class the thresholds cut durations into.
fn cuts_int(thresholds: &[u64]) -> Vec<u64> {
    let mut t = thresholds.to_vec();
    t.sort_unstable();
    t.dedup();
    let mut out = Vec::new();
    if let (Some(first), Some(last)) = (t.first(), t.last()) {
        if *first > 0 {
            out.push(first - 1);
        }
        for pair in t.windows(2) {
            out.push(pair[0]);
            if pair[1] - pair[0] >= 2 {
                out.push(pair[0] + 1);
            }
        }
        out.push(*last);
        out.push(last.saturating_add(1));
    }
    out
}

/// A validated request and the evaluation of conditions against it.
pub struct Probe {
    /// The request.
    pub request: Request,
    /// Its validation.
    pub prepared: Prepared,
}

impl Probe {
    /// Validates a request; `None` when it is not one the contract accepts.
    pub fn new(value: Value) -> Option<Probe> {
        let (request, prepared) = Request::from_value(value).ok()?;
        Some(Probe { request, prepared })
    }

    /// The truth of a condition over the assigned slots, with the leaves
    /// outside the enumerable part that it evaluated.
    pub fn truth(
        &self,
        cond: &Cond<'_>,
        set: &PolicySet,
        assigned: &[Option<usize>],
        decision_known: bool,
        used_outside: &mut bool,
    ) -> Truth {
        match cond {
            Cond::And(parts) | Cond::Or(parts) => {
                // The evaluator's logic: `and` is false when a part is
                // false (even if another errs), `or` true when a part is
                // true; otherwise an error propagates.
                let dominant = if matches!(cond, Cond::And(_)) {
                    Truth::False
                } else {
                    Truth::True
                };
                let (mut unknown, mut error) = (false, false);
                for part in parts {
                    match self.truth(part, set, assigned, decision_known, used_outside) {
                        t if t == dominant => return dominant,
                        Truth::Unknown => unknown = true,
                        Truth::Error => error = true,
                        _ => {}
                    }
                }
                if unknown {
                    Truth::Unknown
                } else if error {
                    Truth::Error
                } else if dominant == Truth::False {
                    Truth::True
                } else {
                    Truth::False
                }
            }
            Cond::Not(inner) => match self.truth(inner, set, assigned, decision_known, used_outside)
            {
                Truth::True => Truth::False,
                Truth::False => Truth::True,
                other => other,
            },
            Cond::Leaf {
                expr,
                slots,
                outside,
                decision,
            } => {
                if (*decision && !decision_known)
                    || slots.iter().any(|&s| assigned.get(s).copied().flatten().is_none())
                {
                    return Truth::Unknown;
                }
                if outside.is_some() {
                    *used_outside = true;
                }
                match Evaluator::new(&self.request, &self.prepared, &set.data).truth(expr) {
                    Ok(true) => Truth::True,
                    Ok(false) => Truth::False,
                    Err(_) => Truth::Error,
                }
            }
        }
    }
}

/// The reasons a rule's condition falls outside the enumerable part.
pub fn rule_outside(rule: &Rule) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for conjunct in &rule.conjuncts {
        collect_outside(conjunct, &mut out);
    }
    out
}

fn collect_outside(expr: &Expr, out: &mut Vec<&'static str>) {
    match &expr.kind {
        ExprKind::Binary(BinOp::And | BinOp::Or, a, b) => {
            collect_outside(a, out);
            collect_outside(b, out);
        }
        ExprKind::Not(inner) => collect_outside(inner, out),
        _ => {
            if let Some(reason) = outside(expr) {
                if !out.contains(&reason) {
                    out.push(reason);
                }
            }
        }
    }
}

/// Random values for a slot, for the bounded search: its representative
/// values and a few others of its kind.
pub fn random_value(slot: &Slot, rng: &mut Rng) -> Option<Value> {
    let n = slot.values.len();
    if n == 0 {
        return None;
    }
    if rng.below(3) > 0 {
        return slot.values[rng.below(n)].clone();
    }
    // Something no rule named, shaped like one of the slot's values.
    let base = slot.values[rng.below(n)].clone()?;
    Some(match base {
        Value::String(_) => json!(format!("r{}", rng.below(1000))),
        Value::Number(_) => json!(rng.below(200) as f64 - 50.0),
        Value::Bool(b) => json!(!b),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let len = rng.below(3);
            json!((0..len)
                .map(|i| format!("r{}:*{}", rng.below(5), i))
                .collect::<Vec<_>>())
        }
        other => other,
    })
}

/// A xorshift64* generator for the bounded search: seeded, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r % (n.max(1) as u64)) as usize
    }
}

/// Sets (or, with `None`, removes) the value at `path` in a request.
pub fn set_value(request: &mut Value, path: &[Box<str>], value: Option<Value>) {
    let Value::Object(root) = request else {
        return;
    };
    match value {
        Some(value) => {
            remove_path(root, path);
            set_path(root, path, value);
        }
        None => remove_path(root, path),
    }
}

fn remove_path(root: &mut Map<String, Value>, path: &[Box<str>]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = root;
    for part in parents {
        match here.get_mut(&**part) {
            Some(Value::Object(next)) => here = next,
            _ => return,
        }
    }
    here.remove(&**last);
}
