//! The decision: contract.md's JSON, as serde types.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::authorize::{Fault, Obligated};
use crate::ir::PolicySet;
use crate::name::needs_escape;
pub use crate::name::Name;

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Mint the credential, with the scope, TTL and obligations given.
    Allow,
    /// Do not mint (the default).
    #[default]
    Deny,
}

/// What the broker must do to honour an allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObligationOut {
    /// `approval`, `revoke_on`, `audience`, `log`.
    pub kind: String,
    /// For `revoke_on`: the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// For `audience`: the value to bind the token to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The rule that asked for it.
    pub rule: String,
}

/// An error in a decision, reported and failed closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorOut {
    /// The rule being evaluated (`request` for a bad request).
    pub rule: String,
    /// What went wrong.
    pub message: String,
    /// The error is about the request, not a rule (then `rule` reads
    /// `request`, which a rule may also be called): set by writ when it
    /// decides, not part of the JSON.
    #[serde(skip)]
    pub(crate) request: bool,
}

impl ErrorOut {
    /// An error in a rule.
    pub fn in_rule(rule: String, message: String) -> ErrorOut {
        ErrorOut {
            rule,
            message,
            request: false,
        }
    }

    /// An error about the request itself, outside any rule.
    pub fn in_request(message: String) -> ErrorOut {
        ErrorOut {
            rule: "request".to_owned(),
            message,
            request: true,
        }
    }

    /// True when the error is about the request, not a rule: a request
    /// refused before any rule ran, or a fault no rule owns.
    pub fn is_request(&self) -> bool {
        self.request
    }
}

/// How a rule fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its condition held (or, for forbid/limit/require, errored: fail closed).
    Matched,
    /// A condition was false.
    NotMatched,
    /// Evaluating it failed.
    Error,
}

/// The condition that stopped a rule, and the value it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// The condition as written.
    pub condition: Name,
    /// The value of the attribute it tested (`null` when missing).
    pub saw: Value,
}

/// What a rule did to the decision: one item of a trace entry's `effect`.
/// Its text (the `Display`, which is also how it serializes) is part of
/// the decision contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A forbid that matched denied: `denied`.
    Denied,
    /// A permit granted these of the decision's scope items, `, `-joined
    /// in scope order: `granted read:a, read:b`.
    Granted {
        /// The items.
        items: String,
    },
    /// A permit without a grant allowed: `allowed (no scope of its own)`.
    AllowedWithoutScope,
    /// A permit's grant covered nothing that survived:
    /// `covered none of the requested scope`.
    CoveredNone,
    /// A `limit scope` removed these items (none, when empty):
    /// `narrowed scope: dropped a, b`.
    NarrowedScope {
        /// The items it removed.
        dropped: Vec<String>,
    },
    /// The first TTL cap met set the TTL: `set ttl 900`.
    TtlSet(u64),
    /// A cap lowered the TTL: `capped ttl 3600 -> 900`.
    TtlCapped {
        /// The TTL before.
        from: u64,
        /// The cap, now the TTL.
        to: u64,
    },
    /// A cap at or above the TTL: `cap 3600 did not lower ttl 900`.
    TtlKept {
        /// The cap.
        cap: u64,
        /// The TTL, unchanged.
        ttl: u64,
    },
    /// A cap of 0 seconds denied: `denied: ttl under one second`.
    TtlUnderOneSecond,
    /// A `limit ttl` cap computed for the request, and how:
    /// `computed cap 312 = min(900, until 2026-12-01T10:05:12Z)`. The step
    /// that applies the cap follows.
    TtlComputed {
        /// The cap, in seconds.
        cap: u64,
        /// How it was worked out.
        how: String,
    },
    /// An obligation the decision carries: `added obligation revoke_on
    /// objective_changed`.
    ObligationAdded {
        /// `approval`, `revoke_on`, `audience`, `log`.
        kind: &'static str,
        /// The event or value, when the kind has one.
        detail: Option<String>,
    },
    /// An obligation that could not be computed denied:
    /// `denied: obligation could not be computed`.
    ObligationFailed,
}

impl Step {
    /// True for the steps that derive scope and TTL (what `writ explain`
    /// lists under "scope and ttl").
    pub fn is_scope_or_ttl(&self) -> bool {
        !matches!(
            self,
            Step::Denied | Step::ObligationAdded { .. } | Step::ObligationFailed
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.push_text(&mut text);
        f.write_str(&text)
    }
}

/// Room for a step's text, in bytes: the scratch buffer a trace's JSON
/// writes the steps' texts into starts this large, for the longest a pack
/// writes (`added obligation revoke_on state_change`), so that it is not
/// grown step by step (about 200 instructions an answer; growing it by
/// `reserve` before the first step cost more, docs/performance.md "Server
/// CPU, round 32").
const STEP_TEXT: usize = 128;

/// The decimal digits of `n`, in `buffer`.
pub(crate) fn digits(n: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    let mut n = n;
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buffer[at..]).unwrap_or("0")
}

