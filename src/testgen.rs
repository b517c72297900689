//! Generated policy sets and requests, shared by the benches, the property
//! tests and the Cedar comparison in `benches/peers`.
//!
//! The rules have the issuance shape: each permit tests four request
//! attributes for equality (`action`, `subject.kind`, `resource.kind`,
//! `environment.name`), one boolean (`subject.attested == true`), and grants
//! a scope for a TTL; every tenth rule is a forbid. For variety some permits
//! test a list (`action in [...]`), a sensitivity range
//! (`sensitivity >= confidential`), and groups of permits share every
//! indexable test and differ only in their residual condition
//! (`context.tier == "gold"`, `subject.owner == resource.owner`).
//!
//! Everything is deterministic from a seed: the same [`GenConfig`] gives the
//! same text, in writ ([`GenSet::writ_source`]) and in Cedar
//! ([`GenSet::cedar_source`]), and the same requests.
//!
//! A second shape, [`generate_flags`], does not flatter the tree: resource
//! kinds do not grow with the rule count, every permit ends in a boolean
//! test (`subject.attested`, `subject.shared` or `context.break_glass`,
//! with `==` or `!=`) and every forbid is `environment.name == ... and
//! resource.kind == ...` and a boolean test, so a request shares its
//! environment and resource kind with a tenth of the forbids.
//! `context.break_glass` is untyped: a request may hold a string there,
//! which makes every comparison with it err.
//!
//! A small model of the generated conditions ([`GenRule::applies`]) picks a
//! request that matches exactly one permit and no forbid; it knows only the
//! shapes generated here.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::request::{Request, RequestError};

/// A xorshift64* generator: tiny, fast and deterministic, good enough for
/// test data (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        // splitmix64 spreads similar seeds apart and never yields a zero state
        // for xorshift (whose zero state is a fixed point).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() >> 32) as usize) % n
    }

    /// True with the given chance in percent.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Actions the rules test.
pub const ACTIONS: &[&str] = &[
    "read", "write", "deploy", "invoke", "list", "delete", "admin", "rotate", "sign", "backup",
];

/// Subject kinds the rules test.
pub const SUBJECT_KINDS: &[&str] = &["workload", "service", "ci", "agent", "batch", "job"];

/// Environment names the rules test.
pub const ENVIRONMENTS: &[&str] = &["dev", "staging", "prod", "test", "sandbox"];

/// Named resource kinds; larger sets add `kind8`, `kind9`, ...
const NAMED_RESOURCE_KINDS: &[&str] = &[
    "database", "bucket", "cluster", "queue", "secret", "tool", "topic", "table",
];

/// The residual tiers some permits require in `context.tier`.
pub const TIERS: &[&str] = &["gold", "silver", "bronze"];

/// Teams, for owners and resource ids.
pub const TEAMS: &[&str] = &["payments", "search", "ledger", "identity"];

/// Sensitivity levels, lowest first (the index is the Cedar number).
pub const LEVELS: &[&str] = &["public", "internal", "confidential", "restricted"];

const TTLS: &[(&str, u64)] = &[
    ("5m", 300),
    ("15m", 900),
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenConfig {
    /// How many rules.
    pub rules: usize,
    /// The seed; the same config always gives the same set.
    pub seed: u64,
    /// Add writ-only rules (`limit ttl`, `limit scope`, `require`) and
    /// permit obligations. Off for sets that Cedar must also express.
    pub extras: bool,
}

impl GenConfig {
    /// The issuance shape alone (no writ-only rules), seed 1.
    pub fn issuance(rules: usize) -> GenConfig {
        GenConfig {
            rules,
            seed: 1,
            extras: false,
        }
    }
}

/// A string attribute the generated rules test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `action`
    Action,
    /// `subject.kind`
    SubjectKind,
    /// `resource.kind`
    ResourceKind,
    /// `environment.name`
    Environment,
}

impl Field {
    fn writ(self) -> &'static str {
        match self {
            Field::Action => "action",
            Field::SubjectKind => "subject.kind",
            Field::ResourceKind => "resource.kind",
            Field::Environment => "environment.name",
        }
    }

    fn cedar(self) -> &'static str {
        match self {
            Field::Action => "action",
            Field::SubjectKind => "principal.kind",
            Field::ResourceKind => "resource.kind",
            Field::Environment => "context.environment",
        }
    }

    fn get(self, request: &GenRequest) -> Option<&str> {
        match self {
            Field::Action => request.action.as_deref(),
            Field::SubjectKind => request.subject_kind.as_deref(),
            Field::ResourceKind => request.resource_kind.as_deref(),
            Field::Environment => request.environment.as_deref(),
        }
    }

    fn set(self, request: &mut GenRequest, value: Option<String>) {
        match self {
            Field::Action => request.action = value,
            Field::SubjectKind => request.subject_kind = value,
            Field::ResourceKind => request.resource_kind = value,
            Field::Environment => request.environment = value,
        }
    }
}

/// A boolean attribute the generated rules of [`generate_flags`] test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagField {
    /// `subject.attested` (typed bool)
    Attested,
    /// `subject.shared` (typed bool)
    Shared,
    /// `context.break_glass` (untyped: may hold a string)
    BreakGlass,
}

impl FlagField {
    fn has(self) -> &'static str {
        match self {
            FlagField::Attested => "subject has attested",
            FlagField::Shared => "subject has shared",
            FlagField::BreakGlass => "context has break_glass",
        }
    }

    fn writ(self) -> &'static str {
        match self {
            FlagField::Attested => "subject.attested",
            FlagField::Shared => "subject.shared",
            FlagField::BreakGlass => "context.break_glass",
        }
    }

    fn cedar(self) -> &'static str {
        match self {
            FlagField::Attested => "principal.attested",
            FlagField::Shared => "principal.shared",
            FlagField::BreakGlass => "context.break_glass",
        }
    }

    fn get(self, request: &GenRequest) -> Option<FlagValue> {
        match self {
            FlagField::Attested => request.attested.map(FlagValue::Bool),
            FlagField::Shared => request.shared.map(FlagValue::Bool),
            FlagField::BreakGlass => request.break_glass.clone(),
        }
    }

    fn set(self, request: &mut GenRequest, value: bool) {
        match self {
            FlagField::Attested => request.attested = Some(value),
            FlagField::Shared => request.shared = Some(value),
            FlagField::BreakGlass => request.break_glass = Some(FlagValue::Bool(value)),
        }
    }
}

/// One test of a generated condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `action == "read"`
    Eq(Field, String),
    /// `action in ["read", "list"]`
    In(Field, Vec<String>),
    /// `subject.attested == true`
    Attested,
    /// `sensitivity >= confidential` (level index)
    SensAtLeast(usize),
    /// `sensitivity <= internal` (level index)
    SensAtMost(usize),
    /// `sensitivity in [internal, confidential]` (level indices)
    SensIn(Vec<usize>),
    /// `context.tier == "gold"`
    Tier(String),
    /// `subject.owner == resource.owner`
    OwnerMatch,
    /// `subject.shared == false` (`equal`: `==` rather than `!=`; then the
    /// constant)
    Flag(FlagField, bool, bool),
    /// `context has break_glass` (`true`), `not subject has shared`
    /// (`false`); `has` counts `false` as absent
    Has(FlagField, bool),
    /// `environment.name != "prod"`
    Ne(Field, String),
    /// `environment.name not in ["prod", "staging"]`
    NotIn(Field, Vec<String>),
    /// `context.risk_score > 70` (an untyped number)
    Risk(Cmp, i64),
    /// `requested.ttl <= 1h` (a duration; the constant in seconds)
    Ttl(Cmp, u64),
    /// `resource.properties has pii` (`true`), `not resource.properties has
    /// pii` (`false`): presence below an attribute
    Prop(String, bool),
    /// `context.ticket == "T-7"`: an attribute the generated requests
    /// usually lack, so the test errs
    Ticket(String),
}

/// A comparison of numbers or durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Cmp {
    /// Every comparison.
    pub const ALL: [Cmp; 5] = [Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq];

    fn text(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
        }
    }

    fn holds(self, value: i64, constant: i64) -> bool {
        match self {
            Cmp::Lt => value < constant,
            Cmp::Le => value <= constant,
            Cmp::Gt => value > constant,
            Cmp::Ge => value >= constant,
            Cmp::Eq => value == constant,
        }
    }

    /// A value that satisfies the comparison with `constant`.
    fn satisfying(self, constant: i64, step: i64) -> i64 {
        match self {
            Cmp::Lt => constant - step,
            Cmp::Gt => constant + step,
            Cmp::Le | Cmp::Ge | Cmp::Eq => constant,
        }
    }
}

