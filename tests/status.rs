//! `GET /v1/status` and its series on `/metrics`, on the real binary:
//! replicas that load the same files from different paths report the same
//! digest; reloads that succeed and fail are reported with the error; the
//! ledger's and the decision log's health.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::server::*;
use serde_json::Value;

const POLICY: &str = "examples/authzen/search.writ";
const DATA: &str = "examples/authzen/search_data.json";

/// A copy of the search example in `dir/sub`: `policies/search.writ` and
/// `data.json`.
fn copy_example(dir: &TempDir, sub: &str) -> (String, String) {
    let root = dir.file(sub);
    std::fs::create_dir_all(root.join("policies")).expect("mkdir");
    let policy = root.join("policies");
    std::fs::copy(Path::new(ROOT).join(POLICY), policy.join("search.writ")).expect("copy policy");
    std::fs::copy(Path::new(ROOT).join(DATA), root.join("data.json")).expect("copy data");
    (
        policy.display().to_string(),
        root.join("data.json").display().to_string(),
    )
}

fn status(server: &Server) -> Value {
    let reply = server.get("/v1/status");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

#[test]
fn replicas_loading_the_same_files_from_different_paths_report_the_same_digest() {
    let dir = Arc::new(TempDir::new("status-replicas"));
    let (policy_a, data_a) = copy_example(&dir, "region-a");
    let (policy_b, data_b) = copy_example(&dir, "somewhere/else/region-b");
    let a = Server::start(&["--policy", &policy_a, "--data", &data_a], &dir);
    let b = Server::start(&["--policy", &policy_b, "--data", &data_b], &dir);
    let (sa, sb) = (status(&a), status(&b));
    assert_eq!(sa["status"], "serving");
    assert_eq!(sa["policy"]["source"]["kind"], "files");
    assert_eq!(sa["policy"]["source"]["policies"][0], policy_a.as_str());
    assert_eq!(sb["policy"]["source"]["data"], data_b.as_str());
    let digest = sa["policy"]["digest"].as_str().expect("digest").to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(sb["policy"]["digest"], digest.as_str(), "{sa}\n{sb}");
    assert_eq!(sa["policy"]["revision"], sb["policy"]["revision"]);
    assert_eq!(sa["policy"]["rules"], 3);
    assert!(sa["policy"]["loaded_at"].as_str().is_some());
    assert_eq!(sa["policy"]["digest"], a.policy_digest().as_str());
    // /metrics says the same, on both.
    for server in [&a, &b] {
        assert_eq!(
            server.metric(&format!("writ_policy_info{{digest=\"{digest}\"}}")),
            1.0
        );
        assert!(server.metric("writ_policy_loaded_timestamp_seconds") > 1.7e9);
    }
    // The same files from the repository's own paths: the same digest too.
    let c = Server::start(&["--policy", POLICY, "--data", DATA], &dir);
    assert_eq!(status(&c)["policy"]["digest"], digest.as_str());
    // Nothing reloaded yet, no ledger, no log.
    assert_eq!(sa["reloads"]["last_success"], Value::Null);
    assert_eq!(sa["reloads"]["last_failure"], Value::Null);
    assert_eq!(sa["ledger"], Value::Null);
    assert_eq!(sa["decision_log"], Value::Null);
    assert_eq!(a.metric("writ_reload_last_success_timestamp_seconds"), 0.0);
}

#[test]
fn reloads_that_succeed_and_fail_are_reported_with_the_error() {
    let dir = Arc::new(TempDir::new("status-reloads"));
    let (policy, data) = copy_example(&dir, "set");
    let server = Server::start(
        &[
            "--policy",
            &policy,
            "--data",
            &data,
            "--watch-interval",
            "0s",
        ],
        &dir,
    );
    let first = status(&server)["policy"]["digest"].clone();
    let file = Path::new(&policy).join("extra.writ");
    std::fs::write(&file, "@id(\"extra\") permit if action == \"ping\";\n").expect("write");
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 200, "{reply:?}");
    let after = status(&server);
    let second = after["policy"]["digest"].clone();
    assert_ne!(first, second);
    assert_eq!(after["reloads"]["succeeded"], 1);
    assert_eq!(after["reloads"]["last_success"]["digest"], second);
    assert_eq!(
        after["reloads"]["last_success"]["trigger"],
        "POST /v1/policy/reload"
    );
    assert_eq!(after["reloads"]["last_failure"], Value::Null);
    assert!(server.metric("writ_reload_last_success_timestamp_seconds") > 1.7e9);

    std::fs::write(&file, "@id(\"extra\") permit if action == ;\n").expect("write");
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 409, "{reply:?}");
    let failed = status(&server);
    assert_eq!(
        failed["policy"]["digest"], second,
        "the last good set serves"
    );
    assert_eq!(failed["reloads"]["failed"], 1);
    let failure = &failed["reloads"]["last_failure"];
    assert_eq!(failure["digest"], second);
    let error = failure["error"].as_str().expect("the error");
    assert!(error.contains("extra.writ"), "{error}");
    assert!(failure["at"].as_str().is_some());
    assert_eq!(failed["reloads"]["last_success"]["digest"], second);
    assert_eq!(server.metric("writ_reload_failures_total"), 1.0);
    assert!(server.metric("writ_reload_last_failure_timestamp_seconds") > 1.7e9);
    assert_eq!(
        server.metric(&format!(
            "writ_policy_info{{digest=\"{}\"}}",
            second.as_str().expect("digest")
        )),
        1.0
    );
}

#[test]
fn the_ledger_and_the_decision_log_report_their_health() {
    let dir = Arc::new(TempDir::new("status-health"));
    let ledger = dir.file("grants.db").display().to_string();
    let log = dir.file("decisions.jsonl").display().to_string();
    let healthy = Server::start(&["--ledger", &ledger, "--decision-log", &log], &dir);
    let body = status(&healthy);
    assert_eq!(body["policy"]["source"]["kind"], "embedded");
    assert_eq!(body["ledger"]["kind"], "sqlite");
    assert_eq!(body["ledger"]["healthy"], true);
    assert_eq!(body["decision_log"]["target"], log.as_str());
    assert_eq!(body["decision_log"]["required"], true);
    assert_eq!(body["decision_log"]["writable"], true);
    assert_eq!(healthy.metric("writ_ledger_up"), 1.0);
    assert_eq!(healthy.metric("writ_decision_log_up"), 1.0);

    // A PostgreSQL ledger nobody listens for, and a log that cannot be
    // written: the server serves on and says so.
    let port = free_port();
    let down = format!("postgres://writ:secret@127.0.0.1:{port}/writ");
    let sick = Server::start(&["--ledger", &down, "--decision-log", "/dev/full"], &dir);
    let reply = sick.post("/v1/decide", &ci_deploy().to_string());
    assert_eq!(reply.status, 503, "required log: {reply:?}");
    let body = status(&sick);
    assert_eq!(body["ledger"]["kind"], "postgres");
    assert_eq!(body["ledger"]["healthy"], false);
    assert!(body["ledger"]["error"].as_str().is_some(), "{body}");
    assert!(
        !body.to_string().contains("secret"),
        "the password is not shown: {body}"
    );
    assert_eq!(body["decision_log"]["writable"], false);
    assert_eq!(sick.metric("writ_ledger_up"), 0.0);
    assert_eq!(sick.metric("writ_decision_log_up"), 0.0);
}
