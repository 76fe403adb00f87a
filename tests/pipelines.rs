//! Every example under `pipelines/` validates and runs on the bundled data.
use crate::common::{copy_dir, root, run_in, stderr};

#[test]
fn every_example_pipeline_validates_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("data"), &tmp.path().join("data"));
    copy_dir(&root().join("pipelines"), &tmp.path().join("pipelines"));
    let mut files: Vec<_> = std::fs::read_dir(tmp.path().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("toml" | "yaml" | "yml")))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected at least 4 example pipelines");
    for f in files {
        let name = f.to_str().unwrap();
        let v = run_in(tmp.path(), &["validate", name]);
        assert!(v.status.success(), "{name}: {}", stderr(&v));
        for p in ["1", "4"] {
            let r = run_in(tmp.path(), &["run", name, "-q", "-p", p]);
            assert!(r.status.success(), "{name} -p {p}: {}", stderr(&r));
        }
    }
}
