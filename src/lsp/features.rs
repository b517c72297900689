//! What the server answers: diagnostics, hover, definition, completion,
//! document symbols and formatting, each a function of a policy set, its
//! [`Index`], the data file and a position.

use lsp_types::{
    CompletionItem, CompletionItemKind, Diagnostic, DiagnosticRelatedInformation,
    DiagnosticSeverity, Documentation, Hover, HoverContents, Location, MarkupContent, MarkupKind,
    NumberOrString,
};
use miette::Severity;
use serde_json::Value;

use super::index::{is_name, slice, Index, SetFile};
use super::text;
use crate::diagnostics::Diagnostics;
use crate::lexer::{self, Token};
use crate::schema::{Dim, ATTRIBUTES};
use crate::source::FileId;

/// The data file given in the initialization options.
#[derive(Debug)]
pub struct Data {
    /// Its URI.
    pub uri: String,
    /// Its text, to find keys in.
    pub text: String,
    /// Its value.
    pub value: Value,
}

/// The sensitivity levels, lowest first.
const LEVELS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// The built-in functions and what they do.
const FUNCTIONS: [(&str, &str); 6] = [
    (
        "len",
        "`len(list)`: the number of items of a list, or of characters of a string",
    ),
    (
        "contains",
        "`contains(text, part)`: whether a string contains another",
    ),
    (
        "starts_with",
        "`starts_with(text, prefix)`: whether a string starts with another",
    ),
    (
        "ends_with",
        "`ends_with(text, suffix)`: whether a string ends with another",
    ),
    ("lower", "`lower(text)`: the string in lower case"),
    (
        "min",
        "`min(a, b, ...)`: the shortest of durations (in `limit ttl`)",
    ),
];

/// The keywords (docs/language.md, section 3), with a line each.
const KEYWORDS: [(&str, &str); 28] = [
    ("const", "`const NAME = VALUE;` names a literal or a list of literals"),
    ("permit", "`permit [if COND] [grant LIST [for DURATION]] [OBLIGATION ...]`: allows"),
    ("forbid", "`forbid [if COND]`: denies, whatever the permits say"),
    ("limit", "`limit ttl CAP` caps the TTL; `limit scope LIST` keeps only the scope items a pattern covers"),
    ("require", "`require OBLIGATION [if COND]`: attaches an obligation to an allow"),
    ("if", "the rule's condition"),
    ("grant", "`grant [\"verb:{resource.id}\"]`: the scope item templates a permit grants"),
    ("for", "`for DURATION`: the longest TTL a permit grants"),
    ("because", "`because \"template\"`: the message the trace shows when the rule matches"),
    ("ttl", "`limit ttl CAP`"),
    ("scope", "`limit scope LIST`"),
    ("approval", "the obligation that a person approves the credential"),
    ("revoke", "`revoke on EVENT`: the obligation to revoke the credential on an event"),
    ("on", "`revoke on EVENT`"),
    ("audience", "`audience VALUE`: the obligation to bind the token to an audience"),
    ("log", "the obligation to log the issuance"),
    ("and", "both conditions hold"),
    ("or", "either condition holds"),
    ("not", "the condition does not hold"),
    ("in", "`x in list`: membership"),
    ("has", "`dim has field`: whether the request carries the field"),
    ("matches", "`text matches \"glob*\"`: a glob match"),
    ("any", "`any(x in list: COND)`: some item satisfies the condition"),
    ("all", "`all(x in list: COND)`: every item satisfies the condition"),
    ("true", "the bool true"),
    ("false", "the bool false"),
    ("until", "`until TIME`: the duration left until an instant"),
    ("data", "not a keyword: data is reached by its key's name (`teams[subject.owner]`)"),
];

