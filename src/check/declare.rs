//! Declared attributes: `attribute subject.repository: string "...";`.
//!
//! A declaration names a free attribute (one the language does not name,
//! of `subject`, `resource`, `intent`, `environment` or `context`), its
//! type and what it means. Every read of a declared attribute, in any file
//! of the set, has the declared type, so `subject.repository == 42` is a
//! type mismatch. A file that declares at least one attribute is *strict*:
//! each free attribute it reads must be declared (in it or in another file
//! of the set), so `subject.repositry` there is
//! `writ::check::undeclared_attribute` with the declared name as the
//! suggestion. A declared path also covers the fields below it
//! (`context.exception: object` covers `context.exception.expires`), and
//! the fields above it are readable on the way to it.

use super::{CheckError, Checker};
use crate::ast::{self, ExprKind as A};
use crate::ir::{Attr, Dim, Ty};
use crate::schema::{declared_type, DeclaredAttr, DECLARED_TYPES};
use crate::suggest::closest;

/// Whether one path is a prefix of the other (or equal), field by field.
fn related(a: &[String], b: &[&str]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

impl Checker<'_> {
    /// Records a declaration, refusing one that names no free attribute,
    /// an unknown type, or a path declared before with another type.
    pub(super) fn declare(&mut self, decl: &ast::AttributeDecl) {
        let bad = |this: &mut Self, span: crate::source::Span, message: String, help: Option<String>| {
            this.error(
                span,
                CheckError::BadDeclaration {
                    message,
                    span: span.source_span(),
                    help,
                },
            );
        };
        if decl.keyword.name != "attribute" {
            let help = closest(&decl.keyword.name, ["attribute"])
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| {
                    Some("an item starts with `const`, `attribute`, an annotation or a rule".to_owned())
                });
            bad(
                self,
                decl.keyword.span,
                format!("`{}` does not start an item", decl.keyword.name),
                help,
            );
            return;
        }
        let root = &*decl.root.name;
        let dim = match Dim::from_name(root) {
            Some(dim) if dim != Dim::Requested => dim,
            _ => {
                bad(
                    self,
                    decl.root.span,
                    format!("`{root}` has no free attributes to declare"),
                    Some(
                        "declare attributes of `subject`, `resource`, `intent`, `environment` or `context`"
                            .to_owned(),
                    ),
                );
                return;
            }
        };
        let first = &decl.path[0];
        let known = Attr::of(dim, &first.name);
        if !matches!(known, Attr::Extra(..)) {
            bad(
                self,
                first.span,
                format!(
                    "`{}` is built in, a {}",
                    known.path(),
                    known.ty().name()
                ),
                Some("declare only the attributes the language does not name (docs/language.md, section 5.1)".to_owned()),
            );
            return;
        }
        let Some((ty_name, ty)) = declared_type(&decl.ty.name) else {
            let names: Vec<&str> = DECLARED_TYPES.iter().map(|(n, _)| *n).collect();
            let help = match closest(&decl.ty.name, names.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("the types are {}", names.join(", ")),
            };
            bad(
                self,
                decl.ty.span,
                format!("unknown type `{}`", decl.ty.name),
                Some(help),
            );
            return;
        };
        let mut segments = vec![root.to_owned()];
        segments.extend(decl.path.iter().map(|f| f.name.to_string()));
        let path = segments.join(".");
        if !self.strict_files.contains(&decl.span.file) {
            self.strict_files.push(decl.span.file);
        }
        if let Some((_, before)) = self.declared.iter().find(|(_, d)| d.path == path) {
            if before.ty_name != ty_name {
                let message = format!(
                    "`{path}` is declared a {} at {}, and here a {ty_name}",
                    before.ty_name, before.at
                );
                bad(self, decl.ty.span, message, Some("declare an attribute once, with one type".to_owned()));
            }
            // The same declaration again (an org layer repeating the pack's)
            // is fine.
            return;
        }
        self.declared.push((
            segments,
            DeclaredAttr {
                path,
                ty,
                ty_name,
                doc: decl.doc.as_ref().map(|d| d.value.clone()),
                at: self.sources.location(decl.span),
            },
        ));
    }

    /// The dimension and the fields of `expr` when it is a chain of fields
    /// on a dimension (`subject.repository`, `context.pipeline.protected`)
    /// whose first field is free.
    pub(super) fn free_chain<'e>(&self, expr: &'e ast::Expr) -> Option<(Dim, Vec<&'e ast::Ident>)> {
        // Most chains are built-in attributes: tell first, collect after.
        let (mut at, mut first, mut count) = (expr, None, 0);
        while let A::Field(base, field) = &at.kind {
            (first, count) = (Some(field), count + 1);
            at = base;
        }
        let A::Name(root) = &at.kind else {
            return None;
        };
        let shadowed = self.locals.iter().any(|(n, _)| n == root) || self.consts.contains_key(&**root);
        let dim = Dim::from_name(root).filter(|d| !shadowed && *d != Dim::Requested)?;
        let first = first?;
        if !matches!(Attr::of(dim, &first.name), Attr::Extra(..)) {
            return None;
        }
        let mut fields = Vec::with_capacity(count);
        let mut at = expr;
        while let A::Field(base, field) = &at.kind {
            fields.push(field);
            at = base;
        }
        fields.reverse();
        Some((dim, fields))
    }

    /// Whether `dim.field` is declared, so that a name close to a built-in
    /// attribute (`resource.ownerID`) is read as the declared one.
    pub(super) fn is_declared(&self, dim: Dim, field: &str) -> bool {
        self.declared
            .iter()
            .any(|(segments, _)| segments.len() >= 2 && segments[0] == dim.name() && segments[1] == field)
    }

    /// The declared type of exactly this path, if it is declared.
    pub(super) fn declared_ty(&self, dim: Dim, fields: &[&ast::Ident]) -> Option<Ty> {
        self.declared
            .iter()
            .find(|(segments, _)| {
                segments.len() == fields.len() + 1
                    && segments[0] == dim.name()
                    && segments[1..].iter().zip(fields).all(|(s, f)| *s == *f.name)
            })
            .map(|(_, d)| d.ty)
    }

    /// Whether `dim.fields[..k]` is covered by a declaration or on the way
    /// to one (so readable in a strict file).
    pub(super) fn declared_prefix(&self, dim: Dim, fields: &[&ast::Ident], k: usize) -> bool {
        let mut path: Vec<&str> = vec![dim.name()];
        path.extend(fields[..k].iter().map(|f| &*f.name));
        self.declared.iter().any(|(segments, _)| related(segments, &path))
    }

    /// In a strict file, checks that `dim.fields[..k]` is declared for each
    /// `k` from `from` to the end (covered by a declaration, or on the way
    /// to one), reporting the first that is not. Returns false when it
    /// reported.
    pub(super) fn check_declared(&mut self, dim: Dim, fields: &[&ast::Ident], from: usize) -> bool {
        if !self.strict_files.contains(&self.current_file) {
            return true;
        }
        let mut path: Vec<&str> = vec![dim.name()];
        path.extend(fields.iter().map(|f| &*f.name));
        for k in from.max(1)..=fields.len() {
            let prefix = &path[..=k];
            if self.declared.iter().any(|(segments, _)| related(segments, prefix)) {
                continue;
            }
            let written = prefix.join(".");
            let mut candidates: Vec<String> = self
                .declared
                .iter()
                .filter(|(segments, _)| segments.len() > k && segments[0] == dim.name())
                .map(|(segments, _)| segments[..=k].join("."))
                .collect();
            if k == 1 {
                candidates.extend(dim.fields().map(|def| format!("{}.{}", dim.name(), def.field)));
            }
            candidates.dedup();
            let help = match closest(&written, candidates.iter().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!(
                    "declare it in this file or another of the set, for example `attribute {written}: string \"what it is\";`"
                ),
            };
            let field = fields[k - 1];
            self.error(
                field.span,
                CheckError::UndeclaredAttribute {
                    path: written,
                    span: field.span.source_span(),
                    help: Some(help),
                },
            );
            return false;
        }
        true
    }
}
