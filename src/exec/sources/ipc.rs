//! Arrow IPC files (Feather v2): one split per file, read memory-mapped by polars' IPC reader.
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::discover::Split;
use super::{Parsed, SourceConfig, SplitReader};
use crate::error::{Error, Result};
use crate::exec::dead_letter::{ErrorKind, Rejection};
use crate::exec::guard::catch_panic;
use crate::pipeline::OnError;
use crate::plan::expr::clean;

/// The schema stored in an IPC file.
pub fn file_schema(path: &Path) -> std::result::Result<Schema, String> {
    let file = File::open(path).map_err(|e| format!("{}: cannot open the file: {e}", path.display()))?;
    let mut reader = IpcReader::new(file);
    match catch_panic(|| reader.schema()) {
        Ok(Ok(arrow)) => Ok(Schema::from_arrow_schema(&arrow)),
        Ok(Err(e)) => Err(format!("{}: not a readable Arrow IPC file: {}", path.display(), clean(&e))),
        Err(p) => Err(format!("{}: not a readable Arrow IPC file: {p}", path.display())),
    }
}

/// One split per file; a file whose schema differs from the source's, or that cannot be read,
/// is an error or (when the source skips bad input) a split that carries the rejection.
pub fn file_splits(config: &SourceConfig) -> Result<Vec<Split>> {
    let mut splits = Vec::new();
    for (file_index, path) in config.files.iter().enumerate() {
        let problem = match file_schema(path) {
            Ok(s) if s == *config.raw_schema => None,
            Ok(s) => {
                let names = |s: &Schema| s.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ");
                let message = format!("schema [{}] differs from [{}] of source '{}'", names(&s), names(&config.raw_schema), config.name);
                Some(Rejection::of_file(path, ErrorKind::SchemaMismatch, message))
            }
            Err(m) => Some(Rejection::of_file(path, ErrorKind::CorruptIpc, m)),
        };
        if let Some(p) = &problem
            && config.on_error == OnError::Fail
        {
            return Err(p.clone().into_error(("source", &config.name)));
        }
        splits.push(Split { file_index, path: path.clone(), start: 0, end: 1, ordinal: splits.len(), problem: problem.map(Box::new) });
    }
    Ok(splits)
}

/// Reads one IPC file.
pub struct IpcSplit {
    config: Arc<SourceConfig>,
    split: Option<Split>,
}

impl IpcSplit {
    /// A reader of `split`.
    pub fn new(config: Arc<SourceConfig>, split: Split) -> Self {
        IpcSplit { config, split: Some(split) }
    }
}

impl SplitReader for IpcSplit {
    fn next(&mut self) -> Result<Option<Parsed>> {
        let Some(split) = self.split.take() else {
            return Ok(None);
        };
        let reject = |kind: ErrorKind, message: String| Ok(Some(Parsed { df: None, rejected: vec![Rejection::of_file(&split.path, kind, message)], dropped: Default::default() }));
        let file = match File::open(&split.path) {
            Ok(f) => f,
            Err(e) => return reject(ErrorKind::Unreadable, format!("cannot open the file: {e}")),
        };
        let columns = self.config.file_projection();
        let df = match catch_panic(move || IpcReader::new(file).with_columns(columns).finish()) {
            Ok(Ok(df)) => df,
            Ok(Err(e)) => return reject(ErrorKind::CorruptIpc, format!("cannot read the file: {}", clean(&e))),
            Err(p) => return reject(ErrorKind::CorruptIpc, format!("cannot read the file: {p}")),
        };
        match super::cast_declared(&self.config, df) {
            Ok(df) => Ok(Some(Parsed { df: Some(df), rejected: Vec::new(), dropped: Default::default() })),
            Err(e) => {
                Err(Error::execution("source", &self.config.name, format!("{}: cannot convert to the declared types: {}", split.path.display(), clean(&e))))
            }
        }
    }
}
