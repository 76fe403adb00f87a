//! Picking the fields a CSV source reads out of each record into a compact buffer, so polars'
//! parser sees only them. Without a nightly compiler polars splits fields and skips the rest of
//! a line byte by byte: TPC-H Q18 reads 2 of lineitem's 16 columns, and polars spent about
//! 130 ns a line walking past the other 14. The block masks that found the records find the
//! fields too, at a few nanoseconds each. Date, integer and float fields are parsed in the same
//! pass instead of being copied (polars splitting the copied fields again and dispatching to its
//! parsers took about 15 ns a field): anything their plain forms do not cover is left to polars.
use super::iso_dates::{EMPTY, iso_days};
use super::lines::{CsvShape, RecordScan, Records, block_masks, for_each_block};

/// Which fields of a record to keep.
#[derive(Clone, Debug)]
pub struct FieldPicker {
    shape: CsvShape,
    /// For fields 0 to the last kept one: the byte written after the field (the delimiter, or
    /// `\n` after the last field written), or 0 for a field not written (left out, or parsed).
    after: Vec<u8>,
    /// For fields 0 to the last kept one: 1 + the index of the column the field is parsed
    /// into, or 0. Empty when no field is.
    parsed_into: Vec<u32>,
    /// The kind of each column parsed while picking.
    kinds: Vec<ParsedKind>,
}

/// What a field parsed while picking holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParsedKind {
    /// A date written `YYYY-MM-DD` ([`iso_days`]).
    Date,
    /// An integer written `-?[0-9]{1,18}` ([`plain_int`]).
    Int,
    /// A float not starting with a blank or a quote, read as polars reads one.
    Float,
}

/// The values of one column parsed while picking, null where a field was empty.
#[derive(Debug)]
pub enum ParsedValues {
    /// Days since 1970, or [`EMPTY`].
    Days(Vec<i32>),
    /// Integers, or [`NULL_INT`].
    Ints(Vec<i64>),
    /// Floats (0 where null), and the rows that are null.
    Floats(Vec<f64>, Vec<u32>),
}

impl ParsedValues {
    /// How many values it holds.
    pub fn len(&self) -> usize {
        match self {
            ParsedValues::Days(v) => v.len(),
            ParsedValues::Ints(v) => v.len(),
            ParsedValues::Floats(v, _) => v.len(),
        }
    }

    fn empty(kind: ParsedKind) -> Self {
        match kind {
            ParsedKind::Date => ParsedValues::Days(Vec::new()),
            ParsedKind::Int => ParsedValues::Ints(Vec::new()),
            ParsedKind::Float => ParsedValues::Floats(Vec::new(), Vec::new()),
        }
    }

    fn kind(&self) -> ParsedKind {
        match self {
            ParsedValues::Days(_) => ParsedKind::Date,
            ParsedValues::Ints(_) => ParsedKind::Int,
            ParsedValues::Floats(..) => ParsedKind::Float,
        }
    }

    /// Cleared, with room for `rows` values (nulls are rare: not for them).
    fn clear_for(&mut self, rows: usize) {
        match self {
            ParsedValues::Days(v) => (v.clear(), v.reserve(rows)),
            ParsedValues::Ints(v) => (v.clear(), v.reserve(rows)),
            ParsedValues::Floats(v, nulls) => {
                nulls.clear();
                (v.clear(), v.reserve(rows))
            }
        };
    }
}

/// The value of float field `b` (not empty) as polars' CSV reader reads it, when it does not
/// start with a blank or a quote (which polars strips first: those are left to it).
#[inline]
pub fn plain_float(b: &[u8]) -> Option<f64> {
    match b.first() {
        Some(b' ' | b'\t' | b'"') | None => None,
        Some(_) => fast_float2::parse(b).ok(),
    }
}

/// The integer of an empty field: null, as polars' CSV reader reads one. [`plain_int`] never
/// gives it.
pub const NULL_INT: i64 = i64::MIN;

/// The value of `b` when it is an integer written `-?[0-9]{1,18}`: polars' integer parser
/// reads such text as this, and it cannot overflow an i64. Anything else (a sign `+`, blanks,
/// quotes, 19 digits) is left to polars.
#[inline]
pub fn plain_int(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value = 0i64;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + i64::from(d);
    }
    Some(if negative { -value } else { value })
}

