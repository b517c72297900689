//! Source files, file ids and byte spans.
//!
//! Every later phase refers to text through a [`Span`]: a file id and a byte
//! range. Spans are `Copy` and cheap; the text itself lives once in
//! [`Sources`] and is attached only when a diagnostic is rendered.

use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

/// Identifies one file inside a [`Sources`] set. Only [`Sources::add`]
/// makes one outside this crate, so that [`Sources::get`] finds the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) u32);

/// A byte range inside one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// The file the range belongs to.
    pub file: FileId,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span over `start..end` of `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    /// The smallest span that covers both `self` and `other` (same file).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The range as miette wants it.
    pub fn source_span(self) -> SourceSpan {
        SourceSpan::from((
            self.start as usize,
            (self.end - self.start.min(self.end)) as usize,
        ))
    }
}

/// One policy file: its display name and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name diagnostics and traces show (`policies/default/identity.writ`).
    pub name: String,
    /// The full text.
    pub text: Arc<str>,
    /// Byte offset of the start of each line, for `file:line` locations.
    line_starts: Vec<u32>,
    /// Position of the file in its set, for ordering diagnostics.
    pub order: u32,
}

impl SourceFile {
    /// A file from its name and text.
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> SourceFile {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0u32];
        line_starts.extend(
            memchr::memchr_iter(b'\n', text.as_bytes())
                .map(|offset| u32::try_from(offset + 1).unwrap_or(u32::MAX)),
        );
        SourceFile {
            name: name.into(),
            text,
            line_starts,
            order: 0,
        }
    }

    /// The 1-based line number of a byte offset.
    pub fn line_of(&self, offset: u32) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(index) => index + 1,
            Err(index) => index,
        }
    }

    /// The 1-based (line, column) of a byte offset; the column counts chars.
    pub fn line_col(&self, offset: u32) -> (usize, usize) {
        let line = self.line_of(offset);
        let start = self.line_starts[line - 1] as usize;
        let end = (offset as usize).min(self.text.len());
        let column = self.text.get(start..end).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// The text a span covers (empty when the span is out of range).
    pub fn slice(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    /// The file as a miette source, for diagnostics.
    pub fn named_source(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(self.name.clone(), self.text.clone())
    }
}

/// The set of files a policy set was compiled from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    /// An empty set.
    pub fn new() -> Sources {
        Sources::default()
    }

    /// Adds a file and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        let mut file = SourceFile::new(name, text);
        file.order = id.0;
        self.files.push(file);
        id
    }

    /// The file with this id.
    ///
    /// INVARIANT: ids are only made by [`Sources::add`], so they are in range.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// All files, in the order they were added.
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(index, file)| (FileId(index as u32), file))
    }

    /// `file:line` of a span, as traces show it.
    pub fn location(&self, span: Span) -> String {
        use std::fmt::Write;
        let file = self.get(span.file);
        // Sized for the name, the colon and any line number, so that the
        // text is written without growing (one per rule at compile).
        let mut location = String::with_capacity(file.name.len() + 21);
        let _ = write!(location, "{}:{}", file.name, file.line_of(span.start));
        location
    }

    /// The text under a span.
    pub fn slice(&self, span: Span) -> &str {
        self.get(span.file).slice(span)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file was added.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Largest request or data file the CLI and the server read, in bytes.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Reads all of `reader` (named `name` in errors) as UTF-8, refusing more
/// than `limit` bytes without reading past `limit + 1`.
pub fn read_limited(reader: impl std::io::Read, name: &str, limit: u64) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    reader
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read `{name}`: {e}"))?;
    if text.len() as u64 > limit {
        return Err(format!("`{name}` is larger than {limit} bytes"));
    }
    Ok(text)
}
