//! Unbounded sources: files followed in tail mode, and standard input. Lines are gathered into
//! batches of up to `batch_rows` rows, or fewer once the first of them has waited `linger_ms`,
//! so latency stays low when traffic is low; each batch is parsed by the format's chunk parser,
//! so bad lines become the same rejections as in bounded files.
use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use polars::prelude::DataFrame;

use super::discover::Split;
use super::follow::{Event, FilePosition, Follower};
use super::records::LineCounter;
use super::{ChunkParser, Parsed, SourceConfig, csv, jsonl, lines, text};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operators::stateless::SEQ_COLUMN;
use crate::exec::source::{Poll, Source, SourceContext};
use crate::exec::state::{StateReader, StateWriter};
use crate::pipeline::SourceFormat;

/// The name rejections of standard input carry as their file.
const STDIN: &str = "<stdin>";

/// The parser of a followed source's format.
fn parser_for(config: &Arc<SourceConfig>) -> Result<Box<dyn ChunkParser>> {
    Ok(match config.format {
        SourceFormat::Csv => {
            let shape = lines::CsvShape { width: config.schema.len(), delimiter: config.delimiter, quote: b'"' };
            Box::new(csv::CsvChunkParser::new(config.clone(), shape))
        }
        SourceFormat::Jsonl => Box::new(jsonl::JsonChunkParser::new(config.clone())),
        SourceFormat::Lines | SourceFormat::Regex => Box::new(text::TextChunkParser::new(config.clone())?),
        SourceFormat::Parquet | SourceFormat::Ipc => return Err(Error::execution("source", &config.name, "Parquet and IPC files cannot be followed")),
    })
}

/// Consecutive lines of one file, parsed together.
struct Batcher {
    config: Arc<SourceConfig>,
    parser: Box<dyn ChunkParser>,
    chunk: Vec<u8>,
    path: PathBuf,
    /// Offset and line of the chunk's first byte; the offset just past its end.
    start: (u64, u64),
    end: u64,
    lines: usize,
    first_at: Option<Instant>,
    batch_rows: usize,
}

impl Batcher {
    fn new(config: Arc<SourceConfig>, batch_rows: usize) -> Result<Self> {
        let parser = parser_for(&config)?;
        Ok(Batcher { config, parser, chunk: Vec::new(), path: PathBuf::new(), start: (0, 1), end: 0, lines: 0, first_at: None, batch_rows })
    }

    /// Adds a line; returns a parsed batch when one is complete (the line starts another file's
    /// run, or the batch is full).
    fn push(&mut self, path: &Path, line: u64, offset: u64, bytes: &[u8]) -> Result<Option<Parsed>> {
        let mut done = None;
        if self.lines > 0 && (path != self.path || offset != self.end) {
            done = self.flush()?;
        }
        if self.lines == 0 {
            self.path = path.to_path_buf();
            self.start = (offset, line);
            self.first_at = Some(Instant::now());
        }
        self.chunk.extend_from_slice(bytes);
        self.chunk.push(b'\n');
        self.end = offset + bytes.len() as u64 + 1;
        self.lines += 1;
        if done.is_none() && self.lines >= self.batch_rows {
            done = self.flush()?;
        }
        Ok(done)
    }

    /// True when the oldest line has waited its linger time.
    fn due(&self) -> bool {
        self.first_at.and_then(|t| self.config.follow.as_ref().map(|f| t.elapsed() >= f.linger)).unwrap_or(false)
    }

    fn flush(&mut self) -> Result<Option<Parsed>> {
        if self.lines == 0 {
            return Ok(None);
        }
        let chunk = std::mem::take(&mut self.chunk);
        let (offset, line) = self.start;
        self.lines = 0;
        self.first_at = None;
        let split = Split { file_index: 0, path: self.path.clone(), start: offset, end: self.end, ordinal: 0, problem: None };
        let mut counter = LineCounter::starting_at(&self.path, offset, line);
        self.parser.parse(&split, offset, &chunk, &mut counter).map(Some)
    }
}

