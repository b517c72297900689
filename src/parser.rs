//! The parser facade: the one function the rest of the crate calls.
//!
//! lalrpop's generated module and its types stay private to this file, so
//! the parser could be replaced without touching any other phase.

use miette::Diagnostic;
use thiserror::Error;

use crate::ast::{File, Item};
use crate::diagnostics::Diagnostics;
use crate::lexer::{self, Token};
use crate::source::{FileId, SourceFile, Span};

#[allow(clippy::all, missing_docs, unused_qualifications, dead_code)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/writ.rs"));
}

/// The parser's user error type: writ's grammar raises none of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoError;

/// A syntax error the grammar recovered from.
pub type Recovered = lalrpop_util::ErrorRecovery<usize, Token, NoError>;

/// A syntax error.
#[derive(Debug, Clone, Error, Diagnostic)]
pub enum ParseError {
    /// `permit if ;`
    #[error("unexpected {found}")]
    #[diagnostic(code(writ::parse::unexpected_token), help("expected {expected}"))]
    UnexpectedToken {
        /// The token that was found, described for people.
        found: String,
        /// What the grammar could have accepted.
        expected: String,
        /// Where it is.
        #[label("unexpected here")]
        span: miette::SourceSpan,
    },
    /// `context.roles has "admin"`
    #[error("`has` takes an attribute name, not a string")]
    #[diagnostic(
        code(writ::parse::unexpected_token),
        help("`X has {value}` (no quotes) tests that `X` holds a field `{value}`; to test that a list holds the string, write `\"{value}\" in X`")
    )]
    HasString {
        /// The string's value.
        value: String,
        /// The string.
        #[label("a string after `has`")]
        span: miette::SourceSpan,
    },
    /// `permt if action == "read";`
    #[error("unexpected name `{name}`")]
    #[diagnostic(code(writ::parse::unexpected_token))]
    NotAnItem {
        /// The name.
        name: String,
        /// Where it is.
        #[label("an item cannot start here with a name")]
        span: miette::SourceSpan,
        /// A suggestion.
        #[help]
        help: String,
    },
    /// `permit if action ==`
    #[error("unexpected end of file")]
    #[diagnostic(code(writ::parse::unexpected_eof), help("expected {expected}"))]
    UnexpectedEof {
        /// What the grammar could have accepted.
        expected: String,
        /// The end of the file.
        #[label("the file ends here")]
        span: miette::SourceSpan,
    },
}

/// Limits that keep hostile or broken input from exhausting the stack or
/// the memory of the later (recursive) phases.
pub mod limits {
    /// Deepest nesting of `(`/`[` inside one item.
    pub const MAX_NESTING: usize = 64;
    /// Most operators (`and`, `or`, `not`, comparisons, `+`, `.`, `[`) in one item.
    pub const MAX_OPERATORS: usize = 512;
    /// Longest string literal, in bytes.
    pub const MAX_STRING: usize = 16 * 1024;
}

/// Input that is syntactically fine but too big to accept.
#[derive(Debug, Clone, Error, Diagnostic)]
pub enum LimitError {
    /// `((((((...))))))` nested more than 64 deep
    #[error("expression nests deeper than {limit} levels")]
    #[diagnostic(
        code(writ::limits::nesting_too_deep),
        help("split the condition into several rules or constants")
    )]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        #[label("too deep here")]
        span: miette::SourceSpan,
    },
    /// a rule with thousands of `and`s or a long `not not not ...` chain
    #[error("item has more than {limit} operators")]
    #[diagnostic(
        code(writ::limits::expression_too_long),
        help("split the condition into several rules")
    )]
    TooLong {
        /// The limit.
        limit: usize,
        /// The operator that crossed it.
        #[label("one operator too many")]
        span: miette::SourceSpan,
    },
    /// a string literal over 16 KiB
    #[error("string literal is longer than {limit} bytes")]
    #[diagnostic(code(writ::limits::string_too_long))]
    StringTooLong {
        /// The limit.
        limit: usize,
        /// The string.
        #[label("this string")]
        span: miette::SourceSpan,
    },
}

/// Counts a token stream against [`limits`] item by item (items end at
/// `;`).
struct LimitCounter {
    depth: usize,
    operators: usize,
    /// Where the text starts in its file (template holes start inside one).
    offset: usize,
}

impl LimitCounter {
    fn new(offset: usize) -> LimitCounter {
        LimitCounter {
            depth: 0,
            operators: 0,
            offset,
        }
    }

