//! Diagnostics: what is wrong, where, and what would be right.

use std::fmt;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The machine is refused.
    Error,
    /// The machine is accepted, but something deserves attention.
    Warning,
}

/// One problem with a manifest, located by field path and (for files) position.
///
/// Rendered as `path: message (hint)`; the CLI prefixes `FILE:LINE:COL: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Field path such as `spec.network.gateway` or `spec.network.dns[1]`.
    pub path: String,
    /// Where the offending value (or its parent, when it is missing) starts.
    pub pos: Option<Pos>,
    /// What is wrong.
    pub message: String,
    /// What would be right.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error.
    pub fn error(path: impl Into<String>, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path: path.into(),
            pos,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning.
    pub fn warning(path: impl Into<String>, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, pos, message)
        }
    }

    /// Adds what would be right.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders as `FILE:LINE:COL: path: message (hint)`; a warning says so.
    pub fn located(&self, file: &str) -> String {
        match self.pos {
            Some(pos) => format!("{file}:{pos}: {self}"),
            None => format!("{file}: {self}"),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            one_line(f, &self.path)?;
            f.write_str(": ")?;
        }
        one_line(f, &self.message)?;
        if let Some(hint) = &self.hint {
            f.write_str(" (")?;
            one_line(f, hint)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Writes `text` with every line break turned into a space. One problem is
/// one line: CI logs, editors and `grep` rely on it, and a value the user
/// wrote (echoed in a message) must not be able to start a line of its own.
fn one_line(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    for (i, part) in text
        .split(breaks)
        .filter(|p| !p.trim().is_empty())
        .enumerate()
    {
        if i > 0 {
            f.write_str(" ")?;
        }
        f.write_str(if i > 0 { part.trim_start() } else { part })?;
    }
    Ok(())
}

/// Diagnostics of one manifest, errors first then warnings, each in document order.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| (d.severity, d.pos));
}
