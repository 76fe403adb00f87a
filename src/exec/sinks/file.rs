//! File sinks: CSV, Parquet and JSON lines, one part file per subtask in a directory, or one
//! file. Each is written under a hidden in-progress name and renamed on commit.
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
}

// Unbuffered files: polars writes whole serialised batches, and an unbuffered write reports
// its error (a full disk) instead of losing it in a buffer dropped at the end. One writer per
// sink subtask, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Writer {
    Csv(polars::io::csv::write::BatchedWriter<File>),
    Parquet(polars::io::parquet::write::BatchedWriter<File>),
    Jsonl(polars::io::json::BatchedWriter<File>),
}

/// One subtask of a file sink.
pub struct FileSink {
    config: SinkConfig,
    schema: SchemaRef,
    writer: Option<Writer>,
    temp: PathBuf,
    target: PathBuf,
}

impl FileSink {
    /// Subtask `subtask` of the sink, writing rows of `schema`.
    pub fn new(config: SinkConfig, subtask: usize, schema: SchemaRef) -> Self {
        let ext = match config.format {
            SinkFormat::Csv => "csv",
            SinkFormat::Parquet => "parquet",
            _ => "jsonl",
        };
        let target = if config.single_file { config.path.clone() } else { config.path.join(format!("part-{subtask:05}.{ext}")) };
        let file_name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let temp = target.with_file_name(format!(".{file_name}.inprogress-{}", std::process::id()));
        FileSink { config, schema, writer: None, temp, target }
    }

    fn fail(&self, e: impl std::fmt::Display) -> Error {
        Error::execution("sink", &self.config.name, format!("{}: {e}", self.target.display()))
    }
}

impl Sink for FileSink {
    fn open(&mut self) -> Result<()> {
        let dir = self.target.parent().map(PathBuf::from).unwrap_or_default();
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let file = File::create(&self.temp).map_err(|e| Error::io(&self.temp, e))?;
        let writer = match self.config.format {
            SinkFormat::Csv => Writer::Csv(CsvWriter::new(file).include_header(self.config.header).batched(&self.schema).map_err(|e| self.fail(e))?),
            SinkFormat::Parquet => Writer::Parquet(ParquetWriter::new(file).batched(&self.schema).map_err(|e| self.fail(e))?),
            _ => Writer::Jsonl(polars::io::json::BatchedWriter::new(file)),
        };
        self.writer = Some(writer);
        Ok(())
    }

    fn write(&mut self, batch: &DataFrame) -> Result<()> {
        let result = match self.writer.as_mut() {
            Some(Writer::Csv(w)) => w.write_batch(batch),
            Some(Writer::Parquet(w)) => w.write_batch(batch),
            Some(Writer::Jsonl(w)) => w.write_batch(batch),
            None => return Err(self.fail("write before open")),
        };
        result.map_err(|e| self.fail(e))
    }

    fn finish(&mut self) -> Result<Option<PendingCommit>> {
        let result = match self.writer.take() {
            Some(Writer::Csv(mut w)) => w.finish(),
            Some(Writer::Parquet(w)) => w.finish().map(|_| ()),
            Some(Writer::Jsonl(_)) | None => Ok(()),
        };
        result.map_err(|e| self.fail(e))?;
        let part_dir = (!self.config.single_file).then(|| self.config.path.clone());
        Ok(Some(PendingCommit { temp: self.temp.clone(), target: self.target.clone(), part_dir }))
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Still writing when dropped: the job failed; leave nothing that looks like output.
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
