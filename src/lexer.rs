//! The lexer: one logos token enum, the single source of truth for the
//! language's keywords and punctuation.
//!
//! Comments and doc comments are tokens too: the parser facade drops them,
//! the formatter keeps them. Lexer errors become diagnostics; the lexer skips
//! the bad bytes and goes on, so one typo does not hide the rest of a file.

use std::borrow::Cow;

use logos::Logos;
use miette::Diagnostic;
use thiserror::Error;

use crate::source::{FileId, Span};

/// Why a stretch of text is not a token.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LexErrorKind {
    /// `#`: a character the language has no use for.
    #[default]
    UnexpectedChar,
    /// `"abc` with no closing quote before the end of the line.
    UnterminatedString,
    /// `"\q"`: an escape other than `\\ \" \n \t \{ \}`.
    BadEscape(char),
    /// `99999999999999999999d`: a duration that does not fit in 64 bits.
    DurationOverflow,
    /// A number literal with more digits than any policy needs.
    BadNumber,
    /// `'read'` or `“read”`: a string in quotes other than `"`; holds
    /// the text between them, which stands in as the string.
    WrongQuotes(String),
}

/// A token of the writ language. Keywords are listed here and nowhere else.
#[derive(Logos, Debug, Clone, PartialEq)]
#[logos(error = LexErrorKind)]
#[logos(skip r"[ \t\r\n\f]+")]
pub enum Token {
    /// `/// text`: documents the rule that follows.
    #[regex(r"///[^\n]*", |lex| lex.slice()[3..].trim().to_owned(), priority = 10)]
    DocComment(String),
    /// `// text`: ignored by the parser, kept by the formatter.
    #[regex(r"//[^\n]*", |lex| lex.slice().to_owned())]
    Comment(String),

    /// `const`
    #[token("const")]
    Const,
    /// `permit`
    #[token("permit")]
    Permit,
    /// `forbid`
    #[token("forbid")]
    Forbid,
    /// `limit`
    #[token("limit")]
    Limit,
    /// `require`
    #[token("require")]
    Require,
    /// `if`
    #[token("if")]
    If,
    /// `grant`
    #[token("grant")]
    Grant,
    /// `for`
    #[token("for")]
    For,
    /// `because`
    #[token("because")]
    Because,
    /// `ttl`
    #[token("ttl")]
    Ttl,
    /// `scope`
    #[token("scope")]
    Scope,
    /// `approval`
    #[token("approval")]
    Approval,
    /// `revoke`
    #[token("revoke")]
    Revoke,
    /// `on`
    #[token("on")]
    On,
    /// `audience`
    #[token("audience")]
    Audience,
    /// `log`
    #[token("log")]
    Log,
    /// `and`
    #[token("and")]
    And,
    /// `or`
    #[token("or")]
    Or,
    /// `not`
    #[token("not")]
    Not,
    /// `in`
    #[token("in")]
    In,
    /// `has`
    #[token("has")]
    Has,
    /// `matches`
    #[token("matches")]
    Matches,
    /// `any`
    #[token("any")]
    Any,
    /// `all`
    #[token("all")]
    All,
    /// `true`
    #[token("true")]
    True,
    /// `false`
    #[token("false")]
    False,
    /// `until`: the time left until an instant, a duration.
    #[token("until")]
    Until,

