//! Runs an execution graph: builds every subtask, connects them with bounded channels, runs
//! each on its own thread, and commits sink output on success.
//!
//! Each subtask gets its own pool thread (`broadcast` runs exactly one closure per thread), so
//! a subtask blocked on a full or empty channel never holds a thread another subtask needs:
//! no deadlock at any parallelism. The first error is kept, every subtask is told to stop,
//! channels close as subtasks exit, and sink output of a failed run is deleted.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::exchange::{ExchangeOutput, Target};
use super::guard::panic_message;
use super::join_filter::JoinFilterSlot;
use super::message::Envelope;
use super::metrics::Metrics;
use super::operator::Operator;
use super::operators::fork::Fork;
use super::operators::hash_aggregate::{HashAggregateOperator, Prefilter};
use super::operators::join::{JoinOperator, SharedBuild, Strategy};
use super::operators::reduce::{Phase, Reduce, ReduceOperator};
use super::operators::running::RunningAggregate;
use super::operators::stateless::{FusedStep, StatelessOperator, Step};
use super::operators::watermark::WatermarkOperator;
use super::operators::window::WindowOperator;
use super::sink::{PendingCommit, Sink, commit_all};
use super::sinks::{FileSink, StdoutSink};
use super::source::{SourceContext, StopRequest};
use super::sources::{FileSource, FollowInput, FollowSource, SourceSplits, StreamSource};
use super::task::{ForkExchange, MainOutput, SideExchange, SideInputs, Subtask, TaskInput, TaskOutput};
use crate::error::{Error, Result};
use crate::plan::execution::ExecutionGraph;
use crate::plan::logical::{NodeKind, Partitioning};

