//! Cutting a byte range of a text file into chunks of whole lines (records), so each chunk can
//! be parsed on its own. A line belongs to the split it starts in.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What [`CsvShape::scan`] found in a chunk of whole records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Records {
    /// Records (non-empty lines outside quotes).
    pub count: usize,
    /// Some line outside quotes is empty (or holds only `\r`).
    pub blank: bool,
    /// Bytes of the longest record, without its newline (an upper bound of every line's).
    pub longest: usize,
}

/// How CSV records look: enough to count fields and to find where a record starts.
#[derive(Clone, Copy, Debug)]
pub struct CsvShape {
    /// Fields per record.
    pub width: usize,
    /// Field separator.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
}

impl CsvShape {
    /// True when every non-empty line (record) of `bytes` has `width` fields. Quoted
    /// delimiters and newlines do not count; polars would pad short rows with nulls and, with a
    /// projection, not look at long ones, so this check is what makes a ragged row an error.
    pub fn all_records_complete(&self, bytes: &[u8]) -> bool {
        self.complete_records(bytes).is_some()
    }

    /// The number of records (non-empty lines outside quotes) of `bytes` when every one has
    /// `width` fields and no quoted field is left open at the end, else None.
    pub fn complete_records(&self, bytes: &[u8]) -> Option<usize> {
        self.scan(bytes).map(|r| r.count)
    }

    /// The records of `bytes` (see [`CsvShape::complete_records`]), whether there is an empty
    /// line among them, and the longest, in one pass.
    pub fn scan(&self, bytes: &[u8]) -> Option<Records> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.complete_avx2(bytes) };
        }
        self.complete_blocks(bytes)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1")]
    unsafe fn complete_avx2(&self, bytes: &[u8]) -> Option<Records> {
        // The compiler does not turn the portable loop into compares and movemasks by itself:
        // it ran at about 3 GB/s, a tenth of TPC-H Q1 on CSV.
        // SAFETY: this function runs only where the CPU has avx2.
        self.complete_with(bytes, |block| unsafe { block_masks_avx2(block, self.quote, self.delimiter) })
    }

    /// Works on 64-byte blocks with bit masks (simdjson's trick): the quote mask's prefix XOR
    /// marks the bytes inside quotes, so delimiters and newlines there drop out, and the fields
    /// of each line are counted with popcount between newline bits.
    fn complete_blocks(&self, bytes: &[u8]) -> Option<Records> {
        self.complete_with(bytes, |block| block_masks(block, self.quote, self.delimiter))
    }

    /// The block walk, given how to compute a 64-byte block's (quote, delimiter, newline) masks.
    #[inline(always)]
    fn complete_with(&self, bytes: &[u8], masks: impl Fn(&[u8]) -> (u64, u64, u64)) -> Option<Records> {
        let mut scan = RecordScan::new(self.width);
        match for_each_block(bytes, masks, |block| scan.block(block))? {
            false => scan.finish(),
            true => None,
        }
    }

    /// Whether records can start at the beginning of `bytes`: the next two records (or all
    /// that is left) parse strictly, with `width` fields each and quotes only around whole
    /// fields. None when more bytes are needed to tell. A wrong guess is caught afterwards by
    /// comparing split boundaries ([`super::SplitLog`]).
    pub(super) fn plausible_start(&self, bytes: &[u8], eof: bool) -> Option<bool> {
        let mut i = 0;
        for _ in 0..2 {
            if i >= bytes.len() {
                return if eof { Some(true) } else { None };
            }
            let mut fields = 1;
            let mut field_start = true;
            loop {
                let Some(&b) = bytes.get(i) else {
                    return if eof { Some(fields == self.width) } else { None };
                };
                if field_start && b == self.quote {
                    // A quoted field: up to the closing quote ("" is an escaped quote).
                    i += 1;
                    loop {
                        let Some(j) = memchr::memchr(self.quote, &bytes[i..]) else {
                            return if eof { Some(false) } else { None };
                        };
                        i += j + 1;
                        match bytes.get(i) {
                            Some(&q) if q == self.quote => i += 1,
                            None if !eof => return None,
                            _ => break,
                        }
                    }
                    if !matches!(bytes.get(i), None | Some(b'\r' | b'\n')) && bytes.get(i) != Some(&self.delimiter) {
                        return Some(false);
                    }
                    field_start = false;
                    continue;
                }
                i += 1;
                if b == self.quote {
                    return Some(false);
                } else if b == self.delimiter {
                    fields += 1;
                    field_start = true;
                } else if b == b'\n' {
                    break;
                } else {
                    field_start = false;
                }
            }
            if fields != self.width {
                return Some(false);
            }
        }
        Some(true)
    }
}

