//! writ: policy-as-code for issuing short-lived credentials to non-human
//! identities.
//!
//! A request (who asks, for what, where, how sensitive, through which
//! broker) goes in; a decision comes out: allow or deny, the scope and TTL
//! to mint, the obligations the broker must honour, and a trace.
//!
//! The pipeline: [`source`] → [`lexer`] → [`parser`] → [`ast`] →
//! [`check`] → [`ir`] → [`compile`] (the decision tree) → [`authorize`], which
//! uses [`eval`] for each rule.
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ast;
pub mod authorize;
pub mod check;
pub mod compile;
pub mod decision;
pub mod diagnostics;
pub mod engine;
pub mod eval;
pub mod explain;
pub mod fixture;
pub mod fmt;
pub mod ir;
pub mod lexer;
pub mod lint;
pub mod parser;
mod render;
pub mod request;
pub mod scope;
pub mod server;
pub mod source;
#[doc(hidden)]
pub mod testgen;

pub use decision::{Decision, Effect};
pub use diagnostics::Diagnostics;
pub use engine::Engine;
pub use request::Request;
