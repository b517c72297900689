//! The policy set that is serving, and how a new one replaces it.
//!
//! A reload never compiles files as it happens to find them. It reads the
//! whole set into memory (a [`Snapshot`]: every `.writ` file, the manifests,
//! the data file), reads it a second time, and goes on only if both reads
//! have the same content digest; it checks the set against its manifest
//! when there is one, refuses an emptied file, compiles the set aside and,
//! for a reload nobody asked for, refuses a set that drops rules or files
//! (see [`Dropped`]). Only a set that passed all of that is swapped in, in
//! one atomic pointer store, so a request sees either the old set or the
//! new one, never a mix. The watcher in `mod.rs` adds the settle interval.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::engine::Engine;
use crate::load::read_bytes;

/// The manifest a policy directory may hold: the `.writ` files of a
/// complete set and their SHA-256 digests, one `HEX  PATH` line each (the
/// format `sha256sum` writes), paths relative to the directory.
pub(crate) const MANIFEST: &str = "writ.manifest";

/// A compiled policy set and where it came from.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The compiled set.
    pub(crate) engine: Engine,
    /// The file names, as compiled.
    pub(crate) files: Vec<String>,
    /// When it was loaded, RFC 3339.
    pub(crate) loaded_at: String,
    /// The content digest of the bytes it was compiled from (file names,
    /// texts, manifests, data), which the watcher compares the files with.
    pub(crate) content: String,
    /// The bundle's revision, when the set came from a bundle; read with
    /// the engine from one snapshot, so `/v1/status` never pairs one
    /// set's revision with another's digest.
    pub(crate) revision: Option<String>,
}

impl Loaded {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Loaded {
        let engine = Engine::compile(
            [("t.writ", "@id(\"p\") permit if action == \"ping\";")],
            None,
        )
        .expect("test policy compiles");
        Loaded {
            engine,
            files: vec!["t.writ".to_owned()],
            loaded_at: super::now_rfc3339(),
            content: String::new(),
            revision: None,
        }
    }

    /// The rule ids, in order.
    pub(crate) fn rule_ids(&self) -> Vec<&str> {
        self.engine
            .policy()
            .rules
            .iter()
            .map(|r| r.id.as_str())
            .collect()
    }
}

/// What `--policy` and `--data` named: read again on every reload.
#[derive(Debug, Clone)]
pub(crate) struct PolicySource {
    /// Files or directories; `default` (or none) is the embedded pack.
    pub(crate) policies: Vec<String>,
    /// The JSON data file.
    pub(crate) data: Option<PathBuf>,
}

/// One file as read, whole: the name it is compiled under, its bytes.
pub(crate) use crate::load::PolicyFile as ReadFile;

/// A policy directory's manifest as read, with the `.writ` files found
/// below that directory (by path relative to it, and index into
/// [`Snapshot::files`]).
#[derive(Debug, Clone)]
pub(crate) struct ManifestRead {
    /// The manifest's path.
    pub(crate) name: String,
    /// Its bytes.
    pub(crate) bytes: Vec<u8>,
    /// Every `.writ` file below the directory: relative path, file index.
    pub(crate) found: Vec<(String, usize)>,
}

/// Everything a reload reads, in memory, before anything is compiled.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The policy files, in compile order.
    pub(crate) files: Vec<ReadFile>,
    /// The manifests of the policy directories that have one.
    pub(crate) manifests: Vec<ManifestRead>,
    /// The data file.
    pub(crate) data: Option<ReadFile>,
    /// `sha256:...` over all of the above.
    pub(crate) content: String,
}

impl PolicySource {
    /// Whether there is anything on disk to watch (the embedded pack never
    /// changes).
    pub(crate) fn has_files(&self) -> bool {
        self.data.is_some() || self.policies.iter().any(|p| p != "default")
    }

