//! The checker: resolves names, infers types, folds constants and reports
//! every mistake it can find, then lowers the AST to the [`ir`] the compiler
//! and the evaluator use.
//!
//! [`ir`]: crate::ir
//!
//! One job a module: this one holds the checker's state and walks the
//! files; `rule` lowers constants and rules (and finds conditions that
//! can never hold, with `crate::allowed`); `expr` lowers names, paths,
//! calls and quantifiers; `operators` the binary operators and their type
//! rules; `template` strings with holes (split and lexed by the lexer);
//! `ids` makes generated ids and the condition texts of traces;
//! `suggest` answers "did you mean"; `error` holds the diagnostics.

mod error;
mod expr;
mod ids;
mod declare;
mod operators;
mod rule;

mod template;

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::Value;

use crate::ast::{self, BinOp, ExprKind as A, Mistake};
use crate::diagnostics::Diagnostics;
use crate::ir::{Dim, Lit, PolicySet, Ty};
use crate::name::Name;
use crate::sensitivity::Sensitivity;
use crate::source::{Sources, Span};

pub use error::CheckError;

struct Const {
    value: Lit,
    used_data: bool,
}

struct Checker<'s> {
    sources: &'s Sources,
    diagnostics: Diagnostics,
    consts: IndexMap<String, Const>,
    data: IndexMap<String, Value>,
    locals: Vec<(String, Ty)>,
    current_file: crate::source::FileId,
    /// `permit`, `forbid`, ...: one shared string per rule kind.
    kind_names: Vec<Name>,
    /// How deep [`Checker::expr`] is in the expression being lowered.
    depth: usize,
    /// The depth guard has reported the expression being lowered.
    too_deep: bool,
    /// The expression being lowered is compared with `sensitivity`, so an
    /// unknown name in it was meant as a level.
    expect_level: bool,
    /// The declared free attributes, with their paths split at the dots.
    declared: Vec<(Vec<String>, crate::schema::DeclaredAttr)>,
    /// The files that declare attributes: in them, every free attribute
    /// read must be declared.
    strict_files: Vec<crate::source::FileId>,
    /// Condition texts met so far, by the source text they are made from:
    /// a conjunct written the same way in many rules (`subject.attested
    /// == true`) shares one text instead of one allocation each.
    condition_texts: HashMap<&'s str, Name, crate::compile::BuildFnv>,
}

/// How deep the checker recurses into one expression. The parser's limits
/// keep parsed input below this (at most [`MAX_OPERATORS`] operators and
/// [`MAX_NESTING`] brackets an item); the guard makes sure that a syntax
/// tree built any other way, or a path around those limits, gets a
/// diagnostic instead of a stack overflow.
///
/// [`MAX_OPERATORS`]: crate::parser::limits::MAX_OPERATORS
/// [`MAX_NESTING`]: crate::parser::limits::MAX_NESTING
pub const MAX_DEPTH: usize =
    crate::parser::limits::MAX_OPERATORS + crate::parser::limits::MAX_NESTING + 16;

