//! Arrow IPC (Feather v2) round trip: CSV written as IPC part files, read back, gives the same
//! rows with the same types, at parallelism 1 and 4; a file that is not IPC is a `corrupt_ipc`
//! error naming it.
use crate::common::{csv_diff, run_in, stderr, stdout};

#[test]
fn ipc_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,name,price,day\n");
    for i in 0..5000 {
        let name = if i % 7 == 0 { String::new() } else { format!("n{}", i % 13) };
        csv += &format!("{i},{name},{}.25,2026-11-{:02}\n", i % 100, i % 28 + 1);
    }
    std::fs::write(tmp.path().join("in.csv"), &csv).unwrap();
    for p in ["1", "4"] {
        let write = format!(
            "name = \"to-ipc\"\n[[source]]\nname = \"in\"\nformat = \"csv\"\npath = \"in.csv\"\nschema = {{ day = \"date\" }}\n\
             [[sink]]\ninput = \"in\"\nformat = \"ipc\"\npath = \"out{p}\"\n"
        );
        std::fs::write(tmp.path().join("w.toml"), write).unwrap();
        let o = run_in(tmp.path(), &["run", "w.toml", "-q", "-p", p]);
        assert!(o.status.success(), "{}", stderr(&o));
        let read = format!(
            "name = \"from-ipc\"\n[[source]]\nname = \"back\"\nformat = \"ipc\"\npath = \"out{p}\"\n\
             [[op]]\nname = \"typed\"\ninput = \"back\"\nfilter = \"day >= DATE '2026-11-01'\"\n\
             [[sink]]\ninput = \"typed\"\nformat = \"stdout\"\nstyle = \"csv\"\n"
        );
        std::fs::write(tmp.path().join("r.toml"), read).unwrap();
        let o = run_in(tmp.path(), &["run", "r.toml", "-q", "-p", p]);
        assert!(o.status.success(), "{}", stderr(&o));
        if let Some(diff) = csv_diff(&stdout(&o), &csv) {
            panic!("p={p}: {diff}");
        }
    }
    std::fs::write(tmp.path().join("out4/zz-not-ipc.arrow"), "id,name\n1,a\n").unwrap();
    let o = run_in(tmp.path(), &["run", "r.toml", "-q", "-p", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("error[corrupt_ipc]") && stderr(&o).contains("zz-not-ipc.arrow"), "{}", stderr(&o));
}

