//! `imgforge publish`: a raw disk into an EBS snapshot with the EBS direct APIs, then an AMI.
//!
//! prepare (validate, read the image) → look up the AMI by name (idempotent) → start or resume
//! the snapshot (ledger) → upload blocks → complete → wait → tag → register → wait → share →
//! copy to other regions → record in the manifest.

pub mod blocks;
pub mod client;
pub mod dryrun;
pub mod ledger;
pub mod name;
pub mod options;
pub mod prepare;
pub mod register;
pub mod retry;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod upload;
pub mod wait;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::progress::Events;
pub use prepare::{Prepared, Request, prepare};
use register::{Ec2, Registration};

/// Root device of the AMI.
pub const ROOT_DEVICE: &str = "/dev/xvda";
/// How long to wait for an AMI to become available.
pub const IMAGE_WAIT: Duration = Duration::from_secs(3600);
/// CopyImage requests in flight at once (AWS limits concurrent copies per region).
pub const COPY_CONCURRENCY: usize = 3;

/// Block counts of one publish.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlockStats {
    /// Blocks of the volume (512 KiB).
    pub total: u64,
    /// Blocks holding data (SEEK_DATA).
    pub data: u64,
    /// Blocks considered (read) by this publish.
    pub considered: u64,
    /// Blocks PUT by this run.
    pub sent: u64,
    /// All-zero data blocks skipped.
    pub skipped_zero: u64,
    /// Blocks equal to the parent's, skipped.
    pub unchanged: u64,
    /// Blocks sent by an interrupted earlier run.
    pub resumed: u64,
    /// Blocks in the snapshot (ChangedBlocksCount).
    pub in_snapshot: u64,
}

/// The result of a publish, printed and recorded in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// AMI name.
    pub name: String,
    /// Home region.
    pub region: String,
    /// AMI ids per region.
    pub images: BTreeMap<String, String>,
    /// The snapshot behind the home-region AMI.
    pub snapshot_id: String,
    /// An AMI of this name and digest already existed and was reused.
    pub reused: bool,
    /// "sha256:<hex>" of the raw.
    pub source_digest: String,
    /// Architecture.
    pub architecture: String,
    /// Boot mode.
    pub boot_mode: String,
    /// Block counts.
    pub blocks: BlockStats,
    /// Bytes PUT by this run.
    pub bytes_sent: u64,
    /// Parent snapshot of a delta upload.
    pub parent_snapshot: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Runs a publish (or prints its calls with `dry_run`). Returns the record.
