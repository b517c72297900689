//! The formatter: one canonical layout for policy files.
//!
//! It works on the lexer's token stream, comments included, so it can only
//! move whitespace: the formatted text lexes to the same tokens (checked
//! after every run) and keeps every comment in its place relative to them.
//! The layout is a function of the tokens and of where comments sit (at the
//! end of a line or on a line of their own), so formatting twice changes
//! nothing.
//!
//! The layout:
//! - one annotation per line, then the rule;
//! - `if` conditions on the rule's line (on the next one when a long head
//!   leaves no room for the first test), filled up to [`WIDTH`] columns and
//!   broken before `and`/`or` (before `or` first when both occur), with two
//!   spaces of continuation indent per level; a parenthesised or quantified
//!   operand that does not fit is broken inside; a connective the author
//!   wrote first on its line stays first on its line (the author's
//!   grouping is kept, and only lines over the width are broken further);
//! - `grant`, each obligation and `because` on continuation lines;
//! - one blank line around every rule; between constants, attribute
//!   declarations and comments at most one blank line, as written;
//! - single spaces around operators and after commas, none inside brackets,
//!   calls and annotations (`[a, b]`, `len(x)`, `@id("x")`);
//! - a list that holds a comment is broken one element per line.
//!
//! Files that do not lex or parse are refused, with their diagnostics.


use miette::Diagnostic;
use thiserror::Error;

use crate::diagnostics::Diagnostics;
use crate::lexer::{self, Token};
use crate::parser;
use crate::source::{FileId, SourceFile};

/// The column conditions are filled up to.
pub const WIDTH: usize = 80;

/// Continuation indent, per level.
const INDENT: usize = 2;

/// Why a file could not be formatted, beyond its own syntax errors.
#[derive(Debug, Clone, Error, Diagnostic)]
pub enum FmtError {
    /// A formatter bug: the output would not lex to the input's tokens.
    #[error("formatting `{name}` would change its tokens, so it was left alone")]
    #[diagnostic(
        code(writ::fmt::changed_tokens),
        help("this is a bug in `writ fmt`; please report it with the file")
    )]
    ChangedTokens {
        /// The file.
        name: String,
    },
}

/// Lines of context around each change in [`unified_diff`].
const CONTEXT: usize = 3;

