//! EC2 side: look up, register, tag, wait, share, copy, and clean up. Each call goes through
//! the one retry layer; each error names the resource and region.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, CreateVolumePermission, CreateVolumePermissionModifications, EbsBlockDevice,
    Filter, ImageState, ImdsSupportValues, LaunchPermission, LaunchPermissionModifications, ResourceType, SnapshotState, Tag,
    TagSpecification, TpmSupportValues, VolumeType,
};

use super::plan::Registration;
use super::wait::{Poll, WaitError, Waiter};
use crate::aws::retry::{Policy, retry};

/// Errors of the EC2 steps.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// A call that failed for good.
    #[error("Failed to {action} in {region}: {message}")]
    Call {
        /// What was being done, naming the resource.
        action: String,
        /// Region.
        region: String,
        /// The last error.
        message: String,
    },
    /// Waiting.
    #[error("in {region}: {source}")]
    Wait {
        /// Region.
        region: String,
        /// Cause.
        source: WaitError,
    },
}

/// An AMI found by name.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its id.
    pub id: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its state.
    pub state: String,
    /// Snapshots behind it.
    pub snapshots: Vec<String>,
}

/// EC2 in one region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    /// The client.
    pub client: aws_sdk_ec2::Client,
    /// Its region.
    pub region: String,
}

