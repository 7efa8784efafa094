//! Recipe errors: "recipes/base.toml: line 12: message" plus what to do.

use std::fmt;
use std::path::PathBuf;

/// A recipe problem; always exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeError {
    /// The recipe file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl RecipeError {
    /// A new error at `line` (if known).
    pub fn new(path: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self { path: path.into(), line, message: message.into(), hint: None }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ": line {line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RecipeError {}

/// 1-based line of byte offset `at` in `text`. Pure.
pub fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len())).map_or(1, |s| s.bytes().filter(|b| *b == b'\n').count() + 1)
}
