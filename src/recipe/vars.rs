//! Recipe variables: `"${name}"` in any string value of a recipe, replaced before the recipe is
//! parsed. Values come from `[vars]` defaults, a `[matrix]` entry, `IMGFORGE_VAR_<NAME>`, and
//! `--var NAME=VALUE` (each overriding the one before); `git.commit` and `git.tag` are always
//! there. `$${` writes a literal `${`.
//!
//! The substitution works on the text, inside TOML strings only (never in comments, keys or
//! bare values), and keeps every line where it was: errors found after it still name the line
//! the user wrote. In a basic string (`"…"`) the value is escaped; in a literal string (`'…'`)
//! it is inserted as is, so a value that cannot be written there is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// One `${name}` in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The variable's name.
    pub name: String,
    /// Where `${name}` is (bytes).
    pub span: Range<usize>,
}

/// What kind of string a reference sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Basic,
    Literal,
    MultiLiteral,
}

/// A problem at a byte offset of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// Where.
    pub at: usize,
    /// What.
    pub message: String,
}

/// Built-in variable names.
pub const BUILTIN: [&str; 2] = ["git.commit", "git.tag"];

/// Is `name` a valid declared variable name (`[A-Za-z_][A-Za-z0-9_]*`)? Pure.
pub fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Every `${name}` inside a string of `text`. Pure.
pub fn references(text: &str) -> Result<Vec<Reference>, TextError> {
    let mut refs = Vec::new();
    scan(text, &mut |r, _| {
        refs.push(r.clone());
        Ok(String::new())
    })?;
    Ok(refs)
}

/// `text` with every `${name}` replaced by `value(name)`; a name `value` does not know is an
/// error at its place. Pure.
pub fn substitute(text: &str, value: &dyn Fn(&str) -> Option<String>) -> Result<String, TextError> {
    scan(text, &mut |r, quote| {
        let v = value(&r.name).ok_or_else(|| TextError { at: r.span.start, message: format!("unknown variable `{}`", r.name) })?;
        match quote {
            Quote::Basic => Ok(escape_basic(&v)),
            Quote::Literal if v.contains('\'') || v.contains('\n') || v.contains('\r') => Err(TextError {
                at: r.span.start,
                message: format!("`${{{}}}` is in a '…' string, which cannot hold its value {v:?}: use \"…\"", r.name),
            }),
            Quote::MultiLiteral if v.contains("'''") => Err(TextError {
                at: r.span.start,
                message: format!("`${{{}}}` is in a '''…''' string, which cannot hold its value {v:?}: use \"\"\"…\"\"\"", r.name),
            }),
            Quote::Literal | Quote::MultiLiteral => Ok(v),
        }
    })
}

/// A value as the inside of a TOML basic string. Pure.
fn escape_basic(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Walks `text`, copying it, and calls `f` for each reference inside a string; `f`'s answer
/// replaces it. Pure.
fn scan(text: &str, f: &mut dyn FnMut(&Reference, Quote) -> Result<String, TextError>) -> Result<String, TextError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Normal,
        Comment,
        Basic,
        MultiBasic,
        Literal,
        MultiLiteral,
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut state = State::Normal;
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let rest = &b[i..];
        match state {
            State::Normal => {
                state = if rest.starts_with(b"\"\"\"") {
                    i += 2;
                    State::MultiBasic
                } else if rest.starts_with(b"'''") {
                    i += 2;
                    State::MultiLiteral
                } else {
                    match b[i] {
                        b'#' => State::Comment,
                        b'"' => State::Basic,
                        b'\'' => State::Literal,
                        _ => State::Normal,
                    }
                };
                i += 1;
            }
            State::Comment => {
                if b[i] == b'\n' {
                    state = State::Normal;
                }
                i += 1;
            }
            State::Basic | State::MultiBasic | State::Literal | State::MultiLiteral => {
                let escapes = matches!(state, State::Basic | State::MultiBasic);
                if escapes && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                let closed = match state {
                    State::Basic => (b[i] == b'"').then_some(1),
                    State::Literal => (b[i] == b'\'').then_some(1),
                    State::MultiBasic => rest.starts_with(b"\"\"\"").then_some(3),
                    _ => rest.starts_with(b"'''").then_some(3),
                };
                if let Some(n) = closed {
                    // A run of quotes closing a multi-line string: the last three close it.
                    let mut n = n;
                    if n == 3 {
                        let q = b[i];
                        while i + n < b.len() && b[i + n] == q && n < 5 {
                            n += 1;
                        }
                    }
                    state = State::Normal;
                    i += n;
                    continue;
                }
                if matches!(state, State::Basic | State::Literal) && b[i] == b'\n' {
                    // An unterminated one-line string: the TOML parser reports it.
                    state = State::Normal;
                    i += 1;
                    continue;
                }
                if rest.starts_with(b"$${") {
                    out.push_str(&text[copied..i]);
                    out.push_str("${");
                    i += 3;
                    copied = i;
                    continue;
                }
                if rest.starts_with(b"${") {
                    let Some(len) = rest.iter().position(|c| *c == b'}') else {
                        return Err(TextError { at: i, message: "`${` without its closing `}`".into() });
                    };
                    let name = text[i + 2..i + len].trim().to_string();
                    let ok = name.split('.').all(valid_name) && !name.is_empty();
                    if !ok {
                        return Err(TextError {
                            at: i,
                            message: format!("`${{{name}}}` is not a variable name (letters, digits and _; `$${{` writes a literal `${{`)"),
                        });
                    }
                    let quote = match state {
                        State::Basic | State::MultiBasic => Quote::Basic,
                        State::Literal => Quote::Literal,
                        _ => Quote::MultiLiteral,
                    };
                    let r = Reference { name, span: i..i + len + 1 };
                    let value = f(&r, quote)?;
                    out.push_str(&text[copied..i]);
                    out.push_str(&value);
                    i += len + 1;
                    copied = i;
                    continue;
                }
                i += 1;
            }
        }
    }
    out.push_str(&text[copied.min(text.len())..]);
    Ok(out)
}

