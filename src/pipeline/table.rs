//! Reading one table of the pipeline file: typed getters that report wrong types, and a final
//! pass that reports every key nobody asked for.
use super::diagnostics::Diagnostics;
use super::document::{Key, Node, Origin, Value};
use super::spec::{Chain, Common, Located};
use super::suggest::did_you_mean;

/// Reads one table's keys, remembering which were used so the rest can be reported.
pub struct TableReader<'a> {
    pub(super) entries: &'a [(Key, Node)],
    pub(super) used: Vec<bool>,
    pub(super) component: Option<String>,
    pub(super) origin: Origin,
}

impl<'a> TableReader<'a> {
    pub fn new(node: &'a Node, component: Option<String>, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Table(entries) => Some(TableReader { entries, used: vec![false; entries.len()], component, origin: node.origin.clone() }),
            other => {
                diags.push(node.origin.clone(), component, format!("expected a table, found {}", other.kind()));
                None
            }
        }
    }

    pub fn take(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    pub fn err(&self, diags: &mut Diagnostics, origin: &Origin, msg: impl Into<String>) {
        diags.push(origin.clone(), self.component.clone(), msg);
    }

    pub fn string(&mut self, key: &str, diags: &mut Diagnostics) -> Option<Located<String>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Str(s) => Some(Located::new(s.clone(), node.origin.clone())),
            other => {
                self.err(diags, &node.origin, format!("`{key}` must be a string, found {}", other.kind()));
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &str, diags: &mut Diagnostics) -> Option<Located<String>> {
        if self.entries.iter().any(|(k, _)| k.name == key) {
            self.string(key, diags)
        } else {
            self.err(diags, &self.origin.clone(), format!("missing required key `{key}`"));
            None
        }
    }

    pub fn bool(&mut self, key: &str, default: bool, diags: &mut Diagnostics) -> bool {
        match self.take(key) {
            None => default,
            Some(Node { value: Value::Bool(b), .. }) => *b,
            Some(n) => {
                self.err(diags, &n.origin, format!("`{key}` must be true or false, found {}", n.value.kind()));
                default
            }
        }
    }

    pub fn positive(&mut self, key: &str, diags: &mut Diagnostics) -> Option<Located<usize>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Int(i) if *i >= 1 => Some(Located::new(*i as usize, node.origin.clone())),
            other => {
                self.err(diags, &node.origin, format!("`{key}` must be a whole number >= 1, found {other}"));
                None
            }
        }
    }

    /// The string items of the array `node` (the value of `key`); other items are reported.
    pub fn strings_of(&self, key: &str, node: &Node, diags: &mut Diagnostics) -> Vec<Located<String>> {
        let Value::Array(items) = &node.value else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|n| match &n.value {
                Value::Str(s) => Some(Located::new(s.clone(), n.origin.clone())),
                other => {
                    self.err(diags, &n.origin, format!("`{key}` items must be strings, found {}", other.kind()));
                    None
                }
            })
            .collect()
    }

    pub fn string_list(&mut self, key: &str, diags: &mut Diagnostics) -> Option<Vec<Located<String>>> {
        let node = self.take(key)?;
        match &node.value {
            Value::Str(s) => Some(vec![Located::new(s.clone(), node.origin.clone())]),
            Value::Array(_) => Some(self.strings_of(key, node, diags)),
            other => {
                self.err(diags, &node.origin, format!("`{key}` must be a string or an array of strings, found {}", other.kind()));
                None
            }
        }
    }

    /// A table of `name = "string"` pairs, in file order.
    pub fn string_map(&mut self, key: &str, diags: &mut Diagnostics) -> Option<Vec<(Located<String>, Located<String>)>> {
        let node = self.take(key)?;
        let Value::Table(entries) = &node.value else {
            self.err(diags, &node.origin, format!("`{key}` must be a table of name = \"value\", found {}", node.value.kind()));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match &v.value {
                Value::Str(s) => out.push((Located::new(k.name.clone(), k.origin.clone()), Located::new(s.clone(), v.origin.clone()))),
                other => self.err(diags, &v.origin, format!("`{key}.{}` must be a string, found {}", k.name, other.kind())),
            }
        }
        Some(out)
    }

    pub fn common(&mut self, name: Located<String>, diags: &mut Diagnostics) -> Common {
        let parallelism = self.positive("parallelism", diags);
        let chain = match self.string("chain", diags) {
            None => Chain::Allowed,
            Some(c) => match c.value.as_str() {
                "new" => Chain::New,
                "never" => Chain::Never,
                "allowed" | "default" => Chain::Allowed,
                other => {
                    self.err(diags, &c.origin, format!("`chain` must be \"new\", \"never\" or \"allowed\", found {other:?}"));
                    Chain::Allowed
                }
            },
        };
        let slot_sharing_group = self.string("slot_sharing_group", diags).map_or_else(|| "default".to_string(), |s| s.value);
        Common { name, parallelism, chain, slot_sharing_group, origin: self.origin.clone() }
    }

    /// Reports every key that was not read, suggesting the nearest allowed one.
    pub fn finish(&self, allowed: &[&str], diags: &mut Diagnostics) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if !used {
                let hint = did_you_mean(&key.name, allowed.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                diags.push(key.origin.clone(), self.component.clone(), format!("unknown key `{}`{hint}; allowed keys: {}", key.name, allowed.join(", ")));
            }
        }
    }
}
