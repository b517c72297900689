//! The request's attributes, in one table.
//!
//! Every attribute a request names (contract.md) is one line of the
//! [`schema!`] invocation below: its variant, its name, its Rust type on the
//! wire, its static type, and its doc comment. From that one table come
//!
//! - the request structs ([`Subject`], [`Resource`], [`Intent`],
//!   [`Environment`], [`Requested`]), re-exported by `request`, so serde
//!   refuses a wrong type naming the field (on every path a request takes:
//!   the CLI, fixtures and the server's endpoints);
//! - [`Attr`] and its [`Attr::of`], [`Attr::path`], [`Attr::ty`] and
//!   [`Dim::fields`], re-exported by `ir`;
//! - [`Attr::field`], how the evaluator reads an attribute from a request;
//! - [`ATTRIBUTES`] (the checker's did-you-mean candidates and
//!   docs/language.md's reference are checked against it), [`roots`] (the
//!   request fields the checker, request validation and the decision log's
//!   redaction know), and [`static_name`] (the lexer's table of names that
//!   cost no allocation).
//!
//! Adding an attribute is one line in the table (and its entry in
//! docs/language.md); `tests::every_attribute_is_known_everywhere` then
//! checks the checker, the evaluator, request validation and redaction
//! against it.
//!
//! The table is grouped by where the attribute lives: `root` lines are
//! fields of the request itself (`action`; [`Request`] is written by hand
//! below the table, so a new root line also needs its field there, which
//! the contract makes rare), `open` blocks are objects that
//! also carry attributes the contract does not name (kept in `extra`),
//! `closed` blocks are objects that carry nothing else. `context` is
//! free-form (its keys are read by path and typed when the request arrives,
//! so `context.risk_score: "high"` is an evaluation error that fails closed,
//! not a refused request). The order of the lines
//! is the order of [`Attr`]'s variants, which the decision tree uses to break
//! ties; keep new lines at the end of their block.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::sensitivity::Sensitivity;

/// A static type, as far as the checker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A string.
    Str,
    /// A number.
    Num,
    /// `true` or `false`.
    Bool,
    /// A duration in seconds.
    Dur,
    /// A sensitivity level.
    Level,
    /// An instant (RFC 3339 on the wire).
    Time,
    /// A list of strings.
    StrList,
    /// A list of something else or of mixed values.
    List,
    /// Not known until the request arrives.
    Any,
}

impl Ty {
    /// How the type is named in messages.
    pub fn name(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Num => "number",
            Ty::Bool => "bool",
            Ty::Dur => "duration",
            Ty::Level => "sensitivity level",
            Ty::Time => "timestamp",
            Ty::StrList => "list of strings",
            Ty::List => "list",
            Ty::Any => "value",
        }
    }

    /// Whether a JSON value is of this type, for named attributes that
    /// hold JSON (`subject.act`).
    pub fn fits(self, value: &Value) -> bool {
        match self {
            Ty::Str | Ty::Time => value.is_string(),
            Ty::Num => value.is_number(),
            Ty::Bool => value.is_boolean(),
            Ty::Dur => value.is_u64(),
            Ty::Level => value.as_str().and_then(Sensitivity::from_name).is_some(),
            Ty::StrList => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            Ty::List => value.is_array(),
            Ty::Any => true,
        }
    }
}

/// A free attribute a policy set declares (`attribute subject.repository:
/// string "the GitHub repository";`): its path, its type and what it
/// means. The checker types every read of it, and a file that declares
/// attributes may read no free attribute it does not declare.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredAttr {
    /// The dotted path: `subject.repository`, `context.pipeline.protected`.
    pub path: String,
    /// Its type (`object` is declared as [`Ty::Any`], with fields below).
    pub ty: Ty,
    /// How the declaration names the type (`string`, `object`, ...).
    pub ty_name: &'static str,
    /// What it means, as declared.
    pub doc: Option<String>,
    /// `file:line` of the declaration.
    pub at: String,
}

/// The type names a declaration may use, with their types.
pub const DECLARED_TYPES: [(&str, Ty); 8] = [
    ("string", Ty::Str),
    ("number", Ty::Num),
    ("bool", Ty::Bool),
    ("duration", Ty::Dur),
    ("timestamp", Ty::Time),
    ("list", Ty::List),
    ("object", Ty::Any),
    ("any", Ty::Any),
];