/// One file's diagnostics in the protocol's shape, for every file of
/// `set` (in set order). A diagnostic without a location goes to file
/// `fallback`, the one being edited.
pub fn diagnostics(set: &[SetFile], found: &Diagnostics, fallback: usize) -> Vec<Vec<Diagnostic>> {
    let mut out: Vec<Vec<Diagnostic>> = vec![Vec::new(); set.len()];
    for report in found.reports() {
        let labels: Vec<miette::LabeledSpan> = report
            .labels()
            .map(|labels| labels.collect())
            .unwrap_or_default();
        let file_of = |span: &miette::SourceSpan| -> Option<usize> {
            let contents = report.source_code()?.read_span(span, 0, 0).ok()?;
            let name = contents.name()?;
            set.iter().position(|file| file.name == name)
        };
        let primary = labels.first();
        let file = primary
            .and_then(|label| file_of(label.inner()))
            .unwrap_or(fallback);
        let Some(target) = set.get(file) else {
            continue;
        };
        let range = primary.map_or_else(
            || text::range(&target.text, 0, 0),
            |label| text::range(&target.text, label.offset(), label.offset() + label.len()),
        );
        let mut message = report.to_string();
        if let Some(text) = primary.and_then(|label| label.label()) {
            message.push_str(&format!(" ({text})"));
        }
        if let Some(help) = report.help() {
            message.push_str(&format!("\nhelp: {help}"));
        }
        let related: Vec<DiagnosticRelatedInformation> = labels
            .iter()
            .skip(1)
            .filter_map(|label| {
                let other = set.get(file_of(label.inner())?)?;
                let uri = other.uri.parse().ok()?;
                Some(DiagnosticRelatedInformation {
                    location: Location::new(
                        uri,
                        text::range(&other.text, label.offset(), label.offset() + label.len()),
                    ),
                    message: label.label().unwrap_or("here").to_owned(),
                })
            })
            .collect();
        out[file].push(Diagnostic {
            range,
            severity: Some(match report.severity() {
                Some(Severity::Warning) => DiagnosticSeverity::WARNING,
                Some(Severity::Advice) => DiagnosticSeverity::INFORMATION,
                _ => DiagnosticSeverity::ERROR,
            }),
            code: report
                .code()
                .map(|code| NumberOrString::String(code.to_string())),
            source: Some("writ".to_owned()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            ..Diagnostic::default()
        });
    }
    out
}

/// The names around a byte offset: the token under it and the dotted path
/// it ends (`subject.repository` for a cursor on `repository`).
struct AtCursor {
    /// The token.
    token: Token,
    /// Its bytes.
    span: (usize, usize),
    /// The dotted path up to and including the token, when it is a name.
    path: Vec<String>,
    /// The path is a field of an expression that is not a name
    /// (`teams[x].clusters`).
    after_dot: bool,
}

fn at_cursor(text: &str, offset: usize) -> Option<AtCursor> {
    let (tokens, _) = lexer::lex(FileId(0), text);
    let tokens: Vec<_> = tokens
        .into_iter()
        .filter(|t| !t.token.is_trivia())
        .collect();
    let index = tokens
        .iter()
        .position(|t| (t.span.start as usize) <= offset && offset <= t.span.end as usize)?;
    // At the boundary of two tokens (`a|.b`), prefer the name.
    let index = if !is_name(slice(text, tokens[index].span))
        && index > 0
        && tokens[index - 1].span.end as usize == offset
    {
        index - 1
    } else {
        index
    };
    let found = &tokens[index];
    let mut path = Vec::new();
    let mut after_dot = false;
    if is_name(slice(text, found.span)) {
        path.push(slice(text, found.span).to_owned());
        let mut at = index;
        while at >= 2
            && tokens[at - 1].token == Token::Dot
            && is_name(slice(text, tokens[at - 2].span))
        {
            path.insert(0, slice(text, tokens[at - 2].span).to_owned());
            at -= 2;
        }
        after_dot = at >= 1 && tokens[at - 1].token == Token::Dot;
    }
    Some(AtCursor {
        token: found.token.clone(),
        span: (found.span.start as usize, found.span.end as usize),
        path,
        after_dot,
    })
}

fn markdown(value: String, text: &str, span: (usize, usize)) -> Hover {
    Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value,
        }),
        range: Some(text::range(text, span.0, span.1)),
    }
}

