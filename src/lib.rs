//! writ: policy-as-code for issuing short-lived credentials to non-human
//! identities.
//!
//! A request (who asks, for what, where, how sensitive, through which
//! broker) goes in; a decision comes out: allow or deny, the scope and TTL
//! to mint, the obligations the broker must honour, and a trace.
//!
//! The pipeline (crate-private modules): `source` → `lexer` → `parser` →
//! `ast` → `check` → `ir` → `compile` (the decision tree) → `authorize`,
//! which uses `eval` for each rule, and `render`s the decision.
//!
//! ```
//! use writ::{Engine, Request};
//!
//! let policy = r#"
//!     @id("read-own")
//!     permit if action == "read" and subject.owner == resource.owner
//!       grant ["read:{resource.id}"] for 15m;
//! "#;
//! let engine = Engine::compile([("example.writ", policy)], None).expect("valid policy");
//! let request = Request::from_json(r#"{
//!     "subject": {"owner": "payments"},
//!     "action": "read",
//!     "resource": {"id": "db://payments/orders", "owner": "payments"}
//! }"#).expect("valid request");
//! let decision = engine.decide(&request);
//! assert!(decision.is_allow());
//! assert_eq!(decision.scope, ["read:db://payments/orders"]);
//! assert_eq!(decision.ttl, 900);
//! ```
//!
//! # Features
//!
//! | feature | what it adds | pulls in |
//! |---|---|---|
//! | (none) | the engine: everything listed below | logos, miette, serde, time, sha2, walkdir, strsim |
//! | `identity` | `identity`: verifying `subject.token` against a trust file | jsonwebtoken (ring), base64 |
//! | `server` | [`server`]: `writ serve` as a library; implies `identity` and `ledger` | tokio, axum, hyper, arc-swap, uuid, nix |
//! | `ledger` | [`ledger`]: the grant ledger (SQLite, PostgreSQL) for in-process brokers | tokio, uuid, rusqlite, tokio-postgres, deadpool-postgres |
//! | `cli` (default) | `cli`: the `writ` command line; implies `server` | clap, mimalloc |
//! | `testgen` | a random policy generator for tests, benches, fuzzing | — |
//! | `internals` | the pipeline's modules, hidden, for writ's own tests | — |
//!
//! The default features are the binary's, so that `cargo run -- eval ...`
//! and `cargo install` work; a program that embeds the engine depends on
//! `writ = { version = "0.1", default-features = false }`.
//! `testgen` and `internals` are not an API and may change at any time.
//!
//! # The API
//!
//! Compile a policy set once, decide many times ([`Engine`] is `Send +
//! Sync`):
//!
//! - [`Engine::compile`] from `(name, text)` pairs and optional JSON data;
//!   [`Engine::default_pack`] for the embedded pack ([`DEFAULT_PACK`]).
//!   Errors come back as [`Diagnostics`]:
//!
//!   ```
//!   let error = writ::Engine::compile([("bad.writ", "permit if nobody == 1;")], None)
//!       .expect_err("an unknown name");
//!   assert_eq!(error.codes(), ["writ::check::unknown_name"]);
//!   println!("{}", error.render(false)); // the source, underlined
//!   ```
//!
//! - [`Engine::decide`] a [`Request`] (built in code from [`Subject`],
//!   [`Resource`], [`Intent`], [`Environment`], [`Requested`] and
//!   [`Sensitivity`], or read with [`Request::from_json`], which refuses
//!   what is not a valid request with a [`RequestError`]);
//!   [`Engine::decide_json`] does both:
//!
//!   ```
//!   let engine = writ::Engine::default_pack(None).expect("the pack compiles");
//!   let mut request = writ::Request::default();
//!   request.action = Some("read".into());
//!   request.subject.kind = Some("agent".into());
//!   let decision = engine.decide(&request);
//!   assert!(!decision.is_allow()); // no owner, no intent: denied
//!   let same = engine.decide_json(r#"{"action": "read", "subject": {"kind": "agent"}}"#)
//!       .expect("a valid request");
//!   assert_eq!(same.to_json(), decision.to_json());
//!   assert!(engine.decide_json("{\"action\": 1}").is_err());
//!   ```
//!
//! - The [`Decision`]: [`Effect`], scope, TTL, [`ObligationOut`]s,
//!   reasons, [`ErrorOut`]s and a trace of [`TraceEntry`]s (each with its
//!   [`Outcome`] and, when a condition failed, [`Failed`]); rendered as the
//!   JSON the server answers with by [`Decision::to_json`], and as text by
//!   [`explain`]:
//!
//!   ```
//!   let engine = writ::Engine::default_pack(None).expect("the pack compiles");
//!   let decision = engine.decide(&writ::Request::default());
//!   assert_eq!(decision.decision, writ::Effect::Deny);
//!   assert!(decision.trace.iter().any(|e| e.outcome == writ::Outcome::Matched));
//!   let text = writ::explain(&decision, &engine, writ::Style::new(false));
//!   assert!(text.contains("DENY"));
//!   ```
//!
//! - Tools: [`format_source`] (what `writ fmt` writes), [`lint()`] (what
//!   `writ lint` reports, as [`Finding`]s of a [`Lint`]), and
//!   [`Engine::rule_ids`]:
//!
//!   ```
//!   let formatted = writ::format_source("a.writ", "permit   if action==\"read\";").expect("parses");
//!   assert_eq!(formatted, "permit if action == \"read\";\n");
//!   let engine = writ::Engine::compile([("a.writ", formatted)], None).expect("compiles");
//!   assert_eq!(engine.rule_ids().count(), 1);
//!   assert!(writ::lint(&engine).iter().all(|finding| !finding.rule.is_empty()));
//!   ```
//!
//! - Loading from disk as the CLI and the server do: [`load_policies`]
//!   (`default` is the embedded pack, a directory every `.writ` file below
//!   it, a symlink loop an error) and [`read_data`] (a duplicate key is an
//!   error):
//!
//!   ```
//!   let files = writ::load_policies(&["default".to_owned()], std::path::Path::new("."))
//!       .expect("the pack");
//!   assert_eq!(files.len(), writ::DEFAULT_PACK.len());
//!   assert!(writ::read_data(std::path::Path::new("no-such-file.json")).is_err());
//!   ```
//!
//! - [`limits`]: every size and depth limit the engine enforces.
//!
//! ```
//! assert!(writ::limits::MAX_REQUEST_BYTES >= 1024);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// A few items are used only by the command line, the server or writ's own
// tests (`Engine::decide_prepared`, `lint::CODES`); without those they
// would be reported as unused. (Before the modules went private nothing was
// reported at all: every item was public.)
#![cfg_attr(not(feature = "internals"), allow(dead_code))]

