//! Checks whether a text value parses as a column type, to find the exact bad field once a
//! fast polars parse of a chunk has failed.
use polars::prelude::DataType;

/// Why `text` is not a valid value of `dtype`, or None when it is (empty text is null).
pub fn type_problem(text: &str, dtype: &DataType) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let ok = match dtype {
        DataType::Int8 => text.parse::<i8>().is_ok(),
        DataType::Int16 => text.parse::<i16>().is_ok(),
        DataType::Int32 => text.parse::<i32>().is_ok(),
        DataType::Int64 => text.parse::<i64>().is_ok(),
        DataType::UInt8 => text.parse::<u8>().is_ok(),
        DataType::UInt16 => text.parse::<u16>().is_ok(),
        DataType::UInt32 => text.parse::<u32>().is_ok(),
        DataType::UInt64 => text.parse::<u64>().is_ok(),
        DataType::Float32 | DataType::Float64 => text.parse::<f64>().is_ok(),
        DataType::Boolean => matches!(text.to_ascii_lowercase().as_str(), "true" | "false"),
        DataType::Date => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        DataType::Datetime(..) => parses_datetime(text),
        _ => true,
    };
    (!ok).then(|| format!("expected {} but found {:?}", type_name(dtype), truncate(text, 80)))
}

fn parses_datetime(text: &str) -> bool {
    const FORMATS: [&str; 4] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"];
    let t = text.trim_end_matches('Z');
    FORMATS.iter().any(|f| chrono::NaiveDateTime::parse_from_str(t, f).is_ok())
        || chrono::DateTime::parse_from_rfc3339(text).is_ok()
        || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

/// The type as the pipeline file names it.
pub fn type_name(dtype: &DataType) -> String {
    match dtype {
        DataType::Int64 => "int".into(),
        DataType::Float64 => "float".into(),
        DataType::String => "string".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date => "date".into(),
        DataType::Datetime(..) => "datetime".into(),
        other => other.to_string(),
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_type() {
        assert!(type_problem("12", &DataType::Int64).is_none());
        assert!(type_problem("", &DataType::Int64).is_none());
        assert_eq!(type_problem("1x", &DataType::Int64).unwrap(), "expected int but found \"1x\"");
        assert!(type_problem("2026-11-01 00:00:03", &DataType::Datetime(polars::prelude::TimeUnit::Microseconds, None)).is_none());
        assert!(type_problem("2026-13-01", &DataType::Date).is_some());
    }
}
