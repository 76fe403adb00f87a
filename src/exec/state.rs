//! Operator state and source positions as bytes, for checkpoints (Flink's snapshot / restore).
//!
//! A snapshot is a small JSON header (scalars, and which frames there are) followed by polars
//! frames in Arrow IPC: `RVS1`, the header's length (u64 LE) and bytes, then for every frame its
//! length (u64 LE) and bytes. Frames keep their exact types (decimals, datetimes, lists,
//! nulls), which a text format would not. This module only encodes; what a snapshot holds is
//! each operator's business, and when snapshots are taken (barriers) is the runtime's.
use std::io::Cursor;

use polars::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"RVS1";

/// Builds the snapshot of one operator (or source) of kind `kind`.
pub struct StateWriter {
    kind: String,
    values: Map<String, Value>,
    frames: Map<String, Value>,
    bytes: Vec<Vec<u8>>,
}

impl StateWriter {
    /// An empty snapshot of an operator of kind `kind` (checked again on restore).
    pub fn new(kind: &str) -> Self {
        StateWriter { kind: kind.to_string(), values: Map::new(), frames: Map::new(), bytes: Vec::new() }
    }

    fn fail(&self, e: impl std::fmt::Display) -> Error {
        Error::execution("state", &self.kind, format!("cannot snapshot: {e}"))
    }

    /// Stores a value under `key`.
    pub fn value(&mut self, key: &str, value: &impl Serialize) -> Result<&mut Self> {
        let v = serde_json::to_value(value).map_err(|e| self.fail(e))?;
        self.values.insert(key.to_string(), v);
        Ok(self)
    }

    /// Stores a frame (or its absence) under `key`.
    pub fn frame(&mut self, key: &str, frame: Option<&DataFrame>) -> Result<&mut Self> {
        let index = match frame {
            Some(df) => {
                let mut buf = Vec::new();
                let mut df = df.clone();
                IpcWriter::new(&mut buf).finish(&mut df).map_err(|e| self.fail(e))?;
                self.bytes.push(buf);
                Value::from(self.bytes.len() - 1)
            }
            None => Value::Null,
        };
        self.frames.insert(key.to_string(), index);
        Ok(self)
    }

    /// The snapshot's bytes.
    pub fn finish(self) -> Vec<u8> {
        let header = serde_json::json!({ "kind": self.kind, "values": self.values, "frames": self.frames }).to_string();
        let mut out = Vec::with_capacity(header.len() + self.bytes.iter().map(|b| b.len() + 8).sum::<usize>() + 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for b in &self.bytes {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        out
    }
}

/// Reads a snapshot written by [`StateWriter`].
#[derive(Debug)]
pub struct StateReader {
    kind: String,
    values: Map<String, Value>,
    frames: Map<String, Value>,
    bytes: Vec<Vec<u8>>,
}

impl StateReader {
    /// Opens `bytes`, which must be a snapshot of kind `kind`.
    pub fn open(bytes: &[u8], kind: &str) -> Result<Self> {
        let fail = |m: String| Error::execution("state", kind, format!("cannot restore: {m}"));
        let mut rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| fail("not a rivulet snapshot".into()))?;
        let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
            let (len, tail) = rest.split_at_checked(8).ok_or_else(|| fail("truncated".into()))?;
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            let (body, tail) = tail.split_at_checked(len).ok_or_else(|| fail("truncated".into()))?;
            *rest = tail;
            Ok(body.to_vec())
        };
        let header: Value = serde_json::from_slice(&take(&mut rest)?).map_err(|e| fail(format!("bad header: {e}")))?;
        let mut bytes = Vec::new();
        while !rest.is_empty() {
            bytes.push(take(&mut rest)?);
        }
        let found = header["kind"].as_str().unwrap_or_default();
        if found != kind {
            return Err(fail(format!("it is the state of a {found:?}")));
        }
        let part = |k: &str| header[k].as_object().cloned().unwrap_or_default();
        Ok(StateReader { kind: kind.to_string(), values: part("values"), frames: part("frames"), bytes })
    }

    fn fail(&self, e: impl std::fmt::Display) -> Error {
        Error::execution("state", &self.kind, format!("cannot restore: {e}"))
    }

    /// The value stored under `key`.
    pub fn value<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self.values.get(key).cloned().ok_or_else(|| self.fail(format!("no value '{key}'")))?;
        serde_json::from_value(v).map_err(|e| self.fail(format!("value '{key}': {e}")))
    }

    /// The frame stored under `key` (None when it was stored as absent).
    pub fn frame(&self, key: &str) -> Result<Option<DataFrame>> {
        let index = match self.frames.get(key) {
            None => return Err(self.fail(format!("no frame '{key}'"))),
            Some(Value::Null) => return Ok(None),
            Some(v) => v.as_u64().ok_or_else(|| self.fail(format!("frame '{key}'")))? as usize,
        };
        let bytes = self.bytes.get(index).ok_or_else(|| self.fail(format!("frame '{key}' is missing")))?;
        IpcReader::new(Cursor::new(bytes)).finish().map(Some).map_err(|e| self.fail(format!("frame '{key}': {e}")))
    }
}

/// Frames of one schema as one (None for no frames), to snapshot state kept in pieces.
pub fn stack(frames: &[DataFrame]) -> PolarsResult<Option<DataFrame>> {
    let mut iter = frames.iter();
    let Some(first) = iter.next() else { return Ok(None) };
    let mut all = first.clone();
    for f in iter {
        all.vstack_mut(f)?;
    }
    Ok(Some(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_frames_round_trip() {
        let df = df!("k" => [Some("a"), None], "n" => [1i64, 2]).unwrap();
        let mut w = StateWriter::new("window");
        w.value("watermark", &42i64).unwrap().frame("state", Some(&df)).unwrap().frame("rows", None).unwrap();
        let bytes = w.finish();
        let r = StateReader::open(&bytes, "window").unwrap();
        assert_eq!(r.value::<i64>("watermark").unwrap(), 42);
        assert_eq!(r.frame("state").unwrap().unwrap(), df);
        assert!(r.frame("rows").unwrap().is_none());
        assert!(r.frame("other").is_err());
    }

    #[test]
    fn wrong_kind_and_truncation_are_errors() {
        let bytes = StateWriter::new("window").finish();
        assert!(StateReader::open(&bytes, "join").unwrap_err().to_string().contains("window"));
        assert!(StateReader::open(&bytes[..bytes.len() - 1], "window").is_err());
        assert!(StateReader::open(b"nope", "window").is_err());
    }
}
