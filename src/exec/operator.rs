//! The operator contract and the collector that connects chained operators without a channel.
use polars::prelude::DataFrame;

use super::message::Message;
use crate::error::Result;

/// Receives what an operator emits: the next operator of the chain, or the task's output
/// (an exchange to other subtasks, or a sink).
pub trait Collector {
    /// Passes a batch downstream. An `Err` means the job is failing or cancelled: stop.
    fn collect(&mut self, batch: DataFrame) -> Result<()>;
    /// Passes a watermark downstream.
    fn watermark(&mut self, watermark: i64) -> Result<()>;
    /// Passes a batch to side output `tag` of node `node` (its dead-letter rows, say). The
    /// planner makes sure a side output that can receive rows has a consumer.
    fn side_output(&mut self, node: usize, tag: &str, batch: DataFrame) -> Result<()>;
    /// Says downstream that this stream is idle (no data for a while): its watermark is left
    /// out until it sends again.
    fn idle(&mut self) -> Result<()> {
        Ok(())
    }

    /// Says downstream that the source finished a split: everything of it was emitted before.
    /// The task's output ignores it (it does not cross exchanges).
    fn end_of_split(&mut self) -> Result<()> {
        Ok(())
    }

    /// Passes checkpoint barrier `checkpoint` on: everything emitted before it belongs to the
    /// checkpoint, everything after to the next.
    fn barrier(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }

    /// Sends a batch, watermark, idle mark or end of node `node`'s output to the exchanges that
    /// take its rows from the middle of the chain (see [`super::operators::fork::Fork`]).
    fn fork(&mut self, node: usize, _message: Message) -> Result<()> {
        Err(crate::error::Error::execution("operator", &format!("#{node}"), "its rows leave the chain, but nothing takes them (a bug in rivulet)"))
    }
}

/// Sends `df` downstream in slices of at most `batch_rows` rows (a reduction's or a join's
/// result can be larger than one batch).
pub fn emit_in_batches(df: &DataFrame, batch_rows: usize, out: &mut dyn Collector) -> Result<()> {
    let mut offset = 0;
    while offset < df.height() {
        out.collect(df.slice(offset as i64, batch_rows))?;
        offset += batch_rows;
    }
    Ok(())
}

/// A step of a pipeline that transforms batches, possibly keeping state.
///
/// Hooks are called from one thread per subtask, in this order: `process` for every batch in
/// arrival order, interleaved with `on_watermark`; then `finish` exactly once, after every input
/// channel has sent `End`. `snapshot` / `restore` are called between batches. Any `Err` stops the
/// whole job; the error must already name the operator.
pub trait Operator: Send {
    /// Handles one batch, emitting zero or more batches to `out`.
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()>;

    /// Handles one batch of input `port` (for operators with several inputs, such as a join:
    /// port 0 is the first input). The default ignores the port.
    fn process_port(&mut self, _port: usize, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        self.process(batch, out)
    }

