//! One suite, run against both stores: SQLite in a temporary file and the
//! PostgreSQL of `WRIT_TEST_POSTGRES_URL` (`scripts/postgres.sh start`).
//! Without that URL the PostgreSQL half says it did not run, and fails
//! when `CI` is set; a URL that does not answer always fails.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn sqlite_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "writ-ledger-{}-{name}-{}",
        std::process::id(),
        new_grant_id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ledger.db").to_string_lossy().into_owned()
}

/// The PostgreSQL URL, or `None` (printed) off CI when none is given.
pub(crate) fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("WRIT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: CI is set but WRIT_TEST_POSTGRES_URL is not; .ci/run starts PostgreSQL with scripts/postgres.sh"
        ),
        _ => {
            eprintln!(
                "{test}: the PostgreSQL half DID NOT RUN: set WRIT_TEST_POSTGRES_URL (eval \"$(scripts/postgres.sh start)\")"
            );
            None
        }
    }
}

async fn stores(name: &str) -> Vec<Ledger> {
    let mut stores = vec![Ledger::open(&sqlite_path(name))
        .await
        .expect("SQLite opens")];
    if let Some(url) = postgres_url(name) {
        let ledger = Ledger::open(&url).await.expect("PostgreSQL URL opens");
        if let Err(error) = ledger.ping().await {
            panic!("{name}: WRIT_TEST_POSTGRES_URL does not answer: {error}");
        }
        stores.push(ledger);
    }
    stores
}

fn subject() -> String {
    format!("spiffe://test/{}", new_grant_id())
}

fn grant(id: &str, subject: &str, task: Option<&str>, now: i64, ttl: u64) -> Grant {
    Grant {
        grant_id: id.to_owned(),
        decision_id: format!("d-{id}"),
        policy_digest: "sha256:test".to_owned(),
        subject_id: subject.to_owned(),
        task_id: task.map(str::to_owned),
        request: json!({"subject": {"id": subject}}),
        scope: vec!["read:db://x".to_owned()],
        ttl,
        issued_at: now,
        expires_at: now + i64::try_from(ttl).unwrap_or(0) * 1000,
        obligations: json!([{"kind": "revoke_on", "event": "task_end", "rule": "r"}]),
        credential_ref: Some("lease-1".to_owned()),
        revoked_at: None,
        revoked_by: None,
        reason: None,
        narrowed: false,
        redecision: None,
        redecided_at: None,
        approval: None,
    }
}

/// The request digest of [`issue_limited`].
const SAME: &str = "sha256:the-same-request";

/// Allows while the count is at most `limit`; the body is the count.
async fn issue_limited(
    ledger: &Ledger,
    subject: &str,
    task: Option<&str>,
    now: i64,
    limit: u64,
    key: Option<&str>,
) -> Issued {
    let id = new_grant_id();
    let (owned_id, owned_subject, owned_task) =
        (id.clone(), subject.to_owned(), task.map(str::to_owned));
    ledger
        .issue(
            Issue {
                subject_id: subject,
                window: HOUR,
                now,
                idempotency_key: key,
                request_digest: SAME,
                grant_id: &id,
            },
            move |count| {
                if count > limit {
                    Verdict {
                        grant: None,
                        status: 200,
                        body: json!({"decision": "deny", "count": count}).to_string(),
                        request_text: None,
                        obligations_text: None,
                    }
                } else {
                    Verdict {
                        grant: Some(grant(
                            &owned_id,
                            &owned_subject,
                            owned_task.as_deref(),
                            now,
                            300,
                        )),
                        status: 201,
                        body: json!({"grant_id": owned_id, "count": count}).to_string(),
                        request_text: None,
                        obligations_text: None,
                    }
                }
            },
        )
        .await
        .expect("issue")
}

fn count_of(issued: &Issued) -> u64 {
    let body: Value = serde_json::from_str(&issued.body).expect("JSON body");
    body["count"].as_u64().expect("count")
}

#[tokio::test]
async fn migrations_are_versioned_and_applied_once() {
    for ledger in stores("migrations").await {
        assert_eq!(
            ledger.migrate().await.expect("migrate"),
            Vec::<i64>::new(),
            "{}: opening applied every migration; a second run applies none",
            ledger.kind()
        );
        ledger.ping().await.expect("ready");
    }
}

#[tokio::test]
async fn allow_records_and_counts_deny_records_nothing() {
    for ledger in stores("counts").await {
        let kind = ledger.kind();
        let who = subject();
        let now = now_ms();
        let mut counts = Vec::new();
        for _ in 0..3 {
            let issued = issue_limited(&ledger, &who, Some("run-1"), now, 1, None).await;
            counts.push((issued.status, count_of(&issued)));
        }
        // Counts 0 and 1 pass a limit of 1; the third sees 2 and is denied.
        assert_eq!(counts, vec![(201, 0), (201, 1), (200, 2)], "{kind}");
        let filter = Filter {
            subject: Some(who.clone()),
            limit: 100,
            ..Filter::default()
        };
        let listed = ledger.list(&filter, now).await.expect("list");
        assert_eq!(listed.len(), 2, "{kind}: the deny recorded nothing");
        // Another subject's count is its own.
        let other = issue_limited(&ledger, &subject(), None, now, 1, None).await;
        assert_eq!((other.status, count_of(&other)), (201, 0), "{kind}");
    }
}

#[tokio::test]
async fn only_grants_within_the_window_count() {
    for ledger in stores("window").await {
        let who = subject();
        let now = now_ms();
        let two_hours_ago = now - 2 * 3600 * 1000;
        issue_limited(&ledger, &who, None, two_hours_ago, 10, None).await;
        issue_limited(&ledger, &who, None, two_hours_ago, 10, None).await;
        let issued = issue_limited(&ledger, &who, None, now, 10, None).await;
        assert_eq!(
            count_of(&issued),
            0,
            "{}: old grants are outside the 1 h window",
            ledger.kind()
        );
        let issued = issue_limited(&ledger, &who, None, now + 1, 10, None).await;
        assert_eq!(count_of(&issued), 1, "{}", ledger.kind());
    }
}

/// Issues with `key` and `digest` again, with a `decide` that would deny
/// and counts its calls: what the ledger answered, and how many times it
/// decided (0 when it replayed or refused the key).
async fn retry_with_key(
    ledger: &Ledger,
    who: &str,
    key: &str,
    digest: &str,
    now: i64,
) -> (Issued, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let issued = ledger
        .issue(
            Issue {
                subject_id: who,
                window: HOUR,
                now,
                idempotency_key: Some(key),
                request_digest: digest,
                grant_id: &new_grant_id(),
            },
            move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                Verdict {
                    grant: None,
                    status: 200,
                    body: "{}".to_owned(),
                    request_text: None,
                    obligations_text: None,
                }
            },
        )
        .await
        .expect("issue with a key");
    (issued, calls)
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_answer() {
    for ledger in stores("idempotency").await {
        let kind = ledger.kind();
        let who = subject();
        let key = format!("key-{}", new_grant_id());
        let now = now_ms();
        let first = issue_limited(&ledger, &who, None, now, 10, Some(&key)).await;
        assert!(!first.replayed);
        let (again, calls) = retry_with_key(&ledger, &who, &key, SAME, now + 5).await;
        assert!(again.replayed, "{kind}");
        assert_same_answer(&again, &first, kind);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{kind}: a retry decides nothing"
        );
        assert_eq!(grants_of(&ledger, &who, now).await, 1, "{kind}");
    }
}

