//! [`Name`]: the shared string the IR, the evaluator and the decision all
//! use for rule ids, locations and condition texts. It sits below all of
//! them so none imports it from a later stage of the pipeline.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A shared, immutable string: rule ids, locations and condition texts in
/// a trace. Cloning it is a reference-count increment, so building a trace
/// does not copy the policy's strings, and it knows whether its text needs
/// escaping in JSON, so writing a decision copies it without a scan.
#[derive(Clone, Default)]
pub struct Name {
    text: Arc<str>,
    /// No byte of `text` needs escaping in a JSON string.
    plain: bool,
}

impl Name {
    fn new(text: Arc<str>) -> Name {
        let plain = !text.bytes().any(needs_escape);
        Name { text, plain }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when no byte of the text needs escaping in a JSON string.
    pub(crate) fn is_plain(&self) -> bool {
        self.plain
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.text == other.text
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that maps keyed by `Name` look up by `&str`.
        self.text.hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::new(Arc::from(text))
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name::new(Arc::from(text))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.text == **other
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        String::deserialize(deserializer).map(Name::from)
    }
}

/// True for the bytes a JSON string must escape.
pub(crate) fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_and_hash_as_their_text() {
        use std::collections::HashMap;
        let mut map = HashMap::new();
        map.insert(Name::from("a\"b"), 1);
        assert_eq!(map.get("a\"b"), Some(&1));
        let (a, b) = (Name::from("a"), Name::from("b"));
        assert!(a < b);
        assert_eq!(Name::from("x"), Name::from(String::from("x")));
    }
}
