//! Fault injection on hot reload, against the real `writ serve`: policy
//! files cut short, rewritten slowly in place, emptied, deleted and swapped
//! by a symlink rename, while a client keeps asking the pack's fixture
//! requests. No answer may be one that neither the old complete set nor the
//! new complete set gives.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::server::*;
use serde_json::{json, Value};

/// Short intervals so the suite is quick: look every 25 ms, settle 200 ms.
const WATCH: [&str; 6] = [
    "--watch-interval",
    "25ms",
    "--reload-settle",
    "200ms",
    "--reload-max-wait",
    "20s",
];

/// Copies `policies/default` into `dir/name`.
fn copy_pack(dir: &TempDir, name: &str) -> PathBuf {
    let target = dir.file(name);
    std::fs::create_dir_all(&target).expect("mkdir");
    for (file, text) in pack_files(&Path::new(ROOT).join("policies/default")) {
        std::fs::write(target.join(file), text).expect("copy a pack file");
    }
    target
}

/// The `.writ` files of a directory, by file name, sorted.
fn pack_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("read the pack")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".writ"))
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("read a pack file");
            (name, text)
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "the default pack has six files");
    files
}

/// Compiles a set as the server names it (`DIR/FILE`); `None` when it
/// does not compile or a file is not UTF-8.
fn compile(dir: &Path, files: &[(String, Vec<u8>)]) -> Option<writ::Engine> {
    let mut sources = Vec::new();
    for (name, bytes) in files {
        let text = String::from_utf8(bytes.clone()).ok()?;
        sources.push((dir.join(name).display().to_string(), text));
    }
    writ::Engine::compile(sources, None).ok()
}

fn as_bytes(files: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|(n, t)| (n.clone(), t.as_bytes().to_vec()))
        .collect()
}

fn rule_ids(engine: &writ::Engine) -> Vec<String> {
    engine
        .policy()
        .rules
        .iter()
        .map(|r| r.id.to_string())
        .collect()
}

/// The requests of the pack's fixture corpus that are valid requests,
/// plus examples/ci-deploy.json with `subject.auth = "static-secret"`.
fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("tests/pack"))
        .expect("tests/pack")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    for path in fixtures {
        let text = std::fs::read_to_string(&path).expect("a fixture file");
        let fixture: Value = serde_json::from_str(&text).expect("fixture JSON");
        for case in fixture["cases"].as_array().into_iter().flatten() {
            let request = case["request"].to_string();
            if writ::Request::from_json(&request).is_ok() {
                out.push(request);
            }
        }
    }
    let mut secret = ci_deploy();
    secret["subject"]["auth"] = json!("static-secret");
    out.push(secret.to_string());
    out
}

/// What a decision says, without the trace and the digest.
fn projection(decision: &Value) -> Value {
    json!({
        "decision": decision["decision"],
        "scope": decision["scope"],
        "ttl": decision["ttl"],
        "obligations": decision["obligations"],
        "reasons": decision["reasons"],
    })
}

fn decide(engine: &writ::Engine, request: &str) -> Value {
    let request = writ::Request::from_json(request).expect("a valid request");
    let decision: Value =
        serde_json::from_str(&engine.decide(&request).to_json()).expect("decision JSON");
    projection(&decision)
}

/// Up to `count` requests spread over the corpus, always including those
/// the two sets decide differently and the static-secret one (the last).
fn pick(corpus: &[String], old: &writ::Engine, new: &writ::Engine, count: usize) -> Vec<String> {
    let step = (corpus.len() / count).max(1);
    corpus
        .iter()
        .enumerate()
        .filter(|(i, request)| {
            i % step == 0 || *i == corpus.len() - 1 || decide(old, request) != decide(new, request)
        })
        .map(|(_, r)| r.clone())
        .collect()
}

/// A client that asks the requests in turn until stopped, and notes every
/// answer that is not among the allowed decisions for that request.
struct Checker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl Checker {
    fn start(port: u16, requests: Vec<String>, allowed: Vec<Vec<Value>>) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut checked = 0;
            let mut wrong = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                for (index, body) in requests.iter().enumerate() {
                    let reply =
                        match try_request(port, "POST", "/v1/decide", Some(body.as_bytes()), &[]) {
                            Ok(reply) => reply,
                            Err(error) => {
                                wrong.push(format!("request {index}: no answer: {error}"));
                                continue;
                            }
                        };
                    checked += 1;
                    if reply.status != 200 {
                        wrong.push(format!(
                            "request {index}: status {}: {}",
                            reply.status, reply.body
                        ));
                        continue;
                    }
                    let got = projection(&reply.json());
                    if !allowed[index].contains(&got) {
                        wrong.push(format!(
                            "request {index} {body}\n  got {got}\n  allowed {:?}",
                            allowed[index]
                        ));
                    }
                }
            }
            (checked, wrong)
        });
        Checker { stop, handle }
    }

    /// Stops the client; fails the test on any wrong answer.
    fn finish(self, at_least: usize) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (checked, wrong) = self.handle.join().expect("the client thread");
        assert!(
            wrong.is_empty(),
            "{} wrong answer(s) of {checked}; the first:\n{}",
            wrong.len(),
            wrong.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        );
        assert!(checked >= at_least, "only {checked} decisions were checked");
        checked
    }
}

