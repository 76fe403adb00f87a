//! Integration tests: the `rivulet` binary end to end.
mod accounting;
mod common;
mod corruption;
mod differential;
mod explain;
mod formats;
mod golden;
mod malformed;
mod nginx;
mod oracle;
mod pipelines;
mod runtime;
mod tail;
mod tail_windows;
mod tpch;
mod validate;
