//! The logical graph: one node per source, operator and sink of the pipeline file, with its
//! resolved schema, compiled expressions, parallelism, and the partitioning of every edge.
//!
//! Building it is the second half of validation: expressions are compiled and every column
//! they read is checked against the input schema (inferred from the files or declared), and
//! each operator is run on an empty frame of its input schema to catch type errors.
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use polars::prelude::*;

use super::expr::{clean, columns_of, compile, parse_aggregate, AggFunc};
use crate::exec::operators::aggregate::{AggSpec, AggregatePlan};
use crate::exec::operators::stateless::{Step, SEQ_COLUMN};
use crate::exec::sinks::SinkConfig;
use crate::exec::sources::{discover, infer_schema, SourceConfig};
use crate::pipeline::{
    did_you_mean, Chain, Common, Diagnostics, Located, OpKind, OpSpec, Origin, PartitioningHint, PipelineSpec, SinkFormat, SinkSpec,
    SourceFormat, SourceSpec, StdoutStyle,
};

/// How records of an edge are distributed over the downstream subtasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (equal parallelism); the only edge that can be chained.
    Forward,
    /// Batches round-robin over all downstream subtasks.
    Rebalance,
    /// Rows routed by a hash of these key columns (deterministic).
    Hash(Vec<String>),
    /// Every downstream subtask receives every batch.
    Broadcast,
    /// Everything goes to downstream subtask 0 (a global aggregate).
    Global,
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Forward => write!(f, "forward"),
            Partitioning::Rebalance => write!(f, "rebalance"),
            Partitioning::Hash(keys) => write!(f, "hash({})", keys.join(", ")),
            Partitioning::Broadcast => write!(f, "broadcast"),
            Partitioning::Global => write!(f, "global"),
        }
    }
}

/// What a node does.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// Reads files.
    Source(SourceConfig),
    /// A stateless step.
    Stateless(Step),
    /// A keyed aggregate (split into partial and final before chaining).
    Aggregate(AggregatePlan),
    /// First half of a two-phase aggregate.
    PartialAggregate(AggregatePlan),
    /// Second half of a two-phase aggregate.
    FinalAggregate(AggregatePlan),
    /// Writes files.
    FileSink(SinkConfig),
    /// Prints on the terminal.
    StdoutSink(StdoutStyle),
}

/// A node of the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name (unique).
    pub name: String,
    /// Operation label for `explain` (`source csv`, `filter`, `aggregate (partial)`, ...).
    pub label: String,
    /// What it does, in words, for `explain` (`status >= 500`).
    pub detail: String,
    /// What it does, for the runtime.
    pub kind: NodeKind,
    /// Number of subtasks.
    pub parallelism: usize,
    /// Chaining control.
    pub chain: Chain,
    /// Slot sharing group.
    pub slot_sharing_group: String,
    /// Schema of the rows the node emits (sinks: of the rows they write).
    pub schema: SchemaRef,
    /// Notes from optimisations, shown by `explain` (e.g. `projected: 4/16 columns`).
    pub notes: Vec<String>,
}

/// A directed edge with its partitioning.
#[derive(Clone, Debug)]
pub struct Edge {
    /// Upstream node id.
    pub from: usize,
    /// Downstream node id.
    pub to: usize,
    /// Distribution of records.
    pub partitioning: Partitioning,
}

/// Nodes in topological order (every edge goes from a lower id to a higher id) and edges.
#[derive(Clone, Debug)]
pub struct LogicalGraph {
    /// Pipeline name.
    pub name: String,
    /// Nodes, topologically sorted.
    pub nodes: Vec<Node>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Channel capacity in batches.
    pub channel_capacity: usize,
}

impl LogicalGraph {
    /// Edges into `node`.
    pub fn inputs(&self, node: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.to == node)
    }

    /// Edges out of `node`.
    pub fn outputs(&self, node: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.from == node)
    }

    /// Largest parallelism of any node.
    pub fn max_parallelism(&self) -> usize {
        self.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1)
    }
}

