//! Every row read is accounted for: the `--json` run summary of every example pipeline, and of
//! pipelines that reject rows, satisfies per operator `rows in = rows out + filtered + rejected`
//! (row-by-row operators and sources, where rows in = rows read), per edge `rows in = the rows
//! its inputs emitted` (a dead-letter output: the rows its owner rejected), and end to end
//! `read = written + filtered + rejected` for a chain without aggregation; a join counts as
//! filtered its left rows that gave no output row.
use serde_json::Value;

use crate::common::{example_pipelines, run_in, stderr, stdout};

fn get(op: &Value, key: &str) -> u64 {
    op[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {op}"))
}

/// Checks the summary's counters; returns the problems.
fn check_summary(summary: &Value) -> Vec<String> {
    let ops = summary["operators"].as_array().unwrap();
    let by_name = |n: &str| ops.iter().find(|o| o["name"] == n).unwrap_or_else(|| panic!("no operator {n}"));
    let mut problems = Vec::new();
    for op in ops {
        let name = op["name"].as_str().unwrap();
        let label = op["operation"].as_str().unwrap();
        let (rows_in, rows_out, filtered, rejected) = (get(op, "rows_in"), get(op, "rows_out"), get(op, "filtered"), get(op, "rejected"));
        let inputs: Vec<&Value> = op["inputs"].as_array().unwrap().iter().map(|i| by_name(i.as_str().unwrap())).collect();
        let row_by_row = label.starts_with("source")
            || label.starts_with("sink")
            || label.starts_with("side output")
            || ["filter", "select", "with", "rename", "drop", "cast", "parse", "unnest", "union"].contains(&label);
        if row_by_row && rows_in != rows_out + filtered + rejected {
            problems.push(format!("{name} ({label}): {rows_in} in != {rows_out} out + {filtered} filtered + {rejected} rejected"));
        }
        let fed: u64 =
            if label.starts_with("side output") { inputs.iter().map(|i| get(i, "rejected")).sum() } else { inputs.iter().map(|i| get(i, "rows_out")).sum() };
        let per_edge = row_by_row || label.ends_with("(partial)") || label == "explode";
        if per_edge && !label.starts_with("source") && rows_in != fed {
            problems.push(format!("{name} ({label}): {rows_in} in, but its inputs emitted {fed}"));
        }
    }
    problems
}

fn run_json(dir: &std::path::Path, pipeline: &str, parallelism: &str) -> Value {
    let o = run_in(dir, &["run", pipeline, "--json", "-p", parallelism]);
    assert!(o.status.success(), "{pipeline} -p {parallelism}: {}", stderr(&o));
    // A stdout sink prints its rows first; the summary is the last thing on stdout.
    let out = stdout(&o);
    let json = out.rfind("{\n  \"pipeline\"").map_or(out.as_str(), |i| &out[i..]);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{pipeline}: summary is not JSON ({e}): {out}"))
}

/// Runs `p.toml` in `dir` at parallelism 1 and 4, checks each summary's counters, and returns
/// the operators of each run.
fn checked_runs(dir: &std::path::Path) -> Vec<(&'static str, Vec<Value>)> {
    ["1", "4"]
        .into_iter()
        .map(|p| {
            let summary = run_json(dir, "p.toml", p);
            let problems = check_summary(&summary);
            assert!(problems.is_empty(), "-p {p}: {}", problems.join("\n"));
            (p, summary["operators"].as_array().unwrap().clone())
        })
        .collect()
}

/// The summary entry of operator `name`.
fn operator(ops: &[Value], name: &str) -> Value {
    ops.iter().find(|o| o["name"] == name).unwrap_or_else(|| panic!("no operator {name}")).clone()
}

#[test]
fn every_example_pipeline_accounts_for_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let files = example_pipelines(tmp.path());
    let mut problems = Vec::new();
    for f in &files {
        for p in ["1", "4"] {
            let summary = run_json(tmp.path(), f.to_str().unwrap(), p);
            problems.extend(check_summary(&summary).into_iter().map(|m| format!("{} -p {p}: {m}", f.display())));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A chain that filters, rejects at the source (dead letter) and in an operator (skip), with no
/// aggregation: read = written + filtered + rejected, and the dead-letter sink wrote what the
/// source rejected.
#[test]
fn rejected_and_filtered_rows_add_up_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,code,qty\n");
    for i in 0..3000 {
        match i % 50 {
            7 => csv += &format!("{i},x{i}\n"),          // too few fields: rejected by the source
            13 => csv += &format!("{i},N/A,{i}\n"),      // code is not a number: rejected by the cast
            _ => csv += &format!("{i},{},{i}\n", i % 9), // kept, unless the filter drops it
        }
    }
    std::fs::write(tmp.path().join("in.csv"), csv).unwrap();
    let pipeline = r#"
name = "accounting"
[[source]]
name = "src"
format = "csv"
path = "in.csv"
split_bytes = 4096
on_error = "dead_letter"
schema = { qty = "int" }

[[op]]
name = "small"
input = "src"
filter = "qty % 10 <> 4"

[[op]]
name = "to_int"
input = "small"
cast = { code = "int" }
on_error = "skip"

[[sink]]
name = "out"
input = "to_int"
format = "csv"
path = "out"

[[sink]]
name = "bad"
input = "src.dead_letter"
format = "csv"
path = "bad"
"#;
    std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
    for (p, ops) in checked_runs(tmp.path()) {
        let op = |n: &str| operator(&ops, n);
        let read = get(&op("src"), "rows_in");
        let written = get(&op("out"), "rows_out");
        let filtered = get(&op("small"), "filtered");
        let rejected = get(&op("src"), "rejected") + get(&op("to_int"), "rejected");
        assert_eq!(read, 3000, "-p {p}");
        assert_eq!(get(&op("src"), "rejected"), 60, "-p {p}: source rejections");
        assert_eq!(get(&op("to_int"), "rejected"), 60, "-p {p}: cast rejections");
        assert_eq!(get(&op("small"), "filtered"), 300, "-p {p}: filtered");
        assert_eq!(read, written + filtered + rejected, "-p {p}: read = written + filtered + rejected");
        assert_eq!(get(&op("bad"), "rows_out"), 60, "-p {p}: dead letters written");
    }
}

/// A directory with the Parquet files of the golden case `parquet_reader_filter_selective`
/// (3000 rows in row groups of 400 and 500) and `p.toml`: pipeline `name`, a source `src` over
/// those files, then `rest` (operators and sinks).
fn parquet_case(name: &str, rest: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let input = crate::common::root().join("tests/golden/parquet_reader_filter_selective/input");
    for f in std::fs::read_dir(&input).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let pipeline = format!("name = \"{name}\"\n[[source]]\nname = \"src\"\nformat = \"parquet\"\npath = \"*.parquet\"\n{rest}");
    std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
    tmp
}

/// A filter after a Parquet source runs in the reader too (late materialization): the rows the
/// reader drops still count as read by the source and as received and filtered by the filter,
/// including row groups where no row passes.
#[test]
fn rows_filtered_in_the_parquet_reader_are_counted_for_the_filter() {
    let tmp = parquet_case(
        "reader-filter",
        r#"
[[op]]
name = "rare"
input = "src"
filter = "id % 1000 = 999 AND name IS NOT NULL"

[[sink]]
name = "out"
input = "rare"
format = "jsonl"
path = "out"
"#,
    );
    let explain = run_in(tmp.path(), &["explain", "p.toml", "--graph", "job"]);
    assert!(stdout(&explain).contains("predicate evaluated in the reader"), "{}", stdout(&explain));
    for (p, ops) in checked_runs(tmp.path()) {
        let op = |n: &str| operator(&ops, n);
        // ids 999, 1999 and 2999 (all named); most row groups keep no row.
        assert_eq!(
            [get(&op("src"), "rows_in"), get(&op("rare"), "rows_in"), get(&op("rare"), "filtered"), get(&op("out"), "rows_out")],
            [3000, 3000, 2997, 3],
            "-p {p}"
        );
    }
}

/// A Parquet source that feeds both sides of two self-joins is read again for each join's left
/// side (`src/reread`, `src/reread2`: names stay unique), the joins stream instead of holding
/// their left input, and every read still adds up.
#[test]
fn a_source_read_again_for_each_join_is_accounted_for() {
    let tmp = parquet_case(
        "rereads",
        r#"
[[op]]
name = "small"
input = "src"
select = ["id", "qty"]

[[op]]
name = "j1"
input = ["small", "small"]
join = "inner"
on = ["id"]

[[op]]
name = "j2"
input = ["small", "small"]
join = "semi"
on = ["id"]

[[op]]
name = "j2_wide"
input = "j2"
with = { qty_right = "qty" }

[[op]]
name = "both"
input = ["j1", "j2_wide"]
union = true

[[sink]]
name = "out"
input = "both"
format = "csv"
path = "out"
"#,
    );
    let explain = stdout(&run_in(tmp.path(), &["explain", "p.toml", "--graph", "job"]));
    for name in ["src/reread ", "small/reread ", "src/reread2", "small/reread2"] {
        assert!(explain.contains(name), "{name} missing:\n{explain}");
    }
    for (p, ops) in checked_runs(tmp.path()) {
        let op = |n: &str| operator(&ops, n);
        let names: std::collections::BTreeSet<&str> = ops.iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names.len(), ops.len(), "-p {p}: names repeat");
        // Three reads of 3000 rows; ids are unique, so each join gives 3000 rows.
        let read: Vec<u64> = ["src", "src/reread", "src/reread2"].iter().map(|n| get(&op(n), "rows_in")).collect();
        assert_eq!(read, [3000, 3000, 3000], "-p {p}");
        assert_eq!([get(&op("j1"), "rows_out"), get(&op("j2"), "rows_out"), get(&op("out"), "rows_out")], [3000, 3000, 6000], "-p {p}");
    }
}

/// A copy of golden case `case` with its pipeline as `p.toml`.
fn golden_case(case: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&crate::common::root().join("tests/golden").join(case), tmp.path());
    std::fs::rename(tmp.path().join("pipeline.toml"), tmp.path().join("p.toml")).unwrap();
    tmp
}

