//! Shared pieces of the fuzz targets: a grammar-shaped generator of writ
//! policies and requests driven by the fuzzer's bytes, and the oracle the
//! structured target checks on every decision.
//!
//! The generator writes policy *text*, not ASTs: the point is to go through
//! the lexer, the parser and the checker the way an author's file does. It
//! mostly writes well-formed rules over a fixed attribute vocabulary (so that
//! most inputs compile and reach the evaluator), with a small chance of a
//! wrong type, an unknown name or a stray token at each choice, so that the
//! checker's error paths are exercised too.

use arbitrary::{Result, Unstructured};
use indexmap::IndexMap;
use serde_json::{json, Value};
use writ::{
    Decision, Effect, Environment, Intent, Outcome, Request, Requested, Resource, Sensitivity,
    Subject,
};

type Map = serde_json::Map<String, Value>;

/// String attributes with a fixed type in the request.
pub const STR_ATTRS: &[&str] = &[
    "action",
    "subject.id",
    "subject.kind",
    "subject.auth",
    "subject.owner",
    "subject.environment",
    "resource.id",
    "resource.kind",
    "resource.owner",
    "intent.task",
    "intent.id",
    "intent.objective",
    "environment.name",
    "environment.broker",
];

/// Bool attributes.
pub const BOOL_ATTRS: &[&str] = &[
    "subject.attested",
    "subject.shared",
    "intent.objective_changed",
];

/// Attributes typed "any": whatever JSON the request holds there.
pub const ANY_ATTRS: &[&str] = &[
    "context.tier",
    "context.n",
    "context.list",
    "context.obj",
    "context.obj.inner",
    "context.exception.expires",
    "context.exception.id",
    "context.approval",
    "context.deadline",
    "subject.repository",
    "resource.labels",
    "intent.step",
    "environment.region",
];

/// String values the rules test and the requests hold.
pub const WORDS: &[&str] = &[
    "read",
    "write",
    "deploy",
    "invoke",
    "agent",
    "ci",
    "workload",
    "human",
    "payments",
    "search",
    "prod",
    "dev",
    "vault",
    "spiffe",
    "static-secret",
    "db://payments/orders",
    "k8s://prod-eu/payments",
    "tool",
    "cluster",
    "gold",
    "",
    "a*b",
    "\u{e9}t\u{e9}",
    "x y",
];

/// Valid scope item texts, narrow and wide, for grants, limits and requests.
pub const SCOPE_ITEMS: &[&str] = &[
    "read:db://payments/orders",
    "read:db://payments/*",
    "read:db://payments/**",
    "write:db://payments/orders",
    "*:db://payments/orders",
    "deploy:k8s://prod-eu/payments",
    "read:k8s://prod-eu/payments/config/*",
    "invoke:tool://search",
    "*:**",
    "read:**",
];

/// Invalid scope item texts: refused by the checker in a policy, by
/// validation in a request.
pub const BAD_SCOPE_ITEMS: &[&str] = &["read:a//b", "read:../x", "read", "", "read:db://x/./y"];

/// Template texts for grants (and audiences): each holds a hole, whose
/// value may be missing, of the wrong type or break the item at run time.
pub const TEMPLATES: &[&str] = &[
    "read:{resource.id}",
    "{action}:{resource.id}",
    "read:{resource.id}/config/*",
    "write:db://{subject.owner}/**",
    "read:db://{context.tier}/x",
    "read:db://n/{context.n}",
    "invoke:tool://{resource.kind}",
    "read:{context.obj}",
];

/// Template texts for audiences only (not scope items).
pub const AUDIENCES: &[&str] = &[
    "{resource.id}",
    "aud-{subject.id}",
    "\\{literal\\}:{context.tier}",
    "{context.obj}",
    "fixed",
];

const DURATIONS: &[&str] = &[
    "0s", "30s", "5m", "15m", "30m", "1h", "2h", "1d", "1h30m", "90s",
];
const LEVELS: &[&str] = &["public", "internal", "confidential", "restricted"];
const CMP: &[&str] = &["==", "!=", "<", "<=", ">", ">="];
const EVENTS: &[&str] = &["task_end", "objective_change", "idle"];
const TIMES: &[&str] = &[
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00+02:00",
    "2027-01-31T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "noon",
    "2026-13-45T99:00:00Z",
];

