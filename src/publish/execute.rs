//! The real run: the planned calls (`plan.rs`) executed against the SDK, in order, binding the
//! ids they create. StartSnapshot resumes the ledger's snapshot when there is one (and then
//! skips the blocks, or the whole upload, already done). A failure cleans up what this run
//! made and says what is left to delete by hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};

use super::plan::{Call, DeleteSnapshots, Id, RegionCalls, Registration, Sum};
use super::prepare::Prepared;
use super::register::{Ec2, Ec2Error};
use super::snapshot::{self, Pending};
use super::upload::Outcome;
use super::{COPY_CONCURRENCY, IMAGE_WAIT, blocks, ledger, wait};
use crate::aws::client;
use crate::progress::Events;

/// The ids bound so far.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    /// [`Id::Snapshot`].
    pub snapshot: Option<String>,
    /// [`Id::Image`].
    pub image: Option<String>,
    /// [`Id::Copy`] (per copy region).
    pub copy: Option<String>,
}

impl Ids {
    /// The id `id` stands for.
    pub fn get(&self, id: Id) -> anyhow::Result<&str> {
        let v = match id {
            Id::Snapshot => &self.snapshot,
            Id::Image => &self.image,
            Id::Copy => &self.copy,
        };
        v.as_deref().with_context(|| format!("the publish plan uses {id:?} before a call made it"))
    }
}

/// The home region's run.
pub struct Run<'a> {
    p: &'a Prepared,
    events: &'a Events,
    ebs: aws_sdk_ebs::Client,
    /// EC2 in the home region.
    pub ec2: Ec2,
    /// Bound ids.
    pub ids: Ids,
    /// The snapshot being filled, once StartSnapshot ran.
    pub pending: Option<Pending>,
    /// What the upload did.
    pub outcome: Outcome,
    /// The AMI RegisterImage made (a failure of it is cleaned up).
    registered: Option<String>,
}

impl<'a> Run<'a> {
    /// A run in `region`.
    pub fn new(p: &'a Prepared, events: &'a Events, cfg: &aws_config::SdkConfig, region: &str) -> Self {
        Run {
            p,
            events,
            ebs: aws_sdk_ebs::Client::new(cfg),
            ec2: Ec2 { client: aws_sdk_ec2::Client::new(cfg), region: region.to_string() },
            ids: Ids::default(),
            pending: None,
            outcome: Outcome::default(),
            registered: None,
        }
    }

