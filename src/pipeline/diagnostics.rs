//! Problems found in a pipeline file, each pointing at a place, reported all at once.
use std::fmt;
use std::path::PathBuf;

use super::document::Origin;

/// One problem in a pipeline file.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// Where the problem is.
    pub origin: Origin,
    /// The component it concerns, e.g. `operator 'errors'`.
    pub component: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
    /// The problem is in the input data (found while sampling it), not in the pipeline file.
    pub data: bool,
    /// For a problem in the data: its kind (`field_count`, ...), shown as `error[kind]`.
    pub kind: Option<&'static str>,
}

impl Diagnostic {
    /// A new diagnostic about the pipeline file.
    pub fn new(origin: Origin, component: Option<String>, message: impl Into<String>) -> Self {
        Diagnostic { origin, component, message: message.into(), data: false, kind: None }
    }
}

/// Every problem found in one pipeline file, with the file's text to show the lines.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its text, for quoting the offending line.
    pub text: String,
    /// The problems, in file order once [`Diagnostics::sort`] ran.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// A list holding one problem (the path and text are filled in by the loader).
    pub fn one(d: Diagnostic) -> Self {
        Diagnostics { items: vec![d], ..Default::default() }
    }

    /// Adds a problem.
    pub fn push(&mut self, origin: Origin, component: Option<String>, message: impl Into<String>) {
        self.items.push(Diagnostic::new(origin, component, message));
    }

    /// Adds a problem found in the input data while planning (e.g. a ragged row in the sample).
    pub fn push_data(&mut self, origin: Origin, component: Option<String>, kind: Option<&'static str>, message: impl Into<String>) {
        self.items.push(Diagnostic { data: true, kind, ..Diagnostic::new(origin, component, message) });
    }

    /// True when every problem is in the input data rather than in the pipeline file.
    pub fn all_data(&self) -> bool {
        !self.items.is_empty() && self.items.iter().all(|d| d.data)
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Orders problems by place in the file; command-line problems come first.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| match &d.origin {
            Origin::CommandLine(_) => (0, 0, 0),
            Origin::File { line, column } => (1, *line, *column),
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let what = match &d.component {
                Some(c) => format!("{c}: {}", d.message),
                None => d.message.clone(),
            };
            let error = d.kind.map_or_else(|| "error".to_string(), |k| format!("error[{k}]"));
            match &d.origin {
                Origin::CommandLine(set) => write!(f, "--set {set}: {error}: {what}")?,
                Origin::File { line, column } => {
                    write!(f, "{path}:{line}:{column}: {error}: {what}")?;
                    if let Some(text) = self.text.lines().nth(line.saturating_sub(1)) {
                        let text = text.replace('\t', " ");
                        let pad = column.saturating_sub(1).min(text.chars().count());
                        write!(f, "\n  {line:>4} | {text}\n       | {}^", " ".repeat(pad))?;
                    }
                }
            }
        }
        if self.items.len() > 1 {
            write!(f, "\n{} problems in {path}", self.items.len())?;
        }
        Ok(())
    }
}