    /// Reads the whole set into memory. Entries whose name starts with `.`
    /// are skipped, so that a Kubernetes ConfigMap volume (whose files are
    /// also reachable through `..data` and a `..2026_...` directory) is read
    /// once, through its top-level names.
    pub(crate) fn read(&self) -> Result<Snapshot, String> {
        let set = crate::load::read_policies(&self.policies, Path::new("."))?;
        let mut manifests = Vec::new();
        for dir in set.dirs {
            let manifest = dir.root.join(MANIFEST);
            if manifest.exists() {
                manifests.push(ManifestRead {
                    name: manifest.display().to_string(),
                    bytes: read_bytes(&manifest)?,
                    found: dir.found,
                });
            }
        }
        let files = set.files;
        let data = match &self.data {
            None => None,
            Some(path) => Some(ReadFile {
                name: path.display().to_string(),
                bytes: read_bytes(path)?,
            }),
        };
        let content = content_digest(&files, &manifests, data.as_ref());
        Ok(Snapshot {
            files,
            manifests,
            data,
            content,
        })
    }

    /// Reads the set twice and returns it only if both reads agree: a
    /// writer that was busy while it was read shows as a difference.
    pub(crate) fn read_stable(&self) -> Result<Snapshot, Refusal> {
        let first = self.read().map_err(Refusal::Read)?;
        let second = self.read().map_err(Refusal::Read)?;
        same_twice(&first, second)
    }

    /// Reads (twice, trying again a few times while a writer is busy) and
    /// compiles the set, as at start-up: no guard, since nothing serves
    /// yet, but a set that keeps changing, does not match its manifest or
    /// has an empty file is refused.
    pub(crate) fn load(&self) -> Result<Loaded, String> {
        let mut attempts = 0;
        let snapshot = loop {
            match self.read_stable() {
                Err(Refusal::Changing) if attempts < 5 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other.map_err(|r| r.to_string())?,
            }
        };
        check(&snapshot).map_err(|r| r.to_string())?;
        compile(&snapshot).map_err(|r| r.to_string())
    }
}

/// The second of two reads, if it has the same content digest as the
/// first: the bytes, not sizes and times, are compared.
pub(crate) fn same_twice(first: &Snapshot, second: Snapshot) -> Result<Snapshot, Refusal> {
    if first.content == second.content {
        Ok(second)
    } else {
        Err(Refusal::Changing)
    }
}

/// The lowercase hex of `bytes`' SHA-256 (as `sha256sum` prints it).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(bytes))
}

fn content_digest(
    files: &[ReadFile],
    manifests: &[ManifestRead],
    data: Option<&ReadFile>,
) -> String {
    let mut hasher = Sha256::new();
    let mut add = |tag: &[u8], file: &ReadFile| {
        hasher.update(tag);
        hasher.update((file.name.len() as u64).to_le_bytes());
        hasher.update(file.name.as_bytes());
        hasher.update((file.bytes.len() as u64).to_le_bytes());
        hasher.update(&file.bytes);
    };
    for file in files {
        add(b"policy", file);
    }
    for manifest in manifests {
        add(
            b"manifest",
            &ReadFile {
                name: manifest.name.clone(),
                bytes: manifest.bytes.clone(),
            },
        );
    }
    if let Some(data) = data {
        add(b"data", data);
    }
    crate::hex::prefixed("sha256:", &hasher.finalize())
}

/// Why a policy set was not activated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// A file could not be read (`--policy` names a directory with no
    /// `.writ` file, a file is unreadable or too large).
    Read(String),
    /// Two reads of the set, one after the other, differed: something is
    /// writing.
    Changing,
    /// The files kept changing for longer than the watcher waits.
    NeverSettled {
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// A manifest is malformed or the files do not match it.
    Manifest(String),
    /// A `.writ` file with nothing but white space in it: a file being
    /// written, or one deleted by truncation.
    EmptyFiles(Vec<String>),
    /// The set does not compile; the rendered diagnostics.
    Compile(String),
    /// An automatic reload that would remove rules or files.
    Drops(Dropped),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Read(message) => f.write_str(message),
            Refusal::Changing => {
                f.write_str("the policy files changed while they were read (two reads differed)")
            }
            Refusal::NeverSettled { waited } => write!(
                f,
                "the policy files kept changing for {waited:?} and never settled"
            ),
            Refusal::Manifest(message) => write!(f, "incomplete per the manifest: {message}"),
            Refusal::EmptyFiles(names) => write!(
                f,
                "empty policy file(s) {}: a file being written, or deleted by truncation \
                 (delete the file instead, and reload with SIGHUP or POST /v1/policy/reload)",
                quoted(names)
            ),
            Refusal::Compile(message) => f.write_str(message),
            Refusal::Drops(dropped) => write!(
                f,
                "the new set drops {dropped}; an automatic reload never removes rules \
                 (send SIGHUP or POST /v1/policy/reload to remove them on purpose)"
            ),
        }
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a new set would remove from the serving one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Rule ids the serving set has and the new one lacks.
    pub(crate) rules: Vec<String>,
    /// File names the serving set was compiled from and the new one lacks.
    pub(crate) files: Vec<String>,
}

