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
/// Entries of that cache a value may take (the first free one from its hash's).
const CACHE_WAYS: usize = 4;

/// Distinct strings, by code: bytes in one buffer, and where each one ends.
#[derive(Default)]
pub struct Dictionary {
    table: HashTable<u32>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hasher: PlRandomState,
    /// Searches of the table (cache misses), for tests.
    #[cfg(test)]
    searches: usize,
}

impl Dictionary {
    fn get(&self, code: usize) -> &[u8] {
        let start = if code == 0 { 0 } else { self.ends[code - 1] };
        &self.bytes[start..self.ends[code]]
    }

    fn code(&mut self, value: &[u8]) -> u32 {
        #[cfg(test)]
        {
            self.searches += 1;
        }
        let hash = self.hasher.hash_one(value);
        let Dictionary { table, bytes, ends, hasher, .. } = self;
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

    /// The code of `value`, when the dictionary holds it.
    fn find(&self, value: &[u8]) -> Option<u32> {
        self.table.find(self.hasher.hash_one(value), |&c| self.get(c as usize) == value).copied()
    }

    /// The code of each row of `column` (null rows stay null).
    pub fn encode(&mut self, column: &StringChunked) -> Int64Chunked {
        codes_of(column, |value| Some(i64::from(self.code(value))))
    }

    /// The code of each row of `column`, without adding strings: null where the row is null or
    /// its string is not in the dictionary (a join's left rows against its right side's keys).
    pub fn look_up(&self, column: &StringChunked) -> Int64Chunked {
        codes_of(column, |value| self.find(value).map(i64::from))
    }

    /// The code of each row of `column`, an `Enum` column (a Parquet column read as its
    /// dictionary's codes, see [`crate::exec::sources::SourceConfig::key_codes`]): the
    /// categories are encoded once each, and every row takes its category's code.
    pub fn encode_categories(&mut self, column: &Column) -> PolarsResult<Int64Chunked> {
        let DataType::Enum(categories, _) = column.dtype() else {
            polars_bail!(SchemaMismatch: "column '{}' is {}, not a string or categorical key", column.name(), column.dtype())
        };
        let lut: Vec<i64> = categories.categories().values_iter().map(|s| self.code(s.as_bytes()) as i64).collect();
        fn gather(lut: &[i64], ids: impl Iterator<Item = usize>, codes: &mut Vec<i64>) {
            // A row under a null has no category: its code is never read.
            codes.extend(ids.map(|i| lut.get(i).copied().unwrap_or(0)));
        }
        let physical = column.as_materialized_series().to_physical_repr();
        let mut codes = Vec::with_capacity(column.len());
        match physical.dtype() {
            DataType::UInt8 => physical.u8()?.downcast_iter().for_each(|a| gather(&lut, a.values().iter().map(|&i| i as usize), &mut codes)),
            DataType::UInt16 => physical.u16()?.downcast_iter().for_each(|a| gather(&lut, a.values().iter().map(|&i| i as usize), &mut codes)),
            _ => physical.u32()?.downcast_iter().for_each(|a| gather(&lut, a.values().iter().map(|&i| i as usize), &mut codes)),
        }
        let validity = (physical.null_count() > 0).then(|| Bitmap::from_iter(physical.is_not_null().iter().map(|v| v == Some(true))));
        Ok(Int64Chunked::from_vec_validity(column.name().clone(), codes, validity))
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

/// A free entry of [`codes_of`]'s cache.
const EMPTY: i64 = -1;
/// A value `code` gave no code.
const NO_CODE: i64 = -2;

/// The code `code` gives each row of `column`: null where the row is null or `code` gives none.
/// Strings of up to 12 bytes are held whole in their 16-byte view: equal views are equal
/// strings. A small cache by view answers a column of few short values (TPC-H's flags,
/// interleaved, so runs are short) without hashing the bytes, and runs of one long value
/// (sorted or clustered input) ask once.
fn codes_of(column: &StringChunked, mut code: impl FnMut(&[u8]) -> Option<i64>) -> Int64Chunked {
    let mut codes = Vec::with_capacity(column.len());
    let mut missing = false;
    let mut last: Option<(&[u8], i64)> = None;
    let mut cache = [(0u128, EMPTY); VIEW_CACHE];
    for arr in column.downcast_iter() {
        let views = arr.views();
        for i in 0..arr.len() {
            let view = views[i];
            // SAFETY (both reads): i < arr.len().
            let c = if view.length <= View::MAX_INLINE_SIZE {
                let bits = view.as_u128();
                let at = ((bits as u64 ^ (bits >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - VIEW_CACHE.trailing_zeros())) as usize;
                match cache[at] {
                    (b, c) if b == bits && c != EMPTY => c,
                    _ => cached(&mut cache, at, bits, || code(unsafe { arr.value_unchecked(i) }.as_bytes()).unwrap_or(NO_CODE)),
                }
            } else {
                let value = unsafe { arr.value_unchecked(i) }.as_bytes();
                match last {
                    Some((v, c)) if v == value => c,
                    _ => {
                        let c = code(value).unwrap_or(NO_CODE);
                        last = Some((value, c));
                        c
                    }
                }
            };
            missing |= c == NO_CODE;
            codes.push(c);
        }
    }
    let validity = (column.null_count() > 0 || missing).then(|| Bitmap::from_iter(column.iter().zip(&codes).map(|(v, &c)| v.is_some() && c != NO_CODE)));
    Int64Chunked::from_vec_validity(column.name().clone(), codes, validity)
}

/// The code of a string of up to 12 bytes whose view is `bits`, from `cache` when it is in one
/// of the CACHE_WAYS entries from `at` (values whose hashes meet, as TPC-H's "R" and "N" do,
/// would otherwise push each other out on every row), and from `code` and put there when not.
#[cold]
fn cached(cache: &mut [(u128, i64); VIEW_CACHE], at: usize, bits: u128, code: impl FnOnce() -> i64) -> i64 {
    let found = (0..CACHE_WAYS).map(|w| (at + w) % VIEW_CACHE).find(|&j| cache[j].1 == EMPTY || cache[j].0 == bits);
    match found {
        Some(j) if cache[j].1 != EMPTY => cache[j].1,
        _ => {
            let c = code();
            cache[found.unwrap_or(at)] = (bits, c);
            c
        }
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
    fn looking_up_adds_nothing_and_gives_null_for_strings_not_held() {
        let mut d = Dictionary::default();
        d.encode(&StringChunked::from_iter_values("k".into(), ["b", "a long string past twelve bytes", ""].into_iter()));
        let probe = StringChunked::from_iter_options(
            "k".into(),
            [Some("a long string past twelve bytes"), Some("c"), None, Some(""), Some("b"), Some("c"), Some("another long string, not held")].into_iter(),
        );
        assert_eq!(d.look_up(&probe).iter().collect::<Vec<_>>(), [Some(1), None, None, Some(2), Some(0), None, None]);
        assert_eq!(d.encode(&StringChunked::from_iter_values("k".into(), ["c"].into_iter())).iter().collect::<Vec<_>>(), [Some(3)], "'c' was not added");
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

    #[test]
    fn short_strings_with_other_bytes_past_their_end_share_a_code() {
        use polars_arrow::array::Utf8ViewArray;
        use polars_buffer::Buffer;
        // "R" three times: clean, and with other bytes past its end in the view (views that
        // differ, so the cache cannot answer); then "RX", which those bytes spell out.
        let clean = View::new_inline(b"R");
        let junk = View { prefix: u32::from_le_bytes(*b"RXYZ"), buffer_idx: 0xDEAD, offset: 0xBEEF, ..clean };
        let other = View::new_inline(b"RX");
        let views: Buffer<View> = vec![clean, junk, View { buffer_idx: 7, ..clean }, other].into();
        // SAFETY: every view is inline and its used bytes are UTF-8.
        let arr = unsafe { Utf8ViewArray::new_unchecked_unknown_md(ArrowDataType::Utf8View, views, Default::default(), None, Some(0)) };
        let column = StringChunked::with_chunk("k".into(), arr);
        let mut d = Dictionary::default();
        assert_eq!(d.encode(&column).into_no_null_iter().collect::<Vec<_>>(), [0, 0, 0, 1]);
        assert_eq!(d.decode("k".into(), &[0, 1], &[true, true]).iter().collect::<Vec<_>>(), [Some("R"), Some("RX")]);
    }

    #[test]
    fn categories_take_the_codes_of_their_strings() {
        let mut d = Dictionary::default();
        d.encode(&StringChunked::from_iter_values("k".into(), ["a"].into_iter()));
        // An Enum column of categories ["b", "a"]: rows b, a, null, b.
        let categories = FrozenCategories::new(["b", "a"]).unwrap();
        let ids = UInt8Chunked::from_iter_options("k".into(), [Some(0), Some(1), None, Some(0)].into_iter());
        // SAFETY: every id is a category.
        let column =
            unsafe { Categorical8Chunked::from_cats_and_dtype_unchecked(ids, DataType::from_frozen_categories(categories)) }.into_series().into_column();
        assert_eq!(d.encode_categories(&column).unwrap().iter().collect::<Vec<_>>(), [Some(1), Some(0), None, Some(1)]);
        assert_eq!(d.decode("k".into(), &[0, 1], &[true, true]).iter().collect::<Vec<_>>(), [Some("a"), Some("b")]);
        assert!(d.encode_categories(&Column::new("k".into(), ["a"])).is_err());
    }

    #[test]
    fn a_few_interleaved_flags_are_searched_for_once_each() {
        // TPC-H's return flags and line statuses; "R" and "N" meet in the cache.
        let flags = ["R", "A", "N", "F", "O"];
        let column = StringChunked::from_iter_values("k".into(), (0..1000).map(|i| flags[i * 7 % 5]));
        let mut d = Dictionary::default();
        let codes = d.encode(&column);
        assert_eq!(d.searches, 5);
        assert!(d.decode("k".into(), &codes.into_no_null_iter().collect::<Vec<_>>(), &[true; 1000]).into_series().equals(&column.into_series()));
    }
}
