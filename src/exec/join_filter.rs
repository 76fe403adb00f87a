//! Join filters at run time (DuckDB's join filter pushdown, Spark's runtime filters): once an
//! inner or semi join has read its right side, the keys it holds go to the Parquet reader of
//! its left side, which skips the rows whose key has no match, and whole row groups whose key
//! statistics hold none of them. The join would drop those rows anyway; dropped in the reader
//! they are neither decoded (beyond the key) nor filtered, sent or probed. TPC-H Q3 joins 3.2 M
//! lineitem rows with 147 K orders for 30 K matches.
//!
//! The filter may let through keys that have no match (a Bloom filter's false positives): the
//! join still checks every row it gets. It never drops a key that has one.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use polars::prelude::*;

/// Keys kept in one bit each when their span is at most this many bits per key (the bitmap
/// then takes at most 8 bytes a key, as a sorted list would).
const BITMAP_BITS_PER_KEY: u64 = 64;
/// Spans up to this many bits always get a bitmap (2 MiB): a probe is then a subtraction and
/// one load, where a Bloom filter's hash took most of the time of reading the left side (TPC-H
/// Q5: 46 K order keys spread over 6 M, probed by 6 M lineitem rows; the probes come in key
/// order from sorted files, so the bitmap is read as a stream).
const SMALL_BITMAP_BITS: u64 = 1 << 24;
/// Bloom filter size: 16 bits a key, three bits set in one 64-bit word per key, for about 1%
/// false positives at one cache line read per probe.
const BLOOM_BITS_PER_KEY: usize = 16;
/// Most keys kept sorted for row-group ranges (8 MiB).
const MOST_SORTED_KEYS: u64 = 1 << 20;

/// A set of i64 keys, probed once per row read.
#[derive(Debug)]
pub struct KeyFilter(Repr);

#[derive(Debug)]
enum Repr {
    /// No key: nothing matches.
    Empty,
    /// One bit per value of `min..=max`.
    Bitmap { min: i64, max: i64, words: Vec<u64> },
    /// A Bloom filter of `words.len()` (a power of two) words, each key setting three bits in
    /// the word its hash's top bits name (`64 - shift` of them); the keys sorted (for ranges),
    /// unless there are more than [`MOST_SORTED_KEYS`].
    Bloom { min: i64, max: i64, words: Vec<u64>, shift: u32, sorted: Option<Vec<i64>> },
}

