//! `writ replay`: re-decides the requests of a decision log (the JSON lines
//! `writ serve --decision-log` writes) under another policy set and reports
//! every decision that comes out differently.
//!
//! A line holds the request as decided (with the time the server filled
//! in, so a decision is reproducible: policies, data, request and time
//! decide it) and the decision. Each request is decided again under the new
//! set and compared with the logged decision, or with a decision under an
//! old set. What changed is sorted into [`Kind`]s, each with the rules
//! responsible, and counted. A line whose request was redacted cannot be
//! replayed faithfully and is counted as such, never guessed at.
//!
//! Only the decision's public fields are read (effect, scope, TTL,
//! obligations, reasons and the rule ids and steps of its trace).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::decision::{Decision, Effect, ObligationOut, Outcome, Step};
use crate::engine::Engine;
use crate::request::Request;
use crate::scope::ScopeItem;

/// What a redacted value reads in the log (`writ serve --redact`).
const REDACTED: &str = "[redacted]";

/// The endpoints whose lines carry a decision that can be replayed.
const DECISION_ENDPOINTS: &[&str] = &[
    "/v1/decide",
    "/v1/decide/batch",
    "/access/v1/evaluation",
    "/access/v1/evaluations",
    "/v1/grants",
];

/// The log line format this reader knows (lines carry no version field
/// yet; a line with another `version` is refused).
const KNOWN_VERSION: u64 = 1;

/// How many example lines a text or Markdown report lists per group.
const EXAMPLES: usize = 5;

/// When `writ replay` exits 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// When any decision widens (allows more).
    Widen,
    /// When any decision changes at all.
    Change,
    /// Never.
    None,
}

/// One kind of change between the decision before and the one after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A deny became an allow.
    DenyToAllow,
    /// The scope grants something it did not before.
    ScopeWider,
    /// The TTL is longer.
    TtlLonger,
    /// An obligation the broker had to honour is gone.
    ObligationsDropped,
    /// An allow became a deny.
    AllowToDeny,
    /// The scope lost something it granted before.
    ScopeNarrower,
    /// The TTL is shorter.
    TtlShorter,
    /// The broker has a new obligation to honour.
    ObligationsAdded,
}

impl Kind {
    /// True for the kinds that allow more than before.
    pub fn widens(self) -> bool {
        matches!(
            self,
            Kind::DenyToAllow | Kind::ScopeWider | Kind::TtlLonger | Kind::ObligationsDropped
        )
    }

    /// The name used in every report format.
    pub fn label(self) -> &'static str {
        match self {
            Kind::DenyToAllow => "deny -> allow",
            Kind::ScopeWider => "scope wider",
            Kind::TtlLonger => "ttl longer",
            Kind::ObligationsDropped => "obligations dropped",
            Kind::AllowToDeny => "allow -> deny",
            Kind::ScopeNarrower => "scope narrower",
            Kind::TtlShorter => "ttl shorter",
            Kind::ObligationsAdded => "obligations added",
        }
    }

    /// A stable identifier for the JSON report.
    pub fn code(self) -> &'static str {
        match self {
            Kind::DenyToAllow => "deny_to_allow",
            Kind::ScopeWider => "scope_wider",
            Kind::TtlLonger => "ttl_longer",
            Kind::ObligationsDropped => "obligations_dropped",
            Kind::AllowToDeny => "allow_to_deny",
            Kind::ScopeNarrower => "scope_narrower",
            Kind::TtlShorter => "ttl_shorter",
            Kind::ObligationsAdded => "obligations_added",
        }
    }
}

/// One change of one replayed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The line of the log (from 1).
    pub line: usize,
    /// The line's `decision_id`.
    pub decision_id: String,
    /// What changed.
    pub kind: Kind,
    /// What exactly: `ttl 900 -> 3600`, `+write:x`, `-approval`.
    pub detail: String,
    /// The rules responsible in the decision before.
    pub rules_before: Vec<String>,
    /// The rules responsible in the decision after.
    pub rules_after: Vec<String>,
}

/// A line that was not replayed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreplayed {
    /// The line of the log (from 1).
    pub line: usize,
    /// Why: the redacted paths, the endpoint, or what is malformed.
    pub why: String,
}

/// The result of a replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Non-blank lines read.
    pub lines: usize,
    /// Requests decided again.
    pub replayed: usize,
    /// Replayed requests that changed in at least one way.
    pub changed: usize,
    /// Every change, in log order.
    pub changes: Vec<Change>,
    /// Lines whose request has redacted fields.
    pub redacted: Vec<Unreplayed>,
    /// Lines of endpoints that do not decide (skipped).
    pub skipped: Vec<Unreplayed>,
    /// Lines that are not a decision line.
    pub malformed: Vec<Unreplayed>,
    /// What the new decisions were compared with: `log` or `old policy set`.
    pub baseline: String,
    /// The new set's digest.
    pub new_digest: String,
    /// The old set's digest, with an old set.
    pub old_digest: Option<String>,
}

impl Report {
    /// True when some change widens.
    pub fn widens(&self) -> bool {
        self.changes.iter().any(|c| c.kind.widens())
    }

    /// The exit code: 2 when no line could be read as a decision line, 1
    /// when `fail_on` is met, 0 otherwise.
    pub fn exit_code(&self, fail_on: FailOn) -> u8 {
        let read = self.replayed + self.redacted.len() + self.skipped.len();
        if read == 0 {
            return 2;
        }
        let fail = match fail_on {
            FailOn::Widen => self.widens(),
            FailOn::Change => !self.changes.is_empty(),
            FailOn::None => false,
        };
        u8::from(fail)
    }

