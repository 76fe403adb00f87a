//! Golden end-to-end cases, discovered by glob: `tests/golden/<case>/` holds `pipeline.toml`
//! (or `.yaml`) with its input files, and either `expected.csv` (what the pipeline prints with a
//! csv-style stdout sink, compared with row order ignored) or `expected_error.txt` (lines that
//! must appear in stderr; a line `exit: N` checks the exit code), or `expected_ordered.csv`
//! (compared row by row, in order: for sorted output). Optional `expected_files/`
//! holds files the pipeline must write (paths relative to the case directory). Every case runs
//! at parallelism 1 and 4, in a copy of its directory.
use std::path::{Path, PathBuf};

use crate::common::{copy_dir, csv_diff, csv_diff_ordered, root, run_in, stderr, stdout};

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("tests/golden")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    cases
}

fn pipeline_file(dir: &Path) -> String {
    ["pipeline.toml", "pipeline.yaml", "pipeline.yml"]
        .iter()
        .find(|f| dir.join(f).exists())
        .unwrap_or_else(|| panic!("{}: no pipeline file", dir.display()))
        .to_string()
}

fn check_case(case: &Path, parallelism: &str) -> Result<(), String> {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(&name);
    copy_dir(case, &dir);
    let pipeline = pipeline_file(&dir);
    let out = run_in(&dir, &["run", &pipeline, "-q", "-p", parallelism]);
    let code = out.status.code().unwrap_or(-1);
    if let Ok(expected) = std::fs::read_to_string(case.join("expected_error.txt")) {
        if out.status.success() {
            return Err(format!("{name} (p={parallelism}): expected failure, but it succeeded:\n{}", stdout(&out)));
        }
        let err = stderr(&out);
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(want) = line.strip_prefix("exit: ") {
                if want.trim() != code.to_string() {
                    return Err(format!("{name} (p={parallelism}): exit code {code}, expected {want}; stderr:\n{err}"));
                }
            } else if !err.contains(line.trim()) {
                return Err(format!("{name} (p={parallelism}): stderr lacks {:?}:\n{err}", line.trim()));
            }
        }
        return Ok(());
    }
    if !out.status.success() {
        return Err(format!("{name} (p={parallelism}): failed with exit code {code}:\n{}", stderr(&out)));
    }
    if let Ok(expected) = std::fs::read_to_string(case.join("expected.csv"))
        && let Some(diff) = csv_diff(&stdout(&out), &expected)
    {
        return Err(format!("{name} (p={parallelism}): {diff}"));
    }
    if let Ok(expected) = std::fs::read_to_string(case.join("expected_ordered.csv"))
        && let Some(diff) = csv_diff_ordered(&stdout(&out), &expected)
    {
        return Err(format!("{name} (p={parallelism}), in order: {diff}"));
    }
    let files = case.join("expected_files");
    if files.is_dir() {
        for entry in walk(&files) {
            let rel = entry.strip_prefix(&files).unwrap();
            let actual = std::fs::read_to_string(dir.join(rel)).map_err(|e| format!("{name} (p={parallelism}): {}: {e}", rel.display()))?;
            let expected = std::fs::read_to_string(&entry).unwrap();
            if let Some(diff) = csv_diff(&actual, &expected) {
                return Err(format!("{name} (p={parallelism}) {}: {diff}", rel.display()));
            }
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn golden_cases_at_parallelism_1_and_4() {
    let cases = cases();
    assert!(cases.len() >= 10, "expected at least 10 golden cases, found {}", cases.len());
    let failures: Vec<String> = cases.iter().flat_map(|c| ["1", "4"].map(|p| check_case(c, p))).filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{} golden failures:\n\n{}", failures.len(), failures.join("\n\n"));
}
