//! A real nginx on 127.0.0.1 writes its access log while `rivulet tail` follows it: a bounded
//! loop of requests (some 404s and 500s from the test config), the log rotated mid-run the way
//! logrotate does it for nginx (rename, then SIGUSR1 to reopen), and the per-status counts equal
//! the requests sent. `scripts/test.sh` installs nginx from the distribution's packages.
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn nginx() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
}

fn get(port: u16, path: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn tail_counts_a_real_nginx_access_log_through_rotation() {
    let Some(nginx) = nginx() else {
        assert!(std::env::var_os("RIVULET_SKIP_NGINX").is_some(), "nginx is not installed (scripts/test.sh installs it; RIVULET_SKIP_NGINX=1 skips this test)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for d in ["logs", "tmp", "www"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/logs/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n    location = /ok {{ return 200 \"ok\\n\"; }}\n    location = /boom {{ return 500; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let mut server = Command::new(&nginx).args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")]).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(
        dir.join("p.toml"),
        r#"
name = "nginx"
[[source]]
name = "access"
format = "regex"
path = "logs/access.log*"
regex = '^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)'
schema = { status = "int" }
on_error = "dead_letter"

[[op]]
name = "by_status"
input = "access"
key_by = ["status"]
aggregate = { requests = "count(*)" }

[[sink]]
input = "by_status"
format = "csv"
single_file = true
path = "out/counts.csv"

[[sink]]
input = "access.dead_letter"
format = "csv"
single_file = true
path = "out/bad.csv"
"#,
    )
    .unwrap();
    let tail = crate::common::spawn_in(dir, &["tail", "p.toml", "-q", "-p", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut sent = std::collections::BTreeMap::new();
    for i in 0..600 {
        let path = match i % 10 {
            0 | 5 => "/missing",
            7 => "/boom",
            _ => "/ok",
        };
        let status = get(port, path);
        *sent.entry(status).or_insert(0usize) += 1;
        if i == 300 {
            // logrotate for nginx: rename, then USR1 makes nginx reopen its log.
            std::fs::rename(dir.join("logs/access.log"), dir.join("logs/access.log.1")).unwrap();
            // SAFETY: signalling a child we started.
            unsafe { libc::kill(server.id() as i32, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    crate::common::interrupt(&tail);
    let out = tail.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("logs/access.log").exists(), "nginx did not reopen its log");
    let counts = std::fs::read_to_string(dir.join("out/counts.csv")).unwrap();
    let mut got = std::collections::BTreeMap::new();
    for line in counts.lines().skip(1) {
        let (s, n) = line.split_once(',').unwrap();
        got.insert(s.parse::<u16>().unwrap(), n.parse::<usize>().unwrap());
    }
    assert_eq!(sent.keys().copied().collect::<Vec<_>>(), [200, 404, 500]);
    assert_eq!(got, sent, "per-status counts");
    assert_eq!(std::fs::read_to_string(dir.join("out/bad.csv")).unwrap().lines().count(), 1, "no dead letters");
}