impl Dropped {
    /// Compares the serving set with a candidate.
    pub(crate) fn between(serving: &Loaded, candidate: &Loaded) -> Dropped {
        let new_rules = candidate.rule_ids();
        let rules = serving
            .rule_ids()
            .into_iter()
            .filter(|id| !new_rules.contains(id))
            .map(str::to_owned)
            .collect();
        let files = serving
            .files
            .iter()
            .filter(|name| !candidate.files.contains(name))
            .cloned()
            .collect();
        Dropped { rules, files }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.files.is_empty()
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.rules.is_empty() {
            parts.push(format!(
                "{} rule(s) {}",
                self.rules.len(),
                quoted(&self.rules)
            ));
        }
        if !self.files.is_empty() {
            parts.push(format!(
                "{} file(s) {}",
                self.files.len(),
                quoted(&self.files)
            ));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(" and "))
        }
    }
}

/// The checks before compiling: every manifest matches, no file is empty.
pub(crate) fn check(snapshot: &Snapshot) -> Result<(), Refusal> {
    for manifest in &snapshot.manifests {
        check_manifest(manifest, &snapshot.files).map_err(Refusal::Manifest)?;
    }
    let empty: Vec<String> = snapshot
        .files
        .iter()
        .filter(|file| file.bytes.iter().all(u8::is_ascii_whitespace))
        .map(|file| file.name.clone())
        .collect();
    if empty.is_empty() {
        Ok(())
    } else {
        Err(Refusal::EmptyFiles(empty))
    }
}

/// One line of a manifest: `HEX  PATH` (two spaces, or ` *` as
/// `sha256sum --binary` writes); `#` comments and blank lines are skipped.
pub(crate) fn parse_manifest(name: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "line {} of `{name}` is not `SHA256  FILE`: `{line}`",
                number + 1
            )
        };
        let (hex, rest) = line.split_once(' ').ok_or_else(bad)?;
        let hex = hex
            .strip_prefix("sha256:")
            .unwrap_or(hex)
            .to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let path = rest.trim_start_matches(' ');
        let path = path.strip_prefix('*').unwrap_or(path);
        let path = path.strip_prefix("./").unwrap_or(path);
        if path.is_empty() {
            return Err(bad());
        }
        if !path.ends_with(".writ") {
            return Err(format!(
                "line {} of `{name}` lists `{path}`; a manifest lists `.writ` files only",
                number + 1
            ));
        }
        if entries.iter().any(|(_, p)| p == path) {
            return Err(format!("`{name}` lists `{path}` twice"));
        }
        entries.push((hex, path.to_owned()));
    }
    if entries.is_empty() {
        return Err(format!("`{name}` lists no files"));
    }
    Ok(entries)
}