/// A duration in writ's syntax: `1h`, `90m`, `45s`.
fn duration_text(seconds: u64) -> String {
    if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

impl Cond {
    fn writ(&self) -> String {
        let list = |items: &[String]| -> String {
            let quoted: Vec<String> = items.iter().map(|v| format!("\"{v}\"")).collect();
            format!("[{}]", quoted.join(", "))
        };
        match self {
            Cond::Eq(field, value) => format!("{} == \"{value}\"", field.writ()),
            Cond::In(field, values) => format!("{} in {}", field.writ(), list(values)),
            Cond::Attested => "subject.attested == true".to_owned(),
            Cond::SensAtLeast(level) => format!("sensitivity >= {}", LEVELS[*level]),
            Cond::SensAtMost(level) => format!("sensitivity <= {}", LEVELS[*level]),
            Cond::SensIn(levels) => {
                let names: Vec<&str> = levels.iter().map(|l| LEVELS[*l]).collect();
                format!("sensitivity in [{}]", names.join(", "))
            }
            Cond::Tier(tier) => format!("context.tier == \"{tier}\""),
            Cond::OwnerMatch => "subject.owner == resource.owner".to_owned(),
            Cond::Flag(field, equal, value) => {
                format!(
                    "{} {} {value}",
                    field.writ(),
                    if *equal { "==" } else { "!=" }
                )
            }
            Cond::Has(field, true) => field.has().to_owned(),
            Cond::Has(field, false) => format!("not {}", field.has()),
            Cond::Ne(field, value) => format!("{} != \"{value}\"", field.writ()),
            Cond::NotIn(field, values) => format!("{} not in {}", field.writ(), list(values)),
            Cond::Risk(cmp, n) => format!("context.risk_score {} {n}", cmp.text()),
            Cond::Ttl(cmp, seconds) => {
                format!("requested.ttl {} {}", cmp.text(), duration_text(*seconds))
            }
            Cond::Prop(key, true) => format!("resource.properties has {key}"),
            Cond::Prop(key, false) => format!("not resource.properties has {key}"),
            Cond::Ticket(ticket) => format!("context.ticket == \"{ticket}\""),
        }
    }

    /// The test in Cedar; `None` for tests Cedar states in the policy scope
    /// (a test on `action`).
    fn cedar(&self) -> Option<String> {
        Some(match self {
            Cond::Eq(Field::Action, _) | Cond::In(Field::Action, _) => return None,
            Cond::Eq(field, value) => format!("{} == \"{value}\"", field.cedar()),
            Cond::In(field, values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!("[{}].contains({})", quoted.join(", "), field.cedar())
            }
            Cond::Attested => "principal.attested == true".to_owned(),
            Cond::SensAtLeast(level) => format!("context.sensitivity >= {level}"),
            Cond::SensAtMost(level) => format!("context.sensitivity <= {level}"),
            Cond::SensIn(levels) => {
                let items: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
                format!("[{}].contains(context.sensitivity)", items.join(", "))
            }
            Cond::Tier(tier) => format!("context.tier == \"{tier}\""),
            Cond::OwnerMatch => "principal.owner == resource.owner".to_owned(),
            Cond::Flag(field, equal, value) => {
                format!(
                    "{} {} {value}",
                    field.cedar(),
                    if *equal { "==" } else { "!=" }
                )
            }
            // Cedar's `has` counts `false` as present; only writ-only sets
            // (with extras) have these.
            Cond::Has(field, present) => {
                let (object, name) = field.cedar().split_once('.').unwrap_or(("context", ""));
                let test = format!("{object} has {name}");
                if *present {
                    test
                } else {
                    format!("!({test})")
                }
            }
            Cond::Ne(field, value) => format!("{} != \"{value}\"", field.cedar()),
            Cond::NotIn(field, values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!("!([{}].contains({}))", quoted.join(", "), field.cedar())
            }
            Cond::Risk(cmp, n) => format!("context.risk_score {} {n}", cmp.text()),
            Cond::Ttl(cmp, seconds) => format!("context.ttl {} {seconds}", cmp.text()),
            Cond::Prop(key, true) => format!("resource.properties has {key}"),
            Cond::Prop(key, false) => format!("!(resource.properties has {key})"),
            Cond::Ticket(ticket) => format!("context.ticket == \"{ticket}\""),
        })
    }

    /// `Some(true|false)`, or `None` when writ would report an error
    /// (a missing attribute, a tier that is not a string).
    fn eval(&self, request: &GenRequest) -> Option<bool> {
        match self {
            Cond::Eq(field, value) => field.get(request).map(|v| v == value),
            Cond::In(field, values) => field.get(request).map(|v| values.iter().any(|x| x == v)),
            Cond::Attested => request.attested,
            Cond::SensAtLeast(level) => request.sensitivity.map(|s| s >= *level),
            Cond::SensAtMost(level) => request.sensitivity.map(|s| s <= *level),
            Cond::SensIn(levels) => request.sensitivity.map(|s| levels.contains(&s)),
            Cond::Tier(tier) => match &request.tier {
                Some(TierValue::Str(value)) => Some(value == tier),
                _ => None,
            },
            Cond::OwnerMatch => match (&request.subject_owner, &request.resource_owner) {
                (Some(a), Some(b)) => Some(a == b),
                _ => None,
            },
            // A comparison across types errs, as a missing attribute does.
            Cond::Flag(field, equal, value) => match field.get(request) {
                Some(FlagValue::Bool(b)) => Some((b == *value) == *equal),
                _ => None,
            },
            // `has` never errs; `false` and `""` count as absent.
            Cond::Has(field, present) => Some(
                match field.get(request) {
                    Some(FlagValue::Bool(b)) => b,
                    Some(FlagValue::Str(s)) => !s.is_empty(),
                    None => false,
                } == *present,
            ),
            Cond::Ne(field, value) => field.get(request).map(|v| v != value),
            Cond::NotIn(field, values) => field.get(request).map(|v| values.iter().all(|x| x != v)),
            // A string where a number is compared errs.
            Cond::Risk(cmp, n) => match &request.risk {
                Some(RiskValue::Num(value)) => Some(cmp.holds(*value, *n)),
                _ => None,
            },
            Cond::Ttl(cmp, seconds) => request
                .requested_ttl
                .map(|ttl| cmp.holds(ttl as i64, *seconds as i64)),
            // `""` counts as absent.
            Cond::Prop(key, present) => Some(
                request
                    .properties
                    .as_ref()
                    .is_some_and(|props| props.iter().any(|(k, v)| k == key && !v.is_empty()))
                    == *present,
            ),
            Cond::Ticket(ticket) => request.ticket.as_ref().map(|t| t == ticket),
        }
    }

    /// Makes `request` satisfy the test, as far as one request can.
    fn satisfy(&self, request: &mut GenRequest) {
        match self {
            Cond::Eq(field, value) => field.set(request, Some(value.clone())),
            Cond::In(field, values) => field.set(request, values.first().cloned()),
            Cond::Attested => request.attested = Some(true),
            Cond::SensAtLeast(level) => request.sensitivity = Some(*level),
            Cond::SensAtMost(level) => request.sensitivity = Some(*level),
            Cond::SensIn(levels) => request.sensitivity = levels.first().copied(),
            Cond::Tier(tier) => request.tier = Some(TierValue::Str(tier.clone())),
            Cond::OwnerMatch => request.resource_owner = request.subject_owner.clone(),
            Cond::Flag(field, equal, value) => field.set(request, *value == *equal),
            Cond::Has(field, present) => field.set(request, *present),
            Cond::Ne(field, value) => {
                if field.get(request) == Some(value.as_str()) {
                    field.set(request, Some(format!("not-{value}")));
                }
            }
            Cond::NotIn(field, values) => {
                if field
                    .get(request)
                    .is_some_and(|v| values.iter().any(|x| x == v))
                {
                    field.set(request, Some("elsewhere".to_owned()));
                }
            }
            Cond::Risk(cmp, n) => request.risk = Some(RiskValue::Num(cmp.satisfying(*n, 1))),
            Cond::Ttl(cmp, seconds) => {
                request.requested_ttl = Some(cmp.satisfying(*seconds as i64, 60).max(0) as u64)
            }
            Cond::Prop(key, present) => {
                let props = request.properties.get_or_insert_with(Vec::new);
                props.retain(|(k, _)| k != key);
                if *present {
                    props.push((key.clone(), "yes".to_owned()));
                }
            }
            Cond::Ticket(ticket) => request.ticket = Some(ticket.clone()),
        }
    }
}

/// What a generated rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenKind {
    /// `permit if ... grant [...] for TTL`
    Permit {
        /// The grant's scope patterns (templates allowed).
        grant: Vec<String>,
        /// The TTL as written (`15m`).
        ttl: &'static str,
        /// Obligation clauses as written (`revoke on task_end`).
        obligations: Vec<String>,
    },
    /// `forbid if ... because "..."`
    Forbid,
    /// A writ-only rule (`limit ...`, `require ...`), written whole up to
    /// ` if`.
    Other(String),
}

