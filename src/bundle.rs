//! Policy bundles: one tar.gz archive holding a policy set (`policies/…`),
//! its data file (`data.json`) and a manifest (`manifest.json`: the
//! format and writ versions, a revision, the policy digest and the SHA-256
//! of every file), optionally signed with Ed25519 (`manifest.sig`: the 64
//! signature bytes over the manifest's exact bytes). See docs/fleet.md.
//!
//! [`open`] is the one way in: it reads the whole archive in memory and
//! refuses it, with an error naming what is wrong, when it is truncated,
//! holds a path that escapes its folder (absolute, `..`), a link or any
//! entry that is not a plain file, a file the manifest does not list or
//! lacks one it lists, a file whose digest differs, a manifest of a newer
//! format or writ than this binary, a signature that none of the trusted
//! keys made (or none, when a key is trusted), or policies that do not
//! compile to the digest the manifest names.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::engine::Engine;

/// The bundle format this binary writes and the newest it reads.
pub const FORMAT: u32 = 1;
/// The manifest's entry name.
pub const MANIFEST: &str = "manifest.json";
/// The signature's entry name: 64 bytes, Ed25519 over [`MANIFEST`]'s bytes.
pub const SIGNATURE: &str = "manifest.sig";
/// The data file's entry name.
pub const DATA: &str = "data.json";
/// The folder the policy files sit in.
pub const POLICIES: &str = "policies/";
/// Largest archive read (compressed), and largest total unpacked.
pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// One file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Its path in the archive (`policies/…` or `data.json`).
    pub path: String,
    /// The lowercase hex SHA-256 of its bytes.
    pub sha256: String,
}

/// A bundle's manifest, signed as its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The bundle format ([`FORMAT`]).
    pub format: u32,
    /// The writ that built it; a newer one than the reader is refused.
    pub writ_version: String,
    /// The revision (given at build, or the policy digest's first 12 hex).
    pub revision: String,
    /// The engine's policy digest (path-independent): the same on every
    /// replica that loads this bundle.
    pub policy_digest: String,
    /// Every file of the bundle but the manifest and its signature.
    pub files: Vec<FileDigest>,
}

/// A bundle that passed every check of [`open`].
#[derive(Debug)]
pub struct Bundle {
    /// The manifest, parsed.
    pub manifest: Manifest,
    /// The manifest's exact bytes (what the signature covers).
    pub manifest_bytes: Vec<u8>,
    /// The signature, when the bundle is signed.
    pub signature: Option<[u8; 64]>,
    /// The fingerprint of the trusted key that made the signature.
    pub signed_by: Option<String>,
    /// The policy files: archive path, text.
    pub policies: Vec<(String, String)>,
    /// The data file's bytes.
    pub data: Option<Vec<u8>>,
    /// The compiled set (its digest is the manifest's).
    pub engine: Engine,
    /// `sha256:…` of the archive's bytes as read.
    pub archive_digest: String,
}

