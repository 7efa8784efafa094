//! The snapshot side of a publish: start or resume (per the ledger), upload, complete. One
//! publish never leaves two snapshots: the ClientToken is written before StartSnapshot and
//! tagged on the snapshot, so a lost answer is found again instead of started twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Tag};
use indicatif::ProgressBar;

use super::blocks::BLOCK;
use super::ledger::{self, Ledger, Start};
use super::plan::{StartSnapshot, Sum};
use super::prepare::Prepared;
use super::register::Ec2;
use super::upload::{Job, Outcome, upload};
use crate::aws::retry::{Policy, retry};
use crate::progress::Events;

/// Tag carrying the StartSnapshot ClientToken.
pub const TOKEN_TAG: &str = "imgforge:publish-token";

/// A snapshot being filled.
pub struct Pending {
    /// Its id.
    pub id: String,
    /// The open ledger.
    pub ledger: Arc<Ledger>,
    /// Blocks already accepted.
    pub done: BTreeMap<u64, [u8; 32]>,
    /// CompleteSnapshot already succeeded.
    pub completed: bool,
    /// When it was started or resumed.
    pub since: Instant,
}

fn token(p: &Prepared) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos} {} {} {}", std::process::id(), p.input.path.display(), p.source_digest);
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_string()
}

fn start_line(p: &Prepared, region: &str, token: String) -> anyhow::Result<Start> {
    use std::os::unix::fs::MetadataExt;
    let m = p.input.file.metadata().with_context(|| format!("Failed to stat {}", p.input.path.display()))?;
    Ok(Start {
        schema: ledger::SCHEMA,
        size: p.input.size,
        mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
        source_digest: p.source_digest.clone(),
        region: region.to_string(),
        parent_snapshot: p.parent.as_ref().map(|x| x.snapshot.clone()),
        encrypted: p.settings.encrypted,
        client_token: token,
    })
}

/// StartSnapshot's Timeout: ten minutes plus the data at a pessimistic 4 MiB/s, at most 72 h.
pub fn timeout_minutes(p: &Prepared) -> i32 {
    let bytes = p.candidates.len() as u64 * BLOCK;
    let minutes = 10 + bytes / (4 << 20) / 60;
    i32::try_from(minutes.min(4320)).unwrap_or(4320)
}

/// Starts a new snapshot (`start`, with a new ClientToken) or resumes the one in the ledger.
pub async fn start_or_resume(
    ebs: &aws_sdk_ebs::Client,
    ec2: &Ec2,
    p: &Prepared,
    start: &StartSnapshot,
    events: &Events,
) -> anyhow::Result<Pending> {
    let path = ledger::path_for(&p.input.path);
    let want = start_line(p, &ec2.region, String::new())?;
    if let Some(st) = ledger::load(&path)? {
        let same = st.start.as_ref().is_some_and(|s| Start { client_token: String::new(), ..s.clone() } == want);
        match (same, st.snapshot.clone(), st.start.clone()) {
            (true, Some(id), _) => match ec2.snapshot_state(&id).await? {
                Some(state) if state != "error" => {
                    events.notice(&format!(
                        "resuming snapshot {id} of an interrupted publish: {} block(s) already sent{}",
                        st.blocks.len(),
                        if st.completed { ", completed" } else { "" }
                    ));
                    let ledger = Arc::new(Ledger::reopen(&path)?);
                    return Ok(Pending { id, ledger, done: st.blocks, completed: st.completed, since: Instant::now() });
                }
                state => {
                    events.notice(&format!(
                        "snapshot {id} of an interrupted publish is {}: starting a new one",
                        state.as_deref().unwrap_or("gone (expired or deleted)")
                    ));
                    if state.is_some() {
                        // A failure is a warning naming it; a new one is started either way.
                        let _logged = ec2.cleanup_snapshot(&id).await;
                    }
                }
            },
            (true, None, Some(line)) => {
                // Killed between StartSnapshot and its answer: find it by its token, or ask
                // again with the same token (EBS answers with the same snapshot).
                let ledger = Arc::new(Ledger::reopen(&path)?);
                let id = match ec2.find_snapshot_by_tag(TOKEN_TAG, &line.client_token).await? {
                    Some(id) => id,
                    None => start_snapshot(ebs, p, start, &line.client_token).await?,
                };
                ledger.snapshot(&id)?;
                events.notice(&format!("resuming snapshot {id} of an interrupted publish"));
                return Ok(Pending { id, ledger, done: BTreeMap::new(), completed: false, since: Instant::now() });
            }
            (false, Some(id), Some(old)) if !st.completed && old.region == ec2.region => {
                events.notice(&format!("the image changed since an interrupted publish: deleting its pending snapshot {id}"));
                let _logged = ec2.cleanup_snapshot(&id).await;
            }
            _ => {}
        }
    }
    let tok = token(p);
    let ledger = Arc::new(Ledger::create(&path, &start_line(p, &ec2.region, tok.clone())?)?);
    let id = start_snapshot(ebs, p, start, &tok).await?;
    ledger.snapshot(&id)?;
    tracing::info!("started snapshot {id} ({} GiB)", p.snapshot_gib);
    Ok(Pending { id, ledger, done: BTreeMap::new(), completed: false, since: Instant::now() })
}

