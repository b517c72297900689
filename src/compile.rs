//! Compilation of a checked policy set into a decision tree.
//!
//! Each rule's top-level conjuncts that test one request attribute against
//! constants (`action == "read"`, `resource.kind in [...]`,
//! `sensitivity >= confidential`) form its *head*. The tree switches on the
//! attribute that the most remaining rules test, so a request follows one
//! child per switch (plus the rules that do not test that attribute) and
//! reaches a handful of candidates whatever the number of rules. The
//! candidates' conditions are then evaluated, so the tree only prunes: it
//! decides exactly as evaluating every rule in order would. A candidate
//! comes with the conjuncts that the switches and cuts above its leaf
//! decided by the request's own values ([`Tree::proven`]; below a switch
//! whose value is missing, those of the other slots: [`Tree::proven_slots`]),
//! which are true and so are not evaluated again.
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
//! follows exactly one child. The same goes for presence below an
//! attribute (`context has exception.id`, `resource.properties has
//! owner`): the switch names the fields it walks down.
//!
//! `!=` and `not in` on strings are heads too, as complements: such a rule
//! hangs under every value of the switch but the ones it excludes (each
//! excluded value gets a child of its own), and under the switch's `other`
//! child, which a string that no child names follows. Missing values and
//! values of another type visit every child, `other` included, as for
//! `==`. A switch where complements would hang under too many children
//! leaves them in `rest` instead.
//!
//! Ranges on numbers and durations (`context.risk_score > 70`,
//! `requested.ttl <= 1h`, `context.n == 3`) are heads of a fourth kind: a
//! [`Node::Range`] cuts the values of one attribute in two at one of the
//! thresholds the rules under it use (the median), and a rule hangs under
//! each side its range overlaps. Below a cut the attribute may be cut
//! again, narrower; a rule whose range covers the whole of a side is no
//! longer tested there and sits in that side's `rest`. So each rule hangs
//! under a logarithmic number of nodes, and a request follows one path of
//! cuts, one comparison each. A side of a cut with one or two rules is cut
//! again while one of them has a threshold inside it (elsewhere so few
//! rules make a leaf). A value that is not a number or a duration
//! (or a `NaN`, or a duration too large for a double to hold exactly)
//! visits both sides: its comparison errs, and a forbid must still apply.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use indexmap::{IndexMap, IndexSet};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::allowed::head_test_into;
use crate::ast::BinOp;
use crate::eval::{says_nothing, Val};
use crate::ir::{Attr, Expr, ExprKind, Lit, PolicySet, RuleKind, Ty};

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
        /// For a presence switch below the attribute (`context has
        /// exception.id`), the fields walked down; empty otherwise.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        fields: Vec<Box<str>>,
        /// The type of value switched on.
        #[serde(skip_serializing_if = "On::is_str")]
        on: On,
        /// Child per value.
        children: Children,
        /// Rules that do not test this attribute.
        rest: NodeId,
        /// The switch's attribute, type and fields as one small number,
        /// the same for every node that switches on them: the walk reads
        /// each one from the request once ([`Tree::candidates`]).
        #[serde(skip)]
        slot: u32,
        /// The rules below the children, in the order
        /// [`Tree::rules_below`] meets them, worked out when the tree is
        /// built (empty for a switch with an `other` child, which a
        /// request never misses).
        #[serde(skip)]
        below: Below,
    },
    /// Branch on a number or a duration: below or above a cut.
    Range {
        /// The attribute tested.
        attr: Attr,
        /// Where the values are cut in two.
        cut: Cut,
        /// Rules whose range reaches below the cut.
        below: NodeId,
        /// Rules whose range reaches above the cut.
        above: NodeId,
        /// Rules that do not test this attribute, or whose range covers
        /// every value that reaches this node.
        rest: NodeId,
        /// The attribute as a slot, as for [`Node::Switch`].
        #[serde(skip)]
        slot: u32,
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
    /// Numbers and durations, in ranges ([`Node::Range`]).
    Num,
}

impl On {
    fn is_str(&self) -> bool {
        *self == On::Str
    }
}

/// The key of a request's value for a switch of type `on`, with its
/// [`hash_key`] (known beforehand for the four keys of bools and
/// presences); [`Read::Every`] when the value is missing or of another
/// type (the walk then visits every child). `fields` are those of a
/// presence switch below the attribute. Out of line, as the walk's
/// leaves are better inlined into it.
#[inline(never)]
fn read_key<'r>(on: On, value: Option<Val<'r>>, fields: &[Box<str>]) -> Read<'r> {
    match on {
        On::Has => has_key(present(value.as_ref(), fields)),
        On::Bool => match value {
            Some(Val::Bool(true)) => Read::Key(bool_key(true), TRUE_HASH),
            Some(Val::Bool(false)) => Read::Key(bool_key(false), FALSE_HASH),
            _ => Read::Every,
        },
        On::Str => match value {
            Some(Val::Str(Cow::Borrowed(text))) => Read::Key(text, hash_key(text)),
            Some(Val::Level(level)) => {
                let text = level.as_str();
                Read::Key(text, hash_key(text))
            }
            _ => Read::Every,
        },
        On::Num => Read::Every,
    }
}

/// The key of a presence switch below an attribute (`fields` not empty),
/// reading the attribute from the request through `value` unless the
/// last such switch read the same one (`object_of`, which it updates).
/// Out of line, as [`read_key`].
#[inline(never)]
fn read_below<'t, 'r>(
    object_of: &mut Option<(&'t Attr, Option<&'r Map<String, Value>>)>,
    attr: &'t Attr,
    fields: &[Box<str>],
    value: &impl Fn(&Attr) -> Option<Val<'r>>,
) -> Read<'r> {
    let map = match *object_of {
        Some((read, map)) if read == attr => map,
        _ => {
            let map = object(value(attr));
            *object_of = Some((attr, map));
            map
        }
    };
    // No field is present in an empty object (as the request's
    // `resource.properties` often is): nothing to look up.
    has_key(map.is_some_and(|map| !map.is_empty() && present_below(map, fields)))
}

/// The key of a presence switch, with its hash.
fn has_key(present: bool) -> Read<'static> {
    match present {
        true => Read::Key(presence_key(true), PRESENT_HASH),
        false => Read::Key(presence_key(false), ABSENT_HASH),
    }
}

/// A 64-bit FNV-1a hash of a switch value: the children of a switch are
/// found by it (and one comparison of the string), so that a walk hashes
/// each request value once instead of comparing it at every switch.
const fn hash_key(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut bytes = key.as_bytes();
    while let [byte, rest @ ..] = bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        bytes = rest;
    }
    hash
}

/// The [`hash_key`]s of the keys of bools and presences.
const TRUE_HASH: u64 = hash_key("true");
const FALSE_HASH: u64 = hash_key("false");
const PRESENT_HASH: u64 = hash_key("present");
const ABSENT_HASH: u64 = hash_key("absent");

/// FNV-1a as a [`std::hash::Hasher`], for the builder's map of a switch's
/// values: the keys are short strings, and SipHash (the default) cost
/// more than the rest of the map. Iteration stays in insertion order.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type BuildFnv = std::hash::BuildHasherDefault<Fnv>;

/// What a walk has read of one slot of the request (see [`Node::Switch`]'s
/// `slot`).
#[derive(Clone, Copy)]
enum Read<'r> {
    /// Not read yet.
    Unread,
    /// A switch key, with its hash.
    Key(&'r str, u64),
    /// A number for a range.
    Num(f64),
    /// Missing, or of another type than the switch compares: every edge.
    Every,
}

/// The value of `slot` for this walk: read by `read` the first time and
/// remembered, or read at every node for a slot beyond the ones a walk
/// remembers.
#[inline]
fn remembered<'r>(reads: &mut [Read<'r>], slot: u32, read: impl FnOnce() -> Read<'r>) -> Read<'r> {
    match reads.get_mut(slot as usize) {
        Some(cached @ Read::Unread) => {
            *cached = read();
            *cached
        }
        Some(cached) => *cached,
        None => read(),
    }
}

/// How many slots a walk remembers; a tree with more distinct switched
/// attributes reads the rest at every node (correct, only slower).
const SLOTS: usize = 32;

/// Whether `has` holds of a value and the fields below it, read exactly
/// as the evaluator reads it: each field must be a key of an object, with
/// a value that is not `null`, and the last value must say something
/// (not `false`, `""`, an empty list or an empty object).
fn present(value: Option<&Val<'_>>, fields: &[Box<str>]) -> bool {
    let Some(value) = value else {
        return false;
    };
    if fields.is_empty() {
        return !says_nothing(value);
    }
    let Val::Json(Value::Object(first)) = value else {
        return false;
    };
    present_below(first, fields)
}

/// The object a value is, if it is one: all that a presence below an
/// attribute reads of it ([`present`]).
fn object(value: Option<Val<'_>>) -> Option<&Map<String, Value>> {
    match value {
        Some(Val::Json(Value::Object(map))) => Some(map),
        _ => None,
    }
}

/// [`present`] below an attribute that holds the object `first`, for
/// `fields` not empty.
fn present_below(first: &Map<String, Value>, fields: &[Box<str>]) -> bool {
    let Some((last, path)) = fields.split_last() else {
        return false;
    };
    let mut map = first;
    for field in path {
        match map.get(&**field) {
            Some(Value::Object(inner)) => map = inner,
            _ => return false,
        }
    }
    match map.get(&**last) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(inner)) => !inner.is_empty(),
        Some(Value::Bool(true) | Value::Number(_)) => true,
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

/// A candidate of [`Tree::candidates_proven`]: the rule's index and the
/// conjuncts proved true (bit `i` for conjunct `i`).
pub fn proven_rule(candidate: u64) -> (u32, u32) {
    ((candidate >> 32) as u32, candidate as u32)
}

/// The largest duration, in seconds, that a double holds exactly: a
/// duration compares with a duration as an integer, with a number as a
/// double, so the tree indexes only durations where both agree.
const EXACT: u64 = 1 << 53;

