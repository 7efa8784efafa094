//! `[matrix]`: one recipe, one image per entry, each entry a set of variables.
//!
//! ```toml
//! [matrix]
//! role = ["web", "db"]                       # axes: every combination of their values
//! zone = ["a", "b"]
//! include = [ { role = "cache", zone = "a" } ] # and these entries as written
//! file = "nodes.yaml"                        # and the entries of a YAML or TOML file
//! key = "node"                               # (a file of name → table: the name's variable)
//! ```
//! or `matrix = "nodes.yaml"` for a file alone. A file holds a list of tables, one table whose
//! only value is such a list (`nodes: [...]`, `[[node]]`), or a table of tables keyed by name.
//! Values are strings, numbers or booleans; a list of them becomes one comma-separated value
//! (security groups as a label).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use toml::Spanned;

use super::error::RecipeError;
use super::parse::Src;

/// The most entries a matrix may expand to.
pub const MAX_ENTRIES: usize = 10_000;

/// `[matrix]` as written: a file name, or a table whose values keep their places.
#[derive(Debug)]
pub enum Spec {
    /// `matrix = "nodes.yaml"`.
    File(String),
    /// `[matrix]`.
    Table(BTreeMap<String, Spanned<toml::Value>>),
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Spec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file name (\"nodes.yaml\") or a [matrix] table")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Spec, E> {
                Ok(Spec::File(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Spec, A::Error> {
                let mut t = BTreeMap::new();
                while let Some(k) = m.next_key::<String>()? {
                    t.insert(k, m.next_value::<Spanned<toml::Value>>()?);
                }
                Ok(Spec::Table(t))
            }
        }
        d.deserialize_any(V)
    }
}

/// The expanded matrix.
#[derive(Debug, Default)]
pub struct Matrix {
    /// One variable set per entry, in order.
    pub entries: Vec<BTreeMap<String, String>>,
    /// Variables the recipe itself names (axes and `include` keys), with where: each must be
    /// used. A file's keys may go unused (one nodes file serves many recipes).
    pub inline: BTreeMap<String, std::ops::Range<usize>>,
}

/// Expands `spec` (at `span`) of the recipe `src` in directory `dir`.
pub fn expand(src: Src<'_>, dir: &Path, spec: &Spanned<Spec>) -> Result<Matrix, RecipeError> {
    let at = |span: std::ops::Range<usize>, m: String| {
        src.at(span, format!("[matrix] {m}")).hint("see the README's Bakery section for the [matrix] forms")
    };
    let mut m = Matrix::default();
    let (table, file, key) = match spec.get_ref() {
        Spec::File(f) => (BTreeMap::new(), Some((f.clone(), spec.span())), "name".to_string()),
        Spec::Table(t) => {
            let mut t = t.clone();
            let file = match t.remove("file") {
                Some(f) => Some((f.get_ref().as_str().ok_or_else(|| at(f.span(), "file: a file name".into()))?.to_string(), f.span())),
                None => None,
            };
            let key = match t.remove("key") {
                Some(k) => k.get_ref().as_str().ok_or_else(|| at(k.span(), "key: a variable name".into()))?.to_string(),
                None => "name".to_string(),
            };
            (t, file, key)
        }
    };
    let mut table = table;
    let include = table.remove("include");
    // Axes.
    let mut combos: Vec<BTreeMap<String, String>> = Vec::new();
    if !table.is_empty() {
        combos.push(BTreeMap::new());
    }
    for (k, v) in &table {
        if !super::vars::valid_name(k) {
            return Err(at(v.span(), format!("`{k}` is not a variable name")));
        }
        m.inline.insert(k.clone(), v.span());
        let values: Vec<String> = match v.get_ref() {
            toml::Value::Array(a) => a.iter().map(scalar).collect::<Result<_, _>>().map_err(|e| at(v.span(), format!("{k}: {e}")))?,
            other => vec![scalar(other).map_err(|e| at(v.span(), format!("{k}: {e}")))?],
        };
        if values.is_empty() {
            return Err(at(v.span(), format!("{k} has no values")));
        }
        if combos.len().saturating_mul(values.len()) > MAX_ENTRIES {
            return Err(at(v.span(), format!("more than {MAX_ENTRIES} entries")));
        }
        combos = combos
            .iter()
            .flat_map(|c| {
                values.iter().map(move |x| {
                    let mut c = c.clone();
                    c.insert(k.clone(), x.clone());
                    c
                })
            })
            .collect();
    }
    m.entries = combos;
    if let Some(inc) = include {
        let Some(list) = inc.get_ref().as_array() else { return Err(at(inc.span(), "include: a list of tables".into())) };
        for (i, e) in list.iter().enumerate() {
            let Some(t) = e.as_table() else { return Err(at(inc.span(), format!("include #{}: a table", i + 1))) };
            let mut entry = BTreeMap::new();
            for (k, v) in t {
                if !super::vars::valid_name(k) {
                    return Err(at(inc.span(), format!("include #{}: `{k}` is not a variable name", i + 1)));
                }
                m.inline.entry(k.clone()).or_insert(inc.span());
                entry.insert(k.clone(), scalar(v).map_err(|e| at(inc.span(), format!("include #{}: {k}: {e}", i + 1)))?);
            }
            m.entries.push(entry);
        }
    }
    if let Some((f, span)) = file {
        let path = dir.join(&f);
        let text = std::fs::read_to_string(&path).map_err(|e| at(span.clone(), format!("cannot read {}: {e}", path.display())))?;
        let doc: serde_json::Value = if f.ends_with(".yaml") || f.ends_with(".yml") {
            serde_yaml_ng::from_str(&text).map_err(|e| at(span.clone(), format!("{}: {e}", path.display())))?
        } else if f.ends_with(".toml") {
            let t: toml::Table = toml::from_str(&text).map_err(|e| at(span.clone(), format!("{}: {e}", path.display())))?;
            serde_json::to_value(t).map_err(|e| at(span.clone(), format!("{}: {e}", path.display())))?
        } else {
            return Err(at(span, format!("{f}: a .yaml, .yml or .toml file")));
        };
        let found = file_entries(&doc, &key).map_err(|e| at(span.clone(), format!("{}: {e}", path.display())))?;
        m.entries.extend(found);
    }
    if m.entries.is_empty() {
        return Err(at(spec.span(), "expands to no entry".into()));
    }
    if m.entries.len() > MAX_ENTRIES {
        return Err(at(spec.span(), format!("more than {MAX_ENTRIES} entries")));
    }
    Ok(m)
}

/// A scalar TOML value as a variable's text; a list of scalars joined with commas. Pure.
fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(a) => Ok(a.iter().map(scalar).collect::<Result<Vec<_>, _>>()?.join(",")),
        toml::Value::Table(_) => Err("a table cannot be a variable's value".into()),
    }
}