/// What followed sources share: batches to hand out, rejections, counters.
struct Output {
    config: Arc<SourceConfig>,
    node: usize,
    metrics: Arc<Metrics>,
    batches: VecDeque<DataFrame>,
    rejected: VecDeque<DataFrame>,
    /// Next row sequence number (for `first` / `last`): the subtask in the high bits.
    seq: u64,
}

impl Output {
    fn new(config: Arc<SourceConfig>, node: usize, metrics: Arc<Metrics>) -> Self {
        Output { config, node, metrics, batches: VecDeque::new(), rejected: VecDeque::new(), seq: 0 }
    }

    fn take(&mut self, parsed: Parsed) -> Result<()> {
        self.reject(parsed.rejected)?;
        if let Some(mut df) = parsed.df.filter(|d| d.height() > 0) {
            if self.config.with_sequence {
                let seq: Vec<u64> = (self.seq..self.seq + df.height() as u64).collect();
                self.seq += df.height() as u64;
                df.with_column(polars::prelude::Column::new(SEQ_COLUMN.into(), seq)).map_err(|e| Error::execution("source", &self.config.name, e))?;
            }
            let m = &self.metrics.nodes[self.node];
            NodeMetrics::add(&m.rows_in, df.height() as u64);
            NodeMetrics::add(&m.rows_out, df.height() as u64);
            self.batches.push_back(df);
        }
        Ok(())
    }

    /// The source's `on_error` for rejected lines (as for bounded files).
    fn reject(&mut self, rejected: Vec<Rejection>) -> Result<()> {
        super::apply_on_error(&self.config, &self.metrics.nodes[self.node], rejected, &mut self.rejected)
    }

    fn next(&mut self) -> Option<Poll> {
        self.rejected.pop_front().map(Poll::Rejected).or_else(|| self.batches.pop_front().map(Poll::Batch))
    }
}

/// A source subtask following the files that match its path, until the job is stopped.
pub struct FollowSource {
    out: Output,
    follower: Option<Follower>,
    batcher: Option<Batcher>,
    ctx: Option<SourceContext>,
    finished: bool,
}

impl FollowSource {
    /// A follower for source node `node`.
    pub fn new(config: Arc<SourceConfig>, node: usize, metrics: Arc<Metrics>) -> Self {
        FollowSource { out: Output::new(config, node, metrics), follower: None, batcher: None, ctx: None, finished: false }
    }

    /// Handles one event of the follower.
    fn event(&mut self, event: Event) -> Result<()> {
        let c = self.out.config.clone();
        let batcher = self.batcher.as_mut().expect("opened");
        match event {
            Event::Line { path, line, offset, bytes } => {
                NodeMetrics::add(&self.out.metrics.nodes[self.out.node].bytes, bytes.len() as u64 + 1);
                if c.format == SourceFormat::Csv && c.header && line == 1 {
                    // Every file starts with its header.
                    if let Err(problem) = csv::check_header(&c, &path, Some(&bytes)) {
                        self.out.reject(vec![*problem])?;
                    }
                    return Ok(());
                }
                if let Some(parsed) = batcher.push(&path, line, offset, &bytes)? {
                    self.out.take(parsed)?;
                }
            }
            Event::TooLong { path, line, offset, head } => {
                if let Some(parsed) = batcher.flush()? {
                    self.out.take(parsed)?;
                }
                let message = format!("the line is longer than max_line_bytes = {}: its first bytes are kept here, the rest is skipped", c.max_line_bytes);
                self.out.reject(vec![Rejection::in_file(&path, line, offset, c.max_line_bytes as u64 + 1, ErrorKind::LineTooLong, message, &head)])?;
            }
        }
        Ok(())
    }
}