/// The columns parsed out of picked records ([`FieldPicker::with_parsed`]), in the order of
/// their fields.
#[derive(Debug, Default)]
pub struct PickedValues {
    pub columns: Vec<ParsedValues>,
    /// False when a field held text its column's kind does not parse (polars must).
    pub ok: bool,
    /// Records and bytes of the last chunk parsed, to size the next one's columns by: each
    /// chunk's columns go on to polars, and growing them while parsing copied them into fresh
    /// memory (a sixth of lineitem's page faults in TPC-H Q18 on CSV).
    last: (usize, usize),
}

impl PickedValues {
    /// About the records `bytes` holds, going by the last chunk (none for the first).
    fn expected_rows(&self, bytes: usize) -> usize {
        let (records, read) = self.last;
        let rows = (bytes as u128 * records as u128).checked_div(read as u128).unwrap_or(0) as usize;
        // A little over: a few more records than the average would grow (copy) the columns.
        rows + rows / 32
    }
}

impl FieldPicker {
    /// A picker of fields `keep` (ascending indices, not empty) of records of `shape`.
    pub fn new(shape: CsvShape, keep: &[usize]) -> Self {
        Self::with_parsed(shape, keep, &[])
    }

    /// A picker of fields `keep` that parses fields `parsed` (some of `keep`, ascending, with
    /// their kinds) itself ([`Self::scan_pick_and_parse`]) instead of writing them.
    pub fn with_parsed(shape: CsvShape, keep: &[usize], parsed: &[(usize, ParsedKind)]) -> Self {
        let last = *keep.last().expect("a field to keep");
        let written: Vec<usize> = keep.iter().copied().filter(|k| !parsed.iter().any(|(p, _)| p == k)).collect();
        let mut after = vec![0; last + 1];
        for (i, &k) in written.iter().enumerate() {
            after[k] = if i + 1 == written.len() { b'\n' } else { shape.delimiter };
        }
        let mut parsed_into = if parsed.is_empty() { Vec::new() } else { vec![0; last + 1] };
        for (i, &(k, _)) in parsed.iter().enumerate() {
            parsed_into[k] = i as u32 + 1;
        }
        FieldPicker { shape, after, parsed_into, kinds: parsed.iter().map(|&(_, kind)| kind).collect() }
    }

    /// Finds the records of `bytes` as [`CsvShape::scan`] does, and in the same pass writes
    /// their kept fields to `out` (cleared first), as records of their own. The bool is false,
    /// with `out` unusable, when a quote opens a quoted part in the middle of a field: the
    /// masks count a quote anywhere as opening one, polars only at the start of a field, so such
    /// bytes are left to polars as they are. The picked records are those of the scan only
    /// when it found no blank line (a blank line is picked as a record).
    pub fn scan_and_pick(&self, bytes: &[u8], out: &mut Vec<u8>) -> Option<(Records, bool)> {
        self.scan_and_pick_in::<false>(bytes, out, &mut PickedValues::default())
    }

    /// [`Self::scan_and_pick`], parsing the fields it parses into `values` (cleared first) as
    /// it goes. The bool is true when the fields were picked and every one parsed
    /// (`values.ok`).
    pub fn scan_pick_and_parse(&self, bytes: &[u8], out: &mut Vec<u8>, values: &mut PickedValues) -> Option<(Records, bool)> {
        if !values.columns.iter().map(ParsedValues::kind).eq(self.kinds.iter().copied()) {
            values.columns = self.kinds.iter().map(|&k| ParsedValues::empty(k)).collect();
        }
        let rows = values.expected_rows(bytes.len());
        values.columns.iter_mut().for_each(|c| c.clear_for(rows));
        values.ok = true;
        let scanned = self.scan_and_pick_in::<true>(bytes, out, values);
        if let Some((records, _)) = &scanned {
            values.last = (records.count, bytes.len());
        }
        scanned.map(|(records, picked)| (records, picked && values.ok))
    }