/// What to show for the token at `offset` of file `file` of the set.
pub fn hover(
    set: &[SetFile],
    index: &Index,
    data: Option<&Data>,
    file: usize,
    offset: usize,
) -> Option<Hover> {
    let text = &set.get(file)?.text;
    // A rule, from anywhere on its `@id` string or its keyword.
    for (id, rule) in &index.rules {
        if rule.file == file
            && ((rule.id_span.0..=rule.id_span.1).contains(&offset)
                || (rule.keyword.0..=rule.keyword.1).contains(&offset))
        {
            let span = if (rule.id_span.0..=rule.id_span.1).contains(&offset) {
                rule.id_span
            } else {
                rule.keyword
            };
            let mut value = format!("**rule** `{id}` (`{}`)", rule.kind);
            if let Some(doc) = &rule.doc {
                value.push_str(&format!("\n\n{doc}"));
            }
            return Some(markdown(value, text, span));
        }
    }
    let cursor = at_cursor(text, offset)?;
    if let [root, _, ..] = cursor.path.as_slice() {
        if let Some(dim) = Dim::from_name(root).filter(|_| !cursor.after_dot) {
            let path = cursor.path.join(".");
            let known = ATTRIBUTES.iter().find(|def| def.path == path);
            let value = match (known, index.declaration_of(&path)) {
                (Some(def), _) => format!("`{path}`: {}\n\n{}", def.ty.name(), def.doc),
                (None, Some((declared, info))) => {
                    let mut value = if declared == path {
                        format!("`{path}`: {} (declared)", info.ty)
                    } else {
                        format!("`{path}`: inside the declared `{declared}` ({})", info.ty)
                    };
                    if let Some(doc) = &info.doc {
                        value.push_str(&format!("\n\n{doc}"));
                    }
                    if let Some(file) = set.get(info.file) {
                        let line = text::position(&file.text, info.span.0).line + 1;
                        value.push_str(&format!("\n\nDeclared at {}:{line}.", file.name));
                    }
                    value
                }
                (None, None) if dim == Dim::Requested => format!(
                    "`{path}` is not an attribute: `requested` has only `scope` and `ttl`"
                ),
                (None, None) => format!(
                    "`{path}`: a free attribute of `{root}`, not declared (any type, read from the request when it is decided; a request without it fails closed)"
                ),
            };
            return Some(markdown(value, text, cursor.span));
        }
    }
    let [name] = cursor.path.as_slice() else {
        return None;
    };
    if cursor.after_dot {
        return None;
    }
    let name = name.as_str();
    if let Some(info) = index.consts.get(name) {
        let mut value = format!("**constant**\n\n```writ\n{}\n```", info.source);
        if let Some(doc) = &info.doc {
            value.push_str(&format!("\n\n{doc}"));
        }
        if let Some(over) = data.and_then(|d| d.value.get(name)) {
            value.push_str(&format!("\n\nThe data file sets it to `{over}`."));
        }
        return Some(markdown(value, text, cursor.span));
    }
    if let Some(dim) = Dim::from_name(name) {
        let fields: Vec<String> = dim
            .fields()
            .map(|def| format!("- `{}`: {} — {}", def.field, def.ty.name(), def.doc))
            .collect();
        let value = format!(
            "`{name}`: a dimension of the request\n\n{}",
            fields.join("\n")
        );
        return Some(markdown(value, text, cursor.span));
    }
    if let Some(def) = ATTRIBUTES
        .iter()
        .find(|def| def.dim.is_none() && def.field == name)
    {
        let mut value = format!("`{name}`: {}\n\n{}", def.ty.name(), def.doc);
        if name == "sensitivity" {
            value.push_str("\n\nLevels: `public` < `internal` < `confidential` < `restricted`.");
        }
        return Some(markdown(value, text, cursor.span));
    }
    if let Some(rank) = LEVELS.iter().position(|level| *level == name) {
        let value = format!(
            "`{name}`: a sensitivity level ({} of 4: `public` < `internal` < `confidential` < `restricted`)",
            rank + 1
        );
        return Some(markdown(value, text, cursor.span));
    }
    if let Some((_, doc)) = FUNCTIONS.iter().find(|(f, _)| *f == name) {
        return Some(markdown((*doc).to_owned(), text, cursor.span));
    }
    if let Some(value) = data.and_then(|d| d.value.get(name)) {
        let shown = serde_json::to_string(value).unwrap_or_default();
        let shown: String = shown.chars().take(400).collect();
        return Some(markdown(
            format!("**data** `{name}`\n\n```json\n{shown}\n```"),
            text,
            cursor.span,
        ));
    }
    if !matches!(cursor.token, Token::Ident(_)) {
        if let Some((_, doc)) = KEYWORDS.iter().find(|(k, _)| *k == name) {
            return Some(markdown(format!("`{name}`: {doc}"), text, cursor.span));
        }
    }
    None
}

