//! The library entry point: compile policy sources once, decide many times.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::authorize::Compiled;
use crate::render;
use crate::compile::{self, Tree};
use crate::decision::Decision;
use crate::diagnostics::Diagnostics;
use crate::ir::PolicySet;
use crate::parser;
use crate::request::{Prepared, Request, RequestError};
use crate::source::Sources;

/// The default policy pack, embedded at build time: `(file name, text)`.
pub const DEFAULT_PACK: &[(&str, &str)] = &[
    (
        "policies/default/identity.writ",
        include_str!("../policies/default/identity.writ"),
    ),
    (
        "policies/default/intent.writ",
        include_str!("../policies/default/intent.writ"),
    ),
    (
        "policies/default/scope.writ",
        include_str!("../policies/default/scope.writ"),
    ),
    (
        "policies/default/ttl.writ",
        include_str!("../policies/default/ttl.writ"),
    ),
    (
        "policies/default/lifecycle.writ",
        include_str!("../policies/default/lifecycle.writ"),
    ),
    (
        "policies/default/baseline.writ",
        include_str!("../policies/default/baseline.writ"),
    ),
];

/// A compiled policy set, ready to decide. Cheap to share across threads
/// (`Send + Sync`; wrap it in an `Arc`).
#[derive(Debug)]
pub struct Engine {
    sources: Sources,
    /// Shared with the traces of the decisions made.
    set: Arc<PolicySet>,
    tree: Tree,
    digest: crate::decision::Name,
}

/// Limits on what [`Engine::compile`] accepts.
pub mod limits {
    /// Largest policy file, in bytes.
    pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
    /// Most rules in one policy set.
    pub const MAX_RULES: usize = 100_000;
}

impl Engine {
    /// Compiles `(name, text)` sources, with an optional JSON data object
    /// whose keys override constants by name and add data by path.
    pub fn compile<N, T>(
        files: impl IntoIterator<Item = (N, T)>,
        data: Option<&Value>,
    ) -> Result<Engine, Diagnostics>
    where
        N: Into<String>,
        T: Into<std::sync::Arc<str>>,
    {
        let mut sources = Sources::new();
        for (name, text) in files {
            sources.add(name, text);
        }
        let mut diagnostics = Diagnostics::default();
        let data = match data {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                diagnostics.push_plain(DataError::NotAnObject);
                None
            }
        };
        let mut files = Vec::new();
        for (id, file) in sources.files() {
            if file.text.len() > limits::MAX_FILE_BYTES {
                diagnostics.push_plain(DataError::FileTooLarge {
                    name: file.name.clone(),
                    limit: limits::MAX_FILE_BYTES,
                });
                continue;
            }
            let (ast, diags) = parser::parse_file(id, file);
            diagnostics.extend(diags);
            files.push(ast);
        }
        let rule_count: usize = files
            .iter()
            .map(|f| {
                f.items
                    .iter()
                    .filter(|i| matches!(i, crate::ast::Item::Rule(_)))
                    .count()
            })
            .sum();
        if rule_count > limits::MAX_RULES {
            diagnostics.push_plain(DataError::TooManyRules {
                count: rule_count,
                limit: limits::MAX_RULES,
            });
            return Err(diagnostics);
        }
        let (set, diags) = crate::check::check(&sources, files, data);
        diagnostics.extend(diags);
        diagnostics.sort();
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        let tree = compile::compile(&set);
        let digest = digest(&sources, data).into();
        Ok(Engine {
            sources,
            set: Arc::new(set),
            tree,
            digest,
        })
    }

    /// The embedded default pack, with optional data.
    pub fn default_pack(data: Option<&Value>) -> Result<Engine, Diagnostics> {
        Engine::compile(DEFAULT_PACK.iter().copied(), data)
    }

    /// Decides a request. A request that fails validation is denied with an
    /// error; nothing here panics or allows on error.
    pub fn decide(&self, request: &Request) -> Decision {
        render::decide(&self.compiled(), request)
    }

    /// Parses a JSON request and decides it.
    pub fn decide_json(&self, text: &str) -> Result<Decision, RequestError> {
        let (request, prepared) = Request::parse_json(text)?;
        Ok(render::decide_prepared(
            &self.compiled(),
            &request,
            &prepared,
        ))
    }

    /// Decides a request that [`Request::validate`] (or
    /// [`Request::parse_json`]) has already turned into `prepared`, so it is
    /// not validated twice. `prepared` must come from this same request.
    pub(crate) fn decide_prepared(&self, request: &Request, prepared: &Prepared) -> Decision {
        render::decide_prepared(&self.compiled(), request, prepared)
    }

    /// Decides by evaluating every rule in order, without the tree. Slower;
    /// for tests that the tree changes nothing.
    pub fn decide_naive(&self, request: &Request) -> Decision {
        render::decide_naive(&self.set, &self.digest, request)
    }

    fn compiled(&self) -> Compiled<'_> {
        Compiled {
            set: &self.set,
            tree: &self.tree,
            digest: &self.digest,
        }
    }

    /// `sha256:...` over the file names, texts and data.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The id of every rule, in source order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.set.rules.iter().map(|rule| rule.id.as_str())
    }

    /// The checked rules (internal: the IR is not an API).
    #[doc(hidden)]
    pub fn policy(&self) -> &PolicySet {
        &self.set
    }

    /// The decision tree (internal: the tree is not an API).
    #[doc(hidden)]
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The sources compiled (internal).
    #[doc(hidden)]
    pub fn sources(&self) -> &Sources {
        &self.sources
    }
}

