//! `docs/default-pack-tree.svg` is a drawing of the default pack's current
//! decision tree: same number of nodes, every rule and every switch shown.

use writ::compile::Node;
use writ::Engine;

#[test]
fn the_pictured_tree_is_the_default_packs() {
    let svg = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/default-pack-tree.svg"
    ))
    .expect("docs/default-pack-tree.svg")
    .replace("&#45;", "-")
    .replace("&quot;", "\"")
    .replace("&lt;", "<")
    .replace("&gt;", ">")
    .replace("&amp;", "&");
    let engine = Engine::default_pack(None).expect("the pack compiles");
    let tree = engine.tree();
    let stale = "regenerate it with `writ tree --svg > docs/default-pack-tree.svg`";
    assert_eq!(
        svg.matches("class=\"node\"").count(),
        tree.nodes.len(),
        "the picture has another number of nodes than the tree; {stale}"
    );
    for rule in &engine.policy().rules {
        let label = format!(">{} {}</text>", rule.kind.name(), rule.id);
        assert!(
            svg.contains(&label),
            "`{}` is not in the picture; {stale}",
            rule.id
        );
    }
    for node in &tree.nodes {
        if let Node::Switch { attr, .. } = node {
            let label = format!(">{}</text>", attr.path());
            assert!(
                svg.contains(&label),
                "switch `{}` is not in the picture; {stale}",
                attr.path()
            );
        }
    }
}
