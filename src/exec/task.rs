//! One subtask: its input (a source, or a channel fed by upstream subtasks), its chain of
//! operators, and its output (exchanges to downstream subtasks, or a sink).
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use polars::prelude::DataFrame;

use super::alignment::Alignment;
use super::exchange::ExchangeOutput;
use super::message::{Envelope, Message};
use super::metrics::{Metrics, NodeMetrics};
use super::operator::{Chain, Collector, Operator};
use super::operators::stateless::SEQ_COLUMN;
use super::sink::{PendingCommit, Sink};
use super::source::{Poll, Source, SourceContext};
use crate::error::{Error, Result};
use crate::pipeline::DEAD_LETTER;

/// Where a subtask's rows come from.
pub enum TaskInput {
    /// A source it polls.
    Source(Box<dyn Source>),
    /// Queues fed by upstream channels, each ending with `End`.
    Channels {
        /// The subtask's bounded input queue; or two, one per input port, for a join that
        /// reads its right input (port 1) to the end before its left one.
        receivers: Vec<Receiver<Envelope>>,
        /// The input port of each channel (index = channel): which input of the first operator
        /// it feeds.
        ports: Vec<usize>,
    },
}

/// The right (build) sides of joins chained with their left input, which the subtask reads to
/// the end before its own input (see `plan::job_graph::chains_with_left`).
pub struct SideInputs {
    /// The subtask's bounded queue for them.
    pub receiver: Receiver<Envelope>,
    /// Per channel (index = channel): the operator of the chain it feeds, by position, and the
    /// operator's input port.
    pub inputs: Vec<(usize, usize)>,
}

