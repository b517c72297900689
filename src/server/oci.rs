//! Bundles in an OCI registry (`oci://registry/repository:tag`): a thin
//! adapter over the `oci-client` crate, which speaks the OCI distribution
//! API (the bearer token challenge included). A bundle is an OCI artifact:
//! an image manifest whose config is the bundle's `manifest.json` and whose
//! one layer is the archive. This module keeps what is writ's: the
//! reference's syntax and its errors, the scheme (`http://` for a registry
//! on the loopback, `https://` for any other), the credentials (from the
//! environment or a Docker `config.json`), the time limit of each
//! operation, the size limits, and error messages naming what is wrong.

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

    /// Whether the registry is reached over HTTPS: any but one on the
    /// loopback (`localhost`, `127.*`, `[::1]`), reached over `http://`.
    pub fn https(&self) -> bool {
        let host = self.host();
        !(host == "localhost" || host.starts_with("127.") || host == "[::1]")
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

#[cfg(feature = "oci")]
pub use client::{ProcessEnv, Pulled, Registry};

/// The registry client: built with the `oci` feature (the `cli` set
/// includes it); without it, `oci://` sources are refused at start.
#[cfg(feature = "oci")]
mod client {
    use super::{
        Reference, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
        MAX_MANIFEST_BYTES,
    };
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::errors::OciDistributionError;
    use oci_client::manifest::{OciDescriptor, OciImageManifest};
    use oci_client::secrets::RegistryAuth;

    /// Where credentials are read from: the process environment by default,
    /// a map in the unit tests.
    pub trait Env {
        /// The variable's value, if set and not empty.
        fn var(&self, name: &str) -> Option<String>;
    }

    /// The process environment.
    pub struct ProcessEnv;

    impl Env for ProcessEnv {
        fn var(&self, name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
    }

    /// How writ authenticates to a registry (docs/fleet.md, "Registry
    /// credentials"). The registry's bearer token challenge, when it answers
    /// with one, is followed by `oci-client` with these credentials.
    #[derive(Clone, PartialEq, Eq)]
    pub enum Credentials {
        /// No credentials (a token challenge is still answered anonymously).
        Anonymous,
        /// A user name and password (or access token), and where they came from.
        Basic {
            /// The user name.
            username: String,
            /// The password or access token.
            password: String,
            /// `WRIT_REGISTRY_USERNAME` or the Docker config file's path.
            from: String,
        },
        /// A bearer token sent as it is (`WRIT_REGISTRY_TOKEN`).
        Bearer(String),
    }

    impl std::fmt::Debug for Credentials {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Credentials::Anonymous => f.write_str("Anonymous"),
                Credentials::Basic { username, from, .. } => {
                    write!(f, "Basic({username} from {from})")
                }
                Credentials::Bearer(_) => f.write_str("Bearer(..)"),
            }
        }
    }

    impl Credentials {
        /// The credentials for `registry` (`host[:port]`), first found of:
        /// `WRIT_REGISTRY_TOKEN`; `WRIT_REGISTRY_USERNAME` with
        /// `WRIT_REGISTRY_PASSWORD`; the registry's entry in the Docker config
        /// file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`);
        /// else anonymous. A config file that exists but cannot be read, or
        /// whose entry for the registry is malformed, is an error naming it.
        pub fn find(env: &dyn Env, registry: &str) -> Result<Credentials, String> {
            if let Some(token) = env.var("WRIT_REGISTRY_TOKEN") {
                return Ok(Credentials::Bearer(token));
            }
            match (
                env.var("WRIT_REGISTRY_USERNAME"),
                env.var("WRIT_REGISTRY_PASSWORD"),
            ) {
                (Some(username), Some(password)) => {
                    return Ok(Credentials::Basic {
                        username,
                        password,
                        from: "WRIT_REGISTRY_USERNAME".to_owned(),
                    })
                }
                (Some(_), None) => {
                    return Err(
                        "WRIT_REGISTRY_USERNAME is set without WRIT_REGISTRY_PASSWORD".into(),
                    )
                }
                (None, Some(_)) => {
                    return Err(
                        "WRIT_REGISTRY_PASSWORD is set without WRIT_REGISTRY_USERNAME".into(),
                    )
                }
                (None, None) => {}
            }
            let file = match (env.var("DOCKER_CONFIG"), env.var("HOME")) {
                (Some(dir), _) => std::path::PathBuf::from(dir).join("config.json"),
                (None, Some(home)) => std::path::PathBuf::from(home).join(".docker/config.json"),
                (None, None) => return Ok(Credentials::Anonymous),
            };
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Credentials::Anonymous)
                }
                Err(e) => return Err(format!("cannot read `{}`: {e}", file.display())),
            };
            docker_config_entry(&text, registry)
                .map_err(|why| format!("`{}`: {why}", file.display()))
                .map(|found| match found {
                    Some((username, password)) => Credentials::Basic {
                        username,
                        password,
                        from: file.display().to_string(),
                    },
                    None => Credentials::Anonymous,
                })
        }

        fn auth(&self) -> RegistryAuth {
            match self {
                Credentials::Anonymous => RegistryAuth::Anonymous,
                Credentials::Basic {
                    username, password, ..
                } => RegistryAuth::Basic(username.clone(), password.clone()),
                Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
            }
        }

        /// Says which credentials were refused, for an error message.
        fn describe(&self) -> String {
            match self {
                Credentials::Anonymous => "anonymous access (no credentials found: see \
                     WRIT_REGISTRY_USERNAME, WRIT_REGISTRY_TOKEN or a Docker config.json)"
                    .to_owned(),
                Credentials::Basic { username, from, .. } => {
                    format!("user `{username}` (from {from})")
                }
                Credentials::Bearer(_) => "the token in WRIT_REGISTRY_TOKEN".to_owned(),
            }
        }
    }

    /// The user name and password of `registry` in a Docker `config.json`
    /// (`auths.<registry>.auth`, base64 of `user:password`, or its
    /// `username` and `password`); `None` when it has no entry for it.
    /// Credential helpers (`credsStore`, `credHelpers`) are not run.
    fn docker_config_entry(text: &str, registry: &str) -> Result<Option<(String, String)>, String> {
        use base64::Engine as _;
        let config: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        let entry = auths.iter().find_map(|(key, value)| {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            (host == registry).then_some(value)
        });
        let Some(entry) = entry else {
            return Ok(None);
        };
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        };
        if let Some(encoded) = field("auth") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    format!("`auths.{registry}.auth` is not base64 of `user:password`")
                })?;
            let (username, password) = decoded.split_once(':').ok_or_else(|| {
                format!("`auths.{registry}.auth` is not base64 of `user:password`")
            })?;
            return Ok(Some((username.to_owned(), password.to_owned())));
        }
        match (field("username"), field("password")) {
            (Some(username), Some(password)) => {
                Ok(Some((username.to_owned(), password.to_owned())))
            }
            _ => Err(format!(
                "`auths.{registry}` has neither `auth` nor `username` and `password`"
            )),
        }
    }

    /// A client for one registry: its scheme, credentials and time limit.
    pub struct Registry {
        client: oci_client::Client,
        image: oci_client::Reference,
        reference: Reference,
        credentials: Credentials,
        timeout: Duration,
    }

    impl std::fmt::Debug for Registry {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Registry")
                .field("reference", &self.reference)
                .field("credentials", &self.credentials)
                .field("timeout", &self.timeout)
                .finish()
        }
    }

    /// Makes the process's default rustls crypto provider the one ureq uses
    /// (ring), once; `oci-client`'s reqwest is built without a provider.
    fn install_crypto_provider() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err: another part of the process installed one first; it serves.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }

    impl Registry {
        /// A client for `reference`'s registry, with the credentials found in
        /// `env`; every operation is limited to `timeout`.
        pub fn new(
            reference: &Reference,
            env: &dyn Env,
            timeout: Duration,
        ) -> Result<Registry, String> {
            install_crypto_provider();
            let credentials = Credentials::find(env, &reference.registry)
                .map_err(|e| format!("credentials for `{}`: {e}", reference.registry))?;
            let config = ClientConfig {
                protocol: if reference.https() {
                    ClientProtocol::Https
                } else {
                    ClientProtocol::Http
                },
                connect_timeout: Some(timeout.min(Duration::from_secs(10))),
                read_timeout: Some(timeout),
                user_agent: concat!("writ/", env!("CARGO_PKG_VERSION")),
                use_monolithic_push: true,
                ..ClientConfig::default()
            };
            let client = oci_client::Client::try_from(config)
                .map_err(|e| format!("cannot make a client for `{}`: {e}", reference.registry))?;
            Ok(Registry {
                client,
                image: oci_client::Reference::with_tag(
                    reference.registry.clone(),
                    reference.repository.clone(),
                    reference.tag.clone(),
                ),
                reference: reference.clone(),
                credentials,
                timeout,
            })
        }

        /// Runs one operation under the time limit, on the runtime of the
        /// calling (blocking) thread, or on a runtime of its own when there
        /// is none (`writ bundle push`, a server's first pull).
        fn run<T>(
            &self,
            what: &str,
            operation: impl Future<Output = Result<T, String>>,
        ) -> Result<T, String> {
            let limited = async {
                tokio::time::timeout(self.timeout, operation)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "{what}: `{}` did not answer within {} s",
                            self.reference.registry,
                            self.timeout.as_secs()
                        ))
                    })
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle.block_on(limited),
                Err(_) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime for the registry client: {e}"))?
                    .block_on(limited),
            }
        }

        /// Names what went wrong in `what`, in writ's words.
        fn error(&self, what: &str, error: OciDistributionError) -> String {
            let registry = &self.reference.registry;
            let reference = &self.reference;
            let unauthorized = || {
                format!(
                    "{what}: `{registry}` refused {} (not authorized)",
                    self.credentials.describe()
                )
            };
            match error {
                OciDistributionError::UnauthorizedError { .. } => unauthorized(),
                OciDistributionError::AuthenticationFailure(why) => {
                    format!(
                        "{what}: authenticating to `{registry}` with {} failed: {why}",
                        self.credentials.describe()
                    )
                }
                OciDistributionError::RegistryError { envelope, .. } => {
                    use oci_client::errors::OciErrorCode as Code;
                    let codes: Vec<&Code> = envelope.errors.iter().map(|e| &e.code).collect();
                    if codes.iter().any(|c| {
                        matches!(
                            c,
                            Code::ManifestUnknown | Code::NameUnknown | Code::NotFound
                        )
                    }) {
                        format!("`{reference}` is not in the registry (404)")
                    } else if codes
                        .iter()
                        .any(|c| matches!(c, Code::Unauthorized | Code::Denied))
                    {
                        unauthorized()
                    } else {
                        let messages: Vec<String> = envelope
                            .errors
                            .iter()
                            .map(|e| format!("{:?}: {}", e.code, e.message))
                            .collect();
                        format!("{what}: the registry answered {}", messages.join("; "))
                    }
                }
                OciDistributionError::ServerError {
                    code: 401 | 403, ..
                } => unauthorized(),
                OciDistributionError::ServerError { code: 404, .. }
                | OciDistributionError::ImageManifestNotFoundError(_) => {
                    format!("`{reference}` is not in the registry (404)")
                }
                OciDistributionError::ServerError { code, message, .. } => {
                    let message: String = message.trim().chars().take(200).collect();
                    if message.is_empty() {
                        format!("{what}: the registry answered {code}")
                    } else {
                        format!("{what}: the registry answered {code}: {message}")
                    }
                }
                OciDistributionError::RequestError(e) if e.is_timeout() => format!(
                    "{what}: `{registry}` did not answer within {} s",
                    self.timeout.as_secs()
                ),
                OciDistributionError::RequestError(e) if e.is_connect() => {
                    format!("{what}: cannot connect to `{registry}`: {}", chain(&e))
                }
                OciDistributionError::RequestError(e) => format!("{what}: {}", chain(&e)),
                OciDistributionError::DigestError(e) => {
                    format!("{what}: the registry sent bytes that do not match their digest: {e}")
                }
                other => format!("{what}: {other}"),
            }
        }

        /// Pulls the bundle the tag names, unless it still names the OCI
        /// manifest `known`.
        pub fn pull(&self, known: Option<&str>) -> Result<Pulled, String> {
            self.run("pulling", async {
                self.client
                    .store_auth_if_needed(self.image.resolve_registry(), &self.credentials.auth())
                    .await;
                let (body, manifest) = self
                    .client
                    .pull_manifest_raw(
                        &self.image,
                        &self.credentials.auth(),
                        &[MANIFEST_MEDIA_TYPE],
                    )
                    .await
                    .map_err(|e| self.error("the manifest request", e))?;
                if known == Some(manifest.as_str()) {
                    return Ok(Pulled::Unchanged);
                }
                if body.len() as u64 > MAX_MANIFEST_BYTES {
                    return Err(format!(
                        "the OCI manifest of `{}` is larger than {MAX_MANIFEST_BYTES} bytes",
                        self.reference
                    ));
                }
                let parsed: OciImageManifest = serde_json::from_slice(&body).map_err(|e| {
                    format!(
                        "the OCI manifest of `{}` is not an image manifest: {e}",
                        self.reference
                    )
                })?;
                let layer = parsed
                    .layers
                    .iter()
                    .find(|l| l.media_type == LAYER_MEDIA_TYPE)
                    .ok_or_else(|| {
                        format!(
                            "`{}` is not a writ bundle (no layer of type {LAYER_MEDIA_TYPE})",
                            self.reference
                        )
                    })?;
                if !(layer.digest.starts_with("sha256:") && layer.digest.len() == 71) {
                    return Err("the bundle layer has no sha256 digest".to_owned());
                }
                let limit = crate::bundle::MAX_BUNDLE_BYTES;
                if u64::try_from(layer.size).map_or(true, |size| size > limit) {
                    return Err(format!(
                        "the bundle layer's size {} is not between 0 and {limit} bytes",
                        layer.size
                    ));
                }
                let mut out = Capped::new(limit);
                self.client
                    .pull_blob(&self.image, layer, &mut out)
                    .await
                    .map_err(|e| self.error("the bundle blob request", e))?;
                Ok(Pulled::Bundle {
                    bytes: out.bytes,
                    manifest,
                })
            })
        }

        /// Pushes a bundle archive (already checked) under the reference's
        /// tag; returns the OCI manifest's digest.
        pub fn push(&self, archive: &[u8], bundle_manifest: &[u8]) -> Result<String, String> {
            let config = Config::new(bundle_manifest.to_vec(), CONFIG_MEDIA_TYPE.to_owned(), None);
            let title = std::collections::BTreeMap::from([(
                "org.opencontainers.image.title".to_owned(),
                "bundle.tar.gz".to_owned(),
            )]);
            let layer = ImageLayer::new(archive.to_vec(), LAYER_MEDIA_TYPE.to_owned(), Some(title));
            let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
            manifest.artifact_type = Some(ARTIFACT_TYPE.to_owned());
            let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
            let digest = digest_of(&body);
            self.run("pushing", async {
                self.client
                    .store_auth_if_needed(self.image.resolve_registry(), &self.credentials.auth())
                    .await;
                for (what, data, descriptor) in [
                    (
                        "uploading the config",
                        config.data.clone(),
                        &manifest.config,
                    ),
                    (
                        "uploading the bundle",
                        layer.data.clone(),
                        first(&manifest.layers)?,
                    ),
                ] {
                    self.client
                        .push_blob(&self.image, data, &descriptor.digest)
                        .await
                        .map_err(|e| self.error(what, e))?;
                }
                let content_type = axum::http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
                self.client
                    .push_manifest_raw(&self.image, body, content_type)
                    .await
                    .map_err(|e| self.error("putting the manifest", e))?;
                Ok(())
            })?;
            Ok(digest)
        }
    }

    fn first(layers: &[OciDescriptor]) -> Result<&OciDescriptor, String> {
        layers
            .first()
            .ok_or_else(|| "the OCI manifest built has no layer".to_owned())
    }

    /// An error and its sources, for messages (reqwest's own `Display`
    /// stops at "error sending request").
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    fn digest_of(bytes: &[u8]) -> String {
        use sha2::{Digest as _, Sha256};
        crate::hex::prefixed("sha256:", &Sha256::digest(bytes))
    }

    /// A sink that refuses to grow past its limit (a registry sending more
    /// than the descriptor said).
    struct Capped {
        bytes: Vec<u8>,
        limit: u64,
    }

    impl Capped {
        fn new(limit: u64) -> Capped {
            Capped {
                bytes: Vec::new(),
                limit,
            }
        }
    }

    impl tokio::io::AsyncWrite for Capped {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if (self.bytes.len() + buf.len()) as u64 > self.limit {
                return Poll::Ready(Err(std::io::Error::other(format!(
                    "the bundle blob is larger than {} bytes",
                    self.limit
                ))));
            }
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
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

    #[cfg(feature = "oci")]
    mod credentials {
        use super::super::client::{Credentials, Env};
        use std::collections::HashMap;

        struct Map(HashMap<&'static str, String>);

        impl Env for Map {
            fn var(&self, name: &str) -> Option<String> {
                self.0.get(name).cloned()
            }
        }

        fn env(pairs: &[(&'static str, &str)]) -> Map {
            Map(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
        }

        /// A folder of its own, removed on drop.
        struct Dir(std::path::PathBuf);

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }

        fn docker_config(text: &str) -> (Dir, Map) {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = Dir(std::env::temp_dir()
                .join(format!("writ-oci-credentials-{}-{n}", std::process::id())));
            std::fs::create_dir_all(&dir.0).expect("make the folder");
            std::fs::write(dir.0.join("config.json"), text).expect("write config.json");
            let map = env(&[("DOCKER_CONFIG", &dir.0.display().to_string())]);
            (dir, map)
        }

        #[test]
        fn the_environment_comes_first() {
            let found = Credentials::find(
                &env(&[
                    ("WRIT_REGISTRY_USERNAME", "ci"),
                    ("WRIT_REGISTRY_PASSWORD", "s3cret"),
                ]),
                "r.example.com",
            );
            assert!(matches!(
                found,
                Ok(Credentials::Basic { ref username, ref password, .. })
                    if username == "ci" && password == "s3cret"
            ));
            let token = Credentials::find(&env(&[("WRIT_REGISTRY_TOKEN", "t")]), "r");
            assert_eq!(token, Ok(Credentials::Bearer("t".to_owned())));
            let half = Credentials::find(&env(&[("WRIT_REGISTRY_USERNAME", "ci")]), "r");
            assert!(half.is_err_and(|e| e.contains("without WRIT_REGISTRY_PASSWORD")));
            // No variable, no config file: anonymous.
            let none = Credentials::find(&env(&[("HOME", "/nonexistent-writ-home")]), "r");
            assert_eq!(none, Ok(Credentials::Anonymous));
        }

        #[test]
        fn a_docker_config_entry_is_read_and_a_bad_one_named() {
            // base64("robot:p4ss")
            let (_dir, map) = docker_config(
                r#"{"auths": {"https://r.example.com:5000/v1/": {"auth": "cm9ib3Q6cDRzcw=="},
                               "other.example.com": {"username": "u", "password": "p"}}}"#,
            );
            let found = Credentials::find(&map, "r.example.com:5000");
            assert!(matches!(
                found,
                Ok(Credentials::Basic { ref username, ref password, .. })
                    if username == "robot" && password == "p4ss"
            ));
            let other = Credentials::find(&map, "other.example.com");
            assert!(
                matches!(other, Ok(Credentials::Basic { ref username, .. }) if username == "u")
            );
            assert_eq!(
                Credentials::find(&map, "elsewhere.example.com"),
                Ok(Credentials::Anonymous)
            );

            let (_dir, map) = docker_config(r#"{"auths": {"r": {"auth": "bm90LWEtcGFpcg=="}}}"#);
            let bad = Credentials::find(&map, "r");
            assert!(bad.is_err_and(|e| e.contains("config.json") && e.contains("user:password")));
            let (_dir, map) = docker_config("{not json");
            assert!(Credentials::find(&map, "r").is_err_and(|e| e.contains("not JSON")));
        }
    }
}