pub fn run(req: &Request, events: &Events) -> anyhow::Result<Option<Record>> {
    let p = prepare(req)?;
    for n in &p.notices {
        events.notice(n);
    }
    if req.dry_run {
        dryrun::print(&p, req)?;
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("Failed to start the async runtime")?;
    let record = rt.block_on(publish(&p, req, events))?;
    save(&p, &record)?;
    Ok(Some(record))
}

fn bar(total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(total);
    if let Ok(s) = ProgressStyle::with_template("  uploading [{bar:30}] {pos}/{len} blocks, {msg}, {per_sec}, eta {eta}") {
        b.set_style(s.progress_chars("=> "));
    }
    Some(b)
}

async fn publish(p: &Prepared, req: &Request, events: &Events) -> anyhow::Result<Record> {
    let started = Instant::now();
    let cfg = client::load(p.settings.region.as_deref(), req.endpoint_url.as_deref()).await?;
    let region = cfg.region().map(|r| r.to_string()).context("no AWS region")?;
    let ebs = aws_sdk_ebs::Client::new(&cfg);
    let ec2 = Ec2 { client: aws_sdk_ec2::Client::new(&cfg), region: region.clone() };
    let mut stats = BlockStats {
        total: blocks::block_count(p.input.size),
        data: p.data.len() as u64,
        considered: p.candidates.len() as u64,
        ..BlockStats::default()
    };
    let replace = match existing(&ec2, p, req.force).await? {
        Existing::None => None,
        Existing::Replace(found) => Some(found),
        Existing::Same(found) => {
            events.notice(&format!("AMI {} `{}` already holds this image ({}): reusing it", found.id, p.name, p.source_digest));
            if found.state != "available" {
                ec2.wait_image(&found.id, IMAGE_WAIT).await?;
            }
            forget_ledger(&ec2, p, &found.snapshots).await?;
            let mut images = BTreeMap::from([(region.clone(), found.id.clone())]);
            images.extend(copies(&cfg, &ec2, p, &found.id).await?);
            return Ok(record(p, &region, images, found.snapshots.first().cloned().unwrap_or_default(), true, stats, 0, started));
        }
    };
    let pending = snapshot::start_or_resume(&ebs, &ec2, p, events).await?;
    let outcome = if pending.completed {
        upload::Outcome { digests: pending.done.clone(), resumed: pending.done.len() as u64, ..upload::Outcome::default() }
    } else {
        events.step(
            "upload",
            &format!(
                "uploading {} to snapshot {} ({} of {} blocks to read)",
                p.input.path.display(),
                pending.id,
                p.candidates.len(),
                stats.total
            ),
        );
        let t = Instant::now();
        let out = snapshot::fill(&ebs, p, &pending, bar(p.candidates.len() as u64)).await.map_err(|e| {
            e.context(format!(
                "snapshot {} is kept for a resume: run the same publish again (it expires {} minutes after its last write)",
                pending.id,
                snapshot::timeout_minutes(p)
            ))
        })?;
        events.step_done("upload", t.elapsed().as_secs_f64());
        snapshot::complete(&ebs, &pending.id, &out.digests).await?;
        pending.ledger.completed()?;
        out
    };
    stats.sent = outcome.sent;
    stats.skipped_zero = outcome.skipped_zero;
    stats.unchanged = outcome.unchanged;
    stats.resumed = outcome.resumed;
    stats.in_snapshot = outcome.digests.len() as u64;
    tracing::info!(
        "snapshot {}: {} block(s) sent ({} bytes), {} zero, {} unchanged, {} from an earlier run",
        pending.id,
        stats.sent,
        outcome.bytes_sent,
        stats.skipped_zero,
        stats.unchanged,
        stats.resumed
    );
    let ami = register_image(&ec2, p, &pending, replace, events).await?;
    pending.ledger.image(&region, &ami)?;
    let mut images = BTreeMap::from([(region.clone(), ami.clone())]);
    images.extend(copies(&cfg, &ec2, p, &ami).await?);
    let rec = record(p, &region, images, pending.id.clone(), false, stats, outcome.bytes_sent, started);
    let ledger = std::sync::Arc::try_unwrap(pending.ledger).ok();
    if let Some(l) = ledger {
        l.remove()?;
    }
    Ok(rec)
}

/// What the name look-up found.
enum Existing {
    /// No AMI of that name.
    None,
    /// Ours, from the same bytes: reuse it.
    Same(register::Found),
    /// From other bytes, and `--force`: replace it.
    Replace(register::Found),
}

/// Looks for our AMI of this name (before anything is created, so re-runs are idempotent).
async fn existing(ec2: &Ec2, p: &Prepared, force: bool) -> anyhow::Result<Existing> {
    let Some(found) = ec2.find_image(&p.name).await? else { return Ok(Existing::None) };
    let digest = found.tags.get("SourceDigest").cloned().unwrap_or_default();
    if digest == p.source_digest {
        return Ok(Existing::Same(found));
    }
    if !force {
        bail!(
            "an AMI named `{}` already exists in {} ({}) with SourceDigest `{digest}`, not {}: choose another name (e.g. add {{timestamp}}) or pass --force to replace it",
            p.name,
            ec2.region,
            found.id,
            p.source_digest
        );
    }
    Ok(Existing::Replace(found))
}

/// Drops the ledger of an interrupted publish whose AMI turned out to exist, deleting a
/// snapshot of it that the AMI does not use.
async fn forget_ledger(ec2: &Ec2, p: &Prepared, used: &[String]) -> anyhow::Result<()> {
    let path = ledger::path_for(&p.input.path);
    if let Some(s) = ledger::load(&path)?.and_then(|l| l.snapshot).filter(|s| !used.contains(s))
        && let Err(e) = ec2.delete_snapshot(&s).await
    {
        tracing::warn!("{e}");
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("Failed to remove {}", path.display())))
        }
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    p: &Prepared,
    region: &str,
    images: BTreeMap<String, String>,
    snapshot: String,
    reused: bool,
    blocks: BlockStats,
    bytes_sent: u64,
    started: Instant,
) -> Record {
    Record {
        name: p.name.clone(),
        region: region.to_string(),
        images,
        snapshot_id: snapshot,
        reused,
        source_digest: p.source_digest.clone(),
        architecture: p.arch.as_str().into(),
        boot_mode: p.boot.as_str().into(),
        blocks,
        bytes_sent,
        parent_snapshot: p.parent.as_ref().map(|x| x.snapshot.clone()),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Seals, tags and registers the snapshot; a failed registration deletes it.
async fn register_image(
    ec2: &Ec2,
    p: &Prepared,
    pending: &snapshot::Pending,
    replace: Option<register::Found>,
    events: &Events,
) -> anyhow::Result<String> {
    ec2.wait_snapshot(&pending.id, snapshot::SNAPSHOT_WAIT).await?;
    ec2.create_tags(&pending.id, &p.tags).await?;
    if let Some(old) = replace {
        events.notice(&format!("--force: deregistering AMI {} `{}` (other bytes) and deleting its snapshot(s)", old.id, p.name));
        ec2.deregister(&old.id).await?;
        // The AMI's own mapping names its snapshot; our tags find it too (and any left behind).
        let mut snapshots = old.snapshots.clone();
        if let Some(d) = old.tags.get("SourceDigest") {
            snapshots.extend(ec2.find_snapshots_by_tags(&[("BuiltBy", "imgforge"), ("Name", &p.name), ("SourceDigest", d)]).await?);
        }
        snapshots.sort();
        snapshots.dedup();
        snapshots.retain(|s| *s != pending.id);
        for s in &snapshots {
            // A failure is a warning naming the snapshot to delete by hand.
            let _logged = ec2.cleanup_snapshot(s).await;
        }
    }
    let reg = registration(p, &pending.id)?;
    let ami = match ec2.register(&reg).await {
        Ok(a) => a,
        Err(e) => {
            // A failure is a warning naming the snapshot to delete by hand.
            let _logged = ec2.cleanup_snapshot(&pending.id).await;
            drop_ledger(p);
            return Err(e.into());
        }
    };
    tracing::info!("registered {ami} `{}` in {}", p.name, ec2.region);
    ec2.ensure_image_tags(&ami, &p.name, &p.tags).await?;
    match ec2.wait_image(&ami, IMAGE_WAIT).await {
        Ok(()) => {}
        Err(e @ register::Ec2Error::Wait { source: wait::WaitError::Failed { .. }, .. }) => {
            let deregistered = ec2.deregister(&ami).await.map_err(|d| d.to_string());
            // Tried even when the AMI would not deregister: it may be gone already.
            let deleted = ec2.cleanup_snapshot(&pending.id).await;
            drop_ledger(p);
            return Err(anyhow::Error::new(e).context(failed_image_context(&ami, &pending.id, &deregistered, &deleted)));
        }
        Err(e) => return Err(e.into()),
    }
    ec2.share_image(&ami, &p.settings.launch_permissions).await?;
    ec2.share_snapshot(&pending.id, &p.settings.launch_permissions).await?;
    Ok(ami)
}

/// The error context of a registered AMI that failed, from what its cleanup did. Pure.
pub fn failed_image_context(ami: &str, snapshot: &str, deregistered: &Result<(), String>, deleted: &Result<(), String>) -> String {
    match (deregistered, deleted) {
        (Ok(()), Ok(())) => format!("AMI {ami} failed: deregistered it and deleted snapshot {snapshot}"),
        (Ok(()), Err(e)) => {
            format!("AMI {ami} failed: deregistered it, but deleting snapshot {snapshot} failed ({e}): delete snapshot {snapshot} by hand")
        }
        (Err(e), Ok(())) => {
            format!("AMI {ami} failed: deleted snapshot {snapshot}, but deregistering the AMI failed ({e}): deregister AMI {ami} by hand")
        }
        (Err(d), Err(e)) => format!(
            "AMI {ami} failed, and its cleanup too: deregistering it failed ({d}), deleting snapshot {snapshot} failed ({e}): deregister AMI {ami}, then delete snapshot {snapshot}, by hand"
        ),
    }
}

/// Removes the ledger of a publish whose snapshot is gone; a failure is a warning.
fn drop_ledger(p: &Prepared) {
    let path = ledger::path_for(&p.input.path);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("Failed to remove {}: {e}; remove it by hand before publishing this image again", path.display());
        }
        _ => {}
    }
}

