//! Finding a source's files (a file, a directory, or a glob with `**`) and cutting them into
//! splits that subtasks read independently.
use crate::exec::dead_letter::Rejection;
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

/// The root directory of a source path: the directory itself, or a glob's directory part
/// before its first pattern character.
pub fn root_of(base_dir: &Path, pattern: &str) -> PathBuf {
    let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base_dir.join(pattern) };
    if !pattern.contains(['*', '?', '[']) {
        return full;
    }
    let mut root = PathBuf::new();
    for part in full.components() {
        if part.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        root.push(part);
    }
    root
}

/// Partition values of one file, in key order (None: Hive's null marker).
pub type PartitionValues = Vec<Option<String>>;

/// Hive-style partition directories (`year=2026/month=11/part.csv`) between `root` and each
/// file: the keys, and for each file its values (None for Hive's null marker). None when the
/// files do not all have the same keys.
pub fn hive_partitions(root: &Path, files: &[PathBuf]) -> Option<(Vec<String>, Vec<PartitionValues>)> {
    let mut keys: Option<Vec<String>> = None;
    let mut values = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).ok()?;
        let mut k = Vec::new();
        let mut v = Vec::new();
        for dir in rel.parent()?.components() {
            let dir = dir.as_os_str().to_string_lossy();
            let (key, value) = dir.split_once('=')?;
            k.push(key.to_string());
            v.push((value != "__HIVE_DEFAULT_PARTITION__").then(|| percent_decode(value)));
        }
        match &keys {
            None => keys = Some(k),
            Some(existing) if *existing != k => return None,
            Some(_) => {}
        }
        values.push(v);
    }
    keys.filter(|k| !k.is_empty()).map(|k| (k, values))
}

/// Undoes the `%XX` escapes of partition values.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    /// The file cannot be read as the source's (corrupt, another schema): its reader emits this
    /// rejection instead of rows, when the source does not fail on errors.
    pub problem: Option<Box<crate::exec::dead_letter::Rejection>>,
}

/// Cuts text files into byte ranges of about `split_bytes`. A file whose size cannot be read
/// is passed to `unreadable`, which returns the error to stop at, or a rejection for the file's
/// one split.
pub fn byte_splits<E>(files: &[PathBuf], split_bytes: u64, unreadable: impl Fn(&Path, std::io::Error) -> Result<Rejection, E>) -> Result<Vec<Split>, E> {
    let mut splits = Vec::new();
    for (file_index, path) in files.iter().enumerate() {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => {
                let problem = Some(Box::new(unreadable(path, e)?));
                splits.push(Split { file_index, path: path.clone(), start: 0, end: 0, ordinal: splits.len(), problem });
                continue;
            }
        };
        let n = len.div_ceil(split_bytes.max(1)).max(1);
        let step = len.div_ceil(n).max(1);
        let mut start = 0;
        loop {
            let end = (start + step).min(len);
            splits.push(Split { file_index, path: path.clone(), start, end, ordinal: splits.len(), problem: None });
            start = end;
            if start >= len {
                break;
            }
        }
    }
    Ok(splits)
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
    fn hive_directories_become_columns() {
        let root = Path::new("/d");
        let files = ["/d/year=2026/m=1/a.csv", "/d/year=2025/m=%2F/b.csv", "/d/year=__HIVE_DEFAULT_PARTITION__/m=3/c.csv"].map(PathBuf::from);
        let (keys, values) = hive_partitions(root, &files).unwrap();
        assert_eq!(keys, ["year", "m"]);
        assert_eq!(values[1], [Some("2025".to_string()), Some("/".to_string())]);
        assert_eq!(values[2][0], None);
        assert!(hive_partitions(root, &[PathBuf::from("/d/a.csv")]).is_none());
        assert_eq!(root_of(Path::new("/base"), "data/**/*.csv"), PathBuf::from("/base/data"));
    }

    #[test]
    fn byte_splits_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, vec![b'x'; 1000]).unwrap();
        let s = byte_splits(std::slice::from_ref(&p), 300, |_, e| Err(e)).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].start, 0);
        assert_eq!(s.last().unwrap().end, 1000);
        assert!(s.windows(2).all(|w| w[0].end == w[1].start));
    }
}
