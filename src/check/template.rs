//! Templates: strings with `{hole}`s (grants, scope limits, audiences and
//! `because` messages). The lexer splits them ([`TemplateLexer`]) and
//! lexes each hole with exact spans; the parser parses a hole under the
//! same limits as any item; this module lowers the holes and checks what a
//! template must be.

use super::{CheckError, Checker};
use crate::ir::{Template, TemplatePart, Ty};
use crate::lexer::{TemplateLexer, TemplatePiece};
use crate::parser::{parse_hole, HoleFault};
use crate::scope::ScopeItem;
use crate::source::Span;

impl Checker<'_> {
    /// Reports `text`, written at `span`, as a bad template.
    fn bad_template(&mut self, text: &str, span: Span, reason: String) -> Option<Template> {
        self.error(
            span,
            CheckError::BadTemplate {
                template: text.to_owned(),
                reason,
                span: span.source_span(),
            },
        );
        None
    }

    /// Checks and lowers a template string written at `span`; a scope item
    /// with no holes must also parse as a scope pattern.
    pub(super) fn template(
        &mut self,
        text: &str,
        span: Span,
        scope_item: bool,
    ) -> Option<Template> {
        let mut parts = Vec::new();
        let sources = self.sources;
        let source = &sources.get(span.file).text;
        for piece in TemplateLexer::new(text, span, source) {
            match piece {
                Err(fault) => return self.bad_template(text, span, fault.to_string()),
                Ok(TemplatePiece::Text(literal)) => {
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Text(literal.into()));
                    }
                }
                Ok(TemplatePiece::Hole {
                    text: hole,
                    tokens,
                    lex_error,
                }) => {
                    let parsed = match parse_hole(span.file, tokens) {
                        Err(HoleFault::Limit(error)) => {
                            self.diagnostics.push(error, self.sources.get(span.file));
                            return None;
                        }
                        Ok(parsed) if !lex_error => parsed,
                        _ => {
                            let reason = format!("`{hole}` is not an expression");
                            return self.bad_template(text, span, reason);
                        }
                    };
                    let expr = self.expr(&parsed)?;
                    if matches!(expr.ty, Ty::Bool | Ty::List | Ty::StrList) {
                        let reason = format!("`{hole}` is a {}, not a string", expr.ty.name());
                        return self.bad_template(text, span, reason);
                    }
                    parts.push(TemplatePart::Hole(expr));
                }
            }
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