fn tags_of(t: &[Tag]) -> BTreeMap<String, String> {
    t.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

impl Ec2 {
    fn err(&self, action: String, message: String) -> Ec2Error {
        Ec2Error::Call { action, region: self.region.clone(), message }
    }

    /// Our AMI with this name, if any.
    pub async fn find_image(&self, name: &str) -> Result<Option<Found>, Ec2Error> {
        let what = || format!("DescribeImages name={name}");
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &what, || {
            self.client.describe_images().owners("self").filters(Filter::builder().name("name").values(name).build()).send()
        })
        .await
        .map_err(|f| self.err(format!("look up the AMI named `{name}`"), f.to_string()))?;
        Ok(out.images().iter().find(|i| i.name() == Some(name)).map(|i| Found {
            id: i.image_id().unwrap_or_default().to_string(),
            tags: tags_of(i.tags()),
            state: i.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
            snapshots: i.block_device_mappings().iter().filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string)).collect(),
        }))
    }

    /// Our snapshot tagged `key=value`, if any (finds a snapshot whose StartSnapshot answer was
    /// lost in a crash).
    pub async fn find_snapshot_by_tag(&self, key: &str, value: &str) -> Result<Option<String>, Ec2Error> {
        Ok(self.find_snapshots_by_tags(&[(key, value)]).await?.into_iter().next())
    }

    /// Our snapshots carrying all of `tags`.
    pub async fn find_snapshots_by_tags(&self, tags: &[(&str, &str)]) -> Result<Vec<String>, Ec2Error> {
        let filters: Vec<Filter> = tags.iter().map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(*v).build()).collect();
        let what = || format!("DescribeSnapshots {tags:?}");
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &what, || {
            self.client.describe_snapshots().owner_ids("self").set_filters(Some(filters.clone())).send()
        })
        .await
        .map_err(|f| self.err(format!("look up snapshots tagged {tags:?}"), f.to_string()))?;
        Ok(out.snapshots().iter().filter_map(|s| s.snapshot_id().map(str::to_string)).collect())
    }

    /// A snapshot's state; `None` when it does not exist.
    pub async fn snapshot_state(&self, id: &str) -> Result<Option<String>, Ec2Error> {
        let what = || format!("DescribeSnapshots {id}");
        let r = retry(&Policy::NO_WARMUP, Instant::now(), &what, || self.client.describe_snapshots().snapshot_ids(id).send()).await;
        match r {
            Ok(out) => Ok(out.snapshots().first().and_then(|s| s.state()).map(|s| s.as_str().to_string())),
            Err(f) if f.message.contains("NotFound") => Ok(None),
            Err(f) => Err(self.err(format!("describe snapshot {id}"), f.to_string())),
        }
    }

    /// Waits for a snapshot to be `completed`.
    pub async fn wait_snapshot(&self, id: &str, limit: Duration) -> Result<(), Ec2Error> {
        Waiter::standard(limit)
            .wait(&format!("snapshot {id}"), || async {
                let out = retry(&Policy::DEFAULT, Instant::now(), &|| format!("DescribeSnapshots {id}"), || {
                    self.client.describe_snapshots().snapshot_ids(id).send()
                })
                .await
                .map_err(|f| f.to_string())?;
                let s = out.snapshots().first();
                Ok(match s.and_then(|s| s.state()) {
                    Some(SnapshotState::Completed) => Poll::Ready,
                    Some(SnapshotState::Error) => {
                        Poll::Failed(format!("state error: {}", s.and_then(|s| s.state_message()).unwrap_or("no reason given")))
                    }
                    Some(st) => Poll::Pending(format!("{} {}", st.as_str(), s.and_then(|s| s.progress()).unwrap_or(""))),
                    None => Poll::Pending("not visible yet".into()),
                })
            })
            .await
            .map_err(|source| Ec2Error::Wait { region: self.region.clone(), source })
    }

    /// Tags a resource (snapshot or AMI).
    pub async fn create_tags(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        let list = tag_list(tags);
        // A new AMI may not be visible to CreateTags at once: "not found" is retried as "not yet".
        retry(&Policy::DEFAULT, Instant::now(), &|| format!("CreateTags {id}"), || {
            self.client.create_tags().resources(id).set_tags(Some(list.clone())).send()
        })
        .await
        .map_err(|f| self.err(format!("tag {id}"), f.to_string()))?;
        Ok(())
    }

    /// RegisterImage from `snapshot` (the id `r.snapshot` stands for); returns the AMI id.
    pub async fn register(&self, r: &Registration, snapshot: &str) -> Result<String, Ec2Error> {
        let ebs = EbsBlockDevice::builder()
            .snapshot_id(snapshot)
            .volume_size(r.volume_size)
            .volume_type(VolumeType::from(r.volume_type.as_str()))
            .delete_on_termination(true)
            .build();
        let mapping = BlockDeviceMapping::builder().device_name(&r.root_device).ebs(ebs).build();
        let tags = TagSpecification::builder().resource_type(ResourceType::Image).set_tags(Some(tag_list(&r.tags))).build();
        let what = || format!("RegisterImage {}", r.name);
        let out = retry(&Policy::DEFAULT, Instant::now(), &what, || {
            let mut b = self
                .client
                .register_image()
                .name(&r.name)
                .description(&r.description)
                .architecture(ArchitectureValues::from(r.architecture.as_str()))
                .virtualization_type("hvm")
                .root_device_name(&r.root_device)
                .block_device_mappings(mapping.clone())
                .boot_mode(BootModeValues::from(r.boot_mode.as_str()))
                .ena_support(r.ena)
                .tag_specifications(tags.clone());
            if r.sriov {
                b = b.sriov_net_support("simple");
            }
            if r.imds_v2 {
                b = b.imds_support(ImdsSupportValues::V20);
            }
            if r.tpm {
                b = b.tpm_support(TpmSupportValues::V20);
            }
            if let Some(u) = &r.uefi_data {
                b = b.uefi_data(u.trim());
            }
            b.send()
        })
        .await
        .map_err(|f| self.err(format!("register the AMI `{}` from snapshot {snapshot}", r.name), f.to_string()))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| self.err(format!("register the AMI `{}`", r.name), "no image id in the answer".into()))
    }

    /// Makes sure the AMI carries `tags` (some endpoints drop RegisterImage's TagSpecifications).
    pub async fn ensure_image_tags(&self, id: &str, name: &str, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        let have = self.find_image(name).await?.map(|f| f.tags).unwrap_or_default();
        let missing: BTreeMap<String, String> =
            tags.iter().filter(|(k, v)| have.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::debug!("AMI {id}: {} tag(s) missing after RegisterImage, adding them with CreateTags", missing.len());
        self.create_tags(id, &missing).await
    }

    /// Waits for an AMI to be `available`.
    pub async fn wait_image(&self, id: &str, limit: Duration) -> Result<(), Ec2Error> {
        Waiter::standard(limit)
            .wait(&format!("AMI {id}"), || async {
                let out = retry(&Policy::DEFAULT, Instant::now(), &|| format!("DescribeImages {id}"), || {
                    self.client.describe_images().image_ids(id).send()
                })
                .await
                .map_err(|f| f.to_string())?;
                let img = out.images().first();
                Ok(match img.and_then(|i| i.state()) {
                    Some(ImageState::Available) => Poll::Ready,
                    Some(s @ (ImageState::Failed | ImageState::Error | ImageState::Invalid | ImageState::Deregistered)) => {
                        Poll::Failed(format!(
                            "state {}: {}",
                            s.as_str(),
                            img.and_then(|i| i.state_reason()).and_then(|r| r.message()).unwrap_or("no reason given")
                        ))
                    }
                    Some(s) => Poll::Pending(s.as_str().to_string()),
                    None => Poll::Pending("not visible yet".into()),
                })
            })
            .await
            .map_err(|source| Ec2Error::Wait { region: self.region.clone(), source })
    }

    /// Adds launch permissions (account ids, or `all` for public).
    pub async fn share_image(&self, id: &str, accounts: &[String]) -> Result<(), Ec2Error> {
        if accounts.is_empty() {
            return Ok(());
        }
        let perms: Vec<LaunchPermission> = accounts
            .iter()
            .map(|a| {
                if a == "all" {
                    LaunchPermission::builder().group("all".into()).build()
                } else {
                    LaunchPermission::builder().user_id(a).build()
                }
            })
            .collect();
        let m = LaunchPermissionModifications::builder().set_add(Some(perms)).build();
        retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("ModifyImageAttribute {id}"), || {
            self.client.modify_image_attribute().image_id(id).launch_permission(m.clone()).send()
        })
        .await
        .map_err(|f| self.err(format!("add launch permissions to {id}"), f.to_string()))?;
        Ok(())
    }

    /// Lets the accounts create volumes from the snapshot (never public: `all` is left out).
    pub async fn share_snapshot(&self, id: &str, accounts: &[String]) -> Result<(), Ec2Error> {
        let perms: Vec<CreateVolumePermission> =
            accounts.iter().filter(|a| a.as_str() != "all").map(|a| CreateVolumePermission::builder().user_id(a).build()).collect();
        if perms.is_empty() {
            return Ok(());
        }
        let m = CreateVolumePermissionModifications::builder().set_add(Some(perms)).build();
        retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("ModifySnapshotAttribute {id}"), || {
            self.client.modify_snapshot_attribute().snapshot_id(id).create_volume_permission(m.clone()).send()
        })
        .await
        .map_err(|f| self.err(format!("add create-volume permissions to {id}"), f.to_string()))?;
        Ok(())
    }

    /// CopyImage into this region from `source_region`; returns the new AMI id.
    pub async fn copy_from(
        &self,
        source_region: &str,
        source_id: &str,
        name: &str,
        description: &str,
        token: &str,
    ) -> Result<String, Ec2Error> {
        let out = retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("CopyImage {source_id} to {}", self.region), || {
            self.client
                .copy_image()
                .source_region(source_region)
                .source_image_id(source_id)
                .name(name)
                .description(description)
                .client_token(token)
                .copy_image_tags(true)
                .send()
        })
        .await
        .map_err(|f| self.err(format!("copy {source_id} from {source_region}"), f.to_string()))?;
        out.image_id().map(str::to_string).ok_or_else(|| self.err(format!("copy {source_id}"), "no image id in the answer".into()))
    }

    /// Deregisters an AMI (cleanup, `--force`).
    pub async fn deregister(&self, id: &str) -> Result<(), Ec2Error> {
        retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DeregisterImage {id}"), || {
            self.client.deregister_image().image_id(id).send()
        })
        .await
        .map_err(|f| self.err(format!("deregister {id}"), f.to_string()))?;
        Ok(())
    }

    /// Deletes a snapshot as cleanup, logging the outcome; a failure's warning (and the error
    /// returned) names the snapshot to delete by hand.
    pub async fn cleanup_snapshot(&self, id: &str) -> Result<(), String> {
        match self.delete_snapshot(id).await {
            Ok(()) => {
                tracing::info!("deleted snapshot {id}");
                Ok(())
            }
            Err(e) => {
                let msg = format!("{e}; delete snapshot {id} in {} by hand", self.region);
                tracing::warn!("{msg}");
                Err(msg)
            }
        }
    }

    /// Deletes a snapshot (cleanup).
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Ec2Error> {
        retry(&Policy::NO_WARMUP, Instant::now(), &|| format!("DeleteSnapshot {id}"), || {
            self.client.delete_snapshot().snapshot_id(id).send()
        })
        .await
        .map_err(|f| self.err(format!("delete snapshot {id}"), f.to_string()))?;
        Ok(())
    }
}