impl Step {
    /// Appends the step's text (its `Display`) to `out`: the one place a
    /// step is written as text, without the formatting machinery (a trace
    /// writes one for every matched rule).
    pub fn push_text(&self, out: &mut String) {
        let mut buffer = [0u8; 20];
        let mut number = |out: &mut String, n: u64| out.push_str(digits(n, &mut buffer));
        match self {
            Step::Denied => out.push_str("denied"),
            Step::Granted { items } => {
                out.push_str("granted ");
                out.push_str(items);
            }
            Step::AllowedWithoutScope => out.push_str("allowed (no scope of its own)"),
            Step::CoveredNone => out.push_str("covered none of the requested scope"),
            Step::NarrowedScope { dropped } if dropped.is_empty() => {
                out.push_str("narrowed scope: nothing to drop")
            }
            Step::NarrowedScope { dropped } => {
                out.push_str("narrowed scope: dropped ");
                for (i, item) in dropped.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(item);
                }
            }
            Step::TtlSet(ttl) => {
                out.push_str("set ttl ");
                number(out, *ttl);
            }
            Step::TtlCapped { from, to } => {
                out.push_str("capped ttl ");
                number(out, *from);
                out.push_str(" -> ");
                number(out, *to);
            }
            Step::TtlKept { cap, ttl } => {
                out.push_str("cap ");
                number(out, *cap);
                out.push_str(" did not lower ttl ");
                number(out, *ttl);
            }
            Step::TtlUnderOneSecond => out.push_str("denied: ttl under one second"),
            Step::TtlComputed { cap, how } => {
                out.push_str("computed cap ");
                let start = out.len();
                number(out, *cap);
                // A cap read as it is (from the data, an attribute) says no
                // more.
                if out[start..] != **how {
                    out.push_str(" = ");
                    out.push_str(how);
                }
            }
            Step::ObligationAdded { kind, detail } => {
                out.push_str("added obligation ");
                out.push_str(kind);
                if let Some(detail) = detail {
                    out.push(' ');
                    out.push_str(detail);
                }
            }
            Step::ObligationFailed => out.push_str("denied: obligation could not be computed"),
        }
    }
}

impl Step {
    /// The step a trace's text stands for; `None` for text no step
    /// writes. The inverse of `Display`.
    pub fn parse(text: &str) -> Option<Step> {
        let number = |t: &str| t.parse::<u64>().ok();
        Some(match text {
            "denied" => Step::Denied,
            "allowed (no scope of its own)" => Step::AllowedWithoutScope,
            "covered none of the requested scope" => Step::CoveredNone,
            "narrowed scope: nothing to drop" => Step::NarrowedScope {
                dropped: Vec::new(),
            },
            "denied: ttl under one second" => Step::TtlUnderOneSecond,
            "denied: obligation could not be computed" => Step::ObligationFailed,
            _ => {
                if let Some(items) = text.strip_prefix("granted ") {
                    Step::Granted {
                        items: items.to_owned(),
                    }
                } else if let Some(items) = text.strip_prefix("narrowed scope: dropped ") {
                    Step::NarrowedScope {
                        dropped: items.split(", ").map(str::to_owned).collect(),
                    }
                } else if let Some(ttl) = text.strip_prefix("set ttl ") {
                    Step::TtlSet(number(ttl)?)
                } else if let Some(rest) = text.strip_prefix("capped ttl ") {
                    let (from, to) = rest.split_once(" -> ")?;
                    Step::TtlCapped {
                        from: number(from)?,
                        to: number(to)?,
                    }
                } else if let Some(rest) = text.strip_prefix("computed cap ") {
                    let (cap, how) = rest.split_once(" = ").unwrap_or((rest, rest));
                    Step::TtlComputed {
                        cap: number(cap)?,
                        how: how.to_owned(),
                    }
                } else if let Some(rest) = text.strip_prefix("cap ") {
                    let (cap, ttl) = rest.split_once(" did not lower ttl ")?;
                    Step::TtlKept {
                        cap: number(cap)?,
                        ttl: number(ttl)?,
                    }
                } else {
                    let rest = text.strip_prefix("added obligation ")?;
                    let (kind, detail) = match rest.split_once(' ') {
                        Some((kind, detail)) => (kind, Some(detail.to_owned())),
                        None => (rest, None),
                    };
                    let kind = ["approval", "revoke_on", "audience", "log"]
                        .into_iter()
                        .find(|k| *k == kind)?;
                    Step::ObligationAdded { kind, detail }
                }
            }
        })
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Step, D::Error> {
        let text = String::deserialize(deserializer)?;
        Step::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown trace effect `{text}`")))
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One rule considered for the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Rule id.
    pub rule: Name,
    /// `permit`, `forbid`, `limit`, `require`.
    pub kind: Name,
    /// `file:line`.
    pub at: Name,
    /// How it fared.
    pub outcome: Outcome,
    /// For `not_matched`: the first condition that was false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// For `error`, or a matched rule that failed closed: the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it did to the decision, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effect: Vec<Step>,
    /// The rule's `because` message, when it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// On default deny: this permit is one of those that came closest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closest: bool,
}

/// One rule considered for a decision, as the authorizer records it: the
/// rule and the condition by index into the compiled policy set, and what
/// only this request could tell (the value a condition saw; the steps and
/// the `because` text are kept beside the records, in [`Record`]). The
/// rule's id, kind, location and condition text stay in the policy set
/// until the trace is read: recording a candidate costs no reference count
/// and no copy of the policy's strings, and a record is small (56 bytes),
/// so a pack's trace fits one small allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Considered {
    /// The rule's index in the policy set.
    pub rule: u32,
    /// How it fared.
    pub outcome: Outcome,
    /// On default deny: one of the permits that came closest.
    pub closest: bool,
    /// For `not_matched`: the first condition that was false.
    pub failed: Option<Seen>,
    /// For `error`, or a matched rule that failed closed: the error, as
    /// its index among the decision's errors ([`Faults`]); its message is
    /// written when the trace is read.
    pub error: Option<u32>,
}

impl Considered {
    /// A rule with its outcome and nothing else yet.
    pub fn new(rule: u32, outcome: Outcome) -> Considered {
        Considered {
            rule,
            outcome,
            closest: false,
            failed: None,
            error: None,
        }
    }

