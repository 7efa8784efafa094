//! A recipe's text → one text per image it defines: `[vars]` and `[matrix]` read from the text
//! as written, every `${name}` checked (unknown or unused names are errors at their line), then
//! substituted once per matrix entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::error::RecipeError;
use super::matrix::{self, Spec};
use super::parse::Src;
use super::vars::{self, Origin};

/// The keys this module reads; the rest is the recipe's.
#[derive(Debug, Deserialize)]
struct Head {
    vars: Option<BTreeMap<String, Spanned<toml::Value>>>,
    matrix: Option<Spanned<Spec>>,
}

/// One image's recipe text and the variables it was made with.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The text with every variable replaced (lines unchanged).
    pub text: String,
    /// Each variable's value and where it came from.
    pub vars: BTreeMap<String, (String, Origin)>,
    /// The matrix entry (0-based), when the recipe has a matrix.
    pub entry: Option<usize>,
}

/// How `--var` and the environment are taken.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `--var NAME=VALUE`, in order.
    pub cli: Vec<(String, String)>,
    /// A `--var` this recipe does not declare is left for other recipes (`bake`, `plan`) rather
    /// than an error.
    pub lenient: bool,
}

/// The variants of the recipe `src` (in `dir`): one, or one per matrix entry.
pub fn variants(src: Src<'_>, dir: &Path, inputs: &Inputs, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Variant>, RecipeError> {
    let head: Head = toml::from_str(src.text).map_err(|e| super::parse::toml_error(src, &e))?;
    let hint_vars = "declare it in [vars] (name = \"default\") or in [matrix]; built in: git.commit, git.tag";
    let mut defaults = BTreeMap::new();
    let mut declared_at = BTreeMap::new();
    for (k, v) in head.vars.iter().flatten() {
        if !vars::valid_name(k) {
            return Err(src
                .at(v.span(), format!("[vars] `{k}` is not a variable name"))
                .hint("letters, digits and _, not starting with a digit"));
        }
        let text = match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(src.at(v.span(), format!("[vars] {k}: a string, number or boolean"))),
        };
        if text.contains("${") {
            return Err(src.at(v.span(), format!("[vars] {k}: a default cannot use another variable")).hint("write the value itself"));
        }
        defaults.insert(k.clone(), text);
        declared_at.insert(k.clone(), v.span());
    }
    let m = match &head.matrix {
        Some(spec) => Some(matrix::expand(src, dir, spec)?),
        None => None,
    };
    let refs = vars::references(src.text).map_err(|e| src.at(e.at..e.at, e.message))?;
    let mut known: BTreeSet<String> = defaults.keys().cloned().collect();
    known.extend(vars::BUILTIN.iter().map(|s| s.to_string()));
    if let Some(m) = &m {
        known.extend(m.entries.iter().flat_map(|e| e.keys().cloned()));
    }
    let used: BTreeSet<&str> = refs.iter().map(|r| r.name.as_str()).collect();
    if let Some(r) = refs.iter().find(|r| !known.contains(&r.name)) {
        let declared: Vec<&str> = known.iter().map(String::as_str).filter(|k| !vars::BUILTIN.contains(k)).collect();
        let listed = if declared.is_empty() { "none".to_string() } else { declared.join(", ") };
        return Err(src.at(r.span.clone(), format!("unknown variable `{}` (declared: {listed})", r.name)).hint(hint_vars));
    }
    let inline = m.as_ref().map(|m| m.inline.clone()).unwrap_or_default();
    if let Some((k, span)) = declared_at.iter().chain(inline.iter()).find(|(k, _)| !used.contains(k.as_str())) {
        return Err(src
            .at(span.clone(), format!("variable `{k}` is declared but used nowhere in the recipe"))
            .hint(format!("reference it as \"${{{k}}}\" in a string value, or remove it")));
    }
    // The built-ins, asked of git only when used.
    let mut builtin = BTreeMap::new();
    for name in vars::BUILTIN {
        if !used.contains(name) {
            continue;
        }
        let value = match name {
            "git.commit" => crate::stamp::version::git_commit(dir).ok_or_else(|| {
                let at = refs.iter().find(|r| r.name == name).map_or(0..0, |r| r.span.clone());
                src.at(at, format!("`${{git.commit}}`: {} is not in a git repository with a commit", dir.display()))
            })?,
            _ => crate::stamp::version::git_tag(dir).unwrap_or_default(),
        };
        builtin.insert(name.to_string(), (value, Origin::Git));
    }
    let entries: Vec<Option<(usize, BTreeMap<String, String>)>> = match &m {
        Some(m) => m.entries.iter().cloned().enumerate().map(Some).collect(),
        None => vec![None],
    };
    let mut out = Vec::new();
    for e in entries {
        let (index, entry) = e.map_or((None, BTreeMap::new()), |(i, e)| (Some(i), e));
        let (mut values, undeclared) = vars::resolve(&defaults, &entry, env, &inputs.cli);
        if let Some(k) = undeclared.iter().next().filter(|_| !inputs.lenient) {
            let names: Vec<&String> = values.keys().collect();
            return Err(RecipeError::new(
                src.path,
                None,
                format!("--var {k}: the recipe declares no variable `{k}` (declared: {names:?})"),
            )
            .hint("declare it in [vars], or drop the --var"));
        }
        values.extend(builtin.clone());
        let text = vars::substitute(src.text, &|n| values.get(n).map(|(v, _)| v.clone())).map_err(|err| {
            let which = index.map_or(String::new(), |i| format!("matrix entry {} ({}) ", i + 1, summary(&entry)));
            let name = err.message.split('`').nth(1).unwrap_or("?").to_string();
            if err.message.starts_with("unknown variable") {
                src.at(err.at..err.at, format!("{which}sets no `{name}`, and [vars] has no default for it"))
                    .hint(format!("give `{name}` a default in [vars], or set it in every entry"))
            } else {
                src.at(err.at..err.at, format!("{which}{}", err.message))
            }
        })?;
        let used_values = values.into_iter().filter(|(k, _)| used.contains(k.as_str())).collect();
        out.push(Variant { text, vars: used_values, entry: index });
    }
    Ok(out)
}

