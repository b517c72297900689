//! Rule texts: generated ids and the condition texts traces show.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Collapses runs of whitespace to one space.
pub fn collapse(text: &str) -> String {
    collapsed(text).into_owned()
}

/// [`collapse`], borrowing the text when it has nothing to collapse (no
/// leading, trailing or doubled space and no other whitespace), as most
/// conditions are written.
fn collapsed(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    // Branch-free scans the compiler can vectorise: control bytes (ASCII
    // whitespace other than the space among them) and non-ASCII bytes
    // (which may be Unicode whitespace) take the general path, as do
    // doubled spaces.
    let unusual = bytes
        .iter()
        .fold(false, |seen, &b| seen | !(b' '..0x80).contains(&b));
    let doubled = bytes
        .iter()
        .zip(bytes.iter().skip(1))
        .fold(false, |seen, (&a, &b)| seen | ((a == b' ') & (b == b' ')));
    let trimmed = bytes.first() != Some(&b' ') && bytes.last() != Some(&b' ');
    if !unusual && !doubled && trimmed {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

/// The text's tokens without comments, joined by single spaces: the same
/// for any layout of the same code.
fn canonical_tokens(text: &str) -> String {
    let (tokens, _) = crate::lexer::lex(crate::source::FileId(0), text);
    tokens
        .iter()
        .filter(|t| !t.token.is_trivia())
        .filter_map(|t| text.get(t.span.start as usize..t.span.end as usize))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A condition's source text for traces: comments dropped, whitespace
/// collapsed, spacing otherwise as written.
pub(super) fn condition_text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let comment = bytes
        .iter()
        .zip(bytes.iter().skip(1))
        .fold(false, |seen, (&a, &b)| seen | ((a == b'/') & (b == b'/')));
    if !comment {
        return collapsed(text);
    }
    let (tokens, _) = crate::lexer::lex(crate::source::FileId(0), text);
    let mut out = String::with_capacity(text.len());
    let mut last = 0usize;
    for token in tokens.iter().filter(|t| t.token.is_trivia()) {
        out.push_str(text.get(last..token.span.start as usize).unwrap_or(""));
        out.push(' ');
        last = token.span.end as usize;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    Cow::Owned(collapse(&out))
}

/// Bytes of the hash in a generated id: 64 bits, so that a collision among
/// even millions of unnamed rules is unlikely (with 32 bits one became
/// likely around ten thousand).
const ID_HASH_BYTES: usize = 8;

/// `{kind}.{16 hex digits}` from the rule's tokens, so reformatting a rule
/// (spacing, line breaks, comments) keeps its id.
pub(super) fn generated_id(kind: &str, text: &str) -> String {
    let digest = Sha256::digest(canonical_tokens(text).as_bytes());
    crate::hex::prefixed(&format!("{kind}."), &digest[..ID_HASH_BYTES])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_ignore_layout() {
        assert_eq!(
            generated_id("forbid", "forbid  if\n a==\"x\"; // note"),
            generated_id("forbid", "forbid if a == \"x\";")
        );
        assert_ne!(
            generated_id("forbid", "forbid if a == \"x\";"),
            generated_id("forbid", "forbid if a == \"y\";")
        );
        assert_eq!(condition_text("a // note\n  or b"), "a or b");
        assert!(generated_id("forbid", "forbid if a;").starts_with("forbid."));
    }

    #[test]
    fn generated_ids_carry_64_bits() {
        // The first 8 bytes of SHA-256("permit if action == \"ping\" ;").
        assert_eq!(
            generated_id("permit", "permit if action == \"ping\";"),
            "permit.e2b8f21121aa1711"
        );
        let id = generated_id("limit", "limit ttl 1h;");
        let hex = id.strip_prefix("limit.").unwrap_or_default();
        assert_eq!(hex.len(), 16, "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    #[test]
    fn collapsed_matches_split_whitespace() {
        for text in [
            "",
            " ",
            "a",
            "a b",
            " a b",
            "a b ",
            "a  b",
            "a\tb",
            "a\nb",
            "a\x0bb",
            "a\x0cb",
            "a \r\n b",
            "é b",
            "a\u{a0}b",
            "a\u{3000}b",
            "a\u{1f}b",
            "a\u{1}b",
            "\u{85}",
            "  ",
            "a ",
            "action == \"read\" and x",
        ] {
            let expected = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(collapsed(text), expected, "{text:?}");
        }
        assert!(matches!(collapsed("a == \"b\""), Cow::Borrowed(_)));
    }
}
