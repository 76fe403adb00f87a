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
