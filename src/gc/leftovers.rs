//! Crash leftovers on AWS, older than the grace period only (a publish running now is never
//! touched):
//! - snapshots a publish started (tagged with its ClientToken, `imgforge:publish-token`) that no
//!   AMI of ours names and no record holds — what a publish killed mid-upload leaves when nobody
//!   resumes it;
//! - AMIs of ours that no record of this registry holds (registered by a publish that died
//!   before recording, or by another registry): tagged `BuiltBy=imgforge`, or never tagged but
//!   named by an upload ledger or registered on a token-tagged snapshot. Listed always, retired
//!   only when asked, and then only if no guard holds.
//!
//! The upload ledgers of unfinished publishes are read from the records' output directories
//! (and `--dir`); one goes with the snapshot or AMI it names.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::Serialize;

use crate::aws::retry::{Policy, retry};
use crate::publish::ledger;
use crate::publish::snapshot::TOKEN_TAG;

/// One leftover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    /// Region.
    pub region: String,
    /// `snapshot` or `ami`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
    /// Its state (`pending`, `error`, `completed`).
    pub state: String,
    /// When it was started (RFC 3339).
    pub started: String,
    /// Why it is a leftover.
    pub why: String,
    /// The upload ledger that names it, removed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<PathBuf>,
}

/// What this registry and the upload ledgers on this host know.
#[derive(Debug, Default)]
pub struct Known {
    /// Snapshot ids the records hold.
    pub snapshots: BTreeSet<String>,
    /// AMI ids the records hold.
    pub amis: BTreeSet<String>,
    /// Upload ledgers (`<raw>.publish.jsonl`) of publishes that never finished.
    pub ledgers: Vec<(PathBuf, ledger::State)>,
}

impl Known {
    /// The ledger naming snapshot or AMI `id`.
    fn ledger_of(&self, id: &str) -> Option<&PathBuf> {
        self.ledgers.iter().find(|(_, st)| st.snapshot.as_deref() == Some(id) || st.images.values().any(|i| i == id)).map(|(p, _)| p)
    }
}

/// The leftovers in `regions`, each older than `grace`:
/// - snapshots tagged with a publish token that no AMI names and no record holds;
/// - AMIs of ours that no record holds: tagged `BuiltBy=imgforge`, or registered but never
///   tagged — named by an upload ledger, or registered on a snapshot a publish started.
pub async fn find(
    cfg: &aws_config::SdkConfig,
    regions: &BTreeSet<String>,
    known: &Known,
    grace: Duration,
) -> anyhow::Result<Vec<Leftover>> {
    let now = crate::stamp::unix_now();
    let mut out = Vec::new();
    for region in regions {
        let ec2 = crate::aws::client::ec2_in(cfg, region);
        let images = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeImages owner self".to_string(), || {
            ec2.describe_images().owners("self").send()
        })
        .await
        .map_err(|f| anyhow!("Failed to list our AMIs in {region}: {f}"))?;
        let filter = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(TOKEN_TAG).build();
        let snaps = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeSnapshots tag-key={TOKEN_TAG}"), || {
            ec2.describe_snapshots().owner_ids("self").filters(filter.clone()).send()
        })
        .await
        .map_err(|f| anyhow!("Failed to list imgforge's snapshots in {region}: {f}"))?;
        let tokened: BTreeSet<&str> = snaps.snapshots().iter().filter_map(|s| s.snapshot_id()).collect();
        let named = names(images.images());
        for s in snaps.snapshots() {
            let Some(id) = s.snapshot_id() else { continue };
            if named.contains(id) || known.snapshots.contains(id) {
                continue;
            }
            let started = s.start_time().map_or(0, |t| u64::try_from(t.secs()).unwrap_or(0));
            if now.saturating_sub(started) < grace.as_secs() {
                continue;
            }
            out.push(Leftover {
                region: region.clone(),
                kind: "snapshot",
                id: id.to_string(),
                state: s.state().map_or("", |st| st.as_str()).to_string(),
                started: crate::stamp::rfc3339(started),
                why: "started by an imgforge publish that never registered an AMI on it (killed or failed)".into(),
                // A ledger that also names an AMI stays while the AMI does: it says the AMI is ours.
                ledger: known.ledger_of(id).filter(|p| known.ledgers.iter().any(|(q, st)| q == *p && st.images.is_empty())).cloned(),
            });
        }
        for i in images.images() {
            let Some(id) = i.image_id() else { continue };
            if known.amis.contains(id) {
                continue;
            }
            let tagged = i.tags().iter().any(|t| t.key() == Some("BuiltBy") && t.value() == Some("imgforge"));
            let ledger = known.ledger_of(id);
            let on_ours = names(std::slice::from_ref(i)).into_iter().find(|s| tokened.contains(s.as_str()));
            let how = match (tagged, ledger, on_ours) {
                (true, ..) => "was registered by imgforge".to_string(),
                (false, Some(l), _) => format!("was registered but never tagged by the publish whose ledger {} names it", l.display()),
                (false, None, Some(s)) => format!("was registered but never tagged on {s}, a snapshot an imgforge publish started"),
                (false, None, None) => continue,
            };
            // EC2 writes `2026-01-02T03:04:05.000Z`.
            let created = i.creation_date().and_then(|d| crate::stamp::parse_rfc3339(&format!("{}Z", d.get(..19)?))).unwrap_or(0);
            if now.saturating_sub(created) < grace.as_secs() {
                continue;
            }
            out.push(Leftover {
                region: region.clone(),
                kind: "ami",
                id: id.to_string(),
                state: i.state().map_or("", |st| st.as_str()).to_string(),
                started: crate::stamp::rfc3339(created),
                why: format!(
                    "{} {how}, and no record of this registry holds it (a publish that died before recording, or another registry's)",
                    i.name().unwrap_or("?")
                ),
                ledger: ledger.cloned(),
            });
        }
    }
    Ok(out)
}

