//! The AWS calls of a publish, planned in one place from the prepared request. Pure: nothing
//! here talks to AWS or reads the image. `--dry-run` prints the plan (`dryrun.rs`), the real
//! run executes it (`execute.rs`). Ids that exist only once a call has run (the snapshot, the
//! AMI, a copy) are [`Id`]s: the executor binds them, the dry run prints them as placeholders.
//!
//! Two calls are completed from the image when they run: [`PutBlocks`] becomes one
//! PutSnapshotBlock per block to send (read and decided as the upload does), and
//! [`CompleteSnapshot`] gets the count and checksum of those blocks ([`Sum`]).

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Serialize, Serializer};
use serde_json::json;

use super::blocks::{self, BLOCK};
use super::prepare::Prepared;
use super::register::Found;
use super::snapshot::{TOKEN_TAG, timeout_minutes};

/// A resource that exists only once an earlier call has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    /// The snapshot this publish fills (StartSnapshot, or the one resumed).
    Snapshot,
    /// The AMI in the home region (RegisterImage, or the one reused).
    Image,
    /// The AMI in the call's region (CopyImage, or the one found there by name).
    Copy,
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Id::Snapshot => "(the snapshot)",
            Id::Image => "(the AMI)",
            Id::Copy => "(the copy)",
        })
    }
}

/// A value the executor makes when the call runs, printed as what it will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Later(pub &'static str);

impl Serialize for Later {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// One planned call, serialized as the dry run prints it: `{"dry_run": OP, "params": {…}}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "dry_run", content = "params")]
pub enum Call {
    /// Our AMI of a name in a region. In a copy region it binds [`Id::Copy`] when found.
    #[serde(rename = "ec2.DescribeImages")]
    FindImage(FindImage),
    /// A new snapshot (the real run resumes the one in the ledger instead, if any).
    #[serde(rename = "ebs.StartSnapshot")]
    StartSnapshot(StartSnapshot),
    /// PutSnapshotBlock for each block to send.
    #[serde(rename = "ebs.PutSnapshotBlock")]
    PutBlocks(PutBlocks),
    /// CompleteSnapshot with the blocks' count and LINEAR checksum.
    #[serde(rename = "ebs.CompleteSnapshot")]
    CompleteSnapshot(CompleteSnapshot),
    /// DescribeSnapshots until `completed`.
    #[serde(rename = "ec2.DescribeSnapshots")]
    WaitSnapshot(WaitSnapshot),
    /// Tags on resources.
    #[serde(rename = "ec2.CreateTags")]
    CreateTags(CreateTags),
    /// The tags RegisterImage was given, added again where the AMI lacks them.
    #[serde(rename = "ec2.CreateTags")]
    EnsureImageTags(EnsureImageTags),
    /// `--force`: the AMI of the same name from other bytes.
    #[serde(rename = "ec2.DeregisterImage")]
    DeregisterImage(DeregisterImage),
    /// `--force`: that AMI's snapshots (failures are warnings naming what to delete by hand).
    #[serde(rename = "ec2.DeleteSnapshot")]
    DeleteSnapshots(DeleteSnapshots),
    /// The AMI. Binds [`Id::Image`]; a failure deletes the snapshot.
    #[serde(rename = "ec2.RegisterImage")]
    RegisterImage(Registration),
    /// DescribeImages until `available`. A registered AMI that fails is cleaned up.
    #[serde(rename = "ec2.DescribeImages")]
    WaitImage(WaitImage),
    /// Launch permissions on an AMI.
    #[serde(rename = "ec2.ModifyImageAttribute")]
    ShareImage(ShareImage),
    /// Create-volume permissions on the snapshot.
    #[serde(rename = "ec2.ModifySnapshotAttribute")]
    ShareSnapshot(ShareSnapshot),
    /// CopyImage into a region, unless the [`Call::FindImage`] before it found the AMI there.
    #[serde(rename = "ec2.CopyImage")]
    CopyImage(CopyImage),
}

impl Call {
    /// The API operation, as the dry run names it (`ebs.StartSnapshot`).
    pub fn op(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v["dry_run"].as_str().map(str::to_string)).unwrap_or_default()
    }
}

/// DescribeImages for our AMI of a name.
#[derive(Debug, Clone)]
pub struct FindImage {
    /// Where.
    pub region: String,
    /// The AMI name.
    pub name: String,
}

impl Serialize for FindImage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({ "Region": self.region, "Owners": ["self"], "Filters": [{ "Name": "name", "Values": [self.name] }] }).serialize(s)
    }
}