/// One generated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRule {
    /// Its `@id`.
    pub id: String,
    /// What it does.
    pub kind: GenKind,
    /// Its conjuncts, in order.
    pub conds: Vec<Cond>,
}

impl GenRule {
    /// Whether the rule's condition holds for `request`: `Some(true)`,
    /// `Some(false)`, or `None` when writ would report an error.
    pub fn applies(&self, request: &GenRequest) -> Option<bool> {
        let mut error = false;
        for cond in &self.conds {
            match cond.eval(request) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => error = true,
            }
        }
        if error {
            None
        } else {
            Some(true)
        }
    }

    fn is_permit(&self) -> bool {
        matches!(self.kind, GenKind::Permit { .. })
    }
}

/// A generated policy set.
#[derive(Debug, Clone)]
pub struct GenSet {
    /// The config it came from.
    pub config: GenConfig,
    /// The rules, in order.
    pub rules: Vec<GenRule>,
    /// The resource kinds in use.
    pub resource_kinds: Vec<String>,
    /// Made by [`generate_flags`] or [`generate_shape`]: requests carry
    /// `subject.shared` and `context.break_glass`.
    pub flags: bool,
    /// Made by [`generate_shape`]: requests carry `context.risk_score` and
    /// `resource.properties`.
    pub shape: Option<Shape>,
}

/// A value of `context.risk_score`: usually a number, sometimes a string,
/// to exercise range switches on a value of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiskValue {
    /// `40`
    Num(i64),
    /// `"high"`
    Str(String),
}

/// A value of `context.break_glass`: usually a bool, sometimes a string,
/// to exercise boolean switches on a value of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    /// `true`
    Bool(bool),
    /// `"yes"`
    Str(String),
}

/// A value of `context.tier`: usually a string, sometimes a number, to
/// exercise switches on a value of the wrong type.
#[derive(Debug, Clone, PartialEq)]
pub enum TierValue {
    /// `"gold"`
    Str(String),
    /// `7`
    Num(i64),
}

/// A generated request; `None` fields are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenRequest {
    /// `action`
    pub action: Option<String>,
    /// `subject.kind`
    pub subject_kind: Option<String>,
    /// `subject.attested`
    pub attested: Option<bool>,
    /// `subject.owner`
    pub subject_owner: Option<String>,
    /// `resource.id`
    pub resource_id: Option<String>,
    /// `resource.kind`
    pub resource_kind: Option<String>,
    /// `resource.owner`
    pub resource_owner: Option<String>,
    /// `environment.name`
    pub environment: Option<String>,
    /// `sensitivity`, as an index into [`LEVELS`].
    pub sensitivity: Option<usize>,
    /// `context.tier`
    pub tier: Option<TierValue>,
    /// `subject.shared`
    pub shared: Option<bool>,
    /// `context.break_glass`
    pub break_glass: Option<FlagValue>,
    /// `requested.scope`
    pub requested_scope: Option<Vec<String>>,
    /// `requested.ttl`
    pub requested_ttl: Option<u64>,
    /// `context.risk_score`
    pub risk: Option<RiskValue>,
    /// `resource.properties`, key and value (an object when `Some`)
    pub properties: Option<Vec<(String, String)>>,
    /// `context.ticket`
    pub ticket: Option<String>,
}

/// Generates a policy set.
pub fn generate(config: GenConfig) -> GenSet {
    let mut rng = Rng::new(config.seed);
    // Enough resource kinds that a full head (action, kinds, environment)
    // is shared by few rules, as in a real inventory of resources.
    let kinds = (config.rules / 25).max(NAMED_RESOURCE_KINDS.len());
    let resource_kinds: Vec<String> = (0..kinds)
        .map(|i| match NAMED_RESOURCE_KINDS.get(i) {
            Some(name) => (*name).to_owned(),
            None => format!("kind{i}"),
        })
        .collect();
    let mut rules: Vec<GenRule> = Vec::with_capacity(config.rules);
    // The head and residual-free tests of the current group of permits that
    // differ only in their residual condition, and which residuals are left.
    let mut group: Option<(Vec<Cond>, Vec<Cond>)> = None;
    for index in 0..config.rules {
        if index % 10 == 9 {
            rules.push(forbid(&mut rng, index, &resource_kinds));
            continue;
        }
        if config.extras && index % 25 == 12 {
            rules.push(extra_rule(&mut rng, index));
            continue;
        }
        let conds = match group.as_mut() {
            Some((head, residuals)) if !residuals.is_empty() => {
                let mut conds = head.clone();
                conds.push(residuals.remove(0));
                conds
            }
            _ => {
                let head = permit_head(&mut rng, &resource_kinds);
                if rng.chance(15) {
                    // Start a group of two or three permits alike but for
                    // their residual condition.
                    let mut residuals = vec![
                        Cond::Tier(TIERS[0].to_owned()),
                        Cond::Tier(TIERS[1].to_owned()),
                        Cond::OwnerMatch,
                    ];
                    residuals.truncate(2 + rng.below(2));
                    let mut conds = head.clone();
                    conds.push(residuals.remove(0));
                    group = Some((head, residuals));
                    conds
                } else {
                    group = None;
                    head
                }
            }
        };
        rules.push(permit(&mut rng, index, conds, config.extras));
    }
    GenSet {
        config,
        rules,
        resource_kinds,
        flags: false,
        shape: None,
    }
}

/// Generates a set of the flags shape (see the module documentation):
/// permits of four string tests and one boolean test, a forbid every ten
/// rules of two string tests and one boolean test, over resource kinds that
/// do not grow with the set. `extras` adds writ-only rules and
/// obligations, as for [`generate`].
pub fn generate_flags(config: GenConfig) -> GenSet {
    let mut rng = Rng::new(config.seed);
    let resource_kinds = owned(NAMED_RESOURCE_KINDS);
    let mut rules: Vec<GenRule> = Vec::with_capacity(config.rules);
    for index in 0..config.rules {
        if index % 10 == 9 {
            let field = if rng.chance(60) {
                FlagField::Shared
            } else {
                FlagField::BreakGlass
            };
            // `== true` or `!= false`: the flag is set.
            let equal = rng.chance(50);
            let mut conds = vec![
                Cond::Eq(Field::Environment, rng.pick(ENVIRONMENTS).to_string()),
                Cond::Eq(Field::ResourceKind, rng.pick(&resource_kinds).clone()),
                Cond::Flag(field, equal, equal),
            ];
            if config.extras && rng.chance(40) {
                // `context has break_glass`: set, or holding anything.
                conds[2] = Cond::Has(field, true);
            }
            rules.push(GenRule {
                id: format!("gen.f{index}"),
                kind: GenKind::Forbid,
                conds,
            });
            continue;
        }
        if config.extras && index % 25 == 12 {
            rules.push(extra_rule(&mut rng, index));
            continue;
        }
        let field = *rng.pick(&[
            FlagField::Attested,
            FlagField::Shared,
            FlagField::BreakGlass,
        ]);
        let mut conds = vec![
            string_test(&mut rng, Field::Action, &owned(ACTIONS), 15),
            string_test(&mut rng, Field::SubjectKind, &owned(SUBJECT_KINDS), 10),
            string_test(&mut rng, Field::ResourceKind, &resource_kinds, 10),
            string_test(&mut rng, Field::Environment, &owned(ENVIRONMENTS), 10),
            Cond::Flag(field, rng.chance(50), rng.chance(50)),
        ];
        if config.extras && rng.chance(50) {
            // A presence test, which the tree indexes too.
            let field = *rng.pick(&[
                FlagField::Attested,
                FlagField::Shared,
                FlagField::BreakGlass,
            ]);
            conds.push(Cond::Has(field, rng.chance(50)));
        }
        rules.push(permit(&mut rng, index, conds, config.extras));
    }
    GenSet {
        config,
        rules,
        resource_kinds,
        flags: true,
        shape: None,
    }
}