#[tokio::test]
async fn get_and_revoke() {
    for ledger in stores("revoke").await {
        let kind = ledger.kind();
        let who = subject();
        let now = now_ms();
        let issued = issue_limited(&ledger, &who, Some("run-7"), now, 10, None).await;
        let body: Value = serde_json::from_str(&issued.body).expect("JSON");
        let id = body["grant_id"].as_str().expect("grant_id").to_owned();
        let grant = ledger.get(&id).await.expect("get").expect("recorded");
        assert_eq!(grant.subject_id, who);
        assert_eq!(grant.task_id.as_deref(), Some("run-7"));
        assert_eq!(grant.credential_ref.as_deref(), Some("lease-1"));
        assert_eq!(grant.obligations[0]["event"], "task_end", "{kind}");
        assert_eq!(grant.state(now), GrantState::Live);
        assert_eq!(grant.state(grant.expires_at), GrantState::Expired);

        let (revoked, changed) = ledger
            .revoke(&id, "broker", "not_minted", now + 10)
            .await
            .expect("revoke")
            .expect("exists");
        assert!(changed, "{kind}");
        assert_eq!(revoked.state(now + 10), GrantState::Revoked);
        assert_eq!(revoked.revoked_at, Some(now + 10));
        assert_eq!(revoked.revoked_by.as_deref(), Some("broker"));
        assert_eq!(revoked.reason.as_deref(), Some("not_minted"));
        let (again, changed) = ledger
            .revoke(&id, "broker", "again", now + 20)
            .await
            .expect("revoke")
            .expect("exists");
        assert!(!changed, "{kind}: revoked once");
        assert_eq!(again.revoked_at, Some(now + 10), "{kind}");
        assert_eq!(again.reason.as_deref(), Some("not_minted"), "{kind}");

        // A revoked grant still counts as an issuance.
        let next = issue_limited(&ledger, &who, None, now + 30, 10, None).await;
        assert_eq!(count_of(&next), 1, "{kind}");

        assert!(ledger.get("no-such-grant").await.expect("get").is_none());
        assert!(ledger
            .revoke("no-such-grant", "broker", "x", now)
            .await
            .expect("revoke")
            .is_none());
    }
}

