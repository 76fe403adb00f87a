//! Differential test: random tables and random pipelines (filter, select, aggregate, join,
//! distinct, sort + limit), each compared with DuckDB running the equivalent SQL.
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::common::{csv_diff, csv_diff_ordered, python, stderr, stdout};

/// xorshift: deterministic, so a failing case can be rerun.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn write_tables(dir: &Path, rng: &mut Rng) {
    std::fs::create_dir_all(dir.join("a")).unwrap();
    for part in 0..2 {
        let mut text = String::from("id,k1,k2,x,y,d\n");
        for i in 0..1500 {
            let id = part * 1500 + i;
            let k1 = rng.pick(&["red", "green", "blue", "cyan", "teal"]);
            let k2 = rng.below(7);
            let x = if rng.chance(8) { String::new() } else { format!("{:.3}", rng.below(100_000) as f64 / 37.0 - 500.0) };
            let y = if rng.chance(8) { String::new() } else { (rng.below(400) as i64 - 150).to_string() };
            let d = format!("2026-0{}-{:02}", 1 + rng.below(9), 1 + rng.below(28));
            let _ = writeln!(text, "{id},{k1},{k2},{x},{y},{d}");
        }
        std::fs::write(dir.join(format!("a/part-{part}.csv")), text).unwrap();
    }
    let mut b = String::from("k1,w,label\n");
    for k1 in ["red", "green", "blue", "magenta"] {
        for _ in 0..1 + rng.below(3) {
            let _ = writeln!(b, "{k1},{},{}", rng.below(50), rng.pick(&["p", "q"]));
        }
    }
    std::fs::write(dir.join("b.csv"), b).unwrap();
}

/// A random filter condition, valid in both polars' and DuckDB's SQL.
fn predicate(rng: &mut Rng) -> String {
    let atom = |rng: &mut Rng| match rng.below(6) {
        0 => format!("x > {}", rng.below(2000) as i64 - 1000),
        1 => format!("y <= {}", rng.below(300) as i64 - 100),
        2 => format!("k1 = '{}'", rng.pick(&["red", "green", "blue", "cyan"])),
        3 => "x IS NULL".to_string(),
        4 => format!("k2 IN ({}, {})", rng.below(7), rng.below(7)),
        _ => format!("d >= DATE '2026-0{}-01'", 1 + rng.below(9)),
    };
    match rng.below(3) {
        0 => atom(rng),
        1 => format!("{} AND {}", atom(rng), atom(rng)),
        _ => format!("({} OR {}) AND y IS NOT NULL", atom(rng), atom(rng)),
    }
}

struct Case {
    pipeline: String,
    sql: String,
    ordered: bool,
}

const AGGS: [(&str, &str); 8] = [
    ("count(*)", "count(*)"),
    ("count(x)", "count(x)"),
    ("sum(y)", "sum(y)"),
    ("min(x)", "min(x)"),
    ("max(d)", "max(d)"),
    ("avg(x)", "avg(x)"),
    ("count(distinct k2)", "count(distinct k2)"),
    ("sum(x * 2 + y)", "sum(x * 2 + y)"),
];

