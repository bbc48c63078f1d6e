//! Documents as written: a small tree that keeps where every value came from.
//!
//! Manifests arrive as YAML files (CLI) or as JSON objects (the function).
//! Both become a [`Node`] tree. YAML scalars keep their text and whether they
//! were quoted, so that type decisions are made against the schema rather than
//! by YAML 1.1/1.2 guessing: `hostname: no` is the string `no`, and
//! `macAddress: 52:54:00:12:34:56` is the text the user wrote, not a base-60
//! integer.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{
    ErrorKind, Event, Options, Parser, ScalarStyle, ScanError, Span,
};

use crate::diag::Pos;

/// The largest manifest file Fabric reads: 4 MiB.
///
/// A Machine is under a kilobyte, Kubernetes stores no object over 1.5 MiB
/// (etcd's limit), and the composition function's gRPC requests stop at
/// 4 MiB, so a bigger file is a mistake (a log, a dump, a binary) or an
/// attack, not a manifest. About 5,000 machines fit in one file; a bigger
/// fleet is split over files, which `fabric validate DIR` reads together.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How deeply collections may nest. A Machine needs five levels; a CRD's
/// schema in the same directory needs a few dozen. Deeper is refused with a
/// clear error before the recursive checks further on could exhaust a stack.
pub const MAX_DEPTH: usize = 128;

/// A value with the position it was written at (absent for JSON input).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub pos: Option<Pos>,
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub text: String,
    /// Where the key starts.
    pub pos: Option<Pos>,
}

/// The shape of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~`, or nothing.
    Null,
    /// A scalar. `plain` is false for quoted and block scalars.
    Scalar {
        /// Text after escape processing.
        text: String,
        /// Written without quotes (so numbers and booleans may be meant).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Mapping),
}

/// Mappings with fewer entries than this are searched by scanning, which is
/// cheaper than hashing their few keys; bigger ones keep a hash index, so
/// that reading a mapping and looking keys up in it stay linear however many
/// keys it has (scanning per key made a 4 MB file take 18 s).
const INDEXED_FROM: usize = 16;

/// A mapping's entries in document order, with keys unique.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    entries: Vec<(Key, Node)>,
    // Boxed: most mappings have none, and every Node is as big as its
    // biggest variant (88 bytes unboxed, 56 boxed).
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<String, usize>>>,
}

impl PartialEq for Mapping {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Mapping {
    /// An empty mapping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in document order.
    pub fn iter(&self) -> std::slice::Iter<'_, (Key, Node)> {
        self.entries.iter()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The key as written, if the mapping has it.
    pub fn key(&self, key: &str) -> Option<&Key> {
        self.position(key).map(|i| &self.entries[i].0)
    }

    /// Adds an entry at the end. A key the mapping already has is refused:
    /// the first one written is returned.
    pub fn insert(&mut self, key: Key, value: Node) -> Result<(), &Key> {
        if let Some(i) = self.position(&key.text) {
            return Err(&self.entries[i].0);
        }
        self.push_new(key, value);
        Ok(())
    }

    /// Adds an entry whose key the caller has checked is not there yet.
    fn push_new(&mut self, key: Key, value: Node) {
        if self.index.is_some() || self.entries.len() + 1 >= INDEXED_FROM {
            self.index_entry(&key.text);
        }
        self.entries.push((key, value));
    }

    /// Records the entry about to be pushed under `key`, building the index
    /// when the mapping reaches [`INDEXED_FROM`]. Out of line, like
    /// `indexed_position`.
    #[inline(never)]
    fn index_entry(&mut self, key: &str) {
        let at = self.entries.len();
        let entries = &self.entries;
        let index = self.index.get_or_insert_with(|| {
            let mut index = HashMap::with_capacity(2 * INDEXED_FROM);
            for (i, (k, _)) in entries.iter().enumerate() {
                index.insert(k.text.clone(), i);
            }
            Box::new(index)
        });
        index.insert(key.to_string(), at);
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => indexed_position(index, key),
            None => {
                probe::count(self.entries.len() as u64);
                self.entries.iter().position(|(k, _)| k.text == key)
            }
        }
    }
}

// Out of line: keeps the hash probe out of `parse_yaml`'s loop, where most
// mappings never need it (a smaller loop measured 1 % fewer instructions).
#[inline(never)]
fn indexed_position(index: &HashMap<String, usize>, key: &str) -> Option<usize> {
    probe::count(1);
    index.get(key).copied()
}