/// A unified diff (`--- name`, `+++ name (formatted)`, `@@` hunks with
/// three lines of context) from `before` to `after`, line by line; empty
/// when they are equal. `writ fmt --check` prints one per file it would
/// change.
pub fn unified_diff(name: &str, before: &str, after: &str) -> String {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    // The longest common subsequence, by dynamic programming from the end:
    // policy files are small, and a formatter moves few lines.
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if old[i] == new[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    // The edit script: (' ', '-' or '+', old line number, new line number, text).
    let mut ops: Vec<(char, usize, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            ops.push((' ', i, j, old[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            ops.push(('-', i, j, old[i]));
            i += 1;
        } else {
            ops.push(('+', i, j, new[j]));
            j += 1;
        }
    }
    let changes: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    if changes.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    let mut k = 0;
    while k < changes.len() {
        let start = changes[k].saturating_sub(CONTEXT);
        let mut end = changes[k];
        while k < changes.len() && changes[k] <= end + 2 * CONTEXT {
            end = changes[k];
            k += 1;
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let old_len = hunk.iter().filter(|o| o.0 != '+').count();
        let new_len = hunk.iter().filter(|o| o.0 != '-').count();
        let (old_start, new_start) = (hunk[0].1 + 1, hunk[0].2 + 1);
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            if old_len == 0 { old_start - 1 } else { old_start },
            if new_len == 0 { new_start - 1 } else { new_start },
        ));
        for (sign, _, _, text) in hunk {
            out.push(*sign);
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// Formats one policy file. Returns the canonical text, or the file's lexer
/// and parser diagnostics when it does not parse.
pub fn format_source(name: &str, text: &str) -> Result<String, Diagnostics> {
    let source = SourceFile::new(name, text);
    let (_, diagnostics) = parser::parse_file(FileId(0), &source);
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let (tokens, _) = lexer::lex(FileId(0), text);
    let Some(layout) = Layout::build(text, &tokens) else {
        return Err(changed(name));
    };
    let formatted = layout.render();
    if !same_tokens(text, &formatted) {
        return Err(changed(name));
    }
    Ok(formatted)
}

fn changed(name: &str) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    diagnostics.push_plain(FmtError::ChangedTokens {
        name: name.to_owned(),
    });
    diagnostics
}

/// True when both texts lex without errors to the same tokens and the same
/// comments, in the same order.
pub fn same_tokens(before: &str, after: &str) -> bool {
    let (a, a_errors) = lexer::lex(FileId(0), before);
    let (b, b_errors) = lexer::lex(FileId(0), after);
    let comments = |text: &str, tokens: &[lexer::Spanned]| -> Vec<String> {
        tokens
            .iter()
            .filter(|t| t.token.is_trivia())
            .map(|t| {
                text[t.span.start as usize..t.span.end as usize]
                    .trim_end()
                    .to_owned()
            })
            .collect()
    };
    let solid = |tokens: &[lexer::Spanned]| -> Vec<Token> {
        tokens
            .iter()
            .filter(|t| !t.token.is_trivia())
            .map(|t| t.token.clone())
            .collect()
    };
    a_errors.is_empty()
        && b_errors.is_empty()
        && solid(&a) == solid(&b)
        && comments(before, &a) == comments(after, &b)
}

/// A non-comment token with the comments around it.
#[derive(Debug)]
struct Tok<'s> {
    token: &'s Token,
    /// The token as written.
    text: &'s str,
    /// Comments on their own lines just before the token.
    leading: Vec<&'s str>,
    /// A comment after the token on the same line.
    trailing: Option<&'s str>,
    /// A keyword after `.` or `has`, where it is a field name.
    field: bool,
    /// The author started a line with it: a connective written first on
    /// its line keeps its line break.
    line_start: bool,
}

impl Tok<'_> {
    fn has_comments(&self) -> bool {
        !self.leading.is_empty() || self.trailing.is_some()
    }
}

/// A comment between items, with the blank lines above it.
#[derive(Debug)]
struct Trivia<'s> {
    blank_before: usize,
    text: &'s str,
}

/// A constant or a rule: its tokens up to and including `;`.
#[derive(Debug)]
struct ItemLayout<'s> {
    /// Comments above the item.
    leading: Vec<Trivia<'s>>,
    /// Blank lines between the last comment (or the previous item) and it.
    blank_before: usize,
    toks: Vec<Tok<'s>>,
    /// A comment after the `;` on the same line.
    trailing: Option<&'s str>,
}

impl ItemLayout<'_> {
    /// A rule, not a constant or an attribute declaration (those keep
    /// the blank lines between them as written, at most one).
    fn is_rule(&self) -> bool {
        match self.toks.first().map(|t| t.token) {
            Some(Token::Const) => false,
            Some(Token::Ident(word)) => word != "attribute",
            _ => true,
        }
    }
}

#[derive(Debug)]
struct Layout<'s> {
    items: Vec<ItemLayout<'s>>,
    /// Comments after the last item.
    tail: Vec<Trivia<'s>>,
}

