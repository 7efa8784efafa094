//! `imgforge publish`: a raw disk into an EBS snapshot with the EBS direct APIs, then an AMI.
//!
//! prepare (validate, read the image) → look up the AMI by name (idempotent) → plan the calls
//! (`plan.rs`: start the snapshot → upload blocks → complete → wait → tag → register → wait →
//! share → copy to other regions) → execute them (`execute.rs`; the snapshot is resumed from
//! the ledger when there is one) or print them (`--dry-run`, `dryrun.rs`) → record in the
//! manifest.

pub mod blocks;
pub mod dryrun;
pub mod execute;
pub mod ledger;
pub mod name;
pub mod options;
pub mod plan;
pub mod prepare;
pub mod promote;
pub mod register;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod upload;
pub mod wait;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::progress::Events;
use execute::Run;
use plan::{FindImage, Id, Start};
pub use prepare::{Prepared, Request, prepare};
use register::Ec2;

/// Root device of the AMI.
pub const ROOT_DEVICE: &str = "/dev/xvda";
/// How long to wait for an AMI to become available.
pub const IMAGE_WAIT: Duration = Duration::from_secs(3600);
/// CopyImage requests in flight at once (AWS limits concurrent copies per region).
pub const COPY_CONCURRENCY: usize = 3;

/// The result of a publish, printed and recorded in the manifest (typed there, with its block
/// counts).
pub use crate::manifest::{AwsRecord as Record, BlockStats};

/// Runs a publish (or prints its calls with `dry_run`). Returns the record.
pub fn run(req: &Request, events: &Events) -> anyhow::Result<Option<Record>> {
    let p = prepare(req)?;
    for n in &p.notices {
        events.notice(n);
    }
    if req.dry_run {
        dryrun::print(&p)?;
        return Ok(None);
    }
    let rt = crate::aws::runtime()?;
    let record = rt.block_on(publish(&p, req, events))?;
    save(&p, &record)?;
    Ok(Some(record))
}

async fn publish(p: &Prepared, req: &Request, events: &Events) -> anyhow::Result<Record> {
    let started = Instant::now();
    let cfg = crate::aws::client::load(p.settings.region.as_deref(), req.endpoint_url.as_deref()).await?;
    let region = cfg.region().map(|r| r.to_string()).context("no AWS region")?;
    let mut run = Run::new(p, events, &cfg, &region);
    let found = existing(&run.ec2, p, &plan::lookup(p, &region), req.force).await?;
    let plan = plan::build(p, &region, found.start())?;
    if let Existing::Same(f) = &found {
        events.notice(&format!("AMI {} `{}` already holds this image ({}): reusing it", f.id, p.name, p.source_digest));
        run.ids.image = Some(f.id.clone());
        run.ids.snapshot = f.snapshots.first().cloned();
        run.home(&plan.home).await?;
        forget_ledger(&run.ec2, p, &f.snapshots).await?;
        let mut images = BTreeMap::from([(region.clone(), f.id.clone())]);
        images.extend(execute::copies(&cfg, &run.ids, &plan.copies).await?);
        let snapshot = f.snapshots.first().cloned().unwrap_or_default();
        return Ok(record(p, &region, images, snapshot, true, stats(p, &upload::Outcome::default()), 0, started));
    }
    run.home(&plan.home).await?;
    let ami = run.ids.get(Id::Image)?.to_string();
    let pending = run.pending.take().context("the publish plan made no snapshot")?;
    let mut images = BTreeMap::from([(region.clone(), ami)]);
    images.extend(execute::copies(&cfg, &run.ids, &plan.copies).await?);
    let rec = record(p, &region, images, pending.id.clone(), false, stats(p, &run.outcome), run.outcome.bytes_sent, started);
    let ledger = std::sync::Arc::try_unwrap(pending.ledger).ok();
    if let Some(l) = ledger {
        l.remove()?;
    }
    Ok(rec)
}

/// Block counts of the image and of what the upload did.
fn stats(p: &Prepared, o: &upload::Outcome) -> BlockStats {
    BlockStats {
        total: blocks::block_count(p.input.size),
        data: p.data.len() as u64,
        considered: p.candidates.len() as u64,
        sent: o.sent,
        skipped_zero: o.skipped_zero,
        unchanged: o.unchanged,
        resumed: o.resumed,
        in_snapshot: o.digests.len() as u64,
    }
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

impl Existing {
    /// What the plan starts from.
    fn start(&self) -> Start<'_> {
        match self {
            Existing::None => Start::New,
            Existing::Same(f) => Start::Reuse(f),
            Existing::Replace(f) => Start::Replace(f),
        }
    }
}

/// Looks for our AMI of this name (before anything is created, so re-runs are idempotent).
async fn existing(ec2: &Ec2, p: &Prepared, lookup: &FindImage, force: bool) -> anyhow::Result<Existing> {
    let Some(found) = ec2.find_image(&lookup.name).await? else { return Ok(Existing::None) };
    let digest = found.tags.get("SourceDigest").cloned().unwrap_or_default();
    // Registered by a run of this publish killed before its tags: its upload ledger names it.
    let registered_here = ledger::load(&ledger::path_for(&p.input.path))
        .ok()
        .flatten()
        .is_some_and(|l| l.images.get(&ec2.region) == Some(&found.id) && l.start.is_some_and(|s| s.source_digest == p.source_digest));
    if digest == p.source_digest || registered_here {
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

/// Records the result: in the build manifest when the input was one, else `<image>.aws.json`.
fn save(p: &Prepared, rec: &Record) -> anyhow::Result<()> {
    match &p.input.manifest {
        Some(m) => crate::manifest::update(m, |man| man.aws = Some(rec.clone())),
        None => {
            let mut s = p.input.path.as_os_str().to_owned();
            s.push(".aws.json");
            crate::manifest::write(rec, std::path::Path::new(&s))
                .with_context(|| format!("Failed to write {}", std::path::Path::new(&s).display()))
        }
    }
}