/// Properties the shapes' rules test with `has` (`resource.properties has
/// pii`); requests carry a random few.
pub const PROPERTIES: &[&str] = &["pii", "owner", "tier", "region", "backup", "public"];

/// Properties only forbids test; the shapes' requests never carry them
/// unless perturbed.
const FORBIDDEN_PROPERTIES: &[&str] = &["quarantined", "legal_hold", "compromised"];

/// How many distinct tickets the rules of the shapes name.
const TICKETS: usize = 50;

/// Shapes of [`generate_shape`], none of which flatters the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Permits end in a range on `context.risk_score` or `requested.ttl`;
    /// forbids are `environment.name == ...` and a range above the
    /// permits'.
    Numeric,
    /// Permits end in one or two presence tests below an attribute
    /// (`resource.properties has pii`, `not resource.properties has
    /// owner`); forbids are `environment.name == ...` and a presence.
    Presence,
    /// Permits as in the flags shape; every forbid is a single test, on
    /// any attribute: a string, a complement, a bool, a range, a presence.
    Forbids,
    /// Permits that also test an attribute the requests lack
    /// (`context.ticket == "T-7"`, half of them) or exclude an environment
    /// (`!=`, `not in`); forbids as in [`Shape::Forbids`].
    Absent,
    /// A random mix of every test above, in permits and forbids.
    Mixed,
}

impl Shape {
    /// Every shape, in the order the benches report them.
    pub const ALL: [Shape; 5] = [
        Shape::Numeric,
        Shape::Presence,
        Shape::Forbids,
        Shape::Absent,
        Shape::Mixed,
    ];

    /// The shape's name in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Numeric => "numeric",
            Shape::Presence => "presence",
            Shape::Forbids => "forbids",
            Shape::Absent => "absent",
            Shape::Mixed => "mixed",
        }
    }
}

/// Generates a set of one of the [`Shape`]s: permits of four string tests
/// (action, subject kind, resource kind, environment) and the shape's
/// tests, a forbid every ten rules, over resource kinds that do not grow
/// with the set. `extras` adds writ-only rules and obligations, as for
/// [`generate`].
pub fn generate_shape(config: GenConfig, shape: Shape) -> GenSet {
    let mut rng = Rng::new(config.seed ^ (shape as u64 + 1).wrapping_mul(0x9E37_79B9));
    let resource_kinds = owned(NAMED_RESOURCE_KINDS);
    let mut rules: Vec<GenRule> = Vec::with_capacity(config.rules);
    for index in 0..config.rules {
        if index % 10 == 9 {
            rules.push(GenRule {
                id: format!("gen.f{index}"),
                kind: GenKind::Forbid,
                conds: shape_forbid(&mut rng, shape),
            });
            continue;
        }
        if config.extras && index % 25 == 12 {
            rules.push(extra_rule(&mut rng, index));
            continue;
        }
        let mut conds = vec![
            string_test(&mut rng, Field::Action, &owned(ACTIONS), 15),
            string_test(&mut rng, Field::SubjectKind, &owned(SUBJECT_KINDS), 10),
            string_test(&mut rng, Field::ResourceKind, &resource_kinds, 10),
            string_test(&mut rng, Field::Environment, &owned(ENVIRONMENTS), 10),
        ];
        let complement = match shape {
            Shape::Absent => 40,
            Shape::Mixed => 20,
            _ => 0,
        };
        if rng.chance(complement) {
            // Any environment but one or two.
            let first = rng.below(ENVIRONMENTS.len());
            conds[3] = if rng.chance(50) {
                Cond::Ne(Field::Environment, ENVIRONMENTS[first].to_owned())
            } else {
                Cond::NotIn(
                    Field::Environment,
                    vec![
                        ENVIRONMENTS[first].to_owned(),
                        ENVIRONMENTS[(first + 1) % ENVIRONMENTS.len()].to_owned(),
                    ],
                )
            };
        }
        let flag = |rng: &mut Rng| {
            let field = *rng.pick(&[FlagField::Attested, FlagField::Shared]);
            Cond::Flag(field, rng.chance(50), rng.chance(50))
        };
        match shape {
            Shape::Numeric => conds.push(range_test(&mut rng)),
            Shape::Presence => {
                let first = prop_test(&mut rng);
                if rng.chance(30) {
                    // On another property: the same one either way round
                    // never holds, which the checker refuses.
                    let second = prop_test(&mut rng);
                    if matches!((&first, &second), (Cond::Prop(a, _), Cond::Prop(b, _)) if a != b) {
                        conds.push(second);
                    }
                }
                conds.insert(4, first);
            }
            Shape::Forbids => conds.push(flag(&mut rng)),
            Shape::Absent => {
                conds.push(flag(&mut rng));
                if rng.chance(50) {
                    conds.push(Cond::Ticket(format!("T-{}", rng.below(TICKETS))));
                }
            }
            Shape::Mixed => {
                // One or two tests of different kinds (two of a kind may
                // contradict each other, which the checker refuses).
                let first = rng.below(4);
                let mut kinds = vec![first];
                if rng.chance(50) {
                    kinds.push((first + 1 + rng.below(3)) % 4);
                }
                for kind in kinds {
                    conds.push(match kind {
                        0 => flag(&mut rng),
                        1 => range_test(&mut rng),
                        2 => prop_test(&mut rng),
                        _ => Cond::Ticket(format!("T-{}", rng.below(TICKETS))),
                    });
                }
            }
        }
        rules.push(permit(&mut rng, index, conds, config.extras));
    }
    GenSet {
        config,
        rules,
        resource_kinds,
        flags: true,
        shape: Some(shape),
    }
}

/// A range for a permit: `context.risk_score` below (or at most) a bound
/// of 30 to 100, above (or at least) one of 0 to 30, or equal to one
/// value; or a `requested.ttl` cap.
fn range_test(rng: &mut Rng) -> Cond {
    if rng.chance(30) {
        let cap = [900u64, 1800, 3600, 7200, 14400][rng.below(5)];
        return Cond::Ttl(*rng.pick(&[Cmp::Lt, Cmp::Le]), cap);
    }
    match rng.below(10) {
        0..=5 => Cond::Risk(*rng.pick(&[Cmp::Lt, Cmp::Le]), 30 + rng.below(71) as i64),
        6..=8 => Cond::Risk(*rng.pick(&[Cmp::Gt, Cmp::Ge]), rng.below(31) as i64),
        _ => Cond::Risk(Cmp::Eq, rng.below(101) as i64),
    }
}

/// A presence test for a permit, either way round.
fn prop_test(rng: &mut Rng) -> Cond {
    Cond::Prop(rng.pick(PROPERTIES).to_string(), rng.chance(60))
}

/// A forbid of a shape. The forbids test values the shapes' requests do
/// not hold (unless perturbed), so that a request can match a permit.
fn shape_forbid(rng: &mut Rng, shape: Shape) -> Vec<Cond> {
    let env = Cond::Eq(Field::Environment, rng.pick(ENVIRONMENTS).to_string());
    match shape {
        Shape::Numeric => {
            if rng.chance(70) {
                vec![
                    env,
                    Cond::Risk(*rng.pick(&[Cmp::Gt, Cmp::Ge]), 80 + rng.below(21) as i64),
                ]
            } else {
                vec![
                    env,
                    Cond::Ttl(Cmp::Gt, [28_800u64, 43_200, 86_400][rng.below(3)]),
                ]
            }
        }
        Shape::Presence => vec![
            env,
            Cond::Prop(rng.pick(FORBIDDEN_PROPERTIES).to_string(), true),
        ],
        Shape::Forbids | Shape::Absent | Shape::Mixed => {
            let single = match rng.below(if shape == Shape::Mixed { 8 } else { 6 }) {
                0 => Cond::Eq(
                    Field::Action,
                    (*rng.pick(&["purge", "escalate", "impersonate"])).to_owned(),
                ),
                1 => Cond::In(
                    Field::ResourceKind,
                    vec!["hsm".to_owned(), "root-ca".to_owned()],
                ),
                2 => Cond::Flag(FlagField::Shared, true, true),
                3 => Cond::Risk(*rng.pick(&[Cmp::Gt, Cmp::Ge]), 80 + rng.below(21) as i64),
                4 => Cond::Prop(rng.pick(FORBIDDEN_PROPERTIES).to_string(), true),
                5 => Cond::Ttl(Cmp::Gt, [28_800u64, 43_200, 86_400][rng.below(3)]),
                6 => Cond::Flag(FlagField::BreakGlass, true, true),
                // Any subject kind but those of the inventory (and the
                // non-matching request's): a complement forbid.
                _ => {
                    let mut known = owned(SUBJECT_KINDS);
                    known.push("robot".to_owned());
                    Cond::NotIn(Field::SubjectKind, known)
                }
            };
            vec![single]
        }
    }
}

