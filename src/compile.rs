//! Compilation of a checked policy set into a decision tree.
//!
//! Each rule's top-level conjuncts that test one request attribute against
//! constants (`action == "read"`, `resource.kind in [...]`,
//! `sensitivity >= confidential`) form its *head*. The tree switches on the
//! attribute that the most remaining rules test, so a request follows one
//! child per switch (plus the rules that do not test that attribute) and
//! reaches a handful of candidates whatever the number of rules. The
//! candidates' full conditions are then evaluated, so the tree only prunes:
//! it decides exactly as evaluating every rule in order would.
//!
//! When a request lacks the switched attribute, or holds a non-string in it,
//! the walk visits every child: a forbid that would error on the missing
//! attribute must still be evaluated so that it fails closed. The same goes
//! for a value of another type (`"event_name": 42` against a switch on
//! `subject.event_name == "push"`): comparisons are typed, so every string
//! test of that rule errs and the forbid applies, which it can only do if
//! the walk reaches it (`tests/properties.rs`,
//! `a_comparison_across_types_fails_closed`).
//!
//! Boolean tests (`subject.shared == false`, `intent.objective_changed !=
//! true`) are heads too: a switch on a bool has the children `true` and
//! `false` ([`On::Bool`]). The same rule holds there: a request that lacks
//! the attribute or holds something other than a bool in it visits both
//! children, so a forbid whose comparison errs still applies. A rule that
//! compares the attribute with a string is filed under a string switch on
//! it, a separate head, and so sits in the bool switch's `rest`, which every
//! walk visits.
//!
//! Presence tests on a whole attribute (`subject has state`, `not subject
//! has owner`) are heads of a third kind ([`On::Has`]), with the children
//! `present` and `absent` read exactly as `has` reads them (`false`, `""`
//! and empty lists count as absent). `has` never errs, so every request
//! follows exactly one child.

use std::fmt::Write as _;

use indexmap::IndexMap;
use serde::Serialize;

use std::borrow::Cow;

use crate::allowed::head_test_into;
use crate::ast::BinOp;
use crate::eval::{says_nothing, Val};
use crate::ir::{Attr, Expr, ExprKind, Lit, PolicySet};

/// Index of a node in [`Tree::nodes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeId(pub u32);

/// A node of the decision tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Node {
    /// Rules to evaluate (indices into the policy set, ascending).
    Leaf {
        /// The candidate rules.
        rules: Vec<u32>,
    },
    /// Branch on the value of an attribute.
    Switch {
        /// The attribute tested.
        attr: Attr,
        /// The type of value switched on.
        #[serde(skip_serializing_if = "On::is_str")]
        on: On,
        /// Child per value.
        children: Children,
        /// Rules that do not test this attribute.
        rest: NodeId,
    },
}

/// The type of value a switch tells apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// Strings (and sensitivity levels, by name).
    #[default]
    Str,
    /// Bools: the children are `true` and `false`.
    Bool,
    /// Presence (`attr has`, `not attr has`, as `has` reads it): the
    /// children are `present` and `absent`. Every request has a key.
    Has,
}

impl On {
    fn is_str(&self) -> bool {
        *self == On::Str
    }

    /// The key of a request's value for a switch of this type; `None` when
    /// the value is missing or of another type (the walk then visits every
    /// child).
    fn key<'v>(self, value: &'v Option<Val<'_>>) -> Option<&'v str> {
        if self == On::Has {
            let present = value.as_ref().is_some_and(|v| !says_nothing(v));
            return Some(presence_key(present));
        }
        match (self, value.as_ref()?) {
            (On::Str, Val::Str(Cow::Borrowed(text))) => Some(text),
            (On::Str, Val::Level(level)) => Some(level.as_str()),
            (On::Bool, Val::Bool(b)) => Some(bool_key(*b)),
            _ => None,
        }
    }
}

fn presence_key(present: bool) -> &'static str {
    if present {
        "present"
    } else {
        "absent"
    }
}

fn bool_key(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// A switch's children, value to node, in the order the values first
/// appear in the policy, with an index sorted by value: a lookup is a
/// binary search over the policy's own strings, with no hashing, so no
/// choice of values can make it slow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Children {
    entries: Vec<(Box<str>, NodeId)>,
    /// Positions in `entries`, ordered by value.
    sorted: Vec<u32>,
}

type Entry<'a> = (&'a Box<str>, &'a NodeId);