fn check_manifest(manifest: &ManifestRead, files: &[ReadFile]) -> Result<(), String> {
    let text = std::str::from_utf8(&manifest.bytes)
        .map_err(|_| format!("`{}` is not UTF-8 text", manifest.name))?;
    let entries = parse_manifest(&manifest.name, text)?;
    let mut problems = Vec::new();
    for (hex, path) in &entries {
        match manifest.found.iter().find(|(rel, _)| rel == path) {
            None => problems.push(format!("`{path}` is listed but missing")),
            Some((_, index)) => {
                let bytes = files.get(*index).map(|f| f.bytes.as_slice()).unwrap_or(&[]);
                if sha256_hex(bytes) != *hex {
                    problems.push(format!("`{path}` does not match its digest"));
                }
            }
        }
    }
    for (rel, _) in &manifest.found {
        if !entries.iter().any(|(_, path)| path == rel) {
            problems.push(format!("`{rel}` is not listed"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("`{}`: {}", manifest.name, problems.join(", ")))
    }
}

/// Compiles a snapshot that passed [`check`].
pub(crate) fn compile(snapshot: &Snapshot) -> Result<Loaded, Refusal> {
    let mut sources = Vec::with_capacity(snapshot.files.len());
    for file in &snapshot.files {
        let text = std::str::from_utf8(&file.bytes)
            .map_err(|_| Refusal::Read(format!("`{}` is not UTF-8 text", file.name)))?;
        sources.push((file.name.clone(), text.to_owned()));
    }
    let data = match &snapshot.data {
        None => None,
        Some(file) => {
            Some(crate::load::parse_data(&file.name, &file.bytes).map_err(Refusal::Read)?)
        }
    };
    let names: Vec<String> = sources.iter().map(|(name, _)| name.clone()).collect();
    let engine = Engine::compile(sources, data.as_ref()).map_err(|diagnostics| {
        Refusal::Compile(format!(
            "the policies do not compile ({} diagnostics):\n{}",
            diagnostics.len(),
            diagnostics.render(false)
        ))
    })?;
    Ok(Loaded {
        engine,
        files: names,
        loaded_at: super::now_rfc3339(),
        content: snapshot.content.clone(),
        revision: None,
    })
}

/// Everything between a stable read and the swap: the checks, the
/// compile and, unless the reload was asked for, the guard against a set
/// that drops rules or files.
pub(crate) fn prepare(
    serving: &Loaded,
    snapshot: &Snapshot,
    explicit: bool,
) -> Result<(Loaded, Dropped), Refusal> {
    check(snapshot)?;
    let loaded = compile(snapshot)?;
    let dropped = Dropped::between(serving, &loaded);
    if !explicit && !dropped.is_empty() {
        return Err(Refusal::Drops(dropped));
    }
    Ok((loaded, dropped))
}

/// The text of a manifest for the `.writ` files below `dir`, as
/// `writ manifest` writes it.
pub(crate) fn manifest_text(dir: &Path) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!("`{}` is not a directory", dir.display()));
    }
    let found = crate::load::walk(dir, "writ")?;
    if found.is_empty() {
        return Err(format!("no `.writ` files at `{}`", dir.display()));
    }
    let mut text = String::new();
    for file in found {
        let bytes = read_bytes(&file.path)?;
        let _ = writeln!(text, "{}  {}", sha256_hex(&bytes), file.relative);
    }
    Ok(text)
}

/// The shared pointer requests read the set through.
/// One reload's outcome, as `GET /v1/status` reports it.
#[derive(Debug, Clone)]
pub(crate) struct ReloadEvent {
    /// When it ended.
    pub(crate) at: std::time::SystemTime,
    /// What asked for it (`SIGHUP`, `POST /v1/policy/reload`, a changed file).
    pub(crate) trigger: &'static str,
    /// The digest activated (a success) or kept serving (a failure).
    pub(crate) digest: String,
    /// Why it was refused; none for a success.
    pub(crate) error: Option<String>,
}

/// The last successful and the last failed reload.
#[derive(Debug, Default)]
pub(crate) struct ReloadHistory {
    last: std::sync::Mutex<(Option<ReloadEvent>, Option<ReloadEvent>)>,
}

impl ReloadHistory {
    /// Records a reload that ended now.
    pub(crate) fn record(&self, trigger: &'static str, digest: &str, error: Option<String>) {
        let event = ReloadEvent {
            at: std::time::SystemTime::now(),
            trigger,
            digest: digest.to_owned(),
            error,
        };
        if let Ok(mut last) = self.last.lock() {
            if event.error.is_none() {
                last.0 = Some(event);
            } else {
                last.1 = Some(event);
            }
        }
    }

    /// The last success and the last failure, if any.
    pub(crate) fn last(&self) -> (Option<ReloadEvent>, Option<ReloadEvent>) {
        self.last
            .lock()
            .map(|last| last.clone())
            .unwrap_or((None, None))
    }
}