/// StartSnapshot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartSnapshot {
    /// GiB.
    pub volume_size: i64,
    /// Description.
    pub description: String,
    /// Made and written to the ledger before the call.
    pub client_token: Later,
    /// Minutes the snapshot stays pending after its last write.
    pub timeout: i32,
    /// Tags; the ClientToken is added as [`TOKEN_TAG`].
    #[serde(serialize_with = "with_token_tag")]
    pub tags: BTreeMap<String, String>,
    /// Delta: the parent snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<String>,
    /// Encrypt.
    #[serde(skip_serializing_if = "is_false")]
    pub encrypted: bool,
    /// With `encrypted`: the key (default: the account's EBS key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn with_token_tag<S: Serializer>(tags: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    let mut all: BTreeMap<&str, &str> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.insert(TOKEN_TAG, "(the ClientToken)");
    all.serialize(s)
}

/// PutSnapshotBlock for each block to send; `block` is set in one printed block's call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutBlocks {
    /// Into.
    pub snapshot_id: Id,
    /// One block: its index and checksum.
    #[serde(flatten)]
    pub block: Option<Block>,
    /// Bytes per block.
    pub data_length: u64,
    /// Checksum of each block.
    pub checksum_algorithm: &'static str,
}

/// One block of [`PutBlocks`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Block {
    /// Index (of [`BLOCK`]-sized blocks).
    pub block_index: u64,
    /// Base64 SHA-256 of the block.
    pub checksum: String,
}

impl PutBlocks {
    /// The call for one block.
    pub fn one(&self, index: u64, digest: &[u8; 32]) -> Call {
        Call::PutBlocks(PutBlocks { block: Some(Block { block_index: index, checksum: B64.encode(digest) }), ..self.clone() })
    }
}

/// CompleteSnapshot; `sum` is set once the blocks are known.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompleteSnapshot {
    /// The snapshot.
    pub snapshot_id: Id,
    /// Count and checksum of its blocks.
    #[serde(flatten)]
    pub sum: Option<Sum>,
    /// Per block.
    pub checksum_algorithm: &'static str,
    /// Over the blocks.
    pub checksum_aggregation_method: &'static str,
}

impl CompleteSnapshot {
    /// The call with the blocks' sum.
    pub fn with(&self, sum: Sum) -> Call {
        Call::CompleteSnapshot(CompleteSnapshot { sum: Some(sum), ..self.clone() })
    }
}

/// ChangedBlocksCount and the LINEAR checksum of every block in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Sum {
    /// Blocks in the snapshot.
    pub changed_blocks_count: i32,
    /// Base64 SHA-256 over their digests in ascending block index.
    pub checksum: String,
}

impl Sum {
    /// From the digests of every block, in ascending block index.
    pub fn of<'a>(digests: impl ExactSizeIterator<Item = &'a [u8; 32]>) -> anyhow::Result<Sum> {
        let changed_blocks_count = i32::try_from(digests.len()).context("too many blocks for one snapshot")?;
        Ok(Sum { changed_blocks_count, checksum: B64.encode(blocks::linear_checksum(digests)) })
    }
}

/// DescribeSnapshots until `completed`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitSnapshot {
    /// The snapshot.
    pub snapshot_ids: [Id; 1],
    /// What is waited for.
    #[serde(rename = "until")]
    pub until: &'static str,
}

/// CreateTags.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTags {
    /// What to tag.
    pub resources: [Id; 1],
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// DescribeImages by name, then CreateTags for the tags the AMI lacks (some endpoints drop
/// RegisterImage's TagSpecifications).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnsureImageTags {
    /// The AMI.
    pub resources: [Id; 1],
    /// Its name, to look it up.
    #[serde(skip)]
    pub name: String,
    /// Tags it must carry.
    pub tags: BTreeMap<String, String>,
    /// Which of them are added.
    #[serde(rename = "only")]
    pub only: &'static str,
}

/// DeregisterImage of an existing AMI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeregisterImage {
    /// The AMI.
    pub image_id: String,
}

/// DeleteSnapshot for each listed snapshot and each one of ours carrying `also_tagged`, except
/// `except`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteSnapshots {
    /// Known snapshots.
    pub snapshot_ids: Vec<String>,
    /// Our snapshots with all these tags too (DescribeSnapshots); none when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub also_tagged: BTreeMap<String, String>,
    /// Never deleted.
    pub except: Id,
}