/// The type a declaration names, with the name as the table spells it.
pub fn declared_type(name: &str) -> Option<(&'static str, Ty)> {
    DECLARED_TYPES.iter().find(|(n, _)| *n == name).copied()
}

/// The objects of a request that carry attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// `subject`
    Subject,
    /// `resource`
    Resource,
    /// `intent`
    Intent,
    /// `environment`
    Environment,
    /// `requested`
    Requested,
    /// `context`
    Context,
}

impl Dim {
    /// Every dimension, in the order the language lists them.
    pub const ALL: [Dim; 6] = [
        Dim::Subject,
        Dim::Resource,
        Dim::Intent,
        Dim::Environment,
        Dim::Requested,
        Dim::Context,
    ];

    /// The dimension's name in the language.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Subject => "subject",
            Dim::Resource => "resource",
            Dim::Intent => "intent",
            Dim::Environment => "environment",
            Dim::Requested => "requested",
            Dim::Context => "context",
        }
    }

    /// The dimension named `name`.
    pub fn from_name(name: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|dim| dim.name() == name)
    }

    /// The named fields of the dimension, in table order.
    pub fn fields(self) -> impl Iterator<Item = &'static AttrDef> + Clone {
        ATTRIBUTES.iter().filter(move |def| def.dim == Some(self))
    }
}

/// One line of the table.
#[derive(Debug)]
pub struct AttrDef {
    /// The attribute.
    pub attr: Attr,
    /// The object it belongs to; `None` for a field of the request itself.
    pub dim: Option<Dim>,
    /// Its name inside that object (`id`).
    pub field: &'static str,
    /// How it is written (`subject.id`).
    pub path: &'static str,
    /// Its static type.
    pub ty: Ty,
    /// What it means.
    pub doc: &'static str,
}

/// A named attribute's value in a request, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// A string.
    Str(&'a str),
    /// A bool.
    Bool(bool),
    /// Seconds.
    Dur(u64),
    /// A sensitivity level.
    Level(Sensitivity),
    /// A list of strings.
    Strs(&'a [String]),
    /// Any other JSON (a list of objects, a typed key of `context`).
    Json(&'a Value),
}

/// A Rust type a table line may name, and how it is read as a [`Field`].
pub trait FieldType {
    /// The value, borrowed.
    fn field(&self) -> Field<'_>;
}

impl FieldType for String {
    fn field(&self) -> Field<'_> {
        Field::Str(self)
    }
}

impl FieldType for bool {
    fn field(&self) -> Field<'_> {
        Field::Bool(*self)
    }
}

impl FieldType for u64 {
    fn field(&self) -> Field<'_> {
        Field::Dur(*self)
    }
}

impl FieldType for Sensitivity {
    fn field(&self) -> Field<'_> {
        Field::Level(*self)
    }
}

impl FieldType for Vec<String> {
    fn field(&self) -> Field<'_> {
        Field::Strs(self)
    }
}

impl FieldType for Objects {
    fn field(&self) -> Field<'_> {
        Field::Json(&self.0)
    }
}

/// A JSON array of objects (`subject.act`): anything else is refused when
/// the request is read, naming the field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Objects(Value);

impl Objects {
    /// The array.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Objects {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = Vec::<Map<String, Value>>::deserialize(deserializer)?;
        Ok(Objects(Value::Array(
            items.into_iter().map(Value::Object).collect(),
        )))
    }
}