    /// The limit `token` breaks, if any.
    fn see(&mut self, token: &Token, at: Span) -> Option<LimitError> {
        let span = || {
            miette::SourceSpan::from((
                at.start as usize + self.offset,
                (at.end - at.start) as usize,
            ))
        };
        let too_long = |operators: usize| {
            (operators > limits::MAX_OPERATORS).then(|| LimitError::TooLong {
                limit: limits::MAX_OPERATORS,
                span: span(),
            })
        };
        match token {
            Token::Semi => {
                self.depth = 0;
                self.operators = 0;
            }
            Token::LParen | Token::LBracket => {
                // `a[b][c]...` nests without nesting brackets: count each
                // `[` as an operator too.
                if matches!(token, Token::LBracket) {
                    self.operators += 1;
                    if let Some(error) = too_long(self.operators) {
                        return Some(error);
                    }
                }
                self.depth += 1;
                if self.depth > limits::MAX_NESTING {
                    return Some(LimitError::TooDeep {
                        limit: limits::MAX_NESTING,
                        span: span(),
                    });
                }
            }
            Token::RParen | Token::RBracket => self.depth = self.depth.saturating_sub(1),
            Token::Str(text) if text.len() > limits::MAX_STRING => {
                return Some(LimitError::StringTooLong {
                    limit: limits::MAX_STRING,
                    span: span(),
                });
            }
            Token::And
            | Token::Or
            | Token::Not
            | Token::Bang
            | Token::AmpAmp
            | Token::PipePipe
            | Token::EqEq
            | Token::NotEq
            | Token::Lt
            | Token::Le
            | Token::Gt
            | Token::Ge
            | Token::Assign
            | Token::In
            | Token::Has
            | Token::Matches
            | Token::Plus
            | Token::Star
            | Token::Until
            | Token::Dot => {
                self.operators += 1;
                return too_long(self.operators);
            }
            _ => {}
        }
        None
    }
}

/// The first limit a token list breaks, if any.
fn check_limits(tokens: &[lexer::Spanned], offset: usize) -> Option<LimitError> {
    let mut counter = LimitCounter::new(offset);
    tokens.iter().find_map(|t| counter.see(&t.token, t.span))
}

/// Parses one file. Returns the AST (with everything that could be parsed)
/// and the diagnostics of the lexer and the parser, all of them.
///
/// The parser pulls tokens from the lexer one at a time, counting them
/// against [`limits`]; a file that breaks a limit is refused whole (the
/// later phases recurse over the tree), with every lexer error reported.
pub fn parse_file(file: FileId, source: &SourceFile) -> (File, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let mut lexed = lexer::Lexed::new(file, &source.text);
    let mut counter = LimitCounter::new(0);
    let mut refused = None;
    let mut docs: Vec<(Span, String)> = Vec::new();
    // Where the tokens right after a `has` start, to explain a string there.
    let mut after_has: Vec<usize> = Vec::new();
    let mut last_was_has = false;
    // A name that starts an item (only `attribute` may), with where it is
    // and where the token after it starts.
    let mut item_names: Vec<(usize, usize, String, usize)> = Vec::new();
    let mut at_item_start = true;
    let stream = std::iter::from_fn(|| loop {
        let t = lexed.next()?;
        if let Some(error) = counter.see(&t.token, t.span) {
            refused = Some(error);
            return Some(Err(NoError));
        }
        match t.token {
            Token::DocComment(text) => docs.push((t.span, text)),
            Token::Comment(_) => {}
            token => {
                if last_was_has {
                    after_has.push(t.span.start as usize);
                }
                last_was_has = matches!(token, Token::Has);
                if let Some(last) = item_names.last_mut() {
                    if last.3 == usize::MAX {
                        last.3 = t.span.start as usize;
                    }
                }
                if let (true, Token::Ident(name)) = (at_item_start, &token) {
                    item_names.push((t.span.start as usize, t.span.end as usize, name.to_string(), usize::MAX));
                }
                at_item_start = matches!(token, Token::Semi);
                return Some(Ok((t.span.start as usize, token, t.span.end as usize)));
            }
        }
    });
    let mut mistakes = Vec::new();
    let mut recovered = Vec::new();
    let result = generated::FileParser::new().parse(file, &mut mistakes, &mut recovered, stream);
    if let Some(error) = refused {
        lexed.by_ref().for_each(drop);
        for (_, error) in lexed.errors {
            diagnostics.push(error, source);
        }
        diagnostics.push(error, source);
        let empty = File {
            file,
            items: Vec::new(),
            mistakes: Vec::new(),
        };
        return (empty, diagnostics);
    }
    for (_, error) in lexed.errors {
        diagnostics.push(error, source);
    }
    let end = source.text.len();
    for error in recovered {
        diagnostics.push(convert_at(error.error, end, &after_has, &item_names), source);
    }
    let mut items = match result {
        Ok(items) => items,
        Err(error) => {
            diagnostics.push(convert_at(error, end, &after_has, &item_names), source);
            Vec::new()
        }
    };
    attach_docs(&mut items, &docs, &source.text);
    (
        File {
            file,
            items,
            mistakes,
        },
        diagnostics,
    )
}

