//! Following growing files (tail mode): new lines of every file that matches a source's path,
//! through rotation.
//!
//! A file is known by a fingerprint of its first bytes, not by its path or inode: after
//! rename-and-create the old file is read to its end through the handle already open and the new
//! file is read from its start; a file renamed into the pattern is recognised and never read
//! twice; after copytruncate (the file shrinks under its handle) reading restarts at its start;
//! a file deleted while open is read to its end; a symlink that is re-pointed leads to another
//! fingerprint, so to a new file. A file shorter than the fingerprint with no complete first line
//! waits until it grows. A partial last line is held until its newline arrives (or the source
//! stops). A line longer than `max_line_bytes` is cut off: the first bytes are reported as a
//! rejection and the rest of the line is skipped.
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes hashed to know a file.
const FINGERPRINT_BYTES: usize = 256;
/// A file no longer at any matching path is closed after it has been at its end this long (a
/// writer may still append to a file just rotated away).
const RETIRE_AFTER: Duration = Duration::from_millis(1500);
/// A file that gave nothing for this long is closed (and opened again when it grows).
const CLOSE_QUIET_AFTER: Duration = Duration::from_secs(60);
/// Most bytes read from one file per poll, so that one busy file does not starve the others.
const READ_BYTES: usize = 1 << 20;

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete line (without its `\n`; a `\r` before it is kept for the parser to judge).
    Line {
        /// The file it was read from (its path when it was found).
        path: PathBuf,
        /// 1-based line number in that file.
        line: u64,
        /// Byte offset of the line in the file.
        offset: u64,
        /// The line.
        bytes: Vec<u8>,
    },
    /// A line longer than the limit: its first bytes; the rest is skipped.
    TooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Byte offset of the line.
        offset: u64,
        /// The first `max_line_bytes` bytes.
        head: Vec<u8>,
    },
}

/// One file being followed (or, once closed, remembered so that it is never read again).
struct Followed {
    path: PathBuf,
    /// The open file; None once it was closed (retired), when only its offset is remembered.
    file: Option<File>,
    /// (device, inode) of the open file.
    inode: (u64, u64),
    /// Bytes of the file consumed so far (complete lines, or the skipped tail of a long line).
    offset: u64,
    /// The incomplete last line read so far.
    partial: Vec<u8>,
    /// Lines completed so far (for line numbers).
    lines: u64,
    /// Skipping the rest of a line that was too long.
    skipping: bool,
    /// Seen at a matching path in the last scan.
    present: bool,
    /// When it last gave bytes.
    last_data: Instant,
    /// The hash of its first line (its id, unless another file shares that line).
    first_line: u64,
    /// Known from a restored position only, until a file is found that is this one: the same
    /// first line, and the same inode or (after a copy or a move) the same bytes just before
    /// `offset`.
    restored: Option<RestoreCheck>,
}

/// How a file found after a restore is recognised as the one a position was taken in.
#[derive(Clone, Copy, Debug)]
struct RestoreCheck {
    /// Hash of the (up to 64) bytes before the offset, when the file was open.
    before: Option<u64>,
}

/// Where a follower is in one file, for a checkpoint: the file's fingerprint (its id among the
/// followed files) and the bytes and lines of it consumed. Bytes of an unfinished last line are
/// not consumed: after a restore they are read again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilePosition {
    /// The id the follower knows the file by: the hash of its first line (combined with its
    /// inode when another file shares that line).
    pub fingerprint: u64,
    /// Its path when the position was taken (for people reading a checkpoint).
    pub path: PathBuf,
    /// (device, inode) when the position was taken.
    pub inode: (u64, u64),
    /// Bytes consumed.
    pub offset: u64,
    /// Complete lines consumed.
    pub lines: u64,
    /// Inside a line too long, whose rest is being skipped.
    pub skipping: bool,
    /// The hash of the file's first line.
    pub first_line: u64,
    /// Hash of the (up to 64) bytes before `offset`, to recognise the file after a copy.
    pub before: Option<u64>,
}

/// Where a follower starts reading files that exist when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Read every file from its first byte.
    Beginning,
    /// Only what is appended after the start (files created later are read from their start).
    End,
}

