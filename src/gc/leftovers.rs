//! Crash leftovers on AWS, older than the grace period only (a publish running now is never
//! touched):
//! - snapshots a publish started (tagged with its ClientToken, `imgforge:publish-token`) that no
//!   AMI of ours names and no record holds — what a publish killed mid-upload leaves when nobody
//!   resumes it;
//! - AMIs tagged `BuiltBy=imgforge` that no record of this registry holds (registered by a
//!   publish that died before recording, or by another registry: listed always, retired only
//!   when asked, and then only if no guard holds).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::Serialize;

use crate::aws::retry::{Policy, retry};
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
}

/// The leftovers in `regions`: token-tagged snapshots that no AMI names and `recorded` does not
/// hold, started more than `grace` ago.
pub async fn find(
    cfg: &aws_config::SdkConfig,
    regions: &BTreeSet<String>,
    recorded: &BTreeSet<String>,
    grace: Duration,
) -> anyhow::Result<Vec<Leftover>> {
    let now = crate::stamp::unix_now();
    let mut out = Vec::new();
    for region in regions {
        let ec2 = crate::aws::client::ec2_in(cfg, region);
        let named = named_snapshots(&ec2, region).await?;
        let filter = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(TOKEN_TAG).build();
        let snaps = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeSnapshots tag-key={TOKEN_TAG}"), || {
            ec2.describe_snapshots().owner_ids("self").filters(filter.clone()).send()
        })
        .await
        .map_err(|f| anyhow!("Failed to list imgforge's snapshots in {region}: {f}"))?;
        for s in snaps.snapshots() {
            let Some(id) = s.snapshot_id() else { continue };
            if named.contains(id) || recorded.contains(id) {
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
            });
        }
    }
    Ok(out)
}

/// AMIs tagged `BuiltBy=imgforge` that `recorded` does not hold, registered more than `grace`
/// ago.
pub async fn unrecorded_amis(
    cfg: &aws_config::SdkConfig,
    regions: &BTreeSet<String>,
    recorded: &BTreeSet<String>,
    grace: Duration,
) -> anyhow::Result<Vec<Leftover>> {
    let now = crate::stamp::unix_now();
    let mut out = Vec::new();
    for region in regions {
        let ec2 = crate::aws::client::ec2_in(cfg, region);
        let filter = aws_sdk_ec2::types::Filter::builder().name("tag:BuiltBy").values("imgforge").build();
        let images = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeImages tag:BuiltBy=imgforge".to_string(), || {
            ec2.describe_images().owners("self").filters(filter.clone()).send()
        })
        .await
        .map_err(|f| anyhow!("Failed to list imgforge's AMIs in {region}: {f}"))?;
        for i in images.images() {
            let Some(id) = i.image_id() else { continue };
            if recorded.contains(id) {
                continue;
            }
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
                    "{} was registered by imgforge but no record of this registry holds it (a publish that died before recording, or another registry's)",
                    i.name().unwrap_or("?")
                ),
            });
        }
    }
    Ok(out)
}

/// Snapshot ids our AMIs in `region` name.
async fn named_snapshots(ec2: &aws_sdk_ec2::Client, region: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| "DescribeImages owner self".to_string(), || {
        ec2.describe_images().owners("self").send()
    })
    .await
    .map_err(|f| anyhow!("Failed to list our AMIs in {region}: {f}"))?;
    Ok(out
        .images()
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect())
}

/// Removes `l` after checking again that no AMI names it.
pub async fn remove(cfg: &aws_config::SdkConfig, l: &Leftover) -> anyhow::Result<String> {
    let ec2 = crate::aws::client::ec2_in(cfg, &l.region);
    if named_snapshots(&ec2, &l.region).await?.contains(&l.id) {
        return Ok(format!("kept {} in {}: an AMI names it now", l.id, l.region));
    }
    let e = crate::publish::register::Ec2 { client: ec2, region: l.region.clone() };
    match e.delete_snapshot(&l.id).await {
        Ok(()) => Ok(format!("deleted leftover snapshot {} in {} ({})", l.id, l.region, l.state)),
        Err(err) if err.to_string().contains("NotFound") => Ok(format!("{} in {} was already gone", l.id, l.region)),
        Err(err) => Err(anyhow!("{err} (a pending snapshot can be deleted once EBS times it out into `error`)")),
    }
}
