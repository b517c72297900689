//! Lints: rules that compile but are probably not what the author meant.
//!
//! Each lint reads the checked rules ([`crate::ir`]) and reasons about their
//! top-level conjuncts. A conjunct that tests one attribute against
//! constants (`action == "read"`, `subject.kind != "agent"`,
//! `sensitivity <= internal`, `subject.attested == true`) is a *test*: the
//! set of values it lets through. One rule *implies* a conjunct of another
//! when every request its tests let through also passes that conjunct: the
//! same conjunct written again, or a test whose values contain the rule's
//! own. The lints are sound for what they say (a permit reported as
//! overridden is overridden) and silent on what they cannot see (two
//! conditions that agree only through a function call).
//!
//! | code | finds |
//! |---|---|
//! | `writ::lint::overridden_permit` | a permit that a forbid always overrides |
//! | `writ::lint::dead_permit` | a permit that can never match |
//! | `writ::lint::unbounded_ttl` | a grant that no `for` and no limit bounds |
//! | `writ::lint::broad_grant` | `**` or a `*` verb on data of any sensitivity |
//! | `writ::lint::no_workload_identity` | a permit that never looks at how the subject proved its identity |
//! | `writ::lint::redundant_limit` | a `limit ttl` that never lowers a TTL |
//! | `writ::lint::bad_allow` | a `// writ: allow(...)` directive without a reason, or naming no lint |
//! | `writ::lint::undeclared_attribute` | an undeclared free attribute read once in the whole set, or one or two edits from another one read |
//!
//! A rule silences a lint about itself with `@allow("writ::lint::CODE")`
//! (or just `@allow("CODE")`), for a finding that is deliberate: a TTL
//! ceiling kept as a backstop for permits that do not exist yet, say. A
//! file silences lints for all its rules with a directive comment that
//! gives the reason, `// writ: allow(no_workload_identity) because "..."`
//! ([`directives`]); one without a reason or naming no lint is itself a
//! finding (`writ::lint::bad_allow`). [`Level`]s set per lint whether a
//! finding is reported and whether it fails `writ lint`.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::allowed::{test_of, Values};
use crate::ast::BinOp;
use crate::diagnostics::Diagnostics;
use crate::engine::Engine;
use crate::ir::{
    Attr, Expr, ExprKind, Lit, PolicySet, Rule, RuleKind, Template, TemplatePart, TtlCap,
};
use crate::name::Name;
use crate::sensitivity::Sensitivity;
use crate::source::Span;

/// The code of every lint, in the order they are documented.
pub const CODES: [&str; 8] = [
    "writ::lint::overridden_permit",
    "writ::lint::dead_permit",
    "writ::lint::unbounded_ttl",
    "writ::lint::broad_grant",
    "writ::lint::no_workload_identity",
    "writ::lint::redundant_limit",
    "writ::lint::undeclared_attribute",
    "writ::lint::bad_allow",
];

/// A lint finding.
#[derive(Debug, Clone, Error, Diagnostic)]
pub enum Lint {
    /// `forbid if action == "write"; permit if action == "write" and ...`
    #[error("permit `{permit}` can never allow: forbid `{forbid}` matches whenever it does")]
    #[diagnostic(code(writ::lint::overridden_permit), severity(Warning))]
    OverriddenPermit {
        /// The permit.
        permit: String,
        /// The forbid that overrides it.
        forbid: String,
        /// The permit's keyword.
        #[label("every request this permit matches is denied")]
        span: SourceSpan,
        /// Why, and what to do.
        #[help]
        help: String,
    },
    /// `permit if action == "read" and action != "read"`, `permit if false`
    #[error("permit `{permit}` can never match")]
    #[diagnostic(code(writ::lint::dead_permit), severity(Warning))]
    DeadPermit {
        /// The permit.
        permit: String,
        /// The condition.
        #[label("{reason}")]
        span: SourceSpan,
        /// Why it never holds.
        reason: String,
        /// What to do.
        #[help]
        help: String,
    },
    /// `permit if ... grant ["read:x"];` with no `for` and no `limit ttl`
    #[error("permit `{permit}` grants a credential that no TTL bounds")]
    #[diagnostic(code(writ::lint::unbounded_ttl), severity(Warning))]
    UnboundedTtl {
        /// The permit.
        permit: String,
        /// The grant.
        #[label("no `for`, and no `limit ttl` always applies")]
        span: SourceSpan,
        /// What to do.
        #[help]
        help: String,
    },
    /// `permit if ... grant ["*:db://payments/**"]` without a sensitivity test
    #[error("permit `{permit}` grants `{item}` on data of any sensitivity")]
    #[diagnostic(code(writ::lint::broad_grant), severity(Warning))]
    BroadGrant {
        /// The permit.
        permit: String,
        /// The scope item.
        item: String,
        /// The scope item.
        #[label("{what}")]
        span: SourceSpan,
        /// `**` or `*` verb.
        what: String,
        /// What to do.
        #[help]
        help: String,
    },
    /// `permit if action == "read" grant [...]` with nothing on `subject.auth`
    #[error("permit `{permit}` allows without checking how the subject proved its identity")]
    #[diagnostic(code(writ::lint::no_workload_identity), severity(Warning))]
    NoWorkloadIdentity {
        /// The permit.
        permit: String,
        /// The permit's keyword.
        #[label("no test on `subject.auth` or `subject.attested`, here or in a forbid")]
        span: SourceSpan,
        /// What to do.
        #[help]
        help: String,
    },
    /// `limit ttl 1h;` next to `limit ttl 30m;`
    #[error("limit `{limit}` never lowers a TTL")]
    #[diagnostic(code(writ::lint::redundant_limit), severity(Warning))]
    RedundantLimit {
        /// The limit.
        limit: String,
        /// The limit's keyword.
        #[label("{reason}")]
        span: SourceSpan,
        /// Why.
        reason: String,
        /// What to do.
        #[help]
        help: String,
    },

