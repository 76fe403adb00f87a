//! Event time: the watermark operator, which makes watermarks from a time column, and the
//! handling of rows that have no event time.
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::exec::dead_letter::{self, ErrorKind, Rejection};
use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::exec::operator::{Collector, Operator};
use crate::exec::operators::stateless::row_json;
use crate::exec::state::{StateReader, StateWriter};
use crate::pipeline::{DEAD_LETTER, OnError};
use crate::plan::expr::{clean, columns_of};

/// The kind of a watermark operator's snapshot.
const WATERMARK_STATE: &str = "watermark";

/// Event time of a row, in milliseconds, from its time column of type `dtype` (datetime,
/// date or integer milliseconds). Err names what is accepted.
pub fn time_ms(column: &str, dtype: &DataType) -> std::result::Result<Expr, String> {
    let c = col(column);
    Ok(match dtype {
        DataType::Datetime(..) => c.dt().timestamp(TimeUnit::Milliseconds),
        DataType::Date => c.cast(DataType::Datetime(TimeUnit::Milliseconds, None)).dt().timestamp(TimeUnit::Milliseconds),
        d if d.is_integer() => c.cast(DataType::Int64),
        other => {
            return Err(format!(
                "column '{column}' is {other}, but event time needs a datetime, a date or integer milliseconds (parse strings with `with`, e.g. STRPTIME)"
            ));
        }
    })
}

/// Takes out the rows of `batch` whose event time is null: no watermark or window can place
/// them. Per `on_error` they fail the job (naming the operator and the row), or are rejected
/// (counted), and sent to `<name>.dead_letter` with `dead_letter`. Returns the other rows.
pub(super) fn set_aside_null_times(batch: DataFrame, time: &Expr, on_error: OnError, who: (&str, usize), metrics: &Metrics, out: &mut dyn Collector) -> Result<DataFrame> {
    let (name, node) = who;
    let fail = |e: PolarsError| Error::execution("operator", name, clean(&e));
    let nulls = batch.clone().lazy().select([time.clone().is_null().alias("n")]).collect().map_err(fail)?;
    let nulls = nulls.column("n").map_err(fail)?.bool().map_err(fail)?.clone();
    if !nulls.any() {
        return Ok(batch);
    }
    let column = columns_of(time).into_iter().next().unwrap_or_default();
    let message = format!("column '{column}' is null: a row needs an event time to be placed in a window");
    let rows: Vec<usize> = nulls.iter().enumerate().filter(|(_, n)| *n == Some(true)).map(|(i, _)| i).collect();
    if on_error == OnError::Fail {
        let row = row_json(&batch, rows[0]);
        return Err(Error::execution("operator", name, format!("error[{}]: {message} (set on_error = \"skip\" or \"dead_letter\" to set such rows aside): {row}", ErrorKind::NullTime)));
    }
    NodeMetrics::add(&metrics.nodes[node].rejected, rows.len() as u64);
    if on_error == OnError::DeadLetter {
        let rejections: Vec<Rejection> = rows
            .iter()
            .map(|&r| Rejection { file: None, line: None, offset: None, column: None, kind: ErrorKind::NullTime, message: message.clone(), raw: row_json(&batch, r) })
            .collect();
        out.side_output(node, DEAD_LETTER, dead_letter::frame(name, &rejections).map_err(fail)?)?;
    }
    batch.filter_seq(&!&nulls).map_err(fail)
}

/// Makes watermarks from a time column: the largest event time seen minus `max_delay`.
pub struct WatermarkOperator {
    time: Expr,
    max_delay: i64,
    current: i64,
    name: String,
    node: usize,
    metrics: Arc<Metrics>,
    /// After this long without rows, the stream is declared idle.
    idle_timeout: Option<std::time::Duration>,
    last_data: Instant,
    idle: bool,
    /// What happens to a row without an event time.
    on_error: OnError,
}

