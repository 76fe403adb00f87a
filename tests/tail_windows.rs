//! Windows in tail mode, end to end: windows fire while the run goes on, with idle subtasks
//! left out; a stop without `--drain` discards the open windows (and says so in the summary),
//! with it they fire; and processing-time windows fire by the wall clock.
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::{interrupt, spawn_in, stderr};

fn append(path: &std::path::Path, bytes: &[u8]) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// Reads a child's stdout on a thread; the receiver gets the whole text so far after each read.
fn watch_stdout(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(text.clone());
        }
    });
    rx
}

/// Waits until the text seen satisfies `done` (or 10 s pass); returns the text.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, seen: &mut String, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !done(seen) {
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(50)) {
            *seen = t;
        }
    }
}

/// Stops the child with Ctrl-C; returns its stderr, after the rest of its stdout was read.
fn stop(mut child: std::process::Child, rx: &std::sync::mpsc::Receiver<String>, seen: &mut String) -> String {
    interrupt(&child);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    while let Ok(t) = rx.recv_timeout(Duration::from_millis(300)) {
        *seen = t;
    }
    err
}

const EVENT_TIME: &str = r#"
name = "no-drain"
[[source]]
name = "log"
format = "csv"
path = "logs/*.csv"
header = false
schema = { t = "int", k = "string" }
linger_ms = 5

[[op]]
name = "stamped"
input = "log"
watermark = { time = "t", max_delay = "0s", idle_timeout = "200ms" }

[[op]]
name = "per_second"
input = "stamped"
key_by = ["k"]
window = { size = "1s", time = "t" }
aggregate = { n = "count(*)" }

[[sink]]
input = "per_second"
format = "stdout"
style = "csv"
"#;

#[test]
fn windows_fire_while_tailing_when_an_idle_subtask_is_left_out() {
    // At -p 4, three of the four source subtasks follow no file: they are idle, and the window
    // fires because the watermark operator's idle_timeout leaves them out.
    for parallelism in ["1", "4"] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
        std::fs::write(tmp.path().join("p.toml"), EVENT_TIME).unwrap();
        let mut child = spawn_in(tmp.path(), &["tail", "p.toml", "-p", parallelism, "-q", "--drain"]);
        let rx = watch_stdout(&mut child);
        std::thread::sleep(Duration::from_millis(300));
        append(&tmp.path().join("logs/a.csv"), b"100,a\n200,a\n1500,b\n2500,a\n");
        // The first two seconds fire while the run goes on.
        let mut seen = String::new();
        wait_for(&rx, &mut seen, |s| s.contains("a,0,1000,2") && s.contains("b,1000,2000,1"));
        assert!(seen.contains("a,0,1000,2") && seen.contains("b,1000,2000,1"), "p={parallelism}: windows did not fire while running: {seen:?}");
        assert!(!seen.contains("a,2000,3000"), "p={parallelism}: the window the watermark has not passed fired: {seen:?}");
        let _ = stop(child, &rx, &mut seen);
        assert!(seen.contains("a,2000,3000,1"), "p={parallelism}: the last window fires when the run stops with --drain: {seen:?}");
    }
}

#[test]
fn a_stop_without_drain_leaves_open_windows_unfired_and_counts_them() {
    for parallelism in ["1", "3"] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
        std::fs::write(tmp.path().join("p.toml"), EVENT_TIME).unwrap();
        let mut child = spawn_in(tmp.path(), &["tail", "p.toml", "-p", parallelism]);
        let rx = watch_stdout(&mut child);
        std::thread::sleep(Duration::from_millis(300));
        // The watermark reaches 2.5 s: [0, 1 s) and [1 s, 2 s) fire; [2 s, 3 s) of a and b stay open.
        append(&tmp.path().join("logs/a.csv"), b"100,a\n200,a\n1500,b\n2100,a\n2500,b\n");
        let mut seen = String::new();
        wait_for(&rx, &mut seen, |s| s.contains("a,0,1000,2") && s.contains("b,1000,2000,1"));
        let err = stop(child, &rx, &mut seen);
        let mut rows: Vec<&str> = seen.lines().skip(1).collect();
        rows.sort();
        assert_eq!(rows, ["a,0,1000,2", "b,1000,2000,1"], "p={parallelism}: {seen}");
        assert!(err.contains("'per_second': 2 open windows (per key) were not fired: stopped without --drain"), "p={parallelism}: {err}");
    }
}