    /// Executes the home region's calls in order.
    pub async fn home(&mut self, calls: &[Call]) -> anyhow::Result<()> {
        for c in calls {
            let t = Instant::now();
            self.call(c).await?;
            // One `phase` event per call: what `--json` readers (and the kill-point test) see
            // of a publish between its steps.
            self.events.phase_done("publish", &c.op(), t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn call(&mut self, c: &Call) -> anyhow::Result<()> {
        match c {
            Call::StartSnapshot(s) => {
                let pending = snapshot::start_or_resume(&self.ebs, &self.ec2, self.p, s, self.events).await?;
                self.ids.snapshot = Some(pending.id.clone());
                self.pending = Some(pending);
            }
            Call::PutBlocks(_) => self.put_blocks().await?,
            Call::CompleteSnapshot(_) => self.complete().await?,
            Call::DeregisterImage(d) => {
                self.events.notice(&format!(
                    "--force: deregistering AMI {} `{}` (other bytes) and deleting its snapshot(s)",
                    d.image_id, self.p.name
                ));
                self.ec2.deregister(&d.image_id).await?;
            }
            Call::DeleteSnapshots(d) => self.delete_snapshots(d).await?,
            Call::RegisterImage(r) => self.register(r).await?,
            Call::WaitImage(w) if w.image_ids == [Id::Image] && self.registered.is_some() => self.wait_registered().await?,
            other => region_call(&self.ec2, &mut self.ids, other).await?,
        }
        Ok(())
    }

    fn pending(&self) -> anyhow::Result<&Pending> {
        self.pending.as_ref().context("the publish plan fills a snapshot before StartSnapshot")
    }

    /// PutSnapshotBlock for the blocks not sent yet (none when a resumed snapshot is complete).
    async fn put_blocks(&mut self) -> anyhow::Result<()> {
        let p = self.p;
        let pending = self.pending()?;
        if pending.completed {
            self.outcome = Outcome { digests: pending.done.clone(), resumed: pending.done.len() as u64, ..Outcome::default() };
            return Ok(());
        }
        let total = blocks::block_count(p.input.size);
        let what = format!("{} of {total} blocks to read", p.candidates.len());
        self.events.step("upload", &format!("uploading {} to snapshot {} ({what})", p.input.path.display(), pending.id));
        let t = Instant::now();
        let out = snapshot::fill(&self.ebs, p, pending, self.events.count_bar("uploading", p.candidates.len() as u64, "blocks"))
            .await
            .map_err(|e| {
                e.context(format!(
                    "snapshot {} is kept for a resume: run the same publish again (it expires {} minutes after its last write)",
                    pending.id,
                    snapshot::timeout_minutes(p)
                ))
            })?;
        self.events.step_done("upload", t.elapsed().as_secs_f64());
        self.outcome = out;
        Ok(())
    }

    /// CompleteSnapshot (unless a resumed snapshot is complete), recorded in the ledger.
    async fn complete(&mut self) -> anyhow::Result<()> {
        let pending = self.pending()?;
        if !pending.completed {
            snapshot::complete(&self.ebs, &pending.id, &Sum::of(self.outcome.digests.values())?).await?;
            pending.ledger.completed()?;
        }
        let o = &self.outcome;
        tracing::info!(
            "snapshot {}: {} block(s) sent ({} bytes), {} zero, {} unchanged, {} from an earlier run",
            pending.id,
            o.sent,
            o.bytes_sent,
            o.skipped_zero,
            o.unchanged,
            o.resumed
        );
        Ok(())
    }

    /// `--force`: the replaced AMI's snapshots, never this run's.
    async fn delete_snapshots(&self, d: &DeleteSnapshots) -> anyhow::Result<()> {
        let mut ids = d.snapshot_ids.clone();
        if !d.also_tagged.is_empty() {
            let tags: Vec<(&str, &str)> = d.also_tagged.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ids.extend(self.ec2.find_snapshots_by_tags(&tags).await?);
        }
        ids.sort();
        ids.dedup();
        let keep = self.ids.get(d.except)?;
        for s in ids.iter().filter(|s| s.as_str() != keep) {
            // A failure is a warning naming the snapshot to delete by hand.
            let _logged = self.ec2.cleanup_snapshot(s).await;
        }
        Ok(())
    }

    /// RegisterImage; a failure deletes the snapshot and the ledger.
    async fn register(&mut self, r: &Registration) -> anyhow::Result<()> {
        let snapshot = self.ids.get(r.snapshot)?.to_string();
        let t = std::time::Instant::now();
        self.events.step("register", &format!("registering `{}` in {} from {snapshot}", r.name, self.ec2.region));
        match self.ec2.register(r, &snapshot).await {
            Ok(ami) => {
                self.events.step_done("register", t.elapsed().as_secs_f64());
                tracing::info!("registered {ami} `{}` in {}", r.name, self.ec2.region);
                // In the ledger before anything else: killed before tagging, the AMI is still
                // known to be ours (the janitor reads ledgers).
                if let Some(pending) = &self.pending {
                    pending.ledger.image(&self.ec2.region, &ami)?;
                }
                self.ids.image = Some(ami.clone());
                self.registered = Some(ami);
                Ok(())
            }
            Err(e) => {
                // A failure is a warning naming the snapshot to delete by hand.
                let _logged = self.ec2.cleanup_snapshot(&snapshot).await;
                drop_ledger(self.p);
                Err(e.into())
            }
        }
    }

    /// Waits for the AMI this run registered; one that fails is deregistered and its snapshot
    /// deleted, and the error says which of those failed.
    async fn wait_registered(&mut self) -> anyhow::Result<()> {
        let ami = self.ids.get(Id::Image)?.to_string();
        match self.ec2.wait_image(&ami, IMAGE_WAIT).await {
            Ok(()) => Ok(()),
            Err(e @ Ec2Error::Wait { source: wait::WaitError::Failed { .. }, .. }) => {
                let snapshot = self.ids.get(Id::Snapshot)?.to_string();
                let deregistered = self.ec2.deregister(&ami).await.map_err(|d| d.to_string());
                // Tried even when the AMI would not deregister: it may be gone already.
                let deleted = self.ec2.cleanup_snapshot(&snapshot).await;
                drop_ledger(self.p);
                let context = failed_image_context(&ami, &snapshot, &deregistered, &deleted);
                Err(anyhow::Error::new(e).context(context))
            }
            Err(e) => Err(e.into()),
        }
    }
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

/// The CopyImage ClientToken: the same for a retried copy of one AMI to one region and name.
fn copy_token(source: &str, region: &str, name: &str) -> String {
    blake3::hash(format!("{source} {region} {name}").as_bytes()).to_hex()[..32].to_string()
}

/// The calls that need only EC2 in one region and the ids: every call of a copy region, and
/// the home region's waits, tags and shares. FindImage is planned in copy regions only (the
/// home look-up runs before the plan) and binds [`Id::Copy`] when it finds the AMI.
async fn region_call(ec2: &Ec2, ids: &mut Ids, c: &Call) -> anyhow::Result<()> {
    match c {
        Call::FindImage(f) => ids.copy = ec2.find_image(&f.name).await?.map(|found| found.id),
        Call::CopyImage(c) if ids.copy.is_none() => {
            let src = ids.get(c.source_image_id)?;
            let token = copy_token(src, &ec2.region, &c.name);
            ids.copy = Some(ec2.copy_from(&c.source_region, src, &c.name, &c.description, &token).await?);
        }
        Call::CopyImage(_) => {}
        Call::WaitSnapshot(w) => {
            let [id] = w.snapshot_ids;
            ec2.wait_snapshot(ids.get(id)?, snapshot::SNAPSHOT_WAIT).await?;
        }
        Call::CreateTags(t) => {
            let [id] = t.resources;
            ec2.create_tags(ids.get(id)?, &t.tags).await?;
        }
        Call::EnsureImageTags(t) => {
            let [id] = t.resources;
            ec2.ensure_image_tags(ids.get(id)?, &t.name, &t.tags).await?;
        }
        Call::WaitImage(w) => {
            let [id] = w.image_ids;
            ec2.wait_image(ids.get(id)?, IMAGE_WAIT).await?;
        }
        Call::ShareImage(s) => ec2.share_image(ids.get(s.image_id)?, &s.launch_permission.add).await?,
        Call::ShareSnapshot(s) => ec2.share_snapshot(ids.get(s.snapshot_id)?, &s.create_volume_permission.add).await?,
        other => {
            let op = serde_json::to_value(other).ok().and_then(|v| v["dry_run"].as_str().map(str::to_string));
            bail!("the publish plan has {} where only one region's EC2 calls can run", op.unwrap_or_default());
        }
    }
    Ok(())
}

/// Runs each copy region's calls, at most [`COPY_CONCURRENCY`] regions at once; returns the AMI
/// per region. `ids` holds the home AMI.
pub async fn copies(cfg: &aws_config::SdkConfig, ids: &Ids, regions: &[RegionCalls]) -> anyhow::Result<BTreeMap<String, String>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(COPY_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for r in regions {
        let ec2 = Ec2 { client: client::ec2_in(cfg, &r.region), region: r.region.clone() };
        let (sem, calls, mut ids) = (sem.clone(), r.calls.clone(), Ids { copy: None, ..ids.clone() });
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            for c in &calls {
                region_call(&ec2, &mut ids, c).await?;
            }
            Ok::<_, anyhow::Error>((ec2.region.clone(), ids.get(Id::Copy)?.to_string()))
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
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("Failed to copy {} to {} region(s): {}", ids.get(Id::Image)?, errors.len(), errors.join("; "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::options::AwsSettings;
    use crate::publish::testing::{ec2_error, ec2_ok, fake, prepared, sdk_config};

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

    /// Waits for a registered AMI that the fake reports failed; returns the error and the calls.
    async fn fail_registered_ami(deregister: (u16, String), delete: (u16, String)) -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let p = prepared(dir.path(), AwsSettings::defaults());
        let failed = "<imagesSet><item><imageId>ami-1</imageId><imageState>failed</imageState><stateReason><code>x</code><message>bad image</message></stateReason></item></imagesSet>";
        let aws = fake(BTreeMap::from([
            ("DescribeImages".to_string(), ec2_ok("DescribeImages", failed)),
            ("DeregisterImage".to_string(), deregister),
            ("DeleteSnapshot".to_string(), delete),
        ]));
        let cfg = sdk_config(&aws.url);
        let events = Events::new(false);
        let mut run = Run::new(&p, &events, &cfg, "eu-west-1");
        run.ids = Ids { snapshot: Some("snap-1".into()), image: Some("ami-1".into()), copy: None };
        run.registered = Some("ami-1".into());
        let e = run
            .call(&Call::WaitImage(crate::publish::plan::WaitImage { region: None, image_ids: [Id::Image], until: "" }))
            .await
            .unwrap_err();
        let seen = aws.seen.lock().unwrap().clone();
        (format!("{e:#}"), seen)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_ami_that_will_not_deregister_is_named_for_cleanup_by_hand() {
        let (e, seen) = fail_registered_ami(ec2_error("UnauthorizedOperation"), ec2_error("InvalidSnapshot.InUse")).await;
        assert_eq!(seen, ["DescribeImages", "DeregisterImage", "DeleteSnapshot"]);
        assert!(e.contains("bad image") && e.contains("UnauthorizedOperation") && e.contains("InvalidSnapshot.InUse"), "{e}");
        assert!(e.contains("deregister AMI ami-1, then delete snapshot snap-1, by hand"), "{e}");
        assert!(!e.contains("deregistered it"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_ami_cleaned_up_says_so() {
        let ok = |a: &str| ec2_ok(a, "<return>true</return>");
        let (e, _) = fail_registered_ami(ok("DeregisterImage"), ok("DeleteSnapshot")).await;
        assert!(e.starts_with("AMI ami-1 failed: deregistered it and deleted snapshot snap-1: "), "{e}");
        let (e, _) = fail_registered_ami(ok("DeregisterImage"), ec2_error("InvalidSnapshot.InUse")).await;
        assert!(e.contains("deregistered it, but deleting snapshot snap-1 failed") && e.contains("delete snapshot snap-1 by hand"), "{e}");
    }
}