    /// `// writ: allow(no_workload_identity)` with no `because`
    #[error("this `writ: allow` directive {reason}")]
    #[diagnostic(
        code(writ::lint::bad_allow),
        severity(Warning),
        help("write `// writ: allow(CODE, ...) because \"why the finding is deliberate\"`, with codes from docs/lints.md")
    )]
    BadAllow {
        /// What is wrong.
        reason: String,
        /// The directive.
        #[label("silences nothing")]
        span: SourceSpan,
    },
    /// `subject.repositry == "x"` with nothing declared
    #[error("undeclared attribute `{path}` {reason}")]
    #[diagnostic(code(writ::lint::undeclared_attribute), severity(Warning))]
    UndeclaredAttribute {
        /// The attribute's path.
        path: String,
        /// Why it looks like a typo.
        reason: String,
        /// Its first read.
        #[label("read here")]
        span: SourceSpan,
        /// What to do.
        #[help]
        help: String,
    },
}


impl Lint {
    /// The lint's code (`writ::lint::dead_permit`).
    pub fn code_name(&self) -> String {
        Diagnostic::code(self)
            .map(|c| c.to_string())
            .unwrap_or_default()
    }
}

/// One finding: the lint and the rule it is about.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The rule's id.
    pub rule: String,
    /// Where the label points.
    pub span: Span,
    /// What was found.
    pub lint: Lint,
}

/// Runs every lint over a compiled policy set, in rule order.
pub fn lint(engine: &Engine) -> Vec<Finding> {
    let set = engine.policy();
    let facts: Vec<Facts> = set.rules.iter().map(Facts::of).collect();
    let mut findings = Vec::new();
    for (index, rule) in set.rules.iter().enumerate() {
        let before = findings.len();
        lint_rule(set, &facts, index, &mut findings);
        let allowed = rule.annotations.get("allow").cloned().unwrap_or_default();
        let mut kept = findings.split_off(before);
        kept.retain(|f| {
            let code = f.lint.code_name();
            let short = code.trim_start_matches("writ::lint::");
            !allowed.iter().any(|a| *a == code || a == short)
        });
        findings.extend(kept);
    }
    for (index, finding) in undeclared(set) {
        let allowed = set.rules[index].annotations.get("allow");
        let code = finding.lint.code_name();
        let short = code.trim_start_matches("writ::lint::");
        if !allowed.is_some_and(|a| a.iter().any(|a| *a == code || a == short)) {
            findings.push(finding);
        }
    }
    // A file's directives silence its rules' findings.
    let mut files: Vec<(crate::source::FileId, Vec<Directive>)> = Vec::new();
    for rule in &set.rules {
        let file = rule.span.file;
        if files.iter().all(|(f, _)| *f != file) {
            files.push((file, directives(file, &engine.sources().get(file).text)));
        }
    }
    findings.retain(|finding| {
        let code = finding.lint.code_name();
        !files.iter().any(|(file, list)| {
            *file == finding.span.file
                && list
                    .iter()
                    .any(|d| d.reason.is_some() && d.codes.contains(&code))
        })
    });
    for (_, list) in &files {
        for directive in list {
            let reason = if directive.codes.is_empty() {
                Some("names no lint")
            } else if directive.reason.is_none() {
                Some("gives no reason")
            } else {
                None
            };
            if let Some(reason) = reason {
                findings.push(Finding {
                    rule: String::new(),
                    span: directive.span,
                    lint: Lint::BadAllow {
                        reason: reason.to_owned(),
                        span: directive.span.source_span(),
                    },
                });
            }
        }
    }
    findings
}

/// The findings of `writ::lint::undeclared_attribute` alone, as every
/// lint reports them (silenced by `@allow` and file directives alike):
/// `writ check` prints them as warnings.
pub fn undeclared_attributes(engine: &Engine) -> Vec<Finding> {
    lint(engine)
        .into_iter()
        .filter(|f| matches!(f.lint, Lint::UndeclaredAttribute { .. }))
        .collect()
}

/// A file's `// writ: allow(CODE, ...) because "REASON"` comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    /// The lints it silences, as full codes (`writ::lint::dead_permit`);
    /// names that are no lint are left out.
    pub codes: Vec<String>,
    /// Why, as written between the quotes; `None` when missing, and then
    /// the directive silences nothing.
    pub reason: Option<String>,
    /// The comment.
    pub span: Span,
}

/// The `// writ: allow(...)` directives of a file's text: a comment line
/// of its own (or at the end of a line) starting with `writ: allow(`.
pub fn directives(file: crate::source::FileId, text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let Some(at) = line.find("//") else { continue };
        let comment = line[at + 2..].trim();
        let Some(rest) = comment.strip_prefix("writ:") else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("allow(") else {
            continue;
        };
        let (list, after) = rest.split_once(')').unwrap_or((rest, ""));
        let codes = list
            .split(',')
            .map(str::trim)
            .map(|c| c.trim_matches('"'))
            .map(|c| format!("writ::lint::{}", c.trim_start_matches("writ::lint::")))
            .filter(|c| CODES.contains(&c.as_str()))
            .collect();
        let reason = after
            .trim()
            .strip_prefix("because")
            .map(str::trim)
            .and_then(|r| r.strip_prefix('"'))
            .and_then(|r| r.rsplit_once('"'))
            .map(|(r, _)| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let end = start + line.trim_end().len();
        out.push(Directive {
            codes,
            reason,
            span: Span::new(file, start + at, end),
        });
    }
    out
}

