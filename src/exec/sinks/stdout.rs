//! The terminal sink: a pretty table printed at the end, or CSV / JSON lines streamed.
use std::io::Write;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::sink::{PendingCommit, Sink};
use crate::pipeline::StdoutStyle;

/// Prints rows on stdout. Runs with parallelism 1 so rows are never interleaved.
pub struct StdoutSink {
    name: String,
    style: StdoutStyle,
    schema: SchemaRef,
    table: Vec<DataFrame>,
    wrote_header: bool,
}

impl StdoutSink {
    /// A sink printing rows of `schema` in `style`.
    pub fn new(name: String, style: StdoutStyle, schema: SchemaRef) -> Self {
        StdoutSink { name, style, schema, table: Vec::new(), wrote_header: false }
    }

    fn fail(&self, e: impl std::fmt::Display) -> Error {
        Error::execution("sink", &self.name, e)
    }

    fn write_csv(&mut self, batch: &DataFrame) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let mut df = batch.clone();
        CsvWriter::new(&mut out).include_header(!self.wrote_header).finish(&mut df).map_err(|e| self.fail(e))?;
        self.wrote_header = true;
        Ok(())
    }
}

impl Sink for StdoutSink {
    fn open(&mut self) -> Result<()> {
        Ok(())
    }

    fn write(&mut self, batch: &DataFrame) -> Result<()> {
        match self.style {
            StdoutStyle::Table => {
                self.table.push(batch.clone());
                Ok(())
            }
            StdoutStyle::Csv => self.write_csv(batch),
            StdoutStyle::Jsonl => {
                let mut out = std::io::stdout().lock();
                let mut df = batch.clone();
                JsonWriter::new(&mut out).with_json_format(JsonFormat::JsonLines).finish(&mut df).map_err(|e| self.fail(e))
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<PendingCommit>> {
        match self.style {
            StdoutStyle::Csv if !self.wrote_header => self.write_csv(&DataFrame::empty_with_schema(&self.schema))?,
            StdoutStyle::Table => {
                let mut all = DataFrame::empty_with_schema(&self.schema);
                for df in self.table.drain(..) {
                    all.vstack_mut_owned(df).map_err(|e| Error::execution("sink", &self.name, e))?;
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{all}").map_err(|e| self.fail(e))?;
            }
            _ => {}
        }
        std::io::stdout().flush().map_err(|e| self.fail(e))?;
        Ok(Vec::new())
    }
}