/// A number or duration as the range switches compare it; `None` for
/// anything that does not order against a number without an error (and
/// for `NaN` and durations too large to hold exactly: the walk then visits
/// both sides).
fn number(value: &Val<'_>) -> Option<f64> {
    match value {
        Val::Num(n) if !n.is_nan() => Some(*n),
        Val::Dur(d) if *d <= EXACT => Some(*d as f64),
        _ => None,
    }
}

/// A constant threshold, as [`number`] reads values.
fn threshold(lit: &Lit) -> Option<f64> {
    match lit {
        Lit::Num(n) if !n.is_nan() => Some(*n),
        Lit::Dur(d) if *d <= EXACT => Some(*d as f64),
        _ => None,
    }
}

/// A cut between numbers: just below `at` (`at` itself is above the cut:
/// the sides are `< at` and `>= at`) or, when `after`, just above it
/// (`<= at` and `> at`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cut {
    /// The threshold.
    pub at: f64,
    /// True when `at` itself is below the cut.
    pub after: bool,
}

impl Cut {
    /// Cuts in order along the numbers; thresholds are never `NaN`.
    fn order(&self, other: &Cut) -> Ordering {
        self.at
            .partial_cmp(&other.at)
            .unwrap_or(Ordering::Equal)
            .then(self.after.cmp(&other.after))
    }

    /// True when `value` lies above the cut.
    pub fn is_above(&self, value: f64) -> bool {
        value > self.at || (value == self.at && !self.after)
    }

    /// The labels of the two sides, `< 70` and `>= 70` (durations in
    /// seconds, `3600s`).
    pub fn labels(&self, attr: &Attr) -> (String, String) {
        let unit = if attr.ty() == Ty::Dur { "s" } else { "" };
        let at = self.at;
        if self.after {
            (format!("<= {at}{unit}"), format!("> {at}{unit}"))
        } else {
            (format!("< {at}{unit}"), format!(">= {at}{unit}"))
        }
    }
}

/// The values a range head lets through, between two cuts (`None`: no
/// bound on that side).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bounds {
    lo: Option<Cut>,
    hi: Option<Cut>,
}

impl Bounds {
    fn is_empty(&self) -> bool {
        matches!((self.lo, self.hi), (Some(lo), Some(hi)) if lo.order(&hi) != Ordering::Less)
    }

    fn intersect(self, other: Bounds) -> Bounds {
        let lo = match (self.lo, other.lo) {
            (Some(a), Some(b)) => Some(if a.order(&b) == Ordering::Less { b } else { a }),
            (a, b) => a.or(b),
        };
        let hi = match (self.hi, other.hi) {
            (Some(a), Some(b)) => Some(if a.order(&b) == Ordering::Greater { b } else { a }),
            (a, b) => a.or(b),
        };
        Bounds { lo, hi }
    }

    /// True when every value within `outer` is within these bounds.
    fn covers(&self, outer: &Bounds) -> bool {
        let lo = match (self.lo, outer.lo) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.order(&b) != Ordering::Greater,
        };
        let hi = match (self.hi, outer.hi) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.order(&b) != Ordering::Less,
        };
        lo && hi
    }

    /// True when some value within the bounds lies below `cut`.
    fn reaches_below(&self, cut: &Cut) -> bool {
        self.lo.map_or(true, |lo| lo.order(cut) == Ordering::Less)
    }

    /// True when some value within the bounds lies above `cut`.
    fn reaches_above(&self, cut: &Cut) -> bool {
        self.hi.map_or(true, |hi| hi.order(cut) == Ordering::Greater)
    }
}

/// A switch's children, value to node, in the order the values first
/// appear in the policy, with a table of their [`hash_key`]s: a lookup
/// hashes the request's value once (the walk does it once a slot) and
/// probes a few slots of the table, comparing the string only when the
/// hash matches. The table is built from the policy's values alone and
/// kept at most half full, so its runs of taken slots stay short whatever
/// a request sends.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Children {
    entries: Vec<(Box<str>, NodeId)>,
    /// Open addressing with linear probing, a power of two long (empty
    /// when there are no entries): each taken slot holds the low half of
    /// an entry's hash and its position in `entries`; a free slot holds
    /// [`FREE`]. Entries are inserted in policy order, so a lookup meets
    /// the first of equal values first.
    table: Vec<(u32, u32)>,
    /// Under a string switch with complements (`!=`, `not in`), the child
    /// that a string no entry names follows.
    other: Option<NodeId>,
}

type Entry<'a> = (&'a Box<str>, &'a NodeId);

/// A free slot of [`Children`]'s table.
const FREE: u32 = u32::MAX;

/// The first slot of the table probed for a hash (`mask` is its length
/// less one): the high bits folded onto the low ones.
fn first_slot(hash: u64, mask: usize) -> usize {
    ((hash ^ (hash >> 32)) as usize) & mask
}

impl Children {
    fn new(entries: Vec<(Box<str>, NodeId)>, other: Option<NodeId>) -> Children {
        let mut table = Vec::new();
        if !entries.is_empty() {
            // At most half full: at least one free slot ends every probe.
            let size = (2 * entries.len()).next_power_of_two();
            table = vec![(0, FREE); size];
            let mask = size - 1;
            for (position, (value, _)) in entries.iter().enumerate() {
                let hash = hash_key(value);
                let mut at = first_slot(hash, mask);
                while let Some(slot) = table.get_mut(at) {
                    if slot.1 == FREE {
                        *slot = (hash as u32, position as u32);
                        break;
                    }
                    at = (at + 1) & mask;
                }
            }
        }
        Children {
            entries,
            table,
            other,
        }
    }

    /// The child for a value.
    pub fn get(&self, key: &str) -> Option<&NodeId> {
        self.get_hashed(key, hash_key(key))
    }

    /// The child for a value whose [`hash_key`] is `hash`.
    #[inline]
    fn get_hashed(&self, key: &str, hash: u64) -> Option<&NodeId> {
        let mask = self.table.len().checked_sub(1)?;
        let mut at = first_slot(hash, mask);
        loop {
            let &(low, position) = self.table.get(at)?;
            if position == FREE {
                return None;
            }
            if low == hash as u32 {
                if let Some((value, child)) = self.entries.get(position as usize) {
                    if **value == *key {
                        return Some(child);
                    }
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// The child a string that no entry names follows, when the switch
    /// has complements under it.
    pub fn other(&self) -> Option<NodeId> {
        self.other
    }

    /// Every child, in policy order, then the `other` child.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &NodeId> {
        self.entries
            .iter()
            .map(|(_, child)| child)
            .chain(self.other.as_ref())
    }

    /// Value and child, in policy order (without the `other` child).
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

/// The label of the `other` child in the tree's JSON, text and DOT.
const OTHER: &str = "other value";

impl Serialize for Children {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.len() + usize::from(self.other.is_some())))?;
        for (value, child) in self {
            map.serialize_entry(value, child)?;
        }
        if let Some(other) = &self.other {
            map.serialize_entry(OTHER, other)?;
        }
        map.end()
    }
}

/// The walk's stack of nodes to visit: on the call stack while it is
/// small (a request that has every switched attribute needs at most one
/// slot per level, a `rest` with rules: the child it follows is visited at
/// once, and empty leaves are not pushed), spilling to the heap only when
/// a missing attribute fans out.
///
/// Each node comes with the taint of the path to it: the slots (one bit
/// each, [`taint_bit`]) of the switches and cuts above it whose every child
/// the walk visited; 0 when the path followed only the request's own values
/// (see [`Tree::proven`]).
#[derive(Default)]
struct Stack {
    inline: [(NodeId, u32); 16],
    len: usize,
    spill: Vec<(NodeId, u32)>,
}

impl Stack {
    fn push(&mut self, id: (NodeId, u32)) {
        match self.inline.get_mut(self.len) {
            Some(slot) if self.spill.is_empty() => {
                *slot = id;
                self.len += 1;
            }
            _ => self.spill.push(id),
        }
    }

    fn pop(&mut self) -> Option<(NodeId, u32)> {
        if let Some(id) = self.spill.pop() {
            return Some(id);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get(self.len).copied()
    }
}

/// How many nodes [`Tree::rules_below`] visits at most, over all the
/// switches it is given: what a default deny spends looking for the
/// permits that came closest, whatever the size of the policy.
const NEAR_BUDGET: u32 = 64;

/// How many rules [`Tree::rules_below`] finds at most (it may find a
/// few more, the rest of the leaf that reached the limit).
pub const NEAR_LIMIT: usize = 6;

/// The rules below one switch's children as a depth-first search meets
/// them (children in order, then `other`; below each node its children,
/// then `any value`), each the first time, with the number of nodes the
/// search had visited when it reached the rule's leaf. The search stops
/// past [`NEAR_BUDGET`] nodes, or once it has met `2 * NEAR_LIMIT - 1`
/// rules (the most a request can need: those an earlier switch found
/// are met again, and found once).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Below {
    /// `(nodes visited, rule, false first)`, in the order met; the rules
    /// of one leaf share the count. `false first` says that the rule's
    /// first conjunct is false for every request that misses the switch
    /// ([`Builder::false_when_missed`]).
    found: Box<[(u32, u32, bool)]>,
    /// The nodes the whole search visits, or `NEAR_BUDGET + 1` when it
    /// stopped early.
    visits: u32,
    /// What [`Tree::near_rules`] gives when this switch is the first one
    /// missed, up to where it would go on to the next: each rule once,
    /// with its `false first`.
    alone: Box<[(u32, bool)]>,
    /// Whether [`Tree::near_rules`] stops within this switch when it is
    /// the first one missed (then `alone` is all it gives).
    stops: bool,
    /// When `stops` and every permit of `alone` has its first conjunct
    /// false: those permits, by rule index ([`Tree::near_permits_false`]).
    permits_false: Option<Box<[u32]>>,
}

impl Below {
    /// The search below the `children` of a switch, in `nodes`.
    fn search(nodes: &[Node], children: &Children) -> Below {
        let mut found: Vec<(u32, u32, bool)> = Vec::new();
        let mut stack: Vec<NodeId> = children.values().rev().copied().collect();
        let mut visits = 0u32;
        let most = 2 * NEAR_LIMIT - 1;
        while let Some(id) = stack.pop() {
            if visits == NEAR_BUDGET || found.len() >= most {
                visits = NEAR_BUDGET + 1;
                break;
            }
            visits += 1;
            match &nodes[id.0 as usize] {
                Node::Leaf { rules } => {
                    for &rule in rules {
                        if !found.iter().any(|&(_, r, _)| r == rule) {
                            found.push((visits, rule, false));
                        }
                    }
                }
                Node::Switch { children, rest, .. } => {
                    stack.push(*rest);
                    stack.extend(children.values().rev().copied());
                }
                Node::Range {
                    below, above, rest, ..
                } => {
                    stack.push(*rest);
                    stack.push(*above);
                    stack.push(*below);
                }
            }
        }
        Below {
            found: found.into_boxed_slice(),
            visits,
            alone: Box::default(),
            stops: false,
            permits_false: None,
        }
    }

