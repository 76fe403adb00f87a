//! Where an operator's rows go to a consumer outside its chain as well as along it (an
//! operator chained to one of several consumers, see `plan::job_graph::chain_break`).
use polars::prelude::DataFrame;

use crate::error::Result;
use crate::exec::message::Message;
use crate::exec::operator::{Collector, Operator};

/// Passes everything on along the chain and, first, to the exchanges that take node `node`'s
/// rows from the middle of the chain. Event time is forwarded here, not at the chain's end:
/// an operator further on may hold a watermark back or make its own.
pub struct Fork {
    node: usize,
}

impl Fork {
    /// Forks node `node`'s output.
    pub fn new(node: usize) -> Self {
        Fork { node }
    }
}

impl Operator for Fork {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        out.fork(self.node, Message::Batch(batch.clone()))?;
        out.collect(batch)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<()> {
        out.fork(self.node, Message::Watermark(watermark))?;
        out.watermark(watermark)
    }

    fn on_idle(&mut self, out: &mut dyn Collector) -> Result<()> {
        out.fork(self.node, Message::Idle)?;
        out.idle()
    }

    /// The consumers outside the chain learn of the end before the operators after this one
    /// finish: one of them may wait for it before it reads what those emit at the end.
    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        out.fork(self.node, Message::End)
    }
}

#[cfg(test)]
mod tests {
    use polars::df;

    use super::*;
    use crate::exec::operator::{Chain, Collected};

    /// Emits what it holds when it finishes.
    struct Hold(Vec<DataFrame>);
    impl Operator for Hold {
        fn process(&mut self, batch: DataFrame, _: &mut dyn Collector) -> Result<()> {
            self.0.push(batch);
            Ok(())
        }
        fn on_watermark(&mut self, _: i64, _: &mut dyn Collector) -> Result<()> {
            Ok(())
        }
        fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
            self.0.drain(..).try_for_each(|b| out.collect(b))
        }
    }

    fn describe(m: &Message) -> String {
        match m {
            Message::Batch(df) => format!("batch {}", df.height()),
            Message::Watermark(w) => format!("watermark {w}"),
            Message::Idle => "idle".into(),
            Message::Barrier(c) => format!("barrier {c}"),
            Message::End => "end".into(),
        }
    }

    #[test]
    fn rows_and_event_time_leave_at_the_fork_and_its_end_comes_before_the_chain_finishes() {
        let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Fork::new(3)), Box::new(Hold(Vec::new()))];
        let mut out = Collected::default();
        let mut chain = Chain::new(&mut ops, &mut out);
        chain.collect(df!("a" => [1, 2, 3]).unwrap()).unwrap();
        chain.watermark(10).unwrap();
        chain.idle().unwrap();
        chain.collect(df!("a" => [4]).unwrap()).unwrap();
        chain.finish().unwrap();
        let forked: Vec<String> = out.forked.iter().map(|(node, m)| format!("{node}: {}", describe(m))).collect();
        assert_eq!(forked, ["3: batch 3", "3: watermark 10", "3: idle", "3: batch 1", "3: end"]);
        // The chain's last operator held the rows and the watermark back.
        assert_eq!(out.batches.iter().map(DataFrame::height).collect::<Vec<_>>(), [3, 1]);
    }
}
