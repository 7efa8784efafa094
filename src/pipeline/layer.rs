//! Layer keys: a hash of everything that determines a build's output (the recipe's meaning,
//! every file and tree it names, the parent's or upstream's digest, imgforge's version). A
//! build whose key matches a registered record with its outputs still in place is up to date;
//! `explain` compares the inputs, one by one, with the newest record's.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::parent::Resolved;
use crate::recipe::BuildPlan;
use crate::registry::record::Record;
use crate::source::plan::SourcePlan;

/// A layer key and the inputs it hashes (input → digest or description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerKey {
    /// `sha256:<hex>` over the inputs.
    pub key: String,
    /// `recipe`, `file <path>`, `parent <name>`, `upstream <file>`, `imgforge`.
    pub inputs: BTreeMap<String, String>,
}

/// The key of `plan` starting from `parent` or, without one, from `upstream` (its expected
/// digest, read from the checksums file; the image itself is not read).
pub fn compute(plan: &BuildPlan, parent: Option<&Resolved>, upstream: Option<&SourcePlan>) -> anyhow::Result<LayerKey> {
    let mut inputs = BTreeMap::new();
    inputs.insert("recipe".to_string(), format!("sha256:{}", plan.recipe_meaning));
    inputs.insert("imgforge".to_string(), env!("CARGO_PKG_VERSION").to_string());
    if let Some(p) = parent {
        inputs.insert(format!("parent {}", p.record.name), format!("{} {} sha256:{}", p.record.version, p.record.id, p.sha256));
    }
    if let Some(u) = upstream {
        let (algo, digest, _, _) = crate::source::verify::expected(u).context("Failed to read the upstream's expected digest")?;
        inputs.insert(format!("upstream {}", u.image.ancestor()), format!("{}:{digest}", algo.name().to_ascii_lowercase()));
    }
    let skip = [plan.output_dir.clone()];
    for s in &plan.steps {
        for p in step_trees(&s.step) {
            hash_tree(&plan.recipe_dir, &p, &skip, &mut inputs).with_context(|| format!("Failed to read {}", p.display()))?;
        }
    }
    Ok(LayerKey { key: key_of(&inputs), inputs })
}

/// What a step reads on the host: its files and trees, and for Ansible the playbook's whole
/// directory (roles/, group_vars/, templates next to it are found from there).
fn step_trees(step: &crate::provision::plan::Step) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = crate::provision::host_inputs(step).into_iter().map(Path::to_path_buf).collect();
    if let crate::provision::plan::Step::Ansible(a) = step
        && let Some(dir) = a.playbook.parent()
    {
        v.push(dir.to_path_buf());
    }
    v
}

/// `sha256:<hex>` over `input=value` lines. Pure.
pub fn key_of(inputs: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in inputs {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Adds `file <path>` inputs for `path` (a file, or every file, link and empty directory
/// under it; `.git` and the paths in `skip` left out). Paths under `base` are shown relative
/// to it. Symbolic links are recorded as such, never followed.
fn hash_tree(base: &Path, path: &Path, skip: &[PathBuf], inputs: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if skip.iter().any(|s| p.starts_with(s)) || p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        let meta = std::fs::symlink_metadata(&p).with_context(|| format!("Failed to stat {}", p.display()))?;
        let shown = p.strip_prefix(base).map_or_else(|_| p.display().to_string(), |r| r.display().to_string());
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p)?;
            inputs.insert(format!("file {shown}"), format!("symlink {}", target.display()));
        } else if meta.is_dir() {
            let mut n = 0;
            for e in std::fs::read_dir(&p).with_context(|| format!("Failed to list {}", p.display()))? {
                stack.push(e?.path());
                n += 1;
            }
            if n == 0 {
                inputs.insert(format!("file {shown}/"), format!("directory mode {mode:o}"));
            }
        } else if meta.is_file() {
            let mut h = Sha256::new();
            let mut f = std::fs::File::open(&p).with_context(|| format!("Failed to open {}", p.display()))?;
            std::io::copy(&mut f, &mut h).with_context(|| format!("Failed to read {}", p.display()))?;
            inputs.insert(
                format!("file {shown}"),
                format!("sha256:{} mode {mode:o} uid {} gid {}", hex::encode(h.finalize()), meta.uid(), meta.gid()),
            );
        }
    }
    Ok(())
}

/// The key of `plan` now: its parent resolved in `store`, or its upstream's expected digest.
pub fn key_now(plan: &BuildPlan, store: &dyn crate::registry::Store) -> anyhow::Result<LayerKey> {
    match &plan.source {
        crate::recipe::plan::Origin::Upstream(s) => compute(plan, None, Some(s)),
        crate::recipe::plan::Origin::Parent(q) => compute(plan, Some(&super::parent::resolve(store, q)?), None),
    }
}

