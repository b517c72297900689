//! The TextMate grammar in `editors/`: its structure, its regexes, and the
//! scopes it gives the tokens of `editors/sample.writ`.
//!
//! The tokenizer below follows TextMate's rules closely enough for a
//! grammar of this size: line by line, the earliest match among the current
//! context's patterns wins (the end pattern first on a tie, then pattern
//! order); `match` rules scope their match and captures, `begin`/`end`
//! rules open a context until their end pattern.

use regex::Regex;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn grammar() -> Value {
    let text =
        std::fs::read_to_string(format!("{ROOT}/editors/writ.tmLanguage.json")).expect("grammar");
    serde_json::from_str(&text).expect("the grammar is JSON")
}

fn sample() -> String {
    std::fs::read_to_string(format!("{ROOT}/editors/sample.writ")).expect("sample")
}

/// Every rule object in the grammar, with where it is.
fn rules<'g>(value: &'g Value, at: String, out: &mut Vec<(String, &'g Value)>) {
    if let Some(patterns) = value.get("patterns").and_then(Value::as_array) {
        for (index, pattern) in patterns.iter().enumerate() {
            out.push((format!("{at}.patterns[{index}]"), pattern));
            rules(pattern, format!("{at}.patterns[{index}]"), out);
        }
    }
}

#[test]
fn the_grammar_is_well_formed() {
    let grammar = grammar();
    assert_eq!(grammar["scopeName"], "source.writ");
    assert_eq!(grammar["name"], "writ");
    assert_eq!(grammar["fileTypes"], serde_json::json!(["writ"]));
    let repository = grammar["repository"].as_object().expect("a repository");
    let mut all = Vec::new();
    rules(&grammar, "root".into(), &mut all);
    for (name, entry) in repository {
        all.push((format!("repository.{name}"), entry));
        rules(entry, format!("repository.{name}"), &mut all);
    }
    assert!(all.len() > 30, "only {} rules", all.len());
    for (at, rule) in &all {
        let object = rule
            .as_object()
            .unwrap_or_else(|| panic!("{at} is not an object"));
        if let Some(include) = object.get("include").and_then(Value::as_str) {
            let name = include
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: include `{include}`"));
            assert!(
                repository.contains_key(name),
                "{at}: `#{name}` is not in the repository"
            );
            continue;
        }
        let shape = (
            object.contains_key("match"),
            object.contains_key("begin"),
            object.contains_key("end"),
            object.contains_key("patterns"),
        );
        assert!(
            matches!(
                shape,
                (true, false, false, false) | (false, true, true, _) | (false, false, false, true)
            ),
            "{at}: a rule has `match`, or `begin` and `end`, or only `patterns`"
        );
        for key in ["match", "begin", "end"] {
            if let Some(pattern) = object.get(key).and_then(Value::as_str) {
                Regex::new(pattern).unwrap_or_else(|e| panic!("{at}.{key}: {e}"));
            }
        }
        for key in ["name", "contentName"] {
            if let Some(scope) = object.get(key).and_then(Value::as_str) {
                assert!(
                    scope.ends_with(".writ"),
                    "{at}: scope `{scope}` does not end in `.writ`"
                );
            }
        }
    }
}

/// A rule the tokenizer can try.
#[derive(Clone)]
struct Rule<'g> {
    json: &'g Value,
    regex: Regex,
}

/// An open `begin`/`end` rule.
struct Frame<'g> {
    json: &'g Value,
    end: Regex,
    /// Scopes inside it (its name and content name).
    scopes: Vec<String>,
}

struct Tokenizer<'g> {
    grammar: &'g Value,
    /// Flattened rules per pattern list, by the list's address.
    cache: std::cell::RefCell<std::collections::HashMap<usize, Vec<Rule<'g>>>>,
}