impl Source for FollowSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<()> {
        let c = &self.out.config;
        let Some(follow) = &c.follow else { return Err(Error::execution("source", &c.name, "not a followed source")) };
        let super::FollowInput::Files { base_dir, pattern } = &follow.input else {
            return Err(Error::execution("source", &c.name, "not a followed file source"));
        };
        self.follower = Some(Follower::new(base_dir, pattern, follow.start_at, c.max_line_bytes, ctx.subtask, ctx.parallelism));
        self.batcher = Some(Batcher::new(c.clone(), ctx.batch_rows)?);
        self.ctx = Some(ctx.clone());
        self.out.seq = (ctx.subtask as u64) << 40;
        Ok(())
    }

    fn poll(&mut self) -> Result<Poll> {
        if let Some(p) = self.out.next() {
            return Ok(p);
        }
        if self.finished {
            return Ok(Poll::Finished);
        }
        let stopping = self.ctx.as_ref().is_some_and(SourceContext::stopping);
        let follower = self.follower.as_mut().expect("opened");
        let start = Instant::now();
        let polled = if stopping { follower.poll_all() } else { follower.poll() };
        let mut events = polled.map_err(|e| Error::execution("source", &self.out.config.name, format!("following files: {e}")))?;
        if stopping {
            events.extend(follower.flush());
        }
        for e in events {
            self.event(e)?;
        }
        let batcher = self.batcher.as_mut().expect("opened");
        if (stopping || batcher.due())
            && let Some(parsed) = batcher.flush()?
        {
            self.out.take(parsed)?;
        }
        self.out.metrics.nodes[self.out.node].add_time(start.elapsed());
        if stopping {
            self.finished = true;
        }
        Ok(self.out.next().unwrap_or(if self.finished { Poll::Finished } else { Poll::Idle }))
    }

    /// The position in every file: complete lines read are all in batches handed out or
    /// queued (held lines are parsed into the queue first), so it is just after them.
    fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        let batcher = self.batcher.as_mut().expect("opened");
        if let Some(parsed) = batcher.flush()? {
            self.out.take(parsed)?;
        }
        let positions = self.follower.as_ref().expect("opened").positions();
        let mut w = StateWriter::new(FOLLOW_STATE);
        w.value("files", &positions)?.value("seq", &self.out.seq)?;
        Ok(Some(w.finish()))
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let state = StateReader::open(position, FOLLOW_STATE)?;
        let positions: Vec<FilePosition> = state.value("files")?;
        self.out.seq = state.value("seq")?;
        self.follower.as_mut().expect("opened").restore(&positions);
        Ok(())
    }
}

/// The kind of a followed source's snapshot.
const FOLLOW_STATE: &str = "followed files";

/// A stream source: standard input, or TCP connections. Subtask 0 reads it on threads of its
/// own, in whole lines, through a bounded queue: when the pipeline is slow, the threads stop
/// reading, so a writer to stdin blocks and TCP clients see their window close (backpressure),
/// and memory stays bounded. Each connection (or stdin) numbers its own lines.
pub struct StreamSource {
    out: Output,
    batcher: Option<Batcher>,
    lines: Option<Receiver<(Arc<PathBuf>, Vec<u8>)>>,
    /// Per origin: (offset, line) of its next byte, and whether its CSV header is still due.
    positions: std::collections::HashMap<Arc<PathBuf>, (u64, u64, bool)>,
    ctx: Option<SourceContext>,
    /// The stream ends on its own (stdin), rather than only when the job stops (TCP).
    bounded: bool,
}

impl StreamSource {
    /// A stream source for node `node`.
    pub fn new(config: Arc<SourceConfig>, node: usize, metrics: Arc<Metrics>) -> Self {
        let bounded = matches!(config.follow.as_ref().map(|f| &f.input), Some(super::FollowInput::Stdin));
        StreamSource { out: Output::new(config, node, metrics), batcher: None, lines: None, positions: Default::default(), ctx: None, bounded }
    }

    /// Adds a chunk of whole lines from `origin`.
    fn chunk(&mut self, origin: &Arc<PathBuf>, chunk: &[u8]) -> Result<()> {
        let c = self.out.config.clone();
        NodeMetrics::add(&self.out.metrics.nodes[self.out.node].bytes, chunk.len() as u64);
        let header = c.format == SourceFormat::Csv && c.header;
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let position = self.positions.entry(origin.clone()).or_insert((0, 1, header));
            let (offset, number, header_due) = *position;
            *position = (offset + line.len() as u64, number + 1, false);
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            if header_due {
                if let Err(problem) = csv::check_header(&c, origin, Some(body.strip_suffix(b"\r").unwrap_or(body))) {
                    self.out.reject(vec![*problem])?;
                }
                continue;
            }
            if body.len() > c.max_line_bytes {
                let message = format!("the line is {} bytes long, more than max_line_bytes = {}", body.len(), c.max_line_bytes);
                self.out.reject(vec![Rejection::in_file(origin, number, offset, c.max_line_bytes as u64 + 1, ErrorKind::LineTooLong, message, body)])?;
                continue;
            }
            let batcher = self.batcher.as_mut().expect("opened");
            if let Some(parsed) = batcher.push(origin, number, offset, body)? {
                self.out.take(parsed)?;
            }
        }
        Ok(())
    }
}