impl<'a> IntoIterator for &'a Mapping {
    type Item = &'a (Key, Node);
    type IntoIter = std::slice::Iter<'a, (Key, Node)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

/// Counts key lookups' work in this crate's unit tests, so that a test can
/// tell linear from quadratic without timing anything. Compiled out elsewhere.
#[cfg(test)]
pub(crate) mod probe {
    use std::cell::Cell;

    thread_local! {
        static PROBES: Cell<u64> = const { Cell::new(0) };
    }

    /// Adds `n` key comparisons (a hash lookup counts as one, a scan as the
    /// whole mapping, an upper bound).
    pub fn count(n: u64) {
        PROBES.with(|p| p.set(p.get() + n));
    }

    /// Comparisons made by `f` on this thread.
    pub fn during<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let before = PROBES.with(Cell::get);
        let out = f();
        (out, PROBES.with(Cell::get) - before)
    }
}

#[cfg(not(test))]
mod probe {
    #[inline(always)]
    pub fn count(_: u64) {}
}

impl Node {
    /// Looks up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.get(key),
            _ => None,
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Converts JSON (as the function receives it) into a tree without positions.
    pub fn from_json(value: &serde_json::Value) -> Node {
        let value = match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Scalar {
                text: b.to_string(),
                plain: true,
            },
            serde_json::Value::Number(n) => Value::Scalar {
                text: n.to_string(),
                plain: true,
            },
            serde_json::Value::String(s) => Value::Scalar {
                text: s.clone(),
                plain: false,
            },
            serde_json::Value::Array(items) => {
                Value::Seq(items.iter().map(Node::from_json).collect())
            }
            serde_json::Value::Object(map) => {
                let mut entries = Mapping::new();
                for (k, v) in map {
                    let key = Key {
                        text: k.clone(),
                        pos: None,
                    };
                    // A JSON object's keys are already unique.
                    let _ = entries.insert(key, Node::from_json(v));
                }
                Value::Map(entries)
            }
        };
        Node { value, pos: None }
    }
}

/// Why a file's bytes cannot be read as a manifest at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("the file is {} ({size} bytes), more than the {} a manifest may have", mib(*size), mib(MAX_MANIFEST_BYTES as u64))]
    TooLarge {
        /// Its size in bytes.
        size: u64,
    },
    /// A byte sequence that is not UTF-8.
    #[error("not UTF-8 text: byte 0x{byte:02x} at byte offset {offset}")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
        /// That byte.
        byte: u8,
        /// Its line and column (columns count characters).
        pos: Pos,
    },
    /// A NUL byte, which YAML never allows and which marks a binary file.
    #[error("a NUL byte at byte offset {offset}: this is a binary file, not a YAML manifest")]
    Nul {
        /// Offset of the first NUL.
        offset: usize,
        /// Its line and column.
        pos: Pos,
    },
}

impl TextError {
    /// Where in the file, when the problem has a place.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            TextError::TooLarge { .. } => None,
            TextError::NotUtf8 { pos, .. } | TextError::Nul { pos, .. } => Some(*pos),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            TextError::TooLarge { .. } => format!(
                "a Machine is under 1 KiB: check that this is the file you meant; split a large fleet into files of at most {}, which fabric validate DIR reads together",
                mib(MAX_MANIFEST_BYTES as u64)
            ),
            TextError::NotUtf8 { .. } => "save the manifest as UTF-8".into(),
            TextError::Nul { .. } => "name the manifest, not a binary".into(),
        }
    }

    /// As `FILE[:LINE:COL]: what (what to do)`, the form of every diagnostic.
    pub fn located(&self, file: &str) -> String {
        match self.pos() {
            Some(pos) => format!("{file}:{pos}: {self} ({})", self.hint()),
            None => format!("{file}: {self} ({})", self.hint()),
        }
    }
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1 << 20) as f64;
    if m.fract() == 0.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// Refuses a manifest file by its size alone, before reading it.
pub fn check_manifest_size(size: u64) -> Result<(), TextError> {
    if size > MAX_MANIFEST_BYTES as u64 {
        return Err(TextError::TooLarge { size });
    }
    Ok(())
}

