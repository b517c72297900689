//! The policy set that is serving, and how a new one replaces it.
//!
//! A reload reads and compiles the files aside, on a blocking thread; only a
//! set that compiled is swapped in, in one atomic pointer store, so a
//! request sees either the old set or the new one, never a mix.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use crate::engine::Engine;
use crate::fixture;

/// A compiled policy set and where it came from.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The compiled set.
    pub(crate) engine: Engine,
    /// The file names, as compiled.
    pub(crate) files: Vec<String>,
    /// When it was loaded, RFC 3339.
    pub(crate) loaded_at: String,
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
        }
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

/// The size and modification time of every file a reload would read (and
/// of the directories holding them, so that added and removed files show).
pub(crate) type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

impl PolicySource {
    /// Reads and compiles the policy set. The error is the rendered
    /// diagnostics (or the read error), for stderr.
    pub(crate) fn load(&self) -> Result<Loaded, String> {
        let files = fixture::load_policies(&self.policies, Path::new(""))?;
        let data = match &self.data {
            None => None,
            Some(path) => Some(read_data(path)?),
        };
        let names: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
        let engine = Engine::compile(files, data.as_ref()).map_err(|diagnostics| {
            format!(
                "the policies do not compile ({} diagnostics):\n{}",
                diagnostics.len(),
                diagnostics.render(false)
            )
        })?;
        Ok(Loaded {
            engine,
            files: names,
            loaded_at: super::now_rfc3339(),
        })
    }

    /// The current fingerprint of the files behind the set. The embedded
    /// pack never changes, so it contributes nothing.
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        let mut out = Vec::new();
        for path in &self.policies {
            if path != "default" {
                walk(Path::new(path), &mut out, 0);
            }
        }
        if let Some(data) = &self.data {
            stamp(data, &mut out);
        }
        out
    }
}

fn read_data(path: &Path) -> Result<Value, String> {
    use crate::source::{read_limited, MAX_INPUT_BYTES};
    let text = std::fs::File::open(path)
        .map_err(|e| format!("cannot read data file `{}`: {e}", path.display()))
        .and_then(|file| read_limited(file, &path.display().to_string(), MAX_INPUT_BYTES))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("data file `{}` is not valid JSON: {e}", path.display()))
}

fn stamp(path: &Path, out: &mut Fingerprint) {
    match std::fs::metadata(path) {
        Ok(meta) => out.push((path.to_owned(), meta.modified().ok(), meta.len())),
        Err(_) => out.push((path.to_owned(), None, 0)),
    }
}

/// Policy directories are walked as deep as `load_policies` reads them;
/// the depth bound only guards against symlink loops.
fn walk(path: &Path, out: &mut Fingerprint, depth: usize) {
    stamp(path, out);
    if depth > 32 || !path.is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    children.sort();
    for child in children {
        if child.is_dir() {
            walk(&child, out, depth + 1);
        } else if child.extension().is_some_and(|e| e == "writ") {
            stamp(&child, out);
        }
    }
}

/// The shared pointer requests read the set through.
pub(crate) type Current = arc_swap::ArcSwap<Loaded>;

/// Makes the holder of the first set.
pub(crate) fn current(loaded: Loaded) -> Current {
    arc_swap::ArcSwap::new(Arc::new(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_added_and_changed_files() {
        let dir = std::env::temp_dir().join(format!("writ-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("a.writ");
        std::fs::write(&file, "@id(\"a\") permit if action == \"read\";").expect("write");
        let source = PolicySource {
            policies: vec![dir.display().to_string()],
            data: None,
        };
        let before = source.fingerprint();
        assert_eq!(before.len(), 2, "{before:?}");
        std::fs::write(dir.join("b.writ"), "@id(\"b\") permit if action == \"x\";").expect("write");
        std::fs::write(dir.join("notes.txt"), "ignored").expect("write");
        let after = source.fingerprint();
        assert_eq!(after.len(), 3, "{after:?}");
        assert_ne!(before, after);
        let loaded = source.load().expect("compiles");
        assert_eq!(loaded.engine.policy().rules.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_embedded_pack_has_no_fingerprint_and_loads() {
        let source = PolicySource {
            policies: Vec::new(),
            data: None,
        };
        assert!(source.fingerprint().is_empty());
        let loaded = source.load().expect("the pack compiles");
        assert!(!loaded.files.is_empty());
    }

    #[test]
    fn a_broken_file_is_an_error_with_diagnostics() {
        let dir = std::env::temp_dir().join(format!("writ-broken-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("a.writ"), "permit if action = \"read\"").expect("write");
        let source = PolicySource {
            policies: vec![dir.display().to_string()],
            data: None,
        };
        let error = source.load().expect_err("does not compile");
        assert!(error.contains("do not compile"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
