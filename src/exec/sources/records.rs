//! The slow path of text sources, taken only when polars rejects a chunk: the chunk's records
//! are checked one by one, the bad ones become [`Rejection`]s, and the good ones are parsed
//! again. Should polars still reject them (a check here missed something), halving the
//! records finds each record it rejects, so one bad row never takes good rows with it.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use polars::prelude::{DataFrame, PolarsResult};

/// One record of a chunk: its first line (1-based, in the chunk) and its bytes `[start, end)`,
/// line end included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Line of the chunk where the record starts (1-based).
    pub line: u64,
    /// First byte in the chunk.
    pub start: usize,
    /// One past the last byte (after the newline, when there is one).
    pub end: usize,
}

/// Parses `good` records of `chunk` with `parse`. Returns the frames (in record order) and the
/// records `parse` rejects on their own, with its message.
pub fn parse_good<F>(chunk: &[u8], good: &[Span], parse: &mut F) -> (Vec<DataFrame>, Vec<(Span, String)>)
where
    F: FnMut(&[u8]) -> Result<DataFrame, String>,
{
    let mut frames = Vec::new();
    let mut bad = Vec::new();
    halve(chunk, good, parse, &mut frames, &mut bad);
    (frames, bad)
}

fn halve<F>(chunk: &[u8], spans: &[Span], parse: &mut F, frames: &mut Vec<DataFrame>, bad: &mut Vec<(Span, String)>)
where
    F: FnMut(&[u8]) -> Result<DataFrame, String>,
{
    if spans.is_empty() {
        return;
    }
    let mut bytes = Vec::with_capacity(spans.iter().map(|s| s.end - s.start + 1).sum());
    for s in spans {
        // A span may end with blank lines the CSV reader passed over: polars would read those
        // as rows of nulls.
        let record = &chunk[s.start..s.end];
        let body = record.iter().rposition(|&b| b != b'\n' && b != b'\r').map_or(&record[..0], |i| &record[..=i]);
        bytes.extend_from_slice(body);
        bytes.push(b'\n');
    }
    match parse(&bytes) {
        Ok(df) => frames.push(df),
        Err(message) if spans.len() == 1 => bad.push((spans[0], message)),
        Err(_) => {
            let (left, right) = spans.split_at(spans.len() / 2);
            halve(chunk, left, parse, frames, bad);
            halve(chunk, right, parse, frames, bad);
        }
    }
}

/// One frame of several (None when there are none).
pub fn concat_frames(frames: Vec<DataFrame>) -> PolarsResult<Option<DataFrame>> {
    let mut it = frames.into_iter();
    let Some(mut first) = it.next() else {
        return Ok(None);
    };
    for f in it {
        first.vstack_mut_owned(f)?;
    }
    Ok(Some(first))
}

/// Line numbers found so far in the files of a source, shared by its splits: (offset, line)
/// pairs per file, so a split far into a file counts from the nearest known place before it,
/// not from the start.
#[derive(Debug, Default)]
pub struct LineIndex {
    known: std::sync::Mutex<std::collections::HashMap<PathBuf, std::collections::BTreeMap<u64, u64>>>,
}

impl LineIndex {
    fn nearest(&self, path: &Path, offset: u64) -> Option<(u64, u64)> {
        let known = self.known.lock().ok()?;
        known.get(path)?.range(..=offset).next_back().map(|(&o, &l)| (o, l))
    }

    fn learn(&self, path: &Path, offset: u64, line: u64) {
        if let Ok(mut known) = self.known.lock() {
            known.entry(path.to_path_buf()).or_default().insert(offset, line);
        }
    }
}

/// Finds the line number of byte offsets of a file read front to back, reading each byte at
/// most once while offsets grow (a split asks only when a chunk has bad records).
pub struct LineCounter {
    path: PathBuf,
    /// A known (offset, line at that offset).
    known: (u64, u64),
    /// What the source's other splits found.
    shared: Option<std::sync::Arc<LineIndex>>,
}