/// A manifest file's bytes as text: at most [`MAX_MANIFEST_BYTES`], UTF-8,
/// no NUL. Errors give the byte offset and the line and column.
pub fn manifest_text(bytes: &[u8]) -> Result<&str, TextError> {
    check_manifest_size(bytes.len() as u64)?;
    // NUL first: a binary file is better called binary than "not UTF-8" at
    // whatever byte happens to come first.
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(TextError::Nul {
            offset,
            pos: pos_at(bytes, offset),
        });
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        TextError::NotUtf8 {
            offset,
            byte: bytes[offset],
            pos: pos_at(bytes, offset),
        }
    })
}

/// Line and column of byte `offset`; columns count characters where the
/// line is UTF-8 up to there, else bytes.
fn pos_at(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = std::str::from_utf8(&before[line_start..])
        .map_or(offset - line_start, |l| l.chars().count());
    Pos {
        line: before.iter().filter(|&&b| b == b'\n').count() as u32 + 1,
        col: col as u32 + 1,
    }
}

/// A YAML syntax error, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where.
    pub pos: Pos,
    /// What would be right, when more can be said than "fix the syntax".
    pub hint: Option<String>,
}

impl SyntaxError {
    /// Valid YAML that Fabric refuses (anchors, aliases), rather than text
    /// that is not YAML.
    pub fn is_refused_yaml(&self) -> bool {
        self.hint.as_deref() == Some(ANCHOR_HINT)
    }

    fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            pos,
            hint: None,
        }
    }
}

/// Parses every document of a YAML stream.
///
/// Anchors and aliases are refused: a manifest has no need for them, and they
/// are how "billion laughs" inputs grow. Time and memory are linear in the
/// text; nesting is bounded by [`MAX_DEPTH`]. The size of the text is the
/// caller's to bound ([`MAX_MANIFEST_BYTES`] for files).
pub fn parse_yaml(text: &str) -> Result<Vec<Node>, SyntaxError> {
    // The scanner runs ahead of the events; with its own limits at ours it
    // stops at the first level too deep, not 127 levels later.
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    let mut events = Parser::new_from_str_with_options(text, options);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    while let Some(next) = events.next_event() {
        let (event, span) = next.map_err(|e| scan_error(text, &e))?;
        let pos = pos_of(&span);
        let node = match event {
            Event::StreamStart | Event::DocumentStart(..) | Event::DocumentEnd => continue,
            Event::StreamEnd => break,
            Event::Alias(_) | Event::UnresolvedAlias(_) => return Err(SyntaxError {
                message:
                    "aliases (*name) are valid YAML, but Fabric does not accept them in manifests"
                        .into(),
                pos,
                hint: Some(ANCHOR_HINT.into()),
            }),
            Event::Scalar(text, style, anchor, _tag) => {
                if anchor != 0 {
                    return Err(anchor_error(pos));
                }
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                Node {
                    value,
                    pos: Some(pos),
                }
            }
            Event::SequenceStart(_, anchor, _) => {
                if anchor != 0 {
                    return Err(anchor_error(pos));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                stack.push(Frame::Seq(pos, Vec::new()));
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                if anchor != 0 {
                    return Err(anchor_error(pos));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                stack.push(Frame::Map(pos, Mapping::new(), None));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Node {
                    value: Value::Seq(items),
                    pos: Some(p),
                },
                _ => unreachable_frame(pos)?,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, entries, _)) => Node {
                    value: Value::Map(entries),
                    pos: Some(p),
                },
                _ => unreachable_frame(pos)?,
            },
            #[allow(unreachable_patterns)]
            _ => continue,
        };
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => {
                    let text = match node.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => String::new(),
                        _ => return Err(complex_key(node.pos.unwrap_or(pos))),
                    };
                    if let Some(first) = entries.key(&text) {
                        return Err(duplicate_key(&text, first, node.pos.unwrap_or(pos)));
                    }
                    *pending = Some(Key {
                        text,
                        pos: node.pos,
                    });
                }
                // The key was checked when it arrived.
                Some(key) => entries.push_new(key, node),
            },
        }
    }
    Ok(docs)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Mapping, Option<Key>),
}