    /// Every channel of input `port` has ended (called before `finish`, once per port).
    fn end_of_input(&mut self, _port: usize, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// Event time advanced; windowed operators fire here. The default forwards it.
    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<()> {
        out.watermark(watermark)
    }

    /// The source this operator is chained to finished a split, and every row of it has been
    /// processed. The default forwards it; an aggregate whose groups are complete at the end of
    /// each split emits them here (see `optimize::clustered_aggregation`).
    fn on_split_end(&mut self, out: &mut dyn Collector) -> Result<()> {
        out.end_of_split()
    }

    /// The input went idle. The default forwards it.
    fn on_idle(&mut self, out: &mut dyn Collector) -> Result<()> {
        out.idle()
    }

    /// Called now and then while a source has nothing to read (time-based work, such as
    /// declaring a stream idle).
    fn on_tick(&mut self, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// End of input: emit what state is left (e.g. final aggregates).
    fn finish(&mut self, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// Serialised operator state for a checkpoint (stateless operators have none).
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restores state written by [`Operator::snapshot`].
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Runs a chain of operators: `ops[0]` emits into `ops[1]`, ..., the last into `output`.
pub struct Chain<'a> {
    ops: &'a mut [Box<dyn Operator>],
    output: &'a mut dyn Collector,
}

impl<'a> Chain<'a> {
    /// A chain over `ops` ending in `output`.
    pub fn new(ops: &'a mut [Box<dyn Operator>], output: &'a mut dyn Collector) -> Self {
        Chain { ops, output }
    }

    /// A batch of input `port` of operator `op` (the first operator, or a join chained with
    /// its left input, for its right side).
    pub fn collect_port(&mut self, op: usize, port: usize, batch: DataFrame) -> Result<()> {
        match self.ops[op..].split_first_mut() {
            None => self.output.collect(batch),
            Some((head, rest)) => head.process_port(port, batch, &mut Chain { ops: rest, output: &mut *self.output }),
        }
    }

    /// Input `port` of operator `op` has ended.
    pub fn end_of_input(&mut self, op: usize, port: usize) -> Result<()> {
        match self.ops[op..].split_first_mut() {
            None => Ok(()),
            Some((head, rest)) => head.end_of_input(port, &mut Chain { ops: rest, output: &mut *self.output }),
        }
    }

    /// Gives every operator its tick, in order.
    pub fn tick(&mut self) -> Result<()> {
        for i in 0..self.ops.len() {
            let (head, rest) = self.ops[i..].split_first_mut().expect("index in range");
            head.on_tick(&mut Chain { ops: rest, output: &mut *self.output })?;
        }
        Ok(())
    }

    /// Calls `finish` on each operator in order, so what one emits at the end still flows
    /// through the operators after it before they finish.
    pub fn finish(&mut self) -> Result<()> {
        for i in 0..self.ops.len() {
            let (head, rest) = self.ops[i..].split_first_mut().expect("index in range");
            head.finish(&mut Chain { ops: rest, output: &mut *self.output })?;
        }
        Ok(())
    }
}

impl Collector for Chain<'_> {
    fn collect(&mut self, batch: DataFrame) -> Result<()> {
        match self.ops.split_first_mut() {
            None => self.output.collect(batch),
            Some((head, rest)) => head.process(batch, &mut Chain { ops: rest, output: &mut *self.output }),
        }
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        match self.ops.split_first_mut() {
            None => self.output.watermark(watermark),
            Some((head, rest)) => head.on_watermark(watermark, &mut Chain { ops: rest, output: &mut *self.output }),
        }
    }

    fn side_output(&mut self, node: usize, tag: &str, batch: DataFrame) -> Result<()> {
        self.output.side_output(node, tag, batch)
    }

    fn idle(&mut self) -> Result<()> {
        match self.ops.split_first_mut() {
            None => self.output.idle(),
            Some((head, rest)) => head.on_idle(&mut Chain { ops: rest, output: &mut *self.output }),
        }
    }

    fn end_of_split(&mut self) -> Result<()> {
        match self.ops.split_first_mut() {
            None => self.output.end_of_split(),
            Some((head, rest)) => head.on_split_end(&mut Chain { ops: rest, output: &mut *self.output }),
        }
    }

    /// Barriers pass the chain's operators (which the checkpoint will snapshot there) straight
    /// to the task's output.
    fn barrier(&mut self, checkpoint: u64) -> Result<()> {
        self.output.barrier(checkpoint)
    }

    fn fork(&mut self, node: usize, message: Message) -> Result<()> {
        self.output.fork(node, message)
    }
}

/// A collector for operator tests: keeps what is emitted, and what goes to side outputs.
#[cfg(test)]
#[derive(Default)]
pub struct Collected {
    /// Batches emitted.
    pub batches: Vec<DataFrame>,
    /// Batches sent to side outputs.
    pub sides: Vec<DataFrame>,
    /// What was sent out of the middle of the chain, by node.
    pub forked: Vec<(usize, Message)>,
}

#[cfg(test)]
impl Collected {
    /// Rows emitted.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(DataFrame::height).sum()
    }
}

#[cfg(test)]
impl Collector for Collected {
    fn collect(&mut self, batch: DataFrame) -> Result<()> {
        self.batches.push(batch);
        Ok(())
    }
    fn watermark(&mut self, _: i64) -> Result<()> {
        Ok(())
    }
    fn side_output(&mut self, _: usize, _: &str, batch: DataFrame) -> Result<()> {
        self.sides.push(batch);
        Ok(())
    }
    fn fork(&mut self, node: usize, message: Message) -> Result<()> {
        self.forked.push((node, message));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use polars::df;

    use super::*;

    struct Double;
    impl Operator for Double {
        fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
            out.collect(batch.clone())?;
            out.collect(batch)
        }
    }

    #[test]
    fn chained_operators_call_each_other() {
        let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Double), Box::new(Double)];
        let mut out = Collected::default();
        let df = df!("a" => [1, 2, 3]).unwrap();
        Chain::new(&mut ops, &mut out).collect(df).unwrap();
        assert_eq!(out.rows(), 12);
    }
}
