//! JSON lines: schema inference and parsing chunks of lines with polars; serde_json names the
//! exact line and column of invalid JSON when polars rejects a chunk.
use std::io::Cursor;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::discover::Split;
use super::records::{LineCounter, Span, concat_frames, has_long_line, parse_good};
use super::values::truncate;
use super::{ChunkParser, DataProblem, Parsed, SourceConfig};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::exec::guard::catch_panic;
use crate::plan::expr::clean;

/// Infers the schema from the first `infer_rows` lines of `path`.
/// `tolerant`: lines that are not JSON objects are left out of the sample.
pub fn infer(path: &Path, infer_rows: usize, tolerant: bool) -> std::result::Result<Schema, DataProblem> {
    let unreadable = |e: std::io::Error| DataProblem { kind: Some(ErrorKind::Unreadable), message: format!("{}: {e}", path.display()) };
    let mut sample = super::lines::head_lines(path, infer_rows, None).map_err(unreadable)?;
    if tolerant {
        let objects = sample.split_inclusive(|&b| b == b'\n').filter(|l| check_syntax(l).is_ok());
        sample = objects.flat_map(|l| l.iter().copied().chain((!l.ends_with(b"\n")).then_some(b'\n'))).collect();
    }
    if sample.iter().all(u8::is_ascii_whitespace) {
        let message = format!("{}: no JSON objects to infer the schema from (declare `schema`, or add a file with data)", path.display());
        return Err(DataProblem { kind: Some(ErrorKind::EmptyFile), message });
    }
    let located = |e: String| {
        let bad = sample.split_inclusive(|&b| b == b'\n').enumerate().find_map(|(i, line)| check_syntax(line).err().map(|(c, k, m)| (i as u64 + 1, c, k, m)));
        match bad {
            Some((line, column, kind, msg)) => DataProblem { kind: Some(kind), message: format!("{}:{line}:{column}: {msg}", path.display()) },
            None => DataProblem { kind: None, message: format!("{}: cannot infer the schema: {e}", path.display()) },
        }
    };
    let read = || JsonReader::new(Cursor::new(&sample)).with_json_format(JsonFormat::JsonLines).infer_schema_len(NonZeroUsize::new(infer_rows)).finish();
    match catch_panic(read) {
        Ok(Ok(df)) => Ok((**df.schema()).clone()),
        Ok(Err(e)) => Err(located(clean(&e))),
        Err(panic) => Err(located(panic)),
    }
}

/// Parses chunks of JSON lines with the source's schema; declared types are cast strictly.
pub struct JsonChunkParser {
    config: Arc<SourceConfig>,
}

impl JsonChunkParser {
    /// A parser for `config`'s files.
    pub fn new(config: Arc<SourceConfig>) -> Self {
        JsonChunkParser { config }
    }

    /// polars' parse of whole lines with the source's schema and projection, then the declared
    /// types.
    fn read(&self, bytes: &[u8]) -> std::result::Result<DataFrame, String> {
        match catch_panic(|| self.read_unguarded(bytes)) {
            Ok(r) => r.map_err(|e| clean(&e)),
            Err(panic) => Err(format!("the JSON reader failed: {panic}")),
        }
    }

    fn read_unguarded(&self, bytes: &[u8]) -> PolarsResult<DataFrame> {
        let c = &self.config;
        let projection = c.file_projection().map(|p| p.iter().map(|s| PlSmallStr::from(s.as_str())).collect());
        let df = JsonReader::new(Cursor::new(bytes))
            .with_json_format(JsonFormat::JsonLines)
            .with_schema(c.raw_schema.clone())
            .with_projection(projection)
            .finish()?;
        super::cast_declared(c, df)
    }
}

impl ChunkParser for JsonChunkParser {
    fn parse(&mut self, split: &Split, offset: u64, chunk: &[u8], lines: &mut LineCounter) -> Result<Parsed> {
        let c = &self.config;
        if !has_long_line(chunk, c.max_line_bytes)
            && !has_control_byte(chunk)
            && let Ok(df) = self.read(chunk)
        {
            return Ok(Parsed { df: Some(df), rejected: Vec::new(), dropped: Default::default() });
        }
        // Slow path: check line by line.
        let base = lines.line_at(offset);
        // Only the columns read are checked: polars does not look at the others.
        let read_schema: Schema = match c.file_projection() {
            Some(p) => c.raw_schema.iter().filter(|(n, _)| p.iter().any(|q| q == n.as_str())).map(|(n, t)| Field::new(n.clone(), t.clone())).collect(),
            None => (*c.raw_schema).clone(),
        };
        let mut good = Vec::new();
        let mut rejected = Vec::new();
        let mut start = 0;
        for (i, line) in chunk.split_inclusive(|&b| b == b'\n').enumerate() {
            let span = Span { line: i as u64 + 1, start, end: start + line.len() };
            start = span.end;
            match check_line(c, &read_schema, line) {
                Ok(true) => good.push(span),
                Ok(false) => {}
                Err((column, kind, message)) => {
                    rejected.push(Rejection::in_file(&split.path, base + span.line - 1, offset + span.start as u64, column, kind, message, line));
                }
            }
        }
        let (frames, bad) = parse_good(chunk, &good, &mut |b| self.read(b));
        for (span, message) in bad {
            let raw = &chunk[span.start..span.end];
            rejected.push(Rejection::in_file(
                &split.path,
                base + span.line - 1,
                offset + span.start as u64,
                1,
                ErrorKind::Type,
                format!("cannot read the line: {message}"),
                raw,
            ));
        }
        rejected.sort_by_key(|r| r.offset);
        Ok(Parsed { df: concat_frames(frames).map_err(|e| Error::execution("source", &c.name, e))?, rejected, dropped: Default::default() })
    }
}

