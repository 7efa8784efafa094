//! `[source] parent`: the registry query resolved at build start to one record and its raw
//! output (on this host, or fetched from the S3 URL it was uploaded to), which is then verified
//! like any pinned source (sha256 recorded at its build).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::error::UsageError;
use crate::progress::Events;
use crate::registry::record::Record;
use crate::registry::{Query, Store};
use crate::source::plan::{Location, PinnedDigest, SourcePlan};

/// The parent a build starts from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Its record.
    pub record: Record,
    /// Its raw output on this host, or where it was uploaded.
    pub raw: Raw,
    /// The raw's recorded sha256 (hex).
    pub sha256: String,
}

/// Where a parent's raw is.
#[derive(Debug, Clone)]
pub enum Raw {
    /// On this host, as recorded.
    Local(PathBuf),
    /// Only in S3 (`s3://bucket/key`).
    S3(String),
}

impl Resolved {
    /// The source to verify and convert: the raw (fetched into `cache` first when it is only
    /// in S3, kept there by digest), checked against its recorded digest.
    pub fn source_plan(&self, cache: &Path, endpoint_url: Option<&str>, events: &Events) -> anyhow::Result<SourcePlan> {
        let path = match &self.raw {
            Raw::Local(p) => p.clone(),
            Raw::S3(url) => fetch(url, &self.sha256, cache, endpoint_url, events)?,
        };
        Ok(SourcePlan {
            image: Location::Path(path),
            checksums: None,
            pinned: Some(PinnedDigest { algo: "sha256", hex: self.sha256.clone() }),
            signature: None,
            signing_key: None,
        })
    }

    /// `NAME VERSION (ID)`, for people.
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.record.name, self.record.version, self.record.id)
    }
}

/// The raw output of `r`: on this host as recorded, else uploaded; else why not.
fn raw_of(r: &Record) -> Result<(Raw, String), String> {
    let Some(raw) = r.outputs.iter().find(|o| o.format == "raw") else { return Err("it has no raw output".into()) };
    if raw.in_place() {
        return Ok((Raw::Local(PathBuf::from(&raw.path)), raw.sha256.clone()));
    }
    if let Some(url) = &raw.url {
        return Ok((Raw::S3(url.clone()), raw.sha256.clone()));
    }
    match std::fs::metadata(&raw.path) {
        Ok(_) => Err(format!("its raw output {} was written over since (and it was not uploaded)", raw.path)),
        Err(_) => Err(format!("its raw output {} is not on this host (and it was not uploaded)", raw.path)),
    }
}

/// The parent raw at `url` in the cache (`<cache>/parents/sha256-<hex>.raw`), downloaded when
/// it is not there yet; a download whose digest is not `sha256` is deleted.
fn fetch(url: &str, sha256: &str, cache: &Path, endpoint_url: Option<&str>, events: &Events) -> anyhow::Result<PathBuf> {
    let dir = cache.join("parents");
    let dest = dir.join(format!("sha256-{sha256}.raw"));
    if dest.is_file() {
        events.output("parent", &format!("using the cached download of {url}"));
        crate::source::fetch::mark_used(&dest);
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(&dir)
        .with_context(|| format!("Failed to create a file in {}", dir.display()))?;
    let started = std::time::Instant::now();
    let got = crate::s3::download(url, tmp.path(), endpoint_url)?;
    if got != sha256 {
        bail!("{url} has sha256 {got}, not the {sha256} recorded at its build: the object was replaced; rebuild the parent");
    }
    tmp.persist(&dest).with_context(|| format!("Failed to store {} in the cache", dest.display()))?;
    events.output("parent", &format!("fetched {url} ({:.1} s)", started.elapsed().as_secs_f64()));
    Ok(dest)
}

/// The newest record matching `q` whose raw output is here. None: a usage error (exit 2)
/// listing the nearest candidates (the newest of that name) and why each was rejected.
pub fn resolve(store: &dyn Store, q: &Query) -> anyhow::Result<Resolved> {
    let mut rejected = Vec::new();
    for r in crate::registry::search(store, q)? {
        if r.status == "revoked" {
            rejected.push(format!("{} {} ({}): revoked{}", r.name, r.version, r.id, crate::registry::channel::revoked_why(&r)));
            continue;
        }
        if r.status == "deleted" {
            rejected.push(format!("{} {} ({}): retired by imgforge gc", r.name, r.version, r.id));
            continue;
        }
        match raw_of(&r) {
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
        let mut why = q.why_not(&full);
        if let Some(c) = &q.channel {
            match crate::registry::channel::current(store, &name, c)? {
                Some(e) if e.record == r.id => {}
                Some(e) => why.push(format!("channel {c} points at {} ({})", e.version, e.record)),
                None => why.push(format!("{name} has no channel {c}")),
            }
        }
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
    if let Some(c) = &q.channel {
        parts.push(format!("channel = {c:?}"));
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