    /// Notes [`Below::alone`] and [`Below::stops`], once `found` is final.
    fn note_alone(&mut self) {
        let mut alone = Vec::new();
        self.stops = self.take(0, &mut Met::default(), &mut |rule, false_first| {
            alone.push((rule, false_first))
        });
        self.alone = alone.into_boxed_slice();
    }

    /// Notes [`Below::permits_false`], once `alone` is noted.
    fn note_permits_false(&mut self, set: &PolicySet) {
        if !self.stops {
            return;
        }
        let permit = |rule: u32| {
            matches!(
                set.rules.get(rule as usize).map(|r| &r.kind),
                Some(RuleKind::Permit { .. })
            )
        };
        let mut permits = Vec::new();
        for &(rule, false_first) in self.alone.iter() {
            if permit(rule) {
                if !false_first {
                    return;
                }
                permits.push(rule);
            }
        }
        permits.sort_unstable();
        self.permits_false = Some(permits.into_boxed_slice());
    }

    /// Gives `met` this switch's rules not in `found` (noting them there),
    /// as [`Tree::near_rules`] takes them after `spent` nodes of the
    /// searches of earlier switches; true when the search stops here.
    fn take(&self, spent: u32, found: &mut Met, met: &mut impl FnMut(u32, bool)) -> bool {
        // The leaf being taken, by its visit count (counts start at 1).
        let mut leaf = 0u32;
        for &(visits, rule, false_first) in self.found.iter() {
            if visits != leaf {
                // Before a node past the budget, or before any node once
                // enough are found, the search stops: a leaf's rules are
                // all taken, or none.
                if spent + visits > NEAR_BUDGET || found.len() >= NEAR_LIMIT {
                    return true;
                }
                leaf = visits;
            }
            if found.insert(rule) {
                met(rule, false_first);
            }
        }
        spent + self.visits > NEAR_BUDGET || found.len() >= NEAR_LIMIT
    }
}

/// The rules [`Tree::near_rules`] met so far: a few, kept on the stack
/// (a leaf taken whole may bring more, kept after them in a list).
#[derive(Default)]
struct Met {
    inline: [u32; 2 * NEAR_LIMIT],
    len: usize,
    spill: Vec<u32>,
}

impl Met {
    /// How many rules were met.
    fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    /// Notes `rule`; false when it was met before.
    fn insert(&mut self, rule: u32) -> bool {
        let inline = self.inline.get(..self.len).unwrap_or_default();
        if inline.contains(&rule) || self.spill.contains(&rule) {
            return false;
        }
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = rule;
                self.len += 1;
            }
            None => self.spill.push(rule),
        }
        true
    }
}

/// The compiled decision tree, stored flat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tree {
    /// All nodes; the root is [`Tree::root`].
    pub nodes: Vec<Node>,
    /// Where the walk starts.
    pub root: NodeId,
    /// Per node, for a leaf, per rule of the leaf: the conjuncts of the
    /// rule (bit `i` for conjunct `i`, the first 32) that hold of every
    /// request whose walk reaches the leaf by following, at each switch and
    /// cut above it, the request's own value (not every child, as a
    /// missing value does). Empty for other nodes, and may be empty
    /// altogether (nothing known): [`Tree::candidates_proven`].
    #[serde(skip)]
    pub proven: Vec<Vec<u32>>,
    /// For conjunct `i` of rule `r`, at `32 * r + i`: the slot of the
    /// switches or cuts that prove it where a leaf proves it
    /// ([`Tree::proven`]; the slot of [`Node::Switch`] and [`Node::Range`],
    /// at most [`TAINT_FAR`]), so that a walk that visited every child of
    /// the switches of some slots keeps what the others proved. May be
    /// empty: a leaf reached below such a switch then proves nothing.
    #[serde(skip)]
    pub proven_slots: Vec<u8>,
}

/// The highest bit of a walk's taint ([`Tree::candidates_proven`]): it
/// stands for this slot and every slot after it.
pub const TAINT_FAR: u32 = 31;

/// The taint bit of a slot.
fn taint_bit(slot: u32) -> u32 {
    1 << slot.min(TAINT_FAR)
}

impl Serialize for Attr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.path())
    }
}

/// Rules at or below this many stay in one leaf.
const LEAF_SIZE: usize = 2;

/// What a head tests: an attribute (and, for presence below it, the
/// fields walked down), as a string, a bool, a presence or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'s> {
    attr: &'s Attr,
    on: On,
    fields: &'s [Box<str>],
}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.attr.hash(state);
        state.write_u8(self.on as u8);
        self.fields.hash(state);
    }
}

/// A [`Key`] by its position in [`Heads::keys`]: keys are compared, looked
/// up and remembered while the tree is built as these numbers, which are
/// equal exactly when the keys are.
type KeyId = u32;

impl<'s> Key<'s> {
    fn new(attr: &'s Attr, on: On) -> Key<'s> {
        Key {
            attr,
            on,
            fields: &[],
        }
    }
}

/// What one head test lets through.
#[derive(Debug, Clone, Copy)]
enum Test {
    /// The values `from..to` of [`Heads::values`].
    In(u32, u32),
    /// Any string but the values `from..to` of [`Heads::values`].
    Except(u32, u32),
    /// The numbers within the bounds.
    Range(Bounds),
}

/// One head test of a rule: what it tests and what it lets through.
type Head<'s> = (Key<'s>, Test);

/// A presence head test, `attr has` or `not attr has` on a whole
/// attribute or fields below it: the key, with `present` or `absent`
/// pushed to `out`; `None` for any other conjunct.
fn has_head<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) -> Option<Key<'e>> {
    let (inner, present) = match &expr.kind {
        ExprKind::Not(inner) => (&**inner, false),
        _ => (expr, true),
    };
    match &inner.kind {
        ExprKind::Has(attr, fields) => {
            out.push(presence_key(present));
            Some(Key {
                attr,
                on: On::Has,
                fields,
            })
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

/// The attribute and constant of `attr OP constant` or `constant OP attr`,
/// with the operator as if the attribute were on the left.
fn compared(expr: &Expr) -> Option<(&Attr, &Lit, BinOp)> {
    let ExprKind::Binary(op, left, right) = &expr.kind else {
        return None;
    };
    match (&left.kind, &right.kind) {
        (ExprKind::Attr(attr), ExprKind::Lit(lit)) => Some((attr, lit, *op)),
        (ExprKind::Lit(lit), ExprKind::Attr(attr)) => {
            let mirrored = match op {
                BinOp::Lt => BinOp::Gt,
                BinOp::Le => BinOp::Ge,
                BinOp::Gt => BinOp::Lt,
                BinOp::Ge => BinOp::Le,
                BinOp::Eq => BinOp::Eq,
                BinOp::Ne => BinOp::Ne,
                _ => return None,
            };
            Some((attr, lit, mirrored))
        }
        _ => None,
    }
}

/// True for an attribute whose string tests the tree indexes: strings and
/// untyped values, but not the time (compared as an instant) and not the
/// sensitivity (indexed by level).
fn string_attr(attr: &Attr) -> bool {
    matches!(attr.ty(), Ty::Str | Ty::Any) && *attr != Attr::EnvironmentTime
}

/// A complement head test, `attr != "x"` or `attr not in ["x", "y"]` on a
/// string: the attribute, with the excluded values pushed to `out`; `None`
/// (and `out` as it was) for any other conjunct.
fn except_head<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) -> Option<&'e Attr> {
    let (attr, lit, op) = compared(expr)?;
    if !string_attr(attr) {
        return None;
    }
    match (op, lit) {
        (BinOp::Ne, Lit::Str(value)) => out.push(value),
        (BinOp::NotIn, Lit::List(items)) => {
            let start = out.len();
            for item in items {
                match item {
                    Lit::Str(value) => out.push(value),
                    _ => {
                        out.truncate(start);
                        return None;
                    }
                }
            }
        }
        _ => return None,
    }
    Some(attr)
}

/// A range head test on a number or a duration (`attr > 70`, `1h >=
/// requested.ttl`, `attr == 3`): the attribute and the values it lets
/// through; `None` for any other conjunct.
fn range_head(expr: &Expr) -> Option<(&Attr, Bounds)> {
    let (attr, lit, op) = compared(expr)?;
    if !matches!(attr.ty(), Ty::Num | Ty::Dur | Ty::Any) {
        return None;
    }
    let at = threshold(lit)?;
    let cut = |after| Some(Cut { at, after });
    let bounds = match op {
        BinOp::Gt => Bounds {
            lo: cut(true),
            hi: None,
        },
        BinOp::Ge => Bounds {
            lo: cut(false),
            hi: None,
        },
        BinOp::Lt => Bounds {
            lo: None,
            hi: cut(false),
        },
        BinOp::Le => Bounds {
            lo: None,
            hi: cut(true),
        },
        BinOp::Eq => Bounds {
            lo: cut(false),
            hi: cut(true),
        },
        _ => return None,
    };
    Some((attr, bounds))
}

