//! Reading a policy set from disk: the one directory walker, the policy
//! paths the CLI, the server and the test runner take (`default`, files,
//! directories), and the JSON data file.
//!
//! Every directory is walked the same way: sorted by name, entries whose
//! name starts with `.` skipped (a Kubernetes ConfigMap volume also holds
//! its files under `..data` and a `..2026_...` directory; editors leave
//! `.#name` and `.name.swp`), symbolic links followed, and a link that
//! leads back to a directory it sits in refused with an error that names
//! it, instead of reading the same files over and over.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::engine::DEFAULT_PACK;
use crate::request::json::{self, Limits};
use crate::source::MAX_INPUT_BYTES;

/// Deepest nesting a data file may have: serde_json's own default, so that
/// the reader refuses nothing on depth that a plain parse would take.
const MAX_DATA_DEPTH: usize = 128;

/// A file found below a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path relative to the directory walked, with `/` separators.
    pub relative: String,
    /// Its full path (the directory joined with the relative path).
    pub path: PathBuf,
}

/// The files with extension `ext` below `dir`, sorted by path. Entries
/// whose name starts with `.` are skipped; a symlink loop, a directory that
/// cannot be listed or a broken link is an error naming the path.
pub fn walk(dir: &Path, ext: &str) -> Result<Vec<Found>, String> {
    let mut found = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
    for entry in walker {
        let entry = entry.map_err(|error| walk_error(dir, &error))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let path = entry.path();
        if !path.extension().is_some_and(|e| e == ext) {
            continue;
        }
        let relative = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        found.push(Found {
            relative,
            path: path.to_path_buf(),
        });
    }
    Ok(found)
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn walk_error(root: &Path, error: &walkdir::Error) -> String {
    let at = error.path().unwrap_or(root).display();
    if let Some(ancestor) = error.loop_ancestor() {
        return format!(
            "`{at}` is a symbolic link loop: it leads back to `{}`, which contains it; remove the link or point it elsewhere",
            ancestor.display()
        );
    }
    match error.io_error() {
        Some(io) => format!("cannot read `{at}`: {io}"),
        None => format!("cannot read `{at}`: {error}"),
    }
}

/// The files with extension `ext` under each path (a directory is walked,
/// a file named directly is taken whatever its name), sorted, once each.
pub fn discover(paths: &[PathBuf], ext: &str) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            found.extend(walk(path, ext)?.into_iter().map(|f| f.path));
        } else {
            found.push(path.clone());
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// One policy file as read: the name it is compiled under and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// The path as found, or the pack's own name for the embedded pack.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A policy directory named on the command line, with the `.writ` files
/// found below it.
#[derive(Debug, Clone)]
pub struct PolicyDir {
    /// The directory as named.
    pub root: PathBuf,
    /// Each file below it: its path relative to `root` and its index in
    /// [`PolicyPaths::files`].
    pub found: Vec<(String, usize)>,
}

/// A policy set as read from paths, before anything is compiled.
#[derive(Debug, Clone, Default)]
pub struct PolicyPaths {
    /// The files, in compile order.
    pub files: Vec<PolicyFile>,
    /// The directories among the paths.
    pub dirs: Vec<PolicyDir>,
}

impl PolicyPaths {
    /// The files as `(name, text)` for [`crate::Engine::compile`]; a file
    /// that is not UTF-8 is an error naming it.
    pub fn sources(&self) -> Result<Vec<(String, String)>, String> {
        self.files
            .iter()
            .map(|file| {
                let text = std::str::from_utf8(&file.bytes)
                    .map_err(|_| format!("`{}` is not UTF-8 text", file.name))?;
                Ok((file.name.clone(), text.to_owned()))
            })
            .collect()
    }
}

/// Reads the policy paths: `default` (and no paths at all) is the
/// embedded pack, a directory is every `.writ` file below it (sorted), a
/// file is itself. Relative paths are taken from `base`.
pub fn read_policies(paths: &[String], base: &Path) -> Result<PolicyPaths, String> {
    let mut set = PolicyPaths::default();
    if paths.is_empty() {
        push_pack(&mut set.files);
    }
    for path in paths {
        if path == "default" {
            push_pack(&mut set.files);
            continue;
        }
        let full = if base == Path::new(".") {
            PathBuf::from(path)
        } else {
            base.join(path)
        };
        if !full.is_dir() {
            set.files.push(PolicyFile {
                name: full.display().to_string(),
                bytes: read_bytes(&full)?,
            });
            continue;
        }
        let found = walk(&full, "writ")?;
        if found.is_empty() {
            return Err(format!("no `.writ` files at `{}`", full.display()));
        }
        let mut dir = PolicyDir {
            root: full,
            found: Vec::with_capacity(found.len()),
        };
        for file in found {
            dir.found.push((file.relative, set.files.len()));
            set.files.push(PolicyFile {
                name: file.path.display().to_string(),
                bytes: read_bytes(&file.path)?,
            });
        }
        set.dirs.push(dir);
    }
    Ok(set)
}

/// Reads policy paths as `(name, text)` pairs for [`crate::Engine::compile`]:
/// `default` (and no paths at all) is the embedded pack, a directory is
/// every `.writ` file below it (sorted, names starting with `.` skipped, a
/// symlink loop refused), a file is itself. Relative paths are taken from
/// `base` (`.` for the working directory).
pub fn load_policies(paths: &[String], base: &Path) -> Result<Vec<(String, String)>, String> {
    read_policies(paths, base)?.sources()
}

fn push_pack(files: &mut Vec<PolicyFile>) {
    files.extend(DEFAULT_PACK.iter().map(|(name, text)| PolicyFile {
        name: (*name).to_owned(),
        bytes: text.as_bytes().to_vec(),
    }));
}

/// Reads a whole file, refusing one over [`MAX_INPUT_BYTES`] without
/// reading past the limit.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "`{}` is larger than {MAX_INPUT_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Parses a data file's bytes with the request reader: a duplicate key is
/// refused (not silently resolved to its last value), a leading byte order
/// mark is skipped. `name` is the file as errors name it.
pub fn parse_data(name: &str, bytes: &[u8]) -> Result<Value, String> {
    let limits = Limits {
        max_bytes: usize::try_from(MAX_INPUT_BYTES).unwrap_or(usize::MAX),
        max_depth: MAX_DATA_DEPTH,
    };
    json::read(bytes, limits).map_err(|e| format!("data file `{name}`: {e}"))
}

/// Reads a JSON data file (constants by name, data by path) as the CLI's
/// `--data` and the server read it: a duplicate key or a file over
/// [`crate::limits::MAX_INPUT_BYTES`] is refused, a byte order mark skipped.
pub fn read_data(path: &Path) -> Result<Value, String> {
    parse_data(&path.display().to_string(), &read_bytes(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("writ-load-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, text).expect("write");
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn relative(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.relative.as_str()).collect()
    }

    #[test]
    fn walks_sorted_and_skips_dot_entries() {
        let dir = Scratch::new("walk");
        dir.write("b.writ", "");
        dir.write("a/z.writ", "");
        dir.write("a/y.txt", "");
        dir.write(".hidden.writ", "");
        dir.write("..data/c.writ", "");
        dir.write(".git/d.writ", "");
        let found = walk(&dir.0, "writ").expect("walks");
        assert_eq!(relative(&found), ["a/z.writ", "b.writ"]);
        assert_eq!(found[1].path, dir.0.join("b.writ"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_is_an_error_naming_the_link() {
        let dir = Scratch::new("loop");
        dir.write("sub/a.writ", "");
        std::os::unix::fs::symlink("..", dir.0.join("sub/up")).expect("symlink");
        let error = walk(&dir.0, "writ").expect_err("a loop");
        assert!(error.contains("symbolic link loop"), "{error}");
        assert!(error.contains("sub/up"), "{error}");
        let error = read_policies(&[dir.0.display().to_string()], Path::new("."))
            .expect_err("a loop");
        assert!(error.contains("symbolic link loop"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_to_elsewhere_is_followed() {
        let dir = Scratch::new("link");
        dir.write("real/a.writ", "");
        std::fs::create_dir_all(dir.0.join("set")).expect("mkdir");
        std::os::unix::fs::symlink(dir.0.join("real"), dir.0.join("set/linked")).expect("link");
        let found = walk(&dir.0.join("set"), "writ").expect("walks");
        assert_eq!(relative(&found), ["linked/a.writ"]);
    }

    #[test]
    fn a_file_named_directly_is_read_whatever_its_name() {
        let dir = Scratch::new("named");
        dir.write("policy.txt", "permit;");
        let set = read_policies(&["policy.txt".to_owned()], &dir.0).expect("reads");
        assert_eq!(set.files.len(), 1);
        assert!(set.dirs.is_empty());
        let empty = Scratch::new("empty");
        let error = read_policies(&[empty.0.display().to_string()], Path::new("."))
            .expect_err("nothing there");
        assert!(error.starts_with("no `.writ` files at"), "{error}");
    }

    #[test]
    fn data_goes_through_the_request_reader() {
        let error = parse_data("d.json", br#"{"a": 1, "a": 2}"#).expect_err("duplicate");
        assert!(error.contains("data file `d.json`"), "{error}");
        assert!(error.contains("duplicate key at `a`"), "{error}");
        let value = parse_data("d.json", "\u{feff}{\"a\": 1}".as_bytes()).expect("a BOM");
        assert_eq!(value["a"], 1);
        assert!(parse_data("d.json", b"{").is_err());
    }
}
