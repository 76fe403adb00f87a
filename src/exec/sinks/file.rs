//! File sinks: CSV, Parquet and JSON lines, one part file per subtask in a directory, or one
//! file, optionally under Hive-style `key=value` directories (`partition_by`). Each file is
//! written under a hidden in-progress name and renamed on commit.
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::sink::{PendingCommit, Sink};
use crate::pipeline::SinkFormat;

/// A file sink's settings.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// The sink's name.
    pub name: String,
    /// Output format (not stdout).
    pub format: SinkFormat,
    /// The file (single_file) or the directory of part files.
    pub path: PathBuf,
    /// Write exactly one file.
    pub single_file: bool,
    /// CSV: write a header line.
    pub header: bool,
    /// Columns whose values name `key=value` directories (not written into the files).
    pub partition_by: Vec<String>,
    /// Start a new part file once the current one has this many bytes.
    pub roll_bytes: Option<u64>,
    /// Start a new part file once the current one is this old (checked at each write).
    pub roll_interval: Option<std::time::Duration>,
}

impl SinkConfig {
    /// Part files roll over: each is made visible when it is closed (and the parts of an earlier
    /// run are removed before the job starts, see the runtime).
    pub fn rolls(&self) -> bool {
        self.roll_bytes.is_some() || self.roll_interval.is_some()
    }
}

// Unbuffered files: polars writes whole serialised batches, and an unbuffered write reports
// its error (a full disk) instead of losing it in a buffer dropped at the end. One writer per
// open file, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Writer {
    Csv(polars::io::csv::write::BatchedWriter<File>),
    Parquet(polars::io::parquet::write::BatchedWriter<File>),
    Jsonl(polars::io::json::BatchedWriter<File>),
    Ipc(polars::io::ipc::BatchedWriter<File>),
}

/// One open output file.
struct Output {
    writer: Writer,
    temp: PathBuf,
    target: PathBuf,
    opened: std::time::Instant,
}

/// One subtask of a file sink.
pub struct FileSink {
    config: SinkConfig,
    subtask: usize,
    /// Schema of the rows in the files (partition columns removed).
    file_schema: SchemaRef,
    /// Open files by partition directory ("" without partitions).
    outputs: HashMap<String, Output>,
    /// Rolling: the number of the next part file of each partition directory.
    parts: HashMap<String, usize>,
}

/// A partition value as one safe path segment: bytes outside `[A-Za-z0-9_.-]` become `%XX`,
/// values made only of dots are fully escaped (no `.` or `..` segment), null is Hive's
/// `__HIVE_DEFAULT_PARTITION__`, and very long values are cut and made unique with a hash.
pub fn escape_partition_value(value: Option<&str>) -> String {
    let Some(value) = value else {
        return "__HIVE_DEFAULT_PARTITION__".into();
    };
    let only_dots = !value.is_empty() && value.bytes().all(|b| b == b'.');
    let mut out = String::new();
    for b in value.bytes() {
        if (b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') && !only_dots {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        let mut cut = 180;
        while !out.is_char_boundary(cut) || out[..cut].ends_with('%') || out[..cut.saturating_sub(1)].ends_with('%') {
            cut -= 1;
        }
        out = format!("{}~{:016x}", &out[..cut], h.finish());
    }
    out
}

impl FileSink {
    /// Subtask `subtask` of the sink, writing rows of `schema`.
    pub fn new(config: SinkConfig, subtask: usize, schema: SchemaRef) -> Self {
        let mut file_schema = (*schema).clone();
        for c in &config.partition_by {
            file_schema.shift_remove(c.as_str());
        }
        FileSink { config, subtask, file_schema: Arc::new(file_schema), outputs: HashMap::new(), parts: HashMap::new() }
    }

    fn fail(&self, target: &std::path::Path, e: impl std::fmt::Display) -> Error {
        Error::execution("sink", &self.config.name, format!("{}: {e}", target.display()))
    }

    /// The output file for partition directory `dir`, opened on first use.
    fn output(&mut self, dir: &str) -> Result<&mut Output> {
        if !self.outputs.contains_key(dir) {
            let ext = match self.config.format {
                SinkFormat::Csv => "csv",
                SinkFormat::Parquet => "parquet",
                SinkFormat::Ipc => "arrow",
                _ => "jsonl",
            };
            let name = if self.config.rolls() {
                let seq = self.parts.entry(dir.to_string()).or_insert(0);
                *seq += 1;
                format!("part-{:05}-{:06}.{ext}", self.subtask, seq)
            } else {
                format!("part-{:05}.{ext}", self.subtask)
            };
            let target = if self.config.single_file { self.config.path.clone() } else { self.config.path.join(dir).join(name) };
            let parent = target.parent().map(PathBuf::from).unwrap_or_default();
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
            }
            let file_name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let temp = target.with_file_name(format!(".{file_name}.inprogress-{}", std::process::id()));
            let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
            let schema = &self.file_schema;
            let writer = match self.config.format {
                SinkFormat::Csv => Writer::Csv(CsvWriter::new(file).include_header(self.config.header).batched(schema).map_err(|e| self.fail(&target, e))?),
                SinkFormat::Parquet => Writer::Parquet(ParquetWriter::new(file).batched(schema).map_err(|e| self.fail(&target, e))?),
                SinkFormat::Ipc => {
                    let arrow = schema.to_arrow(CompatLevel::newest());
                    let fields = polars_arrow::io::ipc::write::default_ipc_fields(arrow.iter_values());
                    Writer::Ipc(IpcWriter::new(file).batched(schema, fields).map_err(|e| self.fail(&target, e))?)
                }
                _ => Writer::Jsonl(polars::io::json::BatchedWriter::new(file)),
            };
            self.outputs.insert(dir.to_string(), Output { writer, temp, target, opened: std::time::Instant::now() });
        }
        Ok(self.outputs.get_mut(dir).expect("just inserted"))
    }

    fn write_to(&mut self, dir: &str, batch: &DataFrame) -> Result<()> {
        let name = self.config.name.clone();
        let (roll_bytes, roll_interval) = (self.config.roll_bytes, self.config.roll_interval);
        let out = self.output(dir)?;
        let result = match &mut out.writer {
            Writer::Csv(w) => w.write_batch(batch),
            Writer::Parquet(w) => w.write_batch(batch),
            Writer::Jsonl(w) => w.write_batch(batch),
            Writer::Ipc(w) => w.write_batch(batch),
        };
        result.map_err(|e| Error::execution("sink", &name, format!("{}: {e}", out.target.display())))?;
        let size = std::fs::metadata(&out.temp).map_or(0, |m| m.len());
        let full = roll_bytes.is_some_and(|b| size >= b) || roll_interval.is_some_and(|t| out.opened.elapsed() >= t);
        if full {
            // Close this part and make it visible now; the next write opens the next part.
            let out = self.outputs.remove(dir).expect("written above");
            let (temp, target) = (out.temp.clone(), out.target.clone());
            close(out.writer).map_err(|e| self.fail(&target, e))?;
            std::fs::rename(&temp, &target).map_err(|e| Error::io(&target, e))?;
        }
        Ok(())
    }
}