#[test]
fn processing_time_windows_fire_by_the_wall_clock_while_tailing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
    std::fs::write(
        tmp.path().join("p.toml"),
        r#"
name = "proctime"
[[source]]
name = "log"
format = "lines"
path = "logs/*.log"
linger_ms = 5

[[op]]
name = "per_300ms"
input = "log"
window = { size = "300ms", time = "PROCTIME()" }
aggregate = { n = "count(*)" }

[[sink]]
input = "per_300ms"
format = "stdout"
style = "csv"
"#,
    )
    .unwrap();
    let mut child = spawn_in(tmp.path(), &["tail", "p.toml", "-p", "2", "-q"]);
    let rx = watch_stdout(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    let log = tmp.path().join("logs/app.log");
    append(&log, "one\ntwo\nthree\n".as_bytes());
    // No event time, no watermark: the wall clock alone fires the window the lines fell in.
    let mut seen = String::new();
    let count = |s: &str| s.lines().skip(1).filter_map(|l| l.rsplit(',').next()?.parse::<u64>().ok()).sum::<u64>();
    wait_for(&rx, &mut seen, |s| count(s) == 3);
    assert_eq!(count(&seen), 3, "the first lines' window did not fire while running: {seen:?}");
    std::thread::sleep(Duration::from_millis(700));
    append(&log, "four\nfive\n".as_bytes());
    wait_for(&rx, &mut seen, |s| count(s) == 5);
    assert_eq!(count(&seen), 5, "{seen:?}");
    let _ = stop(child, &rx, &mut seen);
    let rows: Vec<&str> = seen.lines().skip(1).collect();
    assert!(rows.len() >= 2, "two bursts 700 ms apart fall in different 300 ms windows: {seen}");
    // Each window is 300 ms long and starts on a multiple of 300 ms.
    for row in rows {
        let fields: Vec<&str> = row.split(',').collect();
        let (start, end) = (fields[0], fields[1]);
        let ms = |t: &str| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.3f").unwrap().and_utc().timestamp_millis();
        assert_eq!(ms(end) - ms(start), 300, "{row}");
        assert_eq!(ms(start) % 300, 0, "{row}");
    }
}

#[test]
fn processing_time_windows_of_a_bounded_run_fire_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("in.csv"), "k,v\na,1\nb,2\na,3\n").unwrap();
    std::fs::write(
        tmp.path().join("p.toml"),
        r#"
name = "proctime-bounded"
[[source]]
name = "in"
format = "csv"
path = "in.csv"

[[op]]
name = "per_hour"
input = "in"
key_by = ["k"]
window = { size = "1h", time = "proctime()" }
aggregate = { n = "count(*)", total = "sum(v)" }

[[sink]]
input = "per_hour"
format = "stdout"
style = "csv"
"#,
    )
    .unwrap();
    for p in ["1", "4"] {
        let before = chrono::Utc::now().timestamp_millis();
        let out = crate::common::run_in(tmp.path(), &["run", "p.toml", "-q", "-p", p]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = crate::common::stdout(&out);
        let mut rows: Vec<(String, i64)> = Vec::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let start = chrono::NaiveDateTime::parse_from_str(f[1], "%Y-%m-%dT%H:%M:%S%.3f").unwrap().and_utc().timestamp_millis();
            assert!(start <= before + 10_000 && start > before - 3_600_000, "{line}");
            rows.push((format!("{},{},{}", f[0], f[3], f[4]), start));
        }
        let mut keyed: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        keyed.sort();
        // All rows fall in the hour the run started in (unless it straddled an hour: then the
        // counts still add up).
        let total: u64 = rows.iter().map(|r| r.0.split(',').nth(1).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(total, 3, "p={p}: {text}");
        if rows.iter().all(|r| r.1 == rows[0].1) {
            assert_eq!(keyed, ["a,2,4", "b,1,2"], "p={p}");
        }
    }
}