/// Checks parsed files (in order) against optional data, and lowers them.
/// The files are consumed: each rule's syntax tree is freed as soon as the
/// rule is lowered, so the two never take memory for a whole set at once.
pub fn check(
    sources: &Sources,
    files: Vec<ast::File>,
    data: Option<&serde_json::Map<String, Value>>,
) -> (PolicySet, Diagnostics) {
    let mut checker = Checker {
        sources,
        diagnostics: Diagnostics::default(),
        consts: IndexMap::new(),
        data: data
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        locals: Vec::new(),
        current_file: crate::source::FileId(0),
        kind_names: Vec::new(),
        depth: 0,
        too_deep: false,
        expect_level: false,
        declared: Vec::new(),
        strict_files: Vec::new(),
        condition_texts: HashMap::default(),
    };
    for file in &files {
        checker.current_file = file.file;
        for mistake in &file.mistakes {
            let (found, instead, span) = match *mistake {
                Mistake::Assign(span) => ("=", "==", span),
                Mistake::AmpAmp(span) => ("&&", "and", span),
                Mistake::PipePipe(span) => ("||", "or", span),
                Mistake::Bang(span) => ("!", "not", span),
            };
            checker.error(
                span,
                CheckError::WrongOperator {
                    found,
                    instead,
                    span: span.source_span(),
                },
            );
        }
        for item in &file.items {
            match item {
                ast::Item::Const(decl) => checker.constant(decl),
                ast::Item::Attribute(decl) => checker.declare(decl),
                ast::Item::Rule(_) => {}
            }
        }
    }
    // Data keys that override constants are consumed; the rest stay data.
    let overridden: Vec<String> = checker
        .consts
        .iter()
        .filter(|(_, c)| c.used_data)
        .map(|(name, _)| name.clone())
        .collect();
    for name in overridden {
        checker.data.shift_remove(&name);
    }
    let rule_count = files
        .iter()
        .flat_map(|f| &f.items)
        .filter(|i| matches!(i, ast::Item::Rule(_)))
        .count();
    let mut rules = Vec::with_capacity(rule_count);
    let mut ids: HashMap<Name, Span> = HashMap::with_capacity(rule_count);
    for file in files {
        checker.current_file = file.file;
        for item in file.items {
            if let ast::Item::Rule(rule) = item {
                if let Some(rule) = checker.rule(&rule) {
                    if let Some(first) = ids.get(rule.id.as_str()) {
                        let first_span =
                            (first.file == rule.span.file).then(|| first.source_span());
                        checker.error(
                            rule.span,
                            CheckError::DuplicateId {
                                id: rule.id.to_string(),
                                first_at: checker.sources.location(*first),
                                span: rule.span.source_span(),
                                first: first_span,
                            },
                        );
                    } else {
                        ids.insert(rule.id.clone(), rule.span);
                    }
                    rules.push(rule);
                }
            }
        }
    }
    let data = checker.data;
    let consts = checker
        .consts
        .into_iter()
        .map(|(name, c)| (name, c.value))
        .collect();
    let attributes = checker.declared.into_iter().map(|(_, d)| d).collect();
    (
        PolicySet {
            rules,
            data,
            consts,
            attributes,
        },
        checker.diagnostics,
    )
}

impl Checker<'_> {
    pub(super) fn error(&mut self, span: Span, error: CheckError) {
        self.diagnostics.push(error, self.sources.get(span.file));
    }
}

/// Names a constant or a quantifier variable may not take.
pub(super) fn is_reserved(name: &str) -> bool {
    Dim::from_name(name).is_some()
        || Sensitivity::from_name(name).is_some()
        || matches!(name, "action" | "sensitivity")
}