/// Where a variable's value came from, for messages and the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `[vars]`.
    Default,
    /// The `[matrix]` entry.
    Matrix,
    /// `IMGFORGE_VAR_<NAME>`.
    Env,
    /// `--var`.
    CommandLine,
    /// `git.commit`, `git.tag`.
    Git,
}

/// Layers the values: defaults, then the matrix entry, then the environment (`env(NAME)` asked
/// for `IMGFORGE_VAR_<name>` as written, then upper-cased), then `--var`. Only declared names
/// are taken from the environment and the command line; the names of `--var`s not declared are
/// returned. Pure (the environment is a function).
pub fn resolve(
    defaults: &BTreeMap<String, String>,
    entry: &BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    cli: &[(String, String)],
) -> (BTreeMap<String, (String, Origin)>, BTreeSet<String>) {
    let mut v: BTreeMap<String, (String, Origin)> = defaults.iter().map(|(k, x)| (k.clone(), (x.clone(), Origin::Default))).collect();
    for (k, x) in entry {
        v.insert(k.clone(), (x.clone(), Origin::Matrix));
    }
    let names: Vec<String> = v.keys().cloned().collect();
    for k in names {
        let found = env(&format!("IMGFORGE_VAR_{k}")).or_else(|| env(&format!("IMGFORGE_VAR_{}", k.to_ascii_uppercase())));
        if let Some(x) = found {
            v.insert(k, (x, Origin::Env));
        }
    }
    let mut undeclared = BTreeSet::new();
    for (k, x) in cli {
        if v.contains_key(k) {
            v.insert(k.clone(), (x.clone(), Origin::CommandLine));
        } else {
            undeclared.insert(k.clone());
        }
    }
    (v, undeclared)
}

/// `KEY=VALUE` of `--var`. Pure.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}`: write --var NAME=VALUE"))?;
    if !valid_name(k) {
        return Err(format!("`{k}` is not a variable name (letters, digits and _, not starting with a digit)"));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn strings_only_and_lines_kept() {
        let text =
            "# ${not} in a comment\n[image]\nname = \"app-${node}\"\nlit = '${node}-x'\nml = \"\"\"\n${role}\"\"\"\nesc = \"$${kept}\"\n";
        let out = substitute(text, &vals(&[("node", "web-1"), ("role", "a\"b")])).unwrap();
        assert_eq!(
            out,
            "# ${not} in a comment\n[image]\nname = \"app-web-1\"\nlit = 'web-1-x'\nml = \"\"\"\na\\\"b\"\"\"\nesc = \"${kept}\"\n"
        );
        assert_eq!(out.lines().count(), text.lines().count());
        let names: Vec<String> = references(text).unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["node", "node", "role"]);
    }

    #[test]
    fn escaped_quotes_do_not_end_a_string() {
        let text = "a = \"x\\\"${v}\"\nb = \"\\\\\"\nc = \"${v}\"\n";
        assert_eq!(substitute(text, &vals(&[("v", "1")])).unwrap(), "a = \"x\\\"1\"\nb = \"\\\\\"\nc = \"1\"\n");
    }

    #[test]
    fn values_that_break_the_string_are_escaped_or_refused() {
        let out = substitute("a = \"${v}\"\n", &vals(&[("v", "l1\nl2\\")])).unwrap();
        assert_eq!(out, "a = \"l1\\nl2\\\\\"\n");
        assert_eq!(toml::from_str::<toml::Table>(&out).unwrap()["a"].as_str(), Some("l1\nl2\\"));
        let e = substitute("a = '${v}'\n", &vals(&[("v", "it's")])).unwrap_err();
        assert!(e.message.contains("use \"…\""), "{e:?}");
    }

    #[test]
    fn unknown_and_malformed_references_name_their_place() {
        let text = "a = 1\nb = \"${nope}\"\n";
        let e = substitute(text, &vals(&[])).unwrap_err();
        assert_eq!((e.at, e.message.as_str()), (11, "unknown variable `nope`"));
        assert!(references("a = \"${bad name}\"").unwrap_err().message.contains("not a variable name"));
        assert!(references("a = \"${open\"").unwrap_err().message.contains("closing"));
        assert_eq!(references("a = \"${git.commit}\"").unwrap()[0].name, "git.commit");
    }

    #[test]
    fn layering_order_and_undeclared_command_line_names() {
        let defaults = BTreeMap::from([("node".to_string(), "d".to_string()), ("role".to_string(), "r".to_string())]);
        let entry = BTreeMap::from([("node".to_string(), "m".to_string())]);
        let env = |k: &str| (k == "IMGFORGE_VAR_ROLE").then(|| "e".to_string());
        let (v, undeclared) = resolve(&defaults, &entry, &env, &[("node".into(), "c".into()), ("zone".into(), "z".into())]);
        assert_eq!(v["node"], ("c".to_string(), Origin::CommandLine));
        assert_eq!(v["role"], ("e".to_string(), Origin::Env));
        assert_eq!(undeclared, BTreeSet::from(["zone".to_string()]));
        assert_eq!(parse_assignment("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_assignment("1a=b").is_err());
    }
}
