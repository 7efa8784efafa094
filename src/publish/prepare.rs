//! Everything decided before the first AWS call: the input, the name, the architecture and
//! boot mode read from the image, the source digest, and which blocks to consider.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::blocks::{self, Mode};
use super::name::{NameVars, default_template, render};
use super::options::{Arch, AwsSettings, BootMode, check_combination, parse_arch};
use crate::disk::partition::{self, types};
use crate::error::UsageError;
use crate::export::input::Input;
use crate::io::hash::{Algo, digest_sparse};

/// A publish request.
#[derive(Debug, Clone)]
pub struct Request {
    /// A raw disk or a build manifest.
    pub image: PathBuf,
    /// Settings (recipe `[aws]` and/or flags).
    pub settings: AwsSettings,
    /// `--endpoint-url`.
    pub endpoint_url: Option<String>,
    /// `--parent-snapshot` and `--parent-image`, or the registry's for a layered image.
    pub parent: Option<(String, PathBuf)>,
    /// A layered image whose parent has an AMI in the region: its id (for the description).
    pub ancestor_ami: Option<String>,
    /// Replace an AMI of the same name built from other bytes.
    pub force: bool,
    /// Print the calls, make none.
    pub dry_run: bool,
}

/// The parent of a delta upload.
#[derive(Debug)]
pub struct Parent {
    /// Its snapshot.
    pub snapshot: String,
    /// Its raw.
    pub path: PathBuf,
    /// Open.
    pub file: Arc<File>,
    /// Size.
    pub size: u64,
}

/// A validated publish, ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The raw disk.
    pub input: Input,
    /// The raw, shared with the upload workers.
    pub file: Arc<File>,
    /// Settings as given.
    pub settings: AwsSettings,
    /// AMI name.
    pub name: String,
    /// AMI description.
    pub description: String,
    /// Architecture.
    pub arch: Arch,
    /// Boot mode.
    pub boot: BootMode,
    /// Snapshot size in GiB (the image rounded up).
    pub snapshot_gib: u64,
    /// Root volume size in GiB.
    pub volume_gib: u64,
    /// "sha256:<hex>" of the raw.
    pub source_digest: String,
    /// How blocks are chosen.
    pub mode: Mode,
    /// Data blocks of the image.
    pub data: Vec<u64>,
    /// Blocks to consider.
    pub candidates: Vec<u64>,
    /// The delta parent.
    pub parent: Option<Parent>,
    /// Data blocks of the parent raw.
    pub parent_data: Vec<u64>,
    /// Tags for the AMI and the snapshot.
    pub tags: BTreeMap<String, String>,
    /// Notices for the user (defaults taken, fallbacks).
    pub notices: Vec<String>,
}

fn usage(msg: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg))
}