/// One string test: usually equality, sometimes a short list.
fn string_test(rng: &mut Rng, field: Field, pool: &[String], list_percent: usize) -> Cond {
    if rng.chance(list_percent) && pool.len() > 2 {
        let first = rng.below(pool.len());
        let count = 2 + rng.below(2);
        let values = (0..count)
            .map(|i| pool[(first + i) % pool.len()].clone())
            .collect();
        Cond::In(field, values)
    } else {
        Cond::Eq(field, rng.pick(pool).clone())
    }
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn permit_head(rng: &mut Rng, resource_kinds: &[String]) -> Vec<Cond> {
    let mut conds = vec![
        string_test(rng, Field::Action, &owned(ACTIONS), 15),
        string_test(rng, Field::SubjectKind, &owned(SUBJECT_KINDS), 10),
        string_test(rng, Field::ResourceKind, resource_kinds, 10),
        string_test(rng, Field::Environment, &owned(ENVIRONMENTS), 10),
        Cond::Attested,
    ];
    match rng.below(10) {
        0 => conds.push(Cond::SensAtLeast(1 + rng.below(3))),
        1 => conds.push(Cond::SensAtMost(rng.below(3))),
        2 => {
            let low = rng.below(3);
            conds.push(Cond::SensIn(vec![low, low + 1]));
        }
        _ => {}
    }
    conds
}

fn permit(rng: &mut Rng, index: usize, conds: Vec<Cond>, extras: bool) -> GenRule {
    let grant = if rng.chance(75) {
        vec!["{action}:{resource.id}".to_owned()]
    } else {
        // A literal pattern over the kinds it tests.
        let verb = match &conds[0] {
            Cond::Eq(_, action) => action.clone(),
            _ => "*".to_owned(),
        };
        let scheme = match &conds[2] {
            Cond::Eq(_, kind) => kind.clone(),
            Cond::In(_, kinds) => kinds.first().cloned().unwrap_or_default(),
            _ => "any".to_owned(),
        };
        vec![format!("{verb}:{scheme}://{}/**", rng.pick(TEAMS))]
    };
    let (ttl, _) = *rng.pick(TTLS);
    let mut obligations = Vec::new();
    if extras {
        if rng.chance(25) {
            obligations.push("revoke on task_end".to_owned());
        }
        if rng.chance(15) {
            obligations.push("audience \"{resource.id}\"".to_owned());
        }
    }
    GenRule {
        id: format!("gen.p{index}"),
        kind: GenKind::Permit {
            grant,
            ttl,
            obligations,
        },
        conds,
    }
}

fn forbid(rng: &mut Rng, index: usize, resource_kinds: &[String]) -> GenRule {
    let mut conds = vec![
        Cond::Eq(Field::SubjectKind, rng.pick(SUBJECT_KINDS).to_string()),
        Cond::Eq(Field::Environment, rng.pick(ENVIRONMENTS).to_string()),
    ];
    conds.push(match rng.below(3) {
        0 => Cond::SensAtLeast(2 + rng.below(2)),
        1 => string_test(rng, Field::Action, &owned(ACTIONS), 50),
        _ => Cond::Eq(Field::ResourceKind, rng.pick(resource_kinds).clone()),
    });
    GenRule {
        id: format!("gen.f{index}"),
        kind: GenKind::Forbid,
        conds,
    }
}

fn extra_rule(rng: &mut Rng, index: usize) -> GenRule {
    let kind_test = Cond::Eq(Field::SubjectKind, rng.pick(SUBJECT_KINDS).to_string());
    let env_test = Cond::Eq(Field::Environment, rng.pick(ENVIRONMENTS).to_string());
    let (head, conds) = match rng.below(4) {
        0 => ("limit ttl 10m", vec![env_test, Cond::SensAtLeast(2)]),
        1 => (
            "limit scope [\"read:**\", \"list:**\", \"invoke:tool://**\"]",
            vec![kind_test],
        ),
        2 => (
            "require approval",
            vec![
                kind_test,
                string_test(rng, Field::Action, &owned(ACTIONS), 60),
            ],
        ),
        _ => (
            "require log",
            vec![env_test, Cond::Tier(TIERS[2].to_owned())],
        ),
    };
    GenRule {
        id: format!("gen.x{index}"),
        kind: GenKind::Other(head.to_owned()),
        conds,
    }
}

impl GenSet {
    /// The set in writ.
    pub fn writ_source(&self) -> String {
        let mut out = String::with_capacity(self.rules.len() * 220);
        for rule in &self.rules {
            let conds: Vec<String> = rule.conds.iter().map(Cond::writ).collect();
            let _ = writeln!(out, "@id(\"{}\")", rule.id);
            match &rule.kind {
                GenKind::Permit {
                    grant,
                    ttl,
                    obligations,
                } => {
                    let grant: Vec<String> = grant.iter().map(|g| format!("\"{g}\"")).collect();
                    let _ = write!(
                        out,
                        "permit if {}\n  grant [{}] for {ttl}",
                        conds.join(" and "),
                        grant.join(", ")
                    );
                    for obligation in obligations {
                        let _ = write!(out, " {obligation}");
                    }
                    out.push_str(";\n\n");
                }
                GenKind::Forbid => {
                    let _ = write!(
                        out,
                        "forbid if {}\n  because \"generated forbid {}\";\n\n",
                        conds.join(" and "),
                        rule.id
                    );
                }
                GenKind::Other(head) => {
                    let _ = write!(out, "{head} if {};\n\n", conds.join(" and "));
                }
            }
        }
        out
    }

    /// The same set in Cedar. Writ-only rules (see [`GenConfig::extras`])
    /// are left out: they never change allow or deny on their own.
    pub fn cedar_source(&self) -> String {
        let mut out = String::with_capacity(self.rules.len() * 260);
        for rule in &self.rules {
            let effect = match rule.kind {
                GenKind::Permit { .. } => "permit",
                GenKind::Forbid => "forbid",
                GenKind::Other(_) => continue,
            };
            let action = rule.conds.iter().find_map(|c| match c {
                Cond::Eq(Field::Action, value) => Some(format!("action == Action::\"{value}\"")),
                Cond::In(Field::Action, values) => {
                    let items: Vec<String> =
                        values.iter().map(|v| format!("Action::\"{v}\"")).collect();
                    Some(format!("action in [{}]", items.join(", ")))
                }
                _ => None,
            });
            let conds: Vec<String> = rule.conds.iter().filter_map(Cond::cedar).collect();
            let _ = writeln!(out, "@id(\"{}\")", rule.id);
            let _ = write!(
                out,
                "{effect} (principal, {}, resource)",
                action.as_deref().unwrap_or("action")
            );
            if !conds.is_empty() {
                let _ = write!(out, "\nwhen {{ {} }}", conds.join(" && "));
            }
            out.push_str(";\n\n");
        }
        out
    }

    fn permits(&self) -> impl Iterator<Item = (usize, &GenRule)> {
        self.rules.iter().enumerate().filter(|(_, r)| r.is_permit())
    }

    /// The number of permits whose condition holds and of forbids that
    /// apply (hold or error: they fail closed), by the model.
    pub fn count_applying(&self, request: &GenRequest) -> (usize, usize) {
        let mut permits = 0;
        let mut forbids = 0;
        for rule in &self.rules {
            match (&rule.kind, rule.applies(request)) {
                (GenKind::Permit { .. }, Some(true)) => permits += 1,
                (GenKind::Forbid, Some(true) | None) => forbids += 1,
                _ => {}
            }
        }
        (permits, forbids)
    }

    /// A request for everything `rule` tests, with every attribute present,
    /// asking for the scope its grant gives.
    pub fn request_for(&self, rule: &GenRule, seed: usize) -> GenRequest {
        let team = TEAMS[seed % TEAMS.len()];
        let mut request = GenRequest {
            action: Some(ACTIONS[0].to_owned()),
            subject_kind: Some(SUBJECT_KINDS[0].to_owned()),
            attested: Some(true),
            subject_owner: Some(team.to_owned()),
            resource_id: None,
            resource_kind: Some(self.resource_kinds[0].clone()),
            resource_owner: Some(TEAMS[(seed + 1) % TEAMS.len()].to_owned()),
            environment: Some(ENVIRONMENTS[0].to_owned()),
            sensitivity: Some(1),
            tier: Some(TierValue::Str("none".to_owned())),
            shared: self.flags.then_some(false),
            break_glass: self.flags.then_some(FlagValue::Bool(false)),
            requested_scope: None,
            requested_ttl: Some(3600),
            risk: self.shape.map(|_| RiskValue::Num(20)),
            properties: self.shape.map(|_| Vec::new()),
            ticket: None,
        };
        for cond in &rule.conds {
            cond.satisfy(&mut request);
        }
        let kind = request.resource_kind.clone().unwrap_or_default();
        let resource = format!("{kind}://{team}/r{seed}");
        request.resource_id = Some(resource.clone());
        if let GenKind::Permit { grant, .. } = &rule.kind {
            let action = request.action.clone().unwrap_or_default();
            request.requested_scope = Some(
                grant
                    .iter()
                    .map(|g| {
                        if g.contains('{') {
                            format!("{action}:{resource}")
                        } else {
                            // `verb:scheme://team/**`: one item under it.
                            let stem = g.trim_end_matches("/**").replacen('*', &action, 1);
                            format!("{stem}/r{seed}")
                        }
                    })
                    .collect(),
            );
        }
        request
    }

    /// A request that exactly one permit matches and no forbid applies
    /// (by the model), with every attribute present; `None` if the set
    /// has no such permit.
    pub fn matching_request(&self) -> Option<(GenRequest, String)> {
        let permits: Vec<(usize, &GenRule)> = self.permits().collect();
        if permits.is_empty() {
            return None;
        }
        // Start in the middle so that large sets are not favoured by order.
        let start = permits.len() / 2;
        for offset in 0..permits.len() {
            let (index, rule) = permits[(start + offset) % permits.len()];
            let request = self.request_for(rule, index);
            if self.count_applying(&request) == (1, 0) {
                return Some((request, rule.id.clone()));
            }
        }
        None
    }

    /// Of the requests built for the first 500 permits, the one the most
    /// permits match with no forbid applying (by the model), with how many
    /// match; `None` if no such request matches two or more.
    pub fn many_matching_request(&self) -> Option<(GenRequest, usize)> {
        let mut best: Option<(GenRequest, usize)> = None;
        for (index, rule) in self.permits().take(500) {
            let request = self.request_for(rule, index);
            let (permits, forbids) = self.count_applying(&request);
            if forbids == 0 && permits >= 2 && best.as_ref().map_or(true, |b| permits > b.1) {
                best = Some((request, permits));
            }
        }
        best
    }

    /// A request that no rule matches: every attribute present, no value
    /// one the rules test.
    pub fn non_matching_request(&self) -> GenRequest {
        GenRequest {
            action: Some("audit".to_owned()),
            subject_kind: Some("robot".to_owned()),
            attested: Some(true),
            subject_owner: Some(TEAMS[0].to_owned()),
            resource_id: Some("vault://payments/keys".to_owned()),
            resource_kind: Some("vault".to_owned()),
            resource_owner: Some(TEAMS[1].to_owned()),
            environment: Some("moon".to_owned()),
            sensitivity: Some(0),
            tier: Some(TierValue::Str("none".to_owned())),
            shared: self.flags.then_some(false),
            break_glass: self.flags.then_some(FlagValue::Bool(false)),
            requested_scope: Some(vec!["audit:vault://payments/keys".to_owned()]),
            requested_ttl: Some(3600),
            risk: self.shape.map(|_| RiskValue::Num(20)),
            properties: self.shape.map(|_| Vec::new()),
            ticket: None,
        }
    }

    /// A random request: half the time built for a random rule and then
    /// perturbed, otherwise drawn field by field; any field may be missing
    /// or hold a value no rule tests.
    pub fn random_request(&self, rng: &mut Rng) -> GenRequest {
        let mut request = if !self.rules.is_empty() && rng.chance(50) {
            let index = rng.below(self.rules.len());
            let mut request = self.request_for(&self.rules[index], index);
            if rng.chance(30) {
                request.requested_scope = None;
            }
            if rng.chance(50) {
                request.requested_ttl = None;
            }
            request
        } else {
            let team = *rng.pick(TEAMS);
            let kind = rng.pick(&self.resource_kinds).clone();
            let action = *rng.pick(ACTIONS);
            let resource = format!("{kind}://{team}/r{}", rng.below(5));
            let scope = match rng.below(4) {
                0 => None,
                1 => Some(vec![format!("{action}:{resource}")]),
                2 => Some(vec![
                    format!("{action}:{resource}"),
                    format!("read:{kind}://{}/r1", rng.pick(TEAMS)),
                ]),
                _ => Some(vec![format!("list:{kind}://{team}/x")]),
            };
            GenRequest {
                action: Some(action.to_owned()),
                subject_kind: Some(rng.pick(SUBJECT_KINDS).to_string()),
                attested: Some(rng.chance(80)),
                subject_owner: Some(rng.pick(TEAMS).to_string()),
                resource_id: Some(resource),
                resource_kind: Some(kind),
                resource_owner: Some(team.to_owned()),
                environment: Some(rng.pick(ENVIRONMENTS).to_string()),
                sensitivity: Some(rng.below(LEVELS.len())),
                tier: Some(TierValue::Str(rng.pick(TIERS).to_string())),
                shared: self.flags.then(|| rng.chance(20)),
                break_glass: self.flags.then(|| FlagValue::Bool(rng.chance(20))),
                requested_scope: scope,
                requested_ttl: [None, Some(60), Some(900), Some(3600), Some(7200)][rng.below(5)],
                risk: self.shape.map(|_| RiskValue::Num(rng.below(101) as i64)),
                properties: self.shape.map(|_| {
                    PROPERTIES
                        .iter()
                        .filter(|_| rng.chance(25))
                        .map(|k| ((*k).to_owned(), "yes".to_owned()))
                        .collect()
                }),
                ticket: None,
            }
        };
        perturb(rng, &mut request);
        request
    }
}

/// Drops or changes a few fields: missing attributes make the tree visit
/// every branch of the switches on them.
fn perturb(rng: &mut Rng, request: &mut GenRequest) {
    for field in [
        Field::Action,
        Field::SubjectKind,
        Field::ResourceKind,
        Field::Environment,
    ] {
        match rng.below(100) {
            0..=7 => field.set(request, None),
            8..=11 => field.set(request, Some("unknown".to_owned())),
            _ => {}
        }
    }
    if rng.chance(8) {
        request.attested = None;
    }
    if rng.chance(8) {
        request.sensitivity = None;
    }
    match rng.below(100) {
        0..=7 => request.tier = None,
        8..=11 => request.tier = Some(TierValue::Num(7)),
        _ => {}
    }
    if rng.chance(8) {
        request.subject_owner = None;
    }
    if rng.chance(8) {
        request.resource_owner = None;
    }
    if rng.chance(8) {
        request.resource_id = None;
    }
    // The flags shape's booleans: missing, flipped or (where the schema
    // allows it) of another type.
    if let Some(shared) = request.shared {
        match rng.below(100) {
            0..=7 => request.shared = None,
            8..=19 => request.shared = Some(!shared),
            _ => {}
        }
    }
    // The shapes' numbers, properties and ticket: missing, moved, of
    // another type, or (for the ticket) present.
    if let Some(RiskValue::Num(risk)) = request.risk {
        match rng.below(100) {
            0..=7 => request.risk = None,
            8..=15 => request.risk = Some(RiskValue::Str("high".to_owned())),
            16..=35 => request.risk = Some(RiskValue::Num(risk + rng.below(21) as i64 - 10)),
            _ => {}
        }
    }
    if let Some(props) = request.properties.as_mut() {
        match rng.below(100) {
            0..=7 => request.properties = None,
            8..=31 => {
                // Set (or, a third of the time, set to `""`, which `has`
                // reads as absent) one property.
                let key = *rng.pick(PROPERTIES);
                props.retain(|(k, _)| k != key);
                let value = if rng.chance(33) { "" } else { "yes" };
                props.push((key.to_owned(), value.to_owned()));
            }
            32..=39 => props.clear(),
            _ => {}
        }
    }
    if rng.chance(10) {
        request.ticket = Some(format!("T-{}", rng.below(TICKETS)));
    }
    if let Some(FlagValue::Bool(flag)) = request.break_glass {
        match rng.below(100) {
            0..=7 => request.break_glass = None,
            8..=19 => request.break_glass = Some(FlagValue::Str("yes".to_owned())),
            20..=31 => request.break_glass = Some(FlagValue::Bool(!flag)),
            _ => {}
        }
    }
}

fn insert(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

impl GenRequest {
    /// The request as writ's JSON.
    pub fn to_writ_value(&self) -> Value {
        let string = |s: &Option<String>| s.as_ref().map(|s| Value::String(s.clone()));
        let mut subject = Map::new();
        insert(&mut subject, "kind", string(&self.subject_kind));
        insert(&mut subject, "attested", self.attested.map(Value::Bool));
        insert(&mut subject, "owner", string(&self.subject_owner));
        insert(&mut subject, "shared", self.shared.map(Value::Bool));
        let mut resource = Map::new();
        insert(&mut resource, "id", string(&self.resource_id));
        insert(&mut resource, "kind", string(&self.resource_kind));
        insert(&mut resource, "owner", string(&self.resource_owner));
        insert(&mut resource, "properties", self.properties_json());
        let mut environment = Map::new();
        insert(&mut environment, "name", string(&self.environment));
        let mut context = Map::new();
        insert(
            &mut context,
            "tier",
            self.tier.as_ref().map(TierValue::to_json),
        );
        insert(
            &mut context,
            "break_glass",
            self.break_glass.as_ref().map(FlagValue::to_json),
        );
        insert(
            &mut context,
            "risk_score",
            self.risk.as_ref().map(RiskValue::to_json),
        );
        insert(&mut context, "ticket", string(&self.ticket));
        let mut requested = Map::new();
        insert(
            &mut requested,
            "scope",
            self.requested_scope.as_ref().map(|s| json!(s)),
        );
        insert(&mut requested, "ttl", self.requested_ttl.map(|t| json!(t)));
        let mut root = Map::new();
        root.insert("subject".to_owned(), Value::Object(subject));
        insert(&mut root, "action", string(&self.action));
        root.insert("resource".to_owned(), Value::Object(resource));
        root.insert("environment".to_owned(), Value::Object(environment));
        insert(
            &mut root,
            "sensitivity",
            self.sensitivity
                .map(|l| Value::String(LEVELS[l].to_owned())),
        );
        root.insert("requested".to_owned(), Value::Object(requested));
        root.insert("context".to_owned(), Value::Object(context));
        Value::Object(root)
    }

    fn properties_json(&self) -> Option<Value> {
        let props = self.properties.as_ref()?;
        Some(Value::Object(
            props
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ))
    }

    /// The request as writ's JSON text.
    pub fn to_writ_json(&self) -> String {
        self.to_writ_value().to_string()
    }

    /// The request, parsed and validated as the broker's would be.
    pub fn to_request(&self) -> Result<Request, RequestError> {
        Request::from_json(&self.to_writ_json())
    }

    /// The Cedar principal: `Workload::"w"`.
    pub fn cedar_principal(&self) -> &'static str {
        r#"Workload::"w""#
    }

    /// The Cedar action: `Action::"read"` (an action no rule names when
    /// the request has none).
    pub fn cedar_action(&self) -> String {
        format!("Action::\"{}\"", self.action.as_deref().unwrap_or("none"))
    }

    /// The Cedar resource: `Resource::"r"`.
    pub fn cedar_resource(&self) -> &'static str {
        r#"Resource::"r""#
    }

    /// The Cedar entities (principal and resource with their attributes),
    /// as Cedar's entity JSON.
    pub fn cedar_entities_json(&self) -> String {
        let string = |s: &Option<String>| s.as_ref().map(|s| Value::String(s.clone()));
        let mut principal = Map::new();
        insert(&mut principal, "kind", string(&self.subject_kind));
        insert(&mut principal, "attested", self.attested.map(Value::Bool));
        insert(&mut principal, "owner", string(&self.subject_owner));
        insert(&mut principal, "shared", self.shared.map(Value::Bool));
        let mut resource = Map::new();
        insert(&mut resource, "kind", string(&self.resource_kind));
        insert(&mut resource, "owner", string(&self.resource_owner));
        insert(&mut resource, "id", string(&self.resource_id));
        insert(&mut resource, "properties", self.properties_json());
        json!([
            {"uid": {"type": "Workload", "id": "w"}, "attrs": principal, "parents": []},
            {"uid": {"type": "Resource", "id": "r"}, "attrs": resource, "parents": []},
        ])
        .to_string()
    }

    /// The Cedar context: `environment`, `sensitivity` (0 to 3), `tier`.
    pub fn cedar_context_json(&self) -> String {
        let mut context = Map::new();
        insert(
            &mut context,
            "environment",
            self.environment.as_ref().map(|s| Value::String(s.clone())),
        );
        insert(
            &mut context,
            "sensitivity",
            self.sensitivity.map(|l| json!(l)),
        );
        insert(
            &mut context,
            "tier",
            self.tier.as_ref().map(TierValue::to_json),
        );
        insert(
            &mut context,
            "break_glass",
            self.break_glass.as_ref().map(FlagValue::to_json),
        );
        insert(
            &mut context,
            "risk_score",
            self.risk.as_ref().map(RiskValue::to_json),
        );
        insert(
            &mut context,
            "ticket",
            self.ticket.as_ref().map(|t| Value::String(t.clone())),
        );
        insert(&mut context, "ttl", self.requested_ttl.map(|t| json!(t)));
        Value::Object(context).to_string()
    }
}

