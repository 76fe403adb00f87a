//! The sink contract and the two-phase commit that makes file output appear only on success.
use std::path::PathBuf;

use polars::prelude::DataFrame;

use crate::error::{Error, Result};

/// Output that is written but not visible yet: renamed into place once the whole job succeeded.
#[derive(Debug)]
pub struct PendingCommit {
    /// Hidden in-progress file.
    pub temp: PathBuf,
    /// Final name.
    pub target: PathBuf,
    /// For a directory of part files: the directory, whose old part files are removed on commit.
    pub part_dir: Option<PathBuf>,
}

impl PendingCommit {
    /// Deletes the in-progress file (the job failed).
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Removes the part files of an earlier run from `dir` and its `key=value` subdirectories.
pub fn remove_old_parts(dir: &std::path::Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        if path.is_dir() && name.contains('=') {
            remove_old_parts(&path)?;
        } else if name.starts_with("part-") {
            std::fs::remove_file(&path).map_err(|err| Error::io(&path, err))?;
        }
    }
    Ok(())
}

/// Makes every pending output visible: removes stale part files of a previous run from each
/// part directory once, then renames each in-progress file to its final name.
pub fn commit_all(pending: Vec<PendingCommit>) -> Result<()> {
    let mut cleaned: Vec<PathBuf> = Vec::new();
    for p in &pending {
        if let Some(dir) = &p.part_dir
            && !cleaned.contains(dir)
        {
            cleaned.push(dir.clone());
            remove_old_parts(dir)?;
        }
    }
    for p in pending {
        std::fs::rename(&p.temp, &p.target).map_err(|e| Error::io(&p.target, e))?;
    }
    Ok(())
}

/// Where rows leave the pipeline.
///
/// One instance per sink subtask. `open` is called once, then `write` for every batch (never
/// empty, internal columns removed), then `finish` once after the input ended. File sinks write
/// to hidden in-progress files and return them from `finish`: they become visible only when the
/// whole job succeeded (see [`commit_all`]); after an error they are deleted, so a failed run
/// never leaves a file that looks complete. The terminal sink writes as it goes.
pub trait Sink: Send {
    /// Prepares the output.
    fn open(&mut self) -> Result<()>;
    /// Writes one batch.
    fn write(&mut self, batch: &DataFrame) -> Result<()>;
    /// Flushes and closes; returns the output to commit, if any.
    fn finish(&mut self) -> Result<Vec<PendingCommit>>;
}