/// A join's keys filter the Parquet reader of its left side: rows without a match are counted
/// as passing the filters before the join and as filtered by the join, and the row groups whose
/// statistics hold no key are not read (so their rows are not counted as read). A left join
/// keeps every left row, and gets no join filter.
#[test]
fn rows_dropped_by_a_join_filter_are_counted_for_the_join() {
    let tmp = golden_case("join_filter_parquet_inner");
    let explain = stdout(&run_in(tmp.path(), &["explain", "p.toml", "--graph", "job"]));
    assert!(
        explain.contains("join filter from 'matched': rows whose id is not among its right side's wanted_id values are dropped in the reader"),
        "{explain}"
    );
    assert!(explain.contains("join filter: its right side's wanted_id values go to the reader of 'items'"), "{explain}");
    for (p, ops) in checked_runs(tmp.path()) {
        let op = |n: &str| operator(&ops, n);
        // Two row groups of 500 rows hold keys (ids 0-499 and 3500-3999); 101 of their rows
        // fail `amount > 1.00`, and 6 of the 899 others have an id among the keys.
        assert_eq!(get(&op("items"), "row_groups_skipped"), 6, "-p {p}");
        assert_eq!(
            [get(&op("items"), "rows_in"), get(&op("priced"), "rows_in"), get(&op("priced"), "filtered"), get(&op("priced"), "rows_out")],
            [1000, 1000, 101, 899],
            "-p {p}"
        );
        assert_eq!([get(&op("matched"), "filtered"), get(&op("matched"), "rows_out")], [893, 7], "-p {p}");
    }
    let text = std::fs::read_to_string(tmp.path().join("p.toml")).unwrap().replace("join = \"inner\"", "join = \"left\"");
    std::fs::write(tmp.path().join("p.toml"), text).unwrap();
    let explain = stdout(&run_in(tmp.path(), &["explain", "p.toml", "--graph", "job"]));
    assert!(!explain.contains("join filter"), "{explain}");
    for (p, ops) in checked_runs(tmp.path()) {
        let op = |n: &str| operator(&ops, n);
        assert_eq!([get(&op("items"), "rows_in"), get(&op("matched"), "filtered")], [4000, 0], "-p {p}");
    }

    // Hash-partitioned: the reader waits for every subtask's part of the keys.
    let tmp = golden_case("join_filter_parquet_semi_hash");
    for (p, ops) in checked_runs(tmp.path()) {
        let op = |n: &str| operator(&ops, n);
        // 1161 rows pass the filter; 146 of them have a wanted day (and group).
        assert_eq!([get(&op("items"), "rows_in"), get(&op("named"), "rows_out")], [4000, 1161], "-p {p}");
        assert_eq!([get(&op("on_days"), "filtered"), get(&op("out"), "rows_out")], [1161 - 146, 146], "-p {p}");
    }
}

