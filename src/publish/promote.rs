//! What pointing a channel at a record does on AWS (`imgforge promote`, `rollback`): the AMI is
//! copied to the regions `[aws.promote]` names where the record has none, shared with its
//! accounts, tagged `Channel=<channel>` (the tag leaves the AMI the channel pointed at before),
//! and the SSM parameter (`/imgforge/NAME/CHANNEL` by default) is set to the AMI id in every
//! region and read back. The calls are planned first (pure, printed by `--dry-run`), then made.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::options::{PromoteSettings, render_ssm};
use super::register::Ec2;
use crate::aws::client;
use crate::aws::retry::{Policy, retry};

/// The tag naming the channel an AMI is on.
pub const CHANNEL_TAG: &str = "Channel";

/// How long a promotion's copy may take to become available.
const COPY_WAIT: Duration = Duration::from_secs(3600);

/// One record's AMIs.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Record id.
    pub record: String,
    /// Version, for people.
    pub version: String,
    /// Region → AMI id.
    pub amis: BTreeMap<String, String>,
    /// Region → snapshot id (where known).
    pub snapshots: BTreeMap<String, String>,
}

/// A channel moving to a record.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    /// Image name.
    pub name: &'a str,
    /// Channel.
    pub channel: &'a str,
    /// The record the channel points at after the move.
    pub to: Side,
    /// The record it pointed at before (when another one).
    pub from: Option<Side>,
    /// `[aws.promote]`.
    pub settings: &'a PromoteSettings,
}

/// One AWS call of a promotion, as printed by `--dry-run` and made by [`execute`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "call")]
pub enum Call {
    /// Copy the AMI into a region where the record has none (then wait for it).
    CopyImage {
        /// Destination region.
        region: String,
        /// Source region.
        source_region: String,
        /// Source AMI.
        source_image: String,
    },
    /// Launch permissions.
    ModifyImageAttribute {
        /// Region.
        region: String,
        /// AMI.
        image: String,
        /// Accounts or `all`.
        add_launch_permission: Vec<String>,
    },
    /// Create-volume permissions on the AMI's snapshot (accounts only, never public).
    ModifySnapshotAttribute {
        /// Region.
        region: String,
        /// Snapshot.
        snapshot: String,
        /// Accounts.
        add_create_volume_permission: Vec<String>,
    },
    /// `Channel=<channel>` on the AMI.
    CreateTags {
        /// Region.
        region: String,
        /// AMI.
        image: String,
        /// Tags.
        tags: BTreeMap<String, String>,
    },
    /// The channel tag off the AMI the channel leaves (EC2 deletes it only where the value
    /// still matches).
    DeleteTags {
        /// Region.
        region: String,
        /// AMI.
        image: String,
        /// Tags.
        tags: BTreeMap<String, String>,
    },
    /// The channel's parameter, data type `aws:ec2:image`.
    PutParameter {
        /// Region.
        region: String,
        /// Parameter name.
        name: String,
        /// AMI id.
        value: String,
    },
    /// Read back: must hold `expect`.
    GetParameter {
        /// Region.
        region: String,
        /// Parameter name.
        name: String,
        /// AMI id.
        expect: String,
    },
}

/// The placeholder a dry run shows for a copy's AMI id.
fn copy_placeholder(source: &str, region: &str) -> String {
    format!("(copy of {source} in {region})")
}

/// The copies a move needs: one per `copy_to_regions` region where `to` has no AMI, from the
/// first region it has one in. Pure.
pub fn copies(m: &Move<'_>) -> Vec<Call> {
    let Some((home, ami)) = m.to.amis.iter().next() else { return Vec::new() };
    m.settings
        .copy_to_regions
        .iter()
        .filter(|r| !m.to.amis.contains_key(*r))
        .map(|r| Call::CopyImage { region: r.clone(), source_region: home.clone(), source_image: ami.clone() })
        .collect()
}

