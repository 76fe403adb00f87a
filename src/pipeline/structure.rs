//! Checks on the shape of the pipeline that need no data: unique names, inputs that exist,
//! no cycles, nothing computed and thrown away.
use std::collections::{HashMap, HashSet};

use super::diagnostics::Diagnostics;
use super::spec::{DEAD_LETTER, OnError, OpKind, PipelineSpec};
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

    // Inputs must name a source or an operator (sinks produce nothing), or the dead-letter side
    // output of one with `on_error = "dead_letter"`.
    let mains = spec.sources.iter().map(|s| (&s.common, s.on_error)).chain(spec.ops.iter().map(|o| (&o.common, o.on_error)));
    let mut producers: Vec<String> = Vec::new();
    for (common, on_error) in mains {
        producers.push(common.name.value.clone());
        if on_error == OnError::DeadLetter {
            producers.push(side_output_name(&common.name.value, DEAD_LETTER));
        }
    }
    // A window's rows too late for it.
    for op in &spec.ops {
        if matches!(op.kind, OpKind::Aggregate { window: Some(_), .. }) {
            producers.push(side_output_name(&op.common.name.value, "late"));
        }
    }
    let consumers = spec
        .ops
        .iter()
        .flat_map(|o| o.inputs.iter().map(move |i| (format!("operator '{}'", o.common.name.value), i)))
        .chain(spec.sinks.iter().map(|s| (format!("sink '{}'", s.common.name.value), &s.input)));
    let mut consumed: HashSet<&str> = HashSet::new();
    for (who, input) in consumers {
        consumed.insert(input.value.as_str());
        if producers.contains(&input.value) {
            continue;
        }
        let msg = if spec.sinks.iter().any(|s| s.common.name.value == input.value) {
            format!("input '{}' is a sink, which produces no rows", input.value)
        } else if let Some((owner, tag)) = input.value.split_once('.')
            && producers.iter().any(|p| p == owner)
        {
            match tag {
                DEAD_LETTER => format!("'{owner}' has no dead-letter output: set on_error = \"dead_letter\" on it"),
                _ => format!("'{owner}' has no side output '{tag}'; side outputs: {DEAD_LETTER} (with on_error = \"dead_letter\")"),
            }
        } else {
            let hint = did_you_mean(&input.value, producers.iter().map(String::as_str)).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
            format!("input '{}' does not exist{hint}", input.value)
        };
        diags.push(input.origin.clone(), Some(who), msg);
    }
    let all = spec.sources.iter().map(|s| ("source", &s.common, s.on_error)).chain(spec.ops.iter().map(|o| ("operator", &o.common, o.on_error)));
    for (kind, c, on_error) in all {
        let who = format!("{kind} '{}'", c.name.value);
        if !consumed.contains(c.name.value.as_str()) {
            diags.push(c.name.origin.clone(), Some(who.clone()), "is not the input of any operator or sink: its rows would be thrown away");
        }
        let side = side_output_name(&c.name.value, DEAD_LETTER);
        if on_error == OnError::DeadLetter && !consumed.contains(side.as_str()) {
            diags.push(
                c.name.origin.clone(),
                Some(who),
                format!("has on_error = \"dead_letter\" but nothing reads '{side}': add a sink with input = \"{side}\""),
            );
        }
    }
    check_cycles(spec, diags);
}

/// The name by which consumers read side output `tag` of component `owner`.
pub fn side_output_name(owner: &str, tag: &str) -> String {
    format!("{owner}.{tag}")
}

/// The component that produces input `name` (itself, or the owner of a side output).
pub fn producer_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(owner, _)| owner)
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
            let Some(&j) = index.get(producer_of(&input.value)) else {
                continue;
            };
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