impl LineCounter {
    /// A counter for `path`.
    pub fn new(path: &Path) -> Self {
        LineCounter { path: path.to_path_buf(), known: (0, 1), shared: None }
    }

    /// A counter for `path` that shares what it learns with the source's other splits.
    pub fn shared(path: &Path, index: std::sync::Arc<LineIndex>) -> Self {
        LineCounter { path: path.to_path_buf(), known: (0, 1), shared: Some(index) }
    }

    /// A counter that knows byte `offset` starts line `line` (a followed file, whose lines are
    /// counted as they are read; stdin, which cannot be read again).
    pub fn starting_at(path: &Path, offset: u64, line: u64) -> Self {
        LineCounter { path: path.to_path_buf(), known: (offset, line), shared: None }
    }

    /// The 1-based line holding byte `offset` (0 when the file cannot be read).
    pub fn line_at(&mut self, offset: u64) -> u64 {
        if offset == self.known.0 {
            return self.known.1;
        }
        if offset < self.known.0 {
            self.known = (0, 1);
        }
        if let Some((o, l)) = self.shared.as_ref().and_then(|s| s.nearest(&self.path, offset))
            && o > self.known.0
        {
            self.known = (o, l);
        }
        let (from, line) = self.known;
        match count_newlines(&self.path, from, offset) {
            Ok(n) => {
                self.known = (offset, line + n);
                if let Some(s) = &self.shared {
                    s.learn(&self.path, offset, line + n);
                }
                line + n
            }
            Err(_) => 0,
        }
    }
}

fn count_newlines(path: &Path, from: u64, to: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut remaining = to - from;
    let mut lines = 0;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = (remaining as usize).min(buf.len());
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        remaining -= n as u64;
    }
    Ok(lines)
}

/// True when some line of `chunk` is longer than `max` bytes (line end not counted).
pub fn has_long_line(chunk: &[u8], max: usize) -> bool {
    if chunk.len() <= max {
        return false;
    }
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', chunk) {
        if nl - start > max + usize::from(nl > start && chunk[nl - 1] == b'\r') {
            return true;
        }
        start = nl + 1;
    }
    chunk.len() - start > max
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;

    #[test]
    fn halving_finds_each_bad_record() {
        let chunk = b"1\n2\nx\n4\ny\n6\n";
        let spans: Vec<Span> = (0..6).map(|i| Span { line: i + 1, start: 2 * i as usize, end: 2 * i as usize + 2 }).collect();
        let mut calls = 0;
        let mut parse = |b: &[u8]| {
            calls += 1;
            let text = std::str::from_utf8(b).unwrap();
            let v: std::result::Result<Vec<i64>, _> = text.lines().map(str::parse::<i64>).collect();
            v.map(|v| df!("a" => v).unwrap()).map_err(|e| e.to_string())
        };
        let (frames, bad) = parse_good(chunk, &spans, &mut parse);
        let rows: Vec<i64> = frames.iter().flat_map(|f| f.column("a").unwrap().i64().unwrap().into_no_null_iter().collect::<Vec<_>>()).collect();
        assert_eq!(rows, [1, 2, 4, 6]);
        assert_eq!(bad.iter().map(|(s, _)| s.line).collect::<Vec<_>>(), [3, 5]);
    }

    #[test]
    fn line_counter_counts_forward() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        let mut c = LineCounter::new(&p);
        assert_eq!([c.line_at(2), c.line_at(6), c.line_at(4)], [2, 4, 3]);
    }

    #[test]
    fn long_lines_are_found() {
        assert!(!has_long_line(b"abc\nde\n", 3));
        assert!(has_long_line(b"abc\ndefg\n", 3));
        assert!(!has_long_line(b"abc\r\nde\n", 3));
        assert!(has_long_line(b"ab\nabcd", 3));
    }
}
