//! `lvm-uuids` (on by default, as in virt-sysprep): every LVM physical volume on the disk and
//! every volume group gets a new UUID, so two machines from one image never share them (LVM
//! refuses duplicate PV UUIDs when both disks meet one host). Names are kept, so fstab's
//! `/dev/mapper/vg-lv` and the kernel's `rd.lvm.lv=vg/lv` still match. The PV labels and
//! metadata are rewritten after unmounting, by `apply` (imgforge never activates LVM).

use anyhow::Context as _;

use super::Run;
use super::scrub::ActionKind;

/// One physical volume's new UUIDs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LvmUuidChange {
    /// Partition number of the PV.
    pub partition: u32,
    /// Byte offset of the partition.
    #[serde(skip)]
    pub start: u64,
    /// Its size.
    #[serde(skip)]
    pub size: u64,
    /// PV UUID before.
    pub old_pv: String,
    /// PV UUID after.
    pub new_pv: String,
    /// Its volume group.
    pub vg: String,
    /// VG UUID before.
    pub old_vg: String,
    /// VG UUID after.
    pub new_vg: String,
}

/// Plans new UUIDs for every PV and VG on the disk (read from the disk's bytes).
pub fn lvm_uuids(r: &mut Run) -> anyhow::Result<()> {
    let pvs: Vec<_> = r.cx.filesystems.iter().filter(|f| f.fstype == "LVM2_member").cloned().collect();
    if pvs.is_empty() {
        r.notes.push("lvm-uuids: no LVM physical volume on the disk".into());
        return Ok(());
    }
    let disk_path = r.cx.disk_path.clone().context("lvm-uuids needs the disk (not given)")?;
    let disk = std::fs::File::open(&disk_path).with_context(|| format!("Failed to open {}", disk_path.display()))?;
    let mut vg_ids: Vec<(String, String)> = Vec::new();
    let mut changes = Vec::new();
    for pv in pvs {
        let read = crate::disk::lvm::partition_reader(&disk, pv.start, pv.size);
        let Some((label, vg)) = crate::disk::lvm::read_pv(&read, pv.size).with_context(|| format!("partition {}", pv.partition))? else {
            continue;
        };
        let new_vg = match vg_ids.iter().find(|(old, _)| *old == vg.id) {
            Some((_, n)) => n.clone(),
            None => {
                let n = crate::disk::lvm::random_id()?;
                vg_ids.push((vg.id.clone(), n.clone()));
                n
            }
        };
        let change = LvmUuidChange {
            partition: pv.partition,
            start: pv.start,
            size: pv.size,
            old_pv: label.uuid,
            new_pv: crate::disk::lvm::random_id()?,
            vg: vg.name,
            old_vg: vg.id,
            new_vg,
        };
        r.s.record(
            &format!("partition {} (LVM PV of {})", change.partition, change.vg),
            ActionKind::Rewritten,
            &format!("PV UUID {} → {}, VG UUID {} → {} after unmount", change.old_pv, change.new_pv, change.old_vg, change.new_vg),
        );
        changes.push(change);
    }
    r.lvm_changes = changes;
    Ok(())
}

/// Rewrites every PV of `changes` in `disk` (unmounted): labels and metadata of all of them
/// carry every PV's and VG's new UUID.
pub fn apply(disk: &std::fs::File, changes: &[LvmUuidChange]) -> anyhow::Result<()> {
    let mut swap: Vec<(String, String)> = changes.iter().map(|c| (c.old_pv.clone(), c.new_pv.clone())).collect();
    for c in changes {
        if !swap.iter().any(|(o, _)| *o == c.old_vg) {
            swap.push((c.old_vg.clone(), c.new_vg.clone()));
        }
    }
    for c in changes {
        crate::disk::lvm::rewrite_uuids(disk, c.start, c.size, &swap)
            .with_context(|| format!("Failed to write new LVM UUIDs into partition {}", c.partition))?;
    }
    Ok(())
}