impl<'s> Layout<'s> {
    /// Groups tokens into items and attaches each comment to a token or an
    /// item. `None` when an item has no closing `;` (the parser would have
    /// said so first).
    fn build(text: &'s str, tokens: &'s [lexer::Spanned]) -> Option<Layout<'s>> {
        let mut items: Vec<ItemLayout<'s>> = Vec::new();
        let mut current: Option<ItemLayout<'s>> = None;
        let mut pending_leading: Vec<&'s str> = Vec::new();
        let mut pending_trivia: Vec<Trivia<'s>> = Vec::new();
        let mut last_end: Option<usize> = None;
        let mut after_item_end = false;
        let mut prev_solid: Option<&Token> = None;
        for spanned in tokens {
            let start = spanned.span.start as usize;
            let end = spanned.span.end as usize;
            let slice = text.get(start..end)?;
            let newlines = last_end.map_or(0, |e| {
                text.get(e..start)
                    .map_or(0, |gap| gap.matches('\n').count())
            });
            let blank = if last_end.is_none() {
                0
            } else {
                newlines.saturating_sub(1)
            };
            let same_line = last_end.is_some() && newlines == 0;
            last_end = Some(end);
            if spanned.token.is_trivia() {
                let comment = slice.trim_end();
                match current.as_mut() {
                    Some(item) if same_line && pending_leading.is_empty() => {
                        let tok = item.toks.last_mut()?;
                        tok.trailing = Some(comment);
                    }
                    Some(_) => pending_leading.push(comment),
                    None if same_line && after_item_end => {
                        let item = items.last_mut()?;
                        item.trailing = Some(comment);
                    }
                    None => pending_trivia.push(Trivia {
                        blank_before: blank,
                        text: comment,
                    }),
                }
                after_item_end = false;
                continue;
            }
            after_item_end = false;
            let item = current.get_or_insert_with(|| ItemLayout {
                leading: std::mem::take(&mut pending_trivia),
                blank_before: blank,
                toks: Vec::new(),
                trailing: None,
            });
            let field = matches!(prev_solid, Some(Token::Dot | Token::Has));
            let line_start = !item.toks.is_empty() && newlines > 0;
            item.toks.push(Tok {
                token: &spanned.token,
                text: slice,
                leading: std::mem::take(&mut pending_leading),
                trailing: None,
                field,
                line_start,
            });
            prev_solid = Some(&spanned.token);
            if spanned.token == Token::Semi {
                items.extend(current.take());
                after_item_end = true;
            }
        }
        if current.is_some() {
            return None;
        }
        Some(Layout {
            items,
            tail: pending_trivia,
        })
    }

    fn render(&self) -> String {
        let mut w = Writer::new();
        for (index, item) in self.items.iter().enumerate() {
            if index > 0 {
                let previous_rule = self.items[index - 1].is_rule();
                let first_gap = item
                    .leading
                    .first()
                    .map_or(item.blank_before, |t| t.blank_before);
                let blank = if previous_rule || item.is_rule() {
                    1
                } else {
                    first_gap.min(1)
                };
                w.blank_lines(blank);
            }
            for (position, comment) in item.leading.iter().enumerate() {
                if position > 0 {
                    w.blank_lines(comment.blank_before.min(1));
                }
                w.line(comment.text);
            }
            if !item.leading.is_empty() {
                w.blank_lines(item.blank_before.min(1));
            }
            w.prev = None;
            if item.is_rule() {
                rule(&mut w, &item.toks);
            } else {
                emit_flat(&mut w, &item.toks, 0);
            }
            if let Some(comment) = item.trailing {
                w.text(" ");
                w.text(comment);
            }
            w.newline();
        }
        for (position, comment) in self.tail.iter().enumerate() {
            if position > 0 || !self.items.is_empty() {
                w.blank_lines(comment.blank_before.min(1));
            }
            w.line(comment.text);
        }
        w.out
    }
}

/// Builds the output: tracks the column, the continuation indent, spacing
/// between tokens and the newline a trailing comment forces.
struct Writer<'s> {
    out: String,
    column: usize,
    /// Where a line break forced by a comment continues.
    indent: usize,
    /// The indent of the current line, written with its first text.
    line_indent: usize,
    /// True when the current line holds nothing yet.
    fresh: bool,
    /// A trailing comment was written: the next token starts a new line.
    pending: bool,
    /// The previous token and whether it was a field name.
    prev: Option<(&'s Token, bool)>,
}

