//! Scope items (`verb:resource`) and the coverage relation between them.
//!
//! A scope item is `verb:resource`, for example `read:db://payments/orders`.
//! The resource is a `/`-separated path; an optional `scheme://` prefix
//! belongs to the first segment, so `k8s://prod-eu/payments` has the
//! segments `k8s://prod-eu` and `payments`.
//!
//! In a pattern, `*` matches exactly one whole segment, `**` matches one or
//! more trailing segments (and may only be last), and a verb of `*` matches
//! any verb. There are no globs inside a segment: `app*` is rejected rather
//! than read as a prefix match. Items with empty, `.` or `..` segments are
//! rejected, not normalised.
//!
//! In a first segment that has a scheme, the scheme must match exactly and
//! the part after `://` behaves like a segment of its own: `k8s://*` is any
//! one first segment with scheme `k8s`, `k8s://**` is scheme `k8s` followed by
//! one or more segments. A bare `*` first segment covers any first segment,
//! scheme or not, and a bare `**` covers every resource.

use std::fmt;
use std::str::FromStr;

use miette::Diagnostic;
use thiserror::Error;

/// The longest scope item accepted, in bytes.
pub const MAX_LEN: usize = 1024;

/// How many characters of an over-long item an error message quotes.
const PREVIEW_CHARS: usize = 32;

/// A validated scope item such as `read:db://payments/orders` or `*:k8s://*/**`.
///
/// Equality, ordering and hashing follow the item's text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeItem {
    /// The item exactly as written.
    text: Box<str>,
    /// Byte offset of the `:` that ends the verb.
    verb_end: u32,
    /// Length of the `scheme://` prefix of the resource, 0 when there is none.
    scheme_len: u32,
    /// True when the verb or a segment is `*` or `**`.
    wild: bool,
}

/// What one segment of a resource is, ignoring any scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A literal name, matching only itself.
    Literal,
    /// `*`: exactly one segment.
    Star,
    /// `**`: one or more trailing segments.
    DoubleStar,
}

/// One segment of a resource, as seen by the matcher.
#[derive(Clone, Copy, Debug)]
struct Part<'a> {
    /// The whole segment, with its `scheme://` prefix if it has one.
    text: &'a str,
    /// The scheme, for a first segment that has one.
    scheme: Option<&'a str>,
    /// What the segment (after `://`) is.
    kind: Kind,
}