/// Every call of a move, copies first; a copy's AMI shows as a placeholder. Pure.
pub fn plan(m: &Move<'_>) -> Vec<Call> {
    let mut calls = copies(m);
    let mut to = m.to.clone();
    for c in &calls {
        if let Call::CopyImage { region, source_image, .. } = c {
            to.amis.insert(region.clone(), copy_placeholder(source_image, region));
            to.snapshots.insert(region.clone(), format!("(snapshot of the copy in {region})"));
        }
    }
    calls.extend(region_calls(m, &to));
    calls
}

/// The calls after the copies, region by region. Pure.
fn region_calls(m: &Move<'_>, to: &Side) -> Vec<Call> {
    let s = m.settings;
    let tag = BTreeMap::from([(CHANNEL_TAG.to_string(), m.channel.to_string())]);
    let accounts: Vec<String> = s.launch_permissions.iter().filter(|a| a.as_str() != "all").cloned().collect();
    let mut calls = Vec::new();
    for (region, image) in &to.amis {
        if !s.launch_permissions.is_empty() {
            calls.push(Call::ModifyImageAttribute {
                region: region.clone(),
                image: image.clone(),
                add_launch_permission: s.launch_permissions.clone(),
            });
        }
        if let (Some(snapshot), false) = (to.snapshots.get(region), accounts.is_empty()) {
            calls.push(Call::ModifySnapshotAttribute {
                region: region.clone(),
                snapshot: snapshot.clone(),
                add_create_volume_permission: accounts.clone(),
            });
        }
        if let Some(from) = m.from.as_ref().filter(|f| f.record != to.record)
            && let Some(old) = from.amis.get(region).filter(|old| *old != image)
        {
            calls.push(Call::DeleteTags { region: region.clone(), image: old.clone(), tags: tag.clone() });
        }
        calls.push(Call::CreateTags { region: region.clone(), image: image.clone(), tags: tag.clone() });
        if !s.ssm_parameter.is_empty() {
            let name = render_ssm(&s.ssm_parameter, m.name, m.channel);
            calls.push(Call::PutParameter { region: region.clone(), name: name.clone(), value: image.clone() });
            calls.push(Call::GetParameter { region: region.clone(), name, expect: image.clone() });
        }
    }
    calls
}

/// Regions where the channel's previous AMI stays in the SSM parameter (the new record has no
/// AMI there and none is copied). Pure.
pub fn left_behind(m: &Move<'_>) -> Vec<String> {
    let Some(from) = &m.from else { return Vec::new() };
    from.amis
        .keys()
        .filter(|r| !m.to.amis.contains_key(*r) && !m.settings.copy_to_regions.contains(r) && !m.settings.ssm_parameter.is_empty())
        .cloned()
        .collect()
}

/// What a move did: the AMIs copied (region → id, with their snapshots) and the parameter.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Done {
    /// Region → AMI id of each copy made.
    pub copied: BTreeMap<String, String>,
    /// Region → snapshot id of each copy.
    pub copied_snapshots: BTreeMap<String, String>,
    /// Region → AMI id the channel now points at.
    pub images: BTreeMap<String, String>,
    /// The SSM parameter set in each of those regions.
    pub ssm_parameter: Option<String>,
}

/// Makes the move's calls: copies (waited for), then each region's calls in order. Stops at the
/// first failure, naming the call and region.
pub fn execute(m: &Move<'_>, endpoint_url: Option<&str>) -> anyhow::Result<Done> {
    let rt = crate::aws::runtime()?;
    rt.block_on(run(m, endpoint_url))
}

