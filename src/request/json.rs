//! The one JSON reader for everything a client sends: `writ eval --request`,
//! fixture files, and the bodies of the four decision endpoints.
//!
//! serde_json alone keeps the last of two equal keys, so `{"attested":
//! false, "attested": true}` would read as attested; whoever checked the
//! first occurrence (a proxy, a log) and writ would disagree. This reader
//! builds a [`Value`] the same way serde_json does, but refuses a key that
//! appears twice in one object, at any level, and refuses nesting deeper
//! than a limit before it recurses any further; both errors name the path.
//! A leading UTF-8 byte order mark is skipped (RFC 8259 section 8.1 lets a
//! parser ignore it); a mark anywhere else is an ordinary syntax error.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use miette::Diagnostic;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// How large and how deep a document may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, in bytes (a byte order mark included).
    pub max_bytes: usize,
    /// Deepest nesting of objects and arrays, the root counting as one.
    pub max_depth: usize,
}

impl Limits {
    /// The limits for one request: [`MAX_REQUEST_BYTES`] and
    /// [`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH).
    pub const REQUEST: Limits = Limits {
        max_bytes: MAX_REQUEST_BYTES,
        max_depth: super::MAX_JSON_DEPTH,
    };
}

/// Largest request document by default, for the CLI and the server
/// (`writ serve --max-body` changes it for the server).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// What the UTF-8 byte order mark looks like on the wire.
const BOM: &str = "\u{feff}";

/// A document the reader refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error, Diagnostic)]
pub enum JsonError {
    /// `""`, `"  \n"`
    #[error("the document is empty; send a JSON object")]
    #[diagnostic(code(writ::json::empty))]
    Empty,
    /// `b"\xff{}"`
    #[error("the document is not UTF-8 (invalid byte at offset {offset})")]
    #[diagnostic(code(writ::json::not_utf8))]
    NotUtf8 {
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// A 2 MiB body against a 1 MiB limit.
    #[error("the document is larger than {limit} bytes")]
    #[diagnostic(code(writ::json::too_large))]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// `{"a":`, `{} {}`
    #[error("not valid JSON: {message}")]
    #[diagnostic(code(writ::json::syntax))]
    Syntax {
        /// serde_json's message, with the line and column.
        message: String,
    },
    /// `{"a": 1, "a": 2}`
    #[error("duplicate key at `{path}`: a key may appear only once in an object")]
    #[diagnostic(code(writ::json::duplicate_key))]
    DuplicateKey {
        /// The second occurrence (`subject.attested`, `[1].subject.id`).
        path: String,
    },
    /// Sixty-five nested arrays.
    #[error("nests deeper than {limit} levels at `{path}`")]
    #[diagnostic(code(writ::json::too_deep))]
    TooDeep {
        /// The limit.
        limit: usize,
        /// The object or array one level too deep.
        path: String,
    },
}

impl JsonError {
    /// True for the errors that mean "this is not JSON at all" (as against
    /// JSON the reader will not take).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            JsonError::Empty | JsonError::NotUtf8 { .. } | JsonError::Syntax { .. }
        )
    }
}