impl Children {
    fn new(entries: Vec<(Box<str>, NodeId)>) -> Children {
        let mut sorted: Vec<u32> = (0..entries.len() as u32).collect();
        sorted.sort_unstable_by(|&a, &b| entries[a as usize].0.cmp(&entries[b as usize].0));
        Children { entries, sorted }
    }

    /// The child for a value.
    pub fn get(&self, key: &str) -> Option<&NodeId> {
        let at = self
            .sorted
            .binary_search_by(|&i| (*self.entries[i as usize].0).cmp(key))
            .ok()?;
        Some(&self.entries[self.sorted[at] as usize].1)
    }

    /// The children, in policy order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &NodeId> + ExactSizeIterator {
        self.entries.iter().map(|(_, child)| child)
    }

    /// Value and child, in policy order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Entry<'_>> + ExactSizeIterator {
        self.entries.iter().map(|(value, child)| (value, child))
    }

    /// How many values the switch tells apart.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for a switch without values.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> IntoIterator for &'a Children {
    type Item = Entry<'a>;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Box<str>, NodeId)>,
        fn(&'a (Box<str>, NodeId)) -> Entry<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(value, child)| (value, child))
    }
}

impl Serialize for Children {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// The walk's stack of nodes to visit: on the call stack while it is
/// small (a request that has every switched attribute needs two slots per
/// level), spilling to the heap only when a missing attribute fans out.
#[derive(Default)]
struct Stack {
    inline: [NodeId; 32],
    len: usize,
    spill: Vec<NodeId>,
}

impl Stack {
    fn push(&mut self, id: NodeId) {
        match self.inline.get_mut(self.len) {
            Some(slot) if self.spill.is_empty() => {
                *slot = id;
                self.len += 1;
            }
            _ => self.spill.push(id),
        }
    }

    fn pop(&mut self) -> Option<NodeId> {
        if let Some(id) = self.spill.pop() {
            return Some(id);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get(self.len).copied()
    }
}

/// The compiled decision tree, stored flat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tree {
    /// All nodes; the root is [`Tree::root`].
    pub nodes: Vec<Node>,
    /// Where the walk starts.
    pub root: NodeId,
}

impl Serialize for Attr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.path())
    }
}

/// Rules at or below this many stay in one leaf.
const LEAF_SIZE: usize = 2;

/// What a head tests: an attribute, as a string or as a bool.
type Key<'s> = (&'s Attr, On);

/// One head test of a rule: the attribute and its values, as a range of
/// [`Heads::values`].
type Head<'s> = (Key<'s>, u32, u32);

/// A presence head test, `attr has` or `not attr has` on a whole
/// attribute (not a field below it): the attribute, with `present` or
/// `absent` pushed to `out`; `None` for any other conjunct.
fn has_head<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) -> Option<&'e Attr> {
    let (inner, present) = match &expr.kind {
        ExprKind::Not(inner) => (&**inner, false),
        _ => (expr, true),
    };
    match &inner.kind {
        ExprKind::Has(attr, rest) if rest.is_empty() => {
            out.push(presence_key(present));
            Some(attr)
        }
        _ => None,
    }
}

/// A boolean head test, `attr == true` or `attr != false` (either way
/// round): the attribute and the values it lets through, `None` for any
/// other conjunct.
fn bool_head<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) -> Option<&'e Attr> {
    let ExprKind::Binary(op, left, right) = &expr.kind else {
        return None;
    };
    let (attr, constant) = match (&left.kind, &right.kind) {
        (ExprKind::Attr(attr), ExprKind::Lit(Lit::Bool(b)))
        | (ExprKind::Lit(Lit::Bool(b)), ExprKind::Attr(attr)) => (attr, *b),
        _ => return None,
    };
    let holds = match op {
        BinOp::Eq => constant,
        BinOp::Ne => !constant,
        _ => return None,
    };
    out.push(bool_key(holds));
    Some(attr)
}

/// Each rule's head: per attribute, the values its conjuncts allow
/// (intersected when several conjuncts test the same attribute). Stored
/// flat, in three lists for the whole set rather than lists per rule.
struct Heads<'s> {
    /// Per rule, its range of `entries`.
    rules: Vec<(u32, u32)>,
    /// The head tests of all rules.
    entries: Vec<Head<'s>>,
    /// The values of all head tests.
    values: Vec<&'s str>,
}