/// `sha256:` over each file's normalised name and text, then the data.
/// The name does not depend on how the path was spelled (see
/// [`digest_names`]), so that replicas loading the same files from
/// different places agree on the digest.
fn digest(sources: &Sources, data: Option<&serde_json::Map<String, Value>>) -> String {
    let mut hasher = Sha256::new();
    let names = digest_names(sources);
    for ((_, file), name) in sources.files().zip(&names) {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((file.text.len() as u64).to_le_bytes());
        hasher.update(file.text.as_bytes());
    }
    if let Some(data) = data {
        hasher.update(serde_json::to_string(data).unwrap_or_default().as_bytes());
    }
    crate::hex::prefixed("sha256:", &hasher.finalize())
}

/// The names the digest is taken over, one per file: the embedded pack's
/// files keep their own names; every other path is read lexically (`.`
/// dropped, `dir/..` folded, `\\` read as `/`) and the directory all of
/// them share is removed. `todo.writ`, `./todo.writ` and `/srv/p/todo.writ`
/// all give `todo.writ`; a directory's files are named relative to it.
fn digest_names(sources: &Sources) -> Vec<String> {
    let parts: Vec<Option<Vec<&str>>> = sources
        .files()
        .map(|(_, file)| {
            let embedded = DEFAULT_PACK
                .iter()
                .any(|(name, text)| *name == file.name && *text == &*file.text);
            (!embedded).then(|| path_parts(&file.name))
        })
        .collect();
    // The longest directory prefix every non-pack path shares.
    let mut shared: Option<&[&str]> = None;
    for path in parts.iter().flatten() {
        let dir = &path[..path.len().saturating_sub(1)];
        shared = Some(match shared {
            None => dir,
            Some(prefix) => {
                let same = prefix.iter().zip(dir).take_while(|(a, b)| a == b).count();
                &prefix[..same]
            }
        });
    }
    let strip = shared.map_or(0, <[&str]>::len);
    sources
        .files()
        .zip(&parts)
        .map(|((_, file), path)| match path {
            None => file.name.clone(),
            Some(path) => path[strip.min(path.len())..].join("/"),
        })
        .collect()
}

/// A path's components, read lexically: an absolute path starts with
/// `/`; `.` and empty components are dropped and `name/..` folded.
fn path_parts(name: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = Vec::new();
    if name.starts_with('/') || name.starts_with('\\') {
        parts.push("/");
    }
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." if parts.last() == Some(&"/") => {}
            ".." if parts.last().is_some_and(|p| *p != ".." && *p != "/") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts
}

