//! Loading pipeline text: parse (TOML or YAML), apply `--set` overrides, read the spec, and run
//! the structural checks. Every problem found is returned together; `plan::compile` adds the
//! checks that need schemas.
use std::path::PathBuf;

use super::diagnostics::Diagnostics;
use super::document::{Key, Node, Origin, Value, parse_override_value, parse_toml, parse_yaml};
use super::spec::{PipelineSpec, read_spec};
use super::structure::check_structure;
use crate::error::{Error, Result};

/// A `--set KEY=VALUE` override: `parallelism=4`, `source.NAME.path=...`, `op.NAME.filter=...`.
#[derive(Clone, Debug)]
pub struct Override {
    /// Dotted key path.
    pub key: String,
    /// Raw value (parsed as TOML when possible, else taken as a string).
    pub value: String,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (key, value) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, found {s:?}"))?;
        Ok(Override { key: key.trim().to_string(), value: value.to_string() })
    }
}

/// Parses pipeline text and reads the spec. Returns the best-effort spec and every problem found
/// (path and text of the diagnostics are left for the caller to fill in).
pub fn load_text(text: &str, yaml: bool, base_dir: PathBuf, overrides: &[Override]) -> Result<(PipelineSpec, Diagnostics)> {
    let mut root = match if yaml { parse_yaml(text) } else { parse_toml(text) } {
        Ok(root) => root,
        Err(diags) => {
            return Ok((read_spec(&Node { value: Value::Table(vec![]), origin: Origin::at(1, 1) }, base_dir, &mut Diagnostics::default()), diags));
        }
    };
    for o in overrides {
        apply_override(&mut root, o)?;
    }
    let mut diags = Diagnostics::default();
    let spec = read_spec(&root, base_dir, &mut diags);
    check_structure(&spec, &mut diags);
    diags.sort();
    Ok((spec, diags))
}

/// Sets one dotted key in the document tree. `source.NAME.key` finds the component by name.
fn apply_override(root: &mut Node, o: &Override) -> Result<()> {
    let origin = Origin::CommandLine(format!("{}={}", o.key, o.value));
    let parts: Vec<&str> = o.key.split('.').collect();
    let usage = |msg: String| Error::Usage(format!("--set {}={}: {msg}", o.key, o.value));
    let value = parse_override_value(&o.value, origin.clone());
    let Value::Table(top) = &mut root.value else {
        return Err(usage("the pipeline file is not a table".into()));
    };
    let (table, key) = match parts.as_slice() {
        [key] => (top, *key),
        [kind @ ("source" | "op" | "sink"), name, key] => {
            let Some((_, Node { value: Value::Array(items), .. })) = top.iter_mut().find(|(k, _)| k.name == *kind) else {
                return Err(usage(format!("the pipeline has no [[{kind}]]")));
            };
            let names: Vec<String> = items.iter().filter_map(|n| table_str(n, "name")).collect();
            let Some(item) = items.iter_mut().find(|n| table_str(n, "name").as_deref() == Some(*name)) else {
                let hint = super::did_you_mean(name, names.iter().map(String::as_str)).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
                return Err(usage(format!("no {kind} named '{name}'{hint}; names: {}", names.join(", "))));
            };
            let Value::Table(t) = &mut item.value else {
                return Err(usage(format!("{kind} '{name}' is not a table")));
            };
            (t, *key)
        }
        _ => {
            return Err(usage("expected KEY, source.NAME.KEY, op.NAME.KEY or sink.NAME.KEY".into()));
        }
    };
    match table.iter_mut().find(|(k, _)| k.name == key) {
        Some((_, v)) => *v = value,
        None => table.push((Key { name: key.to_string(), origin }, value)),
    }
    Ok(())
}

fn table_str(node: &Node, key: &str) -> Option<String> {
    match &node.value {
        Value::Table(t) => t.iter().find(|(k, _)| k.name == key).and_then(|(_, v)| match &v.value {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPE: &str = r#"
name = "t"
[[source]]
name = "a"
format = "csv"
path = "x.csv"
[[op]]
name = "f"
input = "a"
filter = "x > 1"
[[sink]]
input = "f"
format = "stdout"
"#;

    #[test]
    fn override_replaces_operator_key() {
        let o: Override = "op.f.filter=x > 2".parse().unwrap();
        let (spec, diags) = load_text(PIPE, false, PathBuf::new(), &[o]).unwrap();
        assert!(diags.is_empty(), "{diags}");
        match &spec.ops[0].kind {
            super::super::OpKind::Filter(f) => assert_eq!(f.value, "x > 2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_inside_an_override_point_at_the_command_line() {
        let o: Override = "op.f.filter={ bad = 1 }".parse().unwrap();
        let (_, diags) = load_text(PIPE, false, PathBuf::new(), &[o]).unwrap();
        assert!(matches!(diags.items[0].origin, Origin::CommandLine(_)), "{diags}");
        assert!(diags.items[0].message.contains("`filter` must be a string, found a table"), "{diags}");
    }

    #[test]
    fn override_of_unknown_component_is_a_usage_error() {
        let o: Override = "op.g.filter=x".parse().unwrap();
        let e = load_text(PIPE, false, PathBuf::new(), &[o]).unwrap_err();
        assert!(e.to_string().contains("no op named 'g'"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn unknown_keys_are_all_reported() {
        let text = PIPE.replace("filter = \"x > 1\"", "filter = \"x > 1\"\nfilterr = 1\nbogus = 2");
        let (_, diags) = load_text(&text, false, PathBuf::new(), &[]).unwrap();
        let msgs: Vec<_> = diags.items.iter().map(|d| d.message.clone()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("unknown key `filterr` (did you mean `filter`?)"), "{msgs:?}");
    }
}