#[tokio::test]
async fn lists_page_in_issue_order_and_filter_by_task_and_state() {
    for ledger in stores("list").await {
        let kind = ledger.kind();
        let who = subject();
        let now = now_ms();
        let mut ids = Vec::new();
        for i in 0..5 {
            let task = if i % 2 == 0 { "even" } else { "odd" };
            let issued = issue_limited(&ledger, &who, Some(task), now + i, 100, None).await;
            let body: Value = serde_json::from_str(&issued.body).expect("JSON");
            ids.push(body["grant_id"].as_str().expect("id").to_owned());
        }
        let mut filter = Filter {
            subject: Some(who.clone()),
            limit: 2,
            ..Filter::default()
        };
        let mut paged = Vec::new();
        loop {
            let page = ledger.list(&filter, now).await.expect("list");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            filter.after = page.last().map(|g| g.grant_id.clone());
            paged.extend(page.into_iter().map(|g| g.grant_id));
        }
        assert_eq!(paged, ids, "{kind}: pages in grant_id (issue) order");

        let odd = Filter {
            subject: Some(who.clone()),
            task: Some("odd".to_owned()),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(
            ledger.list(&odd, now).await.expect("list").len(),
            2,
            "{kind}"
        );

        ledger
            .revoke(&ids[0], "broker", "not_minted", now + 10)
            .await
            .expect("revoke");
        let by_state = |state| Filter {
            subject: Some(who.clone()),
            state: Some(state),
            limit: 100,
            ..Filter::default()
        };
        let revoked = ledger
            .list(&by_state(GrantState::Revoked), now + 20)
            .await
            .expect("list");
        assert_eq!(revoked.len(), 1, "{kind}");
        let live = ledger
            .list(&by_state(GrantState::Live), now + 20)
            .await
            .expect("list");
        assert_eq!(live.len(), 4, "{kind}");
        // 300 s later, every grant not revoked has expired, with no event.
        let later = now + 301 * 1000;
        let expired = ledger
            .list(&by_state(GrantState::Expired), later)
            .await
            .expect("list");
        assert_eq!(expired.len(), 4, "{kind}");
        let live = ledger
            .list(&by_state(GrantState::Live), later)
            .await
            .expect("list");
        assert!(live.is_empty(), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issuances_for_one_subject_are_counted_one_at_a_time() {
    for ledger in stores("concurrent").await {
        let kind = ledger.kind();
        let ledger = Arc::new(ledger);
        let who = subject();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (ledger, who) = (ledger.clone(), who.clone());
            tasks.push(tokio::spawn(async move {
                issue_limited(&ledger, &who, None, now_ms(), 10, None).await
            }));
        }
        let mut allowed = 0;
        let mut counts = Vec::new();
        for task in tasks {
            let issued = task.await.expect("task");
            if issued.status == 201 {
                allowed += 1;
                counts.push(count_of(&issued));
            }
        }
        counts.sort_unstable();
        assert_eq!(allowed, 11, "{kind}: counts 0..=10 pass a limit of 10");
        assert_eq!(counts, (0..=10).collect::<Vec<u64>>(), "{kind}");
        let filter = Filter {
            subject: Some(who),
            limit: 1000,
            ..Filter::default()
        };
        assert_eq!(
            ledger.list(&filter, now_ms()).await.expect("list").len(),
            11
        );
    }
}

/// Issues `id` for `who` while the count is at most `limit` (a deny records
/// nothing); the body is the count. The ledger's error is returned.
async fn issue_as(ledger: &Ledger, who: &str, id: &str, limit: u64) -> Result<Issued, LedgerError> {
    let (owned_id, owned_who) = (id.to_owned(), who.to_owned());
    let now = now_ms();
    ledger
        .issue(
            Issue {
                subject_id: who,
                window: HOUR,
                now,
                idempotency_key: None,
                request_digest: "",
                grant_id: id,
            },
            move |count| Verdict {
                grant: (count <= limit).then(|| grant(&owned_id, &owned_who, None, now, 300)),
                status: if count <= limit { 201 } else { 200 },
                body: json!({"count": count}).to_string(),
                request_text: None,
                obligations_text: None,
            },
        )
        .await
}

/// On PostgreSQL a group that cannot commit (a grant id recorded already:
/// a unique violation, retried as a conflict until the tries run out)
/// records nothing and is answered with an error; the groups committed
/// around it count only what was recorded: one subject's 40 concurrent
/// issuances still get counts 0 to 10 once each. (It guards a pipelined
/// group commit too, where the next group's counts go out before this
/// one's commit is known.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_that_cannot_commit_leaves_the_next_ones_counting_right() {
    let Some(url) = postgres_url("pipeline-failure") else {
        return;
    };
    let ledger = Arc::new(Ledger::open(&url).await.expect("PostgreSQL URL opens"));
    let taken = new_grant_id();
    let owner = subject();
    let first = issue_as(&ledger, &owner, &taken, 10).await.expect("first");
    assert_eq!(first.status, 201);
    let (clash, busy) = (subject(), subject());
    let mut tasks = Vec::new();
    let mut clashing = None;
    for i in 0..40 {
        if i == 3 {
            let (ledger, clash, taken) = (ledger.clone(), clash.clone(), taken.clone());
            clashing = Some(tokio::spawn(async move {
                issue_as(&ledger, &clash, &taken, 10).await
            }));
        }
        let (ledger, busy) = (ledger.clone(), busy.clone());
        tasks.push(tokio::spawn(async move {
            issue_as(&ledger, &busy, &new_grant_id(), 10).await
        }));
    }
    let clashed = clashing.expect("spawned").await.expect("task");
    assert!(
        matches!(&clashed, Err(LedgerError::Unavailable(m)) if m.contains("conflicts")),
        "{clashed:?}"
    );
    let (mut counts, mut failed) = (Vec::new(), 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(issued) if issued.status == 201 => counts.push(count_of(&issued)),
            Ok(_) => {}
            // Only an issuance in the clashing group shares its fate.
            Err(_) => failed += 1,
        }
    }
    counts.sort_unstable();
    assert_eq!(counts, (0..=10).collect::<Vec<u64>>());
    assert!(
        failed <= 1,
        "{failed} issuances failed with the clashing one"
    );
    let filter = |who: &str| Filter {
        subject: Some(who.to_owned()),
        limit: 1000,
        ..Filter::default()
    };
    assert_eq!(
        ledger
            .list(&filter(&busy), now_ms())
            .await
            .expect("list")
            .len(),
        11
    );
    assert!(ledger
        .list(&filter(&clash), now_ms())
        .await
        .expect("list")
        .is_empty());
    let kept = ledger
        .get(&taken)
        .await
        .expect("get")
        .expect("the first grant");
    assert_eq!(kept.subject_id, owner);
}

#[tokio::test]
async fn a_database_that_does_not_answer_is_unavailable() {
    // Nothing listens on port 1.
    let ledger = Ledger::open("postgres://writ@127.0.0.1:1/writ")
        .await
        .expect("opens lazily");
    assert!(matches!(
        ledger.ping().await,
        Err(LedgerError::Unavailable(_))
    ));
    let result = ledger
        .issue(
            Issue {
                subject_id: "s",
                window: HOUR,
                now: now_ms(),
                idempotency_key: None,
                request_digest: SAME,
                grant_id: &new_grant_id(),
            },
            |_| -> Verdict { unreachable!("nothing is decided without a ledger") },
        )
        .await;
    assert!(
        matches!(result, Err(LedgerError::Unavailable(_))),
        "{result:?}"
    );
    assert!(matches!(
        Ledger::open("postgres://[bad").await,
        Err(LedgerError::Invalid(_))
    ));
}

#[test]
fn passwords_are_hidden_in_messages() {
    assert_eq!(
        redact_url("postgres://writ:secret@db:5432/writ"),
        "postgres://writ:***@db:5432/writ"
    );
    assert_eq!(redact_url("writ.db"), "writ.db");
}

#[tokio::test]
async fn events_revoke_the_selected_grants_whose_revoke_on_names_them() {
    for ledger in stores("events").await {
        let kind = ledger.kind();
        let who = subject();
        let now = now_ms();
        for task in ["run-a", "run-a", "run-b"] {
            issue_limited(&ledger, &who, Some(task), now, 100, None).await;
        }
        let by_task = Selector {
            subject: Some(who.clone()),
            task: Some("run-a".to_owned()),
            grant: None,
        };
        // No obligation names objective_change: nothing is revoked.
        let none = ledger
            .revoke_for_event(&by_task, "objective_change", "objective changed", now + 1)
            .await
            .expect("event");
        assert!(none.is_empty(), "{kind}");
        let revoked = ledger
            .revoke_for_event(&by_task, "task_end", "run-a ended", now + 2)
            .await
            .expect("event");
        assert_eq!(revoked.len(), 2, "{kind}");
        for (grant, why) in &revoked {
            assert_eq!(grant.task_id.as_deref(), Some("run-a"));
            assert_eq!(grant.revoked_by.as_deref(), Some("event:task_end"));
            assert!(why.contains("revoke_on task_end"), "{why}");
            let stored = ledger
                .get(&grant.grant_id)
                .await
                .expect("get")
                .expect("there");
            assert_eq!(stored.state(now + 3), GrantState::Revoked, "{kind}");
            assert_eq!(stored.reason.as_deref(), Some("run-a ended"));
        }
        // Once only.
        let again = ledger
            .revoke_for_event(&by_task, "task_end", "again", now + 3)
            .await
            .expect("event");
        assert!(again.is_empty(), "{kind}");
        // identity_revoked takes the rest of the subject's, whatever they say.
        let by_subject = Selector {
            subject: Some(who.clone()),
            ..Selector::default()
        };
        let rest = ledger
            .revoke_for_event(&by_subject, IDENTITY_REVOKED, "key leaked", now + 4)
            .await
            .expect("event");
        assert_eq!(rest.len(), 1, "{kind}");
        assert_eq!(rest[0].0.task_id.as_deref(), Some("run-b"));
        assert!(matches!(
            ledger
                .revoke_for_event(&Selector::default(), "task_end", "x", now)
                .await,
            Err(LedgerError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_request_is_refused() {
    for ledger in stores("idempotency-reused").await {
        let kind = ledger.kind();
        let who = subject();
        let key = format!("key-{}", new_grant_id());
        let now = now_ms();
        let first = issue_limited(&ledger, &who, None, now, 10, Some(&key)).await;
        assert_eq!(first.status, 201, "{kind}");
        assert!(!first.replayed && !first.key_reused, "{kind}");
        let (other, calls) =
            retry_with_key(&ledger, &who, &key, "sha256:another-request", now + 5).await;
        assert!(other.key_reused, "{kind}");
        assert!(!other.replayed, "{kind}");
        assert!(
            other.body.is_empty(),
            "{kind}: the first answer is not given"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{kind}: nothing decided");
        // The same request with the key still replays the first answer.
        let again = issue_limited(&ledger, &who, None, now + 10, 10, Some(&key)).await;
        assert!(again.replayed && !again.key_reused, "{kind}");
        assert_same_answer(&again, &first, kind);
        assert_eq!(
            grants_of(&ledger, &who, now).await,
            1,
            "{kind}: one grant recorded"
        );
    }
}

/// A SQLite ledger at schema version 1 (keys stored without a request
/// digest) is migrated to version 2 when opened; its old keys still replay.
#[tokio::test]
async fn a_version_1_ledger_is_migrated_and_its_keys_still_replay() {
    let path = sqlite_path("schema-v1");
    {
        let conn = rusqlite::Connection::open(&path).expect("create v1");
        conn.execute_batch(
            "CREATE TABLE writ_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .expect("migrations table");
        conn.execute_batch(MIGRATIONS[0].2).expect("version 1");
        conn.execute(
            "INSERT INTO writ_migrations (version, name, applied_at) VALUES (1, 'grants', 0)",
            [],
        )
        .expect("record version 1");
        conn.execute(
            "INSERT INTO writ_idempotency (idempotency_key, status, body, created_at) VALUES ('old-key', 200, '{\"old\":true}', 0)",
            [],
        )
        .expect("an old key");
    }
    let ledger = Ledger::open(&path).await.expect("opens and migrates");
    assert_eq!(ledger.migrate().await.expect("migrate"), Vec::<i64>::new());
    let replayed = issue_limited(&ledger, &subject(), None, now_ms(), 10, Some("old-key")).await;
    assert!(replayed.replayed && !replayed.key_reused, "{replayed:?}");
    assert_eq!(
        (replayed.status, replayed.body.as_str()),
        (200, "{\"old\":true}")
    );
}

/// Issuances that arrive together (and are committed in one group) are
/// counted per subject, and a key sent twice at once is decided once and
/// replayed once, as when each issuance had a transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issuances_for_many_subjects_are_counted_per_subject() {
    for ledger in stores("concurrent-many").await {
        let kind = ledger.kind();
        let ledger = Arc::new(ledger);
        let subjects: Vec<String> = (0..8).map(|_| subject()).collect();
        let mut tasks = Vec::new();
        for i in 0..80 {
            let (ledger, who) = (ledger.clone(), subjects[i % 8].clone());
            tasks.push((
                i % 8,
                tokio::spawn(
                    async move { issue_limited(&ledger, &who, None, now_ms(), 2, None).await },
                ),
            ));
        }
        let key = format!("key-{}", new_grant_id());
        let keyed_subject = subject();
        let keyed: Vec<_> = (0..2)
            .map(|_| {
                let (ledger, key, who) = (ledger.clone(), key.clone(), keyed_subject.clone());
                tokio::spawn(async move {
                    issue_limited(&ledger, &who, None, now_ms(), 10, Some(&key)).await
                })
            })
            .collect();
        let mut counts: Vec<Vec<u64>> = vec![Vec::new(); 8];
        for (index, task) in tasks {
            let issued = task.await.expect("task");
            if issued.status == 201 {
                counts[index].push(count_of(&issued));
            }
        }
        for (index, mut counted) in counts.into_iter().enumerate() {
            counted.sort_unstable();
            assert_eq!(counted, vec![0, 1, 2], "{kind}: subject {index}");
            assert_eq!(grants_of(&ledger, &subjects[index], now_ms()).await, 3);
        }
        let mut answers = Vec::new();
        for task in keyed {
            answers.push(task.await.expect("task"));
        }
        answers.sort_by_key(|issued| issued.replayed);
        assert!(!answers[0].replayed && answers[1].replayed, "{kind}");
        assert_same_answer(&answers[1], &answers[0], kind);
        assert_eq!(grants_of(&ledger, &keyed_subject, now_ms()).await, 1);
    }
}

/// A replay answers exactly what the first call answered.
fn assert_same_answer(again: &Issued, first: &Issued, kind: &str) {
    assert_eq!(
        (again.status, &again.body),
        (first.status, &first.body),
        "{kind}"
    );
}

/// How many grants the ledger lists for `who` (up to 10).
async fn grants_of(ledger: &Ledger, who: &str, now: i64) -> usize {
    let filter = Filter {
        subject: Some(who.to_owned()),
        limit: 10,
        ..Filter::default()
    };
    ledger.list(&filter, now).await.expect("list").len()
}

/// The feed rows, after `after`, of the grants in `ids` (other tests share
/// the PostgreSQL feed).
async fn feed_of(ledger: &Ledger, after: i64, ids: &[String]) -> Vec<FeedEntry> {
    let mut rows = Vec::new();
    let mut cursor = after;
    loop {
        let page = ledger.feed(cursor, 1000).await.expect("feed");
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        rows.extend(page.into_iter().filter(|r| ids.contains(&r.grant_id)));
    }
    rows
}

/// The feed's last cursor now.
async fn feed_end(ledger: &Ledger) -> i64 {
    let mut cursor = 0;
    loop {
        let page = ledger.feed(cursor, 1000).await.expect("feed");
        match page.last() {
            Some(last) => cursor = last.seq,
            None => return cursor,
        }
    }
}

async fn issued_id(ledger: &Ledger, who: &str, task: Option<&str>, now: i64) -> String {
    let issued = issue_limited(ledger, who, task, now, 1_000_000, None).await;
    let body: Value = serde_json::from_str(&issued.body).expect("JSON");
    body["grant_id"].as_str().expect("grant_id").to_owned()
}

/// Every revocation (broker, event) and every narrowing appends one feed
/// row, in the order they were made, with what a broker needs to act.
#[tokio::test]
async fn revocations_and_narrowings_are_on_the_feed_in_order() {
    for ledger in stores("feed").await {
        let kind = ledger.kind();
        let who = subject();
        let now = now_ms();
        let start = feed_end(&ledger).await;
        let a = issued_id(&ledger, &who, Some("run-a"), now).await;
        let b = issued_id(&ledger, &who, Some("run-b"), now).await;
        let c = issued_id(&ledger, &who, Some("run-c"), now).await;
        ledger
            .revoke(&a, "broker", "not_minted", now + 1)
            .await
            .expect("revoke")
            .expect("exists");
        let grant_b = ledger.get(&b).await.expect("get").expect("b");
        let narrowed = ledger
            .apply(
                vec![Change {
                    grant: grant_b.clone(),
                    action: Action::Narrow {
                        scope: vec!["read:db://x".to_owned()],
                        expires_at: now + 60_000,
                    },
                    by: "redecision".to_owned(),
                    reason: "ttl cap lowered".to_owned(),
                    why: "re-decided".to_owned(),
                    decision: Some(json!({"decision": "allow", "trace": []})),
                }],
                now + 2,
            )
            .await
            .expect("narrow");
        assert_eq!(narrowed.len(), 1, "{kind}");
        let selector = Selector {
            grant: Some(c.clone()),
            ..Selector::default()
        };
        let revoked = ledger
            .revoke_for_event(&selector, "task_end", "run-c ended", now + 3)
            .await
            .expect("event");
        assert_eq!(revoked.len(), 1, "{kind}");

        let ids = [a.clone(), b.clone(), c.clone()];
        let rows = feed_of(&ledger, start, &ids).await;
        let seen: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.grant_id.as_str(), r.kind.as_str(), r.by.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (a.as_str(), "revoked", "broker"),
                (b.as_str(), "narrowed", "redecision"),
                (c.as_str(), "revoked", "event:task_end"),
            ],
            "{kind}"
        );
        assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "{kind}");
        assert_eq!(rows[1].expires_at, Some(now + 60_000), "{kind}");
        assert_eq!(
            rows[1].scope.as_deref(),
            Some(&["read:db://x".to_owned()][..])
        );
        assert_eq!(rows[2].credential_ref.as_deref(), Some("lease-1"));
        assert_eq!(rows[2].reason.as_deref(), Some("run-c ended"));
        assert_eq!(rows[0].at, now + 1, "{kind}");

        // The narrowing is stored with its re-decision.
        let stored = ledger.get(&b).await.expect("get").expect("b");
        assert!(stored.narrowed, "{kind}");
        assert_eq!(stored.expires_at, now + 60_000);
        assert_eq!(stored.redecided_at, Some(now + 2));
        assert_eq!(
            stored.redecision,
            Some(json!({"decision": "allow", "trace": []}))
        );

        // Resuming from a row's cursor gives what follows it, nothing twice.
        let resumed = feed_of(&ledger, rows[0].seq, &ids).await;
        assert_eq!(resumed, rows[1..].to_vec(), "{kind}");
    }
}

/// A change applies only to the grant as it was read: a grant revoked
/// meanwhile is not revoked again nor narrowed (no second feed row), and a
/// narrowing made from a stale read is not applied.
#[tokio::test]
async fn a_change_never_overwrites_a_grant_changed_meanwhile() {
    for ledger in stores("conditional").await {
        let kind = ledger.kind();
        let who = subject();
        let now = now_ms();
        let start = feed_end(&ledger).await;
        let id = issued_id(&ledger, &who, None, now).await;
        let read = ledger.get(&id).await.expect("get").expect("there");
        ledger
            .revoke(&id, "event:task_end", "ended", now + 1)
            .await
            .expect("revoke");
        let narrow = Change {
            grant: read.clone(),
            action: Action::Narrow {
                scope: read.scope.clone(),
                expires_at: now + 1000,
            },
            by: "redecision".to_owned(),
            reason: "late".to_owned(),
            why: "late".to_owned(),
            decision: Some(json!({})),
        };
        let revoke = Change {
            action: Action::Revoke,
            ..narrow.clone()
        };
        let applied = ledger
            .apply(vec![narrow, revoke], now + 2)
            .await
            .expect("apply");
        assert!(applied.is_empty(), "{kind}: {applied:?}");
        let stored = ledger.get(&id).await.expect("get").expect("there");
        assert_eq!(stored.revoked_by.as_deref(), Some("event:task_end"));
        assert_eq!(stored.revoked_at, Some(now + 1));
        assert!(!stored.narrowed && stored.redecision.is_none(), "{kind}");
        assert_eq!(
            feed_of(&ledger, start, std::slice::from_ref(&id))
                .await
                .len(),
            1
        );

        // Stale: narrowed once, a second narrowing from the first read is
        // refused.
        let other = issued_id(&ledger, &who, None, now).await;
        let read = ledger.get(&other).await.expect("get").expect("there");
        let shorter = |expires_at: i64| Change {
            grant: read.clone(),
            action: Action::Narrow {
                scope: read.scope.clone(),
                expires_at,
            },
            by: "redecision".to_owned(),
            reason: "cap".to_owned(),
            why: "cap".to_owned(),
            decision: Some(json!({})),
        };
        assert_eq!(
            ledger
                .apply(vec![shorter(now + 5000)], now + 1)
                .await
                .expect("apply")
                .len(),
            1
        );
        assert!(ledger
            .apply(vec![shorter(now + 9000)], now + 2)
            .await
            .expect("apply")
            .is_empty());
        let stored = ledger.get(&other).await.expect("get").expect("there");
        assert_eq!(stored.expires_at, now + 5000, "{kind}");
    }
}

/// Feed appenders on many connections at once: every cursor is handed out
/// once, without gaps, and a reader sees them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_distinct_gapless_cursors() {
    for ledger in stores("feed-concurrent").await {
        let kind = ledger.kind();
        let ledger = Arc::new(ledger);
        let who = subject();
        let now = now_ms();
        let start = feed_end(&ledger).await;
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(issued_id(&ledger, &who, None, now).await);
        }
        let mut tasks = Vec::new();
        for id in ids.clone() {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                ledger.revoke(&id, "broker", "x", now + 1).await
            }));
        }
        for task in tasks {
            task.await.expect("joins").expect("revokes");
        }
        let rows = feed_of(&ledger, start, &ids).await;
        assert_eq!(rows.len(), 20, "{kind}");
        let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let sorted = {
            let mut s = seqs.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(seqs, sorted, "{kind}: read in cursor order");
        seqs.dedup();
        assert_eq!(seqs.len(), 20, "{kind}: distinct");
        // Gapless over the whole feed (other tests' rows included).
        let all = ledger.feed(start, 1000).await.expect("feed");
        assert!(
            all.windows(2).all(|w| w[1].seq == w[0].seq + 1),
            "{kind}: no gaps"
        );
    }
}

