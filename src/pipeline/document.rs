//! A pipeline file read into a tree of [`Node`]s that remember where each value came from.
//!
//! TOML and YAML are both turned into this one tree, so that every later check (unknown keys,
//! bad expressions, misspelled inputs) can point at a line and column whatever the format.
//! `--set KEY=VALUE` overrides are applied to the tree and remember the command line instead.
use std::fmt;

use super::diagnostics::{Diagnostic, Diagnostics};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A place in the pipeline file (1-based line and column).
    File {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
    /// A `--set` option on the command line.
    CommandLine(String),
}

impl Origin {
    /// A place in the file.
    pub fn at(line: usize, column: usize) -> Self {
        Origin::File { line, column }
    }

    /// The same origin moved `chars` characters to the right (for errors inside a string).
    pub fn shifted(&self, lines: usize, chars: usize) -> Self {
        match self {
            Origin::File { line, column } if lines == 0 => Origin::at(*line, column + chars),
            Origin::File { line, .. } => Origin::at(line + lines, chars + 1),
            other => other.clone(),
        }
    }
}

/// A value of the pipeline file.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An array.
    Array(Vec<Node>),
    /// A table (key order kept).
    Table(Vec<(Key, Node)>),
}

/// A key of a table, with its origin.
#[derive(Clone, Debug)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where the key is written.
    pub origin: Origin,
}

/// A value with its origin. For a string, the origin is its first character (inside the quotes
/// when the string is quoted on one line), so errors inside expressions can point at a column.
#[derive(Clone, Debug)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it is written.
    pub origin: Origin,
}

impl Value {
    /// The kind of value, as a user would name it in an error message.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Array(a) => write!(f, "[{} items]", a.len()),
            Value::Table(t) => write!(f, "{{{} keys}}", t.len()),
        }
    }
}

/// Maps byte offsets of a text to 1-based line and column.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        LineIndex { text, starts }
    }

    fn origin(&self, offset: usize) -> Origin {
        let line = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.starts[line];
        let offset = offset.min(self.text.len());
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        Origin::at(line + 1, column)
    }
}

/// Parses TOML text into a tree. A syntax error is returned as one diagnostic.
pub fn parse_toml(text: &str) -> Result<Node, Diagnostics> {
    let index = LineIndex::new(text);
    let root = toml::de::DeTable::parse(text).map_err(|e| {
        let origin = e.span().map_or(Origin::at(1, 1), |s| index.origin(s.start));
        let message = e.message().trim_end().to_string();
        Diagnostics::one(Diagnostic::new(origin, None, format!("invalid TOML: {message}")))
    })?;
    let origin = index.origin(root.span().start);
    Ok(Node { value: toml_table(root.get_ref(), &index, text), origin })
}

fn toml_table(table: &toml::de::DeTable<'_>, index: &LineIndex<'_>, text: &str) -> Value {
    Value::Table(
        table
            .iter()
            .map(|(k, v)| {
                let key = Key { name: k.get_ref().to_string(), origin: index.origin(k.span().start) };
                (key, toml_node(v, index, text))
            })
            .collect(),
    )
}

fn toml_node(v: &toml::Spanned<toml::de::DeValue<'_>>, index: &LineIndex<'_>, text: &str) -> Node {
    use toml::de::DeValue;
    let span = v.span();
    let mut origin = index.origin(span.start);
    let value = match v.get_ref() {
        DeValue::String(s) => {
            // Point inside the quotes of a one-line string, so an expression error's column is exact.
            let raw = text.get(span.clone()).unwrap_or("");
            if (raw.starts_with('"') || raw.starts_with('\'')) && !raw.starts_with("\"\"\"") && !raw.starts_with("'''") {
                origin = origin.shifted(0, 1);
            }
            Value::Str(s.to_string())
        }
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let (digits, radix) = match i.radix() {
                10 => (digits.as_str(), 10),
                r => (digits.get(2..).unwrap_or(""), r),
            };
            match i64::from_str_radix(digits, radix) {
                Ok(n) => Value::Int(n),
                Err(_) => Value::Str(i.as_str().to_string()),
            }
        }
        DeValue::Float(x) => Value::Float(x.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|n| toml_node(n, index, text)).collect()),
        DeValue::Table(t) => toml_table(t, index, text),
    };
    Node { value, origin }
}

