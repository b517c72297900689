//! [`Sensitivity`]: the ordered levels a request names and a policy tests.
//! Both the request and the IR use it, so it sits below them.

use serde::{Deserialize, Serialize};

/// An ordered sensitivity level: `public < internal < confidential < restricted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Anyone may read it.
    Public,
    /// Inside the organisation.
    Internal,
    /// Harm if disclosed.
    Confidential,
    /// Serious harm if disclosed.
    Restricted,
}

impl Sensitivity {
    /// All levels, lowest first.
    pub const ALL: [Sensitivity; 4] = [
        Sensitivity::Public,
        Sensitivity::Internal,
        Sensitivity::Confidential,
        Sensitivity::Restricted,
    ];

    /// The level's keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Restricted => "restricted",
        }
    }

    /// The level named by a keyword.
    pub fn from_name(name: &str) -> Option<Sensitivity> {
        Sensitivity::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

/// Read by hand rather than derived, so that a wrong value or type names
/// the four levels (`expected one of the sensitivity levels ...`) instead
/// of serde's generic "string or map".
impl<'de> Deserialize<'de> for Sensitivity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Level;
        impl serde::de::Visitor<'_> for Level {
            type Value = Sensitivity;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "one of the sensitivity levels `public`, `internal`, `confidential`, `restricted`",
                )
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Sensitivity, E> {
                Sensitivity::from_name(value)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(value), &self))
            }
        }
        deserializer.deserialize_str(Level)
    }
}
