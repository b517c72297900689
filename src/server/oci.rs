//! Bundles in an OCI registry (`oci://registry/repository:tag`), over the
//! OCI distribution HTTP API with `ureq` (docs/fleet.md says why not an
//! OCI client crate). A bundle is an OCI artifact: an image manifest whose
//! config is the bundle's `manifest.json` and whose one layer is the
//! archive. Pulling is a manifest `GET` (with `If-None-Match`) and a blob
//! `GET`; pushing is two blob uploads and a manifest `PUT`. Anonymous
//! access only; `http://` is used for a registry on the loopback,
//! `https://` for any other.

use sha2::{Digest as _, Sha256};

/// The layer's media type: the bundle archive.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.writ.bundle.layer.v1.tar+gzip";
/// The config's media type: the bundle's `manifest.json`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.writ.bundle.config.v1+json";
/// The artifact's type.
pub const ARTIFACT_TYPE: &str = "application/vnd.writ.bundle.v1";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Largest OCI manifest read.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// `oci://registry[:port]/repository[/more]:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// `name[/name...]`, lowercase.
    pub repository: String,
    /// The tag.
    pub tag: String,
}

impl Reference {
    /// Parses an `oci://` reference; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("`{text}` is not `oci://registry/repository:tag`: {why}");
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad("the registry is not a host[:port]"));
        }
        let (repository, tag) = path.rsplit_once(':').ok_or_else(|| bad("no :tag"))?;
        let name_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !name_ok {
            return Err(bad(
                "the repository must be lowercase letters, digits, `._-` and `/`",
            ));
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !tag_ok {
            return Err(bad("the tag must be 1 to 128 letters, digits or `._-`"));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }

    fn host(&self) -> &str {
        match self.registry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => &self.registry,
        }
    }

    /// `http://` for a loopback registry, `https://` otherwise.
    fn base(&self) -> String {
        let host = self.host();
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        let scheme = if loopback { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }

    /// Whether the registry is reached over HTTPS.
    pub fn https(&self) -> bool {
        self.base().starts_with("https://")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "oci://{}/{}:{}",
            self.registry, self.repository, self.tag
        )
    }
}

/// A client for one registry.
pub fn agent(reference: &Reference, timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(3)
        .https_only(reference.https())
        .user_agent(concat!("writ/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn digest_of(bytes: &[u8]) -> String {
    crate::hex::prefixed("sha256:", &Sha256::digest(bytes))
}

/// What a pull found.
#[derive(Debug)]
pub enum Pulled {
    /// The tag still names the manifest `known`.
    Unchanged,
    /// The bundle archive, and the manifest digest that named it.
    Bundle {
        /// The archive.
        bytes: Vec<u8>,
        /// The OCI manifest's digest (the puller's ETag).
        manifest: String,
    },
}

/// Pulls the bundle the tag names, unless it still names the manifest
/// `known`.
pub fn pull(
    agent: &ureq::Agent,
    reference: &Reference,
    known: Option<&str>,
) -> Result<Pulled, String> {
    let url = format!("{}/manifests/{}", reference.base(), reference.tag);
    let mut request = agent.get(&url).header("Accept", MANIFEST_MEDIA_TYPE);
    if let Some(known) = known {
        request = request.header("If-None-Match", format!("\"{known}\""));
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        304 => return Ok(Pulled::Unchanged),
        200 => {}
        404 => return Err(format!("`{reference}` is not in the registry (404)")),
        status => return Err(format!("the manifest request answered {status}")),
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_MANIFEST_BYTES)
        .read_to_vec()
        .map_err(|e| format!("reading the manifest: {e}"))?;
    let manifest = digest_of(&body);
    if known == Some(manifest.as_str()) {
        return Ok(Pulled::Unchanged);
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("the OCI manifest is not JSON: {e}"))?;
    let layers = parsed["layers"].as_array().cloned().unwrap_or_default();
    let layer = layers
        .iter()
        .find(|l| l["mediaType"] == LAYER_MEDIA_TYPE)
        .ok_or_else(|| {
            format!("`{reference}` is not a writ bundle (no layer of type {LAYER_MEDIA_TYPE})")
        })?;
    let digest = layer["digest"]
        .as_str()
        .filter(|d| d.starts_with("sha256:") && d.len() == 71)
        .ok_or_else(|| "the bundle layer has no sha256 digest".to_owned())?;
    let url = format!("{}/blobs/{digest}", reference.base());
    let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!(
            "the bundle blob request answered {}",
            response.status()
        ));
    }
    let bytes = response
        .body_mut()
        .with_config()
        .limit(crate::bundle::MAX_BUNDLE_BYTES)
        .read_to_vec()
        .map_err(|e| format!("reading the bundle blob: {e}"))?;
    if digest_of(&bytes) != digest {
        return Err(format!(
            "the bundle blob does not match its digest {digest}"
        ));
    }
    Ok(Pulled::Bundle { bytes, manifest })
}

/// Uploads one blob (monolithically) unless the registry has it.
fn push_blob(agent: &ureq::Agent, reference: &Reference, bytes: &[u8]) -> Result<String, String> {
    let digest = digest_of(bytes);
    let head = agent
        .head(format!("{}/blobs/{digest}", reference.base()))
        .call()
        .map_err(|e| e.to_string())?;
    if head.status() == 200 {
        return Ok(digest);
    }
    let started = agent
        .post(format!("{}/blobs/uploads/", reference.base()))
        .send_empty()
        .map_err(|e| e.to_string())?;
    if started.status() != 202 {
        return Err(format!("starting the upload answered {}", started.status()));
    }
    let location = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| "the registry gave no upload location".to_owned())?;
    let location = if location.starts_with('/') {
        let origin = reference.base();
        let origin = origin
            .split_once("/v2/")
            .map_or(origin.as_str(), |(origin, _)| origin);
        format!("{origin}{location}")
    } else {
        location.to_owned()
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let done = agent
        .put(format!("{location}{separator}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .send(bytes)
        .map_err(|e| e.to_string())?;
    if done.status() != 201 {
        return Err(format!("uploading the blob answered {}", done.status()));
    }
    Ok(digest)
}

/// Pushes a bundle archive (already checked) under the reference's tag;
/// returns the OCI manifest's digest.
pub fn push(
    agent: &ureq::Agent,
    reference: &Reference,
    archive: &[u8],
    bundle_manifest: &[u8],
) -> Result<String, String> {
    let config = push_blob(agent, reference, bundle_manifest)?;
    let layer = push_blob(agent, reference, archive)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config,
            "size": bundle_manifest.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer,
            "size": archive.len(),
            "annotations": {"org.opencontainers.image.title": "bundle.tar.gz"},
        }],
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let response = agent
        .put(format!("{}/manifests/{}", reference.base(), reference.tag))
        .header("Content-Type", MANIFEST_MEDIA_TYPE)
        .send(&body[..])
        .map_err(|e| e.to_string())?;
    if response.status() != 201 {
        return Err(format!(
            "putting the manifest answered {}",
            response.status()
        ));
    }
    Ok(digest_of(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_refuse() {
        let r = Reference::parse("oci://127.0.0.1:5000/writ/policies:prod").expect("parses");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "writ/policies");
        assert_eq!(r.tag, "prod");
        assert!(!r.https());
        assert!(Reference::parse("oci://registry.example.com/a:b")
            .expect("parses")
            .https());
        for bad in [
            "oci://host",
            "oci://host/repo",
            "oci://host/Repo:tag",
            "https://host/repo:tag",
            "oci:///repo:tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