/// Parses YAML text (one document) into a tree. Anchors and aliases are not supported.
pub fn parse_yaml(text: &str) -> Result<Node, Diagnostics> {
    use saphyr_parser::{Event, Parser};
    let mut stack: Vec<(Node, Option<Key>)> = Vec::new();
    let mut pending_key: Vec<Option<Key>> = Vec::new();
    let mut root: Option<Node> = None;
    let err = |origin: Origin, msg: String| Diagnostics::one(Diagnostic::new(origin, None, msg));
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            let m = e.marker();
            err(Origin::at(m.line(), m.col() + 1), format!("invalid YAML: {}", e.info()))
        })?;
        let origin = Origin::at(span.start.line(), span.start.col() + 1);
        let node = match event {
            Event::MappingStart(..) => {
                stack.push((Node { value: Value::Table(Vec::new()), origin }, None));
                pending_key.push(None);
                continue;
            }
            Event::SequenceStart(..) => {
                stack.push((Node { value: Value::Array(Vec::new()), origin }, None));
                pending_key.push(None);
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                pending_key.pop();
                stack.pop().map(|(n, _)| n).expect("balanced YAML events")
            }
            Event::Scalar(s, style, _, _) => {
                let in_key_position = matches!(stack.last(), Some((Node { value: Value::Table(_), .. }, _))) && pending_key.last().is_some_and(|k| k.is_none());
                if in_key_position {
                    let key_origin = Origin::at(span.start.line(), span.start.col() + 1);
                    *pending_key.last_mut().expect("key slot") = Some(Key { name: s.to_string(), origin: key_origin });
                    continue;
                }
                let quoted = !matches!(style, saphyr_parser::ScalarStyle::Plain);
                let origin = if matches!(style, saphyr_parser::ScalarStyle::SingleQuoted | saphyr_parser::ScalarStyle::DoubleQuoted) {
                    origin.shifted(0, 1)
                } else {
                    origin
                };
                Node { value: yaml_scalar(&s, quoted), origin }
            }
            Event::Alias(_) => {
                return Err(err(origin, "YAML aliases are not supported in pipeline files".into()));
            }
            _ => continue,
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some((Node { value: Value::Array(items), .. }, _)) => items.push(node),
            Some((Node { value: Value::Table(entries), .. }, _)) => {
                // No pending key: this node was itself a key (`[a]: b`, `{a: b}: c`).
                let Some(key) = pending_key.last_mut().and_then(Option::take) else {
                    return Err(err(node.origin, "a YAML key must be a plain name, not a list or a table".into()));
                };
                entries.push((key, node));
            }
            Some(_) => unreachable!("only tables and arrays are pushed"),
        }
    }
    root.ok_or_else(|| err(Origin::at(1, 1), "the YAML file is empty".into()))
}

fn yaml_scalar(s: &str, quoted: bool) -> Value {
    if quoted {
        return Value::Str(s.to_string());
    }
    match s {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Int(i);
    }
    if s.contains(['.', 'e', 'E'])
        && let Ok(x) = s.parse::<f64>()
    {
        return Value::Float(x);
    }
    Value::Str(s.to_string())
}

/// Parses the value of a `--set KEY=VALUE`: a TOML value when it is one, else a plain string.
/// Every part of it points at the command line.
pub fn parse_override_value(raw: &str, origin: Origin) -> Node {
    let mut node = match toml::de::DeValue::parse(raw) {
        Ok(v) => toml_node(&v, &LineIndex::new(raw), raw),
        Err(_) => Node { value: Value::Str(raw.to_string()), origin: origin.clone() },
    };
    set_origin(&mut node, &origin);
    node
}

fn set_origin(node: &mut Node, origin: &Origin) {
    node.origin = origin.clone();
    match &mut node.value {
        Value::Array(items) => items.iter_mut().for_each(|n| set_origin(n, origin)),
        Value::Table(entries) => entries.iter_mut().for_each(|(k, n)| {
            k.origin = origin.clone();
            set_origin(n, origin);
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(n: &'a Node, key: &str) -> &'a Node {
        match &n.value {
            Value::Table(t) => &t.iter().find(|(k, _)| k.name == key).unwrap().1,
            _ => panic!("not a table"),
        }
    }

    #[test]
    fn toml_positions_point_into_strings() {
        let doc = parse_toml("name = \"x\"\n[[op]]\nfilter = \"a > 1\"\n").unwrap();
        let ops = find(&doc, "op");
        let Value::Array(items) = &ops.value else { panic!() };
        let filter = find(&items[0], "filter");
        assert_eq!(filter.origin, Origin::at(3, 11));
    }

    #[test]
    fn yaml_tree_matches_toml_tree() {
        let doc = parse_yaml("name: x\nparallelism: 2\nop:\n  - name: a\n    filter: \"b > 1\"\n").unwrap();
        assert!(matches!(find(&doc, "parallelism").value, Value::Int(2)));
        let Value::Array(items) = &find(&doc, "op").value else { panic!() };
        let filter = find(&items[0], "filter");
        assert!(matches!(&filter.value, Value::Str(s) if s == "b > 1"));
        assert_eq!(filter.origin, Origin::at(5, 14));
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let e = parse_toml("name = \"x\"\nparallelism = = 2\n").unwrap_err();
        assert_eq!(e.items[0].origin, Origin::at(2, 15));
    }
}

#[cfg(test)]
mod fuzz_found {
    use super::*;

    /// Found by `cargo fuzz run pipeline_file`: a flow collection used as a key.
    #[test]
    fn a_collection_as_a_yaml_key_is_an_error() {
        for text in ["{[source]]\nname = 1\n", "[a]: 1\n", "? {a: 1}\n: 2\n"] {
            let e = parse_yaml(text).err().map(|d| d.items[0].message.clone()).unwrap_or_default();
            assert!(e.contains("key must be a plain name") || e.starts_with("invalid YAML"), "{text:?}: {e}");
        }
    }
}
