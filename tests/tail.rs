//! Tail mode and standard input, end to end: `rivulet tail` follows files through appends in
//! random-size pieces, rotation and new files, and Ctrl-C (SIGINT) stops it cleanly with every
//! line counted and the output committed; `cat file | rivulet run` reads standard input.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{stderr, stdout};

fn append(path: &std::path::Path, bytes: &[u8]) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// Rows of the CSV part files in `dir` (without headers).
fn rows(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            out.extend(std::fs::read_to_string(e.path()).unwrap().lines().skip(1).map(str::to_string));
        }
    }
    out
}

#[test]
fn tail_follows_appends_and_rotation_and_stops_cleanly_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        tmp.path().join("p.toml"),
        r#"
name = "tail-test"
[[source]]
name = "log"
format = "regex"
path = "logs/*.log*"
regex = '^(?P<status>\d{3}) (?P<n>\d+)$'
schema = { status = "int", n = "int" }
on_error = "dead_letter"
linger_ms = 5

[[op]]
name = "by_status"
input = "log"
key_by = ["status"]
aggregate = { hits = "count(*)", total = "sum(n)" }

[[sink]]
input = "by_status"
format = "csv"
path = "out/counts"

[[sink]]
input = "log.dead_letter"
format = "csv"
path = "out/bad"
"#,
    )
    .unwrap();
    let live = logs.join("access.log");
    std::fs::write(&live, "200 0\n").unwrap();
    let mut child = crate::common::spawn_in(tmp.path(), &["tail", "p.toml", "-p", "2", "--json"]);
    // 3,000 more lines in random-size pieces (cut anywhere, even inside a line), rotated
    // logrotate-style twice, plus a second file and 3 bad lines.
    let mut text = Vec::new();
    for i in 1..3000 {
        let status = [200, 404, 500][i % 3];
        text.extend_from_slice(format!("{status} {i}\n").as_bytes());
        if i % 1000 == 0 {
            text.extend_from_slice(b"not a status line\n");
        }
    }
    let mut pos = 0;
    let mut rng = 12345u64;
    let mut rotations = 0;
    while pos < text.len() {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = ((rng >> 33) % 700 + 1) as usize;
        let end = (pos + n).min(text.len());
        append(&live, &text[pos..end]);
        pos = end;
        if rotations < 2 && pos > (rotations + 1) * text.len() / 3 && text[pos - 1] == b'\n' {
            std::fs::rename(&live, logs.join(format!("access.log.{}", rotations + 1))).unwrap();
            std::fs::File::create(&live).unwrap();
            rotations += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::write(logs.join("other.log"), "200 5000\n").unwrap();
    // Wait until everything was read: the source's byte counter is not visible from here, so
    // give the follower time, then stop.
    std::thread::sleep(Duration::from_millis(1500));
    crate::common::interrupt(&child);
    let start = Instant::now();
    let out = loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break child.wait_with_output().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "tail did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), stderr(&out));
    let mut counts = rows(&tmp.path().join("out/counts"));
    counts.sort();
    // Statuses of lines 0..2999 (line 0 is "200 0") and the other file's line.
    let expect = |s: usize| (0..3000).filter(|i| [200, 404, 500][i % 3] == s).count();
    let sum = |s: usize| (0..3000).filter(|i| [200, 404, 500][i % 3] == s).sum::<usize>();
    let mut want =
        vec![format!("200,{},{}", expect(200) + 1, sum(200) + 5000), format!("404,{},{}", expect(404), sum(404)), format!("500,{},{}", expect(500), sum(500))];
    want.sort();
    assert_eq!(counts, want, "{}", stdout(&out));
    assert_eq!(rows(&tmp.path().join("out/bad")).len(), 2, "dead letters");
}

#[test]
fn standard_input_is_a_source() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.toml"),
        r#"
name = "stdin-test"
[[source]]
name = "in"
format = "csv"
path = "-"
schema = { k = "string", v = "int" }
on_error = "skip"

[[op]]
name = "sums"
input = "in"
key_by = ["k"]
aggregate = { total = "sum(v)", n = "count(*)" }

[[sink]]
input = "sums"
format = "stdout"
style = "csv"
"#,
    )
    .unwrap();
    let mut input = String::from("k,v\n");
    for i in 0..50_000 {
        input += &format!("{},{i}\n", ["a", "b"][i % 2]);
    }
    input += "a,oops\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .current_dir(tmp.path())
        .args(["run", "p.toml", "-q", "-p", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    lines.sort();
    let sum = |r: usize| (0..50_000usize).filter(|i| i % 2 == r).sum::<usize>();
    assert_eq!(lines, [format!("a,{},25000", sum(0)), format!("b,{},25000", sum(1)), "k,total,n".to_string()]);
}

/// The same pipeline file gives the same windows bounded (`run` on the finished file) and
/// unbounded (`tail --drain` while the lines are appended in random-size pieces, then Ctrl-C), over
/// generated inputs whose disorder stays within `max_delay` (so no row is late in either run).
#[test]
fn windows_are_the_same_bounded_and_unbounded() {
    let pipeline = r#"
name = "same-windows"
[[source]]
name = "events"
format = "csv"
path = "logs/*.csv"
header = false
schema = { t = "int", k = "string", v = "int" }
linger_ms = 5

[[op]]
name = "stamped"
input = "events"
watermark = { time = "t", max_delay = "3s", idle_timeout = "100ms" }

[[op]]
name = "per_key"
input = "stamped"
key_by = ["k"]
window = { size = "2s", slide = "1s", time = "t" }
aggregate = { n = "count(*)", total = "sum(v)", top = "max(v)" }

[[sink]]
input = "per_key"
format = "csv"
path = "out"
"#;
    let mut rng = 7u64;
    let mut next = move || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        rng >> 33
    };
    for case in 0..4 {
        let mut text = String::new();
        let mut clock = 0i64;
        for _ in 0..(300 + next() % 700) {
            clock += (next() % 40) as i64;
            // Out of order by up to 1.5 s: within max_delay.
            let t = (clock - (next() % 1500) as i64).max(0);
            text += &format!("{t},{},{}\n", ["a", "b", "c"][(next() % 3) as usize], next() % 100);
        }
        let run = |mode: &str| -> Vec<String> {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
            std::fs::write(tmp.path().join("p.toml"), pipeline).unwrap();
            let log = tmp.path().join("logs/events.csv");
            if mode == "run" {
                std::fs::write(&log, &text).unwrap();
                let o = crate::common::run_in(tmp.path(), &["run", "p.toml", "-q", "-p", "2"]);
                assert!(o.status.success(), "{}", stderr(&o));
            } else {
                std::fs::write(&log, "").unwrap();
                let child = crate::common::spawn_in(tmp.path(), &["tail", "p.toml", "-q", "-p", "2", "--drain"]);
                let bytes = text.as_bytes();
                let mut pos = 0;
                let mut r = 99u64;
                while pos < bytes.len() {
                    r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let end = (pos + (r >> 33) as usize % 3000 + 1).min(bytes.len());
                    append(&log, &bytes[pos..end]);
                    pos = end;
                    std::thread::sleep(Duration::from_millis(3));
                }
                std::thread::sleep(Duration::from_millis(800));
                crate::common::interrupt(&child);
                let o = child.wait_with_output().unwrap();
                assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
            }
            let mut rows = rows(&tmp.path().join("out"));
            rows.sort();
            rows
        };
        let (bounded, unbounded) = (run("run"), run("tail"));
        assert!(!bounded.is_empty());
        assert_eq!(bounded, unbounded, "case {case}: bounded and unbounded windows differ");
    }
}

