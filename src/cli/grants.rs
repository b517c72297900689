//! `writ grants`: the grant ledger read, revoked and re-decided from the
//! command line, on the same store `writ serve` uses (docs/lifecycle.md).

use clap::Subcommand;
use serde_json::Value;

use super::{compile, PolicyArgs};
use crate::ledger::redecide::{redecide, REDECISION};
use crate::ledger::Selector;

#[derive(Debug, Subcommand)]
pub(super) enum GrantsCommand {
    /// Print grants as JSON, in issue order, one page at a time.
    List {
        /// A SQLite file or a `postgres://` URL.
        #[arg(long, value_name = "FILE|URL")]
        ledger: String,
        /// Only this `subject.id`.
        #[arg(long)]
        subject: Option<String>,
        /// Only this task (`intent.id` or `intent.task`).
        #[arg(long)]
        task: Option<String>,
        /// Only grants in this state: live, expired, revoked.
        #[arg(long)]
        state: Option<String>,
        /// The page size, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The grants after this `grant_id` (the `next` of a page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Print one grant as JSON.
    Show {
        /// The `grant_id`.
        grant_id: String,
        /// A SQLite file or a `postgres://` URL.
        #[arg(long, value_name = "FILE|URL")]
        ledger: String,
    },
    /// Revoke a live grant (`revoked_by: "cli"`).
    Revoke {
        /// The `grant_id`.
        grant_id: String,
        /// A SQLite file or a `postgres://` URL.
        #[arg(long, value_name = "FILE|URL")]
        ledger: String,
        /// Why, stored with the revocation.
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
    /// Re-decide every live grant with a policy set, as `writ serve` does
    /// after a reload: a deny revokes, less scope or a shorter expiry
    /// narrows (`revoked_by: "redecision"`), each on the revocation feed.
    /// Prints what it did as JSON.
    Recheck {
        /// A SQLite file or a `postgres://` URL.
        #[arg(long, value_name = "FILE|URL")]
        ledger: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// `writ grants list|show|revoke|recheck`: the ledger read and written directly,
/// as `writ serve` does (the same store, the same states).
pub(super) fn run_grants(command: GrantsCommand) -> Result<u8, String> {
    use crate::ledger::{Filter, GrantState, Ledger};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let open = |target: &str| {
        let target = target.to_owned();
        async move {
            let ledger = Ledger::open(&target)
                .await
                .map_err(|e| format!("`--ledger {target}`: {e}"))?;
            ledger
                .ping()
                .await
                .map_err(|e| format!("`--ledger {target}`: {e}"))?;
            Ok::<Ledger, String>(ledger)
        }
    };
    runtime.block_on(async {
        match command {
            GrantsCommand::Recheck { ledger, policy } => {
                let engine = compile(&policy)?;
                let ledger = open(&ledger).await?;
                let report = ledger
                    .redecide_live(&Selector::default(), usize::MAX, |page, now| {
                        let changes: Vec<_> = page
                            .iter()
                            .filter_map(|grant| redecide(&engine, grant, None, REDECISION, now))
                            .collect();
                        std::future::ready(changes)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let mut body = report.to_json();
                if let Some(map) = body.as_object_mut() {
                    map.insert("policy_digest".to_owned(), Value::from(engine.digest()));
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?
                );
                Ok(0)
            }
            GrantsCommand::List {
                ledger,
                subject,
                task,
                state,
                limit,
                after,
            } => {
                let state = match state.as_deref() {
                    None => None,
                    Some(text) => Some(GrantState::parse(text).ok_or_else(|| {
                        format!("`--state {text}` is not a grant state: use live, expired or revoked")
                    })?),
                };
                if !(1..=1000).contains(&limit) {
                    return Err(format!("`--limit {limit}` must be from 1 to 1000"));
                }
                let ledger = open(&ledger).await?;
                let now = ledger.now();
                let filter = Filter {
                    subject,
                    task,
                    grant: None,
                    state,
                    after,
                    limit,
                };
                let grants = ledger.list(&filter, now).await.map_err(|e| e.to_string())?;
                let next = (grants.len() == limit)
                    .then(|| grants.last().map(|g| g.grant_id.clone()))
                    .flatten();
                let grants: Vec<Value> = grants.iter().map(|g| g.to_json(now)).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"grants": grants, "next": next}))
                        .map_err(|e| e.to_string())?
                );
                Ok(0)
            }
            GrantsCommand::Show { grant_id, ledger } => {
                let ledger = open(&ledger).await?;
                let now = ledger.now();
                match ledger.get(&grant_id).await.map_err(|e| e.to_string())? {
                    Some(grant) => {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&grant.to_json(now))
                                .map_err(|e| e.to_string())?
                        );
                        Ok(0)
                    }
                    None => {
                        eprintln!("no grant `{grant_id}` in the ledger");
                        Ok(1)
                    }
                }
            }
            GrantsCommand::Revoke {
                grant_id,
                ledger,
                reason,
            } => {
                let ledger = open(&ledger).await?;
                let now = ledger.now();
                match ledger
                    .revoke(&grant_id, "cli", &reason, now)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some((grant, revoked)) => {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &serde_json::json!({"revoked": revoked, "grant": grant.to_json(now)})
                            )
                            .map_err(|e| e.to_string())?
                        );
                        Ok(0)
                    }
                    None => {
                        eprintln!("no grant `{grant_id}` in the ledger");
                        Ok(1)
                    }
                }
            }
        }
    })
}