/// What RegisterImage is given.
#[derive(Debug, Clone)]
pub struct Registration {
    /// AMI name.
    pub name: String,
    /// Description.
    pub description: String,
    /// x86_64 / arm64.
    pub architecture: String,
    /// Root device.
    pub root_device: String,
    /// Snapshot.
    pub snapshot: Id,
    /// Root volume GiB.
    pub volume_size: i32,
    /// Root volume type.
    pub volume_type: String,
    /// legacy-bios / uefi / uefi-preferred.
    pub boot_mode: String,
    /// Base64 UEFI variable store.
    pub uefi_data: Option<String>,
    /// NitroTPM.
    pub tpm: bool,
    /// IMDSv2 required.
    pub imds_v2: bool,
    /// ENA.
    pub ena: bool,
    /// SR-IOV.
    pub sriov: bool,
    /// Tags on the AMI.
    pub tags: BTreeMap<String, String>,
}

impl Serialize for Registration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = json!({
            "Name": self.name, "Description": self.description, "Architecture": self.architecture, "VirtualizationType": "hvm",
            "RootDeviceName": self.root_device,
            "BlockDeviceMappings": [{ "DeviceName": self.root_device, "Ebs": { "SnapshotId": self.snapshot, "VolumeSize": self.volume_size, "VolumeType": self.volume_type, "DeleteOnTermination": true } }],
            "BootMode": self.boot_mode, "EnaSupport": self.ena,
            "TagSpecifications": [{ "ResourceType": "image", "Tags": self.tags }],
        });
        for (on, key, value) in
            [(self.sriov, "SriovNetSupport", "simple"), (self.imds_v2, "ImdsSupport", "v2.0"), (self.tpm, "TpmSupport", "v2.0")]
        {
            if on {
                v[key] = json!(value);
            }
        }
        if self.uefi_data.is_some() {
            v["UefiData"] = json!("(base64, from the settings)");
        }
        v.serialize(s)
    }
}

/// DescribeImages until `available`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitImage {
    /// A copy region; `None`: the home region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The AMI.
    pub image_ids: [Id; 1],
    /// What is waited for.
    #[serde(rename = "until")]
    pub until: &'static str,
}

/// `{"Add": […]}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Add {
    /// Accounts (or `all`).
    pub add: Vec<String>,
}

/// ModifyImageAttribute adding launch permissions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShareImage {
    /// A copy region; `None`: the home region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The AMI.
    pub image_id: Id,
    /// Accounts or `all`.
    pub launch_permission: Add,
}

/// ModifySnapshotAttribute adding create-volume permissions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShareSnapshot {
    /// The snapshot.
    pub snapshot_id: Id,
    /// Accounts (never `all`).
    pub create_volume_permission: Add,
}

/// CopyImage from the home region.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CopyImage {
    /// Into.
    pub region: String,
    /// From.
    pub source_region: String,
    /// The home AMI.
    pub source_image_id: Id,
    /// Name of the copy.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Derived from the source AMI, the region and the name (a retried copy is not made twice).
    pub client_token: Later,
    /// The copy gets the AMI's tags.
    pub copy_image_tags: bool,
}

/// The calls for one copy region, in order.
#[derive(Debug, Clone)]
pub struct RegionCalls {
    /// The region.
    pub region: String,
    /// Its calls.
    pub calls: Vec<Call>,
}

/// A publish's calls after the look-up by name.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In the home region, in order.
    pub home: Vec<Call>,
    /// Then per copy region (the regions run concurrently).
    pub copies: Vec<RegionCalls>,
}