    /// `subject`, `workload_auth`, `len`: names resolved by the checker.
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*", lex_name)]
    Ident(Cow<'static, str>),
    /// `"text"`, with `\\ \" \n \t \{ \}` escapes already applied.
    #[token("\"", lex_string)]
    #[regex(r"'[^'\n]*'", wrong_quotes)]
    #[regex(r"‘[^’\n]*’", wrong_quotes)]
    #[regex(r"“[^”\n]*”", wrong_quotes)]
    Str(String),
    /// `42`, `-1`, `0.5`.
    #[regex(r"-?[0-9]{1,24}(\.[0-9]{1,24})?", lex_number)]
    Num(f64),
    /// `30s`, `5m`, `1h`, `1d`, `1h30m`: a duration in seconds.
    #[regex(r"([0-9]{1,24}[smhd]){1,4}", lex_duration)]
    Dur(u64),

    /// `@`
    #[token("@")]
    At,
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
    /// `[`
    #[token("[")]
    LBracket,
    /// `]`
    #[token("]")]
    RBracket,
    /// `,`
    #[token(",")]
    Comma,
    /// `;`
    #[token(";")]
    Semi,
    /// `:`
    #[token(":")]
    Colon,
    /// `.`
    #[token(".")]
    Dot,
    /// `+`
    #[token("+")]
    Plus,
    /// `*`
    #[token("*")]
    Star,
    /// `==`
    #[token("==")]
    EqEq,
    /// `!=`
    #[token("!=")]
    NotEq,
    /// `<`
    #[token("<")]
    Lt,
    /// `<=`
    #[token("<=")]
    Le,
    /// `>`
    #[token(">")]
    Gt,
    /// `>=`
    #[token(">=")]
    Ge,
    /// `=`: not part of the language; parsed so the checker can say `==`.
    #[token("=")]
    Assign,
    /// `&&`: not part of the language; parsed so the checker can say `and`.
    #[token("&&")]
    AmpAmp,
    /// `||`: not part of the language; parsed so the checker can say `or`.
    #[token("||")]
    PipePipe,
    /// `!`: not part of the language; parsed so the checker can say `not`.
    #[token("!")]
    Bang,
}

impl Token {
    /// True for comments and doc comments, which the parser does not see.
    pub fn is_trivia(&self) -> bool {
        matches!(self, Token::Comment(_) | Token::DocComment(_))
    }
}

fn lex_name(lex: &mut logos::Lexer<Token>) -> Cow<'static, str> {
    name(lex.slice())
}

/// A name, borrowed from a static table when it is one of the names most
/// policies use (so that it costs no allocation), else copied.
pub(crate) fn name(text: &str) -> Cow<'static, str> {
    if let Some(name) = crate::schema::static_name(text) {
        return Cow::Borrowed(name);
    }
    Cow::Borrowed(match text {
        "public" => "public",
        "internal" => "internal",
        "confidential" => "confidential",
        "restricted" => "restricted",
        "len" => "len",
        "contains" => "contains",
        "starts_with" => "starts_with",
        "ends_with" => "ends_with",
        "lower" => "lower",
        "min" => "min",
        "control" => "control",
        other => return Cow::Owned(other.to_owned()),
    })
}

/// Scans a string literal after its opening quote by hand: a regex here
/// makes logos generate code that recurses once per character.
fn lex_string(lex: &mut logos::Lexer<Token>) -> Result<String, LexErrorKind> {
    let rest = lex.remainder();
    // Most strings have no escapes: find the closing quote and copy the
    // text at once.
    if let Some(end) = memchr::memchr3(b'"', b'\\', b'\n', rest.as_bytes()) {
        if rest.as_bytes()[end] == b'"' {
            let out = rest[..end].to_owned();
            lex.bump(end + 1);
            return Ok(out);
        }
    }
    let mut out = String::new();
    let mut chars = rest.char_indices();
    let mut bad = None;
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                lex.bump(at + 1);
                return match bad {
                    Some(escape) => Err(LexErrorKind::BadEscape(escape)),
                    None => Ok(out),
                };
            }
            '\n' => break,
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                // Templates use `{`/`}`; an escaped brace stays escaped
                // until the checker reads the template.
                Some((_, '{')) => out.push_str("\\{"),
                Some((_, '}')) => out.push_str("\\}"),
                Some((_, '\n')) | None => break,
                Some((_, other)) => {
                    bad.get_or_insert(other);
                }
            },
            other => out.push(other),
        }
    }
    // Unterminated: consume to the end of the line so lexing can resume.
    let line_end = rest.find('\n').unwrap_or(rest.len());
    lex.bump(line_end);
    Err(LexErrorKind::UnterminatedString)
}