/// Why a build of `name` with `key` would build (empty: it is up to date), and the newest
/// record of that name it was compared with.
pub fn why_build(store: &dyn crate::registry::Store, name: &str, key: &LayerKey) -> anyhow::Result<(Option<Record>, Vec<String>)> {
    let last = crate::registry::resolve(store, name)?;
    let reasons = match &last {
        None => vec![format!("no image named {name} is registered: the first build builds it")],
        Some(r) if r.layer_key.as_deref() == Some(key.key.as_str()) => {
            let gone: Vec<&str> = r.outputs.iter().filter(|o| !o.reachable()).map(|o| o.path.as_str()).collect();
            gone.iter().map(|p| format!("output {p} is gone or was written over")).collect()
        }
        Some(r) if r.layer_inputs.is_empty() => vec![format!("{} {} ({}) has no layer key recorded", r.name, r.version, r.id)],
        Some(r) => explain(&r.layer_inputs, &key.inputs),
    };
    Ok((last, reasons))
}

/// The newest record named like `plan` with this key whose outputs are all still in place, here
/// or in the S3 store.
pub fn up_to_date(store: &dyn crate::registry::Store, name: &str, key: &str) -> anyhow::Result<Option<Record>> {
    let q = crate::registry::Query { name: Some(name.to_string()), ..Default::default() };
    for r in store.find(&q)? {
        if r.layer_key.as_deref() == Some(key)
            && r.status != "revoked"
            && r.status != "deleted"
            && r.outputs.iter().all(crate::registry::record::Output::reachable)
        {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Why `now` differs from `then`, one line per input (empty when the keys match). Pure.
pub fn explain(then: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in now {
        match then.get(k) {
            Some(old) if old == v => {}
            Some(old) => out.push(changed(k, old, v)),
            None => out.push(format!("{k} added")),
        }
    }
    for k in then.keys().filter(|k| !now.contains_key(*k)) {
        out.push(format!("{k} removed"));
    }
    out
}

fn changed(input: &str, old: &str, new: &str) -> String {
    let first = |s: &str| s.split_whitespace().next().unwrap_or_default().to_string();
    if input.starts_with("parent ") {
        // "VERSION ID sha256:…": the versions, and the records when the version is the same.
        let (o, n): (Vec<&str>, Vec<&str>) = (old.split_whitespace().collect(), new.split_whitespace().collect());
        if o.first() != n.first() {
            return format!("{input} {} → {}", first(old), first(new));
        }
        let id = |v: &[&str]| v.get(1).copied().unwrap_or("?").to_string();
        return format!("{input} {} ({}) → {} ({})", first(old), id(&o), first(new), id(&n));
    }
    if input == "imgforge" {
        return format!("imgforge {old} → {new}");
    }
    if input.starts_with("file ") && first(old) == first(new) {
        return format!("{input}: mode or owner changed");
    }
    format!("{input} changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_names_each_input() {
        let then = BTreeMap::from([
            ("recipe".to_string(), "sha256:a".to_string()),
            ("file salt/common/packages.sls".to_string(), "sha256:1 mode 644 uid 0 gid 0".to_string()),
            ("file salt/top.sls".to_string(), "sha256:2 mode 644 uid 0 gid 0".to_string()),
            ("parent ubuntu-base".to_string(), "1.4.0 01A sha256:x".to_string()),
            ("imgforge".to_string(), "0.1.0".to_string()),
        ]);
        let mut now = then.clone();
        assert!(explain(&then, &now).is_empty());
        now.insert("file salt/common/packages.sls".into(), "sha256:9 mode 644 uid 0 gid 0".into());
        now.insert("file salt/top.sls".into(), "sha256:2 mode 600 uid 0 gid 0".into());
        now.insert("parent ubuntu-base".into(), "1.5.0 01B sha256:y".into());
        now.insert("file salt/new.sls".into(), "sha256:3 mode 644 uid 0 gid 0".into());
        assert_eq!(
            explain(&then, &now),
            [
                "file salt/common/packages.sls changed",
                "file salt/new.sls added",
                "file salt/top.sls: mode or owner changed",
                "parent ubuntu-base 1.4.0 → 1.5.0"
            ]
        );
        assert_ne!(key_of(&then), key_of(&now));
    }

    #[test]
    fn trees_are_hashed_file_by_file_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("t/sub")).unwrap();
        std::fs::create_dir_all(d.path().join("t/out")).unwrap();
        std::fs::write(d.path().join("t/a"), "a").unwrap();
        std::fs::write(d.path().join("t/sub/b"), "b").unwrap();
        std::fs::write(d.path().join("t/out/x.raw"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("t/link")).unwrap();
        let mut inputs = BTreeMap::new();
        hash_tree(d.path(), &d.path().join("t"), &[d.path().join("t/out")], &mut inputs).unwrap();
        let keys: Vec<&str> = inputs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["file t/a", "file t/link", "file t/sub/b"]);
        assert_eq!(inputs["file t/link"], "symlink /etc/shadow");
        assert!(inputs["file t/a"].starts_with("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb mode "));
    }
}