    /// The trace entry it stands for, the names taken from the record's
    /// policy set, its steps and `because` from the record, and the
    /// error's message from the record's faults.
    fn entry(&self, record: &Record) -> TraceEntry {
        let rule = &record.set.rules[self.rule as usize];
        TraceEntry {
            rule: rule.id.clone(),
            kind: rule.kind_name.clone(),
            at: rule.location.clone(),
            outcome: self.outcome,
            failed: self.failed.as_ref().map(|seen| Failed {
                condition: rule.conjunct_text[seen.condition as usize].clone(),
                saw: seen.saw.to_value(),
            }),
            error: self
                .error
                .map(|at| fault_message(record.faults.as_deref(), at)),
            effect: record
                .effects_of(self.rule)
                .iter()
                .map(|(_, did)| record.step(did))
                .collect(),
            because: record.because_of(self.rule).map(str::to_owned),
            closest: self.closest,
        }
    }
}

/// One step a rule took, as the authorizer records it: a [`Step`], or an
/// obligation the decision carries, by its index among the record's
/// obligations (its kind, event or value are read from there when the
/// trace is written, not copied into the step).
#[derive(Debug, Clone, PartialEq)]
pub enum Did {
    /// A step as it reads.
    Step(Step),
    /// `added obligation ...`: the `n`th of [`Record::obligations`].
    Obligation(u32),
}

/// What the authorizer found for one decision, by index into the compiled
/// policy set: the rules considered, the steps they took, their `because`
/// texts, the obligations added and the errors. Shared (one `Arc`) by the
/// decision's [`Trace`] and [`Obligations`], which build their entries
/// from it when they are first read; the decision's JSON is written from
/// it directly.
#[derive(Debug)]
pub struct Record {
    /// The policy set the indexes are into.
    pub set: Arc<PolicySet>,
    /// The rules considered, in policy order.
    pub considered: Vec<Considered>,
    /// The steps, each with its rule's index, in rule order (stable: one
    /// rule's steps in the order taken).
    pub effects: Vec<(u32, Did)>,
    /// The `because` texts of the matched rules that have one, by rule
    /// index, in rule order.
    pub because: Vec<(u32, String)>,
    /// The obligations added, in the order added (the decision carries
    /// them only on allow; the trace's steps index them either way).
    pub obligations: Vec<Obligated>,
    /// The decision's errors, which the records' `error`s index.
    pub faults: Option<Arc<Faults>>,
}

impl Record {
    /// The steps of rule `rule`, in order.
    fn effects_of(&self, rule: u32) -> &[(u32, Did)] {
        let start = self.effects.partition_point(|(r, _)| *r < rule);
        let len = self.effects[start..].partition_point(|(r, _)| *r == rule);
        &self.effects[start..start + len]
    }

    /// The `because` text of rule `rule`, when it has one.
    fn because_of(&self, rule: u32) -> Option<&str> {
        self.because
            .binary_search_by_key(&rule, |(r, _)| *r)
            .ok()
            .map(|at| self.because[at].1.as_str())
    }

    /// The obligation a step indexes; `None` for an index out of range
    /// (a record built by hand).
    fn obligation(&self, at: u32) -> Option<&Obligated> {
        self.obligations.get(at as usize)
    }

    /// The step `did` stands for.
    fn step(&self, did: &Did) -> Step {
        match did {
            Did::Step(step) => step.clone(),
            Did::Obligation(at) => match self.obligation(*at) {
                Some(o) => Step::ObligationAdded {
                    kind: o.kind,
                    detail: o.detail(&self.set).map(str::to_owned),
                },
                None => Step::ObligationAdded {
                    kind: "log",
                    detail: None,
                },
            },
        }
    }

    /// Appends the text of step `did` to `out`, as [`Step::push_text`]
    /// writes the step it stands for.
    fn push_text(&self, did: &Did, out: &mut String) {
        match did {
            Did::Step(step) => step.push_text(out),
            Did::Obligation(at) => {
                out.push_str("added obligation ");
                match self.obligation(*at) {
                    Some(o) => {
                        out.push_str(o.kind);
                        if let Some(detail) = o.detail(&self.set) {
                            out.push(' ');
                            out.push_str(detail);
                        }
                    }
                    None => out.push_str("log"),
                }
            }
        }
    }
}

/// The condition that stopped a rule, by index, and the value it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The index of the conjunct among the rule's conditions.
    pub condition: u32,
    /// The value of the attribute it tested (`null` when missing).
    pub saw: Saw,
}

/// A value a false condition saw, kept small: nearly always a bool, a
/// string or `null`; any other JSON value is boxed. (A `serde_json::Value`
/// is 80 bytes with ordered maps; this keeps a trace record at 56.)
#[derive(Debug, Clone, PartialEq)]
pub enum Saw {
    /// `null`: the attribute was missing.
    Null,
    /// A boolean.
    Bool(bool),
    /// A string.
    String(String),
    /// Anything else.
    Other(Box<Value>),
}

impl From<Value> for Saw {
    fn from(value: Value) -> Saw {
        let small = match &value {
            Value::Null => Saw::Null,
            Value::Bool(b) => Saw::Bool(*b),
            _ => {
                return match value {
                    Value::String(text) => Saw::String(text),
                    other => Saw::Other(Box::new(other)),
                }
            }
        };
        // A `null` or a bool owns nothing: skip the call that drops it.
        std::mem::forget(value);
        small
    }
}

impl Saw {
    /// The value as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Saw::Null => Value::Null,
            Saw::Bool(b) => Value::Bool(*b),
            Saw::String(text) => Value::String(text.clone()),
            Saw::Other(value) => (**value).clone(),
        }
    }

    /// Appends the value's JSON, as serde_json writes it compactly.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Saw::Null => out.extend_from_slice(b"null"),
            Saw::Bool(true) => out.extend_from_slice(b"true"),
            Saw::Bool(false) => out.extend_from_slice(b"false"),
            Saw::String(text) => write_str(out, text),
            Saw::Other(value) => write_value(out, value),
        }
    }
}

