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
pub use load::{load_text, Override};
pub use spec::{
    parse_type, Chain, Common, Located, OpKind, OpSpec, PartitioningHint, PipelineSpec, SinkFormat, SinkSpec,
    SourceFormat, SourceSpec, StdoutStyle, TYPE_NAMES,
};
pub use suggest::did_you_mean;