/// Opens and inspects everything; bad values are usage errors (exit 2).
pub fn prepare(req: &Request) -> anyhow::Result<Prepared> {
    let input = crate::export::input::open(&req.image)?;
    let meta = manifest_fields(&input)?;
    let mut notices = Vec::new();
    let table = {
        let mut f = &input.file;
        partition::read(&mut f, input.size).ok()
    };
    let has_esp =
        table.as_ref().is_some_and(|t| t.partitions.iter().any(|p| p.type_guid == Some(types::EFI_SYSTEM) || p.mbr_type == Some(0xEF)));
    let arch = architecture(req, &input, &meta, table.as_ref(), &mut notices)?;
    let boot = boot_mode(req, arch, has_esp);
    let snapshot_gib = blocks::gib_ceil(input.size);
    check_combination(&req.settings, boot, arch, snapshot_gib).map_err(usage)?;
    let vars = NameVars {
        name: input.name.clone(),
        version: meta.version.clone(),
        epoch: input.epoch,
        commit: meta.commit.clone(),
        arch: arch.as_str().into(),
    };
    notices.extend(driver_notices(meta.drivers.as_ref(), req.settings.ena));
    let template = req.settings.name_template.clone().unwrap_or_else(|| default_template(&vars).to_string());
    let name = render(&template, &vars).map_err(usage)?;
    let parent = req.parent.as_ref().map(|(snap, path)| open_parent(snap, path)).transpose()?;
    let mode = upload_mode(parent.is_some(), req.settings.encrypted, &mut notices);
    let parent = if mode == Mode::Delta { parent } else { None };
    let extents = crate::io::extents::data_extents(&input.file, input.size)
        .with_context(|| format!("Failed to find the data extents of {}", input.path.display()))?;
    let data = blocks::blocks_of(&extents);
    let parent_data = match &parent {
        Some(p) => blocks::blocks_of(
            &crate::io::extents::data_extents(&p.file, p.size)
                .with_context(|| format!("Failed to find the data extents of {}", p.path.display()))?,
        ),
        None => Vec::new(),
    };
    let total = blocks::block_count(input.size);
    let candidates = blocks::candidates(mode, total, &data, &parent_data);
    let source_digest = match input.sha256 {
        Some(d) => format!("sha256:{}", hex::encode(d)),
        None => format!(
            "sha256:{}",
            digest_sparse(&input.file, input.size, &extents, Algo::Sha256, None)
                .with_context(|| format!("Failed to hash {}", input.path.display()))?
        ),
    };
    let volume_gib = req.settings.volume_size.unwrap_or(snapshot_gib);
    let ancestor = match &meta.parent {
        Some(p) => Some(format!("{} {} ({})", p.name, p.version, p.record)),
        None => parent.as_ref().map(|p| p.snapshot.clone()).or(meta.source.clone()),
    };
    let tags = image_tags(&name, &meta, ancestor, &source_digest, &req.settings.tags);
    let description = description(&name, arch.as_str(), &meta, req.ancestor_ami.as_deref(), &source_digest);
    let file = Arc::new(input.file.try_clone().with_context(|| format!("Failed to reopen {}", input.path.display()))?);
    Ok(Prepared {
        input,
        file,
        settings: req.settings.clone(),
        name,
        description,
        arch,
        boot,
        snapshot_gib,
        volume_gib,
        source_digest,
        mode,
        data,
        candidates,
        parent,
        parent_data,
        tags,
        notices,
    })
}

/// The CPU architecture: the flag or recipe, else what the build read from the image's own
/// executables, else the root partition's type GUID, else x86_64 with a notice.
fn architecture(
    req: &Request,
    input: &crate::export::input::Input,
    meta: &ManifestFields,
    table: Option<&partition::PartitionTable>,
    notices: &mut Vec<String>,
) -> anyhow::Result<Arch> {
    Ok(match (req.settings.architecture, &meta.architecture) {
        (Some(a), _) => a,
        (None, Some(m)) => parse_arch(m).map_err(|e| {
            usage(format!("{}: the build found {e}; AWS takes x86_64 or arm64 images", input.manifest.as_deref().unwrap_or(&req.image).display()))
        })?,
        (None, None) => detect_arch(table).unwrap_or_else(|| {
            notices.push(
                "no architecture in a build manifest and no x86-64 or aarch64 root partition type GUID in the image: assuming x86_64 (set [aws] architecture or --architecture)"
                    .into(),
            );
            Arch::X86_64
        }),
    })
}

/// The boot mode: as asked, else UEFI for arm64, UEFI-preferred with an ESP, legacy BIOS without.
fn boot_mode(req: &Request, arch: Arch, has_esp: bool) -> BootMode {
    match req.settings.boot_mode {
        Some(b) => b,
        None if arch == Arch::Arm64 => BootMode::Uefi,
        None if has_esp => BootMode::UefiPreferred,
        None => BootMode::LegacyBios,
    }
}

/// Which blocks to send: a delta over a parent, every block (encrypted), or the non-zero ones.
fn upload_mode(has_parent: bool, encrypted: bool, notices: &mut Vec<String>) -> Mode {
    match (has_parent, encrypted) {
        (true, true) => {
            notices.push(
                "EBS does not allow a parent snapshot together with encryption: uploading every block (full upload) instead of a delta"
                    .into(),
            );
            Mode::Full
        }
        (true, false) => Mode::Delta,
        (false, true) => Mode::Full,
        (false, false) => Mode::Sparse,
    }
}

/// The AMI description, in the Netflix/Spinnaker (Aminator) convention: `name=…, arch=…,
/// ancestor_name=…, ancestor_id=…, ancestor_version=…, version=…`. The ancestor is the parent
/// image (its AMI id in this region when it has one, else its record id) or the upstream image
/// (its digest). At most 255 characters. Pure.
fn description(name: &str, arch: &str, meta: &ManifestFields, ancestor_ami: Option<&str>, source_digest: &str) -> String {
    let (an, aid, av) = match &meta.parent {
        Some(p) => (p.name.clone(), ancestor_ami.unwrap_or(&p.record).to_string(), p.version.clone()),
        None => ("upstream".to_string(), meta.source.clone().unwrap_or_else(|| source_digest.to_string()), String::new()),
    };
    let version = meta.version.as_deref().unwrap_or_default();
    format!("name={name}, arch={arch}, ancestor_name={an}, ancestor_id={aid}, ancestor_version={av}, version={version}")
        .chars()
        .take(255)
        .collect()
}

