//! What the language server knows of a policy set: its files, and the
//! names they declare (constants, rule ids, free attributes, events), read
//! from each file's syntax tree even when the set does not compile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::ast::{self, Item};
use crate::lexer::{self, Token};
use crate::source::{FileId, SourceFile};

/// Largest policy file read from disk for the set (the engine's limit).
const MAX_FILE_BYTES: u64 = crate::engine::limits::MAX_FILE_BYTES as u64;

/// Most `.writ` files of a folder taken into one set.
const MAX_FILES: usize = 1000;

/// One file of a set.
#[derive(Debug, Clone)]
pub struct SetFile {
    /// The URI the editor knows it by (or made from its path).
    pub uri: String,
    /// The name diagnostics carry: the path, or the URI.
    pub name: String,
    /// The text: the editor's when the file is open, else the disk's.
    pub text: Arc<str>,
}

/// A constant's declaration.
#[derive(Debug, Clone)]
pub struct ConstInfo {
    /// Index of its file in the set.
    pub file: usize,
    /// The name's bytes.
    pub name: (usize, usize),
    /// The declaration as written (`const short = 15m;`).
    pub source: String,
    /// Its `///` lines.
    pub doc: Option<String>,
}

/// A rule with an `@id`.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    /// Index of its file in the set.
    pub file: usize,
    /// The id string's bytes, quotes included.
    pub id_span: (usize, usize),
    /// The rule's keyword's bytes.
    pub keyword: (usize, usize),
    /// The whole rule's bytes.
    pub span: (usize, usize),
    /// `permit`, `limit`, ...
    pub kind: &'static str,
    /// Its `///` lines.
    pub doc: Option<String>,
}

/// A declared attribute (`attribute subject.repository: string "doc";`).
#[derive(Debug, Clone)]
pub struct Declared {
    /// Index of its file in the set.
    pub file: usize,
    /// The path's bytes in the declaration.
    pub span: (usize, usize),
    /// Its type as written (`string`).
    pub ty: String,
    /// What it means.
    pub doc: Option<String>,
}

/// The names a set declares and uses.
#[derive(Debug, Default)]
pub struct Index {
    /// Constants by name (the first declaration wins, as duplicates are
    /// errors the diagnostics report).
    pub consts: IndexMap<String, ConstInfo>,
    /// Rules by `@id`.
    pub rules: IndexMap<String, RuleInfo>,
    /// Fields read after a dimension (`subject.repository`), by dimension.
    pub fields: IndexMap<String, Vec<String>>,
    /// Events named after `revoke on`.
    pub events: Vec<String>,
    /// Declared attributes by path (`subject.repository`).
    pub declared: IndexMap<String, Declared>,
}

/// The `.writ` files of `folder` (not below it), sorted by name, hidden
/// ones left out; `open` gives the texts of the files the editor has open,
/// by path, which win over the disk's. A file the editor has open that is
/// not on disk yet is added too.
pub fn folder_set(folder: &Path, open: &[(PathBuf, String, Arc<str>)]) -> Vec<SetFile> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.extension().is_some_and(|ext| ext == "writ")
                        && !path
                            .file_name()
                            .is_some_and(|name| name.to_string_lossy().starts_with('.'))
                        && path.is_file()
                })
                .take(MAX_FILES)
                .collect()
        })
        .unwrap_or_default();
    for (path, _, _) in open {
        if path.parent() == Some(folder) && !paths.contains(path) {
            paths.push(path.clone());
        }
    }
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let (uri, text) = match open.iter().find(|(p, _, _)| *p == path) {
                Some((_, uri, text)) => (uri.clone(), text.clone()),
                None => (super::text::path_to_uri(&path), read_small(&path)?),
            };
            Some(SetFile {
                uri,
                name: path.display().to_string(),
                text,
            })
        })
        .collect()
}

fn read_small(path: &Path) -> Option<Arc<str>> {
    let file = std::fs::File::open(path).ok()?;
    crate::source::read_limited(file, &path.display().to_string(), MAX_FILE_BYTES)
        .ok()
        .map(Arc::from)
}