    /// Requests per kind of change.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for change in &self.changes {
            *counts.entry(change.kind).or_insert(0) += 1;
        }
        counts
    }

    /// The changes grouped by kind and responsible rules, in kind order.
    fn groups(&self) -> Vec<Group<'_>> {
        let mut map: BTreeMap<GroupKey<'_>, Vec<&Change>> = BTreeMap::new();
        for change in &self.changes {
            map.entry((
                change.kind,
                change.rules_before.as_slice(),
                change.rules_after.as_slice(),
            ))
            .or_default()
            .push(change);
        }
        map.into_iter()
            .map(|((kind, before, after), changes)| Group {
                kind,
                before,
                after,
                changes,
            })
            .collect()
    }
}

/// A group's kind and the rules named before and after.
type GroupKey<'a> = (Kind, &'a [String], &'a [String]);

struct Group<'a> {
    kind: Kind,
    before: &'a [String],
    after: &'a [String],
    changes: Vec<&'a Change>,
}

/// A decision line as far as replay reads it, with the request read as
/// `R`: a [`Request`] on the fast path, a [`Value`] when the line must be
/// looked at more closely. The logged strings are borrowed from the line
/// (copied only when they hold an escape), so a line whose decision did
/// not change allocates nothing but its request.
// One struct, not a flattened `Head`: `#[serde(flatten)]` buffers the
// whole line before reading it, which halves the speed.
#[derive(Deserialize)]
struct RawLine<'a, R> {
    #[serde(default)]
    version: Option<Value>,
    #[serde(default, borrow)]
    decision_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    time: Option<Text<'a>>,
    #[serde(default, borrow)]
    endpoint: Option<Text<'a>>,
    #[serde(default, borrow)]
    error: Option<Text<'a>>,
    decision: Option<Effect>,
    #[serde(default, borrow)]
    scope: Vec<Text<'a>>,
    #[serde(default)]
    ttl: u64,
    #[serde(default, borrow)]
    obligations: Vec<Obligation<'a>>,
    #[serde(default, borrow)]
    reasons: Vec<Text<'a>>,
    #[serde(default = "none")]
    request: Option<R>,
}

fn none<R>() -> Option<R> {
    None
}

/// A string of a log line: borrowed from the line, or owned when the JSON
/// text holds an escape. It reads exactly what a `String` reads.
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> serde::de::Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    // The same words as `String`'s reader, so an error reads the same.
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(value)))
    }
}

/// A logged obligation, read like an [`ObligationOut`] (the same fields,
/// defaults and error messages, which name the struct: hence the module,
/// so that it can have the same name) with its strings borrowed.
mod logged {
    use super::Text;

    #[derive(serde::Deserialize)]
    pub(super) struct ObligationOut<'a> {
        #[serde(borrow)]
        pub(super) kind: Text<'a>,
        #[serde(default, borrow)]
        pub(super) event: Option<Text<'a>>,
        #[serde(default, borrow)]
        pub(super) value: Option<Text<'a>>,
        #[serde(borrow)]
        pub(super) rule: Text<'a>,
    }
}

use logged::ObligationOut as Obligation;

impl Obligation<'_> {
    /// The same obligation to the broker as `out` (kind, event and value;
    /// the rule that asked does not matter), as [`missing`] compares them.
    fn same(&self, out: &ObligationOut) -> bool {
        self.kind.as_str() == out.kind
            && self.event.as_ref().map(Text::as_str) == out.event.as_deref()
            && self.value.as_ref().map(Text::as_str) == out.value.as_deref()
    }

    fn to_out(&self) -> ObligationOut {
        ObligationOut {
            kind: self.kind.as_str().to_owned(),
            event: self.event.as_ref().map(|t| t.as_str().to_owned()),
            value: self.value.as_ref().map(|t| t.as_str().to_owned()),
            rule: self.rule.as_str().to_owned(),
        }
    }
}

/// A logged request read by the request reader's fast path
/// (`request::typed`: one pass into the typed request, duplicate keys and
/// depth refused); a request it does not take fails the fast path, and
/// the slow path says why.
struct Read(Request);

impl<'de> Deserialize<'de> for Read {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Read, D::Error> {
        crate::request::typed::deserialize(deserializer, crate::request::MAX_JSON_DEPTH).map(Read)
    }
}

impl<'a, R> RawLine<'a, R> {
    /// The line without its request.
    fn head(&self) -> Head<'_, 'a> {
        Head {
            version: self.version.as_ref(),
            decision_id: self.decision_id.as_ref(),
            time: self.time.as_ref(),
            endpoint: self.endpoint.as_ref(),
            error: self.error.as_ref(),
            decision: self.decision,
            scope: &self.scope,
            ttl: self.ttl,
            obligations: &self.obligations,
            reasons: &self.reasons,
        }
    }
}

/// Everything of a line but the request, borrowed from the read line.
struct Head<'r, 'a> {
    version: Option<&'r Value>,
    decision_id: Option<&'r Text<'a>>,
    time: Option<&'r Text<'a>>,
    endpoint: Option<&'r Text<'a>>,
    error: Option<&'r Text<'a>>,
    decision: Option<Effect>,
    scope: &'r [Text<'a>],
    ttl: u64,
    obligations: &'r [Obligation<'a>],
    reasons: &'r [Text<'a>],
}

/// Why a line is not replayed.
enum Refusal {
    Malformed(String),
    Skipped(String),
}