/// A join counts as filtered the left rows that give no output row: without a match in an
/// inner, right or semi join, with one in an anti join; a left or full join keeps them all.
/// Right keys repeat (a left row that matches two right rows is kept once), some left keys and
/// one right key are null (null keys never match), some right keys match no left row. Both
/// strategies, an integer key (the join's index) and a decimal one (polars' join).
#[test]
fn a_join_counts_the_left_rows_it_drops_as_filtered() {
    let tmp = tempfile::tempdir().unwrap();
    let left: Vec<Option<i64>> = (0..600).map(|i| (i % 11 != 0).then_some(i % 37)).collect();
    let right: Vec<Option<i64>> = (0..20).chain([3, 7, 100, 101]).map(Some).chain([None]).collect();
    let csv = |keys: &[Option<i64>]| {
        let rows: String = keys.iter().enumerate().map(|(i, k)| format!("{},{i}\n", k.map_or(String::new(), |k| k.to_string()))).collect();
        format!("k,n\n{rows}")
    };
    std::fs::write(tmp.path().join("l.csv"), csv(&left)).unwrap();
    std::fs::write(tmp.path().join("r.csv"), csv(&right)).unwrap();
    let matches = |k: &Option<i64>| k.map_or(0, |k| right.iter().filter(|r| **r == Some(k)).count() as u64);
    let (matched, unmatched) = (left.iter().filter(|k| matches(k) > 0).count() as u64, left.iter().filter(|k| matches(k) == 0).count() as u64);
    let pairs: u64 = left.iter().map(matches).sum();
    let right_alone = right.iter().filter(|r| r.is_none_or(|r| !left.contains(&Some(r)))).count() as u64;
    // (join, rows out, filtered)
    let cases = [
        ("inner", pairs, unmatched),
        ("left", pairs + unmatched, 0),
        ("right", pairs + right_alone, unmatched),
        ("full", pairs + unmatched + right_alone, 0),
        ("semi", matched, unmatched),
        ("anti", unmatched, matched),
    ];
    for key in ["k", "CAST(k AS DECIMAL(10,2))"] {
        for strategy in ["", "strategy = \"hash\""] {
            for (how, out, filtered) in cases {
                let pipeline = format!(
                    r#"
name = "join-accounting"
[[source]]
name = "l"
format = "csv"
path = "l.csv"
[[source]]
name = "r"
format = "csv"
path = "r.csv"
[[op]]
name = "lk"
input = "l"
with = {{ key = "{key}" }}
[[op]]
name = "rk"
input = "r"
with = {{ key = "{key}" }}
[[op]]
name = "j"
input = ["lk", "rk"]
join = "{how}"
on = ["key"]
{strategy}
[[sink]]
name = "out"
input = "j"
format = "csv"
path = "out"
"#
                );
                std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
                for (p, ops) in checked_runs(tmp.path()) {
                    let j = operator(&ops, "j");
                    assert_eq!([get(&j, "rows_out"), get(&j, "filtered")], [out, filtered], "{how} join on {key} {strategy} -p {p}");
                }
            }
        }
    }
}