/// Where the name at `offset` is declared: a constant's `const`, or a data
/// key in the data file.
pub fn definition(
    set: &[SetFile],
    index: &Index,
    data: Option<&Data>,
    file: usize,
    offset: usize,
) -> Option<Location> {
    let text = &set.get(file)?.text;
    let cursor = at_cursor(text, offset)?;
    if cursor.after_dot {
        return None;
    }
    if cursor.path.len() >= 2 && Dim::from_name(&cursor.path[0]).is_some() {
        let (_, declared) = index.declaration_of(&cursor.path.join("."))?;
        let target = set.get(declared.file)?;
        return Some(Location::new(
            target.uri.parse().ok()?,
            text::range(&target.text, declared.span.0, declared.span.1),
        ));
    }
    let [name] = cursor.path.as_slice() else {
        return None;
    };
    let name = name.as_str();
    if let Some(info) = index.consts.get(name) {
        let target = set.get(info.file)?;
        return Some(Location::new(
            target.uri.parse().ok()?,
            text::range(&target.text, info.name.0, info.name.1),
        ));
    }
    let data = data?;
    data.value.get(name)?;
    let needle = format!("\"{name}\"");
    let at = data.text.find(&needle)?;
    Some(Location::new(
        data.uri.parse().ok()?,
        text::range(&data.text, at, at + needle.len()),
    ))
}

fn item(
    label: &str,
    kind: CompletionItemKind,
    detail: String,
    doc: Option<String>,
) -> CompletionItem {
    CompletionItem {
        label: label.to_owned(),
        kind: Some(kind),
        detail: Some(detail),
        documentation: doc.map(|value| {
            Documentation::MarkupContent(MarkupContent {
                kind: MarkupKind::Markdown,
                value,
            })
        }),
        ..CompletionItem::default()
    }
}