/// Gives each rule the `///` lines directly above it (only blank space,
/// other doc lines or plain comments between them).
fn attach_docs(items: &mut [Item], docs: &[(Span, String)], text: &str) {
    for item in items {
        let Item::Rule(rule) = item else { continue };
        let mut lines = Vec::new();
        let mut cursor = rule.span.start as usize;
        // `docs` is in file order: only those that end before the rule count.
        let before = docs.partition_point(|(span, _)| span.end as usize <= cursor);
        for (span, line) in docs[..before].iter().rev() {
            let between = text.get(span.end as usize..cursor).unwrap_or("x");
            // Blank lines and plain `//` comment lines may sit in between.
            if !between
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with("//"))
            {
                break;
            }
            lines.push(line.as_str());
            cursor = span.start as usize;
        }
        if !lines.is_empty() {
            lines.reverse();
            rule.doc = Some(lines.join("\n"));
        }
    }
}

/// [`convert`], with a string right after `has` (its start in
/// `after_has`) explained as the mistake it is.
fn convert_at(
    error: lalrpop_util::ParseError<usize, Token, NoError>,
    end: usize,
    after_has: &[usize],
    item_names: &[(usize, usize, String, usize)],
) -> ParseError {
    // A name that starts an item and is not `attribute` is the mistake,
    // not the token after it (`permt if ...`).
    let at = match &error {
        lalrpop_util::ParseError::UnrecognizedToken {
            token: (start, ..), ..
        } => Some(*start),
        lalrpop_util::ParseError::UnrecognizedEof { location, .. } => Some(*location),
        _ => None,
    };
    if let Some(at) = at {
        let found = item_names
            .iter()
            .find(|(_, stop, name, next)| name != "attribute" && (*next == at || (*next == usize::MAX && *stop <= at)));
        if let Some((start, stop, name, _)) = found {
            let starts = ["const", "attribute", "permit", "forbid", "limit", "require"];
            let help = match crate::suggest::closest(name, starts) {
                Some(word) => format!("did you mean `{word}`?"),
                None => "an item starts with `const`, `attribute`, `permit`, `forbid`, `limit`, `require` or an annotation (`@id(...)`)".to_owned(),
            };
            return ParseError::NotAnItem {
                name: name.clone(),
                span: (*start, stop - start).into(),
                help,
            };
        }
    }
    if let lalrpop_util::ParseError::UnrecognizedToken {
        token: (start, Token::Str(value), stop),
        ..
    } = &error
    {
        if after_has.binary_search(start).is_ok() {
            return ParseError::HasString {
                value: value.clone(),
                span: (*start, stop - start).into(),
            };
        }
    }
    convert(error, end)
}

fn convert(error: lalrpop_util::ParseError<usize, Token, NoError>, end: usize) -> ParseError {
    use lalrpop_util::ParseError as E;
    match error {
        E::UnrecognizedToken {
            token: (start, token, stop),
            expected,
        } => ParseError::UnexpectedToken {
            found: describe(&token),
            expected: expected_list(&expected),
            span: (start, stop - start).into(),
        },
        E::ExtraToken {
            token: (start, token, stop),
        } => ParseError::UnexpectedToken {
            found: describe(&token),
            expected: "the end of the file".to_owned(),
            span: (start, stop - start).into(),
        },
        E::UnrecognizedEof { location, expected } => ParseError::UnexpectedEof {
            expected: expected_list(&expected),
            span: (location.min(end), 0).into(),
        },
        E::InvalidToken { location } => ParseError::UnexpectedToken {
            found: "input".to_owned(),
            expected: "a token".to_owned(),
            span: (location, 0).into(),
        },
        E::User { error: NoError } => ParseError::UnexpectedToken {
            found: "input".to_owned(),
            expected: "a token".to_owned(),
            span: (end, 0).into(),
        },
    }
}

