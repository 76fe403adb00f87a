//! The runtime under stress: many subtasks on two cores, channels of capacity 1, bounded memory
//! on an input far larger than the in-flight budget, prompt failure, and atomic output.
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::common::{csv_diff, root, run, run_in, stderr, stdout};

fn errors_by_path(args: &[&str]) -> String {
    let path = root().join("pipelines/errors_by_path.toml");
    let mut all = vec!["run", path.to_str().unwrap(), "-q", "--set", "sink.out.style=csv"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn parallelism_16_on_two_cores_gives_the_same_answer() {
    let one = errors_by_path(&["-p", "1"]);
    let sixteen = errors_by_path(&["-p", "16"]);
    assert_eq!(csv_diff(&sixteen, &one), None);
    assert!(one.lines().count() > 5);
}

#[test]
fn channel_capacity_1_and_tiny_batches_do_not_deadlock() {
    let one = errors_by_path(&["-p", "1"]);
    let tiny = errors_by_path(&["-p", "4", "--set", "channel_capacity=1", "--set", "batch_rows=7", "--set", "source.access.split_bytes=10000"]);
    assert_eq!(csv_diff(&tiny, &one), None);
}

/// Writes a CSV of about `mb` megabytes.
fn big_csv(path: &Path, mb: usize) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,path,status,latency_ms,note").unwrap();
    let mut i: u64 = 0;
    let mut written = 0;
    while written < mb << 20 {
        let line = format!(
            "{i},/api/item/{},{},{},some padding text to make rows wider than they need to be\n",
            i % 1000,
            if i.is_multiple_of(17) { 500 } else { 200 },
            i % 3000
        );
        written += line.len();
        f.write_all(line.as_bytes()).unwrap();
        i += 1;
    }
    i
}

/// Runs the stateless pipeline over `mb` megabytes of CSV; returns (input MB, peak RSS MB).
fn bounded_run(mb: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let rows = big_csv(&dir.path().join("big.csv"), mb);
    let input_bytes = std::fs::metadata(dir.path().join("big.csv")).unwrap().len();
    std::fs::write(
        dir.path().join("p.toml"),
        r#"name = "bounded"
batch_rows = 8192
channel_capacity = 2
[[source]]
name = "big"
format = "csv"
path = "big.csv"
split_bytes = 8000000
[[op]]
name = "errors"
input = "big"
filter = "status >= 500"
[[sink]]
name = "out"
input = "errors"
format = "csv"
path = "out"
"#,
    )
    .unwrap();
    let out = run_in(dir.path(), &["run", "p.toml", "-p", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(summary["operators"][0]["rows_out"], rows);
    assert_eq!(summary["operators"][1]["rows_out"], rows.div_ceil(17));
    let peak = summary["peak_rss_bytes"].as_u64().unwrap() as f64 / 1e6;
    (input_bytes as f64 / 1e6, peak)
}

#[test]
fn memory_stays_bounded_for_a_stateless_pipeline() {
    let (small_in, small_peak) = bounded_run(100);
    let (big_in, big_peak) = bounded_run(500);
    eprintln!("input {small_in:.0} MB: peak RSS {small_peak:.0} MB; input {big_in:.0} MB: peak RSS {big_peak:.0} MB");
    assert!(big_peak < big_in / 3.0, "peak RSS {big_peak:.0} MB is not far below the input size {big_in:.0} MB");
    // Five times the input, about the same memory: it does not grow with the input.
    assert!(big_peak < small_peak + 40.0, "peak RSS grew from {small_peak:.0} MB to {big_peak:.0} MB");
}

#[test]
fn first_error_stops_every_subtask_and_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    big_csv(&dir.path().join("big.csv"), 40);
    // A cast that fails on the first 'note' value, with a file sink that must not appear.
    std::fs::write(
        dir.path().join("p.toml"),
        r#"name = "fails"
[[source]]
name = "big"
format = "csv"
path = "big.csv"
split_bytes = 1000000
[[op]]
name = "bad_cast"
input = "big"
cast = { note = "int" }
[[sink]]
name = "out"
input = "bad_cast"
format = "csv"
path = "out"
"#,
    )
    .unwrap();
    let start = Instant::now();
    let out = run_in(dir.path(), &["run", "p.toml", "-p", "4", "-q"]);
    let elapsed = start.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("operator 'bad_cast'").count(), 1, "{err}");
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
    // Nothing that looks like output, and no in-progress files left behind.
    let leftovers = crate::common::entries(&dir.path().join("out"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn ctrl_c_stops_the_run_and_discards_its_output() {
    let dir = tempfile::tempdir().unwrap();
    big_csv(&dir.path().join("big.csv"), 200);
    // Small batches keep the run busy for seconds, so the interrupt lands in the middle of it.
    std::fs::write(
        dir.path().join("p.toml"),
        "name = \"long\"\nbatch_rows = 50\n[[source]]\nname = \"big\"\nformat = \"csv\"\npath = \"big.csv\"\n[[sink]]\nname = \"out\"\ninput = \"big\"\nformat = \"csv\"\npath = \"out\"\n",
    )
    .unwrap();
    let child = crate::common::rivulet().current_dir(dir.path()).args(["run", "p.toml", "-q", "-p", "2"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait until the sinks are writing (their in-progress files exist), then interrupt.
    let started = Instant::now();
    while crate::common::entries(&dir.path().join("out")).is_empty() && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let leftovers = crate::common::entries(&dir.path().join("out"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn directory_sink_writes_one_part_per_subtask() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&root().join("data/access"), &dir.path().join("access"));
    std::fs::write(
        dir.path().join("p.toml"),
        r#"name = "parts"
[[source]]
name = "access"
format = "csv"
path = "access"
[[op]]
name = "errors"
input = "access"
filter = "status >= 500"
[[sink]]
name = "csv_parts"
input = "errors"
format = "csv"
path = "out/csv"
[[sink]]
name = "pq"
input = "errors"
format = "parquet"
path = "out/errors.parquet"
single_file = true
"#,
    )
    .unwrap();
    // A stale part from an earlier, wider run must not survive.
    std::fs::create_dir_all(dir.path().join("out/csv")).unwrap();
    std::fs::write(dir.path().join("out/csv/part-00007.csv"), "stale\n").unwrap();
    let out = run_in(dir.path(), &["run", "p.toml", "-p", "3", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut parts: Vec<String> = std::fs::read_dir(dir.path().join("out/csv")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    parts.sort();
    assert_eq!(parts, ["part-00000.csv", "part-00001.csv", "part-00002.csv"]);
    let rows: usize = parts.iter().map(|p| std::fs::read_to_string(dir.path().join("out/csv").join(p)).unwrap().lines().count() - 1).sum();
    // Read the parquet file back with rivulet itself and count.
    std::fs::write(
        dir.path().join("back.toml"),
        "name = \"back\"\n[[source]]\nname = \"pq\"\nformat = \"parquet\"\npath = \"out/errors.parquet\"\n[[op]]\nname = \"n\"\ninput = \"pq\"\naggregate = { rows = \"count(*)\" }\n[[sink]]\nname = \"o\"\ninput = \"n\"\nformat = \"stdout\"\nstyle = \"csv\"\n",
    )
    .unwrap();
    let back = run_in(dir.path(), &["run", "back.toml", "-q"]);
    assert!(back.status.success(), "{}", stderr(&back));
    assert_eq!(stdout(&back), format!("rows\n{rows}\n"));
    let expected = crate::common::duckdb_csv("select count(*) from read_csv('data/access/*.csv') where status >= 500");
    assert_eq!(expected.lines().nth(1).unwrap(), rows.to_string());
}

#[test]
fn summary_json_accounts_for_every_row() {
    let path = root().join("pipelines/errors_by_path.toml");
    let out = run(&["run", path.to_str().unwrap(), "--json", "--set", "sink.out.style=csv", "-p", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let json_start = text.find("{\n").unwrap();
    let v: serde_json::Value = serde_json::from_str(&text[json_start..]).unwrap();
    let ops = v["operators"].as_array().unwrap();
    let source = &ops[0];
    let filter = &ops[1];
    assert_eq!(source["rows_out"], 45000);
    assert_eq!(filter["rows_in"], 45000);
    assert_eq!(filter["rows_out"].as_u64().unwrap() + filter["filtered"].as_u64().unwrap(), 45000);
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() { out.extend(all_files(&e.path())) } else { out.push(e.path()) }
    }
    out
}

#[test]
fn partitioned_output_stays_inside_its_root_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let long = "L".repeat(300);
    let regions = ["eu", "..", "a/b", ".", "sp ace", "x\u{1}y", "", &long];
    let mut csv = String::from("id,region,amount\n");
    for i in 0..400 {
        let _ = std::fmt::Write::write_fmt(&mut csv, format_args!("{i},\"{}\",{}\n", regions[i % regions.len()], i % 7));
    }
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("write.toml"),
        "name = \"w\"\n[[source]]\nname = \"s\"\nformat = \"csv\"\npath = \"in.csv\"\n[[sink]]\nname = \"out\"\ninput = \"s\"\nformat = \"csv\"\npath = \"out\"\npartition_by = [\"region\"]\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["run", "write.toml", "-q", "-p", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = dir.path().join("out").canonicalize().unwrap();
    let files = all_files(&root);
    assert!(!files.is_empty());
    for f in &files {
        let f = f.canonicalize().unwrap();
        assert!(f.starts_with(&root), "{} escaped {}", f.display(), root.display());
        let name = f.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("region=") && name.matches('/').count() == 1, "{name}");
        assert!(name.len() < 260, "{name}");
    }
    // Read it back as a Hive-partitioned source: the same rows per region (the long value's
    // directory name is shortened, so it comes back shortened).
    std::fs::write(
        dir.path().join("read.toml"),
        "name = \"r\"\n[[source]]\nname = \"p\"\nformat = \"csv\"\npath = \"out\"\n[[op]]\nname = \"g\"\ninput = \"p\"\nkey_by = [\"region\"]\naggregate = { n = \"count(*)\", s = \"sum(amount)\" }\n[[sink]]\nname = \"o\"\ninput = \"g\"\nformat = \"stdout\"\nstyle = \"csv\"\n",
    )
    .unwrap();
    let back = run_in(dir.path(), &["run", "read.toml", "-q", "-p", "2"]);
    assert!(back.status.success(), "{}", stderr(&back));
    let text = stdout(&back);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), regions.len(), "{text}");
    for r in ["eu,50,", "..,50,", "a/b,50,", ".,50,", "sp ace,50,", "\"\",50,", "x\u{1}y,50,"] {
        assert!(rows.iter().any(|row| row.starts_with(r) || (r.starts_with("\"\"") && row.starts_with(",50,"))), "missing {r:?} in {text}");
    }
}