/// A 64-byte block of a CSV chunk, as bit masks (bit i for byte i).
pub(super) struct Block<'a> {
    /// Offset of the block in the chunk.
    pub base: usize,
    /// The block's bytes: the chunk's last block is padded with zeros.
    pub bytes: &'a [u8],
    /// Bytes of the chunk in the block (64 but for the last).
    pub len: u32,
    /// Quote characters.
    pub quotes: u64,
    /// Bytes inside quotes, as if every quote opened or closed a quoted part (opening quote
    /// included, closing quote excluded).
    pub inside: u64,
    /// Delimiters outside quotes.
    pub delims: u64,
    /// Newlines outside quotes.
    pub newlines: u64,
}

/// Calls `f` with each 64-byte block of `bytes` in order, while it returns true: None when it
/// stopped, else whether `bytes` ends inside quotes. `masks` computes a block's (quote,
/// delimiter, newline) masks.
#[inline(always)]
pub(super) fn for_each_block(bytes: &[u8], masks: impl Fn(&[u8]) -> (u64, u64, u64), mut f: impl FnMut(&Block) -> bool) -> Option<bool> {
    let mut quoted = 0u64; // all ones when a block starts inside quotes
    let mut tail = [0u8; 64];
    let mut base = 0;
    while base < bytes.len() {
        let rest = &bytes[base..];
        let (block, len) = if rest.len() >= 64 {
            (&rest[..64], 64)
        } else {
            tail[..rest.len()].copy_from_slice(rest);
            (&tail[..], rest.len() as u32)
        };
        let valid = if len == 64 { u64::MAX } else { (1u64 << len) - 1 };
        let (mq, md, mn) = masks(block);
        let (mq, md, mn) = (mq & valid, md & valid, mn & valid);
        let inside = if mq == 0 { quoted } else { prefix_xor(mq) ^ quoted };
        quoted = if inside >> 63 == 1 { !0 } else { 0 };
        if !f(&Block { base, bytes: block, len, quotes: mq, inside, delims: md & !inside, newlines: mn & !inside }) {
            return None;
        }
        base += 64;
    }
    // Past the last byte the padding holds no quote: the last bit tells.
    Some(quoted != 0)
}

/// Counting the records of a chunk block by block ([`CsvShape::scan`]).
pub(super) struct RecordScan {
    width: u32,
    /// Fields of the current line so far, and its bytes.
    fields: u32,
    line_bytes: u32,
    records: usize,
    blank: bool,
    longest: u32,
    /// The byte before the next block is `\r`.
    cr_before: bool,
}

impl RecordScan {
    pub(super) fn new(width: usize) -> Self {
        RecordScan { width: width as u32, fields: 1, line_bytes: 0, records: 0, blank: false, longest: 0, cr_before: false }
    }

    /// Counts the records ending in `block`; false when one has the wrong number of fields.
    /// The fields of each line are counted with popcount between newline bits.
    #[inline(always)]
    pub(super) fn block(&mut self, block: &Block) -> bool {
        let mut newlines = block.newlines;
        let (mut done, mut last) = (0u64, 0u32);
        while newlines != 0 {
            let nl = newlines.trailing_zeros();
            let below = (1u64 << nl) - 1;
            self.fields += (block.delims & below & !done).count_ones();
            let bytes = self.line_bytes + nl - last;
            // An empty line, or one holding only `\r`.
            let cr = if nl > 0 { block.bytes[nl as usize - 1] == b'\r' } else { self.cr_before };
            let empty = bytes == 0 || (bytes == 1 && cr);
            self.blank |= empty;
            self.longest = self.longest.max(bytes);
            if !empty {
                if self.fields != self.width {
                    return false;
                }
                self.records += 1;
            }
            (self.fields, self.line_bytes, last) = (1, 0, nl + 1);
            done = below | (1u64 << nl);
            newlines &= newlines - 1;
        }
        self.fields += (block.delims & !done).count_ones();
        self.line_bytes += block.len - last;
        self.cr_before = block.len > 0 && block.bytes[block.len as usize - 1] == b'\r';
        true
    }