/// The ledger's clock never goes back: after a backward jump an expired
/// grant stays expired, a revoked one revoked, and a window counts the
/// same grants as before the jump.
#[tokio::test]
async fn a_clock_that_jumps_back_resurrects_nothing() {
    // Only times near the real clock are written: the PostgreSQL ledger is
    // shared with other tests, whose ledgers start from its latest time.
    let wall = Arc::new(AtomicI64::new(now_ms()));
    let clock: Clock = {
        let wall = wall.clone();
        Arc::new(move || wall.load(Ordering::SeqCst))
    };
    let mut targets = vec![sqlite_path("clock")];
    if let Some(url) = postgres_url("clock") {
        targets.push(url);
    }
    for target in targets {
        let ledger = Ledger::open_with_clock(&target, clock.clone())
            .await
            .expect("opens");
        let kind = ledger.kind();
        let who = subject();
        let t0 = ledger.now();
        // issue_limited grants 300 s.
        let id = issued_id(&ledger, &who, None, t0).await;
        wall.store(t0 + 400_000, Ordering::SeqCst);
        let later = ledger.now();
        assert_eq!(later, t0 + 400_000, "{kind}");
        let grant = ledger.get(&id).await.expect("get").expect("there");
        assert_eq!(grant.state(later), GrantState::Expired, "{kind}");
        // The clock jumps back 10 minutes: the ledger's time stands.
        wall.store(t0 - 200_000, Ordering::SeqCst);
        let jumped = ledger.now();
        assert_eq!(jumped, later, "{kind}: time does not go back");
        assert_eq!(grant.state(jumped), GrantState::Expired, "{kind}");
        let live = ledger
            .live_page(
                &Selector {
                    subject: Some(who.clone()),
                    ..Selector::default()
                },
                None,
                jumped,
            )
            .await
            .expect("live");
        assert!(live.is_empty(), "{kind}: nothing live again");
        // A revoke after the jump finds an expired grant: no change.
        let (_, changed) = ledger
            .revoke(&id, "broker", "x", jumped)
            .await
            .expect("revoke")
            .expect("there");
        assert!(!changed, "{kind}");
        // The window still holds the grant (a limit of 0 denies, so
        // nothing is recorded at the jumped time).
        let counted = issue_limited(&ledger, &who, None, jumped, 0, None).await;
        assert_eq!(count_of(&counted), 1, "{kind}: the count did not reset");
        // A ledger opened with the clock behind starts from the latest time
        // it holds (the grant's issue).
        let reopened = Ledger::open_with_clock(&target, clock.clone())
            .await
            .expect("reopens");
        assert!(
            reopened.now() >= t0,
            "{kind}: reopened at {}",
            reopened.now()
        );
        wall.store(now_ms(), Ordering::SeqCst);
    }
}

