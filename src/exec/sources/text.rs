//! Plain text lines: `lines` (one string column `line`) and `regex` (the named groups of a regex,
//! typed by the declared schema). The bridge to log files: a line the regex does not match is a
//! `no_match` rejection, never a silent row of nulls.
use std::sync::Arc;

use polars::prelude::*;
use regex::Regex;

use super::discover::Split;
use super::records::{LineCounter, has_long_line};
use super::values::{truncate, type_problem};
use super::{ChunkParser, Parsed, SourceConfig};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::pipeline::SourceFormat;
use crate::plan::expr::clean;

/// The column of a `lines` source.
pub const LINE_COLUMN: &str = "line";

/// The schema a `lines` or `regex` source reads: `line`, or the regex's named groups (strings),
/// in order. Err when the regex is invalid or has no named group.
pub fn text_schema(format: SourceFormat, regex: Option<&str>) -> std::result::Result<Schema, String> {
    let names: Vec<String> = match (format, regex) {
        (SourceFormat::Regex, Some(r)) => {
            let re = Regex::new(r).map_err(|e| format!("invalid regex: {e}"))?;
            let names: Vec<String> = re.capture_names().flatten().map(str::to_string).collect();
            if names.is_empty() {
                return Err("the regex has no named group: name what to extract, e.g. (?P<status>\\d{3})".into());
            }
            names
        }
        _ => vec![LINE_COLUMN.to_string()],
    };
    Ok(names.into_iter().map(|n| Field::new(n.into(), DataType::String)).collect())
}

/// Parses chunks of lines into rows.
pub struct TextChunkParser {
    config: Arc<SourceConfig>,
    regex: Option<Regex>,
    /// The same regex in ASCII mode, for lines that are all ASCII (most log lines): on ASCII
    /// text it matches exactly as the Unicode one does (`\S`, `\d`, `\w`, `.` and classes agree on
    /// ASCII characters), and its automata are smaller (`\S` is one byte class instead of a
    /// UTF-8 automaton). None when the pattern needs Unicode (`\p{Greek}`, say).
    ascii: Option<AsciiRegex>,
    /// The columns read (the projection, else all), each with its regex group's index and its
    /// declared type (checked per value, so a bad value rejects its line).
    columns: Vec<(String, usize, Option<DataType>)>,
}

impl TextChunkParser {
    /// A parser for `config` (a `lines` or `regex` source).
    pub fn new(config: Arc<SourceConfig>) -> Result<Self> {
        let regex = match &config.regex {
            Some(r) => Some(Regex::new(r).map_err(|e| Error::execution("source", &config.name, format!("invalid regex: {e}")))?),
            None => None,
        };
        let wanted = config.file_projection();
        let mut columns = Vec::new();
        for name in config.raw_schema.iter_names().map(|n| n.as_str()) {
            // Every typed group is checked, read or not: a line with a bad value is rejected
            // whatever the projection, as when all columns are read.
            let dtype = config.schema.get(name).filter(|t| **t != DataType::String).cloned();
            let read = wanted.as_ref().is_none_or(|w| w.iter().any(|c| c == name));
            if !read && dtype.is_none() {
                continue;
            }
            let group = match &regex {
                Some(re) => re.capture_names().position(|n| n == Some(name)).unwrap_or(0),
                None => 0,
            };
            columns.push((name.to_string(), group, dtype));
        }
        let ascii = config.regex.as_deref().and_then(AsciiRegex::new);
        Ok(TextChunkParser { config, regex, ascii, columns })
    }
}