/// TCP: 8 clients send 100,000 lines each at the same time; every line comes out once. The
/// test reads the output slowly, so the sink blocks and backpressure reaches the clients'
/// sockets; memory stays bounded (the peak is printed).
#[test]
fn tcp_clients_are_all_counted_with_backpressure() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.toml"),
        format!(
            r#"
name = "tcp"
[[source]]
name = "net"
format = "regex"
path = "tcp://127.0.0.1:{port}"
regex = '^client (?P<client>\d+) line (?P<n>\d+)$'
schema = {{ client = "int", n = "int" }}

[[sink]]
input = "net"
format = "stdout"
style = "csv"
"#
        ),
    )
    .unwrap();
    let mut child = crate::common::spawn_in(tmp.path(), &["run", "p.toml", "-p", "2", "--json"]);
    // Wait for the listener.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "rivulet did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                let mut text = String::new();
                for n in 0..100_000 {
                    text += &format!("client {c} line {n}\n");
                    if text.len() > 60_000 {
                        s.write_all(text.as_bytes()).unwrap();
                        text.clear();
                    }
                }
                s.write_all(text.as_bytes()).unwrap();
            })
        })
        .collect();
    // Read slowly: the stdout pipe fills, the sink waits, and so does everything upstream.
    let mut reader = BufReader::with_capacity(4096, child.stdout.take().unwrap());
    let mut per_client = [0usize; 8];
    let mut line = String::new();
    let mut count = 0;
    let mut summary = String::new();
    while count < 800_000 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some((c, _)) = line.trim_end().split_once(',')
            && let Ok(c) = c.parse::<usize>()
        {
            per_client[c] += 1;
            count += 1;
            if count % 20_000 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(per_client, [100_000; 8]);
    crate::common::interrupt(&child);
    let _ = std::io::Read::read_to_string(&mut reader, &mut summary);
    let status = child.wait().unwrap();
    assert!(status.success());
    let json = summary.rfind("{\n  \"pipeline\"").map_or("", |i| &summary[i..]);
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let peak = v["peak_rss_bytes"].as_u64().unwrap_or(0);
    eprintln!("tcp: 800,000 lines from 8 clients, peak RSS {:.0} MB", peak as f64 / 1e6);
    assert!(peak < 600_000_000, "peak RSS {peak}");
}

