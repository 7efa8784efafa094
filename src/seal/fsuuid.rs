//! `fs-uuids` (off by default): new filesystem UUIDs need every reference (fstab, GRUB,
//! kernel command lines, initramfs) updated consistently and the filesystem unmounted or
//! carrying `metadata_csum_seed`. imgforge refuses rather than risk an unbootable image.

use anyhow::bail;

use super::Run;

/// Refuses, naming what it would need.
pub fn fs_uuids(r: &mut Run) -> anyhow::Result<()> {
    if r.s.dry_run {
        r.notes.push("fs-uuids: would refuse (not supported yet: see `imgforge seal --list`)".into());
        return Ok(());
    }
    bail!(
        "fs-uuids is enabled but imgforge cannot yet change filesystem UUIDs consistently (filesystem, fstab, GRUB and initramfs together); refusing rather than risking an unbootable image. Disable fs-uuids, or regenerate UUIDs on first boot (e.g. systemd-repart / ignition)"
    )
}