/// What [`Trace`] and [`Errors`] share: each is a list kept as the
/// records it is built from (`lazy`, whose `built` keeps the list once
/// built and whose `build` makes it) until it is read, or as the list
/// itself (`owned`) when it was made from one or changed. Both read as
/// the `Vec` they used to be: dereferencing builds the list once, on first
/// read; changing it (`DerefMut`) builds it and keeps only it; equality,
/// `Debug` and serde are the list's.
macro_rules! deferred_list {
    ($list:ident, $item:ty, len: |$lazy:ident| $len:expr, $len_doc:literal, $empty_doc:literal) => {
        impl $list {
            #[doc = $len_doc]
            pub fn len(&self) -> usize {
                match &self.lazy {
                    Some($lazy) => $len,
                    None => self.owned.len(),
                }
            }

            #[doc = $empty_doc]
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The list, built if it was not.
            pub fn into_vec(self) -> Vec<$item> {
                match self.lazy {
                    Some(mut lazy) => match lazy.built.take() {
                        Some(built) => built,
                        None => lazy.build(),
                    },
                    None => self.owned,
                }
            }
        }

        impl Deref for $list {
            type Target = Vec<$item>;
            fn deref(&self) -> &Vec<$item> {
                match &self.lazy {
                    Some(lazy) => lazy.built.get_or_init(|| lazy.build()),
                    None => &self.owned,
                }
            }
        }

        impl DerefMut for $list {
            fn deref_mut(&mut self) -> &mut Vec<$item> {
                if let Some(mut lazy) = self.lazy.take() {
                    self.owned = match lazy.built.take() {
                        Some(built) => built,
                        None => lazy.build(),
                    };
                }
                &mut self.owned
            }
        }

        impl From<Vec<$item>> for $list {
            fn from(items: Vec<$item>) -> $list {
                $list {
                    lazy: None,
                    owned: items,
                }
            }
        }

        impl IntoIterator for $list {
            type Item = $item;
            type IntoIter = std::vec::IntoIter<$item>;
            fn into_iter(self) -> Self::IntoIter {
                self.into_vec().into_iter()
            }
        }

        impl<'l> IntoIterator for &'l $list {
            type Item = &'l $item;
            type IntoIter = std::slice::Iter<'l, $item>;
            fn into_iter(self) -> Self::IntoIter {
                self.iter()
            }
        }

        impl<'l> IntoIterator for &'l mut $list {
            type Item = &'l mut $item;
            type IntoIter = std::slice::IterMut<'l, $item>;
            fn into_iter(self) -> Self::IntoIter {
                self.iter_mut()
            }
        }

        impl PartialEq for $list {
            fn eq(&self, other: &$list) -> bool {
                **self == **other
            }
        }

        impl fmt::Debug for $list {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&**self, f)
            }
        }

        impl Serialize for $list {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                (**self).serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $list {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$list, D::Error> {
                Vec::<$item>::deserialize(deserializer).map($list::from)
            }
        }
    };
}

deferred_list!(
    Trace,
    TraceEntry,
    len: |lazy| lazy.record.considered.len(),
    "How many rules were considered (without building the entries).",
    "True when no rule was considered."
);
deferred_list!(
    Errors,
    ErrorOut,
    len: |lazy| lazy.faults.list.len(),
    "How many errors (without building them).",
    "True when there is no error."
);
deferred_list!(
    Obligations,
    ObligationOut,
    len: |lazy| lazy.record.obligations.len(),
    "How many obligations (without building them).",
    "True when there is none."
);

/// The trace of a decision: the rules considered, in policy order.
///
/// A decision made by the engine holds its trace as the authorizer's
/// [`Record`] (one reference count per decision, not per entry). Writing
/// the decision's JSON reads the names straight from the policy set;
/// reading the trace as [`TraceEntry`]s (it dereferences to
/// `Vec<TraceEntry>`, as it used to be) builds them once, on first use.
/// Changing it (`DerefMut`) builds them and keeps only them.
#[derive(Clone, Default)]
pub struct Trace {
    lazy: Option<Lazy>,
    /// The entries, when the trace was built from them or changed.
    owned: Vec<TraceEntry>,
}

/// A trace not read yet: the record it is built from.
#[derive(Clone)]
struct Lazy {
    record: Arc<Record>,
    /// The entries, built on first read.
    built: OnceLock<Vec<TraceEntry>>,
}

impl Lazy {
    fn build(&self) -> Vec<TraceEntry> {
        self.record
            .considered
            .iter()
            .map(|c| c.entry(&self.record))
            .collect()
    }
}

/// The message of the `at`th error of `faults`; empty if there is no such
/// error (a record built by hand that indexes nothing).
fn fault_message(faults: Option<&Faults>, at: u32) -> String {
    match faults.and_then(|f| f.list.get(at as usize)) {
        Some(fault) => fault.error.to_string(),
        None => String::new(),
    }
}

impl Trace {
    /// The trace of `record`'s considered rules.
    pub fn new(record: Arc<Record>) -> Trace {
        if record.considered.is_empty() {
            return Trace::default();
        }
        Trace {
            lazy: Some(Lazy {
                record,
                built: OnceLock::new(),
            }),
            owned: Vec::new(),
        }
    }

    /// Appends the trace's JSON array to `out`.
    fn write_json(&self, out: &mut Vec<u8>) {
        // One buffer for the text of every step, made once.
        let mut text = String::with_capacity(STEP_TEXT);
        match &self.lazy {
            Some(lazy) => write_list(out, &lazy.record.considered, |out, c| {
                c.write_json(&lazy.record, out, &mut text)
            }),
            None => write_list(out, &self.owned, |out, entry| {
                entry.write_json(out, &mut text)
            }),
        }
    }
}