impl ScopeItem {
    /// Parses and validates a scope item.
    ///
    /// # Errors
    ///
    /// Returns the first rule the text breaks; see [`ScopeError`].
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        if let Some(item) = Self::parse_plain(text) {
            return Ok(item);
        }
        Self::parse_checked(text)
    }

    /// One pass over a printable ASCII item, accepting only what
    /// [`ScopeItem::parse_checked`] accepts and giving the same item;
    /// `None` sends anything else (every error included) to it. Each byte
    /// is read once (the verb, then the resource segment by segment).
    fn parse_plain(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() > MAX_LEN {
            return None;
        }
        // The verb: `*`, or verb bytes up to the first `:`.
        let mut at = 0;
        while at < bytes.len() && BYTE_CLASS[usize::from(bytes[at])] & VERB != 0 {
            at += 1;
        }
        let star_verb = at == 0 && bytes.first() == Some(&b'*');
        if star_verb {
            at = 1;
        }
        if at == 0 || bytes.get(at) != Some(&b':') {
            return None;
        }
        let colon = at;
        let resource = &bytes[colon + 1..];
        if resource.is_empty() {
            return None;
        }
        let scheme_len = match scheme_slash(resource) {
            Some(slash) if slash >= 2 && is_scheme(&resource[..slash - 1]) => slash + 2,
            Some(_) => return None,
            None => 0,
        };
        let mut wild = star_verb;
        let path = &resource[scheme_len..];
        let mut start = 0;
        // Per segment: whether it holds a byte that is not printable ASCII,
        // or a `%` (the full parse looks for percent-encoded separators),
        // and whether it holds a `*`: the bits of the bytes' classes.
        let mut seen = 0u8;
        for (i, &b) in path.iter().enumerate() {
            let class = BYTE_CLASS[usize::from(b)];
            if class & SLASH != 0 {
                if !plain_segment(&path[start..i], seen, false, &mut wild) {
                    return None;
                }
                start = i + 1;
                seen = 0;
                continue;
            }
            seen |= class;
        }
        if !plain_segment(&path[start..], seen, true, &mut wild) {
            return None;
        }
        Some(Self {
            text: text.into(),
            verb_end: colon as u32,
            scheme_len: scheme_len as u32,
            wild,
        })
    }

    /// The full parse, with an error naming the first rule the text breaks.
    fn parse_checked(text: &str) -> Result<Self, ScopeError> {
        if text.len() > MAX_LEN {
            let preview = match text.char_indices().nth(PREVIEW_CHARS) {
                Some((at, _)) => &text[..at],
                None => text,
            };
            return Err(ScopeError::TooLong {
                item: preview.escape_debug().to_string(),
                len: text.len(),
            });
        }
        let bad_char = if text.is_ascii() {
            text.bytes().any(|b| b <= b' ' || b == 0x7f)
        } else {
            text.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if bad_char {
            return Err(ScopeError::Whitespace {
                item: text.escape_debug().to_string(),
            });
        }
        let item = || text.to_owned();
        let Some((verb, resource)) = text.split_once(':') else {
            return Err(ScopeError::MissingSeparator { item: item() });
        };
        if verb.is_empty() {
            return Err(ScopeError::EmptyVerb { item: item() });
        }
        if verb != "*" && !verb.as_bytes().iter().all(verb_byte) {
            return Err(ScopeError::BadVerb {
                item: item(),
                verb: verb.to_owned(),
            });
        }
        if resource.is_empty() {
            return Err(ScopeError::EmptyResource { item: item() });
        }
        let scheme_len = match scheme_slash(resource.as_bytes()) {
            Some(slash) => {
                let scheme = &resource[..slash - 1];
                if scheme.is_empty() {
                    return Err(ScopeError::EmptyScheme { item: item() });
                }
                if !is_scheme(scheme.as_bytes()) {
                    return Err(ScopeError::BadScheme {
                        item: item(),
                        scheme: scheme.to_owned(),
                    });
                }
                slash + 2
            }
            None => 0,
        };
        if let Some(sequence) = percent_encoded(resource) {
            return Err(ScopeError::PercentEncoded {
                item: item(),
                sequence: sequence.to_owned(),
            });
        }
        let path = &resource[scheme_len..];
        let mut rest = path;
        let mut wild = verb == "*";
        loop {
            let (segment, more) = match rest.as_bytes().iter().position(|&b| b == b'/') {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            let error = match segment.as_bytes() {
                b"" => Some(ScopeError::EmptySegment { item: item() }),
                b"." | b".." => Some(ScopeError::DotSegment {
                    item: item(),
                    segment: segment.to_owned(),
                }),
                b"**" if more.is_some() => Some(ScopeError::DoubleStarNotLast { item: item() }),
                b"*" | b"**" => {
                    wild = true;
                    None
                }
                other if other.contains(&b'*') => Some(ScopeError::GlobInSegment {
                    item: item(),
                    segment: segment.to_owned(),
                }),
                _ => None,
            };
            if let Some(error) = error {
                return Err(error);
            }
            match more {
                Some(next) => rest = next,
                None => break,
            }
        }
        // Both offsets are at most MAX_LEN, so they fit in a u32.
        Ok(Self {
            text: text.into(),
            verb_end: verb.len() as u32,
            scheme_len: scheme_len as u32,
            wild,
        })
    }

    /// The item exactly as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The verb, before the first `:` (`read`, or `*` for any verb).
    pub fn verb(&self) -> &str {
        &self.text[..self.verb_end as usize]
    }

    /// The resource, after the first `:` (`db://payments/orders`).
    pub fn resource(&self) -> &str {
        &self.text[self.verb_end as usize + 1..]
    }

    /// The resource's scheme (`db` in `read:db://payments`), if it has one.
    pub fn scheme(&self) -> Option<&str> {
        let len = self.scheme_len as usize;
        (len > 0).then(|| &self.resource()[..len - "://".len()])
    }

    /// The resource's segments; a scheme stays part of the first one, so
    /// `k8s://prod-eu/payments` yields `k8s://prod-eu` and `payments`.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts().map(|part| part.text)
    }

    /// True when the verb or any segment is a wildcard (`*` or `**`).
    pub fn has_wildcard(&self) -> bool {
        self.wild
    }

    /// True when every concrete item that `requested` could match is also
    /// matched by `self`, so granting `self` already grants `requested`.
    ///
    /// A `*` verb covers any verb, a requested `*` verb only a `*` verb. A `*`
    /// segment covers any one requested segment, including `*`, but not `**`;
    /// a final `**` covers one or more remaining segments of any kind; a
    /// literal covers only the same literal. With a scheme, `k8s://*` and
    /// `k8s://**` cover only segments with scheme `k8s`, while a bare `*` or
    /// `**` first segment covers schemed and unschemed first segments alike.
    /// Never allocates.
    pub fn covers(&self, requested: &ScopeItem) -> bool {
        // Without wildcards every part must equal its counterpart: the
        // same as equal texts.
        if !self.wild {
            return self.text == requested.text;
        }
        if self.verb() != "*" && self.verb() != requested.verb() {
            return false;
        }
        let mut granted = self.parts();
        let mut wanted = requested.parts();
        loop {
            let (g, w) = match (granted.next(), wanted.next()) {
                (None, None) => return true,
                (Some(g), Some(w)) => (g, w),
                _ => return false,
            };
            let scheme_ok = g.scheme.is_none() || g.scheme == w.scheme;
            let covered = match g.kind {
                Kind::DoubleStar => return scheme_ok,
                Kind::Star => scheme_ok && w.kind != Kind::DoubleStar,
                Kind::Literal => g.text == w.text,
            };
            if !covered {
                return false;
            }
        }
    }

    /// The resource's segments with their scheme and kind.
    fn parts(&self) -> impl Iterator<Item = Part<'_>> + '_ {
        let resource = self.resource();
        let scheme_len = self.scheme_len as usize;
        let scheme = self.scheme();
        resource[scheme_len..]
            .split('/')
            .enumerate()
            .map(move |(index, body)| {
                let (text, scheme) = if index == 0 {
                    (&resource[..scheme_len + body.len()], scheme)
                } else {
                    (body, None)
                };
                let kind = match body {
                    "*" => Kind::Star,
                    "**" => Kind::DoubleStar,
                    _ => Kind::Literal,
                };
                Part { text, scheme, kind }
            })
    }
}