/// Reads one JSON document under `limits`.
pub fn read(bytes: &[u8], limits: Limits) -> Result<Value, JsonError> {
    if bytes.len() > limits.max_bytes {
        return Err(JsonError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| JsonError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    read_str(text, limits)
}

/// [`read`] for text already known to be UTF-8.
pub fn read_str(text: &str, limits: Limits) -> Result<Value, JsonError> {
    let text = prepare(text, limits)?;
    let fault = RefCell::new(None);
    let seed = Node {
        level: 1,
        path: &Path::Root,
        max_depth: limits.max_depth,
        fault: &fault,
    };
    parse_with(text, seed, &fault)
}

/// Checks `text` as [`read_str`] does (size, byte order mark, syntax,
/// duplicate keys, depth) without building anything, and returns the
/// document without its byte order mark, for a typed parse: the fast path
/// for one request, which serde reads straight into writ's types.
pub fn check_str(text: &str, limits: Limits) -> Result<&str, JsonError> {
    let text = prepare(text, limits)?;
    let fault = RefCell::new(None);
    let seed = Scan(Node {
        level: 1,
        path: &Path::Root,
        max_depth: limits.max_depth,
        fault: &fault,
    });
    parse_with(text, seed, &fault)?;
    Ok(text)
}

/// The size limit, the byte order mark, emptiness.
pub(super) fn prepare(text: &str, limits: Limits) -> Result<&str, JsonError> {
    if text.len() > limits.max_bytes {
        return Err(JsonError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let text = text.strip_prefix(BOM).unwrap_or(text);
    if text.trim_start().is_empty() {
        return Err(JsonError::Empty);
    }
    Ok(text)
}

fn parse_with<'de, S: DeserializeSeed<'de>>(
    text: &'de str,
    seed: S,
    fault: &RefCell<Option<JsonError>>,
) -> Result<S::Value, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = seed.deserialize(&mut deserializer).map_err(|error| {
        fault.borrow_mut().take().unwrap_or(JsonError::Syntax {
            message: error.to_string(),
        })
    })?;
    deserializer.end().map_err(|error| JsonError::Syntax {
        message: error.to_string(),
    })?;
    Ok(value)
}

/// Where a value is, kept on the stack while reading and rendered only for
/// an error.
pub(super) enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

/// The longest path an error shows; a deeper one keeps its start.
const MAX_SHOWN_PATH: usize = 120;

impl Path<'_> {
    fn render(&self) -> String {
        let mut text = self.to_string();
        if text.len() > MAX_SHOWN_PATH {
            let mut cut = MAX_SHOWN_PATH;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        text
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("."),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(Path::Root, index) => write!(f, "[{index}]"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// The seed for one value at `level` (the root is level 1).
#[derive(Clone, Copy)]
pub(super) struct Node<'a> {
    pub(super) level: usize,
    pub(super) path: &'a Path<'a>,
    pub(super) max_depth: usize,
    /// The reader's own error, kept aside: serde_json would add a position
    /// to a custom message, and the caller wants the kind.
    pub(super) fault: &'a RefCell<Option<JsonError>>,
}

impl Node<'_> {
    fn fail<E: serde::de::Error>(self, error: JsonError) -> E {
        let message = error.to_string();
        *self.fault.borrow_mut() = Some(error);
        E::custom(message)
    }

    fn enter<E: serde::de::Error>(self) -> Result<(), E> {
        if self.level > self.max_depth {
            return Err(self.fail(JsonError::TooDeep {
                limit: self.max_depth,
                path: self.path.render(),
            }));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::with_capacity(items.size_hint().unwrap_or(0).min(64));
        loop {
            let path = Path::Index(self.path, out.len());
            let child = Node {
                level: self.level + 1,
                path: &path,
                ..self
            };
            match items.next_element_seed(child)? {
                Some(value) => out.push(value),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            let path = Path::Key(self.path, &key);
            if out.contains_key(&key) {
                let path = path.render();
                return Err(self.fail(JsonError::DuplicateKey { path }));
            }
            let child = Node {
                level: self.level + 1,
                path: &path,
                ..self
            };
            let value = entries.next_value_seed(child)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// [`Node`] that only checks: values are skipped, keys are borrowed from
/// the text where they have no escapes.
#[derive(Clone, Copy)]
struct Scan<'a>(Node<'a>);

/// Keys seen in one object: the first few on the stack (most objects of a
/// request have fewer, and then nothing is allocated), then a set (so that
/// a hostile object with many keys stays linear).
struct Seen<'de> {
    few: [Cow<'de, str>; Seen::FEW],
    len: usize,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Seen<'de> {
    const FEW: usize = 16;

    /// No key seen yet.
    fn new() -> Seen<'de> {
        Seen {
            few: Default::default(),
            len: 0,
            many: None,
        }
    }

    /// Adds `key`; false if it was there already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few[..self.len].contains(&key) {
            return false;
        }
        if self.len < Seen::FEW {
            self.few[self.len] = key;
            self.len += 1;
            return true;
        }
        let mut many: HashSet<Cow<'de, str>> = self.few.iter_mut().map(std::mem::take).collect();
        many.insert(key);
        self.many = Some(many);
        true
    }
}

/// A key, borrowed when the text allows.
pub(super) struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let node = self.0;
        node.enter()?;
        let mut index = 0;
        loop {
            let path = Path::Index(node.path, index);
            let child = Scan(Node {
                level: node.level + 1,
                path: &path,
                ..node
            });
            if items.next_element_seed(child)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let node = self.0;
        node.enter()?;
        let mut seen = Seen::new();
        while let Some(key) = entries.next_key_seed(Key)? {
            let path = Path::Key(node.path, &key);
            if !seen.insert(key.clone()) {
                let path = path.render();
                return Err(node.fail(JsonError::DuplicateKey { path }));
            }
            let child = Scan(Node {
                level: node.level + 1,
                path: &path,
                ..node
            });
            entries.next_value_seed(child)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Value, JsonError> {
        read(text.as_bytes(), Limits::REQUEST)
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a":[1,-2,3.5,true,null,"x",{"b":{}}],"c":"\u00e9"}"#;
        let strict = read_text(text).expect("valid");
        let plain: Value = serde_json::from_str(text).expect("valid");
        assert_eq!(strict, plain);
        assert_eq!(strict.to_string(), plain.to_string(), "key order is kept");
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_level() {
        for (text, path) in [
            (r#"{"a":1,"a":2}"#, "a"),
            (
                r#"{"subject":{"attested":false,"id":"x","attested":true}}"#,
                "subject.attested",
            ),
            (r#"[{},{"s":{"k":[{"x":1,"x":1}]}}]"#, "[1].s.k[0].x"),
            (r#"{"context":{"a":{"":1,"":2}}}"#, "context.a."),
        ] {
            assert_eq!(
                read_text(text),
                Err(JsonError::DuplicateKey {
                    path: path.to_owned()
                }),
                "{text}"
            );
        }
        // Equal keys in different objects are fine.
        assert!(read_text(r#"{"a":{"a":1},"b":{"a":2}}"#).is_ok());
        // Keys are compared after unescaping.
        assert!(matches!(
            read_text(r#"{"a":1,"\u0061":2}"#),
            Err(JsonError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn depth_is_limited_with_the_path() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_depth: 3,
        };
        assert!(read(br#"{"a":[{}]}"#, limits).is_ok());
        assert_eq!(
            read(br#"{"a":[{"b":[]}]}"#, limits),
            Err(JsonError::TooDeep {
                limit: 3,
                path: "a[0].b".to_owned()
            })
        );
        // Far over serde_json's own limit: still this reader's error.
        let hostile = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            read(hostile.as_bytes(), Limits::REQUEST),
            Err(JsonError::TooDeep { limit: 64, .. })
        ));
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_and_nothing_else() {
        let with_bom = "\u{feff}{\"a\":1}";
        assert_eq!(read_text(with_bom), read_text("{\"a\":1}"));
        assert!(matches!(
            read_text("{\"a\":1}\u{feff}"),
            Err(JsonError::Syntax { .. })
        ));
        assert!(matches!(
            read_text("\u{feff}\u{feff}{}"),
            Err(JsonError::Syntax { .. })
        ));
        assert_eq!(read_text("\u{feff}"), Err(JsonError::Empty));
        // UTF-16 is not UTF-8.
        assert!(matches!(
            read(b"\xff\xfe{\x00}\x00", Limits::REQUEST),
            Err(JsonError::NotUtf8 { offset: 0 })
        ));
    }

    /// The checking pass and the building pass refuse the same documents
    /// with the same errors.
    #[test]
    fn check_and_read_agree() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_depth: 3,
        };
        let many_keys: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        for text in [
            "{}",
            "\u{feff}[1,{\"a\":[]}]",
            "{\"a\":1,\"a\":2}",
            "{\"a\\u0062\":1,\"ab\":2}",
            "{\"a\":{\"b\":[[]]}}",
            "{\"a\":{\"b\":[1,{\"c\":1,\"c\":1}]}}",
            "[{},{\"x\":1,\"y\":2,\"x\":3}]",
            "{\"a\":1,\"a\":[[[[]]]]}",
            "{\"a\":",
            "{} {}",
            "",
            &format!("{{{many_keys}\"k39\":0}}"),
            &format!("{{{many_keys}\"z\":0}}"),
        ] {
            let read = read_str(text, limits).map(|_| ());
            let check = check_str(text, limits).map(|_| ());
            assert_eq!(read, check, "{text}");
        }
        assert_eq!(check_str("\u{feff} {}", limits), Ok(" {}"));
    }

    #[test]
    fn size_empty_and_syntax() {
        let limits = Limits {
            max_bytes: 4,
            max_depth: 64,
        };
        assert_eq!(
            read(b"[1,2]", limits),
            Err(JsonError::TooLarge { limit: 4 })
        );
        assert_eq!(read_text(" \n"), Err(JsonError::Empty));
        for text in ["{\"a\":", "{} {}", "allow", "{\"a\":1,}"] {
            let error = read_text(text).expect_err(text);
            assert!(error.is_malformed(), "{text}: {error:?}");
        }
    }
}
