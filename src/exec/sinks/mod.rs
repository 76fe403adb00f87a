//! Sinks: the terminal and CSV / Parquet / JSON-lines files.
mod file;
mod stdout;

pub use file::{FileSink, SinkConfig};
pub use stdout::StdoutSink;