/// A pass over more than a page: every live grant is decided once, the
/// changes are applied page by page, and a grant revoked before the pass
/// is not decided.
#[tokio::test]
async fn a_re_decision_pass_pages_through_every_live_grant() {
    const PAGE: usize = 1000;
    for ledger in stores("redecide-pages").await {
        let ledger = ledger.with_page(PAGE);
        let kind = ledger.kind();
        let who = subject();
        let now = ledger.now();
        let mut ids = Vec::new();
        // Two pages of live grants: 1,000 and 1.
        for _ in 0..PAGE + 2 {
            ids.push(issued_id(&ledger, &who, None, now).await);
        }
        ledger
            .revoke(&ids[0], "broker", "not_minted", now)
            .await
            .expect("revoke");
        let selector = Selector {
            subject: Some(who.clone()),
            ..Selector::default()
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let report = ledger
            .redecide_live(&selector, 5, |page, now| {
                seen.lock()
                    .expect("lock")
                    .extend(page.iter().map(|g| g.grant_id.clone()));
                // Every other grant of a page is revoked.
                let changes: Vec<Change> = page
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 0)
                    .map(|(_, grant)| Change {
                        grant,
                        action: Action::Revoke,
                        by: "redecision".to_owned(),
                        reason: "test".to_owned(),
                        why: "test".to_owned(),
                        decision: Some(json!({"decision": "deny"})),
                    })
                    .collect();
                let _ = now;
                std::future::ready(changes)
            })
            .await
            .expect("pass");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), PAGE + 1, "{kind}: each live grant once");
        assert_eq!(seen, ids[1..].to_vec(), "{kind}: in order");
        assert_eq!(report.checked, PAGE + 1, "{kind}");
        assert_eq!(report.revoked, PAGE / 2 + 1, "{kind}");
        assert_eq!(report.unchanged(), PAGE / 2, "{kind}");
        assert_eq!(report.changes.len(), 5, "{kind}: kept");
        assert!(report.truncated, "{kind}");
        let live = ledger
            .live_page(&selector, None, ledger.now())
            .await
            .expect("live");
        assert_eq!(live.len(), PAGE / 2, "{kind}");
    }
}