impl WatermarkOperator {
    /// Watermarks from event times `time` (milliseconds), `max_delay` ms behind the latest, for
    /// node `node`; idle after `idle_timeout` ms without rows; rows with a null time are
    /// handled by `on_error`.
    pub fn new(name: String, node: usize, time: Expr, max_delay: i64, idle_timeout: Option<i64>, on_error: OnError, metrics: Arc<Metrics>) -> Self {
        let idle_timeout = idle_timeout.map(|ms| std::time::Duration::from_millis(ms as u64));
        WatermarkOperator { time, max_delay, current: i64::MIN, name, node, metrics, idle_timeout, last_data: Instant::now(), idle: false, on_error }
    }
}

impl Operator for WatermarkOperator {
    fn process(&mut self, batch: DataFrame, out: &mut dyn Collector) -> Result<()> {
        NodeMetrics::add(&self.metrics.nodes[self.node].rows_in, batch.height() as u64);
        let batch = set_aside_null_times(batch, &self.time, self.on_error, (&self.name, self.node), &self.metrics, out)?;
        let latest = batch
            .clone()
            .lazy()
            .select([self.time.clone().max().alias("t")])
            .collect()
            .map_err(|e| Error::execution("operator", &self.name, clean(&e)))?
            .column("t")
            .ok()
            .and_then(|c| c.get(0).ok())
            .and_then(|v| v.extract::<i64>());
        NodeMetrics::add(&self.metrics.nodes[self.node].rows_out, batch.height() as u64);
        self.last_data = Instant::now();
        self.idle = false;
        out.collect(batch)?;
        if let Some(t) = latest {
            let w = t.saturating_sub(self.max_delay);
            if w > self.current {
                self.current = w;
                self.metrics.nodes[self.node].watermark(w);
                out.watermark(w)?;
            }
        }
        Ok(())
    }

    /// Watermarks from upstream are replaced by this operator's own.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// Idleness is decided here, from this operator's own timeout.
    fn on_idle(&mut self, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// No rows for `idle_timeout`: the stream is idle, so it does not hold windows back.
    fn on_tick(&mut self, out: &mut dyn Collector) -> Result<()> {
        if let Some(timeout) = self.idle_timeout
            && !self.idle
            && self.last_data.elapsed() >= timeout
        {
            self.idle = true;
            out.idle()?;
        }
        Ok(())
    }

    /// The end of a bounded input: every window can fire.
    fn finish(&mut self, out: &mut dyn Collector) -> Result<()> {
        self.current = i64::MAX;
        out.watermark(i64::MAX)
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::new(WATERMARK_STATE);
        w.value("watermark", &self.current)?;
        Ok(w.finish())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.current = StateReader::open(state, WATERMARK_STATE)?.value("watermark")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::operator::Collected;

    fn operator(on_error: OnError) -> WatermarkOperator {
        WatermarkOperator::new("stamped".into(), 0, col("t"), 1_000, None, on_error, Arc::new(Metrics::new(1)))
    }

    #[test]
    fn rows_without_event_time_are_skipped_or_fail_per_on_error() {
        let batch = df!("t" => [Some(5_000i64), None, Some(7_000)]).unwrap();
        let mut op = operator(OnError::Skip);
        let mut out = Collected::default();
        op.process(batch.clone(), &mut out).unwrap();
        assert_eq!(out.rows(), 2);
        assert!(out.sides.is_empty());
        let m = &op.metrics.nodes[0];
        assert_eq!((NodeMetrics::get(&m.rows_in), NodeMetrics::get(&m.rows_out), NodeMetrics::get(&m.rejected)), (3, 2, 1));
        assert_eq!(op.current, 6_000);
        let err = operator(OnError::Fail).process(batch, &mut out).unwrap_err().to_string();
        assert!(err.contains("stamped") && err.contains("error[null_time]") && err.contains("column 't' is null"), "{err}");
    }

    #[test]
    fn the_watermark_survives_a_restore() {
        let mut op = operator(OnError::Fail);
        op.process(df!("t" => [9_000i64]).unwrap(), &mut Collected::default()).unwrap();
        let mut restored = operator(OnError::Fail);
        restored.restore(&op.snapshot().unwrap()).unwrap();
        assert_eq!(restored.current, 8_000);
        assert!(restored.restore(&StateWriter::new("window").finish()).is_err());
    }
}
