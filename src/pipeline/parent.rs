//! `[source] parent`: the registry query resolved at build start to one record and its raw
//! output, which is then verified like any pinned source (sha256 recorded at its build).

use std::path::PathBuf;

use crate::error::UsageError;
use crate::registry::record::Record;
use crate::registry::{Query, Store};
use crate::source::plan::{Location, PinnedDigest, SourcePlan};

/// The parent a build starts from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Its record.
    pub record: Record,
    /// Its raw output.
    pub raw: PathBuf,
    /// The raw's recorded sha256 (hex).
    pub sha256: String,
}

impl Resolved {
    /// The source to verify and convert: the raw, checked against its recorded digest.
    pub fn source_plan(&self) -> SourcePlan {
        SourcePlan {
            image: Location::Path(self.raw.clone()),
            checksums: None,
            pinned: Some(PinnedDigest { algo: "sha256", hex: self.sha256.clone() }),
            signature: None,
            signing_key: None,
        }
    }

    /// `NAME VERSION (ID)`, for people.
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.record.name, self.record.version, self.record.id)
    }
}

/// The raw output of `r` when it is still on this host with its recorded size; else why not.
fn local_raw(r: &Record) -> Result<(PathBuf, String), String> {
    let Some(raw) = r.outputs.iter().find(|o| o.format == "raw") else { return Err("it has no raw output".into()) };
    let path = PathBuf::from(&raw.path);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == raw.size => Ok((path, raw.sha256.clone())),
        Ok(m) => Err(format!("its raw output {} is {} bytes, not the {} recorded", raw.path, m.len(), raw.size)),
        Err(_) => Err(format!("its raw output {} is not on this host", raw.path)),
    }
}

/// The newest record matching `q` whose raw output is here. None: a usage error (exit 2)
/// listing the nearest candidates (the newest of that name) and why each was rejected.
pub fn resolve(store: &dyn Store, q: &Query) -> anyhow::Result<Resolved> {
    let mut rejected = Vec::new();
    for r in crate::registry::search(store, q)? {
        match local_raw(&r) {
            Ok((raw, sha256)) => return Ok(Resolved { record: r, raw, sha256 }),
            Err(why) => rejected.push(format!("{} {} ({}): {why}", r.name, r.version, r.id)),
        }
    }
    let name = q.name.clone().unwrap_or_default();
    let same_name = store.find(&Query { name: q.name.clone(), ..Query::default() })?;
    for r in same_name.iter().take(5) {
        if rejected.iter().any(|x| x.contains(&r.id)) {
            continue;
        }
        let full = store.get(&r.id)?.unwrap_or_else(|| r.clone());
        let why = q.why_not(&full);
        if !why.is_empty() {
            rejected.push(format!("{} {} ({}): {}", r.name, r.version, r.id, why.join("; ")));
        }
    }
    let mut msg = format!("[source] parent: no registered image matches {}", describe(q));
    if rejected.is_empty() {
        msg.push_str(&format!("; the registry has no image named {name}: build it first"));
    } else {
        msg.push_str("; nearest candidates:");
        for r in rejected.iter().take(5) {
            msg.push_str(&format!("\n  {r}"));
        }
    }
    Err(UsageError(msg).into())
}

/// The query as a recipe would write it, for messages. Pure.
pub fn describe(q: &Query) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &q.name {
        parts.push(format!("name = {n:?}"));
    }
    if let Some(v) = &q.version {
        parts.push(format!("version = {v:?}"));
    }
    if let Some(s) = &q.status {
        parts.push(format!("status = {s:?}"));
    }
    if !q.labels.is_empty() {
        let l: Vec<String> = q.labels.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        parts.push(format!("labels = {{ {} }}", l.join(", ")));
    }
    if let Some(k) = &q.kernel {
        parts.push(format!("kernel = {k:?}"));
    }
    for p in &q.packages {
        parts.push(format!("package {}", p.name));
    }
    format!("{{ {} }}", parts.join(", "))
}