/// The parser's error, located where the user has to look: a tab error is
/// reported at the tab (the scanner notices it only while finishing the
/// scalar before it, often on the line above).
#[cold]
#[inline(never)]
fn scan_error(text: &str, e: &ScanError) -> SyntaxError {
    let at = Pos {
        line: e.marker().line() as u32,
        col: e.marker().col() as u32 + 1,
    };
    match e.kind() {
        ErrorKind::TabNotAllowed
        | ErrorKind::TabInBlockIndentation
        | ErrorKind::TabAtBlockScalarStart
        | ErrorKind::TabInIndentation
        | ErrorKind::TabInPlainScalar => SyntaxError {
            message: "a tab is used for indentation".into(),
            pos: tab_position(text, e.marker().line()).unwrap_or(at),
            hint: Some("YAML indents with spaces only: replace the tab with spaces".into()),
        },
        ErrorKind::RecursionLimitExceeded => too_deep(at),
        _ => SyntaxError::at(at, e.info()),
    }
}

/// The first tab in a line's indentation at or after `line` (1-based), else
/// the first tab at all from there.
#[cold]
#[inline(never)]
fn tab_position(text: &str, line: usize) -> Option<Pos> {
    let lines = || text.split('\n').enumerate().skip(line.saturating_sub(1));
    let at = |n: usize, col: usize| Pos {
        line: n as u32 + 1,
        col: col as u32 + 1,
    };
    lines()
        .find_map(|(n, l)| {
            l.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .position(|c| c == '\t')
                .map(|col| at(n, col))
        })
        .or_else(|| {
            lines().find_map(|(n, l)| l.chars().position(|c| c == '\t').map(|col| at(n, col)))
        })
}

#[cold]
#[inline(never)]
fn duplicate_key(text: &str, first: &Key, pos: Pos) -> SyntaxError {
    SyntaxError::at(
        pos,
        format!(
            "the key {text:?} appears twice in this mapping (first at line {})",
            first.pos.map(|p| p.line).unwrap_or(0)
        ),
    )
}

#[cold]
#[inline(never)]
fn complex_key(pos: Pos) -> SyntaxError {
    SyntaxError::at(pos, "complex mapping keys are not supported")
}

#[cold]
#[inline(never)]
fn too_deep(pos: Pos) -> SyntaxError {
    SyntaxError {
        message: format!("collections are nested more than {MAX_DEPTH} levels deep"),
        pos,
        hint: Some("a Machine nests five levels; look for unclosed [ or {".into()),
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
    }
}

#[cold]
#[inline(never)]
fn anchor_error(pos: Pos) -> SyntaxError {
    SyntaxError {
        message: "anchors (&name) are valid YAML, but Fabric does not accept them in manifests"
            .into(),
        pos,
        hint: Some(ANCHOR_HINT.into()),
    }
}

/// Why anchors and aliases are refused, and what to write instead.
const ANCHOR_HINT: &str = "an alias can make a small file expand without bound, and the cluster stores the expanded object anyway: write the value out in full where the alias was used";