/// How a token is named in a message.
pub fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("name `{name}`"),
        Token::Str(text) => format!("string \"{text}\""),
        Token::Num(n) => format!("number `{n}`"),
        Token::Dur(_) => "duration".to_owned(),
        Token::Comment(_) | Token::DocComment(_) => "comment".to_owned(),
        other => format!("`{}`", token_text(other)),
    }
}

fn token_text(token: &Token) -> &'static str {
    match token {
        Token::Const => "const",
        Token::Permit => "permit",
        Token::Forbid => "forbid",
        Token::Limit => "limit",
        Token::Require => "require",
        Token::If => "if",
        Token::Grant => "grant",
        Token::For => "for",
        Token::Because => "because",
        Token::Ttl => "ttl",
        Token::Scope => "scope",
        Token::Approval => "approval",
        Token::Revoke => "revoke",
        Token::On => "on",
        Token::Audience => "audience",
        Token::Log => "log",
        Token::And => "and",
        Token::Or => "or",
        Token::Not => "not",
        Token::In => "in",
        Token::Has => "has",
        Token::Matches => "matches",
        Token::Any => "any",
        Token::All => "all",
        Token::True => "true",
        Token::False => "false",
        Token::Until => "until",
        Token::At => "@",
        Token::LParen => "(",
        Token::RParen => ")",
        Token::LBracket => "[",
        Token::RBracket => "]",
        Token::Comma => ",",
        Token::Semi => ";",
        Token::Colon => ":",
        Token::Dot => ".",
        Token::Plus => "+",
        Token::Star => "*",
        Token::EqEq => "==",
        Token::NotEq => "!=",
        Token::Lt => "<",
        Token::Le => "<=",
        Token::Gt => ">",
        Token::Ge => ">=",
        Token::Assign => "=",
        Token::AmpAmp => "&&",
        Token::PipePipe => "||",
        Token::Bang => "!",
        Token::Ident(_)
        | Token::Str(_)
        | Token::Num(_)
        | Token::Dur(_)
        | Token::Comment(_)
        | Token::DocComment(_) => "token",
    }
}