/// A string written in single or typographic quotes: an error that
/// carries the text, so the parser can go on as if it were a string.
fn wrong_quotes(lex: &mut logos::Lexer<Token>) -> Result<String, LexErrorKind> {
    let slice = lex.slice();
    let mut chars = slice.chars();
    chars.next();
    chars.next_back();
    Err(LexErrorKind::WrongQuotes(chars.as_str().to_owned()))
}

/// Bounded regexes keep logos from recursing per digit; a literal longer
/// than they allow is consumed here whole and reported as one error.
fn swallow_rest(lex: &mut logos::Lexer<Token>) -> bool {
    let extra = lex
        .remainder()
        .bytes()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b's' | b'm' | b'h' | b'd'))
        .count();
    lex.bump(extra);
    extra > 0
}

fn lex_number(lex: &mut logos::Lexer<Token>) -> Result<f64, LexErrorKind> {
    if swallow_rest(lex) {
        return Err(LexErrorKind::BadNumber);
    }
    lex.slice()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or(LexErrorKind::BadNumber)
}

fn lex_duration(lex: &mut logos::Lexer<Token>) -> Result<u64, LexErrorKind> {
    if swallow_rest(lex) {
        return Err(LexErrorKind::DurationOverflow);
    }
    duration_seconds(lex.slice())
}

/// Seconds in `1h30m`-style text (the regex has checked the form).
fn duration_seconds(text: &str) -> Result<u64, LexErrorKind> {
    crate::duration::parse_seconds(text).map_err(|_| LexErrorKind::DurationOverflow)
}

/// A lexer error with its location.
#[derive(Debug, Clone, Error, Diagnostic)]
pub enum LexError {
    /// `#`
    #[error("unexpected character `{text}`")]
    #[diagnostic(
        code(writ::lex::unexpected_char),
        help("writ has no `{text}`; comments start with `//`")
    )]
    UnexpectedChar {
        /// The offending text.
        text: String,
        /// Where it is.
        #[label("not part of the language")]
        span: miette::SourceSpan,
    },
    /// `"abc`
    #[error("unterminated string")]
    #[diagnostic(
        code(writ::lex::unterminated_string),
        help("close the string with `\"` on the same line")
    )]
    UnterminatedString {
        /// Where the string starts.
        #[label("this string never ends")]
        span: miette::SourceSpan,
    },
    /// `"\q"`
    #[error("unknown escape `\\{escape}` in string")]
    #[diagnostic(
        code(writ::lex::bad_escape),
        help("the escapes are `\\\\`, `\\\"`, `\\n`, `\\t`, `\\{{` and `\\}}`")
    )]
    BadEscape {
        /// The character after the backslash.
        escape: char,
        /// The string.
        #[label("in this string")]
        span: miette::SourceSpan,
    },
    /// `99999999999999999999d`
    #[error("duration `{text}` is too large")]
    #[diagnostic(
        code(writ::lex::duration_overflow),
        help("durations are whole seconds and must fit in 64 bits")
    )]
    DurationOverflow {
        /// The literal.
        text: String,
        /// Where it is.
        #[label("too large")]
        span: miette::SourceSpan,
    },
    /// `'read'`, `“read”`
    #[error("strings are written in double quotes")]
    #[diagnostic(
        code(writ::lex::wrong_quotes),
        help("write `\"{value}\"`; writ reads only the straight double quote `\"` as a string's quote")
    )]
    WrongQuotes {
        /// The text between the quotes.
        value: String,
        /// The string as written.
        #[label("quoted with `{quote}`")]
        span: miette::SourceSpan,
        /// The opening quote.
        quote: char,
    },
    /// `1234567890123456789012345678`
    #[error("number `{text}` is too long")]
    #[diagnostic(
        code(writ::lex::bad_number),
        help("numbers have at most 24 digits before and after the point")
    )]
    BadNumber {
        /// The literal.
        text: String,
        /// Where it is.
        #[label("not finite")]
        span: miette::SourceSpan,
    },
}

