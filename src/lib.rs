//! rivulet: Flink-style dataflow pipelines from the terminal, on polars.
//!
//! The crate follows Flink's road from a program to running subtasks, one folder a step:
//! - [`pipeline`]: the pipeline file (TOML or YAML) read into spec types, with every problem
//!   collected as a [`pipeline::Diagnostic`] that points at file, line and column.
//! - [`plan`]: the logical graph (one node per operator, with schemas), the job graph (chained
//!   tasks, with the reason for every chain break), the execution graph (subtasks and channels),
//!   the physical placement in slots, and `explain` rendering of all four.
//! - [`exec`]: the runtime: bounded channels, exchanges, operators, sources and sinks.
//! - [`cli`]: the command line; raw clap types stop there.
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod exec;
pub mod pipeline;
pub mod plan;

pub use error::{Error, Result};

/// Helpers for the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A small deterministic generator (xorshift64) of numbers below its argument, for tests
    /// that draw many random cases.
    pub fn below(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut s = seed;
        move |n| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        }
    }
}