/// Why a bundle was not built, signed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// A file could not be read or written.
    Io(String),
    /// The archive is not a complete gzip-compressed tar.
    Truncated(String),
    /// The archive is larger than [`MAX_BUNDLE_BYTES`].
    TooLarge,
    /// An entry's path is absolute, has `..` or is not UTF-8.
    UnsafePath(String),
    /// An entry is a link, a device or anything but a file or folder.
    NotAFile {
        /// The entry's path.
        path: String,
        /// What it is.
        kind: String,
    },
    /// The same path twice in the archive.
    Duplicate(String),
    /// No `manifest.json`, or one that is not a manifest.
    Manifest(String),
    /// A file the manifest lists is not in the archive.
    Missing(String),
    /// A file in the archive the manifest does not list.
    Extra(String),
    /// A file whose SHA-256 is not the manifest's.
    DigestMismatch(String),
    /// A bundle format newer than this binary reads.
    NewerFormat(u32),
    /// A bundle built by a newer writ.
    NewerWrit(String),
    /// A key is trusted and the bundle carries no signature.
    Unsigned,
    /// The signature is malformed or no trusted key made it.
    BadSignature(String),
    /// A key file that is not an Ed25519 PEM key.
    Key(String),
    /// The policies or the data do not compile.
    Compile(String),
    /// The policies compile to another digest than the manifest's.
    PolicyDigest {
        /// What the manifest says.
        manifest: String,
        /// What the files compile to.
        compiled: String,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Io(message) => f.write_str(message),
            BundleError::Truncated(error) => write!(
                f,
                "the bundle is truncated or not a tar.gz archive: {error}"
            ),
            BundleError::TooLarge => write!(
                f,
                "the bundle is larger than {} MiB (compressed or unpacked)",
                MAX_BUNDLE_BYTES / (1024 * 1024)
            ),
            BundleError::UnsafePath(path) => write!(
                f,
                "the bundle holds `{path}`, a path escaping its folder (absolute, `..` or not UTF-8)"
            ),
            BundleError::NotAFile { path, kind } => write!(
                f,
                "the bundle holds `{path}`, a {kind}; a bundle holds plain files only"
            ),
            BundleError::Duplicate(path) => write!(f, "the bundle holds `{path}` twice"),
            BundleError::Manifest(message) => write!(f, "bad bundle manifest: {message}"),
            BundleError::Missing(path) => write!(
                f,
                "the manifest lists `{path}`, which the bundle does not hold"
            ),
            BundleError::Extra(path) => write!(
                f,
                "the bundle holds `{path}`, which the manifest does not list"
            ),
            BundleError::DigestMismatch(path) => write!(
                f,
                "`{path}` does not match its SHA-256 in the manifest"
            ),
            BundleError::NewerFormat(found) => write!(
                f,
                "the bundle is format {found}; this writ reads format {FORMAT} and older"
            ),
            BundleError::NewerWrit(found) => write!(
                f,
                "the bundle was built by writ {found}, newer than this writ {}",
                env!("CARGO_PKG_VERSION")
            ),
            BundleError::Unsigned => f.write_str(
                "the bundle is not signed, and a bundle key is trusted: only signed bundles are accepted",
            ),
            BundleError::BadSignature(message) => write!(f, "bad bundle signature: {message}"),
            BundleError::Key(message) => f.write_str(message),
            BundleError::Compile(message) => write!(f, "the bundle's policies: {message}"),
            BundleError::PolicyDigest { manifest, compiled } => write!(
                f,
                "the policies compile to {compiled}, the manifest says {manifest}"
            ),
        }
    }
}

impl std::error::Error for BundleError {}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(bytes))
}

/// A trusted public key: an Ed25519 `BEGIN PUBLIC KEY` PEM, with its
/// fingerprint.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    /// `sha256:` and the first 16 hex of the SHA-256 of the raw key.
    pub fingerprint: String,
}

impl TrustedKey {
    /// Parses a PEM public key (SPKI), naming `source` in errors.
    pub fn from_pem(source: &str, text: &str) -> Result<TrustedKey, BundleError> {
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
            BundleError::Key(format!(
                "`{source}` is not an Ed25519 public key in PEM (`BEGIN PUBLIC KEY`): {e}"
            ))
        })?;
        Ok(TrustedKey::new(key))
    }

    fn new(key: VerifyingKey) -> TrustedKey {
        let hex = sha256_hex(key.as_bytes());
        TrustedKey {
            key,
            fingerprint: format!("sha256:{}", &hex[..16]),
        }
    }

    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<TrustedKey, BundleError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BundleError::Io(format!("cannot read `{}`: {e}", path.display())))?;
        TrustedKey::from_pem(&path.display().to_string(), &text)
    }
}

fn signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BundleError::Io(format!("cannot read `{}`: {e}", path.display())))?;
    SigningKey::from_pkcs8_pem(text.trim()).map_err(|e| {
        BundleError::Key(format!(
            "`{}` is not an Ed25519 private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`): {e}",
            path.display()
        ))
    })
}

