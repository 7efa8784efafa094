//! The image registry: every successful build is recorded (`record::Record`), and images are
//! found by name, version, status, labels, kernel and installed packages.
//!
//! One trait, [`Store`], with one conformance suite (`tests`) both backends pass: SQLite embedded
//! (`sqlite`; `--registry PATH|sqlite:PATH`, default `/var/lib/imgforge/registry.db`) and
//! PostgreSQL shared by a fleet of build hosts (`postgres`; `--registry postgres://…`), also
//! chosen with `IMGFORGE_REGISTRY`.

pub mod api;
pub mod channel;
pub mod debversion;
pub mod json;
pub mod lease;
pub mod packages;
pub mod page;
pub mod postgres;
pub mod query;
pub mod record;
pub mod sbom;
pub mod sql;
pub mod sqlite;

use std::path::PathBuf;

use anyhow::bail;

pub use channel::ChannelEntry;
pub use query::Query;
pub use record::Record;

/// Where the registry is when nothing says.
pub const DEFAULT_PATH: &str = "/var/lib/imgforge/registry.db";

/// The environment variable naming the registry.
pub const ENV: &str = "IMGFORGE_REGISTRY";

/// A registry backend.
pub trait Store: Send {
    /// Adds a record (its id must be new).
    fn register(&mut self, r: &Record) -> anyhow::Result<()>;
    /// The record with this id, with its packages.
    fn get(&self, id: &str) -> anyhow::Result<Option<Record>>;
    /// Records matching `q` (apart from `descendant_of`), newest first, each with only the
    /// packages the query named.
    fn find(&self, q: &Query) -> anyhow::Result<Vec<Record>>;
    /// Changes a record in one transaction (its status and data; never its packages);
    /// `false` when there is no such record.
    fn update(&mut self, id: &str, change: &mut dyn FnMut(&mut Record)) -> anyhow::Result<bool>;
    /// Appends an entry to a channel's log (the newest entry is where the channel points).
    fn channel_append(&mut self, e: &ChannelEntry) -> anyhow::Result<()>;
    /// A channel's log, oldest first; `channel` `None`: every channel of the image.
    fn channel_log(&self, name: &str, channel: Option<&str>) -> anyhow::Result<Vec<ChannelEntry>>;
    /// Takes the lease on `want.layer_key` for `want.holder`, or says who holds it (see
    /// [`lease::decide`]); one transaction, the database's clock.
    fn lease_acquire(&mut self, want: &lease::Lease) -> anyhow::Result<lease::Acquire>;
    /// Renews `holder`'s lease on `layer_key`; `false` when it is no longer the holder's.
    fn lease_heartbeat(&mut self, layer_key: &str, holder: &str) -> anyhow::Result<bool>;
    /// Gives the lease back (nothing when `holder` no longer holds it).
    fn lease_release(&mut self, layer_key: &str, holder: &str) -> anyhow::Result<()>;
    /// The leases held now, each with the seconds since its heartbeat.
    fn leases(&self) -> anyhow::Result<Vec<(lease::Lease, u64)>>;
    /// Every takeover, oldest first.
    fn lease_takeovers(&self) -> anyhow::Result<Vec<lease::Takeover>>;
    /// Adds what a publish made (AMI ids and snapshot ids, region → id) to a record; `false`
    /// when there is no such record.
    fn add_published(&mut self, id: &str, published: &Published) -> anyhow::Result<bool> {
        self.update(id, &mut |r| published.apply(r))
    }
}

/// The registry `spec` names (`--registry`), else `IMGFORGE_REGISTRY`, else the default.
pub fn open(spec: Option<&str>) -> anyhow::Result<Box<dyn Store>> {
    let env = std::env::var(ENV).ok().filter(|s| !s.is_empty());
    let spec = spec.map(str::to_string).or(env).unwrap_or_else(|| DEFAULT_PATH.to_string());
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return Ok(Box::new(postgres::Postgres::open(&spec)?));
    }
    let path = PathBuf::from(spec.strip_prefix("sqlite:").unwrap_or(&spec));
    Ok(Box::new(sqlite::Sqlite::open(&path)?))
}

/// What a publish adds to a record.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// AMI ids by region.
    pub amis: std::collections::BTreeMap<String, String>,
    /// Snapshot ids by region.
    pub snapshots: std::collections::BTreeMap<String, String>,
    /// Uploaded outputs: local path (absolute) → `s3://bucket/key`.
    pub urls: std::collections::BTreeMap<String, String>,
}

impl Published {
    /// Adds these ids to `r`. Pure.
    pub fn apply(&self, r: &mut Record) {
        r.amis.extend(self.amis.iter().map(|(k, v)| (k.clone(), v.clone())));
        r.snapshots.extend(self.snapshots.iter().map(|(k, v)| (k.clone(), v.clone())));
        for o in &mut r.outputs {
            if let Some(u) = self.urls.get(&o.path) {
                o.url = Some(u.clone());
            }
        }
    }
}

/// `find`, then `channel` (the record it points at) and `descendant_of` (walking each record's
/// parent chain).
pub fn search(store: &dyn Store, q: &Query) -> anyhow::Result<Vec<Record>> {
    let mut found = store.find(q)?;
    if let Some(c) = &q.channel {
        let pointed = match &q.name {
            Some(n) => channel::current(store, n, c)?.map(|e| e.record),
            None => bail!("a channel query needs the image's name"),
        };
        found.retain(|r| pointed.as_deref() == Some(r.id.as_str()));
    }
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
mod pgserver;
#[cfg(test)]
mod tests;
