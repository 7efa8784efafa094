//! `imgforge gc`: the janitor's plan (the default: nothing changes) or `--apply`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;

use super::Global;
use crate::gc::apply::{self, Stage};
use crate::gc::cache;
use crate::gc::leftovers::{self, Leftover};
use crate::gc::local::{self, Local};
use crate::gc::plan::{self, Action, Decision};
use crate::gc::refs::{self, Ami};
use crate::gc::rules::{self, Rules};
use crate::registry::Query;

/// Arguments of `imgforge gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rules: the `[gc]` of this file (a recipe, or a janitor file for many images); the
    /// flags below override it. Default: keep_last 5, keep_days 30, keep_released.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only images of this name (repeatable; default: every image in the registry).
    #[arg(long)]
    pub name: Vec<String>,
    /// Records to keep per image name, among those no channel points at.
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Never retire a record younger than this many days.
    #[arg(long)]
    pub keep_days: Option<u64>,
    /// Retire records older than this many days whatever keep_last says (guards still hold).
    #[arg(long)]
    pub max_days: Option<u64>,
    /// Retire AMIs shared with other accounts too (their use there is invisible here).
    #[arg(long)]
    pub include_shared: bool,
    /// With --apply: also retire AMIs imgforge registered that no record of this registry holds
    /// (listed by every plan; guards still hold).
    #[arg(long)]
    pub include_unrecorded: bool,
    /// Print the plan and change nothing (the default).
    #[arg(long, conflicts_with = "apply")]
    pub plan: bool,
    /// Retire what the plan retires, re-checking every guard just before each action.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: act on this saved plan (`imgforge gc --json > plan.json`, reviewed) instead
    /// of a new one; only what it retires is retired, each re-checked first.
    #[arg(long, requires = "apply")]
    pub plan_file: Option<PathBuf>,
    /// How far --apply goes: deprecate, disable, or deregister (with snapshots, local outputs,
    /// uploads; the record becomes `deleted`).
    #[arg(long, value_enum, default_value = "deregister", requires = "apply")]
    pub stage: Stage,
    /// The registry (default: $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long)]
    pub registry: Option<String>,
    /// Leftovers (snapshots of publishes that never registered an AMI) younger than this are
    /// left alone: a publish may be running (`30m`, `1h`, `2d`; `0`).
    #[arg(long, default_value = "1h", value_parser = rules::parse_grace)]
    pub grace: std::time::Duration,
    /// Also look for leftovers in this region (repeatable; the regions of the records and the
    /// AWS configuration's region are always looked at).
    #[arg(long)]
    pub region: Vec<String>,
    /// Bound the local cache to this many GiB: cached upstreams and fetched parent raws are
    /// evicted least recently used first, except parent raws a live record was built on.
    #[arg(long, value_name = "GIB")]
    pub cache_max: Option<f64>,
    /// Also look in this directory for working files of dead builds and upload ledgers of
    /// unfinished publishes (repeatable; the directories of the records' outputs and the cache
    /// are always looked in).
    #[arg(long)]
    pub dir: Vec<PathBuf>,
    /// The cache (default: $IMGFORGE_CACHE_DIR or /var/cache/imgforge).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Another endpoint for every AWS service (also AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

fn rules_of(a: &Args) -> anyhow::Result<Rules> {
    let mut r = match &a.config {
        Some(p) => rules::load(p)?,
        None => Rules::default(),
    };
    if let Some(n) = a.keep_last {
        r.keep_last = n;
    }
    if let Some(d) = a.keep_days {
        r.keep_days = d;
    }
    if a.max_days.is_some() {
        r.max_days = a.max_days;
    }
    r.include_shared |= a.include_shared;
    r.check()?;
    Ok(r)
}