fn counts(server: &Server) -> (f64, f64) {
    (
        server.metric("writ_policy_reloads_total"),
        server.metric("writ_policy_reload_failures_total"),
    )
}

fn rules_serving(server: &Server) -> usize {
    server.get("/v1/policy").json()["rules"]
        .as_array()
        .expect("rules")
        .len()
}

/// 54 cut points, nine in each file of the pack (0 bytes, seven spread
/// over the file, and all but the last byte): each file is truncated in
/// place to that length, the watcher's verdict is awaited, and the file is
/// restored. The outcome of each cut is predicted with the library: a set
/// that does not compile, has an empty file or lacks a rule is refused; a
/// set that only lost trailing text is activated. All the while a client
/// asks 20-40 of the corpus' requests, and every answer must be the one
/// the complete set gives.
#[test]
fn truncated_files_never_decide() {
    let dir = Arc::new(TempDir::new("cuts"));
    let policies = copy_pack(&dir, "policies");
    let original = pack_files(&policies);
    let full = compile(&policies, &as_bytes(&original)).expect("the pack compiles");
    let full_rules = rule_ids(&full);
    let corpus = corpus();
    let requests = pick(&corpus, &full, &full, 30);
    let allowed: Vec<Vec<Value>> = requests.iter().map(|r| vec![decide(&full, r)]).collect();
    let policy_arg = policies.display().to_string();
    let mut args = vec!["--policy", policy_arg.as_str()];
    args.extend(WATCH);
    let server = Server::start(&args, &dir);
    let started_digest = server.policy_digest();
    let checker = Checker::start(server.port, requests, allowed);
    let started = Instant::now();

    let mut cuts = 0;
    let mut refused = 0;
    for (index, (name, text)) in original.iter().enumerate() {
        let len = text.len();
        let mut points: Vec<usize> = vec![0];
        points.extend((1..8).map(|k| len * k / 8));
        points.push(len - 1);
        let path = policies.join(name);
        for point in points {
            // What the watcher must do with the cut set.
            let mut set = as_bytes(&original);
            set[index].1.truncate(point);
            let empty = set[index].1.iter().all(u8::is_ascii_whitespace);
            let keeps_all = !empty
                && compile(&policies, &set).is_some_and(|e| {
                    let ids = rule_ids(&e);
                    full_rules.iter().all(|id| ids.contains(id))
                });
            let (reloads, failures) = counts(&server);

            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open to truncate");
            file.set_len(point as u64).expect("truncate");
            drop(file);
            cuts += 1;
            if keeps_all {
                wait_until(
                    &format!("{name} cut at {point} activated"),
                    Duration::from_secs(20),
                    || counts(&server).0 > reloads,
                );
            } else {
                refused += 1;
                wait_until(
                    &format!("{name} cut at {point} refused"),
                    Duration::from_secs(20),
                    || counts(&server).1 > failures,
                );
                assert_eq!(
                    counts(&server).0,
                    reloads,
                    "{name} cut at {point} was activated"
                );
            }
            // Restore in place, as an editor would.
            let (reloads, _) = counts(&server);
            std::fs::write(&path, text).expect("restore");
            if keeps_all {
                wait_until(
                    &format!("{name} restored after {point}"),
                    Duration::from_secs(20),
                    || counts(&server).0 > reloads,
                );
            }
        }
    }
    wait_until("the original set serving", Duration::from_secs(20), || {
        server.policy_digest() == started_digest
    });
    let checked = checker.finish(100);
    assert_eq!(cuts, 54);
    assert!(refused >= 6, "every emptied file is refused, at least");
    assert_eq!(rules_serving(&server), full_rules.len());
    let stderr = server.stderr();
    assert!(stderr.contains("empty policy file(s)"), "{stderr}");
    assert!(
        stderr.contains("an automatic reload never removes rules")
            || stderr.contains("do not compile"),
        "{stderr}"
    );
    eprintln!(
        "{cuts} cuts ({refused} refused), {checked} decisions checked in {:?}",
        started.elapsed()
    );
}

