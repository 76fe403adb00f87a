//! Checkpoint barrier alignment (Flink's aligned checkpoints) in a subtask with several input
//! channels: once a channel has delivered the barrier of checkpoint N, what it sends next belongs
//! to N+1, so it is held back until every other open channel has delivered that barrier too (or
//! ended); then the barrier goes on downstream and the held messages are taken, in order,
//! before anything new. Held messages are kept in memory: the channels share one queue, so a
//! channel cannot be blocked on its own (per-channel queues would bound this; the checkpoint
//! issue needs them).
use std::collections::VecDeque;

use super::message::Envelope;

/// The alignment state of one subtask.
pub struct Alignment {
    /// The checkpoint being aligned and which channels delivered its barrier (or ended).
    current: Option<(u64, Vec<bool>)>,
    /// Messages of channels past the barrier, in arrival order.
    held: VecDeque<Envelope>,
    /// Messages released by a completed (or abandoned) alignment: taken before the queue, and
    /// held again if a new alignment wants them.
    released: VecDeque<Envelope>,
    channels: usize,
    /// The newest checkpoint aligned or abandoned: its barriers, and older ones, are stale.
    last: Option<u64>,
}

impl Alignment {
    /// No alignment going on, over `channels` input channels.
    pub fn new(channels: usize) -> Self {
        Alignment { current: None, held: VecDeque::new(), released: VecDeque::new(), channels, last: None }
    }

    /// A released message, to take before the next one from the queue.
    pub fn next_released(&mut self) -> Option<Envelope> {
        self.released.pop_front()
    }

    /// `envelope` back, unless its channel is past the barrier being aligned: then it is held.
    pub fn hold(&mut self, envelope: Envelope) -> Option<Envelope> {
        match &self.current {
            Some((_, done)) if done[envelope.channel] => {
                self.held.push_back(envelope);
                None
            }
            _ => Some(envelope),
        }
    }

    /// Channel `channel` delivered the barrier of `checkpoint` (`ended`: the channels that have
    /// ended). The checkpoint, when every open channel has delivered its barrier now. A barrier
    /// older than the one aligned (or one already aligned) is ignored; a newer one abandons the
    /// alignment going on (its held messages are released) and starts its own.
    pub fn arrived(&mut self, channel: usize, checkpoint: u64, ended: &[bool]) -> Option<u64> {
        if self.last.is_some_and(|last| checkpoint <= last) {
            return None;
        }
        match &self.current {
            Some((aligning, _)) if checkpoint < *aligning => return None,
            Some((aligning, _)) if checkpoint > *aligning => {
                self.last = Some(*aligning);
                self.current = None;
                self.release();
            }
            _ => {}
        }
        let (_, done) = self.current.get_or_insert_with(|| (checkpoint, vec![false; self.channels]));
        done[channel] = true;
        self.complete(ended)
    }

    /// Channel `channel` ends: it will deliver no barrier. The checkpoint, when that completes
    /// the alignment going on.
    pub fn ended(&mut self, channel: usize, ended: &[bool]) -> Option<u64> {
        let (_, done) = self.current.as_mut()?;
        done[channel] = true;
        self.complete(ended)
    }

    /// True when nothing is held or waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.released.is_empty()
    }

    fn complete(&mut self, ended: &[bool]) -> Option<u64> {
        let (checkpoint, done) = self.current.as_ref()?;
        if !done.iter().zip(ended).all(|(d, e)| *d || *e) {
            return None;
        }
        let checkpoint = *checkpoint;
        self.last = Some(checkpoint);
        self.current = None;
        self.release();
        Some(checkpoint)
    }

    /// Held messages go before what was released earlier and not taken yet: per channel, they
    /// came first.
    fn release(&mut self) {
        let mut released = std::mem::take(&mut self.held);
        released.append(&mut self.released);
        self.released = released;
    }
}