/// Flushes and closes a writer (footers of Parquet and IPC files).
fn close(writer: Writer) -> PolarsResult<()> {
    match writer {
        Writer::Csv(mut w) => w.finish(),
        Writer::Parquet(w) => w.finish().map(|_| ()),
        Writer::Jsonl(_) => Ok(()),
        Writer::Ipc(mut w) => w.finish(),
    }
}

impl Sink for FileSink {
    fn open(&mut self) -> Result<()> {
        // Without partitions the (possibly empty) part file always exists.
        if self.config.partition_by.is_empty() {
            self.output("")?;
        }
        Ok(())
    }

    fn write(&mut self, batch: &DataFrame) -> Result<()> {
        if self.config.partition_by.is_empty() {
            return self.write_to("", batch);
        }
        let keys = self.config.partition_by.clone();
        let parts = batch.partition_by_stable(keys.iter().map(String::as_str), true).map_err(|e| self.fail(&self.config.path, e))?;
        for part in parts {
            let mut dir = PathBuf::new();
            for key in &keys {
                let value = part.column(key).and_then(|c| c.get(0)).map_err(|e| self.fail(&self.config.path, e))?;
                let text = match value {
                    AnyValue::Null => None,
                    AnyValue::String(s) => Some(s.to_string()),
                    other => Some(other.to_string()),
                };
                dir.push(format!("{}={}", escape_partition_value(Some(key)), escape_partition_value(text.as_deref())));
            }
            let rows = part.drop_many(keys.iter().map(String::as_str));
            self.write_to(&dir.to_string_lossy(), &rows)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<PendingCommit>> {
        let mut pending = Vec::new();
        for (_, out) in std::mem::take(&mut self.outputs) {
            if let Err(e) = close(out.writer) {
                let _ = std::fs::remove_file(&out.temp);
                return Err(self.fail(&out.target, e));
            }
            // Rolling sinks removed the old parts when they started.
            let part_dir = (!self.config.single_file && !self.config.rolls()).then(|| self.config.path.clone());
            pending.push(PendingCommit { temp: out.temp, target: out.target, part_dir });
        }
        Ok(pending)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Still writing when dropped: the job failed; leave nothing that looks like output.
        for out in self.outputs.values() {
            let _ = std::fs::remove_file(&out.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_safe_path_segments() {
        assert_eq!(escape_partition_value(Some("eu-west_1.a")), "eu-west_1.a");
        assert_eq!(escape_partition_value(Some("..")), "%2E%2E");
        assert_eq!(escape_partition_value(Some(".")), "%2E");
        assert_eq!(escape_partition_value(Some("a/../b")), "a%2F..%2Fb");
        assert_eq!(escape_partition_value(Some("nul\0x")), "nul%00x");
        assert_eq!(escape_partition_value(None), "__HIVE_DEFAULT_PARTITION__");
        let long = "é".repeat(300);
        let a = escape_partition_value(Some(&long));
        assert!(a.len() <= 200 && a.contains('~'), "{a}");
        assert_ne!(a, escape_partition_value(Some(&"é".repeat(301))));
        for v in ["..", "/", "a/b", "\0", &long] {
            let seg = escape_partition_value(Some(v));
            assert!(!seg.contains('/') && seg != "." && seg != ".." && !seg.contains('\0'));
        }
    }
}