/// Writes policies and requests from fuzzer bytes.
pub struct Gen<'a, 'b> {
    u: &'b mut Unstructured<'a>,
    /// Names of the list constants declared so far.
    lists: Vec<String>,
    /// Running count of operators in the current item, to stay under the
    /// parser's per-item limit most of the time.
    budget: usize,
    /// This policy may hold mistakes the checker must refuse (bad atoms,
    /// invalid scope items, duplicate ids, ill-typed data).
    noise: bool,
    /// A `--data` object with `teams` will be passed.
    has_data: bool,
}

impl<'a, 'b> Gen<'a, 'b> {
    /// A generator over `u`.
    pub fn new(u: &'b mut Unstructured<'a>) -> Self {
        Gen {
            u,
            lists: Vec::new(),
            budget: 0,
            noise: false,
            has_data: false,
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Result<T> {
        self.u.choose(items).copied()
    }

    fn chance(&mut self, percent: u8) -> Result<bool> {
        Ok(self.u.int_in_range(0u8..=99)? < percent)
    }

    fn string_lit(&mut self) -> Result<String> {
        if self.chance(5)? {
            // Arbitrary text, escaped as writ wants.
            let raw: String = self.u.arbitrary()?;
            return Ok(quote(&raw));
        }
        let word = self.pick(WORDS)?;
        Ok(quote(word))
    }

    fn literal(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0u8..=7)? {
            0 | 1 => self.string_lit()?,
            2 => format!("{}", self.u.int_in_range(-3i32..=20)?),
            3 => self.pick(DURATIONS)?.to_owned(),
            4 => self.pick(&["true", "false"])?.to_owned(),
            5 => self.pick(LEVELS)?.to_owned(),
            6 => {
                let n = self.u.int_in_range(0usize..=3)?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.string_lit()?);
                }
                format!("[{}]", items.join(", "))
            }
            _ => format!(
                "{}.{}",
                self.u.int_in_range(0u16..=999)?,
                self.u.int_in_range(0u8..=99)?
            ),
        })
    }

    fn list_expr(&mut self) -> Result<String> {
        if !self.lists.is_empty() && self.chance(30)? {
            let name = self.u.choose(&self.lists)?.clone();
            return Ok(name);
        }
        Ok(match self.u.int_in_range(0u8..=5)? {
            0 => "requested.scope".to_owned(),
            1 => "context.list".to_owned(),
            2 if self.has_data => "teams[subject.owner].clusters".to_owned(),
            3 => "resource.labels".to_owned(),
            _ => {
                let n = self.u.int_in_range(0usize..=4)?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.string_lit()?);
                }
                format!("[{}]", items.join(", "))
            }
        })
    }

    fn atom(&mut self) -> Result<String> {
        self.budget += 2;
        Ok(match self.u.int_in_range(0u8..=21)? {
            0..=3 => {
                let attr = self.pick(STR_ATTRS)?;
                let op = self.pick(&["==", "!="])?;
                format!("{attr} {op} {}", self.string_lit()?)
            }
            4 | 5 => {
                let attr = self.pick(STR_ATTRS)?;
                let op = self.pick(&["in", "not in"])?;
                format!("{attr} {op} {}", self.list_expr()?)
            }
            6 => {
                let a = self.pick(STR_ATTRS)?;
                let b = self.pick(STR_ATTRS)?;
                format!("{a} == {b}")
            }
            7 => {
                let attr = self.pick(BOOL_ATTRS)?;
                format!("{attr} == {}", self.pick(&["true", "false"])?)
            }
            8 => format!("sensitivity {} {}", self.pick(CMP)?, self.pick(LEVELS)?),
            9 => {
                let attr = self.pick(ANY_ATTRS)?;
                let op = self.pick(&["==", "!="])?;
                format!("{attr} {op} {}", self.literal()?)
            }
            10 => {
                // Ordered: numbers, durations and timestamps, never strings.
                let attr = self.pick(ANY_ATTRS)?;
                let value = match self.u.int_in_range(0u8..=2)? {
                    0 => format!("{}", self.u.int_in_range(-3i32..=20)?),
                    1 => self.pick(DURATIONS)?.to_owned(),
                    _ => "environment.time".to_owned(),
                };
                format!("{attr} {} {value}", self.pick(CMP)?)
            }
            11 => {
                let (dim, paths): (&str, &[&str]) = *self.u.choose(&[
                    (
                        "context",
                        &["tier", "exception.id", "approval", "obj.inner", "n"][..],
                    ),
                    (
                        "subject",
                        &["owner", "shared", "environment", "repository"][..],
                    ),
                    ("intent", &["task", "id", "objective_changed"][..]),
                    ("requested", &["scope", "ttl"][..]),
                    ("resource", &["id", "labels"][..]),
                ])?;
                format!("{dim} has {}", self.pick(paths)?)
            }
            12 => {
                let attr = self.pick(STR_ATTRS)?;
                let glob = self.pick(&["*", "db://*", "read*", "?", "\\*", "k8s://prod-*/*"])?;
                format!("{attr} matches {}", quote(glob))
            }
            13 => format!(
                "len({}) {} {}",
                self.pick(&[
                    "requested.scope",
                    "subject.id",
                    "context.list",
                    "context.tier"
                ])?,
                self.pick(CMP)?,
                self.u.int_in_range(0u8..=4)?
            ),
            14 => {
                let f = self.pick(&["contains", "starts_with", "ends_with"])?;
                let attr = self.pick(STR_ATTRS)?;
                format!("{f}({attr}, {})", self.string_lit()?)
            }
            15 => format!("lower({}) == {}", self.pick(STR_ATTRS)?, self.string_lit()?),
            16 => {
                let q = self.pick(&["any", "all"])?;
                let list = self.pick(&["requested.scope", "context.list", "resource.labels"])?;
                let body = match self.u.int_in_range(0u8..=3)? {
                    0 => format!("starts_with(x, {})", self.string_lit()?),
                    1 => format!("contains(x, {})", self.string_lit()?),
                    2 if list == "requested.scope" => format!("x == {}", self.string_lit()?),
                    2 => format!("x == {}", self.literal()?),
                    _ => "x matches \"*:db://**\"".to_owned(),
                };
                format!("{q}(x in {list}: {body})")
            }
            17 => format!(
                "{} {} environment.time",
                self.pick(&["context.exception.expires", "context.deadline"])?,
                self.pick(CMP)?
            ),
            18 => format!(
                "environment.time + {} {} context.deadline",
                self.pick(DURATIONS)?,
                self.pick(CMP)?
            ),
            19 => format!(
                "requested.ttl {} {}",
                self.pick(CMP)?,
                self.pick(DURATIONS)?
            ),
            20 if self.has_data => format!(
                "resource.id in teams[{}].clusters",
                self.pick(&["subject.owner", "\"payments\"", "context.tier"])?
            ),
            20 => format!("subject.owner == {}", self.string_lit()?),
            21 if !self.noise => "subject.attested == true".to_owned(),
            _ => {
                // Something the checker should refuse or warn about.
                self.pick(&[
                    "action = \"read\"",
                    "subject.kid == \"ci\"",
                    "sensitivity == \"restricted\"",
                    "unknown_name",
                    "action && true",
                    "!subject.attested",
                    "\"read\" < \"write\"",
                    "action == \"read\" and action == \"write\"",
                    "len(action, 1) > 0",
                    "frobnicate(action)",
                    "action",
                    "subject",
                    "1h == \"x\"",
                ])?
                .to_owned()
            }
        })
    }

    /// A condition of bounded depth.
    pub fn cond(&mut self, depth: u32) -> Result<String> {
        if depth == 0 || self.budget > 400 || self.chance(45)? {
            return self.atom();
        }
        self.budget += 1;
        Ok(match self.u.int_in_range(0u8..=4)? {
            0 => format!("not {}", self.cond(depth - 1)?),
            1 => format!("({})", self.cond(depth - 1)?),
            2 | 3 => {
                let a = self.cond(depth - 1)?;
                let b = self.cond(depth - 1)?;
                format!("{a} and {b}")
            }
            _ => {
                let a = self.cond(depth - 1)?;
                let b = self.cond(depth - 1)?;
                format!("({a} or {b})")
            }
        })
    }

    fn maybe_cond(&mut self) -> Result<String> {
        if self.chance(20)? {
            Ok(String::new())
        } else {
            Ok(format!(" if {}", self.cond(4)?))
        }
    }

    fn scope_list(&mut self, templates: bool) -> Result<String> {
        let n = self.u.int_in_range(0usize..=3)?;
        let mut items = Vec::new();
        for _ in 0..n {
            let text = if self.noise && self.chance(10)? {
                self.pick(BAD_SCOPE_ITEMS)?
            } else if templates && self.chance(60)? {
                self.pick(TEMPLATES)?
            } else {
                self.pick(SCOPE_ITEMS)?
            };
            items.push(format!("\"{text}\""));
        }
        if templates && self.noise && self.chance(10)? {
            // Not a list at all: a type error for the checker.
            return Ok("\"read:x\"".to_owned());
        }
        Ok(format!("[{}]", items.join(", ")))
    }

    fn obligation(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0u8..=4)? {
            0 => "approval".to_owned(),
            1 => "log".to_owned(),
            2 => format!("revoke on {}", self.pick(EVENTS)?),
            3 => format!("audience \"{}\"", self.pick(AUDIENCES)?),
            _ => format!(
                "audience {}",
                self.pick(&["resource.id", "context.tier", "subject.id", "context.obj"])?
            ),
        })
    }

    /// One rule, ending with `;`.
    pub fn rule(&mut self, index: usize) -> Result<String> {
        self.budget = 0;
        let mut out = String::new();
        if self.chance(20)? {
            out.push_str("/// a rule\n");
        }
        if !self.chance(10)? {
            // Unique ids, except for the occasional duplicate.
            let id = if self.noise && self.chance(10)? {
                0
            } else {
                index
            };
            out.push_str(&format!("@id(\"r{id}\") "));
        }
        if self.chance(10)? {
            out.push_str("@control(\"OWASP-NHI NHI7\") ");
        }
        match self.u.int_in_range(0u8..=9)? {
            0..=4 => {
                out.push_str("permit");
                out.push_str(&self.maybe_cond()?);
                if self.chance(80)? {
                    out.push_str(&format!(" grant {}", self.scope_list(true)?));
                    if self.chance(70)? {
                        out.push_str(&format!(" for {}", self.pick(DURATIONS)?));
                    }
                }
                for _ in 0..self.u.int_in_range(0u8..=2)? {
                    out.push(' ');
                    out.push_str(&self.obligation()?);
                }
            }
            5 => {
                out.push_str("forbid");
                out.push_str(&self.maybe_cond()?);
                if self.chance(40)? {
                    let text = self.pick(&[
                        "no",
                        "`{subject.auth}` is a secret",
                        "{context.n} issuances",
                        "{context.obj}",
                    ])?;
                    out.push_str(&format!(" because \"{text}\""));
                }
            }
            6 => {
                out.push_str(&format!("limit ttl {}", self.pick(DURATIONS)?));
                out.push_str(&self.maybe_cond()?);
            }
            7 => {
                out.push_str(&format!("limit scope {}", self.scope_list(false)?));
                out.push_str(&self.maybe_cond()?);
            }
            _ => {
                out.push_str(&format!("require {}", self.obligation()?));
                out.push_str(&self.maybe_cond()?);
            }
        }
        out.push_str(";\n");
        Ok(out)
    }

    /// A policy file (a few constants, then up to a dozen rules) and the
    /// `--data` object to compile it with.
    pub fn policy_and_data(&mut self) -> Result<(String, Option<Value>)> {
        self.noise = self.chance(10)?;
        self.has_data = self.chance(60)?;
        let policy = self.policy()?;
        let data = self.data()?;
        Ok((policy, data))
    }

    fn policy(&mut self) -> Result<String> {
        let mut out = self.preamble()?;
        let rules = self.u.int_in_range(1usize..=12)?;
        for index in 0..rules {
            out.push_str(&self.rule(index)?);
        }
        Ok(out)
    }

    /// A policy of `rules` rules, as a preamble (the constants) and the
    /// rules' texts, and the `--data` object; without the mistakes the
    /// checker must refuse, though a rule may still contradict itself (see
    /// [`compile_kept`]).
    pub fn large_policy(&mut self, rules: usize) -> Result<(String, Vec<String>, Option<Value>)> {
        self.noise = false;
        self.has_data = self.chance(60)?;
        let preamble = self.preamble()?;
        let mut texts = Vec::with_capacity(rules);
        for index in 0..rules {
            texts.push(self.rule(index)?);
        }
        let data = self.data()?;
        Ok((preamble, texts, data))
    }

    /// The constants a policy starts with.
    fn preamble(&mut self) -> Result<String> {
        let mut out = String::new();
        for i in 0..self.u.int_in_range(0usize..=2)? {
            let name = format!("list{i}");
            let n = self.u.int_in_range(0usize..=3)?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(self.string_lit()?);
            }
            out.push_str(&format!("const {name} = [{}];\n", items.join(", ")));
            self.lists.push(name);
        }
        if self.chance(20)? {
            out.push_str(&format!("const cap = {};\n", self.pick(DURATIONS)?));
            out.push_str("limit ttl cap if subject.kind == \"agent\";\n");
        }
        Ok(out)
    }

    /// The `--data` object: `teams` for the index expressions, sometimes an
    /// override of a declared constant (of the right type or not).
    fn data(&mut self) -> Result<Option<Value>> {
        if !self.has_data {
            return Ok(None);
        }
        let mut data = json!({
            "teams": {
                "payments": {"clusters": ["k8s://prod-eu/payments", "db://payments/orders"]},
                "search": {"clusters": []}
            }
        });
        if self.chance(30)? && !self.lists.is_empty() {
            let name = self.u.choose(&self.lists)?.clone();
            let value = if self.noise {
                self.json(2)?
            } else {
                json!([self.pick(WORDS)?, self.pick(WORDS)?])
            };
            data[name] = value;
        }
        Ok(Some(data))
    }

    /// A small JSON value of any type.
    pub fn json(&mut self, depth: u32) -> Result<Value> {
        Ok(match self.u.int_in_range(0u8..=7)? {
            0 => Value::Null,
            1 => Value::Bool(self.u.arbitrary()?),
            2 => json!(self.u.int_in_range(-2i64..=20)?),
            3 => json!(self.u.arbitrary::<f64>()?),
            4 | 5 => Value::String(self.pick(WORDS)?.to_owned()),
            6 if depth > 0 => {
                let n = self.u.int_in_range(0usize..=3)?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.json(depth - 1)?);
                }
                Value::Array(items)
            }
            7 if depth > 0 => {
                let mut map = Map::new();
                for key in ["inner", "id", "expires"] {
                    if self.u.arbitrary()? {
                        map.insert(key.to_owned(), self.json(depth - 1)?);
                    }
                }
                Value::Object(map)
            }
            _ => Value::String(self.u.arbitrary()?),
        })
    }

    fn opt_word(&mut self) -> Result<Option<String>> {
        if self.chance(20)? {
            Ok(None)
        } else {
            Ok(Some(self.pick(WORDS)?.to_owned()))
        }
    }

    fn opt_bool(&mut self) -> Result<Option<bool>> {
        if self.chance(25)? {
            Ok(None)
        } else {
            Ok(Some(self.u.arbitrary()?))
        }
    }

    fn extra(&mut self, keys: &[&str]) -> Result<IndexMap<String, Value>> {
        let mut map = Map::new();
        for key in keys {
            if self.chance(50)? {
                let value = match *key {
                    "tier" => {
                        if self.chance(70)? {
                            Value::String(self.pick(&["gold", "silver", "*", ""])?.to_owned())
                        } else {
                            self.json(1)?
                        }
                    }
                    "exception" => json!({
                        "id": self.pick(&["RISK-1", ""])?,
                        "expires": self.pick(TIMES)?,
                    }),
                    "deadline" => Value::String(self.pick(TIMES)?.to_owned()),
                    "list" | "labels" => {
                        let n = self.u.int_in_range(0usize..=3)?;
                        let mut items = Vec::new();
                        for _ in 0..n {
                            items.push(if self.chance(80)? {
                                Value::String(self.pick(WORDS)?.to_owned())
                            } else {
                                self.json(1)?
                            });
                        }
                        Value::Array(items)
                    }
                    _ => self.json(2)?,
                };
                map.insert((*key).to_owned(), value);
            }
        }
        Ok(map.into_iter().collect())
    }

    /// A request: every field may be missing, hold a value no rule tests,
    /// or (for the `any` attributes) a value of the wrong type. Built as a
    /// struct, so that an invalid time or scope item reaches `decide`'s own
    /// validation.
    pub fn request(&mut self) -> Result<Request> {
        let scope = if self.chance(30)? {
            None
        } else {
            let n = self.u.int_in_range(0usize..=3)?;
            let mut items = Vec::new();
            for _ in 0..n {
                let item = if self.chance(5)? {
                    self.pick(BAD_SCOPE_ITEMS)?
                } else {
                    self.pick(SCOPE_ITEMS)?
                };
                items.push(item.to_owned());
            }
            Some(items)
        };
        let ttl = if self.chance(40)? {
            None
        } else {
            Some(*self.u.choose(&[0u64, 60, 300, 900, 3600, 7200, u64::MAX])?)
        };
        let sensitivity = if self.chance(20)? {
            None
        } else {
            Some(*self.u.choose(&Sensitivity::ALL)?)
        };
        Ok(Request {
            subject: Subject {
                id: self.opt_word()?,
                kind: self.opt_word()?,
                auth: self.opt_word()?,
                attested: self.opt_bool()?,
                shared: self.opt_bool()?,
                owner: self.opt_word()?,
                environment: self.opt_word()?,
                extra: self.extra(&["repository"])?,
                // The attributes the generator leaves out (the version-2
                // ones), so a new line in the schema needs nothing here.
                ..Subject::default()
            },
            action: self.opt_word()?,
            resource: Resource {
                id: self.opt_word()?,
                kind: self.opt_word()?,
                owner: self.opt_word()?,
                extra: self.extra(&["labels"])?,
            },
            intent: Intent {
                task: self.opt_word()?,
                id: self.opt_word()?,
                objective: self.opt_word()?,
                objective_changed: self.opt_bool()?,
                extra: self.extra(&["step"])?,
                ..Intent::default()
            },
            environment: Environment {
                name: self.opt_word()?,
                broker: self.opt_word()?,
                time: if self.chance(30)? {
                    None
                } else {
                    Some(self.pick(TIMES)?.to_owned())
                },
                extra: self.extra(&["region"])?,
            },
            sensitivity,
            requested: Requested { scope, ttl },
            context: self.extra(&[
                "tier",
                "n",
                "list",
                "obj",
                "exception",
                "approval",
                "deadline",
            ])?,
        })
    }
}