/// The first percent-encoded `.`, `/` or `%` in `text` (`%2e`, `%2F`,
/// `%25`, any case), if there is one.
///
/// A service that decodes the path would see a `.` or `..` segment, or two
/// segments where a `*` covered one, that the segment rules never saw; and
/// an encoded `%` (`%252e`) becomes one of those after a second decoding.
/// writ does not decode: items and values holding these are refused.
pub fn percent_encoded(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'%') {
        let at = from + at;
        if let Some(&[high, low]) = bytes.get(at + 1..at + 3) {
            let low = low.to_ascii_lowercase();
            if high == b'2' && matches!(low, b'e' | b'f' | b'5') {
                return Some(&text[at..at + 3]);
            }
        }
        from = at + 1;
    }
    None
}

/// `[a-z][a-z0-9+.-]*`
fn is_scheme(scheme: &[u8]) -> bool {
    let mut bytes = scheme.iter();
    bytes.next().is_some_and(u8::is_ascii_lowercase)
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'-')
        })
}

/// [`BYTE_CLASS`]'s bit for a byte a verb other than `*` may hold
/// ([`verb_byte`]).
const VERB: u8 = 1;
/// Its bit for a byte that is not printable ASCII, or a `%`.
const ODD: u8 = 2;
/// Its bit for `*`.
const STAR: u8 = 4;
/// Its bit for `/`.
const SLASH: u8 = 8;