/// The snapshot ids `images` name.
fn names(images: &[aws_sdk_ec2::types::Image]) -> BTreeSet<String> {
    images
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect()
}

/// The upload ledgers in `dirs` whose publish never finished (a finished publish removes its
/// ledger); unreadable ones are skipped with a note.
pub fn ledgers(dirs: &BTreeSet<PathBuf>) -> Vec<(PathBuf, ledger::State)> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            if !path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".publish.jsonl")) {
                continue;
            }
            // Never through a symlink: the ledger is removed with what it names.
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match ledger::load(&path) {
                Ok(Some(st)) => out.push((path, st)),
                Ok(None) => {}
                Err(err) => tracing::info!("{err}: skipped"),
            }
        }
    }
    out
}

/// Snapshot ids our AMIs in `region` name.
async fn named_snapshots(ec2: &aws_sdk_ec2::Client, region: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeImages owner self".to_string(), || {
        ec2.describe_images().owners("self").send()
    })
    .await
    .map_err(|f| anyhow!("Failed to list our AMIs in {region}: {f}"))?;
    Ok(names(out.images()))
}

/// Removes `l` after checking again that no AMI names it.
pub async fn remove(cfg: &aws_config::SdkConfig, l: &Leftover) -> anyhow::Result<String> {
    let ec2 = crate::aws::client::ec2_in(cfg, &l.region);
    if named_snapshots(&ec2, &l.region).await?.contains(&l.id) {
        return Ok(format!("kept {} in {}: an AMI names it now", l.id, l.region));
    }
    let e = crate::publish::register::Ec2 { client: ec2, region: l.region.clone() };
    match e.delete_snapshot(&l.id).await {
        Ok(()) => Ok(format!("deleted leftover snapshot {} in {} ({}){}", l.id, l.region, l.state, forget_ledger(l)?)),
        Err(err) if err.to_string().contains("NotFound") => Ok(format!("{} in {} was already gone", l.id, l.region)),
        Err(err) => Err(anyhow!("{err} (a pending snapshot can be deleted once EBS times it out into `error`)")),
    }
}

/// Removes the ledger of a leftover that is gone (nothing is left to resume); what was done.
pub fn forget_ledger(l: &Leftover) -> anyhow::Result<String> {
    let Some(p) = &l.ledger else { return Ok(String::new()) };
    match std::fs::remove_file(p) {
        Ok(()) => Ok(format!(" and its upload ledger {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(anyhow!("Failed to remove the upload ledger {}: {e}", p.display())),
    }
}