impl Source for StreamSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<()> {
        self.batcher = Some(Batcher::new(self.out.config.clone(), ctx.batch_rows)?);
        self.ctx = Some(ctx.clone());
        if ctx.subtask != 0 {
            return Ok(());
        }
        let name = self.out.config.name.clone();
        let fail = |what: &str, e: std::io::Error| Error::execution("source", &name, format!("{what}: {e}"));
        let (tx, rx) = crossbeam_channel::bounded::<(Arc<PathBuf>, Vec<u8>)>(4);
        let max_line = self.out.config.max_line_bytes;
        match self.out.config.follow.as_ref().map(|f| &f.input) {
            Some(super::FollowInput::Tcp(address)) => {
                let listener = std::net::TcpListener::bind(address.as_str()).map_err(|e| fail(&format!("cannot listen on {address}"), e))?;
                std::thread::Builder::new()
                    .name("rivulet-tcp-accept".into())
                    .spawn(move || {
                        for client in listener.incoming().flatten() {
                            let origin = Arc::new(PathBuf::from(format!("tcp://{}", client.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string()))));
                            let tx = tx.clone();
                            let _ = std::thread::Builder::new()
                                .name("rivulet-tcp-client".into())
                                .spawn(move || read_lines(client, max_line, |chunk| tx.send((origin.clone(), chunk)).is_ok()));
                        }
                    })
                    .map_err(|e| fail("cannot start the TCP listener", e))?;
            }
            _ => {
                let origin = Arc::new(PathBuf::from(STDIN));
                std::thread::Builder::new()
                    .name("rivulet-stdin".into())
                    .spawn(move || read_lines(std::io::stdin().lock(), max_line, |chunk| tx.send((origin.clone(), chunk)).is_ok()))
                    .map_err(|e| fail("cannot start the stdin reader", e))?;
            }
        }
        self.lines = Some(rx);
        Ok(())
    }

    fn poll(&mut self) -> Result<Poll> {
        if let Some(p) = self.out.next() {
            return Ok(p);
        }
        let Some(rx) = self.lines.clone() else { return Ok(Poll::Finished) };
        let stopping = self.ctx.as_ref().is_some_and(SourceContext::stopping);
        // Several chunks per poll (a poll that finds nothing sleeps); when stopping, only what is
        // queued now, so busy writers cannot keep the source from finishing.
        let most = if stopping { rx.len() } else { 64 };
        let mut ended = stopping;
        for _ in 0..most.max(1) {
            match rx.try_recv() {
                Ok((origin, chunk)) => self.chunk(&origin, &chunk)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    ended |= self.bounded;
                    break;
                }
            }
            if self.out.batches.len() > 1 {
                break;
            }
        }
        let batcher = self.batcher.as_mut().expect("opened");
        if (ended || batcher.due())
            && let Some(parsed) = batcher.flush()?
        {
            self.out.take(parsed)?;
        }
        if ended {
            self.lines = None;
        }
        Ok(self.out.next().unwrap_or(if ended { Poll::Finished } else { Poll::Idle }))
    }
}