/// Builds a bundle of the `.writ` files below `dir` (hidden entries
/// skipped, as everywhere) and the data file, if any: compiles them for
/// the policy digest, and returns the archive's bytes (entries sorted, with
/// fixed times and modes, so the same input gives the same bytes).
pub fn build(
    dir: &Path,
    data: Option<&Path>,
    revision: Option<&str>,
) -> Result<Vec<u8>, BundleError> {
    if !dir.is_dir() {
        return Err(BundleError::Io(format!(
            "`{}` is not a directory",
            dir.display()
        )));
    }
    let found = crate::load::walk(dir, "writ").map_err(BundleError::Io)?;
    if found.is_empty() {
        return Err(BundleError::Io(format!(
            "no `.writ` files below `{}`",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    for file in found {
        let bytes = crate::load::read_bytes(&file.path).map_err(BundleError::Io)?;
        files.push((format!("{POLICIES}{}", file.relative), bytes));
    }
    if let Some(path) = data {
        files.push((
            DATA.to_owned(),
            crate::load::read_bytes(path).map_err(BundleError::Io)?,
        ));
    }
    let (policies, data) = split(&files)?;
    let engine = compile(&policies, data)?;
    let digest = engine.digest().to_owned();
    let revision = match revision {
        Some(revision) => check_revision(revision)?,
        None => digest
            .strip_prefix("sha256:")
            .unwrap_or(&digest)
            .chars()
            .take(12)
            .collect(),
    };
    let manifest = Manifest {
        format: FORMAT,
        writ_version: env!("CARGO_PKG_VERSION").to_owned(),
        revision,
        policy_digest: digest,
        files: files
            .iter()
            .map(|(path, bytes)| FileDigest {
                path: path.clone(),
                sha256: sha256_hex(bytes),
            })
            .collect(),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BundleError::Manifest(format!("cannot write it: {e}")))?;
    manifest_bytes.push(b'\n');
    write_archive(&manifest_bytes, None, &files)
}

fn check_revision(revision: &str) -> Result<String, BundleError> {
    let ok = !revision.is_empty()
        && revision.len() <= 128
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+:".contains(&b));
    if ok {
        Ok(revision.to_owned())
    } else {
        Err(BundleError::Manifest(format!(
            "the revision `{revision}` must be 1 to 128 letters, digits or `._-+:`"
        )))
    }
}

/// Signs a bundle: checks it as [`open`] does (with no trusted key), then
/// returns it with `manifest.sig` holding the Ed25519 signature of its
/// manifest by the PKCS#8 PEM private key at `key`, replacing any earlier
/// signature.
pub fn sign(archive: &[u8], key: &Path) -> Result<Vec<u8>, BundleError> {
    let key = signing_key(key)?;
    let entries = read_entries(archive)?;
    let (manifest_bytes, files) = sorted_parts(&entries)?;
    check_manifest(&manifest_bytes, &files)?;
    let signature = key.sign(&manifest_bytes).to_bytes();
    write_archive(&manifest_bytes, Some(&signature), &files)
}

/// The fingerprint of the public half of the private key at `key`.
pub fn key_fingerprint(key: &Path) -> Result<String, BundleError> {
    Ok(TrustedKey::new(signing_key(key)?.verifying_key()).fingerprint)
}

/// Reads and checks a bundle (see the module's documentation). With keys,
/// the bundle must be signed by one of them.
pub fn open(archive: &[u8], keys: &[TrustedKey]) -> Result<Bundle, BundleError> {
    let entries = read_entries(archive)?;
    let (manifest_bytes, files) = sorted_parts(&entries)?;
    let manifest = check_manifest(&manifest_bytes, &files)?;
    let signature = match entries.iter().find(|(path, _)| path == SIGNATURE) {
        None => None,
        Some((_, bytes)) => Some(<[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| {
            BundleError::BadSignature(format!(
                "`{SIGNATURE}` holds {} bytes, not the 64 of an Ed25519 signature",
                bytes.len()
            ))
        })?),
    };
    let signed_by = match (&signature, keys.is_empty()) {
        (_, true) => None,
        (None, false) => return Err(BundleError::Unsigned),
        (Some(bytes), false) => {
            let signature = ed25519_dalek::Signature::from_bytes(bytes);
            let key = keys
                .iter()
                .find(|key| key.key.verify(&manifest_bytes, &signature).is_ok())
                .ok_or_else(|| {
                    BundleError::BadSignature(format!(
                        "no trusted key ({}) made it",
                        keys.iter()
                            .map(|k| k.fingerprint.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            Some(key.fingerprint.clone())
        }
    };
    let (policies, data) = split(&files)?;
    let engine = compile(&policies, data)?;
    if engine.digest() != manifest.policy_digest {
        return Err(BundleError::PolicyDigest {
            manifest: manifest.policy_digest,
            compiled: engine.digest().to_owned(),
        });
    }
    let policies = policies
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text.to_owned()))
        .collect();
    Ok(Bundle {
        manifest,
        manifest_bytes,
        signature,
        signed_by,
        policies,
        data: data.map(<[u8]>::to_vec),
        engine,
        archive_digest: format!("sha256:{}", sha256_hex(archive)),
    })
}

type Entries = Vec<(String, Vec<u8>)>;

/// Splits the entries into the manifest's bytes and the other files
/// (signature left out), sorted by path.
fn sorted_parts(entries: &Entries) -> Result<(Vec<u8>, Entries), BundleError> {
    let manifest = entries
        .iter()
        .find(|(path, _)| path == MANIFEST)
        .map(|(_, bytes)| bytes.clone())
        .ok_or_else(|| BundleError::Manifest(format!("the bundle holds no `{MANIFEST}`")))?;
    let mut files: Entries = entries
        .iter()
        .filter(|(path, _)| path != MANIFEST && path != SIGNATURE)
        .cloned()
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((manifest, files))
}

/// Parses the manifest and checks the versions and every file against it.
fn check_manifest(bytes: &[u8], files: &Entries) -> Result<Manifest, BundleError> {
    // The format is read first, so that a newer format with fields this
    // binary does not know is reported as newer, not as malformed.
    let head: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| BundleError::Manifest(format!("`{MANIFEST}` is not JSON: {e}")))?;
    if let Some(format) = head.get("format").and_then(serde_json::Value::as_u64) {
        if format > u64::from(FORMAT) {
            return Err(BundleError::NewerFormat(
                u32::try_from(format).unwrap_or(u32::MAX),
            ));
        }
    }
    if let Some(version) = head.get("writ_version").and_then(serde_json::Value::as_str) {
        if newer_than_self(version)? {
            return Err(BundleError::NewerWrit(version.to_owned()));
        }
    }
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| BundleError::Manifest(format!("`{MANIFEST}`: {e}")))?;
    check_revision(&manifest.revision)?;
    let mut listed: Vec<&str> = Vec::new();
    for file in &manifest.files {
        if listed.contains(&file.path.as_str()) {
            return Err(BundleError::Manifest(format!(
                "`{}` is listed twice",
                file.path
            )));
        }
        listed.push(&file.path);
        if file.path != DATA && !(file.path.starts_with(POLICIES) && file.path.ends_with(".writ")) {
            return Err(BundleError::Manifest(format!(
                "it lists `{}`; a bundle holds `{POLICIES}*.writ` and `{DATA}` only",
                file.path
            )));
        }
        let bytes = files
            .iter()
            .find(|(path, _)| *path == file.path)
            .map(|(_, bytes)| bytes)
            .ok_or_else(|| BundleError::Missing(file.path.clone()))?;
        if sha256_hex(bytes) != file.sha256.to_ascii_lowercase() {
            return Err(BundleError::DigestMismatch(file.path.clone()));
        }
    }
    if let Some((path, _)) = files
        .iter()
        .find(|(path, _)| !listed.contains(&path.as_str()))
    {
        return Err(BundleError::Extra(path.clone()));
    }
    Ok(manifest)
}

/// Whether `version` (`MAJOR.MINOR.PATCH`, any `-pre` or `+build` ignored)
/// is newer than this binary's.
fn newer_than_self(version: &str) -> Result<bool, BundleError> {
    fn parse(version: &str) -> Option<(u64, u64, u64)> {
        let core = version.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let triple = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(triple)
    }
    let theirs = parse(version).ok_or_else(|| {
        BundleError::Manifest(format!(
            "`writ_version` `{version}` is not MAJOR.MINOR.PATCH"
        ))
    })?;
    let ours = parse(env!("CARGO_PKG_VERSION")).unwrap_or((0, 0, 0));
    Ok(theirs > ours)
}

/// The policy files (as UTF-8 text) and the data file.
/// The policy files (path, text) and the data file's bytes, borrowed.
type Parts<'a> = (Vec<(&'a str, &'a str)>, Option<&'a [u8]>);

fn split(files: &Entries) -> Result<Parts<'_>, BundleError> {
    let mut policies = Vec::new();
    let mut data = None;
    for (path, bytes) in files {
        if path == DATA {
            data = Some(bytes.as_slice());
        } else {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| BundleError::Compile(format!("`{path}` is not UTF-8 text")))?;
            policies.push((path.as_str(), text));
        }
    }
    if policies.is_empty() {
        return Err(BundleError::Manifest(format!(
            "the bundle holds no `{POLICIES}*.writ` file"
        )));
    }
    Ok((policies, data))
}

fn compile(policies: &[(&str, &str)], data: Option<&[u8]>) -> Result<Engine, BundleError> {
    let data = match data {
        None => None,
        Some(bytes) => Some(crate::load::parse_data(DATA, bytes).map_err(BundleError::Compile)?),
    };
    let sources = policies
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()));
    Engine::compile(sources, data.as_ref()).map_err(|diagnostics| {
        BundleError::Compile(format!(
            "they do not compile ({} diagnostics):\n{}",
            diagnostics.len(),
            diagnostics.render(false)
        ))
    })
}

