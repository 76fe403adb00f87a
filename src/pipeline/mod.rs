//! The pipeline file: reading TOML or YAML into spec types, applying `--set` overrides, and the
//! structural checks (names, inputs, cycles) that need no data. Owns nothing that runs.
mod diagnostics;
mod document;
mod load;
mod spec;
mod structure;
mod suggest;
mod table;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use document::{Origin, Value};
pub use load::{Override, load_text};
pub use spec::{
    Chain, Common, DEAD_LETTER, DEFAULT_MAX_LINE_BYTES, Located, OnError, OpKind, OpSpec, PartitioningHint, PipelineSpec, SinkFormat, SinkSpec, SourceFormat,
    SourceSpec, StdoutStyle, TYPE_NAMES, WindowSpec, parse_duration, parse_type,
};
pub use structure::{producer_of, side_output_name};
pub use suggest::did_you_mean;
