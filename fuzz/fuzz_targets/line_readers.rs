//! Any bytes as a chunk of a CSV, JSON-lines, regex or lines source (on_error = "skip"): rows
//! and rejections, or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rivulet::exec::sources::parse_chunk_for_fuzzing;
use rivulet::pipeline::SourceFormat;

fuzz_target!(|data: &[u8]| {
    for format in [SourceFormat::Csv, SourceFormat::Jsonl, SourceFormat::Regex, SourceFormat::Lines] {
        if let Ok((rows, rejected)) = parse_chunk_for_fuzzing(format, data) {
            assert!(rows + rejected <= data.split(|&b| b == b'\n').count());
        }
    }
});