fn heads(set: &PolicySet) -> Heads<'_> {
    let mut heads = Heads {
        rules: Vec::with_capacity(set.rules.len()),
        entries: Vec::new(),
        values: Vec::new(),
    };
    for rule in &set.rules {
        let first = heads.entries.len();
        for conjunct in &rule.conjuncts {
            let start = heads.values.len();
            let key = match head_test_into(conjunct, &mut heads.values) {
                Some(attr) => (attr, On::Str),
                None => match bool_head(conjunct, &mut heads.values) {
                    Some(attr) => (attr, On::Bool),
                    None => match has_head(conjunct, &mut heads.values) {
                        Some(attr) => (attr, On::Has),
                        None => continue,
                    },
                },
            };
            match heads.entries[first..].iter_mut().find(|(k, ..)| *k == key) {
                Some((_, from, to)) => {
                    // Keep, in order, the earlier values this test allows.
                    let (earlier, new) = heads.values.split_at_mut(start);
                    let mut kept = *from as usize;
                    for at in *from as usize..*to as usize {
                        let value = earlier[at];
                        if new.contains(&value) {
                            earlier[kept] = value;
                            kept += 1;
                        }
                    }
                    *to = kept as u32;
                    heads.values.truncate(start);
                }
                None => heads
                    .entries
                    .push((key, start as u32, heads.values.len() as u32)),
            }
        }
        heads.rules.push((first as u32, heads.entries.len() as u32));
    }
    heads
}

impl<'s> Heads<'s> {
    /// The head tests of `rule`.
    fn of(&self, rule: u32) -> &[Head<'s>] {
        let (from, to) = self.rules[rule as usize];
        &self.entries[from as usize..to as usize]
    }
}

struct Builder<'s> {
    heads: Heads<'s>,
    nodes: Vec<Node>,
}

impl<'s> Builder<'s> {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        NodeId((self.nodes.len() - 1) as u32)
    }

    fn build(&mut self, rules: Vec<u32>, used: &mut Vec<Key<'s>>) -> NodeId {
        if rules.len() <= LEAF_SIZE {
            return self.push(Node::Leaf { rules });
        }
        // The attribute most of these rules test. There are few distinct
        // attributes: a list in first-seen order does what a map would.
        let mut counts: Vec<(Key<'s>, usize)> = Vec::new();
        for &rule in &rules {
            for &(key, from, to) in self.heads.of(rule) {
                if from < to && !used.contains(&key) {
                    match counts.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, count)) => *count += 1,
                        None => counts.push((key, 1)),
                    }
                }
            }
        }
        let best = counts
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map(|(key, _)| *key);
        let Some(key) = best else {
            return self.push(Node::Leaf { rules });
        };
        let mut children: IndexMap<&'s str, Vec<u32>> = IndexMap::new();
        let mut rest = Vec::new();
        for &rule in &rules {
            match self
                .heads
                .of(rule)
                .iter()
                .find(|&&(k, from, to)| k == key && from < to)
            {
                Some(&(_, from, to)) => {
                    for &value in &self.heads.values[from as usize..to as usize] {
                        children.entry(value).or_default().push(rule);
                    }
                }
                None => rest.push(rule),
            }
        }
        drop(rules);
        used.push(key);
        let mut built = Vec::with_capacity(children.len());
        for (value, rules) in children {
            let child = self.build(rules, used);
            built.push((Box::<str>::from(value), child));
        }
        let rest = self.build(rest, used);
        used.pop();
        self.push(Node::Switch {
            attr: key.0.clone(),
            on: key.1,
            children: Children::new(built),
            rest,
        })
    }
}

/// Builds the decision tree of a checked policy set.
pub fn compile(set: &PolicySet) -> Tree {
    let mut builder = Builder {
        heads: heads(set),
        nodes: Vec::new(),
    };
    let all: Vec<u32> = (0..set.rules.len() as u32).collect();
    let root = builder.build(all, &mut Vec::new());
    Tree {
        nodes: builder.nodes,
        root,
    }
}