#[cold]
#[inline(never)]
fn unreachable_frame(pos: Pos) -> Result<Node, SyntaxError> {
    Err(SyntaxError::at(pos, "unbalanced YAML structure"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_and_positions() {
        let docs =
            parse_yaml("a:\n  b: no\n  mac: 52:54:00:12:34:56\n  n: ~\n---\nx: 1\n").unwrap();
        assert_eq!(docs.len(), 2);
        let a = docs[0].get("a").unwrap();
        let b = a.get("b").unwrap();
        assert_eq!(b.as_text(), Some("no"));
        assert_eq!(b.pos, Some(Pos { line: 2, col: 6 }));
        assert_eq!(a.get("mac").unwrap().as_text(), Some("52:54:00:12:34:56"));
        assert_eq!(a.get("n").unwrap().value, Value::Null);
    }

    #[test]
    fn refuses_duplicate_keys_and_aliases() {
        let e = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        assert_eq!(e.pos.line, 2);
        assert!(parse_yaml("a: &x 1\nb: *x\n").is_err());
    }

    fn keys(n: usize) -> String {
        (0..n).map(|i| format!("k{i}: v{i}\n")).collect()
    }

    #[test]
    fn reading_and_looking_up_many_keys_is_linear() {
        // A scan per key compares n^2/2 times: 50 million here.
        let n = 10_000;
        let text = keys(n);
        let (docs, probes) = probe::during(|| parse_yaml(&text));
        let docs = docs.unwrap();
        assert!(probes <= 2 * n as u64, "{probes} comparisons for {n} keys");
        let (found, probes) = probe::during(|| {
            (0..n)
                .filter(|i| docs[0].get(&format!("k{i}")).is_some())
                .count()
        });
        assert_eq!(found, n);
        assert!(
            probes <= 2 * n as u64,
            "{probes} comparisons for {n} lookups"
        );
    }

    #[test]
    fn duplicates_are_found_in_small_and_indexed_mappings() {
        for n in [3, INDEXED_FROM - 1, INDEXED_FROM, INDEXED_FROM + 1, 200] {
            let text = format!("{}k1: again\n", keys(n));
            let e = parse_yaml(&text).unwrap_err();
            assert_eq!(
                e.message, "the key \"k1\" appears twice in this mapping (first at line 2)",
                "{n} keys"
            );
            assert_eq!(
                e.pos,
                Pos {
                    line: n as u32 + 1,
                    col: 1
                },
                "{n} keys"
            );
            let docs = parse_yaml(&keys(n)).unwrap();
            assert_eq!(
                docs[0].get(&format!("k{}", n - 1)).and_then(Node::as_text),
                Some(format!("v{}", n - 1).as_str())
            );
            assert_eq!(
                docs[0].get("k1").and_then(|n| n.pos),
                Some(Pos { line: 2, col: 5 })
            );
            assert!(docs[0].get("nope").is_none());
        }
    }

    #[test]
    fn a_tab_is_reported_where_it_is() {
        for (text, line, col) in [
            // The scanner notices this tab while finishing `1` on line 1.
            ("a: 1\n\tb: 2\n", 2, 1),
            ("a:\n\tb: 1\n", 2, 1),
            ("a: 1\nb:\n  c: 1\n\td: 2\n", 4, 1),
            ("a:\n  - 1\n  \t- 2\n", 3, 3),
        ] {
            let e = parse_yaml(text).unwrap_err();
            assert_eq!((e.pos.line, e.pos.col), (line, col), "{text:?}: {e:?}");
            assert_eq!(e.message, "a tab is used for indentation", "{text:?}");
            assert!(e.hint.unwrap().contains("spaces"));
        }
        // A tab inside a value is no error.
        assert!(parse_yaml("a: \"x\ty\"\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_with_a_clear_error() {
        for text in [
            format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)),
            "[".repeat(100_000),
            (0..MAX_DEPTH + 1)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>(),
        ] {
            let e = parse_yaml(&text).unwrap_err();
            assert!(e.message.contains("nested more than 128 levels"), "{e:?}");
            assert!(e.pos.line == 129 || e.pos.col == 129, "{e:?}");
        }
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_yaml(&ok).is_ok());
    }

    #[test]
    fn manifest_text_names_the_offending_byte() {
        let e = manifest_text(b"kind: Machine\nname: caf\xe9\n").unwrap_err();
        assert_eq!(
            e,
            TextError::NotUtf8 {
                offset: 23,
                byte: 0xe9,
                pos: Pos { line: 2, col: 10 }
            }
        );
        assert_eq!(
            e.located("m.yaml"),
            "m.yaml:2:10: not UTF-8 text: byte 0xe9 at byte offset 23 (save the manifest as UTF-8)"
        );
        // Columns count characters, not bytes.
        let e = manifest_text(b"a: \xc3\xa9\xff").unwrap_err();
        assert_eq!(e.pos(), Some(Pos { line: 1, col: 5 }));
        let e = manifest_text(b"ELF\x00\x01").unwrap_err();
        assert!(e.to_string().contains("NUL byte at byte offset 3"), "{e}");
        // A binary is called binary even when a non-UTF-8 byte comes first.
        let e = manifest_text(b"\x89PNG\r\n\x1a\n\x00\x00").unwrap_err();
        assert_eq!(e.pos(), Some(Pos { line: 3, col: 1 }), "{e}");
        assert!(e.to_string().contains("NUL byte at byte offset 8"), "{e}");
        assert_eq!(manifest_text(b"kind: Machine\n"), Ok("kind: Machine\n"));
    }

    #[test]
    fn an_oversized_manifest_is_refused_with_its_size_and_the_limit() {
        let big = vec![b'#'; MAX_MANIFEST_BYTES + 1];
        let e = manifest_text(&big).unwrap_err();
        assert_eq!(
            e.located("big.yaml"),
            format!("big.yaml: the file is 4.0 MiB ({} bytes), more than the 4 MiB a manifest may have ({})", MAX_MANIFEST_BYTES + 1, e.hint())
        );
        assert!(check_manifest_size(50 << 20)
            .unwrap_err()
            .to_string()
            .starts_with("the file is 50 MiB"));
        assert!(manifest_text(&big[1..]).is_ok());
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let e = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1);
    }
}