async fn run(m: &Move<'_>, endpoint_url: Option<&str>) -> anyhow::Result<Done> {
    let Some(home) = m.to.amis.keys().next() else { bail!("{} {} has no AMI: nothing to do on AWS", m.name, m.to.version) };
    let cfg = client::load(Some(home), endpoint_url).await?;
    let ec2 = |region: &str| Ec2 { client: client::ec2_in(&cfg, region), region: region.to_string() };
    let mut done = Done::default();
    let mut to = m.to.clone();
    for c in copies(m) {
        let Call::CopyImage { region, source_region, source_image } = c else { continue };
        let source = describe(&ec2(&source_region), &source_image).await?;
        let token = format!("imgforge-promote-{}-{region}", m.to.record);
        let dst = ec2(&region);
        let id = dst.copy_from(&source_region, &source_image, &source.name, &source.description, &token).await?;
        dst.wait_image(&id, COPY_WAIT).await?;
        if let Some(snap) = describe(&dst, &id).await?.snapshot {
            to.snapshots.insert(region.clone(), snap.clone());
            done.copied_snapshots.insert(region.clone(), snap);
        }
        to.amis.insert(region.clone(), id.clone());
        done.copied.insert(region, id);
    }
    for c in region_calls(m, &to) {
        call(&cfg, &ec2, &c).await?;
    }
    done.images = to.amis;
    if !m.settings.ssm_parameter.is_empty() {
        done.ssm_parameter = Some(render_ssm(&m.settings.ssm_parameter, m.name, m.channel));
    }
    Ok(done)
}

async fn call(cfg: &aws_config::SdkConfig, ec2: &impl Fn(&str) -> Ec2, c: &Call) -> anyhow::Result<()> {
    match c {
        Call::CopyImage { .. } => {}
        Call::ModifyImageAttribute { region, image, add_launch_permission } => {
            ec2(region).share_image(image, add_launch_permission).await?;
        }
        Call::ModifySnapshotAttribute { region, snapshot, add_create_volume_permission } => {
            ec2(region).share_snapshot(snapshot, add_create_volume_permission).await?;
        }
        Call::CreateTags { region, image, tags } => ec2(region).create_tags(image, tags).await?,
        Call::DeleteTags { region, image, tags } => delete_tags(&ec2(region), image, tags).await?,
        Call::PutParameter { region, name, value } => {
            let ssm = client::ssm_in(cfg, region);
            retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("PutParameter {name} in {region}"), || {
                ssm.put_parameter()
                    .name(name)
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::String)
                    .data_type("aws:ec2:image")
                    .overwrite(true)
                    .send()
            })
            .await
            .map_err(|f| anyhow::anyhow!("Failed to set the SSM parameter {name} to {value} in {region}: {f}"))?;
        }
        Call::GetParameter { region, name, expect } => {
            let ssm = client::ssm_in(cfg, region);
            let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("GetParameter {name} in {region}"), || {
                ssm.get_parameter().name(name).send()
            })
            .await
            .map_err(|f| anyhow::anyhow!("Failed to read back the SSM parameter {name} in {region}: {f}"))?;
            let got = out.parameter().and_then(|p| p.value()).unwrap_or_default();
            if got != expect {
                bail!(
                    "the SSM parameter {name} in {region} reads {got:?} after it was set to {expect}: another writer? Run the promotion again"
                );
            }
        }
    }
    Ok(())
}

/// What a promotion reads of an AMI: its name and description (a copy keeps both) and the
/// snapshot behind its root device.
struct ImageInfo {
    name: String,
    description: String,
    snapshot: Option<String>,
}

async fn describe(ec2: &Ec2, id: &str) -> anyhow::Result<ImageInfo> {
    let out =
        retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DescribeImages {id}"), || ec2.client.describe_images().image_ids(id).send())
            .await
            .map_err(|f| anyhow::anyhow!("Failed to describe {id} in {}: {f}", ec2.region))?;
    let Some(img) = out.images().first() else { bail!("AMI {id} is not in {} (deregistered?)", ec2.region) };
    Ok(ImageInfo {
        name: img.name().unwrap_or(id).to_string(),
        description: img.description().unwrap_or_default().to_string(),
        snapshot: img.block_device_mappings().iter().find_map(|b| b.ebs().and_then(|e| e.snapshot_id())).map(str::to_string),
    })
}