/// ttl.writ rewritten in place one line every 50 ms into a version with
/// two changed caps: the answers are the old set's until the new complete
/// file has settled, then the new set's, and never anything else.
#[test]
fn a_slow_rewrite_in_place_activates_only_the_complete_file() {
    let refused = slow_rewrite("200ms");
    assert_eq!(refused, 0.0, "the settle interval outlasts every pause");
}

/// The same with no settle interval, so that the watcher reads the file
/// while it is being written: the two reads, the empty-file check and the
/// guard against dropped rules still keep every answer the old set's or
/// the new one's.
#[test]
fn a_slow_rewrite_without_settling_is_still_refused_half_way() {
    let refused = slow_rewrite("0ms");
    assert!(refused >= 1.0, "the half-written file was read and refused");
}

/// Rewrites ttl.writ slowly under a server with this settle interval;
/// returns how many reloads were refused.
fn slow_rewrite(settle: &str) -> f64 {
    let dir = Arc::new(TempDir::new("rewrite"));
    let policies = copy_pack(&dir, "policies");
    let original = pack_files(&policies);
    let old = compile(&policies, &as_bytes(&original)).expect("the pack compiles");
    let mut changed = original.clone();
    let ttl = changed
        .iter_mut()
        .find(|(name, _)| name == "ttl.writ")
        .expect("ttl.writ");
    let before = ttl.1.clone();
    ttl.1 = ttl
        .1
        .replace("const ttl_ceiling = 1h;", "const ttl_ceiling = 30m;")
        .replace(
            "const ttl_confidential = 30m;",
            "const ttl_confidential = 20m;",
        );
    assert_ne!(ttl.1, before, "the constants to change are in ttl.writ");
    let new_text = ttl.1.clone();
    let new = compile(&policies, &as_bytes(&changed)).expect("the new set compiles");
    let corpus = corpus();
    let requests = pick(&corpus, &old, &new, 30);
    let differ: Vec<usize> = (0..requests.len())
        .filter(|i| decide(&old, &requests[*i]) != decide(&new, &requests[*i]))
        .collect();
    assert!(
        !differ.is_empty(),
        "the two sets decide some request differently"
    );
    let allowed: Vec<Vec<Value>> = requests
        .iter()
        .map(|r| vec![decide(&old, r), decide(&new, r)])
        .collect();

    let policy_arg = policies.display().to_string();
    let mut args = vec!["--policy", policy_arg.as_str()];
    args.extend(WATCH);
    let at = args
        .iter()
        .position(|a| *a == "--reload-settle")
        .expect("the settle flag");
    args[at + 1] = settle;
    let server = Server::start(&args, &dir);
    let checker = Checker::start(server.port, requests.clone(), allowed);

    let started = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(policies.join("ttl.writ"))
        .expect("open ttl.writ");
    let lines: Vec<&str> = new_text.split_inclusive('\n').collect();
    for line in &lines {
        file.write_all(line.as_bytes()).expect("write a line");
        file.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(file);
    let written = started.elapsed();
    let new_digest = new.digest().to_owned();
    wait_until("the new set", Duration::from_secs(20), || {
        server.policy_digest() == new_digest
    });
    // Now every request gets the new set's answer.
    for index in &differ {
        let reply = server.post("/v1/decide", &requests[*index]);
        assert_eq!(projection(&reply.json()), decide(&new, &requests[*index]));
    }
    let checked = checker.finish(50);
    let (reloads, failures) = counts(&server);
    assert!(reloads >= 1.0);
    eprintln!(
        "settle {settle}: {} lines in {written:?}; {checked} decisions checked; \
         {reloads} reload(s), {failures} refused",
        lines.len()
    );
    failures
}

fn secret_request() -> String {
    let mut secret = ci_deploy();
    secret["subject"]["auth"] = json!("static-secret");
    secret.to_string()
}

/// The reproduction: `: > identity.writ` is refused by the watcher,
/// by `POST /v1/policy/reload` and by `SIGHUP` alike (a deletion must be a
/// deletion); deleting the file is refused by the watcher and done by an
/// explicit reload; bringing the file back is picked up by the watcher.
#[test]
fn emptied_and_deleted_files_need_an_explicit_reload() {
    let dir = Arc::new(TempDir::new("delete"));
    let policies = copy_pack(&dir, "policies");
    let identity = policies.join("identity.writ");
    let identity_name = identity.display().to_string();
    let text = std::fs::read_to_string(&identity).expect("identity.writ");
    let policy_arg = policies.display().to_string();
    let mut args = vec!["--policy", policy_arg.as_str()];
    args.extend(WATCH);
    let server = Server::start(&args, &dir);
    let secret = secret_request();
    let first = server.policy_digest();
    let all_rules = rules_serving(&server);
    assert_eq!(
        server.post("/v1/decide", &secret).json()["decision"],
        "deny"
    );

    // Emptied: refused by the watcher.
    std::fs::File::create(&identity).expect("truncate identity.writ");
    wait_until("the watcher's refusal", Duration::from_secs(20), || {
        counts(&server).1 == 1.0
    });
    let stderr = server.stderr();
    assert!(
        stderr.contains("writ: reload (a policy file changed) refused; still serving"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("empty policy file(s) `{identity_name}`")),
        "{stderr}"
    );
    assert_eq!(server.policy_digest(), first);
    assert_eq!(rules_serving(&server), all_rules);
    assert_eq!(
        server.post("/v1/decide", &secret).json()["decision"],
        "deny"
    );

    // Emptied: refused by an explicit reload too.
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 409, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["status"], "refused");
    assert_eq!(body["digest"], first.as_str());
    assert!(
        body["reason"]
            .as_str()
            .expect("a reason")
            .contains("empty policy file(s)"),
        "{body}"
    );
    assert_eq!(counts(&server), (0.0, 2.0));
    server.signal("HUP");
    wait_until("the SIGHUP refusal", Duration::from_secs(20), || {
        counts(&server).1 == 3.0
    });
    assert!(server.stderr().contains("writ: reload (SIGHUP) refused"));
    assert_eq!(server.policy_digest(), first);

    // Deleted: the watcher refuses, naming what would go.
    std::fs::remove_file(&identity).expect("delete identity.writ");
    wait_until("the refused deletion", Duration::from_secs(20), || {
        counts(&server).1 == 4.0
    });
    let stderr = server.stderr();
    assert!(
        stderr.contains("the new set drops 10 rule(s) `identity."),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("1 file(s) `{identity_name}`")),
        "{stderr}"
    );
    assert_eq!(server.policy_digest(), first);
    assert_eq!(
        server.post("/v1/decide", &secret).json()["decision"],
        "deny"
    );
    // Not tried again while nothing changes.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(counts(&server), (0.0, 4.0));

    // Deleted, and asked for: activated, with what it removed.
    let reply = server.post("/v1/policy/reload", "");
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["status"], "activated");
    assert_eq!(body["previous"], first.as_str());
    assert_eq!(body["rules"], all_rules - 10);
    assert_eq!(body["dropped_files"], json!([identity_name]));
    assert_eq!(body["dropped_rules"].as_array().expect("ids").len(), 10);
    assert_eq!(
        server.policy_digest(),
        body["digest"].as_str().expect("digest")
    );
    assert_eq!(rules_serving(&server), all_rules - 10);
    assert_eq!(counts(&server), (1.0, 4.0));
    assert!(server.stderr().contains("removed 10 rule(s)"));

    // Back: adding rules needs no one to ask.
    let aside = dir.file("identity.writ.new");
    std::fs::write(&aside, &text).expect("write aside");
    std::fs::rename(&aside, &identity).expect("rename into place");
    wait_until("the file back", Duration::from_secs(20), || {
        server.policy_digest() == first
    });
    assert_eq!(
        server.post("/v1/decide", &secret).json()["decision"],
        "deny"
    );

    // SIGHUP is the other explicit path for a removal.
    std::fs::remove_file(&identity).expect("delete identity.writ");
    server.signal("HUP");
    wait_until("the SIGHUP removal", Duration::from_secs(20), || {
        rules_serving(&server) == all_rules - 10
    });
    assert!(server
        .stderr()
        .contains("writ: reload (SIGHUP) removed 10 rule(s)"));
    // Any other method on the route is refused.
    assert_eq!(server.get("/v1/policy/reload").status, 405);
}

