//! Declared attributes (`attribute PATH: TYPE "doc";`, docs/language.md
//! section 5.7): a file that declares attributes reads only declared free
//! attributes, declared types are checked, and the default pack declares
//! what it reads.

use writ::Engine;

fn codes(files: &[(&str, &str)]) -> Vec<String> {
    match Engine::compile(files.iter().copied(), None) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.codes(),
    }
}

fn rendered(files: &[(&str, &str)]) -> String {
    match Engine::compile(files.iter().copied(), None) {
        Ok(_) => panic!("{files:?} compiled"),
        Err(diagnostics) => diagnostics.render(false),
    }
}

const DECLARED: &str =
    "attribute subject.repository: string \"the GitHub repository, owner/name\";\n\
attribute context.pipeline.protected: bool;\n\
attribute context.exception: object \"a documented exception\";\n";

#[test]
fn a_typo_in_a_declaring_file_is_an_error_with_the_declared_name() {
    let policy = format!("{DECLARED}\npermit if subject.repositry == \"acme/app\";\n");
    let files = [("org.writ", policy.as_str())];
    assert_eq!(codes(&files), ["writ::check::undeclared_attribute"]);
    insta::assert_snapshot!("undeclared_typo", rendered(&files));
    // Nested paths: the first undeclared field is reported, once.
    let nested = format!("{DECLARED}\npermit if context.pipeline.protcted == true and context.pipline.protected == true;\n");
    let text = rendered(&[("org.writ", nested.as_str())]);
    assert_eq!(
        text.matches("writ::check::undeclared_attribute").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("did you mean `context.pipeline.protected`?"),
        "{text}"
    );
    assert!(text.contains("did you mean `context.pipeline`?"), "{text}");
    // `has` is checked too.
    let has = format!("{DECLARED}\nforbid if not context has pipeline.protectd;\n");
    assert_eq!(
        codes(&[("org.writ", has.as_str())]),
        ["writ::check::undeclared_attribute"]
    );
}

#[test]
fn declared_paths_cover_their_fields_and_the_way_to_them() {
    let policy = format!(
        "{DECLARED}\npermit if context has pipeline and context.pipeline.protected == true\n  \
         and context.exception.expires > environment.time and context has exception.id\n  \
         and subject.repository matches \"acme/*\";\n"
    );
    assert_eq!(
        codes(&[("org.writ", policy.as_str())]),
        Vec::<String>::new()
    );
}

#[test]
fn declared_types_are_checked() {
    let policy = format!("{DECLARED}\npermit if subject.repository == 42;\n");
    assert_eq!(
        codes(&[("org.writ", policy.as_str())]),
        ["writ::check::type_mismatch"]
    );
    let policy = format!("{DECLARED}\npermit if context.pipeline.protected == \"yes\";\n");
    assert_eq!(
        codes(&[("org.writ", policy.as_str())]),
        ["writ::check::type_mismatch"]
    );
    // Another file reads the declared type too.
    let other = [
        ("a.writ", DECLARED),
        ("b.writ", "permit if subject.repository < \"m\";"),
    ];
    assert_eq!(codes(&other), ["writ::check::no_order"]);
}

#[test]
fn only_declaring_files_are_strict() {
    // b.writ declares nothing, so it reads what it likes.
    let files = [
        ("a.writ", DECLARED),
        ("b.writ", "permit if subject.branch == \"main\";"),
    ];
    assert_eq!(codes(&files), Vec::<String>::new());
    // A declaration in another file of the set is enough for a strict one.
    let files = [
        ("a.writ", DECLARED),
        ("b.writ", "attribute subject.ref: string;\npermit if subject.ref == \"main\" and subject.repository == \"acme/app\";"),
    ];
    assert_eq!(codes(&files), Vec::<String>::new());
}

#[test]
fn a_declared_name_close_to_a_built_in_one_is_read_as_written() {
    assert_eq!(
        codes(&[("t.writ", "permit if resource.ownerID == subject.id;")]),
        ["writ::check::unknown_attribute"]
    );
    assert_eq!(
        codes(&[(
            "t.writ",
            "attribute resource.ownerID: string;\npermit if resource.ownerID == subject.id;"
        )]),
        Vec::<String>::new()
    );
}

#[test]
fn bad_declarations_are_refused() {
    let bad = "attribute subject.kind: string;\n\
               attribute requested.x: string;\n\
               attribute context.x: text;\n\
               attribute subject.repository: string;\n\
               attribute subject.repository: number;\n\
               atribute context.y: string;\n";
    assert_eq!(
        codes(&[("t.writ", bad)]),
        vec!["writ::check::bad_declaration"; 5]
    );
    insta::assert_snapshot!("bad_declarations", rendered(&[("t.writ", bad)]));
    // The same declaration twice (a layer repeating the pack's) is fine.
    let twice = [("a.writ", DECLARED), ("b.writ", DECLARED)];
    assert_eq!(codes(&twice), Vec::<String>::new());
}

#[test]
fn the_default_pack_declares_what_it_reads() {
    let engine = match Engine::default_pack(None) {
        Ok(engine) => engine,
        Err(diagnostics) => panic!("{diagnostics}"),
    };
    let declared: Vec<(&str, &str)> = engine
        .policy()
        .attributes
        .iter()
        .map(|d| (d.path.as_str(), d.ty_name))
        .collect();
    for expected in [
        ("context.exception.id", "string"),
        ("context.exception.expires", "timestamp"),
        ("context.recent_issuances", "number"),
        ("context.risk_score", "number"),
        ("context.approval.verified", "bool"),
        ("context.approval.expires", "timestamp"),
        ("context.approval.approver", "string"),
    ] {
        assert!(
            declared.contains(&expected),
            "{expected:?} not in {declared:?}"
        );
    }
    assert!(engine.policy().attributes.iter().all(|d| d.doc.is_some()));
    // Every pack file that reads a free attribute declares, so it is strict:
    // a typo added to any of them would not compile.
    for (name, text) in writ::DEFAULT_PACK {
        if text.contains("context.") {
            assert!(
                text.contains("\nattribute "),
                "{name} reads free attributes and declares none"
            );
        }
    }
}
