//! The fast way to read one request: straight from the text into
//! [`Request`], in one pass, with the JSON reader's own checks (duplicate
//! keys at any level, nesting deeper than the limit, one document and
//! nothing after it) made on the way.
//!
//! It gives no errors: any document it does not take (a wrong type, a
//! `null` in a named field, an unknown key, a duplicate key, bad syntax)
//! reads as `None`, and the caller reads the text again the careful way
//! (`json::check_str`, serde, then the value path), which names what is
//! wrong. So a request this reader takes is exactly one that way takes,
//! read into the same `Request`; `tests::the_fast_reader_agrees`,
//! `Request`'s `request_parses_agree` and, on random documents,
//! `tests::one_pass_reads_as_the_two_passes_did` check it.
//!
//! Named fields are matched here by name; a key that is not matched goes
//! to the object's other attributes, unless the table ([`Dim::fields`])
//! names it, in which case the reader gives up (a field added to the
//! table and not here is read the careful way, never misfiled).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::json::{JsonError, Key, Node, Path};
use crate::schema::{Dim, Environment, Intent, Objects, Request, Requested, Resource, Subject};
use crate::sensitivity::Sensitivity;

/// Reads `text` (its byte order mark already skipped) as a request, or
/// `None` when anything is not as a valid request has it.
pub(crate) fn read(text: &str, max_depth: usize) -> Option<Request> {
    let fault = RefCell::new(None);
    let reader = Reader {
        fault: &fault,
        max_depth,
    };
    read_with(text, reader)
}

/// Reads one request from `deserializer` (a decision log line's
/// `request`), with the same checks as [`read`]; the error is a plain
/// message, for a caller that has a slower way to say what is wrong.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
    max_depth: usize,
) -> Result<Request, D::Error> {
    let fault = RefCell::new(None);
    let mut request = Request::default();
    deserializer.deserialize_map(RootVisitor {
        reader: Reader {
            fault: &fault,
            max_depth,
        },
        aside: None,
        into: &mut request,
    })?;
    Ok(request)
}

/// Reads a `POST /v1/grants` body (its byte order mark already skipped):
/// a request with, beside its own keys, an optional `credential_ref`
/// string, which is set aside (it is not the request's). `None` as for
/// [`read`], and also when `credential_ref` is there but not a string or
/// twice: the caller reads the body the careful way, which names what is
/// wrong.
pub(crate) fn read_grant(text: &str, max_depth: usize) -> Option<(Request, Option<String>)> {
    let fault = RefCell::new(None);
    let aside = RefCell::new(None);
    let reader = Reader {
        fault: &fault,
        max_depth,
    };
    let mut request = Request::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer
        .deserialize_map(RootVisitor {
            reader,
            aside: Some(&aside),
            into: &mut request,
        })
        .ok()?;
    deserializer.end().ok()?;
    Some((request, aside.into_inner()))
}

fn read_with(text: &str, reader: Reader<'_>) -> Option<Request> {
    let mut request = Request::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer
        .deserialize_map(RootVisitor {
            reader,
            aside: None,
            into: &mut request,
        })
        .ok()?;
    deserializer.end().ok()?;
    Some(request)
}

/// What every object of the request needs: the reader's fault slot (the
/// value reader writes its own errors there; they are not read) and the
/// depth limit.
#[derive(Clone, Copy)]
struct Reader<'a> {
    fault: &'a RefCell<Option<JsonError>>,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    /// A checked [`Value`] at `level` (the root is 1).
    fn value(self, level: usize) -> Node<'a> {
        Node {
            level,
            path: &Path::Root,
            max_depth: self.max_depth,
            fault: self.fault,
        }
    }

    /// An object at `level`: refused when it is too deep.
    fn enter<E: de::Error>(self, level: usize) -> Result<(), E> {
        if level > self.max_depth {
            return Err(E::custom("too deep"));
        }
        Ok(())
    }
}

fn give_up<E: de::Error>(why: &str) -> E {
    E::custom(why)
}