impl Index {
    /// Reads the names of every file of `set`.
    pub fn build(set: &[SetFile]) -> Index {
        let mut index = Index::default();
        for (number, file) in set.iter().enumerate() {
            let id = FileId(u32::try_from(number).unwrap_or(u32::MAX));
            let source = SourceFile::new(file.name.clone(), file.text.clone());
            let (ast, _) = crate::parser::parse_file(id, &source);
            for item in &ast.items {
                if let Item::Const(decl) = item {
                    index.add_const(number, &file.text, decl);
                } else if let Item::Rule(rule) = item {
                    index.add_rule(number, rule);
                }
            }
            index.add_uses(number, &file.text);
        }
        index
    }

    fn add_const(&mut self, file: usize, text: &str, decl: &ast::ConstDecl) {
        let name = decl.name.name.to_string();
        if self.consts.contains_key(&name) {
            return;
        }
        let (start, end) = (decl.span.start as usize, decl.span.end as usize);
        self.consts.insert(
            name,
            ConstInfo {
                file,
                name: (decl.name.span.start as usize, decl.name.span.end as usize),
                source: text.get(start..end).unwrap_or("").to_owned(),
                doc: doc_above(text, start),
            },
        );
    }

    fn add_rule(&mut self, file: usize, rule: &ast::Rule) {
        let Some(id) = rule
            .annotations
            .iter()
            .find(|a| a.name.name == "id")
            .and_then(|a| a.args.first())
        else {
            return;
        };
        if self.rules.contains_key(&id.value) {
            return;
        }
        self.rules.insert(
            id.value.clone(),
            RuleInfo {
                file,
                id_span: (id.span.start as usize, id.span.end as usize),
                keyword: (
                    rule.keyword_span.start as usize,
                    rule.keyword_span.end as usize,
                ),
                span: (rule.span.start as usize, rule.span.end as usize),
                kind: rule.kind.keyword(),
                doc: rule.doc.clone(),
            },
        );
    }

    /// Free attributes (`dim.field`) and events (`revoke on name`) the text
    /// uses, from its tokens.
    fn add_uses(&mut self, file: usize, text: &str) {
        let (tokens, _) = lexer::lex(FileId(0), text);
        let tokens: Vec<_> = tokens
            .into_iter()
            .filter(|t| !t.token.is_trivia())
            .collect();
        self.add_declarations(file, text, &tokens);
        for window in tokens.windows(3) {
            if let (Token::Ident(dim), Token::Dot) = (&window[0].token, &window[1].token) {
                if crate::schema::Dim::from_name(dim).is_some() {
                    let field = slice(text, window[2].span);
                    if is_name(field) {
                        let fields = self.fields.entry(dim.to_string()).or_default();
                        if !fields.iter().any(|f| f == field) {
                            fields.push(field.to_owned());
                        }
                    }
                }
            }
            if let (Token::Revoke, Token::On, Token::Ident(event)) =
                (&window[0].token, &window[1].token, &window[2].token)
            {
                if !self.events.iter().any(|e| e == event) {
                    self.events.push(event.to_string());
                }
            }
        }
    }
}

impl Index {
    /// `attribute PATH: TYPE ["doc"];`, read from the tokens so that it is
    /// found whether or not the file parses (docs/language.md, 5.7).
    fn add_declarations(&mut self, file: usize, text: &str, tokens: &[lexer::Spanned]) {
        for (at, token) in tokens.iter().enumerate() {
            if !matches!(&token.token, Token::Ident(word) if word == "attribute") {
                continue;
            }
            let Some(first) = tokens.get(at + 1) else {
                continue;
            };
            if !matches!(&first.token, Token::Ident(dim) if crate::schema::Dim::from_name(dim).is_some())
            {
                continue;
            }
            let mut path = slice(text, first.span).to_owned();
            let mut end = first.span.end as usize;
            let mut next = at + 2;
            while let (Some(dot), Some(field)) = (tokens.get(next), tokens.get(next + 1)) {
                if dot.token != Token::Dot || !is_name(slice(text, field.span)) {
                    break;
                }
                path.push('.');
                path.push_str(slice(text, field.span));
                end = field.span.end as usize;
                next += 2;
            }
            let (Some(colon), Some(ty)) = (tokens.get(next), tokens.get(next + 1)) else {
                continue;
            };
            if colon.token != Token::Colon || !path.contains('.') {
                continue;
            }
            let doc = match tokens.get(next + 2).map(|t| &t.token) {
                Some(Token::Str(doc)) => Some(doc.clone()),
                _ => None,
            };
            if let Some((dim, field)) = path.split_once('.') {
                let first_field = field.split('.').next().unwrap_or(field);
                let fields = self.fields.entry(dim.to_owned()).or_default();
                if !fields.iter().any(|f| f == first_field) {
                    fields.push(first_field.to_owned());
                }
            }
            self.declared.entry(path).or_insert(Declared {
                file,
                span: (first.span.start as usize, end),
                ty: slice(text, ty.span).to_owned(),
                doc,
            });
        }
    }