impl ChunkParser for TextChunkParser {
    fn parse(&mut self, split: &Split, offset: u64, chunk: &[u8], lines: &mut LineCounter) -> Result<Parsed> {
        let c = &self.config;
        let mut columns: Vec<Vec<Option<&str>>> = vec![Vec::with_capacity(chunk.len() / 64); self.columns.len()];
        // Capture slots reused for every line (no allocation per line).
        let mut slots = self.regex.as_ref().map(Regex::capture_locations);
        let mut ascii_slots = self.ascii.as_ref().map(|a| a.regex.create_captures());
        let mut spans: Vec<Option<(usize, usize)>> = Vec::new();
        let mut rejected = Vec::new();
        // Line numbers are only needed for rejections: count them lazily.
        let long = has_long_line(chunk, c.max_line_bytes);
        let mut base = None;
        let mut start = 0;
        for (i, raw) in chunk.split_inclusive(|&b| b == b'\n').enumerate() {
            let at = start;
            start += raw.len();
            let body = super::trim_line_end(raw);
            if body.is_empty() {
                continue;
            }
            let mut reject = |column: usize, kind: ErrorKind, message: String| {
                let line = *base.get_or_insert_with(|| lines.line_at(offset)) + i as u64;
                rejected.push(Rejection::in_file(&split.path, line, offset + at as u64, column as u64, kind, message, raw));
            };
            if long && body.len() > c.max_line_bytes {
                reject(
                    c.max_line_bytes + 1,
                    ErrorKind::LineTooLong,
                    format!("the line is {} bytes long, more than max_line_bytes = {}", body.len(), c.max_line_bytes),
                );
                continue;
            }
            // ASCII is UTF-8; checking it is cheaper, and the ASCII regex needs it anyway.
            let ascii_line = body.is_ascii();
            // SAFETY: `ascii_line` says every byte is ASCII.
            let text = match if ascii_line { Ok(unsafe { ascii_text(body) }) } else { std::str::from_utf8(body) } {
                Ok(t) => t,
                Err(e) => {
                    reject(e.valid_up_to() + 1, ErrorKind::Utf8, format!("invalid UTF-8: {}", truncate(&String::from_utf8_lossy(body), 120)));
                    continue;
                }
            };
            let (Some(re), Some(slots)) = (&self.regex, slots.as_mut()) else {
                columns[0].push(Some(text));
                continue;
            };
            spans.clear();
            let matched = match (&self.ascii, ascii_slots.as_mut()) {
                (Some(ascii), Some(caps)) if ascii_line => {
                    ascii.regex.search_captures(&regex_automata::Input::new(body), caps);
                    spans.extend((0..caps.group_len()).map(|g| caps.get_group(g).map(|s| (s.start, s.end))));
                    caps.is_match()
                }
                _ => {
                    let found = re.captures_read(slots, text).is_some();
                    spans.extend((0..slots.len()).map(|g| slots.get(g)));
                    found
                }
            };
            if !matched {
                reject(1, ErrorKind::NoMatch, format!("the line does not match the regex: {}", truncate(text, 120)));
                continue;
            }
            let group = |g: usize| spans.get(g).copied().flatten().map(|(from, to)| (from, &text[from..to]));
            // A value that does not parse as its declared type rejects the line.
            let bad = self.columns.iter().find_map(|(name, g, dtype)| {
                let (at, value) = group(*g)?;
                type_problem(value, dtype.as_ref()?).map(|p| (at + 1, format!("group '{name}': {p} (the type declared in `schema`)")))
            });
            if let Some((column, message)) = bad {
                reject(column, ErrorKind::Type, message);
                continue;
            }
            for (k, (_, g, _)) in self.columns.iter().enumerate() {
                columns[k].push(group(*g).map(|(_, v)| v));
            }
        }
        let height = columns.first().map_or(0, Vec::len);
        let fail = |e: PolarsError| Error::execution("source", &c.name, clean(&e));
        let cols: Vec<Column> = self.columns.iter().zip(columns).map(|((n, _, _), v)| Column::new(n.as_str().into(), v)).collect();
        let mut df = DataFrame::new(height, cols).map_err(fail)?;
        if let Some(p) = c.file_projection() {
            df = df.select(p.iter().map(String::as_str)).map_err(fail)?;
        }
        let df = super::cast_declared(c, df).map_err(fail)?;
        Ok(Parsed { df: Some(df), rejected, dropped: Default::default() })
    }
}

/// A line known to be ASCII as text.
///
/// # Safety
/// Every byte of `bytes` must be ASCII.
unsafe fn ascii_text(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: ASCII is valid UTF-8, and the caller promises ASCII.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// The ASCII-mode engine of a regex source.
struct AsciiRegex {
    regex: regex_automata::meta::Regex,
}

impl AsciiRegex {
    /// The pattern compiled without Unicode; None when it needs Unicode. A pattern anchored at
    /// its start (`^...`, log formats usually are) skips the DFA that otherwise finds where a
    /// match is before the capture engine runs: that search only repeats the capture engine's
    /// work when the match can only start at the line's start.
    fn new(pattern: &str) -> Option<AsciiRegex> {
        use regex_automata::meta::{Config, Regex};
        use regex_automata::util::syntax;
        let syntax = syntax::Config::new().unicode(false).utf8(false);
        let anchored = regex_automata::nfa::thompson::Compiler::new().syntax(syntax).build(pattern).ok()?.is_always_start_anchored();
        let regex = Regex::builder().configure(Config::new().hybrid(!anchored).utf8_empty(false)).syntax(syntax).build(pattern).ok()?;
        Some(AsciiRegex { regex })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII-mode regex finds the same groups as the Unicode one on ASCII lines.
    #[test]
    fn ascii_mode_agrees_with_unicode_on_ascii_lines() {
        let patterns = [
            r#"^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)$"#,
            r"(?P<w>\w+)\s+(?P<d>\d+)\b",
            r"(?i)(?P<k>k\w*)",
            r"^(?P<any>.+?)(?P<rest>\s.*)?$",
            r"(?P<n>[[:alpha:]]+)=(?P<v>[^;]*)",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"aKk09 \t_-=;\"[]/.:xyzZ\x0b\x0c";
        for p in patterns {
            let unicode = Regex::new(p).unwrap();
            let ascii = AsciiRegex::new(p).unwrap().regex;
            let mut caps = ascii.create_captures();
            for _ in 0..3000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let len = (seed % 40) as usize;
                let line: String = (0..len).map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()] as char).collect();
                let u = unicode.captures(&line).map(|c| c.iter().map(|m| m.map(|m| m.range())).collect::<Vec<_>>());
                ascii.search_captures(&regex_automata::Input::new(line.as_bytes()), &mut caps);
                let a = caps.is_match().then(|| (0..caps.group_len()).map(|g| caps.get_group(g).map(|s| s.range())).collect::<Vec<_>>());
                assert_eq!(u, a, "{p} on {line:?}");
            }
        }
    }

    #[test]
    fn regex_schema_lists_named_groups() {
        let s = text_schema(SourceFormat::Regex, Some(r"(?P<ip>\S+) (\S+) (?P<status>\d+)")).unwrap();
        assert_eq!(s.iter_names().map(|n| n.as_str()).collect::<Vec<_>>(), ["ip", "status"]);
        assert!(text_schema(SourceFormat::Regex, Some(r"(\d+)")).unwrap_err().contains("no named group"));
        assert!(text_schema(SourceFormat::Regex, Some(r"(?P<a>")).unwrap_err().starts_with("invalid regex"));
        assert_eq!(text_schema(SourceFormat::Lines, None).unwrap().len(), 1);
    }
}