fn case(rng: &mut Rng) -> Case {
    let head = "name = \"diff\"\n[[source]]\nname = \"a\"\nformat = \"csv\"\npath = \"a/*.csv\"\nsplit_bytes = 20000\n";
    let sink = |input: &str| format!("[[sink]]\nname = \"out\"\ninput = \"{input}\"\nformat = \"stdout\"\nstyle = \"csv\"\n");
    let pred = predicate(rng);
    let filter = format!("[[op]]\nname = \"f\"\ninput = \"a\"\nfilter = \"{pred}\"\n");
    let src = "read_csv('a/*.csv')";
    match rng.below(5) {
        0 => {
            let pipeline =
                format!("{head}{filter}[[op]]\nname = \"s\"\ninput = \"f\"\nselect = [\"id\", \"k1\", \"y * 2 - k2 AS z\", \"x / 4 AS q\"]\n{}", sink("s"));
            Case { pipeline, sql: format!("select id, k1, y * 2 - k2 as z, x / 4 as q from {src} where {pred}"), ordered: false }
        }
        1 => {
            const KEYS: [&[&str]; 4] = [&["k1"], &["k2"], &["k1", "k2"], &[]];
            let keys = *rng.pick(&KEYS);
            let n = 1 + rng.below(4) as usize;
            let aggs: Vec<(String, &str, &str)> = (0..n)
                .map(|i| {
                    let (r, d) = rng.pick(&AGGS);
                    (format!("a{i}"), *r, *d)
                })
                .collect();
            let toml_aggs = aggs.iter().map(|(n, r, _)| format!("{n} = \"{r}\"")).collect::<Vec<_>>().join(", ");
            let key_by = if keys.is_empty() {
                String::new()
            } else {
                format!("key_by = [{}]\n", keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", "))
            };
            let pipeline = format!("{head}{filter}[[op]]\nname = \"g\"\ninput = \"f\"\n{key_by}aggregate = {{ {toml_aggs} }}\n{}", sink("g"));
            let cols: Vec<String> = keys.iter().map(|k| k.to_string()).chain(aggs.iter().map(|(n, _, d)| format!("{d} as {n}"))).collect();
            let group = if keys.is_empty() { String::new() } else { format!(" group by {}", keys.join(", ")) };
            Case { pipeline, sql: format!("select {} from {src} where {pred}{group}", cols.join(", ")), ordered: false }
        }
        2 => {
            let how = *rng.pick(&["inner", "left", "right", "full", "semi", "anti"]);
            let strategy = if rng.chance(50) { "strategy = \"hash\"\n" } else { "" };
            let b = "[[source]]\nname = \"b\"\nformat = \"csv\"\npath = \"b.csv\"\n";
            let pipeline = format!(
                "{head}{b}{filter}[[op]]\nname = \"j\"\ninput = [\"f\", \"b\"]\njoin = \"{how}\"\non = [\"k1\"]\n{strategy}[[op]]\nname = \"g\"\ninput = \"j\"\nkey_by = [\"k1\"]\naggregate = {{ n = \"count(*)\", s = \"sum(y)\" }}\n{}",
                sink("g")
            );
            let sql = format!(
                "select k1, count(*) as n, sum(y) as s from (select * from {src} where {pred}) a {how} join read_csv('b.csv') b using (k1) group by k1"
            );
            Case { pipeline, sql, ordered: false }
        }
        3 => {
            const COLS: [&[&str]; 4] = [&["k1"], &["k2"], &["k1", "k2"], &["k2", "d"]];
            let cols = *rng.pick(&COLS);
            let list = cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
            let pipeline = format!(
                "{head}{filter}[[op]]\nname = \"u\"\ninput = \"f\"\ndistinct = [{list}]\nkeep = \"{}\"\n[[op]]\nname = \"s\"\ninput = \"u\"\nselect = [{list}]\n{}",
                rng.pick(&["first", "last", "any"]),
                sink("s")
            );
            Case { pipeline, sql: format!("select distinct {} from {src} where {pred}", cols.join(", ")), ordered: false }
        }
        _ => {
            let n = 1 + rng.below(40);
            let desc = rng.chance(50);
            let dir = if desc { "DESC" } else { "ASC" };
            let pipeline = format!(
                "{head}{filter}[[op]]\nname = \"t\"\ninput = \"f\"\nsort = [\"y {dir}\", \"id\"]\nlimit = {n}\n[[op]]\nname = \"s\"\ninput = \"t\"\nselect = [\"id\", \"y\", \"k1\"]\n{}",
                sink("s")
            );
            Case { pipeline, sql: format!("select id, y, k1 from {src} where {pred} order by y {dir} nulls last, id limit {n}"), ordered: true }
        }
    }
}

/// Runs every query with DuckDB in one Python process; returns one CSV per query.
fn duckdb_all(dir: &Path, sqls: &[String]) -> Vec<String> {
    let script = r#"
import duckdb, sys, json, csv, io
con = duckdb.connect()
out = []
for sql in json.load(open(sys.argv[1])):
    rel = con.sql(sql)
    buf = io.StringIO(); w = csv.writer(buf, lineterminator="\n"); w.writerow(rel.columns)
    for row in rel.fetchall():
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    out.append(buf.getvalue())
json.dump(out, open(sys.argv[2], "w"))
"#;
    std::fs::write(dir.join("queries.json"), serde_json::to_string(sqls).unwrap()).unwrap();
    let out = Command::new(python()).args(["-c", script, "queries.json", "results.json"]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn random_pipelines_agree_with_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("RIVULET_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed);
    write_tables(dir.path(), &mut rng);
    let cases: Vec<Case> = (0..200).map(|_| case(&mut rng)).collect();
    let expected = duckdb_all(dir.path(), &cases.iter().map(|c| c.sql.clone()).collect::<Vec<_>>());
    let mut failures = Vec::new();
    for (i, (c, want)) in cases.iter().zip(&expected).enumerate() {
        let file = format!("case{i}.toml");
        std::fs::write(dir.path().join(&file), &c.pipeline).unwrap();
        let p = ["1", "3"][i % 2];
        // Every other pair of cases merges aggregate state with polars' streaming engine (as
        // large states are); the others in memory.
        let streaming = if i % 4 >= 2 { "0" } else { "1000000000" };
        let out = crate::common::rivulet().current_dir(dir.path()).env("RIVULET_STREAMING_ROWS", streaming).args(["run", &file, "-q", "-p", p]).output().unwrap();
        let diff = if !out.status.success() {
            Some(format!("failed: {}", stderr(&out)))
        } else if c.ordered {
            csv_diff_ordered(&stdout(&out), want)
        } else {
            csv_diff(&stdout(&out), want)
        };
        if let Some(d) = diff {
            failures.push(format!("case {i} (-p {p}):\n{}\nSQL: {}\n{d}", c.pipeline, c.sql));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ from DuckDB (seed {seed}):\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}