    /// The declaration that covers `path`: its own, or the nearest one
    /// above it (`context.exception: object` covers
    /// `context.exception.expires`).
    pub fn declaration_of(&self, path: &str) -> Option<(&str, &Declared)> {
        let mut probe = path;
        loop {
            if let Some((name, declared)) = self.declared.get_key_value(probe) {
                return Some((name.as_str(), declared));
            }
            probe = probe.rsplit_once('.')?.0;
        }
    }
}

/// The text of a token.
pub fn slice(text: &str, span: crate::source::Span) -> &str {
    text.get(span.start as usize..span.end as usize)
        .unwrap_or("")
}

/// A name as the lexer reads one (keywords included).
pub fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `///` lines right above byte `start` of `text`, joined.
fn doc_above(text: &str, start: usize) -> Option<String> {
    let before = text.get(..start)?;
    // Leave out the declaration's own line.
    let head = &before[..before.rfind('\n')?];
    let mut lines: Vec<&str> = head
        .lines()
        .rev()
        .map_while(|line| line.trim().strip_prefix("///"))
        .map(str::trim)
        .collect();
    if lines.is_empty() {
        return None;
    }
    lines.reverse();
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_constants_rules_fields_and_events() {
        let text = "/// The short one.\n/// Really.\nconst short = 15m;\n\n/// Reads.\n@id(\"r\")\npermit if subject.repo == \"x\" and subject.kind == \"ci\" grant [\"a\"] for short revoke on job_done;\n";
        let set = vec![SetFile {
            uri: "untitled:a".to_owned(),
            name: "a".to_owned(),
            text: Arc::from(text),
        }];
        let index = Index::build(&set);
        let short = index.consts.get("short");
        assert_eq!(short.map(|c| c.source.as_str()), Some("const short = 15m;"));
        assert_eq!(
            short.and_then(|c| c.doc.as_deref()),
            Some("The short one.\nReally.")
        );
        let rule = index.rules.get("r");
        assert_eq!(rule.map(|r| r.kind), Some("permit"));
        assert_eq!(rule.and_then(|r| r.doc.as_deref()), Some("Reads."));
        assert_eq!(
            index.fields.get("subject").cloned(),
            Some(vec!["repo".to_owned(), "kind".to_owned()])
        );
        assert_eq!(index.events, vec!["job_done".to_owned()]);

        let declared = "attribute context.pipeline.protected: bool \"protected branch\";\nattribute subject.repo: any;\n";
        let set = vec![SetFile {
            uri: "untitled:b".to_owned(),
            name: "b".to_owned(),
            text: Arc::from(declared),
        }];
        let index = Index::build(&set);
        let protected = index.declared.get("context.pipeline.protected");
        assert_eq!(protected.map(|d| d.ty.as_str()), Some("bool"));
        assert_eq!(
            protected.and_then(|d| d.doc.as_deref()),
            Some("protected branch")
        );
        assert_eq!(protected.map(|d| d.span), Some((10, 36)));
        assert_eq!(
            index.declared.get("subject.repo").map(|d| d.ty.as_str()),
            Some("any")
        );
        assert_eq!(
            index
                .declaration_of("context.pipeline.protected.x")
                .map(|(p, _)| p),
            Some("context.pipeline.protected")
        );
        assert!(index.declaration_of("context.pipeline").is_none());
    }
}
