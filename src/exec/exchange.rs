//! The sending side of an exchange: routes a task's output batches to downstream subtasks
//! (forward, rebalance, hash by keys, broadcast, global) over bounded channels.
use crossbeam_channel::Sender;
use polars::polars_utils::aliases::{PlSeedableRandomStateQuality, SeedableFromU64SeedExt};
use polars::prelude::*;

use super::message::{Envelope, Message};
use super::operator::Collector;
use crate::error::{Error, Result};
use crate::plan::logical::Partitioning;

/// A channel to one downstream subtask, and this channel's index at the receiver.
pub struct Target {
    /// The receiving subtask's queue.
    pub sender: Sender<Envelope>,
    /// Index the receiver knows this channel by.
    pub channel: usize,
}

/// Sends one upstream subtask's output over one job edge.
pub struct ExchangeOutput {
    partitioning: Partitioning,
    targets: Vec<Target>,
    next: usize,
    node: String,
}

impl ExchangeOutput {
    /// `targets` are ordered by downstream subtask index; `first` spreads round-robin starts.
    pub fn new(partitioning: Partitioning, targets: Vec<Target>, first: usize, node: String) -> Self {
        let next = first % targets.len().max(1);
        ExchangeOutput { partitioning, targets, next, node }
    }

    fn send(&self, target: usize, message: Message) -> Result<()> {
        let t = &self.targets[target];
        // A closed channel means the receiver stopped: the job is failing; stop quietly.
        t.sender.send(Envelope { channel: t.channel, message }).map_err(|_| Error::Cancelled)
    }

    /// Tells every downstream subtask that this one has finished.
    pub fn end(&mut self) -> Result<()> {
        (0..self.targets.len()).try_for_each(|i| self.send(i, Message::End))
    }
}

/// Splits `df` by a deterministic hash of `keys` into `n` parts (None where a part is empty).
pub fn hash_split(df: &DataFrame, keys: &[String], n: usize) -> PolarsResult<Vec<Option<DataFrame>>> {
    // Hashed here, on the subtask's thread (polars' `hash_rows` splits the work over its own
    // pool: threads that compete with the subtasks and allocate memory they then free).
    let seed = PlSeedableRandomStateQuality::seed_from_u64(0x7269_7675_6c65_7421);
    let mut hashes = Vec::with_capacity(df.height());
    for (i, key) in keys.iter().enumerate() {
        let column = df.column(key)?;
        if i == 0 {
            column.vec_hash(seed.clone(), &mut hashes)?;
        } else {
            column.vec_hash_combine(seed.clone(), &mut hashes)?;
        }
    }
    if keys.is_empty() {
        // No key: every row is one group, sent to one subtask.
        hashes.resize(df.height(), 0);
    }
    let mut parts: Vec<Vec<IdxSize>> = vec![Vec::new(); n];
    for (row, h) in hashes.into_iter().enumerate() {
        // Multiply-shift maps the hash onto [0, n) using its high bits.
        let target = ((h as u128 * n as u128) >> 64) as usize;
        parts[target].push(row as IdxSize);
    }
    // SAFETY: every index is a row of `df`.
    Ok(parts.into_iter().map(|rows| (!rows.is_empty()).then(|| unsafe { df.take_unchecked_impl(&IdxCa::from_vec("".into(), rows), false) })).collect())
}

impl Collector for ExchangeOutput {
    fn collect(&mut self, batch: DataFrame) -> Result<()> {
        match &self.partitioning {
            Partitioning::Forward | Partitioning::Global => self.send(0, Message::Batch(batch)),
            Partitioning::Rebalance => {
                let target = self.next;
                self.next = (self.next + 1) % self.targets.len();
                self.send(target, Message::Batch(batch))
            }
            Partitioning::Broadcast => (0..self.targets.len()).try_for_each(|i| self.send(i, Message::Batch(batch.clone()))),
            Partitioning::Hash(keys) => {
                let parts = hash_split(&batch, keys, self.targets.len()).map_err(|e| Error::execution("operator", &self.node, e))?;
                for (i, part) in parts.into_iter().enumerate() {
                    if let Some(df) = part {
                        self.send(i, Message::Batch(df))?;
                    }
                }
                Ok(())
            }
        }
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        (0..self.targets.len()).try_for_each(|i| self.send(i, Message::Watermark(watermark)))
    }

    fn idle(&mut self) -> Result<()> {
        (0..self.targets.len()).try_for_each(|i| self.send(i, Message::Idle))
    }

    /// Every downstream subtask gets the barrier, after what was sent before it.
    fn barrier(&mut self, checkpoint: u64) -> Result<()> {
        (0..self.targets.len()).try_for_each(|i| self.send(i, Message::Barrier(checkpoint)))
    }

    fn side_output(&mut self, _: usize, tag: &str, _: DataFrame) -> Result<()> {
        Err(Error::execution("operator", &self.node, format!("side output '{tag}' sent into an exchange")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_split_without_keys_sends_every_row_to_one_part() {
        let df = df!("k" => [1i64, 2, 3, 4, 5]).unwrap();
        let parts = hash_split(&df, &[], 3).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.as_ref().map_or(0, DataFrame::height)).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 5);
        assert_eq!(sizes.iter().filter(|&&n| n > 0).count(), 1);
    }

    #[test]
    fn hash_split_is_deterministic_and_complete() {
        let df = df!("k" => (0..1000).map(|i| format!("key{}", i % 37)).collect::<Vec<_>>(), "v" => (0..1000).collect::<Vec<i32>>()).unwrap();
        let a = hash_split(&df, &["k".into()], 4).unwrap();
        let b = hash_split(&df, &["k".into()], 4).unwrap();
        assert_eq!(a, b);
        let total: usize = a.iter().flatten().map(DataFrame::height).sum();
        assert_eq!(total, 1000);
        // Every key lands in exactly one part.
        let mut seen = std::collections::HashMap::new();
        for (i, part) in a.iter().enumerate() {
            for k in part.iter().flat_map(|p| p.column("k").unwrap().str().unwrap().iter().map(|s| s.unwrap().to_string()).collect::<Vec<_>>()) {
                assert_eq!(*seen.entry(k).or_insert(i), i);
            }
        }
    }
}