/// Unpacks the whole archive in memory, refusing anything but plain files
/// (and folders, skipped) at safe relative paths.
fn read_entries(archive: &[u8]) -> Result<Entries, BundleError> {
    if archive.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge);
    }
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut tar_bytes)
        .map_err(|e| BundleError::Truncated(e.to_string()))?;
    if tar_bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge);
    }
    if tar_bytes.is_empty() || tar_bytes.len() % 512 != 0 {
        return Err(BundleError::Truncated(format!(
            "the tar stream is {} bytes, not a whole number of 512-byte blocks",
            tar_bytes.len()
        )));
    }
    let mut tar = tar::Archive::new(tar_bytes.as_slice());
    let mut entries: Entries = Vec::new();
    let iter = tar
        .entries()
        .map_err(|e| BundleError::Truncated(e.to_string()))?;
    for entry in iter {
        let mut entry = entry.map_err(|e| BundleError::Truncated(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let path = safe_path(&raw)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            let kind = if kind.is_symlink() {
                "symbolic link".to_owned()
            } else if kind.is_hard_link() {
                "hard link".to_owned()
            } else {
                format!("special entry (tar type `{}`)", char::from(kind.as_byte()))
            };
            return Err(BundleError::NotAFile { path, kind });
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| BundleError::Truncated(e.to_string()))?;
        let expected = entry.header().size().unwrap_or(0);
        if bytes.len() as u64 != expected {
            return Err(BundleError::Truncated(format!(
                "`{path}` holds {} of its {expected} bytes",
                bytes.len()
            )));
        }
        if entries.iter().any(|(p, _)| *p == path) {
            return Err(BundleError::Duplicate(path));
        }
        entries.push((path, bytes));
    }
    Ok(entries)
}