/// The RegisterImage parameters.
pub fn registration(p: &Prepared, snapshot: &str) -> anyhow::Result<Registration> {
    Ok(Registration {
        name: p.name.clone(),
        description: p.description.clone(),
        architecture: p.arch.as_str().into(),
        root_device: ROOT_DEVICE.into(),
        snapshot: snapshot.into(),
        volume_size: i32::try_from(p.volume_gib).context("volume size out of range")?,
        volume_type: p.settings.volume_type.clone(),
        boot_mode: p.boot.as_str().into(),
        uefi_data: p.settings.uefi_data.clone(),
        tpm: p.settings.tpm_support,
        imds_v2: p.settings.imds_v2,
        ena: p.settings.ena,
        sriov: p.settings.sriov,
        tags: p.tags.clone(),
    })
}

/// CopyImage to each listed region (at most [`COPY_CONCURRENCY`] at once), looking up first.
async fn copies(cfg: &aws_config::SdkConfig, home: &Ec2, p: &Prepared, ami: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(COPY_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for r in p.settings.copy_to_regions.iter().filter(|r| **r != home.region) {
        let ec2 = Ec2 { client: client::ec2_in(cfg, r), region: r.clone() };
        let (sem, name, desc, src_region, src, perms) = (
            sem.clone(),
            p.name.clone(),
            p.description.clone(),
            home.region.clone(),
            ami.to_string(),
            p.settings.launch_permissions.clone(),
        );
        let token: String = blake3::hash(format!("{src} {r} {name}").as_bytes()).to_hex()[..32].to_string();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let id = match ec2.find_image(&name).await? {
                Some(f) => f.id,
                None => ec2.copy_from(&src_region, &src, &name, &desc, &token).await?,
            };
            ec2.wait_image(&id, IMAGE_WAIT).await?;
            ec2.share_image(&id, &perms).await?;
            Ok::<_, register::Ec2Error>((ec2.region.clone(), id))
        });
    }
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((region, id))) => {
                tracing::info!("copied to {region}: {id}");
                out.insert(region, id);
            }
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("Failed to copy {ami} to {} region(s): {}", errors.len(), errors.join("; "));
    }
    Ok(out)
}

