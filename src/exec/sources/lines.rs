//! Cutting a byte range of a text file into chunks of whole lines (records), so each chunk can
//! be parsed on its own. A line belongs to the split it starts in.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Reads `[start, end)` of a file as chunks of about `chunk_bytes` ending at a line end.
pub struct LineChunker {
    file: File,
    /// File offset of `buf[0]`.
    buf_start: u64,
    buf: Vec<u8>,
    end: u64,
    eof: bool,
    done: bool,
    chunk_bytes: usize,
    /// CSV quote character: a chunk never ends inside a quoted field (odd number of quotes).
    quote: Option<u8>,
}

impl LineChunker {
    /// Opens `path` at the first line starting at or after `start`.
    pub fn open(path: &Path, start: u64, end: u64, chunk_bytes: usize, quote: Option<u8>) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let from = start.saturating_sub(1);
        file.seek(SeekFrom::Start(from))?;
        let mut c = LineChunker { file, buf_start: from, buf: Vec::new(), end, eof: false, done: false, chunk_bytes: chunk_bytes.max(1024), quote };
        if start > 0 {
            // The line holding byte start-1 belongs to the previous split: skip through its newline.
            let cut = loop {
                if let Some(i) = memchr::memchr(b'\n', &c.buf) {
                    break i + 1;
                }
                if c.eof {
                    break c.buf.len();
                }
                c.fill()?;
            };
            c.consume(cut);
        }
        if c.buf_start >= end {
            c.done = true;
        }
        Ok(c)
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> std::io::Result<()> {
        let old = self.buf.len();
        self.buf.resize(old + self.chunk_bytes, 0);
        let mut filled = old;
        while filled < self.buf.len() {
            let n = self.file.read(&mut self.buf[filled..])?;
            if n == 0 {
                self.eof = true;
                break;
            }
            filled += n;
        }
        self.buf.truncate(filled);
        Ok(())
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        let chunk = std::mem::replace(&mut self.buf, rest);
        self.buf_start += n as u64;
        chunk
    }

    /// The next line, without its line end (for headers); None at the end of the split.
    pub fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let mut line = self.consume(i + 1);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.done = self.buf_start >= self.end;
                return Ok(Some(line));
            }
            if self.eof {
                self.done = true;
                return Ok(if self.buf.is_empty() { None } else { Some(self.consume(self.buf.len())) });
            }
            self.fill()?;
        }
    }

    /// The next chunk of whole lines and its file offset; None when the split is done.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        if self.buf.len() < self.chunk_bytes && !self.eof {
            self.fill()?;
        }
        loop {
            let limit = (self.end - self.buf_start) as usize;
            // The last line of the split is the one holding byte end-1: cut after its newline.
            let (mut cut, last) = if self.buf.len() >= limit {
                match memchr::memchr(b'\n', &self.buf[limit.saturating_sub(1)..]) {
                    Some(i) => (limit.saturating_sub(1) + i + 1, true),
                    None if self.eof => (self.buf.len(), true),
                    None => {
                        self.fill()?;
                        continue;
                    }
                }
            } else {
                match memchr::memrchr(b'\n', &self.buf) {
                    Some(i) => (i + 1, false),
                    None if self.eof => (self.buf.len(), true),
                    None => {
                        self.fill()?;
                        continue;
                    }
                }
            };
            if let Some(q) = self.quote
                && memchr::memchr_iter(q, &self.buf[..cut]).count() % 2 == 1
            {
                // The cut falls inside a quoted field: extend to the next line end.
                match memchr::memchr(b'\n', &self.buf[cut..]) {
                    Some(i) => cut += i + 1,
                    None if self.eof => cut = self.buf.len(),
                    None => {
                        self.fill()?;
                        continue;
                    }
                }
            }
            let offset = self.buf_start;
            let chunk = self.consume(cut);
            self.done = last || self.buf_start >= self.end || (self.eof && self.buf.is_empty());
            if chunk.is_empty() {
                return Ok(None);
            }
            return Ok(Some((offset, chunk)));
        }
    }
}

/// 1-based line number of byte `offset` in `path` (counts newlines before it; error path only).
pub fn line_of(path: &Path, offset: u64) -> u64 {
    let Ok(mut f) = File::open(path) else { return 0 };
    let mut remaining = offset;
    let mut lines = 1;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = (remaining as usize).min(buf.len());
        let Ok(n) = f.read(&mut buf[..want]) else { break };
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        remaining -= n as u64;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path, start: u64, end: u64, chunk: usize) -> Vec<String> {
        let mut c = LineChunker::open(path, start, end, chunk, Some(b'"')).unwrap();
        let mut out = String::new();
        while let Some((_, bytes)) = c.next_chunk().unwrap() {
            out.push_str(std::str::from_utf8(&bytes).unwrap());
        }
        out.lines().map(str::to_string).collect()
    }

    #[test]
    fn every_line_is_read_once_whatever_the_splits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        let text: String = (0..500).map(|i| format!("{i},\"v{}\"\n", "x".repeat(i % 17))).collect();
        std::fs::write(&p, &text).unwrap();
        let len = text.len() as u64;
        for parts in [1u64, 2, 3, 7, 50] {
            let step = len.div_ceil(parts);
            let mut lines = Vec::new();
            let mut s = 0;
            while s < len {
                lines.extend(read_all(&p, s, (s + step).min(len), 1024));
                s += step;
            }
            let expected: Vec<String> = text.lines().map(str::to_string).collect();
            assert_eq!(lines, expected, "parts={parts}");
        }
    }

    #[test]
    fn quoted_newline_stays_in_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.csv");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("{i},\"a\nb\"\n"));
        }
        std::fs::write(&p, &text).unwrap();
        let mut c = LineChunker::open(&p, 0, text.len() as u64, 1024, Some(b'"')).unwrap();
        while let Some((_, bytes)) = c.next_chunk().unwrap() {
            assert_eq!(memchr::memchr_iter(b'"', &bytes).count() % 2, 0);
        }
        assert_eq!(line_of(&p, 7), 2);
    }
}