/// Declares modules that are crate-private, or, with the `internals`
/// feature (writ's own tests, benches and fuzz targets), public but hidden
/// from the docs.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal!(
    ast,
    authorize,
    check,
    compile,
    decision,
    diagnostics,
    engine,
    eval,
    explain,
    fmt,
    ir,
    lexer,
    lint,
    load,
    parser,
    replay,
    review,
    request,
    schema,
    scope,
    source,
);

mod allowed;
mod duration;
mod hex;
mod instant;
mod name;
mod render;
mod sensitivity;
mod suggest;

#[cfg(all(feature = "cli", not(feature = "internals")))]
mod fixture;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fixture;

#[cfg(feature = "bundle")]
pub mod bundle;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "identity")]
pub mod identity;
#[cfg(feature = "ledger")]
pub mod ledger;
#[cfg(feature = "lsp")]
pub mod lsp;
#[cfg(feature = "cli")]
pub mod playground;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "testgen")]
#[doc(hidden)]
pub mod testgen;

pub use decision::{
    Decision, Effect, ErrorOut, Errors, Failed, Name, ObligationOut, Obligations, Outcome,
    PolicyRef, Step, TraceEntry,
};
pub use diagnostics::Diagnostics;
pub use engine::{DataError, Engine, DEFAULT_PACK};
pub use explain::{explain, Style};
pub use fmt::format_source;
pub use lint::{lint, Finding, Lint};
pub use load::{load_policies, read_data};
pub use request::{
    Environment, Intent, JsonError, Request, RequestError, Requested, Resource, Sensitivity,
    Subject,
};
pub use schema::Objects;

/// Every limit on what writ accepts, in one place.
pub mod limits {
    pub use crate::engine::limits::{MAX_FILE_BYTES, MAX_RULES};
    pub use crate::parser::limits::{MAX_NESTING, MAX_OPERATORS, MAX_STRING};
    pub use crate::request::{MAX_JSON_DEPTH, MAX_REQUEST_BYTES};
    /// Longest scope item, in bytes.
    pub const MAX_SCOPE_ITEM: usize = crate::scope::MAX_LEN;
    /// Largest request or data file the CLI and the server read, in bytes.
    pub const MAX_INPUT_BYTES: u64 = crate::source::MAX_INPUT_BYTES;
}