async fn delete_tags(ec2: &Ec2, id: &str, tags: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use aws_sdk_ec2::types::Tag;
    let list: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DeleteTags {id}"), || {
        ec2.client.delete_tags().resources(id).set_tags(Some(list.clone())).send()
    })
    .await
    .map_err(|f| anyhow::anyhow!("Failed to remove the tags {tags:?} from {id} in {}: {f}", ec2.region))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn side(record: &str, amis: &[(&str, &str)]) -> Side {
        Side {
            record: record.into(),
            version: "1".into(),
            amis: amis.iter().map(|(r, a)| (r.to_string(), a.to_string())).collect(),
            snapshots: amis.iter().map(|(r, a)| (r.to_string(), a.replace("ami", "snap"))).collect(),
        }
    }

    #[test]
    fn a_promotion_copies_shares_moves_the_tag_and_sets_the_parameter() {
        let settings = PromoteSettings {
            launch_permissions: vec!["123456789012".into(), "all".into()],
            copy_to_regions: vec!["us-east-1".into(), "eu-west-1".into()],
            ..PromoteSettings::default()
        };
        let m = Move {
            name: "base",
            channel: "prod",
            to: side("R2", &[("eu-west-1", "ami-2")]),
            from: Some(side("R1", &[("eu-west-1", "ami-1"), ("ap-south-1", "ami-9")])),
            settings: &settings,
        };
        let calls = plan(&m);
        let json: Vec<String> = calls.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        assert_eq!(
            json,
            [
                r#"{"call":"CopyImage","region":"us-east-1","source_region":"eu-west-1","source_image":"ami-2"}"#,
                r#"{"call":"ModifyImageAttribute","region":"eu-west-1","image":"ami-2","add_launch_permission":["123456789012","all"]}"#,
                r#"{"call":"ModifySnapshotAttribute","region":"eu-west-1","snapshot":"snap-2","add_create_volume_permission":["123456789012"]}"#,
                r#"{"call":"DeleteTags","region":"eu-west-1","image":"ami-1","tags":{"Channel":"prod"}}"#,
                r#"{"call":"CreateTags","region":"eu-west-1","image":"ami-2","tags":{"Channel":"prod"}}"#,
                r#"{"call":"PutParameter","region":"eu-west-1","name":"/imgforge/base/prod","value":"ami-2"}"#,
                r#"{"call":"GetParameter","region":"eu-west-1","name":"/imgforge/base/prod","expect":"ami-2"}"#,
                r#"{"call":"ModifyImageAttribute","region":"us-east-1","image":"(copy of ami-2 in us-east-1)","add_launch_permission":["123456789012","all"]}"#,
                r#"{"call":"ModifySnapshotAttribute","region":"us-east-1","snapshot":"(snapshot of the copy in us-east-1)","add_create_volume_permission":["123456789012"]}"#,
                r#"{"call":"CreateTags","region":"us-east-1","image":"(copy of ami-2 in us-east-1)","tags":{"Channel":"prod"}}"#,
                r#"{"call":"PutParameter","region":"us-east-1","name":"/imgforge/base/prod","value":"(copy of ami-2 in us-east-1)"}"#,
                r#"{"call":"GetParameter","region":"us-east-1","name":"/imgforge/base/prod","expect":"(copy of ami-2 in us-east-1)"}"#,
            ]
        );
        // ap-south-1 keeps the old AMI in its parameter: the new record has none there.
        assert_eq!(left_behind(&m), ["ap-south-1"]);
    }

    #[test]
    fn no_parameter_no_sharing_and_the_same_record_again() {
        let settings = PromoteSettings { ssm_parameter: String::new(), ..PromoteSettings::default() };
        let m = Move {
            name: "base",
            channel: "prod",
            to: side("R1", &[("eu-west-1", "ami-1")]),
            from: Some(side("R1", &[("eu-west-1", "ami-1")])),
            settings: &settings,
        };
        assert_eq!(
            plan(&m),
            [Call::CreateTags {
                region: "eu-west-1".into(),
                image: "ami-1".into(),
                tags: BTreeMap::from([("Channel".into(), "prod".into())])
            }]
        );
        assert!(left_behind(&m).is_empty());
    }
}