/// The obligations of a decision: what the broker must do.
///
/// A decision made by the engine holds them as the authorizer recorded
/// them (kinds, the rules by index, events read from the policy set) in
/// its [`Record`]; reading them as [`ObligationOut`]s (it dereferences to
/// `Vec<ObligationOut>`) builds those once, on first use, and writing the
/// decision's JSON writes them straight from the record. Changing it
/// (`DerefMut`) builds them and keeps only them.
#[derive(Clone, Default)]
pub struct Obligations {
    lazy: Option<LazyObligations>,
    /// The obligations, when built from them or changed.
    owned: Vec<ObligationOut>,
}

/// Obligations not read yet.
#[derive(Clone)]
struct LazyObligations {
    record: Arc<Record>,
    /// The obligations, built on first read.
    built: OnceLock<Vec<ObligationOut>>,
}

impl LazyObligations {
    fn build(&self) -> Vec<ObligationOut> {
        let set = &self.record.set;
        self.record
            .obligations
            .iter()
            .map(|o| ObligationOut {
                kind: o.kind.to_owned(),
                event: o.event(set).map(str::to_owned),
                value: o.value.clone(),
                rule: set.rules[o.rule as usize].id.as_str().to_owned(),
            })
            .collect()
    }
}

impl Obligations {
    /// The obligations `record` added (none when it added none).
    pub fn recorded(record: Arc<Record>) -> Obligations {
        if record.obligations.is_empty() {
            return Obligations::default();
        }
        Obligations {
            lazy: Some(LazyObligations {
                record,
                built: OnceLock::new(),
            }),
            owned: Vec::new(),
        }
    }

    /// Appends the obligations' JSON array to `out`.
    fn write_json(&self, out: &mut Vec<u8>) {
        let Some(lazy) = &self.lazy else {
            write_list(out, &self.owned, |out, o| {
                write_obligation(
                    out,
                    &o.kind,
                    o.event.as_deref(),
                    o.value.as_deref(),
                    |out| write_str(out, &o.rule),
                )
            });
            return;
        };
        let set = &lazy.record.set;
        write_list(out, &lazy.record.obligations, |out, o| {
            write_obligation(out, o.kind, o.event(set), o.value.as_deref(), |out| {
                write_name(out, &set.rules[o.rule as usize].id)
            })
        });
    }
}

/// One obligation's JSON object, as the derived `Serialize` of
/// [`ObligationOut`] writes it; `rule` writes the rule id.
fn write_obligation(
    out: &mut Vec<u8>,
    kind: &str,
    event: Option<&str>,
    value: Option<&str>,
    rule: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"{\"kind\":");
    write_str(out, kind);
    if let Some(event) = event {
        out.extend_from_slice(b",\"event\":");
        write_str(out, event);
    }
    if let Some(value) = value {
        out.extend_from_slice(b",\"value\":");
        write_str(out, value);
    }
    out.extend_from_slice(b",\"rule\":");
    rule(out);
    out.push(b'}');
}

/// The errors of a decision as the authorizer records them: each one's rule
/// by index and what went wrong, typed ([`Fault`]), with the policy set the
/// indexes are into. Shared by the decision's [`Errors`] and its trace's
/// entries (which name their error by its index here): an error's message
/// and its rule's id are written only when the decision's JSON is written
/// or its errors or trace read.
#[derive(Debug)]
pub struct Faults {
    set: Arc<PolicySet>,
    list: Vec<Fault>,
}

impl Faults {
    /// The errors `list`, their rule indexes into `set`.
    pub fn new(set: Arc<PolicySet>, list: Vec<Fault>) -> Faults {
        Faults { set, list }
    }

    /// `fault` as the contract writes it.
    fn out(&self, fault: &Fault) -> ErrorOut {
        let message = fault.error.to_string();
        match fault.rule {
            Some(rule) => ErrorOut::in_rule(self.rule_id(rule).as_str().to_owned(), message),
            None => ErrorOut::in_request(message),
        }
    }

    fn rule_id(&self, rule: u32) -> &Name {
        &self.set.rules[rule as usize].id
    }
}

/// A decision's evaluation errors.
///
/// A decision made by the engine holds them as they were recorded
/// ([`Faults`]: rule indexes and typed errors); reading them as
/// [`ErrorOut`]s (it dereferences to `Vec<ErrorOut>`) builds those once, on
/// first use, and writing the decision's JSON writes the messages straight
/// from the typed errors. Changing it (`DerefMut`) builds them and keeps
/// only them.
#[derive(Clone, Default)]
pub struct Errors {
    lazy: Option<LazyErrors>,
    /// The errors, when built from them or changed.
    owned: Vec<ErrorOut>,
}

/// Errors not read yet.
#[derive(Clone)]
struct LazyErrors {
    faults: Arc<Faults>,
    /// The errors, built on first read.
    built: OnceLock<Vec<ErrorOut>>,
}

impl LazyErrors {
    fn build(&self) -> Vec<ErrorOut> {
        self.faults
            .list
            .iter()
            .map(|f| self.faults.out(f))
            .collect()
    }
}

impl Errors {
    /// The errors recorded in `faults` (none when it is `None`).
    pub fn recorded(faults: Option<Arc<Faults>>) -> Errors {
        Errors {
            lazy: faults
                .filter(|f| !f.list.is_empty())
                .map(|faults| LazyErrors {
                    faults,
                    built: OnceLock::new(),
                }),
            owned: Vec::new(),
        }
    }

    /// Appends the errors' JSON array to `out`.
    fn write_json(&self, out: &mut Vec<u8>) {
        let Some(lazy) = &self.lazy else {
            write_list(out, &self.owned, |out, e| {
                write_error(out, e.rule.as_str(), &e.message)
            });
            return;
        };
        let faults = &lazy.faults;
        let mut text = String::new();
        write_list(out, &faults.list, |out, fault| {
            out.extend_from_slice(b"{\"rule\":");
            match fault.rule {
                Some(rule) => write_name(out, faults.rule_id(rule)),
                None => out.extend_from_slice(b"\"request\""),
            }
            out.extend_from_slice(b",\"message\":");
            write_display(out, &mut text, &fault.error);
            out.push(b'}');
        });
    }
}