/// True when `chunk` has a raw control character, which JSON allows nowhere (polars would read
/// `2<NUL>0` as 2): such chunks take the slow path, where serde_json rejects the line.
fn has_control_byte(chunk: &[u8]) -> bool {
    chunk.iter().fold(false, |found, &b| found | (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r'))
}

/// Whether one line (newline included) is a record (`Ok(true)`), blank (`Ok(false)`), or bad:
/// (column, kind, message).
fn check_line(c: &SourceConfig, schema: &Schema, line: &[u8]) -> std::result::Result<bool, (u64, ErrorKind, String)> {
    let body = super::trim_line_end(line);
    if body.len() > c.max_line_bytes {
        return Err((
            c.max_line_bytes as u64 + 1,
            ErrorKind::LineTooLong,
            format!("the line is {} bytes long, more than max_line_bytes = {}", body.len(), c.max_line_bytes),
        ));
    }
    if !check_syntax(line)? {
        return Ok(false);
    }
    if let Some((_, column, message)) = first_mistyped_value(body, schema) {
        return Err((column, ErrorKind::Type, message));
    }
    Ok(true)
}

/// Whether one line is a JSON object (`Ok(true)`), blank (`Ok(false)`), or not: (column, kind,
/// message).
fn check_syntax(line: &[u8]) -> std::result::Result<bool, (u64, ErrorKind, String)> {
    let body = super::trim_line_end(line);
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            return Err((e.valid_up_to() as u64 + 1, ErrorKind::Utf8, format!("invalid UTF-8: {}", truncate(&String::from_utf8_lossy(body), 120))));
        }
    };
    if text.trim().is_empty() {
        return Ok(false);
    }
    if let Some((_, column, message)) = first_invalid_line(body) {
        return Err((column, ErrorKind::Json, message));
    }
    Ok(true)
}

/// The first line that is not a JSON object: (1-based line, column, message with the text).
fn first_invalid_line(chunk: &[u8]) -> Option<(u64, u64, String)> {
    for (i, line) in chunk.split(|&b| b == b'\n').enumerate() {
        let text = String::from_utf8_lossy(line);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => {
                return Some((i as u64 + 1, 1, format!("invalid JSON line: expected an object, found {}", truncate(&other.to_string(), 80))));
            }
            Err(e) => {
                // serde_json ends its message with the position inside this one line: drop it.
                let msg = e.to_string();
                let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m).to_string();
                return Some((i as u64 + 1, e.column() as u64, format!("invalid JSON: {msg}: {}", truncate(trimmed, 120))));
            }
        }
    }
    None
}

/// The first value whose JSON type does not fit the schema: (1-based line, column, message).
fn first_mistyped_value(chunk: &[u8], schema: &Schema) -> Option<(u64, u64, String)> {
    for (i, line) in chunk.split(|&b| b == b'\n').enumerate() {
        let text = String::from_utf8_lossy(line);
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
            continue;
        };
        for (name, dtype) in schema.iter() {
            let Some(value) = map.get(name.as_str()) else {
                continue;
            };
            let fits = match (dtype, value) {
                (_, serde_json::Value::Null) => true,
                (d, serde_json::Value::Number(n)) if d.is_integer() => n.is_i64() || n.is_u64(),
                (d, serde_json::Value::Number(_)) => d.is_float(),
                (DataType::Boolean, serde_json::Value::Bool(_)) => true,
                // polars reads numbers and booleans into a string column as their text.
                (DataType::String, v) => v.is_string() || v.is_number() || v.is_boolean(),
                (DataType::List(_), v) => v.is_array(),
                (DataType::Struct(_), v) => v.is_object(),
                (d, serde_json::Value::String(s)) => super::values::type_problem(s, d).is_none() && !d.is_primitive_numeric(),
                _ => false,
            };
            if !fits {
                let column = text.find(&format!("\"{name}\"")).map_or(1, |p| p + 1) as u64;
                let found = truncate(&value.to_string(), 80);
                return Some((i as u64 + 1, column, format!("field '{name}': expected {} but found {found}", super::values::type_name(dtype))));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistyped_value_is_found() {
        let schema: Schema = [Field::new("a".into(), DataType::Int64), Field::new("b".into(), DataType::String)].into_iter().collect();
        let chunk = b"{\"a\": 1, \"b\": \"x\"}\n{\"b\": \"y\", \"a\": \"oops\"}\n";
        let (line, col, msg) = first_mistyped_value(chunk, &schema).unwrap();
        assert_eq!((line, col), (2, 12), "{msg}");
        assert_eq!(msg, "field 'a': expected int but found \"oops\"");
    }

    #[test]
    fn invalid_line_is_found() {
        let chunk = b"{\"a\": 1}\n\n{\"a\": 2,}\n";
        let (line, col, msg) = first_invalid_line(chunk).unwrap();
        assert_eq!((line, col), (3, 9), "{msg}");
    }
}
