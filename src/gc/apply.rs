//! `imgforge gc --apply`: retires the records the plan retires, one by one, each only after its
//! guards and rules were checked again against a fresh read of the registry and of AWS (a
//! launch template or instance that appeared since the plan keeps the image).
//!
//! Stages (EC2 Image Builder's ladder): `deprecate` (EnableImageDeprecation, now), `disable`
//! (DisableImage: the AMI goes private and cannot be launched), `deregister` (DeregisterImage,
//! then the AMI's snapshots — those the AMI names, the one recorded at publish, and those tagged
//! with the record's id — the local outputs, their uploaded copies, and the record marked
//! `deleted`, its history kept).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, anyhow};
use serde::Serialize;

use super::plan::{self, Action, Decision};
use super::refs::{self, Ami};
use super::rules::Rules;
use crate::aws::retry::{Policy, retry};
use crate::publish::register::Ec2;
use crate::registry::{Query, Store};

/// How far to retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// EC2 deprecation time set to now: hidden from DescribeImages listings, still launchable.
    Deprecate,
    /// DisableImage: private, not launchable; re-enable with EnableImage.
    Disable,
    /// DeregisterImage and delete its snapshots, local outputs and uploads; the record is `deleted`.
    Deregister,
}

/// What happened to one record the plan retired.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Record id.
    pub record: String,
    /// Image name and version, for people.
    pub image: String,
    /// `retired` or `kept`.
    pub result: &'static str,
    /// Kept: the guards or rules that hold now. Retired: what was done.
    pub details: Vec<String>,
}

/// Retires the plan's `retire` decisions at `stage`, re-checking each first.
pub fn run(
    store: &mut dyn Store,
    decisions: &[Decision],
    rules: &Rules,
    stage: Stage,
    endpoint_url: Option<&str>,
) -> anyhow::Result<Vec<Outcome>> {
    let rt = crate::aws::runtime()?;
    let mut out = Vec::new();
    for d in decisions.iter().filter(|d| d.action == Action::Retire) {
        out.push(rt.block_on(retire(store, d, rules, stage, endpoint_url))?);
    }
    Ok(out)
}

async fn retire(store: &mut dyn Store, d: &Decision, rules: &Rules, stage: Stage, endpoint_url: Option<&str>) -> anyhow::Result<Outcome> {
    let image = format!("{} {}", d.name, d.version);
    let kept = |details: Vec<String>| Outcome { record: d.record.clone(), image: image.clone(), result: "kept", details };
    // A fresh look at the registry and at AWS, just before acting.
    let records = store.find(&Query::default())?;
    let Some(r) = records.iter().find(|r| r.id == d.record).cloned() else { return Ok(kept(vec!["the record is gone".into()])) };
    if r.status == "deleted" {
        return Ok(kept(vec!["already deleted".into()]));
    }
    let marks = plan::channel_marks(&store.channel_log(&r.name, None)?);
    let candidates: BTreeSet<Ami> = r.amis.iter().map(|(region, ami)| (region.clone(), ami.clone())).collect();
    let (refs, cfg) = if candidates.is_empty() {
        (refs::Refs::default(), None)
    } else {
        let home = candidates.iter().next().map(|(region, _)| region.as_str());
        let cfg = crate::aws::client::load(home, endpoint_url).await?;
        (refs::gather(&cfg, &candidates, rules.all_launch_template_versions).await?, Some(cfg))
    };
    let now = crate::stamp::unix_now();
    let again = plan::decide(&records, std::slice::from_ref(&r.name), &marks, &refs, rules, now);
    match again.iter().find(|x| x.record == r.id) {
        Some(x) if x.action == Action::Retire => {}
        Some(x) => return Ok(kept(x.reasons.iter().map(|w| format!("kept at apply: {w}")).collect())),
        None => return Ok(kept(vec!["no longer a candidate".into()])),
    }
    let mut done = Vec::new();
    if let Some(cfg) = &cfg {
        for (region, ami) in &r.amis {
            if !refs.exists.contains(&(region.clone(), ami.clone())) {
                done.push(format!("{ami} in {region} was already gone"));
                continue;
            }
            let ec2 = Ec2 { client: crate::aws::client::ec2_in(cfg, region), region: region.clone() };
            done.extend(act(&ec2, ami, r.snapshots.get(region), Some(&r.id), stage).await?);
        }
    }
    if stage == Stage::Deregister {
        for o in r.outputs.iter().filter(|o| !o.path.starts_with("s3://")) {
            let p = std::path::Path::new(&o.path);
            if p.symlink_metadata().is_ok() {
                std::fs::remove_file(p).with_context(|| format!("Failed to remove {}", p.display()))?;
                done.push(format!("removed {}", p.display()));
            }
        }
        let uploads: Vec<String> = r.outputs.iter().filter_map(|o| o.url.clone()).collect();
        crate::s3::delete(&uploads, endpoint_url).await?;
        done.extend(uploads.iter().map(|u| format!("deleted {u}")));
        store.update(&r.id, &mut |x| x.status = "deleted".into()).context("Failed to mark the record deleted")?;
        done.push("record marked deleted".into());
    }
    Ok(Outcome { record: r.id.clone(), image, result: "retired", details: done })
}