/// How a lint's findings count: not reported, reported, or reported and
/// failing `writ lint` (the default for every lint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Not reported.
    Allow,
    /// Reported; `writ lint` still exits 0.
    Warn,
    /// Reported, and `writ lint` exits 1.
    Deny,
}

/// Per-lint levels from `CODE=LEVEL` settings (`no_workload_identity=warn`,
/// `writ::lint::dead_permit=deny`); the lints not named are `deny`.
#[derive(Debug, Clone, Default)]
pub struct Levels {
    set: Vec<(String, Level)>,
}

impl Levels {
    /// Reads `CODE=LEVEL` settings, refusing an unknown lint or level.
    pub fn parse<S: AsRef<str>>(settings: &[S]) -> Result<Levels, String> {
        let mut set = Vec::new();
        for setting in settings {
            let setting = setting.as_ref();
            let (code, level) = setting
                .split_once('=')
                .ok_or_else(|| format!("`{setting}`: write a lint level as `CODE=allow|warn|deny`"))?;
            let code = format!("writ::lint::{}", code.trim().trim_start_matches("writ::lint::"));
            if !CODES.contains(&code.as_str()) {
                let short: Vec<&str> = CODES.iter().map(|c| c.trim_start_matches("writ::lint::")).collect();
                let name = code.trim_start_matches("writ::lint::");
                let hint = crate::suggest::closest(name, short.iter().copied())
                    .map_or_else(|| format!("the lints are {}", short.join(", ")), |c| format!("did you mean `{c}`?"));
                return Err(format!("`{name}` is not a lint; {hint}"));
            }
            let level = match level.trim() {
                "allow" => Level::Allow,
                "warn" => Level::Warn,
                "deny" => Level::Deny,
                other => return Err(format!("`{other}` is not a lint level; the levels are allow, warn and deny")),
            };
            set.push((code, level));
        }
        Ok(Levels { set })
    }

    /// The level of a lint: the last setting for it, else `deny`.
    pub fn of(&self, code: &str) -> Level {
        self.set
            .iter()
            .rev()
            .find(|(c, _)| c == code)
            .map_or(Level::Deny, |(_, level)| *level)
    }
}

/// The path of a free attribute an expression reads as a whole
/// (`subject.repository`, `context.pipeline.protected`).
fn free_path(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Attr(Attr::Extra(dim, name)) => Some(format!("{}.{name}", dim.name())),
        ExprKind::Field(base, field) => free_path(base).map(|p| format!("{p}.{field}")),
        _ => None,
    }
}

/// Every free attribute `expr` reads, with where.
fn free_reads(expr: &Expr, out: &mut Vec<(String, Span)>) {
    if let Some(path) = free_path(expr) {
        out.push((path, expr.span));
        return;
    }
    match &expr.kind {
        ExprKind::Has(Attr::Extra(dim, name), rest) => {
            let mut path = format!("{}.{name}", dim.name());
            for field in rest {
                path.push('.');
                path.push_str(field);
            }
            out.push((path, expr.span));
        }
        ExprKind::Field(inner, _)
        | ExprKind::Not(inner)
        | ExprKind::Until(inner)
        | ExprKind::HasIn(inner, _)
        | ExprKind::DataKey(inner) => free_reads(inner, out),
        ExprKind::Matches(inner, _) => free_reads(inner, out),
        ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
            free_reads(a, out);
            free_reads(b, out);
        }
        ExprKind::Call(_, args) => args.iter().for_each(|a| free_reads(a, out)),
        ExprKind::Quantifier { list, body, .. } => {
            free_reads(list, out);
            free_reads(body, out);
        }
        _ => {}
    }
}

/// The free attributes a rule reads: its condition, its templates and a
/// computed TTL cap.
fn rule_reads(rule: &Rule) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    rule.conjuncts.iter().for_each(|c| free_reads(c, &mut out));
    let mut templates: Vec<&Template> = rule.because.iter().collect();
    match &rule.kind {
        RuleKind::Permit { grant, obligations, .. } => {
            templates.extend(grant);
            templates.extend(obligations.iter().filter_map(|o| match o {
                crate::ir::Obligation::Audience(t) => Some(t),
                _ => None,
            }));
        }
        RuleKind::LimitScope(list) => templates.extend(list),
        RuleKind::Require(crate::ir::Obligation::Audience(t)) => templates.push(t),
        RuleKind::LimitTtl(TtlCap::Computed(cap)) => free_reads(cap, &mut out),
        _ => {}
    }
    for template in templates {
        for part in &template.parts {
            if let TemplatePart::Hole(hole) = part {
                free_reads(hole, &mut out);
            }
        }
    }
    out
}