/// A file sink that rolls by size: several complete part files, every row once, and a second
/// run replaces the first run's parts.
#[test]
fn file_sinks_roll_over_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,name\n");
    for i in 0..20_000 {
        csv += &format!("{i},name{i}\n");
    }
    std::fs::write(tmp.path().join("in.csv"), &csv).unwrap();
    let pipeline = "name = \"roll\"\nbatch_rows = 1000\n[[source]]\nname = \"in\"\nformat = \"csv\"\npath = \"in.csv\"\n\
                    [[sink]]\ninput = \"in\"\nformat = \"csv\"\npath = \"out\"\nroll_bytes = \"64KB\"\n";
    std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
    for _ in 0..2 {
        let o = run_in(tmp.path(), &["run", "p.toml", "-q", "-p", "1"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut names: Vec<String> = std::fs::read_dir(tmp.path().join("out")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        names.sort();
        assert_eq!(names, ["part-00000-000001.csv", "part-00000-000002.csv", "part-00000-000003.csv", "part-00000-000004.csv"]);
        let mut all = String::from("id,name\n");
        for n in &names {
            let text = std::fs::read_to_string(tmp.path().join("out").join(n)).unwrap();
            assert!(text.starts_with("id,name\n"), "{n} has its header");
            all += text.strip_prefix("id,name\n").unwrap();
        }
        assert!(csv_diff(&all, &csv).is_none(), "every row once");
    }
}

/// Writes `p.toml` in `dir`: source `t` over `in/*.parquet` (with `schema`, a TOML table or
/// ""), `filter` on it, and `count(*)` and `sum(v)` of what passes to `out.csv`.
fn write_pruned_pipeline(dir: &std::path::Path, schema: &str, filter: &str) {
    let schema = if schema.is_empty() { String::new() } else { format!("schema = {schema}") };
    std::fs::write(
        dir.join("p.toml"),
        format!(
            r#"
name = "pruned"
[[source]]
name = "t"
format = "parquet"
path = "in/*.parquet"
{schema}

[[op]]
name = "kept"
input = "t"
filter = "{filter}"

[[op]]
name = "totals"
input = "kept"
aggregate = {{ n = "count(*)", total = "sum(v)" }}

[[sink]]
input = "totals"
format = "csv"
single_file = true
path = "out.csv"
"#
        ),
    )
    .unwrap();
}

/// Runs `p.toml` in `dir` at parallelism `p`: the row groups source `t` skipped, and `out.csv`.
fn run_pruned_pipeline(dir: &std::path::Path, p: &str) -> (serde_json::Value, String) {
    let out = run_in(dir, &["run", "p.toml", "--json", "-p", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = json["operators"].as_array().unwrap().iter().find(|o| o["name"] == "t").unwrap().clone();
    (source["row_groups_skipped"].clone(), std::fs::read_to_string(dir.join("out.csv")).unwrap())
}

/// A filter right after a Parquet source skips the row groups whose min/max statistics show
/// that no row passes: with data sorted by `ts` in 10 row groups, only those that overlap the
/// range are read, and the answer is the same as reading everything.
#[test]
fn parquet_row_groups_are_skipped_by_their_statistics() {
    use polars::prelude::*;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    let mut df = df!(
        "ts" => (0..1000i64).collect::<Vec<_>>(),
        "day" => (0..1000).map(|i| chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(i / 10)).collect::<Vec<_>>(),
        "v" => (0..1000i64).map(|i| (i * 7919) % 1000).collect::<Vec<_>>(),
        "code" => (0..1000i64).map(|i| i.to_string()).collect::<Vec<_>>(),
        "price" => (0..1000).map(|i| i as f64 / 100.0).collect::<Vec<_>>(),
    )
    .unwrap();
    // Parquet stores a decimal's statistics as unscaled integers.
    df.apply("price", |s| s.cast(&DataType::Decimal(10, 2)).unwrap()).unwrap();
    let file = std::fs::File::create(tmp.path().join("in/t.parquet")).unwrap();
    ParquetWriter::new(file).with_row_group_size(Some(100)).with_statistics(StatisticsOptions::full()).finish(&mut df).unwrap();
    // (filter, row groups skipped, rows that pass, their sum of v)
    let sum = |r: std::ops::Range<i64>| r.map(|i| (i * 7919) % 1000).sum::<i64>();
    let cases: [(&str, usize, i64, i64); 7] = [
        ("price >= 7.5", 7, 250, sum(750..1000)),
        ("ts >= 250 AND ts < 420", 7, 170, sum(250..420)),
        ("ts = 555", 9, 1, sum(555..556)),
        ("500 < ts", 5, 499, sum(501..1000)),
        ("day >= DATE '2026-03-12' AND v >= 0", 7, 300, sum(700..1000)),
        // code is stored as text and declared int: "9" > "10" as text, so its statistics are
        // not used (nothing is skipped) and the answer is still right.
        ("code >= 500", 0, 500, sum(500..1000)),
        // v is scattered: a row group is skipped only when its smallest v is 10 or more.
        ("v < 10", (0..10).filter(|g| (g * 100..g * 100 + 100).all(|i| (i * 7919) % 1000 >= 10)).count(), 10, (0..10).sum()),
    ];
    for (filter, skipped, rows, total) in cases {
        write_pruned_pipeline(tmp.path(), r#"{ code = "int" }"#, filter);
        let explain = run_in(tmp.path(), &["explain", "p.toml", "--graph", "job"]);
        let pushed = !filter.starts_with("code");
        assert_eq!(stdout(&explain).contains("predicate pushed to reader"), pushed, "{filter}: {}", stdout(&explain));
        for p in ["1", "4"] {
            let (skipped_here, written) = run_pruned_pipeline(tmp.path(), p);
            assert_eq!(skipped_here, skipped, "{filter} at -p {p}");
            assert_eq!(written, format!("n,total\n{rows},{total}\n"), "{filter} at -p {p}");
        }
    }
}

/// Row groups are skipped across several files whose row groups differ in number and size:
/// the statistics of all the files are weighed together, and each verdict must reach its own
/// row group (a verdict shifted by one file's row groups would skip rows that pass).
#[test]
fn parquet_row_groups_of_several_files_are_skipped_each_by_its_own_statistics() {
    use polars::prelude::*;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    // (file, its ts values, rows per row group): 3 + 5 + 4 row groups.
    for (name, range, group) in [("a", 0..300i64, 100), ("b", 300..550, 50), ("c", 550..950, 100)] {
        let mut df = df!("ts" => range.clone().collect::<Vec<_>>(), "v" => range.map(|i| i * 3).collect::<Vec<_>>()).unwrap();
        let file = std::fs::File::create(tmp.path().join(format!("in/{name}.parquet"))).unwrap();
        ParquetWriter::new(file).with_row_group_size(Some(group)).with_statistics(StatisticsOptions::full()).finish(&mut df).unwrap();
    }
    write_pruned_pipeline(tmp.path(), "", "ts >= 250 AND ts < 420");
    for p in ["1", "4"] {
        let (skipped, written) = run_pruned_pipeline(tmp.path(), p);
        // Kept: a's 200-299, b's 300-349, 350-399 and 400-449; every group of c is skipped.
        assert_eq!(skipped, 2 + 2 + 4, "at -p {p}");
        assert_eq!(written, format!("n,total\n170,{}\n", (250..420).map(|i| i * 3).sum::<i64>()), "at -p {p}");
    }
}

/// An aggregate over a Parquet source whose key statistics show each row group holding whole
/// groups runs where the rows are read, without an exchange (`explain` says so), and gives the
/// same answer as the hash exchange at parallelism 1 and 4. Row groups that share a key at
/// their boundary, hold a null key, or overlap (two files) keep the exchange.
#[test]
fn parquet_groups_complete_per_row_group_are_aggregated_where_read() {
    use polars::prelude::*;
    use std::collections::BTreeMap;
    // (case, rows of key per file, keys expected complete per row group)
    type Keys = Vec<Option<i64>>;
    let rows = 1000i64;
    // Cut between keys (4 rows a key, row groups of 100); within a row group, out of order.
    let cut: Keys = (0..rows).map(|i| Some((i / 100) * 25 + (i * 7) % 25)).collect();
    // 3 rows a key: key 33 spans rows 99..=101, in row groups 0 and 1.
    let shared: Keys = (0..rows).map(|i| Some(i / 3)).collect();
    let with_null: Keys = (0..rows).map(|i| if i == 500 { None } else { Some(i / 4) }).collect();
    let cases: [(&str, Vec<Keys>, bool); 4] = [
        ("cut", vec![cut.clone()], true),
        ("shared", vec![shared], false),
        ("null", vec![with_null], false),
        // Each file's row groups are disjoint, but the second file's meet the first's.
        ("overlap", vec![cut.clone(), cut.iter().map(|k| k.map(|k| k + 10)).collect()], false),
    ];
    for (case, files, clustered) in cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("in")).unwrap();
        let mut expected: BTreeMap<Option<i64>, (i64, i64)> = BTreeMap::new();
        for (f, keys) in files.iter().enumerate() {
            let v: Vec<i64> = (0..rows).map(|i| (i * 7919 + f as i64) % 1000).collect();
            for (k, &v) in keys.iter().zip(&v) {
                if v != 3 {
                    let e = expected.entry(*k).or_default();
                    *e = (e.0 + 1, e.1 + v);
                }
            }
            let mut df = df!("k" => keys, "v" => v).unwrap();
            let file = std::fs::File::create(tmp.path().join(format!("in/{f}.parquet"))).unwrap();
            ParquetWriter::new(file).with_row_group_size(Some(100)).with_statistics(StatisticsOptions::full()).finish(&mut df).unwrap();
        }
        let pipeline = r#"
name = "clustered"
[[source]]
name = "t"
format = "parquet"
path = "in/*.parquet"

[[op]]
name = "kept"
input = "t"
filter = "v <> 3"

[[op]]
name = "per_key"
input = "kept"
key_by = ["k"]
aggregate = { n = "count(*)", total = "sum(v)" }

[[sink]]
input = "per_key"
format = "stdout"
style = "csv"
"#;
        std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
        let explain = stdout(&run_in(tmp.path(), &["explain", "p.toml", "--graph", "job"]));
        assert_eq!(explain.contains("groups complete per row group"), clustered, "{case}: {explain}");
        assert_eq!(explain.contains("hash exchange on [k]"), !clustered, "{case}: {explain}");
        let want: Vec<String> = expected.iter().map(|(k, (n, t))| format!("{},{n},{t}", k.map_or(String::new(), |k| k.to_string()))).collect();
        for p in ["1", "4"] {
            let out = run_in(tmp.path(), &["run", "p.toml", "-q", "-p", p]);
            assert!(out.status.success(), "{case}: {}", stderr(&out));
            let text = stdout(&out);
            let mut lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.remove(0), "k,n,total", "{case}");
            let mut got: Vec<(Option<i64>, String)> = lines.iter().map(|l| (l.split(',').next().unwrap().parse().ok(), l.to_string())).collect();
            got.sort();
            let got: Vec<String> = got.into_iter().map(|(_, l)| l).collect();
            assert_eq!(got, want, "{case} at -p {p}");
        }
    }
}