pub(crate) type Current = arc_swap::ArcSwap<Loaded>;

/// Makes the holder of the first set.
pub(crate) fn current(loaded: Loaded) -> Current {
    arc_swap::ArcSwap::new(Arc::new(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("writ-state-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).expect("write");
        }

        fn source(&self) -> PolicySource {
            PolicySource {
                policies: vec![self.0.display().to_string()],
                data: None,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const A: &str = "@id(\"a\") permit if action == \"read\";\n";
    const B: &str = "@id(\"b\") forbid if subject.auth == \"static-secret\";\n";

    #[test]
    fn the_content_digest_sees_bytes_not_only_sizes() {
        let dir = Scratch::new("digest");
        dir.write("a.writ", A);
        let before = dir.source().read().expect("reads");
        // Same size, different bytes.
        dir.write("a.writ", &A.replace("\"read\"", "\"reed\""));
        let after = dir.source().read().expect("reads");
        assert_eq!(before.files[0].bytes.len(), after.files[0].bytes.len());
        assert_ne!(before.content, after.content);
        // Read again unchanged: the same digest; changed between the two
        // reads: a writer was busy.
        assert_eq!(after.content, dir.source().read().expect("reads").content);
        assert!(same_twice(&after, dir.source().read().expect("reads")).is_ok());
        assert_eq!(
            same_twice(&before, dir.source().read().expect("reads")).map(|s| s.content),
            Err(Refusal::Changing)
        );
        // A new file and a data file count; other files and dot entries do not.
        dir.write("b.writ", B);
        dir.write("notes.txt", "ignored");
        std::fs::create_dir_all(dir.0.join("..data")).expect("mkdir");
        dir.write("..data/a.writ", A);
        let more = dir.source().read().expect("reads");
        assert_eq!(more.files.len(), 2, "{:?}", more.files);
        assert_ne!(more.content, after.content);
        assert!(dir.source().read_stable().is_ok());
    }

    #[test]
    fn the_embedded_pack_is_not_watched_and_loads() {
        let source = PolicySource {
            policies: Vec::new(),
            data: None,
        };
        assert!(!source.has_files());
        let loaded = source.load().expect("the pack compiles");
        assert!(!loaded.files.is_empty());
    }

    #[test]
    fn a_broken_file_is_an_error_with_diagnostics() {
        let dir = Scratch::new("broken");
        dir.write("a.writ", "permit if action = \"read\"");
        let error = dir.source().load().expect_err("does not compile");
        assert!(error.contains("do not compile"), "{error}");
    }

    #[test]
    fn empty_files_are_refused_even_at_start() {
        let dir = Scratch::new("empty");
        dir.write("a.writ", A);
        dir.write("b.writ", " \n");
        let error = dir.source().load().expect_err("an empty file");
        assert!(error.contains("empty policy file(s)"), "{error}");
        assert!(error.contains("b.writ"), "{error}");
        let snapshot = dir.source().read().expect("reads");
        assert!(matches!(check(&snapshot), Err(Refusal::EmptyFiles(names)) if names.len() == 1));
    }

    fn loaded(files: &[(&str, &str)]) -> Loaded {
        let engine = Engine::compile(files.iter().copied(), None).expect("compiles");
        Loaded {
            engine,
            files: files.iter().map(|(n, _)| (*n).to_owned()).collect(),
            loaded_at: String::new(),
            content: String::new(),
            revision: None,
        }
    }

    #[test]
    fn the_guard_names_dropped_rules_and_files() {
        let serving = loaded(&[("a.writ", A), ("b.writ", B)]);
        let same = loaded(&[("a.writ", A), ("b.writ", B)]);
        assert!(Dropped::between(&serving, &same).is_empty());
        // Adding rules or files drops nothing.
        let more = loaded(&[
            ("a.writ", A),
            ("b.writ", B),
            ("c.writ", "@id(\"c\") permit if action == \"x\";"),
        ]);
        assert!(Dropped::between(&serving, &more).is_empty());
        // A file gone takes its rule with it.
        let fewer = loaded(&[("a.writ", A)]);
        let dropped = Dropped::between(&serving, &fewer);
        assert_eq!(dropped.rules, ["b"]);
        assert_eq!(dropped.files, ["b.writ"]);
        assert_eq!(dropped.to_string(), "1 rule(s) `b` and 1 file(s) `b.writ`");
        // A rule moved to another file is not dropped; the file is.
        let moved = loaded(&[("a.writ", &format!("{A}{B}"))]);
        let dropped = Dropped::between(&serving, &moved);
        assert!(dropped.rules.is_empty());
        assert_eq!(dropped.files, ["b.writ"]);
    }

    #[test]
    fn prepare_refuses_drops_unless_explicit() {
        let dir = Scratch::new("prepare");
        dir.write("a.writ", A);
        dir.write("b.writ", B);
        let serving = dir.source().load().expect("loads");
        dir.write("b.writ", "// rules moved out\nconst x = 1;\n");
        let snapshot = dir.source().read_stable().expect("stable");
        match prepare(&serving, &snapshot, false) {
            Err(Refusal::Drops(dropped)) => assert_eq!(dropped.rules, ["b"]),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let (loaded, dropped) = prepare(&serving, &snapshot, true).expect("explicit");
        assert_eq!(dropped.rules, ["b"]);
        assert_eq!(loaded.rule_ids(), ["a"]);
        // An emptied file is refused either way.
        dir.write("b.writ", "");
        let snapshot = dir.source().read_stable().expect("stable");
        for explicit in [false, true] {
            assert!(matches!(
                prepare(&serving, &snapshot, explicit),
                Err(Refusal::EmptyFiles(_))
            ));
        }
    }

    #[test]
    fn manifests_must_match_every_file() {
        let dir = Scratch::new("manifest");
        dir.write("a.writ", A);
        dir.write("b.writ", B);
        let text = manifest_text(&dir.0).expect("manifest");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(&format!("{}  a.writ", sha256_hex(A.as_bytes()))));
        dir.write(MANIFEST, &text);
        let snapshot = dir.source().read().expect("reads");
        assert_eq!(snapshot.manifests.len(), 1);
        assert_eq!(check(&snapshot), Ok(()));

        // A changed file.
        dir.write("b.writ", &B.replace("static", "shared"));
        let refusal = check(&dir.source().read().expect("reads")).expect_err("mismatch");
        assert!(
            refusal.to_string().contains("`b.writ` does not match"),
            "{refusal}"
        );
        // The manifest written last completes the set.
        dir.write(MANIFEST, &manifest_text(&dir.0).expect("manifest"));
        assert_eq!(check(&dir.source().read().expect("reads")), Ok(()));

        // An unlisted file, and a listed file that is missing.
        dir.write("c.writ", A.replace("\"a\"", "\"c\"").as_str());
        let refusal = check(&dir.source().read().expect("reads")).expect_err("unlisted");
        assert!(
            refusal.to_string().contains("`c.writ` is not listed"),
            "{refusal}"
        );
        std::fs::remove_file(dir.0.join("c.writ")).expect("rm");
        std::fs::remove_file(dir.0.join("b.writ")).expect("rm");
        let refusal = check(&dir.source().read().expect("reads")).expect_err("missing");
        assert!(
            refusal
                .to_string()
                .contains("`b.writ` is listed but missing"),
            "{refusal}"
        );
    }

    #[test]
    fn manifest_lines_are_checked() {
        let hex = sha256_hex(b"x");
        let ok = format!("# comment\n\n{hex}  a.writ\nsha256:{hex} *./sub/b.writ\n");
        assert_eq!(
            parse_manifest("m", &ok).expect("parses"),
            [
                (hex.clone(), "a.writ".to_owned()),
                (hex.clone(), "sub/b.writ".to_owned())
            ]
        );
        for (bad, says) in [
            ("abc  a.writ".to_owned(), "line 1 of `m` is not"),
            (hex.clone(), "is not `SHA256  FILE`"),
            (format!("{hex}  data.json"), "`.writ` files only"),
            (format!("{hex}  a.writ\n{hex}  a.writ"), "twice"),
            ("# nothing\n".to_owned(), "lists no files"),
        ] {
            let error = parse_manifest("m", &bad).expect_err(&bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