/// A token with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    /// The token.
    pub token: Token,
    /// Where it is.
    pub span: Span,
}

/// Lexes a whole file: every token (comments included) and every error.
pub fn lex(file: FileId, text: &str) -> (Vec<Spanned>, Vec<(Span, LexError)>) {
    let mut lexed = Lexed::new(file, text);
    let tokens = lexed.by_ref().collect();
    (tokens, lexed.errors)
}

/// The tokens of a text, one at a time (comments included); the errors
/// met so far collect in [`Lexed::errors`]. The parser reads it lazily, so
/// a file's tokens are never all in memory at once.
pub struct Lexed<'a> {
    inner: logos::Lexer<'a, Token>,
    file: FileId,
    /// Every lexer error met so far, in order.
    pub errors: Vec<(Span, LexError)>,
}

impl<'a> Lexed<'a> {
    /// Starts lexing `text`, which is file `file`.
    pub fn new(file: FileId, text: &'a str) -> Lexed<'a> {
        Lexed {
            inner: Token::lexer(text),
            file,
            errors: Vec::new(),
        }
    }
}

impl Iterator for Lexed<'_> {
    type Item = Spanned;

    fn next(&mut self) -> Option<Spanned> {
        loop {
            let result = self.inner.next()?;
            let range = self.inner.span();
            let span = Span::new(self.file, range.start, range.end);
            let kind = match result {
                Ok(token) => return Some(Spanned { token, span }),
                Err(kind) => kind,
            };
            let source_span = span.source_span();
            let slice = || self.inner.slice().to_owned();
            // A stand-in keeps the parser from reporting a second,
            // misleading error right after the bad literal.
            let (error, stand_in) = match kind {
                LexErrorKind::UnexpectedChar => (
                    LexError::UnexpectedChar {
                        text: slice(),
                        span: source_span,
                    },
                    None,
                ),
                LexErrorKind::UnterminatedString => {
                    (LexError::UnterminatedString { span: source_span }, None)
                }
                LexErrorKind::BadEscape(escape) => (
                    LexError::BadEscape {
                        escape,
                        span: source_span,
                    },
                    Some(Token::Str(String::new())),
                ),
                LexErrorKind::DurationOverflow => (
                    LexError::DurationOverflow {
                        text: slice(),
                        span: source_span,
                    },
                    Some(Token::Dur(u64::MAX)),
                ),
                LexErrorKind::WrongQuotes(value) => (
                    LexError::WrongQuotes {
                        quote: self.inner.slice().chars().next().unwrap_or('\''),
                        value: value.clone(),
                        span: source_span,
                    },
                    Some(Token::Str(value)),
                ),
                LexErrorKind::BadNumber => (
                    LexError::BadNumber {
                        text: slice(),
                        span: source_span,
                    },
                    Some(Token::Num(0.0)),
                ),
            };
            self.errors.push((span, error));
            if let Some(token) = stand_in {
                return Some(Spanned { token, span });
            }
        }
    }
}

/// Where each byte of a string literal's value is written: `offsets[i]` is
/// the file offset of the character that byte `i` of the value comes from
/// (the backslash of an escape), and the last entry is the closing quote.
/// `None` when `literal` (the source text, quotes included, starting at
/// `start`) is not a string literal whose value is `value`.
fn value_offsets(value: &str, literal: &str, start: usize) -> Option<Offsets> {
    // Most literals are their value between quotes, with no escape: each
    // byte then sits one past its index, and no table is needed.
    let plain = memchr::memchr2(b'\\', b'"', value.as_bytes()).is_none();
    if plain
        && literal.len() == value.len() + 2
        && literal.starts_with('"')
        && literal.ends_with('"')
        && literal.get(1..=value.len()) == Some(value)
    {
        return u32::try_from(start + 1).ok().map(Offsets::Shifted);
    }
    let body = literal.strip_prefix('"')?;
    let mut offsets = Vec::with_capacity(value.len() + 1);
    let mut chars = body.char_indices();
    let at = |i: usize| u32::try_from(start + 1 + i).ok();
    while let Some((i, c)) = chars.next() {
        let bytes: u32 = match c {
            '"' => {
                offsets.push(at(i)?);
                return (offsets.len() == value.len() + 1).then_some(Offsets::Table(offsets));
            }
            '\\' => match chars.next()?.1 {
                // Escaped braces stay escaped in the value: two bytes.
                '{' | '}' => 2,
                '\\' | '"' | 'n' | 't' => 1,
                _ => return None,
            },
            other => other.len_utf8() as u32,
        };
        // A character's bytes are written as they are; an escape's value
        // bytes start at its backslash.
        let from = at(i)?;
        offsets.extend((0..bytes).map(|k| from + k));
    }
    None
}