/// Rotation soak: 5 writers append 100,000 lines each to their own log, rotating it (rename,
/// then a new file) every 256 KB, while `rivulet tail` follows `logs/*.log*`: exactly 500,000
/// lines come out, each once.
#[test]
fn rotation_soak_counts_every_line_once() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
    std::fs::write(
        tmp.path().join("p.toml"),
        r#"
name = "soak"
[[source]]
name = "logs"
format = "regex"
path = "logs/*.log*"
regex = '^w(?P<writer>\d) (?P<n>\d+) .*$'
schema = { writer = "int", n = "int" }

[[op]]
name = "keys"
input = "logs"
select = ["writer", "n"]

[[sink]]
input = "keys"
format = "stdout"
style = "csv"
"#,
    )
    .unwrap();
    let mut child = crate::common::spawn_in(tmp.path(), &["tail", "p.toml", "-p", "2", "-q"]);
    let logs = tmp.path().join("logs");
    let writers: Vec<_> = (0..5)
        .map(|w| {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let live = logs.join(format!("w{w}.log"));
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
                let (mut size, mut rotations) = (0usize, 0);
                let mut text = String::new();
                for n in 0..100_000 {
                    text += &format!("w{w} {n} some payload to make the line longer\n");
                    if text.len() >= 16 << 10 {
                        file.write_all(text.as_bytes()).unwrap();
                        size += text.len();
                        text.clear();
                        if size >= 256 << 10 {
                            rotations += 1;
                            std::fs::rename(&live, logs.join(format!("w{w}.log.{rotations}"))).unwrap();
                            file = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
                            size = 0;
                        }
                    }
                }
                file.write_all(text.as_bytes()).unwrap();
            })
        })
        .collect();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let distinct = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = distinct.clone();
    // Reads everything rivulet writes until it exits: distinct lines, and lines read twice.
    let reading = std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        let mut dup = 0usize;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if !line.starts_with("writer") && !seen.insert(line.trim_end().to_string()) {
                dup += 1;
            }
            counter.store(seen.len(), std::sync::atomic::Ordering::Relaxed);
            line.clear();
        }
        (seen.len(), dup)
    });
    for w in writers {
        w.join().unwrap();
    }
    let start = Instant::now();
    while distinct.load(std::sync::atomic::Ordering::Relaxed) < 500_000 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A little longer, so a line read twice would show up too.
    std::thread::sleep(Duration::from_millis(500));
    crate::common::interrupt(&child);
    let status = child.wait().unwrap();
    assert!(status.success());
    let (lines, duplicates) = reading.join().unwrap();
    assert_eq!((lines, duplicates), (500_000, 0), "distinct lines read, lines read twice");
}

/// In tail mode a join's right side is usually a lookup table: with `follow = false` it is read
/// once and ends, so the join is built and the followed log's lines are enriched while the run
/// goes on (before the stop). Without it the join could never be built: `explain` and `tail`
/// say so.
#[test]
fn a_lookup_table_read_once_enriches_a_followed_log_while_it_runs() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
    std::fs::write(tmp.path().join("hosts.csv"), "host,team\nweb1,shop\nweb2,search\nweb2,search-oncall\n").unwrap();
    let pipeline = |follow: &str| {
        format!(
            r#"
name = "lookup-test"
[[source]]
name = "log"
format = "regex"
path = "logs/*.log"
regex = '^(?P<host>\S+) (?P<status>\d{{3}})$'
schema = {{ status = "int" }}
linger_ms = 5

[[source]]
name = "hosts"
format = "csv"
path = "hosts.csv"
{follow}

[[op]]
name = "enriched"
input = ["log", "hosts"]
join = "left"
on = ["host"]
strategy = "hash"

[[sink]]
input = "enriched"
format = "stdout"
style = "csv"
"#
        )
    };
    std::fs::write(tmp.path().join("followed.toml"), pipeline("")).unwrap();
    let explain = crate::common::run_in(tmp.path(), &["explain", "followed.toml", "--follow", "--graph", "job"]);
    assert!(stdout(&explain).contains("the right input never ends: source 'hosts' is followed"), "{}", stdout(&explain));
    std::fs::write(tmp.path().join("p.toml"), pipeline("follow = false")).unwrap();
    let explain = crate::common::run_in(tmp.path(), &["explain", "p.toml", "--follow", "--graph", "job"]);
    assert!(!stdout(&explain).contains("never ends"), "{}", stdout(&explain));

    let mut child = crate::common::spawn_in(tmp.path(), &["tail", "p.toml", "-p", "2", "-q"]);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || reader.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    append(&tmp.path().join("logs/a.log"), b"web1 200\nweb2 500\nweb9 404\n");
    // Four rows (web2 matches twice), plus the header, arrive while the run goes on.
    let mut lines = Vec::new();
    let start = Instant::now();
    while lines.len() < 5 && start.elapsed() < Duration::from_secs(20) {
        lines.extend(rx.recv_timeout(Duration::from_millis(100)).ok());
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    crate::common::interrupt(&child);
    let status = child.wait().unwrap();
    assert!(status.success());
    lines.extend(rx.try_iter());
    lines.sort();
    assert_eq!(lines, ["host,status,team", "web1,200,shop", "web2,500,search", "web2,500,search-oncall", "web9,404,"]);
}