/// A JSON-model scalar as a variable's text. Pure.
fn json_scalar(v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::Array(a) => Ok(a.iter().map(json_scalar).collect::<Result<Vec<_>, _>>()?.join(",")),
        serde_json::Value::Object(_) => Err("a table cannot be a variable's value".into()),
    }
}

/// The entries of a matrix file's document (see the module's description). Pure.
fn file_entries(doc: &serde_json::Value, key: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let table = |i: usize, o: &serde_json::Map<String, serde_json::Value>| -> Result<BTreeMap<String, String>, String> {
        o.iter()
            .map(|(k, v)| {
                if !super::vars::valid_name(k) {
                    return Err(format!("entry {}: `{k}` is not a variable name", i + 1));
                }
                Ok((k.clone(), json_scalar(v).map_err(|e| format!("entry {}: {k}: {e}", i + 1))?))
            })
            .collect()
    };
    let list = |a: &[serde_json::Value]| -> Result<Vec<BTreeMap<String, String>>, String> {
        a.iter()
            .enumerate()
            .map(|(i, e)| match e {
                serde_json::Value::Object(o) => table(i, o),
                _ => Err(format!("entry {}: a table of variables", i + 1)),
            })
            .collect()
    };
    match doc {
        serde_json::Value::Array(a) => list(a),
        serde_json::Value::Object(o) if o.len() == 1 && o.values().all(|v| v.is_array()) => {
            list(o.values().next().and_then(|v| v.as_array()).map_or(&[], |v| v))
        }
        serde_json::Value::Object(o) if o.values().all(|v| v.is_object()) => o
            .iter()
            .enumerate()
            .map(|(i, (name, v))| {
                let mut t = table(i, v.as_object().ok_or("a table")?)?;
                t.entry(key.to_string()).or_insert_with(|| name.clone());
                Ok(t)
            })
            .collect(),
        _ => Err("not a list of entries, one list under a single key, or a table of named entries".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Head {
        matrix: Spanned<Spec>,
    }

    fn run(text: &str, dir: &Path) -> Result<Matrix, RecipeError> {
        let h: Head = toml::from_str(text).unwrap();
        expand(Src { path: Path::new("r.toml"), text }, dir, &h.matrix)
    }

    #[test]
    fn axes_multiply_and_includes_append() {
        let m = run(
            "[matrix]\nrole = [\"web\", \"db\"]\nzone = [\"a\", \"b\"]\ninclude = [ { role = \"cache\", zone = \"c\" } ]\n",
            Path::new("."),
        )
        .unwrap();
        let got: Vec<String> = m.entries.iter().map(|e| format!("{}-{}", e["role"], e["zone"])).collect();
        assert_eq!(got, ["web-a", "web-b", "db-a", "db-b", "cache-c"]);
        assert_eq!(m.inline.keys().collect::<Vec<_>>(), ["role", "zone"]);
    }

    #[test]
    fn files_in_every_documented_shape() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("list.yaml"), "- node: web-1\n  role: web\n  groups: [sg-1, sg-2]\n- node: db-1\n  role: db\n")
            .unwrap();
        std::fs::write(d.path().join("wrapped.yaml"), "nodes:\n  - node: a\n  - node: b\n").unwrap();
        std::fs::write(d.path().join("named.yaml"), "web-1: {role: web}\ndb-1: {role: db, port: 5432}\n").unwrap();
        std::fs::write(d.path().join("nodes.toml"), "[[node]]\nnode = \"t1\"\n[[node]]\nnode = \"t2\"\n").unwrap();
        let m = run("matrix = \"list.yaml\"\n", d.path()).unwrap();
        assert_eq!(m.entries[0]["groups"], "sg-1,sg-2");
        assert_eq!(m.entries[1]["role"], "db");
        assert!(m.inline.is_empty());
        assert_eq!(run("matrix = \"wrapped.yaml\"\n", d.path()).unwrap().entries.len(), 2);
        let m = run("[matrix]\nfile = \"named.yaml\"\nkey = \"node\"\n", d.path()).unwrap();
        assert_eq!((m.entries[0]["node"].as_str(), m.entries[0]["port"].as_str()), ("db-1", "5432"));
        assert_eq!(run("matrix = \"nodes.toml\"\n", d.path()).unwrap().entries[1]["node"], "t2");
    }

    #[test]
    fn mistakes_name_the_line() {
        let e = run("[image]\nname = \"x\"\n[matrix]\nrole = [{ a = 1 }]\n", Path::new(".")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = run("matrix = \"missing.yaml\"\n", Path::new("/nonexistent")).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
        let e = run("[matrix]\nrole = []\n", Path::new(".")).unwrap_err();
        assert!(e.message.contains("no values"), "{e}");
    }
}
