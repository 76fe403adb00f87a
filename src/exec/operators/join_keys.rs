//! A join's key columns as one or two integer columns, the form the hash index's tables hold
//! (see [`super::hash_index`]).
//!
//! Integer-like keys (integers, dates, times, datetimes, durations) are their values.
//! A string key is numbered by a dictionary of the right side's strings; a left string the
//! dictionary does not hold gets no code and matches nothing, as a null key never does. A float
//! key is its bits, with -0.0 taken as 0.0 and every NaN as one NaN (NaN matches NaN and -0.0
//! matches 0.0, as in polars and DuckDB); a UInt64 key is its bits read as an i64. With more
//! than two key columns, the second and later ones are folded into one code: each pair (code of
//! the columns so far, next column's value) is numbered as the right side's rows bring it.
use std::borrow::Cow;

use polars::polars_utils::aliases::PlHashMap;
use polars::prelude::*;

use super::dictionary::Dictionary;

/// How one key column becomes an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Its value, widened to i64.
    Int,
    /// Its bits, read as an i64.
    Bits,
    /// The bits of its value as an f64, -0.0 and NaN made one.
    Float,
    /// Its code in the right side's dictionary.
    Str,
}

impl Kind {
    /// How a key of `left` type matched with one of `right` type is coded (None: it cannot be).
    fn of(left: &DataType, right: &DataType) -> Option<Kind> {
        use DataType::*;
        let int = |t: &DataType| super::hash_index::fits_i64(t) || matches!(t, Datetime(..) | Duration(_) | Time);
        Some(match (left, right) {
            (l, r) if int(l) && int(r) => Kind::Int,
            (UInt64, UInt64) => Kind::Bits,
            (Float32 | Float64, Float32 | Float64) => Kind::Float,
            (String, String) => Kind::Str,
            _ => return None,
        })
    }
}

/// Codes the key columns of a join's two sides alike.
pub struct JoinKeys {
    kinds: Vec<Kind>,
    /// For each key column, the dictionary of the right side's strings (string keys only).
    strings: Vec<Option<Dictionary>>,
    /// With three or more key columns: for column `i + 2`, the code of each (code of columns
    /// 1..i+2, value) pair the right side holds.
    folds: Vec<PlHashMap<(i64, i64), i64>>,
}

impl JoinKeys {
    /// The coder for keys of these types (left and right, in key order); None when a pair of
    /// them cannot be coded.
    pub fn new(left: &[&DataType], right: &[&DataType]) -> Option<Self> {
        let kinds = left.iter().zip(right).map(|(l, r)| Kind::of(l, r)).collect::<Option<Vec<Kind>>>()?;
        let strings = kinds.iter().map(|&k| (k == Kind::Str).then(Dictionary::default)).collect();
        let folds = (2..kinds.len()).map(|_| PlHashMap::default()).collect();
        Some(JoinKeys { kinds, strings, folds })
    }

    /// True when the key columns are read as they are: one or two integer-like columns.
    pub fn plain(&self) -> bool {
        self.kinds.len() <= 2 && self.kinds.iter().all(|&k| k == Kind::Int)
    }

    /// Names of the coded frame's columns: the first one or two key names.
    pub fn names<'a>(&self, on: &'a [String]) -> &'a [String] {
        &on[..on.len().min(2)]
    }

    /// The right side's key columns `on` as integer columns (named as [`JoinKeys::names`]
    /// says), numbering its strings and key combinations.
    pub fn code_right<'a>(&mut self, df: &'a DataFrame, on: &[String]) -> PolarsResult<Cow<'a, DataFrame>> {
        if self.plain() {
            return Ok(Cow::Borrowed(df));
        }
        let strings = &mut self.strings;
        let columns = key_columns(&self.kinds, df, on, |i, column| strings[i].as_mut().expect("a string key's dictionary").encode(column))?;
        let folds = &mut self.folds;
        fold(df.height(), on, columns, |step, pair| {
            let codes = &mut folds[step];
            let next = codes.len() as i64;
            Some(*codes.entry(pair).or_insert(next))
        })
    }

    /// A left side's key columns `on`, coded as the right side's were: null where a string or a
    /// combination of keys is not the right side's (no match).
    pub fn code_left<'a>(&self, df: &'a DataFrame, on: &[String]) -> PolarsResult<Cow<'a, DataFrame>> {
        if self.plain() {
            return Ok(Cow::Borrowed(df));
        }
        let columns = key_columns(&self.kinds, df, on, |i, column| self.strings[i].as_ref().expect("a string key's dictionary").look_up(column))?;
        fold(df.height(), on, columns, |step, pair| self.folds[step].get(&pair).copied())
    }
}

/// The key columns `on` of `df` as i64s: strings as `string` codes them (given the column's
/// position), the others by their kind.
fn key_columns(
    kinds: &[Kind],
    df: &DataFrame,
    on: &[String],
    mut string: impl FnMut(usize, &StringChunked) -> Int64Chunked,
) -> PolarsResult<Vec<Int64Chunked>> {
    let mut columns = Vec::with_capacity(on.len());
    for (i, name) in on.iter().enumerate() {
        let column = df.column(name)?.as_materialized_series();
        columns.push(match kinds[i] {
            Kind::Str => string(i, column.str()?),
            kind => values(kind, column)?,
        });
    }
    Ok(columns)
}