impl Tree {
    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// Collects the candidate rules for a request into `out`: sorted,
    /// without duplicates. `value` reads the value of an attribute (`None`
    /// when it is missing); a switch follows one child only for a value of
    /// its type.
    pub fn candidates<'r>(
        &self,
        value: impl Fn(&Attr) -> Option<Val<'r>>,
        out: &mut Vec<u32>,
        near_misses: &mut Vec<NodeId>,
    ) {
        let mut stack = Stack::default();
        stack.push(self.root);
        let mut exact = true;
        while let Some(id) = stack.pop() {
            match self.node(id) {
                Node::Leaf { rules } => out.extend_from_slice(rules),
                Node::Switch {
                    attr,
                    on,
                    children,
                    rest,
                } => {
                    stack.push(*rest);
                    let found = value(attr);
                    match on.key(&found) {
                        Some(key) => match children.get(key) {
                            Some(child) => stack.push(*child),
                            None => near_misses.push(id),
                        },
                        None => {
                            exact = false;
                            children.values().for_each(|&child| stack.push(child));
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        if !exact {
            out.dedup();
        }
    }

    /// Up to `limit` rules found below the children of the given switches:
    /// the rules that would have been candidates had one tested value
    /// been different.
    pub fn rules_below(&self, switches: &[NodeId], limit: usize) -> Vec<u32> {
        let mut found = Vec::new();
        let mut budget = 64usize;
        for &switch in switches {
            let Node::Switch { children, .. } = self.node(switch) else {
                continue;
            };
            let mut stack: Vec<NodeId> = children.values().rev().copied().collect();
            while let Some(id) = stack.pop() {
                if budget == 0 || found.len() >= limit {
                    return found;
                }
                budget -= 1;
                match self.node(id) {
                    Node::Leaf { rules } => {
                        for rule in rules {
                            if !found.contains(rule) {
                                found.push(*rule);
                            }
                        }
                    }
                    Node::Switch { children, rest, .. } => {
                        stack.push(*rest);
                        stack.extend(children.values().rev().copied());
                    }
                }
            }
        }
        found
    }

    /// The tree as indented text, rules named by id.
    pub fn render(&self, set: &PolicySet) -> String {
        let mut out = String::new();
        self.render_node(set, self.root, 0, &mut out);
        out
    }

    fn render_node(&self, set: &PolicySet, id: NodeId, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        match self.node(id) {
            Node::Leaf { rules } if rules.is_empty() => {
                let _ = writeln!(out, "{pad}(no rules)");
            }
            Node::Leaf { rules } => {
                for rule in rules {
                    let rule = &set.rules[*rule as usize];
                    let _ = writeln!(out, "{pad}{} {}", rule.kind.name(), rule.id);
                }
            }
            Node::Switch {
                attr,
                on,
                children,
                rest,
            } => {
                let _ = writeln!(out, "{pad}switch {}", attr.path());
                for (value, child) in children {
                    let _ = match on {
                        On::Str => writeln!(out, "{pad}  == \"{value}\""),
                        On::Bool => writeln!(out, "{pad}  == {value}"),
                        On::Has => writeln!(out, "{pad}  {value}"),
                    };
                    self.render_node(set, *child, depth + 2, out);
                }
                let _ = writeln!(out, "{pad}  any value");
                self.render_node(set, *rest, depth + 2, out);
            }
        }
    }

    /// The tree in Graphviz DOT.
    pub fn to_dot(&self, set: &PolicySet) -> String {
        let mut out = String::from(
            "digraph writ {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n",
        );
        for (index, node) in self.nodes.iter().enumerate() {
            match node {
                Node::Leaf { rules } => {
                    let label: Vec<String> = rules
                        .iter()
                        .map(|r| {
                            let rule = &set.rules[*r as usize];
                            format!("{} {}", rule.kind.name(), rule.id)
                        })
                        .collect();
                    let label = if label.is_empty() {
                        "(no rules)".to_owned()
                    } else {
                        label.join("\\l") + "\\l"
                    };
                    let _ = writeln!(
                        out,
                        "  n{index} [shape=box, style=rounded, label=\"{}\"];",
                        escape_dot(&label)
                    );
                }
                Node::Switch {
                    attr,
                    on,
                    children,
                    rest,
                } => {
                    let _ = writeln!(
                        out,
                        "  n{index} [shape=diamond, label=\"{}\"];",
                        attr.path()
                    );
                    for (value, child) in children {
                        let label = match on {
                            On::Str => format!("\"{value}\""),
                            On::Bool | On::Has => value.to_string(),
                        };
                        let _ = writeln!(
                            out,
                            "  n{index} -> n{} [label=\"{}\"];",
                            child.0,
                            escape_dot(&label)
                        );
                    }
                    let _ = writeln!(
                        out,
                        "  n{index} -> n{} [label=\"any value\", style=dashed];",
                        rest.0
                    );
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

fn escape_dot(text: &str) -> String {
    text.replace('"', "\\\"")
}
