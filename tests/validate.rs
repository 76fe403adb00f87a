//! `rivulet validate`: every problem of a file reported at once, each with line and column.
use crate::common::{root, run, stderr, stdout};

#[test]
fn all_mistakes_are_reported_with_positions() {
    let path = root().join("tests/validate/five_mistakes.toml");
    let out = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let p = "tests/validate/five_mistakes.toml";
    for expected in [
        format!("{p}:12:21: error: operator 'errors': invalid expression \"status >= = 500\""),
        format!("{p}:16:10: error: operator 'slow': input 'acess' does not exist (did you mean 'access'?)"),
        format!("{p}:23:39: error: operator 'by_path': unknown aggregate \"mediann\" (did you mean median?)"),
        format!("{p}:24:1: error: operator 'by_path': unknown key `parralelism` (did you mean `parallelism`?)"),
        format!("{p}:29:20: error: operator 'trimmed': column 'statuss' does not exist (did you mean 'status'?)"),
        format!("{p}:34:20: error: operator 'typed': unknown type \"integr\""),
        format!("{p}:37:9: error: operator 'errors': duplicate name: operator is already called 'errors'"),
    ] {
        assert!(err.contains(&expected), "missing:\n  {expected}\nin:\n{err}");
    }
    assert!(err.contains("7 problems in"), "{err}");
}

#[test]
fn every_problem_shows_the_line_with_a_caret() {
    let path = root().join("tests/validate/five_mistakes.toml");
    let err = stderr(&run(&["validate", path.to_str().unwrap()]));
    assert!(err.contains("    29 | select = [\"path\", \"statuss\"]\n       |                    ^"), "{err}");
}

#[test]
fn valid_files_pass_and_exit_zero() {
    let path = root().join("pipelines/errors_by_path.toml");
    let out = run(&["validate", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ok: "));
}

#[test]
fn bad_set_override_is_a_usage_error() {
    let path = root().join("pipelines/errors_by_path.toml");
    let out = run(&["validate", path.to_str().unwrap(), "--set", "op.erors.filter=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no op named 'erors' (did you mean 'errors'?)"), "{}", stderr(&out));
}

#[test]
fn a_missing_pipeline_file_is_a_usage_error() {
    let out = run(&["validate", "no/such/pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read pipeline file no/such/pipeline.toml"), "{}", stderr(&out));
}

/// A filter, projection or sort key sees one row at a time: an aggregate or window function in
/// it would give answers that change with the batch size and the parallelism.
#[test]
fn aggregates_where_rows_are_handled_one_by_one_are_errors() {
    let path = root().join("pipelines/errors_by_path.toml");
    for set in ["op.errors.filter=status > avg(status)", "op.errors.filter=count(*) > 1", "op.errors.filter=status > max(status) OVER (PARTITION BY path)"] {
        let out = run(&["validate", path.to_str().unwrap(), "--set", set]);
        assert_eq!(out.status.code(), Some(2), "{set}");
        let err = stderr(&out);
        assert!(err.contains("aggregate and window functions (max, count, OVER ...) are not allowed here"), "{set}: {err}");
    }
    let out = run(&["validate", path.to_str().unwrap(), "--set", "op.errors.filter=status IN (500, 503)"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