/// A column of a key that is not a string, as i64s.
fn values(kind: Kind, column: &Series) -> PolarsResult<Int64Chunked> {
    match kind {
        Kind::Int => Ok(column.to_physical_repr().cast(&DataType::Int64)?.i64()?.clone()),
        Kind::Bits => Ok(column.u64()?.iter().map(|v| v.map(|v| v as i64)).collect::<Int64Chunked>().with_name(column.name().clone())),
        Kind::Float => {
            let floats = column.cast(&DataType::Float64)?;
            // -0.0 + 0.0 is 0.0: both zeros get the same bits.
            let bits = floats.f64()?.iter().map(|v| v.map(|v| if v.is_nan() { f64::NAN.to_bits() as i64 } else { (v + 0.0).to_bits() as i64 }));
            Ok(bits.collect::<Int64Chunked>().with_name(column.name().clone()))
        }
        Kind::Str => unreachable!("strings are coded by their dictionary"),
    }
}

/// The coded key columns as a frame of at most two: with more, the second and later ones are
/// folded into one, `code(step, (code so far, value))` giving each pair's code (None: null).
fn fold<'a>(
    rows: usize,
    on: &[String],
    mut columns: Vec<Int64Chunked>,
    mut code: impl FnMut(usize, (i64, i64)) -> Option<i64>,
) -> PolarsResult<Cow<'a, DataFrame>> {
    if columns.len() > 2 {
        let rest = columns.split_off(1);
        let mut acc: Vec<Option<i64>> = rest[0].iter().collect();
        for (step, column) in rest[1..].iter().enumerate() {
            for (a, v) in acc.iter_mut().zip(column.iter()) {
                *a = a.zip(v).and_then(|pair| code(step, pair));
            }
        }
        columns.push(acc.into_iter().collect());
    }
    let columns = columns.into_iter().zip(on).map(|(c, name)| c.with_name(name.as_str().into()).into_column()).collect();
    Ok(Cow::Owned(DataFrame::new(rows, columns)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn codes(df: &DataFrame, name: &str) -> Vec<Option<i64>> {
        df.column(name).unwrap().i64().unwrap().iter().collect()
    }

    #[test]
    fn floats_are_equal_where_sql_says_so() {
        let right = df!("f" => [Some(0.0f64), Some(-0.0), Some(f64::NAN), Some(1.5), None]).unwrap();
        let left = df!("f" => [Some(-0.0f64), Some(f64::NAN), Some(-f64::NAN), Some(1.5), Some(2.5), None]).unwrap();
        let t = [&DataType::Float64];
        let mut keys = JoinKeys::new(&t, &t).unwrap();
        let (r, l) = (keys.code_right(&right, &names(&["f"])).unwrap(), keys.code_left(&left, &names(&["f"])).unwrap());
        let (r, l) = (codes(&r, "f"), codes(&l, "f"));
        assert_eq!(r[0], r[1], "0.0 and -0.0");
        assert_eq!([l[0], l[1], l[2], l[3]], [r[0], r[2], r[2], r[3]], "-0.0, NaN, -NaN, 1.5");
        assert!(l[4] != r[3] && l[5].is_none() && r[4].is_none());
    }

    #[test]
    fn three_columns_fold_into_two_and_unknown_combinations_get_no_code() {
        let right = df!("a" => [1i64, 1, 2, 1], "s" => ["x", "y", "x", "x"], "d" => [Some(1.0f64), Some(1.0), Some(1.0), None]).unwrap();
        let left = df!("a" => [9i64, 1, 1, 2, 1], "s" => ["x", "y", "x", "y", "z"], "d" => [1.0f64, 1.0, 1.0, 1.0, 1.0]).unwrap();
        let on = names(&["a", "s", "d"]);
        let types = [&DataType::Int64, &DataType::String, &DataType::Float64];
        let mut keys = JoinKeys::new(&types, &types).unwrap();
        let r = keys.code_right(&right, &on).unwrap();
        let l = keys.code_left(&left, &on).unwrap();
        assert_eq!(r.get_column_names(), ["a", "s"]);
        assert_eq!(codes(&r, "s"), [Some(0), Some(1), Some(0), None], "(x, 1.0), (y, 1.0), (x, 1.0), (x, null)");
        assert_eq!(codes(&l, "a"), [Some(9), Some(1), Some(1), Some(2), Some(1)]);
        // (y, 1.0) is a combination of the right side's (a = 2 then finds no match in the
        // table); z is not one of its strings.
        assert_eq!(codes(&l, "s"), [Some(0), Some(1), Some(0), Some(1), None]);
    }

    #[test]
    fn types_that_cannot_be_coded_or_differ_in_kind() {
        let (i, s, f, u) = (&DataType::Int32, &DataType::String, &DataType::Float32, &DataType::UInt64);
        assert!(JoinKeys::new(&[i, s, f, u], &[i, s, f, u]).is_some());
        assert!(JoinKeys::new(&[i], &[s]).is_none());
        assert!(JoinKeys::new(&[u], &[i]).is_none());
        assert!(JoinKeys::new(&[&DataType::Decimal(10, 2)], &[&DataType::Decimal(10, 2)]).is_none());
        let plain = JoinKeys::new(&[i, &DataType::Date], &[i, &DataType::Date]).unwrap();
        assert!(plain.plain());
    }
}
