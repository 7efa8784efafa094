//! `imgforge promote`, `rollback`, `revoke` and `channels`: channels (name → record, with
//! history) and revocation, in the registry.

use anyhow::Context;

use super::{Global, UsageError};
use crate::registry::{ChannelEntry, Store, channel};

/// Arguments of `imgforge promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// A record id, an image name (its newest record) or NAME@VERSION.
    pub image: String,
    /// The channel to point at it (`prod`, `staging`…).
    #[arg(long)]
    pub channel: String,
    /// Promote even without a passing test run for the record's raw (needs --reason).
    #[arg(long)]
    pub force: bool,
    /// Why (kept in the channel's history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The registry (default: $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
}

/// Arguments of `imgforge rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The image name.
    pub name: String,
    /// The channel to point back at the record before.
    #[arg(long)]
    pub channel: String,
    /// Why (kept in the channel's history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The registry.
    #[arg(long)]
    pub registry: Option<String>,
}

/// Arguments of `imgforge revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// A record id, an image name (its newest record) or NAME@VERSION.
    pub image: String,
    /// Why (required; kept on the record).
    #[arg(long)]
    pub reason: String,
    /// Revoke every image built on it too (at any depth).
    #[arg(long)]
    pub cascade: bool,
    /// The registry.
    #[arg(long)]
    pub registry: Option<String>,
}

/// Arguments of `imgforge channels`.
#[derive(Debug, clap::Args)]
pub struct ChannelsArgs {
    /// The image name.
    pub name: String,
    /// Every entry of the history, not only where each channel points now.
    #[arg(long)]
    pub history: bool,
    /// The registry.
    #[arg(long)]
    pub registry: Option<String>,
}

fn open(registry: Option<&str>) -> anyhow::Result<Box<dyn Store>> {
    crate::registry::open(registry).context("Failed to open the image registry")
}

fn record(store: &dyn Store, what: &str) -> anyhow::Result<crate::registry::Record> {
    crate::registry::resolve(store, what)?
        .ok_or_else(|| UsageError(format!("the registry has no image {what:?} (a record id, a name or NAME@VERSION)")).into())
}

fn line(e: &ChannelEntry) -> String {
    let mut s = format!("{} {} → {} {} ({}) by {} at {}", e.name, e.channel, e.name, e.version, e.record, e.actor, e.at);
    if e.action != "promote" {
        s.push_str(&format!(" [{}]", e.action));
    }
    if e.forced {
        s.push_str(" [forced, untested]");
    }
    if let Some(r) = &e.reason {
        s.push_str(&format!(": {r}"));
    }
    s
}

fn print(g: &Global, value: &impl serde::Serialize, text: &str) -> anyhow::Result<()> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

/// `imgforge promote`.
pub fn promote(g: &Global, a: &PromoteArgs) -> anyhow::Result<()> {
    let mut store = open(a.registry.as_deref())?;
    let r = record(&*store, &a.image)?;
    let before = channel::current(&*store, &r.name, &a.channel)?;
    let e = channel::promote(&mut *store, &r, &a.channel, a.force, a.reason.as_deref())?;
    let was = before.map_or_else(|| "new channel".to_string(), |b| format!("was {} ({})", b.version, b.record));
    print(g, &e, &format!("promoted: {} ({was})", line(&e)))
}

/// `imgforge rollback`.
pub fn rollback(g: &Global, a: &RollbackArgs) -> anyhow::Result<()> {
    let mut store = open(a.registry.as_deref())?;
    let (e, from) = channel::rollback(&mut *store, &a.name, &a.channel, a.reason.as_deref())?;
    print(g, &e, &format!("rolled back: {} (was {from})", line(&e)))
}

/// `imgforge revoke`.
pub fn revoke(g: &Global, a: &RevokeArgs) -> anyhow::Result<()> {
    let mut store = open(a.registry.as_deref())?;
    let r = record(&*store, &a.image)?;
    let done = channel::revoke(&mut *store, &r, a.cascade, &a.reason)?;
    let ids: Vec<&str> = done.iter().map(|r| r.id.as_str()).collect();
    let text: Vec<String> = done.iter().map(|r| format!("revoked: {} {} ({})", r.name, r.version, r.id)).collect();
    let text = if text.is_empty() { format!("{} {} ({}) was already revoked", r.name, r.version, r.id) } else { text.join("\n") };
    print(g, &ids, &text)
}

/// `imgforge channels`.
pub fn channels(g: &Global, a: &ChannelsArgs) -> anyhow::Result<()> {
    let store = open(a.registry.as_deref())?;
    let log = store.channel_log(&a.name, None)?;
    let shown: Vec<&ChannelEntry> = if a.history {
        log.iter().collect()
    } else {
        let mut latest: std::collections::BTreeMap<&str, &ChannelEntry> = std::collections::BTreeMap::new();
        for e in &log {
            latest.insert(&e.channel, e);
        }
        latest.into_values().collect()
    };
    let text: Vec<String> = shown.iter().map(|e| line(e)).collect();
    print(g, &shown, &text.join("\n"))
}