/// Records the result: in the build manifest when the input was one, else `<image>.aws.json`.
fn save(p: &Prepared, rec: &Record) -> anyhow::Result<()> {
    match &p.input.manifest {
        Some(m) => {
            let text = std::fs::read_to_string(m).with_context(|| format!("Failed to read {}", m.display()))?;
            let mut v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", m.display()))?;
            v["aws"] = serde_json::to_value(rec)?;
            crate::manifest::write(&v, m).with_context(|| format!("Failed to update {}", m.display()))
        }
        None => {
            let mut s = p.input.path.as_os_str().to_owned();
            s.push(".aws.json");
            crate::manifest::write(rec, std::path::Path::new(&s))
                .with_context(|| format!("Failed to write {}", std::path::Path::new(&s).display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_ami_message_says_what_the_cleanup_did() {
        let ok = Ok(());
        let no = |e: &str| Err(e.to_string());
        let m = failed_image_context("ami-1", "snap-1", &ok, &ok);
        assert_eq!(m, "AMI ami-1 failed: deregistered it and deleted snapshot snap-1");
        let m = failed_image_context("ami-1", "snap-1", &ok, &no("InUse"));
        assert!(m.contains("deregistered it") && m.contains("InUse") && m.ends_with("delete snapshot snap-1 by hand"), "{m}");
        let m = failed_image_context("ami-1", "snap-1", &no("denied"), &ok);
        assert!(m.contains("deleted snapshot snap-1") && m.contains("denied") && m.ends_with("deregister AMI ami-1 by hand"), "{m}");
        assert!(!m.contains("deregistered it"), "{m}");
        let m = failed_image_context("ami-1", "snap-1", &no("denied"), &no("InUse"));
        assert!(
            m.contains("denied") && m.contains("InUse") && m.ends_with("deregister AMI ami-1, then delete snapshot snap-1, by hand"),
            "{m}"
        );
        assert!(!m.contains("deregistered it") && !m.contains("deleted snapshot"), "{m}");
    }
}
