//! TOML text → `model::Recipe`, with "file: line N: message" errors and hints.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{RecipeError, line_of};
use super::model::Recipe;

/// The recipe text and its path, for locating errors.
#[derive(Debug, Clone, Copy)]
pub struct Src<'a> {
    /// The recipe file, as given.
    pub path: &'a Path,
    /// Its text.
    pub text: &'a str,
}

impl Src<'_> {
    /// An error at a byte span of the text.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> RecipeError {
        RecipeError::new(self.path, Some(line_of(self.text, span.start)), message)
    }
}

/// Parses a recipe text. Pure.
pub fn parse(src: Src<'_>) -> Result<Recipe, RecipeError> {
    toml::from_str::<Recipe>(src.text).map_err(|e| toml_error(src, &e))
}

/// Deserialises one `[[provision]]` table into its typed step.
pub fn step<T: DeserializeOwned>(src: Src<'_>, table: &toml::Spanned<toml::Table>, index: usize) -> Result<T, RecipeError> {
    typed(src, table, "provision", index)
}

/// Deserialises the `index`-th (0-based) `[[section]]` table into the struct its `type` chose.
pub fn typed<T: DeserializeOwned>(src: Src<'_>, table: &toml::Spanned<toml::Table>, section: &str, index: usize) -> Result<T, RecipeError> {
    // `type` chose the struct; the struct itself does not repeat it.
    let mut body = table.get_ref().clone();
    body.remove("type");
    toml::Value::Table(body).try_into::<T>().map_err(|e| {
        let kind = table.get_ref().get("type").and_then(|v| v.as_str()).unwrap_or("?");
        let (message, hint) = explain(e.message());
        let at = key_span(src.text, table.span(), e.message()).unwrap_or(table.span());
        let err = src.at(at, format!("[[{section}]] #{} (type = \"{kind}\"): {message}", index + 1));
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    })
}

/// The span of the line where the key named in "unknown field `k`" / "invalid type … for key `k`"
/// is set, inside `within`. Pure.
fn key_span(text: &str, within: Range<usize>, message: &str) -> Option<Range<usize>> {
    let key = message.split('`').nth(1)?;
    // The table's span may cover only its header: scan until the next header.
    let region = text.get(within.start..)?;
    let mut offset = within.start;
    for (i, line) in region.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            break;
        }
        if t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}

/// A TOML parse error as a recipe error at its line.
pub fn toml_error(src: Src<'_>, e: &toml::de::Error) -> RecipeError {
    let line = e.span().map(|s| line_of(src.text, s.start));
    let (message, hint) = explain(e.message());
    let err = RecipeError::new(src.path, line, message);
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

/// Turns a serde/toml message into ours plus a hint on what to do.
fn explain(message: &str) -> (String, Option<String>) {
    let msg = message.trim().to_string();
    let hint = if msg.starts_with("unknown field") {
        Some("remove or rename the key; the README's recipe reference lists every key".to_string())
    } else if msg.starts_with("missing field") {
        Some("add the key; the README's recipe reference shows an example".to_string())
    } else if msg.starts_with("invalid type") {
        Some("check the value's type: strings are quoted, lists use [ ], tables use { } or [section]".to_string())
    } else if msg.contains("unknown variant") {
        Some("use one of the listed values".to_string())
    } else {
        None
    };
    (msg, hint)
}

/// The directory relative paths in a recipe are resolved against.
pub fn recipe_dir(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Recipe, RecipeError> {
        parse(Src { path: Path::new("r.toml"), text })
    }

    #[test]
    fn unknown_key_names_line_and_hint() {
        let e = p("[image]\nname = \"a\"\ncolour = 1\n[source]\nurl = \"x\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().starts_with("r.toml: line 3: unknown field `colour`"), "{e}");
        assert!(e.hint.is_some());
    }

    #[test]
    fn wrong_type_names_line() {
        let e = p("[image]\nname = 5\n[source]\nurl = \"x\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn missing_section() {
        let e = p("[image]\nname = \"a\"\n").unwrap_err();
        assert!(e.message.contains("missing field `source`"), "{e}");
    }

    #[test]
    fn minimal_parses() {
        let r =
            p("[image]\nname = \"a\"\n[source]\nurl = \"x.img\"\nsha256 = \"00\"\n[[provision]]\ntype = \"shell\"\ninline = [\"true\"]\n")
                .unwrap();
        assert_eq!(r.provision.len(), 1);
    }
}
