//! What the tests of grants on the real binary share: the PostgreSQL URL
//! rule (run, fail loudly in CI, or say it did not run), subjects no other
//! run used, and the allowed example request for one of them.

use serde_json::{json, Value};

use super::server::{ci_deploy, Server, BIN, ROOT};

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

/// The revocation feed's cursor now, read through `server`.
pub fn feed_end(server: &Server) -> String {
    let mut cursor = "0".to_owned();
    loop {
        let reply = server.get(&format!("/v1/revocations?after={cursor}&limit=1000"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let next = reply.json()["next"].as_str().expect("next").to_owned();
        if next == cursor {
            return cursor;
        }
        cursor = next;
    }
}

/// Every feed row after `cursor`, read through `server`.
pub fn feed_since(server: &Server, cursor: &str) -> Vec<Value> {
    let mut cursor = cursor.to_owned();
    let mut rows = Vec::new();
    loop {
        let reply = server.get(&format!("/v1/revocations?after={cursor}&limit=1000"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        let page = body["revocations"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
        cursor = body["next"].as_str().expect("next").to_owned();
    }
}

/// Runs `writ ARGS` from the repository: exit code, stdout as JSON (null
/// when it is not), stderr.
pub fn writ(args: &[&str]) -> (i32, Value, String) {
    let output = std::process::Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("run writ");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), json, stderr)
}

/// Issues `body` through `POST /v1/grants`, which must answer 201: the
/// grant's id.
pub fn issue_grant(server: &Server, body: &Value) -> String {
    let reply = server.post("/v1/grants", &body.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()["grant_id"]
        .as_str()
        .expect("grant_id")
        .to_owned()
}

/// `GET /v1/grants/{id}`, which must answer 200.
pub fn grant(server: &Server, id: &str) -> Value {
    let reply = server.get(&format!("/v1/grants/{id}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}