/// One error's JSON object.
fn write_error(out: &mut Vec<u8>, rule: &str, message: &str) {
    out.extend_from_slice(b"{\"rule\":");
    write_str(out, rule);
    out.extend_from_slice(b",\"message\":");
    write_str(out, message);
    out.push(b'}');
}


/// Which policy set decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// `sha256:` of the files and data.
    pub digest: Name,
}

/// The full answer to a request (contract.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `allow` or `deny`.
    pub decision: Effect,
    /// Granted scope items; empty on deny.
    pub scope: Vec<String>,
    /// Granted lifetime in seconds; 0 on deny.
    pub ttl: u64,
    /// What the broker must do; empty on deny (read as a
    /// `Vec<ObligationOut>`; see [`Obligations`]).
    pub obligations: Obligations,
    /// The rules that decided.
    pub reasons: Vec<String>,
    /// Requested items no matched permit covered (or a limit removed).
    pub dropped_scope: Vec<String>,
    /// Evaluation errors (read as a `Vec<ErrorOut>`; see [`Errors`]).
    pub errors: Errors,
    /// The rules considered.
    pub trace: Trace,
    /// The policy set.
    pub policy: PolicyRef,
}

impl Decision {
    /// True on allow.
    pub fn is_allow(&self) -> bool {
        self.decision == Effect::Allow
    }

    /// A deny for a request that could not be evaluated at all.
    pub fn rejected(message: String, digest: &str) -> Decision {
        Decision {
            decision: Effect::Deny,
            scope: Vec::new(),
            ttl: 0,
            obligations: Obligations::default(),
            reasons: Vec::new(),
            dropped_scope: Vec::new(),
            errors: Errors::from(vec![ErrorOut::in_request(message)]),
            trace: Trace::default(),
            policy: PolicyRef {
                digest: digest.into(),
            },
        }
    }

    /// The decision as one line of JSON: the same text as serde_json
    /// writes from the derived `Serialize`, written directly (a decision is
    /// mostly the policy's own strings, copied without a scan).
    pub fn to_json(&self) -> String {
        String::from_utf8(self.json_bytes(None))
            .unwrap_or_else(|_| String::from("{\"decision\":\"deny\"}"))
    }

    /// The decision's JSON in a buffer sized for it; with `decision_id`, as
    /// [`Decision::write_json`] writes it.
    pub fn json_bytes(&self, decision_id: Option<&str>) -> Vec<u8> {
        // A pack's trace entry is about 250 bytes: sized so that the buffer
        // is not grown (and copied) while the decision is written.
        let mut out = Vec::with_capacity(1024 + 320 * self.trace.len());
        self.write_json(&mut out, decision_id);
        out
    }

    /// Appends the decision's JSON to `out`; with `decision_id`, the object
    /// ends with a `"decision_id"` member (what `writ serve` answers).
    pub fn write_json(&self, out: &mut Vec<u8>, decision_id: Option<&str>) {
        out.extend_from_slice(match self.decision {
            Effect::Allow => b"{\"decision\":\"allow\",\"scope\":",
            Effect::Deny => b"{\"decision\":\"deny\",\"scope\":",
        });
        write_list(out, &self.scope, |out, item| write_str(out, item));
        out.extend_from_slice(b",\"ttl\":");
        out.extend_from_slice(digits(self.ttl, &mut [0u8; 20]).as_bytes());
        out.extend_from_slice(b",\"obligations\":");
        self.obligations.write_json(out);
        out.extend_from_slice(b",\"reasons\":");
        write_list(out, &self.reasons, |out, item| write_str(out, item));
        out.extend_from_slice(b",\"dropped_scope\":");
        write_list(out, &self.dropped_scope, |out, item| write_str(out, item));
        out.extend_from_slice(b",\"errors\":");
        self.errors.write_json(out);
        out.extend_from_slice(b",\"trace\":");
        self.trace.write_json(out);
        out.extend_from_slice(b",\"policy\":{\"digest\":");
        write_name(out, &self.policy.digest);
        out.push(b'}');
        if let Some(id) = decision_id {
            out.extend_from_slice(b",\"decision_id\":");
            write_str(out, id);
        }
        out.push(b'}');
    }

    /// The decision as indented JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|_| String::from("{\"decision\":\"deny\"}"))
    }
}

impl TraceEntry {
    /// The effect's steps as text, `; `-separated (for reports).
    pub fn effect_text(&self) -> String {
        let mut out = String::new();
        for (i, step) in self.effect.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            step.push_text(&mut out);
        }
        out
    }

    /// Appends the entry's JSON, as the derived `Serialize` writes it;
    /// `text` is scratch space for the steps' text.
    fn write_json(&self, out: &mut Vec<u8>, text: &mut String) {
        write_entry(
            out,
            text,
            EntryParts {
                head: Head::Names {
                    rule: &self.rule,
                    kind: &self.kind,
                    at: &self.at,
                },
                outcome: self.outcome,
                failed: self
                    .failed
                    .as_ref()
                    .map(|f| (Condition::Name(&f.condition), SawRef::Value(&f.saw))),
                error: self.error.as_ref().map(|e| e as &dyn fmt::Display),
                effect: Steps::Owned(&self.effect),
                because: self.because.as_deref(),
                closest: self.closest,
            },
        );
    }
}