impl SideInputs {
    /// Reads every channel to its end, handing its batches to its operator, and tells each
    /// operator when all the channels of its input have ended.
    fn drain(&self, chain: &mut Chain<'_>, context: &SourceContext, subtask: &str) -> Result<()> {
        let mut ended = vec![false; self.inputs.len()];
        let mut open = self.inputs.len();
        while open > 0 {
            let Envelope { channel, message } = match self.receiver.recv_timeout(Duration::from_millis(50)) {
                Ok(envelope) => envelope,
                Err(RecvTimeoutError::Timeout) if !context.cancelled() => continue,
                Err(_) => return Err(Error::Cancelled),
            };
            let (op, port) = self.inputs[channel];
            match message {
                Message::Batch(df) => chain.collect_port(op, port, df)?,
                Message::End => {
                    if !std::mem::replace(&mut ended[channel], true) {
                        open -= 1;
                        if (0..ended.len()).all(|c| ended[c] || self.inputs[c] != (op, port)) {
                            chain.end_of_input(op, port)?;
                        }
                    }
                }
                // The task's event time comes from its own input, which has not started: a
                // watermark of the side read before it could not move anything on.
                Message::Watermark(_) | Message::Idle => {}
                // Only bounded jobs chain joins this way, and they take no checkpoints.
                Message::Barrier(checkpoint) => {
                    return Err(Error::execution(
                        "subtask",
                        subtask,
                        format!("checkpoint barrier {checkpoint} reached a join chained with its left input (a bug in rivulet)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a subtask's rows go.
pub enum MainOutput {
    /// To downstream subtasks, over one exchange per outgoing edge.
    Exchanges(Vec<ExchangeOutput>),
    /// Out of the pipeline.
    Sink {
        /// The sink.
        sink: Box<dyn Sink>,
        /// Its node id, for counting rows written.
        node: usize,
        /// Shared counters.
        metrics: Arc<Metrics>,
    },
}

/// The exchange of a side output (`<node>.<tag>`) of one of the subtask's operators.
pub struct SideExchange {
    /// The node whose side output this is.
    pub node: usize,
    /// The side output's tag (`dead_letter`).
    pub tag: String,
    /// The side-output node of the graph (its rows are counted there).
    pub side_node: usize,
    /// The exchange to the side output's consumers.
    pub exchange: ExchangeOutput,
}

/// An exchange that takes the rows of an operator in the middle of the chain, which is
/// chained to another of its consumers (see [`crate::exec::operators::fork::Fork`]).
pub struct ForkExchange {
    /// The node whose rows these are.
    pub node: usize,
    /// The exchange to the consumer outside the chain.
    pub exchange: ExchangeOutput,
}

/// A subtask's main output and the side outputs of its operators.
pub struct TaskOutput {
    /// Rows the last operator emits.
    pub main: MainOutput,
    /// Side outputs of any operator of the chain.
    pub sides: Vec<SideExchange>,
    /// Outputs of operators in the middle of the chain.
    pub forks: Vec<ForkExchange>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
}

impl Collector for TaskOutput {
    fn collect(&mut self, batch: DataFrame) -> Result<()> {
        match &mut self.main {
            MainOutput::Exchanges(exchanges) => match exchanges.as_mut_slice() {
                [one] => one.collect(batch),
                many => many.iter_mut().try_for_each(|x| x.collect(batch.clone())),
            },
            MainOutput::Sink { sink, node, metrics } => {
                let batch = if batch.schema().contains(SEQ_COLUMN) { batch.drop(SEQ_COLUMN).map_err(|e| Error::execution("sink", "?", e))? } else { batch };
                let m = &metrics.nodes[*node];
                NodeMetrics::add(&m.rows_in, batch.height() as u64);
                let start = std::time::Instant::now();
                sink.write(&batch)?;
                m.add_time(start.elapsed());
                NodeMetrics::add(&m.rows_out, batch.height() as u64);
                Ok(())
            }
        }
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.sides.iter_mut().try_for_each(|s| s.exchange.watermark(watermark))?;
        match &mut self.main {
            MainOutput::Exchanges(exchanges) => exchanges.iter_mut().try_for_each(|x| x.watermark(watermark)),
            MainOutput::Sink { .. } => Ok(()),
        }
    }

    fn idle(&mut self) -> Result<()> {
        self.sides.iter_mut().try_for_each(|s| s.exchange.idle())?;
        match &mut self.main {
            MainOutput::Exchanges(exchanges) => exchanges.iter_mut().try_for_each(|x| x.idle()),
            MainOutput::Sink { .. } => Ok(()),
        }
    }

    fn barrier(&mut self, checkpoint: u64) -> Result<()> {
        self.forks.iter_mut().try_for_each(|f| f.exchange.barrier(checkpoint))?;
        self.sides.iter_mut().try_for_each(|s| s.exchange.barrier(checkpoint))?;
        match &mut self.main {
            MainOutput::Exchanges(exchanges) => exchanges.iter_mut().try_for_each(|x| x.barrier(checkpoint)),
            // A sink ends the stream: it will pre-commit here (the checkpoint issue).
            MainOutput::Sink { .. } => Ok(()),
        }
    }

    fn side_output(&mut self, node: usize, tag: &str, batch: DataFrame) -> Result<()> {
        let Some(side) = self.sides.iter_mut().find(|s| s.node == node && s.tag == tag) else {
            return Err(Error::execution("operator", &format!("#{node}"), format!("side output '{tag}' has no consumer")));
        };
        let m = &self.metrics.nodes[side.side_node];
        NodeMetrics::add(&m.rows_in, batch.height() as u64);
        NodeMetrics::add(&m.rows_out, batch.height() as u64);
        side.exchange.collect(batch)
    }

    fn fork(&mut self, node: usize, message: Message) -> Result<()> {
        for fork in self.forks.iter_mut().filter(|f| f.node == node) {
            match &message {
                Message::Batch(batch) => fork.exchange.collect(batch.clone())?,
                Message::Watermark(w) => fork.exchange.watermark(*w)?,
                Message::Idle => fork.exchange.idle()?,
                Message::Barrier(checkpoint) => fork.exchange.barrier(*checkpoint)?,
                Message::End => fork.exchange.end()?,
            }
        }
        Ok(())
    }
}

/// Moves the subtask's watermark to the minimum over its input channels that are open and not
/// idle, when that is later than `current`. With every open channel idle, it stays.
fn advance(current: &mut i64, watermarks: &[i64], ended: &[bool], idle: &[bool], chain: &mut Chain<'_>) -> Result<()> {
    let active = (0..watermarks.len()).filter(|&c| !ended[c] && !idle[c]);
    let all_done = (0..watermarks.len()).all(|c| ended[c]);
    let min = match active.map(|c| watermarks[c]).min() {
        Some(m) => m,
        None if all_done => i64::MAX,
        None => return Ok(()),
    };
    if min > *current {
        *current = min;
        chain.watermark(min)?;
    }
    Ok(())
}

/// Everything one subtask runs.
pub struct Subtask {
    /// `task[index]`, for messages.
    pub name: String,
    /// Input.
    pub input: TaskInput,
    /// Chained operators.
    pub operators: Vec<Box<dyn Operator>>,
    /// Output.
    pub output: TaskOutput,
    /// Position in the job and the cancel flag.
    pub context: SourceContext,
    /// Node id of the first operator (a source's, for its dead-letter rows).
    pub first_node: usize,
    /// Inputs read to the end before `input`.
    pub sides: Option<SideInputs>,
}

impl Subtask {
    /// Runs to the end of input; returns the sink output to commit. `Err(Cancelled)`
    /// means another subtask failed first.
    pub fn run(mut self) -> Result<Vec<PendingCommit>> {
        if let MainOutput::Sink { sink, .. } = &mut self.output.main {
            sink.open()?;
        }
        let mut chain = Chain::new(&mut self.operators, &mut self.output);
        if let TaskInput::Source(source) = &mut self.input {
            source.open(&self.context)?;
            if self.sides.is_some() {
                source.prepare()?;
            }
        }
        if let Some(sides) = &self.sides {
            sides.drain(&mut chain, &self.context, &self.name)?;
        }
        match &mut self.input {
            TaskInput::Source(source) => loop {
                if self.context.cancelled() {
                    return Err(Error::Cancelled);
                }
                match source.poll()? {
                    Poll::Batch(df) => chain.collect(df)?,
                    Poll::Rejected(df) => chain.side_output(self.first_node, DEAD_LETTER, df)?,
                    Poll::Idle => {
                        chain.tick()?;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Poll::SplitEnd => chain.end_of_split()?,
                    Poll::Finished => break,
                }
            },
            TaskInput::Channels { receivers, ports } => {
                let channels = ports.len();
                let mut ended = vec![false; channels];
                let mut open = channels;
                let mut open_per_port = vec![0usize; ports.iter().max().map_or(0, |m| m + 1)];
                for &p in ports.iter() {
                    open_per_port[p] += 1;
                }
                let mut watermarks = vec![i64::MIN; channels];
                let mut idle = vec![false; channels];
                let mut current = i64::MIN;
                let mut alignment = Alignment::new(channels);
                while open > 0 {
                    let next = match alignment.next_released() {
                        Some(released) => Ok(released),
                        None => {
                            let queue = if receivers.len() > 1 && open_per_port[1] > 0 { 1 } else { 0 };
                            receivers[queue].recv_timeout(Duration::from_millis(50))
                        }
                    };
                    let next = match next {
                        Ok(envelope) => match alignment.hold(envelope) {
                            Some(envelope) => Ok(envelope),
                            None => continue,
                        },
                        other => other,
                    };
                    match next {
                        Ok(Envelope { channel, message }) => match message {
                            Message::Batch(df) => {
                                idle[channel] = false;
                                chain.collect_port(0, ports[channel], df)?
                            }
                            Message::Watermark(w) => {
                                idle[channel] = false;
                                watermarks[channel] = watermarks[channel].max(w);
                                advance(&mut current, &watermarks, &ended, &idle, &mut chain)?;
                            }
                            Message::Idle => {
                                idle[channel] = true;
                                advance(&mut current, &watermarks, &ended, &idle, &mut chain)?;
                            }
                            Message::Barrier(checkpoint) => {
                                if let Some(aligned) = alignment.arrived(channel, checkpoint, &ended) {
                                    chain.barrier(aligned)?;
                                }
                            }
                            Message::End => {
                                if let Some(aligned) = alignment.ended(channel, &ended) {
                                    chain.barrier(aligned)?;
                                }
                                if !std::mem::replace(&mut ended[channel], true) {
                                    open -= 1;
                                    let port = ports[channel];
                                    open_per_port[port] -= 1;
                                    if open_per_port[port] == 0 {
                                        chain.end_of_input(0, port)?;
                                    }
                                    // The slowest channel may have been this one.
                                    advance(&mut current, &watermarks, &ended, &idle, &mut chain)?;
                                }
                            }
                        },
                        Err(RecvTimeoutError::Timeout) if self.context.cancelled() => {
                            return Err(Error::Cancelled);
                        }
                        // Quiet inputs: time-based work (a watermark operator's idle timeout).
                        Err(RecvTimeoutError::Timeout) => chain.tick()?,
                        Err(RecvTimeoutError::Disconnected) => return Err(Error::Cancelled),
                    }
                }
                if !alignment.is_empty() {
                    // Every channel ended, so nothing can be held back any more.
                    return Err(Error::execution("subtask", &self.name, "messages were still held for a checkpoint barrier at the end (a bug in rivulet)"));
                }
            }
        }
        chain.finish()?;
        self.output.sides.iter_mut().try_for_each(|s| s.exchange.end())?;
        match &mut self.output.main {
            MainOutput::Exchanges(exchanges) => {
                exchanges.iter_mut().try_for_each(ExchangeOutput::end)?;
                Ok(Vec::new())
            }
            MainOutput::Sink { sink, .. } => sink.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use crossbeam_channel::unbounded;
    use polars::df;

    use super::*;
    use crate::exec::exchange::Target;
    use crate::plan::logical::Partitioning;

    /// Runs a subtask without operators over `channels` input channels fed `messages` (channel,
    /// message), and returns what it sends on: batches by their value, barriers, end (watermarks
    /// left out).
    fn run_channels(channels: usize, messages: Vec<(usize, Message)>) -> Vec<String> {
        run_subtask(Vec::new(), channels, messages, None)
    }

    /// Side inputs of a test subtask: the operator and port of each channel, and the messages.
    type Sides = (Vec<(usize, usize)>, Vec<(usize, Message)>);

    /// Runs a subtask of `operators` over `channels` input channels fed `messages`, and over
    /// side inputs (the operator and port of each channel, and their messages), and returns what
    /// it sends on, as [`run_channels`] does.
    fn run_subtask(operators: Vec<Box<dyn Operator>>, channels: usize, messages: Vec<(usize, Message)>, sides: Option<Sides>) -> Vec<String> {
        let (input, receiver) = unbounded();
        let (downstream, output) = unbounded();
        let metrics = Arc::new(Metrics::new(1));
        let exchange = ExchangeOutput::new(Partitioning::Forward, vec![Target { sender: downstream, channel: 0 }], 0, "x".into());
        let flag = || Arc::new(AtomicBool::new(false));
        let sides = sides.map(|(inputs, messages)| {
            let (side, receiver) = unbounded();
            for (channel, message) in messages {
                side.send(Envelope { channel, message }).unwrap();
            }
            SideInputs { receiver, inputs }
        });
        let subtask = Subtask {
            name: "t[0]".into(),
            input: TaskInput::Channels { receivers: vec![receiver], ports: vec![0; channels] },
            operators,
            output: TaskOutput { main: MainOutput::Exchanges(vec![exchange]), sides: Vec::new(), forks: Vec::new(), metrics },
            context: SourceContext { subtask: 0, parallelism: 1, batch_rows: 10, cancel: flag(), stop: flag() },
            first_node: 0,
            sides,
        };
        for (channel, message) in messages {
            input.send(Envelope { channel, message }).unwrap();
        }
        subtask.run().unwrap();
        output
            .try_iter()
            .filter(|e| !matches!(e.message, Message::Watermark(_)))
            .map(|e| match e.message {
                Message::Batch(df) => value(&df).to_string(),
                Message::Barrier(c) => format!("barrier {c}"),
                Message::End => "end".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn batch(v: i32) -> Message {
        Message::Batch(df!("v" => [v]).unwrap())
    }

    fn value(df: &DataFrame) -> i32 {
        df.column("v").unwrap().i32().unwrap().get(0).unwrap()
    }

    /// Logs the batches and input ends that reach it, and passes batches on.
    struct Log(Arc<std::sync::Mutex<Vec<String>>>, &'static str);

    impl Operator for Log {
        fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
            self.process_port(0, batch, out)
        }
        fn process_port(&mut self, port: usize, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
            self.0.lock().unwrap().push(format!("{} {port}: {}", self.1, value(&batch)));
            out.collect(batch)
        }
        fn end_of_input(&mut self, port: usize, _: &mut dyn Collector) -> Result<()> {
            self.0.lock().unwrap().push(format!("{} end {port}", self.1));
            Ok(())
        }
    }

    #[test]
    fn side_inputs_are_read_to_their_end_before_the_main_input() {
        use Message::End;
        let log = Arc::default();
        let ops: Vec<Box<dyn Operator>> = vec![Box::new(Log(Arc::clone(&log), "a")), Box::new(Log(Arc::clone(&log), "b"))];
        // The main input is queued first; two channels feed port 1 of the second operator.
        let sides = (vec![(1, 1), (1, 1)], vec![(0, batch(7)), (0, End), (1, batch(8)), (1, End)]);
        let sent = run_subtask(ops, 1, vec![(0, batch(1)), (0, End)], Some(sides));
        // The side's rows pass the rest of the chain as they come.
        assert_eq!(sent, ["7", "8", "1", "end"]);
        let log = log.lock().unwrap().clone();
        assert_eq!(log, ["b 1: 7", "b 1: 8", "b end 1", "a 0: 1", "b 0: 1", "a end 0"]);
    }

    #[test]
    fn a_barrier_goes_on_once_every_channel_delivered_it_and_what_follows_it_waits() {
        use Message::{Barrier, End};
        let seen = run_channels(2, vec![(0, batch(1)), (0, Barrier(7)), (0, batch(2)), (1, batch(3)), (1, Barrier(7)), (0, End), (1, End)]);
        // Batch 2 came after channel 0's barrier: it belongs to the next checkpoint.
        assert_eq!(seen, ["1", "3", "barrier 7", "2", "end"]);
    }

    #[test]
    fn back_to_back_barriers_keep_every_message_and_its_order() {
        use Message::{Barrier, End};
        // Channel 0 sends two barriers in a row; the second alignment starts from what the
        // first released, while channel 1's batch and end are among it.
        let seen = run_channels(
            3,
            vec![(0, Barrier(1)), (0, Barrier(2)), (0, End), (1, Barrier(1)), (1, batch(5)), (2, Barrier(1)), (1, End), (2, Barrier(2)), (2, End)],
        );
        assert_eq!(seen, ["barrier 1", "5", "barrier 2", "end"]);
        // A channel's end released by one alignment counts for the next one.
        let seen = run_channels(3, vec![(0, Barrier(1)), (0, Barrier(2)), (1, Barrier(1)), (1, End), (2, Barrier(1)), (0, End), (2, End)]);
        assert_eq!(seen, ["barrier 1", "barrier 2", "end"]);
        // An older barrier is ignored; a newer one abandons the alignment going on.
        let seen = run_channels(2, vec![(0, Barrier(3)), (0, batch(1)), (1, Barrier(4)), (1, Barrier(2)), (0, Barrier(4)), (0, End), (1, End)]);
        assert_eq!(seen, ["1", "barrier 4", "end"]);
    }
}