impl<'g> Tokenizer<'g> {
    fn new(grammar: &'g Value) -> Tokenizer<'g> {
        Tokenizer {
            grammar,
            cache: Default::default(),
        }
    }

    /// The rules of a pattern list, compiled once.
    fn rules(&self, patterns: &'g Value) -> Vec<Rule<'g>> {
        let key = patterns as *const Value as usize;
        if let Some(rules) = self.cache.borrow().get(&key) {
            return rules.clone();
        }
        let mut rules = Vec::new();
        self.flatten(patterns, &mut rules);
        self.cache.borrow_mut().insert(key, rules.clone());
        rules
    }

    /// The rules of a pattern list, includes resolved and groups flattened.
    fn flatten(&self, patterns: &'g Value, out: &mut Vec<Rule<'g>>) {
        for pattern in patterns.as_array().into_iter().flatten() {
            let pattern = match pattern.get("include").and_then(Value::as_str) {
                Some(include) => &self.grammar["repository"][&include[1..]],
                None => pattern,
            };
            let key = if pattern.get("match").is_some() {
                "match"
            } else if pattern.get("begin").is_some() {
                "begin"
            } else {
                self.flatten(&pattern["patterns"], out);
                continue;
            };
            let regex = Regex::new(pattern[key].as_str().expect("a string")).expect("compiles");
            out.push(Rule {
                json: pattern,
                regex,
            });
        }
    }

    /// Scopes for each byte of the text, outermost first (`source.writ` left out).
    fn scopes(&self, text: &str) -> Vec<Vec<String>> {
        let mut scopes = Vec::with_capacity(text.len());
        let mut stack: Vec<Frame<'g>> = Vec::new();
        for line in text.split_inclusive('\n') {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let mut line_scopes: Vec<Vec<String>> = vec![Vec::new(); body.len()];
            let mut pos = 0;
            loop {
                let context: Vec<String> = stack.iter().flat_map(|f| f.scopes.clone()).collect();
                let patterns = match stack.last() {
                    Some(frame) => &frame.json["patterns"],
                    None => &self.grammar["patterns"],
                };
                let rules = self.rules(patterns);
                let end = stack.last().and_then(|f| f.end.captures_at(body, pos));
                let mut best: Option<(usize, Option<&Rule<'g>>, regex::Captures<'_>)> =
                    end.map(|c| (c.get(0).map_or(usize::MAX, |m| m.start()), None, c));
                for rule in &rules {
                    if let Some(caps) = rule.regex.captures_at(body, pos) {
                        let start = caps.get(0).map_or(usize::MAX, |m| m.start());
                        if best.as_ref().map_or(true, |(s, _, _)| start < *s) {
                            best = Some((start, Some(rule), caps));
                        }
                    }
                }
                let Some((start, rule, caps)) = best else {
                    for s in &mut line_scopes[pos..] {
                        s.clone_from(&context);
                    }
                    break;
                };
                let whole = caps.get(0).expect("group 0");
                for s in &mut line_scopes[pos..start] {
                    s.clone_from(&context);
                }
                let (base, captures) = match rule {
                    None => {
                        let frame = stack.pop().expect("a frame");
                        let outer: Vec<String> =
                            stack.iter().flat_map(|f| f.scopes.clone()).collect();
                        let mut base = outer;
                        base.extend(
                            frame
                                .json
                                .get("name")
                                .and_then(Value::as_str)
                                .map(String::from),
                        );
                        (base, frame.json.get("endCaptures"))
                    }
                    Some(rule) => {
                        let mut base = context.clone();
                        base.extend(
                            rule.json
                                .get("name")
                                .and_then(Value::as_str)
                                .map(String::from),
                        );
                        if let Some(end) = rule.json.get("end").and_then(Value::as_str) {
                            let mut inner = Vec::new();
                            inner.extend(
                                rule.json
                                    .get("name")
                                    .and_then(Value::as_str)
                                    .map(String::from),
                            );
                            inner.extend(
                                rule.json
                                    .get("contentName")
                                    .and_then(Value::as_str)
                                    .map(String::from),
                            );
                            stack.push(Frame {
                                json: rule.json,
                                end: Regex::new(end).expect("compiles"),
                                scopes: inner,
                            });
                            (base, rule.json.get("beginCaptures"))
                        } else {
                            (base, rule.json.get("captures"))
                        }
                    }
                };
                for s in &mut line_scopes[whole.start()..whole.end()] {
                    s.clone_from(&base);
                }
                for (index, capture) in captures.and_then(Value::as_object).into_iter().flatten() {
                    let Some(group) = index.parse::<usize>().ok().and_then(|i| caps.get(i)) else {
                        continue;
                    };
                    let Some(name) = capture.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    for s in &mut line_scopes[group.start()..group.end()] {
                        s.push(name.to_owned());
                    }
                }
                if whole.end() == pos && rule.is_some() {
                    // An empty match that changes nothing: move on.
                    if pos < body.len() {
                        line_scopes[pos].clone_from(&context);
                    }
                    pos += 1;
                } else {
                    pos = whole.end();
                }
                if pos >= body.len()
                    && stack
                        .last()
                        .and_then(|f| f.end.find_at(body, pos))
                        .is_none()
                {
                    break;
                }
            }
            scopes.extend(line_scopes);
            if line.ends_with('\n') {
                scopes.push(stack.iter().flat_map(|f| f.scopes.clone()).collect());
            }
        }
        scopes
    }
}

/// Asserts that every byte of `focus`, within the first occurrence of
/// `context`, has `scope`.
#[track_caller]
fn expect(text: &str, scopes: &[Vec<String>], context: &str, focus: &str, scope: &str) {
    let at = text
        .find(context)
        .unwrap_or_else(|| panic!("`{context}` is not in the text"));
    let within = context
        .find(focus)
        .unwrap_or_else(|| panic!("`{focus}` is not in `{context}`"));
    let start = at + within;
    for (offset, found) in scopes.iter().enumerate().skip(start).take(focus.len()) {
        assert!(
            found.iter().any(|s| s == scope),
            "`{focus}` in `{context}`, byte {offset}: scopes {found:?}, not `{scope}`"
        );
    }
}

#[test]
fn the_sample_is_a_valid_policy() {
    let engine = writ::Engine::compile([("editors/sample.writ", sample())], None);
    assert!(engine.is_ok(), "{:?}", engine.err().map(|d| d.to_string()));
}

#[test]
fn the_sample_gets_the_expected_scopes() {
    let grammar = grammar();
    let tokenizer = Tokenizer::new(&grammar);
    let text = sample();
    let scopes = tokenizer.scopes(&text);
    assert_eq!(scopes.len(), text.len());
    let check =
        |context: &str, focus: &str, scope: &str| expect(&text, &scopes, context, focus, scope);

    // Comments and doc comments.
    check(
        "// A sample policy",
        "// A sample policy",
        "comment.line.double-slash.writ",
    );
    check(
        "/// Brokers that may ask.",
        "/// Brokers that may ask.",
        "comment.line.documentation.writ",
    );
    // Constants, literals.
    check("const trusted", "const", "storage.type.const.writ");
    check(
        "const trusted_brokers",
        "trusted_brokers",
        "variable.other.constant.writ",
    );
    check("\"vault\"", "\"vault\"", "string.quoted.double.writ");
    check("= 1h30m;", "1h30m", "constant.numeric.duration.writ");
    check("limit ttl 15m", "15m", "constant.numeric.duration.writ");
    check("for 2h", "2h", "constant.numeric.duration.writ");
    check("> 10;", "10", "constant.numeric.writ");
    check("true\n", "true", "constant.language.boolean.writ");
    check(
        ">= confidential",
        "confidential",
        "constant.language.sensitivity.writ",
    );
    check(
        "<= internal",
        "internal",
        "constant.language.sensitivity.writ",
    );
    // Annotations.
    check(
        "@id(\"identity.attested\")",
        "@id",
        "storage.type.annotation.writ",
    );
    check(
        "@id(\"identity.attested\")",
        "\"identity.attested\"",
        "string.quoted.double.writ",
    );
    check("@control(", "@control", "storage.type.annotation.writ");
    // Keywords.
    for keyword in ["forbid", "limit", "require", "permit"] {
        check(
            &format!("\n{keyword} "),
            keyword,
            "keyword.control.rule.writ",
        );
    }
    check(
        "forbid if subject",
        "if",
        "keyword.control.conditional.writ",
    );
    check("  because \"the", "because", "keyword.other.clause.writ");
    check("  grant [", "grant", "keyword.other.clause.writ");
    check("] for 2h", "for", "keyword.other.clause.writ");
    check("limit ttl 15m", "ttl", "keyword.other.clause.writ");
    check("(15m, until context", "until", "keyword.other.clause.writ");
    check("limit ttl min(", "min", "support.function.builtin.writ");
    check("  audience \"", "audience", "keyword.other.clause.writ");
    check("  log;", "log", "keyword.other.clause.writ");
    check(
        "require approval if",
        "approval",
        "keyword.other.clause.writ",
    );
    check("revoke on task_end", "revoke", "keyword.other.clause.writ");
    check("revoke on task_end", "task_end", "entity.name.event.writ");
    // Paths, operators, functions.
    check("if subject.attested", "subject", "variable.language.writ");
    check(
        "if subject.attested",
        "attested",
        "variable.other.property.writ",
    );
    check("if subject.attested", ".", "punctuation.accessor.writ");
    check("attested != true", "!=", "keyword.operator.comparison.writ");
    check(
        "confidential\n  and",
        "and",
        "keyword.operator.logical.writ",
    );
    check("(not requested", "not", "keyword.operator.logical.writ");
    check("(not requested", "(", "punctuation.section.parens.writ");
    check("item in requested", "in", "keyword.operator.word.writ");
    check(
        "resource.id matches",
        "matches",
        "keyword.operator.word.writ",
    );
    check("any(item", "any", "keyword.operator.quantifier.writ");
    check("len(requested", "len", "support.function.builtin.writ");
    check("contains(item", "contains", "support.function.builtin.writ");
    // After `has` and `.`, keywords are field names.
    check("has scope or", "has", "keyword.operator.word.writ");
    check("has scope or", "scope", "variable.other.property.writ");
    check("has approval;", "approval", "variable.other.property.writ");
    check("requested.scope:", "scope", "variable.other.property.writ");
    // Strings: escapes and template holes.
    check("attest \\\"{", "\\\"", "constant.character.escape.writ");
    check(
        "\"list:\\{literal\\}\"",
        "\\{",
        "constant.character.escape.writ",
    );
    check(
        "\"list:\\{literal\\}\"",
        "literal",
        "string.quoted.double.writ",
    );
    check(
        "{subject.id}",
        "{subject.id}",
        "meta.template.expression.writ",
    );
    check("{subject.id}", "{subject.id}", "string.quoted.double.writ");
    check(
        "{subject.id}",
        "{",
        "punctuation.section.template.begin.writ",
    );
    check("{subject.id}", "}", "punctuation.section.template.end.writ");
    check("{subject.id}", "subject", "variable.language.writ");
    check(
        "a {sensitivity} credential",
        "sensitivity",
        "variable.language.writ",
    );
    check(
        "\"read:{resource.id}\"",
        "resource",
        "variable.language.writ",
    );
    check(
        "\"read:{resource.id}\"",
        "id",
        "variable.other.property.writ",
    );
    // Plain text in a string is only string.
    let plain = text.find("the broker did not").expect("in the sample");
    let plain_len = "the broker did not".len();
    for (offset, found) in scopes.iter().enumerate().skip(plain).take(plain_len) {
        assert_eq!(found, &["string.quoted.double.writ"], "byte {offset}");
    }
}

#[test]
fn mistakes_and_unterminated_strings() {
    let grammar = grammar();
    let tokenizer = Tokenizer::new(&grammar);
    let text = "forbid if a && !b || c;\nconst x = \"open\nforbid;\n";
    let scopes = tokenizer.scopes(text);
    let check =
        |context: &str, focus: &str, scope: &str| expect(text, &scopes, context, focus, scope);
    check("a && !b", "&&", "invalid.illegal.operator.writ");
    check("!b", "!", "invalid.illegal.operator.writ");
    check("||", "||", "invalid.illegal.operator.writ");
    check("x = ", "=", "keyword.operator.assignment.writ");
    check("\"open", "\"open", "string.quoted.double.writ");
    // The string ends with its line, so the next rule is highlighted.
    check("forbid;", "forbid", "keyword.control.rule.writ");
    check("forbid;", ";", "punctuation.terminator.writ");
}
