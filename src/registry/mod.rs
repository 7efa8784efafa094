//! The image registry: every successful build is recorded (`record::Record`), and images are
//! found by name, version, status, labels, kernel and installed packages.
//!
//! One trait, [`Store`], with one conformance suite (`tests`); the embedded backend is SQLite
//! (`sqlite`), chosen with `--registry PATH|sqlite:PATH` or `IMGFORGE_REGISTRY`, default
//! `/var/lib/imgforge/registry.db`.

pub mod debversion;
pub mod packages;
pub mod query;
pub mod record;
pub mod sqlite;

use std::path::PathBuf;

use anyhow::bail;

pub use query::Query;
pub use record::Record;

/// Where the registry is when nothing says.
pub const DEFAULT_PATH: &str = "/var/lib/imgforge/registry.db";

/// The environment variable naming the registry.
pub const ENV: &str = "IMGFORGE_REGISTRY";

/// A registry backend.
pub trait Store {
    /// Adds a record (its id must be new).
    fn register(&mut self, r: &Record) -> anyhow::Result<()>;
    /// The record with this id, with its packages.
    fn get(&self, id: &str) -> anyhow::Result<Option<Record>>;
    /// Records matching `q` (apart from `descendant_of`), newest first, each with only the
    /// packages the query named.
    fn find(&self, q: &Query) -> anyhow::Result<Vec<Record>>;
    /// Adds AMI ids (region → id) to a record; `false` when there is no such record.
    fn add_amis(&mut self, id: &str, amis: &std::collections::BTreeMap<String, String>) -> anyhow::Result<bool>;
}

/// The registry `spec` names (`--registry`), else `IMGFORGE_REGISTRY`, else the default.
pub fn open(spec: Option<&str>) -> anyhow::Result<Box<dyn Store>> {
    let env = std::env::var(ENV).ok().filter(|s| !s.is_empty());
    let spec = spec.map(str::to_string).or(env).unwrap_or_else(|| DEFAULT_PATH.to_string());
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        bail!("PostgreSQL registries are not supported by this imgforge yet; use a SQLite file (--registry PATH)");
    }
    let path = PathBuf::from(spec.strip_prefix("sqlite:").unwrap_or(&spec));
    Ok(Box::new(sqlite::Sqlite::open(&path)?))
}

/// `find`, then `descendant_of` (walking each record's parent chain).
pub fn search(store: &dyn Store, q: &Query) -> anyhow::Result<Vec<Record>> {
    let found = store.find(q)?;
    let Some(ancestor) = &q.descendant_of else { return Ok(found) };
    let mut out = Vec::new();
    for r in found {
        let mut parent = r.parent.record.clone();
        let mut hops = 0;
        while let Some(p) = parent {
            if &p == ancestor {
                out.push(r);
                break;
            }
            hops += 1;
            if hops > 64 {
                bail!("the parent chain of {} is longer than 64 records (a cycle?)", r.id);
            }
            parent = store.get(&p)?.and_then(|x| x.parent.record);
        }
    }
    Ok(out)
}

/// `ID`, `NAME` (newest) or `NAME@VERSION` (newest of that version).
pub fn resolve(store: &dyn Store, what: &str) -> anyhow::Result<Option<Record>> {
    if let Some(r) = store.get(what)? {
        return Ok(Some(r));
    }
    let (name, version) = match what.split_once('@') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (what, None),
    };
    let q = Query { name: Some(name.to_string()), version, ..Query::default() };
    match store.find(&q)?.first() {
        Some(r) => store.get(&r.id),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
