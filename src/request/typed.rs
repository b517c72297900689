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
//! read into the same `Request`; `tests::the_fast_reader_agrees` and
//! `Request`'s `request_parses_agree` check it.
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

use super::json::{JsonError, Key, Node, Path, Seen};
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
    deserializer.deserialize_map(RootVisitor(Reader {
        fault: &fault,
        max_depth,
    }))
}

fn read_with(text: &str, reader: Reader<'_>) -> Option<Request> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let request = deserializer.deserialize_map(RootVisitor(reader)).ok()?;
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

/// Reads the next key, refusing one seen before in the same object.
fn next_key<'de, A: MapAccess<'de>>(
    map: &mut A,
    seen: &mut Seen<'de>,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    let Some(key) = map.next_key_seed(Key)? else {
        return Ok(None);
    };
    if !seen.insert(key.clone()) {
        return Err(give_up("duplicate key"));
    }
    Ok(Some(key))
}

struct RootVisitor<'a>(Reader<'a>);

impl<'de> Visitor<'de> for RootVisitor<'_> {
    type Value = Request;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        let reader = self.0;
        reader.enter(1)?;
        let mut request = Request::default();
        let mut seen = Seen::new();
        while let Some(key) = next_key(&mut map, &mut seen)? {
            match &*key {
                "subject" => request.subject = map.next_value_seed(Open::new(reader))?,
                "action" => request.action = Some(map.next_value()?),
                "resource" => request.resource = map.next_value_seed(Open::new(reader))?,
                "intent" => request.intent = map.next_value_seed(Open::new(reader))?,
                "environment" => {
                    request.environment = map.next_value_seed(Open::new(reader))?
                }
                "sensitivity" => request.sensitivity = Some(map.next_value::<Sensitivity>()?),
                "requested" => request.requested = map.next_value_seed(Open::new(reader))?,
                "context" => request.context = map.next_value_seed(Context(reader))?,
                _ => return Err(give_up("not a field of a request")),
            }
        }
        Ok(request)
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

    /// Keeps another attribute, or gives up where there is no place for it.
    fn other(&mut self, key: String, value: Value) -> Result<(), ()> {
        let extra = self.extra().ok_or(())?;
        extra.insert(key, value);
        Ok(())
    }
}

/// Reads named fields whose types read themselves.
macro_rules! named_fields {
    ($self:ident, $key:ident, $map:ident, { $($field:ident),* }) => {
        match $key {
            $( stringify!($field) => $self.$field = Some($map.next_value()?), )*
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
            self.act = Some(act);
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

/// The seed of one of the request's objects.
struct Open<'a, T> {
    reader: Reader<'a>,
    object: std::marker::PhantomData<T>,
}

impl<'a, T> Open<'a, T> {
    fn new(reader: Reader<'a>) -> Self {
        Open {
            reader,
            object: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Object> DeserializeSeed<'de> for Open<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Object> Visitor<'de> for Open<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let reader = self.reader;
        reader.enter(2)?;
        let mut object = T::default();
        let mut seen = Seen::new();
        while let Some(key) = next_key(&mut map, &mut seen)? {
            if object.named(&key, &mut map, reader)? {
                continue;
            }
            if T::DIM.fields().any(|def| def.field == key) {
                // A field of the table this reader does not know.
                return Err(give_up("a named field read the careful way"));
            }
            let value = map.next_value_seed(reader.value(3))?;
            object
                .other(key.into_owned(), value)
                .map_err(|()| give_up("not a field"))?;
        }
        Ok(object)
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
        let mut seen = Seen::new();
        while let Some(key) = next_key(&mut map, &mut seen)? {
            let value = map.next_value_seed(reader.value(3))?;
            out.insert(key.into_owned(), value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::request::json::{check_str, Limits};
    use crate::request::MAX_JSON_DEPTH;
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