impl<'s> Writer<'s> {
    fn new() -> Writer<'s> {
        Writer {
            out: String::new(),
            column: 0,
            indent: 0,
            line_indent: 0,
            fresh: true,
            pending: false,
            prev: None,
        }
    }

    fn column(&self) -> usize {
        if self.fresh {
            self.line_indent
        } else {
            self.column
        }
    }

    fn text(&mut self, text: &str) {
        if self.fresh {
            self.out.push_str(&" ".repeat(self.line_indent));
            self.column = self.line_indent;
            self.fresh = false;
        }
        self.out.push_str(text);
        self.column += text.chars().count();
    }

    /// Ends the line; the next one starts at `indent`.
    fn newline_at(&mut self, indent: usize) {
        self.out.push('\n');
        self.column = 0;
        self.line_indent = indent;
        self.fresh = true;
        self.pending = false;
    }

    /// Ends the line; the next one starts at column 0.
    fn newline(&mut self) {
        self.newline_at(0);
    }

    /// A whole line at column 0 (comments between items).
    fn line(&mut self, text: &str) {
        self.text(text);
        self.newline();
    }

    fn blank_lines(&mut self, count: usize) {
        for _ in 0..count {
            self.out.push('\n');
        }
    }

    /// Ends the current line (unless it is empty) and continues at `indent`.
    fn break_line(&mut self, indent: usize) {
        self.indent = indent;
        if self.fresh {
            self.line_indent = indent;
        } else {
            self.newline_at(indent);
        }
    }

    /// Comments on their own lines, at the continuation indent.
    fn own_line_comments(&mut self, comments: &[&str]) {
        for comment in comments {
            if !self.fresh {
                self.newline_at(self.indent);
            }
            self.text(comment);
            self.newline_at(self.indent);
        }
    }

    fn token(&mut self, tok: &Tok<'s>) {
        self.own_line_comments(&tok.leading);
        self.bare_token(tok);
    }

    /// The token and its trailing comment, without its leading comments.
    fn bare_token(&mut self, tok: &Tok<'s>) {
        if self.pending {
            self.newline_at(self.indent);
        }
        if !self.fresh && space_between(self.prev, tok) {
            self.text(" ");
        }
        self.text(tok.text);
        self.prev = Some((tok.token, tok.field));
        if let Some(comment) = tok.trailing {
            self.text(" ");
            self.text(comment);
            self.pending = true;
        }
    }
}

/// Whether a space goes between the previous token and `next` on one line.
fn space_between(prev: Option<(&Token, bool)>, next: &Tok<'_>) -> bool {
    let Some((prev, prev_field)) = prev else {
        return false;
    };
    match next.token {
        Token::RParen
        | Token::RBracket
        | Token::Comma
        | Token::Semi
        | Token::Dot
        | Token::Colon => return false,
        // A call, an annotation's arguments or a quantifier.
        Token::LParen
            if matches!(prev, Token::Ident(_) | Token::Any | Token::All) && !prev_field =>
        {
            return false
        }
        // An index: `teams[subject.owner]`.
        Token::LBracket if ends_operand(prev, prev_field) => return false,
        _ => {}
    }
    !matches!(
        prev,
        Token::LParen | Token::LBracket | Token::At | Token::Dot | Token::Bang
    )
}

fn ends_operand(token: &Token, field: bool) -> bool {
    field
        || matches!(
            token,
            Token::Ident(_)
                | Token::Str(_)
                | Token::Num(_)
                | Token::Dur(_)
                | Token::True
                | Token::False
                | Token::RParen
                | Token::RBracket
        )
}