impl Head<'_, '_> {
    /// The decision the line recorded, if the line is one to replay.
    fn check(&self, has_request: bool) -> Result<Effect, Refusal> {
        if let Some(version) = self.version {
            if version.as_u64() != Some(KNOWN_VERSION) {
                return Err(Refusal::Malformed(format!(
                    "unknown log line version {version}"
                )));
            }
        }
        if let Some(error) = self.error {
            return Err(Refusal::Malformed(format!(
                "the server could not write this decision: {}",
                error.as_str()
            )));
        }
        let Some(endpoint) = self.endpoint.map(Text::as_str) else {
            return Err(Refusal::Malformed(
                "not a decision line: no `endpoint`".to_owned(),
            ));
        };
        if !DECISION_ENDPOINTS.contains(&endpoint) {
            return Err(Refusal::Skipped(format!(
                "endpoint `{endpoint}` does not decide a request"
            )));
        }
        match self.decision {
            Some(effect) if has_request => Ok(effect),
            _ => Err(Refusal::Malformed(
                "not a decision line: no `decision` or no `request`".to_owned(),
            )),
        }
    }

    /// True when [`compare`] would find no change from the logged decision
    /// (whose effect is `effect`) to `after`: both deny, or both allow the
    /// same scope items in the same order for the same TTL with the same
    /// obligations. Checked on the borrowed line, so an unchanged decision
    /// (most of a replay) copies nothing out of it; anything else goes to
    /// [`compare`], which has the last word.
    fn unchanged(&self, effect: Effect, after: &Decision) -> bool {
        match (effect, after.decision) {
            (Effect::Deny, Effect::Deny) => true,
            (Effect::Allow, Effect::Allow) => {
                after.ttl == self.ttl
                    && after.scope.len() == self.scope.len()
                    && after
                        .scope
                        .iter()
                        .zip(self.scope)
                        .all(|(a, b)| a.as_str() == b.as_str())
                    && self
                        .obligations
                        .iter()
                        .all(|o| after.obligations.iter().any(|t| o.same(t)))
                    && after
                        .obligations
                        .iter()
                        .all(|t| self.obligations.iter().any(|o| o.same(t)))
            }
            (Effect::Allow, Effect::Deny) | (Effect::Deny, Effect::Allow) => false,
        }
    }
}

/// The parts of a decision the comparison looks at (shared with `writ
/// diff`, which compares two decisions the same way).
pub(crate) struct Side<'a> {
    effect: Effect,
    scope: &'a [String],
    ttl: u64,
    obligations: &'a [ObligationOut],
    reasons: &'a [String],
    /// The decision, whose trace names the rules that set scope or TTL
    /// (`None` for a logged decision, which has no trace). The trace is
    /// read only for a change that names them: reading it builds its
    /// entries, which most replayed decisions never need.
    traced: Option<&'a Decision>,
}

impl<'a> Side<'a> {
    /// The compared parts of a decision.
    pub(crate) fn of(decision: &'a Decision) -> Side<'a> {
        Side {
            effect: decision.decision,
            scope: &decision.scope,
            ttl: decision.ttl,
            obligations: &decision.obligations,
            reasons: &decision.reasons,
            traced: Some(decision),
        }
    }

    /// The rules whose matched trace steps set the scope (`scope`) or the
    /// TTL (`!scope`).
    fn traced_rules(&self, scope: bool) -> Vec<String> {
        let mut rules = Vec::new();
        let Some(decision) = self.traced else {
            return rules;
        };
        for entry in &decision.trace {
            if entry.outcome != Outcome::Matched {
                continue;
            }
            for step in &entry.effect {
                let sets_scope = match step {
                    Step::Granted { .. }
                    | Step::AllowedWithoutScope
                    | Step::CoveredNone
                    | Step::NarrowedScope { .. } => true,
                    Step::TtlSet(_)
                    | Step::TtlCapped { .. }
                    | Step::TtlKept { .. }
                    | Step::TtlUnderOneSecond
                    | Step::TtlComputed { .. } => false,
                    Step::Denied | Step::ObligationAdded { .. } | Step::ObligationFailed => {
                        continue
                    }
                };
                if sets_scope == scope {
                    push_unique(&mut rules, entry.rule.as_str());
                }
            }
        }
        rules
    }

    /// The rules to name for a change of `kind`: the aspect's rules from
    /// the trace, else the reasons.
    fn rules(&self, kind: Kind) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let extra = match kind {
            Kind::ScopeWider | Kind::ScopeNarrower => self.traced_rules(true),
            Kind::TtlLonger | Kind::TtlShorter => self.traced_rules(false),
            _ => Vec::new(),
        };
        for rule in self.reasons.iter().chain(extra.iter()) {
            push_unique(&mut out, rule);
        }
        out
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|r| r == item) {
        list.push(item.to_owned());
    }
}

/// How much of a log [`Replayer::replay_from`] reads at a time.
const READ_CHUNK: usize = 1 << 20;

/// Re-decides logs under a new policy set (and optionally an old one).
pub struct Replayer<'a> {
    new: &'a Engine,
    old: Option<&'a Engine>,
}