/// What may be written at `offset` of file `file`.
pub fn completion(
    set: &[SetFile],
    index: &Index,
    data: Option<&Data>,
    file: usize,
    offset: usize,
) -> Vec<CompletionItem> {
    let Some(target) = set.get(file) else {
        return Vec::new();
    };
    let text = &target.text;
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |at| at + 1);
    let before = text.get(line_start..offset).unwrap_or("");
    // The word being typed, and what comes before it.
    let word_start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
        .last()
        .map_or(before.len(), |(at, _)| at);
    let head = &before[..word_start];
    if let Some(base) = head.strip_suffix('.') {
        // The dotted chain before the dot: `subject`, `context.pipeline`.
        let chain_start = base
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .last()
            .map_or(base.len(), |(at, _)| at);
        let chain = &base[chain_start..];
        let root = chain.split('.').next().unwrap_or("");
        let declared_below = |prefix: &str| -> Vec<CompletionItem> {
            let mut items: Vec<CompletionItem> = Vec::new();
            for (path, info) in &index.declared {
                let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                    continue;
                };
                let next = rest.split('.').next().unwrap_or(rest);
                if items.iter().any(|i| i.label == next) {
                    continue;
                }
                let (detail, doc) = if next == rest {
                    (format!("{} (declared)", info.ty), info.doc.clone())
                } else {
                    ("declared below".to_owned(), None)
                };
                items.push(item(next, CompletionItemKind::FIELD, detail, doc));
            }
            items
        };
        if let Some(dim) = Dim::from_name(root) {
            if chain != root {
                return declared_below(chain);
            }
            let mut items: Vec<CompletionItem> = dim
                .fields()
                .map(|def| {
                    item(
                        def.field,
                        CompletionItemKind::FIELD,
                        def.ty.name().to_owned(),
                        Some(def.doc.to_owned()),
                    )
                })
                .collect();
            for declared in declared_below(root) {
                if !items.iter().any(|i| i.label == declared.label) {
                    items.push(declared);
                }
            }
            for field in index.fields.get(root).into_iter().flatten() {
                if !items.iter().any(|i| i.label == *field) && dim != Dim::Requested {
                    items.push(item(
                        field,
                        CompletionItemKind::FIELD,
                        "free attribute".to_owned(),
                        None,
                    ));
                }
            }
            return items;
        }
        if let Some(Value::Object(fields)) = data.and_then(|d| d.value.get(chain)) {
            return fields
                .keys()
                .map(|key| {
                    item(
                        key,
                        CompletionItemKind::FIELD,
                        format!("data `{root}`"),
                        None,
                    )
                })
                .collect();
        }
        return Vec::new();
    }
    if head.trim_end().ends_with("revoke on") {
        let mut events = index.events.clone();
        if !events.iter().any(|e| e == "task_end") {
            events.push("task_end".to_owned());
        }
        return events
            .iter()
            .map(|event| item(event, CompletionItemKind::EVENT, "event".to_owned(), None))
            .collect();
    }
    if head.ends_with('@') {
        return vec![
            item(
                "id",
                CompletionItemKind::PROPERTY,
                "@id(\"...\"): the rule's id".to_owned(),
                None,
            ),
            item(
                "control",
                CompletionItemKind::PROPERTY,
                "@control(\"...\"): controls the rule implements".to_owned(),
                None,
            ),
        ];
    }
    let mut items = Vec::new();
    for (keyword, doc) in KEYWORDS.iter().filter(|(k, _)| *k != "data") {
        items.push(item(
            keyword,
            CompletionItemKind::KEYWORD,
            "keyword".to_owned(),
            Some((*doc).to_owned()),
        ));
    }
    for dim in Dim::ALL {
        items.push(item(
            dim.name(),
            CompletionItemKind::MODULE,
            "dimension".to_owned(),
            None,
        ));
    }
    for def in ATTRIBUTES.iter().filter(|def| def.dim.is_none()) {
        items.push(item(
            def.field,
            CompletionItemKind::FIELD,
            def.ty.name().to_owned(),
            Some(def.doc.to_owned()),
        ));
    }
    for level in LEVELS {
        items.push(item(
            level,
            CompletionItemKind::ENUM_MEMBER,
            "sensitivity level".to_owned(),
            None,
        ));
    }
    for (name, info) in &index.consts {
        items.push(item(
            name,
            CompletionItemKind::CONSTANT,
            info.source.clone(),
            info.doc.clone(),
        ));
    }
    for (name, doc) in FUNCTIONS {
        items.push(item(
            name,
            CompletionItemKind::FUNCTION,
            "function".to_owned(),
            Some(doc.to_owned()),
        ));
    }
    if let Some(Value::Object(keys)) = data.map(|d| &d.value) {
        for key in keys.keys().filter(|k| !index.consts.contains_key(*k)) {
            items.push(item(
                key,
                CompletionItemKind::VARIABLE,
                "data".to_owned(),
                None,
            ));
        }
    }
    items
}

