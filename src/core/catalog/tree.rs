//! A small document tree shared by the TOML and JSON readers, keeping byte spans (TOML only)
//! so that every problem can name its line, plus helpers to read typed fields from it.
//! It knows syntax and types only; what a field means is for the readers that use it.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Problem, Severity};

// The private names the `toml` crate uses to hand out spans (`toml::Spanned`) and datetimes.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[START, END, VALUE];
const DATETIME: &str = "$__toml_private_datetime";

pub(crate) type Span = Option<Range<usize>>;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// Wide enough for any integer JSON or TOML writes in practice (beyond `i64` and `u64`
    /// too), so that a value too large is reported against its field's range, not as a float.
    Int(i128),
    Float,
    Str(String),
    /// A TOML date or time written without quotes, as its text.
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub span: Span,
}

impl Kind {
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float => "a float",
            Kind::Str(_) => "a string",
            Kind::Datetime(_) => "a date/time",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, NodeVisitor { spanned: true })
    }
}

/// A node read without asking for its span (used for the value inside a span wrapper).
struct Unspanned(Node);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor { spanned: false })
            .map(Unspanned)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, KeyVisitor)
    }
}

fn leaf(kind: Kind) -> Node {
    Node { span: None, kind }
}

struct NodeVisitor {
    spanned: bool,
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(leaf(Kind::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(leaf(Kind::Int(i128::from(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(leaf(Kind::Int(i128::from(v))))
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Node, E> {
        Ok(leaf(Kind::Float))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(leaf(Kind::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(leaf(Kind::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(leaf(Kind::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(leaf(Kind::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(leaf(Kind::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(leaf(Kind::Table(Vec::new())));
        };
        if self.spanned && first.name == START {
            // The span wrapper: start, end, value (in any order, to be safe).
            let mut start: usize = map.next_value()?;
            let mut end = start;
            let mut value = None;
            while let Some(k) = map.next_key::<Key>()? {
                match k.name.as_str() {
                    START => start = map.next_value()?,
                    END => end = map.next_value()?,
                    VALUE => value = Some(map.next_value::<Unspanned>()?.0),
                    _ => {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
            }
            let mut node = value.unwrap_or_else(|| leaf(Kind::Null));
            node.span = Some(start..end.max(start));
            return Ok(node);
        }
        if first.name == DATETIME {
            let v = map.next_value::<Node>()?;
            while map.next_key::<de::IgnoredAny>()?.is_some() {
                map.next_value::<de::IgnoredAny>()?;
            }
            let text = match v.kind {
                Kind::Str(s) | Kind::Datetime(s) => s,
                other => format!("{other:?}"),
            };
            return Ok(leaf(Kind::Datetime(text)));
        }
        let mut entries = vec![(first, map.next_value::<Node>()?)];
        while let Some(k) = map.next_key::<Key>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(leaf(Kind::Table(entries)))
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: None,
        })
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
        Ok(Key {
            name: v,
            span: None,
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
        self.visit_string(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
        self.visit_string(v.to_string())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let mut start = None;
        let mut end = None;
        let mut name = String::new();
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                START => start = Some(map.next_value::<usize>()?),
                END => end = Some(map.next_value::<usize>()?),
                VALUE => name = map.next_value::<String>()?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let span = match (start, end) {
            (Some(s), Some(e)) => Some(s..e.max(s)),
            (Some(s), None) => Some(s..s),
            _ => None,
        };
        Ok(Key { name, span })
    }
}

/// Parses TOML text. On a syntax error: the error's line (if known) and message.
pub(crate) fn parse_toml(text: &str) -> Result<Node, (Option<usize>, String)> {
    match toml::from_str::<Node>(text) {
        Ok(n) => Ok(n),
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg: Vec<&str> = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            Err((line, msg.join("; ")))
        }
    }
}

/// Parses JSON text. On a syntax error: the error's line (if known) and message.
pub(crate) fn parse_json(text: &str) -> Result<Node, (Option<usize>, String)> {
    match serde_json::from_str::<serde_json::Value>(text) {
        // Valid JSON: read it again keeping spans; the plain tree is the fallback.
        Ok(v) => Ok(JsonSpans::parse(text).unwrap_or_else(|| from_json(v))),
        Err(e) => {
            let line = (e.line() > 0).then_some(e.line());
            let msg = e.to_string();
            // serde_json appends " at line L column C"; the line is reported separately.
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_owned(),
                None => msg,
            };
            Err((line, msg))
        }
    }
}

fn from_json(v: serde_json::Value) -> Node {
    use serde_json::Value as J;
    leaf(match v {
        J::Null => Kind::Null,
        J::Bool(b) => Kind::Bool(b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Kind::Int(i128::from(i)),
            (None, Some(u)) => Kind::Int(i128::from(u)),
            _ => Kind::Float,
        },
        J::String(s) => Kind::Str(s),
        J::Array(a) => Kind::Array(a.into_iter().map(from_json).collect()),
        J::Object(o) => Kind::Table(
            o.into_iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k,
                            span: None,
                        },
                        from_json(v),
                    )
                })
                .collect(),
        ),
    })
}

/// A small reader of (already validated) JSON that keeps the byte span of every value and
/// key, so that problems in uploaded JSON name their line too. `None` on anything unexpected.
struct JsonSpans<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

impl<'a> JsonSpans<'a> {
    fn parse(text: &'a str) -> Option<Node> {
        let mut p = JsonSpans {
            b: text.as_bytes(),
            text,
            i: 0,
            depth: 0,
        };
        let n = p.value()?;
        p.ws();
        (p.i == p.b.len()).then_some(n)
    }
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    fn string(&mut self) -> Option<(String, Range<usize>)> {
        self.ws();
        let start = self.i;
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        loop {
            match self.b.get(self.i)? {
                b'\\' => self.i += 2,
                b'"' => break,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        let raw = self.text.get(start..self.i)?;
        let s: String = serde_json::from_str(raw).ok()?;
        Some((s, start..self.i))
    }
    /// One value and its span; nesting deeper than 200 is refused.
    fn value(&mut self) -> Option<Node> {
        self.depth += 1;
        if self.depth > 200 {
            return None;
        }
        self.ws();
        let start = self.i;
        let kind = match *self.b.get(self.i)? {
            b'{' => self.object()?,
            b'[' => self.array()?,
            b'"' => Kind::Str(self.string()?.0),
            _ => self.scalar(start)?,
        };
        self.depth -= 1;
        Some(Node {
            span: Some(start..self.i),
            kind,
        })
    }
    /// An object, from its `{`: its keys with their spans, and their values.
    fn object(&mut self) -> Option<Kind> {
        self.i += 1;
        let mut entries = Vec::new();
        if self.eat(b'}').is_none() {
            loop {
                let (name, span) = self.string()?;
                self.eat(b':')?;
                let v = self.value()?;
                entries.push((
                    Key {
                        name,
                        span: Some(span),
                    },
                    v,
                ));
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
        }
        Some(Kind::Table(entries))
    }
    /// An array, from its `[`.
    fn array(&mut self) -> Option<Kind> {
        self.i += 1;
        let mut items = Vec::new();
        if self.eat(b']').is_none() {
            loop {
                items.push(self.value()?);
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    break;
                }
            }
        }
        Some(Kind::Array(items))
    }
    /// `true`, `false`, `null` or a number, starting at `start`.
    fn scalar(&mut self, start: usize) -> Option<Kind> {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
        {
            self.i += 1;
        }
        Some(match self.text.get(start..self.i)? {
            "true" => Kind::Bool(true),
            "false" => Kind::Bool(false),
            "null" => Kind::Null,
            num => match num.parse::<i128>() {
                Ok(i) => Kind::Int(i),
                Err(_) => {
                    num.parse::<f64>().ok()?;
                    match num.strip_prefix('-') {
                        // An integer past even i128: as far out of any range as can be said.
                        Some(d) if d.bytes().all(|b| b.is_ascii_digit()) => Kind::Int(i128::MIN),
                        None if num.bytes().all(|b| b.is_ascii_digit()) => Kind::Int(i128::MAX),
                        _ => Kind::Float,
                    }
                }
            },
        })
    }
}

/// The 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let b = text.as_bytes();
    b[..offset.min(b.len())]
        .iter()
        .filter(|c| **c == b'\n')
        .count()
        + 1
}

/// Collects the problems of one file.
pub(crate) struct Sink<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub problems: Vec<Problem>,
    /// Offsets of the newlines of `text`, built on the first line asked for: a line is then
    /// a binary search, not a count from the top (quadratic on a large file with many
    /// problems).
    newlines: std::cell::OnceCell<Vec<usize>>,
    /// Errors among `problems`, counted as they come, so `has_errors` is not a scan.
    errors: usize,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Sink {
            file,
            text,
            problems: Vec::new(),
            newlines: std::cell::OnceCell::new(),
            errors: 0,
        }
    }
    pub fn line(&self, span: &Span) -> Option<usize> {
        let nl = self.newlines.get_or_init(|| {
            self.text
                .bytes()
                .enumerate()
                .filter(|(_, c)| *c == b'\n')
                .map(|(i, _)| i)
                .collect()
        });
        span.as_ref().map(|s| {
            let at = s.start.min(self.text.len());
            nl.partition_point(|&n| n < at) + 1
        })
    }
    fn push(&mut self, severity: Severity, line: Option<usize>, field: &str, message: String) {
        self.errors += usize::from(severity == Severity::Error);
        self.problems.push(Problem {
            severity,
            file: self.file.to_owned(),
            line,
            field: (!field.is_empty()).then(|| field.to_owned()),
            message,
        });
    }
    pub fn error(&mut self, span: &Span, field: &str, message: impl Into<String>) {
        let line = self.line(span);
        self.push(Severity::Error, line, field, message.into());
    }
    pub fn warn(&mut self, span: &Span, field: &str, message: impl Into<String>) {
        let line = self.line(span);
        self.push(Severity::Warning, line, field, message.into());
    }
    pub fn warn_at(&mut self, line: Option<usize>, field: &str, message: impl Into<String>) {
        self.push(Severity::Warning, line, field, message.into());
    }
    pub fn error_at(&mut self, line: Option<usize>, field: &str, message: impl Into<String>) {
        self.push(Severity::Error, line, field, message.into());
    }
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }
}

/// Reads the keys of one table, remembering which were used so the rest can be reported.
pub(crate) struct Table<'n> {
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
    pub span: Span,
    pub path: String,
}

impl<'n> Table<'n> {
    /// `path` is the field name of this table in problems ("" for the top level).
    pub fn new(node: &'n Node, path: &str, sink: &mut Sink) -> Option<Self> {
        match &node.kind {
            Kind::Table(entries) => Some(Table {
                entries,
                used: vec![false; entries.len()],
                span: node.span.clone(),
                path: path.to_owned(),
            }),
            other => {
                let what = if path.is_empty() {
                    "the document"
                } else {
                    path
                };
                sink.error(
                    &node.span,
                    path,
                    format!("expected {what} to be a table, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// The value of key `name`; a JSON `null` counts as absent.
    pub fn get(&mut self, name: &str) -> Option<&'n Node> {
        let entries = self.entries;
        let i = entries.iter().position(|(k, _)| k.name == name)?;
        self.used[i] = true;
        match entries[i].1.kind {
            Kind::Null => None,
            _ => Some(&entries[i].1),
        }
    }

    /// Whether key `name` is there with a value other than JSON `null`.
    pub fn has_value(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, v)| k.name == name && !matches!(v.kind, Kind::Null))
    }

    /// The field name of key `name` in this table.
    pub fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{}", self.path, name)
        }
    }

    /// Every entry (for tables whose keys are names chosen by the operator).
    pub fn entries(&mut self) -> &'n [(Key, Node)] {
        self.used.iter_mut().for_each(|u| *u = true);
        self.entries
    }

    /// Warns about every key that was not read.
    pub fn finish(self, sink: &mut Sink) {
        for ((k, v), used) in self.entries.iter().zip(&self.used) {
            if !used {
                let span = k.span.clone().or_else(|| v.span.clone());
                let field = if self.path.is_empty() {
                    k.name.clone()
                } else {
                    format!("{}.{}", self.path, k.name)
                };
                sink.warn(
                    &span,
                    &field,
                    format!("unknown key `{}` is ignored", k.name),
                );
            }
        }
    }
}

/// The text of a string node (or of an unquoted TOML date/time); an error otherwise.
pub(crate) fn expect_str<'n>(sink: &mut Sink, node: &'n Node, field: &str) -> Option<&'n str> {
    match &node.kind {
        Kind::Str(s) | Kind::Datetime(s) => Some(s),
        other => {
            sink.error(
                &node.span,
                field,
                format!("expected a string, found {}", other.describe()),
            );
            None
        }
    }
}

pub(crate) fn expect_int(sink: &mut Sink, node: &Node, field: &str) -> Option<i128> {
    match &node.kind {
        Kind::Int(i) => Some(*i),
        other => {
            sink.error(
                &node.span,
                field,
                format!("expected an integer, found {}", other.describe()),
            );
            None
        }
    }
}

pub(crate) fn expect_array<'n>(sink: &mut Sink, node: &'n Node, field: &str) -> Option<&'n [Node]> {
    match &node.kind {
        Kind::Array(a) => Some(a),
        other => {
            sink.error(
                &node.span,
                field,
                format!("expected an array, found {}", other.describe()),
            );
            None
        }
    }
}

/// A required key: reports it missing (on the table's line) when absent.
pub(crate) fn required<'n>(t: &mut Table<'n>, sink: &mut Sink, name: &str) -> Option<&'n Node> {
    let n = t.get(name);
    if n.is_none() {
        let field = t.field(name);
        sink.error(&t.span, &field, format!("missing required key `{name}`"));
    }
    n
}

/// Quotes a text for a message, shortened to `max` characters.
pub(crate) fn quote(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        let short: String = s.chars().take(max).collect();
        format!("{:?}", format!("{short}…"))
    } else {
        format!("{s:?}")
    }
}

/// "a, b, c" (at most 20 names).
pub(crate) fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        return "none".to_owned();
    }
    let mut s = all.iter().take(20).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 20 {
        s.push_str(", ...");
    }
    s
}
