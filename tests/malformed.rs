//! The malformed-input corpus (`tests/malformed/`, made by its `generate.py`): one file or
//! directory per case, named for what is wrong with it, and `<case>.expected` beside it:
//!
//! ```text
//! source: <extra keys of the [[source]] table, e.g. schema = { qty = "int" }>
//! fail: <text stderr must contain under on_error = "fail">   ("fail: ok" = the run succeeds)
//! rows: <rows written under skip and dead_letter>
//! dead: <line>:<column>:<kind>   (one per dead-letter row; empty line/column for a whole file)
//! ```
//!
//! Each case runs under `fail`, `skip` and `dead_letter`, at parallelism 1 and 4. Under `skip`
//! the summary's rejected count must equal the number of `dead:` rows, and under `dead_letter`
//! the dead-letter rows (sorted) must equal them; rows read = rows written + rows rejected.
use std::path::{Path, PathBuf};

use crate::common::{root, run_in, stderr, stdout};

struct Expected {
    source: Vec<String>,
    fail: Vec<String>,
    rows: usize,
    dead: Vec<String>,
}

fn read_expected(path: &Path) -> Expected {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut e = Expected { source: Vec::new(), fail: Vec::new(), rows: usize::MAX, dead: Vec::new() };
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once(':').unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
        let value = value.trim().to_string();
        match key {
            "source" => e.source.push(value),
            "fail" => e.fail.push(value),
            "rows" => e.rows = value.parse().unwrap(),
            "dead" => e.dead.push(value),
            other => panic!("{}: unknown key {other}", path.display()),
        }
    }
    assert!(!e.fail.is_empty() && e.rows != usize::MAX, "{}: needs fail: and rows:", path.display());
    e
}

fn cases() -> Vec<PathBuf> {
    let dir = root().join("tests/malformed");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !matches!(p.extension().and_then(|e| e.to_str()), Some("expected" | "py")))
        .collect();
    cases.sort();
    cases
}

fn format_of(case: &Path) -> &'static str {
    let name = case.file_name().unwrap().to_str().unwrap();
    ["csv", "jsonl", "parquet"].into_iter().find(|f| name.starts_with(f)).expect("case names start with their format")
}

fn pipeline(case: &Path, on_error: &str, extra: &[String], out: &Path) -> String {
    let mut p = format!(
        "name = \"malformed\"\n[[source]]\nname = \"src\"\nformat = \"{}\"\npath = {:?}\non_error = \"{on_error}\"\n{}\n\
         [[sink]]\nname = \"rows\"\ninput = \"src\"\nformat = \"csv\"\nsingle_file = true\npath = {:?}\n",
        format_of(case),
        case.to_str().unwrap(),
        extra.join("\n"),
        out.join("rows.csv").to_str().unwrap()
    );
    if on_error == "dead_letter" {
        p += &format!(
            "[[sink]]\nname = \"dead\"\ninput = \"src.dead_letter\"\nformat = \"csv\"\nsingle_file = true\npath = {:?}\n",
            out.join("dead.csv").to_str().unwrap()
        );
    }
    p
}

/// Data rows of a CSV file written by a sink (0 when it does not exist).
fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let Ok(mut r) = csv::ReaderBuilder::new().from_path(path) else { return Vec::new() };
    r.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
}

/// Runs one case under one policy; returns the problems found.
fn check(case: &Path, expected: &Expected, on_error: &str, parallelism: &str) -> Result<(), String> {
    let name = format!("{} ({on_error}, p={parallelism})", case.file_name().unwrap().to_str().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let file = tmp.path().join("p.toml");
    std::fs::write(&file, pipeline(case, on_error, &expected.source, &out)).unwrap();
    let o = run_in(tmp.path(), &["run", file.to_str().unwrap(), "-p", parallelism, "--json"]);
    let err = stderr(&o);
    if on_error == "fail" {
        if expected.fail == ["ok"] {
            return if o.status.success() { Ok(()) } else { Err(format!("{name}: expected success:\n{err}")) };
        }
        if o.status.code() != Some(1) {
            return Err(format!("{name}: exit {:?}, expected 1:\n{err}", o.status.code()));
        }
        return match expected.fail.iter().find(|want| !err.contains(want.as_str())) {
            Some(want) => Err(format!("{name}: stderr lacks {want:?}:\n{err}")),
            None => Ok(()),
        };
    }
    if !o.status.success() {
        return Err(format!("{name}: failed:\n{err}"));
    }
    let rows = csv_rows(&out.join("rows.csv")).len();
    if rows != expected.rows {
        return Err(format!("{name}: {rows} rows written, expected {}", expected.rows));
    }
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).map_err(|e| format!("{name}: summary: {e}"))?;
    let ops = summary["operators"].as_array().unwrap();
    let src = ops.iter().find(|op| op["name"] == "src").unwrap();
    let (read, rejected, out_rows) = (src["rows_in"].as_u64().unwrap(), src["rejected"].as_u64().unwrap(), src["rows_out"].as_u64().unwrap());
    if rejected as usize != expected.dead.len() || read != out_rows + rejected || out_rows as usize != rows {
        return Err(format!("{name}: read {read}, emitted {out_rows}, rejected {rejected}, written {rows}; expected {} rejected", expected.dead.len()));
    }
    if on_error == "dead_letter" {
        let mut dead: Vec<String> = csv_rows(&out.join("dead.csv")).iter().map(|r| format!("{}:{}:{}", r[2], r[4], r[5])).collect();
        dead.sort();
        let mut want = expected.dead.clone();
        want.sort();
        if dead != want {
            let rows = std::fs::read_to_string(out.join("dead.csv")).unwrap_or_default();
            return Err(format!("{name}: dead-letter rows {dead:?}, expected {want:?}\n{rows}"));
        }
    }
    Ok(())
}