/// A Kubernetes ConfigMap volume: every file is a symlink through `..data`,
/// itself a symlink to a timestamped directory, swapped by one rename; the
/// directory holds a manifest. The swap is picked up; a file changed
/// without its manifest is refused until `writ manifest` rewrites it.
#[test]
fn a_configmap_symlink_swap_with_a_manifest() {
    let dir = Arc::new(TempDir::new("configmap"));
    let volume = dir.file("volume");
    std::fs::create_dir_all(&volume).expect("mkdir");
    let pack = pack_files(&Path::new(ROOT).join("policies/default"));
    let write_version = |name: &str, files: &[(String, String)]| {
        let version = volume.join(name);
        std::fs::create_dir_all(&version).expect("mkdir");
        for (file, text) in files {
            std::fs::write(version.join(file), text).expect("write");
        }
        let out = std::process::Command::new(BIN)
            .args(["manifest", &version.display().to_string()])
            .output()
            .expect("run writ manifest");
        assert!(out.status.success(), "{out:?}");
    };
    write_version("..v1", &pack);
    std::os::unix::fs::symlink("..v1", volume.join("..data")).expect("symlink");
    for (file, _) in &pack {
        std::os::unix::fs::symlink(format!("..data/{file}"), volume.join(file)).expect("symlink");
    }
    std::os::unix::fs::symlink("..data/writ.manifest", volume.join("writ.manifest"))
        .expect("symlink");

    let old = compile(&volume, &as_bytes(&pack)).expect("compiles");
    let mut changed = pack.clone();
    for (name, text) in changed.iter_mut() {
        if name == "ttl.writ" {
            *text = text.replace("const ttl_ceiling = 1h;", "const ttl_ceiling = 30m;");
        }
    }
    let new = compile(&volume, &as_bytes(&changed)).expect("compiles");
    let requests = pick(&corpus(), &old, &new, 20);
    let allowed: Vec<Vec<Value>> = requests
        .iter()
        .map(|r| vec![decide(&old, r), decide(&new, r)])
        .collect();
    let volume_arg = volume.display().to_string();
    let mut args = vec!["--policy", volume_arg.as_str()];
    args.extend(WATCH);
    let server = Server::start(&args, &dir);
    assert_eq!(server.policy_digest(), old.digest(), "each file read once");
    let checker = Checker::start(server.port, requests, allowed);

    // The swap, the kubelet's way: a new directory, then one rename.
    write_version("..v2", &changed);
    std::os::unix::fs::symlink("..v2", volume.join("..data_tmp")).expect("symlink");
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).expect("swap");
    wait_until("the swapped set", Duration::from_secs(20), || {
        server.policy_digest() == new.digest()
    });
    assert_eq!(counts(&server), (1.0, 0.0));

    // A file changed under the manifest: incomplete, refused.
    let scope = volume.join("..v2/scope.writ");
    let scope_text = std::fs::read_to_string(&scope).expect("scope.writ");
    std::fs::write(&scope, format!("{scope_text}\n// an edit\n")).expect("edit");
    wait_until("the refusal", Duration::from_secs(20), || {
        counts(&server).1 == 1.0
    });
    let stderr = server.stderr();
    assert!(stderr.contains("incomplete per the manifest"), "{stderr}");
    assert!(
        stderr.contains("`scope.writ` does not match its digest"),
        "{stderr}"
    );
    assert_eq!(server.policy_digest(), new.digest());
    // The manifest rewritten: complete again.
    let out = std::process::Command::new(BIN)
        .args(["manifest", &volume.join("..v2").display().to_string()])
        .output()
        .expect("run writ manifest");
    assert!(out.status.success(), "{out:?}");
    wait_until("the completed set", Duration::from_secs(20), || {
        counts(&server).0 == 2.0
    });
    assert_ne!(server.policy_digest(), new.digest());
    checker.finish(20);
}

/// Files that never stop changing are never read as a set: the wait is
/// reported (and counted) once per `--reload-max-wait`, the old set keeps
/// serving, and the set is read once the writes stop.
#[test]
fn constant_churn_is_reported_then_read_when_it_stops() {
    let dir = Arc::new(TempDir::new("churn"));
    let policies = copy_pack(&dir, "policies");
    let policy_arg = policies.display().to_string();
    let server = Server::start(
        &[
            "--policy",
            &policy_arg,
            "--watch-interval",
            "25ms",
            "--reload-settle",
            "500ms",
            "--reload-max-wait",
            "1s",
        ],
        &dir,
    );
    let first = server.policy_digest();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(policies.join("scope.writ"))
        .expect("open scope.writ");
    let started = Instant::now();
    let mut line = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        writeln!(file, "// churn {line}").expect("append");
        line += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(file);
    let stderr = server.stderr();
    assert!(
        stderr.contains("refused; still serving")
            && stderr.contains("the policy files kept changing for 1s and never settled"),
        "{stderr}"
    );
    assert!(counts(&server).1 >= 1.0);
    wait_until("the settled set", Duration::from_secs(20), || {
        server.policy_digest() != first
    });
}