    /// The records, with the last line when it has no newline; None when it has the wrong
    /// number of fields.
    pub(super) fn finish(&self) -> Option<Records> {
        let bytes = self.line_bytes;
        let count = if bytes == 0 || (bytes == 1 && self.cr_before) {
            self.records
        } else if self.fields == self.width {
            self.records + 1
        } else {
            return None;
        };
        Some(Records { count, blank: self.blank, longest: self.longest.max(bytes) as usize })
    }
}

/// The (quote, delimiter, newline) bit masks of a 64-byte block: bit i is set when byte i is one.
pub(super) fn block_masks(block: &[u8], quote: u8, delimiter: u8) -> (u64, u64, u64) {
    let (mut mq, mut md, mut mn) = (0u64, 0u64, 0u64);
    for (i, &b) in block[..64].iter().enumerate() {
        mq |= u64::from(b == quote) << i;
        md |= u64::from(b == delimiter) << i;
        mn |= u64::from(b == b'\n') << i;
    }
    (mq, md, mn)
}

/// [`block_masks`] with two 32-byte compares each. Inlined into callers compiled for avx2.
///
/// # Safety
/// The CPU must have avx2, and `block` at least 64 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn block_masks_avx2(block: &[u8], quote: u8, delimiter: u8) -> (u64, u64, u64) {
    use std::arch::x86_64::*;
    assert!(block.len() >= 64);
    // SAFETY: two unaligned 32-byte loads within the 64 bytes checked above.
    let (lo, hi) = unsafe { (_mm256_loadu_si256(block.as_ptr().cast()), _mm256_loadu_si256(block.as_ptr().add(32).cast())) };
    let mask = |v: __m256i| {
        let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, v)) as u32 as u64;
        let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, v)) as u32 as u64;
        l | h << 32
    };
    (mask(_mm256_set1_epi8(quote as i8)), mask(_mm256_set1_epi8(delimiter as i8)), mask(_mm256_set1_epi8(b'\n' as i8)))
}

/// Bit i of the result is the XOR of bits 0..=i of `x`: with `x` the quote positions, the
/// bytes inside quotes (opening quote included, closing quote excluded).
#[inline(always)]
pub(super) fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

/// Reads `[start, end)` of a file as chunks of about `chunk_bytes` ending at a line end.
pub struct LineChunker {
    file: File,
    /// File offset of `buf[0]`.
    buf_start: u64,
    buf: Vec<u8>,
    /// A chunk handed back after parsing ([`LineChunker::recycle`]), to hold the next one: a
    /// fresh 2 MiB buffer for every chunk cost page faults and zeroing, 8% of TPC-H Q18 on CSV.
    spare: Vec<u8>,
    end: u64,
    eof: bool,
    done: bool,
    chunk_bytes: usize,
    /// CSV quote character: a chunk never ends inside a quoted field (odd number of quotes).
    quote: Option<u8>,
    /// CSV record shape: after its last chunk, the split reads on through the lines the next
    /// split skips as implausible record starts, so neighbouring splits meet exactly.
    shape: Option<CsvShape>,
    /// Reading those lines now.
    extending: bool,
    /// Where the first record of the split starts (after aligning to a record boundary).
    start: u64,
}

/// Asks the kernel to start reading the split's bytes (`from..end`) into the page cache now,
/// so that the reads of its later chunks find them there while the earlier ones are parsed (the
/// kernel reads at most its read-ahead window at once, 8 MiB on this machine's disk, and its
/// own read-ahead goes on from there).
/// Pages not read for a while leave the page cache (here, a proactive reclaim drops file pages
/// idle for a few seconds): TPC-H Q10 on CSV had its readers blocked on the disk 175 ms in a
/// 0.6 s run, each chunk's read waiting for its own pages. Cached pages cost nothing here.
fn read_ahead(file: &File, from: u64, end: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = i64::try_from(end.saturating_sub(from)).unwrap_or(i64::MAX);
        // SAFETY: advice on an open descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), from as i64, len, libc::POSIX_FADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, end);
}

