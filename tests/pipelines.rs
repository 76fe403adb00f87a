//! Every example under `pipelines/` validates and runs on the bundled data.
use crate::common::{example_pipelines, run_in, stderr};

#[test]
fn every_example_pipeline_validates_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let files = example_pipelines(tmp.path());
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