fn expected_list(expected: &[String]) -> String {
    let mut names: Vec<String> = expected
        .iter()
        .map(|e| match e.as_str() {
            "IDENT" => "a name".to_owned(),
            "STR" => "a string".to_owned(),
            "NUM" => "a number".to_owned(),
            "DUR" => "a duration".to_owned(),
            quoted => format!("`{}`", quoted.trim_matches('"')),
        })
        .filter(|name| !matches!(name.as_str(), "`=`" | "`&&`" | "`||`" | "`!`"))
        .collect();
    names.dedup();
    // The end of a rule is the likeliest fix; name it first.
    if let Some(at) = names.iter().position(|n| n == "`;`") {
        let semi = names.remove(at);
        names.insert(0, semi);
    }
    // `until` is rarely the fix where a value is expected; name it last.
    if let Some(at) = names.iter().position(|n| n == "`until`") {
        let until = names.remove(at);
        names.push(until);
    }
    if names.len() > 8 {
        names.truncate(8);
        names.push("...".to_owned());
    }
    match names.len() {
        0 => "something else".to_owned(),
        1 => names.remove(0),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// Why a template hole is not an expression.
#[derive(Debug, Clone)]
pub enum HoleFault {
    /// It breaks one of the [`limits`], like any other item would.
    Limit(LimitError),
    /// It does not lex or parse as one expression.
    NotAnExpression,
}

/// Parses the tokens of a template hole (from
/// [`lexer::TemplateLexer`], spans already where each token is written) as
/// one expression, counting them against the same [`limits`] as a file's.
pub fn parse_hole(
    file: FileId,
    tokens: Vec<lexer::Spanned>,
) -> Result<crate::ast::Expr, HoleFault> {
    if let Some(error) = check_limits(&tokens, 0) {
        return Err(HoleFault::Limit(error));
    }
    if let Some(path) = name_path(file, &tokens) {
        return Ok(path);
    }
    let stream = tokens
        .into_iter()
        .filter(|t| !t.token.is_trivia())
        .map(|t| Ok::<_, NoError>((t.span.start as usize, t.token, t.span.end as usize)));
    let mut mistakes = Vec::new();
    let mut recovered = Vec::new();
    let expr = generated::ExprParser::new()
        .parse(file, &mut mistakes, &mut recovered, stream)
        .map_err(|_| HoleFault::NotAnExpression)?;
    if recovered.is_empty() && mistakes.is_empty() {
        Ok(expr)
    } else {
        Err(HoleFault::NotAnExpression)
    }
}

/// A hole that is a name or a path of names (`action`, `resource.id`,
/// most holes), built as the grammar builds it (`Name`, then one `Field`
/// a name, each spanning from the first name to its own end) without
/// running the parser; `None` for any other tokens, which the parser reads.
fn name_path(file: FileId, tokens: &[lexer::Spanned]) -> Option<crate::ast::Expr> {
    use crate::ast::{Expr, ExprKind, Ident};
    let mut tokens = tokens.iter().filter(|t| !t.token.is_trivia());
    let first = tokens.next()?;
    let Token::Ident(name) = &first.token else {
        return None;
    };
    let start = first.span.start as usize;
    let mut expr = Expr::new(
        ExprKind::Name(name.clone()),
        Span::new(file, start, first.span.end as usize),
    );
    loop {
        match tokens.next() {
            None => return Some(expr),
            Some(t) if matches!(t.token, Token::Dot) => {}
            Some(_) => return None,
        }
        let field = tokens.next()?;
        let Token::Ident(name) = &field.token else {
            return None;
        };
        let end = field.span.end as usize;
        let ident = Ident {
            name: name.clone(),
            span: Span::new(file, field.span.start as usize, end),
        };
        expr = Expr::new(
            ExprKind::Field(Box::new(expr), ident),
            Span::new(file, start, end),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{ExprKind, RuleKind};

    fn parse(text: &str) -> (File, Diagnostics) {
        parse_file(FileId(0), &SourceFile::new("t.writ", text))
    }

    #[test]
    fn parses_each_rule_kind() {
        let (file, diags) = parse(
            r#"const n = 10;
            /// why
            @id("a") permit if action == "read" grant ["read:{resource.id}"] for 1h revoke on task_end audience resource.id;
            forbid if subject.shared because "shared";
            limit ttl 5m if sensitivity >= restricted;
            limit scope ["read:**"];
            require approval if not context has approval;"#,
        );
        assert!(diags.is_empty(), "{diags}");
        assert_eq!(file.items.len(), 6);
        let Item::Rule(rule) = &file.items[1] else {
            panic!("not a rule")
        };
        assert_eq!(rule.doc.as_deref(), Some("why"));
        let RuleKind::Permit { grant, obligations } = &rule.kind else {
            panic!("not a permit")
        };
        assert!(grant.is_some());
        assert_eq!(obligations.len(), 2);
    }

    #[test]
    fn precedence_and_over_or_and_not_in() {
        let (file, diags) = parse("forbid if a or b and c not in d;");
        assert!(diags.is_empty(), "{diags}");
        let Item::Rule(rule) = &file.items[0] else {
            panic!("not a rule")
        };
        let Some(cond) = &rule.condition else {
            panic!("no condition")
        };
        assert!(matches!(
            cond.kind,
            ExprKind::Binary(crate::ast::BinOp::Or, _)
        ));
    }

    /// The cap of the one `limit ttl` rule in `text`.
    fn ttl_cap(text: &str) -> crate::ast::Expr {
        let (file, diags) = parse(text);
        assert!(diags.is_empty(), "{diags}");
        match file.items.into_iter().next() {
            Some(Item::Rule(rule)) => match rule.kind {
                RuleKind::LimitTtl(cap) => cap,
                other => panic!("not a ttl limit: {other:?}"),
            },
            other => panic!("not a rule: {other:?}"),
        }
    }

    #[test]
    fn until_takes_the_whole_sum_and_nests_in_calls_and_comparisons() {
        // `until a + 1h` is the time left until an hour after `a`.
        let cap = ttl_cap("limit ttl until context.deadline + 1h;");
        let ExprKind::Until(inner) = &cap.kind else {
            panic!("not an until: {cap:?}")
        };
        assert!(matches!(
            inner.kind,
            ExprKind::Binary(crate::ast::BinOp::Add, _)
        ));
        // Inside a call, each argument is a value of its own.
        let cap = ttl_cap("limit ttl min(ttl_exception, until context.exception.expires) if a;");
        let ExprKind::Call(call) = &cap.kind else {
            panic!("not a call: {cap:?}")
        };
        assert_eq!(call.0.name, "min");
        assert!(matches!(call.1[1].kind, ExprKind::Until(_)));
        // In a comparison, `until` binds tighter than the operator.
        let (file, diags) = parse("forbid if until context.expires < 1h;");
        assert!(diags.is_empty(), "{diags}");
        let Item::Rule(rule) = &file.items[0] else {
            panic!("not a rule")
        };
        let Some(cond) = &rule.condition else {
            panic!("no condition")
        };
        let ExprKind::Binary(crate::ast::BinOp::Lt, operands) = &cond.kind else {
            panic!("not a comparison: {cond:?}")
        };
        assert!(matches!(operands.0.kind, ExprKind::Until(_)));
        // After a dot, `until` is a field name.
        ttl_cap("limit ttl until context.until;");
        // Nothing takes an unbracketed `until` as an operand of `+`.
        let (_, diags) = parse("limit ttl 1h + until context.deadline;");
        assert_eq!(diags.codes(), ["writ::parse::unexpected_token"]);
        ttl_cap("limit ttl 1h + (until context.deadline);");
    }

    #[test]
    fn recovers_and_reports_every_error() {
        let (file, diags) = parse("permit if ;\nforbid if a == ;\nforbid if b;");
        assert_eq!(diags.len(), 2, "{diags}");
        assert_eq!(file.items.len(), 1);
    }

    #[test]
    fn refuses_deep_and_long_input() {
        let deep = format!("forbid if {}a{};", "(".repeat(100), ")".repeat(100));
        let (_, diags) = parse(&deep);
        assert_eq!(diags.codes(), ["writ::limits::nesting_too_deep"]);
        let nots = format!("forbid if {}a;", "not ".repeat(10_000));
        let (_, diags) = parse(&nots);
        assert_eq!(diags.codes(), ["writ::limits::expression_too_long"]);
        let ands = format!("forbid if a{};", " and a".repeat(10_000));
        let (_, diags) = parse(&ands);
        assert_eq!(diags.codes(), ["writ::limits::expression_too_long"]);
        let long = format!("forbid if a == \"{}\";", "x".repeat(20_000));
        let (_, diags) = parse(&long);
        assert_eq!(diags.codes(), ["writ::limits::string_too_long"]);
    }

    /// The grammar's parse of a hole's tokens, without the shortcut.
    fn parsed_hole(tokens: Vec<lexer::Spanned>) -> Option<crate::ast::Expr> {
        let stream = tokens
            .into_iter()
            .filter(|t| !t.token.is_trivia())
            .map(|t| Ok::<_, NoError>((t.span.start as usize, t.token, t.span.end as usize)));
        generated::ExprParser::new()
            .parse(FileId(3), &mut Vec::new(), &mut Vec::new(), stream)
            .ok()
    }

    #[test]
    fn a_name_path_hole_is_built_as_the_grammar_builds_it() {
        for text in ["action", "resource.id", "context.a.b.c", " subject . kind ", "x_1.owner"] {
            let (tokens, errors) = lexer::lex(FileId(3), text);
            assert!(errors.is_empty(), "{text}: {errors:?}");
            let shortcut = name_path(FileId(3), &tokens);
            assert!(shortcut.is_some(), "{text}");
            assert_eq!(shortcut, parsed_hole(tokens.clone()), "{text}");
            assert_eq!(parse_hole(FileId(3), tokens).ok(), shortcut, "{text}");
        }
        // Anything else is left to the parser, which still reads it.
        for text in ["a.if", "len(x)", "a + b", "a[b]", "a.", ".a", "\"a\"", "a b"] {
            let (tokens, _) = lexer::lex(FileId(3), text);
            assert_eq!(name_path(FileId(3), &tokens), None, "{text}");
        }
        let (tokens, _) = lexer::lex(FileId(3), "a.if");
        assert_eq!(parse_hole(FileId(3), tokens.clone()).ok(), parsed_hole(tokens));
    }

    #[test]
    fn records_mistakes() {
        let (file, diags) = parse("forbid if a = 1 && b || !c;");
        assert!(diags.is_empty(), "{diags}");
        assert_eq!(file.mistakes.len(), 4);
    }
}