/// Compiles a preamble and rules as one policy, leaving out the rules the
/// checker refuses (a rule that contradicts itself, say) and trying again,
/// up to three times: the policy text kept and its engine, or `None` when
/// something other than a rule is refused.
pub fn compile_kept(
    preamble: &str,
    mut rules: Vec<String>,
    data: Option<&Value>,
) -> Option<(String, writ::Engine)> {
    for _ in 0..3 {
        let text: String = std::iter::once(preamble)
            .chain(rules.iter().map(String::as_str))
            .collect();
        let diagnostics = match writ::Engine::compile([("gen.writ", text.as_str())], data) {
            Ok(engine) => return Some((text, engine)),
            Err(diagnostics) => diagnostics,
        };
        // The first label of each report: where in the text it points.
        let reports: Value = serde_json::from_str(&diagnostics.to_json()).ok()?;
        let mut refused = Vec::new();
        for report in reports.as_array()? {
            let offset = report["labels"][0]["span"]["offset"].as_u64()? as usize;
            let mut end = preamble.len();
            if offset < end {
                return None;
            }
            let index = rules.iter().position(|rule| {
                end += rule.len();
                offset < end
            })?;
            refused.push(index);
        }
        let mut index = 0;
        rules.retain(|_| {
            index += 1;
            !refused.contains(&(index - 1))
        });
    }
    None
}