/// `a=1, b=2` of an entry, for messages. Pure.
fn summary(entry: &BTreeMap<String, String>) -> String {
    entry.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, cli: &[(&str, &str)]) -> Result<Vec<Variant>, RecipeError> {
        let inputs = Inputs { cli: cli.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), lenient: false };
        variants(Src { path: Path::new("r.toml"), text }, Path::new("/nonexistent"), &inputs, &|_| None)
    }

    const BASE: &str = "[vars]\nnode = \"web\"\n[image]\nname = \"app-${node}\"\n[source]\nurl = \"x\"\n";

    #[test]
    fn defaults_overrides_and_matrix_entries() {
        let v = run(BASE, &[]).unwrap();
        assert!(v[0].text.contains("name = \"app-web\""), "{}", v[0].text);
        let v = run(BASE, &[("node", "db")]).unwrap();
        assert_eq!(v[0].vars["node"], ("db".to_string(), Origin::CommandLine));
        let with_matrix = format!("{BASE}[matrix]\nnode = [\"a\", \"b\", \"c\"]\n");
        let v = run(&with_matrix, &[]).unwrap();
        let names: Vec<bool> = v.iter().map(|x| x.text.contains("name = \"app-a\"")).collect();
        assert_eq!(names, [true, false, false]);
        assert_eq!(v.iter().map(|x| x.entry).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn unknown_unused_and_undeclared_are_errors_with_lines() {
        let e = run("[image]\nname = \"a-${nod}\"\n[source]\nurl = \"x\"\n", &[]).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.starts_with("unknown variable `nod`"), "{e}");
        let e = run("[vars]\nnode = \"x\"\nrole = \"y\"\n[image]\nname = \"${node}\"\n[source]\nurl = \"x\"\n", &[]).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("`role` is declared but used nowhere"), "{e}");
        let e = run(BASE, &[("zone", "a")]).unwrap_err();
        assert!(e.message.starts_with("--var zone"), "{e}");
        let e = run("[image]\nname = \"${git.commit}\"\n[source]\nurl = \"x\"\n", &[]).unwrap_err();
        assert!(e.message.contains("not in a git repository"), "{e}");
        let e = run("[image]\nname = \"a\"\n[source]\nurl = \"${role}\"\n[matrix]\ninclude = [{ role = \"x\" }, { other = \"y\" }]\n", &[]);
        let e = e.unwrap_err();
        assert!(e.message.contains("`other` is declared but used nowhere"), "{e}");
    }

    #[test]
    fn an_entry_missing_a_variable_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("n.yaml"), "- {node: a, role: x}\n- {node: b}\n").unwrap();
        let text = "[image]\nname = \"${node}\"\ndescription = \"${role}\"\n[source]\nurl = \"x\"\nmatrix = \"n.yaml\"\n";
        // `matrix = …` after [source] belongs to [source]: the file form sits at the top.
        let text = format!("matrix = \"n.yaml\"\n{}", text.replace("matrix = \"n.yaml\"\n", ""));
        let e = variants(Src { path: Path::new("r.toml"), text: &text }, d.path(), &Inputs::default(), &|_| None).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.starts_with("matrix entry 2 (node=b) sets no `role`"), "{e}");
    }
}