/// What a finished run reports.
pub struct RunReport {
    /// Counters per node of the stream graph.
    pub metrics: Arc<Metrics>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// Called about once per 100 ms while the job runs (progress display).
pub type Ticker<'a> = &'a (dyn Fn(&Metrics) + Sync);

/// Runs the job to completion. `cancel` may be set from outside (Ctrl-C) to abort it (output
/// is discarded); `stop` asks unbounded sources to finish, so the job ends cleanly.
pub fn execute(exec: &ExecutionGraph, cancel: Arc<AtomicBool>, stop: StopRequest, ticker: Option<Ticker<'_>>) -> Result<RunReport> {
    let start = Instant::now();
    let job = &exec.job;
    let stream = &job.stream;
    let metrics = Arc::new(Metrics::new(stream.nodes.len()));

    // One bounded queue per downstream subtask (two for a join that reads its right input
    // first: one per input); each upstream channel gets an index there. Per downstream subtask:
    // its queues, and the input port of each channel into it.
    let split_ports = |v: &crate::plan::job_graph::JobVertex| matches!(&stream.nodes[v.nodes[0]].kind, NodeKind::Join(plan) if plan.build_first);
    type Queue = (Vec<(Sender<Envelope>, Option<Receiver<Envelope>>)>, Vec<usize>);
    let mut queues: Vec<Vec<Queue>> = job
        .vertices
        .iter()
        .map(|v| {
            let n = if split_ports(v) { 2 } else { 1 };
            (0..v.parallelism)
                .map(|_| {
                    let qs = (0..n).map(|_| bounded(stream.channel_capacity)).map(|(tx, rx)| (tx, Some(rx))).collect();
                    (qs, Vec::new())
                })
                .collect()
        })
        .collect();
    // Per subtask of a task that took in joins with their left input: one more bounded queue,
    // for the joins' right sides, and per channel into it the join node and its input port.
    type SideQueue = Option<(Sender<Envelope>, Option<Receiver<Envelope>>, Vec<(usize, usize)>)>;
    let mut side_queues: Vec<Vec<SideQueue>> = job
        .vertices
        .iter()
        .enumerate()
        .map(|(t, v)| {
            let chained_inputs = job.edges.iter().any(|e| e.to == t && job.feeds_mid_chain(e));
            (0..v.parallelism)
                .map(|_| {
                    chained_inputs.then(|| {
                        let (tx, rx) = bounded(stream.channel_capacity);
                        (tx, Some(rx), Vec::new())
                    })
                })
                .collect()
        })
        .collect();
    let mut outputs: Vec<Vec<Vec<ExchangeOutput>>> = job.vertices.iter().map(|v| (0..v.parallelism).map(|_| Vec::new()).collect()).collect();
    let mut sides: Vec<Vec<Vec<SideExchange>>> = job.vertices.iter().map(|v| (0..v.parallelism).map(|_| Vec::new()).collect()).collect();
    let mut forks: Vec<Vec<Vec<ForkExchange>>> = job.vertices.iter().map(|v| (0..v.parallelism).map(|_| Vec::new()).collect()).collect();
    for (e, edge) in job.edges.iter().enumerate() {
        let up = job.vertices[edge.from].parallelism;
        // Which input of the downstream operator this edge feeds (a join's left or right).
        let port = edge.port;
        let side_tag = match &stream.nodes[edge.to_node].kind {
            NodeKind::SideOutput(tag) => Some(tag.clone()),
            _ => None,
        };
        for from in 0..up {
            let mut targets = Vec::new();
            for c in exec.edge_channels(e).filter(|c| c.from == from) {
                if job.feeds_mid_chain(edge) {
                    let q = side_queues[edge.to][c.to].as_mut().expect("a side queue where the chain takes inputs");
                    targets.push(Target { sender: q.0.clone(), channel: q.2.len() });
                    q.2.push((edge.to_node, port));
                    continue;
                }
                let q = &mut queues[edge.to][c.to];
                let sender = q.0[port.min(q.0.len() - 1)].0.clone();
                targets.push(Target { sender, channel: q.1.len() });
                q.1.push(port);
            }
            let name = stream.nodes[edge.from_node].name.clone();
            let exchange = ExchangeOutput::new(edge.partitioning.clone(), targets, from, name);
            match &side_tag {
                Some(tag) => sides[edge.from][from].push(SideExchange { node: edge.from_node, tag: tag.clone(), side_node: edge.to_node, exchange }),
                None if job.leaves_mid_chain(edge) => forks[edge.from][from].push(ForkExchange { node: edge.from_node, exchange }),
                None => outputs[edge.from][from].push(exchange),
            }
        }
    }

    // Per source, once for all its subtasks: the splits, listed when first asked for.
    let splits: Vec<Option<Arc<SourceSplits>>> = stream
        .nodes
        .iter()
        .map(|n| match &n.kind {
            NodeKind::Source(config) => Some(Arc::new(SourceSplits::new(Arc::new(config.clone())))),
            _ => None,
        })
        .collect();

    // Per join that filters its left side's reader: where its keys go (see `join_filter`).
    let join_keys: Vec<Option<Arc<JoinFilterSlot>>> = stream
        .nodes
        .iter()
        .map(|n| match &n.kind {
            NodeKind::Join(plan) if plan.filter_key.is_some() => {
                // Each subtask of a hash-partitioned join holds a part of the keys.
                let parts = if plan.strategy == Strategy::BroadcastRight { 1 } else { n.parallelism };
                Some(Arc::new(JoinFilterSlot::new(parts)))
            }
            _ => None,
        })
        .collect();
    // Per broadcast join: the build its subtasks share.
    let shared_builds: Vec<Option<Arc<SharedBuild>>> = stream
        .nodes
        .iter()
        .map(|n| match &n.kind {
            NodeKind::Join(plan) if plan.strategy == Strategy::BroadcastRight && n.parallelism > 1 => Some(Arc::default()),
            _ => None,
        })
        .collect();

    // Rolling file sinks publish parts while they run: the parts of an earlier run go first
    // (other sinks replace them when they commit).
    for node in &stream.nodes {
        if let NodeKind::FileSink(config) = &node.kind
            && config.rolls()
        {
            super::sink::remove_old_parts(&config.path)?;
        }
    }
    let mut subtasks: Vec<Subtask> = Vec::new();
    for (t, vertex) in job.vertices.iter().enumerate() {
        for i in 0..vertex.parallelism {
            let first = vertex.nodes[0];
            let last = *vertex.nodes.last().expect("a task has operators");
            let context =
                SourceContext { subtask: i, parallelism: vertex.parallelism, batch_rows: stream.batch_rows, cancel: cancel.clone(), stop: stop.flag() };
            let input = match &stream.nodes[first].kind {
                NodeKind::Source(config) if config.follow.is_some() => {
                    let config = Arc::new(config.clone());
                    let source: Box<dyn super::source::Source> = match config.follow.as_ref().map(|f| &f.input) {
                        Some(FollowInput::Stdin | FollowInput::Tcp(_)) => Box::new(StreamSource::new(config, first, metrics.clone())),
                        _ => Box::new(FollowSource::new(config, first, metrics.clone())),
                    };
                    TaskInput::Source(source)
                }
                NodeKind::Source(_) => {
                    let splits = splits[first].clone().expect("sources have splits");
                    let join = splits.config().join_filter.as_ref().and_then(|j| join_keys[j.join].clone());
                    let source = FileSource::new(splits, first, metrics.clone());
                    TaskInput::Source(Box::new(match join {
                        Some(slot) => source.with_join_keys(slot),
                        None => source,
                    }))
                }
                _ => {
                    let q = &mut queues[t][i];
                    let receivers = q.0.iter_mut().map(|(_, rx)| rx.take().expect("one receiver per queue")).collect();
                    TaskInput::Channels { receivers, ports: std::mem::take(&mut q.1) }
                }
            };
            let main = match &stream.nodes[last].kind {
                NodeKind::FileSink(config) => {
                    let sink: Box<dyn Sink> = Box::new(FileSink::new(config.clone(), i, stream.nodes[last].schema.clone()));
                    MainOutput::Sink { sink, node: last, metrics: metrics.clone() }
                }
                NodeKind::StdoutSink(style) => {
                    let sink: Box<dyn Sink> = Box::new(StdoutSink::new(stream.nodes[last].name.clone(), *style, stream.nodes[last].schema.clone()));
                    MainOutput::Sink { sink, node: last, metrics: metrics.clone() }
                }
                _ => MainOutput::Exchanges(std::mem::take(&mut outputs[t][i])),
            };
            let output = TaskOutput { main, sides: std::mem::take(&mut sides[t][i]), forks: std::mem::take(&mut forks[t][i]), metrics: metrics.clone() };
            let (operators, op_nodes) = build_operators(exec, t, i, &join_keys, &shared_builds, &metrics, &stop);
            let sides = side_queues[t][i].as_mut().map(|(_, receiver, inputs)| {
                let position = |node: usize| op_nodes.iter().position(|&n| n == node).expect("a chained join is an operator of its task");
                let inputs = inputs.iter().map(|&(node, port)| (position(node), port)).collect();
                SideInputs { receiver: receiver.take().expect("one receiver per queue"), inputs }
            });
            let name = crate::plan::explain::subtask_name(exec, t, i);
            subtasks.push(Subtask { name, input, operators, output, context, first_node: first, sides });
        }
    }
    // Only subtasks hold senders now: a queue closes when all its upstream subtasks are gone.
    drop(queues);
    drop(side_queues);

    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let pending: Mutex<Vec<PendingCommit>> = Mutex::new(Vec::new());
    let running = AtomicBool::new(true);
    std::thread::scope(|scope| {
        if let Some(tick) = ticker {
            let metrics = metrics.clone();
            let running = &running;
            scope.spawn(move || {
                while running.load(Ordering::Relaxed) {
                    tick(&metrics);
                    std::thread::sleep(Duration::from_millis(100));
                }
                tick(&metrics);
            });
        }
        // Plain threads, not a rayon pool: a rayon worker that waits for a job it handed to
        // polars' pool spins with sched_yield instead of sleeping, and with a dozen subtasks on
        // 2 cores that spinning took up to half the CPU time (TPC-H Q18: 0.9 s of sys time).
        let handles: Vec<_> = subtasks
            .into_iter()
            .map(|subtask| {
                let (first_error, pending, cancel) = (&first_error, &pending, &cancel);
                std::thread::Builder::new().name(thread_name(&subtask.name)).spawn_scoped(scope, move || {
                    let name = subtask.name.clone();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| subtask.run())).unwrap_or_else(|panic| {
                        Err(Error::execution("subtask", &name, format!("panicked (a bug in rivulet): {}", panic_message(panic.as_ref()))))
                    });
                    match result {
                        Ok(commits) => pending.lock().expect("pending").extend(commits),
                        Err(Error::Cancelled) => {}
                        Err(e) => {
                            let mut slot = first_error.lock().expect("error slot");
                            if slot.is_none() {
                                *slot = Some(e);
                            }
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            match handle {
                Ok(handle) => {
                    let _ = handle.join();
                }
                Err(e) => {
                    first_error.lock().expect("error slot").get_or_insert(Error::execution("job", &stream.name, format!("cannot start a thread: {e}")));
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        running.store(false, Ordering::Relaxed);
    });
    let pending = pending.into_inner().expect("pending");
    let error = first_error.into_inner().expect("error slot");
    let error = error.or_else(|| cancel.load(Ordering::Relaxed).then_some(Error::Cancelled)).or_else(|| {
        // Every text file must have been read exactly once, end to end.
        splits.iter().flatten().find_map(|s| {
            let (config, listed) = (s.config(), s.listed()?);
            match config.format {
                crate::pipeline::SourceFormat::Parquet | crate::pipeline::SourceFormat::Ipc => None,
                _ if config.follow.is_some() => None,
                _ => listed.log.verify(&listed.splits, config).err(),
            }
        })
    });
    if let Some(e) = error {
        pending.into_iter().for_each(PendingCommit::abort);
        return Err(e);
    }
    commit_all(pending)?;
    Ok(RunReport { metrics, elapsed: start.elapsed() })
}

/// A subtask's thread name (`orders[1]`, as `top -H` and profilers show it): Linux keeps 15
/// bytes of it, so a long operator name is cut before its subtask index.
fn thread_name(subtask: &str) -> String {
    const MOST: usize = 15;
    if subtask.len() <= MOST {
        return subtask.to_string();
    }
    let (name, index) = match subtask.rsplit_once('[') {
        Some((name, index)) => (name, format!("[{index}")),
        None => (subtask, String::new()),
    };
    let room = MOST.saturating_sub(index.len()).min(name.len());
    let cut = (0..=room).rev().find(|&i| name.is_char_boundary(i)).unwrap_or(0);
    format!("{}{index}", &name[..cut])
}

/// The operators of subtask `subtask` of task `t` between its input and its output, fused
/// where possible, and the node each of them starts with.
fn build_operators(
    exec: &ExecutionGraph,
    t: usize,
    subtask: usize,
    join_keys: &[Option<Arc<JoinFilterSlot>>],
    shared_builds: &[Option<Arc<SharedBuild>>],
    metrics: &Arc<Metrics>,
    stop: &StopRequest,
) -> (Vec<Box<dyn Operator>>, Vec<usize>) {
    let stream = &exec.job.stream;
    let mut ops: Vec<Box<dyn Operator>> = Vec::new();
    // The node each operator starts with (its group's first).
    let mut heads: Vec<usize> = Vec::new();
    // Lone filters that the partial aggregate right after them runs itself (see `Prefilter`).
    let prefilters = exec.job.prefilters(t);
    // Nodes whose rows also leave the chain: each ends its group, and a `Fork` follows it.
    let forks = exec.job.forks(t);
    let mut fork_after = None;
    for group in exec.job.fused_groups(t) {
        if let Some(node) = fork_after.take() {
            ops.push(Box::new(Fork::new(node)));
            heads.resize(ops.len(), node);
        }
        fork_after = group.last().filter(|n| forks.contains(n)).copied();
        let node = &stream.nodes[group[0]];
        let input_schema = stream.inputs(group[0]).next().map(|e| stream.nodes[e.from].schema.clone());
        match &node.kind {
            NodeKind::Stateless(_) => {
                let steps = group
                    .iter()
                    .map(|&id| match &stream.nodes[id].kind {
                        NodeKind::Stateless(step) => {
                            FusedStep { id, name: stream.nodes[id].name.clone(), step: step.clone(), on_error: stream.nodes[id].on_error }
                        }
                        _ => unreachable!("fused groups hold stateless steps only"),
                    })
                    .collect();
                ops.push(Box::new(StatelessOperator::new(steps, metrics.clone())));
            }
            NodeKind::PartialReduce(reduce) | NodeKind::FinalReduce(reduce) => {
                let phase = if matches!(node.kind, NodeKind::PartialReduce(_)) { Phase::Partial } else { Phase::Final };
                let input = input_schema.expect("reductions have an input");
                // The state has the partial phase's schema: its output, or the final's input.
                let state = if phase == Phase::Partial { node.schema.clone() } else { input.clone() };
                // Integer or string keys and foldable aggregates go into a hash table of
                // accumulators. Its choice reads the rows the partial phase gets (for the final
                // phase: the partial's input), as `explain` does.
                let raw = match phase {
                    Phase::Partial => Some(input.clone()),
                    Phase::Final => stream
                        .inputs(group[0])
                        .find(|e| matches!(stream.nodes[e.from].kind, NodeKind::PartialReduce(_)))
                        .and_then(|e| stream.inputs(e.from).next())
                        .map(|e| stream.nodes[e.from].schema.clone()),
                };
                let table = match (reduce, raw) {
                    (Reduce::Aggregate(plan), Some(raw)) => {
                        HashAggregateOperator::new(node.name.clone(), group[0], plan, phase, stream.batch_rows, &raw, &state, metrics.clone())
                    }
                    _ => None,
                };
                debug_assert_eq!(
                    table.is_some(),
                    node.notes.iter().any(|n| n.contains("state: hash table")),
                    "{}: explain and the runtime disagree on the state",
                    node.name
                );
                // A partial and a final phase joined by a forward edge aggregate a source whose
                // splits hold whole groups (see `optimize::clustered_aggregation`).
                let clustered = match phase {
                    Phase::Partial => {
                        stream.outputs(group[0]).any(|e| e.partitioning == Partitioning::Forward && matches!(stream.nodes[e.to].kind, NodeKind::FinalReduce(_)))
                    }
                    Phase::Final => stream
                        .inputs(group[0])
                        .any(|e| e.partitioning == Partitioning::Forward && matches!(stream.nodes[e.from].kind, NodeKind::PartialReduce(_))),
                };
                let table = table.map(|op| if clustered { op.per_split() } else { op });
                if let Some(op) = table {
                    match prefilters.iter().find(|(_, aggregate)| *aggregate == group[0]) {
                        Some(&(filter, _)) => {
                            let NodeKind::Stateless(Step::Filter(predicate)) = &stream.nodes[filter].kind else { unreachable!("a prefilter is a filter") };
                            ops.pop().expect("the filter was the last operator built");
                            heads.pop();
                            let filter = Prefilter { node: filter, name: stream.nodes[filter].name.clone(), predicate: predicate.clone() };
                            ops.push(Box::new(op.with_prefilter(filter)));
                        }
                        None => ops.push(Box::new(op)),
                    }
                    heads.resize(ops.len(), group[0]);
                    continue;
                }
                let op = ReduceOperator::new(node.name.clone(), group[0], reduce.clone(), phase, stream.batch_rows, input, state, metrics.clone());
                ops.push(Box::new(op));
            }
            NodeKind::Join(plan) => {
                let schema_of = |port: usize| stream.inputs(group[0]).nth(port).map(|e| stream.nodes[e.from].schema.clone()).expect("joins have two inputs");
                let op = JoinOperator::new(node.name.clone(), group[0], plan.clone(), schema_of(0), schema_of(1), stream.batch_rows, metrics.clone());
                let op = match &shared_builds[group[0]] {
                    Some(slot) => op.with_shared_build(slot.clone()),
                    None => op,
                };
                ops.push(Box::new(match &join_keys[group[0]] {
                    // Every subtask of a broadcast join holds all the keys: the first gives them.
                    Some(slot) => op.with_keys_to(slot.clone(), if plan.strategy == Strategy::BroadcastRight { 0 } else { subtask }),
                    None => op,
                }));
            }
            NodeKind::Running { plan, ttl } => {
                let op = RunningAggregate::new(node.name.clone(), group[0], plan.clone(), *ttl, stream.batch_rows, metrics.clone());
                ops.push(Box::new(op));
            }
            NodeKind::Window(plan) => {
                ops.push(Box::new(WindowOperator::new(
                    node.name.clone(),
                    group[0],
                    plan.clone(),
                    stream.batch_rows,
                    metrics.clone(),
                    stop.clone(),
                    node.on_error,
                )));
            }
            NodeKind::Watermark { time, max_delay, idle_timeout } => {
                ops.push(Box::new(WatermarkOperator::new(
                    node.name.clone(),
                    group[0],
                    time.clone(),
                    *max_delay,
                    *idle_timeout,
                    node.on_error,
                    metrics.clone(),
                )));
            }
            // Sources and sinks are the task's input and output, and a side output's rows come
            // from its owner: none of them is a chained operator.
            NodeKind::Source(_) | NodeKind::FileSink(_) | NodeKind::StdoutSink(_) | NodeKind::SideOutput(_) | NodeKind::Reduce(_) => {}
        }
        heads.resize(ops.len(), group[0]);
    }
    if let Some(node) = fork_after {
        ops.push(Box::new(Fork::new(node)));
        heads.resize(ops.len(), node);
    }
    (ops, heads)
}

#[cfg(test)]
mod tests {
    use super::thread_name;

    #[test]
    fn thread_names_keep_the_subtask_index_within_15_bytes() {
        assert_eq!(thread_name("orders[1]"), "orders[1]");
        assert_eq!(thread_name("customer_orders[1]"), "customer_ord[1]");
        assert_eq!(thread_name("revenue/partial[12]"), "revenue/par[12]");
        assert_eq!(thread_name("ééééééééé[0]"), "éééééé[0]");
        assert_eq!(thread_name("a_very_long_name_without_index"), "a_very_long_nam");
    }
}