impl Considered {
    /// Appends the JSON of the entry it stands for, the names read from
    /// the record's policy set: the same text as [`TraceEntry`]'s.
    fn write_json(&self, record: &Record, out: &mut Vec<u8>, text: &mut String) {
        let rule = &record.set.rules[self.rule as usize];
        let faults = record.faults.as_deref();
        let error = self.error.map(|at| match faults.and_then(|f| f.list.get(at as usize)) {
            Some(fault) => &fault.error as &dyn fmt::Display,
            None => &"" as &dyn fmt::Display,
        });
        let json = rule.trace_json.of(rule);
        write_entry(
            out,
            text,
            EntryParts {
                head: Head::Json(&json.head),
                outcome: self.outcome,
                failed: self.failed.as_ref().map(|seen| {
                    let condition = match json.failed.get(seen.condition as usize) {
                        Some(prefix) => Condition::Json(prefix),
                        None => Condition::Name(&rule.conjunct_text[seen.condition as usize]),
                    };
                    (condition, SawRef::Saw(&seen.saw))
                }),
                error,
                effect: Steps::Recorded(record.effects_of(self.rule), record),
                because: record.because_of(self.rule),
                closest: self.closest,
            },
        );
    }
}

/// The value a failed condition saw: an owned entry's, or a record's.
enum SawRef<'a> {
    Value(&'a Value),
    Saw(&'a Saw),
}

/// A trace entry's steps: owned, or recorded with the record that reads
/// them.
enum Steps<'a> {
    Owned(&'a [Step]),
    Recorded(&'a [(u32, Did)], &'a Record),
}

/// A trace entry's `rule`, `kind` and `at`: the names, or the JSON a
/// [`TraceJson`] wrote of them.
enum Head<'a> {
    Names {
        rule: &'a Name,
        kind: &'a Name,
        at: &'a Name,
    },
    Json(&'a [u8]),
}

/// A failed condition's text: the name, or the JSON a [`TraceJson`] wrote
/// of it (up to the `saw`).
enum Condition<'a> {
    Name(&'a Name),
    Json(&'a [u8]),
}

/// The fixed text of one rule's trace entries as JSON: the head
/// (`{"rule":...,"kind":...,"at":...`) and, for each conjunct, what a
/// failure of it starts with (`,"failed":{"condition":...,"saw":`). Written
/// the first time one of the rule's entries is, then copied whole into
/// every answer that has one (about 75 short copies and checks a pack
/// decision otherwise, and a byte-by-byte escape of each condition with a
/// quote in it; docs/performance.md "Server CPU, round 31"). Nothing is
/// built for a rule whose entries are never written as JSON.
#[derive(Clone, Default)]
pub struct TraceJson(OnceLock<Box<RuleJson>>);

/// What [`TraceJson`] holds.
#[derive(Clone)]
pub(crate) struct RuleJson {
    head: Box<[u8]>,
    failed: Box<[Box<[u8]>]>,
}

impl TraceJson {
    /// The rule's JSON texts; `rule` is the rule this belongs to.
    pub(crate) fn of(&self, rule: &crate::ir::Rule) -> &RuleJson {
        self.0.get_or_init(|| {
            let mut head = Vec::new();
            write_head(&mut head, &rule.id, &rule.kind_name, &rule.location);
            let failed = rule
                .conjunct_text
                .iter()
                .map(|condition| {
                    let mut prefix = Vec::new();
                    write_failed(&mut prefix, condition);
                    prefix.into_boxed_slice()
                })
                .collect();
            Box::new(RuleJson {
                head: head.into_boxed_slice(),
                failed,
            })
        })
    }
}

/// Not part of what a rule is: any two are equal.
impl PartialEq for TraceJson {
    fn eq(&self, _: &TraceJson) -> bool {
        true
    }
}

impl fmt::Debug for TraceJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TraceJson")
    }
}

fn write_head(out: &mut Vec<u8>, rule: &Name, kind: &Name, at: &Name) {
    out.extend_from_slice(b"{\"rule\":");
    write_name(out, rule);
    out.extend_from_slice(b",\"kind\":");
    write_name(out, kind);
    out.extend_from_slice(b",\"at\":");
    write_name(out, at);
}

fn write_failed(out: &mut Vec<u8>, condition: &Name) {
    out.extend_from_slice(b",\"failed\":{\"condition\":");
    write_name(out, condition);
    out.extend_from_slice(b",\"saw\":");
}

/// A trace entry's fields, borrowed from wherever they live.
struct EntryParts<'a> {
    head: Head<'a>,
    outcome: Outcome,
    failed: Option<(Condition<'a>, SawRef<'a>)>,
    /// The message, written when the entry is (an owned entry's `String`,
    /// or the error a recorded entry indexes).
    error: Option<&'a dyn fmt::Display>,
    effect: Steps<'a>,
    because: Option<&'a str>,
    closest: bool,
}

/// Appends a trace entry's JSON, as the derived `Serialize` of
/// [`TraceEntry`] writes it; `text` is scratch space for the steps' text.
fn write_entry(out: &mut Vec<u8>, text: &mut String, entry: EntryParts<'_>) {
    match entry.head {
        Head::Names { rule, kind, at } => write_head(out, rule, kind, at),
        Head::Json(json) => out.extend_from_slice(json),
    }
    out.extend_from_slice(match entry.outcome {
        Outcome::Matched => b",\"outcome\":\"matched\"",
        Outcome::NotMatched => b",\"outcome\":\"not_matched\"",
        Outcome::Error => b",\"outcome\":\"error\"",
    });
    if let Some((condition, saw)) = entry.failed {
        match condition {
            Condition::Name(condition) => write_failed(out, condition),
            Condition::Json(json) => out.extend_from_slice(json),
        }
        match saw {
            SawRef::Value(value) => write_value(out, value),
            SawRef::Saw(saw) => saw.write_json(out),
        }
        out.push(b'}');
    }
    if let Some(error) = entry.error {
        out.extend_from_slice(b",\"error\":");
        write_display(out, text, error);
    }
    match entry.effect {
        Steps::Owned(steps) if !steps.is_empty() => {
            out.extend_from_slice(b",\"effect\":");
            write_list(out, steps, |out, step| {
                text.clear();
                step.push_text(text);
                write_str(out, text);
            });
        }
        Steps::Recorded(steps, record) if !steps.is_empty() => {
            out.extend_from_slice(b",\"effect\":");
            write_list(out, steps, |out, (_, did)| {
                text.clear();
                record.push_text(did, text);
                write_str(out, text);
            });
        }
        _ => {}
    }
    if let Some(because) = entry.because {
        out.extend_from_slice(b",\"because\":");
        write_str(out, because);
    }
    if entry.closest {
        out.extend_from_slice(b",\"closest\":true");
    }
    out.push(b'}');
}