    fn scan_and_pick_in<const PARSE: bool>(&self, bytes: &[u8], out: &mut Vec<u8>, values: &mut PickedValues) -> Option<(Records, bool)> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.scan_and_pick_avx2::<PARSE>(bytes, out, values) };
        }
        self.scan_and_pick_with::<PARSE>(bytes, out, values, |block| block_masks(block, self.shape.quote, self.shape.delimiter))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1")]
    unsafe fn scan_and_pick_avx2<const PARSE: bool>(&self, bytes: &[u8], out: &mut Vec<u8>, values: &mut PickedValues) -> Option<(Records, bool)> {
        use super::lines::block_masks_avx2;
        // SAFETY: this function runs only where the CPU has avx2.
        self.scan_and_pick_with::<PARSE>(bytes, out, values, |block| unsafe { block_masks_avx2(block, self.shape.quote, self.shape.delimiter) })
    }

    /// The walk over 64-byte blocks, given how to compute a block's (quote, delimiter, newline)
    /// masks: each field ends at the next delimiter or newline bit; after the last kept field
    /// of a record only newline bits are looked at.
    #[inline(always)]
    fn scan_and_pick_with<const PARSE: bool>(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        values: &mut PickedValues,
        masks: impl Fn(&[u8]) -> (u64, u64, u64),
    ) -> Option<(Records, bool)> {
        out.clear();
        // Each kept field takes at most the bytes it had, its separator the delimiter or
        // newline after it (one more byte for a last record without a newline); 16 bytes of
        // slack let short fields be copied whole.
        out.reserve(bytes.len() + 1 + 16);
        let mut scan = RecordScan::new(self.shape.width);
        let last = self.after.len() - 1;
        let (mut field, mut start, mut skipping, mut written) = (0usize, 0usize, false, 0usize);
        let mut picking = true;
        // Bit 0 set when the previous block ended with a field boundary (or none came yet), or
        // with a closing quote.
        let (mut boundary_before, mut close_before) = (1u64, 0u64);
        let scanned = for_each_block(bytes, masks, |block| {
            if !scan.block(block) {
                return false;
            }
            let mut bounds = block.delims | block.newlines;
            if block.quotes != 0 {
                // A quote that opens must start a field, or follow a closing quote (`""`, an
                // escaped quote, or more text of a field that started with a quote).
                let (opening, closing) = (block.quotes & block.inside, block.quotes & !block.inside);
                picking &= opening & !(bounds << 1 | boundary_before | closing << 1 | close_before) == 0;
                close_before = closing >> 63;
            } else {
                close_before = 0;
            }
            boundary_before = bounds >> 63;
            if !picking {
                return true;
            }
            while bounds != 0 {
                if skipping {
                    let nl = bounds & block.newlines;
                    if nl == 0 {
                        break;
                    }
                    let p = nl.trailing_zeros() as usize;
                    bounds &= !(u64::MAX >> (63 - p));
                    (field, start, skipping) = (0, block.base + p + 1, false);
                    continue;
                }
                let p = bounds.trailing_zeros() as usize;
                bounds &= bounds - 1;
                let newline = block.newlines >> p & 1 == 1;
                written = self.field::<PARSE>(bytes, field, start, block.base + p, out, written, values);
                skipping = field == last && !newline;
                field = if newline { 0 } else { field + 1 };
                start = block.base + p + 1;
            }
            true
        });
        // A quoted field left open at the end is a bad record: the slow path reports it.
        let records = match scanned? {
            false => scan.finish()?,
            true => return None,
        };
        if !picking {
            return Some((records, false));
        }
        // A last record without a newline.
        if !skipping && (field > 0 || start < bytes.len()) {
            written = self.field::<PARSE>(bytes, field, start, bytes.len(), out, written, values);
        }
        // SAFETY: `field` wrote the first `written` bytes.
        unsafe { out.set_len(written) };
        Some((records, true))
    }

    /// Writes field `field`, `bytes[start..end]`, at `out[written..]` when it is kept; the new
    /// end of what `out` holds. A call per field with `extend_from_slice` cost a `memcpy` call
    /// each, for fields of a few bytes.
    /// A field parsed while picking goes into `values` instead (when `PARSE`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn field<const PARSE: bool>(
        &self,
        bytes: &[u8],
        field: usize,
        start: usize,
        end: usize,
        out: &mut Vec<u8>,
        written: usize,
        values: &mut PickedValues,
    ) -> usize {
        let Some(&after) = self.after.get(field).filter(|&&a| a != 0) else {
            if PARSE && let Some(&slot) = self.parsed_into.get(field).filter(|&&d| d != 0) {
                // polars drops a `\r` that ends a field it reads (the end of a `\r\n` line).
                let text = &bytes[start..end];
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                match &mut values.columns[slot as usize - 1] {
                    ParsedValues::Days(days) => {
                        let day = if text.is_empty() { Some(EMPTY) } else { iso_days(text) };
                        values.ok &= day.is_some();
                        days.push(day.unwrap_or(EMPTY));
                    }
                    ParsedValues::Ints(ints) => {
                        let int = if text.is_empty() { Some(NULL_INT) } else { plain_int(text) };
                        values.ok &= int.is_some();
                        ints.push(int.unwrap_or(NULL_INT));
                    }
                    ParsedValues::Floats(floats, nulls) => {
                        if text.is_empty() {
                            nulls.push(floats.len() as u32);
                            floats.push(0.0);
                        } else {
                            let float = plain_float(text);
                            values.ok &= float.is_some();
                            floats.push(float.unwrap_or(0.0));
                        }
                    }
                }
            }
            return written;
        };
        let len = end - start;
        // What was written so far took at most the bytes before `start`.
        assert!(written <= start && end <= bytes.len() && out.capacity() >= bytes.len() + 17);
        // SAFETY: reads stay in `bytes` (checked above); writes end by `written + 16` or
        // `written + len + 1`, both at most `bytes.len() + 17`, within the capacity.
        unsafe {
            let dst = out.as_mut_ptr().add(written);
            let src = bytes.as_ptr().add(start);
            if len <= 16 && start + 16 <= bytes.len() {
                dst.cast::<[u8; 16]>().write_unaligned(src.cast::<[u8; 16]>().read_unaligned());
            } else {
                std::ptr::copy_nonoverlapping(src, dst, len);
            }
            *dst.add(len) = after;
        }
        written + len + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward definition: split lines, then fields.
    fn pick_by_lines(bytes: &[u8], keep: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in text.split(|&b| b == b'\n') {
            let fields: Vec<&[u8]> = line.split(|&b| b == b',').collect();
            let picked: Vec<&[u8]> = keep.iter().map(|&k| fields[k]).collect();
            out.extend_from_slice(&picked.join(&b","[..]));
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn picked_fields_agree_with_splitting_lines() {
        let mut next = crate::testing::below(0x9e37_79b9_7f4a_7c15u64);
        let shape = CsvShape { width: 5, delimiter: b',', quote: b'"' };
        let keeps: [&[usize]; 9] = [&[0], &[4], &[1, 3], &[0, 1, 2, 3, 4], &[2, 4], &[0, 4], &[1, 2], &[0, 1, 3, 4], &[2, 3, 4]];
        for case in 0..3000 {
            let mut text = Vec::new();
            for _ in 0..next(9) + 1 {
                for f in 0..5 {
                    if f > 0 {
                        text.push(b',');
                    }
                    // Fields of 0 to 130 bytes, so records cross 64-byte blocks anywhere.
                    let len = if next(4) == 0 { next(130) } else { next(6) };
                    text.extend((0..len).map(|i| b'a' + ((i + f) % 26) as u8));
                    if f == 4 && next(5) == 0 {
                        text.push(b'\r');
                    }
                }
                text.push(b'\n');
            }
            if next(3) == 0 {
                text.pop(); // no newline after the last record
            }
            let keep = keeps[case % keeps.len()];
            let picker = FieldPicker::new(shape, keep);
            let mut portable = Vec::new();
            let scanned = picker.scan_and_pick_with::<false>(&text, &mut portable, &mut PickedValues::default(), |b| block_masks(b, b'"', b','));
            assert_eq!(scanned, Some((shape.scan(&text).unwrap(), true)));
            assert_eq!(String::from_utf8_lossy(&portable), String::from_utf8_lossy(&pick_by_lines(&text, keep)), "{keep:?}");
            let mut out = Vec::new();
            assert_eq!(picker.scan_and_pick(&text, &mut out), scanned);
            assert_eq!(out, portable);
        }
        let ragged = FieldPicker::new(shape, &[1]).scan_and_pick(b"a,b,c,d,e\na,b\n", &mut Vec::new());
        assert_eq!(ragged, None, "a record with the wrong number of fields");
    }

    #[test]
    fn parsed_columns_are_sized_by_the_chunk_before() {
        let shape = CsvShape { width: 3, delimiter: b',', quote: b'"' };
        let picker = FieldPicker::with_parsed(shape, &[0, 2], &[(0, ParsedKind::Int), (2, ParsedKind::Float)]);
        let chunk = |n: usize, from: usize| -> Vec<u8> { (from..from + n).flat_map(|i| format!("{i},name {i},{i}.5\n").into_bytes()).collect() };
        let (mut out, mut values) = (Vec::new(), PickedValues::default());
        assert_eq!(picker.scan_pick_and_parse(&chunk(1100, 1000), &mut out, &mut values).map(|(r, ok)| (r.count, ok)), Some((1100, true)));
        // The columns went on (to polars): the next chunk's are new, and of about its size
        // (grown one push at a time they would hold 2048).
        let taken = std::mem::take(&mut values.columns);
        assert!(matches!(&taken[0], ParsedValues::Ints(v) if v[..3] == [1000, 1001, 1002]));
        let next = chunk(1100, 5000);
        assert_eq!(picker.scan_pick_and_parse(&next, &mut out, &mut values).map(|(r, ok)| (r.count, ok)), Some((1100, true)));
        let capacity = |v: &ParsedValues| match v {
            ParsedValues::Ints(v) => (v.len(), v.capacity()),
            ParsedValues::Floats(v, _) => (v.len(), v.capacity()),
            ParsedValues::Days(v) => (v.len(), v.capacity()),
        };
        for column in &values.columns {
            let (len, capacity) = capacity(column);
            assert!(len == 1100 && (1100..1200).contains(&capacity), "{len} values, room for {capacity}");
        }
    }

    #[test]
    fn plain_integers_are_read_and_anything_else_is_left_to_polars() {
        for (text, value) in
            [("0", 0), ("-0", 0), ("007", 7), ("-42", -42), ("999999999999999999", 999_999_999_999_999_999), ("-999999999999999999", -999_999_999_999_999_999)]
        {
            assert_eq!(plain_int(text.as_bytes()), Some(value), "{text}");
        }
        for text in ["", "-", "+5", " 7", "7 ", "\"1\"", "1.5", "1e3", "1000000000000000000", "--1", "x"] {
            assert_eq!(plain_int(text.as_bytes()), None, "{text}");
        }
    }

    /// Whether the fields could be picked.
    fn pick(picker: &FieldPicker, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        picker.scan_and_pick(bytes, out).expect("whole records").1
    }

    #[test]
    fn only_quotes_that_open_a_field_are_picked() {
        let shape = CsvShape { width: 2, delimiter: b',', quote: b'"' };
        let picker = FieldPicker::new(shape, &[1]);
        let mut out = Vec::new();
        assert!(pick(&picker, b"1,a\n2,\"b,\n\"\"c\"\"\"\n", &mut out));
        assert_eq!(out, b"a\n\"b,\n\"\"c\"\"\"\n");
        assert!(pick(&picker, b"\"1\",\"a\"\r\n", &mut out));
        assert_eq!(out, b"\"a\"\r\n");
        assert!(!pick(&picker, b"1,a\n2,b\"c\"\n", &mut out), "a quote inside a field");
        let long = [&b"1,x\n"[..]; 40].concat();
        assert!(!pick(&picker, &[&long[..], b"a\"b,c\"d,e\n"].concat(), &mut out), "past the first block");
        // A quote opening right after a block boundary that ends a field, and one that follows
        // a closing quote across a block boundary.
        for pad in 0..70 {
            let text = [&b"1,"[..], &vec![b'x'; pad], b"\n2,\"y\"\"z\"\n"].concat();
            assert!(pick(&picker, &text, &mut out), "{pad}");
            assert_eq!(out, [&vec![b'x'; pad][..], b"\n\"y\"\"z\"\n"].concat());
        }
    }
}