pub(super) fn flatten_and<'e>(expr: &'e ast::Expr, out: &mut Vec<&'e ast::Expr>) {
    match &expr.kind {
        A::Binary(BinOp::And, operands) => {
            flatten_and(&operands.0, out);
            flatten_and(&operands.1, out);
        }
        _ => out.push(expr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `forbid if COND;` with the condition wrapped in `layers`
    /// `not`s built directly as a syntax tree, past the parser's limits.
    fn check_wrapped(layers: usize) -> Diagnostics {
        let mut sources = Sources::new();
        let text = "forbid if subject.attested;";
        let file = sources.add("deep.writ", text);
        let (mut parsed, diagnostics) = crate::parser::parse_file(file, sources.get(file));
        assert!(diagnostics.is_empty(), "{}", diagnostics.render(false));
        let Some(ast::Item::Rule(rule)) = parsed.items.first_mut() else {
            panic!("no rule parsed");
        };
        let Some(mut condition) = rule.condition.take() else {
            panic!("no condition parsed");
        };
        for _ in 0..layers {
            let span = condition.span;
            condition = ast::Expr::new(A::Not(Box::new(condition)), span);
        }
        rule.condition = Some(condition);
        check(&sources, vec![parsed], None).1
    }

    /// Checks one file; the rules that checked and the diagnostics.
    fn check_text(text: &str) -> (PolicySet, Diagnostics) {
        let mut sources = Sources::new();
        let file = sources.add("t.writ", text);
        let (parsed, diagnostics) = crate::parser::parse_file(file, sources.get(file));
        assert!(diagnostics.is_empty(), "{}", diagnostics.render(false));
        check(&sources, vec![parsed], None)
    }

    #[test]
    fn contradictions_intersect_every_test_of_an_attribute() {
        // Each pair of tests shares a value; the three together share none.
        let (_, d) = check_text(
            r#"forbid if action in ["a", "b"] and action in ["b", "c"] and action in ["c", "a"];"#,
        );
        assert_eq!(d.codes(), ["writ::check::never_holds"]);
        // One value is in all three.
        let (_, d) = check_text(
            r#"forbid if action in ["a", "b"] and action in ["b", "c"] and action in ["b", "a"];"#,
        );
        assert!(d.is_empty(), "{}", d.render(false));
        // A test on another attribute in between changes nothing, and the
        // first attribute (in the order written) whose tests allow nothing
        // is the one named.
        let (_, d) = check_text(
            r#"forbid if resource.kind == "x" and action == "a" and resource.kind == "y" and action == "b";"#,
        );
        assert_eq!(d.codes(), ["writ::check::never_holds"]);
        let rendered = d.render(false);
        assert!(rendered.contains("`resource.kind` cannot"), "{rendered}");
        // One test that allows nothing on its own.
        let (_, d) = check_text("forbid if sensitivity < public;");
        assert_eq!(d.codes(), ["writ::check::never_holds"]);
    }

    #[test]
    fn conjuncts_written_alike_share_one_text() {
        let (set, d) = check_text(
            "forbid if subject.attested == true and action == \"a\";\n\
             forbid if subject.attested == true and action == \"b\";\n\
             forbid if subject.attested  ==  true;",
        );
        assert!(d.is_empty(), "{}", d.render(false));
        let texts: Vec<&crate::ir::Rule> = set.rules.iter().collect();
        let first = &texts[0].conjunct_text[0];
        let second = &texts[1].conjunct_text[0];
        assert_eq!(first.as_str(), "subject.attested == true");
        assert!(std::ptr::eq(first.as_str(), second.as_str()));
        // Written otherwise, it has a text of its own, collapsed the same.
        let third = &texts[2].conjunct_text[0];
        assert_eq!(third.as_str(), "subject.attested == true");
        assert!(!std::ptr::eq(first.as_str(), third.as_str()));
        assert_eq!(texts[0].conjunct_text[1].as_str(), "action == \"a\"");
        assert_eq!(texts[1].conjunct_text[1].as_str(), "action == \"b\"");
    }

    #[test]
    fn the_depth_guard_refuses_trees_deeper_than_it_recurses() {
        // docs/language.md and docs/security.md name the limit.
        assert_eq!(MAX_DEPTH, 592);
        // Run where the guard's depth fits whatever the test harness gives
        // threads: the test is about the diagnostic, not the stack size.
        let work = || {
            let within = check_wrapped(MAX_DEPTH - 2);
            let beyond = check_wrapped(MAX_DEPTH + 100);
            (within, beyond)
        };
        let handle = std::thread::Builder::new()
            .stack_size(64 * 1024 * 1024)
            .spawn(work)
            .expect("spawn a thread");
        let (within, beyond) = handle.join().expect("no panic");
        assert!(within.is_empty(), "{}", within.render(false));
        assert_eq!(beyond.codes(), ["writ::check::nesting_too_deep"]);
        let rendered = beyond.render(false);
        assert!(
            rendered.contains(&format!("limit of {MAX_DEPTH} levels")),
            "{rendered}"
        );
    }
}
