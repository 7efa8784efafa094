//! The pipelines: the commands that put the domains in order over one image.
//!
//! - [`build`]: `imgforge build` — verify source → raw working disk → grow → attach + mount →
//!   provisioning window → provisioners → stamp → seal → trim → unmount + detach → outputs and
//!   manifest.
//! - [`seal`]: `imgforge seal IMAGE` — convert (qcow2) → attach + mount → seal → write back.
//! - [`space`]: a build that fails in a full output directory says so first, with the space
//!   free and needed.

pub mod build;
pub mod layer;
pub mod lease;
pub mod parent;
pub mod seal;
pub mod space;

use anyhow::Context as _;

use crate::image::mount::{Mounted, Probed};
use crate::seal::rawscan::Part;

/// The disk's partitions as the raw pass names them.
pub fn raw_parts(parts: &[Probed]) -> Vec<Part> {
    // A logical volume's bytes are read as part of its physical volume's partition.
    parts.iter().filter(|p| p.volume.is_none()).map(|p| Part { index: p.part.index, start: p.part.start, size: p.part.size }).collect()
}

/// After unmount: every free block of each ext2/3/4 filesystem of `disk`, and of each XFS the
/// build mounted (so its log is clean), punched out of the file (FITRIM skips free runs shorter
/// than the discard granule); an XFS's log is formatted afresh. One line per filesystem.
pub fn punch_free(disk: &std::fs::File, filesystems: &[crate::seal::Filesystem]) -> anyhow::Result<Vec<String>> {
    use crate::image::freespace;
    let path = crate::host::fd::shared_path(disk);
    let mut done = Vec::new();
    for f in filesystems {
        let n = match f.fstype.as_str() {
            "ext2" | "ext3" | "ext4" => freespace::punch_free_ext(disk, &path, f.start, f.size),
            "xfs" if f.target.is_some() => freespace::punch_free_xfs(disk, f.start, f.size),
            _ => continue,
        }
        .with_context(|| format!("Failed to clear the free blocks of {}", describe_fs(f)))?;
        let log = if f.fstype == "xfs" { "; its log formatted afresh" } else { "" };
        done.push(format!("{} ({}): every free block punched after unmount ({n} bytes){log}", describe_fs(f), f.fstype));
    }
    Ok(done)
}

/// "partition 2", or "logical volume 1001" for a volume's pseudo-partition.
fn describe_fs(f: &crate::seal::Filesystem) -> String {
    if f.partition > crate::image::mount::VOLUME_BASE {
        format!("logical volume {}", f.partition)
    } else {
        format!("partition {}", f.partition)
    }
}

/// Sets each ext filesystem's "last mounted on" — the build's mount wrote a host path there
/// (`/tmp/imgforge-…/root`) — to where the image itself mounts it.
pub fn reset_last_mounted(disk: &std::fs::File, filesystems: &[crate::seal::Filesystem]) -> anyhow::Result<()> {
    use crate::host::command::CommandRunExt;
    let path = crate::host::fd::shared_path(disk);
    for f in filesystems.iter().filter(|f| matches!(f.fstype.as_str(), "ext2" | "ext3" | "ext4")) {
        let Some(target) = &f.target else { continue };
        std::process::Command::new("tune2fs")
            .arg("-M")
            .arg(target)
            .arg(format!("{}?offset={}", path.display(), f.start))
            .run_checked(&format!("reset the last-mounted directory of partition {}", f.partition))?;
    }
    Ok(())
}

/// The filesystems whose free space nothing cleared: those not mounted (a kernel that cannot
/// mount them). The seal changed nothing in them; the raw pass still reads them.
pub fn free_space_gaps(filesystems: &[crate::seal::Filesystem]) -> Vec<String> {
    filesystems
        .iter()
        // A physical volume is no filesystem: its logical volumes are listed themselves.
        .filter(|f| f.target.is_none() && f.fstype != "LVM2_member")
        .map(|f| {
            format!(
                "partition {} ({}): not mounted, so its free space was neither discarded nor zeroed (the seal wrote nothing there; the raw scan read it)",
                f.partition, f.fstype
            )
        })
        .collect()
}

/// The disk's filesystems as sealing sees them (for `fs-uuids`).
pub fn seal_filesystems(parts: &[Probed], m: &Mounted) -> Vec<crate::seal::Filesystem> {
    parts
        .iter()
        .filter(|p| !p.fs.fstype.is_empty())
        .map(|p| crate::seal::Filesystem {
            partition: p.part.index,
            start: p.part.start,
            size: p.part.size,
            fstype: p.fs.fstype.clone(),
            uuid: p.fs.uuid.clone(),
            target: m.partitions.iter().find(|(_, n)| *n == p.part.index).map(|(t, _)| t.clone()),
        })
        .collect()
}