impl LineChunker {
    /// Opens `path` at the first line starting at or after `start`; for CSV (`shape`), at the
    /// first line there that plausibly starts a record (not inside a quoted field).
    ///
    /// It reads into `buffers`, those of a split read before (see [`LineChunker::into_buffers`]),
    /// or empty ones: fresh buffers for every split cost page faults (TPC-H's lineitem on CSV is
    /// 24 splits of 32 MiB, each with two buffers of 2 MiB or more), and faults taken inside
    /// `read` wait for the process's memory map lock while another thread maps memory.
    pub fn open(path: &Path, start: u64, end: u64, chunk_bytes: usize, shape: Option<CsvShape>, buffers: [Vec<u8>; 2]) -> std::io::Result<Self> {
        let chunk_bytes = chunk_bytes.max(1024);
        let [mut buf, mut spare] = buffers;
        // A read appends a chunk to what the last cut left over (part of a line, or after the
        // header a whole read): room for two chunks from the start, so that growing a buffer
        // never moves it to memory touched for the first time.
        for b in [&mut buf, &mut spare] {
            b.clear();
            b.reserve(2 * chunk_bytes);
        }
        let mut file = File::open(path)?;
        let from = start.saturating_sub(1);
        file.seek(SeekFrom::Start(from))?;
        read_ahead(&file, from, end);
        let quote = shape.map(|s| s.quote);
        let mut c = LineChunker { file, buf_start: from, buf, spare, end, eof: false, done: false, chunk_bytes, quote, shape, extending: false, start };
        if start > 0 {
            // The line holding byte start-1 belongs to the previous split: skip through its newline.
            c.skip_line()?;
            while let Some(shape) = shape {
                if c.buf_start >= end {
                    break;
                }
                match shape.plausible_start(&c.buf, c.eof) {
                    Some(true) => break,
                    Some(false) => c.skip_line()?,
                    None => c.fill()?,
                }
            }
        }
        c.start = c.buf_start;
        if c.buf_start >= end {
            c.done = true;
        }
        Ok(c)
    }

    /// Skips through the next newline.
    fn skip_line(&mut self) -> std::io::Result<()> {
        let cut = loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                break i + 1;
            }
            if self.eof {
                break self.buf.len();
            }
            self.fill()?;
        };
        self.discard(cut);
        Ok(())
    }

    /// The byte range this split's records actually cover: `(first record start, read end)`.
    /// The end is final once `next_chunk` returned None. Neighbouring splits of one file must
    /// meet exactly; see [`SplitLog`].
    pub fn covered(&self) -> (u64, u64) {
        (self.start, self.buf_start)
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> std::io::Result<()> {
        // Reads into the buffer's spare capacity, which is not zeroed first.
        self.buf.reserve(self.chunk_bytes);
        let n = Read::by_ref(&mut self.file).take(self.chunk_bytes as u64).read_to_end(&mut self.buf)?;
        if n < self.chunk_bytes {
            self.eof = true;
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.spare);
        rest.clear();
        rest.extend_from_slice(&self.buf[n..]);
        self.buf.truncate(n);
        let chunk = std::mem::replace(&mut self.buf, rest);
        self.buf_start += n as u64;
        chunk
    }

    /// Drops the first `n` bytes, keeping both buffers: a dropped chunk (the skipped part line
    /// at every split's start, a header line) left `consume` to allocate a fresh buffer,
    /// which was then grown while read into: TPC-H Q18 on CSV took a third of lineitem's page
    /// faults there, half of them inside `read`.
    fn discard(&mut self, n: usize) {
        let chunk = self.consume(n);
        self.recycle(chunk);
    }

    /// Its buffers, for the next split's chunker to read into.
    pub fn into_buffers(self) -> [Vec<u8>; 2] {
        [self.buf, self.spare]
    }

    /// Takes back a chunk that [`LineChunker::next_chunk`] returned, to read into again.
    pub fn recycle(&mut self, chunk: Vec<u8>) {
        if chunk.capacity() > self.spare.capacity() {
            self.spare = chunk;
        }
    }

    /// The next line, without its line end (for headers); None at the end of the split.
    pub fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf[..i].strip_suffix(b"\r").unwrap_or(&self.buf[..i]).to_vec();
                self.discard(i + 1);
                self.done = self.buf_start >= self.end;
                return Ok(Some(line));
            }
            if self.eof {
                self.done = true;
                let line = (!self.buf.is_empty()).then(|| self.buf.to_vec());
                self.discard(self.buf.len());
                return Ok(line);
            }
            self.fill()?;
        }
    }

    /// After the split's last line: the lines up to the next plausible record start, at most
    /// about `chunk_bytes` of them per call, each line looked at once.
    fn extension_chunk(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let Some(shape) = self.shape else {
            self.done = true;
            return Ok(None);
        };
        let mut cut = 0;
        while cut < self.chunk_bytes {
            if cut == self.buf.len() && self.eof {
                self.done = true;
                break;
            }
            match shape.plausible_start(&self.buf[cut..], self.eof) {
                Some(true) => {
                    self.done = true;
                    break;
                }
                Some(false) => match memchr::memchr(b'\n', &self.buf[cut..]) {
                    Some(i) => cut += i + 1,
                    None if self.eof => cut = self.buf.len(),
                    None => self.fill()?,
                },
                None => self.fill()?,
            }
        }
        if self.done {
            self.extending = false;
        }
        let offset = self.buf_start;
        let chunk = self.consume(cut);
        if chunk.is_empty() {
            self.recycle(chunk);
            return Ok(None);
        }
        Ok(Some((offset, chunk)))
    }

    /// The next chunk of whole lines and its file offset; None when the split is done.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        if self.extending {
            return self.extension_chunk();
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
            if self.done && last && self.shape.is_some() && !(self.eof && self.buf.is_empty()) {
                // Read on through the lines the next split skips (it starts where a record
                // plausibly starts), so that a malformed record there is read, by this split.
                self.done = false;
                self.extending = true;
            }
            if chunk.is_empty() {
                self.recycle(chunk);
                return if self.extending { self.extension_chunk() } else { Ok(None) };
            }
            return Ok(Some((offset, chunk)));
        }
    }
}