/// Problems with inputs other than policy text.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum DataError {
    /// `--data` holding `[1, 2]`
    #[error("the data file must hold a JSON object")]
    #[diagnostic(
        code(writ::data::not_an_object),
        help("write `{{\"name\": value, ...}}`")
    )]
    NotAnObject,
    /// A policy set with more rules than the limit.
    #[error("the policy set has {count} rules, more than the limit of {limit}")]
    #[diagnostic(code(writ::limits::too_many_rules))]
    TooManyRules {
        /// How many rules.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A policy file over the size limit.
    #[error("policy file `{name}` is larger than {limit} bytes")]
    #[diagnostic(code(writ::limits::file_too_large))]
    FileTooLarge {
        /// The file.
        name: String,
        /// The limit.
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(names: &[&str]) -> String {
        let files: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), format!("@id(\"r{i}\")\npermit;\n")))
            .collect();
        match Engine::compile(files, None) {
            Ok(engine) => engine.digest().to_owned(),
            Err(d) => d.render(false),
        }
    }

    #[test]
    fn the_digest_does_not_depend_on_how_a_path_is_spelled() {
        let plain = digest_of(&["todo.writ"]);
        assert!(plain.starts_with("sha256:"), "{plain}");
        for spelling in ["./todo.writ", "/srv/policies/todo.writ", "a/../todo.writ", ".//todo.writ"] {
            assert_eq!(digest_of(&[spelling]), plain, "{spelling}");
        }
        let dir = digest_of(&["p/a.writ", "p/sub/b.writ"]);
        assert_eq!(digest_of(&["/etc/writ/p/a.writ", "/etc/writ/p/sub/b.writ"]), dir);
        assert_eq!(digest_of(&["./a.writ", "sub/b.writ"]), dir);
        // A file's place in the set still counts.
        assert_ne!(digest_of(&["p/a.writ", "p/b.writ"]), dir);
    }

    #[test]
    fn path_parts_are_read_lexically() {
        assert_eq!(path_parts("./a/./b/../c.writ"), ["a", "c.writ"]);
        assert_eq!(path_parts("/x/y.writ"), ["/", "x", "y.writ"]);
        assert_eq!(path_parts("../up.writ"), ["..", "up.writ"]);
        assert_eq!(path_parts("/../a.writ"), ["/", "a.writ"]);
    }

    /// A decision's trace is recorded by index and written from the policy
    /// set; read as entries, changed, or serialized by serde, it is the
    /// same text.
    #[test]
    fn a_trace_written_from_indexes_reads_as_its_entries() {
        let engine = Engine::default_pack(None).expect("the pack compiles");
        let text = include_str!("../examples/ci-deploy.json");
        let decision = engine.decide_json(text).expect("a valid request");
        assert!(decision.trace.len() > 10, "{}", decision.to_json());
        let written = decision.to_json();
        assert_eq!(
            serde_json::to_string(&decision).expect("serializes"),
            written
        );
        // Read as entries (built once), then owned once changed.
        assert_eq!(decision.trace.len(), decision.trace.iter().count());
        let mut owned = decision.clone();
        owned.trace.retain(|_| true);
        assert_eq!(owned.to_json(), written);
        assert_eq!(owned, decision);
        owned.trace.truncate(1);
        assert_ne!(owned.to_json(), written);
        assert_eq!(owned.trace.len(), 1);
    }

    /// The fixed text of a rule's trace entries is written once and then
    /// copied: conditions that need escapes, a failure at the second
    /// conjunct of a rule, and the same rules written again by later
    /// decisions give serde's text each time.
    #[test]
    fn trace_text_written_once_is_serdes_text() {
        let policy = r#"
@id("quoted")
forbid if context.note == "say \"hi\"\\now";
@id("second-fails")
permit if action == "deploy" and context.ticket == "T-\"7\"" grant ["read:db"];
@id("open")
permit grant ["read:db"];
"#;
        let engine = Engine::compile([("dir \"q\"/p.writ", policy)], None).expect("compiles");
        let text = include_str!("../examples/ci-deploy.json");
        let with_note = text.replace(
            r#""context": { "recent_issuances": 0 }"#,
            r#""context": { "recent_issuances": 0, "note": "x", "ticket": "y" }"#,
        );
        assert_ne!(with_note, text);
        let mut texts = Vec::new();
        for request in [text, with_note.as_str(), text] {
            let decision = engine.decide_json(request).expect("a valid request");
            let written = decision.to_json();
            assert_eq!(
                serde_json::to_string(&decision).expect("serializes"),
                written
            );
            assert!(written.contains(r#""at":"dir \"q\"/p.writ:"#), "{written}");
            texts.push(written);
        }
        assert_eq!(texts[0], texts[2]);
        assert!(
            texts[1].contains(r#""condition":"context.note == \"say \\\"hi\\\"\\\\now\"""#),
            "{}",
            texts[1]
        );
        assert!(
            texts[1].contains(r#""condition":"context.ticket == \"T-\\\"7\\\"\"""#),
            "{}",
            texts[1]
        );
    }

    /// A decision's errors are recorded typed and written when read: the
    /// JSON written from them is serde's text of the errors read, each
    /// erring trace entry carries its error's message, and errors changed
    /// (so owned) write the same text.
    #[test]
    fn errors_recorded_by_index_read_as_their_messages() {
        let policy = r#"
@id("needs-ticket")
permit if context.ticket == "T-7" grant ["read:db"];
@id("freeze")
forbid if context.freeze == true;
@id("open")
permit grant ["read:db"];
"#;
        let engine = Engine::compile([("p.writ", policy)], None).expect("compiles");
        let text = include_str!("../examples/ci-deploy.json");
        let decision = engine.decide_json(text).expect("a valid request");
        let written = decision.to_json();
        assert_eq!(decision.errors.len(), 2, "{written}");
        assert_eq!(
            serde_json::to_string(&decision).expect("serializes"),
            written
        );
        let read: Vec<(&str, &str)> = decision
            .errors
            .iter()
            .map(|e| (e.rule.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            read,
            [
                ("needs-ticket", "`context.ticket` is missing"),
                ("freeze", "`context.freeze` is missing"),
            ]
        );
        assert!(decision.errors.iter().all(|e| !e.is_request()));
        let traced: Vec<(&str, Option<&str>)> = decision
            .trace
            .iter()
            .map(|t| (t.rule.as_str(), t.error.as_deref()))
            .collect();
        assert_eq!(
            traced,
            [
                ("needs-ticket", Some("`context.ticket` is missing")),
                ("freeze", Some("`context.freeze` is missing")),
                ("open", None),
            ]
        );
        let mut owned = decision.clone();
        owned.errors.retain(|_| true);
        assert_eq!(owned.to_json(), written);
        assert_eq!(owned, decision);
        owned.errors.truncate(1);
        assert_ne!(owned.to_json(), written);
        // A decision read back from its JSON is the same decision.
        let back: Decision = serde_json::from_str(&written).expect("reads back");
        assert_eq!(back, decision);
        assert_eq!(back.to_json(), written);
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }
}