/// [`value_offsets`]: file offsets of a literal's value bytes.
enum Offsets {
    /// Byte `i` is at `base + i` (no escape changes a length).
    Shifted(u32),
    /// Byte `i` is at `table[i]`.
    Table(Vec<u32>),
}

impl Offsets {
    /// The file offset of the value's byte `i` (`i` up to the value's
    /// length, which is the closing quote).
    fn at(&self, i: usize) -> u32 {
        match self {
            // `i` is at most the value's length, which fits in the file.
            Offsets::Shifted(base) => base.saturating_add(i as u32),
            Offsets::Table(table) => table[i],
        }
    }
}

/// A piece of a template string (a grant, a scope limit, an audience, a
/// `because` message): text, or a `{hole}` lexed into tokens whose spans
/// are exactly where each token is written in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePiece {
    /// Literal text, escapes resolved (`\{` is `{`).
    Text(String),
    /// A hole: its text as the value reads, its tokens (comments
    /// included) and the lexer errors in it.
    Hole {
        /// The text between the braces.
        text: String,
        /// Its tokens, with file spans.
        tokens: Vec<Spanned>,
        /// True when the lexer met an error in it.
        lex_error: bool,
    },
}

/// What is wrong with a template string's braces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateFault {
    /// `{` is never closed.
    Unclosed,
    /// `}` without `{`.
    StrayClose,
}

impl std::fmt::Display for TemplateFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateFault::Unclosed => "`{` is never closed",
            TemplateFault::StrayClose => "`}` without `{`",
        })
    }
}

/// The lexer's mode for strings with holes: splits a template's value into
/// text and holes, lexing each hole with the token lexer. Pieces come one
/// at a time, so a fault in a later piece is met only after the earlier
/// ones are used.
pub struct TemplateLexer<'a> {
    file: FileId,
    value: &'a str,
    /// Bytes of `value` already split off.
    at: usize,
    /// File offsets of the value's bytes, when it is written as a literal.
    offsets: Option<Offsets>,
    /// Where the template is written (a constant's name, when the text
    /// comes from a constant): holes' tokens point here without offsets.
    whole: Span,
    failed: bool,
}

