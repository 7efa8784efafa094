//! The pipelines: the commands that put the domains in order over one image.
//!
//! - [`build`]: `imgforge build` — verify source → raw working disk → grow → attach + mount →
//!   provisioning window → provisioners → stamp → seal → trim → unmount + detach → outputs and
//!   manifest.
//! - [`seal`]: `imgforge seal IMAGE` — convert (qcow2) → attach + mount → seal → write back.

pub mod build;
pub mod seal;

use crate::image::mount::{Mounted, Probed};
use crate::seal::rawscan::Part;

/// The disk's partitions as the raw pass names them.
pub fn raw_parts(parts: &[Probed]) -> Vec<Part> {
    parts.iter().map(|p| Part { index: p.part.index, start: p.part.start, size: p.part.size }).collect()
}

/// The filesystems whose free space nothing cleared: those not mounted (a kernel that cannot
/// mount them). The seal changed nothing in them; the raw pass still reads them.
pub fn free_space_gaps(filesystems: &[crate::seal::Filesystem]) -> Vec<String> {
    filesystems
        .iter()
        .filter(|f| f.target.is_none())
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
