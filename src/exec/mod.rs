//! The runtime: subtasks on a dedicated thread pool, connected by bounded channels that carry
//! data and control messages; operators, sources and sinks. Owns no pipeline-file parsing.
pub mod alignment;
pub mod dead_letter;
pub mod exchange;
pub mod guard;
pub mod join_filter;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod runtime;
pub mod sink;
pub mod sinks;
pub mod source;
pub mod sources;
pub mod state;
pub mod task;
