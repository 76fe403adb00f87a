//! Finding a source's files (a file, a directory, or a glob with `**`) and cutting them into
//! splits that subtasks read independently.
use std::path::{Path, PathBuf};

/// The files a source path names, sorted so that every run and every subtask agrees on the order.
/// A directory means every non-hidden file below it; a pattern with `*`, `?` or `[` is a glob.
pub fn discover(base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base_dir.join(pattern) };
    let mut files = Vec::new();
    if pattern.contains(['*', '?', '[']) {
        let text = full.to_string_lossy().to_string();
        let paths = glob::glob(&text).map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
        for p in paths {
            let p = p.map_err(|e| format!("cannot read {}: {}", e.path().display(), e.error()))?;
            if p.is_file() && !is_hidden(&p) {
                files.push(p);
            }
        }
    } else if full.is_dir() {
        walk(&full, &mut files).map_err(|e| format!("cannot list {}: {e}", full.display()))?;
    } else if full.is_file() {
        files.push(full);
    } else {
        return Err(format!("no such file or directory: {}", full.display()));
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no files match {pattern:?} (looked in {})", base_dir.display()));
    }
    Ok(files)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// A part of one file read by one subtask: bytes `[start, end)` for text formats (a line belongs
/// to the split it starts in), or rows `[start, end)` for Parquet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Position of the file in the source's sorted file list.
    pub file_index: usize,
    /// The file.
    pub path: PathBuf,
    /// Start byte (text) or row (Parquet).
    pub start: u64,
    /// End byte (text) or row (Parquet), exclusive.
    pub end: u64,
    /// Position of this split in the source's order (file order, then start): the base of the
    /// row sequence used by `first` / `last`.
    pub ordinal: usize,
}

/// Cuts text files into byte ranges of about `split_bytes`.
pub fn byte_splits(files: &[PathBuf], split_bytes: u64) -> std::io::Result<Vec<Split>> {
    let mut splits = Vec::new();
    for (file_index, path) in files.iter().enumerate() {
        let len = std::fs::metadata(path)?.len();
        let n = len.div_ceil(split_bytes.max(1)).max(1);
        let step = len.div_ceil(n).max(1);
        let mut start = 0;
        loop {
            let end = (start + step).min(len);
            splits.push(Split { file_index, path: path.clone(), start, end, ordinal: splits.len() });
            start = end;
            if start >= len {
                break;
            }
        }
    }
    Ok(splits)
}

/// The splits subtask `index` of `parallelism` reads: round robin over the ordered list, so
/// neighbouring ranges of a big file go to different subtasks.
pub fn assign(splits: &[Split], index: usize, parallelism: usize) -> Vec<Split> {
    splits.iter().skip(index).step_by(parallelism.max(1)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_directory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        for f in ["a/1.csv", "a/b/2.csv", "a/.hidden.csv", "a/b/3.txt"] {
            std::fs::write(dir.path().join(f), "x\n").unwrap();
        }
        let names = |v: Vec<PathBuf>| v.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect::<Vec<_>>();
        assert_eq!(names(discover(dir.path(), "a/**/*.csv").unwrap()), ["a/1.csv", "a/b/2.csv"]);
        assert_eq!(names(discover(dir.path(), "a").unwrap()), ["a/1.csv", "a/b/2.csv", "a/b/3.txt"]);
        assert!(discover(dir.path(), "nope/*.csv").unwrap_err().contains("no files match"));
    }

    #[test]
    fn byte_splits_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, vec![b'x'; 1000]).unwrap();
        let s = byte_splits(std::slice::from_ref(&p), 300).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].start, 0);
        assert_eq!(s.last().unwrap().end, 1000);
        assert!(s.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(assign(&s, 1, 2).iter().map(|s| s.ordinal).collect::<Vec<_>>(), [1, 3]);
    }
}
