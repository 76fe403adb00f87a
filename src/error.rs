//! One error type, named by fault, so that the exit code follows from the variant:
//! the user's pipeline file or command line (exit 2), or the data / the machine (exit 1).
use std::path::PathBuf;

use crate::pipeline::Diagnostics;

/// Everything that can stop rivulet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file has problems; every one found is listed.
    #[error("{0}")]
    Spec(Diagnostics),
    /// The command line is wrong (a bad `--set`, a bad flag combination).
    #[error("{0}")]
    Usage(String),
    /// Input data could not be read as declared: names the file, line and column.
    #[error("{}", located(path, *line, *column, message))]
    Input {
        /// The file being read.
        path: PathBuf,
        /// 1-based physical line.
        line: u64,
        /// 1-based column (byte offset in the line + 1).
        column: u64,
        /// The kind of problem, when it is about a record or file (shown as `error[kind]`).
        kind: Option<crate::exec::dead_letter::ErrorKind>,
        /// What was expected and what was found.
        message: String,
    },
    /// An operator, source or sink failed while running.
    #[error("{kind} '{name}': {message}")]
    Execution {
        /// "source", "operator" or "sink".
        kind: &'static str,
        /// The component's name in the pipeline file.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The job was stopped: by Ctrl-C when it reaches the top; inside the runtime, it also marks
    /// subtasks stopping because another one failed (that error is the one reported).
    #[error("interrupted: the run stopped before the end and its output files were discarded")]
    Cancelled,
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// `file:line:column: message`, or `file: message` for a problem with the whole file (line 0).
fn located(path: &std::path::Path, line: u64, column: u64, message: &str) -> String {
    match line {
        0 => format!("{}: {message}", path.display()),
        _ => format!("{}:{line}:{column}: {message}", path.display()),
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Exit code for this error: 2 for a wrong pipeline file or command line, 1 for data or I/O.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(d) if d.all_data() => 1,
            Error::Spec(_) | Error::Usage(_) => 2,
            Error::Input { .. } | Error::Execution { .. } | Error::Io { .. } => 1,
            // As a shell reports a process killed by SIGINT.
            Error::Cancelled => 130,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// An error raised by the named component while running.
    pub fn execution(kind: &'static str, name: &str, message: impl std::fmt::Display) -> Self {
        Error::Execution { kind, name: name.to_string(), message: message.to_string() }
    }
}
