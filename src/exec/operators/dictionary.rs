//! Codes for the strings of a key column, so that string keys group like integer ones.
//!
//! The aggregation table (see [`super::hash_aggregate`]) groups by integer values. A string
//! key column is turned into one code per row here: the first distinct string gets 0, the
//! next 1, and so on. Codes are stable until the dictionary is cleared, so a group's key can
//! be read back at the end.
use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use polars::polars_utils::aliases::PlRandomState;
use polars::prelude::*;
use polars_arrow::array::View;
use polars_arrow::bitmap::Bitmap;

/// Entries of [`Dictionary::encode`]'s cache of short strings (a power of two).
const VIEW_CACHE: usize = 64;

/// Distinct strings, by code: bytes in one buffer, and where each one ends.
#[derive(Default)]
pub struct Dictionary {
    table: HashTable<u32>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hasher: PlRandomState,
}

impl Dictionary {
    fn get(&self, code: usize) -> &[u8] {
        let start = if code == 0 { 0 } else { self.ends[code - 1] };
        &self.bytes[start..self.ends[code]]
    }

    fn code(&mut self, value: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(value);
        let Dictionary { table, bytes, ends, hasher } = self;
        let at = |code: u32| {
            let code = code as usize;
            &bytes[if code == 0 { 0 } else { ends[code - 1] }..ends[code]]
        };
        match table.entry(hash, |&c| at(c) == value, |&c| hasher.hash_one(at(c))) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let code = ends.len() as u32;
                e.insert(code);
                bytes.extend_from_slice(value);
                ends.push(bytes.len());
                code
            }
        }
    }

    /// The code of each row of `column` (null rows stay null).
    pub fn encode(&mut self, column: &StringChunked) -> Int64Chunked {
        let mut codes = Vec::with_capacity(column.len());
        let mut last: Option<(&[u8], i64)> = None;
        // Strings of up to 12 bytes are held whole in their 16-byte view: equal views are equal
        // strings. A small cache by view answers a column of few short values (TPC-H's flags,
        // interleaved, so runs are short) without hashing the bytes.
        let mut cache = [(0u128, -1i64); VIEW_CACHE];
        for arr in column.downcast_iter() {
            let views = arr.views();
            for i in 0..arr.len() {
                let view = views[i];
                if view.length <= View::MAX_INLINE_SIZE {
                    let bits = u128::from(view.length) | u128::from(view.prefix) << 32 | u128::from(view.buffer_idx) << 64 | u128::from(view.offset) << 96;
                    let at = ((bits as u64 ^ (bits >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - VIEW_CACHE.trailing_zeros())) as usize;
                    let code = match cache[at] {
                        (b, c) if b == bits && c >= 0 => c,
                        _ => {
                            // SAFETY: i < arr.len().
                            let c = self.code(unsafe { arr.value_unchecked(i) }.as_bytes()) as i64;
                            cache[at] = (bits, c);
                            c
                        }
                    };
                    codes.push(code);
                    continue;
                }
                // SAFETY: i < arr.len().
                let value = unsafe { arr.value_unchecked(i) }.as_bytes();
                // Runs of one value (sorted or clustered input) skip the hash table.
                let code = match last {
                    Some((v, c)) if v == value => c,
                    _ => {
                        let c = self.code(value) as i64;
                        last = Some((value, c));
                        c
                    }
                };
                codes.push(code);
            }
        }
        let validity = (column.null_count() > 0).then(|| Bitmap::from_iter(column.iter().map(|v| v.is_some())));
        Int64Chunked::from_vec_validity(column.name().clone(), codes, validity)
    }

    /// The strings of `codes` (None where `valid` says null).
    pub fn decode(&self, name: PlSmallStr, codes: &[i64], valid: &[bool]) -> StringChunked {
        let strings = codes.iter().zip(valid).map(|(&c, &ok)| {
            // SAFETY: every stored value came from a `str`.
            ok.then(|| unsafe { std::str::from_utf8_unchecked(self.get(c as usize)) })
        });
        StringChunked::from_iter_options(name, strings)
    }

    /// Forgets every string (and so every code).
    pub fn clear(&mut self) {
        self.table.clear();
        self.bytes.clear();
        self.ends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_a_code_and_codes_read_back() {
        let column = StringChunked::from_iter_options(
            "k".into(),
            [Some("b"), Some("a"), None, Some("b"), Some(""), Some("a long string past twelve bytes")].into_iter(),
        );
        let mut d = Dictionary::default();
        let codes = d.encode(&column);
        assert_eq!(codes.iter().collect::<Vec<_>>(), [Some(0), Some(1), None, Some(0), Some(2), Some(3)]);
        // A second batch keeps the codes.
        let more = StringChunked::from_iter_options("k".into(), [Some("a"), Some("c")].into_iter());
        assert_eq!(d.encode(&more).iter().collect::<Vec<_>>(), [Some(1), Some(4)]);
        let back = d.decode("k".into(), &[3, 0, 0, 2], &[true, true, false, true]);
        assert_eq!(back.iter().collect::<Vec<_>>(), [Some("a long string past twelve bytes"), Some("b"), None, Some("")]);
        d.clear();
        assert_eq!(d.encode(&more).iter().collect::<Vec<_>>(), [Some(0), Some(1)]);
    }

    #[test]
    fn many_interleaved_short_and_long_strings_get_one_code_each() {
        // 300 distinct values (more than the cache holds), short and long, interleaved, over
        // two batches: equal strings get equal codes, and every code reads back.
        let value = |i: usize| {
            let k = (i * 7919) % 300;
            if k.is_multiple_of(5) { format!("a value longer than twelve bytes {k}") } else { format!("v{k}") }
        };
        let mut d = Dictionary::default();
        let mut seen = std::collections::HashMap::new();
        for batch in 0..2 {
            let strings: Vec<String> = (batch * 2000..(batch + 1) * 2000).map(value).collect();
            let column = StringChunked::from_iter_options("k".into(), strings.iter().map(|s| Some(s.as_str())));
            let codes: Vec<i64> = d.encode(&column).into_no_null_iter().collect();
            for (s, &c) in strings.iter().zip(&codes) {
                assert_eq!(*seen.entry(s.clone()).or_insert(c), c, "{s}");
            }
            let back = d.decode("k".into(), &codes, &vec![true; codes.len()]);
            assert_eq!(back.iter().collect::<Vec<_>>(), strings.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>());
        }
        assert_eq!(seen.len(), 300);
        assert_eq!(seen.values().collect::<std::collections::HashSet<_>>().len(), 300);
    }
}