/// The head test a conjunct is, if any, with its values pushed to `out`.
fn head_of<'e>(conjunct: &'e Expr, out: &mut Vec<&'e str>) -> Option<Head<'e>> {
    let start = out.len() as u32;
    let end = |out: &Vec<&str>| out.len() as u32;
    if let Some(attr) = head_test_into(conjunct, out) {
        return Some((Key::new(attr, On::Str), Test::In(start, end(out))));
    }
    if let Some(attr) = except_head(conjunct, out) {
        return Some((Key::new(attr, On::Str), Test::Except(start, end(out))));
    }
    if let Some(attr) = bool_head(conjunct, out) {
        return Some((Key::new(attr, On::Bool), Test::In(start, end(out))));
    }
    if let Some(key) = has_head(conjunct, out) {
        return Some((key, Test::In(start, end(out))));
    }
    let (attr, bounds) = range_head(conjunct)?;
    Some((Key::new(attr, On::Num), Test::Range(bounds)))
}

/// Each rule's head: per attribute, the values its conjuncts allow
/// (intersected when several conjuncts test the same attribute). Stored
/// flat, in three lists for the whole set rather than lists per rule.
struct Heads<'s> {
    /// Per rule, its range of `entries`.
    rules: Vec<(u32, u32)>,
    /// Every key a head test tests, in the order met.
    keys: IndexSet<Key<'s>, BuildFnv>,
    /// The head tests of all rules, each with its key's position in `keys`.
    entries: Vec<(KeyId, Test)>,
    /// The values of all head tests.
    values: Vec<&'s str>,
    /// Per rule, where its conjuncts start in `conjuncts`.
    conjunct_start: Vec<u32>,
    /// Per conjunct of each rule: its head test, as its index in
    /// `entries`, or [`NO_HEAD`], or [`MERGED`] when another conjunct of
    /// the rule tests the same key (the entry holds what both let
    /// through, so the conjunct's own test is read again from it).
    conjuncts: Vec<u32>,
}

/// A conjunct that is no head test ([`Heads::conjuncts`]).
const NO_HEAD: u32 = u32::MAX;
/// A conjunct whose head test was merged with another's.
const MERGED: u32 = u32::MAX - 1;

/// The values `from..to` kept, in order, when `keep` holds of them,
/// compacted in place; the new end.
fn retain<'s>(values: &mut [&'s str], from: u32, to: u32, keep: impl Fn(&'s str) -> bool) -> u32 {
    let mut kept = from as usize;
    for at in from as usize..to as usize {
        let value = values[at];
        if keep(value) {
            values[kept] = value;
            kept += 1;
        }
    }
    kept as u32
}

/// Two head tests of one rule on the same key, as one: what both let
/// through. `new` was pushed last (its values from `start`).
fn merge<'s>(earlier: Test, new: Test, values: &mut Vec<&'s str>, start: usize) -> Test {
    let slice = |values: &[&'s str], from: u32, to: u32| -> Vec<&'s str> {
        values[from as usize..to as usize].to_vec()
    };
    match (earlier, new) {
        (Test::In(from, to), Test::In(s, e)) => {
            let new = slice(values, s, e);
            let kept = retain(values, from, to, |v| new.contains(&v));
            values.truncate(start);
            Test::In(from, kept)
        }
        (Test::In(from, to), Test::Except(s, e)) => {
            let excluded = slice(values, s, e);
            let kept = retain(values, from, to, |v| !excluded.contains(&v));
            values.truncate(start);
            Test::In(from, kept)
        }
        (Test::Except(from, to), Test::In(s, e)) => {
            let excluded = slice(values, from, to);
            let kept = retain(values, s, e, |v| !excluded.contains(&v));
            values.truncate(kept as usize);
            Test::In(s, kept)
        }
        (Test::Except(from, to), Test::Except(s, e)) => {
            if to == s {
                Test::Except(from, e)
            } else {
                values.extend_from_within(from as usize..to as usize);
                Test::Except(s, values.len() as u32)
            }
        }
        (Test::Range(a), Test::Range(b)) => {
            values.truncate(start);
            Test::Range(a.intersect(b))
        }
        (earlier, _) => {
            values.truncate(start);
            earlier
        }
    }
}

fn heads(set: &PolicySet) -> Heads<'_> {
    // At most one entry a conjunct: sized once, the lists never grow by
    // doubling (at 100,000 rules `entries` alone took 64 MiB so, half of
    // it unused, at the compile's peak of memory).
    let conjuncts: usize = set.rules.iter().map(|rule| rule.conjuncts.len()).sum();
    let mut heads = Heads {
        rules: Vec::with_capacity(set.rules.len()),
        keys: IndexSet::default(),
        entries: Vec::with_capacity(conjuncts),
        values: Vec::new(),
        conjunct_start: Vec::with_capacity(set.rules.len()),
        conjuncts: Vec::with_capacity(conjuncts),
    };
    // The previous rule's head tests: most rules test the keys the one
    // before tested, which are found there without hashing.
    let mut previous = 0..0;
    for rule in &set.rules {
        let first = heads.entries.len();
        let first_conjunct = heads.conjuncts.len();
        heads.conjunct_start.push(first_conjunct as u32);
        for conjunct in &rule.conjuncts {
            let start = heads.values.len();
            let Some((key, test)) = head_of(conjunct, &mut heads.values) else {
                heads.conjuncts.push(NO_HEAD);
                continue;
            };
            let known = heads.entries.get(previous.clone()).and_then(|entries| {
                entries
                    .iter()
                    .map(|&(id, _)| id)
                    .find(|&id| heads.keys.get_index(id as usize) == Some(&key))
            });
            let key = known.unwrap_or_else(|| heads.keys.insert_full(key).0 as KeyId);
            match heads.entries[first..].iter().position(|(k, _)| *k == key) {
                Some(at) => {
                    let (_, earlier) = &mut heads.entries[first + at];
                    *earlier = merge(*earlier, test, &mut heads.values, start);
                    let entry = (first + at) as u32;
                    for noted in &mut heads.conjuncts[first_conjunct..] {
                        if *noted == entry {
                            *noted = MERGED;
                        }
                    }
                    heads.conjuncts.push(MERGED);
                }
                None => {
                    heads.conjuncts.push(heads.entries.len() as u32);
                    heads.entries.push((key, test));
                }
            }
        }
        heads.rules.push((first as u32, heads.entries.len() as u32));
        previous = first..heads.entries.len();
    }
    heads
}

impl<'s> Heads<'s> {
    /// The head tests of `rule`.
    fn of(&self, rule: u32) -> &[(KeyId, Test)] {
        let (from, to) = self.rules[rule as usize];
        &self.entries[from as usize..to as usize]
    }

    fn values(&self, from: u32, to: u32) -> &[&'s str] {
        &self.values[from as usize..to as usize]
    }

    /// The key numbered `id`.
    fn key(&self, id: KeyId) -> Key<'s> {
        // Every number handed out is a position in `keys`.
        self.keys[id as usize]
    }
}

/// Where the builder is: the keys already switched on above (strings,
/// bools, presences), and the bounds that the range switches above leave
/// to each numeric attribute.
#[derive(Default)]
struct Scope<'s> {
    /// Per key number, how many switches above are on that key.
    used: Vec<u32>,
    bounds: Vec<(KeyId, Bounds)>,
    /// The value of each switch above whose child (named by that value)
    /// is being built; not the switches whose `other` or `rest` is.
    chosen: Vec<(KeyId, &'s str)>,
}

impl<'s> Scope<'s> {
    fn bounds(&self, key: KeyId) -> Bounds {
        self.bounds
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map_or(Bounds::default(), |(_, bounds)| *bounds)
    }

    /// The value the switch on `key` above took to reach here, if any.
    fn chosen(&self, key: KeyId) -> Option<&'s str> {
        self.chosen
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| *value)
    }

    /// Notes a switch on `key` above (`by` 1) or its end (`by` -1).
    fn switch_on(&mut self, key: KeyId, by: i32) {
        if let Some(n) = self.used.get_mut(key as usize) {
            *n = n.saturating_add_signed(by);
        }
    }

    /// True when `test` on `key` can still tell requests apart here.
    fn active(&self, key: KeyId, test: &Test) -> bool {
        match test {
            Test::In(from, to) | Test::Except(from, to) => {
                from < to && self.used.get(key as usize).copied().unwrap_or(0) == 0
            }
            Test::Range(bounds) => !bounds.is_empty() && !bounds.covers(&self.bounds(key)),
        }
    }
}

/// Complements hang under every child of their switch: past this many
/// placements per rule of the node (plus a constant), they stay in `rest`.
const EXCEPT_BUDGET: usize = 4;

struct Builder<'s> {
    set: &'s PolicySet,
    heads: Heads<'s>,
    nodes: Vec<Node>,
    /// [`Tree::proven`], per node.
    proven: Vec<Vec<u32>>,
    /// For conjunct `i` of rule `r`, at `32 * r + i`: the key that proves
    /// it where a leaf does, as its position in `keys` (`u8::MAX` for
    /// none yet); resolved to slots at the end ([`Tree::proven_slots`]).
    proven_keys: Vec<u8>,
    /// The keys that proved a conjunct, in the order met.
    keys: Vec<KeyId>,
    /// The keys switched on so far, in the order met: a key's position is
    /// its slot.
    slots: Vec<KeyId>,
    /// [`Builder::proven`]'s list of a conjunct's values, kept between
    /// calls.
    scratch: Vec<&'s str>,
    /// [`Builder::build`]'s count of rules per key number, all zero
    /// between calls.
    counts: Vec<u32>,
}