impl<'a> Replayer<'a> {
    /// Compares `new`'s decisions with the log's, or with `old`'s.
    pub fn new(new: &'a Engine, old: Option<&'a Engine>) -> Replayer<'a> {
        Replayer { new, old }
    }

    /// Replays a whole log held in memory.
    pub fn replay(&self, log: &[u8]) -> Report {
        let mut report = self.empty_report();
        let mut number = 0;
        self.replay_lines(log, &mut number, &mut report);
        report
    }

    /// Replays a log read from `input` a chunk at a time, so that a large
    /// log is never held whole: only the chunk being replayed and the
    /// start of a line it cut are in memory. The report is the same as
    /// [`Replayer::replay`] of the same bytes.
    pub fn replay_from(&self, mut input: impl std::io::Read) -> std::io::Result<Report> {
        let mut report = self.empty_report();
        let mut number = 0;
        // `buffer[..filled]` is read and not yet replayed: the start of a
        // line the last read cut.
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut filled = 0;
        loop {
            if filled == buffer.len() {
                // A line longer than the buffer: make room for the rest.
                buffer.resize(2 * buffer.len(), 0);
            }
            let read = loop {
                match input.read(&mut buffer[filled..]) {
                    Ok(read) => break read,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if read == 0 {
                // The end: what is left is a last line with no line end.
                self.replay_lines(&buffer[..filled], &mut number, &mut report);
                return Ok(report);
            }
            let searched = filled;
            filled += read;
            // Only whole lines now; a cut line waits for the next read.
            if let Some(last) = memchr::memrchr(b'\n', &buffer[searched..filled]) {
                let end = searched + last + 1;
                self.replay_lines(&buffer[..end], &mut number, &mut report);
                buffer.copy_within(end..filled, 0);
                filled -= end;
            }
        }
    }

    /// A report with nothing replayed yet.
    fn empty_report(&self) -> Report {
        Report {
            baseline: if self.old.is_some() {
                "old policy set".to_owned()
            } else {
                "log".to_owned()
            },
            new_digest: self.new.digest().to_owned(),
            old_digest: self.old.map(|e| e.digest().to_owned()),
            ..Report::default()
        }
    }

    /// Replays the lines of `log`, numbering them on from `number`; a last
    /// line without its line end is replayed as cut off.
    fn replay_lines(&self, log: &[u8], number: &mut usize, report: &mut Report) {
        let mut rest = log;
        while !rest.is_empty() {
            *number += 1;
            let (line, ended) = match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    let line = &rest[..end];
                    rest = &rest[end + 1..];
                    (line, true)
                }
                None => {
                    let line = rest;
                    rest = &[];
                    (line, false)
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            report.lines += 1;
            self.replay_line(*number, line, ended, report);
        }
    }

    fn replay_line(&self, number: usize, line: &[u8], ended: bool, report: &mut Report) {
        let refuse = |report: &mut Report, refusal: Refusal| match refusal {
            Refusal::Malformed(why) => report.malformed.push(Unreplayed { line: number, why }),
            Refusal::Skipped(why) => report.skipped.push(Unreplayed { line: number, why }),
        };
        // The fast path: a line without the redaction marker, read straight
        // into a request. The server logs only requests it validated, as
        // objects; anything else falls through to the slow path, which
        // says what is wrong.
        // UTF-8 is checked once for the line (reading from bytes checks
        // every string on its own, which costs more on short strings).
        let text = std::str::from_utf8(line)
            .ok()
            .filter(|_| memchr::memmem::find(line, REDACTED.as_bytes()).is_none());
        if let Some(text) = text {
            if let Ok(mut raw) = serde_json::from_str::<RawLine<'_, Read>>(text) {
                let request = raw.request.take();
                let head = raw.head();
                let effect = match head.check(request.is_some()) {
                    Ok(effect) => effect,
                    Err(refusal) => return refuse(report, refusal),
                };
                if let Some(Read(request)) = request {
                    return self.redecide(number, &head, effect, request, report);
                }
            }
        }
        let mut raw = match serde_json::from_slice::<RawLine<'_, Value>>(line) {
            Ok(raw) => raw,
            Err(e) => {
                let why = if ended {
                    format!("not a decision line: {e}")
                } else {
                    format!("truncated (the last line has no newline and is not complete JSON: {e})")
                };
                return refuse(report, Refusal::Malformed(why));
            }
        };
        let request = raw.request.take();
        let head = raw.head();
        let effect = match head.check(request.is_some()) {
            Ok(effect) => effect,
            Err(refusal) => return refuse(report, refusal),
        };
        let Some(request) = request else {
            return;
        };
        let mut redacted = Vec::new();
        find_redacted(&request, &mut String::new(), &mut redacted);
        if !redacted.is_empty() {
            report.redacted.push(Unreplayed {
                line: number,
                why: format!("not replayable (redacted: {})", redacted.join(", ")),
            });
            return;
        }
        match Request::from_value(request) {
            Ok((request, _)) => self.redecide(number, &head, effect, request, report),
            Err(e) => refuse(
                report,
                Refusal::Malformed(format!("the logged request is not valid: {e}")),
            ),
        }
    }

    /// Decides `request` again and records how it changed.
    fn redecide(
        &self,
        number: usize,
        raw: &Head<'_, '_>,
        logged_effect: Effect,
        mut request: Request,
        report: &mut Report,
    ) {
        if request.environment.time.is_none() {
            // Decide at the time the line recorded.
            request.environment.time = raw.time.map(|t| t.as_str().to_owned());
        }
        let prepared = match request.validate() {
            Ok(prepared) => prepared,
            Err(e) => {
                report.malformed.push(Unreplayed {
                    line: number,
                    why: format!("the logged request is not valid: {e}"),
                });
                return;
            }
        };
        report.replayed += 1;
        let after = self.new.decide_prepared(&request, &prepared);
        let before_decision;
        // The logged decision's parts, copied out of the line only when
        // the decision may have changed.
        let (scope, obligations, reasons): (Vec<String>, Vec<ObligationOut>, Vec<String>);
        let before = match self.old {
            Some(old) => {
                before_decision = old.decide_prepared(&request, &prepared);
                Side::of(&before_decision)
            }
            None => {
                if raw.unchanged(logged_effect, &after) {
                    return;
                }
                scope = raw.scope.iter().map(|t| t.as_str().to_owned()).collect();
                obligations = raw.obligations.iter().map(Obligation::to_out).collect();
                reasons = raw.reasons.iter().map(|t| t.as_str().to_owned()).collect();
                Side {
                    effect: logged_effect,
                    scope: &scope,
                    ttl: raw.ttl,
                    obligations: &obligations,
                    reasons: &reasons,
                    traced: None,
                }
            }
        };
        let after = Side::of(&after);
        let start = report.changes.len();
        compare(&before, &after, &mut |kind, detail, rules| {
            let (rules_before, rules_after) = rules;
            report.changes.push(Change {
                line: number,
                decision_id: raw
                    .decision_id
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
                kind,
                detail,
                rules_before,
                rules_after,
            });
        });
        if report.changes.len() > start {
            report.changed += 1;
        }
    }
}

