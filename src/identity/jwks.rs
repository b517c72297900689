//! An issuer's keys: parsed once from a JWKS file, or fetched from a JWKS
//! URL and cached (docs/identity.md, "Keys over HTTP").
//!
//! A URL is fetched when the trust file is loaded, again when a token names
//! a `kid` the cached set lacks or the set is older than `jwks_refresh`, but
//! never more often than once per `jwks_refetch_interval`. A fetch that
//! fails (no answer within `jwks_timeout`, a status other than 200, a body
//! that is not a JWKS with a usable key) keeps the last good keys; an issuer
//! that never had keys verifies nothing (`keys_unavailable`).
//!
//! The client is `ureq` with rustls (ring, the crypto jsonwebtoken already
//! brings): blocking, so the `identity` feature needs no async runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::DecodingKey;

/// The largest JWKS body read from a URL.
pub const MAX_JWKS_BYTES: u64 = 512 * 1024;

/// One public key of an issuer.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Option<String>,
    /// The kind of key, which an algorithm must fit before the key is
    /// used with it.
    pub(crate) family: Family,
    pub(crate) key: DecodingKey,
}

/// The kinds of public key writ uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// RSA: RS256, RS384, RS512, PS256, PS384, PS512.
    Rsa,
    /// EC: ES256, ES384.
    Ec,
    /// OKP (Ed25519): EdDSA.
    Okp,
}

impl Family {
    /// The family an algorithm needs; `None` for HMAC, which writ never uses.
    pub(crate) fn of(alg: jsonwebtoken::Algorithm) -> Option<Family> {
        use jsonwebtoken::Algorithm::*;
        match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
            ES256 | ES384 => Some(Family::Ec),
            EdDSA => Some(Family::Okp),
            HS256 | HS384 | HS512 => None,
        }
    }
}

/// The keys of an issuer at one moment.
#[derive(Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Key>,
    /// The usable JWKs as JSON, to tell a changed set from the same one.
    fingerprint: Vec<u8>,
}

impl KeySet {
    /// The key a token's `kid` names; without a `kid`, the only key.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// Parses a JWKS. `strict` (a file): every key must be usable. Otherwise
/// (a URL, which may list keys for other uses) unusable keys are skipped.
/// Symmetric (`oct`) keys are never used. At least one key must remain.
pub(crate) fn parse(text: &str, strict: bool) -> Result<KeySet, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    let mut usable = Vec::new();
    for jwk in &set.keys {
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
            AlgorithmParameters::OctetKey(_) => {
                if strict {
                    return Err("a symmetric (`oct`) key is not accepted".to_owned());
                }
                continue;
            }
        };
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => key,
            Err(e) if strict => return Err(format!("a key is unusable: {e}")),
            Err(_) => continue,
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
            family,
            key,
        });
        usable.push(jwk);
    }
    if keys.is_empty() {
        return Err("it holds no usable key".to_owned());
    }
    let fingerprint = serde_json::to_vec(&usable).map_err(|e| e.to_string())?;
    Ok(KeySet { keys, fingerprint })
}

/// How a URL's keys are fetched and kept (the trust file's `jwks_*`).
#[derive(Debug, Clone)]
pub(crate) struct FetchPolicy {
    /// The whole request, connect to last byte.
    pub(crate) timeout: Duration,
    /// The least time between two fetches.
    pub(crate) refetch_interval: Duration,
    /// Keys older than this are fetched again when next used.
    pub(crate) refresh: Duration,
}

/// Where an issuer's keys come from.
pub(crate) enum Source {
    /// A JWKS file, read once.
    File(Arc<KeySet>),
    /// A JWKS URL, fetched and cached.
    Url(Remote),
}

/// The state of a JWKS URL.
pub(crate) struct Remote {
    pub(crate) url: String,
    policy: FetchPolicy,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped when a fetch brings a different key set, so cached tokens
    /// are verified again.
    generation: AtomicU64,
    /// Held during a fetch: one at a time, and the times of the last ones.
    fetch: Mutex<Fetched>,
    /// Fetches tried and failed, for the metrics.
    pub(crate) fetches: AtomicU64,
    pub(crate) failures: AtomicU64,
}

