//! The decision: contract.md's JSON, as serde types.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A shared, immutable string: rule ids, locations and condition texts in
/// a trace. Cloning it is a reference-count increment, so building a trace
/// does not copy the policy's strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Name(Arc<str>);

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name(Arc::from(text))
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name(Arc::from(text))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        String::deserialize(deserializer).map(Name::from)
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Mint the credential, with the scope, TTL and obligations given.
    Allow,
    /// Do not mint (the default).
    #[default]
    Deny,
}

/// What the broker must do to honour an allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObligationOut {
    /// `approval`, `revoke_on`, `audience`, `log`.
    pub kind: String,
    /// For `revoke_on`: the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// For `audience`: the value to bind the token to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The rule that asked for it.
    pub rule: String,
}

/// An evaluation error, reported and failed closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalError {
    /// The rule being evaluated (`request` for a bad request).
    pub rule: String,
    /// What went wrong.
    pub message: String,
}

/// How a rule fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its condition held (or, for forbid/limit/require, errored: fail closed).
    Matched,
    /// A condition was false.
    NotMatched,
    /// Evaluating it failed.
    Error,
}

/// The condition that stopped a rule, and the value it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// The condition as written.
    pub condition: Name,
    /// The value of the attribute it tested (`null` when missing).
    pub saw: Value,
}

/// One rule considered for the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Rule id.
    pub rule: Name,
    /// `permit`, `forbid`, `limit`, `require`.
    pub kind: Name,
    /// `file:line`.
    pub at: Name,
    /// How it fared.
    pub outcome: Outcome,
    /// For `not_matched`: the first condition that was false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// For `error`, or a matched rule that failed closed: the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it did to the decision, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effect: Vec<String>,
    /// The rule's `because` message, when it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// On default deny: this permit is one of those that came closest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closest: bool,
}

/// Which policy set decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// `sha256:` of the files and data.
    pub digest: Name,
}

/// The full answer to a request (contract.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `allow` or `deny`.
    pub decision: Effect,
    /// Granted scope items; empty on deny.
    pub scope: Vec<String>,
    /// Granted lifetime in seconds; 0 on deny.
    pub ttl: u64,
    /// What the broker must do; empty on deny.
    pub obligations: Vec<ObligationOut>,
    /// The rules that decided.
    pub reasons: Vec<String>,
    /// Requested items no matched permit covered (or a limit removed).
    pub dropped_scope: Vec<String>,
    /// Evaluation errors.
    pub errors: Vec<EvalError>,
    /// The rules considered.
    pub trace: Vec<TraceEntry>,
    /// The policy set.
    pub policy: PolicyRef,
}

impl Decision {
    /// True on allow.
    pub fn is_allow(&self) -> bool {
        self.decision == Effect::Allow
    }

    /// A deny for a request that could not be evaluated at all.
    pub fn rejected(message: String, digest: &str) -> Decision {
        Decision {
            decision: Effect::Deny,
            scope: Vec::new(),
            ttl: 0,
            obligations: Vec::new(),
            reasons: Vec::new(),
            dropped_scope: Vec::new(),
            errors: vec![EvalError {
                rule: "request".to_owned(),
                message,
            }],
            trace: Vec::new(),
            policy: PolicyRef {
                digest: digest.into(),
            },
        }
    }

    /// The decision as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"decision\":\"deny\"}"))
    }

    /// The decision as indented JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|_| String::from("{\"decision\":\"deny\"}"))
    }
}
