//! `imgforge promote`, `rollback`, `revoke` and `channels`: channels (name → record, with
//! history) and revocation, in the registry; for a record with AMIs, the AWS side of a channel
//! move too (`publish::promote`: copies, launch permissions, the `Channel` tag, the SSM
//! parameter), made before the registry changes so that a failed call changes nothing there.

use std::path::PathBuf;

use anyhow::Context;

use super::{Global, UsageError};
use crate::publish::options::PromoteSettings;
use crate::publish::promote::{self, Move, Side};
use crate::registry::{ChannelEntry, Record, Store, channel};

/// How a channel move reaches AWS (`promote`, `rollback`).
#[derive(Debug, clap::Args)]
pub struct AwsArgs {
    /// Take `[aws.promote]` from this recipe (default: the recipe the record was built from,
    /// when it is still there; else the defaults: SSM parameter /imgforge/NAME/CHANNEL).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Print every AWS call (JSON lines on stdout) and change nothing, on AWS or in the registry.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave AWS alone even when the record has AMIs: move the channel in the registry only.
    #[arg(long, conflicts_with = "dry_run")]
    pub no_aws: bool,
    /// Another endpoint for every AWS service (also AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

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
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Arguments of `imgforge rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The image name (optional when only one image has the channel).
    pub name: Option<String>,
    /// The channel to point back at the record before.
    #[arg(long)]
    pub channel: String,
    /// Why (kept in the channel's history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The registry.
    #[arg(long)]
    pub registry: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
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
    channel::promotable(&r, &a.channel, a.force, a.reason.as_deref())?;
    let from = before.as_ref().map(|b| b.record.as_str());
    if !on_aws(&mut *store, &r, from, &a.channel, &a.aws)? {
        return Ok(());
    }
    let e = channel::promote(&mut *store, &r, &a.channel, a.force, a.reason.as_deref())?;
    let was = before.map_or_else(|| "new channel".to_string(), |b| format!("was {} ({})", b.version, b.record));
    print(g, &e, &format!("promoted: {} ({was})", line(&e)))
}

/// `imgforge rollback`.
pub fn rollback(g: &Global, a: &RollbackArgs) -> anyhow::Result<()> {
    let mut store = open(a.registry.as_deref())?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => only_image_on(&*store, &a.channel)?,
    };
    let (target, current) = channel::previous(&*store, &name, &a.channel)?;
    if !on_aws(&mut *store, &target, Some(&current), &a.channel, &a.aws)? {
        return Ok(());
    }
    let (e, from) = channel::rollback(&mut *store, &name, &a.channel, a.reason.as_deref())?;
    print(g, &e, &format!("rolled back: {} (was {from})", line(&e)))
}

/// The one image that has `channel` (`rollback --channel C` without a name); none or several
/// is a usage error naming them.
fn only_image_on(store: &dyn crate::registry::Store, channel: &str) -> anyhow::Result<String> {
    let mut names: Vec<String> = store.find(&crate::registry::Query::default())?.into_iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    let mut on = Vec::new();
    for n in names {
        if !store.channel_log(&n, Some(channel))?.is_empty() {
            on.push(n);
        }
    }
    match on.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(UsageError(format!("no image has a channel {channel:?}: nothing to roll back")).into()),
        many => Err(UsageError(format!(
            "several images have a channel {channel:?} ({}): name one, e.g. imgforge rollback {} --channel {channel}",
            many.join(", "),
            many[0]
        ))
        .into()),
    }
}

/// A record's AMIs, for a channel move.
fn side(r: &Record) -> Side {
    Side { record: r.id.clone(), version: r.version.clone(), amis: r.amis.clone(), snapshots: r.snapshots.clone() }
}

/// `[aws.promote]` from `--recipe`, else from the record's recipe when it is still there.
fn settings(r: &Record, a: &AwsArgs) -> anyhow::Result<PromoteSettings> {
    let path = match &a.recipe {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(&r.recipe);
            if r.recipe.is_empty() || !p.is_file() {
                tracing::warn!(
                    "the recipe {} was built from ({}) is not here: default [aws.promote] settings (give --recipe)",
                    r.id,
                    if r.recipe.is_empty() { "unknown" } else { &r.recipe }
                );
                return Ok(PromoteSettings::default());
            }
            p
        }
    };
    let plan = crate::recipe::plan::load_plan(&path, &Default::default())?;
    Ok(plan.aws.map(|s| s.promote).unwrap_or_default())
}

/// The AWS side of pointing `channel` at `to` (away from the record `from`). `Ok(false)`: a
/// dry run, which printed the calls and must change nothing else.
fn on_aws(store: &mut dyn Store, to: &Record, from: Option<&str>, channel: &str, a: &AwsArgs) -> anyhow::Result<bool> {
    if a.no_aws || to.amis.is_empty() {
        if a.dry_run {
            eprintln!("dry run: {} {} has no AMI, nothing to do on AWS; nothing changed", to.name, to.version);
        }
        return Ok(!a.dry_run);
    }
    let settings = settings(to, a)?;
    let from = match from.filter(|f| *f != to.id) {
        Some(id) => store.get(id)?.map(|r| side(&r)),
        None => None,
    };
    let m = Move { name: &to.name, channel, to: side(to), from, settings: &settings };
    if a.dry_run {
        for c in promote::plan(&m) {
            println!("{}", serde_json::to_string(&c)?);
        }
        eprintln!("dry run: nothing changed on AWS or in the registry");
        return Ok(false);
    }
    let done = promote::execute(&m, a.endpoint_url.as_deref())?;
    if !done.copied.is_empty() {
        store
            .update(&to.id, &mut |x| {
                x.amis.extend(done.copied.clone());
                x.snapshots.extend(done.copied_snapshots.clone());
            })
            .context("Failed to record the promotion's copies in the registry")?;
    }
    for (region, ami) in &done.images {
        let ssm = done.ssm_parameter.as_deref().map_or_else(String::new, |p| format!(", {p} = {ami}"));
        eprintln!("{region}: {ami} tagged {}={channel}{ssm}", promote::CHANNEL_TAG);
    }
    for region in promote::left_behind(&m) {
        tracing::warn!(
            "{region}: {} {} has no AMI there, so the SSM parameter still names the channel's previous AMI",
            to.name,
            to.version
        );
    }
    Ok(true)
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