/// Follows the files a path pattern names.
pub struct Follower {
    base_dir: PathBuf,
    pattern: String,
    start_at: StartAt,
    max_line_bytes: usize,
    /// This subtask follows the files whose fingerprint hash falls on it.
    share: (u64, u64),
    files: HashMap<u64, Followed>,
    /// The first scan has happened (files found then obey `start_at`).
    started: bool,
    /// When the directory was last listed: open files are read at every poll, but new and
    /// renamed files are looked for only every `scan_every`.
    last_scan: Option<Instant>,
    scan_every: Duration,
    /// inotify (through `notify`) on the directory of the path: set when anything there
    /// changed. Without it (no such directory yet, or no inotify), the follower polls.
    watch: Option<(notify::RecommendedWatcher, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
    /// When files were last read without a change notice (a safety net for missed events).
    last_read: Instant,
    /// Use inotify (tests that check each step poll instead).
    notice: bool,
}

/// With inotify, files are read when a change is noticed, and at least this often.
const READ_ANYWAY_EVERY: Duration = Duration::from_millis(250);

/// How often the follower lists the files that match its path.
const SCAN_EVERY: Duration = Duration::from_millis(200);

#[cfg(unix)]
fn inode_of(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn inode_of(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl Follower {
    /// A follower of the files matching `pattern` (relative to `base_dir`), taking the files whose
    /// fingerprint hashes to `subtask` of `parallelism`.
    pub fn new(base_dir: &Path, pattern: &str, start_at: StartAt, max_line_bytes: usize, subtask: usize, parallelism: usize) -> Self {
        Follower {
            base_dir: base_dir.to_path_buf(),
            pattern: pattern.to_string(),
            start_at,
            max_line_bytes,
            share: (subtask as u64, parallelism.max(1) as u64),
            files: HashMap::new(),
            started: false,
            last_scan: None,
            scan_every: SCAN_EVERY,
            watch: None,
            last_read: Instant::now(),
            notice: true,
        }
    }

    /// Starts watching the directory of the path with inotify, when it exists.
    fn watch(&mut self) {
        use notify::Watcher;
        let root = super::discover::root_of(&self.base_dir, &self.pattern);
        let dir = if root.is_dir() { root } else { root.parent().map(Path::to_path_buf).unwrap_or(root) };
        if !dir.is_dir() {
            return;
        }
        let dirty = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = dirty.clone();
        let handler = move |_: notify::Result<notify::Event>| flag.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut w) = notify::recommended_watcher(handler)
            && w.watch(&dir, notify::RecursiveMode::Recursive).is_ok()
        {
            self.watch = Some((w, dirty));
        }
    }

    /// Lists the files at every poll (tests that check each step).
    #[cfg(test)]
    fn scanning_always(mut self) -> Self {
        self.scan_every = Duration::ZERO;
        self.notice = false;
        self
    }

    /// Looks for new and moved files, reads what was appended, and returns the complete lines,
    /// in order per file.
    pub fn poll(&mut self) -> std::io::Result<Vec<Event>> {
        self.poll_files(false)
    }

    /// Reads whatever is there now, notice or not (the source is stopping).
    pub fn poll_all(&mut self) -> std::io::Result<Vec<Event>> {
        self.last_scan = None;
        self.poll_files(true)
    }

    fn poll_files(&mut self, force: bool) -> std::io::Result<Vec<Event>> {
        if self.notice && self.watch.is_none() && self.last_scan.is_none() && !force {
            self.watch();
        }
        if let Some((_, dirty)) = &self.watch {
            // Nothing changed (and the safety net is not due): nothing to read.
            if !dirty.swap(false, std::sync::atomic::Ordering::Relaxed) && !force && self.last_read.elapsed() < READ_ANYWAY_EVERY {
                return Ok(Vec::new());
            }
        }
        self.last_read = Instant::now();
        // A file truncated in place shows up at once: list the files again then, too.
        let truncated =
            self.files.values().any(|f| f.file.as_ref().and_then(|h| h.metadata().ok()).is_some_and(|m| m.len() < f.offset + f.partial.len() as u64));
        if truncated || self.last_scan.is_none_or(|t| t.elapsed() >= self.scan_every) {
            self.scan();
            self.last_scan = Some(Instant::now());
        }
        let mut events = Vec::new();
        // Older files first (a rotated file's tail before the new file), so that event time
        // moves forward as the files were written.
        let mut ids: Vec<(std::time::SystemTime, PathBuf, u64)> = self
            .files
            .iter()
            .filter_map(|(id, f)| {
                let modified = f.file.as_ref()?.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                Some((modified, f.path.clone(), *id))
            })
            .collect();
        ids.sort();
        let ids: Vec<u64> = ids.into_iter().map(|(_, _, id)| id).collect();
        for id in ids {
            let f = self.files.get_mut(&id).expect("listed");
            let quiet = f.last_data.elapsed();
            // A file quiet for long is closed too (it is opened again when it grows), so that a
            // directory of old logs does not hold a descriptor per file.
            if !read_new(id, f, self.max_line_bytes, &mut events)? || (!f.present && quiet > RETIRE_AFTER) || quiet > CLOSE_QUIET_AFTER {
                // Gone (rotated away and drained, or its content replaced): remember where it
                // ended, so that a copy of it found later is not read again.
                f.file = None;
            }
        }
        Ok(events)
    }

    /// Emits the partial last line of every file (the source is stopping).
    pub fn flush(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for f in self.files.values_mut() {
            if !f.partial.is_empty() && !f.skipping {
                f.lines += 1;
                let bytes = std::mem::take(&mut f.partial);
                let offset = f.offset;
                f.offset += bytes.len() as u64;
                events.push(Event::Line { path: f.path.clone(), line: f.lines, offset, bytes });
            }
        }
        events
    }

    /// The position in every file known (open or finished), for a checkpoint.
    pub fn positions(&self) -> Vec<FilePosition> {
        let mut out: Vec<FilePosition> = self
            .files
            .iter()
            .map(|(id, f)| FilePosition {
                fingerprint: *id,
                path: f.path.clone(),
                inode: f.inode,
                offset: f.offset,
                lines: f.lines,
                skipping: f.skipping,
                first_line: f.first_line,
                before: f.file.as_ref().and_then(|h| bytes_before(h, f.offset)),
            })
            .collect();
        out.sort_by_key(|p| p.fingerprint);
        out
    }

    /// Resumes from `positions` (taken by [`Follower::positions`]) before the first poll: each
    /// known file is read on from where it was left, files that are not known are read from
    /// their start (whatever `start_at` says: they came after the checkpoint).
    pub fn restore(&mut self, positions: &[FilePosition]) {
        self.started = true;
        for p in positions {
            let f = Followed {
                path: p.path.clone(),
                file: None,
                inode: p.inode,
                offset: p.offset,
                partial: Vec::new(),
                lines: p.lines,
                skipping: p.skipping,
                present: false,
                last_data: Instant::now(),
                first_line: p.first_line,
                restored: Some(RestoreCheck { before: p.before }),
            };
            self.files.insert(p.fingerprint, f);
        }
    }

    /// Number of files open now.
    pub fn followed(&self) -> usize {
        self.files.values().filter(|f| f.file.is_some()).count()
    }

    fn scan(&mut self) {
        let first = !self.started;
        self.started = true;
        for f in self.files.values_mut() {
            f.present = false;
        }
        let paths = super::discover::discover(&self.base_dir, &self.pattern).unwrap_or_default();
        for path in paths {
            let Ok(mut file) = File::open(&path) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            let Some(first_line) = fingerprint(&mut file) else { continue };
            if first_line % self.share.1 != self.share.0 {
                continue;
            }
            let inode = inode_of(&meta);
            if self.resume_restored(first_line, inode, &mut file, &meta, &path) {
                continue;
            }
            // Files that start with the same line (a CSV header, a log banner) but are other
            // files get the fingerprint combined with their inode.
            let own = mix(first_line, inode);
            let id = if self.files.contains_key(&own) { own } else { first_line };
            // The same inode with other content now (rewritten in place): the old entry is done.
            for (other, f) in self.files.iter_mut() {
                if *other != id && f.file.is_some() && f.inode == inode {
                    f.file = None;
                }
            }
            match self.files.get_mut(&id) {
                Some(f) if f.file.is_some() && f.inode == inode => {
                    // The same file, maybe renamed: keep reading through the open handle.
                    f.present = true;
                    f.path = path;
                }
                Some(f) if f.file.is_some() => {
                    // Another file with the same first line. If ours was truncated, this is its
                    // copy (copytruncate): go on reading there. If it holds what we read, it is
                    // a copy: ignore it. Otherwise it is another file.
                    let read_to = f.offset + f.partial.len() as u64;
                    let ours = f.file.as_ref().and_then(|h| h.metadata().ok()).map_or(0, |m| m.len());
                    if ours < read_to && meta.len() >= f.offset {
                        let _ = file.seek(SeekFrom::Start(read_to));
                        (f.file, f.inode, f.path, f.present) = (Some(file), inode, path, true);
                    } else if !same_prefix(f.file.as_mut(), &mut file, read_to.min(meta.len())) {
                        let new = self.follow(path, file, &meta, inode, first, first_line);
                        self.files.insert(own, new);
                    }
                }
                Some(f) if f.restored.is_some() => {
                    // Known from a checkpoint, but this is not that file (it was checked above):
                    // another file with the same first line.
                    let new = self.follow(path, file, &meta, inode, first, first_line);
                    self.files.insert(own, new);
                }
                Some(f) if f.inode == inode => {
                    // Known and closed, and back (renamed into the pattern again, or grown).
                    if meta.len() > f.offset {
                        let _ = file.seek(SeekFrom::Start(f.offset));
                        f.partial.clear();
                        (f.file, f.path, f.present, f.last_data) = (Some(file), path, true, Instant::now());
                    }
                }
                Some(_) => {
                    // Known and closed, but this is another file with the same first line.
                    let new = self.follow(path, file, &meta, inode, first, first_line);
                    self.files.insert(own, new);
                }
                None => {
                    let new = self.follow(path, file, &meta, inode, first, first_line);
                    self.files.insert(id, new);
                }
            }
        }
    }

    /// After a restore: when `file` is the file of a restored position (same first line, and
    /// the same inode or the same bytes before the offset), reads on from that position.
    fn resume_restored(&mut self, first_line: u64, inode: (u64, u64), file: &mut File, meta: &std::fs::Metadata, path: &Path) -> bool {
        let candidates = |by_inode: bool| {
            self.files
                .iter()
                .filter(|(_, f)| f.first_line == first_line && meta.len() >= f.offset)
                .filter(|(_, f)| match f.restored {
                    Some(_) if by_inode => f.inode == inode,
                    Some(RestoreCheck { before: Some(h) }) => bytes_before(file, f.offset) == Some(h),
                    _ => false,
                })
                .map(|(k, _)| *k)
                .next()
        };
        let Some(key) = candidates(true).or_else(|| candidates(false)) else { return false };
        let Ok(handle) = file.try_clone() else { return false };
        let f = self.files.get_mut(&key).expect("found");
        let _ = file.seek(SeekFrom::Start(f.offset));
        f.restored = None;
        (f.file, f.inode, f.path, f.present, f.last_data) = (Some(handle), inode, path.to_path_buf(), true, Instant::now());
        true
    }

    /// A newly found file, positioned where reading starts.
    fn follow(&self, path: PathBuf, mut file: File, meta: &std::fs::Metadata, inode: (u64, u64), first: bool, first_line: u64) -> Followed {
        let offset = match (first, self.start_at) {
            (true, StartAt::End) => meta.len(),
            _ => 0,
        };
        let lines = if offset > 0 { count_lines(&path, offset) } else { 0 };
        let _ = file.seek(SeekFrom::Start(offset));
        let last_data = Instant::now();
        Followed { path, file: Some(file), inode, offset, partial: Vec::new(), lines, skipping: false, present: true, last_data, first_line, restored: None }
    }
}

/// A fingerprint and an inode combined: the id of a file whose first line another file shares.
fn mix(fingerprint: u64, inode: (u64, u64)) -> u64 {
    stable_hash(&[&fingerprint.to_le_bytes(), &inode.0.to_le_bytes(), &inode.1.to_le_bytes()])
}

/// FNV-1a: a hash whose values stay the same across builds and Rust releases (positions in a
/// checkpoint are compared with files found after a restart, maybe by another build).
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hash of the (up to 64) bytes of `file` just before `offset`; None when they cannot be read.
#[cfg(unix)]
fn bytes_before(file: &File, offset: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let from = offset.saturating_sub(64);
    let mut buf = vec![0u8; (offset - from) as usize];
    file.read_exact_at(&mut buf, from).ok()?;
    Some(stable_hash(&[&buf]))
}

#[cfg(not(unix))]
fn bytes_before(_: &File, _: u64) -> Option<u64> {
    None
}

/// True when the first `n` bytes (at most 64 KiB compared) of two files are equal.
fn same_prefix(a: Option<&mut File>, b: &mut File, n: u64) -> bool {
    let Some(a) = a else { return false };
    let n = n.min(64 << 10) as usize;
    let read = |f: &mut File| -> Option<Vec<u8>> {
        let pos = f.stream_position().ok()?;
        f.seek(SeekFrom::Start(0)).ok()?;
        let mut buf = vec![0u8; n];
        let got = f.read(&mut buf).ok()?;
        buf.truncate(got);
        f.seek(SeekFrom::Start(pos)).ok()?;
        Some(buf)
    };
    matches!((read(a), read(b)), (Some(x), Some(y)) if x == y)
}

/// The fingerprint of a file's content: a hash of its first line, or of its first 256 bytes when
/// that line is longer; None while it has neither (it waits). Reads from the start, whatever the
/// file's position. Files that start with the same line (a fixed header) look alike.
fn fingerprint(file: &mut File) -> Option<u64> {
    let pos = file.stream_position().ok()?;
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut head = vec![0u8; FINGERPRINT_BYTES];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    file.seek(SeekFrom::Start(pos)).ok()?;
    let head = &head[..got];
    // The first line, or its first 256 bytes: what a file starts with never changes as it grows.
    let key = match memchr::memchr(b'\n', head) {
        Some(nl) => &head[..=nl],
        None if got == FINGERPRINT_BYTES => head,
        None => return None,
    };
    Some(stable_hash(&[key]))
}

/// Reads what was appended to `f` (fingerprint `id`) and adds its complete lines. False when the
/// file was truncated and now holds other content: it is done (the scan finds the new content
/// by its own fingerprint).
fn read_new(id: u64, f: &mut Followed, max_line_bytes: usize, events: &mut Vec<Event>) -> std::io::Result<bool> {
    let Some(file) = f.file.as_mut() else { return Ok(false) };
    let len = file.metadata()?.len();
    let read_to = f.offset + f.partial.len() as u64;
    if len < read_to {
        // Truncated in place. With the same first bytes again, read it anew; otherwise it is
        // another file now.
        if fingerprint(file) != Some(id) {
            return Ok(false);
        }
        f.offset = 0;
        f.partial.clear();
        f.lines = 0;
        f.skipping = false;
        file.seek(SeekFrom::Start(0))?;
    } else if len == read_to {
        return Ok(true);
    }
    let mut buf = vec![0u8; READ_BYTES];
    let n = file.read(&mut buf)?;
    if n == 0 {
        return Ok(true);
    }
    f.last_data = Instant::now();
    let mut rest = &buf[..n];
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        let (piece, after) = (&rest[..nl], &rest[nl + 1..]);
        if f.skipping {
            f.skipping = false;
            f.offset += f.partial.len() as u64 + piece.len() as u64 + 1;
            f.partial.clear();
        } else {
            f.partial.extend_from_slice(piece);
            let bytes = std::mem::take(&mut f.partial);
            let offset = f.offset;
            f.offset += bytes.len() as u64 + 1;
            f.lines += 1;
            if bytes.len() > max_line_bytes {
                events.push(Event::TooLong { path: f.path.clone(), line: f.lines, offset, head: bytes[..max_line_bytes].to_vec() });
            } else {
                events.push(Event::Line { path: f.path.clone(), line: f.lines, offset, bytes });
            }
        }
        rest = after;
    }
    if f.skipping {
        // Still inside a line that was too long: drop its bytes, counting them as read.
        f.offset += rest.len() as u64;
    } else {
        f.partial.extend_from_slice(rest);
        if f.partial.len() > max_line_bytes {
            f.lines += 1;
            let head = f.partial[..max_line_bytes].to_vec();
            events.push(Event::TooLong { path: f.path.clone(), line: f.lines, offset: f.offset, head });
            f.offset += f.partial.len() as u64;
            f.partial.clear();
            f.skipping = true;
        }
    }
    Ok(true)
}

/// Lines (newlines) in the first `offset` bytes of a file.
fn count_lines(path: &Path, offset: u64) -> u64 {
    super::records::LineCounter::new(path).line_at(offset) - 1
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn lines_of(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Line { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
                Event::TooLong { head, .. } => format!("TOO LONG {}", String::from_utf8_lossy(head)),
            })
            .collect()
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn follows_appends_holds_partial_lines_and_cuts_long_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "first line\nsec");
        let mut f = Follower::new(dir.path(), "*.log", StartAt::Beginning, 10, 0, 1).scanning_always();
        assert_eq!(lines_of(&f.poll().unwrap()), ["first line"]);
        append(&log, "ond\n0123456789abcdef");
        assert_eq!(lines_of(&f.poll().unwrap()), ["second", "TOO LONG 0123456789"]);
        append(&log, "ghij\nlast\n");
        let events = f.poll().unwrap();
        assert_eq!(lines_of(&events), ["last"]);
        assert!(matches!(&events[0], Event::Line { line: 4, offset: 39, .. }), "{events:?}");
    }

    #[test]
    fn files_that_share_their_first_line_are_each_read() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.csv"), "id,name\n1,a\n");
        append(&dir.path().join("b.csv"), "id,name\n2,b\n");
        let mut f = Follower::new(dir.path(), "*.csv", StartAt::Beginning, 100, 0, 1).scanning_always();
        let mut lines = lines_of(&f.poll().unwrap());
        // A new file that only has the header yet, then its rows.
        append(&dir.path().join("c.csv"), "id,name\n");
        lines.extend(lines_of(&f.poll().unwrap()));
        append(&dir.path().join("c.csv"), "3,c\n");
        lines.extend(lines_of(&f.poll().unwrap()));
        lines.sort();
        assert_eq!(lines, ["1,a", "2,b", "3,c", "id,name", "id,name", "id,name"]);
    }

    #[test]
    fn a_file_rewritten_in_place_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "first version line one\n");
        let mut f = Follower::new(dir.path(), "app.log", StartAt::Beginning, 100, 0, 1).scanning_always();
        assert_eq!(lines_of(&f.poll().unwrap()), ["first version line one"]);
        // Rewritten in place, and longer than before: no truncation is seen.
        std::fs::write(&log, "second version, a longer first line\nand more\n").unwrap();
        assert_eq!(lines_of(&f.poll().unwrap()), ["second version, a longer first line", "and more"]);
    }

    #[test]
    fn start_at_end_skips_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "old 1\nold 2\n");
        let mut f = Follower::new(dir.path(), "app.log", StartAt::End, 100, 0, 1).scanning_always();
        assert!(f.poll().unwrap().is_empty());
        append(&log, "new\n");
        let events = f.poll().unwrap();
        assert!(matches!(&events[..], [Event::Line { line: 3, offset: 12, .. }]), "{events:?}");
    }

    #[test]
    fn a_restore_after_rotation_finds_each_file_that_shares_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("data.csv");
        append(&live, "id,name\n1,a\n2,b\n");
        let mut f = Follower::new(dir.path(), "data.csv*", StartAt::Beginning, 100, 0, 1).scanning_always();
        assert_eq!(lines_of(&f.poll().unwrap()), ["id,name", "1,a", "2,b"]);
        let positions = f.positions();
        // After the checkpoint: one more row, then logrotate's rename + create; the new file has
        // the same header and is already longer than the old one was.
        append(&live, "3,c\n");
        std::fs::rename(&live, dir.path().join("data.csv.1")).unwrap();
        append(&live, "id,name\n4,dddddddddd\n5,eeeeeeeeee\n");
        let mut restored = Follower::new(dir.path(), "data.csv*", StartAt::Beginning, 100, 0, 1).scanning_always();
        restored.restore(&positions);
        let mut lines = lines_of(&restored.poll().unwrap());
        lines.sort();
        assert_eq!(lines, ["3,c", "4,dddddddddd", "5,eeeeeeeeee", "id,name"]);

        // A copy (another inode) of the file is recognised by the bytes before the offset.
        let copied = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("data.csv.1"), copied.path().join("data.csv")).unwrap();
        let mut moved = Follower::new(copied.path(), "data.csv", StartAt::Beginning, 100, 0, 1).scanning_always();
        moved.restore(&positions);
        assert_eq!(lines_of(&moved.poll().unwrap()), ["3,c"]);
    }

    /// What a test does to the files, one step at a time.
    #[derive(Clone, Debug)]
    enum Op {
        /// Append n lines (the last maybe without its newline yet).
        Write(usize, bool),
        /// logrotate's default: rename to .1 (older .N shift), create a new file.
        Rotate,
        /// Copy to .1, then truncate in place.
        CopyTruncate,
        /// Delete the oldest rotated file.
        DeleteOld,
        /// Nothing happens; the follower polls.
        Pause,
        /// The follower's positions are taken, and a new follower restored from them goes on
        /// (a restart from a checkpoint).
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..20, any::<bool>()).prop_map(|(n, partial)| Op::Write(n, partial)),
            2 => Just(Op::Rotate),
            1 => Just(Op::CopyTruncate),
            1 => Just(Op::DeleteOld),
            2 => Just(Op::Pause),
            1 => Just(Op::Restart),
        ]
    }

    /// Runs `ops` against a real directory while polling; returns the lines written and read.
    fn simulate(ops: &[Op]) -> (Vec<String>, Vec<String>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.log");
        let mut f = Follower::new(dir.path(), "app.log*", StartAt::Beginning, 1 << 16, 0, 1).scanning_always();
        let (mut written, mut read) = (Vec::new(), Vec::new());
        let mut seq = 0;
        let mut open_line = false;
        let mut truncated = false;
        let mut rotated = 0;
        for op in ops {
            match op {
                Op::Write(n, partial) => {
                    let mut text = String::new();
                    for i in 0..*n {
                        if !open_line {
                            // Lines are unique and long enough that every file has a distinct
                            // fingerprint once it has a first line.
                            text += &format!("line {seq:06} of the test sequence, padded so that fingerprints differ: {seq:06}");
                            written.push(format!("line {seq:06} of the test sequence, padded so that fingerprints differ: {seq:06}"));
                            seq += 1;
                        }
                        if i + 1 < *n || !partial {
                            text.push('\n');
                            open_line = false;
                        } else {
                            open_line = true;
                        }
                    }
                    append(&live, &text);
                }
                Op::Rotate | Op::CopyTruncate if open_line || !live.exists() => {}
                Op::Rotate => {
                    for k in (1..=rotated).rev() {
                        let _ = std::fs::rename(dir.path().join(format!("app.log.{k}")), dir.path().join(format!("app.log.{}", k + 1)));
                    }
                    if std::fs::rename(&live, dir.path().join("app.log.1")).is_ok() {
                        rotated += 1;
                    }
                    File::create(&live).unwrap();
                }
                Op::CopyTruncate => {
                    // logrotate's copytruncate: shift, copy to .1, empty the live file.
                    truncated = true;
                    for k in (1..=rotated).rev() {
                        let _ = std::fs::rename(dir.path().join(format!("app.log.{k}")), dir.path().join(format!("app.log.{}", k + 1)));
                    }
                    std::fs::copy(&live, dir.path().join("app.log.1")).unwrap();
                    rotated += 1;
                    std::fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(0).unwrap();
                }
                Op::DeleteOld => {
                    if rotated > 0 {
                        let _ = std::fs::remove_file(dir.path().join(format!("app.log.{rotated}")));
                        rotated -= 1;
                    }
                }
                Op::Pause => {}
                Op::Restart => {
                    let positions = f.positions();
                    f = Follower::new(dir.path(), "app.log*", StartAt::Beginning, 1 << 16, 0, 1).scanning_always();
                    f.restore(&positions);
                }
            }
            read.extend(lines_of(&f.poll().unwrap()));
        }
        if open_line {
            append(&live, "\n");
        }
        read.extend(lines_of(&f.poll().unwrap()));
        (written, read, truncated)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

        /// Every line written is read exactly once and in order, through rename + create,
        /// copytruncate (the copy is followed from where the live file was left; nothing is
        /// written between the copy and the truncation here, which logrotate cannot promise),
        /// deletion of rotated files, pauses, and restarts from the follower's positions.
        #[test]
        fn every_line_is_read_once_through_rotation(ops in prop::collection::vec(op(), 1..25)) {
            let (written, read, _) = simulate(&ops);
            prop_assert_eq!(read, written);
        }
    }
}