/// What each byte is to [`ScopeItem::parse_plain`], as bits: [`VERB`],
/// [`ODD`], [`STAR`], [`SLASH`]; one lookup a byte instead of a chain of
/// comparisons.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let mut class = 0;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            class |= VERB;
        }
        if byte <= b' ' || byte >= 0x7f || byte == b'%' {
            class |= ODD;
        }
        if byte == b'*' {
            class |= STAR;
        }
        if byte == b'/' {
            class |= SLASH;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// One segment of a resource for [`ScopeItem::parse_plain`]: `seen` the
/// [`BYTE_CLASS`] bits of its bytes, `last` when it ends the resource.
/// False for a segment the full parse must judge (one with an [`ODD`] byte
/// or a `*` other than a whole `*` or a final `**`); `wild` is set for
/// `*`, and `**` at the end.
fn plain_segment(segment: &[u8], seen: u8, last: bool, wild: &mut bool) -> bool {
    match segment {
        b"" | b"." | b".." => false,
        b"*" => {
            *wild = true;
            true
        }
        b"**" if last => {
            *wild = true;
            true
        }
        _ => seen & (ODD | STAR) == 0,
    }
}

/// A byte a verb other than `*` may hold.
fn verb_byte(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Where the `/` of a resource's `scheme://` is: a scheme is there when the
/// first `/` of the resource is the one in `://`.
fn scheme_slash(resource: &[u8]) -> Option<usize> {
    let slash = resource.iter().position(|&b| b == b'/')?;
    (slash >= 1 && resource[slash - 1] == b':' && resource.get(slash + 1) == Some(&b'/'))
        .then_some(slash)
}

impl fmt::Display for ScopeItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ScopeItem {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Why a scope item was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error, Diagnostic)]
pub enum ScopeError {
    /// `read`
    #[error("scope item `{item}` has no `:` between verb and resource")]
    #[diagnostic(
        code(writ::scope::missing_separator),
        help("write the item as `verb:resource`, for example `read:db://payments/orders`")
    )]
    MissingSeparator {
        /// The offending item.
        item: String,
    },
    /// `:db://payments`
    #[error("scope item `{item}` has an empty verb")]
    #[diagnostic(
        code(writ::scope::empty_verb),
        help("put a verb such as `read` before the `:`, or `*` for any verb")
    )]
    EmptyVerb {
        /// The offending item.
        item: String,
    },
    /// `re*d:x`
    #[error("scope item `{item}` has an invalid verb `{verb}`")]
    #[diagnostic(
        code(writ::scope::bad_verb),
        help("a verb uses only letters, digits, `_`, `.` and `-`, or is exactly `*`")
    )]
    BadVerb {
        /// The offending item.
        item: String,
        /// Its verb.
        verb: String,
    },
    /// `read:`
    #[error("scope item `{item}` has an empty resource")]
    #[diagnostic(
        code(writ::scope::empty_resource),
        help("put a resource after the `:`, or `**` for any resource")
    )]
    EmptyResource {
        /// The offending item.
        item: String,
    },
    /// `read:a//b`, `read:a/`
    #[error("scope item `{item}` has an empty path segment")]
    #[diagnostic(
        code(writ::scope::empty_segment),
        help("remove the doubled, leading or trailing `/`")
    )]
    EmptySegment {
        /// The offending item.
        item: String,
    },
    /// `read:a/../b`
    #[error("scope item `{item}` has a `{segment}` segment")]
    #[diagnostic(
        code(writ::scope::dot_segment),
        help("`.` and `..` are not normalised; write the path out in full")
    )]
    DotSegment {
        /// The offending item.
        item: String,
        /// The segment, `.` or `..`.
        segment: String,
    },
    /// `read:app*`
    #[error("scope item `{item}` has a glob inside the segment `{segment}`")]
    #[diagnostic(
        code(writ::scope::glob_in_segment),
        help("`*` and `**` must be whole segments; list the items or use `*` for any one segment")
    )]
    GlobInSegment {
        /// The offending item.
        item: String,
        /// The segment with the glob.
        segment: String,
    },
    /// `read:**/x`
    #[error("scope item `{item}` has `**` before the last segment")]
    #[diagnostic(
        code(writ::scope::double_star_not_last),
        help("`**` matches trailing segments, so it can only be last; use `*` for one segment")
    )]
    DoubleStarNotLast {
        /// The offending item.
        item: String,
    },
    /// `read:a b`
    #[error("scope item `{item}` contains whitespace or a control character")]
    #[diagnostic(
        code(writ::scope::whitespace),
        help("scope items are written without spaces, tabs, line breaks or control characters")
    )]
    Whitespace {
        /// The offending item, with those characters escaped.
        item: String,
    },
    /// An item over [`MAX_LEN`] bytes.
    #[error("scope item `{item}...` is {len} bytes, longer than the limit")]
    #[diagnostic(
        code(writ::scope::too_long),
        help("scope items are at most 1024 bytes; grant a wider pattern instead")
    )]
    TooLong {
        /// The start of the offending item.
        item: String,
        /// Its length in bytes.
        len: usize,
    },
    /// `read:s3://bucket/%2e%2e`, `read:s3://bucket/a%2Fb`
    #[error("scope item `{item}` holds `{sequence}`, a percent-encoded `.`, `/` or `%`")]
    #[diagnostic(
        code(writ::scope::percent_encoded),
        help("writ does not decode scope items; write the path out with its real `/` separators, without `.` or `..` segments")
    )]
    PercentEncoded {
        /// The offending item.
        item: String,
        /// The encoded sequence found (`%2e`).
        sequence: String,
    },
    /// `read:://x`
    #[error("scope item `{item}` has an empty scheme before `://`")]
    #[diagnostic(
        code(writ::scope::empty_scheme),
        help("write a scheme such as `k8s` before `://`, or drop the `://`")
    )]
    EmptyScheme {
        /// The offending item.
        item: String,
    },
    /// `read:K8s://x`
    #[error("scope item `{item}` has an invalid scheme `{scheme}`")]
    #[diagnostic(
        code(writ::scope::bad_scheme),
        help(
            "a scheme is a lowercase letter followed by lowercase letters, digits, `+`, `.` or `-`"
        )
    )]
    BadScheme {
        /// The offending item.
        item: String,
        /// Its scheme.
        scheme: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::{collection::vec, sample::select};

    fn item(text: &str) -> ScopeItem {
        ScopeItem::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn accessors_and_segments() {
        let it = item("read:k8s://prod-eu/payments");
        assert_eq!(it.verb(), "read");
        assert_eq!(it.resource(), "k8s://prod-eu/payments");
        assert_eq!(it.scheme(), Some("k8s"));
        let segments: Vec<_> = it.segments().collect();
        assert_eq!(segments, ["k8s://prod-eu", "payments"]);
        assert_eq!(it.to_string(), "read:k8s://prod-eu/payments");
        assert_eq!(it.as_str(), "read:k8s://prod-eu/payments");
        assert!(!it.has_wildcard());
        let plain: ScopeItem = "write:a/b:c/d".parse().expect("valid");
        assert_eq!(plain.scheme(), None);
        assert_eq!(plain.segments().collect::<Vec<_>>(), ["a", "b:c", "d"]);
        for pattern in ["*:x", "read:k8s://*", "read:a/**", "read:*/b"] {
            assert!(item(pattern).has_wildcard(), "{pattern}");
        }
    }

    #[test]
    fn coverage() {
        let cases = [
            // `*` is exactly one segment, and covers a requested `*` but not `**`.
            ("read:db://p/*", "read:db://p/orders", true),
            ("read:db://p/*", "read:db://p/*", true),
            ("read:db://p/*", "read:db://p/orders/x", false),
            ("read:db://p/*", "read:db://p", false),
            ("read:db://p/*", "read:db://p/**", false),
            ("read:a/*/c", "read:a/b/c", true),
            ("read:a/*/c", "read:a/b/d", false),
            // `**` is one or more trailing segments of any kind.
            ("read:db://p/**", "read:db://p/a/b", true),
            ("read:db://p/**", "read:db://p/*", true),
            ("read:db://p/**", "read:db://p/a/**", true),
            ("read:db://p/**", "read:db://p/**", true),
            ("read:db://p/**", "read:db://p", false),
            ("read:db://p/a/**", "read:db://p/**", false),
            ("read:db://p/*/**", "read:db://p/**", false),
            ("read:**", "read:k8s://prod/x", true),
            ("read:**", "read:**", true),
            // Literals match only themselves.
            ("read:app", "read:app", true),
            ("read:app", "read:app-evil", false),
            ("read:app", "read:*", false),
            ("read:app/x", "read:app", false),
            // Verbs.
            ("*:x", "write:x", true),
            ("*:x", "*:x", true),
            ("read:x", "*:x", false),
            ("read:x", "write:x", false),
            ("*:x", "write:y", false),
            // Schemes must match; a bare `*` or `**` covers any scheme.
            ("read:k8s://*", "read:k8s://prod", true),
            ("read:k8s://*/payments", "read:k8s://prod-eu/payments", true),
            ("read:k8s://*", "read:db://prod", false),
            ("read:k8s://*", "read:prod", false),
            ("read:k8s://*", "read:*", false),
            ("read:k8s://*", "read:k8s://prod/x", false),
            ("read:k8s://**", "read:k8s://prod/x", true),
            ("read:k8s://**", "read:k8s://*", true),
            ("read:k8s://**", "read:**", false),
            ("read:k8s://**", "read:db://prod", false),
            ("read:*", "read:k8s://prod", true),
            ("read:*/x", "read:k8s://*/x", true),
            ("read:*", "read:k8s://**", false),
            ("read:k8s://prod", "read:prod", false),
        ];
        for (granted, requested, expected) in cases {
            let got = item(granted).covers(&item(requested));
            assert_eq!(got, expected, "{granted} covers {requested}");
        }
    }

    #[test]
    fn rejections() {
        let long = format!("read:{}", "a".repeat(MAX_LEN));
        let cases = [
            ("read", "missing_separator"),
            (":x", "empty_verb"),
            ("re*d:x", "bad_verb"),
            ("re/ad:x", "bad_verb"),
            ("read:", "empty_resource"),
            ("read:a//b", "empty_segment"),
            ("read:a/", "empty_segment"),
            ("read:/a", "empty_segment"),
            ("read:k8s://", "empty_segment"),
            ("read:a/./b", "dot_segment"),
            ("read:../b", "dot_segment"),
            ("read:k8s://..", "dot_segment"),
            ("read:app*", "glob_in_segment"),
            ("read:a**b", "glob_in_segment"),
            ("read:*x", "glob_in_segment"),
            ("read:k8s://prod*", "glob_in_segment"),
            ("read:**/x", "double_star_not_last"),
            ("read:k8s://**/x", "double_star_not_last"),
            ("read:a b", "whitespace"),
            (" read:a", "whitespace"),
            ("read:a\u{7}", "whitespace"),
            ("read:a\n", "whitespace"),
            (&long, "too_long"),
            ("read:://x", "empty_scheme"),
            ("read:K8s://x", "bad_scheme"),
            ("read:8s://x", "bad_scheme"),
            ("read:*://x", "bad_scheme"),
            ("read:s3://bucket/%2e%2e", "percent_encoded"),
            ("read:s3://bucket/%2E", "percent_encoded"),
            ("read:s3://bucket/.%2e", "percent_encoded"),
            ("read:s3://bucket/%2e.", "percent_encoded"),
            ("read:s3://bucket/a%2fb", "percent_encoded"),
            ("read:s3://bucket/a%2Fb", "percent_encoded"),
            ("read:s3://bucket/%252e%252e", "percent_encoded"),
            ("read:s3%2f://x", "bad_scheme"),
        ];
        for (text, expected) in cases {
            let error = ScopeItem::parse(text).expect_err(text);
            let code = error.code().map(|c| c.to_string());
            assert_eq!(code.as_deref(), Some(&*format!("writ::scope::{expected}")));
            assert!(error.help().is_some(), "{text}");
            let message = error.to_string();
            assert!(message.starts_with("scope item `") && !message.ends_with('.'));
        }
        assert!(ScopeItem::parse(&long[..MAX_LEN]).is_ok());
        assert!(ScopeItem::parse("read:git+ssh.v-2://h/x").is_ok());
        // Other escapes, and a `%` that starts none, are ordinary text.
        for text in [
            "read:s3://b/a%20b",
            "read:s3://b/100%",
            "read:s3://b/%2",
            "read:s3://b/%3a",
        ] {
            assert!(ScopeItem::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn percent_encoded_separators_are_found_in_any_case() {
        assert_eq!(percent_encoded("a/%2E%2e"), Some("%2E"));
        assert_eq!(percent_encoded("a%2Fb"), Some("%2F"));
        assert_eq!(percent_encoded("%25"), Some("%25"));
        assert_eq!(percent_encoded("100%"), None);
        assert_eq!(percent_encoded("%%2f"), Some("%2f"));
        assert_eq!(percent_encoded("a%20b%3A"), None);
        assert_eq!(percent_encoded("é%2e"), Some("%2e"));
    }

    #[test]
    fn the_byte_classes_are_the_comparisons_they_replace() {
        for b in 0..=255u8 {
            let class = BYTE_CLASS[usize::from(b)];
            assert_eq!(class & VERB != 0, verb_byte(&b), "{b}");
            assert_eq!(class & ODD != 0, b <= b' ' || b >= 0x7f || b == b'%', "{b}");
            assert_eq!(class & STAR != 0, b == b'*', "{b}");
            assert_eq!(class & SLASH != 0, b == b'/', "{b}");
        }
    }

    #[test]
    fn messages() {
        let message = |text: &str| ScopeItem::parse(text).expect_err(text).to_string();
        let glob = "scope item `read:app*` has a glob inside the segment `app*`";
        assert_eq!(message("read:app*"), glob);
        let tab = "scope item `read:a\\tb` contains whitespace or a control character";
        assert_eq!(message("read:a\tb"), tab);
        let long = message(&"x".repeat(2000));
        assert!(long.contains("is 2000 bytes") && long.len() < 120, "{long}");
    }

    /// An independent, allocating matcher of a pattern against a concrete item.
    fn matches(pattern: &str, concrete: &str) -> bool {
        fn split(text: &str) -> (&str, Vec<(Option<&str>, &str)>) {
            let (verb, resource) = text.split_once(':').expect("verb");
            let (scheme, path) = match resource.split_once("://") {
                Some((scheme, path)) if !scheme.contains('/') => (Some(scheme), path),
                _ => (None, resource),
            };
            let mut segments: Vec<_> = path.split('/').map(|s| (None, s)).collect();
            segments[0].0 = scheme;
            (verb, segments)
        }
        let ((pv, ps), (cv, cs)) = (split(pattern), split(concrete));
        if pv != "*" && pv != cv {
            return false;
        }
        for (i, &(scheme, body)) in ps.iter().enumerate() {
            let Some(&c) = cs.get(i) else { return false };
            let scheme_ok = scheme.is_none() || scheme == c.0;
            match body {
                "**" => return scheme_ok,
                "*" if scheme_ok => {}
                _ if (scheme, body) == c => {}
                _ => return false,
            }
        }
        ps.len() == cs.len()
    }

    /// Every concrete item with 1 to 5 segments over `a`, `b` and `c`: enough
    /// to tell apart the patterns `pattern()` makes, which have at most four
    /// segments and never use `c`.
    fn universe() -> Vec<String> {
        let (mut paths, mut frontier) = (Vec::new(), vec![String::new()]);
        for _ in 0..5 {
            frontier = frontier
                .iter()
                .flat_map(|p| ["/a", "/b", "/c"].map(|s| format!("{p}{s}")))
                .collect();
            paths.extend(frontier.iter().map(|p| p[1..].to_owned()));
        }
        let prefixes =
            ["read:", "write:"].map(|verb| ["", "k8s://", "db://"].map(|s| format!("{verb}{s}")));
        let prefixes = prefixes.iter().flatten();
        prefixes
            .flat_map(|pre| paths.iter().map(move |path| format!("{pre}{path}")))
            .collect()
    }

    fn pattern() -> impl Strategy<Value = ScopeItem> {
        let verb = select(&["read", "write", "*"][..]);
        let scheme = select(&["", "k8s://", "db://"][..]);
        let segments = vec(select(&["a", "b", "*"][..]), 0..4);
        (verb, scheme, segments, any::<bool>()).prop_map(|(verb, scheme, mut segments, tail)| {
            if tail || segments.is_empty() {
                segments.push("**");
            }
            item(&format!("{verb}:{scheme}{}", segments.join("/")))
        })
    }

    proptest! {
        #[test]
        fn covers_is_reflexive(a in pattern()) {
            prop_assert!(a.covers(&a));
        }

        #[test]
        fn covers_is_transitive(items in vec(pattern(), 8..16)) {
            for (a, b) in items.iter().flat_map(|a| items.iter().map(move |b| (a, b))) {
                for c in items.iter().filter(|c| a.covers(b) && b.covers(c)) {
                    prop_assert!(a.covers(c), "{a} > {b} > {c}");
                }
            }
        }

        #[test]
        fn covers_agrees_with_matching_on_concrete_items(a in pattern(), b in select(universe())) {
            let b = item(&b);
            prop_assert!(!b.has_wildcard());
            prop_assert_eq!(a.covers(&b), matches(a.as_str(), b.as_str()));
        }

        #[test]
        fn covers_is_inclusion_of_matched_items(a in pattern(), b in pattern()) {
            let included = universe().iter().all(|c| !matches(b.as_str(), c) || matches(a.as_str(), c));
            prop_assert_eq!(a.covers(&b), included, "{} covers {}", a, b);
        }

        /// The one-pass parse accepts nothing the full parse refuses, and
        /// gives the same item.
        #[test]
        fn the_fast_parse_agrees_with_the_full_parse(
            text in "[a-z0-9*.:/ +_\\-\u{e9}\t]{0,16}",
        ) {
            if let Some(fast) = ScopeItem::parse_plain(&text) {
                prop_assert_eq!(Some(fast), ScopeItem::parse_checked(&text).ok());
            }
        }

        #[test]
        fn the_fast_parse_takes_the_usual_items(
            text in "(read|\\*|deploy):([a-z][a-z0-9+.-]{0,3}://)?([a-z0-9]{1,4}|\\*)(/([a-z0-9]{1,4}|\\*)){0,3}(/\\*\\*)?",
        ) {
            prop_assert!(ScopeItem::parse_plain(&text).is_some(), "{}", text);
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = ScopeItem::parse(&text);
        }

        #[test]
        fn parse_round_trips(text in "[a-z*]{0,3}:([a-z*.]{0,3}(:|/|://)){0,4}[a-z*.]{0,3}") {
            if let Ok(parsed) = ScopeItem::parse(&text) {
                prop_assert_eq!(parsed.to_string(), text.clone());
                prop_assert!(parsed.covers(&parsed));
            }
        }
    }
}
