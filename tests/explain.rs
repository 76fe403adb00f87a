//! Snapshots of `explain` for all four graphs and every format, including a chain broken for
//! every reason; DOT output is rendered with Graphviz.
use crate::common::{root, run, stderr, stdout};

fn explain(pipeline: &str, args: &[&str]) -> String {
    let path = root().join(pipeline);
    let mut all = vec!["explain", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn text_snapshots_of_the_four_graphs() {
    for graph in ["logical", "job", "execution", "physical"] {
        let text = explain("tests/explain/chain_breaks.toml", &["--graph", graph, "-p", "2"]);
        insta::assert_snapshot!(format!("chain_breaks_{graph}"), text);
    }
}

#[test]
fn every_chain_break_states_its_reason() {
    let text = explain("tests/explain/chain_breaks.toml", &["--graph", "job", "-p", "2"]);
    for reason in [
        "chain break: chain = new on 'slow'",
        "chain break: parallelism 2 -> 3",
        "chain break: slot sharing group 'default' -> 'heavy'",
        "chain break: chain = never on 'alone'",
        "chain break: rebalance exchange",
        "chain break: hash exchange on [path]",
        "chain break: 'access' is chained to 'trimmed' already",
        "task 0 (access, mid-chain) -> task 7 (by_status/partial)",
        "chain break: broadcast exchange",
    ] {
        assert!(text.contains(reason), "missing {reason:?} in:\n{text}");
    }
}

#[test]
fn a_filter_on_partition_columns_prunes_files_before_reading() {
    let text = explain("tests/golden/hive_partitions_pruned/pipeline.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains("optimizer: partitions pruned: 4/9 files kept"), "{text}");
}

/// A lone filter before a partial aggregate kept in a hash table runs inside it; one with
/// `on_error` other than "fail" (it must count its rejections) stays an operator of its own.
#[test]
fn a_filter_run_by_the_aggregate_after_it_is_shown() {
    let shown = "filter 'errors' evaluated by 'by_path/partial' as it folds the rows";
    let text = explain("pipelines/errors_by_path.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains(shown), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = std::fs::read_to_string(crate::common::root().join("pipelines/errors_by_path.toml")).unwrap();
    let skipping = pipeline.replacen("filter = ", "on_error = \"skip\"\nfilter = ", 1);
    assert_ne!(skipping, pipeline);
    std::fs::write(tmp.path().join("p.toml"), skipping).unwrap();
    let data = format!("source.access.path={}/data/access/*.csv", crate::common::root().display());
    let o = crate::common::run_in(tmp.path(), &["explain", "p.toml", "--graph", "job", "-p", "2", "--set", &data]);
    let text = crate::common::stdout(&o);
    assert!(text.contains("by_path/partial") && !text.contains(shown), "{text}{}", crate::common::stderr(&o));
}

/// String keys of a hash aggregate are read as dictionary codes from Parquet, unless something
/// before the aggregate (or an aggregate's argument) reads them as strings.
#[test]
fn string_keys_read_as_dictionary_codes_are_shown() {
    let case = "tests/golden/agg_string_keys_parquet_codes";
    let text = explain(&format!("{case}/pipeline.toml"), &["--graph", "job", "-p", "2"]);
    assert!(text.contains("optimizer: string keys read as dictionary codes: status, kind (for 'per_status/partial'"), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = std::fs::read_to_string(root().join(case).join("pipeline.toml")).unwrap();
    let reading = pipeline.replacen("filter = \"amount > -5\"", "filter = \"amount > -5 AND kind <> 'x'\"", 1).replacen("count(note)", "count(status)", 1);
    assert!(reading.contains("kind <> 'x'") && reading.contains("count(status)"));
    std::fs::write(tmp.path().join("p.toml"), reading).unwrap();
    let data = format!("source.events.path={}/{case}/input/*.parquet", root().display());
    let o = crate::common::run_in(tmp.path(), &["explain", "p.toml", "--graph", "job", "-p", "2", "--set", &data]);
    let text = stdout(&o);
    assert!(text.contains("state: hash table") && !text.contains("dictionary codes"), "{text}{}", stderr(&o));
}

#[test]
fn a_join_that_reads_its_right_side_first_runs_in_its_left_inputs_task() {
    let text = explain("tests/golden/join_inner_auto/pipeline.toml", &["--graph", "job", "-p", "2"]);
    // The right side's task is numbered first: every exchange goes to a later task.
    assert!(text.contains("task 1  p=2  slot group 'default'  orders -> joined"), "{text}");
    assert!(text.contains("task 0 (customers) -> task 1 (joined, in the chain)  broadcast  chain break: broadcast exchange"), "{text}");
    assert!(text.contains("chained with its left input: its right input (task 0) is read to the end before the task reads its own"), "{text}");
    // A right join gathers its whole left side (hash-partitioned): it stays a task of its own.
    let text = explain("tests/golden/join_right_auto/pipeline.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains("task 2  p=2  slot group 'default'  joined\n") && !text.contains("in the chain"), "{text}");
}

#[test]
fn a_union_breaks_the_chain_for_its_inputs() {
    let text = explain("tests/golden/union_by_name/pipeline.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains("chain break: 'both' has 2 inputs"), "{text}");
}

#[test]
fn a_dead_letter_output_is_a_side_output_that_leaves_the_main_chain_whole() {
    let text = explain("tests/golden/dead_letter_regex_source/pipeline.toml", &["--graph", "job", "-p", "2"]);
    // The source still chains into the partial aggregate; the dead letters leave by their own edge.
    assert!(text.contains("log -> by_status/partial"), "{text}");
    assert!(text.contains("chain break: side output 'dead_letter' of 'log'"), "{text}");
    assert!(text.contains("log.dead_letter  side output dead_letter  rows 'log' rejects"), "{text}");
}

#[test]
fn other_formats_snapshots() {
    for format in ["dot", "mermaid", "json"] {
        let text = explain("pipelines/errors_by_path.toml", &["--format", format, "-p", "2"]);
        insta::assert_snapshot!(format!("errors_by_path_{format}"), text);
    }
}

#[test]
fn json_is_valid_and_counts_slots() {
    let text = explain("tests/explain/chain_breaks.toml", &["--format", "json", "-p", "2"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // 'default' group: widest task ('seconds') has 3 subtasks; 'heavy' group: 3.
    assert_eq!(v["physical"]["slots_needed"], 6);
    assert_eq!(v["logical"]["nodes"].as_array().unwrap().len(), 12);
}

#[test]
fn dot_renders_with_graphviz() {
    let dot = explain("tests/explain/chain_breaks.toml", &["--format", "dot", "-p", "2"]);
    let dir = tempfile::tempdir().unwrap();
    // One file per digraph: `dot` renders each.
    let file = dir.path().join("g.dot");
    std::fs::write(&file, &dot).unwrap();
    let out = std::process::Command::new("dot").args(["-Tsvg", "-O"]).arg(&file).output().expect("graphviz `dot` is installed (.ci/run installs it)");
    assert!(out.status.success(), "dot failed: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "svg")).count();
    assert!(rendered >= 1);
}

/// Runs the real Mermaid parser (scripts/mermaid-check, installed by scripts/test.sh) on files.
fn mermaid_check(files: &[std::path::PathBuf]) {
    let check = root().join("scripts/mermaid-check/check.mjs");
    let out = std::process::Command::new("node").arg(&check).args(files).output().expect("node runs (.ci/run installs the Mermaid checker)");
    assert!(out.status.success(), "mermaid rejected rivulet's output:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mermaid_parses_with_the_real_parser() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for pipeline in ["tests/explain/chain_breaks.toml", "pipelines/errors_by_path.toml"] {
        for graph in ["logical", "job", "execution", "physical"] {
            let text = explain(pipeline, &["--graph", graph, "--format", "mermaid", "-p", "2"]);
            let file = dir.path().join(format!("{}_{graph}.mmd", files.len()));
            std::fs::write(&file, text).unwrap();
            files.push(file);
        }
    }
    // `--graph all` prints one fenced block per graph, each a valid diagram on its own.
    let all = explain("pipelines/errors_by_path.toml", &["--format", "mermaid", "-p", "2"]);
    let blocks: Vec<&str> = all.split("```mermaid\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 4, "{all}");
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.path().join(format!("all_{i}.mmd"));
        std::fs::write(&file, block).unwrap();
        files.push(file);
    }
    mermaid_check(&files);
}

#[test]
fn a_join_reads_its_right_input_first_unless_the_left_inputs_producer_also_feeds_the_right() {
    let note = "right input read first: the left input waits upstream instead of being buffered";
    let text = explain("tests/golden/join_inner_hash/pipeline.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains(note), "{text}");
    // One source feeds both inputs: holding the left back would stall the right side too.
    let text = explain("tests/golden/join_self_diamond/pipeline.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains("joined  join  inner") && !text.contains(note), "{text}");
    // A join of an input with itself takes it over both edges.
    let text = explain("tests/golden/join_same_input_twice/pipeline.toml", &["--graph", "job", "-p", "2"]);
    assert!(text.contains("pairs  join  inner") && !text.contains(note), "{text}");
}
