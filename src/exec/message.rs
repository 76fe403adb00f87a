//! What travels on a channel between subtasks: data and control on one channel, so that a
//! watermark, barrier or end-of-stream never overtakes the batches sent before it.
use polars::prelude::DataFrame;

/// A message on a channel.
#[derive(Clone, Debug)]
pub enum Message {
    /// A batch of rows.
    Batch(DataFrame),
    /// Event time has advanced to this value (milliseconds); nothing older follows on this channel.
    Watermark(i64),
    /// The sender has had no data for its idle timeout: leave this channel out of the minimum
    /// watermark until it sends again (Flink's idle stream status).
    Idle,
    /// Checkpoint barrier: everything before it belongs to checkpoint N.
    Barrier(u64),
    /// The sending subtask has finished; nothing more follows on this channel.
    End,
}

/// A message with the index of the channel (upstream subtask) it came from, so a receiving
/// subtask can track end-of-stream and watermarks per input channel.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Index of the input channel among all channels into this subtask.
    pub channel: usize,
    /// The message.
    pub message: Message,
}