impl<'s> Builder<'s> {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.proven.push(Vec::new());
        NodeId((self.nodes.len() - 1) as u32)
    }

    /// A leaf of `rules`, with the conjuncts of each that the switches and
    /// cuts above decide (`scope`).
    fn leaf(&mut self, rules: Vec<u32>, scope: &Scope<'s>) -> NodeId {
        let proven: Vec<u32> = rules
            .iter()
            .map(|&rule| self.proven(rule, scope))
            .collect();
        let id = self.push(Node::Leaf { rules });
        if proven.iter().any(|&mask| mask != 0) {
            self.proven[id.0 as usize] = proven;
        }
        id
    }

    /// The conjuncts of `rule` (bit `i` for conjunct `i`, the first 32)
    /// that hold of every request whose value of each switch above is the
    /// one `scope` chose, and whose number at each cut above lies within
    /// `scope`'s bounds: an indexed string, bool or presence test that lets
    /// the chosen value through, a range that covers the bounds. The walk
    /// reaches the leaf that way only with such a value (a missing value or
    /// one of another type visits every child, and the path is then not
    /// counted: [`Tree::candidates_proven`]), and the tests read the value
    /// as the evaluator does, so each of these conjuncts evaluates to true.
    fn proven(&mut self, index: u32, scope: &Scope<'s>) -> u32 {
        if scope.chosen.is_empty() && scope.bounds.is_empty() {
            return 0;
        }
        let set: &'s PolicySet = self.set;
        let Some(rule) = set.rules.get(index as usize) else {
            return 0;
        };
        let mut mask = 0u32;
        // One list for every call: most rules' values fit what it grew to.
        let mut scratch = std::mem::take(&mut self.scratch);
        let noted = self.heads.conjunct_start.get(index as usize).map_or(0, |&at| at as usize);
        for (i, conjunct) in rule.conjuncts.iter().enumerate().take(32) {
            // The conjunct's head as `heads` found it; read again only
            // when it was merged with another conjunct's.
            let (key, test, values) = match self.heads.conjuncts.get(noted + i) {
                Some(&NO_HEAD) => continue,
                Some(&entry) if entry != MERGED => {
                    let Some(&(key, test)) = self.heads.entries.get(entry as usize) else {
                        continue;
                    };
                    (key, test, &self.heads.values[..])
                }
                _ => {
                    scratch.clear();
                    let Some((key, test)) = head_of(conjunct, &mut scratch) else {
                        continue;
                    };
                    // A key no head test has is neither chosen nor bounded
                    // above: the conjunct is not proven.
                    let Some(key) = self.heads.keys.get_index_of(&key) else {
                        continue;
                    };
                    (key as KeyId, test, &scratch[..])
                }
            };
            let holds = match test {
                Test::In(from, to) => scope
                    .chosen(key)
                    .is_some_and(|v| values[from as usize..to as usize].contains(&v)),
                Test::Except(from, to) => scope
                    .chosen(key)
                    .is_some_and(|v| !values[from as usize..to as usize].contains(&v)),
                Test::Range(range) => {
                    scope.bounds.iter().any(|(k, _)| *k == key) && range.covers(&scope.bounds(key))
                }
            };
            if holds {
                mask |= 1 << i;
                // The key that proves conjunct `i`, the same in every
                // leaf (it is the conjunct's own head): noted once.
                let keys = &mut self.keys;
                if let Some(noted) = self.proven_keys.get_mut(32 * index as usize + i) {
                    if *noted == u8::MAX {
                        let at = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                            keys.push(key);
                            keys.len() - 1
                        });
                        // Past 254 keys the conjunct counts as the far
                        // slot's, which a taint never leaves out.
                        *noted = at.min(usize::from(u8::MAX - 1)) as u8;
                    }
                }
            }
        }
        self.scratch = scratch;
        mask
    }

    /// The slot of a key, a new one the first time the key is met.
    fn slot(&mut self, key: KeyId) -> u32 {
        match self.slots.iter().position(|k| *k == key) {
            Some(at) => at as u32,
            None => {
                self.slots.push(key);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The head test of `rule` on `key`, if it is active here.
    fn test(&self, rule: u32, key: KeyId, scope: &Scope<'s>) -> Option<Test> {
        self.heads
            .of(rule)
            .iter()
            .find(|(k, test)| *k == key && scope.active(key, test))
            .map(|(_, test)| *test)
    }

    fn build(&mut self, rules: Vec<u32>, scope: &mut Scope<'s>) -> NodeId {
        if rules.len() <= LEAF_SIZE {
            return self.leaf(rules, scope);
        }
        // The attribute most of these rules test: a count per key number,
        // and the keys counted in the order met.
        let mut counts = std::mem::take(&mut self.counts);
        counts.resize(self.heads.keys.len(), 0);
        let mut met: Vec<KeyId> = Vec::new();
        for &rule in &rules {
            for &(key, ref test) in self.heads.of(rule) {
                if scope.active(key, test) {
                    if let Some(count) = counts.get_mut(key as usize) {
                        if *count == 0 {
                            met.push(key);
                        }
                        *count += 1;
                    }
                }
            }
        }
        // Ties go to strings, bools and presences before ranges (a range
        // switch halves the rules at best), then to the first key.
        let count = |key: KeyId| counts.get(key as usize).copied().unwrap_or(0);
        let best = met.iter().copied().max_by(|&a, &b| {
            count(a).cmp(&count(b)).then_with(|| {
                let (a, b) = (self.heads.key(a), self.heads.key(b));
                (b.on == On::Num).cmp(&(a.on == On::Num)).then_with(|| b.cmp(&a))
            })
        });
        for &key in &met {
            if let Some(count) = counts.get_mut(key as usize) {
                *count = 0;
            }
        }
        self.counts = counts;
        match best {
            None => self.leaf(rules, scope),
            Some(key) if self.heads.key(key).on == On::Num => self.range(rules, key, scope),
            Some(key) => self.switch(rules, key, scope),
        }
    }

    /// A switch on strings, bools or presence.
    fn switch(&mut self, rules: Vec<u32>, id: KeyId, scope: &mut Scope<'s>) -> NodeId {
        let key = self.heads.key(id);
        let tests: Vec<Option<Test>> = rules
            .iter()
            .map(|&rule| self.test(rule, id, scope))
            .collect();
        // The values, in the order they first appear; then the values that
        // only complements name, each a child of its own.
        let mut children: IndexMap<&'s str, Vec<u32>, BuildFnv> = IndexMap::default();
        let mut excepts = 0usize;
        // The child of each value of the `In` tests, in the order read, so
        // the rules are placed below without hashing the values again.
        let mut placed: Vec<u32> = Vec::new();
        for test in tests.iter().flatten() {
            match *test {
                Test::In(from, to) => {
                    for &value in self.heads.values(from, to) {
                        let entry = children.entry(value);
                        placed.push(entry.index() as u32);
                        entry.or_default();
                    }
                }
                Test::Except(..) => excepts += 1,
                Test::Range(_) => {}
            }
        }
        let named = children.len();
        for test in tests.iter().flatten() {
            if let Test::Except(from, to) = *test {
                for &value in self.heads.values(from, to) {
                    children.entry(value).or_default();
                }
            }
        }
        let index_excepts =
            excepts * (children.len() + 1) <= EXCEPT_BUDGET * rules.len() + 64;
        if !index_excepts {
            children.truncate(named);
        }
        let mut other = Vec::new();
        let mut rest = Vec::new();
        let mut placed = placed.into_iter();
        for (&rule, test) in rules.iter().zip(&tests) {
            match *test {
                Some(Test::In(from, to)) => {
                    for _ in from..to {
                        let child = placed
                            .next()
                            .and_then(|at| children.get_index_mut(at as usize));
                        if let Some((_, child)) = child {
                            child.push(rule);
                        }
                    }
                }
                Some(Test::Except(from, to)) if index_excepts => {
                    let excluded = self.heads.values(from, to);
                    for (value, child) in children.iter_mut() {
                        if !excluded.contains(value) {
                            child.push(rule);
                        }
                    }
                    other.push(rule);
                }
                _ => rest.push(rule),
            }
        }
        drop(tests);
        scope.switch_on(id, 1);
        if children.is_empty() && other.is_empty() {
            // Only complements, too many to index: switch on something else.
            let node = self.build(rest, scope);
            scope.switch_on(id, -1);
            return node;
        }
        drop(rules);
        let mut built = Vec::with_capacity(children.len());
        for (value, rules) in children {
            scope.chosen.push((id, value));
            let child = self.build(rules, scope);
            scope.chosen.pop();
            built.push((Box::<str>::from(value), child));
        }
        let other = (!other.is_empty()).then(|| self.build(other, scope));
        let rest = self.build(rest, scope);
        scope.switch_on(id, -1);
        let slot = self.slot(id);
        let children = Children::new(built, other);
        // A switch with an `other` child is never missed.
        let below = match children.other {
            Some(_) => Below::default(),
            None => {
                let mut below = Below::search(&self.nodes, &children);
                for met in below.found.iter_mut() {
                    met.2 = self.false_when_missed(met.1, key, &children);
                }
                below.note_alone();
                below.note_permits_false(self.set);
                below
            }
        };
        self.push(Node::Switch {
            attr: key.attr.clone(),
            fields: key.fields.to_vec(),
            on: key.on,
            children,
            rest,
            slot,
            below,
        })
    }

    /// Whether the first conjunct of `rule` is false for every request
    /// that misses a switch on `key` with these `children` (and no
    /// `other`): it is a head test on `key` that lets through only values
    /// the switch names. A request misses the switch only with a value of
    /// the switch's type that no child names (a missing value, or one of
    /// another type, visits every child), and the head test reads that
    /// value as the evaluator does, so the conjunct is false, not an
    /// error, and [`crate::eval::Evaluator::rule`] gives `False(0)`
    /// without evaluating it.
    fn false_when_missed(&mut self, rule: u32, key: Key<'s>, children: &Children) -> bool {
        let set: &'s PolicySet = self.set;
        let Some(first) = set
            .rules
            .get(rule as usize)
            .and_then(|rule| rule.conjuncts.first())
        else {
            return false;
        };
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        let false_first = match head_of(first, &mut values) {
            Some((head, Test::In(from, to))) if head == key => values
                .get(from as usize..to as usize)
                .is_some_and(|named| named.iter().all(|v| children.get(v).is_some())),
            _ => false,
        };
        self.scratch = values;
        false_first
    }

    /// One side of a cut on `key`, within the bounds `scope` gives it. A
    /// side of a few rules (at most [`LEAF_SIZE`]) would be a leaf; while
    /// one of them still has a threshold on `key` inside the side, it is
    /// cut again instead: the value is read already, a cut costs the walk
    /// one comparison, and a rule whose range misses the request's value
    /// (a forbid `context.risk_score >= 81` below a cut at `<= 81`) is then
    /// not a candidate, evaluated and listed for nothing.
    fn side(&mut self, rules: Vec<u32>, key: KeyId, scope: &mut Scope<'s>) -> NodeId {
        let cut_again = !rules.is_empty()
            && rules.len() <= LEAF_SIZE
            && rules
                .iter()
                .any(|&rule| matches!(self.test(rule, key, scope), Some(Test::Range(_))));
        if cut_again {
            self.range(rules, key, scope)
        } else {
            self.build(rules, scope)
        }
    }

    /// A range switch: the median of the thresholds the rules here use
    /// within the current bounds cuts the values in two.
    fn range(&mut self, rules: Vec<u32>, key: KeyId, scope: &mut Scope<'s>) -> NodeId {
        let bounds = scope.bounds(key);
        let tests: Vec<Option<Bounds>> = rules
            .iter()
            .map(|&rule| match self.test(rule, key, scope) {
                Some(Test::Range(range)) => Some(range),
                _ => None,
            })
            .collect();
        let mut cuts: Vec<Cut> = tests
            .iter()
            .flatten()
            .flat_map(|range| [range.lo, range.hi])
            .flatten()
            .filter(|cut| bounds.reaches_below(cut) && bounds.reaches_above(cut))
            .collect();
        cuts.sort_unstable_by(Cut::order);
        cuts.dedup_by(|a, b| a.order(b) == Ordering::Equal);
        let Some(&cut) = cuts.get(cuts.len() / 2) else {
            // Every active range has a threshold strictly inside the
            // bounds, so this is not reached; a leaf is always correct.
            return self.leaf(rules, scope);
        };
        let (mut below, mut above, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for (&rule, test) in rules.iter().zip(&tests) {
            match test {
                Some(range) => {
                    if range.reaches_below(&cut) {
                        below.push(rule);
                    }
                    if range.reaches_above(&cut) {
                        above.push(rule);
                    }
                }
                None => rest.push(rule),
            }
        }
        drop((rules, tests));
        scope.bounds.push((
            key,
            Bounds {
                lo: bounds.lo,
                hi: Some(cut),
            },
        ));
        let below = self.side(below, key, scope);
        scope.bounds.pop();
        scope.bounds.push((
            key,
            Bounds {
                lo: Some(cut),
                hi: bounds.hi,
            },
        ));
        let above = self.side(above, key, scope);
        scope.bounds.pop();
        let rest = self.build(rest, scope);
        let slot = self.slot(key);
        self.push(Node::Range {
            attr: self.heads.key(key).attr.clone(),
            cut,
            below,
            above,
            rest,
            slot,
        })
    }
}

/// Builds the decision tree of a checked policy set.
pub fn compile(set: &PolicySet) -> Tree {
    let mut builder = Builder {
        set,
        heads: heads(set),
        nodes: Vec::new(),
        proven: Vec::new(),
        proven_keys: vec![u8::MAX; 32 * set.rules.len()],
        keys: Vec::new(),
        slots: Vec::new(),
        scratch: Vec::new(),
        counts: Vec::new(),
    };
    let all: Vec<u32> = (0..set.rules.len() as u32).collect();
    let mut scope = Scope {
        used: vec![0; builder.heads.keys.len()],
        ..Scope::default()
    };
    let root = builder.build(all, &mut scope);
    // Every key that proved a conjunct has a switch or cut above that
    // leaf, so a slot; a conjunct never proved (or past the keys noted)
    // stands for the far slot, which a taint never leaves out.
    let far = TAINT_FAR as u8;
    let slot_of_key: Vec<u8> = builder
        .keys
        .iter()
        .take(usize::from(u8::MAX - 1))
        .map(|key| {
            builder
                .slots
                .iter()
                .position(|k| k == key)
                .map_or(far, |at| at.min(TAINT_FAR as usize) as u8)
        })
        .collect();
    let proven_slots = builder
        .proven_keys
        .iter()
        .map(|&key| slot_of_key.get(usize::from(key)).copied().unwrap_or(far))
        .collect();
    Tree {
        nodes: builder.nodes,
        root,
        proven: builder.proven,
        proven_slots,
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
        let exact = self.walk(value, near_misses, |_, rules, _| {
            out.extend_from_slice(rules);
        });
        out.sort_unstable();
        if !exact {
            out.dedup();
        }
    }

    /// As [`Tree::candidates`], each candidate with the conjuncts of its
    /// condition the walk decided are true for this request: the rule's
    /// index in the high 32 bits, and bit `i` of the low 32 for conjunct
    /// `i` ([`Tree::proven`]; [`proven_rule`] splits them). The conjuncts
    /// are those of a leaf reached by following only the request's own
    /// values; a rule reached by several paths has what any of them proved.
    pub fn candidates_proven<'r>(
        &self,
        value: impl Fn(&Attr) -> Option<Val<'r>>,
        out: &mut Vec<u64>,
        near_misses: &mut Vec<NodeId>,
    ) {
        let exact = self.walk(value, near_misses, |id, rules, taint| {
            // Most leaves a walk meets are empty (a switch's `rest`, a
            // value no rule below names).
            if rules.is_empty() {
                return;
            }
            let proven = self
                .proven
                .get(id.0 as usize)
                .filter(|proven| proven.len() == rules.len());
            // Pushed one by one: `out` has room for a typical walk, and a
            // plain loop costs less than `extend`'s general path.
            match proven {
                Some(proven) if taint == 0 => {
                    for (&rule, &mask) in rules.iter().zip(proven) {
                        out.push((u64::from(rule) << 32) | u64::from(mask));
                    }
                }
                Some(proven) => {
                    for (&rule, &mask) in rules.iter().zip(proven) {
                        let kept = self.untainted(rule, mask, taint);
                        out.push((u64::from(rule) << 32) | u64::from(kept));
                    }
                }
                None => {
                    for &rule in rules {
                        out.push(u64::from(rule) << 32);
                    }
                }
            }
        });
        // In rule order (the masks only order a rule's own copies).
        out.sort_unstable();
        if !exact {
            out.dedup_by(|later, kept| {
                let same = *later >> 32 == *kept >> 32;
                if same {
                    *kept |= *later;
                }
                same
            });
        }
    }

    /// Of the conjuncts of `rule` that a leaf proved (`mask`), those that a
    /// switch or cut of a slot outside `taint` proved: those switches
    /// followed the request's own value (a slot's value is read once a
    /// walk, so a slot whose switches visit every child does so at each
    /// of them, and is in the taint of every path below them).
    fn untainted(&self, rule: u32, mask: u32, taint: u32) -> u32 {
        let Some(slots) = self.proven_slots.get(32 * rule as usize..) else {
            return 0;
        };
        let mut kept = mask;
        let mut bits = mask;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            match slots.get(i as usize) {
                Some(&slot) if taint & taint_bit(u32::from(slot)) == 0 => {}
                _ => kept &= !(1 << i),
            }
        }
        kept
    }

    /// Pushes `id` for the walk to visit, unless it is a leaf without
    /// rules (most of the leaves a walk meets: a switch's `rest`, a side
    /// no range reaches), which gives a walk nothing.
    #[inline(always)]
    fn push_unless_empty(&self, stack: &mut Stack, id: NodeId, path: u32) {
        if let Some(id) = self.unless_empty(id) {
            stack.push((id, path));
        }
    }

    /// `id`, unless it is a leaf without rules.
    #[inline(always)]
    fn unless_empty(&self, id: NodeId) -> Option<NodeId> {
        match self.nodes.get(id.0 as usize) {
            Some(Node::Leaf { rules }) if rules.is_empty() => None,
            _ => Some(id),
        }
    }

    /// Walks the tree for a request, giving each leaf reached (its id, its
    /// rules, and the taint of the path to it: the slots of the switches
    /// and cuts above it whose every child the walk visited, 0 when it
    /// followed only the request's own values) to `leaf` (a leaf without
    /// rules may be skipped); true when every switch and cut followed one
    /// child (so no rule is met twice).
    #[inline]
    fn walk<'r>(
        &self,
        value: impl Fn(&Attr) -> Option<Val<'r>>,
        near_misses: &mut Vec<NodeId>,
        mut leaf: impl FnMut(NodeId, &[u32], u32),
    ) -> bool {
        let mut stack = Stack::default();
        // The node visited: the child a switch or cut followed is visited
        // next at once instead of pushed and popped (it would be the next
        // popped, so the order is the same).
        let (mut id, mut path) = (self.root, 0);
        let mut exact = true;
        // Each slot's value, read from the request the first time a node
        // switches on it (a walk meets the same few attributes at many
        // nodes).
        let mut reads = [Read::Unread; SLOTS];
        // The object that the attribute of the last presence below an
        // attribute held: the presences of several fields below one
        // attribute (`resource.properties has owner`, `... has ticket`),
        // each a slot of its own, read it from the request once.
        let mut object_of: Option<(&Attr, Option<&'r Map<String, Value>>)> = None;
        loop {
            let mut follow = None;
            match self.node(id) {
                Node::Leaf { rules } => leaf(id, rules, path),
                Node::Switch {
                    attr,
                    fields,
                    on,
                    children,
                    rest,
                    slot,
                    ..
                } => {
                    let read = remembered(&mut reads, *slot, || match (on, fields.is_empty()) {
                        (On::Has, false) => read_below(&mut object_of, attr, fields, &value),
                        _ => read_key(*on, value(attr), fields),
                    });
                    // `rest` is visited after the child followed, or after
                    // every child; or at once when the request misses the
                    // switch: it would be the next popped.
                    match read {
                        // A string no child names follows `other` when
                        // there is one: that is not a miss (and the rules
                        // of the children may be candidates through it).
                        // Nothing is proved there.
                        Read::Key(key, hash) => match children.get_hashed(key, hash) {
                            Some(&child) => {
                                self.push_unless_empty(&mut stack, *rest, path);
                                follow = Some(child);
                            }
                            None => match children.other {
                                Some(other) => {
                                    self.push_unless_empty(&mut stack, *rest, path);
                                    follow = Some(other);
                                }
                                None => {
                                    near_misses.push(id);
                                    follow = self.unless_empty(*rest);
                                }
                            },
                        },
                        Read::Every | Read::Num(_) | Read::Unread => {
                            exact = false;
                            self.push_unless_empty(&mut stack, *rest, path);
                            let taint = path | taint_bit(*slot);
                            // Pushed as they are: few of a switch's
                            // children are empty.
                            children
                                .values()
                                .for_each(|&child| stack.push((child, taint)));
                        }
                    }
                }
                Node::Range {
                    attr,
                    cut,
                    below,
                    above,
                    rest,
                    slot,
                } => {
                    let read = remembered(&mut reads, *slot, || {
                        match value(attr).as_ref().and_then(number) {
                            Some(n) => Read::Num(n),
                            None => Read::Every,
                        }
                    });
                    match read {
                        // A side without rules (most often the one the
                        // forbids of a chain are not on) is not visited:
                        // `rest` is, at once.
                        Read::Num(n) => {
                            let side = if cut.is_above(n) { *above } else { *below };
                            match self.unless_empty(side) {
                                Some(side) => {
                                    self.push_unless_empty(&mut stack, *rest, path);
                                    follow = Some(side);
                                }
                                None => follow = self.unless_empty(*rest),
                            }
                        }
                        Read::Every | Read::Key(..) | Read::Unread => {
                            exact = false;
                            self.push_unless_empty(&mut stack, *rest, path);
                            let taint = path | taint_bit(*slot);
                            self.push_unless_empty(&mut stack, *below, taint);
                            self.push_unless_empty(&mut stack, *above, taint);
                        }
                    }
                }
            }
            if let Some(next) = follow {
                id = next;
                continue;
            }
            match stack.pop() {
                Some((next, taint)) => (id, path) = (next, taint),
                None => break,
            }
        }
        exact
    }

    /// About [`NEAR_LIMIT`] rules found below the children of the given
    /// switches (the first [`NEAR_BUDGET`] nodes of a depth-first search
    /// below each in turn, each rule once, stopping once the limit is
    /// reached): the rules that would have been candidates had one tested
    /// value been different. Read from what [`Below`] kept of each switch
    /// when the tree was built, so it visits no node.
    pub fn rules_below(&self, switches: &[NodeId]) -> Vec<u32> {
        let mut found = Vec::with_capacity(2 * NEAR_LIMIT);
        self.near_rules(switches, |rule, _| found.push(rule));
        found
    }

    /// As [`Tree::rules_below`], giving each rule to `met` in turn instead
    /// of collecting them, with whether its first conjunct is false for
    /// this request (known when the tree was built: the rule's first
    /// conjunct is a head test on the missed switch's attribute that lets
    /// through only values the switch names, and the request's value is
    /// none of them).
    pub fn near_rules(&self, switches: &[NodeId], mut met: impl FnMut(u32, bool)) {
        // Most default denies find enough below the first switch missed:
        // what they find there was listed when the tree was built.
        if let Some(Node::Switch { below, .. }) = switches.first().map(|&id| self.node(id)) {
            if below.stops {
                for &(rule, false_first) in below.alone.iter() {
                    met(rule, false_first);
                }
                return;
            }
        }
        let mut found = Met::default();
        // The nodes the searches of the switches before spent.
        let mut spent = 0u32;
        for &switch in switches {
            let Node::Switch { below, .. } = self.node(switch) else {
                continue;
            };
            if below.take(spent, &mut found, &mut met) {
                return;
            }
            spent += below.visits;
        }
    }

    /// When the first of the missed `switches` gives [`Tree::near_rules`]
    /// all it finds, and every permit among them has its first conjunct
    /// false for this request: those permits, by rule index. Each then
    /// held no condition, so a default deny with no permit among its
    /// candidates names the first of them as the closest, without
    /// evaluating or sorting them ([`Below::permits_false`], worked out
    /// when the tree was built).
    pub fn near_permits_false(&self, switches: &[NodeId]) -> Option<&[u32]> {
        match switches.first().map(|&id| self.node(id)) {
            Some(Node::Switch { below, .. }) => below.permits_false.as_deref(),
            _ => None,
        }
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
                fields,
                on,
                children,
                rest,
                ..
            } => {
                let _ = writeln!(out, "{pad}switch {}", switched(attr, fields));
                for (value, child) in children {
                    let _ = match on {
                        On::Str => writeln!(out, "{pad}  == \"{value}\""),
                        On::Bool => writeln!(out, "{pad}  == {value}"),
                        On::Has | On::Num => writeln!(out, "{pad}  {value}"),
                    };
                    self.render_node(set, *child, depth + 2, out);
                }
                if let Some(other) = children.other {
                    let _ = writeln!(out, "{pad}  {OTHER}");
                    self.render_node(set, other, depth + 2, out);
                }
                let _ = writeln!(out, "{pad}  any value");
                self.render_node(set, *rest, depth + 2, out);
            }
            Node::Range {
                attr,
                cut,
                below,
                above,
                rest,
                ..
            } => {
                let _ = writeln!(out, "{pad}switch {}", attr.path());
                let (low, high) = cut.labels(attr);
                for (label, child) in [(low, below), (high, above)] {
                    let _ = writeln!(out, "{pad}  {label}");
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
        let edge = |out: &mut String, from: usize, to: NodeId, label: &str| {
            let _ = writeln!(
                out,
                "  n{from} -> n{} [label=\"{}\"];",
                to.0,
                escape_dot(label)
            );
        };
        let diamond = |out: &mut String, index: usize, label: &str| {
            let _ = writeln!(
                out,
                "  n{index} [shape=diamond, label=\"{}\"];",
                escape_dot(label)
            );
        };
        let any = |out: &mut String, index: usize, rest: NodeId| {
            let _ = writeln!(
                out,
                "  n{index} -> n{} [label=\"any value\", style=dashed];",
                rest.0
            );
        };
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
                    fields,
                    on,
                    children,
                    rest,
                    ..
                } => {
                    diamond(&mut out, index, &switched(attr, fields));
                    for (value, child) in children {
                        let label = match on {
                            On::Str => format!("\"{value}\""),
                            On::Bool | On::Has | On::Num => value.to_string(),
                        };
                        edge(&mut out, index, *child, &label);
                    }
                    if let Some(other) = children.other {
                        edge(&mut out, index, other, OTHER);
                    }
                    any(&mut out, index, *rest);
                }
                Node::Range {
                    attr,
                    cut,
                    below,
                    above,
                    rest,
                    ..
                } => {
                    diamond(&mut out, index, &attr.path());
                    let (low, high) = cut.labels(attr);
                    edge(&mut out, index, *below, &low);
                    edge(&mut out, index, *above, &high);
                    any(&mut out, index, *rest);
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

/// What a switch names: the attribute, and the fields below it that a
/// presence switch walks down.
fn switched(attr: &Attr, fields: &[Box<str>]) -> String {
    let mut path = attr.path();
    for field in fields {
        path.push('.');
        path.push_str(field);
    }
    path
}

fn escape_dot(text: &str) -> String {
    text.replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;

    fn tree_text(source: &str) -> String {
        match Engine::compile([("t.writ", source)], None) {
            Ok(engine) => engine.tree().render(engine.policy()),
            Err(d) => panic!("{}", d.render(false)),
        }
    }

    /// The candidates of a walk over `source` for a request with
    /// `subject.kind` and `context.risk_score` as given (missing when
    /// `None`): each rule's id with the conjuncts proved, in rule order.
    fn proved(source: &str, kind: Option<&str>, risk: Option<f64>) -> Vec<(String, u32)> {
        let engine = match Engine::compile([("t.writ", source)], None) {
            Ok(engine) => engine,
            Err(d) => panic!("{}", d.render(false)),
        };
        let mut out = Vec::new();
        let mut near = Vec::new();
        engine.tree().candidates_proven(
            |attr| match &*attr.path() {
                "subject.kind" => kind.map(|k| Val::Str(Cow::Borrowed(k))),
                "context.risk_score" => risk.map(Val::Num),
                _ => None,
            },
            &mut out,
            &mut near,
        );
        out.into_iter()
            .map(|c| {
                let (rule, mask) = proven_rule(c);
                (engine.policy().rules[rule as usize].id.to_string(), mask)
            })
            .collect()
    }

    /// Five forbids, each a kind test and a range on the score (`b` the
    /// other way round), for the tests of what a walk proves.
    const KIND_AND_SCORE: &str = "@id(\"a\") forbid if subject.kind == \"ci\" and context.risk_score > 70;\n\
         @id(\"b\") forbid if context.risk_score >= 40 and subject.kind in [\"ci\", \"agent\"];\n\
         @id(\"c\") forbid if subject.kind == \"agent\" and context.risk_score < 10;\n\
         @id(\"d\") forbid if subject.kind != \"human\" and context.risk_score > 90;\n\
         @id(\"e\") forbid if subject.kind == \"ci\" and context.risk_score == 80;\n";

    /// A walk proves the conjuncts its switches and cuts decided, only on
    /// paths that followed the request's own values: not below a missing
    /// value, not under `other`, not a test the switch left in `rest`.
    #[test]
    fn a_walk_proves_what_its_switches_decided() {
        let source = KIND_AND_SCORE;
        let ids = |v: &[(String, u32)]| v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
        let ci = proved(source, Some("ci"), Some(95.0));
        assert_eq!(ids(&ci), ["a", "b", "d"], "{ci:?}");
        for (id, mask) in &ci {
            // Every conjunct of these holds for `ci` at 95; the walk proves
            // the kind test of each and may leave the range to evaluation,
            // but never claims a conjunct that is false.
            assert_ne!(*mask, 0, "{id}: {ci:?}");
            assert_eq!(mask & !0b11, 0, "{id}: {ci:?}");
        }
        // At 75, `d`'s range is false, and `e`'s `== 80`: neither proved.
        for (id, mask) in proved(source, Some("ci"), Some(75.0)) {
            match id.as_str() {
                "a" | "b" => assert_ne!(mask, 0, "{id}"),
                _ => assert_eq!(mask & 0b10, 0, "{id}: its range is false at 75"),
            }
        }
        // A missing kind visits every child: nothing proved of the kind.
        for (id, mask) in proved(source, None, Some(95.0)) {
            let kind_at = usize::from(id == "b");
            assert_eq!(mask & (1 << kind_at), 0, "{id}");
        }
        // A missing score visits both sides of each cut: nothing proved of
        // the ranges.
        for (id, mask) in proved(source, Some("ci"), None) {
            let range_at = usize::from(id != "b");
            assert_eq!(mask & (1 << range_at), 0, "{id}");
        }
    }

    /// Below a switch whose value is missing, what the other switches and
    /// cuts on the path decided still holds: a missing kind leaves the
    /// ranges proved, a missing score the kind tests; never a conjunct of
    /// the missing attribute, never one that is false.
    #[test]
    fn a_missing_value_leaves_what_the_other_switches_proved() {
        let source = KIND_AND_SCORE;
        // Conjunct positions: the kind test, then the range (`b` the other
        // way round).
        let kind_at = |id: &str| u32::from(id == "b");
        let range_at = |id: &str| u32::from(id != "b");
        let no_kind = proved(source, None, Some(95.0));
        for (id, mask) in &no_kind {
            assert_eq!(mask & (1 << kind_at(id)), 0, "{id}: {no_kind:?}");
            if mask & (1 << range_at(id)) != 0 {
                // `c`'s `< 10` and `e`'s `== 80` are false at 95.
                assert!(["a", "b", "d"].contains(&id.as_str()), "{id}");
            }
        }
        let ranges = no_kind
            .iter()
            .filter(|(id, mask)| mask & (1 << range_at(id)) != 0)
            .count();
        assert!(ranges > 0, "the cuts followed 95: {no_kind:?}");
        let no_risk = proved(source, Some("ci"), None);
        for (id, mask) in &no_risk {
            assert_eq!(mask & (1 << range_at(id)), 0, "{id}: {no_risk:?}");
            if mask & (1 << kind_at(id)) != 0 {
                // `c` tests for an agent.
                assert_ne!(id, "c", "{no_risk:?}");
            }
        }
        let kinds = no_risk
            .iter()
            .filter(|(id, mask)| mask & (1 << kind_at(id)) != 0)
            .count();
        assert!(kinds > 0, "the kind switch followed ci: {no_risk:?}");
    }

    #[test]
    fn cuts_order_and_place_values() {
        let below = Cut {
            at: 70.0,
            after: false,
        };
        let after = Cut {
            at: 70.0,
            after: true,
        };
        assert_eq!(below.order(&after), Ordering::Less);
        assert!(below.is_above(70.0) && !after.is_above(70.0));
        assert!(after.is_above(70.5) && !below.is_above(69.9));
        // `> 70` reaches above either cut at 70 but not below `> 70`'s own.
        let gt = Bounds {
            lo: Some(after),
            hi: None,
        };
        assert!(gt.reaches_above(&below) && gt.reaches_above(&after));
        assert!(!gt.reaches_below(&after) && !gt.reaches_below(&below));
        // `== 70` is not empty; `> 70 and < 70` is.
        let eq = Bounds {
            lo: Some(below),
            hi: Some(after),
        };
        assert!(!eq.is_empty());
        assert!(gt.intersect(Bounds { lo: None, hi: Some(below) }).is_empty());
        assert!(gt.covers(&Bounds {
            lo: Some(after),
            hi: None
        }));
        assert!(!gt.covers(&Bounds::default()));
    }

    /// A side of a cut with a rule or two is cut again while one of them
    /// still has a threshold inside it: a rule whose range misses the
    /// request's number is no candidate, however few share its side.
    #[test]
    fn a_small_side_is_cut_again_until_its_ranges_decide() {
        let source = "@id(\"a\") forbid if context.risk_score > 90;\n\
             @id(\"b\") forbid if context.risk_score >= 80;\n\
             @id(\"c\") forbid if context.risk_score < 10;\n";
        let ids = |v: Vec<(String, u32)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        // Above the cut at 80, `a` and `b` share a side: cut again at 90.
        assert_eq!(ids(proved(source, None, Some(85.0))), ["b"]);
        assert_eq!(ids(proved(source, None, Some(95.0))), ["a", "b"]);
        // Below it, `c` alone: cut again at 10.
        assert!(ids(proved(source, None, Some(50.0))).is_empty());
        assert_eq!(ids(proved(source, None, Some(5.0))), ["c"]);
        // Each range the walk reached is proved (it covers its leaf).
        for (id, mask) in proved(source, None, Some(95.0)) {
            assert_eq!(mask, 1, "{id}");
        }
        // A missing score still reaches every rule.
        assert_eq!(ids(proved(source, None, None)), ["a", "b", "c"]);
    }

    /// The rules below a missed switch carry whether their first conjunct
    /// is false for a request that misses it: a head test on the switch's
    /// attribute whose every value the switch names, and only that (`d`'s
    /// first conjunct lets through `"x"`, which no child names).
    #[test]
    fn a_missed_switch_knows_which_first_conjuncts_are_false() {
        let source = "@id(\"a\") forbid if action == \"read\" and subject.kind == \"ci\";\n\
             @id(\"b\") forbid if subject.kind == \"ci\" and action == \"write\";\n\
             @id(\"c\") forbid if action in [\"read\", \"write\"] and subject.kind == \"agent\";\n\
             @id(\"d\") forbid if action in [\"read\", \"x\"] and action != \"x\";\n";
        let engine = match Engine::compile([("t.writ", source)], None) {
            Ok(engine) => engine,
            Err(d) => panic!("{}", d.render(false)),
        };
        let tree = engine.tree();
        let Node::Switch { attr, children, .. } = tree.node(tree.root) else {
            panic!("the root is a switch");
        };
        assert_eq!(attr.path(), "action");
        assert!(children.get("x").is_none() && children.other().is_none());
        let mut met = Vec::new();
        tree.near_rules(&[tree.root], |rule, false_first| {
            met.push((engine.policy().rules[rule as usize].id.to_string(), false_first));
        });
        met.sort();
        let expected = [("a", true), ("b", false), ("c", true), ("d", false)]
            .map(|(id, false_first)| (id.to_string(), false_first));
        assert_eq!(met, expected);
    }

    #[test]
    fn ranges_split_at_the_median_threshold() {
        let text = tree_text(
            "@id(\"a\") forbid if context.risk_score > 70;\n\
             @id(\"b\") forbid if 40 <= context.risk_score;\n\
             @id(\"c\") forbid if context.risk_score < 10;\n\
             @id(\"d\") forbid if requested.ttl > 1h;\n",
        );
        assert!(text.contains("switch context.risk_score\n  < 40\n"), "{text}");
        assert!(text.contains("  >= 40\n"), "{text}");
        assert!(text.contains("any value\n    forbid d\n"), "{text}");
    }

    #[test]
    fn complements_hang_under_every_value_but_theirs_and_other() {
        let text = tree_text(
            "@id(\"a\") forbid if subject.kind == \"ci\";\n\
             @id(\"b\") forbid if subject.kind != \"agent\";\n\
             @id(\"c\") forbid if subject.kind not in [\"ci\", \"human\"];\n",
        );
        let expected = "switch subject.kind\n  == \"ci\"\n    forbid a\n    forbid b\n  == \"agent\"\n    forbid c\n  == \"human\"\n    forbid b\n  other value\n    forbid b\n    forbid c\n  any value\n    (no rules)\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn presence_below_an_attribute_names_the_path() {
        let text = tree_text(
            "@id(\"a\") forbid if context has exception.id;\n\
             @id(\"b\") forbid if not context has exception.id;\n\
             @id(\"c\") forbid if resource.properties has pii;\n",
        );
        assert!(text.contains("switch context.exception.id\n  present\n    forbid a\n  absent\n    forbid b\n"), "{text}");
    }

    #[test]
    fn present_reads_as_has_does() {
        let object = serde_json::json!({"id": "", "inner": {"n": 0, "no": null}, "yes": true});
        let value = Some(Val::Json(&object));
        let path = |fields: &[&str]| -> Vec<Box<str>> { fields.iter().map(|f| (*f).into()).collect() };
        assert!(!present(value.as_ref(), &path(&["id"])));
        assert!(present(value.as_ref(), &path(&["inner", "n"])));
        assert!(!present(value.as_ref(), &path(&["inner", "no"])));
        assert!(!present(value.as_ref(), &path(&["inner", "n", "deeper"])));
        assert!(present(value.as_ref(), &path(&["yes"])));
        assert!(!present(None, &path(&["yes"])));
        assert!(present(value.as_ref(), &[]));
    }
}