/// StartSnapshot with the planned parameters and `token` (as ClientToken and [`TOKEN_TAG`]).
async fn start_snapshot(ebs: &aws_sdk_ebs::Client, p: &Prepared, start: &StartSnapshot, token: &str) -> anyhow::Result<String> {
    let mut tags: Vec<Tag> = vec![Tag::builder().key(TOKEN_TAG).value(token).build()];
    tags.extend(start.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()));
    let what = || format!("StartSnapshot for {}", p.input.path.display());
    let out = retry(&Policy::DEFAULT, Instant::now(), &what, || {
        ebs.start_snapshot()
            .volume_size(start.volume_size)
            .description(&start.description)
            .client_token(token)
            .timeout(start.timeout)
            .set_tags(Some(tags.clone()))
            .set_parent_snapshot_id(start.parent_snapshot_id.clone())
            .set_encrypted(start.encrypted.then_some(true))
            .set_kms_key_arn(start.kms_key_arn.clone())
            .send()
    })
    .await
    .map_err(|f| anyhow::anyhow!("Failed to start a snapshot for {}: {f}", p.input.path.display()))?;
    if let Some(bs) = out.block_size()
        && i64::from(bs) != BLOCK as i64
    {
        tracing::debug!("StartSnapshot reports block size {bs}; PutSnapshotBlock accepts only {BLOCK}, which is used");
    }
    out.snapshot_id().map(str::to_string).context("StartSnapshot returned no snapshot id")
}

/// The upload of the blocks of `p` not in `done` into `snapshot` (started at `started`).
pub fn job(p: &Prepared, snapshot: &str, done: BTreeMap<u64, [u8; 32]>, started: Instant) -> Job {
    Job {
        file: p.file.clone(),
        path: p.input.path.clone(),
        size: p.input.size,
        parent: p.parent.as_ref().map(|x| (x.file.clone(), x.path.clone(), x.size)),
        mode: p.mode,
        candidates: p.candidates.clone(),
        data: p.data.clone(),
        parent_data: p.parent_data.clone(),
        done,
        snapshot: snapshot.to_string(),
        workers: p.settings.workers,
        started,
    }
}

/// Uploads the blocks not yet in the snapshot.
pub async fn fill(ebs: &aws_sdk_ebs::Client, p: &Prepared, pending: &Pending, bar: Option<ProgressBar>) -> anyhow::Result<Outcome> {
    let job = job(p, &pending.id, pending.done.clone(), pending.since);
    Ok(upload(ebs, job, pending.ledger.clone(), bar).await?)
}

/// CompleteSnapshot with the changed-block count and the LINEAR checksum of every block in it.
pub async fn complete(ebs: &aws_sdk_ebs::Client, id: &str, sum: &Sum) -> anyhow::Result<()> {
    let count = sum.changed_blocks_count;
    retry(&Policy::DEFAULT, Instant::now(), &|| format!("CompleteSnapshot {id}"), || {
        ebs.complete_snapshot()
            .snapshot_id(id)
            .changed_blocks_count(count)
            .checksum(&sum.checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
            .send()
    })
    .await
    .map_err(|f| anyhow::anyhow!("Failed to complete snapshot {id} ({count} blocks): {f}"))?;
    Ok(())
}

/// How long to wait for a completed snapshot to be sealed.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(2 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::options::AwsSettings;
    use crate::publish::testing::{capture_logs, ec2_error, ec2_ok, fake, prepared, sdk_config};

    #[tokio::test(flavor = "current_thread")]
    async fn a_stale_snapshot_that_will_not_delete_is_named_in_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepared(dir.path(), AwsSettings::defaults());
        // An interrupted publish of the same image whose snapshot went to `error`.
        let ledger = Ledger::create(&ledger::path_for(&p.input.path), &start_line(&p, "eu-west-1", "tok".into()).unwrap()).unwrap();
        ledger.snapshot("snap-1").unwrap();
        drop(ledger);
        let errored = "<snapshotSet><item><snapshotId>snap-1</snapshotId><status>error</status></item></snapshotSet>";
        let aws = fake(BTreeMap::from([
            ("DescribeSnapshots".to_string(), ec2_ok("DescribeSnapshots", errored)),
            ("DeleteSnapshot".to_string(), ec2_error("UnauthorizedOperation")),
            ("POST /snapshots".to_string(), (403, r#"{"message":"no new snapshot in this test"}"#.to_string())),
        ]));
        let cfg = sdk_config(&aws.url);
        let ec2 = Ec2 { client: aws_sdk_ec2::Client::new(&cfg), region: "eu-west-1".into() };
        let plan = crate::publish::plan::build(&p, "eu-west-1", crate::publish::plan::Start::New).unwrap();
        let Some(crate::publish::plan::Call::StartSnapshot(start)) = plan.home.first() else { panic!("no StartSnapshot first") };
        let (logs, _guard) = capture_logs();
        let r = start_or_resume(&aws_sdk_ebs::Client::new(&cfg), &ec2, &p, start, &Events::new(false)).await;
        assert!(r.is_err(), "the fake refuses StartSnapshot");
        assert_eq!(*aws.seen.lock().unwrap(), ["DescribeSnapshots", "DeleteSnapshot", "POST /snapshots"]);
        let logs = logs.text();
        assert!(logs.contains("WARN") && logs.contains("UnauthorizedOperation"), "{logs}");
        assert!(logs.contains("delete snapshot snap-1 in eu-west-1 by hand"), "{logs}");
    }
}