/// Builds the logical graph; every problem found is added to `diags`. Returns None when there
/// were problems. `parallelism` is the default for components that set none.
pub fn build(spec: &PipelineSpec, parallelism: usize, diags: &mut Diagnostics) -> Option<LogicalGraph> {
    let errors_before = diags.items.len();
    let needs_seq = sequence_users(spec);
    let mut b = Builder { spec, parallelism, nodes: Vec::new(), edges: Vec::new(), ids: HashMap::new(), diags };
    for s in &spec.sources {
        b.source(s, &needs_seq);
    }
    for op in topological_ops(spec) {
        b.op(op, &needs_seq);
    }
    for s in &spec.sinks {
        b.sink(s);
    }
    let ok = b.diags.items.len() == errors_before;
    let graph = LogicalGraph { name: spec.name.clone(), nodes: b.nodes, edges: b.edges, batch_rows: spec.batch_rows, channel_capacity: spec.channel_capacity };
    ok.then_some(graph)
}

/// Operators in an order where inputs come first (cycles were reported by the structure check
/// and their operators are left out).
fn topological_ops(spec: &PipelineSpec) -> Vec<&OpSpec> {
    let mut done: HashSet<&str> = spec.sources.iter().map(|s| s.common.name.value.as_str()).collect();
    let mut order = Vec::new();
    let mut left: Vec<&OpSpec> = spec.ops.iter().collect();
    loop {
        let before = left.len();
        left.retain(|op| {
            let ready = op.inputs.iter().all(|i| done.contains(i.value.as_str()) || !spec.ops.iter().any(|o| o.common.name.value == i.value));
            if ready {
                done.insert(&op.common.name.value);
                order.push(*op);
            }
            !ready
        });
        if left.len() == before {
            return order;
        }
    }
}

/// Names of sources and operators upstream of a `first` / `last` aggregate: they carry the
/// hidden sequence column.
fn sequence_users(spec: &PipelineSpec) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut todo: Vec<&str> = Vec::new();
    for op in &spec.ops {
        if let OpKind::Aggregate { aggregates, .. } = &op.kind
            && aggregates.iter().any(|(_, call)| {
                let lower = call.value.trim_start().to_ascii_lowercase();
                lower.starts_with("first") || lower.starts_with("last")
            })
        {
            todo.extend(op.inputs.iter().map(|i| i.value.as_str()));
        }
    }
    while let Some(name) = todo.pop() {
        if out.insert(name.to_string())
            && let Some(op) = spec.ops.iter().find(|o| o.common.name.value == name)
        {
            todo.extend(op.inputs.iter().map(|i| i.value.as_str()));
        }
    }
    out
}

struct Builder<'a> {
    spec: &'a PipelineSpec,
    parallelism: usize,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    ids: HashMap<String, usize>,
    diags: &'a mut Diagnostics,
}

