//! Corrupt and truncated Parquet never makes rivulet panic or hang: a small valid file gets
//! 2,000 single-byte corruptions and 64 truncation points; each corrupted file is read by its
//! own run (under 5 s), which either succeeds or exits 1 with an error naming the file.
//! A byte in string data or statistics can change without Parquet noticing (polars writes no
//! page checksums), so success is allowed; a panic, a hang, or an error that does not name the
//! file is not.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;

/// A small Parquet file with several types, nulls and 4 row groups, with statistics.
fn valid_parquet() -> Vec<u8> {
    let n = 200;
    let mut df = df!(
        "id" => (0..n as i64).collect::<Vec<_>>(),
        "price" => (0..n).map(|i| (i % 7 != 0).then_some(i as f64 * 1.25)).collect::<Vec<_>>(),
        "name" => (0..n).map(|i| format!("name-{}", i % 13)).collect::<Vec<_>>(),
        "flag" => (0..n).map(|i| i % 3 == 0).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).with_row_group_size(Some(50)).with_statistics(StatisticsOptions::full()).finish(&mut df).unwrap();
    buf
}

/// A deterministic generator (the same corruptions every run; the seed can be changed with
/// `RIVULET_CORRUPT_SEED` to explore others).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn pipeline(dir: &Path, file: &str) -> String {
    format!(
        "name = \"corrupt\"\n[[source]]\nname = \"src\"\nformat = \"parquet\"\npath = {:?}\n[[sink]]\ninput = \"src\"\nformat = \"csv\"\nsingle_file = true\npath = {:?}\n",
        dir.join(file).to_str().unwrap(),
        dir.join(format!("{file}.out.csv")).to_str().unwrap()
    )
}

/// Waits for a run at most `limit`; kills it and reports a hang past that.
fn wait(mut child: Child, limit: Duration) -> Result<std::process::Output, String> {
    let start = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return child.wait_with_output().map_err(|e| e.to_string());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return Err(format!("still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs rivulet on each corrupted file (two at a time); returns the problems found and how many
/// runs failed cleanly.
fn run_all(dir: &Path, cases: &[(String, Vec<u8>)]) -> (Vec<String>, usize) {
    let bin = env!("CARGO_BIN_EXE_rivulet");
    let mut problems = Vec::new();
    let mut errors = 0;
    for pair in cases.chunks(2) {
        let children: Vec<(String, Child)> = pair
            .iter()
            .map(|(name, bytes)| {
                std::fs::write(dir.join(name), bytes).unwrap();
                std::fs::write(dir.join(format!("{name}.toml")), pipeline(dir, name)).unwrap();
                let child = Command::new(bin)
                    .args(["run", "-q", "-p", "2", dir.join(format!("{name}.toml")).to_str().unwrap()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (name.clone(), child)
            })
            .collect();
        for (name, child) in children {
            match wait(child, Duration::from_secs(5)) {
                Err(e) => problems.push(format!("{name}: {e}")),
                Ok(out) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    match out.status.code() {
                        Some(0) => {}
                        Some(1) if err.contains(name.as_str()) && !err.contains("panicked") => errors += 1,
                        code => problems.push(format!("{name}: exit {code:?}: {err}")),
                    }
                }
            }
            // RIVULET_CORRUPT_KEEP=dir keeps the files that showed a problem, to debug them.
            if let Ok(keep) = std::env::var("RIVULET_CORRUPT_KEEP")
                && problems.last().is_some_and(|p| p.starts_with(name.as_str()))
            {
                let _ = std::fs::copy(dir.join(&name), Path::new(&keep).join(&name));
            }
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    (problems, errors)
}

#[test]
fn corrupt_and_truncated_parquet_never_panics_or_hangs() {
    let valid = valid_parquet();
    let seed = std::env::var("RIVULET_CORRUPT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261125u64);
    let mut rng = Lcg(seed);
    let mut cases = Vec::new();
    for i in 0..2000 {
        let mut bytes = valid.clone();
        let at = rng.next() as usize % bytes.len();
        bytes[at] ^= (rng.next() % 255 + 1) as u8;
        cases.push((format!("flip{i:04}_at{at}.parquet"), bytes));
    }
    for i in 0..64 {
        let cut = i * valid.len() / 64;
        cases.push((format!("cut{i:02}_at{cut}.parquet"), valid[..cut].to_vec()));
    }
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (problems, errors) = run_all(tmp.path(), &cases);
    eprintln!(
        "{} corrupted files in {:.1} s: {errors} clean errors, {} read without error, {} problems",
        cases.len(),
        started.elapsed().as_secs_f64(),
        cases.len() - errors - problems.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "{} problems (seed {seed}):\n{}", problems.len(), problems.join("\n"));
    // The truncations all fail: a Parquet file is read from its footer.
    assert!(errors >= 64, "only {errors} runs failed");
}