/// Reads the next key, borrowed from the text where it has no escapes.
///
/// No list of the keys seen is kept: a named field that is read is
/// `Some` (a `null` there is refused), so a second one is found by its
/// field, and another attribute's second occurrence by the map it goes
/// into ([`keep`]).
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    map.next_key_seed(Key)
}

/// Fills a named field that must not have been read yet.
fn fill<T, E: de::Error>(field: &mut Option<T>, value: T) -> Result<(), E> {
    if field.is_some() {
        return Err(give_up("duplicate key"));
    }
    *field = Some(value);
    Ok(())
}

/// Keeps another attribute, refusing a key the map has already.
fn keep<E: de::Error>(
    map: &mut IndexMap<String, Value>,
    key: Cow<'_, str>,
    value: Value,
) -> Result<(), E> {
    match map.entry(key.into_owned()) {
        indexmap::map::Entry::Occupied(_) => Err(give_up("duplicate key")),
        indexmap::map::Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
    }
}

/// Marks one of the request's own keys as read, refusing it a second time.
fn once<E: de::Error>(read: &mut u8, key: u8) -> Result<(), E> {
    if *read & key != 0 {
        return Err(give_up("duplicate key"));
    }
    *read |= key;
    Ok(())
}

/// The request object's reader, into `into` (a default request); with
/// `aside`, it also takes a `credential_ref` string there (a `POST
/// /v1/grants` body).
///
/// The request and its objects are filled where they are, not built and
/// returned: a request is 928 bytes, and each return moved it (or an
/// object) once more (this reader took about 1,400 instructions an answer
/// fewer so, docs/performance.md "Server CPU, round 32"). A read that
/// fails leaves `into` half filled; the callers drop it.
struct RootVisitor<'a, 'r> {
    reader: Reader<'a>,
    aside: Option<&'a RefCell<Option<String>>>,
    into: &'r mut Request,
}

impl<'de> Visitor<'de> for RootVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.reader;
        reader.enter(1)?;
        let request = self.into;
        // The objects read so far, a bit each (the scalars are `Some`): an
        // object is read only into a default one.
        let mut read = 0u8;
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "subject" => {
                    once(&mut read, 1)?;
                    map.next_value_seed(Open::new(reader, &mut request.subject))?;
                }
                "action" => fill(&mut request.action, map.next_value()?)?,
                "resource" => {
                    once(&mut read, 2)?;
                    map.next_value_seed(Open::new(reader, &mut request.resource))?;
                }
                "intent" => {
                    once(&mut read, 4)?;
                    map.next_value_seed(Open::new(reader, &mut request.intent))?;
                }
                "environment" => {
                    once(&mut read, 8)?;
                    map.next_value_seed(Open::new(reader, &mut request.environment))?;
                }
                "sensitivity" => {
                    fill(&mut request.sensitivity, map.next_value::<Sensitivity>()?)?
                }
                "requested" => {
                    once(&mut read, 16)?;
                    map.next_value_seed(Open::new(reader, &mut request.requested))?;
                }
                "context" => {
                    once(&mut read, 32)?;
                    request.context = map.next_value_seed(Context(reader))?;
                }
                "credential_ref" if self.aside.is_some() => {
                    let value: String = map.next_value()?;
                    if let Some(slot) = self.aside {
                        fill(&mut *slot.borrow_mut(), value)?;
                    }
                }
                _ => return Err(give_up("not a field of a request")),
            }
        }
        Ok(())
    }
}

/// One of the request's objects (level 2), read field by field.
trait Object: Default {
    /// The object's dimension.
    const DIM: Dim;

    /// Reads the value of `key` if it is a named field; `Ok(false)` if it
    /// is not.
    fn named<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        reader: Reader<'_>,
    ) -> Result<bool, A::Error>;

    /// Where the object keeps attributes it does not name; `requested`
    /// has none (`deny_unknown_fields`).
    fn extra(&mut self) -> Option<&mut IndexMap<String, Value>>;

    /// Keeps another attribute, or gives up where there is no place for it
    /// or the key is there already.
    fn other<E: de::Error>(&mut self, key: Cow<'_, str>, value: Value) -> Result<(), E> {
        let extra = self.extra().ok_or_else(|| give_up("not a field"))?;
        keep(extra, key, value)
    }
}