/// A webhook's delivery cursor starts where it is first asked for, moves
/// only from the value the mover read (a second replica's stale move is
/// refused), and is kept by the ledger for the next process.
#[tokio::test]
async fn a_delivery_cursor_moves_by_compare_and_set() {
    for ledger in stores("deliveries").await {
        let kind = ledger.kind();
        let target = format!("https://hooks.test/{}", new_grant_id());
        let now = now_ms();
        let who = subject();
        let head_before = ledger.feed_head().await.expect("head");
        let id = issued_id(&ledger, &who, None, now).await;
        ledger
            .revoke(&id, "broker", "not_minted", now + 1)
            .await
            .expect("revoke");
        let head = ledger.feed_head().await.expect("head");
        assert!(head > head_before, "{kind}: a revocation moves the head");

        let start = ledger
            .delivery_cursor(&target, head, now)
            .await
            .expect("cursor");
        assert_eq!(start, head, "{kind}: a new target starts at the given head");
        // Asked again with another start, the stored cursor wins.
        let again = ledger
            .delivery_cursor(&target, 0, now)
            .await
            .expect("cursor");
        assert_eq!(again, head, "{kind}");

        assert!(ledger
            .advance_delivery(&target, head, head + 5, now)
            .await
            .expect("advance"));
        assert!(
            !ledger
                .advance_delivery(&target, head, head + 7, now)
                .await
                .expect("advance"),
            "{kind}: a move from a stale cursor is refused"
        );
        let listed = ledger.deliveries().await.expect("deliveries");
        assert!(
            listed.contains(&(target.clone(), head + 5)),
            "{kind}: {listed:?}"
        );
    }
}

/// Drops the schema [`isolated_postgres`] made for `name`'s test.
async fn drop_isolated(url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("the schema goes");
}