/// Width of `toks` on one line after `prev`, the leading space included.
fn flat_width(prev: Option<(&Token, bool)>, toks: &[Tok<'_>]) -> usize {
    let mut width = 0;
    let mut prev = prev;
    for tok in toks {
        if space_between(prev, tok) {
            width += 1;
        }
        width += tok.text.chars().count();
        prev = Some((tok.token, tok.field));
    }
    width
}

fn has_comments(toks: &[Tok<'_>]) -> bool {
    toks.iter().any(Tok::has_comments)
}

/// The index of the bracket that closes the one at `open`.
fn matching(toks: &[Tok<'_>], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, tok) in toks.iter().enumerate().skip(open) {
        match tok.token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Indices of tokens at bracket depth 0 for which `pick` holds.
fn at_depth_zero(toks: &[Tok<'_>], pick: impl Fn(&Tok<'_>) -> bool) -> Vec<usize> {
    let mut depth = 0usize;
    let mut found = Vec::new();
    for (index, tok) in toks.iter().enumerate() {
        match tok.token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            _ if depth == 0 && pick(tok) => found.push(index),
            _ => {}
        }
    }
    found
}

/// Lays out a rule: annotations, the head and condition, then the clauses.
fn rule<'s>(w: &mut Writer<'s>, toks: &[Tok<'s>]) {
    let mut at = 0;
    while matches!(toks.get(at).map(|t| t.token), Some(Token::At)) {
        let mut end = at + 2;
        if matches!(toks.get(end).map(|t| t.token), Some(Token::LParen)) {
            end = matching(toks, end).map_or(toks.len(), |close| close + 1);
        }
        let end = end.min(toks.len());
        w.break_line(0);
        emit_flat(w, &toks[at..end], 0);
        at = end;
    }
    w.break_line(0);
    let Some((semi, body)) = toks[at..].split_last() else {
        return;
    };
    let skip = if matches!(body.first().map(|t| t.token), Some(Token::Require)) {
        2
    } else {
        1
    };
    let mut starts: Vec<usize> = at_depth_zero(body, |t| {
        !t.field
            && matches!(
                t.token,
                Token::If
                    | Token::Grant
                    | Token::Approval
                    | Token::Revoke
                    | Token::Audience
                    | Token::Log
                    | Token::Because
            )
    })
    .into_iter()
    .filter(|&i| i >= skip)
    .collect();
    starts.push(body.len());
    let head_end = starts[0];
    emit_flat(w, &body[..head_end], 0);
    for (index, window) in starts.windows(2).enumerate() {
        let segment = &body[window[0]..window[1]];
        let last = index + 2 == starts.len();
        if matches!(segment[0].token, Token::If) && index == 0 {
            // A long head (`limit scope [...]`) sends `if` to the next line
            // when that is where its first test fits.
            let cond = &segment[1..];
            let first = connectives(cond).first().copied().unwrap_or(cond.len());
            let tail = usize::from(last && first == cond.len());
            let opening = &segment[..=first];
            let here = w.column() + flat_width(w.prev, opening) + tail;
            let below = INDENT + flat_width(None, opening) + tail;
            if here > WIDTH && below <= WIDTH {
                w.break_line(INDENT);
            }
            w.indent = INDENT;
            w.token(&segment[0]);
            emit_chain(w, &segment[1..], INDENT, usize::from(last));
        } else {
            w.break_line(INDENT);
            emit_flat(w, segment, INDENT);
        }
    }
    w.token(semi);
}

/// Emits tokens on one line, except where comments force breaks (which
/// continue at `base + 2`) and in lists holding comments (one element per
/// line at `base + 2`, the closing bracket at `base`).
fn emit_flat<'s>(w: &mut Writer<'s>, toks: &[Tok<'s>], base: usize) {
    let mut at = 0;
    while at < toks.len() {
        w.indent = base + INDENT;
        let tok = &toks[at];
        if matches!(tok.token, Token::LBracket) {
            if let Some(close) = matching(toks, at) {
                let inside = &toks[at + 1..close];
                if tok.trailing.is_some() || has_comments(inside) || toks[close].has_comments() {
                    w.token(tok);
                    let commas = at_depth_zero(inside, |t| matches!(t.token, Token::Comma));
                    let mut start = 0;
                    for end in commas
                        .iter()
                        .map(|c| c + 1)
                        .chain(std::iter::once(inside.len()))
                    {
                        if start < end {
                            w.break_line(base + INDENT);
                            emit_flat(w, &inside[start..end], base + INDENT);
                        }
                        start = end;
                    }
                    w.break_line(base + INDENT);
                    w.own_line_comments(&toks[close].leading);
                    w.break_line(base);
                    w.bare_token(&toks[close]);
                    at = close + 1;
                    continue;
                }
            }
        }
        w.token(tok);
        at += 1;
    }
}

/// Emits a condition: on the current line if it fits in [`WIDTH`] (with
/// `suffix` columns after it), otherwise filled and broken before its
/// top-level `or`s (or, when it has none, its `and`s), continuing at
/// `indent`. With comments inside, every connective starts a line.
fn emit_chain<'s>(w: &mut Writer<'s>, toks: &[Tok<'s>], indent: usize, suffix: usize) {
    let splits = connectives(toks);
    if splits.is_empty() {
        emit_operand(w, toks, indent + INDENT, suffix);
        return;
    }
    let comments = has_comments(toks);
    let grouped = author_breaks_within(toks);
    if !comments && !grouped && w.column() + flat_width(w.prev, toks) + suffix <= WIDTH {
        emit_flat(w, toks, indent);
        return;
    }
    emit_operand(w, &toks[..splits[0]], indent + INDENT, 0);
    for (index, &split) in splits.iter().enumerate() {
        let end = splits.get(index + 1).copied().unwrap_or(toks.len());
        let last = end == toks.len();
        let tail = if last { suffix } else { 0 };
        let piece = &toks[split..end];
        // The author's line breaks before connectives stay; otherwise the
        // line is filled up to the width.
        let overflows = w.column() + flat_width(w.prev, piece) + tail > WIDTH;
        if comments || piece[0].line_start || overflows {
            w.break_line(indent);
        }
        w.indent = indent;
        w.token(&piece[0]);
        emit_operand(w, &piece[1..], indent + INDENT, tail);
    }
}

/// Whether the author broke a line before a connective anywhere in
/// `toks`, nested ones included.
fn author_breaks_within(toks: &[Tok<'_>]) -> bool {
    toks.iter().any(|t| {
        t.line_start && !t.field && matches!(t.token, Token::And | Token::Or | Token::AmpAmp | Token::PipePipe)
    })
}

/// The top-level `or`s of a condition, or its `and`s when it has no `or`.
fn connectives(toks: &[Tok<'_>]) -> Vec<usize> {
    let ors = at_depth_zero(toks, |t| {
        !t.field && matches!(t.token, Token::Or | Token::PipePipe)
    });
    if !ors.is_empty() {
        return ors;
    }
    at_depth_zero(toks, |t| {
        !t.field && matches!(t.token, Token::And | Token::AmpAmp)
    })
}

/// Emits one operand of a condition, breaking inside it (at `nest`) when it
/// does not fit and it is a condition, a parenthesised condition or a
/// quantifier.
fn emit_operand<'s>(w: &mut Writer<'s>, toks: &[Tok<'s>], nest: usize, suffix: usize) {
    let base = nest - INDENT;
    if toks.is_empty() {
        return;
    }
    if !has_comments(toks)
        && !author_breaks_within(toks)
        && w.column() + flat_width(w.prev, toks) + suffix <= WIDTH
    {
        emit_flat(w, toks, base);
        return;
    }
    if !connectives(toks).is_empty() {
        emit_chain(w, toks, nest, suffix);
        return;
    }
    // `not`s, then `(`...`)` or `any(x in list: ...)` reaching the end.
    let negations = toks
        .iter()
        .take_while(|t| matches!(t.token, Token::Not | Token::Bang))
        .count();
    let (open, quantifier) = match toks.get(negations).map(|t| t.token) {
        Some(Token::LParen) => (negations, false),
        Some(Token::Any | Token::All) => (negations + 1, true),
        _ => (usize::MAX, false),
    };
    let close = toks.len() - 1;
    let group = open < close
        && matches!(toks[open].token, Token::LParen)
        && matching(toks, open) == Some(close);
    if group {
        let inside = &toks[open + 1..close];
        let body_start = if quantifier {
            at_depth_zero(inside, |t| matches!(t.token, Token::Colon))
                .first()
                .map(|colon| colon + 1)
        } else {
            Some(0)
        };
        if let Some(body_start) = body_start {
            w.indent = nest;
            for tok in &toks[..=open + body_start] {
                w.token(tok);
            }
            emit_chain(w, &inside[body_start..], nest, suffix + 1);
            w.indent = nest;
            w.token(&toks[close]);
            return;
        }
    }
    emit_flat(w, toks, base);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(text: &str) -> String {
        match format_source("t.writ", text) {
            Ok(out) => out,
            Err(diagnostics) => panic!("does not format: {diagnostics}"),
        }
    }

    /// Formats, checks idempotence and token preservation, returns the text.
    fn canonical(text: &str) -> String {
        let once = fmt(text);
        assert_eq!(fmt(&once), once, "not idempotent for:\n{text}");
        assert!(same_tokens(text, &once));
        once
    }

    #[test]
    fn check_diffs_are_unified() {
        assert_eq!(unified_diff("t.writ", "a\n", "a\n"), "");
        let before = "1\n2\n3\n4\nold\n6\n7\n8\n9\n10\n11\n12\n13\n14\nlast\n";
        let after = "1\n2\n3\n4\nnew\n6\n7\n8\n9\n10\n11\n12\n13\n14\nlast\nadded\n";
        assert_eq!(
            unified_diff("t.writ", before, after),
            "--- t.writ\n+++ t.writ (formatted)\n\
             @@ -2,7 +2,7 @@\n 2\n 3\n 4\n-old\n+new\n 6\n 7\n 8\n\
             @@ -13,3 +13,4 @@\n 13\n 14\n last\n+added\n"
        );
    }

    #[test]
    fn spacing_is_normalised() {
        assert_eq!(
            canonical("const  x=[ \"a\",\"b\" ] ;\n@id( \"r\" )  @control(\"a\",\"b\")\nforbid if x . y==1 and len( requested.scope )>2 and teams [ subject.owner ] . c;"),
            "const x = [\"a\", \"b\"];\n\n@id(\"r\")\n@control(\"a\", \"b\")\nforbid if x.y == 1 and len(requested.scope) > 2 and teams[subject.owner].c;\n"
        );
    }

    #[test]
    fn ttl_expressions_are_spaced_like_other_operators() {
        assert_eq!(
            canonical("limit ttl min( ttl_exception,until  context.exception.expires )if a;"),
            "limit ttl min(ttl_exception, until context.exception.expires) if a;\n"
        );
        assert_eq!(
            canonical("limit ttl 1d*days+( until context.until );"),
            "limit ttl 1d * days + (until context.until);\n"
        );
        assert_eq!(
            canonical("forbid if until(context.deadline)<1h;"),
            "forbid if until (context.deadline) < 1h;\n"
        );
    }

    #[test]
    fn clauses_go_on_continuation_lines() {
        assert_eq!(
            canonical("permit if action == \"read\" grant [\"read:x\"] for 1h revoke on task_end audience \"x\" log because \"why\";"),
            "permit if action == \"read\"\n  grant [\"read:x\"] for 1h\n  revoke on task_end\n  audience \"x\"\n  log\n  because \"why\";\n"
        );
        assert_eq!(
            canonical("require   audience resource.id if context has approval;"),
            "require audience resource.id if context has approval;\n"
        );
        assert_eq!(
            canonical("limit ttl 5m;permit;"),
            "limit ttl 5m;\n\npermit;\n"
        );
    }

    #[test]
    fn long_conditions_break_before_connectives() {
        let text = "forbid if subject.kind == \"agent\" and action == \"invoke\" and resource.kind == \"tool\" and subject.owner == resource.owner;";
        assert_eq!(
            canonical(text),
            "forbid if subject.kind == \"agent\" and action == \"invoke\"\n  and resource.kind == \"tool\" and subject.owner == resource.owner;\n"
        );
    }

    #[test]
    fn or_breaks_before_and_and_nests() {
        let text = "forbid if subject.kind == \"agent\" and action == \"invoke\" or resource.kind == \"tool\" and subject.owner == resource.owner and environment.name == \"prod\";";
        assert_eq!(
            canonical(text),
            "forbid if subject.kind == \"agent\" and action == \"invoke\"\n  or resource.kind == \"tool\" and subject.owner == resource.owner\n    and environment.name == \"prod\";\n"
        );
    }

    #[test]
    fn parenthesised_operands_break_inside() {
        let text = "forbid if subject.auth not in workload_auth and not (subject.auth in legacy_auth and context has exception.id and context.exception.expires > environment.time and sensitivity <= internal) because \"x\";";
        assert_eq!(
            canonical(text),
            "forbid if subject.auth not in workload_auth\n  and not (subject.auth in legacy_auth and context has exception.id\n    and context.exception.expires > environment.time\n    and sensitivity <= internal)\n  because \"x\";\n"
        );
    }

    #[test]
    fn end_of_line_comments_stay_at_the_end_of_their_line() {
        let text = "forbid if a == 1 // first\n and b == 2; // after\n";
        assert_eq!(
            canonical(text),
            "forbid if a == 1 // first\n  and b == 2; // after\n"
        );
    }

    #[test]
    fn comments_inside_conditions_keep_their_place() {
        let text = "permit if action == \"read\"\n    // owners only\n    and subject.owner == resource.owner // same team\n  grant [\"read:x\"];";
        assert_eq!(
            canonical(text),
            "permit if action == \"read\"\n  // owners only\n  and subject.owner == resource.owner // same team\n  grant [\"read:x\"];\n"
        );
        // A comment inside parentheses breaks only that group.
        let text = "forbid if a and (b // why b\n or c);";
        assert_eq!(
            canonical(text),
            "forbid if a\n  and (b // why b\n    or c);\n"
        );
    }

    #[test]
    fn doc_comments_stay_above_their_rule() {
        let text = "///  Why.\n///more\n@id(\"x\") forbid;\n/// Const doc.\nconst a = 1;\nconst b = 2;\n\n\n\nconst c = 3;";
        let out = canonical(text);
        assert_eq!(
            out,
            "///  Why.\n///more\n@id(\"x\")\nforbid;\n\n/// Const doc.\nconst a = 1;\nconst b = 2;\n\nconst c = 3;\n"
        );
        let source = SourceFile::new("t.writ", out.as_str());
        let (file, _) = parser::parse_file(FileId(0), &source);
        let crate::ast::Item::Rule(rule) = &file.items[0] else {
            panic!("not a rule")
        };
        assert_eq!(rule.doc.as_deref(), Some("Why.\nmore"));
    }

    #[test]
    fn lists_with_comments_break_one_element_per_line() {
        let text = "const brokers = [\"vault\", // the main one\n \"sts\"\n // last\n ];";
        assert_eq!(
            canonical(text),
            "const brokers = [\n  \"vault\", // the main one\n  \"sts\"\n  // last\n];\n"
        );
    }

    #[test]
    fn file_comments_and_blank_lines() {
        let text = "\n\n// header\n\n\n// more\nforbid;\n// between\nforbid if a;\n\n// the end\n";
        assert_eq!(
            canonical(text),
            "// header\n\n// more\nforbid;\n\n// between\nforbid if a;\n\n// the end\n"
        );
        assert_eq!(canonical(""), "");
        assert_eq!(canonical("// only\r\n"), "// only\n");
    }

    #[test]
    fn keywords_used_as_field_names_are_not_clauses() {
        assert_eq!(
            canonical(
                "permit if not context has approval and context.log == true grant [\"a:b\"];"
            ),
            "permit if not context has approval and context.log == true\n  grant [\"a:b\"];\n"
        );
    }

    #[test]
    fn quantifiers_break_inside_their_body() {
        let text = "forbid if any(item in requested.scope: item matches \"read:*\" and contains(item, \"payments\") and starts_with(item, \"read:db://\"));";
        assert_eq!(
            canonical(text),
            "forbid if any(item in requested.scope: item matches \"read:*\"\n    and contains(item, \"payments\") and starts_with(item, \"read:db://\"));\n"
        );
    }

    #[test]
    fn a_long_head_sends_if_to_the_next_line() {
        let text = "limit scope [\"read:db://payments/orders/**\", \"write:db://payments/orders/**\"] if subject.kind == \"agent\";";
        assert_eq!(
            canonical(text),
            "limit scope [\"read:db://payments/orders/**\", \"write:db://payments/orders/**\"]\n  if subject.kind == \"agent\";\n"
        );
    }

    #[test]
    fn mistakes_are_kept() {
        assert_eq!(
            canonical("forbid if a=1&&!b||c;"),
            "forbid if a = 1 && !b || c;\n"
        );
    }

    #[test]
    fn refuses_files_that_do_not_parse() {
        let errors = format_source("t.writ", "permit if ;")
            .err()
            .map(|d| d.codes());
        assert_eq!(
            errors,
            Some(vec!["writ::parse::unexpected_token".to_owned()])
        );
    }
}