impl<'a> TemplateLexer<'a> {
    /// Lexes `value`, a string literal's value written at `span` of a file
    /// whose text is `source` (braces still escaped, as the token lexer
    /// leaves them). When the text at `span` is not that literal (a
    /// constant's value used by name), the holes' tokens all span `span`.
    pub fn new(value: &'a str, span: Span, source: &str) -> TemplateLexer<'a> {
        let literal = source.get(span.start as usize..span.end as usize);
        let offsets = literal.and_then(|l| value_offsets(value, l, span.start as usize));
        TemplateLexer {
            file: span.file,
            value,
            at: 0,
            offsets,
            whole: span,
            failed: false,
        }
    }

    /// The file span of the value's bytes `from..to`.
    fn span(&self, from: usize, to: usize) -> Span {
        match &self.offsets {
            Some(offsets) => Span {
                file: self.file,
                start: offsets.at(from),
                end: offsets.at(to),
            },
            None => self.whole,
        }
    }

    /// The hole whose text is `value[from..to]`.
    fn hole(&self, from: usize, to: usize) -> TemplatePiece {
        let text = &self.value[from..to];
        let (tokens, errors) = lex(self.file, text);
        let tokens = tokens
            .into_iter()
            .map(|t| Spanned {
                span: self.span(from + t.span.start as usize, from + t.span.end as usize),
                token: t.token,
            })
            .collect();
        TemplatePiece::Hole {
            text: text.to_owned(),
            tokens,
            lex_error: !errors.is_empty(),
        }
    }
}

impl Iterator for TemplateLexer<'_> {
    type Item = Result<TemplatePiece, TemplateFault>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.value.len() {
            return None;
        }
        let mut text = String::new();
        loop {
            let rest = &self.value[self.at..];
            if rest.is_empty() {
                return Some(Ok(TemplatePiece::Text(text)));
            }
            if let Some(brace) = rest.strip_prefix('\\').and_then(|r| r.chars().next()) {
                if brace == '{' || brace == '}' {
                    text.push(brace);
                    self.at += 2;
                    continue;
                }
            }
            if let Some(inside) = rest.strip_prefix('{') {
                if !text.is_empty() {
                    return Some(Ok(TemplatePiece::Text(text)));
                }
                let Some(close) = inside.find('}') else {
                    self.failed = true;
                    return Some(Err(TemplateFault::Unclosed));
                };
                let (from, to) = (self.at + 1, self.at + 1 + close);
                self.at = to + 1;
                return Some(Ok(self.hole(from, to)));
            }
            if rest.starts_with('}') {
                self.failed = true;
                return Some(Err(TemplateFault::StrayClose));
            }
            // Plain text up to the next brace or backslash, at once.
            let first = rest.chars().next().map_or(1, char::len_utf8);
            let end = rest[first..]
                .find(['{', '}', '\\'])
                .map_or(rest.len(), |at| at + first);
            text.push_str(&rest[..end]);
            self.at += end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Token> {
        let (tokens, errors) = lex(FileId(0), text);
        assert!(errors.is_empty(), "{errors:?}");
        tokens.into_iter().map(|t| t.token).collect()
    }

    #[test]
    fn keywords_idents_and_literals() {
        assert_eq!(
            kinds(r#"permit if action == "read" grant ["r:{resource.id}"] for 1h30m"#),
            vec![
                Token::Permit,
                Token::If,
                Token::Ident("action".into()),
                Token::EqEq,
                Token::Str("read".into()),
                Token::Grant,
                Token::LBracket,
                Token::Str("r:{resource.id}".into()),
                Token::RBracket,
                Token::For,
                Token::Dur(5400),
            ]
        );
    }

    #[test]
    fn ttl_expression_tokens() {
        assert_eq!(
            kinds("limit ttl min(1d * n, until until_x)"),
            vec![
                Token::Limit,
                Token::Ttl,
                Token::Ident("min".into()),
                Token::LParen,
                Token::Dur(86400),
                Token::Star,
                Token::Ident("n".into()),
                Token::Comma,
                Token::Until,
                Token::Ident("until_x".into()),
                Token::RParen,
            ]
        );
    }

    #[test]
    fn comments_are_tokens() {
        assert_eq!(
            kinds("/// why\n// note\nforbid;"),
            vec![
                Token::DocComment("why".into()),
                Token::Comment("// note".into()),
                Token::Forbid,
                Token::Semi
            ]
        );
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(
            kinds("10 -2 0.5 30s 1d"),
            vec![
                Token::Num(10.0),
                Token::Num(-2.0),
                Token::Num(0.5),
                Token::Dur(30),
                Token::Dur(86400)
            ]
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(kinds(r#""a\"b\\c""#), vec![Token::Str("a\"b\\c".into())]);
    }

    #[test]
    fn errors_do_not_stop_the_lexer() {
        let (tokens, errors) = lex(FileId(0), "forbid # ; \"open");
        assert_eq!(tokens.len(), 2);
        assert_eq!(errors.len(), 2);
        assert!(matches!(errors[0].1, LexError::UnexpectedChar { .. }));
        assert!(matches!(errors[1].1, LexError::UnterminatedString { .. }));
    }

    #[test]
    fn long_tokens_do_not_exhaust_a_small_stack() {
        let inputs = [
            format!("\"{}\"", "x".repeat(100_000)),
            "1".repeat(100_000),
            format!("{}s", "1".repeat(100_000)),
            "x".repeat(100_000),
            format!("// {}", "x".repeat(100_000)),
        ];
        let handle = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                inputs
                    .iter()
                    .map(|i| lex(FileId(0), i).0.len())
                    .sum::<usize>()
            })
            .expect("spawn");
        assert!(handle.join().expect("no stack overflow") > 0);
    }

    /// The pieces of the template literal written in `source` (one
    /// string token), and the text each hole token's span covers.
    fn template_in(source: &str) -> (Vec<TemplatePiece>, Vec<String>) {
        let (tokens, errors) = lex(FileId(0), source);
        assert!(errors.is_empty(), "{errors:?}");
        let Some(Spanned {
            token: Token::Str(value),
            span,
        }) = tokens
            .into_iter()
            .find(|t| matches!(t.token, Token::Str(_)))
        else {
            panic!("no string in {source:?}");
        };
        let pieces: Vec<TemplatePiece> = TemplateLexer::new(&value, span, source)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|fault| panic!("{fault}"));
        let mut texts = Vec::new();
        for piece in &pieces {
            if let TemplatePiece::Hole { tokens, .. } = piece {
                for t in tokens {
                    texts.push(source[t.span.start as usize..t.span.end as usize].to_owned());
                }
            }
        }
        (pieces, texts)
    }

    #[test]
    fn template_holes_have_exact_spans_after_escapes() {
        let (pieces, texts) =
            template_in(r#"grant ["a:\"q\"\\q\t\{é\}/{resource.idd}-{ lower(x) }"]"#);
        assert_eq!(texts, ["resource", ".", "idd", "lower", "(", "x", ")"]);
        assert_eq!(
            pieces.first(),
            Some(&TemplatePiece::Text("a:\"q\"\\q\t{é}/".to_owned()))
        );
        // A hole whose own text holds an escaped quote.
        let (_, texts) = template_in(r#"x = "{resource[\"ownerID\"]}";"#);
        assert_eq!(texts, ["resource", "[", r#"\"ownerID\""#, "]"]);
    }

    #[test]
    fn plain_template_literals_shift_their_offsets() {
        let source = r#"grant ["{action}:{ resource.id }"]"#;
        let (_, texts) = template_in(source);
        assert_eq!(texts, ["action", "resource", ".", "id"]);
        let value = "{action}:{ resource.id }";
        let literal = &source[7..7 + value.len() + 2];
        let Some(Offsets::Shifted(base)) = value_offsets(value, literal, 7) else {
            panic!("a plain literal takes the shift");
        };
        assert_eq!(base, 8);
        // An escape, or a text that is not the literal, takes the table
        // or nothing.
        assert!(matches!(
            value_offsets("a\\{b", r#""a\{b""#, 0),
            Some(Offsets::Table(_))
        ));
        assert!(value_offsets("ab", "name", 0).is_none());
    }

    #[test]
    fn template_faults_come_in_order() {
        let span = Span::new(FileId(0), 0, 0);
        let faults: Vec<_> = TemplateLexer::new("a{b}c}{d", span, "").collect();
        assert!(matches!(
            faults[..],
            [Ok(_), Ok(_), Err(TemplateFault::StrayClose)]
        ));
        let faults: Vec<_> = TemplateLexer::new("{b", span, "").collect();
        assert!(matches!(faults[..], [Err(TemplateFault::Unclosed)]));
    }

    #[test]
    fn duration_overflow_is_an_error() {
        let (_, errors) = lex(FileId(0), "99999999999999999999d");
        assert!(matches!(errors[0].1, LexError::DurationOverflow { .. }));
    }
}