/// Runs `imgforge gc`.
pub fn run(g: &Global, a: &Args) -> anyhow::Result<()> {
    let rules = rules_of(a)?;
    let mut store = crate::registry::open(a.registry.as_deref()).context("Failed to open the image registry")?;
    let records = store.find(&Query::default())?;
    let names: BTreeSet<&str> = records.iter().filter(|r| a.name.is_empty() || a.name.contains(&r.name)).map(|r| r.name.as_str()).collect();
    let mut logs = Vec::new();
    for n in &names {
        logs.extend(store.channel_log(n, None)?);
    }
    let marks = plan::channel_marks(&logs);
    let candidates: BTreeSet<Ami> = records
        .iter()
        .filter(|r| r.status != "deleted" && names.contains(r.name.as_str()))
        .flat_map(|r| r.amis.iter().map(|(region, ami)| (region.clone(), ami.clone())))
        .collect();
    let evictions = match a.cache_max {
        None => Vec::new(),
        Some(gib) if !(gib >= 0.0 && gib.is_finite()) => anyhow::bail!("--cache-max {gib}: a number of GiB, 0 or more"),
        Some(gib) => {
            let dir = a.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir);
            let needed: BTreeSet<String> = records
                .iter()
                .filter(|r| r.status != "deleted" && r.parent.record.is_some())
                .filter_map(|r| r.parent.digest.strip_prefix("sha256:").map(str::to_string))
                .collect();
            let max = (gib * f64::from(1u32 << 30)) as u64;
            cache::plan(&cache::scan(&dir)?, max, &needed).0
        }
    };
    let cache_dir = a.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir);
    let mut work_dirs: BTreeSet<PathBuf> = records
        .iter()
        .flat_map(|r| r.outputs.iter())
        .filter(|o| !o.path.starts_with("s3://"))
        .filter_map(|o| std::path::Path::new(&o.path).parent().map(std::path::Path::to_path_buf))
        .collect();
    work_dirs.extend([cache_dir.clone(), cache_dir.join("parents")]);
    work_dirs.extend(a.dir.iter().cloned());
    let locals = local::find(&work_dirs, a.grace);
    let mut regions: BTreeSet<String> =
        records.iter().flat_map(|r| r.amis.keys().chain(r.snapshots.keys()).cloned()).chain(a.region.iter().cloned()).collect();
    let known = leftovers::Known {
        snapshots: records.iter().flat_map(|r| r.snapshots.values().cloned()).collect(),
        amis: records.iter().flat_map(|r| r.amis.values().cloned()).collect(),
        ledgers: leftovers::ledgers(&work_dirs),
    };
    let rt = crate::aws::runtime()?;
    let cfg = rt.block_on(async {
        let home = regions.iter().next().map(String::as_str);
        match crate::aws::client::load(home, a.endpoint_url.as_deref()).await {
            Ok(c) => Ok(Some(c)),
            // Nothing on AWS to look at, and no region: a local-only registry.
            Err(e) if regions.is_empty() => {
                tracing::info!("AWS not looked at: {e:#}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })?;
    if let Some(r) = cfg.as_ref().and_then(|c| c.region()) {
        regions.insert(r.to_string());
    }
    let prefixes: BTreeSet<(String, String)> = records
        .iter()
        .flat_map(|r| r.outputs.iter().filter_map(|o| o.url.as_deref()))
        .filter_map(|u| crate::s3::split_object_url(u).ok())
        .map(|(bucket, key)| (bucket, key.rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"))))
        .collect();
    let unfinished = match &cfg {
        None => Vec::new(),
        Some(_) => rt.block_on(async {
            let mut all = Vec::new();
            for (bucket, prefix) in &prefixes {
                all.extend(crate::s3::unfinished_uploads(bucket, prefix, a.grace.as_secs(), a.endpoint_url.as_deref()).await?);
            }
            anyhow::Ok(all)
        })?,
    };
    let (refs, found) = match &cfg {
        None => (refs::Refs::default(), Vec::new()),
        Some(cfg) => rt.block_on(async {
            let refs = if candidates.is_empty() {
                refs::Refs::default()
            } else {
                refs::gather(cfg, &candidates, rules.all_launch_template_versions).await?
            };
            let found = leftovers::find(cfg, &regions, &known, a.grace).await?;
            anyhow::Ok((refs, found))
        })?,
    };
    let cleanup = Cleanup {
        cfg: cfg.as_ref(),
        rules: &rules,
        stage: a.stage,
        include_unrecorded: a.include_unrecorded,
        endpoint_url: a.endpoint_url.as_deref(),
    };
    if let Some(p) = a.plan_file.as_ref().filter(|_| a.apply) {
        #[derive(serde::Deserialize)]
        struct Saved {
            decisions: Vec<Decision>,
        }
        let text = std::fs::read_to_string(p).with_context(|| format!("Failed to read the plan {}", p.display()))?;
        let saved: Saved =
            serde_json::from_str(&text).with_context(|| format!("{} is not a plan written by `imgforge gc --json`", p.display()))?;
        let outcomes = apply::run(&mut *store, &saved.decisions, &rules, a.stage, a.endpoint_url.as_deref())?;
        let mut removed = remove_leftovers(&rt, &cleanup, &found, &unfinished)?;
        removed.extend(evict(&evictions)?);
        for l in &locals {
            removed.push(local::remove(l)?);
        }
        return print_outcomes(g, a.stage, &outcomes, &removed);
    }
    let wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let decisions = plan::decide(&records, &wanted, &marks, &refs, &rules, crate::stamp::unix_now());
    if !a.apply {
        let (leases, takeovers) = (store.leases()?, store.lease_takeovers()?);
        let left = Leftovers { aws: &found, uploads: &unfinished, local: &locals, leases: &leases, takeovers: &takeovers };
        return print_plan(g, &rules, &decisions, &left, &evictions);
    }
    let outcomes = apply::run(&mut *store, &decisions, &rules, a.stage, a.endpoint_url.as_deref())?;
    let mut removed = remove_leftovers(&rt, &cleanup, &found, &unfinished)?;
    removed.extend(evict(&evictions)?);
    for l in &locals {
        removed.push(local::remove(l)?);
    }
    print_outcomes(g, a.stage, &outcomes, &removed)
}

/// Removes the cache entries; what was done.
fn evict(entries: &[cache::Entry]) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for e in entries {
        match std::fs::remove_file(&e.path) {
            Ok(()) => done.push(format!("evicted {} {} ({:.1} MiB)", e.kind, e.path.display(), e.bytes as f64 / f64::from(1u32 << 20))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("Failed to evict {}", e.path.display())),
        }
    }
    Ok(done)
}

/// What `--apply` does to the leftovers.
struct Cleanup<'a> {
    cfg: Option<&'a aws_config::SdkConfig>,
    rules: &'a Rules,
    stage: Stage,
    include_unrecorded: bool,
    endpoint_url: Option<&'a str>,
}

/// Removes the leftovers (each checked again first), retires unrecorded AMIs when asked, and
/// aborts the unfinished uploads; what was done.
fn remove_leftovers(
    rt: &tokio::runtime::Runtime,
    c: &Cleanup<'_>,
    found: &[Leftover],
    unfinished: &[crate::s3::Unfinished],
) -> anyhow::Result<Vec<String>> {
    let Some(cfg) = c.cfg else { return Ok(Vec::new()) };
    rt.block_on(async {
        let mut done = Vec::new();
        for l in found {
            match l.kind {
                "ami" if c.include_unrecorded => done.extend(apply::retire_unrecorded(cfg, l, c.rules, c.stage).await?),
                "ami" => done.push(format!("left unrecorded {} in {} (--include-unrecorded retires it)", l.id, l.region)),
                _ => done.push(leftovers::remove(cfg, l).await?),
            }
        }
        for u in unfinished {
            crate::s3::abort_upload(u, c.endpoint_url).await?;
            done.push(format!("aborted the unfinished upload of s3://{}/{} ({})", u.bucket, u.key, u.upload_id));
        }
        Ok(done)
    })
}

fn print_outcomes(g: &Global, stage: Stage, outcomes: &[apply::Outcome], leftovers: &[String]) -> anyhow::Result<()> {
    if g.json {
        let v = serde_json::json!({ "stage": stage, "outcomes": outcomes, "leftovers": leftovers });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for o in outcomes {
        println!("{} {} ({}): {}", o.result, o.image, o.record, o.details.join("; "));
    }
    for l in leftovers {
        println!("{l}");
    }
    let retired = outcomes.iter().filter(|o| o.result == "retired").count();
    println!("gc --apply ({stage:?}): {retired} retired, {} kept at apply", outcomes.len() - retired);
    Ok(())
}

/// Every kind of leftover the plan lists.
struct Leftovers<'a> {
    aws: &'a [Leftover],
    uploads: &'a [crate::s3::Unfinished],
    local: &'a [Local],
    /// Build leases held now, with the seconds since their heartbeat.
    leases: &'a [(crate::registry::lease::Lease, u64)],
    /// Leases taken over from builders that went silent (builds that died).
    takeovers: &'a [crate::registry::lease::Takeover],
}

fn print_plan(g: &Global, rules: &Rules, decisions: &[Decision], left: &Leftovers<'_>, evictions: &[cache::Entry]) -> anyhow::Result<()> {
    let (found, locals, uploads_left) = (left.aws, left.local, left.uploads);
    let (amis, snapshots, bytes, uploads) = apply::frees(decisions);
    if g.json {
        let v = serde_json::json!({
            "rules": {
                "keep_last": rules.keep_last, "keep_days": rules.keep_days, "max_days": rules.max_days,
                "keep_released": rules.keep_released, "include_shared": rules.include_shared,
                "launch_template_versions": if rules.all_launch_template_versions { "all" } else { "default-and-latest" },
            },
            "decisions": decisions,
            "frees": { "amis": amis, "snapshots": snapshots, "local_bytes": bytes, "uploads": uploads, "by_region": apply::by_region(decisions) },
            "leftovers": found,
            "unfinished_uploads": uploads_left,
            "local_leftovers": locals,
            "cache_evictions": evictions,
            "leases": left.leases.iter().map(|(l, age)| serde_json::json!({ "lease": l, "heartbeat_age": age })).collect::<Vec<_>>(),
            "lease_takeovers": left.takeovers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "gc plan (nothing changes; --apply to act): keep_last = {}, keep_days = {}, max_days = {}, keep_released = {}",
        rules.keep_last,
        rules.keep_days,
        rules.max_days.map_or("none".to_string(), |m| m.to_string()),
        rules.keep_released
    );
    for d in decisions {
        let verdict = if d.action == Action::Retire { "RETIRE" } else { "keep  " };
        let amis: Vec<String> = d.amis.iter().map(|(r, a)| format!("{a} ({r})")).collect();
        println!(
            "{verdict} {} {} ({}){}: {}",
            d.name,
            d.version,
            d.record,
            if amis.is_empty() { String::new() } else { format!(" [{}]", amis.join(", ")) },
            d.reasons.join("; ")
        );
    }
    for l in found {
        println!("LEFTOVER {} {} in {} ({}, started {}): {}", l.kind, l.id, l.region, l.state, l.started, l.why);
    }
    for u in uploads_left {
        println!("LEFTOVER upload s3://{}/{} ({}, started {})", u.bucket, u.key, u.upload_id, crate::stamp::rfc3339(u.initiated));
    }
    for (l, age) in left.leases {
        let silent = *age > crate::registry::lease::MISSED * l.period;
        println!(
            "LEASE {} {} held by {} (heartbeat {age} s ago{})",
            l.name,
            l.layer_key,
            l.who(),
            if silent { "; silent: the next build of this layer takes it over" } else { "" }
        );
    }
    for t in left.takeovers {
        println!(
            "TAKEOVER {} {}: {} was silent {} s, taken over by {} (its working files are swept as LEFTOVER files)",
            t.previous.name,
            t.previous.layer_key,
            t.previous.who(),
            t.silent,
            t.by.who()
        );
    }
    for l in locals {
        let mib = l.bytes as f64 / f64::from(1u32 << 20);
        println!("LEFTOVER {} {} ({mib:.1} MiB, last written {})", l.kind, l.path.display(), crate::stamp::rfc3339(l.modified));
    }
    for e in evictions {
        println!(
            "EVICT {} {} ({:.1} MiB, last used {})",
            e.kind,
            e.path.display(),
            e.bytes as f64 / f64::from(1u32 << 20),
            crate::stamp::rfc3339(e.used)
        );
    }
    let retire = decisions.iter().filter(|d| d.action == Action::Retire).count();
    println!(
        "retire {retire} of {}: frees {amis} AMIs, {snapshots} snapshots, {:.1} MiB of local outputs, {uploads} uploads; {} leftovers",
        decisions.len(),
        bytes as f64 / f64::from(1u32 << 20),
        found.len() + locals.len() + uploads_left.len()
    );
    Ok(())
}
