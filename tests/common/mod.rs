//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command running the rivulet binary built for these tests, or the one `RIVULET_BIN` names
/// (to take a test's figures, such as the TCP test's peak memory, on a release build).
pub fn rivulet() -> Command {
    Command::new(std::env::var_os("RIVULET_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_rivulet").into()))
}

/// Runs rivulet with `args`; returns the output.
pub fn run(args: &[&str]) -> Output {
    rivulet().args(args).output().expect("rivulet runs")
}

/// Runs rivulet in `dir` with `args`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    rivulet().current_dir(dir).args(args).output().expect("rivulet runs")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Names of the entries of `dir` (none when it does not exist): output a failed run left behind.
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()).unwrap_or_default()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// True when two CSV fields are equal, numbers within a relative tolerance of 1e-9.
fn field_eq(a: &str, b: &str) -> bool {
    // A lone empty field may be written quoted ("") so that the line is not blank.
    fn unquote(s: &str) -> &str {
        if s == "\"\"" { "" } else { s }
    }
    let (a, b) = (unquote(a), unquote(b));
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Compares CSV text row by row in order, numbers within tolerance.
pub fn csv_diff_ordered(actual: &str, expected: &str) -> Option<String> {
    let (a, e): (Vec<&str>, Vec<&str>) = (actual.lines().collect(), expected.lines().collect());
    if a.len() != e.len() {
        return Some(format!("{} lines, expected {}\nactual:\n{actual}\nexpected:\n{expected}", a.len(), e.len()));
    }
    a.iter().zip(&e).enumerate().find(|(_, (x, y))| !row_eq(x, y)).map(|(i, (x, y))| format!("line {} differs:\n  actual:   {x}\n  expected: {y}", i + 1))
}

fn row_eq(x: &str, y: &str) -> bool {
    let xs: Vec<&str> = x.split(',').collect();
    let ys: Vec<&str> = y.split(',').collect();
    xs.len() == ys.len() && xs.iter().zip(&ys).all(|(p, q)| field_eq(p, q))
}

/// Compares CSV text: same header, same multiset of rows (order ignored), numbers within
/// tolerance. Returns a description of the first difference.
pub fn csv_diff(actual: &str, expected: &str) -> Option<String> {
    let mut a: Vec<&str> = actual.lines().collect();
    let mut e: Vec<&str> = expected.lines().collect();
    if a.first() != e.first() {
        return Some(format!("header differs:\n  actual:   {:?}\n  expected: {:?}", a.first(), e.first()));
    }
    let (a_rows, e_rows) = (a.split_off(1.min(a.len())), e.split_off(1.min(e.len())));
    let mut a_rows = a_rows;
    let mut e_rows = e_rows;
    a_rows.sort_unstable();
    e_rows.sort_unstable();
    if a_rows.len() != e_rows.len() {
        return Some(format!("{} rows, expected {}\nactual:\n{}\nexpected:\n{}", a_rows.len(), e_rows.len(), actual, expected));
    }
    a_rows.iter().zip(&e_rows).find(|(x, y)| !row_eq(x, y)).map(|(x, y)| format!("row differs:\n  actual:   {x}\n  expected: {y}"))
}

/// The python3 that has duckdb installed (the bench venv when present, else the system one).
pub fn python() -> String {
    for p in ["/work/.venv-bench/bin/python", "python3"] {
        let ok = Command::new(p).args(["-c", "import duckdb"]).output().map(|o| o.status.success()).unwrap_or(false);
        if ok {
            return p.to_string();
        }
    }
    panic!("python3 with duckdb is needed (pip install duckdb); .ci/run installs it");
}

/// Runs a DuckDB query (paths relative to the repository) and returns CSV (header + rows).
pub fn duckdb_csv(sql: &str) -> String {
    duckdb_csv_in(&root(), sql)
}

/// Runs a DuckDB query with paths relative to `dir`; returns CSV (header + rows).
pub fn duckdb_csv_in(dir: &Path, sql: &str) -> String {
    let script = "import duckdb, sys\ncon = duckdb.connect()\nrel = con.sql(sys.argv[1])\nimport csv\nw = csv.writer(sys.stdout, lineterminator='\\n')\nw.writerow(rel.columns)\nfor row in rel.fetchall():\n    w.writerow(['' if v is None else repr(v) if isinstance(v, float) else v for v in row])\n";
    let out = Command::new(python()).args(["-c", script, sql]).current_dir(dir).output().expect("python runs");
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts rivulet in `dir` with `args`, stdout and stderr piped.
pub fn spawn_in(dir: &Path, args: &[&str]) -> std::process::Child {
    rivulet().current_dir(dir).args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("rivulet starts")
}

/// Sends Ctrl-C (SIGINT) to a child process.
pub fn interrupt(child: &std::process::Child) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// The example pipelines, copied with the bundled data into `dir` (so their output stays
/// there), sorted: every `.toml` and `.yaml` file of `pipelines/` (not its subdirectories).
pub fn example_pipelines(dir: &Path) -> Vec<PathBuf> {
    copy_dir(&root().join("data"), &dir.join("data"));
    copy_dir(&root().join("pipelines"), &dir.join("pipelines"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("toml" | "yaml" | "yml")))
        .collect();
    files.sort();
    files
}