/// Retires an AMI imgforge registered that no record holds (`--include-unrecorded`), unless a
/// guard holds now; what was done.
pub async fn retire_unrecorded(
    cfg: &aws_config::SdkConfig,
    l: &super::leftovers::Leftover,
    rules: &Rules,
    stage: Stage,
) -> anyhow::Result<Vec<String>> {
    let key: Ami = (l.region.clone(), l.id.clone());
    let refs = refs::gather(cfg, &BTreeSet::from([key.clone()]), rules.all_launch_template_versions).await?;
    if !refs.exists.contains(&key) {
        return Ok(vec![format!("{} in {} was already gone", l.id, l.region)]);
    }
    let as_record = crate::registry::Record { amis: BTreeMap::from([key.clone()]), ..crate::registry::Record::default() };
    let why = plan::guards(&as_record, &[], &refs, rules, crate::stamp::unix_now());
    if !why.is_empty() {
        return Ok(why.into_iter().map(|w| format!("kept unrecorded {}: {w}", l.id)).collect());
    }
    let ec2 = Ec2 { client: crate::aws::client::ec2_in(cfg, &l.region), region: l.region.clone() };
    let mut done = act(&ec2, &l.id, None, None, stage).await?;
    if stage == Stage::Deregister {
        let forgot = super::leftovers::forget_ledger(l)?;
        if let Some(s) = forgot.strip_prefix(" and its ") {
            done.push(format!("removed {s}"));
        }
    }
    Ok(done)
}

/// One AMI's stage. Deregistering also deletes its snapshots: those it names, the one recorded at
/// publish, and those tagged with its record's id.
async fn act(ec2: &Ec2, ami: &str, recorded: Option<&String>, record_id: Option<&str>, stage: Stage) -> anyhow::Result<Vec<String>> {
    let region = ec2.region.clone();
    let failed = |what: String| move |f: crate::aws::retry::Failed| anyhow!("Failed to {what} in {region}: {f}");
    match stage {
        Stage::Deprecate => {
            let at = aws_sdk_ec2::primitives::DateTime::from_secs(i64::try_from(crate::stamp::unix_now()).unwrap_or(i64::MAX));
            retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("EnableImageDeprecation {ami}"), || {
                ec2.client.enable_image_deprecation().image_id(ami).deprecate_at(at).send()
            })
            .await
            .map_err(failed(format!("deprecate {ami}")))?;
            Ok(vec![format!("deprecated {ami} in {}", ec2.region)])
        }
        Stage::Disable => {
            retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DisableImage {ami}"), || {
                ec2.client.disable_image().image_id(ami).send()
            })
            .await
            .map_err(failed(format!("disable {ami}")))?;
            Ok(vec![format!("disabled {ami} in {}", ec2.region)])
        }
        Stage::Deregister => {
            // Its snapshots, read before it goes: the ones it names and the one recorded.
            let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeImages {ami}"), || {
                ec2.client.describe_images().image_ids(ami).send()
            })
            .await
            .map_err(failed(format!("describe {ami}")))?;
            let mut snaps: BTreeSet<String> = out
                .images()
                .iter()
                .flat_map(|i| i.block_device_mappings())
                .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
                .collect();
            snaps.extend(recorded.cloned());
            if let Some(id) = record_id {
                snaps.extend(ec2.find_snapshots_by_tags(&[("RecordId", id)]).await?);
            }
            ec2.deregister(ami).await?;
            let mut done = vec![format!("deregistered {ami} in {}", ec2.region)];
            for s in snaps {
                match ec2.delete_snapshot(&s).await {
                    Ok(()) => done.push(format!("deleted snapshot {s}")),
                    Err(e) if e.to_string().contains("NotFound") => done.push(format!("snapshot {s} was already gone")),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(done)
        }
    }
}

/// What the plan frees: (AMIs, snapshots, local bytes, uploads) of the retired decisions. Pure.
pub fn frees(decisions: &[Decision]) -> (usize, usize, u64, usize) {
    let r: Vec<&Decision> = decisions.iter().filter(|d| d.action == Action::Retire).collect();
    (
        r.iter().map(|d| d.amis.len()).sum(),
        r.iter().map(|d| d.snapshots.len()).sum(),
        r.iter().flat_map(|d| d.local.values()).sum(),
        r.iter().map(|d| d.uploads.len()).sum(),
    )
}

/// Region → AMIs of the retired decisions, for the plan's listing. Pure.
pub fn by_region(decisions: &[Decision]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.action == Action::Retire) {
        for (region, ami) in &d.amis {
            out.entry(region.clone()).or_default().push(ami.clone());
        }
    }
    out
}