/// Reads `input` to its end, handing out chunks of whole lines (the last one may lack its
/// newline); stops when `send` returns false. A line longer than `max_line` is handed out cut,
/// as a line of its own (the source rejects it as too long), and the rest of it is skipped,
/// so a writer that never sends a newline cannot fill the memory.
fn read_lines(mut input: impl Read, max_line: usize, mut send: impl FnMut(Vec<u8>) -> bool) {
    let mut pending = Vec::new();
    let mut skipping = false;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut data = &buf[..n];
        if skipping {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    skipping = false;
                    data = &data[i + 1..];
                }
                None => continue,
            }
        }
        pending.extend_from_slice(data);
        if let Some(last) = memchr::memrchr(b'\n', &pending) {
            let rest = pending.split_off(last + 1);
            if !send(std::mem::replace(&mut pending, rest)) {
                return;
            }
        }
        if pending.len() > max_line {
            // Too long and no newline yet: hand out its head, skip the rest of it.
            let mut head = std::mem::take(&mut pending);
            head.truncate(max_line + 1);
            head.push(b'\n');
            skipping = true;
            if !send(head) {
                return;
            }
        }
    }
    if !pending.is_empty() {
        send(pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A followed `lines` source over `dir/*.log`, opened.
    fn follow_source(dir: &Path) -> FollowSource {
        let schema = text::text_schema(SourceFormat::Lines, None).unwrap();
        let mut config = SourceConfig::plain(SourceFormat::Lines, Vec::new(), schema, crate::pipeline::OnError::Fail);
        let input = super::super::FollowInput::Files { base_dir: dir.to_path_buf(), pattern: "*.log".into() };
        config.follow = Some(super::super::FollowConfig { input, start_at: super::super::follow::StartAt::Beginning, linger: std::time::Duration::from_secs(60) });
        let mut source = FollowSource::new(Arc::new(config), 0, Arc::new(Metrics::new(1)));
        let flag = || Arc::new(std::sync::atomic::AtomicBool::new(false));
        source.open(&SourceContext { subtask: 0, parallelism: 1, batch_rows: 1000, cancel: flag(), stop: flag() }).unwrap();
        source
    }

    /// Lines handed out by polls for a while (lines wait for their batch: linger is 60 s).
    fn drain(source: &mut FollowSource) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..30 {
            match source.poll().unwrap() {
                Poll::Batch(df) => lines.extend(df.column("line").unwrap().str().unwrap().iter().flatten().map(str::to_string)),
                Poll::Idle => std::thread::sleep(std::time::Duration::from_millis(10)),
                other => panic!("{other:?}"),
            }
        }
        lines
    }

    #[test]
    fn a_restored_source_goes_on_after_the_last_line_it_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "one\ntwo\nthree\npart").unwrap();
        let mut first = follow_source(dir.path());
        // The lines wait for their batch (linger 60 s) until the snapshot moves them out.
        assert!(drain(&mut first).is_empty());
        let position = first.snapshot().unwrap().unwrap();
        assert_eq!(drain(&mut first), ["one", "two", "three"]);
        // After the snapshot: the rest of the partial line, a rotation and a new file.
        std::fs::write(&log, "one\ntwo\nthree\npartial\nfive\n").unwrap();
        std::fs::rename(&log, dir.path().join("app.1.log")).unwrap();
        std::fs::write(&log, "new file\n").unwrap();
        let mut second = follow_source(dir.path());
        second.restore(&position).unwrap();
        let mut lines = drain(&mut second);
        let _ = second.snapshot().unwrap();
        lines.extend(drain(&mut second));
        lines.sort();
        assert_eq!(lines, ["five", "new file", "partial"]);
        assert!(second.restore(b"garbage").is_err());
    }

    #[test]
    fn stdin_is_cut_into_whole_lines() {
        let mut chunks = Vec::new();
        read_lines(&b"a\nbb\ncc"[..], 100, |c| {
            chunks.push(c);
            true
        });
        assert_eq!(chunks, [b"a\nbb\n".to_vec(), b"cc".to_vec()]);
    }

    #[test]
    fn a_line_without_end_is_cut_not_buffered() {
        let mut input = vec![b'x'; 200_000];
        input.extend_from_slice(b"\nok\n");
        let mut chunks = Vec::new();
        read_lines(&input[..], 10, |c| {
            chunks.push(c);
            true
        });
        let total: usize = chunks.iter().map(Vec::len).sum();
        assert!(total < 100, "{total} bytes handed out");
        assert_eq!(chunks.last().unwrap(), b"ok\n");
    }
}