/// The first `n` lines of a file (whole CSV records: a quoted newline does not end a line),
/// read without touching the rest of the file.
pub fn head_lines(path: &Path, n: usize, quote: Option<u8>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 64 << 10];
    let (mut lines, mut quotes, mut scanned) = (0, 0usize, 0);
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..got]);
        for (i, &b) in out[scanned..].iter().enumerate() {
            if Some(b) == quote {
                quotes += 1;
            } else if b == b'\n' && quotes % 2 == 0 {
                lines += 1;
                if lines == n {
                    out.truncate(scanned + i + 1);
                    return Ok(out);
                }
            }
        }
        scanned = out.len();
    }
}

/// 1-based line number of byte `offset` in `path` (counts newlines before it; error path only).
pub fn line_of(path: &Path, offset: u64) -> u64 {
    let Ok(mut f) = File::open(path) else {
        return 0;
    };
    let mut remaining = offset;
    let mut lines = 1;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = (remaining as usize).min(buf.len());
        let Ok(n) = f.read(&mut buf[..want]) else {
            break;
        };
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

    const SHAPE: CsvShape = CsvShape { width: 2, delimiter: b',', quote: b'"' };

    #[test]
    fn quoted_newlines_across_split_boundaries_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.csv");
        let text: String = (0..300).map(|i| format!("{i},\"line one, {i}\nline two\"\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let len = text.len() as u64;
        for step in [97u64, 250, 1000, 4096] {
            let mut records = Vec::new();
            let mut pos = 0;
            let mut s = 0;
            // Each split reads into the buffers of the one before, with what it left in them.
            let mut buffers = Default::default();
            // ... and keeps them: no split after the first allocates one.
            let mut allocations = None;
            while s < len {
                let mut c = LineChunker::open(&p, s, (s + step).min(len), 1024, Some(SHAPE), buffers).unwrap();
                let mut bytes = Vec::new();
                while let Some((_, chunk)) = c.next_chunk().unwrap() {
                    bytes.extend(&chunk);
                    c.recycle(chunk);
                }
                let (start, end) = c.covered();
                buffers = c.into_buffers();
                let held: std::collections::BTreeSet<*const u8> = buffers.iter().map(|b| b.as_ptr()).collect();
                assert_eq!(held, *allocations.get_or_insert_with(|| held.clone()), "step {step}: the split at {s} took a new buffer");
                if end > start {
                    assert_eq!(start, pos, "step {step}: split at {s} starts at {start}, previous ended at {pos}");
                    pos = end;
                }
                let mut r = ::csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
                records.extend(r.records().map(|r| r.unwrap()[0].to_string()));
                s += step;
            }
            assert_eq!(pos, len);
            assert_eq!(records, (0..300).map(|i| i.to_string()).collect::<Vec<_>>(), "step {step}");
        }
    }

    /// The straightforward byte-by-byte definition, to check the block version against: the
    /// complete records, whether one is blank (empty, or only `\r`), and the longest.
    fn scan_by_bytes(bytes: &[u8], width: usize) -> Option<Records> {
        let (mut quoted, mut fields, mut len, mut records) = (false, 1, 0, 0);
        let (mut blank, mut longest, mut prev) = (false, 0, 0u8);
        for &b in bytes {
            match b {
                b'"' => quoted = !quoted,
                b',' if !quoted => fields += 1,
                b'\n' if !quoted => {
                    let empty = len == 0 || (len == 1 && prev == b'\r');
                    blank |= empty;
                    longest = longest.max(len);
                    if !empty {
                        if fields != width {
                            return None;
                        }
                        records += 1;
                    }
                    (fields, len, prev) = (1, 0, b);
                    continue;
                }
                _ => {}
            }
            len += 1;
            prev = b;
        }
        longest = longest.max(len);
        let count = match (len, fields == width) {
            (0, _) => records,
            (1, _) if prev == b'\r' => records,
            (_, true) => records + 1,
            _ => return None,
        };
        Some(Records { count, blank, longest })
    }

    #[test]
    fn block_check_agrees_with_bytewise_check() {
        // Deterministic random records of 0..4 fields, quotes with delimiters and
        // newlines inside, empty lines, across 64-byte block boundaries.
        let mut next = crate::testing::below(0x2545_f491_4f6c_dd1du64);
        for _ in 0..2000 {
            let mut text = Vec::new();
            for _ in 0..next(12) {
                let fields = if next(10) == 0 { next(4) } else { 2 };
                for f in 0..fields {
                    if f > 0 {
                        text.push(b',');
                    }
                    match next(4) {
                        0 => text.extend_from_slice(b"\"a,b\nc\"\"d\""),
                        1 => text.extend(std::iter::repeat_n(b'x', next(70) as usize)),
                        _ => text.extend_from_slice(b"12"),
                    }
                }
                if next(6) == 0 {
                    text.push(b'\r');
                }
                text.push(b'\n');
                match next(8) {
                    0 => text.push(b'\n'),
                    1 => text.extend_from_slice(b"\r\n"),
                    _ => {}
                }
            }
            let shape = CsvShape { width: 2, delimiter: b',', quote: b'"' };
            assert_eq!(shape.complete_blocks(&text), scan_by_bytes(&text, 2), "{:?}", String::from_utf8_lossy(&text));
            assert_eq!(shape.scan(&text), scan_by_bytes(&text, 2));
        }
    }

    #[test]
    fn ragged_records_are_detected() {
        assert_eq!(SHAPE.complete_records(b"1,2\n\"a,b\",c\n\n3,\"x\ny\"\n"), Some(3));
        assert_eq!(SHAPE.complete_records(b"1,2\n3,4"), Some(2));
        assert!(!SHAPE.all_records_complete(b"1,2\n3\n"));
        assert!(!SHAPE.all_records_complete(b"1,2\n3,4,5"));
    }

    fn read_all(path: &Path, start: u64, end: u64, chunk: usize) -> Vec<String> {
        let mut c = LineChunker::open(path, start, end, chunk, Some(SHAPE), Default::default()).unwrap();
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
        let mut c = LineChunker::open(&p, 0, text.len() as u64, 1024, Some(SHAPE), Default::default()).unwrap();
        while let Some((_, bytes)) = c.next_chunk().unwrap() {
            assert_eq!(memchr::memchr_iter(b'"', &bytes).count() % 2, 0);
        }
        assert_eq!(line_of(&p, 7), 2);
    }
}
