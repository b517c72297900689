//! Templates: strings with `{hole}`s (grants, scope limits, audiences and
//! `because` messages).

use super::{CheckError, Checker};
use crate::ast::{self, ExprKind as A};
use crate::ir::{Template, TemplatePart, Ty};
use crate::scope::ScopeItem;
use crate::source::Span;

impl Checker<'_> {
    /// Parses `{hole}`s in a template string written at `span`.
    pub(super) fn template(
        &mut self,
        text: &str,
        span: Span,
        scope_item: bool,
    ) -> Option<Template> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let bad = |checker: &mut Self, reason: &str| {
            checker.error(
                span,
                CheckError::BadTemplate {
                    template: text.to_owned(),
                    reason: reason.to_owned(),
                    span: span.source_span(),
                },
            );
            None
        };
        while !rest.is_empty() {
            if let Some(tail) = rest.strip_prefix("\\{") {
                literal.push('{');
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix("\\}") {
                literal.push('}');
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix('{') {
                let Some(close) = tail.find('}') else {
                    return bad(self, "`{` is never closed");
                };
                let hole = &tail[..close];
                // Offsets are approximate when the string holds escapes.
                let offset = span.start as usize + 1 + (text.len() - rest.len()) + 1;
                // Most holes are plain paths (`resource.id`): build those
                // directly; anything else goes through the parser.
                let parsed = match simple_path(hole, span.file, offset) {
                    Some(path) => path,
                    None => {
                        if let Some(error) = crate::parser::hole_limits(span.file, hole, offset) {
                            self.diagnostics.push(error, self.sources.get(span.file));
                            return None;
                        }
                        let Some(parsed) = crate::parser::parse_expr(span.file, hole, offset)
                        else {
                            return bad(self, &format!("`{hole}` is not an expression"));
                        };
                        parsed
                    }
                };
                let expr = self.expr(&parsed)?;
                if matches!(expr.ty, Ty::Bool | Ty::List | Ty::StrList) {
                    return bad(
                        self,
                        &format!("`{hole}` is a {}, not a string", expr.ty.name()),
                    );
                }
                if !literal.is_empty() {
                    parts.push(TemplatePart::Text(std::mem::take(&mut literal).into()));
                }
                parts.push(TemplatePart::Hole(expr));
                rest = &tail[close + 1..];
            } else if rest.starts_with('}') {
                return bad(self, "`}` without `{`");
            } else {
                // Plain text up to the next brace or backslash, at once.
                let first = rest.chars().next().map_or(1, char::len_utf8);
                let end = rest[first..]
                    .find(['{', '}', '\\'])
                    .map_or(rest.len(), |at| at + first);
                literal.push_str(&rest[..end]);
                rest = &rest[end..];
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Text(literal.into()));
        }
        if scope_item && parts.iter().all(|p| matches!(p, TemplatePart::Text(_))) {
            let whole: String = parts
                .iter()
                .map(|p| match p {
                    TemplatePart::Text(t) => t.to_string(),
                    TemplatePart::Hole(_) => String::new(),
                })
                .collect();
            if let Err(error) = ScopeItem::parse(&whole) {
                self.error(
                    span,
                    CheckError::BadScope {
                        pattern: whole,
                        reason: error.to_string(),
                        span: span.source_span(),
                    },
                );
                return None;
            }
        }
        Some(Template {
            source: text.into(),
            parts,
            span,
        })
    }
}

/// `name(.field)*` with plain identifiers, as the AST the parser would
/// build; `None` for anything else (keywords, spaces, operators).
fn simple_path(text: &str, file: crate::source::FileId, offset: usize) -> Option<ast::Expr> {
    // Over-long paths go through the parser, whose limits refuse them.
    if text.bytes().filter(|&b| b == b'.').count() > crate::parser::limits::MAX_OPERATORS {
        return None;
    }
    let is_ident = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut parts = text.split('.');
    let first = parts.next()?;
    let is_keyword = |part: &str| {
        use logos::Logos;
        !matches!(
            crate::lexer::Token::lexer(part).next(),
            Some(Ok(crate::lexer::Token::Ident(_)))
        )
    };
    if !is_ident(first) || is_keyword(first) {
        return None;
    }
    let mut end = offset + first.len();
    let mut expr = ast::Expr::new(
        A::Name(crate::lexer::name(first)),
        Span::new(file, offset, end),
    );
    for part in parts {
        if !is_ident(part) {
            return None;
        }
        let start = end + 1;
        end = start + part.len();
        let field = ast::Ident {
            name: crate::lexer::name(part),
            span: Span::new(file, start, end),
        };
        expr = ast::Expr::new(
            A::Field(Box::new(expr), field),
            Span::new(file, offset, end),
        );
    }
    Some(expr)
}