#[test]
fn malformed_corpus_fails_skips_and_dead_letters_as_expected() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut problems = Vec::new();
    for case in &cases {
        let expected_path = PathBuf::from(format!("{}.expected", case.display()));
        let expected = read_expected(&expected_path);
        for on_error in ["fail", "skip", "dead_letter"] {
            for p in ["1", "4"] {
                if let Err(e) = check(case, &expected, on_error, p) {
                    problems.push(e);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n\n"));
}

/// Bad records scattered through a file read as many byte ranges: each bad record is rejected
/// once, at its own line, and every good record is written once, whatever the parallelism.
#[test]
fn bad_records_at_split_boundaries_are_each_rejected_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("id,name,qty\n");
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..4000 {
        match i % 37 {
            5 => {
                text += &format!("{i},short\n");
                bad.push(i);
            }
            11 => {
                text += &format!("{i},long,{i},extra\n");
                bad.push(i);
            }
            17 => {
                text += &format!("{i},typo,{i}x\n");
                bad.push(i);
            }
            23 => text += &format!("{i},\"quoted\nnewline\",{i}\n"),
            _ => {}
        }
        if ![5, 11, 17].contains(&(i % 37)) {
            if i % 37 != 23 {
                text += &format!("{i},n{i},{i}\n");
            }
            good.push(i.to_string());
        }
    }
    std::fs::write(tmp.path().join("in.csv"), &text).unwrap();
    // Lines after a quoted newline are one further down: number the physical lines.
    let expected_dead: Vec<String> = {
        let mut v = Vec::new();
        for (physical, rec) in (1u64..).zip(text.split_inclusive('\n')) {
            let trimmed = rec.trim_end();
            let kind = if trimmed.ends_with(",short") || trimmed.ends_with(",extra") {
                Some("field_count")
            } else if trimmed.contains(",typo,") {
                Some("type")
            } else {
                None
            };
            if let Some(k) = kind {
                v.push(format!("{physical}:{k}"));
            }
        }
        v.sort();
        v
    };
    assert_eq!(expected_dead.len(), bad.len());
    for p in ["1", "4"] {
        let out = tmp.path().join(format!("out{p}"));
        let pipeline = format!(
            "name = \"splits\"\n[[source]]\nname = \"src\"\nformat = \"csv\"\npath = \"in.csv\"\nsplit_bytes = 997\non_error = \"dead_letter\"\nschema = {{ qty = \"int\" }}\n\
             [[sink]]\ninput = \"src\"\nformat = \"csv\"\nsingle_file = true\npath = {:?}\n\
             [[sink]]\ninput = \"src.dead_letter\"\nformat = \"csv\"\nsingle_file = true\npath = {:?}\n",
            out.join("rows.csv").to_str().unwrap(),
            out.join("dead.csv").to_str().unwrap()
        );
        std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
        let o = run_in(tmp.path(), &["run", "p.toml", "-q", "-p", p]);
        assert!(o.status.success(), "p={p}: {}", stderr(&o));
        let mut ids: Vec<String> = csv_rows(&out.join("rows.csv")).into_iter().map(|r| r[0].clone()).collect();
        ids.sort();
        let mut want = good.clone();
        want.sort();
        assert_eq!(ids, want, "p={p}: rows written");
        let mut dead: Vec<String> = csv_rows(&out.join("dead.csv")).iter().map(|r| format!("{}:{}", r[2], r[5])).collect();
        dead.sort();
        assert_eq!(dead, expected_dead, "p={p}: dead-letter rows");
    }
}

/// A file where every record is malformed, read as many byte ranges under `skip`: each record is
/// rejected exactly once (the split before a run of implausible record starts reads them, a
/// chunk at a time) and nothing is written.
#[test]
fn a_file_of_only_bad_records_is_rejected_record_by_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b,c\n");
    for i in 0..20_000 {
        text += &format!("{i},{i},{i},\n");
    }
    std::fs::write(tmp.path().join("in.csv"), &text).unwrap();
    let pipeline = "name = \"bad\"\n[[source]]\nname = \"src\"\nformat = \"csv\"\npath = \"in.csv\"\nsplit_bytes = 1000\non_error = \"skip\"\nschema = { a = \"int\", b = \"int\", c = \"int\" }\n\
                    [[sink]]\ninput = \"src\"\nformat = \"csv\"\npath = \"out\"\n";
    std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
    for p in ["1", "4"] {
        let o = run_in(tmp.path(), &["run", "p.toml", "--json", "-p", p]);
        assert!(o.status.success(), "p={p}: {}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let src = &summary["operators"][0];
        assert_eq!((src["rows_in"].as_u64(), src["rejected"].as_u64(), src["rows_out"].as_u64()), (Some(20_000), Some(20_000), Some(0)), "p={p}");
    }
}