impl Builder<'_> {
    fn err(&mut self, origin: &Origin, who: String, msg: impl Into<String>) {
        self.diags.push(origin.clone(), Some(who), msg);
    }

    fn add(&mut self, common: &Common, label: String, detail: String, kind: NodeKind, parallelism: usize, schema: Schema) -> usize {
        let id = self.nodes.len();
        self.ids.insert(common.name.value.clone(), id);
        self.nodes.push(Node {
            name: common.name.value.clone(),
            label,
            detail,
            kind,
            parallelism,
            chain: common.chain,
            slot_sharing_group: common.slot_sharing_group.clone(),
            schema: Arc::new(schema),
            notes: Vec::new(),
        });
        id
    }

    fn source(&mut self, s: &SourceSpec, needs_seq: &HashSet<String>) {
        let who = format!("source '{}'", s.common.name.value);
        let files = match discover::discover(&self.spec.base_dir, &s.path.value) {
            Ok(f) => f,
            Err(msg) => return self.err(&s.path.origin, who, msg),
        };
        let declared: Vec<(String, DataType)> = s.schema.iter().flatten().map(|(c, t)| (c.value.clone(), t.value.clone())).collect();
        if s.format == SourceFormat::Csv && !s.header && declared.is_empty() {
            return self.err(&s.common.origin, who, "header = false needs a declared `schema` naming every column in order");
        }
        let (raw, schema) = match infer_schema(s.format, &files, s.header, s.delimiter, s.infer_rows, &declared) {
            Ok(v) => v,
            Err(msg) => return self.diags.push_data(s.path.origin.clone(), Some(who), msg),
        };
        let mut missing = false;
        for (col, _) in s.schema.iter().flatten() {
            if !raw.contains(&col.value) && !(s.format == SourceFormat::Csv && !s.header) {
                let names: Vec<_> = raw.iter_names().map(|n| n.to_string()).collect();
                let hint = did_you_mean(&col.value, names.iter().map(String::as_str)).map(|h| format!(" (did you mean '{h}'?)")).unwrap_or_default();
                self.err(&col.origin, who.clone(), format!("declared column '{}' is not in the files{hint}; columns: {}", col.value, names.join(", ")));
                missing = true;
            }
        }
        if missing {
            return;
        }
        let format = format!("{:?}", s.format).to_lowercase();
        let config = SourceConfig {
            name: s.common.name.value.clone(),
            format: s.format,
            files: files.clone(),
            schema: Arc::new(schema),
            raw_schema: Arc::new(raw),
            declared: declared.into_iter().map(|(c, _)| c).collect(),
            header: s.header,
            delimiter: s.delimiter,
            split_bytes: s.split_bytes,
            projection: None,
            with_sequence: needs_seq.contains(&s.common.name.value),
        };
        let detail = format!("{} ({} file{})", s.path.value, files.len(), if files.len() == 1 { "" } else { "s" });
        let parallelism = s.common.parallelism.as_ref().map_or(self.parallelism, |p| p.value);
        let out = config.output_schema();
        self.add(&s.common, format!("source {format}"), detail, NodeKind::Source(config), parallelism, out);
    }

    /// The single input of an operator, or None (problem reported, or input invalid).
    fn single_input(&mut self, op: &OpSpec) -> Option<usize> {
        let who = format!("operator '{}'", op.common.name.value);
        if op.inputs.len() != 1 {
            let origin = op.inputs.get(1).map_or(op.common.origin.clone(), |i| i.origin.clone());
            self.err(&origin, who, format!("{} takes exactly one input, found {}", op.kind.label(), op.inputs.len()));
            return None;
        }
        self.ids.get(&op.inputs[0].value).copied()
    }

    /// Compiles an expression and checks the columns it reads exist in `schema`.
    fn expr(&mut self, text: &Located<String>, schema: &Schema, who: &str) -> Option<Expr> {
        let e = match compile(text) {
            Ok(e) => e,
            Err((origin, msg)) => {
                self.err(&origin, who.to_string(), msg);
                return None;
            }
        };
        if self.columns_exist(&columns_of(&e), text, schema, who) { Some(e) } else { None }
    }

    fn columns_exist(&mut self, cols: &[String], at: &Located<String>, schema: &Schema, who: &str) -> bool {
        let mut ok = true;
        for c in cols {
            if schema.contains(c) {
                continue;
            }
            ok = false;
            let names: Vec<&str> = schema.iter_names().map(|n| n.as_str()).filter(|n| *n != SEQ_COLUMN).collect();
            let hint = did_you_mean(c, names.iter().copied()).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
            let col_at = at.value.find(c.as_str()).map_or(at.origin.clone(), |i| at.origin.shifted(0, at.value[..i].chars().count()));
            self.err(&col_at, who.to_string(), format!("column '{c}' does not exist{hint}; input columns: {}", names.join(", ")));
        }
        ok
    }

    fn op(&mut self, op: &OpSpec, needs_seq: &HashSet<String>) {
        let who = format!("operator '{}'", op.common.name.value);
        let Some(input) = self.single_input(op) else { return };
        let in_schema = self.nodes[input].schema.clone();
        let keep_seq = needs_seq.contains(&op.common.name.value) && in_schema.contains(SEQ_COLUMN);
        let (kind, detail) = match &op.kind {
            OpKind::Filter(f) => {
                let Some(e) = self.expr(f, &in_schema, &who) else { return };
                (NodeKind::Stateless(Step::Filter(e)), f.value.clone())
            }
            OpKind::Select(items) => {
                let mut exprs: Vec<Expr> = items.iter().filter_map(|t| self.expr(t, &in_schema, &who)).collect();
                if exprs.len() != items.len() {
                    return;
                }
                if keep_seq {
                    exprs.push(col(SEQ_COLUMN));
                }
                (NodeKind::Stateless(Step::Select(exprs)), items.iter().map(|i| i.value.as_str()).collect::<Vec<_>>().join(", "))
            }
            OpKind::With(items) => {
                let exprs: Vec<Expr> = items.iter().filter_map(|(name, t)| self.expr(t, &in_schema, &who).map(|e| e.alias(name.value.as_str()))).collect();
                if exprs.len() != items.len() {
                    return;
                }
                (NodeKind::Stateless(Step::With(exprs)), items.iter().map(|(n, t)| format!("{} = {}", n.value, t.value)).collect::<Vec<_>>().join(", "))
            }
            OpKind::Rename(pairs) => {
                let cols: Vec<String> = pairs.iter().map(|(old, _)| old.value.clone()).collect();
                let mut ok = true;
                for (old, _) in pairs {
                    let at = Located::new(old.value.clone(), old.origin.clone());
                    ok &= self.columns_exist(std::slice::from_ref(&old.value), &at, &in_schema, &who);
                }
                if !ok {
                    return;
                }
                let _ = cols;
                let step = Step::Rename(pairs.iter().map(|(o, n)| (o.value.clone(), n.value.clone())).collect());
                (NodeKind::Stateless(step), pairs.iter().map(|(o, n)| format!("{} -> {}", o.value, n.value)).collect::<Vec<_>>().join(", "))
            }
            OpKind::Drop(cols) => {
                let mut ok = true;
                for c in cols {
                    ok &= self.columns_exist(std::slice::from_ref(&c.value), c, &in_schema, &who);
                }
                if !ok {
                    return;
                }
                (NodeKind::Stateless(Step::Drop(cols.iter().map(|c| c.value.clone()).collect())), cols.iter().map(|c| c.value.as_str()).collect::<Vec<_>>().join(", "))
            }
            OpKind::Cast(pairs) => {
                let mut ok = true;
                for (c, _) in pairs {
                    ok &= self.columns_exist(std::slice::from_ref(&c.value), c, &in_schema, &who);
                }
                if !ok {
                    return;
                }
                let step = Step::Cast(pairs.iter().map(|(c, t)| (c.value.clone(), t.value.clone())).collect());
                (NodeKind::Stateless(step), pairs.iter().map(|(c, t)| format!("{} as {}", c.value, t.value)).collect::<Vec<_>>().join(", "))
            }
            OpKind::Aggregate { key_by, aggregates } => {
                let mut ok = true;
                for k in key_by {
                    ok &= self.columns_exist(std::slice::from_ref(&k.value), k, &in_schema, &who);
                }
                let mut aggs = Vec::new();
                for (name, call) in aggregates {
                    match parse_aggregate(call) {
                        Ok(c) => {
                            let cols = c.arg.as_ref().map(columns_of).unwrap_or_default();
                            ok &= self.columns_exist(&cols, call, &in_schema, &who);
                            aggs.push(AggSpec { name: name.value.clone(), func: c.func, arg: c.arg });
                        }
                        Err((origin, msg)) => {
                            self.err(&origin, who.clone(), msg);
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return;
                }
                let plan = AggregatePlan { keys: key_by.iter().map(|k| k.value.clone()).collect(), aggs };
                let keys = if plan.keys.is_empty() { "(global)".to_string() } else { format!("[{}]", plan.keys.join(", ")) };
                let outs = aggregates.iter().map(|(n, c)| format!("{} = {}", n.value, c.value)).collect::<Vec<_>>().join(", ");
                (NodeKind::Aggregate(plan), format!("key_by {keys}: {outs}"))
            }
        };
        // Run the operator on an empty frame: type errors show up here, before any data is read.
        let empty = DataFrame::empty_with_schema(&in_schema).lazy();
        let out = match &kind {
            NodeKind::Stateless(step) => step.apply(empty).collect(),
            NodeKind::Aggregate(plan) => plan.single_phase(empty).collect(),
            _ => unreachable!("operators are stateless or aggregates"),
        };
        let schema = match out {
            Ok(df) => (**df.schema()).clone(),
            Err(e) => {
                let origin = match (&op.kind, &kind) {
                    (OpKind::Filter(f), _) => f.origin.clone(),
                    // Point at the first aggregate that fails on its own.
                    (OpKind::Aggregate { aggregates, .. }, NodeKind::Aggregate(plan)) => aggregates
                        .iter()
                        .zip(&plan.aggs)
                        .find(|(_, agg)| {
                            let one = AggregatePlan { keys: plan.keys.clone(), aggs: vec![(*agg).clone()] };
                            one.single_phase(DataFrame::empty_with_schema(&in_schema).lazy()).collect().is_err()
                        })
                        .map_or(op.common.origin.clone(), |((_, call), _)| call.origin.clone()),
                    _ => op.common.origin.clone(),
                };
                return self.err(&origin, who, clean(&e));
            }
        };
        let (parallelism, partitioning) = self.op_partitioning(op, input, &kind, &who);
        let label = op.kind.label().to_string();
        let id = self.add(&op.common, label, detail, kind, parallelism, schema);
        self.edges.push(Edge { from: input, to: id, partitioning });
    }

    fn op_partitioning(&mut self, op: &OpSpec, input: usize, kind: &NodeKind, who: &str) -> (usize, Partitioning) {
        let up = self.nodes[input].parallelism;
        let mut parallelism = op.common.parallelism.as_ref().map_or(self.parallelism, |p| p.value);
        if let NodeKind::Aggregate(plan) = kind {
            if let Some(hint) = &op.partitioning {
                self.err(&hint.origin, who.to_string(), "an aggregate's input is always hash-partitioned by its keys; remove `partitioning`");
            }
            if plan.keys.is_empty() {
                if let Some(p) = op.common.parallelism.as_ref().filter(|p| p.value > 1) {
                    self.err(&p.origin, who.to_string(), "a global aggregate (no key_by) runs with parallelism 1");
                }
                return (1, Partitioning::Global);
            }
            return (parallelism, Partitioning::Hash(plan.keys.clone()));
        }
        let partitioning = match op.partitioning.as_ref().map(|h| (h.value, &h.origin)) {
            Some((PartitioningHint::Forward, origin)) => {
                if op.common.parallelism.is_none() {
                    parallelism = up;
                } else if parallelism != up {
                    self.err(origin, who.to_string(), format!("forward needs equal parallelism, but the input has {up} and this operator {parallelism}"));
                }
                Partitioning::Forward
            }
            Some((PartitioningHint::Rebalance, _)) => Partitioning::Rebalance,
            Some((PartitioningHint::Broadcast, _)) => Partitioning::Broadcast,
            None if parallelism == up => Partitioning::Forward,
            None => Partitioning::Rebalance,
        };
        (parallelism, partitioning)
    }

    fn sink(&mut self, s: &SinkSpec) {
        let who = format!("sink '{}'", s.common.name.value);
        let Some(&input) = self.ids.get(&s.input.value) else { return };
        let mut schema = (*self.nodes[input].schema).clone();
        schema.shift_remove(SEQ_COLUMN);
        let forced_one = match s.format {
            SinkFormat::Stdout => Some("a stdout sink"),
            _ if s.single_file => Some("a single_file sink"),
            _ => None,
        };
        let parallelism = match (forced_one, &s.common.parallelism) {
            (Some(what), Some(p)) if p.value > 1 => {
                self.err(&p.origin, who.clone(), format!("{what} runs with parallelism 1"));
                1
            }
            (Some(_), _) => 1,
            (None, p) => p.as_ref().map_or(self.parallelism, |p| p.value),
        };
        let (kind, label, detail) = match s.format {
            SinkFormat::Stdout => (NodeKind::StdoutSink(s.style), "sink stdout".to_string(), format!("{:?}", s.style).to_lowercase()),
            format => {
                let Some(path) = &s.path else { return };
                let full = if PathBuf::from(&path.value).is_absolute() { PathBuf::from(&path.value) } else { self.spec.base_dir.join(&path.value) };
                if !s.single_file && full.is_file() {
                    self.err(&path.origin, who.clone(), format!("{} is a file; a sink with single_file = false writes a directory of part files", path.value));
                }
                let config = SinkConfig { name: s.common.name.value.clone(), format, path: full, single_file: s.single_file, header: s.header };
                let name = format!("{format:?}").to_lowercase();
                let what = if s.single_file { "file" } else { "directory" };
                (NodeKind::FileSink(config), format!("sink {name}"), format!("{what} {}", path.value))
            }
        };
        let up = self.nodes[input].parallelism;
        let partitioning = if up == parallelism { Partitioning::Forward } else { Partitioning::Rebalance };
        let id = self.add(&s.common, label, detail, kind, parallelism, schema);
        self.edges.push(Edge { from: input, to: id, partitioning });
    }
}

/// Whether an aggregate function needs the hidden sequence column.
pub fn is_order_dependent(func: AggFunc) -> bool {
    matches!(func, AggFunc::First | AggFunc::Last)
}