/// Quotes text as a writ string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '{' => out.push_str("\\{"),
            '}' => out.push_str("\\}"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The oracle: what must hold of the decisions of one engine on one
/// request. Panics (so the fuzzer reports a crash) when it does not.
pub fn check_decisions(policy: &str, request: &Request, tree: &Decision, naive: &Decision) {
    let context = || {
        format!(
            "policy:\n{policy}\nrequest: {}\ntree: {}\nnaive: {}",
            serde_json::to_string(request).unwrap_or_default(),
            tree.to_json(),
            naive.to_json()
        )
    };
    // The tree only prunes: it decides what evaluating every rule decides.
    assert_eq!(tree.decision, naive.decision, "decision\n{}", context());
    assert_eq!(tree.scope, naive.scope, "scope\n{}", context());
    assert_eq!(tree.ttl, naive.ttl, "ttl\n{}", context());
    assert_eq!(
        tree.obligations,
        naive.obligations,
        "obligations\n{}",
        context()
    );
    assert_eq!(tree.reasons, naive.reasons, "reasons\n{}", context());
    assert_eq!(tree.errors, naive.errors, "errors\n{}", context());
    assert_eq!(
        tree.dropped_scope,
        naive.dropped_scope,
        "dropped_scope\n{}",
        context()
    );
    for decision in [tree, naive] {
        // A request that could not be evaluated is never allowed.
        if decision.errors.iter().any(|e| e.rule == "request") {
            assert_eq!(
                decision.decision,
                Effect::Deny,
                "request error allowed\n{}",
                context()
            );
        }
        match decision.decision {
            Effect::Deny => {
                assert!(decision.scope.is_empty(), "deny with scope\n{}", context());
                assert_eq!(decision.ttl, 0, "deny with ttl\n{}", context());
                assert!(
                    decision.obligations.is_empty(),
                    "deny with obligations\n{}",
                    context()
                );
            }
            Effect::Allow => {
                // No forbid applied (matched, or failed closed).
                assert!(
                    !decision
                        .trace
                        .iter()
                        .any(|e| e.kind == "forbid" && e.outcome == Outcome::Matched),
                    "allow despite a forbid\n{}",
                    context()
                );
                // Never more than asked for.
                if let Some(ttl) = request.requested.ttl {
                    assert!(decision.ttl <= ttl, "ttl over requested\n{}", context());
                }
                let requested = request.requested.scope.as_deref().unwrap_or_default();
                if !requested.is_empty() {
                    for item in &decision.scope {
                        assert!(
                            requested.contains(item),
                            "granted `{item}` not requested\n{}",
                            context()
                        );
                    }
                }
                assert!(
                    !decision.reasons.is_empty(),
                    "allow without reason\n{}",
                    context()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ::Engine;

    /// The generator is useful only if most of what it writes compiles and
    /// reaches the evaluator; this keeps it honest when it changes.
    #[test]
    fn most_generated_policies_compile() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut compiled = 0;
        let mut allowed = 0;
        let mut total = 0;
        let mut codes = std::collections::BTreeMap::new();
        for _ in 0..400 {
            let bytes: Vec<u8> = (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            let mut u = Unstructured::new(&bytes);
            let mut generator = Gen::new(&mut u);
            let (policy, data) = generator.policy_and_data().expect("enough bytes");
            let request = generator.request().expect("enough bytes");
            total += 1;
            match Engine::compile([("gen.writ", policy.as_str())], data.as_ref()) {
                Ok(engine) => {
                    compiled += 1;
                    let tree = engine.decide(&request);
                    let naive = engine.decide_naive(&request);
                    check_decisions(&policy, &request, &tree, &naive);
                    if tree.is_allow() {
                        allowed += 1;
                    }
                }
                Err(d) => {
                    for code in d.codes() {
                        *codes.entry(code.to_string()).or_insert(0) += 1;
                    }
                }
            }
        }
        eprintln!("{compiled}/{total} compiled, {allowed} allowed; errors: {codes:?}");
        assert!(
            compiled * 3 >= total,
            "{compiled}/{total} compiled: {codes:?}"
        );
        assert!(allowed * 20 >= compiled, "{allowed}/{compiled} allowed");
    }

    /// The oracle on sets of 1,000 and 10,000 grammar-shaped rules, where
    /// the tree's switches hold many values, complements and ranges: two
    /// sets of each size with 16 requests each, more with
    /// `WRIT_FUZZ_LARGE_CASES=N` (sets per size).
    #[test]
    fn the_oracle_holds_on_sets_up_to_ten_thousand_rules() {
        let cases: u64 = std::env::var("WRIT_FUZZ_LARGE_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut decided = 0;
        for size in [1_000usize, 10_000] {
            for case in 0..cases {
                let bytes: Vec<u8> = (0..size * 160 + 8192)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 24) as u8
                    })
                    .collect();
                let mut u = Unstructured::new(&bytes);
                let mut generator = Gen::new(&mut u);
                let (preamble, rules, data) = generator.large_policy(size).expect("enough bytes");
                let requests: Vec<Request> = (0..16)
                    .map(|_| generator.request().expect("enough bytes"))
                    .collect();
                let Some((policy, engine)) = compile_kept(&preamble, rules, data.as_ref()) else {
                    panic!("{size} rules, case {case}: the preamble was refused:\n{preamble}");
                };
                let kept = engine.policy().rules.len();
                assert!(kept * 2 >= size, "{size} rules, case {case}: {kept} kept");
                for request in &requests {
                    let tree = engine.decide(request);
                    let naive = engine.decide_naive(request);
                    check_decisions(&policy, request, &tree, &naive);
                    decided += 1;
                }
            }
        }
        assert_eq!(decided as u64, 2 * cases * 16);
    }
}