/// Reads named fields whose types read themselves.
macro_rules! named_fields {
    ($self:ident, $key:ident, $map:ident, { $($field:ident),* }) => {
        match $key {
            $( stringify!($field) => fill(&mut $self.$field, $map.next_value()?)?, )*
            _ => return Ok(false),
        }
    };
}

/// An object whose named fields all read themselves and which keeps the
/// rest in `extra`.
macro_rules! plain_object {
    ($ty:ident, $dim:expr, { $($field:ident),* }) => {
        impl Object for $ty {
            const DIM: Dim = $dim;

            fn named<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
                _: Reader<'_>,
            ) -> Result<bool, A::Error> {
                named_fields!(self, key, map, { $($field),* });
                Ok(true)
            }

            fn extra(&mut self) -> Option<&mut IndexMap<String, Value>> {
                Some(&mut self.extra)
            }
        }
    };
}

impl Object for Subject {
    const DIM: Dim = Dim::Subject;

    fn named<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        reader: Reader<'_>,
    ) -> Result<bool, A::Error> {
        if key == "act" {
            // A list of objects: read as a checked value, then typed.
            let value = map.next_value_seed(reader.value(3))?;
            let act = <Objects as serde::Deserialize>::deserialize(value).map_err(|_| give_up("act"))?;
            fill(&mut self.act, act)?;
            return Ok(true);
        }
        named_fields!(self, key, map, {
            id, kind, auth, attested, shared, owner, environment, token, state
        });
        Ok(true)
    }

    fn extra(&mut self) -> Option<&mut IndexMap<String, Value>> {
        Some(&mut self.extra)
    }
}

plain_object!(Resource, Dim::Resource, { id, kind, owner });

plain_object!(Intent, Dim::Intent, { task, id, objective, objective_changed, actions });

plain_object!(Environment, Dim::Environment, { name, broker, time });

impl Object for Requested {
    const DIM: Dim = Dim::Requested;

    fn named<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _: Reader<'_>,
    ) -> Result<bool, A::Error> {
        named_fields!(self, key, map, { scope, ttl });
        Ok(true)
    }

    fn extra(&mut self) -> Option<&mut IndexMap<String, Value>> {
        None
    }
}

/// The seed of one of the request's objects, read into `into` (a default
/// object, not read yet).
struct Open<'a, 'r, T> {
    reader: Reader<'a>,
    into: &'r mut T,
}

impl<'a, 'r, T> Open<'a, 'r, T> {
    fn new(reader: Reader<'a>, into: &'r mut T) -> Self {
        Open { reader, into }
    }
}

impl<'de, T: Object> DeserializeSeed<'de> for Open<'_, '_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Object> Visitor<'de> for Open<'_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.reader;
        reader.enter(2)?;
        let object = self.into;
        while let Some(key) = next_key(&mut map)? {
            if object.named(&key, &mut map, reader)? {
                continue;
            }
            if T::DIM.fields().any(|def| def.field == key) {
                // A field of the table this reader does not know.
                return Err(give_up("a named field read the careful way"));
            }
            let value = map.next_value_seed(reader.value(3))?;
            object.other(key, value)?;
        }
        Ok(())
    }
}

/// The seed of `context`: any keys, checked values.
struct Context<'a>(Reader<'a>);