/// A 64-bit mix of a key (splitmix64's finalizer): consecutive keys land far apart.
fn mix(v: i64) -> u64 {
    let mut h = (v as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Calls `f` with each non-null value of `parts`, read from the chunks' buffers.
fn each_value(parts: &[Int64Chunked], mut f: impl FnMut(i64)) {
    for array in parts.iter().flat_map(|ca| ca.downcast_iter()) {
        match array.validity().filter(|valid| valid.unset_bits() > 0) {
            None => array.values().iter().for_each(|&v| f(v)),
            Some(valid) => array.values().iter().zip(valid.iter()).filter(|(_, ok)| *ok).for_each(|(&v, _)| f(v)),
        }
    }
}

/// The Bloom word of a hash (its top bits) and the three bits it sets there.
fn bloom_slot(h: u64, shift: u32) -> (usize, u64) {
    let word = if shift == 64 { 0 } else { (h >> shift) as usize };
    (word, 1 << (h & 63) | 1 << ((h >> 6) & 63) | 1 << ((h >> 12) & 63))
}

impl KeyFilter {
    /// The set of the non-null values of `parts`.
    pub fn new(parts: &[Int64Chunked]) -> Self {
        Self::build(parts, MOST_SORTED_KEYS)
    }

    /// The set, with the keys sorted when there are at most `most_sorted`.
    fn build(parts: &[Int64Chunked], most_sorted: u64) -> Self {
        // The reader waits while this is built: polars' min and max, and the values read from
        // each chunk's buffer (an Option per value cost as much as the rest).
        let count: u64 = parts.iter().map(|ca| (ca.len() - ca.null_count()) as u64).sum();
        let (Some(min), Some(max)) = (parts.iter().filter_map(|ca| ca.min()).min(), parts.iter().filter_map(|ca| ca.max()).max()) else {
            return KeyFilter(Repr::Empty);
        };
        let span = (max as i128 - min as i128) as u64;
        if span < SMALL_BITMAP_BITS.max(count.saturating_mul(BITMAP_BITS_PER_KEY)) {
            let mut words = vec![0u64; (span / 64 + 1) as usize];
            each_value(parts, |v| {
                let o = v.wrapping_sub(min) as u64;
                words[(o / 64) as usize] |= 1 << (o % 64);
            });
            return KeyFilter(Repr::Bitmap { min, max, words });
        }
        let n = (count as usize * BLOOM_BITS_PER_KEY / 64).next_power_of_two();
        let shift = 64 - n.trailing_zeros();
        let mut words = vec![0u64; n];
        each_value(parts, |v| {
            let (w, bits) = bloom_slot(mix(v), shift);
            words[w] |= bits;
        });
        // Sorting many keys would take longer than the row groups it could skip (many keys
        // rarely leave a row group without one).
        let sorted = (count <= most_sorted).then(|| {
            let mut sorted = Vec::with_capacity(count as usize);
            each_value(parts, |v| sorted.push(v));
            sorted.sort_unstable();
            sorted.dedup();
            sorted
        });
        KeyFilter(Repr::Bloom { min, max, words, shift, sorted })
    }

    /// True when `v` may be a key (always when it is one).
    #[inline]
    pub fn contains(&self, v: i64) -> bool {
        match &self.0 {
            Repr::Empty => false,
            Repr::Bitmap { min, max, words } => {
                let o = v.wrapping_sub(*min) as u64;
                o <= max.wrapping_sub(*min) as u64 && words[(o / 64) as usize] >> (o % 64) & 1 == 1
            }
            Repr::Bloom { min, max, words, shift, .. } => {
                if v < *min || v > *max {
                    return false;
                }
                let (w, bits) = bloom_slot(mix(v), *shift);
                words[w] & bits == bits
            }
        }
    }

    /// True when some key may lie in `lo..=hi` (exact, unless there are too many keys to sort:
    /// then true when the range meets the keys' min..max).
    pub fn any_in(&self, lo: i64, hi: i64) -> bool {
        match &self.0 {
            Repr::Empty => false,
            Repr::Bitmap { min, max, words } => {
                let (lo, hi) = (lo.max(*min), hi.min(*max));
                if lo > hi {
                    return false;
                }
                let (a, b) = (lo.wrapping_sub(*min) as u64, hi.wrapping_sub(*min) as u64);
                let (wa, wb) = ((a / 64) as usize, (b / 64) as usize);
                let low = u64::MAX << (a % 64);
                let high = u64::MAX >> (63 - b % 64);
                if wa == wb {
                    return words[wa] & low & high != 0;
                }
                words[wa] & low != 0 || words[wa + 1..wb].iter().any(|&w| w != 0) || words[wb] & high != 0
            }
            Repr::Bloom { min, max, sorted: None, .. } => lo <= *max && hi >= *min,
            Repr::Bloom { sorted: Some(sorted), .. } => {
                let i = sorted.partition_point(|&k| k < lo);
                i < sorted.len() && sorted[i] <= hi
            }
        }
    }

    /// Which rows of `keys` may have a match (a null key has none).
    pub fn mask(&self, keys: &Int64Chunked) -> BooleanChunked {
        let chunks = keys.downcast_iter().map(|a| {
            // 64 rows to a word: a bit at a time through an iterator cost more than the lookups.
            let mut bytes = Vec::with_capacity(a.len().div_ceil(64) * 8);
            for values in a.values().chunks(64) {
                let word = values.iter().enumerate().fold(0u64, |w, (i, &v)| w | (self.contains(v) as u64) << i);
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            bytes.truncate(a.len().div_ceil(8));
            let bits = polars_arrow::bitmap::Bitmap::from_u8_vec(bytes, a.len());
            let bits = match a.validity() {
                Some(valid) => &bits & valid,
                None => bits,
            };
            polars_arrow::array::BooleanArray::from_data_default(bits, None)
        });
        BooleanChunked::from_chunk_iter(keys.name().clone(), chunks)
    }
}

/// What a join hands its left side's reader: the keys of its right side, once every subtask
/// that holds some has given them (one for a broadcast join, all for a hash-partitioned one).
#[derive(Debug)]
pub struct JoinFilterSlot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    parts: Vec<Option<Int64Chunked>>,
    filter: Option<Arc<KeyFilter>>,
    /// A subtask ended without giving its keys (the job failed): readers go on unfiltered.
    closed: bool,
}

impl JoinFilterSlot {
    /// A slot waiting for `parts` sets of keys.
    pub fn new(parts: usize) -> Self {
        JoinFilterSlot { state: Mutex::new(SlotState { parts: vec![None; parts.max(1)], ..Default::default() }), changed: Condvar::new() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True while part `part` has not been given (and the filter is still wanted).
    pub fn wants(&self, part: usize) -> bool {
        let s = self.state();
        !s.closed && s.filter.is_none() && s.parts.get(part).is_some_and(Option::is_none)
    }

    /// Gives part `part` of the keys; the last part completes the filter.
    pub fn give(&self, part: usize, keys: Int64Chunked) {
        let mut s = self.state();
        if s.closed || s.filter.is_some() || s.parts.get(part).is_none_or(Option::is_some) {
            return;
        }
        s.parts[part] = Some(keys);
        if s.parts.iter().all(Option::is_some) {
            let parts: Vec<Int64Chunked> = s.parts.iter_mut().filter_map(Option::take).collect();
            s.filter = Some(Arc::new(KeyFilter::new(&parts)));
            self.changed.notify_all();
        }
    }

    /// The subtask that holds part `part` is ending: if it has not given it, the filter will
    /// never be complete, and readers stop waiting for it.
    pub fn close(&self, part: usize) {
        let mut s = self.state();
        if s.filter.is_none() && s.parts.get(part).is_some_and(Option::is_none) {
            s.closed = true;
            self.changed.notify_all();
        }
    }

    /// The filter, if it is complete.
    pub fn get(&self) -> Option<Arc<KeyFilter>> {
        self.state().filter.clone()
    }

    /// Waits until the filter is complete (None: it never will be, or the job is cancelled).
    pub fn wait(&self, cancel: &AtomicBool) -> Option<Arc<KeyFilter>> {
        let mut s = self.state();
        loop {
            if let Some(f) = &s.filter {
                return Some(f.clone());
            }
            if s.closed || cancel.load(Ordering::Relaxed) {
                return None;
            }
            // Cancellation is a flag, not a notification: look at it now and then.
            s = self.changed.wait_timeout(s, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(keys: &[Option<i64>]) -> KeyFilter {
        KeyFilter::new(&[Int64Chunked::from_iter_options("k".into(), keys.iter().copied())])
    }

    /// Every key is in; values outside the keys' range are out; `any_in` is exact.
    fn check(f: &KeyFilter, keys: &[i64]) {
        for &k in keys {
            assert!(f.contains(k), "{k} lost by {f:?}");
        }
        let (min, max) = (*keys.iter().min().unwrap(), *keys.iter().max().unwrap());
        for v in [min.saturating_sub(1), max.saturating_add(1), i64::MIN, i64::MAX] {
            if !keys.contains(&v) {
                assert!(!f.contains(v), "{v} found in {f:?}");
            }
        }
        // Around some keys (all quadratic pairs of probes around all keys take minutes).
        let step = keys.len().div_ceil(12);
        let around = keys.iter().step_by(step).chain(keys.last());
        let mut probes: Vec<i64> = around.flat_map(|&k| [k.saturating_sub(70), k.saturating_sub(1), k, k.saturating_add(1), k.saturating_add(64)]).collect();
        probes.extend([i64::MIN, i64::MAX, 0]);
        for &lo in &probes {
            for &hi in &probes {
                let want = keys.iter().any(|&k| lo <= k && k <= hi);
                assert_eq!(f.any_in(lo, hi), want, "any_in({lo}, {hi}) over {keys:?}");
            }
        }
    }

    #[test]
    fn dense_keys_get_a_bitmap_and_sparse_ones_a_bloom_filter() {
        let dense: Vec<i64> = (0..1000).map(|i| -500 + i * 3).collect();
        let f = filter(&dense.iter().map(|&k| Some(k)).collect::<Vec<_>>());
        assert!(matches!(f.0, Repr::Bitmap { .. }));
        check(&f, &dense);
        assert!(!f.contains(-499) && !f.contains(2));

        // A few keys over a span of millions (TPC-H order keys after a filter).
        let spread: Vec<i64> = (0..100).map(|i| 1 + i * 10_000).collect();
        let f = filter(&spread.iter().map(|&k| Some(k)).collect::<Vec<_>>());
        assert!(matches!(f.0, Repr::Bitmap { .. }));
        check(&f, &spread);

        let sparse: Vec<i64> = (0..1000).map(|i| i * 1_000_003 - 7).chain([i64::MIN, i64::MAX]).collect();
        let f = filter(&sparse.iter().map(|&k| Some(k)).collect::<Vec<_>>());
        assert!(matches!(f.0, Repr::Bloom { .. }));
        check(&f, &sparse);
        // False positives are rare: about 1% at 16 bits a key.
        let wrong = (0..100_000).filter(|i| f.contains(i * 1_000_003 + 500_000)).count();
        assert!(wrong < 3_000, "{wrong} of 100000 absent keys pass");
    }

    /// Keys given as a join's batches came (several chunks, nulls in some, empty ones) make
    /// the same set as the same keys in one chunk.
    #[test]
    fn keys_in_chunks_with_nulls_make_the_same_set() {
        // A bitmap's span, and a Bloom filter's.
        for far in [1_000_003, i64::MAX / 2] {
            let parts = [vec![Some(5), None, Some(-3)], vec![], vec![None, None], vec![Some(far), Some(5)]];
            let mut chunked = Int64Chunked::full_null("k".into(), 0);
            for part in &parts {
                chunked.append_owned(Int64Chunked::from_iter_options("k".into(), part.iter().copied())).unwrap();
            }
            assert!(chunked.chunks().len() > 1);
            let one = Int64Chunked::from_iter_options("k".into(), parts.iter().flatten().copied());
            let (a, b) = (KeyFilter::new(&[chunked]), KeyFilter::new(&[one]));
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            check(&a, &[5, -3, far]);
        }
        // Only nulls, in chunks: nothing matches.
        let nulls = Int64Chunked::full_null("k".into(), 3);
        assert!(matches!(KeyFilter::new(&[nulls, Int64Chunked::full_null("k".into(), 0)]).0, Repr::Empty));
    }

    #[test]
    fn without_sorted_keys_a_range_is_checked_against_min_and_max() {
        let keys = [10i64, 1_000_000_000, 2_000_000_000];
        let f = KeyFilter::build(&[Int64Chunked::from_slice("k".into(), &keys)], 2);
        assert!(matches!(&f.0, Repr::Bloom { sorted: None, .. }));
        assert!(keys.iter().all(|&k| f.contains(k)));
        assert!(f.any_in(11, 20) && f.any_in(i64::MIN, 10) && f.any_in(2_000_000_000, i64::MAX));
        assert!(!f.any_in(i64::MIN, 9) && !f.any_in(2_000_000_001, i64::MAX));
    }

    #[test]
    fn a_mask_agrees_with_contains_row_by_row() {
        let mut next = crate::testing::below(7);
        let sets: [Vec<i64>; 3] = [
            (0..5_000).map(|_| next(200_000) as i64 - 50_000).collect(),
            (0..2_000).map(|_| next(u64::MAX) as i64).collect(),
            vec![i64::MIN, -1, 0, 63, 64, i64::MAX],
        ];
        for keys in sets {
            let f = filter(&keys.iter().map(|&k| Some(k)).collect::<Vec<_>>());
            let mut probes: Vec<Option<i64>> = keys.iter().map(|&k| Some(k)).collect();
            probes.extend((0..5_000).map(|i| (i % 13 != 0).then(|| next(300_000) as i64 - 100_000)));
            probes.extend([Some(i64::MIN), Some(i64::MAX), Some(i64::MIN + 1), Some(i64::MAX - 1)]);
            let probe = Int64Chunked::from_iter_options("k".into(), probes.iter().copied());
            let expected: Vec<Option<bool>> = probes.iter().map(|v| Some(v.is_some_and(|v| f.contains(v)))).collect();
            assert_eq!(f.mask(&probe).iter().collect::<Vec<_>>(), expected, "{f:?}");
        }
    }

    #[test]
    fn extreme_and_single_keys() {
        for keys in [vec![i64::MIN], vec![i64::MAX], vec![i64::MIN, i64::MAX], vec![5], vec![-1, 0, 1], vec![63, 64, 127, 128]] {
            let f = filter(&keys.iter().map(|&k| Some(k)).collect::<Vec<_>>());
            check(&f, &keys);
        }
    }

    #[test]
    fn nulls_are_neither_keys_nor_matches() {
        let f = filter(&[None, Some(3), None]);
        check(&f, &[3]);
        let probe = Int64Chunked::from_iter_options("k".into(), [Some(3), None, Some(4)].into_iter());
        assert_eq!(f.mask(&probe).iter().collect::<Vec<_>>(), [Some(true), Some(false), Some(false)]);
        let none = filter(&[None, None]);
        assert!(matches!(none.0, Repr::Empty));
        assert!(!none.contains(0) && !none.any_in(i64::MIN, i64::MAX));
        assert_eq!(none.mask(&probe).sum(), Some(0));
        // Rows past a word, in two chunks, the second sliced: each row's bit is its key's.
        let rows: Vec<Option<i64>> = (0..300).map(|i| (i % 7 != 0).then_some(i % 11)).collect();
        let mut probe = Int64Chunked::from_iter_options("k".into(), rows[..130].iter().copied());
        probe.append(&Int64Chunked::from_iter_options("k".into(), rows.iter().copied()).slice(130, 170)).unwrap();
        let expected: Vec<Option<bool>> = rows.iter().map(|k| Some(k == &Some(3))).collect();
        assert_eq!(f.mask(&probe).iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn the_filter_is_complete_when_every_part_is_given() {
        let slot = JoinFilterSlot::new(2);
        let keys = |v: &[i64]| Int64Chunked::from_slice("k".into(), v);
        assert!(slot.wants(0) && slot.wants(1));
        slot.give(0, keys(&[1, 2]));
        assert!(slot.get().is_none() && !slot.wants(0) && slot.wants(1));
        // A part given twice counts once.
        slot.give(0, keys(&[9]));
        let waiter = std::thread::scope(|s| {
            let h = s.spawn(|| slot.wait(&AtomicBool::new(false)));
            slot.give(1, keys(&[7]));
            h.join().unwrap()
        });
        let f = waiter.expect("complete");
        assert!(f.contains(1) && f.contains(2) && f.contains(7) && !f.contains(9));
        // Closing after completion changes nothing.
        slot.close(1);
        assert!(slot.get().is_some());
    }

    #[test]
    fn a_closed_or_cancelled_slot_stops_the_wait() {
        let slot = JoinFilterSlot::new(1);
        assert!(slot.wait(&AtomicBool::new(true)).is_none());
        // A part already given does not close the slot; one not given does.
        let two = JoinFilterSlot::new(2);
        two.give(0, Int64Chunked::from_slice("k".into(), &[1]));
        two.close(0);
        assert!(two.wants(1));
        slot.close(0);
        assert!(slot.wait(&AtomicBool::new(false)).is_none());
        assert!(!slot.wants(0));
        slot.give(0, Int64Chunked::from_slice("k".into(), &[1]));
        assert!(slot.get().is_none());
    }
}