/// The tags on the snapshot and the AMI: Name, Version, Commit, Recipe, Ancestor, RecordId,
/// LayerKey, SourceDigest, BuiltBy, then the user's (which win).
fn image_tags(
    name: &str,
    meta: &ManifestFields,
    ancestor: Option<String>,
    source_digest: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    tags.insert("Name".to_string(), name.to_string());
    for (k, v) in [("Version", &meta.version), ("Commit", &meta.commit), ("Recipe", &meta.recipe)] {
        if let Some(v) = v {
            tags.insert(k.to_string(), v.clone());
        }
    }
    if let Some(a) = ancestor {
        tags.insert("Ancestor".into(), a.chars().take(255).collect());
    }
    for (k, v) in [("RecordId", &meta.record), ("LayerKey", &meta.layer_key)] {
        if let Some(v) = v {
            tags.insert(k.to_string(), v.clone());
        }
    }
    tags.insert("SourceDigest".into(), source_digest.to_string());
    tags.insert("BuiltBy".into(), "imgforge".into());
    tags.extend(extra.clone());
    tags
}

/// What publishing takes from a build manifest.
#[derive(Debug, Default)]
struct ManifestFields {
    record: Option<String>,
    layer_key: Option<String>,
    parent: Option<crate::manifest::ParentInfo>,
    version: Option<String>,
    commit: Option<String>,
    recipe: Option<String>,
    source: Option<String>,
    architecture: Option<String>,
    drivers: Option<crate::image::drivers::Drivers>,
}

/// What the build manifest (when the input is one) says about the image.
fn manifest_fields(input: &Input) -> anyhow::Result<ManifestFields> {
    let Some(m) = input.manifest.as_deref().map(crate::manifest::read).transpose()? else {
        return Ok(ManifestFields::default());
    };
    let s = |x: &str| (!x.is_empty()).then(|| x.to_string());
    Ok(ManifestFields {
        record: m.record.clone(),
        layer_key: m.layer_key.clone(),
        parent: m.source.parent.clone(),
        version: s(&m.version),
        commit: m.git_commit.as_deref().and_then(s),
        recipe: s(&m.recipe).map(|r| r.chars().take(255).collect()),
        source: s(&m.source.digest),
        architecture: m.architecture.as_deref().and_then(s),
        drivers: m.drivers,
    })
}

/// Warnings about drivers the build found missing from the image's kernels. Pure.
pub fn driver_notices(d: Option<&crate::image::drivers::Drivers>, ena: bool) -> Vec<String> {
    let Some(d) = d else { return Vec::new() };
    let mut out = Vec::new();
    if ena && !d.ena {
        out.push(
            "the image's kernel has no ENA driver (ena.ko) but the AMI will claim ENA support: instances of current types will have no network; install the driver or set ena = false".into(),
        );
    }
    if !d.nvme {
        out.push(
            "the image's kernel has no NVMe driver (nvme.ko): on Nitro instances EBS volumes are NVMe devices and the root disk will not be found".into(),
        );
    }
    out
}

/// Architecture from the discoverable-partitions root type GUID. Pure.
pub fn detect_arch(table: Option<&partition::PartitionTable>) -> Option<Arch> {
    let t = table?;
    t.partitions.iter().find_map(|p| match p.type_guid {
        Some(g) if g == types::LINUX_ROOT_X86_64 => Some(Arch::X86_64),
        Some(g) if g == types::LINUX_ROOT_AARCH64 => Some(Arch::Arm64),
        _ => None,
    })
}

fn open_parent(snap: &str, path: &std::path::Path) -> anyhow::Result<Parent> {
    let ok = snap.len() <= 64
        && snap.strip_prefix("snap-").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    if !ok {
        return Err(usage(format!("parent snapshot `{snap}` is not a snapshot id (snap-0123abcd…)")));
    }
    let input = crate::export::input::open(path).with_context(|| format!("Failed to open the parent image {}", path.display()))?;
    Ok(Parent { snapshot: snap.to_string(), path: input.path.clone(), size: input.size, file: Arc::new(input.file) })
}