impl<'de> DeserializeSeed<'de> for Context<'_> {
    type Value = IndexMap<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Context<'_> {
    type Value = IndexMap<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let reader = self.0;
        reader.enter(2)?;
        let mut out = IndexMap::new();
        while let Some(key) = next_key(&mut map)? {
            let value = map.next_value_seed(reader.value(3))?;
            keep(&mut out, key, value)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, subsequence, Index};
    use proptest::strategy::ValueTree;
    use serde_json::json;

    use super::*;
    use crate::request::json::{check_str, JsonError, Limits};
    use crate::request::{Prepared, RequestError, MAX_JSON_DEPTH};
    use crate::schema::{Ty, ATTRIBUTES};

    /// What the careful way reads: the checking pass, then serde's typed
    /// parse (the reader before this one).
    fn careful(text: &str) -> Option<Request> {
        let limits = Limits {
            max_bytes: usize::MAX,
            max_depth: MAX_JSON_DEPTH,
        };
        let body = check_str(text, limits).ok()?;
        if !body.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<Request>(body).ok()
    }

    #[track_caller]
    fn agree(text: &str) {
        assert_eq!(read(text, MAX_JSON_DEPTH), careful(text), "{text}");
    }

    #[test]
    fn the_fast_reader_agrees() {
        let many_keys: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        let deep = format!("{{\"context\":{{\"a\":{}{}}}}}", "[".repeat(61), "]".repeat(61));
        let too_deep = format!("{{\"context\":{{\"a\":{}{}}}}}", "[".repeat(62), "]".repeat(62));
        for text in [
            r#"{}"#,
            include_str!("../../examples/ci-deploy.json"),
            r#"{"subject":{"id":"a","x":[1,{"y":2}]},"action":"read","sensitivity":"internal"}"#,
            r#"{"subject":{"attested":"yes"}}"#,
            r#"{"subject":{"attested":null}}"#,
            r#"{"subject":[{"id":"x"}]}"#,
            r#"{"subject":{"act":[{"id":"a","kind":"agent"}]}}"#,
            r#"{"subject":{"act":[{"id":"a","id":"b"}]}}"#,
            r#"{"subject":{"act":[{"id":"a"},"b"]}}"#,
            r#"{"subject":{"act":{"id":"a"}}}"#,
            r#"{"subject":{"id":"a","id":"a"}}"#,
            r#"{"subject":{"x":{"y":1,"y":2}}}"#,
            r#"{"subject":{"x":null}}"#,
            r#"{"subject":{"\u0069d":"a"}}"#,
            r#"{"requested":[["read:db://x"],60]}"#,
            r#"{"requested":{"scope":["read:db://x"],"ttl":60}}"#,
            r#"{"requested":{"ttl":60,"extra":1}}"#,
            r#"{"requested":{"ttl":1.5}}"#,
            r#"{"requested":{"ttl":-1}}"#,
            r#"{"requested":{"ttl":18446744073709551616}}"#,
            r#"{"requested":{"scope":["a",null]}}"#,
            r#"{"intent":["deploy"]}"#,
            r#"{"intent":{"actions":["read","write"],"objective_changed":false}}"#,
            r#"{"environment":{"time":null,"name":"prod"}}"#,
            r#"{"context":{"a":{"b":[null,true]},"n":-0,"f":1.5e3,"u":18446744073709551615}}"#,
            r#"{"context":{"a":1,"a":2}}"#,
            r#"{"context":[]}"#,
            r#"{"context":null}"#,
            r#"{"sensitivity":null}"#,
            r#"{"sensitivity":"Public"}"#,
            r#"{"sensitivity":"restricted"}"#,
            r#"{"action":null,"resource":{"id":null}}"#,
            r#"{"action":"a","action":"a"}"#,
            r#"{"subject":{"id":"a","id2":"b"},"resource":{"kind":"db","owner":7}}"#,
            r#"{"unknown":1}"#,
            r#"{} x"#,
            r#"{"a":"#,
            r#"[]"#,
            r#""x""#,
            r#"null"#,
            &format!("{{\"context\":{{{many_keys}\"z\":0}}}}"),
            &format!("{{\"context\":{{{many_keys}\"k3\":0}}}}"),
            &deep,
            &too_deep,
        ] {
            agree(text);
        }
        assert!(read(&deep, MAX_JSON_DEPTH).is_some());
        assert!(read(include_str!("../../examples/ci-deploy.json"), MAX_JSON_DEPTH).is_some());
    }

    /// A JSON document as text, built so that it can say what serde_json's
    /// `Value` cannot: the same key twice in one object, nesting past the
    /// limit, a leading byte order mark, something after the document.
    #[derive(Debug, Clone)]
    enum Doc {
        /// A scalar or any text written as it is.
        Raw(&'static str),
        Array(Vec<Doc>),
        /// Keys in order, repeats kept.
        Object(Vec<(&'static str, Doc)>),
        /// `depth` arrays around a document.
        Nest(usize, Box<Doc>),
    }

    impl Doc {
        fn write(&self, out: &mut String) {
            match self {
                Doc::Raw(text) => out.push_str(text),
                Doc::Array(items) => {
                    out.push('[');
                    for (index, item) in items.iter().enumerate() {
                        if index > 0 {
                            out.push(',');
                        }
                        item.write(out);
                    }
                    out.push(']');
                }
                Doc::Object(entries) => {
                    out.push('{');
                    for (index, (key, value)) in entries.iter().enumerate() {
                        if index > 0 {
                            out.push(',');
                        }
                        out.push('"');
                        out.push_str(key);
                        out.push_str("\":");
                        value.write(out);
                    }
                    out.push('}');
                }
                Doc::Nest(depth, inner) => {
                    out.push_str(&"[".repeat(*depth));
                    inner.write(out);
                    out.push_str(&"]".repeat(*depth));
                }
            }
        }
    }

    /// Scalars of every type a field may want, and of the wrong ones.
    const SCALARS: &[&str] = &[
        "null", "true", "false", "0", "-0", "-1", "60", "3600", "1.5", "1e3",
        "18446744073709551615", "18446744073709551616", "\"\"", "\"a\"", "\"prod\"",
        "\"internal\"", "\"Public\"", "\"restricted\"", "\"2026-11-22T10:00:00Z\"",
        "\"yesterday\"", "\"read:db://x\"", "\"read:a//b\"", "\"\\u00e9\\n\"",
    ];

    /// Keys of the request's objects: their named fields, an escaped `id`,
    /// attributes no object names.
    const KEYS: &[&str] = &[
        "id", "kind", "auth", "attested", "shared", "owner", "environment", "token",
        "state", "act", "task", "objective", "objective_changed", "actions", "name",
        "broker", "time", "scope", "ttl", "x", "y", "\\u0069d", "",
    ];

    /// The request's own keys, and one it does not have.
    const TOP: &[&str] = &[
        "subject", "action", "resource", "intent", "environment", "sensitivity",
        "requested", "context", "unknown",
    ];

    /// Any JSON: a scalar, an array, an object whose keys may repeat, now
    /// and then a nest of 55 to 65 arrays (past the limit of 64 from where
    /// an attribute's value starts at level 3, or not).
    fn any_doc() -> BoxedStrategy<Doc> {
        let leaf = prop_oneof![
            20 => select(SCALARS).prop_map(Doc::Raw),
            1 => (55usize..66, select(SCALARS)).prop_map(|(depth, leaf)| {
                Doc::Nest(depth, Box::new(Doc::Raw(leaf)))
            }),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Doc::Array),
                vec((select(KEYS), inner), 0..5).prop_map(Doc::Object),
            ]
        })
        .boxed()
    }

    fn strings(pool: &'static [&'static str]) -> BoxedStrategy<Doc> {
        select(pool).prop_map(Doc::Raw).boxed()
    }

    /// A value of the type `key` wants, mostly.
    fn value_for(key: &'static str) -> BoxedStrategy<Doc> {
        let good = match key {
            "attested" | "shared" | "objective_changed" => strings(&["true", "false"]),
            "ttl" => strings(&["60", "3600", "0", "1.5", "-1", "18446744073709551616"]),
            "time" => strings(&["\"2026-11-22T10:00:00Z\"", "\"yesterday\"", "\"2026-11-22\""]),
            "scope" | "actions" => vec(
                strings(&["\"read:db://x\"", "\"deploy:k8s://a/b\"", "\"read:a//b\""]),
                0..3,
            )
            .prop_map(Doc::Array)
            .boxed(),
            "act" => vec(
                vec(
                    (select(&["id", "kind", "x"][..]), strings(&["\"a\"", "\"agent\""])),
                    0..3,
                )
                .prop_map(Doc::Object),
                0..3,
            )
            .prop_map(Doc::Array)
            .boxed(),
            "sensitivity" => strings(&["\"internal\"", "\"restricted\"", "\"Public\""]),
            "x" | "y" | "" | "context" => any_doc(),
            _ => strings(&["\"a\"", "\"prod\"", "\"spiffe://x/y\"", "\"\\u00e9\""]),
        };
        prop_oneof![8 => good, 1 => any_doc()].boxed()
    }

    /// An object of distinct keys from `keys` in any order, each with a
    /// value from `value`, and now and then one of them again.
    fn object_of(
        keys: &'static [&'static str],
        value: fn(&'static str) -> BoxedStrategy<Doc>,
    ) -> BoxedStrategy<Doc> {
        subsequence(keys, 0..keys.len().min(6))
            .prop_shuffle()
            .prop_flat_map(move |keys| {
                let entries: Vec<_> = keys
                    .iter()
                    .map(|&key| value(key).prop_map(move |doc| (key, doc)))
                    .collect();
                let again = prop::option::weighted(0.1, (any::<Index>(), any::<Index>()));
                (entries, again)
            })
            .prop_flat_map(move |(entries, again)| {
                let repeat = match again {
                    Some((which, at)) if !entries.is_empty() => {
                        let key = entries[which.index(entries.len())].0;
                        Some((key, at.index(entries.len() + 1)))
                    }
                    _ => None,
                };
                let value = match repeat {
                    Some((key, _)) => value(key).prop_map(Some).boxed(),
                    None => Just(None).boxed(),
                };
                (Just(entries), Just(repeat), value)
            })
            .prop_map(|(mut entries, repeat, doc)| {
                if let (Some((key, at)), Some(doc)) = (repeat, doc) {
                    entries.insert(at, (key, doc));
                }
                Doc::Object(entries)
            })
            .boxed()
    }

    /// A value for one of the request's own keys.
    fn top_value(key: &'static str) -> BoxedStrategy<Doc> {
        match key {
            "action" => prop_oneof![8 => strings(&["\"deploy\"", "\"read\""]), 1 => any_doc()]
                .boxed(),
            "sensitivity" => value_for(key),
            "context" => prop_oneof![
                8 => vec((select(KEYS), any_doc()), 0..4).prop_map(Doc::Object),
                1 => any_doc(),
            ]
            .boxed(),
            _ => prop_oneof![8 => object_of(KEYS, value_for), 1 => any_doc()].boxed(),
        }
    }

    /// A request's text: mostly well typed, with repeated keys at every
    /// level, too deep, wrong types, a byte order mark or blanks before,
    /// something after.
    fn any_request() -> impl Strategy<Value = String> {
        let prefix = select(&["", "", "", "", " \n", "\u{feff}"][..]);
        let suffix = select(&["", "", "", "", "", " ", " x", "}", "{}"][..]);
        (prefix, object_of(TOP, top_value), suffix).prop_map(|(prefix, doc, suffix)| {
            let mut text = prefix.to_owned();
            doc.write(&mut text);
            text.push_str(suffix);
            text
        })
    }

    /// What a request's reading comes to, for counting the kinds of
    /// documents [`any_request`] makes.
    fn outcome(result: &Result<(Request, Prepared), RequestError>) -> &'static str {
        match result {
            Ok(_) => "accepted",
            Err(RequestError::Json(JsonError::DuplicateKey { .. })) => "duplicate key",
            Err(RequestError::Json(JsonError::TooDeep { .. })) => "too deep",
            Err(RequestError::Json(_)) => "not JSON",
            Err(
                RequestError::Invalid { .. }
                | RequestError::BadTime { .. }
                | RequestError::BadScope { .. },
            ) => "not a request",
        }
    }

    /// The random documents of the property below reach every outcome,
    /// each in at least one case in a hundred.
    #[test]
    fn random_requests_reach_every_outcome() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut counts = std::collections::BTreeMap::new();
        let cases = 2000;
        for _ in 0..cases {
            let Ok(tree) = any_request().new_tree(&mut runner) else {
                panic!("the strategy makes a value");
            };
            *counts.entry(outcome(&parse_json_before(&tree.current()))).or_insert(0) += 1;
        }
        for kind in [
            "accepted",
            "duplicate key",
            "too deep",
            "not JSON",
            "not a request",
        ] {
            let count = counts.get(kind).copied().unwrap_or(0);
            assert!(count * 100 >= cases, "{kind}: {count} of {cases} ({counts:?})");
        }
    }

    /// `Request::parse_json` as it was before this reader: the checking
    /// pass, serde's typed parse, the value path for a refused request.
    fn parse_json_before(text: &str) -> Result<(Request, Prepared), RequestError> {
        let limits = Limits {
            max_bytes: usize::MAX,
            max_depth: MAX_JSON_DEPTH,
        };
        let body = check_str(text, limits)?;
        if body.trim_start().starts_with('{') {
            if let Ok(request) = serde_json::from_str::<Request>(body) {
                let prepared = request.validate()?;
                return Ok((request, prepared));
            }
        }
        Request::from_value(crate::request::json::read_str(text, limits)?)
    }

    proptest! {
        // Failing cases are kept beside this file
        // (`src/request/typed.proptest-regressions`), as the integration
        // tests keep theirs beside them.
        #![proptest_config(ProptestConfig {
            cases: 2000,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

        /// On random documents (valid requests, wrong types, repeated keys
        /// at any depth, too deep, a mark before, something after), the
        /// one-pass reader takes exactly what the checking pass and serde
        /// took, into the same request with its keys in the same order, and
        /// `Request::parse_json` gives the same answer and the same error.
        #[test]
        fn one_pass_reads_as_the_two_passes_did(text in any_request()) {
            let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let fast = read(body, MAX_JSON_DEPTH);
            let slow = careful(body);
            prop_assert_eq!(&fast, &slow);
            if let (Some(fast), Some(slow)) = (&fast, &slow) {
                let fast = serde_json::to_string(fast).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let slow = serde_json::to_string(slow).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(fast, slow);
            }
            let now = Request::parse_json(&text);
            let before = parse_json_before(&text);
            prop_assert_eq!(&now, &before);
            if let Err(error) = &now {
                prop_assert_eq!(error.to_string(), before.map(|_| ()).unwrap_err().to_string());
            }
        }
    }

    /// Every attribute of the table, with a value of its type, is read by
    /// this reader into its field (not given up on, not misfiled).
    #[test]
    fn every_named_field_is_read_here() {
        for def in ATTRIBUTES {
            let good = match def.ty {
                Ty::Str => json!("v"),
                Ty::Bool => json!(true),
                Ty::Dur => json!(60),
                Ty::Level => json!("internal"),
                Ty::Time => json!("2026-11-22T10:00:00Z"),
                Ty::StrList => json!(["read:x"]),
                Ty::List => json!([{"id": "a", "kind": "agent"}]),
                Ty::Num | Ty::Any => continue,
            };
            let text = match def.dim {
                Some(Dim::Context) => continue,
                Some(dim) => json!({ dim.name(): { def.field: good } }),
                None => json!({ def.field: good }),
            }
            .to_string();
            let fast = read(&text, MAX_JSON_DEPTH);
            assert!(fast.is_some(), "{}: given up", def.path);
            assert_eq!(fast, careful(&text), "{}", def.path);
        }
    }
}