/// A JSON string of `value`'s text, formatted into `text` (scratch space).
fn write_display(out: &mut Vec<u8>, text: &mut String, value: &dyn fmt::Display) {
    use std::fmt::Write as _;
    text.clear();
    // Writing to a String cannot fail.
    let _ = write!(text, "{value}");
    write_str(out, text);
}

fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// A JSON value as serde_json writes it compactly.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::String(text) => write_str(out, text),
        other => {
            // Numbers, arrays and objects are rare here; serde_json writes
            // them. Writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_name(out: &mut Vec<u8>, name: &Name) {
    if name.is_plain() {
        out.push(b'"');
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(b'"');
    } else {
        write_str(out, name.as_str());
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b`, `\f`,
/// `\n`, `\r`, `\t`, and `\u00xx` (lower-case hex) for the other control
/// characters; everything else as is.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most strings need no escape: one branch-free pass tells.
    if !bytes
        .iter()
        .fold(false, |any, &byte| any | needs_escape(byte))
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        out.extend_from_slice(&bytes[start..at]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            other => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(other >> 4)],
                HEX[usize::from(other & 0xf)],
            ]),
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every step's text reads back as the step, and the texts are those
    /// the trace has always written.
    #[test]
    fn steps_render_in_one_place_and_read_back() {
        let cases = [
            (Step::Denied, "denied"),
            (
                Step::Granted {
                    items: "read:a, read:b".to_owned(),
                },
                "granted read:a, read:b",
            ),
            (Step::AllowedWithoutScope, "allowed (no scope of its own)"),
            (Step::CoveredNone, "covered none of the requested scope"),
            (
                Step::NarrowedScope {
                    dropped: Vec::new(),
                },
                "narrowed scope: nothing to drop",
            ),
            (
                Step::NarrowedScope {
                    dropped: vec!["write:x".to_owned(), "read:y".to_owned()],
                },
                "narrowed scope: dropped write:x, read:y",
            ),
            (Step::TtlSet(900), "set ttl 900"),
            (
                Step::TtlCapped {
                    from: 3600,
                    to: 900,
                },
                "capped ttl 3600 -> 900",
            ),
            (
                Step::TtlKept {
                    cap: 3600,
                    ttl: 900,
                },
                "cap 3600 did not lower ttl 900",
            ),
            (Step::TtlUnderOneSecond, "denied: ttl under one second"),
            (
                Step::TtlComputed {
                    cap: 312,
                    how: "min(900, until 2026-12-01T10:05:12Z)".to_owned(),
                },
                "computed cap 312 = min(900, until 2026-12-01T10:05:12Z)",
            ),
            (
                Step::TtlComputed {
                    cap: 1800,
                    how: "1800".to_owned(),
                },
                "computed cap 1800",
            ),
            (
                Step::ObligationAdded {
                    kind: "revoke_on",
                    detail: Some("objective_changed".to_owned()),
                },
                "added obligation revoke_on objective_changed",
            ),
            (
                Step::ObligationAdded {
                    kind: "approval",
                    detail: None,
                },
                "added obligation approval",
            ),
            (
                Step::ObligationFailed,
                "denied: obligation could not be computed",
            ),
        ];
        for (step, text) in cases {
            assert_eq!(step.to_string(), text);
            assert_eq!(Step::parse(text), Some(step.clone()), "{text}");
            let json = serde_json::to_string(&step).expect("a step serializes");
            assert_eq!(json, serde_json::to_string(text).expect("a string"));
            let back: Step = serde_json::from_str(&json).expect("a step deserializes");
            assert_eq!(back, step);
        }
        for n in [0, 7, 10, 1_000_000, u64::MAX] {
            assert_eq!(Step::TtlSet(n).to_string(), format!("set ttl {n}"));
            assert_eq!(digits(n, &mut [0u8; 20]), n.to_string());
        }
        assert_eq!(Step::parse("added obligation teleport"), None);
        assert_eq!(Step::parse("capped ttl many -> 1"), None);
    }

    proptest! {
        /// The escapes are serde_json's, byte for byte, for any text.
        #[test]
        fn strings_are_escaped_as_serde_json_does(text in any::<String>()) {
            let mut out = Vec::new();
            write_str(&mut out, &text);
            prop_assert_eq!(String::from_utf8(out).expect("utf-8"), serde_json::to_string(&text).expect("json"));
            let mut named = Vec::new();
            write_name(&mut named, &Name::from(text.as_str()));
            prop_assert_eq!(String::from_utf8(named).expect("utf-8"), serde_json::to_string(&text).expect("json"));
        }

        /// Control characters, quotes and backslashes in particular.
        #[test]
        fn awkward_strings_are_escaped_as_serde_json_does(text in "[\\x00-\\x1f\"\\\\a\u{7f}\u{e9}\u{2028}]{0,12}") {
            let mut out = Vec::new();
            write_str(&mut out, &text);
            prop_assert_eq!(String::from_utf8(out).expect("utf-8"), serde_json::to_string(&text).expect("json"));
        }
    }
}
