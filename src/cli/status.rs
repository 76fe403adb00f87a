//! The live status of a tail-mode run on stderr (only on a terminal), refreshed about once a
//! second: per operator rows per second in and out, bytes per second read by sources, rejected
//! and late rows, and for event-time operators the watermark and how far it lags behind the
//! wall clock.
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::plan::logical::LogicalGraph;

/// One node's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    rows_in: u64,
    rows_out: u64,
    bytes: u64,
    rejected: u64,
    late: u64,
    watermark: i64,
}

fn sample(m: &NodeMetrics) -> Sample {
    Sample {
        rows_in: NodeMetrics::get(&m.rows_in),
        rows_out: NodeMetrics::get(&m.rows_out),
        bytes: NodeMetrics::get(&m.bytes),
        rejected: NodeMetrics::get(&m.rejected),
        late: NodeMetrics::get(&m.dropped),
        watermark: m.watermark.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// The status text for nodes `names`, from two samples `seconds` apart, at wall-clock `now_ms`.
pub fn status_text(names: &[String], before: &[Sample], after: &[Sample], seconds: f64, now_ms: i64) -> String {
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / seconds.max(1e-3);
    let w = names.iter().map(String::len).max().unwrap_or(8).max(8);
    let mut s = format!("{:w$}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}  watermark (lag)", "operator", "in/s", "out/s", "MB/s", "rejected", "late");
    for (i, name) in names.iter().enumerate() {
        let (a, b) = (before[i], after[i]);
        let mark = if b.watermark == i64::MIN || b.watermark == i64::MAX {
            String::new()
        } else {
            let lag = (now_ms - b.watermark) as f64 / 1000.0;
            let time =
                chrono::DateTime::from_timestamp_millis(b.watermark).map_or_else(|| b.watermark.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
            format!("{time} ({lag:.1} s)")
        };
        s += &format!(
            "\n{name:w$}  {:>10.0}  {:>10.0}  {:>10.2}  {:>9}  {:>9}  {mark}",
            rate(a.rows_in, b.rows_in),
            rate(a.rows_out, b.rows_out),
            rate(a.bytes, b.bytes) / 1e6,
            b.rejected,
            b.late
        );
    }
    s
}

/// Redraws the status about once a second.
pub struct LiveStatus {
    names: Vec<String>,
    last: Mutex<(Instant, Vec<Sample>)>,
    bar: ProgressBar,
}

impl LiveStatus {
    /// A status for the nodes of `stream`.
    pub fn new(stream: &LogicalGraph) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(2));
        bar.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        let names = stream.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        let zero = vec![Sample::default(); names.len()];
        LiveStatus { names, last: Mutex::new((Instant::now(), zero)), bar }
    }

    /// Called often; redraws when a second has passed.
    pub fn update(&self, metrics: &Metrics) {
        let Ok(mut last) = self.last.lock() else { return };
        let elapsed = last.0.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return;
        }
        let now: Vec<Sample> = metrics.nodes.iter().map(sample).collect();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.bar.set_message(status_text(&self.names, &last.1, &now, elapsed, wall));
        *last = (Instant::now(), now);
    }

    /// Removes the status from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_rates_counts_and_watermark_lag() {
        let names = vec!["log".to_string(), "per_minute".to_string()];
        let before = [Sample::default(), Sample { watermark: i64::MIN, ..Default::default() }];
        let after = [
            Sample { rows_in: 2000, rows_out: 1990, bytes: 3_000_000, rejected: 10, ..Default::default() },
            Sample { rows_in: 1990, rows_out: 4, late: 2, watermark: 1_764_000_000_000, ..Default::default() },
        ];
        let text = status_text(&names, &before, &after, 2.0, 1_764_000_030_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("log") && lines[1].contains("1000") && lines[1].contains("995") && lines[1].contains("1.50"), "{text}");
        assert!(lines[2].contains("2025-11-24 16:00:00 (30.0 s)") && lines[2].trim_end().contains("2  2025"), "{text}");
    }
}