/// `writ::lint::undeclared_attribute`: the free attributes no declaration
/// covers that look like typos, read once in the whole set or one or two
/// edits from another one read; each with the index of the rule of its
/// first read.
fn undeclared(set: &PolicySet) -> Vec<(usize, Finding)> {
    // Path, first read (rule, span), reads.
    let mut paths: Vec<(String, usize, Span, usize)> = Vec::new();
    for (index, rule) in set.rules.iter().enumerate() {
        for (path, span) in rule_reads(rule) {
            match paths.iter_mut().find(|(p, ..)| *p == path) {
                Some((.., count)) => *count += 1,
                None => paths.push((path, index, span, 1)),
            }
        }
    }
    let declared = |path: &str| {
        let parts: Vec<&str> = path.split('.').collect();
        set.attributes.iter().any(|d| {
            d.path.split('.').zip(&parts).all(|(a, b)| a == *b)
        })
    };
    // A read of `context.ticket` and one of `context.ticket.id` support
    // each other: one is on the way to the other.
    let related = |a: &str, b: &str| {
        a == b || a.strip_prefix(b).is_some_and(|r| r.starts_with('.'))
            || b.strip_prefix(a).is_some_and(|r| r.starts_with('.'))
    };
    let support: Vec<usize> = paths
        .iter()
        .map(|(path, ..)| {
            paths
                .iter()
                .filter(|(other, ..)| related(path, other))
                .map(|(.., n)| n)
                .sum()
        })
        .collect();
    let mut out = Vec::new();
    for (at, (path, index, span, _)) in paths.iter().enumerate() {
        let count = &support[at];
        if declared(path) {
            continue;
        }
        // The nearest other path read more often (or as often), a likelier
        // spelling.
        // On a tie, the one read first is taken as the spelling meant.
        let near = paths
            .iter()
            .zip(&support)
            .enumerate()
            .filter(|(other_at, ((other, ..), n))| {
                !related(path, other) && (**n > *count || (**n == *count && *other_at < at))
            })
            .map(|(_, ((other, ..), _))| (crate::suggest::distance(path, other), other))
            .filter(|(d, _)| *d <= 2)
            .min();
        let (reason, likely) = match (near, count) {
            (Some((_, other)), _) => (
                format!("is one or two edits from `{other}`, read elsewhere"),
                other.as_str(),
            ),
            (None, 1) => (
                "is read only once in the whole policy set".to_owned(),
                path.as_str(),
            ),
            _ => continue,
        };
        let rule = &set.rules[*index];
        out.push((
            *index,
            finding(
                rule,
                *span,
                Lint::UndeclaredAttribute {
                    path: path.clone(),
                    reason,
                    span: span.source_span(),
                    help: format!(
                        "a misspelt attribute is missing from every request, so its rule never matches; declare the attributes the file reads (`attribute {likely}: string \"what it is\";`) and the checker reports any other"
                    ),
                },
            ),
        ));
    }
    out
}

/// The findings about one rule.
fn lint_rule(set: &PolicySet, facts: &[Facts<'_>], index: usize, findings: &mut Vec<Finding>) {
    let rule = &set.rules[index];
    let keyword = Places::keyword(rule);
    match &rule.kind {
        RuleKind::Permit { grant, ttl, .. } => {
            let dead = dead(rule, &facts[index], Places::condition(rule));
            if dead.is_some() {
                findings.extend(dead);
                return;
            }
            findings.extend(overridden(set, facts, index, keyword));
            if !grant.is_empty() && ttl.is_none() {
                findings.extend(unbounded(set, facts, index, Places::grant(rule)));
            }
            findings.extend(broad(rule, &facts[index], grant));
            findings.extend(no_identity(set, facts, index, keyword));
        }
        // A cap computed per request is compared with nothing.
        RuleKind::LimitTtl(cap) => {
            if let Some(cap) = cap.constant() {
                findings.extend(redundant(set, facts, index, cap, keyword));
            }
        }
        _ => {}
    }
}

/// The findings as diagnostics with their source excerpts.
pub fn diagnostics(engine: &Engine, findings: &[Finding]) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    for finding in findings {
        diagnostics.push(
            finding.lint.clone(),
            engine.sources().get(finding.span.file),
        );
    }
    diagnostics
}

/// Where a rule's keyword, condition and grant are written, from the
/// spans the checker keeps in the IR: a missing condition or grant falls
/// back to the keyword.
struct Places;

impl Places {
    fn keyword(rule: &Rule) -> Span {
        rule.keyword_span
    }

    fn condition(rule: &Rule) -> Span {
        rule.condition_span.unwrap_or(rule.keyword_span)
    }

    fn grant(rule: &Rule) -> Span {
        rule.grant_span.unwrap_or(rule.keyword_span)
    }
}

/// What a rule's condition says about requests it matches.
struct Facts<'r> {
    conjuncts: &'r [Expr],
    /// Per attribute, the values all its tests together let through.
    tests: Vec<(Attr, Values)>,
    /// Per conjunct, what [`Facts::implies`] asks of it, worked out once
    /// rather than for every pair of rules compared.
    each: Vec<Conjunct>,
}

/// One conjunct, as [`Facts::implies`] reads it.
struct Conjunct {
    /// True whatever the request.
    always: bool,
    /// Its test ([`test_of`]), if it is one.
    test: Option<(Attr, Values)>,
}