/// A relative path with no `..`, no empty or `.` part but a leading `./`,
/// in UTF-8, with `/` separators.
fn safe_path(raw: &[u8]) -> Result<String, BundleError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| BundleError::UnsafePath(shown.clone()))?;
    let text = text.strip_prefix("./").unwrap_or(text);
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.is_empty()
        || text.starts_with('/')
        || text.contains('\\')
        || text.contains('\0')
        || text
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(BundleError::UnsafePath(shown));
    }
    Ok(text.to_owned())
}

/// Writes `bytes` to `path` atomically: to a temporary file beside it,
/// synced, renamed over `path`, and the folder synced, so that a reader
/// (or a crash) sees the old file or the new one, never part of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("`{}` names no file", path.display()))?;
    let aside = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        if let Ok(folder) = std::fs::File::open(&dir) {
            let _ = folder.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        format!("cannot write `{}`: {e}", path.display())
    })
}

/// Writes the archive: manifest, signature, then the files, as given.
fn write_archive(
    manifest: &[u8],
    signature: Option<&[u8; 64]>,
    files: &Entries,
) -> Result<Vec<u8>, BundleError> {
    let io = |e: std::io::Error| BundleError::Io(format!("cannot write the bundle: {e}"));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut add = |path: &str, bytes: &[u8]| -> Result<(), BundleError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, bytes).map_err(io)
    };
    add(MANIFEST, manifest)?;
    if let Some(signature) = signature {
        add(SIGNATURE, signature)?;
    }
    for (path, bytes) in files {
        add(path, bytes)?;
    }
    tar.into_inner()
        .and_then(flate2::write::GzEncoder::finish)
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_escape_are_refused() {
        for bad in [
            "/etc/passwd",
            "../x",
            "policies/../../x",
            "a//b",
            "",
            "a\\b",
        ] {
            assert!(safe_path(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            safe_path(b"./policies/a.writ").as_deref(),
            Ok("policies/a.writ")
        );
        assert_eq!(safe_path(b"policies/").as_deref(), Ok("policies"));
    }

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(newer_than_self("999.0.0"), Ok(true));
        assert_eq!(newer_than_self("0.0.1"), Ok(false));
        assert_eq!(newer_than_self(env!("CARGO_PKG_VERSION")), Ok(false));
        assert!(newer_than_self("1.x").is_err());
    }
}
