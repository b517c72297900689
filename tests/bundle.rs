//! `writ bundle build|sign|verify` on the real binary: a built bundle
//! verifies, a signed one verifies against its key only, and every fault
//! (truncation, escaping paths, links, missing, extra or changed files, a
//! newer format or writ, a missing or wrong signature, a lying policy
//! digest) is refused with an error naming what is wrong.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::server::{TempDir, BIN};
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run writ")
}

/// An Ed25519 key pair from a fixed seed: (private PEM path, public PEM path).
fn key_pair(dir: &TempDir, name: &str, seed: u8) -> (String, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let private = dir.file(&format!("{name}.pem"));
    let public = dir.file(&format!("{name}.pub"));
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("private pem");
    std::fs::write(&private, pem.as_bytes()).expect("write key");
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    std::fs::write(&public, pem).expect("write pub");
    (s(&private), s(&public))
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

/// A policy directory with two files and a data file; returns the built
/// bundle's path.
fn built(dir: &TempDir) -> PathBuf {
    let policies = dir.file("policies");
    std::fs::create_dir_all(policies.join("sub")).expect("mkdir");
    std::fs::write(
        policies.join("a.writ"),
        "@id(\"a\") permit if action == \"ping\";\n",
    )
    .expect("write");
    std::fs::write(
        policies.join("sub/b.writ"),
        "@id(\"b\") permit if action == \"pong\";\n",
    )
    .expect("write");
    std::fs::write(dir.file("data.json"), "{\"teams\": [\"ops\"]}\n").expect("write");
    let out = dir.file("bundle.tar.gz");
    let built = run(&[
        "bundle",
        "build",
        &s(&policies),
        "--data",
        &s(&dir.file("data.json")),
        "-o",
        &s(&out),
    ]);
    assert!(built.status.success(), "{built:?}");
    out
}

/// One archive entry as the tests rewrite it.
struct Entry {
    path: Vec<u8>,
    kind: tar::EntryType,
    bytes: Vec<u8>,
    link: Option<&'static str>,
}

fn entries(archive: &Path) -> Vec<Entry> {
    let bytes = std::fs::read(archive).expect("read bundle");
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut tar_bytes)
        .expect("gunzip");
    let mut tar = tar::Archive::new(tar_bytes.as_slice());
    let mut out = Vec::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        out.push(Entry {
            path: entry.path_bytes().into_owned(),
            kind: entry.header().entry_type(),
            bytes,
            link: None,
        });
    }
    out
}

/// Writes entries as they are, with the path bytes put in the header by
/// hand (the `tar` crate refuses to write `..` itself).
fn write(archive: &Path, entries: &[Entry]) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..entry.path.len()].copy_from_slice(&entry.path);
        }
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_size(entry.bytes.len() as u64);
        if let Some(link) = entry.link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        tar.append(&header, entry.bytes.as_slice()).expect("append");
    }
    let bytes = tar.into_inner().expect("tar").finish().expect("gzip");
    std::fs::write(archive, bytes).expect("write bundle");
}

fn manifest_of(entries: &[Entry]) -> Value {
    let entry = entries
        .iter()
        .find(|e| e.path == b"manifest.json")
        .expect("a manifest");
    serde_json::from_slice(&entry.bytes).expect("manifest json")
}

fn set_manifest(entries: &mut [Entry], manifest: &Value) {
    let entry = entries
        .iter_mut()
        .find(|e| e.path == b"manifest.json")
        .expect("a manifest");
    entry.bytes = serde_json::to_vec_pretty(manifest).expect("json");
}

