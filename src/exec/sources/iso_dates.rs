//! Dates written `YYYY-MM-DD`, parsed without polars' general date parser. polars' CSV reader
//! parses every value of a date column with its `strptime` engine, at about 20 ns a value: half
//! of the CPU of reading TPC-H's orders for Q10, and an eighth of Q6 over lineitem. Where a CSV
//! source picks the fields it reads ([`super::csv_fields`]), it parses its date fields with
//! this instead, a few nanoseconds each. Text that is not such a date is left to polars: the
//! source parses the chunk again the usual way (and from then on only that way), so what
//! polars accepts as a date, and how, does not change.
use polars::prelude::*;
use polars_arrow::array::PrimitiveArray;
use polars_arrow::bitmap::MutableBitmap;

/// The day of an empty field: null, as polars' CSV reader reads an empty date. No valid date
/// is this far before 1970 ([`iso_days`] reads years from 0001).
pub const EMPTY: i32 = i32::MIN;

/// Days in each month (index 1 to 12) of a common year, and days in the months before it.
const MONTH_DAYS: [u32; 13] = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const DAYS_BEFORE_MONTH: [u32; 13] = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// Days from 0001-01-01 to 1970-01-01.
const EPOCH: i32 = 719_162;

/// Days since 1970-01-01 of `b`, when it is a valid date of the proleptic Gregorian calendar
/// written `YYYY-MM-DD` (year 0001 or later): the only way polars' date formats can read such
/// text. Without a branch on the month or the year, which vary from row to row.
#[inline]
pub fn iso_days(b: &[u8]) -> Option<i32> {
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = b else { return None };
    let digits = [y0, y1, y2, y3, m0, m1, d0, d1].map(|c| c.wrapping_sub(b'0'));
    if digits.iter().fold(false, |bad, &d| bad | (d > 9)) {
        return None;
    }
    let [y0, y1, y2, y3, m0, m1, d0, d1] = digits.map(u32::from);
    let year = y0 * 1000 + y1 * 100 + y2 * 10 + y3;
    let (month, day) = (m0 * 10 + m1, d0 * 10 + d1);
    if year == 0 || !(1..=12).contains(&month) {
        return None;
    }
    let leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0));
    if day == 0 || day > MONTH_DAYS[month as usize] + u32::from(leap & (month == 2)) {
        return None;
    }
    let before = year - 1;
    let days = 365 * before + before / 4 - before / 100 + before / 400 + DAYS_BEFORE_MONTH[month as usize] + u32::from(leap & (month > 2)) + day - 1;
    Some(days as i32 - EPOCH)
}

/// A date column of `days` ([`iso_days`], or [`EMPTY`] for null).
pub fn column(name: PlSmallStr, days: Vec<i32>) -> Column {
    let validity = days.contains(&EMPTY).then(|| days.iter().map(|&d| d != EMPTY).collect::<MutableBitmap>().into());
    let array = PrimitiveArray::new(ArrowDataType::Int32, days.into(), validity);
    Int32Chunked::with_chunk(name, array).into_date().into_column()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How polars' CSV reader reads each of `texts` as a date (None: it cannot).
    fn polars_days(texts: &[String]) -> Vec<Option<i32>> {
        let csv = format!("d\n{}\n", texts.join("\n"));
        let schema = Arc::new(Schema::from_iter([Field::new("d".into(), DataType::Date)]));
        let df = CsvReadOptions::default()
            .with_schema(Some(schema))
            .with_ignore_errors(true)
            .into_reader_with_file_handle(std::io::Cursor::new(csv.into_bytes()))
            .finish()
            .unwrap();
        df.column("d").unwrap().date().unwrap().phys.iter().collect()
    }

    #[test]
    fn every_day_of_four_centuries_is_read_as_polars_reads_it() {
        // The whole 400-year cycle of leap years, with the 29th to 31st of every month, and a
        // few years far from it.
        let texts: Vec<String> = (1800..2200)
            .chain([1, 1600, 1970, 9999])
            .flat_map(|y| (1..=12).flat_map(move |m| (1..=31).map(move |d| format!("{y:04}-{m:02}-{d:02}"))))
            .collect();
        for (text, expected) in texts.iter().zip(polars_days(&texts)) {
            assert_eq!(iso_days(text.as_bytes()), expected, "{text}");
        }
        assert_eq!(iso_days(b"1970-01-01"), Some(0));
        assert_eq!(iso_days(b"1998-12-01"), Some(10561));
        assert_eq!(iso_days(b"1969-12-31"), Some(-1));
    }

    #[test]
    fn anything_else_is_left_to_polars() {
        for text in [
            "2024-02-30",
            "2023-02-29",
            "1900-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-1-05",
            "2024/01/05",
            " 2024-01-05",
            "2024-01-05 ",
            "2024-01-05T00:00",
            "05-01-2024",
            "2024-01-0a",
            "+024-01-05",
            "0000-03-01",
            "",
        ] {
            assert_eq!(iso_days(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn empty_fields_are_null_dates() {
        let c = column("d".into(), vec![8766, EMPTY, 9204]);
        assert_eq!(c.dtype(), &DataType::Date);
        assert_eq!(c.date().unwrap().phys.iter().collect::<Vec<_>>(), [Some(8766), None, Some(9204)]);
        assert_eq!(column("d".into(), vec![1, 2]).null_count(), 0);
    }
}