impl FlagValue {
    fn to_json(&self) -> Value {
        match self {
            FlagValue::Bool(b) => Value::Bool(*b),
            FlagValue::Str(s) => Value::String(s.clone()),
        }
    }
}

impl RiskValue {
    fn to_json(&self) -> Value {
        match self {
            RiskValue::Num(n) => json!(n),
            RiskValue::Str(s) => Value::String(s.clone()),
        }
    }
}

impl TierValue {
    fn to_json(&self) -> Value {
        match self {
            TierValue::Str(s) => Value::String(s.clone()),
            TierValue::Num(n) => json!(n),
        }
    }
}

/// The default pack's example case files that decide with the pack alone
/// (no data, no other policies), in a fixed order.
const PACK_CASES: [(&str, &str); 7] = [
    ("baseline", include_str!("../tests/pack/baseline.json")),
    ("exception", include_str!("../tests/pack/exception.json")),
    ("identity", include_str!("../tests/pack/identity.json")),
    ("intent", include_str!("../tests/pack/intent.json")),
    ("lifecycle", include_str!("../tests/pack/lifecycle.json")),
    ("scope", include_str!("../tests/pack/scope.json")),
    ("ttl", include_str!("../tests/pack/ttl.json")),
];

/// The requests of the default pack's example cases, in file and case
/// order (what the replay tests and bench log): an error names a file
/// that does not read as a case file of the pack alone.
pub fn pack_requests() -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (name, text) in PACK_CASES {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("tests/pack/{name}.json: {e}"))?;
        if value.as_object().map_or(true, |o| o.len() != 1) {
            return Err(format!(
                "tests/pack/{name}.json holds more than `cases`: it does not decide with the pack alone"
            ));
        }
        let cases = value["cases"]
            .as_array()
            .ok_or_else(|| format!("tests/pack/{name}.json has no `cases` list"))?;
        out.extend(cases.iter().map(|case| case["request"].clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Effect, Engine};

    fn engine(set: &GenSet) -> Engine {
        match Engine::compile([("gen.writ", set.writ_source())], None) {
            Ok(engine) => engine,
            Err(diagnostics) => panic!("{}", diagnostics.render(false)),
        }
    }

    #[test]
    fn same_seed_same_set_other_seed_other_set() {
        let a = generate(GenConfig::issuance(200));
        let b = generate(GenConfig::issuance(200));
        let c = generate(GenConfig {
            seed: 2,
            ..GenConfig::issuance(200)
        });
        assert_eq!(a.writ_source(), b.writ_source());
        assert_ne!(a.writ_source(), c.writ_source());
        assert_eq!(a.rules.len(), 200);
    }

    #[test]
    fn shape_every_tenth_rule_forbids_and_permits_test_five_things() {
        let set = generate(GenConfig::issuance(100));
        for (index, rule) in set.rules.iter().enumerate() {
            if index % 10 == 9 {
                assert_eq!(rule.kind, GenKind::Forbid, "{}", rule.id);
            } else {
                assert!(rule.is_permit(), "{}", rule.id);
                assert!(rule.conds.len() >= 5, "{}", rule.id);
                assert_eq!(rule.conds[4], Cond::Attested);
            }
        }
        let residual_groups = set
            .rules
            .windows(2)
            .filter(|w| w[0].is_permit() && w[1].is_permit())
            .filter(|w| w[0].conds[..5] == w[1].conds[..5] && w[0].conds != w[1].conds)
            .count();
        assert!(
            residual_groups > 0,
            "no rules that differ only in their residual"
        );
        let source = set.writ_source();
        assert!(source.contains(" in ["), "no `in` lists");
        assert!(source.contains("sensitivity "), "no sensitivity ranges");
    }

    #[test]
    fn generated_sets_compile_with_and_without_extras() {
        for seed in 0..4 {
            for extras in [false, true] {
                let set = generate(GenConfig {
                    rules: 300,
                    seed,
                    extras,
                });
                let engine = engine(&set);
                assert_eq!(engine.policy().rules.len(), 300);
            }
        }
    }

    #[test]
    fn matching_request_allows_by_exactly_its_permit() {
        for rules in [10, 100, 1000] {
            let set = generate(GenConfig::issuance(rules));
            let engine = engine(&set);
            let (request, id) = set.matching_request().expect("a matching request");
            let request = request.to_request().expect("valid request");
            for decision in [engine.decide(&request), engine.decide_naive(&request)] {
                assert_eq!(
                    decision.decision,
                    Effect::Allow,
                    "{rules}: {}",
                    decision.to_json()
                );
                assert_eq!(decision.reasons, std::slice::from_ref(&id));
                assert!(decision.errors.is_empty());
            }
        }
    }

    #[test]
    fn non_matching_request_matches_nothing() {
        for rules in [10, 100, 1000] {
            let set = generate(GenConfig::issuance(rules));
            let engine = engine(&set);
            let request = set
                .non_matching_request()
                .to_request()
                .expect("valid request");
            assert_eq!(set.count_applying(&set.non_matching_request()), (0, 0));
            let decision = engine.decide(&request);
            assert_eq!(decision.decision, Effect::Deny);
            assert!(decision.reasons.is_empty());
            assert!(decision.errors.is_empty());
            assert!(decision
                .trace
                .iter()
                .all(|e| e.outcome != crate::decision::Outcome::Matched));
        }
    }

    #[test]
    fn random_requests_are_valid_and_some_miss_attributes() {
        let set = generate(GenConfig {
            extras: true,
            ..GenConfig::issuance(100)
        });
        let mut rng = Rng::new(9);
        let mut missing = 0;
        for _ in 0..200 {
            let request = set.random_request(&mut rng);
            if request.action.is_none() || request.resource_kind.is_none() {
                missing += 1;
            }
            assert!(request.to_request().is_ok(), "{}", request.to_writ_json());
        }
        assert!(missing > 0);
    }

    #[test]
    fn cedar_text_has_one_policy_per_permit_and_forbid() {
        let set = generate(GenConfig {
            extras: true,
            ..GenConfig::issuance(100)
        });
        let cedar = set.cedar_source();
        let expected = set
            .rules
            .iter()
            .filter(|r| !matches!(r.kind, GenKind::Other(_)))
            .count();
        assert_eq!(cedar.matches("@id(").count(), expected);
        assert!(cedar.contains("principal.attested == true"));
        assert!(cedar.contains("action == Action::\""));
        assert!(!cedar.contains("{resource.id}"));
    }

    #[test]
    fn flags_shape_tests_a_boolean_in_every_rule_and_its_requests_decide_as_modelled() {
        for rules in [10, 100, 1000] {
            let set = generate_flags(GenConfig::issuance(rules));
            for (index, rule) in set.rules.iter().enumerate() {
                assert_eq!(rule.kind == GenKind::Forbid, index % 10 == 9, "{}", rule.id);
                assert!(
                    matches!(rule.conds.last(), Some(Cond::Flag(..))),
                    "{}",
                    rule.id
                );
            }
            let source = set.writ_source();
            for op in ["== true", "== false", "!= true", "!= false"] {
                if rules >= 100 {
                    assert!(source.contains(op), "{rules}: no `{op}`");
                }
            }
            let engine = engine(&set);
            let none = set.non_matching_request();
            assert_eq!(set.count_applying(&none), (0, 0));
            let decision = engine.decide(&none.to_request().expect("valid request"));
            assert_eq!(decision.decision, Effect::Deny, "{}", decision.to_json());
            assert!(decision.reasons.is_empty() && decision.errors.is_empty());
            let (one, id) = set.matching_request().expect("a matching request");
            let decision = engine.decide(&one.to_request().expect("valid request"));
            assert_eq!(decision.reasons, [id], "{}", decision.to_json());
            if rules >= 1000 {
                let (many, count) = set.many_matching_request().expect("a request many match");
                let decision = engine.decide(&many.to_request().expect("valid request"));
                assert_eq!(decision.decision, Effect::Allow, "{}", decision.to_json());
                assert_eq!(decision.reasons.len(), count, "{}", decision.to_json());
            }
        }
    }

    #[test]
    fn flags_shape_with_extras_has_presence_tests_both_ways() {
        let set = generate_flags(GenConfig {
            extras: true,
            ..GenConfig::issuance(300)
        });
        let source = set.writ_source();
        assert!(source.contains(" and context has break_glass"), "no `has`");
        assert!(source.contains(" and not subject has "), "no `not ... has`");
        assert_eq!(engine(&set).policy().rules.len(), 300);
    }

    #[test]
    fn flags_shape_random_requests_miss_flip_and_mistype_the_booleans() {
        let set = generate_flags(GenConfig::issuance(100));
        let mut rng = Rng::new(3);
        let (mut missing, mut mistyped) = (0, 0);
        for _ in 0..400 {
            let request = set.random_request(&mut rng);
            missing += usize::from(request.shared.is_none() || request.break_glass.is_none());
            mistyped += usize::from(matches!(request.break_glass, Some(FlagValue::Str(_))));
            assert!(request.to_request().is_ok(), "{}", request.to_writ_json());
        }
        assert!(missing > 0 && mistyped > 0, "{missing} {mistyped}");
    }

    #[test]
    fn shapes_compile_and_their_requests_decide_as_modelled() {
        for shape in Shape::ALL {
            for rules in [10, 1000] {
                let set = generate_shape(GenConfig::issuance(rules), shape);
                let engine = engine(&set);
                assert_eq!(engine.policy().rules.len(), rules);
                let none = set.non_matching_request();
                assert_eq!(set.count_applying(&none), (0, 0), "{shape:?}");
                let decision = engine.decide(&none.to_request().expect("valid request"));
                assert_eq!(decision.decision, Effect::Deny, "{}", decision.to_json());
                assert!(decision.reasons.is_empty(), "{}", decision.to_json());
                let (one, id) = set.matching_request().expect("a matching request");
                let decision = engine.decide(&one.to_request().expect("valid request"));
                assert_eq!(decision.reasons, [id], "{shape:?}: {}", decision.to_json());
                if rules >= 1000 {
                    let (many, count) = set.many_matching_request().expect("a request many match");
                    let decision = engine.decide(&many.to_request().expect("valid request"));
                    assert_eq!(decision.decision, Effect::Allow, "{}", decision.to_json());
                    assert_eq!(decision.reasons.len(), count, "{}", decision.to_json());
                }
            }
        }
        let mixed = generate_shape(GenConfig::issuance(1000), Shape::Mixed).writ_source();
        for test in [
            "context.risk_score <",
            "requested.ttl <",
            "resource.properties has ",
            "not resource.properties has ",
            "context.ticket == ",
            "environment.name != ",
            " not in [",
            "subject.shared == true",
        ] {
            assert!(mixed.contains(test), "no `{test}` in the mixed shape");
        }
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut rng = Rng::new(0);
        for n in 1..50 {
            assert!(rng.below(n) < n);
        }
        assert_eq!(rng.below(0), 0);
    }
}