#[derive(Default)]
struct Fetched {
    attempt: Option<Instant>,
    success: Option<Instant>,
    error: Option<String>,
}

impl Source {
    /// The keys as they are now.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        match self {
            Source::File(keys) => keys.clone(),
            Source::Url(remote) => remote
                .keys
                .read()
                .map(|keys| keys.clone())
                .unwrap_or_default(),
        }
    }

    /// Changes when the key set does; cached verifications of another
    /// generation are not used.
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Source::File(_) => 0,
            Source::Url(remote) => remote.generation.load(Ordering::Acquire),
        }
    }
}

impl Remote {
    /// A URL source without keys yet; [`Remote::fetch`] brings them.
    pub(crate) fn new(url: String, policy: FetchPolicy) -> Remote {
        Remote {
            url,
            policy,
            keys: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            fetch: Mutex::new(Fetched::default()),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Fetches now (the first load), whatever the interval says.
    pub(crate) fn fetch(&self) -> Result<(), String> {
        let Ok(mut state) = self.fetch.lock() else {
            return Err("the fetch state is poisoned".to_owned());
        };
        self.fetch_locked(&mut state)
    }

    /// Fetches if the last attempt is at least `refetch_interval` ago and,
    /// unless `needed` (a `kid` was not found), the keys are older than
    /// `refresh`. When `needed`, waits for a fetch another thread is
    /// making; otherwise goes on with the keys there are. Returns whether
    /// the keys may have changed.
    pub(crate) fn refetch(&self, needed: bool) -> bool {
        let state = if needed {
            self.fetch.lock().ok()
        } else {
            self.fetch.try_lock().ok()
        };
        let Some(mut state) = state else {
            return needed;
        };
        let now = Instant::now();
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        if since(state.attempt).is_some_and(|d| d < self.policy.refetch_interval) {
            return false;
        }
        let fresh = match since(state.success) {
            Some(age) => age < self.policy.refresh,
            None => false,
        };
        if !needed && fresh {
            return false;
        }
        let _ = self.fetch_locked(&mut state);
        true
    }

    /// Why the last fetch failed, if it did.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.fetch.lock().ok().and_then(|state| state.error.clone())
    }

    fn fetch_locked(&self, state: &mut Fetched) -> Result<(), String> {
        state.attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.download().and_then(|text| parse(&text, false)) {
            Ok(set) => {
                state.success = state.attempt;
                state.error = None;
                if let Ok(mut keys) = self.keys.write() {
                    if keys.fingerprint != set.fingerprint {
                        *keys = Arc::new(set);
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let error = format!("`{}`: {error}", self.url);
                state.error = Some(error.clone());
                Err(error)
            }
        }
    }

    fn download(&self) -> Result<String, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.policy.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .https_only(self.url.starts_with("https://"))
            .user_agent(concat!("writ/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut response = agent
            .get(&self.url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("answered {}", response.status()));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_JWKS_BYTES)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_owned())
    }
}

/// Whether a JWKS URL may be fetched: `https://`, or `http://` to the
/// loopback (a local key server, tests).
pub(crate) fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    matches!(host, "localhost" | "[::1]")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(url_allowed(
            "https://token.actions.githubusercontent.com/.well-known/jwks"
        ));
        assert!(url_allowed("http://127.0.0.1:8080/jwks"));
        assert!(url_allowed("http://localhost/jwks"));
        assert!(url_allowed("http://[::1]:9/jwks"));
        assert!(!url_allowed("http://issuer.example.com/jwks"));
        assert!(!url_allowed("http://127.0.0.1.evil.test/jwks"));
        assert!(!url_allowed("ftp://127.0.0.1/jwks"));
        assert!(!url_allowed("https://"));
    }

    #[test]
    fn a_url_set_skips_what_it_cannot_use() {
        let text = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"EC","crv":"P-256","kid":"e","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let set = parse(text, false).expect("one usable key");
        assert_eq!(set.keys.len(), 1);
        assert!(parse(text, true).is_err());
        assert!(parse("{\"keys\":[]}", false).is_err());
        assert!(parse("<html>", false).is_err());
    }
}
