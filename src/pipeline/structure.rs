//! Checks on the shape of the pipeline that need no data: unique names, inputs that exist,
//! no cycles, nothing computed and thrown away.
use std::collections::{HashMap, HashSet};

use super::diagnostics::Diagnostics;
use super::spec::PipelineSpec;
use super::suggest::did_you_mean;

/// Adds every structural problem of `spec` to `diags`.
pub fn check_structure(spec: &PipelineSpec, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, String> = HashMap::new();
    let all = spec
        .sources
        .iter()
        .map(|s| ("source", &s.common))
        .chain(spec.ops.iter().map(|o| ("operator", &o.common)))
        .chain(spec.sinks.iter().map(|s| ("sink", &s.common)));
    for (kind, c) in all {
        let name = c.name.value.as_str();
        if let Some(first) = seen.get(name) {
            diags.push(c.name.origin.clone(), Some(format!("{kind} '{name}'")), format!("duplicate name: {first} is already called '{name}'"));
        } else {
            seen.insert(name, kind.to_string());
        }
    }

    // Inputs must name a source or an operator (sinks produce nothing).
    let producers: Vec<&str> =
        spec.sources.iter().map(|s| s.common.name.value.as_str()).chain(spec.ops.iter().map(|o| o.common.name.value.as_str())).collect();
    let consumers = spec
        .ops
        .iter()
        .flat_map(|o| o.inputs.iter().map(move |i| (format!("operator '{}'", o.common.name.value), i)))
        .chain(spec.sinks.iter().map(|s| (format!("sink '{}'", s.common.name.value), &s.input)));
    let mut consumed: HashSet<&str> = HashSet::new();
    for (who, input) in consumers {
        consumed.insert(input.value.as_str());
        if producers.contains(&input.value.as_str()) {
            continue;
        }
        let msg = if spec.sinks.iter().any(|s| s.common.name.value == input.value) {
            format!("input '{}' is a sink, which produces no rows", input.value)
        } else {
            let hint = did_you_mean(&input.value, producers.iter().copied()).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
            format!("input '{}' does not exist{hint}", input.value)
        };
        diags.push(input.origin.clone(), Some(who), msg);
    }
    for (kind, c) in spec.sources.iter().map(|s| ("source", &s.common)).chain(spec.ops.iter().map(|o| ("operator", &o.common))) {
        if !consumed.contains(c.name.value.as_str()) {
            diags.push(c.name.origin.clone(), Some(format!("{kind} '{}'", c.name.value)), "is not the input of any operator or sink: its rows would be thrown away");
        }
    }
    check_cycles(spec, diags);
}

/// Reports each cycle among operators once, at the operator where it was found.
fn check_cycles(spec: &PipelineSpec, diags: &mut Diagnostics) {
    let index: HashMap<&str, usize> = spec.ops.iter().enumerate().map(|(i, o)| (o.common.name.value.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; spec.ops.len()];
    fn visit(i: usize, spec: &PipelineSpec, index: &HashMap<&str, usize>, state: &mut [u8], path: &mut Vec<usize>, diags: &mut Diagnostics) {
        state[i] = 1;
        path.push(i);
        for input in &spec.ops[i].inputs {
            let Some(&j) = index.get(input.value.as_str()) else { continue };
            if state[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut names: Vec<&str> = path[start..].iter().map(|&p| spec.ops[p].common.name.value.as_str()).collect();
                names.push(&spec.ops[j].common.name.value);
                diags.push(input.origin.clone(), Some(format!("operator '{}'", spec.ops[i].common.name.value)), format!("cycle: {}", names.join(" <- ")));
            } else if state[j] == 0 {
                visit(j, spec, index, state, path, diags);
            }
        }
        path.pop();
        state[i] = 2;
    }
    for i in 0..spec.ops.len() {
        if state[i] == 0 {
            visit(i, spec, &index, &mut state, &mut Vec::new(), diags);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::pipeline::load_text;

    fn problems(text: &str) -> Vec<String> {
        let (_, d) = load_text(text, false, PathBuf::new(), &[]).unwrap();
        d.items.iter().map(|d| format!("{}: {}", d.component.clone().unwrap_or_default(), d.message)).collect()
    }

    #[test]
    fn cycles_and_missing_inputs_are_reported() {
        let p = problems(
            r#"name = "c"
[[source]]
name = "s"
format = "csv"
path = "x"
[[op]]
name = "a"
input = ["s", "b"]
filter = "x"
[[op]]
name = "b"
input = "a"
filter = "x"
[[sink]]
input = "bb"
format = "stdout"
"#,
        );
        assert!(p.iter().any(|m| m.contains("cycle: a <- b <- a")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("input 'bb' does not exist (did you mean 'b'?)")), "{p:?}");
    }
}
