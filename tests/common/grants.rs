//! What the tests of grants on the real binary share: the PostgreSQL URL
//! rule (run, fail loudly in CI, or say it did not run), subjects no other
//! run used, and the allowed example request for one of them.

use serde_json::{json, Value};

use super::server::ci_deploy;

/// `WRIT_TEST_POSTGRES_URL`; with `CI` set and no URL, the test fails; else
/// it prints that it did not run.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("WRIT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: CI is set but WRIT_TEST_POSTGRES_URL is not; .ci/run starts PostgreSQL with scripts/postgres.sh"
        ),
        _ => {
            eprintln!(
                "{test}: DID NOT RUN: set WRIT_TEST_POSTGRES_URL (eval \"$(scripts/postgres.sh start)\")"
            );
            None
        }
    }
}

/// A subject id no other test or earlier run used (PostgreSQL keeps them).
pub fn unique_subject(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("spiffe://test.writ/{name}/{}-{nanos}", std::process::id())
}

/// examples/ci-deploy.json (allowed) for `subject`, with no fixed time (the
/// server fills in its own).
pub fn deploy_for(subject: &str) -> Value {
    let mut request = ci_deploy();
    request["subject"]["id"] = json!(subject);
    request["environment"]
        .as_object_mut()
        .expect("environment")
        .remove("time");
    request
}