/// The rules responsible before and after.
pub(crate) type Rules = (Vec<String>, Vec<String>);

/// Calls `emit` once per kind of change from `before` to `after`.
pub(crate) fn compare(before: &Side<'_>, after: &Side<'_>, emit: &mut dyn FnMut(Kind, String, Rules)) {
    let rules = |kind: Kind| (before.rules(kind), after.rules(kind));
    match (before.effect, after.effect) {
        (Effect::Deny, Effect::Deny) => return,
        (Effect::Deny, Effect::Allow) => {
            let kind = Kind::DenyToAllow;
            let detail = format!("now allows [{}] for {}s", after.scope.join(", "), after.ttl);
            emit(kind, detail, rules(kind));
            return;
        }
        (Effect::Allow, Effect::Deny) => {
            let kind = Kind::AllowToDeny;
            let detail = format!("no longer allows [{}]", before.scope.join(", "));
            emit(kind, detail, rules(kind));
            return;
        }
        (Effect::Allow, Effect::Allow) => {}
    }
    if before.scope != after.scope {
        let old = parse_items(before.scope);
        let new = parse_items(after.scope);
        let gained: Vec<&str> = after
            .scope
            .iter()
            .zip(&new)
            .filter(|(_, item)| !covered(item, &old))
            .map(|(text, _)| text.as_str())
            .collect();
        let lost: Vec<&str> = before
            .scope
            .iter()
            .zip(&old)
            .filter(|(_, item)| !covered(item, &new))
            .map(|(text, _)| text.as_str())
            .collect();
        if !gained.is_empty() {
            let kind = Kind::ScopeWider;
            emit(kind, format!("+{}", gained.join(", +")), rules(kind));
        }
        if !lost.is_empty() {
            let kind = Kind::ScopeNarrower;
            emit(kind, format!("-{}", lost.join(", -")), rules(kind));
        }
    }
    if after.ttl > before.ttl {
        let kind = Kind::TtlLonger;
        emit(
            kind,
            format!("ttl {} -> {}", before.ttl, after.ttl),
            rules(kind),
        );
    } else if after.ttl < before.ttl {
        let kind = Kind::TtlShorter;
        emit(
            kind,
            format!("ttl {} -> {}", before.ttl, after.ttl),
            rules(kind),
        );
    }
    let dropped = missing(before.obligations, after.obligations);
    if !dropped.is_empty() {
        emit(
            Kind::ObligationsDropped,
            obligation_detail('-', &dropped),
            (obligation_rules(&dropped), Vec::new()),
        );
    }
    let added = missing(after.obligations, before.obligations);
    if !added.is_empty() {
        emit(
            Kind::ObligationsAdded,
            obligation_detail('+', &added),
            (Vec::new(), obligation_rules(&added)),
        );
    }
}

/// Parsed scope items; `None` for text that is not a valid item (compared
/// by text only).
fn parse_items(items: &[String]) -> Vec<Option<ScopeItem>> {
    items.iter().map(|t| ScopeItem::parse(t).ok()).collect()
}

/// Whether some item of `by` covers `item` (or, unparsed, equals it).
fn covered(item: &Option<ScopeItem>, by: &[Option<ScopeItem>]) -> bool {
    match item {
        Some(item) => by.iter().flatten().any(|b| b.covers(item)),
        None => false,
    }
}

/// The obligations of `from` that `to` does not carry (by kind, event and
/// value; the rule that asked does not matter to the broker).
fn missing<'b>(from: &'b [ObligationOut], to: &[ObligationOut]) -> Vec<&'b ObligationOut> {
    from.iter()
        .filter(|o| {
            !to.iter()
                .any(|t| t.kind == o.kind && t.event == o.event && t.value == o.value)
        })
        .collect()
}

fn obligation_text(o: &ObligationOut) -> String {
    match (&o.event, &o.value) {
        (Some(event), _) => format!("{} {event}", o.kind),
        (None, Some(value)) => format!("{} {value}", o.kind),
        (None, None) => o.kind.clone(),
    }
}