/// `writ bundle verify` refuses (exit 1) with stderr containing `needle`.
fn refused(bundle: &Path, keys: &[&str], needle: &str) {
    let mut args = vec!["bundle".to_owned(), "verify".to_owned(), s(bundle)];
    for key in keys {
        args.push("--pub".to_owned());
        args.push((*key).to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "a refused bundle prints no verdict");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

fn verified(bundle: &Path, keys: &[&str]) -> Value {
    let mut args = vec!["bundle".to_owned(), "verify".to_owned(), s(bundle)];
    for key in keys {
        args.push("--pub".to_owned());
        args.push((*key).to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("verdict json")
}

#[test]
fn a_built_bundle_verifies_and_names_its_digest_and_revision() {
    let dir = TempDir::new("bundle-built");
    let bundle = built(&dir);
    let verdict = verified(&bundle, &[]);
    assert_eq!(verdict["status"], "verified");
    assert_eq!(verdict["files"], 3);
    assert_eq!(verdict["signed"], false);
    let digest = verdict["policy_digest"].as_str().expect("digest");
    let revision = verdict["revision"].as_str().expect("revision");
    assert_eq!(revision, &digest["sha256:".len().."sha256:".len() + 12]);
    // The same input gives the same bytes.
    let again = dir.file("again.tar.gz");
    let out = run(&[
        "bundle",
        "build",
        &s(&dir.file("policies")),
        "--data",
        &s(&dir.file("data.json")),
        "-o",
        &s(&again),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&bundle).expect("read"),
        std::fs::read(&again).expect("read")
    );
    // A revision given at build is the manifest's.
    let named = dir.file("named.tar.gz");
    let out = run(&[
        "bundle",
        "build",
        &s(&dir.file("policies")),
        "--revision",
        "2026.11.30-1",
        "-o",
        &s(&named),
    ]);
    assert!(out.status.success());
    assert_eq!(verified(&named, &[])["revision"], "2026.11.30-1");
}

#[test]
fn a_signed_bundle_verifies_against_its_key_only() {
    let dir = TempDir::new("bundle-signed");
    let bundle = built(&dir);
    let (private, public) = key_pair(&dir, "good", 7);
    let (_, other) = key_pair(&dir, "other", 9);
    refused(&bundle, &[&public], "not signed");
    let out = run(&["bundle", "sign", &s(&bundle), "--key", &private]);
    assert!(out.status.success(), "{out:?}");
    let verdict = verified(&bundle, &[&public]);
    assert_eq!(verdict["signed"], true);
    assert!(verdict["signed_by"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:")));
    // Any one of several trusted keys will do.
    verified(&bundle, &[&other, &public]);
    refused(&bundle, &[&other], "no trusted key");
    // Re-signed with the wrong key.
    let (wrong, _) = key_pair(&dir, "wrong", 11);
    let out = run(&["bundle", "sign", &s(&bundle), "--key", &wrong]);
    assert!(out.status.success());
    refused(&bundle, &[&public], "bad bundle signature");
}

#[test]
fn a_manifest_changed_after_signing_is_refused() {
    let dir = TempDir::new("bundle-tampered");
    let bundle = built(&dir);
    let (private, public) = key_pair(&dir, "good", 7);
    assert!(run(&["bundle", "sign", &s(&bundle), "--key", &private])
        .status
        .success());
    let mut all = entries(&bundle);
    let mut manifest = manifest_of(&all);
    manifest["revision"] = Value::from("forged");
    set_manifest(&mut all, &manifest);
    write(&bundle, &all);
    refused(&bundle, &[&public], "no trusted key");
    // A signature that is not 64 bytes.
    let mut all = entries(&bundle);
    let sig = all
        .iter_mut()
        .find(|e| e.path == b"manifest.sig")
        .expect("sig");
    sig.bytes.truncate(10);
    write(&bundle, &all);
    refused(&bundle, &[&public], "not the 64 of an Ed25519 signature");
}

#[test]
fn a_changed_file_is_refused() {
    let dir = TempDir::new("bundle-digest");
    let bundle = built(&dir);
    let mut all = entries(&bundle);
    let a = all
        .iter_mut()
        .find(|e| e.path == b"policies/a.writ")
        .expect("a.writ");
    a.bytes = b"@id(\"a\") permit if action == \"pwn\";\n".to_vec();
    write(&bundle, &all);
    refused(
        &bundle,
        &[],
        "`policies/a.writ` does not match its SHA-256 in the manifest",
    );
}

#[test]
fn a_missing_or_extra_file_is_refused() {
    let dir = TempDir::new("bundle-missing");
    let bundle = built(&dir);
    let mut all = entries(&bundle);
    all.retain(|e| e.path != b"policies/sub/b.writ");
    write(&bundle, &all);
    refused(
        &bundle,
        &[],
        "the manifest lists `policies/sub/b.writ`, which the bundle does not hold",
    );

    let bundle = built(&dir);
    let mut all = entries(&bundle);
    all.push(Entry {
        path: b"policies/extra.writ".to_vec(),
        kind: tar::EntryType::Regular,
        bytes: b"@id(\"x\") permit;\n".to_vec(),
        link: None,
    });
    write(&bundle, &all);
    refused(
        &bundle,
        &[],
        "holds `policies/extra.writ`, which the manifest does not list",
    );
}

#[test]
fn paths_escaping_the_folder_and_links_are_refused() {
    let dir = TempDir::new("bundle-escape");
    for (path, kind, link, needle) in [
        (
            &b"../evil.writ"[..],
            tar::EntryType::Regular,
            None,
            "`../evil.writ`, a path escaping its folder",
        ),
        (
            &b"policies/../../evil.writ"[..],
            tar::EntryType::Regular,
            None,
            "a path escaping its folder",
        ),
        (
            &b"/etc/evil.writ"[..],
            tar::EntryType::Regular,
            None,
            "`/etc/evil.writ`, a path escaping its folder",
        ),
        (
            &b"policies/link.writ"[..],
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
            "`policies/link.writ`, a symbolic link",
        ),
        (
            &b"policies/hard.writ"[..],
            tar::EntryType::Link,
            Some("policies/a.writ"),
            "`policies/hard.writ`, a hard link",
        ),
    ] {
        let bundle = built(&dir);
        let mut all = entries(&bundle);
        all.push(Entry {
            path: path.to_vec(),
            kind,
            bytes: Vec::new(),
            link,
        });
        write(&bundle, &all);
        refused(&bundle, &[], needle);
    }
}

#[test]
fn a_newer_format_or_writ_is_refused() {
    let dir = TempDir::new("bundle-newer");
    let bundle = built(&dir);
    let mut all = entries(&bundle);
    let mut manifest = manifest_of(&all);
    manifest["format"] = Value::from(2);
    manifest["something_new"] = Value::from(true);
    set_manifest(&mut all, &manifest);
    write(&bundle, &all);
    refused(
        &bundle,
        &[],
        "the bundle is format 2; this writ reads format 1 and older",
    );

    let bundle = built(&dir);
    let mut all = entries(&bundle);
    let mut manifest = manifest_of(&all);
    manifest["writ_version"] = Value::from("99.0.0");
    set_manifest(&mut all, &manifest);
    write(&bundle, &all);
    refused(&bundle, &[], "built by writ 99.0.0, newer than this writ");
}

#[test]
fn a_truncated_archive_is_refused() {
    let dir = TempDir::new("bundle-truncated");
    let bundle = built(&dir);
    let bytes = std::fs::read(&bundle).expect("read");
    for cut in [bytes.len() / 2, bytes.len() - 4, 10] {
        std::fs::write(&bundle, &bytes[..cut]).expect("write");
        refused(&bundle, &[], "truncated");
    }
    // Not a gzip stream at all.
    std::fs::write(&bundle, b"<html>not a bundle</html>").expect("write");
    refused(&bundle, &[], "not a tar.gz archive");
}

#[test]
fn a_manifest_naming_another_policy_digest_is_refused() {
    let dir = TempDir::new("bundle-lying");
    let bundle = built(&dir);
    let mut all = entries(&bundle);
    let mut manifest = manifest_of(&all);
    manifest["policy_digest"] = Value::from(format!("sha256:{}", "0".repeat(64)));
    set_manifest(&mut all, &manifest);
    write(&bundle, &all);
    refused(&bundle, &[], "the policies compile to sha256:");
}

#[test]
fn a_key_that_is_not_ed25519_pem_is_an_error() {
    let dir = TempDir::new("bundle-badkey");
    let bundle = built(&dir);
    let junk = dir.file("junk.pub");
    let mut file = std::fs::File::create(&junk).expect("create");
    file.write_all(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        .expect("write");
    let out = run(&["bundle", "verify", &s(&bundle), "--pub", &s(&junk)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an Ed25519 public key"));
    let out = run(&["bundle", "sign", &s(&bundle), "--key", &s(&junk)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an Ed25519 private key"));
}