/// A PostgreSQL ledger URL of a schema of its own in the test database
/// (created here; selected through the URL's `options`), so that a test
/// that moves its clock days ahead and sweeps sees, and deletes, no other
/// test's rows; and the schema's name.
async fn isolated_postgres(url: &str, name: &str) -> (String, String) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    let schema = format!("writ_{name}_{}", new_grant_id().replace('-', ""));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("a schema of its own");
    let join = if url.contains('?') { '&' } else { '?' };
    (
        format!("{url}{join}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

/// Retention: a sweep deletes the grants expired or revoked longer ago
/// than the retention (never one a count can still see), the stored
/// answers of old idempotency keys, the feed's old rows and the counter
/// rows of subjects with no grant left; newer ones stay. A feed read whose
/// cursor is before the pruned rows is told so, never handed the rows
/// after the gap; a retry with a swept key is decided afresh.
#[tokio::test]
async fn a_sweep_deletes_what_is_older_than_the_retention_and_keeps_the_rest() {
    const DAY: i64 = 24 * 3600 * 1000;
    const MINUTE: i64 = 60 * 1000;
    let wall = Arc::new(AtomicI64::new(now_ms()));
    let clock: Clock = {
        let wall = wall.clone();
        Arc::new(move || wall.load(Ordering::SeqCst))
    };
    let mut targets = vec![sqlite_path("retention")];
    let base = postgres_url("retention");
    let mut schema = None;
    if let Some(url) = &base {
        let (isolated, name) = isolated_postgres(url, "retention").await;
        targets.push(isolated);
        schema = Some(name);
    }
    for target in targets {
        let ledger = Ledger::open_with_clock(&target, clock.clone())
            .await
            .expect("opens");
        let kind = ledger.kind();
        let (s_a, s_b, s_k, s_c, s_e) = (subject(), subject(), subject(), subject(), subject());
        // Day 0: A expires after 5 minutes; B is revoked at once; a key is
        // used (its grant expires after 5 minutes too).
        let t0 = ledger.now();
        let a = issued_id(&ledger, &s_a, None, t0).await;
        let b = issued_id(&ledger, &s_b, None, t0).await;
        let first = issue_limited(&ledger, &s_k, None, t0, 10, Some("old-key")).await;
        assert!(!first.replayed, "{kind}");
        ledger
            .revoke(&b, "broker", "done", t0 + 1000)
            .await
            .expect("revoke")
            .expect("there");
        // Day 7: C is revoked at once, D (same subject as A) expires after
        // 5 minutes, another key is used.
        let t1 = t0 + 7 * DAY;
        wall.store(t1, Ordering::SeqCst);
        let c = issued_id(&ledger, &s_c, None, t1).await;
        let d = issued_id(&ledger, &s_a, None, t1).await;
        issue_limited(&ledger, &s_k, None, t1, 10, Some("new-key")).await;
        ledger
            .revoke(&c, "broker", "done", t1 + 1000)
            .await
            .expect("revoke")
            .expect("there");
        // 10 minutes later, E is live.
        let t2 = t1 + 10 * MINUTE;
        wall.store(t2, Ordering::SeqCst);
        let e = issued_id(&ledger, &s_e, None, t2 - 1000).await;
        let before = ledger.feed(0, 100).await.expect("feed");
        assert_eq!(
            before.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2],
            "{kind}"
        );

        // Retention 7 days: the cutoff is day 0 + 10 minutes.
        let swept = ledger
            .sweep(Duration::from_secs(7 * 24 * 3600), HOUR)
            .await
            .expect("sweep");
        assert_eq!(
            swept,
            Swept {
                grants: 3,
                keys: 1,
                feed: 1,
                subjects: 1,
                pruned_to: 1
            },
            "{kind}"
        );
        for gone in [&a, &b] {
            assert!(ledger.get(gone).await.expect("get").is_none(), "{kind}");
        }
        for kept in [&c, &d, &e] {
            assert!(ledger.get(kept).await.expect("get").is_some(), "{kind}");
        }
        // The feed: a reader before the pruned row is told, with where to
        // resume; a reader at it reads on without a gap.
        assert_eq!(
            ledger.read_feed(0, 100).await.expect("read"),
            FeedRead::Pruned {
                after: 0,
                pruned_to: 1
            },
            "{kind}"
        );
        match ledger.read_feed(1, 100).await.expect("read") {
            FeedRead::Rows(rows) => {
                assert_eq!(rows.len(), 1, "{kind}");
                assert_eq!(rows[0].seq, 2, "{kind}");
                assert_eq!(rows[0].grant_id, c, "{kind}");
            }
            pruned => panic!("{kind}: {pruned:?}"),
        }
        assert_eq!(
            ledger.read_feed(2, 100).await.expect("read"),
            FeedRead::Rows(Vec::new()),
            "{kind}"
        );
        // The kept key replays; the swept one is decided afresh.
        let again = issue_limited(&ledger, &s_k, None, t2, 10, Some("new-key")).await;
        assert!(again.replayed, "{kind}");
        let fresh = issue_limited(&ledger, &s_k, None, t2, 10, Some("old-key")).await;
        assert!(!fresh.replayed, "{kind}");

        // A retention shorter than the repeat window never deletes a grant
        // a count still sees: D expired 5 minutes ago but was issued 10
        // minutes ago, within the hour.
        let swept = ledger
            .sweep(Duration::from_secs(60), HOUR)
            .await
            .expect("sweep");
        // The feed's rows do not wait for the window: C's goes now.
        assert_eq!(
            (swept.grants, swept.feed, swept.pruned_to),
            (0, 1, 2),
            "{kind}: {swept:?}"
        );
        assert!(ledger.get(&d).await.expect("get").is_some(), "{kind}");
        let counted = issue_limited(&ledger, &s_a, None, t2, 10, None).await;
        assert_eq!(count_of(&counted), 1, "{kind}: D is still counted");
        // With the window behind them, C (revoked), D and the second key's
        // grant (expired) go; E and the grants just issued stay.
        let swept = ledger
            .sweep(Duration::from_secs(60), Duration::from_secs(60))
            .await
            .expect("sweep");
        assert_eq!(
            (swept.grants, swept.feed, swept.pruned_to),
            (3, 0, 2),
            "{kind}: {swept:?}"
        );
        assert!(ledger.get(&e).await.expect("get").is_some(), "{kind}");
        assert_eq!(
            ledger.read_feed(1, 100).await.expect("read"),
            FeedRead::Pruned {
                after: 1,
                pruned_to: 2
            },
            "{kind}"
        );
        assert_eq!(
            ledger.read_feed(2, 100).await.expect("read"),
            FeedRead::Rows(Vec::new()),
            "{kind}"
        );
    }
    if let (Some(url), Some(schema)) = (&base, &schema) {
        drop_isolated(url, schema).await;
    }
}

/// Records `g` through [`Ledger::issue`] (the path `/v1/grants` takes).
async fn record(ledger: &Ledger, g: Grant) {
    let id = g.grant_id.clone();
    let subject = g.subject_id.clone();
    let now = g.issued_at;
    let issued = ledger
        .issue(
            Issue {
                subject_id: &subject,
                window: HOUR,
                now,
                idempotency_key: None,
                request_digest: "",
                grant_id: &id,
            },
            move |_| Verdict {
                grant: Some(g.clone()),
                status: 201,
                body: "{}".to_owned(),
                request_text: None,
                obligations_text: None,
            },
        )
        .await
        .expect("issue");
    assert_eq!(issued.status, 201);
}

/// Deploys need an approval the evaluator reads as verified.
const APPROVAL_POLICY: &str = include_str!("../../tests/approvals/deploy.writ");

/// A deploy grant whose stored request holds a verified approval's claims
/// (as `/v1/grants` stores it), with writ's attestation when `until` is
/// given.
fn approved(subject: &str, now: i64, until: Option<i64>) -> Grant {
    let claims = json!({"verified": true, "approver": "alice@acme.io", "action": "deploy",
        "resource": "k8s://a", "expires": rfc3339(now + 3_600_000),
        "verified_by": "https://approvals.test"});
    let mut g = grant(&new_grant_id(), subject, None, now, 1800);
    g.scope = vec!["deploy:k8s://a".to_owned()];
    g.request = json!({"subject": {"id": subject}, "action": "deploy",
        "resource": {"id": "k8s://a"}, "context": {"approval": claims}});
    g.approval = until.map(|until| ApprovalAttestation {
        approval: claims,
        issuer: "https://approvals.test".to_owned(),
        token: "sha256:abc".to_owned(),
        expires_at: until,
        verified_at: now,
    });
    g
}

/// writ's attestation of an approval is stored apart from the request and
/// read back as it was; a re-decision of the grant read back keeps it
/// while the approval is current and revokes it once expired; a grant
/// whose stored request claims `verified: true` without an attestation
/// gains nothing from it.
#[tokio::test]
async fn an_approval_writ_verified_survives_re_decision_until_it_expires() {
    let engine = crate::engine::Engine::compile([("p.writ", APPROVAL_POLICY)], None)
        .expect("the policy compiles");
    for ledger in stores("approval-attestation").await {
        let kind = ledger.kind();
        let who = subject();
        let now = ledger.now();
        let attested = approved(&who, now, Some(now + 600_000));
        let claimed = approved(&who, now, None);
        record(&ledger, attested.clone()).await;
        record(&ledger, claimed.clone()).await;
        let back = ledger
            .get(&attested.grant_id)
            .await
            .expect("get")
            .expect("there");
        assert_eq!(back.approval, attested.approval, "{kind}");
        assert_eq!(
            back.to_json(now)["approval_attestation"]["issuer"],
            "https://approvals.test",
            "{kind}"
        );
        let forged = ledger
            .get(&claimed.grant_id)
            .await
            .expect("get")
            .expect("there");
        assert_eq!(forged.approval, None, "{kind}");
        assert_eq!(
            forged.request["context"]["approval"]["verified"], true,
            "{kind}: the stored request says verified"
        );

        let later = now + 1000;
        assert!(
            redecide::redecide(&engine, &back, None, redecide::REDECISION, later).is_none(),
            "{kind}: the attested approval still counts"
        );
        let change = redecide::redecide(&engine, &forged, None, redecide::REDECISION, later)
            .expect("a change");
        assert_eq!(change.action, Action::Revoke, "{kind}");
        assert!(
            change.reason.contains("deploy.approved"),
            "{kind}: {}",
            change.reason
        );
        let applied = ledger.apply(vec![change], later).await.expect("apply");
        assert_eq!(applied.len(), 1, "{kind}");

        // Ten minutes on, the approval has expired: it no longer counts.
        let expired = now + 600_000;
        let page = ledger
            .live_page(
                &Selector {
                    subject: Some(who.clone()),
                    ..Selector::default()
                },
                None,
                later,
            )
            .await
            .expect("live");
        assert_eq!(page.len(), 1, "{kind}: only the attested grant is live");
        let change = redecide::redecide(&engine, &page[0], None, redecide::REDECISION, expired)
            .expect("a change");
        assert_eq!(change.action, Action::Revoke, "{kind}");
        let trace = &change.decision.as_ref().expect("decision")["trace"][0];
        assert!(
            trace["because"]
                .as_str()
                .is_some_and(|t| t.contains("expired")),
            "{kind}: {trace}"
        );
    }
}

/// A ledger at version 5 (made by the previous writ, with a grant in it)
/// is migrated to version 6 when opened, on both stores: its grants read
/// with no attestation, and new grants keep theirs.
#[tokio::test]
async fn a_version_5_ledger_is_migrated_to_keep_attestations() {
    let who = subject();
    let now = now_ms();
    let old = grant(&new_grant_id(), &who, None, now, 300);
    let v5_insert = format!(
        "INSERT INTO writ_grants (grant_id, decision_id, policy_digest, subject_id, request, scope, ttl, issued_at, expires_at, obligations) VALUES ('{}', 'd', 'sha256:x', '{who}', '{{}}', '[]', 300, {now}, {}, '[]')",
        old.grant_id,
        old.expires_at
    );
    let mut targets = Vec::new();
    // SQLite: the file as version 5 left it.
    let path = sqlite_path("schema-v5");
    {
        let conn = rusqlite::Connection::open(&path).expect("create v5");
        conn.execute_batch(
            "CREATE TABLE writ_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .expect("migrations table");
        for (version, name, sql) in &MIGRATIONS[..5] {
            conn.execute_batch(sql).expect("a version up to 5");
            conn.execute(
                "INSERT INTO writ_migrations (version, name, applied_at) VALUES (?1, ?2, 0)",
                rusqlite::params![version, name],
            )
            .expect("record it");
        }
        conn.execute_batch(&v5_insert).expect("a version 5 grant");
    }
    targets.push((path, None));
    // PostgreSQL: a schema of its own, brought to version 5.
    if let Some(url) = postgres_url("schema-v5") {
        let (isolated, schema) = isolated_postgres(&url, "v5").await;
        let (client, connection) = tokio_postgres::connect(&isolated, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL answers");
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE TABLE writ_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await
            .expect("migrations table");
        for (version, name, sql) in &MIGRATIONS[..5] {
            client.batch_execute(sql).await.expect("a version up to 5");
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [version, name];
            client
                .execute(
                    "INSERT INTO writ_migrations (version, name, applied_at) VALUES ($1, $2, 0)",
                    &params,
                )
                .await
                .expect("record it");
        }
        client
            .batch_execute(&v5_insert)
            .await
            .expect("a version 5 grant");
        targets.push((isolated, Some((url, schema))));
    }
    for (target, schema) in targets {
        let ledger = Ledger::open(&target).await.expect("opens and migrates");
        let kind = ledger.kind();
        assert_eq!(
            ledger.migrate().await.expect("migrate"),
            Vec::<i64>::new(),
            "{kind}"
        );
        let read = ledger
            .get(&old.grant_id)
            .await
            .expect("get")
            .expect("the version 5 grant");
        assert_eq!(read.approval, None, "{kind}");
        let new = approved(&subject(), ledger.now(), Some(now + 60_000));
        record(&ledger, new.clone()).await;
        let back = ledger
            .get(&new.grant_id)
            .await
            .expect("get")
            .expect("there");
        assert_eq!(back.approval, new.approval, "{kind}");
        drop(ledger);
        if let Some((url, schema)) = schema {
            drop_isolated(&url, &schema).await;
        }
    }
}

/// Version 7 on PostgreSQL: autovacuum's ANALYZE keeps no statistics for
/// the wide columns no query filters on (the stored request and answer,
/// the obligations, ...), and still keeps them for those the counts and
/// lists filter on.
#[tokio::test]
async fn postgres_keeps_no_statistics_for_the_wide_columns() {
    let Some(url) = postgres_url("postgres_keeps_no_statistics_for_the_wide_columns") else {
        return;
    };
    let (isolated, schema) = isolated_postgres(&url, "v7").await;
    let ledger = Ledger::open(&isolated).await.expect("opens and migrates");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    let targets = client
        .query(
            "SELECT c.relname || '.' || a.attname, a.attstattarget::INTEGER FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname IN ('writ_grants', 'writ_idempotency') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1",
            &[&schema],
        )
        .await
        .expect("the columns' statistics targets");
    let none: Vec<String> = targets
        .iter()
        .filter(|row| row.get::<_, Option<i32>>(1) == Some(0))
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        none,
        [
            "writ_grants.approval_attestation",
            "writ_grants.credential_ref",
            "writ_grants.decision_id",
            "writ_grants.obligations",
            "writ_grants.policy_digest",
            "writ_grants.redecision",
            "writ_grants.request",
            "writ_grants.revoke_reason",
            "writ_grants.revoked_by",
            "writ_grants.scope",
            "writ_idempotency.body",
            "writ_idempotency.request_digest",
        ]
    );
    assert_eq!(
        targets.len(),
        none.len() + 12,
        "the other columns keep theirs"
    );
    drop(ledger);
    drop_isolated(&url, &schema).await;
}