/// Reads a named field that is there: unlike serde's default for
/// `Option`, a `null` is not taken for absent but refused as a wrong type,
/// naming the field. A request never holds `null`.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The request struct of a block (nothing for `root` and `map` blocks).
macro_rules! schema_struct {
    (root $($rest:tt)*) => {};
    (open $(#[doc = $sdoc:literal])* $Struct:ident { $( $(#[doc = $doc:literal])* $field:ident: $rty:ty ),* }) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $Struct {
            $(
                $(#[doc = $doc])*
                #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$rty>,
            )*
            /// Other attributes.
            #[serde(flatten)]
            pub extra: IndexMap<String, Value>,
        }
    };
    (closed $(#[doc = $sdoc:literal])* $Struct:ident { $( $(#[doc = $doc:literal])* $field:ident: $rty:ty ),* }) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $Struct {
            $(
                $(#[doc = $doc])*
                #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$rty>,
            )*
        }
    };
}

/// The dimension of a block.
macro_rules! schema_dim {
    (root $Dim:ident) => {
        None
    };
    ($kind:ident $Dim:ident) => {
        Some(Dim::$Dim)
    };
}

/// How a line's path is written.
macro_rules! schema_path {
    (root $dfield:ident $field:ident) => {
        stringify!($field)
    };
    ($kind:ident $dfield:ident $field:ident) => {
        concat!(stringify!($dfield), ".", stringify!($field))
    };
}

/// How a line's value is read from a request.
macro_rules! schema_read {
    (root $request:ident $dfield:ident $field:ident) => {
        $request.$field.as_ref().map(FieldType::field)
    };
    ($kind:ident $request:ident $dfield:ident $field:ident) => {
        $request.$dfield.$field.as_ref().map(FieldType::field)
    };
}

macro_rules! schema {
    ($(
        $kind:ident $Dim:ident $dfield:ident $(#[doc = $sdoc:literal])* $Struct:ident {
            $( $(#[doc = $doc:literal])* $Var:ident $field:ident: $rty:ty => $ty:ident; )*
        }
    )*) => {
        /// A request attribute the evaluator can read without allocating:
        /// one variant a line of the table, and `Extra` for the rest.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Attr {
            $($( $(#[doc = $doc])* $Var, )*)*
            /// Another attribute of a dimension: `subject.repository`, `context.approval`.
            Extra(Dim, Arc<str>),
        }

        /// The table: every named attribute of a request.
        pub static ATTRIBUTES: &[AttrDef] = &[
            $($(
                AttrDef {
                    attr: Attr::$Var,
                    dim: schema_dim!($kind $Dim),
                    field: stringify!($field),
                    path: schema_path!($kind $dfield $field),
                    ty: Ty::$ty,
                    doc: concat!($($doc),*),
                },
            )*)*
        ];

        impl Attr {
            /// The line of the table, `None` for `Extra`.
            pub fn def(&self) -> Option<&'static AttrDef> {
                ATTRIBUTES.iter().find(|def| def.attr == *self)
            }

            /// The named value of a request, `None` when it is absent or
            /// the attribute is not named by the table.
            #[inline(always)]
            pub fn field<'a>(&self, request: &'a Request) -> Option<Field<'a>> {
                match self {
                    $($( Attr::$Var => schema_read!($kind request $dfield $field), )*)*
                    Attr::Extra(..) => None,
                }
            }
        }

        /// A name the lexer may borrow instead of copying: the
        /// dimensions, the fields and the request's own fields.
        #[allow(unreachable_patterns)]
        pub fn static_name(text: &str) -> Option<&'static str> {
            Some(match text {
                $( stringify!($dfield) => stringify!($dfield), )*
                $($( stringify!($field) => stringify!($field), )*)*
                _ => return None,
            })
        }

        $( schema_struct!($kind $(#[doc = $sdoc])* $Struct { $( $(#[doc = $doc])* $field: $rty ),* }); )*
    };
}

schema! {
    open Subject subject
    /// Who is asking.
    Subject {
        /// The workload identity (SPIFFE ID, OIDC `sub`, service-account name).
        SubjectId id: String => Str;
        /// `workload`, `service`, `ci`, `agent`, `human`, or another word a policy uses.
        SubjectKind kind: String => Str;
        /// How it proved who it is: `spiffe`, `oidc`, `static-secret`, ...
        SubjectAuth auth: String => Str;
        /// The broker verified the identity.
        SubjectAttested attested: bool => Bool;
        /// More than one workload uses the identity.
        SubjectShared shared: bool => Bool;
        /// The accountable team.
        SubjectOwner owner: String => Str;
        /// The environment the workload runs in.
        SubjectEnvironment environment: String => Str;
        /// The workload's identity token, a compact JWS (version 2).
        SubjectToken token: String => Str;
        /// The workload's lifecycle state as the inventory knows it: `active`, `quarantined`, `compromised`, `suspended`, `decommissioned`, ... (version 2).
        SubjectState state: String => Str;
        /// The delegation chain (RFC 8693 `act`), nearest actor first, each an object such as `{"id": ..., "kind": ...}` (version 2).
        SubjectAct act: Objects => List;
    }
    root Root request
    /// The request's own fields.
    Request {
        /// What the credential is for: `read`, `write`, `deploy`, ...
        Action action: String => Str;
    }
    open Resource resource
    /// What the credential is for.
    Resource {
        /// The target; scope items and audiences are built from it.
        ResourceId id: String => Str;
        /// `database`, `bucket`, `cluster`, ...
        ResourceKind kind: String => Str;
        /// The accountable team.
        ResourceOwner owner: String => Str;
    }
    open Intent intent
    /// The task the credential is bound to.
    Intent {
        /// The declared kind of task.
        IntentTask task: String => Str;
        /// The concrete job, pipeline run or agent task.
        IntentId id: String => Str;
        /// An agent's current objective.
        IntentObjective objective: String => Str;
        /// The broker saw the objective change since the task began.
        IntentObjectiveChanged objective_changed: bool => Bool;
        /// The actions the task declared up front, its plan (version 2).
        IntentActions actions: Vec<String> => StrList;
    }
    open Environment environment
    /// Where the request is made.
    Environment {
        /// `dev`, `staging`, `prod`, ...
        EnvironmentName name: String => Str;
        /// The broker asking: the issuance path.
        EnvironmentBroker broker: String => Str;
        /// The decision time, RFC 3339.
        EnvironmentTime time: String => Time;
    }
    root Root request
    /// The request's own fields.
    Request {
        /// How sensitive the target is: `public` < `internal` < `confidential` < `restricted`.
        Sensitivity sensitivity: Sensitivity => Level;
    }
    closed Requested requested
    /// What the requester asks for.
    Requested {
        /// The scope items asked for (`verb:resource`).
        RequestedScope scope: Vec<String> => StrList;
        /// The lifetime asked for, in seconds.
        RequestedTtl ttl: u64 => Dur;
    }
}

/// A credential request (contract.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Who is asking.
    #[serde(default)]
    pub subject: Subject,
    /// `read`, `write`, `deploy`, ...
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<String>,
    /// The target.
    #[serde(default)]
    pub resource: Resource,
    /// What for.
    #[serde(default)]
    pub intent: Intent,
    /// Where.
    #[serde(default)]
    pub environment: Environment,
    /// How sensitive the target is.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sensitivity: Option<Sensitivity>,
    /// What is asked for.
    #[serde(default, deserialize_with = "object_only")]
    pub requested: Requested,
    /// Other facts the broker knows.
    #[serde(default)]
    pub context: IndexMap<String, Value>,
}

/// Deserializes `T` from a JSON object only: serde's derive would also
/// read a struct from an array, by position, which a request must not allow.
pub(crate) fn object_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_map(ObjectOnly(std::marker::PhantomData))
}

/// The fields of a request itself: the dimensions, then the attributes
/// that are not inside one (`action`, `sensitivity`).
pub fn roots() -> impl Iterator<Item = &'static str> + Clone {
    Dim::ALL.into_iter().map(Dim::name).chain(
        ATTRIBUTES
            .iter()
            .filter(|def| def.dim.is_none())
            .map(|def| def.path),
    )
}

impl Attr {
    /// The attribute for `dim.field`.
    pub fn of(dim: Dim, field: &str) -> Attr {
        match dim.fields().find(|def| def.field == field) {
            Some(def) => def.attr.clone(),
            None => Attr::Extra(dim, field.into()),
        }
    }

    /// The attribute that is a field of the request itself (`action`).
    pub fn root(name: &str) -> Option<Attr> {
        ATTRIBUTES
            .iter()
            .find(|def| def.dim.is_none() && def.field == name)
            .map(|def| def.attr.clone())
    }

    /// How the attribute is written (`subject.kind`).
    pub fn path(&self) -> String {
        match self {
            Attr::Extra(dim, name) => format!("{}.{}", dim.name(), name),
            known => known.def().map_or("", |def| def.path).to_owned(),
        }
    }

    /// The attribute's static type.
    pub fn ty(&self) -> Ty {
        self.def().map_or(Ty::Any, |def| def.ty)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::engine::Engine;
    use crate::request::{Request, RequestError};

    /// A value of the line's type, a condition that holds for it, and a
    /// value of the wrong type.
    fn sample(def: &AttrDef) -> (Value, String, Value) {
        let path = def.path;
        let (good, test) = match def.ty {
            Ty::Str => (json!("v"), format!("{path} == \"v\"")),
            Ty::Bool => (json!(true), format!("{path} == true")),
            Ty::Dur => (json!(60), format!("{path} == 1m")),
            Ty::Level => (json!("internal"), format!("{path} == internal")),
            Ty::Time => (
                json!("2026-11-22T10:00:00Z"),
                format!("{path} < \"2026-11-23T00:00:00Z\""),
            ),
            Ty::StrList => (json!(["read:x"]), format!("\"read:x\" in {path}")),
            Ty::List => (json!([{"id": "a", "kind": "agent"}]), format!("len({path}) == 1")),
            Ty::Num => (json!(5), format!("{path} == 5")),
            Ty::Any => panic!("{path}: a line has a type; `Any` is for `Extra`"),
        };
        (good, test, json!({"not": "this"}))
    }

    /// Every line has its row in docs/language.md's attribute reference.
    #[test]
    fn every_attribute_is_documented() {
        let docs = include_str!("../docs/language.md");
        for def in ATTRIBUTES {
            let row = format!("| `{}` | {} |", def.path, def.ty.name().replace("sensitivity ", ""));
            assert!(docs.contains(&row), "docs/language.md has no row `{row}`");
        }
    }

    /// `{"subject": {"id": value}}` for `subject.id`, `{"action": value}`
    /// for `action`.
    fn request_with(def: &AttrDef, value: Value) -> Value {
        match def.dim {
            Some(dim) => json!({ dim.name(): { def.field: value } }),
            None => json!({ def.field: value }),
        }
    }

    /// Every line of the table is known to the checker (a condition over
    /// it compiles, at its type), the evaluator (a request holding it
    /// matches that condition; one without it does not), request
    /// validation (a value of another type is refused naming the path) and
    /// the decision log's redaction (`--redact` accepts the path). A new
    /// line needs nothing more than itself to pass.
    #[test]
    fn every_attribute_is_known_everywhere() {
        assert!(ATTRIBUTES.len() >= 25);
        for def in ATTRIBUTES {
            let (good, test, bad) = sample(def);
            assert_eq!(def.attr.path(), def.path);
            assert_eq!(def.attr.ty(), def.ty);
            assert!(!def.doc.trim().is_empty(), "{}: no doc", def.path);
            match def.dim {
                Some(dim) => assert_eq!(Attr::of(dim, def.field), def.attr),
                None => assert_eq!(Attr::root(def.field), Some(def.attr.clone())),
            }

            // The checker.
            let policy = format!("@id(\"t\")\npermit if {test}\n  grant [\"read:x\"] for 5m;\n");
            let engine = Engine::compile([("t.writ", policy.as_str())], None)
                .unwrap_or_else(|error| panic!("{}: {error:?}", def.path));

            // The evaluator.
            let text = request_with(def, good.clone()).to_string();
            let decision = engine.decide_json(&text).expect("valid request");
            assert_eq!(decision.reasons, ["t"], "{}: {text}", def.path);
            let decision = engine.decide_json("{}").expect("valid request");
            assert!(decision.reasons.is_empty(), "{}", def.path);

            // Validation: the server reads requests through `from_value`,
            // the CLI and fixtures through `parse_json`.
            let wrong = request_with(def, bad);
            for refused in [
                Request::from_value(wrong.clone()).map(|_| ()),
                Request::parse_json(&wrong.to_string()).map(|_| ()),
            ] {
                match refused {
                    Err(RequestError::Invalid { path, .. }) => {
                        assert_eq!(path, def.path, "{}", def.path)
                    }
                    other => panic!("{}: {other:?}", def.path),
                }
            }

            // The lexer keeps the field's name without copying it.
            assert!(static_name(def.field).is_some(), "{}", def.path);

            // Redaction.
            #[cfg(feature = "server")]
            crate::server::log::Redaction::new(&[def.path.to_owned()])
                .unwrap_or_else(|error| panic!("{}: {error}", def.path));
        }
    }
}
