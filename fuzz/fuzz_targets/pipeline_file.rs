//! Any text as a pipeline file, TOML and YAML: diagnostics or a spec, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for yaml in [false, true] {
        let _ = rivulet::pipeline::load_text(text, yaml, std::path::PathBuf::from("/nonexistent"), &[]);
    }
});