impl<'r> Facts<'r> {
    fn of(rule: &'r Rule) -> Facts<'r> {
        let mut tests: Vec<(Attr, Values)> = Vec::new();
        let mut each = Vec::with_capacity(rule.conjuncts.len());
        for conjunct in &rule.conjuncts {
            let test = test_of(conjunct);
            if let Some((attr, values)) = &test {
                match tests.iter_mut().find(|(a, _)| a == attr) {
                    Some((_, existing)) => *existing = existing.intersect(values),
                    None => tests.push((attr.clone(), values.clone())),
                }
            }
            each.push(Conjunct {
                always: constant(conjunct) == Some(Lit::Bool(true)),
                test,
            });
        }
        Facts {
            conjuncts: &rule.conjuncts,
            tests,
            each,
        }
    }

    fn values(&self, attr: &Attr) -> Option<&Values> {
        self.tests.iter().find(|(a, _)| a == attr).map(|(_, v)| v)
    }

    /// True when every request these facts match also passes conjunct
    /// `at` of `other`.
    fn implies(&self, other: &Facts<'_>, at: usize) -> bool {
        let (Some(conjunct), Some(known)) = (other.conjuncts.get(at), other.each.get(at)) else {
            return false;
        };
        if known.always {
            return true;
        }
        if self.conjuncts.iter().any(|c| same(c, conjunct)) {
            return true;
        }
        if let ExprKind::Has(attr, fields) = &conjunct.kind {
            // A test that held read the attribute, so it was there.
            if fields.is_empty() && self.values(attr).is_some() {
                return true;
            }
        }
        match &known.test {
            Some((attr, wider)) => self.values(attr).is_some_and(|mine| mine.within(wider)),
            None => false,
        }
    }

    /// True when every conjunct of `other` follows from these facts.
    fn implies_all(&self, other: &Facts<'_>) -> bool {
        (0..other.conjuncts.len()).all(|at| self.implies(other, at))
    }

    /// True when no request can pass both these facts and `other`'s.
    fn excludes(&self, other: &Facts<'_>) -> bool {
        self.tests.iter().any(|(attr, mine)| {
            other
                .values(attr)
                .is_some_and(|theirs| mine.intersect(theirs).is_empty())
        })
    }
}

/// Structural equality, ignoring where things are written.
fn same(a: &Expr, b: &Expr) -> bool {
    use ExprKind as K;
    match (&a.kind, &b.kind) {
        (K::Lit(x), K::Lit(y)) => x == y,
        (K::Attr(x), K::Attr(y)) => x == y,
        (K::Local(x), K::Local(y)) => x == y,
        (K::Data(x), K::Data(y)) => x == y,
        (K::Field(x, f), K::Field(y, g)) => f == g && same(x, y),
        (K::Index(x, i), K::Index(y, j)) => same(x, y) && same(i, j),
        (K::Call(f, xs), K::Call(g, ys)) => {
            f == g && xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (K::Not(x), K::Not(y)) => same(x, y),
        (K::Binary(o, x1, x2), K::Binary(p, y1, y2)) => o == p && same(x1, y1) && same(x2, y2),
        (K::Matches(x, g), K::Matches(y, h)) => g.source == h.source && same(x, y),
        (K::Has(x, f), K::Has(y, g)) => x == y && f == g,
        (
            K::Quantifier { all, list, body },
            K::Quantifier {
                all: all2,
                list: list2,
                body: body2,
            },
        ) => all == all2 && same(list, list2) && same(body, body2),
        _ => false,
    }
}

/// The value of an expression that reads nothing from the request.
fn constant(expr: &Expr) -> Option<Lit> {
    use ExprKind as K;
    match &expr.kind {
        K::Lit(lit) => Some(lit.clone()),
        K::Not(inner) => match constant(inner)? {
            Lit::Bool(b) => Some(Lit::Bool(!b)),
            _ => None,
        },
        K::Matches(inner, glob) => match constant(inner)? {
            Lit::Str(text) => Some(Lit::Bool(glob.is_match(&text))),
            _ => None,
        },
        K::Binary(op, left, right) => {
            // `false and x` is false and `true or x` is true whatever x is.
            let l = constant(left);
            // Past `and` and `or`, a side that reads the request makes the
            // whole read it: the right side (often a list, which would be
            // copied) is not worked out.
            if l.is_none() && !matches!(op, BinOp::And | BinOp::Or) {
                return None;
            }
            let r = constant(right);
            match op {
                BinOp::And if l == Some(Lit::Bool(false)) || r == Some(Lit::Bool(false)) => {
                    return Some(Lit::Bool(false))
                }
                BinOp::Or if l == Some(Lit::Bool(true)) || r == Some(Lit::Bool(true)) => {
                    return Some(Lit::Bool(true))
                }
                _ => {}
            }
            let (l, r) = (l?, r?);
            let ordered = |l: &Lit, r: &Lit| -> Option<std::cmp::Ordering> {
                match (l, r) {
                    (Lit::Num(a), Lit::Num(b)) => a.partial_cmp(b),
                    (Lit::Dur(a), Lit::Dur(b)) => Some(a.cmp(b)),
                    (Lit::Level(a), Lit::Level(b)) => Some(a.cmp(b)),
                    _ => None,
                }
            };
            let value = match op {
                BinOp::And | BinOp::Or => match (&l, &r) {
                    (Lit::Bool(a), Lit::Bool(b)) => {
                        if *op == BinOp::And {
                            *a && *b
                        } else {
                            *a || *b
                        }
                    }
                    _ => return None,
                },
                BinOp::Eq | BinOp::Ne if l.ty() == r.ty() => (l == r) == (*op == BinOp::Eq),
                BinOp::In | BinOp::NotIn => match &r {
                    Lit::List(items) => items.contains(&l) == (*op == BinOp::In),
                    _ => return None,
                },
                BinOp::Lt => ordered(&l, &r)?.is_lt(),
                BinOp::Le => ordered(&l, &r)?.is_le(),
                BinOp::Gt => ordered(&l, &r)?.is_gt(),
                BinOp::Ge => ordered(&l, &r)?.is_ge(),
                _ => return None,
            };
            Some(Lit::Bool(value))
        }
        _ => None,
    }
}

fn mentions_identity(expr: &Expr) -> bool {
    use ExprKind as K;
    let identity = |attr: &Attr| matches!(attr, Attr::SubjectAuth | Attr::SubjectAttested);
    match &expr.kind {
        K::Attr(attr) | K::Has(attr, _) => identity(attr),
        K::Lit(_) | K::Local(_) | K::Data(_) => false,
        K::Field(inner, _)
        | K::Not(inner)
        | K::Matches(inner, _)
        | K::Until(inner)
        | K::HasIn(inner, _)
        | K::DataKey(inner) => mentions_identity(inner),
        K::Index(a, b) | K::Binary(_, a, b) => mentions_identity(a) || mentions_identity(b),
        K::Call(_, args) => args.iter().any(mentions_identity),
        K::Quantifier { list, body, .. } => mentions_identity(list) || mentions_identity(body),
    }
}

fn duration(seconds: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut rest = seconds;
    let mut out = String::new();
    for (size, unit) in units {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

fn finding(rule: &Rule, span: Span, lint: Lint) -> Finding {
    Finding {
        rule: rule.id.to_string(),
        span,
        lint,
    }
}

fn dead(rule: &Rule, facts: &Facts<'_>, condition: Span) -> Option<Finding> {
    let help = "fix the condition, or delete the permit".to_owned();
    let make = |span: Span, reason: String| {
        finding(
            rule,
            span,
            Lint::DeadPermit {
                permit: rule.id.to_string(),
                span: span.source_span(),
                reason,
                help: help.clone(),
            },
        )
    };
    if let Some(conjunct) = rule
        .conjuncts
        .iter()
        .find(|c| constant(c) == Some(Lit::Bool(false)))
    {
        return Some(make(conjunct.span, "this is always false".to_owned()));
    }
    if let Some((attr, _)) = facts.tests.iter().find(|(_, values)| values.is_empty()) {
        let reason = format!("`{}` cannot pass all of these tests at once", attr.path());
        return Some(make(condition, reason));
    }
    for (index, conjunct) in rule.conjuncts.iter().enumerate() {
        let ExprKind::Not(inner) = &conjunct.kind else {
            continue;
        };
        if rule
            .conjuncts
            .iter()
            .enumerate()
            .any(|(i, c)| i != index && same(c, inner))
        {
            return Some(make(condition, "a test and its negation".to_owned()));
        }
    }
    None
}

fn overridden(
    set: &PolicySet,
    facts: &[Facts<'_>],
    index: usize,
    keyword: Span,
) -> Option<Finding> {
    let permit = &set.rules[index];
    let (forbid_index, forbid) = set.rules.iter().enumerate().find(|(i, r)| {
        matches!(r.kind, RuleKind::Forbid) && facts[index].implies_all(&facts[*i])
    })?;
    let help = if forbid.conjuncts.is_empty() {
        format!(
            "`{}` ({}) has no condition, so it denies every request",
            forbid.id, forbid.location
        )
    } else {
        let tests: Vec<&str> = set.rules[forbid_index]
            .conjunct_text
            .iter()
            .map(Name::as_str)
            .collect();
        format!(
            "every request that passes this permit also passes `{}` ({}): {}; narrow the forbid or delete the permit",
            forbid.id,
            forbid.location,
            tests.join(" and ")
        )
    };
    Some(finding(
        permit,
        keyword,
        Lint::OverriddenPermit {
            permit: permit.id.to_string(),
            forbid: forbid.id.to_string(),
            span: keyword.source_span(),
            help,
        },
    ))
}

fn unbounded(set: &PolicySet, facts: &[Facts<'_>], index: usize, grant: Span) -> Option<Finding> {
    let bounded = set.rules.iter().enumerate().any(|(i, r)| {
        matches!(r.kind, RuleKind::LimitTtl(_)) && facts[index].implies_all(&facts[i])
    });
    if bounded {
        return None;
    }
    let permit = &set.rules[index];
    Some(finding(
        permit,
        grant,
        Lint::UnboundedTtl {
            permit: permit.id.to_string(),
            span: grant.source_span(),
            help: "add `for 15m` (or another short duration) to the grant, or a `limit ttl` that applies whenever this permit does".to_owned(),
        },
    ))
}

/// `**` or `*` verb in a grant template, judged on its literal text.
fn broadness(template: &Template) -> Option<&'static str> {
    let skeleton: String = template
        .parts
        .iter()
        .map(|p| match p {
            TemplatePart::Text(text) => text.to_string(),
            TemplatePart::Hole(_) => "\u{1}".to_owned(),
        })
        .collect();
    let (verb, resource) = skeleton.split_once(':')?;
    if verb == "*" {
        return Some("`*` grants every verb");
    }
    resource
        .split('/')
        .any(|segment| segment == "**")
        .then_some("`**` grants everything below")
}

fn broad(rule: &Rule, facts: &Facts<'_>, grant: &[Template]) -> Option<Finding> {
    let low = Values::In(
        [Sensitivity::Public, Sensitivity::Internal]
            .iter()
            .map(|l| l.as_str().to_owned())
            .collect(),
    );
    if facts
        .values(&Attr::Sensitivity)
        .is_some_and(|v| v.within(&low))
    {
        return None;
    }
    let (template, what) = grant
        .iter()
        .find_map(|t| broadness(t).map(|what| (t, what)))?;
    Some(finding(
        rule,
        template.span,
        Lint::BroadGrant {
            permit: rule.id.to_string(),
            item: template.source.to_string(),
            span: template.span.source_span(),
            what: what.to_owned(),
            help:
                "grant named resources and verbs, or add `sensitivity <= internal` to the condition"
                    .to_owned(),
        },
    ))
}

fn no_identity(
    set: &PolicySet,
    facts: &[Facts<'_>],
    index: usize,
    keyword: Span,
) -> Option<Finding> {
    let permit = &set.rules[index];
    if permit.conjuncts.iter().any(mentions_identity) {
        return None;
    }
    // A forbid that tests identity and otherwise applies whenever this
    // permit does turns away every request without a workload identity.
    let guarded = set.rules.iter().zip(facts).any(|(rule, theirs)| {
        matches!(rule.kind, RuleKind::Forbid)
            && rule.conjuncts.iter().any(mentions_identity)
            && rule
                .conjuncts
                .iter()
                .enumerate()
                .all(|(at, c)| mentions_identity(c) || facts[index].implies(theirs, at))
    });
    if guarded {
        return None;
    }
    Some(finding(
        permit,
        keyword,
        Lint::NoWorkloadIdentity {
            permit: permit.id.to_string(),
            span: keyword.source_span(),
            help: "test `subject.attested == true` or `subject.auth in [...]` in the permit, or add a forbid such as `forbid if subject.attested != true;`".to_owned(),
        },
    ))
}

fn redundant(
    set: &PolicySet,
    facts: &[Facts<'_>],
    index: usize,
    cap: u64,
    keyword: Span,
) -> Option<Finding> {
    let limit = &set.rules[index];
    let mine = &facts[index];
    // A cap at most as high that applies whenever this one does.
    let lower = set.rules.iter().enumerate().find(|(i, rule)| {
        let RuleKind::LimitTtl(TtlCap::Const(other)) = rule.kind else {
            return false;
        };
        if *i == index || other > cap || !mine.implies_all(&facts[*i]) {
            return false;
        }
        // Two equal caps under the same conditions: report the second.
        let mutual = other == cap && facts[*i].implies_all(mine);
        !mutual || *i < index
    });
    let reason_help = if let Some((_, other)) = lower {
        let RuleKind::LimitTtl(TtlCap::Const(other_cap)) = other.kind else {
            return None;
        };
        Some((
            format!(
                "`{}` caps at {} whenever this applies",
                other.id,
                duration(other_cap)
            ),
            format!(
                "`{}` ({}) already caps the TTL at {}; delete this limit or lower its cap",
                other.id,
                other.location,
                duration(other_cap)
            ),
        ))
    } else {
        // Every permit that can match alongside it asks for no more.
        let permits: Vec<(&Rule, Option<u64>)> = set
            .rules
            .iter()
            .enumerate()
            .filter(|(i, r)| matches!(r.kind, RuleKind::Permit { .. }) && !facts[*i].excludes(mine))
            .map(|(_, r)| match r.kind {
                RuleKind::Permit { ttl, .. } => (r, ttl),
                _ => (r, None),
            })
            .collect();
        let longest = permits
            .iter()
            .map(|(_, ttl)| *ttl)
            .try_fold(0u64, |max, ttl| ttl.map(|t| max.max(t)));
        match longest {
            Some(longest) if !permits.is_empty() && longest <= cap => Some((
                format!("no permit grants more than {}", duration(longest)),
                format!(
                    "every permit that can match with it grants at most {} (`for`), so a cap of {} never applies; lower the cap or delete the limit",
                    duration(longest),
                    duration(cap)
                ),
            )),
            _ => None,
        }
    };
    let (reason, help) = reason_help?;
    Some(finding(
        limit,
        keyword,
        Lint::RedundantLimit {
            limit: limit.id.to_string(),
            span: keyword.source_span(),
            reason,
            help,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(policy: &str) -> Vec<String> {
        let engine = match Engine::compile([("t.writ", policy)], None) {
            Ok(engine) => engine,
            Err(diagnostics) => panic!("does not compile: {diagnostics}"),
        };
        lint(&engine).iter().map(|f| f.lint.code_name()).collect()
    }

    const GUARD: &str = "forbid if subject.attested != true;\n";

    #[test]
    fn a_clean_permit_is_quiet() {
        let policy = format!("{GUARD}permit if action == \"read\" grant [\"read:x\"] for 5m;");
        assert_eq!(codes(&policy), Vec::<String>::new());
    }

    #[test]
    fn implication_through_value_sets() {
        let policy = format!(
            "{GUARD}forbid if action in [\"write\", \"delete\"];\npermit if action == \"write\" and subject.kind != \"agent\" grant [\"write:x\"] for 5m;"
        );
        assert_eq!(codes(&policy), ["writ::lint::overridden_permit"]);
        let policy = format!(
            "{GUARD}forbid if subject.kind != \"ci\";\npermit if subject.kind == \"agent\" grant [\"write:x\"] for 5m;"
        );
        assert_eq!(codes(&policy), ["writ::lint::overridden_permit"]);
        let policy = format!(
            "{GUARD}forbid if subject.kind == \"agent\";\npermit if subject.kind != \"ci\" grant [\"write:x\"] for 5m;"
        );
        assert_eq!(codes(&policy), Vec::<String>::new());
    }

    #[test]
    fn negations_and_constants_make_dead_permits() {
        let policy = format!("{GUARD}permit if action == \"read\" and action != \"read\";");
        assert_eq!(codes(&policy), ["writ::lint::dead_permit"]);
        let policy =
            format!("{GUARD}const enabled = false;\npermit if enabled and action == \"read\";");
        assert_eq!(codes(&policy), ["writ::lint::dead_permit"]);
        let policy = format!("{GUARD}permit if context.x and not context.x;");
        assert_eq!(codes(&policy), ["writ::lint::dead_permit"]);
        let policy = format!("{GUARD}permit if subject.shared and subject.shared == false;");
        assert_eq!(codes(&policy), ["writ::lint::dead_permit"]);
    }

    #[test]
    fn a_limit_that_applies_whenever_the_permit_does_bounds_it() {
        let policy = format!(
            "{GUARD}limit ttl 10m if subject.kind == \"agent\";\npermit if subject.kind == \"agent\" grant [\"read:x\"];"
        );
        assert_eq!(codes(&policy), Vec::<String>::new());
        let policy = format!(
            "{GUARD}limit ttl 10m if subject.kind == \"agent\";\npermit if action == \"read\" grant [\"read:x\"];"
        );
        assert_eq!(codes(&policy), ["writ::lint::unbounded_ttl"]);
    }

    #[test]
    fn broad_grants_need_low_sensitivity() {
        let policy =
            format!("{GUARD}permit if action == \"read\" grant [\"read:db://x/**\"] for 5m;");
        assert_eq!(codes(&policy), ["writ::lint::broad_grant"]);
        let policy = format!("{GUARD}permit if action == \"read\" grant [\"*:db://x\"] for 5m;");
        assert_eq!(codes(&policy), ["writ::lint::broad_grant"]);
        let policy = format!(
            "{GUARD}permit if action == \"read\" and sensitivity in [public, internal] grant [\"*:db://x/**\"] for 5m;"
        );
        assert_eq!(codes(&policy), Vec::<String>::new());
        let policy = format!("{GUARD}permit if action == \"read\" grant [\"{{action}}:db://{{resource.id}}/*\"] for 5m;");
        assert_eq!(codes(&policy), Vec::<String>::new());
    }

    #[test]
    fn identity_checks_in_the_permit_or_a_guarding_forbid() {
        assert_eq!(
            codes("permit if action == \"read\" grant [\"read:x\"] for 5m;"),
            ["writ::lint::no_workload_identity"]
        );
        assert_eq!(
            codes("permit if action == \"read\" and subject.auth == \"spiffe\" grant [\"read:x\"] for 5m;"),
            Vec::<String>::new()
        );
        // A forbid that only guards writes does not guard reads.
        assert_eq!(
            codes("forbid if action == \"write\" and subject.attested != true;\npermit if action == \"read\" grant [\"read:x\"] for 5m;"),
            ["writ::lint::no_workload_identity"]
        );
        assert_eq!(
            codes("forbid if action == \"read\" and subject.attested != true;\npermit if action == \"read\" grant [\"read:x\"] for 5m;"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn redundant_limits() {
        let base = format!("{GUARD}permit if action == \"read\" grant [\"read:x\"] for 2h;\n");
        assert_eq!(
            codes(&format!(
                "{base}limit ttl 30m;\nlimit ttl 1h if subject.kind == \"agent\";"
            )),
            ["writ::lint::redundant_limit"]
        );
        assert_eq!(
            codes(&format!(
                "{base}@id(\"a\") limit ttl 30m;\n@id(\"b\") limit ttl 30m;"
            )),
            ["writ::lint::redundant_limit"]
        );
        assert_eq!(
            codes(&format!("{base}limit ttl 3h;")),
            ["writ::lint::redundant_limit"]
        );
        assert_eq!(
            codes(&format!(
                "{base}limit ttl 1h;\nlimit ttl 30m if subject.kind == \"agent\";"
            )),
            Vec::<String>::new()
        );
        // A permit that cannot match when the limit applies does not count.
        let policy = format!(
            "{GUARD}permit if subject.kind == \"ci\" grant [\"read:x\"] for 2h;\npermit if subject.kind == \"agent\" grant [\"read:x\"] for 5m;\nlimit ttl 10m if subject.kind == \"agent\";"
        );
        assert_eq!(codes(&policy), ["writ::lint::redundant_limit"]);
    }

    #[test]
    fn codes_lists_every_lint() {
        let span = SourceSpan::from((0, 0));
        let help = String::new();
        let all = [
            Lint::OverriddenPermit {
                permit: help.clone(),
                forbid: help.clone(),
                span,
                help: help.clone(),
            },
            Lint::DeadPermit {
                permit: help.clone(),
                span,
                reason: help.clone(),
                help: help.clone(),
            },
            Lint::UnboundedTtl {
                permit: help.clone(),
                span,
                help: help.clone(),
            },
            Lint::BroadGrant {
                permit: help.clone(),
                item: help.clone(),
                span,
                what: help.clone(),
                help: help.clone(),
            },
            Lint::NoWorkloadIdentity {
                permit: help.clone(),
                span,
                help: help.clone(),
            },
            Lint::RedundantLimit {
                limit: help.clone(),
                span,
                reason: help.clone(),
                help: help.clone(),
            },
            Lint::UndeclaredAttribute {
                path: help.clone(),
                span,
                reason: help.clone(),
                help: help.clone(),
            },
            Lint::BadAllow {
                reason: help.clone(),
                span,
            },
        ];
        let codes: Vec<String> = all.iter().map(Lint::code_name).collect();
        assert_eq!(codes, CODES);
    }

    #[test]
    fn allow_silences_one_lint_on_one_rule() {
        let base = format!("{GUARD}permit if action == \"read\" grant [\"read:x\"] for 15m;\n");
        assert_eq!(
            codes(&format!(
                "{base}@allow(\"writ::lint::redundant_limit\") limit ttl 1h;"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            codes(&format!("{base}@allow(\"redundant_limit\") limit ttl 1h;")),
            Vec::<String>::new()
        );
        assert_eq!(
            codes(&format!("{base}@allow(\"broad_grant\") limit ttl 1h;")),
            ["writ::lint::redundant_limit"]
        );
        // A reason beside the code is fine, and silences nothing by itself.
        assert_eq!(
            codes(&format!(
                "{base}@allow(\"redundant_limit\", \"the backstop when all else fails\") limit ttl 1h;"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            codes(&format!("{base}@allow(\"the backstop when all else fails\") limit ttl 1h;")),
            ["writ::lint::redundant_limit"]
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(60), "1m");
        assert_eq!(duration(0), "0s");
    }
}