/// What the look-up by name ([`lookup`]) found; the dry run plans [`Start::New`].
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// No AMI of that name: upload and register.
    New,
    /// Ours, from other bytes, and `--force`: replace it.
    Replace(&'a Found),
    /// Ours, from the same bytes: reuse it.
    Reuse(&'a Found),
}

/// The look-up by name that comes before everything (idempotent re-runs).
pub fn lookup(p: &Prepared, region: &str) -> FindImage {
    FindImage { region: region.to_string(), name: p.name.clone() }
}

/// The calls of a publish into `home`.
pub fn build(p: &Prepared, home: &str, start: Start<'_>) -> anyhow::Result<Plan> {
    let home_calls = match start {
        Start::New => [snapshot(p)?, register(p, None)?].concat(),
        Start::Replace(old) => [snapshot(p)?, register(p, Some(old))?].concat(),
        Start::Reuse(found) => reuse(p, found),
    };
    Ok(Plan { home: home_calls, copies: copies(p, home) })
}

/// An AMI of ours from the same bytes: waited for when not available yet. One without all its
/// tags was registered by a run killed before tagging (the upload ledger named it): that run's
/// tagging and sharing are done now.
fn reuse(p: &Prepared, found: &Found) -> Vec<Call> {
    let untagged = p.tags.iter().any(|(k, v)| found.tags.get(k) != Some(v));
    let mut calls = Vec::new();
    if untagged {
        calls.push(Call::EnsureImageTags(EnsureImageTags {
            resources: [Id::Image],
            name: p.name.clone(),
            tags: p.tags.clone(),
            only: "those DescribeImages does not show on the AMI",
        }));
    }
    if found.state != "available" || untagged {
        calls.push(Call::WaitImage(wait_image(None, Id::Image)));
    }
    if untagged {
        calls.extend(share_image(p, None, Id::Image));
        calls.extend(share_snapshot(p));
    }
    calls
}

/// Create-volume permission on the snapshot for the accounts the AMI is shared with.
fn share_snapshot(p: &Prepared) -> Option<Call> {
    let accounts: Vec<String> = p.settings.launch_permissions.iter().filter(|a| a.as_str() != "all").cloned().collect();
    (!accounts.is_empty())
        .then_some(Call::ShareSnapshot(ShareSnapshot { snapshot_id: Id::Snapshot, create_volume_permission: Add { add: accounts } }))
}

/// Start, fill, complete, wait for and tag the snapshot.
fn snapshot(p: &Prepared) -> anyhow::Result<Vec<Call>> {
    let tags = p.tags.iter().filter(|(k, _)| ["Name", "BuiltBy", "SourceDigest"].contains(&k.as_str()));
    let start = StartSnapshot {
        volume_size: i64::try_from(p.snapshot_gib).context("snapshot size out of range")?,
        description: p.description.clone(),
        client_token: Later("(new, recorded in the ledger first)"),
        timeout: timeout_minutes(p),
        tags: tags.map(|(k, v)| (k.clone(), v.clone())).collect(),
        parent_snapshot_id: p.parent.as_ref().map(|x| x.snapshot.clone()),
        encrypted: p.settings.encrypted,
        kms_key_arn: p.settings.kms_key_id.clone().filter(|_| p.settings.encrypted),
    };
    let put = PutBlocks { snapshot_id: Id::Snapshot, block: None, data_length: BLOCK, checksum_algorithm: "SHA256" };
    let complete =
        CompleteSnapshot { snapshot_id: Id::Snapshot, sum: None, checksum_algorithm: "SHA256", checksum_aggregation_method: "LINEAR" };
    Ok(vec![
        Call::StartSnapshot(start),
        Call::PutBlocks(put),
        Call::CompleteSnapshot(complete),
        Call::WaitSnapshot(WaitSnapshot { snapshot_ids: [Id::Snapshot], until: "completed, 3 times in a row" }),
        Call::CreateTags(CreateTags { resources: [Id::Snapshot], tags: p.tags.clone() }),
    ])
}

/// (Replace the old AMI,) register, wait for and share the AMI.
fn register(p: &Prepared, replace: Option<&Found>) -> anyhow::Result<Vec<Call>> {
    let mut calls = Vec::new();
    if let Some(old) = replace {
        // The AMI's own mapping names its snapshot; our tags find it too (and any left behind).
        let also_tagged = match old.tags.get("SourceDigest") {
            Some(d) => [("BuiltBy", "imgforge"), ("Name", p.name.as_str()), ("SourceDigest", d.as_str())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            None => BTreeMap::new(),
        };
        calls.push(Call::DeregisterImage(DeregisterImage { image_id: old.id.clone() }));
        calls.push(Call::DeleteSnapshots(DeleteSnapshots { snapshot_ids: old.snapshots.clone(), also_tagged, except: Id::Snapshot }));
    }
    calls.push(Call::RegisterImage(registration(p)?));
    calls.push(Call::EnsureImageTags(EnsureImageTags {
        resources: [Id::Image],
        name: p.name.clone(),
        tags: p.tags.clone(),
        only: "those DescribeImages does not show on the AMI",
    }));
    calls.push(Call::WaitImage(wait_image(None, Id::Image)));
    calls.extend(share_image(p, None, Id::Image));
    calls.extend(share_snapshot(p));
    Ok(calls)
}

/// The RegisterImage parameters.
pub fn registration(p: &Prepared) -> anyhow::Result<Registration> {
    Ok(Registration {
        name: p.name.clone(),
        description: p.description.clone(),
        architecture: p.arch.as_str().into(),
        root_device: super::ROOT_DEVICE.into(),
        snapshot: Id::Snapshot,
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

fn wait_image(region: Option<&str>, id: Id) -> WaitImage {
    WaitImage { region: region.map(str::to_string), image_ids: [id], until: "available, 3 times in a row" }
}

fn share_image(p: &Prepared, region: Option<&str>, id: Id) -> Option<Call> {
    let perms = &p.settings.launch_permissions;
    (!perms.is_empty()).then(|| {
        Call::ShareImage(ShareImage { region: region.map(str::to_string), image_id: id, launch_permission: Add { add: perms.clone() } })
    })
}

/// Per copy region: look up by name, copy unless found, wait, share.
fn copies(p: &Prepared, home: &str) -> Vec<RegionCalls> {
    let regions = p.settings.copy_to_regions.iter().filter(|r| r.as_str() != home);
    regions
        .map(|dest| {
            let copy = CopyImage {
                region: dest.clone(),
                source_region: home.to_string(),
                source_image_id: Id::Image,
                name: p.name.clone(),
                description: p.description.clone(),
                client_token: Later("(from the AMI, the region and the name)"),
                copy_image_tags: true,
            };
            let mut calls =
                vec![Call::FindImage(lookup(p, dest)), Call::CopyImage(copy), Call::WaitImage(wait_image(Some(dest), Id::Copy))];
            calls.extend(share_image(p, Some(dest), Id::Copy));
            RegionCalls { region: dest.clone(), calls }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::options::AwsSettings;
    use crate::publish::testing::prepared;

    fn ops(calls: &[Call]) -> Vec<String> {
        calls.iter().map(Call::op).collect()
    }

    fn params(calls: &[Call], op: &str) -> Vec<serde_json::Value> {
        calls.iter().map(|c| serde_json::to_value(c).unwrap()).filter(|v| v["dry_run"] == op).map(|v| v["params"].clone()).collect()
    }

    #[test]
    fn a_new_ami_is_uploaded_registered_and_shared_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepared(dir.path(), AwsSettings::defaults());
        let plan = build(&p, "eu-west-1", Start::New).unwrap();
        assert_eq!(
            ops(&plan.home),
            [
                "ebs.StartSnapshot",
                "ebs.PutSnapshotBlock",
                "ebs.CompleteSnapshot",
                "ec2.DescribeSnapshots",
                "ec2.CreateTags",
                "ec2.RegisterImage",
                "ec2.CreateTags",
                "ec2.DescribeImages"
            ],
            "no launch permissions: no Modify*Attribute"
        );
        assert!(plan.copies.is_empty());
        let start = &params(&plan.home, "ebs.StartSnapshot")[0];
        assert_eq!(start["Tags"]["imgforge:publish-token"], "(the ClientToken)");
        assert_eq!(start["Tags"]["Name"], "test-t");
        assert!(start.get("Encrypted").is_none() && start.get("KmsKeyArn").is_none() && start.get("ParentSnapshotId").is_none());
        let reg = &params(&plan.home, "ec2.RegisterImage")[0];
        assert_eq!(reg["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"], "(the snapshot)");
        assert_eq!(reg["ImdsSupport"], "v2.0");
        assert!(reg.get("SriovNetSupport").is_none() && reg.get("UefiData").is_none());
    }

    #[test]
    fn shares_and_copies_follow_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AwsSettings {
            launch_permissions: vec!["all".into()],
            copy_to_regions: vec!["eu-west-1".into(), "us-east-1".into()],
            encrypted: true,
            kms_key_id: Some("alias/k".into()),
            uefi_data: Some("secret-ish".into()),
            boot_mode: Some(crate::publish::options::BootMode::Uefi),
            ..AwsSettings::defaults()
        };
        let p = prepared(dir.path(), settings);
        let plan = build(&p, "eu-west-1", Start::New).unwrap();
        // `all` is a launch permission, never a create-volume permission.
        assert_eq!(params(&plan.home, "ec2.ModifyImageAttribute")[0]["LaunchPermission"]["Add"], json!(["all"]));
        assert!(params(&plan.home, "ec2.ModifySnapshotAttribute").is_empty());
        let start = &params(&plan.home, "ebs.StartSnapshot")[0];
        assert_eq!((&start["Encrypted"], &start["KmsKeyArn"]), (&json!(true), &json!("alias/k")));
        let reg = &params(&plan.home, "ec2.RegisterImage")[0];
        assert_eq!(reg["UefiData"], "(base64, from the settings)", "the variable store is not printed");
        // The home region is not a copy region.
        assert_eq!(plan.copies.len(), 1);
        let copy = &plan.copies[0];
        assert_eq!(copy.region, "us-east-1");
        assert_eq!(ops(&copy.calls), ["ec2.DescribeImages", "ec2.CopyImage", "ec2.DescribeImages", "ec2.ModifyImageAttribute"]);
        let c = &params(&copy.calls, "ec2.CopyImage")[0];
        assert_eq!(
            (&c["SourceRegion"], &c["SourceImageId"], &c["Region"]),
            (&json!("eu-west-1"), &json!("(the AMI)"), &json!("us-east-1"))
        );
        assert_eq!(params(&copy.calls, "ec2.ModifyImageAttribute")[0]["ImageId"], "(the copy)");
    }

    #[test]
    fn replace_and_reuse_plan_what_the_look_up_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepared(dir.path(), AwsSettings { launch_permissions: vec!["123456789012".into()], ..AwsSettings::defaults() });
        let old = Found {
            id: "ami-old".into(),
            tags: BTreeMap::from([("SourceDigest".into(), "sha256:old".into())]),
            state: "pending".into(),
            snapshots: vec!["snap-old".into()],
        };
        let plan = build(&p, "eu-west-1", Start::Replace(&old)).unwrap();
        let o = ops(&plan.home);
        let at = |op: &str| o.iter().position(|x| x == op).unwrap();
        assert!(at("ec2.CreateTags") < at("ec2.DeregisterImage"));
        assert!(at("ec2.DeregisterImage") < at("ec2.DeleteSnapshot") && at("ec2.DeleteSnapshot") < at("ec2.RegisterImage"));
        let del = &params(&plan.home, "ec2.DeleteSnapshot")[0];
        assert_eq!(del["SnapshotIds"], json!(["snap-old"]));
        assert_eq!(del["AlsoTagged"]["SourceDigest"], "sha256:old");
        assert_eq!(del["Except"], "(the snapshot)");
        assert_eq!(params(&plan.home, "ec2.ModifySnapshotAttribute")[0]["CreateVolumePermission"]["Add"], json!(["123456789012"]));
        // Reused: nothing uploaded or registered; waited for only when not available yet.
        let tagged = Found { tags: p.tags.clone(), ..old.clone() };
        assert_eq!(ops(&build(&p, "eu-west-1", Start::Reuse(&tagged)).unwrap().home), ["ec2.DescribeImages"]);
        let ready = Found { state: "available".into(), ..tagged };
        assert!(build(&p, "eu-west-1", Start::Reuse(&ready)).unwrap().home.is_empty());
        // Registered by a run killed before its tags: tagged, waited for and shared now.
        let untagged = Found { state: "available".into(), tags: BTreeMap::new(), ..old };
        assert_eq!(
            ops(&build(&p, "eu-west-1", Start::Reuse(&untagged)).unwrap().home),
            ["ec2.CreateTags", "ec2.DescribeImages", "ec2.ModifyImageAttribute", "ec2.ModifySnapshotAttribute"]
        );
    }

    #[test]
    fn blocks_and_completion_are_filled_in_the_dry_run_format() {
        let put = PutBlocks { snapshot_id: Id::Snapshot, block: None, data_length: BLOCK, checksum_algorithm: "SHA256" };
        let d = [1u8; 32];
        assert_eq!(
            serde_json::to_value(put.one(3, &d)).unwrap(),
            json!({ "dry_run": "ebs.PutSnapshotBlock", "params": {
                "SnapshotId": "(the snapshot)", "BlockIndex": 3, "Checksum": B64.encode(d), "DataLength": BLOCK, "ChecksumAlgorithm": "SHA256" } })
        );
        let c =
            CompleteSnapshot { snapshot_id: Id::Snapshot, sum: None, checksum_algorithm: "SHA256", checksum_aggregation_method: "LINEAR" };
        let sum = Sum::of([d, d].iter()).unwrap();
        assert_eq!(sum.checksum, B64.encode(blocks::linear_checksum([&d, &d])));
        let v = serde_json::to_value(c.with(sum)).unwrap();
        assert_eq!(v["dry_run"], "ebs.CompleteSnapshot");
        assert_eq!(v["params"]["ChangedBlocksCount"], 2);
        assert_eq!(v["params"]["ChecksumAggregationMethod"], "LINEAR");
    }
}
