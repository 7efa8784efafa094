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

/// After unmount: every free block of each ext2/3/4 filesystem of `disk` punched out of the
/// file (FITRIM skips free runs shorter than the discard granule). One line per filesystem.
pub fn punch_free(disk: &std::fs::File, parts: &[Probed]) -> anyhow::Result<Vec<String>> {
    let path = crate::host::fd::shared_path(disk);
    let mut done = Vec::new();
    for p in parts.iter().filter(|p| matches!(p.fs.fstype.as_str(), "ext2" | "ext3" | "ext4")) {
        let n = crate::image::freespace::punch_free_ext(disk, &path, p.part.start, p.part.size)
            .with_context(|| format!("Failed to clear the free blocks of partition {}", p.part.index))?;
        done.push(format!("partition {} ({}): every free block punched after unmount ({n} bytes)", p.part.index, p.fs.fstype));
    }
    Ok(done)
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
