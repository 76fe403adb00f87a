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

use super::expr::{AggFunc, clean, columns_of, compile, parse_aggregate};
use crate::exec::operators::join::{JoinPlan, Strategy};
use crate::exec::operators::reduce::Reduce;
use crate::exec::operators::stateless::{SEQ_COLUMN, Step};
use crate::exec::operators::window::{LATE, WINDOW_END, WINDOW_START, WindowPlan};
use crate::exec::sinks::SinkConfig;
use crate::exec::sources::follow::StartAt;
use crate::exec::sources::text::text_schema;
use crate::exec::sources::{FollowConfig, FollowInput};
use crate::exec::sources::{Inference, SourceConfig, discover, infer_schema};
use crate::pipeline::{
    Chain, Common, Diagnostics, Located, OnError, OpKind, OpSpec, Origin, PartitioningHint, PipelineSpec, SinkFormat, SinkSpec, SourceFormat, SourceSpec,
    StdoutStyle, did_you_mean, producer_of,
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
    /// A two-phase reduction: aggregate, sort / limit / top-n, distinct (split into partial and
    /// final before chaining).
    Reduce(Reduce),
    /// First half of a two-phase reduction, before the exchange.
    PartialReduce(Reduce),
    /// Second half of a two-phase reduction, after the exchange.
    FinalReduce(Reduce),
    /// An equi-join of two inputs.
    Join(JoinPlan),
    /// Aggregates per event-time window, after a hash exchange on the keys.
    Window(WindowPlan),
    /// A keyed aggregate that emits a changelog after every batch (`emit = "changes"`).
    Running {
        /// The aggregate.
        plan: crate::exec::operators::aggregate::AggregatePlan,
        /// Keys not updated this long (ms) are forgotten.
        ttl: Option<i64>,
    },
    /// Watermarks from an event-time column (rows pass through).
    Watermark {
        /// Event time in ms.
        time: Expr,
        /// Bounded out-of-orderness, ms.
        max_delay: i64,
        /// Declared idle after this many ms without rows.
        idle_timeout: Option<i64>,
    },
    /// Writes files.
    FileSink(SinkConfig),
    /// Prints on the terminal.
    StdoutSink(StdoutStyle),
    /// The side output `tag` of its only input (`<input>.dead_letter`): it does nothing itself;
    /// its input's subtasks send it rows beside their main output.
    SideOutput(String),
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
    /// Rows leave in a total order (after a global sort, through order-keeping operators).
    pub ordered: bool,
    /// What the node does with a row it cannot read or compute.
    pub on_error: OnError,
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

    /// True when the edge carries a side output (it never chains, and is not a main output).
    pub fn is_side_edge(&self, edge: &Edge) -> bool {
        matches!(self.nodes[edge.to].kind, NodeKind::SideOutput(_))
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
    let mut b = Builder { spec, parallelism, nodes: Vec::new(), broadcast_threshold: spec.broadcast_threshold, edges: Vec::new(), ids: HashMap::new(), diags };
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
            let ready = op.inputs.iter().all(|i| {
                let p = producer_of(&i.value);
                done.contains(p) || !spec.ops.iter().any(|o| o.common.name.value == p)
            });
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
        let order_dependent = match &op.kind {
            OpKind::Aggregate { aggregates, .. } => {
                aggregates.iter().any(|(_, call)| parse_aggregate(call).is_ok_and(|c| matches!(c.func, AggFunc::First | AggFunc::Last | AggFunc::CollectList)))
            }
            OpKind::Distinct { keep, .. } => keep.value != "any",
            OpKind::Sort { by, .. } => by.is_empty(),
            _ => false,
        };
        if order_dependent {
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

pub(super) struct Builder<'a> {
    spec: &'a PipelineSpec,
    parallelism: usize,
    pub(super) nodes: Vec<Node>,
    pub(super) broadcast_threshold: u64,
    edges: Vec<Edge>,
    ids: HashMap<String, usize>,
    diags: &'a mut Diagnostics,
}

impl Builder<'_> {
    /// True when some operator or sink reads `name`.
    pub(super) fn consumed(&self, name: &str) -> bool {
        self.spec.ops.iter().flat_map(|o| o.inputs.iter()).chain(self.spec.sinks.iter().map(|s| &s.input)).any(|i| i.value == name)
    }

    pub(super) fn err(&mut self, origin: &Origin, who: String, msg: impl Into<String>) {
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
            ordered: false,
            on_error: OnError::Fail,
        });
        id
    }

    /// The node an input name refers to: a source or operator, or the side output
    /// `<owner>.<tag>` of one, whose node is made on first use.
    fn input_id(&mut self, name: &str) -> Option<usize> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        let (owner, tag) = name.split_once('.')?;
        let &from = self.ids.get(owner)?;
        let up = &self.nodes[from];
        let node = Node {
            name: name.to_string(),
            label: format!("side output {tag}"),
            detail: if tag == LATE { format!("rows too late for the windows of '{owner}'") } else { format!("rows '{owner}' rejects") },
            kind: NodeKind::SideOutput(tag.to_string()),
            parallelism: up.parallelism,
            chain: Chain::Allowed,
            slot_sharing_group: up.slot_sharing_group.clone(),
            schema: Arc::new(if tag == LATE {
                // A window's late rows are its input rows.
                let mut s = self.edges.iter().find(|e| e.to == from).map_or_else(Schema::default, |e| (*self.nodes[e.from].schema).clone());
                s.shift_remove(SEQ_COLUMN);
                s
            } else {
                crate::exec::dead_letter::schema()
            }),
            notes: Vec::new(),
            ordered: false,
            on_error: OnError::Fail,
        };
        let id = self.nodes.len();
        self.nodes.push(node);
        self.ids.insert(name.to_string(), id);
        self.edges.push(Edge { from, to: id, partitioning: Partitioning::Forward });
        Some(id)
    }

    fn source(&mut self, s: &SourceSpec, needs_seq: &HashSet<String>) {
        let who = format!("source '{}'", s.common.name.value);
        let tcp = FollowInput::tcp_address(&s.path.value);
        let stdin = s.path.value == "-" || tcp.is_some();
        let columnar = matches!(s.format, SourceFormat::Parquet | SourceFormat::Ipc);
        let follows = stdin || (self.spec.follow && s.follow && !columnar);
        let files = match discover::discover(&self.spec.base_dir, &s.path.value) {
            Ok(f) => f,
            // Standard input, or files that may appear later (tail mode).
            Err(_) if follows => Vec::new(),
            Err(msg) => return self.err(&s.path.origin, who, msg),
        };
        if stdin && columnar {
            return self.err(&s.path.origin, who, "Parquet and IPC cannot be read from standard input or a socket");
        }
        let declared: Vec<(String, DataType)> = s.schema.iter().flatten().map(|(c, t)| (c.value.clone(), t.value.clone())).collect();
        if s.format == SourceFormat::Csv && !s.header && declared.is_empty() {
            return self.err(&s.common.origin, who, "header = false needs a declared `schema` naming every column in order");
        }
        let how = Inference {
            format: s.format,
            header: s.header,
            delimiter: s.delimiter,
            infer_rows: s.infer_rows,
            declared: &declared,
            tolerant: s.on_error != OnError::Fail,
        };
        let inferred = match s.format {
            SourceFormat::Lines | SourceFormat::Regex => match text_schema(s.format, s.regex.as_ref().map(|r| r.value.as_str())) {
                Ok(raw) => {
                    let mut schema = raw.clone();
                    for (name, dtype) in &declared {
                        if let Some(t) = schema.get_mut(name.as_str()) {
                            *t = dtype.clone();
                        }
                    }
                    Ok((raw, schema))
                }
                Err(msg) => return self.err(&s.regex.as_ref().map_or(s.common.origin.clone(), |r| r.origin.clone()), who, msg),
            },
            // Nothing to sample (stdin, or no file yet): the declared schema is the schema.
            _ if files.is_empty() && declared.is_empty() => {
                let what = if tcp.is_some() {
                    "a socket"
                } else if stdin {
                    "standard input"
                } else {
                    "no file matches yet"
                };
                return self.err(&s.path.origin, who, format!("{what}, so the schema cannot be inferred: declare it in `schema`, every column in order"));
            }
            _ if files.is_empty() => {
                let schema: Schema = declared.iter().map(|(n, t)| Field::new(n.as_str().into(), t.clone())).collect();
                Ok((schema.clone(), schema))
            }
            _ => infer_schema(&files, &how),
        };
        let (raw, schema) = match inferred {
            Ok(v) => v,
            Err(p) => return self.diags.push_data(s.path.origin.clone(), Some(who), p.kind.map(|k| k.as_str()), p.message),
        };
        let mut missing = false;
        for (col, _) in s.schema.iter().flatten() {
            if !raw.contains(&col.value) && (s.format != SourceFormat::Csv || s.header) {
                let names: Vec<_> = raw.iter_names().map(|n| n.to_string()).collect();
                let hint = did_you_mean(&col.value, names.iter().map(String::as_str)).map(|h| format!(" (did you mean '{h}'?)")).unwrap_or_default();
                self.err(&col.origin, who.clone(), format!("declared column '{}' is not in the files{hint}; columns: {}", col.value, names.join(", ")));
                missing = true;
            }
        }
        if missing {
            return;
        }
        // `key=value` directories between the path's root and the files are partition columns.
        let root = discover::root_of(&self.spec.base_dir, &s.path.value);
        let (hive, hive_values) = match discover::hive_partitions(&root, &files) {
            // Followed files are found as they come: no partition columns.
            _ if follows => (Vec::new(), Vec::new()),
            Some((keys, values)) => {
                let mut cols = Vec::new();
                for (i, key) in keys.iter().enumerate() {
                    if schema.contains(key) {
                        return self.err(&s.path.origin, who, format!("column '{key}' is both in the files and a partition directory ({key}=...)"));
                    }
                    let all_int = values.iter().all(|v| v[i].as_ref().is_none_or(|x| x.parse::<i64>().is_ok()));
                    cols.push((key.clone(), if all_int { DataType::Int64 } else { DataType::String }));
                }
                (cols, values)
            }
            None => (Vec::new(), Vec::new()),
        };
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
            hive,
            hive_values,
            on_error: s.on_error,
            max_line_bytes: s.max_line_bytes,
            infer_rows: s.infer_rows,
            regex: s.regex.as_ref().map(|r| r.value.clone()),
            follow: follows.then(|| FollowConfig {
                input: match (&tcp, stdin) {
                    (Some(address), _) => FollowInput::Tcp(address.clone()),
                    (None, true) => FollowInput::Stdin,
                    (None, false) => FollowInput::Files { base_dir: self.spec.base_dir.clone(), pattern: s.path.value.clone() },
                },
                start_at: if s.from_beginning { StartAt::Beginning } else { StartAt::End },
                linger: std::time::Duration::from_millis(s.linger_ms),
            }),
            row_group_filter: Vec::new(),
            reader_filter: None,
            join_filter: None,
            key_codes: Vec::new(),
        };
        let detail = match &config.follow {
            Some(f) if matches!(f.input, FollowInput::Stdin) => "standard input".to_string(),
            Some(FollowConfig { input: FollowInput::Tcp(address), .. }) => format!("TCP, listening on {address}"),
            Some(_) => format!("{} (following, {} file{} now)", s.path.value, files.len(), if files.len() == 1 { "" } else { "s" }),
            None => format!("{} ({} file{})", s.path.value, files.len(), if files.len() == 1 { "" } else { "s" }),
        };
        let parallelism = s.common.parallelism.as_ref().map_or(self.parallelism, |p| p.value);
        let out = config.output_schema();
        let id = self.add(&s.common, format!("source {format}"), detail, NodeKind::Source(config), parallelism, out);
        self.nodes[id].on_error = s.on_error;
    }

    /// Bytes of files behind `node`, when it is a source or stateless operators over one.
    pub(super) fn estimated_bytes(&self, node: usize) -> Option<u64> {
        match &self.nodes[node].kind {
            NodeKind::Source(c) => Some(c.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()),
            NodeKind::Stateless(_) => {
                let inputs: Vec<usize> = self.edges.iter().filter(|e| e.to == node).map(|e| e.from).collect();
                inputs.iter().map(|&i| self.estimated_bytes(i)).sum()
            }
            _ => None,
        }
    }

    /// Compiles an expression and checks the columns it reads exist in `schema`.
    pub(super) fn expr(&mut self, text: &Located<String>, schema: &Schema, who: &str) -> Option<Expr> {
        let e = match compile(text) {
            Ok(e) => e,
            Err((origin, msg)) => {
                self.err(&origin, who.to_string(), msg);
                return None;
            }
        };
        if super::expr::looks_beyond_its_row(&e) {
            let msg = format!(
                "invalid expression {:?}: aggregate and window functions (max, count, OVER ...) are not allowed here, where each row is handled on its own; compute them with an `aggregate` operator and use its output",
                text.value
            );
            self.err(&text.origin, who.to_string(), msg);
            return None;
        }
        if self.columns_exist(&columns_of(&e), text, schema, who) { Some(super::expr::exact_decimals(e, schema)) } else { None }
    }

    pub(super) fn columns_exist(&mut self, cols: &[String], at: &Located<String>, schema: &Schema, who: &str) -> bool {
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
        let Some(inputs) = self.op_inputs(op, &who) else {
            return;
        };
        let in_schema = self.nodes[inputs[0]].schema.clone();
        let keep_seq = needs_seq.contains(&op.common.name.value) && in_schema.contains(SEQ_COLUMN);
        let Some((kind, detail)) = super::operators::compile(self, op, &inputs, keep_seq, &who) else {
            return;
        };
        // Run the operator on an empty frame: type errors show up here, before any data is read.
        let in_schemas: Vec<SchemaRef> = inputs.iter().map(|&i| self.nodes[i].schema.clone()).collect();
        let schema = match output_schema(&kind, &in_schemas) {
            Ok(schema) => schema,
            Err(e) => {
                let origin = super::operators::blame(op, &kind, &in_schema);
                return self.err(&origin, who, clean(&e));
            }
        };
        let ordered_input = inputs.len() == 1 && self.nodes[inputs[0]].ordered;
        let (parallelism, partitionings) = self.op_partitioning(op, &inputs, &kind, ordered_input, &who);
        let ordered = match &kind {
            NodeKind::Reduce(Reduce::Sort(s)) => s.keys.is_empty() && !s.by.is_empty(),
            NodeKind::Stateless(_) => ordered_input && parallelism == 1 && partitionings[0] == Partitioning::Forward,
            _ => false,
        };
        // Watermarks and windows reject rows with no event time.
        if op.on_error != OnError::Fail && !matches!(kind, NodeKind::Stateless(_) | NodeKind::Watermark { .. } | NodeKind::Window(_)) {
            return self.err(
                &op.common.origin,
                who,
                format!(
                    "`on_error` applies to sources, to row-by-row operators (filter, select, with, cast, parse, ...) and to watermark and window operators, not to {}",
                    op.kind.label()
                ),
            );
        }
        let label = op.kind.label().to_string();
        let id = self.add(&op.common, label, detail, kind, parallelism, schema);
        self.nodes[id].ordered = ordered;
        self.nodes[id].on_error = op.on_error;
        for (input, partitioning) in inputs.into_iter().zip(partitionings) {
            self.edges.push(Edge { from: input, to: id, partitioning });
        }
    }

    /// The inputs of an operator: at least two for a union, exactly one otherwise. None when a
    /// problem was reported or an input is invalid (reported elsewhere).
    fn op_inputs(&mut self, op: &OpSpec, who: &str) -> Option<Vec<usize>> {
        let union = matches!(op.kind, OpKind::Union);
        if union && op.inputs.len() < 2 {
            self.err(&op.common.origin, who.to_string(), "a union needs at least two inputs in `input`");
            return None;
        }
        if matches!(op.kind, OpKind::Join { .. }) {
            if op.inputs.len() != 2 {
                self.err(&op.common.origin, who.to_string(), format!("a join takes two inputs, `input = [\"left\", \"right\"]`, found {}", op.inputs.len()));
                return None;
            }
        } else if !union && op.inputs.len() != 1 {
            let origin = op.inputs.get(1).map_or(op.common.origin.clone(), |i| i.origin.clone());
            self.err(&origin, who.to_string(), format!("{} takes exactly one input, found {}", op.kind.label(), op.inputs.len()));
            return None;
        }
        op.inputs.iter().map(|i| self.input_id(&i.value)).collect()
    }

    /// Parallelism of an operator and the partitioning of each input edge. Without its own
    /// parallelism, an operator after a global sort keeps the order: parallelism 1, forward.
    fn op_partitioning(&mut self, op: &OpSpec, inputs: &[usize], kind: &NodeKind, ordered_input: bool, who: &str) -> (usize, Vec<Partitioning>) {
        let default = if ordered_input { 1 } else { self.parallelism };
        let mut parallelism = op.common.parallelism.as_ref().map_or(default, |p| p.value);
        if let NodeKind::Join(plan) = kind {
            let left_up = self.nodes[inputs[0]].parallelism;
            return match plan.strategy {
                Strategy::BroadcastRight => {
                    let left = if left_up == parallelism { Partitioning::Forward } else { Partitioning::Rebalance };
                    (parallelism, vec![left, Partitioning::Broadcast])
                }
                Strategy::Hash => (parallelism, vec![Partitioning::Hash(plan.left_on.clone()), Partitioning::Hash(plan.right_on.clone())]),
            };
        }
        if let NodeKind::Running { plan, .. } = kind {
            if plan.keys.is_empty() {
                return (1, vec![Partitioning::Global]);
            }
            return (parallelism, vec![Partitioning::Hash(plan.keys.clone())]);
        }
        if let NodeKind::Window(plan) = kind {
            let keys: Vec<String> = plan.agg.keys.iter().filter(|k| *k != WINDOW_START && *k != WINDOW_END).cloned().collect();
            if keys.is_empty() {
                return (1, vec![Partitioning::Global]);
            }
            return (parallelism, vec![Partitioning::Hash(keys)]);
        }
        if let NodeKind::Reduce(reduce) = kind {
            if let Some(hint) = &op.partitioning {
                self.err(&hint.origin, who.to_string(), format!("the input of {} is partitioned by its keys; remove `partitioning`", op.kind.label()));
            }
            let exchange = reduce.exchange(&self.nodes[inputs[0]].schema);
            if exchange == Partitioning::Global {
                if let Some(p) = op.common.parallelism.as_ref().filter(|p| p.value > 1) {
                    self.err(&p.origin, who.to_string(), format!("a global {} (no key_by) runs with parallelism 1", op.kind.label()));
                }
                parallelism = 1;
            }
            return (parallelism, vec![exchange]);
        }
        let mut out = Vec::new();
        for &input in inputs {
            let up = self.nodes[input].parallelism;
            out.push(match op.partitioning.as_ref().map(|h| (h.value, &h.origin)) {
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
            });
        }
        (parallelism, out)
    }

    fn sink(&mut self, s: &SinkSpec) {
        let who = format!("sink '{}'", s.common.name.value);
        let Some(input) = self.input_id(&s.input.value) else {
            return;
        };
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
            // After a global sort, one writer keeps the order.
            (None, p) => p.as_ref().map_or(if self.nodes[input].ordered { 1 } else { self.parallelism }, |p| p.value),
        };
        let (kind, label, detail) = match s.format {
            SinkFormat::Stdout => (NodeKind::StdoutSink(s.style), "sink stdout".to_string(), format!("{:?}", s.style).to_lowercase()),
            format => {
                let Some(path) = &s.path else { return };
                let full = if PathBuf::from(&path.value).is_absolute() { PathBuf::from(&path.value) } else { self.spec.base_dir.join(&path.value) };
                if !s.single_file && full.is_file() {
                    self.err(&path.origin, who.clone(), format!("{} is a file; a sink with single_file = false writes a directory of part files", path.value));
                }
                let mut missing = false;
                for k in &s.partition_by {
                    missing |= !self.columns_exist(std::slice::from_ref(&k.value), k, &schema, &who);
                }
                if missing {
                    return;
                }
                let partition_by = s.partition_by.iter().map(|k| k.value.clone()).collect();
                let config = SinkConfig {
                    name: s.common.name.value.clone(),
                    format,
                    path: full,
                    single_file: s.single_file,
                    header: s.header,
                    partition_by,
                    roll_bytes: s.roll_bytes,
                    roll_interval: s.roll_interval.map(|ms| std::time::Duration::from_millis(ms as u64)),
                };
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

/// The schema a node emits for input rows of `inputs` (one schema per input), found by running
/// it on empty frames.
pub fn output_schema(kind: &NodeKind, inputs: &[SchemaRef]) -> PolarsResult<Schema> {
    let input = &inputs[0];
    let empty = DataFrame::empty_with_schema(input).lazy();
    let out = match kind {
        NodeKind::Join(plan) => plan.apply(empty, DataFrame::empty_with_schema(&inputs[1]).lazy()),
        NodeKind::Window(plan) => plan.output(empty)?,
        NodeKind::Running { plan, .. } => {
            let result = plan.single_phase(empty);
            let schema = result.clone().collect_schema()?;
            crate::exec::operators::running::with_op(result, lit("+I"), &schema)
        }
        NodeKind::Watermark { time, .. } => empty.with_column(time.clone().alias("__rv_time_check")).drop(by_name(["__rv_time_check"], true, false)),
        NodeKind::Stateless(step) => step.apply(empty),
        NodeKind::Reduce(r) => r.single_phase(empty, input)?,
        NodeKind::PartialReduce(r) => r.partial(empty, input),
        NodeKind::FinalReduce(r) => r.finalize(r.merge(empty, input)),
        NodeKind::SideOutput(_) => return Ok(crate::exec::dead_letter::schema()),
        NodeKind::Source(_) | NodeKind::FileSink(_) | NodeKind::StdoutSink(_) => {
            let mut s = (**input).clone();
            s.shift_remove(SEQ_COLUMN);
            return Ok(s);
        }
    };
    Ok((**out.with_optimizations(super::expr::TYPE_CHECKS_ONLY).collect()?.schema()).clone())
}