/// The rules (by `@id`) and constants of file `file`, for the outline.
#[allow(deprecated)] // `DocumentSymbol::deprecated` must still be written.
pub fn symbols(set: &[SetFile], index: &Index, file: usize) -> Vec<lsp_types::DocumentSymbol> {
    let Some(target) = set.get(file) else {
        return Vec::new();
    };
    let text = &target.text;
    let mut out = Vec::new();
    for (name, info) in index.consts.iter().filter(|(_, c)| c.file == file) {
        let decl_end = info.name.1 + text[info.name.1..].find(';').map_or(0, |at| at + 1);
        out.push(lsp_types::DocumentSymbol {
            name: name.clone(),
            detail: Some(info.source.clone()),
            kind: lsp_types::SymbolKind::CONSTANT,
            tags: None,
            deprecated: None,
            range: text::range(text, info.name.0, decl_end),
            selection_range: text::range(text, info.name.0, info.name.1),
            children: None,
        });
    }
    for (id, rule) in index.rules.iter().filter(|(_, r)| r.file == file) {
        out.push(lsp_types::DocumentSymbol {
            name: id.clone(),
            detail: Some(rule.kind.to_owned()),
            kind: lsp_types::SymbolKind::FUNCTION,
            tags: None,
            deprecated: None,
            range: text::range(text, rule.span.0, rule.span.1),
            selection_range: text::range(text, rule.id_span.0, rule.id_span.1),
            children: None,
        });
    }
    out.sort_by_key(|symbol| (symbol.range.start.line, symbol.range.start.character));
    out
}

/// The whole file in `writ fmt`'s layout, as one edit (none when it is
/// already formatted); `Err` with the reason when it does not parse.
pub fn format(name: &str, text: &str) -> Result<Vec<lsp_types::TextEdit>, String> {
    match crate::fmt::format_source(name, text) {
        Ok(formatted) if formatted == text => Ok(Vec::new()),
        Ok(formatted) => Ok(vec![lsp_types::TextEdit::new(text::whole(text), formatted)]),
        Err(diagnostics) => Err(format!(
            "the file does not parse, so it is left as it is ({} diagnostic(s))",
            diagnostics.len()
        )),
    }
}

/// Quick fixes for the diagnostics the editor sends back: a diagnostic of
/// writ's whose help says "did you mean `x`?" over a misspelled name
/// becomes an edit that writes `x` there (for an attribute, `subject.kind`
/// over `kidn`, only the field).
// `WorkspaceEdit::changes` is keyed by lsp-types' `Uri`, whose lazily
// parsed parts clippy takes for mutable state; nothing mutates a key here.
#[allow(clippy::mutable_key_type)]
pub fn code_actions(
    uri: &lsp_types::Uri,
    text: &str,
    diagnostics: &[Diagnostic],
) -> Vec<lsp_types::CodeActionOrCommand> {
    let mut out = Vec::new();
    for diagnostic in diagnostics {
        if diagnostic.source.as_deref() != Some("writ") {
            continue;
        }
        let Some(suggestion) = diagnostic
            .message
            .split_once("did you mean `")
            .and_then(|(_, rest)| rest.split_once("`?"))
            .map(|(suggestion, _)| suggestion)
        else {
            continue;
        };
        let start = text::offset(text, diagnostic.range.start);
        let end = text::offset(text, diagnostic.range.end);
        let Some(written) = text.get(start..end) else {
            continue;
        };
        let replacement = match suggestion.rsplit_once('.') {
            Some((_, field)) if !written.contains('.') => field,
            _ => suggestion,
        };
        if !is_name(written) || !is_name(replacement) || written == replacement {
            continue;
        }
        let edit = lsp_types::TextEdit::new(diagnostic.range, replacement.to_owned());
        let changes = std::iter::once((uri.clone(), vec![edit])).collect();
        out.push(lsp_types::CodeActionOrCommand::CodeAction(
            lsp_types::CodeAction {
                title: format!("Replace `{written}` with `{replacement}`"),
                kind: Some(lsp_types::CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![diagnostic.clone()]),
                edit: Some(lsp_types::WorkspaceEdit {
                    changes: Some(changes),
                    ..lsp_types::WorkspaceEdit::default()
                }),
                is_preferred: Some(true),
                ..lsp_types::CodeAction::default()
            },
        ));
    }
    out
}