fn obligation_detail(sign: char, list: &[&ObligationOut]) -> String {
    list.iter()
        .map(|o| format!("{sign}{}", obligation_text(o)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn obligation_rules(list: &[&ObligationOut]) -> Vec<String> {
    let mut out = Vec::new();
    for o in list {
        push_unique(&mut out, &o.rule);
    }
    out
}


/// The dotted paths of the strings (and keys) of `value` that hold the
/// redaction marker.
fn find_redacted(value: &Value, path: &mut String, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            if text.contains(REDACTED) {
                out.push(if path.is_empty() {
                    ".".to_owned()
                } else {
                    path.clone()
                });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                find_redacted(item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if key.contains(REDACTED) {
                    out.push(path.clone());
                }
                find_redacted(item, path, out);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The rules of one side of a group; a deny side without reasons is the
/// default deny.
fn rule_list(rules: &[String], deny_side: bool) -> String {
    match (rules.is_empty(), deny_side) {
        (false, _) => rules.join(", "),
        (true, true) => "none (default deny)".to_owned(),
        (true, false) => "-".to_owned(),
    }
}

fn verdict(report: &Report) -> &'static str {
    if report.widens() {
        "WIDENS"
    } else if report.changes.is_empty() {
        "no change"
    } else {
        "narrows only"
    }
}

/// The report for people.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replayed {} of {} line(s) against the {}: {} request(s) changed, {}",
        report.replayed,
        report.lines,
        report.baseline,
        report.changed,
        verdict(report)
    );
    let counts = report.counts();
    if !counts.is_empty() {
        let _ = writeln!(out, "\nchanges per kind:");
        for (kind, count) in &counts {
            let tag = if kind.widens() { "widens" } else { "narrows" };
            let _ = writeln!(out, "  {:<20} {count:>7}  ({tag})", kind.label());
        }
        let _ = writeln!(out, "\nby rule:");
        for group in report.groups() {
            let _ = writeln!(
                out,
                "  {}: {} request(s); rules before: {}; after: {}",
                group.kind.label(),
                group.changes.len(),
                rule_list(group.before, group.kind == Kind::DenyToAllow),
                rule_list(group.after, group.kind == Kind::AllowToDeny)
            );
            for change in group.changes.iter().take(EXAMPLES) {
                let _ = writeln!(
                    out,
                    "    line {} ({}): {}",
                    change.line, change.decision_id, change.detail
                );
            }
            if group.changes.len() > EXAMPLES {
                let _ = writeln!(
                    out,
                    "    ... and {} more",
                    group.changes.len() - EXAMPLES
                );
            }
        }
    }
    for (title, list) in [
        ("not replayable", &report.redacted),
        ("skipped", &report.skipped),
        ("malformed", &report.malformed),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}: {} line(s)", list.len());
        for item in list.iter().take(EXAMPLES * 2) {
            let _ = writeln!(out, "  line {}: {}", item.line, item.why);
        }
        if list.len() > EXAMPLES * 2 {
            let _ = writeln!(out, "  ... and {} more", list.len() - EXAMPLES * 2);
        }
    }
    out
}

/// The report for tools: every change and every line not replayed.
pub fn render_json(report: &Report) -> String {
    let mut bytes = Vec::new();
    match write_json(report, &mut bytes) {
        Ok(()) => String::from_utf8(bytes).unwrap_or_else(|_| "{}".to_owned()),
        Err(_) => "{}".to_owned(),
    }
}

/// The report as [`render_json`] renders it, written to `out` as it is
/// produced (a report of many changes is never held whole as text).
pub fn write_json(report: &Report, out: impl std::io::Write) -> std::io::Result<()> {
    // Written from borrowed parts, not through a `Value` tree: a report of
    // many changes would otherwise be built twice over in memory.
    #[derive(serde::Serialize)]
    struct Out<'a> {
        baseline: &'a str,
        new_policy_digest: &'a str,
        old_policy_digest: Option<&'a str>,
        lines: usize,
        replayed: usize,
        changed: usize,
        widens: bool,
        counts: indexmap::IndexMap<&'static str, usize>,
        changes: Vec<ChangeOut<'a>>,
        not_replayable: Vec<UnreplayedOut<'a>>,
        skipped: Vec<UnreplayedOut<'a>>,
        malformed: Vec<UnreplayedOut<'a>>,
    }
    #[derive(serde::Serialize)]
    struct ChangeOut<'a> {
        line: usize,
        decision_id: &'a str,
        kind: &'static str,
        widens: bool,
        detail: &'a str,
        rules_before: &'a [String],
        rules_after: &'a [String],
    }
    #[derive(serde::Serialize)]
    struct UnreplayedOut<'a> {
        line: usize,
        why: &'a str,
    }
    fn unreplayed(list: &[Unreplayed]) -> Vec<UnreplayedOut<'_>> {
        list.iter()
            .map(|u| UnreplayedOut {
                line: u.line,
                why: &u.why,
            })
            .collect()
    }
    let value = Out {
        baseline: &report.baseline,
        new_policy_digest: &report.new_digest,
        old_policy_digest: report.old_digest.as_deref(),
        lines: report.lines,
        replayed: report.replayed,
        changed: report.changed,
        widens: report.widens(),
        counts: report
            .counts()
            .into_iter()
            .map(|(kind, count)| (kind.code(), count))
            .collect(),
        changes: report
            .changes
            .iter()
            .map(|c| ChangeOut {
                line: c.line,
                decision_id: &c.decision_id,
                kind: c.kind.code(),
                widens: c.kind.widens(),
                detail: &c.detail,
                rules_before: &c.rules_before,
                rules_after: &c.rules_after,
            })
            .collect(),
        not_replayable: unreplayed(&report.redacted),
        skipped: unreplayed(&report.skipped),
        malformed: unreplayed(&report.malformed),
    };
    serde_json::to_writer_pretty(out, &value).map_err(std::io::Error::from)
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The report as a pull-request comment.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let icon = if report.widens() {
        "⚠️"
    } else if report.changes.is_empty() {
        "✅"
    } else {
        "ℹ️"
    };
    let _ = writeln!(
        out,
        "### {icon} writ replay: {}\n\nReplayed {} of {} logged decision(s) against the {}; {} request(s) decide differently.\n",
        verdict(report),
        report.replayed,
        report.lines,
        report.baseline,
        report.changed
    );
    let groups = report.groups();
    if !groups.is_empty() {
        let _ = writeln!(
            out,
            "| change | widens | requests | rules before | rules after | example |"
        );
        let _ = writeln!(out, "|---|---|---:|---|---|---|");
        for group in &groups {
            let example = group
                .changes
                .first()
                .map(|c| format!("line {}: `{}`", c.line, md_cell(&c.detail)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                group.kind.label(),
                if group.kind.widens() { "**yes**" } else { "no" },
                group.changes.len(),
                md_cell(&rule_list(group.before, group.kind == Kind::DenyToAllow)),
                md_cell(&rule_list(group.after, group.kind == Kind::AllowToDeny)),
                example
            );
        }
        let _ = writeln!(out);
    }
    let not_replayed = [
        ("not replayable (redacted)", report.redacted.len()),
        ("skipped (not a decision endpoint)", report.skipped.len()),
        ("malformed", report.malformed.len()),
    ];
    if not_replayed.iter().any(|(_, n)| *n > 0) {
        let _ = writeln!(out, "Lines not replayed:\n");
        for (title, count) in not_replayed {
            if count > 0 {
                let _ = writeln!(out, "- {title}: {count}");
            }
        }
        let first = report
            .redacted
            .iter()
            .chain(&report.skipped)
            .chain(&report.malformed)
            .min_by_key(|u| u.line);
        if let Some(first) = first {
            let _ = writeln!(out, "- first: line {}: {}", first.line, md_cell(&first.why));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine(ttl: &str) -> Engine {
        let text = format!(
            "@id(\"p\") permit if action == \"read\" grant [\"read:{{resource.id}}\"] for 1h;\n\
             @id(\"cap\") limit ttl {ttl};"
        );
        Engine::compile([("t.writ", text)], None).expect("compiles")
    }

    fn log_line(request: &str, decision: &Decision) -> String {
        json!({
            "decision_id": "d",
            "time": "2026-11-22T10:00:00Z",
            "endpoint": "/v1/decide",
            "decision": decision.decision,
            "scope": decision.scope,
            "ttl": decision.ttl,
            "obligations": decision.obligations,
            "reasons": decision.reasons,
            "request": serde_json::from_str::<Value>(request).expect("json"),
        })
        .to_string()
    }

    const READ: &str = r#"{"action":"read","resource":{"id":"db://x"},"environment":{"time":"2026-11-22T10:00:00Z"}}"#;

    #[test]
    fn a_longer_ttl_widens_and_names_the_cap() {
        let old = engine("15m");
        let new = engine("30m");
        let line = log_line(READ, &old.decide(&Request::from_json(READ).expect("valid")));
        let report = Replayer::new(&new, None).replay(format!("{line}\n").as_bytes());
        assert_eq!(report.replayed, 1);
        assert_eq!(report.changes.len(), 1);
        assert_eq!(report.changes[0].kind, Kind::TtlLonger);
        assert_eq!(report.changes[0].detail, "ttl 900 -> 1800");
        assert!(report.changes[0].rules_after.contains(&"cap".to_owned()));
        assert_eq!(report.exit_code(FailOn::Widen), 1);
        assert_eq!(report.exit_code(FailOn::None), 0);
        let same = Replayer::new(&old, None).replay(line.as_bytes());
        assert!(same.changes.is_empty());
        assert_eq!(same.exit_code(FailOn::Change), 0);
    }

    #[test]
    fn scope_containment_tells_wider_from_narrower() {
        let a = vec!["read:db://x/**".to_owned()];
        let b = vec!["read:db://x/y".to_owned()];
        let side = |scope: &'static [String]| Side {
            effect: Effect::Allow,
            scope,
            ttl: 1,
            obligations: &[],
            reasons: &[],
            traced: None,
        };
        let a: &'static [String] = Box::leak(a.into_boxed_slice());
        let b: &'static [String] = Box::leak(b.into_boxed_slice());
        let mut kinds = Vec::new();
        compare(&side(a), &side(b), &mut |k, _, _| kinds.push(k));
        assert_eq!(kinds, [Kind::ScopeNarrower]);
        kinds.clear();
        compare(&side(b), &side(a), &mut |k, _, _| kinds.push(k));
        assert_eq!(kinds, [Kind::ScopeWider]);
    }

    #[test]
    fn redacted_and_broken_lines_are_counted_not_replayed() {
        let new = engine("15m");
        let redacted = r#"{"endpoint":"/v1/decide","decision":"deny","request":{"subject":{"id":"[redacted]"},"action":"read"}}"#;
        let log = format!("{redacted}\nnot json\n{{\"endpoint\":\"/v1/search\",\"decision\":\"deny\",\"request\":{{}}}}\n{{\"endp");
        let report = Replayer::new(&new, None).replay(log.as_bytes());
        assert_eq!(report.replayed, 0);
        assert_eq!(
            report.redacted[0].why,
            "not replayable (redacted: subject.id)"
        );
        assert_eq!(report.malformed.len(), 2);
        assert_eq!(report.malformed[0].line, 2);
        assert_eq!(report.malformed[1].line, 4);
        assert!(report.malformed[1].why.starts_with("truncated"));
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.exit_code(FailOn::Widen), 0);
        let broken = Replayer::new(&new, None).replay(b"nope\n");
        assert_eq!(broken.exit_code(FailOn::None), 2);
    }

    /// Hands out its bytes a few at a time, as a pipe may.
    struct Trickle<'a>(&'a [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(self.0.len()).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_log_read_in_pieces_replays_as_the_whole() {
        let old = engine("15m");
        let new = engine("30m");
        let line = log_line(READ, &old.decide(&Request::from_json(READ).expect("valid")));
        let redacted = r#"{"endpoint":"/v1/decide","decision":"deny","request":{"subject":{"id":"[redacted]"},"action":"read"}}"#;
        let log = format!("{line}\n\n{redacted}\nnot json\n{line}\n{line}\n{{\"endp");
        let whole = Replayer::new(&new, None).replay(log.as_bytes());
        assert_eq!(whole.replayed, 3);
        assert_eq!(whole.changed, 3);
        assert_eq!(whole.malformed.len(), 2);
        for piece in [1, 7, 64, log.len()] {
            let read = Replayer::new(&new, None)
                .replay_from(Trickle(log.as_bytes(), piece))
                .expect("read");
            assert_eq!(read.lines, whole.lines, "pieces of {piece}");
            assert_eq!(read.replayed, whole.replayed, "pieces of {piece}");
            assert_eq!(read.changed, whole.changed, "pieces of {piece}");
            assert_eq!(read.changes, whole.changes, "pieces of {piece}");
            assert_eq!(read.redacted, whole.redacted, "pieces of {piece}");
            assert_eq!(read.malformed, whole.malformed, "pieces of {piece}");
        }
    }

    /// A line longer than what is read at a time is still one line.
    #[test]
    fn a_line_longer_than_a_read_is_one_line() {
        let new = engine("15m");
        let long = format!(
            r#"{{"endpoint":"/v1/decide","decision":"deny","pad":"{}","request":{READ}}}"#,
            "x".repeat(READ_CHUNK + 10)
        );
        let log = format!("{long}\n{long}\n");
        let report = Replayer::new(&new, None)
            .replay_from(Trickle(log.as_bytes(), 1 << 16))
            .expect("read");
        assert_eq!(report.lines, 2);
        assert_eq!(report.replayed, 2);
        assert!(report.malformed.is_empty(), "{:?}", report.malformed);
    }

    #[test]
    fn dropped_obligations_and_new_allows_widen_against_an_old_set() {
        let old = Engine::compile(
            [(
                "t.writ",
                "@id(\"p\") permit if action == \"read\" grant [\"read:{resource.id}\"] for 1h;\n\
                 @id(\"appr\") require approval if action == \"read\";",
            )],
            None,
        )
        .expect("compiles");
        let new = Engine::compile(
            [(
                "t.writ",
                "@id(\"p\") permit if action in [\"read\", \"write\"] grant [\"{action}:{resource.id}\"] for 1h;",
            )],
            None,
        )
        .expect("compiles");
        let write = READ.replace("\"read\"", "\"write\"");
        let log = format!(
            "{}\n{}\n",
            log_line(READ, &old.decide(&Request::from_json(READ).expect("valid"))),
            log_line(&write, &old.decide(&Request::from_json(&write).expect("valid")))
        );
        let report = Replayer::new(&new, Some(&old)).replay(log.as_bytes());
        let kinds: Vec<Kind> = report.changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [Kind::ObligationsDropped, Kind::DenyToAllow]);
        assert_eq!(report.changes[0].rules_before, ["appr"]);
        assert_eq!(report.changes[0].detail, "-approval");
        assert_eq!(report.changed, 2);
        assert!(report.widens());
        let json: Value = serde_json::from_str(&render_json(&report)).expect("JSON");
        assert_eq!(json["baseline"], "old policy set");
        assert_eq!(json["counts"]["deny_to_allow"], 1);
    }

    /// Two obligations, for the tests that reorder them.
    fn obliging() -> Engine {
        Engine::compile(
            [(
                "t.writ",
                "@id(\"p\") permit if action == \"read\" grant [\"read:{resource.id}\", \"list:{resource.id}\"] for 1h;\n\
                 @id(\"appr\") require approval if action == \"read\";\n\
                 @id(\"rev\") require revoke on task_end;",
            )],
            None,
        )
        .expect("compiles")
    }

    #[test]
    fn a_reordered_or_escaped_logged_decision_is_no_change() {
        let engine = obliging();
        let decision = engine.decide(&Request::from_json(READ).expect("valid"));
        assert_eq!(decision.scope.len(), 2);
        assert_eq!(decision.obligations.len(), 2);
        let mut value: Value = serde_json::from_str(&log_line(READ, &decision)).expect("JSON");
        let scope: Vec<Value> = decision.scope.iter().rev().cloned().map(Value::from).collect();
        value["scope"] = Value::from(scope);
        let obligations = value["obligations"].as_array().expect("a list").clone();
        value["obligations"] = Value::from(obligations.into_iter().rev().collect::<Vec<_>>());
        // The same items with an escape in their text read the same.
        let escaped = value.to_string().replace("read:db", "\\u0072ead:db");
        assert!(escaped.contains("\\u0072ead:db"));
        let report = Replayer::new(&engine, None).replay(format!("{escaped}\n").as_bytes());
        assert_eq!(report.replayed, 1);
        assert!(report.changes.is_empty(), "{:?}", report.changes);
        // One obligation fewer in the log: the new decision adds it back.
        value["obligations"] = Value::from(vec![value["obligations"][0].clone()]);
        value["decision_id"] = Value::from("d\"1");
        let report = Replayer::new(&engine, None).replay(value.to_string().as_bytes());
        assert_eq!(report.changes.len(), 1);
        assert_eq!(report.changes[0].kind, Kind::ObligationsAdded);
        assert_eq!(report.changes[0].decision_id, "d\"1");
    }

    #[test]
    fn a_logged_field_of_the_wrong_type_is_malformed_with_what_was_expected() {
        let engine = obliging();
        let cases = [
            (r#""scope":[1]"#, "invalid type: integer `1`, expected a string"),
            (r#""obligations":["x"]"#, "expected struct ObligationOut"),
            (r#""obligations":[{"kind":"log"}]"#, "missing field `rule`"),
            (r#""decision_id":7"#, "invalid type: integer `7`, expected a string"),
        ];
        for (field, expected) in cases {
            let line = format!(
                r#"{{"endpoint":"/v1/decide","decision":"deny",{field},"request":{READ}}}"#
            );
            let report = Replayer::new(&engine, None).replay(format!("{line}\n").as_bytes());
            assert_eq!(report.replayed, 0, "{field}");
            assert_eq!(report.malformed.len(), 1, "{field}");
            let why = &report.malformed[0].why;
            assert!(why.starts_with("not a decision line: "), "{why}");
            assert!(why.contains(expected), "{field}: {why}");
        }
    }
}
